/*
 * oc_mc_int: the insides of the memcached pool, PRIVATE to the oc_mc_*.c
 * files. The rest of the daemon uses oc_mc.h, the pool's contract, and
 * never includes this header.
 *
 * The pool (oc_mc.h) is one module in five files, each named for its part:
 *   oc_mc_job.c    jobs (oc_mc_job_new_*, oc_mc_job_free), the arena of
 *                  their values, the count of their parts (a job is due once
 *                  every part is answered); the wire operations (wops) and
 *                  each server's replies parsed into job results.
 *   oc_mc_conn.c   a server's connection: its buffers, the commands queued
 *                  on it (one write per server and loop turn), connect,
 *                  read, write, the io timeout, a failure (oc_mc_srv_abort:
 *                  what was sent fails or reads go to the failover), the old
 *                  connections drained, and the flush event that runs the
 *                  jobs due.
 *   oc_mc_probe.c  a server's service state (oc_tko transitions, each one a
 *                  new cas epoch), warnings about setups that never cache,
 *                  the server's own probe (version, flush_all after its
 *                  drains) and its name resolved again.
 *   oc_mc_route.c  oc_mc_submit: where each part of a job goes (its server,
 *                  its failover, deletes of failover copies and on
 *                  servers_previous), and writes by cas, held until the
 *                  server's process is known (its cas epoch).
 *   oc_mc_pool.c   the pool's shape: the lists (pool, gutter,
 *                  servers_previous), placement and failover, where a key
 *                  lives, servers made and freed, oc_mc_new,
 *                  oc_mc_reconfigure, oc_mc_free, and the health oc_health
 *                  reads.
 * A function shared between these files is named oc_mc_<its old name>
 * (oc_mc_srv_fail) and declared below, under the file that defines it.
 *
 * Who owns what. oc_mc_t owns its server lists (mc_list_t: the servers and
 * a copy of their configuration whose strings are the servers' own), the
 * placements, the failover, the resolver, the flush event and the spare
 * wops. A server (mc_server_t) owns its socket, events, buffers, the wops
 * in flight on it (each wop owns its refs[]), the refs queued for the next
 * flush or held for its `stats` (gets, mgs, held), and its drains. A ref
 * (mc_ref_t) points into a job it does not own: a job is oc_mc's from
 * oc_mc_submit until its `done` runs, and each of its refs is answered
 * (oc_mc_part_done) before that.
 */
#ifndef OC_MC_INT_H
#define OC_MC_INT_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "oc_failover.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_mcproto.h"
#include "oc_place.h"
#include "oc_resolve.h"
#include "oc_stats.h"
#include "oc_tko.h"

/*
 * Per server, what was written (or sits in `out`, to be written) and waits
 * for its reply is a FIFO of wire operations (wops): memcached answers a
 * connection's commands in order. A GETS wop is one multi-get of keys that
 * may belong to many jobs (refs); memcached answers the keys it holds in
 * the order they were asked, so a cursor walks the refs: the refs it skips
 * to reach a VALUE's key are misses, and those left at END too.
 */
typedef enum mc_wop_kind {
    MC_WOP_GETS,    /* refs[]: a GET key, or the read of a SWAP/PUSH item */
    MC_WOP_MG,      /* refs[]: GET keys read with mg, one reply each */
    MC_WOP_STORE,   /* job->items[idx]: set, add or cas */
    MC_WOP_MS,      /* job->items[idx] of a PUSH: ms, which returns its cas */
    MC_WOP_DELETE,  /* job->items[idx] */
    MC_WOP_VERSION, /* job->items[idx] of a PROBE */
    MC_WOP_PROBE,   /* no job: the server's own probe (`version`) */
    MC_WOP_FLUSH,   /* no job: `flush_all` before it serves again */
    MC_WOP_STATS,   /* no job: `stats`, first on every new connection */
} mc_wop_kind_t;

/* How a part reached the server it is queued on. */
typedef enum mc_via {
    MC_VIA_PRIMARY = 0, /* its own server (placed on the pool) */
    MC_VIA_FAILOVER,    /* the failover of its server, out of service */
    MC_VIA_SHADOW,      /* a delete of the key's failover copy, whose
                           answer changes nothing of the item's result */
    MC_VIA_PREVIOUS,    /* a delete of the key on its server of
                           servers_previous: its failure fails the item
                           (so the caller requeues it), nothing else does */
} mc_via_t;

typedef struct mc_ref {
    oc_mc_job_t *job;
    size_t idx;
    unsigned char via; /* mc_via_t */
} mc_ref_t;

typedef struct mc_wop {
    mc_wop_kind_t kind;
    struct mc_wop *next;
    mc_ref_t one;   /* STORE, DELETE, VERSION */
    mc_ref_t *refs; /* GETS: owned */
    size_t nrefs, cursor;
} mc_wop_t;

/* The connection, apart from whether the server is in service (tko):
 * CLOSED --connect--> CONNECTING --writable--> OPEN
 *   ^-------- refused, timeout, closed, a broken reply ------'   */
typedef enum mc_conn_state {
    MC_CONN_CLOSED,
    MC_CONN_CONNECTING,
    MC_CONN_OPEN,
} mc_conn_state_t;

/* A connection given up while the server may still run what was sent on
 * it: a frozen server thaws with it in its socket and runs it then, on its
 * own thread, in no order with other connections' commands. It is shut for
 * writing and read to its end, which memcached makes only once it has run
 * (or dropped) everything sent before: its server's probe flushes only
 * after that (see "the server's own probe" in oc_mc_probe.c). */
typedef struct mc_drain {
    struct mc_server *s;
    int fd;
    struct event *ev;
    oc_mcp_proc_t proc; /* the process it reached, as far as known */
    int proc_known;
    struct mc_drain *next;
} mc_drain_t;

/* Drains kept per server: past this the oldest is given up (closed, no
 * longer waited for). One is made per failure of a connection in service,
 * and each ends within moments of the server running again. */
#define MC_DRAINS_MAX 64
/* Probes that found the server answering but its drains not ended: then
 * they are given up. A server that answers runs an old connection's
 * backlog, and ends it, within moments; one not ended after this many
 * probes was lost on the way (a NAT or conntrack table that forgot it
 * while the server was frozen: memcached's end never comes back), and
 * would keep the server out of service for ever (found by a review). */
#define MC_DRAIN_PROBES 5

/* Warnings said at most once a minute per server (oc_ratelog). */
#define MC_RATELOG_S 60.0

typedef struct mc_server {
    oc_mc_t *mc;
    char *host; /* as configured (no brackets) */
    uint16_t port;
    uint32_t weight;
    int gutter;     /* of the gutter pool, not the pool */
    int prev_only;  /* only of servers_previous: gets deletes, serves no reads */
    int literal;    /* host is an IP address: never resolved again */
    size_t idx;     /* in its list */
    char name[128]; /* host:port, for logs and errors */
    struct sockaddr_storage addr;
    socklen_t addrlen; /* 0: not resolved yet (added by a reload) */
    mc_conn_state_t conn;
    uint64_t cas_epoch;          /* oc_mc.epoch_seq when this server was made or last
                                    changed state (out of service, back): a cas read
                                    or stored in one epoch means nothing in another,
                                    nor on another server (each counts its own) */
    oc_tko_t tko;                /* in service, down, probing */
    int flush_owed;              /* out of service while failover was on: its keys were
                                    written to the failover meanwhile, so it is
                                    emptied before it serves again even if a reload
                                    turned failover off since (found by a review) */
    uint32_t copies_ttl_s;       /* the longest failover_ttl in force while it was
                                    out of service: how long the failover's copies
                                    of its keys may outlive its return, whatever a
                                    reload set failover_ttl to since */
    oc_mcp_proc_t proc;          /* the process the last connection reached */
    int proc_known;              /* proc came whole (oc_mcp_proc_known) */
    int proc_warned;             /* its `stats` lacked pid, time or uptime: said once */
    unsigned setup_warned;       /* MC_WARN_*: a setup objcached cannot use, said once */
    oc_ratelog_t lease_refused;  /* `mg ... N` answered EN */
    oc_ratelog_t store_refused;  /* a write answered SERVER_ERROR */
    oc_ratelog_t conn_limit;     /* a connection refused over memcached's -c */
    oc_ratelog_t resolve_failed; /* its name did not resolve again */
    oc_resolve_req_t *resolving; /* its name, being resolved again */
    int conn_limited;            /* the stream broke on that refusal */
    double refused_until;        /* in service, but no new connection before
                                    this (one was refused over the limit) */
    /* From connect to the answer of its `stats`, which process answers is
     * not known: every write by cas for s waits in `held` (a cas of the
     * old process must not reach a new one). */
    int ident_pending;
    oc_mcp_proc_t learning; /* the pending `stats` answer, so far */
    unsigned stat_lines;    /* of it */
    mc_ref_t *held;
    size_t nheld, held_cap;
    int fd;
    struct event *ev_read, *ev_write, *ev_timer, *ev_probe;
    double deadline; /* CONNECTING: give up then */
    double progress; /* OPEN: when the oldest wait began, or
                        the last reply (or key's answer) was read since */
    char *out;       /* to write: [out_off, out_len) */
    size_t out_off, out_len, out_cap;
    char *in; /* read, not parsed: [in_off, in_len) */
    size_t in_off, in_len, in_cap;
    mc_wop_t *wait_head, *wait_tail; /* in `out` or sent, awaiting replies */
    mc_ref_t *gets;                  /* keys for the next flush's multi-get */
    size_t ngets, gets_cap;
    mc_ref_t *mgs; /* keys for the next flush's meta gets */
    size_t nmgs, mgs_cap;
    int dirty; /* on mc->dirty */
    struct mc_server *dirty_next;
    char broken[OC_ERRLEN]; /* why the stream was given up, if not "unexpected
                               reply" (a probe answered wrong) */
    mc_drain_t *drains;     /* its connections given up, newest first */
    size_t ndrains;
    int flush_waits;      /* PROBING: `version` answered, the flush waits for
                             the drains to end (ev_probe: until io_timeout) */
    unsigned drain_waits; /* probes that waited for them in vain, since they
                             last all ended or it last came back */
} mc_server_t;

/* One list of servers (the pool, or the gutter), with a copy of its
 * configuration whose strings are the servers' own (oc_failover and
 * oc_place keep pointers to it). */
typedef struct mc_list {
    mc_server_t **s;
    oc_mc_server_conf_t *conf;
    size_t n;
} mc_list_t;

struct oc_mc {
    struct event_base *base;
    oc_place_t *place;  /* which server a key lives on */
    uint32_t place_gen; /* one more at every pool change: a place memo
                           (hit.place, item.place) of another is stale */
    mc_wop_t *spare;    /* freed wops, for reuse */
    uint64_t epoch_seq; /* cas epochs given out, to every server */
    size_t nspare;
    mc_list_t pool, gutter;
    mc_list_t prev;          /* servers_previous (those also in the pool are
                                the pool's own: one server each) */
    oc_place_t *prev_place;  /* where keys lived (or will live) under it */
    oc_failover_t *failover; /* where the keys of a server down go */
    oc_resolver_t *resolver; /* names resolved again, off the loop */
    int running;             /* oc_mc_new returned: names resolve off the loop */
    int failover_on;
    uint32_t failover_ttl_s;
    oc_tko_rules_t rules;
    double connect_s, io_s;
    struct event *ev_flush;           /* runs due callbacks, then writes */
    mc_server_t *dirty;               /* servers with gets or bytes to send */
    oc_mc_job_t *due_head, *due_tail; /* jobs answered, done not yet run */
    oc_stats_t *stats;                /* oc_mc_watch's, or NULL */
    void (*changed)(void *arg);
    void *changed_arg;
};

/* How oc_mc_srv_abort ends a connection. */
typedef enum mc_abort {
    MC_ABORT_QUIET,   /* shutdown, a server removed: everything just fails */
    MC_ABORT_FAILURE, /* a failure: counted, reads go to the failover */
    MC_ABORT_REFUSED, /* memcached refused it unread: reads go to the
                         failover, nothing counted, nothing to drain */
} mc_abort_t;

/* The loop's cached time, in seconds. */
static inline double oc_mc_now(oc_mc_t *mc)
{
    struct timeval tv;
    event_base_gettimeofday_cached(mc->base, &tv);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static inline void oc_mc_tv_of(struct timeval *tv, double s)
{
    if (s < 0)
        s = 0;
    tv->tv_sec = (time_t)s;
    tv->tv_usec = (suseconds_t)((s - (double)(time_t)s) * 1e6);
}

/* ---- oc_mc_job.c: jobs, their parts, wops and the replies ---- */

void oc_mc_text_clean(char *p);
void oc_mc_part_done(oc_mc_t *mc, oc_mc_job_t *job);
void oc_mc_part_fail(oc_mc_t *mc, oc_mc_job_t *job, size_t idx, const char *why);
void oc_mc_prev_fail(oc_mc_job_t *job, size_t idx, const char *why, size_t len);
void oc_mc_ref_fail(oc_mc_t *mc, mc_ref_t ref, const char *why);
/* A delete by cas (md) of the job itself, not a copy's. */
static inline int oc_mc_ref_is_md(mc_ref_t ref)
{
    return ref.via != MC_VIA_SHADOW && ref.via != MC_VIA_PREVIOUS && ref.job &&
           ref.job->op == OC_MC_CAS_DELETE;
}
/* The key a ref reads or writes (inline: once or more per key on every
 * path, from three of these files). */
static inline const char *oc_mc_ref_key(mc_ref_t r, size_t *klen)
{
    if (r.job->op == OC_MC_GET) {
        *klen = r.job->key_lens[r.idx];
        return r.job->keys[r.idx];
    }
    *klen = r.job->items[r.idx].klen;
    return r.job->items[r.idx].key;
}
int oc_mc_ref_wants_mg(mc_ref_t r);
void oc_mc_item_result(oc_mc_t *mc, mc_ref_t ref, oc_mc_result_t r);
void oc_mc_wop_free(oc_mc_t *mc, mc_wop_t *w);
mc_wop_t *oc_mc_wop_new(oc_mc_t *mc);
void oc_mc_srv_parse(mc_server_t *s);

/* ---- oc_mc_conn.c: a server's connection and what is queued on it ---- */

void oc_mc_buf_trim(char **buf, size_t *cap);
void oc_mc_queue_store(mc_server_t *s, mc_ref_t ref, const char *verb, const char *val,
                       size_t vlen, uint32_t flags, uint64_t cas);
void oc_mc_queue_ms(mc_server_t *s, mc_ref_t ref, uint32_t flags, uint64_t cas);
void oc_mc_queue_line(mc_server_t *s, mc_wop_kind_t kind, mc_ref_t ref);
void oc_mc_queue_get(mc_server_t *s, mc_ref_t ref);
void oc_mc_queue_mg(mc_server_t *s, mc_ref_t ref);
void oc_mc_drains_learned(mc_server_t *s, const oc_mcp_proc_t *now, int known);
void oc_mc_drains_free(mc_server_t *s);
void oc_mc_srv_close(mc_server_t *s);
void oc_mc_srv_abort(mc_server_t *s, const char *why, mc_abort_t how);
void oc_mc_srv_fail(mc_server_t *s, const char *why);
void oc_mc_srv_refused(mc_server_t *s, const char *why);
void oc_mc_on_srv_timer(evutil_socket_t fd, short what, void *arg);
void oc_mc_srv_connect(mc_server_t *s);
int oc_mc_srv_ready(mc_server_t *s);
void oc_mc_on_flush(evutil_socket_t fd, short what, void *arg);

/* ---- oc_mc_probe.c: a server's service state and its own probe ---- */

void oc_mc_srv_failed(mc_server_t *s, const char *why);
void oc_mc_srv_meta_refused(mc_server_t *s, const oc_mcp_line_t *l);
void oc_mc_srv_cas_seen(mc_server_t *s, uint64_t cas);
uint64_t oc_mc_ratelog_due(oc_ratelog_t *r, double now);
void oc_mc_srv_lease_refused(mc_server_t *s);
void oc_mc_srv_store_refused(mc_server_t *s, const oc_mcp_line_t *l);
void oc_mc_probe_drained(mc_server_t *s);
/* The server's own probe got its line: `version` answered, then (with
 * failover on) `flush_all`. Anything else fails the probe: -1, with the
 * reason in s->broken. */
int oc_mc_on_probe_reply(mc_server_t *s, mc_wop_kind_t kind, const oc_mcp_line_t *l,
                         const char *line);
int oc_mc_probe_resolve(mc_server_t *s);
void oc_mc_on_probe_timer(evutil_socket_t fd, short what, void *arg);
void oc_mc_probe_arm(mc_server_t *s);

/* ---- oc_mc_route.c: where each part of a job goes; writes by cas ---- */

uint32_t oc_mc_copies_ttl(const oc_mc_t *mc, const mc_server_t *s);
void oc_mc_srv_learned(mc_server_t *s, int answered);

/* ---- oc_mc_pool.c: the pool's shape, where a key lives ---- */

mc_server_t *oc_mc_failover_of(oc_mc_t *mc, const char *key, size_t klen, size_t primary);
mc_server_t *oc_mc_failover_but(oc_mc_t *mc, const char *key, size_t klen, size_t primary,
                                const mc_server_t **skip, size_t n);
mc_server_t *oc_mc_primary_of(oc_mc_t *mc, const char *key, size_t klen, uint64_t memo,
                              size_t *idx);
mc_server_t *oc_mc_prev_of(oc_mc_t *mc, const char *key, size_t klen,
                           const mc_server_t *p);
/* memo[i]: the place memo of keys[i] (klens[i] bytes) in the pool as it
 * is, for i < n (all 0 with no pool): oc_mc_primary_of's answer for the
 * key without hashing it again. A get's keys are placed this way, side by
 * side (oc_place_servers). n <= OC_PLACE_BATCH. */
void oc_mc_place_many(oc_mc_t *mc, size_t n, const char *const *keys, const size_t *klens,
                      uint64_t *memo);
mc_server_t *oc_mc_find_server(oc_mc_t *mc, const char *host, uint16_t port);

#endif

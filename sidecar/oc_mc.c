#include "oc_mc.h"

#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "oc_failover.h"
#include "oc_log.h"
#include "oc_mcproto.h"
#include "oc_place.h"
#include "oc_resolve.h"
#include "oc_stats.h"
#include "oc_tko.h"

#define MC_READ_CHUNK 65536
/* A server's input or output buffer grown past this (one large value, or a
 * hostile reply up to OC_MCP_VALUE_MAX) is given back once it is empty, so
 * one such reply does not stay resident for the life of the process
 * (found by a review: 64 MiB kept per server, across reconnects). Above
 * what a value of the default max_value (1 MiB) grows it to, so that such
 * values do not map and unmap a buffer each. */
#define MC_BUF_KEEP  (4u << 20)
#define MC_WOP_SPARE 1024 /* freed wops kept for reuse */
/* memcached 1.6's `stats` is about 90 lines: a server that sends this many
 * is not answering it */
#define MC_STAT_LINES_MAX 1024

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
 * after that (see "the server's own probe"). */
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

static void srv_fail(mc_server_t *s, const char *why);
static void srv_refused(mc_server_t *s, const char *why);
static void srv_flush(mc_server_t *s);
static int srv_ready(mc_server_t *s);
static void queue_get(mc_server_t *s, mc_ref_t ref);
static void queue_mg(mc_server_t *s, mc_ref_t ref);
static void probe_arm(mc_server_t *s);
static void probe_drained(mc_server_t *s);
static void srv_connect(mc_server_t *s);
static void queue_line(mc_server_t *s, mc_wop_kind_t kind, mc_ref_t ref);
static mc_server_t *failover_of(oc_mc_t *mc, const char *key, size_t klen,
                                size_t primary);

static double mc_now(oc_mc_t *mc)
{
    struct timeval tv;
    event_base_gettimeofday_cached(mc->base, &tv);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void tv_of(struct timeval *tv, double s)
{
    if (s < 0)
        s = 0;
    tv->tv_sec = (time_t)s;
    tv->tv_usec = (suseconds_t)((s - (double)(time_t)s) * 1e6);
}

/* ---- jobs ---------------------------------------------------------------- */

/* A chunk of a GET job's arena. Chunks, not one buffer grown by realloc:
 * a value is copied once out of the server's read buffer and stays there,
 * so a large one can go to the client by reference (oc_reply). */
struct oc_mc_chunk {
    struct oc_mc_chunk *next;
    size_t len, cap;
    int own; /* one value's alone (MC_CHUNK_OWN) */
    char data[];
};

#define MC_CHUNK_MIN 4096
#define MC_CHUNK_MAX (256 * 1024)
#define MC_CHUNK_OWN (64 * 1024)

oc_mc_job_t *oc_mc_job_new_get(size_t n, oc_mc_done_fn done, void *arg)
{
    size_t sz = sizeof(oc_mc_job_t) + n * (sizeof(char *) + sizeof(size_t) +
                                           sizeof(oc_mc_hit_t) + sizeof(uint32_t));
    oc_mc_job_t *job = calloc(1, sz);
    if (job == NULL)
        return NULL;
    job->op = OC_MC_GET;
    job->n = n;
    job->hits = (oc_mc_hit_t *)(job + 1);
    job->keys = (const char **)(job->hits + n);
    job->key_lens = (size_t *)(job->keys + n);
    job->refresh_s = (uint32_t *)(job->key_lens + n);
    job->done = done;
    job->arg = arg;
    return job;
}

oc_mc_job_t *oc_mc_job_new_items(oc_mc_op_t op, size_t n, oc_mc_done_fn done, void *arg)
{
    oc_mc_job_t *job = calloc(1, sizeof(oc_mc_job_t) + n * sizeof(oc_mc_item_t));
    if (job == NULL)
        return NULL;
    job->op = op;
    job->n = n;
    job->items = (oc_mc_item_t *)(job + 1);
    job->done = done;
    job->arg = arg;
    return job;
}

void oc_mc_job_free(oc_mc_job_t *job)
{
    if (job == NULL)
        return;
    while (job->arena) {
        struct oc_mc_chunk *next = job->arena->next;
        free(job->arena);
        job->arena = next;
    }
    free(job);
}

/* Text a server sent (an error line, a probe's answer), made fit for a
 * quoted log value and a client's reply line in place: `"` and `\`
 * become `'`, control characters spaces (as oc_log_clean). Without it a
 * server could end a log line's reason="..." and forge fields after it
 * (found by a review). */
static void text_clean(char *p)
{
    oc_log_clean(p, strlen(p) + 1, p);
}

/* Count a failed part; the first failure's text is the job's err. */
static void job_error(oc_mc_job_t *job, const char *what, size_t len)
{
    if (job->errors++ == 0) {
        snprintf(job->err, sizeof(job->err), "%.*s", (int)len, what);
        text_clean(job->err);
    }
}

/* One key or item of `job` is answered; when it was the last, its done is
 * due: it runs from the flush event, so never inside oc_mc_submit. */
static void part_done(oc_mc_t *mc, oc_mc_job_t *job)
{
    if (--job->parts_left > 0)
        return;
    for (size_t i = 0; job->prev_failed_ > 0 && i < job->n; i++) {
        oc_mc_item_t *it = &job->items[i];
        if (!it->prev_failed_)
            continue;
        it->own_failed_ = it->result == OC_MC_R_ERROR; /* its own part's answer */
        it->result = OC_MC_R_ERROR;
    }
    job->next = NULL;
    if (mc->due_tail)
        mc->due_tail->next = job;
    else
        mc->due_head = job;
    mc->due_tail = job;
    event_active(mc->ev_flush, EV_TIMEOUT, 0);
}

/* A part that will get no answer: a GET key misses, an item is an error. */
static void part_fail(oc_mc_t *mc, oc_mc_job_t *job, size_t idx, const char *why)
{
    job_error(job, why, strlen(why));
    if (job->op != OC_MC_GET)
        job->items[idx].result = OC_MC_R_ERROR;
    else
        job->hits[idx].error = 1;
    part_done(mc, job);
}

/* A delete on the key's server of servers_previous failed (why): its item
 * is an error once every part of the job is answered, whatever its own
 * server answered (the order of the answers does not matter). */
static void prev_fail(oc_mc_job_t *job, size_t idx, const char *why, size_t len)
{
    job_error(job, why, len);
    job->items[idx].prev_failed_ = 1;
    job->prev_failed_++;
}

/* The same for a ref: a shadow delete failing changes nothing. */
static void ref_fail(oc_mc_t *mc, mc_ref_t ref, const char *why)
{
    if (ref.via == MC_VIA_PREVIOUS)
        prev_fail(ref.job, ref.idx, why, strlen(why));
    if (ref.via == MC_VIA_SHADOW || ref.via == MC_VIA_PREVIOUS)
        part_done(mc, ref.job);
    else
        part_fail(mc, ref.job, ref.idx, why);
}

/* Keep len bytes of p in the arena; *at: where. Small values share chunks,
 * each twice the last up to MC_CHUNK_MAX; a value of MC_CHUNK_OWN bytes or
 * more gets a chunk of its own size, linked behind the shared one, so what
 * a chunk leaves unused stays below the small values' own bytes plus one
 * chunk whatever the mix of sizes (arena_len, bounded by max_bytes, counts
 * only values). */
static int arena_append(oc_mc_job_t *job, const char *p, size_t len, const char **at)
{
    struct oc_mc_chunk *head = job->arena, *c = head;
    if (len >= MC_CHUNK_OWN || c == NULL || c->cap - c->len < len) {
        size_t cap = len;
        if (len < MC_CHUNK_OWN) {
            cap = c && !c->own ? c->cap * 2 : MC_CHUNK_MIN;
            if (cap > MC_CHUNK_MAX)
                cap = MC_CHUNK_MAX;
            if (cap < len)
                cap = len;
        }
        if ((c = malloc(sizeof(*c) + (cap ? cap : 1))) == NULL)
            return -1;
        c->len = 0;
        c->cap = cap;
        c->own = len >= MC_CHUNK_OWN;
        if (c->own && head != NULL) { /* the shared chunk stays first */
            c->next = head->next;
            head->next = c;
        } else {
            c->next = head;
            job->arena = c;
        }
    }
    if (len > 0)
        memcpy(c->data + c->len, p, len);
    *at = c->data + c->len;
    c->len += len;
    job->arena_len += len;
    return 0;
}

/* A CAS_DELETE job's own item (not a shadow delete): sent as `md`. */
static int ref_is_md(mc_ref_t ref)
{
    return ref.via != MC_VIA_SHADOW && ref.via != MC_VIA_PREVIOUS && ref.job &&
           ref.job->op == OC_MC_CAS_DELETE;
}

static const char *ref_key(mc_ref_t r, size_t *klen)
{
    if (r.job->op == OC_MC_GET) {
        *klen = r.job->key_lens[r.idx];
        return r.job->keys[r.idx];
    }
    *klen = r.job->items[r.idx].klen;
    return r.job->items[r.idx].key;
}

int oc_mc_wants_mg(uint32_t lease_ttl_s, uint32_t refresh_s, int on_failover)
{
    return lease_ttl_s > 0 || oc_mc_refresh_window(refresh_s, on_failover) > 0;
}

uint32_t oc_mc_refresh_window(uint32_t refresh_s, int on_failover)
{
    return on_failover ? 0 : refresh_s;
}

/* A GET key is read with a meta get when it takes a lease on a miss or
 * asks for a refresh window (the text protocol's gets can do neither). */
static int ref_wants_mg(mc_ref_t r)
{
    return oc_mc_wants_mg(r.job->lease_ttl_s,
                          r.job->refresh_s ? r.job->refresh_s[r.idx] : 0,
                          r.via != MC_VIA_PRIMARY);
}

/* ---- buffers ------------------------------------------------------------------ */

static int buf_reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (len + more <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < len + more)
        c *= 2;
    char *b = realloc(*buf, c);
    if (b == NULL)
        return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* An empty buffer that grew past MC_BUF_KEEP: freed (made again when
 * needed). */
static void buf_trim(char **buf, size_t *cap)
{
    if (*cap > MC_BUF_KEEP) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

/* Room for `more` bytes at the end of out, moving what was sent away. */
static char *out_reserve(mc_server_t *s, size_t more)
{
    if (s->out_off > 0 && s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    if (buf_reserve(&s->out, &s->out_cap, s->out_len, more) != 0)
        return NULL;
    return s->out + s->out_len;
}

static void wait_push(mc_server_t *s, mc_wop_t *w)
{
    if (s->wait_head == NULL) {
        s->progress = mc_now(s->mc);
        if (s->conn == MC_CONN_OPEN && !evtimer_pending(s->ev_timer, NULL)) {
            struct timeval tv;
            tv_of(&tv, s->mc->io_s);
            evtimer_add(s->ev_timer, &tv);
        }
    }
    w->next = NULL;
    if (s->wait_tail)
        s->wait_tail->next = w;
    else
        s->wait_head = w;
    s->wait_tail = w;
}

static void mark_dirty(mc_server_t *s)
{
    if (s->dirty)
        return;
    s->dirty = 1;
    s->dirty_next = s->mc->dirty;
    s->mc->dirty = s;
    event_active(s->mc->ev_flush, EV_TIMEOUT, 0);
}

/* ---- health ------------------------------------------------------------------ */

static void srv_changed(mc_server_t *s, oc_tko_state_t from, const char *why)
{
    oc_mc_t *mc = s->mc;
    oc_tko_state_t to = s->tko.state;
    const char *pool = s->gutter ? "gutter" : s->prev_only ? "previous" : "pool";
    /* Out of service, or back (flushed): what was read there before is
     * gone, and memcached may have restarted meanwhile (its cas count with
     * it). A reconnect while in service keeps the epoch: a fill's lease is
     * still its own there after an io timeout (found by a review). */
    s->cas_epoch = ++mc->epoch_seq;
    if (to == OC_TKO_DOWN && from == OC_TKO_UP) {
        oc_log_warn("event=memcached_down server=%s pool=%s failures=%u reason=\"%s\"",
                    s->name, pool, mc->rules.failure_limit, why);
        if (mc->stats)
            mc->stats->mc_ejections++;
    } else if (to == OC_TKO_DOWN) { /* a probe failed: every retry_timeout */
        oc_log_debug("event=memcached_down server=%s pool=%s reason=\"probe: %s\"",
                     s->name, pool, why);
    } else if (to == OC_TKO_PROBING) {
        oc_log_debug("event=memcached_probing server=%s pool=%s", s->name, pool);
    } else {
        oc_log_info("event=memcached_up server=%s pool=%s reason=\"%s\" down_s=%.1f",
                    s->name, pool, why, s->tko.back_at - s->tko.down_at);
        if (mc->stats)
            mc->stats->mc_returns++;
    }
    if (to == OC_TKO_DOWN)
        probe_arm(s);
    if (from == OC_TKO_UP && to == OC_TKO_DOWN &&
        s->tko.down_at - s->tko.back_at > (double)s->copies_ttl_s + 1)
        s->copies_ttl_s = 0; /* the last outage's copies are gone */
    if (to != OC_TKO_UP && mc->failover_ttl_s > s->copies_ttl_s)
        s->copies_ttl_s = mc->failover_ttl_s;
    if (to != OC_TKO_UP && mc->failover_on)
        s->flush_owed = 1;
    else if (to == OC_TKO_UP)
        s->flush_owed = 0;
    if (mc->changed)
        mc->changed(mc->changed_arg);
}

/* A failure on s's connection: counted, maybe ejecting it. */
static void srv_failed(mc_server_t *s, const char *why)
{
    oc_tko_state_t from = s->tko.state;
    if (oc_tko_failure(&s->tko, &s->mc->rules, mc_now(s->mc)))
        srv_changed(s, from, why);
}

/* The probe passed (answered, and flushed with failover on). */
static void srv_passed(mc_server_t *s, const char *why)
{
    s->drain_waits = 0;
    if (oc_tko_passed(&s->tko, mc_now(s->mc)))
        srv_changed(s, OC_TKO_PROBING, why);
}

/* Setups that work but never cache, said once per server (found by a
 * review, 2026-12-06: until then only PostgreSQL's load showed them). */
#define MC_WARN_NO_META 1u /* a meta command answered ERROR */
#define MC_WARN_NO_CAS  2u /* a cas of 0 */

/* A bare ERROR to mg, ms or md: the server does not know the meta protocol
 * (memcached before 1.6, or a proxy where a memcached should be). It stays
 * in service (it answers): gets are loaded from PostgreSQL, never written
 * back, with no lease between hosts, and pushes fail. */
static void srv_meta_refused(mc_server_t *s, const oc_mcp_line_t *l)
{
    if (l->type != OC_MCP_ERROR || l->text_len != 5 ||
        (s->setup_warned & MC_WARN_NO_META))
        return;
    s->setup_warned |= MC_WARN_NO_META;
    oc_log_warn(
        "event=memcached_no_meta server=%s reason=\"a meta command (mg, ms, md) "
        "answered ERROR: memcached 1.6.10 or later is needed, not an older one or a "
        "proxy; gets load from PostgreSQL and nothing is cached\"",
        s->name);
}

/* A cas of 0 from a meta reply that asked for it: memcached counts cas
 * from 1, unless started with -C (no cas), where every lease has cas 0, so
 * no fill can write over it (`cas ... 0` is EXISTS) and no push check can
 * replace a push. */
static void srv_cas_seen(mc_server_t *s, uint64_t cas)
{
    if (cas != 0 || (s->setup_warned & MC_WARN_NO_CAS))
        return;
    s->setup_warned |= MC_WARN_NO_CAS;
    oc_log_warn(
        "event=memcached_cas_disabled server=%s reason=\"it answers cas 0: started "
        "with -C? leases and fills need cas; gets load from PostgreSQL and nothing "
        "is cached\"",
        s->name);
}

static uint64_t ratelog_due(oc_ratelog_t *r, double now)
{
    return oc_ratelog_due(r, now, MC_RATELOG_S);
}

/* An EN to `mg ... N`: memcached makes the lease of every key it lacks,
 * unless it has no memory for it and may not evict (-M). The key loads
 * from PostgreSQL without a lease: not written back, and every sidecar
 * loads it. Said at most once a minute per server, with the count (found
 * by a review, 2026-12-06: before, nothing said it). */
static void srv_lease_refused(mc_server_t *s)
{
    uint64_t n = ratelog_due(&s->lease_refused, mc_now(s->mc));
    if (n)
        oc_log_warn(
            "event=memcached_lease_refused server=%s count=%llu reason=\"`mg ... "
            "N` answered EN, no lease made: out of memory with -M? keys load from "
            "PostgreSQL and are not written back\"",
            s->name, (unsigned long long)n);
}

/* A write memcached refused itself (SERVER_ERROR: an item over its -I, out
 * of memory with -M): a load so refused is served but never cached, and
 * every get of it loads it again; only mc_errors counted it. Said at most
 * once a minute per server, with the count and the words of the refusal
 * that drew the line (found by a review, 2026-12-06). */
static void srv_store_refused(mc_server_t *s, const oc_mcp_line_t *l)
{
    if (l->type != OC_MCP_ERROR || l->text_len < 12 ||
        memcmp(l->text, "SERVER_ERROR", 12) != 0)
        return;
    uint64_t n = ratelog_due(&s->store_refused, mc_now(s->mc));
    if (n == 0)
        return;
    char why[OC_ERRLEN];
    snprintf(why, sizeof(why), "%.*s", (int)l->text_len, l->text);
    text_clean(why);
    oc_log_warn("event=memcached_store_refused server=%s count=%llu reason=\"%s\"",
                s->name, (unsigned long long)n, why);
}

static int in_service_cb(void *arg, int gutter, size_t idx)
{
    const oc_mc_t *mc = arg;
    const mc_list_t *l = gutter ? &mc->gutter : &mc->pool;
    return idx < l->n && oc_tko_in_service(&l->s[idx]->tko);
}

/* Where key goes while its pool server `primary` is out of service: NULL
 * with failover off, or when no server is left. */
static mc_server_t *failover_of(oc_mc_t *mc, const char *key, size_t klen, size_t primary)
{
    if (!mc->failover_on || mc->failover == NULL)
        return NULL;
    int g = 0;
    size_t t =
        oc_failover_target(mc->failover, key, klen, primary, in_service_cb, mc, &g);
    if (t == OC_FAILOVER_NONE)
        return NULL;
    return g ? mc->gutter.s[t] : mc->pool.s[t];
}

/* Servers in service, but for those of `skip`: the failover chain of a
 * key as it was while they were away. */
typedef struct mc_chain_skip {
    oc_mc_t *mc;
    const mc_server_t **skip;
    size_t n;
} mc_chain_skip_t;

static int in_service_but_cb(void *arg, int gutter, size_t idx)
{
    const mc_chain_skip_t *c = arg;
    if (!in_service_cb(c->mc, gutter, idx))
        return 0;
    const mc_server_t *s = gutter ? c->mc->gutter.s[idx] : c->mc->pool.s[idx];
    for (size_t i = 0; i < c->n; i++)
        if (c->skip[i] == s)
            return 0;
    return 1;
}

/* Where key (of pool server `primary`, out of service) went while the
 * servers of `skip` were out of service too: NULL as failover_of. */
static mc_server_t *failover_but(oc_mc_t *mc, const char *key, size_t klen,
                                 size_t primary, const mc_server_t **skip, size_t n)
{
    if (!mc->failover_on || mc->failover == NULL)
        return NULL;
    mc_chain_skip_t c = {mc, skip, n};
    int g = 0;
    size_t t =
        oc_failover_target(mc->failover, key, klen, primary, in_service_but_cb, &c, &g);
    if (t == OC_FAILOVER_NONE)
        return NULL;
    return g ? mc->gutter.s[t] : mc->pool.s[t];
}

/* ---- answers -------------------------------------------------------------------- */

static void item_result(oc_mc_t *mc, mc_ref_t ref, oc_mc_result_t r)
{
    if (ref.via != MC_VIA_SHADOW && ref.via != MC_VIA_PREVIOUS)
        ref.job->items[ref.idx].result = r;
    part_done(mc, ref.job);
}

/* What a store, delete or version reply means for its item. */
static oc_mc_result_t reply_result(oc_mcp_reply_t t)
{
    switch (t) {
    case OC_MCP_STORED:
    case OC_MCP_DELETED:
    case OC_MCP_HD:
    case OC_MCP_VERSION:
        return OC_MC_R_OK;
    case OC_MCP_NOT_STORED:
    case OC_MCP_NS:
        return OC_MC_R_NOT_STORED;
    case OC_MCP_EXISTS:
    case OC_MCP_EX:
        return OC_MC_R_EXISTS;
    case OC_MCP_NOT_FOUND:
    case OC_MCP_NF:
        return OC_MC_R_NOT_FOUND;
    default:
        return OC_MC_R_ERROR;
    }
}

static void queue_store(mc_server_t *s, mc_ref_t ref, const char *verb, const char *val,
                        size_t vlen, uint32_t flags, uint64_t cas);
static void queue_ms(mc_server_t *s, mc_ref_t ref, uint32_t flags, uint64_t cas);

oc_mc_result_t oc_mc_item_reply(oc_mc_op_t op, oc_mcp_reply_t reply, int *tries,
                                int *again)
{
    /* VERSION answers `version` (a PROBE) and nothing else does: anything
     * else is another command's reply (out_of_step resets the connection
     * first; this keeps the rule where the result is decided). */
    oc_mc_result_t r = (reply == OC_MCP_VERSION) != (op == OC_MC_PROBE)
                           ? OC_MC_R_ERROR
                           : reply_result(reply);
    *again = 0;
    if (op == OC_MC_SWAP && (r == OC_MC_R_EXISTS || r == OC_MC_R_NOT_FOUND))
        r = OC_MC_R_NOT_STORED; /* replaced or gone after our read */
    if (op == OC_MC_PUSH && r != OC_MC_R_OK && r != OC_MC_R_ERROR) {
        /* Someone wrote the key between our read and our write: again. */
        if (++*tries < OC_MC_PUSH_TRIES)
            *again = 1;
        else
            r = OC_MC_R_ERROR;
    }
    return r;
}

/* A store or delete of one item got its reply line. */
static void on_item_reply(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    oc_mc_item_t *it = &job->items[ref.idx];
    if (ref.via == MC_VIA_SHADOW) {
        part_done(mc, job);
        return;
    }
    if (ref.via == MC_VIA_PREVIOUS) { /* deleted or not there: both fine */
        if (reply_result(l->type) != OC_MC_R_OK &&
            reply_result(l->type) != OC_MC_R_NOT_FOUND)
            prev_fail(job, ref.idx, l->text ? l->text : "unexpected reply",
                      l->text ? l->text_len : strlen("unexpected reply"));
        part_done(mc, job);
        return;
    }
    int again;
    oc_mc_result_t r = oc_mc_item_reply(job->op, l->type, &it->tries_, &again);
    if (again) {
        queue_get(s, ref);
        return;
    }
    if (r == OC_MC_R_ERROR && job->op == OC_MC_PUSH &&
        reply_result(l->type) != OC_MC_R_ERROR)
        job_error(job, "push: key kept changing, gave up",
                  strlen("push: key kept changing, gave up"));
    else if (r == OC_MC_R_ERROR)
        job_error(job, l->text ? l->text : "unexpected reply",
                  l->text ? l->text_len : strlen("unexpected reply"));
    it->refused = (r == OC_MC_R_ERROR && l->type == OC_MCP_ERROR);
    if (job->op == OC_MC_PUSH && r == OC_MC_R_OK) {
        srv_cas_seen(s, l->cas);
        it->stored_cas = l->cas;
        it->cas_epoch = s->cas_epoch;
    }
    item_result(mc, ref, r);
}

/* A GET key's read found the key (l) or not. */
static void on_get_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                        const char *data)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    oc_mc_hit_t *h = &job->hits[ref.idx];
    if (l && job->max_bytes && l->bytes > job->max_bytes - job->arena_len) {
        h->too_large = 1; /* arena_len never passes max_bytes */
        h->flags = l->flags;
        h->cas = l->cas; /* a refresh it won writes over it by cas */
        h->cas_epoch = s->cas_epoch;
    } else if (l && arena_append(job, data, l->bytes, &h->data) == 0) {
        h->cas_epoch = s->cas_epoch;
        h->found = 1;
        h->flags = l->flags;
        h->cas = l->cas;
        h->len = l->bytes;
    } else if (l) {
        job_error(job, "out of memory", strlen("out of memory"));
    }
    if (ref.via == MC_VIA_FAILOVER && mc->stats) {
        mc->stats->mc_failover_reads++;
        mc->stats->mc_failover_hits += (h->found != 0);
    }
    part_done(mc, job);
}

int oc_mc_swap_holds(const oc_mc_item_t *it, uint32_t flags, const char *data, size_t len)
{
    return flags == it->expect_flags && len == it->expect_len &&
           (len == 0 || memcmp(data, it->expect, len) == 0);
}

/* A read of `ref` found the key (found = 1, with l) or not. */
static void on_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                    const char *data)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    if (job->op == OC_MC_GET) {
        on_get_read(s, ref, l, data);
        return;
    }
    oc_mc_item_t *it = &job->items[ref.idx];
    if (job->op == OC_MC_SWAP) {
        if (l && oc_mc_swap_holds(it, l->flags, data, l->bytes))
            queue_store(s, ref, "cas", it->val, it->vlen, it->flags, l->cas);
        else
            item_result(mc, ref, OC_MC_R_NOT_STORED);
        return;
    }
    /* PUSH */
    oc_mc_decision_t dec =
        it->decide(it, l != NULL, l ? l->flags : 0, l ? data : NULL, l ? l->bytes : 0);
    if (dec == OC_MC_KEEP) {
        item_result(mc, ref, OC_MC_R_NOT_STORED);
        return;
    }
    it->unordered = (dec == OC_MC_WRITE_UNORDERED);
    uint32_t flags =
        it->unordered && it->unordered_flags ? it->unordered_flags : it->flags;
    queue_ms(s, ref, flags, l ? l->cas : 0);
}

int oc_mc_meta_lease(const oc_mcp_line_t *l, oc_mc_lease_t *lease,
                     oc_mc_refresh_t *refresh)
{
    if (l == NULL || !l->win)
        return 0;
    int won = l->win == OC_MCP_WIN;
    if (l->flags == 0 && l->bytes == 0) {
        *lease = won ? OC_MC_LEASE_WON : OC_MC_LEASE_HELD;
        return 1;
    }
    *refresh = won ? OC_MC_REFRESH_WON : OC_MC_REFRESH_HELD;
    return 0;
}

/* A meta get's reply (l: VA, or NULL for EN or an error) for a GET key.
 * W or Z on an empty item with flags 0 is a lease (memcached made it for
 * an N flag); on a value they answer the R flag: this reader refreshes it
 * (W) or another does (Z), and it is a hit either way. */
static void on_meta_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                         const char *data)
{
    oc_mc_job_t *job = ref.job;
    oc_mc_hit_t *h = &job->hits[ref.idx];
    if (l != NULL)
        srv_cas_seen(s, l->cas);
    if (l != NULL && oc_mc_meta_lease(l, &h->lease, &h->refresh)) {
        if (l->cas == 0) {
            /* memcached -C: a lease no fill can write over (srv_cas_seen),
             * which would make every other reader wait lease_wait for
             * nothing. A failed read instead: the key loads at once. */
            h->lease = OC_MC_LEASE_NONE;
            ref_fail(s->mc, ref, "memcached gave a lease without a cas (-C)");
            return;
        }
        h->cas = l->cas;
        h->cas_epoch = s->cas_epoch;
        if (ref.via == MC_VIA_FAILOVER && s->mc->stats)
            s->mc->stats->mc_failover_reads++;
        part_done(s->mc, job);
        return;
    }
    on_read(s, ref, l, data);
}

/* The GETS wop's refs from the cursor up to (not including) `upto` missed. */
static void gets_misses(mc_server_t *s, mc_wop_t *w, size_t upto)
{
    while (w->cursor < upto)
        on_read(s, w->refs[w->cursor++], NULL, NULL);
}

/* The ref a VALUE answers: the next one asked with this key. */
static int gets_match(mc_wop_t *w, const oc_mcp_line_t *l, size_t *at)
{
    for (size_t i = w->cursor; i < w->nrefs; i++) {
        size_t kl;
        const char *k = ref_key(w->refs[i], &kl);
        if (kl == l->klen && memcmp(k, l->key, kl) == 0) {
            *at = i;
            return 0;
        }
    }
    return -1;
}

/* The server's own probe got its line: `version` answered, then (with
 * failover on) `flush_all`. Anything else fails the probe: -1, with the
 * reason in s->broken. */
static int on_probe_reply(mc_server_t *s, mc_wop_kind_t kind, const oc_mcp_line_t *l,
                          const char *line);

/* An MG wop's next reply. 1: the wop is done, 0: need more, -1: broken. */
static int parse_mg(mc_server_t *s, mc_wop_t *w, const char *p, size_t avail,
                    const oc_mcp_line_t *l)
{
    oc_mcp_reply_t t = l->type;
    if (t != OC_MCP_VA && t != OC_MCP_EN && t != OC_MCP_ERROR)
        return -1;
    /* A meta reply names no command: the key it returns (k, asked on every
     * mg) is what ties it to this one. A VA must name it; an EN may (an
     * older server's). Another key means a reply went missing or came
     * unasked: every answer after it would be another key's value. */
    size_t kl;
    const char *k = ref_key(w->refs[w->cursor], &kl);
    if ((t == OC_MCP_VA || (t == OC_MCP_EN && l->klen > 0)) &&
        (l->klen != kl || memcmp(l->key, k, kl) != 0)) {
        snprintf(s->broken, sizeof(s->broken), "meta reply for another key");
        return -1;
    }
    if (t == OC_MCP_VA && avail < l->line_len + (size_t)l->bytes + 2)
        return 0; /* the data block is not all here yet */
    const char *data = p + l->line_len;
    if (t == OC_MCP_VA && (data[l->bytes] != '\r' || data[l->bytes + 1] != '\n'))
        return -1;
    s->in_off += l->line_len + (t == OC_MCP_VA ? (size_t)l->bytes + 2 : 0);
    mc_ref_t ref = w->refs[w->cursor++];
    if (t == OC_MCP_ERROR) { /* this key only: the next reply is the next key's */
        srv_meta_refused(s, l);
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "%.*s", (int)l->text_len, l->text);
        ref_fail(s->mc, ref, why);
    } else {
        if (t == OC_MCP_EN && ref.job->lease_ttl_s > 0)
            srv_lease_refused(s);
        on_meta_read(s, ref, t == OC_MCP_VA ? l : NULL, data);
    }
    return w->cursor == w->nrefs ? 1 : 2; /* 2: go on with the same wop */
}

/* A GETS wop's next line. Same answers as parse_mg. */
static int parse_gets(mc_server_t *s, mc_wop_t *w, const char *p, size_t avail,
                      const oc_mcp_line_t *l)
{
    if (l->type == OC_MCP_END || l->type == OC_MCP_ERROR) {
        s->in_off += l->line_len;
        if (l->type == OC_MCP_ERROR) { /* the keys not answered yet failed */
            char why[OC_ERRLEN];
            snprintf(why, sizeof(why), "%.*s", (int)l->text_len, l->text);
            for (; w->cursor < w->nrefs; w->cursor++)
                ref_fail(s->mc, w->refs[w->cursor], why);
        }
        gets_misses(s, w, w->nrefs);
        return 1;
    }
    if (l->type != OC_MCP_VALUE)
        return -1;
    if (avail < l->line_len + (size_t)l->bytes + 2)
        return 0; /* the data block is not all here yet */
    const char *data = p + l->line_len;
    size_t at;
    if (data[l->bytes] != '\r' || data[l->bytes + 1] != '\n' ||
        gets_match(w, l, &at) != 0)
        return -1;
    gets_misses(s, w, at);
    s->in_off += l->line_len + (size_t)l->bytes + 2;
    on_read(s, w->refs[w->cursor++], l, data);
    return 2;
}

static void srv_learned(mc_server_t *s, int answered);

/* A STATS wop's next line: STAT lines, then END (or an error: a server
 * that has no `stats`). Same answers as parse_mg. */
static int parse_stats(mc_server_t *s, const oc_mcp_line_t *l)
{
    if (l->type == OC_MCP_STAT && ++s->stat_lines <= MC_STAT_LINES_MAX) {
        s->in_off += l->line_len;
        oc_mcp_proc_stat(&s->learning, l->key, l->klen, l->text, l->text_len);
        return 2;
    }
    if (l->type != OC_MCP_END && l->type != OC_MCP_ERROR) {
        if (l->type == OC_MCP_STAT)
            snprintf(s->broken, sizeof(s->broken), "stats: over %d lines",
                     MC_STAT_LINES_MAX);
        return -1;
    }
    if (l->type == OC_MCP_ERROR && l->text_len > 5 && memcmp(l->text, "ERROR ", 6) == 0) {
        /* memcached's refusal of the connection (over -c), which it closes
         * next, with its words as the reason (it was "unexpected reply";
         * found by a review). Not a failure of the server (srv_refused). */
        snprintf(s->broken, sizeof(s->broken), "%.*s", (int)l->text_len, l->text);
        text_clean(s->broken);
        s->conn_limited = strcmp(s->broken, "ERROR Too many open connections") == 0;
        return -1;
    }
    s->in_off += l->line_len;
    srv_learned(s, l->type == OC_MCP_END);
    return 1;
}

/* An `md` line (a CAS_DELETE job's item): answered HD, NF or EX (memcached
 * 1.6.10 on; an older one's OK counts as an error), where every other
 * store or delete is answered in the classic words. */
static int wop_is_md(const mc_wop_t *w)
{
    return w->kind == MC_WOP_DELETE && ref_is_md(w->one);
}

static int is_meta_reply(oc_mcp_reply_t t)
{
    return t == OC_MCP_HD || t == OC_MCP_NF || t == OC_MCP_EX || t == OC_MCP_NS;
}

int oc_mc_out_of_step(oc_mc_line_cmd_t cmd, oc_mcp_reply_t t)
{
    if (t == OC_MCP_ERROR)
        return 0;
    switch (cmd) {
    case OC_MC_LINE_MD: /* an md older memcached answered OK: an error */
        return (!is_meta_reply(t) || t == OC_MCP_NS) && t != OC_MCP_OK;
    case OC_MC_LINE_MS:
        return !is_meta_reply(t);
    case OC_MC_LINE_DELETE:
        return t != OC_MCP_DELETED && t != OC_MCP_NOT_FOUND;
    case OC_MC_LINE_STORE:
        return t != OC_MCP_STORED && t != OC_MCP_NOT_STORED && t != OC_MCP_EXISTS &&
               t != OC_MCP_NOT_FOUND;
    case OC_MC_LINE_VERSION:
        return t != OC_MCP_VERSION;
    }
    return 0;
}

int oc_mc_meta_flags_fit(oc_mc_line_cmd_t cmd, const oc_mcp_line_t *l)
{
    if (!is_meta_reply(l->type))
        return 1;
    if (cmd == OC_MC_LINE_MS)
        return l->has_cas;
    return cmd != OC_MC_LINE_MD || l->n_flags == 0;
}

/* The line command of the one-line wop w (store, delete, version); -1 for
 * the others (the server's own probe and flush are judged by
 * on_probe_reply). */
static int wop_line_cmd(const mc_wop_t *w)
{
    switch (w->kind) {
    case MC_WOP_DELETE:
        return wop_is_md(w) ? OC_MC_LINE_MD : OC_MC_LINE_DELETE;
    case MC_WOP_STORE:
        return OC_MC_LINE_STORE;
    case MC_WOP_MS:
        return OC_MC_LINE_MS;
    case MC_WOP_VERSION:
        return OC_MC_LINE_VERSION;
    default:
        return -1;
    }
}

/* Does reply l answer the one-line wop w? (oc_mc_out_of_step) */
static int out_of_step(const mc_wop_t *w, const oc_mcp_line_t *l)
{
    int cmd = wop_line_cmd(w);
    if (cmd < 0)
        return 0;
    return oc_mc_out_of_step((oc_mc_line_cmd_t)cmd, l->type) ||
           !oc_mc_meta_flags_fit((oc_mc_line_cmd_t)cmd, l);
}

/* Parse what `w` is owed from the input. 1: done, 0: need more, -1: the
 * stream is broken. */
static int parse_wop(mc_server_t *s, mc_wop_t *w)
{
    for (;;) {
        const char *p = s->in + s->in_off;
        size_t avail = s->in_len - s->in_off;
        oc_mcp_line_t l;
        oc_mcp_reply_t t = oc_mcp_parse_line(p, avail, &l);
        if (t == OC_MCP_NEED_MORE)
            return 0;
        if (t == OC_MCP_BAD)
            return -1;
        int r;
        if (w->kind == MC_WOP_STATS)
            r = parse_stats(s, &l);
        else if (w->kind == MC_WOP_MG)
            r = parse_mg(s, w, p, avail, &l);
        else if (w->kind == MC_WOP_GETS)
            r = parse_gets(s, w, p, avail, &l);
        else if (out_of_step(w, &l))
            return -1;
        else {
            s->in_off += l.line_len;
            if (w->kind == MC_WOP_VERSION)
                item_result(s->mc, w->one,
                            t == OC_MCP_VERSION ? OC_MC_R_OK : OC_MC_R_ERROR);
            else if (w->kind == MC_WOP_PROBE || w->kind == MC_WOP_FLUSH)
                return on_probe_reply(s, w->kind, &l, p) < 0 ? -1 : 1;
            else {
                if (w->kind == MC_WOP_MS || wop_is_md(w))
                    srv_meta_refused(s, &l);
                srv_store_refused(s, &l);
                on_item_reply(s, w->one, &l);
            }
            return 1;
        }
        if (r != 2)
            return r;
    }
}

static void wop_free(oc_mc_t *mc, mc_wop_t *w)
{
    free(w->refs);
    if (mc->nspare >= MC_WOP_SPARE) {
        free(w);
        return;
    }
    w->next = mc->spare;
    mc->spare = w;
    mc->nspare++;
}

static mc_wop_t *wop_new(oc_mc_t *mc)
{
    mc_wop_t *w = mc->spare;
    if (w == NULL)
        return calloc(1, sizeof(*w));
    mc->spare = w->next;
    mc->nspare--;
    memset(w, 0, sizeof(*w));
    return w;
}

static void srv_parse(mc_server_t *s)
{
    while (s->wait_head) {
        mc_wop_t *w = s->wait_head;
        size_t before = s->in_off;
        int r = parse_wop(s, w);
        /* io_timeout runs from the last reply (or a key's answer) read, not
         * from the last byte: a server that trickles a byte at a time would
         * otherwise hold every request on it as long as it likes (found by
         * a review). `stats` lines do not count: only its END. */
        if (r > 0 || (r == 0 && s->in_off != before && w->kind != MC_WOP_STATS))
            s->progress = mc_now(s->mc);
        if (r == 0)
            break;
        if (r < 0) {
            char why[OC_ERRLEN];
            snprintf(why, sizeof(why), "%s",
                     s->broken[0] ? s->broken : "unexpected reply");
            s->broken[0] = '\0';
            int refused = s->conn_limited;
            s->conn_limited = 0;
            if (refused && oc_tko_in_service(&s->tko))
                srv_refused(s, why);
            else
                srv_fail(s, why); /* a probe's refusal fails the probe */
            return;
        }
        /* `stats` answered is no success: every new connection sends it,
         * and a server that answers it but never a read would be "one
         * failure in a row" forever, never marked down (found by a review) */
        if (w->kind != MC_WOP_STATS)
            oc_tko_success(&s->tko);
        s->wait_head = w->next;
        if (s->wait_head == NULL)
            s->wait_tail = NULL;
        wop_free(s->mc, w);
    }
    if (s->wait_head == NULL && s->in_off < s->in_len) {
        srv_fail(s, "reply to nothing asked");
        return;
    }
    if (s->in_off == s->in_len) {
        s->in_off = s->in_len = 0;
        buf_trim(&s->in, &s->in_cap);
    }
}

/* ---- queueing ------------------------------------------------------------------ */

/* The exptime an item is written with on s: capped at failover_ttl on a
 * failover (0, never, is more than that too). */
uint32_t oc_mc_store_exptime(uint32_t exptime_s, int on_failover, uint32_t failover_ttl_s)
{
    if (!on_failover)
        return exptime_s;
    return exptime_s == 0 || exptime_s > failover_ttl_s ? failover_ttl_s : exptime_s;
}

static uint32_t store_exptime(oc_mc_t *mc, mc_ref_t ref)
{
    int on_failover = ref.via == MC_VIA_FAILOVER;
    if (on_failover && mc->stats)
        mc->stats->mc_failover_writes++;
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    uint32_t e = ref.job->op == OC_MC_PUSH && it->unordered && it->unordered_ttl_s
                     ? it->unordered_ttl_s
                     : it->exptime_s;
    return oc_mc_store_exptime(e, on_failover, mc->failover_ttl_s);
}

static void queue_store(mc_server_t *s, mc_ref_t ref, const char *verb, const char *val,
                        size_t vlen, uint32_t flags, uint64_t cas)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, oc_mcp_store_size(it->klen, vlen)) : NULL;
    if (p == NULL) {
        free(w);
        ref_fail(s->mc, ref, "out of memory");
        return;
    }
    s->out_len += oc_mcp_format_store(p, verb, it->key, it->klen, flags,
                                      store_exptime(s->mc, ref), val, vlen, cas);
    w->kind = MC_WOP_STORE;
    w->one = ref;
    wait_push(s, w);
    mark_dirty(s);
}

/* A PUSH item's write, over the item of `cas` (0: only if the key is
 * absent), asking for the cas of what it stores (oc_mcp_format_ms). */
static void queue_ms(mc_server_t *s, mc_ref_t ref, uint32_t flags, uint64_t cas)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, oc_mcp_ms_size(it->klen, it->vlen)) : NULL;
    if (p == NULL) {
        free(w);
        ref_fail(s->mc, ref, "out of memory");
        return;
    }
    s->out_len += oc_mcp_format_ms(p, it->key, it->klen, flags, store_exptime(s->mc, ref),
                                   it->val, it->vlen, cas);
    w->kind = MC_WOP_MS;
    w->one = ref;
    wait_push(s, w);
    mark_dirty(s);
}

/* One command line without a data block: `delete <key>` (DELETE) or `md
 * <key> C<cas>` (a CAS_DELETE job's item), `version` (VERSION, PROBE),
 * `flush_all` (FLUSH), answered by one line; `stats` (STATS), by STAT
 * lines and END. */
static void queue_line(mc_server_t *s, mc_wop_kind_t kind, mc_ref_t ref)
{
    size_t klen = 0;
    const char *key = kind == MC_WOP_DELETE ? ref_key(ref, &klen) : NULL;
    int md = kind == MC_WOP_DELETE && ref_is_md(ref);
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, oc_mcp_md_size(klen)) : NULL;
    if (p == NULL) {
        free(w);
        if (ref.job)
            ref_fail(s->mc, ref, "out of memory");
        else
            srv_fail(s, "out of memory");
        return;
    }
    char *start = p;
    if (md) {
        p += oc_mcp_format_md(p, key, klen, ref.job->items[ref.idx].cas);
    } else if (kind == MC_WOP_DELETE) {
        p = oc_mcp_put(p, "delete ", 7);
        p = oc_mcp_put(p, key, klen);
        p = oc_mcp_put(p, "\r\n", 2);
    } else if (kind == MC_WOP_FLUSH) {
        p = oc_mcp_put(p, "flush_all\r\n", 11);
    } else if (kind == MC_WOP_STATS) {
        p = oc_mcp_put(p, "stats\r\n", 7);
    } else {
        p = oc_mcp_put(p, "version\r\n", 9);
    }
    s->out_len += (size_t)(p - start);
    w->kind = kind;
    w->one = ref;
    wait_push(s, w);
    mark_dirty(s);
}

/* Append a key of job to one of s's lists for the next flush. */
static void queue_ref(mc_server_t *s, mc_ref_t **list, size_t *n, size_t *cap,
                      mc_ref_t ref)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        mc_ref_t *g = realloc(*list, c * sizeof(*g));
        if (g == NULL) {
            ref_fail(s->mc, ref, "out of memory");
            return;
        }
        *list = g;
        *cap = c;
    }
    (*list)[(*n)++] = ref;
    mark_dirty(s);
}

/* The key of the ref joins the server's next multi-get. */
static void queue_get(mc_server_t *s, mc_ref_t ref)
{
    queue_ref(s, &s->gets, &s->ngets, &s->gets_cap, ref);
}

/* A GET key with a lease TTL or a refresh window: a meta get at the next
 * flush. */
static void queue_mg(mc_server_t *s, mc_ref_t ref)
{
    queue_ref(s, &s->mgs, &s->nmgs, &s->mgs_cap, ref);
}

/* The meta gets queued for s this turn: one command each, one write. */
static void flush_mgs(mc_server_t *s)
{
    if (s->nmgs == 0)
        return;
    size_t bytes = 0;
    for (size_t i = 0; i < s->nmgs; i++)
        bytes += oc_mcp_mg_size(s->mgs[i].job->key_lens[s->mgs[i].idx]);
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, bytes) : NULL;
    mc_ref_t *refs = s->mgs;
    size_t n = s->nmgs;
    s->mgs = NULL;
    s->nmgs = s->mgs_cap = 0;
    if (p == NULL) {
        free(w);
        for (size_t i = 0; i < n; i++)
            ref_fail(s->mc, refs[i], "out of memory");
        free(refs);
        return;
    }
    char *start = p;
    for (size_t i = 0; i < n; i++) {
        const oc_mc_job_t *job = refs[i].job;
        size_t k = refs[i].idx;
        /* No refresh on a failover: its entries live failover_ttl at most,
         * and every read of them would reload them. */
        uint32_t refresh = oc_mc_refresh_window(job->refresh_s ? job->refresh_s[k] : 0,
                                                refs[i].via != MC_VIA_PRIMARY);
        p += oc_mcp_format_mg_r(p, job->keys[k], job->key_lens[k], job->lease_ttl_s,
                                refresh);
    }
    s->out_len += (size_t)(p - start);
    w->kind = MC_WOP_MG;
    w->refs = refs;
    w->nrefs = n;
    wait_push(s, w);
}

/* The multi-get of everything queued for s this turn, as one command. */
static void flush_gets(mc_server_t *s)
{
    if (s->ngets == 0)
        return;
    size_t bytes = 8;
    for (size_t i = 0; i < s->ngets; i++) {
        size_t kl;
        (void)ref_key(s->gets[i], &kl);
        bytes += 1 + kl;
    }
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, bytes) : NULL;
    if (p == NULL) {
        free(w);
        mc_ref_t *refs = s->gets;
        size_t n = s->ngets;
        s->gets = NULL;
        s->ngets = s->gets_cap = 0;
        for (size_t i = 0; i < n; i++)
            ref_fail(s->mc, refs[i], "out of memory");
        free(refs);
        return;
    }
    char *start = p;
    p = oc_mcp_put(p, "gets", 4);
    for (size_t i = 0; i < s->ngets; i++) {
        size_t kl;
        const char *k = ref_key(s->gets[i], &kl);
        *p++ = ' ';
        p = oc_mcp_put(p, k, kl);
    }
    *p++ = '\r';
    *p++ = '\n';
    s->out_len += (size_t)(p - start);
    w->kind = MC_WOP_GETS;
    w->refs = s->gets;
    w->nrefs = s->ngets;
    s->gets = NULL;
    s->ngets = s->gets_cap = 0;
    wait_push(s, w);
}

/* ---- drains ------------------------------------------------------------------- */

static void drain_free(mc_drain_t *d)
{
    if (d->ev)
        event_free(d->ev);
    if (d->fd >= 0)
        close(d->fd);
    free(d);
}

/* d is over (or given up): unlinked and freed; a probe waiting for the
 * last one goes on. */
static void drain_end(mc_drain_t *d)
{
    mc_server_t *s = d->s;
    mc_drain_t **pp = &s->drains;
    while (*pp != d)
        pp = &(*pp)->next;
    *pp = d->next;
    s->ndrains--;
    drain_free(d);
    if (s->ndrains > 0)
        return;
    s->drain_waits = 0;
    probe_drained(s);
}

static void on_drain_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char buf[16384];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0)
            continue; /* replies nobody waits for: dropped */
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        drain_end(arg); /* closed by memcached, reset, or timed out */
        return;
    }
}

/* s's open connection, failing while s is in service, is drained instead
 * of closed: it takes s->fd. (A probe's connection carried only `stats`,
 * `version` and `flush_all`, harmless whenever they run: it is closed.)
 * Out of memory, or the socket already reset, it is just closed. */
static void srv_drain(mc_server_t *s)
{
    if (s->conn != MC_CONN_OPEN || s->fd < 0 || !oc_tko_in_service(&s->tko))
        return;
    mc_drain_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return;
    /* Before its `stats` answered, it may have reached another process
     * than the last one (a restart): which is not known. */
    *d = (mc_drain_t){.s = s,
                      .fd = s->fd,
                      .proc = s->proc,
                      .proc_known = s->proc_known && !s->ident_pending,
                      .next = s->drains};
    d->ev = event_new(s->mc->base, d->fd, EV_READ | EV_PERSIST, on_drain_read, d);
    if (d->ev == NULL || shutdown(d->fd, SHUT_WR) != 0 || event_add(d->ev, NULL) != 0) {
        d->fd = -1; /* srv_close closes it */
        drain_free(d);
        return;
    }
    s->fd = -1;
    s->drains = d;
    if (++s->ndrains > MC_DRAINS_MAX) {
        mc_drain_t *old = s->drains;
        while (old->next)
            old = old->next;
        oc_log_warn(
            "event=memcached_drain_dropped server=%s reason=\"over %d connections "
            "still held by the server\"",
            s->name, MC_DRAINS_MAX);
        drain_end(old);
    }
}

/* A new connection of s reached the process `now` (known: pid and start
 * came): drains of another process end, for what they held died with it
 * (a restart, a host rebooted without resetting them). When it cannot be
 * told, they end too: a server that never says which process it is would
 * otherwise wait for ever on a drain of a host gone. */
static void drains_learned(mc_server_t *s, const oc_mcp_proc_t *now, int known)
{
    mc_drain_t *d = s->drains;
    while (d) {
        mc_drain_t *next = d->next;
        if (!known || (d->proc_known && !oc_mcp_proc_same(&d->proc, now)))
            drain_end(d);
        d = next;
    }
}

static void drains_free(mc_server_t *s)
{
    while (s->drains) {
        mc_drain_t *d = s->drains;
        s->drains = d->next;
        drain_free(d);
    }
    s->ndrains = 0;
    s->drain_waits = 0;
}

/* ---- connections -------------------------------------------------------------- */

static void srv_close(mc_server_t *s)
{
    if (s->ev_read)
        event_free(s->ev_read);
    if (s->ev_write)
        event_free(s->ev_write);
    s->ev_read = s->ev_write = NULL;
    if (s->ev_timer)
        evtimer_del(s->ev_timer);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->conn = MC_CONN_CLOSED;
    s->out_off = s->out_len = 0;
    s->in_off = s->in_len = 0;
    buf_trim(&s->out, &s->out_cap);
    buf_trim(&s->in, &s->in_cap);
    s->ident_pending = 0;
    s->flush_waits = 0;
}

/* A GET key whose read on its own server a failure cut short: read it
 * from the key's failover instead, at once (once: a failover that fails
 * too fails the key). 0 if there is none. */
static int ref_reroute(mc_server_t *s, mc_ref_t ref)
{
    oc_mc_t *mc = s->mc;
    if (ref.via != MC_VIA_PRIMARY || ref.job->op != OC_MC_GET || s->gutter)
        return 0;
    mc_server_t *f =
        failover_of(mc, ref.job->keys[ref.idx], ref.job->key_lens[ref.idx], s->idx);
    if (f == NULL || f == s || !srv_ready(f))
        return 0;
    ref.via = MC_VIA_FAILOVER;
    if (ref_wants_mg(ref))
        queue_mg(f, ref);
    else
        queue_get(f, ref);
    return 1;
}

/* A ref whose server failed: read elsewhere, or failed. */
static void ref_abort(mc_server_t *s, mc_ref_t ref, const char *msg, int reroute)
{
    if (!reroute || !ref_reroute(s, ref))
        ref_fail(s->mc, ref, msg);
}

/* How srv_abort ends a connection. */
typedef enum mc_abort {
    MC_ABORT_QUIET,   /* shutdown, a server removed: everything just fails */
    MC_ABORT_FAILURE, /* a failure: counted, reads go to the failover */
    MC_ABORT_REFUSED, /* memcached refused it unread: reads go to the
                         failover, nothing counted, nothing to drain */
} mc_abort_t;

/* Everything sent or queued to s fails (reads go to the failover unless
 * MC_ABORT_QUIET). A failure is counted: enough of them mark it down. */
static void srv_abort(mc_server_t *s, const char *why, mc_abort_t how)
{
    oc_mc_t *mc = s->mc;
    int failure = how == MC_ABORT_FAILURE;
    if (failure && s->conn != MC_CONN_CLOSED) {
        if (oc_tko_in_service(&s->tko))
            oc_log_warn("event=memcached_error server=%s reason=\"%s\"", s->name, why);
        else
            oc_log_debug("event=memcached_error server=%s reason=\"%s\"", s->name, why);
    }
    if (failure)
        srv_drain(s);
    srv_close(s);
    if (failure)
        srv_failed(s, why);
    char msg[OC_ERRLEN];
    snprintf(msg, sizeof(msg), "memcached %.128s: %.100s", s->name, why);
    /* Take the lists first: answering may queue more (to a server that is
     * down now, so those fail at once too). */
    mc_wop_t *w = s->wait_head;
    s->wait_head = s->wait_tail = NULL;
    mc_ref_t *gets = s->gets, *mgs = s->mgs, *held = s->held;
    size_t ngets = s->ngets, nmgs = s->nmgs, nheld = s->nheld;
    s->gets = s->mgs = s->held = NULL;
    s->ngets = s->gets_cap = s->nmgs = s->mgs_cap = s->nheld = s->held_cap = 0;
    while (w) {
        mc_wop_t *next = w->next;
        if (w->kind == MC_WOP_GETS || w->kind == MC_WOP_MG)
            for (size_t i = w->cursor; i < w->nrefs; i++)
                ref_abort(s, w->refs[i], msg, how != MC_ABORT_QUIET);
        else if (w->one.job)
            ref_fail(mc, w->one, msg);
        wop_free(mc, w);
        w = next;
    }
    for (size_t i = 0; i < ngets; i++)
        ref_abort(s, gets[i], msg, how != MC_ABORT_QUIET);
    for (size_t i = 0; i < nmgs; i++)
        ref_abort(s, mgs[i], msg, how != MC_ABORT_QUIET);
    for (size_t i = 0; i < nheld; i++)
        ref_fail(mc, held[i], msg);
    free(gets);
    free(mgs);
    free(held);
}

static void srv_fail(mc_server_t *s, const char *why)
{
    srv_abort(s, why, MC_ABORT_FAILURE);
}

/* memcached, at its connection limit (-c), answered a new connection of s
 * in service `ERROR Too many open connections` and closed it without
 * reading it: nothing sent on it ran. The server is alive and serves the
 * rest of the fleet, so this is no failure of it: counted as one, a fleet
 * over -c had its sidecars mark a healthy server down and flush_all it
 * when a slot freed (the whole server reloaded from PostgreSQL; found by a
 * review). It stays in service, unreached: for retry_timeout no new
 * connection is tried (a refusal costs the server an accept, and the fleet
 * is what fills it), reads go to the failover, writes fail (a delete is
 * requeued by its caller), as for a server failing but not marked down;
 * and until failover_ttl after that, a write also deletes the key's
 * failover copy made meanwhile (oc_tko_recent, through back_at). */
static void srv_refused(mc_server_t *s, const char *why)
{
    oc_mc_t *mc = s->mc;
    double now = mc_now(mc);
    mc->stats->mc_conn_limited++;
    s->refused_until = now + mc->rules.retry_s;
    if (s->tko.back_at < s->refused_until)
        s->tko.back_at = s->refused_until;
    uint64_t n = ratelog_due(&s->conn_limit, now);
    if (n)
        oc_log_warn("event=memcached_conn_limit server=%s count=%llu reason=\"%s: "
                    "memcached's -c is full; the server stays in service, its reads "
                    "go to the failover and its writes fail until a connection is "
                    "accepted\"",
                    s->name, (unsigned long long)n, why);
    srv_abort(s, why, MC_ABORT_REFUSED);
}

static void srv_read(mc_server_t *s);

/* A write failed on a new connection (its `stats` not answered yet): did
 * memcached refuse it over its -c? It closes such a connection with our
 * `stats` unread, which resets it, and a write queued meanwhile fails on
 * the reset before its `ERROR Too many open connections` is read: taken
 * for a failure, a busy sidecar kept refused marked a healthy server down
 * anyway (found by a review). Its words are still there to read (the
 * kernel hands over what came before a reset). */
static int refusal_unread(const mc_server_t *s)
{
    char c;
    return s->ident_pending && s->conn == MC_CONN_OPEN &&
           recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

static void srv_write(mc_server_t *s)
{
    while (s->out_off < s->out_len) {
        ssize_t n =
            send(s->fd, s->out + s->out_off, s->out_len - s->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            s->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(s->ev_write, NULL);
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "%s", n < 0 ? strerror(errno) : "write failed");
        if (refusal_unread(s)) {
            srv_read(s); /* the refusal (srv_refused) */
            if (s->conn != MC_CONN_OPEN)
                return;
        }
        srv_fail(s, why);
        return;
    }
    s->out_off = s->out_len = 0;
    buf_trim(&s->out, &s->out_cap);
}

static void srv_read(mc_server_t *s)
{
    for (int rounds = 0; rounds < 4; rounds++) {
        if (s->in_off > 0 && s->in_off == s->in_len)
            s->in_off = s->in_len = 0;
        if (s->in_off > 0 && s->in_cap - s->in_len < MC_READ_CHUNK) {
            memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
            s->in_len -= s->in_off;
            s->in_off = 0;
        }
        if (buf_reserve(&s->in, &s->in_cap, s->in_len, MC_READ_CHUNK) != 0) {
            srv_fail(s, "out of memory");
            return;
        }
        size_t room = s->in_cap - s->in_len;
        ssize_t n = recv(s->fd, s->in + s->in_len, room, 0);
        if (n == 0) {
            srv_fail(s, "connection closed");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            srv_fail(s, strerror(errno));
            return;
        }
        s->in_len += (size_t)n;
        srv_parse(s);
        if (s->conn != MC_CONN_OPEN || (size_t)n < room)
            return;
    }
}

static void on_srv_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    srv_read(arg);
}

static void srv_open(mc_server_t *s)
{
    s->conn = MC_CONN_OPEN;
    s->progress = mc_now(s->mc);
    if (s->wait_head) {
        struct timeval tv = {0, 1000};
        evtimer_add(s->ev_timer, &tv); /* on_srv_timer arms the io timeout */
    }
    event_add(s->ev_read, NULL);
    srv_write(s);
}

static void on_srv_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    mc_server_t *s = arg;
    if (s->conn == MC_CONN_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            soerr = errno;
        if (soerr != 0) {
            srv_fail(s, strerror(soerr));
            return;
        }
        srv_open(s);
        return;
    }
    srv_write(s);
}

double oc_mc_time_left(double since, double limit, double now)
{
    return limit - (now - since);
}

static void on_srv_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    mc_server_t *s = arg;
    oc_mc_t *mc = s->mc;
    double now = mc_now(mc), left;
    if (s->conn == MC_CONN_CONNECTING) {
        if (now >= s->deadline) {
            srv_fail(s, "connect timeout");
            return;
        }
        left = s->deadline - now;
    } else if (s->conn == MC_CONN_OPEN && s->wait_head) {
        if ((left = oc_mc_time_left(s->progress, mc->io_s, now)) <= 0) {
            srv_fail(s, "timeout");
            return;
        }
    } else {
        return;
    }
    struct timeval tv;
    tv_of(&tv, left);
    tv.tv_usec += 1;
    evtimer_add(s->ev_timer, &tv);
}

static void srv_connect(mc_server_t *s)
{
    oc_mc_t *mc = s->mc;
    int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        srv_fail(s, strerror(errno));
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->fd = fd;
    s->ev_read = event_new(mc->base, fd, EV_READ | EV_PERSIST, on_srv_read, s);
    s->ev_write = event_new(mc->base, fd, EV_WRITE, on_srv_write, s);
    if (s->ev_read == NULL || s->ev_write == NULL) {
        srv_fail(s, "out of memory");
        return;
    }
    s->conn = MC_CONN_CONNECTING;
    /* Which process answers, before any write by cas goes over this
     * connection (srv_learned). Replies come in order: every read's cas
     * on it is taken after this answer, in the epoch it settles. */
    s->ident_pending = 1;
    s->learning = (oc_mcp_proc_t){0};
    s->stat_lines = 0;
    queue_line(s, MC_WOP_STATS, (mc_ref_t){NULL, 0, 0});
    if (s->conn == MC_CONN_CLOSED)
        return; /* out of memory: failed */
    if (connect(fd, (struct sockaddr *)&s->addr, s->addrlen) == 0) {
        srv_open(s);
        return;
    }
    if (errno != EINPROGRESS) {
        srv_fail(s, strerror(errno));
        return;
    }
    s->deadline = mc_now(mc) + mc->connect_s;
    struct timeval tv;
    tv_of(&tv, mc->connect_s);
    evtimer_add(s->ev_timer, &tv);
    event_add(s->ev_write, NULL);
}

/* Can work be queued for s now? Only a server in service takes work; its
 * connection is made at once if it has none (a failure made then is
 * counted, and may take it out of service), unless memcached refused one
 * over its -c less than retry_timeout ago. */
static int srv_ready(mc_server_t *s)
{
    if (!oc_tko_in_service(&s->tko))
        return 0;
    if (s->conn == MC_CONN_CLOSED && mc_now(s->mc) < s->refused_until)
        return 0; /* refused over its -c a moment ago (srv_refused) */
    if (s->conn == MC_CONN_CLOSED)
        srv_connect(s);
    return s->conn != MC_CONN_CLOSED && oc_tko_in_service(&s->tko);
}

static void srv_flush(mc_server_t *s)
{
    flush_gets(s);
    flush_mgs(s);
    if (s->conn == MC_CONN_OPEN && s->out_off < s->out_len && s->ev_write &&
        !event_pending(s->ev_write, EV_WRITE, NULL))
        srv_write(s);
}

/* Due callbacks first (they may queue more), then one write per server. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_mc_t *mc = arg;
    for (;;) {
        while (mc->due_head) {
            oc_mc_job_t *job = mc->due_head;
            mc->due_head = job->next;
            if (mc->due_head == NULL)
                mc->due_tail = NULL;
            job->next = NULL;
            job->done(job, job->arg);
        }
        if (mc->dirty == NULL)
            break;
        while (mc->dirty) {
            mc_server_t *s = mc->dirty;
            mc->dirty = s->dirty_next;
            s->dirty = 0;
            srv_flush(s);
        }
    }
}

/* ---- the server's own probe ------------------------------------------------------ *
 *
 * A server out of service is probed every retry_timeout on a new
 * connection: `version`, then, with failover on, `flush_all`, and it
 * serves again only when both answered. Why flush: while it was away its
 * keys were written to the failover (pushes, tombstones, loads of rows
 * that changed); what it holds may be older than those writes (a frozen
 * server thaws with everything it had; a partition leaves it the values of
 * before). Emptying it is the one step that needs no journal of what it
 * missed and no agreement between sidecars, each of which sees it come
 * back at its own time and flushes it then. A server that thaws still has
 * the commands sent before it froze in its sockets, and runs them on its
 * worker threads in no order with the probe's: a new connection's round
 * trip orders nothing (memcached serves a connection 20 commands at a time
 * and then the others; the probe's may be on another thread: a `flush_all`
 * run before an old tombstone or `ms ... ME` was seen with 1 thread and
 * with 4, found by a review). So this sidecar's old connections of s are
 * drained (srv_drain), and `flush_all` is sent only once memcached has
 * ended them all, io_timeout at most after `version` answered, else the
 * probe fails and a later one tries again (MC_DRAIN_PROBES of them at
 * most: then they are given up, probe_waited). Another sidecar's old commands
 * are its own probe's to wait for: they may land after this flush, and
 * are flushed by that sidecar's (if it ever marked s down). */

/* `version` answered while old connections of s drain: the flush waits
 * for them, io_timeout at most (on_probe_timer fails the probe then). */
static void probe_wait_drains(mc_server_t *s)
{
    oc_log_debug("event=memcached_probe_waits server=%s drains=%zu", s->name, s->ndrains);
    s->flush_waits = 1;
    struct timeval tv;
    tv_of(&tv, s->mc->io_s);
    evtimer_add(s->ev_probe, &tv);
}

/* The last drain of s ended: a probe waiting for it flushes now. */
static void probe_drained(mc_server_t *s)
{
    if (!s->flush_waits)
        return;
    s->flush_waits = 0;
    evtimer_del(s->ev_probe);
    queue_line(s, MC_WOP_FLUSH, (mc_ref_t){NULL, 0, 0});
}

/* The probe waited in vain once more: the server stays out until a later
 * probe, or, after MC_DRAIN_PROBES of them, its drains are given up and
 * this probe flushes. */
static void probe_waited(mc_server_t *s)
{
    if (++s->drain_waits < MC_DRAIN_PROBES) {
        srv_fail(s, "old connections still held by the server");
        return;
    }
    oc_log_warn("event=memcached_drain_dropped server=%s drains=%zu reason=\"not ended "
                "by the server in %d probes it answered\"",
                s->name, s->ndrains, MC_DRAIN_PROBES);
    drains_free(s);
    probe_drained(s);
}

static int on_probe_reply(mc_server_t *s, mc_wop_kind_t kind, const oc_mcp_line_t *l,
                          const char *line)
{
    if (s->tko.state != OC_TKO_PROBING)
        return 0; /* cannot happen: only a probe's connection has these */
    if (kind == MC_WOP_PROBE && l->type == OC_MCP_VERSION) {
        if (!s->mc->failover_on && !s->flush_owed)
            srv_passed(s, "probe answered");
        else if (s->ndrains == 0)
            queue_line(s, MC_WOP_FLUSH, (mc_ref_t){NULL, 0, 0});
        else
            probe_wait_drains(s);
        return 0;
    }
    if (kind == MC_WOP_FLUSH && l->type == OC_MCP_OK) {
        srv_passed(s, "probe answered; flushed");
        return 0;
    }
    snprintf(s->broken, sizeof(s->broken), "%s answered '%.*s'",
             kind == MC_WOP_FLUSH ? "flush_all" : "version",
             (int)(l->line_len >= 2 ? l->line_len - 2 : 0), line);
    text_clean(s->broken);
    return -1;
}

/* The probe's connection, to the address the name has now. */
static void probe_connect(mc_server_t *s)
{
    srv_close(s);
    if (s->addrlen == 0) { /* added by a reload, never resolved */
        srv_fail(s, "its name does not resolve");
        return;
    }
    srv_connect(s);
    if (s->conn != MC_CONN_CLOSED)
        queue_line(s, MC_WOP_PROBE, (mc_ref_t){NULL, 0, 0});
}

/* The address the name of s resolved to: 1 if it is another than the one
 * s had (said once, and counted). Placement is by the name, so nothing
 * else moves. */
static int srv_address(mc_server_t *s, const struct sockaddr *a, socklen_t len)
{
    char was[80], now[80];
    oc_resolve_addr_text(a, len, now, sizeof(now));
    if (s->addrlen > 0) {
        oc_resolve_addr_text((const struct sockaddr *)&s->addr, s->addrlen, was,
                             sizeof(was));
        if (strcmp(was, now) == 0)
            return 0;
        oc_log_info("event=memcached_address_changed server=%s old=%s new=%s", s->name,
                    was, now);
        if (s->mc->stats)
            s->mc->stats->mc_address_changes++;
    }
    memcpy(&s->addr, a, len);
    s->addrlen = len;
    return 1;
}

/* The name of s resolved again (by its probe, or a reload). A probe
 * waiting for it connects now, to the old address if the name no longer
 * resolves (a DNS server down says nothing of memcached). A server in
 * service whose name moved leaves the old address at once, as a failure
 * (what was sent there fails, reads go to the failover): the operator's
 * pool is the names, and another process may answer at the old address. */
static void srv_resolved(int rc, const struct sockaddr *a, socklen_t len, void *arg)
{
    mc_server_t *s = arg;
    s->resolving = NULL;
    int moved = 0;
    if (rc != 0) {
        uint64_t n = ratelog_due(&s->resolve_failed, mc_now(s->mc));
        if (n)
            oc_log_warn("event=memcached_resolve_failed server=%s count=%llu "
                        "reason=\"%s\"",
                        s->name, (unsigned long long)n, gai_strerror(rc));
    } else {
        moved = srv_address(s, a, len);
    }
    if (s->tko.state == OC_TKO_PROBING && s->conn == MC_CONN_CLOSED)
        probe_connect(s);
    else if (moved && oc_tko_in_service(&s->tko) && s->conn != MC_CONN_CLOSED)
        srv_fail(s, "its name resolves to a new address");
}

/* Resolve the name of s again, off the loop (srv_resolved answers): 1 if
 * under way. */
static int probe_resolve(mc_server_t *s)
{
    if (s->resolving == NULL)
        s->resolving =
            oc_resolve_start(s->mc->resolver, s->host, s->port, srv_resolved, s);
    return s->resolving != NULL;
}

static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    mc_server_t *s = arg;
    oc_tko_state_t from = s->tko.state;
    if (s->flush_waits) {
        probe_waited(s);
        return;
    }
    if (!oc_tko_probe(&s->tko, mc_now(s->mc))) {
        probe_arm(s);
        return;
    }
    srv_changed(s, from, "probe");
    if (!s->literal && probe_resolve(s))
        return; /* probed once its name is resolved (srv_resolved) */
    probe_connect(s);
}

/* A server down: its probe timer for when the probe is due. */
static void probe_arm(mc_server_t *s)
{
    double wait = oc_tko_probe_wait(&s->tko, mc_now(s->mc));
    if (wait < 0 || s->ev_probe == NULL)
        return;
    struct timeval tv;
    tv_of(&tv, wait);
    evtimer_add(s->ev_probe, &tv);
}

/* ---- submit --------------------------------------------------------------------- */

uint64_t oc_mc_memo(uint32_t gen, size_t idx)
{
    return ((uint64_t)gen << 32) | (uint64_t)((uint32_t)idx + 1);
}

int oc_mc_memo_idx(uint64_t memo, uint32_t gen, size_t npool, size_t *idx)
{
    size_t m = (size_t)(memo & 0xffffffffu);
    if (memo == 0 || (uint32_t)(memo >> 32) != gen || m < 1 || m > npool)
        return 0;
    *idx = m - 1;
    return 1;
}

/* A key's own server (of the pool) and its index; `memo` (0 or a place
 * memo of this key) saves hashing it when the pool has not changed since. */
static mc_server_t *primary_of(oc_mc_t *mc, const char *key, size_t klen, uint64_t memo,
                               size_t *idx)
{
    if (mc->pool.n == 0)
        return NULL;
    if (!oc_mc_memo_idx(memo, mc->place_gen, mc->pool.n, idx))
        *idx = oc_place_server(mc->place, key, klen);
    return mc->pool.s[*idx];
}

static int srv_emptied(const oc_mc_t *mc, const mc_server_t *s)
{
    return !oc_tko_in_service(&s->tko) && (mc->failover_on || s->flush_owed);
}

/* A key's server of servers_previous, if it is another than its own (p):
 * NULL if none. */
static mc_server_t *prev_of(oc_mc_t *mc, const char *key, size_t klen,
                            const mc_server_t *p)
{
    if (mc->prev.n == 0)
        return NULL;
    mc_server_t *q = mc->prev.s[oc_place_server(mc->prev_place, key, klen)];
    return q == p ? NULL : q;
}

int oc_mc_emptied_before_read(oc_mc_t *mc, const oc_mc_item_t *it)
{
    size_t idx;
    const mc_server_t *p = mc != NULL ? primary_of(mc, it->key, it->klen, 0, &idx) : NULL;
    if (p == NULL)
        return 0;
    /* Only where the delete failed: a server that took it holds no old
     * value (asking it of both held the feed back for a whole outage of
     * either while servers_previous was set; found by a review). */
    if ((!it->prev_failed_ || it->own_failed_) && !srv_emptied(mc, p))
        return 0;
    if (!it->prev_failed_)
        return 1;
    const mc_server_t *q = prev_of(mc, it->key, it->klen, p);
    return q == NULL || srv_emptied(mc, q);
}

static mc_server_t *find_server(oc_mc_t *mc, const char *host, uint16_t port)
{
    for (int g = 0; g < 2; g++) {
        const mc_list_t *l = g ? &mc->gutter : &mc->pool;
        for (size_t i = 0; i < l->n; i++)
            if (l->s[i]->port == port && strcmp(l->s[i]->host, host) == 0)
                return l->s[i];
    }
    return NULL;
}

static void fail_down(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const mc_server_t *p)
{
    char why[OC_ERRLEN];
    if (p && oc_tko_in_service(&p->tko) && mc_now(mc) < p->refused_until)
        snprintf(why, sizeof(why), "memcached %.128s: over its connection limit (-c)",
                 p->name);
    else if (p && oc_tko_in_service(&p->tko))
        snprintf(why, sizeof(why), "memcached %.128s: cannot connect", p->name);
    else
        snprintf(why, sizeof(why), "memcached %.128s: down%s", p ? p->name : "?",
                 p && mc->failover_on ? ", no failover server" : "");
    part_fail(mc, job, i, why);
}

int oc_mc_may_fail_over(oc_mc_op_t op, int primary_in_service)
{
    return !primary_in_service || op == OC_MC_GET;
}

/* The server part i goes to, and how (*ref); NULL after failing the part
 * (a key memcached cannot take, a server down with nowhere else to go). A
 * server out of service sends its keys to their failover; a GET also goes
 * there when the connection to its server failed just now. */
static mc_server_t *route_part(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const char *key,
                               size_t klen, uint64_t memo, mc_ref_t *ref)
{
    *ref = (mc_ref_t){job, i, MC_VIA_PRIMARY};
    if (!oc_mcp_key_ok(key, klen)) {
        part_fail(mc, job, i, "key memcached cannot store");
        return NULL;
    }
    size_t pi = 0;
    mc_server_t *p = primary_of(mc, key, klen, memo, &pi);
    if (p && job->op == OC_MC_GET)
        job->hits[i].place = oc_mc_memo(mc->place_gen, pi);
    if (p && srv_ready(p))
        return p;
    if (p && oc_mc_may_fail_over(job->op, oc_tko_in_service(&p->tko))) {
        mc_server_t *f = failover_of(mc, key, klen, pi);
        if (f && srv_ready(f)) {
            ref->via = MC_VIA_FAILOVER;
            return f;
        }
    }
    fail_down(mc, job, i, p);
    return NULL;
}

int oc_mc_wants_shadow(oc_mc_op_t op, int failover_on, int via_primary, int gutter,
                       const oc_tko_t *tko, double now, uint32_t failover_ttl_s)
{
    if (!failover_on || !via_primary || gutter)
        return 0;
    return op == OC_MC_DELETE || oc_tko_recent(tko, now, (double)failover_ttl_s + 1);
}

/* How long the failover may hold copies of the keys of s written while s
 * was away: the longest failover_ttl in force then (a reload may have
 * shortened it since). */
static uint32_t copies_ttl(const oc_mc_t *mc, const mc_server_t *s)
{
    return s->copies_ttl_s > mc->failover_ttl_s ? s->copies_ttl_s : mc->failover_ttl_s;
}

/* Servers of a chain one write clears copies on (OC_FAILOVER_PLACES: the
 * subsets oc_failover keeps placed). */
#define MC_SHADOW_CHAIN OC_FAILOVER_PLACES

/* Deletes of item i's copies on its key's failover chain after s, the
 * server it is written to (see oc_mc.h): on its key's failover always for
 * a DELETE, and for other writes while the key's server is not long back;
 * then on the server after each one of the chain that is not long back
 * itself, where the key went while that one was away (a failover that
 * flaps: found by a review). Their answers change nothing of the item's
 * result. */
static void queue_shadow(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const mc_server_t *s,
                         mc_ref_t ref)
{
    const oc_mc_item_t *it = &job->items[i];
    if (s == NULL || !mc->failover_on)
        return;
    double now = mc_now(mc);
    size_t pi = s->idx;
    int want;
    if (ref.via == MC_VIA_PRIMARY)
        want = oc_mc_wants_shadow(job->op, mc->failover_on, 1, s->gutter, &s->tko, now,
                                  copies_ttl(mc, s));
    else
        want = oc_tko_recent(&s->tko, now, (double)copies_ttl(mc, s) + 1) &&
               primary_of(mc, it->key, it->klen, it->place, &pi) != NULL;
    const mc_server_t *skip[MC_SHADOW_CHAIN];
    size_t n = 0;
    if (ref.via != MC_VIA_PRIMARY)
        skip[n++] = s; /* the chain after it */
    while (want && n < MC_SHADOW_CHAIN) {
        mc_server_t *f = failover_but(mc, it->key, it->klen, pi, skip, n);
        if (f == NULL || f == s || !srv_ready(f))
            return;
        job->parts_left++;
        queue_line(f, MC_WOP_DELETE, (mc_ref_t){job, i, MC_VIA_SHADOW});
        skip[n++] = f;
        want = oc_tko_recent(&f->tko, now, (double)copies_ttl(mc, f) + 1);
    }
}

/* Item i replaces or removes its key (`p`: the key's own server, NULL if
 * none): with servers_previous set, it is also deleted on the key's server
 * there, if another, so that a host on either list of a rollout cannot
 * keep serving what it filled there (docs/operations.md). A server down
 * there fails the item (the caller requeues an invalidation). */
static void queue_previous(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const mc_server_t *p)
{
    const oc_mc_item_t *it = &job->items[i];
    mc_server_t *q = prev_of(mc, it->key, it->klen, p);
    if (q == NULL)
        return;
    if (!srv_ready(q)) {
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "memcached %.128s (servers_previous): down", q->name);
        prev_fail(job, i, why, strlen(why));
        return;
    }
    job->parts_left++;
    if (mc->stats)
        mc->stats->mc_previous_deletes++;
    queue_line(q, MC_WOP_DELETE, (mc_ref_t){job, i, MC_VIA_PREVIOUS});
}

/* A DELETE: on the key's server only (a server down fails it, and the
 * caller requeues it), on its failover, and on servers_previous. */
static void submit_delete(oc_mc_t *mc, oc_mc_job_t *job, size_t i)
{
    const oc_mc_item_t *it = &job->items[i];
    if (!oc_mcp_key_ok(it->key, it->klen)) {
        part_fail(mc, job, i, "key memcached cannot store");
        return;
    }
    size_t pi = 0;
    mc_server_t *p = primary_of(mc, it->key, it->klen, it->place, &pi);
    mc_ref_t ref = {job, i, MC_VIA_PRIMARY};
    if (p && srv_ready(p)) {
        queue_line(p, MC_WOP_DELETE, ref);
    } else {
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "memcached %.128s: down", p ? p->name : "?");
        part_fail(mc, job, i, why);
    }
    queue_shadow(mc, job, i, p, ref);
    queue_previous(mc, job, i, p);
}

static void submit_probe(oc_mc_t *mc, oc_mc_job_t *job, size_t i)
{
    const oc_mc_item_t *it = &job->items[i];
    mc_server_t *s = find_server(mc, it->key, (uint16_t)it->flags);
    if (s == NULL || !srv_ready(s))
        part_fail(mc, job, i, "server down");
    else
        queue_line(s, MC_WOP_VERSION, (mc_ref_t){job, i, MC_VIA_PRIMARY});
}

/* A CAS or CAS_DELETE item for s, or a SWAP with a cas. A cas is one
 * process's own count: on another server, or in another epoch of this one
 * (a reload or a failover moved the key, the server was out of service or
 * restarted meanwhile), it could name an unrelated item (found by
 * reviews): a CAS is answered NOT_FOUND unsent, a SWAP reads the key and
 * compares bytes instead. While s's process is not known yet, it waits
 * (srv_learned): a SWAP that read at once would lose its cas even when the
 * process is the same, and the read can land on an equal later push
 * (found by a review). */
static void queue_by_cas(mc_server_t *s, mc_ref_t ref)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    if (s->ident_pending) {
        if (s->nheld == s->held_cap) {
            size_t c = s->held_cap ? s->held_cap * 2 : 16;
            mc_ref_t *h = realloc(s->held, c * sizeof(*h));
            if (h == NULL) {
                ref_fail(s->mc, ref, "out of memory");
                return;
            }
            s->held = h;
            s->held_cap = c;
        }
        s->held[s->nheld++] = ref;
    } else if (ref.job->op == OC_MC_SWAP) {
        if (it->cas_epoch == s->cas_epoch) /* its item known: no read */
            queue_store(s, ref, "cas", it->val, it->vlen, it->flags, it->cas);
        else
            queue_get(s, ref);
    } else if (it->cas_epoch != s->cas_epoch) {
        item_result(s->mc, ref, OC_MC_R_NOT_FOUND);
    } else if (ref.job->op == OC_MC_CAS) {
        queue_store(s, ref, "cas", it->val, it->vlen, it->flags, it->cas);
    } else {
        queue_line(s, MC_WOP_DELETE, ref);
    }
}

/* A write by cas for the key of server s whose cas was read on the key's
 * failover, in the epoch it is in now: a read its server's failure cut
 * short went there (ref_reroute) and won its lease there while s stayed
 * in service. It is not written on s (another server's cas: answered
 * NOT_FOUND by queue_by_cas), nor on the failover: a push or tombstone to
 * s does not reach the failover while s is in service, so the older row
 * would be served from there if s failed within failover_ttl (found by a
 * review of 1b048c0, which wrote it there). The lease is deleted there
 * instead, so that no reader of the failover waits on it until its TTL
 * (found 2026-12-05), and on s (below). A delete is always safe (at worst
 * another sidecar's entry or lease there is loaded again); its answer
 * changes nothing of the item's result. */
static void drop_failover_lease(oc_mc_t *mc, mc_server_t *s, mc_ref_t ref)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    if (ref.via != MC_VIA_PRIMARY || it->cas_epoch == s->cas_epoch)
        return;
    mc_server_t *f = failover_of(mc, it->key, it->klen, s->idx);
    if (f == NULL || f == s || f->cas_epoch != it->cas_epoch || !srv_ready(f))
        return;
    ref.job->parts_left += 2;
    queue_line(f, MC_WOP_DELETE, (mc_ref_t){ref.job, ref.idx, MC_VIA_SHADOW});
    /* And on s: the read it cut short (an `mg ... N` left in a frozen
     * server's socket) may have made a lease there when the server thawed,
     * whose cas nobody knows; readers of s would wait on it until its TTL
     * (found by a review). Best effort: a thaw after this delete is not
     * covered (the old connection's commands and this one's are not
     * ordered). */
    queue_line(s, MC_WOP_DELETE, (mc_ref_t){ref.job, ref.idx, MC_VIA_SHADOW});
}

/* s's `stats` answered (answered = 0: an error, a server without it):
 * settle the connection's cas epoch and let the held writes go. */
static void srv_learned(mc_server_t *s, int answered)
{
    oc_mc_t *mc = s->mc;
    oc_mcp_proc_t now = s->learning;
    int known = answered && oc_mcp_proc_known(&now);
    s->ident_pending = 0;
    if (known && s->proc_known && !oc_mcp_proc_same(&s->proc, &now)) {
        s->cas_epoch = ++mc->epoch_seq;
        oc_log_warn("event=memcached_restarted server=%s pid=%llu->%llu "
                    "started=%llu->%llu",
                    s->name, (unsigned long long)s->proc.pid, (unsigned long long)now.pid,
                    (unsigned long long)(s->proc.time - s->proc.uptime),
                    (unsigned long long)(now.time - now.uptime));
        if (mc->stats)
            mc->stats->mc_restarts++;
    } else if (!known || !s->proc_known) {
        /* Cannot tell a restart from a reconnect (this process or the last
         * one unknown): take it for one (found by a review). The first
         * connection ever comes here too: nothing was read in the old
         * epoch, so nothing is lost. */
        s->cas_epoch = ++mc->epoch_seq;
        if (!known && !s->proc_warned)
            oc_log_warn("event=memcached_unidentified server=%s reason=\"`stats` gave "
                        "no pid, time and uptime: each new connection starts a new cas "
                        "epoch\"",
                        s->name);
        s->proc_warned |= !known;
    }
    drains_learned(s, &now, known);
    s->proc = now;
    s->proc_known = known;
    mc_ref_t *held = s->held;
    size_t n = s->nheld;
    s->held = NULL;
    s->nheld = s->held_cap = 0;
    for (size_t i = 0; i < n; i++)
        queue_by_cas(s, held[i]);
    free(held);
}

static void submit_item(oc_mc_t *mc, oc_mc_job_t *job, size_t i)
{
    const oc_mc_item_t *it = &job->items[i];
    if (job->op == OC_MC_PROBE) {
        submit_probe(mc, job, i);
        return;
    }
    if (job->op == OC_MC_DELETE) {
        submit_delete(mc, job, i);
        return;
    }
    mc_ref_t ref;
    mc_server_t *s = route_part(mc, job, i, it->key, it->klen, it->place, &ref);
    if (s == NULL)
        return;
    switch (job->op) {
    case OC_MC_SWAP:
        if (it->cas)
            queue_by_cas(s, ref);
        else
            queue_get(s, ref);
        break;
    case OC_MC_PUSH:
        queue_get(s, ref);
        break;
    case OC_MC_SET:
        queue_store(s, ref, "set", it->val, it->vlen, it->flags, it->cas);
        break;
    case OC_MC_CAS:
    case OC_MC_CAS_DELETE:
        drop_failover_lease(mc, s, ref);
        queue_by_cas(s, ref);
        break;
    default:
        part_fail(mc, job, i, "unknown operation");
        return;
    }
    if (job->op != OC_MC_CAS && job->op != OC_MC_CAS_DELETE) {
        queue_shadow(mc, job, i, s, ref);
        size_t pi = 0;
        if (mc->prev.n > 0) /* not hashed again without it */
            queue_previous(mc, job, i, primary_of(mc, it->key, it->klen, it->place, &pi));
    }
}

void oc_mc_submit(oc_mc_t *mc, oc_mc_job_t *job)
{
    job->errors = 0;
    job->err[0] = '\0';
    job->next = NULL;
    /* One extra part, released below, so no part answered at once can make
     * the job due before every part is queued. */
    job->parts_left = job->n + 1;
    job->prev_failed_ = 0;
    for (size_t i = 0; i < job->n; i++) {
        if (job->op != OC_MC_GET) {
            job->items[i].refused = 0; /* a job submitted again starts clean */
            job->items[i].prev_failed_ = job->items[i].own_failed_ = 0;
            submit_item(mc, job, i);
            continue;
        }
        mc_ref_t ref;
        mc_server_t *s = route_part(mc, job, i, job->keys[i], job->key_lens[i], 0, &ref);
        if (s && ref_wants_mg(ref))
            queue_mg(s, ref);
        else if (s)
            queue_get(s, ref);
    }
    part_done(mc, job);
}

/* ---- health, for oc_health -------------------------------------------------------- */

size_t oc_mc_count(const oc_mc_t *mc, int gutter)
{
    return gutter ? mc->gutter.n : mc->pool.n;
}

static const mc_server_t *server_at(const oc_mc_t *mc, int gutter, size_t i)
{
    const mc_list_t *l = gutter ? &mc->gutter : &mc->pool;
    return i < l->n ? l->s[i] : NULL;
}

const char *oc_mc_name(const oc_mc_t *mc, int gutter, size_t i)
{
    const mc_server_t *s = server_at(mc, gutter, i);
    return s ? s->name : "?";
}

int oc_mc_state(const oc_mc_t *mc, int gutter, size_t i)
{
    const mc_server_t *s = server_at(mc, gutter, i);
    return s ? (int)s->tko.state : (int)OC_TKO_DOWN;
}

void oc_mc_watch(oc_mc_t *mc, struct oc_stats *stats, void (*changed)(void *arg),
                 void *arg)
{
    mc->stats = stats;
    mc->changed = changed;
    mc->changed_arg = arg;
    stats->mc_place_native = (uint64_t)oc_place_own(mc->place);
}

/* ---- the pool --------------------------------------------------------------------- */

static void srv_free(mc_server_t *s)
{
    if (s == NULL)
        return;
    srv_abort(s, "shutting down", MC_ABORT_QUIET);
    drains_free(s);
    if (s->resolving)
        oc_resolve_cancel(s->mc->resolver, s->resolving);
    if (s->dirty) { /* a reload removes it with work queued: on_flush must not see it */
        mc_server_t **pp = &s->mc->dirty;
        while (*pp && *pp != s)
            pp = &(*pp)->dirty_next;
        if (*pp)
            *pp = s->dirty_next;
        s->dirty = 0;
    }
    if (s->ev_timer)
        event_free(s->ev_timer);
    if (s->ev_probe)
        event_free(s->ev_probe);
    free(s->out);
    free(s->in);
    free(s->host);
    free(s);
}

static int srv_resolve(mc_server_t *s, char *err)
{
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)s->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(s->host, port, &hints, &ai);
    if (rc != 0 || ai == NULL || ai->ai_addrlen > sizeof(s->addr)) {
        oc_fail(err, OC_ECACHE, "memcached server %s: %s", s->name,
                rc ? gai_strerror(rc) : "no address");
        if (ai)
            freeaddrinfo(ai);
        return -1;
    }
    memcpy(&s->addr, ai->ai_addr, ai->ai_addrlen);
    s->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* A name a reload added (resolved off the loop: a DNS server that does
 * not answer would stall every request), or one that did not resolve at
 * start: it starts out of service with its probe due now, which resolves
 * it (and flushes it, failover on: its keys went to the failover
 * meanwhile). */
static void srv_unresolved(mc_server_t *s)
{
    double now = mc_now(s->mc);
    oc_tko_rules_t once = s->mc->rules;
    once.failure_limit = 1;
    (void)oc_tko_failure(&s->tko, &once, now);
    s->tko.probe_at = now;
    probe_arm(s);
}

static mc_server_t *srv_new(oc_mc_t *mc, const oc_mc_server_conf_t *c, char *err)
{
    mc_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->host = strdup(c->host)) == NULL) {
        free(s);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    s->mc = mc;
    s->fd = -1;
    s->cas_epoch = ++mc->epoch_seq;
    s->port = c->port;
    s->weight = c->weight;
    s->conn = MC_CONN_CLOSED;
    oc_tko_init(&s->tko, mc_now(mc));
    snprintf(s->name, sizeof(s->name), strchr(c->host, ':') ? "[%.100s]:%u" : "%.100s:%u",
             c->host, (unsigned)c->port);
    s->literal = oc_resolve_is_literal(s->host);
    if (s->literal && srv_resolve(s, err) != 0) {
        free(s->host);
        free(s);
        return NULL;
    }
    /* At start a name is resolved here, blocking (the loop serves nothing
     * yet). One that does not resolve is a server that is down, not a
     * reason to refuse to start: a pod being replaced has no DNS record for
     * a moment, and a sidecar that does not start serves no key at all. */
    char why[OC_ERRLEN];
    if (!s->literal && !mc->running && srv_resolve(s, why) != 0)
        oc_log_warn("event=memcached_resolve_failed server=%s count=%llu reason=\"%s\"",
                    s->name,
                    (unsigned long long)ratelog_due(&s->resolve_failed, mc_now(mc)), why);
    s->ev_timer = evtimer_new(mc->base, on_srv_timer, s);
    s->ev_probe = evtimer_new(mc->base, on_probe_timer, s);
    if (s->ev_timer == NULL || s->ev_probe == NULL) {
        srv_free(s);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    if (s->addrlen == 0)
        srv_unresolved(s);
    return s;
}

static void set_rules(oc_mc_t *mc, const oc_conf_t *conf)
{
    mc->connect_s = conf->mc_connect_timeout_ms / 1000.0;
    mc->io_s = conf->mc_io_timeout_ms / 1000.0;
    mc->rules.retry_s = conf->mc_retry_timeout_ms / 1000.0;
    mc->rules.failure_limit = conf->mc_failure_limit;
    mc->failover_on = conf->mc_failover;
    mc->failover_ttl_s = conf->mc_failover_ttl_s ? conf->mc_failover_ttl_s : 1;
}

/* Lists whose servers a list_free keeps, or list_make reuses. */
#define MC_LISTS_MAX 3
typedef struct mc_lists {
    const mc_list_t *l[MC_LISTS_MAX]; /* NULL: none */
} mc_lists_t;

static int lists_have(const mc_lists_t *ls, const mc_server_t *s)
{
    for (int k = 0; ls && k < MC_LISTS_MAX; k++)
        for (size_t j = 0; ls->l[k] && j < ls->l[k]->n; j++)
            if (ls->l[k]->s[j] == s)
                return 1;
    return 0;
}

/* Free the servers of `l` that are in no list of `keep` (lists made from
 * it, or sharing servers with it), and the list. */
static void list_free(mc_list_t *l, const mc_lists_t *keep)
{
    for (size_t i = 0; l->s && i < l->n; i++)
        if (!lists_have(keep, l->s[i]))
            srv_free(l->s[i]); /* removed: what was sent to it fails */
    free(l->s);
    free(l->conf);
    *l = (mc_list_t){0};
}

/* A server of the lists `old` named host:port, not yet in out->s[0..i). */
static mc_server_t *list_reuse(const mc_lists_t *old, const mc_list_t *out, size_t i,
                               const oc_mc_server_conf_t *c)
{
    for (int k = 0; k < MC_LISTS_MAX; k++)
        for (size_t j = 0; old->l[k] && j < old->l[k]->n; j++) {
            mc_server_t *s = old->l[k]->s[j];
            int taken = 0;
            for (size_t t = 0; t < i; t++)
                taken |= out->s[t] == s;
            if (!taken && s->port == c->port && strcmp(s->host, c->host) == 0)
                return s;
        }
    return NULL;
}

/* The list of n servers of conf: a server of the lists `old` with the same
 * host and port is reused (its connection, its health, what is under way
 * on it), the others are made. On failure nothing of `old` is touched. */
static int list_make(oc_mc_t *mc, const oc_mc_server_conf_t *conf, size_t n,
                     const mc_lists_t *old, mc_list_t *out, char *err)
{
    *out = (mc_list_t){0};
    out->s = calloc(n ? n : 1, sizeof(*out->s));
    out->conf = calloc(n ? n : 1, sizeof(*out->conf));
    if (out->s == NULL || out->conf == NULL) {
        list_free(out, NULL); /* n is 0: frees the arrays only */
        return oc_fail(err, OC_ENOMEM, "out of memory"), -1;
    }
    for (size_t i = 0; i < n; i++) {
        const oc_mc_server_conf_t *c = &conf[i];
        out->s[i] = list_reuse(old, out, i, c);
        if (out->s[i] == NULL && (out->s[i] = srv_new(mc, c, err)) == NULL) {
            out->n = i;
            list_free(out, old); /* only the ones made here */
            return -1;
        }
        out->conf[i] = (oc_mc_server_conf_t){out->s[i]->host, c->port, c->weight};
        out->n = i + 1;
    }
    return 0;
}

/* The lists, placement and failover of conf, in `next` (nothing of mc's
 * own is touched). */
typedef struct mc_shape {
    mc_list_t pool, gutter, prev;
    oc_place_t *place, *prev_place;
    oc_failover_t *failover;
} mc_shape_t;

static void shape_drop(mc_shape_t *sh, oc_mc_t *mc)
{
    oc_failover_free(sh->failover);
    oc_place_free(sh->place);
    oc_place_free(sh->prev_place);
    /* prev first: it may share servers made for the new pool */
    list_free(&sh->prev, &(mc_lists_t){{&mc->pool, &mc->prev, &sh->pool}});
    list_free(&sh->pool, &(mc_lists_t){{&mc->pool, &mc->prev, NULL}});
    list_free(&sh->gutter, &(mc_lists_t){{&mc->gutter, NULL, NULL}});
}

/* A server moving between the pool and servers_previous keeps its
 * connection and health; one in both is one server. */
static int shape_make(oc_mc_t *mc, const oc_conf_t *conf, mc_shape_t *sh, char *err)
{
    *sh = (mc_shape_t){0};
    if (list_make(mc, conf->servers, conf->nservers,
                  &(mc_lists_t){{&mc->pool, &mc->prev, NULL}}, &sh->pool, err) != 0 ||
        list_make(mc, conf->gutter, conf->ngutter,
                  &(mc_lists_t){{&mc->gutter, NULL, NULL}}, &sh->gutter, err) != 0 ||
        list_make(mc, conf->servers_previous, conf->nservers_previous,
                  &(mc_lists_t){{&sh->pool, &mc->prev, &mc->pool}}, &sh->prev,
                  err) != 0 ||
        (sh->place = oc_place_new(sh->pool.conf, sh->pool.n, err)) == NULL ||
        (sh->prev_place = oc_place_new(sh->prev.conf, sh->prev.n, err)) == NULL ||
        (sh->failover = oc_failover_new(sh->pool.conf, sh->pool.n, sh->gutter.conf,
                                        sh->gutter.n, err)) == NULL) {
        shape_drop(sh, mc);
        return -1;
    }
    return 0;
}

/* Switch to `sh`: servers not kept are freed (their work fails). */
static void shape_apply(oc_mc_t *mc, mc_shape_t *sh)
{
    list_free(&mc->prev, &(mc_lists_t){{&sh->pool, &sh->prev, &mc->pool}});
    list_free(&mc->pool, &(mc_lists_t){{&sh->pool, &sh->prev, NULL}});
    list_free(&mc->gutter, &(mc_lists_t){{&sh->gutter, NULL, NULL}});
    oc_place_free(mc->place);
    oc_place_free(mc->prev_place);
    oc_failover_free(mc->failover);
    mc->pool = sh->pool;
    mc->gutter = sh->gutter;
    mc->prev = sh->prev;
    mc->prev_place = sh->prev_place;
    mc->place = sh->place;
    mc->place_gen++;
    mc->failover = sh->failover;
    if (mc->stats)
        mc->stats->mc_place_native = (uint64_t)oc_place_own(mc->place);
    /* servers_previous last: a server also in the pool keeps the pool's
     * index (its failover chain is placed by it) */
    for (size_t i = 0; i < mc->prev.n; i++) {
        mc->prev.s[i]->prev_only = 1;
        mc->prev.s[i]->gutter = 0;
        mc->prev.s[i]->idx = i;
        mc->prev.s[i]->weight = mc->prev.conf[i].weight;
    }
    for (int g = 0; g < 2; g++) {
        mc_list_t *l = g ? &mc->gutter : &mc->pool;
        for (size_t i = 0; i < l->n; i++) {
            l->s[i]->gutter = g;
            l->s[i]->prev_only = 0;
            l->s[i]->idx = i;
            l->s[i]->weight = l->conf[i].weight;
        }
    }
}

/* Does servers_previous change from what mc has to conf's? */
static int prev_changes(const oc_mc_t *mc, const oc_conf_t *conf)
{
    if (mc->prev.n != conf->nservers_previous)
        return 1;
    for (size_t i = 0; i < mc->prev.n; i++) {
        const oc_mc_server_conf_t *a = &mc->prev.conf[i], *b = &conf->servers_previous[i];
        if (a->port != b->port || a->weight != b->weight || strcmp(a->host, b->host) != 0)
            return 1;
    }
    return 0;
}

/* Said whenever servers_previous changes (and at start if set): the
 * operator follows a rollout of servers by it (docs/operations.md). */
static void prev_log(const oc_mc_t *mc)
{
    char list[1024];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < mc->prev.n; i++) {
        const char *name = mc->prev.s[i]->name;
        if (off + strlen(name) + 5 >= sizeof(list)) {
            snprintf(list + off, sizeof(list) - off, "%s...", off ? " " : "");
            break;
        }
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", off ? " " : "",
                                name);
    }
    oc_log_info("event=memcached_previous count=%zu servers_previous=\"%s\" "
                "extra_deletes=%s",
                mc->prev.n, list, mc->prev.n ? "on" : "off");
}

static size_t check_names(const oc_mc_server_conf_t *list, size_t n, const char *key,
                          FILE *out)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (oc_resolve_is_literal(list[i].host))
            continue;
        char port[8];
        snprintf(port, sizeof(port), "%u", (unsigned)list[i].port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        int rc = getaddrinfo(list[i].host, port, &hints, &ai);
        if (ai)
            freeaddrinfo(ai);
        if (rc == 0)
            continue;
        fprintf(out,
                "warning: %s: memcached server %.100s:%u does not resolve here (%s): "
                "objcached would start with it out of service, resolving it again "
                "before each probe\n",
                key, list[i].host, (unsigned)list[i].port, gai_strerror(rc));
        bad++;
    }
    return bad;
}

size_t oc_mc_check_names(const oc_conf_t *conf, FILE *out)
{
    return check_names(conf->servers, conf->nservers, "servers", out) +
           check_names(conf->gutter, conf->ngutter, "gutter", out) +
           check_names(conf->servers_previous, conf->nservers_previous,
                       "servers_previous", out);
}

oc_mc_t *oc_mc_new(struct event_base *base, const oc_conf_t *conf, char *err)
{
    oc_mc_t *mc = calloc(1, sizeof(*mc));
    if (mc == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    mc->base = base;
    set_rules(mc, conf);
    mc->ev_flush = event_new(base, -1, 0, on_flush, mc);
    mc->resolver = oc_resolver_new(base);
    mc_shape_t sh;
    if (mc->ev_flush == NULL || mc->resolver == NULL) {
        oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    if (shape_make(mc, conf, &sh, err) != 0)
        goto fail;
    shape_apply(mc, &sh);
    if (mc->prev.n > 0)
        prev_log(mc);
    mc->running = 1;
    return mc;
fail:
    oc_mc_free(mc);
    return NULL;
}

/* A reload resolves every name again, as a probe does: a server out of
 * service is probed now (its probe resolves it), one in service is
 * resolved off the loop (srv_resolved). */
static void srv_recheck(mc_server_t *s)
{
    if (s->literal || s->resolving)
        return;
    if (s->tko.state == OC_TKO_DOWN) {
        s->tko.probe_at = mc_now(s->mc);
        evtimer_del(s->ev_probe);
        probe_arm(s);
    } else if (oc_tko_in_service(&s->tko)) {
        (void)probe_resolve(s);
    }
}

oc_status_t oc_mc_reconfigure(oc_mc_t *mc, const oc_conf_t *conf, char *err)
{
    err[0] = '\0';
    mc_shape_t sh;
    if (shape_make(mc, conf, &sh, err) != 0)
        return err[0] ? OC_ECACHE : oc_fail(err, OC_ENOMEM, "out of memory");
    int prev_changed = prev_changes(mc, conf);
    shape_apply(mc, &sh);
    if (prev_changed)
        prev_log(mc);
    /* Servers kept stay as they are: one that is down is probed on, and
     * flushed before it serves again if failover is on by then or was on
     * while it was out of service (flush_owed: turning failover off does
     * not bring back the pushes its failover took). */
    set_rules(mc, conf);
    /* And what the failover takes from now on lives the new failover_ttl:
     * the copies of a server out of service live the longest of both. */
    mc_list_t *lists[] = {&mc->pool, &mc->gutter, &mc->prev};
    for (int g = 0; g < 3; g++) {
        mc_list_t *l = lists[g];
        for (size_t i = 0; i < l->n; i++) {
            mc_server_t *s = l->s[i];
            if (g == 2 && !s->prev_only)
                continue; /* the pool's own, done above */
            srv_recheck(s);
            if (oc_tko_in_service(&s->tko))
                continue;
            s->flush_owed |= mc->failover_on;
            s->copies_ttl_s = copies_ttl(mc, s);
        }
    }
    if (mc->changed)
        mc->changed(mc->changed_arg);
    return OC_OK;
}

void oc_mc_free(oc_mc_t *mc)
{
    if (mc == NULL)
        return;
    mc->changed = NULL;
    list_free(&mc->prev, &(mc_lists_t){{&mc->pool, NULL, NULL}});
    list_free(&mc->pool, NULL);
    list_free(&mc->gutter, NULL);
    mc->dirty = NULL;
    /* Answer what is due, failures included; callbacks may submit more,
     * which fails at once (no servers) and is answered in the same loop. */
    if (mc->ev_flush)
        on_flush(-1, 0, mc);
    if (mc->ev_flush)
        event_free(mc->ev_flush);
    oc_place_free(mc->place);
    oc_place_free(mc->prev_place);
    oc_failover_free(mc->failover);
    oc_resolver_free(mc->resolver);
    while (mc->spare) {
        mc_wop_t *w = mc->spare;
        mc->spare = w->next;
        free(w);
    }
    free(mc);
}

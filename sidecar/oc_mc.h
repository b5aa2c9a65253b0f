/*
 * oc_mc: the memcached pool, driven on the event loop.
 *
 * One non-blocking connection per server, written and read by the loop
 * (the loop never waits on the network). Keys are placed on servers by
 * libmemcached's ketama, weighted (memcached_generate_hash over the same
 * server list and behaviors any libmemcached client of the pool uses), so
 * adding a server moves few keys; libmemcached does no I/O here.
 *
 * What one loop turn submits is sent together: the keys that every job of
 * the turn reads from one server (GET, the reads of PUSH and of a SWAP whose
 * item is not known) go
 * out as one `gets k1 k2 ...`, and each server gets one write. Replies come
 * back in order on each connection; a job's `done` runs once all its keys
 * and items are answered, always from the loop, never inside oc_mc_submit.
 *
 * Failures and failover. Each server's health is an oc_tko state machine:
 * a server that refuses, drops the connection, or does not answer within
 * io_timeout (connect_timeout to connect) fails what was sent to it, and
 * after failure_limit such failures in a row it is marked down (a
 * connection memcached refuses over its -c is no failure: the server stays
 * in service, unreached for retry_timeout, its reads failing over and its
 * writes failing meanwhile; it is never flushed for it). A server
 * marked down gets no requests: only a probe every retry_timeout (connect,
 * `version`, and with failover on `flush_all`), and it serves again once
 * the probe passed. With failover on, the keys of a server out of service
 * go where every sidecar sends them (oc_failover: the gutter, or ketama
 * over the rest of the pool), the same operations as on the server itself
 * (so leases and cas write-backs protect PostgreSQL there too), with every
 * exptime written there capped at failover_ttl. A read that a failure cut
 * short is sent there at once, even before the server is marked down; a
 * write is not (it fails: the server may have applied it). A DELETE is
 * also applied to the failover of its key (while the server is down, the
 * server's own delete still fails, so the caller requeues it); a SET, PUSH
 * or SWAP written to a server that came back less than failover_ttl ago
 * (or is failing) also deletes the key's failover copy, and each such
 * delete goes on along the key's failover chain past every server that is
 * not long back itself (where the key went while that one was away: a
 * failover that flaps). With failover off,
 * the parts of a server out of service fail at once (a GET key misses, the
 * caller loads it from PostgreSQL).
 *
 * servers_previous (a change of servers under way: docs/operations.md). A
 * second list, placed by ketama like the pool, that serves nothing: every
 * DELETE, SET, PUSH and SWAP is also sent as a `delete` of its key to the
 * key's server there, unless that is the key's own server (the same
 * host:port: a server in both lists is one server, one connection, one
 * health). Reads, leases, fills (CAS) and CAS_DELETE use the pool only.
 * Such a delete that fails (the server out of service, a timeout, an
 * error reply) makes its item an error whatever its own server answered,
 * so an invalidation is requeued as when its own server fails; a server
 * only in servers_previous has health like any other (marked down, probed)
 * but is never read.
 *
 * Ownership: the caller allocates a job with oc_mc_job_new_get/_items,
 * fills it, and hands it to oc_mc_submit; from then until `done` runs the
 * job belongs to oc_mc and the caller must not touch it, nor free the key
 * and value bytes it points to. In `done` the job is the caller's again,
 * who frees it with oc_mc_job_free.
 */
#ifndef OC_MC_H
#define OC_MC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "oc_conf.h"
#include "oc_mcproto.h"
#include "oc_status.h"
#include "oc_tko.h"

struct event_base;
typedef struct oc_mc oc_mc_t;
typedef struct oc_mc_job oc_mc_job_t;
typedef void (*oc_mc_done_fn)(oc_mc_job_t *job, void *arg);

typedef enum oc_mc_op {
    OC_MC_GET,        /* multi-get keys[] (with their cas); results in hits[] */
    OC_MC_SET,        /* set each item */
    OC_MC_DELETE,     /* delete each item's key: NOT_FOUND if it was not there */
    OC_MC_CAS,        /* cas each item against item.cas: EXISTS or NOT_FOUND if
                         the key changed or went since that cas was read (a fill
                         writes the row over its lease this way). NOT_FOUND,
                         without asking, if the key's server is not the one, in
                         the same epoch, that the cas was read from
                         (item.cas_epoch): a cas is one server's own count */
    OC_MC_CAS_DELETE, /* delete each item's key only if it still holds the
                         item of item.cas (`md key C<cas>`): EXISTS or
                         NOT_FOUND if not (or, as for CAS, in another
                         epoch). A fill that may not write back
                         takes its lease away this way, so readers need not wait
                         for it. Only on the key's server (or its failover
                         while the server is out of service) */
    OC_MC_SWAP,       /* for each item, replace the item of item.cas (a PUSH's
                         stored_cas) by cas, without a read, if the key's server
                         is in epoch item.cas_epoch; else read the key and replace it
                         by cas only if it still holds exactly item.expect
                         (flags item.expect_flags). Else NOT_STORED. Atomic
                         per key: a write that lands meanwhile wins. A push
                         check swaps the pushed object for PostgreSQL's row. */
    OC_MC_PROBE,      /* for each item, ask the server named by key (host) and flags
                         (port), of the pool or the gutter, for its version: OK if
                         it answers, ERROR if not (a server idle but frozen is
                         found this way). A server out of service is not asked:
                         ERROR at once (its own probe brings it back). */
    OC_MC_PUSH,       /* for each item, read the key and ask item.decide whether
                         to replace what is there; write by cas (or add if the
                         key is absent), retrying if it changed in between;
                         NOT_STORED if decide says no. item.unordered tells
                         whether the write replaced something it could not be
                         ordered against (see oc_mc_decision_t), item.stored_cas
                         the cas of the item it made (meta `ms ... c`). */
} oc_mc_op_t;

typedef enum oc_mc_result {
    OC_MC_R_OK = 0,
    OC_MC_R_NOT_STORED,
    OC_MC_R_NOT_FOUND,
    OC_MC_R_EXISTS,
    OC_MC_R_ERROR, /* server down, timeout, ...: see job->err */
} oc_mc_result_t;

/* A GET with lease_ttl_s: what a miss left in memcached. */
typedef enum oc_mc_lease {
    OC_MC_LEASE_NONE = 0,
    OC_MC_LEASE_WON,  /* the key was absent: memcached made an empty item
                         (its lease) for this read, whose cas is hit.cas */
    OC_MC_LEASE_HELD, /* an empty item another read made holds the key;
                         hit.cas is its cas */
} oc_mc_lease_t;

/* A GET key read with a refresh window (job->refresh_s) that found a value
 * about to expire. */
typedef enum oc_mc_refresh {
    OC_MC_REFRESH_NONE = 0,
    OC_MC_REFRESH_WON,  /* this reader is the one (of the whole fleet) to
                           reload it; hit.cas is the value's cas, to write the
                           reload over by cas */
    OC_MC_REFRESH_HELD, /* another reader is reloading it: a plain hit */
} oc_mc_refresh_t;

/* One result of a GET: the value's len bytes at data, in the job's arena
 * (they stay where they are until the job is freed).
 * found = 0 with a lease: the key holds no value, only a lease. A lease is
 * never a value: a value chosen to be refreshed is found = 1 with refresh. */
typedef struct oc_mc_hit {
    int found;
    int error;     /* memcached failed for this key (job->err says why) */
    int too_large; /* found, but its value would have taken the job's arena
                      past max_bytes: not kept */
    oc_mc_lease_t lease;
    oc_mc_refresh_t refresh;
    uint32_t flags;
    uint64_t cas;
    const char *data;
    size_t len;
    uint64_t place;     /* the key's server as placed for this read: hand it to a
                           write of the same key (item.place) so that write does
                           not hash the key again; 0 = none */
    uint64_t cas_epoch; /* the server's cas epoch at the read (a number given
                           to each server when it is made and whenever it
                           goes out of service or comes back): hand it with
                           cas to a write by that cas (item.cas_epoch) */
} oc_mc_hit_t;

struct oc_mc_item;
/* What a PUSH does with the entry it found. */
typedef enum oc_mc_decision {
    OC_MC_KEEP,            /* leave it: NOT_STORED */
    OC_MC_WRITE,           /* replace it: what is there is provably older */
    OC_MC_WRITE_UNORDERED, /* replace it, but nothing proves the write is
                              newer (an empty key, no version to compare):
                              the caller must check it (item.unordered) */
} oc_mc_decision_t;
/* PUSH: called with what the key holds now (found = 0: the key is absent;
 * val is valid only during the call). */
typedef oc_mc_decision_t (*oc_mc_decide_fn)(const struct oc_mc_item *it, int found,
                                            uint32_t flags, const char *val, size_t len);

/* One item of a SET/DELETE/CAS/SWAP/PUSH. */
typedef struct oc_mc_item {
    const char *key;
    size_t klen;
    const char *val;
    size_t vlen;
    uint32_t flags;
    uint32_t exptime_s;
    uint64_t cas;       /* CAS, CAS_DELETE, SWAP: the cas to check */
    const char *expect; /* SWAP: the value the key must still hold */
    size_t expect_len;
    uint32_t expect_flags;    /* SWAP: ... and its flags */
    oc_mc_decide_fn decide;   /* PUSH */
    void *decide_arg;         /* PUSH: the caller's, for decide */
    uint32_t unordered_flags; /* PUSH: the flags to write instead of `flags`
                                 when decide says OC_MC_WRITE_UNORDERED (0:
                                 `flags`) */
    uint32_t unordered_ttl_s; /* PUSH: the exptime written with them (0:
                                 `exptime_s`) */
    oc_mc_result_t result;    /* out */
    int unordered;            /* out, PUSH: written on OC_MC_WRITE_UNORDERED */
    uint64_t stored_cas;      /* out, PUSH: the cas of the item written (0: the
                                 server did not say) */
    uint64_t cas_epoch;       /* out, PUSH: the cas epoch of the server that
                                stored it (hit.cas_epoch); in, CAS, CAS_DELETE,
                                SWAP: the epoch item.cas was read or stored
                                in. Another server, or another epoch: CAS and
                                CAS_DELETE are NOT_FOUND, SWAP reads the key
                                and compares it with item.expect (as with
                                cas 0) */
    int refused;              /* out: OC_MC_R_ERROR the server answered itself
                                 (SERVER_ERROR, CLIENT_ERROR, ERROR) on a sound
                                 connection, not a timeout or a lost server */
    uint64_t place;           /* 0, or a GET hit's place for this key: its server
                                 without hashing the key again (ignored if the
                                 pool changed since: oc_mc places it anew) */
    int tries_;               /* oc_mc's own: PUSH rounds so far */
    int prev_failed_;         /* oc_mc's own: its delete on servers_previous
                                 failed (the item is an error) */
    int own_failed_;          /* oc_mc's own, with prev_failed_: its part on its
                                 own server failed too (which server an error
                                 left an old value on) */
} oc_mc_item_t;

struct oc_mc_chunk; /* oc_mc_job.c's */

struct oc_mc_job {
    oc_mc_op_t op;
    size_t n;
    /* GET: the caller fills keys/key_lens (unique keys); results in hits.
     * With lease_ttl_s > 0 each key is read with a meta get whose miss
     * takes a lease for that many seconds (`mg <key> v c f k N<ttl>`,
     * memcached >= 1.6): the read and the lease are one round trip. */
    uint32_t lease_ttl_s;
    const char **keys;
    size_t *key_lens;
    /* Per key, 0 or a refresh window in seconds: the key is read with a
     * meta get `... R<sec>`, and a value with less than that left before it
     * expires comes back with hit.refresh (zeroed by oc_mc_job_new_get; not
     * asked of a failover, whose entries are short-lived anyway). */
    uint32_t *refresh_s;
    oc_mc_hit_t *hits;
    /* The values read, in chunks that never move (a reply may send a value
     * from where it was read until the job is freed); owned by the job. */
    struct oc_mc_chunk *arena;
    size_t arena_len; /* value bytes kept, in every chunk */
    /* GET: 0, or the most value bytes the arena keeps: a value that would
     * take it past that is read and dropped (hit.too_large), so one get of
     * many large values cannot hold more than this in memory. */
    size_t max_bytes;
    /* The other ops: the caller fills items; results in items[i].result. */
    oc_mc_item_t *items;
    /* How many operations failed (OC_MC_R_ERROR, not NOT_STORED & co), and
     * the first failure's text. */
    size_t errors;
    char err[OC_ERRLEN];

    oc_mc_done_fn done;
    void *arg;
    /* oc_mc's own: */
    size_t parts_left;   /* keys and items not answered yet */
    size_t prev_failed_; /* items whose servers_previous delete failed */
    oc_mc_job_t *next;   /* in the list of jobs whose done is due */
};

/* Resolves the server names (the only blocking step: at start; a name that
 * does not resolve then is a server out of service, probed at once, not an
 * error); connects lazily. After start names are resolved off the loop (oc_resolve):
 * before each probe of a server out of service, and for every server at
 * oc_mc_reconfigure. A name found at another address is logged and counted
 * (mc_address_changes); a server in service leaves the old address as on a
 * failure, one being probed is probed at the new one. Placement is by the
 * name, so keys do not move. An IP address is never resolved again. */
oc_mc_t *oc_mc_new(struct event_base *base, const oc_conf_t *conf, char *err);
/* --check-config: prints a `warning:` line to out for each memcached name
 * of conf (servers, gutter, servers_previous) that does not resolve here
 * and now (blocking): the sidecar would start with that server out of
 * service. Returns how many. */
size_t oc_mc_check_names(const oc_conf_t *conf, FILE *out);
/* Closes the connections; jobs not yet done get `done` (their unanswered
 * parts as errors, err "shutting down"). */
void oc_mc_free(oc_mc_t *mc);
void oc_mc_submit(oc_mc_t *mc, oc_mc_job_t *job);
/* A reload: the new server list and timeouts. Servers kept (same host and
 * port) keep their connection and what is under way on it (until their
 * name, resolved again, is found at another address); what was sent
 * to a removed server fails (ERROR). A server added by name starts out of
 * service, its probe due at once (the probe resolves it, off the loop).
 * Keeps nothing of `conf`. On error (out of memory) the old pool is left
 * as it was. */
oc_status_t oc_mc_reconfigure(oc_mc_t *mc, const oc_conf_t *conf, char *err);

/* Server health, for oc_health. Servers are numbered in the configured
 * order, the pool's (gutter = 0) and the gutter's (gutter = 1) apart; the
 * numbers and names change only with oc_mc_reconfigure. */
struct oc_stats;
size_t oc_mc_count(const oc_mc_t *mc, int gutter);
const char *oc_mc_name(const oc_mc_t *mc, int gutter, size_t i); /* "host:port" */
/* 0 up, 1 down, 2 probing: an oc_tko_state_t. */
int oc_mc_state(const oc_mc_t *mc, int gutter, size_t i);
/* Whether every server where the failed delete `it` (a DELETE job's item
 * answered OC_MC_R_ERROR) failed will be emptied before anyone reads from
 * it again: this sidecar has it out of service and failover is on (or was
 * on while it was out: a reload that turned it off since does not spare it
 * the flush), so it serves again only after its probe's flush_all. The
 * servers are the key's own and, with servers_previous, its server there:
 * only those whose part failed count (a pool server down does not hold the
 * feed back because the key's delete on servers_previous went through, nor
 * the other way round). A delete that failed there cannot leave an old
 * value for a read to find (in this sidecar's view: a server cut off from
 * this host only keeps serving the others). */
int oc_mc_emptied_before_read(oc_mc_t *mc, const oc_mc_item_t *it);
/* From now on oc_mc counts its ejections, returns and failover reads,
 * hits and writes in `stats`, and calls changed(arg) after any server's
 * state changed and after oc_mc_reconfigure (each change is also logged,
 * with its reason). stats must outlive mc; NULLs turn it off. */
void oc_mc_watch(oc_mc_t *mc, struct oc_stats *stats, void (*changed)(void *arg),
                 void *arg);

/* One allocation each; NULL on out of memory. */
oc_mc_job_t *oc_mc_job_new_get(size_t n, oc_mc_done_fn done, void *arg);
/* Any op but GET. */
oc_mc_job_t *oc_mc_job_new_items(oc_mc_op_t op, size_t n, oc_mc_done_fn done, void *arg);
void oc_mc_job_free(oc_mc_job_t *job);

/* ---- the pure rules, exposed for unit tests ---- */

/* A PUSH whose write kept finding the key changed since its read gives up
 * after this many rounds (ERROR). */
#define OC_MC_PUSH_TRIES 8

/* What a store, delete or version reply means for an item of `op` (never
 * called for a shadow delete). A SWAP whose cas found the key replaced or
 * gone lost to a later write: NOT_STORED. A PUSH whose cas or add found
 * the key changed since its read is read again: *again = 1 (*tries counts
 * the rounds), up to OC_MC_PUSH_TRIES, then ERROR. */
oc_mc_result_t oc_mc_item_reply(oc_mc_op_t op, oc_mcp_reply_t reply, int *tries,
                                int *again);
/* The one-line commands whose reply words oc_mc_out_of_step knows. */
typedef enum oc_mc_line_cmd {
    OC_MC_LINE_STORE,   /* set, add, cas: STORED, NOT_STORED, EXISTS, NOT_FOUND */
    OC_MC_LINE_DELETE,  /* delete: DELETED, NOT_FOUND */
    OC_MC_LINE_MD,      /* md: HD, NF, EX (an older memcached's OK: an error) */
    OC_MC_LINE_MS,      /* ms: HD, NS, EX, NF */
    OC_MC_LINE_VERSION, /* version: VERSION */
} oc_mc_line_cmd_t;
/* 1 if reply t does not answer cmd: each command has its own words, and any
 * of them may be answered ERROR, CLIENT_ERROR or SERVER_ERROR (never out of
 * step). Such a line means a reply went missing (a server or a middlebox
 * dropped a command): every reply after it would answer the wrong command
 * (a delete the server never saw counted as done), so oc_mc resets the
 * connection. */
int oc_mc_out_of_step(oc_mc_line_cmd_t cmd, oc_mcp_reply_t t);
/* 1 if the return flags of meta reply l fit cmd: an ms asks for its cas
 * (`c`), and memcached (1.6.10 on) returns it on every answer; an md asks
 * for nothing. md and ms share their words (HD, NF, EX): without this an
 * md whose reply went missing would take an ms's `HD c<cas>` as its own
 * (found by a review). Lines other than HD, NS, EX, NF always fit. */
int oc_mc_meta_flags_fit(oc_mc_line_cmd_t cmd, const oc_mcp_line_t *l);
/* SWAP: does the key still hold exactly what the item expects (its value
 * and flags)? The read found flags and data[0..len). */
int oc_mc_swap_holds(const oc_mc_item_t *it, uint32_t flags, const char *data,
                     size_t len);
/* A meta get's VA line l (NULL: EN, a miss) for a GET key. W or Z on an
 * empty item with flags 0 is a lease (made for the N flag): returns 1 with
 * *lease set, there is no value. W or Z on a value answer the R flag: 0
 * with *refresh set (W: this reader refreshes it), a hit either way. */
int oc_mc_meta_lease(const oc_mcp_line_t *l, oc_mc_lease_t *lease,
                     oc_mc_refresh_t *refresh);
/* Is a GET key read with a meta get (mg) rather than in the multi-get? When
 * the job takes a lease on a miss, or the key asks for a refresh window;
 * never a refresh on a failover (on_failover), whose entries live
 * failover_ttl at most and whose every read would reload them. */
int oc_mc_wants_mg(uint32_t lease_ttl_s, uint32_t refresh_s, int on_failover);
/* The refresh window (R flag) a meta get asks for: 0 on a failover. */
uint32_t oc_mc_refresh_window(uint32_t refresh_s, int on_failover);
/* The exptime an item is written with: as asked on its own server; on a
 * failover capped at failover_ttl_s (0, never expire, is more than that). */
uint32_t oc_mc_store_exptime(uint32_t exptime_s, int on_failover,
                             uint32_t failover_ttl_s);
/* A part whose own server cannot take it now: may it go to the key's
 * failover? A GET may, at once (a read can go anywhere); a write only once
 * the server is out of service (primary_in_service = 0): a write cut short
 * by a failure may have been applied there. */
/* Place memos (hit.place, item.place): a key's server index in the pool of
 * generation gen (oc_mc counts its pool changes), never 0. oc_mc_memo_idx:
 * 1 and the index if memo was made for generation gen and names one of
 * npool servers, else 0 (no memo, or the pool changed: place the key). */
uint64_t oc_mc_memo(uint32_t gen, size_t idx);
int oc_mc_memo_idx(uint64_t memo, uint32_t gen, size_t npool, size_t *idx);
int oc_mc_may_fail_over(oc_mc_op_t op, int primary_in_service);
/* Does a write to a key's own server (via its primary, not on a failover
 * or the gutter) also delete the key's copy on its failover? With failover
 * on: a DELETE always; a SET, PUSH or SWAP while the server is failing or
 * came back less than failover_ttl_s + 1 seconds before `now` (the failover
 * may still hold what was written there meanwhile). */
int oc_mc_wants_shadow(oc_mc_op_t op, int failover_on, int via_primary, int gutter,
                       const oc_tko_t *tko, double now, uint32_t failover_ttl_s);
/* Seconds left, at `now`, of a wait that began at `since` and may last
 * `limit` (a server's io_timeout, counted from its oldest wait's start or
 * the last reply, or key of a multi-get, read: not from the last byte, or a
 * server trickling bytes would never time out): <= 0 when it is over. */
double oc_mc_time_left(double since, double limit, double now);

#endif

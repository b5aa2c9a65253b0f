/*
 * oc_ctx: what the daemon's modules share, and nothing else. The daemon's
 * lifecycle (oc_daemon.c) makes every module, fills this struct with
 * pointers to them, and is the only place that knows the order in which
 * they start and stop; a module reaches another only through its pointer
 * here and that module's own header, never through another module's
 * lists or timers.
 *
 * Contract: loop thread only (the process has no other thread). Fields are
 * set by oc_daemon at start and by oc_reload (conf, model_gen, the derived
 * limits, and the invalidation consumer); modules read them.
 */
#ifndef OC_CTX_H
#define OC_CTX_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct oc_conf;
struct oc_stats;
struct oc_mc;
struct oc_pg;
struct oc_fills;
struct oc_reqs;
struct oc_writes;
struct oc_gate;
struct oc_inval;
struct oc_near;
struct oc_feed;
struct oc_wal;
struct oc_sampler;
struct oc_gens;

typedef struct oc_ctx {
    struct event_base *base;
    struct oc_conf *conf;   /* the configuration in force (a reload swaps it) */
    struct oc_stats *stats; /* every counter (oc_stats.h) */
    uint64_t *model_gen;    /* [conf->nmodels] each model's generation: a
                               TRUNCATE bumps it, and cache keys carry it */
    unsigned long gens_oid; /* generation_seq's OID model_gen follows (0:
                               none seen): oc_gens_follow */
    int gens_unknown;       /* model_gen could not be read yet: gets do not
                               use memcached (oc_gens.h) */
    size_t max_key_len;     /* longest client key: 250 - key_prefix - room */
    uint32_t lease_ttl_s;   /* a lease outlives a load: load_timeout + 1 s */
    double started;         /* unix time at start */
    int stopping;           /* SIGTERM: draining */

    struct oc_mc *mc;           /* the memcached pool */
    struct oc_pg *pg;           /* the PostgreSQL loader */
    struct oc_fills *fills;     /* loads under way (coalescing, leases) */
    struct oc_reqs *reqs;       /* the read path's own state */
    struct oc_writes *writes;   /* the write path's own state (push checks) */
    struct oc_gate *gate;       /* the test-only fault gate, or NULL */
    struct oc_inval *inval;     /* the invalidation consumer, or NULL */
    struct oc_near *near;       /* the near-cache (always made; limit 0 = off) */
    struct oc_feed *feed;       /* the feed follower, or NULL (feed_poll = 0) */
    struct oc_wal *wal;         /* the WAL reader (a candidate), or NULL */
    struct oc_sampler *sampler; /* the consistency sampler (always made;
                                   sample_rate 0 = idle) */
    struct oc_gens *gens;       /* whether model_gen is known, and its reader */
} oc_ctx_t;

#endif

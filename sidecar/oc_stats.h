/*
 * oc_stats: every counter and gauge objcached exports, declared once.
 *
 * OC_STATS_LIST is the single list: the struct, the `stats` reply and the
 * docs table are generated from it. X(name, kind, help); kind is COUNTER
 * (reset by `stats reset`) or GAUGE (a current value, never reset).
 *
 * Contract: the counters live in the daemon struct and are only touched on
 * the loop thread (worker threads report through completions), so plain
 * integers suffice.
 */
#ifndef OC_STATS_H
#define OC_STATS_H

#include <stdint.h>

struct evbuffer;

#define OC_STATS_LIST(X)                                                       \
    X(curr_connections, GAUGE, "client connections open now")                 \
    X(total_connections, COUNTER, "client connections accepted")              \
    X(rejected_connections, COUNTER, "connections refused over max_connections") \
    X(timeouts, COUNTER, "client connections closed by idle or write timeout") \
    X(cmd_get, COUNTER, "get and gets commands answered")                     \
    X(get_keys, COUNTER, "keys asked in get and gets")                        \
    X(get_hits, COUNTER, "keys answered from memcached")                      \
    X(get_misses, COUNTER, "keys not found in memcached")                     \
    X(get_absent, COUNTER, "keys answered as absent (no row)")                \
    X(coalesced_waits, COUNTER, "keys that joined a load already under way")  \
    X(pg_queries, COUNTER, "load queries sent to PostgreSQL")                 \
    X(pg_rows, COUNTER, "rows returned by load queries")                      \
    X(pg_errors, COUNTER, "load queries that failed or timed out")            \
    X(pg_connections_up, GAUGE, "loader connections connected now")           \
    X(mc_gets, COUNTER, "multi-gets sent to memcached")                       \
    X(mc_sets, COUNTER, "items written to memcached")                         \
    X(mc_errors, COUNTER, "memcached operations that reported an error")      \
    X(loads_in_flight, GAUGE, "keys being loaded or written back now")        \
    X(lease_waits, COUNTER, "polls of a key another sidecar was loading")      \
    X(lease_timeouts, COUNTER, "keys loaded without a lease after lease_wait") \
    X(fills_dropped, COUNTER, "fills refused because a write replaced the lease") \
    X(cmd_push, COUNTER, "set commands (pushes)")                              \
    X(cmd_tombstone, COUNTER, "delete commands (tombstones)")                  \
    X(pushes_stale, COUNTER, "pushes refused as older than the cached object") \
    X(invalidations, COUNTER, "keys deleted for the DB hook's outbox")         \
    X(inval_requeued, COUNTER, "invalidations put back: memcached failed")     \
    X(inval_errors, COUNTER, "invalidation cycles rolled back")                \
    X(inval_lag_ms, GAUGE, "age of the oldest outbox row in the last claim")   \
    X(client_errors, COUNTER, "CLIENT_ERROR and ERROR replies sent")          \
    X(server_errors, COUNTER, "SERVER_ERROR replies sent")

typedef struct oc_stats {
#define OC_STATS_FIELD(name, kind, help) uint64_t name;
    OC_STATS_LIST(OC_STATS_FIELD)
#undef OC_STATS_FIELD
} oc_stats_t;

/* Zero the counters, keep the gauges. */
void oc_stats_reset(oc_stats_t *st);

/* Append "STAT name value\r\n" lines for every entry (no END). */
void oc_stats_write(const oc_stats_t *st, struct evbuffer *out);

#endif

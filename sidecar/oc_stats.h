/*
 * oc_stats: every counter and gauge objcached exports, declared once.
 *
 * OC_STATS_LIST is the single list: the struct, the `stats` reply and the
 * docs table are generated from it. X(name, kind, help); kind is COUNTER
 * (reset by `stats reset`) or GAUGE (a current value, never reset).
 *
 * Contract: the counters live in the daemon struct and are only touched on
 * the loop thread (the only thread), so plain
 * integers suffice.
 */
#ifndef OC_STATS_H
#define OC_STATS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define OC_STATS_LIST(X)                                                                 \
    X(curr_connections, GAUGE, "client connections open now")                            \
    X(total_connections, COUNTER, "client connections accepted")                         \
    X(rejected_connections, COUNTER, "connections refused over max_connections")         \
    X(accept_errors, COUNTER,                                                            \
      "accepts that failed (out of descriptors): accepting pauses 100 ms")               \
    X(generations_unknown, GAUGE,                                                        \
      "1 while the models' generations could not be read: gets bypass memcached")        \
    X(listeners_inherited, GAUGE,                                                        \
      "client listeners taken from systemd at start (socket activation), not bound")     \
    X(handover_sent, COUNTER,                                                            \
      "idle client connections handed to systemd's fd store at a stop, for the next "    \
      "process")                                                                         \
    X(handover_adopted, COUNTER,                                                         \
      "client connections taken from systemd's fd store at start (a restart's "          \
      "handover)")                                                                       \
    X(handover_refused, COUNTER,                                                         \
      "descriptors passed as oc-client at start and closed: not a connected stream "     \
      "socket objcached serves, peer gone, or over max_connections")                     \
    X(timeouts, COUNTER, "client connections closed by idle or write timeout")           \
    X(loop_stalls, COUNTER,                                                              \
      "times the event loop stood still 1 s or more (the process stopped, starved of "   \
      "CPU, or one long turn): its timers ran that late")                                \
    X(loop_stall_us, COUNTER, "microseconds those stalls' timers ran late, summed")      \
    X(metrics_requests, COUNTER, "pages served on metrics_listen")                       \
    X(metrics_refused, COUNTER, "metrics_listen connections refused over 64 open")       \
    X(cmd_get, COUNTER, "get, gets and mg commands answered (not a SERVER_ERROR)")       \
    X(get_keys, COUNTER, "keys asked in get, gets and mg")                               \
    X(get_hits, COUNTER, "keys found in memcached")                                      \
    X(get_misses, COUNTER, "keys not found in memcached")                                \
    X(get_absent, COUNTER, "keys answered as absent (no row)")                           \
    X(coalesced_waits, COUNTER, "keys that joined a load already under way")             \
    X(pg_queries, COUNTER, "load queries sent to PostgreSQL")                            \
    X(pg_rows, COUNTER, "rows returned by load queries")                                 \
    X(pg_errors, COUNTER, "load queries that failed or timed out")                       \
    X(load_splits, COUNTER,                                                              \
      "loads split in two because a row's data made the query fail (only its keys "      \
      "fail)")                                                                           \
    X(load_parallel_parts, COUNTER,                                                      \
      "load queries added by splitting loads across idle loader connections (each "      \
      "load's parts after its first: load_split_min)")                                   \
    X(pg_connections_up, GAUGE, "loader connections connected now")                      \
    X(pg_hosts_passed, COUNTER,                                                          \
      "connection attempts to one host of a multi-host conninfo that failed, the turn "  \
      "passed to the next host")                                                         \
    X(pg_standbys_refused, COUNTER,                                                      \
      "sessions refused because the server was a hot standby (every connection but "     \
      "the feed's must be on the primary)")                                              \
    X(mc_servers_up, GAUGE,                                                              \
      "memcached servers of the pool in service (not marked down)")                      \
    X(mc_place_native, GAUGE,                                                            \
      "1 if keys are placed by objcached's own ketama (checked against "                 \
      "libmemcached's), "                                                                \
      "0 if by libmemcached")                                                            \
    X(mc_gets, COUNTER, "multi-gets sent to memcached")                                  \
    X(mc_gets_leasing, COUNTER,                                                          \
      "of those, read with meta gets that lease a miss at once (1 key in 20 missed)")    \
    X(values_by_ref, COUNTER,                                                            \
      "values of 16 KiB or more sent to clients from where they were read, not copied")  \
    X(mc_sets, COUNTER, "items written to memcached")                                    \
    X(mc_errors, COUNTER, "memcached operations that reported an error")                 \
    X(loads_in_flight, GAUGE,                                                            \
      "keys being loaded or written back now (fills and push checks)")                   \
    X(lease_waits, COUNTER, "polls of a key another sidecar was loading")                \
    X(lease_timeouts, COUNTER, "keys loaded without a lease after lease_wait")           \
    X(fills_dropped, COUNTER, "fills refused because a write replaced the lease")        \
    X(leases_released, COUNTER,                                                          \
      "leases no fill will replace, deleted (a fill refused after an invalidation, a "   \
      "failed load, a refused write-back), so that readers need not wait for them")      \
    X(cmd_push, COUNTER, "set commands (pushes)")                                        \
    X(cmd_tombstone, COUNTER, "delete commands (tombstones)")                            \
    X(pushes_stale, COUNTER, "pushes refused as older than the cached object")           \
    X(pushes_checked, COUNTER,                                                           \
      "pushes and tombstones compared with PostgreSQL's row after the write")            \
    X(pushes_corrected, COUNTER,                                                         \
      "checked pushes or tombstones replaced by PostgreSQL's row (or its absence)")      \
    X(pushes_unchecked, COUNTER,                                                         \
      "pushes or tombstones whose check failed: kept for missing_ttl only")              \
    X(push_checks_waiting, GAUGE,                                                        \
      "pushes and tombstones stored and waiting for their check against PostgreSQL")     \
    X(push_replies_held, COUNTER,                                                        \
      "pushes and tombstones whose reply waited for their check: 16,384 checks were "    \
      "waiting (PostgreSQL slower than the writes)")                                     \
    X(invalidations, COUNTER, "keys deleted for the DB hook's outbox or the WAL")        \
    X(inval_skipped, COUNTER,                                                            \
      "outbox keys no client could ask for (spaces, control bytes)")                     \
    X(inval_requeued, COUNTER, "invalidations put back: memcached failed")               \
    X(inval_errors, COUNTER,                                                             \
      "invalidation cycles rolled back (a claim failing until one succeeds, e.g. no "    \
      "hook: once)")                                                                     \
    X(inval_connected, GAUGE,                                                            \
      "1 while the invalidation consumer is connected (and LISTENing in session "        \
      "mode)")                                                                           \
    X(inval_lag_ms, GAUGE, "age of the oldest outbox row in the last claim (0: none)")   \
    X(reloads, COUNTER, "configuration reloads applied (SIGHUP)")                        \
    X(reload_errors, COUNTER, "configuration reloads refused")                           \
    X(near_serving, GAUGE,                                                               \
      "1 while the near-cache answers (it has seen every invalidation up to a recent "   \
      "point)")                                                                          \
    X(near_entries, GAUGE, "objects and absences held in the near-cache")                \
    X(near_bytes, GAUGE, "bytes the near-cache holds, overhead included")                \
    X(near_hits, COUNTER, "keys answered from the near-cache")                           \
    X(near_misses, COUNTER,                                                              \
      "keys looked up in the near-cache (while serving) and not there")                  \
    X(near_stored, COUNTER, "entries put into the near-cache")                           \
    X(near_door_waits, COUNTER,                                                          \
      "entries not admitted yet: a key enters the second time it is offered")            \
    X(near_refused_stale, COUNTER,                                                       \
      "entries refused: an invalidation of the key came after their read began")         \
    X(near_evictions, COUNTER, "entries evicted to stay under near_cache_size")          \
    X(near_expired, COUNTER, "entries dropped at their near_ttl")                        \
    X(near_flushes, COUNTER,                                                             \
      "times the near-cache was emptied because the feed could not prove it fresh")      \
    X(near_invalidations, COUNTER,                                                       \
      "invalidations applied to the near-cache (keys, models)")                          \
    X(feed_connected, GAUGE, "1 while the feed follower is connected")                   \
    X(feed_cursor, GAUGE, "the last feed row applied (its seq)")                         \
    X(feed_lag_ms, GAUGE,                                                                \
      "how old the feed's caught_up_at was at the last poll that reached its head")      \
    X(feed_clock_ahead, COUNTER,                                                         \
      "polls whose caught_up_at was ahead of the database's clock by more than "         \
      "feed_max_lag: no proof of freshness")                                             \
    X(feed_polls, COUNTER, "feed polls answered")                                        \
    X(feed_polls_cut, COUNTER,                                                           \
      "feed polls cut at 100,000 keys (a follower catching up on large rows reads "      \
      "them a bounded part at a time)")                                                  \
    X(feed_own, COUNTER, "the WAL holder's own appends applied without a poll")          \
    X(feed_rows, COUNTER, "feed rows applied")                                           \
    X(feed_keys, COUNTER,                                                                \
      "keys of feed rows applied (fills stopped, near-cache dropped)")                   \
    X(feed_resyncs, COUNTER,                                                             \
      "times the follower jumped to the head (a connection, a gap): near-cache emptied") \
    X(feed_errors, COUNTER,                                                              \
      "feed queries that failed (a database without the feed: once)")                    \
    X(db_rollbacks, COUNTER,                                                             \
      "times this sidecar found the database on a later timeline, another cluster, or "  \
      "the same one at an earlier WAL position than memcached's marker (a failover, a "  \
      "restore, a copy of the data directory put back) and invalidated every model "     \
      "whole")                                                                           \
    X(wal_holder, GAUGE, "1 while this sidecar holds the WAL slot (reads the WAL)")      \
    X(wal_takeovers, COUNTER, "times this sidecar took the WAL slot")                    \
    X(wal_transactions, COUNTER, "committed transactions decoded from the WAL")          \
    X(wal_keys, COUNTER,                                                                 \
      "keys invalidated from the WAL (a key changed several times in one batch counts "  \
      "once)")                                                                           \
    X(wal_whole, COUNTER,                                                                \
      "models invalidated whole from the WAL (TRUNCATE, huge transactions)")             \
    X(wal_batches, COUNTER, "batches applied and confirmed to the slot")                 \
    X(wal_visibility_waits, COUNTER,                                                     \
      "batches whose deletes waited for a decoded commit to become visible "             \
      "(synchronous "                                                                    \
      "replication waiting for a standby)")                                              \
    X(wal_stream_reads, COUNTER, "bursts of the replication stream read (pacing)")       \
    X(wal_heartbeats, COUNTER, "heartbeats decoded back and appended to the feed")       \
    X(wal_feed_keys_owed, COUNTER,                                                       \
      "keys deleted from memcached but not appended to the feed (wal_feed_keys = off): " \
      "their models were owed a whole-model row instead")                                \
    X(wal_feed_flushes, COUNTER,                                                         \
      "appends of whole-model rows for the models owed (wal_feed_keys = off)")           \
    X(wal_lag_bytes, GAUGE,                                                              \
      "WAL the slot holds back: current LSN minus the confirmed one (the holder; 0 "     \
      "elsewhere)")                                                                      \
    X(wal_apply_lag_ms, GAUGE,                                                           \
      "the last batch's newest commit to its application (clocks of two hosts; the "     \
      "holder, 0 elsewhere)")                                                            \
    X(wal_buffer_bytes, GAUGE,                                                           \
      "bytes the holder's buffers of decoded keys hold after its last batch (they grow " \
      "with a large transaction and are given back after it)")                           \
    X(wal_check_problems, GAUGE,                                                         \
      "problems objcached.wal_check() reports to the holder; while not 0 its "           \
      "heartbeats claim no freshness (0 elsewhere)")                                     \
    X(wal_slot_recreated, COUNTER,                                                       \
      "times the slot was gone (dropped, invalidated) and made again")                   \
    X(wal_map_reloads, COUNTER,                                                          \
      "times the relation map was read again (a table attached, a column renamed)")      \
    X(wal_errors, COUNTER, "WAL reader failures (the stream, a query); it starts again") \
    X(mc_ejections, COUNTER,                                                             \
      "memcached servers marked down (failure_limit failures in a row)")                 \
    X(mc_returns, COUNTER, "memcached servers back in service after their probe passed") \
    X(mc_conn_limited, COUNTER,                                                          \
      "connections memcached refused over its -c (not counted as failures)")             \
    X(mc_restarts, COUNTER,                                                              \
      "reconnects that found another memcached process (pid or start changed)")          \
    X(mc_address_changes, COUNTER,                                                       \
      "memcached server names found resolving to a new address (by a probe or a "        \
      "reload)")                                                                         \
    X(mc_failover_reads, COUNTER,                                                        \
      "keys read from the failover of a server out of service")                          \
    X(mc_failover_hits, COUNTER, "of those, keys that held a value there")               \
    X(mc_failover_writes, COUNTER,                                                       \
      "items written to a failover (their TTL capped at failover_ttl)")                  \
    X(mc_previous_deletes, COUNTER,                                                      \
      "deletes sent to a key's server of servers_previous (a change of servers)")        \
    X(early_refreshes, COUNTER,                                                          \
      "hits near their expiry this sidecar was chosen to reload in the background")      \
    X(bin_connections, COUNTER, "client connections that spoke the binary protocol")     \
    X(bin_batches, COUNTER,                                                              \
      "read-through requests of binary gets (a pipeline of quiet gets is one)")          \
    X(sampler_samples, COUNTER,                                                          \
      "keys the consistency sampler chose and took to check (a full queue's refusals: "  \
      "sampler_dropped)")                                                                \
    X(sampler_raced, COUNTER,                                                            \
      "sampler checks given up: the row or the cache kept changing under them")          \
    X(sampler_errors, COUNTER,                                                           \
      "sampler checks that could not read memcached or PostgreSQL")                      \
    X(sampler_dropped, COUNTER,                                                          \
      "samples dropped: the sampler's queue was full, or their model was removed")       \
    X(sampler_queued, GAUGE, "samples waiting for their time or their turn")             \
    X(sampler_pg_queries, COUNTER, "PostgreSQL statements the sampler sent")             \
    X(client_errors, COUNTER, "CLIENT_ERROR and ERROR replies sent")                     \
    X(server_errors, COUNTER, "SERVER_ERROR replies sent")                               \
    X(noreply_errors, COUNTER,                                                           \
      "errors not sent: the command asked for noreply (memcached drops them too)")

/* Per model, all counters: `stats` shows them as model:NAME:field, the
 * metrics page as objcached_model_field_total{model="NAME"}. */
#define OC_MODEL_STATS_LIST(X)                                                           \
    X(get_keys, "keys of this model asked")                                              \
    X(get_hits, "distinct keys found in memcached")                                      \
    X(get_misses, "distinct keys not found in memcached")                                \
    X(pg_queries, "load queries sent to PostgreSQL")                                     \
    X(pg_rows, "rows returned by load queries")                                          \
    X(pg_errors, "load queries that failed or timed out")

/* The consistency sampler's results (oc_sampler.h), per model and slot: a
 * slot is one of sample_windows, then the hits' (OC_STATS_SAMPLER_SLOTS is
 * oc_smp.h's OC_SMP_SLOTS). `stats` shows sampler:MODEL:WINDOW:field,
 * /metrics objcached_sampler_field_total{model=,window=}. */
#define OC_STATS_SAMPLER_SLOTS 5
#define OC_SAMPLER_STATS_LIST(X)                                                         \
    X(checks, "sampled keys compared with PostgreSQL's current row")                     \
    X(inconsistent, "of those, the cache held another value than the row, proven "       \
                    "after a recheck")                                                   \
    X(empty, "of those, nothing was cached (a client would have loaded the row)")

typedef struct oc_model_stats {
#define OC_MODEL_STATS_FIELD(name, help) uint64_t name;
    OC_MODEL_STATS_LIST(OC_MODEL_STATS_FIELD)
#undef OC_MODEL_STATS_FIELD
#define OC_SAMPLER_STATS_FIELD(name, help)                                               \
    uint64_t sampler_##name[OC_STATS_SAMPLER_SLOTS];
    OC_SAMPLER_STATS_LIST(OC_SAMPLER_STATS_FIELD)
#undef OC_SAMPLER_STATS_FIELD
} oc_model_stats_t;

/* A latency histogram with fixed bounds (seconds), Prometheus-style:
 * buckets[i] counts observations <= oc_hist_bounds[i] (not cumulative here;
 * the metrics page sums them). */
#define OC_HIST_BUCKETS 16
extern const double oc_hist_bounds[OC_HIST_BUCKETS];

typedef struct oc_hist {
    uint64_t buckets[OC_HIST_BUCKETS + 1]; /* the last: above every bound */
    uint64_t count;
    double sum;
} oc_hist_t;

void oc_hist_observe(oc_hist_t *h, double seconds);

typedef struct oc_stats {
#define OC_STATS_FIELD(name, kind, help) uint64_t name;
    OC_STATS_LIST(OC_STATS_FIELD)
#undef OC_STATS_FIELD
    oc_hist_t request_seconds;    /* get/gets/mg: start to reply */
    oc_hist_t load_seconds;       /* one PostgreSQL load: submit to answer */
    oc_hist_t feed_apply_seconds; /* a write's commit to its feed row applied here */
    oc_hist_t loop_lag_seconds;   /* how late the loop ran a 100 ms tick (oc_lag) */
    oc_model_stats_t *models;     /* [nmodels] (oc_stats_reserve_models) */
    size_t nmodels;
    const char **model_names; /* [nmodels], pointing into the config */
    size_t models_cap;        /* room reserved in both arrays */
    char **mc_names;          /* [nmc] "host:port", owned by the daemon */
    uint64_t *mc_up;          /* [nmc] 1 if the server is in service */
    const char **mc_state;    /* [nmc] "up", "down" or "probing" (static) */
    size_t nmc;
    size_t nmc_pool; /* the first nmc_pool are the pool, the rest the gutter */
    /* The sampler's slots in use (0: it is off) and their labels. */
    size_t nsampler_slots;
    char sampler_slot[OC_STATS_SAMPLER_SLOTS][16];
} oc_stats_t;

/* Per-model counters, in two steps so a reload can fail before it
 * switches: reserve room for n models (may fail: -1), then name them
 * (cannot fail; i below what was reserved). The name pointers are kept:
 * they must outlive their use (they point into the configuration).
 * Counters of models kept keep their values, new ones start at 0; the
 * arrays never shrink (model indexes are stable, oc_reload.h). A model a
 * reload removed is named "": left out of stats and /metrics (a page that
 * grew with every reload that swapped in a new name, a probe's finding),
 * its counters kept for its return under the same name. */
int oc_stats_reserve_models(oc_stats_t *st, size_t n);
void oc_stats_name_model(oc_stats_t *st, size_t i, const char *name);
void oc_stats_free(oc_stats_t *st); /* what oc_stats_reserve_models allocated */

/* Zero the counters, histograms and model counters; keep the gauges. */
void oc_stats_reset(oc_stats_t *st);

/* Append "STAT name value\r\n" lines for every entry (no END). */
void oc_stats_write(const oc_stats_t *st, struct evbuffer *out);

/* The Prometheus text exposition format (version 0.0.4) of everything. */
void oc_stats_write_prometheus(const oc_stats_t *st, struct evbuffer *out);

/* Monotonic seconds, for latencies. */
double oc_stats_now(void);

#endif

/*
 * oc_inval: applies the invalidations that the PostgreSQL hook (sql/)
 * writes to objcached.outbox, so writes that bypass the app reach the cache.
 *
 * One dedicated connection LISTENs on channel "objcached" to wake up at
 * once, and polls every invalidation_poll in case a NOTIFY was missed
 * (pool_mode = transaction: polls only; the cycle's first statement then
 * carries the settings, oc_pgconn). A cycle is:
 *
 *   BEGIN; SELECT ... FROM objcached.claim(batch)         (rows deleted, locked)
 *   SELECT model, generation FROM objcached.models      (TRUNCATE bumps it)
 *   memcached delete of every claimed key                (and local fills)
 *   INSERT the keys whose delete failed back into the outbox
 *   COMMIT
 *
 * and repeats at once until a claim comes back empty. A consumer applies
 * every model's rows, served here or not (a cache key needs only the shared
 * key_prefix, the model name and its generation), so a fleet whose sidecars
 * serve different models loses nothing. Outbox keys that no
 * client could ask for (spaces, control bytes, too long) are skipped: they
 * were never cached, and must never reach a memcached command line. Because the claimed
 * rows are deleted in the same transaction that applies them, nothing is
 * lost if this sidecar dies mid-batch (the transaction rolls back and any
 * sidecar claims them again), while it is down (rows wait), or when a
 * transaction commits after a later-numbered one was consumed (its row
 * appears at commit). A key whose delete failed (a memcached server down or
 * frozen) goes back into the outbox, so a server that returns with stale
 * items is cleaned when it is reachable again.
 *
 * A TRUNCATE is a NULL key: the model's generation was bumped in the same
 * transaction; the generations read after the claim pick it up, and the cache keys of
 * that model change (prefix + Model~gen:id), so every old entry is dropped
 * at once.
 *
 * The database went back in time? (docs/operations.md) At each connection,
 * before its first claim, the consumer reads the database's identity
 * (system identifier, timeline) and compares it with memcached's marker
 * (oc_inval_marker_key; oc_inval_db_rule), without waiting for it: a
 * later timeline or another cluster (a failover to a replica that was
 * behind, a point-in-time restore) may have lost commits whose rows the
 * pool holds, so every model is bumped whole through feed_append (every
 * feed follows), then the marker is written. The consumer is where it runs
 * because it always reaches the primary, and its role may append (the feed
 * followers may read replicas, with fewer grants); in WAL mode the
 * holder's consumer checks. A bump that fails is tried again before the
 * next claims, at most once per invalidation_poll, until this connection
 * ends (the next one checks again). A claim that finds the server's start
 * time changed since the check (a pooler in transaction mode keeps this
 * connection while the server behind it restarts or is switched) checks
 * again too.
 *
 * The marker also names a WAL position (the flush LSN), moved forward by
 * the consumers as they claim rows (in WAL mode: the holder's, at each
 * cycle), at most once a second each, a memcached get then set (only while
 * the marker still names its cluster and timeline), from the
 * position the check found in the marker on: a connection that
 * finds the same cluster and timeline at a position below it is a copy of
 * the data directory put back (a file-system snapshot, a restored
 * pg_basebackup without recovery targets), which lost the commits after
 * it: every model is bumped too.
 *
 * Ownership: the daemon owns the consumer (ctx->inval; a reload may start
 * or stop it); oc_inval_free() rolls back a
 * cycle in flight (PostgreSQL does, when the connection closes). If its
 * memcached deletes are still out, the struct lives until their callback
 * (oc_mc runs every callback, at oc_mc_free at the latest).
 */
#ifndef OC_INVAL_H
#define OC_INVAL_H

#include <stddef.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_inval oc_inval_t;

/* Before serving: learn the models' generations with one blocking query
 * (2 s connect timeout per host of the conninfo, whatever the conninfo
 * says; 2 s statement timeout), so that a sidecar started after a
 * TRUNCATE, or one whose consumer is off, does not read entries of an old
 * generation. Also at a reload that adds a model. source ("start",
 * "reload") names it in the log (oc_gens). */
void oc_inval_read_generations(oc_ctx_t *ctx, const char *source);

/* NULL with err empty when invalidation_poll is 0 (turned off). */
oc_inval_t *oc_inval_new(oc_ctx_t *ctx, char *err);
void oc_inval_free(oc_inval_t *iv);

/* ---- the pure rules, exposed for unit tests ---- */

/* What the consumer's check (identity: "<system identifier> <timeline>
 * <flush LSN>", of pg_control_system(), the current WAL file and
 * pg_current_wal_flush_lsn(), the LSN as a decimal number) makes of
 * memcached's marker (found 0: none; else its len bytes, the same three
 * numbers; a marker of two, written before 2026-12-06, has position 0),
 * the identity of the database the pool's rows were read from:
 * FIRST: none, or not one (memcached restarted, the entry evicted, a new
 *   pool): written, nothing invalidated (nothing shows a rollback);
 * CLUSTER: another system identifier (a restore into a new cluster,
 *   pg_upgrade);
 * TIMELINE: a later timeline (a promote: a failover to a replica that may
 *   be behind, a point-in-time restore, a switchover);
 * LSN: the same cluster and timeline, at a WAL position below the
 *   marker's (a copy of the data directory put back; a flushed position
 *   survives a crash, so a restart never goes below it); the consumer
 *   reads its position again once the marker has answered (another
 *   consumer may have moved it forward since the first read) and decides
 *   on that one;
 *   for these three, commits whose rows the pool holds may be lost: every
 *   model goes whole (new generations), then the marker is written;
 * BEHIND: an earlier timeline of the same cluster (an old primary still
 *   up): said, nothing written or invalidated;
 * SAME: nothing (a plain restart keeps its timeline and position). */
typedef enum oc_inval_db {
    OC_INVAL_DB_SAME,
    OC_INVAL_DB_FIRST,
    OC_INVAL_DB_CLUSTER,
    OC_INVAL_DB_TIMELINE,
    OC_INVAL_DB_LSN,
    OC_INVAL_DB_BEHIND,
} oc_inval_db_t;
oc_inval_db_t oc_inval_db_rule(int found, const char *marker, size_t len,
                               const char *identity);
/* The marker's key: "<key_prefix>objcached.db.<16 hex digits>", the digits
 * naming the set of models configured (in any order). Per set of models,
 * not per pool: services that share a memcached pool and key_prefix with
 * models of other names (their keys do not collide) read each their own
 * database's marker; with one marker per pool they took each other's
 * databases for a rollback at every connection (seen in bench/'s writes
 * phase, a second cluster on the same pool). */
#define OC_INVAL_MARKER_KEY (64 + 32)
struct oc_conf;
void oc_inval_marker_key(const struct oc_conf *conf, char *buf, size_t cap);

/* What a claimed row (model[0..mlen), key[0..klen), key NULL for a
 * TRUNCATE) is for the feed; requeued_again: a requeued row whose retried
 * delete failed again (requeued once more, appended when a retry works). */
typedef enum oc_inval_feed_row {
    OC_INVAL_FEED_SKIP,  /* requeued again, a model name too long to be
                            one, or a key no client could ask for */
    OC_INVAL_FEED_KEY,   /* one key of the model */
    OC_INVAL_FEED_WHOLE, /* the whole model (a TRUNCATE) */
} oc_inval_feed_row_t;
oc_inval_feed_row_t oc_inval_feed_row(size_t mlen, const char *key, size_t klen,
                                      int requeued_again, size_t max_key_len);
/* Does a claimed row become a memcached delete? A key (not a TRUNCATE:
 * the generation does that) of a model still attached (model_known) that
 * a client could have asked for (spaces or CR/LF would inject commands). */
int oc_inval_row_deletes(size_t mlen, const char *key, size_t klen, int model_known,
                         size_t max_key_len);
/* The id in a cache key (prefix + Model[~gen] + ":" + id, oc_key), for the
 * requeue: after the first ':' past the prefix's prefix_len bytes; NULL if
 * there is none within the key. */
const char *oc_inval_key_id(const char *ckey, size_t klen, size_t prefix_len,
                            size_t *idlen);

#endif

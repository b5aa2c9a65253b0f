/*
 * oc_wal: the WAL source of invalidations. Instead of triggers in every
 * writing transaction, one sidecar reads the logical replication slot
 * (wal_slot, "objcached") with PostgreSQL's built-in pgoutput plugin, for
 * publication "objcached" (sql/install.sql: attach(..., via => 'wal')), and
 * applies what committed: memcached deletes (generations for TRUNCATE), the
 * feed (oc_feed in every sidecar), and only then confirms the slot's
 * position: nothing is lost across a sidecar kill, a PostgreSQL restart or
 * a network cut (the slot sends again from the last confirmed position),
 * and changes arrive in commit order.
 *
 * One reader per slot: PostgreSQL lets one connection stream a slot at a
 * time. Every sidecar with wal = on is a candidate; the one whose
 * START_REPLICATION succeeds holds it, the others stand by with no
 * connection open and try again when the feed shows the holder gone (the
 * feed's freshness, which only the holder's heartbeats advance, is older
 * than wal_takeover) or every wal_takeover at most once per candidate... A
 * holder that is stuck (its walsender alive but not at work decoding, its
 * heartbeats, confirmed position and replies not) is terminated after
 * 3 x wal_takeover; one
 * whose stream is silent for wal_sender_timeout lets go by itself
 * (oc_wal_stream_silent). The holder also drains the outbox
 * (the invalidation consumer, oc_inval: keys requeued after a memcached
 * failure, attach's whole-model rows, trigger-mode models).
 *
 * Freshness: every wal_heartbeat the holder emits a transactional logical
 * message carrying clock_timestamp(); when it decodes it back, everything
 * that committed before that instant has been decoded before it, so once
 * the batch holding it is applied, that instant becomes the feed's
 * caught_up_at (feed_append / feed_heartbeat).
 *
 * A slot that was dropped or invalidated (it fell more than
 * max_slot_wal_keep_size behind): the holder logs it loudly, creates the
 * slot again, and invalidates every wal model whole (new generations):
 * what changed while no slot kept the WAL cannot be known.
 *
 *   STANDBY --try--> CONNECTING --> MAPPING --> STARTING --> STREAMING
 *      ^                 |             |           |  \--slot gone--> RECREATING
 *      |________________________________________________________________|  (failure,
 *                                                                        another holder)
 *
 * Ownership: the daemon owns it (wal = on); it owns its two connections
 * (the replication stream, and a regular one for the feed, heartbeats and
 * the slot's lag), the batch being applied, and, while holding, the
 * invalidation consumer (ctx->inval).
 */
#ifndef OC_WAL_H
#define OC_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_wal oc_wal_t;

/* NULL with err empty when wal is off. */
oc_wal_t *oc_wal_new(oc_ctx_t *ctx, char *err);
void oc_wal_free(oc_wal_t *w);

/* ---- the pure rules, exposed for unit tests ---- */

/* The heartbeat token of 16 random bytes: 32 hex digits, the first a
 * letter (a-f). A token of digits alone would pass an older holder's
 * filter for instants ([0-9 :.+T-]), which then sends "<token> <instant>"
 * to feed_heartbeat as a timestamp, failing every heartbeat of a rolling
 * upgrade (a chance of (10/16)^32 per start, but no reason to leave it). */
void oc_wal_hb_token(const unsigned char raw[16], char out[33]);

#define OC_WAL_STATUS_EVERY_S 1.0  /* a standby status to the walsender */
#define OC_WAL_STATS_EVERY_S  5.0  /* the slot's lag, read */
#define OC_WAL_PRUNE_EVERY_S  60.0 /* the feed, pruned */

/* The holder's periodic work: when each is due next (monotonic seconds). */
typedef struct oc_wal_sched {
    double next_hb, next_status, next_stats, next_prune;
} oc_wal_sched_t;

enum {
    OC_WAL_DUE_HEARTBEAT = 1, /* emit a heartbeat message */
    OC_WAL_DUE_STATUS = 2,    /* send a standby status */
    OC_WAL_DUE_STATS = 4,     /* read the slot's lag */
    OC_WAL_DUE_PRUNE = 8,     /* prune the feed */
};

/* Streaming began at `now`: a heartbeat and a status at once, the lag and
 * a prune after their period. */
void oc_wal_sched_start(oc_wal_sched_t *s, double now);
/* What is due at `now` (OC_WAL_DUE_* bits), each moved to its next time:
 * heartbeats every heartbeat_s, statuses, lag reads (not while one is
 * still under way: stats_busy) and prunes every OC_WAL_*_EVERY_S. */
unsigned oc_wal_due(oc_wal_sched_t *s, double now, double heartbeat_s, int stats_busy);

/* A standby's timer: try to take the slot now? At its first chance; when
 * the feed's staleness (which only the holder's heartbeats move) is past
 * wal_takeover; else every 60 x wal_takeover since its last try. */
int oc_wal_try_now(int tried, double stale, double since_try, double takeover_s);
/* 1 if a try to take the slot, started since_try seconds ago and not
 * streaming yet, has had its time (limit_s: 12 x wal_takeover) and must
 * start again. */
int oc_wal_try_overdue(double since_try, double limit_s);
/* How long the holder has been silent as this sidecar can tell: the feed's
 * staleness, never more than this sidecar has watched (`watched` seconds:
 * a sidecar just started has a feed not yet fresh, INFINITY, which says
 * nothing of the holder), and 0 while the feed cannot be read (feed_up 0). */
double oc_wal_silence(int feed_up, double stale, double watched);

/* What another holder shows (the slot's confirmed position and its
 * walsender's last reply time, as text) as this standby last saw it, and
 * since when it has not moved. Zeroed: never seen. */
typedef struct oc_wal_watch {
    char lsn[128];
    double at; /* when lsn was first seen (monotonic seconds) */
    int seen;
    char busy_at[32]; /* sent position of its walsender, at work at the last
                         look; "": not at work */
} oc_wal_watch_t;
/* The holder now shows `lsn` ("" if PostgreSQL shows nothing): seconds it
 * has not moved as of `now`, 0 at its first sighting or when it moved. */
double oc_wal_watch_stalled(oc_wal_watch_t *wt, const char *lsn, double now);
/* The same, and its walsender is at work (decoding, not waiting on its
 * client nor idle) at sent position `busy_at` (NULL: not at work; "": not
 * shown). At work at the position of the last look, it is inside one
 * transaction, where it reads no reply (docs/wal.md): counted as moving.
 * At work elsewhere, it went from one transaction to the next and read the
 * replies meanwhile: only those count (a frozen holder's do not move). */
double oc_wal_watch_holder(oc_wal_watch_t *wt, const char *lsn, const char *busy_at,
                           double now);
/* Terminate the holder (backend pid) whose position stalled that long? */
int oc_wal_should_terminate(double stalled, double takeover_s, long pid);

/* The holder's stream has been silent since heard_at (monotonic seconds;
 * the last CopyData read, or when reading last resumed): let go of the
 * slot? A live walsender is never that silent to a holder that reads it:
 * the holder's heartbeats come back every wal_heartbeat, and every status
 * that finds the stream quiet asks for a keepalive, which the walsender
 * answers at least every wal_sender_timeout / 2 even while it replays a
 * big transaction whose changes it does not send (it reads replies only
 * then). So silence for wal_sender_timeout (sender_timeout_s), and never
 * less than 2 x wal_takeover (when a standby terminates a holder whose
 * position stalls), means the connection is cut off without a word (a
 * network partition: no RST, the sockets stay open), and the holder would
 * count itself the holder beside the one that took the slot until TCP
 * gives up (a feed statement that does not come back counts as silence
 * too). sender_timeout_s 0 (disabled or unknown): the walsender may
 * say nothing for good, and silence proves nothing. */
int oc_wal_stream_silent(double heard_at, double now, double takeover_s,
                         double sender_timeout_s);

/* Why START_REPLICATION ended, from the failure's SQLSTATE (NULL or "":
 * none, the server ended the stream or the connection broke) and whether
 * the stream had begun (COPY BOTH): never from the message, which is in
 * the server's lc_messages language. */
typedef enum oc_wal_end {
    OC_WAL_END_OTHER,         /* the stream broke, or the server ended it */
    OC_WAL_END_HELD,          /* another connection streams the slot */
    OC_WAL_END_SLOT_MISSING,  /* the slot does not exist: create it */
    OC_WAL_END_SLOT_UNUSABLE, /* the slot cannot be used: invalidated
                                 (max_slot_wal_keep_size: drop and create it)
                                 if pg_replication_slots says it is lost */
} oc_wal_end_t;
oc_wal_end_t oc_wal_end_kind(const char *sqlstate, int began);

/* Are more keys pending than the holder takes in (4 x wal_max_txn_keys)?
 * Then the stream pauses until applying brings them under again. */
int oc_wal_over_limit(size_t pending, uint32_t max_txn_keys);
/* Does the stream pause now? Over the limit, and only with a committed part
 * to apply: applying is what ends a pause, so with nothing committed (an
 * open transaction over a limit lowered by a reload while it streamed) it
 * would never end; read on instead, and the transaction's next key goes
 * whole-model (oc_walb's overflow), which brings the keys under. */
int oc_wal_pause_now(size_t pending, uint32_t max_txn_keys, int committed);
/* Seconds the holder waits before it takes the next batch: batches start at
 * least interval_s apart (wal_batch_interval), so that at a low write rate
 * many transactions share one memcached round and one feed commit instead
 * of one each; none while the stream is paused (the keys pending are over
 * the limit: applying is what frees it), before the first batch (last 0),
 * or when the clock is behind the last batch. */
double oc_wal_batch_wait(double last, double now, double interval_s, int paused);
/* How long the holder stops reading the stream after a burst that started
 * no batch: until the next batch is due (oc_wal_batch_wait, when a batch
 * waits), else interval_s; never more than OC_WAL_PACE_MAX_S. A burst of
 * commits, or the walsender's keepalive after each WAL flush, then wakes
 * the holder at most every 5 ms instead of once per message. The cap keeps
 * what waits in the socket small: paused for a long interval, a busy
 * stream would fill it, and the walsender would send only a socket's worth
 * per interval (found by a review: 7-13 s behind at a 1 s interval). */
#define OC_WAL_PACE_MAX_S 0.005
double oc_wal_pace_wait(double last, double now, double interval_s);
/* The apply lag (ms) of a batch whose newest commit was at commit_unix,
 * applied at now_unix (both wall clock seconds); a commit ahead is 0. */
uint64_t oc_wal_lag_ms(double now_unix, double commit_unix);

/* feed_append appends one feed row for a batch of keys of one model, at
 * most this many of them, and no whole model (its fast path). */
#define OC_WAL_FEED_ROW_KEYS 100000
/* 1 if the batch is such a batch: its append is one row, which the
 * follower of this process can take without a poll (oc_feed_own). */
struct oc_walb_batch;
int oc_wal_one_row(const struct oc_walb_batch *b);

/* The array literals (oc_sql_array) of a batch's feed_append and requeue:
 * lit[0] and lit[1] the model and key of every key, lit[2] the whole
 * models, lit[3] and lit[4] the model and key of each delete memcached
 * failed (batch keys failed[0..nfailed)). Each literal is malloc'd and the
 * caller's (free them even on OC_ENOMEM). */
oc_status_t oc_wal_feed_literals(const struct oc_walb_batch *b, const size_t *failed,
                                 size_t nfailed, char *lit[5]);

#endif

/*
 * oc_feed: every sidecar follows the feed of applied invalidations
 * (objcached.feed, written in commit order by whoever applies them to
 * memcached: the WAL reader, or the outbox consumers in trigger mode; see
 * docs/invalidation.md) with its own cursor, and applies each row here:
 * local fills of the key stop (oc_fill_invalidate), the near-cache drops
 * the key, and a whole-model row moves the model to its new generation.
 *
 * The feed is also how a sidecar knows how fresh it is. The feed's head
 * carries caught_up_at: every write committed before that instant is in
 * the feed at or below the head. Once this sidecar has applied the feed up
 * to the head, it is fresh as of caught_up_at; the near-cache answers only
 * while that instant is at most feed_max_lag old (judged with the
 * database's clock: the poll returns db_now - caught_up_at), so a near-cache
 * entry is never stale by more than feed_max_lag after a commit, and a
 * sidecar that loses the feed (its connection, a lagging replica, rows
 * pruned past its cursor) drops its near-cache until it is fresh again.
 *
 * One connection (feed_conninfo, which may point at a streaming replica;
 * conninfo by default). On a primary it also LISTENs on objcached_feed, so
 * an append or a heartbeat wakes it at once; on a standby (and with
 * feed_listen = off or pool_mode = transaction) it polls every feed_poll. At each
 * (re)connection it resynchronises: the head and every model's generation are read in one
 * snapshot, the cursor jumps to the head, and the near-cache starts empty. A poll that
 * finds another objcached.generation_seq than the last resync (the hook uninstalled and
 * installed again, or another database) resyncs too, and that resync
 * starts every model's generation over from the database's, lower or not.
 *
 * A standby read by the follower that is promoted (a poll says so)
 * resyncs, as a primary. (A database that went back in time, a failover to
 * a replica that was behind, is the outbox consumer's check: oc_inval.h.)
 *
 *   DOWN --up--> RESYNC --> IDLE <--> POLLING      (any failure: DOWN)
 *
 * Ownership: the daemon owns it (made when feed_poll > 0; a reload may
 * start or stop it). It holds no memory of the rows it applied.
 */
#ifndef OC_FEED_H
#define OC_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_feed oc_feed_t;

/* NULL with err empty when feed_poll is 0 (off). */
oc_feed_t *oc_feed_new(oc_ctx_t *ctx, char *err);
void oc_feed_free(oc_feed_t *f);

/* How old (seconds, at monotonic `now`) the newest freshness this follower
 * proved is: the age of the feed's caught_up_at as last seen at its head.
 * INFINITY before the first proof. The WAL reader's standbys watch it: only
 * the holder's heartbeats move caught_up_at. */
double oc_feed_staleness(const oc_feed_t *f, double now);

/* The WAL holder of this process hands its feed statements over (oc_wal),
 * so that its follower does not poll back what its own process appended.
 * oc_feed_own_begin when one is sent (its NOTIFY may come before its
 * result), oc_feed_own with its result, whatever it was. A statement that
 * appended one row of one model's keys and claimed no caught_up_at (most of
 * them under load) is taken when the follower reads the same database (the
 * same conninfo, not a standby), is idle, and its cursor is right below the
 * row (appenders draw seqs under the feed lock and commit before releasing
 * it: nothing unread lies below): the keys are applied from memory and the
 * cursor moves to the head. The proof of freshness held still covers it
 * (the head's caught_up_at did not move). Its NOTIFY (be_pid `pid`) then
 * wakes no poll: skipped when it comes after (oc_feed_owed), left to the
 * result when it comes first. Everything else (heartbeats and their proof,
 * several rows, whole models, a requeue, rows of others in between) is read
 * by the NOTIFY's poll, as any other appender's. Nothing is kept: keys are
 * read during the call. */
typedef struct oc_feed_own {
    int pid;                 /* the holder's server process */
    int take;                /* 0: not takeable (see above); the rest unset;
                              * 1: one row, nkeys >= 1 */
    uint64_t head;           /* the feed's head after the statement */
    double apply_s;          /* seconds from the row's newest source commit
                              * to now (negative: unknown) */
    const char *model;       /* the row's model */
    const char *const *keys; /* the row's keys (ids), nkeys of them */
    const size_t *klens;
    size_t nkeys;
} oc_feed_own_t;

void oc_feed_own_begin(oc_feed_t *f);
void oc_feed_own(oc_feed_t *f, const oc_feed_own_t *own);
/* The holder's connection is gone: no result comes for a NOTIFY left to
 * oc_feed_own (it is polled now), and its pid may be another session's. */
void oc_feed_own_end(oc_feed_t *f);

/* ---- the pure rules, exposed for unit tests ---- */

/* Did a feed command fail because the hook's schema, or version 2's feed,
 * is not installed? By its SQLSTATE (invalid_schema_name, undefined_table,
 * undefined_function), never by the message, which is in the server's
 * language; those codes could name another object, so the message must
 * also name objcached's (an identifier: never translated). */
int oc_feed_hook_missing(const char *sqlstate, const char *err);
/* A poll saw the feed's head and pruned_upto (rows up to it are gone):
 * 1 if what this follower missed since its cursor cannot be known (rows
 * pruned past it, or a cursor past the head: another database, a restore)
 * and it must resync. */
int oc_feed_gap(uint64_t cursor, uint64_t head, uint64_t pruned_upto);
/* Poll again at once? The cursor is short of the head and the poll
 * returned a full batch of feed rows (a poll is cut at feed_batch rows),
 * or was cut short of them at OC_FEED_POLL_KEYS keys (cut). */
int oc_feed_more(uint64_t cursor, uint64_t head, uint64_t rows, uint32_t feed_batch,
                 int cut);
/* A poll returns the feed rows whose keys before them (in the poll) number
 * fewer than this: a row holds up to 100,000 keys, and a follower behind
 * by feed_batch such rows would otherwise take them all in one result
 * (100 million keys, gigabytes in libpq). At least one row always comes. */
#define OC_FEED_POLL_KEYS 100000
/* May the holder's own append of one row, which left the head at `head`,
 * be applied without a poll by a follower at `cursor`? Only when nothing
 * lies between them: cursor == head - 1. */
int oc_feed_own_fits(uint64_t cursor, uint64_t head);
/* A NOTIFY of the feed from `be_pid` with payload `extra` (the head it
 * left): 1 if it is the holder's own (`own_pid`) with a well-formed head,
 * stored in *head. */
int oc_feed_notify_own(int own_pid, int be_pid, const char *extra, uint64_t *head);
/* The heads of the holder's statements taken by oc_feed_own whose NOTIFY
 * has not come yet, oldest first (they only grow). NOTIFYs come in commit
 * order: one of head h settles every entry up to h, and is a taken
 * statement's (needs no poll) only if h is the oldest left. A heartbeat's
 * NOTIFY carries the head of the append before it: it matches no entry
 * once that append's NOTIFY (earlier in commit order) has come, and polls.
 * Full: the oldest is dropped (its NOTIFY polls, once). */
#define OC_FEED_OWED_MAX 64
typedef struct oc_feed_owed {
    uint64_t head[OC_FEED_OWED_MAX]; /* a ring */
    unsigned first, n;
} oc_feed_owed_t;
void oc_feed_owed_push(oc_feed_owed_t *o, uint64_t head);
/* Drops the entries below head; 1 (and drops it) if head is the oldest. */
int oc_feed_owed_match(oc_feed_owed_t *o, uint64_t head);

/* What the holder's own NOTIFY of `head` asks of a follower at `cursor`
 * with a statement of the holder in flight (while idle): SKIP it (`owed`:
 * a taken statement's), DEFER it to the result of the one in flight (it
 * names rows past the cursor: that result may take them), or POLL. */
typedef enum oc_feed_notify {
    OC_FEED_NOTIFY_POLL,
    OC_FEED_NOTIFY_SKIP,
    OC_FEED_NOTIFY_DEFER,
} oc_feed_notify_t;
oc_feed_notify_t oc_feed_notify_rule(int owed, uint64_t head, uint64_t cursor,
                                     int inflight);
/* Until when (monotonic seconds) the near-cache may answer, after a poll
 * sent at `sent` applied the feed up to its head, whose caught_up_at was
 * lag_s old when the poll ran (a negative lag, a clock ahead, counts as
 * 0): sent + feed_max_lag - lag. 0 (not fresh) unless that is after
 * `sent`. Counting from `sent`, before the poll ran, errs on the safe side. */
double oc_feed_fresh_until(double sent, double lag_s, uint32_t feed_max_lag_ms);
/* A caught_up_at ahead of the polling server's clock by more than
 * feed_max_lag (lag_s below -feed_max_lag) proves nothing: the clock that
 * wrote it ran ahead (a step, a resumed virtual machine), or this one runs
 * behind. The poll is not fresh, whatever oc_feed_fresh_until says, and
 * the holder's silence keeps counting. Within feed_max_lag it is taken as
 * 0 old (a replica's clock a little behind the primary's). */
int oc_feed_clock_ahead(double lag_s, uint32_t feed_max_lag_ms);
/* The next (model, generation) pair of the resync's two lists, "User,Post"
 * and "3,0" (names are identifiers: no commas). *names and *gens move
 * past it; *name and *len point into the names list. 0 when either list is
 * over. */
int oc_feed_next_generation(const char **names, const char **gens, const char **name,
                            size_t *len, uint64_t *gen);

#endif

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
 * an append or a heartbeat wakes it at once; on a standby it polls every
 * feed_poll. At each (re)connection it resynchronises: the head and every
 * model's generation are read in one snapshot, the cursor jumps to the
 * head, and the near-cache starts empty.
 *
 *   DOWN --up--> RESYNC --> IDLE <--> POLLING      (any failure: DOWN)
 *
 * Ownership: the daemon owns it (made when feed_poll > 0; a reload may
 * start or stop it). It holds no memory of the rows it applied.
 */
#ifndef OC_FEED_H
#define OC_FEED_H

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

#endif

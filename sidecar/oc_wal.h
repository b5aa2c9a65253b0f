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
 * holder that is stuck (its walsender alive, its heartbeats not) is
 * terminated after 3 x wal_takeover. The holder also drains the outbox
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

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_wal oc_wal_t;

/* NULL with err empty when wal is off. */
oc_wal_t *oc_wal_new(oc_ctx_t *ctx, char *err);
void oc_wal_free(oc_wal_t *w);

#endif

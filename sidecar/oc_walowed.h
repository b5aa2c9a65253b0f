/*
 * oc_walowed: what the WAL holder owes the feed when it does not append
 * keys (wal_feed_keys = off), as pure logic.
 *
 * The feed's promise (docs/invalidation.md, "caught_up_at"): a claim of
 * caught_up_at T means every write committed at or before T is in feed rows
 * at or below the head. With keys off, a batch's memcached deletes are done
 * as always, but its keys are not appended; its models are owed instead: a
 * whole-model row each (the model's generation unchanged, so memcached keeps
 * its entries and only the near-caches drop the model), appended before the
 * next claim of caught_up_at, before any other append, before the map is
 * read again, and otherwise with the first batch at least one wal_heartbeat
 * after the first debt (normally a heartbeat's own batch). A whole-model row
 * covers every key of its model, so the claim stays true.
 *
 * The slot is not confirmed past a batch whose models are owed (oc_wal's
 * applied): a holder that stops before paying (killed, its connection cut,
 * its flush failed) leaves those transactions to be sent again to whoever
 * holds the slot next, who deletes and appends (or owes) them again. So the
 * debt never needs to survive the process, and a holder with keys on that
 * takes over from one with keys off needs no flush of its own.
 *
 * Ownership: the ledger keeps the model name pointers it is given (oc_wal's
 * are interned by oc_walbatch for the accumulator's life); it owns only its
 * array.
 */
#ifndef OC_WALOWED_H
#define OC_WALOWED_H

#include <stddef.h>
#include <stdint.h>

#include "oc_status.h"

typedef struct oc_walowed {
    const char **models; /* distinct, in the order first owed */
    size_t n, cap;
    int64_t commit_ts; /* the newest commit owed (PostgreSQL epoch, us); 0: none */
    double since;      /* when the first of them was owed (0: nothing owed) */
} oc_walowed_t;

/* Owe the models of a batch's keys (models[0..n), repeats allowed), whose
 * newest commit is commit_ts (0: unknown), at `now`. OC_ENOMEM leaves the
 * ledger as it was. */
oc_status_t oc_walowed_add(oc_walowed_t *o, const char *const *models, size_t n,
                           int64_t commit_ts, double now);

/* Must the debt be paid before this batch goes on? Yes when anything is owed
 * and the batch claims caught_up_at, `must` (it appends anything: whole
 * models, keys whose delete failed; or it ends with a change of the models,
 * after which the stream restarts from the confirmed position), or the
 * first debt is heartbeat_s old. */
int oc_walowed_due(const oc_walowed_t *o, int claims, int must, double now,
                   double heartbeat_s);

/* Paid, or forgotten with the stream that owed it (its transactions will be
 * sent again). */
void oc_walowed_clear(oc_walowed_t *o);
void oc_walowed_free(oc_walowed_t *o);

#endif

/*
 * oc_sampler: the built-in consistency sampler. It measures, in production,
 * whether what the cache serves is PostgreSQL's current row
 * (docs/consistency.md).
 *
 * Two kinds of samples, each a key chosen with the model's sample_rate:
 *   - invalidations this sidecar applies (the feed's keys, or the outbox
 *     consumer's when there is no feed): the key is checked once per
 *     sample_windows entry (1 s, 10 s, 60 s after it was applied);
 *   - hits (memcached or near-cache) this sidecar answered: the key is
 *     checked at the next tick (window "hit").
 * A check reads the key as a client would be answered (the near-cache for
 * models in it while it serves, else memcached) and PostgreSQL's row, and
 * judges them with oc_smp (a disagreement is read again after
 * sample_recheck before it counts). Results go to the stats per model and
 * window (checks, inconsistent, empty); an inconsistency is logged with the
 * key and both values (event=sampler_inconsistent).
 *
 * Load, bounded: a timer ticks sample_max_qps times a second (at most 100
 * times); a tick with samples due takes up to OC_SMP_BATCH of them, reads
 * their keys with one memcached multi-get (no lease, no refresh: a read that
 * changes nothing), then their rows with ONE PostgreSQL statement (a UNION
 * ALL of one `= ANY($n)` select per model of the batch) on the sampler's own
 * connection, so a client's load never queues behind it. At most one tick's
 * batch is in flight (a statement not answered 2 x load_timeout + 1 s
 * after it was sent drops the connection: its samples count as errors,
 * and the sampler goes on after a reconnect instead of waiting for an
 * answer that may never come). So the extra load is at most sample_max_qps
 * statements and multi-gets a second, whatever the rate; past what that
 * drains, samples wait in a queue of sample_queue and the ones beyond are
 * dropped (sampler_dropped). A sample waits its window out in that queue, so
 * it holds about (rate x (1 + the windows' sum in seconds)) samples: 16,384
 * keeps about 230 sampled invalidations a second with windows 1 s, 10 s,
 * 60 s; a soak that samples more needs a larger queue. Nothing here is on a client's path
 * but the offer calls: one random draw per key.
 *
 * Ownership: the daemon makes it after the memcached pool, the near-cache
 * and before the feed and the outbox consumer (which offer to it), and
 * closes it before freeing the pool (oc_sampler_close: its read in flight
 * ends then) and frees it after.
 */
#ifndef OC_SAMPLER_H
#define OC_SAMPLER_H

#include <stddef.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_sampler oc_sampler_t;

oc_sampler_t *oc_sampler_new(oc_ctx_t *ctx, char *err);
/* Stop: no more reads; the PostgreSQL connection closes. The memcached read
 * in flight, if any, ends when oc_mc calls it back (oc_mc_free). */
void oc_sampler_close(oc_sampler_t *s);
void oc_sampler_free(oc_sampler_t *s);

/* An invalidation of model m's key `id` (canonical) was applied here. s may
 * be NULL. */
void oc_sampler_offer_inval(oc_sampler_t *s, size_t m, const char *id, size_t len);
/* A key of model m was answered from the cache (a hit). s may be NULL. */
void oc_sampler_offer_hit(oc_sampler_t *s, size_t m, const char *id, size_t len);

#endif

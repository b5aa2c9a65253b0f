/*
 * oc_fill: loading cache misses from PostgreSQL: coalesced within this
 * sidecar, leased across sidecars, and safe against stale sets.
 *
 * A fill is one cache key being loaded. While it is in d->fills (keyed by
 * the cache key) every request of this sidecar that misses the key joins it
 * instead of loading again. New misses of one request are grouped by model
 * into batches; a batch is one PostgreSQL query.
 *
 * Leases (as in Facebook's "Scaling Memcache"), memcached's own: a read of
 * a missing key with `mg <key> v c f N<ttl>` (memcached >= 1.6) makes an
 * empty item there and tells this reader it won (W); every other reader of
 * that item is told another holds it (Z). Only the winner may fill the key,
 * and only by `cas` with the empty item's cas; any write in between (a
 * push, a tombstone, an invalidation's delete) changes or removes the item,
 * so the fill fails and the stale value never reaches the cache. A sidecar
 * that finds another's lease waits up to lease_wait for the result (so a hot
 * key's expiry does not send every host to the database), then loads by
 * itself without filling. The get's own read may already be such a meta
 * get (oc_req.c: while most gets miss); otherwise the lease is taken by a
 * second read of the missed keys.
 *
 *   LEASING --read: W / error--> LOADING --rows--> STORING --cas--> RETIRING
 *      |  \--read: Z--> WAITING --read: the value----------------^    |
 *      |                  |--read: W (the holder's lease went)--> LOADING
 *      |                  \--lease_wait over--> LOADING (no lease)     |
 *   a get that read W or Z starts in LOADING or WAITING.               |
 *   a failed load fails every waiter and removes the fill at once.     v
 *                                                                 removed
 * RETIRING: the answer is known and written; the fill keeps answering
 * until every get whose memcached multi-get was sent before then has had
 * its answer (such a get may have missed the key just before it was
 * written), and is then removed.
 *
 * Values are refcounted blobs shared by the fill and every request that
 * received them; the last unref frees.
 */
#ifndef OC_FILL_H
#define OC_FILL_H

#include <stddef.h>
#include <stdint.h>

#include "oc_daemon.h"

typedef struct oc_blob {
    uint32_t refs;
    size_t len;
    char data[];
} oc_blob_t;

oc_blob_t *oc_blob_new(const char *data, size_t len); /* refs = 1 */
oc_blob_t *oc_blob_ref(oc_blob_t *b);
void oc_blob_unref(oc_blob_t *b);

struct oc_ukey;
struct oc_req;

/*
 * Resolve every missed key listed in `keys` (n of them): join a fill under
 * way or start new ones. Keys are resolved later through oc_req_key_done();
 * keys answered at once (a fill already answered) are resolved before this
 * returns.
 */
void oc_fill_misses(oc_daemon_t *d, struct oc_ukey **keys, size_t n);

/* A write for this cache key was applied: a fill under way must not write
 * its (possibly older) answer back, and later misses must not join it. */
void oc_fill_invalidate(oc_daemon_t *d, const char *ckey, size_t len);

/* Remove retired fills no outstanding get can still need; called whenever
 * a get's memcached answer has been handled. */
void oc_fill_retire(oc_daemon_t *d);
/* Remove every retiring fill (shutdown). */
void oc_fill_retire_all(oc_daemon_t *d);

#endif

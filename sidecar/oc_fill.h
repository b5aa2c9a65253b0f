/*
 * oc_fill: loading cache misses from PostgreSQL, with coalescing.
 *
 * A fill is one cache key being loaded. While it exists (in d->fills, keyed
 * by the cache key) every request that misses that key, from any connection,
 * waits on it instead of loading again. A request's new misses are grouped
 * by model into batches: one PostgreSQL query per model per request.
 *
 * Fill states:
 *   LOADING  the batch query is under way; requests join the waiter list.
 *   STORING  the answer is known and being written back to memcached;
 *            requests that miss meanwhile take the answer directly, so a
 *            key is not loaded twice while its write-back is in flight.
 * Then the fill retires: it stays (still answering) until every get whose
 * memcached multi-get was sent before the write-back finished has had its
 * answer, because such a get may have missed the key just before it was
 * stored. Only then is it removed. A failed load fails every waiter and is removed
 * at once (no write-back), so the next request tries again.
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
 * Resolve every missed key of `req` listed in `keys` (n of them): join a
 * fill under way or start new ones, submitting one load per model. Keys are
 * resolved later through oc_req_key_done(); keys answered at once (a fill
 * already STORING) are resolved before this returns.
 */
void oc_fill_misses(oc_daemon_t *d, struct oc_req *req, struct oc_ukey **keys,
                    size_t n);

/* Remove retired fills no outstanding get can still need; called whenever
 * a get's memcached answer has been handled. */
void oc_fill_retire(oc_daemon_t *d);
/* Remove every retiring fill (shutdown). */
void oc_fill_retire_all(oc_daemon_t *d);

#endif

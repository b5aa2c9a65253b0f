/*
 * oc_near: the near-cache (L1): objects held in objcached's own memory, in
 * front of the memcached pool, so a hot object is answered without a round
 * trip. It is only worth having if it is never stale after a committed
 * write, so this module is built around invalidation:
 *
 * - Every invalidation the sidecar applies (the feed of committed writes,
 *   pushes and tombstones made here) drops the key, and records the key's
 *   epoch: a value read before the invalidation arrived (a memcached read or
 *   a PostgreSQL load begun at an earlier epoch) is refused when it tries to
 *   enter (oc_near_put's `since`). Epochs are kept per hashed key slot
 *   (a collision only refuses an entry, never admits a stale one), per model
 *   (a TRUNCATE: a new generation) and for the whole cache (oc_near_clear).
 * - While the sidecar cannot prove it has seen every invalidation up to a
 *   recent point (the feed is down or lags), the owner turns serving off:
 *   oc_near_clear drops everything and nothing is answered or stored until
 *   serving is on again.
 * - Entries also expire after their model's near_ttl, a safety net.
 *
 * Memory: bounded by `limit` bytes, counting each entry with its overhead
 * (the entry, its key, the value's blob, allocator overhead) and the table.
 * Eviction is SIEVE (a FIFO queue with a visited bit and a hand that evicts
 * the first unvisited entry it meets, from the oldest side): a hit only
 * sets a bit (no list moves, unlike LRU), and objects seen once are demoted
 * quickly. Admission: a key enters only the second time it is offered
 * within the last oc_near_door_window(limit) keys offered (a doorkeeper
 * bitset, reset as it fills; under 0.4% of keys seen once pass by mistake;
 * the window follows the limit, from 32,768 keys), so one huge multi-get
 * of distinct keys, read once, evicts nothing; an object larger than 1/64
 * of the limit never enters.
 *
 * Contract: pure data structure, no I/O, loop thread only; time is passed
 * in (monotonic seconds). Blobs are referenced, never copied: get returns a
 * borrowed reference valid until the next call that may evict (put,
 * invalidate, clear, set_limit); take your own reference to keep it.
 * Counters and gauges go to the oc_stats_t given (near_*).
 */
#ifndef OC_NEAR_H
#define OC_NEAR_H

#include <stddef.h>
#include <stdint.h>

#include "oc_blob.h"
#include "oc_stats.h"
#include "oc_status.h"

typedef struct oc_near oc_near_t;

typedef enum oc_near_found {
    OC_NEAR_MISS,   /* not here (or not serving, or expired) */
    OC_NEAR_OBJECT, /* *blob is the object */
    OC_NEAR_ABSENT, /* the object does not exist (cached absence) */
} oc_near_found_t;

/* What oc_near_put did. */
typedef enum oc_near_put {
    OC_NEAR_STORED,
    OC_NEAR_STALE,   /* an invalidation of the key came after `since` */
    OC_NEAR_DOOR,    /* first sighting: remembered, not admitted yet */
    OC_NEAR_TOO_BIG, /* larger than a 64th of the limit */
    OC_NEAR_OFF,     /* not serving, or limit 0 */
    OC_NEAR_NOMEM,
} oc_near_put_t;

/* A cache of at most `limit` bytes, not serving until it is made fresh. */
oc_near_t *oc_near_new(size_t limit, oc_stats_t *stats);
void oc_near_free(oc_near_t *n);
/* How many offered keys the doorkeeper remembers for a limit: about one per
 * 256 bytes (a power of 2, 32,768..4,194,304); 4 bytes each, counted in
 * near_bytes. */
size_t oc_near_door_window(size_t limit);
/* The most hash buckets a limit keeps after a reload lowers it: their
 * bytes at most 1/32 of it (between 1,024 and 2^26). The table grows past
 * that only when the entries need it. */
size_t oc_near_buckets_for(size_t limit);
/* A new limit (reload): evicts down to it at once; 0 clears and stops. A
 * lower limit shrinks the hash table to oc_near_buckets_for(limit) first,
 * so the table's own bytes cannot keep the cache over it. A limit with
 * another doorkeeper window starts the doorkeeper empty. */
void oc_near_set_limit(oc_near_t *n, size_t limit);
/* The owner proved freshness up to this instant (monotonic seconds): the
 * cache serves while now < until. Once a get or put finds that instant
 * passed, everything is dropped (near_flushes) and nothing is answered or
 * stored until a later instant is given. 0: not fresh (drops at once; a
 * flush too, if it held anything). */
void oc_near_fresh_until(oc_near_t *n, double until);
/* Serving at `now`: fresh and a limit above 0. The stats' readers (`stats`,
 * /metrics) call it first, so that a proof that ran out while no get looked
 * shows in near_serving (and near_flushes) all the same. */
int oc_near_serving(oc_near_t *n, double now);
/* Tests and tools: fresh forever (on) or not at all (off). */
void oc_near_serve(oc_near_t *n, int on);

/* The current epoch: record it before a read whose result may be put. */
uint64_t oc_near_epoch(const oc_near_t *n);

oc_near_found_t oc_near_get(oc_near_t *n, const char *key, size_t klen, double now,
                            oc_blob_t **blob);
/* oc_near_get for many keys at once, each ask's found and blob set (as
 * oc_near_get would, counted the same): faster for a get of many keys, as
 * the lookups' cache misses overlap (in groups of OC_NEAR_GET_MANY). */
#define OC_NEAR_GET_MANY 16
typedef struct oc_near_ask {
    const char *key;
    size_t klen;
    oc_near_found_t found; /* out */
    oc_blob_t *blob;       /* out: not referenced; valid until the next put or drop */
} oc_near_ask_t;
void oc_near_get_many(oc_near_t *n, oc_near_ask_t *asks, size_t count, double now);

/* What to store: an object (a blob to reference, or bytes to copy into a
 * new blob only if it is admitted) or the object's absence. */
typedef struct oc_near_val {
    oc_blob_t *blob;  /* referenced if set */
    const char *data; /* else copied, if admitted */
    size_t len;
    int absent;
} oc_near_val_t;

/* Store v for ttl seconds, unless the key, its model or the cache was
 * invalidated after `since`, or admission says not yet. A present entry is
 * replaced. */
oc_near_put_t oc_near_put(oc_near_t *n, const char *key, size_t klen, uint32_t model,
                          const oc_near_val_t *v, double ttl, uint64_t since, double now);

/* An invalidation of one key / of every key of a model / of everything. */
void oc_near_invalidate(oc_near_t *n, const char *key, size_t klen);
void oc_near_invalidate_model(oc_near_t *n, uint32_t model);
void oc_near_clear(oc_near_t *n);

/* What an entry of this key and value size is charged (exposed for tests). */
size_t oc_near_charge(size_t klen, size_t vlen, int has_blob);

#endif

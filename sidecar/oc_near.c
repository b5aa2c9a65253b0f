#include "oc_near.h"

#include <stdlib.h>
#include <string.h>

#include "oc_map.h"

#define NEAR_EPOCH_SLOTS 65536u /* hashed per-key invalidation epochs */
/* The doorkeeper remembers the last `window` keys offered in a bitset of
 * 32 bits per key (two bits set per key: under 0.4% of new keys pass by
 * mistake). The window follows the limit: about one key per 256 bytes, the
 * entries a full cache of small objects holds, so a key asked again before
 * the cache could have turned over once gets in. Between 32,768 keys
 * (128 KiB) and 4,194,304 (16 MiB, from a 1 GiB limit up). */
#define NEAR_DOOR_MIN_WINDOW (1u << 15)
#define NEAR_DOOR_MAX_WINDOW (1u << 22)
#define NEAR_DOOR_BYTES_KEY  256u
#define NEAR_MALLOC_OVERHEAD 16 /* what glibc adds to each allocation, about */
#define NEAR_MIN_BUCKETS     1024u
#define NEAR_MAX_BUCKETS     (1u << 26) /* 512 MiB of buckets: longer chains past it */
#define NEAR_MODELS_MAX      65536u

typedef struct near_entry near_entry_t;
struct near_entry {
    near_entry_t *hnext;       /* hash chain */
    near_entry_t *prev, *next; /* SIEVE queue: head = newest, tail = oldest */
    oc_blob_t *blob;           /* NULL: a cached absence */
    double expires;
    uint64_t hash;
    size_t charge; /* bytes counted for it */
    uint32_t model;
    uint16_t klen;
    uint8_t visited;
    char key[];
};

struct oc_near {
    oc_stats_t *stats;
    size_t limit, bytes; /* bytes: entries' charges + fixed tables */
    size_t fixed;        /* the tables' own bytes */
    double fresh_until;  /* serving while now < this */
    near_entry_t **buckets;
    size_t nbuckets, count;
    near_entry_t *head, *tail, *hand;
    uint64_t epoch;
    uint64_t clear_epoch;
    uint64_t *key_epoch;   /* [NEAR_EPOCH_SLOTS] */
    uint64_t *model_epoch; /* [nmodels], grown on demand */
    size_t nmodels;
    uint8_t *door;      /* [door_window * 4]: 32 bits a key */
    size_t door_window; /* keys remembered before a reset (a power of 2) */
    size_t door_count;  /* keys remembered since the last reset */
};

static uint64_t near_hash(const char *key, size_t len)
{
    return oc_hash(key, len); /* seeded: a client cannot aim keys at one chain */
}

size_t oc_near_charge(size_t klen, size_t vlen, int has_blob)
{
    size_t c = sizeof(near_entry_t) + klen + NEAR_MALLOC_OVERHEAD;
    if (has_blob)
        c += sizeof(oc_blob_t) + vlen + 1 + NEAR_MALLOC_OVERHEAD;
    return c;
}

static void gauges(oc_near_t *n)
{
    n->stats->near_entries = n->count;
    n->stats->near_bytes = n->bytes;
    n->stats->near_serving = n->fresh_until > 0 && n->limit > 0;
}

/* ---- the table and the queue ---------------------------------------------- */

static near_entry_t **bucket_of(oc_near_t *n, uint64_t h)
{
    return &n->buckets[h & (n->nbuckets - 1)];
}

static near_entry_t *find(oc_near_t *n, const char *key, size_t klen, uint64_t h)
{
    for (near_entry_t *e = *bucket_of(n, h); e; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

static void queue_unlink(oc_near_t *n, near_entry_t *e)
{
    if (n->hand == e)
        n->hand = e->prev; /* the hand moves towards the head */
    if (e->prev)
        e->prev->next = e->next;
    else
        n->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        n->tail = e->prev;
    e->prev = e->next = NULL;
}

static void entry_remove(oc_near_t *n, near_entry_t *e)
{
    near_entry_t **pp = bucket_of(n, e->hash);
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    queue_unlink(n, e);
    n->count--;
    n->bytes -= e->charge;
    oc_blob_unref(e->blob);
    free(e);
}

/* Move every entry to a table of nb buckets (a power of 2). Out of memory:
 * the old table stays (longer or emptier chains, still correct). */
static void rehash(oc_near_t *n, size_t nb)
{
    near_entry_t **b = nb ? calloc(nb, sizeof(*b)) : NULL;
    if (b == NULL)
        return;
    for (size_t i = 0; i < n->nbuckets; i++)
        for (near_entry_t *e = n->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    free(n->buckets);
    n->fixed = n->fixed - n->nbuckets * sizeof(*b) + nb * sizeof(*b);
    n->bytes = n->bytes - n->nbuckets * sizeof(*b) + nb * sizeof(*b);
    n->buckets = b;
    n->nbuckets = nb;
}

/* Double the buckets when the chains get long (load factor 2). */
static void maybe_grow(oc_near_t *n)
{
    if (n->nbuckets == 0 || n->nbuckets >= NEAR_MAX_BUCKETS || n->count < n->nbuckets * 2)
        return;
    rehash(n, n->nbuckets * 2);
}

size_t oc_near_buckets_for(size_t limit)
{
    /* at most 1/32 of the limit: room for limit / 128 entries at load
     * factor 2, more than a full cache of the smallest entries holds */
    size_t b = NEAR_MIN_BUCKETS;
    while (b < NEAR_MAX_BUCKETS && b * 2 * sizeof(near_entry_t *) <= limit / 32)
        b *= 2;
    return b;
}

/* SIEVE: from the hand (or the tail), clear visited bits until an
 * unvisited entry is found, and evict it. */
static void evict_one(oc_near_t *n)
{
    near_entry_t *e = n->hand ? n->hand : n->tail;
    while (e && e->visited) {
        e->visited = 0;
        e = e->prev ? e->prev : n->tail;
    }
    if (e == NULL)
        return;
    n->hand = e->prev;
    entry_remove(n, e);
    n->stats->near_evictions++;
}

static void evict_to(oc_near_t *n, size_t target)
{
    while (n->bytes > target && n->count > 0)
        evict_one(n);
}

/* ---- admission -------------------------------------------------------------- */

/* 1 if the doorkeeper saw this key before (since its last reset); else it
 * remembers it and says 0. */
static int door_pass(oc_near_t *n, uint64_t h)
{
    uint64_t mask = n->door_window * 32 - 1;
    uint64_t a = h & mask;
    uint64_t b = (h >> 32 | h << 32) & mask;
    int seen = (n->door[a >> 3] >> (a & 7) & 1) && (n->door[b >> 3] >> (b & 7) & 1);
    if (seen)
        return 1;
    /* Reset after door_window keys (about 6% of the bits set, so under 0.4%
     * of new keys pass by mistake): a key must be offered twice within the
     * last door_window keys offered. */
    if (++n->door_count > n->door_window) {
        memset(n->door, 0, n->door_window * 4);
        n->door_count = 1;
    }
    n->door[a >> 3] |= (uint8_t)(1u << (a & 7));
    n->door[b >> 3] |= (uint8_t)(1u << (b & 7));
    return 0;
}

static uint64_t model_epoch(const oc_near_t *n, uint32_t model)
{
    return model < n->nmodels ? n->model_epoch[model] : 0;
}

/* 1 if an invalidation of this key (or its model, or everything) was
 * applied after `since`. */
static int stale(const oc_near_t *n, uint64_t h, uint32_t model, uint64_t since)
{
    return n->key_epoch[h % NEAR_EPOCH_SLOTS] > since || model_epoch(n, model) > since ||
           n->clear_epoch > since;
}

size_t oc_near_door_window(size_t limit)
{
    size_t want = limit / NEAR_DOOR_BYTES_KEY, w = NEAR_DOOR_MIN_WINDOW;
    while (w < want && w < NEAR_DOOR_MAX_WINDOW)
        w *= 2;
    return w;
}

/* A doorkeeper for `limit` (empty: every key must be offered twice again);
 * its bytes count in the fixed part. A smaller one is made in place (so it
 * cannot fail); -1 if out of memory for a larger one (the old one kept). */
static int door_size(oc_near_t *n, size_t limit)
{
    size_t w = oc_near_door_window(limit);
    if (n->door && w == n->door_window)
        return 0;
    size_t old = n->door ? n->door_window * 4 : 0;
    uint8_t *d;
    if (n->door && w * 4 < old) {
        d = realloc(n->door, w * 4);
        if (d == NULL) /* cannot happen when shrinking; keep the block */
            d = n->door;
        memset(d, 0, w * 4);
    } else {
        if ((d = calloc(w * 4, 1)) == NULL)
            return -1;
        free(n->door);
    }
    n->door = d;
    n->door_window = w;
    n->door_count = 0;
    n->fixed = n->fixed - old + w * 4;
    n->bytes = n->bytes - old + w * 4;
    return 0;
}

/* ---- the API -------------------------------------------------------------- */

oc_near_t *oc_near_new(size_t limit, oc_stats_t *stats)
{
    oc_near_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    n->stats = stats;
    n->limit = limit;
    n->nbuckets = NEAR_MIN_BUCKETS;
    n->buckets = calloc(n->nbuckets, sizeof(*n->buckets));
    n->key_epoch = calloc(NEAR_EPOCH_SLOTS, sizeof(*n->key_epoch));
    n->fixed = sizeof(*n) + n->nbuckets * sizeof(*n->buckets) +
               NEAR_EPOCH_SLOTS * sizeof(*n->key_epoch);
    n->bytes = n->fixed;
    if (n->buckets == NULL || n->key_epoch == NULL || door_size(n, limit) != 0) {
        oc_near_free(n);
        return NULL;
    }
    gauges(n);
    return n;
}

void oc_near_free(oc_near_t *n)
{
    if (n == NULL)
        return;
    while (n->head)
        entry_remove(n, n->head);
    free(n->buckets);
    free(n->key_epoch);
    free(n->model_epoch);
    free(n->door);
    free(n);
}

void oc_near_clear(oc_near_t *n)
{
    n->clear_epoch = ++n->epoch;
    while (n->head)
        entry_remove(n, n->head);
    n->hand = NULL;
    gauges(n);
}

void oc_near_set_limit(oc_near_t *n, size_t limit)
{
    n->limit = limit;
    (void)door_size(n, limit); /* out of memory: the old window stays */
    /* The buckets only grow with the entries; a table grown under a larger
     * limit would keep its bytes over a smaller one even with no entry
     * left (and every put would then evict everything). */
    size_t nb = oc_near_buckets_for(limit);
    if (n->nbuckets > nb)
        rehash(n, nb);
    if (limit == 0) {
        oc_near_clear(n);
    } else {
        /* what oc_near_put would refuse now (over 1/64 of the limit) goes */
        for (near_entry_t *e = n->head, *next; e; e = next) {
            next = e->next;
            if (e->charge > limit / 64)
                entry_remove(n, e);
        }
        evict_to(n, limit);
    }
    gauges(n);
}

void oc_near_fresh_until(oc_near_t *n, double until)
{
    if (until <= 0 && n->fresh_until > 0) {
        /* The feed lost its proof (its connection, a poll that found it
         * lagging): a flush as much as a proof that ran out in a get. */
        if (n->count > 0)
            n->stats->near_flushes++;
        oc_near_clear(n);
    }
    n->fresh_until = until;
    gauges(n);
}

void oc_near_serve(oc_near_t *n, int on)
{
    oc_near_fresh_until(n, on ? 1e300 : 0);
}

/* Fresh at `now`? When freshness ran out, drop everything once. */
int oc_near_serving(oc_near_t *n, double now)
{
    if (n->limit == 0 || n->fresh_until <= 0)
        return 0;
    if (now < n->fresh_until)
        return 1;
    n->fresh_until = 0;
    if (n->count > 0) {
        oc_near_clear(n);
        n->stats->near_flushes++;
    }
    gauges(n);
    return 0;
}

uint64_t oc_near_epoch(const oc_near_t *n)
{
    return n->epoch;
}

/* A lookup of a serving, non-empty near-cache, counted. */
static oc_near_found_t lookup(oc_near_t *n, const char *key, size_t klen, uint64_t h,
                              double now, oc_blob_t **blob)
{
    near_entry_t *e = find(n, key, klen, h);
    if (e && e->expires <= now) {
        entry_remove(n, e);
        n->stats->near_expired++;
        gauges(n);
        e = NULL;
    }
    if (e == NULL) {
        n->stats->near_misses++;
        return OC_NEAR_MISS;
    }
    e->visited = 1;
    n->stats->near_hits++;
    *blob = e->blob;
    return e->blob ? OC_NEAR_OBJECT : OC_NEAR_ABSENT;
}

oc_near_found_t oc_near_get(oc_near_t *n, const char *key, size_t klen, double now,
                            oc_blob_t **blob)
{
    *blob = NULL;
    if (!oc_near_serving(n, now))
        return OC_NEAR_MISS; /* not counted: the near-cache is off */
    if (n->count == 0) {
        n->stats->near_misses++;
        return OC_NEAR_MISS;
    }
    return lookup(n, key, klen, near_hash(key, klen), now, blob);
}

void oc_near_get_many(oc_near_t *n, oc_near_ask_t *asks, size_t count, double now)
{
    for (size_t i = 0; i < count; i++) {
        asks[i].found = OC_NEAR_MISS;
        asks[i].blob = NULL;
    }
    if (count == 0 || !oc_near_serving(n, now))
        return; /* not counted: the near-cache is off */
    if (n->count == 0) {
        n->stats->near_misses += count;
        return;
    }
    /* A table of many entries is far larger than the CPU's caches, so each
     * lookup is a chain of cache misses (bucket, entry, blob), waited for
     * one after the other. Issued for a group of keys at once, they
     * overlap: the buckets, then the first entry of each chain, then the
     * lookups proper (which read the bucket again: a lookup may free an
     * expired entry that another key's prefetch pointed at). */
    uint64_t h[OC_NEAR_GET_MANY];
    for (size_t from = 0; from < count; from += OC_NEAR_GET_MANY) {
        size_t k = count - from < OC_NEAR_GET_MANY ? count - from : OC_NEAR_GET_MANY;
        oc_near_ask_t *a = asks + from;
        for (size_t i = 0; i < k; i++) {
            h[i] = near_hash(a[i].key, a[i].klen);
            __builtin_prefetch(bucket_of(n, h[i]));
        }
        for (size_t i = 0; i < k; i++) {
            near_entry_t *e = *bucket_of(n, h[i]);
            if (e != NULL) {
                __builtin_prefetch(e);
                __builtin_prefetch((const char *)e + 64); /* the key, past the header */
            }
        }
        for (size_t i = 0; i < k; i++) {
            a[i].found = lookup(n, a[i].key, a[i].klen, h[i], now, &a[i].blob);
            if (a[i].blob)
                __builtin_prefetch(a[i].blob, 1); /* the caller takes a reference */
        }
    }
}

static int model_room(oc_near_t *n, uint32_t model)
{
    if (model < n->nmodels)
        return 1;
    if (model >= NEAR_MODELS_MAX)
        return 0;
    size_t nm = (size_t)model + 1;
    uint64_t *me = realloc(n->model_epoch, nm * sizeof(*me));
    if (me == NULL)
        return 0;
    memset(me + n->nmodels, 0, (nm - n->nmodels) * sizeof(*me));
    n->model_epoch = me;
    n->nmodels = nm;
    return 1;
}

oc_near_put_t oc_near_put(oc_near_t *n, const char *key, size_t klen, uint32_t model,
                          const oc_near_val_t *v, double ttl, uint64_t since, double now)
{
    if (!oc_near_serving(n, now) || ttl <= 0 || klen > UINT16_MAX)
        return OC_NEAR_OFF;
    uint64_t h = near_hash(key, klen);
    if (stale(n, h, model, since)) {
        n->stats->near_refused_stale++;
        return OC_NEAR_STALE;
    }
    size_t vlen = v->absent ? 0 : v->blob ? v->blob->len : v->len;
    size_t charge = oc_near_charge(klen, vlen, !v->absent);
    if (charge > n->limit / 64)
        return OC_NEAR_TOO_BIG;
    near_entry_t *old = find(n, key, klen, h);
    if (old == NULL && !door_pass(n, h)) {
        n->stats->near_door_waits++;
        return OC_NEAR_DOOR;
    }
    if (!model_room(n, model))
        return OC_NEAR_NOMEM;
    oc_blob_t *blob = v->absent ? NULL
                      : v->blob ? oc_blob_ref(v->blob)
                                : oc_blob_new(v->data, v->len);
    near_entry_t *e = malloc(sizeof(*e) + klen);
    if (e == NULL || (!v->absent && blob == NULL)) {
        free(e);
        oc_blob_unref(blob);
        return OC_NEAR_NOMEM;
    }
    if (old)
        entry_remove(n, old);
    *e = (near_entry_t){.blob = blob,
                        .expires = now + ttl,
                        .hash = h,
                        .charge = charge,
                        .model = model,
                        .klen = (uint16_t)klen};
    memcpy(e->key, key, klen);
    near_entry_t **b = bucket_of(n, h);
    e->hnext = *b;
    *b = e;
    e->next = n->head; /* newest at the head */
    if (n->head)
        n->head->prev = e;
    n->head = e;
    if (n->tail == NULL)
        n->tail = e;
    n->count++;
    n->bytes += charge;
    n->stats->near_stored++;
    evict_to(n, n->limit);
    maybe_grow(n);
    evict_to(n, n->limit); /* the table may have grown */
    gauges(n);
    return OC_NEAR_STORED;
}

void oc_near_invalidate(oc_near_t *n, const char *key, size_t klen)
{
    uint64_t h = near_hash(key, klen);
    n->key_epoch[h % NEAR_EPOCH_SLOTS] = ++n->epoch;
    n->stats->near_invalidations++;
    near_entry_t *e = n->count ? find(n, key, klen, h) : NULL;
    if (e) {
        entry_remove(n, e);
        gauges(n);
    }
}

void oc_near_invalidate_model(oc_near_t *n, uint32_t model)
{
    uint64_t ep = ++n->epoch;
    if (model_room(n, model))
        n->model_epoch[model] = ep;
    else
        n->clear_epoch = ep; /* cannot record it for the model: for everything */
    n->stats->near_invalidations++;
    for (near_entry_t *e = n->head, *next; e; e = next) {
        next = e->next;
        if (e->model == model || n->clear_epoch == ep)
            entry_remove(n, e);
    }
    gauges(n);
}

#include "oc_map.h"

#include <stdlib.h>
#include <string.h>

typedef struct oc_map_slot {
    const char *key; /* NULL = empty */
    size_t len;
    uint64_t hash;
    void *val;
} oc_map_slot_t;

struct oc_map {
    oc_map_slot_t *slots;
    size_t cap; /* a power of two */
    size_t count;
};

/* The seed every oc_hash starts from: drawn at start (oc_hash_seed), so
 * that a client cannot work out offline which keys share a bucket of the
 * near-cache or a request's map (hash flooding). A fixed value until then
 * (unit tests). */
static uint64_t hash_seed = 0x6a09e667f3bcc909ull;

void oc_hash_seed(uint64_t seed)
{
    hash_seed = seed;
}

/* A 64-bit finaliser (xor-shift, multiply, twice): every input bit moves
 * about half the output bits, which the near-cache's bucket index (low
 * bits) and doorkeeper (two 32-bit halves) rely on. */
static inline uint64_t avalanche(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* The last n (< 8) bytes at s as a little-endian word, high bytes zero:
 * memcpy(&w, s, n) into w = 0, which compiles to a byte loop (a third of
 * a hash's instructions). On a little-endian machine the same word comes
 * from at most three loads: overlapping ones, or, when the whole key has
 * eight bytes or more (whole), the eight that end at s + n, shifted. */
static inline uint64_t tail_word(const unsigned char *s, size_t n, int whole)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t w;
    uint32_t lo, hi;
    if (n == 0)
        return 0;
    if (whole) {
        memcpy(&w, s + n - 8, 8);
        return w >> (8 * (8 - n));
    }
    if (n >= 4) { /* bytes n-4..3 are in both, the same bytes at the same places */
        memcpy(&lo, s, 4);
        memcpy(&hi, s + n - 4, 4);
        return (uint64_t)lo | (uint64_t)hi << (8 * (n - 4));
    }
    return (uint64_t)s[0] | (uint64_t)s[n / 2] << (8 * (n / 2)) |
           (uint64_t)s[n - 1] << (8 * (n - 1));
#else
    (void)whole;
    uint64_t w = 0;
    memcpy(&w, s, n);
    return w;
#endif
}

/* Eight bytes a step (cache keys are 20-40 bytes: FNV-1a's byte a step
 * was a tenth of a near-cache hit's instructions, hashed twice a key). */
uint64_t oc_hash(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint64_t h = hash_seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ull);
    int whole = len >= 8;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        len -= 8;
    }
    h = (h ^ tail_word(s, len, whole)) * 0x94d049bb133111ebull;
    return avalanche(h);
}

oc_map_t *oc_map_new(size_t hint)
{
    oc_map_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->cap = 16;
    while (m->cap < hint * 2)
        m->cap *= 2;
    m->slots = calloc(m->cap, sizeof(*m->slots));
    if (m->slots == NULL) {
        free(m);
        return NULL;
    }
    return m;
}

void oc_map_free(oc_map_t *m)
{
    if (m == NULL)
        return;
    free(m->slots);
    free(m);
}

static size_t find(const oc_map_t *m, const char *key, size_t len, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const oc_map_slot_t *s = &m->slots[i];
        if (s->key == NULL ||
            (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0))
            return i;
    }
}

void *oc_map_get(const oc_map_t *m, const char *key, size_t len)
{
    const oc_map_slot_t *s = &m->slots[find(m, key, len, oc_hash(key, len))];
    return s->key ? s->val : NULL;
}

static oc_status_t grow(oc_map_t *m)
{
    oc_map_slot_t *old = m->slots;
    size_t oldcap = m->cap;
    oc_map_slot_t *slots = calloc(oldcap * 2, sizeof(*slots));
    if (slots == NULL)
        return OC_ENOMEM;
    m->slots = slots;
    m->cap = oldcap * 2;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key)
            m->slots[find(m, old[i].key, old[i].len, old[i].hash)] = old[i];
    free(old);
    return OC_OK;
}

oc_status_t oc_map_put(oc_map_t *m, const char *key, size_t len, void *val)
{
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != OC_OK)
        return OC_ENOMEM;
    uint64_t h = oc_hash(key, len);
    oc_map_slot_t *s = &m->slots[find(m, key, len, h)];
    if (s->key == NULL)
        m->count++;
    *s = (oc_map_slot_t){key, len, h, val};
    return OC_OK;
}

oc_status_t oc_map_add(oc_map_t *m, const char *key, size_t len, void *val, void **had)
{
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != OC_OK)
        return OC_ENOMEM;
    uint64_t h = oc_hash(key, len);
    oc_map_slot_t *s = &m->slots[find(m, key, len, h)];
    *had = s->key ? s->val : NULL;
    if (s->key == NULL) {
        m->count++;
        *s = (oc_map_slot_t){key, len, h, val};
    }
    return OC_OK;
}

void *oc_map_del(oc_map_t *m, const char *key, size_t len)
{
    size_t mask = m->cap - 1;
    size_t i = find(m, key, len, oc_hash(key, len));
    if (m->slots[i].key == NULL)
        return NULL;
    void *val = m->slots[i].val;
    /* Backward shift: pull later entries of the cluster into the hole when
     * the hole lies between their home slot and where they sit. */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->count--;
    return val;
}

size_t oc_map_count(const oc_map_t *m)
{
    return m->count;
}

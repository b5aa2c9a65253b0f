#include "oc_place.h"

#include <libmemcached/memcached.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_log.h"
#include "oc_md5.h"

#define PLACE_SLOTS   4096 /* remembered key -> server placements */
#define PLACE_KEY_MAX 62   /* longer keys are always hashed */

/* libmemcached 1.0's constants for weighted ketama: 160 points a server
 * (scaled by its share of the weight), 4 of them from each MD5, and the
 * port left out of a point's name when it is memcached's default. */
#define KETAMA_POINTS       160
#define KETAMA_DEFAULT_PORT 11211
#define CHECK_KEYS          2000 /* keys placed both ways before ours is used */

typedef struct place_point {
    uint32_t value;  /* where on the circle */
    uint32_t server; /* the caller's index */
} place_point_t;

typedef struct place_slot {
    uint8_t len;    /* 0: empty */
    uint8_t server; /* index into the caller's list */
    char key[PLACE_KEY_MAX];
} place_slot_t;

struct oc_place {
    memcached_st *hash; /* ketama over the servers; never connects */
    size_t n;           /* servers placed on (those not skipped) */
    uint32_t only;      /* n == 1: the caller's index of that server */
    uint32_t *by_hash;  /* libmemcached's server index -> the caller's */
    place_slot_t *slots;
    place_point_t *points; /* our own continuum, sorted; NULL: ask libmemcached */
    size_t npoints;
};

static memcached_st *make_hash(const oc_mc_server_conf_t *servers, size_t n, char *err)
{
    memcached_st *memc = memcached_create(NULL);
    if (memc == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    /* What places keys: every libmemcached client of the pool must set the
     * same (bench/lg_mc.c does). KETAMA_WEIGHTED also makes the key hash MD5. */
    if (memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                               MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA) !=
            MEMCACHED_SUCCESS ||
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) !=
            MEMCACHED_SUCCESS) {
        oc_fail(err, OC_ECACHE, "memcached: cannot set ketama");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        memcached_return_t rc = memcached_server_add_with_weight(
            memc, servers[i].host, servers[i].port, servers[i].weight);
        if (rc != MEMCACHED_SUCCESS) {
            oc_fail(err, OC_ECACHE, "memcached server %s:%u: %s", servers[i].host,
                    (unsigned)servers[i].port, memcached_strerror(memc, rc));
            goto fail;
        }
    }
    return memc;
fail:
    memcached_free(memc);
    return NULL;
}

/* libmemcached's index of each server -> ours (they should agree); orig
 * maps an index of `servers` to the caller's whole list. */
static uint32_t *make_index(memcached_st *memc, const oc_mc_server_conf_t *servers,
                            size_t n, const uint32_t *orig, char *err)
{
    uint32_t *map = calloc(n ? n : 1, sizeof(*map));
    if (map == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    for (uint32_t i = 0; i < n; i++) {
        const memcached_instance_st *inst =
            memcached_server_instance_by_position(memc, i);
        size_t j = 0;
        while (inst && j < n &&
               !(strcmp(memcached_server_name(inst), servers[j].host) == 0 &&
                 memcached_server_port(inst) == servers[j].port))
            j++;
        if (inst == NULL || j == n) {
            free(map);
            return oc_fail(err, OC_ECACHE, "memcached: server list out of step"), NULL;
        }
        map[i] = orig ? orig[j] : (uint32_t)j;
    }
    return map;
}

static int point_cmp(const void *a, const void *b)
{
    const place_point_t *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    return x->server < y->server ? -1 : x->server > y->server;
}

/* libmemcached's share of the 160 points of a server of weight w out of
 * total over n servers, computed in the same float steps (their rounding
 * decides how many points a server gets). */
uint32_t oc_place_points(uint32_t w, uint64_t total, size_t n)
{
    float pct = (float)w / (float)total;
    float f = pct * (float)KETAMA_POINTS;
    f = f / 4.0f;
    f = f * (float)n;
    float g = (float)((double)f + 0.0000000001);
    return (uint32_t)g * 4; /* g >= 0: truncation is their floor() */
}

/* The continuum libmemcached builds for these servers with weighted ketama:
 * for each server, its points / 4 names "host:port-i" ("host-i" on the
 * default port), each MD5'd into 4 points. */
static int points_make(oc_place_t *p, const oc_mc_server_conf_t *servers, size_t n,
                       const uint32_t *orig)
{
    uint64_t total = 0;
    size_t cap = 0;
    for (size_t i = 0; i < n; i++)
        total += servers[i].weight;
    if (total == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        cap += oc_place_points(servers[i].weight, total, n);
    if (cap == 0 || (p->points = malloc(cap * sizeof(*p->points))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t per = oc_place_points(servers[i].weight, total, n);
        for (uint32_t j = 0; j < per / 4; j++) {
            char name[512];
            int len = servers[i].port == KETAMA_DEFAULT_PORT
                          ? snprintf(name, sizeof(name), "%s-%u", servers[i].host, j)
                          : snprintf(name, sizeof(name), "%s:%u-%u", servers[i].host,
                                     (unsigned)servers[i].port, j);
            if (len < 0 || (size_t)len >= sizeof(name))
                return -1;
            uint8_t d[OC_MD5_LEN];
            oc_md5(name, (size_t)len, d);
            for (unsigned x = 0; x < 4; x++)
                p->points[p->npoints++] =
                    (place_point_t){oc_md5_word(d, x), orig ? orig[i] : (uint32_t)i};
        }
    }
    qsort(p->points, p->npoints, sizeof(*p->points), point_cmp);
    return 0;
}

static void points_drop(oc_place_t *p)
{
    free(p->points);
    p->points = NULL;
    p->npoints = 0;
}

/* The server of the first point at or after h (the first point past the
 * last one). Branch-free: a key's hash is random, so each step of a
 * branching search guessed wrong half the time (perf: 5% of a memcached
 * hit's CPU in the search alone, a continuum that fits in L1); here each
 * step is a conditional move. Invariant: the answer is in [base, base + len]. */
static size_t point_at(const oc_place_t *p, uint32_t h)
{
    const place_point_t *base = p->points;
    size_t len = p->npoints; /* >= 1: a continuum has points */
    while (len > 1) {
        size_t half = len / 2;
        base = base[half].value < h ? base + half : base;
        len -= half;
    }
    size_t i = (size_t)(base - p->points) + (base->value < h);
    return p->points[i == p->npoints ? 0 : i].server;
}

static size_t points_find(const oc_place_t *p, const char *key, size_t klen)
{
    uint8_t d[OC_MD5_LEN];
    oc_md5(key, klen, d);
    return point_at(p, oc_md5_word(d, 0));
}

static size_t libmemcached_find(const oc_place_t *p, const char *key, size_t klen)
{
    uint32_t i = memcached_generate_hash(p->hash, key, klen);
    return i < p->n ? p->by_hash[i] : 0;
}

/* Check key k of points_check into key (251 bytes); its length. */
static size_t check_key(uint32_t k, char *key)
{
    int len = snprintf(key, 251, "oc:Check~%u:%u", k % 7, k * 2654435761u);
    size_t want = (size_t)len + (k % 200);
    if (want > 250)
        want = 250;
    for (size_t i = (size_t)len; i < want; i++)
        key[i] = (char)('a' + (i * 7 + k) % 26);
    return want;
}

/* Ours is used only if it places CHECK_KEYS keys (of every length up to
 * memcached's limit, so MD5's one- and two-block paths are both asked)
 * exactly where libmemcached does, one by one and side by side
 * (oc_place_servers): a client of the pool must find what we store.
 * Otherwise every key is placed by libmemcached, as before. */
static void points_check(oc_place_t *p)
{
    char keys[OC_PLACE_BATCH][251];
    const char *kp[OC_PLACE_BATCH];
    size_t lens[OC_PLACE_BATCH], batch[OC_PLACE_BATCH];
    for (uint32_t k0 = 0; k0 < CHECK_KEYS; k0 += OC_PLACE_BATCH) {
        size_t m = CHECK_KEYS - k0 < OC_PLACE_BATCH ? CHECK_KEYS - k0 : OC_PLACE_BATCH;
        for (size_t i = 0; i < m; i++) {
            lens[i] = check_key(k0 + (uint32_t)i, keys[i]);
            kp[i] = keys[i];
        }
        oc_place_servers(p, m, kp, lens, batch);
        for (size_t i = 0; i < m; i++) {
            size_t want = libmemcached_find(p, keys[i], lens[i]);
            if (points_find(p, keys[i], lens[i]) == want && batch[i] == want)
                continue;
            oc_log_warn("event=place_fallback reason=\"objcached's ketama disagrees with "
                        "libmemcached's on key %.*s: keys are placed by libmemcached\"",
                        (int)lens[i], keys[i]);
            points_drop(p);
            return;
        }
    }
}

/* Ketama over servers[0..n), answering orig[i] (NULL: i) for servers[i]. */
static oc_place_t *place_make(const oc_mc_server_conf_t *servers, size_t n,
                              const uint32_t *orig, char *err)
{
    oc_place_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    p->n = n;
    p->only = n == 1 && orig ? orig[0] : 0;
    if (n > 1) {
        p->slots = calloc(PLACE_SLOTS, sizeof(*p->slots));
        if (p->slots == NULL) {
            oc_fail(err, OC_ENOMEM, "out of memory");
            goto fail;
        }
        if ((p->hash = make_hash(servers, n, err)) == NULL ||
            (p->by_hash = make_index(p->hash, servers, n, orig, err)) == NULL)
            goto fail;
        if (points_make(p, servers, n, orig) == 0) {
            points_check(p);
            if (p->points) { /* the cache is for libmemcached's slower path */
                free(p->slots);
                p->slots = NULL;
            }
        } else {
            points_drop(p); /* libmemcached places the keys */
        }
    }
    return p;
fail:
    oc_place_free(p);
    return NULL;
}

oc_place_t *oc_place_new(const oc_mc_server_conf_t *servers, size_t n, char *err)
{
    return place_make(servers, n, NULL, err);
}

oc_place_t *oc_place_new_except(const oc_mc_server_conf_t *servers, size_t n,
                                const unsigned char *skip, char *err)
{
    oc_mc_server_conf_t *left = malloc((n ? n : 1) * sizeof(*left));
    uint32_t *orig = malloc((n ? n : 1) * sizeof(*orig));
    oc_place_t *p = NULL;
    size_t k = 0;
    if (left == NULL || orig == NULL) {
        oc_fail(err, OC_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (!skip[i]) {
            left[k] = servers[i]; /* the host string is borrowed */
            orig[k++] = (uint32_t)i;
        }
    if (k == 0)
        oc_fail(err, OC_ECACHE, "memcached: no server left to place keys on");
    else
        p = place_make(left, k, orig, err);
done:
    free(left);
    free(orig);
    return p;
}

void oc_place_free(oc_place_t *p)
{
    if (p == NULL)
        return;
    if (p->hash)
        memcached_free(p->hash);
    free(p->by_hash);
    free(p->slots);
    free(p->points);
    free(p);
}

static uint64_t slot_hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return h;
}

size_t oc_place_server(oc_place_t *p, const char *key, size_t klen)
{
    if (p->n <= 1)
        return p->only;
    if (p->points)
        return points_find(p, key, klen);
    place_slot_t *slot = NULL;
    if (klen <= PLACE_KEY_MAX && p->n <= 256) {
        slot = &p->slots[slot_hash(key, klen) % PLACE_SLOTS];
        if (slot->len == klen && memcmp(slot->key, key, klen) == 0)
            return slot->server;
    }
    size_t s = libmemcached_find(p, key, klen);
    if (slot) {
        slot->len = (uint8_t)klen;
        slot->server = (uint8_t)s;
        memcpy(slot->key, key, klen);
    }
    return s;
}

void oc_place_servers(oc_place_t *p, size_t n, const char *const *keys,
                      const size_t *klens, size_t *out)
{
    if (p->n <= 1 || p->points == NULL) {
        for (size_t i = 0; i < n; i++)
            out[i] = oc_place_server(p, keys[i], klens[i]);
        return;
    }
    uint32_t h[OC_PLACE_BATCH];
    for (size_t base = 0; base < n; base += OC_PLACE_BATCH) {
        size_t m = n - base < OC_PLACE_BATCH ? n - base : OC_PLACE_BATCH;
        oc_md5_word0_many(m, keys + base, klens + base, h);
        for (size_t i = 0; i < m; i++)
            out[base + i] = point_at(p, h[i]);
    }
}

int oc_place_own(const oc_place_t *p)
{
    return p != NULL && (p->n <= 1 || p->points != NULL); /* one server: no hashing */
}

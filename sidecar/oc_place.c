#include "oc_place.h"

#include <libmemcached/memcached.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PLACE_SLOTS   4096 /* remembered key -> server placements */
#define PLACE_KEY_MAX 62   /* longer keys are always hashed */

typedef struct place_slot {
    uint8_t len;    /* 0: empty */
    uint8_t server; /* index into the caller's list */
    char key[PLACE_KEY_MAX];
} place_slot_t;

struct oc_place {
    memcached_st *hash; /* ketama over the servers; never connects */
    size_t n;
    uint32_t *by_hash; /* libmemcached's server index -> the caller's */
    place_slot_t *slots;
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

/* libmemcached's index of each server -> ours (they should agree). */
static uint32_t *make_index(memcached_st *memc, const oc_mc_server_conf_t *servers,
                            size_t n, char *err)
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
        map[i] = (uint32_t)j;
    }
    return map;
}

oc_place_t *oc_place_new(const oc_mc_server_conf_t *servers, size_t n, char *err)
{
    oc_place_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    p->n = n;
    if (n > 1) {
        p->slots = calloc(PLACE_SLOTS, sizeof(*p->slots));
        if (p->slots == NULL) {
            oc_fail(err, OC_ENOMEM, "out of memory");
            goto fail;
        }
        if ((p->hash = make_hash(servers, n, err)) == NULL ||
            (p->by_hash = make_index(p->hash, servers, n, err)) == NULL)
            goto fail;
    }
    return p;
fail:
    oc_place_free(p);
    return NULL;
}

void oc_place_free(oc_place_t *p)
{
    if (p == NULL)
        return;
    if (p->hash)
        memcached_free(p->hash);
    free(p->by_hash);
    free(p->slots);
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
        return 0;
    place_slot_t *slot = NULL;
    if (klen <= PLACE_KEY_MAX && p->n <= 256) {
        slot = &p->slots[slot_hash(key, klen) % PLACE_SLOTS];
        if (slot->len == klen && memcmp(slot->key, key, klen) == 0)
            return slot->server;
    }
    uint32_t i = memcached_generate_hash(p->hash, key, klen);
    size_t s = i < p->n ? p->by_hash[i] : 0;
    if (slot) {
        slot->len = (uint8_t)klen;
        slot->server = (uint8_t)s;
        memcpy(slot->key, key, klen);
    }
    return s;
}

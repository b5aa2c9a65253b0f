/*
 * oc_place: which memcached server a key lives on. Keys are placed by
 * libmemcached's weighted ketama (memcached_generate_hash over the same
 * server list and behaviours every libmemcached client of the pool uses, so
 * an app that reads the pool directly finds the same keys), and adding a
 * server moves few keys. libmemcached does no I/O here: it only hashes.
 *
 * objcached computes the same continuum itself (oc_place_points, oc_md5)
 * and places keys with one MD5 and a binary search, about a third of
 * libmemcached's instructions (a batch of keys, oc_place_servers: their
 * MD5s side by side, a third again). It is used only after it has placed
 * 2,000 keys exactly where libmemcached does, one by one and in batches,
 * checked when each oc_place_t is made; otherwise (a libmemcached that builds its
 * continuum differently) keys are placed by libmemcached, with a small exact cache of
 * recent placements, and a warning is logged (event=place_fallback).
 *
 * A placement over part of a list (oc_place_new_except) is ketama over the
 * servers left, exactly as a libmemcached client given only those would
 * place keys: it is where the keys of a server that is down go when no
 * gutter pool is configured, and every sidecar that leaves the same
 * servers out agrees on it.
 *
 * Contract: an oc_place_t is immutable once made (a new server list makes
 * a new one); the cache is its own. Loop thread only.
 */
#ifndef OC_PLACE_H
#define OC_PLACE_H

#include <stddef.h>
#include <stdint.h>

#include "oc_conf.h"

typedef struct oc_place oc_place_t;

/* NULL (and err) if libmemcached refuses a server; n may be 0 (every
 * oc_place_server then answers 0, and the caller has no server). */
oc_place_t *oc_place_new(const oc_mc_server_conf_t *servers, size_t n, char *err);
void oc_place_free(oc_place_t *p);

/* Ketama over the servers of the list whose skip[i] is 0 (skip has n
 * entries). oc_place_server still answers indexes into the whole list.
 * NULL (and err) if every server is skipped, or as oc_place_new. */
oc_place_t *oc_place_new_except(const oc_mc_server_conf_t *servers, size_t n,
                                const unsigned char *skip, char *err);

/* The index, in the list given to oc_place_new, of the key's server. */
size_t oc_place_server(oc_place_t *p, const char *key, size_t klen);

/* out[i] = oc_place_server(p, keys[i], klens[i]) for i < n. Why: on
 * objcached's own continuum the keys' MD5s are computed side by side
 * (oc_md5_word0_many), several times cheaper than one at a time; a get
 * places all its keys at once. */
#define OC_PLACE_BATCH 64
void oc_place_servers(oc_place_t *p, size_t n, const char *const *keys,
                      const size_t *klens, size_t *out);

/* How many points libmemcached 1.0's weighted ketama gives a server of
 * weight w out of a total weight over n servers (a multiple of 4). */
uint32_t oc_place_points(uint32_t w, uint64_t total, size_t n);

/* 1 if keys are placed by objcached's own continuum (or there is at most
 * one server, so nothing to place), 0 if by libmemcached. */
int oc_place_own(const oc_place_t *p);

#endif

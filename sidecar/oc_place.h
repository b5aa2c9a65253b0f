/*
 * oc_place: which memcached server a key lives on. Keys are placed by
 * libmemcached's weighted ketama (memcached_generate_hash over the same
 * server list and behaviours every libmemcached client of the pool uses, so
 * an app that reads the pool directly finds the same keys), and adding a
 * server moves few keys. libmemcached does no I/O here: it only hashes.
 *
 * A key's placement is remembered in a small exact cache: ketama hashes
 * every key with MD5 (about 1,200 instructions), and one key is placed
 * several times in a row (its get, lease, fill).
 *
 * Contract: an oc_place_t is immutable once made (a new server list makes
 * a new one); the cache is its own. Loop thread only.
 */
#ifndef OC_PLACE_H
#define OC_PLACE_H

#include <stddef.h>

#include "oc_conf.h"

typedef struct oc_place oc_place_t;

/* NULL (and err) if libmemcached refuses a server; n may be 0 (every
 * oc_place_server then answers 0, and the caller has no server). */
oc_place_t *oc_place_new(const oc_mc_server_conf_t *servers, size_t n, char *err);
void oc_place_free(oc_place_t *p);

/* The index, in the list given to oc_place_new, of the key's server. */
size_t oc_place_server(oc_place_t *p, const char *key, size_t klen);

#endif

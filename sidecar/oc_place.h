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

#endif

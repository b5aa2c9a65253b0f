/*
 * oc_failover: where the keys of a memcached server that is out of service
 * go, so that every sidecar sends a given key to the same place and the
 * leases and write-backs there protect PostgreSQL as the pool does.
 *
 * With a gutter pool the answer is ketama over the gutter servers; without
 * one, ketama over the pool without the server that is down. In both cases
 * a candidate that is itself out of service is left out too and the key
 * placed again over what is left, one server at a time (the chain): a
 * key's failover depends only on the key and on the servers of its chain,
 * not on the state of unrelated servers, so two sidecars that agree a
 * server is down agree on where its keys are even while a third server
 * flaps. With equal weights, leaving a server out moves only its own keys.
 *
 * Ownership: oc_failover_new copies nothing it is given but keeps pointers
 * to both server lists, which must outlive it (they are the configuration
 * in force; oc_mc makes a new one when the lists change). It allocates the
 * placements of the subsets it is asked about, at most OC_FAILOVER_PLACES
 * of them, reused while the same servers are left out. Loop thread only.
 */
#ifndef OC_FAILOVER_H
#define OC_FAILOVER_H

#include <stddef.h>

#include "oc_conf.h"

#define OC_FAILOVER_NONE   ((size_t)-1)
#define OC_FAILOVER_PLACES 8 /* subset placements kept */

typedef struct oc_failover oc_failover_t;

/* Is server idx of the gutter (gutter = 1) or of the pool in service? */
typedef int (*oc_failover_up_fn)(void *arg, int gutter, size_t idx);

oc_failover_t *oc_failover_new(const oc_mc_server_conf_t *pool, size_t npool,
                               const oc_mc_server_conf_t *gutter, size_t ngutter,
                               char *err);
void oc_failover_free(oc_failover_t *f);

/* Where `key`, whose pool server `primary` is out of service, goes: the
 * index of a server in service, in the gutter (*gutter = 1) or the pool
 * (*gutter = 0); OC_FAILOVER_NONE if no server is left (or out of memory
 * for a new placement). */
size_t oc_failover_target(oc_failover_t *f, const char *key, size_t klen, size_t primary,
                          oc_failover_up_fn up, void *arg, int *gutter);

#endif

/*
 * oc_map: a hash map from byte strings to pointers (open addressing, linear
 * probing, backward-shift deletion, so no tombstones pile up).
 *
 * Contract: the map does not copy keys; the caller keeps each key's bytes
 * alive and unchanged while it is in the map (values usually own their key).
 * Not thread-safe: one owner thread. Values are never NULL.
 */
#ifndef OC_MAP_H
#define OC_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "oc_status.h"

typedef struct oc_map oc_map_t;

/* A seeded, not cryptographic, 64-bit hash of p[0..len), its bits well
 * mixed (any subset may index a table). oc_hash_seed sets the seed for
 * the whole process: once, at start, before any table is filled (every
 * hash kept in a table is of the seed it was made with). */
uint64_t oc_hash(const void *p, size_t len);
void oc_hash_seed(uint64_t seed);

oc_map_t *oc_map_new(size_t hint);
void oc_map_free(oc_map_t *m); /* frees the table, not keys or values */
void *oc_map_get(const oc_map_t *m, const char *key, size_t len);
/* OC_OK, or OC_ENOMEM; a key already present is replaced. */
oc_status_t oc_map_put(oc_map_t *m, const char *key, size_t len, void *val);

/* Insert key -> val unless key is there: *had is its value then (and
 * nothing changes), NULL if it was added. One hash for both, where a get
 * then a put would take two. OC_ENOMEM if the table could not grow. */
oc_status_t oc_map_add(oc_map_t *m, const char *key, size_t len, void *val, void **had);
/* Removes and returns the value, or NULL if absent. */
void *oc_map_del(oc_map_t *m, const char *key, size_t len);
size_t oc_map_count(const oc_map_t *m);

#endif

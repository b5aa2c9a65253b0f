/*
 * oc_entry: what objcached stores in memcached: how every kind of entry is
 * encoded (flags, TTL) and how whatever a read finds is classified. The
 * read path, the fills, the write path and the invalidation consumer all
 * go through here, so an entry means the same thing everywhere.
 *
 * An entry is a memcached item whose 32-bit flags say what it is:
 *
 *   bits 31..16  magic 0x6F63 ("oc"): an objcached entry
 *   bits 15..8   format version (1)
 *   bits  7..0   kind (oc_entry_kind_t)
 *
 * and whose value is the payload:
 *   OBJECT     the JSON text exactly as it is sent to clients (so a hit is
 *              served without decoding or copying into a new shape)
 *   MISSING    nothing: PostgreSQL had no row (short TTL)
 *   TOMBSTONE  a token unique to the write (oc_write), never read: the
 *              app deleted the object; reads answer "absent" without
 *              asking PostgreSQL, and no fill can replace it
 *   PUSHED     an object an app pushed over something it could not be
 *              ordered against (an empty key, a lease, another PUSHED
 *              entry): served as the object, but its version proves
 *              nothing to a later push and no near-cache keeps it, until
 *              the push check replaces it by PostgreSQL's row or confirms
 *              it as an OBJECT. (Sidecars before 2026-12-05 read it as a
 *              miss.)
 *   LEASE      written by objcached before 0.2 (a token naming the sidecar
 *              loading the key): still honoured as another's lease while
 *              old and new sidecars share a pool. Leases are now memcached's
 *              own empty items made by `mg ... N<ttl>` (flags 0, no value):
 *              the only state a fill may replace (by cas), so a write that
 *              overwrites or deletes it defeats a stale fill.
 * An entry of an unknown kind or version, or an item with other flags, is
 * treated as a miss.
 *
 * TTLs: every entry written gets its kind's TTL from the model, plus a
 * jitter of up to ttl_jitter_pct derived from the key (so keys written
 * together do not all expire together, and every sidecar gives one key the
 * same spread). memcached reads exptimes over 30 days as absolute times,
 * so TTLs are capped at 30 days.
 *
 * Contract: pure functions, no allocation.
 */
#ifndef OC_ENTRY_H
#define OC_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "oc_conf.h"
#include "oc_mc.h"

#define OC_ENTRY_MAGIC   0x6F63u
#define OC_ENTRY_VERSION 1u
#define OC_ENTRY_TTL_MAX 2592000u /* 30 days: memcached's relative limit */

typedef enum oc_entry_kind {
    OC_ENTRY_NONE = 0,      /* not an objcached entry (or not a known one) */
    OC_ENTRY_OBJECT = 1,    /* the row as JSON */
    OC_ENTRY_MISSING = 2,   /* PostgreSQL has no row with this id */
    OC_ENTRY_TOMBSTONE = 3, /* deleted by the app */
    OC_ENTRY_LEASE = 4,     /* an older sidecar's lease */
    OC_ENTRY_PUSHED = 5,    /* a pushed object not ordered or checked yet */
} oc_entry_kind_t;

/* What a read of one key found, as everything above memcached sees it. */
typedef enum oc_entry_class {
    OC_EC_OBJECT,     /* a cached object: serve it */
    OC_EC_ABSENT,     /* MISSING or TOMBSTONE: the object does not exist */
    OC_EC_LEASE_WON,  /* the key was empty and this read made its lease */
    OC_EC_LEASE_HELD, /* another reader's lease holds the key */
    OC_EC_EMPTY,      /* a miss: nothing there, or nothing of ours */
    OC_EC_ERROR,      /* memcached failed for this key */
} oc_entry_class_t;

static inline uint32_t oc_entry_flags(oc_entry_kind_t kind)
{
    return (OC_ENTRY_MAGIC << 16) | (OC_ENTRY_VERSION << 8) | (uint32_t)kind;
}

/* The kind these flags say; OC_ENTRY_NONE if they are not ours. (Inline:
 * bench/ reads entries without linking the daemon's library.) */
static inline oc_entry_kind_t oc_entry_kind(uint32_t flags)
{
    if ((flags >> 16) != OC_ENTRY_MAGIC || ((flags >> 8) & 0xFF) != OC_ENTRY_VERSION)
        return OC_ENTRY_NONE;
    uint32_t k = flags & 0xFF;
    if (k >= OC_ENTRY_OBJECT && k <= OC_ENTRY_PUSHED)
        return (oc_entry_kind_t)k;
    return OC_ENTRY_NONE;
}

/* Classify a GET's answer for one key (a multi-get's or a meta get's). */
oc_entry_class_t oc_entry_classify(const oc_mc_hit_t *h);

/* The exptime to write a `kind` entry of model m with, for the cache key
 * `key`: the model's TTL of that kind plus the key's jitter. */
uint32_t oc_entry_exptime(oc_entry_kind_t kind, const oc_model_conf_t *m,
                          uint32_t jitter_pct, const char *key, size_t klen);
/* ttl plus up to pct percent, the same for the same key; capped at 30 days. */
uint32_t oc_entry_jitter(uint32_t ttl, uint32_t pct, const char *key, size_t klen);

/* Fill a write item (key and value are the caller's) with an entry of
 * `kind`: flags and exptime. */
void oc_entry_item(oc_mc_item_t *it, oc_entry_kind_t kind, const oc_model_conf_t *m,
                   uint32_t jitter_pct);

#endif

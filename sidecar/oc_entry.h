/*
 * oc_entry: what objcached stores in memcached, and how it tells its own
 * entries from anything else that shares the pool.
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
 *   TOMBSTONE  nothing: the app deleted the object; reads answer "absent"
 *              without asking PostgreSQL, and no fill can replace it
 *   LEASE      written by objcached before 0.2 (a token naming the sidecar
 *              loading the key): still honoured as another's lease while
 *              old and new sidecars share a pool. Leases are now memcached's
 *              own empty items made by `mg ... N<ttl>` (flags 0, no value;
 *              a meta get reports them with W or Z, see oc_fill.h): the
 *              only state a fill may replace (by cas), so an invalidation
 *              that overwrites or deletes it defeats a stale fill
 * An entry of an unknown kind or version, or an item with other flags, is
 * treated as a miss.
 */
#ifndef OC_ENTRY_H
#define OC_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#define OC_ENTRY_MAGIC   0x6F63u
#define OC_ENTRY_VERSION 1u

typedef enum oc_entry_kind {
    OC_ENTRY_NONE = 0,      /* not an objcached entry (or not a known one) */
    OC_ENTRY_OBJECT = 1,    /* the row as JSON */
    OC_ENTRY_MISSING = 2,   /* PostgreSQL has no row with this id */
    OC_ENTRY_TOMBSTONE = 3, /* deleted by the app */
    OC_ENTRY_LEASE = 4,     /* being loaded by the sidecar named in the value */
} oc_entry_kind_t;

static inline uint32_t oc_entry_flags(oc_entry_kind_t kind)
{
    return (OC_ENTRY_MAGIC << 16) | (OC_ENTRY_VERSION << 8) | (uint32_t)kind;
}

/* A classic get of a lease that memcached made (mg ... N) sees an empty
 * item with flags 0; no objcached entry looks like that. */
static inline int oc_entry_is_mc_lease(uint32_t flags, size_t len)
{
    return flags == 0 && len == 0;
}

static inline oc_entry_kind_t oc_entry_kind(uint32_t flags)
{
    if ((flags >> 16) != OC_ENTRY_MAGIC || ((flags >> 8) & 0xFF) != OC_ENTRY_VERSION)
        return OC_ENTRY_NONE;
    uint32_t k = flags & 0xFF;
    if (k >= OC_ENTRY_OBJECT && k <= OC_ENTRY_LEASE)
        return (oc_entry_kind_t)k;
    return OC_ENTRY_NONE;
}

#endif

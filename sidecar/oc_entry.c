#include "oc_entry.h"

oc_entry_class_t oc_entry_classify(const oc_mc_hit_t *h)
{
    if (h->lease == OC_MC_LEASE_WON)
        return OC_EC_LEASE_WON;
    if (h->lease == OC_MC_LEASE_HELD)
        return OC_EC_LEASE_HELD;
    if (!h->found)
        return h->error ? OC_EC_ERROR : OC_EC_EMPTY;
    /* A classic get of a lease memcached made (mg ... N) sees an empty
     * item with flags 0; no objcached entry looks like that. */
    if (h->flags == 0 && h->len == 0)
        return OC_EC_LEASE_HELD;
    switch (oc_entry_kind(h->flags)) {
    case OC_ENTRY_OBJECT:
    case OC_ENTRY_PUSHED:
        return OC_EC_OBJECT;
    case OC_ENTRY_MISSING:
    case OC_ENTRY_TOMBSTONE:
        return OC_EC_ABSENT;
    case OC_ENTRY_LEASE:
        return OC_EC_LEASE_HELD;
    case OC_ENTRY_NONE:
        break;
    }
    return OC_EC_EMPTY;
}

uint32_t oc_entry_jitter(uint32_t ttl, uint32_t pct, const char *key, size_t klen)
{
    uint64_t spread = (uint64_t)ttl * pct / 100;
    uint64_t t = ttl;
    if (spread > 0) {
        /* FNV-1a of the key: any sidecar spreads a key the same way. */
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < klen; i++)
            h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
        t += (h >> 11) % (spread + 1);
    }
    return t > OC_ENTRY_TTL_MAX ? OC_ENTRY_TTL_MAX : (uint32_t)t;
}

uint32_t oc_entry_exptime(oc_entry_kind_t kind, const oc_model_conf_t *m,
                          uint32_t jitter_pct, const char *key, size_t klen)
{
    uint32_t ttl;
    switch (kind) {
    case OC_ENTRY_MISSING:
        ttl = m->missing_ttl_s;
        break;
    case OC_ENTRY_TOMBSTONE:
        ttl = m->tombstone_ttl_s;
        break;
    default:
        ttl = m->ttl_s;
        break;
    }
    return oc_entry_jitter(ttl, jitter_pct, key, klen);
}

void oc_entry_item(oc_mc_item_t *it, oc_entry_kind_t kind, const oc_model_conf_t *m,
                   uint32_t jitter_pct)
{
    it->flags = oc_entry_flags(kind);
    it->exptime_s = oc_entry_exptime(kind, m, jitter_pct, it->key, it->klen);
    if (kind != OC_ENTRY_OBJECT && kind != OC_ENTRY_PUSHED) {
        it->val = "";
        it->vlen = 0;
    }
}

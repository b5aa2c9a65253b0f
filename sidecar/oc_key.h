/*
 * oc_key: turns a client key `Model:id` into a configured model and a
 * canonical id, or says exactly why it cannot.
 *
 * Contract: pure and allocation-free. The key is split on the first colon;
 * the model must be configured (so a key can never name a table), and the id
 * must be valid for the model's key type. The canonical id is the text
 * PostgreSQL prints for that value (`007` -> `7`, a uuid in lower case with
 * hyphens), so that every spelling of one object shares one cache entry and
 * rows coming back from PostgreSQL can be matched by text.
 */
#ifndef OC_KEY_H
#define OC_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "oc_conf.h"
#include "oc_status.h"

/* Large enough for any canonical id of a key that passed the length check. */
#define OC_CANON_MAX (OC_KEY_MAX + 8)

typedef struct oc_key {
    const oc_model_conf_t *model;
    size_t model_idx;         /* index into conf->models */
    char canon[OC_CANON_MAX]; /* canonical id, NUL-terminated */
    size_t canon_len;
} oc_key_t;

/*
 * Parse `key` (len bytes, not NUL-terminated). max_len is the longest client
 * key accepted (250 minus the key prefix). On failure returns OC_EINVAL or
 * OC_ETOOBIG and writes the client-facing reason (e.g. "unknown model: X:1")
 * into err[OC_ERRLEN]; the key is quoted cut to 64 bytes.
 */
oc_status_t oc_key_parse(const oc_conf_t *conf, const char *key, size_t len,
                         size_t max_len, oc_key_t *out, char *err);

/* Room a cache key needs beyond the client key: "~" + a 20-digit
 * generation, and a uuid's 4 hyphens. */
#define OC_KEY_GEN_ROOM 21

/*
 * Write the memcached key of an object into buf (cap >= OC_KEY_MAX + 1):
 * prefix + Model + ":" + canonical id, with "~<gen>" after the model once
 * its generation is above 0 (a TRUNCATE bumps it, so every old key is left
 * behind at once). Returns the length; *canon_off is where the id starts.
 */
size_t oc_key_cache_key(const char *prefix, const char *model, uint64_t gen,
                        const char *canon, size_t canon_len, char *buf, size_t cap,
                        size_t *canon_off);
/* The same in two steps, for a loop over keys of few models (a get's):
 * the head (prefix + Model + "~<gen>" + ":") into head (OC_KEY_HEAD_MAX
 * bytes, no NUL), its length returned; then a key from a head. */
#define OC_KEY_HEAD_MAX (OC_KEY_MAX + 32)
size_t oc_key_cache_head(const char *prefix, const char *model, uint64_t gen, char *head);
size_t oc_key_cache_key_at(const char *head, size_t head_len, const char *canon,
                           size_t canon_len, char *buf, size_t cap, size_t *canon_off);
/* The cap oc_key_cache_key needs for a canonical id of id_len bytes,
 * whatever the generation (its NUL included), at most OC_KEY_MAX + 1: a
 * batch of deletes packs its keys with it instead of reserving
 * OC_KEY_MAX + 1 bytes for each (a WAL batch may hold millions). */
static inline size_t oc_key_cache_key_room(size_t prefix_len, size_t model_len,
                                           size_t id_len)
{
    size_t room = prefix_len + model_len + OC_KEY_GEN_ROOM + 1 + id_len + 1;
    return room < OC_KEY_MAX + 1 ? room : OC_KEY_MAX + 1;
}

/* Decimal text of v into buf (room for 21 bytes, NUL added); returns the
 * length. Used on the hot paths instead of snprintf. */
size_t oc_key_format_u64(char *buf, uint64_t v);
size_t oc_key_format_int(char *buf, int64_t v);

/* 1 if an id coming from PostgreSQL (an outbox key) could be part of a
 * cache key: no control bytes, no spaces, at most max_len bytes. An id
 * that fails could never have been asked for, so never cached; and it
 * must never reach a memcached command line. */
int oc_key_id_cacheable(const char *id, size_t len, size_t max_len);

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, surrogates, > U+10FFFF). */
int oc_key_utf8_valid(const unsigned char *s, size_t len);

#endif

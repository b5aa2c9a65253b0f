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

#include "oc_conf.h"
#include "oc_status.h"

/* Large enough for any canonical id of a key that passed the length check. */
#define OC_CANON_MAX (OC_KEY_MAX + 8)

typedef struct oc_key {
    const oc_model_conf_t *model;
    size_t model_idx;           /* index into conf->models */
    char canon[OC_CANON_MAX];   /* canonical id, NUL-terminated */
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

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, surrogates, > U+10FFFF). */
int oc_key_utf8_valid(const unsigned char *s, size_t len);

#endif

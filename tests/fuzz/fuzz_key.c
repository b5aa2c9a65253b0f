/*
 * libFuzzer target for oc_key: oc_key_parse() on arbitrary client keys,
 * against two fixed configurations with one model of each key type (the
 * test suite's models with the default prefix "oc:", and 64-byte model
 * names with a 32-byte prefix, the longest the config allows), then
 * oc_key_cache_key() on every key that parses.
 *
 * Checked, besides ASan/UBSan on exactly-sized heap copies:
 * - accept/reject agrees with an independent reference for each key type
 *   (docs/protocol.md "Keys"), and the canonical id is what PostgreSQL
 *   prints (no leading zeros, lower-case uuid with hyphens);
 * - the canonical id is a fixed point (Model:canon parses to itself);
 * - the memcached key, for generations 0, 1 and UINT64_MAX, is at most
 *   250 bytes and holds the whole canonical id (never truncated);
 * - error messages are NUL-terminated one-liners (they go into CLIENT_ERROR);
 * - oc_key_utf8_valid() agrees with a reference UTF-8 decoder.
 *
 *   bash scripts/fuzz.sh --target fuzz_key --seconds 60
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_key.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 63 bytes: with one letter before it, the longest model name (64). */
#define M63 "M12345678901234567890123456789012345678901234567890123456789012"

static const char conf_short[] =
    "[memcached]\nservers = 127.0.0.1:11211\n"
    "[postgresql]\nconninfo = dbname=x\n"
    "[model User]\ntable = users\nkey_type = bigint\n"
    "[model Counter]\ntable = counters\nkey_type = integer\n"
    "[model Doc]\ntable = docs\nkey_type = uuid\n"
    "[model Page]\ntable = pages\nkey = slug\nkey_type = text\n";

static const char conf_long[] =
    "[objcached]\nkey_prefix = P1234567890123456789012345678901\n"
    "[memcached]\nservers = 127.0.0.1:11211\n"
    "[postgresql]\nconninfo = dbname=x\n"
    "[model User]\ntable = users\n"
    "[model B" M63 "]\ntable = b\nkey_type = bigint\n"
    "[model I" M63 "]\ntable = i\nkey_type = integer\n"
    "[model U" M63 "]\ntable = u\nkey_type = uuid\n"
    "[model T" M63 "]\ntable = t\nkey_type = text\n";

static oc_conf_t *confs[2];

static oc_conf_t *load(const char *text)
{
    char err[OC_ERRLEN];
    oc_conf_t *c = oc_conf_load_string(text, strlen(text), err);
    if (c == NULL) {
        fprintf(stderr, "fuzz_key: fixed config refused: %s\n", err);
        abort();
    }
    return c;
}

/* ---- references ------------------------------------------------------- */

/* RFC 3629, written differently from oc_key_utf8_valid on purpose. */
static int ref_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c <= 0x7F) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c == 0xE0)
            n = 2, lo = 0xA0;
        else if (c == 0xED)
            n = 2, hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF)
            n = 2;
        else if (c == 0xF0)
            n = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            n = 3;
        else if (c == 0xF4)
            n = 3, hi = 0x8F;
        else
            return 0;
        if (len - i <= n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += n + 1;
    }
    return 1;
}

/* -?[0-9]+ within [lo, hi], via strtoll; canon as PostgreSQL prints it.
 * Like oc_key.c, ids longer than 40 bytes are refused (docs/protocol.md
 * does not say so; zero-padded ids that long are not worth a branch). */
static int ref_int(const char *id, size_t len, long long lo, long long hi, char *canon)
{
    char buf[64];
    size_t i = (len > 0 && id[0] == '-');
    if (len == i || len > 40)
        return 0;
    for (size_t k = i; k < len; k++)
        if (id[k] < '0' || id[k] > '9')
            return 0;
    memcpy(buf, id, len);
    buf[len] = '\0';
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno == ERANGE || v < lo || v > hi)
        return 0;
    snprintf(canon, 64, "%lld", v);
    return 1;
}

static int ref_uuid(const char *id, size_t len, char *canon)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (len != 32 && len != 36)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (c != '-')
                return 0;
            continue;
        }
        const char *p = (c >= 'A' && c <= 'F') ? strchr(hex, c - 'A' + 'a')
                        : (c != '\0')          ? strchr(hex, c)
                                               : NULL;
        if (p == NULL)
            return 0;
        canon[o++] = *p;
        if (o == 8 || o == 13 || o == 18 || o == 23)
            canon[o++] = '-';
    }
    canon[o] = '\0';
    return 1;
}

/* What oc_key_parse must do with `key`, by docs/protocol.md: 1 and the
 * canonical id if it is valid. */
static int ref_key(const oc_conf_t *conf, const char *key, size_t len, size_t max_len,
                   const oc_model_conf_t **model, char *canon)
{
    if (len > max_len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] <= 0x20 || key[i] == 0x7f)
            return 0;
    const char *colon = memchr(key, ':', len);
    if (colon == NULL || colon == key || colon == key + len - 1)
        return 0;
    size_t mlen = (size_t)(colon - key);
    const char *id = colon + 1;
    size_t idlen = len - mlen - 1;
    *model = NULL;
    for (size_t i = 0; i < conf->nmodels; i++)
        if (strlen(conf->models[i].name) == mlen &&
            memcmp(conf->models[i].name, key, mlen) == 0)
            *model = &conf->models[i];
    if (*model == NULL)
        return 0;
    switch ((*model)->key_type) {
    case OC_KEY_BIGINT:
        return ref_int(id, idlen, INT64_MIN, INT64_MAX, canon);
    case OC_KEY_INTEGER:
        return ref_int(id, idlen, INT32_MIN, INT32_MAX, canon);
    case OC_KEY_UUID:
        return ref_uuid(id, idlen, canon);
    case OC_KEY_TEXT:
        if (!ref_utf8((const unsigned char *)id, idlen))
            return 0;
        memcpy(canon, id, idlen);
        canon[idlen] = '\0';
        return 1;
    }
    return 0;
}

/* ---- checks ----------------------------------------------------------- */

static void check_err(const char *err)
{
    size_t n = strnlen(err, OC_ERRLEN);
    if (n == 0 || n == OC_ERRLEN || memchr(err, '\r', n) || memchr(err, '\n', n))
        abort();
}

static void check_cache_key(const oc_conf_t *conf, const oc_key_t *k)
{
    static const uint64_t gens[] = {0, 1, UINT64_MAX};
    char *buf = malloc(OC_KEY_MAX + 1); /* the cap the daemon passes */
    if (buf == NULL)
        abort();
    for (size_t g = 0; g < sizeof(gens) / sizeof(gens[0]); g++) {
        size_t off = 0;
        size_t n = oc_key_cache_key(conf->key_prefix, k->model->name, gens[g], k->canon,
                                    k->canon_len, buf, OC_KEY_MAX + 1, &off);
        if (n > OC_KEY_MAX || strlen(buf) != n)
            abort();
        /* The whole id, at the end: a cut id would name another object. */
        if (off + k->canon_len != n || memcmp(buf + off, k->canon, k->canon_len) != 0)
            abort();
        size_t plen = strlen(conf->key_prefix), mlen = strlen(k->model->name);
        if (memcmp(buf, conf->key_prefix, plen) != 0 ||
            memcmp(buf + plen, k->model->name, mlen) != 0 || buf[off - 1] != ':')
            abort();
    }
    free(buf);
}

static void fuzz_conf_key(const oc_conf_t *conf, const uint8_t *data, size_t size)
{
    size_t max_len = OC_KEY_MAX - strlen(conf->key_prefix) - OC_KEY_GEN_ROOM;
    char *key = malloc(size > 0 ? size : 1);
    if (key == NULL)
        abort();
    memcpy(key, data, size);
    oc_key_t k;
    char err[OC_ERRLEN];
    char want[OC_CANON_MAX + 64];
    const oc_model_conf_t *want_model = NULL;
    oc_status_t st = oc_key_parse(conf, key, size, max_len, &k, err);
    int ok = ref_key(conf, key, size, max_len, &want_model, want);
    if (st != OC_OK && st != OC_EINVAL && st != OC_ETOOBIG)
        abort();
    if ((st == OC_OK) != ok) {
        fprintf(stderr, "fuzz_key: oc_key_parse says %d, the reference %d\n", (int)st,
                ok);
        abort();
    }
    if (st != OC_OK) {
        check_err(err);
        free(key);
        return;
    }
    if (k.model != want_model || k.model != &conf->models[k.model_idx] ||
        k.canon_len >= OC_CANON_MAX || strlen(k.canon) != k.canon_len ||
        strcmp(k.canon, want) != 0)
        abort();
    check_cache_key(conf, &k);
    /* Canonical ids are fixed points. */
    size_t mlen = strlen(k.model->name);
    size_t len2 = mlen + 1 + k.canon_len;
    char *key2 = malloc(len2);
    if (key2 == NULL)
        abort();
    memcpy(key2, k.model->name, mlen);
    key2[mlen] = ':';
    memcpy(key2 + mlen + 1, k.canon, k.canon_len);
    oc_key_t k2;
    if (len2 <= max_len && (oc_key_parse(conf, key2, len2, max_len, &k2, err) != OC_OK ||
                            k2.model != k.model || strcmp(k2.canon, k.canon) != 0))
        abort();
    free(key2);
    free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (confs[0] == NULL) {
        confs[0] = load(conf_short);
        confs[1] = load(conf_long);
    }
    if (size > 4096)
        return 0; /* keys are capped far below; longer inputs add nothing */
    for (size_t i = 0; i < 2; i++)
        fuzz_conf_key(confs[i], data, size);
    if (oc_key_utf8_valid(data, size) != ref_utf8(data, size))
        abort();
    return 0;
}

#include "oc_key.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "oc_mcproto.h"

#define OC_KEY_ECHO_MAX 64

/* Keys in error replies are cut so a hostile key cannot blow up a reply. */
static int echo_len(size_t len)
{
    return (int)(len > OC_KEY_ECHO_MAX ? OC_KEY_ECHO_MAX : len);
}

int oc_key_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n >= len) /* truncated sequence */
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* "00" .. "99": two digits per division. Generations are 16-digit numbers
 * (microseconds, sql/install.sql) formatted into every key of every get, so
 * digit by digit this was the near-cache hit's costliest function. */
static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

size_t oc_key_format_u64(char *buf, uint64_t v)
{
    char tmp[20]; /* UINT64_MAX has 20 digits */
    char *p = tmp + sizeof(tmp);
    while (v >= 100) {
        const char *d = digit_pairs + 2 * (v % 100);
        v /= 100;
        *--p = d[1];
        *--p = d[0];
    }
    if (v >= 10) {
        *--p = digit_pairs[2 * v + 1];
        *--p = digit_pairs[2 * v];
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof(tmp) - p);
    memcpy(buf, p, n);
    buf[n] = '\0';
    return n;
}

size_t oc_key_format_int(char *buf, int64_t v)
{
    if (v >= 0)
        return oc_key_format_u64(buf, (uint64_t)v);
    buf[0] = '-';
    return 1 + oc_key_format_u64(buf + 1, (uint64_t)0 - (uint64_t)v);
}

/* At most 18 digits after position `from` (1 after a minus sign). An id
 * already in canonical form (no leading zero, no "-0") is copied rather
 * than formatted again. */
static oc_status_t parse_short_int(const char *id, size_t len, size_t from, int64_t lo,
                                   int64_t hi, oc_key_t *out)
{
    int64_t v = 0;
    for (size_t i = from; i < len; i++) {
        if (id[i] < '0' || id[i] > '9')
            return OC_EINVAL;
        v = v * 10 + (id[i] - '0');
    }
    if (from)
        v = -v;
    if (v < lo || v > hi)
        return OC_EINVAL;
    if (id[from] == '0' && !(len == 1 && from == 0)) {
        out->canon_len = oc_key_format_int(out->canon, v);
        return OC_OK;
    }
    memcpy(out->canon, id, len);
    out->canon[len] = '\0';
    out->canon_len = len;
    return OC_OK;
}

static oc_status_t parse_int(const char *id, size_t len, int64_t lo, int64_t hi,
                             oc_key_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (len > 0 && id[0] == '-')
        neg = 1, i = 1;
    if (i == len || len > 40)
        return OC_EINVAL;
    if (len - i <= 18) /* every key of a get: no overflow possible, no check */
        return parse_short_int(id, len, i, lo, hi, out);
    /* Accumulate as a negative number so INT64_MIN fits. */
    int64_t v = 0;
    for (; i < len; i++) {
        if (id[i] < '0' || id[i] > '9')
            return OC_EINVAL;
        int d = id[i] - '0';
        if (v < (INT64_MIN + d) / 10)
            return OC_EINVAL;
        v = v * 10 - d;
    }
    if (!neg) {
        if (v < -INT64_MAX)
            return OC_EINVAL;
        v = -v;
    }
    if (v < lo || v > hi)
        return OC_EINVAL;
    out->canon_len = oc_key_format_int(out->canon, v);
    return OC_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static oc_status_t parse_uuid(const char *id, size_t len, oc_key_t *out)
{
    static const char hexd[] = "0123456789abcdef";
    int hyphens = (len == 36);
    if (len != 32 && len != 36)
        return OC_EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (hyphens && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (id[i] != '-')
                return OC_EINVAL;
            continue;
        }
        int h = hexval(id[i]);
        if (h < 0)
            return OC_EINVAL;
        if (o == 8 || o == 13 || o == 18 || o == 23)
            out->canon[o++] = '-';
        out->canon[o++] = hexd[h];
    }
    out->canon[o] = '\0';
    out->canon_len = o;
    return OC_OK;
}

static oc_status_t parse_text(const char *id, size_t len, oc_key_t *out)
{
    if (!oc_key_utf8_valid((const unsigned char *)id, len))
        return OC_EINVAL;
    memcpy(out->canon, id, len);
    out->canon[len] = '\0';
    out->canon_len = len;
    return OC_OK;
}

static oc_status_t parse_id(oc_key_type_t type, const char *id, size_t len, oc_key_t *out)
{
    switch (type) {
    case OC_KEY_BIGINT:
        return parse_int(id, len, INT64_MIN, INT64_MAX, out);
    case OC_KEY_INTEGER:
        return parse_int(id, len, INT32_MIN, INT32_MAX, out);
    case OC_KEY_UUID:
        return parse_uuid(id, len, out);
    case OC_KEY_TEXT:
        return parse_text(id, len, out);
    }
    return OC_EINVAL;
}

int oc_key_id_cacheable(const char *id, size_t len, size_t max_len)
{
    if (len == 0 || len > max_len)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c <= 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

size_t oc_key_cache_head(const char *prefix, const char *model, uint64_t gen, char *head)
{
    /* prefix, model, ~gen (only when not 0) and ':'; written out rather
     * than through snprintf, being on every get's path. */
    size_t pl = strlen(prefix), ml = strlen(model), off;
    if (pl + ml + 24 > OC_KEY_HEAD_MAX) /* cannot happen: both are length-checked */
        pl = ml = 0;
    off = (size_t)(oc_mcp_put(oc_mcp_put(head, prefix, pl), model, ml) - head);
    if (gen) {
        head[off++] = '~';
        off += oc_key_format_u64(head + off, gen);
    }
    head[off++] = ':';
    return off;
}

size_t oc_key_cache_key_at(const char *head, size_t off, const char *canon,
                           size_t canon_len, char *buf, size_t cap, size_t *canon_off)
{
    if (off >= cap)
        off = cap - 1;
    memcpy(buf, head, off);
    if (off + canon_len >= cap)
        canon_len = cap - 1 - off; /* cannot happen for keys that passed parse */
    memcpy(buf + off, canon, canon_len);
    buf[off + canon_len] = '\0';
    *canon_off = off;
    return off + canon_len;
}

size_t oc_key_cache_key(const char *prefix, const char *model, uint64_t gen,
                        const char *canon, size_t canon_len, char *buf, size_t cap,
                        size_t *canon_off)
{
    char head[OC_KEY_HEAD_MAX];
    size_t off = oc_key_cache_head(prefix, model, gen, head);
    return oc_key_cache_key_at(head, off, canon, canon_len, buf, cap, canon_off);
}

oc_status_t oc_key_parse(const oc_conf_t *conf, const char *key, size_t len,
                         size_t max_len, oc_key_t *out, char *err)
{
    int el = echo_len(len);
    if (len > max_len)
        return oc_fail(err, OC_ETOOBIG, "key too long");
    if (!oc_mcp_printable(key, len))
        return oc_fail(err, OC_EINVAL, "bad key format: control character");
    const char *colon = memchr(key, ':', len);
    if (colon == NULL || colon == key || colon == key + len - 1)
        return oc_fail(err, OC_EINVAL, "bad key format: %.*s", el, key);
    size_t mlen = (size_t)(colon - key);
    const oc_model_conf_t *m = oc_conf_model(conf, key, mlen);
    if (m == NULL)
        return oc_fail(err, OC_EINVAL, "unknown model: %.*s", el, key);
    out->model = m;
    out->model_idx = (size_t)(m - conf->models);
    if (parse_id(m->key_type, colon + 1, len - mlen - 1, out) != OC_OK)
        return oc_fail(err, OC_EINVAL, "bad id for %s key: %.*s",
                       oc_key_type_name(m->key_type), el, key);
    return OC_OK;
}

/*
 * The rules of a push's body, split from oc_write.c because they are pure
 * (no loop, no I/O) and parse client bytes: one JSON object, its version
 * and how two versions order, its id against the key's, and whether
 * PostgreSQL's row agrees with it. Declared in oc_write.h; fuzzed by
 * tests/fuzz/fuzz_push.c.
 */
#include <jansson.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "oc_entry.h"
#include "oc_key.h"
#include "oc_write.h"

int oc_write_is_json_object(const char *json, size_t len)
{
    json_error_t jerr;
    json_t *v = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    int ok = v != NULL && json_is_object(v);
    json_decref(v);
    return ok;
}

/* An ISO 8601 timestamp as row_to_json prints one (and as apps do):
 * YYYY-MM-DD, 'T' or ' ', HH:MM:SS, an optional fraction, and an offset
 * (Z, +HH, +HH:MM, +HH:MM:SS) or none. Its instant in *secs (UTC when it
 * has an offset) and *nanos; *zoned says whether it had one. 0 if s is not
 * such a timestamp (a year past 9999, BC, or any other text). */
static int version_ts(const char *s, int64_t *secs, int64_t *nanos, int *zoned)
{
    int v[6];
    static const char sep[6] = {'-', '-', 'T', ':', ':', 0};
    const char *p = s;
    for (int i = 0; i < 6; i++) {
        int digits = i == 0 ? 4 : 2;
        v[i] = 0;
        for (int d = 0; d < digits; d++, p++) {
            if (*p < '0' || *p > '9')
                return 0;
            v[i] = v[i] * 10 + (*p - '0');
        }
        if (i < 5 && !(*p == sep[i] || (i == 2 && *p == ' ')))
            return 0;
        if (i < 5)
            p++;
    }
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 24 || v[4] > 59 ||
        v[5] > 60)
        return 0;
    *nanos = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 9)
                *nanos = *nanos * 10 + (*p - '0');
        if (n == 0)
            return 0;
        for (; n < 9; n++)
            *nanos *= 10;
    }
    int64_t off = 0;
    *zoned = 0;
    if (*p == 'Z' || *p == 'z') {
        *zoned = 1;
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, part = 0;
        int64_t mul = 3600;
        while (part < 3) {
            if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
                return 0;
            off += ((p[0] - '0') * 10 + (p[1] - '0')) * mul;
            p += 2;
            mul /= 60, part++;
            if (*p == ':')
                p++;
            else if (*p < '0' || *p > '9')
                break;
        }
        off *= sign;
        *zoned = 1;
    }
    if (*p != '\0')
        return 0;
    /* days from 1970-01-01 of the proleptic Gregorian date (H. Hinnant) */
    int64_t y = v[0] - (v[1] <= 2), m = v[1];
    int64_t era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + v[2] - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *secs = days * 86400 + v[3] * 3600 + v[4] * 60 + v[5] - off;
    return 1;
}

/* Two strings that are both timestamps compare as instants: as text they
 * do not order across an offset change (a DST fall-back in a `timezone`
 * other than UTC: 01:30-04:00 is before 01:10-05:00) nor across formats
 * (an app's "12:00:00Z" sorts after row_to_json's "12:00:00.25+00:00").
 * One zoned and one not, or one a timestamp and one not: 2 (unordered).
 * Neither a timestamp: as text. (Found by a review, 2026-12-05.) */
static int version_str_cmp(const char *a, const char *b)
{
    int64_t as, an, bs, bn;
    int az, bz;
    int ta = version_ts(a, &as, &an, &az), tb = version_ts(b, &bs, &bn, &bz);
    if (ta && tb && az == bz) {
        if (as != bs)
            return as > bs ? 1 : -1;
        return (an > bn) - (an < bn);
    }
    if (ta || tb)
        return 2;
    int c = strcmp(a, b);
    return (c > 0) - (c < 0);
}

int oc_write_version_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_string(a) && json_is_string(b))
        return version_str_cmp(json_string_value(a), json_string_value(b));
    return 2;
}

/* Only a version compared with the cached object's can say a push is
 * newer. An empty key (or a lease, a "missing" entry) says nothing: the
 * invalidation of a later commit may have emptied it, so the write must be
 * checked. */
oc_mc_decision_t oc_write_decide(const json_t *version, const char *version_column,
                                 int found, uint32_t flags, const char *val, size_t len)
{
    oc_entry_kind_t kind = found ? oc_entry_kind(flags) : OC_ENTRY_NONE;
    if (kind == OC_ENTRY_TOMBSTONE)
        return OC_MC_KEEP;
    if ((kind != OC_ENTRY_OBJECT && kind != OC_ENTRY_PUSHED) || version == NULL)
        return OC_MC_WRITE_UNORDERED;
    json_error_t jerr;
    json_t *cur = json_loadb(val, len, 0, &jerr);
    const json_t *cv = cur ? json_object_get(cur, version_column) : NULL;
    int cmp = cv ? oc_write_version_cmp(version, cv) : 2;
    json_decref(cur);
    if (cmp == -1)
        return OC_MC_KEEP; /* older loses: pushes come after their commit, so even
                              an unchecked push's version was committed */
    if (cmp == 2 || kind == OC_ENTRY_PUSHED)
        return OC_MC_WRITE_UNORDERED; /* an unchecked push proves nothing newer:
                                         it may be late itself */
    return OC_MC_WRITE;               /* equal writes */
}

oc_status_t oc_write_parse_body(const char *json, size_t len, const char *version_column,
                                json_t **obj, json_t **version, char *err)
{
    json_error_t jerr;
    *version = NULL;
    *obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (*obj == NULL || !json_is_object(*obj)) {
        json_decref(*obj);
        *obj = NULL;
        return oc_fail(err, OC_EINVAL, "value is not a JSON object");
    }
    if (version_column) {
        *version = json_incref(json_object_get(*obj, version_column));
        if (*version == NULL) {
            json_decref(*obj);
            *obj = NULL;
            return oc_fail(err, OC_EINVAL, "value has no \"%s\" field", version_column);
        }
    }
    return OC_OK;
}

int oc_write_id_matches(const json_t *v, oc_key_type_t type, const char *canon,
                        size_t canon_len)
{
    if (v == NULL)
        return 1; /* no key column in the body: nothing to tell */
    if (json_is_integer(v) && (type == OC_KEY_BIGINT || type == OC_KEY_INTEGER)) {
        char buf[24];
        size_t n = oc_key_format_int(buf, (int64_t)json_integer_value(v));
        return n == canon_len && memcmp(buf, canon, n) == 0;
    }
    if (!json_is_string(v))
        return 0;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n != canon_len)
        return 0;
    if (type == OC_KEY_UUID)
        return strncasecmp(s, canon, n) == 0;
    return memcmp(s, canon, n) == 0;
}

int oc_write_check_agrees(const json_t *pushed, const char *row_json, size_t len)
{
    if (row_json == NULL)
        return 0;
    json_error_t jerr;
    json_t *db = json_loadb(row_json, len, 0, &jerr);
    int same = db != NULL && json_equal(db, pushed);
    json_decref(db);
    return same;
}

/*
 * libFuzzer target for a push's body (sidecar/oc_write_body.c): the bytes a
 * client sends with `set`, `ms` or a binary SET, as objcached judges them.
 * Input: one byte choosing the key type, then two JSON texts separated by
 * the first NUL (the pushed body, and what memcached holds or PostgreSQL
 * returns).
 *
 * Checked, besides ASan/UBSan:
 * - oc_write_is_json_object() agrees with oc_write_parse_body() without a
 *   version column, and a body parsed with one ("v") has a version;
 * - oc_write_version_cmp() answers -1, 0, 1 or 2, is antisymmetric (2 both
 *   ways, or opposite signs), and a number or a string equals itself;
 * - oc_write_decide() answers one of its three decisions, and a version
 *   never orders a push over a tombstone;
 * - oc_write_id_matches() is 1 for an integer id against its own decimal
 *   text, 1 without an id, and the same for a text id against itself;
 * - oc_write_check_agrees() holds for a body against its own bytes.
 *
 *   bash scripts/fuzz.sh --target fuzz_push --seconds 60
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_entry.h"
#include "oc_key.h"
#include "oc_write.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_push: %s\n", what);
        abort();
    }
}

static void versions(const json_t *a, const json_t *b)
{
    int ab = oc_write_version_cmp(a, b), ba = oc_write_version_cmp(b, a);
    check(ab >= -1 && ab <= 2, "version_cmp out of range");
    check((ab == 2) == (ba == 2), "version_cmp: comparable one way only");
    check(ab == 2 || ab == -ba, "version_cmp not antisymmetric");
    if (json_is_number(a) || json_is_string(a))
        check(oc_write_version_cmp(a, a) == 0, "a version differs from itself");
}

static void ids(const json_t *v, oc_key_type_t type)
{
    check(oc_write_id_matches(NULL, type, "7", 1) == 1, "no id must match");
    if (json_is_integer(v) && (type == OC_KEY_BIGINT || type == OC_KEY_INTEGER)) {
        char buf[24];
        size_t n = oc_key_format_int(buf, (int64_t)json_integer_value(v));
        check(oc_write_id_matches(v, type, buf, n) == 1,
              "an integer id is not its own text");
    }
    if (json_is_string(v) && type == OC_KEY_TEXT)
        check(oc_write_id_matches(v, type, json_string_value(v), json_string_length(v)) ==
                  1,
              "a text id is not itself");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    oc_key_type_t type = (oc_key_type_t)(data[0] % 4);
    const char *a = (const char *)data + 1;
    size_t rest = size - 1;
    const char *nul = memchr(a, '\0', rest);
    size_t alen = nul ? (size_t)(nul - a) : rest;
    const char *b = nul ? nul + 1 : a + rest;
    size_t blen = nul ? rest - alen - 1 : 0;

    char err[OC_ERRLEN];
    json_t *obj = NULL, *ver = NULL;
    oc_status_t plain = oc_write_parse_body(a, alen, NULL, &obj, &ver, err);
    check((plain == OC_OK) == (oc_write_is_json_object(a, alen) != 0),
          "is_json_object and parse_body disagree");
    check(plain != OC_OK || (obj != NULL && ver == NULL), "parse_body without a column");
    check(plain == OC_OK || (obj == NULL && memchr(err, '\0', sizeof(err)) != NULL),
          "a refused body without a message");
    if (obj != NULL) {
        check(oc_write_check_agrees(obj, a, alen) == 1, "a body disagrees with itself");
        json_decref(obj);
        obj = NULL;
    }
    if (oc_write_parse_body(a, alen, "v", &obj, &ver, err) == OC_OK) {
        check(ver != NULL, "a body parsed with a version column has no version");
        ids(json_object_get(obj, "id"), type);
        json_error_t jerr;
        json_t *cur = json_loadb(b, blen, 0, &jerr);
        const json_t *cv = json_is_object(cur) ? json_object_get(cur, "v") : NULL;
        if (cv != NULL)
            versions(ver, cv);
        for (int kind = 0; kind < 8; kind++) {
            uint32_t flags = oc_entry_flags((oc_entry_kind_t)kind);
            oc_mc_decision_t d = oc_write_decide(ver, "v", 1, flags, b, blen);
            check(d == OC_MC_WRITE || d == OC_MC_WRITE_UNORDERED || d == OC_MC_KEEP,
                  "decide out of range");
            if (kind == OC_ENTRY_TOMBSTONE)
                check(d == OC_MC_KEEP, "a push ordered over a tombstone");
        }
        check(oc_write_decide(ver, "v", 0, 0, NULL, 0) == OC_MC_WRITE_UNORDERED,
              "a push over nothing is ordered");
        json_decref(cur);
        json_decref(ver);
        json_decref(obj);
    }
    return 0;
}

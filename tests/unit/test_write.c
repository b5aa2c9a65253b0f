/* Unit tests for oc_write's rules: what a push's body must be, how two
 * versions compare, what a push does with what memcached holds (newer,
 * unordered, older), the client's answer, which pushes are checked, and
 * the check's compare with PostgreSQL's row. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_entry.h"
#include "oc_write.h"

#define S(lit) lit, sizeof(lit) - 1

static json_t *js(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    assert_non_null(v);
    return v;
}

static void test_is_json_object(void **state)
{
    (void)state;
    assert_true(oc_write_is_json_object(S("{}")));
    assert_true(oc_write_is_json_object(S("{\"id\":1,\"name\":\"a\"}")));
    assert_true(oc_write_is_json_object(S(" {\"id\":1} \n")));
    /* only the len bytes count: what follows is not read */
    assert_true(oc_write_is_json_object("{\"id\":1}garbage", 8));
    assert_false(oc_write_is_json_object(S("[1,2]")));
    assert_false(oc_write_is_json_object(S("1")));
    assert_false(oc_write_is_json_object(S("\"x\"")));
    assert_false(oc_write_is_json_object(S("null")));
    assert_false(oc_write_is_json_object(S("")));
    assert_false(oc_write_is_json_object(S("{\"id\":1")));
    assert_false(oc_write_is_json_object(S("{\"id\":1}{}")));
    assert_false(oc_write_is_json_object(S("{\"id\":1,\"id\":2}"))); /* duplicates */
    assert_false(oc_write_is_json_object(S("{'id':1}")));
    assert_false(oc_write_is_json_object(S("{\"id\":1}\0")));
    assert_false(oc_write_is_json_object(S("{\"a\":\"\xff\xfe\"}"))); /* not UTF-8 */
}

static void test_parse_body(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    json_t *obj, *ver;
    assert_int_equal(oc_write_parse_body(S("{\"id\":1}"), NULL, &obj, &ver, err), OC_OK);
    assert_true(json_is_object(obj));
    assert_null(ver);
    json_decref(obj);

    assert_int_equal(
        oc_write_parse_body(S("{\"id\":1,\"version\":7}"), "version", &obj, &ver, err),
        OC_OK);
    assert_int_equal(json_integer_value(ver), 7);
    json_decref(obj);
    json_decref(ver); /* the caller's own reference: still valid after obj went */

    /* a null version is a value: present, compared as "cannot say" later */
    assert_int_equal(
        oc_write_parse_body(S("{\"version\":null}"), "version", &obj, &ver, err), OC_OK);
    assert_true(json_is_null(ver));
    json_decref(obj);
    json_decref(ver);

    assert_int_equal(oc_write_parse_body(S("{\"id\":1}"), "version", &obj, &ver, err),
                     OC_EINVAL);
    assert_string_equal(err, "value has no \"version\" field");
    assert_null(obj);
    assert_null(ver);
    /* the field's name is case-sensitive */
    assert_int_equal(
        oc_write_parse_body(S("{\"Version\":1}"), "version", &obj, &ver, err), OC_EINVAL);

    const char *bad[] = {"[]", "1", "", "{", "{\"a\":1,\"a\":1}", "nul"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        obj = ver = (json_t *)1;
        assert_int_equal(
            oc_write_parse_body(bad[i], strlen(bad[i]), NULL, &obj, &ver, err),
            OC_EINVAL);
        assert_string_equal(err, "value is not a JSON object");
        assert_null(obj);
        assert_null(ver);
    }
}

static int cmp(const char *a, const char *b)
{
    json_t *x = js(a), *y = js(b);
    int c = oc_write_version_cmp(x, y);
    json_decref(x);
    json_decref(y);
    return c;
}

static int idm(const char *v, oc_key_type_t t, const char *canon)
{
    json_t *x = v ? js(v) : NULL;
    int r = oc_write_id_matches(x, t, canon, strlen(canon));
    json_decref(x);
    return r;
}

static void test_id_matches(void **state)
{
    (void)state;
    assert_true(idm(NULL, OC_KEY_BIGINT, "7"));
    assert_true(idm("7", OC_KEY_BIGINT, "7"));
    assert_true(idm("-7", OC_KEY_INTEGER, "-7"));
    assert_true(idm("\"7\"", OC_KEY_BIGINT, "7"));
    assert_false(idm("8", OC_KEY_BIGINT, "7"));
    assert_false(idm("70", OC_KEY_BIGINT, "7"));
    assert_false(idm("7.0", OC_KEY_BIGINT, "7"));
    assert_false(idm("null", OC_KEY_BIGINT, "7"));
    assert_true(idm("\"home\"", OC_KEY_TEXT, "home"));
    assert_false(idm("\"Home\"", OC_KEY_TEXT, "home"));
    assert_false(idm("\"hom\"", OC_KEY_TEXT, "home"));
    assert_true(idm("\"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11\"", OC_KEY_UUID,
                    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_false(idm("\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12\"", OC_KEY_UUID,
                     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
}

static void test_version_cmp(void **state)
{
    (void)state;
    assert_int_equal(cmp("1", "2"), -1);
    assert_int_equal(cmp("2", "2"), 0);
    assert_int_equal(cmp("3", "2"), 1);
    /* the extremes: compared, not subtracted */
    assert_int_equal(cmp("-9223372036854775808", "9223372036854775807"), -1);
    assert_int_equal(cmp("9223372036854775807", "-9223372036854775808"), 1);
    /* integers exactly, even where doubles could not tell them apart */
    assert_int_equal(cmp("9007199254740993", "9007199254740992"), 1);
    /* an integer and a real compare as numbers */
    assert_int_equal(cmp("1", "1.5"), -1);
    assert_int_equal(cmp("2.0", "2"), 0);
    assert_int_equal(cmp("2.5", "-1e3"), 1);
    /* timestamps as text, in one time zone */
    assert_int_equal(
        cmp("\"2024-05-01T10:00:00+00:00\"", "\"2024-05-01T10:00:00.5+00:00\""), -1);
    assert_int_equal(
        cmp("\"2024-05-01T10:00:01+00:00\"", "\"2024-05-01T10:00:00.9+00:00\""), 1);
    /* timestamps as instants: across a DST fall-back (America/New_York) */
    assert_int_equal(
        cmp("\"2024-11-03T01:30:00-04:00\"", "\"2024-11-03T01:10:00-05:00\""), -1);
    assert_int_equal(
        cmp("\"2024-11-03T01:10:00-05:00\"", "\"2024-11-03T01:30:00-04:00\""), 1);
    /* and across formats: an app's Z and milliseconds */
    assert_int_equal(cmp("\"2024-05-01T12:00:00Z\"", "\"2024-05-01T12:00:00.25+00:00\""),
                     -1);
    assert_int_equal(
        cmp("\"2024-05-01T12:00:00.250Z\"", "\"2024-05-01T12:00:00.25+00:00\""), 0);
    assert_int_equal(cmp("\"2024-05-01 14:00:00.3+02\"", "\"2024-05-01T12:00:00.25Z\""),
                     1);
    assert_int_equal(cmp("\"2024-05-01T12:00:00+05:30:10\"", "\"2024-05-01T06:29:50Z\""),
                     0);
    /* without an offset, both: as wall times */
    assert_int_equal(cmp("\"2024-05-01T12:00:00\"", "\"2024-05-01T12:00:00.5\""), -1);
    /* one zoned and one not, or one not a timestamp: unordered */
    assert_int_equal(cmp("\"2024-05-01T12:00:00\"", "\"2024-05-01T12:00:00Z\""), 2);
    assert_int_equal(cmp("\"2024-05-01T12:00:00Z\"", "\"soon\""), 2);
    assert_int_equal(cmp("\"a\"", "\"a\""), 0);
    assert_int_equal(cmp("\"\"", "\"a\""), -1);
    /* different kinds say nothing */
    assert_int_equal(cmp("1", "\"1\""), 2);
    assert_int_equal(cmp("\"1\"", "1"), 2);
    assert_int_equal(cmp("null", "null"), 2);
    assert_int_equal(cmp("true", "false"), 2);
    assert_int_equal(cmp("[1]", "[1]"), 2);
    assert_int_equal(cmp("{}", "1"), 2);
}

static oc_mc_decision_t decide(const char *version, int found, uint32_t flags,
                               const char *cached)
{
    json_t *v = version ? js(version) : NULL;
    oc_mc_decision_t d =
        oc_write_decide(v, "version", found, flags, cached, cached ? strlen(cached) : 0);
    json_decref(v);
    return d;
}

static void test_decide(void **state)
{
    (void)state;
    uint32_t obj = oc_entry_flags(OC_ENTRY_OBJECT);
    /* nothing there: nothing proves the push newer */
    assert_int_equal(decide("5", 0, 0, NULL), OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide(NULL, 0, 0, NULL), OC_MC_WRITE_UNORDERED);
    /* a tombstone is never replaced by a push, versioned or not */
    assert_int_equal(decide("5", 1, oc_entry_flags(OC_ENTRY_TOMBSTONE), ""), OC_MC_KEEP);
    assert_int_equal(decide(NULL, 1, oc_entry_flags(OC_ENTRY_TOMBSTONE), ""), OC_MC_KEEP);
    /* newer and equal replace; older loses */
    assert_int_equal(decide("5", 1, obj, "{\"version\":4}"), OC_MC_WRITE);
    assert_int_equal(decide("5", 1, obj, "{\"version\":5}"), OC_MC_WRITE);
    assert_int_equal(decide("5", 1, obj, "{\"version\":6}"), OC_MC_KEEP);
    assert_int_equal(decide("\"2024-05-02\"", 1, obj, "{\"version\":\"2024-05-01\"}"),
                     OC_MC_WRITE);
    assert_int_equal(decide("\"2024-05-01\"", 1, obj, "{\"version\":\"2024-05-02\"}"),
                     OC_MC_KEEP);
    /* no version_column on the model: cannot order */
    assert_int_equal(decide(NULL, 1, obj, "{\"version\":4}"), OC_MC_WRITE_UNORDERED);
    /* a cached object that cannot be compared */
    assert_int_equal(decide("5", 1, obj, "{\"id\":1}"), OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, obj, "{\"version\":\"4\"}"), OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, obj, "{\"version\":null}"), OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("null", 1, obj, "{\"version\":4}"), OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, obj, "[{\"version\":9}]"), OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, obj, "{\"version\":9"), OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, obj, ""), OC_MC_WRITE_UNORDERED);
    /* not an object entry: a missing row, a lease, somebody else's item */
    assert_int_equal(decide("5", 1, oc_entry_flags(OC_ENTRY_MISSING), ""),
                     OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, oc_entry_flags(OC_ENTRY_LEASE), ""),
                     OC_MC_WRITE_UNORDERED);
    /* a pushed object nothing checked yet: a newer or equal push is not proved
     * current by it (it may be a late push older than a commit whose
     * invalidation emptied the key): unordered, checked; an older one loses
     * (the pushed version was committed: pushes come after their commit) */
    assert_int_equal(decide("5", 1, oc_entry_flags(OC_ENTRY_PUSHED), "{\"version\":4}"),
                     OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, oc_entry_flags(OC_ENTRY_PUSHED), "{\"version\":5}"),
                     OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, oc_entry_flags(OC_ENTRY_PUSHED), "{\"version\":6}"),
                     OC_MC_KEEP);
    assert_int_equal(decide(NULL, 1, oc_entry_flags(OC_ENTRY_PUSHED), "{\"version\":6}"),
                     OC_MC_WRITE_UNORDERED);
    assert_int_equal(decide("5", 1, 0, "{\"version\":9}"), OC_MC_WRITE_UNORDERED);
    /* flags of another entry version are not ours, even with kind OBJECT */
    assert_int_equal(decide("5", 1, obj ^ (1u << 8), "{\"version\":9}"),
                     OC_MC_WRITE_UNORDERED);
    /* found = 0 wins over whatever flags come along */
    assert_int_equal(decide("5", 0, oc_entry_flags(OC_ENTRY_TOMBSTONE), NULL),
                     OC_MC_WRITE_UNORDERED);
}

static void test_outcome(void **state)
{
    (void)state;
    assert_int_equal(oc_write_outcome(0, OC_MC_R_OK), OC_WRITE_STORED);
    assert_int_equal(oc_write_outcome(1, OC_MC_R_OK), OC_WRITE_DELETED);
    assert_int_equal(oc_write_outcome(0, OC_MC_R_NOT_STORED), OC_WRITE_NOT_STORED);
    assert_int_equal(oc_write_outcome(0, OC_MC_R_ERROR), OC_WRITE_FAILED);
    assert_int_equal(oc_write_outcome(1, OC_MC_R_ERROR), OC_WRITE_FAILED);
    /* a cas or add that kept losing is not a stale push: it failed */
    assert_int_equal(oc_write_outcome(0, OC_MC_R_EXISTS), OC_WRITE_FAILED);
    assert_int_equal(oc_write_outcome(0, OC_MC_R_NOT_FOUND), OC_WRITE_FAILED);
}

static void test_needs_check(void **state)
{
    (void)state;
    assert_true(oc_write_needs_check(0, 1, OC_MC_R_OK, 1));
    assert_false(oc_write_needs_check(0, 1, OC_MC_R_OK, 0)); /* proved newer */
    assert_false(oc_write_needs_check(0, 0, OC_MC_R_OK, 1)); /* push_check off */
    assert_true(oc_write_needs_check(1, 1, OC_MC_R_OK, 0));  /* a tombstone: always */
    assert_false(oc_write_needs_check(1, 0, OC_MC_R_OK, 0)); /* ... with push_check */
    assert_false(oc_write_needs_check(1, 1, OC_MC_R_ERROR, 0));
    assert_false(oc_write_needs_check(0, 1, OC_MC_R_NOT_STORED, 1));
    assert_false(oc_write_needs_check(0, 1, OC_MC_R_ERROR, 1));
}

static void test_check_agrees(void **state)
{
    (void)state;
    json_t *pushed = js("{\"id\":1,\"name\":\"a\",\"tags\":[1,2],\"v\":1.5}");
    assert_true(oc_write_check_agrees(pushed, S("{\"id\":1,\"name\":\"a\",\"tags\":[1,2],"
                                                "\"v\":1.5}")));
    /* member order and white space do not matter */
    assert_true(
        oc_write_check_agrees(pushed, S("{ \"v\":1.50, \"tags\":[1,2],\"name\":\"a\","
                                        "\"id\":1 }")));
    assert_false(
        oc_write_check_agrees(pushed, S("{\"id\":1,\"name\":\"b\",\"tags\":[1,2],"
                                        "\"v\":1.5}")));
    assert_false(
        oc_write_check_agrees(pushed, S("{\"id\":1,\"name\":\"a\",\"tags\":[2,1],"
                                        "\"v\":1.5}")));
    /* a field more or less */
    assert_false(
        oc_write_check_agrees(pushed, S("{\"id\":1,\"name\":\"a\",\"tags\":[1,2]}")));
    assert_false(
        oc_write_check_agrees(pushed, S("{\"id\":1,\"name\":\"a\",\"tags\":[1,2],"
                                        "\"v\":1.5,\"x\":null}")));
    /* no row, or a row that is not JSON: the push is not confirmed */
    assert_false(oc_write_check_agrees(pushed, NULL, 0));
    assert_false(oc_write_check_agrees(pushed, S("{\"id\":1")));
    assert_false(oc_write_check_agrees(pushed, S("")));
    json_decref(pushed);
    /* an integer is not a real, as parsed: the row wins the swap */
    pushed = js("{\"n\":1.0}");
    assert_false(oc_write_check_agrees(pushed, S("{\"n\":1}")));
    assert_true(oc_write_check_agrees(pushed, S("{\"n\":1.00}")));
    json_decref(pushed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_json_object), cmocka_unit_test(test_parse_body),
        cmocka_unit_test(test_version_cmp),    cmocka_unit_test(test_decide),
        cmocka_unit_test(test_outcome),        cmocka_unit_test(test_needs_check),
        cmocka_unit_test(test_check_agrees),   cmocka_unit_test(test_id_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

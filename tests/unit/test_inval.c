/* Unit tests for oc_inval's rules: which claimed outbox rows go to the feed
 * (as keys or whole models), which become memcached deletes (never one a
 * client could not have asked for: that would inject commands), and the
 * id read back from a cache key for the requeue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_conf.h"
#include "oc_inval.h"
#include "oc_key.h"

#define MAXK 40

static void test_feed_row(void **state)
{
    (void)state;
    assert_int_equal(oc_inval_feed_row(4, "42", 2, 0, MAXK), OC_INVAL_FEED_KEY);
    assert_int_equal(oc_inval_feed_row(4, NULL, 0, 0, MAXK), OC_INVAL_FEED_WHOLE);
    /* a requeued row whose retry failed again waits for one that works */
    assert_int_equal(oc_inval_feed_row(4, "42", 2, 1, MAXK), OC_INVAL_FEED_SKIP);
    assert_int_equal(oc_inval_feed_row(4, NULL, 0, 1, MAXK), OC_INVAL_FEED_SKIP);
    /* a model name longer than any model's */
    assert_int_equal(oc_inval_feed_row(OC_MODEL_NAME_MAX, "1", 1, 0, MAXK),
                     OC_INVAL_FEED_KEY);
    assert_int_equal(oc_inval_feed_row(OC_MODEL_NAME_MAX + 1, "1", 1, 0, MAXK),
                     OC_INVAL_FEED_SKIP);
    assert_int_equal(oc_inval_feed_row(OC_MODEL_NAME_MAX + 1, NULL, 0, 0, MAXK),
                     OC_INVAL_FEED_SKIP);
    /* keys no client could ask for */
    assert_int_equal(oc_inval_feed_row(4, "a b", 3, 0, MAXK), OC_INVAL_FEED_SKIP);
    assert_int_equal(oc_inval_feed_row(4, "a\r\nflush_all", 12, 0, MAXK),
                     OC_INVAL_FEED_SKIP);
    assert_int_equal(oc_inval_feed_row(4, "a\0b", 3, 0, MAXK), OC_INVAL_FEED_SKIP);
    assert_int_equal(oc_inval_feed_row(4, "", 0, 0, MAXK), OC_INVAL_FEED_SKIP);
    char key[MAXK + 1];
    memset(key, 'k', sizeof(key));
    assert_int_equal(oc_inval_feed_row(4, key, MAXK, 0, MAXK), OC_INVAL_FEED_KEY);
    assert_int_equal(oc_inval_feed_row(4, key, MAXK + 1, 0, MAXK), OC_INVAL_FEED_SKIP);
}

static void test_row_deletes(void **state)
{
    (void)state;
    assert_true(oc_inval_row_deletes(4, "42", 2, 1, MAXK));
    /* a TRUNCATE: the generation does it */
    assert_false(oc_inval_row_deletes(4, NULL, 0, 1, MAXK));
    /* a model not attached any more has no generation to key by */
    assert_false(oc_inval_row_deletes(4, "42", 2, 0, MAXK));
    assert_false(oc_inval_row_deletes(OC_MODEL_NAME_MAX + 1, "42", 2, 1, MAXK));
    assert_true(oc_inval_row_deletes(OC_MODEL_NAME_MAX, "42", 2, 1, MAXK));
    /* never onto a memcached command line: spaces, CR/LF, control bytes */
    assert_false(oc_inval_row_deletes(4, "1 2", 3, 1, MAXK));
    assert_false(oc_inval_row_deletes(4, "1\r\ndelete x", 11, 1, MAXK));
    assert_false(oc_inval_row_deletes(4, "1\t", 2, 1, MAXK));
    assert_false(oc_inval_row_deletes(4, "\x7f", 1, 1, MAXK));
    assert_false(oc_inval_row_deletes(4, "", 0, 1, MAXK));
    char key[MAXK + 1];
    memset(key, '9', sizeof(key));
    assert_true(oc_inval_row_deletes(4, key, MAXK, 1, MAXK));
    assert_false(oc_inval_row_deletes(4, key, MAXK + 1, 1, MAXK));
    /* UTF-8 ids are ids */
    assert_true(oc_inval_row_deletes(4, "\xc3\xa9t\xc3\xa9", 5, 1, MAXK));
}

static void test_key_id(void **state)
{
    (void)state;
    char ck[OC_KEY_MAX + 1];
    size_t off, len, idlen = 0;
    /* what apply() makes, read back: generation 0 and above, ids with ':' */
    const struct {
        const char *prefix, *model, *id;
        uint64_t gen;
    } cases[] = {
        {"oc:", "User", "42", 0},       {"oc:", "User", "42", 7},
        {"", "Post", "a:b:c", 0},       {"app:v2:", "Tag", "x", 18446744073709551615ull},
        {"p", "M", "id with:colon", 3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = oc_key_cache_key(cases[i].prefix, cases[i].model, cases[i].gen, cases[i].id,
                               strlen(cases[i].id), ck, sizeof(ck), &off);
        const char *id = oc_inval_key_id(ck, len, strlen(cases[i].prefix), &idlen);
        assert_non_null(id);
        assert_ptr_equal(id, ck + off);
        assert_int_equal(idlen, strlen(cases[i].id));
        assert_memory_equal(id, cases[i].id, idlen);
    }
    /* an empty id after the ':' */
    assert_non_null(oc_inval_key_id("oc:User:", 8, 3, &idlen));
    assert_int_equal(idlen, 0);
    /* no ':' within the key (past the prefix): none, and nothing past klen
     * is read (the ':' right after the key does not count) */
    assert_null(oc_inval_key_id("oc:User:1", 7, 3, &idlen));
    assert_null(oc_inval_key_id("oc:User", 7, 3, &idlen));
    assert_null(oc_inval_key_id("oc:", 3, 3, &idlen));
    assert_null(oc_inval_key_id("", 0, 0, &idlen));
    assert_null(oc_inval_key_id("oc", 2, 3, &idlen));
}

/* The consumer's check of the database's identity against memcached's marker
 * (docs/operations.md, "The database went back in time"). */
static void test_db_rule(void **state)
{
    (void)state;
    const char *now = "7312345678901234567 3 5000";
#define RULE(found, m) oc_inval_db_rule(found, m, strlen(m), now)
    /* a plain restart keeps its timeline, its position at least: nothing */
    assert_int_equal(RULE(1, "7312345678901234567 3 5000"), OC_INVAL_DB_SAME);
    assert_int_equal(RULE(1, "7312345678901234567 3 4999"), OC_INVAL_DB_SAME);
    assert_int_equal(RULE(1, "7312345678901234567 3 0"), OC_INVAL_DB_SAME);
    /* a marker written before the position was (2026-12-06): position 0 */
    assert_int_equal(RULE(1, "7312345678901234567 3"), OC_INVAL_DB_SAME);
    /* a promote (failover, point-in-time restore, switchover): bump,
     * whatever the positions */
    assert_int_equal(RULE(1, "7312345678901234567 2"), OC_INVAL_DB_TIMELINE);
    assert_int_equal(RULE(1, "7312345678901234567 2 9000"), OC_INVAL_DB_TIMELINE);
    /* another cluster (a restore into a new one, pg_upgrade) */
    assert_int_equal(RULE(1, "7312345678901234568 3"), OC_INVAL_DB_CLUSTER);
    assert_int_equal(RULE(1, "7312345678901234568 9 1"), OC_INVAL_DB_CLUSTER);
    /* same cluster and timeline, below the marker's position: a copy of
     * the data directory put back */
    assert_int_equal(RULE(1, "7312345678901234567 3 5001"), OC_INVAL_DB_LSN);
    assert_int_equal(RULE(1, "7312345678901234567 3 18446744073709551615"),
                     OC_INVAL_DB_LSN);
    /* an old primary left on an older timeline: neither bumps nor writes */
    assert_int_equal(RULE(1, "7312345678901234567 4"), OC_INVAL_DB_BEHIND);
    assert_int_equal(RULE(1, "7312345678901234567 4 1"), OC_INVAL_DB_BEHIND);
    /* no marker (memcached restarted, evicted), or not one: written only */
    assert_int_equal(RULE(0, ""), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, ""), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "7312345678901234567"), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "7312345678901234567 3 "), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "7312345678901234567 3 9000 "), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "7312345678901234567 3 9000 1"), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "7312345678901234567 3 x"), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "7312345678901234567 3 99999999999999999999"),
                     OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "x 3"), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "7312345678901234567  3"), OC_INVAL_DB_FIRST);
    assert_int_equal(RULE(1, "99999999999999999999999 3"), OC_INVAL_DB_FIRST);
    /* the marker's bytes are not a C string */
    assert_int_equal(oc_inval_db_rule(1, "7312345678901234567 3 5000junk", 26, now),
                     OC_INVAL_DB_SAME);
    assert_int_equal(oc_inval_db_rule(1, "7312345678901234567 3 5001junk", 26, now),
                     OC_INVAL_DB_LSN);
#undef RULE
}

/* One marker per set of models, whatever their order in the config; other
 * models (another service on the same pool and key_prefix) another one. */
static void test_marker_key(void **state)
{
    (void)state;
    oc_model_conf_t ab[2] = {{.name = "User"}, {.name = "Post"}};
    oc_model_conf_t ba[2] = {{.name = "Post"}, {.name = "User"}};
    oc_model_conf_t other[2] = {{.name = "Wt"}, {.name = "Item"}};
    oc_conf_t c1 = {.key_prefix = "oc:", .models = ab, .nmodels = 2};
    oc_conf_t c2 = {.key_prefix = "oc:", .models = ba, .nmodels = 2};
    oc_conf_t c3 = {.key_prefix = "oc:", .models = other, .nmodels = 2};
    oc_conf_t c4 = {.key_prefix = "oc:", .models = ab, .nmodels = 1};
    char k1[OC_INVAL_MARKER_KEY], k2[OC_INVAL_MARKER_KEY], k3[OC_INVAL_MARKER_KEY],
        k4[OC_INVAL_MARKER_KEY];
    oc_inval_marker_key(&c1, k1, sizeof(k1));
    oc_inval_marker_key(&c2, k2, sizeof(k2));
    oc_inval_marker_key(&c3, k3, sizeof(k3));
    oc_inval_marker_key(&c4, k4, sizeof(k4));
    assert_string_equal(k1, k2);
    assert_string_not_equal(k1, k3);
    assert_string_not_equal(k1, k4);
    assert_int_equal(strncmp(k1, "oc:objcached.db.", 16), 0);
    assert_int_equal(strlen(k1), 16 + 16);
    /* the longest key_prefix (32 bytes) fits */
    char prefix[33];
    memset(prefix, 'p', 32);
    prefix[32] = '\0';
    c1.key_prefix = prefix;
    oc_inval_marker_key(&c1, k1, sizeof(k1));
    assert_int_equal(strlen(k1), 32 + 13 + 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feed_row),   cmocka_unit_test(test_row_deletes),
        cmocka_unit_test(test_key_id),     cmocka_unit_test(test_db_rule),
        cmocka_unit_test(test_marker_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

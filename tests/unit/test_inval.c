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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feed_row),
        cmocka_unit_test(test_row_deletes),
        cmocka_unit_test(test_key_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

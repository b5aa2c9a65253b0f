/* Unit tests for oc_walowed: the models a WAL holder with wal_feed_keys =
 * off owes the feed, and when the debt must be paid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "oc_walowed.h"

static void test_models_owed_once_in_first_order(void **state)
{
    (void)state;
    oc_walowed_t o = {0};
    /* interned pointers repeat; an equal name under another pointer is
     * the same model too */
    char users_copy[] = "users";
    const char *a[] = {"users", "posts", "users", users_copy, "posts"};
    assert_int_equal(oc_walowed_add(&o, a, 5, 700, 10.0), OC_OK);
    assert_int_equal(o.n, 2);
    assert_string_equal(o.models[0], "users");
    assert_string_equal(o.models[1], "posts");
    assert_int_equal(o.commit_ts, 700);
    assert_true(o.since == 10.0);
    /* a later batch: a new model appended, the newest commit kept, the
     * first debt's time kept */
    const char *b[] = {"posts", "tags"};
    assert_int_equal(oc_walowed_add(&o, b, 2, 500, 11.0), OC_OK);
    assert_int_equal(o.n, 3);
    assert_string_equal(o.models[2], "tags");
    assert_int_equal(o.commit_ts, 700);
    assert_true(o.since == 10.0);
    assert_int_equal(oc_walowed_add(&o, b, 2, 900, 12.0), OC_OK);
    assert_int_equal(o.commit_ts, 900);
    oc_walowed_clear(&o);
    assert_int_equal(o.n, 0);
    assert_int_equal(o.commit_ts, 0);
    assert_true(o.since == 0);
    oc_walowed_free(&o);
}

static void test_many_models_grow(void **state)
{
    (void)state;
    oc_walowed_t o = {0};
    static char names[100][8];
    const char *p[100];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof(names[i]), "m%d", i);
        p[i] = names[i];
    }
    assert_int_equal(oc_walowed_add(&o, p, 100, 0, 1.0), OC_OK);
    assert_int_equal(oc_walowed_add(&o, p, 100, 0, 2.0), OC_OK);
    assert_int_equal(o.n, 100);
    for (int i = 0; i < 100; i++)
        assert_ptr_equal(o.models[i], p[i]);
    assert_int_equal(o.commit_ts, 0);
    oc_walowed_free(&o);
    assert_null(o.models);
}

static void test_nothing_added_owes_nothing(void **state)
{
    (void)state;
    oc_walowed_t o = {0};
    assert_int_equal(oc_walowed_add(&o, NULL, 0, 5, 3.0), OC_OK);
    assert_int_equal(o.n, 0);
    assert_true(o.since == 0);
    assert_int_equal(o.commit_ts, 0);
    /* nothing owed: never due, whatever the batch does */
    assert_false(oc_walowed_due(&o, 1, 1, 1e9, 0.25));
    /* a clock at 0 still marks a debt */
    const char *m[] = {"users"};
    assert_int_equal(oc_walowed_add(&o, m, 1, 0, 0.0), OC_OK);
    assert_true(o.since > 0);
    assert_true(oc_walowed_due(&o, 0, 0, 0.3, 0.25));
    oc_walowed_free(&o);
}

static void test_due(void **state)
{
    (void)state;
    oc_walowed_t o = {0};
    const char *m[] = {"users"};
    assert_int_equal(oc_walowed_add(&o, m, 1, 1, 100.0), OC_OK);
    /* a batch that neither claims nor appends waits, up to a heartbeat */
    assert_false(oc_walowed_due(&o, 0, 0, 100.0, 0.25));
    assert_false(oc_walowed_due(&o, 0, 0, 100.2, 0.25));
    assert_true(oc_walowed_due(&o, 0, 0, 100.25, 0.25));
    assert_true(oc_walowed_due(&o, 0, 0, 105.0, 0.25));
    /* a claim of caught_up_at, or any append, pays first */
    assert_true(oc_walowed_due(&o, 1, 0, 100.0, 0.25));
    assert_true(oc_walowed_due(&o, 0, 1, 100.0, 0.25));
    /* a clock that stepped back: not due by age (a claim still pays) */
    assert_false(oc_walowed_due(&o, 0, 0, 50.0, 0.25));
    assert_true(oc_walowed_due(&o, 1, 0, 50.0, 0.25));
    oc_walowed_clear(&o);
    assert_false(oc_walowed_due(&o, 1, 1, 200.0, 0.25));
    oc_walowed_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_owed_once_in_first_order),
        cmocka_unit_test(test_many_models_grow),
        cmocka_unit_test(test_nothing_added_owes_nothing),
        cmocka_unit_test(test_due),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

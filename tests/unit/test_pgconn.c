/* oc_pgconn's pure rules: which SQLSTATEs mean "the data of some row made
 * the statement fail" (a load may then be split to find the row), and the
 * reconnect schedule (doubles from OC_PGCONN_BACKOFF_MIN_MS, capped at
 * OC_PGCONN_BACKOFF_MAX_MS). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "oc_pgconn.h"
#include "oc_status.h"

static void test_row_errors(void **state)
{
    (void)state;
    assert_true(oc_pgconn_row_error("22012")); /* division_by_zero */
    assert_true(oc_pgconn_row_error("22P02")); /* invalid_text_representation */
    assert_true(oc_pgconn_row_error("2F005")); /* function ended without RETURN */
    assert_true(oc_pgconn_row_error("38001")); /* external routine exception */
    assert_true(oc_pgconn_row_error("39004")); /* external routine invocation */
    assert_true(oc_pgconn_row_error("P0001")); /* RAISE EXCEPTION */
}

static void test_not_row_errors(void **state)
{
    (void)state;
    /* the same for every id: splitting would only multiply the queries */
    assert_false(oc_pgconn_row_error("42P01")); /* undefined_table */
    assert_false(oc_pgconn_row_error("42703")); /* undefined_column */
    assert_false(oc_pgconn_row_error("42501")); /* insufficient_privilege */
    assert_false(oc_pgconn_row_error("57014")); /* query_canceled (statement_timeout) */
    assert_false(oc_pgconn_row_error("57P01")); /* admin_shutdown */
    assert_false(oc_pgconn_row_error("08006")); /* connection_failure */
    assert_false(oc_pgconn_row_error("53100")); /* disk_full */
    assert_false(oc_pgconn_row_error("40001")); /* serialization_failure */
    assert_false(oc_pgconn_row_error("XX000")); /* internal_error */
}

static void test_malformed(void **state)
{
    (void)state;
    assert_false(oc_pgconn_row_error(NULL));
    assert_false(oc_pgconn_row_error(""));
    assert_false(oc_pgconn_row_error("22"));
    assert_false(oc_pgconn_row_error("220120"));
    assert_false(oc_pgconn_row_error("p0001")); /* SQLSTATEs are upper case */
    assert_string_equal(oc_status_str(OC_EROW), "database error on a row");
}

static void test_backoff(void **state)
{
    (void)state;
    uint32_t ms = OC_PGCONN_BACKOFF_MIN_MS;
    const uint32_t want[] = {200, 400, 800, 1600, 2000, 2000, 2000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        ms = oc_pgconn_next_backoff(ms);
        assert_int_equal(ms, want[i]);
    }
    /* at the cap's half exactly: doubled to the cap; a ms more: the cap */
    assert_int_equal(oc_pgconn_next_backoff(OC_PGCONN_BACKOFF_MAX_MS / 2),
                     OC_PGCONN_BACKOFF_MAX_MS);
    assert_int_equal(oc_pgconn_next_backoff(OC_PGCONN_BACKOFF_MAX_MS / 2 + 1),
                     OC_PGCONN_BACKOFF_MAX_MS);
    assert_int_equal(oc_pgconn_next_backoff(OC_PGCONN_BACKOFF_MAX_MS / 2 - 1),
                     OC_PGCONN_BACKOFF_MAX_MS - 2);
    /* never past the cap, even from values it never holds (no wrap) */
    assert_int_equal(oc_pgconn_next_backoff(UINT32_MAX), OC_PGCONN_BACKOFF_MAX_MS);
    assert_int_equal(oc_pgconn_next_backoff(UINT32_MAX / 2 + 1),
                     OC_PGCONN_BACKOFF_MAX_MS);
    assert_int_equal(oc_pgconn_next_backoff(1), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_errors),
        cmocka_unit_test(test_not_row_errors),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

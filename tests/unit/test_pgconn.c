/* oc_pgconn's pure rule: which SQLSTATEs mean "the data of some row made
 * the statement fail" (a load may then be split to find the row). */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_errors),
        cmocka_unit_test(test_not_row_errors),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

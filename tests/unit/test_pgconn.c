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

/* The armed wait stays within [ms - ms/2, ms], covers that range, and two
 * connections (two states) do not draw the same waits in step. */
static void test_jitter(void **state)
{
    (void)state;
    const uint32_t steps[] = {
        1, 2, 3, OC_PGCONN_BACKOFF_MIN_MS, 1600, OC_PGCONN_BACKOFF_MAX_MS};
    uint64_t rng = 12345;
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        uint32_t ms = steps[s], lo = ms, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint32_t w = oc_pgconn_jitter(ms, &rng);
            assert_true(w >= ms - ms / 2 && w <= ms);
            lo = w < lo ? w : lo;
            hi = w > hi ? w : hi;
        }
        assert_int_equal(lo, ms - ms / 2); /* both ends are reached */
        assert_int_equal(hi, ms);
    }
    /* a zero state is not a stuck generator */
    uint64_t zero = 0;
    uint32_t first = oc_pgconn_jitter(OC_PGCONN_BACKOFF_MAX_MS, &zero);
    assert_true(zero != 0);
    int differs = 0;
    for (int i = 0; i < 50; i++)
        differs |= oc_pgconn_jitter(OC_PGCONN_BACKOFF_MAX_MS, &zero) != first;
    assert_true(differs);
    /* two connections seeded apart: their waits at the same steps differ */
    uint64_t a = 1, b = 2;
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += oc_pgconn_jitter(OC_PGCONN_BACKOFF_MAX_MS, &a) ==
                oc_pgconn_jitter(OC_PGCONN_BACKOFF_MAX_MS, &b);
    assert_true(same < 10);
}

/* libpq's lists: a host per element, a single port for all, hostaddr
 * beside host; the rest is left to libpq in one attempt. */
static void test_split_hosts(void **state)
{
    (void)state;
    oc_pgconn_host_t *h = NULL;
    assert_int_equal(oc_pgconn_split_hosts("a,b,c", NULL, "5432", &h), 3);
    assert_string_equal(h[0].host, "a");
    assert_string_equal(h[2].host, "c");
    assert_string_equal(h[1].port, "5432"); /* one port applies to all */
    assert_null(h[1].hostaddr);
    oc_pgconn_hosts_free(h, 3);

    assert_int_equal(oc_pgconn_split_hosts("a,/run/pg", "10.0.0.1,10.0.0.2", "1,2", &h),
                     2);
    assert_string_equal(h[1].host, "/run/pg");
    assert_string_equal(h[0].hostaddr, "10.0.0.1");
    assert_string_equal(h[1].hostaddr, "10.0.0.2");
    assert_string_equal(h[0].port, "1");
    assert_string_equal(h[1].port, "2");
    oc_pgconn_hosts_free(h, 2);

    assert_int_equal(oc_pgconn_split_hosts(NULL, "10.0.0.1,10.0.0.2", NULL, &h), 2);
    assert_null(h[0].host);
    assert_null(h[0].port);
    assert_string_equal(h[1].hostaddr, "10.0.0.2");
    oc_pgconn_hosts_free(h, 2);
}

static void test_split_hosts_left_to_libpq(void **state)
{
    (void)state;
    oc_pgconn_host_t *h = (oc_pgconn_host_t *)1;
    assert_int_equal(oc_pgconn_split_hosts(NULL, NULL, NULL, &h), 0);
    assert_null(h);
    assert_int_equal(oc_pgconn_split_hosts("", "", "", &h), 0);
    assert_int_equal(oc_pgconn_split_hosts("a", NULL, "5432", &h), 0);    /* one host */
    assert_int_equal(oc_pgconn_split_hosts("a,b", NULL, "1,2,3", &h), 0); /* ports */
    assert_int_equal(oc_pgconn_split_hosts("a,b", "1.1.1.1", NULL, &h), 0);
    assert_int_equal(oc_pgconn_split_hosts("a,,b", NULL, NULL, &h), 0); /* a default */
    assert_int_equal(oc_pgconn_split_hosts("a,b,", NULL, NULL, &h), 0);
    assert_int_equal(oc_pgconn_split_hosts(",a", NULL, NULL, &h), 0);
    assert_int_equal(oc_pgconn_split_hosts("a,b", NULL, "1,", &h), 0);
    assert_null(h);
}

static void test_attempt_timeout(void **state)
{
    (void)state;
    assert_int_equal(oc_pgconn_attempt_timeout_s(NULL), OC_PGCONN_CONNECT_TIMEOUT_S);
    assert_int_equal(oc_pgconn_attempt_timeout_s("10"), 10);
    assert_int_equal(oc_pgconn_attempt_timeout_s("1"), 2); /* libpq's minimum */
    assert_int_equal(oc_pgconn_attempt_timeout_s("3 "), 3);
    assert_int_equal(oc_pgconn_attempt_timeout_s("0"), OC_PGCONN_CONNECT_TIMEOUT_S);
    assert_int_equal(oc_pgconn_attempt_timeout_s("-4"), OC_PGCONN_CONNECT_TIMEOUT_S);
    assert_int_equal(oc_pgconn_attempt_timeout_s("5s"), OC_PGCONN_CONNECT_TIMEOUT_S);
    assert_int_equal(oc_pgconn_attempt_timeout_s(""), OC_PGCONN_CONNECT_TIMEOUT_S);
}

/* A round tries every host once, from the one that last came up. */
static void test_round(void **state)
{
    (void)state;
    int seen[3] = {0};
    for (int k = 0; k < 3; k++)
        seen[oc_pgconn_round_host(1, k, 3)]++;
    assert_int_equal(oc_pgconn_round_host(1, 0, 3), 1);
    assert_int_equal(oc_pgconn_round_host(1, 1, 3), 2);
    assert_int_equal(oc_pgconn_round_host(1, 2, 3), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(oc_pgconn_round_host(0, 0, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_errors),
        cmocka_unit_test(test_not_row_errors),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_split_hosts),
        cmocka_unit_test(test_split_hosts_left_to_libpq),
        cmocka_unit_test(test_attempt_timeout),
        cmocka_unit_test(test_round),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

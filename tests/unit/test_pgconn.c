/* Unit tests for oc_pgconn's reconnect schedule: the wait doubles from
 * OC_PGCONN_BACKOFF_MIN_MS and is capped at OC_PGCONN_BACKOFF_MAX_MS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "oc_pgconn.h"

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
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

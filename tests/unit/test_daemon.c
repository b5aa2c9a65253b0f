/* Unit tests for oc_daemon's rule: a lease outlives the load it guards
 * (load_timeout rounded up to the second, plus one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "oc_daemon.h"

static void test_lease_ttl(void **state)
{
    (void)state;
    assert_int_equal(oc_daemon_lease_ttl_s(10), 2); /* the smallest load_timeout */
    assert_int_equal(oc_daemon_lease_ttl_s(999), 2);
    assert_int_equal(oc_daemon_lease_ttl_s(1000), 2);
    assert_int_equal(oc_daemon_lease_ttl_s(1001), 3);     /* rounded up */
    assert_int_equal(oc_daemon_lease_ttl_s(5000), 6);     /* the default */
    assert_int_equal(oc_daemon_lease_ttl_s(600000), 601); /* the largest */
    assert_int_equal(oc_daemon_lease_ttl_s(0), 1);
    /* no wrap, whatever the input */
    assert_int_equal(oc_daemon_lease_ttl_s(UINT32_MAX), 4294968u + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

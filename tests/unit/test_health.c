/* Unit tests for oc_health's rule: a server's name as oc_mc_name gives it
 * ("host:port", "[v6]:port") split back into the host and port its PROBE
 * item names, hostile or broken names refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_health.h"

static void test_split_name(void **state)
{
    (void)state;
    char host[32];
    uint32_t port = 0;
    assert_int_equal(oc_health_split_name("127.0.0.1:11211", host, sizeof(host), &port),
                     0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 11211);
    assert_int_equal(oc_health_split_name("[::1]:11212", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 11212);
    assert_int_equal(oc_health_split_name("[fe80::1:2]:1", host, sizeof(host), &port), 0);
    assert_string_equal(host, "fe80::1:2");
    assert_int_equal(port, 1);
    assert_int_equal(
        oc_health_split_name("cache-1.example:65535", host, sizeof(host), &port), 0);
    assert_string_equal(host, "cache-1.example");
    assert_int_equal(port, 65535);
    /* a host that exactly fits, and one a byte too long */
    assert_int_equal(oc_health_split_name("abcdefg:1", host, 8, &port), 0);
    assert_string_equal(host, "abcdefg");
    assert_int_equal(oc_health_split_name("abcdefgh:1", host, 8, &port), -1);

    const char *bad[] = {
        "?", /* oc_mc_name of a server that is gone */
        "",
        "127.0.0.1",
        ":11211",
        "[]:11211",
        "[::1:11211",
        "::1]:11211",
        "[::1]11211",
        "h:",
        "h:x",
        "h:11211x",
        "h:-1",
        "h:65536",
        "h:18446744073709551617",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        port = 7;
        if (oc_health_split_name(bad[i], host, sizeof(host), &port) != -1)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(port, 7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

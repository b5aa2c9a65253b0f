/* Unit tests for oc_listen's reading of systemd's socket activation
 * variables (LISTEN_PID, LISTEN_FDS): strict, as sd_listen_fds(3) is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "oc_listen.h"

#define ME 4242L

static int parse(const char *pid, const char *fds, const char **why)
{
    *why = NULL;
    return oc_listen_fds_parse(pid, fds, ME, why);
}

static void test_activated(void **state)
{
    (void)state;
    const char *why;
    assert_int_equal(parse("4242", "1", &why), 1);
    assert_null(why);
    assert_int_equal(parse("4242", "2", &why), 2);
    assert_int_equal(parse("4242", "65536", &why), OC_LISTEN_FDS_MAX);
    assert_int_equal(parse("4242", "02", &why), 2); /* leading zero: still decimal */
}

/* Not for us: silently not activated. */
static void test_not_ours(void **state)
{
    (void)state;
    const char *why;
    assert_int_equal(parse(NULL, NULL, &why), 0);
    assert_int_equal(parse(NULL, "2", &why), 0);     /* no LISTEN_PID */
    assert_int_equal(parse("4243", "2", &why), 0);   /* another process's */
    assert_int_equal(parse("1", "2", &why), 0);      /* (systemd's own, say) */
    assert_int_equal(parse("4243", "abc", &why), 0); /* another's, whatever it says */
    assert_null(why);
}

static void test_malformed_pid(void **state)
{
    (void)state;
    const char *why;
    static const char *bad[] = {
        "",      "abc",   "-4242", "+4242", " 4242",
        "4242 ", "4242x", "0",     "0x10",  "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(bad[i], "2", &why), -1);
        assert_string_equal(why, "LISTEN_PID is not a process id");
    }
}

static void test_malformed_fds(void **state)
{
    (void)state;
    const char *why;
    assert_int_equal(parse("4242", NULL, &why), -1);
    assert_string_equal(why, "LISTEN_PID without LISTEN_FDS");
    static const char *nan[] = {"",
                                "abc",
                                "-1",
                                "+2",
                                " 2",
                                "2 ",
                                "2x",
                                "1.5",
                                "18446744073709551617",
                                "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(nan) / sizeof(nan[0]); i++) {
        assert_int_equal(parse("4242", nan[i], &why), -1);
        assert_string_equal(why, "LISTEN_FDS is not a number");
    }
    static const char *range[] = {"0", "65537", "99999", "2147483648"};
    for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++) {
        assert_int_equal(parse("4242", range[i], &why), -1);
        assert_string_equal(why, "LISTEN_FDS is out of range (1..65536)");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_activated),
        cmocka_unit_test(test_not_ours),
        cmocka_unit_test(test_malformed_pid),
        cmocka_unit_test(test_malformed_fds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

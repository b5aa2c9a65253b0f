/* Unit tests for objcache_cli_util: durations, exit codes, JSON, batch lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "objcache_cli_util.h"

static void test_duration(void **state)
{
    (void)state;
    unsigned ms = 0;
    assert_true(objcache_cli_duration("500ms", &ms));
    assert_int_equal(ms, 500);
    assert_true(objcache_cli_duration("2s", &ms));
    assert_int_equal(ms, 2000);
    assert_true(objcache_cli_duration("3", &ms));
    assert_int_equal(ms, 3000);
    assert_true(objcache_cli_duration("1m", &ms));
    assert_int_equal(ms, 60000);
    assert_true(objcache_cli_duration("60m", &ms));
    assert_int_equal(ms, 3600000);
    static const char *const bad[] = {"",          "0",   "0ms",  "61m",
                                      "3600001ms", "-1s", "1.5s", "1 s",
                                      "1h",        "s",   "1S",   "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(objcache_cli_duration(bad[i], &ms));
}

static void test_exit_codes(void **state)
{
    (void)state;
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_OK), 0);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_NOT_FOUND), 1);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_NOT_STORED), 1);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_EXISTS), 1);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_EINVAL), 2);
    for (int s = OBJCACHE_ENOMEM; s < OBJCACHE_STATUS_COUNT; s++)
        assert_int_equal(objcache_cli_exit_code((objcache_status_t)s), 3);
    assert_int_equal(objcache_cli_worse(1, 3), 3);
    assert_int_equal(objcache_cli_worse(2, 0), 2);
}

static void json_of(const char *s, size_t n, char *out, size_t cap)
{
    FILE *f = fmemopen(out, cap, "w");
    assert_non_null(f);
    objcache_cli_json_string(f, s, n);
    fclose(f);
}

static void test_json_string(void **state)
{
    (void)state;
    char out[128];
    json_of("User:1", 6, out, sizeof(out));
    assert_string_equal(out, "\"User:1\"");
    json_of("a\"b\\c\n\t\r\x01\x7f", 10, out, sizeof(out));
    assert_string_equal(out, "\"a\\\"b\\\\c\\n\\t\\r\\u0001\\u007f\"");
    json_of("caf\xc3\xa9", 5, out, sizeof(out));
    assert_string_equal(out, "\"caf\xc3\xa9\"");
    json_of("a\0b", 3, out, sizeof(out));
    assert_string_equal(out, "\"a\\u0000b\"");
}

static void test_json_number(void **state)
{
    (void)state;
    static const char *const yes[] = {"0", "42", "-7", "0.5", "12.250", "-0.1"};
    static const char *const no[] = {"",   "-",   "007",   "1.",
                                     ".5", "1e5", "1 2",   "0x10",
                                     "+1", "NaN", "1.2.3", "2.1.12-stable"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(objcache_cli_is_json_number(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(objcache_cli_is_json_number(no[i]));
}

static void test_split(void **state)
{
    (void)state;
    char *w[4];
    char l1[] = "  get  User:1\tUser:2  \r\n";
    assert_int_equal(objcache_cli_split(l1, w, 4, -1), 3);
    assert_string_equal(w[0], "get");
    assert_string_equal(w[2], "User:2");
    char l2[] = "push User:1 {\"name\": \"A B\"}  \n";
    assert_int_equal(objcache_cli_split(l2, w, 4, 2), 3);
    assert_string_equal(w[2], "{\"name\": \"A B\"}");
    char l3[] = "a b c d e";
    assert_int_equal(objcache_cli_split(l3, w, 4, -1), -1);
    char l4[] = "   \n";
    assert_int_equal(objcache_cli_split(l4, w, 4, -1), 0);
    char l5[] = "push User:1";
    assert_int_equal(objcache_cli_split(l5, w, 4, 2), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration),    cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_json_string), cmocka_unit_test(test_json_number),
        cmocka_unit_test(test_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

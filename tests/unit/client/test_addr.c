/* Unit tests for objcache_addr: every address form, and what is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "objcache_addr.h"

static void test_unix(void **state)
{
    (void)state;
    objcache_addr_t a;
    char err[OBJCACHE_ERRLEN];
    assert_int_equal(objcache_addr_parse("unix:/run/objcached/objcached.sock", &a, err),
                     OBJCACHE_OK);
    assert_int_equal(a.kind, OBJCACHE_ADDR_UNIX);
    assert_string_equal(a.path, "/run/objcached/objcached.sock");
    assert_string_equal(a.text, "unix:/run/objcached/objcached.sock");
    assert_int_equal(objcache_addr_parse("/tmp/x.sock", &a, err), OBJCACHE_OK);
    assert_string_equal(a.path, "/tmp/x.sock");
    assert_int_equal(objcache_addr_parse("unix:rel.sock", &a, err), OBJCACHE_OK);
    assert_string_equal(a.path, "rel.sock");
    assert_int_equal(objcache_addr_parse("unix:", &a, err), OBJCACHE_EINVAL);
    assert_string_equal(err, "empty unix socket path");
    char longp[200] = "unix:/";
    memset(longp + 6, 'p', 150);
    assert_int_equal(objcache_addr_parse(longp, &a, err), OBJCACHE_EINVAL);
    longp[5 + 107] = '\0'; /* exactly 107 bytes of path */
    assert_int_equal(objcache_addr_parse(longp, &a, err), OBJCACHE_OK);
    assert_int_equal(objcache_addr_parse("unix:/a\nb", &a, err), OBJCACHE_EINVAL);
}

static void test_tcp(void **state)
{
    (void)state;
    objcache_addr_t a;
    char err[OBJCACHE_ERRLEN];
    assert_int_equal(objcache_addr_parse("127.0.0.1:11311", &a, err), OBJCACHE_OK);
    assert_int_equal(a.kind, OBJCACHE_ADDR_TCP);
    assert_string_equal(a.host, "127.0.0.1");
    assert_string_equal(a.port, "11311");
    assert_int_equal(objcache_addr_parse("localhost:1", &a, err), OBJCACHE_OK);
    assert_string_equal(a.host, "localhost");
    assert_int_equal(objcache_addr_parse("[::1]:65535", &a, err), OBJCACHE_OK);
    assert_string_equal(a.host, "::1");
    assert_string_equal(a.port, "65535");
    assert_int_equal(objcache_addr_parse("[fe80::1%lo]:80", &a, err), OBJCACHE_OK);
    assert_string_equal(a.host, "fe80::1%lo");
}

static void test_bad(void **state)
{
    (void)state;
    objcache_addr_t a;
    char err[OBJCACHE_ERRLEN];
    static const char *const bad[] = {
        "",        "localhost", "host:",    ":80",         "host:0",  "host:65536",
        "host:-1", "host:+80",  "host:8 0", "host:123456", "::1:80",  "[::1]",
        "[::1]80", "[]:80",     "[::1:80",  "a b:80",      "h\tx:80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(objcache_addr_parse(bad[i], &a, err), OBJCACHE_EINVAL);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(objcache_addr_parse(NULL, &a, NULL), OBJCACHE_EINVAL);
    assert_int_equal(objcache_addr_parse("::1:80", &a, err), OBJCACHE_EINVAL);
    assert_string_equal(err, "an IPv6 address goes in brackets: [addr]:port");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unix),
        cmocka_unit_test(test_tcp),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

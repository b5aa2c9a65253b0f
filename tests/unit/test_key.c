/* Unit tests for oc_key: model lookup, id validation and canonical ids. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_key.h"

static oc_model_conf_t models[] = {
    {.name = "User", .key_type = OC_KEY_BIGINT},
    {.name = "Counter", .key_type = OC_KEY_INTEGER},
    {.name = "Doc", .key_type = OC_KEY_UUID},
    {.name = "Page", .key_type = OC_KEY_TEXT},
};
static oc_conf_t conf = {.models = models, .nmodels = 4};

static oc_status_t parse(const char *key, oc_key_t *k, char *err)
{
    return oc_key_parse(&conf, key, strlen(key), 247, k, err);
}

static void expect_canon(const char *key, size_t model_idx, const char *canon)
{
    oc_key_t k;
    char err[OC_ERRLEN] = "";
    assert_int_equal(parse(key, &k, err), OC_OK);
    assert_int_equal(k.model_idx, model_idx);
    assert_string_equal(k.canon, canon);
    assert_int_equal(k.canon_len, strlen(canon));
}

static void expect_error(const char *key, const char *msg)
{
    oc_key_t k;
    char err[OC_ERRLEN] = "";
    assert_int_not_equal(parse(key, &k, err), OC_OK);
    assert_string_equal(err, msg);
}

static void test_bigint(void **state)
{
    (void)state;
    expect_canon("User:1", 0, "1");
    expect_canon("User:007", 0, "7");
    expect_canon("User:-0", 0, "0");
    expect_canon("User:-42", 0, "-42");
    expect_canon("User:9223372036854775807", 0, "9223372036854775807");
    expect_canon("User:-9223372036854775808", 0, "-9223372036854775808");
    expect_error("User:9223372036854775808",
                 "bad id for bigint key: User:9223372036854775808");
    expect_error("User:-9223372036854775809",
                 "bad id for bigint key: User:-9223372036854775809");
    expect_error("User:99999999999999999999999",
                 "bad id for bigint key: User:99999999999999999999999");
    expect_error("User:abc", "bad id for bigint key: User:abc");
    expect_error("User:1.5", "bad id for bigint key: User:1.5");
    expect_error("User:+1", "bad id for bigint key: User:+1");
    expect_error("User:-", "bad id for bigint key: User:-");
    expect_error("User:1;DROP", "bad id for bigint key: User:1;DROP");
    /* short ids (up to 18 digits, parsed without overflow checks and copied
     * when already canonical) against longer ones */
    expect_canon("User:0", 0, "0");
    expect_canon("User:00", 0, "0");
    expect_canon("User:-00", 0, "0");
    expect_canon("User:-007", 0, "-7");
    expect_canon("User:10", 0, "10");
    expect_canon("User:999999999999999999", 0, "999999999999999999");
    expect_canon("User:-999999999999999999", 0, "-999999999999999999");
    expect_canon("User:000000000000000001", 0, "1");
    expect_canon("User:0000000000000000001", 0, "1");
    expect_canon("User:1000000000000000000", 0, "1000000000000000000");
    expect_error("User:12x", "bad id for bigint key: User:12x");
    expect_error("User:-x", "bad id for bigint key: User:-x");
    expect_error("User:--1", "bad id for bigint key: User:--1");
}

static void test_integer(void **state)
{
    (void)state;
    expect_canon("Counter:2147483647", 1, "2147483647");
    expect_canon("Counter:-2147483648", 1, "-2147483648");
    expect_error("Counter:2147483648", "bad id for integer key: Counter:2147483648");
    expect_error("Counter:-2147483649", "bad id for integer key: Counter:-2147483649");
    expect_canon("Counter:-02147483648", 1, "-2147483648");
    expect_error("Counter:99999999999", "bad id for integer key: Counter:99999999999");
}

static void test_uuid(void **state)
{
    (void)state;
    expect_canon("Doc:A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", 2,
                 "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    expect_canon("Doc:a0eebc999c0b4ef8bb6d6bb9bd380a11", 2,
                 "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    expect_error("Doc:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
                 "bad id for uuid key: Doc:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1");
    expect_error("Doc:a0eebc99x9c0b-4ef8-bb6d-6bb9bd380a11",
                 "bad id for uuid key: Doc:a0eebc99x9c0b-4ef8-bb6d-6bb9bd380a11");
    expect_error("Doc:g0eebc999c0b4ef8bb6d6bb9bd380a11",
                 "bad id for uuid key: Doc:g0eebc999c0b4ef8bb6d6bb9bd380a11");
    expect_error("Doc:{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                 "bad id for uuid key: Doc:{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}");
}

static void test_text(void **state)
{
    (void)state;
    expect_canon("Page:caf\xc3\xa9", 3, "caf\xc3\xa9");
    expect_canon("Page:a:b:c", 3, "a:b:c"); /* split on the first colon only */
    expect_canon("Page:');DROP_TABLE_users;--", 3, "');DROP_TABLE_users;--");
    expect_error("Page:\xff\xfe", "bad id for text key: Page:\xff\xfe");
    expect_error("Page:\xc3", "bad id for text key: Page:\xc3");         /* truncated */
    expect_error("Page:\xc0\xaf", "bad id for text key: Page:\xc0\xaf"); /* overlong */
    expect_error("Page:\xed\xa0\x80",
                 "bad id for text key: Page:\xed\xa0\x80"); /* surrogate */
    expect_error("Page:\xf4\x90\x80\x80",
                 "bad id for text key: Page:\xf4\x90\x80\x80"); /* > U+10FFFF */
}

static void test_format(void **state)
{
    (void)state;
    expect_error("User", "bad key format: User");
    expect_error("User:", "bad key format: User:");
    expect_error(":1", "bad key format: :1");
    expect_error("Nope:1", "unknown model: Nope:1");
    expect_error("user:1", "unknown model: user:1"); /* model names are exact */
    expect_error("Us\x01r:1", "bad key format: control character");
    char big[300];
    memset(big, 'a', sizeof(big));
    memcpy(big, "Page:", 5);
    big[248] = '\0';
    expect_error(big, "key too long");
    big[247] = '\0';
    oc_key_t k;
    char err[OC_ERRLEN];
    assert_int_equal(parse(big, &k, err), OC_OK);
    /* error echoes are cut to 64 bytes */
    memcpy(big, "Nope:", 5);
    assert_int_not_equal(parse(big, &k, err), OC_OK);
    assert_int_equal(strlen(err), strlen("unknown model: ") + 64);
}

static void test_number_and_cache_key_formatting(void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal(oc_key_format_u64(buf, 0), 1);
    assert_string_equal(buf, "0");
    assert_int_equal(oc_key_format_u64(buf, UINT64_MAX), 20);
    assert_string_equal(buf, "18446744073709551615");
    assert_int_equal(oc_key_format_int(buf, INT64_MIN), 20);
    assert_string_equal(buf, "-9223372036854775808");
    assert_int_equal(oc_key_format_int(buf, -1), 2);
    assert_string_equal(buf, "-1");
    assert_int_equal(oc_key_format_int(buf, INT64_MAX), 19);
    assert_string_equal(buf, "9223372036854775807");
    /* against snprintf at every digit count's edges (9..10, 99..100, …),
     * where the two-digits-at-a-time loop hands over to its last digit(s) */
    for (uint64_t p10 = 1;; p10 *= 10) {
        uint64_t around[] = {p10 - 1, p10, p10 + 1, p10 * 5 + 3};
        for (size_t i = 0; i < sizeof(around) / sizeof(around[0]); i++) {
            char want[32];
            int wl = snprintf(want, sizeof(want), "%" PRIu64, around[i]);
            memset(buf, 'x', sizeof(buf));
            assert_int_equal(oc_key_format_u64(buf, around[i]), (size_t)wl);
            assert_string_equal(buf, want);
        }
        if (p10 > UINT64_MAX / 10)
            break;
    }
    char key[OC_KEY_MAX + 1];
    size_t off;
    size_t n = oc_key_cache_key("oc:", "User", 0, "42", 2, key, sizeof(key), &off);
    assert_string_equal(key, "oc:User:42");
    assert_int_equal(n, 10);
    assert_int_equal(off, 8);
    n = oc_key_cache_key("", "User", UINT64_MAX, "-7", 2, key, sizeof(key), &off);
    assert_string_equal(key, "User~18446744073709551615:-7");
    assert_int_equal(n, strlen(key));
    assert_int_equal(off, n - 2);
}

/* oc_key_cache_key_room is what a batch of deletes gives each key (packed,
 * no longer OC_KEY_MAX + 1 each): it must hold the key whatever the
 * generation, the largest included, without cutting it. */
static void test_cache_key_room_fits_every_generation(void **state)
{
    (void)state;
    static const uint64_t gens[] = {0, 1, 9, 10, 12345, UINT64_MAX};
    char id[OC_KEY_MAX + 1];
    memset(id, '7', sizeof(id));
    for (size_t g = 0; g < sizeof(gens) / sizeof(gens[0]); g++) {
        for (size_t len = 1; len <= 200; len += 37) {
            size_t room = oc_key_cache_key_room(3, 4, len), off;
            char buf[OC_KEY_MAX + 64];
            memset(buf, 'x', sizeof(buf));
            size_t n = oc_key_cache_key("oc:", "User", gens[g], id, len, buf, room, &off);
            assert_true(n + 1 <= room);
            assert_int_equal(n - off, len); /* the id whole */
            assert_int_equal(buf[n], '\0');
            assert_int_equal(buf[room], 'x'); /* nothing past its room */
        }
    }
    assert_int_equal(oc_key_cache_key_room(10, 10, 100000), OC_KEY_MAX + 1);
}

int main(void)
{
    /* The space case: the protocol splits on spaces, so test via tokens. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bigint),
        cmocka_unit_test(test_integer),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_number_and_cache_key_formatting),
        cmocka_unit_test(test_cache_key_room_fits_every_generation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

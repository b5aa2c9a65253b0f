/* Unit tests for oc_md5: RFC 1321's test suite, and the first word of the
 * digest against libmemcached's own MD5 for every length across a block
 * boundary (the words ketama places keys by), one by one and side by side
 * (oc_md5_word0_many). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libmemcached/memcached.h>

#include "oc_md5.h"

static void hex(const uint8_t d[OC_MD5_LEN], char out[2 * OC_MD5_LEN + 1])
{
    for (int i = 0; i < OC_MD5_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void test_rfc1321_suite(void **state)
{
    (void)state;
    static const char *const v[][2] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
         "d174ab98d277d9f5a5611c2c9f419d9f"},
        {"1234567890123456789012345678901234567890123456789012345678901234567890123456"
         "7890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t d[OC_MD5_LEN];
        char h[2 * OC_MD5_LEN + 1];
        oc_md5(v[i][0], strlen(v[i][0]), d);
        hex(d, h);
        if (strcmp(h, v[i][1]) != 0)
            fail_msg("md5(\"%s\") = %s, not %s", v[i][0], h, v[i][1]);
    }
}

static void test_first_word_is_libmemcached_md5(void **state)
{
    (void)state;
    char buf[300];
    uint32_t r = 2463534242u;
    for (size_t len = 0; len < sizeof(buf); len++)
        for (int round = 0; round < 20; round++) {
            for (size_t i = 0; i < len; i++) {
                r ^= r << 13, r ^= r >> 17, r ^= r << 5; /* xorshift32 */
                buf[i] = (char)(r & 0xff);
            }
            uint8_t d[OC_MD5_LEN];
            oc_md5(buf, len, d);
            uint32_t want = memcached_generate_hash_value(buf, len, MEMCACHED_HASH_MD5);
            if (oc_md5_word(d, 0) != want)
                fail_msg("length %zu: %08x, libmemcached %08x", len, oc_md5_word(d, 0),
                         want);
        }
}

/* Batches of every size up to three vectors' worth, lengths drawn so that
 * one- and two-block messages (and the 55/56 edge) mix in one batch, and
 * messages that share bytes: each lane must hash its own message. Each
 * message is a heap block of exactly its length (an empty one: none, or
 * NULL), so a lane that reads past its key fails under ASan. */
static void test_side_by_side_is_one_by_one(void **state)
{
    (void)state;
    static char bufs[3 * OC_MD5_LANES + 2][300];
    const char *msg[3 * OC_MD5_LANES + 2];
    size_t len[3 * OC_MD5_LANES + 2];
    uint32_t got[3 * OC_MD5_LANES + 2];
    uint32_t r = 88172645u;
    for (int round = 0; round < 4000; round++) {
        size_t n = (size_t)round % (3 * OC_MD5_LANES + 2); /* 0 too */
        for (size_t i = 0; i < n; i++) {
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            static const size_t edge[] = {0, 1, 54, 55, 56, 63, 64, 65, 250};
            len[i] = r % 4 == 0 ? edge[(r >> 8) % 9] : (r >> 4) % (round % 2 ? 56 : 300);
            for (size_t j = 0; j < len[i]; j++) {
                r ^= r << 13, r ^= r >> 17, r ^= r << 5;
                bufs[i][j] = (char)(round % 3 ? 'a' + r % 3 : r & 0xff);
            }
            char *exact = len[i] ? malloc(len[i]) : NULL;
            if (len[i]) {
                assert_non_null(exact);
                memcpy(exact, bufs[i], len[i]);
            }
            msg[i] = len[i] || i % 2 ? exact : bufs[i]; /* empty: NULL or a pointer */
        }
        memset(got, 0xa5, sizeof(got));
        oc_md5_word0_many(n, msg, len, got);
        for (size_t i = 0; i < n; i++) {
            uint8_t d[OC_MD5_LEN];
            oc_md5(msg[i], len[i], d);
            if (got[i] != oc_md5_word(d, 0))
                fail_msg(
                    "round %d, message %zu of %zu (%zu bytes): %08x, one by one %08x",
                    round, i, n, len[i], got[i], oc_md5_word(d, 0));
        }
        assert_int_equal(got[n], 0xa5a5a5a5u); /* nothing written past n */
        for (size_t i = 0; i < n; i++)
            if (len[i])
                free((void *)msg[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc1321_suite),
        cmocka_unit_test(test_first_word_is_libmemcached_md5),
        cmocka_unit_test(test_side_by_side_is_one_by_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for oc_map, checked against a plain array model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "oc_map.h"

#define N 5000

static char keys[N][16];

static void test_put_get_del(void **state)
{
    (void)state;
    oc_map_t *m = oc_map_new(4);
    assert_non_null(m);
    int present[N] = {0};
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
    unsigned r = 12345;
    for (int step = 0; step < 100000; step++) {
        r = r * 1103515245u + 12345u;
        int i = (int)((r >> 8) % N);
        size_t len = strlen(keys[i]);
        if ((r >> 4) & 1) {
            assert_int_equal(oc_map_put(m, keys[i], len, keys[i]), OC_OK);
            present[i] = 1;
        } else {
            void *v = oc_map_del(m, keys[i], len);
            assert_ptr_equal(v, present[i] ? keys[i] : NULL);
            present[i] = 0;
        }
        if (step % 1000 == 0) {
            size_t count = 0;
            for (int k = 0; k < N; k++) {
                count += (size_t)present[k];
                assert_ptr_equal(oc_map_get(m, keys[k], strlen(keys[k])),
                                 present[k] ? keys[k] : NULL);
            }
            assert_int_equal(oc_map_count(m), count);
        }
    }
    oc_map_free(m);
}

/* oc_map_add: inserts once, then reports the value it holds. */
static void test_add(void **state)
{
    (void)state;
    oc_map_t *m = oc_map_new(2);
    assert_non_null(m);
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            void *had = (void *)1;
            assert_int_equal(
                oc_map_add(m, keys[i], strlen(keys[i]), keys[i] + round, &had), OC_OK);
            assert_ptr_equal(had, round ? keys[i] : NULL);
        }
    assert_int_equal(oc_map_count(m), N);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(oc_map_get(m, keys[i], strlen(keys[i])), keys[i]);
    oc_map_free(m);
}

static void test_binary_keys(void **state)
{
    (void)state;
    oc_map_t *m = oc_map_new(0);
    static const char a[] = {'x', 0, 'y'}, b[] = {'x', 0, 'z'};
    assert_int_equal(oc_map_put(m, a, 3, (void *)a), OC_OK);
    assert_null(oc_map_get(m, b, 3));
    assert_null(oc_map_get(m, a, 1));
    assert_ptr_equal(oc_map_get(m, a, 3), a);
    oc_map_free(m);
}

/* oc_hash reads 8 bytes a step and then a tail: a key differing in any
 * one byte, or only in length (trailing NULs), hashes differently, at every
 * length around the steps; the low 16 bits (a table's bucket) spread; and
 * the seed changes every hash. */
static void test_hash(void **state)
{
    (void)state;
    unsigned char k[40] = {0};
    for (size_t len = 0; len <= sizeof(k); len++) {
        uint64_t h = oc_hash(k, len);
        if (len < sizeof(k))
            assert_true(oc_hash(k, len + 1) != h); /* one more NUL byte */
        for (size_t i = 0; i < len; i++) {
            k[i] = 1;
            assert_true(oc_hash(k, len) != h);
            k[i] = 0;
        }
    }
    /* only p[0..len) counts: the same key amid other bytes hashes alike
     * (the tail is read with overlapping loads, never past either end) */
    for (size_t len = 0; len <= 24; len++) {
        unsigned char a[48], b[48];
        memset(a, 0x11, sizeof(a));
        memset(b, 0xee, sizeof(b));
        for (size_t i = 0; i < len; i++)
            a[8 + i] = b[16 + i] = (unsigned char)('a' + i * 7 % 26);
        assert_int_equal(oc_hash(a + 8, len), oc_hash(b + 16, len));
    }
    static unsigned char seen[65536 / 8];
    size_t distinct = 0;
    char key[32];
    for (int i = 0; i < 4096; i++) {
        int n = snprintf(key, sizeof(key), "oc:User~1796500113333782:%d", i);
        uint16_t b = (uint16_t)oc_hash(key, (size_t)n);
        distinct += !(seen[b >> 3] >> (b & 7) & 1);
        seen[b >> 3] |= (unsigned char)(1u << (b & 7));
    }
    assert_true(distinct > 3900); /* 4096 into 65536 buckets: about 3970 expected */
    uint64_t before = oc_hash("oc:User:1", 9);
    oc_hash_seed(12345);
    assert_true(oc_hash("oc:User:1", 9) != before);
    assert_int_equal(oc_hash("oc:User:1", 9), oc_hash("oc:User:1", 9));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del),
        cmocka_unit_test(test_binary_keys),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del),
        cmocka_unit_test(test_binary_keys),
        cmocka_unit_test(test_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

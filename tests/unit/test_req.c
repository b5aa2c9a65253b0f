/* Unit tests for oc_req's rules: a get's keys deduped into unique cache keys
 * (each slot pointing at its unique key), and the choice between one
 * multi-get per server and meta gets that lease each miss, by the share of
 * recent gets that missed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_map.h"
#include "oc_req.h"

/* Dedupe keys[0..n) as req_parse_keys does; returns the unique count. */
static uint32_t dedupe(const char *const *keys, size_t n, uint32_t *slot)
{
    oc_map_t *seen = n > 1 ? oc_map_new(n) : NULL;
    uint32_t nu = 0;
    for (size_t i = 0; i < n; i++) {
        int is_new = -1;
        assert_int_equal(
            oc_req_unique(seen, keys[i], strlen(keys[i]), nu, &slot[i], &is_new), OC_OK);
        assert_int_equal(is_new, slot[i] == nu);
        nu += (uint32_t)is_new;
    }
    oc_map_free(seen);
    return nu;
}

static void test_unique(void **state)
{
    (void)state;
    uint32_t slot[8];
    const char *one[] = {"oc:User:1"};
    assert_int_equal(dedupe(one, 1, slot), 1);
    assert_int_equal(slot[0], 0);

    const char *dup[] = {"oc:User:1", "oc:User:2", "oc:User:1",
                         "oc:Post:1", "oc:User:2", "oc:User:1"};
    assert_int_equal(dedupe(dup, 6, slot), 3);
    const uint32_t want[] = {0, 1, 0, 2, 1, 0};
    assert_memory_equal(slot, want, sizeof(want));

    /* keys that share a prefix, or differ in the last byte, or only in
     * the generation, are different keys */
    const char *near[] = {"oc:User:1",   "oc:User:10", "oc:User:1 ",
                          "oc:User~1:1", "oc:User:1",  "oc:User:11"};
    assert_int_equal(dedupe(near, 6, slot), 5);
    assert_int_equal(slot[4], 0);
    assert_int_equal(slot[5], 4);

    /* all the same */
    const char *same[] = {"k", "k", "k", "k"};
    assert_int_equal(dedupe(same, 4, slot), 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(slot[i], 0);

    /* no map (one key): always new, whatever came before */
    int is_new = 0;
    uint32_t idx = 0;
    assert_int_equal(oc_req_unique(NULL, "k", 1, 7, &idx, &is_new), OC_OK);
    assert_true(is_new);
    assert_int_equal(idx, 7);

    /* index 0 is stored as a value that is not NULL, and the largest index
     * comes back whole */
    oc_map_t *m = oc_map_new(2);
    assert_int_equal(oc_req_unique(m, "a", 1, 0, &idx, &is_new), OC_OK);
    assert_int_equal(oc_req_unique(m, "b", 1, UINT32_MAX - 1, &idx, &is_new), OC_OK);
    assert_int_equal(oc_req_unique(m, "a", 1, 5, &idx, &is_new), OC_OK);
    assert_false(is_new);
    assert_int_equal(idx, 0);
    assert_int_equal(oc_req_unique(m, "b", 1, 5, &idx, &is_new), OC_OK);
    assert_false(is_new);
    assert_int_equal(idx, UINT32_MAX - 1);
    assert_int_equal(oc_map_count(m), 2);
    oc_map_free(m);
}

static void test_miss_share(void **state)
{
    (void)state;
    double s = 0;
    /* every key misses: meta gets from the 2nd get on (1/32 is under one
     * in twenty, 1 - (31/32)^2 over it) */
    s = oc_req_miss_share(s, 100, 100);
    assert_false(oc_req_use_mg(s));
    s = oc_req_miss_share(s, 100, 100);
    assert_true(oc_req_use_mg(s));
    assert_true(s - (1 - (31.0 / 32.0) * (31.0 / 32.0)) < 1e-12);
    /* keys, not gets: one key in a hundred missing in every get stays on
     * multi-gets (counting gets with a miss, it went to meta gets) */
    s = 0;
    for (int i = 0; i < 2000; i++)
        s = oc_req_miss_share(s, 1, 100);
    assert_true(s > 0.009 && s < 0.011);
    assert_false(oc_req_use_mg(s));
    /* steady state: it tends to the share of keys that miss */
    for (int i = 0; i < 2000; i++)
        s = oc_req_miss_share(s, 3, 100);
    assert_true(s > 0.029 && s < 0.031);
    assert_false(oc_req_use_mg(s));
    for (int i = 0; i < 2000; i++)
        s = oc_req_miss_share(s, 10, 100);
    assert_true(s > 0.099 && s < 0.101);
    assert_true(oc_req_use_mg(s));
    /* gets that hit everything bring it back under: 0.1 (31/32)^k < 0.05
     * from k = 22 */
    for (int i = 0; i < 21; i++)
        s = oc_req_miss_share(s, 0, 100);
    assert_true(oc_req_use_mg(s));
    s = oc_req_miss_share(s, 0, 100);
    assert_false(oc_req_use_mg(s));
    /* it stays within [0, 1] */
    for (int i = 0; i < 5000; i++)
        s = oc_req_miss_share(s, 7, 7);
    assert_true(s <= 1.0 && s > 0.99);
    /* a get that read nothing (the near-cache answered it all), or more
     * misses than keys read, leaves it as it was */
    assert_true(oc_req_miss_share(0.3, 0, 0) == 0.3);
    assert_true(oc_req_miss_share(0.3, 5, 4) == 0.3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unique),
        cmocka_unit_test(test_miss_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

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

static int near(double a, double b)
{
    return a - b < 1e-9 && b - a < 1e-9;
}

/* n gets, each reading `read` keys of which `missed` missed */
static void gets(oc_req_misses_t *m, int n, size_t missed, size_t read)
{
    for (int i = 0; i < n; i++)
        oc_req_misses_add(m, missed, read);
}

static void test_miss_share(void **state)
{
    (void)state;
    oc_req_misses_t m = {0, 0};
    /* nothing read yet: multi-gets */
    assert_false(oc_req_use_mg(&m));
    /* every key misses: meta gets from the 2nd get on */
    gets(&m, 1, 100, 100);
    assert_true(oc_req_use_mg(&m));
    /* keys, not gets: one key in a hundred missing in every get stays on
     * multi-gets (counting gets with a miss, it went to meta gets) */
    m = (oc_req_misses_t){0, 0};
    gets(&m, 2000, 1, 100);
    assert_true(near(m.missed / m.read, 0.01));
    assert_false(oc_req_use_mg(&m));
    /* a get weighs by its keys: nine gets of 100 keys that all hit for
     * each get of one key that misses is 1 key in 901 missed, not the
     * average of the gets' shares (a tenth) */
    m = (oc_req_misses_t){0, 0};
    for (int i = 0; i < 200; i++) {
        gets(&m, 9, 0, 100);
        gets(&m, 1, 1, 1);
        assert_false(oc_req_use_mg(&m));
    }
    /* steady state: it tends to the share of keys that miss */
    gets(&m, 2000, 3, 100);
    assert_true(near(m.missed / m.read, 0.03));
    assert_false(oc_req_use_mg(&m));
    gets(&m, 2000, 10, 100);
    assert_true(near(m.missed / m.read, 0.10));
    assert_true(oc_req_use_mg(&m));
    /* gets that hit everything bring it back under: 0.1 (31/32)^k < 0.05
     * from k = 22 */
    gets(&m, 21, 0, 100);
    assert_true(oc_req_use_mg(&m));
    gets(&m, 1, 0, 100);
    assert_false(oc_req_use_mg(&m));
    /* at one in twenty exactly: multi-gets */
    m = (oc_req_misses_t){5, 100};
    assert_false(oc_req_use_mg(&m));
    m = (oc_req_misses_t){5.001, 100};
    assert_true(oc_req_use_mg(&m));
    /* a get that read nothing (the near-cache answered it all), or more
     * misses than keys read, changes nothing */
    m = (oc_req_misses_t){3, 10};
    oc_req_misses_add(&m, 0, 0);
    oc_req_misses_add(&m, 5, 4);
    assert_true(m.missed == 3 && m.read == 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unique),
        cmocka_unit_test(test_miss_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

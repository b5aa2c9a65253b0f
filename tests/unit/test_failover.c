/* Unit tests for oc_failover: the keys of a server that is down go to the
 * gutter (ketama over it) or to the rest of the pool (ketama over the rest),
 * never to a server out of service, the same for every caller that sees
 * the same servers down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "oc_failover.h"
#include "oc_place.h"

static oc_mc_server_conf_t pool[] = {
    {.host = "10.0.0.1", .port = 11211, .weight = 1},
    {.host = "10.0.0.2", .port = 11211, .weight = 1},
    {.host = "10.0.0.3", .port = 11211, .weight = 1},
    {.host = "10.0.0.4", .port = 11211, .weight = 1},
};
static oc_mc_server_conf_t gutter[] = {
    {.host = "10.0.1.1", .port = 11211, .weight = 1},
    {.host = "10.0.1.2", .port = 11211, .weight = 1},
};

/* Which servers are in service, for the up callback. */
typedef struct states {
    int pool_down[4];
    int gutter_down[2];
    int calls;
} states_t;

static int up(void *arg, int g, size_t idx)
{
    states_t *s = arg;
    s->calls++;
    return g ? !s->gutter_down[idx] : !s->pool_down[idx];
}

static int all_up(void *arg, int g, size_t idx)
{
    (void)arg, (void)g, (void)idx;
    return 1;
}

static void test_rest_of_the_pool(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_failover_t *f = oc_failover_new(pool, 4, NULL, 0, err);
    assert_non_null(f);
    oc_place_t *all = oc_place_new(pool, 4, err);
    unsigned char skip[4] = {0, 0, 1, 0};
    oc_place_t *rest = oc_place_new_except(pool, 4, skip, err);
    states_t st = {.pool_down = {0, 0, 1, 0}};
    char key[32];
    size_t per[4] = {0}, moved = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "oc:User:%d", i);
        if (oc_place_server(all, key, strlen(key)) != 2)
            continue;
        moved++;
        int g = -1;
        size_t t = oc_failover_target(f, key, strlen(key), 2, up, &st, &g);
        assert_int_equal(g, 0);
        assert_int_not_equal(t, 2);
        /* exactly ketama over the three servers left */
        assert_int_equal(t, oc_place_server(rest, key, strlen(key)));
        per[t]++;
    }
    assert_true(moved > 3000);
    /* spread over every server left, not piled on one */
    for (size_t s = 0; s < 4; s++)
        assert_true(s == 2 ? per[s] == 0 : per[s] > moved / 6);
    oc_place_free(all);
    oc_place_free(rest);
    oc_failover_free(f);
}

static void test_chain_skips_servers_down(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_failover_t *f = oc_failover_new(pool, 4, NULL, 0, err);
    states_t one = {.pool_down = {1, 0, 0, 0}};
    states_t two = {.pool_down = {1, 0, 0, 1}};
    unsigned char skip0[4] = {1, 0, 0, 0}, skip03[4] = {1, 0, 0, 1};
    oc_place_t *p0 = oc_place_new_except(pool, 4, skip0, err);
    oc_place_t *p03 = oc_place_new_except(pool, 4, skip03, err);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int g;
        size_t a = oc_failover_target(f, key, strlen(key), 0, up, &one, &g);
        size_t b = oc_failover_target(f, key, strlen(key), 0, up, &two, &g);
        assert_int_equal(a, oc_place_server(p0, key, strlen(key)));
        /* a second server down moves only the keys that went to it */
        if (a != 3)
            assert_int_equal(a, b);
        else
            assert_int_equal(b, oc_place_server(p03, key, strlen(key)));
        assert_true(b == 1 || b == 2);
    }
    /* every server down: nowhere to go */
    states_t all = {.pool_down = {1, 1, 1, 1}};
    int g;
    assert_int_equal(oc_failover_target(f, "k", 1, 0, up, &all, &g), OC_FAILOVER_NONE);
    /* a primary out of range: nowhere either */
    assert_int_equal(oc_failover_target(f, "k", 1, 9, up, &one, &g), OC_FAILOVER_NONE);
    oc_place_free(p0);
    oc_place_free(p03);
    oc_failover_free(f);
}

static void test_gutter(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_failover_t *f = oc_failover_new(pool, 4, gutter, 2, err);
    oc_place_t *gp = oc_place_new(gutter, 2, err);
    states_t st = {.pool_down = {0, 1, 0, 0}};
    char key[32];
    size_t per[2] = {0};
    for (int i = 0; i < 4000; i++) {
        snprintf(key, sizeof(key), "oc:Doc:%d", i);
        int g = -1;
        size_t t = oc_failover_target(f, key, strlen(key), 1, up, &st, &g);
        /* the gutter, never the rest of the pool */
        assert_int_equal(g, 1);
        assert_int_equal(t, oc_place_server(gp, key, strlen(key)));
        per[t]++;
    }
    assert_true(per[0] > 1000 && per[1] > 1000);
    /* a gutter server down: its share goes to the other one */
    st.gutter_down[0] = 1;
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "oc:Doc:%d", i);
        int g;
        assert_int_equal(oc_failover_target(f, key, strlen(key), 1, up, &st, &g), 1);
    }
    /* the whole gutter down: nowhere (the pool is not used instead) */
    st.gutter_down[1] = 1;
    int g;
    assert_int_equal(oc_failover_target(f, "x", 1, 1, up, &st, &g), OC_FAILOVER_NONE);
    oc_place_free(gp);
    oc_failover_free(f);
}

static void test_one_server_pool_has_no_failover(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_failover_t *f = oc_failover_new(pool, 1, NULL, 0, err);
    states_t st = {.pool_down = {1}};
    int g;
    assert_int_equal(oc_failover_target(f, "k", 1, 0, up, &st, &g), OC_FAILOVER_NONE);
    oc_failover_free(f);
}

static void test_placements_are_reused(void **state)
{
    (void)state;
    /* More subsets than slots, asked round and round: answers stay right
     * (a slot reused for another subset never answers for the old one). */
    char err[OC_ERRLEN];
    static oc_mc_server_conf_t many[12];
    static char hosts[12][16];
    for (int i = 0; i < 12; i++) {
        snprintf(hosts[i], sizeof(hosts[i]), "10.1.0.%d", i + 1);
        many[i] = (oc_mc_server_conf_t){.host = hosts[i], .port = 11211, .weight = 1};
    }
    oc_failover_t *f = oc_failover_new(many, 12, NULL, 0, err);
    char key[32];
    for (int round = 0; round < 3; round++)
        for (size_t primary = 0; primary < 12; primary++) {
            unsigned char skip[12] = {0};
            skip[primary] = 1;
            oc_place_t *want = oc_place_new_except(many, 12, skip, err);
            for (int i = 0; i < 200; i++) {
                snprintf(key, sizeof(key), "r%d:%d", round, i);
                int g;
                size_t t =
                    oc_failover_target(f, key, strlen(key), primary, all_up, NULL, &g);
                assert_int_equal(t, oc_place_server(want, key, strlen(key)));
            }
            oc_place_free(want);
        }
    oc_failover_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rest_of_the_pool),
        cmocka_unit_test(test_chain_skips_servers_down),
        cmocka_unit_test(test_gutter),
        cmocka_unit_test(test_one_server_pool_has_no_failover),
        cmocka_unit_test(test_placements_are_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

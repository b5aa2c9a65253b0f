/* Unit tests for oc_place: objcached places every key where any
 * libmemcached client of the same pool (weighted ketama) looks for it, and
 * its placement cache never changes an answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <libmemcached/memcached.h>

#include "oc_place.h"

static oc_mc_server_conf_t servers[] = {
    {.host = "127.0.0.1", .port = 11211, .weight = 1},
    {.host = "127.0.0.1", .port = 11212, .weight = 2},
    {.host = "127.0.0.2", .port = 11211, .weight = 1},
};

/* What an app's libmemcached client does (bench/lg_mc.c does the same). */
static memcached_st *app_client(void)
{
    memcached_st *m = memcached_create(NULL);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    for (size_t i = 0; i < 3; i++)
        memcached_server_add_with_weight(m, servers[i].host, servers[i].port,
                                         servers[i].weight);
    return m;
}

static size_t app_server(memcached_st *m, const char *key)
{
    uint32_t i = memcached_generate_hash(m, key, strlen(key));
    const memcached_instance_st *inst = memcached_server_instance_by_position(m, i);
    for (size_t j = 0; j < 3; j++)
        if (strcmp(memcached_server_name(inst), servers[j].host) == 0 &&
            memcached_server_port(inst) == servers[j].port)
            return j;
    fail_msg("libmemcached placed %s on a server we do not know", key);
    return 0;
}

static void test_agrees_with_libmemcached(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_place_t *p = oc_place_new(servers, 3, err);
    assert_non_null(p);
    memcached_st *m = app_client();
    size_t per[3] = {0};
    char key[128];
    for (int round = 0; round < 2; round++) /* the second round hits the cache */
        for (int i = 0; i < 20000; i++) {
            snprintf(key, sizeof(key), "oc:User:%d%s", i,
                     i % 7 ? "" : ":a-long-suffix-past-the-cached-key-length-of-62-bytes-x");
            size_t s = oc_place_server(p, key, strlen(key));
            assert_int_equal(s, app_server(m, key));
            per[s] += round == 0;
        }
    /* weights: the weight-2 server holds about half */
    assert_true(per[1] > 8000 && per[1] < 12000);
    assert_true(per[0] > 3000 && per[2] > 3000);
    memcached_free(m);
    oc_place_free(p);
}

static void test_one_and_no_server(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_place_t *p = oc_place_new(servers, 1, err);
    assert_int_equal(oc_place_server(p, "k", 1), 0);
    oc_place_free(p);
    p = oc_place_new(servers, 0, err);
    assert_non_null(p);
    assert_int_equal(oc_place_server(p, "k", 1), 0);
    oc_place_free(p);
}

static void test_cache_collisions(void **state)
{
    (void)state;
    /* Keys that share a cache slot replace each other; the answer for
     * each must stay the hash's, never the other key's. */
    char err[OC_ERRLEN];
    oc_place_t *p = oc_place_new(servers, 3, err);
    memcached_st *m = app_client();
    char key[32];
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 50000; i += 997) {
            snprintf(key, sizeof(key), "k%d", i);
            assert_int_equal(oc_place_server(p, key, strlen(key)), app_server(m, key));
        }
    memcached_free(m);
    oc_place_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_with_libmemcached),
        cmocka_unit_test(test_one_and_no_server),
        cmocka_unit_test(test_cache_collisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

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

/* One server named twice with two weights: libmemcached's index of the
 * second maps back to the first (the same address), our continuum gives it
 * points of its own, so oc_place_new's check disagrees and falls back. */
static oc_mc_server_conf_t dup[] = {
    {.host = "127.0.0.1", .port = 11211, .weight = 1},
    {.host = "127.0.0.1", .port = 11211, .weight = 3},
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
                     i % 7 ? ""
                           : ":a-long-suffix-past-the-cached-key-length-of-62-bytes-x");
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

/* Our own continuum, for many pools: sizes 2..12, weights 1..10, default
 * and other ports, names and addresses. It must be the one in use (the
 * check at oc_place_new did not fall back) and agree with libmemcached on
 * every key. */
static void test_own_ketama_for_many_pools(void **state)
{
    (void)state;
    static const char *const hosts[] = {"127.0.0.1", "10.1.2.3", "cache-a.internal",
                                        "::1", "memcached"};
    uint32_t r = 88172645u;
    char names[12][64];
    oc_mc_server_conf_t pool[12];
    for (int trial = 0; trial < 40; trial++) {
        size_t n = 2 + (size_t)trial % 11;
        for (size_t i = 0; i < n; i++) {
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            /* distinct addresses: the default port (named without it)
             * only on the first five, whose hosts differ */
            snprintf(names[i], sizeof(names[i]), "%s", hosts[(i + (size_t)trial) % 5]);
            pool[i] = (oc_mc_server_conf_t){
                .host = names[i],
                .port = (uint16_t)(i < 5 && r % 3 == 0 ? 11211 : 20000 + i),
                .weight = trial % 2 ? 1 : 1 + (r >> 8) % 10};
        }
        char err[OC_ERRLEN];
        oc_place_t *p = oc_place_new(pool, n, err);
        assert_non_null(p);
        assert_true(oc_place_own(p));
        memcached_st *m = memcached_create(NULL);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                               MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
        for (size_t i = 0; i < n; i++)
            memcached_server_add_with_weight(m, pool[i].host, pool[i].port,
                                             pool[i].weight);
        char key[128];
        for (int i = 0; i < 5000; i++) {
            int len =
                snprintf(key, sizeof(key), "oc:Model%d~%d:%d", trial, i % 3, i * 7919);
            uint32_t h = memcached_generate_hash(m, key, (size_t)len);
            const memcached_instance_st *inst =
                memcached_server_instance_by_position(m, h);
            size_t s = oc_place_server(p, key, (size_t)len);
            assert_true(s < n);
            if (strcmp(memcached_server_name(inst), pool[s].host) != 0 ||
                memcached_server_port(inst) != pool[s].port)
                fail_msg(
                    "pool %d (%zu servers): %s placed on %s:%u, libmemcached says %s:%u",
                    trial, n, key, pool[s].host, (unsigned)pool[s].port,
                    memcached_server_name(inst), (unsigned)memcached_server_port(inst));
        }
        memcached_free(m);
        oc_place_free(p);
    }
}

/* The fallback: a pool that names one server twice with two weights.
 * libmemcached's index of the second maps back to the first (the same
 * address), our continuum gives it points of its own, so the check at
 * oc_place_new disagrees: libmemcached places every key, and the answers
 * are still where a client of the pool looks. */
static void test_falls_back_to_libmemcached_when_it_disagrees(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_place_t *p = oc_place_new(dup, 3, err);
    assert_non_null(p);
    assert_false(oc_place_own(p));
    memcached_st *m = memcached_create(NULL);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    for (size_t i = 0; i < 3; i++)
        memcached_server_add_with_weight(m, dup[i].host, dup[i].port, dup[i].weight);
    char key[64];
    for (int i = 0; i < 5000; i++) {
        int len = snprintf(key, sizeof(key), "oc:User:%d", i);
        const memcached_instance_st *inst = memcached_server_instance_by_position(
            m, memcached_generate_hash(m, key, (size_t)len));
        size_t s = oc_place_server(p, key, (size_t)len);
        assert_string_equal(memcached_server_name(inst), dup[s].host);
        assert_int_equal(memcached_server_port(inst), dup[s].port);
    }
    memcached_free(m);
    oc_place_free(p);
}

static void test_points_follow_the_weights(void **state)
{
    (void)state;
    /* as many points as libmemcached's continuum holds, for pools of 1..64
     * servers of equal and of mixed weights (float rounding takes 4 points
     * off a server for some counts: both must do it alike) */
    char host[64][32];
    uint32_t r = 1;
    for (size_t n = 1; n <= 64; n++)
        for (int mixed = 0; mixed < 2; mixed++) {
            memcached_st *m = memcached_create(NULL);
            memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                                   MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
            memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
            uint32_t w[64];
            uint64_t total = 0, ours = 0;
            memcached_server_list_st list = NULL;
            memcached_return_t rc;
            for (size_t i = 0; i < n; i++) {
                r = r * 1103515245u + 12345u;
                w[i] = mixed ? 1 + (r >> 16) % 7 : 1;
                total += w[i];
                snprintf(host[i], sizeof(host[i]), "10.0.0.%zu", i + 1);
                list = memcached_server_list_append_with_weight(list, host[i], 11211,
                                                                w[i], &rc);
                assert_non_null(list);
            }
            /* one push: libmemcached sorts its continuum once, where an add
             * per server sorts it again each time (most of this test's time) */
            assert_int_equal(memcached_server_push(m, list), MEMCACHED_SUCCESS);
            memcached_server_list_free(list);
            for (size_t i = 0; i < n; i++)
                ours += oc_place_points(w[i], total, n);
            if (ours != m->ketama.continuum_points_counter)
                fail_msg("%zu servers (%s weights): %llu points, libmemcached %u", n,
                         mixed ? "mixed" : "equal", (unsigned long long)ours,
                         m->ketama.continuum_points_counter);
            memcached_free(m);
        }
    assert_int_equal(oc_place_points(2, 4, 3), 240);  /* 1, 2, 1: half of 480 */
    assert_int_equal(oc_place_points(1, 1000, 2), 0); /* too light for a point */
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

/* oc_place_servers answers what oc_place_server does for every key, on
 * our continuum, on libmemcached's (the fallback) and with one server, for
 * batches of every size (past OC_PLACE_BATCH too) mixing keys of one and
 * two MD5 blocks. */
static void test_batch_is_one_by_one(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_place_t *places[] = {oc_place_new(servers, 3, err), oc_place_new(dup, 3, err),
                            oc_place_new(servers, 1, err)};
    assert_true(oc_place_own(places[0]));
    assert_false(oc_place_own(places[1]));
    enum { MAX = 2 * OC_PLACE_BATCH + 3 };
    static char keys[MAX][256]; /* 16 + 189 bytes at most */
    const char *kp[MAX];
    size_t lens[MAX], got[MAX + 1];
    uint32_t r = 2463534242u;
    for (size_t pi = 0; pi < 3; pi++)
        for (size_t n = 0; n <= MAX; n += 1 + n / 16) {
            for (size_t i = 0; i < n; i++) {
                r ^= r << 13, r ^= r >> 17, r ^= r << 5;
                int len = snprintf(keys[i], sizeof(keys[i]), "oc:Item:%u", r % 1000000);
                size_t pad = r % 5 == 0 ? 40 + (r >> 8) % 150 : 0; /* past one block */
                memset(keys[i] + len, 'x', pad);
                lens[i] = (size_t)len + pad;
                kp[i] = keys[i];
            }
            got[n] = 12345;
            oc_place_servers(places[pi], n, kp, lens, got);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(got[i], oc_place_server(places[pi], kp[i], lens[i]));
            assert_int_equal(got[n], 12345);
        }
    for (size_t pi = 0; pi < 3; pi++)
        oc_place_free(places[pi]);
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

/* A libmemcached client that knows only the servers not skipped. */
static memcached_st *app_client_except(const unsigned char *skip)
{
    memcached_st *m = memcached_create(NULL);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    for (size_t i = 0; i < 3; i++)
        if (!skip[i])
            memcached_server_add_with_weight(m, servers[i].host, servers[i].port,
                                             servers[i].weight);
    return m;
}

static void test_except_is_ketama_over_the_rest(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    /* Every way to leave servers out: the answers are indexes of the whole
     * list, never a skipped one, and where such a client looks. */
    for (unsigned mask = 1; mask < 7; mask++) {
        unsigned char skip[3] = {mask & 1, (mask >> 1) & 1, (mask >> 2) & 1};
        oc_place_t *p = oc_place_new_except(servers, 3, skip, err);
        assert_non_null(p);
        memcached_st *m = app_client_except(skip);
        char key[64];
        size_t per[3] = {0};
        for (int round = 0; round < 2; round++)
            for (int i = 0; i < 5000; i++) {
                snprintf(key, sizeof(key), "oc:User:%d", i);
                size_t s = oc_place_server(p, key, strlen(key));
                assert_true(s < 3);
                assert_false(skip[s]);
                assert_int_equal(s, app_server(m, key));
                per[s]++;
            }
        for (size_t s = 0; s < 3; s++) /* every server left gets keys */
            assert_true(skip[s] ? per[s] == 0 : per[s] > 0);
        memcached_free(m);
        oc_place_free(p);
    }
    /* nothing left: no placement, and a reason */
    unsigned char all[3] = {1, 1, 1};
    err[0] = '\0';
    assert_null(oc_place_new_except(servers, 3, all, err));
    assert_true(strlen(err) > 0);
    /* nothing skipped: the same as the whole list */
    unsigned char none[3] = {0, 0, 0};
    oc_place_t *a = oc_place_new(servers, 3, err),
               *b = oc_place_new_except(servers, 3, none, err);
    char key[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "x%d", i);
        assert_int_equal(oc_place_server(a, key, strlen(key)),
                         oc_place_server(b, key, strlen(key)));
    }
    oc_place_free(a);
    oc_place_free(b);
}

static void test_except_equal_weights_moves_only_the_skipped(void **state)
{
    (void)state;
    /* With equal weights, leaving a server out moves only its own keys:
     * the failover of a down server takes its keys and nothing else. */
    static oc_mc_server_conf_t eq[] = {
        {.host = "10.0.0.1", .port = 11211, .weight = 1},
        {.host = "10.0.0.2", .port = 11211, .weight = 1},
        {.host = "10.0.0.3", .port = 11211, .weight = 1},
        {.host = "10.0.0.4", .port = 11211, .weight = 1},
    };
    char err[OC_ERRLEN];
    unsigned char skip[4] = {0, 1, 0, 0};
    oc_place_t *all = oc_place_new(eq, 4, err),
               *rest = oc_place_new_except(eq, 4, skip, err);
    char key[32];
    size_t moved = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "oc:User:%d", i);
        size_t a = oc_place_server(all, key, strlen(key));
        size_t b = oc_place_server(rest, key, strlen(key));
        if (a != 1)
            assert_int_equal(a, b);
        else
            moved++;
        assert_int_not_equal(b, 1);
    }
    assert_true(moved > 3000 && moved < 7000);
    oc_place_free(all);
    oc_place_free(rest);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_with_libmemcached),
        cmocka_unit_test(test_own_ketama_for_many_pools),
        cmocka_unit_test(test_points_follow_the_weights),
        cmocka_unit_test(test_falls_back_to_libmemcached_when_it_disagrees),
        cmocka_unit_test(test_one_and_no_server),
        cmocka_unit_test(test_cache_collisions),
        cmocka_unit_test(test_batch_is_one_by_one),
        cmocka_unit_test(test_except_is_ketama_over_the_rest),
        cmocka_unit_test(test_except_equal_weights_moves_only_the_skipped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for oc_near: hits, absences, TTLs, the epoch rules that keep a
 * read begun before an invalidation out, serving on and off, the byte limit
 * (SIEVE eviction, admission on the second sighting, a million keys), with
 * time passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "oc_near.h"

static oc_stats_t stats;

static oc_near_t *serving(size_t limit)
{
    memset(&stats, 0, sizeof(stats));
    oc_near_t *n = oc_near_new(limit, &stats);
    assert_non_null(n);
    oc_near_serve(n, 1);
    return n;
}

/* oc_near_put of a blob (NULL: an absence). */
static oc_near_put_t nput(oc_near_t *n, const char *key, size_t klen, uint32_t model,
                          oc_blob_t *b, double ttl, uint64_t since, double now)
{
    oc_near_val_t v = {.blob = b, .absent = b == NULL};
    return oc_near_put(n, key, klen, model, &v, ttl, since, now);
}

/* Put twice: the first offer only passes the doorkeeper. */
static oc_near_put_t put2(oc_near_t *n, const char *key, uint32_t model, oc_blob_t *b,
                          double ttl, double now)
{
    uint64_t since = oc_near_epoch(n);
    oc_near_put_t r = nput(n, key, strlen(key), model, b, ttl, since, now);
    if (r != OC_NEAR_DOOR)
        return r;
    return nput(n, key, strlen(key), model, b, ttl, since, now);
}

static oc_near_found_t get(oc_near_t *n, const char *key, double now, oc_blob_t **b)
{
    return oc_near_get(n, key, strlen(key), now, b);
}

static void test_hit_absent_and_expiry(void **state)
{
    (void)state;
    oc_near_t *n = serving(1 << 20);
    oc_blob_t *v = oc_blob_new("{\"id\":1}", 8), *got;
    assert_int_equal(get(n, "oc:User:1", 0, &got), OC_NEAR_MISS);
    /* the first offer is remembered, not admitted */
    assert_int_equal(nput(n, "oc:User:1", 9, 0, v, 2, oc_near_epoch(n), 0), OC_NEAR_DOOR);
    assert_int_equal(get(n, "oc:User:1", 0, &got), OC_NEAR_MISS);
    assert_int_equal(put2(n, "oc:User:1", 0, v, 2, 0), OC_NEAR_STORED);
    assert_int_equal(get(n, "oc:User:1", 1.9, &got), OC_NEAR_OBJECT);
    assert_ptr_equal(got, v);
    assert_int_equal(v->refs, 2); /* the cache holds one */
    /* expired at its ttl */
    assert_int_equal(get(n, "oc:User:1", 2.0, &got), OC_NEAR_MISS);
    assert_int_equal(stats.near_expired, 1);
    assert_int_equal(v->refs, 1);
    /* an absence */
    assert_int_equal(put2(n, "oc:User:2", 0, NULL, 5, 0), OC_NEAR_STORED);
    assert_int_equal(get(n, "oc:User:2", 1, &got), OC_NEAR_ABSENT);
    assert_null(got);
    assert_int_equal(stats.near_entries, 1);
    oc_blob_unref(v);
    oc_near_free(n);
}

static void test_invalidation_epochs(void **state)
{
    (void)state;
    oc_near_t *n = serving(1 << 20);
    oc_blob_t *v1 = oc_blob_new("v1", 2), *v2 = oc_blob_new("v2", 2), *got;
    assert_int_equal(put2(n, "k", 0, v1, 10, 0), OC_NEAR_STORED);
    /* a read begins; an invalidation of its key arrives; its value is refused */
    uint64_t since = oc_near_epoch(n);
    oc_near_invalidate(n, "k", 1);
    assert_int_equal(get(n, "k", 0, &got), OC_NEAR_MISS); /* dropped at once */
    assert_int_equal(nput(n, "k", 1, 0, v1, 10, since, 0), OC_NEAR_STALE);
    assert_int_equal(stats.near_refused_stale, 1);
    /* a read begun after the invalidation may store */
    assert_int_equal(nput(n, "k", 1, 0, v2, 10, oc_near_epoch(n), 0), OC_NEAR_STORED);
    assert_int_equal(get(n, "k", 0, &got), OC_NEAR_OBJECT);
    assert_ptr_equal(got, v2);
    /* another key's invalidation does not refuse this one (unless it shares
     * a hashed slot, which only ever refuses) */
    since = oc_near_epoch(n);
    oc_near_invalidate(n, "other", 5);
    assert_int_equal(nput(n, "k", 1, 0, v1, 10, since, 0), OC_NEAR_STORED);
    /* a model's invalidation refuses every read of that model begun before */
    since = oc_near_epoch(n);
    assert_int_equal(put2(n, "m1", 1, v1, 10, 0), OC_NEAR_STORED);
    oc_near_invalidate_model(n, 1);
    assert_int_equal(get(n, "m1", 0, &got), OC_NEAR_MISS);
    assert_int_equal(get(n, "k", 0, &got), OC_NEAR_OBJECT); /* model 0 stays */
    assert_int_equal(nput(n, "m1", 2, 1, v1, 10, since, 0), OC_NEAR_STALE);
    assert_int_equal(nput(n, "m2", 2, 1, v1, 10, since, 0), OC_NEAR_STALE);
    assert_int_equal(nput(n, "m1", 2, 1, v1, 10, oc_near_epoch(n), 0), OC_NEAR_STORED);
    oc_blob_unref(v1);
    oc_blob_unref(v2);
    oc_near_free(n);
}

static void test_serving_off_clears_and_refuses(void **state)
{
    (void)state;
    oc_near_t *n = serving(1 << 20);
    oc_blob_t *v = oc_blob_new("v", 1), *got;
    assert_int_equal(put2(n, "k", 0, v, 10, 0), OC_NEAR_STORED);
    uint64_t since = oc_near_epoch(n);
    oc_near_serve(n, 0);
    assert_int_equal(stats.near_serving, 0);
    assert_int_equal(stats.near_entries, 0);
    assert_int_equal(get(n, "k", 0, &got), OC_NEAR_MISS);
    assert_int_equal(nput(n, "k", 1, 0, v, 10, since, 0), OC_NEAR_OFF);
    /* back on: a read begun while it was off (or before) is still refused */
    oc_near_serve(n, 1);
    assert_int_equal(nput(n, "k", 1, 0, v, 10, since, 0), OC_NEAR_STALE);
    assert_int_equal(nput(n, "k", 1, 0, v, 10, oc_near_epoch(n), 0), OC_NEAR_STORED);
    /* limit 0 (a reload turning it off): cleared, never stores */
    oc_near_set_limit(n, 0);
    assert_int_equal(stats.near_entries, 0);
    assert_int_equal(put2(n, "k", 0, v, 10, 0), OC_NEAR_OFF);
    assert_int_equal(v->refs, 1);
    oc_blob_unref(v);
    oc_near_free(n);
}

static void test_limit_holds_with_a_million_keys(void **state)
{
    (void)state;
    size_t limit = 8u << 20;
    oc_near_t *n = serving(limit);
    oc_blob_t *v = oc_blob_new("{\"id\":12345,\"name\":\"someone\"}", 30);
    char key[32];
    for (int i = 0; i < 1000000; i++)
        for (int twice = 0; twice < 2; twice++) { /* the second offer admits */
            int kl = snprintf(key, sizeof(key), "oc:User:%d", i);
            nput(n, key, (size_t)kl, 0, v, 60, oc_near_epoch(n), 0);
            assert_true(stats.near_bytes <= limit);
        }
    assert_true(stats.near_stored >= 1000000 && stats.near_stored < 1004000);
    assert_true(stats.near_evictions > 0);
    assert_true(stats.near_entries > 1000 && stats.near_bytes > limit / 2);
    /* shrinking the limit evicts down to it at once */
    oc_near_set_limit(n, limit / 4);
    assert_true(stats.near_bytes <= limit / 4);
    oc_near_free(n);
    assert_int_equal(v->refs, 1);
    oc_blob_unref(v);
}

static void test_sieve_keeps_hot_keys(void **state)
{
    (void)state;
    /* room for about 100 entries; 20 hot keys read between cold ones */
    size_t one = oc_near_charge(12, 8, 1);
    oc_near_t *n = serving(0);
    oc_near_set_limit(n, 0);
    oc_near_free(n);
    memset(&stats, 0, sizeof(stats));
    n = oc_near_new(1, &stats);
    oc_near_serve(n, 1);
    /* the fixed tables count too: the limit is above them */
    oc_near_set_limit(n, (size_t)stats.near_bytes + 100 * one + 64 * one);
    oc_blob_t *v = oc_blob_new("01234567", 8), *got;
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "hot:%07d", i);
        assert_int_equal(put2(n, key, 0, v, 60, 0), OC_NEAR_STORED);
    }
    int hot_hits = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "cold:%06d", i);
        put2(n, key, 0, v, 60, 0);
        snprintf(key, sizeof(key), "hot:%07d", i % 20);
        hot_hits += get(n, key, 0, &got) == OC_NEAR_OBJECT;
    }
    assert_true(hot_hits > 4900); /* hot keys survive a stream of cold ones */
    oc_blob_unref(v);
    oc_near_free(n);
}

static void test_scan_of_distinct_keys_evicts_nothing(void **state)
{
    (void)state;
    oc_near_t *n = serving(1 << 20);
    oc_blob_t *v = oc_blob_new("x", 1), *got;
    assert_int_equal(put2(n, "hot", 0, v, 60, 0), OC_NEAR_STORED);
    char key[32];
    int admitted = 0;
    for (int i = 0; i < 200000; i++) { /* one huge multi-get, each key once */
        int kl = snprintf(key, sizeof(key), "scan:%d", i);
        admitted +=
            nput(n, key, (size_t)kl, 0, v, 60, oc_near_epoch(n), 0) == OC_NEAR_STORED;
        if (i % 1000 == 0) /* the app keeps reading its hot key meanwhile */
            assert_int_equal(get(n, "hot", 0, &got), OC_NEAR_OBJECT);
    }
    assert_true(admitted < 200000 / 250); /* the doorkeeper's false passes only */
    assert_int_equal(get(n, "hot", 0, &got), OC_NEAR_OBJECT);
    /* and an object too big for the cache never enters */
    static char big[40000];
    oc_blob_t *b = oc_blob_new(big, sizeof(big));
    assert_int_equal(put2(n, "big", 0, b, 60, 0), OC_NEAR_TOO_BIG);
    oc_blob_unref(b);
    oc_blob_unref(v);
    oc_near_free(n);
}

static void test_freshness_runs_out(void **state)
{
    (void)state;
    memset(&stats, 0, sizeof(stats));
    oc_near_t *n = oc_near_new(1 << 20, &stats);
    oc_blob_t *v = oc_blob_new("v", 1), *got;
    /* not fresh: nothing stored, nothing answered */
    assert_int_equal(put2(n, "k", 0, v, 60, 10), OC_NEAR_OFF);
    oc_near_fresh_until(n, 12.0); /* the feed proved freshness up to t=12 */
    assert_int_equal(put2(n, "k", 0, v, 60, 10), OC_NEAR_STORED);
    assert_int_equal(get(n, "k", 11.9, &got), OC_NEAR_OBJECT);
    /* the feed went quiet: at t=12 everything goes, once */
    assert_int_equal(get(n, "k", 12.0, &got), OC_NEAR_MISS);
    assert_int_equal(stats.near_flushes, 1);
    assert_int_equal(stats.near_entries, 0);
    assert_int_equal(stats.near_serving, 0);
    assert_int_equal(put2(n, "k", 0, v, 60, 12.5), OC_NEAR_OFF);
    /* fresh again later: a read begun before the flush is refused */
    uint64_t since = 0;
    oc_near_fresh_until(n, 20.0);
    assert_int_equal(nput(n, "k", 1, 0, v, 60, since, 13), OC_NEAR_STALE);
    /* bytes copied only when admitted */
    oc_near_val_t copy = {.data = "abc", .len = 3};
    assert_int_equal(oc_near_put(n, "c", 1, 0, &copy, 60, oc_near_epoch(n), 13),
                     OC_NEAR_DOOR);
    assert_int_equal(oc_near_put(n, "c", 1, 0, &copy, 60, oc_near_epoch(n), 13),
                     OC_NEAR_STORED);
    assert_int_equal(get(n, "c", 13, &got), OC_NEAR_OBJECT);
    assert_int_equal(got->len, 3);
    assert_memory_equal(got->data, "abc", 3);
    oc_blob_unref(v);
    oc_near_free(n);
}

/* The feed taking its proof back (its connection lost, a poll that found it
 * lagging: oc_near_fresh_until(0)) empties the near-cache: a flush, as when
 * a get finds the proof ran out, so near_flushes shows every time the feed
 * could not prove it fresh; an empty one flushes nothing. */
static void test_losing_the_proof_counts_a_flush(void **state)
{
    (void)state;
    oc_near_t *n = serving(1 << 20);
    oc_blob_t *v = oc_blob_new("v", 1);
    assert_int_equal(put2(n, "k", 0, v, 60, 10), OC_NEAR_STORED);
    oc_near_fresh_until(n, 0);
    assert_int_equal(stats.near_entries, 0);
    assert_int_equal(stats.near_serving, 0);
    assert_int_equal(stats.near_flushes, 1);
    oc_near_fresh_until(n, 0); /* not serving already: nothing more */
    assert_int_equal(stats.near_flushes, 1);
    oc_near_fresh_until(n, 100.0);
    oc_near_fresh_until(n, 0); /* serving, but holding nothing */
    assert_int_equal(stats.near_flushes, 1);
    oc_blob_unref(v);
    oc_near_free(n);
}

/* The doorkeeper's window follows the limit: a key offered again after
 * 100,000 other keys gets in under a 128 MiB limit (window 524,288), not
 * under 1 MiB (window 32,768: reset since); its bitset counts in near_bytes,
 * and a reload to another window resizes it. */
static void test_door_window_follows_the_limit(void **state)
{
    (void)state;
    assert_int_equal(oc_near_buckets_for(0), 1024);                /* the table's floor */
    assert_int_equal(oc_near_buckets_for((size_t)4 << 20), 16384); /* 128 KiB = 1/32 */
    assert_int_equal(oc_near_buckets_for((size_t)128 << 20), 524288);
    assert_int_equal(oc_near_buckets_for((size_t)3 << 30), (size_t)1 << 23);
    assert_int_equal(oc_near_door_window(0), 32768);
    assert_int_equal(oc_near_door_window(1 << 20), 32768);
    assert_int_equal(oc_near_door_window((size_t)64 << 20), 262144);
    assert_int_equal(oc_near_door_window((size_t)100 << 20),
                     524288); /* up to a power of 2 */
    assert_int_equal(oc_near_door_window((size_t)128 << 20), 524288);
    assert_int_equal(oc_near_door_window((size_t)1 << 30), 4194304);
    assert_int_equal(oc_near_door_window((size_t)64 << 30), 4194304);
    oc_blob_t *v = oc_blob_new("x", 1);
    char key[32];
    size_t limits[] = {1 << 20, (size_t)128 << 20};
    for (int li = 0; li < 2; li++) {
        oc_near_t *n = serving(limits[li]);
        uint64_t since = oc_near_epoch(n);
        assert_int_equal(nput(n, "again", 5, 0, v, 60, since, 0), OC_NEAR_DOOR);
        for (int i = 0; i < 100000; i++) {
            int kl = snprintf(key, sizeof(key), "other:%d", i);
            nput(n, key, (size_t)kl, 0, v, 60, since, 0);
        }
        assert_int_equal(nput(n, "again", 5, 0, v, 60, since, 0),
                         li == 0 ? OC_NEAR_DOOR : OC_NEAR_STORED);
        oc_near_free(n);
    }
    /* 2 MiB of bitset under 128 MiB, 128 KiB under 1 MiB */
    oc_near_t *n = serving((size_t)128 << 20);
    uint64_t big = stats.near_bytes;
    oc_near_set_limit(n, 1 << 20);
    assert_int_equal(big - stats.near_bytes, 524288 * 4 - 32768 * 4);
    oc_near_set_limit(n, (size_t)128 << 20);
    assert_int_equal(stats.near_bytes, big);
    oc_near_free(n);
    oc_blob_unref(v);
}

/* A reload that lowers the limit brings near_bytes under it. The bucket
 * table grown for a large cache is counted in near_bytes: before it shrank
 * with the limit, near_bytes stayed over the new limit with no entry left,
 * and every later put evicted everything (the near-cache held nothing). */
static void test_shrinking_the_limit_after_the_table_grew(void **state)
{
    (void)state;
    oc_near_t *n = serving((size_t)128 << 20);
    char key[32];
    for (int i = 0; i < 600000; i++)
        for (int twice = 0; twice < 2; twice++) { /* absences: ~100 bytes each */
            int kl = snprintf(key, sizeof(key), "oc:User:%d", i);
            nput(n, key, (size_t)kl, 0, NULL, 60, oc_near_epoch(n), 0);
        }
    assert_true(stats.near_entries >= 524288); /* the table grew to 512 Ki buckets */
    size_t limit = (size_t)4 << 20;            /* a reload: near_cache_size = 4m */
    oc_near_set_limit(n, limit);
    assert_true(stats.near_bytes <= limit);
    assert_true(stats.near_entries > 0); /* what fits stays */
    oc_blob_t *v = oc_blob_new("x", 1), *got;
    assert_int_equal(put2(n, "hot", 0, v, 60, 0), OC_NEAR_STORED);
    assert_int_equal(get(n, "hot", 0, &got), OC_NEAR_OBJECT);
    assert_true(stats.near_bytes <= limit);
    oc_blob_unref(v);
    oc_near_free(n);
}

/* A lower limit also drops the entries a put would now refuse (over 1/64
 * of it), not only what does not fit. */
static void test_shrinking_the_limit_drops_entries_now_too_big(void **state)
{
    (void)state;
    oc_near_t *n = serving((size_t)128 << 20);
    static char big[512 * 1024];
    memset(big, 'x', sizeof(big));
    oc_blob_t *v = oc_blob_new(big, sizeof(big)), *small = oc_blob_new("s", 1), *got;
    assert_int_equal(put2(n, "big", 0, v, 60, 0), OC_NEAR_STORED);
    assert_int_equal(put2(n, "small", 0, small, 60, 0), OC_NEAR_STORED);
    oc_near_set_limit(n, (size_t)16 << 20); /* 256 KiB at most now */
    assert_int_equal(get(n, "big", 0, &got), OC_NEAR_MISS);
    assert_int_equal(get(n, "small", 0, &got), OC_NEAR_OBJECT);
    oc_blob_unref(v);
    oc_blob_unref(small);
    oc_near_free(n);
}

/* oc_near_get_many answers and counts as one oc_near_get per key would:
 * objects, absences, misses, expired entries dropped (freed in the middle
 * of a group: ASan and valgrind runs of this test see any use after),
 * more keys than one group, and nothing counted while not serving. */
static void test_get_many_is_get_for_each(void **state)
{
    (void)state;
    oc_near_t *n = serving(1 << 20);
    enum { KEYS = 3 * OC_NEAR_GET_MANY + 5 };
    char keys[KEYS][24];
    oc_blob_t *v = oc_blob_new("{\"id\":1}", 8);
    oc_near_ask_t asks[KEYS];
    for (int i = 0; i < KEYS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "oc:User:%d", i);
        if (i % 3 == 0)
            assert_int_equal(put2(n, keys[i], 0, v, 10, 0), OC_NEAR_STORED);
        else if (i % 3 == 1)
            assert_int_equal(put2(n, keys[i], 0, NULL, i < 10 ? 1 : 10, 0),
                             OC_NEAR_STORED);
        asks[i] = (oc_near_ask_t){.key = keys[i], .klen = strlen(keys[i])};
    }
    oc_stats_t before = stats;
    oc_near_get_many(n, asks, KEYS, 5); /* absences under 10 have expired */
    size_t hits = 0, misses = 0, expired = 0;
    for (int i = 0; i < KEYS; i++) {
        oc_near_found_t want = i % 3 == 0              ? OC_NEAR_OBJECT
                               : i % 3 == 1 && i >= 10 ? OC_NEAR_ABSENT
                                                       : OC_NEAR_MISS;
        assert_int_equal(asks[i].found, want);
        assert_ptr_equal(asks[i].blob, want == OC_NEAR_OBJECT ? v : NULL);
        hits += want != OC_NEAR_MISS;
        misses += want == OC_NEAR_MISS;
        expired += i % 3 == 1 && i < 10;
    }
    assert_int_equal(stats.near_hits - before.near_hits, hits);
    assert_int_equal(stats.near_misses - before.near_misses, misses);
    assert_int_equal(stats.near_expired - before.near_expired, expired);
    /* each answer the same as oc_near_get's */
    for (int i = 0; i < KEYS; i++) {
        oc_blob_t *b;
        assert_int_equal(get(n, keys[i], 5, &b), asks[i].found);
    }
    /* not serving: all misses, nothing counted */
    oc_near_serve(n, 0);
    before = stats;
    oc_near_get_many(n, asks, KEYS, 5);
    for (int i = 0; i < KEYS; i++)
        assert_int_equal(asks[i].found, OC_NEAR_MISS);
    assert_int_equal(stats.near_misses, before.near_misses);
    assert_int_equal(stats.near_hits, before.near_hits);
    oc_blob_unref(v);
    oc_near_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_absent_and_expiry),
        cmocka_unit_test(test_get_many_is_get_for_each),
        cmocka_unit_test(test_invalidation_epochs),
        cmocka_unit_test(test_serving_off_clears_and_refuses),
        cmocka_unit_test(test_limit_holds_with_a_million_keys),
        cmocka_unit_test(test_sieve_keeps_hot_keys),
        cmocka_unit_test(test_scan_of_distinct_keys_evicts_nothing),
        cmocka_unit_test(test_freshness_runs_out),
        cmocka_unit_test(test_losing_the_proof_counts_a_flush),
        cmocka_unit_test(test_door_window_follows_the_limit),
        cmocka_unit_test(test_shrinking_the_limit_after_the_table_grew),
        cmocka_unit_test(test_shrinking_the_limit_drops_entries_now_too_big),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

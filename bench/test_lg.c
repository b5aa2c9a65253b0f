/*
 * Unit tests of the load generator's arithmetic (lg_keys, lg_lat): the
 * figures bench/run.py publishes rest on them, and no benchmark run checks
 * them. Zipf: draws against the exact probabilities; latencies: nearest
 * rank, and the merge of threads whose reservoirs dropped samples.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "lg_keys.h"
#include "lg_lat.h"

/* Draws `draws` ranks of Zipf(n, s) and checks the frequency of ranks 1..8
 * and of the tail above n / 5 against k^-s / H(n, s), within 5 standard
 * deviations of a binomial count. */
static void check_zipf(uint64_t n, double s, uint64_t draws, uint64_t seed)
{
    double norm = 0.0;
    for (uint64_t k = n; k >= 1; k--) /* smallest first: less rounding */
        norm += pow((double)k, -s);
    double tail_p = 0.0;
    for (uint64_t k = n; k > n / 5; k--)
        tail_p += pow((double)k, -s);
    tail_p /= norm;

    lg_zipf_t z;
    lg_zipf_init(&z, n, s);
    lg_rng_t r;
    lg_rng_seed(&r, seed);
    uint64_t head[9] = {0}, tail = 0, top = n < 8 ? n : 8;
    for (uint64_t i = 0; i < draws; i++) {
        uint64_t k = lg_zipf_rank(&z, &r);
        assert_true(k >= 1 && k <= n);
        if (k <= 8)
            head[k]++;
        if (k > n / 5)
            tail++;
    }
    for (uint64_t k = 1; k <= top; k++) {
        double p = pow((double)k, -s) / norm;
        double want = p * (double)draws, sd = sqrt((double)draws * p * (1.0 - p));
        if (fabs((double)head[k] - want) > 5.0 * sd)
            fail_msg(
                "Zipf(n=%llu, s=%g): rank %llu drawn %llu times, expected %.0f +- %.0f",
                (unsigned long long)n, s, (unsigned long long)k,
                (unsigned long long)head[k], want, sd);
    }
    double want = tail_p * (double)draws,
           sd = sqrt((double)draws * tail_p * (1.0 - tail_p));
    if (fabs((double)tail - want) > 5.0 * sd)
        fail_msg("Zipf(n=%llu, s=%g): %llu draws above n/5, expected %.0f +- %.0f",
                 (unsigned long long)n, s, (unsigned long long)tail, want, sd);
}

/* The zipf phase's keys: s = 0.99 over a million ids. */
static void test_zipf_099_over_a_million(void **state)
{
    (void)state;
    check_zipf(1000000, 0.99, 2000000, 11);
}

/* The mixed phase's: s = 1 (the helpers' series at 1 - s = 0). */
static void test_zipf_1_over_hot_set(void **state)
{
    (void)state;
    check_zipf(200000, 1.0, 2000000, 12);
}

static void test_zipf_small_and_steep(void **state)
{
    (void)state;
    check_zipf(10, 2.0, 400000, 13);
    check_zipf(1, 0.99, 1000, 14);
}

/* A batch of a Zipf picker holds K distinct ids of the range. */
static void test_picker_distinct(void **state)
{
    (void)state;
    lg_opts_t o = {0};
    o.k = 100;
    o.keys.kind = LG_KEYS_ZIPF;
    o.keys.lo = 1;
    o.keys.hi = 1000000;
    o.keys.s = 0.99;
    lg_picker_t p;
    lg_picker_init(&p, &o);
    lg_batch_t b;
    assert_true(lg_batch_init(&b, o.k, "Item:"));
    lg_rng_t r;
    lg_rng_seed(&r, 5);
    for (int i = 0; i < 1000; i++) {
        lg_pick(&p, &r, &b);
        assert_int_equal(b.n, o.k);
        for (size_t j = 0; j < b.n; j++) {
            assert_true(b.ids[j] >= 1 && b.ids[j] <= 1000000);
            assert_int_equal(lg_batch_find(&b, b.ids[j]), (long)j);
        }
    }
    lg_batch_free(&b);
}

static void summarize(lg_lat_t *lats, size_t n, lg_lat_summary_t *out)
{
    const lg_lat_t *ptrs[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &lats[i];
    assert_true(lg_lat_summarize(ptrs, n, out));
}

/* Nearest rank over 1..100 us: p50 is the 50th, p99 the 99th, p99.9 the
 * 100th; split over two threads it is the same. */
static void test_lat_nearest_rank(void **state)
{
    (void)state;
    lg_lat_t l[2];
    lg_lat_init(&l[0], 1000, 1);
    lg_lat_init(&l[1], 1000, 2);
    for (uint64_t us = 100; us >= 1; us--)
        assert_true(lg_lat_add(&l[us % 2], us * 1000));
    lg_lat_summary_t s;
    summarize(l, 2, &s);
    assert_true(s.p50_us == 50.0);
    assert_true(s.p99_us == 99.0);
    assert_true(s.p999_us == 100.0);
    assert_true(s.max_us == 100.0);
    assert_true(fabs(s.mean_us - 50.5) < 1e-9);
    lg_lat_free(&l[0]);
    lg_lat_free(&l[1]);
}

/* A fast thread whose reservoir kept 10 of its 10,000 batches (all 1 us)
 * and a slow one that ran 10 batches (all 900 us): 99.9% of the batches
 * took 1 us, so p50, p99 and p99.9 are 1 us. Merged sample for sample, the slow
 * thread's 10 would be half of the 20 samples: p99 900 us. */
static void test_lat_reservoir_weights_threads(void **state)
{
    (void)state;
    lg_lat_t l[2];
    lg_lat_init(&l[0], 10, 1);
    lg_lat_init(&l[1], 10, 2);
    for (int i = 0; i < 10000; i++)
        assert_true(lg_lat_add(&l[0], 1000));
    for (int i = 0; i < 10; i++)
        assert_true(lg_lat_add(&l[1], 900000));
    assert_int_equal(l[0].n, 10);
    lg_lat_summary_t s;
    summarize(l, 2, &s);
    assert_true(s.p50_us == 1.0);
    assert_true(s.p99_us == 1.0);
    assert_true(s.p999_us == 1.0); /* rank 10,000 of 10,010 */
    assert_true(s.max_us == 900.0);
    lg_lat_free(&l[0]);
    lg_lat_free(&l[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zipf_099_over_a_million),
        cmocka_unit_test(test_zipf_1_over_hot_set),
        cmocka_unit_test(test_zipf_small_and_steep),
        cmocka_unit_test(test_picker_distinct),
        cmocka_unit_test(test_lat_nearest_rank),
        cmocka_unit_test(test_lat_reservoir_weights_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

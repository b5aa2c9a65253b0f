/* Unit tests for oc_fill's rules: the fill state machine (what a read means
 * for a fill), which gets may take a fill's answer, and the lease wait
 * schedule, driven by a clock passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "oc_fill.h"

/* A load in parts: one per idle connection, none under load_split_min. */
static void test_parts(void **state)
{
    (void)state;
    assert_int_equal(oc_fill_parts(100, 50, 4), 2);
    assert_int_equal(oc_fill_parts(100, 50, 2), 2);
    assert_int_equal(oc_fill_parts(99, 50, 4), 1);   /* a part would hold 49 */
    assert_int_equal(oc_fill_parts(100, 50, 1), 1);  /* one idle: one query */
    assert_int_equal(oc_fill_parts(100, 50, 0), 1);  /* none idle: queued whole */
    assert_int_equal(oc_fill_parts(1000, 50, 4), 4); /* no more than idle */
    assert_int_equal(oc_fill_parts(160, 50, 4), 3);
    assert_int_equal(oc_fill_parts(100, 0, 4), 1); /* 0: never split */
    assert_int_equal(oc_fill_parts(2, 1, 64), 2);
    assert_int_equal(oc_fill_parts(0, 1, 64), 1);
    assert_int_equal(oc_fill_parts(SIZE_MAX, SIZE_MAX / 2 + 1, 4), 1); /* no overflow */
    assert_int_equal(oc_fill_parts(SIZE_MAX, SIZE_MAX / 2, 4), 2);
}

static void test_first_state(void **state)
{
    (void)state;
    assert_int_equal(oc_fill_first_state(OC_EC_EMPTY), OC_FILL_LEASING);
    assert_int_equal(oc_fill_first_state(OC_EC_LEASE_WON), OC_FILL_LOADING);
    assert_int_equal(oc_fill_first_state(OC_EC_LEASE_HELD), OC_FILL_WAITING);
    /* memcached failed: a lease would fail too, load without one */
    assert_int_equal(oc_fill_first_state(OC_EC_ERROR), OC_FILL_LOADING);
}

static void test_after_read(void **state)
{
    (void)state;
    int tries = 0;
    /* answered by whoever wrote it */
    assert_int_equal(oc_fill_after_read(OC_FILL_LEASING, OC_EC_OBJECT, 0, &tries),
                     OC_FILL_STORING);
    assert_int_equal(oc_fill_after_read(OC_FILL_WAITING, OC_EC_ABSENT, 1, &tries),
                     OC_FILL_STORING);
    /* won the lease: load */
    assert_int_equal(oc_fill_after_read(OC_FILL_WAITING, OC_EC_LEASE_WON, 0, &tries),
                     OC_FILL_LOADING);
    /* another's lease: a fill that was not waiting waits, even past the
     * deadline; one that waited long enough loads without filling */
    assert_int_equal(oc_fill_after_read(OC_FILL_LEASING, OC_EC_LEASE_HELD, 1, &tries),
                     OC_FILL_WAITING);
    assert_int_equal(oc_fill_after_read(OC_FILL_WAITING, OC_EC_LEASE_HELD, 0, &tries),
                     OC_FILL_WAITING);
    assert_int_equal(oc_fill_after_read(OC_FILL_WAITING, OC_EC_LEASE_HELD, 1, &tries),
                     OC_FILL_LOADING);
    assert_int_equal(oc_fill_after_read(OC_FILL_LEASING, OC_EC_ERROR, 0, &tries),
                     OC_FILL_LOADING);
    assert_int_equal(tries, 0);
    /* empty (or foreign) again and again: read twice more, then give up */
    assert_int_equal(oc_fill_after_read(OC_FILL_LEASING, OC_EC_EMPTY, 0, &tries),
                     OC_FILL_LEASING);
    assert_int_equal(oc_fill_after_read(OC_FILL_LEASING, OC_EC_EMPTY, 0, &tries),
                     OC_FILL_LEASING);
    assert_int_equal(oc_fill_after_read(OC_FILL_LEASING, OC_EC_EMPTY, 0, &tries),
                     OC_FILL_LOADING);
    assert_int_equal(tries, 3);
}

/* A lease's cas in epoch 1 of its server (oc_mc.h). */
static oc_fill_cas_t cas1(uint64_t cas)
{
    return (oc_fill_cas_t){cas, 1};
}

static void test_may_answer(void **state)
{
    (void)state;
    /* a get that won a lease never takes an older fill's answer */
    assert_false(oc_fill_may_answer(0, cas1(0), 50, OC_EC_LEASE_WON, cas1(5), 9));
    assert_false(oc_fill_may_answer(3, cas1(7), 50, OC_EC_LEASE_WON, cas1(5), 2));
    /* a fill without a lease answers the reads begun before its load or
     * read went out (50), or any while none has (0); not a later one: the
     * key may have been invalidated meanwhile, with nothing to tell */
    assert_true(oc_fill_may_answer(0, cas1(0), 0, OC_EC_EMPTY, cas1(0), 100));
    assert_true(oc_fill_may_answer(0, cas1(0), 50, OC_EC_EMPTY, cas1(0), 50));
    assert_true(oc_fill_may_answer(0, cas1(0), 50, OC_EC_LEASE_HELD, cas1(4), 49));
    assert_false(oc_fill_may_answer(0, cas1(0), 50, OC_EC_EMPTY, cas1(0), 51));
    assert_false(oc_fill_may_answer(0, cas1(0), 50, OC_EC_ERROR, cas1(0), 100));
    /* the fill's own lease, seen by the get: consistent */
    assert_true(oc_fill_may_answer(3, cas1(7), 50, OC_EC_LEASE_HELD, cas1(7), 100));
    /* the same number read from another server (or after its restart):
     * another sidecar's lease, after a write removed the fill's */
    assert_false(
        oc_fill_may_answer(3, cas1(7), 50, OC_EC_LEASE_HELD, (oc_fill_cas_t){7, 2}, 100));
    /* another lease than the fill's, read after the fill's was confirmed:
     * a write removed the fill's lease */
    assert_false(oc_fill_may_answer(3, cas1(7), 50, OC_EC_LEASE_HELD, cas1(8), 4));
    assert_false(oc_fill_may_answer(3, cas1(7), 50, OC_EC_EMPTY, cas1(0), 4));
    /* read before (or with) the lease's confirmation: consistent */
    assert_true(oc_fill_may_answer(3, cas1(7), 50, OC_EC_EMPTY, cas1(0), 3));
    assert_true(oc_fill_may_answer(3, cas1(7), 50, OC_EC_LEASE_HELD, cas1(8), 2));
}

static void test_wait_schedule(void **state)
{
    (void)state;
    double t0 = 1000.0;
    /* 2 ms, doubling, capped at 10 ms, until lease_wait has passed */
    assert_int_equal(oc_fill_wait_delay(t0, t0, 0, 250), 2);
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 0.002, 2, 250), 4);
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 0.006, 4, 250), 8);
    /* at most 10 ms apart: a waiter sees the holder's value within 10 ms */
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 0.014, 8, 250), 10);
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 0.2, 10, 250), 10);
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 0.25, 10, 250), 0);
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 5, 10, 250), 0);
    /* lease_wait 0: never wait */
    assert_int_equal(oc_fill_wait_delay(t0, t0, 0, 0), 0);
    /* the whole schedule, as a waiting batch lives it: it ends */
    double now = t0;
    uint32_t d = 0;
    int polls = 0;
    while ((d = oc_fill_wait_delay(t0, now, d, 250)) != 0) {
        now += d / 1000.0;
        polls++;
    }
    assert_true(polls >= 24 && polls <= 30);
    assert_true(now - t0 >= 0.25 && now - t0 < 0.27);
    /* a long lease_wait spaces the reads out: lease_wait / 25, at most 50 */
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 0.1, 16, 1000), 32);
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 0.2, 32, 1000), 40);
    assert_int_equal(oc_fill_wait_delay(t0, t0 + 1, 50, 600000), 50);
    for (uint32_t lw = 250; lw <= 600000; lw *= 4) {
        now = t0, d = 0, polls = 0;
        while ((d = oc_fill_wait_delay(t0, now, d, lw)) != 0) {
            now += d / 1000.0;
            polls++;
        }
        /* about 25 reads, more only where 50 ms is the cap */
        assert_true(polls >= 24 && (polls <= 30 || (polls - 4) * 50 <= (int)lw + 50));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_state), cmocka_unit_test(test_after_read),
        cmocka_unit_test(test_may_answer),  cmocka_unit_test(test_wait_schedule),
        cmocka_unit_test(test_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

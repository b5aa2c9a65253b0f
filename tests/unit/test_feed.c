/* Unit tests for oc_feed's rules: when a follower has a gap and must
 * resync, when it polls again at once, how fresh a poll makes the
 * near-cache (with the clock passed in), and the resync's lists of
 * models and generations, hostile ones included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_conf.h"
#include "oc_feed.h"
#include "oc_gens.h"

static void test_hook_missing(void **state)
{
    (void)state;
    /* by the code, in any language: the identifier is never translated */
    assert_true(
        oc_feed_hook_missing("3F000", "FEHLER:  Schema »objcached« existiert nicht"));
    assert_true(oc_feed_hook_missing("42P01", "ERROR:  relation \"objcached.feed\" does "
                                              "not exist"));
    assert_true(oc_feed_hook_missing("42883", "ERREUR:  la fonction objcached.feed_poll("
                                              "bigint, integer) n'existe pas"));
    /* English words without the code: not the hook */
    assert_false(oc_feed_hook_missing("57014", "ERROR:  objcached: does not exist"));
    assert_false(oc_feed_hook_missing("", "database connection lost: objcached"));
    assert_false(oc_feed_hook_missing(NULL, "no head row"));
    /* the code of another object */
    assert_false(
        oc_feed_hook_missing("42P01", "ERROR:  relation \"other\" does not exist"));
}

static void test_gap(void **state)
{
    (void)state;
    /* the cursor between pruned_upto and the head: nothing missed */
    assert_false(oc_feed_gap(10, 20, 5));
    assert_false(oc_feed_gap(10, 10, 10)); /* at both bounds */
    assert_false(oc_feed_gap(0, 0, 0));    /* an empty feed */
    assert_false(oc_feed_gap(5, 20, 5));   /* rows up to 5 pruned: 5 was applied */
    assert_false(oc_feed_gap(20, 20, 5));
    /* rows after the cursor were pruned before we read them */
    assert_true(oc_feed_gap(4, 20, 5));
    assert_true(oc_feed_gap(0, 20, 1));
    /* a cursor past the head: another database (a restore, an older replica) */
    assert_true(oc_feed_gap(21, 20, 5));
    assert_true(oc_feed_gap(UINT64_MAX, UINT64_MAX - 1, 0));
    assert_false(oc_feed_gap(UINT64_MAX, UINT64_MAX, UINT64_MAX));
}

static void test_more(void **state)
{
    (void)state;
    /* a full batch and the head not reached: more rows wait */
    assert_true(oc_feed_more(10, 20, 1000, 1000, 0));
    assert_true(oc_feed_more(10, 20, 1001, 1000, 0));
    /* a short batch: the poll returned everything there was */
    assert_false(oc_feed_more(10, 20, 999, 1000, 0));
    /* ... unless it was cut at OC_FEED_POLL_KEYS keys */
    assert_true(oc_feed_more(10, 20, 2, 1000, 1));
    /* at the head: nothing more, however many rows came */
    assert_false(oc_feed_more(20, 20, 1000, 1000, 0));
    assert_false(oc_feed_more(21, 20, 1000, 1000, 0));
    assert_false(oc_feed_more(20, 20, 2, 1000, 1));
    assert_true(oc_feed_more(0, 1, 1, 1, 0));
    assert_false(oc_feed_more(0, 1, 0, 1, 0));
}

/* The holder's own statement is taken without a poll only when nothing
 * lies between the follower's cursor and its row. */
static void test_own_fits(void **state)
{
    (void)state;
    assert_true(oc_feed_own_fits(9, 10));          /* the row right after the cursor */
    assert_false(oc_feed_own_fits(8, 10));         /* row 9, another appender's, unread */
    assert_false(oc_feed_own_fits(10, 10));        /* polled already */
    assert_false(oc_feed_own_fits(11, 10));        /* a cursor past it */
    assert_false(oc_feed_own_fits(UINT64_MAX, 0)); /* no wrap-around */
    assert_true(oc_feed_own_fits(0, 1));
}

/* Which NOTIFYs are the holder's own, read from a hostile payload too. */
static void test_notify_own(void **state)
{
    (void)state;
    uint64_t h = 7;
    assert_true(oc_feed_notify_own(42, 42, "10", &h));
    assert_int_equal(h, 10);
    assert_true(oc_feed_notify_own(42, 42, "18446744073709551615", &h));
    assert_true(h == UINT64_MAX);
    h = 7;
    assert_false(oc_feed_notify_own(42, 43, "10", &h)); /* another appender's */
    assert_false(oc_feed_notify_own(0, 0, "10", &h));   /* no holder heard of */
    /* payloads that are not a head: polled, as before */
    assert_false(oc_feed_notify_own(42, 42, NULL, &h));
    assert_false(oc_feed_notify_own(42, 42, "", &h));
    assert_false(oc_feed_notify_own(42, 42, "-1", &h));
    assert_false(oc_feed_notify_own(42, 42, " 5", &h));
    assert_false(oc_feed_notify_own(42, 42, "5x", &h));
    assert_false(oc_feed_notify_own(42, 42, "99999999999999999999999", &h));
    assert_int_equal(h, 7); /* untouched when refused */
}

/* What the holder's own NOTIFY asks for. */
static void test_notify_rule(void **state)
{
    (void)state;
    /* a taken statement's: skipped, whatever else holds */
    assert_int_equal(oc_feed_notify_rule(1, 10, 10, 0), OC_FEED_NOTIFY_SKIP);
    assert_int_equal(oc_feed_notify_rule(1, 10, 10, 1), OC_FEED_NOTIFY_SKIP);
    /* covered, but no taken statement's (a heartbeat's, whose proof a poll
     * reads; a declined statement's read since): polled, even with a
     * statement in flight */
    assert_int_equal(oc_feed_notify_rule(0, 10, 10, 0), OC_FEED_NOTIFY_POLL);
    assert_int_equal(oc_feed_notify_rule(0, 10, 10, 1), OC_FEED_NOTIFY_POLL);
    assert_int_equal(oc_feed_notify_rule(0, 9, 10, 1), OC_FEED_NOTIFY_POLL);
    /* rows past the cursor: left to the result of the one in flight, or
     * polled when none is */
    assert_int_equal(oc_feed_notify_rule(0, 11, 10, 1), OC_FEED_NOTIFY_DEFER);
    assert_int_equal(oc_feed_notify_rule(0, 11, 10, 0), OC_FEED_NOTIFY_POLL);
}

/* The taken statements' NOTIFYs still due, in commit order. */
static void test_owed(void **state)
{
    (void)state;
    oc_feed_owed_t o;
    memset(&o, 0, sizeof(o));
    assert_false(oc_feed_owed_match(&o, 5)); /* nothing due */
    oc_feed_owed_push(&o, 11);
    oc_feed_owed_push(&o, 12);
    oc_feed_owed_push(&o, 14);
    /* a heartbeat's NOTIFY before 11's (it committed first, head 10) */
    assert_false(oc_feed_owed_match(&o, 10));
    assert_true(oc_feed_owed_match(&o, 11));
    /* the heartbeat after 11: its NOTIFY carries 11 too, and polls */
    assert_false(oc_feed_owed_match(&o, 11));
    /* 12's NOTIFY never came (a LISTEN reset): 14's settles it */
    assert_true(oc_feed_owed_match(&o, 14));
    assert_int_equal(o.n, 0);
    /* a NOTIFY past every entry (another declined statement's) */
    oc_feed_owed_push(&o, 20);
    assert_false(oc_feed_owed_match(&o, 21));
    assert_int_equal(o.n, 0);
    /* full: the oldest goes */
    for (uint64_t h = 100; h < 100 + OC_FEED_OWED_MAX + 3; h++)
        oc_feed_owed_push(&o, h);
    assert_int_equal(o.n, OC_FEED_OWED_MAX);
    assert_false(oc_feed_owed_match(&o, 100));
    assert_false(oc_feed_owed_match(&o, 102));
    assert_true(oc_feed_owed_match(&o, 103));
    assert_true(oc_feed_owed_match(&o, 100 + OC_FEED_OWED_MAX + 2));
    assert_int_equal(o.n, 0);
}

static void test_fresh_until(void **state)
{
    (void)state;
    /* sent at 100 s, caught_up_at 0.5 s old, feed_max_lag 2 s: the
     * near-cache answers until 101.5 */
    assert_true(oc_feed_fresh_until(100.0, 0.5, 2000) == 101.5);
    assert_true(oc_feed_fresh_until(100.0, 0.0, 2000) == 102.0);
    /* a caught_up_at ahead of the database's clock counts as 0 old */
    assert_true(oc_feed_fresh_until(100.0, -3.0, 2000) == 102.0);
    /* as old as the limit, or older: not fresh at all */
    assert_true(oc_feed_fresh_until(100.0, 2.0, 2000) == 0);
    assert_true(oc_feed_fresh_until(100.0, 2.5, 2000) == 0);
    assert_true(oc_feed_fresh_until(100.0, 1e9, 2000) == 0);
    assert_true(oc_feed_fresh_until(100.0, 1.999, 2000) > 100.0);
    /* feed_max_lag 0: never fresh */
    assert_true(oc_feed_fresh_until(100.0, 0.0, 0) == 0);
    /* the smallest feed_max_lag, 100 ms */
    assert_true(oc_feed_fresh_until(5.0, 0.05, 100) > 5.04);
    assert_true(oc_feed_fresh_until(5.0, 0.05, 100) < 5.06);
    /* a NaN lag (garbage from the poll) is never fresh */
    volatile double zero = 0.0;
    assert_true(oc_feed_fresh_until(100.0, zero / zero, 2000) == 0);
    /* a caught_up_at ahead of the clock by feed_max_lag or less: a replica's
     * clock a little behind, taken as 0 old; by more: no proof at all */
    assert_false(oc_feed_clock_ahead(0.5, 2000));
    assert_false(oc_feed_clock_ahead(0.0, 2000));
    assert_false(oc_feed_clock_ahead(-2.0, 2000));
    assert_true(oc_feed_clock_ahead(-2.001, 2000));
    assert_true(oc_feed_clock_ahead(-3600.0, 2000));
    assert_true(oc_feed_clock_ahead(-0.2, 100));
    assert_false(oc_feed_clock_ahead(zero / zero, 2000)); /* NaN: fresh_until says no */
}

typedef struct pair {
    char name[32];
    uint64_t gen;
} pair_t;

static size_t walk(const char *names, const char *gens, pair_t *out, size_t cap)
{
    const char *n = names, *g = gens, *name;
    size_t len, k = 0;
    uint64_t gen;
    while (oc_feed_next_generation(&n, &g, &name, &len, &gen)) {
        assert_true(k < cap);
        assert_true(len < sizeof(out[k].name));
        memcpy(out[k].name, name, len);
        out[k].name[len] = '\0';
        out[k++].gen = gen;
    }
    return k;
}

static void test_generations(void **state)
{
    (void)state;
    pair_t p[8];
    assert_int_equal(walk("Post,User", "3,0", p, 8), 2);
    assert_string_equal(p[0].name, "Post");
    assert_int_equal(p[0].gen, 3);
    assert_string_equal(p[1].name, "User");
    assert_int_equal(p[1].gen, 0);

    assert_int_equal(walk("User", "18446744073709551615", p, 8), 1);
    assert_int_equal(p[0].gen, UINT64_MAX);
    /* empty lists: nothing */
    assert_int_equal(walk("", "", p, 8), 0);
    assert_int_equal(walk("User", "", p, 8), 0);
    assert_int_equal(walk("", "7", p, 8), 0);
    /* lists of different lengths stop with the shorter */
    assert_int_equal(walk("A,B,C", "1,2", p, 8), 2);
    assert_string_equal(p[1].name, "B");
    assert_int_equal(p[1].gen, 2);
    assert_int_equal(walk("A", "1,2,3", p, 8), 1);
    /* a trailing comma ends the list */
    assert_int_equal(walk("A,", "1,", p, 8), 1);
    /* an empty name is a pair with no model (nothing matches it) */
    assert_int_equal(walk("A,,B", "1,2,3", p, 8), 3);
    assert_string_equal(p[1].name, "");
    assert_int_equal(p[1].gen, 2);
    assert_string_equal(p[2].name, "B");
    /* a generation that is not a number reads as 0 and moves on */
    assert_int_equal(walk("A,B", "x,5", p, 8), 2);
    assert_int_equal(p[0].gen, 0);
    assert_int_equal(p[1].gen, 5);
    assert_int_equal(walk("A,B", ",5", p, 8), 2);
    assert_int_equal(p[0].gen, 0);
    assert_int_equal(p[1].gen, 5);
}

/* One reset per hook for the process: the consumer and the feed share
 * it, a later first read of the same hook moves forward only, and a
 * reader still on the hook the other left is ignored. */
static void test_gens_rule(void **state)
{
    (void)state;
    unsigned long cur = 0, consumer = 0, feed = 0;
    /* the first hook read: followed, no reset */
    assert_int_equal(oc_gens_rule(&cur, &consumer, 100), OC_GENS_APPLY);
    assert_int_equal(oc_gens_rule(&cur, &feed, 100), OC_GENS_APPLY);
    assert_int_equal(cur, 100);
    /* reinstalled (OID 200): the feed sees it first and resets */
    assert_int_equal(oc_gens_rule(&cur, &feed, 200), OC_GENS_RESET);
    assert_int_equal(cur, 200);
    assert_int_equal(oc_gens_rule(&cur, &feed, 200), OC_GENS_APPLY);
    /* the consumer's first read of it: forward only, no second reset */
    assert_int_equal(oc_gens_rule(&cur, &consumer, 200), OC_GENS_APPLY);
    assert_int_equal(consumer, 200);
    /* a feed poll that predates the next reinstall, read after the
     * consumer followed it: ignored, until the feed sees the new hook */
    assert_int_equal(oc_gens_rule(&cur, &consumer, 300), OC_GENS_RESET);
    assert_int_equal(oc_gens_rule(&cur, &feed, 200), OC_GENS_IGNORE);
    assert_int_equal(cur, 300);
    assert_int_equal(oc_gens_rule(&cur, &feed, 300), OC_GENS_APPLY);
    /* no generation_seq (OID 0): nothing to tell apart, as before */
    assert_int_equal(oc_gens_rule(&cur, &feed, 0), OC_GENS_APPLY);
    assert_int_equal(cur, 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_missing), cmocka_unit_test(test_gap),
        cmocka_unit_test(test_more),         cmocka_unit_test(test_own_fits),
        cmocka_unit_test(test_notify_own),   cmocka_unit_test(test_notify_rule),
        cmocka_unit_test(test_owed),         cmocka_unit_test(test_fresh_until),
        cmocka_unit_test(test_generations),  cmocka_unit_test(test_gens_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

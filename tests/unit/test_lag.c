/* Unit tests for oc_lag: the lateness rule, and a real event loop that
 * runs one long turn (a callback that sleeps 1.2 s) counts one stall and
 * observes every tick in the histogram, while a loop that keeps up, or
 * one that starts after 1.2 s of blocking work, counts none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "oc_lag.h"
#include "oc_stats.h"

static void test_late_rule(void **state)
{
    (void)state;
    assert_true(oc_lag_late(10.0, 10.25) > 0.2499 && oc_lag_late(10.0, 10.25) < 0.2501);
    assert_true(oc_lag_late(10.0, 10.0) == 0);
    assert_true(oc_lag_late(10.0, 9.999) == 0); /* fired early: on time */
}

typedef struct {
    struct event_base *base;
    int sleep_ms; /* the long turn: 0 for none */
} turn_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void long_turn(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    sleep_ms(((turn_t *)arg)->sleep_ms);
}

static void stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    event_base_loopbreak(arg);
}

/* Makes oc_lag, blocks pre_ms (the daemon's start), then runs the loop
 * for run_ms with a turn of turn_ms 20 ms in. */
static void run(oc_stats_t *st, int pre_ms, int turn_ms, int run_ms)
{
    memset(st, 0, sizeof(*st));
    oc_ctx_t ctx = {0};
    ctx.base = event_base_new();
    ctx.stats = st;
    assert_non_null(ctx.base);
    char err[256];
    oc_lag_t *l = oc_lag_new(&ctx, err);
    assert_non_null(l);
    turn_t t = {ctx.base, turn_ms};
    struct event *turn = evtimer_new(ctx.base, long_turn, &t);
    struct event *end = evtimer_new(ctx.base, stop, ctx.base);
    struct timeval at = {0, 20000}, until = {run_ms / 1000, (run_ms % 1000) * 1000};
    if (turn_ms)
        evtimer_add(turn, &at);
    evtimer_add(end, &until);
    sleep_ms(pre_ms);
    event_base_dispatch(ctx.base);
    event_free(turn);
    event_free(end);
    oc_lag_free(l);
    event_base_free(ctx.base);
}

static void test_a_long_turn_is_one_stall(void **state)
{
    (void)state;
    oc_stats_t st;
    run(&st, 0, 1200, 1600);
    assert_int_equal(st.loop_stalls, 1);
    /* the tick due 100 ms after start fired after the 1.2 s turn began at
     * 20 ms: at least 1.1 s late */
    assert_true(st.loop_stall_us >= 1100000);
    assert_true(st.loop_lag_seconds.count >= 2);
    assert_true(st.loop_lag_seconds.sum >= 1.1);
}

static void test_a_loop_that_keeps_up_has_no_stall(void **state)
{
    (void)state;
    oc_stats_t st;
    run(&st, 0, 0, 550);
    assert_int_equal(st.loop_stalls, 0);
    assert_int_equal(st.loop_stall_us, 0);
    /* a tick every 100 ms: 5 in 550 ms, fewer only if the loop was late */
    assert_true(st.loop_lag_seconds.count >= 1 && st.loop_lag_seconds.count <= 5);
}

/* The start's blocking work before the loop runs (the daemon reads the
 * generations from PostgreSQL, up to 4 s) is not a stall. */
static void test_blocking_before_the_loop_is_no_stall(void **state)
{
    (void)state;
    oc_stats_t st;
    run(&st, 1200, 0, 350);
    assert_int_equal(st.loop_stalls, 0);
    assert_true(st.loop_lag_seconds.sum < 1.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_late_rule),
        cmocka_unit_test(test_a_long_turn_is_one_stall),
        cmocka_unit_test(test_a_loop_that_keeps_up_has_no_stall),
        cmocka_unit_test(test_blocking_before_the_loop_is_no_stall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for oc_tko, the failure detection state machine of one
 * memcached server: when it is ejected, when it is probed, when it is back,
 * with a clock passed in (no sleeping). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_tko.h"

static const oc_tko_rules_t rules = {.failure_limit = 3, .retry_s = 2.0};
static const double t0 = 1000.0;

static void test_starts_in_service(void **state)
{
    (void)state;
    oc_tko_t t;
    oc_tko_init(&t, t0);
    assert_int_equal(t.state, OC_TKO_UP);
    assert_true(oc_tko_in_service(&t));
    assert_int_equal(t.failures, 0);
    assert_int_equal(t.ejections, 0);
    /* never down: nothing recent about it */
    assert_false(oc_tko_recent(&t, t0, 10));
    assert_true(oc_tko_probe_wait(&t, t0) < 0);
    assert_int_equal(oc_tko_probe(&t, t0 + 100), 0);
    assert_int_equal(oc_tko_passed(&t, t0), 0);
}

static void test_ejected_after_the_limit_in_a_row(void **state)
{
    (void)state;
    oc_tko_t t;
    oc_tko_init(&t, t0);
    assert_int_equal(oc_tko_failure(&t, &rules, t0), 0);
    assert_int_equal(oc_tko_failure(&t, &rules, t0 + 0.1), 0);
    assert_true(oc_tko_in_service(&t));
    /* failing but not ejected: a write should clear the failover copy */
    assert_true(oc_tko_recent(&t, t0 + 0.1, 10));
    assert_int_equal(oc_tko_failure(&t, &rules, t0 + 0.2), 1);
    assert_int_equal(t.state, OC_TKO_DOWN);
    assert_false(oc_tko_in_service(&t));
    assert_int_equal(t.ejections, 1);
    assert_true(t.since == t0 + 0.2);
    assert_true(t.down_at == t0 + 0.2);
    /* more failures while down change nothing, and do not count again */
    assert_int_equal(oc_tko_failure(&t, &rules, t0 + 0.3), 0);
    assert_int_equal(t.ejections, 1);
    assert_true(t.probe_at == t0 + 0.2 + rules.retry_s);
}

static void test_a_success_starts_the_count_again(void **state)
{
    (void)state;
    oc_tko_t t;
    oc_tko_init(&t, t0);
    for (int round = 0; round < 10; round++) {
        assert_int_equal(oc_tko_failure(&t, &rules, t0 + round), 0);
        assert_int_equal(oc_tko_failure(&t, &rules, t0 + round + 0.1), 0);
        oc_tko_success(&t);
    }
    assert_true(oc_tko_in_service(&t));
    assert_int_equal(t.failures, 0);
    assert_false(oc_tko_recent(&t, t0 + 20, 10));
}

static void test_limit_one_and_zero(void **state)
{
    (void)state;
    oc_tko_rules_t one = {.failure_limit = 1, .retry_s = 1};
    oc_tko_t t;
    oc_tko_init(&t, t0);
    assert_int_equal(oc_tko_failure(&t, &one, t0), 1);
    assert_int_equal(t.state, OC_TKO_DOWN);
    /* 0 is read as 1, never as "never in service" */
    oc_tko_rules_t zero = {.failure_limit = 0, .retry_s = 1};
    oc_tko_init(&t, t0);
    assert_int_equal(oc_tko_failure(&t, &zero, t0), 1);
}

static void eject(oc_tko_t *t, double now)
{
    oc_tko_init(t, t0);
    for (uint32_t i = 0; i < rules.failure_limit; i++)
        oc_tko_failure(t, &rules, now);
    assert_int_equal(t->state, OC_TKO_DOWN);
}

static void test_probe_every_retry(void **state)
{
    (void)state;
    oc_tko_t t;
    eject(&t, t0);
    /* not before retry_s: requests never wait on it, and no probe either */
    assert_true(oc_tko_probe_wait(&t, t0) == rules.retry_s);
    assert_true(oc_tko_probe_wait(&t, t0 + 1.5) == 0.5);
    assert_int_equal(oc_tko_probe(&t, t0 + 1.999), 0);
    assert_int_equal(t.state, OC_TKO_DOWN);
    assert_true(oc_tko_probe_wait(&t, t0 + 3) == 0);
    assert_int_equal(oc_tko_probe(&t, t0 + 2.0), 1);
    assert_int_equal(t.state, OC_TKO_PROBING);
    assert_false(oc_tko_in_service(&t));
    assert_true(oc_tko_probe_wait(&t, t0 + 2.0) < 0);
    assert_int_equal(oc_tko_probe(&t, t0 + 2.0), 0); /* one probe at a time */
    /* it failed: down again, the next probe retry_s after that failure */
    assert_int_equal(oc_tko_failure(&t, &rules, t0 + 2.5), 1);
    assert_int_equal(t.state, OC_TKO_DOWN);
    assert_int_equal(t.ejections, 1); /* still the same ejection */
    assert_int_equal(oc_tko_probe(&t, t0 + 4.4), 0);
    assert_int_equal(oc_tko_probe(&t, t0 + 4.5), 1);
    /* a frozen server whose probes keep timing out is never taken back */
    for (int i = 0; i < 100; i++) {
        double now = t0 + 5 + i * 3;
        assert_int_equal(oc_tko_failure(&t, &rules, now), 1);
        assert_false(oc_tko_in_service(&t));
        assert_int_equal(oc_tko_probe(&t, now + rules.retry_s), 1);
    }
    assert_int_equal(t.ejections, 1);
}

static void test_back_only_when_the_probe_passed(void **state)
{
    (void)state;
    oc_tko_t t;
    eject(&t, t0);
    /* a reply while down (a late one) does not bring it back */
    oc_tko_success(&t);
    assert_int_equal(t.state, OC_TKO_DOWN);
    assert_int_equal(oc_tko_passed(&t, t0 + 1), 0);
    assert_int_equal(oc_tko_probe(&t, t0 + 2), 1);
    assert_int_equal(oc_tko_passed(&t, t0 + 2.1), 1);
    assert_true(oc_tko_in_service(&t));
    assert_true(t.back_at == t0 + 2.1);
    assert_true(t.down_at == t0); /* the ejection, not the last probe */
    assert_int_equal(t.failures, 0);
    /* recent for `window` seconds after it came back */
    assert_true(oc_tko_recent(&t, t0 + 2.1, 10));
    assert_true(oc_tko_recent(&t, t0 + 12.0, 10));
    assert_false(oc_tko_recent(&t, t0 + 12.1, 10));
    /* and ejected again after the limit, counted as a second ejection */
    for (uint32_t i = 0; i < rules.failure_limit; i++)
        oc_tko_failure(&t, &rules, t0 + 20);
    assert_int_equal(t.state, OC_TKO_DOWN);
    assert_int_equal(t.ejections, 2);
    assert_false(oc_tko_recent(&t, t0 + 20, 100)); /* down is not "recent" */
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(oc_tko_state_name(OC_TKO_UP), "up");
    assert_string_equal(oc_tko_state_name(OC_TKO_DOWN), "down");
    assert_string_equal(oc_tko_state_name(OC_TKO_PROBING), "probing");
    assert_string_equal(oc_tko_state_name((oc_tko_state_t)42), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starts_in_service),
        cmocka_unit_test(test_ejected_after_the_limit_in_a_row),
        cmocka_unit_test(test_a_success_starts_the_count_again),
        cmocka_unit_test(test_limit_one_and_zero),
        cmocka_unit_test(test_probe_every_retry),
        cmocka_unit_test(test_back_only_when_the_probe_passed),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

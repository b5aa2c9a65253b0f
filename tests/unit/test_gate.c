/* Unit tests for oc_gate, the test-only fault points: the environment
 * variables read (set, empty, unset), which allocations OBJCACHED_FAULT_OOM
 * names (whole items only, hostile names never reading outside the list),
 * and the fill gate held while its file exists. */
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "oc_gate.h"

static void test_listed(void **state)
{
    (void)state;
    assert_true(oc_gate_listed(",match_rows,", "match_rows"));
    assert_true(oc_gate_listed(",a,match_rows,b,", "match_rows"));
    assert_true(oc_gate_listed(",a,match_rows,", "a"));
    /* whole items only */
    assert_false(oc_gate_listed(",match_rows,", "match"));
    assert_false(oc_gate_listed(",match_rows,", "rows"));
    assert_false(oc_gate_listed(",match_rows,", "atch_row"));
    assert_false(oc_gate_listed(",match_rows_2,", "match_rows"));
    assert_false(oc_gate_listed(",xmatch_rows,", "match_rows"));
    /* a later whole match after a partial one */
    assert_true(oc_gate_listed(",match_rows_2,match_rows,", "match_rows"));
    assert_false(oc_gate_listed(",,", "x"));
    assert_false(oc_gate_listed(",a,", "b"));
    /* hostile names never read before the list: the list sits here after
     * a ',' that is not its own */
    char buf[] = ",,a,";
    const char *list = buf + 1; /* ",a," */
    assert_false(oc_gate_listed(list, ""));
    assert_false(oc_gate_listed(list, ",a"));
    assert_true(oc_gate_listed(list, "a"));
}

static void test_environment(void **state)
{
    (void)state;
    unsetenv("OBJCACHED_FAULT_FILL_GATE");
    unsetenv("OBJCACHED_FAULT_OOM");
    unsetenv("OBJCACHED_FAULT_NO_HEALTH_PROBE");
    /* none set: no gate, and a NULL gate holds and fails nothing */
    assert_null(oc_gate_new(NULL));
    assert_false(oc_gate_oom(NULL, "match_rows"));
    struct event *timer = NULL;
    assert_false(oc_gate_hold(NULL, &timer, NULL, NULL));
    assert_null(timer);
    oc_gate_free(NULL);

    setenv("OBJCACHED_FAULT_OOM", "match_rows,other", 1);
    oc_gate_t *g = oc_gate_new(NULL);
    assert_non_null(g);
    assert_true(oc_gate_oom(g, "match_rows"));
    assert_true(oc_gate_oom(g, "other"));
    assert_false(oc_gate_oom(g, "match"));
    assert_false(oc_gate_oom(g, ""));
    assert_false(oc_gate_hold(g, &timer, NULL, NULL)); /* no fill gate set */
    oc_gate_free(g);

    /* set but empty: a gate that does nothing */
    setenv("OBJCACHED_FAULT_OOM", "", 1);
    g = oc_gate_new(NULL);
    assert_non_null(g);
    assert_false(oc_gate_oom(g, "match_rows"));
    assert_false(oc_gate_oom(g, ""));
    oc_gate_free(g);
    unsetenv("OBJCACHED_FAULT_OOM");

    setenv("OBJCACHED_FAULT_FILL_GATE", "", 1);
    g = oc_gate_new(NULL);
    assert_non_null(g);
    assert_false(oc_gate_hold(g, &timer, NULL, NULL));
    assert_false(oc_gate_oom(g, "match_rows"));
    assert_false(oc_gate_no_health_probe(g));
    oc_gate_free(g);
    unsetenv("OBJCACHED_FAULT_FILL_GATE");

    /* the health probe off: "1" only */
    assert_false(oc_gate_no_health_probe(NULL));
    setenv("OBJCACHED_FAULT_NO_HEALTH_PROBE", "0", 1);
    assert_null(oc_gate_new(NULL));
    setenv("OBJCACHED_FAULT_NO_HEALTH_PROBE", "yes", 1);
    assert_null(oc_gate_new(NULL));
    setenv("OBJCACHED_FAULT_NO_HEALTH_PROBE", "1", 1);
    g = oc_gate_new(NULL);
    assert_non_null(g);
    assert_true(oc_gate_no_health_probe(g));
    assert_false(oc_gate_oom(g, "match_rows"));
    assert_false(oc_gate_hold(g, &timer, NULL, NULL));
    oc_gate_free(g);
    unsetenv("OBJCACHED_FAULT_NO_HEALTH_PROBE");
}

static int runs;

static void on_gate(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    assert_ptr_equal(arg, &runs);
    runs++;
}

static void test_fill_gate(void **state)
{
    (void)state;
    char path[] = "/tmp/oc_test_gate_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    setenv("OBJCACHED_FAULT_FILL_GATE", path, 1);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    oc_gate_t *g = oc_gate_new(base);
    assert_non_null(g);
    assert_false(oc_gate_oom(g, "match_rows"));
    /* the file exists: held, and the callback runs again later */
    struct event *timer = NULL;
    runs = 0;
    assert_true(oc_gate_hold(g, &timer, on_gate, &runs));
    assert_non_null(timer);
    assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
    assert_int_equal(runs, 1);
    /* held again on the same timer */
    struct event *first = timer;
    assert_true(oc_gate_hold(g, &timer, on_gate, &runs));
    assert_ptr_equal(timer, first);
    assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
    assert_int_equal(runs, 2);
    /* the file gone: the write-back goes on */
    assert_int_equal(unlink(path), 0);
    assert_false(oc_gate_hold(g, &timer, on_gate, &runs));
    event_free(timer);
    oc_gate_free(g);
    event_base_free(base);
    unsetenv("OBJCACHED_FAULT_FILL_GATE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listed),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_fill_gate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

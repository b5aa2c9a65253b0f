/* oc_resolve: getaddrinfo on a worker thread, answered on the loop. Names
 * of the hosts file and literal addresses only (no DNS on a test host):
 * the answer comes back through the loop, a cancelled request is never
 * called back, and a resolver freed with requests pending calls nothing
 * (the valgrind and ASan passes check that nothing leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "oc_resolve.h"

typedef struct answer {
    int calls, rc;
    char text[80];
} answer_t;

static void on_answer(int rc, const struct sockaddr *a, socklen_t len, void *arg)
{
    answer_t *an = arg;
    an->calls++;
    an->rc = rc;
    if (rc == 0)
        oc_resolve_addr_text(a, len, an->text, sizeof(an->text));
}

static void run_until(struct event_base *base, const answer_t *an)
{
    for (int i = 0; i < 5000 && an->calls == 0; i++)
        event_base_loop(base, EVLOOP_ONCE);
}

static void test_literal(void **state)
{
    (void)state;
    assert_true(oc_resolve_is_literal("127.0.0.2"));
    assert_true(oc_resolve_is_literal("::1"));
    assert_false(oc_resolve_is_literal("memcached-0.memcached"));
    assert_false(oc_resolve_is_literal("localhost"));
}

static void test_answer_comes_through_the_loop(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    oc_resolver_t *r = oc_resolver_new(base);
    assert_non_null(r);
    answer_t a = {0}, b = {0};
    assert_non_null(oc_resolve_start(r, "127.0.0.3", 11211, on_answer, &a));
    assert_non_null(oc_resolve_start(r, "::1", 11212, on_answer, &b));
    assert_int_equal(a.calls, 0); /* never inside oc_resolve_start */
    run_until(base, &a);
    run_until(base, &b);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.rc, 0);
    assert_string_equal(a.text, "127.0.0.3:11211");
    assert_int_equal(b.calls, 1);
    assert_string_equal(b.text, "[::1]:11212");
    oc_resolver_free(r);
    event_base_free(base);
}

static void test_cancelled_is_never_called(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    oc_resolver_t *r = oc_resolver_new(base);
    answer_t a = {0}, b = {0};
    oc_resolve_req_t *q = oc_resolve_start(r, "127.0.0.1", 1, on_answer, &a);
    assert_non_null(oc_resolve_start(r, "127.0.0.1", 2, on_answer, &b));
    oc_resolve_cancel(r, q); /* queued, being resolved or answered: dropped */
    run_until(base, &b);
    for (int i = 0; i < 10; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 1);
    /* freed with requests pending: nothing is called */
    answer_t c = {0};
    assert_non_null(oc_resolve_start(r, "127.0.0.1", 3, on_answer, &c));
    oc_resolver_free(r);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(c.calls, 0);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal),
        cmocka_unit_test(test_answer_comes_through_the_loop),
        cmocka_unit_test(test_cancelled_is_never_called),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* oc_mc's pool changed by a reload with work queued. Real loopback
 * listeners stand in for memcached (nobody answers: only the queueing and
 * the flush are exercised). A reload removed a server still on mc->dirty
 * (its gets queued this loop turn, the flush event not run yet); the flush
 * then walked the freed server: a use after free that ASan and valgrind
 * report (both passes run this test). Found by a review, 2026-12-05. */
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
#include <unistd.h>

#include "oc_conf.h"
#include "oc_mc.h"

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static oc_conf_t *conf_of(const char *servers)
{
    char text[512], err[OC_ERRLEN] = "";
    snprintf(text, sizeof(text),
             "[memcached]\nservers = %s\nfailover = off\n"
             "[postgresql]\nconninfo = dbname=app\n[model User]\ntable = users\n",
             servers);
    oc_conf_t *c = oc_conf_load_string(text, strlen(text), err);
    if (c == NULL)
        fail_msg("%s", err);
    return c;
}

static int done_calls;
static void on_done(oc_mc_job_t *job, void *arg)
{
    (void)arg;
    done_calls++;
    oc_mc_job_free(job);
}

static void test_reconfigure_removes_a_dirty_server(void **state)
{
    (void)state;
    uint16_t pa, pb;
    int la = listen_any(&pa), lb = listen_any(&pb);
    char both[128], one[64];
    snprintf(both, sizeof(both), "127.0.0.1:%u 127.0.0.1:%u", pa, pb);
    snprintf(one, sizeof(one), "127.0.0.1:%u", pa);
    oc_conf_t *c1 = conf_of(both), *c2 = conf_of(one);
    struct event_base *base = event_base_new();
    char err[OC_ERRLEN];
    oc_mc_t *mc = oc_mc_new(base, c1, err);
    assert_non_null(mc);

    /* 32 keys: some on each server; both are queued (dirty) now. */
    static char keys[32][16];
    oc_mc_job_t *job = oc_mc_job_new_get(32, on_done, NULL);
    for (int i = 0; i < 32; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        job->keys[i] = keys[i];
        job->key_lens[i] = strlen(keys[i]);
    }
    oc_mc_submit(mc, job);
    /* A SIGHUP handled in the same loop turn, before the flush event. */
    assert_int_equal(oc_mc_reconfigure(mc, c2, err), OC_OK);
    /* The flush walks mc->dirty: the removed server must not be on it. */
    for (int i = 0; i < 50 && done_calls == 0; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    oc_mc_free(mc);
    assert_int_equal(done_calls, 1);
    event_base_free(base);
    oc_conf_free(c1);
    oc_conf_free(c2);
    close(la);
    close(lb);
}

/* oc_mc.h: "NULLs turn it off". oc_mc_watch wrote the placement stat
 * through a NULL stats (a crash), found by the split of oc_mc.c. */
static void test_watch_with_null_stats_turns_counting_off(void **state)
{
    (void)state;
    uint16_t pa;
    int la = listen_any(&pa);
    char one[64], err[OC_ERRLEN];
    snprintf(one, sizeof(one), "127.0.0.1:%u", pa);
    oc_conf_t *c = conf_of(one);
    struct event_base *base = event_base_new();
    oc_mc_t *mc = oc_mc_new(base, c, err);
    assert_non_null(mc);
    oc_mc_watch(mc, NULL, NULL, NULL);
    oc_mc_free(mc);
    event_base_free(base);
    oc_conf_free(c);
    close(la);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reconfigure_removes_a_dirty_server),
        cmocka_unit_test(test_watch_with_null_stats_turns_counting_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

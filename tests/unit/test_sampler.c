/* Unit tests for the consistency sampler's decisions (oc_smp): agreement of
 * a cached copy with a row, the recheck that tells a proven inconsistency
 * from a compare that raced a commit, sampling, the queue by due time, slot
 * names, the select it reads rows with; and its settings (oc_conf), the
 * stats lines and the verify sample-size parser. No I/O: time is passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "oc_conf.h"
#include "oc_smp.h"
#include "oc_stats.h"
#include "oc_verify.h"

static oc_smp_cache_t obj(const char *v, uint64_t cas)
{
    return (oc_smp_cache_t){
        .kind = OC_SMP_C_OBJECT, .ident = cas, .val = v, .len = strlen(v)};
}

static oc_smp_row_t row(const char *j, uint64_t xmin)
{
    return (oc_smp_row_t){.found = 1, .json = j, .len = strlen(j), .xmin = xmin};
}

static const oc_smp_row_t no_row = {0};

static void test_agreement(void **state)
{
    (void)state;
    oc_smp_cache_t empty = {.kind = OC_SMP_C_EMPTY};
    oc_smp_cache_t absent = {.kind = OC_SMP_C_ABSENT, .ident = 5};
    oc_smp_row_t r = row("{\"id\":1,\"n\":2}", 100);
    /* nothing cached agrees with anything: a client would load */
    assert_true(oc_smp_agrees(NULL, &empty, &r));
    assert_true(oc_smp_agrees(NULL, &empty, &no_row));
    /* absent agrees with no row only */
    assert_true(oc_smp_agrees(NULL, &absent, &no_row));
    assert_false(oc_smp_agrees(NULL, &absent, &r));
    /* an object: bytes, or JSON values, equal */
    oc_smp_cache_t same = obj("{\"id\":1,\"n\":2}", 7);
    oc_smp_cache_t reordered = obj("{ \"n\": 2, \"id\": 1 }", 7);
    oc_smp_cache_t other = obj("{\"id\":1,\"n\":3}", 7);
    oc_smp_cache_t garbage = obj("\x01{not json", 7);
    assert_true(oc_smp_agrees(NULL, &same, &r));
    assert_true(oc_smp_agrees(NULL, &reordered, &r));
    assert_false(oc_smp_agrees(NULL, &other, &r));
    assert_false(oc_smp_agrees(NULL, &garbage, &r));
    assert_false(oc_smp_agrees(NULL, &same, &no_row));
    /* with a version column, equal versions agree; a missing or null one
     * does not */
    oc_smp_row_t v = row("{\"id\":1,\"body\":\"a\",\"v\":4}", 1);
    oc_smp_cache_t pushed = obj("{\"id\":1,\"body\":\"A\",\"v\":4}", 2);
    oc_smp_cache_t older = obj("{\"id\":1,\"body\":\"a\",\"v\":3}", 2);
    oc_smp_cache_t nullv = obj("{\"id\":1,\"body\":\"A\",\"v\":null}", 2);
    oc_smp_row_t vnull = row("{\"id\":1,\"body\":\"a\",\"v\":null}", 1);
    assert_true(oc_smp_agrees("v", &pushed, &v));
    assert_false(oc_smp_agrees(NULL, &pushed, &v));
    assert_false(oc_smp_agrees("v", &older, &v));
    assert_false(oc_smp_agrees("v", &nullv, &vnull));
    assert_false(oc_smp_agrees("nope", &pushed, &v));
    oc_smp_cache_t err = {.kind = OC_SMP_C_ERROR};
    assert_false(oc_smp_agrees(NULL, &err, &r));
}

/* JSON numbers that differ only past a double's precision are
 * different values of a numeric column (PostgreSQL's row_to_json prints
 * every digit): a stale copy must not agree with the row. */
static void test_numeric_digits_not_lost(void **state)
{
    (void)state;
    oc_smp_row_t r = row("{\"id\":1,\"bal\":1.000000000000000002}", 10);
    oc_smp_cache_t old = obj("{\"id\":1,\"bal\":1.000000000000000001}", 3);
    assert_false(oc_smp_agrees(NULL, &old, &r));
    oc_smp_row_t big = row("{\"id\":1,\"bal\":12345678901234567.3}", 10);
    oc_smp_cache_t bigold = obj("{\"id\":1,\"bal\":12345678901234567.1}", 3);
    assert_false(oc_smp_agrees(NULL, &bigold, &big));
    /* still: the same number spelt another way (a push's own JSON) agrees */
    oc_smp_cache_t spelt = obj("{ \"bal\": 1.000000000000000002, \"id\": 1 }", 3);
    assert_true(oc_smp_agrees(NULL, &spelt, &r));
}

static void test_first_read(void **state)
{
    (void)state;
    oc_smp_evidence_t ev;
    oc_smp_row_t r = row("{\"n\":1}", 10);
    oc_smp_cache_t c = obj("{\"n\":1}", 3);
    assert_int_equal(oc_smp_first(NULL, &c, &r, &ev), OC_SMP_AGREE);
    oc_smp_cache_t old = obj("{\"n\":0}", 3);
    assert_int_equal(oc_smp_first(NULL, &old, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(ev.ident, 3);
    assert_int_equal(ev.xmin, 10);
    assert_true(ev.found);
    oc_smp_cache_t e = {.kind = OC_SMP_C_ERROR};
    assert_int_equal(oc_smp_first(NULL, &e, &r, &ev), OC_SMP_ERROR);
    oc_smp_row_t re = {.error = 1};
    assert_int_equal(oc_smp_first(NULL, &old, &re, &ev), OC_SMP_ERROR);
}

/* The recheck: stale only when the same item still disagrees with a row
 * that did not change between the two row reads. */
static void test_recheck_rules(void **state)
{
    (void)state;
    oc_smp_evidence_t ev;
    oc_smp_row_t r = row("{\"n\":1}", 10);
    oc_smp_cache_t old = obj("{\"n\":0}", 3);
    /* same item, same row version: proven */
    assert_int_equal(oc_smp_first(NULL, &old, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &old, &r), OC_SMP_STALE);
    /* the invalidation arrived meanwhile: the key is empty now */
    oc_smp_cache_t empty = {.kind = OC_SMP_C_EMPTY};
    assert_int_equal(oc_smp_first(NULL, &old, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &empty, &r), OC_SMP_AGREE);
    /* the cache now holds the row (reloaded) */
    oc_smp_cache_t fresh = obj("{\"n\":1}", 4);
    assert_int_equal(oc_smp_first(NULL, &old, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &fresh, &r), OC_SMP_AGREE);
    /* a write committed between the row reads (new xmin): raced, and the
     * evidence moves on to this read */
    oc_smp_row_t r2 = row("{\"n\":2}", 11);
    assert_int_equal(oc_smp_first(NULL, &old, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &old, &r2), OC_SMP_RACED);
    assert_int_equal(ev.xmin, 11);
    assert_int_equal(oc_smp_again(NULL, &ev, &old, &r2), OC_SMP_STALE);
    /* the item was replaced by another stale one (another cas): raced */
    oc_smp_cache_t other = obj("{\"n\":0}", 9);
    assert_int_equal(oc_smp_first(NULL, &old, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &other, &r), OC_SMP_RACED);
    /* the same cas read on another server (or after it was out of
     * service): another item, raced (a cas is one server's count) */
    oc_smp_cache_t moved = old;
    moved.epoch = old.epoch + 1;
    assert_int_equal(oc_smp_first(NULL, &old, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &moved, &r), OC_SMP_RACED);
    /* a row updated to the same JSON is still a new version */
    oc_smp_row_t same_json = row("{\"n\":1}", 12);
    oc_smp_cache_t x = obj("{\"n\":5}", 1);
    assert_int_equal(oc_smp_first(NULL, &x, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &x, &same_json), OC_SMP_RACED);
    /* a row deleted between the reads: raced; absent both times: stale */
    assert_int_equal(oc_smp_first(NULL, &x, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &x, &no_row), OC_SMP_RACED);
    assert_int_equal(oc_smp_again(NULL, &ev, &x, &no_row), OC_SMP_STALE);
    /* an absent entry while the row exists */
    oc_smp_cache_t absent = {.kind = OC_SMP_C_ABSENT, .ident = 77};
    assert_int_equal(oc_smp_first(NULL, &absent, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &absent, &r), OC_SMP_STALE);
    /* no xmin (a view): the JSON decides whether the row changed */
    oc_smp_row_t v1 = row("{\"n\":1}", 0), v2 = row("{\"n\":2}", 0);
    assert_int_equal(oc_smp_first(NULL, &x, &v1, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &x, &v2), OC_SMP_RACED);
    assert_int_equal(oc_smp_again(NULL, &ev, &x, &v2), OC_SMP_STALE);
    /* near-cache and memcached items are never the same item */
    oc_smp_cache_t n = x;
    n.near = 1;
    assert_int_equal(oc_smp_first(NULL, &x, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &n, &r), OC_SMP_RACED);
    /* errors at the recheck */
    oc_smp_cache_t e = {.kind = OC_SMP_C_ERROR};
    assert_int_equal(oc_smp_first(NULL, &x, &r, &ev), OC_SMP_SUSPECT);
    assert_int_equal(oc_smp_again(NULL, &ev, &e, &r), OC_SMP_ERROR);
}

static void test_pick_rate(void **state)
{
    (void)state;
    uint64_t rng = 0; /* a zero seed still draws */
    size_t hits = 0;
    for (int i = 0; i < 1000000; i++)
        hits += (size_t)oc_smp_pick(&rng, 1000); /* 0.1% */
    assert_in_range(hits, 800, 1200);
    for (int i = 0; i < 1000; i++) {
        assert_false(oc_smp_pick(&rng, 0));
        assert_true(oc_smp_pick(&rng, 1000000));
    }
    hits = 0;
    for (int i = 0; i < 100000; i++)
        hits += (size_t)oc_smp_pick(&rng, 500000);
    assert_in_range(hits, 48000, 52000);
}

static void test_queue_by_due_time(void **state)
{
    (void)state;
    oc_smp_queue_t q;
    assert_int_equal(oc_smp_queue_init(&q, 64), 0);
    double dues[] = {5, 1, 9, 3, 3, 7, 0.5, 8, 2, 6};
    for (size_t i = 0; i < 10; i++) {
        oc_smp_item_t it = {.due = dues[i], .model = (uint16_t)i};
        assert_int_equal(oc_smp_queue_push(&q, &it), 0);
    }
    oc_smp_item_t out;
    assert_int_equal(oc_smp_queue_pop_due(&q, 0.4, &out), 0); /* nothing due yet */
    double last = -1;
    size_t n = 0;
    while (oc_smp_queue_pop_due(&q, 5.0, &out)) {
        assert_true(out.due >= last && out.due <= 5.0);
        last = out.due;
        n++;
    }
    assert_int_equal(n, 6);
    assert_int_equal(q.n, 4);
    while (oc_smp_queue_pop_due(&q, 100, &out))
        n++;
    assert_int_equal(n, 10);
    oc_smp_queue_free(&q);
    /* full: refused, the caller keeps the item */
    assert_int_equal(oc_smp_queue_init(&q, 3), 0);
    oc_smp_item_t it = {.due = 1};
    for (int i = 0; i < 3; i++)
        assert_int_equal(oc_smp_queue_push(&q, &it), 0);
    assert_int_equal(oc_smp_queue_push(&q, &it), -1);
    assert_int_equal(q.n, 3);
    oc_smp_queue_free(&q);
    /* a large bound grows the array as samples come, keeping the order; a
     * lower bound (a reload) keeps what waits and refuses until it drains */
    assert_int_equal(oc_smp_queue_init(&q, 100000), 0);
    assert_true(q.alloc < 100000);
    for (int i = 0; i < 5000; i++) {
        oc_smp_item_t x = {.due = (double)((i * 7919) % 5000)};
        assert_int_equal(oc_smp_queue_push(&q, &x), 0);
    }
    assert_true(q.alloc >= 5000 && q.alloc < 100000);
    oc_smp_queue_limit(&q, 4000);
    assert_int_equal(oc_smp_queue_push(&q, &it), -1);
    for (int i = 0; i < 1001; i++) {
        assert_int_equal(oc_smp_queue_pop_due(&q, 1e9, &out), 1);
        assert_true(out.due == (double)i);
    }
    assert_int_equal(oc_smp_queue_push(&q, &it), 0); /* 3,999 waited: room for one */
    assert_int_equal(oc_smp_queue_push(&q, &it), -1);
    oc_smp_queue_free(&q);
    /* An item put back (a recheck) may pass the bound by `extra`,
     * new samples may not */
    assert_int_equal(oc_smp_queue_init(&q, 3), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(oc_smp_queue_push(&q, &it), 0);
    assert_int_equal(oc_smp_queue_push(&q, &it), -1);
    assert_int_equal(oc_smp_queue_push_over(&q, &it, 2), 0);
    assert_int_equal(oc_smp_queue_push_over(&q, &it, 2), 0);
    assert_int_equal(oc_smp_queue_push_over(&q, &it, 2), -1);
    assert_int_equal(q.n, 5);
    assert_int_equal(oc_smp_queue_push(&q, &it), -1);
    oc_smp_queue_free(&q);
}

static void test_slot_names(void **state)
{
    (void)state;
    uint32_t w[] = {1000, 10000, 60000, 1500};
    char b[16];
    oc_smp_slot_name(w, 4, 0, b, sizeof(b));
    assert_string_equal(b, "1s");
    oc_smp_slot_name(w, 4, 2, b, sizeof(b));
    assert_string_equal(b, "60s");
    oc_smp_slot_name(w, 4, 3, b, sizeof(b));
    assert_string_equal(b, "1500ms");
    oc_smp_slot_name(w, 4, 4, b, sizeof(b));
    assert_string_equal(b, "hit");
    oc_smp_slot_name(w, 2, 2, b, sizeof(b));
    assert_string_equal(b, "hit");
}

/* A disagreement at window W is read again W later (never sooner than
 * sample_recheck), so what counts at W stayed wrong for W; hits: recheck. */
static void test_recheck_after_the_window(void **state)
{
    (void)state;
    uint32_t w[] = {200, 1000, 10000, 60000};
    assert_int_equal(oc_smp_recheck_ms(w, 4, 0, 1000), 1000); /* shorter window */
    assert_int_equal(oc_smp_recheck_ms(w, 4, 1, 1000), 1000);
    assert_int_equal(oc_smp_recheck_ms(w, 4, 2, 1000), 10000);
    assert_int_equal(oc_smp_recheck_ms(w, 4, 3, 1000), 60000);
    assert_int_equal(oc_smp_recheck_ms(w, 4, 3, 90000), 90000);
    assert_int_equal(oc_smp_recheck_ms(w, 4, 4, 1000), 1000); /* the hits' slot */
    assert_int_equal(oc_smp_recheck_ms(w, 2, 2, 500), 500);
    assert_int_equal(oc_smp_recheck_ms(w, 0, 0, 700), 700);
}

static oc_conf_t *load(const char *extra_objcached, const char *extra_model, char *err)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "[objcached]\n%s\n[memcached]\nservers = 127.0.0.1:11211\n"
             "[postgresql]\nconninfo = dbname=x\n"
             "[model User]\ntable = app.users\ncolumns = id, name\n%s\n"
             "[model Other]\ntable = other\n",
             extra_objcached, extra_model);
    return oc_conf_load_string(text, strlen(text), err);
}

static void test_settings(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load("", "", err);
    assert_non_null(c);
    assert_int_equal(c->sample_ppm, 1000); /* 0.1% */
    assert_int_equal(c->sample_windows.n, 3);
    assert_int_equal(c->sample_windows.ms[0], 1000);
    assert_int_equal(c->sample_windows.ms[2], 60000);
    assert_int_equal(c->sample_max_qps, 4);
    assert_int_equal(c->sample_recheck_ms, 1000);
    assert_int_equal(c->sample_queue, 16384);
    assert_int_equal(c->models[0].sample_ppm, 1000); /* inherited */
    oc_conf_free(c);
    c = load("sample_rate = 2.5%\nsample_windows = 1500ms, 2s", "sample_rate = 0", err);
    assert_non_null(c);
    assert_int_equal(c->sample_ppm, 25000);
    assert_int_equal(c->sample_windows.n, 2);
    assert_int_equal(c->sample_windows.ms[0], 1500);
    assert_int_equal(c->models[0].sample_ppm, 0);     /* set here */
    assert_int_equal(c->models[1].sample_ppm, 25000); /* inherited */
    oc_conf_free(c);
    c = load("sample_rate = 1", "sample_rate = 0.000001", err);
    assert_non_null(c);
    assert_int_equal(c->sample_ppm, 1000000);
    assert_int_equal(c->models[0].sample_ppm, 1);
    oc_conf_free(c);
    static const char *const bad[] = {
        "sample_rate = 1.5",
        "sample_rate = 101%",
        "sample_rate = -1",
        "sample_rate = 0.0000001",
        "sample_rate = abc",
        "sample_rate = 1.",
        "sample_rate = .5",
        "sample_rate = 5%%",
        "sample_rate = 1e-3",
        "sample_rate = 999999999999999999999",
        "sample_windows = 0s",
        "sample_windows = 2h",
        "sample_windows = 10s, 5s",
        "sample_windows = 1s,1s",
        "sample_windows = 1s,2s,3s,4s,5s",
        "sample_windows = ,",
        "sample_windows = 1s,,2s",
        "sample_windows = x",
        "sample_max_qps = 0",
        "sample_max_qps = 101",
        "sample_queue = 255",
        "sample_queue = 4194305",
        "sample_queue = -1",
        "sample_queue = 1k",
        "sample_recheck = 50ms",
        "sample_recheck = 2m",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = load(bad[i], "", err);
        if (c != NULL)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(strstr(err, ":2: sample_"));
    }
    /* sample_windows needs a restart; the others reload */
    oc_conf_t *a = load("", "", err), *b = load("sample_windows = 2s", "", err);
    assert_string_equal(oc_conf_restart_key(a, b), "sample_windows");
    oc_conf_free(b);
    b = load("sample_rate = 1%\nsample_max_qps = 9\nsample_recheck = 3s\nsample_queue = "
             "300000",
             "", err);
    assert_null(oc_conf_restart_key(a, b));
    oc_conf_free(a);
    oc_conf_free(b);
}

/* The select splices xmin into the load statement, and numbers its
 * parameter; a view's has NULL in its place. */
static void test_select(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load("", "", err);
    assert_non_null(c);
    char *s = oc_smp_sql(&c->models[0], 3, 2, 0);
    assert_string_equal(
        s,
        "SELECT 3, t.\"id\"::pg_catalog.text, (SELECT pg_catalog.row_to_json(r) FROM "
        "(SELECT t.\"id\", t.\"name\") AS r)::pg_catalog.text, t.xmin::pg_catalog.text "
        "FROM \"app\".\"users\" AS t WHERE t.\"id\" OPERATOR(pg_catalog.=) "
        "ANY($2::pg_catalog.int8[])");
    free(s);
    s = oc_smp_sql(&c->models[1], 0, 1, 1);
    assert_string_equal(
        s, "SELECT 0, t.\"id\"::pg_catalog.text, "
           "pg_catalog.row_to_json(t)::pg_catalog.text, NULL::pg_catalog.text "
           "FROM \"public\".\"other\" AS t WHERE t.\"id\" "
           "OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[])");
    free(s);
    oc_conf_free(c);
}

static void test_stats_lines(void **state)
{
    (void)state;
    oc_stats_t st = {0};
    assert_int_equal(oc_stats_reserve_models(&st, 1), 0);
    oc_stats_name_model(&st, 0, "User");
    st.nsampler_slots = 2;
    strcpy(st.sampler_slot[0], "10s");
    strcpy(st.sampler_slot[1], "hit");
    st.models[0].sampler_checks[0] = 12;
    st.models[0].sampler_inconsistent[1] = 3;
    struct evbuffer *b = evbuffer_new();
    oc_stats_write(&st, b);
    evbuffer_add(b, "", 1);
    const char *t = (const char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(t, "STAT sampler:User:10s:checks 12\r\n"));
    assert_non_null(strstr(t, "STAT sampler:User:hit:inconsistent 3\r\n"));
    assert_non_null(strstr(t, "STAT sampler:User:hit:empty 0\r\n"));
    evbuffer_free(b);
    b = evbuffer_new();
    oc_stats_write_prometheus(&st, b);
    evbuffer_add(b, "", 1);
    t = (const char *)evbuffer_pullup(b, -1);
    assert_non_null(
        strstr(t, "objcached_sampler_checks_total{model=\"User\",window=\"10s\"} 12\n"));
    assert_non_null(strstr(
        t, "objcached_sampler_inconsistent_total{model=\"User\",window=\"hit\"} 3\n"));
    assert_non_null(strstr(t, "# TYPE objcached_sampler_checks_total counter\n"));
    evbuffer_free(b);
    oc_stats_reset(&st);
    assert_int_equal(st.models[0].sampler_checks[0], 0);
    oc_stats_free(&st);
}

static void test_verify_sample_parser(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    uint32_t n = 0;
    assert_int_equal(oc_verify_parse_sample("1", &n, err), OC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(oc_verify_parse_sample("100000", &n, err), OC_OK);
    assert_int_equal(n, 100000);
    assert_int_equal(oc_verify_parse_sample("0007", &n, err), OC_OK);
    assert_int_equal(n, 7);
    static const char *const bad[] = {
        "0",  "",   "100001", "1000000000", "-1", "+5",
        " 5", "5 ", "1e3",    "0x10",       "５", "99999999999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = 42;
        assert_int_not_equal(oc_verify_parse_sample(bad[i], &n, err), OC_OK);
        assert_int_equal(n, 42);
        assert_non_null(strstr(err, "--sample"));
    }
    assert_int_not_equal(oc_verify_parse_sample(NULL, &n, err), OC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agreement),
        cmocka_unit_test(test_numeric_digits_not_lost),
        cmocka_unit_test(test_first_read),
        cmocka_unit_test(test_recheck_rules),
        cmocka_unit_test(test_pick_rate),
        cmocka_unit_test(test_queue_by_due_time),
        cmocka_unit_test(test_slot_names),
        cmocka_unit_test(test_recheck_after_the_window),
        cmocka_unit_test(test_settings),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_stats_lines),
        cmocka_unit_test(test_verify_sample_parser),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

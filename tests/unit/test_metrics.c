/* Unit tests for oc_metrics: metrics_listen's address (brackets, ports,
 * hostile text), and the whole /metrics page read back line by line
 * against the Prometheus text format: metric and label names, label
 * values, HELP and TYPE once per family before its samples, counters named
 * _total, histograms with increasing bounds, cumulative buckets ending at
 * +Inf equal to _count; and the values the page reports. */
#include <ctype.h>
#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oc_metrics.h"
#include "oc_stats.h"

static void test_address(void **state)
{
    (void)state;
    char host[64];
    uint16_t port = 0;
    assert_int_equal(oc_metrics_address("127.0.0.1:9100", host, sizeof(host), &port),
                     OC_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9100);
    assert_int_equal(oc_metrics_address("[::1]:9101", host, sizeof(host), &port), OC_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9101);
    assert_int_equal(oc_metrics_address("localhost:1", host, sizeof(host), &port), OC_OK);
    assert_int_equal(port, 1);
    assert_int_equal(oc_metrics_address("h:65535", host, sizeof(host), &port), OC_OK);
    assert_int_equal(port, 65535);
    /* the last ':' splits: a bracketed v6 address keeps its own */
    assert_int_equal(oc_metrics_address("[fe80::1:2]:80", host, sizeof(host), &port),
                     OC_OK);
    assert_string_equal(host, "fe80::1:2");

    const char *bad[] = {
        "127.0.0.1",   /* no port */
        "127.0.0.1:",  /* empty port */
        "127.0.0.1:0", /* port 0: a random port */
        "127.0.0.1:65536",
        "127.0.0.1:99999999999999999999999",
        "127.0.0.1:18446744073709551696", /* 2^64 + 80: no wrap to 80 */
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1: 80",
        "127.0.0.1:80x",
        "127.0.0.1:80\n",
        ":9100", /* no host: every interface */
        "[]:9100",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        port = 7;
        assert_int_equal(oc_metrics_address(bad[i], host, sizeof(host), &port),
                         OC_ECONFIG);
        assert_int_equal(port, 7);
    }
    /* a host longer than the buffer is refused, not cut */
    assert_int_equal(oc_metrics_address("abcdefgh:80", host, 8, &port), OC_ECONFIG);
    assert_int_equal(oc_metrics_address("abcdefg:80", host, 8, &port), OC_OK);
    assert_string_equal(host, "abcdefg");
}

/* ---- the page, read back ---------------------------------------------------- */

typedef struct family {
    char name[96];
    char type[16];
    int help, samples;
} family_t;

typedef struct page {
    family_t fam[256];
    size_t nfam;
    size_t lines;
} page_t;

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

static family_t *find(page_t *pg, const char *name, size_t n)
{
    for (size_t i = 0; i < pg->nfam; i++)
        if (strlen(pg->fam[i].name) == n && memcmp(pg->fam[i].name, name, n) == 0)
            return &pg->fam[i];
    return NULL;
}

/* The family a sample belongs to: its own name, or a histogram's. */
static family_t *family_of(page_t *pg, const char *name, size_t n)
{
    family_t *f = find(pg, name, n);
    static const char *const suffix[] = {"_bucket", "_sum", "_count"};
    for (size_t k = 0; f == NULL && k < 3; k++) {
        size_t sl = strlen(suffix[k]);
        if (n > sl && memcmp(name + n - sl, suffix[k], sl) == 0) {
            f = find(pg, name, n - sl);
            if (f && strcmp(f->type, "histogram") != 0)
                f = NULL;
        }
    }
    return f;
}

/* {a="x",b="y"}: names valid, values without raw quotes, backslashes or
 * newlines. Returns the bytes read, 0 if malformed. */
static size_t labels_ok(const char *p)
{
    const char *s = p;
    if (*p++ != '{')
        return 0;
    for (;;) {
        const char *n = p;
        while (*p && *p != '=')
            p++;
        if (!name_ok(n, (size_t)(p - n)) || *p++ != '=' || *p++ != '"')
            return 0;
        while (*p && *p != '"') {
            if (*p == '\\' || *p == '\n')
                return 0;
            p++;
        }
        if (*p++ != '"')
            return 0;
        if (*p == '}')
            return (size_t)(p + 1 - s);
        if (*p++ != ',')
            return 0;
    }
}

static void check_line(page_t *pg, const char *line)
{
    pg->lines++;
    if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
        const char *n = line + 7, *sp = strchr(n, ' ');
        assert_non_null(sp);
        assert_true(name_ok(n, (size_t)(sp - n)));
        family_t *f = find(pg, n, (size_t)(sp - n));
        if (f == NULL) {
            assert_true(pg->nfam < sizeof(pg->fam) / sizeof(pg->fam[0]));
            f = &pg->fam[pg->nfam++];
            memset(f, 0, sizeof(*f));
            memcpy(f->name, n, (size_t)(sp - n));
        }
        assert_int_equal(f->samples, 0); /* before its samples */
        if (line[2] == 'H') {
            assert_int_equal(f->help++, 0);
            assert_null(strchr(sp + 1, '\\')); /* no escapes needed */
            assert_true(strlen(sp + 1) > 0);
        } else {
            assert_int_equal(f->type[0], '\0');
            snprintf(f->type, sizeof(f->type), "%s", sp + 1);
            assert_true(strcmp(f->type, "counter") == 0 ||
                        strcmp(f->type, "gauge") == 0 ||
                        strcmp(f->type, "histogram") == 0);
            if (strcmp(f->type, "counter") == 0)
                assert_true(strlen(f->name) > 6 &&
                            strcmp(f->name + strlen(f->name) - 6, "_total") == 0);
        }
        return;
    }
    assert_int_not_equal(line[0], '#');
    const char *p = line;
    while (*p && *p != '{' && *p != ' ')
        p++;
    family_t *f = family_of(pg, line, (size_t)(p - line));
    if (f == NULL)
        fail_msg("sample of no declared family: %s", line);
    assert_true(f->help == 1 && f->type[0] != '\0');
    f->samples++;
    if (*p == '{') {
        size_t n = labels_ok(p);
        if (n == 0)
            fail_msg("bad labels: %s", line);
        p += n;
    }
    assert_int_equal(*p++, ' ');
    char *end;
    (void)strtod(p, &end);
    if (end == p || *end != '\0')
        fail_msg("bad value: %s", line);
}

/* A histogram's lines in order: bounds increasing, counts cumulative, the
 * last +Inf equal to _count. */
static void check_histogram(const char *text, const char *name, uint64_t want_count)
{
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "\n%s_bucket{le=\"", name);
    const char *p = strstr(text, prefix);
    assert_non_null(p);
    double last_le = -1;
    unsigned long long last = 0, inf = 0;
    int nb = 0, saw_inf = 0;
    while (p && strncmp(p, prefix, strlen(prefix)) == 0) {
        p += strlen(prefix);
        unsigned long long v;
        if (strncmp(p, "+Inf\"} ", 7) == 0) {
            assert_int_equal(sscanf(p + 7, "%llu", &v), 1);
            inf = v;
            saw_inf = 1;
        } else {
            assert_false(saw_inf); /* +Inf comes last */
            double le;
            char close[3];
            assert_int_equal(sscanf(p, "%lf%2s %llu", &le, close, &v), 3);
            assert_string_equal(close, "\"}");
            assert_true(le > last_le);
            assert_true(nb < OC_HIST_BUCKETS);
            assert_true(le == oc_hist_bounds[nb]); /* the bound itself, not rounded */
            last_le = le;
        }
        assert_true(v >= last);
        last = v;
        nb++;
        p = strchr(p, '\n');
    }
    assert_true(saw_inf);
    assert_int_equal(nb, OC_HIST_BUCKETS + 1);
    assert_int_equal(inf, want_count);
    char count[128];
    snprintf(count, sizeof(count), "\n%s_count %llu\n", name,
             (unsigned long long)want_count);
    assert_non_null(strstr(text, count));
    snprintf(count, sizeof(count), "\n%s_sum ", name);
    assert_non_null(strstr(text, count));
}

static char *render(const oc_stats_t *st, long uptime)
{
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    oc_metrics_render(out, st, uptime);
    size_t len = evbuffer_get_length(out);
    char *text = malloc(len + 1);
    assert_non_null(text);
    evbuffer_remove(out, text, len);
    text[len] = '\0';
    evbuffer_free(out);
    return text;
}

static void test_page(void **state)
{
    (void)state;
    oc_stats_t st;
    memset(&st, 0, sizeof(st));
    oc_model_stats_t models[2];
    memset(models, 0, sizeof(models));
    const char *mnames[2] = {"User", "Post_2"};
    st.models = models;
    st.model_names = mnames;
    st.nmodels = 2;
    char *snames[3] = {"127.0.0.1:11211", "[::1]:11212", "10.0.0.9:11211"};
    uint64_t up[3] = {1, 0, 1};
    const char *states[3] = {"up", "probing", "up"};
    st.mc_names = snames;
    st.mc_up = up;
    st.mc_state = states;
    st.nmc = 3;
    st.nmc_pool = 2;
    st.cmd_get = 12;
    st.curr_connections = 3;
    models[1].get_hits = 5;
    /* the sampler's families carry model and window labels */
    st.nsampler_slots = 2;
    strcpy(st.sampler_slot[0], "1s");
    strcpy(st.sampler_slot[1], "hit");
    models[0].sampler_checks[1] = 7;
    models[1].sampler_inconsistent[0] = 2;
    oc_hist_observe(&st.request_seconds, 0.0001);
    oc_hist_observe(&st.request_seconds, 0.003);
    oc_hist_observe(&st.request_seconds, 1e9); /* above every bound */
    oc_hist_observe(&st.load_seconds, 0.02);

    char *text = render(&st, 4242);
    assert_int_equal(text[strlen(text) - 1], '\n');
    page_t *pg = calloc(1, sizeof(*pg));
    assert_non_null(pg);
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        check_line(pg, line);
        *nl = '\n';
    }
    /* every family declared has samples (a family with none is noise) */
    for (size_t i = 0; i < pg->nfam; i++)
        if (pg->fam[i].samples == 0 &&
            strcmp(pg->fam[i].name, "objcached_memcached_up") != 0)
            fail_msg("family without samples: %s", pg->fam[i].name);
    assert_true(pg->nfam > 50);
    free(pg);

    /* the values */
    assert_non_null(strstr(text, "objcached_info{version=\"" OC_VERSION "\"} 1\n"));
    assert_non_null(strstr(text, "\nobjcached_uptime_seconds 4242\n"));
    assert_non_null(strstr(text, "\nobjcached_cmd_get_total 12\n"));
    assert_non_null(strstr(text, "\nobjcached_curr_connections 3\n"));
    assert_non_null(
        strstr(text, "\nobjcached_model_get_hits_total{model=\"Post_2\"} 5\n"));
    assert_non_null(strstr(
        text, "\nobjcached_sampler_checks_total{model=\"User\",window=\"hit\"} 7\n"));
    assert_non_null(strstr(text,
                           "\nobjcached_sampler_inconsistent_total{model=\"Post_2\","
                           "window=\"1s\"} 2\n"));
    assert_non_null(strstr(
        text, "\nobjcached_sampler_empty_total{model=\"User\",window=\"1s\"} 0\n"));
    assert_non_null(strstr(text, "\nobjcached_model_get_hits_total{model=\"User\"} 0\n"));
    /* the pool's servers are up or not; the gutter's only have states */
    assert_non_null(
        strstr(text, "\nobjcached_memcached_up{server=\"127.0.0.1:11211\"} 1\n"));
    assert_non_null(strstr(text, "\nobjcached_memcached_up{server=\"[::1]:11212\"} 0\n"));
    assert_null(strstr(text, "objcached_memcached_up{server=\"10.0.0.9:11211\"}"));
    assert_non_null(
        strstr(text, "{server=\"[::1]:11212\",pool=\"pool\",state=\"probing\"} 1\n"));
    assert_non_null(
        strstr(text, "{server=\"[::1]:11212\",pool=\"pool\",state=\"up\"} 0\n"));
    assert_non_null(
        strstr(text, "{server=\"10.0.0.9:11211\",pool=\"gutter\",state=\"up\"} 1\n"));
    check_histogram(text, "objcached_request_duration_seconds", 3);
    check_histogram(text, "objcached_load_duration_seconds", 1);
    check_histogram(text, "objcached_feed_apply_seconds", 0);
    free(text);

    /* no models, no servers, nothing observed: still a valid page */
    oc_stats_t empty;
    memset(&empty, 0, sizeof(empty));
    text = render(&empty, 0);
    assert_non_null(strstr(text, "\nobjcached_uptime_seconds 0\n"));
    assert_null(strstr(text, "{model="));
    assert_null(strstr(text, "{server="));
    check_histogram(text, "objcached_request_duration_seconds", 0);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address),
        cmocka_unit_test(test_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

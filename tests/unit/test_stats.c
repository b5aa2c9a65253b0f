/* Unit tests for oc_stats: the reply format, reset, and that the docs list
 * every counter the code declares (docs that match the code). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "oc_stats.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_docs_list_every_stat(void **state)
{
    (void)state;
    const char *doc = slurp(OC_SOURCE_DIR "/docs/protocol.md");
    char want[128];
#define OC_CHECK_DOC(name, kind, help)                                                   \
    snprintf(want, sizeof(want), "| `%s` |", #name);                                     \
    if (strstr(doc, want) == NULL)                                                       \
        fail_msg("docs/protocol.md does not document the stat %s", #name);
    OC_STATS_LIST(OC_CHECK_DOC)
#undef OC_CHECK_DOC
}

static void test_metrics_doc_lists_every_metric(void **state)
{
    (void)state;
    const char *doc = slurp(OC_SOURCE_DIR "/docs/metrics.md");
    char want[128];
#define OC_PROM_NAME_COUNTER(name) "| `objcached_" #name "_total` |"
#define OC_PROM_NAME_GAUGE(name)   "| `objcached_" #name "` |"
#define OC_CHECK_PROM(name, kind, help)                                                  \
    if (strstr(doc, OC_PROM_NAME_##kind(name)) == NULL)                                  \
        fail_msg("docs/metrics.md does not document %s", OC_PROM_NAME_##kind(name));
    OC_STATS_LIST(OC_CHECK_PROM)
#undef OC_CHECK_PROM
#define OC_CHECK_MODEL(name, help)                                                       \
    snprintf(want, sizeof(want), "| `objcached_model_%s_total{", #name);                 \
    if (strstr(doc, want) == NULL)                                                       \
        fail_msg("docs/metrics.md does not document the model metric %s", #name);
    OC_MODEL_STATS_LIST(OC_CHECK_MODEL)
#undef OC_CHECK_MODEL
}

static void test_prometheus_format(void **state)
{
    (void)state;
    oc_model_stats_t models[1];
    const char *names[1] = {"User"};
    oc_stats_t st;
    memset(&st, 0, sizeof(st));
    memset(models, 0, sizeof(models));
    st.models = models;
    st.nmodels = 1;
    st.model_names = names;
    st.cmd_get = 4;
    models[0].pg_rows = 9;
    oc_hist_observe(&st.request_seconds, 0.0003);
    oc_hist_observe(&st.request_seconds, 20);
    struct evbuffer *out = evbuffer_new();
    oc_stats_write_prometheus(&st, out);
    size_t len = evbuffer_get_length(out);
    char *text = calloc(1, len + 1);
    evbuffer_remove(out, text, len);
    assert_non_null(strstr(
        text, "# TYPE objcached_cmd_get_total counter\nobjcached_cmd_get_total 4\n"));
    assert_non_null(strstr(text, "objcached_model_pg_rows_total{model=\"User\"} 9\n"));
    /* cumulative buckets: 0.0003 is under 0.0005, 20 only under +Inf */
    assert_non_null(
        strstr(text, "objcached_request_duration_seconds_bucket{le=\"0.00025\"} 0\n"));
    assert_non_null(
        strstr(text, "objcached_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
    assert_non_null(
        strstr(text, "objcached_request_duration_seconds_bucket{le=\"10\"} 1\n"));
    assert_non_null(
        strstr(text, "objcached_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text, "objcached_request_duration_seconds_count 2\n"));
    free(text);
    evbuffer_free(out);
}

static void test_write_and_reset(void **state)
{
    (void)state;
    oc_stats_t st;
    memset(&st, 0, sizeof(st));
    st.cmd_get = 7;
    st.curr_connections = 3;
    struct evbuffer *out = evbuffer_new();
    oc_stats_write(&st, out);
    size_t len = evbuffer_get_length(out);
    char *text = calloc(1, len + 1);
    evbuffer_remove(out, text, len);
    assert_non_null(strstr(text, "STAT cmd_get 7\r\n"));
    assert_non_null(strstr(text, "STAT curr_connections 3\r\n"));
    oc_stats_reset(&st);
    assert_int_equal(st.cmd_get, 0);
    assert_int_equal(st.curr_connections, 3); /* a gauge survives reset */
    free(text);
    evbuffer_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_list_every_stat),
        cmocka_unit_test(test_write_and_reset),
        cmocka_unit_test(test_metrics_doc_lists_every_metric),
        cmocka_unit_test(test_prometheus_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

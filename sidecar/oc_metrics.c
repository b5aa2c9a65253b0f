#include "oc_metrics.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oc_conf.h"
#include "oc_stats.h"

struct oc_metrics {
    oc_ctx_t *ctx;
    struct evhttp *http;
};

static void on_request(struct evhttp_request *req, void *arg)
{
    oc_metrics_t *m = arg;
    oc_ctx_t *ctx = m->ctx;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET || path == NULL ||
        strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, "try /metrics");
        return;
    }
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    evbuffer_add_printf(
        out,
        "# HELP objcached_info objcached's version\n"
        "# TYPE objcached_info gauge\n"
        "objcached_info{version=\"%s\"} 1\n"
        "# HELP objcached_uptime_seconds seconds since objcached started\n"
        "# TYPE objcached_uptime_seconds gauge\n"
        "objcached_uptime_seconds %ld\n",
        OC_VERSION, (long)(time(NULL) - (time_t)ctx->started));
    oc_stats_write_prometheus(ctx->stats, out);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
}

oc_metrics_t *oc_metrics_new(oc_ctx_t *ctx, char *err)
{
    char host[256];
    const char *spec = ctx->conf->metrics_listen;
    const char *colon = strrchr(spec, ':');
    if (colon == NULL)
        return oc_fail(err, OC_ECONFIG, "metrics_listen: bad address"), NULL;
    int hl = (int)(colon - spec);
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']')
        snprintf(host, sizeof(host), "%.*s", hl - 2, spec + 1);
    else
        snprintf(host, sizeof(host), "%.*s", hl, spec);
    oc_metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    m->ctx = ctx;
    m->http = evhttp_new(ctx->base);
    if (m->http == NULL) {
        free(m);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET);
    evhttp_set_timeout(m->http, 10);
    evhttp_set_gencb(m->http, on_request, m);
    if (evhttp_bind_socket(m->http, host, (ev_uint16_t)atoi(colon + 1)) != 0) {
        oc_metrics_free(m);
        return oc_fail(err, OC_EIO, "metrics_listen %s: cannot bind", spec), NULL;
    }
    return m;
}

void oc_metrics_free(oc_metrics_t *m)
{
    if (m == NULL)
        return;
    evhttp_free(m->http);
    free(m);
}

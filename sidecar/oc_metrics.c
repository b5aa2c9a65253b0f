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

#define OC_METRICS_MAX_HEADERS 16384 /* bytes of request line and headers */
#define OC_METRICS_MAX_BODY    4096

struct oc_metrics {
    oc_ctx_t *ctx;
    struct evhttp *http;
};

void oc_metrics_render(struct evbuffer *out, const oc_stats_t *st, long uptime_s)
{
    evbuffer_add_printf(
        out,
        "# HELP objcached_info objcached's version\n"
        "# TYPE objcached_info gauge\n"
        "objcached_info{version=\"%s\"} 1\n"
        "# HELP objcached_uptime_seconds seconds since objcached started\n"
        "# TYPE objcached_uptime_seconds gauge\n"
        "objcached_uptime_seconds %ld\n",
        OC_VERSION, uptime_s);
    oc_stats_write_prometheus(st, out);
}

oc_status_t oc_metrics_address(const char *spec, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL)
        return OC_ECONFIG;
    size_t hl = (size_t)(colon - spec);
    const char *h = spec;
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']')
        h = spec + 1, hl -= 2;
    const char *p = colon + 1;
    unsigned long v = 0;
    for (; *p >= '0' && *p <= '9' && v <= 65535; p++)
        v = v * 10 + (unsigned long)(*p - '0');
    if (hl == 0 || hl >= cap || p == colon + 1 || *p != '\0' || v < 1 || v > 65535)
        return OC_ECONFIG;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)v;
    return OC_OK;
}

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
    oc_metrics_render(out, ctx->stats, (long)(time(NULL) - (time_t)ctx->started));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
}

oc_metrics_t *oc_metrics_new(oc_ctx_t *ctx, char *err)
{
    char host[256];
    uint16_t port;
    const char *spec = ctx->conf->metrics_listen;
    if (oc_metrics_address(spec, host, sizeof(host), &port) != OC_OK)
        return oc_fail(err, OC_ECONFIG, "metrics_listen: bad address"), NULL;
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
    /* libevent reads headers and bodies of any size by default: one
     * connection could make this process hold gigabytes. A scraper sends a
     * few hundred bytes of headers and no body. */
    evhttp_set_max_headers_size(m->http, OC_METRICS_MAX_HEADERS);
    evhttp_set_max_body_size(m->http, OC_METRICS_MAX_BODY);
    evhttp_set_gencb(m->http, on_request, m);
    if (evhttp_bind_socket(m->http, host, port) != 0) {
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

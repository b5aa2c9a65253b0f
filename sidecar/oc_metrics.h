/*
 * oc_metrics: the Prometheus page. GET (or HEAD) /metrics on metrics_listen
 * (off unless configured) answers every stat in the text exposition format
 * (oc_stats_write_prometheus); another path is 404, another method 405, a
 * malformed request 400, a head over 16 KiB 431 (oc_http decides). Every
 * answer closes its connection. At most 64 connections are open at once
 * (more are closed at accept: stat metrics_refused), each for at most
 * 10 s whatever it does: a local client cannot hold descriptors or memory.
 * (libevent's evhttp served it before: it had no limit on connections.)
 *
 * Ownership: the daemon owns it; it runs on the daemon's loop, so the page
 * reads the stats without locks. It owns its connections.
 */
#ifndef OC_METRICS_H
#define OC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_metrics oc_metrics_t;

oc_metrics_t *oc_metrics_new(oc_ctx_t *ctx, char *err);
void oc_metrics_free(oc_metrics_t *m);

/* ---- the pure rules, exposed for unit tests ---- */

struct evbuffer;
struct oc_stats;
/* The page: objcached_info (the version), objcached_uptime_seconds, then
 * every stat (oc_stats_write_prometheus), appended to out. */
void oc_metrics_render(struct evbuffer *out, const struct oc_stats *st, long uptime_s);
/* metrics_listen's host and port: "host:port" or "[v6]:port" (the brackets
 * dropped). OC_ECONFIG if there is no ':', the host is empty (which would
 * listen on every interface) or does not fit in host[cap], or the port is
 * not a number in 1..65535. */
oc_status_t oc_metrics_address(const char *spec, char *host, size_t cap, uint16_t *port);

#endif

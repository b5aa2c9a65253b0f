/*
 * oc_metrics: the Prometheus page. GET /metrics on metrics_listen (off
 * unless configured) answers every stat in the text exposition format
 * (oc_stats_write_prometheus); anything else is 404.
 *
 * Ownership: the daemon owns it; evhttp runs on the daemon's loop, so the
 * page reads the stats without locks.
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

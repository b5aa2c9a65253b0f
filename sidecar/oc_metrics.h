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

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_metrics oc_metrics_t;

oc_metrics_t *oc_metrics_new(oc_ctx_t *ctx, char *err);
void oc_metrics_free(oc_metrics_t *m);

#endif

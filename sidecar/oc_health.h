/*
 * oc_health: memcached server health, as operators see it: every 2 s each
 * configured server is asked its version; the answers fill the stats
 * (mc_servers_up, mc_server:HOST:PORT:up, objcached_memcached_up{server})
 * and each change from up to down or back is logged once.
 *
 * Ownership: the daemon owns it; it owns the per-server names and flags in
 * the stats (stats->mc_names, stats->mc_up) and rebuilds them when a reload
 * changes the server list (oc_health_reconfigure).
 */
#ifndef OC_HEALTH_H
#define OC_HEALTH_H

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_health oc_health_t;

oc_health_t *oc_health_new(oc_ctx_t *ctx, char *err);
/* The server list of ctx->conf changed: every server starts as up. */
oc_status_t oc_health_reconfigure(oc_health_t *h);
void oc_health_free(oc_health_t *h);

#endif

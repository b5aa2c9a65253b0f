/*
 * oc_health: memcached server health, as operators see it. oc_mc decides
 * whether each server is in service (oc_tko: up, down, probing) and logs
 * every change with its reason; this module keeps the per-server table of
 * the stats in step with it (mc_servers_up, mc_server:HOST:PORT:up and
 * :state, mc_gutter:... for the gutter pool, objcached_memcached_up and
 * objcached_memcached_state on /metrics), and every 2 s asks each server in
 * service its version on its connection, so that one that died or froze
 * while idle is found out (that probe's timeout is one of its failures).
 * Servers out of service are probed by oc_mc itself, every retry_timeout.
 *
 * Ownership: the daemon owns it; it owns the per-server names and flags in
 * the stats (stats->mc_names, mc_up, mc_state) and rebuilds them when a
 * reload changes the server lists (oc_health_reconfigure) or a server's
 * state changes. It must be made after ctx->mc, and oc_mc must be freed
 * before it (the daemon's order).
 */
#ifndef OC_HEALTH_H
#define OC_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_health oc_health_t;

oc_health_t *oc_health_new(oc_ctx_t *ctx, char *err);
/* The server lists of ctx->mc changed: the table again, from oc_mc. */
oc_status_t oc_health_reconfigure(oc_health_t *h);
void oc_health_free(oc_health_t *h);

/* ---- the pure rules, exposed for unit tests ---- */

/* A server's name as oc_mc_name gives it, "host:port" or "[v6]:port": its
 * host (brackets dropped) into host[cap], and its port, for a PROBE item.
 * -1 if the name is not that shape (a v6 address must be bracketed), the
 * port is not 0..65535, or the host does not fit. */
int oc_health_split_name(const char *name, char *host, size_t cap, uint32_t *port);

#endif

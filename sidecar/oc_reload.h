/*
 * oc_reload: SIGHUP re-reads the configuration file and applies it without
 * dropping client connections, or refuses it (with a log line) and keeps
 * the old one.
 *
 * What may change, and what needs a restart, is the configuration's key
 * table (oc_conf.c: the restart column; `objcached --help-config` prints
 * it): a new file that changes a restart key is refused as a whole. What a
 * reload does with the rest: models are added, removed or changed (their
 * load statements are prepared again), the memcached server list and
 * timeouts change (servers kept keep their connections), the invalidation
 * consumer starts or stops with invalidation_poll, limits apply to the next
 * command, and log_level at once.
 *
 * Model indexes never change while objcached runs, because loads, fills
 * and counters under way hold them: a model keeps its index across
 * reloads, a removed model stays in the table disabled (no key reaches it),
 * and a new one is appended.
 *
 * Contract: loop thread only; on success ctx->conf is the new configuration
 * and the old one is freed.
 */
#ifndef OC_RELOAD_H
#define OC_RELOAD_H

#include "oc_ctx.h"
#include "oc_status.h"

struct oc_health;

oc_status_t oc_reload(oc_ctx_t *ctx, struct oc_health *health, char *err);

#endif

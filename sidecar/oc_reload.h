/*
 * oc_reload: SIGHUP re-reads the configuration file and applies it without
 * dropping client connections, or refuses it (with a log line) and keeps
 * the old one.
 *
 * What changes: models (added, removed, their table, key, columns, TTLs,
 * version column), the memcached server list and its timeouts, limits
 * (max_connections, max_keys, max_line, max_value, timeouts of new client
 * connections, lease_wait, shutdown_timeout, ttl_jitter_pct), key_prefix,
 * log_level, invalidation_poll (0 stops the consumer, a value starts it) and
 * invalidation_batch.
 * What needs a restart (a new file that changes them is refused as a
 * whole): listen, unix_socket, unix_socket_mode, metrics_listen, user,
 * conninfo, connections, timezone and load_timeout (both are pinned in each
 * PostgreSQL session).
 *
 * Model indexes never change while objcached runs, because loads, fills
 * and counters under way hold them: a model keeps its index across
 * reloads, a removed model stays in the table disabled (no key reaches it),
 * and a new one is appended.
 *
 * Contract: loop thread only; on success d->conf is the new configuration
 * and the old one is freed.
 */
#ifndef OC_RELOAD_H
#define OC_RELOAD_H

#include "oc_daemon.h"

oc_status_t oc_reload(oc_daemon_t *d, char *err);

#endif

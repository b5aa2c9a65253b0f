/*
 * oc_daemon: objcached's lifecycle, and the one place that knows every
 * module: it makes them in order (listeners, the memcached pool, the
 * loader, fills, the read and write paths, the invalidation consumer,
 * health probes, metrics), fills the shared context (oc_ctx.h) with them,
 * runs the loop, handles signals (SIGTERM/SIGINT drain and stop, SIGHUP
 * reloads), and frees them in the reverse order of their dependencies.
 * No other module includes this header.
 *
 * Contract: everything runs on the loop thread (the process has no other
 * thread). Nothing here calls exit(): errors are returned to main().
 */
#ifndef OC_DAEMON_H
#define OC_DAEMON_H

#include <stdint.h>

#include "oc_conf.h"
#include "oc_status.h"

typedef struct oc_daemon oc_daemon_t;

/* Takes ownership of conf (also on failure). Binds the listeners, writes
 * pidfile (unless NULL) while still root, drops to `user`, starts the
 * memcached pool and the PostgreSQL connections. oc_daemon_free removes
 * the pidfile it wrote if it still holds our pid (best effort: once root
 * is dropped, its directory may not be writable). */
oc_daemon_t *oc_daemon_new(oc_conf_t *conf, const char *pidfile, char *err);
/* Runs until SIGTERM/SIGINT; returns OC_OK on a clean stop. */
oc_status_t oc_daemon_run(oc_daemon_t *d);
void oc_daemon_free(oc_daemon_t *d);

/* ---- the pure rules, exposed for unit tests ---- */

/* A lease's TTL (seconds): it must outlive the load it guards, so another
 * sidecar does not load the key too; load_timeout rounded up, plus 1 s. */
uint32_t oc_daemon_lease_ttl_s(uint32_t load_timeout_ms);

#endif

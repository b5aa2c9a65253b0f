/*
 * oc_listen: the client listeners: TCP (listen = host:port) and a unix
 * socket (unix_socket = path, with unix_socket_mode), handing each
 * accepted socket to a callback. Out of file descriptors, accepting pauses
 * for 100 ms (clients wait in the kernel's backlog) instead of spinning on
 * EMFILE; each failed accept is counted (accept_errors), the first of an
 * episode is logged (then one line a minute while it lasts), and the
 * first accept that works again logs its end (event=accept_resumed).
 *
 * Ownership: the daemon owns the listeners; oc_listen_close stops
 * accepting (shutdown, step one) and removes the unix socket file, if
 * the file at that path is still the socket it bound (one deleted while
 * the daemon ran may since be another process's: event=unix_socket_replaced).
 */
#ifndef OC_LISTEN_H
#define OC_LISTEN_H

#include <event2/util.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_listen oc_listen_t;
typedef void (*oc_listen_accept_fn)(void *arg, evutil_socket_t fd);

/* A socket file already at unix_socket is replaced only when nobody
 * listens on it (left by a run that ended); one in use, or any other
 * file, fails the start and is left alone. */
oc_listen_t *oc_listen_new(oc_ctx_t *ctx, oc_listen_accept_fn accept, void *arg,
                           char *err);
/* chown the unix socket to uid/gid (before dropping root). */
oc_status_t oc_listen_chown(oc_listen_t *l, unsigned uid, unsigned gid, char *err);
void oc_listen_close(oc_listen_t *l);
void oc_listen_free(oc_listen_t *l);

#endif

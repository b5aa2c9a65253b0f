/*
 * oc_listen: the client listeners: TCP (listen = host:port) and a unix
 * socket (unix_socket = path, with unix_socket_mode), handing each
 * accepted socket to a callback. Out of file descriptors, accepting pauses
 * for 100 ms (clients wait in the kernel's backlog) instead of spinning on
 * EMFILE; each failed accept is counted (accept_errors), the first of an
 * episode is logged (then one line a minute while it lasts), and the
 * first accept that works again logs its end (event=accept_resumed).
 *
 * Socket activation (systemd, sd_listen_fds(3)): when LISTEN_PID is this
 * process and LISTEN_FDS = n, the listening sockets at descriptors 3 ..
 * 3+n-1 are taken instead of bound: each must be a listening stream
 * socket whose address is the one `listen` or `unix_socket` names (else
 * the start fails); a listener configured but not passed is bound as
 * without systemd. Names (LISTEN_FDNAMES) do not say which listener a
 * socket is (its address does), but one named oc-client... is not a
 * listener: it is a client connection a previous process handed to
 * systemd's file descriptor store at its stop (oc_conn, restart_handover).
 * Those are kept until oc_listen_adopt_clients checks each (a connected
 * stream socket of a family objcached serves, whose peer is still there)
 * and hands it to oc_conn; the rest are closed and counted
 * (handover_refused). Then they are removed from the store
 * (FDSTOREREMOVE), so that objcached's close of one later reaches the
 * client. The three variables are unset once read.
 *
 * Ownership: the daemon owns the listeners; oc_listen_close stops
 * accepting (shutdown, step one) and removes the unix socket file, if
 * the file at that path is still the socket it bound (one deleted while
 * the daemon ran may since be another process's: event=unix_socket_replaced).
 * An inherited socket's file is systemd's: it is left in place, and only
 * our copy of the descriptor is closed (systemd's keeps it listening, so
 * connections queue until the next process takes it).
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
/* The client connections passed at start (see above): each that passes the
 * checks goes to adopt(arg, fd), which returns 0, or -1 if it closed it
 * (over max_connections: counted refused). Once, before the loop runs. */
void oc_listen_adopt_clients(oc_listen_t *l, int (*adopt)(void *arg, int fd), void *arg);
void oc_listen_free(oc_listen_t *l);

/* ---- the pure rule, exposed for unit tests ---- */

#define OC_LISTEN_FDS_START 3 /* SD_LISTEN_FDS_START */
/* Listeners and the client connections of a handover (FileDescriptorStoreMax,
 * at most LimitNOFILE): a bound, not a real limit. */
#define OC_LISTEN_FDS_MAX 65536

/* The number of sockets systemd passed, from the values of LISTEN_PID and
 * LISTEN_FDS (NULL: not set) and our pid. 0: not socket-activated (no
 * LISTEN_PID, or another process's: the variables were inherited through
 * a process that did not exec us). -1, with *why set to a static reason:
 * the variables are malformed (LISTEN_PID not a pid; LISTEN_FDS missing,
 * not a plain decimal, 0, or over OC_LISTEN_FDS_MAX), and are ignored as
 * sd_listen_fds ignores them. Else 1..OC_LISTEN_FDS_MAX. */
int oc_listen_fds_parse(const char *pid_s, const char *fds_s, long mypid,
                        const char **why);

#endif

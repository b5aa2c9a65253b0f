/*
 * oc_conn: client connections: each reads command lines, runs them one at a
 * time in order, and writes replies (oc_reply) built from the typed results
 * of the read path (oc_req) and the write path (oc_write).
 *
 * Connection states:
 *   READING   parsing commands from the input buffer
 *   WAITING   a get or a write is under way; input is left in the buffer,
 *             so pipelined commands are answered in order
 *   DATA      waiting for the data block of a `set`/`ms`
 *   SWALLOW   discarding an over-long line or a data block
 *   CLOSING   `quit` or a fatal error: close once the output is written
 * A connection whose output backs up past OC_CONN_OUT_HIGH stops reading
 * until the client drains it; one that has more input waiting than a
 * command line and a data block can need stops reading until it is parsed.
 *
 * I/O: the socket is read and written directly (recv into the input
 * evbuffer, evbuffer_write of the output right after each reply), without
 * a bufferevent, so a request costs one read and one write: reading stays
 * enabled while a get runs and EV_WRITE is only waited for when a write
 * would block.
 *
 * Ownership: the connections (oc_conns_t) own every connection; a
 * connection owns its socket and buffers, and detaches its request or write
 * under way when it closes. The token array of the command being parsed is
 * the module's, not each connection's: one command is parsed at a time.
 */
#ifndef OC_CONN_H
#define OC_CONN_H

#include <event2/util.h>
#include <stdint.h>

#include "oc_ctx.h"
#include "oc_status.h"

#define OC_CONN_OUT_HIGH (4u << 20)

typedef struct oc_conns oc_conns_t;

oc_conns_t *oc_conns_new(oc_ctx_t *ctx, char *err);
/* Close every connection now (shutdown, step two) and free. */
void oc_conns_free(oc_conns_t *cs);

/* Take over an accepted socket (refused with a SERVER_ERROR line over
 * max_connections or while draining). Closes it on failure. */
void oc_conn_accept(oc_conns_t *cs, evutil_socket_t fd);
/* Take over a client connection a previous process handed to systemd's
 * file descriptor store (oc_listen checked it: a connected, non-blocking
 * stream socket). 0, or -1 if refused (over max_connections, out of
 * memory): closed. */
int oc_conn_adopt(oc_conns_t *cs, evutil_socket_t fd);
/* Shutdown, step one: connections finish the command under way and write
 * its reply, then close; idle ones close now. `drained` runs when the last
 * one is gone (at once if there is none).
 * Under systemd (NOTIFY_SOCKET) with restart_handover on, a connection
 * idle at a request boundary (nothing read that is not answered, no reply
 * pending, not inside a command, a refused binary body included; a busy
 * one once its reply is written) is
 * sent to systemd's file descriptor store (FDSTORE=1, FDNAME=oc-client)
 * and then closed here without shutdown(): systemd's copy keeps it open,
 * and what the client sends meanwhile waits in the kernel for the next
 * process, which adopts it (oc_listen). */
void oc_conns_drain(oc_conns_t *cs, void (*drained)(void *arg), void *arg);
/* Connections open now. */
uint64_t oc_conns_count(const oc_conns_t *cs);
/* The drain's handover: 1 if it hands over, and how many connections it
 * handed over and closed so far. */
int oc_conns_handover(const oc_conns_t *cs, uint64_t *handed, uint64_t *closed);

#endif

/*
 * oc_conn: one client connection: reads command lines, runs them one at a
 * time in order, writes replies.
 *
 * Connection states:
 *   READING   parsing commands from the input buffer
 *   WAITING   a get is under way (oc_req); input is left in the buffer, so
 *             pipelined commands are answered in order
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
 * Ownership: the daemon owns every connection (d->conns); a connection owns
 * its socket and buffers and detaches its in-flight request when it closes.
 */
#ifndef OC_CONN_H
#define OC_CONN_H

#include <event2/util.h>

#include "oc_daemon.h"

#define OC_CONN_OUT_HIGH (4u << 20)

/* Take over an accepted socket. Closes it on failure. */
void oc_conn_accept(oc_daemon_t *d, evutil_socket_t fd);
/* Shutdown, step one: connections finish the command under way and write
 * its reply, then close; idle ones close now. When the last one is gone the
 * loop is stopped. */
void oc_conn_drain_all(oc_daemon_t *d);
/* Close every connection now (shutdown, step two). */
void oc_conn_close_all(oc_daemon_t *d);

#endif

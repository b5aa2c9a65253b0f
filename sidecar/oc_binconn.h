/*
 * oc_binconn: memcached's binary protocol on one client connection. oc_conn
 * owns the socket and its buffers and hands a connection over here when its
 * first byte is the binary request magic (0x80), as memcached decides, once
 * for the life of the connection. This module reads requests from the
 * input (oc_bin_next), runs them through the read path (oc_req) and the
 * write path (oc_write), and writes the replies (oc_reply, binary style).
 *
 * What each command does (docs/protocol.md, "Binary protocol"):
 *   GET GETQ GETK GETKQ  a run of consecutive gets is ONE oc_req: the
 *          quiet gets a client pipelines before its NOOP, up to max_keys
 *          per request (a longer run is split, each part answered in
 *          order); a run ends at any other command or where the buffered
 *          input runs dry (Dalli sends the NOOP in a later write). A
 *          failed quiet get is answered, then the connection closes: a
 *          reply without a key would end Dalli's read of the pipeline, and
 *          the rest would be taken for answers to later commands.
 *   SET ADD REPLACE (+Q)  pushes (oc_write_push); a non-zero CAS is refused
 *          with 0x83; replies carry CAS 0.
 *   DELETE (+Q)          a tombstone (oc_write_tombstone).
 *   NOOP VERSION STAT QUIT QUITQ  answered here.
 *   SASL_*, VERBOSITY, opcodes memcached does not define: 0x81.
 *   the rest of memcached's commands (append, incr, touch, gat, flush...):
 *          0x83 "Not supported", as the text protocol's SERVER_ERROR.
 * Replies go out in request order: a batch or a write under way holds back
 * every later command, NOOP's reply included.
 *
 * Bounds: a request is refused from its header (oc_bin_check) before its
 * body is buffered: a value over max_value is answered 0x03 and its body
 * dropped as it comes; a body over max_value + 8 + 250 bytes, a key over
 * 250, malformed extras, a length that lies or a wrong magic close the
 * connection (memcached does the same). oc_conn caps what it buffers.
 *
 * Ownership: oc_conn owns the binconn (new/free) and both evbuffers; the
 * binconn owns its batch arrays and the request or write under way, which
 * it detaches when freed. Values of a batch's reply may be referenced by
 * the output evbuffer (oc_reply's unref): they stay valid until the output
 * is done with them, even after oc_binconn_free.
 */
#ifndef OC_BINCONN_H
#define OC_BINCONN_H

#include <stddef.h>

#include "oc_ctx.h"

struct evbuffer;

typedef struct oc_binconn oc_binconn_t;

typedef enum oc_binconn_state {
    OC_BINCONN_IDLE,  /* every whole request buffered is answered: read more */
    OC_BINCONN_BUSY,  /* a batch of gets or a write is under way: `resume`
                         is called when it is answered */
    OC_BINCONN_FULL,  /* stopped because the output is over out_high: call
                         again once it has drained */
    OC_BINCONN_CLOSE, /* close once the output is written (quit, a request
                         that loses the stream, a failed quiet get) */
} oc_binconn_state_t;

/* `out` is the connection's output; resume(arg) runs (from the loop, never
 * inside oc_binconn_process) when a batch or a write has been answered.
 * NULL if out of memory. */
oc_binconn_t *oc_binconn_new(oc_ctx_t *ctx, struct evbuffer *out,
                             void (*resume)(void *arg), void *arg);
/* Detaches the request or write under way (it finishes quietly). */
void oc_binconn_free(oc_binconn_t *b);

/* Run what `in` holds: consumes the requests it answers or starts, leaves
 * an incomplete one (and everything after a BUSY start) in `in`. */
oc_binconn_state_t oc_binconn_process(oc_binconn_t *b, struct evbuffer *in,
                                      size_t out_high);

/* 1 at a request boundary: no request partly consumed from the input (a
 * refused request's body still to drop as it comes). oc_conn hands a
 * connection over at a restart only there: the next process would take the
 * rest of the body for requests. */
int oc_binconn_at_boundary(const oc_binconn_t *b);

/* The most bytes one request may take, header included: the input must be
 * allowed to hold this much. */
size_t oc_binconn_max_request(const oc_ctx_t *ctx);

#endif

/*
 * oc_reply: every reply objcached writes to a client, in the classic text
 * protocol, the meta protocol or memcached's binary protocol (packets from
 * oc_binproto), built from typed results (oc_result.h). The connection
 * decides what to answer; this module decides the bytes.
 *
 * Contract: pure formatting into the caller's evbuffer; no state. Each
 * function returns what kind of reply it wrote, so the caller can count
 * client and server errors. The one exception to copying: a binary get may
 * hand large values to the evbuffer by reference (oc_reply_fmt_t.unref).
 */
#ifndef OC_REPLY_H
#define OC_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "oc_result.h"

struct evbuffer;

typedef enum oc_reply_kind {
    OC_REPLY_OK,           /* an answer (values, STORED, ...) or nothing */
    OC_REPLY_CLIENT_ERROR, /* CLIENT_ERROR ... or ERROR */
    OC_REPLY_SERVER_ERROR, /* SERVER_ERROR ... */
    OC_REPLY_BROKEN,       /* out of memory part way through a reply (the
                              packets of a binary one, or the VALUE lines
                              around a value sent by reference); the stream
                              is out of step and the connection must close */
} oc_reply_kind_t;

typedef enum oc_reply_style {
    OC_STYLE_CLASSIC, /* get/gets/set/delete: VALUE ... END, STORED, ... */
    OC_STYLE_META,    /* mg/ms/md: VA/HD/EN/NS with return flags */
    OC_STYLE_BINARY,  /* memcached's binary protocol: a packet per command */
} oc_reply_style_t;

#define OC_REPLY_OPAQUE_MAX 32

/* A binary command being answered: its own opcode (a quiet one included:
 * the quiet rules of oc_bin_suppressed apply) and its opaque, echoed. */
typedef struct oc_reply_bin {
    uint8_t opcode;
    uint32_t opaque;
} oc_reply_bin_t;

/* Get (every style): found values this long or longer may go by reference
 * (unref). Below it a copy costs less than libevent's chain per reference
 * and the writev slot it takes. */
#define OC_REPLY_REF_MIN 16384

/* How to answer one command. */
typedef struct oc_reply_fmt {
    oc_reply_style_t style;
    int gets;            /* classic get: with cas */
    int noreply;         /* classic write: success is silent; meta: q flag */
    unsigned meta_flags; /* OC_META_* (oc_proto.h) */
    char opaque[OC_REPLY_OPAQUE_MAX + 1]; /* meta O token, NUL-terminated */
    const char *key;                      /* meta: the key as sent, for k */
    size_t klen;
    /* binary: the command of each item of a get, in the result's order, or
     * of a write ([0]) */
    const oc_reply_bin_t *bin;
    /* get, optional: a found value of OC_REPLY_REF_MIN bytes or more is
     * added to the output by reference instead of copied (oc_req_hold). *refs is
     * incremented for each; unref(data, len, unref_arg) runs when the
     * output is done with it (sent, or the evbuffer freed), and the caller
     * keeps the values alive until the last one. NULL: copy everything. */
    void (*unref)(const void *data, size_t len, void *arg);
    void *unref_arg;
    size_t *refs;
    /* test only (oc_gate's reply_ref): adding a value by reference fails as
     * if out of memory, so the reply is cut short (OC_REPLY_BROKEN) */
    int fault_ref;
} oc_reply_fmt_t;

/* A get/gets (every item) or an mg (one item). A classic reply larger than
 * max_reply is refused with SERVER_ERROR before it is built: one get may
 * name one large object many times. Binary: one packet per item, each with
 * its own command (f->bin[i]): a hit (flags 0, the item's cas), a miss
 * (none for a quiet get), or, for an item whose load failed, status 0x84
 * "load failed: <r->err>", or for an item too large (OC_GET_TOO_LARGE)
 * "reply too large (... max_reply ...)"; SERVER_ERROR if any item failed. max_reply does
 * not apply here: every packet answers a command of its own, and big values go by
 * reference when f->unref is set (what one request reads from memcached is bounded by it:
 * oc_req). */
oc_reply_kind_t oc_reply_get(struct evbuffer *out, const oc_get_result_t *r,
                             const oc_reply_fmt_t *f, uint64_t max_reply);
/* A push or tombstone's outcome (err for OC_WRITE_FAILED). Errors are
 * written whatever f->noreply: meta's q drops only HD, as memcached does (a
 * classic noreply's error is dropped by the caller, oc_conn). Binary (f->bin[0]): status
 * 0 (none for a quiet command), 0x05 "Not stored." or 0x84 with err; cas 0. */
oc_reply_kind_t oc_reply_write(struct evbuffer *out, oc_write_outcome_t o,
                               const char *err, const oc_reply_fmt_t *f);
oc_reply_kind_t oc_reply_client_error(struct evbuffer *out, const char *why);
oc_reply_kind_t oc_reply_server_error(struct evbuffer *out, const char *why);
oc_reply_kind_t oc_reply_error(struct evbuffer *out); /* ERROR: unknown command */
oc_reply_kind_t oc_reply_text(struct evbuffer *out, const char *line); /* line + \r\n */

/* ---- binary only ---- */

/* What a binary status counts as: 0x04 and 0x81 (and 0x20) are the client's
 * errors, as CLIENT_ERROR and ERROR are; the other errors are the server's
 * (0x03 too: SERVER_ERROR object too large for cache); 0x01, 0x02, 0x05 and
 * success are answers. */
oc_reply_kind_t oc_reply_bin_kind(uint16_t status);
/* A packet with no extras and no key: status, cas 0, msg as the body (NULL:
 * memcached's text for the status). Nothing when the quiet rules suppress it. */
oc_reply_kind_t oc_reply_bin_status(struct evbuffer *out, const oc_reply_bin_t *c,
                                    uint16_t status, const char *msg);
/* VERSION's answer. */
oc_reply_kind_t oc_reply_bin_version(struct evbuffer *out, uint32_t opaque,
                                     const char *version);
/* STAT's answer: a packet per "STAT <name> <value>\r\n" line of text (what
 * oc_stats_write writes; other lines are skipped), then the empty packet that
 * ends a run of stats. len 0: the terminator alone (stat reset). */
oc_reply_kind_t oc_reply_bin_stats(struct evbuffer *out, uint32_t opaque,
                                   const char *text, size_t len);

#endif

/*
 * oc_reply: every reply objcached writes to a client, in the classic text
 * protocol or the meta protocol, built from typed results (oc_result.h).
 * The connection decides what to answer; this module decides the bytes.
 *
 * Contract: pure formatting into the caller's evbuffer; no state. Each
 * function returns what kind of reply it wrote, so the caller can count
 * client and server errors.
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
} oc_reply_kind_t;

typedef enum oc_reply_style {
    OC_STYLE_CLASSIC, /* get/gets/set/delete: VALUE ... END, STORED, ... */
    OC_STYLE_META,    /* mg/ms/md: VA/HD/EN/NS with return flags */
} oc_reply_style_t;

#define OC_REPLY_OPAQUE_MAX 32

/* How to answer one command. */
typedef struct oc_reply_fmt {
    oc_reply_style_t style;
    int gets;            /* classic get: with cas */
    int noreply;         /* classic write: success is silent; meta: q flag */
    unsigned meta_flags; /* OC_META_* (oc_proto.h) */
    char opaque[OC_REPLY_OPAQUE_MAX + 1]; /* meta O token, NUL-terminated */
    const char *key;                      /* meta: the key as sent, for k */
    size_t klen;
} oc_reply_fmt_t;

/* A get/gets (every item) or an mg (one item). A classic reply larger than
 * max_reply is refused with SERVER_ERROR before it is built: one get may
 * name one large object many times. */
oc_reply_kind_t oc_reply_get(struct evbuffer *out, const oc_get_result_t *r,
                             const oc_reply_fmt_t *f, uint64_t max_reply);
/* A push or tombstone's outcome (err for OC_WRITE_FAILED). Errors are sent
 * even with noreply, as memcached does. */
oc_reply_kind_t oc_reply_write(struct evbuffer *out, oc_write_outcome_t o,
                               const char *err, const oc_reply_fmt_t *f);
oc_reply_kind_t oc_reply_client_error(struct evbuffer *out, const char *why);
oc_reply_kind_t oc_reply_server_error(struct evbuffer *out, const char *why);
oc_reply_kind_t oc_reply_error(struct evbuffer *out); /* ERROR: unknown command */
oc_reply_kind_t oc_reply_text(struct evbuffer *out, const char *line); /* line + \r\n */

#endif

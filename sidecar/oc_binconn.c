#include "oc_binconn.h"

#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "oc_binproto.h"
#include "oc_conf.h"
#include "oc_gate.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_near.h"
#include "oc_proto.h"
#include "oc_reply.h"
#include "oc_req.h"
#include "oc_stats.h"
#include "oc_write.h"

/* Room for this many gets is made with the connection: a write's command
 * lives in cmds[0], so that one never has to be allocated later. */
#define BIN_FIRST_CAP 16

/* A get of the batch: where its request and its key lie in the input. */
typedef struct bin_get {
    size_t start;   /* its header */
    size_t key_off; /* its key */
    uint16_t klen;
} bin_get_t;

struct oc_binconn {
    oc_ctx_t *ctx;
    struct evbuffer *out;
    void (*resume)(void *arg);
    void *arg;
    oc_req_t *req;        /* the batch of gets under way, or */
    oc_write_t *write;    /* the push or tombstone under way */
    size_t n, cap;        /* gets in the batch; room in the three arrays */
    oc_reply_bin_t *cmds; /* [cap] each get's opcode and opaque; a write's [0] */
    bin_get_t *gets;      /* [cap] */
    oc_token_t *keys;     /* [cap] the keys handed to oc_req_start */
    uint64_t skip_left;   /* bytes of a refused request still to drop */
    int closing;          /* answer nothing more: close once written */
};

static uint32_t bin_max_body(const oc_ctx_t *ctx)
{
    return ctx->conf->max_value + OC_BIN_EXT_STORE + OC_BIN_KEY_MAX;
}

size_t oc_binconn_max_request(const oc_ctx_t *ctx)
{
    return OC_BIN_HDR_LEN + (size_t)bin_max_body(ctx);
}

static void bin_count(oc_binconn_t *b, oc_reply_kind_t k)
{
    oc_stats_t *st = b->ctx->stats;
    st->client_errors += k == OC_REPLY_CLIENT_ERROR;
    st->server_errors += k == OC_REPLY_SERVER_ERROR;
    if (k == OC_REPLY_BROKEN) {
        oc_log_error("event=oom where=binconn_reply");
        b->closing = 1; /* part of a reply is missing: the stream is lost */
    }
}

static void bin_status(oc_binconn_t *b, uint8_t opcode, uint32_t opaque, uint16_t status,
                       const char *msg)
{
    oc_reply_bin_t c = {opcode, opaque};
    bin_count(b, oc_reply_bin_status(b->out, &c, status, msg));
}

static int bin_grow(oc_binconn_t *b, size_t n)
{
    if (n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : BIN_FIRST_CAP;
    while (cap < n)
        cap *= 2;
    oc_reply_bin_t *c = realloc(b->cmds, cap * sizeof(*c));
    if (c)
        b->cmds = c;
    bin_get_t *g = realloc(b->gets, cap * sizeof(*g));
    if (g)
        b->gets = g;
    oc_token_t *k = realloc(b->keys, cap * sizeof(*k));
    if (k)
        b->keys = k;
    if (c == NULL || g == NULL || k == NULL)
        return -1;
    b->cap = cap;
    return 0;
}

static int bin_is_get(uint8_t opcode)
{
    return opcode == OC_BIN_OP_GET || opcode == OC_BIN_OP_GETQ ||
           opcode == OC_BIN_OP_GETK || opcode == OC_BIN_OP_GETKQ;
}

/* ---- reading --------------------------------------------------------------- */

/* What of the input is contiguous without copying: its first chain. */
typedef struct bin_view {
    const uint8_t *base; /* the first chain's bytes (NULL if empty) */
    size_t first;        /* how many */
    size_t len;          /* the whole input */
} bin_view_t;

static void bin_view(struct evbuffer *in, bin_view_t *v)
{
    v->len = evbuffer_get_length(in);
    v->first = evbuffer_get_contiguous_space(in);
    /* a pullup within the first chain copies nothing */
    v->base = v->first > 0 ? evbuffer_pullup(in, (ev_ssize_t)v->first) : NULL;
}

/* What the request at `off` in `in` is (v: in's view, kept up to date). A
 * request within the first chain is read where it lies; one that spans
 * chains is pulled up into it, its header first, then its body, so nx's
 * pointers are good until the input changes. */
static void bin_peek(oc_binconn_t *b, struct evbuffer *in, bin_view_t *v, size_t off,
                     oc_bin_next_t *nx)
{
    const oc_ctx_t *ctx = b->ctx;
    uint32_t max_value = ctx->conf->max_value, max_body = bin_max_body(ctx);
    size_t len = v->len - off;
    for (;;) {
        size_t n = v->first > off ? v->first - off : 0;
        oc_bin_next(n > 0 ? v->base + off : (const uint8_t *)"", n, max_value, max_body,
                    nx);
        if (n == len || nx->kind != OC_BIN_NEXT_MORE || nx->need > len)
            return;
        if (evbuffer_pullup(in, (ev_ssize_t)(off + nx->need)) == NULL) {
            oc_log_error("event=oom where=binconn_read");
            nx->kind = OC_BIN_NEXT_LOST; /* close without a word */
            nx->status = 0;
            return;
        }
        bin_view(in, v);
    }
}

/* The run of whole gets at the start of `in`, into the batch (b->n of
 * them, at most max_keys); returns the bytes they take. nx is left
 * describing the request that ended the run. */
static size_t bin_gather(oc_binconn_t *b, struct evbuffer *in, oc_bin_next_t *nx)
{
    size_t off = 0, max = b->ctx->conf->max_keys;
    bin_view_t v;
    bin_view(in, &v);
    b->n = 0;
    for (;;) {
        bin_peek(b, in, &v, off, nx);
        if (nx->kind != OC_BIN_NEXT_SERVE || !bin_is_get(nx->req.opcode) || b->n >= max ||
            (b->n == b->cap && bin_grow(b, b->n + 1) != 0))
            return off;
        b->gets[b->n] =
            (bin_get_t){off, off + OC_BIN_HDR_LEN + nx->body.extlen, nx->body.keylen};
        b->cmds[b->n] = (oc_reply_bin_t){nx->req.opcode, nx->req.opaque};
        b->n++;
        off += (size_t)nx->size;
    }
}

static int bin_skip(oc_binconn_t *b, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in);
    size_t n = have < b->skip_left ? have : (size_t)b->skip_left;
    evbuffer_drain(in, n);
    b->skip_left -= n;
    return b->skip_left == 0;
}

/* ---- gets ------------------------------------------------------------------ */

/* Get i of the batch fails alone. A quiet get's failure closes the
 * connection after its reply (oc_binconn.h says why). */
static void bin_get_failed(oc_binconn_t *b, size_t i, uint16_t status, const char *msg)
{
    bin_count(b, oc_reply_bin_status(b->out, &b->cmds[i], status, msg));
    if (oc_bin_is_quiet(b->cmds[i].opcode))
        b->closing = 1;
}

/* The batch is answered: a packet per get, in order. */
static void bin_req_reply(oc_binconn_t *b, oc_req_t *req)
{
    oc_stats_t *st = b->ctx->stats;
    const oc_get_result_t *full = oc_req_result(req);
    /* A failed quiet get is the last packet: the gets after it in the
     * batch are not answered (the connection closes after it), as for a
     * key refused in bin_batch_start. */
    oc_get_result_t cut = *full;
    const oc_get_result_t *r = &cut;
    size_t failed = 0;
    for (size_t i = 0; i < full->n; i++) {
        if (full->items[i].state == OC_GET_FOUND || full->items[i].state == OC_GET_ABSENT)
            continue;
        failed++;
        if (oc_bin_is_quiet(b->cmds[i].opcode)) {
            b->closing = 1;
            cut.n = i + 1;
            break;
        }
    }
    oc_reply_fmt_t f = {.style = OC_STYLE_BINARY, .bin = b->cmds};
    oc_req_hold(req, &f);
    f.fault_ref = oc_gate_oom(b->ctx->gate, "reply_ref");
    oc_reply_kind_t k = oc_reply_get(b->out, r, &f, b->ctx->conf->max_reply);
    st->cmd_get += r->n - failed;
    st->server_errors += failed;
    if (k == OC_REPLY_BROKEN)
        bin_count(b, k);
    b->req = NULL;
    b->n = 0;
    oc_req_release(req, &f);
}

/* The batch finished later: its answers, then the commands after it. */
static void bin_req_done(oc_req_t *req, void *arg)
{
    oc_binconn_t *b = arg;
    bin_req_reply(b, req);
    b->resume(b->arg);
}

/* The index of the first key of the batch that oc_key refuses, with why in
 * err; 0 (err untouched) if none is. */
static size_t bin_first_bad_key(const oc_binconn_t *b, size_t n, char *err)
{
    const oc_ctx_t *ctx = b->ctx;
    char why[OC_ERRLEN];
    for (size_t i = 0; i < n; i++) {
        oc_key_t k;
        if (oc_key_parse(ctx->conf, b->keys[i].p, b->keys[i].len, ctx->max_key_len, &k,
                         why) != OC_OK) {
            snprintf(err, OC_ERRLEN, "%s", why);
            return i;
        }
    }
    return 0;
}

/* Start one read-through request for the first n gets of the batch, which
 * take `bytes` of the input. A refused key splits the batch: the gets
 * before it go as one request, it is answered alone, and the ones after it
 * are read again as a new run. */
static void bin_batch_start(oc_binconn_t *b, struct evbuffer *in, size_t n, size_t bytes)
{
    oc_ctx_t *ctx = b->ctx;
    const char *base = (const char *)evbuffer_pullup(in, (ev_ssize_t)bytes);
    if (base == NULL) {
        oc_log_error("event=oom where=binconn_batch");
        b->closing = 1;
        return;
    }
    for (size_t i = 0; i < n; i++)
        b->keys[i] = (oc_token_t){base + b->gets[i].key_off, b->gets[i].klen};
    char err[OC_ERRLEN];
    oc_status_t st = oc_req_start(ctx, b->keys, NULL, n, bin_req_done, b, &b->req, err);
    if (st == OC_OK) {
        b->n = n;
        ctx->stats->bin_batches++;
        evbuffer_drain(in, bytes);
        if (oc_req_complete(b->req)) /* the near-cache answered: no done call */
            bin_req_reply(b, b->req);
        return;
    }
    if (st == OC_EINVAL || st == OC_ETOOBIG) {
        size_t bad = bin_first_bad_key(b, n, err);
        if (bad > 0) {
            bin_batch_start(b, in, bad, b->gets[bad].start);
            return;
        }
        bin_get_failed(b, 0, OC_BIN_EINVAL, err);
        evbuffer_drain(in, n > 1 ? b->gets[1].start : bytes);
        return;
    }
    for (size_t i = 0; i < n && !b->closing; i++)
        bin_get_failed(b, i, OC_BIN_ENOMEM, err);
    evbuffer_drain(in, bytes);
}

/* ---- writes ---------------------------------------------------------------- */

static void bin_write_done(void *arg, oc_write_outcome_t o, const char *err)
{
    oc_binconn_t *b = arg;
    b->write = NULL;
    oc_reply_fmt_t f = {.style = OC_STYLE_BINARY, .bin = b->cmds};
    bin_count(b, oc_reply_write(b->out, o, err, &f));
    b->resume(b->arg);
}

/* A write did not start: its error now (errors are answered even to a
 * quiet command). */
static void bin_write_refused(oc_binconn_t *b, oc_status_t st, const char *err)
{
    bin_status(b, b->cmds[0].opcode, b->cmds[0].opaque,
               st == OC_ENOMEM ? OC_BIN_ENOMEM : OC_BIN_EINVAL, err);
}

/* SET, ADD, REPLACE and their quiet forms: a push. objcached orders pushes
 * itself (version_column, the push check), so a CAS, which would make it
 * conditional on an item's CAS, is refused rather than ignored. */
static void bin_push(oc_binconn_t *b, const oc_bin_next_t *nx)
{
    const oc_bin_body_t *body = &nx->body;
    if (nx->req.cas != 0) {
        bin_status(b, nx->req.opcode, nx->req.opaque, OC_BIN_NOT_SUPPORTED,
                   "cas not supported: pushes are ordered by objcached");
        return;
    }
    char err[OC_ERRLEN];
    oc_status_t st = oc_write_push(b->ctx, (const char *)body->key, body->keylen,
                                   (const char *)body->value, body->vlen, bin_write_done,
                                   b, &b->write, err);
    if (st != OC_OK)
        bin_write_refused(b, st, err);
}

static void bin_tombstone(oc_binconn_t *b, const oc_bin_next_t *nx)
{
    if (nx->req.cas != 0) {
        bin_status(b, nx->req.opcode, nx->req.opaque, OC_BIN_NOT_SUPPORTED,
                   "cas not supported: a tombstone is unconditional");
        return;
    }
    char err[OC_ERRLEN];
    oc_status_t st =
        oc_write_tombstone(b->ctx, (const char *)nx->body.key, nx->body.keylen,
                           bin_write_done, b, &b->write, err);
    if (st != OC_OK)
        bin_write_refused(b, st, err);
}

/* ---- the rest -------------------------------------------------------------- */

/* STAT: every stat, "reset", or "Not found" for any other group. */
static void bin_stat(oc_binconn_t *b, const oc_bin_next_t *nx)
{
    oc_ctx_t *ctx = b->ctx;
    const oc_bin_body_t *body = &nx->body;
    uint32_t opaque = nx->req.opaque;
    if (body->keylen == 5 && memcmp(body->key, "reset", 5) == 0) {
        oc_stats_reset(ctx->stats);
        bin_count(b, oc_reply_bin_stats(b->out, opaque, "", 0));
        return;
    }
    if (body->keylen != 0) {
        bin_status(b, nx->req.opcode, opaque, OC_BIN_KEY_ENOENT, NULL);
        return;
    }
    struct evbuffer *text = evbuffer_new();
    if (text == NULL) {
        bin_status(b, nx->req.opcode, opaque, OC_BIN_ENOMEM, NULL);
        return;
    }
    time_t now = time(NULL);
    evbuffer_add_printf(text,
                        "STAT pid %ld\r\nSTAT uptime %ld\r\nSTAT time %ld\r\n"
                        "STAT version %s\r\n",
                        (long)getpid(), (long)(now - (time_t)ctx->started), (long)now,
                        OC_VERSION);
    if (ctx->near) /* near_serving: not a past proof */
        oc_near_serving(ctx->near, oc_stats_now());
    oc_stats_write(ctx->stats, text);
    size_t len = evbuffer_get_length(text);
    const char *p = (const char *)evbuffer_pullup(text, -1);
    if (p == NULL && len > 0)
        bin_status(b, nx->req.opcode, opaque, OC_BIN_ENOMEM, NULL);
    else
        bin_count(b, oc_reply_bin_stats(b->out, opaque, p ? p : "", len));
    evbuffer_free(text);
}

/* A whole request that is not a get; it is consumed after. */
static void bin_serve(oc_binconn_t *b, struct evbuffer *in, const oc_bin_next_t *nx)
{
    const oc_bin_req_t *r = &nx->req;
    b->cmds[0] = (oc_reply_bin_t){r->opcode, r->opaque};
    switch (oc_bin_loud(r->opcode)) {
    case OC_BIN_OP_SET:
    case OC_BIN_OP_ADD:
    case OC_BIN_OP_REPLACE:
        bin_push(b, nx);
        break;
    case OC_BIN_OP_DELETE:
        bin_tombstone(b, nx);
        break;
    case OC_BIN_OP_NOOP:
        bin_status(b, r->opcode, r->opaque, OC_BIN_SUCCESS, NULL);
        break;
    case OC_BIN_OP_VERSION:
        bin_count(b, oc_reply_bin_version(b->out, r->opaque, OC_VERSION));
        break;
    case OC_BIN_OP_STAT:
        bin_stat(b, nx);
        break;
    case OC_BIN_OP_QUIT: /* QUITQ: closes without a reply */
        bin_status(b, r->opcode, r->opaque, OC_BIN_SUCCESS, NULL);
        b->closing = 1;
        break;
    case OC_BIN_OP_SASL_LIST_MECHS:
    case OC_BIN_OP_SASL_AUTH:
    case OC_BIN_OP_SASL_STEP:
    case OC_BIN_OP_VERBOSITY:
        /* memcached without SASL, and memcached 1.6 for verbosity */
        bin_status(b, r->opcode, r->opaque, OC_BIN_UNKNOWN_COMMAND, NULL);
        break;
    default: /* append, prepend, incr, decr, touch, gat*, flush */
        bin_status(b, r->opcode, r->opaque, OC_BIN_NOT_SUPPORTED, NULL);
        break;
    }
    /* the push copied what it keeps; the request can go */
    evbuffer_drain(in, (size_t)nx->size);
}

/* A request refused from its header, or one that loses the stream. */
static void bin_refuse(oc_binconn_t *b, const oc_bin_next_t *nx)
{
    if (nx->kind == OC_BIN_NEXT_REFUSE || nx->status != 0)
        bin_status(b, nx->req.opcode, nx->req.opaque, nx->status, NULL);
    if (nx->kind == OC_BIN_NEXT_REFUSE && nx->step == OC_BIN_STEP_SKIP)
        b->skip_left = nx->size;
    else
        b->closing = 1;
}

oc_binconn_state_t oc_binconn_process(oc_binconn_t *b, struct evbuffer *in,
                                      size_t out_high)
{
    for (;;) {
        if (b->req || b->write)
            return OC_BINCONN_BUSY;
        if (b->closing)
            return OC_BINCONN_CLOSE;
        if (b->skip_left > 0 && !bin_skip(b, in))
            return OC_BINCONN_IDLE;
        if (evbuffer_get_length(b->out) > out_high)
            return OC_BINCONN_FULL;
        oc_bin_next_t nx;
        size_t bytes = bin_gather(b, in, &nx);
        if (b->n > 0) {
            bin_batch_start(b, in, b->n, bytes);
            continue;
        }
        if (nx.kind == OC_BIN_NEXT_MORE)
            return OC_BINCONN_IDLE;
        if (nx.kind == OC_BIN_NEXT_SERVE)
            bin_serve(b, in, &nx);
        else
            bin_refuse(b, &nx);
    }
}

int oc_binconn_at_boundary(const oc_binconn_t *b)
{
    return b->skip_left == 0;
}

oc_binconn_t *oc_binconn_new(oc_ctx_t *ctx, struct evbuffer *out,
                             void (*resume)(void *arg), void *arg)
{
    oc_binconn_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->ctx = ctx;
    b->out = out;
    b->resume = resume;
    b->arg = arg;
    if (bin_grow(b, BIN_FIRST_CAP) != 0) {
        oc_binconn_free(b);
        return NULL;
    }
    ctx->stats->bin_connections++;
    return b;
}

void oc_binconn_free(oc_binconn_t *b)
{
    if (b == NULL)
        return;
    if (b->req)
        oc_req_detach(b->req);
    if (b->write)
        oc_write_detach(b->write);
    free(b->cmds);
    free(b->gets);
    free(b->keys);
    free(b);
}

/*
 * libFuzzer target for oc_binproto: what a binary-protocol client (or an
 * attacker) may send objcached. The input is read as a stream of requests,
 * as the connection will: parse a header, check it, then read or skip the
 * body or stop, and go on until the input runs out or the stream is lost.
 *
 * Checked, besides ASan/UBSan on exactly-sized heap copies:
 * - parse_header refuses exactly the wrong magics and the lying lengths;
 * - check answers one of 0, 3, 4, 0x81, and 0 only within the limits (key at
 *   most 250, value at most max_value, body at most max_body) for a named
 *   opcode; step reads on 0 only, closes on every EINVAL and oversized body;
 * - the parts split from a body tile it exactly;
 * - the request rebuilt from those parts is the input's bytes (data type and
 *   vbucket aside, which the builder writes as 0);
 * - each reply writer fills an exactly-sized buffer, writes nothing into one
 *   byte less, and its header reads back with the fields it was given;
 * - quiet/loud: loud(quiet) is not quiet, only quiet opcodes suppress;
 * - oc_bin_next, walking the same stream as the connection (oc_binconn)
 *   does, agrees with the steps above, never asks for fewer bytes than it
 *   has or more than one request may take, and tiles what it serves.
 *
 *   bash scripts/fuzz.sh --target fuzz_binproto --seconds 60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oc_binproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small limits, so inputs of a few KiB reach "too large". */
#define MAX_VALUE 2048u
#define MAX_BODY  (MAX_VALUE + 8 + OC_BIN_KEY_MAX)

/* The header at p has these fields (p is a reply just written). */
static void expect_reply(const uint8_t *p, size_t n, uint8_t opcode, uint16_t status,
                         uint16_t keylen, uint8_t extlen, uint32_t opaque, uint64_t cas)
{
    oc_bin_res_t res;
    if (n < OC_BIN_HDR_LEN || oc_bin_parse_response(p, &res, NULL) != OC_OK ||
        res.opcode != opcode || res.status != status || res.keylen != keylen ||
        res.extlen != extlen || res.opaque != opaque || res.cas != cas ||
        res.datatype != 0 || (size_t)res.bodylen + OC_BIN_HDR_LEN != n)
        abort();
}

/* Run writer into an exact-size heap buffer and into one a byte short. */
typedef size_t (*writer_fn)(uint8_t *out, size_t cap, const void *ctx);

static uint8_t *write_exact(writer_fn w, const void *ctx, size_t want)
{
    uint8_t *buf = malloc(want);
    if (buf == NULL)
        return NULL;
    if (w(buf, want - 1, ctx) != 0 || w(buf, want, ctx) != want)
        abort();
    return buf;
}

typedef struct ctx {
    const oc_bin_req_t *r;
    const oc_bin_body_t *b;
    const char *text; /* the value as a C string (for status messages) */
} ctx_t;

static size_t w_hit(uint8_t *out, size_t cap, const void *v)
{
    const ctx_t *c = v;
    return oc_bin_format_get_hit(out, cap, c->r->opcode, c->r->opaque, c->r->cas,
                                 c->b->vlen, c->b->key, c->b->keylen, c->b->value,
                                 c->b->vlen);
}

static size_t w_miss(uint8_t *out, size_t cap, const void *v)
{
    const ctx_t *c = v;
    return oc_bin_format_miss(out, cap, c->r->opcode, c->r->opaque, c->b->key,
                              c->b->keylen);
}

static size_t w_status(uint8_t *out, size_t cap, const void *v)
{
    const ctx_t *c = v;
    return oc_bin_format_status(out, cap, c->r->opcode, c->r->vbucket, c->r->opaque,
                                c->r->cas, c->text);
}

static size_t w_stat(uint8_t *out, size_t cap, const void *v)
{
    const ctx_t *c = v;
    return oc_bin_format_stat(out, cap, c->r->opaque, (const char *)c->b->key,
                              c->b->keylen, (const char *)c->b->value, c->b->vlen);
}

static size_t w_request(uint8_t *out, size_t cap, const void *v)
{
    const ctx_t *c = v;
    return oc_bin_format_request(out, cap, c->r->opcode, c->r->opaque, c->r->cas,
                                 c->b->extras, c->b->extlen, c->b->key, c->b->keylen,
                                 c->b->value, c->b->vlen);
}

/* The writers, fed with what a valid request carried. */
static void exercise_writers(const oc_bin_req_t *r, const uint8_t *pkt)
{
    oc_bin_body_t b;
    oc_bin_split(r, pkt + OC_BIN_HDR_LEN, &b);
    if (b.extras != pkt + OC_BIN_HDR_LEN || b.key != b.extras + b.extlen ||
        b.value != b.key + b.keylen ||
        (uint64_t)b.extlen + b.keylen + b.vlen != r->bodylen)
        abort();
    char *text = malloc((size_t)b.vlen + 1);
    if (text == NULL)
        return;
    memcpy(text, b.value, b.vlen);
    text[b.vlen] = 0;
    ctx_t c = {r, &b, text};
    uint8_t *o;
    /* the request, rebuilt, is the input but for data type and vbucket */
    size_t n = OC_BIN_HDR_LEN + (size_t)r->bodylen;
    if ((o = write_exact(w_request, &c, n)) != NULL) {
        if (memcmp(o, pkt, 5) != 0 || memcmp(o + 8, pkt + 8, n - 8) != 0 || o[5] ||
            o[6] || o[7])
            abort();
        free(o);
    }
    int echo = oc_bin_returns_key(r->opcode);
    n = oc_bin_get_hit_size(r->opcode, b.keylen, b.vlen);
    if (n != OC_BIN_HDR_LEN + 4 + (echo ? b.keylen : 0) + (size_t)b.vlen)
        abort();
    if ((o = write_exact(w_hit, &c, n)) != NULL) {
        expect_reply(o, n, r->opcode, 0, echo ? b.keylen : 0, 4, r->opaque, r->cas);
        if (oc_bin_get_u32(o + OC_BIN_HDR_LEN) != b.vlen ||
            memcmp(o + n - b.vlen, b.value, b.vlen) != 0)
            abort();
        free(o);
    }
    n = OC_BIN_HDR_LEN + (echo ? b.keylen : strlen(oc_bin_status_msg(OC_BIN_KEY_ENOENT)));
    if ((o = write_exact(w_miss, &c, n)) != NULL) {
        expect_reply(o, n, r->opcode, OC_BIN_KEY_ENOENT, echo ? b.keylen : 0, 0,
                     r->opaque, 0);
        free(o);
    }
    /* any status, with the value's text up to its first NUL as message */
    n = OC_BIN_HDR_LEN + strlen(text);
    if ((o = write_exact(w_status, &c, n)) != NULL) {
        expect_reply(o, n, r->opcode, r->vbucket, 0, 0, r->opaque, r->cas);
        free(o);
    }
    n = OC_BIN_HDR_LEN + (size_t)b.keylen + b.vlen;
    if ((o = write_exact(w_stat, &c, n)) != NULL) {
        expect_reply(o, n, OC_BIN_OP_STAT, 0, b.keylen, 0, r->opaque, 0);
        free(o);
    }
    free(text);
}

/* The invariants of one header's verdict. */
static oc_bin_step_t judge(const oc_bin_req_t *r)
{
    uint16_t st = oc_bin_check(r, MAX_VALUE, MAX_BODY);
    oc_bin_step_t step = oc_bin_step(r, st, MAX_BODY);
    uint32_t vlen = r->bodylen - r->extlen - r->keylen;
    switch (st) {
    case OC_BIN_SUCCESS:
        if (r->bodylen > MAX_BODY || r->keylen > OC_BIN_KEY_MAX || vlen > MAX_VALUE ||
            strcmp(oc_bin_opcode_name(r->opcode), "unknown") == 0 ||
            step != OC_BIN_STEP_READ)
            abort();
        break;
    case OC_BIN_E2BIG:
        if ((r->bodylen > MAX_BODY) != (step == OC_BIN_STEP_CLOSE) ||
            step == OC_BIN_STEP_READ)
            abort();
        break;
    case OC_BIN_EINVAL:
        if (step != OC_BIN_STEP_CLOSE)
            abort();
        break;
    case OC_BIN_UNKNOWN_COMMAND:
        if (step != OC_BIN_STEP_SKIP || r->keylen > OC_BIN_KEY_MAX)
            abort();
        break;
    default:
        abort();
    }
    /* quiet commands */
    uint8_t loud = oc_bin_loud(r->opcode);
    if (oc_bin_is_quiet(r->opcode) != (loud != r->opcode) || oc_bin_is_quiet(loud) ||
        (!oc_bin_is_quiet(r->opcode) && oc_bin_suppressed(r->opcode, r->vbucket)) ||
        oc_bin_returns_key(r->opcode) != oc_bin_returns_key(loud))
        abort();
    return step;
}

/* The stream as oc_binconn reads it, with oc_bin_next. */
static void walk_next(const uint8_t *in, size_t size)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *p = in + off;
        size_t len = size - off;
        oc_bin_next_t nx;
        oc_bin_next(p, len, MAX_VALUE, MAX_BODY, &nx);
        switch (nx.kind) {
        case OC_BIN_NEXT_MORE:
            if (nx.need <= len || nx.need < OC_BIN_HDR_LEN ||
                nx.need > OC_BIN_HDR_LEN + MAX_BODY ||
                (len > 0 && p[0] != OC_BIN_MAGIC_REQ))
                abort();
            return;
        case OC_BIN_NEXT_LOST:
            /* a wrong first byte says nothing; a lying length says 0x81 */
            if (len == 0 || (p[0] != OC_BIN_MAGIC_REQ && nx.status != 0) ||
                (p[0] == OC_BIN_MAGIC_REQ &&
                 (len < OC_BIN_HDR_LEN || nx.status != OC_BIN_UNKNOWN_COMMAND ||
                  oc_bin_parse_header(p, &nx.req, NULL) == OC_OK)))
                abort();
            return;
        case OC_BIN_NEXT_REFUSE:
            if (len < OC_BIN_HDR_LEN || nx.status == 0 ||
                nx.status != oc_bin_check(&nx.req, MAX_VALUE, MAX_BODY) ||
                nx.step != oc_bin_step(&nx.req, nx.status, MAX_BODY) ||
                nx.step == OC_BIN_STEP_READ ||
                nx.size != OC_BIN_HDR_LEN + (uint64_t)nx.req.bodylen)
                abort();
            if (nx.step == OC_BIN_STEP_CLOSE || nx.size > len)
                return;
            break;
        case OC_BIN_NEXT_SERVE:
            if (nx.size > len || oc_bin_check(&nx.req, MAX_VALUE, MAX_BODY) != 0 ||
                nx.body.extras != p + OC_BIN_HDR_LEN ||
                (uint64_t)nx.body.extlen + nx.body.keylen + nx.body.vlen +
                        OC_BIN_HDR_LEN !=
                    nx.size)
                abort();
            break;
        default:
            abort();
        }
        off += (size_t)nx.size;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    memcpy(in, data, size);
    size_t off = 0;
    while (size - off >= OC_BIN_HDR_LEN) {
        const uint8_t *p = in + off;
        oc_bin_req_t r;
        char err[OC_ERRLEN] = "";
        oc_status_t pst = oc_bin_parse_header(p, &r, err);
        int bad = p[0] != OC_BIN_MAGIC_REQ ||
                  (uint32_t)p[4] + (uint32_t)(p[2] << 8 | p[3]) > oc_bin_get_u32(p + 8);
        if ((pst != OC_OK) != bad || (bad && (pst != OC_EINVAL || err[0] == 0)))
            abort();
        if (bad)
            break;
        oc_bin_step_t step = judge(&r);
        if (step == OC_BIN_STEP_CLOSE)
            break;
        if (size - off - OC_BIN_HDR_LEN < r.bodylen)
            break; /* the body has not all come */
        if (step == OC_BIN_STEP_READ)
            exercise_writers(&r, p);
        off += OC_BIN_HDR_LEN + (size_t)r.bodylen;
    }
    walk_next(in, size);
    free(in);
    return 0;
}

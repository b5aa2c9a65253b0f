#include "oc_binproto.h"

#include <string.h>

/* ---- names ----------------------------------------------------------------- */

#define OC_BIN_OP_NAME_(name, code, text) [(code)] = (text),
static const char *const opcode_names[256] = {OC_BIN_OPCODES(OC_BIN_OP_NAME_)};
#undef OC_BIN_OP_NAME_

const char *oc_bin_opcode_name(uint8_t opcode)
{
    return opcode_names[opcode] ? opcode_names[opcode] : "unknown";
}

const char *oc_bin_status_name(uint16_t status)
{
    switch (status) {
#define OC_BIN_ST_NAME_(name, code, text, msg)                                           \
    case code:                                                                           \
        return text;
        OC_BIN_STATUSES(OC_BIN_ST_NAME_)
#undef OC_BIN_ST_NAME_
    default:
        return "unknown status";
    }
}

const char *oc_bin_status_msg(uint16_t status)
{
    switch (status) {
#define OC_BIN_ST_MSG_(name, code, text, msg)                                            \
    case code:                                                                           \
        return msg;
        OC_BIN_STATUSES(OC_BIN_ST_MSG_)
#undef OC_BIN_ST_MSG_
    default:
        return "Unknown error";
    }
}

/* ---- shapes ---------------------------------------------------------------- */

enum { KEY_NONE = 1, KEY_REQUIRED, KEY_OPTIONAL }; /* 0: no shape (unknown opcode) */
enum { VAL_NONE, VAL_ANY };

/* ext: a bit per allowed extras length (all are below 32). */
typedef struct shape {
    uint32_t ext;
    uint8_t key, val;
} shape_t;

#define EXT(n) (1u << (n))

static const shape_t shapes[256] = {
    [OC_BIN_OP_GET] = {EXT(0), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_GETQ] = {EXT(0), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_GETK] = {EXT(0), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_GETKQ] = {EXT(0), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_SET] = {EXT(OC_BIN_EXT_STORE), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_SETQ] = {EXT(OC_BIN_EXT_STORE), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_ADD] = {EXT(OC_BIN_EXT_STORE), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_ADDQ] = {EXT(OC_BIN_EXT_STORE), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_REPLACE] = {EXT(OC_BIN_EXT_STORE), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_REPLACEQ] = {EXT(OC_BIN_EXT_STORE), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_APPEND] = {EXT(0), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_APPENDQ] = {EXT(0), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_PREPEND] = {EXT(0), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_PREPENDQ] = {EXT(0), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_DELETE] = {EXT(0), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_DELETEQ] = {EXT(0), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_INCREMENT] = {EXT(OC_BIN_EXT_INCR), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_INCREMENTQ] = {EXT(OC_BIN_EXT_INCR), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_DECREMENT] = {EXT(OC_BIN_EXT_INCR), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_DECREMENTQ] = {EXT(OC_BIN_EXT_INCR), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_TOUCH] = {EXT(OC_BIN_EXT_TOUCH), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_GAT] = {EXT(OC_BIN_EXT_TOUCH), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_GATQ] = {EXT(OC_BIN_EXT_TOUCH), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_GATK] = {EXT(OC_BIN_EXT_TOUCH), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_GATKQ] = {EXT(OC_BIN_EXT_TOUCH), KEY_REQUIRED, VAL_NONE},
    [OC_BIN_OP_FLUSH] = {EXT(0) | EXT(OC_BIN_EXT_FLUSH), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_FLUSHQ] = {EXT(0) | EXT(OC_BIN_EXT_FLUSH), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_VERBOSITY] = {EXT(OC_BIN_EXT_VERB), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_STAT] = {EXT(0), KEY_OPTIONAL, VAL_NONE},
    [OC_BIN_OP_NOOP] = {EXT(0), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_VERSION] = {EXT(0), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_QUIT] = {EXT(0), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_QUITQ] = {EXT(0), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_SASL_LIST_MECHS] = {EXT(0), KEY_NONE, VAL_NONE},
    [OC_BIN_OP_SASL_AUTH] = {EXT(0), KEY_REQUIRED, VAL_ANY},
    [OC_BIN_OP_SASL_STEP] = {EXT(0), KEY_REQUIRED, VAL_ANY},
};

/* ---- requests -------------------------------------------------------------- */

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

oc_status_t oc_bin_parse_header(const uint8_t *p, oc_bin_req_t *out, char *err)
{
    out->magic = p[0];
    out->opcode = p[1];
    out->keylen = get_u16(p + 2);
    out->extlen = p[4];
    out->datatype = p[5];
    out->vbucket = get_u16(p + 6);
    out->bodylen = oc_bin_get_u32(p + 8);
    out->opaque = oc_bin_get_u32(p + 12);
    out->cas = oc_bin_get_u64(p + 16);
    if (out->magic != OC_BIN_MAGIC_REQ)
        return oc_fail(err, OC_EINVAL, "binary request: magic 0x%02x, not 0x80",
                       (unsigned)out->magic);
    if ((uint32_t)out->extlen + out->keylen > out->bodylen)
        return oc_fail(err, OC_EINVAL,
                       "binary request %s: extras %u + key %u bytes exceed the body's %u",
                       oc_bin_opcode_name(out->opcode), (unsigned)out->extlen,
                       (unsigned)out->keylen, (unsigned)out->bodylen);
    return OC_OK;
}

static int key_ok(uint8_t rule, uint16_t keylen)
{
    switch (rule) {
    case KEY_NONE:
        return keylen == 0;
    case KEY_REQUIRED:
        return keylen > 0;
    default: /* KEY_OPTIONAL */
        return 1;
    }
}

uint16_t oc_bin_check(const oc_bin_req_t *r, uint32_t max_value, uint32_t max_body)
{
    if (r->bodylen > max_body)
        return OC_BIN_E2BIG;
    if (r->keylen > OC_BIN_KEY_MAX)
        return OC_BIN_EINVAL;
    const shape_t *s = &shapes[r->opcode];
    if (s->key == 0)
        return OC_BIN_UNKNOWN_COMMAND;
    /* A header oc_bin_parse_header refused never gets here; checked again so
     * the value length below cannot wrap whoever the caller is. */
    if ((uint32_t)r->extlen + r->keylen > r->bodylen)
        return OC_BIN_EINVAL;
    if (r->extlen >= 32 || !(s->ext & EXT(r->extlen)) || !key_ok(s->key, r->keylen))
        return OC_BIN_EINVAL;
    uint32_t vlen = r->bodylen - r->extlen - r->keylen;
    if (vlen > 0 && s->val == VAL_NONE)
        return OC_BIN_EINVAL;
    if (vlen > max_value)
        return OC_BIN_E2BIG;
    return OC_BIN_SUCCESS;
}

oc_bin_step_t oc_bin_step(const oc_bin_req_t *r, uint16_t status, uint32_t max_body)
{
    if (status == OC_BIN_SUCCESS)
        return OC_BIN_STEP_READ;
    if (r->bodylen > max_body || status == OC_BIN_EINVAL)
        return OC_BIN_STEP_CLOSE;
    return OC_BIN_STEP_SKIP;
}

void oc_bin_split(const oc_bin_req_t *r, const uint8_t *body, oc_bin_body_t *out)
{
    out->extras = body;
    out->extlen = r->extlen;
    out->key = body + r->extlen;
    out->keylen = r->keylen;
    out->value = out->key + r->keylen;
    out->vlen = r->bodylen - r->extlen - r->keylen;
}

/* ---- a stream of requests ------------------------------------------------- */

void oc_bin_next(const uint8_t *p, size_t len, uint32_t max_value, uint32_t max_body,
                 oc_bin_next_t *out)
{
    /* Called once per request of every pipeline: the fields, not a memset
     * of the whole struct (body is left as it was but for SERVE). */
    out->status = 0;
    out->step = OC_BIN_STEP_READ;
    out->size = 0;
    out->need = 0;
    if (len < OC_BIN_HDR_LEN) {
        memset(&out->req, 0, sizeof(out->req));
        out->kind = OC_BIN_NEXT_MORE;
        out->need = OC_BIN_HDR_LEN;
        if (len > 0 && p[0] != OC_BIN_MAGIC_REQ) {
            /* Lost from its first byte: no need to wait for the rest of a
             * header (memcached does, then closes the same). */
            out->kind = OC_BIN_NEXT_LOST;
            out->req.magic = p[0];
            out->need = 0;
        }
        return;
    }
    oc_bin_req_t *r = &out->req;
    if (oc_bin_parse_header(p, r, NULL) != OC_OK) {
        /* A lying length is answered (0x81) before the close; a wrong
         * magic (an ASCII line on a binary connection) closes without a
         * word, as in memcached. */
        out->kind = OC_BIN_NEXT_LOST;
        out->status = r->magic == OC_BIN_MAGIC_REQ ? OC_BIN_UNKNOWN_COMMAND : 0;
        return;
    }
    out->size = OC_BIN_HDR_LEN + (uint64_t)r->bodylen;
    uint16_t status = oc_bin_check(r, max_value, max_body);
    if (status != OC_BIN_SUCCESS) {
        out->kind = OC_BIN_NEXT_REFUSE;
        out->status = status;
        out->step = oc_bin_step(r, status, max_body);
        return;
    }
    if (len - OC_BIN_HDR_LEN < r->bodylen) {
        out->kind = OC_BIN_NEXT_MORE;
        out->need = (size_t)out->size; /* at most 24 + max_body */
        return;
    }
    out->kind = OC_BIN_NEXT_SERVE;
    oc_bin_split(r, p + OC_BIN_HDR_LEN, &out->body);
}

/* ---- quiet commands -------------------------------------------------------- */

static const uint8_t quiet_pairs[][2] = {
    /* quiet, loud */
    {OC_BIN_OP_GETQ, OC_BIN_OP_GET},
    {OC_BIN_OP_GETKQ, OC_BIN_OP_GETK},
    {OC_BIN_OP_GATQ, OC_BIN_OP_GAT},
    {OC_BIN_OP_GATKQ, OC_BIN_OP_GATK},
    {OC_BIN_OP_SETQ, OC_BIN_OP_SET},
    {OC_BIN_OP_ADDQ, OC_BIN_OP_ADD},
    {OC_BIN_OP_REPLACEQ, OC_BIN_OP_REPLACE},
    {OC_BIN_OP_APPENDQ, OC_BIN_OP_APPEND},
    {OC_BIN_OP_PREPENDQ, OC_BIN_OP_PREPEND},
    {OC_BIN_OP_DELETEQ, OC_BIN_OP_DELETE},
    {OC_BIN_OP_INCREMENTQ, OC_BIN_OP_INCREMENT},
    {OC_BIN_OP_DECREMENTQ, OC_BIN_OP_DECREMENT},
    {OC_BIN_OP_QUITQ, OC_BIN_OP_QUIT},
    {OC_BIN_OP_FLUSHQ, OC_BIN_OP_FLUSH},
};

int oc_bin_is_quiet(uint8_t opcode)
{
    return oc_bin_loud(opcode) != opcode;
}

uint8_t oc_bin_loud(uint8_t opcode)
{
    for (size_t i = 0; i < sizeof quiet_pairs / sizeof quiet_pairs[0]; i++)
        if (quiet_pairs[i][0] == opcode)
            return quiet_pairs[i][1];
    return opcode;
}

int oc_bin_returns_key(uint8_t opcode)
{
    switch (opcode) {
    case OC_BIN_OP_GETK:
    case OC_BIN_OP_GETKQ:
    case OC_BIN_OP_GATK:
    case OC_BIN_OP_GATKQ:
        return 1;
    default:
        return 0;
    }
}

/* The gets: the only commands whose quiet form is silent on a miss rather
 * than on success. */
static int is_get(uint8_t loud)
{
    return loud == OC_BIN_OP_GET || loud == OC_BIN_OP_GETK || loud == OC_BIN_OP_GAT ||
           loud == OC_BIN_OP_GATK;
}

int oc_bin_suppressed(uint8_t opcode, uint16_t status)
{
    if (!oc_bin_is_quiet(opcode))
        return 0;
    if (is_get(oc_bin_loud(opcode)))
        return status == OC_BIN_KEY_ENOENT;
    return status == OC_BIN_SUCCESS;
}

/* ---- writing --------------------------------------------------------------- */

static uint8_t *put(uint8_t *p, const void *src, size_t n)
{
    if (n)
        memcpy(p, src, n);
    return p + n;
}

/* The header of any packet; the magic says which way it goes. */
static uint8_t *put_header(uint8_t *p, uint8_t magic, uint8_t opcode, uint16_t keylen,
                           uint8_t extlen, uint16_t vb_or_status, uint32_t bodylen,
                           uint32_t opaque, uint64_t cas)
{
    p[0] = magic;
    p[1] = opcode;
    p[2] = (uint8_t)(keylen >> 8);
    p[3] = (uint8_t)keylen;
    p[4] = extlen;
    p[5] = OC_BIN_RAW_BYTES;
    p[6] = (uint8_t)(vb_or_status >> 8);
    p[7] = (uint8_t)vb_or_status;
    oc_bin_put_u32(p + 8, bodylen);
    oc_bin_put_u32(p + 12, opaque);
    oc_bin_put_u64(p + 16, cas);
    return p + OC_BIN_HDR_LEN;
}

/* The body length of extras + key + value, or -1 if over 32 bits. */
static int64_t body_len(uint64_t extlen, uint64_t klen, uint64_t vlen)
{
    uint64_t n = extlen + klen + vlen;
    return n > UINT32_MAX ? -1 : (int64_t)n;
}

/* 1 if a packet with this body fits in cap. */
static int fits(int64_t bodylen, size_t cap)
{
    return bodylen >= 0 && (uint64_t)bodylen <= (uint64_t)cap &&
           cap - (size_t)bodylen >= OC_BIN_HDR_LEN;
}

size_t oc_bin_format_header(uint8_t out[OC_BIN_HDR_LEN], uint8_t opcode, uint16_t status,
                            uint16_t keylen, uint8_t extlen, uint32_t bodylen,
                            uint32_t opaque, uint64_t cas)
{
    put_header(out, OC_BIN_MAGIC_RES, opcode, keylen, extlen, status, bodylen, opaque,
               cas);
    return OC_BIN_HDR_LEN;
}

size_t oc_bin_get_hit_size(uint8_t opcode, uint16_t klen, uint32_t vlen)
{
    int64_t b = body_len(OC_BIN_EXT_GET, oc_bin_returns_key(opcode) ? klen : 0, vlen);
    return b < 0 ? 0 : OC_BIN_HDR_LEN + (size_t)b;
}

size_t oc_bin_format_get_hit_head(uint8_t *out, size_t cap, uint8_t opcode,
                                  uint32_t opaque, uint64_t cas, uint32_t flags,
                                  const void *key, uint16_t klen, uint32_t vlen)
{
    if (!oc_bin_returns_key(opcode))
        klen = 0;
    int64_t b = body_len(OC_BIN_EXT_GET, klen, vlen);
    if (b < 0 || !fits(b - (int64_t)vlen, cap))
        return 0;
    uint8_t *p = put_header(out, OC_BIN_MAGIC_RES, opcode, klen, OC_BIN_EXT_GET,
                            OC_BIN_SUCCESS, (uint32_t)b, opaque, cas);
    p = oc_bin_put_u32(p, flags);
    p = put(p, key, klen);
    return (size_t)(p - out);
}

size_t oc_bin_format_get_hit(uint8_t *out, size_t cap, uint8_t opcode, uint32_t opaque,
                             uint64_t cas, uint32_t flags, const void *key, uint16_t klen,
                             const void *val, uint32_t vlen)
{
    size_t total = oc_bin_get_hit_size(opcode, klen, vlen);
    if (total == 0 || total > cap)
        return 0;
    size_t n =
        oc_bin_format_get_hit_head(out, cap, opcode, opaque, cas, flags, key, klen, vlen);
    put(out + n, val, vlen);
    return n + vlen;
}

/* A reply with no extras: key, then value. */
static size_t format_kv(uint8_t *out, size_t cap, uint8_t opcode, uint16_t status,
                        uint32_t opaque, uint64_t cas, const void *key, size_t klen,
                        const void *val, size_t vlen)
{
    if (klen > UINT16_MAX)
        return 0;
    int64_t b = body_len(0, klen, vlen);
    if (!fits(b, cap))
        return 0;
    uint8_t *p = put_header(out, OC_BIN_MAGIC_RES, opcode, (uint16_t)klen, 0, status,
                            (uint32_t)b, opaque, cas);
    p = put(p, key, klen);
    p = put(p, val, vlen);
    return (size_t)(p - out);
}

size_t oc_bin_format_miss(uint8_t *out, size_t cap, uint8_t opcode, uint32_t opaque,
                          const void *key, uint16_t klen)
{
    if (oc_bin_returns_key(opcode))
        return format_kv(out, cap, opcode, OC_BIN_KEY_ENOENT, opaque, 0, key, klen, NULL,
                         0);
    return oc_bin_format_status(out, cap, opcode, OC_BIN_KEY_ENOENT, opaque, 0, NULL);
}

size_t oc_bin_format_status(uint8_t *out, size_t cap, uint8_t opcode, uint16_t status,
                            uint32_t opaque, uint64_t cas, const char *msg)
{
    if (msg == NULL)
        msg = oc_bin_status_msg(status);
    return format_kv(out, cap, opcode, status, opaque, cas, NULL, 0, msg, strlen(msg));
}

size_t oc_bin_format_stat(uint8_t *out, size_t cap, uint32_t opaque, const char *name,
                          size_t nlen, const char *val, size_t vlen)
{
    return format_kv(out, cap, OC_BIN_OP_STAT, OC_BIN_SUCCESS, opaque, 0, name, nlen, val,
                     vlen);
}

size_t oc_bin_format_stat_end(uint8_t *out, size_t cap, uint32_t opaque)
{
    return format_kv(out, cap, OC_BIN_OP_STAT, OC_BIN_SUCCESS, opaque, 0, NULL, 0, NULL,
                     0);
}

size_t oc_bin_format_version(uint8_t *out, size_t cap, uint32_t opaque,
                             const char *version)
{
    return format_kv(out, cap, OC_BIN_OP_VERSION, OC_BIN_SUCCESS, opaque, 0, NULL, 0,
                     version, strlen(version));
}

/* ---- the client side ------------------------------------------------------- */

size_t oc_bin_format_request(uint8_t *out, size_t cap, uint8_t opcode, uint32_t opaque,
                             uint64_t cas, const void *extras, uint8_t extlen,
                             const void *key, uint16_t klen, const void *val,
                             uint32_t vlen)
{
    int64_t b = body_len(extlen, klen, vlen);
    if (!fits(b, cap))
        return 0;
    uint8_t *p = put_header(out, OC_BIN_MAGIC_REQ, opcode, klen, extlen, 0, (uint32_t)b,
                            opaque, cas);
    p = put(p, extras, extlen);
    p = put(p, key, klen);
    p = put(p, val, vlen);
    return (size_t)(p - out);
}

oc_status_t oc_bin_parse_response(const uint8_t *p, oc_bin_res_t *out, char *err)
{
    out->magic = p[0];
    out->opcode = p[1];
    out->keylen = get_u16(p + 2);
    out->extlen = p[4];
    out->datatype = p[5];
    out->status = get_u16(p + 6);
    out->bodylen = oc_bin_get_u32(p + 8);
    out->opaque = oc_bin_get_u32(p + 12);
    out->cas = oc_bin_get_u64(p + 16);
    if (out->magic != OC_BIN_MAGIC_RES)
        return oc_fail(err, OC_EINVAL, "binary response: magic 0x%02x, not 0x81",
                       (unsigned)out->magic);
    if ((uint32_t)out->extlen + out->keylen > out->bodylen)
        return oc_fail(
            err, OC_EINVAL,
            "binary response %s: extras %u + key %u bytes exceed the body's %u",
            oc_bin_opcode_name(out->opcode), (unsigned)out->extlen, (unsigned)out->keylen,
            (unsigned)out->bodylen);
    return OC_OK;
}

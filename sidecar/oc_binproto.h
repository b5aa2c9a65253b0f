/*
 * oc_binproto: memcached's binary protocol (the one Dalli, memjs and
 * pylibmc/php-memcached in binary mode speak): the constants, reading and
 * checking a request header, and writing replies and requests. Pure
 * functions over caller buffers: no I/O, no allocation, no state. The
 * connection (oc_conn) owns the buffers, reads the socket and decides what
 * each command does; this module only says what the bytes mean.
 *
 * The format (memcached's doc/protocol-binary.xml and its wiki page
 * "BinaryProtocolRevamped"): every packet is a 24-byte header, big-endian,
 *
 *   0 magic (0x80 request, 0x81 response)  1 opcode  2-3 key length
 *   4 extras length  5 data type (0: raw bytes)
 *   6-7 vbucket id (request, unused by memcached) / status (response)
 *   8-11 total body length  12-15 opaque (echoed back)  16-23 CAS
 *
 * then a body of `total body length` bytes: extras, key, value, in that
 * order (value length = body - extras - key).
 *
 * Reading a request (what oc_conn does, in this order):
 *   1. 24 bytes in hand: oc_bin_parse_header(). OC_EINVAL means the stream
 *      cannot be resynchronised: close (see the function for what to answer).
 *   2. oc_bin_check() on the header alone, before one body byte is buffered:
 *      the binary status to answer (0 = go on), and oc_bin_step() says what to
 *      do with the body: read it, skip exactly r.bodylen bytes, or close. So a
 *      4 GB body is refused from its header.
 *   3. Status 0: read r.bodylen bytes, oc_bin_split() them into extras, key
 *      and value, serve the command.
 *
 * Answering (memcached 1.6 behaviour, captured from a real server):
 *   - A reply carries the request's own opcode (a GETKQ hit is answered with
 *     opcode 0x0d, not 0x0c) and its opaque; CAS is the item's on a hit or
 *     a successful store, 0 otherwise. Replies go out in request order.
 *   - A non-zero status carries a text body (oc_bin_status_msg: "Not found",
 *     ...), except the miss of GETK/GETKQ/GATK/GATKQ, whose body and key
 *     are the requested key (oc_bin_format_miss).
 *   - Quiet commands (oc_bin_is_quiet) suppress exactly one reply each
 *     (oc_bin_suppressed):
 *       GETQ, GETKQ, GATQ, GATKQ: no reply on a miss (status 1); a hit and
 *         any other error are answered.
 *       SETQ, ADDQ, REPLACEQ, APPENDQ, PREPENDQ, DELETEQ, INCREMENTQ,
 *       DECREMENTQ, FLUSHQ, QUITQ: no reply on success (status 0); every
 *         error is answered ("errors should not be allowed to go unnoticed").
 *   - NOOP answers status 0 with an empty body, and it is the end marker of
 *     a pipeline: a client sends GETKQ k1 ... GETKQ kn NOOP and reads until
 *     the NOOP reply (matched by opaque); every answer of the quiet gets
 *     before it must be written before NOOP's reply. The spec lets a server
 *     hold quiet replies until a non-quiet command; memcached 1.6 writes
 *     them as soon as its input runs dry, which clients accept too.
 */
#ifndef OC_BINPROTO_H
#define OC_BINPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "oc_status.h"

#define OC_BIN_HDR_LEN 24
#define OC_BIN_MAGIC_REQ                                                                 \
    0x80 /* also how a connection tells binary from ASCII:                               \
            memcached looks at the first byte only */
#define OC_BIN_MAGIC_RES 0x81
#define OC_BIN_RAW_BYTES 0x00 /* the one data type; memcached ignores the field */
#define OC_BIN_KEY_MAX   250  /* memcached's KEY_MAX_LENGTH; the u16 field allows more */

/* Extras sizes and layouts (offsets within the extras). */
#define OC_BIN_EXT_STORE 8 /* set/add/replace: flags u32 @0, expiration u32 @4 */
#define OC_BIN_EXT_INCR                                                                  \
    20 /* incr/decr: delta u64 @0, initial u64 @8, expiration u32 @16 */
#define OC_BIN_EXT_TOUCH 4 /* touch/gat*: expiration u32 @0 */
#define OC_BIN_EXT_FLUSH 4 /* flush (optional): expiration u32 @0 */
#define OC_BIN_EXT_VERB  4 /* verbosity: level u32 @0 */
#define OC_BIN_EXT_GET   4 /* a get/gat/touch hit's reply: flags u32 @0 */

/*
 * Every opcode memcached defines (its protocol_binary.h, plus VERBOSITY from
 * the revamped spec), with the name used in logs. The range operations
 * (0x30..0x3c) are defined there "for use in other projects": memcached, and
 * oc_bin_check, answer them as unknown commands.
 */
#define OC_BIN_OPCODES(X)                                                                \
    X(GET, 0x00, "get")                                                                  \
    X(SET, 0x01, "set")                                                                  \
    X(ADD, 0x02, "add")                                                                  \
    X(REPLACE, 0x03, "replace")                                                          \
    X(DELETE, 0x04, "delete")                                                            \
    X(INCREMENT, 0x05, "increment")                                                      \
    X(DECREMENT, 0x06, "decrement")                                                      \
    X(QUIT, 0x07, "quit")                                                                \
    X(FLUSH, 0x08, "flush")                                                              \
    X(GETQ, 0x09, "getq")                                                                \
    X(NOOP, 0x0a, "noop")                                                                \
    X(VERSION, 0x0b, "version")                                                          \
    X(GETK, 0x0c, "getk")                                                                \
    X(GETKQ, 0x0d, "getkq")                                                              \
    X(APPEND, 0x0e, "append")                                                            \
    X(PREPEND, 0x0f, "prepend")                                                          \
    X(STAT, 0x10, "stat")                                                                \
    X(SETQ, 0x11, "setq")                                                                \
    X(ADDQ, 0x12, "addq")                                                                \
    X(REPLACEQ, 0x13, "replaceq")                                                        \
    X(DELETEQ, 0x14, "deleteq")                                                          \
    X(INCREMENTQ, 0x15, "incrementq")                                                    \
    X(DECREMENTQ, 0x16, "decrementq")                                                    \
    X(QUITQ, 0x17, "quitq")                                                              \
    X(FLUSHQ, 0x18, "flushq")                                                            \
    X(APPENDQ, 0x19, "appendq")                                                          \
    X(PREPENDQ, 0x1a, "prependq")                                                        \
    X(VERBOSITY, 0x1b, "verbosity")                                                      \
    X(TOUCH, 0x1c, "touch")                                                              \
    X(GAT, 0x1d, "gat")                                                                  \
    X(GATQ, 0x1e, "gatq")                                                                \
    X(SASL_LIST_MECHS, 0x20, "sasl_list_mechs")                                          \
    X(SASL_AUTH, 0x21, "sasl_auth")                                                      \
    X(SASL_STEP, 0x22, "sasl_step")                                                      \
    X(GATK, 0x23, "gatk")                                                                \
    X(GATKQ, 0x24, "gatkq")                                                              \
    X(RGET, 0x30, "rget")                                                                \
    X(RSET, 0x31, "rset")                                                                \
    X(RSETQ, 0x32, "rsetq")                                                              \
    X(RAPPEND, 0x33, "rappend")                                                          \
    X(RAPPENDQ, 0x34, "rappendq")                                                        \
    X(RPREPEND, 0x35, "rprepend")                                                        \
    X(RPREPENDQ, 0x36, "rprependq")                                                      \
    X(RDELETE, 0x37, "rdelete")                                                          \
    X(RDELETEQ, 0x38, "rdeleteq")                                                        \
    X(RINCR, 0x39, "rincr")                                                              \
    X(RINCRQ, 0x3a, "rincrq")                                                            \
    X(RDECR, 0x3b, "rdecr")                                                              \
    X(RDECRQ, 0x3c, "rdecrq")

#define OC_BIN_OP_ENUM_(name, code, text) OC_BIN_OP_##name = (code),
typedef enum oc_bin_opcode { OC_BIN_OPCODES(OC_BIN_OP_ENUM_) } oc_bin_opcode_t;
#undef OC_BIN_OP_ENUM_

/*
 * Every response status: the name for logs, and the text memcached puts in
 * the body of an error reply. The first eleven are memcached's own; 0x07 and
 * 0x83..0x86 come from the revamped spec (Couchbase-era), never sent by
 * memcached, and are here so a log can name them.
 */
#define OC_BIN_STATUSES(X)                                                               \
    X(SUCCESS, 0x00, "no error", "")                                                     \
    X(KEY_ENOENT, 0x01, "key not found", "Not found")                                    \
    X(KEY_EEXISTS, 0x02, "key exists", "Data exists for key.")                           \
    X(E2BIG, 0x03, "value too large", "Too large.")                                      \
    X(EINVAL, 0x04, "invalid arguments", "Invalid arguments")                            \
    X(NOT_STORED, 0x05, "item not stored", "Not stored.")                                \
    X(DELTA_BADVAL, 0x06, "non-numeric value",                                           \
      "Non-numeric server-side value for incr or decr")                                  \
    X(NOT_MY_VBUCKET, 0x07, "vbucket belongs to another server", "Not my vbucket")       \
    X(AUTH_ERROR, 0x20, "authentication error", "Auth failure.")                         \
    X(AUTH_CONTINUE, 0x21, "authentication continue", "")                                \
    X(UNKNOWN_COMMAND, 0x81, "unknown command", "Unknown command")                       \
    X(ENOMEM, 0x82, "out of memory", "Out of memory")                                    \
    X(NOT_SUPPORTED, 0x83, "not supported", "Not supported")                             \
    X(EINTERNAL, 0x84, "internal error", "Internal error")                               \
    X(EBUSY, 0x85, "busy", "Busy")                                                       \
    X(ETMPFAIL, 0x86, "temporary failure", "Temporary failure")

#define OC_BIN_ST_ENUM_(name, code, text, msg) OC_BIN_##name = (code),
typedef enum oc_bin_status { OC_BIN_STATUSES(OC_BIN_ST_ENUM_) } oc_bin_status_t;
#undef OC_BIN_ST_ENUM_

/* Static, never NULL: "getkq", or "unknown" for an opcode not in the table. */
const char *oc_bin_opcode_name(uint8_t opcode);
/* Static, never NULL: "key not found", or "unknown status". */
const char *oc_bin_status_name(uint16_t status);
/* Static, never NULL: the body memcached sends with `status` ("Not found");
 * "" for success and for AUTH_CONTINUE (whose body is the SASL challenge),
 * "Unknown error" for a status not in the table. */
const char *oc_bin_status_msg(uint16_t status);

/* ---- requests ------------------------------------------------------------ */

typedef struct oc_bin_req {
    uint8_t magic, opcode, extlen, datatype;
    uint16_t keylen, vbucket; /* vbucket: reserved, ignored (memcached does) */
    uint32_t bodylen, opaque;
    uint64_t cas; /* non-zero on a store or delete: "only if the item still has
                     this CAS" (memcached turns set/add/replace into cas) */
} oc_bin_req_t;

/*
 * Parse the 24 bytes at p (the caller has at least OC_BIN_HDR_LEN) into out.
 * OC_OK, or OC_EINVAL with a message in err (OC_ERRLEN bytes, may be NULL)
 * when the header cannot be a request: the magic is not 0x80, or extlen +
 * keylen > bodylen (a length that lies). Either way the stream cannot be
 * resynchronised and the caller closes. out is filled in both cases, so the
 * caller may answer first. objcached answers a lying length with 0x81
 * "Unknown command" (opaque echoed) then closes, so that the client learns
 * why; memcached 1.6.18 neither answers nor closes (it waits for the body
 * the lengths imply). A wrong magic (an ASCII line on a binary connection
 * included) closes without a word, as in memcached.
 */
oc_status_t oc_bin_parse_header(const uint8_t *p, oc_bin_req_t *out, char *err);

/*
 * Is the request's shape right for its opcode, and within limits? Decided
 * from the header alone. Returns the binary status to answer with:
 *   0                   fine: read the body and serve the command;
 *   OC_BIN_E2BIG        bodylen > max_body, or a value over max_value;
 *   OC_BIN_EINVAL       a key over OC_BIN_KEY_MAX, extras of the wrong size,
 *                       a key missing where one is required or present where
 *                       none is allowed, a value where none is allowed;
 *   OC_BIN_UNKNOWN_COMMAND  an opcode with no known shape (undefined ones and
 *                       the range operations).
 * Checked in this order: body size, key length, opcode, shape, value size
 * (so a huge body or a long key is refused whatever its opcode, as memcached
 * does).
 * Shapes, from the spec and memcached's own checks (extras / key / value):
 *   get getq getk getkq ......... 0 / required / none
 *   set add replace (+q) ........ 8 / required / any length, 0 included
 *   append prepend (+q) ......... 0 / required / any length
 *   delete deleteq .............. 0 / required / none
 *   increment decrement (+q) .... 20 / required / none
 *   touch gat gatq gatk gatkq ... 4 / required / none
 *   flush flushq ................ 0 or 4 / none / none
 *   verbosity ................... 4 / none / none
 *   stat ........................ 0 / optional (the group: "items", ...) / none
 *   noop version quit quitq sasl_list_mechs ... 0 / none / none
 *   sasl_auth sasl_step ......... 0 / required (mechanism) / any length
 * Passing the check does not mean objcached implements the command: the
 * connection answers what it does not do (SASL, verbosity: see
 * oc_bin_format_status). max_value bounds the value of the commands that
 * carry one; max_body is the most the connection will read for one request,
 * to serve it or to discard it (at least max_value + 8 + OC_BIN_KEY_MAX for
 * a largest set to pass). The data type, vbucket and CAS are not checked.
 */
uint16_t oc_bin_check(const oc_bin_req_t *r, uint32_t max_value, uint32_t max_body);

/* What the connection does with the body after oc_bin_check. */
typedef enum oc_bin_step {
    OC_BIN_STEP_READ,  /* status 0: read r->bodylen bytes, then serve */
    OC_BIN_STEP_SKIP,  /* answer the status, read and drop exactly r->bodylen
                          bytes (nothing of the body has been consumed yet),
                          then the next header: unknown command, a value over
                          max_value whose body is within max_body */
    OC_BIN_STEP_CLOSE, /* answer the status, then close: a body over max_body
                          (not worth reading even to drop it), and every
                          EINVAL (memcached closes on a malformed request, its
                          sender is confused about the protocol) */
} oc_bin_step_t;

/* The step for a request that oc_bin_check answered with `status`. */
oc_bin_step_t oc_bin_step(const oc_bin_req_t *r, uint16_t status, uint32_t max_body);

/* The parts of a body in hand (r->bodylen bytes at body, r checked). The
 * pointers point into body; a missing part has length 0 (pointer unspecified). */
typedef struct oc_bin_body {
    const uint8_t *extras, *key, *value;
    uint8_t extlen;
    uint16_t keylen;
    uint32_t vlen;
} oc_bin_body_t;

void oc_bin_split(const oc_bin_req_t *r, const uint8_t *body, oc_bin_body_t *out);

/* 1 for the quiet variants (GETQ GETKQ GATQ GATKQ SETQ ADDQ REPLACEQ DELETEQ
 * INCREMENTQ DECREMENTQ QUITQ FLUSHQ APPENDQ PREPENDQ), else 0. */
int oc_bin_is_quiet(uint8_t opcode);
/* 1 if a hit (and a miss) echoes the key: GETK GETKQ GATK GATKQ. */
int oc_bin_returns_key(uint8_t opcode);
/* The non-quiet opcode of a quiet one (GETKQ -> GETK); any other unchanged. */
uint8_t oc_bin_loud(uint8_t opcode);
/* 1 if the reply to `opcode` with `status` must not be sent (the quiet rules
 * at the top of this file); 0 for every non-quiet opcode. */
int oc_bin_suppressed(uint8_t opcode, uint16_t status);

/* ---- replies ------------------------------------------------------------- */

/*
 * Each writer returns the bytes written, or 0 (writing nothing) when they do
 * not fit in cap or the lengths cannot be encoded (a body over 4 GiB, a key
 * over 65535). `opcode` is the request's own (quiet ones included), `opaque`
 * the request's. Data type is always 0.
 */

/* The 24-byte response header; returns OC_BIN_HDR_LEN. */
size_t oc_bin_format_header(uint8_t out[OC_BIN_HDR_LEN], uint8_t opcode, uint16_t status,
                            uint16_t keylen, uint8_t extlen, uint32_t bodylen,
                            uint32_t opaque, uint64_t cas);

/* Bytes of a get hit: header, 4-byte flags, the key when the opcode returns
 * it, the value. 0 if not encodable. */
size_t oc_bin_get_hit_size(uint8_t opcode, uint16_t klen, uint32_t vlen);
/* A get/getq/getk/getkq/gat* hit: status 0, cas of the item, extras = flags,
 * key (only if oc_bin_returns_key(opcode); ignored otherwise), value (val may
 * be NULL only when vlen is 0). TOUCH's hit is the same with vlen 0: memcached
 * answers it with the flags and no value. */
size_t oc_bin_format_get_hit(uint8_t *out, size_t cap, uint8_t opcode, uint32_t opaque,
                             uint64_t cas, uint32_t flags, const void *key, uint16_t klen,
                             const void *val, uint32_t vlen);
/* The same without the value bytes (bodylen counts vlen): for a caller that
 * sends a large value from where it lies, right after these bytes. */
size_t oc_bin_format_get_hit_head(uint8_t *out, size_t cap, uint8_t opcode,
                                  uint32_t opaque, uint64_t cas, uint32_t flags,
                                  const void *key, uint16_t klen, uint32_t vlen);
/* A miss, as memcached answers it: status 1 and "Not found", or for the
 * key-returning opcodes status 1 with the key as key and whole body. (The
 * quiet ones are not answered at all: oc_bin_suppressed.) */
size_t oc_bin_format_miss(uint8_t *out, size_t cap, uint8_t opcode, uint32_t opaque,
                          const void *key, uint16_t klen);
/* A reply with no extras and no key: status, then msg as the body. msg NULL:
 * memcached's text for the status (none for 0). Used for errors (cas 0),
 * for a store's success (cas = the item's new CAS, msg NULL), for noop, quit,
 * flush, delete. */
size_t oc_bin_format_status(uint8_t *out, size_t cap, uint8_t opcode, uint16_t status,
                            uint32_t opaque, uint64_t cas, const char *msg);
/* One stat: opcode STAT, key = name, value = text, cas 0. A run of them ends
 * with oc_bin_format_stat_end (no key, no value). */
size_t oc_bin_format_stat(uint8_t *out, size_t cap, uint32_t opaque, const char *name,
                          size_t nlen, const char *val, size_t vlen);
size_t oc_bin_format_stat_end(uint8_t *out, size_t cap, uint32_t opaque);
/* VERSION's reply: the version string ("1.6.18", NUL-terminated) as body. */
size_t oc_bin_format_version(uint8_t *out, size_t cap, uint32_t opaque,
                             const char *version);

/* ---- a stream of requests ------------------------------------------------ */

/* What the next request of a buffered stream is, and what to do with it. */
typedef enum oc_bin_next_kind {
    OC_BIN_NEXT_MORE,   /* not all of it is here: wait until at least `need`
                           bytes are buffered (a header, then the body) */
    OC_BIN_NEXT_SERVE,  /* a whole request that passed oc_bin_check: req and
                           body are set; it takes `size` bytes */
    OC_BIN_NEXT_REFUSE, /* oc_bin_check refused it from its header: answer
                           `status` (unless oc_bin_suppressed), then `step`:
                           SKIP drops `size` bytes (header and body, which
                           may not all have come yet), CLOSE closes */
    OC_BIN_NEXT_LOST,   /* the header cannot be a request: close. `status` is
                           what to answer first (0x81 for a length that lies,
                           opaque in req), or 0 for nothing (a wrong magic,
                           seen from the first byte) */
} oc_bin_next_kind_t;

typedef struct oc_bin_next {
    oc_bin_next_kind_t kind;
    oc_bin_req_t req;   /* every kind but MORE with fewer than 24 bytes */
    oc_bin_body_t body; /* SERVE: pointers into the buffer (else unset) */
    uint16_t status;    /* REFUSE, LOST */
    oc_bin_step_t step; /* REFUSE */
    uint64_t size;      /* SERVE, REFUSE: 24 + bodylen */
    size_t need;        /* MORE */
} oc_bin_next_t;

/*
 * Read the request at the start of p[0..len): the steps at the top of this
 * file in one call, for a connection that keeps what it has read in one
 * buffer and may have any part of a request, or several. Pure; reads at
 * most min(len, 24 + bodylen) bytes, the body only when it is all here. A
 * connection calls it again on the same bytes once `need` are buffered; a
 * pipeline is read by calling it at p + size after each SERVE.
 */
void oc_bin_next(const uint8_t *p, size_t len, uint32_t max_value, uint32_t max_body,
                 oc_bin_next_t *out);

/* ---- the other direction: for tests, bench/ and raw clients --------------- */

/* A request: header (magic 0x80, vbucket 0) + extras + key + value. NULL
 * pointers with length 0 are fine. */
size_t oc_bin_format_request(uint8_t *out, size_t cap, uint8_t opcode, uint32_t opaque,
                             uint64_t cas, const void *extras, uint8_t extlen,
                             const void *key, uint16_t klen, const void *val,
                             uint32_t vlen);

typedef struct oc_bin_res {
    uint8_t magic, opcode, extlen, datatype;
    uint16_t keylen, status;
    uint32_t bodylen, opaque;
    uint64_t cas;
} oc_bin_res_t;

/* Parse a response header (24 bytes at p): OC_OK, or OC_EINVAL (err) for a
 * magic other than 0x81 or extlen + keylen > bodylen. out is filled anyway. */
oc_status_t oc_bin_parse_response(const uint8_t *p, oc_bin_res_t *out, char *err);

/* Big-endian fields, for extras. */
static inline uint32_t oc_bin_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t oc_bin_get_u64(const uint8_t *p)
{
    return (uint64_t)oc_bin_get_u32(p) << 32 | oc_bin_get_u32(p + 4);
}

static inline uint8_t *oc_bin_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static inline uint8_t *oc_bin_put_u64(uint8_t *p, uint64_t v)
{
    oc_bin_put_u32(p, (uint32_t)(v >> 32));
    return oc_bin_put_u32(p + 4, (uint32_t)v);
}

#endif

/*
 * libFuzzer target for oc_proto: oc_proto_parse() on arbitrary command lines
 * and oc_proto_base64_decode() on arbitrary text.
 *
 * The input is one line (what oc_conn hands over: no "\n", maybe any other
 * byte). It is parsed from an exactly-sized heap copy, so ASan sees any read
 * past its end, twice: with a small token array (4, the overflow path) and
 * with the daemon's default (max_keys 1024 + 8). Then the same bytes are
 * base64-decoded into an exactly-sized buffer. Contract checks abort().
 *
 *   bash scripts/fuzz.sh --target fuzz_proto --seconds 60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oc_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SMALL_TOK 4
#define BIG_TOK   (1024 + 8)

static oc_token_t big_tok[BIG_TOK];

static void check_err(const char *err)
{
    size_t n = strnlen(err, OC_ERRLEN);
    if (n == 0 || n == OC_ERRLEN)
        abort(); /* a failure always says why, NUL-terminated */
    for (size_t i = 0; i < n; i++)
        if (err[i] == '\r' || err[i] == '\n')
            abort(); /* it goes into a CLIENT_ERROR line as it is */
}

static int in_line(const char *line, size_t len, const char *p, size_t n)
{
    return p >= line && n <= len && (size_t)(p - line) <= len - n;
}

/* Everything a caller may rely on after a parse. */
static void check_cmd(const char *line, size_t len, const oc_token_t *tok, size_t maxtok,
                      oc_status_t st, const oc_cmd_t *cmd, const char *err)
{
    if (st != OC_OK && st != OC_EINVAL && st != OC_ETOOBIG)
        abort();
    if (st != OC_OK)
        check_err(err);
    if (st == OC_ETOOBIG)
        return;
    /* After a failure the caller uses data_len only (to skip an ms data
     * block): keys may point at tokens never written. */
    if (st == OC_OK && cmd->nkeys > 0) {
        if (cmd->keys < tok || cmd->keys + cmd->nkeys > tok + maxtok)
            abort();
        for (size_t i = 0; i < cmd->nkeys; i++) {
            const oc_token_t *t = &cmd->keys[i];
            if (t->len == 0 || !in_line(line, len, t->p, t->len) ||
                memchr(t->p, ' ', t->len) != NULL)
                abort();
        }
    }
    switch (cmd->type) {
    case OC_CMD_GET:
    case OC_CMD_GETS:
        if (st != OC_OK || cmd->nkeys == 0)
            abort();
        break;
    case OC_CMD_SET:
    case OC_CMD_STORAGE:
    case OC_CMD_MS:
        /* The connection swallows data_len + 2 bytes: it must be sane. */
        if (cmd->data_len > INT32_MAX)
            abort();
        break;
    case OC_CMD_MG:
    case OC_CMD_MD:
        if (st == OC_OK && cmd->nkeys != 1)
            abort();
        break;
    default:
        break;
    }
    if (cmd->meta.flags & OC_META_O) {
        const oc_token_t *o = &cmd->meta.opaque;
        if (o->len > 32 && st == OC_OK)
            abort(); /* oc_conn copies it into 40 bytes */
        if (o->len > 0 && !in_line(line, len, o->p, o->len))
            abort();
    }
}

static void fuzz_parse(const uint8_t *data, size_t size)
{
    char *line = malloc(size > 0 ? size : 1);
    oc_token_t *small = malloc(SMALL_TOK * sizeof(*small));
    if (line == NULL || small == NULL)
        abort();
    memcpy(line, data, size);
    oc_cmd_t c1, c2;
    char e1[OC_ERRLEN], e2[OC_ERRLEN];
    oc_status_t s1 = oc_proto_parse(line, size, small, SMALL_TOK, &c1, e1);
    check_cmd(line, size, small, SMALL_TOK, s1, &c1, e1);
    oc_status_t s2 = oc_proto_parse(line, size, big_tok, BIG_TOK, &c2, e2);
    check_cmd(line, size, big_tok, BIG_TOK, s2, &c2, e2);
    /* The token array only decides whether a line has too many tokens. */
    if (s1 != OC_ETOOBIG && s2 != OC_ETOOBIG &&
        (s1 != s2 || c1.type != c2.type || c1.nkeys != c2.nkeys ||
         c1.data_len != c2.data_len || c1.noreply != c2.noreply ||
         c1.meta.flags != c2.meta.flags))
        abort();
    if (s1 != OC_ETOOBIG && s2 == OC_ETOOBIG)
        abort();
    free(small);
    free(line);
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The reference encoder (RFC 4648, with padding). */
static size_t b64_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64[v & 63] : '=';
    }
    return o;
}

static void fuzz_base64(const uint8_t *data, size_t size)
{
    char *in = malloc(size > 0 ? size : 1);
    size_t cap = size / 4 * 3;
    char *out = malloc(cap > 0 ? cap : 1);
    if (in == NULL || out == NULL)
        abort();
    memcpy(in, data, size);
    long n = oc_proto_base64_decode(in, size, out, cap);
    if (n < -1 || (n >= 0 && (size_t)n > cap))
        abort();
    if (n >= 0) {
        /* Whatever it decoded must encode back to a string that decodes
         * to the same bytes (the key looked up is the decoded one). */
        char *enc = malloc(((size_t)n + 2) / 3 * 4 + 1);
        char *dec = malloc((size_t)n + 1);
        if (enc == NULL || dec == NULL)
            abort();
        size_t elen = b64_encode((const unsigned char *)out, (size_t)n, enc);
        if (elen != size)
            abort(); /* padding is exact: same length in, same length out */
        long m = oc_proto_base64_decode(enc, elen, dec, (size_t)n);
        if (m != n || memcmp(dec, out, (size_t)n) != 0)
            abort();
        /* One byte too little room must fail, never write past cap. */
        if (n > 0 && oc_proto_base64_decode(in, size, out, (size_t)n - 1) != -1)
            abort();
        free(dec);
        free(enc);
    }
    free(out);
    free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_parse(data, size);
    fuzz_base64(data, size);
    return 0;
}

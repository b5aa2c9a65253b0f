#include "oc_proto.h"

#include <stdint.h>
#include <string.h>

static int tok_is(const oc_token_t *t, const char *s)
{
    size_t n = strlen(s);
    return t->len == n && memcmp(t->p, s, n) == 0;
}

/* Returns the token count, or maxtok + 1 if there are more than maxtok. */
static size_t tokenize(const char *line, size_t len, oc_token_t *tok, size_t maxtok)
{
    size_t n = 0, i = 0;
    while (i < len) {
        while (i < len && line[i] == ' ')
            i++;
        if (i == len)
            break;
        size_t start = i;
        while (i < len && line[i] != ' ')
            i++;
        if (n == maxtok)
            return maxtok + 1;
        tok[n].p = line + start;
        tok[n].len = i - start;
        n++;
    }
    return n;
}

/* A decimal uint64 with no sign, no junk, no overflow. */
static int parse_u64(const oc_token_t *t, uint64_t *out)
{
    if (t->len == 0 || t->len > 20)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < t->len; i++) {
        char c = t->p[i];
        if (c < '0' || c > '9')
            return 0;
        uint64_t d = (uint64_t)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

/* Exptime may be negative in memcached ("expire now"). */
static int parse_i64ish(const oc_token_t *t)
{
    oc_token_t u = *t;
    uint64_t v;
    if (u.len > 0 && u.p[0] == '-')
        u.p++, u.len--;
    return parse_u64(&u, &v);
}

static oc_status_t parse_storage(const oc_token_t *tok, size_t n, oc_cmd_t *cmd,
                                 char *err)
{
    /* <cmd> <key> <flags> <exptime> <bytes> [<cas>] [noreply] */
    int is_cas = tok_is(&tok[0], "cas");
    size_t base = is_cas ? 6 : 5;
    uint64_t flags, bytes, cas;
    cmd->type = tok_is(&tok[0], "set") ? OC_CMD_SET : OC_CMD_STORAGE;
    cmd->noreply = (n == base + 1 && tok_is(&tok[n - 1], "noreply"));
    if (n != base && !cmd->noreply)
        return oc_fail(err, OC_EINVAL, "bad command line format");
    if (!parse_u64(&tok[2], &flags) || flags > UINT32_MAX || !parse_i64ish(&tok[3]) ||
        (is_cas && !parse_u64(&tok[5], &cas)))
        return oc_fail(err, OC_EINVAL, "bad command line format");
    if (!parse_u64(&tok[4], &bytes) || bytes > INT32_MAX)
        return oc_fail(err, OC_EINVAL, "bad data chunk");
    cmd->keys = &tok[1];
    cmd->nkeys = 1;
    cmd->data_len = bytes;
    return OC_OK;
}

static const char *const oc_proto_storage[] = {"set",    "add",     "replace",
                                               "append", "prepend", "cas"};
static const char *const oc_proto_unsupported[] = {
    "touch", "incr",           "decr",      "gat",
    "gats",  "flush_all",      "verbosity", "ma",
    "me",    "cache_memlimit", "shutdown",  "lru_crawler",
    "slabs", "watch",          "lru",       "misbehave"};

#define OC_NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int in_list(const oc_token_t *t, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tok_is(t, list[i]))
            return 1;
    return 0;
}

/* An unsupported command's noreply, only where memcached takes one (its
 * set_noreply_maybe, reached for the token counts its dispatch admits):
 * there its error is dropped (oc_conn), and anywhere else a last token
 * "noreply" is an argument, a key named so (`gat 0 noreply`, `me
 * noreply`), or the count is one memcached answers with ERROR: those lines
 * are answered, and a reply not sent would leave the client waiting for
 * it. n counts the command: measured against memcached 1.6.18 (a probe
 * found `incr K noreply` silent there and answered here, `flush_all 1 2
 * noreply` the other way round). */
static int unsupported_noreply(const oc_token_t *tok, size_t n)
{
    static const struct {
        const char *cmd;
        size_t min, max;
    } takes[] = {
        {"touch", 3, 4},      {"incr", 3, 4},      {"decr", 3, 4},
        {"flush_all", 2, 3},  {"verbosity", 2, 3}, {"cache_memlimit", 2, 3},
        {"lru", 2, SIZE_MAX},
    };
    if (!tok_is(&tok[n - 1], "noreply"))
        return 0;
    for (size_t i = 0; i < OC_NELEM(takes); i++)
        if (tok_is(&tok[0], takes[i].cmd))
            return n >= takes[i].min && n <= takes[i].max;
    return 0;
}

long oc_proto_base64_decode(const char *in, size_t len, char *out, size_t cap)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; k++) {
            char c = in[i + k];
            int d;
            if (c >= 'A' && c <= 'Z')
                d = c - 'A';
            else if (c >= 'a' && c <= 'z')
                d = c - 'a' + 26;
            else if (c >= '0' && c <= '9')
                d = c - '0' + 52;
            else if (c == '+')
                d = 62;
            else if (c == '/')
                d = 63;
            else if (c == '=' && i + 4 == len && k >= 2)
                d = 0, pad++;
            else
                return -1;
            if (pad && c != '=')
                return -1; /* data after padding */
            v = (v << 6) | (uint32_t)d;
        }
        size_t n = 3 - (size_t)pad;
        if (o + n > cap)
            return -1;
        for (size_t k = 0; k < n; k++)
            out[o++] = (char)((v >> (16 - 8 * k)) & 0xFF);
    }
    return (long)o;
}

/* Meta flags: single letters, some with a token (O<opaque>, M<mode>, and
 * F/T/C/N/... whose values objcached accepts and ignores). */
static oc_status_t parse_meta_flags(const oc_token_t *tok, size_t n, oc_cmd_t *cmd,
                                    char *mode, char *err)
{
    for (size_t i = 0; i < n; i++) {
        const oc_token_t *t = &tok[i];
        char f = t->p[0];
        unsigned bit = 0;
        switch (f) {
        case 'v':
            bit = OC_META_V;
            break;
        case 'f':
            bit = OC_META_F;
            break;
        case 'k':
            bit = OC_META_K;
            break;
        case 's':
            bit = OC_META_S;
            break;
        case 'c':
            bit = OC_META_C;
            break;
        case 't':
            bit = OC_META_T;
            break;
        case 'q':
            bit = OC_META_Q;
            break;
        case 'b':
            bit = OC_META_B;
            break;
        case 'n': /* objcached's own: where the value came from */
            bit = OC_META_N;
            break;
        case 'O':
            bit = OC_META_O;
            cmd->meta.opaque.p = t->p + 1;
            cmd->meta.opaque.len = t->len - 1;
            if (t->len > 33)
                return oc_fail(err, OC_EINVAL, "opaque token too long");
            break;
        case 'M':
            if (t->len != 2)
                return oc_fail(err, OC_EINVAL, "bad mode");
            *mode = t->p[1];
            continue;
        case 'F':
        case 'T':
        case 'N':
        case 'I':
        case 'E':
        case 'S':
            continue; /* accepted, ignored: objcached owns flags and TTLs */
        default:
            return oc_fail(err, OC_EINVAL, "invalid flag");
        }
        if (t->len != 1 && f != 'O')
            return oc_fail(err, OC_EINVAL, "invalid flag");
        cmd->meta.flags |= bit;
    }
    return OC_OK;
}

static oc_status_t parse_meta(const oc_token_t *tok, size_t n, oc_cmd_t *cmd, char *err)
{
    const oc_token_t *c = &tok[0];
    char mode = 'S';
    if (c->p[1] == 'n') {
        cmd->type = OC_CMD_MN;
        return OC_OK;
    }
    if (n < 2)
        return oc_fail(err, OC_EINVAL, "bad command line format");
    cmd->keys = &tok[1];
    cmd->nkeys = 1;
    size_t first_flag = 2;
    if (c->p[1] == 'g') {
        cmd->type = OC_CMD_MG;
    } else if (c->p[1] == 'd') {
        cmd->type = OC_CMD_MD;
    } else {
        cmd->type = OC_CMD_MS;
        oc_token_t len = n > 2 ? tok[2] : (oc_token_t){"", 0};
        if (!parse_u64(&len, &cmd->data_len) || cmd->data_len > INT32_MAX) {
            cmd->type = OC_CMD_UNKNOWN; /* no length: the data cannot be skipped */
            return oc_fail(err, OC_EINVAL, "bad data chunk");
        }
        first_flag = 3;
    }
    oc_status_t st = parse_meta_flags(tok + first_flag, n - first_flag, cmd, &mode, err);
    if (st == OC_OK && cmd->type != OC_CMD_MS && mode != 'S')
        st = oc_fail(err, OC_EINVAL, "invalid flag");
    if (st == OC_OK && cmd->type == OC_CMD_MS && mode != 'S' && mode != 's')
        st = oc_fail(err, OC_EINVAL, "mode not supported");
    cmd->noreply = (cmd->meta.flags & OC_META_Q) != 0;
    return st;
}

static int is_meta(const oc_token_t *t)
{
    return t->len == 2 && t->p[0] == 'm' &&
           (t->p[1] == 'g' || t->p[1] == 's' || t->p[1] == 'd' || t->p[1] == 'n');
}

oc_status_t oc_proto_parse(const char *line, size_t len, oc_token_t *tok, size_t maxtok,
                           oc_cmd_t *cmd, char *err)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->type = OC_CMD_UNKNOWN;
    size_t n = tokenize(line, len, tok, maxtok);
    if (n > maxtok) {
        /* An ms line still says how long its data block is: the caller skips
         * it, or the data would be read as the next command. */
        if (maxtok > 2 && tok_is(&tok[0], "ms") && parse_u64(&tok[2], &cmd->data_len) &&
            cmd->data_len <= INT32_MAX)
            cmd->type = OC_CMD_MS;
        return oc_fail(err, OC_ETOOBIG, "too many tokens");
    }
    if (n == 0)
        return OC_OK;
    const oc_token_t *c = &tok[0];
    if (tok_is(c, "get") || tok_is(c, "gets")) {
        cmd->type = c->len == 4 ? OC_CMD_GETS : OC_CMD_GET;
        cmd->keys = &tok[1];
        cmd->nkeys = n - 1;
        if (n == 1)
            cmd->type = OC_CMD_UNKNOWN; /* memcached answers a bare get: ERROR */
        return OC_OK;
    }
    if (tok_is(c, "version") && n == 1) {
        cmd->type = OC_CMD_VERSION;
    } else if (tok_is(c, "quit") && n == 1) {
        cmd->type = OC_CMD_QUIT;
    } else if (tok_is(c, "stats")) {
        cmd->type = OC_CMD_STATS;
        cmd->keys = &tok[1];
        cmd->nkeys = n - 1;
    } else if (is_meta(c)) {
        return parse_meta(tok, n, cmd, err);
    } else if (tok_is(c, "delete")) {
        /* delete <key> [0] [noreply]: memcached still accepts a zero time.
         * Its noreply holds for 3 and 4 tokens, a bad line's error too
         * (oc_conn drops it); 5 and more are ERROR there. */
        cmd->type = OC_CMD_DELETE;
        cmd->keys = &tok[1];
        cmd->nkeys = 1;
        cmd->noreply = ((n == 3 || n == 4) && tok_is(&tok[n - 1], "noreply"));
        size_t rest = n - 2 - (size_t)cmd->noreply;
        if (n < 2 || rest > 1 || (rest == 1 && !tok_is(&tok[2], "0")))
            return oc_fail(err, OC_EINVAL,
                           "bad command line format.  Usage: delete <key> [noreply]");
    } else if (in_list(c, oc_proto_storage, OC_NELEM(oc_proto_storage))) {
        if (n < 5)
            return oc_fail(err, OC_EINVAL, "bad command line format");
        return parse_storage(tok, n, cmd, err);
    } else if (in_list(c, oc_proto_unsupported, OC_NELEM(oc_proto_unsupported))) {
        cmd->type = OC_CMD_UNSUPPORTED;
        cmd->noreply = unsupported_noreply(tok, n);
    }
    return OC_OK;
}

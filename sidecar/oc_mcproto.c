#include "oc_mcproto.h"

#include <string.h>

/* A byte of a word that is a control character, a space or DEL: the SWAR
 * "has a byte below n" test (bytes >= 0x80, UTF-8, pass), and the same for
 * a zero byte of w ^ 0x7f..7f. Keys are checked on every get, so eight
 * bytes at a time. */
static int word_bad(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t del = w ^ (ones * 0x7f);
    return (((w - ones * 0x21) & ~w) | ((del - ones) & ~del)) & highs ? 1 : 0;
}

int oc_mcp_key_ok(const char *key, size_t len)
{
    return len > 0 && len <= OC_MCP_KEY_MAX && oc_mcp_printable(key, len);
}

int oc_mcp_printable(const char *key, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, key + i, 8);
        if (word_bad(w))
            return 0;
    }
    if (i < len && len >= 8) { /* the tail: the last word, overlapping */
        uint64_t w;
        memcpy(&w, key + len - 8, 8);
        return !word_bad(w);
    }
    for (; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= ' ' || c == 0x7f)
            return 0;
    }
    return 1;
}

/* A decimal number of at most `max`, up to the next space or the end.
 * Up to 19 digits cannot overflow: no check per digit (a division each)
 * on the few numbers of every VALUE line, and one test a digit (a byte
 * below '0' wraps above 9). */
static int parse_u64(const char **p, const char *end, uint64_t max, uint64_t *out)
{
    const char *s = *p;
    if (s >= end) /* no digits; and end - s must not wrap (a review's note) */
        return -1;
    size_t n = (size_t)(end - s), i = 0, fast = n < 19 ? n : 19;
    uint64_t v = 0;
    for (; i < fast; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9)
            break;
        v = v * 10 + d;
    }
    if (i == 0)
        return -1;
    for (; i < n; i++) { /* 20 digits and more */
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9)
            break;
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v > max || (i < n && s[i] != ' '))
        return -1;
    *out = v;
    *p = s + i;
    return 0;
}

static int skip_space(const char **p, const char *end)
{
    if (*p == end || **p != ' ')
        return -1;
    (*p)++;
    return 0;
}

/* VALUE <key> <flags> <bytes> [<cas>] */
static oc_mcp_reply_t parse_value(const char *s, const char *end, oc_mcp_line_t *out)
{
    const char *k = s, *sp = memchr(s, ' ', (size_t)(end - s)); /* vector scan */
    s = sp ? sp : end;
    out->key = k;
    out->klen = (size_t)(s - k);
    uint64_t flags, bytes, cas = 0;
    if (!oc_mcp_key_ok(k, out->klen) || skip_space(&s, end) ||
        parse_u64(&s, end, UINT32_MAX, &flags) || skip_space(&s, end) ||
        parse_u64(&s, end, OC_MCP_VALUE_MAX, &bytes))
        return OC_MCP_BAD;
    if (s < end && (skip_space(&s, end) || parse_u64(&s, end, UINT64_MAX, &cas)))
        return OC_MCP_BAD;
    if (s != end)
        return OC_MCP_BAD;
    out->flags = (uint32_t)flags;
    out->bytes = (uint32_t)bytes;
    out->cas = cas;
    return OC_MCP_VALUE;
}

/* The k<key> return flag of a meta reply (after the k): the key, printable
 * and at most OC_MCP_KEY_MAX bytes, into out->key. */
static int parse_key_flag(const char **p, const char *end, oc_mcp_line_t *out)
{
    const char *k = *p, *e = memchr(k, ' ', (size_t)(end - k));
    if (e == NULL)
        e = end;
    if (!oc_mcp_key_ok(k, (size_t)(e - k)))
        return -1;
    out->key = k;
    out->klen = (size_t)(e - k);
    *p = e;
    return 0;
}

/* VA <bytes> <flags>: of the flags, c, f, W, Z and X are read (X, stale,
 * only ever comes with W or Z); a flag objcached did not ask for is a
 * stream it does not understand. */
static oc_mcp_reply_t parse_va(const char *s, const char *end, oc_mcp_line_t *out)
{
    uint64_t bytes, v;
    if (parse_u64(&s, end, OC_MCP_VALUE_MAX, &bytes))
        return OC_MCP_BAD;
    out->bytes = (uint32_t)bytes;
    while (s < end) {
        if (skip_space(&s, end) || s == end)
            return OC_MCP_BAD;
        char f = *s++;
        if (f == 'c' && parse_u64(&s, end, UINT64_MAX, &v) == 0)
            out->cas = v;
        else if (f == 'f' && parse_u64(&s, end, UINT32_MAX, &v) == 0)
            out->flags = (uint32_t)v;
        else if ((f == 'W' || f == 'Z' || f == 'X') && (s == end || *s == ' '))
            out->win = f == 'W' ? OC_MCP_WIN : f == 'Z' ? OC_MCP_WON_ELSEWHERE : out->win;
        else if (f != 'k' || parse_key_flag(&s, end, out) != 0)
            return OC_MCP_BAD; /* k<key>: the key it answers, asked for */
    }
    return OC_MCP_VA;
}

/* EN [k<key>]: a meta get's miss, with the key it answers when asked. */
static oc_mcp_reply_t parse_en(const char *s, const char *end, oc_mcp_line_t *out)
{
    while (s < end) {
        if (skip_space(&s, end) || s == end || *s++ != 'k' ||
            parse_key_flag(&s, end, out) != 0)
            return OC_MCP_BAD;
    }
    return OC_MCP_EN;
}

/* The return flags after HD, NF, EX or NS: c<cas> is read (ms asks for
 * it); any other flag with a number (memcached 1.6.20 sends s<size> along
 * with c) is skipped. A bare letter or anything else is a stream objcached
 * does not understand. */
static oc_mcp_reply_t parse_meta_flags(const char *s, const char *end,
                                       oc_mcp_reply_t type, oc_mcp_line_t *out)
{
    while (s < end) {
        uint64_t v;
        if (skip_space(&s, end) || s == end)
            return OC_MCP_BAD;
        char f = *s++;
        if (!((f >= 'a' && f <= 'z') || (f >= 'A' && f <= 'Z')) ||
            parse_u64(&s, end, UINT64_MAX, &v))
            return OC_MCP_BAD;
        if (f == 'c') {
            out->cas = v;
            out->has_cas = 1;
        }
        out->n_flags++;
    }
    return type;
}

/* `STAT <name> <value>`, after "STAT ": a printable name, one space, a
 * printable value of one or more words (memcached's `stats` writes
 * versions, paths and numbers there). */
static oc_mcp_reply_t parse_stat(const char *p, const char *end, oc_mcp_line_t *out)
{
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (sp == NULL || sp == p || sp + 1 >= end)
        return OC_MCP_BAD;
    size_t nlen = (size_t)(sp - p), vlen = (size_t)(end - sp - 1);
    if (!oc_mcp_printable(p, nlen) || sp[1] == ' ')
        return OC_MCP_BAD;
    for (size_t i = 0; i < vlen; i++)
        if ((unsigned char)sp[1 + i] < ' ' || sp[1 + i] == 0x7f)
            return OC_MCP_BAD;
    out->key = p;
    out->klen = nlen;
    out->text = sp + 1;
    out->text_len = vlen;
    return OC_MCP_STAT;
}

static int starts(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(s, word, n) == 0 && (len == n || s[n] == ' ');
}

static int equals(const char *s, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(s, word, len) == 0;
}

oc_mcp_reply_t oc_mcp_parse_line(const char *buf, size_t len, oc_mcp_line_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t scan = len < OC_MCP_LINE_MAX ? len : OC_MCP_LINE_MAX;
    const char *nl = memchr(buf, '\n', scan);
    if (nl == NULL)
        return out->type = (len >= OC_MCP_LINE_MAX ? OC_MCP_BAD : OC_MCP_NEED_MORE);
    out->line_len = (size_t)(nl - buf) + 1;
    if (nl == buf || nl[-1] != '\r')
        return out->type = OC_MCP_BAD;
    size_t n = (size_t)(nl - buf) - 1; /* without \r\n */
    /* the line of every found key first */
    if (n > 6 && memcmp(buf, "VALUE ", 6) == 0)
        return out->type = parse_value(buf + 6, buf + n, out);
    if (n > 3 && memcmp(buf, "VA ", 3) == 0)
        return out->type = parse_va(buf + 3, buf + n, out);
    static const struct {
        const char *word;
        oc_mcp_reply_t type;
    } plain[] = {
        {"END", OC_MCP_END},
        {"STORED", OC_MCP_STORED},
        {"NOT_STORED", OC_MCP_NOT_STORED},
        {"EXISTS", OC_MCP_EXISTS},
        {"NOT_FOUND", OC_MCP_NOT_FOUND},
        {"DELETED", OC_MCP_DELETED},
        {"OK", OC_MCP_OK},
    };
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (equals(buf, n, plain[i].word))
            return out->type = plain[i].type;
    if (starts(buf, n, "EN"))
        return out->type = parse_en(buf + 2, buf + n, out);
    /* md's and ms's answers */
    static const struct {
        const char *word;
        oc_mcp_reply_t type;
    } meta[] = {
        {"HD", OC_MCP_HD}, {"NF", OC_MCP_NF}, {"EX", OC_MCP_EX}, {"NS", OC_MCP_NS}};
    for (size_t i = 0; i < sizeof(meta) / sizeof(meta[0]); i++)
        if (starts(buf, n, meta[i].word))
            return out->type = parse_meta_flags(buf + 2, buf + n, meta[i].type, out);
    if (n > 5 && memcmp(buf, "STAT ", 5) == 0)
        return out->type = parse_stat(buf + 5, buf + n, out);
    if (starts(buf, n, "VERSION"))
        return out->type = OC_MCP_VERSION;
    /* `ERROR <text>`: memcached's refusal of a connection over its -c
     * ("ERROR Too many open connections"), sent before it closes it */
    if (starts(buf, n, "ERROR") || starts(buf, n, "CLIENT_ERROR") ||
        starts(buf, n, "SERVER_ERROR")) {
        out->text = buf;
        out->text_len = n;
        return out->type = OC_MCP_ERROR;
    }
    return out->type = OC_MCP_BAD;
}

/* A decimal number of at most 19 digits (no sign, no overflow). */
static int stat_number(const char *v, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return 0;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 1;
}

void oc_mcp_proc_stat(oc_mcp_proc_t *p, const char *name, size_t nlen, const char *val,
                      size_t vlen)
{
    static const struct {
        const char *name;
        unsigned bit;
        size_t off;
    } fields[] = {{"pid", 1, offsetof(oc_mcp_proc_t, pid)},
                  {"time", 2, offsetof(oc_mcp_proc_t, time)},
                  {"uptime", 4, offsetof(oc_mcp_proc_t, uptime)}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (nlen != strlen(fields[i].name) || memcmp(name, fields[i].name, nlen) != 0)
            continue;
        uint64_t v;
        if (stat_number(val, vlen, &v)) {
            memcpy((char *)p + fields[i].off, &v, sizeof(v));
            p->seen |= fields[i].bit;
        }
        return;
    }
}

int oc_mcp_proc_known(const oc_mcp_proc_t *p)
{
    return p->seen == 7 && p->time >= p->uptime;
}

int oc_mcp_proc_same(const oc_mcp_proc_t *a, const oc_mcp_proc_t *b)
{
    return oc_mcp_proc_known(a) && oc_mcp_proc_known(b) && a->pid == b->pid &&
           a->time - a->uptime == b->time - b->uptime;
}

/* Decimal digits of v, written backwards from end; returns the start. */
static char *format_u64(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    char *s = format_u64(tmp + sizeof(tmp), v);
    return oc_mcp_put(p, s, (size_t)(tmp + sizeof(tmp) - s));
}

size_t oc_mcp_md_size(size_t klen)
{
    /* "md ", key, " C", 20 digits, "\r\n" */
    return 3 + klen + 2 + 20 + 2;
}

size_t oc_mcp_format_md(char *buf, const char *key, size_t klen, uint64_t cas)
{
    char *p = oc_mcp_put(buf, "md ", 3);
    p = oc_mcp_put(p, key, klen);
    p = oc_mcp_put(p, " C", 2);
    p = put_u64(p, cas);
    p = oc_mcp_put(p, "\r\n", 2);
    return (size_t)(p - buf);
}

size_t oc_mcp_mg_size(size_t klen)
{
    /* "mg ", key, " v c f k", " N" ttl, " R" seconds, "\r\n" */
    return 3 + klen + 8 + 2 + 10 + 2 + 10 + 2;
}

size_t oc_mcp_format_mg_r(char *buf, const char *key, size_t klen, uint32_t ttl,
                          uint32_t refresh_s)
{
    char *p = oc_mcp_put(buf, "mg ", 3);
    p = oc_mcp_put(p, key, klen);
    p = oc_mcp_put(p, " v c f k", 8);
    if (ttl > 0) {
        p = oc_mcp_put(p, " N", 2);
        p = put_u64(p, ttl);
    }
    if (refresh_s > 0) {
        p = oc_mcp_put(p, " R", 2);
        p = put_u64(p, refresh_s);
    }
    return (size_t)(oc_mcp_put(p, "\r\n", 2) - buf);
}

size_t oc_mcp_format_mg(char *buf, const char *key, size_t klen, uint32_t ttl)
{
    return oc_mcp_format_mg_r(buf, key, klen, ttl, 0);
}

size_t oc_mcp_ms_size(size_t klen, size_t vlen)
{
    /* "ms ", key, " ", bytes (20), " c T", exptime (10), " F", flags (10),
     * " C", cas (20) (or " ME"), "\r\n", data, "\r\n" */
    return 3 + klen + 1 + 20 + 4 + 10 + 2 + 10 + 2 + 20 + 2 + vlen + 2;
}

size_t oc_mcp_format_ms(char *buf, const char *key, size_t klen, uint32_t flags,
                        uint32_t exptime, const char *val, size_t vlen, uint64_t cas)
{
    char *p = oc_mcp_put(buf, "ms ", 3);
    p = oc_mcp_put(p, key, klen);
    *p++ = ' ';
    p = put_u64(p, vlen);
    p = oc_mcp_put(p, " c T", 4);
    p = put_u64(p, exptime);
    p = oc_mcp_put(p, " F", 2);
    p = put_u64(p, flags);
    if (cas) {
        p = oc_mcp_put(p, " C", 2);
        p = put_u64(p, cas);
    } else {
        p = oc_mcp_put(p, " ME", 3);
    }
    p = oc_mcp_put(p, "\r\n", 2);
    p = oc_mcp_put(p, val, vlen);
    return (size_t)(oc_mcp_put(p, "\r\n", 2) - buf);
}

size_t oc_mcp_store_size(size_t klen, size_t vlen)
{
    /* verb (<= 3) + 5 spaces + flags (10) + exptime (10) + bytes (20) + cas (20) */
    return 3 + klen + 5 + 10 + 10 + 20 + 20 + 2 + vlen + 2;
}

size_t oc_mcp_format_store(char *buf, const char *verb, const char *key, size_t klen,
                           uint32_t flags, uint32_t exptime, const char *val, size_t vlen,
                           uint64_t cas)
{
    char *p = oc_mcp_put(buf, verb, strlen(verb));
    *p++ = ' ';
    p = oc_mcp_put(p, key, klen);
    *p++ = ' ';
    p = put_u64(p, flags);
    *p++ = ' ';
    p = put_u64(p, exptime);
    *p++ = ' ';
    p = put_u64(p, vlen);
    if (strcmp(verb, "cas") == 0) {
        *p++ = ' ';
        p = put_u64(p, cas);
    }
    *p++ = '\r';
    *p++ = '\n';
    p = oc_mcp_put(p, val, vlen);
    *p++ = '\r';
    *p++ = '\n';
    return (size_t)(p - buf);
}

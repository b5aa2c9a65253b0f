#include "objcache_parse.h"

#include <stdint.h>
#include <string.h>

#define OBJCACHE_PARSE_MAX_TOK 4

typedef struct parse_tok {
    const char *p;
    size_t len;
} parse_tok_t;

void objcache_parse_init(objcache_parse_t *p, objcache_reply_kind_t kind,
                         const char *const *keys, size_t nkeys,
                         objcache_parse_value_t *vals, size_t max_reply)
{
    memset(p, 0, sizeof(*p));
    p->kind = kind;
    p->keys = keys;
    p->nkeys = nkeys;
    p->vals = vals;
    p->max_reply = max_reply;
    p->status = OBJCACHE_OK;
    p->error = OBJCACHE_OK;
    for (size_t i = 0; i < nkeys && vals != NULL; i++) {
        vals[i].off = 0;
        vals[i].len = 0;
        vals[i].found = 0;
    }
}

static objcache_parse_result_t parse_fail(objcache_parse_t *p, objcache_status_t st,
                                          const char *why)
{
    p->error = st;
    p->why = why;
    p->err_off = p->pos;
    return OBJCACHE_PARSE_ERROR;
}

/* Ask for more bytes, unless the reply could then no longer fit. */
static objcache_parse_result_t parse_more(objcache_parse_t *p, size_t need)
{
    if (need > p->max_reply)
        return parse_fail(p, OBJCACHE_ETOOBIG, "reply larger than max_reply_bytes");
    p->need = need;
    return OBJCACHE_PARSE_INCOMPLETE;
}

static const char *line_char_fault(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\0')
            return "NUL byte in a reply line";
        if (c == '\r')
            return "\\r inside a reply line";
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return "control character in a reply line";
    }
    return NULL;
}

/*
 * The line at p->pos: COMPLETE with *n its length without "\r\n", INCOMPLETE,
 * or ERROR if it is malformed.
 */
static objcache_parse_result_t parse_line(objcache_parse_t *p, const char *buf,
                                          size_t len, size_t *n)
{
    size_t avail = len - p->pos;
    if (avail == 0) /* nothing yet (buf may even be NULL) */
        return parse_more(p, len + 1);
    const char *s = buf + p->pos;
    size_t room = p->max_reply - p->pos; /* pos <= max_reply always */
    size_t scan = avail < OBJCACHE_PARSE_MAX_LINE ? avail : OBJCACHE_PARSE_MAX_LINE;
    scan = scan < room ? scan : room;
    const char *nl = memchr(s, '\n', scan);
    if (nl == NULL) {
        if (avail >= OBJCACHE_PARSE_MAX_LINE)
            return parse_fail(p, OBJCACHE_EPROTO, "reply line too long");
        return parse_more(p, len + 1);
    }
    size_t end = (size_t)(nl - s);
    if (end == 0 || s[end - 1] != '\r')
        return parse_fail(p, OBJCACHE_EPROTO, "bare \\n without \\r");
    const char *fault = line_char_fault(s, end - 1);
    if (fault != NULL)
        return parse_fail(p, OBJCACHE_EPROTO, fault);
    *n = end - 1;
    return OBJCACHE_PARSE_COMPLETE;
}

static int line_is(const char *s, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n == w && memcmp(s, word, w) == 0;
}

static int line_starts(const char *s, size_t n, const char *prefix)
{
    size_t w = strlen(prefix);
    return n >= w && memcmp(s, prefix, w) == 0;
}

/* `WORD` or `WORD <text>`. */
static int line_is_word(const char *s, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n >= w && memcmp(s, word, w) == 0 && (n == w || s[w] == ' ');
}

/* Consume the line as the reply's end with status st. */
static objcache_parse_result_t parse_done(objcache_parse_t *p, size_t n,
                                          objcache_status_t st)
{
    p->status = st;
    p->msg_off = p->pos;
    p->msg_len = n;
    p->pos += n + 2;
    p->need = 0;
    return OBJCACHE_PARSE_COMPLETE;
}

/* ERROR / CLIENT_ERROR / SERVER_ERROR end any reply: 1 if the line is one. */
static int parse_error_line(objcache_parse_t *p, const char *s, size_t n)
{
    objcache_status_t st;
    if (line_is_word(s, n, "ERROR"))
        st = OBJCACHE_ECOMMAND;
    else if (line_is_word(s, n, "CLIENT_ERROR"))
        st = OBJCACHE_ECLIENT;
    else if (line_is_word(s, n, "SERVER_ERROR"))
        st = OBJCACHE_ESERVER;
    else
        return 0;
    parse_done(p, n, st);
    return 1;
}

/* Split on single spaces; -1 on an empty token or more than max tokens. */
static int parse_split(const char *s, size_t n, parse_tok_t *tok, int max)
{
    int nt = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ' ')
            continue;
        if (i == start || nt == max)
            return -1;
        tok[nt].p = s + start;
        tok[nt].len = i - start;
        nt++;
        start = i + 1;
    }
    return nt;
}

/* Plain decimal, 1..20 digits, no sign, no overflow. */
static int parse_u64(const parse_tok_t *t, uint64_t *out)
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

/* The first key at or after next_key equal to t, or nkeys. */
static size_t parse_find_key(const objcache_parse_t *p, const parse_tok_t *t)
{
    for (size_t i = p->next_key; i < p->nkeys; i++) {
        const char *k = p->keys[i];
        if (strncmp(k, t->p, t->len) == 0 && k[t->len] == '\0')
            return i;
    }
    return p->nkeys;
}

/* `VALUE <key> <flags> <bytes>[ <cas>]` (n bytes at pos), then the data. */
static objcache_parse_result_t parse_value(objcache_parse_t *p, const char *buf,
                                           size_t len, size_t n)
{
    parse_tok_t t[OBJCACHE_PARSE_MAX_TOK];
    uint64_t flags, bytes, cas;
    int nt = parse_split(buf + p->pos + 6, n - 6, t, OBJCACHE_PARSE_MAX_TOK);
    if (nt != 3 && nt != 4)
        return parse_fail(p, OBJCACHE_EPROTO, "bad VALUE line");
    if (!parse_u64(&t[1], &flags) || flags > UINT32_MAX)
        return parse_fail(p, OBJCACHE_EPROTO, "bad flags in VALUE line");
    if (!parse_u64(&t[2], &bytes))
        return parse_fail(p, OBJCACHE_EPROTO, "bad length in VALUE line");
    if (nt == 4 && !parse_u64(&t[3], &cas))
        return parse_fail(p, OBJCACHE_EPROTO, "bad cas in VALUE line");
    size_t k = parse_find_key(p, &t[0]);
    if (k == p->nkeys)
        return parse_fail(p, OBJCACHE_EPROTO,
                          "VALUE for a key not asked for, or out of order");
    size_t data = p->pos + n + 2;
    if (p->max_reply < 2 || bytes > p->max_reply - 2 || data > p->max_reply - 2 - bytes)
        return parse_fail(p, OBJCACHE_ETOOBIG, "value larger than max_reply_bytes");
    size_t end = data + (size_t)bytes;
    if (len > end && buf[end] != '\r')
        return parse_fail(p, OBJCACHE_EPROTO, "data block not followed by \\r\\n");
    if (len < end + 2)
        return parse_more(p, end + 2);
    if (buf[end] != '\r' || buf[end + 1] != '\n')
        return parse_fail(p, OBJCACHE_EPROTO, "data block not followed by \\r\\n");
    if (memchr(buf + data, '\0', (size_t)bytes) != NULL)
        return parse_fail(p, OBJCACHE_EPROTO, "NUL byte in a value");
    p->vals[k].off = data;
    p->vals[k].len = (size_t)bytes;
    p->vals[k].found = 1;
    p->next_key = k + 1;
    p->pos = end + 2;
    return OBJCACHE_PARSE_COMPLETE;
}

static objcache_parse_result_t parse_get(objcache_parse_t *p, const char *buf, size_t len)
{
    for (;;) {
        size_t n = 0;
        objcache_parse_result_t r = parse_line(p, buf, len, &n);
        if (r != OBJCACHE_PARSE_COMPLETE)
            return r;
        const char *s = buf + p->pos;
        if (line_is(s, n, "END"))
            return parse_done(p, n, OBJCACHE_OK);
        if (line_starts(s, n, "VALUE ")) {
            r = parse_value(p, buf, len, n);
            if (r != OBJCACHE_PARSE_COMPLETE)
                return r;
            continue;
        }
        if (parse_error_line(p, s, n))
            return OBJCACHE_PARSE_COMPLETE;
        return parse_fail(p, OBJCACHE_EPROTO, "unexpected line in a get reply");
    }
}

/* `STAT <name> <value>`: the name has no space and is not empty. */
static int stat_line_ok(const char *s, size_t n)
{
    if (!line_starts(s, n, "STAT "))
        return 0;
    const char *name = s + 5;
    const char *sp = memchr(name, ' ', n - 5);
    return sp != NULL && sp != name;
}

static objcache_parse_result_t parse_stats(objcache_parse_t *p, const char *buf,
                                           size_t len)
{
    for (;;) {
        size_t n = 0;
        objcache_parse_result_t r = parse_line(p, buf, len, &n);
        if (r != OBJCACHE_PARSE_COMPLETE)
            return r;
        const char *s = buf + p->pos;
        if (line_is(s, n, "END"))
            return parse_done(p, n, OBJCACHE_OK);
        if (stat_line_ok(s, n)) {
            p->nstats++;
            p->pos += n + 2;
            continue;
        }
        if (parse_error_line(p, s, n))
            return OBJCACHE_PARSE_COMPLETE;
        return parse_fail(p, OBJCACHE_EPROTO, "unexpected line in a stats reply");
    }
}

typedef struct parse_word {
    const char *word;
    objcache_status_t st;
} parse_word_t;

static const parse_word_t parse_store_words[] = {
    {"STORED", OBJCACHE_OK},     {"NOT_STORED", OBJCACHE_NOT_STORED},
    {"EXISTS", OBJCACHE_EXISTS}, {"NOT_FOUND", OBJCACHE_NOT_FOUND},
    {NULL, OBJCACHE_OK},
};

static const parse_word_t parse_delete_words[] = {
    {"DELETED", OBJCACHE_OK},
    {"NOT_FOUND", OBJCACHE_NOT_FOUND},
    {NULL, OBJCACHE_OK},
};

/* A one-line reply: a word from the table, VERSION <text>, or an error line. */
static objcache_parse_result_t parse_one_line(objcache_parse_t *p, const char *buf,
                                              size_t len, const parse_word_t *words)
{
    size_t n = 0;
    objcache_parse_result_t r = parse_line(p, buf, len, &n);
    if (r != OBJCACHE_PARSE_COMPLETE)
        return r;
    const char *s = buf + p->pos;
    for (size_t i = 0; words != NULL && words[i].word != NULL; i++)
        if (line_is(s, n, words[i].word))
            return parse_done(p, n, words[i].st);
    if (p->kind == OBJCACHE_REPLY_VERSION && line_starts(s, n, "VERSION ") && n > 8) {
        parse_done(p, n, OBJCACHE_OK);
        p->msg_off += 8;
        p->msg_len -= 8;
        return OBJCACHE_PARSE_COMPLETE;
    }
    if (parse_error_line(p, s, n))
        return OBJCACHE_PARSE_COMPLETE;
    return parse_fail(p, OBJCACHE_EPROTO, "unexpected reply line");
}

objcache_parse_result_t objcache_parse_feed(objcache_parse_t *p, const char *buf,
                                            size_t len)
{
    if (p->error != OBJCACHE_OK)
        return OBJCACHE_PARSE_ERROR;
    if (len < p->pos)
        return parse_fail(p, OBJCACHE_EPROTO, "reply buffer shrank");
    switch (p->kind) {
    case OBJCACHE_REPLY_GET:
        return parse_get(p, buf, len);
    case OBJCACHE_REPLY_STATS:
        return parse_stats(p, buf, len);
    case OBJCACHE_REPLY_STORE:
        return parse_one_line(p, buf, len, parse_store_words);
    case OBJCACHE_REPLY_DELETE:
        return parse_one_line(p, buf, len, parse_delete_words);
    case OBJCACHE_REPLY_VERSION:
        return parse_one_line(p, buf, len, NULL);
    }
    return parse_fail(p, OBJCACHE_EPROTO, "unknown reply kind");
}

int objcache_parse_next_stat(const char *buf, size_t len, size_t *off, size_t *name_off,
                             size_t *name_len, size_t *value_off, size_t *value_len)
{
    if (*off >= len)
        return 0;
    const char *s = buf + *off;
    const char *nl = memchr(s, '\n', len - *off);
    if (nl == NULL || nl == s || nl[-1] != '\r')
        return 0;
    size_t n = (size_t)(nl - s) - 1;
    if (!stat_line_ok(s, n))
        return 0;
    const char *sp = memchr(s + 5, ' ', n - 5);
    *name_off = *off + 5;
    *name_len = (size_t)(sp - (s + 5));
    *value_off = (size_t)(sp + 1 - buf);
    *value_len = n - (size_t)(sp + 1 - s);
    *off += n + 2;
    return 1;
}

/*
 * The handle: one connection, one reply buffer, one request at a time.
 * Public contract in objcache.h.
 */
#include "objcache.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "objcache_addr.h"
#include "objcache_net.h"
#include "objcache_parse.h"
#include "objcache_status.h"

#define OBJCACHE_BUF_MIN  16384
#define OBJCACHE_KEY_ECHO 64 /* bytes of a key quoted in a message */

struct objcache {
    objcache_addr_t addr;
    objcache_options_t opts;
    int fd;         /* -1 when not connected */
    char *buf;      /* the replies of the current call, back to back */
    size_t buf_len; /* bytes in buf */
    size_t buf_cap; /* bytes allocated; never above max_reply_bytes */
    char *req;      /* the get line(s) being built */
    size_t req_cap;
    const char **sent;            /* get_multi: the keys sent, in order */
    size_t *sent_idx;             /* get_multi: sent[j] is keys[sent_idx[j]] */
    objcache_parse_value_t *vals; /* get_multi: where sent[j] was found */
    size_t scratch_cap;           /* entries in sent, sent_idx and vals */
    objcache_stat_t *stats;       /* stats: the pairs handed out */
    size_t stats_cap;
    char errmsg[OBJCACHE_ERRLEN]; /* the last call's detail, "" after success */
};

void objcache_options_init(objcache_options_t *o)
{
    o->connect_timeout_ms = 1000;
    o->io_timeout_ms = 6000;
    o->max_reply_bytes = (size_t)64 << 20;
    o->max_keys_per_get = 1024;
    o->max_line_bytes = 65536;
}

static objcache_status_t options_check(const objcache_options_t *o, char *err)
{
    if (o->connect_timeout_ms == 0 || o->io_timeout_ms == 0)
        return objcache_fail(err, OBJCACHE_EINVAL, "timeouts must be at least 1 ms");
    if (o->max_reply_bytes < 1024)
        return objcache_fail(err, OBJCACHE_EINVAL,
                             "max_reply_bytes must be at least 1024");
    if (o->max_keys_per_get == 0)
        return objcache_fail(err, OBJCACHE_EINVAL, "max_keys_per_get must be at least 1");
    if (o->max_line_bytes < OBJCACHE_KEY_MAX + 8 || o->max_line_bytes > OBJCACHE_LINE_MAX)
        return objcache_fail(err, OBJCACHE_EINVAL,
                             "max_line_bytes must be between %d and %d",
                             OBJCACHE_KEY_MAX + 8, OBJCACHE_LINE_MAX);
    return OBJCACHE_OK;
}

objcache_status_t objcache_new(objcache_t **out, const char *addr,
                               const objcache_options_t *opts, char *err)
{
    objcache_options_t defaults;
    objcache_status_t st;
    objcache_t *h = NULL;
    *out = NULL;
    if (opts == NULL) {
        objcache_options_init(&defaults);
        opts = &defaults;
    }
    if ((st = options_check(opts, err)) != OBJCACHE_OK)
        goto fail;
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        st = objcache_fail(err, OBJCACHE_ENOMEM, "out of memory");
        goto fail;
    }
    h->fd = -1;
    h->opts = *opts;
    if ((st = objcache_addr_parse(addr, &h->addr, err)) != OBJCACHE_OK)
        goto fail;
    *out = h;
    return OBJCACHE_OK;
fail:
    free(h);
    return st;
}

void objcache_close(objcache_t *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}

void objcache_free(objcache_t *h)
{
    if (h == NULL)
        return;
    objcache_close(h);
    free(h->buf);
    free(h->req);
    free(h->sent);
    free(h->sent_idx);
    free(h->vals);
    free(h->stats);
    free(h);
}

const char *objcache_errmsg(const objcache_t *h)
{
    return h->errmsg;
}

objcache_status_t objcache_check_key(const char *key)
{
    if (key == NULL)
        return OBJCACHE_EINVAL;
    size_t n = strlen(key);
    const char *colon = memchr(key, ':', n);
    if (n > OBJCACHE_KEY_MAX || colon == NULL || colon == key || colon + 1 == key + n)
        return OBJCACHE_EINVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
            return OBJCACHE_EINVAL;
    return OBJCACHE_OK;
}

static objcache_status_t bad_key(objcache_t *h, const char *key)
{
    if (key == NULL)
        return objcache_fail(h->errmsg, OBJCACHE_EINVAL, "key is NULL");
    /* errmsg is one line: a control character of the key is shown as '?'. */
    char echo[OBJCACHE_KEY_ECHO + 1];
    size_t n = 0;
    for (; n < OBJCACHE_KEY_ECHO && key[n] != '\0'; n++)
        echo[n] = (unsigned char)key[n] < 0x20 || key[n] == 0x7f ? '?' : key[n];
    echo[n] = '\0';
    return objcache_fail(h->errmsg, OBJCACHE_EINVAL,
                         "invalid key '%s': expected Model:id, at most %d bytes, "
                         "no spaces or control characters",
                         echo, OBJCACHE_KEY_MAX);
}

/* Start a call: forget the last one, and be connected. */
static objcache_status_t call_begin(objcache_t *h)
{
    h->errmsg[0] = '\0';
    h->buf_len = 0;
    if (h->fd >= 0 && !objcache_net_idle_ok(h->fd))
        objcache_close(h); /* closed by the server meanwhile, or out of step */
    if (h->fd >= 0)
        return OBJCACHE_OK;
    int64_t deadline = objcache_net_now_ms() + h->opts.connect_timeout_ms;
    objcache_status_t st = objcache_net_connect(&h->addr, deadline, &h->fd, h->errmsg);
    if (st == OBJCACHE_ETIMEOUT)
        objcache_fail(h->errmsg, st, "connect %s: timed out after %u ms", h->addr.text,
                      h->opts.connect_timeout_ms);
    return st;
}

objcache_status_t objcache_connect(objcache_t *h)
{
    return call_begin(h);
}

/* The stream can no longer be trusted: close it; the next call reconnects. */
static objcache_status_t conn_fail(objcache_t *h, objcache_status_t st)
{
    objcache_close(h);
    if (st == OBJCACHE_ETIMEOUT)
        objcache_fail(h->errmsg, st, "no complete reply within %u ms",
                      h->opts.io_timeout_ms);
    return st;
}

/* Room for at least `want` bytes in buf (want <= max_reply_bytes). */
static objcache_status_t buf_reserve(objcache_t *h, size_t want)
{
    if (want <= h->buf_cap)
        return OBJCACHE_OK;
    if (want > h->opts.max_reply_bytes)
        return objcache_fail(h->errmsg, OBJCACHE_ETOOBIG, "reply over %zu bytes",
                             h->opts.max_reply_bytes);
    size_t cap = h->buf_cap < OBJCACHE_BUF_MIN ? OBJCACHE_BUF_MIN : h->buf_cap;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (cap > h->opts.max_reply_bytes)
        cap = h->opts.max_reply_bytes;
    char *nb = realloc(h->buf, cap);
    if (nb == NULL)
        return objcache_fail(h->errmsg, OBJCACHE_ENOMEM,
                             "out of memory for a %zu-byte reply", want);
    h->buf = nb;
    h->buf_cap = cap;
    return OBJCACHE_OK;
}

/* Read into buf until p has a complete reply starting at buf[base]. */
static objcache_status_t read_reply(objcache_t *h, objcache_parse_t *p, size_t base,
                                    int64_t deadline)
{
    for (;;) {
        objcache_parse_result_t r =
            objcache_parse_feed(p, h->buf + base, h->buf_len - base);
        if (r == OBJCACHE_PARSE_ERROR) {
            objcache_fail(h->errmsg, p->error, "bad reply at byte %zu: %s", p->err_off,
                          p->why);
            return conn_fail(h, p->error);
        }
        if (r == OBJCACHE_PARSE_COMPLETE)
            break;
        /* The parser asks for more than it has (need > len), so there is room. */
        objcache_status_t st = buf_reserve(h, base + p->need);
        if (st != OBJCACHE_OK)
            return conn_fail(h, st);
        size_t got = 0;
        st = objcache_net_recv(h->fd, h->buf + h->buf_len, h->buf_cap - h->buf_len, &got,
                               deadline, h->errmsg);
        if (st != OBJCACHE_OK)
            return conn_fail(h, st);
        h->buf_len += got;
    }
    if (base + p->pos != h->buf_len) {
        objcache_fail(h->errmsg, OBJCACHE_EPROTO,
                      "bad reply: %zu unexpected bytes after it",
                      h->buf_len - base - p->pos);
        return conn_fail(h, OBJCACHE_EPROTO);
    }
    return OBJCACHE_OK;
}

/*
 * Send iov and read the reply into buf after what is there. OK means a
 * complete reply: p->status says what the server answered, and unless that
 * is OK, errmsg is the server's line (NOT_STORED, SERVER_ERROR ...).
 */
static objcache_status_t exchange(objcache_t *h, struct iovec *iov, int iovcnt,
                                  objcache_parse_t *p, int64_t deadline)
{
    size_t base = h->buf_len;
    objcache_status_t st = objcache_net_sendv(h->fd, iov, iovcnt, deadline, h->errmsg);
    if (st != OBJCACHE_OK)
        return conn_fail(h, st);
    if ((st = read_reply(h, p, base, deadline)) != OBJCACHE_OK)
        return st;
    if (p->status != OBJCACHE_OK) /* the server's own line */
        objcache_fail(h->errmsg, p->status, "%.*s", (int)p->msg_len,
                      h->buf + base + p->msg_off);
    return OBJCACHE_OK;
}

/* A one-line command: send it and parse the reply as kind. */
static objcache_status_t simple_call(objcache_t *h, struct iovec *iov, int iovcnt,
                                     objcache_reply_kind_t kind, objcache_parse_t *p)
{
    objcache_status_t st = call_begin(h);
    if (st != OBJCACHE_OK)
        return st;
    objcache_parse_init(p, kind, NULL, 0, NULL, h->opts.max_reply_bytes);
    st = exchange(h, iov, iovcnt, p, objcache_net_now_ms() + h->opts.io_timeout_ms);
    return st != OBJCACHE_OK ? st : p->status;
}

objcache_status_t objcache_push(objcache_t *h, const char *key, const char *json,
                                size_t len)
{
    char line[OBJCACHE_KEY_MAX + 64];
    objcache_parse_t p;
    if (objcache_check_key(key) != OBJCACHE_OK)
        return bad_key(h, key);
    if (json == NULL && len > 0)
        return objcache_fail(h->errmsg, OBJCACHE_EINVAL, "json is NULL");
    int n = snprintf(line, sizeof(line), "set %s 0 0 %zu\r\n", key, len);
    struct iovec iov[3] = {
        {line, (size_t)n}, {(void *)(uintptr_t)json, len}, {"\r\n", 2}};
    if (json == NULL)
        iov[1].iov_base = "";
    return simple_call(h, iov, 3, OBJCACHE_REPLY_STORE, &p);
}

objcache_status_t objcache_tombstone(objcache_t *h, const char *key)
{
    char line[OBJCACHE_KEY_MAX + 16];
    objcache_parse_t p;
    if (objcache_check_key(key) != OBJCACHE_OK)
        return bad_key(h, key);
    int n = snprintf(line, sizeof(line), "delete %s\r\n", key);
    struct iovec iov[1] = {{line, (size_t)n}};
    return simple_call(h, iov, 1, OBJCACHE_REPLY_DELETE, &p);
}

objcache_status_t objcache_version(objcache_t *h, const char **version)
{
    objcache_parse_t p;
    struct iovec iov[1] = {{"version\r\n", 9}};
    *version = NULL;
    objcache_status_t st = simple_call(h, iov, 1, OBJCACHE_REPLY_VERSION, &p);
    if (st != OBJCACHE_OK)
        return st;
    h->buf[p.msg_off + p.msg_len] = '\0'; /* was the '\r' */
    *version = h->buf + p.msg_off;
    return OBJCACHE_OK;
}

static objcache_status_t stats_fill(objcache_t *h, const objcache_parse_t *p)
{
    if (p->nstats > h->stats_cap) {
        objcache_stat_t *ns = realloc(h->stats, p->nstats * sizeof(*ns));
        if (ns == NULL)
            return objcache_fail(h->errmsg, OBJCACHE_ENOMEM, "out of memory");
        h->stats = ns;
        h->stats_cap = p->nstats;
    }
    size_t off = 0, no, nl, vo, vl;
    for (size_t i = 0; i < p->nstats; i++) {
        if (!objcache_parse_next_stat(h->buf, h->buf_len, &off, &no, &nl, &vo, &vl))
            return objcache_fail(h->errmsg, OBJCACHE_EPROTO,
                                 "bad reply: lost a STAT line");
        h->buf[no + nl] = '\0'; /* the space after the name */
        h->buf[vo + vl] = '\0'; /* the '\r' */
        h->stats[i].name = h->buf + no;
        h->stats[i].value = h->buf + vo;
    }
    return OBJCACHE_OK;
}

objcache_status_t objcache_stats(objcache_t *h, const objcache_stat_t **stats,
                                 size_t *nstats)
{
    objcache_parse_t p;
    struct iovec iov[1] = {{"stats\r\n", 7}};
    *stats = NULL;
    *nstats = 0;
    objcache_status_t st = simple_call(h, iov, 1, OBJCACHE_REPLY_STATS, &p);
    if (st == OBJCACHE_OK)
        st = stats_fill(h, &p);
    if (st != OBJCACHE_OK)
        return st;
    *stats = h->stats;
    *nstats = p.nstats;
    return OBJCACHE_OK;
}

/* get_multi's per-call arrays, grown to the largest call; kept by the handle. */
static objcache_status_t scratch_reserve(objcache_t *h, size_t n)
{
    if (n <= h->scratch_cap)
        return OBJCACHE_OK;
    if (n > SIZE_MAX / sizeof(objcache_parse_value_t))
        return objcache_fail(h->errmsg, OBJCACHE_ENOMEM, "too many keys");
    const char **ns = realloc(h->sent, n * sizeof(*ns));
    if (ns != NULL)
        h->sent = ns;
    size_t *ni = realloc(h->sent_idx, n * sizeof(*ni));
    if (ni != NULL)
        h->sent_idx = ni;
    objcache_parse_value_t *nv = realloc(h->vals, n * sizeof(*nv));
    if (nv != NULL)
        h->vals = nv;
    if (ns == NULL || ni == NULL || nv == NULL)
        return objcache_fail(h->errmsg, OBJCACHE_ENOMEM, "out of memory for %zu keys", n);
    h->scratch_cap = n;
    return OBJCACHE_OK;
}

static objcache_status_t req_reserve(objcache_t *h, size_t n)
{
    if (n <= h->req_cap)
        return OBJCACHE_OK;
    char *nr = realloc(h->req, n);
    if (nr == NULL)
        return objcache_fail(h->errmsg, OBJCACHE_ENOMEM, "out of memory");
    h->req = nr;
    h->req_cap = n;
    return OBJCACHE_OK;
}

/*
 * Build `get k...\r\n` in req from sent[from..], as many keys as the limits
 * allow (at least one). Returns the end of the batch; *len is the line's.
 */
static size_t batch_build(objcache_t *h, size_t from, size_t nsent, size_t *len)
{
    size_t n = 3, to = from;
    memcpy(h->req, "get", 3);
    while (to < nsent && to - from < h->opts.max_keys_per_get) {
        size_t k = strlen(h->sent[to]);
        if (to > from && n + 1 + k + 2 > h->opts.max_line_bytes)
            break;
        h->req[n++] = ' ';
        memcpy(h->req + n, h->sent[to], k);
        n += k;
        to++;
    }
    memcpy(h->req + n, "\r\n", 2);
    *len = n + 2;
    return to;
}

/* Ask for sent[0..nsent) with as many get commands as it takes. */
static objcache_status_t get_batches(objcache_t *h, size_t nsent, objcache_item_t *items)
{
    int64_t deadline = objcache_net_now_ms() + h->opts.io_timeout_ms;
    size_t from = 0;
    while (from < nsent) {
        size_t len = 0, to = batch_build(h, from, nsent, &len);
        objcache_parse_t p;
        objcache_parse_init(&p, OBJCACHE_REPLY_GET, h->sent + from, to - from,
                            h->vals + from, h->opts.max_reply_bytes - h->buf_len);
        struct iovec iov[1] = {{h->req, len}};
        size_t base = h->buf_len;
        /* The first refused batch's line stays errmsg: its keys come first. */
        char first[OBJCACHE_ERRLEN];
        memcpy(first, h->errmsg, sizeof(first));
        objcache_status_t st = exchange(h, iov, 1, &p, deadline);
        if (st == OBJCACHE_OK && first[0] != '\0')
            memcpy(h->errmsg, first, sizeof(first));
        if (st != OBJCACHE_OK) {
            /* The whole call failed: the batches before this one too (no
             * item may say OK without a value; their bytes may be gone with
             * the connection). */
            for (size_t j = 0; j < nsent; j++)
                items[h->sent_idx[j]].status = st;
            return st;
        }
        for (size_t j = from; j < to; j++) { /* vals offsets are relative to the batch */
            h->vals[j].off += base;
            items[h->sent_idx[j]].status = p.status;
        }
        from = to;
    }
    return OBJCACHE_OK;
}

/* Values into items, NUL-terminated in place (over the '\r' after each). */
static void get_finish(objcache_t *h, size_t nsent, objcache_item_t *items)
{
    for (size_t j = 0; j < nsent; j++) {
        objcache_item_t *it = &items[h->sent_idx[j]];
        if (it->status != OBJCACHE_OK)
            continue;
        if (!h->vals[j].found) {
            it->status = OBJCACHE_NOT_FOUND;
            continue;
        }
        h->buf[h->vals[j].off + h->vals[j].len] = '\0';
        it->value = h->buf + h->vals[j].off;
        it->value_len = h->vals[j].len;
    }
}

/* Fill items with local verdicts; keys that can be sent go into sent[]. */
static size_t get_prepare(objcache_t *h, const char *const *keys, size_t nkeys,
                          objcache_item_t *items, size_t *longest)
{
    size_t nsent = 0;
    *longest = 0;
    for (size_t i = 0; i < nkeys; i++) {
        items[i].key = keys[i];
        items[i].value = NULL;
        items[i].value_len = 0;
        items[i].status = objcache_check_key(keys[i]);
        if (items[i].status != OBJCACHE_OK)
            continue;
        size_t k = strlen(keys[i]);
        *longest = k > *longest ? k : *longest;
        h->sent[nsent] = keys[i];
        h->sent_idx[nsent] = i;
        nsent++;
    }
    return nsent;
}

/* The first status that is neither OK nor NOT_FOUND, with a message if none yet. */
static objcache_status_t get_verdict(objcache_t *h, size_t nkeys,
                                     const objcache_item_t *items)
{
    for (size_t i = 0; i < nkeys; i++) {
        objcache_status_t st = items[i].status;
        if (st == OBJCACHE_OK || st == OBJCACHE_NOT_FOUND)
            continue;
        if (st == OBJCACHE_EINVAL) /* errmsg may be another key's failure */
            bad_key(h, items[i].key);
        else if (h->errmsg[0] == '\0')
            objcache_fail(h->errmsg, st, "%s", objcache_strerror(st));
        return st;
    }
    return OBJCACHE_OK;
}

objcache_status_t objcache_get_multi(objcache_t *h, const char *const *keys, size_t nkeys,
                                     objcache_item_t *items)
{
    size_t longest = 0, nsent = 0;
    h->errmsg[0] = '\0';
    objcache_status_t st = scratch_reserve(h, nkeys);
    if (st == OBJCACHE_OK) {
        nsent = get_prepare(h, keys, nkeys, items, &longest);
        st = req_reserve(h, h->opts.max_line_bytes + longest + 8);
    }
    if (st != OBJCACHE_OK)
        goto fail;
    if (nsent > 0 && (st = call_begin(h)) != OBJCACHE_OK)
        goto fail;
    if (nsent > 0 && get_batches(h, nsent, items) == OBJCACHE_OK)
        get_finish(h, nsent, items);
    return get_verdict(h, nkeys, items);
fail:
    for (size_t i = 0; i < nkeys; i++) {
        items[i].key = keys[i];
        items[i].value = NULL;
        items[i].value_len = 0;
        if (nsent == 0 || items[i].status == OBJCACHE_OK)
            items[i].status = st;
    }
    return st;
}

objcache_status_t objcache_get(objcache_t *h, const char *key, const char **value,
                               size_t *value_len)
{
    objcache_item_t item;
    objcache_status_t st = objcache_get_multi(h, &key, 1, &item);
    *value = item.value;
    if (value_len != NULL)
        *value_len = item.value_len;
    return st == OBJCACHE_OK ? item.status : st;
}

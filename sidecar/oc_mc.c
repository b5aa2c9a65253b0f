#include "oc_mc.h"

#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "oc_log.h"
#include "oc_mcproto.h"
#include "oc_place.h"

#define MC_PUSH_TRIES 8
#define MC_READ_CHUNK 65536
#define MC_WOP_SPARE  1024 /* freed wops kept for reuse */

/*
 * Per server, what was written (or sits in `out`, to be written) and waits
 * for its reply is a FIFO of wire operations (wops): memcached answers a
 * connection's commands in order. A GETS wop is one multi-get of keys that
 * may belong to many jobs (refs); memcached answers the keys it holds in
 * the order they were asked, so a cursor walks the refs: the refs it skips
 * to reach a VALUE's key are misses, and those left at END too.
 */
typedef enum mc_wop_kind {
    MC_WOP_GETS,    /* refs[]: a GET key, or the read of a SWAP/PUSH item */
    MC_WOP_MG,      /* refs[]: GET keys read with mg, one reply each */
    MC_WOP_STORE,   /* job->items[idx]: set, add or cas */
    MC_WOP_DELETE,  /* job->items[idx] */
    MC_WOP_VERSION, /* job->items[idx] of a PROBE */
} mc_wop_kind_t;

typedef struct mc_ref {
    oc_mc_job_t *job;
    size_t idx;
} mc_ref_t;

typedef struct mc_wop {
    mc_wop_kind_t kind;
    struct mc_wop *next;
    mc_ref_t one;   /* STORE, DELETE, VERSION */
    mc_ref_t *refs; /* GETS: owned */
    size_t nrefs, cursor;
} mc_wop_t;

/* DOWN --first operation after retry_at--> CONNECTING --writable--> UP
 *   ^------------- refused, timeout, closed, a broken reply -------'   */
typedef enum mc_srv_state {
    MC_SRV_DOWN,
    MC_SRV_CONNECTING,
    MC_SRV_UP,
} mc_srv_state_t;

typedef struct mc_server {
    oc_mc_t *mc;
    char *host; /* as configured (no brackets) */
    uint16_t port;
    char name[128]; /* host:port, for logs and errors */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    mc_srv_state_t state;
    int fd;
    struct event *ev_read, *ev_write, *ev_timer;
    double retry_at; /* DOWN: connect again from then on */
    double deadline; /* CONNECTING: give up then */
    double progress; /* UP: when the oldest wait began, or
                        the last bytes arrived since */
    char *out;       /* to write: [out_off, out_len) */
    size_t out_off, out_len, out_cap;
    char *in; /* read, not parsed: [in_off, in_len) */
    size_t in_off, in_len, in_cap;
    mc_wop_t *wait_head, *wait_tail; /* in `out` or sent, awaiting replies */
    mc_ref_t *gets;                  /* keys for the next flush's multi-get */
    size_t ngets, gets_cap;
    mc_ref_t *mgs; /* keys for the next flush's meta gets */
    size_t nmgs, mgs_cap;
    int dirty; /* on mc->dirty */
    struct mc_server *dirty_next;
} mc_server_t;

struct oc_mc {
    struct event_base *base;
    oc_place_t *place; /* which server a key lives on */
    mc_wop_t *spare;   /* freed wops, for reuse */
    size_t nspare;
    mc_server_t **servers; /* [nservers], in the configured order */
    size_t nservers;
    double connect_s, io_s, retry_s;
    struct event *ev_flush;           /* runs due callbacks, then writes */
    mc_server_t *dirty;               /* servers with gets or bytes to send */
    oc_mc_job_t *due_head, *due_tail; /* jobs answered, done not yet run */
};

static void srv_fail(mc_server_t *s, const char *why);
static void srv_flush(mc_server_t *s);
static void queue_get(mc_server_t *s, oc_mc_job_t *job, size_t idx);

static double mc_now(oc_mc_t *mc)
{
    struct timeval tv;
    event_base_gettimeofday_cached(mc->base, &tv);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* ---- jobs ---------------------------------------------------------------- */

oc_mc_job_t *oc_mc_job_new_get(size_t n, oc_mc_done_fn done, void *arg)
{
    size_t sz =
        sizeof(oc_mc_job_t) + n * (sizeof(char *) + sizeof(size_t) + sizeof(oc_mc_hit_t));
    oc_mc_job_t *job = calloc(1, sz);
    if (job == NULL)
        return NULL;
    job->op = OC_MC_GET;
    job->n = n;
    job->hits = (oc_mc_hit_t *)(job + 1);
    job->keys = (const char **)(job->hits + n);
    job->key_lens = (size_t *)(job->keys + n);
    job->done = done;
    job->arg = arg;
    return job;
}

oc_mc_job_t *oc_mc_job_new_items(oc_mc_op_t op, size_t n, oc_mc_done_fn done, void *arg)
{
    oc_mc_job_t *job = calloc(1, sizeof(oc_mc_job_t) + n * sizeof(oc_mc_item_t));
    if (job == NULL)
        return NULL;
    job->op = op;
    job->n = n;
    job->items = (oc_mc_item_t *)(job + 1);
    job->done = done;
    job->arg = arg;
    return job;
}

void oc_mc_job_free(oc_mc_job_t *job)
{
    if (job == NULL)
        return;
    free(job->arena);
    free(job);
}

/* Count a failed part; the first failure's text is the job's err. */
static void job_error(oc_mc_job_t *job, const char *what, size_t len)
{
    if (job->errors++ == 0)
        snprintf(job->err, sizeof(job->err), "%.*s", (int)len, what);
}

/* One key or item of `job` is answered; when it was the last, its done is
 * due: it runs from the flush event, so never inside oc_mc_submit. */
static void part_done(oc_mc_t *mc, oc_mc_job_t *job)
{
    if (--job->parts_left > 0)
        return;
    job->next = NULL;
    if (mc->due_tail)
        mc->due_tail->next = job;
    else
        mc->due_head = job;
    mc->due_tail = job;
    event_active(mc->ev_flush, EV_TIMEOUT, 0);
}

/* A part that will get no answer: a GET key misses, an item is an error. */
static void part_fail(oc_mc_t *mc, oc_mc_job_t *job, size_t idx, const char *why)
{
    job_error(job, why, strlen(why));
    if (job->op != OC_MC_GET)
        job->items[idx].result = OC_MC_R_ERROR;
    else
        job->hits[idx].error = 1;
    part_done(mc, job);
}

static int arena_append(oc_mc_job_t *job, const char *p, size_t len, size_t *off)
{
    if (job->arena_len + len > job->arena_cap) {
        size_t cap = job->arena_cap ? job->arena_cap : 4096;
        while (cap < job->arena_len + len)
            cap *= 2;
        char *a = realloc(job->arena, cap);
        if (a == NULL)
            return -1;
        job->arena = a;
        job->arena_cap = cap;
    }
    if (len > 0)
        memcpy(job->arena + job->arena_len, p, len);
    *off = job->arena_len;
    job->arena_len += len;
    return 0;
}

/* ---- buffers ------------------------------------------------------------------ */

static int buf_reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (len + more <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < len + more)
        c *= 2;
    char *b = realloc(*buf, c);
    if (b == NULL)
        return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* Room for `more` bytes at the end of out, moving what was sent away. */
static char *out_reserve(mc_server_t *s, size_t more)
{
    if (s->out_off > 0 && s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    if (buf_reserve(&s->out, &s->out_cap, s->out_len, more) != 0)
        return NULL;
    return s->out + s->out_len;
}

static void wait_push(mc_server_t *s, mc_wop_t *w)
{
    if (s->wait_head == NULL) {
        s->progress = mc_now(s->mc);
        if (s->state == MC_SRV_UP && !evtimer_pending(s->ev_timer, NULL)) {
            struct timeval tv = {
                (time_t)s->mc->io_s,
                (suseconds_t)((s->mc->io_s - (time_t)s->mc->io_s) * 1e6)};
            evtimer_add(s->ev_timer, &tv);
        }
    }
    w->next = NULL;
    if (s->wait_tail)
        s->wait_tail->next = w;
    else
        s->wait_head = w;
    s->wait_tail = w;
}

static void mark_dirty(mc_server_t *s)
{
    if (s->dirty)
        return;
    s->dirty = 1;
    s->dirty_next = s->mc->dirty;
    s->mc->dirty = s;
    event_active(s->mc->ev_flush, EV_TIMEOUT, 0);
}

/* ---- answers -------------------------------------------------------------------- */

static void item_result(oc_mc_t *mc, oc_mc_job_t *job, size_t idx, oc_mc_result_t r)
{
    job->items[idx].result = r;
    part_done(mc, job);
}

/* What a store, delete or version reply means for its item. */
static oc_mc_result_t reply_result(oc_mcp_reply_t t)
{
    switch (t) {
    case OC_MCP_STORED:
    case OC_MCP_DELETED:
    case OC_MCP_VERSION:
        return OC_MC_R_OK;
    case OC_MCP_NOT_STORED:
        return OC_MC_R_NOT_STORED;
    case OC_MCP_EXISTS:
        return OC_MC_R_EXISTS;
    case OC_MCP_NOT_FOUND:
        return OC_MC_R_NOT_FOUND;
    default:
        return OC_MC_R_ERROR;
    }
}

static void queue_store(mc_server_t *s, oc_mc_job_t *job, size_t idx, const char *verb,
                        const char *val, size_t vlen, uint32_t flags, uint64_t cas);

/* A store or delete of one item got its reply line. */
static void on_item_reply(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    oc_mc_item_t *it = &job->items[ref.idx];
    oc_mc_result_t r = reply_result(l->type);
    if (r == OC_MC_R_ERROR)
        job_error(job, l->text ? l->text : "unexpected reply",
                  l->text ? l->text_len : strlen("unexpected reply"));
    if (job->op == OC_MC_SWAP && (r == OC_MC_R_EXISTS || r == OC_MC_R_NOT_FOUND))
        r = OC_MC_R_NOT_STORED; /* replaced or gone after our read */
    if (job->op == OC_MC_PUSH && r != OC_MC_R_OK && r != OC_MC_R_ERROR) {
        /* Someone wrote the key between our read and our write: again. */
        if (++it->tries_ < MC_PUSH_TRIES) {
            queue_get(s, job, ref.idx);
            return;
        }
        job_error(job, "push: key kept changing, gave up",
                  strlen("push: key kept changing, gave up"));
        r = OC_MC_R_ERROR;
    }
    item_result(mc, job, ref.idx, r);
}

/* A read of `ref` found the key (found = 1, with l) or not. */
static void on_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                    const char *data)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    if (job->op == OC_MC_GET) {
        oc_mc_hit_t *h = &job->hits[ref.idx];
        if (l && arena_append(job, data, l->bytes, &h->off) == 0) {
            h->found = 1;
            h->flags = l->flags;
            h->cas = l->cas;
            h->len = l->bytes;
        } else if (l) {
            job_error(job, "out of memory", strlen("out of memory"));
        }
        part_done(mc, job);
        return;
    }
    oc_mc_item_t *it = &job->items[ref.idx];
    if (job->op == OC_MC_SWAP) {
        if (l && l->flags == it->expect_flags && l->bytes == it->expect_len &&
            (it->expect_len == 0 || memcmp(data, it->expect, it->expect_len) == 0))
            queue_store(s, job, ref.idx, "cas", it->val, it->vlen, it->flags, l->cas);
        else
            item_result(mc, job, ref.idx, OC_MC_R_NOT_STORED);
        return;
    }
    /* PUSH */
    oc_mc_decision_t dec =
        it->decide(it, l != NULL, l ? l->flags : 0, l ? data : NULL, l ? l->bytes : 0);
    if (dec == OC_MC_KEEP) {
        item_result(mc, job, ref.idx, OC_MC_R_NOT_STORED);
        return;
    }
    it->unordered = (dec == OC_MC_WRITE_UNORDERED);
    queue_store(s, job, ref.idx, l ? "cas" : "add", it->val, it->vlen, it->flags,
                l ? l->cas : 0);
}

/* A meta get's reply (l: VA, or NULL for EN or an error) for a GET key. */
static void on_meta_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                         const char *data)
{
    oc_mc_job_t *job = ref.job;
    oc_mc_hit_t *h = &job->hits[ref.idx];
    if (l && l->win) {
        h->lease = l->win == OC_MCP_WIN ? OC_MC_LEASE_WON : OC_MC_LEASE_HELD;
        h->cas = l->cas;
        part_done(s->mc, job);
        return;
    }
    on_read(s, ref, l, data);
}

/* The GETS wop's refs from the cursor up to (not including) `upto` missed. */
static void gets_misses(mc_server_t *s, mc_wop_t *w, size_t upto)
{
    while (w->cursor < upto)
        on_read(s, w->refs[w->cursor++], NULL, NULL);
}

/* The ref a VALUE answers: the next one asked with this key. */
static int gets_match(mc_wop_t *w, const oc_mcp_line_t *l, size_t *at)
{
    for (size_t i = w->cursor; i < w->nrefs; i++) {
        const mc_ref_t *r = &w->refs[i];
        const char *k =
            r->job->op == OC_MC_GET ? r->job->keys[r->idx] : r->job->items[r->idx].key;
        size_t kl = r->job->op == OC_MC_GET ? r->job->key_lens[r->idx]
                                            : r->job->items[r->idx].klen;
        if (kl == l->klen && memcmp(k, l->key, kl) == 0) {
            *at = i;
            return 0;
        }
    }
    return -1;
}

/* Parse what `w` is owed from the input. 1: done, 0: need more, -1: the
 * stream is broken. */
static int parse_wop(mc_server_t *s, mc_wop_t *w)
{
    for (;;) {
        const char *p = s->in + s->in_off;
        size_t avail = s->in_len - s->in_off;
        oc_mcp_line_t l;
        oc_mcp_reply_t t = oc_mcp_parse_line(p, avail, &l);
        if (t == OC_MCP_NEED_MORE)
            return 0;
        if (t == OC_MCP_BAD)
            return -1;
        if (w->kind == MC_WOP_MG) {
            if (t != OC_MCP_VA && t != OC_MCP_EN && t != OC_MCP_ERROR)
                return -1;
            if (t == OC_MCP_VA && avail < l.line_len + (size_t)l.bytes + 2)
                return 0; /* the data block is not all here yet */
            const char *data = p + l.line_len;
            if (t == OC_MCP_VA && (data[l.bytes] != '\r' || data[l.bytes + 1] != '\n'))
                return -1;
            s->in_off += l.line_len + (t == OC_MCP_VA ? (size_t)l.bytes + 2 : 0);
            mc_ref_t ref = w->refs[w->cursor++];
            if (t == OC_MCP_ERROR) { /* this key only: the next reply is the next key's */
                char why[OC_ERRLEN];
                snprintf(why, sizeof(why), "%.*s", (int)l.text_len, l.text);
                part_fail(s->mc, ref.job, ref.idx, why);
            } else {
                on_meta_read(s, ref, t == OC_MCP_VA ? &l : NULL, data);
            }
            if (w->cursor == w->nrefs)
                return 1;
            continue;
        }
        if (w->kind != MC_WOP_GETS) {
            if (t == OC_MCP_VALUE || t == OC_MCP_END || t == OC_MCP_VA || t == OC_MCP_EN)
                return -1;
            s->in_off += l.line_len;
            if (w->kind == MC_WOP_VERSION)
                item_result(s->mc, w->one.job, w->one.idx,
                            t == OC_MCP_VERSION ? OC_MC_R_OK : OC_MC_R_ERROR);
            else
                on_item_reply(s, w->one, &l);
            return 1;
        }
        if (t == OC_MCP_END || t == OC_MCP_ERROR) {
            s->in_off += l.line_len;
            if (t == OC_MCP_ERROR) { /* the keys not answered yet failed */
                char why[OC_ERRLEN];
                snprintf(why, sizeof(why), "%.*s", (int)l.text_len, l.text);
                for (; w->cursor < w->nrefs; w->cursor++)
                    part_fail(s->mc, w->refs[w->cursor].job, w->refs[w->cursor].idx, why);
            }
            gets_misses(s, w, w->nrefs);
            return 1;
        }
        if (t != OC_MCP_VALUE)
            return -1;
        if (avail < l.line_len + (size_t)l.bytes + 2)
            return 0; /* the data block is not all here yet */
        const char *data = p + l.line_len;
        size_t at;
        if (data[l.bytes] != '\r' || data[l.bytes + 1] != '\n' ||
            gets_match(w, &l, &at) != 0)
            return -1;
        gets_misses(s, w, at);
        s->in_off += l.line_len + (size_t)l.bytes + 2;
        on_read(s, w->refs[w->cursor++], &l, data);
    }
}

static void wop_free(oc_mc_t *mc, mc_wop_t *w)
{
    free(w->refs);
    if (mc->nspare >= MC_WOP_SPARE) {
        free(w);
        return;
    }
    w->next = mc->spare;
    mc->spare = w;
    mc->nspare++;
}

static mc_wop_t *wop_new(oc_mc_t *mc)
{
    mc_wop_t *w = mc->spare;
    if (w == NULL)
        return calloc(1, sizeof(*w));
    mc->spare = w->next;
    mc->nspare--;
    memset(w, 0, sizeof(*w));
    return w;
}

static void srv_parse(mc_server_t *s)
{
    while (s->wait_head) {
        mc_wop_t *w = s->wait_head;
        int r = parse_wop(s, w);
        if (r == 0)
            break;
        if (r < 0) {
            srv_fail(s, "unexpected reply");
            return;
        }
        s->wait_head = w->next;
        if (s->wait_head == NULL)
            s->wait_tail = NULL;
        wop_free(s->mc, w);
    }
    if (s->wait_head == NULL && s->in_off < s->in_len) {
        srv_fail(s, "reply to nothing asked");
        return;
    }
    if (s->in_off == s->in_len)
        s->in_off = s->in_len = 0;
}

/* ---- queueing ------------------------------------------------------------------ */

static void queue_store(mc_server_t *s, oc_mc_job_t *job, size_t idx, const char *verb,
                        const char *val, size_t vlen, uint32_t flags, uint64_t cas)
{
    const oc_mc_item_t *it = &job->items[idx];
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, oc_mcp_store_size(it->klen, vlen)) : NULL;
    if (p == NULL) {
        free(w);
        part_fail(s->mc, job, idx, "out of memory");
        return;
    }
    s->out_len += oc_mcp_format_store(p, verb, it->key, it->klen, flags, it->exptime_s,
                                      val, vlen, cas);
    w->kind = MC_WOP_STORE;
    w->one = (mc_ref_t){job, idx};
    wait_push(s, w);
    mark_dirty(s);
}

/* `delete <key>` (key != NULL) or `version`, for job's item idx. */
static void queue_line(mc_server_t *s, oc_mc_job_t *job, size_t idx, const char *key,
                       size_t klen)
{
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, klen + 16) : NULL;
    if (p == NULL) {
        free(w);
        part_fail(s->mc, job, idx, "out of memory");
        return;
    }
    char *start = p;
    if (key) {
        p = oc_mcp_put(p, "delete ", 7);
        p = oc_mcp_put(p, key, klen);
        p = oc_mcp_put(p, "\r\n", 2);
    } else {
        p = oc_mcp_put(p, "version\r\n", 9);
    }
    s->out_len += (size_t)(p - start);
    w->kind = key ? MC_WOP_DELETE : MC_WOP_VERSION;
    w->one = (mc_ref_t){job, idx};
    wait_push(s, w);
    mark_dirty(s);
}

/* Append a key of job to one of s's lists for the next flush. */
static void queue_ref(mc_server_t *s, mc_ref_t **list, size_t *n, size_t *cap,
                      oc_mc_job_t *job, size_t idx)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        mc_ref_t *g = realloc(*list, c * sizeof(*g));
        if (g == NULL) {
            part_fail(s->mc, job, idx, "out of memory");
            return;
        }
        *list = g;
        *cap = c;
    }
    (*list)[(*n)++] = (mc_ref_t){job, idx};
    mark_dirty(s);
}

/* The key of job's idx joins the server's next multi-get. */
static void queue_get(mc_server_t *s, oc_mc_job_t *job, size_t idx)
{
    queue_ref(s, &s->gets, &s->ngets, &s->gets_cap, job, idx);
}

/* The key of a GET job with a lease TTL: a meta get at the next flush. */
static void queue_mg(mc_server_t *s, oc_mc_job_t *job, size_t idx)
{
    queue_ref(s, &s->mgs, &s->nmgs, &s->mgs_cap, job, idx);
}

/* The meta gets queued for s this turn: one command each, one write. */
static void flush_mgs(mc_server_t *s)
{
    if (s->nmgs == 0)
        return;
    size_t bytes = 0;
    for (size_t i = 0; i < s->nmgs; i++)
        bytes += oc_mcp_mg_size(s->mgs[i].job->key_lens[s->mgs[i].idx]);
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, bytes) : NULL;
    mc_ref_t *refs = s->mgs;
    size_t n = s->nmgs;
    s->mgs = NULL;
    s->nmgs = s->mgs_cap = 0;
    if (p == NULL) {
        free(w);
        for (size_t i = 0; i < n; i++)
            part_fail(s->mc, refs[i].job, refs[i].idx, "out of memory");
        free(refs);
        return;
    }
    char *start = p;
    for (size_t i = 0; i < n; i++) {
        const oc_mc_job_t *job = refs[i].job;
        p += oc_mcp_format_mg(p, job->keys[refs[i].idx], job->key_lens[refs[i].idx],
                              job->lease_ttl_s);
    }
    s->out_len += (size_t)(p - start);
    w->kind = MC_WOP_MG;
    w->refs = refs;
    w->nrefs = n;
    wait_push(s, w);
}

/* The multi-get of everything queued for s this turn, as one command. */
static void flush_gets(mc_server_t *s)
{
    if (s->ngets == 0)
        return;
    size_t bytes = 8;
    for (size_t i = 0; i < s->ngets; i++) {
        const mc_ref_t *r = &s->gets[i];
        bytes += 1 + (r->job->op == OC_MC_GET ? r->job->key_lens[r->idx]
                                              : r->job->items[r->idx].klen);
    }
    mc_wop_t *w = wop_new(s->mc);
    char *p = w ? out_reserve(s, bytes) : NULL;
    if (p == NULL) {
        free(w);
        mc_ref_t *refs = s->gets;
        size_t n = s->ngets;
        s->gets = NULL;
        s->ngets = s->gets_cap = 0;
        for (size_t i = 0; i < n; i++)
            part_fail(s->mc, refs[i].job, refs[i].idx, "out of memory");
        free(refs);
        return;
    }
    char *start = p;
    p = oc_mcp_put(p, "gets", 4);
    for (size_t i = 0; i < s->ngets; i++) {
        const mc_ref_t *r = &s->gets[i];
        const char *k =
            r->job->op == OC_MC_GET ? r->job->keys[r->idx] : r->job->items[r->idx].key;
        size_t kl = r->job->op == OC_MC_GET ? r->job->key_lens[r->idx]
                                            : r->job->items[r->idx].klen;
        *p++ = ' ';
        p = oc_mcp_put(p, k, kl);
    }
    *p++ = '\r';
    *p++ = '\n';
    s->out_len += (size_t)(p - start);
    w->kind = MC_WOP_GETS;
    w->refs = s->gets;
    w->nrefs = s->ngets;
    s->gets = NULL;
    s->ngets = s->gets_cap = 0;
    wait_push(s, w);
}

/* ---- connections -------------------------------------------------------------- */

static void srv_close(mc_server_t *s)
{
    if (s->ev_read)
        event_free(s->ev_read);
    if (s->ev_write)
        event_free(s->ev_write);
    s->ev_read = s->ev_write = NULL;
    if (s->ev_timer)
        evtimer_del(s->ev_timer);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->out_off = s->out_len = 0;
    s->in_off = s->in_len = 0;
}

/* Everything sent or queued to s fails; it is down until retry_at. */
static void srv_abort(mc_server_t *s, const char *why, int log)
{
    oc_mc_t *mc = s->mc;
    if (log && s->state != MC_SRV_DOWN)
        oc_log_warn("event=memcached_error server=%s reason=\"%s\"", s->name, why);
    srv_close(s);
    s->state = MC_SRV_DOWN;
    s->retry_at = mc_now(mc) + mc->retry_s;
    char msg[OC_ERRLEN];
    snprintf(msg, sizeof(msg), "memcached %.128s: %.100s", s->name, why);
    /* Take the lists first: answering may queue more (to a server that is
     * down now, so those fail at once too). */
    mc_wop_t *w = s->wait_head;
    s->wait_head = s->wait_tail = NULL;
    mc_ref_t *gets = s->gets, *mgs = s->mgs;
    size_t ngets = s->ngets, nmgs = s->nmgs;
    s->gets = s->mgs = NULL;
    s->ngets = s->gets_cap = s->nmgs = s->mgs_cap = 0;
    while (w) {
        mc_wop_t *next = w->next;
        if (w->kind == MC_WOP_GETS || w->kind == MC_WOP_MG)
            for (size_t i = w->cursor; i < w->nrefs; i++)
                part_fail(mc, w->refs[i].job, w->refs[i].idx, msg);
        else
            part_fail(mc, w->one.job, w->one.idx, msg);
        wop_free(mc, w);
        w = next;
    }
    for (size_t i = 0; i < ngets; i++)
        part_fail(mc, gets[i].job, gets[i].idx, msg);
    for (size_t i = 0; i < nmgs; i++)
        part_fail(mc, mgs[i].job, mgs[i].idx, msg);
    free(gets);
    free(mgs);
}

static void srv_fail(mc_server_t *s, const char *why)
{
    srv_abort(s, why, 1);
}

static void srv_write(mc_server_t *s)
{
    while (s->out_off < s->out_len) {
        ssize_t n =
            send(s->fd, s->out + s->out_off, s->out_len - s->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            s->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(s->ev_write, NULL);
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        srv_fail(s, n < 0 ? strerror(errno) : "write failed");
        return;
    }
    s->out_off = s->out_len = 0;
}

static void srv_read(mc_server_t *s)
{
    for (int rounds = 0; rounds < 4; rounds++) {
        if (s->in_off > 0 && s->in_off == s->in_len)
            s->in_off = s->in_len = 0;
        if (s->in_off > 0 && s->in_cap - s->in_len < MC_READ_CHUNK) {
            memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
            s->in_len -= s->in_off;
            s->in_off = 0;
        }
        if (buf_reserve(&s->in, &s->in_cap, s->in_len, MC_READ_CHUNK) != 0) {
            srv_fail(s, "out of memory");
            return;
        }
        size_t room = s->in_cap - s->in_len;
        ssize_t n = recv(s->fd, s->in + s->in_len, room, 0);
        if (n == 0) {
            srv_fail(s, "connection closed");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            srv_fail(s, strerror(errno));
            return;
        }
        s->in_len += (size_t)n;
        s->progress = mc_now(s->mc);
        srv_parse(s);
        if (s->state != MC_SRV_UP || (size_t)n < room)
            return;
    }
}

static void on_srv_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    srv_read(arg);
}

static void srv_up(mc_server_t *s)
{
    s->state = MC_SRV_UP;
    s->progress = mc_now(s->mc);
    if (s->wait_head) {
        struct timeval tv = {0, 1000};
        evtimer_add(s->ev_timer, &tv); /* on_srv_timer arms the io timeout */
    }
    event_add(s->ev_read, NULL);
    srv_write(s);
}

static void on_srv_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    mc_server_t *s = arg;
    if (s->state == MC_SRV_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            soerr = errno;
        if (soerr != 0) {
            srv_fail(s, strerror(soerr));
            return;
        }
        srv_up(s);
        return;
    }
    srv_write(s);
}

static void on_srv_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    mc_server_t *s = arg;
    oc_mc_t *mc = s->mc;
    double now = mc_now(mc), left;
    if (s->state == MC_SRV_CONNECTING) {
        if (now >= s->deadline) {
            srv_fail(s, "connect timeout");
            return;
        }
        left = s->deadline - now;
    } else if (s->state == MC_SRV_UP && s->wait_head) {
        if (now - s->progress >= mc->io_s) {
            srv_fail(s, "timeout");
            return;
        }
        left = mc->io_s - (now - s->progress);
    } else {
        return;
    }
    struct timeval tv = {(time_t)left, (suseconds_t)((left - (time_t)left) * 1e6) + 1};
    evtimer_add(s->ev_timer, &tv);
}

static void srv_connect(mc_server_t *s)
{
    oc_mc_t *mc = s->mc;
    int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        srv_fail(s, strerror(errno));
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->fd = fd;
    s->ev_read = event_new(mc->base, fd, EV_READ | EV_PERSIST, on_srv_read, s);
    s->ev_write = event_new(mc->base, fd, EV_WRITE, on_srv_write, s);
    if (s->ev_read == NULL || s->ev_write == NULL) {
        srv_fail(s, "out of memory");
        return;
    }
    s->state = MC_SRV_CONNECTING;
    if (connect(fd, (struct sockaddr *)&s->addr, s->addrlen) == 0) {
        srv_up(s);
        return;
    }
    if (errno != EINPROGRESS) {
        srv_fail(s, strerror(errno));
        return;
    }
    s->deadline = mc_now(mc) + mc->connect_s;
    struct timeval tv = {(time_t)mc->connect_s,
                         (suseconds_t)((mc->connect_s - (time_t)mc->connect_s) * 1e6)};
    evtimer_add(s->ev_timer, &tv);
    event_add(s->ev_write, NULL);
}

/* Can work be queued for s now? Connects a down server whose retry time
 * has come (or at once when `force`). */
static int srv_ready(mc_server_t *s, int force)
{
    if (s->state != MC_SRV_DOWN)
        return 1;
    if (!force && mc_now(s->mc) < s->retry_at)
        return 0;
    srv_connect(s);
    return s->state != MC_SRV_DOWN;
}

static void srv_flush(mc_server_t *s)
{
    flush_gets(s);
    flush_mgs(s);
    if (s->state == MC_SRV_UP && s->out_off < s->out_len && s->ev_write &&
        !event_pending(s->ev_write, EV_WRITE, NULL))
        srv_write(s);
}

/* Due callbacks first (they may queue more), then one write per server. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_mc_t *mc = arg;
    for (;;) {
        while (mc->due_head) {
            oc_mc_job_t *job = mc->due_head;
            mc->due_head = job->next;
            if (mc->due_head == NULL)
                mc->due_tail = NULL;
            job->next = NULL;
            job->done(job, job->arg);
        }
        if (mc->dirty == NULL)
            break;
        while (mc->dirty) {
            mc_server_t *s = mc->dirty;
            mc->dirty = s->dirty_next;
            s->dirty = 0;
            srv_flush(s);
        }
    }
}

/* ---- submit --------------------------------------------------------------------- */

static mc_server_t *route(oc_mc_t *mc, const char *key, size_t klen)
{
    return mc->nservers ? mc->servers[oc_place_server(mc->place, key, klen)] : NULL;
}

static mc_server_t *find_server(oc_mc_t *mc, const char *host, uint16_t port)
{
    for (size_t i = 0; i < mc->nservers; i++)
        if (mc->servers[i]->port == port && strcmp(mc->servers[i]->host, host) == 0)
            return mc->servers[i];
    return NULL;
}

/* The server for key, or NULL after failing part i (a key memcached
 * cannot take, a server down). */
static mc_server_t *route_part(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const char *key,
                               size_t klen)
{
    if (!oc_mcp_key_ok(key, klen)) {
        part_fail(mc, job, i, "key memcached cannot store");
        return NULL;
    }
    mc_server_t *s = route(mc, key, klen);
    if (s == NULL || !srv_ready(s, 0)) {
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "memcached %.128s: down", s ? s->name : "?");
        part_fail(mc, job, i, why);
        return NULL;
    }
    return s;
}

static void submit_item(oc_mc_t *mc, oc_mc_job_t *job, size_t i)
{
    const oc_mc_item_t *it = &job->items[i];
    mc_server_t *s;
    if (job->op == OC_MC_PROBE) {
        s = find_server(mc, it->key, (uint16_t)it->flags);
        if (s == NULL || !srv_ready(s, 1))
            part_fail(mc, job, i, "server down");
        else
            queue_line(s, job, i, NULL, 0);
        return;
    }
    if ((s = route_part(mc, job, i, it->key, it->klen)) == NULL)
        return;
    switch (job->op) {
    case OC_MC_SWAP:
    case OC_MC_PUSH:
        queue_get(s, job, i);
        break;
    case OC_MC_SET:
    case OC_MC_CAS:
        queue_store(s, job, i, job->op == OC_MC_SET ? "set" : "cas", it->val, it->vlen,
                    it->flags, it->cas);
        break;
    case OC_MC_DELETE:
        queue_line(s, job, i, it->key, it->klen);
        break;
    default:
        part_fail(mc, job, i, "unknown operation");
        break;
    }
}

void oc_mc_submit(oc_mc_t *mc, oc_mc_job_t *job)
{
    job->errors = 0;
    job->err[0] = '\0';
    job->next = NULL;
    /* One extra part, released below, so no part answered at once can make
     * the job due before every part is queued. */
    job->parts_left = job->n + 1;
    for (size_t i = 0; i < job->n; i++) {
        if (job->op != OC_MC_GET) {
            submit_item(mc, job, i);
            continue;
        }
        mc_server_t *s = route_part(mc, job, i, job->keys[i], job->key_lens[i]);
        if (s && job->lease_ttl_s)
            queue_mg(s, job, i);
        else if (s)
            queue_get(s, job, i);
    }
    part_done(mc, job);
}

/* ---- the pool --------------------------------------------------------------------- */

static void srv_free(mc_server_t *s)
{
    if (s == NULL)
        return;
    srv_abort(s, "shutting down", 0);
    if (s->ev_timer)
        event_free(s->ev_timer);
    free(s->out);
    free(s->in);
    free(s->host);
    free(s);
}

static mc_server_t *srv_new(oc_mc_t *mc, const oc_mc_server_conf_t *c, char *err)
{
    mc_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->host = strdup(c->host)) == NULL) {
        free(s);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    s->mc = mc;
    s->fd = -1;
    s->port = c->port;
    s->state = MC_SRV_DOWN;
    snprintf(s->name, sizeof(s->name), strchr(c->host, ':') ? "[%.100s]:%u" : "%.100s:%u",
             c->host, (unsigned)c->port);
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)c->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(c->host, port, &hints, &ai);
    if (rc != 0 || ai == NULL || ai->ai_addrlen > sizeof(s->addr)) {
        oc_fail(err, OC_ECACHE, "memcached server %s: %s", s->name,
                rc ? gai_strerror(rc) : "no address");
        if (ai)
            freeaddrinfo(ai);
        free(s->host);
        free(s);
        return NULL;
    }
    memcpy(&s->addr, ai->ai_addr, ai->ai_addrlen);
    s->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    if ((s->ev_timer = evtimer_new(mc->base, on_srv_timer, s)) == NULL) {
        free(s->host);
        free(s);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    return s;
}

static void set_timeouts(oc_mc_t *mc, const oc_conf_t *conf)
{
    mc->connect_s = conf->mc_connect_timeout_ms / 1000.0;
    mc->io_s = conf->mc_io_timeout_ms / 1000.0;
    mc->retry_s = conf->mc_retry_timeout_ms / 1000.0;
}

/* The server list of conf: a server of old[] with the same host and port
 * is reused (reused[j] set), the others are created. On failure the ones
 * created are freed and old[] is untouched. */
static mc_server_t **make_servers(oc_mc_t *mc, const oc_conf_t *conf, mc_server_t **old,
                                  size_t nold, char *reused, char *err)
{
    mc_server_t **list = calloc(conf->nservers ? conf->nservers : 1, sizeof(*list));
    if (list == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    for (size_t i = 0; i < conf->nservers; i++) {
        const oc_mc_server_conf_t *c = &conf->servers[i];
        for (size_t j = 0; j < nold && list[i] == NULL; j++)
            if (!reused[j] && old[j]->port == c->port &&
                strcmp(old[j]->host, c->host) == 0) {
                list[i] = old[j];
                reused[j] = 1;
            }
        if (list[i] == NULL && (list[i] = srv_new(mc, c, err)) == NULL)
            goto fail;
    }
    return list;
fail:
    for (size_t i = 0; i < conf->nservers; i++) {
        int from_old = 0;
        for (size_t j = 0; j < nold; j++)
            from_old |= (list[i] == old[j]);
        if (list[i] && !from_old)
            srv_free(list[i]);
    }
    free(list);
    return NULL;
}

oc_mc_t *oc_mc_new(struct event_base *base, const oc_conf_t *conf, char *err)
{
    oc_mc_t *mc = calloc(1, sizeof(*mc));
    if (mc == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    mc->base = base;
    set_timeouts(mc, conf);
    mc->ev_flush = event_new(base, -1, 0, on_flush, mc);
    if (mc->ev_flush == NULL) {
        oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    if ((mc->place = oc_place_new(conf->servers, conf->nservers, err)) == NULL ||
        (mc->servers = make_servers(mc, conf, NULL, 0, NULL, err)) == NULL)
        goto fail;
    mc->nservers = conf->nservers;
    return mc;
fail:
    oc_mc_free(mc);
    return NULL;
}

oc_status_t oc_mc_reconfigure(oc_mc_t *mc, const oc_conf_t *conf, char *err)
{
    err[0] = '\0';
    oc_place_t *place = oc_place_new(conf->servers, conf->nservers, err);
    char *reused = calloc(mc->nservers ? mc->nservers : 1, 1);
    mc_server_t **list = NULL;
    if (place == NULL || reused == NULL)
        goto fail;
    list = make_servers(mc, conf, mc->servers, mc->nservers, reused, err);
    if (list == NULL)
        goto fail;
    for (size_t j = 0; j < mc->nservers; j++)
        if (!reused[j])
            srv_free(mc->servers[j]); /* removed from the pool: its work fails */
    free(reused);
    free(mc->servers);
    oc_place_free(mc->place);
    mc->servers = list;
    mc->nservers = conf->nservers;
    mc->place = place;
    set_timeouts(mc, conf);
    return OC_OK;
fail:
    if (list) { /* free only the servers made for the new list */
        for (size_t i = 0; i < conf->nservers; i++) {
            int from_old = 0;
            for (size_t j = 0; j < mc->nservers; j++)
                from_old |= (list[i] == mc->servers[j]);
            if (!from_old)
                srv_free(list[i]);
        }
        free(list);
    }
    free(reused);
    oc_place_free(place);
    return err[0] ? OC_ECACHE : oc_fail(err, OC_ENOMEM, "out of memory");
}

void oc_mc_free(oc_mc_t *mc)
{
    if (mc == NULL)
        return;
    for (size_t i = 0; mc->servers && i < mc->nservers; i++)
        srv_free(mc->servers[i]);
    free(mc->servers);
    mc->nservers = 0;
    mc->dirty = NULL;
    /* Answer what is due, failures included; callbacks may submit more,
     * which fails at once (no servers) and is answered in the same loop. */
    if (mc->ev_flush)
        on_flush(-1, 0, mc);
    if (mc->ev_flush)
        event_free(mc->ev_flush);
    oc_place_free(mc->place);
    while (mc->spare) {
        mc_wop_t *w = mc->spare;
        mc->spare = w->next;
        free(w);
    }
    free(mc);
}

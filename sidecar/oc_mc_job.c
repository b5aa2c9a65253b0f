/*
 * oc_mc_job: the pool's jobs and their replies (part of oc_mc: the contract
 * is oc_mc.h's, the split of its files oc_mc_int.h's). A job's memory (one
 * allocation, and the chunks of its arena) is made and freed here; the
 * replies a server reads are parsed wop by wop into the results of the
 * jobs they answer, and a job whose last part is answered is queued to run
 * its `done` from the flush event.
 */
#include "oc_mc_int.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_log.h"
#include "oc_mcproto.h"
#include "oc_stats.h"
#include "oc_tko.h"

#define MC_WOP_SPARE 1024 /* freed wops kept for reuse */
/* memcached 1.6's `stats` is about 90 lines: a server that sends this many
 * is not answering it */
#define MC_STAT_LINES_MAX 1024

/* ---- jobs ---------------------------------------------------------------- */

/* A chunk of a GET job's arena. Chunks, not one buffer grown by realloc:
 * a value is copied once out of the server's read buffer and stays there,
 * so a large one can go to the client by reference (oc_reply). */
struct oc_mc_chunk {
    struct oc_mc_chunk *next;
    size_t len, cap;
    int own; /* one value's alone (MC_CHUNK_OWN) */
    char data[];
};

#define MC_CHUNK_MIN 4096
#define MC_CHUNK_MAX (256 * 1024)
#define MC_CHUNK_OWN (64 * 1024)

oc_mc_job_t *oc_mc_job_new_get(size_t n, oc_mc_done_fn done, void *arg)
{
    size_t sz = sizeof(oc_mc_job_t) + n * (sizeof(char *) + sizeof(size_t) +
                                           sizeof(oc_mc_hit_t) + sizeof(uint32_t));
    oc_mc_job_t *job = calloc(1, sz);
    if (job == NULL)
        return NULL;
    job->op = OC_MC_GET;
    job->n = n;
    job->hits = (oc_mc_hit_t *)(job + 1);
    job->keys = (const char **)(job->hits + n);
    job->key_lens = (size_t *)(job->keys + n);
    job->refresh_s = (uint32_t *)(job->key_lens + n);
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
    while (job->arena) {
        struct oc_mc_chunk *next = job->arena->next;
        free(job->arena);
        job->arena = next;
    }
    free(job);
}

/* Text a server sent (an error line, a probe's answer), made fit for a
 * quoted log value and a client's reply line in place: `"` and `\`
 * become `'`, control characters spaces (as oc_log_clean). Without it a
 * server could end a log line's reason="..." and forge fields after it
 * (found by a review). */
void oc_mc_text_clean(char *p)
{
    oc_log_clean(p, strlen(p) + 1, p);
}

/* Count a failed part; the first failure's text is the job's err. */
static void job_error(oc_mc_job_t *job, const char *what, size_t len)
{
    if (job->errors++ == 0) {
        snprintf(job->err, sizeof(job->err), "%.*s", (int)len, what);
        oc_mc_text_clean(job->err);
    }
}

/* One key or item of `job` is answered; when it was the last, its done is
 * due: it runs from the flush event, so never inside oc_mc_submit. */
void oc_mc_part_done(oc_mc_t *mc, oc_mc_job_t *job)
{
    if (--job->parts_left > 0)
        return;
    for (size_t i = 0; job->prev_failed_ > 0 && i < job->n; i++) {
        oc_mc_item_t *it = &job->items[i];
        if (!it->prev_failed_)
            continue;
        it->own_failed_ = it->result == OC_MC_R_ERROR; /* its own part's answer */
        it->result = OC_MC_R_ERROR;
    }
    job->next = NULL;
    if (mc->due_tail)
        mc->due_tail->next = job;
    else
        mc->due_head = job;
    mc->due_tail = job;
    event_active(mc->ev_flush, EV_TIMEOUT, 0);
}

/* A part that will get no answer: a GET key misses, an item is an error. */
void oc_mc_part_fail(oc_mc_t *mc, oc_mc_job_t *job, size_t idx, const char *why)
{
    job_error(job, why, strlen(why));
    if (job->op != OC_MC_GET)
        job->items[idx].result = OC_MC_R_ERROR;
    else
        job->hits[idx].error = 1;
    oc_mc_part_done(mc, job);
}

/* A delete on the key's server of servers_previous failed (why): its item
 * is an error once every part of the job is answered, whatever its own
 * server answered (the order of the answers does not matter). */
void oc_mc_prev_fail(oc_mc_job_t *job, size_t idx, const char *why, size_t len)
{
    job_error(job, why, len);
    job->items[idx].prev_failed_ = 1;
    job->prev_failed_++;
}

/* The same for a ref: a shadow delete failing changes nothing. */
void oc_mc_ref_fail(oc_mc_t *mc, mc_ref_t ref, const char *why)
{
    if (ref.via == MC_VIA_PREVIOUS)
        oc_mc_prev_fail(ref.job, ref.idx, why, strlen(why));
    if (ref.via == MC_VIA_SHADOW || ref.via == MC_VIA_PREVIOUS)
        oc_mc_part_done(mc, ref.job);
    else
        oc_mc_part_fail(mc, ref.job, ref.idx, why);
}

/* Keep len bytes of p in the arena; *at: where. Small values share chunks,
 * each twice the last up to MC_CHUNK_MAX; a value of MC_CHUNK_OWN bytes or
 * more gets a chunk of its own size, linked behind the shared one, so what
 * a chunk leaves unused stays below the small values' own bytes plus one
 * chunk whatever the mix of sizes (arena_len, bounded by max_bytes, counts
 * only values). */
static int arena_append(oc_mc_job_t *job, const char *p, size_t len, const char **at)
{
    struct oc_mc_chunk *head = job->arena, *c = head;
    if (len >= MC_CHUNK_OWN || c == NULL || c->cap - c->len < len) {
        size_t cap = len;
        if (len < MC_CHUNK_OWN) {
            cap = c && !c->own ? c->cap * 2 : MC_CHUNK_MIN;
            if (cap > MC_CHUNK_MAX)
                cap = MC_CHUNK_MAX;
            if (cap < len)
                cap = len;
        }
        if ((c = malloc(sizeof(*c) + (cap ? cap : 1))) == NULL)
            return -1;
        c->len = 0;
        c->cap = cap;
        c->own = len >= MC_CHUNK_OWN;
        if (c->own && head != NULL) { /* the shared chunk stays first */
            c->next = head->next;
            head->next = c;
        } else {
            c->next = head;
            job->arena = c;
        }
    }
    if (len > 0)
        memcpy(c->data + c->len, p, len);
    *at = c->data + c->len;
    c->len += len;
    job->arena_len += len;
    return 0;
}

/* A CAS_DELETE job's own item (not a shadow delete): sent as `md`. */
int oc_mc_wants_mg(uint32_t lease_ttl_s, uint32_t refresh_s, int on_failover)
{
    return lease_ttl_s > 0 || oc_mc_refresh_window(refresh_s, on_failover) > 0;
}

uint32_t oc_mc_refresh_window(uint32_t refresh_s, int on_failover)
{
    return on_failover ? 0 : refresh_s;
}

/* A GET key is read with a meta get when it takes a lease on a miss or
 * asks for a refresh window (the text protocol's gets can do neither). */
int oc_mc_ref_wants_mg(mc_ref_t r)
{
    return oc_mc_wants_mg(r.job->lease_ttl_s,
                          r.job->refresh_s ? r.job->refresh_s[r.idx] : 0,
                          r.via != MC_VIA_PRIMARY);
}

/* ---- answers -------------------------------------------------------------------- */

void oc_mc_item_result(oc_mc_t *mc, mc_ref_t ref, oc_mc_result_t r)
{
    if (ref.via != MC_VIA_SHADOW && ref.via != MC_VIA_PREVIOUS)
        ref.job->items[ref.idx].result = r;
    oc_mc_part_done(mc, ref.job);
}

/* What a store, delete or version reply means for its item. */
static oc_mc_result_t reply_result(oc_mcp_reply_t t)
{
    switch (t) {
    case OC_MCP_STORED:
    case OC_MCP_DELETED:
    case OC_MCP_HD:
    case OC_MCP_VERSION:
        return OC_MC_R_OK;
    case OC_MCP_NOT_STORED:
    case OC_MCP_NS:
        return OC_MC_R_NOT_STORED;
    case OC_MCP_EXISTS:
    case OC_MCP_EX:
        return OC_MC_R_EXISTS;
    case OC_MCP_NOT_FOUND:
    case OC_MCP_NF:
        return OC_MC_R_NOT_FOUND;
    default:
        return OC_MC_R_ERROR;
    }
}

oc_mc_result_t oc_mc_item_reply(oc_mc_op_t op, oc_mcp_reply_t reply, int *tries,
                                int *again)
{
    /* VERSION answers `version` (a PROBE) and nothing else does: anything
     * else is another command's reply (out_of_step resets the connection
     * first; this keeps the rule where the result is decided). */
    oc_mc_result_t r = (reply == OC_MCP_VERSION) != (op == OC_MC_PROBE)
                           ? OC_MC_R_ERROR
                           : reply_result(reply);
    *again = 0;
    if (op == OC_MC_SWAP && (r == OC_MC_R_EXISTS || r == OC_MC_R_NOT_FOUND))
        r = OC_MC_R_NOT_STORED; /* replaced or gone after our read */
    if (op == OC_MC_PUSH && r != OC_MC_R_OK && r != OC_MC_R_ERROR) {
        /* Someone wrote the key between our read and our write: again. */
        if (++*tries < OC_MC_PUSH_TRIES)
            *again = 1;
        else
            r = OC_MC_R_ERROR;
    }
    return r;
}

/* A store or delete of one item got its reply line. */
static void on_item_reply(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    oc_mc_item_t *it = &job->items[ref.idx];
    if (ref.via == MC_VIA_SHADOW) {
        oc_mc_part_done(mc, job);
        return;
    }
    if (ref.via == MC_VIA_PREVIOUS) { /* deleted or not there: both fine */
        if (reply_result(l->type) != OC_MC_R_OK &&
            reply_result(l->type) != OC_MC_R_NOT_FOUND)
            oc_mc_prev_fail(job, ref.idx, l->text ? l->text : "unexpected reply",
                            l->text ? l->text_len : strlen("unexpected reply"));
        oc_mc_part_done(mc, job);
        return;
    }
    int again;
    oc_mc_result_t r = oc_mc_item_reply(job->op, l->type, &it->tries_, &again);
    if (again) {
        oc_mc_queue_get(s, ref);
        return;
    }
    if (r == OC_MC_R_ERROR && job->op == OC_MC_PUSH &&
        reply_result(l->type) != OC_MC_R_ERROR)
        job_error(job, "push: key kept changing, gave up",
                  strlen("push: key kept changing, gave up"));
    else if (r == OC_MC_R_ERROR)
        job_error(job, l->text ? l->text : "unexpected reply",
                  l->text ? l->text_len : strlen("unexpected reply"));
    it->refused = (r == OC_MC_R_ERROR && l->type == OC_MCP_ERROR);
    if (job->op == OC_MC_PUSH && r == OC_MC_R_OK) {
        oc_mc_srv_cas_seen(s, l->cas);
        it->stored_cas = l->cas;
        it->cas_epoch = s->cas_epoch;
    }
    oc_mc_item_result(mc, ref, r);
}

/* A GET key's read found the key (l) or not. */
static void on_get_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                        const char *data)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    oc_mc_hit_t *h = &job->hits[ref.idx];
    if (l && job->max_bytes && l->bytes > job->max_bytes - job->arena_len) {
        h->too_large = 1; /* arena_len never passes max_bytes */
        h->flags = l->flags;
        h->cas = l->cas; /* a refresh it won writes over it by cas */
        h->cas_epoch = s->cas_epoch;
    } else if (l && arena_append(job, data, l->bytes, &h->data) == 0) {
        h->cas_epoch = s->cas_epoch;
        h->found = 1;
        h->flags = l->flags;
        h->cas = l->cas;
        h->len = l->bytes;
    } else if (l) {
        job_error(job, "out of memory", strlen("out of memory"));
    }
    if (ref.via == MC_VIA_FAILOVER && mc->stats) {
        mc->stats->mc_failover_reads++;
        mc->stats->mc_failover_hits += (h->found != 0);
    }
    oc_mc_part_done(mc, job);
}

int oc_mc_swap_holds(const oc_mc_item_t *it, uint32_t flags, const char *data, size_t len)
{
    return flags == it->expect_flags && len == it->expect_len &&
           (len == 0 || memcmp(data, it->expect, len) == 0);
}

/* A read of `ref` found the key (found = 1, with l) or not. */
static void on_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                    const char *data)
{
    oc_mc_t *mc = s->mc;
    oc_mc_job_t *job = ref.job;
    if (job->op == OC_MC_GET) {
        on_get_read(s, ref, l, data);
        return;
    }
    oc_mc_item_t *it = &job->items[ref.idx];
    if (job->op == OC_MC_SWAP) {
        if (l && oc_mc_swap_holds(it, l->flags, data, l->bytes))
            oc_mc_queue_store(s, ref, "cas", it->val, it->vlen, it->flags, l->cas);
        else
            oc_mc_item_result(mc, ref, OC_MC_R_NOT_STORED);
        return;
    }
    /* PUSH */
    oc_mc_decision_t dec =
        it->decide(it, l != NULL, l ? l->flags : 0, l ? data : NULL, l ? l->bytes : 0);
    if (dec == OC_MC_KEEP) {
        oc_mc_item_result(mc, ref, OC_MC_R_NOT_STORED);
        return;
    }
    it->unordered = (dec == OC_MC_WRITE_UNORDERED);
    uint32_t flags =
        it->unordered && it->unordered_flags ? it->unordered_flags : it->flags;
    oc_mc_queue_ms(s, ref, flags, l ? l->cas : 0);
}

int oc_mc_meta_lease(const oc_mcp_line_t *l, oc_mc_lease_t *lease,
                     oc_mc_refresh_t *refresh)
{
    if (l == NULL || !l->win)
        return 0;
    int won = l->win == OC_MCP_WIN;
    if (l->flags == 0 && l->bytes == 0) {
        *lease = won ? OC_MC_LEASE_WON : OC_MC_LEASE_HELD;
        return 1;
    }
    *refresh = won ? OC_MC_REFRESH_WON : OC_MC_REFRESH_HELD;
    return 0;
}

/* A meta get's reply (l: VA, or NULL for EN or an error) for a GET key.
 * W or Z on an empty item with flags 0 is a lease (memcached made it for
 * an N flag); on a value they answer the R flag: this reader refreshes it
 * (W) or another does (Z), and it is a hit either way. */
static void on_meta_read(mc_server_t *s, mc_ref_t ref, const oc_mcp_line_t *l,
                         const char *data)
{
    oc_mc_job_t *job = ref.job;
    oc_mc_hit_t *h = &job->hits[ref.idx];
    if (l != NULL)
        oc_mc_srv_cas_seen(s, l->cas);
    if (l != NULL && oc_mc_meta_lease(l, &h->lease, &h->refresh)) {
        if (l->cas == 0) {
            /* memcached -C: a lease no fill can write over (oc_mc_srv_cas_seen),
             * which would make every other reader wait lease_wait for
             * nothing. A failed read instead: the key loads at once. */
            h->lease = OC_MC_LEASE_NONE;
            oc_mc_ref_fail(s->mc, ref, "memcached gave a lease without a cas (-C)");
            return;
        }
        h->cas = l->cas;
        h->cas_epoch = s->cas_epoch;
        if (ref.via == MC_VIA_FAILOVER && s->mc->stats)
            s->mc->stats->mc_failover_reads++;
        oc_mc_part_done(s->mc, job);
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
        size_t kl;
        const char *k = oc_mc_ref_key(w->refs[i], &kl);
        if (kl == l->klen && memcmp(k, l->key, kl) == 0) {
            *at = i;
            return 0;
        }
    }
    return -1;
}

/* An MG wop's next reply. 1: the wop is done, 0: need more, -1: broken. */
static int parse_mg(mc_server_t *s, mc_wop_t *w, const char *p, size_t avail,
                    const oc_mcp_line_t *l)
{
    oc_mcp_reply_t t = l->type;
    if (t != OC_MCP_VA && t != OC_MCP_EN && t != OC_MCP_ERROR)
        return -1;
    /* A meta reply names no command: the key it returns (k, asked on every
     * mg) is what ties it to this one. A VA must name it; an EN may (an
     * older server's). Another key means a reply went missing or came
     * unasked: every answer after it would be another key's value. */
    size_t kl;
    const char *k = oc_mc_ref_key(w->refs[w->cursor], &kl);
    if ((t == OC_MCP_VA || (t == OC_MCP_EN && l->klen > 0)) &&
        (l->klen != kl || memcmp(l->key, k, kl) != 0)) {
        snprintf(s->broken, sizeof(s->broken), "meta reply for another key");
        return -1;
    }
    if (t == OC_MCP_VA && avail < l->line_len + (size_t)l->bytes + 2)
        return 0; /* the data block is not all here yet */
    const char *data = p + l->line_len;
    if (t == OC_MCP_VA && (data[l->bytes] != '\r' || data[l->bytes + 1] != '\n'))
        return -1;
    s->in_off += l->line_len + (t == OC_MCP_VA ? (size_t)l->bytes + 2 : 0);
    mc_ref_t ref = w->refs[w->cursor++];
    if (t == OC_MCP_ERROR) { /* this key only: the next reply is the next key's */
        oc_mc_srv_meta_refused(s, l);
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "%.*s", (int)l->text_len, l->text);
        oc_mc_ref_fail(s->mc, ref, why);
    } else {
        if (t == OC_MCP_EN && ref.job->lease_ttl_s > 0)
            oc_mc_srv_lease_refused(s);
        on_meta_read(s, ref, t == OC_MCP_VA ? l : NULL, data);
    }
    return w->cursor == w->nrefs ? 1 : 2; /* 2: go on with the same wop */
}

/* A GETS wop's next line. Same answers as parse_mg. */
static int parse_gets(mc_server_t *s, mc_wop_t *w, const char *p, size_t avail,
                      const oc_mcp_line_t *l)
{
    if (l->type == OC_MCP_END || l->type == OC_MCP_ERROR) {
        s->in_off += l->line_len;
        if (l->type == OC_MCP_ERROR) { /* the keys not answered yet failed */
            char why[OC_ERRLEN];
            snprintf(why, sizeof(why), "%.*s", (int)l->text_len, l->text);
            for (; w->cursor < w->nrefs; w->cursor++)
                oc_mc_ref_fail(s->mc, w->refs[w->cursor], why);
        }
        gets_misses(s, w, w->nrefs);
        return 1;
    }
    if (l->type != OC_MCP_VALUE)
        return -1;
    if (avail < l->line_len + (size_t)l->bytes + 2)
        return 0; /* the data block is not all here yet */
    const char *data = p + l->line_len;
    size_t at;
    if (data[l->bytes] != '\r' || data[l->bytes + 1] != '\n' ||
        gets_match(w, l, &at) != 0)
        return -1;
    gets_misses(s, w, at);
    s->in_off += l->line_len + (size_t)l->bytes + 2;
    on_read(s, w->refs[w->cursor++], l, data);
    return 2;
}

/* A STATS wop's next line: STAT lines, then END (or an error: a server
 * that has no `stats`). Same answers as parse_mg. */
static int parse_stats(mc_server_t *s, const oc_mcp_line_t *l)
{
    if (l->type == OC_MCP_STAT && ++s->stat_lines <= MC_STAT_LINES_MAX) {
        s->in_off += l->line_len;
        oc_mcp_proc_stat(&s->learning, l->key, l->klen, l->text, l->text_len);
        return 2;
    }
    if (l->type != OC_MCP_END && l->type != OC_MCP_ERROR) {
        if (l->type == OC_MCP_STAT)
            snprintf(s->broken, sizeof(s->broken), "stats: over %d lines",
                     MC_STAT_LINES_MAX);
        return -1;
    }
    if (l->type == OC_MCP_ERROR && l->text_len > 5 && memcmp(l->text, "ERROR ", 6) == 0) {
        /* memcached's refusal of the connection (over -c), which it closes
         * next, with its words as the reason (it was "unexpected reply";
         * found by a review). Not a failure of the server (oc_mc_srv_refused). */
        snprintf(s->broken, sizeof(s->broken), "%.*s", (int)l->text_len, l->text);
        oc_mc_text_clean(s->broken);
        s->conn_limited = strcmp(s->broken, "ERROR Too many open connections") == 0;
        return -1;
    }
    s->in_off += l->line_len;
    oc_mc_srv_learned(s, l->type == OC_MCP_END);
    return 1;
}

/* An `md` line (a CAS_DELETE job's item): answered HD, NF or EX (memcached
 * 1.6.10 on; an older one's OK counts as an error), where every other
 * store or delete is answered in the classic words. */
static int wop_is_md(const mc_wop_t *w)
{
    return w->kind == MC_WOP_DELETE && oc_mc_ref_is_md(w->one);
}

static int is_meta_reply(oc_mcp_reply_t t)
{
    return t == OC_MCP_HD || t == OC_MCP_NF || t == OC_MCP_EX || t == OC_MCP_NS;
}

int oc_mc_out_of_step(oc_mc_line_cmd_t cmd, oc_mcp_reply_t t)
{
    if (t == OC_MCP_ERROR)
        return 0;
    switch (cmd) {
    case OC_MC_LINE_MD: /* an md older memcached answered OK: an error */
        return (!is_meta_reply(t) || t == OC_MCP_NS) && t != OC_MCP_OK;
    case OC_MC_LINE_MS:
        return !is_meta_reply(t);
    case OC_MC_LINE_DELETE:
        return t != OC_MCP_DELETED && t != OC_MCP_NOT_FOUND;
    case OC_MC_LINE_STORE:
        return t != OC_MCP_STORED && t != OC_MCP_NOT_STORED && t != OC_MCP_EXISTS &&
               t != OC_MCP_NOT_FOUND;
    case OC_MC_LINE_VERSION:
        return t != OC_MCP_VERSION;
    }
    return 0;
}

int oc_mc_meta_flags_fit(oc_mc_line_cmd_t cmd, const oc_mcp_line_t *l)
{
    if (!is_meta_reply(l->type))
        return 1;
    if (cmd == OC_MC_LINE_MS)
        return l->has_cas;
    return cmd != OC_MC_LINE_MD || l->n_flags == 0;
}

/* The line command of the one-line wop w (store, delete, version); -1 for
 * the others (the server's own probe and flush are judged by
 * oc_mc_on_probe_reply). */
static int wop_line_cmd(const mc_wop_t *w)
{
    switch (w->kind) {
    case MC_WOP_DELETE:
        return wop_is_md(w) ? OC_MC_LINE_MD : OC_MC_LINE_DELETE;
    case MC_WOP_STORE:
        return OC_MC_LINE_STORE;
    case MC_WOP_MS:
        return OC_MC_LINE_MS;
    case MC_WOP_VERSION:
        return OC_MC_LINE_VERSION;
    default:
        return -1;
    }
}

/* Does reply l answer the one-line wop w? (oc_mc_out_of_step) */
static int out_of_step(const mc_wop_t *w, const oc_mcp_line_t *l)
{
    int cmd = wop_line_cmd(w);
    if (cmd < 0)
        return 0;
    return oc_mc_out_of_step((oc_mc_line_cmd_t)cmd, l->type) ||
           !oc_mc_meta_flags_fit((oc_mc_line_cmd_t)cmd, l);
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
        int r;
        if (w->kind == MC_WOP_STATS)
            r = parse_stats(s, &l);
        else if (w->kind == MC_WOP_MG)
            r = parse_mg(s, w, p, avail, &l);
        else if (w->kind == MC_WOP_GETS)
            r = parse_gets(s, w, p, avail, &l);
        else if (out_of_step(w, &l))
            return -1;
        else {
            s->in_off += l.line_len;
            if (w->kind == MC_WOP_VERSION)
                oc_mc_item_result(s->mc, w->one,
                                  t == OC_MCP_VERSION ? OC_MC_R_OK : OC_MC_R_ERROR);
            else if (w->kind == MC_WOP_PROBE || w->kind == MC_WOP_FLUSH)
                return oc_mc_on_probe_reply(s, w->kind, &l, p) < 0 ? -1 : 1;
            else {
                if (w->kind == MC_WOP_MS || wop_is_md(w))
                    oc_mc_srv_meta_refused(s, &l);
                oc_mc_srv_store_refused(s, &l);
                on_item_reply(s, w->one, &l);
            }
            return 1;
        }
        if (r != 2)
            return r;
    }
}

void oc_mc_wop_free(oc_mc_t *mc, mc_wop_t *w)
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

mc_wop_t *oc_mc_wop_new(oc_mc_t *mc)
{
    mc_wop_t *w = mc->spare;
    if (w == NULL)
        return calloc(1, sizeof(*w));
    mc->spare = w->next;
    mc->nspare--;
    memset(w, 0, sizeof(*w));
    return w;
}

void oc_mc_srv_parse(mc_server_t *s)
{
    while (s->wait_head) {
        mc_wop_t *w = s->wait_head;
        size_t before = s->in_off;
        int r = parse_wop(s, w);
        /* io_timeout runs from the last reply (or a key's answer) read, not
         * from the last byte: a server that trickles a byte at a time would
         * otherwise hold every request on it as long as it likes (found by
         * a review). `stats` lines do not count: only its END. */
        if (r > 0 || (r == 0 && s->in_off != before && w->kind != MC_WOP_STATS))
            s->progress = oc_mc_now(s->mc);
        if (r == 0)
            break;
        if (r < 0) {
            char why[OC_ERRLEN];
            snprintf(why, sizeof(why), "%s",
                     s->broken[0] ? s->broken : "unexpected reply");
            s->broken[0] = '\0';
            int refused = s->conn_limited;
            s->conn_limited = 0;
            if (refused && oc_tko_in_service(&s->tko))
                oc_mc_srv_refused(s, why);
            else
                oc_mc_srv_fail(s, why); /* a probe's refusal fails the probe */
            return;
        }
        /* `stats` answered is no success: every new connection sends it,
         * and a server that answers it but never a read would be "one
         * failure in a row" forever, never marked down (found by a review) */
        if (w->kind != MC_WOP_STATS)
            oc_tko_success(&s->tko);
        s->wait_head = w->next;
        if (s->wait_head == NULL)
            s->wait_tail = NULL;
        oc_mc_wop_free(s->mc, w);
    }
    if (s->wait_head == NULL && s->in_off < s->in_len) {
        oc_mc_srv_fail(s, "reply to nothing asked");
        return;
    }
    if (s->in_off == s->in_len) {
        s->in_off = s->in_len = 0;
        oc_mc_buf_trim(&s->in, &s->in_cap);
    }
}

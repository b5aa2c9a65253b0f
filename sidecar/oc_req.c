#include "oc_req.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_entry.h"
#include "oc_fill.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_mc.h"
#include "oc_near.h"
#include "oc_sampler.h"
#include "oc_stats.h"

/* How gets read memcached: see req_read. The keys read and the keys that
 * missed are each averaged over about OC_REQ_MISS_WINDOW gets, so that
 * their ratio weighs a get by its keys. Above one key in twenty, meta
 * gets: measured side by side (bench/run.py --only cold,mixed,
 * 2026-12-07), one multi-get per server won with 1% of keys missing
 * (against the hand-written pattern 0.73x for 0.71x at 4 clients, 1.01x
 * for 0.91x at 16) and lost a little with 10% (0.65x for 0.68x at 4);
 * meta gets win by far when every key misses (0.80x for 0.63x, 10 keys a
 * get at 1 client). */
#define OC_REQ_MG_ABOVE    0.05
#define OC_REQ_MISS_WINDOW 32.0

struct oc_reqs {
    oc_ctx_t *ctx;
    oc_req_misses_t misses; /* recent keys read and missed (oc_req_misses_add) */
    /* Reads that bypass memcached (generations unknown), answered on the
     * next loop turn: here, not in event_base_once, so that a stop in the
     * same turn still finishes them (oc_reqs_flush) and frees them. */
    oc_req_t *bypass_head;
    struct event *bypass_ev;
};

/* One unique cache key of a request. The waiter is what oc_fill sees. */
typedef struct oc_ukey {
    oc_fill_waiter_t w; /* ckey, model, what the read found; fill's link */
    oc_req_t *req;
    oc_get_state_t state;
    const char *data;
    size_t len;
    uint64_t cas;
    oc_blob_t *blob;  /* reference held when data came from a load or the
                         near-cache */
    uint32_t job_idx; /* its index in the memcached read, or NO_JOB */
    int from_near;    /* answered by the near-cache */
    int no_near;      /* an unchecked push (OC_ENTRY_PUSHED): not for the
                         near-cache, which only keeps what every later
                         write's invalidation will reach */
} oc_ukey_t;

#define NO_JOB UINT32_MAX

struct oc_req {
    oc_ctx_t *ctx;
    oc_req_done_fn done; /* NULL once detached */
    void *arg;
    size_t nslots;        /* keys as asked, duplicates included */
    oc_get_item_t *items; /* [nslots]: key echo, then the answer */
    uint32_t *slot_ukey;  /* [nslots]: index into ukeys */
    size_t nukeys;
    oc_ukey_t *ukeys;
    size_t pending;     /* unique keys not resolved yet */
    oc_mc_job_t *mcjob; /* hits point into its arena */
    oc_fill_read_t read;
    double started;        /* oc_stats_now() at start */
    uint64_t near_since;   /* the near-cache's epoch at start */
    int complete;          /* resolved inside oc_req_start: no done call */
    int bypassed;          /* memcached not read (generations unknown) */
    oc_req_t *bypass_next; /* oc_reqs' list of reads bypassing memcached */
    char err[OC_ERRLEN];   /* first load error */
    oc_get_result_t result;
    char *arena; /* client keys and cache keys */
};

static void bypass_cb(evutil_socket_t fd, short what, void *arg);

oc_reqs_t *oc_reqs_new(oc_ctx_t *ctx, char *err)
{
    oc_reqs_t *rs = calloc(1, sizeof(*rs));
    if (rs == NULL || (rs->bypass_ev = evtimer_new(ctx->base, bypass_cb, rs)) == NULL) {
        free(rs);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    rs->ctx = ctx;
    return rs;
}

void oc_reqs_free(oc_reqs_t *rs)
{
    if (rs == NULL)
        return;
    event_free(rs->bypass_ev);
    free(rs);
}

void oc_req_free(oc_req_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nukeys; i++)
        oc_blob_unref(r->ukeys[i].blob);
    oc_mc_job_free(r->mcjob);
    free(r->arena);
    free(r);
}

/* A reply's hold on a request: the caller's reference and one per value in
 * an output by reference. */
typedef struct req_hold {
    oc_req_t *req;
    size_t refs;
    size_t done; /* values the output was done with (for values_by_ref) */
} req_hold_t;

static void req_unref(const void *data, size_t len, void *arg)
{
    (void)len;
    req_hold_t *h = arg;
    h->done += data != NULL;
    if (--h->refs == 0) {
        oc_req_free(h->req);
        free(h);
    }
}

void oc_req_hold(oc_req_t *req, oc_reply_fmt_t *f)
{
    f->unref = NULL;
    f->unref_arg = NULL;
    f->refs = NULL;
    const oc_get_result_t *r = &req->result;
    for (size_t i = 0; i < r->n; i++) {
        if (r->items[i].state != OC_GET_FOUND || r->items[i].len < OC_REPLY_REF_MIN)
            continue;
        req_hold_t *h = malloc(sizeof(*h));
        if (h == NULL)
            return;
        h->req = req;
        h->refs = 1; /* the caller's, dropped by oc_req_release */
        h->done = 0;
        f->unref = req_unref;
        f->unref_arg = h;
        f->refs = &h->refs;
        return;
    }
}

void oc_req_release(oc_req_t *req, oc_reply_fmt_t *f)
{
    req_hold_t *h = f->unref == req_unref ? f->unref_arg : NULL;
    f->unref = NULL;
    f->unref_arg = NULL;
    f->refs = NULL;
    if (h == NULL) {
        oc_req_free(req);
        return;
    }
    /* the references the reply took: those left and those done */
    req->ctx->stats->values_by_ref += h->refs - 1 + h->done;
    req_unref(NULL, 0, h);
}

void oc_req_detach(oc_req_t *req)
{
    req->done = NULL;
}

int oc_req_complete(const oc_req_t *req)
{
    return req->complete;
}

const oc_get_result_t *oc_req_result(const oc_req_t *req)
{
    return &req->result;
}

/* What this request read or loaded enters the near-cache (for models that
 * use it), unless an invalidation of the key came after the request began. */
static void req_near_store(oc_req_t *r)
{
    oc_ctx_t *ctx = r->ctx;
    double now = 0;
    for (size_t i = 0; i < r->nukeys; i++) {
        const oc_ukey_t *uk = &r->ukeys[i];
        const oc_model_conf_t *m = &ctx->conf->models[uk->w.model_idx];
        if (m->near_ttl_ms == 0 || uk->from_near || uk->no_near ||
            (uk->state != OC_GET_FOUND && uk->state != OC_GET_ABSENT))
            continue;
        if (now == 0)
            now = oc_stats_now();
        oc_near_val_t v = {.blob = uk->blob,
                           .data = uk->data,
                           .len = uk->len,
                           .absent = uk->state == OC_GET_ABSENT};
        oc_near_put(ctx->near, uk->w.ckey, uk->w.ckey_len, (uint32_t)uk->w.model_idx, &v,
                    m->near_ttl_ms / 1000.0, r->near_since, now);
    }
}

/* Every unique key is resolved: the result, then done. */
static void req_finish(oc_req_t *r)
{
    oc_stats_t *st = r->ctx->stats;
    if (oc_near_serving(r->ctx->near, r->started))
        req_near_store(r);
    oc_hist_observe(&st->request_seconds, oc_stats_now() - r->started);
    for (size_t i = 0; i < r->nukeys; i++)
        st->get_absent += r->ukeys[i].state == OC_GET_ABSENT;
    for (size_t i = 0; i < r->nslots; i++) {
        const oc_ukey_t *uk = &r->ukeys[r->slot_ukey[i]];
        oc_get_item_t *it = &r->items[i];
        it->state = uk->state;
        it->data = uk->data;
        it->len = uk->len;
        it->cas = uk->cas;
        it->from_near = uk->from_near;
    }
    r->result = (oc_get_result_t){r->nslots, r->items, r->err[0] ? r->err : NULL,
                                  r->ctx->conf->max_reply};
    if (r->complete)
        return; /* inside oc_req_start: the caller answers */
    if (r->done)
        r->done(r, r->arg);
    else
        oc_req_free(r);
}

static void key_resolved(oc_req_t *r)
{
    if (--r->pending == 0)
        req_finish(r);
}

/* oc_fill answers a missed key. */
static void ukey_filled(oc_fill_waiter_t *w, oc_get_state_t state, oc_blob_t *blob,
                        const char *err)
{
    oc_ukey_t *uk = (oc_ukey_t *)w; /* w is the first member */
    oc_req_t *r = uk->req;
    uk->state = state;
    uk->no_near = w->unconfirmed;
    if (state == OC_GET_FOUND) {
        uk->blob = oc_blob_ref(blob);
        uk->data = blob->data;
        uk->len = blob->len;
        uk->cas = 0;
    } else if (state == OC_GET_ERROR && r->err[0] == '\0') {
        snprintf(r->err, sizeof(r->err), "%s", err ? err : "unknown error");
    }
    key_resolved(r);
}

/* ---- memcached answer ------------------------------------------------------ */

/* A hit, offered to the consistency sampler (one random draw). */
static void ukey_sample(const oc_req_t *r, const oc_ukey_t *uk)
{
    oc_sampler_offer_hit(r->ctx->sampler, uk->w.model_idx, uk->w.ckey + uk->w.canon_off,
                         uk->w.ckey_len - uk->w.canon_off);
}

/* What the read found for uk: resolved now (1), or a miss (0). */
static int ukey_read(oc_req_t *r, oc_ukey_t *uk, const oc_mc_job_t *job, size_t i)
{
    const oc_mc_hit_t *h = &job->hits[i];
    oc_entry_class_t c = oc_entry_classify(h);
    oc_stats_t *st = r->ctx->stats;
    if (h->too_large) { /* its value was dropped: this get fails */
        uk->state = OC_GET_TOO_LARGE;
        if (h->refresh == OC_MC_REFRESH_WON) { /* memcached chose us: reload it */
            uk->w.lease_place = h->place;
            uk->w.lease_epoch = h->cas_epoch;
            oc_fill_refresh(r->ctx->fills, &uk->w, h->cas);
        }
        /* found, as memcached counts it (its get_hits), though not answered */
        st->get_hits++;
        st->models[uk->w.model_idx].get_hits++;
        return 1;
    }
    if (c == OC_EC_OBJECT) {
        uk->state = OC_GET_FOUND;
        uk->data = h->data;
        uk->len = h->len;
        uk->cas = h->cas;
        uk->no_near = oc_entry_kind(h->flags) == OC_ENTRY_PUSHED;
        if (h->refresh == OC_MC_REFRESH_WON) { /* this reader reloads it ahead */
            uk->w.lease_place = h->place;
            uk->w.lease_epoch = h->cas_epoch;
            oc_fill_refresh(r->ctx->fills, &uk->w, h->cas);
        }
    } else if (c == OC_EC_ABSENT) {
        uk->state = OC_GET_ABSENT;
        /* A tombstone is stored unconditionally and checked after: a late
         * one over a row that came back is replaced in memcached only, and
         * no invalidation would reach a near-cache copy of its absence. */
        uk->no_near = oc_entry_kind(h->flags) == OC_ENTRY_TOMBSTONE;
    } else {
        uk->w.read_seq = r->read.seq;
        uk->w.read = c;
        uk->w.lease_cas = h->cas;
        uk->w.lease_epoch = h->cas_epoch;
        uk->w.lease_place = h->place;
        st->models[uk->w.model_idx].get_misses++;
        return 0;
    }
    st->get_hits++;
    st->models[uk->w.model_idx].get_hits++;
    ukey_sample(r, uk);
    return 1;
}

static void req_read_done(oc_mc_job_t *job, void *arg)
{
    oc_req_t *r = arg;
    oc_ctx_t *ctx = r->ctx;
    if (job->errors) {
        ctx->stats->mc_errors++;
        oc_log_debug("event=mc_get_error errors=%zu reason=\"%s\"", job->errors,
                     job->err);
    }
    /* The read's own pending count (see oc_req_start) is held across this
     * function, so keys resolved here cannot finish and free the request
     * under our feet. */
    oc_fill_waiter_t **misses = malloc(r->nukeys * sizeof(*misses));
    size_t nmiss = 0, nread = 0;
    for (size_t i = 0; i < r->nukeys; i++) {
        oc_ukey_t *uk = &r->ukeys[i];
        if (uk->job_idx == NO_JOB)
            continue; /* answered by the near-cache */
        nread++;
        if (ukey_read(r, uk, job, uk->job_idx)) {
            r->pending--;
        } else if (misses) {
            misses[nmiss++] = &uk->w;
        } else {
            ukey_filled(&uk->w, OC_GET_ERROR, NULL, "out of memory");
        }
    }
    ctx->stats->get_misses += nmiss;
    oc_reqs_t *rs = ctx->reqs;
    /* A bypass read says nothing of what memcached holds: counted, its
     * failed keys kept meta gets on for about 95 gets after it. */
    if (!r->bypassed)
        oc_req_misses_add(&rs->misses, nmiss, nread);
    oc_fills_t *fs = ctx->fills;
    if (nmiss)
        oc_fill_misses(fs, misses, nmiss);
    free(misses);
    /* After this read's misses joined their fills, older fills may go
     * (read_end may free r through key_resolved below: read first). */
    oc_fill_read_end(fs, &r->read);
    key_resolved(r);
}

/* ---- start ----------------------------------------------------------------- */

static oc_req_t *req_alloc(size_t n, const oc_token_t *echo)
{
    size_t bytes = 1;
    for (size_t i = 0; i < n; i++)
        bytes += echo[i].len + OC_KEY_MAX + 1; /* the client key, its cache key */
    size_t sz = sizeof(oc_req_t) +
                n * (sizeof(oc_ukey_t) + sizeof(oc_get_item_t) + sizeof(uint32_t));
    oc_req_t *r = calloc(1, sz);
    if (r == NULL)
        return NULL;
    if ((r->arena = malloc(bytes)) == NULL) {
        free(r);
        return NULL;
    }
    r->ukeys = (oc_ukey_t *)(r + 1);
    r->items = (oc_get_item_t *)(r->ukeys + n);
    r->slot_ukey = (uint32_t *)(r->items + n);
    return r;
}

oc_status_t oc_req_unique(oc_map_t *seen, const char *ck, size_t cklen, uint32_t next,
                          uint32_t *idx, int *is_new)
{
    /* The map holds index + 1: its values are never NULL. */
    void *prev = NULL;
    if (seen &&
        oc_map_add(seen, ck, cklen, (void *)((uintptr_t)next + 1), &prev) != OC_OK)
        return OC_ENOMEM;
    *is_new = prev == NULL;
    *idx = prev ? (uint32_t)((uintptr_t)prev - 1) : next;
    return OC_OK;
}

void oc_req_misses_add(oc_req_misses_t *m, size_t missed, size_t read)
{
    if (read == 0 || missed > read)
        return;
    m->missed += ((double)missed - m->missed) / OC_REQ_MISS_WINDOW;
    m->read += ((double)read - m->read) / OC_REQ_MISS_WINDOW;
}

int oc_req_use_mg(const oc_req_misses_t *m)
{
    /* nothing read yet: multi-gets, the cheaper guess for a warm pool */
    return m->read > 0 && m->missed > OC_REQ_MG_ABOVE * m->read;
}

/* Parse every key into slots and unique cache keys. */
static oc_status_t req_parse_keys(oc_req_t *r, const oc_token_t *keys,
                                  const oc_token_t *echo, size_t n, char *err)
{
    oc_ctx_t *ctx = r->ctx;
    const char *prefix = ctx->conf->key_prefix;
    oc_map_t *seen = n > 1 ? oc_map_new(n) : NULL;
    if (n > 1 && seen == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    char *a = r->arena;
    oc_status_t st = OC_OK;
    /* the last model's key head: a get's keys are mostly of one model, and
     * its generation (16 digits) need not be formatted for each */
    char head[OC_KEY_HEAD_MAX];
    size_t head_len = 0, head_model = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        oc_key_t k;
        st = oc_key_parse(ctx->conf, keys[i].p, keys[i].len, ctx->max_key_len, &k, err);
        if (st != OC_OK)
            goto done;
        memcpy(a, echo[i].p, echo[i].len);
        r->items[i] = (oc_get_item_t){.key = a, .klen = echo[i].len};
        a += echo[i].len;
        char *ck = a;
        size_t canon_off;
        if (k.model_idx != head_model) {
            head_len = oc_key_cache_head(prefix, k.model->name,
                                         ctx->model_gen[k.model_idx], head);
            head_model = k.model_idx;
        }
        size_t cklen = oc_key_cache_key_at(head, head_len, k.canon, k.canon_len, ck,
                                           OC_KEY_MAX + 1, &canon_off);
        a += cklen + 1;
        int is_new;
        if ((st = oc_req_unique(seen, ck, cklen, (uint32_t)r->nukeys, &r->slot_ukey[i],
                                &is_new)) != OC_OK) {
            oc_fail(err, OC_ENOMEM, "out of memory");
            goto done;
        }
        if (!is_new)
            continue;
        oc_ukey_t *uk = &r->ukeys[r->nukeys];
        *uk = (oc_ukey_t){.req = r,
                          .w = {.ckey = ck,
                                .ckey_len = cklen,
                                .canon_off = canon_off,
                                .model_idx = k.model_idx,
                                .done = ukey_filled}};
        r->nukeys++;
    }
    r->nslots = n;
done:
    oc_map_free(seen);
    return st;
}

/* uk resolved by what the near-cache answered (1), or a miss (0). */
static int ukey_near(oc_req_t *r, oc_ukey_t *uk, const oc_near_ask_t *ask)
{
    if (ask->found == OC_NEAR_MISS)
        return 0;
    uk->job_idx = NO_JOB;
    uk->from_near = 1;
    ukey_sample(r, uk);
    uk->state = ask->found == OC_NEAR_OBJECT ? OC_GET_FOUND : OC_GET_ABSENT;
    if (ask->found == OC_NEAR_OBJECT) {
        uk->blob = oc_blob_ref(ask->blob);
        uk->data = ask->blob->data;
        uk->len = ask->blob->len;
    }
    return 1;
}

/* Answer what the near-cache holds (models with a near_ttl, while it
 * serves); number the others for the memcached read. Returns how many are
 * left to read. */
static size_t req_near(oc_req_t *r)
{
    oc_ctx_t *ctx = r->ctx;
    oc_near_t *near = ctx->near;
    int serving = oc_near_serving(near, r->started);
    r->near_since = oc_near_epoch(near);
    size_t n = 0;
    /* the keys asked of the near-cache, a group at a time (its lookups
     * overlap: oc_near_get_many) */
    oc_near_ask_t asks[OC_NEAR_GET_MANY];
    for (size_t from = 0; from < r->nukeys; from += OC_NEAR_GET_MANY) {
        size_t to =
            r->nukeys - from < OC_NEAR_GET_MANY ? r->nukeys : from + OC_NEAR_GET_MANY;
        size_t na = 0;
        for (size_t i = from; i < to && serving; i++) {
            const oc_ukey_t *uk = &r->ukeys[i];
            if (ctx->conf->models[uk->w.model_idx].near_ttl_ms > 0)
                asks[na++] = (oc_near_ask_t){.key = uk->w.ckey, .klen = uk->w.ckey_len};
        }
        oc_near_get_many(near, asks, na, r->started);
        for (size_t i = from, a = 0; i < to; i++) {
            oc_ukey_t *uk = &r->ukeys[i];
            if (a < na && asks[a].key == uk->w.ckey) { /* asked, in order */
                if (ukey_near(r, uk, &asks[a++]))
                    continue;
            }
            uk->job_idx = (uint32_t)n++;
        }
    }
    return n;
}

void oc_reqs_flush(oc_reqs_t *rs)
{
    oc_req_t *r = rs->bypass_head;
    rs->bypass_head = NULL;
    while (r != NULL) {
        oc_req_t *next = r->bypass_next; /* r may be freed by its answer */
        req_read_done(r->mcjob, r);
        r = next;
    }
}

static void bypass_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_reqs_flush(arg);
}

/* Send the request's read: while more than a few of the keys read miss
 * (over OC_REQ_MG_ABOVE of them lately), each key is read with a meta get
 * that takes a miss's lease in the same round trip (one round trip less
 * per cold get); while few miss, one multi-get per server is cheaper for
 * memcached and for us, and the few misses take their lease after
 * (oc_fill). Keys, not gets, are counted: with 1% of keys missing, most
 * gets of 100 keys miss one, and per-key meta gets for the other 99 cost
 * more than the missed key's second round trip. */
static oc_status_t req_read(oc_req_t *r, size_t n, char *err)
{
    oc_ctx_t *ctx = r->ctx;
    r->mcjob = oc_mc_job_new_get(n, req_read_done, r);
    if (r->mcjob == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    r->mcjob->max_bytes = ctx->conf->max_reply;
    if (oc_req_use_mg(&ctx->reqs->misses) && !ctx->gens_unknown) {
        r->mcjob->lease_ttl_s = ctx->lease_ttl_s;
        ctx->stats->mc_gets_leasing++;
    }
    for (size_t i = 0; i < r->nukeys; i++) {
        const oc_ukey_t *uk = &r->ukeys[i];
        if (uk->job_idx == NO_JOB)
            continue;
        r->mcjob->keys[uk->job_idx] = uk->w.ckey;
        r->mcjob->key_lens[uk->job_idx] = uk->w.ckey_len;
        r->mcjob->refresh_s[uk->job_idx] =
            ctx->conf->models[uk->w.model_idx].refresh_ahead_s;
    }
    oc_fill_read_begin(ctx->fills, &r->read);
    if (ctx->gens_unknown) {
        /* The keys' generation is not known (oc_gens.h): what memcached
         * holds under these keys is no one's to trust, and nothing loaded
         * may go there. Each key reads as a failed read: loaded, answered,
         * not written back (a fill writes only over a lease). Answered on
         * the next turn of the loop, as memcached's answer would be:
         * done is never called inside oc_req_start (oc_reqs_flush). */
        for (size_t i = 0; i < n; i++)
            r->mcjob->hits[i].error = 1;
        r->bypassed = 1;
        oc_reqs_t *rs = ctx->reqs;
        r->bypass_next = rs->bypass_head; /* order does not matter */
        rs->bypass_head = r;
        struct timeval now = {0, 0};
        evtimer_add(rs->bypass_ev, &now);
        return OC_OK;
    }
    ctx->stats->mc_gets++;
    oc_mc_submit(ctx->mc, r->mcjob);
    return OC_OK;
}

oc_status_t oc_req_start(oc_ctx_t *ctx, const oc_token_t *keys, const oc_token_t *echo,
                         size_t n, oc_req_done_fn done, void *arg, oc_req_t **out,
                         char *err)
{
    if (echo == NULL)
        echo = keys;
    *out = NULL;
    if (n > ctx->conf->max_keys)
        return oc_fail(err, OC_ETOOBIG, "too many keys (max %u)", ctx->conf->max_keys);
    oc_req_t *r = req_alloc(n, echo);
    if (r == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    r->ctx = ctx;
    r->done = done;
    r->arg = arg;
    oc_status_t st = req_parse_keys(r, keys, echo, n, err);
    if (st != OC_OK)
        goto fail;
    r->started = oc_stats_now();
    ctx->stats->get_keys += r->nslots;
    for (size_t i = 0; i < r->nslots; i++)
        ctx->stats->models[r->ukeys[r->slot_ukey[i]].w.model_idx].get_keys++;
    size_t nread = req_near(r);
    if (nread == 0) { /* every key answered from the near-cache */
        r->complete = 1;
        req_finish(r);
        *out = r;
        return OC_OK;
    }
    r->pending = nread + 1; /* + the read itself, released in read_done */
    if ((st = req_read(r, nread, err)) != OC_OK)
        goto fail;
    *out = r;
    return OC_OK;
fail:
    oc_req_free(r);
    return st;
}

#include "oc_write.h"

#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "oc_blob.h"
#include "oc_conf.h"
#include "oc_entry.h"
#include "oc_fill.h"
#include "oc_gate.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_near.h"
#include "oc_pg.h"
#include "oc_stats.h"

struct oc_write {
    oc_ctx_t *ctx;
    oc_write_done_fn done; /* NULL once detached */
    void *arg;
    int tombstone;
    size_t model_idx;           /* stable across reloads (oc_reload.h) */
    int push_check;             /* the model's, copied at the push */
    char *version_column;       /* copied, for push_decide: a reload may free the
                                   model before memcached answers */
    json_t *version;            /* push with a version_column: its value */
    json_t *obj;                /* push: the body, parsed, for the check */
    char ckey[OC_KEY_MAX + 16]; /* cache key */
    size_t ckey_len;
    size_t canon_off; /* the canonical id starts at ckey + canon_off */
    char *json;       /* push: owned copy of the body */
    size_t len;
    char token[40]; /* tombstone: its value, unique to this write (below) */
    size_t token_len;
    uint64_t stored_cas; /* push: the cas of the item it stored (0: unknown),
                            in its server's cas epoch cas_epoch: its check replaces
                            that item and no other */
    uint64_t cas_epoch;
    oc_write_t *check_next;  /* in the writes' check queue */
    int holding;             /* its reply waits for the check (write_done) */
    oc_write_outcome_t held; /* that reply */
    uint64_t near_since;     /* the near-cache's epoch after this write dropped
                                its key there */
};

struct oc_writes {
    oc_ctx_t *ctx;
    size_t live; /* writes not freed: in memcached, or waiting for their check */
    uint64_t token_base, token_seq;      /* tombstones' tokens */
    oc_write_t *check_head, *check_tail; /* stored, not yet checked */
    size_t checking;                     /* stored, waiting for or in their check */
    int full;                            /* checking reached OC_WRITE_CHECKS_MAX, not
                                            yet back under half of it (logged) */
    struct event *check_ev;              /* starts the checks of a turn */
    oc_ratelogs_t check_failed;          /* per model: push_check_failed lines */
};

/* One model's unordered pushes, checked by one load. */
typedef struct oc_check {
    oc_writes_t *ws;
    size_t model_idx;
    size_t n;
    oc_write_t **w;
    int loaded;           /* the load answered: rows[] says what is right */
    oc_blob_t **rows;     /* [n] PostgreSQL's row where it differs, else NULL */
    unsigned char *agree; /* [n] the push equals PostgreSQL's row (a tombstone:
                             there is no row) */
    size_t ncorrect;      /* the swaps that correct (the job's first ones) */
    struct event *timer;  /* the fill gate's (tests only) */
} oc_check_t;

static void push_check_add(oc_write_t *w);

static void write_free(oc_write_t *w)
{
    if (w->holding && w->done) /* a reply held until the check (write_done) */
        w->done(w->arg, w->held, "");
    w->ctx->writes->live--;
    json_decref(w->obj);
    json_decref(w->version);
    free(w->version_column);
    free(w->json);
    free(w);
}

void oc_write_detach(oc_write_t *w)
{
    w->done = NULL;
}

/* Called by oc_mc with what the key holds: is our push newer than that? */
static oc_mc_decision_t push_decide(const oc_mc_item_t *it, int found, uint32_t flags,
                                    const char *val, size_t len)
{
    const oc_write_t *w = it->decide_arg;
    return oc_write_decide(w->version, w->version_column, found, flags, val, len);
}

/* This sidecar's near-cache gets what the app just wrote (read-your-writes
 * on the host): a tombstone's absence, or a push memcached proved newer
 * (or PostgreSQL confirmed). An unordered push waits for its check. */
static void write_near(const oc_write_t *w, int absent)
{
    oc_ctx_t *ctx = w->ctx;
    uint32_t ttl_ms = ctx->conf->models[w->model_idx].near_ttl_ms;
    if (ttl_ms == 0)
        return;
    oc_near_val_t v = {.data = w->json, .len = w->len, .absent = absent};
    oc_near_put(ctx->near, w->ckey, w->ckey_len, (uint32_t)w->model_idx, &v,
                ttl_ms / 1000.0, w->near_since, oc_stats_now());
}

oc_write_outcome_t oc_write_outcome(int tombstone, oc_mc_result_t r)
{
    switch (r) {
    case OC_MC_R_OK:
        return tombstone ? OC_WRITE_DELETED : OC_WRITE_STORED;
    case OC_MC_R_NOT_STORED:
        return OC_WRITE_NOT_STORED;
    default:
        return OC_WRITE_FAILED;
    }
}

int oc_write_needs_check(int tombstone, int push_check, oc_mc_result_t r, int unordered)
{
    return push_check && r == OC_MC_R_OK && (tombstone || unordered);
}

static void write_done(oc_mc_job_t *job, void *arg)
{
    oc_write_t *w = arg;
    oc_stats_t *st = w->ctx->stats;
    const oc_mc_item_t *it = &job->items[0];
    int check =
        oc_write_needs_check(w->tombstone, w->push_check, it->result, it->unordered);
    oc_write_outcome_t o = oc_write_outcome(w->tombstone, it->result);
    w->stored_cas = it->stored_cas;
    w->cas_epoch = it->cas_epoch;
    st->pushes_stale += o == OC_WRITE_NOT_STORED;
    st->mc_errors += o == OC_WRITE_FAILED;
    if (!check && (o == OC_WRITE_DELETED || (o == OC_WRITE_STORED && !it->unordered)))
        write_near(w, w->tombstone);
    /* Checks waiting for PostgreSQL are bounded: past OC_WRITE_CHECKS_MAX a
     * write's reply waits for its check, so its connection reads no more
     * commands meanwhile. Answered at once, a client pushing faster than
     * PostgreSQL checks (a slow or locked table, noreply pipelines) grew
     * the daemon without bound for load_timeout (a probe: 221 MB in 20 s).
     * Held from the bound until back under half of it (ws->full), not on
     * and off around the bound. */
    oc_writes_t *ws = w->ctx->writes;
    if (check && w->done && (ws->full || ws->checking >= OC_WRITE_CHECKS_MAX)) {
        w->holding = 1;
        w->held = o;
        st->push_replies_held++;
    } else {
        if (w->done)
            w->done(w->arg, o, job->err[0] ? job->err : "write failed");
        w->done = NULL;
    }
    oc_mc_job_free(job);
    if (check)
        push_check_add(w);
    else
        write_free(w);
}

/* Parse the key into the model and the cache key. */
static oc_status_t write_key(oc_write_t *w, const char *key, size_t klen,
                             const oc_model_conf_t **model, char *err)
{
    oc_ctx_t *ctx = w->ctx;
    oc_key_t k;
    oc_status_t st = oc_key_parse(ctx->conf, key, klen, ctx->max_key_len, &k, err);
    if (st != OC_OK)
        return st;
    *model = k.model;
    w->model_idx = k.model_idx;
    w->push_check = k.model->push_check;
    w->ckey_len = oc_key_cache_key(ctx->conf->key_prefix, k.model->name,
                                   ctx->model_gen[k.model_idx], k.canon, k.canon_len,
                                   w->ckey, sizeof(w->ckey), &w->canon_off);
    return OC_OK;
}

static oc_status_t write_start(oc_write_t *w, const oc_model_conf_t *m, char *err)
{
    oc_ctx_t *ctx = w->ctx;
    oc_mc_job_t *job =
        oc_mc_job_new_items(w->tombstone ? OC_MC_SET : OC_MC_PUSH, 1, write_done, w);
    if (job == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    oc_mc_item_t *it = &job->items[0];
    it->key = w->ckey;
    it->klen = w->ckey_len;
    if (!w->tombstone) {
        it->val = w->json;
        it->vlen = w->len;
        it->decide = push_decide;
        it->decide_arg = w;
        /* stored over what it cannot be ordered against: PUSHED until its
         * check (oc_entry.h) */
        it->unordered_flags = oc_entry_flags(OC_ENTRY_PUSHED);
    }
    oc_entry_item(it, w->tombstone ? OC_ENTRY_TOMBSTONE : OC_ENTRY_OBJECT, m,
                  ctx->conf->ttl_jitter_pct);
    /* ... and for missing_ttl only: the check gives it the model's ttl
     * (confirmed) or replaces it. Should the check never run (this
     * sidecar killed before it), a late push is not served for ttl
     * (found by a review, 2026-12-05). */
    if (!w->tombstone && w->push_check) {
        it->unordered_ttl_s = oc_entry_jitter(m->missing_ttl_s, ctx->conf->ttl_jitter_pct,
                                              it->key, it->klen);
        if (it->unordered_ttl_s > it->exptime_s) /* missing_ttl set above ttl */
            it->unordered_ttl_s = it->exptime_s;
    }
    if (w->tombstone) { /* readers look at the flags only */
        it->val = w->token;
        it->vlen = w->token_len;
    }
    oc_fill_invalidate(ctx->fills, w->ckey, w->ckey_len);
    /* What the near-cache held, and any read under way, is older: drop it
     * now; what this write stores there later starts from here. */
    oc_near_invalidate(ctx->near, w->ckey, w->ckey_len);
    w->near_since = oc_near_epoch(ctx->near);
    oc_mc_submit(ctx->mc, job);
    return OC_OK;
}

static oc_write_t *write_new(oc_ctx_t *ctx, oc_write_done_fn done, void *arg)
{
    oc_write_t *w = calloc(1, sizeof(*w));
    if (w) {
        ctx->writes->live++;
        w->ctx = ctx;
        w->done = done;
        w->arg = arg;
    }
    return w;
}

/* The push's body: one JSON object, with the model's version if it has one,
 * and, if it carries the model's key column, the key's own id (a body of
 * another row, ordered by its version alone, was served as this key's
 * until ttl; found by a review, 2026-12-05). */
static oc_status_t push_body(oc_write_t *w, const oc_model_conf_t *m, const char *json,
                             size_t len, char *err)
{
    oc_status_t st =
        oc_write_parse_body(json, len, m->version_column, &w->obj, &w->version, err);
    if (st != OC_OK)
        return st;
    if (!oc_write_id_matches(json_object_get(w->obj, m->key_column), m->key_type,
                             w->ckey + w->canon_off, w->ckey_len - w->canon_off))
        return oc_fail(err, OC_EINVAL, "value's \"%s\" is not the key's id",
                       m->key_column);
    if (m->version_column && (w->version_column = strdup(m->version_column)) == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    if ((w->json = malloc(len ? len : 1)) == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    memcpy(w->json, json, len);
    w->len = len;
    return OC_OK;
}

oc_status_t oc_write_push(oc_ctx_t *ctx, const char *key, size_t klen, const char *json,
                          size_t len, oc_write_done_fn done, void *arg, oc_write_t **out,
                          char *err)
{
    *out = NULL;
    oc_write_t *w = write_new(ctx, done, arg);
    if (w == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    const oc_model_conf_t *m;
    oc_status_t st = write_key(w, key, klen, &m, err);
    if (st == OC_OK)
        st = push_body(w, m, json, len, err);
    if (st == OC_OK)
        st = write_start(w, m, err);
    if (st != OC_OK) {
        write_free(w);
        return st;
    }
    ctx->stats->cmd_push++;
    *out = w;
    return OC_OK;
}

oc_status_t oc_write_tombstone(oc_ctx_t *ctx, const char *key, size_t klen,
                               oc_write_done_fn done, void *arg, oc_write_t **out,
                               char *err)
{
    *out = NULL;
    oc_write_t *w = write_new(ctx, done, arg);
    if (w == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    w->tombstone = 1;
    /* A tombstone's value is a token of its own: the check's swap replaces
     * the entry only while it still holds these bytes, and were every
     * tombstone alike (empty) it would replace a later delete's tombstone
     * written after this one was invalidated, bringing the row back for
     * its TTL (found by a review). */
    oc_writes_t *ws = ctx->writes;
    w->token_len =
        (size_t)snprintf(w->token, sizeof(w->token), "%016" PRIx64 "%016" PRIx64,
                         ws->token_base, ++ws->token_seq);
    const oc_model_conf_t *m;
    oc_status_t st = write_key(w, key, klen, &m, err);
    if (st == OC_OK)
        st = write_start(w, m, err);
    if (st != OC_OK) {
        write_free(w);
        return st;
    }
    ctx->stats->cmd_tombstone++;
    *out = w;
    return OC_OK;
}

/* ---- the check of unordered pushes and of tombstones ----------------------
 *
 * A push the cache could not order (see push_decide) was stored, and may be
 * older than what PostgreSQL has: its app was slow to push, and a later
 * commit's invalidation already emptied the key. No invalidation will come
 * for that later commit again, so objcached asks PostgreSQL itself, after
 * the store: the row read then is at least as new as the push. If it
 * differs (or is gone), it replaces the pushed object by cas, only if the
 * key still holds the very item the push stored: a write that lands
 * meanwhile wins (even one of the same bytes),
 * and an invalidation that lands meanwhile deletes what the check wrote.
 * If it agrees, the PUSHED entry becomes an OBJECT the same way (its version
 * may now order later pushes). A tombstone is stored unconditionally and
 * checked the same way: a late one over a row that came back (inserted
 * again, its invalidation applied already) is replaced by the row.
 * Checks run in batches: one load per model per loop turn. */

/* One fewer write checking; back under half the bound, said once. */
static void check_ended(oc_writes_t *ws)
{
    ws->checking--;
    ws->ctx->stats->push_checks_waiting = ws->checking;
    if (ws->full && ws->checking < OC_WRITE_CHECKS_MAX / 2) {
        ws->full = 0;
        oc_log_info("event=push_checks_below waiting=%zu", ws->checking);
    }
}

static void check_free(oc_check_t *c)
{
    c->ws->ctx->stats->loads_in_flight -= c->n;
    for (size_t i = 0; i < c->n; i++)
        check_ended(c->ws);
    for (size_t i = 0; i < c->n; i++) {
        write_free(c->w[i]);
        if (c->rows)
            oc_blob_unref(c->rows[i]);
    }
    if (c->timer)
        event_free(c->timer);
    free(c->rows);
    free(c->agree);
    free(c->w);
    free(c);
}

static void check_swapped(oc_mc_job_t *job, void *arg)
{
    oc_check_t *c = arg;
    oc_stats_t *st = c->ws->ctx->stats;
    if (job->errors)
        st->mc_errors++;
    for (size_t i = 0; i < job->n && i < c->ncorrect; i++)
        st->pushes_corrected += (job->items[i].result == OC_MC_R_OK);
    oc_mc_job_free(job);
    check_free(c);
}

/* Does write i's entry need a swap? Not when PostgreSQL agrees with a
 * tombstone (nothing to confirm: absent is absent). */
static int check_swaps(const oc_check_t *c, size_t i)
{
    return !(c->loaded && c->agree[i] && c->w[i]->tombstone);
}

/* Corrections come first in the swap job (pushes_corrected counts them). */
static int check_corrects(const oc_check_t *c, size_t i)
{
    return c->loaded && !c->agree[i];
}

/* The swap of write i: its entry for PostgreSQL's row or a "missing" entry;
 * a push PostgreSQL agrees with confirmed as an OBJECT; or (the load failed:
 * unchecked) itself kept for missing_ttl only. */
static void check_item(const oc_check_t *c, size_t i, const oc_model_conf_t *m,
                       oc_mc_item_t *it)
{
    const oc_write_t *w = c->w[i];
    uint32_t jitter = c->ws->ctx->conf->ttl_jitter_pct;
    oc_entry_kind_t was = w->tombstone ? OC_ENTRY_TOMBSTONE : OC_ENTRY_PUSHED;
    it->key = w->ckey;
    it->klen = w->ckey_len;
    /* A push's check replaces the very item the push stored (by its cas):
     * a later push of the same bytes, stored after an invalidation emptied
     * the key, is another item and wins (found by a review). Without that
     * cas (a tombstone), or where it means nothing (the key's server is
     * another, or out of service since: oc_mc.h), the item that still holds
     * exactly these bytes: a tombstone's are its own token. */
    it->cas = w->stored_cas;
    it->cas_epoch = w->cas_epoch; /* a cas means nothing on another server */
    it->expect = w->tombstone ? w->token : w->json;
    it->expect_len = w->tombstone ? w->token_len : w->len;
    it->expect_flags = oc_entry_flags(was);
    if (!c->loaded) {
        it->val = it->expect;
        it->vlen = it->expect_len;
        it->flags = oc_entry_flags(was);
        it->exptime_s = oc_entry_jitter(m->missing_ttl_s, jitter, it->key, it->klen);
    } else if (c->agree[i]) {
        it->val = w->json;
        it->vlen = w->len;
        oc_entry_item(it, OC_ENTRY_OBJECT, m, jitter);
    } else if (c->rows[i]) {
        it->val = c->rows[i]->data;
        it->vlen = c->rows[i]->len;
        oc_entry_item(it, OC_ENTRY_OBJECT, m, jitter);
    } else {
        oc_entry_item(it, OC_ENTRY_MISSING, m, jitter);
    }
}

static void check_gate_cb(evutil_socket_t fd, short what, void *arg);

/* Swap each pushed object that PostgreSQL disagrees with. */
static void check_correct(oc_check_t *c)
{
    oc_ctx_t *ctx = c->ws->ctx;
    if (ctx->mc && oc_gate_hold(ctx->gate, &c->timer, check_gate_cb, c))
        return;
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++) {
        k += (size_t)check_swaps(c, i);
        c->ncorrect += (size_t)check_corrects(c, i);
        if (c->loaded && c->agree[i]) /* confirmed: the near-cache may have it */
            write_near(c->w[i], c->w[i]->tombstone);
    }
    oc_mc_job_t *job =
        k && ctx->mc ? oc_mc_job_new_items(OC_MC_SWAP, k, check_swapped, c) : NULL;
    if (job == NULL) {
        check_free(c);
        return;
    }
    const oc_model_conf_t *m = &ctx->conf->models[c->model_idx];
    k = 0;
    for (int pass = 0; pass < 2; pass++) /* the corrections first */
        for (size_t i = 0; i < c->n; i++)
            if (check_swaps(c, i) && check_corrects(c, i) == !pass)
                check_item(c, i, m, &job->items[k++]);
    ctx->stats->mc_sets += k;
    oc_mc_submit(ctx->mc, job);
}

static void check_gate_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    check_correct(arg);
}

/* Keep, per push, whether PostgreSQL agrees and else its row (copied: the
 * swap may wait for the gate, past this callback). */
static oc_status_t check_keep_rows(oc_check_t *c, const oc_pg_row_t *rows)
{
    c->rows = calloc(c->n, sizeof(*c->rows));
    c->agree = calloc(c->n, 1);
    if (c->rows == NULL || c->agree == NULL)
        return OC_ENOMEM;
    for (size_t i = 0; i < c->n; i++) {
        c->agree[i] = (unsigned char)(c->w[i]->tombstone
                                          ? rows[i].json == NULL
                                          : oc_write_check_agrees(
                                                c->w[i]->obj, rows[i].json, rows[i].len));
        if (!c->agree[i] && rows[i].json &&
            (c->rows[i] = oc_blob_new(rows[i].json, rows[i].len)) == NULL)
            return OC_ENOMEM;
    }
    return OC_OK;
}

static void check_loaded(const oc_pg_row_t *rows, size_t n, oc_status_t st,
                         const char *err, void *arg)
{
    oc_check_t *c = arg;
    oc_ctx_t *ctx = c->ws->ctx;
    if (st == OC_OK && (n != c->n || check_keep_rows(c, rows) != OC_OK))
        st = OC_ENOMEM, err = "out of memory";
    c->loaded = st == OC_OK;
    if (c->loaded) {
        ctx->stats->pushes_checked += c->n;
    } else {
        /* Once a second per model: with PostgreSQL down every loop turn
         * with a push fails a check (as oc_fill's load_failed). */
        uint64_t keys = 0;
        uint64_t checks = oc_ratelogs_due(&c->ws->check_failed, c->model_idx, c->n,
                                          oc_stats_now(), 1.0, &keys);
        char q[OC_ERRLEN];
        if (checks)
            oc_log_warn("event=push_check_failed model=%s checks=%llu keys=%llu "
                        "reason=\"%s\"",
                        ctx->conf->models[c->model_idx].name, (unsigned long long)checks,
                        (unsigned long long)keys, oc_log_clean(q, sizeof(q), err));
        ctx->stats->pushes_unchecked += c->n;
    }
    check_correct(c);
}

/* Take the queued pushes of the first one's model out of the queue. */
static oc_check_t *check_take(oc_writes_t *ws)
{
    size_t m = ws->check_head->model_idx, n = 0;
    for (oc_write_t *w = ws->check_head; w; w = w->check_next)
        n += (w->model_idx == m);
    oc_check_t *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->w = malloc(n * sizeof(*c->w))) == NULL) {
        free(c);
        return NULL;
    }
    c->ws = ws;
    c->model_idx = m;
    oc_write_t **link = &ws->check_head, *last = NULL;
    while (*link) {
        oc_write_t *w = *link;
        if (w->model_idx == m) {
            *link = w->check_next;
            c->w[c->n++] = w;
        } else {
            last = w;
            link = &w->check_next;
        }
    }
    ws->check_tail = last;
    return c;
}

/* Push i's canonical id, for the check's load. */
static void check_id(const void *arg, size_t i, const char **p, size_t *len)
{
    const oc_write_t *w = ((const oc_check_t *)arg)->w[i];
    *p = w->ckey + w->canon_off;
    *len = w->ckey_len - w->canon_off;
}

static void check_run(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_writes_t *ws = arg;
    while (ws->check_head) {
        oc_check_t *c = check_take(ws);
        if (c == NULL) { /* out of memory: try again next turn */
            oc_log_error("event=oom where=push_check");
            event_active(ws->check_ev, EV_TIMEOUT, 0);
            return;
        }
        if (ws->ctx->pg)
            oc_pg_load(ws->ctx->pg, c->model_idx, c->n, check_id, c, check_loaded, c);
        else
            check_loaded(NULL, 0, OC_EDB, "shutting down", c);
    }
}

static void push_check_add(oc_write_t *w)
{
    oc_writes_t *ws = w->ctx->writes;
    w->ctx->stats->loads_in_flight++; /* a load and a write-back, as a fill */
    ws->checking++;
    w->ctx->stats->push_checks_waiting = ws->checking;
    if (!ws->full && ws->checking >= OC_WRITE_CHECKS_MAX) {
        ws->full = 1;
        oc_log_warn("event=push_checks_full waiting=%zu note=\"replies to pushes and "
                    "tombstones wait for their checks: PostgreSQL is slower than the "
                    "writes\"",
                    ws->checking);
    }
    w->check_next = NULL;
    if (ws->check_tail)
        ws->check_tail->check_next = w;
    else
        ws->check_head = w;
    ws->check_tail = w;
    event_active(ws->check_ev, EV_TIMEOUT, 0); /* a no-op if active already */
}

size_t oc_writes_pending(const oc_writes_t *ws)
{
    return ws ? ws->live : 0;
}

oc_writes_t *oc_writes_new(oc_ctx_t *ctx, char *err)
{
    oc_writes_t *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    ws->ctx = ctx;
    /* Tokens unique across the fleet: random, else time and pid. */
    if (getrandom(&ws->token_base, sizeof(ws->token_base), GRND_NONBLOCK) !=
        (ssize_t)sizeof(ws->token_base))
        ws->token_base = ((uint64_t)time(NULL) << 32) ^ (uint64_t)getpid();
    if ((ws->check_ev = event_new(ctx->base, -1, 0, check_run, ws)) == NULL) {
        free(ws);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    return ws;
}

void oc_writes_free(oc_writes_t *ws)
{
    if (ws == NULL)
        return;
    while (ws->check_head) {
        oc_write_t *w = ws->check_head;
        ws->check_head = w->check_next;
        ws->ctx->stats->loads_in_flight--;
        check_ended(ws);
        write_free(w);
    }
    event_free(ws->check_ev);
    oc_ratelogs_free(&ws->check_failed);
    free(ws);
}

#include "oc_sampler.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "oc_blob.h"
#include "oc_conf.h"
#include "oc_entry.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_near.h"
#include "oc_pgconn.h"
#include "oc_smp.h"
#include "oc_sql.h"
#include "oc_stats.h"

_Static_assert(OC_SMP_SLOTS == OC_STATS_SAMPLER_SLOTS,
               "oc_stats.h keeps room for every sampler slot");

/* One sample of the batch in flight: what was read for it. */
typedef struct sample {
    oc_smp_item_t it;
    char ckey[OC_KEY_MAX + 1];
    size_t cklen;
    oc_smp_cache_t cache;
    oc_blob_t *blob; /* a near-cache value read, referenced */
    oc_smp_row_t row;
    char *row_json; /* copy of the row's JSON (the result is cleared) */
    int asked;      /* its model's select is in the statement */
} sample_t;

#define MAX_MODELS_PER_BATCH 64

/* Where the batch in flight is. */
typedef enum phase { IDLE = 0, READING_CACHE, READING_ROWS } phase_t;

struct oc_sampler {
    oc_ctx_t *ctx;
    oc_smp_queue_t q;
    uint64_t rng;
    struct event *timer;
    uint32_t tick_ms;
    oc_pgconn_t *pg; /* its own connection, made at the first batch */
    int pg_up;
    struct event *stuck;    /* the statement in flight did not end: drop pg */
    int stuck_read_first;   /* its timer waited once for input already there */
    unsigned char *no_xmin; /* [nmodels_cap] the relation has no xmin (a view) */
    size_t nmodels_cap;
    int closing;
    /* the batch in flight */
    phase_t phase;
    sample_t *batch; /* [OC_SMP_BATCH] */
    size_t nbatch;
    oc_mc_job_t *job;                   /* ours outside READING_CACHE */
    char *params[MAX_MODELS_PER_BATCH]; /* array literals, one per model */
    size_t nparams;
};

static void free_params(oc_sampler_t *s)
{
    for (size_t i = 0; i < s->nparams; i++)
        free(s->params[i]);
    s->nparams = 0;
}

/* ---- offers --------------------------------------------------------------- */

static void drop_item(oc_smp_item_t *it)
{
    free(it->id);
    it->id = NULL;
}

static void enqueue(oc_sampler_t *s, oc_smp_item_t *it)
{
    oc_smp_queue_limit(&s->q, s->ctx->conf->sample_queue); /* a reload may change it */
    if (oc_smp_queue_push(&s->q, it) != 0) {
        s->ctx->stats->sampler_dropped++;
        drop_item(it);
        return;
    }
    s->ctx->stats->sampler_queued = s->q.n;
}

/* An item taken from the queue put back (a recheck, a batch retried): it
 * may pass sample_queue by up to a batch, so new samples filling the queue
 * meanwhile never crowd out a suspect's recheck (which would lose exactly
 * the checks that find inconsistencies). */
static void requeue(oc_sampler_t *s, oc_smp_item_t *it)
{
    oc_smp_queue_limit(&s->q, s->ctx->conf->sample_queue);
    if (oc_smp_queue_push_over(&s->q, it, OC_SMP_BATCH) != 0) {
        s->ctx->stats->sampler_dropped++;
        drop_item(it);
        return;
    }
    s->ctx->stats->sampler_queued = s->q.n;
}

static int offer_ok(oc_sampler_t *s, size_t m, size_t len)
{
    const oc_conf_t *conf = s->ctx->conf;
    return !s->closing && m < conf->nmodels && !conf->models[m].disabled && len > 0 &&
           len <= OC_KEY_MAX && m < 65536 &&
           oc_smp_pick(&s->rng, conf->models[m].sample_ppm);
}

static void offer(oc_sampler_t *s, size_t m, const char *id, size_t len, size_t slot,
                  double due)
{
    oc_smp_item_t it = {
        .due = due, .idlen = (uint16_t)len, .model = (uint16_t)m, .slot = (uint8_t)slot};
    if ((it.id = malloc(len)) == NULL) {
        s->ctx->stats->sampler_dropped++;
        return;
    }
    memcpy(it.id, id, len);
    enqueue(s, &it);
}

void oc_sampler_offer_inval(oc_sampler_t *s, size_t m, const char *id, size_t len)
{
    if (s == NULL || !offer_ok(s, m, len))
        return;
    const oc_conf_t *conf = s->ctx->conf;
    if (s->q.n + conf->sample_windows.n > conf->sample_queue) {
        s->ctx->stats->sampler_dropped++;
        return;
    }
    s->ctx->stats->sampler_samples++;
    double now = oc_stats_now();
    for (size_t w = 0; w < conf->sample_windows.n; w++)
        offer(s, m, id, len, w, now + conf->sample_windows.ms[w] / 1000.0);
}

void oc_sampler_offer_hit(oc_sampler_t *s, size_t m, const char *id, size_t len)
{
    if (s == NULL || !offer_ok(s, m, len))
        return;
    if (s->q.n >= s->ctx->conf->sample_queue) { /* as an invalidation's: not taken */
        s->ctx->stats->sampler_dropped++;
        return;
    }
    s->ctx->stats->sampler_samples++;
    offer(s, m, id, len, s->ctx->conf->sample_windows.n, oc_stats_now());
}

/* ---- results -------------------------------------------------------------- */

static void log_stale(oc_sampler_t *s, const sample_t *sm)
{
    const oc_conf_t *conf = s->ctx->conf;
    char slot[16], cached[OC_SMP_LOG_MAX * 4 + 8], db[OC_SMP_LOG_MAX * 4 + 8];
    oc_smp_slot_name(conf->sample_windows.ms, conf->sample_windows.n, sm->it.slot, slot,
                     sizeof(slot));
    char raw[OC_SMP_LOG_MAX + 1];
    const char *what = sm->cache.kind == OC_SMP_C_ABSENT ? "(absent)" : "";
    if (sm->cache.kind == OC_SMP_C_OBJECT) {
        size_t n = sm->cache.len < OC_SMP_LOG_MAX ? sm->cache.len : OC_SMP_LOG_MAX;
        memcpy(raw, sm->cache.val, n);
        raw[n] = '\0';
        what = raw;
    }
    oc_log_clean(cached, sizeof(cached), what);
    what = "(no row)";
    if (sm->row.found) {
        size_t n = sm->row.len < OC_SMP_LOG_MAX ? sm->row.len : OC_SMP_LOG_MAX;
        memcpy(raw, sm->row.json, n);
        raw[n] = '\0';
        what = raw;
    }
    oc_log_clean(db, sizeof(db), what);
    char key[OC_KEY_MAX * 4 + 8];
    oc_log_clean(key, sizeof(key), sm->ckey);
    oc_log_warn("event=sampler_inconsistent model=%s window=%s key=\"%s\" source=%s "
                "cached=\"%s\" database=\"%s\"",
                conf->models[sm->it.model].name, slot, key,
                sm->cache.near ? "near" : "memcached", cached, db);
}

static void count(oc_sampler_t *s, const sample_t *sm, int stale)
{
    oc_model_stats_t *ms = &s->ctx->stats->models[sm->it.model];
    ms->sampler_checks[sm->it.slot]++;
    ms->sampler_inconsistent[sm->it.slot] += stale != 0;
    ms->sampler_empty[sm->it.slot] += sm->cache.kind == OC_SMP_C_EMPTY;
}

/* Judge one sample read in full; requeue it for a recheck or drop it. */
static void judge(oc_sampler_t *s, sample_t *sm)
{
    const oc_conf_t *conf = s->ctx->conf;
    oc_stats_t *st = s->ctx->stats;
    const char *vc =
        sm->it.model < conf->nmodels ? conf->models[sm->it.model].version_column : NULL;
    oc_smp_verdict_t v = sm->it.round == 0
                             ? oc_smp_first(vc, &sm->cache, &sm->row, &sm->it.ev)
                             : oc_smp_again(vc, &sm->it.ev, &sm->cache, &sm->row);
    switch (v) {
    case OC_SMP_AGREE:
        count(s, sm, 0);
        break;
    case OC_SMP_STALE:
        count(s, sm, 1);
        log_stale(s, sm);
        break;
    case OC_SMP_ERROR:
        st->sampler_errors++;
        break;
    case OC_SMP_SUSPECT:
    case OC_SMP_RACED:
        if (sm->it.round + 1 >= OC_SMP_ROUNDS) {
            st->sampler_raced++;
            break;
        }
        sm->it.round++;
        sm->it.due = oc_stats_now() +
                     oc_smp_recheck_ms(conf->sample_windows.ms, conf->sample_windows.n,
                                       sm->it.slot, conf->sample_recheck_ms) /
                         1000.0;
        requeue(s, &sm->it);
        sm->it.id = NULL; /* the queue's now (or freed by requeue) */
        return;
    }
    drop_item(&sm->it);
}

static void batch_end(oc_sampler_t *s)
{
    /* batch is NULL only when oc_sampler_new failed half way */
    for (size_t i = 0; s->batch != NULL && i < s->nbatch; i++) {
        sample_t *sm = &s->batch[i];
        drop_item(&sm->it);
        oc_blob_unref(sm->blob);
        free(sm->row_json);
        sm->blob = NULL;
        sm->row_json = NULL;
    }
    s->nbatch = 0;
    free_params(s);
    oc_mc_job_free(s->job);
    s->job = NULL;
    s->phase = IDLE;
    s->ctx->stats->sampler_queued = s->q.n;
}

/* ---- PostgreSQL ----------------------------------------------------------- */

/* The statement failed on xmin: a model of the batch is a view. Its models
 * compare rows by their JSON from now on (oc_smp); 1 if that changed
 * anything (else the error is another one). */
static int no_xmin(oc_sampler_t *s)
{
    int changed = 0;
    for (size_t i = 0; i < s->nbatch; i++) {
        size_t m = s->batch[i].it.model;
        if (m < s->nmodels_cap && !s->no_xmin[m]) {
            s->no_xmin[m] = 1;
            changed = 1;
            oc_log_info("event=sampler_no_xmin model=%s note=\"no xmin (a view?): the "
                        "sampler compares its rows' JSON\"",
                        s->ctx->conf->models[m].name);
        }
    }
    return changed;
}

static void rows_read(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                      void *arg)
{
    oc_sampler_t *s = arg;
    evtimer_del(s->stuck);
    /* undefined_column naming xmin (an identifier: in every language) */
    if (st != OC_OK && strcmp(oc_pgconn_sqlstate(pc), "42703") == 0 && err &&
        strstr(err, "xmin") && no_xmin(s)) {
        for (size_t i = 0; i < s->nbatch; i++) { /* again, at the next tick */
            requeue(s, &s->batch[i].it);
            s->batch[i].it.id = NULL;
        }
        PQclear(res);
        batch_end(s);
        return;
    }
    if (st != OC_OK) {
        char clean[OC_ERRLEN];
        oc_log_debug("event=sampler_pg_error reason=\"%s\"",
                     oc_log_clean(clean, sizeof(clean), err ? err : "?"));
        for (size_t i = 0; i < s->nbatch; i++)
            s->batch[i].row.error = 1;
    } else {
        for (size_t i = 0; i < s->nbatch; i++)
            s->batch[i].row.error = !s->batch[i].asked; /* no answer is not "no row" */
        int n = PQntuples(res);
        for (int r = 0; r < n; r++) {
            size_t m = (size_t)strtoul(PQgetvalue(res, r, 0), NULL, 10);
            const char *id = PQgetvalue(res, r, 1);
            size_t idlen = (size_t)PQgetlength(res, r, 1);
            for (size_t i = 0; i < s->nbatch; i++) {
                sample_t *sm = &s->batch[i];
                if (sm->it.model != m || sm->it.idlen != idlen ||
                    memcmp(sm->it.id, id, idlen) != 0 || sm->row.found)
                    continue;
                size_t jl = (size_t)PQgetlength(res, r, 2);
                if ((sm->row_json = malloc(jl + 1)) == NULL) {
                    sm->row.error = 1;
                    continue;
                }
                memcpy(sm->row_json, PQgetvalue(res, r, 2), jl + 1);
                sm->row = (oc_smp_row_t){
                    .found = 1,
                    .json = sm->row_json,
                    .len = jl,
                    .xmin = PQgetisnull(res, r, 3)
                                ? 0
                                : strtoull(PQgetvalue(res, r, 3), NULL, 10)};
            }
        }
    }
    if (res)
        PQclear(res);
    if (!s->closing)
        for (size_t i = 0; i < s->nbatch; i++)
            judge(s, &s->batch[i]);
    batch_end(s);
}

/* Model m's select for the batch, as the branch of a UNION ALL. */
static char *branch_sql(oc_sampler_t *s, size_t m, size_t p)
{
    return oc_smp_sql(&s->ctx->conf->models[m], m, p,
                      m < s->nmodels_cap && s->no_xmin[m]);
}

static void ids_of(const void *arg, size_t i, const char **p, size_t *len);

typedef struct ids_ctx {
    const sample_t *batch;
    const size_t *idx;
} ids_ctx_t;

static void ids_of(const void *arg, size_t i, const char **p, size_t *len)
{
    const ids_ctx_t *c = arg;
    const sample_t *sm = &c->batch[c->idx[i]];
    *p = sm->it.id;
    *len = sm->it.idlen;
}

static void read_rows(oc_sampler_t *s)
{
    size_t cap = 64, len = 0;
    char *sql = malloc(cap);
    size_t *idx = malloc(s->nbatch * sizeof(*idx));
    int ok = sql != NULL && idx != NULL;
    if (sql)
        sql[0] = '\0';
    s->phase = READING_ROWS;
    for (size_t m = 0;
         ok && m < s->ctx->conf->nmodels && s->nparams < MAX_MODELS_PER_BATCH; m++) {
        size_t n = 0;
        for (size_t i = 0; i < s->nbatch; i++)
            if (s->batch[i].it.model == m)
                idx[n++] = i;
        if (n == 0)
            continue;
        for (size_t i = 0; i < n; i++)
            s->batch[idx[i]].asked = 1;
        ids_ctx_t ic = {s->batch, idx};
        char *lit = oc_sql_array_of(n, ids_of, &ic);
        char *br = branch_sql(s, m, s->nparams + 1);
        if (lit == NULL || br == NULL) {
            free(lit);
            free(br);
            ok = 0;
            break;
        }
        s->params[s->nparams++] = lit;
        size_t need = len + strlen(br) + 16;
        if (need > cap) {
            char *g = realloc(sql, need * 2);
            if (g == NULL) {
                free(br);
                ok = 0;
                break;
            }
            sql = g;
            cap = need * 2;
        }
        len +=
            (size_t)snprintf(sql + len, cap - len, "%s%s", len ? " UNION ALL " : "", br);
        free(br);
    }
    free(idx);
    if (ok && s->nparams > 0 &&
        oc_pgconn_query(s->pg, sql, (int)s->nparams, (const char *const *)s->params,
                        rows_read, s) == OC_OK) {
        s->ctx->stats->sampler_pg_queries++;
        /* statement_timeout (load_timeout) ends it on the server; an answer
         * that never comes (a dead peer, a network that drops everything)
         * would stop the sampler for good, so the connection is dropped as
         * the loaders' is (oc_pg): its callback then fails the batch */
        uint64_t ms = 2 * (uint64_t)s->ctx->conf->load_timeout_ms + 1000;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        s->stuck_read_first = 0;
        evtimer_add(s->stuck, &tv);
        free(sql);
        return;
    }
    free(sql);
    for (size_t i = 0; i < s->nbatch; i++)
        s->batch[i].row.error = 1;
    for (size_t i = 0; i < s->nbatch; i++)
        judge(s, &s->batch[i]);
    batch_end(s);
}

/* ---- the cache ------------------------------------------------------------ */

/* The near-cache's copy, as oc_req would answer it (the sampler's look is
 * not a client's: near_hits and near_misses are left as they were). */
static int read_near(oc_sampler_t *s, sample_t *sm, double now)
{
    oc_ctx_t *ctx = s->ctx;
    const oc_conf_t *conf = ctx->conf;
    if (ctx->near == NULL || conf->models[sm->it.model].near_ttl_ms == 0 ||
        !oc_near_serving(ctx->near, now))
        return 0;
    uint64_t hits = ctx->stats->near_hits, misses = ctx->stats->near_misses;
    oc_blob_t *b = NULL;
    oc_near_found_t f = oc_near_get(ctx->near, sm->ckey, sm->cklen, now, &b);
    ctx->stats->near_hits = hits;
    ctx->stats->near_misses = misses;
    if (f == OC_NEAR_MISS)
        return 0;
    sm->cache = (oc_smp_cache_t){
        .near = 1, .kind = f == OC_NEAR_OBJECT ? OC_SMP_C_OBJECT : OC_SMP_C_ABSENT};
    if (f == OC_NEAR_OBJECT) {
        sm->blob = oc_blob_ref(b);
        sm->cache.ident = (uint64_t)(uintptr_t)b;
        sm->cache.val = b->data;
        sm->cache.len = b->len;
    }
    return 1;
}

static void cache_read(oc_mc_job_t *job, void *arg)
{
    oc_sampler_t *s = arg;
    s->job = job; /* ours again */
    if (s->closing) {
        batch_end(s);
        return;
    }
    double now = oc_stats_now();
    for (size_t i = 0; i < s->nbatch; i++) {
        sample_t *sm = &s->batch[i];
        if (read_near(s, sm, now))
            continue;
        const oc_mc_hit_t *h = &job->hits[i];
        oc_entry_class_t c = oc_entry_classify(h);
        sm->cache = (oc_smp_cache_t){.ident = h->cas, .epoch = h->cas_epoch};
        if (c == OC_EC_OBJECT) {
            sm->cache.kind = OC_SMP_C_OBJECT;
            sm->cache.val = h->data;
            sm->cache.len = h->len;
        } else if (c == OC_EC_ABSENT) {
            sm->cache.kind = OC_SMP_C_ABSENT;
        } else if (c == OC_EC_ERROR) {
            sm->cache.kind = OC_SMP_C_ERROR;
        } else {
            sm->cache.kind = OC_SMP_C_EMPTY;
        }
    }
    if (!oc_pgconn_idle(s->pg)) {
        for (size_t i = 0; i < s->nbatch; i++) {
            s->batch[i].row.error = 1;
            judge(s, &s->batch[i]);
        }
        batch_end(s);
        return;
    }
    if (s->nbatch == 0) { /* a batch is never sent empty; kept for safety */
        batch_end(s);
        return;
    }
    read_rows(s);
}

/* ---- the tick ------------------------------------------------------------- */

static void stuck_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_sampler_t *s = arg;
    if (s->pg == NULL || s->phase != READING_ROWS)
        return;
    /* its answer may be waiting unread, this sidecar having stood still
     * (oc_pgconn_read_first): read first, decide in the next turn; once */
    if (!s->stuck_read_first && oc_pgconn_read_first(s->pg)) {
        static const struct timeval next_turn = {0, 0};
        s->stuck_read_first = 1;
        evtimer_add(s->stuck, &next_turn);
        return;
    }
    /* rows_read runs from here */
    oc_pgconn_reset(s->pg, "the sampler's query did not end after twice "
                           "load_timeout; connection dropped");
}

static void pg_up(oc_pgconn_t *c, void *owner)
{
    (void)c;
    ((oc_sampler_t *)owner)->pg_up = 1;
}

static void pg_down(oc_pgconn_t *c, const char *err, void *owner)
{
    (void)c, (void)err;
    ((oc_sampler_t *)owner)->pg_up = 0;
}

static int ensure_pg(oc_sampler_t *s)
{
    if (s->pg)
        return 1;
    const oc_conf_t *conf = s->ctx->conf;
    char *setup = oc_sql_session_reader(conf);
    char *local = conf->pg_txn_pool ? oc_sql_local_reader(conf) : NULL;
    static const oc_pgconn_hooks_t hooks = {.up = pg_up, .down = pg_down};
    const oc_pgconn_opts_t opts = {
        .app_name = "objcached-sampler", .stats = s->ctx->stats, .local_sql = local};
    if (setup && (local != NULL || !conf->pg_txn_pool))
        s->pg = oc_pgconn_new(s->ctx->base, conf->conninfo, &opts, setup, &hooks, s);
    free(setup);
    free(local);
    return s->pg != NULL;
}

static int grow_models(oc_sampler_t *s)
{
    size_t n = s->ctx->conf->nmodels;
    if (n <= s->nmodels_cap)
        return 1;
    unsigned char *g = realloc(s->no_xmin, n);
    if (g == NULL)
        return 0;
    memset(g + s->nmodels_cap, 0, n - s->nmodels_cap);
    s->no_xmin = g;
    s->nmodels_cap = n;
    return 1;
}

/* Items of models a reload removed, or whose ids no longer fit a key, are
 * dropped when they come due. */
static int take(oc_sampler_t *s, sample_t *sm, const oc_smp_item_t *it)
{
    oc_ctx_t *ctx = s->ctx;
    const oc_conf_t *conf = ctx->conf;
    if (it->model >= conf->nmodels || conf->models[it->model].disabled ||
        !oc_key_id_cacheable(it->id, it->idlen, ctx->max_key_len))
        return 0;
    *sm = (sample_t){.it = *it};
    sm->cklen = oc_key_cache_key(conf->key_prefix, conf->models[it->model].name,
                                 ctx->model_gen[it->model], it->id, it->idlen, sm->ckey,
                                 sizeof(sm->ckey), &(size_t){0});
    return 1;
}

static void arm(oc_sampler_t *s);

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_sampler_t *s = arg;
    oc_ctx_t *ctx = s->ctx;
    arm(s);
    if (s->phase != IDLE || s->closing || ctx->stopping || ctx->mc == NULL || s->q.n == 0)
        return;
    if (!grow_models(s) || !ensure_pg(s))
        return;
    if (!s->pg_up || !oc_pgconn_idle(s->pg))
        return; /* the samples wait (and the queue may fill: dropped) */
    double now = oc_stats_now();
    oc_smp_item_t it;
    while (s->nbatch < OC_SMP_BATCH && oc_smp_queue_pop_due(&s->q, now, &it)) {
        if (!take(s, &s->batch[s->nbatch], &it)) {
            ctx->stats->sampler_dropped++; /* a check not made */
            drop_item(&it);
            continue;
        }
        s->nbatch++;
    }
    ctx->stats->sampler_queued = s->q.n;
    if (s->nbatch == 0)
        return;
    s->job = oc_mc_job_new_get(s->nbatch, cache_read, s);
    if (s->job == NULL) {
        ctx->stats->sampler_errors += s->nbatch;
        batch_end(s);
        return;
    }
    for (size_t i = 0; i < s->nbatch; i++) {
        s->job->keys[i] = s->batch[i].ckey;
        s->job->key_lens[i] = s->batch[i].cklen;
    }
    s->phase = READING_CACHE;
    oc_mc_job_t *job = s->job;
    s->job = NULL; /* oc_mc's until cache_read */
    oc_mc_submit(ctx->mc, job);
}

/* The tick's period follows sample_max_qps (a reload may change it). */
static void arm(oc_sampler_t *s)
{
    uint32_t qps = s->ctx->conf->sample_max_qps ? s->ctx->conf->sample_max_qps : 1;
    uint32_t ms = 1000 / qps;
    if (ms == s->tick_ms)
        return;
    s->tick_ms = ms;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

oc_sampler_t *oc_sampler_new(oc_ctx_t *ctx, char *err)
{
    oc_sampler_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    s->ctx = ctx;
    s->rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)s;
    s->batch = calloc(OC_SMP_BATCH, sizeof(*s->batch));
    s->timer = event_new(ctx->base, -1, EV_PERSIST, tick, s);
    s->stuck = evtimer_new(ctx->base, stuck_cb, s);
    if (s->batch == NULL || s->timer == NULL || s->stuck == NULL ||
        oc_smp_queue_init(&s->q, ctx->conf->sample_queue) != 0 || !grow_models(s)) {
        oc_sampler_free(s);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    const oc_conf_t *conf = ctx->conf;
    oc_stats_t *st = ctx->stats;
    st->nsampler_slots = conf->sample_windows.n + 1;
    for (size_t i = 0; i < st->nsampler_slots; i++)
        oc_smp_slot_name(conf->sample_windows.ms, conf->sample_windows.n, i,
                         st->sampler_slot[i], sizeof(st->sampler_slot[i]));
    arm(s);
    return s;
}

void oc_sampler_close(oc_sampler_t *s)
{
    if (s == NULL)
        return;
    s->closing = 1;
    if (s->pg) {
        oc_pgconn_free(s->pg); /* a statement in flight gets no callback */
        s->pg = NULL;
        if (s->phase == READING_ROWS)
            batch_end(s); /* its statement gets no callback now */
    }
    if (s->timer)
        evtimer_del(s->timer);
    if (s->stuck)
        evtimer_del(s->stuck);
}

void oc_sampler_free(oc_sampler_t *s)
{
    if (s == NULL)
        return;
    oc_sampler_close(s);
    oc_smp_item_t it;
    while (oc_smp_queue_pop_due(&s->q, 1e300, &it))
        drop_item(&it);
    oc_smp_queue_free(&s->q);
    if (s->batch && s->phase != READING_CACHE) /* oc_mc_free called it back */
        batch_end(s);
    free(s->batch);
    free(s->no_xmin);
    if (s->timer)
        event_free(s->timer);
    if (s->stuck)
        event_free(s->stuck);
    free(s);
}

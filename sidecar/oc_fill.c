#include "oc_fill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_entry.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_mc.h"
#include "oc_pg.h"
#include "oc_req.h"

typedef enum oc_fill_state {
    OC_FILL_LOADING,
    OC_FILL_STORING,
} oc_fill_state_t;

typedef struct oc_batch oc_batch_t;

typedef struct oc_fill {
    char *ckey;              /* owned; the map key */
    size_t ckey_len;
    size_t canon_off;
    size_t model_idx;
    oc_fill_state_t state;
    oc_blob_t *value;        /* STORING: the object, or NULL = no row */
    oc_ukey_t *waiters;
    oc_batch_t *batch;
    uint64_t retire_seq;     /* gets with mget_seq <= this may need it */
    struct oc_fill *retire_next;
} oc_fill_t;

/* One model's new misses from one request: one query. */
struct oc_batch {
    oc_daemon_t *d;
    size_t model_idx;
    size_t n, cap;
    oc_fill_t **fills;
};

/* ---- blobs ----------------------------------------------------------------- */

oc_blob_t *oc_blob_new(const char *data, size_t len)
{
    oc_blob_t *b = malloc(sizeof(*b) + len + 1);
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->len = len;
    memcpy(b->data, data, len);
    b->data[len] = '\0';
    return b;
}

oc_blob_t *oc_blob_ref(oc_blob_t *b)
{
    if (b)
        b->refs++;
    return b;
}

void oc_blob_unref(oc_blob_t *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* ---- fills ----------------------------------------------------------------- */

static void fill_free(oc_daemon_t *d, oc_fill_t *f)
{
    oc_map_del(d->fills, f->ckey, f->ckey_len);
    d->stats.loads_in_flight--;
    oc_blob_unref(f->value);
    free(f->ckey);
    free(f);
}

static void batch_free(oc_batch_t *b)
{
    free(b->fills);
    free(b);
}

/* Answer every waiter. Waiters' requests may finish and free themselves. */
static void fill_wake(oc_fill_t *f, oc_ukey_state_t st, const char *err)
{
    oc_ukey_t *w = f->waiters;
    f->waiters = NULL;
    while (w) {
        oc_ukey_t *next = w->next_waiter;
        w->next_waiter = NULL;
        oc_req_key_done(w, st, f->value, err);
        w = next;
    }
}

static void fill_retire_later(oc_daemon_t *d, oc_fill_t *f)
{
    f->retire_seq = d->mget_seq;
    f->retire_next = NULL;
    if (d->retire_tail)
        d->retire_tail->retire_next = f;
    else
        d->retire_head = f;
    d->retire_tail = f;
}

void oc_fill_retire(oc_daemon_t *d)
{
    uint64_t oldest = oc_req_oldest_mget(d);
    while (d->retire_head && d->retire_head->retire_seq < oldest) {
        oc_fill_t *f = d->retire_head;
        d->retire_head = f->retire_next;
        if (d->retire_head == NULL)
            d->retire_tail = NULL;
        fill_free(d, f);
    }
}

void oc_fill_retire_all(oc_daemon_t *d)
{
    while (d->retire_head) {
        oc_fill_t *f = d->retire_head;
        d->retire_head = f->retire_next;
        fill_free(d, f);
    }
    d->retire_tail = NULL;
}

static uint32_t ttl_with_jitter(oc_daemon_t *d, uint32_t ttl)
{
    /* Spread expiries so keys loaded together do not all expire together. */
    uint32_t pct = d->conf->ttl_jitter_pct;
    uint64_t spread = (uint64_t)ttl * pct / 100;
    if (spread == 0)
        return ttl;
    d->rand_state = d->rand_state * 1103515245u + 12345u;
    uint64_t t = ttl + (d->rand_state >> 8) % (spread + 1);
    /* memcached reads exptimes over 30 days as absolute unix times. */
    return t > 2592000 ? 2592000 : (uint32_t)t;
}

static void batch_stored(oc_mc_job_t *job, void *arg)
{
    oc_batch_t *b = arg;
    oc_daemon_t *d = b->d;
    if (job->errors) {
        d->stats.mc_errors++;
        oc_log_debug("event=mc_set_error errors=%zu reason=\"%s\"", job->errors,
                     job->err);
    }
    for (size_t i = 0; i < b->n; i++)
        fill_retire_later(d, b->fills[i]);
    oc_mc_job_free(job);
    batch_free(b);
    oc_fill_retire(d);
}

static void batch_store(oc_batch_t *b)
{
    oc_daemon_t *d = b->d;
    const oc_model_conf_t *m = &d->conf->models[b->model_idx];
    oc_mc_job_t *job = oc_mc_job_new_set(b->n, batch_stored, b);
    if (job == NULL) { /* not cached this time; the answer was still served */
        for (size_t i = 0; i < b->n; i++)
            fill_retire_later(d, b->fills[i]);
        batch_free(b);
        oc_fill_retire(d);
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        oc_fill_t *f = b->fills[i];
        oc_mc_item_t *it = &job->items[i];
        it->key = f->ckey;
        it->klen = f->ckey_len;
        if (f->value) {
            it->val = f->value->data;
            it->vlen = f->value->len;
            it->flags = oc_entry_flags(OC_ENTRY_OBJECT);
            it->exptime_s = ttl_with_jitter(d, m->ttl_s);
        } else {
            it->val = "";
            it->vlen = 0;
            it->flags = oc_entry_flags(OC_ENTRY_MISSING);
            it->exptime_s = m->missing_ttl_s;
        }
    }
    d->stats.mc_sets += b->n;
    oc_mc_submit(d->mc, job);
}

/* Match the rows to the batch's fills by canonical id. */
static void batch_apply_rows(oc_batch_t *b, PGresult *res)
{
    oc_daemon_t *d = b->d;
    char key[OC_KEY_MAX * 2 + 64];
    const oc_fill_t *f0 = b->fills[0];
    size_t plen = f0->canon_off; /* prefix + Model + ':' is the same for all */
    memcpy(key, f0->ckey, plen);
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        const char *id = PQgetvalue(res, i, 0);
        size_t idlen = (size_t)PQgetlength(res, i, 0);
        if (PQgetisnull(res, i, 1) || plen + idlen > sizeof(key))
            continue;
        memcpy(key + plen, id, idlen);
        oc_fill_t *f = oc_map_get(d->fills, key, plen + idlen);
        if (f == NULL || f->batch != b || f->value != NULL)
            continue;
        f->value = oc_blob_new(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        if (f->value == NULL)
            oc_log_error("event=oom where=batch_apply_rows");
    }
}

static void batch_loaded(oc_pg_load_t *load, PGresult *res, oc_status_t st,
                         const char *err, void *arg)
{
    oc_batch_t *b = arg;
    oc_daemon_t *d = b->d;
    oc_pg_load_free(load);
    if (st != OC_OK) {
        char q[OC_ERRLEN];
        oc_log_warn("event=load_failed model=%s keys=%zu reason=\"%s\"",
                    d->conf->models[b->model_idx].name, b->n,
                    oc_log_clean(q, sizeof(q), err));
        for (size_t i = 0; i < b->n; i++) {
            fill_wake(b->fills[i], OC_UK_ERROR, err);
            fill_free(d, b->fills[i]);
        }
        batch_free(b);
        return;
    }
    batch_apply_rows(b, res);
    PQclear(res);
    for (size_t i = 0; i < b->n; i++) {
        oc_fill_t *f = b->fills[i];
        f->state = OC_FILL_STORING;
        fill_wake(f, f->value ? OC_UK_FOUND : OC_UK_ABSENT, NULL);
    }
    batch_store(b);
}

/* ---- starting loads -------------------------------------------------------- */

/* The ids as a PostgreSQL array literal: {1,2} or {"a","b\"c"}. */
static char *batch_ids_literal(const oc_batch_t *b, oc_key_type_t type)
{
    size_t cap = 3;
    for (size_t i = 0; i < b->n; i++)
        cap += 2 * (b->fills[i]->ckey_len - b->fills[i]->canon_off) + 3;
    char *s = malloc(cap), *p = s;
    if (s == NULL)
        return NULL;
    *p++ = '{';
    for (size_t i = 0; i < b->n; i++) {
        const oc_fill_t *f = b->fills[i];
        const char *id = f->ckey + f->canon_off;
        size_t len = f->ckey_len - f->canon_off;
        if (i)
            *p++ = ',';
        if (type != OC_KEY_TEXT) { /* digits, '-' and hex only */
            memcpy(p, id, len), p += len;
            continue;
        }
        *p++ = '"';
        for (size_t k = 0; k < len; k++) {
            if (id[k] == '"' || id[k] == '\\')
                *p++ = '\\';
            *p++ = id[k];
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return s;
}

static void batch_submit(oc_batch_t *b)
{
    oc_daemon_t *d = b->d;
    const oc_model_conf_t *m = &d->conf->models[b->model_idx];
    char *ids = batch_ids_literal(b, m->key_type);
    oc_pg_load_t *load = ids ? oc_pg_load_new(b->model_idx, ids, batch_loaded, b) : NULL;
    if (load == NULL) {
        free(ids);
        batch_loaded(NULL, NULL, OC_ENOMEM, "out of memory", b);
        return;
    }
    oc_pg_submit(d->pg, load);
}

static int batch_add(oc_batch_t *b, oc_fill_t *f)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        oc_fill_t **fl = realloc(b->fills, cap * sizeof(*fl));
        if (fl == NULL)
            return -1;
        b->fills = fl;
        b->cap = cap;
    }
    b->fills[b->n++] = f;
    f->batch = b;
    return 0;
}

static oc_fill_t *fill_new(oc_daemon_t *d, const oc_ukey_t *uk)
{
    oc_fill_t *f = calloc(1, sizeof(*f));
    char *ck = malloc(uk->ckey_len + 1);
    if (ck != NULL) {
        memcpy(ck, uk->ckey, uk->ckey_len);
        ck[uk->ckey_len] = '\0';
    }
    if (f == NULL || ck == NULL ||
        oc_map_put(d->fills, ck, uk->ckey_len, f) != OC_OK) {
        free(f);
        free(ck);
        return NULL;
    }
    f->ckey = ck;
    f->ckey_len = uk->ckey_len;
    f->canon_off = uk->canon_off;
    f->model_idx = uk->model_idx;
    f->state = OC_FILL_LOADING;
    d->stats.loads_in_flight++;
    return f;
}

static oc_batch_t *batch_for(oc_daemon_t *d, oc_batch_t **batches, size_t model_idx)
{
    if (batches[model_idx] == NULL) {
        oc_batch_t *b = calloc(1, sizeof(*b));
        if (b == NULL)
            return NULL;
        b->d = d;
        b->model_idx = model_idx;
        batches[model_idx] = b;
    }
    return batches[model_idx];
}

/* Start a load for uk, or join one; returns 0, or -1 if out of memory. */
static int fill_one(oc_daemon_t *d, oc_batch_t **batches, oc_ukey_t *uk)
{
    oc_fill_t *f = oc_map_get(d->fills, uk->ckey, uk->ckey_len);
    if (f && f->state == OC_FILL_STORING) {
        d->stats.coalesced_waits++;
        oc_req_key_done(uk, f->value ? OC_UK_FOUND : OC_UK_ABSENT, f->value, NULL);
        return 0;
    }
    if (f) {
        d->stats.coalesced_waits++;
    } else {
        oc_batch_t *b = batch_for(d, batches, uk->model_idx);
        f = b ? fill_new(d, uk) : NULL;
        if (f == NULL)
            return -1;
        if (batch_add(b, f) != 0) {
            fill_free(d, f);
            return -1;
        }
    }
    uk->next_waiter = f->waiters;
    f->waiters = uk;
    return 0;
}

void oc_fill_misses(oc_daemon_t *d, struct oc_req *req, oc_ukey_t **keys, size_t n)
{
    (void)req;
    oc_batch_t **batches = calloc(d->conf->nmodels, sizeof(*batches));
    for (size_t i = 0; i < n; i++)
        if (batches == NULL || fill_one(d, batches, keys[i]) != 0)
            oc_req_key_done(keys[i], OC_UK_ERROR, NULL, "out of memory");
    for (size_t m = 0; batches && m < d->conf->nmodels; m++) {
        if (batches[m] == NULL)
            continue;
        if (batches[m]->n == 0)
            batch_free(batches[m]);
        else
            batch_submit(batches[m]);
    }
    free(batches);
}

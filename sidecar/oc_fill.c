#include "oc_fill.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oc_entry.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_mc.h"
#include "oc_pg.h"
#include "oc_req.h"

#define OC_FILL_POLL_FIRST_MS 2
#define OC_FILL_POLL_MAX_MS   50
#define OC_FILL_LEASE_TRIES   3

typedef enum oc_fill_state {
    OC_FILL_LEASING,
    OC_FILL_WAITING,
    OC_FILL_LOADING,
    OC_FILL_STORING,
    OC_FILL_RETIRING,
} oc_fill_state_t;

typedef struct oc_fill {
    char *ckey; /* owned; the map key */
    size_t ckey_len;
    size_t canon_off; /* the canonical id starts at ckey + canon_off */
    size_t model_idx;
    oc_fill_state_t state;
    int leased; /* we hold its lease in memcached */
    int lease_tries;
    int in_map;       /* d->fills maps ckey to this fill */
    int invalidated;  /* a write landed: do not write back */
    oc_blob_t *value; /* once answered: the object, or NULL = absent */
    oc_ukey_t *waiters;
    uint64_t retire_seq; /* gets with mget_seq <= this may need it */
    uint64_t lease_seq;  /* d->mget_seq when our lease was confirmed
                            (0: we hold none) */
    uint64_t lease_cas;  /* leased: the cas of the lease item */
    struct oc_fill *retire_next;
} oc_fill_t;

/* Fills of one model going through the same step together. */
typedef struct oc_batch {
    oc_daemon_t *d;
    size_t model_idx;
    size_t n, cap;
    oc_fill_t **fills;
    struct event *timer; /* WAITING: next poll */
    uint32_t waited_ms, delay_ms;
} oc_batch_t;

static void batch_load(oc_batch_t *b);

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

static void fill_set_state(oc_fill_t *f, oc_fill_state_t st)
{
    f->state = st;
}

static void fill_unmap(oc_daemon_t *d, oc_fill_t *f)
{
    if (f->in_map)
        oc_map_del(d->fills, f->ckey, f->ckey_len);
    f->in_map = 0;
}

static void fill_free(oc_daemon_t *d, oc_fill_t *f)
{
    fill_unmap(d, f);
    d->stats.loads_in_flight--;
    oc_blob_unref(f->value);
    free(f->ckey);
    free(f);
}

/* Answer every waiter with the fill's value. */
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

static void fill_answer(oc_fill_t *f)
{
    fill_wake(f, f->value ? OC_UK_FOUND : OC_UK_ABSENT, NULL);
}

static void fill_retire_later(oc_daemon_t *d, oc_fill_t *f)
{
    fill_set_state(f, OC_FILL_RETIRING);
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

void oc_fill_invalidate(oc_daemon_t *d, const char *ckey, size_t len)
{
    oc_fill_t *f = oc_map_get(d->fills, ckey, len);
    if (f == NULL)
        return;
    f->invalidated = 1;
    fill_unmap(d, f);
}

/* ---- batches --------------------------------------------------------------- */

static oc_batch_t *batch_new(oc_daemon_t *d, size_t model_idx)
{
    oc_batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->d = d;
    b->model_idx = model_idx;
    return b;
}

static void batch_free(oc_batch_t *b)
{
    if (b->timer)
        event_free(b->timer);
    free(b->fills);
    free(b);
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
    return 0;
}

/* Fail every fill of b (their waiters get SERVER_ERROR) and free it all. */
static void batch_fail(oc_batch_t *b, const char *err)
{
    for (size_t i = 0; i < b->n; i++) {
        fill_wake(b->fills[i], OC_UK_ERROR, err);
        fill_free(b->d, b->fills[i]);
    }
    batch_free(b);
}

/* Move the fills in state `st` out of b into a new batch *out (NULL if
 * there are none). Returns -1 if out of memory (b is left whole). */
static int batch_take(oc_batch_t *b, oc_fill_state_t st, oc_batch_t **out)
{
    *out = NULL;
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        n += (b->fills[i]->state == st);
    if (n == 0)
        return 0;
    oc_batch_t *o = batch_new(b->d, b->model_idx);
    if (o == NULL || (o->fills = malloc(n * sizeof(*o->fills))) == NULL) {
        free(o);
        return -1;
    }
    o->cap = n;
    size_t j = 0;
    for (size_t i = 0; i < b->n; i++) {
        oc_fill_t *f = b->fills[i];
        if (f->state == st)
            o->fills[o->n++] = f;
        else
            b->fills[j++] = f;
    }
    b->n = j;
    *out = o;
    return 0;
}

/* Out of memory while splitting b: every part fails. */
static void batch_fail_parts(oc_batch_t *b, oc_batch_t *x, oc_batch_t *y)
{
    if (x)
        batch_fail(x, "out of memory");
    if (y)
        batch_fail(y, "out of memory");
    batch_fail(b, "out of memory");
}

/* Start `b` on its next step, or free it if it is empty. */
static void batch_go(oc_batch_t *b, void (*step)(oc_batch_t *))
{
    if (b->n == 0)
        batch_free(b);
    else
        step(b);
}

/* ---- step 4: write back ------------------------------------------------------ */

static uint32_t ttl_with_jitter(oc_daemon_t *d, uint32_t ttl)
{
    /* Spread expiries so keys loaded together do not all expire together. */
    uint64_t spread = (uint64_t)ttl * d->conf->ttl_jitter_pct / 100;
    if (spread == 0)
        return ttl;
    d->rand_state = d->rand_state * 1103515245u + 12345u;
    uint64_t t = ttl + (d->rand_state >> 8) % (spread + 1);
    /* memcached reads exptimes over 30 days as absolute unix times. */
    return t > 2592000 ? 2592000 : (uint32_t)t;
}

static void batch_retire(oc_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        fill_retire_later(b->d, b->fills[i]);
    batch_free(b);
}

static void batch_stored(oc_mc_job_t *job, void *arg)
{
    oc_batch_t *b = arg;
    oc_daemon_t *d = b->d;
    if (job->errors)
        d->stats.mc_errors++;
    for (size_t i = 0; i < job->n; i++)
        if (job->items[i].result == OC_MC_R_EXISTS ||
            job->items[i].result == OC_MC_R_NOT_FOUND)
            d->stats.fills_dropped++; /* the lease was replaced or deleted */
    oc_mc_job_free(job);
    batch_retire(b);
    oc_fill_retire(d);
}

static void batch_store(oc_batch_t *b);

static void batch_gate_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    batch_store(arg);
}

static void batch_store(oc_batch_t *b)
{
    oc_daemon_t *d = b->d;
    if (oc_daemon_gate_hold(b->d, &b->timer, batch_gate_cb, b))
        return;
    const oc_model_conf_t *m = &d->conf->models[b->model_idx];
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        n += (b->fills[i]->leased && !b->fills[i]->invalidated);
        d->stats.fills_dropped +=
            (b->fills[i]->invalidated != 0); /* known here already */
    }
    oc_mc_job_t *job = n ? oc_mc_job_new_items(OC_MC_CAS, n, batch_stored, b) : NULL;
    if (job == NULL) { /* nothing to write, or no memory: answered anyway */
        batch_retire(b);
        oc_fill_retire(d);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        oc_fill_t *f = b->fills[i];
        if (!f->leased || f->invalidated)
            continue;
        oc_mc_item_t *it = &job->items[k++];
        it->key = f->ckey;
        it->klen = f->ckey_len;
        it->cas = f->lease_cas; /* only over our lease, untouched since */
        if (f->value) {
            it->val = f->value->data;
            it->vlen = f->value->len;
            it->flags = oc_entry_flags(OC_ENTRY_OBJECT);
            it->exptime_s = ttl_with_jitter(d, m->ttl_s);
        } else {
            it->val = "";
            it->flags = oc_entry_flags(OC_ENTRY_MISSING);
            it->exptime_s = m->missing_ttl_s;
        }
    }
    d->stats.mc_sets += n;
    oc_mc_submit(d->mc, job);
}

/* ---- step 3: load ---------------------------------------------------------- */

/* Match the rows to the batch's fills by canonical id. */
static void batch_apply_rows(oc_batch_t *b, PGresult *res)
{
    oc_map_t *byid = oc_map_new(b->n);
    if (byid == NULL) {
        oc_log_error("event=oom where=batch_apply_rows");
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        oc_fill_t *f = b->fills[i];
        (void)oc_map_put(byid, f->ckey + f->canon_off, f->ckey_len - f->canon_off, f);
    }
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, 0) || PQgetisnull(res, i, 1))
            continue;
        oc_fill_t *f =
            oc_map_get(byid, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
        if (f == NULL || f->value != NULL)
            continue;
        f->value = oc_blob_new(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        if (f->value == NULL)
            oc_log_error("event=oom where=batch_apply_rows");
    }
    oc_map_free(byid);
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
        /* Our leases stay until they expire (lease_ttl): other sidecars
         * wait lease_wait for them, then load by themselves. */
        batch_fail(b, err);
        return;
    }
    batch_apply_rows(b, res);
    PQclear(res);
    for (size_t i = 0; i < b->n; i++) {
        fill_set_state(b->fills[i], OC_FILL_STORING);
        fill_answer(b->fills[i]);
    }
    batch_store(b);
}

/* Fill i's canonical id, for the load's $1. */
static void batch_id(const void *arg, size_t i, const char **p, size_t *len)
{
    const oc_fill_t *f = ((const oc_batch_t *)arg)->fills[i];
    *p = f->ckey + f->canon_off;
    *len = f->ckey_len - f->canon_off;
}

static void batch_load(oc_batch_t *b)
{
    oc_daemon_t *d = b->d;
    for (size_t i = 0; i < b->n; i++)
        fill_set_state(b->fills[i], OC_FILL_LOADING);
    char *ids = oc_pg_array_literal_of(b->n, batch_id, b);
    oc_pg_load_t *load = ids ? oc_pg_load_new(b->model_idx, ids, batch_loaded, b) : NULL;
    if (load == NULL) {
        free(ids);
        batch_fail(b, "out of memory");
        return;
    }
    oc_pg_submit(d->pg, load);
}

/* ---- step 2: read and lease -------------------------------------------------
 *
 * One read does both: a meta get with N (oc_mc lease_ttl_s) answers what
 * the key holds, and when it holds nothing it leaves a lease there at once.
 * LEASING fills read right away; WAITING ones (another sidecar's lease)
 * read again after a back-off, until lease_wait is over. */

static void batch_read(oc_batch_t *b);

static void batch_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_batch_t *b = arg;
    b->d->stats.lease_waits += b->n;
    batch_read(b);
}

static void batch_wait(oc_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        fill_set_state(b->fills[i], OC_FILL_WAITING);
    if (b->timer == NULL && (b->timer = evtimer_new(b->d->base, batch_poll, b)) == NULL) {
        batch_fail(b, "out of memory");
        return;
    }
    evtimer_assign(b->timer, b->d->base, batch_poll, b);
    b->delay_ms = b->delay_ms ? b->delay_ms * 2 : OC_FILL_POLL_FIRST_MS;
    if (b->delay_ms > OC_FILL_POLL_MAX_MS)
        b->delay_ms = OC_FILL_POLL_MAX_MS;
    struct timeval tv = {0, (suseconds_t)b->delay_ms * 1000};
    evtimer_add(b->timer, &tv);
    b->waited_ms += b->delay_ms;
}

static void fill_take_lease(oc_daemon_t *d, oc_fill_t *f, uint64_t cas)
{
    f->leased = 1;
    f->lease_cas = cas;
    f->lease_seq = d->mget_seq;
    fill_set_state(f, OC_FILL_LOADING);
}

/* What a read found for f: the next state. */
static void fill_read(oc_daemon_t *d, oc_fill_t *f, const oc_mc_job_t *job,
                      const oc_mc_hit_t *h, int give_up)
{
    oc_entry_kind_t kind = h->found ? oc_entry_kind(h->flags) : OC_ENTRY_NONE;
    if (kind == OC_ENTRY_MISSING || kind == OC_ENTRY_TOMBSTONE ||
        (kind == OC_ENTRY_OBJECT &&
         (f->value = oc_blob_new(job->arena + h->off, h->len)) != NULL)) {
        fill_set_state(f, OC_FILL_STORING); /* answered by whoever wrote it */
    } else if (h->lease == OC_MC_LEASE_WON) {
        fill_take_lease(d, f, h->cas);
    } else if (h->lease == OC_MC_LEASE_HELD || kind == OC_ENTRY_LEASE) {
        /* another's lease (an older sidecar's LEASE entry counts too) */
        if (f->state == OC_FILL_LEASING || !give_up) {
            fill_set_state(f, OC_FILL_WAITING);
        } else {
            fill_set_state(f, OC_FILL_LOADING); /* waited enough: load, no fill */
            d->stats.lease_timeouts++;
        }
    } else if (h->error || ++f->lease_tries >= OC_FILL_LEASE_TRIES) {
        /* memcached failed (a fill would fail too), or the key keeps
         * holding something that is not ours to replace: load, no fill */
        fill_set_state(f, OC_FILL_LOADING);
    } else {
        fill_set_state(f, OC_FILL_LEASING); /* gone meanwhile: read again */
    }
}

static void batch_read_done(oc_mc_job_t *job, void *arg)
{
    oc_batch_t *b = arg;
    oc_daemon_t *d = b->d;
    int give_up = b->waited_ms >= d->conf->lease_wait_ms;
    if (job->errors)
        d->stats.mc_errors++;
    for (size_t i = 0; i < b->n; i++)
        fill_read(d, b->fills[i], job, &job->hits[i], give_up);
    oc_mc_job_free(job);
    oc_batch_t *done = NULL, *lease = NULL, *load = NULL, *wait;
    if (batch_take(b, OC_FILL_STORING, &done) != 0 ||
        batch_take(b, OC_FILL_LEASING, &lease) != 0 ||
        batch_take(b, OC_FILL_LOADING, &load) != 0) {
        if (done) { /* answered already: retire them, fail the rest */
            for (size_t i = 0; i < done->n; i++)
                fill_answer(done->fills[i]);
            batch_retire(done);
        }
        batch_fail_parts(b, lease, load);
        return;
    }
    if (done) {
        for (size_t i = 0; i < done->n; i++)
            fill_answer(done->fills[i]);
        batch_retire(done);
    }
    if (lease)
        batch_read(lease);
    if (load)
        batch_load(load);
    wait = b; /* what is left is WAITING */
    batch_go(wait, batch_wait);
    oc_fill_retire(d);
}

static void batch_read(oc_batch_t *b)
{
    oc_mc_job_t *job = oc_mc_job_new_get(b->n, batch_read_done, b);
    if (job == NULL) {
        batch_fail(b, "out of memory");
        return;
    }
    job->lease_ttl_s = b->d->lease_ttl_s;
    for (size_t i = 0; i < b->n; i++) {
        job->keys[i] = b->fills[i]->ckey;
        job->key_lens[i] = b->fills[i]->ckey_len;
    }
    oc_mc_submit(b->d->mc, job);
}

/* ---- step 1: join or start ------------------------------------------------------ */

static oc_fill_t *fill_new(oc_daemon_t *d, const oc_ukey_t *uk)
{
    oc_fill_t *f = calloc(1, sizeof(*f));
    char *ck = malloc(uk->ckey_len + 1);
    if (ck != NULL) {
        memcpy(ck, uk->ckey, uk->ckey_len);
        ck[uk->ckey_len] = '\0';
    }
    if (f == NULL || ck == NULL || oc_map_put(d->fills, ck, uk->ckey_len, f) != OC_OK) {
        free(f);
        free(ck);
        return NULL;
    }
    f->ckey = ck;
    f->ckey_len = uk->ckey_len;
    f->canon_off = uk->canon_off;
    f->model_idx = uk->model_idx;
    f->in_map = 1;
    /* Where the get's own read left the key decides the first step. */
    if (uk->lease == OC_MC_LEASE_WON)
        fill_take_lease(d, f, uk->lease_cas);
    else if (uk->lease == OC_MC_LEASE_HELD)
        fill_set_state(f, OC_FILL_WAITING);
    else
        fill_set_state(f, uk->mc_error ? OC_FILL_LOADING : OC_FILL_LEASING);
    d->stats.loads_in_flight++;
    return f;
}

/* May uk take f's answer? Not when its multi-get was sent after f's lease
 * was in memcached and found the key without that lease: a write (another
 * sidecar's invalidation, say) removed it, so f's row may be older than
 * that write. A get that found the lease, or was sent before it was
 * confirmed, is answered consistently by f. A fill without a lease cannot
 * tell, and answers. */
static int fill_may_answer(const oc_fill_t *f, const oc_ukey_t *uk)
{
    if (uk->lease == OC_MC_LEASE_WON)
        return 0; /* the key was empty: whatever f leased is gone, and uk
                     holds a new lease that only a new load may fill */
    if (f->lease_seq == 0)
        return 1;
    if (uk->lease == OC_MC_LEASE_HELD && uk->lease_cas == f->lease_cas)
        return 1; /* f's own lease, untouched */
    return uk->read_seq <= f->lease_seq;
}

/* Start a load for uk, or join one; returns 0, or -1 if out of memory. */
static int fill_one(oc_daemon_t *d, oc_batch_t **batches, oc_ukey_t *uk)
{
    oc_fill_t *f = oc_map_get(d->fills, uk->ckey, uk->ckey_len);
    if (f && !fill_may_answer(f, uk)) {
        oc_fill_invalidate(d, uk->ckey, uk->ckey_len);
        f = NULL;
    }
    if (f && f->state >= OC_FILL_STORING) {
        d->stats.coalesced_waits++;
        oc_req_key_done(uk, f->value ? OC_UK_FOUND : OC_UK_ABSENT, f->value, NULL);
        return 0;
    }
    if (f) {
        d->stats.coalesced_waits++;
    } else {
        size_t m = uk->model_idx;
        if (batches[m] == NULL && (batches[m] = batch_new(d, m)) == NULL)
            return -1;
        if ((f = fill_new(d, uk)) == NULL)
            return -1;
        if (batch_add(batches[m], f) != 0) {
            fill_free(d, f);
            return -1;
        }
    }
    uk->next_waiter = f->waiters;
    f->waiters = uk;
    return 0;
}

/* Start a new batch on its first step: fills of one batch may start in
 * different states (see fill_new). */
static void batch_start(oc_batch_t *b)
{
    oc_batch_t *lease = NULL, *load = NULL;
    if (batch_take(b, OC_FILL_LEASING, &lease) != 0 ||
        batch_take(b, OC_FILL_LOADING, &load) != 0) {
        batch_fail_parts(b, lease, load);
        return;
    }
    if (lease)
        batch_read(lease);
    if (load)
        batch_load(load);
    batch_go(b, batch_wait); /* WAITING */
}

void oc_fill_misses(oc_daemon_t *d, oc_ukey_t **keys, size_t n)
{
    oc_batch_t **batches = calloc(d->conf->nmodels, sizeof(*batches));
    for (size_t i = 0; i < n; i++)
        if (batches == NULL || fill_one(d, batches, keys[i]) != 0)
            oc_req_key_done(keys[i], OC_UK_ERROR, NULL, "out of memory");
    for (size_t m = 0; batches && m < d->conf->nmodels; m++)
        if (batches[m])
            batch_start(batches[m]);
    free(batches);
}

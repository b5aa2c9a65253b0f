#include "oc_fill.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_gate.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_mc.h"
#include "oc_pg.h"
#include "oc_stats.h"

/* A waiter reads the key again after 2, 4 and 8 ms, then every 10 ms: a
 * load under way usually takes a few ms, and the gap between two reads is
 * how late the waiter can see its value (with 50 ms, bench nearapply's
 * commit-to-applied p99 was up to 52 ms; 24-33 ms with 10). A lease_wait
 * set long (for slow loads) spaces them up to lease_wait / 25, at most
 * 50 ms, so a waiter reads about 25 times at most, not once per 10 ms for
 * minutes. Only keys another sidecar is loading are read this way. */
#define OC_FILL_POLL_FIRST_MS 2
#define OC_FILL_POLL_MAX_MS   10
#define OC_FILL_POLL_SLOW_MS  50
#define OC_FILL_POLLS         25
#define OC_FILL_LEASE_TRIES   3

typedef struct oc_fill oc_fill_t;
typedef struct oc_batch oc_batch_t;

struct oc_fill {
    char *ckey; /* the map key, in the fill's own allocation (fill_new) */
    size_t ckey_len;
    size_t canon_off;
    size_t model_idx;
    oc_fill_state_t state;
    int leased; /* we hold its lease in memcached */
    int lease_tries;
    int in_map;       /* the map maps ckey to this fill */
    int invalidated;  /* a write landed: do not write back */
    int refresh;      /* an early refresh: its "lease" is the live object's
                         cas, never taken away */
    int unconfirmed;  /* its value is a PUSHED entry another wrote */
    oc_blob_t *value; /* once answered: the object, or NULL = absent */
    oc_fill_waiter_t *waiters;
    uint64_t retire_seq;    /* reads with seq <= this may still need it */
    uint64_t lease_seq;     /* read seq when our lease was confirmed (0: none) */
    uint64_t sent_seq;      /* read seq when its last read or load was sent
                               (0: none yet): without a lease, only reads
                               begun by then may take its answer */
    oc_fill_waiter_t *late; /* joined after sent_seq, without a lease: they
                               wait for the next read or load, or the next
                               fill once this one answers (fill_answer) */
    uint64_t lease_cas;     /* leased: the cas of the lease item */
    uint64_t lease_epoch;   /* ... read in this cas epoch (oc_mc.h) */
    uint64_t place;         /* the read's place memo of the key (oc_mc): the
                               fill's cas goes there without hashing it again */
    uint64_t era;           /* oc_fills.era when it began */
    oc_fill_t *retire_next;
};

/* Fills of one model going through the same step together. */
struct oc_batch {
    oc_fills_t *fs;
    size_t model_idx;
    size_t n, cap;
    oc_fill_t **fills;
    struct event *timer; /* WAITING: next read; the gate's (tests) */
    double wait_began;   /* WAITING: when this batch began waiting */
    uint32_t delay_ms;
    int jobs_left;  /* STORING: write-back jobs not answered yet */
    double load_by; /* LOADING: when its load times out (oc_stats_now()'s
                       clock), set by its first query; 0 before */
    /* WAITING: in the fills' list of batches whose timer holds them, the
     * only reference to them: oc_fills_free fails them at a shutdown */
    oc_batch_t *wprev, *wnext;
    int waiting;
};

struct oc_fills {
    oc_ctx_t *ctx;
    oc_map_t *map;                           /* cache key -> fill */
    oc_fill_read_t *reads_head, *reads_tail; /* reads under way, oldest first */
    uint64_t read_seq;                       /* the last read begun */
    oc_fill_t *retire_head, *retire_tail;
    oc_batch_t **pending; /* per model: fills started this turn, not yet sent */
    size_t npending;
    struct event *start_ev; /* sends the pending batches */
    uint64_t era;           /* moved by oc_fill_forget_all: older fills take no joiners */
    oc_batch_t *waiting;    /* batches waiting for their next read (batch_wait) */
    oc_ratelogs_t load_failed; /* per model: its load_failed line, once a second */
};

static void batch_load(oc_batch_t *b);
static void batch_read(oc_batch_t *b);

static double fills_now(const oc_fills_t *fs)
{
    struct timeval tv;
    event_base_gettimeofday_cached(fs->ctx->base, &tv);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* ---- the pure rules ------------------------------------------------------ */

oc_fill_state_t oc_fill_first_state(oc_entry_class_t found)
{
    switch (found) {
    case OC_EC_LEASE_WON:
    case OC_EC_ERROR: /* memcached failed: a lease would fail too */
        return OC_FILL_LOADING;
    case OC_EC_LEASE_HELD:
        return OC_FILL_WAITING;
    default:
        return OC_FILL_LEASING;
    }
}

oc_fill_state_t oc_fill_after_read(oc_fill_state_t cur, oc_entry_class_t found,
                                   int give_up, int *tries)
{
    switch (found) {
    case OC_EC_OBJECT:
    case OC_EC_ABSENT:
        return OC_FILL_STORING; /* answered by whoever wrote it */
    case OC_EC_LEASE_WON:
        return OC_FILL_LOADING;
    case OC_EC_LEASE_HELD:
        /* A fill that was not waiting yet always waits first. */
        return cur == OC_FILL_LEASING || !give_up ? OC_FILL_WAITING : OC_FILL_LOADING;
    case OC_EC_ERROR:
        return OC_FILL_LOADING;
    case OC_EC_EMPTY:
        break;
    }
    /* Gone meanwhile (read again), unless the key keeps holding something
     * that is not ours to replace: then load without filling. */
    return ++*tries >= OC_FILL_LEASE_TRIES ? OC_FILL_LOADING : OC_FILL_LEASING;
}

int oc_fill_may_answer(uint64_t fill_lease_seq, oc_fill_cas_t fill_cas,
                       uint64_t fill_sent_seq, oc_entry_class_t w_read,
                       oc_fill_cas_t w_cas, uint64_t w_seq)
{
    if (w_read == OC_EC_LEASE_WON)
        return 0; /* the key was empty: whatever the fill leased is gone,
                     and the waiter holds a new lease only a new load fills */
    if (fill_lease_seq == 0)
        /* No lease tells whether a write landed since: only a read begun
         * before its answer was asked for (the load's snapshot, or the
         * memcached read, is younger than the read) may take it. A later
         * one may have missed the key because another sidecar applied an
         * invalidation meanwhile (found by a review, 2026-12-06). */
        return fill_sent_seq == 0 || w_seq <= fill_sent_seq;
    if (w_read == OC_EC_LEASE_HELD && w_cas.cas == fill_cas.cas &&
        w_cas.epoch == fill_cas.epoch)
        return 1; /* the fill's own lease, untouched (the same number on
                     another server, or after a restart, is another's:
                     found by a review) */
    return w_seq <= fill_lease_seq;
}

uint32_t oc_fill_wait_delay(double began, double now, uint32_t prev_ms,
                            uint32_t lease_wait_ms)
{
    if ((now - began) * 1000.0 >= (double)lease_wait_ms)
        return 0;
    uint32_t cap = lease_wait_ms / OC_FILL_POLLS;
    cap = cap < OC_FILL_POLL_MAX_MS    ? OC_FILL_POLL_MAX_MS
          : cap > OC_FILL_POLL_SLOW_MS ? OC_FILL_POLL_SLOW_MS
                                       : cap;
    uint32_t d = prev_ms ? prev_ms * 2 : OC_FILL_POLL_FIRST_MS;
    return d > cap ? cap : d;
}

/* ---- reads ----------------------------------------------------------------- */

void oc_fill_read_begin(oc_fills_t *fs, oc_fill_read_t *r)
{
    r->seq = ++fs->read_seq;
    r->prev = fs->reads_tail;
    r->next = NULL;
    if (fs->reads_tail)
        fs->reads_tail->next = r;
    else
        fs->reads_head = r;
    fs->reads_tail = r;
}

static void fills_retire(oc_fills_t *fs);

void oc_fill_read_end(oc_fills_t *fs, oc_fill_read_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        fs->reads_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        fs->reads_tail = r->prev;
    r->prev = r->next = NULL;
    fills_retire(fs);
}

/* ---- fills ----------------------------------------------------------------- */

static void fill_set_state(oc_fill_t *f, oc_fill_state_t st)
{
    f->state = st;
}

static void fill_unmap(oc_fills_t *fs, oc_fill_t *f)
{
    if (f->in_map)
        oc_map_del(fs->map, f->ckey, f->ckey_len);
    f->in_map = 0;
}

static void fill_free(oc_fills_t *fs, oc_fill_t *f)
{
    fill_unmap(fs, f);
    fs->ctx->stats->loads_in_flight--;
    oc_blob_unref(f->value);
    free(f); /* and its key (fill_new) */
}

/* Answer every waiter. */
static void fill_wake(oc_fill_t *f, oc_get_state_t st, const char *err)
{
    oc_fill_waiter_t *w = f->waiters;
    f->waiters = NULL;
    while (w) {
        oc_fill_waiter_t *next = w->next;
        w->next = NULL;
        w->unconfirmed = f->unconfirmed;
        w->done(w, st, f->value, err);
        w = next;
    }
}

static int fill_one(oc_fills_t *fs, oc_fill_waiter_t *w, int counted);

/* A failed fill fails its late joiners too: they would have joined it. */
static void fill_fail(oc_fill_t *f, const char *err)
{
    fill_wake(f, OC_GET_ERROR, err);
    f->waiters = f->late;
    f->late = NULL;
    fill_wake(f, OC_GET_ERROR, err);
}

/* Answer every waiter; the late ones (joined after the answer was asked
 * for, without a lease) start the next fill of the key together: one load
 * in flight per key still, as when they joined. */
static void fill_answer(oc_fills_t *fs, oc_fill_t *f)
{
    fill_wake(f, f->value ? OC_GET_FOUND : OC_GET_ABSENT, NULL);
    oc_fill_waiter_t *w = f->late;
    f->late = NULL;
    if (w == NULL)
        return;
    fill_unmap(fs, f);
    while (w) {
        oc_fill_waiter_t *next = w->next;
        w->next = NULL;
        if (fill_one(fs, w, 1) != 0) /* counted when it waited on f */
            w->done(w, OC_GET_ERROR, NULL, "out of memory");
        w = next;
    }
}

/* A read or load of f goes out: who joined since the last is answered by
 * this one. */
static void fill_sent(oc_fills_t *fs, oc_fill_t *f)
{
    while (f->late) {
        oc_fill_waiter_t *w = f->late;
        f->late = w->next;
        w->next = f->waiters;
        f->waiters = w;
    }
    f->sent_seq = fs->read_seq;
}

static void fill_retire_later(oc_fills_t *fs, oc_fill_t *f)
{
    fill_set_state(f, OC_FILL_RETIRING);
    f->retire_seq = fs->read_seq;
    f->retire_next = NULL;
    if (fs->retire_tail)
        fs->retire_tail->retire_next = f;
    else
        fs->retire_head = f;
    fs->retire_tail = f;
}

static void fills_retire(oc_fills_t *fs)
{
    uint64_t oldest = fs->reads_head ? fs->reads_head->seq : UINT64_MAX;
    while (fs->retire_head && fs->retire_head->retire_seq < oldest) {
        oc_fill_t *f = fs->retire_head;
        fs->retire_head = f->retire_next;
        if (fs->retire_head == NULL)
            fs->retire_tail = NULL;
        fill_free(fs, f);
    }
}

void oc_fill_invalidate(oc_fills_t *fs, const char *ckey, size_t len)
{
    oc_fill_t *f = oc_map_get(fs->map, ckey, len);
    if (f == NULL)
        return;
    f->invalidated = 1;
    fill_unmap(fs, f);
}

void oc_fill_forget_all(oc_fills_t *fs)
{
    /* Lazily: the map has no walk, and a resync is rare. fill_one treats a
     * fill of an older era as invalidated when a miss would join it. */
    fs->era++;
}

/* ---- batches --------------------------------------------------------------- */

static oc_batch_t *batch_new(oc_fills_t *fs, size_t model_idx)
{
    oc_batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->fs = fs;
    b->model_idx = model_idx;
    return b;
}

/* b's timer no longer holds it (it fired, or b goes). */
static void batch_unwait(oc_batch_t *b)
{
    if (!b->waiting)
        return;
    if (b->wprev)
        b->wprev->wnext = b->wnext;
    else
        b->fs->waiting = b->wnext;
    if (b->wnext)
        b->wnext->wprev = b->wprev;
    b->wprev = b->wnext = NULL;
    b->waiting = 0;
}

static void batch_free(oc_batch_t *b)
{
    batch_unwait(b);
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
        fill_fail(b->fills[i], err);
        fill_free(b->fs, b->fills[i]);
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
    oc_batch_t *o = batch_new(b->fs, b->model_idx);
    if (o == NULL || (o->fills = malloc(n * sizeof(*o->fills))) == NULL) {
        free(o);
        return -1;
    }
    o->cap = n;
    o->wait_began = b->wait_began;
    o->delay_ms = b->delay_ms;
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

static void batch_retire(oc_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        fill_retire_later(b->fs, b->fills[i]);
    batch_free(b);
}

static void batch_wait(oc_batch_t *b);

/* Send the parts of b on their next step: STORING ones are answered and
 * retire, LEASING ones are read, LOADING ones loaded, and what is left
 * (WAITING) waits. Out of memory while splitting: every part fails. */
static void batch_dispatch(oc_batch_t *b)
{
    oc_batch_t *done = NULL, *lease = NULL, *load = NULL;
    if (batch_take(b, OC_FILL_STORING, &done) != 0 ||
        batch_take(b, OC_FILL_LEASING, &lease) != 0 ||
        batch_take(b, OC_FILL_LOADING, &load) != 0) {
        if (done) /* answered already: these are not failures */
            for (size_t i = 0; i < done->n; i++)
                fill_answer(b->fs, done->fills[i]);
        if (done)
            batch_retire(done);
        if (lease)
            batch_fail(lease, "out of memory");
        if (load)
            batch_fail(load, "out of memory");
        batch_fail(b, "out of memory");
        return;
    }
    if (done) {
        for (size_t i = 0; i < done->n; i++)
            fill_answer(b->fs, done->fills[i]);
        batch_retire(done);
    }
    if (lease)
        batch_read(lease);
    if (load)
        batch_load(load);
    if (b->n == 0)
        batch_free(b);
    else
        batch_wait(b);
}

/* ---- step 4: write back ------------------------------------------------------ */

/* One write-back job answered: the batch goes when both have. */
static void batch_job_done(oc_batch_t *b)
{
    if (--b->jobs_left > 0)
        return;
    oc_fills_t *fs = b->fs;
    batch_retire(b);
    fills_retire(fs);
}

static void batch_released(oc_mc_job_t *job, void *arg);

/* Whether store item `it` of b's write-back must be released: the server
 * refused it, and it was written over a lease. An early refresh's "lease"
 * is the live object's cas: deleting by it would drop the object the
 * refresh was to keep warm. Store items point at their fills' keys, in
 * the fills' order (batch_store): *f walks the fills to the item's by that
 * pointer, not by which fills are invalidated (an invalidation may land
 * while the write-back is under way). */
static int refused_lease(const oc_batch_t *b, size_t *f, const oc_mc_item_t *it)
{
    while (*f < b->n && b->fills[*f]->ckey != it->key)
        (*f)++;
    const oc_fill_t *fill = *f < b->n ? b->fills[(*f)++] : NULL;
    return it->refused && fill != NULL && !fill->refresh;
}

/* A write-back the server refused (SERVER_ERROR: a row larger than its
 * item size, out of memory) leaves our lease: it is deleted, like a failed
 * load's (batch_fail_release), so readers load at once instead of waiting
 * lease_wait for it until its TTL. Not after a timeout or a lost
 * connection: the delete would meet the same fate, and the server's
 * failover or return deals with its keys. Not an early refresh's (see
 * refused_lease). The items' keys are the fills' (alive until the batch
 * retires). */
static void batch_release_refused(oc_batch_t *b, const oc_mc_job_t *job)
{
    oc_ctx_t *ctx = b->fs->ctx;
    size_t n = 0, f = 0;
    for (size_t i = 0; i < job->n; i++)
        n += refused_lease(b, &f, &job->items[i]);
    oc_mc_job_t *rel =
        n && ctx->mc ? oc_mc_job_new_items(OC_MC_CAS_DELETE, n, batch_released, b) : NULL;
    if (rel == NULL)
        return; /* nothing refused, or no memory: the leases expire */
    size_t r = 0;
    f = 0;
    for (size_t i = 0; i < job->n; i++) {
        const oc_mc_item_t *it = &job->items[i];
        if (!refused_lease(b, &f, it))
            continue;
        rel->items[r].key = it->key;
        rel->items[r].klen = it->klen;
        rel->items[r].cas = it->cas;
        rel->items[r].cas_epoch = it->cas_epoch;
        rel->items[r].place = it->place;
        r++;
    }
    b->jobs_left++;
    oc_mc_submit(ctx->mc, rel);
}

static void batch_stored(oc_mc_job_t *job, void *arg)
{
    oc_batch_t *b = arg;
    oc_fills_t *fs = b->fs;
    if (job->errors)
        fs->ctx->stats->mc_errors++;
    for (size_t i = 0; i < job->n; i++)
        if (job->items[i].result == OC_MC_R_EXISTS ||
            job->items[i].result == OC_MC_R_NOT_FOUND)
            fs->ctx->stats->fills_dropped++; /* the lease was replaced or deleted */
    batch_release_refused(b, job);
    oc_mc_job_free(job);
    batch_job_done(b);
}

/* A lease-deleting job answered: counted, and freed. */
static void release_done(oc_fills_t *fs, oc_mc_job_t *job)
{
    if (job->errors)
        fs->ctx->stats->mc_errors++;
    for (size_t i = 0; i < job->n; i++)
        fs->ctx->stats->leases_released += job->items[i].result == OC_MC_R_OK;
    oc_mc_job_free(job);
}

static void batch_released(oc_mc_job_t *job, void *arg)
{
    oc_batch_t *b = arg;
    release_done(b->fs, job);
    batch_job_done(b);
}

/* The leases of a failed load deleted: its fills go now. */
static void batch_fail_released(oc_mc_job_t *job, void *arg)
{
    oc_batch_t *b = arg;
    release_done(b->fs, job);
    for (size_t i = 0; i < b->n; i++)
        fill_free(b->fs, b->fills[i]);
    batch_free(b);
}

/* The load of b failed: every waiter gets SERVER_ERROR, and the leases it
 * took are deleted (by cas, only if still its own). Left there until their
 * TTL (load_timeout + 1 s), each would make every reader of its key, this
 * sidecar's included, wait lease_wait and load without writing back: after
 * a load that timed out or lost its connection, seconds of slow gets and
 * of loads that cache nothing. The fills leave the map at once, so a get
 * that comes meanwhile starts its own (it reads after the delete: the
 * same connection, in order). Without a pool or memory: batch_fail. */
static void batch_fail_release(oc_batch_t *b, const char *err)
{
    oc_ctx_t *ctx = b->fs->ctx;
    size_t nrel = 0;
    for (size_t i = 0; i < b->n; i++)
        nrel += (b->fills[i]->leased && !b->fills[i]->refresh);
    oc_mc_job_t *rel = nrel && ctx->mc ? oc_mc_job_new_items(OC_MC_CAS_DELETE, nrel,
                                                             batch_fail_released, b)
                                       : NULL;
    if (rel == NULL) {
        batch_fail(b, err);
        return;
    }
    size_t r = 0;
    for (size_t i = 0; i < b->n; i++) {
        oc_fill_t *f = b->fills[i];
        fill_unmap(b->fs, f);
        fill_fail(f, err);
        if (f->leased && !f->refresh) {
            oc_mc_item_t *it = &rel->items[r++];
            it->key = f->ckey;
            it->klen = f->ckey_len;
            it->cas = f->lease_cas;
            it->cas_epoch = f->lease_epoch;
            it->place = f->place;
        }
    }
    oc_mc_submit(ctx->mc, rel);
}

static void batch_store(oc_batch_t *b);

static void batch_gate_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    batch_store(arg);
}

/* Fill f's item of the write-back: its row over its lease. */
static void store_item(oc_ctx_t *ctx, const oc_model_conf_t *m, const oc_fill_t *f,
                       oc_mc_item_t *it)
{
    it->key = f->ckey;
    it->klen = f->ckey_len;
    it->cas = f->lease_cas; /* only over our lease, untouched since */
    it->cas_epoch = f->lease_epoch;
    it->place = f->place;
    if (f->value) {
        it->val = f->value->data;
        it->vlen = f->value->len;
    }
    oc_entry_item(it, f->value ? OC_ENTRY_OBJECT : OC_ENTRY_MISSING, m,
                  ctx->conf->ttl_jitter_pct);
}

/* Write back what was loaded, by cas over each fill's lease. A fill a write
 * landed on while it loaded (invalidated) may hold a row older than that
 * write: it writes nothing, and takes its lease away instead (if memcached
 * still holds exactly that lease; an early refresh holds no lease, only
 * the live object's cas, and leaves it). Left there, the lease would make every
 * reader of the key, this sidecar's included, wait lease_wait and then load
 * without writing back, until the lease's TTL (load_timeout + 1 s). The
 * write's own delete usually took the lease already; it did not when the
 * lease was taken after that delete and the same invalidation reached this
 * sidecar a second time (the feed applies what its consumer applied). */
static void batch_store(oc_batch_t *b)
{
    oc_fills_t *fs = b->fs;
    oc_ctx_t *ctx = fs->ctx;
    if (oc_gate_hold(ctx->gate, &b->timer, batch_gate_cb, b))
        return;
    const oc_model_conf_t *m = &ctx->conf->models[b->model_idx];
    size_t n = 0, nrel = 0;
    for (size_t i = 0; i < b->n; i++) {
        const oc_fill_t *f = b->fills[i];
        n += (f->leased && !f->invalidated);
        nrel += (f->leased && f->invalidated && !f->refresh);
        /* known already; a fill without a lease (loaded after lease_wait)
         * writes nothing anyway, so no write refused it */
        ctx->stats->fills_dropped += (f->leased && f->invalidated);
    }
    /* Nothing to write, no memory, or shutting down (the pool is gone):
     * answered anyway; leases left behind expire. */
    oc_mc_job_t *store =
        n && ctx->mc ? oc_mc_job_new_items(OC_MC_CAS, n, batch_stored, b) : NULL;
    oc_mc_job_t *rel =
        nrel && ctx->mc ? oc_mc_job_new_items(OC_MC_CAS_DELETE, nrel, batch_released, b)
                        : NULL;
    b->jobs_left = (store != NULL) + (rel != NULL);
    if (b->jobs_left == 0) {
        batch_retire(b);
        fills_retire(fs);
        return;
    }
    size_t k = 0, r = 0;
    for (size_t i = 0; i < b->n; i++) {
        oc_fill_t *f = b->fills[i];
        if (!f->leased)
            continue;
        if (!f->invalidated && store) {
            store_item(ctx, m, f, &store->items[k++]);
        } else if (f->invalidated && !f->refresh && rel) {
            oc_mc_item_t *it = &rel->items[r++];
            it->key = f->ckey;
            it->klen = f->ckey_len;
            it->cas = f->lease_cas;
            it->cas_epoch = f->lease_epoch;
            it->place = f->place;
        }
    }
    /* Both are counted before either is sent: an answer may come at once. */
    if (store) {
        ctx->stats->mc_sets += n;
        oc_mc_submit(ctx->mc, store);
    }
    if (rel)
        oc_mc_submit(ctx->mc, rel);
}

/* ---- step 3: load ---------------------------------------------------------- */

static void batch_load(oc_batch_t *b);

/* The load of b's ids failed on the data of some row (a cast, a division,
 * a function that raised: OC_EROW): load each half again, so only the keys
 * whose rows are at fault fail, not every request that shared the query.
 * k bad rows among n cost at most 2 k log2(n) more queries. Returns -1 if
 * out of memory (b is left whole: it fails as one). */
static int batch_split(oc_batch_t *b)
{
    size_t half = b->n / 2;
    oc_batch_t *o = batch_new(b->fs, b->model_idx);
    if (o == NULL || (o->fills = malloc((b->n - half) * sizeof(*o->fills))) == NULL) {
        free(o);
        return -1;
    }
    o->cap = b->n - half;
    o->load_by = b->load_by; /* the halves are still the one load */
    for (size_t i = half; i < b->n; i++)
        o->fills[o->n++] = b->fills[i];
    b->n = half;
    b->fs->ctx->stats->load_splits++;
    batch_load(b);
    batch_load(o);
    return 0;
}

/* One failed load of b's model, said at most once a second per model with
 * the loads and keys since the last line: with PostgreSQL down every loop
 * turn with a miss fails one, and a line for each (thousands a second
 * under load) buried every other line of the log. The count also goes
 * out when the rate allows it, not at a quiet moment: a burst's last
 * second is said by the next failure of that model. */
static void load_failed_say(oc_batch_t *b, const char *err)
{
    oc_fills_t *fs = b->fs;
    uint64_t keys = 0;
    uint64_t n =
        oc_ratelogs_due(&fs->load_failed, b->model_idx, b->n, fills_now(fs), 1.0, &keys);
    if (n == 0)
        return;
    char q[OC_ERRLEN];
    oc_log_warn("event=load_failed model=%s loads=%llu keys=%llu reason=\"%s\"",
                fs->ctx->conf->models[b->model_idx].name, (unsigned long long)n,
                (unsigned long long)keys, oc_log_clean(q, sizeof(q), err));
}

static void batch_loaded(const oc_pg_row_t *rows, size_t n, oc_status_t st,
                         const char *err, void *arg)
{
    oc_batch_t *b = arg;
    if (st == OC_OK && n == b->n) {
        for (size_t i = 0; i < n && st == OC_OK; i++)
            if (rows[i].json &&
                (b->fills[i]->value = oc_blob_new(rows[i].json, rows[i].len)) == NULL)
                st = OC_ENOMEM, err = "out of memory";
    } else if (st == OC_OK) {
        st = OC_EDB, err = "rows out of step"; /* cannot happen: oc_pg's contract */
    }
    if (st == OC_EROW && b->n > 1 && batch_split(b) == 0)
        return;
    if (st != OC_OK) {
        load_failed_say(b, err);
        /* Nothing is cached: a key that could not be loaded is not
         * called absent. Our leases are deleted, so the next reader loads
         * at once. */
        batch_fail_release(b, err);
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        fill_set_state(b->fills[i], OC_FILL_STORING);
        fill_answer(b->fs, b->fills[i]);
    }
    batch_store(b);
}

/* Fill i's canonical id, for the load. */
static void batch_id(const void *arg, size_t i, const char **p, size_t *len)
{
    const oc_fill_t *f = ((const oc_batch_t *)arg)->fills[i];
    *p = f->ckey + f->canon_off;
    *len = f->ckey_len - f->canon_off;
}

/* How many queries a new load of b goes out as: PostgreSQL answers one
 * query on one core, so the ids of a large load in parts on connections
 * that sit idle come back sooner (cold gets of 100 keys at one client:
 * 0.82x -> 1.01x the hand-written pattern, docs/benchmarks.md). Only idle
 * ones: a part that waited in the queue would gain nothing and cost the
 * database a statement. Each part holds load_split_min ids or more, so
 * there may be fewer parts than idle connections. */
size_t oc_fill_parts(size_t n, size_t min, size_t idle)
{
    if (min == 0 || n / 2 < min)
        return 1;
    size_t most = n / min;
    return idle < 2 ? 1 : idle < most ? idle : most;
}

static size_t batch_parts(const oc_batch_t *b)
{
    size_t min = b->fs->ctx->conf->pg_split_min;
    if (min == 0 || b->n / 2 < min || b->fs->ctx->pg == NULL)
        return 1; /* not worth asking the connections */
    return oc_fill_parts(b->n, min, oc_pg_idle(b->fs->ctx->pg));
}

/* The last n - keep fills of b as a batch of their own, loaded within b's
 * time (-1: out of memory, b left whole). */
static int batch_load_tail(oc_batch_t *b, size_t keep)
{
    oc_batch_t *o = batch_new(b->fs, b->model_idx);
    if (o == NULL || (o->fills = malloc((b->n - keep) * sizeof(*o->fills))) == NULL) {
        free(o);
        return -1;
    }
    o->cap = b->n - keep;
    o->load_by = b->load_by;
    for (size_t i = keep; i < b->n; i++)
        o->fills[o->n++] = b->fills[i];
    b->n = keep;
    b->fs->ctx->stats->load_parallel_parts++;
    batch_load(o);
    return 0;
}

static void batch_load(oc_batch_t *b)
{
    /* load_timeout runs from the first query: a split load's halves and a
     * load's parts get what is left of it, not a load_timeout each
     * (before, the requests of a load split k times could wait k + 1
     * load_timeouts, past their leases; found by a review). */
    if (b->load_by == 0) { /* a new load, not a part or a half of one */
        b->load_by = oc_stats_now() + b->fs->ctx->conf->load_timeout_ms / 1e3;
        /* parts of n / parts ids, the first ones one more */
        for (size_t parts = batch_parts(b); parts > 1; parts--)
            if (batch_load_tail(b, b->n - b->n / parts) != 0)
                break; /* out of memory: the rest goes as one */
    }
    for (size_t i = 0; i < b->n; i++) {
        fill_set_state(b->fills[i], OC_FILL_LOADING);
        fill_sent(b->fs, b->fills[i]);
    }
    if (b->fs->ctx->pg == NULL) {
        batch_fail(b, "shutting down");
        return;
    }
    oc_pg_load_until(b->fs->ctx->pg, b->model_idx, b->n, batch_id, b, b->load_by,
                     batch_loaded, b);
}

/* ---- step 2: read and lease -------------------------------------------------
 *
 * One read does both: a meta get with N (oc_mc lease_ttl_s) answers what
 * the key holds, and when it holds nothing it leaves a lease there at once.
 * LEASING fills read right away; WAITING ones (another sidecar's lease)
 * read again after a back-off, until lease_wait is over. */

static void batch_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_batch_t *b = arg;
    batch_unwait(b);
    b->fs->ctx->stats->lease_waits += b->n;
    batch_read(b);
}

static void batch_wait(oc_batch_t *b)
{
    oc_fills_t *fs = b->fs;
    double now = fills_now(fs);
    if (b->wait_began == 0)
        b->wait_began = now;
    for (size_t i = 0; i < b->n; i++)
        fill_set_state(b->fills[i], OC_FILL_WAITING);
    uint32_t d =
        oc_fill_wait_delay(b->wait_began, now, b->delay_ms, fs->ctx->conf->lease_wait_ms);
    /* lease_wait may already be over (or 0): read once more at once, and
     * a lease still held then is loaded around. */
    b->delay_ms = d;
    if (b->timer == NULL &&
        (b->timer = evtimer_new(fs->ctx->base, batch_poll, b)) == NULL) {
        batch_fail(b, "out of memory");
        return;
    }
    evtimer_assign(b->timer, fs->ctx->base, batch_poll, b);
    struct timeval tv = {0, (suseconds_t)d * 1000};
    evtimer_add(b->timer, &tv);
    if (!b->waiting) {
        b->waiting = 1;
        b->wprev = NULL;
        b->wnext = fs->waiting;
        if (fs->waiting)
            fs->waiting->wprev = b;
        fs->waiting = b;
    }
}

static void fill_take_lease(oc_fills_t *fs, oc_fill_t *f, uint64_t cas, uint64_t epoch,
                            uint64_t place)
{
    f->leased = 1;
    f->lease_cas = cas;
    f->lease_epoch = epoch;
    f->place = place;
    f->lease_seq = fs->read_seq;
}

/* What a read found for f: its next state (and its value or lease). */
static void fill_read(oc_fills_t *fs, oc_fill_t *f, const oc_mc_job_t *job, size_t i,
                      int give_up)
{
    const oc_mc_hit_t *h = &job->hits[i];
    oc_entry_class_t found = oc_entry_classify(h);
    oc_fill_state_t next = oc_fill_after_read(f->state, found, give_up, &f->lease_tries);
    if (found == OC_EC_OBJECT && (f->value = oc_blob_new(h->data, h->len)) == NULL)
        next = OC_FILL_LOADING; /* out of memory: try the long way */
    /* an unchecked push, or a tombstone (checked after it is stored) */
    f->unconfirmed =
        (found == OC_EC_OBJECT && oc_entry_kind(h->flags) == OC_ENTRY_PUSHED) ||
        (found == OC_EC_ABSENT && oc_entry_kind(h->flags) == OC_ENTRY_TOMBSTONE);
    if (found == OC_EC_LEASE_WON)
        fill_take_lease(fs, f, h->cas, h->cas_epoch, h->place);
    if (found == OC_EC_LEASE_HELD && next == OC_FILL_LOADING)
        fs->ctx->stats->lease_timeouts++; /* waited enough: load, no fill */
    fill_set_state(f, next);
}

static void batch_read_done(oc_mc_job_t *job, void *arg)
{
    oc_batch_t *b = arg;
    oc_fills_t *fs = b->fs;
    int give_up = b->wait_began > 0 && b->delay_ms == 0;
    if (job->errors)
        fs->ctx->stats->mc_errors++;
    for (size_t i = 0; i < b->n; i++)
        fill_read(fs, b->fills[i], job, i, give_up);
    oc_mc_job_free(job);
    batch_dispatch(b);
    fills_retire(fs);
}

static void batch_read(oc_batch_t *b)
{
    oc_ctx_t *ctx = b->fs->ctx;
    if (ctx->mc == NULL) {
        batch_fail(b, "shutting down");
        return;
    }
    oc_mc_job_t *job = oc_mc_job_new_get(b->n, batch_read_done, b);
    if (job == NULL) {
        batch_fail(b, "out of memory");
        return;
    }
    job->lease_ttl_s = ctx->lease_ttl_s;
    for (size_t i = 0; i < b->n; i++) {
        fill_sent(b->fs, b->fills[i]);
        job->keys[i] = b->fills[i]->ckey;
        job->key_lens[i] = b->fills[i]->ckey_len;
    }
    oc_mc_submit(ctx->mc, job);
}

/* ---- step 1: join or start ------------------------------------------------------ */

static oc_fill_t *fill_new(oc_fills_t *fs, const oc_fill_waiter_t *w)
{
    /* The key right after the fill, one allocation: a cold get makes and
     * frees one fill per key. */
    oc_fill_t *f = calloc(1, sizeof(*f) + w->ckey_len + 1);
    if (f == NULL)
        return NULL;
    char *ck = (char *)(f + 1);
    memcpy(ck, w->ckey, w->ckey_len);
    ck[w->ckey_len] = '\0';
    if (oc_map_put(fs->map, ck, w->ckey_len, f) != OC_OK) {
        free(f);
        return NULL;
    }
    f->ckey = ck;
    f->ckey_len = w->ckey_len;
    f->canon_off = w->canon_off;
    f->model_idx = w->model_idx;
    f->in_map = 1;
    f->era = fs->era;
    /* Where the get's own read left the key decides the first step. */
    if (w->read == OC_EC_LEASE_WON)
        fill_take_lease(fs, f, w->lease_cas, w->lease_epoch, w->lease_place);
    fill_set_state(f, oc_fill_first_state(w->read));
    fs->ctx->stats->loads_in_flight++;
    return f;
}

/* The pending batch of model m (made on first use). */
static oc_batch_t *pending_batch(oc_fills_t *fs, size_t m)
{
    if (m >= fs->npending) { /* a reload added models */
        size_t n = m + 1;
        oc_batch_t **p = realloc(fs->pending, n * sizeof(*p));
        if (p == NULL)
            return NULL;
        memset(p + fs->npending, 0, (n - fs->npending) * sizeof(*p));
        fs->pending = p;
        fs->npending = n;
    }
    if (fs->pending[m] == NULL)
        fs->pending[m] = batch_new(fs, m);
    return fs->pending[m];
}

/* Start a load for w, or join one; returns 0, or -1 if out of memory.
 * counted: w counts in coalesced_waits already (a late joiner sent on). */
static int fill_one(oc_fills_t *fs, oc_fill_waiter_t *w, int counted)
{
    oc_fill_t *f = oc_map_get(fs->map, w->ckey, w->ckey_len);
    if (f && f->era == fs->era && f->state < OC_FILL_STORING && f->lease_seq == 0 &&
        f->sent_seq != 0 && w->read != OC_EC_LEASE_WON && w->read_seq > f->sent_seq) {
        /* Too late for the answer under way (oc_fill_may_answer): it waits
         * for this fill's next read or load, or the fill after it. */
        fs->ctx->stats->coalesced_waits += !counted;
        w->next = f->late;
        f->late = w;
        return 0;
    }
    if (f &&
        (f->era != fs->era ||
         !oc_fill_may_answer(
             f->lease_seq, (oc_fill_cas_t){f->lease_cas, f->lease_epoch}, f->sent_seq,
             w->read, (oc_fill_cas_t){w->lease_cas, w->lease_epoch}, w->read_seq))) {
        oc_fill_invalidate(fs, w->ckey, w->ckey_len);
        f = NULL;
    }
    if (f && f->state >= OC_FILL_STORING) {
        fs->ctx->stats->coalesced_waits += !counted;
        w->unconfirmed = f->unconfirmed;
        w->done(w, f->value ? OC_GET_FOUND : OC_GET_ABSENT, f->value, NULL);
        return 0;
    }
    if (f) {
        fs->ctx->stats->coalesced_waits += !counted;
    } else {
        oc_batch_t *b = pending_batch(fs, w->model_idx);
        if (b == NULL || (f = fill_new(fs, w)) == NULL)
            return -1;
        if (batch_add(b, f) != 0) {
            fill_free(fs, f);
            return -1;
        }
        event_active(fs->start_ev, EV_TIMEOUT, 0);
    }
    w->next = f->waiters;
    f->waiters = w;
    return 0;
}

void oc_fill_refresh(oc_fills_t *fs, const oc_fill_waiter_t *w, uint64_t cas)
{
    if (oc_map_get(fs->map, w->ckey, w->ckey_len))
        return; /* a load of it is under way here already */
    /* The object's cas stands for a lease this read won: the same path as
     * a miss that leased the key, without a waiter. */
    oc_fill_waiter_t r = *w;
    r.read = OC_EC_LEASE_WON;
    r.lease_cas = cas;
    r.next = NULL;
    oc_batch_t *b = pending_batch(fs, w->model_idx);
    oc_fill_t *f = b ? fill_new(fs, &r) : NULL;
    if (f == NULL)
        return; /* out of memory: the object simply expires */
    f->refresh = 1;
    if (batch_add(b, f) != 0) {
        fill_free(fs, f);
        return;
    }
    fs->ctx->stats->early_refreshes++;
    event_active(fs->start_ev, EV_TIMEOUT, 0);
}

void oc_fill_misses(oc_fills_t *fs, oc_fill_waiter_t **w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fill_one(fs, w[i], 0) != 0)
            w[i]->done(w[i], OC_GET_ERROR, NULL, "out of memory");
}

/* Every request of this loop turn has handed over its misses: one read
 * and one load per model for all of them. */
static void on_start(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_fills_t *fs = arg;
    for (size_t m = 0; m < fs->npending; m++) {
        oc_batch_t *b = fs->pending[m];
        fs->pending[m] = NULL;
        if (b)
            batch_dispatch(b);
    }
}

/* ---- life ------------------------------------------------------------------ */

oc_fills_t *oc_fills_new(oc_ctx_t *ctx, char *err)
{
    oc_fills_t *fs = calloc(1, sizeof(*fs));
    if (fs == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    fs->ctx = ctx;
    fs->map = oc_map_new(1024);
    fs->start_ev = event_new(ctx->base, -1, 0, on_start, fs);
    if (fs->map == NULL || fs->start_ev == NULL) {
        oc_fills_free(fs);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    return fs;
}

void oc_fills_free(oc_fills_t *fs)
{
    if (fs == NULL)
        return;
    for (size_t m = 0; m < fs->npending; m++)
        if (fs->pending[m])
            batch_fail(fs->pending[m], "shutting down");
    /* a forced shutdown: nothing else holds them */
    for (oc_batch_t *b = fs->waiting, *next; b != NULL; b = next) {
        next = b->wnext;
        b->waiting = 0; /* the list goes as a whole */
        b->wprev = b->wnext = NULL;
        batch_fail(b, "shutting down");
    }
    fs->waiting = NULL;
    free(fs->pending);
    oc_ratelogs_free(&fs->load_failed);
    while (fs->retire_head) {
        oc_fill_t *f = fs->retire_head;
        fs->retire_head = f->retire_next;
        fill_free(fs, f);
    }
    if (fs->start_ev)
        event_free(fs->start_ev);
    oc_map_free(fs->map);
    free(fs);
}

/*
 * objcached-loadgen: the load generator of the benchmark (bench/run.py).
 *
 * Runs one path for a while with C threads, each asking batches of K
 * distinct ids and checking every value it gets back, then prints one JSON
 * line of counts, rates and latency percentiles on stdout. `--help` lists
 * the modes and options; bench/run.py is the caller that parses the line.
 *
 * A run: the main thread parses the options and builds the shared parts (a
 * libmemcached template, the key picker); each worker gets its own
 * memcached_st (made and connected here, in one thread) and, in its own
 * thread, its own PostgreSQL connection. Every worker then waits at a
 * common start line, so that setup is never measured and the first batches
 * leave together. The measured window opens after --warmup and closes at
 * --duration or after --batches; a batch counts when it starts inside the
 * window, and the measured seconds run to the end of the last one.
 *
 * Modules: lg_opts (command line), lg_keys (PRNG, Zipf, cursors), lg_batch
 * (one batch's ids, keys and states), lg_mc (libmemcached), lg_pg (libpq),
 * lg_lat (latencies), lg_conns (the conns mode).
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lg_batch.h"
#include "lg_clock.h"
#include "lg_conns.h"
#include "lg_keys.h"
#include "lg_lat.h"
#include "lg_mc.h"
#include "lg_opts.h"
#include "lg_pg.h"

#define ERRORS_LOGGED_PER_THREAD 3
#define DELETE_CHUNK             1000 /* deletes per flush */

typedef struct totals {
    uint64_t batches, keys, hits, misses, absent, errors, bad_values, pg_queries;
    uint64_t all_batches; /* the warm-up's too: per-get costs read off the
                             processes (CPU, context switches) cover both */
} totals_t;

/* The start line: workers arrive, the main thread fixes the measured window
 * and opens it for all at once. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned arrived;
    bool open;
} gate_t;

typedef struct run run_t;

typedef struct worker {
    run_t *run;
    unsigned index;
    pthread_t tid;
    bool started;     /* tid is a running thread */
    lg_rng_t rng;     /* key choice: seed * 1000 + index */
    memcached_st *mc; /* NULL in mode sql */
    memcached_result_st result;
    bool have_result;
    lg_pg_t *pg; /* NULL in mode get */
    lg_batch_t batch;
    lg_tally_t tally; /* of the current batch */
    totals_t totals;  /* of the measured batches */
    lg_lat_t lat;
    uint64_t last_end_ns;
    unsigned errors_logged;
    unsigned asks_left; /* --repeat: asks of the current batch's ids still to come */
    uint64_t paced;     /* --rate: batches started so far */
    uint64_t pace_from; /* --rate: when the first one started */
} worker_t;

struct run {
    const lg_opts_t *o;
    memcached_st *mc_tmpl;
    lg_picker_t picker;
    gate_t gate;
    /* Written by the main thread before the gate opens, read-only after. */
    uint64_t measure_from_ns;
    uint64_t deadline_ns;
    atomic_bool stop;
    _Atomic uint64_t claimed; /* measured batches started (--batches) */
    worker_t *workers;
};

static bool mode_uses_pg(lg_mode_t m)
{
    return m == LG_MODE_HAND || m == LG_MODE_N1 || m == LG_MODE_SQL;
}

static bool mode_writes(lg_mode_t m)
{
    return m == LG_MODE_HAND || m == LG_MODE_N1;
}

/* ------------------------------------------------------------ batches */

/* The hand and n1 patterns write each loaded row back. */
static void write_back(void *ctx, size_t slot, const char *json, size_t len)
{
    worker_t *w = ctx;
    lg_mc_queue_set(w->mc, &w->batch, slot, json, len, &w->tally);
}

static void batch_get(worker_t *w)
{
    lg_mc_get(w->mc, &w->result, &w->batch, &w->tally);
}

static void batch_hand(worker_t *w)
{
    lg_mc_get(w->mc, &w->result, &w->batch, &w->tally);
    size_t n = lg_batch_wanted(&w->batch);
    lg_pg_load_any(w->pg, &w->batch, w->batch.todo, n, write_back, w, &w->tally);
    if (w->tally.loaded > 0)
        lg_mc_flush(w->mc, &w->tally);
}

static void batch_n1(worker_t *w)
{
    lg_mc_get(w->mc, &w->result, &w->batch, &w->tally);
    size_t n = lg_batch_wanted(&w->batch);
    for (size_t i = 0; i < n; i++)
        lg_pg_load_one(w->pg, &w->batch, w->batch.todo[i], write_back, w, &w->tally);
    if (w->tally.loaded > 0)
        lg_mc_flush(w->mc, &w->tally);
}

static void batch_sql(worker_t *w)
{
    size_t n = lg_batch_wanted(&w->batch);
    lg_pg_load_any(w->pg, &w->batch, w->batch.todo, n, NULL, NULL, &w->tally);
}

static void run_batch(worker_t *w)
{
    lg_tally_reset(&w->tally);
    switch (w->run->o->mode) {
    case LG_MODE_GET:
        batch_get(w);
        break;
    case LG_MODE_HAND:
        batch_hand(w);
        break;
    case LG_MODE_N1:
        batch_n1(w);
        break;
    case LG_MODE_SQL:
        batch_sql(w);
        break;
    case LG_MODE_CONNS:
    case LG_MODE_DELETE:
        break;
    }
}

static void log_error(worker_t *w, const char *why)
{
    if (w->errors_logged++ < ERRORS_LOGGED_PER_THREAD)
        fprintf(stderr, "objcached-loadgen: thread %u: %s%s\n", w->index, why,
                w->errors_logged == ERRORS_LOGGED_PER_THREAD
                    ? " (further errors not shown)"
                    : "");
}

static void account(worker_t *w, uint64_t ns, uint64_t end_ns)
{
    const lg_tally_t *t = &w->tally;
    totals_t *s = &w->totals;
    uint64_t n = w->batch.n;
    s->batches++;
    s->keys += n;
    s->hits += t->hits;
    /* get: what the cache did not have; hand, n1, sql: what was loaded. */
    s->misses += w->run->o->mode == LG_MODE_GET ? n - t->hits : t->loaded;
    s->absent += n - t->hits - t->loaded;
    s->errors += t->error;
    s->bad_values += t->bad_values;
    s->pg_queries += t->pg_queries;
    lg_lat_add(&w->lat, ns);
    w->last_end_ns = end_ns;
}

/* --batches: whether one more measured batch may start. */
static bool claim_batch(run_t *r)
{
    if (r->o->batches == 0)
        return true;
    if (atomic_fetch_add_explicit(&r->claimed, 1, memory_order_relaxed) < r->o->batches)
        return true;
    atomic_store_explicit(&r->stop, true, memory_order_relaxed);
    return false;
}

/* The next batch's ids: new ones, or the same again while --repeat asks. */
static void next_ids(worker_t *w)
{
    if (w->asks_left > 0) {
        w->asks_left--;
        lg_batch_rewind(&w->batch);
        return;
    }
    lg_pick(&w->run->picker, &w->rng, &w->batch);
    w->asks_left = w->run->o->repeat - 1;
}

/* --rate: wait until this thread's next batch is due (start + i / rate). */
static void pace(worker_t *w)
{
    double rate = w->run->o->rate;
    if (rate <= 0)
        return;
    if (w->paced++ == 0) {
        w->pace_from = lg_now_ns();
        return;
    }
    uint64_t due = w->pace_from + (uint64_t)((double)(w->paced - 1) * 1e9 / rate);
    uint64_t now = lg_now_ns();
    if (due > now) {
        struct timespec ts = {(time_t)((due - now) / 1000000000u),
                              (long)((due - now) % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

static void worker_loop(worker_t *w)
{
    run_t *r = w->run;
    for (;;) {
        uint64_t now = lg_now_ns();
        /* --batches counts distinct batches: the repeats of one claimed
         * batch always run (another thread's failed claim does not cut
         * them), so that every id of it is asked --repeat times. */
        bool repeating = w->asks_left > 0;
        if ((!repeating && atomic_load_explicit(&r->stop, memory_order_relaxed)) ||
            now >= r->deadline_ns)
            return;
        bool measured = now >= r->measure_from_ns;
        if (measured && !repeating && !claim_batch(r))
            return;
        pace(w);
        next_ids(w);
        /* Latency: from the first request to the full answer. */
        uint64_t t0 = lg_now_ns();
        run_batch(w);
        uint64_t t1 = lg_now_ns();
        w->totals.all_batches++;
        if (w->tally.error)
            log_error(w, w->tally.why);
        if (measured)
            account(w, t1 - t0, t1);
    }
}

/* ------------------------------------------------------------ threads */

static void gate_arrive(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->arrived++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* Waits for n workers, fixes the measured window, lets them all go. */
static void gate_open(run_t *r, unsigned n)
{
    gate_t *g = &r->gate;
    pthread_mutex_lock(&g->mu);
    while (g->arrived < n)
        pthread_cond_wait(&g->cv, &g->mu);
    uint64_t now = lg_now_ns();
    r->measure_from_ns = now + (uint64_t)(r->o->warmup * 1e9);
    r->deadline_ns = r->o->duration > 0
                         ? r->measure_from_ns + (uint64_t)(r->o->duration * 1e9)
                         : UINT64_MAX;
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* A setup failure stops the whole run: numbers from fewer threads than
 * asked would be misread. */
static void *worker_main(void *arg)
{
    worker_t *w = arg;
    run_t *r = w->run;
    if (mode_uses_pg(r->o->mode)) {
        char err[512];
        w->pg = lg_pg_open(r->o->pg, r->o->table, err, sizeof(err));
        if (w->pg == NULL) {
            fprintf(stderr, "objcached-loadgen: thread %u: %s\n", w->index, err);
            w->totals.errors++;
            atomic_store(&r->stop, true);
        }
    }
    gate_arrive(&r->gate);
    worker_loop(w);
    return NULL;
}

/* The parts made in the main thread: a memcached_st is made (and
 * connected) here, the rest is memory. */
static bool worker_init(worker_t *w, run_t *r, unsigned index)
{
    const lg_opts_t *o = r->o;
    char err[512];
    w->run = r;
    w->index = index;
    lg_rng_seed(&w->rng, o->seed * 1000 + index);
    lg_lat_init(&w->lat, o->max_samples, o->seed * 1000 + index);
    if (!lg_batch_init(&w->batch, o->k, o->prefix ? o->prefix : "")) {
        fprintf(stderr, "objcached-loadgen: out of memory\n");
        return false;
    }
    if (r->mc_tmpl == NULL)
        return true;
    w->mc = lg_mc_connect(o, mode_writes(o->mode), err, sizeof(err));
    if (w->mc == NULL) {
        fprintf(stderr, "objcached-loadgen: %s\n", err);
        return false;
    }
    if (err[0] != '\0' && index == 0)
        fprintf(stderr, "objcached-loadgen: warning: %s\n", err);
    w->have_result = memcached_result_create(w->mc, &w->result) != NULL;
    return w->have_result;
}

static void worker_free(worker_t *w)
{
    if (w->have_result)
        memcached_result_free(&w->result);
    if (w->mc != NULL)
        memcached_free(w->mc);
    lg_pg_close(w->pg);
    lg_batch_free(&w->batch);
    lg_lat_free(&w->lat);
}

/* ------------------------------------------------------------- output */

static void json_string(FILE *f, const char *s)
{
    if (s == NULL) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void print_result(run_t *r, const totals_t *t, double seconds,
                         const lg_lat_summary_t *lat)
{
    const lg_opts_t *o = r->o;
    double per_s = seconds > 0 ? 1.0 / seconds : 0.0;
    FILE *f = stdout;
    fputs("{\"label\":", f);
    json_string(f, o->label);
    fputs(",\"mode\":", f);
    json_string(f, o->mode_name);
    fputs(",\"servers\":", f);
    json_string(f, o->servers_arg);
    fprintf(f, ",\"protocol\":\"%s\"", o->binary ? "binary" : "text");
    fprintf(f,
            ",\"K\":%u,\"C\":%u,\"seconds\":%.6f,\"batches\":%" PRIu64
            ",\"keys\":%" PRIu64 ",\"hits\":%" PRIu64 ",\"misses\":%" PRIu64
            ",\"absent\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"bad_values\":%" PRIu64,
            o->k, o->c, seconds, t->batches, t->keys, t->hits, t->misses, t->absent,
            t->errors, t->bad_values);
    fprintf(f,
            ",\"keys_per_s\":%.1f,\"batches_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f"
            ",\"p999_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f,\"pg_queries\":%" PRIu64,
            (double)t->keys * per_s, (double)t->batches * per_s, lat->p50_us, lat->p99_us,
            lat->p999_us, lat->max_us, lat->mean_us, t->pg_queries);
    fprintf(f, ",\"all_batches\":%" PRIu64, t->all_batches);
    uint64_t next;
    if (lg_picker_cursor(&r->picker, &next))
        fprintf(f, ",\"cold_next\":%" PRIu64 "}\n", next);
    else
        fputs(",\"cold_next\":null}\n", f);
    fflush(f);
}

static void add_totals(totals_t *sum, const totals_t *t)
{
    sum->batches += t->batches;
    sum->keys += t->keys;
    sum->hits += t->hits;
    sum->misses += t->misses;
    sum->absent += t->absent;
    sum->errors += t->errors;
    sum->bad_values += t->bad_values;
    sum->pg_queries += t->pg_queries;
    sum->all_batches += t->all_batches;
}

/* Sums the workers, prints the line; returns the exit status. */
static int report(run_t *r)
{
    const lg_opts_t *o = r->o;
    totals_t sum = {0};
    uint64_t last_end = r->measure_from_ns;
    const lg_lat_t **lats = calloc(o->c, sizeof(*lats));
    for (unsigned i = 0; i < o->c; i++) {
        add_totals(&sum, &r->workers[i].totals);
        if (r->workers[i].last_end_ns > last_end)
            last_end = r->workers[i].last_end_ns;
        if (lats != NULL)
            lats[i] = &r->workers[i].lat;
    }
    lg_lat_summary_t lat;
    if (lats == NULL || !lg_lat_summarize(lats, o->c, &lat)) {
        fprintf(stderr, "objcached-loadgen: out of memory for the percentiles\n");
        memset(&lat, 0, sizeof(lat));
        sum.errors++;
    }
    free(lats);
    double seconds =
        sum.batches > 0 ? (double)(last_end - r->measure_from_ns) / 1e9 : 0.0;
    print_result(r, &sum, seconds, &lat);
    fprintf(
        stderr,
        "objcached-loadgen: %s: %" PRIu64 " batches in %.2f s, %.0f keys/s, %" PRIu64
        " hits, p50 %.0f us, p99 %.0f us, %" PRIu64 " errors, %" PRIu64 " bad values\n",
        o->mode_name, sum.batches, seconds, seconds > 0 ? (double)sum.keys / seconds : 0,
        sum.hits, lat.p50_us, lat.p99_us, sum.errors, sum.bad_values);
    return sum.errors > 0 || sum.bad_values > 0 ? 1 : 0;
}

/* --------------------------------------------------------------- modes */

static void describe(const lg_opts_t *o)
{
    fprintf(stderr,
            "objcached-loadgen: %s K=%u C=%u servers=%s prefix=%s: warmup %.3g s, "
            "measuring %s%.3g s",
            o->mode_name, o->k, o->c, o->servers_arg ? o->servers_arg : "-",
            o->prefix ? o->prefix : "-", o->warmup, o->duration > 0 ? "" : "(no limit) ",
            o->duration);
    if (o->batches > 0)
        fprintf(stderr, " or %" PRIu64 " batches", o->batches);
    fputc('\n', stderr);
}

static void start_workers(run_t *r, unsigned *started)
{
    *started = 0;
    for (unsigned i = 0; i < r->o->c; i++) {
        worker_t *w = &r->workers[i];
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            fprintf(stderr, "objcached-loadgen: cannot start thread %u\n", i);
            w->totals.errors++;
            atomic_store(&r->stop, true);
            return;
        }
        w->started = true;
        (*started)++;
    }
}

static int run_batches(const lg_opts_t *o)
{
    run_t r = {.o = o};
    char err[512];
    int status = 1;
    unsigned started = 0;
    pthread_mutex_init(&r.gate.mu, NULL);
    pthread_cond_init(&r.gate.cv, NULL);
    atomic_init(&r.stop, false);
    atomic_init(&r.claimed, 0);
    lg_picker_init(&r.picker, o);
    describe(o);
    if (o->mode != LG_MODE_SQL) {
        r.mc_tmpl = lg_mc_new(o, mode_writes(o->mode), err, sizeof(err));
        if (r.mc_tmpl == NULL) {
            fprintf(stderr, "objcached-loadgen: %s\n", err);
            goto done;
        }
    }
    r.workers = calloc(o->c, sizeof(*r.workers));
    if (r.workers == NULL)
        goto done;
    for (unsigned i = 0; i < o->c; i++)
        if (!worker_init(&r.workers[i], &r, i))
            goto done;
    start_workers(&r, &started);
    gate_open(&r, started);
    for (unsigned i = 0; i < o->c; i++)
        if (r.workers[i].started)
            pthread_join(r.workers[i].tid, NULL);
    status = report(&r);
done:
    for (unsigned i = 0; r.workers != NULL && i < o->c; i++)
        worker_free(&r.workers[i]); /* calloc'd: a part never made is NULL */
    free(r.workers);
    if (r.mc_tmpl != NULL)
        memcached_free(r.mc_tmpl);
    pthread_cond_destroy(&r.gate.cv);
    pthread_mutex_destroy(&r.gate.mu);
    return status;
}

/* delete: prefix+id for every id of --ids, in pipelined chunks, then one
 * round trip per server so that every delete has happened on exit. */
static int run_delete(const lg_opts_t *o)
{
    char err[512];
    uint64_t deleted = 0, errors = 0;
    lg_batch_t b = {0};
    lg_tally_t t;
    memcached_st *mc = NULL, *tmpl = lg_mc_new(o, true, err, sizeof(err));
    if (tmpl == NULL || (mc = lg_mc_connect(o, true, err, sizeof(err))) == NULL ||
        !lg_batch_init(&b, DELETE_CHUNK, o->prefix)) {
        fprintf(stderr, "objcached-loadgen: %s\n", tmpl && mc ? "out of memory" : err);
        errors++;
        goto done;
    }
    if (err[0] != '\0')
        fprintf(stderr, "objcached-loadgen: warning: %s\n", err);
    for (uint64_t id = o->ids_lo; id <= o->ids_hi;) {
        lg_batch_clear(&b);
        lg_tally_reset(&t);
        while (b.n < b.cap && id <= o->ids_hi)
            lg_batch_add(&b, id++);
        for (size_t slot = 0; slot < b.n; slot++)
            lg_mc_queue_delete(mc, &b, slot, &t);
        lg_mc_flush(mc, &t);
        if (t.error && errors++ < ERRORS_LOGGED_PER_THREAD)
            fprintf(stderr, "objcached-loadgen: delete: %s\n", t.why);
        if (!t.error)
            deleted += b.n;
    }
    lg_tally_reset(&t);
    lg_mc_sync(mc, &t);
    if (t.error) {
        fprintf(stderr, "objcached-loadgen: delete: %s\n", t.why);
        errors++;
    }
done:
    printf("{\"mode\":\"delete\",\"deleted\":%" PRIu64 ",\"errors\":%" PRIu64 "}\n",
           deleted, errors);
    fflush(stdout);
    lg_batch_free(&b);
    if (mc != NULL)
        memcached_free(mc);
    if (tmpl != NULL)
        memcached_free(tmpl);
    return errors > 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    lg_opts_t o;
    char err[512];
    switch (lg_opts_parse(&o, argc, argv, err, sizeof(err))) {
    case LG_PARSE_HELP:
        lg_opts_usage(stdout);
        return 0;
    case LG_PARSE_ERROR:
        fprintf(stderr, "objcached-loadgen: %s\n", err);
        return 2;
    case LG_PARSE_OK:
        break;
    }
    /* A server that goes away must be an error count, not a dead process. */
    signal(SIGPIPE, SIG_IGN);
    switch (o.mode) {
    case LG_MODE_CONNS:
        return lg_conns_run(&o);
    case LG_MODE_DELETE:
        return run_delete(&o);
    default:
        return run_batches(&o);
    }
}

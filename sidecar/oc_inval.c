#include "oc_inval.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oc_conf.h"
#include "oc_feed.h"
#include "oc_fill.h"
#include "oc_gens.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_near.h"
#include "oc_pg.h"
#include "oc_pgconn.h"
#include "oc_sampler.h"
#include "oc_sql.h"
#include "oc_stats.h"

typedef enum oc_inval_state {
    OC_INVAL_IDLE,       /* waiting for a NOTIFY or the poll timer */
    OC_INVAL_GENS,       /* reading the models' generations */
    OC_INVAL_CLAIMING,   /* BEGIN + claim sent */
    OC_INVAL_APPLYING,   /* memcached deletes under way */
    OC_INVAL_REQUEUEING, /* failed keys going back into the outbox */
    OC_INVAL_FEEDING,    /* appending what was applied to the feed */
    OC_INVAL_PROBING,    /* is there a feed (schema version 2)? */
    OC_INVAL_ENDING,     /* COMMIT or ROLLBACK sent */
    OC_INVAL_CHECKING,   /* reading the database's identity */
    OC_INVAL_BUMPING,    /* a rollback: every model bumped whole */
} oc_inval_state_t;

struct oc_inval {
    oc_ctx_t *ctx;
    oc_pgconn_t *pc;
    oc_inval_state_t state;
    struct event *poll;
    int again;            /* woken while busy: run another cycle after */
    PGresult *claimed;    /* rows being applied (keys point into it) */
    PGresult *gens;       /* every model's generation, read after the claim */
    char *arena;          /* cache keys of the deletes */
    oc_mc_job_t *job;     /* the deletes, once done (for the requeue) */
    int *job_row;         /* per delete item: its row in claimed */
    size_t prefix_len;    /* key_prefix's length when apply() made the keys (a
                             reload may change it before the requeue) */
    char *requeue_models; /* array literals for the requeue, kept alive */
    char *requeue_keys;
    int full;       /* the last claim was a full batch */
    int dying;      /* freed while its deletes were out: applied() frees */
    int orphaned;   /* the connection dropped while its deletes were out: the
                       claim rolled back; applied() drops the cycle */
    int up_pending; /* ... and it came back meanwhile: probe once applied() ran */
    int hook_missing_logged;
    int has_feed;              /* the hook's schema has the feed (version 2) */
    int has_retry;             /* and requeue(..., since): requeued rows are appended
                                  again once their retry succeeds */
    int probed_now;            /* a probe just answered: claim without another */
    unsigned long gens_schema; /* generation_seq's OID at the last generations
                                  read of a model (0: none yet); another OID:
                                  the hook was installed again, its
                                  generations start over, once per
                                  process (oc_gens_follow) */
    char *feed_models;         /* array literals of feed_append, kept alive */
    char *feed_keys;
    char *feed_whole;
    char writer[96];  /* host:pid, for feed_head.writer */
    double pruned_at; /* monotonic time of the last feed_prune */
    /* The database went back in time? (oc_inval_db_rule) check_due: this
     * connection's identity is still to be read; check: the read of
     * memcached's marker in flight (NULL: none; oc_inval_free and on_down
     * leave it to its callback); bump_due: a rollback found, not bumped
     * yet (tried last at bump_tried, monotonic). marker_ours: this
     * connection's check found the marker naming its database, or wrote
     * it: only then may it move the marker's position (marker_refresh);
     * refresh_due: rows claimed since (every cycle with WAL), the marker
     * last written at refreshed_at (monotonic). recheck_due: the marker
     * (was) is at a position above this connection's: read the position
     * again before deciding (oc_inval_db_rule's LSN rule). check_tried:
     * the last identity read sent (monotonic): a check that failed (the
     * identity or the marker unread) is tried again at the next poll, not
     * at the next connection, which behind pgbouncer in transaction mode
     * may never come (found by a review); identity_failing and
     * marker_failing: said once per run of failures. bump_behind: the bump
     * due is for an earlier timeline (OC_INVAL_DB_BEHIND): the marker, a
     * later timeline's, is not written after it. A bump due survives a new
     * connection: the LSN rule's evidence does not (the copy's position
     * passes the marker's as it takes writes; found by a review).
     * checked_first: this connection's check found no marker, so compared
     * with nothing; a marker of an earlier timeline found by a later
     * refresh (the check's read failed over to another server, or the
     * marker's server came back) is a rollback, not an old writer. */
    int check_due;
    double check_tried;
    int identity_failing, marker_failing;
    struct db_check *check;
    int bump_due;
    int bump_behind;
    double bump_tried;
    int checked_first;
    int marker_ours;
    int recheck_due;
    char was[72];
    int refresh_due;
    double refreshed_at;
    char db_identity[48]; /* "<system id> <timeline>" of this connection */
    /* its server's start time (seconds since the epoch, as text), at the
     * check: behind pgbouncer in transaction mode the server may stop, start
     * or change while this connection stays (db_server_changed) */
    char db_started[40];
    uint64_t db_lsn; /* its flush LSN, at the check or the last refresh */
};

/* The server's start time, which any restart, failover or copy put back
 * changes: in the check and in each claim's generations read. */
#define OC_INVAL_STARTED "(extract(epoch FROM pg_postmaster_start_time()))::text"

static void cycle_start(oc_inval_t *iv);
static void marker_refresh(oc_inval_t *iv, const PGresult *gens);
static void rollback(oc_inval_t *iv, oc_inval_db_t rule, const char *marker, size_t len);
static void db_server_changed(oc_inval_t *iv, const PGresult *gens);

static void set_state(oc_inval_t *iv, oc_inval_state_t st)
{
    iv->state = st;
}

static void arm_poll(oc_inval_t *iv)
{
    uint32_t ms = iv->ctx->conf->inval_poll_ms;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(iv->poll, &tv);
}

static void cycle_clear(oc_inval_t *iv)
{
    PQclear(iv->claimed);
    iv->claimed = NULL;
    PQclear(iv->gens);
    iv->gens = NULL;
    free(iv->arena);
    iv->arena = NULL;
    oc_mc_job_free(iv->job);
    iv->job = NULL;
    free(iv->job_row);
    iv->job_row = NULL;
    free(iv->requeue_models);
    free(iv->requeue_keys);
    iv->requeue_models = iv->requeue_keys = NULL;
    free(iv->feed_models);
    free(iv->feed_keys);
    free(iv->feed_whole);
    iv->feed_models = iv->feed_keys = iv->feed_whole = NULL;
}

/* The cycle is over (committed, rolled back or failed): wait or go again. */
static void cycle_end(oc_inval_t *iv)
{
    cycle_clear(iv);
    set_state(iv, OC_INVAL_IDLE);
    if (iv->full || iv->again) {
        iv->again = 0;
        cycle_start(iv);
        return;
    }
    arm_poll(iv);
}

static void ended(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                  void *arg)
{
    (void)pc;
    oc_inval_t *iv = arg;
    PQclear(res);
    char clean[OC_ERRLEN];
    if (st != OC_OK)
        oc_log_warn("event=inval_commit_failed reason=\"%s\"",
                    oc_log_clean(clean, sizeof(clean), err));
    cycle_end(iv);
}

static void finish(oc_inval_t *iv, const char *sql)
{
    set_state(iv, OC_INVAL_ENDING);
    if (oc_pgconn_query(iv->pc, sql, 0, NULL, ended, iv) != OC_OK)
        cycle_end(iv); /* the connection dropped: PostgreSQL rolls back */
}

/* A failure mid-cycle: roll back so the claimed rows go back to the outbox. */
static void fail_cycle(oc_inval_t *iv, const char *what, const char *err)
{
    char clean[OC_ERRLEN];
    iv->ctx->stats->inval_errors++;
    iv->full = 0;
    oc_log_warn("event=inval_failed step=%s reason=\"%s\"", what,
                oc_log_clean(clean, sizeof(clean), err));
    finish(iv, "ROLLBACK");
}

/* ---- the feed ------------------------------------------------------------------------
 *
 * In the claim's transaction, after the deletes: what was applied (keys and
 * whole-model rows of claimed rows that were not requeued) goes to the feed,
 * which every sidecar's follower reads, with feed_heartbeat_if_drained in
 * the same statement: the feed's caught_up_at moves to the first row still
 * waiting (sql/install.sql, _feed_bound). A claim that came back empty says
 * the outbox is drained as of this statement: caught_up_at moves to its
 * start, and once a minute old rows are pruned. */

#define OC_INVAL_PRUNE_EVERY_S 60.0

static void fed(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                void *arg)
{
    (void)pc;
    oc_inval_t *iv = arg;
    PQclear(res);
    if (st != OC_OK) {
        fail_cycle(iv, "feed", err);
        return;
    }
    finish(iv, "COMMIT");
}

oc_inval_feed_row_t oc_inval_feed_row(size_t mlen, const char *key, size_t klen,
                                      int requeued_again, size_t max_key_len)
{
    if (requeued_again || mlen > OC_MODEL_NAME_MAX)
        return OC_INVAL_FEED_SKIP; /* requeued again: appended once it works */
    if (key == NULL)
        return OC_INVAL_FEED_WHOLE;
    return oc_key_id_cacheable(key, klen, max_key_len) ? OC_INVAL_FEED_KEY
                                                       : OC_INVAL_FEED_SKIP;
}

/* Per claimed row: was it requeued before and did its retried delete fail
 * again? Such a row is requeued once more (requeue()) and stays out of the
 * feed until a retry succeeds. A requeued row whose retry succeeded is
 * appended again: a sidecar may have refilled its near-cache from
 * memcached's old value since the first append. Without requeue(...,
 * since) (an older hook), requeued rows were appended when first applied
 * only. NULL: out of memory. */
static char *requeued_again(const oc_inval_t *iv, int rows)
{
    char *again = calloc((size_t)(rows ? rows : 1), 1);
    if (again == NULL)
        return NULL;
    for (int i = 0; i < rows; i++)
        again[i] = !iv->has_retry && PQgetvalue(iv->claimed, i, 4)[0] == 't';
    for (size_t k = 0; iv->has_retry && iv->job && k < iv->job->n; k++) {
        int i = iv->job_row[k];
        again[i] = PQgetvalue(iv->claimed, i, 4)[0] == 't' &&
                   iv->job->items[k].result == OC_MC_R_ERROR;
    }
    return again;
}

/* The feed_append arrays of the claimed rows; returns 0 if nothing to append. */
static int feed_arrays(oc_inval_t *iv)
{
    PGresult *res = iv->claimed;
    int rows = PQntuples(res);
    char *again = requeued_again(iv, rows);
    const char **m = malloc((size_t)(rows ? rows : 1) * sizeof(*m));
    const char **k = malloc((size_t)(rows ? rows : 1) * sizeof(*k));
    const char **w = malloc((size_t)(rows ? rows : 1) * sizeof(*w));
    size_t *ml = malloc((size_t)(rows ? rows : 1) * sizeof(*ml));
    size_t *kl = malloc((size_t)(rows ? rows : 1) * sizeof(*kl));
    size_t *wl = malloc((size_t)(rows ? rows : 1) * sizeof(*wl));
    size_t nk = 0, nw = 0;
    for (int i = 0; again && m && k && w && ml && kl && wl && i < rows; i++) {
        oc_inval_feed_row_t kind = oc_inval_feed_row(
            (size_t)PQgetlength(res, i, 0),
            PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1),
            (size_t)PQgetlength(res, i, 1), again[i], iv->ctx->max_key_len);
        if (kind == OC_INVAL_FEED_WHOLE) {
            w[nw] = PQgetvalue(res, i, 0);
            wl[nw++] = (size_t)PQgetlength(res, i, 0);
        } else if (kind == OC_INVAL_FEED_KEY) {
            m[nk] = PQgetvalue(res, i, 0);
            ml[nk] = (size_t)PQgetlength(res, i, 0);
            k[nk] = PQgetvalue(res, i, 1);
            kl[nk++] = (size_t)PQgetlength(res, i, 1);
        }
    }
    int oom = !(again && m && k && w && ml && kl && wl);
    int any = nk + nw > 0;
    if (any && !oom) {
        iv->feed_models = oc_sql_array(m, ml, nk);
        iv->feed_keys = oc_sql_array(k, kl, nk);
        iv->feed_whole = oc_sql_array(w, wl, nw);
    }
    free(again), free(m), free(k), free(w), free(ml), free(kl), free(wl);
    return any || oom; /* out of memory: no arrays, and the caller says so */
}

static void feed(oc_inval_t *iv)
{
    int rows = PQntuples(iv->claimed);
    if (!iv->has_feed) {
        finish(iv, "COMMIT");
        return;
    }
    set_state(iv, OC_INVAL_FEEDING);
    oc_status_t st;
    if (rows == 0) {
        double now = oc_stats_now();
        int prune = now - iv->pruned_at >= OC_INVAL_PRUNE_EVERY_S;
        char keep[32];
        snprintf(keep, sizeof(keep), "%u seconds", iv->ctx->conf->feed_keep_s);
        const char *params[3] = {iv->writer, prune ? "t" : "f", keep};
        if (prune)
            iv->pruned_at = now;
        st = oc_pgconn_exec(iv->pc,
                            "SELECT objcached.feed_heartbeat_if_drained($1), CASE WHEN "
                            "$2::boolean THEN objcached.feed_prune($3::interval) END",
                            3, params, fed, iv);
    } else if (!feed_arrays(iv)) {
        finish(iv, "COMMIT"); /* everything was requeued (or never cacheable) */
        return;
    } else if (iv->feed_models == NULL || iv->feed_keys == NULL ||
               iv->feed_whole == NULL) {
        fail_cycle(iv, "feed", "out of memory");
        return;
    } else {
        const char *params[5] = {
            iv->feed_models, iv->feed_keys, iv->feed_whole,
            PQgetisnull(iv->claimed, 0, 5) ? NULL : PQgetvalue(iv->claimed, 0, 5),
            iv->writer};
        /* and a heartbeat in the same transaction: under steady writes the
         * outbox rarely drains, and with rows still waiting it proves the
         * feed complete up to the first one's created_at, so the
         * near-caches stay fresh */
        st = oc_pgconn_exec(iv->pc,
                            "SELECT objcached.feed_append($1::text[], $2::text[], "
                            "$3::text[], false, $4::timestamptz, NULL, $5), "
                            "objcached.feed_heartbeat_if_drained($5)",
                            5, params, fed, iv);
    }
    if (st != OC_OK)
        cycle_end(iv); /* the connection dropped: PostgreSQL rolls back */
}

/* ---- requeue what memcached could not delete ---------------------------------- */

static void feed(oc_inval_t *iv);

static void requeued(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                     void *arg)
{
    (void)pc;
    oc_inval_t *iv = arg;
    PQclear(res);
    if (st != OC_OK) {
        fail_cycle(iv, "requeue", err);
        return;
    }
    feed(iv);
}

const char *oc_inval_key_id(const char *ckey, size_t klen, size_t prefix_len,
                            size_t *idlen)
{
    if (prefix_len >= klen)
        return NULL;
    const char *colon = memchr(ckey + prefix_len, ':', klen - prefix_len);
    if (colon == NULL)
        return NULL;
    *idlen = klen - (size_t)(colon + 1 - ckey);
    return colon + 1;
}

static void requeue(oc_inval_t *iv, size_t nfailed)
{
    oc_ctx_t *ctx = iv->ctx;
    const char **models = malloc(nfailed * sizeof(*models));
    const char **keys = malloc(nfailed * sizeof(*keys));
    size_t *mlens = malloc(nfailed * sizeof(*mlens));
    size_t *klens = malloc(nfailed * sizeof(*klens));
    size_t k = 0;
    long long since = 0;
    const char *since_text = NULL;
    for (size_t i = 0; models && keys && mlens && klens && i < iv->job->n; i++) {
        const oc_mc_item_t *it = &iv->job->items[i];
        if (it->result != OC_MC_R_ERROR)
            continue;
        int row = iv->job_row[i];
        const char *name = PQgetvalue(iv->claimed, row, 0);
        /* A key whose server is emptied before it is read again (failover's
         * flush_all) cannot be refilled old: it holds nothing back. */
        if (iv->has_retry && !PQgetisnull(iv->claimed, row, 6) &&
            !oc_mc_emptied_before_read(ctx->mc, it)) {
            long long t = strtoll(PQgetvalue(iv->claimed, row, 6), NULL, 10);
            if (since_text == NULL || t < since)
                since = t, since_text = PQgetvalue(iv->claimed, row, 6);
        }
        const char *id = oc_inval_key_id(it->key, it->klen, iv->prefix_len, &klens[k]);
        if (id == NULL)
            continue; /* cannot be: apply() made the key (k falls short) */
        models[k] = name;
        mlens[k] = strlen(name);
        keys[k] = id;
        k++;
    }
    if (k == nfailed) {
        iv->requeue_models = oc_sql_array(models, mlens, k);
        iv->requeue_keys = oc_sql_array(keys, klens, k);
    }
    free(models), free(keys), free(mlens), free(klens);
    if (iv->requeue_models == NULL || iv->requeue_keys == NULL) {
        fail_cycle(iv, "requeue", "out of memory");
        return;
    }
    /* since: the oldest write among them (their rows' created_at, as
     * claimed: microseconds since the epoch), which their requeued rows
     * keep and hold the feed back to (a whole number of microseconds is
     * exact as a double); NULL when none needs that */
    const char *params[3] = {iv->requeue_models, iv->requeue_keys, since_text};
    set_state(iv, OC_INVAL_REQUEUEING);
    oc_status_t st =
        iv->has_retry
            ? oc_pgconn_query(iv->pc,
                              "SELECT objcached.requeue($1::text[], $2::text[], "
                              "to_timestamp(0) + $3::bigint * interval '1 microsecond')",
                              3, params, requeued, iv)
            : oc_pgconn_query(iv->pc, "SELECT objcached.requeue($1::text[], $2::text[])",
                              2, params, requeued, iv);
    if (st != OC_OK)
        cycle_end(iv);
}

/* ---- apply ------------------------------------------------------------------------ */

static void on_up(oc_pgconn_t *pc, void *owner);

static void applied(oc_mc_job_t *job, void *arg)
{
    oc_inval_t *iv = arg;
    oc_ctx_t *ctx = iv->ctx;
    if (iv->dying) { /* its connection is closed: the claim rolled back */
        oc_mc_job_free(job);
        cycle_clear(iv);
        free(iv);
        return;
    }
    if (iv->orphaned) {
        /* Its connection dropped meanwhile: the claim rolled back, the rows
         * are in the outbox again for the next claim, and this cycle's
         * requeue or feed append has no transaction to go in. A new
         * session waited for this (else its claim would take the same rows
         * while these deletes were out, and this callback would act on it). */
        oc_mc_job_free(job);
        cycle_clear(iv);
        iv->orphaned = 0;
        set_state(iv, OC_INVAL_IDLE);
        if (iv->up_pending) {
            iv->up_pending = 0;
            on_up(iv->pc, iv);
        }
        return;
    }
    iv->job = job;
    size_t failed = 0;
    for (size_t i = 0; i < job->n; i++)
        failed += (job->items[i].result == OC_MC_R_ERROR);
    ctx->stats->invalidations += job->n - failed;
    if (failed) {
        /* Nothing applied (a server down fails at once): claim again at the
         * next poll, not in a loop against PostgreSQL. */
        if (failed == job->n)
            iv->full = 0;
        ctx->stats->inval_requeued += failed;
        ctx->stats->mc_errors++;
        oc_log_warn("event=inval_requeue keys=%zu reason=\"%s\"", failed, job->err);
        requeue(iv, failed);
        return;
    }
    feed(iv);
}

/* The claimed rows: one per key (model, key), key NULL for a TRUNCATE. */
/* The generation of model `name` (from the models table, read after the
 * claim); 0 and *known = 0 if the model is not attached any more. */
static uint64_t gen_of(const oc_inval_t *iv, const char *name, int *known)
{
    for (int i = 0; i < PQntuples(iv->gens); i++)
        if (strcmp(PQgetvalue(iv->gens, i, 0), name) == 0) {
            *known = 1;
            return strtoull(PQgetvalue(iv->gens, i, 1), NULL, 10);
        }
    *known = 0;
    return 0;
}

int oc_inval_row_deletes(size_t mlen, const char *key, size_t klen, int model_known,
                         size_t max_key_len)
{
    if (key == NULL) /* a TRUNCATE: done by the generation */
        return 0;
    if (mlen > OC_MODEL_NAME_MAX)
        return 0;
    /* An id no client could ask for was never cached, and must never reach
     * a memcached command line (spaces, CR/LF would inject commands). */
    return model_known && oc_key_id_cacheable(key, klen, max_key_len);
}

/* A claimed row this consumer turns into a memcached delete. */
static int row_applies(const oc_inval_t *iv, PGresult *res, int i)
{
    int known = 0;
    if (PQgetisnull(res, i, 1))
        return 0;
    if (PQgetlength(res, i, 0) <= OC_MODEL_NAME_MAX)
        (void)gen_of(iv, PQgetvalue(res, i, 0), &known);
    return oc_inval_row_deletes((size_t)PQgetlength(res, i, 0), PQgetvalue(res, i, 1),
                                (size_t)PQgetlength(res, i, 1), known,
                                iv->ctx->max_key_len);
}

/* A key applied here, for the consistency sampler. */
static void offer_sample(oc_ctx_t *ctx, const char *model, const char *id, size_t len)
{
    const oc_model_conf_t *m = oc_conf_model(ctx->conf, model, strlen(model));
    if (m)
        oc_sampler_offer_inval(ctx->sampler, (size_t)(m - ctx->conf->models), id, len);
}

/* The claimed rows: one per key (model, key), key NULL for a TRUNCATE. */
static void apply(oc_inval_t *iv)
{
    oc_ctx_t *ctx = iv->ctx;
    PGresult *res = iv->claimed;
    int rows = PQntuples(res);
    /* Claim again at once until a claim comes back empty: a claim is also
     * cut short by claim's key budget, and one NOTIFY may stand for many
     * rows. */
    iv->full = rows > 0;
    size_t n = 0, bytes = 0, pl = strlen(ctx->conf->key_prefix);
    for (int i = 0; i < rows; i++) {
        int ok = row_applies(iv, res, i);
        n += ok;
        if (ok)
            bytes += oc_key_cache_key_room(pl, (size_t)PQgetlength(res, i, 0),
                                           (size_t)PQgetlength(res, i, 1));
        ctx->stats->inval_skipped += !ok && !PQgetisnull(res, i, 1);
    }
    /* An empty claim is no lag: the gauge would otherwise keep the age of
     * a burst's oldest row on an idle sidecar, and its alert keep firing.
     * (A claim that fails leaves it frozen: operations.md's caveat.) */
    if (rows == 0)
        ctx->stats->inval_lag_ms = 0;
    else if (!PQgetisnull(res, 0, 3))
        ctx->stats->inval_lag_ms = (uint64_t)atoll(PQgetvalue(res, 0, 3));
    if (n == 0) {
        feed(iv); /* whole-model rows, skipped keys, or an empty claim */
        return;
    }
    iv->job = oc_mc_job_new_items(OC_MC_DELETE, n, applied, iv);
    iv->arena = malloc(bytes);
    iv->job_row = malloc(n * sizeof(*iv->job_row));
    if (iv->job == NULL || iv->arena == NULL || iv->job_row == NULL) {
        fail_cycle(iv, "apply", "out of memory");
        return;
    }
    size_t k = 0;
    iv->prefix_len = pl;
    char *ck = iv->arena;
    for (int i = 0; i < rows; i++) {
        if (!row_applies(iv, res, i))
            continue;
        const char *model = PQgetvalue(res, i, 0);
        int known;
        size_t canon_off, room = oc_key_cache_key_room(pl, (size_t)PQgetlength(res, i, 0),
                                                       (size_t)PQgetlength(res, i, 1));
        oc_mc_item_t *it = &iv->job->items[k];
        it->key = ck;
        it->klen = oc_key_cache_key(ctx->conf->key_prefix, model,
                                    gen_of(iv, model, &known), PQgetvalue(res, i, 1),
                                    (size_t)PQgetlength(res, i, 1), ck, room, &canon_off);
        ck += room;
        iv->job_row[k++] = i;
        oc_fill_invalidate(ctx->fills, it->key, it->klen);
        oc_near_invalidate(ctx->near, it->key, it->klen);
        if (ctx->feed == NULL) /* else the feed offers every key, ours too */
            offer_sample(ctx, model, it->key + canon_off, it->klen - canon_off);
    }
    oc_mc_job_t *job = iv->job;
    iv->job = NULL; /* oc_mc's until applied() */
    set_state(iv, OC_INVAL_APPLYING);
    oc_mc_submit(ctx->mc, job);
}

static void gens_read(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                      void *arg);

/* Does the hook have the feed (version 2), and requeue(..., since)? */
#define OC_INVAL_HAS_FEED                                                                \
    "to_regprocedure('objcached.feed_append(text[], text[], text[], boolean, "           \
    "timestamptz, timestamptz, text)') IS NOT NULL"
#define OC_INVAL_HAS_RETRY                                                               \
    "to_regprocedure('objcached.requeue(text[], text[], timestamptz)') IS NOT NULL"

/* Was the hook upgraded between the probe and the claim (install.sql
 * committed in between)? Under an older hook the claim's statement also
 * reads the schema, after its rows are taken (its last column): an upgrade
 * alters the outbox, so it cannot commit while the claim's transaction
 * holds its rows, and one that committed before is seen. Claiming with
 * the probe's answer alone applied the newer hook's rows without a feed
 * append (found by a review). */
static int schema_moved(const oc_inval_t *iv, const PGresult *res)
{
    if (iv->has_retry || PQntuples(res) == 0)
        return 0;
    return atoi(PQgetvalue(res, 0, 7)) != iv->has_feed + iv->has_retry;
}

static void claimed(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                    void *arg)
{
    oc_inval_t *iv = arg;
    if (st != OC_OK && oc_pgconn_sqlstate(pc)[0] == '\0') {
        /* The session ended under the claim (pgbouncer's query_timeout or
         * KILL, a restart): it rolled back; the next session claims again.
         * Not the hook missing, which the hint below would say. */
        fail_cycle(iv, "claim", err);
        return;
    }
    if (st != OC_OK) {
        /* Most likely the hook is not installed: say so once, keep polling.
         * Counted once too, until a claim succeeds: a sidecar without the
         * hook (pushes only) must not show an error a second. */
        if (!iv->hook_missing_logged++) {
            char clean[OC_ERRLEN];
            oc_log_warn("event=inval_unavailable reason=\"%s\" hint=\"install the hook: "
                        "objcached --install-hook or psql -f sql/install.sql\"",
                        oc_log_clean(clean, sizeof(clean), err));
            iv->ctx->stats->inval_errors++;
        }
        iv->full = 0;
        finish(iv, "ROLLBACK");
        return;
    }
    if (iv->hook_missing_logged) {
        oc_log_info("event=inval_available");
        iv->hook_missing_logged = 0;
    }
    if (schema_moved(iv, res)) {
        /* Roll the claim back (the rows go back to the outbox), probe and
         * claim again with the newer schema's columns. */
        oc_log_info("event=inval_hook_upgraded");
        PQclear(res);
        iv->again = 1;
        finish(iv, "ROLLBACK");
        return;
    }
    iv->claimed = res;
    /* The generations, read in the claim's transaction: a TRUNCATE bumps
     * its model's generation in the transaction that wrote its outbox row,
     * so what we read now is at least as new as every row we claimed. */
    set_state(iv, OC_INVAL_GENS);
    if (oc_pgconn_query(iv->pc,
                        "SELECT model, generation, "
                        "to_regclass('objcached.generation_seq')::oid, "
                        "(pg_current_wal_flush_lsn() - '0/0')::text, " OC_INVAL_STARTED
                        " FROM objcached.models",
                        0, NULL, gens_read, iv) != OC_OK)
        cycle_end(iv);
}

/* ---- claim, then generations ------------------------------------------------------- */

/* The claim's transaction names its modes: behind pgbouncer in transaction
 * mode the server session may carry another client's
 * default_transaction_read_only or _isolation = serializable, under which
 * the claim could not write (objcached.claim refuses SERIALIZABLE). In
 * session mode the session's own settings say the same. */
#define OC_INVAL_BEGIN "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE"

static void claim(oc_inval_t *iv)
{
    char sql[1024];
    /* Every row, whatever its model: any consumer can apply any model's
     * invalidations (a cache key needs only key_prefix, which every sidecar
     * of a pool shares, the model's name and its generation), so a sidecar
     * that does not serve a model still cleans it for the ones that do.
     * One row per key; a TRUNCATE's NULL keys give one row with key NULL;
     * the fourth column is the age of the oldest row claimed (lag). */
    /* With the feed (schema version 2): whether the row was requeued (in
     * the feed already: appended again once its retry works), the newest
     * row's time, for the
     * feed's commit-to-applied latency, and the row's created_at
     * (microseconds since the epoch), which a failed delete's requeue
     * keeps. Under an older hook, last, its schema as the claim saw it
     * (schema_moved). */
    snprintf(sql, sizeof(sql),
             OC_INVAL_BEGIN
             "; WITH c AS (SELECT * FROM objcached.claim(%u)) "
             "SELECT c.model, k, (SELECT count(*) FROM c), "
             "(SELECT (extract(epoch FROM clock_timestamp() - min(created_at)) * "
             "1000)::bigint FROM c), %s%s "
             "FROM c LEFT JOIN LATERAL unnest(c.keys) AS k ON true",
             iv->ctx->conf->inval_batch,
             iv->has_feed ? "c.requeued, (SELECT max(x.created_at) FROM c x WHERE NOT "
                            "x.requeued)::text, "
                            "(extract(epoch FROM c.created_at) * 1000000)::bigint::text"
                          : "false, NULL::text, NULL::text",
             iv->has_retry ? ""
                           : ", (" OC_INVAL_HAS_FEED ")::int * (1 + (" OC_INVAL_HAS_RETRY
                             ")::int)");
    set_state(iv, OC_INVAL_CLAIMING);
    if (oc_pgconn_query(iv->pc, sql, 0, NULL, claimed, iv) != OC_OK) {
        iv->full = 0;
        set_state(iv, OC_INVAL_IDLE); /* not connected: up() starts a cycle */
    }
}

static void gens_read(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                      void *arg)
{
    (void)pc;
    oc_inval_t *iv = arg;
    oc_ctx_t *ctx = iv->ctx;
    if (st != OC_OK) {
        fail_cycle(iv, "generations", err);
        return;
    }
    /* uninstall.sql and install.sql again: a new generation_seq, whose
     * generations may be below the ones we use (an install.sql from before
     * 2026-12-05 starts them over from 1), which nothing deletes under any
     * more (found by a review). Every model starts over from 0,
     * once for the process (the feed follower may have done it, then
     * applied a TRUNCATE this read predates), so that this read and the
     * later ones move it forward again, a model attached again later too.
     * This read's generations still name the keys of its deletes (gen_of). */
    unsigned long schema =
        PQntuples(res) ? strtoul(PQgetvalue(res, 0, 2), NULL, 10) : iv->gens_schema;
    int follow = oc_gens_follow(ctx, &iv->gens_schema, schema, NULL);
    for (int i = 0; follow && i < PQntuples(res); i++) {
        const oc_model_conf_t *m = oc_conf_model(ctx->conf, PQgetvalue(res, i, 0),
                                                 (size_t)PQgetlength(res, i, 0));
        uint64_t gen = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        /* Only forward, as the feed and its resync switch: this snapshot
         * may predate a TRUNCATE whose feed row this sidecar applied while
         * the answer was on its way, and the older generation's keys still
         * hold the rows it removed. */
        if (m && gen > ctx->model_gen[m - ctx->conf->models]) {
            oc_log_info("event=model_generation model=%s generation=%" PRIu64, m->name,
                        gen);
            ctx->model_gen[m - ctx->conf->models] = gen;
        }
    }
    if (follow)
        oc_gens_read(ctx->gens, "consumer");
    iv->gens = res;
    db_server_changed(iv, res);
    marker_refresh(iv, res); /* (after a change: only notes the claim) */
    apply(iv);
}

/* ---- the database went back in time? ------------------------------------------ */

/* Memcached's marker: the identity of the database whose rows the pool may
 * hold, "<system id> <timeline> <flush LSN>". No model key has it (model
 * names have no '.', and every cache key has a ':' after its model). */
#define DB_MARKER "objcached.db"

/* A read or a write of the marker in flight; the job's done frees it. */
typedef struct db_check {
    oc_inval_t *iv; /* the read's consumer while it is iv->check; else NULL */
    char key[OC_INVAL_MARKER_KEY];
    char val[72];
    uint64_t lsn; /* a refresh's read: the position to write */
} db_check_t;

/* Seconds between two moves of the marker's position by one consumer: one
 * memcached set a second at most, per consumer that claims rows. */
#define OC_INVAL_REFRESH_S 1.0

/* FNV-1a, unseeded: every sidecar must name the same marker (oc_hash is
 * seeded per process). */
static uint64_t name_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

void oc_inval_marker_key(const oc_conf_t *conf, char *buf, size_t cap)
{
    /* A sum: the same set of models in any order of the config names one
     * marker. */
    uint64_t sum = 0;
    for (size_t i = 0; i < conf->nmodels; i++)
        sum += name_hash(conf->models[i].name);
    snprintf(buf, cap, "%.64s" DB_MARKER ".%016" PRIx64, conf->key_prefix, sum);
}

/* "<system id> <timeline>[ <LSN>]" into v: a marker of two numbers
 * (written before 2026-12-06) has position 0, which no check is below. */
static int parse_identity(const char *s, size_t len, uint64_t v[3])
{
    char buf[72], *p = buf, *end;
    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    v[2] = 0;
    for (int i = 0; i < 3; i++) {
        if (*p < '0' || *p > '9')
            return 0;
        errno = 0;
        v[i] = strtoull(p, &end, 10);
        if (errno != 0)
            return 0;
        if (*end == '\0')
            return i >= 1;
        if (*end != ' ')
            return 0;
        p = end + 1;
    }
    return 0; /* a fourth number */
}

oc_inval_db_t oc_inval_db_rule(int found, const char *marker, size_t len,
                               const char *identity)
{
    uint64_t m[3], now[3];
    if (!parse_identity(identity, strlen(identity), now))
        return OC_INVAL_DB_SAME; /* cannot happen (the server's own numbers) */
    if (!found || !parse_identity(marker, len, m))
        return OC_INVAL_DB_FIRST;
    if (m[0] != now[0])
        return OC_INVAL_DB_CLUSTER;
    if (now[1] != m[1])
        return now[1] > m[1] ? OC_INVAL_DB_TIMELINE : OC_INVAL_DB_BEHIND;
    /* A flushed position survives a crash: a restart is never below it. */
    return now[2] < m[2] ? OC_INVAL_DB_LSN : OC_INVAL_DB_SAME;
}

/* This connection's identity with its position, as the marker has it. */
static const char *identity(const oc_inval_t *iv, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s %" PRIu64, iv->db_identity, iv->db_lsn);
    return buf;
}

/* The check found the marker naming this database at or below its
 * position: this consumer may move it from now on, starting from the
 * marker's position, not the one the check read. The commits between the
 * two (claimed after the check) are cached once claimed: with db_lsn at the
 * check's position, a database quiet after them never moved the marker
 * past them (found by a review). */
static void marker_same(oc_inval_t *iv, const char *marker, size_t len)
{
    uint64_t m[3];
    iv->marker_ours = 1;
    if (parse_identity(marker, len, m) && m[2] < iv->db_lsn)
        iv->db_lsn = m[2];
}

/* The marker's read in flight, if any, is of no use any more. */
static void check_forget(oc_inval_t *iv)
{
    if (iv->check)
        iv->check->iv = NULL;
    iv->check = NULL;
}

/* The database's identity is to be read again before the next claim, and
 * its check decides again; until then this consumer does not move the
 * marker. A bump due stays due: bumping again is safe, and the evidence of
 * the LSN rule is gone once the copy's position passes the marker's. */
static void check_again(oc_inval_t *iv)
{
    check_forget(iv);
    iv->check_due = 1;
    iv->check_tried = 0;
    iv->checked_first = 0;
    iv->marker_ours = 0;
    iv->recheck_due = 0;
    iv->db_identity[0] = '\0';
    iv->db_started[0] = '\0';
}

/* The server this claim ran on started at another time than the one the
 * check identified (gens' fifth column): pgbouncer in transaction mode
 * keeps our connection while the server behind it restarts, fails over or
 * is replaced by a copy (PAUSE, the switch, RESUME), so on_up never runs.
 * The marker is not moved for the old identity, and the check runs again
 * before the next claim (found by a review: a copy put back behind
 * pgbouncer was never seen). Without a check done (none yet, or its
 * identity read failed) there is nothing to compare. */
static void db_server_changed(oc_inval_t *iv, const PGresult *gens)
{
    if (!iv->db_started[0] || PQntuples(gens) == 0 || PQnfields(gens) < 5 ||
        strcmp(PQgetvalue(gens, 0, 4), iv->db_started) == 0)
        return;
    oc_log_info("event=db_server_changed note=\"the server's start time changed while "
                "this connection stayed (a pooler in transaction mode): its identity is "
                "checked again\"");
    check_again(iv);
}

static void marker_written(oc_mc_job_t *job, void *arg)
{
    db_check_t *c = arg;
    if (job->errors)
        oc_log_warn("event=db_marker_failed key=%s reason=\"%s\"", c->key, job->err);
    oc_mc_job_free(job);
    free(c);
}

/* Remembers in memcached that the pool may hold this database's rows (the
 * marker never expires; a write that fails is tried at the next check). */
static void marker_write(oc_inval_t *iv)
{
    db_check_t *c = calloc(1, sizeof(*c));
    oc_mc_job_t *job = c ? oc_mc_job_new_items(OC_MC_SET, 1, marker_written, c) : NULL;
    if (job == NULL) {
        free(c);
        return;
    }
    oc_inval_marker_key(iv->ctx->conf, c->key, sizeof(c->key));
    identity(iv, c->val, sizeof(c->val));
    iv->refreshed_at = oc_stats_now();
    job->items[0] = (oc_mc_item_t){
        .key = c->key, .klen = strlen(c->key), .val = c->val, .vlen = strlen(c->val)};
    oc_mc_submit(iv->ctx->mc, job);
}

/* The database's identity may be read now: due (a new connection, or the
 * last check could not tell), and not tried within invalidation_poll (a
 * check that keeps failing must neither spin nor hold the claims back). No
 * feed_append (an older hook): no check, since no bump could follow. */
static int check_now(const oc_inval_t *iv)
{
    return iv->check_due && iv->has_feed &&
           oc_stats_now() - iv->check_tried >= iv->ctx->conf->inval_poll_ms / 1000.0;
}

/* A bump may be sent now: due, and not tried within invalidation_poll (a
 * bump that keeps failing must neither spin nor hold the claims back). */
static int bump_now(const oc_inval_t *iv)
{
    return iv->bump_due &&
           oc_stats_now() - iv->bump_tried >= iv->ctx->conf->inval_poll_ms / 1000.0;
}

static void bumped(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                   void *arg)
{
    oc_inval_t *iv = arg;
    char clean[OC_ERRLEN];
    PQclear(res);
    set_state(iv, OC_INVAL_IDLE);
    if (st != OC_OK) { /* the marker stays: tried again (bump_now) */
        oc_log_warn("event=db_check_failed step=bump sqlstate=%s reason=\"%s\" "
                    "note=\"memcached may hold rows of lost commits until the bump "
                    "works: the role needs EXECUTE on objcached.feed_append\"",
                    oc_pgconn_sqlstate(pc) ? oc_pgconn_sqlstate(pc) : "",
                    oc_log_clean(clean, sizeof(clean), err));
    } else {
        /* every feed (this sidecar's too) reads the whole-model rows: new
         * generations, near-caches emptied. After an earlier timeline's
         * bump the marker stays the later one's: written over, the later
         * timeline's consumers would take it for a rollback of theirs. */
        iv->bump_due = 0;
        if (!iv->bump_behind) {
            iv->marker_ours = 1;
            marker_write(iv);
        }
        iv->bump_behind = 0;
    }
    cycle_start(iv);
}

static void bump(oc_inval_t *iv)
{
    const char *p[1] = {iv->writer};
    iv->bump_tried = oc_stats_now();
    set_state(iv, OC_INVAL_BUMPING);
    if (oc_pgconn_query(
            iv->pc,
            "SELECT objcached.feed_append(NULL, NULL, (SELECT array_agg(model) "
            "FROM objcached.models), true, NULL, NULL, 'rollback ' || $1)",
            1, p, bumped, iv) != OC_OK)
        set_state(iv, OC_INVAL_IDLE); /* not connected: up() checks again */
}

/* A refresh's read of the marker answered: the position is written only
 * while the marker still names this cluster and timeline (or is gone). A
 * later timeline or another cluster wrote it since this consumer's check:
 * this is an old primary left up after a failover (a split brain), whose
 * writes made every consumer of the new primary bump every model again at
 * each connection (found by a review); it stops moving the marker until
 * its next check. A position above this one (another consumer's) is left
 * as it is: no race of two writers moves it back by more than a read's
 * round trip. */
static void refresh_answer(oc_mc_job_t *job, void *arg)
{
    db_check_t *c = arg;
    oc_inval_t *iv = c->iv; /* NULL: freed, or its connection ended */
    const oc_mc_hit_t *h = &job->hits[0];
    char now[72], was[72];
    if (iv != NULL)
        iv->check = NULL;
    if (iv != NULL && h->error) {
        oc_log_warn("event=db_marker_failed key=%s reason=\"%s\"", c->key, job->err);
    } else if (iv != NULL) {
        uint64_t checked = iv->db_lsn;
        iv->db_lsn = c->lsn;
        oc_inval_db_t rule =
            oc_inval_db_rule(h->found, h->data, h->len, identity(iv, now, sizeof(now)));
        if (rule == OC_INVAL_DB_TIMELINE && iv->checked_first) {
            /* our check found no marker: this earlier timeline's was never
             * compared (the check's read failed over, or its server came
             * back), and the pool may hold its lost commits */
            iv->checked_first = 0;
            iv->marker_ours = 0;
            rollback(iv, rule, h->data, h->len);
            oc_mc_job_free(job);
            free(c);
            return;
        }
        switch (rule) {
        case OC_INVAL_DB_FIRST:
        case OC_INVAL_DB_SAME:
        case OC_INVAL_DB_TIMELINE: /* an older one's writer: ours is newer */
            marker_write(iv);
            break;
        case OC_INVAL_DB_LSN:
            break; /* moved past this position by another consumer */
        case OC_INVAL_DB_BEHIND:
        case OC_INVAL_DB_CLUSTER:
            iv->db_lsn = checked;
            iv->marker_ours = 0;
            /* the marker parsed: digits and spaces, under sizeof(was) */
            snprintf(was, sizeof(was), "%.*s", (int)h->len, h->data);
            oc_log_warn("event=db_behind now=\"%s\" marker=\"%s\" note=\"the marker "
                        "names a later timeline or another cluster since this consumer's "
                        "check: an old primary still up after a failover? It no longer "
                        "moves the marker\"",
                        identity(iv, now, sizeof(now)), was);
            break;
        }
    }
    oc_mc_job_free(job);
    free(c);
}

/* Reads the marker before moving its position to lsn (refresh_answer); the
 * consumer goes on meanwhile. */
static void refresh_read(oc_inval_t *iv, uint64_t lsn)
{
    db_check_t *c = calloc(1, sizeof(*c));
    oc_mc_job_t *job = c ? oc_mc_job_new_get(1, refresh_answer, c) : NULL;
    if (job == NULL) {
        free(c);
        return;
    }
    c->iv = iv;
    c->lsn = lsn;
    oc_inval_marker_key(iv->ctx->conf, c->key, sizeof(c->key));
    job->keys[0] = c->key;
    job->key_lens[0] = strlen(c->key);
    iv->check = c;
    iv->refreshed_at = oc_stats_now();
    oc_mc_submit(iv->ctx->mc, job);
}

/* After each claim's generations read (gens: its fourth column is the
 * flush LSN): the marker's position moves forward, so that a copy of the data
 * directory put back later is found below it (OC_INVAL_DB_LSN). Only a
 * consumer that claimed rows (every cycle of the WAL holder's, whose
 * models' commits leave no outbox rows), at most once per
 * OC_INVAL_REFRESH_S, and once more at the first cycle after that (an
 * asynchronous commit is visible before it is flushed: the claim's read
 * may be below it): the commits whose rows a sidecar may cache are the ones
 * whose outbox rows some consumer claims, so an idle fleet writes nothing,
 * and hundreds of consumers read and write it at most once a second each
 * (a get, then a set: refresh_answer). Two writers may race between the
 * read and the write: the marker may then go back a little, which can only
 * hide a rollback of the last second, never make one up. Only while this
 * connection's check found the marker naming its database (and its reads
 * still do): an old primary left on an earlier timeline, or a consumer
 * whose check has not answered, writes nothing. */
static void marker_refresh(oc_inval_t *iv, const PGresult *gens)
{
    int claimed = PQntuples(iv->claimed) > 0 || iv->ctx->conf->wal;
    if (claimed)
        iv->refresh_due = 1;
    if (!iv->refresh_due || !iv->marker_ours || PQntuples(gens) == 0 ||
        PQnfields(gens) < 4 || PQgetisnull(gens, 0, 3) ||
        oc_stats_now() - iv->refreshed_at < OC_INVAL_REFRESH_S)
        return;
    uint64_t lsn = strtoull(PQgetvalue(gens, 0, 3), NULL, 10);
    if (iv->check != NULL)
        return;                /* the last one's read is out: at the next cycle */
    iv->refresh_due = claimed; /* a last one once the claims stop */
    if (lsn <= iv->db_lsn)
        return; /* nothing new flushed */
    refresh_read(iv, lsn);
}

static const char *const rollback_note[] = {
    [OC_INVAL_DB_CLUSTER] = "another cluster than the cache's rows were read from (a "
                            "restore into a new cluster, pg_upgrade)",
    [OC_INVAL_DB_TIMELINE] = "a later timeline than the cache's rows were read from (a "
                             "failover, a point-in-time restore, a switchover)",
    [OC_INVAL_DB_LSN] = "the same cluster and timeline at an earlier WAL position than "
                        "the cache's rows were read at (a copy of the data directory put "
                        "back: a snapshot, a base backup restored without recovery)",
    [OC_INVAL_DB_BEHIND] = "an earlier timeline than the cache's marker names (a copy of "
                           "an earlier timeline put back after a failover, or an old "
                           "primary left up): the pool may hold rows of the later "
                           "timeline's commits, which this database never had. The "
                           "marker is left to the later timeline, so each connection "
                           "of a consumer here bumps again until it is deleted "
                           "(docs/operations.md)",
};
static const char *const rollback_rule[] = {
    [OC_INVAL_DB_CLUSTER] = "cluster",
    [OC_INVAL_DB_TIMELINE] = "timeline",
    [OC_INVAL_DB_LSN] = "lsn",
    [OC_INVAL_DB_BEHIND] = "behind",
};

/* The database is another cluster, a later timeline (a promote: a
 * failover, a point-in-time restore), or a position below the marker's (a
 * copy put back) than the pool's rows were read from: rows the pool holds
 * may be of commits it lost. Or an earlier timeline than the marker's: rows
 * the pool holds may be of the later timeline's commits, which it never
 * had; a split brain's old primary and a copy of an earlier timeline put
 * back look alike from here, and either way its readers must not be served
 * them (found by a review: a copy of timeline 1 put back after a failover
 * served timeline 2's rows). Every model goes whole, as a TRUNCATE would,
 * before the next claim. */
static void rollback(oc_inval_t *iv, oc_inval_db_t rule, const char *marker, size_t len)
{
    char now[72], key[OC_INVAL_MARKER_KEY];
    iv->ctx->stats->db_rollbacks++;
    oc_inval_marker_key(iv->ctx->conf, key, sizeof(key));
    /* the marker parsed (oc_inval_db_rule): digits and spaces */
    oc_log_error("event=db_rollback rule=%s key=%s was=\"%.*s\" now=\"%s\" note=\"the "
                 "database is %s: every model is invalidated whole (new generations)\"",
                 rollback_rule[rule], key, (int)len, marker,
                 identity(iv, now, sizeof(now)), rollback_note[rule]);
    iv->bump_due = 1;
    iv->bump_behind = rule == OC_INVAL_DB_BEHIND;
    iv->bump_tried = 0;
    cycle_start(iv); /* busy: right after this cycle */
}

static void marker_read(oc_mc_job_t *job, void *arg)
{
    db_check_t *c = arg;
    oc_inval_t *iv = c->iv; /* NULL: freed, or its connection ended */
    const oc_mc_hit_t *h = &job->hits[0];
    char now[72];
    if (iv != NULL)
        iv->check = NULL;
    if (iv == NULL) {
        /* nothing: the next connection checks */
    } else if (h->error) { /* cannot tell: said once, and tried at the next poll */
        if (!iv->marker_failing)
            oc_log_warn("event=db_marker_failed key=%s reason=\"%s\" note=\"the "
                        "database's identity is checked again at each poll until the "
                        "marker answers\"",
                        c->key, job->err);
        iv->marker_failing = 1;
        iv->check_due = 1;
    } else {
        oc_inval_db_t rule =
            oc_inval_db_rule(h->found, h->data, h->len, identity(iv, now, sizeof(now)));
        iv->marker_failing = 0;
        iv->checked_first = rule == OC_INVAL_DB_FIRST;
        switch (rule) {
        case OC_INVAL_DB_CLUSTER:
        case OC_INVAL_DB_TIMELINE:
        case OC_INVAL_DB_BEHIND:
            rollback(iv, rule, h->data, h->len);
            break;
        case OC_INVAL_DB_LSN:
            /* h->len < sizeof(was): the marker parsed */
            snprintf(iv->was, sizeof(iv->was), "%.*s", (int)h->len, h->data);
            iv->recheck_due = 1;
            cycle_start(iv); /* busy: right after this cycle */
            break;
        case OC_INVAL_DB_FIRST:
            oc_log_info("event=db_identity now=\"%s\" marker=written", now);
            iv->marker_ours = 1;
            marker_write(iv);
            break;
        case OC_INVAL_DB_SAME:
            oc_log_info("event=db_identity now=\"%s\" marker=same", now);
            marker_same(iv, h->data, h->len);
            break;
        }
    }
    oc_mc_job_free(job);
    free(c);
}

static void rechecked(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                      void *arg)
{
    (void)pc;
    oc_inval_t *iv = arg;
    char clean[OC_ERRLEN], now[72];
    int ok = st == OC_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0);
    if (!ok)
        oc_log_warn(
            "event=db_check_failed step=position reason=\"%s\"",
            oc_log_clean(clean, sizeof(clean), st == OC_OK ? "no position" : err));
    else
        iv->db_lsn = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    set_state(iv, OC_INVAL_IDLE);
    if (ok && oc_inval_db_rule(1, iv->was, strlen(iv->was),
                               identity(iv, now, sizeof(now))) == OC_INVAL_DB_LSN) {
        rollback(iv, OC_INVAL_DB_LSN, iv->was, strlen(iv->was));
        return;
    }
    if (ok) {
        oc_log_info("event=db_identity now=\"%s\" marker=same was=\"%s\" note=\"moved "
                    "forward by another consumer during this check\"",
                    now, iv->was);
        marker_same(iv, iv->was, strlen(iv->was));
    }
    cycle_start(iv);
}

/* The marker was above this connection's position, read before the
 * marker: another consumer may have moved it forward in between (a live
 * server's flush position only grows). Read again, now that the marker has
 * answered: a position still below it is a copy put back. */
static void recheck(oc_inval_t *iv)
{
    iv->recheck_due = 0;
    set_state(iv, OC_INVAL_CHECKING);
    if (oc_pgconn_query(iv->pc, "SELECT (pg_current_wal_flush_lsn() - '0/0')::text", 0,
                        NULL, rechecked, iv) != OC_OK)
        set_state(iv, OC_INVAL_IDLE); /* not connected: up() checks */
}

/* Reads memcached's marker (one get per connection; the consumer goes on
 * meanwhile: a slow memcached must not hold the claims back). */
static void db_check_start(oc_inval_t *iv)
{
    db_check_t *c = calloc(1, sizeof(*c));
    oc_mc_job_t *job = c ? oc_mc_job_new_get(1, marker_read, c) : NULL;
    if (job == NULL) {
        free(c);
        return;
    }
    check_forget(iv);
    c->iv = iv;
    oc_inval_marker_key(iv->ctx->conf, c->key, sizeof(c->key));
    job->keys[0] = c->key;
    job->key_lens[0] = strlen(c->key);
    iv->check = c;
    oc_mc_submit(iv->ctx->mc, job);
}

static void identified(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                       void *arg)
{
    (void)pc;
    oc_inval_t *iv = arg;
    char clean[OC_ERRLEN];
    iv->db_identity[0] = '\0';
    if (st != OC_OK) {
        if (!iv->identity_failing)
            oc_log_warn(
                "event=db_check_failed step=identity reason=\"%s\" note=\"checked "
                "again at each poll until it works\"",
                oc_log_clean(clean, sizeof(clean), err));
        iv->identity_failing = 1;
    } else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) &&
               !PQgetisnull(res, 0, 1)) {
        snprintf(iv->db_identity, sizeof(iv->db_identity), "%s", PQgetvalue(res, 0, 0));
        iv->db_lsn = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        snprintf(iv->db_started, sizeof(iv->db_started), "%s", PQgetvalue(res, 0, 2));
        iv->identity_failing = 0;
    }
    /* Unread (an error, a server in recovery): again at the next poll. Until
     * 2026-12-06 at the next connection only, which behind pgbouncer in
     * transaction mode never comes: one failed read there turned the check
     * off for the process's life (found by a review). */
    if (!iv->db_identity[0])
        iv->check_due = 1;
    PQclear(res);
    set_state(iv, OC_INVAL_IDLE);
    if (iv->db_identity[0] && iv->ctx->mc)
        db_check_start(iv);
    cycle_start(iv);
}

/* The database's identity: its system identifier and timeline (of the
 * current WAL file), and its flush LSN (a position a crash never goes
 * below, unlike the insert position), once per connection, before its
 * first claim. */
static void identify(oc_inval_t *iv)
{
    iv->check_due = 0;
    iv->check_tried = oc_stats_now();
    set_state(iv, OC_INVAL_CHECKING);
    if (oc_pgconn_query(
            iv->pc,
            "SELECT CASE WHEN NOT pg_is_in_recovery() THEN "
            "(SELECT system_identifier FROM pg_control_system())::text "
            "|| ' ' || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), "
            "1, 8))::bit(32)::bigint END, CASE WHEN NOT pg_is_in_recovery() "
            "THEN (pg_current_wal_flush_lsn() - '0/0')::text END, " OC_INVAL_STARTED,
            0, NULL, identified, iv) != OC_OK)
        set_state(iv, OC_INVAL_IDLE); /* not connected: up() checks */
}

static void probe(oc_inval_t *iv);

static void cycle_start(oc_inval_t *iv)
{
    if (iv->state != OC_INVAL_IDLE) {
        iv->again = 1;
        return;
    }
    evtimer_del(iv->poll);
    /* An older hook may be upgraded by install.sql while we run (sidecars
     * may keep running): look again before each claim until it is the
     * newest, or what we apply would never reach the feed, and another
     * sidecar's heartbeat, finding the outbox drained, would tell every
     * near-cache it is caught up past keys it never heard of. */
    if (!iv->has_retry && !iv->probed_now) {
        probe(iv);
        return;
    }
    if (check_now(iv)) {
        identify(iv);
        return;
    }
    if (iv->recheck_due) {
        recheck(iv);
        return;
    }
    if (bump_now(iv)) {
        bump(iv);
        return;
    }
    iv->probed_now = 0;
    claim(iv); /* not connected: cycle_end; up() starts us again */
}

/* ---- connection events ------------------------------------------------------------ */

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    cycle_start(arg);
}

static void probed(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                   void *arg)
{
    (void)pc, (void)err;
    oc_inval_t *iv = arg;
    int ok = st == OC_OK && PQntuples(res) == 1;
    iv->has_feed = ok && PQgetvalue(res, 0, 0)[0] == 't';
    iv->has_retry = iv->has_feed && PQgetvalue(res, 0, 1)[0] == 't';
    PQclear(res);
    iv->probed_now = 1;
    set_state(iv, OC_INVAL_IDLE);
    cycle_start(iv); /* catch up on whatever came while we were away */
}

/* Does the hook have the feed (schema version 2)? Then what this consumer
 * applies is appended to it, for every sidecar's near-cache. */
static void probe(oc_inval_t *iv)
{
    set_state(iv, OC_INVAL_PROBING);
    if (oc_pgconn_query(iv->pc, "SELECT " OC_INVAL_HAS_FEED ", " OC_INVAL_HAS_RETRY, 0,
                        NULL, probed, iv) != OC_OK)
        set_state(iv, OC_INVAL_IDLE); /* not connected: up() probes */
}

static void on_up(oc_pgconn_t *pc, void *owner)
{
    (void)pc;
    oc_inval_t *iv = owner;
    iv->ctx->stats->inval_connected = 1;
    check_again(iv);    /* a new connection: maybe another server */
    if (iv->orphaned) { /* the last session's deletes are still out */
        iv->up_pending = 1;
        return;
    }
    probe(iv);
}

static void on_down(oc_pgconn_t *pc, const char *err, void *owner)
{
    (void)pc, (void)err;
    oc_inval_t *iv = owner;
    iv->ctx->stats->inval_connected = 0;
    check_forget(iv);
    /* A cycle in flight got its callback already, except while applying:
     * then the rows come back to the outbox by rollback, and applied()
     * drops the cycle when its deletes answer. */
    if (iv->state != OC_INVAL_APPLYING) {
        cycle_clear(iv);
        set_state(iv, OC_INVAL_IDLE);
    } else {
        iv->orphaned = 1;
        iv->up_pending = 0;
    }
}

static void on_notify(oc_pgconn_t *pc, const PGnotify *n, void *owner)
{
    (void)pc, (void)n;
    cycle_start(owner);
}

/* Before serving: learn the models' generations with one blocking query,
 * so that a sidecar started after a TRUNCATE does not read entries of the
 * old generation until its first cycle. Runs before the loop does. The
 * models follow this read's hook (ctx->gens_oid) from now on: else a hook
 * installed again before the consumer's or the feed's first read would be
 * taken for the first one and followed forward only, from this read's
 * higher generations, for good (found by the second pass). */
void oc_inval_read_generations(oc_ctx_t *ctx, const char *source)
{
    /* target_session_attrs before the conninfo (its own wins): a standby's
     * generations may be older than the primary's (oc_pgconn).
     * connect_timeout after it (ours wins): this read blocks the loop at a
     * reload, and a conninfo's connect_timeout = 20 for the loaders held
     * every client 20 s (a probe's finding). libpq applies it per host. */
    const char *keys[] = {"target_session_attrs", "dbname", "connect_timeout",
                          "fallback_application_name", NULL};
    const char *vals[] = {"primary", ctx->conf->conninfo, "2", "objcached-generations",
                          NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    PGresult *r = NULL;
    /* Blocking, before the listeners are bound: a lock on objcached.models
     * (an upgrade in a long transaction) must not hold the start for as
     * long as it lasts. The read is an optimisation; the consumer or the
     * feed reads the generations again once connected. SET LOCAL: for
     * this query string's transaction only (behind a pooler in transaction
     * mode a session's SET would stay for the server session's next
     * client). */
    if (c && PQstatus(c) == CONNECTION_OK)
        r = PQexec(c,
                   "SET LOCAL statement_timeout = 2000; SET LOCAL lock_timeout = 0; "
                   "SELECT model, generation, "
                   "pg_catalog.to_regclass('objcached.generation_seq')::pg_catalog.oid "
                   "FROM objcached.models");
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        oc_gens_read(ctx->gens, source);
        if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 2))
            ctx->gens_oid = strtoul(PQgetvalue(r, 0, 2), NULL, 10);
        for (int i = 0; i < PQntuples(r); i++) {
            const oc_model_conf_t *m = oc_conf_model(ctx->conf, PQgetvalue(r, i, 0),
                                                     (size_t)PQgetlength(r, i, 0));
            if (m)
                ctx->model_gen[m - ctx->conf->models] =
                    strtoull(PQgetvalue(r, i, 1), NULL, 10);
        }
    } else {
        oc_gens_failed(ctx->gens, source,
                       r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL,
                       r   ? PQresultErrorMessage(r)
                       : c ? PQerrorMessage(c)
                           : "out of memory");
    }
    PQclear(r);
    /* The same connection, one round trip more: the loads' role meets
     * row security (a warning a daemon started without --check-config
     * would otherwise never give). */
    if (c && PQstatus(c) == CONNECTION_OK)
        oc_pg_warn_row_security(ctx->conf, c);
    PQfinish(c);
}

oc_inval_t *oc_inval_new(oc_ctx_t *ctx, char *err)
{
    if (ctx->conf->inval_poll_ms == 0)
        return NULL;
    oc_inval_t *iv = calloc(1, sizeof(*iv));
    char *session = oc_sql_session(ctx->conf);
    char *setup = session ? malloc(strlen(session) + 32) : NULL;
    /* Transaction mode: no LISTEN (a server session's is gone with its
     * transaction): the poll (invalidation_poll) claims */
    char *local = ctx->conf->pg_txn_pool ? oc_sql_local(ctx->conf) : NULL;
    if (iv == NULL || setup == NULL || (ctx->conf->pg_txn_pool && local == NULL))
        goto nomem;
    sprintf(setup, "%s; LISTEN objcached", session);
    iv->ctx = ctx;
    set_state(iv, OC_INVAL_IDLE);
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(iv->writer, sizeof(iv->writer), "consumer %.63s:%ld", host, (long)getpid());
    if ((iv->poll = evtimer_new(ctx->base, on_poll, iv)) == NULL)
        goto nomem;
    static const oc_pgconn_hooks_t hooks = {
        .up = on_up, .down = on_down, .notify = on_notify};
    const oc_pgconn_opts_t opts = {
        .app_name = "objcached-inval", .stats = ctx->stats, .local_sql = local};
    if ((iv->pc = oc_pgconn_new(ctx->base, ctx->conf->conninfo, &opts, setup, &hooks,
                                iv)) == NULL)
        goto nomem;
    free(session);
    free(setup);
    free(local);
    return iv;
nomem:
    free(session);
    free(setup);
    free(local);
    oc_inval_free(iv);
    oc_fail(err, OC_ENOMEM, "out of memory");
    return NULL;
}

void oc_inval_free(oc_inval_t *iv)
{
    if (iv == NULL)
        return;
    check_forget(iv);       /* its callback frees it */
    oc_pgconn_free(iv->pc); /* a claim under way rolls back */
    iv->pc = NULL;
    if (iv->ctx)
        iv->ctx->stats->inval_connected = 0; /* a reload stopped it, or shutdown */
    if (iv->poll)
        event_free(iv->poll);
    iv->poll = NULL;
    if (iv->state == OC_INVAL_APPLYING) {
        iv->dying = 1; /* oc_mc still holds our deletes; applied() frees */
        return;
    }
    cycle_clear(iv);
    free(iv);
}

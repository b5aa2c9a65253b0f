#include "oc_wal.h"

#include <event2/event.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "oc_conf.h"
#include "oc_feed.h"
#include "oc_fill.h"
#include "oc_inval.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_near.h"
#include "oc_pgconn.h"
#include "oc_pgoutput.h"
#include "oc_sampler.h"
#include "oc_sql.h"
#include "oc_stats.h"
#include "oc_walbatch.h"
#include "oc_walowed.h"

#define WAL_RETRY_FAST_S 1.0   /* after losing the slot we held */
#define WAL_PAUSE_FACTOR 4     /* pending keys past 4 x max_txn_keys: pause */
#define WAL_DELETE_CHUNK 16384 /* a batch's deletes out at a time: see delete_chunk */
/* A standby tries the slot when the feed goes stale, and otherwise only
 * every 60 x wal_takeover (5 min by default): a fresh feed already proves a
 * holder is alive, and each try costs the primary two connections. */
#define WAL_RECHECK_FACTOR 60
/* A try to take the slot (connect, map, generations, START_REPLICATION)
 * that has not reached the stream after this many wal_takeover starts
 * again: generous, since making a slot waits for running transactions. */
#define WAL_TRY_LIMIT_FACTOR 12

typedef enum wal_state {
    WAL_STANDBY,    /* no connection: waiting to try */
    WAL_CONNECTING, /* both connections coming up */
    WAL_MAPPING,    /* reading which relations are which models */
    WAL_GENS,       /* reading the models' generations */
    WAL_STARTING,   /* START_REPLICATION sent */
    WAL_STREAMING,  /* holding the slot */
    WAL_RECREATING, /* the slot is gone: making it again */
} wal_state_t;

/* Where a batch is in being applied. */
typedef enum wal_step {
    STEP_NONE,
    STEP_VISIBLE, /* waiting until its commits are visible (visible_check) */
    STEP_DELETES, /* memcached deletes out */
    STEP_FEED,    /* to append to the feed (and requeue failures) */
    STEP_GENS,    /* to read the generations a whole-model row bumped */
} wal_step_t;

typedef struct wal_gen {
    char *model;
    uint64_t gen;
} wal_gen_t;

struct oc_wal {
    oc_ctx_t *ctx;
    wal_state_t state;
    unsigned stream_no; /* START_REPLICATIONs sent */
    int began;          /* this START_REPLICATION's stream began (COPY BOTH) */
    int pub_missing;    /* a stream ended on pgoutput's "publication does not
                           exist": the next try asks pg_publication first */
    /* the error of a START_REPLICATION refused for an unusable slot (55000),
     * while pg_replication_slots is asked whether the slot is lost */
    char unusable_why[OC_ERRLEN];
    oc_pgconn_t *repl, *sql;
    int repl_up, sql_up;
    /* Each try makes new connections: the last failure of each (repl, sql)
     * and of the last try, so that tries that keep failing the same way
     * (max_wal_senders reached, once a second) say it once, not per try;
     * cleared when the slot is ours. */
    char down_why[2][OC_ERRLEN];
    char standby_why[OC_ERRLEN];
    oc_pgconn_t *dead[2]; /* connections given up, freed from `reap` */
    struct event *reap;
    oc_walb_t *acc;
    struct event *timer;       /* STANDBY: the next try; else the periodic work */
    struct event *batch_timer; /* reading again, and the next batch, after a pause */
    struct event *kick;        /* after a burst of the stream is read: apply, pace */
    struct event *vis_timer;   /* STEP_VISIBLE: the next visibility check */
    double batch_at;           /* when the last batch was taken (0: none yet) */
    /* of the current stream only: the next may be of another server (a
     * failover) whose WAL is not as far, and a position confirmed there
     * past what it sent would skip its changes at the next start */
    uint64_t received_lsn, applied_lsn;
    uint32_t unknown_relid; /* the map was last read again for this relation */
    /* the batch being applied */
    wal_step_t step;
    unsigned batch_stream; /* stream_no it was read from */
    int own; /* the feed statement is one the follower may take (oc_feed_own) */
    double sql_step_at; /* when it reached STEP_VISIBLE, STEP_FEED or
                           STEP_GENS, or sent a visibility check */
    oc_walb_batch_t batch;
    /* Its deletes go out a chunk at a time (WAL_DELETE_CHUNK): the job
     * of the chunk under way, its cache keys, which batch key each item is,
     * and the next batch key to send. */
    oc_mc_job_t *job;
    char *arena;     /* cache keys of the chunk's deletes */
    size_t *del_idx; /* delete item i is batch key del_idx[i] */
    size_t del_next;
    /* the batch keys whose delete failed (for the requeue), the first
     * failure's text, and whether one of them may still be served */
    size_t *failed;
    size_t nfailed, failed_cap;
    int hold;
    char del_err[OC_ERRLEN];
    char *lit[5]; /* array literals of the feed query */
    /* wal_feed_keys = off: the models whose keys this stream deleted and did
     * not append (oc_walowed.h); the slot is not confirmed while any is */
    oc_walowed_t owed;
    int feed_keys;  /* wal_feed_keys as this holder last applied it */
    int paid_claim; /* the flush out carries the batch's whole statement */
    /* It let go of the slot it held (a map change, a failed statement): its
     * next try comes at the time stand_by set, whatever the feed says */
    int retry_held;
    /* STEP_VISIBLE: a check due (the first, or vis_timer fired), when the
     * wait began, the delay before the next check, and whether the wait was
     * logged (event=wal_commit_invisible) */
    int vis_due, vis_logged;
    double vis_from, vis_delay;
    char num[3][32];
    /* generations of every model, for cache keys */
    wal_gen_t *gens;
    size_t ngens;
    /* periodic work on the regular connection */
    int hb_due, stats_due, prune_due;
    int check_due;      /* wal_check: 1 due, 2 under way */
    int check_failing;  /* its last run failed (logged once) */
    int has_since;      /* requeue(models, keys, since) exists */
    int warned_replies; /* event=wal_replies_hidden was logged */
    /* what wal_check reported last, "; "-joined (NULL: nothing); while it
     * reports anything the heartbeats claim nothing (see checked) */
    char *problems;
    double sender_timeout_s; /* the server's wal_sender_timeout; 0: none known */
    oc_wal_sched_t sched;
    double tried_at;
    double born; /* when oc_wal_new ran: the start of our watch */
    /* the holder's confirmed position as this standby last saw it, and
     * since when it has not moved: a stuck holder's does not */
    oc_wal_watch_t seen;
    int tried;
    int sql_busy;
    int paused; /* too many keys pending: not reading until a batch is applied */
    /* Pacing: the stream is read at most once per wal_batch_interval and not
     * while a batch is applied, so a burst of commits (and the walsender's
     * keepalive after each WAL flush) wakes the holder once, not per message. */
    int paced;
    int got_data;     /* the stream was read since the last kick */
    int kick_pending; /* `kick` is active */
    double heard_at;  /* the stream's last CopyData, or reading resumed */
    char slot[OC_MODEL_NAME_MAX + 1];
    char writer[96];
    char hb_token[OC_WALB_TOKEN_LEN + 1]; /* in our heartbeats: see hb_token_new */
};

static void wal_start_try(oc_wal_t *w);
static void sql_next(oc_wal_t *w);
static void apply_maybe(oc_wal_t *w);

static double now_s(void)
{
    return oc_stats_now();
}

static void set_state(oc_wal_t *w, wal_state_t st)
{
    oc_stats_t *stats = w->ctx->stats;
    w->state = st;
    stats->wal_holder = st == WAL_STREAMING;
    /* The slot's lag is the holder's to tell: a sidecar that lets it go
     * shows 0, not what it saw last, so that the fleet's max() (the alert
     * rows) is the holder's. */
    if (st != WAL_STREAMING) {
        stats->wal_lag_bytes = stats->wal_apply_lag_ms = 0;
        stats->wal_check_problems = 0; /* the next holder tells, logs anew */
        free(w->problems);
        w->problems = NULL;
        w->check_due = w->check_failing = 0;
    }
}

static void arm(oc_wal_t *w, double secs)
{
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (time_t)secs) * 1e6)};
    evtimer_add(w->timer, &tv);
}

/* ---- generations --------------------------------------------------------------------
 */

static void gens_clear(oc_wal_t *w)
{
    for (size_t i = 0; i < w->ngens; i++)
        free(w->gens[i].model);
    free(w->gens);
    w->gens = NULL;
    w->ngens = 0;
}

/* The generations when the stream starts, whether requeue() takes its
 * keys' write time (an older hook's has two arguments: the binary may be
 * upgraded before the SQL), wal_sender_timeout (ms), which bounds how long
 * a live walsender may leave a holder without a word, and whether this role
 * sees pg_stat_replication's details (reply_time: slot_checked), which
 * PostgreSQL shows only to pg_read_all_stats. */
#define WAL_GENS_AND_PROBE                                                               \
    "SELECT model, generation, to_regprocedure('objcached.requeue(text[], text[], "      \
    "timestamptz)') IS NOT NULL, (SELECT s.setting FROM pg_catalog.pg_settings s "       \
    "WHERE s.name = 'wal_sender_timeout'), "                                             \
    "pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') FROM objcached.models"

static int gens_load(oc_wal_t *w, const PGresult *res)
{
    gens_clear(w);
    int n = PQntuples(res);
    w->gens = calloc((size_t)(n ? n : 1), sizeof(*w->gens));
    if (w->gens == NULL)
        return -1;
    for (int i = 0; i < n; i++) {
        if ((w->gens[i].model = strdup(PQgetvalue(res, i, 0))) == NULL)
            return -1;
        w->gens[i].gen = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        w->ngens++;
    }
    return 0;
}

static uint64_t gen_of(const oc_wal_t *w, const char *model)
{
    for (size_t i = 0; i < w->ngens; i++)
        if (strcmp(w->gens[i].model, model) == 0)
            return w->gens[i].gen;
    return 0;
}

/* The generation to delete a model's keys under: the newer of what the
 * holder read (at the start, and after its own whole-model rows) and what
 * this sidecar uses. A whole-model invalidation that does not come through
 * the WAL (a TRUNCATE of one partition: the outbox, which this process's
 * consumer applies) moves the sidecars, this one first, to a generation
 * the holder has not read; deleting under the older one would miss every
 * key cached since. Generations only grow (every sidecar has the same
 * models: docs/operations.md). */
static uint64_t delete_gen(const oc_wal_t *w, const char *model)
{
    uint64_t gen = gen_of(w, model);
    const oc_ctx_t *ctx = w->ctx;
    const oc_model_conf_t *m = oc_conf_model(ctx->conf, model, strlen(model));
    if (m && ctx->model_gen[m - ctx->conf->models] > gen)
        gen = ctx->model_gen[m - ctx->conf->models];
    return gen;
}

/* ---- giving up the slot --------------------------------------------------------------
 */

static void chunk_clear(oc_wal_t *w)
{
    oc_mc_job_free(w->job);
    w->job = NULL;
    free(w->arena);
    w->arena = NULL;
    free(w->del_idx);
    w->del_idx = NULL;
}

static void batch_clear(oc_wal_t *w)
{
    oc_walb_batch_free(&w->batch);
    chunk_clear(w);
    free(w->failed);
    w->failed = NULL;
    w->nfailed = w->failed_cap = 0;
    w->hold = 0;
    w->del_err[0] = '\0';
    for (size_t i = 0; i < 5; i++) {
        free(w->lit[i]);
        w->lit[i] = NULL;
    }
    w->vis_due = w->vis_logged = 0;
    if (w->vis_timer)
        evtimer_del(w->vis_timer);
    w->step = STEP_NONE;
}

/* Hand both connections to the reaper. Not freed here: this may run inside
 * one of their callbacks. They get no more callbacks (abandon; their hooks
 * see they are no longer ours) and are freed from the reap event. */
static void retire_conns(oc_wal_t *w)
{
    if (w->sql)
        oc_feed_own_end(w->ctx->feed);
    for (int i = 0; i < 2; i++) {
        oc_pgconn_t *c = i ? w->sql : w->repl;
        if (c == NULL)
            continue;
        oc_pgconn_abandon(c);
        oc_pgconn_free(w->dead[i]);
        w->dead[i] = c;
    }
    event_active(w->reap, EV_TIMEOUT, 0);
    w->repl = w->sql = NULL;
    w->repl_up = w->sql_up = 0;
}

static int batch_stuck(const oc_wal_t *w, double now);

/* Holding no more (or never got there): close both connections and stand
 * by; `again` seconds until the next try. The outbox consumer stops with
 * the slot: the next holder drains the outbox. */
static void stand_by(oc_wal_t *w, double again, const char *why)
{
    oc_ctx_t *ctx = w->ctx;
    int held = w->state == WAL_STREAMING;
    char clean[OC_ERRLEN]; /* PostgreSQL's messages quote names */
    if (held) {
        /* A holder let go with its batch stuck (terminated for it, or
         * timed out by its walsender) must not take the slot back before a
         * standby could: one second later it won the slot back each time,
         * got stuck again, and standbys, which try about every
         * wal_takeover while the feed is stale, missed the second between
         * (found 2026-12-07 in a run of its test: no standby took over in
         * 40 s). Waiting longer than wal_takeover leaves them a try. */
        int stuck = batch_stuck(w, now_s());
        double fair = ctx->conf->wal_takeover_ms / 1000.0 + WAL_RETRY_FAST_S;
        if (stuck && again < fair)
            again = fair;
        oc_log_warn("event=wal_released slot=%s reason=\"%s\" stuck=%d retry_s=%.1f",
                    w->slot, oc_log_clean(clean, sizeof(clean), why), stuck, again);
    } else if (w->state != WAL_STANDBY) {
        int repeat = strcmp(why, w->standby_why) == 0;
        oc_log(repeat ? OC_LOG_DEBUG : OC_LOG_INFO,
               "event=wal_standby slot=%s reason=\"%s\"", w->slot,
               oc_log_clean(clean, sizeof(clean), why));
        snprintf(w->standby_why, sizeof(w->standby_why), "%s", why);
    }
    retire_conns(w);
    w->sql_busy = 0;
    w->paused = w->paced = w->got_data = 0;
    oc_walowed_clear(&w->owed);  /* unconfirmed: sent again from the slot */
    if (w->step != STEP_DELETES) /* deletes out: their callback clears */
        batch_clear(w);
    oc_walb_restart(w->acc);
    oc_walb_batch_t drop;
    if (oc_walb_take(w->acc, &drop) == OC_OK) /* sent again from the slot */
        oc_walb_batch_free(&drop);
    ctx->stats->wal_buffer_bytes = oc_walb_bytes(w->acc); /* given back by the take */
    if (ctx->inval) {
        oc_inval_free(ctx->inval);
        ctx->inval = NULL;
    }
    set_state(w, WAL_STANDBY);
    w->retry_held = held;
    evtimer_del(w->timer);
    evtimer_del(w->batch_timer);
    event_del(w->kick);
    w->kick_pending = 0;
    arm(w, again);
}

/* A step of taking the slot could not send its command (its connection went
 * down meanwhile): no callback will come to move the try on, so stand by
 * and try again, rather than stay in that step for good. */
static void not_sent(oc_wal_t *w, const char *what)
{
    char why[96];
    snprintf(why, sizeof(why), "cannot send the query for %s", what);
    w->sql_busy = 0;
    stand_by(w, WAL_RETRY_FAST_S, why);
}

/* ---- the stream ------------------------------------------------------------------- */

static void send_status(oc_wal_t *w, int reply)
{
    if (w->repl == NULL || !oc_pgconn_streaming(w->repl))
        return;
    uint8_t buf[OC_PGO_STATUS_LEN];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double unix_now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    size_t n = oc_pgo_format_status(buf, w->received_lsn, w->applied_lsn, w->applied_lsn,
                                    oc_pgo_time_from_unix(unix_now), reply);
    oc_pgconn_put_copy(w->repl, (const char *)buf, n);
}

/* A batch whose statements have not come back for 2 x wal_takeover (the
 * regular connection stuck): the holder sends no status, not even one the
 * walsender asks for, so that neither its position nor its reply_time
 * moves and a standby takes over (slot_checked), as it does when only the
 * position counted. Without pacing (wal_batch_interval 0) the stream is
 * read meanwhile, and an answered request moved reply_time every half
 * wal_sender_timeout. (Not while memcached deletes are out: they end by
 * their own timeouts, and a slow memcached must not cost the slot.) */
static int batch_stuck(const oc_wal_t *w, double now)
{
    return (w->step == STEP_VISIBLE || w->step == STEP_FEED || w->step == STEP_GENS) &&
           now - w->sql_step_at > 2 * w->ctx->conf->wal_takeover_ms / 1000.0;
}

/* The repl connection reads while neither the key limit nor the pacing
 * holds it. Resuming hands it what libpq buffered meanwhile. */
static void set_reading(oc_wal_t *w)
{
    if (w->repl)
        oc_pgconn_pause(w->repl, w->paused || w->paced);
}

/* Apply and pace once the burst of messages read now is all in: `kick` is
 * activated after the repl connection's read callback, so it runs after it. */
static void kick_soon(oc_wal_t *w)
{
    if (!w->kick_pending) {
        w->kick_pending = 1;
        event_active(w->kick, EV_TIMEOUT, 0);
    }
}

static void reload_map(oc_wal_t *w, const char *why)
{
    char clean[OC_ERRLEN];
    w->ctx->stats->wal_map_reloads++;
    oc_log_info("event=wal_map_reload reason=\"%s\"",
                oc_log_clean(clean, sizeof(clean), why));
    /* Dropping the stream sends everything unconfirmed again; the map is
     * read again before the next START_REPLICATION. */
    stand_by(w, 0.1, why);
}

/* A relation the map does not know even though it was read again for it:
 * it is in the publication no more (detached or dropped after these changes
 * were written, while nobody read the slot), so no model's cache depends on
 * it. Its changes are skipped, where reading the map again would restart
 * the stream before them for ever. */
static int skip_unknown(oc_wal_t *w)
{
    uint32_t rel = oc_walb_unknown(w->acc);
    if (rel == 0 || rel != w->unknown_relid)
        return 0;
    oc_log_warn("event=wal_relation_skipped relid=%u reason=\"not in the publication any "
                "more: its changes are no model's\"",
                rel);
    return oc_walb_map_add(w->acc, rel, NULL, NULL) == OC_OK;
}

static void on_data(oc_pgconn_t *pc, const char *buf, size_t len, void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    char err[OC_ERRLEN];
    if (w->state != WAL_STREAMING)
        return;
    oc_pgo_copy_t copy;
    if (oc_pgo_parse_copy((const uint8_t *)buf, len, &copy, err) != OC_OK) {
        w->ctx->stats->wal_errors++;
        stand_by(w, WAL_RETRY_FAST_S, err);
        return;
    }
    if (copy.wal_end > w->received_lsn)
        w->received_lsn = copy.wal_end;
    w->got_data = 1;
    w->heard_at = now_s();
    kick_soon(w);
    if (copy.type == OC_PGO_KEEPALIVE) {
        if (copy.reply_requested && !batch_stuck(w, w->heard_at))
            send_status(w, 0);
        return;
    }
    if (oc_walb_remap(w->acc))
        return; /* read with the old map: sent again after the restart */
    oc_pgo_msg_t m;
    if (oc_pgo_decode(copy.data, copy.data_len, &m, err) != OC_OK) {
        w->ctx->stats->wal_errors++;
        stand_by(w, WAL_RETRY_FAST_S, err);
        return;
    }
    /* wal_max_txn_keys is reloadable: read it as every message is. */
    oc_walb_set_max_txn_keys(w->acc, w->ctx->conf->wal_max_txn_keys);
    oc_walb_res_t r = oc_walb_feed(w->acc, &m, err);
    if (r == OC_WALB_RELOAD && skip_unknown(w))
        r = oc_walb_feed(w->acc, &m, err);
    if (r == OC_WALB_RELOAD) {
        w->unknown_relid = oc_walb_unknown(w->acc);
        reload_map(w, err);
        return;
    }
    if (r == OC_WALB_BAD) {
        w->ctx->stats->wal_errors++;
        stand_by(w, WAL_RETRY_FAST_S, err);
        return;
    }
    if (m.type == OC_PGO_COMMIT)
        w->ctx->stats->wal_transactions++;
    if (!w->paused &&
        oc_wal_pause_now(oc_walb_pending_keys(w->acc), w->ctx->conf->wal_max_txn_keys,
                         oc_walb_ready(w->acc))) {
        w->paused = 1; /* the walsender waits on TCP meanwhile */
        set_reading(w);
    }
}

/* ---- applying a batch ---------------------------------------------------------------
 *
 * memcached first (so a sidecar that hears of the change from the feed and
 * reads again never reads what was deleted), then the feed and the requeue
 * of what memcached could not delete, in one statement, then the slot's
 * position is confirmed. */

static void applied(oc_wal_t *w)
{
    oc_ctx_t *ctx = w->ctx;
    /* (a batch of an earlier stream, whose deletes came back after this
     * one started: applied, but its position is not this stream's) */
    if (w->batch_stream == w->stream_no && w->batch.end_lsn > w->applied_lsn &&
        w->owed.n == 0)
        w->applied_lsn = w->batch.end_lsn;
    ctx->stats->wal_batches++;
    if (w->batch.commit_ts > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ctx->stats->wal_apply_lag_ms =
            oc_wal_lag_ms((double)ts.tv_sec + ts.tv_nsec / 1e9,
                          oc_pgo_time_to_unix(w->batch.commit_ts));
    }
    batch_clear(w);
    send_status(w, 0);
    w->unknown_relid = 0; /* progress: a new unknown relation reads the map again */
    if (oc_walb_remap(w->acc) && !oc_walb_ready(w->acc)) {
        /* The transaction that changed the models (or renamed a key
         * column) is applied and confirmed: read the map and the
         * generations again, and restart past it. */
        reload_map(w, "the models changed (attach, detach) or a key column was renamed");
        return;
    }
    if (w->paused &&
        !oc_wal_pause_now(oc_walb_pending_keys(w->acc), ctx->conf->wal_max_txn_keys,
                          oc_walb_ready(w->acc)))
        w->paused = 0;
    /* Read what came while the batch was applied, then apply or pace. */
    w->heard_at = now_s(); /* not read meanwhile: no silence */
    w->paced = 0;
    set_reading(w);
    kick_soon(w);
    sql_next(w);
}

static void sql_done(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                     void *arg);

/* A step of applying a batch failed (`reason` logged, `why` for the stand-by
 * line): nothing was confirmed, so the slot sends the batch again. */
static void apply_failed(oc_wal_t *w, const char *step, const char *reason,
                         const char *why)
{
    char clean[OC_ERRLEN];
    w->ctx->stats->wal_errors++;
    oc_log_warn("event=wal_apply_failed step=%s reason=\"%s\"", step,
                oc_log_clean(clean, sizeof(clean), reason));
    stand_by(w, WAL_RETRY_FAST_S, why);
}

/* The generations after a whole-model row bumped them. */
static void gens_read(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                      void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    if (st != OC_OK || gens_load(w, res) != 0) {
        const char *why = st != OC_OK ? err : "out of memory";
        PQclear(res);
        apply_failed(w, "gens", why, why);
        return;
    }
    PQclear(res);
    applied(w);
}

/* The follower of this process takes what its holder appended from the
 * statement's result instead of polling it back (oc_feed_own). Every
 * statement that may have notified is handed over, takeable or not (res
 * NULL, w->own 0): its NOTIFY, read first, waits for it. */
static void hand_over(oc_wal_t *w, const PGresult *res)
{
    oc_ctx_t *ctx = w->ctx;
    const oc_walb_batch_t *b = &w->batch;
    if (ctx->feed == NULL)
        return;
    oc_feed_own_t own = {.pid = oc_pgconn_backend_pid(w->sql)};
    if (w->own && res != NULL && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        own.take = 1;
        own.head = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        own.apply_s = -1;
        if (b->commit_ts > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            own.apply_s = oc_wal_lag_ms((double)ts.tv_sec + ts.tv_nsec / 1e9,
                                        oc_pgo_time_to_unix(b->commit_ts)) /
                          1000.0;
        }
        own.model = b->models[0];
        own.keys = b->keys;
        own.klens = b->klens;
        own.nkeys = b->nkeys;
    }
    w->own = 0;
    oc_feed_own(ctx->feed, &own);
}

/* A statement that may notify goes out on the regular connection. */
static void own_sent(oc_wal_t *w, int takeable)
{
    w->own = takeable;
    oc_feed_own_begin(w->ctx->feed);
}

static void fed(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    hand_over(w, st == OC_OK ? res : NULL);
    PQclear(res);
    if (st != OC_OK) {
        apply_failed(w, "feed", err, err);
        return;
    }
    if (w->batch.nwhole > 0) {
        w->step = STEP_GENS;
        w->sql_step_at = now_s();
        sql_next(w);
        return;
    }
    applied(w);
}

int oc_wal_pause_now(size_t pending, uint32_t max_txn_keys, int committed)
{
    /* (found by a review: a reload lowering wal_max_txn_keys while a big
     * transaction streamed paused a holder with nothing to apply, for good,
     * its statuses still telling the standbys it was alive) */
    return committed && oc_wal_over_limit(pending, max_txn_keys);
}

int oc_wal_one_row(const oc_walb_batch_t *b)
{
    if (b->nwhole > 0 || b->nkeys == 0 || b->nkeys > OC_WAL_FEED_ROW_KEYS)
        return 0;
    for (size_t i = 1; i < b->nkeys; i++)
        if (b->models[i] != b->models[0] && strcmp(b->models[i], b->models[0]) != 0)
            return 0;
    return 1;
}

oc_status_t oc_wal_feed_literals(const oc_walb_batch_t *b, const size_t *failed,
                                 size_t nfailed, char *lit[5])
{
    size_t nk = b->nkeys;
    size_t *mlen = malloc((nk ? nk : 1) * sizeof(*mlen));
    size_t *wlen = malloc((b->nwhole ? b->nwhole : 1) * sizeof(*wlen));
    const char **fm = malloc((nfailed ? nfailed : 1) * sizeof(*fm));
    const char **fk = malloc((nfailed ? nfailed : 1) * sizeof(*fk));
    size_t *fkl = malloc((nfailed ? nfailed : 1) * sizeof(*fkl));
    size_t *fml = malloc((nfailed ? nfailed : 1) * sizeof(*fml));
    oc_status_t st = OC_ENOMEM;
    if (!mlen || !wlen || !fm || !fk || !fkl || !fml)
        goto done;
    for (size_t i = 0; i < nk; i++)
        mlen[i] = strlen(b->models[i]);
    for (size_t i = 0; i < b->nwhole; i++)
        wlen[i] = strlen(b->whole[i]);
    for (size_t i = 0; i < nfailed; i++) {
        size_t k = failed[i];
        fm[i] = b->models[k], fml[i] = mlen[k];
        fk[i] = b->keys[k], fkl[i] = b->klens[k];
    }
    lit[0] = oc_sql_array(b->models, mlen, nk);
    lit[1] = oc_sql_array(b->keys, b->klens, nk);
    lit[2] = oc_sql_array(b->whole, wlen, b->nwhole);
    lit[3] = oc_sql_array(fm, fml, nfailed);
    lit[4] = oc_sql_array(fk, fkl, nfailed);
    st = lit[0] && lit[1] && lit[2] && lit[3] && lit[4] ? OC_OK : OC_ENOMEM;
done:
    free(mlen), free(wlen), free(fm), free(fk), free(fkl), free(fml);
    return st;
}

/* Array literals of the batch: every key (for the feed), the whole models,
 * and the keys memcached failed to delete (for the requeue); *hold: some of
 * those are on a server that may still serve their old values (not one
 * emptied before it is read again), so the requeue holds the feed back. */
static oc_status_t feed_literals(oc_wal_t *w, size_t *nfailed, int *hold)
{
    size_t nf = w->nfailed;
    oc_status_t st = oc_wal_feed_literals(&w->batch, w->failed, nf, w->lit);
    *nfailed = nf;
    *hold = nf && w->hold;
    if (nf) {
        w->ctx->stats->inval_requeued += nf;
        oc_log_warn("event=inval_requeue keys=%zu reason=\"%s\"", nf, w->del_err);
    }
    return st;
}

static int grow_failed(oc_wal_t *w)
{
    if (w->nfailed < w->failed_cap)
        return 0;
    size_t cap = w->failed_cap ? 2 * w->failed_cap : 64;
    size_t *f = realloc(w->failed, cap * sizeof(*f));
    if (f == NULL)
        return -1;
    w->failed = f;
    w->failed_cap = cap;
    return 0;
}

/* A chunk's deletes came back: its failures are kept for the requeue, and
 * whether such a server may still serve the old value is asked now (one
 * that will be emptied before it is read stays so until its flush). */
static int chunk_failures(oc_wal_t *w, const oc_mc_job_t *job)
{
    oc_ctx_t *ctx = w->ctx;
    size_t failed = 0;
    for (size_t i = 0; i < job->n; i++) {
        const oc_mc_item_t *it = &job->items[i];
        if (it->result != OC_MC_R_ERROR)
            continue;
        failed++;
        if (grow_failed(w) != 0)
            return -1;
        w->failed[w->nfailed++] = w->del_idx[i];
        w->hold |= !oc_mc_emptied_before_read(ctx->mc, it);
    }
    if (failed && w->del_err[0] == '\0')
        snprintf(w->del_err, sizeof(w->del_err), "%s", job->err);
    ctx->stats->invalidations += job->n - failed;
    if (failed)
        ctx->stats->mc_errors++;
    return 0;
}

static void delete_chunk(oc_wal_t *w);

static void deleted(oc_mc_job_t *job, void *arg)
{
    oc_wal_t *w = arg;
    w->job = job;
    if (w->state != WAL_STREAMING) { /* the slot was lost meanwhile */
        batch_clear(w);
        return;
    }
    if (chunk_failures(w, job) != 0) {
        w->step = STEP_NONE; /* nothing out: stand_by clears the batch */
        stand_by(w, WAL_RETRY_FAST_S, "out of memory");
        return;
    }
    chunk_clear(w);
    delete_chunk(w);
}

/* The next up to WAL_DELETE_CHUNK cacheable keys of the batch from
 * w->del_next, in one job (and this sidecar's fills and near-cache entries
 * of them, at once); none left: on to the feed. A chunk, not the batch, is
 * what the deletes hold at a time: an item (144 bytes), a cache key, and a
 * queued request and an output line on each server a delete goes to (the
 * key's and its failover). All of a batch's at once were 0.4 KB per key,
 * 400 MB for a 1,000,000-key transaction (a review, 2026-12-05). */
static void delete_chunk(oc_wal_t *w)
{
    oc_ctx_t *ctx = w->ctx;
    const oc_walb_batch_t *b = &w->batch;
    size_t n = 0, bytes = 0, end = w->del_next, pl = strlen(ctx->conf->key_prefix);
    for (; end < b->nkeys && n < WAL_DELETE_CHUNK; end++)
        if (oc_key_id_cacheable(b->keys[end], b->klens[end], ctx->max_key_len)) {
            n++;
            bytes += oc_key_cache_key_room(pl, strlen(b->models[end]), b->klens[end]);
        }
    if (n == 0) {
        w->step = STEP_FEED;
        w->sql_step_at = now_s();
        sql_next(w);
        return;
    }
    w->job = oc_mc_job_new_items(OC_MC_DELETE, n, deleted, w);
    w->arena = malloc(bytes);
    w->del_idx = malloc(n * sizeof(*w->del_idx));
    if (w->job == NULL || w->arena == NULL || w->del_idx == NULL) {
        w->step = STEP_NONE; /* nothing out: stand_by clears the batch */
        stand_by(w, WAL_RETRY_FAST_S, "out of memory");
        return;
    }
    size_t k = 0;
    char *ck = w->arena;
    for (size_t i = w->del_next; i < end; i++) {
        if (!oc_key_id_cacheable(b->keys[i], b->klens[i], ctx->max_key_len))
            continue;
        size_t off, room = oc_key_cache_key_room(pl, strlen(b->models[i]), b->klens[i]);
        oc_mc_item_t *it = &w->job->items[k++];
        it->key = ck;
        it->klen = oc_key_cache_key(ctx->conf->key_prefix, b->models[i],
                                    delete_gen(w, b->models[i]), b->keys[i], b->klens[i],
                                    ck, room, &off);
        ck += room;
        w->del_idx[k - 1] = i; /* which batch key, for the requeue */
        oc_fill_invalidate(ctx->fills, it->key, it->klen);
        oc_near_invalidate(ctx->near, it->key, it->klen);
    }
    w->del_next = end;
    oc_mc_job_t *job = w->job;
    w->job = NULL; /* oc_mc's until deleted() */
    oc_mc_submit(ctx->mc, job);
}

/* The memcached deletes of the batch's keys, a chunk at a time. */
static void apply_deletes(oc_wal_t *w)
{
    oc_ctx_t *ctx = w->ctx;
    const oc_walb_batch_t *b = &w->batch;
    size_t n = 0;
    for (size_t i = 0; i < b->nkeys; i++)
        n += oc_key_id_cacheable(b->keys[i], b->klens[i], ctx->max_key_len) != 0;
    ctx->stats->wal_keys += b->nkeys;
    ctx->stats->inval_skipped += b->nkeys - n;
    w->step = STEP_DELETES;
    w->del_next = ctx->mc ? 0 : b->nkeys;
    delete_chunk(w);
}

/* ---- visibility: a batch's deletes wait until its commits are visible --------- */

#define WAL_VISIBLE_FIRST_S 0.001 /* the first check again after this... */
#define WAL_VISIBLE_MAX_S   0.02  /* ...doubling up to this */
#define WAL_VISIBLE_LOG_S   1.0   /* a wait this long is logged */

static void visible_checked(oc_pgconn_t *pc, PGresult *res, oc_status_t st,
                            const char *err, void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    long running =
        st == OC_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)
            ? oc_walb_running(PQgetvalue(res, 0, 0), w->batch.xids, w->batch.nxids)
            : -1;
    PQclear(res);
    if (running < 0) {
        apply_failed(w, "visible",
                     st == OC_OK ? "no snapshot read (or out of memory)" : err,
                     st == OC_OK ? "the visibility check failed" : err);
        return;
    }
    double now = now_s(), waited = now - w->vis_from;
    if (running == 0) {
        if (w->vis_logged)
            oc_log_info("event=wal_commit_visible slot=%s waited_ms=%.0f", w->slot,
                        waited * 1000);
        apply_deletes(w);
        return;
    }
    if (w->vis_delay == 0)
        w->ctx->stats->wal_visibility_waits++;
    if (!w->vis_logged && waited >= WAL_VISIBLE_LOG_S) {
        w->vis_logged = 1;
        oc_log_warn(
            "event=wal_commit_invisible slot=%s waited_ms=%.0f running=%ld "
            "reason=\"decoded commits are not visible yet (synchronous replication "
            "waiting for a standby?): their invalidations wait\"",
            w->slot, waited * 1000, running);
    }
    w->vis_delay = w->vis_delay == 0                      ? WAL_VISIBLE_FIRST_S
                   : 2 * w->vis_delay > WAL_VISIBLE_MAX_S ? WAL_VISIBLE_MAX_S
                                                          : 2 * w->vis_delay;
    struct timeval tv = {0, (suseconds_t)(w->vis_delay * 1e6)};
    evtimer_add(w->vis_timer, &tv);
    sql_next(w); /* a heartbeat or a lag read meanwhile */
}

/* A check of the batch's visibility goes out (sql_next, STEP_VISIBLE). */
static void visible_check(oc_wal_t *w)
{
    w->vis_due = 0;
    w->sql_busy = 1;
    w->sql_step_at = now_s();
    /* The comparison is ours (oc_walb_running): the statement is the
     * cheapest there is (33 us against 93 for the same in SQL, unnested,
     * one client, nothing else running), and it runs once per batch. */
    if (oc_pgconn_exec(w->sql, "SELECT pg_current_snapshot()::text", 0, NULL,
                       visible_checked, w) != OC_OK) {
        w->sql_busy = 0;
        w->vis_due = 1; /* tried again at the next tick */
    }
}

static void on_vis_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_wal_t *w = arg;
    if (w->state != WAL_STREAMING || w->step != STEP_VISIBLE)
        return;
    w->vis_due = 1;
    sql_next(w);
}

/* The batch's deletes wait until every transaction of it that touched a
 * model is visible to a new snapshot. The walsender sends a commit once it
 * is in the WAL, and the committing backend leaves the running set only
 * after that (after a synchronous standby answered, under synchronous
 * replication): a delete before then lets a miss load the old row, under a
 * fresh lease, and write it back for good. One statement per batch; it
 * finds them visible at once unless a commit is waiting. */
static void visible_wait(oc_wal_t *w)
{
    if (w->batch.nxids == 0) {
        apply_deletes(w);
        return;
    }
    w->step = STEP_VISIBLE;
    w->vis_due = 1;
    w->vis_logged = 0;
    w->vis_from = now_s();
    /* its check may wait behind another statement: from now, not from the
     * last batch's (a first batch's check waiting behind wal_check counted
     * as stuck since boot, and a release then waited wal_takeover: found by
     * a review, 2026-12-07) */
    w->sql_step_at = w->vis_from;
    w->vis_delay = 0;
    sql_next(w);
}

static void apply_maybe(oc_wal_t *w)
{
    if (w->step != STEP_NONE || w->state != WAL_STREAMING || !oc_walb_ready(w->acc))
        return;
    double now = now_s();
    double wait = oc_wal_batch_wait(
        w->batch_at, now, w->ctx->conf->wal_batch_interval_ms / 1000.0, w->paused);
    if (wait > 0) {
        if (!evtimer_pending(w->batch_timer, NULL)) {
            struct timeval tv = {(time_t)wait,
                                 (suseconds_t)((wait - (time_t)wait) * 1e6) + 1};
            evtimer_add(w->batch_timer, &tv);
        }
        return;
    }
    w->batch_at = now;
    if (w->ctx->conf->wal_batch_interval_ms > 0)
        w->paced = 1; /* until applied() */
    if (oc_walb_take(w->acc, &w->batch) != OC_OK) {
        stand_by(w, WAL_RETRY_FAST_S, "out of memory");
        return;
    }
    w->batch_stream = w->stream_no;
    w->ctx->stats->wal_whole += w->batch.nwhole;
    w->ctx->stats->wal_buffer_bytes = oc_walb_bytes(w->acc);
    visible_wait(w);
}

/* ---- the regular connection: one command at a time ------------------------------ */

static void sql_done(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                     void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    if (st == OC_OK && w->stats_due == 2 && PQntuples(res) == 1 &&
        !PQgetisnull(res, 0, 0))
        w->ctx->stats->wal_lag_bytes = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    if (w->stats_due == 2)
        w->stats_due = 0;
    PQclear(res);
    if (st != OC_OK) {
        char clean[OC_ERRLEN];
        w->ctx->stats->wal_errors++;
        oc_log_warn("event=wal_query_failed reason=\"%s\"",
                    oc_log_clean(clean, sizeof(clean), err));
    }
    sql_next(w);
}

/* The problems of a wal_check() result, "; "-joined (NULL: out of memory). */
static char *problems_join(const PGresult *res)
{
    size_t len = 1;
    for (int i = 0; i < PQntuples(res); i++)
        len += (size_t)PQgetlength(res, i, 0) + 2;
    char *s = malloc(len);
    if (s == NULL)
        return NULL;
    size_t at = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        size_t n = (size_t)PQgetlength(res, i, 0);
        if (i)
            memcpy(s + at, "; ", 2), at += 2;
        memcpy(s + at, PQgetvalue(res, i, 0), n);
        at += n;
    }
    s[at] = '\0';
    return s;
}

/* wal_check() answered: n problems, "; "-joined in `now` (taken). A line
 * per change of the set of problems. */
static void problems_set(oc_wal_t *w, int n, char *now)
{
    if (n == 0) {
        if (w->problems != NULL)
            oc_log_info("event=wal_check_ok slot=%s heartbeats=resumed", w->slot);
        free(now);
        now = NULL;
    } else if (w->problems == NULL || strcmp(now, w->problems) != 0) {
        char clean[2048];
        oc_log_warn("event=wal_check_problem slot=%s problems=%d heartbeats=held "
                    "reason=\"%s\"",
                    w->slot, n, oc_log_clean(clean, sizeof(clean), now));
    }
    free(w->problems);
    w->problems = now;
    w->ctx->stats->wal_check_problems = (uint64_t)n;
}

/* What a hook without objcached.wal_check(name) is reported as: a problem,
 * since the holder cannot tell whether the publication still carries every
 * watched table's changes. */
#define WAL_HOOK_OUTDATED                                                                \
    "objcached.wal_check(name) does not exist: the hook is older than this objcached; "  \
    "install it again (objcached --install-hook -c FILE, or psql -f sql/install.sql)"

/* wal_check() came back. Whatever it reports may keep changes of a
 * watched table from reaching the slot (a table taken out of the
 * publication, publish narrowed, a row filter, a replica identity without
 * the key), and the feed cannot say which keys: while it reports anything
 * its heartbeats claim no caught_up_at (sql_feed), which stays behind, and
 * every near-cache stops answering after feed_max_lag. The messages still
 * go out: they confirm the slot, which keeps no WAL back for changes that
 * will never be decoded. A failure keeps
 * what was known, logged once until the check works again; a hook older
 * than wal_check(name) is a problem (WAL_HOOK_OUTDATED), not a failure. */
static void checked(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                    void *arg)
{
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    w->check_due = 0;
    char *now = st == OC_OK ? problems_join(res) : NULL;
    if (now != NULL) {
        w->check_failing = 0;
        problems_set(w, PQntuples(res), now);
    } else if (st != OC_OK && strcmp(oc_pgconn_sqlstate(pc), "42883") == 0 &&
               (now = strdup(WAL_HOOK_OUTDATED)) != NULL) {
        /* undefined_function: a hook installed by a release without
         * wal_check(name). Not a failure that passes: a problem, told once
         * with what to run, held until a check works (the hook installed
         * again), and not a wal_errors every 5 s. */
        w->check_failing = 0;
        problems_set(w, 1, now);
    } else {
        char clean[OC_ERRLEN];
        w->ctx->stats->wal_errors++;
        if (!w->check_failing)
            oc_log_warn(
                "event=wal_query_failed reason=\"wal_check: %s\"",
                oc_log_clean(clean, sizeof(clean), st == OC_OK ? "out of memory" : err));
        w->check_failing = 1;
    }
    PQclear(res);
    sql_next(w);
}

/* The batch's append (the WAL reader bumps the generation of a TRUNCATEd
 * model: p_bump true). */
#define WAL_APPEND_CALL                                                                  \
    "objcached.feed_append($1::text[], $2::text[], $3::text[], true, "                   \
    "to_timestamp($4::double precision), $5::timestamptz, $6)"
#define WAL_FEED_APPEND "SELECT " WAL_APPEND_CALL
/* The requeue in FROM: it runs before the append, whose caught_up_at then
 * sees its rows (test_sql_feed runs this statement). $9: the batch's first
 * commit in PostgreSQL's epoch (us), exact; NULL: nothing to hold back. */
#define WAL_REQUEUE_OLD_THEN_APPEND                                                      \
    "SELECT " WAL_APPEND_CALL " FROM objcached.requeue($7::text[], $8::text[]) r"
#define WAL_REQUEUE_THEN_APPEND                                                          \
    "SELECT " WAL_APPEND_CALL " FROM objcached.requeue($7::text[], $8::text[], "         \
    "timestamptz '2000-01-01 00:00:00+00' + $9::bigint * interval '1 microsecond') r"

static void sql_feed(oc_wal_t *w);

/* The whole-model rows owed went in (or not: nothing is confirmed, and the
 * slot sends the owing transactions again). */
static void paid(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                 void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    hand_over(w, NULL);
    PQclear(res);
    if (st != OC_OK) {
        apply_failed(w, "flush", err, err);
        return;
    }
    w->ctx->stats->wal_feed_flushes++;
    oc_walowed_clear(&w->owed);
    if (w->paid_claim) /* the batch had nothing else to say */
        applied(w);
    else
        sql_feed(w); /* the batch's own statement */
}

/* wal_feed_keys = off: one whole-model row per model owed, the generation
 * as it is (memcached keeps its entries; near-caches drop the model). A
 * batch with nothing else to append makes its claim of caught_up_at in the
 * same statement: one feed commit per heartbeat, not two. */
static void pay_owed(oc_wal_t *w)
{
    const oc_walowed_t *o = &w->owed;
    const oc_walb_batch_t *b = &w->batch;
    w->paid_claim = b->nkeys + b->nwhole == 0 && w->nfailed == 0;
    size_t *lens = malloc(o->n * sizeof(*lens));
    char *lit = NULL;
    if (lens != NULL) {
        for (size_t i = 0; i < o->n; i++)
            lens[i] = strlen(o->models[i]);
        lit = oc_sql_array(o->models, lens, o->n);
    }
    free(lens);
    if (lit == NULL) {
        stand_by(w, WAL_RETRY_FAST_S, "out of memory");
        return;
    }
    snprintf(w->num[0], sizeof(w->num[0]), "%.6f",
             o->commit_ts ? oc_pgo_time_to_unix(o->commit_ts) : 0.0);
    const char *claim = w->paid_claim && b->caught_up_at[0] ? b->caught_up_at : NULL;
    const char *p[4] = {lit, o->commit_ts ? w->num[0] : NULL, claim, w->writer};
    w->sql_busy = 1;
    if (claim)
        w->ctx->stats->wal_heartbeats++;
    own_sent(w, 0); /* whole-model rows and claims: polled */
    if (oc_pgconn_exec(w->sql,
                       "SELECT objcached.feed_append(NULL, NULL, $1::text[], false, "
                       "to_timestamp($2::double precision), $3::timestamptz, $4)",
                       4, p, paid, w) != OC_OK)
        w->sql_busy = 0;
    free(lit); /* copied by the send */
}

/* wal_feed_keys = off and every delete of the batch done: its keys are not
 * appended, their models are owed (their near-cache entries are dropped
 * here at once, as the deletes did; the sampler hears of them as the
 * follower's own append would have told it). */
static oc_status_t owe_keys(oc_wal_t *w)
{
    oc_ctx_t *ctx = w->ctx;
    oc_walb_batch_t *b = &w->batch;
    if (oc_walowed_add(&w->owed, b->models, b->nkeys, b->commit_ts, now_s()) != OC_OK)
        return OC_ENOMEM;
    for (size_t i = 0; i < b->nkeys; i++) {
        const oc_model_conf_t *m =
            oc_conf_model(ctx->conf, b->models[i], strlen(b->models[i]));
        if (m != NULL)
            oc_sampler_offer_inval(ctx->sampler, (size_t)(m - ctx->conf->models),
                                   b->keys[i], b->klens[i]);
    }
    ctx->stats->wal_feed_keys_owed += b->nkeys;
    b->nkeys = 0; /* owed, not appended: the batch is applied without them */
    return OC_OK;
}

static void sql_feed(oc_wal_t *w)
{
    oc_walb_batch_t *b = &w->batch;
    /* While wal_check reports problems the heartbeat's instant proves
     * nothing (see checked): the batch claims no caught_up_at, yet is
     * applied and confirmed, so the slot keeps no WAL back for changes that
     * will never be decoded anyway. */
    if (w->problems != NULL)
        b->caught_up_at[0] = '\0';
    /* A batch of an earlier stream (its deletes came back after a restart)
     * claims nothing: the restart forgot what that stream owed, and its
     * transactions come again (found by a review). */
    if (w->batch_stream != w->stream_no)
        b->caught_up_at[0] = '\0';
    if (w->feed_keys != w->ctx->conf->wal_feed_keys) { /* a reload */
        w->feed_keys = w->ctx->conf->wal_feed_keys;
        oc_log_info("event=wal_feed_keys slot=%s feed_keys=%s owed_models=%zu", w->slot,
                    w->feed_keys ? "on" : "off", w->owed.n);
    }
    if (!w->feed_keys && b->nkeys > 0 && w->nfailed == 0 && owe_keys(w) != OC_OK) {
        stand_by(w, WAL_RETRY_FAST_S, "out of memory");
        return;
    }
    /* What is owed goes in before anything that claims or appends (a claim
     * vouches for every earlier commit), before the map is read again (the
     * stream restarts from the confirmed position, which must be past the
     * transaction that changed the models, or it would restart before it
     * for ever: found by a review), and at the latest with the first batch
     * a heartbeat after it was first owed (until then the slot is not
     * confirmed). */
    int must = b->nkeys + b->nwhole > 0 || oc_walb_remap(w->acc);
    if (oc_walowed_due(&w->owed, b->caught_up_at[0] != '\0', must, now_s(),
                       w->ctx->conf->wal_heartbeat_ms / 1000.0)) {
        pay_owed(w);
        return;
    }
    if (b->nkeys + b->nwhole == 0) {
        if (b->caught_up_at[0] == '\0') { /* only other tables' changes */
            applied(w);
            return;
        }
        const char *p[2] = {b->caught_up_at, w->writer};
        w->sql_busy = 1;
        w->ctx->stats->wal_heartbeats++;
        own_sent(w, 0); /* its proof is polled */
        if (oc_pgconn_exec(w->sql, "SELECT objcached.feed_heartbeat($1::timestamptz, $2)",
                           2, p, fed, w) != OC_OK)
            w->sql_busy = 0;
        return;
    }
    size_t nfailed;
    int hold;
    if (feed_literals(w, &nfailed, &hold) != OC_OK) {
        stand_by(w, WAL_RETRY_FAST_S, "out of memory");
        return;
    }
    snprintf(w->num[0], sizeof(w->num[0]), "%.6f",
             b->commit_ts ? oc_pgo_time_to_unix(b->commit_ts) : 0.0);
    snprintf(w->num[2], sizeof(w->num[2]), "%" PRId64, b->first_commit_ts);
    const char *p[9] = {w->lit[0],
                        w->lit[1],
                        w->lit[2],
                        b->commit_ts ? w->num[0] : NULL,
                        b->caught_up_at[0] ? b->caught_up_at : NULL,
                        w->writer,
                        w->lit[3],
                        w->lit[4],
                        hold && b->first_commit_ts ? w->num[2] : NULL};
    w->sql_busy = 1;
    if (b->caught_up_at[0])
        w->ctx->stats->wal_heartbeats++;
    /* requeue() only when memcached failed some deletes: even with empty
     * arrays it costs the batch's transaction about as much as the append.
     * It comes first: its rows keep the batch's first commit time and hold
     * the append's caught_up_at back to it (a sidecar may refill its
     * near-cache from memcached's old value until the retry); an older
     * hook's requeue has no since. Separate literals: oc_pgconn_exec knows
     * a statement by its address. */
    const char *sql = !nfailed       ? WAL_FEED_APPEND
                      : w->has_since ? WAL_REQUEUE_THEN_APPEND
                                     : WAL_REQUEUE_OLD_THEN_APPEND;
    int np = !nfailed ? 6 : w->has_since ? 9 : 8;
    /* One row and no caught_up_at claimed: the follower takes it (a claim
     * is a new proof of freshness, which its poll reads). */
    own_sent(w, !nfailed && !b->caught_up_at[0] && oc_wal_one_row(b));
    if (oc_pgconn_exec(w->sql, sql, np, p, fed, w) != OC_OK)
        w->sql_busy = 0;
}

/* The next thing the regular connection does: the batch's steps first,
 * then a heartbeat, the slot's lag, a prune. */
static void sql_next(oc_wal_t *w)
{
    if (w->state != WAL_STREAMING || w->sql == NULL || w->sql_busy ||
        !oc_pgconn_idle(w->sql))
        return;
    if (w->step == STEP_FEED) {
        sql_feed(w);
        return;
    }
    if (w->step == STEP_VISIBLE && w->vis_due) {
        visible_check(w);
        return;
    }
    if (w->step == STEP_GENS) {
        w->sql_busy = 1;
        if (oc_pgconn_query(w->sql, "SELECT model, generation FROM objcached.models", 0,
                            NULL, gens_read, w) != OC_OK)
            w->sql_busy = 0;
        return;
    }
    const char *sql = NULL;
    const char *p[1] = {w->slot};
    int np = 0;
    if (w->check_due == 1) {
        w->check_due = 2;
        w->sql_busy = 1;
        if (oc_pgconn_exec(w->sql, "SELECT problem FROM objcached.wal_check($1::name)", 1,
                           p, checked, w) != OC_OK)
            w->sql_busy = 0;
        return;
    }
    /* While a batch waits for its commits to be visible, no write of ours
     * (a heartbeat, a prune): under synchronous replication to a standby
     * that does not answer, it would wait as the writers do and hold the
     * connection the visibility checks need (found by a review). */
    if (w->hb_due && w->step != STEP_VISIBLE) {
        w->hb_due = 0;
        /* The argument is evaluated before the message is written, so every
         * transaction that returned from COMMIT before that instant is in
         * the WAL before the message's commit record. The token is a
         * parameter: not in the statement's text, which pg_stat_activity
         * shows. */
        sql = "SELECT pg_logical_emit_message(true, 'objcached', $1 || ' ' || "
              "clock_timestamp()::text)";
        p[0] = w->hb_token;
        np = 1;
    } else if (w->stats_due == 1) {
        w->stats_due = 2;
        sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
              "FROM pg_replication_slots WHERE slot_name = $1";
        np = 1;
    } else if (w->prune_due && w->step != STEP_VISIBLE) {
        w->prune_due = 0;
        snprintf(w->num[1], sizeof(w->num[1]), "%u seconds", w->ctx->conf->feed_keep_s);
        p[0] = w->num[1];
        sql = "SELECT objcached.feed_prune($1::interval)";
        np = 1;
    }
    if (sql == NULL)
        return;
    w->sql_busy = 1;
    if (oc_pgconn_exec(w->sql, sql, np, np ? p : NULL, sql_done, w) != OC_OK)
        w->sql_busy = 0;
}

void oc_wal_sched_start(oc_wal_sched_t *s, double now)
{
    s->next_hb = s->next_status = now;
    s->next_stats = now + OC_WAL_STATS_EVERY_S;
    s->next_prune = now + OC_WAL_PRUNE_EVERY_S;
}

unsigned oc_wal_due(oc_wal_sched_t *s, double now, double heartbeat_s, int stats_busy)
{
    unsigned due = 0;
    if (now >= s->next_hb) {
        due |= OC_WAL_DUE_HEARTBEAT;
        s->next_hb = now + heartbeat_s;
    }
    if (now >= s->next_status) {
        due |= OC_WAL_DUE_STATUS;
        s->next_status = now + OC_WAL_STATUS_EVERY_S;
    }
    if (now >= s->next_stats && !stats_busy) {
        due |= OC_WAL_DUE_STATS;
        s->next_stats = now + OC_WAL_STATS_EVERY_S;
    }
    if (now >= s->next_prune) {
        due |= OC_WAL_DUE_PRUNE;
        s->next_prune = now + OC_WAL_PRUNE_EVERY_S;
    }
    return due;
}

/* The holder's periodic work, every wal_heartbeat. */
static void tick(oc_wal_t *w)
{
    double now = now_s(), takeover = w->ctx->conf->wal_takeover_ms / 1000.0;
    /* Not reading by choice (memcached deletes out, too many keys
     * pending): what the walsender sent waits in the socket, which is no
     * silence. A feed statement is waited for as the stream is: one that
     * does not come back is silence too (the regular connection cut off). */
    if (w->step == STEP_DELETES || w->paused)
        w->heard_at = now;
    else if (w->step != STEP_NONE && w->heard_at < w->sql_step_at)
        w->heard_at = w->sql_step_at;
    /* (bytes waiting in the socket: this process was frozen, not cut off) */
    if (oc_wal_stream_silent(w->heard_at, now, takeover, w->sender_timeout_s) &&
        !oc_pgconn_input_waiting(w->repl)) {
        w->ctx->stats->wal_errors++;
        stand_by(w, WAL_RETRY_FAST_S, "the stream is silent: the connection is cut off");
        return;
    }
    unsigned due = oc_wal_due(&w->sched, now, w->ctx->conf->wal_heartbeat_ms / 1000.0,
                              w->stats_due != 0);
    if (due & OC_WAL_DUE_HEARTBEAT)
        w->hb_due = 1;
    if ((due & OC_WAL_DUE_STATUS) && !batch_stuck(w, now))
        /* a quiet stream: ask for a keepalive */
        send_status(w, now - w->heard_at >= OC_WAL_STATUS_EVERY_S);
    if (due & OC_WAL_DUE_STATS) {
        w->stats_due = 1;
        if (!w->check_due)
            w->check_due = 1; /* at the lag's cadence: only the holder runs it */
    }
    if (due & OC_WAL_DUE_PRUNE)
        w->prune_due = 1;
    sql_next(w);
    arm(w, w->ctx->conf->wal_heartbeat_ms / 1000.0);
}

/* ---- taking the slot ------------------------------------------------------------------
 */

static void streaming(oc_wal_t *w)
{
    oc_ctx_t *ctx = w->ctx;
    set_state(w, WAL_STREAMING);
    ctx->stats->wal_takeovers++;
    w->down_why[0][0] = w->down_why[1][0] = w->standby_why[0] = '\0';
    w->feed_keys = ctx->conf->wal_feed_keys;
    oc_log_info("event=wal_holding slot=%s feed_keys=%s", w->slot,
                w->feed_keys ? "on" : "off");
    w->heard_at = now_s();
    oc_wal_sched_start(&w->sched, now_s());
    w->check_due = 1; /* before the first heartbeat */
    /* The holder drains the outbox too (requeued keys, attach's whole-model
     * rows, trigger-mode models). */
    if (ctx->inval == NULL && ctx->conf->inval_poll_ms > 0) {
        char err[OC_ERRLEN] = "";
        if ((ctx->inval = oc_inval_new(ctx, err)) == NULL && err[0])
            oc_log_error("event=wal_inval_failed reason=\"%s\"", err);
    }
    evtimer_del(w->timer);
    tick(w);
}

static void start_stream(oc_wal_t *w);
static void recreate(oc_wal_t *w, int drop, const char *why);

static void terminated(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                       void *arg)
{
    (void)pc, (void)err;
    oc_wal_t *w = arg;
    PQclear(res);
    w->sql_busy = 0;
    stand_by(w, st == OC_OK ? 0.5 : w->ctx->conf->wal_takeover_ms / 1000.0,
             "terminated a stuck holder");
}

/* How long the holder has been silent as far as this sidecar can tell: the
 * feed's staleness, but never more than this sidecar has been watching
 * (a sidecar just started has a feed not yet fresh: INFINITY, which says
 * nothing about the holder) and 0 while the feed cannot be read at all. */
static double holder_silence(const oc_wal_t *w, double now)
{
    const oc_ctx_t *ctx = w->ctx;
    if (ctx->feed == NULL || !ctx->stats->feed_connected)
        return 0;
    return oc_wal_silence(1, oc_feed_staleness(ctx->feed, now), now - w->born);
}

double oc_wal_silence(int feed_up, double stale, double watched)
{
    if (!feed_up)
        return 0;
    return stale < watched ? stale : watched;
}

double oc_wal_watch_stalled(oc_wal_watch_t *wt, const char *lsn, double now)
{
    if (!wt->seen || strcmp(lsn, wt->lsn) != 0) {
        snprintf(wt->lsn, sizeof(wt->lsn), "%s", lsn);
        wt->at = now;
        wt->seen = 1;
    }
    return now - wt->at;
}

double oc_wal_watch_holder(oc_wal_watch_t *wt, const char *lsn, const char *busy_at,
                           double now)
{
    int replaying =
        busy_at != NULL && (busy_at[0] == '\0' || strcmp(busy_at, wt->busy_at) == 0);
    snprintf(wt->busy_at, sizeof(wt->busy_at), "%s", busy_at ? busy_at : "");
    double stalled = oc_wal_watch_stalled(wt, lsn, now);
    if (replaying) {
        wt->at = now;
        stalled = 0;
    }
    return stalled;
}

int oc_wal_stream_silent(double heard_at, double now, double takeover_s,
                         double sender_timeout_s)
{
    if (sender_timeout_s <= 0)
        return 0;
    double limit = 2 * takeover_s > sender_timeout_s ? 2 * takeover_s : sender_timeout_s;
    return now - heard_at > limit;
}

int oc_wal_should_terminate(double stalled, double takeover_s, long pid)
{
    return stalled > 2 * takeover_s && pid > 0;
}

/* The slot's state, read while another sidecar holds it: terminate the
 * holder only if neither its confirmed position nor its walsender's last
 * reply from it (reply_time) has moved for 2 x wal_takeover as seen from
 * here. The feed's staleness alone is not enough: a standby that reads the
 * feed from a lagging replica sees it stale while the holder is fine. Nor
 * is the confirmed position: a live holder confirms at least every
 * heartbeat, but not while it receives a transaction that takes longer
 * than that to stream (its heartbeats wait behind it); its status every
 * second, which the walsender reads as it sends, shows it alive then, and
 * a walsender busy decoding one transaction (WAL_SENDER_BUSY, its sent
 * position where it was at the last look: oc_wal_watch_holder) counts as
 * moving. A frozen or cut-off holder's replies stop, and so do those of a
 * holder whose feed statement has not come back for 2 x wal_takeover
 * (tick). (Not the received position, write_lsn: a keepalive may have
 * carried it past the whole transaction before its changes came.) */
static void slot_checked(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                         void *arg)
{
    (void)pc, (void)err;
    oc_wal_t *w = arg;
    double takeover = w->ctx->conf->wal_takeover_ms / 1000.0, now = now_s();
    w->sql_busy = 0;
    if (st != OC_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 1)) {
        PQclear(res);
        stand_by(w, takeover, "another sidecar holds the slot");
        return;
    }
    const char *shown = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
    long pid = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    const char *busy_at = PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2);
    double stalled = oc_wal_watch_holder(&w->seen, shown, busy_at, now);
    PQclear(res);
    if (oc_wal_should_terminate(stalled, takeover, pid)) {
        char spid[24];
        snprintf(spid, sizeof(spid), "%ld", pid);
        const char *p[2] = {spid, w->slot};
        oc_log_warn(
            "event=wal_holder_terminated slot=%s pid=%ld stale_s=%.1f stalled_s=%.1f",
            w->slot, pid, holder_silence(w, now), stalled);
        w->sql_busy = 1;
        /* Only while that process still holds the slot: the pid was read by
         * the statement before, and a process that ended since may have
         * given its pid to another session (found by a review). */
        if (oc_pgconn_query(w->sql,
                            "SELECT pg_terminate_backend(active_pid) FROM "
                            "pg_catalog.pg_replication_slots WHERE slot_name = $2 "
                            "AND active_pid = $1::integer",
                            2, p, terminated, w) == OC_OK)
            return;
        w->sql_busy = 0;
    }
    stand_by(w, takeover, "another sidecar holds the slot");
}

oc_wal_end_t oc_wal_end_kind(const char *sqlstate, int began)
{
    if (sqlstate == NULL)
        return OC_WAL_END_OTHER;
    /* object_in_use: slot.c's "replication slot ... is active for PID" */
    if (strcmp(sqlstate, "55006") == 0)
        return OC_WAL_END_HELD;
    /* undefined_object: before the stream begins, slot.c's "replication
     * slot ... does not exist"; once it streams, pgoutput's "publication
     * ... does not exist" (it reads the publications at the first change) */
    if (strcmp(sqlstate, "42704") == 0 && !began)
        return OC_WAL_END_SLOT_MISSING;
    /* object_not_in_prerequisite_state: an invalidated slot (walsender.c's
     * "cannot read from logical replication slot", logical.c's "can no
     * longer get changes from replication slot"), but also a slot of
     * another database, a physical slot, wal_level below logical: the
     * code cannot tell them apart, pg_replication_slots can (stream_ended) */
    if (strcmp(sqlstate, "55000") == 0)
        return OC_WAL_END_SLOT_UNUSABLE;
    return OC_WAL_END_OTHER;
}

/* The holder's walsender (pg_stat_activity a, when this role may see its
 * details) is at work, waiting neither on its client (WalSenderWriteData,
 * WalSenderWaitForWAL) nor idle in its loop (WalSenderMain): it decodes.
 * Inside one transaction's commit (its sent position stands still) it
 * reads its holder's replies only every half wal_sender_timeout, unless
 * its sends block (a fast holder keeps them from blocking), so neither the
 * position nor reply_time moves, yet the holder is fine: counted as moving
 * (slot_checked). Between transactions it reads them at each WAL record:
 * a walsender that decodes more than it is sent (other tables' writes)
 * may never wait, and its frozen holder's replies stand still. A frozen or
 * cut-off holder's walsender that sends ends up waiting on it. */
#define WAL_SENDER_BUSY                                                                  \
    "a.backend_type = 'walsender' AND a.query <> '<insufficient privilege>' AND "        \
    "(a.wait_event_type IS NULL OR a.wait_event_type NOT IN ('Client', 'Activity'))"

/* START_REPLICATION was refused for an unusable slot (55000): made again
 * if it is invalidated (wal_status 'lost'), else that error stands. */
static void lost_checked(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                         void *arg)
{
    (void)pc, (void)err;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    int lost = st == OC_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) &&
               strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (lost) {
        recreate(w, 1, "invalidated: it fell more than max_slot_wal_keep_size behind");
        return;
    }
    w->ctx->stats->wal_errors++;
    stand_by(w, w->ctx->conf->wal_takeover_ms / 1000.0, w->unusable_why);
}

/* START_REPLICATION ended: another holder has the slot, the slot is gone,
 * or the stream broke. */
static void stream_ended(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                         void *arg)
{
    oc_wal_t *w = arg;
    oc_ctx_t *ctx = w->ctx;
    PQclear(res);
    const char *why = st == OC_OK ? "the server ended the stream" : err;
    double takeover = ctx->conf->wal_takeover_ms / 1000.0;
    oc_wal_end_t kind =
        oc_wal_end_kind(st == OC_OK ? NULL : oc_pgconn_sqlstate(pc), w->began);
    if (kind == OC_WAL_END_HELD) {
        if (holder_silence(w, now_s()) > takeover && w->sql_up && !w->sql_busy) {
            /* Its walsender is alive but the feed says its heartbeats
             * stopped: a holder stuck (or cut off) that PostgreSQL has not
             * noticed yet, or only our view of the feed lags. Ask the slot. */
            const char *p[1] = {w->slot};
            w->sql_busy = 1;
            if (oc_pgconn_query(
                    w->sql,
                    "SELECT COALESCE(s.confirmed_flush_lsn::text, '') || ' ' || "
                    "COALESCE(r.reply_time::text, ''), s.active_pid, CASE "
                    "WHEN " WAL_SENDER_BUSY " THEN COALESCE(r.sent_lsn::text, '') END "
                    "FROM pg_catalog.pg_replication_slots s "
                    "LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid "
                    "LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = s.active_pid "
                    "WHERE s.slot_name = $1",
                    1, p, slot_checked, w) == OC_OK)
                return;
            w->sql_busy = 0;
        }
        stand_by(w, takeover, "another sidecar holds the slot");
        return;
    }
    if (w->began && strcmp(oc_pgconn_sqlstate(pc), "42704") == 0) {
        /* pgoutput's "publication does not exist", at the first change
         * after it was dropped. Retried at once it fails at once, for good
         * even once the publication is made again (the slot decodes with
         * the catalog of the change's time): the next try asks first. */
        w->pub_missing = 1;
        ctx->stats->wal_errors++;
        stand_by(w, takeover, why);
        return;
    }
    if (kind == OC_WAL_END_SLOT_MISSING) {
        recreate(w, 0, "it does not exist");
        return;
    }
    if (kind == OC_WAL_END_SLOT_UNUSABLE && w->sql_up && !w->sql_busy) {
        /* Only an invalidated slot is dropped: not another database's
         * slot of that name, nor ours while wal_level is wrong. */
        const char *p[1] = {w->slot};
        snprintf(w->unusable_why, sizeof(w->unusable_why), "%s", why);
        w->sql_busy = 1;
        if (oc_pgconn_query(
                w->sql,
                "SELECT wal_status = 'lost' FROM pg_catalog.pg_replication_slots "
                "WHERE slot_name = $1 AND database = current_database()",
                1, p, lost_checked, w) == OC_OK)
            return;
        w->sql_busy = 0;
    }
    ctx->stats->wal_errors++;
    stand_by(w, w->state == WAL_STREAMING ? WAL_RETRY_FAST_S : takeover, why);
}

/* START_REPLICATION was accepted (COPY BOTH began): the slot is ours. */
static void on_begin(oc_pgconn_t *pc, void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->began = 1;
    if (w->state == WAL_STARTING)
        streaming(w);
}

static void pub_checked(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                        void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    int exists = st == OC_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) &&
                 strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (st != OC_OK) {
        w->ctx->stats->wal_errors++;
        stand_by(w, w->ctx->conf->wal_takeover_ms / 1000.0, err);
        return;
    }
    if (!exists) { /* nothing to stream until it is made again */
        w->ctx->stats->wal_errors++;
        stand_by(w, w->ctx->conf->wal_takeover_ms / 1000.0,
                 "publication objcached does not exist: run objcached --install-hook");
        return;
    }
    /* Made again since: what was written while it did not exist cannot be
     * decoded from this slot; a new slot, and every WAL model goes whole */
    w->pub_missing = 0;
    recreate(w, 1, "publication objcached was dropped: the slot cannot decode past it");
}

static void start_stream(oc_wal_t *w)
{
    if (w->pub_missing && w->sql_up && !w->sql_busy) {
        w->sql_busy = 1;
        set_state(w, WAL_STARTING);
        if (oc_pgconn_query(w->sql,
                            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication "
                            "WHERE pubname = 'objcached')",
                            0, NULL, pub_checked, w) == OC_OK)
            return;
        w->sql_busy = 0;
    }
    char sql[256];
    snprintf(sql, sizeof(sql),
             "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (proto_version '1', "
             "publication_names '\"objcached\"', messages 'true')",
             w->slot);
    set_state(w, WAL_STARTING);
    oc_walb_restart(w->acc);
    /* Nothing of this stream is received or applied yet: its statuses
     * confirm nothing (0) until its first batch is applied. */
    w->stream_no++;
    w->began = 0;
    w->received_lsn = w->applied_lsn = 0;
    if (oc_pgconn_stream(w->repl, sql, on_begin, on_data, stream_ended, w) != OC_OK)
        stand_by(w, WAL_RETRY_FAST_S, "cannot send START_REPLICATION");
}

static void mapped_gens(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                        void *arg);

/* ---- a slot dropped or invalidated: make it again ------------------------------------
 */

static void bumped(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                   void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    PQclear(res);
    w->sql_busy = 0;
    w->own = 0;
    hand_over(w, NULL); /* rows of every model: polled */
    if (st != OC_OK) {
        w->ctx->stats->wal_errors++;
        stand_by(w, WAL_RETRY_FAST_S, err);
        return;
    }
    set_state(w, WAL_GENS);
    w->sql_busy = 1;
    if (oc_pgconn_query(w->sql, WAL_GENS_AND_PROBE, 0, NULL, mapped_gens, w) != OC_OK)
        not_sent(w, "the generations");
}

/* The slot exists again (from now): every wal model goes whole, since what
 * changed while there was none cannot be known. */
static void created(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                    void *arg)
{
    oc_wal_t *w = arg;
    PQclear(res);
    /* duplicate_object: another sidecar made it first (the only 42710 of
     * CREATE_REPLICATION_SLOT); it exists from now all the same */
    if (st != OC_OK && strcmp(oc_pgconn_sqlstate(pc), "42710") != 0) {
        w->ctx->stats->wal_errors++;
        stand_by(w, w->ctx->conf->wal_takeover_ms / 1000.0, err);
        return;
    }
    w->ctx->stats->wal_slot_recreated++;
    oc_log_error("event=wal_slot_recreated slot=%s note=\"every model read from the WAL "
                 "is invalidated whole (new generations)\"",
                 w->slot);
    const char *p[1] = {w->writer};
    w->sql_busy = 1;
    own_sent(w, 0);
    if (oc_pgconn_query(
            w->sql,
            "SELECT objcached.feed_append(NULL, NULL, (SELECT array_agg(model) "
            "FROM objcached.models WHERE via = 'wal'), true, NULL, NULL, $1)",
            1, p, bumped, w) != OC_OK)
        not_sent(w, "the new generations");
}

static void dropped(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                    void *arg)
{
    (void)pc, (void)st, (void)err; /* "does not exist" is fine too */
    oc_wal_t *w = arg;
    PQclear(res);
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput",
             w->slot);
    if (oc_pgconn_query(w->repl, sql, 0, NULL, created, w) != OC_OK)
        stand_by(w, WAL_RETRY_FAST_S, "cannot create the slot");
}

static void recreate(oc_wal_t *w, int drop, const char *why)
{
    char sql[128];
    set_state(w, WAL_RECREATING);
    oc_log_error("event=wal_slot_lost slot=%s reason=\"%s\"", w->slot, why);
    if (!drop) {
        dropped(NULL, NULL, OC_OK, NULL, w);
        return;
    }
    snprintf(sql, sizeof(sql), "DROP_REPLICATION_SLOT \"%s\"", w->slot);
    if (oc_pgconn_query(w->repl, sql, 0, NULL, dropped, w) != OC_OK)
        stand_by(w, WAL_RETRY_FAST_S, "cannot drop the slot");
}

/* ---- mapping, then generations, then the stream ---------------------------------------
 */

/* A role without pg_read_all_stats reads NULL for every column of
 * pg_stat_replication but pid: as a standby it cannot see the holder's
 * replies, only the slot's confirmed position, and terminates a holder
 * that streams a transaction for longer than 2 x wal_takeover, then the
 * next one, for ever (docs/wal.md). Said once, at the first try. */
static void warn_replies_hidden(oc_wal_t *w)
{
    if (w->warned_replies)
        return;
    w->warned_replies = 1;
    oc_log_warn(
        "event=wal_replies_hidden slot=%s note=\"this role is not a member of "
        "pg_read_all_stats: as a standby it cannot see the holder's replies and may "
        "terminate a holder that streams a long transaction\"",
        w->slot);
}

static void mapped_gens(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                        void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    if (st != OC_OK || gens_load(w, res) != 0) {
        PQclear(res);
        stand_by(w, w->ctx->conf->wal_takeover_ms / 1000.0,
                 st != OC_OK ? err : "out of memory");
        return;
    }
    w->has_since =
        PQntuples(res) > 0 && PQnfields(res) > 2 && PQgetvalue(res, 0, 2)[0] == 't';
    /* no model (no row): no silence watch, and nothing to invalidate */
    w->sender_timeout_s = PQntuples(res) > 0 && PQnfields(res) > 3
                              ? strtod(PQgetvalue(res, 0, 3), NULL) / 1000.0
                              : 0;
    if (PQntuples(res) > 0 && PQnfields(res) > 4 && PQgetvalue(res, 0, 4)[0] == 'f')
        warn_replies_hidden(w);
    PQclear(res);
    if (w->state == WAL_GENS && w->repl_up)
        start_stream(w);
}

static void mapped(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                   void *arg)
{
    (void)pc;
    oc_wal_t *w = arg;
    w->sql_busy = 0;
    if (st != OC_OK) {
        PQclear(res);
        stand_by(w, w->ctx->conf->wal_takeover_ms / 1000.0, err);
        return;
    }
    oc_walb_map_clear(w->acc);
    for (int i = 0; i < PQntuples(res); i++)
        if (oc_walb_map_add(w->acc, (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10),
                            PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1),
                            PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2)) !=
            OC_OK) {
            PQclear(res);
            stand_by(w, WAL_RETRY_FAST_S, "out of memory");
            return;
        }
    PQclear(res);
    set_state(w, WAL_GENS);
    w->sql_busy = 1;
    if (oc_pgconn_query(w->sql, WAL_GENS_AND_PROBE, 0, NULL, mapped_gens, w) != OC_OK)
        not_sent(w, "the generations");
}

/* Both connections up: which relations are which models (and every other
 * table of the publication, known and ignored). */
static void both_up(oc_wal_t *w)
{
    if (!w->repl_up || !w->sql_up || w->state != WAL_CONNECTING)
        return;
    set_state(w, WAL_MAPPING);
    w->sql_busy = 1;
    if (oc_pgconn_query(
            w->sql,
            "SELECT relid, model, key_column FROM objcached.wal_tables() UNION ALL "
            "SELECT format('%I.%I', p.schemaname, p.tablename)::regclass::oid, NULL, "
            "NULL FROM pg_publication_tables p WHERE p.pubname = 'objcached'",
            0, NULL, mapped, w) != OC_OK)
        not_sent(w, "the publication's tables");
}

static void on_up(oc_pgconn_t *pc, void *owner)
{
    oc_wal_t *w = owner;
    if (pc == w->repl)
        w->repl_up = 1;
    else if (pc == w->sql)
        w->sql_up = 1;
    else
        return; /* a connection of an earlier try, on its way to the reaper */
    w->down_why[pc == w->sql][0] = '\0'; /* its next failure is news */
    both_up(w);
}

static void on_down(oc_pgconn_t *pc, const char *err, void *owner)
{
    oc_wal_t *w = owner;
    if (pc != w->repl && pc != w->sql)
        return; /* a connection of an earlier try, on its way to the reaper */
    snprintf(w->down_why[pc == w->sql], OC_ERRLEN, "%s", err);
    /* Either connection lost: the stream and what it promised go with it;
     * try again soon (the slot is free once our walsender exits). */
    if (w->state != WAL_STANDBY)
        stand_by(w, WAL_RETRY_FAST_S, err);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_wal_t *w = arg;
    for (int i = 0; i < 2; i++) {
        oc_pgconn_free(w->dead[i]);
        w->dead[i] = NULL;
    }
}

static void wal_start_try(oc_wal_t *w)
{
    oc_ctx_t *ctx = w->ctx;
    static const oc_pgconn_hooks_t hooks = {.up = on_up, .down = on_down};
    const oc_pgconn_opts_t repl_opts = {.app_name = "objcached-wal",
                                        .replication = 1,
                                        .last_error = w->down_why[0],
                                        .stats = ctx->stats};
    const oc_pgconn_opts_t sql_opts = {
        .app_name = "objcached-wal", .last_error = w->down_why[1], .stats = ctx->stats};
    const char *conninfo =
        ctx->conf->wal_conninfo[0] ? ctx->conf->wal_conninfo : ctx->conf->conninfo;
    char *session = oc_sql_session(ctx->conf);
    /* stand_by retired the last try's; never overwrite (and leak) a live one */
    retire_conns(w);
    w->tried = 1;
    w->tried_at = now_s();
    set_state(w, WAL_CONNECTING);
    w->repl =
        session ? oc_pgconn_new(ctx->base, conninfo, &repl_opts, "", &hooks, w) : NULL;
    w->sql = session ? oc_pgconn_new(ctx->base, conninfo, &sql_opts, session, &hooks, w)
                     : NULL;
    free(session);
    if (w->repl == NULL || w->sql == NULL) {
        stand_by(w, WAL_RETRY_FAST_S, "out of memory");
        return;
    }
    /* the watchdog of this try (on_timer): every step has a callback, but a
     * step that waits on a connection that never answers must not wait for
     * good */
    evtimer_del(w->timer);
    arm(w, WAL_TRY_LIMIT_FACTOR * ctx->conf->wal_takeover_ms / 1000.0);
}

int oc_wal_try_overdue(double since_try, double limit_s)
{
    return since_try >= limit_s;
}

int oc_wal_try_now(int tried, double stale, double since_try, double takeover_s)
{
    return !tried || stale > takeover_s || since_try > WAL_RECHECK_FACTOR * takeover_s;
}

double oc_wal_batch_wait(double last, double now, double interval_s, int paused)
{
    if (paused || interval_s <= 0 || last <= 0 || now < last)
        return 0;
    double wait = last + interval_s - now;
    return wait > 0 ? wait : 0;
}

double oc_wal_pace_wait(double last, double now, double interval_s)
{
    double wait = oc_wal_batch_wait(last, now, interval_s, 0);
    if (wait <= 0)
        wait = interval_s;
    return wait < OC_WAL_PACE_MAX_S ? wait : OC_WAL_PACE_MAX_S;
}

int oc_wal_over_limit(size_t pending, uint32_t max_txn_keys)
{
    return pending > (size_t)max_txn_keys * WAL_PAUSE_FACTOR;
}

uint64_t oc_wal_lag_ms(double now_unix, double commit_unix)
{
    double lag = now_unix - commit_unix;
    return lag > 0 ? (uint64_t)(lag * 1000) : 0;
}

/* The end of a pause: read what the stream holds, then (kick) apply the
 * next batch if it is ready. */
static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_wal_t *w = arg;
    /* A timer armed before a batch started (the batch wait, then a reload
     * or the clock) must not resume reading under it: applied() does. */
    if (w->state != WAL_STREAMING || w->step != STEP_NONE)
        return;
    w->paced = 0;
    set_reading(w);
    kick_soon(w);
}

/* After a burst of the stream: apply if a batch is due, then pace. A burst
 * that read something (but started no batch) pauses reading until the
 * batch wait ends, or for wal_batch_interval; a kick that read nothing
 * leaves the stream read as it comes, so an idle holder sleeps. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_wal_t *w = arg;
    w->kick_pending = 0;
    if (w->state != WAL_STREAMING)
        return;
    int got = w->got_data;
    w->got_data = 0;
    if (got)
        w->ctx->stats->wal_stream_reads++;
    apply_maybe(w);
    if (w->state != WAL_STREAMING)
        return;
    if (w->step != STEP_NONE) { /* a batch started: not read until applied() */
        set_reading(w);
        return;
    }
    double interval = w->ctx->conf->wal_batch_interval_ms / 1000.0;
    /* Not paced: a quiet stream (read as it comes), a transaction being
     * received (its commit is what a batch waits for: pausing inside it
     * only delays it, and a 100,000-row one would come in one libpq buffer
     * per interval), or more bytes in the socket than this read took
     * (the stream is behind: catch up at full speed). */
    if (interval <= 0 || w->paused || !got || oc_walb_in_txn(w->acc) ||
        oc_pgconn_input_waiting(w->repl))
        return;
    double wait = oc_wal_pace_wait(w->batch_at, now_s(), interval);
    struct timeval tv = {(time_t)wait, (suseconds_t)((wait - (time_t)wait) * 1e6) + 1};
    evtimer_del(w->batch_timer);
    evtimer_add(w->batch_timer, &tv);
    w->paced = 1;
    set_reading(w);
}

/* STANDBY: try when the holder looks gone (the feed's freshness, which only
 * the holder advances, is older than wal_takeover), or at the first chance. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_wal_t *w = arg;
    if (w->state == WAL_STREAMING) {
        tick(w);
        return;
    }
    if (w->state != WAL_STANDBY) {
        /* a try still taking the slot: the timer wal_start_try armed */
        double limit = WAL_TRY_LIMIT_FACTOR * w->ctx->conf->wal_takeover_ms / 1000.0;
        if (oc_wal_try_overdue(now_s() - w->tried_at, limit))
            stand_by(w, WAL_RETRY_FAST_S, "a try to take the slot did not finish");
        else
            arm(w, limit);
        return;
    }
    double takeover = w->ctx->conf->wal_takeover_ms / 1000.0;
    double stale = w->ctx->feed ? oc_feed_staleness(w->ctx->feed, now_s()) : INFINITY;
    /* A holder that let go (to read the map again: 0.1 s; after a failure:
     * 1 s) tries again then: the feed it kept fresh says nothing of that,
     * and waiting for it to go stale left every model without invalidations
     * for wal_takeover after each attach or detach (found 2026-12-07). */
    if (w->retry_held ||
        oc_wal_try_now(w->tried, stale, now_s() - w->tried_at, takeover)) {
        w->retry_held = 0;
        wal_start_try(w);
        return;
    }
    arm(w, takeover / 2);
}

/* The secret our heartbeats carry. Any role may write a logical message
 * (PUBLIC may run pg_logical_emit_message), but only a REPLICATION role
 * reads them back: one of another instant would otherwise make the feed
 * claim, once applied, that every write committed until then was. A
 * guessable token would be no secret: no fallback. */
static oc_status_t hb_token_new(char token[OC_WALB_TOKEN_LEN + 1], char *err)
{
    unsigned char raw[OC_WALB_TOKEN_LEN / 2];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return oc_fail(err, OC_EIO,
                       "wal: cannot read random bytes for the heartbeat token");
    oc_wal_hb_token(raw, token);
    return OC_OK;
}

void oc_wal_hb_token(const unsigned char raw[16], char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 16; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[0] = "abcdef"[raw[0] % 6]; /* 126 random bits left: see oc_wal.h */
    out[32] = '\0';
}

oc_wal_t *oc_wal_new(oc_ctx_t *ctx, char *err)
{
    if (!ctx->conf->wal)
        return NULL;
    oc_wal_t *w = calloc(1, sizeof(*w));
    if (w == NULL || (w->acc = oc_walb_new(ctx->conf->wal_max_txn_keys)) == NULL ||
        (w->timer = evtimer_new(ctx->base, on_timer, w)) == NULL ||
        (w->batch_timer = evtimer_new(ctx->base, on_batch_timer, w)) == NULL ||
        (w->kick = event_new(ctx->base, -1, 0, on_kick, w)) == NULL ||
        (w->vis_timer = evtimer_new(ctx->base, on_vis_timer, w)) == NULL ||
        (w->reap = event_new(ctx->base, -1, 0, on_reap, w)) == NULL) {
        oc_wal_free(w);
        oc_fail(err, OC_ENOMEM, "out of memory");
        return NULL;
    }
    if (hb_token_new(w->hb_token, err) != OC_OK) {
        oc_wal_free(w);
        return NULL;
    }
    oc_walb_set_token(w->acc, w->hb_token);
    w->born = now_s();
    w->ctx = ctx;
    snprintf(w->slot, sizeof(w->slot), "%s", ctx->conf->wal_slot);
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(w->writer, sizeof(w->writer), "wal %.63s:%ld", host, (long)getpid());
    set_state(w, WAL_STANDBY);
    arm(w, 0.01 + (getpid() % 100) / 1000.0); /* a little spread between sidecars */
    return w;
}

void oc_wal_free(oc_wal_t *w)
{
    if (w == NULL)
        return;
    if (w->ctx) {
        oc_pgconn_free(w->repl);
        oc_pgconn_free(w->sql);
        w->ctx->stats->wal_holder = 0;
        w->ctx->stats->wal_lag_bytes = w->ctx->stats->wal_apply_lag_ms = 0;
        w->ctx->stats->wal_check_problems = 0;
    }
    free(w->problems);
    for (int i = 0; i < 2; i++)
        oc_pgconn_free(w->dead[i]);
    if (w->timer)
        event_free(w->timer);
    if (w->batch_timer)
        event_free(w->batch_timer);
    if (w->kick)
        event_free(w->kick);
    if (w->vis_timer)
        event_free(w->vis_timer);
    w->vis_timer = NULL; /* batch_clear, below, would delete it */
    if (w->reap)
        event_free(w->reap);
    /* Deletes still out at oc_mc would call back into freed memory: the
     * daemon frees oc_mc (which runs every callback) before us. */
    batch_clear(w);
    gens_clear(w);
    oc_walowed_free(&w->owed);
    oc_walb_free(w->acc);
    free(w);
}

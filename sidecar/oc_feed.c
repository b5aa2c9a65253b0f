#include "oc_feed.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_fill.h"
#include "oc_gens.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_near.h"
#include "oc_pgconn.h"
#include "oc_sampler.h"
#include "oc_sql.h"
#include "oc_stats.h"

typedef enum oc_feed_state {
    OC_FEED_DOWN,    /* not connected */
    OC_FEED_RESYNC,  /* reading the head and the generations */
    OC_FEED_LISTEN,  /* LISTEN sent (primaries only) */
    OC_FEED_IDLE,    /* waiting for a NOTIFY or the poll timer */
    OC_FEED_POLLING, /* feed_poll sent */
} oc_feed_state_t;

struct oc_feed {
    oc_ctx_t *ctx;
    oc_pgconn_t *pc;
    oc_feed_state_t state;
    struct event *timer;
    uint64_t cursor;  /* the last seq applied */
    int again;        /* woken while polling: poll again after */
    int warned;       /* the feed is missing (schema version 1): said once */
    int clock_warned; /* caught_up_at too far ahead (oc_feed_clock_ahead): said once */
    double sent;      /* monotonic time the poll was sent */
    double fresh_at;  /* caught_up_at, on the monotonic clock (0: never) */
    int standby;      /* not known to be a primary (the last resync said so) */
    /* generation_seq's OID as the last resync read it (0: none yet):
     * another one is a reinstalled hook, or another database. */
    unsigned long gens_schema;
    /* The WAL holder of this process (oc_feed_own): its server process (0:
     * none heard of), a statement of it in flight, a NOTIFY read while it
     * was (left to its result), NOTIFYs of taken statements still to come. */
    int own_pid;
    int own_inflight;
    uint64_t own_deferred; /* the highest head of those NOTIFYs (0: none) */
    oc_feed_owed_t owed;   /* heads of taken statements whose NOTIFY is due */
    char param[3][24];
};

static void poll_start(oc_feed_t *f);

static void set_state(oc_feed_t *f, oc_feed_state_t st)
{
    f->state = st;
}

static void arm(oc_feed_t *f)
{
    uint32_t ms = f->ctx->conf->feed_poll_ms;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(f->timer, &tv);
}

/* Not fresh any more: the near-cache drops what it holds. */
static void not_fresh(oc_feed_t *f)
{
    if (f->ctx->near)
        oc_near_fresh_until(f->ctx->near, 0);
}

/* A failure of the connection's command: it is reset and comes back. */
int oc_feed_hook_missing(const char *sqlstate, const char *err)
{
    return sqlstate != NULL && err != NULL &&
           (strcmp(sqlstate, "3F000") == 0 || strcmp(sqlstate, "42P01") == 0 ||
            strcmp(sqlstate, "42883") == 0) &&
           strstr(err, "objcached") != NULL;
}

/* A failure of the connection's command (sqlstate: its SQLSTATE, "" or
 * NULL if none): it is reset and comes back. */
static void failed(oc_feed_t *f, const char *what, const char *sqlstate, const char *err)
{
    char clean[OC_ERRLEN];
    not_fresh(f);
    if (oc_feed_hook_missing(sqlstate, err)) {
        /* no hook schema, or version 1 without the feed: counted and logged
         * once, not per poll */
        if (!f->warned++) {
            f->ctx->stats->feed_errors++;
            oc_log_warn("event=feed_unavailable reason=\"%s\" hint=\"install the hook's "
                        "schema version 2: objcached --install-hook\"",
                        oc_log_clean(clean, sizeof(clean), err));
        }
    } else {
        f->ctx->stats->feed_errors++;
        oc_log_warn("event=feed_failed step=%s reason=\"%s\"", what,
                    oc_log_clean(clean, sizeof(clean), err));
    }
    set_state(f, OC_FEED_IDLE);
    arm(f);
}

/* ---- applying rows ---------------------------------------------------------- */

/* A key of a feed row: the key's fills stop, the near-cache drops it. */
static void apply_key(oc_feed_t *f, size_t m, const char *id, size_t len)
{
    oc_ctx_t *ctx = f->ctx;
    if (!oc_key_id_cacheable(id, len, ctx->max_key_len))
        return; /* never cached (spaces, control bytes, too long) */
    char ck[OC_KEY_MAX + 1];
    size_t off;
    size_t cl = oc_key_cache_key(ctx->conf->key_prefix, ctx->conf->models[m].name,
                                 ctx->model_gen[m], id, len, ck, sizeof(ck), &off);
    oc_fill_invalidate(ctx->fills, ck, cl);
    if (ctx->near)
        oc_near_invalidate(ctx->near, ck, cl);
    oc_sampler_offer_inval(ctx->sampler, m, id, len);
}

/* A whole-model row: the model's new generation (generations only grow;
 * `follow` 0: of a hook the models no longer follow, oc_gens_follow). */
static void apply_generation(oc_feed_t *f, size_t m, uint64_t gen, int follow)
{
    oc_ctx_t *ctx = f->ctx;
    if (follow && gen > ctx->model_gen[m]) {
        oc_log_info("event=model_generation model=%s generation=%" PRIu64 " source=feed",
                    ctx->conf->models[m].name, gen);
        ctx->model_gen[m] = gen;
    }
    if (ctx->near)
        oc_near_invalidate_model(ctx->near, (uint32_t)m);
}

/* One result row: head, lag_s, pruned_upto, seq, model, key, generation,
 * apply_s, generation_seq's OID, pg_is_in_recovery() (columns 0..9); a row per key
 * (unnest), seq NULL when the poll found nothing after the cursor. Returns the row's seq
 * (0 if none). */
static uint64_t apply_row(oc_feed_t *f, const PGresult *res, int r,
                          uint64_t *last_counted, int follow)
{
    oc_ctx_t *ctx = f->ctx;
    if (PQgetisnull(res, r, 3))
        return 0;
    uint64_t seq = strtoull(PQgetvalue(res, r, 3), NULL, 10);
    if (seq != *last_counted) { /* the first row of a feed row */
        *last_counted = seq;
        ctx->stats->feed_rows++;
        /* committed_at is the primary's clock, db_now the polled server's
         * (a replica's): apart, a row looks applied before its commit. That
         * counts as 0 s, as the WAL's lags do: a histogram's sum must not
         * go down (rate() would take it for a reset). */
        if (!PQgetisnull(res, r, 7)) {
            double apply_s = atof(PQgetvalue(res, r, 7));
            oc_hist_observe(&ctx->stats->feed_apply_seconds, apply_s > 0 ? apply_s : 0);
        }
    }
    const oc_model_conf_t *mc =
        oc_conf_model(ctx->conf, PQgetvalue(res, r, 4), (size_t)PQgetlength(res, r, 4));
    if (mc == NULL)
        return seq; /* a model this sidecar does not serve: nothing cached */
    size_t m = (size_t)(mc - ctx->conf->models);
    if (!PQgetisnull(res, r, 6)) {
        apply_generation(f, m, strtoull(PQgetvalue(res, r, 6), NULL, 10), follow);
    } else if (!PQgetisnull(res, r, 5)) {
        ctx->stats->feed_keys++;
        apply_key(f, m, PQgetvalue(res, r, 5), (size_t)PQgetlength(res, r, 5));
    }
    return seq;
}

/* The sidecar applied the feed up to the head: fresh as of caught_up_at,
 * which was lag_s old when the poll ran (after it was sent: so counting
 * from `sent` errs on the safe side). */
static void fresh(oc_feed_t *f, const PGresult *res)
{
    oc_ctx_t *ctx = f->ctx;
    if (PQgetisnull(res, 0, 1)) { /* nobody ever said how fresh the feed is */
        not_fresh(f);
        return;
    }
    double lag = atof(PQgetvalue(res, 0, 1));
    if (oc_feed_clock_ahead(lag, ctx->conf->feed_max_lag_ms)) {
        /* Proves nothing, and the proof of freshness and the holder's
         * liveness (oc_feed_staleness) stay where they were: a clock that
         * once ran ahead wrote it (GREATEST kept it while the clock came
         * back), or this server's runs behind. Taken as 0 old, every
         * near-cache served for as long as it was ahead, whatever stopped
         * the feed, and a standby waited 60 x wal_takeover to take over
         * from a dead holder (found by a review). */
        ctx->stats->feed_clock_ahead++;
        if (!f->clock_warned)
            oc_log_warn("event=feed_clock_ahead ahead_ms=%.0f note=\"the feed's "
                        "caught_up_at is ahead of the database's clock by more than "
                        "feed_max_lag: no near-cache answers until a claim or heartbeat "
                        "writes a caught_up_at this clock has reached\"",
                        -lag * 1000);
        f->clock_warned = 1;
        not_fresh(f);
        return;
    }
    if (f->clock_warned)
        oc_log_info("event=feed_clock_ahead_ended");
    f->clock_warned = 0;
    if (lag < 0)
        lag = 0; /* ahead within feed_max_lag: a replica's clock a little behind */
    ctx->stats->feed_lag_ms = (uint64_t)(lag * 1000);
    f->fresh_at = f->sent - lag;
    if (ctx->near)
        oc_near_fresh_until(
            ctx->near, oc_feed_fresh_until(f->sent, lag, ctx->conf->feed_max_lag_ms));
}

int oc_feed_clock_ahead(double lag_s, uint32_t feed_max_lag_ms)
{
    return lag_s < -(feed_max_lag_ms / 1000.0);
}

double oc_feed_fresh_until(double sent, double lag_s, uint32_t feed_max_lag_ms)
{
    if (lag_s < 0)
        lag_s = 0;
    double until = sent + feed_max_lag_ms / 1000.0 - lag_s;
    return until > sent ? until : 0;
}

int oc_feed_gap(uint64_t cursor, uint64_t head, uint64_t pruned_upto)
{
    return cursor < pruned_upto || cursor > head;
}

int oc_feed_more(uint64_t cursor, uint64_t head, uint64_t rows, uint32_t feed_batch,
                 int cut)
{
    return cursor < head && (rows >= feed_batch || cut);
}

int oc_feed_own_fits(uint64_t cursor, uint64_t head)
{
    return head >= 1 && cursor == head - 1;
}

int oc_feed_notify_own(int own_pid, int be_pid, const char *extra, uint64_t *head)
{
    if (own_pid == 0 || be_pid != own_pid || extra == NULL || *extra < '0' ||
        *extra > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long h = strtoull(extra, &end, 10);
    if (errno != 0 || *end != '\0')
        return 0;
    *head = h;
    return 1;
}

void oc_feed_owed_push(oc_feed_owed_t *o, uint64_t head)
{
    if (o->n == OC_FEED_OWED_MAX) { /* its NOTIFY, when it comes, polls */
        o->first = (o->first + 1) % OC_FEED_OWED_MAX;
        o->n--;
    }
    o->head[(o->first + o->n++) % OC_FEED_OWED_MAX] = head;
}

int oc_feed_owed_match(oc_feed_owed_t *o, uint64_t head)
{
    while (o->n > 0 && o->head[o->first] < head) { /* passed: never coming */
        o->first = (o->first + 1) % OC_FEED_OWED_MAX;
        o->n--;
    }
    if (o->n == 0 || o->head[o->first] != head)
        return 0;
    o->first = (o->first + 1) % OC_FEED_OWED_MAX;
    o->n--;
    return 1;
}

oc_feed_notify_t oc_feed_notify_rule(int owed, uint64_t head, uint64_t cursor,
                                     int inflight)
{
    if (owed)
        return OC_FEED_NOTIFY_SKIP;
    return inflight && head > cursor ? OC_FEED_NOTIFY_DEFER : OC_FEED_NOTIFY_POLL;
}

/* The two connections reach the same database: the holder's head is this
 * follower's. (A follower on a standby lags the primary's head.) */
static int same_feed(const oc_feed_t *f)
{
    const oc_conf_t *c = f->ctx->conf;
    const char *feed = c->feed_conninfo[0] ? c->feed_conninfo : c->conninfo;
    const char *wal = c->wal_conninfo[0] ? c->wal_conninfo : c->conninfo;
    return !f->standby && strcmp(feed, wal) == 0;
}

void oc_feed_own_begin(oc_feed_t *f)
{
    if (f == NULL)
        return;
    f->own_inflight = 1;
    f->own_deferred = 0;
}

void oc_feed_own(oc_feed_t *f, const oc_feed_own_t *own)
{
    if (f == NULL)
        return;
    oc_ctx_t *ctx = f->ctx;
    int same = same_feed(f);
    uint64_t deferred = f->own_deferred;
    f->own_pid = same ? own->pid : 0;
    f->own_inflight = 0;
    f->own_deferred = 0;
    if (!same || !own->take || f->state != OC_FEED_IDLE ||
        !oc_feed_own_fits(f->cursor, own->head)) {
        /* A poll reads it (and the proof of a heartbeat): the NOTIFY's,
         * which waited for this result if it came first. */
        if (deferred)
            poll_start(f);
        return;
    }
    ctx->stats->feed_rows++;
    if (own->apply_s >= 0)
        oc_hist_observe(&ctx->stats->feed_apply_seconds, own->apply_s);
    const oc_model_conf_t *mc = oc_conf_model(ctx->conf, own->model, strlen(own->model));
    for (size_t i = 0; mc && i < own->nkeys; i++) {
        ctx->stats->feed_keys++;
        apply_key(f, (size_t)(mc - ctx->conf->models), own->keys[i], own->klens[i]);
    }
    ctx->stats->feed_own++;
    f->cursor = own->head;
    ctx->stats->feed_cursor = f->cursor;
    /* No new proof: the statement claimed no caught_up_at, so the head's
     * did not move, and the proof held covers it. Its NOTIFY is covered:
     * read already (a NOTIFY kept back with rows past the old cursor can
     * only be its own, or one a poll has read since), or still due. */
    if (deferred != own->head)
        oc_feed_owed_push(&f->owed, own->head);
}

/* Nothing of the holder in flight or expected (a new connection, its end). */
static void own_forget(oc_feed_t *f)
{
    f->own_inflight = 0;
    f->own_deferred = 0;
    memset(&f->owed, 0, sizeof(f->owed));
}

void oc_feed_own_end(oc_feed_t *f)
{
    if (f == NULL)
        return;
    uint64_t deferred = f->own_deferred;
    f->own_pid = 0; /* its pid may serve another session now */
    own_forget(f);
    if (deferred)
        poll_start(f);
}

static void resync(oc_feed_t *f);

/* generation_seq's OID in column `col` of a result (0: no hook). */
static unsigned long schema_of(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0 : strtoul(PQgetvalue(res, 0, col), NULL, 10);
}

/* Not the generation_seq this follower knew: the hook was installed again. */
static int schema_moved(const oc_feed_t *f, unsigned long schema)
{
    return f->gens_schema != 0 && schema != 0 && schema != f->gens_schema;
}

static void polled(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                   void *arg)
{
    oc_feed_t *f = arg;
    oc_ctx_t *ctx = f->ctx;
    if (st != OC_OK) {
        failed(f, "poll", oc_pgconn_sqlstate(pc), err);
        return;
    }
    ctx->stats->feed_polls++;
    int rows = PQntuples(res);
    if (rows == 0) { /* feed_poll always returns the head: the schema is broken */
        PQclear(res);
        failed(f, "poll", NULL, "no head row");
        return;
    }
    uint64_t head = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    uint64_t pruned = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
    unsigned long schema = schema_of(res, 8);
    if (schema_moved(f, schema)) {
        /* uninstall.sql and install.sql again (or a restore): the cursor
         * means nothing in this feed, and its generations start over */
        oc_log_warn("event=feed_gap cursor=%" PRIu64 " head=%" PRIu64
                    " note=\"hook installed again\"",
                    f->cursor, head);
        PQclear(res);
        resync(f);
        return;
    }
    if (f->standby && PQgetvalue(res, 0, 9)[0] == 'f') {
        /* the standby this follower reads was promoted: its connection
         * stayed; a resync reads it as a primary (it LISTENs) */
        oc_log_warn("event=feed_promoted note=\"the feed's standby is a primary now\"");
        PQclear(res);
        resync(f);
        return;
    }
    /* A poll that predates a reinstall the consumer already followed: its
     * rows' generations are the old hook's (oc_gens_follow) */
    int follow = oc_gens_follow(ctx, &f->gens_schema, schema, "feed");
    if (oc_feed_gap(f->cursor, head, pruned)) {
        /* rows pruned past our cursor, or another database (a restore, a
         * failover to an older replica): what we missed cannot be known */
        oc_log_warn("event=feed_gap cursor=%" PRIu64 " head=%" PRIu64
                    " pruned_upto=%" PRIu64,
                    f->cursor, head, pruned);
        PQclear(res);
        resync(f);
        return;
    }
    uint64_t last = 0, seen = 0, feed_rows = 0;
    for (int r = 0; r < rows; r++) {
        uint64_t before = last;
        uint64_t seq = apply_row(f, res, r, &last, follow);
        feed_rows += seq != 0 && seq != before;
        if (seq > seen)
            seen = seq;
    }
    if (seen > f->cursor)
        f->cursor = seen;
    ctx->stats->feed_cursor = f->cursor;
    /* column 10: the feed rows feed_poll read, before the cut at keys */
    int cut = feed_rows < strtoull(PQgetvalue(res, 0, 10), NULL, 10);
    ctx->stats->feed_polls_cut += cut;
    int more = oc_feed_more(f->cursor, head, feed_rows, ctx->conf->feed_batch, cut);
    if (f->cursor >= head)
        fresh(f, res);
    PQclear(res);
    set_state(f, OC_FEED_IDLE);
    if (more || f->again) {
        f->again = 0;
        poll_start(f);
        return;
    }
    arm(f);
}

static void poll_start(oc_feed_t *f)
{
    oc_ctx_t *ctx = f->ctx;
    if (f->state == OC_FEED_POLLING || f->state == OC_FEED_RESYNC ||
        f->state == OC_FEED_LISTEN) {
        f->again = 1;
        return;
    }
    if (f->state == OC_FEED_DOWN)
        return; /* up() resyncs */
    evtimer_del(f->timer);
    snprintf(f->param[0], sizeof(f->param[0]), "%" PRIu64, f->cursor);
    snprintf(f->param[1], sizeof(f->param[1]), "%u", ctx->conf->feed_batch);
    snprintf(f->param[2], sizeof(f->param[2]), "%d", OC_FEED_POLL_KEYS);
    const char *params[3] = {f->param[0], f->param[1], f->param[2]};
    f->sent = oc_stats_now();
    set_state(f, OC_FEED_POLLING);
    if (oc_pgconn_exec(
            f->pc,
            "SELECT p.head, extract(epoch FROM p.db_now - p.caught_up_at), "
            "p.pruned_upto, p.seq, p.model, k, p.generation, "
            "extract(epoch FROM p.db_now - p.committed_at), "
            "(SELECT to_regclass('objcached.generation_seq')::oid), "
            "pg_is_in_recovery(), p.n "
            "FROM (SELECT q.*, count(q.seq) OVER () AS n, "
            "coalesce(sum(cardinality(q.keys)) OVER (ORDER BY q.seq ROWS "
            "UNBOUNDED PRECEDING), 0) - coalesce(cardinality(q.keys), 0) AS ahead "
            "FROM objcached.feed_poll($1::bigint, $2::integer) q) p "
            "LEFT JOIN LATERAL unnest(p.keys) AS k ON true "
            "WHERE p.ahead < $3::bigint ORDER BY p.seq",
            3, params, polled, f) != OC_OK)
        set_state(f, OC_FEED_DOWN);
}

/* ---- (re)connecting ----------------------------------------------------------- */

static void listened(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                     void *arg)
{
    oc_feed_t *f = arg;
    PQclear(res);
    if (st != OC_OK) {
        failed(f, "listen", oc_pgconn_sqlstate(pc), err);
        return;
    }
    set_state(f, OC_FEED_IDLE);
    poll_start(f);
}

/* Columns 2 and 3 of the resync: "User,Post" and "3,0", the models and
 * their generations in the same order (names are identifiers: no commas). */
static void resync_generations(oc_feed_t *f, const char *names, const char *gens)
{
    oc_ctx_t *ctx = f->ctx;
    const char *n = names, *g = gens, *name;
    size_t nl;
    uint64_t gen;
    while (oc_feed_next_generation(&n, &g, &name, &nl, &gen)) {
        const oc_model_conf_t *mc = oc_conf_model(ctx->conf, name, nl);
        if (mc && gen > ctx->model_gen[mc - ctx->conf->models]) {
            /* A switch like the feed's and the consumer's: logged too (a
             * TRUNCATE seen first by a resync was a silent switch). */
            oc_log_info("event=model_generation model=%s generation=%" PRIu64
                        " source=resync",
                        mc->name, gen);
            ctx->model_gen[mc - ctx->conf->models] = gen;
        }
    }
}

int oc_feed_next_generation(const char **names, const char **gens, const char **name,
                            size_t *len, uint64_t *gen)
{
    const char *n = *names, *g = *gens;
    if (*n == '\0' || *g == '\0')
        return 0;
    *name = n;
    *len = strcspn(n, ",");
    *gen = strtoull(g, NULL, 10);
    *names = n + *len + (n[*len] == ',');
    g += strcspn(g, ",");
    *gens = g + (*g == ',');
    return 1;
}

static void resynced(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                     void *arg)
{
    oc_feed_t *f = arg;
    oc_ctx_t *ctx = f->ctx;
    if (st != OC_OK || PQntuples(res) != 1) {
        PQclear(res);
        failed(f, "resync", st != OC_OK ? oc_pgconn_sqlstate(pc) : NULL,
               st != OC_OK ? err : "no head row");
        return;
    }
    f->cursor = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    own_forget(f); /* the head read covers what it was about */
    ctx->stats->feed_cursor = f->cursor;
    /* The cursor jumped past rows this sidecar never applied: a read under
     * way (begun before the resync was sent, or while the feed was down and
     * the near-cache not serving) may hold a row one of them changed.
     * Emptying the near-cache moves its epoch, whatever its state, so such
     * reads do not store what they got; and no later read joins a fill that
     * loaded before the jump. */
    if (ctx->near)
        oc_near_clear(ctx->near);
    oc_fill_forget_all(ctx->fills);
    int standby = f->standby = PQgetvalue(res, 0, 1)[0] == 't';
    if (oc_gens_follow(ctx, &f->gens_schema, schema_of(res, 4), "resync")) {
        if (!PQgetisnull(res, 0, 2) && !PQgetisnull(res, 0, 3))
            resync_generations(f, PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
        oc_gens_read(ctx->gens, "resync");
    }
    PQclear(res);
    ctx->stats->feed_resyncs++;
    oc_log_info("event=feed_resync head=%" PRIu64 " standby=%d", f->cursor, standby);
    /* A hot standby cannot LISTEN; feed_listen = off polls only too: with
     * hundreds of sidecars on one primary, every append would wake each
     * of them for a poll of its own; and so does transaction mode, where
     * a LISTEN would end with its transaction. */
    if (standby || !ctx->conf->feed_listen || ctx->conf->pg_txn_pool) {
        set_state(f, OC_FEED_IDLE);
        poll_start(f);
        return;
    }
    set_state(f, OC_FEED_LISTEN);
    if (oc_pgconn_query(f->pc, "LISTEN objcached_feed", 0, NULL, listened, f) != OC_OK)
        set_state(f, OC_FEED_DOWN);
}

/* The head and every model's generation, in one snapshot; the near-cache
 * starts over (what happened before the head cannot be replayed). */
static void resync(oc_feed_t *f)
{
    not_fresh(f);
    f->standby = 1; /* until it says */
    set_state(f, OC_FEED_RESYNC);
    if (oc_pgconn_query(f->pc,
                        "SELECT p.head, pg_is_in_recovery(), "
                        "(SELECT string_agg(m.model, ',' ORDER BY m.model) "
                        "FROM objcached.models m), "
                        "(SELECT string_agg(m.generation::text, ',' ORDER BY m.model) "
                        "FROM objcached.models m), "
                        "to_regclass('objcached.generation_seq')::oid "
                        "FROM objcached.feed_poll(9223372036854775807, 0) p",
                        0, NULL, resynced, f) != OC_OK)
        set_state(f, OC_FEED_DOWN);
}

static void on_up(oc_pgconn_t *pc, void *owner)
{
    (void)pc;
    oc_feed_t *f = owner;
    f->ctx->stats->feed_connected = 1;
    f->again = 0;
    resync(f);
}

static void on_down(oc_pgconn_t *pc, const char *err, void *owner)
{
    (void)pc, (void)err;
    oc_feed_t *f = owner;
    f->ctx->stats->feed_connected = 0;
    f->standby = 1; /* until a resync says */
    own_forget(f);
    not_fresh(f);
    evtimer_del(f->timer);
    set_state(f, OC_FEED_DOWN);
}

static void on_notify(oc_pgconn_t *pc, const PGnotify *n, void *owner)
{
    (void)pc;
    oc_feed_t *f = owner;
    /* The holder's own statement: one taken by oc_feed_own needs no poll
     * (a poll would read back what this process wrote); one read before
     * its result, with rows past the cursor, waits for it, and oc_feed_own
     * polls unless it takes it (oc_feed_own_end if the result never
     * comes). Any other (a heartbeat's: its proof) polls. */
    uint64_t head;
    if (oc_feed_notify_own(f->own_pid, n->be_pid, n->extra, &head)) {
        int owed = oc_feed_owed_match(&f->owed, head);
        switch (oc_feed_notify_rule(owed, head, f->cursor,
                                    f->own_inflight && f->state == OC_FEED_IDLE)) {
        case OC_FEED_NOTIFY_SKIP:
            return;
        case OC_FEED_NOTIFY_DEFER:
            if (head > f->own_deferred)
                f->own_deferred = head;
            return;
        case OC_FEED_NOTIFY_POLL:
            break;
        }
    }
    poll_start(f);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    poll_start(arg);
}

oc_feed_t *oc_feed_new(oc_ctx_t *ctx, char *err)
{
    const oc_conf_t *conf = ctx->conf;
    if (conf->feed_poll_ms == 0)
        return NULL;
    oc_feed_t *f = calloc(1, sizeof(*f));
    char *session = oc_sql_session(conf);
    char *local = conf->pg_txn_pool ? oc_sql_local(conf) : NULL;
    if (f == NULL || session == NULL || (conf->pg_txn_pool && local == NULL))
        goto nomem;
    f->ctx = ctx;
    set_state(f, OC_FEED_DOWN);
    if ((f->timer = evtimer_new(ctx->base, on_timer, f)) == NULL)
        goto nomem;
    static const oc_pgconn_hooks_t hooks = {
        .up = on_up, .down = on_down, .notify = on_notify};
    /* feed_conninfo may name a replica (docs/invalidation.md): the feed
     * polls what has been replayed, and reads no rows to cache */
    const oc_pgconn_opts_t feed_opts = {.app_name = "objcached-feed",
                                        .replica_ok = 1,
                                        .stats = ctx->stats,
                                        .local_sql = local};
    const char *conninfo = conf->feed_conninfo[0] ? conf->feed_conninfo : conf->conninfo;
    if ((f->pc = oc_pgconn_new(ctx->base, conninfo, &feed_opts, session, &hooks, f)) ==
        NULL)
        goto nomem;
    free(session);
    free(local);
    return f;
nomem:
    free(session);
    free(local);
    oc_feed_free(f);
    oc_fail(err, OC_ENOMEM, "out of memory");
    return NULL;
}

double oc_feed_staleness(const oc_feed_t *f, double now)
{
    return f->fresh_at > 0 ? now - f->fresh_at : INFINITY;
}

void oc_feed_free(oc_feed_t *f)
{
    if (f == NULL)
        return;
    oc_pgconn_free(f->pc);
    if (f->timer)
        event_free(f->timer);
    if (f->ctx) {
        f->ctx->stats->feed_connected = 0;
        not_fresh(f);
    }
    free(f);
}

#include "oc_gens.h"

#include <event2/event.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_log.h"
#include "oc_pgconn.h"
#include "oc_sql.h"
#include "oc_stats.h"

#define GENS_RETRY_S 1 /* a read that failed on a live connection: again */

static const char GENS_SQL[] =
    "SELECT model, generation, "
    "pg_catalog.to_regclass('objcached.generation_seq')::pg_catalog.oid "
    "FROM objcached.models";

struct oc_gens {
    oc_ctx_t *ctx;
    oc_pgconn_t *pc;     /* the reader, while they are unknown */
    struct event *retry; /* the reader's next read after a failed one */
    struct event *reap;  /* frees pc outside its own callbacks */
    unsigned long seen;  /* the reader's last hook (oc_gens_follow) */
    int busy;            /* the reader's query is under way */
};

int oc_gens_never_readable(const char *sqlstate)
{
    return sqlstate != NULL &&
           (strcmp(sqlstate, "42P01") == 0 || strcmp(sqlstate, "3F000") == 0 ||
            strcmp(sqlstate, "42501") == 0);
}

oc_gens_rule_t oc_gens_rule(unsigned long *current, unsigned long *seen,
                            unsigned long oid)
{
    if (oid == 0)
        return OC_GENS_APPLY; /* no generation_seq to tell hooks apart */
    int first = oid != *seen;
    *seen = oid;
    if (*current == oid)
        return OC_GENS_APPLY;
    if (*current == 0) { /* the first hook this process reads */
        *current = oid;
        return OC_GENS_APPLY;
    }
    if (!first)
        return OC_GENS_IGNORE; /* the other reader moved on since */
    *current = oid;
    return OC_GENS_RESET;
}

/* uninstall.sql and install.sql again: a new generation_seq, whose
 * generations may be below the ones this sidecar uses (an install.sql from
 * before 2026-12-05 starts them over from 1; now they start at the time in
 * microseconds), which nothing deletes under any more. Every model starts
 * over from 0, once per hook for the whole process: the consumer
 * (oc_inval.c) and this follower share it, or the second of them to see
 * the new hook moved a model back below a TRUNCATE the first applied
 * meanwhile (found by a review). A sidecar without a consumer (a WAL
 * standby, invalidation_poll = 0) has only this. */
int oc_gens_follow(oc_ctx_t *ctx, unsigned long *seen, unsigned long oid,
                   const char *source)
{
    oc_gens_rule_t r = oc_gens_rule(&ctx->gens_oid, seen, oid);
    if (r == OC_GENS_RESET) {
        oc_log_info("event=model_generation model=* generation=0%s%s note=\"hook "
                    "installed again\"",
                    source ? " source=" : "", source ? source : "");
        for (size_t m = 0; m < ctx->conf->nmodels; m++)
            ctx->model_gen[m] = 0;
    }
    return r != OC_GENS_IGNORE;
}

static void set_unknown(oc_gens_t *g, int unknown)
{
    g->ctx->gens_unknown = unknown;
    g->ctx->stats->generations_unknown = (uint64_t)unknown;
}

static void reader_read(oc_gens_t *g);

/* The reader's answer, applied as the consumer applies its own: forward
 * only, following one hook at a time. */
static void reader_apply(oc_gens_t *g, const PGresult *res)
{
    oc_ctx_t *ctx = g->ctx;
    unsigned long oid = PQntuples(res) > 0 && !PQgetisnull(res, 0, 2)
                            ? strtoul(PQgetvalue(res, 0, 2), NULL, 10)
                            : 0;
    if (!oc_gens_follow(ctx, &g->seen, oid, "generations"))
        return; /* another reader is on a newer hook: it read them */
    for (int i = 0; i < PQntuples(res); i++) {
        const oc_model_conf_t *m = oc_conf_model(ctx->conf, PQgetvalue(res, i, 0),
                                                 (size_t)PQgetlength(res, i, 0));
        uint64_t gen = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        if (m && gen > ctx->model_gen[m - ctx->conf->models]) {
            oc_log_info("event=model_generation model=%s generation=%" PRIu64
                        " source=generations",
                        m->name, gen);
            ctx->model_gen[m - ctx->conf->models] = gen;
        }
    }
}

static void reader_done(oc_pgconn_t *pc, PGresult *res, oc_status_t st, const char *err,
                        void *arg)
{
    oc_gens_t *g = arg;
    g->busy = 0;
    if (!g->ctx->gens_unknown) { /* another reader was first */
        PQclear(res);
        return;
    }
    if (st == OC_OK) {
        reader_apply(g, res);
        PQclear(res);
        oc_gens_read(g, "reader");
        return;
    }
    PQclear(res);
    oc_gens_failed(g, "reader", oc_pgconn_sqlstate(pc), err);
    if (g->ctx->gens_unknown) {
        struct timeval tv = {GENS_RETRY_S, 0};
        evtimer_add(g->retry, &tv);
    }
}

static void reader_read(oc_gens_t *g)
{
    if (g->pc == NULL || g->busy || !g->ctx->gens_unknown || !oc_pgconn_idle(g->pc))
        return;
    g->busy = oc_pgconn_query(g->pc, GENS_SQL, 0, NULL, reader_done, g) == OC_OK;
}

static void reader_up(oc_pgconn_t *pc, void *owner)
{
    (void)pc;
    reader_read(owner);
}

static void reader_down(oc_pgconn_t *pc, const char *err, void *owner)
{
    (void)pc, (void)err;
    oc_gens_t *g = owner;
    g->busy = 0; /* it reconnects by itself; up reads again */
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    reader_read(arg);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_gens_t *g = arg;
    if (g->ctx->gens_unknown)
        return; /* unknown again (a reload's read failed): keep it */
    oc_pgconn_free(g->pc);
    g->pc = NULL;
    g->busy = 0;
}

static void reader_start(oc_gens_t *g)
{
    if (g->pc != NULL) {
        /* Known and unknown again in one loop turn (a reload's read failed
         * before reap_cb ran): the kept connection may be idle, with no
         * retry armed and no up to come; it reads again now. */
        reader_read(g);
        return;
    }
    oc_ctx_t *ctx = g->ctx;
    char *session = oc_sql_session(ctx->conf);
    char *local = ctx->conf->pg_txn_pool ? oc_sql_local(ctx->conf) : NULL;
    static const oc_pgconn_hooks_t hooks = {.up = reader_up, .down = reader_down};
    const oc_pgconn_opts_t opts = {
        .app_name = "objcached-generations", .stats = ctx->stats, .local_sql = local};
    if (session != NULL && (local != NULL || !ctx->conf->pg_txn_pool))
        g->pc = oc_pgconn_new(ctx->base, ctx->conf->conninfo, &opts, session, &hooks, g);
    free(session);
    free(local);
    if (g->pc == NULL)
        oc_log_error("event=generations_reader_failed reason=\"out of memory\" "
                     "note=\"the consumer or the feed will read them\"");
}

oc_gens_t *oc_gens_new(oc_ctx_t *ctx)
{
    oc_gens_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->ctx = ctx;
    g->retry = evtimer_new(ctx->base, retry_cb, g);
    g->reap = evtimer_new(ctx->base, reap_cb, g);
    if (g->retry == NULL || g->reap == NULL) {
        oc_gens_free(g);
        return NULL;
    }
    return g;
}

void oc_gens_free(oc_gens_t *g)
{
    if (g == NULL)
        return;
    oc_pgconn_free(g->pc);
    if (g->retry)
        event_free(g->retry);
    if (g->reap)
        event_free(g->reap);
    free(g);
}

void oc_gens_failed(oc_gens_t *g, const char *source, const char *sqlstate,
                    const char *why)
{
    char clean[OC_ERRLEN];
    oc_log_clean(clean, sizeof(clean), why ? why : "unknown error");
    if (oc_gens_never_readable(sqlstate)) {
        /* No hook, or no grant: no retry reads them. As before: 0. */
        oc_log(g->ctx->conf->inval_poll_ms ? OC_LOG_WARN : OC_LOG_INFO,
               "event=generations_unknown source=%s reason=\"%s\" note=\"models are "
               "read at generation 0 (no hook installed, or no grant on it)\"",
               source, clean);
        if (g->ctx->gens_unknown)
            oc_gens_read(g, source);
        return;
    }
    if (g->ctx->gens_unknown) {
        oc_log_debug("event=generations_unknown source=%s reason=\"%s\"", source, clean);
        return;
    }
    set_unknown(g, 1);
    oc_log_warn("event=generations_unknown source=%s reason=\"%s\" note=\"memcached is "
                "not used (every missed key is loaded, nothing written back) until they "
                "are read\"",
                source, clean);
    reader_start(g);
}

void oc_gens_read(oc_gens_t *g, const char *source)
{
    if (g == NULL || !g->ctx->gens_unknown)
        return;
    set_unknown(g, 0);
    evtimer_del(g->retry);
    oc_log_info("event=generations_known source=%s", source);
    if (g->pc != NULL) { /* not from inside its own callback */
        struct timeval now = {0, 0};
        evtimer_add(g->reap, &now);
    }
}

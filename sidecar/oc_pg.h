/*
 * oc_pg: the PostgreSQL loader: a small pool of asynchronous libpq
 * connections driven by the loop (PQsendQueryPrepared, PQconsumeInput,
 * PQisBusy, events on PQsocket). Nothing here ever blocks the loop.
 *
 * A load is one query for one model: `... WHERE key = ANY($1)` with all the
 * ids bound as one array parameter (never spliced into SQL), prepared once
 * per connection. Each connection pins the session settings that change how
 * row_to_json prints a row (TimeZone, DateStyle, IntervalStyle,
 * extra_float_digits), so every sidecar caches the same bytes for the same
 * row, and sets statement_timeout = load_timeout so a stuck query is
 * cancelled by the server itself.
 *
 * Each connection is an oc_pgconn (reconnects by itself); a load waits in a
 * queue until a connection is idle. When no connection is even trying to
 * connect, loads fail at once ("database unavailable: <why>").
 *
 * Ownership: the caller allocates an oc_pg_load_t (oc_pg_load_new), gives it
 * to oc_pg_submit, and gets `done` called exactly once on the loop thread;
 * from then on the load is the caller's again (free with oc_pg_load_free).
 * `res` (only with OC_OK) is the caller's to PQclear. `err` is valid only
 * during the callback. A load whose time runs out gets OC_ETIMEOUT at
 * load_timeout even if PostgreSQL has not answered yet.
 */
#ifndef OC_PG_H
#define OC_PG_H

#include <libpq-fe.h>
#include <stddef.h>

#include "oc_conf.h"
#include "oc_stats.h"
#include "oc_status.h"

struct event_base;
struct event;
typedef struct oc_pg oc_pg_t;
typedef struct oc_pg_conn oc_pg_conn_t; /* one loader connection */
typedef struct oc_pg_load oc_pg_load_t;

typedef void (*oc_pg_done_fn)(oc_pg_load_t *load, PGresult *res, oc_status_t st,
                              const char *err, void *arg);

struct oc_pg_load {
    size_t model_idx;
    char *ids; /* the array literal, e.g. {1,2,3}; owned by the load */
    oc_pg_done_fn done;
    void *arg;
    /* oc_pg's own: */
    oc_pg_t *pg;
    struct event *deadline;
    oc_pg_conn_t *conn; /* the connection running it, or NULL if queued */
    oc_pg_load_t *next;
    double submitted; /* oc_stats_now() at submit, for load_seconds */
};

oc_pg_t *oc_pg_new(struct event_base *base, const oc_conf_t *conf, oc_stats_t *stats,
                   char *err);
/* A reload: new load statements (columns or tables may have changed) under
 * new names, prepared again on each connection's next use; loads under way
 * finish with the old ones. conf must keep model indexes stable (see
 * oc_reload.h) and outlive pg's use of it. */
oc_status_t oc_pg_reconfigure(oc_pg_t *pg, const oc_conf_t *conf, char *err);

/* Closes the connections; queued and running loads get done(OC_EDB). */
void oc_pg_free(oc_pg_t *pg);

oc_pg_load_t *oc_pg_load_new(size_t model_idx, char *ids, oc_pg_done_fn done, void *arg);
void oc_pg_load_free(oc_pg_load_t *load);
void oc_pg_submit(oc_pg_t *pg, oc_pg_load_t *load);

/* The session settings every objcached PostgreSQL session runs; caller
 * frees. */
char *oc_pg_session_sql(const oc_conf_t *conf);

/* A PostgreSQL array literal of n quoted text items, e.g. {"1","a\"b"},
 * for binding as one parameter (valid for bigint[], uuid[] and text[] too).
 * Returns a malloc'd string, or NULL if out of memory. */
char *oc_pg_array_literal(const char *const *items, const size_t *lens, size_t n);
/* The same, with item i given by item(arg, i, &p, &len): for callers whose
 * items sit inside their own structs (the ids of fills, of pushes). */
typedef void (*oc_pg_item_fn)(const void *arg, size_t i, const char **p, size_t *len);
char *oc_pg_array_literal_of(size_t n, oc_pg_item_fn item, const void *arg);

/* The SQL of a model's load statement; caller frees. Exposed for tests. */
char *oc_pg_load_sql(const oc_model_conf_t *m);

#endif

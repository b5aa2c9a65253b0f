/*
 * oc_pg: the PostgreSQL loader: a small pool of asynchronous libpq
 * connections driven by the loop (PQsendQueryPrepared, PQconsumeInput,
 * PQisBusy, events on PQsocket). Nothing here ever blocks the loop.
 *
 * A load is one query for one model: `... WHERE key = ANY($1)` with all the
 * ids bound as one array parameter (never spliced into SQL), prepared once
 * per connection (oc_sql_load). Each connection pins the session settings
 * of oc_sql_session, so every sidecar caches the same bytes for a row. In
 * transaction mode (pool_mode = transaction) nothing is prepared, and the
 * settings go in each load's own transaction (oc_sql_local_reader).
 *
 * Each connection is an oc_pgconn (reconnects by itself); a load waits in a
 * queue until a connection is idle. When no connection is even trying to
 * connect, loads fail at once ("database unavailable: <why>").
 *
 * The answer is handed back matched to the ids asked: rows[i] is the row of
 * id i (json NULL: PostgreSQL has no such row). A load whose rows cannot be
 * matched (out of memory) fails as a whole: no id is ever reported absent
 * because objcached could not look.
 *
 * Ownership: oc_pg_load copies the ids; `done` is called exactly once, on
 * the loop thread, possibly before oc_pg_load returns (the database is
 * unavailable, or out of memory). rows and err are valid only during the
 * callback: keep a copy of what you keep. A load whose time runs out gets
 * OC_ETIMEOUT at load_timeout even if PostgreSQL has not answered yet.
 */
#ifndef OC_PG_H
#define OC_PG_H

#include <stddef.h>

#include "oc_conf.h"
#include "oc_sql.h"
#include "oc_stats.h"
#include "oc_status.h"

struct event_base;
typedef struct oc_pg oc_pg_t;

typedef struct oc_pg_row {
    const char *json; /* NULL: no row with this id */
    size_t len;
} oc_pg_row_t;

/* rows is NULL unless st == OC_OK. */
typedef void (*oc_pg_done_fn)(const oc_pg_row_t *rows, size_t n, oc_status_t st,
                              const char *err, void *arg);

struct oc_gate;
/* gate: the test fault points (NULL in production). */
oc_pg_t *oc_pg_new(struct event_base *base, const oc_conf_t *conf, oc_stats_t *stats,
                   const struct oc_gate *gate, char *err);
/* A reload: new load statements (columns or tables may have changed) under
 * new names, prepared again on each connection's next use; loads under way
 * finish with the old ones. conf must keep model indexes stable (see
 * oc_reload.h) and outlive pg's use of it. */
oc_status_t oc_pg_reconfigure(oc_pg_t *pg, const oc_conf_t *conf, char *err);
/* Closes the connections; queued and running loads get done(OC_EDB). */
void oc_pg_free(oc_pg_t *pg);

struct pg_conn;
/* At start, on the start's one blocking connection (oc_inval_read_generations,
 * the conninfo's role): a warning per model whose table has row security
 * active for that role (event=row_security_active): a row its policies hide
 * is loaded as absent and cached as "not found". --check-config says the
 * same; this says it to a daemon started without it. A query that fails
 * says nothing (the start goes on; the generations read logs the cause). */
void oc_pg_warn_row_security(const oc_conf_t *conf, struct pg_conn *c);

/* How many loader connections would run a load submitted now at once: up,
 * running nothing, and no load queued. oc_fill splits a load across them
 * (load_split_min). */
size_t oc_pg_idle(const oc_pg_t *pg);

/* Load the rows of n ids of model model_idx; id(arg, i, ...) gives id i in
 * its canonical text (duplicates allowed). */
void oc_pg_load(oc_pg_t *pg, size_t model_idx, size_t n, oc_sql_item_fn id,
                const void *id_arg, oc_pg_done_fn done, void *arg);
/* The same, failed with OC_ETIMEOUT at `deadline` (oc_stats_now()'s clock)
 * instead of load_timeout from now: a load that continues another one
 * within that one's time (oc_fill's halves of a split load). A deadline
 * already past fails it at once. */
void oc_pg_load_until(oc_pg_t *pg, size_t model_idx, size_t n, oc_sql_item_fn id,
                      const void *id_arg, double deadline, oc_pg_done_fn done, void *arg);

#endif

#include "oc_pg.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_log.h"

#define OC_PG_RECONNECT_MIN_MS 100
#define OC_PG_RECONNECT_MAX_MS 2000
#define OC_PG_CONNECT_TIMEOUT_MS 5000

typedef enum oc_pgc_state {
    OC_PGC_DOWN,       /* no connection; reconnect timer armed */
    OC_PGC_CONNECTING, /* PQconnectPoll in progress */
    OC_PGC_SETUP,      /* session SETs sent */
    OC_PGC_IDLE,       /* ready for a load */
    OC_PGC_PREPARE,    /* preparing the statement of conn->load's model */
    OC_PGC_QUERY,      /* load query sent */
} oc_pgc_state_t;

struct oc_pg_conn {
    oc_pg_t *pg;
    size_t idx;
    oc_pgc_state_t state;
    PGconn *conn;
    struct event *io;     /* on PQsocket(conn) */
    struct event *timer;  /* reconnect / connect timeout / stuck query */
    unsigned char *prepared; /* per model: statement prepared here */
    oc_pg_load_t *load;   /* running load; NULL if it timed out (orphan) */
    PGresult *res;        /* the result being collected */
    int failed;           /* a result of this command was an error */
    uint32_t backoff_ms;
};

struct oc_pg {
    struct event_base *base;
    const oc_conf_t *conf;
    oc_stats_t *stats;
    char **sql;           /* per model */
    char *setup_sql;
    oc_pg_conn_t *conns;
    size_t nconns;
    oc_pg_load_t *queue_head, *queue_tail;
    char last_error[OC_ERRLEN];
};

static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void conn_dispatch(oc_pg_conn_t *c);
static void pg_dispatch(oc_pg_t *pg);

/* ---- SQL ----------------------------------------------------------------- */

static const char *key_sql_type(oc_key_type_t t)
{
    static const char *const names[] = {"bigint", "integer", "uuid", "text"};
    return names[t];
}

char *oc_pg_load_sql(const oc_model_conf_t *m)
{
    /* Identifiers were checked by oc_conf ([A-Za-z_][A-Za-z0-9_]*); quoting
     * them keeps case and reserved words exact. */
    size_t cap = 512 + 80 * m->ncolumns;
    char *sql = malloc(cap);
    if (sql == NULL)
        return NULL;
    size_t off = (size_t)snprintf(sql, cap, "SELECT t.\"%s\"::text, ", m->key_column);
    if (m->ncolumns == 0) {
        off += (size_t)snprintf(sql + off, cap - off, "row_to_json(t)::text");
    } else {
        off += (size_t)snprintf(sql + off, cap - off, "(SELECT row_to_json(r) FROM (SELECT ");
        for (size_t i = 0; i < m->ncolumns; i++)
            off += (size_t)snprintf(sql + off, cap - off, "%st.\"%s\"",
                                    i ? ", " : "", m->columns[i]);
        off += (size_t)snprintf(sql + off, cap - off, ") AS r)::text");
    }
    snprintf(sql + off, cap - off,
             " FROM \"%s\".\"%s\" AS t WHERE t.\"%s\" = ANY($1::%s[])",
             m->schema, m->table, m->key_column, key_sql_type(m->key_type));
    return sql;
}

static char *make_setup_sql(const oc_conf_t *conf)
{
    char *sql = malloc(512);
    if (sql == NULL)
        return NULL;
    /* timezone is checked by oc_conf to [A-Za-z0-9_/+-]: safe in quotes. */
    snprintf(sql, 512,
             "SET TimeZone = '%s'; SET DateStyle = 'ISO, MDY'; "
             "SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; "
             "SET bytea_output = 'hex'; SET statement_timeout = %u; "
             "SET client_connection_check_interval = 1000",
             conf->timezone, conf->load_timeout_ms);
    return sql;
}

/* ---- loads --------------------------------------------------------------- */

oc_pg_load_t *oc_pg_load_new(size_t model_idx, char *ids, oc_pg_done_fn done,
                             void *arg)
{
    oc_pg_load_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->model_idx = model_idx;
    l->ids = ids;
    l->done = done;
    l->arg = arg;
    return l;
}

void oc_pg_load_free(oc_pg_load_t *load)
{
    if (load == NULL)
        return;
    if (load->deadline)
        event_free(load->deadline);
    free(load->ids);
    free(load);
}

/* Hand a load back to its owner; oc_pg forgets it. */
static void load_finish(oc_pg_load_t *l, PGresult *res, oc_status_t st,
                        const char *err)
{
    if (l->deadline)
        event_del(l->deadline);
    if (st != OC_OK)
        l->pg->stats->pg_errors++;
    l->conn = NULL;
    l->done(l, res, st, err, l->arg);
}

static void queue_remove(oc_pg_t *pg, oc_pg_load_t *l)
{
    oc_pg_load_t **pp = &pg->queue_head, *prev = NULL;
    while (*pp && *pp != l)
        prev = *pp, pp = &(*pp)->next;
    if (*pp == NULL)
        return;
    *pp = l->next;
    if (pg->queue_tail == l)
        pg->queue_tail = prev;
    l->next = NULL;
}

static void load_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_pg_load_t *l = arg;
    if (l->conn != NULL) {
        /* Running: the server's statement_timeout cancels the query; the
         * connection keeps the orphan until its answer comes, and is
         * dropped if that takes another load_timeout (see conn_timer_cb). */
        oc_pg_conn_t *c = l->conn;
        c->load = NULL;
        struct timeval tv = {l->pg->conf->load_timeout_ms / 1000 + 1,
                             (l->pg->conf->load_timeout_ms % 1000) * 1000};
        evtimer_add(c->timer, &tv);
    } else {
        queue_remove(l->pg, l);
    }
    load_finish(l, NULL, OC_ETIMEOUT, "load timed out");
}

static int any_conn_alive(const oc_pg_t *pg)
{
    for (size_t i = 0; i < pg->nconns; i++)
        if (pg->conns[i].state != OC_PGC_DOWN)
            return 1;
    return 0;
}

void oc_pg_submit(oc_pg_t *pg, oc_pg_load_t *l)
{
    l->pg = pg;
    l->next = NULL;
    l->conn = NULL;
    if (!any_conn_alive(pg)) {
        /* Fail fast: no connection is even trying; waiting helps nobody. */
        char err[OC_ERRLEN + 32];
        snprintf(err, sizeof(err), "database unavailable: %s", pg->last_error);
        load_finish(l, NULL, OC_EDB, err);
        return;
    }
    if (l->deadline == NULL)
        l->deadline = evtimer_new(pg->base, load_deadline_cb, l);
    if (l->deadline == NULL) {
        load_finish(l, NULL, OC_ENOMEM, "out of memory");
        return;
    }
    struct timeval tv = {pg->conf->load_timeout_ms / 1000,
                         (pg->conf->load_timeout_ms % 1000) * 1000};
    evtimer_add(l->deadline, &tv);
    if (pg->queue_tail)
        pg->queue_tail->next = l;
    else
        pg->queue_head = l;
    pg->queue_tail = l;
    pg_dispatch(pg);
}

/* ---- connections ----------------------------------------------------------- */

static void first_line(char *dst, size_t cap, const char *msg)
{
    size_t n = strcspn(msg ? msg : "", "\n");
    snprintf(dst, cap, "%.*s", (int)n, msg ? msg : "");
}

static void conn_watch(oc_pg_conn_t *c, short what)
{
    event_del(c->io);
    if (what == 0 || c->conn == NULL || PQsocket(c->conn) < 0)
        return;
    event_assign(c->io, c->pg->base, PQsocket(c->conn), what | EV_PERSIST,
                 conn_io_cb, c);
    event_add(c->io, NULL);
}

static void conn_set_state(oc_pg_conn_t *c, oc_pgc_state_t st)
{
    int was_up = c->state >= OC_PGC_IDLE;
    int is_up = st >= OC_PGC_IDLE;
    if (was_up != is_up)
        c->pg->stats->pg_connections_up += is_up ? 1 : (uint64_t)-1;
    c->state = st;
}

static void conn_down(oc_pg_conn_t *c, const char *why)
{
    oc_pg_t *pg = c->pg;
    char reason[OC_ERRLEN];
    first_line(reason, sizeof(reason), why);
    /* Say it once per outage, not at every reconnect attempt. */
    char clean[OC_ERRLEN];
    oc_log(c->state < OC_PGC_IDLE && strcmp(reason, pg->last_error) == 0
               ? OC_LOG_DEBUG : OC_LOG_WARN,
           "event=pg_conn_down conn=%zu reason=\"%s\"", c->idx,
           oc_log_clean(clean, sizeof(clean), reason));
    memcpy(pg->last_error, reason, sizeof(reason));
    conn_watch(c, 0);
    if (c->res)
        PQclear(c->res), c->res = NULL;
    if (c->conn)
        PQfinish(c->conn), c->conn = NULL;
    memset(c->prepared, 0, pg->conf->nmodels);
    conn_set_state(c, OC_PGC_DOWN);
    oc_pg_load_t *l = c->load;
    c->load = NULL;
    if (l) {
        char err[OC_ERRLEN + 32];
        snprintf(err, sizeof(err), "database connection lost: %s", pg->last_error);
        load_finish(l, NULL, OC_EDB, err);
    }
    struct timeval tv = {c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    c->backoff_ms = c->backoff_ms * 2 > OC_PG_RECONNECT_MAX_MS ? OC_PG_RECONNECT_MAX_MS
                                                                : c->backoff_ms * 2;
    if (!any_conn_alive(pg)) {
        /* Nobody can serve the queue soon: fail it rather than let it wait. */
        while (pg->queue_head) {
            oc_pg_load_t *q = pg->queue_head;
            queue_remove(pg, q);
            char err[OC_ERRLEN + 32];
            snprintf(err, sizeof(err), "database unavailable: %s", pg->last_error);
            load_finish(q, NULL, OC_EDB, err);
        }
    }
}

static void conn_poll_connect(oc_pg_conn_t *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        conn_watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        conn_watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        conn_down(c, PQerrorMessage(c->conn));
        return;
    }
    evtimer_del(c->timer);
    if (PQsetnonblocking(c->conn, 1) != 0 ||
        !PQsendQuery(c->conn, c->pg->setup_sql)) {
        conn_down(c, PQerrorMessage(c->conn));
        return;
    }
    c->failed = 0;
    conn_set_state(c, OC_PGC_SETUP);
    conn_watch(c, EV_READ);
    if (PQflush(c->conn) == 1)
        conn_watch(c, EV_READ | EV_WRITE);
}

static void conn_start(oc_pg_conn_t *c)
{
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {c->pg->conf->conninfo, "objcached", NULL};
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (c->conn == NULL) {
        conn_down(c, "out of memory");
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        conn_down(c, PQerrorMessage(c->conn));
        return;
    }
    conn_set_state(c, OC_PGC_CONNECTING);
    struct timeval tv = {OC_PG_CONNECT_TIMEOUT_MS / 1000, 0};
    evtimer_add(c->timer, &tv);
    conn_poll_connect(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_pg_conn_t *c = arg;
    switch (c->state) {
    case OC_PGC_DOWN:
        conn_start(c);
        break;
    case OC_PGC_CONNECTING:
    case OC_PGC_SETUP:
        conn_down(c, "connect timed out");
        break;
    default:
        /* An orphaned query the server did not end in time. */
        conn_down(c, "query did not end after load_timeout; connection dropped");
        break;
    }
}

static void conn_send_query(oc_pg_conn_t *c)
{
    oc_pg_load_t *l = c->load;
    char name[32];
    snprintf(name, sizeof(name), "oc_load_%zu", l->model_idx);
    const char *params[1] = {l->ids};
    int ok;
    if (!c->prepared[l->model_idx]) {
        ok = PQsendPrepare(c->conn, name, c->pg->sql[l->model_idx], 1, NULL);
        conn_set_state(c, OC_PGC_PREPARE);
    } else {
        ok = PQsendQueryPrepared(c->conn, name, 1, params, NULL, NULL, 0);
        conn_set_state(c, OC_PGC_QUERY);
        c->pg->stats->pg_queries++;
    }
    if (!ok) {
        conn_down(c, PQerrorMessage(c->conn));
        return;
    }
    c->failed = 0;
    conn_watch(c, PQflush(c->conn) == 1 ? EV_READ | EV_WRITE : EV_READ);
}

/* A command ended (PQgetResult gave NULL): move on. */
static void conn_command_done(oc_pg_conn_t *c)
{
    PGresult *res = c->res;
    c->res = NULL;
    char err[OC_ERRLEN];
    first_line(err, sizeof(err), res ? PQresultErrorMessage(res) : "no result");
    oc_pgc_state_t st = c->state;
    oc_pg_load_t *l = c->load;
    if (st == OC_PGC_SETUP) {
        PQclear(res);
        if (c->failed) {
            char q[OC_ERRLEN];
            oc_log_error("event=pg_setup_failed conn=%zu reason=\"%s\"", c->idx,
                         oc_log_clean(q, sizeof(q), err));
            conn_down(c, err);
            return;
        }
        c->backoff_ms = OC_PG_RECONNECT_MIN_MS;
        conn_set_state(c, OC_PGC_IDLE);
        oc_log_info("event=pg_conn_up conn=%zu", c->idx);
        pg_dispatch(c->pg);
        return;
    }
    conn_set_state(c, OC_PGC_IDLE);
    evtimer_del(c->timer);
    if (l == NULL) { /* orphan: its load already timed out */
        PQclear(res);
    } else if (c->failed) {
        PQclear(res);
        c->load = NULL;
        load_finish(l, NULL, OC_EDB, err);
    } else if (st == OC_PGC_PREPARE) {
        PQclear(res);
        c->prepared[l->model_idx] = 1;
        conn_send_query(c);
        return;
    } else {
        c->load = NULL;
        c->pg->stats->pg_rows += (uint64_t)PQntuples(res);
        load_finish(l, res, OC_OK, NULL);
    }
    if (c->state == OC_PGC_IDLE)
        conn_dispatch(c);
}

static void conn_read(oc_pg_conn_t *c)
{
    if (!PQconsumeInput(c->conn)) {
        conn_down(c, PQerrorMessage(c->conn));
        return;
    }
    while (!PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (r == NULL) {
            conn_command_done(c);
            return;
        }
        ExecStatusType s = PQresultStatus(r);
        int bad = (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK);
        /* Keep the first error, or else the last result. */
        if (c->failed) {
            PQclear(r);
        } else {
            PQclear(c->res);
            c->res = r;
            c->failed = bad;
        }
    }
    if (PQstatus(c->conn) == CONNECTION_BAD)
        conn_down(c, PQerrorMessage(c->conn));
}

static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    oc_pg_conn_t *c = arg;
    if (c->state == OC_PGC_CONNECTING) {
        conn_poll_connect(c);
        return;
    }
    if (what & EV_WRITE) {
        int f = PQflush(c->conn);
        if (f < 0) {
            conn_down(c, PQerrorMessage(c->conn));
            return;
        }
        if (f == 0)
            conn_watch(c, EV_READ);
    }
    if (what & EV_READ)
        conn_read(c);
}

static void conn_dispatch(oc_pg_conn_t *c)
{
    oc_pg_t *pg = c->pg;
    if (c->state != OC_PGC_IDLE || pg->queue_head == NULL)
        return;
    oc_pg_load_t *l = pg->queue_head;
    queue_remove(pg, l);
    l->conn = c;
    c->load = l;
    conn_send_query(c);
}

static void pg_dispatch(oc_pg_t *pg)
{
    for (size_t i = 0; i < pg->nconns && pg->queue_head; i++)
        conn_dispatch(&pg->conns[i]);
}

/* ---- life ------------------------------------------------------------------ */

oc_pg_t *oc_pg_new(struct event_base *base, const oc_conf_t *conf,
                   oc_stats_t *stats, char *err)
{
    oc_pg_t *pg = calloc(1, sizeof(*pg));
    if (pg == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    pg->base = base;
    pg->conf = conf;
    pg->stats = stats;
    snprintf(pg->last_error, sizeof(pg->last_error), "not connected yet");
    pg->sql = calloc(conf->nmodels, sizeof(char *));
    pg->conns = calloc(conf->pg_connections, sizeof(*pg->conns));
    pg->setup_sql = make_setup_sql(conf);
    if (pg->sql == NULL || pg->conns == NULL || pg->setup_sql == NULL)
        goto nomem;
    for (size_t i = 0; i < conf->nmodels; i++)
        if ((pg->sql[i] = oc_pg_load_sql(&conf->models[i])) == NULL)
            goto nomem;
    pg->nconns = conf->pg_connections;
    for (size_t i = 0; i < pg->nconns; i++) {
        oc_pg_conn_t *c = &pg->conns[i];
        c->pg = pg;
        c->idx = i;
        c->state = OC_PGC_DOWN;
        c->backoff_ms = OC_PG_RECONNECT_MIN_MS;
        c->prepared = calloc(conf->nmodels ? conf->nmodels : 1, 1);
        c->io = event_new(base, -1, 0, conn_io_cb, c);
        c->timer = evtimer_new(base, conn_timer_cb, c);
        if (c->prepared == NULL || c->io == NULL || c->timer == NULL)
            goto nomem;
    }
    for (size_t i = 0; i < pg->nconns; i++)
        conn_start(&pg->conns[i]);
    return pg;
nomem:
    oc_fail(err, OC_ENOMEM, "out of memory");
    oc_pg_free(pg);
    return NULL;
}

void oc_pg_free(oc_pg_t *pg)
{
    if (pg == NULL)
        return;
    for (size_t i = 0; pg->conns != NULL && i < pg->nconns; i++) {
        oc_pg_conn_t *c = &pg->conns[i];
        oc_pg_load_t *l = c->load;
        c->load = NULL;
        if (c->res)
            PQclear(c->res);
        if (c->conn)
            PQfinish(c->conn);
        if (c->io)
            event_free(c->io);
        if (c->timer)
            event_free(c->timer);
        free(c->prepared);
        if (l)
            load_finish(l, NULL, OC_EDB, "shutting down");
    }
    while (pg->queue_head) {
        oc_pg_load_t *q = pg->queue_head;
        queue_remove(pg, q);
        load_finish(q, NULL, OC_EDB, "shutting down");
    }
    for (size_t i = 0; pg->sql && i < pg->conf->nmodels; i++)
        free(pg->sql[i]);
    free(pg->sql);
    free(pg->setup_sql);
    free(pg->conns);
    free(pg);
}

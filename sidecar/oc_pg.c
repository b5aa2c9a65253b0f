#include "oc_pg.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_gate.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_md5.h"
#include "oc_pgconn.h"

typedef struct oc_pg_conn oc_pg_conn_t;
typedef struct oc_pg_load oc_pg_load_t;

/* One load: its ids (copied, and as the array literal it binds), where it
 * runs, and whom to tell. */
struct oc_pg_load {
    oc_pg_t *pg;
    size_t model_idx;
    size_t n;
    char *ids;      /* the ids, back to back */
    size_t *id_off; /* [n + 1]: id i is ids[id_off[i] .. id_off[i + 1]) */
    char *lit;      /* the array literal, e.g. {"1","2"} */
    oc_pg_done_fn done;
    void *arg;
    struct event *deadline;
    oc_pg_conn_t *conn; /* the connection running it, or NULL if queued */
    oc_pg_load_t *next;
    double submitted; /* oc_stats_now() at submit, for load_seconds */
    double until;     /* oc_stats_now() time it fails at; 0: load_timeout
                         after submit */
    int retried;      /* sent again once already (load_retry) */
    int read_first;   /* its deadline waited once for input already there */
};

/* One loader connection: which statements it has prepared, what it runs. */
struct oc_pg_conn {
    oc_pg_t *pg;
    oc_pgconn_t *pc;
    unsigned char *prepared; /* per model: statement prepared here */
    unsigned prepared_gen;   /* pg->gen the flags are for */
    size_t nstmts;           /* statements prepared in this session, any gen */
    size_t prep_model;       /* the PREPARE in flight: its model and gen, */
    unsigned prep_gen;       /* recorded even if its load timed out meanwhile */
    oc_pg_load_t *load;      /* running load; NULL if idle or orphaned */
    struct event *stuck;     /* an orphaned query that does not end */
    int stuck_read_first;    /* its timer waited once for input already there */
    int up;                  /* counted in pg_connections_up */
};

struct oc_pg {
    struct event_base *base;
    const oc_conf_t *conf;
    oc_stats_t *stats;
    const oc_gate_t *gate; /* test fault points, or NULL */
    char **sql;            /* per model */
    size_t nsql;
    unsigned gen; /* bumped by a reload: statement names change */
    oc_pg_conn_t *conns;
    size_t nconns;
    oc_pg_load_t *queue_head, *queue_tail;
};

static void pg_dispatch(oc_pg_t *pg);

/* ---- loads --------------------------------------------------------------- */

static void load_free(oc_pg_load_t *l)
{
    if (l->deadline)
        event_free(l->deadline);
    free(l->ids);
    free(l->lit);
    free(l->id_off);
    free(l);
}

/* rows[i] = the row of id i, matched by the key's text (the first column,
 * key::text: the canonical form ids are in). Returns OC_ENOMEM if the
 * matching cannot be done: then nothing may be called absent. */
static oc_status_t match_rows(const oc_pg_load_t *l, const PGresult *res,
                              oc_pg_row_t *rows)
{
    oc_map_t *byid = oc_map_new(l->n);
    size_t *dup = malloc(l->n * sizeof(*dup)); /* i -> first index of its id */
    if (byid == NULL || dup == NULL) {
        oc_map_free(byid);
        free(dup);
        return OC_ENOMEM;
    }
    oc_status_t st = OC_OK;
    for (size_t i = 0; i < l->n && st == OC_OK; i++) {
        const char *id = l->ids + l->id_off[i];
        size_t len = l->id_off[i + 1] - l->id_off[i];
        void *first = NULL; /* one hash: added unless there */
        st = oc_map_add(byid, id, len, (void *)(uintptr_t)(i + 1), &first);
        dup[i] = first ? (uintptr_t)first - 1 : i;
    }
    for (int r = 0; st == OC_OK && r < PQntuples(res); r++) {
        if (PQgetisnull(res, r, 0) || PQgetisnull(res, r, 1))
            continue;
        void *v = oc_map_get(byid, PQgetvalue(res, r, 0), (size_t)PQgetlength(res, r, 0));
        if (v == NULL || rows[(uintptr_t)v - 1].json != NULL)
            continue;
        rows[(uintptr_t)v - 1] =
            (oc_pg_row_t){PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1)};
    }
    for (size_t i = 0; st == OC_OK && i < l->n; i++)
        rows[i] = rows[dup[i]];
    oc_map_free(byid);
    free(dup);
    return st;
}

/* Hand a load's answer to its owner, then free it. */
static void load_finish(oc_pg_load_t *l, PGresult *res, oc_status_t st, const char *err)
{
    oc_stats_t *stats = l->pg->stats;
    oc_pg_row_t *rows = NULL;
    if (l->deadline)
        event_del(l->deadline);
    if (st == OC_OK && (rows = calloc(l->n ? l->n : 1, sizeof(*rows))) == NULL)
        st = OC_ENOMEM, err = "out of memory";
    if (st == OC_OK &&
        (oc_gate_oom(l->pg->gate, "match_rows") || match_rows(l, res, rows) != OC_OK))
        st = OC_ENOMEM, err = "out of memory matching rows";
    if (st != OC_OK) {
        stats->pg_errors++;
        stats->models[l->model_idx].pg_errors++;
    }
    if (l->submitted > 0)
        oc_hist_observe(&stats->load_seconds, oc_stats_now() - l->submitted);
    l->conn = NULL;
    l->done(st == OC_OK ? rows : NULL, l->n, st, err, l->arg);
    free(rows);
    PQclear(res);
    load_free(l);
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

static int any_conn_alive(const oc_pg_t *pg)
{
    for (size_t i = 0; i < pg->nconns; i++)
        if (pg->conns[i].pc && oc_pgconn_alive(pg->conns[i].pc))
            return 1;
    return 0;
}

static void fail_queue(oc_pg_t *pg, const char *why)
{
    char err[OC_ERRLEN + 32];
    snprintf(err, sizeof(err), "database unavailable: %s", why);
    while (pg->queue_head) {
        oc_pg_load_t *q = pg->queue_head;
        queue_remove(pg, q);
        load_finish(q, NULL, OC_EDB, err);
    }
}

static const struct timeval next_turn = {0, 0};

static void load_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_pg_load_t *l = arg;
    /* Its answer may be in the socket, unread because this sidecar stood
     * still: read first, decide in the next turn (the read may finish l,
     * which deletes this timer). Once: a server still sending times out. */
    if (l->conn != NULL && !l->read_first && oc_pgconn_read_first(l->conn->pc)) {
        l->read_first = 1;
        evtimer_add(l->deadline, &next_turn);
        return;
    }
    if (l->conn != NULL) {
        /* Running: the server's statement_timeout cancels the query; the
         * connection is dropped if it has not answered a load_timeout
         * later (conn_stuck_cb). Its answer still comes to conn_query_done
         * (or conn_prepare_done) with no load: that disarms the timer and
         * gives the connection to the next load in the queue. */
        oc_pg_conn_t *c = l->conn;
        c->load = NULL;
        uint32_t ms = l->pg->conf->load_timeout_ms;
        struct timeval tv = {ms / 1000 + 1, (suseconds_t)(ms % 1000) * 1000};
        c->stuck_read_first = 0;
        evtimer_add(c->stuck, &tv);
    } else {
        queue_remove(l->pg, l);
    }
    load_finish(l, NULL, OC_ETIMEOUT, "load timed out");
}

static void load_submit(oc_pg_t *pg, oc_pg_load_t *l)
{
    l->pg = pg;
    l->submitted = oc_stats_now();
    double left =
        l->until > 0 ? l->until - l->submitted : pg->conf->load_timeout_ms / 1e3;
    if (left <= 0) {
        load_finish(l, NULL, OC_ETIMEOUT, "load timed out");
        return;
    }
    if (!any_conn_alive(pg)) {
        /* Fail fast: no connection is even trying; waiting helps nobody. */
        char err[OC_ERRLEN + 32];
        snprintf(err, sizeof(err), "database unavailable: %s",
                 oc_pgconn_last_error(pg->conns[0].pc));
        load_finish(l, NULL, OC_EDB, err);
        return;
    }
    if ((l->deadline = evtimer_new(pg->base, load_deadline_cb, l)) == NULL) {
        load_finish(l, NULL, OC_ENOMEM, "out of memory");
        return;
    }
    struct timeval tv = {(time_t)left,
                         (suseconds_t)((left - (double)(time_t)left) * 1e6)};
    /* left is from the clock; the timer counts from the loop's cached
     * time, which a long turn leaves behind: the same clock for both */
    event_base_update_cache_time(pg->base);
    evtimer_add(l->deadline, &tv);
    if (pg->queue_tail)
        pg->queue_tail->next = l;
    else
        pg->queue_head = l;
    pg->queue_tail = l;
    pg_dispatch(pg);
}

/* The load's own copy of the ids, and the literal that binds them. */
static oc_status_t load_copy_ids(oc_pg_load_t *l, oc_sql_item_fn id, const void *id_arg)
{
    size_t bytes = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *p;
        size_t len;
        id(id_arg, i, &p, &len);
        bytes += len;
    }
    l->ids = malloc(bytes ? bytes : 1);
    l->id_off = malloc((l->n + 1) * sizeof(*l->id_off));
    l->lit = oc_sql_array_of(l->n, id, id_arg);
    if (l->ids == NULL || l->id_off == NULL || l->lit == NULL)
        return OC_ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *p;
        size_t len;
        id(id_arg, i, &p, &len);
        memcpy(l->ids + off, p, len);
        l->id_off[i] = off;
        off += len;
    }
    l->id_off[l->n] = off;
    return OC_OK;
}

void oc_pg_load(oc_pg_t *pg, size_t model_idx, size_t n, oc_sql_item_fn id,
                const void *id_arg, oc_pg_done_fn done, void *arg)
{
    oc_pg_load_until(pg, model_idx, n, id, id_arg, 0, done, arg);
}

void oc_pg_load_until(oc_pg_t *pg, size_t model_idx, size_t n, oc_sql_item_fn id,
                      const void *id_arg, double deadline, oc_pg_done_fn done, void *arg)
{
    oc_pg_load_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        done(NULL, n, OC_ENOMEM, "out of memory", arg);
        return;
    }
    l->until = deadline;
    l->pg = pg;
    l->model_idx = model_idx;
    l->n = n;
    l->done = done;
    l->arg = arg;
    if (n == 0 || load_copy_ids(l, id, id_arg) != OC_OK) {
        load_finish(l, NULL, n ? OC_ENOMEM : OC_EINVAL, n ? "out of memory" : "no ids");
        return;
    }
    load_submit(pg, l);
}

/* ---- connections ----------------------------------------------------------- */

static void conn_run(oc_pg_conn_t *c);

/* The server ended the session (terminated, shut down, the network):
 * nothing more can run on this connection. */
static int session_ended(const char *sqlstate)
{
    return sqlstate[0] == '\0' || strncmp(sqlstate, "08", 2) == 0 ||
           strcmp(sqlstate, "57P01") == 0 || strcmp(sqlstate, "57P02") == 0 ||
           strcmp(sqlstate, "57P05") == 0;
}

/* A load that failed for a reason of its connection, not of its query (the
 * session ended under it; a standby cancelled it for a recovery conflict,
 * or a deadlock: class 40) is a read: it goes back to the head of the
 * queue, once, within its own deadline, rather than fail a client's get
 * (which some clients take for "not found"). 1 if queued again; then
 * dispatching it is the caller's. `unsent`: the query never left. */
static int load_retry(oc_pg_conn_t *c, oc_pg_load_t *l, oc_status_t st, const char *err,
                      int unsent)
{
    oc_pg_t *pg = c->pg;
    const char *state = unsent ? "" : oc_pgconn_sqlstate(c->pc);
    if (l->retried || st != OC_EDB ||
        (!session_ended(state) && strncmp(state, "40", 2) != 0))
        return 0;
    if (!unsent && session_ended(state))
        oc_pgconn_reset(c->pc, err); /* a session that said FATAL is over */
    if (!any_conn_alive(pg))
        return 0;
    char clean[OC_ERRLEN];
    oc_log_debug("event=pg_load_retry reason=\"%s\"",
                 oc_log_clean(clean, sizeof(clean), err ? err : ""));
    l->retried = 1;
    l->conn = NULL;
    l->next = pg->queue_head;
    pg->queue_head = l;
    if (pg->queue_tail == NULL)
        pg->queue_tail = l;
    return 1;
}

/* The server's statement_timeout (= load_timeout, set by objcached) ended
 * the load: it is objcached's own timeout, and says so. The server's clock
 * starts when the statement does, after load_submit's, so its cancel
 * (57014) normally comes after load_deadline_cb has failed the load; when
 * the loop runs late (a busy host) both are ready at once and libevent
 * hands over the socket first, which told the client "canceling statement
 * due to statement timeout" instead. A 57014 before the deadline is
 * another's cancel (pg_cancel_backend) and keeps its text. */
static int server_timed_out(const oc_pg_conn_t *c, const oc_pg_load_t *l)
{
    double deadline =
        l->until > 0 ? l->until : l->submitted + c->pg->conf->load_timeout_ms / 1e3;
    return strcmp(oc_pgconn_sqlstate(c->pc), "57014") == 0 && oc_stats_now() >= deadline;
}

static void conn_query_done(oc_pgconn_t *pc, PGresult *res, oc_status_t st,
                            const char *err, void *arg)
{
    (void)pc;
    oc_pg_conn_t *c = arg;
    oc_pg_load_t *l = c->load;
    c->load = NULL;
    evtimer_del(c->stuck);
    if (l == NULL) { /* a load that timed out (load_deadline_cb): it ended */
        PQclear(res);
        pg_dispatch(c->pg);
        return;
    }
    if (st == OC_OK) {
        c->pg->stats->pg_rows += (uint64_t)PQntuples(res);
        c->pg->stats->models[l->model_idx].pg_rows += (uint64_t)PQntuples(res);
    } else if (server_timed_out(c, l)) {
        st = OC_ETIMEOUT, err = "load timed out";
    } else if (load_retry(c, l, st, err, 0)) {
        PQclear(res);
        pg_dispatch(c->pg);
        return;
    }
    load_finish(l, res, st, err);
    pg_dispatch(c->pg);
}

static void conn_prepare_done(oc_pgconn_t *pc, PGresult *res, oc_status_t st,
                              const char *err, void *arg)
{
    oc_pg_conn_t *c = arg;
    PQclear(res);
    /* "already exists" (42P05): the session was another client's first (a
     * pooler that hands sessions on without DISCARD ALL: pgbouncer with an
     * empty server_reset_query, an objcached restarted) and holds this very
     * statement, its SQL being in its name (stmt_name): use it. Refused,
     * every load on this connection failed until it was closed. */
    if (st != OC_OK && strcmp(oc_pgconn_sqlstate(pc), "42P05") == 0)
        st = OC_OK;
    /* The statement exists in the session whether or not its load is still
     * here: a PREPARE blocked (by a lock on the table) past load_timeout
     * that succeeded later was not recorded, and every later load on this
     * connection failed on "prepared statement ... already exists". */
    if (st == OC_OK) {
        c->nstmts++;
        if (c->prepared_gen == c->pg->gen && c->prep_gen == c->pg->gen)
            c->prepared[c->prep_model] = 1; /* else a reload came: prepare again */
    }
    oc_pg_load_t *l = c->load;
    if (l == NULL) { /* its load timed out meanwhile (load_deadline_cb) */
        evtimer_del(c->stuck);
        pg_dispatch(c->pg);
        return;
    }
    if (st != OC_OK) {
        c->load = NULL;
        if (server_timed_out(c, l))
            load_finish(l, NULL, OC_ETIMEOUT, "load timed out");
        else if (!load_retry(c, l, st, err, 0))
            load_finish(l, NULL, st, err);
        pg_dispatch(c->pg);
        return;
    }
    conn_run(c);
}

static void conn_deallocated(oc_pgconn_t *pc, PGresult *res, oc_status_t st,
                             const char *err, void *arg)
{
    (void)pc, (void)st, (void)err; /* a failure: the statements stay, no harm */
    oc_pg_conn_t *c = arg;
    PQclear(res);
    if (c->load == NULL) { /* its load timed out meanwhile (load_deadline_cb) */
        evtimer_del(c->stuck);
        pg_dispatch(c->pg);
        return;
    }
    conn_run(c);
}

/* The name model `m`'s statement is prepared under in this generation. It
 * carries a digest of the statement's text, so a statement of that name in
 * a session is that very SQL: behind a pooler that hands a server session
 * from client to client (pgbouncer in transaction mode, or in session mode
 * without server_reset_query), a session can hold another sidecar's (or an
 * earlier run's) statements, and under a name of model index and generation
 * only, sidecars whose models differ in order executed each other's SQL:
 * one served a row of `users` as a Counter. */
static void stmt_name(const oc_pg_t *pg, size_t m, char *name, size_t cap)
{
    uint8_t d[OC_MD5_LEN];
    oc_md5(pg->sql[m], strlen(pg->sql[m]), d);
    snprintf(name, cap, "oc_load_%zu_%u_%08x%08x", m, pg->gen,
             (unsigned)oc_md5_word(d, 0), (unsigned)oc_md5_word(d, 1));
}

/* Send c->load's statement (*query = 1), or first what it needs (the
 * callback of DEALLOCATE ALL or of the PREPARE comes back to conn_run): the
 * prepared one in session mode, or in transaction mode an unnamed one, parsed
 * at each load (a prepared one would be in one server session and the
 * next load in another), the settings going in its transaction
 * (oc_pgconn). */
static oc_status_t conn_send(oc_pg_conn_t *c, oc_pg_load_t *l, int *query)
{
    const char *params[1] = {l->lit};
    *query = c->pg->conf->pg_txn_pool;
    if (*query)
        return oc_pgconn_query(c->pc, c->pg->sql[l->model_idx], 1, params,
                               conn_query_done, c);
    char name[64]; /* within NAMEDATALEN: 8 + 20 + 1 + 10 + 1 + 16 */
    if (c->prepared_gen != c->pg->gen) { /* a reload changed the statements */
        memset(c->prepared, 0, c->pg->nsql);
        c->prepared_gen = c->pg->gen;
        /* The older ones go first: each reload names its statements anew,
         * and a session that kept them would grow with every SIGHUP. */
        if (c->nstmts > 0) {
            c->nstmts = 0;
            if (oc_pgconn_query(c->pc, "DEALLOCATE ALL", 0, NULL, conn_deallocated, c) ==
                OC_OK)
                return OC_OK;
        }
    }
    stmt_name(c->pg, l->model_idx, name, sizeof(name));
    if (!c->prepared[l->model_idx]) {
        c->prep_model = l->model_idx;
        c->prep_gen = c->pg->gen;
        return oc_pgconn_prepare(c->pc, name, c->pg->sql[l->model_idx], conn_prepare_done,
                                 c);
    }
    *query = 1;
    return oc_pgconn_query_prepared(c->pc, name, 1, params, conn_query_done, c);
}

/* Send c->load's query, preparing its statement first if need be. */
static void conn_run(oc_pg_conn_t *c)
{
    oc_pg_load_t *l = c->load;
    int query;
    oc_status_t st = conn_send(c, l, &query);
    if (st == OC_OK && query) {
        c->pg->stats->pg_queries++;
        c->pg->stats->models[l->model_idx].pg_queries++;
    }
    if (st != OC_OK && c->load == l) { /* the send failed; the conn went down */
        c->load = NULL;
        if (load_retry(c, l, OC_EDB, "database connection lost", 1))
            pg_dispatch(c->pg);
        else
            load_finish(l, NULL, OC_EDB, "database connection lost");
    }
}

static void conn_dispatch(oc_pg_conn_t *c)
{
    oc_pg_t *pg = c->pg;
    if (c->load != NULL || !oc_pgconn_idle(c->pc) || pg->queue_head == NULL)
        return;
    oc_pg_load_t *l = pg->queue_head;
    queue_remove(pg, l);
    l->conn = c;
    c->load = l;
    conn_run(c);
}

static void pg_dispatch(oc_pg_t *pg)
{
    for (size_t i = 0; i < pg->nconns && pg->queue_head; i++)
        conn_dispatch(&pg->conns[i]);
}

size_t oc_pg_idle(const oc_pg_t *pg)
{
    if (pg->queue_head != NULL)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < pg->nconns; i++)
        n += pg->conns[i].load == NULL && oc_pgconn_idle(pg->conns[i].pc);
    return n;
}

static void conn_up(oc_pgconn_t *pc, void *owner)
{
    (void)pc;
    oc_pg_conn_t *c = owner;
    c->up = 1;
    c->pg->stats->pg_connections_up++;
    pg_dispatch(c->pg);
}

static void conn_down(oc_pgconn_t *pc, const char *err, void *owner)
{
    (void)pc;
    oc_pg_conn_t *c = owner;
    oc_pg_t *pg = c->pg;
    if (c->up)
        pg->stats->pg_connections_up--;
    c->up = 0;
    memset(c->prepared, 0, pg->nsql);
    c->nstmts = 0; /* a new session: nothing prepared in it */
    evtimer_del(c->stuck);
    if (!any_conn_alive(pg))
        fail_queue(pg, err); /* nobody can serve it soon */
}

static void conn_stuck_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_pg_conn_t *c = arg;
    /* the late answer may be waiting unread (load_deadline_cb): once */
    if (!c->stuck_read_first && oc_pgconn_read_first(c->pc)) {
        c->stuck_read_first = 1;
        evtimer_add(c->stuck, &next_turn);
        return;
    }
    oc_pgconn_reset(c->pc, "query did not end after load_timeout; connection dropped");
}

/* ---- life ------------------------------------------------------------------ */

oc_status_t oc_pg_reconfigure(oc_pg_t *pg, const oc_conf_t *conf, char *err)
{
    char **sql = calloc(conf->nmodels, sizeof(*sql));
    unsigned char **flags = calloc(pg->nconns, sizeof(*flags));
    int ok = sql != NULL && flags != NULL;
    for (size_t i = 0; ok && i < conf->nmodels; i++)
        ok = (sql[i] = oc_sql_load(&conf->models[i])) != NULL;
    for (size_t i = 0; ok && i < pg->nconns; i++)
        ok = (flags[i] = calloc(conf->nmodels ? conf->nmodels : 1, 1)) != NULL;
    if (!ok) {
        for (size_t i = 0; sql && i < conf->nmodels; i++)
            free(sql[i]);
        for (size_t i = 0; flags && i < pg->nconns; i++)
            free(flags[i]);
        free(sql);
        free(flags);
        return oc_fail(err, OC_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < pg->nsql; i++)
        free(pg->sql[i]);
    free(pg->sql);
    pg->sql = sql;
    pg->nsql = conf->nmodels;
    for (size_t i = 0; i < pg->nconns; i++) {
        free(pg->conns[i].prepared);
        pg->conns[i].prepared = flags[i];
    }
    free(flags);
    pg->conf = conf;
    pg->gen++; /* every connection prepares the new statements on first use */
    return OC_OK;
}

oc_pg_t *oc_pg_new(struct event_base *base, const oc_conf_t *conf, oc_stats_t *stats,
                   const oc_gate_t *gate, char *err)
{
    oc_pg_t *pg = calloc(1, sizeof(*pg));
    char *setup = NULL, *local = NULL;
    if (pg == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    pg->base = base;
    pg->conf = conf;
    pg->stats = stats;
    pg->gate = gate;
    pg->sql = calloc(conf->nmodels, sizeof(char *));
    pg->conns = calloc(conf->pg_connections, sizeof(*pg->conns));
    setup = oc_sql_session_reader(conf);
    local = conf->pg_txn_pool ? oc_sql_local_reader(conf) : NULL;
    if (pg->sql == NULL || pg->conns == NULL || setup == NULL ||
        (conf->pg_txn_pool && local == NULL))
        goto nomem;
    pg->nsql = conf->nmodels;
    for (size_t i = 0; i < conf->nmodels; i++)
        if ((pg->sql[i] = oc_sql_load(&conf->models[i])) == NULL)
            goto nomem;
    pg->nconns = conf->pg_connections;
    static const oc_pgconn_hooks_t hooks = {.up = conn_up, .down = conn_down};
    const oc_pgconn_opts_t opts = {
        .app_name = "objcached-loader", .stats = stats, .local_sql = local};
    for (size_t i = 0; i < pg->nconns; i++) {
        oc_pg_conn_t *c = &pg->conns[i];
        c->pg = pg;
        c->prepared = calloc(conf->nmodels ? conf->nmodels : 1, 1);
        c->stuck = evtimer_new(base, conn_stuck_cb, c);
        if (c->prepared == NULL || c->stuck == NULL)
            goto nomem;
    }
    for (size_t i = 0; i < pg->nconns; i++)
        if ((pg->conns[i].pc = oc_pgconn_new(base, conf->conninfo, &opts, setup, &hooks,
                                             &pg->conns[i])) == NULL)
            goto nomem;
    free(setup);
    free(local);
    return pg;
nomem:
    free(setup);
    free(local);
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
        oc_pgconn_free(c->pc);
        c->pc = NULL;
        if (c->stuck)
            event_free(c->stuck);
        free(c->prepared);
        if (l)
            load_finish(l, NULL, OC_EDB, "shutting down");
    }
    fail_queue(pg, "shutting down");
    for (size_t i = 0; pg->sql && i < pg->nsql; i++)
        free(pg->sql[i]);
    free(pg->sql);
    free(pg->conns);
    free(pg);
}

void oc_pg_warn_row_security(const oc_conf_t *conf, PGconn *c)
{
    char *sql = oc_sql_row_security(conf);
    if (sql == NULL)
        return;
    PGresult *r = PQexec(c, sql);
    free(sql);
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
        oc_log_warn(
            "event=row_security_active model=%s table=%s.%s role=%s "
            "reason=\"rows its policies hide from the role are loaded as absent and "
            "cached as not found\" hint=\"give the role BYPASSRLS, or a policy "
            "that shows it every row\"",
            PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
            PQgetvalue(r, i, 3));
    PQclear(r);
}

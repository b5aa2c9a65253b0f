#include "oc_pgconn.h"

#include <event2/event.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "oc_log.h"
#include "oc_md5.h"

typedef enum oc_pgconn_state {
    OC_PGCONN_DOWN,       /* no connection; reconnect timer armed */
    OC_PGCONN_CONNECTING, /* PQconnectPoll in progress */
    OC_PGCONN_SETUP,      /* the owner's setup SQL sent */
    OC_PGCONN_IDLE,       /* ready for a command */
    OC_PGCONN_BUSY,       /* a command sent; collecting its results */
    OC_PGCONN_STREAMING,  /* in COPY BOTH: CopyData to on_data */
} oc_pgconn_state_t;

struct oc_pgconn {
    struct event_base *base;
    char *conninfo;
    char *app_name;
    int replication;
    char *setup_sql;
    char *local_sql;             /* transaction mode (opts->local_sql), else NULL */
    int piped;                   /* the command in flight is a pipeline (send_local) */
    int recovery;                /* SETUP: the standby check's answer: -1 none, 0 no, 1 */
    oc_pgconn_data_fn on_data;   /* a stream's messages */
    oc_pgconn_begin_fn on_begin; /* ... and its start */
    int paused;                  /* not reading (oc_pgconn_pause) */
    oc_pgconn_hooks_t hooks;
    void *owner;
    oc_pgconn_state_t state;
    PGconn *conn;
    struct event *io;    /* on PQsocket(conn) */
    struct event *timer; /* reconnect / connect timeout */
    PGresult *res;       /* the first error, or else the last result */
    int failed;
    oc_pgconn_done_fn cb; /* the command in flight; NULL if abandoned */
    void *cb_arg;
    uint32_t backoff_ms;
    uint64_t rng;  /* oc_pgconn_jitter's state, drawn at creation */
    int was_up;    /* for logging an outage once */
    int lost_live; /* DOWN after losing a session that was up: its first
                      reconnect is still to come (oc_pgconn_alive) */
    char last_error[OC_ERRLEN];
    /* failover: the conninfo's hosts, when tried one per attempt (nhosts
     * 0: libpq tries them all in one) */
    oc_pgconn_host_t *hosts;
    int nhosts;
    int good;      /* where this round started (memo_good) */
    int cur;       /* the host of this attempt */
    int tried;     /* attempts of this round that failed */
    int timeout_s; /* one attempt's bound */
    int replica_ok;
    oc_stats_t *stats;         /* the owner's, or NULL */
    int checking;              /* SETUP: the standby check runs first */
    int libpq_list;            /* hosts libpq tries in one attempt (not split) */
    char round_err[OC_ERRLEN]; /* each failed host's error, this round */
    /* oc_pgconn_exec: the statements prepared in this session, by sql
     * address; names are unique per connection (prep_seq) and carry a
     * digest of their SQL (stmt_name) */
    struct {
        const char *sql;
        char name[40];
    } prep[OC_PGCONN_STMTS];
    int nprep;
    unsigned prep_seq;
    int exec_slot;    /* the command in flight runs prep[exec_slot]; -1: not */
    char sqlstate[6]; /* the failed command's, for its callback ("": none) */
    /* the run waiting for its statement's prepare */
    int pend_slot;
    char **pend_params;
    int pend_n;
    oc_pgconn_done_fn pend_cb;
    void *pend_arg;
};

static void io_cb(evutil_socket_t fd, short what, void *arg);
static void setup_done(oc_pgconn_t *c);

static void first_line(char *dst, size_t cap, const char *msg)
{
    size_t n = strcspn(msg ? msg : "", "\n");
    snprintf(dst, cap, "%.*s", (int)n, msg ? msg : "");
}

uint32_t oc_pgconn_next_backoff(uint32_t ms)
{
    return ms > OC_PGCONN_BACKOFF_MAX_MS / 2 ? OC_PGCONN_BACKOFF_MAX_MS : ms * 2;
}

uint32_t oc_pgconn_jitter(uint32_t ms, uint64_t *rng)
{
    uint64_t x = *rng ? *rng : 0x9E3779B97F4A7C15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    uint32_t spread = ms / 2;
    return ms - (uint32_t)((x * 0x2545F4914F6CDD1DULL >> 32) % ((uint64_t)spread + 1));
}

/* A different state per connection and per process: the point is that
 * sidecars started from one image at one instant do not draw alike. */
static uint64_t jitter_seed(const void *c)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = ((uint64_t)time(NULL) << 32) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)c;
    return seed ? seed : 1;
}

static void set_state(oc_pgconn_t *c, oc_pgconn_state_t st)
{
    c->state = st;
}

static void watch(oc_pgconn_t *c, short what)
{
    if (c->paused && c->state == OC_PGCONN_STREAMING)
        what &= (short)~EV_READ;
    event_del(c->io);
    if (what == 0 || c->conn == NULL || PQsocket(c->conn) < 0)
        return;
    event_assign(c->io, c->base, PQsocket(c->conn), (short)(what | EV_PERSIST), io_cb, c);
    event_add(c->io, NULL);
}

/* Finish the command in flight, handing its outcome to its callback. */
static void command_done(oc_pgconn_t *c, PGresult *res, oc_status_t st, const char *err)
{
    oc_pgconn_done_fn cb = c->cb;
    c->cb = NULL;
    if (cb)
        cb(c, res, st, err, c->cb_arg);
    else
        PQclear(res);
}

/* ---- failover: one host per attempt (see the header) ---------------------- */

static int count_elems(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    int n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

static int has_empty_elem(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    return *s == ',' || s[strlen(s) - 1] == ',' || strstr(s, ",,") != NULL;
}

/* A copy of the i-th element of a comma list (NULL: past its end, or out
 * of memory). */
static char *elem_dup(const char *s, int i)
{
    for (; i > 0 && s != NULL; i--) {
        s = strchr(s, ',');
        s = s ? s + 1 : NULL;
    }
    return s ? strndup(s, strcspn(s, ",")) : NULL;
}

void oc_pgconn_hosts_free(oc_pgconn_host_t *hosts, int n)
{
    for (int i = 0; hosts && i < n; i++) {
        free(hosts[i].host);
        free(hosts[i].hostaddr);
        free(hosts[i].port);
    }
    free(hosts);
}

int oc_pgconn_split_hosts(const char *host, const char *hostaddr, const char *port,
                          oc_pgconn_host_t **out)
{
    *out = NULL;
    int nh = count_elems(host), na = count_elems(hostaddr), np = count_elems(port);
    int n = nh ? nh : na;
    if (n < 2 || (nh && na && na != nh) || (np > 1 && np != n))
        return 0;
    if (has_empty_elem(host) || has_empty_elem(hostaddr) || has_empty_elem(port))
        return 0;
    oc_pgconn_host_t *h = calloc((size_t)n, sizeof(*h));
    if (h == NULL)
        return -1;
    for (int i = 0; i < n; i++) {
        h[i].host = nh ? elem_dup(host, i) : NULL;
        h[i].hostaddr = na ? elem_dup(hostaddr, i) : NULL;
        h[i].port = np ? elem_dup(port, np == 1 ? 0 : i) : NULL;
        if ((nh && !h[i].host) || (na && !h[i].hostaddr) || (np && !h[i].port)) {
            oc_pgconn_hosts_free(h, n);
            return -1;
        }
    }
    *out = h;
    return n;
}

int oc_pgconn_attempt_timeout_s(const char *connect_timeout)
{
    if (connect_timeout == NULL)
        return OC_PGCONN_CONNECT_TIMEOUT_S;
    char *end;
    long v = strtol(connect_timeout, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == connect_timeout || *end != '\0' || v <= 0 || v > 86400)
        return OC_PGCONN_CONNECT_TIMEOUT_S;
    return v < 2 ? 2 : (int)v;
}

int oc_pgconn_round_host(int first, int k, int n)
{
    return n > 0 ? (first + k) % n : 0;
}

/* Add "host: error" to the round's reason, short enough for every host's
 * to fit: libpq's "connection to server at ... failed: " is cut, the host
 * is named once. */
static void note_host_error(oc_pgconn_t *c, const char *reason)
{
    const oc_pgconn_host_t *h = &c->hosts[c->cur];
    const char *name = h->host ? h->host : h->hostaddr;
    const char *msg = strstr(reason, " failed: ");
    msg = msg ? msg + strlen(" failed: ") : reason;
    size_t used = strlen(c->round_err);
    int room = (int)((OC_ERRLEN - 1) / (size_t)c->nhosts) - (int)strlen(name) - 4;
    snprintf(c->round_err + used, sizeof(c->round_err) - used, "%s%s: %.*s",
             used ? "; " : "", name, room > 16 ? room : 16, msg);
}

/* The host that last came up, per conninfo (known by its digest: no copy
 * of a password is kept), shared by the process's connections: the others
 * of the loader pool, and an owner that makes a new connection per try
 * (the WAL reader), start a round there too. The loop is the only thread
 * that connects. */
#define OC_PGCONN_MEMO 8
static struct {
    uint8_t digest[OC_MD5_LEN];
    int replica_ok; /* a standby's good is not the primary's */
    int good;
    int used;
} memo[OC_PGCONN_MEMO];
static unsigned memo_next;

static int memo_find(const oc_pgconn_t *c, uint8_t *digest)
{
    oc_md5(c->conninfo, strlen(c->conninfo), digest);
    for (int i = 0; i < OC_PGCONN_MEMO; i++)
        if (memo[i].used && memo[i].replica_ok == c->replica_ok &&
            memcmp(memo[i].digest, digest, OC_MD5_LEN) == 0)
            return i;
    return -1;
}

static int memo_good(const oc_pgconn_t *c)
{
    uint8_t d[OC_MD5_LEN];
    int i = memo_find(c, d);
    return i >= 0 && memo[i].good < c->nhosts ? memo[i].good : 0;
}

static void memo_set_good(const oc_pgconn_t *c)
{
    uint8_t d[OC_MD5_LEN];
    int i = memo_find(c, d);
    if (i < 0) {
        i = (int)(memo_next++ % OC_PGCONN_MEMO);
        memcpy(memo[i].digest, d, OC_MD5_LEN);
        memo[i].replica_ok = c->replica_ok;
        memo[i].used = 1;
    }
    memo[i].good = c->cur;
}

static void attempt(oc_pgconn_t *c);

/* A host's attempt failed: hand the turn to the next host of the round;
 * 0 when every host has failed (the round's reason is in round_err). */
static int next_host(oc_pgconn_t *c, const char *reason)
{
    note_host_error(c, reason);
    if (++c->tried >= c->nhosts)
        return 0;
    if (c->stats)
        c->stats->pg_hosts_passed++;
    char clean[OC_ERRLEN];
    oc_log_debug("event=pg_conn_host_failed conn=%s reason=\"%s\"", c->app_name,
                 oc_log_clean(clean, sizeof(clean), reason));
    watch(c, 0);
    PQclear(c->res);
    c->res = NULL;
    PQfinish(c->conn);
    c->conn = NULL;
    c->cur = oc_pgconn_round_host(c->good, c->tried, c->nhosts);
    set_state(c, OC_PGCONN_CONNECTING);
    attempt(c);
    return 1;
}

/* The FATAL error a command in flight got before its session ended, as the
 * session's end: the server (pgbouncer's query_timeout, KILL) says why,
 * then closes. In a pipeline libpq's connection error holds only the close
 * ("server closed the connection unexpectedly"). NULL: none. */
static const char *fatal_reason(const oc_pgconn_t *c)
{
    if (!c->failed || c->res == NULL || PQresultStatus(c->res) != PGRES_FATAL_ERROR)
        return NULL;
    const char *sev = PQresultErrorField(c->res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev == NULL) /* a server before 9.6, or a pooler, may send only this one */
        sev = PQresultErrorField(c->res, PG_DIAG_SEVERITY);
    return sev && strcmp(sev, "FATAL") == 0 ? PQresultErrorMessage(c->res) : NULL;
}

static void go_down(oc_pgconn_t *c, const char *why)
{
    char reason[OC_ERRLEN], clean[OC_ERRLEN];
    const char *fatal = fatal_reason(c);
    first_line(reason, sizeof(reason), fatal ? fatal : why);
    if (c->nhosts > 0 &&
        (c->state == OC_PGCONN_CONNECTING || c->state == OC_PGCONN_SETUP)) {
        if (next_host(c, reason))
            return;
        memcpy(reason, c->round_err, sizeof(reason));
    }
    /* Say it once per outage, not at every reconnect attempt. */
    int repeat = !c->was_up && strcmp(reason, c->last_error) == 0;
    int was_up_before = c->was_up;
    oc_log(repeat ? OC_LOG_DEBUG : OC_LOG_WARN,
           "event=pg_conn_down conn=%s reason=\"%s\"", c->app_name,
           oc_log_clean(clean, sizeof(clean), reason));
    memcpy(c->last_error, reason, sizeof(reason));
    watch(c, 0);
    PQclear(c->res);
    c->res = NULL;
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    int was_busy = (c->state == OC_PGCONN_BUSY || c->state == OC_PGCONN_STREAMING);
    set_state(c, OC_PGCONN_DOWN);
    c->was_up = 0;
    uint32_t wait_ms = oc_pgconn_jitter(c->backoff_ms, &c->rng);
    struct timeval tv = {wait_ms / 1000, (suseconds_t)(wait_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    c->backoff_ms = oc_pgconn_next_backoff(c->backoff_ms);
    c->lost_live = was_up_before;
    if (was_busy) {
        char err[OC_ERRLEN + 32];
        snprintf(err, sizeof(err), "database connection lost: %s", reason);
        c->sqlstate[0] = '\0';
        command_done(c, NULL, OC_EDB, err);
    }
    if (c->hooks.down)
        c->hooks.down(c, reason, c->owner);
}

#define OC_PGCONN_STANDBY_CHECK "SELECT pg_catalog.pg_is_in_recovery()"

/* SETUP: send one of its statements. */
static void send_setup(oc_pgconn_t *c, const char *sql)
{
    if (!PQsendQuery(c->conn, sql)) {
        go_down(c, PQerrorMessage(c->conn));
        return;
    }
    c->failed = 0;
    watch(c, PQflush(c->conn) == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void poll_connect(oc_pgconn_t *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        go_down(c, PQerrorMessage(c->conn));
        return;
    }
    if (PQsetnonblocking(c->conn, 1) != 0) {
        go_down(c, PQerrorMessage(c->conn));
        return;
    }
    set_state(c, OC_PGCONN_SETUP);
    /* Asked of the server itself, not taken from what it reported at
     * login (libpq's target_session_attrs): pgbouncer hands every client
     * the in_hot_standby of its pool's first server login, kept until
     * RECONNECT, so a standby promoted since would be refused for good and
     * a primary demoted since taken for one. */
    c->checking = !c->replica_ok;
    c->recovery = -1;
    if (!c->checking && c->local_sql != NULL) {
        watch(c, EV_READ); /* as after a setup query */
        setup_done(c);     /* transaction mode: no session to set up */
        return;
    }
    if (!c->checking || c->local_sql != NULL || c->setup_sql[0] == '\0') {
        send_setup(c, c->checking ? OC_PGCONN_STANDBY_CHECK : c->setup_sql);
        return;
    }
    /* The check and the setup in one round trip: a session was the role's
     * (its idle_session_timeout, say) for a round trip between the two,
     * and each connect, at a failover hundreds of sidecars' at once, cost
     * one more. The setup's statements (SET, LISTEN) run on a standby too,
     * harmlessly, or fail there (LISTEN) after the check said standby. */
    size_t len = strlen(OC_PGCONN_STANDBY_CHECK) + strlen(c->setup_sql) + 3;
    char *both = malloc(len);
    if (both == NULL) {
        go_down(c, "out of memory");
        return;
    }
    snprintf(both, len, "%s; %s", OC_PGCONN_STANDBY_CHECK, c->setup_sql);
    send_setup(c, both);
    free(both);
}

/* libpq prints notices (and the server's FATAL on shutdown) to stderr by
 * default; route them into our log lines instead. */
static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    char clean[OC_ERRLEN];
    oc_log_debug("event=pg_notice message=\"%s\"",
                 oc_log_clean(clean, sizeof(clean), msg));
}

static void attempt(oc_pgconn_t *c)
{
    const char *keys[10], *vals[10];
    int n = 0;
#define OC_PGCONN_KEY(k, v) (keys[n] = (k), vals[n++] = (v))
    /* Before the conninfo (a value of its own wins): in a list libpq tries
     * in one attempt, only libpq can pass over a standby to the next host
     * (it believes what the server reported at login; the check in SETUP
     * asks the server) */
    if (!c->replica_ok && c->libpq_list)
        OC_PGCONN_KEY("target_session_attrs", "primary");
    OC_PGCONN_KEY("dbname", c->conninfo);
    if (c->nhosts > 0) { /* after it: this attempt's host, not the lists */
        const oc_pgconn_host_t *h = &c->hosts[c->cur];
        if (h->host)
            OC_PGCONN_KEY("host", h->host);
        if (h->hostaddr)
            OC_PGCONN_KEY("hostaddr", h->hostaddr);
        if (h->port)
            OC_PGCONN_KEY("port", h->port);
    }
    /* client_encoding at connect, not only in the setup SQL: a replication
     * connection runs none, and pgoutput converts the text of every row it
     * sends (the WAL reader's keys) to it. Keys are UTF-8 whatever the
     * database's encoding (or the conninfo's, which this overrides). */
    OC_PGCONN_KEY("fallback_application_name", c->app_name);
    OC_PGCONN_KEY("client_encoding", "UTF8");
    if (c->replication)
        OC_PGCONN_KEY("replication", "database");
#undef OC_PGCONN_KEY
    keys[n] = vals[n] = NULL;
    c->nprep = 0; /* a new session: nothing is prepared in it */
    c->piped = 0;
    /* Bounds this host's attempt (PQconnectPoll ignores connect_timeout);
     * armed first, as a failure below may hand the turn on at once. */
    struct timeval tv = {c->timeout_s, 0};
    evtimer_add(c->timer, &tv);
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (c->conn == NULL) {
        go_down(c, "out of memory");
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        go_down(c, PQerrorMessage(c->conn));
        return;
    }
    PQsetNoticeProcessor(c->conn, on_notice, NULL);
    set_state(c, OC_PGCONN_CONNECTING);
    poll_connect(c);
}

/* A round: every host once, from the one that last came up. */
static void start(oc_pgconn_t *c)
{
    c->tried = 0;
    c->round_err[0] = '\0';
    c->good = c->nhosts > 0 ? memo_good(c) : 0;
    c->cur = c->good;
    set_state(c, OC_PGCONN_CONNECTING); /* a failure below is this round's */
    attempt(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_pgconn_t *c = arg;
    if (c->state == OC_PGCONN_DOWN)
        start(c);
    else if (c->state == OC_PGCONN_CONNECTING || c->state == OC_PGCONN_SETUP)
        go_down(c, "connect timed out");
}

int oc_pgconn_row_error(const char *sqlstate)
{
    static const char *const classes[] = {"22", "2F", "38", "39", "P0"};
    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return 0;
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (strncmp(sqlstate, classes[i], 2) == 0)
            return 1;
    return 0;
}

/* A statement is gone from the session or stale: the last slot moves into
 * its place. */
static void forget_stmt(oc_pgconn_t *c, int slot)
{
    if (slot < 0 || slot >= c->nprep)
        return;
    c->prep[slot] = c->prep[--c->nprep];
}

/* SETUP is over: the connection is up. */
static void setup_done(oc_pgconn_t *c)
{
    evtimer_del(c->timer);
    c->backoff_ms = OC_PGCONN_BACKOFF_MIN_MS;
    c->was_up = 1;
    if (c->nhosts > 0)
        memo_set_good(c);
    set_state(c, OC_PGCONN_IDLE);
    oc_log_info("event=pg_conn_up conn=%s", c->app_name);
    if (c->hooks.up)
        c->hooks.up(c, c->owner);
}

/* All results of the current command are in (PQgetResult gave NULL). */
static void results_done(oc_pgconn_t *c)
{
    PGresult *res = c->res;
    c->res = NULL;
    char err[OC_ERRLEN];
    first_line(err, sizeof(err), res ? PQresultErrorMessage(res) : "no result");
    if (c->state == OC_PGCONN_SETUP) {
        /* A standby first: the setup that followed its check may have
         * failed there (LISTEN), which says nothing more. */
        int standby = c->checking && c->recovery == 1;
        PQclear(res);
        if (standby && c->stats)
            c->stats->pg_standbys_refused++;
        if (c->failed || standby) {
            go_down(c, standby ? "server is in hot standby mode" : err);
            return;
        }
        c->checking = 0;
        setup_done(c);
        return;
    }
    set_state(c, OC_PGCONN_IDLE);
    if (c->failed) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        oc_status_t st = oc_pgconn_row_error(state) ? OC_EROW : OC_EDB;
        if (c->exec_slot >= 0 && state && strcmp(state, "26000") == 0)
            c->nprep = 0; /* DISCARD ALL (or a pooler) dropped them all */
        else if (c->exec_slot >= 0 && state && strcmp(state, "0A000") == 0)
            forget_stmt(c, c->exec_slot); /* prepared again, under a new name */
        c->exec_slot = -1;
        snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", state ? state : "");
        PQclear(res);
        command_done(c, NULL, st, err);
    } else {
        command_done(c, res, OC_OK, NULL);
    }
}

/* COPY BOTH: hand every whole CopyData message to on_data; 1 when the
 * stream ended (its results follow), 0 when more is to come, -1 if the
 * connection went down. */
static int read_stream(oc_pgconn_t *c)
{
    for (;;) {
        if (c->paused)
            return 0;
        char *buf = NULL;
        int n = PQgetCopyData(c->conn, &buf, 1);
        if (n > 0) {
            if (c->on_data && c->cb)
                c->on_data(c, buf, (size_t)n, c->cb_arg);
            PQfreemem(buf);
            if (c->state != OC_PGCONN_STREAMING || c->conn == NULL)
                return -1; /* on_data reset us */
            continue;
        }
        if (n == 0)
            return 0;
        if (n == -1) {
            set_state(c, OC_PGCONN_BUSY); /* its results follow */
            return 1;
        }
        go_down(c, PQerrorMessage(c->conn));
        return -1;
    }
}

/* Bytes of a TLS record that OpenSSL decrypted and libpq has not taken.
 * libpq reads one record per PQconsumeInput into the room it has, 8 KB or
 * more: a 16 KB record (PostgreSQL 17's large messages, a walsender, a
 * pooler or proxy in front) can be taken in part, and the rest, maybe the
 * end of a result, waits here while the socket says nothing. */
static int tls_pending(PGconn *conn)
{
    SSL *ssl = PQsslInUse(conn) ? PQsslStruct(conn, "OpenSSL") : NULL;
    return ssl ? SSL_pending(ssl) : 0;
}

static int socket_queued(int fd)
{
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

/* Bytes the kernel has taken in on this TCP connection so far; -1 if it
 * cannot say (then the caller cannot rule out a new packet). */
static long long tcp_received(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) +
                  sizeof ti.tcpi_bytes_received)
        return -1;
    return (long long)ti.tcpi_bytes_received;
}

/* GSSAPI encryption (libpq 12 and later) has the same hole as TLS and no
 * call to see it: pg_GSS_read (fe-secure-gssapi.c) decrypts a whole packet,
 * up to 16 KB, and gives libpq's buffer what fits in its room (8 KB or
 * more, pqReadData); the rest waits in libpq while the socket is quiet. The
 * next PQconsumeInput takes that rest (under 8 KB) whole, and then returns
 * without reading the socket. So: after a read, while the socket has
 * nothing (else it will wake us), consume again. A round ends the loop when
 * the socket had nothing before it and the kernel took in no byte during
 * it: that round read nothing, so it decrypted no new packet, and whatever
 * rest the previous one left is now in libpq's buffer. */
static int gss_rest_may_wait(int fd, int queued_before, long long rx_before)
{
    if (socket_queued(fd) != 0)
        return 0; /* readable: the event loop calls again */
    return !(queued_before == 0 && rx_before >= 0 && tcp_received(fd) == rx_before);
}

static void read_input(oc_pgconn_t *c)
{
    /* Each call takes OpenSSL's pending bytes first (8 KB or more of them):
     * a record's rest is in after two; with GSSAPI a packet's rest is in
     * after the next call; the bound only guards the loop. */
    int gss = PQgssEncInUse(c->conn), fd = PQsocket(c->conn), rounds = 0, more;
    do {
        int queued = gss ? socket_queued(fd) : 0;
        long long rx = gss ? tcp_received(fd) : 0;
        if (!PQconsumeInput(c->conn)) {
            go_down(c, PQerrorMessage(c->conn));
            return;
        }
        more = tls_pending(c->conn) > 0 || (gss && gss_rest_may_wait(fd, queued, rx));
    } while (++rounds < 8 && more);
    /* The bound cut a round short of taking a rest that waits decrypted
     * (new bytes arrived at every round): read again in this loop turn, as
     * the socket may say nothing more. (A watch() that follows, for a new
     * command, drops this; that command's answer wakes the socket.) */
    if (more)
        event_active(c->io, EV_READ, 0);
    if (c->state == OC_PGCONN_STREAMING && read_stream(c) <= 0)
        return;
    PGnotify *n;
    while ((n = PQnotifies(c->conn)) != NULL) {
        if (c->hooks.notify)
            c->hooks.notify(c, n, c->owner);
        PQfreemem(n);
    }
    int nulls = 0; /* in a row: a pipeline's queries end with one each */
    while (c->state >= OC_PGCONN_SETUP && c->state != OC_PGCONN_IDLE &&
           !PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (r == NULL && c->piped && ++nulls < 2)
            continue; /* the end of one of its queries; its Sync ends it */
        if (r == NULL) {
            if (c->piped) { /* libpq has nothing more, and no Sync came */
                go_down(c, "pipeline ended without its sync");
                return;
            }
            results_done(c); /* may send the next command, or reset */
            return;
        }
        nulls = 0;
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_PIPELINE_SYNC && c->piped) {
            PQclear(r);
            c->piped = 0;
            if (!PQexitPipelineMode(c->conn)) {
                go_down(c, PQerrorMessage(c->conn));
                return;
            }
            results_done(c);
            return;
        }
        if (s == PGRES_COPY_BOTH && c->state == OC_PGCONN_BUSY && !c->failed) {
            PQclear(r); /* the stream began */
            set_state(c, OC_PGCONN_STREAMING);
            if (c->on_begin && c->cb)
                c->on_begin(c, c->cb_arg);
            if (c->state != OC_PGCONN_STREAMING || c->conn == NULL)
                return; /* on_begin reset us */
            if (read_stream(c) <= 0)
                return;
            continue;
        }
        int bad =
            (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_EMPTY_QUERY);
        /* SETUP's first result is the standby check's (a failed check
         * leaves recovery -1: its error is the first) */
        if (c->state == OC_PGCONN_SETUP && c->checking && c->recovery < 0 && !c->failed &&
            !bad)
            c->recovery = !(PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "f") == 0);
        /* Keep the first error, or else the last result. */
        if (c->failed) {
            PQclear(r);
        } else {
            PQclear(c->res);
            c->res = r;
            c->failed = bad;
        }
    }
    if (c->conn && PQstatus(c->conn) == CONNECTION_BAD)
        go_down(c, PQerrorMessage(c->conn));
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    oc_pgconn_t *c = arg;
    if (c->state == OC_PGCONN_CONNECTING) {
        poll_connect(c);
        return;
    }
    if (what & EV_WRITE) {
        int f = PQflush(c->conn);
        if (f < 0) {
            go_down(c, PQerrorMessage(c->conn));
            return;
        }
        if (f == 0)
            watch(c, EV_READ);
    }
    if (what & EV_READ)
        read_input(c);
}

/* ---- sending ------------------------------------------------------------------ */

static oc_status_t sent(oc_pgconn_t *c, int ok, oc_pgconn_done_fn cb, void *arg)
{
    if (!ok) {
        go_down(c, PQerrorMessage(c->conn));
        return OC_EDB;
    }
    c->failed = 0;
    c->cb = cb;
    c->cb_arg = arg;
    c->exec_slot = -1;
    set_state(c, OC_PGCONN_BUSY);
    watch(c, PQflush(c->conn) == 1 ? EV_READ | EV_WRITE : EV_READ);
    return OC_OK;
}

/* Length of the BEGIN statement sql starts with ("BEGIN" up to its ';'),
 * or 0 if sql does not open a transaction that way. */
static size_t begin_len(const char *sql)
{
    if (strncmp(sql, "BEGIN", 5) != 0 || (sql[5] != ';' && sql[5] != ' '))
        return 0;
    const char *semi = strchr(sql, ';');
    return semi ? (size_t)(semi - sql) : 0;
}

/* Transaction mode, outside a transaction: the command goes with the local
 * settings, in the same transaction, in one round trip. Without parameters
 * both go in one simple query (one implicit transaction, which a BEGIN in
 * sql makes the explicit one it starts); with them, a pipeline of the two
 * and one Sync (one implicit transaction too). A BEGIN that sql starts
 * with goes before the settings: the modes it names (READ WRITE, an
 * isolation level) can only be set before the transaction's first query,
 * and set_config's SELECT is one. Inside a transaction (the consumer's
 * BEGIN ... COMMIT), the settings made at its start still hold, and COMMIT
 * or ROLLBACK must not follow a statement that could fail. */
static int send_local(oc_pgconn_t *c, const char *sql, int nparams,
                      const char *const *params)
{
    if (nparams == 0) {
        size_t b = begin_len(sql);
        size_t len = strlen(c->local_sql) + strlen(sql) + 4;
        char *both = malloc(len);
        if (both == NULL)
            return 0;
        if (b)
            snprintf(both, len, "%.*s; %s%s", (int)b, sql, c->local_sql, sql + b);
        else
            snprintf(both, len, "%s; %s", c->local_sql, sql);
        int ok = PQsendQuery(c->conn, both);
        free(both);
        return ok;
    }
    if (!PQenterPipelineMode(c->conn))
        return 0;
    c->piped = 1;
    return PQsendQueryParams(c->conn, c->local_sql, 0, NULL, NULL, NULL, NULL, 0) &&
           PQsendQueryParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0) &&
           PQpipelineSync(c->conn);
}

oc_status_t oc_pgconn_query(oc_pgconn_t *c, const char *sql, int nparams,
                            const char *const *params, oc_pgconn_done_fn cb, void *arg)
{
    if (c->state != OC_PGCONN_IDLE)
        return OC_AGAIN;
    if (c->local_sql != NULL && PQtransactionStatus(c->conn) == PQTRANS_IDLE)
        return sent(c, send_local(c, sql, nparams, params), cb, arg);
    int ok = nparams
                 ? PQsendQueryParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0)
                 : PQsendQuery(c->conn, sql);
    return sent(c, ok, cb, arg);
}

static void pend_clear(oc_pgconn_t *c)
{
    for (int i = 0; c->pend_params && i < c->pend_n; i++)
        free(c->pend_params[i]);
    free(c->pend_params);
    c->pend_params = NULL;
    c->pend_n = 0;
    c->pend_cb = NULL;
}

static oc_status_t send_prepared(oc_pgconn_t *c, int slot, int nparams,
                                 const char *const *params, oc_pgconn_done_fn cb,
                                 void *arg)
{
    oc_status_t st = sent(
        c,
        PQsendQueryPrepared(c->conn, c->prep[slot].name, nparams, params, NULL, NULL, 0),
        cb, arg);
    if (st == OC_OK)
        c->exec_slot = slot;
    return st;
}

/* The prepare of oc_pgconn_exec's statement came back: run it, or hand
 * the prepare's error to the run's callback. */
static void prepared(oc_pgconn_t *c, PGresult *res, oc_status_t st, const char *err,
                     void *arg)
{
    (void)arg;
    PQclear(res);
    oc_pgconn_done_fn cb = c->pend_cb;
    void *cb_arg = c->pend_arg;
    int slot = c->pend_slot;
    /* "already exists": a session handed on by a pooler holds this very
     * statement (its SQL is in its name): run it */
    if (st != OC_OK && strcmp(c->sqlstate, "42P05") == 0)
        st = OC_OK;
    if (st != OC_OK) {
        pend_clear(c);
        if (cb)
            cb(c, NULL, st, err, cb_arg);
        return;
    }
    char **params = c->pend_params;
    int n = c->pend_n;
    c->pend_params = NULL; /* ours now: a down hook below may free c */
    c->pend_n = 0;
    c->pend_cb = NULL;
    c->nprep = slot + 1;
    /* In flight from the caller's view since oc_pgconn_exec returned OC_OK:
     * a send that fails takes the connection down, which hands the
     * callback its error first. */
    c->cb = cb;
    c->cb_arg = cb_arg;
    set_state(c, OC_PGCONN_BUSY);
    send_prepared(c, slot, n, (const char *const *)params, cb, cb_arg);
    for (int i = 0; i < n; i++)
        free(params[i]);
    free(params);
}

/* A name for `sql`, the prep_seq-th prepared on this connection. With a
 * digest of the SQL in it, a statement of that name in a session is that
 * very SQL: a pooler that hands one server session to several clients
 * (pgbouncer in transaction mode, or without server_reset_query) can leave
 * another connection's "oc_stmt_0" there, which was its own SQL (the
 * consumer's claim where the feed polls). */
static void stmt_name(oc_pgconn_t *c, const char *sql, char *name, size_t cap)
{
    uint8_t d[OC_MD5_LEN];
    oc_md5(sql, strlen(sql), d);
    snprintf(name, cap, "oc_stmt_%u_%08x%08x", c->prep_seq++, (unsigned)oc_md5_word(d, 0),
             (unsigned)oc_md5_word(d, 1));
}

static int find_stmt(const oc_pgconn_t *c, const char *sql)
{
    for (int i = 0; i < c->nprep; i++)
        if (c->prep[i].sql == sql)
            return i;
    return -1;
}

oc_status_t oc_pgconn_exec(oc_pgconn_t *c, const char *sql, int nparams,
                           const char *const *params, oc_pgconn_done_fn cb, void *arg)
{
    if (c->state != OC_PGCONN_IDLE)
        return OC_AGAIN;
    if (c->local_sql != NULL) /* no statement outlives a transaction */
        return oc_pgconn_query(c, sql, nparams, params, cb, arg);
    int slot = find_stmt(c, sql);
    if (slot >= 0)
        return send_prepared(c, slot, nparams, params, cb, arg);
    if (c->nprep == OC_PGCONN_STMTS)
        return oc_pgconn_query(c, sql, nparams, params, cb, arg);
    /* Prepare it first; the run waits with copies of its params (the
     * caller's may be on its stack). */
    pend_clear(c);
    if (nparams > 0 && (c->pend_params = calloc((size_t)nparams, sizeof(char *))) == NULL)
        return oc_pgconn_query(c, sql, nparams, params, cb, arg);
    c->pend_n = nparams;
    for (int i = 0; i < nparams; i++)
        if (params[i] && (c->pend_params[i] = strdup(params[i])) == NULL) {
            pend_clear(c);
            return oc_pgconn_query(c, sql, nparams, params, cb, arg);
        }
    slot = c->nprep;
    c->prep[slot].sql = sql;
    stmt_name(c, sql, c->prep[slot].name, sizeof(c->prep[slot].name));
    c->pend_slot = slot;
    c->pend_cb = cb;
    c->pend_arg = arg;
    oc_status_t st =
        sent(c, PQsendPrepare(c->conn, c->prep[slot].name, sql, 0, NULL), prepared, NULL);
    if (st != OC_OK)
        pend_clear(c);
    return st;
}

oc_status_t oc_pgconn_stream(oc_pgconn_t *c, const char *sql, oc_pgconn_begin_fn on_begin,
                             oc_pgconn_data_fn on_data, oc_pgconn_done_fn cb, void *arg)
{
    if (c->state != OC_PGCONN_IDLE)
        return OC_AGAIN;
    c->on_begin = on_begin;
    c->on_data = on_data;
    return sent(c, PQsendQuery(c->conn, sql), cb, arg);
}

oc_status_t oc_pgconn_put_copy(oc_pgconn_t *c, const char *buf, size_t len)
{
    if (c->state != OC_PGCONN_STREAMING)
        return OC_AGAIN;
    if (PQputCopyData(c->conn, buf, (int)len) != 1) {
        go_down(c, PQerrorMessage(c->conn));
        return OC_EDB;
    }
    int f = PQflush(c->conn);
    if (f < 0) {
        go_down(c, PQerrorMessage(c->conn));
        return OC_EDB;
    }
    if (f == 1)
        watch(c, EV_READ | EV_WRITE);
    return OC_OK;
}

void oc_pgconn_pause(oc_pgconn_t *c, int paused)
{
    c->paused = paused != 0;
    if (c->conn && c->state != OC_PGCONN_DOWN && c->state != OC_PGCONN_CONNECTING) {
        watch(c, PQflush(c->conn) == 1 ? EV_READ | EV_WRITE : EV_READ);
        if (!paused) /* what libpq buffered meanwhile: the socket may not say */
            event_active(c->io, EV_READ, 0);
    }
}

int oc_pgconn_streaming(const oc_pgconn_t *c)
{
    return c->state == OC_PGCONN_STREAMING;
}

int oc_pgconn_input_waiting(const oc_pgconn_t *c)
{
    int n = 0;
    if (c->conn == NULL || PQsocket(c->conn) < 0)
        return 0;
    if (tls_pending(c->conn) > 0) /* decrypted already: the socket cannot say */
        return 1;
    if (ioctl(PQsocket(c->conn), FIONREAD, &n) != 0)
        return 0;
    return n > 0;
}

int oc_pgconn_read_first(oc_pgconn_t *c)
{
    /* a command's answer only: a paused stream keeps its backpressure */
    if (c->state != OC_PGCONN_BUSY || !oc_pgconn_input_waiting(c))
        return 0;
    /* All of it into libpq's buffer now (no callback runs from this), so
     * the read that follows parses an answer of any size: one read_input
     * takes about 16 KiB a call (found by a review). Bounded: a server
     * still sending is a server still answering. */
    for (int rounds = 0; rounds < 4096 && oc_pgconn_input_waiting(c); rounds++)
        if (!PQconsumeInput(c->conn))
            break; /* the read below says so (go_down) */
    event_active(c->io, EV_READ, 0);
    return 1;
}

oc_status_t oc_pgconn_prepare(oc_pgconn_t *c, const char *name, const char *sql,
                              oc_pgconn_done_fn cb, void *arg)
{
    if (c->state != OC_PGCONN_IDLE)
        return OC_AGAIN;
    return sent(c, PQsendPrepare(c->conn, name, sql, 0, NULL), cb, arg);
}

oc_status_t oc_pgconn_query_prepared(oc_pgconn_t *c, const char *name, int nparams,
                                     const char *const *params, oc_pgconn_done_fn cb,
                                     void *arg)
{
    if (c->state != OC_PGCONN_IDLE)
        return OC_AGAIN;
    return sent(c, PQsendQueryPrepared(c->conn, name, nparams, params, NULL, NULL, 0), cb,
                arg);
}

void oc_pgconn_abandon(oc_pgconn_t *c)
{
    c->cb = NULL;
    pend_clear(c); /* a run waiting for its prepare is abandoned with it */
}

void oc_pgconn_reset(oc_pgconn_t *c, const char *why)
{
    if (c->state != OC_PGCONN_DOWN)
        go_down(c, why);
}

/* ---- life ------------------------------------------------------------------------ */

int oc_pgconn_idle(const oc_pgconn_t *c)
{
    return c->state == OC_PGCONN_IDLE;
}

int oc_pgconn_backend_pid(const oc_pgconn_t *c)
{
    return c->conn && c->state != OC_PGCONN_DOWN ? PQbackendPID(c->conn) : 0;
}

int oc_pgconn_alive(const oc_pgconn_t *c)
{
    return c->state != OC_PGCONN_DOWN || c->lost_live;
}

const char *oc_pgconn_last_error(const oc_pgconn_t *c)
{
    return c->last_error;
}

const char *oc_pgconn_sqlstate(const oc_pgconn_t *c)
{
    return c->sqlstate;
}

/* The conninfo's hosts and attempt bound, read once. One libpq cannot
 * parse (refused by the config check; a bare database name) is left to
 * libpq, which says why at connect. */
static void parse_hosts(oc_pgconn_t *c)
{
    c->timeout_s = OC_PGCONN_CONNECT_TIMEOUT_S;
    PQconninfoOption *opts = PQconninfoParse(c->conninfo, NULL);
    if (opts == NULL)
        return;
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *timeout = NULL;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "connect_timeout") == 0)
            timeout = o->val;
    }
    c->timeout_s = oc_pgconn_attempt_timeout_s(timeout);
    int n = oc_pgconn_split_hosts(host, hostaddr, port, &c->hosts);
    c->nhosts = n > 0 ? n : 0;              /* out of memory: libpq tries them in one */
    if (host == NULL && hostaddr == NULL) { /* libpq's defaults, then */
        host = getenv("PGHOST");
        hostaddr = getenv("PGHOSTADDR");
    }
    c->libpq_list =
        c->nhosts == 0 && (count_elems(host) > 1 || count_elems(hostaddr) > 1);
    PQconninfoFree(opts);
}

oc_pgconn_t *oc_pgconn_new(struct event_base *base, const char *conninfo,
                           const oc_pgconn_opts_t *opts, const char *setup_sql,
                           const oc_pgconn_hooks_t *hooks, void *owner)
{
    oc_pgconn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->hooks = *hooks;
    c->owner = owner;
    c->state = OC_PGCONN_DOWN;
    c->backoff_ms = OC_PGCONN_BACKOFF_MIN_MS;
    c->rng = jitter_seed(c);
    c->exec_slot = -1;
    if (opts && opts->last_error && opts->last_error[0])
        first_line(c->last_error, sizeof(c->last_error), opts->last_error);
    else
        snprintf(c->last_error, sizeof(c->last_error), "not connected yet");
    c->conninfo = strdup(conninfo);
    c->app_name = strdup(opts && opts->app_name ? opts->app_name : "objcached");
    c->replication = opts ? opts->replication : 0;
    c->replica_ok = opts ? opts->replica_ok : 0;
    c->stats = opts ? opts->stats : NULL;
    c->setup_sql = strdup(setup_sql);
    if (opts && opts->local_sql && (c->local_sql = strdup(opts->local_sql)) == NULL) {
        oc_pgconn_free(c);
        return NULL;
    }
    c->io = event_new(base, -1, 0, io_cb, c);
    c->timer = evtimer_new(base, timer_cb, c);
    if (c->conninfo == NULL || c->app_name == NULL || c->setup_sql == NULL ||
        c->io == NULL || c->timer == NULL) {
        oc_pgconn_free(c);
        return NULL;
    }
    parse_hosts(c);
    start(c);
    return c;
}

void oc_pgconn_free(oc_pgconn_t *c)
{
    if (c == NULL)
        return;
    PQclear(c->res);
    pend_clear(c);
    if (c->conn)
        PQfinish(c->conn);
    if (c->io)
        event_free(c->io);
    if (c->timer)
        event_free(c->timer);
    oc_pgconn_hosts_free(c->hosts, c->nhosts);
    free(c->conninfo);
    free(c->app_name);
    free(c->setup_sql);
    free(c->local_sql);
    free(c);
}

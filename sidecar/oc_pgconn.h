/*
 * oc_pgconn: one asynchronous libpq connection driven by the loop, that
 * reconnects by itself. The loader pool (oc_pg) and the invalidation
 * consumer (oc_inval) are built on it.
 *
 *   DOWN --timer--> CONNECTING --> SETUP --> IDLE <--> BUSY <--> STREAMING
 *     ^________________|_____________|________________|_________|  (any failure)
 *
 * SETUP runs the owner's setup SQL (session settings, LISTEN) once per
 * connection (in transaction mode, none: opts->local_sql). In IDLE one command may be
 * sent; its callback gets the outcome once: the first error, or else the last result.
 * Reconnects back off from 100 ms to 2 s.
 *
 * Failover (a multi-host conninfo: host=a,b,c, libpq's "Specifying
 * Multiple Hosts"): PQconnectPoll ignores connect_timeout and cannot be told
 * to skip a host, so a host that does not answer (a dead machine) would hold
 * every attempt until it is abandoned, and the next host would never be
 * tried. So the connection parses the conninfo once and tries ONE host per
 * attempt (its elements of the host, hostaddr and port lists override the
 * lists), each attempt (connect and setup SQL) bounded by the conninfo's
 * connect_timeout (at least 2 s, as libpq) or else 5 s; a host that fails or
 * times out passes the turn to the next at once, and only when every host
 * of the round failed does the connection go DOWN, with a reason that names
 * each host's error. A round starts with the host that last came up, so a
 * reconnect does not wait on a dead first host. A single host, a list with
 * an empty element (libpq's default host or port) or lists libpq would
 * refuse are left to libpq in one attempt, bounded the same way. Hosts from
 * the environment (PGHOST) or a service file are not split.
 *
 * Standbys: unless opts->replica_ok, SETUP first asks the server
 * (SELECT pg_is_in_recovery()), then runs the owner's setup SQL: a load or
 * an invalidation read from a hot standby that has not replayed a commit
 * yet would be cached stale. A standby is then a failed attempt ("server is
 * in hot standby mode"), never a session. Not libpq's
 * target_session_attrs=primary, which believes the in_hot_standby the
 * server reported at login: pgbouncer hands on the one of its pool's first
 * server login until RECONNECT, so a standby promoted behind it would be
 * refused, a primary demoted behind it taken. It is added (before the
 * conninfo, whose own value wins) only for a list libpq tries in one
 * attempt (not split, above), where only libpq can pass over a standby.
 *
 * Ownership: the owner creates and frees the connection. A result handed to
 * a callback is the callback's to PQclear. Callbacks run on the loop thread
 * and may send the next command or call oc_pgconn_reset() from inside.
 * Error texts are first lines of libpq's messages, which never contain the
 * password.
 */
#ifndef OC_PGCONN_H
#define OC_PGCONN_H

#include <libpq-fe.h>
#include <stdint.h>

#include "oc_stats.h"
#include "oc_status.h"

struct event_base;
typedef struct oc_pgconn oc_pgconn_t;

/* A command's outcome: res is NULL unless st == OC_OK. */
typedef void (*oc_pgconn_done_fn)(oc_pgconn_t *c, PGresult *res, oc_status_t st,
                                  const char *err, void *arg);

typedef struct oc_pgconn_hooks {
    /* The connection came up (after setup) or went down (err says why). A
     * command in flight when it went down gets its callback first. */
    void (*up)(oc_pgconn_t *c, void *owner);
    void (*down)(oc_pgconn_t *c, const char *err, void *owner);
    /* A NOTIFY arrived (LISTEN in the setup SQL); may be NULL. */
    void (*notify)(oc_pgconn_t *c, const PGnotify *n, void *owner);
} oc_pgconn_hooks_t;

/* How to connect, beyond the conninfo (NULL: the defaults). */
typedef struct oc_pgconn_opts {
    const char *app_name;   /* fallback_application_name ("objcached"): what
                               operators see in pg_stat_activity, and the
                               conn= of its log lines */
    int replication;        /* a replication=database connection, for a
                               logical replication stream (oc_pgconn_stream) */
    const char *last_error; /* the failure of the connection this one
                               replaces (an owner that makes a new one per
                               try): the same failure is then logged at
                               debug, so an outage is said once (NULL: none) */
    int replica_ok;         /* a hot standby will do (the feed's reads): no
                               standby check */
    oc_stats_t *stats;      /* pg_hosts_passed and pg_standbys_refused are
                               counted there (NULL: not counted) */
    const char *local_sql;  /* transaction mode (a pooler that keeps a server
                               session for one transaction only: pgbouncer's
                               pool_mode = transaction): one statement, the
                               settings for one transaction (oc_sql_local).
                               The setup SQL is then not run (nothing of a
                               session lasts: no LISTEN, no SET), and every
                               command that starts a transaction carries it
                               first, in the same round trip and transaction
                               (oc_pgconn_query); oc_pgconn_exec prepares
                               nothing. NULL: session mode */
} oc_pgconn_opts_t;

/* Starts connecting at once. conninfo, the options' strings and setup_sql
 * are copied. */
oc_pgconn_t *oc_pgconn_new(struct event_base *base, const char *conninfo,
                           const oc_pgconn_opts_t *opts, const char *setup_sql,
                           const oc_pgconn_hooks_t *hooks, void *owner);
/* Closes; a command in flight gets no callback. */
void oc_pgconn_free(oc_pgconn_t *c);

int oc_pgconn_idle(const oc_pgconn_t *c); /* ready for a command */
/* Not DOWN (up or trying), or just lost a session that was up: its
 * reconnect is due (a server that ended an idle or busy session is likely
 * there for the next one), until that attempt fails. */
int oc_pgconn_alive(const oc_pgconn_t *c);
const char *oc_pgconn_last_error(const oc_pgconn_t *c);
/* In a done callback with st != OC_OK: the server's SQLSTATE for the
 * command's error ("" when it has none: the connection was lost). */
const char *oc_pgconn_sqlstate(const oc_pgconn_t *c);
/* The server process of the connection (what a NOTIFY it sends carries as
 * be_pid); 0 when not connected. Meaningless in transaction mode (each
 * transaction may run in another). */
int oc_pgconn_backend_pid(const oc_pgconn_t *c);

/* Send one command in IDLE (OC_AGAIN if not idle; OC_EDB if the send
 * failed, in which case the connection is reset and cb is not called). */
oc_status_t oc_pgconn_query(oc_pgconn_t *c, const char *sql, int nparams,
                            const char *const *params, oc_pgconn_done_fn cb, void *arg);
/* Run sql (with its $n parameters) as a statement this connection prepares
 * the first time it runs it in a session, and reuses after: PostgreSQL
 * then parses and plans it once per session instead of at every call (for
 * the statements a sidecar runs hundreds of times a second, about a third
 * of their cost). The connection knows a statement by the address of sql,
 * which must stay valid and unchanged while the connection lives (a string
 * literal). The first run in a session takes one more round trip (the
 * prepare; params are copied meanwhile); a prepare that fails is the
 * command's error. Beyond OC_PGCONN_STMTS statements, the rest run
 * unprepared. A run that finds its statement gone (SQLSTATE 26000, after
 * DISCARD ALL: every statement is prepared again) or stale (0A000, its
 * result type changed: that one is prepared again under a new name, the
 * old one left in the session) fails once, and the next run prepares
 * again. Needs session
 * semantics (a pooler in session mode, or pgbouncer 1.21+, which keeps
 * protocol-level prepared statements in transaction mode); in transaction
 * mode (opts->local_sql) it is oc_pgconn_query: an unnamed statement. The
 * owner of a connection in transaction mode must not use
 * oc_pgconn_prepare / oc_pgconn_query_prepared. */
#define OC_PGCONN_STMTS 8
oc_status_t oc_pgconn_exec(oc_pgconn_t *c, const char *sql, int nparams,
                           const char *const *params, oc_pgconn_done_fn cb, void *arg);
oc_status_t oc_pgconn_prepare(oc_pgconn_t *c, const char *name, const char *sql,
                              oc_pgconn_done_fn cb, void *arg);
oc_status_t oc_pgconn_query_prepared(oc_pgconn_t *c, const char *name, int nparams,
                                     const char *const *params, oc_pgconn_done_fn cb,
                                     void *arg);

/* A replication stream (COPY BOTH): send `sql` (START_REPLICATION ...) in
 * IDLE; every CopyData message the server sends is handed to on_data (the
 * bytes are valid during the call only); when the stream ends (the server
 * ended it, or it failed to start: the slot is active elsewhere, say), cb
 * gets the outcome as for a query, and the connection is IDLE again (or
 * goes down). While STREAMING, oc_pgconn_put_copy sends a CopyData message
 * (a standby status update). */
typedef void (*oc_pgconn_data_fn)(oc_pgconn_t *c, const char *buf, size_t len, void *arg);
/* on_begin: the server accepted the command and the stream began. */
typedef void (*oc_pgconn_begin_fn)(oc_pgconn_t *c, void *arg);
oc_status_t oc_pgconn_stream(oc_pgconn_t *c, const char *sql, oc_pgconn_begin_fn on_begin,
                             oc_pgconn_data_fn on_data, oc_pgconn_done_fn cb, void *arg);
/* Stop reading from the server (1) or read again (0): a stream's sender
 * then waits on TCP, which bounds what the reader buffers. */
void oc_pgconn_pause(oc_pgconn_t *c, int paused);
/* OC_AGAIN if not streaming; OC_EDB if the send failed (the connection is
 * reset). */
oc_status_t oc_pgconn_put_copy(oc_pgconn_t *c, const char *buf, size_t len);
int oc_pgconn_streaming(const oc_pgconn_t *c);
/* Bytes wait in the socket, not read yet (FIONREAD), or decrypted in
 * OpenSSL (TLS): a read stopped by the size of libpq's buffer, not because
 * the server had sent no more. (A GSSAPI packet's decrypted rest is taken
 * by the read itself, before it returns.) */
int oc_pgconn_input_waiting(const oc_pgconn_t *c);
/* For a timer about to call c's server silent (a query that did not end):
 * if input waits (oc_pgconn_input_waiting), it is read in this loop turn,
 * after the running callback, and 1 is returned: the caller decides again
 * in a later turn (a timer re-armed for 0 s runs after that read). This
 * sidecar may have stood still itself (stopped: epoll_wait fails with
 * EINTR, so the waking turn runs due timers before any read; starved of
 * CPU) with the answer already there. Takes what waits into libpq's
 * buffer at once (no callback runs). 0 unless a command runs (BUSY) and
 * input waits. */
int oc_pgconn_read_first(oc_pgconn_t *c);

/* Forget the command in flight: its callback will not be called, and its
 * answer is discarded when it comes. */
void oc_pgconn_abandon(oc_pgconn_t *c);
/* Drop the connection (e.g. a query that does not end) and reconnect. */
void oc_pgconn_reset(oc_pgconn_t *c, const char *why);

/* ---- the pure rules, exposed for unit tests ---- */

/* 1 if an error of this SQLSTATE came from the data of some row (classes
 * 22 data exception, 2F/38/39 routine exceptions, P0 PL/pgSQL RAISE): a
 * failed command then reports OC_EROW instead of OC_EDB, and a load of
 * many ids may be split to find the rows at fault (oc_fill). NULL or
 * malformed: 0. */
int oc_pgconn_row_error(const char *sqlstate);

#define OC_PGCONN_BACKOFF_MIN_MS 100  /* the first reconnect's wait */
#define OC_PGCONN_BACKOFF_MAX_MS 2000 /* the longest */

/* The wait before the reconnect after one that waited ms: doubled, capped
 * at OC_PGCONN_BACKOFF_MAX_MS (a connection that came up starts again at
 * OC_PGCONN_BACKOFF_MIN_MS). */
uint32_t oc_pgconn_next_backoff(uint32_t ms);

/* The wait actually armed for a back-off of ms: drawn in [ms - ms/2, ms]
 * from *rng (xorshift64*; a 0 state is replaced). Why: every sidecar of a
 * fleet loses its sessions at the same instant when PostgreSQL restarts or
 * fails over, and with the same doubling each would come back at the same
 * instants, hundreds of connection attempts (a backend forked for each, even
 * one refused for max_connections) arriving together at every step. Half a
 * step of spread keeps the first retry quick and scatters the rest. */
uint32_t oc_pgconn_jitter(uint32_t ms, uint64_t *rng);

/* One host of a multi-host conninfo: its elements of the host, hostaddr
 * and port lists (NULL: that list is not set). */
typedef struct oc_pgconn_host {
    char *host;
    char *hostaddr;
    char *port;
} oc_pgconn_host_t;

/* Splits a conninfo's host, hostaddr and port values (NULL or "": not set)
 * by libpq's rules: the hosts are host's elements, else hostaddr's; a list
 * set beside host has as many elements, and a single port applies to every
 * host. Returns the number of hosts, *out a malloc'd array (free it with
 * oc_pgconn_hosts_free); 0 (*out NULL) when they are not to be tried one
 * at a time: fewer than two, an empty element (libpq's default, which no
 * key can name), or counts libpq refuses (its own attempt then says so);
 * -1 out of memory. */
int oc_pgconn_split_hosts(const char *host, const char *hostaddr, const char *port,
                          oc_pgconn_host_t **out);
void oc_pgconn_hosts_free(oc_pgconn_host_t *hosts, int n);

#define OC_PGCONN_CONNECT_TIMEOUT_S 5 /* an attempt's bound by default */

/* The bound of one host's attempt, in seconds, for a conninfo's
 * connect_timeout (NULL: not set): libpq's rule, at least 2; unset, 0
 * (libpq: no limit) or not a number: OC_PGCONN_CONNECT_TIMEOUT_S. */
int oc_pgconn_attempt_timeout_s(const char *connect_timeout);

/* The host the k-th attempt of a round of n hosts tries, the round
 * starting with host first (the one that last came up). */
int oc_pgconn_round_host(int first, int k, int n);

#endif

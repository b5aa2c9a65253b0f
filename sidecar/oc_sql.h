/*
 * oc_sql: the SQL text objcached sends to PostgreSQL, built in one place:
 * each model's load statement, the session settings every connection pins,
 * and the array literal that binds many ids as one parameter.
 *
 * Contract: pure; every function returns a malloc'd string the caller
 * frees, or NULL if out of memory. Identifiers come from oc_conf, which
 * admits only [A-Za-z_][A-Za-z0-9_]*, and are always double-quoted; values
 * are never spliced into SQL, only bound as parameters.
 */
#ifndef OC_SQL_H
#define OC_SQL_H

#include <stddef.h>

#include "oc_conf.h"

/* SELECT key::text, row_to_json(...)::text FROM schema.table t
 *  WHERE key = ANY($1::<type>[]): one statement per model, prepared once
 *  per connection, with every id bound as one array. */
char *oc_sql_load(const oc_model_conf_t *m);

/* The session settings that change how row_to_json prints a row (TimeZone,
 * DateStyle, IntervalStyle, extra_float_digits, bytea_output), so every
 * sidecar caches the same bytes for the same row, and statement_timeout =
 * load_timeout. client_encoding is UTF8 whatever the database's (or the
 * environment's): ids are sent and rows served as UTF-8, which keys and
 * JSON are. */
char *oc_sql_session(const oc_conf_t *conf);
/* The same without search_path, for the sessions that read the models'
 * tables (loaders, the sampler, --verify): a view's functions resolve
 * their unqualified names with the session's search_path at each call, so
 * these keep the role's, and the SQL they send names its built-ins in
 * pg_catalog (oc_sql_load, oc_smp_sql). The other sessions, which run
 * objcached's own SQL only, pin search_path = pg_catalog, pg_temp. */
char *oc_sql_session_reader(const oc_conf_t *conf);

/* pool_mode = transaction: the same settings for one transaction only, as
 * one SELECT of set_config(..., true) that goes first in the transaction of
 * every command (oc_pgconn_opts_t.local_sql): a pooler hands each
 * transaction a server session that another client may have SET anything
 * on, and a session SET of ours would stay there for the next client.
 * Without the settings a transaction cannot change or that pgbouncer
 * restores itself: idle_session_timeout and client_connection_check_interval
 * (sessions are pgbouncer's), default_transaction_read_only and _isolation
 * (they apply at BEGIN, before any statement: the consumer's BEGIN names
 * its modes instead, oc_inval), client_encoding (pgbouncer sets each client's on the
 * server session it hands it). Both first reset session_authorization and role
 * (set_config with NULL: what RESET gives), so that objcached runs as its own role
 * whatever SET ROLE another client left; the reader's restores the role's
 * search_path the same way. */
char *oc_sql_local(const oc_conf_t *conf);
char *oc_sql_local_reader(const oc_conf_t *conf);
/* Only the reader's resets of those (session_authorization, role,
 * search_path: set_config(name, NULL, true)), for a transaction that must
 * run as the conninfo's role but under its own timeouts (--install-hook's
 * DDL, --check-config). */
char *oc_sql_local_resets(const oc_conf_t *conf);

/* The daemon's start-time question (oc_pg_warn_row_security): the models
 * whose table has row security active for the conninfo's role, as rows
 * (model, schema, table, current_user), after a 2 s statement_timeout
 * and the resets of oc_sql_local_resets in the same query string (one
 * implicit transaction: the role is the conninfo's, whatever a pooled
 * server session was left in). The names are the config's, which match
 * [A-Za-z_][A-Za-z0-9_]* (oc_conf), so they go in as literals. NULL: out
 * of memory, or no model. */
char *oc_sql_row_security(const oc_conf_t *conf);

/* A PostgreSQL array literal of n quoted text items, e.g. {"1","a\"b"},
 * for binding as one parameter (valid for bigint[], uuid[] and text[]). */
char *oc_sql_array(const char *const *items, const size_t *lens, size_t n);
/* The same, with item i given by item(arg, i, &p, &len), for callers whose
 * items sit inside their own structs. NULL also when n is 0. */
typedef void (*oc_sql_item_fn)(const void *arg, size_t i, const char **p, size_t *len);
char *oc_sql_array_of(size_t n, oc_sql_item_fn item, const void *arg);

#endif

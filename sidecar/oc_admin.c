#include "oc_admin.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oc_sql.h"

/* The tool's session. reset: with pool_mode = transaction, what each
 * statement's transaction starts with (oc_sql_local_resets, owned), else NULL:
 * a pooler hands every transaction a server session that another client
 * may have left in SET ROLE, SET SESSION AUTHORIZATION or another
 * search_path, which would run the install's DDL as that role (its
 * objects then that role's) and the checks with its rights. */
typedef struct admin {
    PGconn *pg;
    char *reset;
} admin_t;

static int admin_connect(const oc_conf_t *conf, FILE *out, admin_t *a)
{
    /* connect_timeout and target_session_attrs first: a value in the
     * conninfo overrides them. A standby would take none of the writes. */
    const char *keys[] = {"connect_timeout", "target_session_attrs", "dbname",
                          "fallback_application_name", NULL};
    const char *vals[] = {"5", "primary", conf->conninfo, "objcached-admin", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fprintf(out, "cannot connect to PostgreSQL: %s",
                c ? PQerrorMessage(c) : "out of memory\n");
        PQfinish(c);
        return 0;
    }
    a->pg = c;
    a->reset = NULL;
    if (conf->pg_txn_pool && (a->reset = oc_sql_local_resets(conf)) == NULL) {
        fprintf(out, "out of memory\n");
        PQfinish(c);
        return 0;
    }
    return 1;
}

static void admin_close(admin_t *a)
{
    PQfinish(a->pg);
    free(a->reset);
}

#define ADMIN_TRIES 5 /* runs of a statement PostgreSQL chose to break a deadlock */

static int admin_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK;
}

/* Whether failed result r (run number `run`) is worth running again: the
 * install replaces functions, views and columns of the hook's tables while
 * the running sidecars' queries (the consumer's claim, the feed polls) take
 * their locks on the same tables in their own order, and PostgreSQL breaks
 * such a deadlock by failing one of the two. Every statement here is its
 * own transaction (the install script one BEGIN ... COMMIT), so a run that
 * deadlocked left nothing behind: wait a little, and run it again. */
static int admin_retry(admin_t *c, const PGresult *r, int run, FILE *out)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (run >= ADMIN_TRIES || state == NULL || strcmp(state, "40P01") != 0)
        return 0;
    if (PQtransactionStatus(c->pg) == PQTRANS_INERROR)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    fprintf(out,
            "deadlock with another session (a running sidecar's query?): "
            "running it again (%d of %d)\n",
            run + 1, ADMIN_TRIES);
    struct timespec ts = {0, 100000000L * run}; /* 0.1 s, 0.2 s, ... */
    nanosleep(&ts, NULL);
    return 1;
}

/* sql in one transaction with a->reset before it. Without parameters one
 * query string (its implicit transaction, which a BEGIN in sql makes the
 * explicit one it starts); with them a pipeline of the two and one Sync
 * (one implicit transaction too). The first error, or sql's result. */
static PGresult *admin_exec(admin_t *a, const char *sql, int n, const char *const *p)
{
    if (a->reset == NULL)
        return n < 0 ? PQexec(a->pg, sql)
                     : PQexecParams(a->pg, sql, n, NULL, p, NULL, NULL, 0);
    if (n < 0) {
        size_t len = strlen(a->reset) + strlen(sql) + 3;
        char *both = malloc(len);
        if (both == NULL)
            return NULL;
        snprintf(both, len, "%s; %s", a->reset, sql);
        PGresult *r = PQexec(a->pg, both);
        free(both);
        return r;
    }
    if (!PQenterPipelineMode(a->pg))
        return NULL;
    PGresult *keep = NULL;
    if (PQsendQueryParams(a->pg, a->reset, 0, NULL, NULL, NULL, NULL, 0) &&
        PQsendQueryParams(a->pg, sql, n, NULL, p, NULL, NULL, 0) &&
        PQpipelineSync(a->pg)) {
        /* the reset's result, NULL, sql's result, NULL, the Sync */
        int failed = 0;
        for (int nulls = 0;;) {
            PGresult *r = PQgetResult(a->pg);
            if (r == NULL) {
                if (++nulls > 2)
                    break; /* the connection is gone: no Sync will come */
                continue;
            }
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                break;
            }
            if (failed) { /* the first error stays (then PIPELINE_ABORTED) */
                PQclear(r);
                continue;
            }
            failed = !admin_ok(r);
            PQclear(keep);
            keep = r;
        }
    }
    PQexitPipelineMode(a->pg);
    return keep;
}

/* Run `sql`: with n < 0 a script of many statements (no parameters), else
 * one statement with parameters p[0..n). NULL (and a message) unless it
 * succeeded, after ADMIN_TRIES runs if deadlocks kept failing it. */
static PGresult *admin_query(admin_t *c, FILE *out, const char *sql, int n,
                             const char *const *p)
{
    for (int run = 1;; run++) {
        PGresult *r = admin_exec(c, sql, n, p);
        if (admin_ok(r))
            return r;
        if (!admin_retry(c, r, run, out)) {
            fprintf(out, "%s", PQresultErrorMessage(r));
            PQclear(r);
            return NULL;
        }
        PQclear(r);
    }
}

static void qualified(const oc_model_conf_t *m, char *buf, size_t cap)
{
    snprintf(buf, cap, "\"%s\".\"%s\"", m->schema, m->table);
}

static int admin_wal_setup(admin_t *c, const oc_conf_t *conf, FILE *out);

/* The hook's two event triggers (sql/install.sql, _ddl_watch) turn DDL
 * that moves rows in or out of a model (ATTACH/DETACH PARTITION, INHERIT,
 * NO INHERIT, DROP TABLE of a partition) into whole-model invalidations.
 * Only a superuser can make them: an install by another role succeeds
 * without them, and this says what that leaves unseen. A warning, as a
 * missing hook is. */
static void admin_ddl_watch_check(admin_t *c, FILE *out)
{
    PGresult *r = admin_query(
        c, out,
        "SELECT count(*) FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid "
        "WHERE e.evtname IN ('objcached_ddl_end', 'objcached_sql_drop') "
        "AND e.evtenabled = 'A' AND p.proname = '_ddl_watch' "
        "AND p.pronamespace = 'objcached'::regnamespace",
        0, NULL);
    if (r != NULL && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "2") != 0)
        fprintf(out, "warning: the hook's event triggers objcached_ddl_end and "
                     "objcached_sql_drop are missing or not enabled always (only a "
                     "superuser can make them: objcached --install-hook as one): ALTER "
                     "TABLE ... ATTACH/DETACH PARTITION, INHERIT, NO INHERIT and DROP "
                     "TABLE of a partition do not invalidate the models whose rows "
                     "they move\n");
    PQclear(r);
}

int oc_admin_install_hook(const oc_conf_t *conf, FILE *out)
{
    admin_t a, *c = &a;
    if (!admin_connect(conf, out, c))
        return 1;
    int rc = 1;
    PGresult *r = admin_query(c, out, oc_admin_install_sql, -1, NULL);
    if (r == NULL) {
        fprintf(out, "installing the hook failed (above)\n");
        goto done;
    }
    PQclear(r);
    fprintf(out, "hook installed (schema objcached)\n");
    admin_ddl_watch_check(c, out);
    size_t failed = 0;
    for (size_t i = 0; i < conf->nmodels; i++) {
        const oc_model_conf_t *m = &conf->models[i];
        char tbl[300];
        qualified(m, tbl, sizeof(tbl));
        /* wal = off keeps a model the WAL reads there: in a fleet most
         * sidecars only follow the feed (wal = off), and running this with
         * one of their configs must not move the models back to triggers.
         * Moving back is explicit: attach(..., 'triggers') in SQL. */
        const char *p[4] = {tbl, m->name, m->key_column, conf->wal ? "wal" : "triggers"};
        r = admin_query(
            c, out,
            "WITH v AS (SELECT CASE WHEN $4 = 'wal' THEN 'wal' ELSE "
            "COALESCE((SELECT o.via FROM objcached.models o WHERE o.model = $2 "
            "AND o.tbl = $1::regclass), $4) END AS via) "
            "SELECT objcached.attach($1::regclass, $2, $3, v.via), v.via FROM v",
            4, p);
        if (r == NULL || PQntuples(r) != 1) {
            /* The others are tried still (each attach is its own
             * transaction, and running this again redoes none twice):
             * it stopped here, and the models after went unsaid. */
            PQclear(r);
            fprintf(out, "model %s: attach failed\n", m->name);
            failed++;
            continue;
        }
        int wal = strcmp(PQgetvalue(r, 0, 1), "wal") == 0;
        PQclear(r);
        fprintf(out, "model %s: attached to %s.%s (key %s, via %s)\n", m->name, m->schema,
                m->table, m->key_column,
                wal ? (conf->wal ? "the WAL" : "the WAL, kept: this config has wal = off")
                    : "triggers");
    }
    if (failed)
        fprintf(out, "%zu of %zu models not attached (above)\n", failed, conf->nmodels);
    if (conf->wal && admin_wal_setup(c, conf, out) != 0)
        goto done;
    rc = failed != 0;
done:
    admin_close(c);
    return rc;
}

/* The WAL source: the slot (made if missing; it needs the REPLICATION
 * attribute), then every problem objcached.wal_check() finds. Returns the
 * number of problems. */
static int admin_wal_check(admin_t *c, const char *slot, FILE *out)
{
    const char *p[1] = {slot};
    PGresult *r =
        admin_query(c, out, "SELECT problem FROM objcached.wal_check($1)", 1, p);
    if (r == NULL)
        return 1;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++)
        fprintf(out, "error: WAL source: %s\n", PQgetvalue(r, i, 0));
    PQclear(r);
    return n;
}

static int admin_wal_setup(admin_t *c, const oc_conf_t *conf, FILE *out)
{
    const char *p[1] = {conf->wal_slot};
    PGresult *r = admin_query(c, out,
                              "SELECT pg_create_logical_replication_slot($1, 'pgoutput') "
                              "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots "
                              "WHERE slot_name = $1)",
                              1, p);
    if (r == NULL) {
        fprintf(out,
                "the replication slot %s could not be made: the role needs the "
                "REPLICATION attribute (or your service's equivalent)\n",
                conf->wal_slot);
        return 1;
    }
    fprintf(out,
            PQntuples(r) ? "replication slot %s created\n"
                         : "replication slot %s exists\n",
            conf->wal_slot);
    PQclear(r);
    return admin_wal_check(c, conf->wal_slot, out);
}

static const char *expected_type(oc_key_type_t t)
{
    static const char *const names[] = {"bigint", "integer", "uuid", "text"};
    return names[t];
}

/* oc_sql_item_fn over a model's listed columns, then its key column. */
static void read_column(const void *arg, size_t i, const char **p, size_t *len)
{
    const oc_model_conf_t *m = arg;
    *p = i < m->ncolumns ? m->columns[i] : m->key_column;
    *len = strlen(*p);
}

/* What the loaders need of the table: SELECT on it, or on each column
 * they read (the listed ones and the key; without a list, row_to_json of
 * the whole row reads every column). Without it every load of the model
 * fails ("permission denied"). Then row security: a policy that applies
 * to objcached's role hides rows from its loads, and a hidden row is
 * cached as absent ("not found" for a row that exists). A permissive
 * policy that shows it every row is legitimate, so a warning. Returns the
 * error count. */
static int check_access(admin_t *c, const oc_model_conf_t *m, const char *tbl, FILE *out)
{
    const char *p[2] = {tbl, NULL};
    /* The GRANT printed names the table and role as SQL must, quoted when
     * their case or characters need it ("App"."Things"): unquoted,
     * PostgreSQL folds them to lower case, another table or no role. */
    PGresult *r =
        admin_query(c, out,
                    "SELECT has_table_privilege($1::regclass, 'SELECT'), "
                    "row_security_active($1::regclass), current_user, "
                    "pg_catalog.quote_ident(current_user), "
                    "(SELECT pg_catalog.quote_ident(n.nspname) || '.' || "
                    "pg_catalog.quote_ident(k.relname) FROM pg_catalog.pg_class k "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace "
                    "WHERE k.oid = $1::regclass)",
                    1, p);
    if (r == NULL)
        return 0; /* said by admin_query */
    int table_ok = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    if (strcmp(PQgetvalue(r, 0, 1), "t") == 0)
        fprintf(
            out,
            "warning: model %s: row security is active on %s.%s for role %s: rows its "
            "policies hide from the role are cached as absent (give it BYPASSRLS, or a "
            "policy that shows it every row)\n",
            m->name, m->schema, m->table, PQgetvalue(r, 0, 2));
    /* Names are at most NAMEDATALEN - 1 bytes; quoted, at most twice that + 2. */
    char role[128], grant_role[136], grant_tbl[280];
    snprintf(role, sizeof(role), "%s", PQgetvalue(r, 0, 2));
    snprintf(grant_role, sizeof(grant_role), "%s", PQgetvalue(r, 0, 3));
    snprintf(grant_tbl, sizeof(grant_tbl), "%s", PQgetvalue(r, 0, 4));
    PQclear(r);
    if (table_ok)
        return 0;
    /* Column grants: the columns the loads read, by name (the listed ones
     * and the key), or every live column (names NULL). */
    char *names = m->ncolumns ? oc_sql_array_of(m->ncolumns + 1, read_column, m) : NULL;
    p[1] = names;
    r = admin_query(
        c, out,
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = $1::regclass "
        "AND a.attnum > 0 AND NOT a.attisdropped AND NOT "
        "has_column_privilege($1::regclass, a.attnum, 'SELECT') AND "
        "($2::text[] IS NULL OR a.attname = ANY ($2::text[])) ORDER BY a.attnum",
        2, p);
    free(names);
    int errors = 0;
    for (int i = 0; r && i < PQntuples(r); i++, errors++)
        fprintf(out,
                "error: model %s: role %s may not read column %s of %s.%s: every load "
                "would fail (GRANT SELECT ON %s TO %s)\n",
                m->name, role, PQgetvalue(r, i, 0), m->schema, m->table, grant_tbl,
                grant_role);
    PQclear(r);
    return errors;
}

/* Whether the key column's type (keytype, format_type's) has an = with
 * key_type's, as the load's "key = ANY($1::type[])" needs: a text key left
 * at the default bigint, or a text key as uuid, failed every load with
 * "operator does not exist" while the type check said only "warning", as
 * it does for pairs that work (integer as bigint; a probe's finding).
 * PostgreSQL resolves the operator on two NULLs of the types, so the table
 * is not opened: no lock to wait for behind a migration. 1 if none. */
static int check_key_operator(admin_t *c, const oc_model_conf_t *m, const char *keytype,
                              FILE *out)
{
    static const char *const sql_types[] = {"pg_catalog.int8", "pg_catalog.int4",
                                            "pg_catalog.uuid", "pg_catalog.text"};
    char sql[512];
    int n = snprintf(sql, sizeof(sql),
                     "SELECT NULL::%s OPERATOR(pg_catalog.=) ANY (NULL::%s[])", keytype,
                     sql_types[m->key_type]);
    if (n < 0 || (size_t)n >= sizeof(sql))
        return 0; /* a type name that long: left to the loads to tell */
    PGresult *r = NULL;
    for (int run = 1;; run++) {
        r = admin_exec(c, sql, 0, NULL);
        if (admin_ok(r) || !admin_retry(c, r, run, out))
            break;
        PQclear(r);
    }
    int bad = !admin_ok(r);
    if (bad) {
        const char *why = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        fprintf(out,
                "error: model %s: key %s is %s, and PostgreSQL has no = between it and "
                "key_type %s: every load would fail (%s)\n",
                m->name, m->key_column, keytype, expected_type(m->key_type),
                why ? why : "out of memory");
    }
    PQclear(r);
    return bad;
}

/* The hook finds a model's keys by the column attach() was given
 * (objcached.models.key_attnum, which follows a rename): a configuration
 * whose key is another column reads keys that no write of the hook's
 * deletes, so every change stays cached until its TTL, silently (a probe's
 * finding: --check-config said ok). 1 if they differ. */
static int check_hook_key(admin_t *c, const oc_model_conf_t *m, const char *tbl,
                          FILE *out)
{
    const char *p[3] = {tbl, m->name, m->key_column};
    PGresult *r = admin_query(
        c, out,
        "SELECT a.attname, m.key_attnum IS NOT DISTINCT FROM (SELECT k.attnum FROM "
        "pg_attribute k WHERE k.attrelid = m.tbl AND k.attname = $3 AND NOT "
        "k.attisdropped) FROM objcached.models m LEFT JOIN pg_attribute a ON a.attrelid "
        "= "
        "m.tbl AND a.attnum = m.key_attnum WHERE m.model = $2 AND m.tbl = $1::regclass",
        3, p);
    int bad = r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 1), "t") != 0;
    if (bad)
        fprintf(
            out,
            "error: model %s: the hook invalidates it by column %s, the configuration's "
            "key is %s: changes would delete keys no one reads (objcached "
            "--install-hook -c FILE attaches it by %s)\n",
            m->name, PQgetisnull(r, 0, 0) ? "(dropped)" : PQgetvalue(r, 0, 0),
            m->key_column, m->key_column);
    PQclear(r);
    return bad;
}

/* Check one model; returns its error count. */
static int check_model(admin_t *c, const oc_model_conf_t *m, int have_hook, int wal,
                       FILE *out)
{
    char tbl[300];
    qualified(m, tbl, sizeof(tbl));
    const char *p[2] = {tbl, NULL};
    PGresult *r = admin_query(c, out, "SELECT to_regclass($1) IS NOT NULL", 1, p);
    if (r == NULL || strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        fprintf(out, "error: model %s: table %s.%s does not exist\n", m->name, m->schema,
                m->table);
        PQclear(r);
        return 1;
    }
    PQclear(r);
    int errors = 0;
    if (m->version_column && m->ncolumns > 0) {
        int listed = 0;
        for (size_t i = 0; i < m->ncolumns; i++)
            listed |= strcmp(m->columns[i], m->version_column) == 0;
        if (!listed) {
            fprintf(out,
                    "error: model %s: version_column %s is not in columns, so loaded "
                    "objects would carry no version\n",
                    m->name, m->version_column);
            errors++;
        }
    }
    char keytype[256] = "";
    int mismatch = 0;
    /* The columns, then the key column, then the version column. */
    for (size_t i = 0; i <= m->ncolumns + (m->version_column != NULL); i++) {
        const char *col = i < m->ncolumns    ? m->columns[i]
                          : i == m->ncolumns ? m->key_column
                                             : m->version_column;
        p[1] = col;
        r = admin_query(c, out,
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = $1::regclass AND attname = $2 AND attnum > 0 "
                        "AND NOT attisdropped",
                        2, p);
        if (r == NULL || PQntuples(r) == 0) {
            fprintf(out, "error: model %s: column %s does not exist in %s.%s\n", m->name,
                    col, m->schema, m->table);
            errors++;
        } else if (i == m->ncolumns) {
            snprintf(keytype, sizeof(keytype), "%s", PQgetvalue(r, 0, 0));
            if (strcmp(keytype, expected_type(m->key_type)) != 0)
                mismatch = 1;
        }
        PQclear(r);
    }
    if (errors == 0)
        errors += check_access(c, m, tbl, out); /* of columns that exist */
    if (mismatch) { /* an error if no = joins the two types, else a warning */
        int bad = errors == 0 && check_key_operator(c, m, keytype, out);
        errors += bad;
        if (!bad)
            fprintf(out, "warning: model %s: key %s is %s, configured as %s\n", m->name,
                    m->key_column, keytype, expected_type(m->key_type));
    }
    if (!have_hook) {
        fprintf(out,
                "warning: model %s: the invalidation hook is not installed "
                "(objcached --install-hook -c FILE)\n",
                m->name);
        return errors;
    }
    /* With the WAL source no trigger is expected (wal_check looks at the
     * publication); else the four triggers. */
    const char *p3[3] = {tbl, m->name, wal ? "t" : "f"};
    r = admin_query(c, out,
                    "SELECT ($3::boolean OR objcached.hooked($1::regclass)) AND EXISTS "
                    "(SELECT 1 FROM objcached.models WHERE model = $2 AND tbl = "
                    "$1::regclass)",
                    3, p3);
    int hooked = r != NULL && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    if (!hooked)
        fprintf(out,
                "warning: model %s: table %s.%s has no invalidation hook for it "
                "(objcached --install-hook -c FILE)\n",
                m->name, m->schema, m->table);
    PQclear(r);
    if (hooked && errors == 0)
        errors += check_hook_key(c, m, tbl, out);
    return errors;
}

/* The near-cache's proof of freshness bounds caught_up_at by the first
 * waiting outbox row in id order, which holds only while ids are drawn in
 * time order: a sequence CACHE above 1 hands each session its own block
 * (docs/invalidation.md, caught_up_at). An error where a near-cache relies
 * on it, else a warning. */
static int admin_outbox_seq_check(admin_t *c, int near, FILE *out)
{
    PGresult *r = admin_query(
        c, out,
        "SELECT s.seqcache, pg_get_serial_sequence('objcached.outbox', 'id') FROM "
        "pg_sequence s WHERE s.seqrelid = "
        "pg_get_serial_sequence('objcached.outbox', 'id')::regclass",
        0, NULL);
    int errors = 0;
    if (r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "1") != 0) {
        fprintf(
            out,
            "%s: %s has CACHE %s: the near-cache's proof of freshness needs outbox ids "
            "drawn in time order (ALTER SEQUENCE %s CACHE 1)\n",
            near ? "error" : "warning", PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0),
            PQgetvalue(r, 0, 1));
        errors = near != 0;
    }
    PQclear(r);
    return errors;
}

/* The WAL reader's stream needs a replication connection to wal_conninfo
 * (else conninfo): a pooler cannot pass one (pgbouncer answers
 * "unsupported startup parameter: replication"), and pg_hba.conf and the
 * REPLICATION attribute decide it apart from the role's ordinary logins.
 * Without this check --check-config said ok and the sidecar never held the
 * slot, saying why only in its log (found by the pgbouncer review).
 * IDENTIFY_SYSTEM is the replication protocol's no-op. */
static int admin_wal_stream_check(const oc_conf_t *conf, FILE *out)
{
    const char *conninfo = conf->wal_conninfo[0] ? conf->wal_conninfo : conf->conninfo;
    /* target_session_attrs as the WAL reader connects (oc_pgconn) */
    const char *keys[] = {"connect_timeout", "target_session_attrs",      "dbname",
                          "replication",     "fallback_application_name", NULL};
    const char *vals[] = {"5", "primary", conninfo, "database", "objcached-admin", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    PGresult *r = c && PQstatus(c) == CONNECTION_OK ? PQexec(c, "IDENTIFY_SYSTEM") : NULL;
    int ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        const char *why = r   ? PQresultErrorMessage(r)
                          : c ? PQerrorMessage(c)
                              : "out of memory";
        fprintf(out,
                "error: WAL source: no replication connection to %s: %.*s (it needs a "
                "replication entry in pg_hba.conf and the REPLICATION attribute, and no "
                "pooler in between)\n",
                conf->wal_conninfo[0] ? "wal_conninfo" : "conninfo",
                (int)strcspn(why, "\n"), why);
    }
    PQclear(r);
    PQfinish(c);
    return !ok;
}

/* timezone is checked for its characters only when the file is read; a
 * name the server does not know fails every loader session's SET at
 * connect, so the sidecar never loads. The server's own set_config says
 * (SET LOCAL: nothing stays on the session). */
static int admin_timezone_check(admin_t *c, const char *tz, FILE *out)
{
    const char *p[1] = {tz};
    PGresult *r = admin_exec(c, "SELECT set_config('TimeZone', $1, true)", 1, p);
    int ok = admin_ok(r);
    if (!ok) {
        const char *why = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        fprintf(out, "error: timezone %s: PostgreSQL refuses it: %s\n", tz,
                why ? why : "no message");
    }
    PQclear(r);
    return !ok;
}

int oc_admin_check_db(const oc_conf_t *conf, FILE *out)
{
    admin_t a, *c = &a;
    if (!admin_connect(conf, out, c)) {
        fprintf(out, "warning: the database was not checked\n");
        return 0;
    }
    PGresult *r =
        admin_query(c, out, "SELECT to_regnamespace('objcached') IS NOT NULL", 0, NULL);
    int have_hook = r && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    int errors = admin_timezone_check(c, conf->timezone, out);
    for (size_t i = 0; i < conf->nmodels; i++)
        errors += check_model(c, &conf->models[i], have_hook, conf->wal, out);
    if (conf->wal && have_hook)
        errors += admin_wal_check(c, conf->wal_slot, out);
    if (conf->wal)
        errors += admin_wal_stream_check(conf, out);
    if (have_hook) {
        errors += admin_outbox_seq_check(c, conf->near_cache_size > 0, out);
        admin_ddl_watch_check(c, out);
    }
    admin_close(c);
    return errors;
}

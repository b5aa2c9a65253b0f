#include "oc_sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *key_sql_type(oc_key_type_t t)
{
    /* Qualified: uuid and text are type names the role's search_path could
     * shadow (bigint and integer are keywords, pg_catalog's always). */
    static const char *const names[] = {"pg_catalog.int8", "pg_catalog.int4",
                                        "pg_catalog.uuid", "pg_catalog.text"};
    return names[t];
}

char *oc_sql_load(const oc_model_conf_t *m)
{
    size_t cap = 512 + 80 * m->ncolumns;
    char *sql = malloc(cap);
    if (sql == NULL)
        return NULL;
    /* Every built-in named in pg_catalog: a loader session keeps the role's
     * search_path (the application's functions a view calls resolve their
     * own unqualified names with it), so a schema listed there ahead of
     * pg_catalog must not take over row_to_json, text or =. */
    size_t off =
        (size_t)snprintf(sql, cap, "SELECT t.\"%s\"::pg_catalog.text, ", m->key_column);
    if (m->ncolumns == 0) {
        off += (size_t)snprintf(sql + off, cap - off,
                                "pg_catalog.row_to_json(t)::pg_catalog.text");
    } else {
        off += (size_t)snprintf(sql + off, cap - off,
                                "(SELECT pg_catalog.row_to_json(r) FROM (SELECT ");
        for (size_t i = 0; i < m->ncolumns; i++)
            off += (size_t)snprintf(sql + off, cap - off, "%st.\"%s\"", i ? ", " : "",
                                    m->columns[i]);
        off += (size_t)snprintf(sql + off, cap - off, ") AS r)::pg_catalog.text");
    }
    snprintf(
        sql + off, cap - off,
        " FROM \"%s\".\"%s\" AS t WHERE t.\"%s\" OPERATOR(pg_catalog.=) ANY($1::%s[])",
        m->schema, m->table, m->key_column, key_sql_type(m->key_type));
    return sql;
}

/* The settings every statement objcached sends relies on. timezone is
 * checked by oc_conf to [A-Za-z0-9_/+-]: safe in quotes. What a role's
 * defaults (a managed service's, a hardened config's) would otherwise
 * change under every statement: the text of a row (TimeZone, DateStyle,
 * IntervalStyle, extra_float_digits, bytea_output); search_path (pinned
 * where only objcached's own SQL runs), whose first schema could shadow the
 * unqualified built-ins those queries use (tables and objcached.* are
 * qualified); lock_timeout, which would fail a load that waits on a lock
 * before load_timeout (statement_timeout) does. The session-only ones
 * cannot be set for one transaction (oc_sql_local): idle_session_timeout,
 * which would close these pooled sessions whenever traffic pauses
 * (PostgreSQL's own docs warn against it for pools);
 * default_transaction_read_only and _isolation, under which the consumer
 * and the feed could not write (objcached.claim refuses SERIALIZABLE), and
 * a hot standby refuses SERIALIZABLE reads. value NULL: the role's own
 * (the readers' search_path), reset in each transaction and not set in a
 * session (ours from its start): session_authorization and role first,
 * which a pooled server session may hold from another client's SET ROLE
 * or SET SESSION AUTHORIZATION (its rights, its rows under row security). */
typedef struct sql_setting {
    const char *name;
    const char *value;
    int session_only;
    int quoted; /* in SET; unquoted a list such as search_path stays a list */
} sql_setting_t;

#define SQL_SETTINGS_MAX 16

static size_t sql_settings(const oc_conf_t *conf, int pin_search_path, char *timeout,
                           size_t tcap, sql_setting_t *out)
{
    snprintf(timeout, tcap, "%u", conf->load_timeout_ms);
    const sql_setting_t all[] = {
        {"client_encoding", "UTF8", 1, 1},
        {"session_authorization", NULL, 0, 0},
        {"role", NULL, 0, 0},
        {"TimeZone", conf->timezone, 0, 1},
        {"DateStyle", "ISO, MDY", 0, 1},
        {"IntervalStyle", "postgres", 0, 1},
        {"extra_float_digits", "1", 0, 0},
        {"bytea_output", "hex", 0, 1},
        {"statement_timeout", timeout, 0, 0},
        {"client_connection_check_interval", "1000", 1, 0},
        {"search_path", pin_search_path ? "pg_catalog, pg_temp" : NULL, 0, 0},
        {"idle_session_timeout", "0", 1, 0},
        {"default_transaction_read_only", "off", 1, 0},
        {"default_transaction_isolation", "read committed", 1, 1},
        {"lock_timeout", "0", 0, 0},
    };
    _Static_assert(sizeof(all) / sizeof(all[0]) <= SQL_SETTINGS_MAX, "SQL_SETTINGS_MAX");
    size_t n = sizeof(all) / sizeof(all[0]);
    memcpy(out, all, sizeof(all));
    return n;
}

/* The settings as SQL. A session's (local 0): `SET name = value; ...`,
 * those without a value left as the role has them (a reader's
 * search_path). One transaction's (local 1): one SELECT of
 * set_config(..., true) (SET LOCAL), undone at the transaction's end, so
 * nothing of ours is left on a session a pooler hands on; statement_timeout
 * set in the transaction bounds the statements after this one (PostgreSQL
 * arms each statement's timeout when it starts); a NULL value resets
 * (set_config's own rule): the role's own, whatever another client SET. */
enum { SQL_SESSION, SQL_LOCAL, SQL_RESETS }; /* settings_sql's `local` */

static char *settings_sql(const oc_conf_t *conf, int pin_search_path, int local)
{
    sql_setting_t set[SQL_SETTINGS_MAX];
    char timeout[16];
    size_t n = sql_settings(conf, pin_search_path, timeout, sizeof(timeout), set);
    char *sql = malloc(1024);
    if (sql == NULL)
        return NULL;
    size_t off = local ? (size_t)snprintf(sql, 1024, "SELECT ") : 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        const sql_setting_t *st = &set[i];
        if (local == SQL_RESETS && st->value)
            continue; /* the resets only: set_config(name, NULL, true) */
        if (local && !st->session_only)
            off += (size_t)snprintf(sql + off, 1024 - off,
                                    "%spg_catalog.set_config('%s', %s%s%s, true)",
                                    k++ ? ", " : "", st->name, st->value ? "'" : "",
                                    st->value ? st->value : "NULL", st->value ? "'" : "");
        else if (!local && st->value)
            off += (size_t)snprintf(sql + off, 1024 - off, "%sSET %s = %s%s%s",
                                    k++ ? "; " : "", st->name, st->quoted ? "'" : "",
                                    st->value, st->quoted ? "'" : "");
    }
    return sql;
}

char *oc_sql_session(const oc_conf_t *conf)
{
    return settings_sql(conf, 1, SQL_SESSION);
}

char *oc_sql_session_reader(const oc_conf_t *conf)
{
    return settings_sql(conf, 0, SQL_SESSION);
}

char *oc_sql_local(const oc_conf_t *conf)
{
    return settings_sql(conf, 1, SQL_LOCAL);
}

char *oc_sql_local_reader(const oc_conf_t *conf)
{
    return settings_sql(conf, 0, SQL_LOCAL);
}

char *oc_sql_local_resets(const oc_conf_t *conf)
{
    return settings_sql(conf, 0, SQL_RESETS);
}

char *oc_sql_row_security(const oc_conf_t *conf)
{
    static const char head[] = "; SELECT v.m, v.s, v.r, current_user FROM (VALUES ";
    /* the start's bound (as the generations read's): a lock on the
     * catalogs must not hold the start */
    static const char timeout[] = "SET LOCAL statement_timeout = 2000; ";
    static const char tail[] =
        ") v(m, s, r) JOIN pg_catalog.pg_namespace n ON n.nspname = v.s "
        "JOIN pg_catalog.pg_class k ON k.relnamespace = n.oid AND k.relname = v.r "
        "WHERE pg_catalog.row_security_active(k.oid) ORDER BY v.m";
    if (conf->nmodels == 0)
        return NULL;
    char *resets = oc_sql_local_resets(conf);
    if (resets == NULL)
        return NULL;
    size_t cap = sizeof(timeout) + strlen(resets) + sizeof(head) + sizeof(tail);
    for (size_t i = 0; i < conf->nmodels; i++) {
        const oc_model_conf_t *m = &conf->models[i];
        cap += strlen(m->name) + strlen(m->schema) + strlen(m->table) + 16;
    }
    char *sql = malloc(cap);
    if (sql == NULL) {
        free(resets);
        return NULL;
    }
    size_t len = (size_t)snprintf(sql, cap, "%s%s%s", timeout, resets, head);
    free(resets);
    for (size_t i = 0; i < conf->nmodels; i++) {
        const oc_model_conf_t *m = &conf->models[i];
        len += (size_t)snprintf(sql + len, cap - len, "%s('%s', '%s', '%s')",
                                i ? ", " : "", m->name, m->schema, m->table);
    }
    snprintf(sql + len, cap - len, "%s", tail);
    return sql;
}

char *oc_sql_array(const char *const *items, const size_t *lens, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += 2 * lens[i] + 3;
    char *s = malloc(cap), *p = s;
    if (s == NULL)
        return NULL;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        *p++ = '"';
        for (size_t k = 0; k < lens[i]; k++) {
            if (items[i][k] == '"' || items[i][k] == '\\')
                *p++ = '\\';
            *p++ = items[i][k];
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return s;
}

char *oc_sql_array_of(size_t n, oc_sql_item_fn item, const void *arg)
{
    if (n == 0)
        return NULL;
    const char **items = malloc(n * sizeof(*items));
    size_t *lens = malloc(n * sizeof(*lens));
    char *lit = NULL;
    if (items && lens) {
        for (size_t i = 0; i < n; i++)
            item(arg, i, &items[i], &lens[i]);
        lit = oc_sql_array(items, lens, n);
    }
    free(items);
    free(lens);
    return lit;
}

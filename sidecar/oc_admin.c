#include "oc_admin.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "oc_sql.h"

static PGconn *admin_connect(const oc_conf_t *conf, FILE *out)
{
    /* connect_timeout first: a value in the conninfo overrides it. */
    const char *keys[] = {"connect_timeout", "dbname", "fallback_application_name", NULL};
    const char *vals[] = {"5", conf->conninfo, "objcached-admin", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fprintf(out, "cannot connect to PostgreSQL: %s",
                c ? PQerrorMessage(c) : "out of memory\n");
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Run one parameterized query; NULL (and a message) unless it succeeded. */
static PGresult *admin_query(PGconn *c, FILE *out, const char *sql, int n,
                             const char *const *p)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        fprintf(out, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return NULL;
    }
    return r;
}

static void qualified(const oc_model_conf_t *m, char *buf, size_t cap)
{
    snprintf(buf, cap, "\"%s\".\"%s\"", m->schema, m->table);
}

int oc_admin_install_hook(const oc_conf_t *conf, FILE *out)
{
    PGconn *c = admin_connect(conf, out);
    if (c == NULL)
        return 1;
    int rc = 1;
    PGresult *r = PQexec(c, oc_admin_install_sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(out, "installing the hook failed: %s", PQresultErrorMessage(r));
        PQclear(r);
        goto done;
    }
    PQclear(r);
    fprintf(out, "hook installed (schema objcached)\n");
    for (size_t i = 0; i < conf->nmodels; i++) {
        const oc_model_conf_t *m = &conf->models[i];
        char tbl[300];
        qualified(m, tbl, sizeof(tbl));
        const char *p[3] = {tbl, m->name, m->key_column};
        r = admin_query(c, out, "SELECT objcached.attach($1::regclass, $2, $3)", 3, p);
        if (r == NULL) {
            fprintf(out, "model %s: attach failed\n", m->name);
            goto done;
        }
        PQclear(r);
        fprintf(out, "model %s: attached to %s.%s (key %s)\n", m->name, m->schema,
                m->table, m->key_column);
    }
    rc = 0;
done:
    PQfinish(c);
    return rc;
}

static const char *expected_type(oc_key_type_t t)
{
    static const char *const names[] = {"bigint", "integer", "uuid", "text"};
    return names[t];
}

/* Check one model; returns its error count. */
static int check_model(PGconn *c, const oc_model_conf_t *m, int have_hook, FILE *out)
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
        } else if (i == m->ncolumns &&
                   strcmp(PQgetvalue(r, 0, 0), expected_type(m->key_type)) != 0) {
            fprintf(out, "warning: model %s: key %s is %s, configured as %s\n", m->name,
                    col, PQgetvalue(r, 0, 0), expected_type(m->key_type));
        }
        PQclear(r);
    }
    if (!have_hook) {
        fprintf(out,
                "warning: model %s: the invalidation hook is not installed "
                "(objcached --install-hook -c FILE)\n",
                m->name);
        return errors;
    }
    p[1] = m->name;
    r = admin_query(c, out,
                    "SELECT objcached.hooked($1::regclass) AND EXISTS (SELECT 1 FROM "
                    "objcached.models WHERE model = $2 AND tbl = $1::regclass)",
                    2, p);
    if (r == NULL || strcmp(PQgetvalue(r, 0, 0), "t") != 0)
        fprintf(out,
                "warning: model %s: table %s.%s has no invalidation hook for it "
                "(objcached --install-hook -c FILE)\n",
                m->name, m->schema, m->table);
    PQclear(r);
    return errors;
}

int oc_admin_check_db(const oc_conf_t *conf, FILE *out)
{
    PGconn *c = admin_connect(conf, out);
    if (c == NULL) {
        fprintf(out, "warning: the database was not checked\n");
        return 0;
    }
    PGresult *r =
        admin_query(c, out, "SELECT to_regnamespace('objcached') IS NOT NULL", 0, NULL);
    int have_hook = r && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    int errors = 0;
    for (size_t i = 0; i < conf->nmodels; i++)
        errors += check_model(c, &conf->models[i], have_hook, out);
    PQfinish(c);
    return errors;
}

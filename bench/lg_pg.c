/* lg_pg: see lg_pg.h. */
#include "lg_pg.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lg_pg {
    PGconn *conn;
    char any_sql[256];
    char one_sql[256];
};

static bool prepare(lg_pg_t *pg, const char *name, const char *sql, char *err,
                    size_t errlen)
{
    PGresult *res = PQprepare(pg->conn, name, sql, 1, NULL);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "prepare %s: %s", name, PQerrorMessage(pg->conn));
    PQclear(res);
    return ok;
}

static bool prepare_all(lg_pg_t *pg, char *err, size_t errlen)
{
    return prepare(pg, "lg_any", pg->any_sql, err, errlen) &&
           prepare(pg, "lg_one", pg->one_sql, err, errlen);
}

lg_pg_t *lg_pg_open(const char *conninfo, const char *table, char *err, size_t errlen)
{
    lg_pg_t *pg = calloc(1, sizeof(*pg));
    if (pg == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* The table name was checked to be an identifier (lg_opts.c). */
    snprintf(pg->any_sql, sizeof(pg->any_sql),
             "SELECT id, row_to_json(t)::text FROM %s t WHERE id = ANY($1::bigint[])",
             table);
    snprintf(pg->one_sql, sizeof(pg->one_sql),
             "SELECT id, row_to_json(t)::text FROM %s t WHERE id = $1", table);
    pg->conn = PQconnectdb(conninfo);
    if (pg->conn == NULL || PQstatus(pg->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "PostgreSQL: %s",
                 pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
        goto fail;
    }
    if (!prepare_all(pg, err, errlen))
        goto fail;
    return pg;
fail:
    lg_pg_close(pg);
    return NULL;
}

void lg_pg_close(lg_pg_t *pg)
{
    if (pg == NULL)
        return;
    PQfinish(pg->conn);
    free(pg);
}

/* After a lost connection: reconnect, prepare again. */
static bool ready(lg_pg_t *pg, lg_tally_t *t)
{
    if (PQstatus(pg->conn) == CONNECTION_OK)
        return true;
    char err[200];
    PQreset(pg->conn);
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        lg_tally_fail(t, "PostgreSQL: %s", PQerrorMessage(pg->conn));
        return false;
    }
    if (!prepare_all(pg, err, sizeof(err))) {
        lg_tally_fail(t, "%s", err);
        return false;
    }
    return true;
}

/* Checks each row and hands the good ones to fn. */
static void take_rows(const PGresult *res, lg_batch_t *b, lg_row_fn fn, void *ctx,
                      lg_tally_t *t)
{
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        uint64_t id;
        long slot = -1;
        if (lg_parse_id(PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0), &id))
            slot = lg_batch_find(b, id);
        const char *json = PQgetvalue(res, i, 1);
        size_t len = (size_t)PQgetlength(res, i, 1);
        if (slot < 0 || b->state[slot] != LG_SLOT_WANTED ||
            !lg_batch_value_ok(b, (size_t)slot, json, len)) {
            t->bad_values++;
            continue;
        }
        b->state[slot] = LG_SLOT_LOADED;
        t->loaded++;
        if (fn != NULL)
            fn(ctx, (size_t)slot, json, len);
    }
}

static void run(lg_pg_t *pg, const char *stmt, const char *param, lg_batch_t *b,
                lg_row_fn fn, void *ctx, lg_tally_t *t)
{
    if (!ready(pg, t))
        return;
    t->pg_queries++;
    PGresult *res = PQexecPrepared(pg->conn, stmt, 1, &param, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) == 2)
        take_rows(res, b, fn, ctx, t);
    else
        lg_tally_fail(t, "PostgreSQL %s: %s", stmt, PQerrorMessage(pg->conn));
    PQclear(res);
}

void lg_pg_load_any(lg_pg_t *pg, lg_batch_t *b, const size_t *slots, size_t n,
                    lg_row_fn fn, void *ctx, lg_tally_t *t)
{
    if (n > 0)
        run(pg, "lg_any", lg_batch_array(b, slots, n), b, fn, ctx, t);
}

void lg_pg_load_one(lg_pg_t *pg, lg_batch_t *b, size_t slot, lg_row_fn fn, void *ctx,
                    lg_tally_t *t)
{
    char id[24];
    id[lg_u64_str(b->ids[slot], id)] = '\0';
    run(pg, "lg_one", id, b, fn, ctx, t);
}

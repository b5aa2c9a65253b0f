/* Unit tests for oc_sql: the load statement of each model shape, the
 * session settings, and array literals of hostile ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oc_sql.h"

static void test_load_whole_row(void **state)
{
    (void)state;
    oc_model_conf_t m = {.schema = "public",
                         .table = "users",
                         .key_column = "id",
                         .key_type = OC_KEY_BIGINT};
    char *sql = oc_sql_load(&m);
    assert_string_equal(
        sql,
        "SELECT t.\"id\"::pg_catalog.text, pg_catalog.row_to_json(t)::pg_catalog.text "
        "FROM \"public\".\"users\" AS t WHERE t.\"id\" OPERATOR(pg_catalog.=) "
        "ANY($1::pg_catalog.int8[])");
    free(sql);
}

static void test_load_columns(void **state)
{
    (void)state;
    char *cols[] = {"id", "Name", "select"};
    oc_model_conf_t m = {.schema = "app",
                         .table = "Docs",
                         .key_column = "uuid",
                         .key_type = OC_KEY_UUID,
                         .columns = cols,
                         .ncolumns = 3};
    char *sql = oc_sql_load(&m);
    assert_string_equal(
        sql, "SELECT t.\"uuid\"::pg_catalog.text, (SELECT pg_catalog.row_to_json(r) "
             "FROM (SELECT t.\"id\", t.\"Name\", t.\"select\") AS "
             "r)::pg_catalog.text FROM \"app\".\"Docs\" AS t WHERE t.\"uuid\" "
             "OPERATOR(pg_catalog.=) ANY($1::pg_catalog.uuid[])");
    free(sql);
    /* 256 columns of 63 bytes: the longest a configuration allows */
    static char names[256][64];
    static char *many[256];
    for (int i = 0; i < 256; i++) {
        memset(names[i], 'c', 63);
        names[i][62] = (char)('a' + i % 26);
        many[i] = names[i];
    }
    m.columns = many;
    m.ncolumns = 256;
    m.key_type = OC_KEY_TEXT;
    sql = oc_sql_load(&m);
    assert_non_null(sql);
    assert_non_null(strstr(sql, "OPERATOR(pg_catalog.=) ANY($1::pg_catalog.text[])"));
    free(sql);
}

static void test_session(void **state)
{
    (void)state;
    oc_conf_t c = {.timezone = "Europe/Paris", .load_timeout_ms = 5000};
    char *sql = oc_sql_session(&c);
    assert_non_null(strstr(sql, "SET TimeZone = 'Europe/Paris';"));
    assert_non_null(strstr(sql, "SET statement_timeout = 5000;"));
    assert_non_null(strstr(sql, "SET extra_float_digits = 1;"));
    /* ids and rows in UTF-8 even from a LATIN1 database */
    assert_non_null(strstr(sql, "SET client_encoding = 'UTF8';"));
    /* a role's defaults must not reach objcached's statements */
    assert_non_null(strstr(sql, "SET search_path = pg_catalog, pg_temp;"));
    assert_non_null(strstr(sql, "SET idle_session_timeout = 0;"));
    assert_non_null(strstr(sql, "SET default_transaction_read_only = off;"));
    assert_non_null(strstr(sql, "SET default_transaction_isolation = 'read committed';"));
    assert_non_null(strstr(sql, "SET lock_timeout = 0"));
    free(sql);
    /* the sessions that read the models' tables keep the role's search_path
     * (a view's functions resolve their own names with it), all else alike */
    sql = oc_sql_session_reader(&c);
    assert_null(strstr(sql, "search_path"));
    assert_non_null(strstr(sql, "SET statement_timeout = 5000;"));
    assert_non_null(strstr(sql, "SET idle_session_timeout = 0;"));
    assert_non_null(strstr(sql, "SET lock_timeout = 0"));
    free(sql);
}

/* pool_mode = transaction: the same settings, each local to the
 * transaction (set_config's third argument), in one statement */
static void test_local(void **state)
{
    (void)state;
    oc_conf_t c = {.timezone = "Europe/Paris", .load_timeout_ms = 5000};
    char *sql = oc_sql_local(&c);
    assert_int_equal(strncmp(sql, "SELECT ", 7), 0);
    assert_null(strchr(sql, ';'));
    assert_null(strstr(sql, "SET "));
    assert_non_null(strstr(sql, "set_config('TimeZone', 'Europe/Paris', true)"));
    assert_non_null(strstr(sql, "set_config('DateStyle', 'ISO, MDY', true)"));
    assert_non_null(strstr(sql, "set_config('IntervalStyle', 'postgres', true)"));
    assert_non_null(strstr(sql, "set_config('extra_float_digits', '1', true)"));
    assert_non_null(strstr(sql, "set_config('bytea_output', 'hex', true)"));
    assert_non_null(strstr(sql, "set_config('statement_timeout', '5000', true)"));
    assert_non_null(strstr(sql, "set_config('lock_timeout', '0', true)"));
    assert_non_null(
        strstr(sql, "set_config('search_path', 'pg_catalog, pg_temp', true)"));
    free(sql);
    /* the readers: the role's search_path, whatever another client SET */
    sql = oc_sql_local_reader(&c);
    assert_null(strstr(sql, "pg_temp"));
    assert_non_null(strstr(sql, "set_config('search_path', NULL, true)"));
    assert_non_null(strstr(sql, "set_config('statement_timeout', '5000', true)"));
    free(sql);
    /* objcached's own role, whatever role another client left the pooled
     * session in; whole with the longest zone and timeout */
    char tz[65];
    memset(tz, 'Z', 64);
    tz[64] = '\0';
    oc_conf_t l = {.timezone = tz, .load_timeout_ms = UINT32_MAX};
    for (int reader = 0; reader < 2; reader++) {
        sql = reader ? oc_sql_local_reader(&l) : oc_sql_local(&l);
        const char *sa = strstr(sql, "set_config('session_authorization', NULL, true), "
                                     "pg_catalog.set_config('role', NULL, true)");
        assert_non_null(sa);
        assert_true(sa < strstr(sql, "'TimeZone'"));
        const char *tail = "set_config('lock_timeout', '0', true)"; /* the last */
        assert_true(strlen(sql) > strlen(tail));
        assert_string_equal(sql + strlen(sql) - strlen(tail), tail);
        free(sql);
    }
    /* the resets alone (the admin tool's): role and search_path, nothing
     * that would bound its DDL or shape its text */
    sql = oc_sql_local_resets(&c);
    assert_string_equal(sql,
                        "SELECT pg_catalog.set_config('session_authorization', NULL, "
                        "true), pg_catalog.set_config('role', NULL, true), "
                        "pg_catalog.set_config('search_path', NULL, true)");
    free(sql);
    /* a session is objcached's own: no SET ROLE in it */
    sql = oc_sql_session(&c);
    assert_null(strstr(sql, "role"));
    assert_null(strstr(sql, "session_authorization"));
    free(sql);
}

/* The start's row security question: the resets first (the conninfo's
 * role), the models' names as literals in config order, sorted output. */
static void test_row_security(void **state)
{
    (void)state;
    oc_model_conf_t models[2] = {{.name = "Item", .schema = "public", .table = "items"},
                                 {.name = "Ver", .schema = "App", .table = "Vers"}};
    oc_conf_t c = {
        .timezone = "UTC", .load_timeout_ms = 5000, .models = models, .nmodels = 2};
    char *sql = oc_sql_row_security(&c);
    char *resets = oc_sql_local_resets(&c);
    assert_non_null(sql);
    const char *timeout = "SET LOCAL statement_timeout = 2000; ";
    assert_int_equal(strncmp(sql, timeout, strlen(timeout)), 0);
    assert_int_equal(strncmp(sql + strlen(timeout), resets, strlen(resets)), 0);
    assert_non_null(
        strstr(sql, "; SELECT v.m, v.s, v.r, current_user FROM (VALUES "
                    "('Item', 'public', 'items'), ('Ver', 'App', 'Vers')) v(m, s, r) "));
    assert_non_null(
        strstr(sql, "WHERE pg_catalog.row_security_active(k.oid) ORDER BY v.m"));
    free(sql);
    free(resets);
    c.nmodels = 0;
    assert_null(oc_sql_row_security(&c));
}

static void test_array(void **state)
{
    (void)state;
    const char *items[] = {"1", "a\"b", "back\\slash", "", "{,}", "NULL"};
    size_t lens[] = {1, 3, 10, 0, 3, 4};
    char *lit = oc_sql_array(items, lens, 6);
    assert_string_equal(lit,
                        "{\"1\",\"a\\\"b\",\"back\\\\slash\",\"\",\"{,}\",\"NULL\"}");
    free(lit);
    lit = oc_sql_array(items, lens, 0);
    assert_string_equal(lit, "{}");
    free(lit);
    /* an id with a NUL inside is escaped as itself: lengths, not strings */
    const char nul[] = {'a', '\0', 'b'};
    const char *one[] = {nul};
    size_t len1[] = {3};
    lit = oc_sql_array(one, len1, 1);
    assert_int_equal(lit[3], '\0');
    free(lit);
}

static void item_of(const void *arg, size_t i, const char **p, size_t *len)
{
    const char *const *v = arg;
    *p = v[i];
    *len = strlen(v[i]);
}

static void test_array_of(void **state)
{
    (void)state;
    const char *v[] = {"7", "8"};
    char *lit = oc_sql_array_of(2, item_of, v);
    assert_string_equal(lit, "{\"7\",\"8\"}");
    free(lit);
    assert_null(oc_sql_array_of(0, item_of, v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_whole_row), cmocka_unit_test(test_load_columns),
        cmocka_unit_test(test_session),        cmocka_unit_test(test_array),
        cmocka_unit_test(test_row_security),   cmocka_unit_test(test_array_of),
        cmocka_unit_test(test_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

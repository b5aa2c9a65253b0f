/*
 * Unit tests for oc_conf: the INI reader, every key, every unit parser, and
 * hostile files. Errors are checked by exact text where the wording is part
 * of the contract (docs/configuration.md shows them), and by line number
 * everywhere else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "oc_conf.h"

/* cmocka 1.1 does not declare its failures noreturn: the abort() (never
 * reached) tells static analysers that a failed check does not go on. */
#define fail_now(...)                                                                    \
    do {                                                                                 \
        fail_msg(__VA_ARGS__);                                                           \
        abort();                                                                         \
    } while (0)
#define need_conf(c, err)                                                                \
    do {                                                                                 \
        if ((c) == NULL)                                                                 \
            fail_now("%s", (err));                                                       \
    } while (0)

/* The smallest valid file, in pieces, so tests can replace one of them. */
#define MC      "[memcached]\nservers = 127.0.0.1:11211\n"
#define PG      "[postgresql]\nconninfo = dbname=app\n"
#define MODEL   "[model User]\ntable = users\n"
#define MINIMAL MC PG MODEL

static oc_conf_t *load(const char *text, char *err)
{
    memset(err, 0, OC_ERRLEN);
    return oc_conf_load_string(text, strlen(text), err);
}

static void expect_error(const char *text, const char *want)
{
    char err[OC_ERRLEN];
    oc_conf_t *c = load(text, err);
    if (c != NULL) {
        oc_conf_free(c);
        fail_now("loaded, expected error: %s", want);
    }
    assert_string_equal(err, want);
}

/* Loads, and exactly one warning: want. */
static void expect_warning(const char *text, const char *want)
{
    char err[OC_ERRLEN];
    oc_conf_t *c = load(text, err);
    if (c == NULL)
        fail_now("refused: %s", err);
    if (c->nwarnings != 1)
        fail_now("%zu warnings, expected one: %s", c->nwarnings, want);
    assert_string_equal(c->warnings[0], want);
    oc_conf_free(c);
}

/* The error starts with "<string>:LINE: " and contains `part`. */
static void expect_error_at(const char *text, int line, const char *part)
{
    char err[OC_ERRLEN], prefix[32];
    oc_conf_t *c = load(text, err);
    if (c != NULL) {
        oc_conf_free(c);
        fail_now("loaded, expected error on line %d: %s", line, part);
    }
    snprintf(prefix, sizeof(prefix), "<string>:%d: ", line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, part) == NULL)
        fail_now("got '%s', want '%s...%s'", err, prefix, part);
}

/* Loads "[objcached]\n<line>\n" + MINIMAL; the error (if any) is on line 2. */
static oc_conf_t *load_objcached(const char *line, char *err)
{
    char text[8192];
    snprintf(text, sizeof(text), "[objcached]\n%s\n" MINIMAL, line);
    return load(text, err);
}

static void objcached_bad(const char *line, const char *part)
{
    char text[8192];
    snprintf(text, sizeof(text), "[objcached]\n%s\n" MINIMAL, line);
    expect_error_at(text, 2, part);
}

/* Loads MC PG "[model M]\n<lines>"; the model header is line 5. */
static oc_conf_t *load_model(const char *lines, char *err)
{
    char text[8192];
    snprintf(text, sizeof(text), MC PG "[model M]\n%s\n", lines);
    return load(text, err);
}

static void model_bad(const char *lines, int line, const char *part)
{
    char text[8192];
    snprintf(text, sizeof(text), MC PG "[model M]\n%s\n", lines);
    expect_error_at(text, line, part);
}

/* Loads "[memcached]\nservers = <value>\n" PG MODEL. */
static oc_conf_t *load_servers(const char *value, char *err)
{
    static char text[16384];
    snprintf(text, sizeof(text), "[memcached]\nservers = %s\n" PG MODEL, value);
    return load(text, err);
}

/* `before`, `n` copies of `ch`, then `after`, into buf[cap]: long lines. */
static char *build(char *buf, size_t cap, const char *before, char ch, size_t n,
                   const char *after)
{
    size_t a = strlen(before);
    assert_true(a + n + strlen(after) < cap);
    snprintf(buf, cap, "%s", before);
    memset(buf + a, ch, n);
    snprintf(buf + a + n, cap - a - n, "%s", after);
    return buf;
}

/* ------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load(MINIMAL, err);
    need_conf(c, err);
    assert_string_equal(c->path, "<string>");
    assert_string_equal(c->listen, "127.0.0.1:11311");
    assert_string_equal(c->unix_socket, "");
    assert_int_equal(c->unix_socket_mode, 0660);
    assert_string_equal(c->key_prefix, "oc:");
    assert_string_equal(c->timezone, "UTC");
    assert_int_equal(c->max_connections, 4096);
    assert_int_equal(c->max_keys, 1024);
    assert_int_equal(c->max_line, 65536);
    assert_int_equal(c->max_value, 1048576);
    assert_int_equal(c->load_timeout_ms, 5000);
    assert_int_equal(c->ttl_jitter_pct, 10);
    assert_string_equal(c->log_level, "info");
    assert_int_equal(c->nservers, 1);
    assert_string_equal(c->servers[0].host, "127.0.0.1");
    assert_int_equal(c->servers[0].port, 11211);
    assert_int_equal(c->servers[0].weight, 1);
    assert_int_equal(c->mc_workers, 2);
    assert_int_equal(c->mc_connect_timeout_ms, 200);
    assert_int_equal(c->mc_io_timeout_ms, 500);
    assert_int_equal(c->mc_retry_timeout_ms, 2000);
    assert_string_equal(c->conninfo, "dbname=app");
    assert_int_equal(c->pg_connections, 2);
    assert_int_equal(c->nmodels, 1);
    const oc_model_conf_t *m = &c->models[0];
    assert_string_equal(m->name, "User");
    assert_string_equal(m->schema, "public");
    assert_string_equal(m->table, "users");
    assert_string_equal(m->key_column, "id");
    assert_int_equal(m->key_type, OC_KEY_BIGINT);
    assert_null(m->columns);
    assert_int_equal(m->ncolumns, 0);
    assert_int_equal(m->ttl_s, 3600);
    assert_int_equal(m->missing_ttl_s, 30);
    assert_int_equal(m->push_check, 1);
    assert_int_equal(m->line, 5);
    oc_conf_free(c);
}

static const char full_file[] =
    "; objcached test config\n"
    "# every key set\n"
    "[objcached]\n"
    "listen = [::1]:11400\n"
    "unix_socket = /run/objcached/oc.sock\n"
    "unix_socket_mode = 0600\n"
    "key_prefix = app1:\n"
    "timezone = Europe/Paris\n"
    "max_connections = 100\n"
    "max_keys = 50\n"
    "max_line = 16k\n"
    "max_value = 2m\n"
    "load_timeout = 1500ms\n"
    "ttl_jitter_pct = 0\n"
    "log_level = debug\n"
    "\n"
    "[memcached]\n"
    "servers = mc1.internal:11211:3, 10.0.0.2:11212 [fe80::1]:11213:7\n"
    "workers = 8\n"
    "connect_timeout = 1s\n"
    "io_timeout = 750ms\n"
    "retry_timeout = 1m\n"
    "\n"
    "[postgresql]\n"
    "conninfo = host=db port=5432 dbname=app user=oc\n"
    "connections = 4\n"
    "\n"
    "[model User]\n"
    "table = app.users\n"
    "key = user_id\n"
    "key_type = integer\n"
    "columns = user_id, name ,email\n"
    "ttl = 2h\n"
    "missing_ttl = 1m\n"
    "\n"
    "[model Session]\n"
    "table = sessions\n"
    "key = token\n"
    "key_type = uuid\n"
    "ttl = 30d\n"
    "missing_ttl = 1\n"
    "[model Slug]\n"
    "table = slugs\n"
    "key_type = text\n";

static void test_full_file(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load(full_file, err);
    need_conf(c, err);
    assert_string_equal(c->listen, "[::1]:11400");
    assert_string_equal(c->unix_socket, "/run/objcached/oc.sock");
    assert_int_equal(c->unix_socket_mode, 0600);
    assert_string_equal(c->key_prefix, "app1:");
    assert_string_equal(c->timezone, "Europe/Paris");
    assert_int_equal(c->max_connections, 100);
    assert_int_equal(c->max_keys, 50);
    assert_int_equal(c->max_line, 16384);
    assert_int_equal(c->max_value, 2097152);
    assert_int_equal(c->load_timeout_ms, 1500);
    assert_int_equal(c->ttl_jitter_pct, 0);
    assert_string_equal(c->log_level, "debug");

    assert_int_equal(c->nservers, 3);
    assert_string_equal(c->servers[0].host, "mc1.internal");
    assert_int_equal(c->servers[0].port, 11211);
    assert_int_equal(c->servers[0].weight, 3);
    assert_string_equal(c->servers[1].host, "10.0.0.2");
    assert_int_equal(c->servers[1].port, 11212);
    assert_int_equal(c->servers[1].weight, 1);
    assert_string_equal(c->servers[2].host, "fe80::1");
    assert_int_equal(c->servers[2].port, 11213);
    assert_int_equal(c->servers[2].weight, 7);
    assert_int_equal(c->mc_workers, 8);
    assert_int_equal(c->mc_connect_timeout_ms, 1000);
    assert_int_equal(c->mc_io_timeout_ms, 750);
    assert_int_equal(c->mc_retry_timeout_ms, 60000);

    assert_string_equal(c->conninfo, "host=db port=5432 dbname=app user=oc");
    assert_int_equal(c->pg_connections, 4);

    assert_int_equal(c->nmodels, 3);
    const oc_model_conf_t *u = &c->models[0];
    assert_string_equal(u->name, "User");
    assert_string_equal(u->schema, "app");
    assert_string_equal(u->table, "users");
    assert_string_equal(u->key_column, "user_id");
    assert_int_equal(u->key_type, OC_KEY_INTEGER);
    assert_int_equal(u->ncolumns, 3);
    assert_string_equal(u->columns[0], "user_id");
    assert_string_equal(u->columns[1], "name");
    assert_string_equal(u->columns[2], "email");
    assert_int_equal(u->ttl_s, 7200);
    assert_int_equal(u->missing_ttl_s, 60);
    assert_int_equal(u->line, 28);

    const oc_model_conf_t *s = &c->models[1];
    assert_string_equal(s->name, "Session");
    assert_string_equal(s->schema, "public");
    assert_string_equal(s->key_column, "token");
    assert_int_equal(s->key_type, OC_KEY_UUID);
    assert_null(s->columns);
    assert_int_equal(s->ttl_s, 30 * 86400);
    assert_int_equal(s->missing_ttl_s, 1);
    assert_int_equal(s->line, 36);
    assert_int_equal(c->models[2].key_type, OC_KEY_TEXT);
    assert_int_equal(c->models[2].line, 42);

    assert_ptr_equal(oc_conf_model(c, "Session", 7), s);
    assert_ptr_equal(oc_conf_model(c, "User:42", 4), u);
    assert_null(oc_conf_model(c, "Use", 3));
    assert_null(oc_conf_model(c, "user", 4));
    assert_null(oc_conf_model(c, "Users", 5));
    assert_null(oc_conf_model(c, "", 0));
    assert_null(oc_conf_model(c, "User\0xy", 7)); /* a NUL inside: no name matches */
    oc_conf_free(c);
}

/* The example shipped in docs/ loads and states the defaults. */
static void test_example_file(void **state)
{
    (void)state;
    char err[OC_ERRLEN], path[4096];
    const char *me = __FILE__, *slash = strrchr(me, '/');
    int n = slash != NULL ? (int)(slash - me) : 0;
    snprintf(path, sizeof(path), "%.*s%s../../docs/objcached.example.ini", n, me,
             n > 0 ? "/" : "");
    if (access(path, R_OK) != 0)
        skip(); /* built from a copy of the test without the tree */
    oc_conf_t *c = oc_conf_load_file(path, err);
    need_conf(c, err);
    oc_conf_t *d = load(MINIMAL, err);
    need_conf(d, err);
    assert_string_equal(c->path, path);
    assert_string_equal(c->listen, d->listen);
    assert_string_equal(c->unix_socket, d->unix_socket);
    assert_int_equal(c->unix_socket_mode, d->unix_socket_mode);
    assert_string_equal(c->key_prefix, d->key_prefix);
    assert_string_equal(c->timezone, d->timezone);
    assert_int_equal(c->max_connections, d->max_connections);
    assert_int_equal(c->max_keys, d->max_keys);
    assert_int_equal(c->max_line, d->max_line);
    assert_int_equal(c->max_value, d->max_value);
    assert_int_equal(c->load_timeout_ms, d->load_timeout_ms);
    assert_int_equal(c->ttl_jitter_pct, d->ttl_jitter_pct);
    assert_string_equal(c->log_level, d->log_level);
    assert_int_equal(c->nservers, 2);
    assert_int_equal(c->mc_workers, d->mc_workers);
    assert_int_equal(c->mc_connect_timeout_ms, d->mc_connect_timeout_ms);
    assert_int_equal(c->mc_io_timeout_ms, d->mc_io_timeout_ms);
    assert_int_equal(c->mc_retry_timeout_ms, d->mc_retry_timeout_ms);
    assert_int_equal(c->pg_connections, d->pg_connections);
    assert_int_equal(c->nmodels, 2);
    const oc_model_conf_t *u = oc_conf_model(c, "User", 4);
    const oc_model_conf_t *p = oc_conf_model(c, "Post", 4);
    if (u == NULL || p == NULL)
        fail_now("models User and Post are not both in %s", path);
    assert_int_equal(u->key_type, OC_KEY_BIGINT);
    assert_true(u->ncolumns > 0);
    assert_int_equal(u->ttl_s, d->models[0].ttl_s);
    assert_int_equal(u->missing_ttl_s, d->models[0].missing_ttl_s);
    oc_conf_free(d);
    oc_conf_free(c);
}

/* ------------------------------------------------------------------ */
/* Unit parsers                                                        */

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"0", 0},
        {"1", 1000},
        {"30", 30000},
        {"250ms", 250},
        {"0ms", 0},
        {"30s", 30000},
        {"5m", 300000},
        {"2h", 7200000},
        {"1d", 86400000},
        {"007s", 7000},
        {"30d", 2592000000u},
        {"18446744073709551615ms", UINT64_MAX},
        {"18446744073709551s", 18446744073709551000u},
    };
    static const char *const bad[] = {
        "",
        "ms",
        "s",
        "-1",
        "+1",
        "-5s",
        " 5s",
        "5s ",
        "5 s",
        "5S",
        "5M",
        "5sec",
        "5us",
        "1.5s",
        "1e3",
        "5ss",
        "5mss",
        "0x10",
        "5s5",
        "1w",
        "5\t",
        "18446744073709551616ms",
        "99999999999999999999",
        "18446744073709552s",
        "213503982334601d",
    };
    uint64_t v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        if (oc_conf_parse_duration_ms(good[i].s, &v) != OC_OK)
            fail_now("rejected '%s'", good[i].s);
        if (v != good[i].ms)
            fail_now("'%s' = %llu", good[i].s, (unsigned long long)v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (oc_conf_parse_duration_ms(bad[i], &v) != OC_EINVAL)
            fail_now("accepted '%s'", bad[i]);
    assert_int_equal(oc_conf_parse_duration_ms(NULL, &v), OC_EINVAL);
    assert_int_equal(oc_conf_parse_duration_ms("1s", NULL), OC_EINVAL);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t n;
    } good[] = {
        {"0", 0},
        {"512", 512},
        {"64k", 65536},
        {"64K", 65536},
        {"1m", 1048576},
        {"1M", 1048576},
        {"1g", 1073741824},
        {"2G", 2147483648u},
        {"0k", 0},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183g", 17179869183ull << 30},
    };
    static const char *const bad[] = {
        "",
        "k",
        "-1",
        "+1",
        " 1k",
        "1k ",
        "1 k",
        "1kb",
        "1KB",
        "1b",
        "1t",
        "1.5m",
        "0x10",
        "1kk",
        "1e3",
        "m1",
        "18446744073709551616",
        "99999999999999999999",
        "17179869184g",
        "18014398509481984k",
    };
    uint64_t v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        if (oc_conf_parse_size(good[i].s, &v) != OC_OK)
            fail_now("rejected '%s'", good[i].s);
        if (v != good[i].n)
            fail_now("'%s' = %llu", good[i].s, (unsigned long long)v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (oc_conf_parse_size(bad[i], &v) != OC_EINVAL)
            fail_now("accepted '%s'", bad[i]);
    assert_int_equal(oc_conf_parse_size(NULL, &v), OC_EINVAL);
    assert_int_equal(oc_conf_parse_size("1", NULL), OC_EINVAL);
}

static void test_parse_bool(void **state)
{
    (void)state;
    static const char *const on[] = {"on", "ON", "yes", "Yes", "true", "TRUE", "1"};
    static const char *const off[] = {"off", "Off", "no", "NO", "false", "False", "0"};
    static const char *const bad[] = {"",  "2", "onn", " on",    "on ",
                                      "y", "n", "-1",  "enabled"};
    int v;
    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        v = 7;
        if (oc_conf_parse_bool(on[i], &v) != OC_OK || v != 1)
            fail_now("'%s' is not on", on[i]);
        v = 7;
        if (oc_conf_parse_bool(off[i], &v) != OC_OK || v != 0)
            fail_now("'%s' is not off", off[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (oc_conf_parse_bool(bad[i], &v) != OC_EINVAL)
            fail_now("accepted '%s'", bad[i]);
    assert_int_equal(oc_conf_parse_bool(NULL, &v), OC_EINVAL);
    assert_int_equal(oc_conf_parse_bool("on", NULL), OC_EINVAL);
}

static void test_push_check(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load_model("table = t\npush_check = off", err);
    assert_non_null(c);
    assert_int_equal(c->models[0].push_check, 0);
    oc_conf_free(c);
    model_bad("table = t\npush_check = maybe", 7, "'maybe' is not one of on, off");
    model_bad("table = t\npush_check =", 7, "push_check");
}

static void test_key_type_name(void **state)
{
    (void)state;
    assert_string_equal(oc_key_type_name(OC_KEY_BIGINT), "bigint");
    assert_string_equal(oc_key_type_name(OC_KEY_INTEGER), "integer");
    assert_string_equal(oc_key_type_name(OC_KEY_UUID), "uuid");
    assert_string_equal(oc_key_type_name(OC_KEY_TEXT), "text");
    assert_string_equal(oc_key_type_name((oc_key_type_t)42), "unknown");
    assert_string_equal(oc_key_type_name((oc_key_type_t)-1), "unknown");
}

/* ------------------------------------------------------------------ */
/* [objcached] keys                                                    */

static void test_numbers(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const struct {
        const char *line;
        size_t off;
        uint32_t want;
    } good[] = {
        {"max_connections = 1", offsetof(oc_conf_t, max_connections), 1},
        {"max_connections = 1000000", offsetof(oc_conf_t, max_connections), 1000000},
        {"max_keys = 100000", offsetof(oc_conf_t, max_keys), 100000},
        {"max_keys = 0001", offsetof(oc_conf_t, max_keys), 1},
        {"max_line = 1k", offsetof(oc_conf_t, max_line), 1024},
        {"max_line = 1024", offsetof(oc_conf_t, max_line), 1024},
        {"max_line = 16m", offsetof(oc_conf_t, max_line), 16777216},
        {"max_value = 128M", offsetof(oc_conf_t, max_value), 134217728},
        {"load_timeout = 10ms", offsetof(oc_conf_t, load_timeout_ms), 10},
        {"load_timeout = 10m", offsetof(oc_conf_t, load_timeout_ms), 600000},
        {"load_timeout = 2", offsetof(oc_conf_t, load_timeout_ms), 2000},
        {"ttl_jitter_pct = 100", offsetof(oc_conf_t, ttl_jitter_pct), 100},
        {"unix_socket_mode = 0", offsetof(oc_conf_t, unix_socket_mode), 0},
        {"unix_socket_mode = 660", offsetof(oc_conf_t, unix_socket_mode), 0660},
        {"unix_socket_mode = 0777", offsetof(oc_conf_t, unix_socket_mode), 0777},
        {"unix_socket_mode = 00700", offsetof(oc_conf_t, unix_socket_mode), 0700},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        oc_conf_t *c = load_objcached(good[i].line, err);
        if (c == NULL)
            fail_now("'%s': %s", good[i].line, err);
        uint32_t got;
        memcpy(&got, (char *)c + good[i].off, sizeof(got));
        if (got != good[i].want)
            fail_now("'%s' gave %u", good[i].line, got);
        oc_conf_free(c);
    }
}

static void test_numbers_bad(void **state)
{
    (void)state;
    objcached_bad("max_keys = 0", "max_keys: '0' is out of range (1..100000)");
    objcached_bad("max_keys = 100001", "max_keys: '100001' is out of range (1..100000)");
    objcached_bad("max_keys = -1", "max_keys: '-1' is not a whole number");
    objcached_bad("max_keys = 1k", "max_keys: '1k' is not a whole number");
    objcached_bad("max_keys = ", "max_keys: '' is not a whole number");
    objcached_bad("max_keys = 99999999999999999999",
                  "max_keys: '99999999999999999999' is out of range "
                  "(1..100000)");
    objcached_bad("max_connections = 0", "(1..1000000)");
    objcached_bad("max_connections = 4294967297", "(1..1000000)");
    objcached_bad("ttl_jitter_pct = 101",
                  "ttl_jitter_pct: '101' is out of range (0..100)");
    objcached_bad("max_line = 1023", "max_line: '1023' is out of range (1k..16m)");
    objcached_bad("max_line = 16385k", "(1k..16m)");
    objcached_bad("max_line = 64kb", "max_line: '64kb' is not a size");
    objcached_bad("max_value = 129m", "max_value: '129m' is out of range "
                                      "(1k..128m)");
    objcached_bad("max_value = 99999999999999999999g", "out of range");
    objcached_bad("load_timeout = 9ms",
                  "load_timeout: '9ms' is out of range (10ms..10m)");
    objcached_bad("load_timeout = 601s", "(10ms..10m)");
    objcached_bad("load_timeout = 5 s", "load_timeout: '5 s' is not a duration");
    objcached_bad("load_timeout = 99999999999999999999d",
                  "load_timeout: '99999999999999999999d' is out of range");
    objcached_bad("unix_socket_mode = 0778",
                  "unix_socket_mode: '0778' is not an octal mode");
    objcached_bad("unix_socket_mode = 01000",
                  "unix_socket_mode: '01000' is out of range (0..0777)");
    objcached_bad("unix_socket_mode = 0o660", "is not an octal mode");
    objcached_bad("unix_socket_mode = ", "is not an octal mode");
    objcached_bad("unix_socket_mode = 7777777777777777777777777",
                  "is out of range (0..0777)");
    objcached_bad("unix_socket_mode = 7777777777777777777777778", "is not an octal mode");
}

static void test_listen(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const char *const good[] = {
        "127.0.0.1:11311", "0.0.0.0:1",
        "localhost:65535", "[::1]:11311",
        "[::]:11311",      "my-host.example.com:80",
        "[2001:db8::1]:9", "[::ffff:1.2.3.4]:11311",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "listen = %s", good[i]);
        oc_conf_t *c = load_objcached(line, err);
        if (c == NULL)
            fail_now("'%s': %s", good[i], err);
        assert_string_equal(c->listen, good[i]);
        oc_conf_free(c);
    }
    objcached_bad("listen = ::1:11311", "listen: '::1:11311' is not host:port");
    objcached_bad("listen = localhost", "is not host:port");
    objcached_bad("listen = :11311", "is not host:port");
    objcached_bad("listen = host:", "is not host:port");
    objcached_bad("listen = host:abc", "is not host:port");
    objcached_bad("listen = host:11311:1", "is not host:port");
    objcached_bad("listen = [::1]11311", "is not host:port");
    objcached_bad("listen = [::1:11311", "is not host:port");
    objcached_bad("listen = [zz::1]:11311", "is not host:port");
    objcached_bad("listen = -host:1", "is not host:port");
    objcached_bad("listen = ho st:1", "is not host:port");
    objcached_bad("listen = host:0",
                  "listen: port in 'host:0' is out of range (1..65535)");
    objcached_bad("listen = host:65536", "out of range (1..65535)");
    objcached_bad("listen = host:99999999999999999999", "out of range (1..65535)");
}

static void test_listeners(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load_objcached("listen =\nunix_socket = /tmp/oc.sock", err);
    need_conf(c, err);
    assert_string_equal(c->listen, "");
    assert_string_equal(c->unix_socket, "/tmp/oc.sock");
    oc_conf_free(c);

    expect_error("[objcached]\nlisten =\n" MINIMAL,
                 "<string>: listen and unix_socket are both empty; set at "
                 "least one in [objcached]");
    expect_error("[objcached]\nlisten = ; none\nunix_socket =\n" MINIMAL,
                 "<string>: listen and unix_socket are both empty; set at "
                 "least one in [objcached]");

    char line[256];
    /* 107 bytes of path: the most that fits in sockaddr_un */
    c = load_objcached(build(line, sizeof(line), "unix_socket = /", 'a', 106, ""), err);
    need_conf(c, err);
    assert_int_equal(strlen(c->unix_socket), 107);
    oc_conf_free(c);
    build(line, sizeof(line), "unix_socket = /", 'a', 107, "");
    objcached_bad(line, "unix_socket: '/aaaa");
    objcached_bad(line, "' is longer than 107 bytes");
    objcached_bad("unix_socket = /tmp/a\x01.sock",
                  "unix_socket: '/tmp/a\\x01.sock' has a control character");
}

/* metrics_listen on listen's port and address (or a wildcard that covers
 * it, or a name that resolves to it) passed --check-config, and then the
 * start failed to bind. */
static void test_metrics_listen_not_on_listen(void **state)
{
    (void)state;
    static const char *const clash[][2] = {
        {"127.0.0.1:11311", "127.0.0.1:11311"},
        {"LocalHost:80", "localhost:80"},
        {"0.0.0.0:11311", "127.0.0.1:11311"},
        {"127.0.0.1:11311", "0.0.0.0:11311"},
        {"0.0.0.0:9", "myhost:9"},
        {"[::1]:11311", "[0::1]:11311"},
        {"[::]:11311", "127.0.0.1:11311"},
        {"10.0.0.1:11311", "[::]:11311"},
        {"[::]:7", "[::1]:7"},
        /* names are resolved: compared as written, these passed, and where
         * localhost is also ::1 the metrics listener bound [::1]:P, so a
         * client of localhost:P reached either listener */
        {"127.0.0.1:11311", "localhost:11311"},
        {"localhost:11311", "127.0.0.1:11311"},
    };
    for (size_t i = 0; i < sizeof(clash) / sizeof(clash[0]); i++) {
        char text[512], want[256];
        snprintf(text, sizeof(text),
                 "[objcached]\nlisten = %s\nmetrics_listen = %s\n" MINIMAL, clash[i][0],
                 clash[i][1]);
        snprintf(want, sizeof(want),
                 "metrics_listen (%s) and listen (%s) are the same port on the same "
                 "address",
                 clash[i][1], clash[i][0]);
        expect_error_at(text, 3, want);
    }
    /* the default listen (127.0.0.1:11311) counts too */
    expect_error_at("[objcached]\nmetrics_listen = 127.0.0.1:11311\n" MINIMAL, 2,
                    "metrics_listen (127.0.0.1:11311) and listen (127.0.0.1:11311)");
    static const char *const apart[][2] = {
        {"127.0.0.1:11311", "127.0.0.1:11312"},
        {"127.0.0.1:11311", "127.0.0.2:11311"},
        {"0.0.0.0:11311", "[::1]:11311"},
        {"[::1]:11311", "127.0.0.1:11311"},
        {"", "127.0.0.1:11311"},
    };
    for (size_t i = 0; i < sizeof(apart) / sizeof(apart[0]); i++) {
        char text[512], err[OC_ERRLEN];
        snprintf(text, sizeof(text),
                 "[objcached]\nlisten = %s\nunix_socket = /tmp/oc.sock\n"
                 "metrics_listen = %s\n" MINIMAL,
                 apart[i][0], apart[i][1]);
        oc_conf_t *c = load(text, err);
        if (c == NULL)
            fail_now("'%s' and '%s': %s", apart[i][0], apart[i][1], err);
        oc_conf_free(c);
    }
}

static void test_strings(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const struct {
        const char *line;
        size_t off;
        const char *want;
    } good[] = {
        {"key_prefix =", offsetof(oc_conf_t, key_prefix), ""},
        {"key_prefix = a;b#c", offsetof(oc_conf_t, key_prefix), "a;b#c"},
        {"key_prefix = 12345678901234567890123456789012", offsetof(oc_conf_t, key_prefix),
         "12345678901234567890123456789012"},
        {"key_prefix = v2|", offsetof(oc_conf_t, key_prefix), "v2|"},
        {"timezone = America/Argentina/Buenos_Aires", offsetof(oc_conf_t, timezone),
         "America/Argentina/Buenos_Aires"},
        {"timezone = Etc/GMT+5", offsetof(oc_conf_t, timezone), "Etc/GMT+5"},
        {"timezone = UTC-3", offsetof(oc_conf_t, timezone), "UTC-3"},
        {"log_level = error", offsetof(oc_conf_t, log_level), "error"},
        {"log_level = warn", offsetof(oc_conf_t, log_level), "warn"},
        {"log_level = info", offsetof(oc_conf_t, log_level), "info"},
        {"log_level = debug ; noisy", offsetof(oc_conf_t, log_level), "debug"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        oc_conf_t *c = load_objcached(good[i].line, err);
        if (c == NULL)
            fail_now("'%s': %s", good[i].line, err);
        char *got;
        memcpy(&got, (char *)c + good[i].off, sizeof(got));
        assert_string_equal(got, good[i].want);
        oc_conf_free(c);
    }
    char tz[128];
    snprintf(tz, sizeof(tz), "timezone = %064d", 0); /* the longest */
    oc_conf_t *c = load_objcached(tz, err);
    need_conf(c, err);
    assert_int_equal(strlen(c->timezone), 64);
    oc_conf_free(c);

    objcached_bad("key_prefix = 123456789012345678901234567890123",
                  "key_prefix: '123456789012345678901234567890123' is not "
                  "0..32 printable ASCII characters without spaces");
    objcached_bad("key_prefix = a b", "key_prefix: 'a b' is not 0..32");
    objcached_bad("key_prefix = a\x7f", "key_prefix: 'a\\x7f' is not");
    objcached_bad("key_prefix = \xc3\xa9", "key_prefix: '\\xc3\\xa9' is not");
    objcached_bad("timezone =", "timezone: '' is not a time zone name");
    objcached_bad("timezone = UTC'; DROP", "timezone: 'UTC'; DROP' is not");
    objcached_bad("timezone = a b", "is not a time zone name");
    objcached_bad("timezone = "
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaa", /* 65 */
                  "is not a time zone name");
    objcached_bad("log_level = verbose",
                  "log_level: 'verbose' is not one of error, warn, info, "
                  "debug");
    objcached_bad("log_level = INFO", "is not one of");
}

/* ------------------------------------------------------------------ */
/* [memcached] and [postgresql]                                        */

static void test_servers(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c =
        load_servers("a:1,b:2:1000 ,, [::1]:11211\t[2001:db8::7]:3:5,c.d-e_f:65535", err);
    need_conf(c, err);
    assert_int_equal(c->nservers, 5);
    assert_string_equal(c->servers[0].host, "a");
    assert_int_equal(c->servers[0].port, 1);
    assert_int_equal(c->servers[0].weight, 1);
    assert_int_equal(c->servers[1].weight, 1000);
    assert_string_equal(c->servers[2].host, "::1");
    assert_int_equal(c->servers[2].port, 11211);
    assert_string_equal(c->servers[3].host, "2001:db8::7");
    assert_int_equal(c->servers[3].port, 3);
    assert_int_equal(c->servers[3].weight, 5);
    assert_string_equal(c->servers[4].host, "c.d-e_f");
    assert_int_equal(c->servers[4].port, 65535);
    oc_conf_free(c);

    /* 256 servers are allowed, 257 are not (short names: a line is at
     * most 4096 bytes). */
    static char list[257 * 8];
    size_t o = 0;
    for (int i = 0; i < 257; i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "h%d:1 ", i);
    c = load_servers(list, err);
    assert_null(c);
    assert_string_equal(err, "<string>:2: servers: more than 256 servers");
    list[o - strlen("h256:1 ")] = '\0';
    c = load_servers(list, err);
    need_conf(c, err);
    assert_int_equal(c->nservers, 256);
    oc_conf_free(c);
}

static void test_servers_bad(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        const char *want;
    } bad[] = {
        {"", "servers: no servers given"},
        {" , ,", "servers: no servers given"},
        {"localhost", "servers: 'localhost' is not host:port[:weight] "
                      "(IPv6 as [::1]:11211)"},
        {"::1:11211", "'::1:11211' is not host:port[:weight]"},
        {"[::1]", "'[::1]' is not host:port[:weight]"},
        {"[::1]:", "'[::1]:' is not host:port[:weight]"},
        {"[::1:11211", "'[::1:11211' is not host:port[:weight]"},
        {"[nothex]:1", "'[nothex]:1' is not host:port[:weight]"},
        {"a:1:2:3", "'a:1:2:3' is not host:port[:weight]"},
        {"a:1:", "'a:1:' is not host:port[:weight]"},
        {"a:x", "'a:x' is not host:port[:weight]"},
        {"a:-1", "'a:-1' is not host:port[:weight]"},
        {"a:1:w", "'a:1:w' is not host:port[:weight]"},
        {":11211", "':11211' is not host:port[:weight]"},
        {"a/b:1", "'a/b:1' is not host:port[:weight]"},
        {"a:0", "servers: port in 'a:0' is out of range (1..65535)"},
        {"a:65536", "port in 'a:65536' is out of range (1..65535)"},
        {"a:99999999999999999999", "out of range (1..65535)"},
        {"a:1:0", "servers: weight in 'a:1:0' is out of range (1..1000)"},
        {"a:1:1001", "weight in 'a:1:1001' is out of range (1..1000)"},
        {"a:1 b:2 A:1", "servers: server 'A' port 1 is listed twice"},
        {"[::1]:5 [::1]:5:2", "server '::1' port 5 is listed twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), "[memcached]\nservers = %s\n" PG MODEL,
                 bad[i].value);
        expect_error_at(text, 2, bad[i].want);
    }
}

static void test_memcached_postgresql_keys(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load("[memcached]\nservers = h:1\nworkers = 64\n"
                        "connect_timeout = 1ms\nio_timeout = 10m\n"
                        "retry_timeout = 0s500ms\n" PG MODEL,
                        err);
    assert_null(c);
    assert_string_equal(err, "<string>:6: retry_timeout: '0s500ms' is not a "
                             "duration (e.g. 250ms, 30s, 5m, 2h, 1d)");
    c = load("[memcached]\nservers = h:1\nworkers = 64\n"
             "connect_timeout = 1ms\nio_timeout = 10m\nretry_timeout = 3\n"
             "[postgresql]\nconnections = 64\nconninfo = postgres://u@h/db\n" MODEL,
             err);
    need_conf(c, err);
    assert_int_equal(c->mc_workers, 64);
    assert_int_equal(c->mc_connect_timeout_ms, 1);
    assert_int_equal(c->mc_io_timeout_ms, 600000);
    assert_int_equal(c->mc_retry_timeout_ms, 3000);
    assert_int_equal(c->pg_connections, 64);
    assert_string_equal(c->conninfo, "postgres://u@h/db");
    oc_conf_free(c);

    expect_error("[memcached]\nservers = h:1\nworkers = 0\n" PG MODEL,
                 "<string>:3: workers: '0' is out of range (1..64)");
    expect_error("[memcached]\nservers = h:1\nworkers = 65\n" PG MODEL,
                 "<string>:3: workers: '65' is out of range (1..64)");
    expect_error("[memcached]\nservers = h:1\nconnect_timeout = 0ms\n" PG MODEL,
                 "<string>:3: connect_timeout: '0ms' is out of range "
                 "(1ms..10m)");
    expect_error("[memcached]\nservers = h:1\nio_timeout = 11m\n" PG MODEL,
                 "<string>:3: io_timeout: '11m' is out of range (1ms..10m)");
    expect_error(MC "[postgresql]\nconninfo = dbname=x\nconnections = 65\n" MODEL,
                 "<string>:5: connections: '65' is out of range (1..64)");
    expect_error(MC "[postgresql]\nconninfo = ; nothing\n" MODEL,
                 "<string>:4: conninfo: must not be empty");
    /* load_split_min: 50 by default, 0 (never split) up to 100000 */
    c = load(MC "[postgresql]\nconninfo = dbname=x\n" MODEL, err);
    need_conf(c, err);
    assert_int_equal(c->pg_split_min, 50);
    oc_conf_free(c);
    c = load(MC "[postgresql]\nconninfo = dbname=x\nload_split_min = 0\n" MODEL, err);
    need_conf(c, err);
    assert_int_equal(c->pg_split_min, 0);
    oc_conf_free(c);
    expect_error(MC "[postgresql]\nconninfo = dbname=x\nload_split_min = 100001\n" MODEL,
                 "<string>:5: load_split_min: '100001' is out of range (0..100000)");
    expect_error(MC "[postgresql]\nconninfo = dbname=x\nload_split_min = -1\n" MODEL,
                 "<string>:5: load_split_min: '-1' is not a whole number");
    expect_error(MC "[postgresql]\nconninfo = dbname=x\nload_split_min = 50 ids\n" MODEL,
                 "<string>:5: load_split_min: '50 ids' is not a whole number");
    expect_error(MC "[postgresql]\nconninfo = dbname=x\nload_split_min = "
                    "99999999999999999999\n" MODEL,
                 "<string>:5: load_split_min: '99999999999999999999' is out of range "
                 "(0..100000)");
    /* wal_batch_interval: 0 (each batch at once) up to 1s */
    c = load(MC "[postgresql]\nconninfo = dbname=x\n" MODEL, err);
    need_conf(c, err);
    assert_int_equal(c->wal_batch_interval_ms, 5);
    oc_conf_free(c);
    c = load(MC "[postgresql]\nconninfo = dbname=x\nwal_batch_interval = 0\n" MODEL, err);
    need_conf(c, err);
    assert_int_equal(c->wal_batch_interval_ms, 0);
    oc_conf_free(c);
    /* the WAL holder retries failed deletes through the outbox consumer */
    expect_error(
        MC "[postgresql]\nconninfo = dbname=x\nwal = on\ninvalidation_poll = 0\n" MODEL,
        "<string>:3: wal = on needs invalidation_poll above 0: the WAL holder "
        "retries the memcached deletes that failed through the outbox");
    expect_error(MC "[postgresql]\nconninfo = dbname=x\nwal_batch_interval = 2s\n" MODEL,
                 "<string>:5: wal_batch_interval: '2s' is out of range (0..1s)");
    expect_error(MC
                 "[postgresql]\nconninfo = dbname=x\nwal_batch_interval = -5ms\n" MODEL,
                 "<string>:5: wal_batch_interval: '-5ms' is not a duration "
                 "(e.g. 250ms, 30s, 5m, 2h, 1d)");
    expect_error(MC
                 "[postgresql]\nconninfo = dbname=x\nwal_batch_interval = 5 ms\n" MODEL,
                 "<string>:5: wal_batch_interval: '5 ms' is not a duration "
                 "(e.g. 250ms, 30s, 5m, 2h, 1d)");
    /* wal_feed_keys: on by default; off warns when it does nothing (no
     * wal) or drops near-caches whole (a model with near_ttl) */
    c = load(MC "[postgresql]\nconninfo = dbname=x\nwal = on\n" MODEL, err);
    need_conf(c, err);
    assert_int_equal(c->wal_feed_keys, 1);
    assert_int_equal(c->nwarnings, 0);
    oc_conf_free(c);
    c = load(MC
             "[postgresql]\nconninfo = dbname=x\nwal = on\nwal_feed_keys = off\n" MODEL,
             err);
    need_conf(c, err);
    assert_int_equal(c->wal_feed_keys, 0);
    assert_int_equal(c->nwarnings, 0);
    oc_conf_free(c);
    expect_warning(MC "[postgresql]\nconninfo = dbname=x\nwal_feed_keys = off\n" MODEL,
                   "<string>:5: wal_feed_keys = off does nothing with "
                   "wal = off: only the WAL holder appends to the feed");
    expect_warning(
        "[objcached]\nnear_cache_size = 8m\n" MC
        "[postgresql]\nconninfo = dbname=x\nwal = on\nwal_feed_keys = off\n" MODEL
        "near_ttl = 2s\n",
        "<string>:8: wal_feed_keys = off with near-caches (model User has "
        "near_ttl): while this sidecar holds the slot, every sidecar's "
        "near-cache drops a written model whole at each wal_heartbeat "
        "instead of its written keys");
    expect_error(MC "[postgresql]\nconninfo = dbname=x\nwal_feed_keys = some\n" MODEL,
                 "<string>:5: wal_feed_keys: 'some' is not one of on, off");
    /* feed_max_lag against the feed's heartbeat, with a near-cache only */
    static const struct {
        const char *pg;
        int near;
        const char *warning;
    } lag[] = {
        {"feed_max_lag = 1s\ninvalidation_poll = 1s\n", 1,
         "feed_max_lag (1000 ms) is not above the feed's heartbeat (invalidation_poll, "
         "1000 ms) plus feed_poll (250 ms): the near-cache would go off and on between "
         "them"},
        {"feed_max_lag = 700ms\nwal = on\nwal_heartbeat = 250ms\n", 1,
         "feed_max_lag (700 ms) is not above the feed's heartbeat (twice wal_heartbeat, "
         "500 ms) plus feed_poll (250 ms): the near-cache would go off and on between "
         "them"},
        {"feed_max_lag = 2s\nfeed_poll = 5s\n", 1,
         "feed_max_lag (2000 ms) is not above the feed's heartbeat (invalidation_poll, "
         "1000 ms) plus feed_poll (5000 ms): the near-cache would go off and on between "
         "them"},
        {"feed_max_lag = 1s\ninvalidation_poll = 1s\n", 0, NULL}, /* no near-cache */
        {"feed_max_lag = 1s\ninvalidation_poll = 0\n", 1, NULL},  /* others beat */
        {"feed_max_lag = 1300ms\ninvalidation_poll = 1s\n", 1, NULL},
        {"wal = on\n", 1, NULL}, /* the defaults: 2 s against 500 + 250 ms */
        {"feed_max_lag = 1s\nfeed_poll = 0\n", 1, NULL}, /* no feed: near-cache off */
    };
    for (size_t i = 0; i < sizeof(lag) / sizeof(lag[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text),
                 "%s" MC "[postgresql]\nconninfo = dbname=x\n%s" MODEL "%s",
                 lag[i].near ? "[objcached]\nnear_cache_size = 8m\n" : "", lag[i].pg,
                 lag[i].near ? "near_ttl = 2s\n" : "");
        if (lag[i].warning == NULL) {
            c = load(text, err);
            need_conf(c, err);
            if (c->nwarnings != 0)
                fail_msg("case %zu: %s", i, c->warnings[0]);
            oc_conf_free(c);
        } else {
            /* feed_max_lag's line: the fifth, two later after [objcached] */
            char want[512];
            snprintf(want, sizeof(want), "<string>:%d: %s", 5 + 2 * lag[i].near,
                     lag[i].warning);
            expect_warning(text, want);
        }
    }
    /* feed_max_lag left at its default: said at [postgresql]'s line */
    expect_warning("[objcached]\nnear_cache_size = 8m\n" MC
                   "[postgresql]\nconninfo = dbname=x\ninvalidation_poll = 2s\n" MODEL
                   "near_ttl = 2s\n",
                   "<string>:5: feed_max_lag (2000 ms) is not above the feed's heartbeat "
                   "(invalidation_poll, 2000 ms) plus feed_poll (250 ms): the near-cache "
                   "would go off and on between them");
}

/* Failover: the defaults, a gutter, and what --check-config refuses. */
static void test_failover_keys(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load(MINIMAL, err);
    need_conf(c, err);
    assert_int_equal(c->mc_failure_limit, 3);
    assert_int_equal(c->mc_failover, 1);
    assert_int_equal(c->mc_failover_ttl_s, 10);
    assert_null(c->gutter);
    assert_int_equal(c->ngutter, 0);
    assert_int_equal(c->models[0].refresh_ahead_s, 0);
    oc_conf_free(c);

    c = load("[memcached]\nservers = a:1 b:1\nfailure_limit = 1\nfailover = off\n"
             "failover_ttl = 1h\ngutter = g:1, [::1]:2:3\n" PG
             "[model User]\ntable = users\nttl = 1m\nrefresh_ahead = 59s\n",
             err);
    need_conf(c, err);
    assert_int_equal(c->mc_failure_limit, 1);
    assert_int_equal(c->mc_failover, 0);
    assert_int_equal(c->mc_failover_ttl_s, 3600);
    assert_int_equal(c->ngutter, 2);
    assert_string_equal(c->gutter[0].host, "g");
    assert_string_equal(c->gutter[1].host, "::1");
    assert_int_equal(c->gutter[1].port, 2);
    assert_int_equal(c->gutter[1].weight, 3);
    assert_int_equal(c->models[0].refresh_ahead_s, 59);
    oc_conf_free(c);

    /* an empty gutter is no gutter (the rest of the pool takes the keys) */
    c = load("[memcached]\nservers = a:1\ngutter =\n" PG MODEL, err);
    need_conf(c, err);
    assert_null(c->gutter);
    assert_int_equal(c->ngutter, 0);
    oc_conf_free(c);

    /* what --check-config refuses */
    expect_error("[memcached]\nservers = h:1\nfailover_ttl = 0\n" PG MODEL,
                 "<string>:3: failover_ttl: '0' is out of range (1s..1h)");
    expect_error("[memcached]\nservers = h:1\nfailover_ttl = 1500ms\n" PG MODEL,
                 "<string>:3: failover_ttl: '1500ms' is not a whole number of seconds");
    expect_error("[memcached]\nservers = h:1\nfailover_ttl = 2h\n" PG MODEL,
                 "<string>:3: failover_ttl: '2h' is out of range (1s..1h)");
    expect_error("[memcached]\nservers = h:1\nfailure_limit = 0\n" PG MODEL,
                 "<string>:3: failure_limit: '0' is out of range (1..100)");
    expect_error("[memcached]\nservers = h:1\nfailover = maybe\n" PG MODEL,
                 "<string>:3: failover: 'maybe' is not one of on, off");
    expect_error("[memcached]\nservers = a:1 B:2\ngutter = c:3 b:2\n" PG MODEL,
                 "<string>:3: gutter: server 'b' port 2 is also in servers (a gutter "
                 "pool must be other memcached servers)");
    expect_error("[memcached]\ngutter = c:3 c:3\nservers = a:1\n" PG MODEL,
                 "<string>:2: gutter: server 'c' port 3 is listed twice");
    expect_error(
        "[memcached]\nservers = a:1\ngutter = c\n" PG MODEL,
        "<string>:3: gutter: 'c' is not host:port[:weight] (IPv6 as [::1]:11211)");
    expect_error(MC PG "[model User]\ntable = users\nttl = 30s\nrefresh_ahead = 30s\n",
                 "<string>:5: refresh_ahead (30s) must be shorter than ttl (30s) in "
                 "[model User]");
    expect_error(MC PG "[model User]\ntable = users\nrefresh_ahead = 1s\n",
                 "<string>:5: refresh_ahead (1s) would never refresh: memcached counts "
                 "whole seconds, so use 0 (off) or at least 2s in [model User]");
    expect_error(
        "[objcached]\nnear_cache_size = 1000k\n" MC PG MODEL,
        "<string>:2: near_cache_size (1024000 bytes) is below 1m: the near-cache's "
        "own tables take about 650k of it and would leave no room for objects; "
        "use 0 (off) or at least 1m");
    expect_error(MC PG "[model User]\ntable = users\nrefresh_ahead = 2h\n",
                 "<string>:5: refresh_ahead (7200s) must be shorter than ttl (3600s) in "
                 "[model User]");
}

/* ------------------------------------------------------------------ */
/* [model NAME]                                                        */

static void test_model_table(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const struct {
        const char *value, *schema, *table;
    } good[] = {
        {"users", "public", "users"},
        {"app.users", "app", "users"},
        {"_s1._t2", "_s1", "_t2"},
        {"Users", "public", "Users"},
        {"a23456789012345678901234567890123456789012345678901234567890123", "public",
         "a23456789012345678901234567890123456789012345678901234567890123"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char lines[256];
        snprintf(lines, sizeof(lines), "table = %s", good[i].value);
        oc_conf_t *c = load_model(lines, err);
        if (c == NULL)
            fail_now("'%s': %s", good[i].value, err);
        assert_string_equal(c->models[0].schema, good[i].schema);
        assert_string_equal(c->models[0].table, good[i].table);
        oc_conf_free(c);
    }
    model_bad("table = users; DROP TABLE x", 6,
              "table: 'users; DROP TABLE x' is not an identifier "
              "([A-Za-z_][A-Za-z0-9_]{0,62})");
    model_bad("table = a.b.c", 6, "table: 'b.c' is not an identifier");
    model_bad("table = .users", 6, "table: '' is not an identifier");
    model_bad("table = app.", 6, "table: '' is not an identifier");
    model_bad("table = \"users\"", 6, "table: '\"users\"' is not an identifier");
    model_bad("table = 1users", 6, "table: '1users' is not an identifier");
    model_bad("table = us-ers", 6, "is not an identifier");
    model_bad("table = app .users", 6, "table: 'app ' is not an identifier");
    model_bad("table =", 6, "table: '' is not an identifier");
    model_bad("table = "
              "a234567890123456789012345678901234567890123456789012345678901234",
              6, "is not an identifier");
    model_bad("table = "
              "a234567890123456789012345678901234567890123456789012345678901234"
              ".t",
              6, "is not an identifier");
    model_bad("table = users\nkey = id--", 7, "key: 'id--' is not an identifier");
    model_bad("table = users\nkey = ", 7, "key: '' is not an identifier");
    model_bad("table = users\nkey = a.b", 7, "key: 'a.b' is not an identifier");
}

static void test_model_columns(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load_model("table = t\ncolumns = id", err);
    need_conf(c, err);
    assert_int_equal(c->models[0].ncolumns, 1);
    assert_string_equal(c->models[0].columns[0], "id");
    oc_conf_free(c);

    c = load_model("table = t\ncolumns =a,\tB ,  _c9 ,Id", err);
    need_conf(c, err);
    assert_int_equal(c->models[0].ncolumns, 4);
    assert_string_equal(c->models[0].columns[1], "B");
    assert_string_equal(c->models[0].columns[2], "_c9");
    assert_string_equal(c->models[0].columns[3], "Id"); /* "id" differs */
    oc_conf_free(c);

    model_bad("table = t\ncolumns = a, \"b\"", 7,
              "columns: '\"b\"' is not an identifier");
    model_bad("table = t\ncolumns =", 7,
              "columns: must not be empty (leave it out for the whole row)");
    model_bad("table = t\ncolumns = a,,b", 7, "columns: empty column name");
    model_bad("table = t\ncolumns = a,", 7, "columns: empty column name");
    model_bad("table = t\ncolumns = ,a", 7, "columns: empty column name");
    model_bad("table = t\ncolumns = a b", 7, "columns: 'a b' is not an");
    model_bad("table = t\ncolumns = a, b, a", 7, "columns: column 'a' is listed twice");
    model_bad("table = t\ncolumns = a, (select 1)", 7,
              "columns: '(select 1)' is not an identifier");
    model_bad("table = t\ncolumns = a.b", 7, "'a.b' is not an identifier");

    /* 256 columns are allowed, 257 are not. */
    static char lines[257 * 8 + 64];
    size_t o = (size_t)snprintf(lines, sizeof(lines), "table = t\ncolumns = ");
    for (int i = 0; i < 257; i++)
        o += (size_t)snprintf(lines + o, sizeof(lines) - o, "%sc%d", i > 0 ? "," : "", i);
    model_bad(lines, 7, "columns: more than 256 columns");
    *strrchr(lines, ',') = '\0';
    c = load_model(lines, err);
    need_conf(c, err);
    assert_int_equal(c->models[0].ncolumns, 256);
    assert_string_equal(c->models[0].columns[255], "c255");
    oc_conf_free(c);
}

static void test_model_key_type_and_ttl(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const struct {
        const char *lines;
        oc_key_type_t type;
        uint32_t ttl, missing;
    } good[] = {
        {"key_type = bigint", OC_KEY_BIGINT, 3600, 30},
        {"key_type = integer\nttl = 1s", OC_KEY_INTEGER, 1, 30},
        {"key_type = uuid\nttl = 30d\nmissing_ttl = 30d", OC_KEY_UUID, 2592000, 2592000},
        {"key_type = text\nmissing_ttl = 1000ms", OC_KEY_TEXT, 3600, 1},
        {"ttl = 90\nmissing_ttl = 2m", OC_KEY_BIGINT, 90, 120},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char lines[256];
        snprintf(lines, sizeof(lines), "table = t\n%s", good[i].lines);
        oc_conf_t *c = load_model(lines, err);
        if (c == NULL)
            fail_now("'%s': %s", good[i].lines, err);
        assert_int_equal(c->models[0].key_type, good[i].type);
        assert_int_equal(c->models[0].ttl_s, good[i].ttl);
        assert_int_equal(c->models[0].missing_ttl_s, good[i].missing);
        oc_conf_free(c);
    }
    model_bad("table = t\nkey_type = int", 7,
              "key_type: 'int' is not one of bigint, integer, uuid, text");
    model_bad("table = t\nkey_type = BIGINT", 7, "is not one of");
    model_bad("table = t\nttl = 0", 7, "ttl: '0' is out of range (1s..30d)");
    model_bad("table = t\nttl = 31d", 7, "ttl: '31d' is out of range (1s..30d)");
    model_bad("table = t\nttl = 1500ms", 7,
              "ttl: '1500ms' is not a whole number of seconds");
    model_bad("table = t\nttl = 500ms", 7,
              "ttl: '500ms' is not a whole number of seconds");
    model_bad("table = t\nttl = 1y", 7, "ttl: '1y' is not a duration");
    model_bad("table = t\nmissing_ttl = 2592001", 7,
              "missing_ttl: '2592001' is out of range (1s..30d)");
    model_bad("table = t\nmissing_ttl = 99999999999999999999", 7,
              "missing_ttl: '99999999999999999999' is out of range");
}

static void test_model_names(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load(MC PG "[model _a9]\ntable = t\n"
                              "[model "
                              "A234567890123456789012345678901234567890123456"
                              "789012345678901234]\ntable = t\n",
                        err);
    need_conf(c, err);
    assert_int_equal(c->nmodels, 2);
    assert_int_equal(strlen(c->models[1].name), 64);
    oc_conf_free(c);

    expect_error(MC PG "[model 1abc]\ntable = t\n",
                 "<string>:5: bad model name '1abc' (want [model NAME], NAME "
                 "[A-Za-z_][A-Za-z0-9_]{0,63})");
    expect_error_at(MC PG "[model  User]\ntable = t\n", 5, "bad model name ' User'");
    expect_error_at(MC PG "[model User ]\ntable = t\n", 5, "bad model name 'User '");
    expect_error_at(MC PG "[model]\ntable = t\n", 5, "bad model name ''");
    expect_error_at(MC PG "[model ]\ntable = t\n", 5, "bad model name ''");
    expect_error_at(MC PG "[model Us:er]\ntable = t\n", 5, "bad model name 'Us:er'");
    expect_error_at(MC PG "[model User Post]\ntable = t\n", 5,
                    "bad model name 'User Post'");
    expect_error_at(MC PG "[model "
                          "A234567890123456789012345678901234567890123456"
                          "7890123456789012345]\ntable = t\n",
                    5, "bad model name");
    expect_error_at(MC PG "[modelUser]\ntable = t\n", 5, "unknown section '[modelUser]'");
}

/* ------------------------------------------------------------------ */
/* File structure                                                      */

static void test_structure_errors(void **state)
{
    (void)state;
    expect_error("[objcached]\nmax_keys = 10\n[cache]\nx = 1\n" MINIMAL,
                 "<string>:3: unknown section '[cache]' (want [objcached], "
                 "[memcached], [postgresql] or [model NAME])");
    expect_error(MINIMAL "ttll = 1h\n", "<string>:7: unknown key 'ttll' in [model User]");
    expect_error("[objcached]\nMax_keys = 1\n" MINIMAL,
                 "<string>:2: unknown key 'Max_keys' in [objcached]");
    expect_error(MC "servers = h:2\n" PG MODEL,
                 "<string>:3: duplicate key 'servers' in [memcached] (first "
                 "on line 2)");
    expect_error(MINIMAL "ttl = 1h\nttl=2h\n",
                 "<string>:8: duplicate key 'ttl' in [model User] (first on "
                 "line 7)");
    expect_error(MINIMAL "[model Post]\ntable = posts\n[model User]\n",
                 "<string>:9: model 'User' is defined twice (first on line 5)");
    expect_error(MINIMAL "[memcached]\nworkers = 3\n",
                 "<string>:7: section [memcached] is given twice (first on "
                 "line 1)");
    expect_error("max_keys = 1\n" MINIMAL,
                 "<string>:1: key 'max_keys' is outside any section");
    expect_error(MC "servers\n" PG MODEL,
                 "<string>:3: expected 'key = value', '[section]' or a "
                 "comment");
    expect_error(MC "= 5\n" PG MODEL, "<string>:3: no key before '='");
    expect_error("[objcached\n" MINIMAL,
                 "<string>:1: section header '[objcached' does not end with "
                 "']'");
    expect_error("[objcached]x\n" MINIMAL,
                 "<string>:1: section header '[objcached]x' does not end "
                 "with ']'");
    expect_error_at("[]\n" MINIMAL, 1, "unknown section '[]'");
    expect_error_at("[ objcached ]\n" MINIMAL, 1, "unknown section '[ objcached ]'");
    expect_error_at("[OBJCACHED]\n" MINIMAL, 1, "unknown section '[OBJCACHED]'");
    /* Keys belong to the section they are in. */
    expect_error_at(MC "conninfo = dbname=x\n" PG MODEL, 3,
                    "unknown key 'conninfo' in [memcached]");
    expect_error_at(MINIMAL "servers = h:1\n", 7,
                    "unknown key 'servers' in [model User]");
}

static void test_missing(void **state)
{
    (void)state;
    expect_error(PG MODEL, "<string>: missing required key 'servers' in [memcached]");
    expect_error("[memcached]\nworkers = 2\n" PG MODEL,
                 "<string>: missing required key 'servers' in [memcached]");
    expect_error(MC MODEL, "<string>: missing required key 'conninfo' in [postgresql]");
    expect_error(MC PG, "<string>: no [model NAME] section; at least one model is "
                        "required");
    expect_error(MC PG "[model User]\nkey = uid\n",
                 "<string>:5: missing required key 'table' in [model User]");
    expect_error(MINIMAL "\n[model Post]\n; no table\n",
                 "<string>:8: missing required key 'table' in [model Post]");
    expect_error("", "<string>: missing required key 'servers' in [memcached]");
    expect_error("\xEF\xBB\xBF",
                 "<string>: missing required key 'servers' in [memcached]");
    expect_error("\n\n; only comments\n   \n",
                 "<string>: missing required key 'servers' in [memcached]");

    char err[OC_ERRLEN];
    assert_null(oc_conf_load_string(NULL, 0, err));
    assert_string_equal(err, "<string>: missing required key 'servers' in "
                             "[memcached]");
    assert_null(oc_conf_load_string(NULL, 5, err));
    assert_null(oc_conf_load_string("", 0, NULL)); /* err may be NULL */
}

static void test_comments_and_whitespace(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load("; top\n# top\n"
                        "  [memcached]   ; the pool\n"
                        "\tservers\t=\th:1 h:2 # two\n"
                        "workers=3;not a comment\n"
                        "[postgresql] # db\n"
                        "  conninfo =   host=db password=p#ss;word   \n"
                        "   ;  indented comment\n"
                        "   #  indented comment\n"
                        "[model User]\n"
                        "table = users\n",
                        err);
    assert_null(c);
    assert_string_equal(err, "<string>:5: workers: '3;not a comment' is not "
                             "a whole number");
    c = load("; top\n# top\n"
             "  [memcached]   ; the pool\n"
             "\tservers\t=\th:1 h:2 # two\n"
             "workers=3\t;tab before the comment\n"
             "[postgresql] # db\n"
             "  conninfo =   host=db password=p#ss;word   \n"
             "   ;  indented comment\n"
             "[model User]\n"
             "table = users\n",
             err);
    need_conf(c, err);
    assert_int_equal(c->nservers, 2);
    assert_int_equal(c->mc_workers, 3);
    assert_string_equal(c->conninfo, "host=db password=p#ss;word");
    oc_conf_free(c);
}

static void test_line_endings(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const char *const texts[] = {
        "[memcached]\r\nservers = h:1\r\n[postgresql]\r\nconninfo = dbname=x\r\n"
        "[model User]\r\ntable = users\r\n",
        "[memcached]\nservers = h:1\n[postgresql]\nconninfo = dbname=x\n"
        "[model User]\ntable = users", /* no newline at the end */
        "[memcached]\r\nservers = h:1\r\n[postgresql]\r\nconninfo = dbname=x\r\n"
        "[model User]\r\ntable = users",
        "\xEF\xBB\xBF[memcached]\nservers = h:1\n[postgresql]\nconninfo = dbname=x\n"
        "[model User]\ntable = users\n",
        "\xEF\xBB\xBF[memcached]\r\nservers = h:1\r\n[postgresql]\r\n"
        "conninfo = dbname=x\r\n[model User]\r\ntable = users\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        oc_conf_t *c = load(texts[i], err);
        if (c == NULL)
            fail_now("text %zu: %s", i, err);
        assert_string_equal(c->servers[0].host, "h");
        assert_string_equal(c->conninfo, "dbname=x");
        assert_string_equal(c->models[0].table, "users");
        assert_int_equal(c->models[0].line, 5);
        oc_conf_free(c);
    }
    /* Line numbers still count right with CRLF and a BOM. */
    expect_error("\xEF\xBB\xBF[memcached]\r\nservers = h:1\r\nbogus = 1\r\n",
                 "<string>:3: unknown key 'bogus' in [memcached]");
    expect_error(MINIMAL "ttl = 0", /* the last line, unterminated */
                 "<string>:7: ttl: '0' is out of range (1s..30d)");
    /* A BOM anywhere but the start is just bytes. */
    expect_error_at(MC "\xEF\xBB\xBFworkers = 2\n" PG MODEL, 3,
                    "unknown key '\\xef\\xbb\\xbfworkers' in [memcached]");
    /* A lone CR is not a line break. */
    expect_error_at(MC "workers = 2\rworkers = 3\n" PG MODEL, 3,
                    "workers: '2\\x0dworkers = 3' is not a whole number");
}

static void test_hostile_bytes(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const char with_nul[] = MC "workers = 2\0\n" PG MODEL;
    assert_null(oc_conf_load_string(with_nul, sizeof(with_nul) - 1, err));
    assert_string_equal(err, "<string>:3: NUL byte in the file");
    static const char nul_first[] = "\0" MINIMAL;
    assert_null(oc_conf_load_string(nul_first, sizeof(nul_first) - 1, err));
    assert_string_equal(err, "<string>:1: NUL byte in the file");

    /* Lines of 4096 bytes are fine (a comment), 4097 or 5000 are not. */
    static char text[8192];
    for (size_t len = 4095; len <= 4097; len++) {
        build(text, sizeof(text), MC PG ";", 'x', len - 1, "\r\n" MODEL);
        oc_conf_t *c = load(text, err);
        if (len <= 4096) {
            if (c == NULL)
                fail_now("%zu: %s", len, err);
            oc_conf_free(c);
        } else {
            assert_null(c);
            assert_string_equal(err, "<string>:5: line is longer than 4096 bytes");
        }
    }
    build(text, sizeof(text), MC "workers = ", '9', 5000, "\n" PG MODEL);
    expect_error(text, "<string>:3: line is longer than 4096 bytes");

    /* Long values are cut to 64 bytes in messages. */
    build(text, sizeof(text), MC "workers = ", '7', 3000, "\n" PG MODEL);
    expect_error(text, "<string>:3: workers: '"
                       "77777777777777777777777777777777"
                       "77777777777777777777777777777777"
                       "...' is out of range (1..64)");
    build(text, sizeof(text), MC, 'k', 1000, " = 1\n" PG MODEL);
    expect_error(text, "<string>:3: unknown key '"
                       "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
                       "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
                       "...' in [memcached]");
    /* Control characters are shown escaped, never raw. */
    expect_error(MC "workers = \x1b[2J\n" PG MODEL,
                 "<string>:3: workers: '\\x1b[2J' is not a whole number");
    expect_error(MC "\x1b[31m = 1\n" PG MODEL,
                 "<string>:3: unknown key '\\x1b[31m' in [memcached]");
}

/* Whatever is wrong with the [postgresql] section, its value is never
 * printed: it may hold a password. */
/* Loads from a standby are served stale after writes: conninfo and
 * wal_conninfo must reach the primary; feed_conninfo may be a replica. */
static void test_conninfo_refuses_a_standby(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const char *const bad[] = {"any", "standby", "prefer-standby", "read-only"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[1024], want[128];
        snprintf(text, sizeof(text),
                 MC "[postgresql]\nconninfo = host=a,b target_session_attrs=%s\n" MODEL,
                 bad[i]);
        snprintf(want, sizeof(want), "target_session_attrs=%s can reach a hot standby",
                 bad[i]);
        expect_error_at(text, 4, want);
        expect_error_at(text, 4, "served stale after writes");
        snprintf(text, sizeof(text),
                 MC "[postgresql]\nconninfo = dbname=x\nwal_conninfo = "
                    "postgresql://a,b/db?target_session_attrs=%s\n" MODEL,
                 bad[i]);
        expect_error_at(text, 5, want);
        snprintf(text, sizeof(text),
                 MC "[postgresql]\nconninfo = dbname=x\nfeed_conninfo = "
                    "host=r target_session_attrs=%s\n" MODEL,
                 bad[i]);
        oc_conf_t *c = load(text, err);
        need_conf(c, err);
        oc_conf_free(c);
    }
    static const char *const good[] = {"primary", "read-write"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text),
                 MC "[postgresql]\nconninfo = host=a,b target_session_attrs=%s\n" MODEL,
                 good[i]);
        oc_conf_t *c = load(text, err);
        need_conf(c, err);
        oc_conf_free(c);
    }
}

/* Values libpq refuses only when it connects: the daemon started and
 * failed every load, --check-config said the database was not checked. */
static void test_conninfo_values_libpq_refuses(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const struct {
        const char *opts, *want;
    } bad[] = {
        {"sslmode=requird",
         "sslmode=requird is not a value libpq takes (disable,allow,prefer,require,"},
        {"gssencmode=yes", "gssencmode=yes is not a value libpq takes"},
        {"channel_binding=Require", "channel_binding=Require is not a value libpq takes"},
        {"target_session_attrs=ANY",
         "target_session_attrs=ANY is not a value libpq takes"},
        {"port=0", "port=0: each port must be 1..65535"},
        {"port=65536", "port=65536: each port must be 1..65535"},
        {"host=a,b port=5432,x", "port=5432,x: each port must be 1..65535"},
        {"port=' '", "port= : each port must be 1..65535"},
        {"port=-5", "port=-5: each port must be 1..65535"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), MC "[postgresql]\nconninfo = %s\n" MODEL,
                 bad[i].opts);
        expect_error_at(text, 4, bad[i].want);
        snprintf(text, sizeof(text),
                 MC "[postgresql]\nconninfo = dbname=x\nfeed_conninfo = %s\n" MODEL,
                 bad[i].opts);
        expect_error_at(text, 5, bad[i].want);
    }
    expect_error_at(MC "[postgresql]\nconninfo = postgresql://h/db?sslmode=on\n" MODEL, 4,
                    "sslmode=on is not a value libpq takes");
    static const char *const good[] = {
        "sslmode=verify-full",
        "gssencmode=disable",
        "channel_binding=prefer",
        "host=a,b port=5432,",
        "port=' 5432 '",
        "host=a,b port=,6432",
        "port=+5432",
        "port=65535",
        "target_session_attrs=read-write",
        "postgresql://h:5433/db?sslmode=require",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), MC "[postgresql]\nconninfo = %s\n" MODEL, good[i]);
        oc_conf_t *c = load(text, err);
        need_conf(c, err);
        oc_conf_free(c);
    }
}

static void test_conninfo_never_echoed(void **state)
{
    (void)state;
    static const char *const texts[] = {
        MC "[postgresql]\nconninfo = host=db password=SECRET\n"
           "conninfo = password=SECRET\n" MODEL,
        MC "[postgresql]\nconninfo = password=SECRET\nconnections = 0\n" MODEL,
        MC "[postgresql]\nconninfo = password=SECRET\n",
        MC "[postgresql]\nconninfo = password=SECRET\n[model X]\n",
        MC "[postgresql]\nconninfo = password=SECRET\n[objcached]\nlisten =\n" MODEL,
        MC "[postgresql]\nconnInfo = password=SECRET\n" MODEL,
        MC "[postgresql]\nhost=db password=SECRET\n" MODEL,
        MC "[postgresql]\npassword = SECRET\n" MODEL,
        MC "[postgresql]\nconninfo password=SECRET\n" MODEL,
        "conninfo = password=SECRET\n" MINIMAL,
        MC "conninfo = password=SECRET\n" PG MODEL,
        /* libpq cannot parse these, and its message quotes them */
        MC "[postgresql]\nconninfo = postgresql://u:SECRET@[::1/app\n" MODEL,
        MC "[postgresql]\nconninfo = postgresql://u:SECRET%zz@h/app\n" MODEL,
        MC "[postgresql]\nconninfo = dbname=app\n"
           "feed_conninfo = postgresql://u:SECRET@[::1/app\n" MODEL,
        MC "[postgresql]\nconninfo = dbname=app\n"
           "wal_conninfo = postgresql://u:SECRET@[::1/app\n" MODEL,
        MC "[postgresql]\nconninfo = password=SECRET \0\n" MODEL,
    };
    char err[OC_ERRLEN];
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        size_t len = strlen(texts[i]);
        if (i == sizeof(texts) / sizeof(texts[0]) - 1)
            len += 2 + strlen(MODEL);
        oc_conf_t *c = oc_conf_load_string(texts[i], len, err);
        if (c != NULL)
            fail_now("text %zu loaded", i);
        if (strstr(err, "SECRET") != NULL)
            fail_now("text %zu leaked: %s", i, err);
    }
    expect_error(MC "[postgresql]\nconninfo = password=SECRET\n"
                    "conninfo = password=SECRET\n" MODEL,
                 "<string>:5: duplicate key 'conninfo' in [postgresql] (first "
                 "on line 4)");
    expect_error(MC "[postgresql]\nconninfo = postgresql://u:SECRET@[::1/app\n" MODEL,
                 "<string>:4: conninfo: is not a libpq connection string (key=value "
                 "pairs or a postgresql:// URI); not shown, as it may hold a password");
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        fail_now("cannot create %s", path);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void test_load_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_conf.XXXXXX", path[64], err[OC_ERRLEN], want[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/oc.ini", dir);

    write_file(path, MINIMAL, strlen(MINIMAL));
    oc_conf_t *c = oc_conf_load_file(path, err);
    need_conf(c, err);
    assert_string_equal(c->path, path);
    oc_conf_free(c);

    write_file(path, MINIMAL "bogus = 1\n", strlen(MINIMAL) + 10);
    assert_null(oc_conf_load_file(path, err));
    snprintf(want, sizeof(want), "%s:7: unknown key 'bogus' in [model User]", path);
    assert_string_equal(err, want);

    /* 1 MiB (here padded with blank lines) is the most a file may be. */
    size_t big = (size_t)1024 * 1024;
    char *text = malloc(big + 2);
    if (text == NULL)
        fail_now("out of memory");
    build(text, big + 2, MINIMAL, '\n', big + 1 - strlen(MINIMAL), "");
    write_file(path, text, big);
    c = oc_conf_load_file(path, err);
    need_conf(c, err);
    oc_conf_free(c);
    write_file(path, text, big + 1);
    assert_null(oc_conf_load_file(path, err));
    snprintf(want, sizeof(want), "%s: file too large (over 1048576 bytes)", path);
    assert_string_equal(err, want);
    /* The same limit holds for a string. */
    assert_null(oc_conf_load_string(text, big + 1, err));
    assert_string_equal(err, "<string>: file too large (over 1048576 bytes)");
    free(text);

    assert_int_equal(unlink(path), 0);
    assert_null(oc_conf_load_file(path, err));
    snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, want);
    assert_null(oc_conf_load_file(dir, err)); /* a directory */
    assert_non_null(strstr(err, ": cannot read: "));
    assert_null(oc_conf_load_file(NULL, err));
    assert_int_equal(rmdir(dir), 0);
}

/* Mutated copies of a valid file must load or fail cleanly (ASan and
 * valgrind watch), and a failure must always say something. */
static void test_mutations(void **state)
{
    (void)state;
    static const char alphabet[] = "[]=;# \t\r\n:,.\"'\\0123456789abkmsdhx\xff";
    char err[OC_ERRLEN];
    size_t len = sizeof(full_file) - 1;
    char *buf = malloc(len + 8);
    if (buf == NULL)
        fail_now("out of memory");
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (int round = 0; round < 3000; round++) {
        memcpy(buf, full_file, len);
        size_t n = len;
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            size_t at = (size_t)(seed >> 33) % n;
            char ch = alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
            if ((seed >> 10) % 3 == 0)
                n = at + 1; /* truncate */
            buf[at] = ch;
        }
        memset(err, 0, sizeof(err));
        oc_conf_t *c = oc_conf_load_string(buf, n, err);
        if (c == NULL)
            assert_true(strlen(err) > 0);
        else
            assert_true(c->nmodels > 0 && c->nservers > 0);
        oc_conf_free(c);
    }
    free(buf);
    oc_conf_free(NULL);
}

/* Reload: which changes need a restart, from the key table's column. */
static void test_restart_keys(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    static const char base[] = "[objcached]\nlisten = 127.0.0.1:1\n" MC PG MODEL;
    oc_conf_t *a = load(base, err), *b = load(base, err);
    assert_non_null(a);
    assert_null(oc_conf_restart_key(a, b)); /* the same file */
    oc_conf_free(b);
    struct {
        const char *text, *key;
    } cases[] = {
        {"[objcached]\nlisten = 127.0.0.1:2\n" MC PG MODEL, "listen"},
        {"[objcached]\nlisten = 127.0.0.1:1\nunix_socket = /tmp/x\n" MC PG MODEL,
         "unix_socket"},
        {"[objcached]\nlisten = 127.0.0.1:1\nload_timeout = 6s\n" MC PG MODEL,
         "load_timeout"},
        {"[objcached]\nlisten = 127.0.0.1:1\nuser = nobody\n" MC PG MODEL, "user"},
        {"[objcached]\nlisten = 127.0.0.1:1\n" MC
         "[postgresql]\nconninfo = dbname=other\n" MODEL,
         "conninfo"},
        {"[objcached]\nlisten = 127.0.0.1:1\n" MC
         "[postgresql]\nconninfo = dbname=app\nconnections = 3\n" MODEL,
         "connections"},
        /* reloadable: no restart */
        {"[objcached]\nlisten = 127.0.0.1:1\nmax_keys = 9\nlog_level = debug\n"
         "key_prefix = x:\n" MC PG MODEL,
         NULL},
        {"[objcached]\nlisten = 127.0.0.1:1\n[memcached]\nservers = h:1 h:2\n"
         "io_timeout = 1s\n" PG "[model Other]\ntable = o\n",
         NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        b = load(cases[i].text, err);
        assert_non_null(b);
        const char *k = oc_conf_restart_key(a, b);
        if (cases[i].key == NULL)
            assert_null(k);
        else
            assert_string_equal(k, cases[i].key);
        oc_conf_free(b);
    }
    oc_conf_free(a);
}

/* A deprecated key loads, with a warning naming its line. */
static void test_deprecated_warns(void **state)
{
    (void)state;
    char err[OC_ERRLEN];
    oc_conf_t *c = load(MC PG MODEL, err);
    assert_int_equal(c->nwarnings, 0);
    oc_conf_free(c);
    c = load("[memcached]\nservers = h:1\nworkers = 4\n" PG MODEL, err);
    assert_non_null(c);
    assert_int_equal(c->nwarnings, 1);
    assert_string_equal(c->warnings[0],
                        "<string>:3: workers in [memcached] is deprecated: "
                        "ignored since 0.2: memcached I/O runs on the event "
                        "loop");
    oc_conf_free(c);
}

/* --help-config: every key once, with its column. */
static void test_describe(void **state)
{
    (void)state;
    char buf[16384] = "";
    FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
    oc_conf_describe(f);
    fclose(f);
    assert_non_null(strstr(buf, "objcached\tlisten\t127.0.0.1:11311\trestart\n"));
    assert_non_null(strstr(buf, "objcached\tmax_keys\t1024\treload\n"));
    assert_non_null(strstr(buf, "memcached\tservers\t(required)\treload\n"));
    assert_non_null(strstr(buf, "memcached\tworkers\t2\tdeprecated\n"));
    assert_non_null(strstr(buf, "postgresql\tconninfo\t(required)\trestart\n"));
    assert_non_null(strstr(buf, "model NAME\tversion_column\t(none)\treload\n"));
    int lines = 0;
    for (const char *p = buf; *p; p++)
        lines += *p == '\n';
    assert_true(lines >= 35);
}

/* A trailing comma in sample_windows was taken ("1s, 10s," as two
 * windows) while ",1s", "1s,,10s" and a trailing comma in columns are
 * refused. */
static void test_windows_trailing_comma(void **state)
{
    (void)state;
    expect_error_at("[objcached]\nsample_windows = 1s, 10s,\n" MINIMAL, 2,
                    "sample_windows: '1s, 10s,' is not a list of durations");
    expect_error_at("[objcached]\nsample_windows = 1s,\n" MINIMAL, 2, "sample_windows:");
    expect_error_at("[objcached]\nsample_windows =\n" MINIMAL, 2,
                    "sample_windows: at least one window");
    char err[OC_ERRLEN];
    oc_conf_t *c = load("[objcached]\nsample_windows = 1s,2s , 3s\n" MINIMAL, err);
    need_conf(c, err);
    assert_int_equal(c->sample_windows.n, 3);
    assert_int_equal(c->sample_windows.ms[2], 3000);
    oc_conf_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_windows_trailing_comma),
        cmocka_unit_test(test_restart_keys),
        cmocka_unit_test(test_deprecated_warns),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_push_check),
        cmocka_unit_test(test_key_type_name),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_numbers_bad),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_listeners),
        cmocka_unit_test(test_metrics_listen_not_on_listen),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_servers),
        cmocka_unit_test(test_servers_bad),
        cmocka_unit_test(test_memcached_postgresql_keys),
        cmocka_unit_test(test_failover_keys),
        cmocka_unit_test(test_model_table),
        cmocka_unit_test(test_model_columns),
        cmocka_unit_test(test_model_key_type_and_ttl),
        cmocka_unit_test(test_model_names),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_comments_and_whitespace),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_hostile_bytes),
        cmocka_unit_test(test_conninfo_values_libpq_refuses),
        cmocka_unit_test(test_conninfo_never_echoed),
        cmocka_unit_test(test_conninfo_refuses_a_standby),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "oc_verify.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "oc_entry.h"
#include "oc_key.h"
#include "oc_place.h"
#include "oc_smp.h"
#include "oc_sql.h"

#define RECHECK_ROUNDS 3
#define EXAMPLES       5
#define MG_CHUNK       100 /* meta gets written before their replies are read */

oc_status_t oc_verify_parse_sample(const char *s, uint32_t *out, char *err)
{
    if (s == NULL || *s == '\0')
        return oc_fail(err, OC_EINVAL, "--sample needs a number (1..%d)",
                       OC_VERIFY_SAMPLE_MAX);
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return oc_fail(err, OC_EINVAL, "--sample takes a whole number (1..%d)",
                           OC_VERIFY_SAMPLE_MAX);
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > OC_VERIFY_SAMPLE_MAX)
            return oc_fail(err, OC_ETOOBIG, "--sample is too large (at most %d)",
                           OC_VERIFY_SAMPLE_MAX);
    }
    if (v == 0)
        return oc_fail(err, OC_EINVAL, "--sample must be at least 1");
    *out = (uint32_t)v;
    return OC_OK;
}

/* One id checked. */
typedef struct vid {
    char *id;
    size_t idlen;
    char ckey[OC_KEY_MAX + 1];
    size_t cklen;
    int cacheable;
    oc_smp_cache_t cache;
    char *cval; /* owned copy of the cached value */
    oc_smp_row_t row;
    char *rjson; /* owned copy of the row */
    oc_smp_verdict_t verdict;
    oc_smp_evidence_t ev;
    int pending; /* to be read again */
} vid_t;

typedef struct verify {
    const oc_conf_t *conf;
    const oc_model_conf_t *m;
    FILE *out, *errout;
    PGconn *pg;
    char *local; /* pool_mode = transaction: oc_sql_local_reader, else NULL */
    uint64_t gen;
    int no_xmin;
    vid_t *ids;
    size_t n, cap;
    oc_place_t *place;
} verify_t;

/* ---- ids ------------------------------------------------------------------ */

static int add_id(verify_t *v, const char *id, size_t len)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->ids[i].idlen == len && memcmp(v->ids[i].id, id, len) == 0)
            return 0; /* picked twice (an absent id that exists after all) */
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        vid_t *g = realloc(v->ids, cap * sizeof(*g));
        if (g == NULL)
            return -1;
        v->ids = g;
        v->cap = cap;
    }
    vid_t *x = &v->ids[v->n];
    *x = (vid_t){.idlen = len};
    if ((x->id = malloc(len + 1)) == NULL)
        return -1;
    memcpy(x->id, id, len);
    x->id[len] = '\0';
    v->n++;
    return 0;
}

/* One statement. In transaction mode in a transaction of its own that
 * first applies the settings (a pooler may run each transaction in another
 * server session, which another client may have SET anything on): three
 * round trips, for a tool that reads in batches. */
static PGresult *exec_params(verify_t *v, const char *sql, int n,
                             const char *const *params)
{
    if (v->local == NULL)
        return PQexecParams(v->pg, sql, n, NULL, params, NULL, NULL, 0);
    PGresult *b = PQexec(v->pg, "BEGIN");
    if (PQresultStatus(b) != PGRES_COMMAND_OK)
        return b;
    PQclear(b);
    PGresult *r = PQexec(v->pg, v->local);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        PQclear(r);
        r = PQexecParams(v->pg, sql, n, NULL, params, NULL, NULL, 0);
    }
    int ok =
        PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
    PGresult *e = PQexec(v->pg, ok ? "COMMIT" : "ROLLBACK");
    if (ok && PQresultStatus(e) != PGRES_COMMAND_OK) {
        PQclear(r);
        return e;
    }
    PQclear(e);
    return r;
}

static PGresult *query(verify_t *v, const char *sql, int n, const char *const *params)
{
    PGresult *r = exec_params(v, sql, n, params);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(v->errout, "objcached --verify: PostgreSQL: %s", PQresultErrorMessage(r));
        PQclear(r);
        return NULL;
    }
    return r;
}

static int add_rows(verify_t *v, PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++)
        if (!PQgetisnull(r, i, 0) &&
            add_id(v, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0)) != 0)
            return -1;
    return 0;
}

/* Ids with a row: a sample of the table's pages for a big table, a random
 * order for a small one (or a view, which has no pages to sample). */
static int pick_present(verify_t *v, uint32_t want)
{
    const oc_model_conf_t *m = v->m;
    char rel[300], sql[1024], lim[16], pct[32];
    snprintf(rel, sizeof(rel), "\"%s\".\"%s\"", m->schema, m->table);
    const char *p1[] = {rel};
    PGresult *r = query(v,
                        "SELECT coalesce(c.reltuples, 0)::pg_catalog.float8, c.relkind "
                        "FROM pg_catalog.pg_class c "
                        "WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)",
                        1, p1);
    if (r == NULL)
        return -1;
    if (PQntuples(r) != 1) {
        fprintf(v->errout, "objcached --verify: no relation %s.%s in the database\n",
                m->schema, m->table);
        PQclear(r);
        return -1;
    }
    double tuples = atof(PQgetvalue(r, 0, 0));
    char kind = PQgetvalue(r, 0, 1)[0];
    PQclear(r);
    snprintf(lim, sizeof(lim), "%u", want);
    int sample = (kind == 'r' || kind == 'm' || kind == 'p') && tuples > 20.0 * want;
    if (sample) {
        snprintf(pct, sizeof(pct), "%.6f", 100.0 * 5.0 * want / tuples);
        snprintf(
            sql, sizeof(sql),
            "SELECT t.\"%s\"::pg_catalog.text FROM %s AS t "
            "TABLESAMPLE pg_catalog.bernoulli ($1) ORDER BY pg_catalog.random() LIMIT $2",
            m->key_column, rel);
    } else {
        snprintf(
            sql, sizeof(sql),
            "SELECT t.\"%s\"::pg_catalog.text FROM %s AS t ORDER BY pg_catalog.random() "
            "LIMIT $1",
            m->key_column, rel);
    }
    const char *p2[] = {sample ? pct : lim, lim};
    r = query(v, sql, sample ? 2 : 1, p2);
    if (r == NULL)
        return -1;
    int st = add_rows(v, r);
    PQclear(r);
    return st;
}

/* Ids without a row: for an integer key, gaps in its range (when the range
 * is at most a million wide), ids past its ends (above first, then below,
 * within the type's range) and, for a wider range, random ids inside it;
 * for uuid and text keys, random values. The range's arithmetic is numeric:
 * in int8, hi - lo and lo - g overflowed for keys spread over the type
 * ("bigint out of range", exit 3: a probe's finding). */
static int pick_absent(verify_t *v, uint32_t want)
{
    const oc_model_conf_t *m = v->m;
    char rel[300], sql[3072], lim[16];
    snprintf(rel, sizeof(rel), "\"%s\".\"%s\"", m->schema, m->table);
    snprintf(lim, sizeof(lim), "%u", want);
    const char *p[] = {lim};
    if (m->key_type == OC_KEY_UUID) {
        snprintf(sql, sizeof(sql),
                 "SELECT pg_catalog.gen_random_uuid()::pg_catalog.text "
                 "FROM pg_catalog.generate_series(1, $1::pg_catalog.int4)");
    } else if (m->key_type == OC_KEY_TEXT) {
        snprintf(sql, sizeof(sql),
                 "SELECT 'oc-verify-absent-' OPERATOR(pg_catalog.||) "
                 "pg_catalog.md5(pg_catalog.random()::pg_catalog.text) "
                 "FROM pg_catalog.generate_series(1, $1::pg_catalog.int4)");
    } else {
        const char *k = m->key_column;
        int i4 = m->key_type == OC_KEY_INTEGER;
        const char *top = i4 ? "2147483647" : "9223372036854775807";
        const char *bottom = i4 ? "-2147483648" : "-9223372036854775808";
        snprintf(
            sql, sizeof(sql),
            "WITH b AS (SELECT pg_catalog.min(t.\"%s\")::pg_catalog.numeric AS lo, "
            "pg_catalog.max(t.\"%s\")::pg_catalog.numeric AS hi FROM %s AS t), "
            "gaps AS (SELECT g FROM b, pg_catalog.generate_series(b.lo::pg_catalog.int8, "
            "b.hi::pg_catalog.int8) AS g "
            "WHERE (b.hi OPERATOR(pg_catalog.-) b.lo) OPERATOR(pg_catalog.<=) 1000000 "
            "AND NOT EXISTS (SELECT 1 FROM %s AS t WHERE t.\"%s\" OPERATOR(pg_catalog.=) "
            "g) ORDER BY pg_catalog.random() LIMIT $1::pg_catalog.int4), "
            "ends AS (SELECT x.g::pg_catalog.int8 AS g FROM (SELECT coalesce(b.hi, 0) "
            "OPERATOR(pg_catalog.+) s AS g, s AS o FROM b, pg_catalog.generate_series(1, "
            "$1::pg_catalog.int4) AS s UNION ALL SELECT coalesce(b.lo, 0) "
            "OPERATOR(pg_catalog.-) s, $1::pg_catalog.int4 OPERATOR(pg_catalog.+) s FROM "
            "b, "
            "pg_catalog.generate_series(1, $1::pg_catalog.int4) AS s) AS x "
            "WHERE x.g OPERATOR(pg_catalog.>=) %s AND x.g OPERATOR(pg_catalog.<=) %s "
            "ORDER BY x.o LIMIT greatest(1, $1::pg_catalog.int4 OPERATOR(pg_catalog.-) "
            "(SELECT pg_catalog.count(*) FROM gaps))), "
            "inside AS (SELECT DISTINCT x.g FROM (SELECT (b.lo OPERATOR(pg_catalog.+) "
            "pg_catalog.floor(pg_catalog.random()::pg_catalog.numeric "
            "OPERATOR(pg_catalog.*) "
            "(b.hi OPERATOR(pg_catalog.-) b.lo)))::pg_catalog.int8 AS g FROM b, "
            "pg_catalog.generate_series(1, 4 OPERATOR(pg_catalog.*) $1::pg_catalog.int4) "
            "WHERE (b.hi OPERATOR(pg_catalog.-) b.lo) OPERATOR(pg_catalog.>) 1000000) AS "
            "x "
            "WHERE NOT EXISTS (SELECT 1 FROM %s AS t WHERE t.\"%s\" "
            "OPERATOR(pg_catalog.=) "
            "x.g)) "
            "(SELECT g::pg_catalog.text FROM gaps) UNION ALL "
            "(SELECT g::pg_catalog.text FROM ends) UNION ALL "
            "(SELECT g::pg_catalog.text FROM inside LIMIT greatest(0, "
            "$1::pg_catalog.int4 "
            "OPERATOR(pg_catalog.-) (SELECT pg_catalog.count(*) FROM gaps) "
            "OPERATOR(pg_catalog.-) (SELECT pg_catalog.count(*) FROM ends)))",
            k, k, rel, rel, k, bottom, top, rel, k);
    }
    PGresult *r = query(v, sql, 1, p);
    if (r == NULL)
        return -1;
    int st = add_rows(v, r);
    PQclear(r);
    return st;
}

/* ---- PostgreSQL's rows ---------------------------------------------------- */

static void id_item(const void *arg, size_t i, const char **p, size_t *len)
{
    const vid_t *const *sel = arg;
    *p = sel[i]->id;
    *len = sel[i]->idlen;
}

static void clear_row(vid_t *x)
{
    free(x->rjson);
    x->rjson = NULL;
    x->row = (oc_smp_row_t){0};
}

/* The rows of the ids with `pending` set, in chunks of 10,000 ids. */
static int read_rows(verify_t *v)
{
    vid_t **sel = malloc((v->n ? v->n : 1) * sizeof(*sel));
    if (sel == NULL)
        return -1;
    size_t ns = 0;
    for (size_t i = 0; i < v->n; i++)
        if (v->ids[i].pending) {
            clear_row(&v->ids[i]);
            sel[ns++] = &v->ids[i];
        }
    int rc = 0;
    for (size_t lo = 0; lo < ns && rc == 0; lo += 10000) {
        size_t cnt = ns - lo < 10000 ? ns - lo : 10000;
        char *lit = oc_sql_array_of(cnt, id_item, sel + lo);
        char *sql = oc_smp_sql(v->m, 0, 1, v->no_xmin);
        const char *p[] = {lit};
        PGresult *r = NULL;
        if (lit && sql) {
            r = exec_params(v, sql, 1, p);
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            /* a view: no xmin (undefined_column naming it, in any language) */
            if (PQresultStatus(r) != PGRES_TUPLES_OK && !v->no_xmin && state &&
                strcmp(state, "42703") == 0 && strstr(PQresultErrorMessage(r), "xmin")) {
                PQclear(r);
                free(sql);
                v->no_xmin = 1;
                sql = oc_smp_sql(v->m, 0, 1, 1);
                r = sql ? exec_params(v, sql, 1, p) : NULL;
            }
        }
        if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(v->errout, "objcached --verify: PostgreSQL: %s",
                    r ? PQresultErrorMessage(r) : "out of memory\n");
            rc = -1;
        }
        for (int k = 0; rc == 0 && k < PQntuples(r); k++) {
            const char *id = PQgetvalue(r, k, 1);
            size_t idl = (size_t)PQgetlength(r, k, 1);
            for (size_t j = lo; j < lo + cnt; j++) {
                vid_t *x = sel[j];
                if (x->idlen != idl || memcmp(x->id, id, idl) != 0 || x->row.found)
                    continue;
                size_t jl = (size_t)PQgetlength(r, k, 2);
                if ((x->rjson = malloc(jl + 1)) == NULL) {
                    rc = -1;
                    break;
                }
                memcpy(x->rjson, PQgetvalue(r, k, 2), jl + 1);
                x->row =
                    (oc_smp_row_t){.found = 1,
                                   .json = x->rjson,
                                   .len = jl,
                                   .xmin = PQgetisnull(r, k, 3)
                                               ? 0
                                               : strtoull(PQgetvalue(r, k, 3), NULL, 10)};
            }
        }
        PQclear(r);
        free(lit);
        free(sql);
    }
    free(sel);
    return rc;
}

/* ---- memcached ------------------------------------------------------------ */

static int mc_connect(const oc_mc_server_conf_t *s, uint32_t timeout_ms, char *why,
                      size_t wl)
{
    char port[8];
    snprintf(port, sizeof(port), "%u", s->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int e = getaddrinfo(s->host, port, &hints, &res);
    if (e != 0) {
        snprintf(why, wl, "%s", gai_strerror(e));
        return -1;
    }
    int fd = -1;
    snprintf(why, wl, "no address");
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {timeout_ms / 1000, (suseconds_t)(timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            snprintf(why, wl, "%s", strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* A buffered reader of one connection. */
typedef struct rd {
    int fd;
    char buf[65536];
    size_t off, len;
} rd_t;

static int rd_fill(rd_t *r)
{
    if (r->off > 0) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len == sizeof(r->buf))
        return -1;
    ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
    if (n <= 0)
        return -1;
    r->len += (size_t)n;
    return 0;
}

/* The next line, without its CRLF, NUL-terminated in place. */
static char *rd_line(rd_t *r)
{
    for (;;) {
        char *nl = memchr(r->buf + r->off, '\n', r->len - r->off);
        if (nl) {
            char *line = r->buf + r->off;
            r->off = (size_t)(nl - r->buf) + 1;
            *nl = '\0';
            if (nl > line && nl[-1] == '\r')
                nl[-1] = '\0';
            return line;
        }
        if (rd_fill(r) != 0)
            return NULL;
    }
}

/* n bytes of data plus CRLF, into a malloc'd copy. */
static char *rd_data(rd_t *r, size_t n)
{
    char *d = malloc(n + 1);
    size_t got = 0;
    while (d && got < n + 2) {
        if (r->off == r->len && rd_fill(r) != 0) {
            free(d);
            return NULL;
        }
        size_t take = r->len - r->off;
        if (take > n + 2 - got)
            take = n + 2 - got;
        for (size_t i = 0; i < take; i++, got++)
            if (got < n)
                d[got] = r->buf[r->off + i];
        r->off += take;
    }
    if (d)
        d[n] = '\0';
    return d;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One meta get's answer: VA <len> <flags> / EN; anything else an error. */
static int read_answer(rd_t *r, vid_t *x)
{
    free(x->cval);
    x->cval = NULL;
    x->cache = (oc_smp_cache_t){.kind = OC_SMP_C_ERROR};
    char *line = rd_line(r);
    if (line == NULL)
        return -1;
    if (strcmp(line, "EN") == 0) {
        x->cache.kind = OC_SMP_C_EMPTY;
        return 0;
    }
    if (strncmp(line, "VA ", 3) != 0)
        return 0; /* an error for this key (SERVER_ERROR, ...) */
    char *end;
    unsigned long len = strtoul(line + 3, &end, 10);
    uint32_t flags = 0;
    uint64_t cas = 0;
    char *save = NULL;
    for (char *t = strtok_r(end, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (t[0] == 'f')
            flags = (uint32_t)strtoul(t + 1, NULL, 10);
        else if (t[0] == 'c')
            cas = strtoull(t + 1, NULL, 10);
    }
    if (len > 128u * 1024 * 1024 || (x->cval = rd_data(r, len)) == NULL)
        return -1;
    oc_entry_kind_t k = oc_entry_kind(flags);
    x->cache.ident = cas;
    if (k == OC_ENTRY_OBJECT || k == OC_ENTRY_PUSHED) {
        x->cache.kind = OC_SMP_C_OBJECT;
        x->cache.val = x->cval;
        x->cache.len = len;
    } else if (k == OC_ENTRY_MISSING || k == OC_ENTRY_TOMBSTONE) {
        x->cache.kind = OC_SMP_C_ABSENT;
    } else {
        x->cache.kind = OC_SMP_C_EMPTY; /* a lease, or not objcached's */
    }
    return 0;
}

/* Read the pending ids' entries from server s, MG_CHUNK meta gets at a
 * time. `mg <key> v f c`: no N flag, so a miss makes no lease; no T, no
 * touch: the read changes nothing. */
static int read_server(verify_t *v, size_t s)
{
    const oc_mc_server_conf_t *sv = &v->conf->servers[s];
    char why[256];
    uint32_t tmo = v->conf->mc_io_timeout_ms < 2000 ? 2000 : v->conf->mc_io_timeout_ms;
    int fd = -1;
    size_t i = 0;
    int rc = 0;
    rd_t *r = NULL;
    while (rc == 0) {
        size_t batch[MG_CHUNK], nb = 0;
        for (; i < v->n && nb < MG_CHUNK; i++) {
            vid_t *x = &v->ids[i];
            if (x->pending && x->cacheable &&
                oc_place_server(v->place, x->ckey, x->cklen) == s)
                batch[nb++] = i;
        }
        if (nb == 0)
            break;
        if (fd < 0) {
            if ((fd = mc_connect(sv, tmo, why, sizeof(why))) < 0 ||
                (r = calloc(1, sizeof(*r))) == NULL) {
                fprintf(v->errout, "objcached --verify: memcached %s:%u: %s\n", sv->host,
                        sv->port, fd < 0 ? why : "out of memory");
                rc = -1;
                break;
            }
            r->fd = fd;
        }
        char cmd[MG_CHUNK * (OC_KEY_MAX + 16)];
        size_t cl = 0;
        for (size_t b = 0; b < nb; b++)
            cl += (size_t)snprintf(cmd + cl, sizeof(cmd) - cl, "mg %s v f c\r\n",
                                   v->ids[batch[b]].ckey);
        if (send_all(fd, cmd, cl) != 0) {
            fprintf(v->errout, "objcached --verify: memcached %s:%u: %s\n", sv->host,
                    sv->port, strerror(errno));
            rc = -1;
            break;
        }
        for (size_t b = 0; b < nb && rc == 0; b++)
            if (read_answer(r, &v->ids[batch[b]]) != 0) {
                fprintf(v->errout, "objcached --verify: memcached %s:%u: no answer\n",
                        sv->host, sv->port);
                rc = -1;
            }
    }
    if (fd >= 0)
        close(fd);
    free(r);
    return rc;
}

static int read_cache(verify_t *v)
{
    for (size_t s = 0; s < v->conf->nservers; s++)
        if (read_server(v, s) != 0)
            return -1;
    return 0;
}

/* ---- judging and the report ----------------------------------------------- */

enum {
    C_FRESH,
    C_STALE,
    C_MISSING,
    C_ABSENT,
    C_ABSENT_CACHED,
    C_CHANGING,
    C_ERRORS,
    C_N
};
static const char *const cat_names[C_N] = {
    "fresh", "stale", "missing", "absent", "absent-but-cached", "changing", "errors"};

static void show(FILE *out, const char *what, const vid_t *x)
{
    char c[OC_SMP_LOG_MAX + 1], d[OC_SMP_LOG_MAX + 1];
    size_t cl = x->cache.len < OC_SMP_LOG_MAX ? x->cache.len : OC_SMP_LOG_MAX;
    size_t dl = x->row.len < OC_SMP_LOG_MAX ? x->row.len : OC_SMP_LOG_MAX;
    for (size_t i = 0; i < cl; i++)
        c[i] = (x->cache.val[i] >= 32 && x->cache.val[i] < 127) ? x->cache.val[i] : '?';
    c[cl] = '\0';
    for (size_t i = 0; i < dl; i++)
        d[i] = (x->row.json[i] >= 32 && x->row.json[i] < 127) ? x->row.json[i] : '?';
    d[dl] = '\0';
    fprintf(out, "%s %s cached=%s database=%s\n", what, x->ckey,
            x->cache.kind == OC_SMP_C_ABSENT ? "(absent)" : c,
            x->row.found ? d : "(no row)");
}

static int category(const vid_t *x)
{
    if (!x->cacheable) /* an id no client can ask for: never cached */
        return x->row.found ? C_MISSING : C_ABSENT;
    switch (x->verdict) {
    case OC_SMP_AGREE:
        if (x->cache.kind == OC_SMP_C_EMPTY)
            return x->row.found ? C_MISSING : C_ABSENT;
        return x->row.found ? C_FRESH : C_ABSENT;
    case OC_SMP_STALE:
        return x->row.found ? C_STALE : C_ABSENT_CACHED;
    case OC_SMP_ERROR:
        return C_ERRORS;
    default:
        return C_CHANGING;
    }
}

static int report(verify_t *v)
{
    size_t counts[C_N] = {0}, present = 0;
    for (size_t i = 0; i < v->n; i++) {
        counts[category(&v->ids[i])]++;
        present += v->ids[i].row.found;
    }
    fprintf(
        v->out,
        "verify %s: %zu ids (%zu with a row, %zu without) from %s.%s, generation %" PRIu64
        ", %zu memcached servers\n",
        v->m->name, v->n, present, v->n - present, v->m->schema, v->m->table, v->gen,
        v->conf->nservers);
    for (int c = 0; c < C_N; c++)
        fprintf(v->out, "%s %zu\n", cat_names[c], counts[c]);
    int shown[C_N] = {0};
    for (size_t i = 0; i < v->n; i++) {
        int c = category(&v->ids[i]);
        if ((c == C_STALE || c == C_ABSENT_CACHED) && shown[c]++ < EXAMPLES)
            show(v->out, cat_names[c], &v->ids[i]);
    }
    int bad = counts[C_STALE] + counts[C_ABSENT_CACHED] > 0;
    fprintf(v->out, "result: %s\n", bad ? "STALE" : "ok");
    return bad ? OC_VERIFY_STALE : OC_VERIFY_OK;
}

static void judge(verify_t *v, int first)
{
    const char *vc = v->m->version_column;
    for (size_t i = 0; i < v->n; i++) {
        vid_t *x = &v->ids[i];
        if (!x->pending)
            continue;
        x->pending = 0;
        if (!x->cacheable)
            continue;
        x->verdict = first ? oc_smp_first(vc, &x->cache, &x->row, &x->ev)
                           : oc_smp_again(vc, &x->ev, &x->cache, &x->row);
        x->pending = x->verdict == OC_SMP_SUSPECT || x->verdict == OC_SMP_RACED;
    }
}

static size_t pending(const verify_t *v)
{
    size_t n = 0;
    for (size_t i = 0; i < v->n; i++)
        n += v->ids[i].pending;
    return n;
}

/* Read cache then rows for the pending ids; judge. */
static int round_trip(verify_t *v, int first)
{
    if (read_cache(v) != 0 || read_rows(v) != 0)
        return -1;
    judge(v, first);
    return 0;
}

/* The model's generation (0 without the hook: no TRUNCATE tracked); `gen`
 * if it cannot be read. */
static uint64_t read_gen(verify_t *v, uint64_t gen)
{
    const char *p[] = {v->m->name};
    PGresult *r = exec_params(
        v,
        "SELECT generation FROM objcached.models WHERE model OPERATOR(pg_catalog.=) $1 "
        "AND pg_catalog.to_regclass('objcached.models') IS NOT NULL",
        1, p);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        gen = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return gen;
}

static int connect_pg(verify_t *v)
{
    /* the primary, as the loader reads (oc_pgconn): a standby behind it
     * would report fresh entries as stale. UTF8 at connect, as the loader
     * too: in transaction mode no setup SQL sets it, and a pooler hands
     * each client the encoding it connected with (PGCLIENTENCODING's, or
     * the database's), which would print rows in other bytes than cached */
    const char *keys[] = {"connect_timeout",           "target_session_attrs", "dbname",
                          "fallback_application_name", "client_encoding",      NULL};
    const char *vals[] = {"5",    "primary", v->conf->conninfo, "objcached-verify",
                          "UTF8", NULL};
    v->pg = PQconnectdbParams(keys, vals, 1);
    if (v->pg == NULL || PQstatus(v->pg) != CONNECTION_OK) {
        fprintf(v->errout, "objcached --verify: cannot connect to PostgreSQL: %s",
                v->pg ? PQerrorMessage(v->pg) : "out of memory\n");
        return -1;
    }
    /* transaction mode: nothing of a session lasts; each read carries them */
    if (v->conf->pg_txn_pool) {
        if ((v->local = oc_sql_local_reader(v->conf)) == NULL) {
            fprintf(v->errout, "objcached --verify: out of memory\n");
            return -1;
        }
        v->gen = read_gen(v, 0);
        return 0;
    }
    char *session = oc_sql_session_reader(v->conf);
    PGresult *r = session ? PQexec(v->pg, session) : NULL;
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(v->errout, "objcached --verify: PostgreSQL: %s",
                r ? PQresultErrorMessage(r) : "out of memory\n");
    PQclear(r);
    free(session);
    if (!ok)
        return -1;
    v->gen = read_gen(v, 0);
    return 0;
}

/* Key every id at the generation v->gen; all of them to be read (again). */
static void key_ids(verify_t *v)
{
    size_t max_key = OC_KEY_MAX - strlen(v->conf->key_prefix) - OC_KEY_GEN_ROOM;
    for (size_t i = 0; i < v->n; i++) {
        vid_t *x = &v->ids[i];
        x->pending = 1;
        x->verdict = OC_SMP_AGREE;
        x->cacheable = oc_key_id_cacheable(x->id, x->idlen, max_key);
        if (x->cacheable)
            x->cklen = oc_key_cache_key(v->conf->key_prefix, v->m->name, v->gen, x->id,
                                        x->idlen, x->ckey, sizeof(x->ckey), &(size_t){0});
    }
}

static void recheck_wait(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int run(verify_t *v, uint32_t sample)
{
    char err[OC_ERRLEN];
    if ((v->place = oc_place_new(v->conf->servers, v->conf->nservers, err)) == NULL) {
        fprintf(v->errout, "objcached --verify: %s\n", err);
        return OC_VERIFY_UNREAD;
    }
    if (connect_pg(v) != 0 || pick_present(v, sample) != 0 ||
        pick_absent(v, sample / 10 ? sample / 10 : 1) != 0)
        return OC_VERIFY_UNREAD;
    /* A TRUNCATE committing meanwhile moves every client to the next
     * generation's keys and leaves the old ones as they were: entries read
     * at a generation that is no longer current prove nothing, so after
     * each round the generation is read again and, if it moved, the check
     * starts over at the new one. */
    for (int gens = 0;; gens++) {
        if (gens == RECHECK_ROUNDS) {
            fprintf(v->errout,
                    "objcached --verify: the generation of %s kept changing "
                    "(TRUNCATE) during the check\n",
                    v->m->name);
            return OC_VERIFY_UNREAD;
        }
        key_ids(v);
        if (round_trip(v, 1) != 0)
            return OC_VERIFY_UNREAD;
        uint64_t gen = read_gen(v, v->gen);
        for (int k = 0; gen == v->gen && k < RECHECK_ROUNDS && pending(v) > 0; k++) {
            /* past the invalidation of a write that raced the first read:
             * sample_recheck, the sampler's own grace for a hit, which an
             * operator whose invalidations come by polling sets longer */
            recheck_wait(v->conf->sample_recheck_ms);
            if (round_trip(v, 0) != 0)
                return OC_VERIFY_UNREAD;
            gen = read_gen(v, v->gen);
        }
        if (gen == v->gen)
            break;
        v->gen = gen;
    }
    return report(v);
}

int oc_verify_run(const oc_conf_t *conf, const char *model, uint32_t sample, FILE *out,
                  FILE *errout)
{
    const oc_model_conf_t *m = model ? oc_conf_model(conf, model, strlen(model)) : NULL;
    if (m == NULL) {
        char shown[65];
        size_t k = 0;
        for (; model && model[k] && k < 64; k++)
            shown[k] = (model[k] > 32 && model[k] < 127) ? model[k] : '?';
        shown[k] = '\0';
        fprintf(errout, "objcached --verify: no model '%s' in %s (models:", shown,
                conf->path);
        for (size_t i = 0; i < conf->nmodels; i++)
            fprintf(errout, " %s", conf->models[i].name);
        fprintf(errout, ")\n");
        return OC_VERIFY_USAGE;
    }
    if (sample == 0 || sample > OC_VERIFY_SAMPLE_MAX) {
        fprintf(errout, "objcached --verify: --sample must be 1..%d\n",
                OC_VERIFY_SAMPLE_MAX);
        return OC_VERIFY_USAGE;
    }
    verify_t v = {.conf = conf, .m = m, .out = out, .errout = errout};
    int rc = run(&v, sample);
    for (size_t i = 0; i < v.n; i++) {
        free(v.ids[i].id);
        free(v.ids[i].cval);
        free(v.ids[i].rjson);
    }
    free(v.ids);
    oc_place_free(v.place);
    PQfinish(v.pg);
    free(v.local);
    return rc;
}

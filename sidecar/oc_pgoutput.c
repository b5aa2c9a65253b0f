#include "oc_pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- a bounds-checked big-endian reader -------------------------------- */

/* The first failure sticks: later reads return zeros and change nothing,
 * so a message's fields are read in a row and the status checked once. */
typedef struct rd {
    const uint8_t *p, *end;
    const uint8_t *base; /* the message's first byte, for offsets in errors */
    char *err;
    oc_status_t st;
} rd_t;

__attribute__((format(printf, 2, 3))) static void rd_fail(rd_t *r, const char *fmt, ...)
{
    if (r->st != OC_OK)
        return;
    r->st = OC_EINVAL;
    if (r->err == NULL)
        return;
    int n = snprintf(r->err, OC_ERRLEN, "pgoutput '%c' message, byte %zu: ",
                     r->base[0] >= 0x20 && r->base[0] < 0x7f ? r->base[0] : '?',
                     (size_t)(r->p - r->base));
    if (n < 0 || n >= OC_ERRLEN)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + n, OC_ERRLEN - (size_t)n, fmt, ap);
    va_end(ap);
}

static size_t rd_left(const rd_t *r)
{
    return (size_t)(r->end - r->p);
}

/* 1 if `count` items of `size` bytes are left (and nothing failed yet). */
static int rd_has(rd_t *r, size_t count, size_t size, const char *what)
{
    if (r->st != OC_OK)
        return 0;
    if (count > rd_left(r) / size) {
        rd_fail(r, "%s: %llu bytes needed, %zu left", what,
                (unsigned long long)count * size, rd_left(r));
        return 0;
    }
    return 1;
}

static uint64_t be_load(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t rd_uint(rd_t *r, size_t n, const char *what)
{
    if (!rd_has(r, n, 1, what))
        return 0;
    uint64_t v = be_load(r->p, n);
    r->p += n;
    return v;
}

static uint8_t rd_u8(rd_t *r, const char *what)
{
    return (uint8_t)rd_uint(r, 1, what);
}

static uint16_t rd_u16(rd_t *r, const char *what)
{
    return (uint16_t)rd_uint(r, 2, what);
}

static uint32_t rd_u32(rd_t *r, const char *what)
{
    return (uint32_t)rd_uint(r, 4, what);
}

static uint64_t rd_u64(rd_t *r, const char *what)
{
    return rd_uint(r, 8, what);
}

/* Two's complement without the implementation-defined conversion. */
static int32_t i32_of(uint32_t v)
{
    return v <= INT32_MAX ? (int32_t)v : -(int32_t)(UINT32_MAX - v) - 1;
}

static int64_t i64_of(uint64_t v)
{
    return v <= INT64_MAX ? (int64_t)v : -(int64_t)(UINT64_MAX - v) - 1;
}

static const uint8_t *rd_bytes(rd_t *r, size_t count, size_t size, const char *what)
{
    if (!rd_has(r, count, size, what))
        return NULL;
    const uint8_t *p = r->p;
    r->p += count * size;
    return p;
}

/* A NUL-terminated string; *len excludes the NUL. */
static const char *rd_str(rd_t *r, size_t *len, const char *what)
{
    *len = 0;
    if (r->st != OC_OK)
        return NULL;
    const uint8_t *nul = memchr(r->p, 0, rd_left(r));
    if (nul == NULL) {
        rd_fail(r, "%s: no NUL in the %zu bytes left", what, rd_left(r));
        return NULL;
    }
    const char *s = (const char *)r->p;
    *len = (size_t)(nul - r->p);
    r->p = nul + 1;
    return s;
}

static const char *rd_name(rd_t *r, size_t *len, const char *what)
{
    const char *s = rd_str(r, len, what);
    if (s != NULL && *len == 0)
        rd_fail(r, "%s is empty", what);
    return s;
}

/* ---- tuples and relation columns --------------------------------------- */

/* One tuple column; decode's validation and the iterators both use this, so
 * what decode accepted the iterators read the same way. */
static void rd_col(rd_t *r, oc_pgo_col_t *c)
{
    c->kind = (char)rd_u8(r, "column kind");
    c->p = NULL;
    c->len = 0;
    switch (c->kind) {
    case OC_PGO_COL_NULL:
    case OC_PGO_COL_UNCHANGED:
        return;
    case OC_PGO_COL_TEXT:
    case OC_PGO_COL_BINARY:
        c->len = rd_u32(r, "column length");
        c->p = (const char *)rd_bytes(r, c->len, 1, "column value");
        return;
    default:
        rd_fail(r, "unknown column kind 0x%02x", (unsigned)(uint8_t)c->kind);
    }
}

static void rd_relcol(rd_t *r, oc_pgo_relcol_t *c)
{
    c->flags = rd_u8(r, "column flags");
    c->name = rd_name(r, &c->name_len, "column name");
    c->type_oid = rd_u32(r, "column type");
    c->typmod = i32_of(rd_u32(r, "column typmod"));
}

static uint16_t rd_ncols(rd_t *r)
{
    uint16_t n = rd_u16(r, "column count");
    if (n > OC_PGO_MAX_COLS)
        rd_fail(r, "%u columns, more than %d", (unsigned)n, OC_PGO_MAX_COLS);
    return n;
}

static void rd_tuple(rd_t *r, oc_pgo_tuple_t *t)
{
    t->ncols = rd_ncols(r);
    t->p = r->p;
    for (uint16_t i = 0; i < t->ncols && r->st == OC_OK; i++) {
        oc_pgo_col_t c;
        rd_col(r, &c);
    }
    t->len = r->st == OC_OK ? (size_t)(r->p - t->p) : 0;
}

static void rd_relcols(rd_t *r, oc_pgo_relcols_t *cols)
{
    cols->ncols = rd_ncols(r);
    cols->p = r->p;
    for (uint16_t i = 0; i < cols->ncols && r->st == OC_OK; i++) {
        oc_pgo_relcol_t c;
        rd_relcol(r, &c);
    }
    cols->len = r->st == OC_OK ? (size_t)(r->p - cols->p) : 0;
}

/* ---- the messages ------------------------------------------------------ */

/* 1 if c is one of the letters of `set` (strchr alone would also find the
 * NUL that ends it). */
static int one_of(char c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
}

static void read_begin(rd_t *r, oc_pgo_msg_t *m)
{
    m->begin.final_lsn = rd_u64(r, "final LSN");
    m->begin.commit_ts = i64_of(rd_u64(r, "commit time"));
    m->begin.xid = rd_u32(r, "xid");
}

static void read_commit(rd_t *r, oc_pgo_msg_t *m)
{
    m->commit.flags = rd_u8(r, "flags");
    m->commit.commit_lsn = rd_u64(r, "commit LSN");
    m->commit.end_lsn = rd_u64(r, "end LSN");
    m->commit.commit_ts = i64_of(rd_u64(r, "commit time"));
}

static void read_origin(rd_t *r, oc_pgo_msg_t *m)
{
    m->origin.lsn = rd_u64(r, "origin LSN");
    m->origin.name = rd_str(r, &m->origin.name_len, "origin name");
}

static void read_relation(rd_t *r, oc_pgo_msg_t *m)
{
    m->rel.relid = rd_u32(r, "relation OID");
    m->rel.nspname = rd_str(r, &m->rel.nsp_len, "namespace");
    m->rel.relname = rd_name(r, &m->rel.rel_len, "relation name");
    m->rel.replident = (char)rd_u8(r, "replica identity");
    if (r->st == OC_OK && !one_of(m->rel.replident, "dnfi"))
        rd_fail(r, "unknown replica identity 0x%02x",
                (unsigned)(uint8_t)m->rel.replident);
    rd_relcols(r, &m->rel.cols);
}

static void read_type(rd_t *r, oc_pgo_msg_t *m)
{
    m->typ.oid = rd_u32(r, "type OID");
    m->typ.nspname = rd_str(r, &m->typ.nsp_len, "namespace");
    m->typ.typname = rd_name(r, &m->typ.typ_len, "type name");
}

/* The byte that says which tuple follows: one of `allowed`. */
static char rd_marker(rd_t *r, const char *allowed)
{
    char c = (char)rd_u8(r, "tuple marker");
    if (r->st == OC_OK && !one_of(c, allowed))
        rd_fail(r, "tuple marker 0x%02x, expected one of %s", (unsigned)(uint8_t)c,
                allowed);
    return c;
}

static void read_insert(rd_t *r, oc_pgo_msg_t *m)
{
    m->change.relid = rd_u32(r, "relation OID");
    rd_marker(r, "N");
    rd_tuple(r, &m->change.new_tuple);
}

static void read_update(rd_t *r, oc_pgo_msg_t *m)
{
    m->change.relid = rd_u32(r, "relation OID");
    char c = rd_marker(r, "KON");
    if (c == 'K' || c == 'O') {
        m->change.old_kind = c;
        rd_tuple(r, &m->change.old_tuple);
        rd_marker(r, "N");
    }
    rd_tuple(r, &m->change.new_tuple);
}

static void read_delete(rd_t *r, oc_pgo_msg_t *m)
{
    m->change.relid = rd_u32(r, "relation OID");
    m->change.old_kind = rd_marker(r, "KO");
    rd_tuple(r, &m->change.old_tuple);
}

static void read_truncate(rd_t *r, oc_pgo_msg_t *m)
{
    m->truncate.nrels = rd_u32(r, "relation count");
    m->truncate.options = rd_u8(r, "options");
    m->truncate.relids = rd_bytes(r, m->truncate.nrels, 4, "relation OIDs");
}

static void read_message(rd_t *r, oc_pgo_msg_t *m)
{
    m->message.flags = rd_u8(r, "flags");
    m->message.lsn = rd_u64(r, "message LSN");
    m->message.prefix = rd_str(r, &m->message.prefix_len, "prefix");
    m->message.content_len = rd_u32(r, "content length");
    m->message.content =
        (const char *)rd_bytes(r, m->message.content_len, 1, "message content");
}

static const struct {
    uint8_t byte;
    oc_pgo_type_t type;
    void (*read)(rd_t *r, oc_pgo_msg_t *m);
} msg_kinds[] = {
    {'B', OC_PGO_BEGIN, read_begin},       {'C', OC_PGO_COMMIT, read_commit},
    {'O', OC_PGO_ORIGIN, read_origin},     {'R', OC_PGO_RELATION, read_relation},
    {'Y', OC_PGO_TYPE, read_type},         {'I', OC_PGO_INSERT, read_insert},
    {'U', OC_PGO_UPDATE, read_update},     {'D', OC_PGO_DELETE, read_delete},
    {'T', OC_PGO_TRUNCATE, read_truncate}, {'M', OC_PGO_MESSAGE, read_message},
};

oc_status_t oc_pgo_decode(const uint8_t *buf, size_t len, oc_pgo_msg_t *out, char *err)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return oc_fail(err, OC_EINVAL, "pgoutput: empty message");
    out->type_byte = buf[0];
    rd_t r = {buf + 1, buf + len, buf, err, OC_OK};
    for (size_t i = 0; i < sizeof(msg_kinds) / sizeof(msg_kinds[0]); i++) {
        if (msg_kinds[i].byte != buf[0])
            continue;
        out->type = msg_kinds[i].type;
        msg_kinds[i].read(&r, out);
        if (r.st == OC_OK && r.p != r.end)
            rd_fail(&r, "%zu bytes past the end of the message", rd_left(&r));
        return r.st;
    }
    out->type = OC_PGO_UNKNOWN;
    out->unknown.body = r.p;
    out->unknown.len = rd_left(&r);
    return OC_OK;
}

/* ---- iteration --------------------------------------------------------- */

static oc_pgo_iter_t iter_make(const uint8_t *p, size_t len, uint16_t ncols)
{
    oc_pgo_iter_t it = {p, p, ncols};
    if (p != NULL)
        it.end = p + len;
    return it;
}

oc_pgo_iter_t oc_pgo_tuple_iter(const oc_pgo_tuple_t *t)
{
    return iter_make(t->p, t->len, t->ncols);
}

oc_pgo_iter_t oc_pgo_relcols_iter(const oc_pgo_relcols_t *c)
{
    return iter_make(c->p, c->len, c->ncols);
}

/* Step an iterator with `read`; a bad column ends it. */
static oc_status_t iter_step(oc_pgo_iter_t *it, void (*read)(rd_t *, void *), void *out)
{
    if (it->left == 0)
        return OC_MISS;
    if (it->p == NULL) {
        it->left = 0;
        return OC_EINVAL;
    }
    rd_t r = {it->p, it->end, it->p, NULL, OC_OK};
    read(&r, out);
    if (r.st != OC_OK) {
        it->left = 0;
        return OC_EINVAL;
    }
    it->p = r.p;
    it->left--;
    return OC_OK;
}

static void read_col(rd_t *r, void *out)
{
    rd_col(r, out);
}

static void read_relcol(rd_t *r, void *out)
{
    rd_relcol(r, out);
}

oc_status_t oc_pgo_tuple_next(oc_pgo_iter_t *it, oc_pgo_col_t *out)
{
    return iter_step(it, read_col, out);
}

oc_status_t oc_pgo_relcol_next(oc_pgo_iter_t *it, oc_pgo_relcol_t *out)
{
    return iter_step(it, read_relcol, out);
}

oc_status_t oc_pgo_tuple_col(const oc_pgo_tuple_t *t, uint16_t i, oc_pgo_col_t *out)
{
    if (i >= t->ncols)
        return OC_EINVAL;
    oc_pgo_iter_t it = oc_pgo_tuple_iter(t);
    oc_status_t st;
    do
        st = oc_pgo_tuple_next(&it, out);
    while (st == OC_OK && it.left > t->ncols - i - 1u);
    return st == OC_OK ? OC_OK : OC_EINVAL;
}

oc_status_t oc_pgo_relcol(const oc_pgo_relcols_t *c, uint16_t i, oc_pgo_relcol_t *out)
{
    if (i >= c->ncols)
        return OC_EINVAL;
    oc_pgo_iter_t it = oc_pgo_relcols_iter(c);
    oc_status_t st;
    do
        st = oc_pgo_relcol_next(&it, out);
    while (st == OC_OK && it.left > c->ncols - i - 1u);
    return st == OC_OK ? OC_OK : OC_EINVAL;
}

uint32_t oc_pgo_truncate_relid(const oc_pgo_msg_t *m, uint32_t i)
{
    if (m->type != OC_PGO_TRUNCATE || i >= m->truncate.nrels ||
        m->truncate.relids == NULL)
        return 0;
    return (uint32_t)be_load(m->truncate.relids + (size_t)i * 4, 4);
}

/* ---- CopyData framing -------------------------------------------------- */

oc_status_t oc_pgo_parse_copy(const uint8_t *buf, size_t len, oc_pgo_copy_t *out,
                              char *err)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return oc_fail(err, OC_EINVAL, "replication CopyData: empty");
    if (buf[0] == OC_PGO_XLOGDATA) {
        if (len < 25)
            return oc_fail(err, OC_EINVAL, "XLogData: %zu bytes, the header needs 25",
                           len);
        out->type = OC_PGO_XLOGDATA;
        out->wal_start = be_load(buf + 1, 8);
        out->wal_end = be_load(buf + 9, 8);
        out->send_time = i64_of(be_load(buf + 17, 8));
        out->data = buf + 25;
        out->data_len = len - 25;
        return OC_OK;
    }
    if (buf[0] == OC_PGO_KEEPALIVE) {
        if (len != 18)
            return oc_fail(err, OC_EINVAL, "keepalive: %zu bytes, not 18", len);
        out->type = OC_PGO_KEEPALIVE;
        out->wal_end = be_load(buf + 1, 8);
        out->send_time = i64_of(be_load(buf + 9, 8));
        out->reply_requested = buf[17] != 0;
        return OC_OK;
    }
    return oc_fail(err, OC_EINVAL, "replication CopyData of unknown type 0x%02x",
                   (unsigned)buf[0]);
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(v >> (i * 8));
    return p;
}

size_t oc_pgo_format_status(uint8_t *buf, uint64_t write_lsn, uint64_t flush_lsn,
                            uint64_t apply_lsn, int64_t now_pg, int reply_requested)
{
    uint8_t *p = buf;
    *p++ = 'r';
    p = put_u64(p, write_lsn);
    p = put_u64(p, flush_lsn);
    p = put_u64(p, apply_lsn);
    p = put_u64(p, (uint64_t)now_pg);
    *p++ = reply_requested ? 1 : 0;
    return (size_t)(p - buf);
}

/* ---- LSNs and times ---------------------------------------------------- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 to 8 hex digits from s[*i], up to `stop` (or the end when stop is 0). */
static int lsn_half(const char *s, size_t len, size_t *i, char stop, uint32_t *out)
{
    size_t start = *i;
    uint32_t v = 0;
    for (; *i < len && s[*i] != stop; (*i)++) {
        int d = hex_digit(s[*i]);
        if (d < 0 || *i - start == 8)
            return -1;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return *i > start ? 0 : -1;
}

oc_status_t oc_pgo_lsn_parse(const char *s, size_t len, uint64_t *out)
{
    size_t i = 0;
    uint32_t hi, lo;
    if (lsn_half(s, len, &i, '/', &hi) != 0 || i == len)
        return OC_EINVAL;
    i++; /* the '/' */
    if (lsn_half(s, len, &i, 0, &lo) != 0 || i != len)
        return OC_EINVAL;
    *out = (uint64_t)hi << 32 | lo;
    return OC_OK;
}

size_t oc_pgo_lsn_format(uint64_t lsn, char *buf)
{
    int n = snprintf(buf, OC_PGO_LSN_STRLEN, "%X/%X", (unsigned)(lsn >> 32),
                     (unsigned)(lsn & 0xffffffffu));
    return n > 0 ? (size_t)n : 0;
}

double oc_pgo_time_to_unix(int64_t pg_us)
{
    /* Whole seconds and the rest apart, so today's times keep their
     * microseconds in a double. */
    int64_t secs = pg_us / 1000000 + OC_PGO_EPOCH_UNIX;
    int64_t us = pg_us % 1000000;
    return (double)secs + (double)us / 1e6;
}

int64_t oc_pgo_time_from_unix(double unix_s)
{
    if (unix_s != unix_s) /* NaN */
        return 0;
    double us = (unix_s - OC_PGO_EPOCH_UNIX) * 1e6;
    if (us >= 0x1p63)
        return INT64_MAX;
    if (us <= -0x1p63)
        return INT64_MIN;
    /* Round half away from zero; near +-2^63 doubles are whole numbers, so
     * the half added cannot step past the checks above. */
    return (int64_t)(us < 0 ? us - 0.5 : us + 0.5);
}

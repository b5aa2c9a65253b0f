/*
 * libFuzzer target for oc_pgoutput: the replication stream a PostgreSQL
 * server (or anything in its place) sends the WAL invalidation source.
 * The input is one CopyData payload, as PQgetCopyData returns it, read
 * three ways: as CopyData (and an XLogData's data decoded as a pgoutput
 * message), as a pgoutput message itself (so every message type is reached
 * from the first byte), and as LSN text.
 *
 * Checked, besides ASan/UBSan on an exactly-sized heap copy:
 * - every pointer a decoded message holds lies inside the input, with its
 *   length; names and prefixes are NUL-terminated at their length;
 * - every tuple and relation yields exactly ncols columns through the
 *   iterator, then OC_MISS, and index access yields the same columns;
 *   a column's kind is n, u, t or b, and its value lies inside the tuple;
 * - a known message cut by one byte is refused;
 * - an LSN that parses formats back to text that parses to the same value.
 *
 *   bash scripts/fuzz.sh --target fuzz_pgoutput --seconds 60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oc_pgoutput.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *in_lo, *in_hi; /* the input copy being decoded */

static void check_span(const void *p, size_t len)
{
    const uint8_t *b = p;
    if (p == NULL) {
        if (len != 0)
            abort();
        return;
    }
    if (b < in_lo || b > in_hi || len > (size_t)(in_hi - b))
        abort();
}

static void check_str(const char *s, size_t len, int may_be_empty)
{
    check_span(s, len + 1);
    if (s[len] != '\0' || strlen(s) != len || (!may_be_empty && len == 0))
        abort();
}

static void check_tuple(const oc_pgo_tuple_t *t)
{
    check_span(t->p, t->len);
    if (t->ncols > OC_PGO_MAX_COLS)
        abort();
    oc_pgo_iter_t it = oc_pgo_tuple_iter(t);
    oc_pgo_col_t c, byidx;
    for (uint16_t i = 0; i < t->ncols; i++) {
        if (oc_pgo_tuple_next(&it, &c) != OC_OK)
            abort();
        if (!strchr("nutb", c.kind) || c.kind == '\0')
            abort();
        if ((c.kind == 'n' || c.kind == 'u') != (c.p == NULL))
            abort();
        if (c.p &&
            ((const uint8_t *)c.p < t->p || (const uint8_t *)c.p + c.len > t->p + t->len))
            abort();
        /* index access walks from the start: only check a few, or a tuple
         * of 1664 columns costs a million steps */
        if (i < 8 || i == t->ncols - 1) {
            if (oc_pgo_tuple_col(t, i, &byidx) != OC_OK || byidx.kind != c.kind ||
                byidx.p != c.p || byidx.len != c.len)
                abort();
        }
    }
    if (oc_pgo_tuple_next(&it, &c) != OC_MISS ||
        oc_pgo_tuple_col(t, t->ncols, &c) != OC_EINVAL)
        abort();
}

static void check_relcols(const oc_pgo_relcols_t *cols)
{
    check_span(cols->p, cols->len);
    if (cols->ncols > OC_PGO_MAX_COLS)
        abort();
    oc_pgo_iter_t it = oc_pgo_relcols_iter(cols);
    oc_pgo_relcol_t c, byidx;
    for (uint16_t i = 0; i < cols->ncols; i++) {
        if (oc_pgo_relcol_next(&it, &c) != OC_OK)
            abort();
        check_str(c.name, c.name_len, 0);
        if (i < 8 || i == cols->ncols - 1) {
            if (oc_pgo_relcol(cols, i, &byidx) != OC_OK || byidx.name != c.name ||
                byidx.type_oid != c.type_oid || byidx.typmod != c.typmod ||
                byidx.flags != c.flags)
                abort();
        }
    }
    if (oc_pgo_relcol_next(&it, &c) != OC_MISS)
        abort();
}

static void check_msg(const oc_pgo_msg_t *m)
{
    switch (m->type) {
    case OC_PGO_ORIGIN:
        check_str(m->origin.name, m->origin.name_len, 1);
        break;
    case OC_PGO_RELATION:
        check_str(m->rel.nspname, m->rel.nsp_len, 1);
        check_str(m->rel.relname, m->rel.rel_len, 0);
        if (!strchr("dnfi", m->rel.replident) || m->rel.replident == '\0')
            abort();
        check_relcols(&m->rel.cols);
        break;
    case OC_PGO_TYPE:
        check_str(m->typ.nspname, m->typ.nsp_len, 1);
        check_str(m->typ.typname, m->typ.typ_len, 0);
        break;
    case OC_PGO_INSERT:
    case OC_PGO_UPDATE:
    case OC_PGO_DELETE:
        if (m->change.old_kind != 0 && m->change.old_kind != 'K' &&
            m->change.old_kind != 'O')
            abort();
        check_tuple(&m->change.old_tuple);
        check_tuple(&m->change.new_tuple);
        break;
    case OC_PGO_TRUNCATE:
        check_span(m->truncate.relids, (size_t)m->truncate.nrels * 4);
        for (uint32_t i = 0; i < m->truncate.nrels; i++)
            (void)oc_pgo_truncate_relid(m, i);
        if (oc_pgo_truncate_relid(m, m->truncate.nrels) != 0)
            abort();
        break;
    case OC_PGO_MESSAGE:
        check_str(m->message.prefix, m->message.prefix_len, 1);
        check_span(m->message.content, m->message.content_len);
        break;
    case OC_PGO_UNKNOWN:
        check_span(m->unknown.body, m->unknown.len);
        break;
    default:
        break;
    }
}

/* Decode buf[0..len) (a heap block of exactly len bytes). */
static void decode(const uint8_t *buf, size_t len)
{
    oc_pgo_msg_t m;
    char err[OC_ERRLEN];
    in_lo = buf;
    in_hi = buf + len;
    if (oc_pgo_decode(buf, len, &m, err) != OC_OK) {
        if (memchr(err, '\0', OC_ERRLEN) == NULL)
            abort();
        return;
    }
    if (len == 0 || m.type_byte != buf[0])
        abort();
    check_msg(&m);
    if (m.type != OC_PGO_UNKNOWN && oc_pgo_decode(buf, len - 1, &m, NULL) != OC_EINVAL)
        abort();
}

static void lsn_text(const uint8_t *data, size_t size)
{
    uint64_t v, again;
    char buf[OC_PGO_LSN_STRLEN];
    if (oc_pgo_lsn_parse((const char *)data, size, &v) != OC_OK)
        return;
    size_t n = oc_pgo_lsn_format(v, buf);
    if (n == 0 || n >= OC_PGO_LSN_STRLEN || buf[n] != '\0' ||
        oc_pgo_lsn_parse(buf, n, &again) != OC_OK || again != v)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    if (size)
        memcpy(in, data, size);

    oc_pgo_copy_t c;
    if (oc_pgo_parse_copy(in, size, &c, NULL) == OC_OK) {
        if (c.type == OC_PGO_XLOGDATA) {
            if (c.data != in + 25 || c.data_len != size - 25)
                abort();
            /* its own exact-size block, so a read past it is caught */
            uint8_t *msg = malloc(c.data_len ? c.data_len : 1);
            if (msg != NULL) {
                if (c.data_len)
                    memcpy(msg, c.data, c.data_len);
                decode(msg, c.data_len);
                free(msg);
            }
        } else if (c.type != OC_PGO_KEEPALIVE || size != 18) {
            abort();
        }
    }
    decode(in, size);
    lsn_text(in, size);
    free(in);
    return 0;
}

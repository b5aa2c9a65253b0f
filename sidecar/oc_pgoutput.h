/*
 * oc_pgoutput: a decoder for PostgreSQL's logical replication stream as the
 * built-in `pgoutput` plugin writes it (protocol version 1), for a WAL
 * invalidation source: the CopyData framing of the walsender, the standby
 * status update sent back, and the pgoutput messages themselves.
 *
 * Pure functions over caller buffers: no I/O, no allocation, nothing read
 * outside [buf, buf + len). Every pointer a decoded message holds points
 * into the caller's buffer and is valid as long as that buffer is; nothing
 * is copied. Strings sent as C strings (names, prefixes) are NUL-terminated
 * inside the buffer, so they may also be used as C strings; column values
 * and message contents are not (use their lengths).
 *
 * Validation happens once, in oc_pgo_decode: it walks every column of every
 * tuple and relation it returns and checks every length, so the iterators
 * below cannot fail on a message that decoded OK. A stream this decoder
 * refuses is broken or is not pgoutput v1; a message type it does not know
 * (the stream and two-phase messages of later protocol versions, anything
 * new) is not an error but OC_PGO_UNKNOWN, for the caller to judge.
 *
 * The connection this is written for asks for
 *   START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '1',
 *       publication_names 'p', messages 'true')
 * and reads CopyData payloads with PQgetCopyData:
 *   oc_pgo_parse_copy(payload) -> XLogData ('w') or keepalive ('k')
 *   oc_pgo_decode(copy.data)   -> one pgoutput message per XLogData
 * and answers with oc_pgo_format_status (a keepalive that asks for a reply
 * must be answered within wal_sender_timeout).
 */
#ifndef OC_PGOUTPUT_H
#define OC_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "oc_status.h"

/* PostgreSQL's MaxTupleAttributeNumber: no tuple or relation has more
 * columns, so a larger count is a broken stream. */
#define OC_PGO_MAX_COLS 1664
/* Bytes of a standby status update ('r', 3 LSNs, a clock, a flag). */
#define OC_PGO_STATUS_LEN 34
/* Room for the longest LSN text, "FFFFFFFF/FFFFFFFF", and its NUL. */
#define OC_PGO_LSN_STRLEN 18
/* Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC). */
#define OC_PGO_EPOCH_UNIX 946684800

/* ---- CopyData framing (Streaming Replication Protocol) ----------------- */

typedef enum oc_pgo_copy_type {
    OC_PGO_XLOGDATA = 'w',  /* WAL data: one pgoutput message */
    OC_PGO_KEEPALIVE = 'k', /* primary keepalive */
} oc_pgo_copy_type_t;

typedef struct oc_pgo_copy {
    oc_pgo_copy_type_t type;
    uint64_t wal_start;  /* XLogData: the LSN of the change it carries; 0 for
                            Relation and Type messages and for a BEGIN that
                            PostgreSQL 15 sent late: not a progress mark (the
                            Commit's end_lsn is) */
    uint64_t wal_end;    /* keepalive: the server's end of WAL (for XLogData
                            a logical walsender repeats wal_start) */
    int64_t send_time;   /* server clock, microseconds since 2000-01-01 */
    int reply_requested; /* keepalive: 1 if the server wants a status
                            update at once (or it disconnects us after
                            wal_sender_timeout) */
    const uint8_t *data; /* XLogData: the pgoutput message, into buf */
    size_t data_len;
} oc_pgo_copy_t;

/* Read one CopyData payload from the walsender. OC_EINVAL (reason in err,
 * OC_ERRLEN bytes, may be NULL) if it is short, has bytes past a keepalive,
 * or is of another type: PostgreSQL 15 sends only these two unasked. */
oc_status_t oc_pgo_parse_copy(const uint8_t *buf, size_t len, oc_pgo_copy_t *out,
                              char *err);

/* Write a standby status update into buf (OC_PGO_STATUS_LEN bytes) and
 * return OC_PGO_STATUS_LEN. LSNs are "the last byte + 1" the client has
 * written, flushed, applied; the server moves the slot's confirmed_flush_lsn
 * to flush_lsn. now_pg is the client's clock (oc_pgo_time_from_unix). */
size_t oc_pgo_format_status(uint8_t *buf, uint64_t write_lsn, uint64_t flush_lsn,
                            uint64_t apply_lsn, int64_t now_pg, int reply_requested);

/* ---- pgoutput messages (Logical Replication Message Formats, v1) -------- */

typedef enum oc_pgo_type {
    OC_PGO_BEGIN,    /* 'B' */
    OC_PGO_COMMIT,   /* 'C' */
    OC_PGO_ORIGIN,   /* 'O' */
    OC_PGO_RELATION, /* 'R' */
    OC_PGO_TYPE,     /* 'Y' */
    OC_PGO_INSERT,   /* 'I' */
    OC_PGO_UPDATE,   /* 'U' */
    OC_PGO_DELETE,   /* 'D' */
    OC_PGO_TRUNCATE, /* 'T' */
    OC_PGO_MESSAGE,  /* 'M' */
    OC_PGO_UNKNOWN,  /* any other type byte: see msg.type_byte */
} oc_pgo_type_t;

/* Column kinds in tuple data. */
#define OC_PGO_COL_NULL 'n'
#define OC_PGO_COL_UNCHANGED                                                             \
    'u'                       /* a TOASTed value the change left as it was:              \
                                 its value is not sent */
#define OC_PGO_COL_TEXT   't' /* the type's text output */
#define OC_PGO_COL_BINARY 'b' /* the type's send output (binary 'true') */

/* Relation column flags, truncate options, message flags. */
#define OC_PGO_RELCOL_KEY        1 /* part of the replica identity */
#define OC_PGO_TRUNCATE_CASCADE  1
#define OC_PGO_TRUNCATE_RESTART  2 /* RESTART IDENTITY */
#define OC_PGO_MSG_TRANSACTIONAL 1

/* A tuple's columns, validated by oc_pgo_decode: p/len are the column bytes
 * after the count. Read them with oc_pgo_tuple_col or an iterator. */
typedef struct oc_pgo_tuple {
    const uint8_t *p;
    size_t len;
    uint16_t ncols; /* at most OC_PGO_MAX_COLS */
} oc_pgo_tuple_t;

typedef struct oc_pgo_col {
    char kind;     /* OC_PGO_COL_* */
    const char *p; /* text or binary value (not NUL-terminated); NULL for
                      'n' and 'u' */
    uint32_t len;
} oc_pgo_col_t;

/* A relation's column descriptions, validated by oc_pgo_decode. */
typedef struct oc_pgo_relcols {
    const uint8_t *p;
    size_t len;
    uint16_t ncols; /* at most OC_PGO_MAX_COLS */
} oc_pgo_relcols_t;

typedef struct oc_pgo_relcol {
    uint8_t flags;    /* OC_PGO_RELCOL_KEY */
    const char *name; /* NUL-terminated in the buffer, never empty */
    size_t name_len;
    uint32_t type_oid;
    int32_t typmod; /* -1 when the type has none */
} oc_pgo_relcol_t;

/* One decoded message. Only the union member named for `type` is
 * meaningful (they share storage: look at `type` first). Times are
 * microseconds since 2000-01-01. */
typedef struct oc_pgo_msg {
    oc_pgo_type_t type;
    uint8_t type_byte; /* the message's first byte, for UNKNOWN too */
    union {
        struct {
            uint64_t final_lsn; /* the commit record's LSN */
            int64_t commit_ts;
            uint32_t xid;
        } begin;
        struct {
            uint8_t flags; /* 0 in v1 */
            uint64_t commit_lsn;
            uint64_t end_lsn; /* the end of the commit record: what to
                                 report as flushed once it is applied */
            int64_t commit_ts;
        } commit;
        struct {
            uint64_t lsn; /* the commit's LSN on the origin server */
            const char *name;
            size_t name_len;
        } origin;
        struct {
            uint32_t relid;
            const char *nspname; /* "" means pg_catalog */
            size_t nsp_len;
            const char *relname; /* never empty */
            size_t rel_len;
            char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
            oc_pgo_relcols_t cols;
        } rel;
        struct {
            uint32_t oid;
            const char *nspname; /* "" means pg_catalog */
            size_t nsp_len;
            const char *typname; /* never empty */
            size_t typ_len;
        } typ;
        struct {
            uint32_t relid;
            char old_kind; /* UPDATE, DELETE: 'K' (old replica identity
                              columns, the others null) or 'O' (the whole old
                              row, REPLICA IDENTITY FULL); 0 when no old tuple
                              was sent (INSERT, an UPDATE that left the key) */
            oc_pgo_tuple_t old_tuple;
            oc_pgo_tuple_t new_tuple; /* INSERT, UPDATE; empty for DELETE */
        } change;                     /* INSERT, UPDATE, DELETE */
        struct {
            uint32_t nrels;
            uint8_t options;       /* OC_PGO_TRUNCATE_* */
            const uint8_t *relids; /* nrels big-endian OIDs: read them with
                                      oc_pgo_truncate_relid */
        } truncate;
        struct {
            uint8_t flags; /* OC_PGO_MSG_TRANSACTIONAL */
            uint64_t lsn;
            const char *prefix;
            size_t prefix_len;
            const char *content; /* not NUL-terminated */
            uint32_t content_len;
        } message;
        struct {
            const uint8_t *body; /* the bytes after the type byte */
            size_t len;
        } unknown;
    };
} oc_pgo_msg_t;

/* Decode one pgoutput message (an XLogData's data). OC_OK, or OC_EINVAL
 * with the reason in err (OC_ERRLEN bytes, may be NULL) if the message is
 * empty, short, has bytes past its end, a column count over
 * OC_PGO_MAX_COLS, a length past the buffer, an unterminated string, an
 * unknown column kind or tuple marker. On failure *out is unspecified. */
oc_status_t oc_pgo_decode(const uint8_t *buf, size_t len, oc_pgo_msg_t *out, char *err);

/* Column i (from 0) of a tuple or a relation, walking from the first:
 * OC_OK, or OC_EINVAL if i >= ncols (or the bytes were not validated by
 * oc_pgo_decode and are bad). */
oc_status_t oc_pgo_tuple_col(const oc_pgo_tuple_t *t, uint16_t i, oc_pgo_col_t *out);
oc_status_t oc_pgo_relcol(const oc_pgo_relcols_t *c, uint16_t i, oc_pgo_relcol_t *out);

/* Every column in order, in one pass:
 *   oc_pgo_iter_t it = oc_pgo_tuple_iter(&m.change.new_tuple);
 *   while (oc_pgo_tuple_next(&it, &col) == OC_OK) ...
 * next gives OC_OK and a column, OC_MISS after the last one, OC_EINVAL on
 * bytes oc_pgo_decode did not validate. */
typedef struct oc_pgo_iter {
    const uint8_t *p, *end;
    uint16_t left;
} oc_pgo_iter_t;

oc_pgo_iter_t oc_pgo_tuple_iter(const oc_pgo_tuple_t *t);
oc_status_t oc_pgo_tuple_next(oc_pgo_iter_t *it, oc_pgo_col_t *out);
oc_pgo_iter_t oc_pgo_relcols_iter(const oc_pgo_relcols_t *c);
oc_status_t oc_pgo_relcol_next(oc_pgo_iter_t *it, oc_pgo_relcol_t *out);

/* The i-th relation OID of a TRUNCATE (i < nrels), or 0 (InvalidOid). */
uint32_t oc_pgo_truncate_relid(const oc_pgo_msg_t *m, uint32_t i);

/* LSN text as PostgreSQL writes it ("16/B374D848": two groups of 1 to 8
 * hex digits, either case) to a number and back. parse: OC_OK, or
 * OC_EINVAL for anything else (no spaces, no sign). format writes
 * upper-case hex and a NUL into buf (OC_PGO_LSN_STRLEN bytes) and returns
 * the length. */
oc_status_t oc_pgo_lsn_parse(const char *s, size_t len, uint64_t *out);
size_t oc_pgo_lsn_format(uint64_t lsn, char *buf);

/* PostgreSQL timestamps (microseconds since 2000-01-01 UTC) to Unix
 * seconds and back. from_unix rounds to the microsecond and saturates at
 * INT64_MIN/INT64_MAX (PostgreSQL's -infinity/infinity); NaN gives 0. */
double oc_pgo_time_to_unix(int64_t pg_us);
int64_t oc_pgo_time_from_unix(double unix_s);

#endif

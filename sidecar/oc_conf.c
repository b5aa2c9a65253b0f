#include "oc_conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Limits of the file format. A config is small; anything bigger is a
 * mistake (or an attack on a tool that runs --check-config). */
#define OC_CONF_FILE_MAX ((size_t)1024 * 1024)
#define OC_CONF_LINE_MAX 4096
#define OC_CONF_SHOW_MAX 64 /* bytes of a value ever echoed in an error */
/* Room for each shown byte as \xNN, then "..." and the NUL. */
#define OC_CONF_SHOWBUF      (OC_CONF_SHOW_MAX * 4 + 4)
#define OC_CONF_IDENT_MAX    63  /* PostgreSQL's NAMEDATALEN - 1 */
#define OC_CONF_HOST_MAX     253 /* a DNS name */
#define OC_CONF_SERVERS_MAX  256
#define OC_CONF_COLUMNS_MAX  256
#define OC_CONF_PREFIX_MAX   32
#define OC_CONF_TZ_MAX       64
#define OC_CONF_SOCKPATH_MAX 107 /* sizeof(sockaddr_un.sun_path) - 1 */
#define OC_CONF_KEYS_MAX     32  /* keys in the largest section table */

#define OC_CONF_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define OC_MS_S 1000ULL
#define OC_MS_M (60 * OC_MS_S)
#define OC_MS_H (60 * OC_MS_M)
#define OC_MS_D (24 * OC_MS_H)
#define OC_KIB  1024ULL
#define OC_MIB  (1024 * OC_KIB)

/* How a value is parsed and stored. Numbers share one setter; the type says
 * which unit parser reads them and how their range is printed. */
typedef enum oc_conf_type {
    OC_CT_LISTEN,       /* "" or host:port, stored as text */
    OC_CT_SOCKPATH,     /* "" or a unix socket path */
    OC_CT_PREFIX,       /* memcached key prefix */
    OC_CT_TIMEZONE,     /* a TimeZone name for PostgreSQL */
    OC_CT_LOG_LEVEL,    /* error|warn|info|debug, stored as text */
    OC_CT_CONNINFO,     /* libpq conninfo: a secret, never echoed */
    OC_CT_CONNINFO_OPT, /* the same, or empty (then another key's applies) */
    OC_CT_UINT,         /* decimal number -> uint32_t */
    OC_CT_SIZE,         /* 64k -> uint32_t bytes */
    OC_CT_MSECS,        /* a duration, 5s -> uint32_t milliseconds */
    OC_CT_SECS,         /* a duration, 1h -> uint32_t seconds (whole only) */
    OC_CT_MODE,         /* an octal file mode, 0660 -> uint32_t */
    OC_CT_KEY_TYPE,     /* bigint|integer|uuid|text -> oc_key_type_t */
    OC_CT_IDENT,        /* one SQL identifier */
    OC_CT_USER,         /* a unix user name */
    OC_CT_LOG_TARGET,   /* stderr|syslog, stored as text */
    OC_CT_TABLE,        /* [schema.]table -> off = table, off2 = schema */
    OC_CT_COLUMNS,      /* a, b, c -> off = char **, off2 = size_t count */
    OC_CT_SERVERS,      /* h:p[:w] ... -> off = servers, off2 = size_t count */
    OC_CT_BOOL,         /* on|off (also yes|no, true|false, 1|0) -> int */
    OC_CT_RATE,         /* 0.001 or 0.1% -> uint32_t parts per million */
    OC_CT_WINDOWS,      /* 1s, 10s, 60s -> oc_conf_windows_t */
    OC_CT_POOL_MODE,    /* session|transaction -> int (1: transaction) */
} oc_conf_type_t;

/* One key of a section: how to parse it and which field it fills. */
typedef struct oc_conf_key {
    const char *name;
    const char *def;   /* parsed by the same setter as a value; NULL = none */
    size_t off;        /* field in oc_conf_t or oc_model_conf_t */
    size_t off2;       /* a second field (see the types above) */
    uint64_t min, max; /* numbers only, in the parser's unit (ms, bytes) */
    oc_conf_type_t type;
    bool required;
    bool restart;           /* a running daemon cannot change it: a reload
                               that does is refused (oc_conf_restart_key) */
    const char *deprecated; /* set: still read, ignored, and warned about */
} oc_conf_key_t;

#define OC_MS_10MIN  (10 * OC_MS_M)
#define OC_MS_30DAYS (30 * OC_MS_D)

/* clang-format off */
/* One table row per key. OC_CK fills a field of oc_conf_t, OC_MK one of
 * oc_model_conf_t; min and max only mean something for numbers. */
#define OC_CK(n, t, d, f, lo, hi, x) \
    {.name = (n), .type = (t), .def = (d), .off = offsetof(oc_conf_t, f), \
     .min = (lo), .max = (hi), x}
#define OC_MK(n, t, d, f, lo, hi) \
    {.name = (n), .type = (t), .def = (d), .off = offsetof(oc_model_conf_t, f), \
     .min = (lo), .max = (hi), .restart = false}
/* The last column of OC_CK: what a reload may do with the key. */
#define OC_LIVE             .restart = false
#define OC_RESTART          .restart = true
#define OC_DEPRECATED(why)  .deprecated = (why)

static const oc_conf_key_t oc_conf_objcached_keys[] = {
    OC_CK("listen",           OC_CT_LISTEN,    "127.0.0.1:11311", listen, 0, 0, OC_RESTART),
    OC_CK("unix_socket",      OC_CT_SOCKPATH,  "",     unix_socket, 0, 0, OC_RESTART),
    OC_CK("metrics_listen",   OC_CT_LISTEN,    "",     metrics_listen, 0, 0, OC_RESTART),
    OC_CK("unix_socket_mode", OC_CT_MODE,      "0660", unix_socket_mode, 0, 0777, OC_RESTART),
    OC_CK("key_prefix",       OC_CT_PREFIX,    "oc:",  key_prefix, 0, 0, OC_LIVE),
    OC_CK("timezone",         OC_CT_TIMEZONE,  "UTC",  timezone, 0, 0, OC_RESTART),
    OC_CK("max_connections",  OC_CT_UINT,      "4096", max_connections, 1, 1000000, OC_LIVE),
    OC_CK("max_keys",         OC_CT_UINT,      "1024", max_keys, 1, 100000, OC_LIVE),
    OC_CK("max_line",         OC_CT_SIZE,      "64k",  max_line, OC_KIB, 16 * OC_MIB, OC_LIVE),
    OC_CK("max_value",        OC_CT_SIZE,      "1m",   max_value, OC_KIB, 128 * OC_MIB, OC_LIVE),
    OC_CK("max_reply",        OC_CT_SIZE,      "64m",  max_reply, OC_MIB, 1024 * OC_MIB, OC_LIVE),
    OC_CK("load_timeout",     OC_CT_MSECS,     "5s",   load_timeout_ms, 10, OC_MS_10MIN, OC_RESTART),
    OC_CK("ttl_jitter_pct",   OC_CT_UINT,      "10",   ttl_jitter_pct, 0, 100, OC_LIVE),
    OC_CK("lease_wait",       OC_CT_MSECS,     "250ms", lease_wait_ms, 0, OC_MS_10MIN, OC_LIVE),
    OC_CK("shutdown_timeout", OC_CT_MSECS,     "10s",  shutdown_timeout_ms, 0, OC_MS_10MIN, OC_LIVE),
    OC_CK("restart_handover", OC_CT_BOOL,      "on",   restart_handover, 0, 0, OC_LIVE),
    OC_CK("idle_timeout",     OC_CT_MSECS,     "0",    idle_timeout_ms, 0, 7 * OC_MS_D, OC_LIVE),
    OC_CK("write_timeout",    OC_CT_MSECS,     "30s",  write_timeout_ms, 0, OC_MS_10MIN, OC_LIVE),
    OC_CK("near_cache_size",  OC_CT_SIZE,      "0",    near_cache_size, 0, 3 * 1024 * OC_MIB, OC_LIVE),
    OC_CK("sample_rate",      OC_CT_RATE,      "0.1%", sample_ppm, 0, 1000000, OC_LIVE),
    OC_CK("sample_windows",   OC_CT_WINDOWS,   "1s, 10s, 60s", sample_windows, 0, 0, OC_RESTART),
    OC_CK("sample_max_qps",   OC_CT_UINT,      "4",    sample_max_qps, 1, 100, OC_LIVE),
    OC_CK("sample_queue",     OC_CT_UINT,      "16384", sample_queue, 256, 4194304, OC_LIVE),
    OC_CK("sample_recheck",   OC_CT_MSECS,     "1s",   sample_recheck_ms, 100, OC_MS_M, OC_LIVE),
    /* No default: without it objcached keeps the user it was started as. */
    {.name = "user", .type = OC_CT_USER, .off = offsetof(oc_conf_t, user), OC_RESTART},
    OC_CK("log_level",        OC_CT_LOG_LEVEL, "info", log_level, 0, 0, OC_LIVE),
    OC_CK("log_target",       OC_CT_LOG_TARGET, "stderr", log_target, 0, 0, OC_RESTART),
};

static const oc_conf_key_t oc_conf_memcached_keys[] = {
    /* Required, so no default. A list fills two fields: array and count. */
    {.name = "servers", .type = OC_CT_SERVERS, .required = true,
     .off = offsetof(oc_conf_t, servers), .off2 = offsetof(oc_conf_t, nservers)},
    /* Ignored since memcached I/O moved onto the loop; still read, so that
     * existing files load. */
    OC_CK("workers",         OC_CT_UINT,  "2",     mc_workers, 1, 64, OC_DEPRECATED("ignored since 0.2: memcached I/O runs on the event loop")),
    OC_CK("connect_timeout", OC_CT_MSECS, "200ms", mc_connect_timeout_ms, 1, OC_MS_10MIN, OC_LIVE),
    OC_CK("io_timeout",      OC_CT_MSECS, "500ms", mc_io_timeout_ms, 1, OC_MS_10MIN, OC_LIVE),
    OC_CK("retry_timeout",   OC_CT_MSECS, "2s",    mc_retry_timeout_ms, 1, OC_MS_10MIN, OC_LIVE),
    OC_CK("failure_limit",   OC_CT_UINT,  "3",     mc_failure_limit, 1, 100, OC_LIVE),
    OC_CK("failover",        OC_CT_BOOL,  "on",    mc_failover, 0, 0, OC_LIVE),
    OC_CK("failover_ttl",    OC_CT_SECS,  "10s",   mc_failover_ttl_s, OC_MS_S, OC_MS_H, OC_LIVE),
    /* No default: without a gutter, the keys of a server that is down go to
     * the other servers of the pool. */
    {.name = "gutter", .type = OC_CT_SERVERS, .off = offsetof(oc_conf_t, gutter),
     .off2 = offsetof(oc_conf_t, ngutter), OC_LIVE},
    /* No default: during a change of servers, the other list of the
     * rollout, whose placement also gets every delete (docs/operations.md). */
    {.name = "servers_previous", .type = OC_CT_SERVERS,
     .off = offsetof(oc_conf_t, servers_previous),
     .off2 = offsetof(oc_conf_t, nservers_previous), OC_LIVE},
};

static const oc_conf_key_t oc_conf_postgresql_keys[] = {
    {.name = "conninfo", .type = OC_CT_CONNINFO, .required = true,
     .off = offsetof(oc_conf_t, conninfo), OC_RESTART},
    OC_CK("connections", OC_CT_UINT, "2", pg_connections, 1, 64, OC_RESTART),
    /* 0: a load is one query however many connections sit idle. */
    OC_CK("load_split_min", OC_CT_UINT, "50", pg_split_min, 0, 100000, OC_LIVE),
    OC_CK("pool_mode", OC_CT_POOL_MODE, "session", pg_txn_pool, 0, 0, OC_RESTART),
    /* 0 turns the invalidation consumer off (no hook installed). */
    OC_CK("invalidation_poll", OC_CT_MSECS, "1s", inval_poll_ms, 0, OC_MS_10MIN, OC_LIVE),
    OC_CK("invalidation_batch", OC_CT_UINT, "1000", inval_batch, 1, 100000, OC_LIVE),
    OC_CK("feed_poll", OC_CT_MSECS, "250ms", feed_poll_ms, 0, OC_MS_10MIN, OC_LIVE),
    OC_CK("feed_conninfo", OC_CT_CONNINFO_OPT, "", feed_conninfo, 0, 0, OC_RESTART),
    OC_CK("feed_listen", OC_CT_BOOL, "on", feed_listen, 0, 0, OC_RESTART),
    OC_CK("feed_max_lag", OC_CT_MSECS, "2s", feed_max_lag_ms, 100, OC_MS_10MIN, OC_LIVE),
    OC_CK("feed_batch", OC_CT_UINT, "1000", feed_batch, 1, 100000, OC_LIVE),
    OC_CK("feed_keep", OC_CT_SECS, "10m", feed_keep_s, OC_MS_M, 7 * OC_MS_D, OC_LIVE),
    OC_CK("wal", OC_CT_BOOL, "off", wal, 0, 0, OC_RESTART),
    OC_CK("wal_slot", OC_CT_IDENT, "objcached", wal_slot, 0, 0, OC_RESTART),
    OC_CK("wal_conninfo", OC_CT_CONNINFO_OPT, "", wal_conninfo, 0, 0, OC_RESTART),
    OC_CK("wal_heartbeat", OC_CT_MSECS, "250ms", wal_heartbeat_ms, 10, 10 * OC_MS_S, OC_LIVE),
    OC_CK("wal_batch_interval", OC_CT_MSECS, "5ms", wal_batch_interval_ms, 0, OC_MS_S, OC_LIVE),
    OC_CK("wal_feed_keys", OC_CT_BOOL, "on", wal_feed_keys, 0, 0, OC_LIVE),
    OC_CK("wal_takeover", OC_CT_MSECS, "5s", wal_takeover_ms, OC_MS_S, OC_MS_10MIN, OC_LIVE),
    OC_CK("wal_max_txn_keys", OC_CT_UINT, "1000000", wal_max_txn_keys, 1000, 100000000, OC_LIVE),
};

static const oc_conf_key_t oc_conf_model_keys[] = {
    /* Required. Fills two fields: off = table, off2 = schema. */
    {.name = "table", .type = OC_CT_TABLE, .required = true,
     .off = offsetof(oc_model_conf_t, table), .off2 = offsetof(oc_model_conf_t, schema)},
    OC_MK("key",         OC_CT_IDENT,    "id",     key_column, 0, 0),
    OC_MK("key_type",    OC_CT_KEY_TYPE, "bigint", key_type, 0, 0),
    /* No default: leaving columns out means the whole row. */
    {.name = "columns", .type = OC_CT_COLUMNS, .off = offsetof(oc_model_conf_t, columns),
     .off2 = offsetof(oc_model_conf_t, ncolumns)},
    OC_MK("ttl",         OC_CT_SECS,     "1h",     ttl_s, OC_MS_S, OC_MS_30DAYS),
    OC_MK("missing_ttl", OC_CT_SECS,     "30s",    missing_ttl_s, OC_MS_S, OC_MS_30DAYS),
    OC_MK("tombstone_ttl", OC_CT_SECS,   "10m",    tombstone_ttl_s, OC_MS_S, OC_MS_30DAYS),
    /* No default: without it every push is checked (push_check). */
    {.name = "version_column", .type = OC_CT_IDENT,
     .off = offsetof(oc_model_conf_t, version_column)},
    OC_MK("push_check",  OC_CT_BOOL,     "on",     push_check, 0, 0),
    OC_MK("near_ttl",    OC_CT_MSECS,    "0",      near_ttl_ms, 0, OC_MS_H),
    OC_MK("refresh_ahead", OC_CT_SECS,   "0",      refresh_ahead_s, 0, OC_MS_30DAYS),
    /* No default: [objcached] sample_rate applies (oc_conf_finish). */
    {.name = "sample_rate", .type = OC_CT_RATE, .min = 0, .max = 1000000,
     .off = offsetof(oc_model_conf_t, sample_ppm)},
};

#undef OC_CK
#undef OC_MK
/* clang-format on */

_Static_assert(OC_CONF_LEN(oc_conf_objcached_keys) <= OC_CONF_KEYS_MAX &&
                   OC_CONF_LEN(oc_conf_memcached_keys) <= OC_CONF_KEYS_MAX &&
                   OC_CONF_LEN(oc_conf_postgresql_keys) <= OC_CONF_KEYS_MAX &&
                   OC_CONF_LEN(oc_conf_model_keys) <= OC_CONF_KEYS_MAX,
               "a section has more keys than its seen[] array holds");

typedef enum oc_conf_sect {
    OC_SECT_OBJCACHED = 0,
    OC_SECT_MEMCACHED,
    OC_SECT_POSTGRESQL,
    OC_SECT_MODEL, /* one per [model NAME]; the fixed ones come before */
    OC_SECT_NONE,  /* before the first header */
} oc_conf_sect_t;

#define OC_SECT_FIXED OC_SECT_MODEL /* number of fixed sections */

typedef struct oc_conf_section {
    const char *name;
    const oc_conf_key_t *keys;
    size_t nkeys;
} oc_conf_section_t;

#define OC_CONF_SECTION(n, k)                                                            \
    {                                                                                    \
        n, k, OC_CONF_LEN(k)                                                             \
    }
static const oc_conf_section_t oc_conf_sections[] = {
    [OC_SECT_OBJCACHED] = OC_CONF_SECTION("objcached", oc_conf_objcached_keys),
    [OC_SECT_MEMCACHED] = OC_CONF_SECTION("memcached", oc_conf_memcached_keys),
    [OC_SECT_POSTGRESQL] = OC_CONF_SECTION("postgresql", oc_conf_postgresql_keys),
    [OC_SECT_MODEL] = OC_CONF_SECTION("model", oc_conf_model_keys),
};

static const char *const oc_key_type_names[] = {
    [OC_KEY_BIGINT] = "bigint",
    [OC_KEY_INTEGER] = "integer",
    [OC_KEY_UUID] = "uuid",
    [OC_KEY_TEXT] = "text",
};
#define OC_KEY_TYPE_COUNT OC_CONF_LEN(oc_key_type_names)

static const char *const oc_conf_log_levels[] = {"error", "warn", "info", "debug"};

/* The "seen" line of each key: duplicate keys are reported with the line
 * of the first one, and keys never seen get their default at the end. */
typedef int oc_conf_seen_t[OC_CONF_KEYS_MAX];

typedef struct oc_conf_parser {
    oc_conf_t *conf;
    char *err;
    int line;                     /* current line, from 1 */
    oc_conf_sect_t sect;          /* section being read */
    int sect_line[OC_SECT_FIXED]; /* header line, 0 = absent */
    oc_conf_seen_t fixed_seen[OC_SECT_FIXED];
    oc_conf_seen_t *model_seen; /* parallel to conf->models */
    size_t models_cap;
} oc_conf_parser_t;

/* A setter parses `val` and stores it into the section struct at `base`.
 * It returns OC_EINVAL with a reason in `why` (the caller prefixes the file,
 * line and key), or OC_ENOMEM. */
typedef oc_status_t (*oc_conf_set_fn)(const oc_conf_key_t *k, char *base, const char *val,
                                      char *why);

/* ------------------------------------------------------------------ */
/* Small text helpers                                                  */

static bool oc_conf_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool oc_conf_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool oc_conf_is_word_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool oc_conf_is_word(char c)
{
    return oc_conf_is_word_start(c) || oc_conf_is_digit(c);
}

/* [A-Za-z_][A-Za-z0-9_]{0,max-1}: the only names that reach SQL text. */
static bool oc_conf_word_ok(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max || !oc_conf_is_word_start(s[0]))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!oc_conf_is_word(s[i]))
            return false;
    return true;
}

static bool oc_conf_ident_ok(const char *s, size_t len)
{
    return oc_conf_word_ok(s, len, OC_CONF_IDENT_MAX);
}

static char *oc_conf_trim(char *s)
{
    while (oc_conf_is_space(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && oc_conf_is_space(s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Trims [*s, *s + *len) in place, for splitting lists without copying. */
static void oc_conf_trim_span(const char **s, size_t *len)
{
    while (*len > 0 && oc_conf_is_space(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && oc_conf_is_space((*s)[*len - 1]))
        (*len)--;
}

/* A value as it may appear in an error: at most OC_CONF_SHOW_MAX bytes of
 * it (then "..."), other than printable ASCII as \xNN, so a hostile file
 * can neither flood a log line nor put escape sequences on a terminal. */
static const char *oc_conf_show_n(const char *s, size_t len, char buf[OC_CONF_SHOWBUF])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    size_t n = len < OC_CONF_SHOW_MAX ? len : OC_CONF_SHOW_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            buf[o++] = (char)c;
            continue;
        }
        buf[o++] = '\\';
        buf[o++] = 'x';
        buf[o++] = hex[c >> 4];
        buf[o++] = hex[c & 15];
    }
    if (len > n)
        for (int i = 0; i < 3; i++)
            buf[o++] = '.';
    buf[o] = '\0';
    return buf;
}

static const char *oc_conf_show(const char *s, char buf[OC_CONF_SHOWBUF])
{
    return oc_conf_show_n(s, strlen(s), buf);
}

/* A setter's reason for rejecting a value. A macro so that the result is
 * visibly OC_EINVAL: callers (and static analysers) rely on that. */
#define oc_conf_bad(why, ...) (oc_fail((why), OC_EINVAL, __VA_ARGS__), OC_EINVAL)

/* ------------------------------------------------------------------ */
/* Unit parsers                                                        */

/* Leading decimal digits of `s` into *out. OC_EINVAL if there are none;
 * OC_ETOOBIG if they overflow (still scanning them all, so the caller can
 * tell junk after a huge number from a huge number). */
static oc_status_t oc_conf_digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    bool over = false;
    const char *p = s;
    for (; oc_conf_is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            over = true;
        else
            v = v * 10 + d;
    }
    *end = p;
    if (p == s)
        return OC_EINVAL;
    *out = v;
    return over ? OC_ETOOBIG : OC_OK;
}

/* A whole string of decimal digits. */
static oc_status_t oc_conf_uint(const char *s, uint64_t *out)
{
    const char *end;
    oc_status_t st = oc_conf_digits(s, out, &end);
    if (st == OC_EINVAL || *end != '\0')
        return OC_EINVAL;
    return st;
}

static oc_status_t oc_conf_scale(oc_status_t st, uint64_t v, uint64_t unit, uint64_t *out)
{
    if (st != OC_OK)
        return st;
    if (v > UINT64_MAX / unit)
        return OC_ETOOBIG;
    *out = v * unit;
    return OC_OK;
}

/* A unit suffix and what it multiplies by; the parsers and the range
 * printer share these, so "10m" reads and prints the same way. */
typedef struct oc_conf_unit {
    const char *suffix;
    uint64_t mult;
} oc_conf_unit_t;

/* Largest first, so that the printer picks the shortest spelling. */
static const oc_conf_unit_t oc_conf_duration_units[] = {
    {"d", OC_MS_D}, {"h", OC_MS_H}, {"m", OC_MS_M},
    {"s", OC_MS_S}, {"ms", 1},      {"", OC_MS_S}, /* a bare number is seconds */
};
static const oc_conf_unit_t oc_conf_size_units[] = {
    {"g", 1024 * OC_MIB},
    {"m", OC_MIB},
    {"k", OC_KIB},
    {"", 1},
};

/* Digits then one of `units` (case-insensitive if `anycase`). */
static oc_status_t oc_conf_with_unit(const char *s, const oc_conf_unit_t *units,
                                     size_t nunits, bool anycase, uint64_t *out)
{
    uint64_t v = 0;
    const char *end;
    oc_status_t st = oc_conf_digits(s, &v, &end);
    if (st == OC_EINVAL)
        return OC_EINVAL;
    for (size_t i = 0; i < nunits; i++) {
        bool same = anycase ? strcasecmp(end, units[i].suffix) == 0
                            : strcmp(end, units[i].suffix) == 0;
        if (same)
            return oc_conf_scale(st, v, units[i].mult, out);
    }
    return OC_EINVAL;
}

static oc_status_t oc_conf_duration(const char *s, uint64_t *out_ms)
{
    /* Case matters: "m" is minutes and "M" would read as a month. */
    return oc_conf_with_unit(s, oc_conf_duration_units,
                             OC_CONF_LEN(oc_conf_duration_units), false, out_ms);
}

static oc_status_t oc_conf_size(const char *s, uint64_t *out)
{
    return oc_conf_with_unit(s, oc_conf_size_units, OC_CONF_LEN(oc_conf_size_units), true,
                             out);
}

/* Octal digits only: "0660" or "660", as chmod(1) takes them. */
static oc_status_t oc_conf_octal(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    bool over = false;
    if (*s == '\0')
        return OC_EINVAL;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '7')
            return OC_EINVAL; /* junk wins over size, as in oc_conf_digits() */
        if (v > UINT64_MAX / 8)
            over = true;
        else
            v = v * 8 + (uint64_t)(*p - '0');
    }
    *out = v;
    return over ? OC_ETOOBIG : OC_OK;
}

oc_status_t oc_conf_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    if (s == NULL || out_ms == NULL)
        return OC_EINVAL;
    /* The public contract has one failure code; the loader distinguishes. */
    return oc_conf_duration(s, out_ms) == OC_OK ? OC_OK : OC_EINVAL;
}

oc_status_t oc_conf_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    if (s == NULL || out == NULL)
        return OC_EINVAL;
    for (size_t i = 0; i < OC_CONF_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, OC_OK;
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, OC_OK;
    }
    return OC_EINVAL;
}

oc_status_t oc_conf_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || out == NULL)
        return OC_EINVAL;
    return oc_conf_size(s, out) == OC_OK ? OC_OK : OC_EINVAL;
}

/* Prints `v` the way a user would write it: "16m" rather than 16777216. */
static void oc_conf_fmt_number(oc_conf_type_t type, uint64_t v, char *buf, size_t len)
{
    const oc_conf_unit_t *units = NULL;
    size_t nunits = 0;
    if (type == OC_CT_MODE) {
        snprintf(buf, len, v == 0 ? "0" : "0%llo", (unsigned long long)v);
        return;
    }
    if (type == OC_CT_SIZE) {
        units = oc_conf_size_units;
        nunits = OC_CONF_LEN(oc_conf_size_units);
    } else if (type == OC_CT_MSECS || type == OC_CT_SECS) {
        units = oc_conf_duration_units;
        nunits = OC_CONF_LEN(oc_conf_duration_units);
    }
    for (size_t i = 0; i < nunits; i++)
        if (v != 0 && v % units[i].mult == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(v / units[i].mult),
                     units[i].suffix);
            return;
        }
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* ------------------------------------------------------------------ */
/* Setters: one per value type                                         */

static oc_status_t oc_conf_store_string(char *base, size_t off, const char *val)
{
    char **field = (char **)(void *)(base + off);
    char *copy = strdup(val);
    if (copy == NULL)
        return OC_ENOMEM;
    free(*field);
    *field = copy;
    return OC_OK;
}

static oc_status_t oc_conf_number(oc_conf_type_t type, const char *val, uint64_t *v)
{
    switch (type) {
    case OC_CT_SIZE:
        return oc_conf_size(val, v);
    case OC_CT_MSECS:
    case OC_CT_SECS:
        return oc_conf_duration(val, v);
    case OC_CT_MODE:
        return oc_conf_octal(val, v);
    default:
        return oc_conf_uint(val, v);
    }
}

static const char *oc_conf_number_kind(oc_conf_type_t type)
{
    switch (type) {
    case OC_CT_SIZE:
        return "a size (e.g. 512, 64k, 1m)";
    case OC_CT_MSECS:
    case OC_CT_SECS:
        return "a duration (e.g. 250ms, 30s, 5m, 2h, 1d)";
    case OC_CT_MODE:
        return "an octal mode (e.g. 0660)";
    default:
        return "a whole number";
    }
}

static oc_status_t oc_conf_set_number(const oc_conf_key_t *k, char *base, const char *val,
                                      char *why)
{
    char shown[OC_CONF_SHOWBUF], lo[32], hi[32];
    uint64_t v = 0;
    oc_status_t st = oc_conf_number(k->type, val, &v);
    if (st == OC_EINVAL)
        return oc_conf_bad(why, "'%s' is not %s", oc_conf_show(val, shown),
                           oc_conf_number_kind(k->type));
    if (st == OC_OK && k->type == OC_CT_SECS && v % OC_MS_S != 0)
        return oc_conf_bad(why, "'%s' is not a whole number of seconds",
                           oc_conf_show(val, shown));
    if (st != OC_OK || v < k->min || v > k->max) {
        oc_conf_fmt_number(k->type, k->min, lo, sizeof(lo));
        oc_conf_fmt_number(k->type, k->max, hi, sizeof(hi));
        return oc_conf_bad(why, "'%s' is out of range (%s..%s)", oc_conf_show(val, shown),
                           lo, hi);
    }
    if (k->type == OC_CT_SECS)
        v /= OC_MS_S;
    /* Every table max fits 32 bits, so the range check made this exact. */
    *(uint32_t *)(void *)(base + k->off) = (uint32_t)v;
    return OC_OK;
}

/* A DNS name or an IPv4 address; anything else belongs in brackets. */
static bool oc_conf_hostname_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > OC_CONF_HOST_MAX || s[0] == '-' || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!oc_conf_is_word(s[i]) && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

/* Splits "host:rest" or "[ipv6]:rest" in place. *host is the name or
 * address without brackets, as getaddrinfo() and libmemcached want it. */
static oc_status_t oc_conf_split_host(char *s, char **host, char **rest)
{
    struct in6_addr addr;
    if (s[0] == '[') {
        char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return OC_EINVAL;
        *close = '\0';
        *host = s + 1;
        *rest = close + 2;
        return inet_pton(AF_INET6, *host, &addr) == 1 ? OC_OK : OC_EINVAL;
    }
    char *colon = strchr(s, ':');
    if (colon == NULL)
        return OC_EINVAL;
    *colon = '\0';
    *host = s;
    *rest = colon + 1;
    return oc_conf_hostname_ok(*host) ? OC_OK : OC_EINVAL;
}

/* A port or weight: OC_EINVAL if not a number, OC_ETOOBIG if out of range. */
static oc_status_t oc_conf_small_uint(const char *s, uint64_t min, uint64_t max,
                                      uint32_t *out)
{
    uint64_t v = 0;
    oc_status_t st = oc_conf_uint(s, &v);
    if (st == OC_EINVAL)
        return OC_EINVAL;
    if (st != OC_OK || v < min || v > max)
        return OC_ETOOBIG;
    *out = (uint32_t)v;
    return OC_OK;
}

static oc_status_t oc_conf_set_listen(const oc_conf_key_t *k, char *base, const char *val,
                                      char *why)
{
    char copy[OC_CONF_LINE_MAX + 1], shown[OC_CONF_SHOWBUF];
    char *host, *port;
    uint32_t p = 0;
    oc_status_t st = OC_OK;
    if (*val != '\0') {
        snprintf(copy, sizeof(copy), "%s", val);
        st = oc_conf_split_host(copy, &host, &port);
        if (st == OC_OK)
            st = oc_conf_small_uint(port, 1, 65535, &p);
    }
    if (st == OC_ETOOBIG)
        return oc_conf_bad(why, "port in '%s' is out of range (1..65535)",
                           oc_conf_show(val, shown));
    if (st != OC_OK)
        return oc_conf_bad(why,
                           "'%s' is not host:port (IPv6 as [::1]:11311), "
                           "or empty",
                           oc_conf_show(val, shown));
    return oc_conf_store_string(base, k->off, val);
}

static oc_status_t oc_conf_set_sockpath(const oc_conf_key_t *k, char *base,
                                        const char *val, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    size_t n = strlen(val);
    if (n > OC_CONF_SOCKPATH_MAX)
        return oc_conf_bad(why, "'%s' is longer than %d bytes", oc_conf_show(val, shown),
                           OC_CONF_SOCKPATH_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)val[i] < 0x20 || val[i] == 0x7f)
            return oc_conf_bad(why, "'%s' has a control character",
                               oc_conf_show(val, shown));
    return oc_conf_store_string(base, k->off, val);
}

/* Printable ASCII without spaces: the prefix goes into every memcached key,
 * where spaces and control characters are not allowed. */
static oc_status_t oc_conf_set_prefix(const oc_conf_key_t *k, char *base, const char *val,
                                      char *why)
{
    char shown[OC_CONF_SHOWBUF];
    size_t n = strlen(val);
    bool ok = n <= OC_CONF_PREFIX_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = val[i] > 0x20 && val[i] < 0x7f;
    if (!ok)
        return oc_conf_bad(why,
                           "'%s' is not 0..%d printable ASCII characters "
                           "without spaces",
                           oc_conf_show(val, shown), OC_CONF_PREFIX_MAX);
    return oc_conf_store_string(base, k->off, val);
}

/* The zone goes into a SET command, so only the characters of IANA names
 * and POSIX offsets are let through. */
static oc_status_t oc_conf_set_timezone(const oc_conf_key_t *k, char *base,
                                        const char *val, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    size_t n = strlen(val);
    bool ok = n >= 1 && n <= OC_CONF_TZ_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = oc_conf_is_word(val[i]) || strchr("/+-", val[i]) != NULL;
    if (!ok)
        return oc_conf_bad(why,
                           "'%s' is not a time zone name (1..%d characters of "
                           "A-Z a-z 0-9 _ / + -)",
                           oc_conf_show(val, shown), OC_CONF_TZ_MAX);
    return oc_conf_store_string(base, k->off, val);
}

static oc_status_t oc_conf_set_log_level(const oc_conf_key_t *k, char *base,
                                         const char *val, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    for (size_t i = 0; i < OC_CONF_LEN(oc_conf_log_levels); i++)
        if (strcmp(val, oc_conf_log_levels[i]) == 0)
            return oc_conf_store_string(base, k->off, val);
    return oc_conf_bad(why, "'%s' is not one of error, warn, info, debug",
                       oc_conf_show(val, shown));
}

static oc_status_t oc_conf_set_log_target(const oc_conf_key_t *k, char *base,
                                          const char *val, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    if (strcmp(val, "stderr") == 0 || strcmp(val, "syslog") == 0)
        return oc_conf_store_string(base, k->off, val);
    return oc_conf_bad(why, "'%s' is not one of stderr, syslog",
                       oc_conf_show(val, shown));
}

/* What a pooler in front of conninfo and feed_conninfo keeps for a client
 * (pgbouncer's pool_mode): its server session (session), or only each
 * transaction (transaction). */
static oc_status_t oc_conf_set_pool_mode(const oc_conf_key_t *k, char *base,
                                         const char *val, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    int *mode = (int *)(void *)(base + k->off);
    if (strcmp(val, "session") == 0 || strcmp(val, "transaction") == 0) {
        *mode = strcmp(val, "transaction") == 0;
        return OC_OK;
    }
    return oc_conf_bad(why, "'%s' is not one of session, transaction",
                       oc_conf_show(val, shown));
}

static oc_status_t oc_conf_set_bool(const oc_conf_key_t *k, char *base, const char *val,
                                    char *why)
{
    char shown[OC_CONF_SHOWBUF];
    int v;
    if (oc_conf_parse_bool(val, &v) != OC_OK)
        return oc_conf_bad(why, "'%s' is not one of on, off", oc_conf_show(val, shown));
    *(int *)(void *)(base + k->off) = v;
    return OC_OK;
}

/* conninfo and wal_conninfo must reach the primary: a load from a hot
 * standby that has not replayed a commit yet caches the old row with a
 * valid lease after the invalidation that deleted it, stale until its ttl
 * (the WAL reader: PostgreSQL 15 decodes on a primary only). objcached asks
 * for target_session_attrs=primary when none is set (oc_pgconn); a value
 * that lets a standby in is refused. feed_conninfo may be a replica. */
static oc_status_t oc_conf_session_attrs(const oc_conf_key_t *k,
                                         const PQconninfoOption *opts, char *why)
{
    static const char *const standby_ok[] = {"any", "standby", "prefer-standby",
                                             "read-only"};
    if (strcmp(k->name, "feed_conninfo") == 0)
        return OC_OK;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "target_session_attrs") != 0 || o->val == NULL)
            continue;
        for (size_t i = 0; i < sizeof(standby_ok) / sizeof(standby_ok[0]); i++)
            if (strcmp(o->val, standby_ok[i]) == 0)
                return oc_conf_bad(why,
                                   "target_session_attrs=%s can reach a hot standby, "
                                   "and loads from a replica are served stale after "
                                   "writes (not replayed yet); use primary or "
                                   "read-write, or leave it out (objcached then asks "
                                   "for primary)",
                                   standby_ok[i]);
    }
    return OC_OK;
}

/* Whether val is one of the comma-separated words of list, exactly. */
static int oc_conf_in_list(const char *list, const char *val)
{
    size_t len = strlen(val);
    for (const char *p = list;; p++) {
        size_t n = strcspn(p, ",");
        if (n == len && strncmp(p, val, n) == 0)
            return 1;
        p += n;
        if (*p == '\0')
            return 0;
    }
}

/* Values libpq (15) refuses when it connects, never when it parses: the
 * daemon started, then failed every load with "invalid sslmode value", and
 * --check-config could only say it did not check the database (a probe's
 * finding). Compared as libpq does, case and all (it takes "any", not
 * "ANY"). Not secrets: shown. */
static oc_status_t oc_conf_libpq_values(const PQconninfoOption *opts, char *why)
{
    static const struct {
        const char *key, *list;
    } enums[] = {
        {"sslmode", "disable,allow,prefer,require,verify-ca,verify-full"},
        {"gssencmode", "disable,prefer,require"},
        {"channel_binding", "disable,prefer,require"},
        {"target_session_attrs",
         "any,read-write,read-only,primary,standby,prefer-standby"},
    };
    char shown[OC_CONF_SHOWBUF];
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "port") == 0) {
            /* a list, one per host; each empty (the default) or what
             * libpq's parse_int_param takes (strtol, blanks around), 1..65535 */
            for (const char *p = o->val;; p++) {
                size_t n = strcspn(p, ",");
                char one[32];
                int ok = n < sizeof(one);
                if (ok && n > 0) {
                    memcpy(one, p, n);
                    one[n] = '\0';
                    char *end;
                    errno = 0;
                    long v = strtol(one, &end, 10);
                    while (*end != '\0' && isspace((unsigned char)*end))
                        end++;
                    ok = end != one && errno == 0 && *end == '\0' && v >= 1 && v <= 65535;
                }
                if (!ok)
                    return oc_conf_bad(why, "port=%s: each port must be 1..65535",
                                       oc_conf_show(o->val, shown));
                p += n;
                if (*p == '\0')
                    break;
            }
            continue;
        }
        for (size_t i = 0; i < sizeof(enums) / sizeof(enums[0]); i++) {
            if (strcmp(o->keyword, enums[i].key) != 0)
                continue;
            int found = oc_conf_in_list(enums[i].list, o->val);
            if (!found)
                return oc_conf_bad(why, "%s=%s is not a value libpq takes (%s)",
                                   o->keyword, oc_conf_show(o->val, shown),
                                   enums[i].list);
        }
    }
    return OC_OK;
}

/* The conninfo may hold a password: no message ever shows it. One libpq
 * cannot parse would fail every connection, and libpq's message about it
 * quotes the string (a URI whole, its password too, in the log at every
 * retry): refused here, naming only the key. PQconninfoParse reads neither
 * the environment nor the network, so loading the file stays pure. */
static oc_status_t oc_conf_set_conninfo(const oc_conf_key_t *k, char *base,
                                        const char *val, char *why)
{
    if (*val == '\0' && k->type == OC_CT_CONNINFO)
        return oc_conf_bad(why, "must not be empty");
    if (*val != '\0') {
        char *msg = NULL;
        PQconninfoOption *opts = PQconninfoParse(val, &msg);
        if (opts == NULL) {
            int oom = msg == NULL;
            PQfreemem(msg);
            return oom ? oc_conf_bad(why, "out of memory")
                       : oc_conf_bad(why, "is not a libpq connection string (key=value "
                                          "pairs or a postgresql:// URI); not shown, "
                                          "as it may hold a password");
        }
        oc_status_t st = oc_conf_libpq_values(opts, why);
        if (st == OC_OK)
            st = oc_conf_session_attrs(k, opts, why);
        PQconninfoFree(opts);
        if (st != OC_OK)
            return st;
    }
    return oc_conf_store_string(base, k->off, val);
}

static oc_status_t oc_conf_set_key_type(const oc_conf_key_t *k, char *base,
                                        const char *val, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    for (size_t i = 0; i < OC_KEY_TYPE_COUNT; i++)
        if (strcmp(val, oc_key_type_names[i]) == 0) {
            *(oc_key_type_t *)(void *)(base + k->off) = (oc_key_type_t)i;
            return OC_OK;
        }
    return oc_conf_bad(why, "'%s' is not one of bigint, integer, uuid, text",
                       oc_conf_show(val, shown));
}

static oc_status_t oc_conf_bad_ident(const char *s, size_t len, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    return oc_conf_bad(why,
                       "'%s' is not an identifier "
                       "([A-Za-z_][A-Za-z0-9_]{0,62})",
                       oc_conf_show_n(s, len, shown));
}

static oc_status_t oc_conf_set_ident(const oc_conf_key_t *k, char *base, const char *val,
                                     char *why)
{
    if (!oc_conf_ident_ok(val, strlen(val)))
        return oc_conf_bad_ident(val, strlen(val), why);
    return oc_conf_store_string(base, k->off, val);
}

/* A unix user name: what useradd accepts, [A-Za-z_][A-Za-z0-9_.-]{0,31}. */
static oc_status_t oc_conf_set_user(const oc_conf_key_t *k, char *base, const char *val,
                                    char *why)
{
    size_t len = strlen(val);
    int ok = len >= 1 && len <= 32 && (isalpha((unsigned char)val[0]) || val[0] == '_');
    for (size_t i = 1; ok && i < len; i++)
        ok = isalnum((unsigned char)val[i]) || strchr("_.-", val[i]) != NULL;
    if (!ok) {
        char shown[OC_CONF_SHOWBUF];
        return oc_conf_bad(why, "'%s' is not a user name",
                           oc_conf_show_n(val, len, shown));
    }
    return oc_conf_store_string(base, k->off, val);
}

/* "schema.table" or "table" (schema public); off = table, off2 = schema. */
static oc_status_t oc_conf_set_table(const oc_conf_key_t *k, char *base, const char *val,
                                     char *why)
{
    const char *dot = strchr(val, '.');
    const char *table = dot != NULL ? dot + 1 : val;
    size_t schema_len = dot != NULL ? (size_t)(dot - val) : 0;
    char *schema = NULL;
    oc_status_t st;
    if (dot != NULL && !oc_conf_ident_ok(val, schema_len)) {
        st = oc_conf_bad_ident(val, schema_len, why);
        goto fail;
    }
    if (!oc_conf_ident_ok(table, strlen(table))) {
        st = oc_conf_bad_ident(table, strlen(table), why);
        goto fail;
    }
    schema = dot != NULL ? strndup(val, schema_len) : strdup("public");
    st = schema == NULL ? OC_ENOMEM : oc_conf_store_string(base, k->off, table);
    if (st != OC_OK)
        goto fail;
    char **field = (char **)(void *)(base + k->off2);
    free(*field);
    *field = schema;
    return OC_OK;
fail:
    free(schema);
    return st;
}

static void oc_conf_free_strv(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

static size_t oc_conf_count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == c;
    return n;
}

/* One column of a list; `cols` holds the `n` accepted before it. */
static oc_status_t oc_conf_column(const char *s, size_t len, char **cols, size_t n,
                                  char *why)
{
    char shown[OC_CONF_SHOWBUF];
    oc_conf_trim_span(&s, &len);
    if (len == 0)
        return oc_conf_bad(why, "empty column name");
    if (!oc_conf_ident_ok(s, len))
        return oc_conf_bad_ident(s, len, why);
    for (size_t i = 0; i < n; i++)
        if (strlen(cols[i]) == len && memcmp(cols[i], s, len) == 0)
            return oc_conf_bad(why, "column '%s' is listed twice",
                               oc_conf_show_n(s, len, shown));
    cols[n] = strndup(s, len);
    return cols[n] == NULL ? OC_ENOMEM : OC_OK;
}

/* "a, b, c"; off = char **columns, off2 = size_t ncolumns. */
static oc_status_t oc_conf_set_columns(const oc_conf_key_t *k, char *base,
                                       const char *val, char *why)
{
    size_t want = oc_conf_count_char(val, ',') + 1, n = 0;
    char **cols = NULL;
    oc_status_t st = OC_ENOMEM;
    if (*val == '\0') {
        st = oc_conf_bad(why, "must not be empty (leave it out for the whole row)");
        goto fail;
    }
    if (want > OC_CONF_COLUMNS_MAX) {
        st = oc_conf_bad(why, "more than %d columns", OC_CONF_COLUMNS_MAX);
        goto fail;
    }
    cols = calloc(want, sizeof(*cols));
    if (cols == NULL)
        goto fail;
    for (const char *s = val; n < want; n++) {
        const char *comma = strchr(s, ',');
        size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
        st = oc_conf_column(s, len, cols, n, why);
        if (st != OC_OK)
            goto fail;
        s += len + 1;
    }
    char ***field = (char ***)(void *)(base + k->off);
    size_t *count = (size_t *)(void *)(base + k->off2);
    oc_conf_free_strv(*field, *count);
    *field = cols;
    *count = n;
    return OC_OK;
fail:
    oc_conf_free_strv(cols, n);
    return st;
}

static void oc_conf_free_servers(oc_mc_server_conf_t *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i].host);
    free(v);
}

/* "host:port[:weight]" or "[ipv6]:port[:weight]", already cut out of the
 * list and NUL-terminated (in `tok`, which this modifies). */
static oc_status_t oc_conf_server(char *tok, oc_mc_server_conf_t *out, char *why)
{
    char shown[OC_CONF_SHOWBUF];
    char *host, *rest, *weight;
    uint32_t port = 0;
    oc_conf_show(tok, shown); /* before the split writes NULs into it */
    oc_status_t st = oc_conf_split_host(tok, &host, &rest);
    weight = st == OC_OK ? strchr(rest, ':') : NULL;
    if (weight != NULL)
        *weight++ = '\0';
    if (st == OC_OK)
        st = oc_conf_small_uint(rest, 1, 65535, &port);
    if (st == OC_ETOOBIG)
        return oc_conf_bad(why, "port in '%s' is out of range (1..65535)", shown);
    out->weight = 1;
    if (st == OC_OK && weight != NULL)
        st = oc_conf_small_uint(weight, 1, 1000, &out->weight);
    if (st == OC_ETOOBIG)
        return oc_conf_bad(why, "weight in '%s' is out of range (1..1000)", shown);
    if (st != OC_OK)
        return oc_conf_bad(why,
                           "'%s' is not host:port[:weight] (IPv6 as "
                           "[::1]:11211)",
                           shown);
    out->port = (uint16_t)port;
    out->host = strdup(host);
    return out->host == NULL ? OC_ENOMEM : OC_OK;
}

static oc_status_t oc_conf_server_unique(const oc_mc_server_conf_t *v, size_t n,
                                         char *why)
{
    char shown[OC_CONF_SHOWBUF];
    for (size_t i = 0; i < n; i++)
        if (v[i].port == v[n].port && strcasecmp(v[i].host, v[n].host) == 0)
            return oc_conf_bad(why, "server '%s' port %u is listed twice",
                               oc_conf_show(v[n].host, shown), v[n].port);
    return OC_OK;
}

/* Whitespace or commas separate servers; off = servers, off2 = count. */
static oc_status_t oc_conf_set_servers(const oc_conf_key_t *k, char *base,
                                       const char *val, char *why)
{
    static const char seps[] = " \t\r\v\f,";
    char *copy = strdup(val), *save = NULL;
    oc_mc_server_conf_t *v = NULL;
    size_t n = 0;
    oc_status_t st = OC_ENOMEM;
    if (copy == NULL)
        goto fail;
    v = calloc(OC_CONF_SERVERS_MAX, sizeof(*v));
    if (v == NULL)
        goto fail;
    for (char *tok = strtok_r(copy, seps, &save); tok != NULL;
         tok = strtok_r(NULL, seps, &save)) {
        st = n == OC_CONF_SERVERS_MAX
                 ? oc_conf_bad(why, "more than %d servers", OC_CONF_SERVERS_MAX)
                 : oc_conf_server(tok, &v[n], why);
        if (st == OC_OK)
            st = oc_conf_server_unique(v, n, why);
        if (st != OC_OK)
            goto fail;
        n++;
    }
    if (n == 0 && k->required) {
        st = oc_conf_bad(why, "no servers given");
        goto fail;
    }
    oc_mc_server_conf_t **field = (oc_mc_server_conf_t **)(void *)(base + k->off);
    size_t *count = (size_t *)(void *)(base + k->off2);
    oc_conf_free_servers(*field, *count);
    if (n == 0) { /* an optional list left empty: none */
        free(v);
        v = NULL;
    }
    *field = v;
    *count = n;
    free(copy);
    return OC_OK;
fail:
    /* The entry that failed may hold a host already; the rest are zero. */
    oc_conf_free_servers(v, OC_CONF_SERVERS_MAX);
    free(copy);
    return st;
}

/* A share: "0.001", "0.1%", "1", "0". Stored in parts per million, so the
 * smallest is 0.0001% (1 ppm); finer digits are refused, not rounded. */
static oc_status_t oc_conf_set_rate(const oc_conf_key_t *k, char *base, const char *val,
                                    char *why)
{
    char shown[OC_CONF_SHOWBUF];
    size_t n = strlen(val);
    bool pct = n > 0 && val[n - 1] == '%';
    uint64_t whole = 0, frac = 0, scale = pct ? 10000 : 1000000;
    const char *p = val;
    size_t digits = 0;
    while (oc_conf_is_digit(*p) && digits < 8)
        whole = whole * 10 + (uint64_t)(*p++ - '0'), digits++;
    bool ok = digits > 0 && !oc_conf_is_digit(*p);
    if (ok && *p == '.') {
        p++;
        uint64_t unit = scale;
        size_t fd = 0;
        while (oc_conf_is_digit(*p)) {
            unit /= 10;
            if (unit == 0 && *p != '0')
                ok = false; /* finer than 1 ppm */
            frac += unit * (uint64_t)(*p++ - '0');
            fd++;
        }
        ok = ok && fd > 0;
    }
    ok = ok && p == val + n - (pct ? 1 : 0);
    uint64_t v = whole * scale + frac;
    if (!ok)
        return oc_conf_bad(why,
                           "'%s' is not a share (e.g. 0.001 or 0.1%%, at most 6 "
                           "decimal places of a whole)",
                           oc_conf_show(val, shown));
    if (v > k->max)
        return oc_conf_bad(why, "'%s' is out of range (0..1, or 0%%..100%%)",
                           oc_conf_show(val, shown));
    *(uint32_t *)(void *)(base + k->off) = (uint32_t)v;
    return OC_OK;
}

/* A list of durations, each 1s..1h, strictly increasing, at most
 * OC_SAMPLE_WINDOWS_MAX. */
static oc_status_t oc_conf_set_windows(const oc_conf_key_t *k, char *base,
                                       const char *val, char *why)
{
    char shown[OC_CONF_SHOWBUF], item[32];
    uint32_t ms[OC_SAMPLE_WINDOWS_MAX];
    size_t n = 0;
    const char *p = val;
    /* Every comma is followed by a window: "1s, 10s," is refused like
     * "1s,,10s" (and like a trailing comma in columns). */
    while (*val != '\0') {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *s = p;
        oc_conf_trim_span(&s, &len);
        uint64_t v = 0;
        if (len == 0 || len >= sizeof(item))
            return oc_conf_bad(why, "'%s' is not a list of durations (e.g. 1s, 10s, 60s)",
                               oc_conf_show(val, shown));
        memcpy(item, s, len);
        item[len] = '\0';
        if (oc_conf_duration(item, &v) != OC_OK)
            return oc_conf_bad(why, "'%s' is not a duration (e.g. 1s, 10s, 60s)",
                               oc_conf_show(item, shown));
        if (v < OC_MS_S || v > OC_MS_H)
            return oc_conf_bad(why, "'%s' is out of range (1s..1h)",
                               oc_conf_show(item, shown));
        if (n == OC_SAMPLE_WINDOWS_MAX)
            return oc_conf_bad(why, "at most %d windows", OC_SAMPLE_WINDOWS_MAX);
        if (n > 0 && v <= ms[n - 1])
            return oc_conf_bad(why, "'%s': windows must grow from one to the next",
                               oc_conf_show(val, shown));
        ms[n++] = (uint32_t)v;
        if (e == NULL)
            break;
        p = e + 1;
    }
    if (n == 0)
        return oc_conf_bad(why, "at least one window (e.g. 10s)");
    oc_conf_windows_t *w = (oc_conf_windows_t *)(void *)(base + k->off);
    memcpy(w->ms, ms, n * sizeof(*ms));
    w->n = n;
    return OC_OK;
}

/* clang-format off */
static const oc_conf_set_fn oc_conf_setters[] = {
    [OC_CT_LISTEN]    = oc_conf_set_listen,
    [OC_CT_SOCKPATH]  = oc_conf_set_sockpath,
    [OC_CT_USER]      = oc_conf_set_user,
    [OC_CT_PREFIX]    = oc_conf_set_prefix,
    [OC_CT_TIMEZONE]  = oc_conf_set_timezone,
    [OC_CT_LOG_LEVEL] = oc_conf_set_log_level,
    [OC_CT_LOG_TARGET] = oc_conf_set_log_target,
    [OC_CT_CONNINFO]  = oc_conf_set_conninfo,
    [OC_CT_CONNINFO_OPT] = oc_conf_set_conninfo,
    [OC_CT_UINT]      = oc_conf_set_number,
    [OC_CT_SIZE]      = oc_conf_set_number,
    [OC_CT_MSECS]     = oc_conf_set_number,
    [OC_CT_SECS]      = oc_conf_set_number,
    [OC_CT_MODE]      = oc_conf_set_number,
    [OC_CT_KEY_TYPE]  = oc_conf_set_key_type,
    [OC_CT_IDENT]     = oc_conf_set_ident,
    [OC_CT_TABLE]     = oc_conf_set_table,
    [OC_CT_COLUMNS]   = oc_conf_set_columns,
    [OC_CT_SERVERS]   = oc_conf_set_servers,
    [OC_CT_BOOL]      = oc_conf_set_bool,
    [OC_CT_POOL_MODE] = oc_conf_set_pool_mode,
    [OC_CT_RATE]      = oc_conf_set_rate,
    [OC_CT_WINDOWS]   = oc_conf_set_windows,
};
/* clang-format on */

/* ------------------------------------------------------------------ */
/* The INI reader                                                      */

static oc_status_t oc_conf_error(oc_conf_parser_t *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "FILE:LINE: reason", or "FILE: reason" when line is 0. */
static oc_status_t oc_conf_error(oc_conf_parser_t *p, int line, const char *fmt, ...)
{
    const char *path = p->conf->path;
    int n = line > 0 ? snprintf(p->err, OC_ERRLEN, "%s:%d: ", path, line)
                     : snprintf(p->err, OC_ERRLEN, "%s: ", path);
    if (n < 0 || n >= OC_ERRLEN)
        return OC_ECONFIG; /* a path that long leaves no room for a reason */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, OC_ERRLEN - (size_t)n, fmt, ap);
    va_end(ap);
    return OC_ECONFIG;
}

static oc_status_t oc_conf_nomem(oc_conf_parser_t *p)
{
    return oc_fail(p->err, OC_ENOMEM, "out of memory");
}

/* "[objcached]" or "[model User]", for messages. */
static const char *oc_conf_label(const oc_conf_t *conf, oc_conf_sect_t sect, size_t model,
                                 char *buf, size_t len)
{
    if (sect == OC_SECT_MODEL)
        snprintf(buf, len, "[model %s]", conf->models[model].name);
    else
        snprintf(buf, len, "[%s]", oc_conf_sections[sect].name);
    return buf;
}

/* Cuts a ';' or '#' comment that follows whitespace; whole-line comments
 * are gone already. A ';' inside a value ("a;b") is kept. */
static void oc_conf_cut_comment(char *s)
{
    for (size_t i = 1; s[i] != '\0'; i++)
        if ((s[i] == ';' || s[i] == '#') && oc_conf_is_space(s[i - 1])) {
            s[i] = '\0';
            return;
        }
}

static oc_status_t oc_conf_add_model(oc_conf_parser_t *p, const char *name)
{
    oc_conf_t *c = p->conf;
    if (c->nmodels == p->models_cap) {
        size_t cap = p->models_cap == 0 ? 4 : p->models_cap * 2;
        oc_model_conf_t *m = realloc(c->models, cap * sizeof(*m));
        if (m == NULL)
            return oc_conf_nomem(p);
        c->models = m;
        oc_conf_seen_t *seen = realloc(p->model_seen, cap * sizeof(*seen));
        if (seen == NULL)
            return oc_conf_nomem(p);
        p->model_seen = seen;
        p->models_cap = cap;
    }
    oc_model_conf_t *m = &c->models[c->nmodels];
    memset(m, 0, sizeof(*m));
    memset(p->model_seen[c->nmodels], 0, sizeof(oc_conf_seen_t));
    m->line = p->line;
    m->name = strdup(name);
    if (m->name == NULL)
        return oc_conf_nomem(p);
    c->nmodels++;
    p->sect = OC_SECT_MODEL;
    return OC_OK;
}

static oc_status_t oc_conf_model_header(oc_conf_parser_t *p, const char *name)
{
    char shown[OC_CONF_SHOWBUF];
    const oc_conf_t *c = p->conf;
    if (!oc_conf_word_ok(name, strlen(name), OC_MODEL_NAME_MAX))
        return oc_conf_error(p, p->line,
                             "bad model name '%s' (want [model NAME], NAME "
                             "[A-Za-z_][A-Za-z0-9_]{0,63})",
                             oc_conf_show(name, shown));
    for (size_t i = 0; i < c->nmodels; i++)
        if (strcmp(c->models[i].name, name) == 0)
            return oc_conf_error(p, p->line,
                                 "model '%s' is defined twice "
                                 "(first on line %d)",
                                 name, c->models[i].line);
    return oc_conf_add_model(p, name);
}

/* `s` is the trimmed line, starting with '['. */
static oc_status_t oc_conf_header(oc_conf_parser_t *p, char *s)
{
    char shown[OC_CONF_SHOWBUF];
    size_t n = strlen(s);
    if (s[n - 1] != ']')
        return oc_conf_error(p, p->line, "section header '%s' does not end with ']'",
                             oc_conf_show(s, shown));
    s[n - 1] = '\0';
    const char *name = s + 1;
    if (strncmp(name, "model ", 6) == 0)
        return oc_conf_model_header(p, name + 6);
    if (strcmp(name, "model") == 0)
        return oc_conf_model_header(p, ""); /* says how to name it */
    for (int i = 0; i < OC_SECT_FIXED; i++) {
        if (strcmp(name, oc_conf_sections[i].name) != 0)
            continue;
        if (p->sect_line[i] != 0)
            return oc_conf_error(p, p->line,
                                 "section [%s] is given twice "
                                 "(first on line %d)",
                                 name, p->sect_line[i]);
        p->sect_line[i] = p->line;
        p->sect = (oc_conf_sect_t)i;
        return OC_OK;
    }
    return oc_conf_error(p, p->line,
                         "unknown section '[%s]' (want [objcached], "
                         "[memcached], [postgresql] or [model NAME])",
                         oc_conf_show(name, shown));
}

static const oc_conf_key_t *oc_conf_find_key(oc_conf_sect_t sect, const char *name,
                                             size_t *idx)
{
    const oc_conf_section_t *s = &oc_conf_sections[sect];
    for (size_t i = 0; i < s->nkeys; i++)
        if (strcmp(s->keys[i].name, name) == 0) {
            *idx = i;
            return &s->keys[i];
        }
    return NULL;
}

/* Where the current section's values go, and its seen lines. */
static char *oc_conf_base(oc_conf_parser_t *p, int **seen)
{
    if (p->sect == OC_SECT_MODEL) {
        *seen = p->model_seen[p->conf->nmodels - 1];
        return (char *)&p->conf->models[p->conf->nmodels - 1];
    }
    *seen = p->fixed_seen[p->sect];
    return (char *)p->conf;
}

/* Runs a setter and turns its reason into "FILE:LINE: key: reason". */
static oc_status_t oc_conf_apply(oc_conf_parser_t *p, const oc_conf_key_t *k, char *base,
                                 const char *val, int line)
{
    char why[OC_ERRLEN];
    oc_status_t st = oc_conf_setters[k->type](k, base, val, why);
    if (st == OC_ENOMEM)
        return oc_conf_nomem(p);
    if (st != OC_OK)
        return oc_conf_error(p, line, "%s: %s", k->name, why);
    return OC_OK;
}

static oc_status_t oc_conf_warn(oc_conf_parser_t *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A warning for whoever loads the file (main logs them, --check-config
 * prints them): the file is valid, but something in it does nothing. */
static oc_status_t oc_conf_warn(oc_conf_parser_t *p, const char *fmt, ...)
{
    oc_conf_t *c = p->conf;
    char **w = realloc(c->warnings, (c->nwarnings + 1) * sizeof(*w));
    if (w == NULL)
        return oc_conf_nomem(p);
    c->warnings = w;
    char buf[OC_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if ((w[c->nwarnings] = strdup(buf)) == NULL)
        return oc_conf_nomem(p);
    c->nwarnings++;
    return OC_OK;
}

static oc_status_t oc_conf_key_line(oc_conf_parser_t *p, const char *key, const char *val)
{
    char shown[OC_CONF_SHOWBUF], label[OC_MODEL_NAME_MAX + 16];
    const oc_conf_key_t *k;
    size_t idx = 0;
    int *seen;
    if (p->sect == OC_SECT_NONE)
        return oc_conf_error(p, p->line, "key '%s' is outside any section",
                             oc_conf_show(key, shown));
    oc_conf_label(p->conf, p->sect, p->sect == OC_SECT_MODEL ? p->conf->nmodels - 1 : 0,
                  label, sizeof(label));
    k = oc_conf_find_key(p->sect, key, &idx);
    if (k == NULL)
        return oc_conf_error(p, p->line, "unknown key '%s' in %s",
                             oc_conf_show(key, shown), label);
    char *base = oc_conf_base(p, &seen);
    if (seen[idx] != 0)
        return oc_conf_error(p, p->line, "duplicate key '%s' in %s (first on line %d)",
                             key, label, seen[idx]);
    seen[idx] = p->line;
    oc_status_t st = oc_conf_apply(p, k, base, val, p->line);
    if (st == OC_OK && k->deprecated)
        st = oc_conf_warn(p, "%s:%d: %s in %s is deprecated: %s", p->conf->path, p->line,
                          k->name, label, k->deprecated);
    return st;
}

static oc_status_t oc_conf_line(oc_conf_parser_t *p, char *line)
{
    char *s = oc_conf_trim(line);
    if (*s == '\0' || *s == ';' || *s == '#')
        return OC_OK;
    oc_conf_cut_comment(s);
    s = oc_conf_trim(s);
    if (*s == '[')
        return oc_conf_header(p, s);
    char *eq = strchr(s, '=');
    if (eq == NULL)
        return oc_conf_error(p, p->line,
                             "expected 'key = value', '[section]' or a "
                             "comment");
    *eq = '\0';
    char *key = oc_conf_trim(s);
    if (*key == '\0')
        return oc_conf_error(p, p->line, "no key before '='");
    return oc_conf_key_line(p, key, oc_conf_trim(eq + 1));
}

static int oc_conf_line_of(const char *text, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off; i++)
        line += text[i] == '\n';
    return line;
}

static oc_status_t oc_conf_lines(oc_conf_parser_t *p, const char *text, size_t len)
{
    /* Zeroed once so that no analyser doubts the bytes it reads were set. */
    char line[OC_CONF_LINE_MAX + 1] = {0};
    size_t pos = 0;
    const char *nul = memchr(text, '\0', len);
    if (nul != NULL)
        return oc_conf_error(p, oc_conf_line_of(text, (size_t)(nul - text)),
                             "NUL byte in the file");
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3; /* a UTF-8 BOM, as some editors write */
    while (pos < len) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - start) : len - pos;
        pos += n + (nl != NULL);
        p->line++;
        if (n > 0 && start[n - 1] == '\r')
            n--;
        if (n > OC_CONF_LINE_MAX)
            return oc_conf_error(p, p->line, "line is longer than %d bytes",
                                 OC_CONF_LINE_MAX);
        memcpy(line, start, n);
        line[n] = '\0';
        oc_status_t st = oc_conf_line(p, line);
        if (st != OC_OK)
            return st;
    }
    return OC_OK;
}

/* Defaults for the keys a section did not set, and its required keys.
 * `line` is the line to blame (0 for the fixed sections). */
static oc_status_t oc_conf_finish_section(oc_conf_parser_t *p, oc_conf_sect_t sect,
                                          size_t model, const int *seen, int line)
{
    char label[OC_MODEL_NAME_MAX + 16];
    const oc_conf_section_t *s = &oc_conf_sections[sect];
    char *base =
        sect == OC_SECT_MODEL ? (char *)&p->conf->models[model] : (char *)p->conf;
    for (size_t i = 0; i < s->nkeys; i++) {
        const oc_conf_key_t *k = &s->keys[i];
        if (seen[i] != 0 || (k->def == NULL && !k->required))
            continue;
        if (k->required)
            return oc_conf_error(
                p, line, "missing required key '%s' in %s", k->name,
                oc_conf_label(p->conf, sect, model, label, sizeof(label)));
        oc_status_t st = oc_conf_apply(p, k, base, k->def, line);
        if (st != OC_OK)
            return st; /* a bad default: the unit tests catch this */
    }
    return OC_OK;
}

static bool oc_conf_empty(const char *s)
{
    return s == NULL || *s == '\0';
}

/* The line key `name` of a fixed section was set on (0 if it was not). */
static int oc_conf_seen_line(const oc_conf_parser_t *p, oc_conf_sect_t sect,
                             const char *name)
{
    size_t idx = 0;
    return oc_conf_find_key(sect, name, &idx) ? p->fixed_seen[sect][idx] : 0;
}

/* A gutter server that is also in `list` (named `key`), refused. */
static oc_status_t oc_conf_gutter_not_in(oc_conf_parser_t *p,
                                         const oc_mc_server_conf_t *list, size_t n,
                                         const char *key)
{
    const oc_conf_t *c = p->conf;
    char shown[OC_CONF_SHOWBUF];
    for (size_t g = 0; g < c->ngutter; g++)
        for (size_t i = 0; i < n; i++)
            if (c->gutter[g].port == list[i].port &&
                strcasecmp(c->gutter[g].host, list[i].host) == 0)
                return oc_conf_error(
                    p, oc_conf_seen_line(p, OC_SECT_MEMCACHED, "gutter"),
                    "gutter: server '%s' port %u is also in %s (a gutter pool must be "
                    "other memcached servers)",
                    oc_conf_show(c->gutter[g].host, shown), c->gutter[g].port, key);
    return OC_OK;
}

/* [memcached] as a whole: a gutter server must not be a server of the
 * pool (its keys would be written there as failover entries with a short
 * TTL, and a flush of it on return would empty part of the pool), nor of
 * servers_previous (the pool before or after a change, whose servers are
 * flushed by no failover rule). */
static oc_status_t oc_conf_check_gutter(oc_conf_parser_t *p)
{
    const oc_conf_t *c = p->conf;
    oc_status_t st = oc_conf_gutter_not_in(p, c->servers, c->nservers, "servers");
    if (st != OC_OK)
        return st;
    return oc_conf_gutter_not_in(p, c->servers_previous, c->nservers_previous,
                                 "servers_previous");
}

/* A model's refresh_ahead must leave the entry some time as a plain hit:
 * at or above its ttl, every read of a fresh entry would reload it. And
 * memcached compares it with the entry's remaining TTL in whole seconds,
 * at least 1 for a live entry: 1 s would never refresh anything. */
static oc_status_t oc_conf_check_refresh(oc_conf_parser_t *p, size_t m)
{
    const oc_model_conf_t *md = &p->conf->models[m];
    if (md->refresh_ahead_s == 1) /* memcached: remaining whole seconds < 1 */
        return oc_conf_error(p, md->line,
                             "refresh_ahead (1s) would never refresh: memcached counts "
                             "whole seconds, so use 0 (off) or at least 2s in [model %s]",
                             md->name);
    if (md->refresh_ahead_s == 0 || md->refresh_ahead_s < md->ttl_s)
        return OC_OK;
    return oc_conf_error(p, md->line,
                         "refresh_ahead (%us) must be shorter than ttl (%us) in "
                         "[model %s]",
                         md->refresh_ahead_s, md->ttl_s, md->name);
}

/* Whether addresses x and y (one port) would fight over it: the same
 * address, or a wildcard that covers the other (0.0.0.0 any IPv4 address;
 * [::] any address, IPv4 too, as Linux binds it dual-stack by default). */
/* An address as overlap compares it: an IPv4-mapped IPv6 address
 * ([::ffff:127.0.0.1]) is its IPv4 address, which a socket bound to it
 * also takes (a probe: listen on the mapped form and metrics_listen on
 * 127.0.0.1 passed --check-config, then the start failed). 0: neither. */
static int oc_conf_addr_norm(const struct addrinfo *a, struct in6_addr *v6, uint32_t *v4)
{
    if (a->ai_family == AF_INET6 && a->ai_addrlen >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 s6;
        memcpy(&s6, a->ai_addr, sizeof(s6));
        if (!IN6_IS_ADDR_V4MAPPED(&s6.sin6_addr)) {
            *v6 = s6.sin6_addr;
            return AF_INET6;
        }
        memcpy(v4, &s6.sin6_addr.s6_addr[12], 4);
        return AF_INET;
    }
    if (a->ai_family == AF_INET && a->ai_addrlen >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in s4;
        memcpy(&s4, a->ai_addr, sizeof(s4));
        *v4 = s4.sin_addr.s_addr;
        return AF_INET;
    }
    return 0;
}

static bool oc_conf_addr_overlap(const struct addrinfo *x, const struct addrinfo *y)
{
    struct in6_addr x6 = IN6ADDR_ANY_INIT, y6 = IN6ADDR_ANY_INIT;
    uint32_t x4 = 0, y4 = 0;
    int fx = oc_conf_addr_norm(x, &x6, &x4), fy = oc_conf_addr_norm(y, &y6, &y4);
    /* [::] takes IPv4 too (where bindv6only is off, Linux's default) */
    if ((fx == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&x6)) ||
        (fy == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&y6)))
        return true;
    if (fx == 0 || fx != fy)
        return false;
    if (fx == AF_INET6)
        return IN6_ARE_ADDR_EQUAL(&x6, &y6);
    return x4 == y4 || x4 == INADDR_ANY || y4 == INADDR_ANY;
}

/* The addresses a listener at host may bind, as the listeners resolve it
 * (oc_listen.c binds the first, oc_metrics.c the first that binds); NULL
 * when it does not resolve (the start tells). */
static struct addrinfo *oc_conf_listen_addrs(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    return getaddrinfo(host, port, &hints, &ai) == 0 ? ai : NULL;
}

/* Whether listeners at host:port values a and b (both valid) would fight
 * over one port, or share it ambiguously: any address one may bind
 * overlaps any the other may (oc_conf_addr_overlap). Names are resolved,
 * only when the ports are equal: "localhost" is 127.0.0.1 and, where the
 * hosts file says so, [::1]; compared as written, localhost:P beside
 * 127.0.0.1:P passed, and on such a host bound [::1]:P, so that a client
 * of localhost:P reached either listener. A name that does not resolve is
 * compared as written (0.0.0.0 covers it; the start tells the rest). */
static bool oc_conf_listen_overlap(const char *a, const char *b)
{
    char ca[OC_CONF_LINE_MAX + 1], cb[OC_CONF_LINE_MAX + 1];
    char *ha, *hb, *pa, *pb;
    uint32_t porta = 0, portb = 0;
    snprintf(ca, sizeof(ca), "%s", a);
    snprintf(cb, sizeof(cb), "%s", b);
    if (oc_conf_split_host(ca, &ha, &pa) != OC_OK ||
        oc_conf_split_host(cb, &hb, &pb) != OC_OK ||
        oc_conf_small_uint(pa, 1, 65535, &porta) != OC_OK ||
        oc_conf_small_uint(pb, 1, 65535, &portb) != OC_OK || porta != portb)
        return false;
    struct addrinfo *ra = oc_conf_listen_addrs(ha, pa);
    struct addrinfo *rb = oc_conf_listen_addrs(hb, pb);
    bool overlap = false;
    if (ra != NULL && rb != NULL) {
        for (const struct addrinfo *x = ra; x != NULL && !overlap; x = x->ai_next)
            for (const struct addrinfo *y = rb; y != NULL && !overlap; y = y->ai_next)
                overlap = oc_conf_addr_overlap(x, y);
    } else {
        overlap = strcasecmp(ha, hb) == 0 || strcmp(ha, "0.0.0.0") == 0 ||
                  strcmp(hb, "0.0.0.0") == 0 || strcmp(ha, "::") == 0 ||
                  strcmp(hb, "::") == 0;
    }
    if (ra != NULL)
        freeaddrinfo(ra);
    if (rb != NULL)
        freeaddrinfo(rb);
    return overlap;
}

/* [objcached] as a whole: the /metrics listener on the client listener's
 * port passed the file, and then the start failed to bind it. */
static oc_status_t oc_conf_check_listeners(oc_conf_parser_t *p)
{
    const oc_conf_t *c = p->conf;
    char shown_m[OC_CONF_SHOWBUF], shown_l[OC_CONF_SHOWBUF];
    if (oc_conf_empty(c->metrics_listen) || oc_conf_empty(c->listen) ||
        !oc_conf_listen_overlap(c->metrics_listen, c->listen))
        return OC_OK;
    return oc_conf_error(p, oc_conf_seen_line(p, OC_SECT_OBJCACHED, "metrics_listen"),
                         "metrics_listen (%s) and listen (%s) are the same port on the "
                         "same address (names resolved; or one's wildcard address covers "
                         "the other's): "
                         "both cannot bind it; give metrics_listen another port",
                         oc_conf_show(c->metrics_listen, shown_m),
                         oc_conf_show(c->listen, shown_l));
}

/* wal_feed_keys = off is valid, but says something the file may not mean:
 * it does nothing without wal = on, and with near-caches it drops each
 * written model from all of them at every heartbeat (oc_walowed.h). */
static oc_status_t oc_conf_check_feed_keys(oc_conf_parser_t *p)
{
    const oc_conf_t *c = p->conf;
    int line = oc_conf_seen_line(p, OC_SECT_POSTGRESQL, "wal_feed_keys");
    if (!c->wal)
        return oc_conf_warn(
            p,
            "%s:%d: wal_feed_keys = off does nothing with wal = off: only "
            "the WAL holder appends to the feed",
            c->path, line);
    for (size_t m = 0; m < c->nmodels; m++)
        if (c->models[m].near_ttl_ms > 0 && c->near_cache_size > 0)
            return oc_conf_warn(
                p,
                "%s:%d: wal_feed_keys = off with near-caches (model %s has near_ttl): "
                "while this sidecar holds the slot, every sidecar's near-cache drops a "
                "written model whole at each wal_heartbeat instead of its written keys",
                c->path, line, c->models[m].name);
    return OC_OK;
}

/* The near-cache serves only while the feed's caught_up_at, as this sidecar
 * last read it (every feed_poll), is within feed_max_lag, and caught_up_at
 * moves at each heartbeat: the consumers' claims (invalidation_poll) in
 * trigger mode, the holder's wal_heartbeat with the WAL (twice it: the
 * docs' "well under"). A bound no larger than the two together switches
 * the near-cache off and on between them (near_flushes), with nothing said
 * (a probe's finding). A warning: another sidecar's consumer may beat
 * faster. Said at feed_max_lag's line, or at [postgresql]'s when it is
 * not set. */
static oc_status_t oc_conf_check_feed_lag(oc_conf_parser_t *p)
{
    const oc_conf_t *c = p->conf;
    int near = 0;
    for (size_t m = 0; m < c->nmodels; m++)
        near |= c->models[m].near_ttl_ms > 0;
    if (!near || c->near_cache_size == 0 || c->feed_poll_ms == 0)
        return OC_OK;
    const char *beat_name = c->wal ? "twice wal_heartbeat" : "invalidation_poll";
    uint64_t beat = c->wal ? 2ULL * c->wal_heartbeat_ms : c->inval_poll_ms;
    if (beat + c->feed_poll_ms < c->feed_max_lag_ms)
        return OC_OK;
    int line = oc_conf_seen_line(p, OC_SECT_POSTGRESQL, "feed_max_lag");
    if (line == 0)
        line = p->sect_line[OC_SECT_POSTGRESQL];
    return oc_conf_warn(
        p,
        "%s:%d: feed_max_lag (%u ms) is not above the feed's heartbeat (%s, "
        "%llu ms) plus feed_poll (%u ms): the near-cache would go off and on "
        "between them",
        c->path, line, c->feed_max_lag_ms, beat_name, (unsigned long long)beat,
        c->feed_poll_ms);
}

/* Checks that need the whole file. */
static oc_status_t oc_conf_finish(oc_conf_parser_t *p)
{
    oc_conf_t *c = p->conf;
    oc_status_t st = OC_OK;
    for (int i = 0; i < OC_SECT_FIXED && st == OC_OK; i++)
        st = oc_conf_finish_section(p, (oc_conf_sect_t)i, 0, p->fixed_seen[i], 0);
    if (st != OC_OK)
        return st;
    if (oc_conf_empty(c->listen) && oc_conf_empty(c->unix_socket))
        return oc_conf_error(p, 0,
                             "listen and unix_socket are both empty; set at "
                             "least one in [objcached]");
    if ((st = oc_conf_check_listeners(p)) != OC_OK)
        return st;
    if (c->wal && c->feed_poll_ms == 0)
        return oc_conf_error(
            p, p->sect_line[OC_SECT_POSTGRESQL],
            "wal = on needs the feed (feed_poll above 0): the other "
            "sidecars and the generations follow the WAL reader through it");
    if (c->wal && c->pg_txn_pool && c->wal_conninfo[0] == '\0')
        return oc_conf_error(
            p, p->sect_line[OC_SECT_POSTGRESQL],
            "wal = on with pool_mode = transaction needs wal_conninfo: the WAL reader's "
            "replication stream and its session cannot go through a pooler, so it "
            "connects to PostgreSQL directly");
    if (c->wal && c->inval_poll_ms == 0)
        return oc_conf_error(
            p, p->sect_line[OC_SECT_POSTGRESQL],
            "wal = on needs invalidation_poll above 0: the WAL holder retries the "
            "memcached deletes that failed through the outbox");
    if (c->near_cache_size > 0 && c->near_cache_size < OC_NEAR_MIN_SIZE)
        return oc_conf_error(
            p, oc_conf_seen_line(p, OC_SECT_OBJCACHED, "near_cache_size"),
            "near_cache_size (%u bytes) is below 1m: the near-cache's own tables take "
            "about 650k of it and would leave no room for objects; use 0 (off) or at "
            "least 1m",
            c->near_cache_size);
    if (c->nmodels == 0)
        return oc_conf_error(p, 0,
                             "no [model NAME] section; at least one model is "
                             "required");
    for (size_t m = 0; m < c->nmodels && st == OC_OK; m++)
        st = oc_conf_finish_section(p, OC_SECT_MODEL, m, p->model_seen[m],
                                    c->models[m].line);
    for (size_t m = 0; m < c->nmodels && st == OC_OK; m++)
        st = oc_conf_check_refresh(p, m);
    if (st == OC_OK && !c->wal_feed_keys)
        st = oc_conf_check_feed_keys(p);
    if (st == OC_OK)
        st = oc_conf_check_feed_lag(p);
    size_t rate_idx = 0;
    if (oc_conf_find_key(OC_SECT_MODEL, "sample_rate", &rate_idx))
        for (size_t m = 0; m < c->nmodels; m++)
            if (p->model_seen[m][rate_idx] == 0)
                c->models[m].sample_ppm = c->sample_ppm;
    return st == OC_OK ? oc_conf_check_gutter(p) : st;
}

static oc_conf_t *oc_conf_load_text(const char *path, const char *text, size_t len,
                                    char *err)
{
    char dummy[OC_ERRLEN];
    oc_conf_parser_t p = {.err = dummy, .sect = OC_SECT_NONE};
    if (err != NULL)
        p.err = err;
    p.conf = calloc(1, sizeof(*p.conf));
    if (p.conf == NULL || (p.conf->path = strdup(path)) == NULL) {
        oc_conf_nomem(&p);
        goto fail;
    }
    if (len > OC_CONF_FILE_MAX) {
        oc_conf_error(&p, 0, "file too large (over %zu bytes)", OC_CONF_FILE_MAX);
        goto fail;
    }
    if (oc_conf_lines(&p, text, len) != OC_OK || oc_conf_finish(&p) != OC_OK)
        goto fail;
    free(p.model_seen);
    return p.conf;
fail:
    free(p.model_seen);
    oc_conf_free(p.conf);
    return NULL;
}

oc_conf_t *oc_conf_load_string(const char *text, size_t len, char *err)
{
    if (text == NULL && len != 0) {
        oc_fail(err, OC_EINVAL, "<string>: no text");
        return NULL;
    }
    return oc_conf_load_text("<string>", text != NULL ? text : "", len, err);
}

/* Reads at most OC_CONF_FILE_MAX + 1 bytes: enough for the parser to tell
 * a file that is too large, without reading all of a huge one. */
static char *oc_conf_read(const char *path, size_t *len, char *err)
{
    char ebuf[128];
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        oc_fail(err, OC_EIO, "%s: cannot open: %s", path,
                strerror_r(errno, ebuf, sizeof(ebuf)));
        goto fail;
    }
    buf = malloc(OC_CONF_FILE_MAX + 1);
    if (buf == NULL) {
        oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    *len = fread(buf, 1, OC_CONF_FILE_MAX + 1, f);
    if (ferror(f)) {
        oc_fail(err, OC_EIO, "%s: cannot read: %s", path,
                strerror_r(errno, ebuf, sizeof(ebuf)));
        goto fail;
    }
    fclose(f);
    return buf;
fail:
    free(buf);
    if (f != NULL)
        fclose(f);
    return NULL;
}

oc_conf_t *oc_conf_load_file(const char *path, char *err)
{
    size_t len = 0;
    if (path == NULL) {
        oc_fail(err, OC_EINVAL, "no configuration file given");
        return NULL;
    }
    char *text = oc_conf_read(path, &len, err);
    if (text == NULL)
        return NULL;
    oc_conf_t *conf = oc_conf_load_text(path, text, len, err);
    free(text);
    return conf;
}

static void oc_conf_free_model(oc_model_conf_t *m)
{
    free(m->name);
    free(m->schema);
    free(m->table);
    free(m->key_column);
    free(m->version_column);
    oc_conf_free_strv(m->columns, m->ncolumns);
}

void oc_conf_free(oc_conf_t *conf)
{
    if (conf == NULL)
        return;
    free(conf->path);
    free(conf->listen);
    free(conf->unix_socket);
    free(conf->key_prefix);
    free(conf->timezone);
    free(conf->log_level);
    free(conf->user);
    free(conf->log_target);
    free(conf->metrics_listen);
    oc_conf_free_servers(conf->servers, conf->nservers);
    oc_conf_free_servers(conf->gutter, conf->ngutter);
    oc_conf_free_servers(conf->servers_previous, conf->nservers_previous);
    free(conf->conninfo);
    free(conf->feed_conninfo);
    free(conf->wal_slot);
    free(conf->wal_conninfo);
    for (size_t i = 0; i < conf->nmodels; i++)
        oc_conf_free_model(&conf->models[i]);
    free(conf->models);
    oc_conf_free_strv(conf->warnings, conf->nwarnings);
    free(conf);
}

/* 1 if key k holds the same value in a and b. Only the types of fixed
 * sections' keys are compared (models are always reloadable). */
static bool oc_conf_same(const oc_conf_key_t *k, const oc_conf_t *a, const oc_conf_t *b)
{
    const char *x = (const char *)a + k->off, *y = (const char *)b + k->off;
    switch (k->type) {
    case OC_CT_UINT:
    case OC_CT_SIZE:
    case OC_CT_MSECS:
    case OC_CT_SECS:
    case OC_CT_MODE:
        return *(const uint32_t *)(const void *)x == *(const uint32_t *)(const void *)y;
    case OC_CT_BOOL:
    case OC_CT_POOL_MODE:
        return *(const int *)(const void *)x == *(const int *)(const void *)y;
    case OC_CT_RATE:
        return *(const uint32_t *)(const void *)x == *(const uint32_t *)(const void *)y;
    case OC_CT_WINDOWS: {
        const oc_conf_windows_t *wx = (const void *)x, *wy = (const void *)y;
        return wx->n == wy->n && memcmp(wx->ms, wy->ms, wx->n * sizeof(*wx->ms)) == 0;
    }
    case OC_CT_SERVERS:
    case OC_CT_COLUMNS:
    case OC_CT_TABLE:
    case OC_CT_KEY_TYPE:
        return false; /* not in a fixed section; never marked restart */
    default: {
        const char *sx = *(char *const *)(const void *)x,
                   *sy = *(char *const *)(const void *)y;
        return strcmp(sx ? sx : "", sy ? sy : "") == 0;
    }
    }
}

const char *oc_conf_restart_key(const oc_conf_t *a, const oc_conf_t *b)
{
    for (int sect = 0; sect < OC_SECT_FIXED; sect++) {
        const oc_conf_section_t *s = &oc_conf_sections[sect];
        for (size_t i = 0; i < s->nkeys; i++)
            if (s->keys[i].restart && !oc_conf_same(&s->keys[i], a, b))
                return s->keys[i].name;
    }
    return NULL;
}

void oc_conf_describe(FILE *out)
{
    for (int sect = 0; sect <= OC_SECT_MODEL; sect++) {
        const oc_conf_section_t *s = &oc_conf_sections[sect];
        for (size_t i = 0; i < s->nkeys; i++) {
            const oc_conf_key_t *k = &s->keys[i];
            fprintf(out, "%s\t%s\t%s\t%s\n",
                    sect == OC_SECT_MODEL ? "model NAME" : s->name, k->name,
                    k->required ? "(required)"
                    : k->def    ? k->def
                                : "(none)",
                    k->deprecated ? "deprecated"
                    : k->restart  ? "restart"
                                  : "reload");
        }
    }
}

const oc_model_conf_t *oc_conf_model(const oc_conf_t *conf, const char *name, size_t len)
{
    if (conf == NULL || name == NULL)
        return NULL;
    /* Once per key of every get: a byte loop over a short name, where
     * strlen and memcmp were two calls per model. */
    for (size_t i = 0; i < conf->nmodels; i++) {
        const oc_model_conf_t *m = &conf->models[i];
        if (m->disabled)
            continue;
        size_t k = 0;
        while (k < len && m->name[k] != '\0' && m->name[k] == name[k])
            k++;
        if (k == len && m->name[k] == '\0')
            return m;
    }
    return NULL;
}

const char *oc_key_type_name(oc_key_type_t t)
{
    if ((unsigned)t >= OC_KEY_TYPE_COUNT)
        return "unknown";
    return oc_key_type_names[t];
}

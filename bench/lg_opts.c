/* lg_opts: see lg_opts.h. */
#include "lg_opts.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define LG_MAX_K       100000u
#define LG_MAX_THREADS 4096u

static const struct {
    const char *name;
    lg_mode_t mode;
} mode_table[] = {
    {"get", LG_MODE_GET}, {"hand", LG_MODE_HAND},   {"n1", LG_MODE_N1},
    {"sql", LG_MODE_SQL}, {"conns", LG_MODE_CONNS}, {"delete", LG_MODE_DELETE},
};

void lg_opts_usage(FILE *out)
{
    fputs(
        "usage: objcached-loadgen MODE [options]\n"
        "\n"
        "MODE:\n"
        "  get     get-multi of K keys per batch against --servers; check the values\n"
        "  hand    get-multi; ONE = ANY query for the misses; set-multi them back\n"
        "          (pipelined, noreply, TTL 3600)\n"
        "  n1      like hand, but one query per missing key (the N+1 pattern)\n"
        "  sql     only the = ANY query of the K ids, no memcached\n"
        "  conns   open --conns N connections to the first server, send version on\n"
        "          each, print {\"mode\":\"conns\",\"open\":N}, hold them until stdin\n"
        "          reaches EOF or --duration elapses\n"
        "  delete  delete prefix+id for every id of --ids A:B (pipelined, noreply)\n"
        "\n"
        "options:\n"
        "  --servers LIST   host:port[:weight],... or a unix socket path (/path);\n"
        "                   several servers form a ketama pool set up as objcached's\n"
        "  --prefix STR     key = STR + decimal id\n"
        "  --pg CONNINFO    libpq conninfo (hand, n1, sql); one connection per thread\n"
        "  --table NAME     default items\n"
        "  -K N             keys per batch (default 10)\n"
        "  -C N             threads (default 1)\n"
        "  --duration SEC   seconds to measure (default 5, or no limit with --batches)\n"
        "  --batches N      stop after N measured batches in all (whichever first)\n"
        "  --warmup SEC     run this long before measuring (default 0)\n"
        "  --seed N         default 1; thread i uses seed*1000+i\n"
        "  --keys SPEC      seq:A:B | uniform:A:B | zipf:A:B:S | fixed:A\n"
        "  --cold seq:A:B   with --hit-rate F: each key comes from --keys with\n"
        "                   probability F, else from this cursor (never asked before)\n"
        "  --hit-rate F     0..1\n"
        "  --barrier        all threads start their first batch at the same moment\n"
        "                   (always so: setup ends at a common start line)\n"
        "  --binary         speak memcached's binary protocol (libmemcached's\n"
        "                   BINARY_PROTOCOL: a get-multi is a GETKQ per key, then\n"
        "                   NOOP); default the text protocol\n"
        "  --repeat N       ask each batch's ids N times in a row (default 1); each\n"
        "                   ask is measured as a batch, but --batches counts distinct\n"
        "                   ones (N x --batches asks). With N = 2 every key is offered\n"
        "                   twice, which is what objcached's near-cache admits\n"
        "  --rate N         each thread starts at most N batches a second, paced\n"
        "                   (batch i no earlier than start + i/N); default no limit\n"
        "  --max-latency-samples N  per thread (default 1000000; reservoir beyond)\n"
        "  --csv-label STR  echoed as \"label\"\n"
        "  --conns N        connections to open (conns)\n"
        "  --ids A:B        ids to delete (delete)\n"
        "  -h, --help       this text\n"
        "\n"
        "Prints one JSON line on stdout at the end; progress on stderr. Exit 0 when\n"
        "the run completed, 1 when a batch had an error or a wrong value, 2 on a\n"
        "usage error.\n",
        out);
}

static lg_parse_result_t fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static lg_parse_result_t fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return LG_PARSE_ERROR;
}

/* Copies src into dst[size]; false (and nothing copied) if it does not fit. */
static bool copy_str(char *dst, size_t size, const char *src)
{
    size_t len = strlen(src);
    if (len >= size)
        return false;
    memcpy(dst, src, len + 1);
    return true;
}

/* Whole-string unsigned decimal in [min, max]. */
static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double min, double max, double *out)
{
    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Splits s (a writable copy) at ':' into fields; returns their count, or
 * max + 1 when there are more than max. Every one of the max slots is set:
 * those past the count are NULL (which parse_u64 and parse_double reject), so
 * no caller can read an indeterminate pointer, whatever count it checks. */
static size_t split_colons(char *s, char **fields, size_t max)
{
    for (size_t i = 0; i < max; i++)
        fields[i] = NULL;
    size_t n = 0;
    for (char *p = s;;) {
        if (n == max)
            return max + 1;
        fields[n++] = p;
        p = strchr(p, ':');
        if (p == NULL)
            return n;
        *p++ = '\0';
    }
}

static bool parse_range(char *a, char *b, lg_keyspec_t *ks)
{
    return parse_u64(a, 0, INT64_MAX, &ks->lo) && parse_u64(b, 0, INT64_MAX, &ks->hi) &&
           ks->lo <= ks->hi;
}

/* SPEC as in the usage; fixed:A gets its hi once K is known. */
static bool parse_keyspec(const char *spec, lg_keyspec_t *ks)
{
    char copy[256];
    char *f[5];
    if (!copy_str(copy, sizeof(copy), spec))
        return false;
    size_t n = split_colons(copy, f, 5);
    memset(ks, 0, sizeof(*ks));
    if (strcmp(f[0], "seq") == 0 && n == 3) {
        ks->kind = LG_KEYS_SEQ;
        return parse_range(f[1], f[2], ks);
    }
    if (strcmp(f[0], "uniform") == 0 && n == 3) {
        ks->kind = LG_KEYS_UNIFORM;
        return parse_range(f[1], f[2], ks);
    }
    if (strcmp(f[0], "zipf") == 0 && n == 4) {
        ks->kind = LG_KEYS_ZIPF;
        return parse_range(f[1], f[2], ks) && parse_double(f[3], 0.0, 100.0, &ks->s) &&
               ks->s > 0.0;
    }
    if (strcmp(f[0], "fixed") == 0 && n == 2) {
        ks->kind = LG_KEYS_FIXED;
        return parse_u64(f[1], 0, INT64_MAX - LG_MAX_K, &ks->lo);
    }
    return false;
}

uint64_t lg_keyspec_size(const lg_keyspec_t *ks)
{
    return ks->hi - ks->lo + 1;
}

/* One item of --servers: /path, host:port[:weight] or [v6addr]:port[:weight]. */
static bool parse_server(const char *item, lg_server_t *s)
{
    memset(s, 0, sizeof(*s));
    s->weight = 1;
    if (item[0] == '/') {
        return copy_str(s->host, sizeof(s->host), item);
    }
    char copy[300];
    if (!copy_str(copy, sizeof(copy), item))
        return false;
    char *host = copy, *rest;
    if (copy[0] == '[') { /* [v6addr]: libmemcached wants the bare address */
        char *close = strchr(copy, ']');
        if (close == NULL || close[1] != ':')
            return false;
        *close = '\0';
        host = copy + 1;
        rest = close + 2;
    } else {
        rest = strchr(copy, ':');
        if (rest == NULL)
            return false;
        *rest++ = '\0';
    }
    char *f[2];
    size_t n = split_colons(rest, f, 2);
    uint64_t port, weight = 1;
    if (n > 2 || host[0] == '\0' || !parse_u64(f[0], 1, 65535, &port) ||
        (n == 2 && !parse_u64(f[1], 1, 1000000, &weight)) ||
        !copy_str(s->host, sizeof(s->host), host))
        return false;
    s->port = (unsigned)port;
    s->weight = (uint32_t)weight;
    return true;
}

static bool parse_servers(const char *list, lg_opts_t *o)
{
    const char *p = list;
    o->nservers = 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        char item[300];
        if (len == 0 || len >= sizeof(item) || o->nservers == LG_MAX_SERVERS)
            return false;
        memcpy(item, p, len);
        item[len] = '\0';
        if (!parse_server(item, &o->servers[o->nservers++]))
            return false;
        p += len;
        if (*p == ',')
            p++;
    }
    return o->nservers > 0;
}

/* A key prefix must keep keys valid in the ASCII protocol. */
static bool prefix_ok(const char *prefix)
{
    if (strlen(prefix) > LG_PREFIX_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)prefix; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

/* [A-Za-z_][A-Za-z0-9_]* with at most one '.': it is put into SQL as is. */
static bool table_ok(const char *t)
{
    int dots = 0;
    bool start = true;
    for (const char *p = t; *p; p++) {
        char ch = *p;
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        if (ch == '.' && !start && ++dots == 1) {
            start = true;
            continue;
        }
        if (!alpha && (start || ch < '0' || ch > '9'))
            return false;
        start = false;
    }
    return !start && strlen(t) < 128;
}

enum {
    OPT_SERVERS = 256,
    OPT_PREFIX,
    OPT_PG,
    OPT_TABLE,
    OPT_DURATION,
    OPT_BATCHES,
    OPT_WARMUP,
    OPT_SEED,
    OPT_KEYS,
    OPT_COLD,
    OPT_HIT_RATE,
    OPT_BARRIER,
    OPT_BINARY,
    OPT_REPEAT,
    OPT_RATE,
    OPT_MAX_SAMPLES,
    OPT_LABEL,
    OPT_CONNS,
    OPT_IDS,
};

static const struct option long_options[] = {
    {"servers", required_argument, NULL, OPT_SERVERS},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"pg", required_argument, NULL, OPT_PG},
    {"table", required_argument, NULL, OPT_TABLE},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"batches", required_argument, NULL, OPT_BATCHES},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"seed", required_argument, NULL, OPT_SEED},
    {"keys", required_argument, NULL, OPT_KEYS},
    {"cold", required_argument, NULL, OPT_COLD},
    {"hit-rate", required_argument, NULL, OPT_HIT_RATE},
    {"barrier", no_argument, NULL, OPT_BARRIER},
    {"binary", no_argument, NULL, OPT_BINARY},
    {"repeat", required_argument, NULL, OPT_REPEAT},
    {"rate", required_argument, NULL, OPT_RATE},
    {"max-latency-samples", required_argument, NULL, OPT_MAX_SAMPLES},
    {"csv-label", required_argument, NULL, OPT_LABEL},
    {"conns", required_argument, NULL, OPT_CONNS},
    {"ids", required_argument, NULL, OPT_IDS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* What was given, beyond what lg_opts_t holds, for the checks at the end. */
typedef struct seen {
    bool keys, cold, hit_rate, duration, ids;
} seen_t;

static void set_defaults(lg_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->table = "items";
    o->k = 10;
    o->c = 1;
    o->duration = 5.0;
    o->seed = 1;
    o->max_samples = 1000000;
    o->repeat = 1;
}

/* One option; LG_PARSE_ERROR with err set when its value does not parse. */
static lg_parse_result_t take_option(int opt, const char *arg, lg_opts_t *o, seen_t *seen,
                                     char *err, size_t errlen)
{
    uint64_t u;
    switch (opt) {
    case OPT_SERVERS:
        o->servers_arg = arg;
        if (!parse_servers(arg, o))
            return fail(err, errlen,
                        "--servers: '%s' is not host:port[:weight],... or /path", arg);
        return LG_PARSE_OK;
    case OPT_PREFIX:
        o->prefix = arg;
        if (!prefix_ok(arg))
            return fail(err, errlen,
                        "--prefix: at most %d bytes, no spaces or control characters",
                        LG_PREFIX_MAX);
        return LG_PARSE_OK;
    case OPT_PG:
        o->pg = arg;
        return LG_PARSE_OK;
    case OPT_TABLE:
        o->table = arg;
        if (!table_ok(arg))
            return fail(err, errlen, "--table: '%s' is not an identifier (schema.table)",
                        arg);
        return LG_PARSE_OK;
    case 'K':
        if (!parse_u64(arg, 1, LG_MAX_K, &u))
            return fail(err, errlen, "-K: '%s' is not in 1..%u", arg, LG_MAX_K);
        o->k = (unsigned)u;
        return LG_PARSE_OK;
    case 'C':
        if (!parse_u64(arg, 1, LG_MAX_THREADS, &u))
            return fail(err, errlen, "-C: '%s' is not in 1..%u", arg, LG_MAX_THREADS);
        o->c = (unsigned)u;
        return LG_PARSE_OK;
    case OPT_DURATION:
        seen->duration = true;
        if (!parse_double(arg, 0.001, 1e7, &o->duration))
            return fail(err, errlen, "--duration: '%s' is not a number of seconds > 0",
                        arg);
        return LG_PARSE_OK;
    case OPT_BATCHES:
        if (!parse_u64(arg, 1, UINT64_MAX, &o->batches))
            return fail(err, errlen, "--batches: '%s' is not a count >= 1", arg);
        return LG_PARSE_OK;
    case OPT_WARMUP:
        if (!parse_double(arg, 0.0, 1e7, &o->warmup))
            return fail(err, errlen, "--warmup: '%s' is not a number of seconds", arg);
        return LG_PARSE_OK;
    case OPT_SEED:
        if (!parse_u64(arg, 0, UINT64_MAX / 1000 - LG_MAX_THREADS, &o->seed))
            return fail(err, errlen, "--seed: '%s' is not an unsigned integer", arg);
        return LG_PARSE_OK;
    case OPT_KEYS:
        seen->keys = true;
        if (!parse_keyspec(arg, &o->keys))
            return fail(err, errlen,
                        "--keys: '%s' is not seq:A:B, uniform:A:B, zipf:A:B:S or fixed:A "
                        "(A <= B, S > 0)",
                        arg);
        return LG_PARSE_OK;
    case OPT_COLD:
        seen->cold = true;
        if (!parse_keyspec(arg, &o->cold) || o->cold.kind != LG_KEYS_SEQ)
            return fail(err, errlen, "--cold: '%s' is not seq:A:B (A <= B)", arg);
        return LG_PARSE_OK;
    case OPT_HIT_RATE:
        seen->hit_rate = true;
        if (!parse_double(arg, 0.0, 1.0, &o->hit_rate))
            return fail(err, errlen, "--hit-rate: '%s' is not in 0..1", arg);
        return LG_PARSE_OK;
    case OPT_BARRIER:
        o->barrier = true;
        return LG_PARSE_OK;
    case OPT_BINARY:
        o->binary = true;
        return LG_PARSE_OK;
    case OPT_REPEAT:
        if (!parse_u64(arg, 1, 1000, &u))
            return fail(err, errlen, "--repeat: '%s' is not in 1..1000", arg);
        o->repeat = (unsigned)u;
        return LG_PARSE_OK;
    case OPT_RATE:
        if (!parse_double(arg, 0.001, 1e7, &o->rate))
            return fail(err, errlen,
                        "--rate: '%s' is not a number of batches a second > 0", arg);
        return LG_PARSE_OK;
    case OPT_MAX_SAMPLES:
        if (!parse_u64(arg, 1, 1000000000, &u))
            return fail(err, errlen, "--max-latency-samples: '%s' is not in 1..1e9", arg);
        o->max_samples = (size_t)u;
        return LG_PARSE_OK;
    case OPT_LABEL:
        o->label = arg;
        return LG_PARSE_OK;
    case OPT_CONNS:
        if (!parse_u64(arg, 1, 10000000, &u))
            return fail(err, errlen, "--conns: '%s' is not a count >= 1", arg);
        o->conns = (unsigned)u;
        return LG_PARSE_OK;
    case OPT_IDS: {
        seen->ids = true;
        char copy[64];
        char *f[3];
        lg_keyspec_t r;
        if (!copy_str(copy, sizeof(copy), arg) || split_colons(copy, f, 3) != 2 ||
            !parse_range(f[0], f[1], &r))
            return fail(err, errlen, "--ids: '%s' is not A:B (A <= B)", arg);
        o->ids_lo = r.lo;
        o->ids_hi = r.hi;
        return LG_PARSE_OK;
    }
    default:
        return fail(err, errlen, "unknown option (try --help)");
    }
}

/* The key choice must be able to give K distinct ids per batch. */
static lg_parse_result_t check_keys(lg_opts_t *o, const seen_t *seen, char *err,
                                    size_t errlen)
{
    if (!seen->keys)
        return fail(err, errlen, "%s needs --keys", o->mode_name);
    if (o->keys.kind == LG_KEYS_FIXED)
        o->keys.hi = o->keys.lo + o->k - 1;
    if (lg_keyspec_size(&o->keys) < o->k)
        return fail(err, errlen, "--keys: the range has fewer than K=%u ids", o->k);
    if (seen->cold != seen->hit_rate)
        return fail(err, errlen, "--cold and --hit-rate go together");
    o->has_cold = seen->cold;
    if (o->has_cold && lg_keyspec_size(&o->cold) < o->k)
        return fail(err, errlen, "--cold: the range has fewer than K=%u ids", o->k);
    return LG_PARSE_OK;
}

/* What each mode needs; options a mode does not use are ignored. */
static lg_parse_result_t check_mode(lg_opts_t *o, const seen_t *seen, char *err,
                                    size_t errlen)
{
    bool uses_mc = o->mode != LG_MODE_SQL;
    bool uses_pg =
        o->mode == LG_MODE_HAND || o->mode == LG_MODE_N1 || o->mode == LG_MODE_SQL;
    bool batches = o->mode != LG_MODE_CONNS && o->mode != LG_MODE_DELETE;
    if (uses_mc && o->nservers == 0)
        return fail(err, errlen, "%s needs --servers", o->mode_name);
    if (uses_mc && o->mode != LG_MODE_CONNS && o->prefix == NULL)
        return fail(err, errlen, "%s needs --prefix", o->mode_name);
    if (uses_pg && o->pg == NULL)
        return fail(err, errlen, "%s needs --pg", o->mode_name);
    if (o->mode == LG_MODE_CONNS && o->conns == 0)
        return fail(err, errlen, "conns needs --conns N");
    if (o->mode == LG_MODE_DELETE && !seen->ids)
        return fail(err, errlen, "delete needs --ids A:B");
    if (o->batches > 0 && !seen->duration)
        o->duration = 0.0; /* --batches alone: no time limit */
    return batches ? check_keys(o, seen, err, errlen) : LG_PARSE_OK;
}

static bool find_mode(const char *name, lg_opts_t *o)
{
    for (size_t i = 0; i < sizeof(mode_table) / sizeof(mode_table[0]); i++) {
        if (strcmp(name, mode_table[i].name) == 0) {
            o->mode = mode_table[i].mode;
            o->mode_name = mode_table[i].name;
            return true;
        }
    }
    return false;
}

lg_parse_result_t lg_opts_parse(lg_opts_t *o, int argc, char **argv, char *err,
                                size_t errlen)
{
    seen_t seen = {0};
    set_defaults(o);
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "hK:C:", long_options, NULL)) != -1) {
        if (opt == 'h')
            return LG_PARSE_HELP;
        if (opt == '?' || opt == ':') {
            const char *what = argv[optind - 1];
            return fail(err, errlen, "bad or incomplete option '%s' (try --help)", what);
        }
        if (take_option(opt, optarg, o, &seen, err, errlen) != LG_PARSE_OK)
            return LG_PARSE_ERROR;
    }
    if (optind >= argc)
        return fail(err, errlen, "no MODE given (get, hand, n1, sql, conns, delete)");
    if (optind + 1 < argc)
        return fail(err, errlen, "unexpected argument '%s'", argv[optind + 1]);
    if (!find_mode(argv[optind], o))
        return fail(err, errlen, "unknown MODE '%s' (get, hand, n1, sql, conns, delete)",
                    argv[optind]);
    return check_mode(o, &seen, err, errlen);
}

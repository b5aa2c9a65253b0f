/*
 * lg_opts: the command line of objcached-loadgen, parsed and checked once
 * into an lg_opts_t that every other lg_ module reads and never changes.
 *
 * Ownership: lg_opts_parse fills a caller-owned lg_opts_t; its strings point
 * into argv (valid for the whole run) and its servers live in the struct.
 * Nothing is allocated, so there is nothing to free.
 */
#ifndef LG_OPTS_H
#define LG_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LG_MAX_SERVERS 64
/* memcached's key limit; a key is prefix + up to 20 digits. */
#define LG_KEY_MAX    250
#define LG_PREFIX_MAX (LG_KEY_MAX - 20)

typedef enum lg_mode {
    LG_MODE_GET,    /* get-multi only */
    LG_MODE_HAND,   /* get-multi, one = ANY query for the misses, set-multi */
    LG_MODE_N1,     /* get-multi, one query per miss, set each */
    LG_MODE_SQL,    /* the bare = ANY query, no memcached */
    LG_MODE_CONNS,  /* hold many idle connections open */
    LG_MODE_DELETE, /* delete prefix+id for a range of ids */
} lg_mode_t;

typedef enum lg_keykind {
    LG_KEYS_SEQ,     /* a shared cursor over [lo, hi], wrapping */
    LG_KEYS_UNIFORM, /* uniformly random in [lo, hi] */
    LG_KEYS_ZIPF,    /* Zipfian over ranks 1..hi-lo+1, rank r -> id lo+r-1 */
    LG_KEYS_FIXED,   /* every batch is lo..lo+K-1 (hi = lo+K-1) */
} lg_keykind_t;

typedef struct lg_keyspec {
    lg_keykind_t kind;
    uint64_t lo, hi; /* inclusive */
    double s;        /* the Zipf exponent */
} lg_keyspec_t;

typedef struct lg_server {
    char host[256]; /* a host name or address, or a unix socket path */
    unsigned port;  /* 0 for a unix socket */
    uint32_t weight;
} lg_server_t;

typedef struct lg_opts {
    lg_mode_t mode;
    const char *mode_name;
    const char *servers_arg; /* --servers as given, echoed in the output */
    lg_server_t servers[LG_MAX_SERVERS];
    size_t nservers;
    const char *prefix;
    const char *pg;    /* libpq conninfo */
    const char *table; /* checked to be a (schema-qualified) identifier */
    unsigned k;        /* keys per batch */
    unsigned c;        /* threads */
    double duration;   /* seconds to measure; 0 = no time limit (--batches) */
    uint64_t batches;  /* 0 = no batch limit */
    double warmup;
    uint64_t seed;
    lg_keyspec_t keys;
    bool has_cold;     /* --cold and --hit-rate */
    lg_keyspec_t cold; /* always LG_KEYS_SEQ */
    double hit_rate;
    bool barrier;
    bool binary;     /* --binary: memcached's binary protocol (get: GETKQs + NOOP) */
    unsigned repeat; /* --repeat: each batch's ids are asked this many times in a row */
    double rate;     /* --rate: batches a second per thread at most; 0 = no limit */
    size_t max_samples;
    const char *label;       /* NULL when not given */
    unsigned conns;          /* mode conns */
    uint64_t ids_lo, ids_hi; /* mode delete */
} lg_opts_t;

typedef enum lg_parse_result {
    LG_PARSE_OK,
    LG_PARSE_HELP,  /* -h: usage was asked for */
    LG_PARSE_ERROR, /* err holds one line saying what is wrong */
} lg_parse_result_t;

lg_parse_result_t lg_opts_parse(lg_opts_t *o, int argc, char **argv, char *err,
                                size_t errlen);
void lg_opts_usage(FILE *out);

/* The number of ids in a spec's range. */
uint64_t lg_keyspec_size(const lg_keyspec_t *ks);

#endif

/*
 * oc_conf: objcached's configuration file (INI), parsed into an oc_conf_t.
 *
 * File format (docs/configuration.md has every key):
 *
 *   ; comment            # comment too; a ';' or '#' after whitespace ends a value
 *   [objcached]          listeners, limits, behaviour
 *   [memcached]          the pool
 *   [postgresql]         the source of truth
 *   [model NAME]         one section per model; NAME is what keys start with
 *
 * Contract:
 * - oc_conf_load_file()/oc_conf_load_string() allocate a whole oc_conf_t;
 *   the caller owns it and frees it with oc_conf_free(). On failure they
 *   return NULL and write "FILE:LINE: reason" (or "FILE: reason" when the
 *   problem is not on one line) into err[OC_ERRLEN]. Every string inside the
 *   struct is owned by the struct.
 * - Parsing is pure (no network, no environment); a loaded config is
 *   immutable and may be read from any thread.
 * - Keys are table-driven (see oc_conf.c): unknown sections or keys, duplicate
 *   keys, bad values, missing required keys, duplicate models all fail.
 * - Identifiers (schema, table, columns, key column) must match
 *   [A-Za-z_][A-Za-z0-9_]* and are always double-quoted when put in SQL, so
 *   a config cannot smuggle SQL either.
 */
#ifndef OC_CONF_H
#define OC_CONF_H

/* The smallest near_cache_size but 0: its fixed tables (per-key epochs,
 * doorkeeper, buckets) take about 650 KiB. */
#define OC_NEAR_MIN_SIZE (1024u * 1024u)

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "oc_status.h"

#define OC_KEY_MAX            250 /* memcached's KEY_MAX_LENGTH */
#define OC_MODEL_NAME_MAX     64
#define OC_SAMPLE_WINDOWS_MAX 4 /* sample_windows: at most this many */

typedef enum oc_key_type {
    OC_KEY_BIGINT = 0,
    OC_KEY_INTEGER,
    OC_KEY_UUID,
    OC_KEY_TEXT,
} oc_key_type_t;

typedef struct oc_model_conf {
    char *name;   /* [model NAME]: [A-Za-z_][A-Za-z0-9_]{0,63} */
    char *schema; /* table = schema.table (schema defaults to public) */
    char *table;
    char *key_column;       /* key = id (default "id") */
    oc_key_type_t key_type; /* key_type = bigint|integer|uuid|text (bigint) */
    char **columns;         /* columns = a, b, c  (NULL = whole row) */
    size_t ncolumns;
    uint32_t ttl_s;           /* ttl = 1h (default 3600 s), 1 s .. 30 days */
    uint32_t missing_ttl_s;   /* missing_ttl = 30s (default 30 s), 1 s .. 30 days */
    uint32_t tombstone_ttl_s; /* tombstone_ttl = 10m (default), 1 s .. 30 days */
    char *version_column;     /* version_column = updated_at (NULL = none): an
                                 older push never replaces a newer object */
    int push_check;           /* push_check = on (default): a push the cache cannot
                                 order is compared with PostgreSQL's row after the
                                 write (oc_write.h); off trusts pushes */
    uint32_t near_ttl_ms;     /* near_ttl = 0 (default: not in the near-cache):
                                 how long an object may stay there, a safety
                                 net (invalidations keep it correct) */
    uint32_t refresh_ahead_s; /* refresh_ahead = 0 (off): a hit with less than
                                 this left before it expires is reloaded in the
                                 background by one reader of the fleet; below ttl */
    uint32_t sample_ppm;      /* sample_rate: share of invalidations and hits the
                                 consistency sampler checks, in parts per million
                                 ([objcached] sample_rate when not set here) */
    int line;                 /* line of the section header, for later errors */
    int disabled;             /* removed by a reload: kept so that model indexes
                                 stay stable, but no key reaches it */
} oc_model_conf_t;

/* sample_windows: 1..OC_SAMPLE_WINDOWS_MAX durations, growing. */
typedef struct oc_conf_windows {
    uint32_t ms[OC_SAMPLE_WINDOWS_MAX];
    size_t n;
} oc_conf_windows_t;

typedef struct oc_mc_server_conf {
    char *host; /* a name or an address (IPv6 in [brackets] in the
                   file; stored without the brackets, ready for
                   getaddrinfo() and libmemcached) */
    uint16_t port;
    uint32_t weight; /* host:port:weight, default 1 */
} oc_mc_server_conf_t;

typedef struct oc_conf {
    char *path; /* the file it came from, or "<string>" */

    /* [objcached] */
    char *listen;                     /* "127.0.0.1:11311"; "" = no TCP listener */
    char *unix_socket;                /* path; "" = no unix socket (default "") */
    char *metrics_listen;             /* host:port of the Prometheus page; "" = off */
    uint32_t unix_socket_mode;        /* octal, default 0660 */
    char *key_prefix;                 /* prepended to memcached keys, default "oc:" */
    char *timezone;                   /* PostgreSQL TimeZone pinned per session, "UTC" */
    uint32_t max_connections;         /* default 4096 */
    uint32_t max_keys;                /* keys in one get, default 1024 */
    uint32_t max_line;                /* bytes in one command line, default 65536 */
    uint32_t max_value;               /* bytes in one value, default 1048576 */
    uint32_t max_reply;               /* bytes in one get's reply, default 64m */
    uint32_t load_timeout_ms;         /* a PostgreSQL load, default 5s */
    uint32_t ttl_jitter_pct;          /* added TTL spread, default 10 (%) */
    uint32_t lease_wait_ms;           /* wait for another sidecar's load, 250ms */
    uint32_t shutdown_timeout_ms;     /* SIGTERM: time to finish commands, 10s */
    int restart_handover;             /* SIGTERM under systemd: idle client
                                         connections to its fd store, for the
                                         next process (oc_conn), default on */
    uint32_t idle_timeout_ms;         /* close a client idle this long; 0 = never */
    uint32_t near_cache_size;         /* bytes of the near-cache; 0 = off (default),
                                         else at least OC_NEAR_MIN_SIZE */
    uint32_t write_timeout_ms;        /* close a client that reads nothing of its
                                         pending replies this long; 30s, 0 = never */
    uint32_t sample_ppm;              /* sample_rate: the consistency sampler's share
                                         of invalidations and hits, parts per million
                                         (default 1000 = 0.1%); 0 = off */
    oc_conf_windows_t sample_windows; /* sample_windows: when an invalidation's
                                         key is checked after it (1s, 10s, 60s) */
    uint32_t sample_max_qps;          /* sample_max_qps: the sampler's PostgreSQL
                                         queries per second at most (default 4) */
    uint32_t sample_queue;            /* sample_queue: samples waiting for their
                                         check, at most; more are dropped (16384) */
    uint32_t sample_recheck_ms;       /* sample_recheck: a disagreement is read again
                                         after this before it counts (1s) */
    char *user;                       /* started as root: become this user after
                                         binding (NULL = stay) */
    char *log_level;                  /* error|warn|info|debug, default info */
    char *log_target;                 /* stderr (default; journald) or syslog */

    /* [memcached] */
    oc_mc_server_conf_t *servers; /* servers = h:p[:w] h:p[:w] ... (required) */
    size_t nservers;
    uint32_t mc_workers; /* workers = 2: ignored (memcached I/O runs on the loop) */
    uint32_t mc_connect_timeout_ms; /* default 200ms */
    uint32_t mc_io_timeout_ms;      /* default 500ms */
    uint32_t mc_retry_timeout_ms;   /* a server marked down is probed every, 2s */
    uint32_t mc_failure_limit;      /* failure_limit = 3: failures in a row
                                       that mark a server down */
    int mc_failover;                /* failover = on: the keys of a server
                                       marked down go to the gutter, or to
                                       the other servers */
    uint32_t mc_failover_ttl_s;     /* failover_ttl = 10s: the longest an
                                       entry written there lives */
    oc_mc_server_conf_t *gutter;    /* gutter = h:p[:w] ... (optional): where
                                       they go; none: the other servers */
    size_t ngutter;
    oc_mc_server_conf_t *servers_previous; /* servers_previous = h:p[:w] ...
                                              (optional): during a change of
                                              servers, the other list; its
                                              placement also gets every delete
                                              (invalidation, tombstone, push)
                                              but serves no reads */
    size_t nservers_previous;

    /* [postgresql] */
    char *conninfo;           /* libpq conninfo (required); secrets may
                                 come from PGPASSWORD or a passfile */
    uint32_t pg_connections;  /* loader connections, default 2 */
    uint32_t pg_split_min;    /* load_split_min: a load's parts on idle
                                 connections hold this many ids or more;
                                 0: never split */
    int pg_txn_pool;          /* pool_mode = transaction: a pooler (pgbouncer)
                                 keeps a server session for one transaction
                                 only (oc_pgconn_opts_t.local_sql) */
    uint32_t inval_poll_ms;   /* invalidation_poll: outbox poll, 1s; 0 = off */
    uint32_t inval_batch;     /* invalidation_batch: outbox rows per claim */
    uint32_t feed_poll_ms;    /* feed_poll: follow the feed, 250ms; 0 = off */
    char *feed_conninfo;      /* feed_conninfo: where to read it ("" = conninfo);
                                 may be a streaming replica */
    uint32_t feed_max_lag_ms; /* feed_max_lag: the near-cache serves only
                                 while fresh within this, 2s */
    uint32_t feed_batch;      /* feed_batch: feed rows per poll, 1000 */
    uint32_t feed_keep_s;     /* feed_keep: rows kept by appenders' prune, 10m */
    int feed_listen;          /* feed_listen = on: LISTEN on a primary (else poll only) */
    int wal;                  /* wal = on: invalidations from the WAL (oc_wal) */
    char *wal_slot;           /* wal_slot: the logical slot, "objcached" */
    char *wal_conninfo;       /* wal_conninfo: a role with REPLICATION ("" = conninfo) */
    uint32_t wal_heartbeat_ms;      /* wal_heartbeat: freshness proof interval, 250ms */
    uint32_t wal_takeover_ms;       /* wal_takeover: a standby tries after, 5s */
    uint32_t wal_batch_interval_ms; /* wal_batch_interval: batches start at least
                                       this far apart (5ms; 0 = at once) */
    uint32_t wal_max_txn_keys;      /* wal_max_txn_keys: past it, a model goes whole */
    int wal_feed_keys;              /* wal_feed_keys = on: the holder appends every
                                       key to the feed; off: whole-model rows per
                                       wal_heartbeat instead (oc_walowed.h) */

    oc_model_conf_t *models;
    size_t nmodels;

    char **warnings; /* "FILE:LINE: ..." for keys that are read but do
                        nothing (deprecated): logged at start, printed by
                        --check-config */
    size_t nwarnings;
} oc_conf_t;

oc_conf_t *oc_conf_load_file(const char *path, char *err);
oc_conf_t *oc_conf_load_string(const char *text, size_t len, char *err);
void oc_conf_free(oc_conf_t *conf);

/* The model named exactly `name` (length `len`), or NULL (also for a model
 * a reload disabled). */
const oc_model_conf_t *oc_conf_model(const oc_conf_t *conf, const char *name, size_t len);

/* Unit parsers, shared and tested once. Return OC_OK or OC_EINVAL.
 * Durations: "250ms", "30s", "5m", "2h", "1d"; a bare number is seconds. */
oc_status_t oc_conf_parse_duration_ms(const char *s, uint64_t *out_ms);
/* Sizes: "512", "64k", "1m" (binary multiples, case-insensitive). */
oc_status_t oc_conf_parse_size(const char *s, uint64_t *out);
/* on|off, yes|no, true|false, 1|0 (case-insensitive) -> 1 or 0. */
oc_status_t oc_conf_parse_bool(const char *s, int *out);

const char *oc_key_type_name(oc_key_type_t t);

/* The first key that differs between a and b and that a running daemon
 * cannot change (listen, conninfo, ...: the key table's restart column), or
 * NULL if b may replace a by a reload. */
const char *oc_conf_restart_key(const oc_conf_t *a, const oc_conf_t *b);

/* Every key, one per line: "section<TAB>key<TAB>default<TAB>reload|restart|
 * deprecated" (objcached --help-config; the docs are checked against it). */
void oc_conf_describe(FILE *out);

#endif

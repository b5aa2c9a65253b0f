/*
 * oc_daemon: the one struct that owns all of objcached's state, and its life
 * cycle: start (listeners, pools), run the loop, stop.
 *
 * Contract: everything below is touched only from the loop thread (the
 * process has no other thread). Nothing here calls exit():
 * errors are returned to main().
 */
#ifndef OC_DAEMON_H
#define OC_DAEMON_H

#include <stdint.h>
#include <time.h>

#include "oc_conf.h"
#include "oc_stats.h"
#include "oc_status.h"

struct event_base;
struct event;
struct evconnlistener;
typedef struct oc_mc oc_mc_t;
typedef struct oc_pg oc_pg_t;
typedef struct oc_map oc_map_t;
typedef struct oc_conn oc_conn_t;

typedef struct oc_daemon {
    struct event_base *base;
    oc_conf_t *conf; /* owned */
    oc_stats_t stats;
    oc_mc_t *mc;
    oc_pg_t *pg;
    oc_map_t *fills;            /* cache key -> oc_fill_t being loaded/stored */
    size_t max_key_len;         /* OC_KEY_MAX - prefix - OC_KEY_GEN_ROOM */
    uint64_t *model_gen;        /* per model: its generation (TRUNCATEs) */
    struct oc_inval *inval;     /* the invalidation consumer, or NULL */
    struct oc_metrics *metrics; /* the Prometheus page, or NULL */
    const char **model_names;   /* [nmodels], for stats */
    struct evconnlistener *tcp_listener;
    struct evconnlistener *unix_listener;
    oc_conn_t *conns;        /* all client connections (doubly linked) */
    struct oc_token *tokens; /* the command being parsed (oc_conn), any connection's */
    size_t ntokens;
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *drain_timer;  /* shutdown: the drain's deadline */
    struct event *accept_timer; /* out of descriptors: resume accepting */
    struct event *probe_timer;  /* memcached health probes, every 2 s */
    int probing;                /* a probe job is out */
    time_t started;
    unsigned rand_state;  /* TTL jitter; quality does not matter */
    uint32_t lease_ttl_s; /* load_timeout rounded up, plus 1 s */
    double miss_share;    /* moving average: share of recent gets with
                             at least one miss (oc_req: how to read) */
    int stopping;
    /* Test-only fault point, from the environment at start:
     * OBJCACHED_FAULT_FILL_GATE=PATH holds every write-back (between the
     * PostgreSQL read and the cache write: fills and push checks) while
     * PATH exists, so a test can land a write in exactly that window.
     * Never set in production. */
    char *fault_fill_gate;
    /* Gets whose memcached answer is still out, oldest first, and fills
     * whose write-back is done but which such a get may still miss (see
     * oc_fill.h): together they close the window between a miss and a
     * finished write-back in which a key would be loaded twice. */
    struct oc_req *mget_head, *mget_tail;
    uint64_t mget_seq;
    struct oc_fill *retire_head, *retire_tail;
    /* Pushes stored but not yet checked against PostgreSQL (oc_write.c),
     * in push order, and the event that starts their checks. */
    struct oc_write *check_head, *check_tail;
    struct event *check_ev;
} oc_daemon_t;

/* Takes ownership of conf (also on failure). Binds the listeners, starts the
 * memcached pool and the PostgreSQL connections. */
oc_status_t oc_daemon_init(oc_daemon_t *d, oc_conf_t *conf, char *err);
/* Runs until SIGTERM/SIGINT; returns OC_OK on a clean stop. */
oc_status_t oc_daemon_run(oc_daemon_t *d);
void oc_daemon_free(oc_daemon_t *d);

/* The fill gate (fault_fill_gate): 1 if it is closed now, and then `cb`
 * runs again in 10 ms on *timer (created on first use, the caller frees
 * it); 0 if the write-back may go on. */
int oc_daemon_gate_hold(oc_daemon_t *d, struct event **timer,
                        void (*cb)(int, short, void *), void *arg);

/* (Re)build the per-memcached-server health table (stats mc_server:*:up)
 * from d->conf's server list; a reload calls it when the list changes. */
oc_status_t oc_daemon_mc_health_init(oc_daemon_t *d);

#endif

/*
 * oc_mc: the memcached pool, driven by worker threads.
 *
 * libmemcached blocks, and the loop must never wait on the network, so all
 * memcached I/O runs on `mc_workers` threads, each with its own memcached_st
 * (they are not thread-safe) over the same server list: ketama consistent
 * hashing with weights, so adding a server moves few keys. A job is queued
 * from the loop thread, run by one worker, and its `done` callback is called
 * back on the loop thread.
 *
 * A dead or frozen server costs at most the configured connect/io timeouts;
 * libmemcached then skips it for `retry_timeout` and tries it again. Keys it
 * holds simply miss (the caller loads them from PostgreSQL); a failed set is
 * counted and forgotten (the entry will be filled again on the next miss).
 *
 * Ownership: the caller allocates a job with oc_mc_job_new_get/_set, fills
 * it, and hands it to oc_mc_submit; from then until `done` runs the job
 * belongs to oc_mc and the caller must not touch it, nor free the key and
 * value bytes it points to. In `done` (loop thread) the job is the caller's
 * again, who frees it with oc_mc_job_free.
 */
#ifndef OC_MC_H
#define OC_MC_H

#include <stddef.h>
#include <stdint.h>

#include "oc_conf.h"
#include "oc_status.h"

struct event_base;
typedef struct oc_mc oc_mc_t;
typedef struct oc_mc_job oc_mc_job_t;
typedef void (*oc_mc_done_fn)(oc_mc_job_t *job, void *arg);

typedef enum oc_mc_op {
    OC_MC_GET,    /* multi-get keys[]; results in hits[] */
    OC_MC_SET,    /* set each item */
    OC_MC_ADD,    /* add each item: NOT_STORED if the key exists */
    OC_MC_DELETE, /* delete each item's key: NOT_FOUND if it was not there */
    OC_MC_CAS,    /* cas each item against item.cas: EXISTS or NOT_FOUND if
                     the key changed or went since that cas was read */
    OC_MC_SWAP,   /* for each item, read the key; if it still holds exactly
                     item.expect (flags item.expect_flags), replace it by cas
                     with the item, else NOT_STORED. Atomic per key: a write
                     that lands between the read and the cas wins. A fill
                     swaps its own lease for the row; a push check swaps the
                     pushed object for PostgreSQL's row. */
    OC_MC_PROBE,  /* for each item, ask the server named by key (host) and flags
                     (port) for its version on a fresh connection: OK if it
                     answers, ERROR if not (per-server health) */
    OC_MC_PUSH,   /* for each item, read the key and ask item.decide whether
                     to replace what is there; write by cas (or add if the
                     key is absent), retrying if it changed in between;
                     NOT_STORED if decide says no. item.unordered tells
                     whether the write replaced something it could not be
                     ordered against (see oc_mc_decision_t). */
} oc_mc_op_t;

typedef enum oc_mc_result {
    OC_MC_R_OK = 0,
    OC_MC_R_NOT_STORED,
    OC_MC_R_NOT_FOUND,
    OC_MC_R_EXISTS,
    OC_MC_R_ERROR, /* server down, timeout, ...: see job->err */
} oc_mc_result_t;

/* One result of a GET: value bytes live in job->arena at [off, off+len). */
typedef struct oc_mc_hit {
    int found;
    uint32_t flags;
    uint64_t cas;
    size_t off, len;
} oc_mc_hit_t;

struct oc_mc_item;
/* What a PUSH does with the entry it found. */
typedef enum oc_mc_decision {
    OC_MC_KEEP,            /* leave it: NOT_STORED */
    OC_MC_WRITE,           /* replace it: what is there is provably older */
    OC_MC_WRITE_UNORDERED, /* replace it, but nothing proves the write is
                              newer (an empty key, no version to compare):
                              the caller must check it (item.unordered) */
} oc_mc_decision_t;
/* PUSH: runs on a worker thread, so it must only read the item and the
 * bytes it is given (found = 0: the key is absent). */
typedef oc_mc_decision_t (*oc_mc_decide_fn)(const struct oc_mc_item *it, int found,
                                            uint32_t flags, const char *val, size_t len);

/* One item of a SET/ADD/DELETE/CAS/SWAP/PUSH. */
typedef struct oc_mc_item {
    const char *key;
    size_t klen;
    const char *val;
    size_t vlen;
    uint32_t flags;
    uint32_t exptime_s;
    uint64_t cas;          /* CAS: the cas to check */
    const char *expect;    /* SWAP: the value the key must still hold */
    size_t expect_len;
    uint32_t expect_flags; /* SWAP: ... and its flags */
    oc_mc_decide_fn decide; /* PUSH */
    void *decide_arg;      /* PUSH: the caller's, for decide */
    oc_mc_result_t result; /* out */
    int unordered;         /* out, PUSH: written on OC_MC_WRITE_UNORDERED */
} oc_mc_item_t;

struct oc_mc_job {
    oc_mc_op_t op;
    size_t n;
    /* GET: the caller fills keys/key_lens (unique keys); results in hits. */
    const char **keys;
    size_t *key_lens;
    oc_mc_hit_t *hits;
    char *arena; /* owned by the job */
    size_t arena_len, arena_cap;
    /* The other ops: the caller fills items; results in items[i].result. */
    oc_mc_item_t *items;
    /* How many operations failed (OC_MC_R_ERROR, not NOT_STORED & co), and
     * the first failure's text. */
    size_t errors;
    char err[OC_ERRLEN];

    oc_mc_done_fn done;
    void *arg;
    oc_mc_job_t *next; /* queue link, oc_mc's */
};

oc_mc_t *oc_mc_new(struct event_base *base, const oc_conf_t *conf, char *err);
/* Stops the workers; jobs not yet done get `done` with errors = n and err
 * "shutting down". Loop thread only. */
void oc_mc_free(oc_mc_t *mc);
void oc_mc_submit(oc_mc_t *mc, oc_mc_job_t *job);
/* A reload: each worker switches to the new server list and timeouts before
 * its next job (jobs under way finish on the old one). Loop thread only;
 * the workers keep nothing of `conf`. */
oc_status_t oc_mc_reconfigure(oc_mc_t *mc, const oc_conf_t *conf, char *err);

/* One allocation each; NULL on out of memory. */
oc_mc_job_t *oc_mc_job_new_get(size_t n, oc_mc_done_fn done, void *arg);
/* Any op but GET. */
oc_mc_job_t *oc_mc_job_new_items(oc_mc_op_t op, size_t n, oc_mc_done_fn done,
                                 void *arg);
void oc_mc_job_free(oc_mc_job_t *job);

#endif

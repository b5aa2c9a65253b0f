/*
 * oc_req: one get/gets command, from parsed keys to the reply.
 *
 *   start: parse and check every key (a bad one fails the whole command
 *          with CLIENT_ERROR before any I/O), dedupe them into unique
 *          cache keys, send one multi-get to the memcached pool
 *   mc done: hits are answered; misses go to oc_fill (coalesced loads)
 *   every unique key resolved: the reply is written in the order asked
 *
 * Ownership: a request belongs to itself once started. Its connection may
 * close while it waits (oc_req_detach); it then finishes its waits and frees
 * itself without replying. Client keys are copied into the request's arena;
 * hit values point into its memcached job's arena, loaded values are blob
 * references; all of it is released with the request.
 */
#ifndef OC_REQ_H
#define OC_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "oc_daemon.h"
#include "oc_fill.h"
#include "oc_mc.h"
#include "oc_proto.h"

typedef struct oc_req oc_req_t;
typedef struct oc_mc_job oc_mc_job_t;

typedef enum oc_ukey_state {
    OC_UK_PENDING, /* waiting for memcached or a load */
    OC_UK_FOUND,   /* data/len hold the JSON */
    OC_UK_ABSENT,  /* no such row */
    OC_UK_ERROR,   /* the load failed; req->err says why */
} oc_ukey_state_t;

typedef struct oc_ukey {
    oc_req_t *req;
    const char *ckey; /* cache key (prefix + Model:canonical id) */
    size_t ckey_len;
    size_t model_idx;
    size_t canon_off; /* the canonical id starts at ckey + canon_off */
    oc_ukey_state_t state;
    const char *data;
    size_t len;
    uint64_t cas;
    oc_blob_t *blob;             /* reference held when data came from a load */
    uint64_t read_seq;           /* the mget_seq of the multi-get that missed it */
    oc_mc_lease_t lease;         /* ... what that read left: a lease it took or
                                    found (OC_MC_LEASE_*) */
    uint64_t lease_cas;          /* ... and that lease's cas */
    int mc_error;                /* ... or memcached failed for it */
    struct oc_ukey *next_waiter; /* in a fill's waiter list */
} oc_ukey_t;

/*
 * Start a get, gets or mg command. cmd->keys are the keys to look up; `echo`
 * (NULL: the same) are the keys as the client wrote them, for the reply (an
 * mg with the b flag looks up the decoded key and echoes the base64 one).
 * On a client error returns OC_EINVAL/OC_ETOOBIG with the reason in err and
 * nothing started. On OC_OK the request is under way and `reply` will be
 * called once (unless detached) with the finished reply, in the classic
 * (VALUE ... END) or the meta (VA/HD/EN) format by cmd->type.
 */
typedef void (*oc_req_reply_fn)(void *conn, struct evbuffer *reply);
oc_status_t oc_req_start(oc_daemon_t *d, const oc_cmd_t *cmd, const oc_token_t *echo,
                         void *conn, oc_req_reply_fn reply, oc_req_t **out, char *err);

/* The mget_seq of the oldest get still waiting for memcached, or
 * UINT64_MAX if none. */
uint64_t oc_req_oldest_mget(const oc_daemon_t *d);

/* The connection is gone: finish quietly. */
void oc_req_detach(oc_req_t *req);

/* Called by oc_fill when a waited-for key is resolved. `blob` is borrowed
 * (the request takes its own reference); err is used for OC_UK_ERROR. */
void oc_req_key_done(oc_ukey_t *uk, oc_ukey_state_t state, oc_blob_t *blob,
                     const char *err);

#endif

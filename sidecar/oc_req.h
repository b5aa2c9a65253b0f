/*
 * oc_req: one get/gets/mg command, from parsed keys to a typed result.
 *
 *   start: parse and check every key (a bad one fails the whole command
 *          with a client error before any I/O), dedupe them into unique
 *          cache keys, send one read to the memcached pool
 *   read done: hits are resolved; misses go to oc_fill (coalesced loads)
 *   every unique key resolved: `done` is called; the result (oc_result.h)
 *          lists every key in the order asked, duplicates included
 *
 * Ownership: the caller owns the request and frees it with oc_req_free
 * after done (or from inside done). If the caller goes away first it calls
 * oc_req_detach instead: the request finishes its waits and frees itself
 * without calling done. Client keys are copied into the request; values
 * point into its memcached read or into loaded blobs it holds references
 * to, all valid until oc_req_free.
 */
#ifndef OC_REQ_H
#define OC_REQ_H

#include <stddef.h>

#include "oc_ctx.h"
#include "oc_proto.h"
#include "oc_reply.h"
#include "oc_result.h"
#include "oc_status.h"

typedef struct oc_reqs oc_reqs_t;
typedef struct oc_req oc_req_t;
typedef void (*oc_req_done_fn)(oc_req_t *req, void *arg);

/* The read path's own state (how gets read memcached, see oc_req.c). */
oc_reqs_t *oc_reqs_new(oc_ctx_t *ctx, char *err);
void oc_reqs_free(oc_reqs_t *rs);
/* Hand the reads that bypass memcached (oc_gens.h) their answer now, not
 * on the next loop turn: the daemon's stop, before the pool and the loader
 * go, so that their requests finish and are freed. */
void oc_reqs_flush(oc_reqs_t *rs);

/*
 * Start a get of n keys. echo (NULL: the same) are the keys as the client
 * wrote them, for the reply (an mg with the b flag looks up the decoded key
 * and echoes the base64 one). On a client error returns OC_EINVAL or
 * OC_ETOOBIG with the reason in err and nothing started; OC_ENOMEM if out of
 * memory. On OC_OK either the request was answered at once (every key from
 * the near-cache: oc_req_complete says so, done is never called, and the
 * caller answers and frees), or it is under way and done is called once,
 * from the loop, never inside oc_req_start.
 */
oc_status_t oc_req_start(oc_ctx_t *ctx, const oc_token_t *keys, const oc_token_t *echo,
                         size_t n, oc_req_done_fn done, void *arg, oc_req_t **out,
                         char *err);

/* 1 if oc_req_start answered the request at once (no done call). */
int oc_req_complete(const oc_req_t *req);

/* The result, once done was called (or oc_req_complete). */
const oc_get_result_t *oc_req_result(const oc_req_t *req);
void oc_req_free(oc_req_t *req);
/* Lets the reply send the result's large values (OC_REPLY_REF_MIN bytes or
 * more) from where they were read, by reference: sets f's unref, unref_arg
 * and refs to a hold on req when some found value is that large (if the
 * hold cannot be had, f is left without them and every value is copied).
 * After the reply, oc_req_release(req, f) drops the caller's reference in
 * place of oc_req_free: req is freed then, or when the output is done with
 * the last value it sends by reference (sent, or the output freed). */
void oc_req_hold(oc_req_t *req, oc_reply_fmt_t *f);
void oc_req_release(oc_req_t *req, oc_reply_fmt_t *f);
/* The caller is gone: finish quietly and free. */
void oc_req_detach(oc_req_t *req);

/* ---- the pure rules, exposed for unit tests ---- */

struct oc_map;
/* Dedupe a get's keys into unique cache keys. The unique index of cache key
 * ck[0..cklen): an earlier key's if `seen` has it (*is_new = 0), else
 * `next`, recorded in seen (*is_new = 1). seen NULL (a get of one key):
 * always new. seen keeps pointers to ck: the caller keeps the bytes.
 * OC_ENOMEM if seen could not grow. */
oc_status_t oc_req_unique(struct oc_map *seen, const char *ck, size_t cklen,
                          uint32_t next, uint32_t *idx, int *is_new);
/* The keys recent gets read from memcached and the keys of those that
 * missed (a failed read counts as a miss), each a moving average over
 * about 32 gets: their ratio is the share of recent keys that missed, a
 * get weighing by its keys. Starts zeroed. */
typedef struct oc_req_misses {
    double missed, read;
} oc_req_misses_t;
/* One more get, that read `read` keys of which `missed` missed (a get
 * that read none, or a count that makes no sense, changes nothing). */
void oc_req_misses_add(oc_req_misses_t *m, size_t missed, size_t read);
/* Read with meta gets that lease each miss in the same round trip (1), or
 * one multi-get per server (0)? Meta gets once over one in twenty of the
 * recent keys read missed; multi-gets before anything was read. */
int oc_req_use_mg(const oc_req_misses_t *m);

#endif

/*
 * oc_inval: applies the invalidations that the PostgreSQL hook (sql/)
 * writes to objcached.outbox, so writes that bypass the app reach the cache.
 *
 * One dedicated connection LISTENs on channel "objcached" to wake up at
 * once, and polls every invalidation_poll in case a NOTIFY was missed. A
 * cycle is:
 *
 *   BEGIN; SELECT ... FROM objcached.claim(batch)         (rows deleted, locked)
 *   SELECT model, generation FROM objcached.models      (TRUNCATE bumps it)
 *   memcached delete of every claimed key                (and local fills)
 *   INSERT the keys whose delete failed back into the outbox
 *   COMMIT
 *
 * and repeats at once until a claim comes back empty. A consumer applies
 * every model's rows, served here or not (a cache key needs only the shared
 * key_prefix, the model name and its generation), so a fleet whose sidecars
 * serve different models loses nothing. Outbox keys that no
 * client could ask for (spaces, control bytes, too long) are skipped: they
 * were never cached, and must never reach a memcached command line. Because the claimed
 * rows are deleted in the same transaction that applies them, nothing is
 * lost if this sidecar dies mid-batch (the transaction rolls back and any
 * sidecar claims them again), while it is down (rows wait), or when a
 * transaction commits after a later-numbered one was consumed (its row
 * appears at commit). A key whose delete failed (a memcached server down or
 * frozen) goes back into the outbox, so a server that returns with stale
 * items is cleaned when it is reachable again.
 *
 * A TRUNCATE is a NULL key: the model's generation was bumped in the same
 * transaction; the generations read after the claim pick it up, and the cache keys of
 * that model change (prefix + Model~gen:id), so every old entry is dropped
 * at once.
 *
 * Ownership: the daemon owns the consumer (ctx->inval; a reload may start
 * or stop it); oc_inval_free() rolls back a
 * cycle in flight (PostgreSQL does, when the connection closes). If its
 * memcached deletes are still out, the struct lives until their callback
 * (oc_mc runs every callback, at oc_mc_free at the latest).
 */
#ifndef OC_INVAL_H
#define OC_INVAL_H

#include <stddef.h>

#include "oc_ctx.h"
#include "oc_status.h"

typedef struct oc_inval oc_inval_t;

/* Before serving: learn the models' generations with one blocking query
 * (2 s connect timeout), so that a sidecar started after a TRUNCATE, or one
 * whose consumer is off, does not read entries of an old generation. */
void oc_inval_read_generations(oc_ctx_t *ctx);

/* NULL with err empty when invalidation_poll is 0 (turned off). */
oc_inval_t *oc_inval_new(oc_ctx_t *ctx, char *err);
void oc_inval_free(oc_inval_t *iv);

/* ---- the pure rules, exposed for unit tests ---- */

/* What a claimed row (model[0..mlen), key[0..klen), key NULL for a
 * TRUNCATE) is for the feed; requeued_again: a requeued row whose retried
 * delete failed again (requeued once more, appended when a retry works). */
typedef enum oc_inval_feed_row {
    OC_INVAL_FEED_SKIP,  /* requeued again, a model name too long to be
                            one, or a key no client could ask for */
    OC_INVAL_FEED_KEY,   /* one key of the model */
    OC_INVAL_FEED_WHOLE, /* the whole model (a TRUNCATE) */
} oc_inval_feed_row_t;
oc_inval_feed_row_t oc_inval_feed_row(size_t mlen, const char *key, size_t klen,
                                      int requeued_again, size_t max_key_len);
/* Does a claimed row become a memcached delete? A key (not a TRUNCATE:
 * the generation does that) of a model still attached (model_known) that
 * a client could have asked for (spaces or CR/LF would inject commands). */
int oc_inval_row_deletes(size_t mlen, const char *key, size_t klen, int model_known,
                         size_t max_key_len);
/* The id in a cache key (prefix + Model[~gen] + ":" + id, oc_key), for the
 * requeue: after the first ':' past the prefix's prefix_len bytes; NULL if
 * there is none within the key. */
const char *oc_inval_key_id(const char *ckey, size_t klen, size_t prefix_len,
                            size_t *idlen);

#endif

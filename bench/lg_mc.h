/*
 * lg_mc: the memcached side of the load generator, through libmemcached.
 *
 * The pool is set up as objcached sets up its own (oc_place.c make_hash):
 * ketama, weighted, MD5, so a key objcached wrote is found here on the same
 * server. Each thread makes its own handle (a memcached_st is not shared
 * between threads; memcached_clone would lose the ketama continuum) and
 * connects it before the run starts; the main thread's template only
 * checks the options first.
 *
 * Writes (the hand and n1 patterns, delete) are pipelined: the template
 * buffers requests, and each thread's handle is switched to noreply once
 * connected; lg_mc_flush sends what was queued in as few writes as the
 * buffers allow, one per server for a batch, and waits for no reply.
 *
 * Errors are never fatal: they set tally->error and a short reason.
 *
 * Ownership: lg_mc_new and lg_mc_connect return a memcached_st the caller
 * frees with memcached_free.
 */
#ifndef LG_MC_H
#define LG_MC_H

#include <libmemcached/memcached.h>
#include <stdbool.h>
#include <stddef.h>

#include "lg_batch.h"
#include "lg_opts.h"

#define LG_SET_TTL 3600 /* seconds: the hand pattern's write-back */

/* A template (not connected) over o->servers; NULL with err on failure. */
memcached_st *lg_mc_new(const lg_opts_t *o, bool pipelined_writes, char *err,
                        size_t errlen);
/* A thread's own connected handle over o->servers; NULL with err on
 * failure. A server that does not answer is reported in err but is not a
 * failure. */
memcached_st *lg_mc_connect(const lg_opts_t *o, bool pipelined_writes, char *err,
                            size_t errlen);

/* Get-multi of the batch's keys: found slots become LG_SLOT_HIT, each value
 * checked. An entry that objcached stores for what is not an object (no
 * row, tombstone, lease) is a miss, as objcached itself reads it. */
void lg_mc_get(memcached_st *mc, memcached_result_st *res, lg_batch_t *b, lg_tally_t *t);
/* Queues set key(slot) = v with LG_SET_TTL; sent by lg_mc_flush. */
void lg_mc_queue_set(memcached_st *mc, const lg_batch_t *b, size_t slot, const char *v,
                     size_t len, lg_tally_t *t);
/* Queues delete key(slot); sent by lg_mc_flush. */
void lg_mc_queue_delete(memcached_st *mc, const lg_batch_t *b, size_t slot,
                        lg_tally_t *t);
void lg_mc_flush(memcached_st *mc, lg_tally_t *t);
/* Waits until every server has processed what this handle sent (a get
 * round trip on each connection, which memcached answers in order). */
void lg_mc_sync(memcached_st *mc, lg_tally_t *t);

#endif

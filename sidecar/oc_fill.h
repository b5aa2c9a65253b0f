/*
 * oc_fill: loading cache misses from PostgreSQL: coalesced within this
 * sidecar, leased across sidecars, and safe against stale sets.
 *
 * A fill is one cache key being loaded. While it is in the fills' map (keyed
 * by the cache key) every miss of that key in this sidecar joins it instead
 * of loading again. The fills started in one loop turn, by any number of
 * requests, are grouped by model into batches: a batch is one memcached
 * read (the lease) and one PostgreSQL query, and each waiter is answered as
 * soon as its own key is resolved.
 *
 * Leases (as in Facebook's "Scaling Memcache"), memcached's own: a read of
 * a missing key with `mg <key> v c f k N<ttl>` (memcached >= 1.6) makes an
 * empty item there and tells this reader it won (W); every other reader of
 * that item is told another holds it (Z). Only the winner may fill the key,
 * and only by `cas` with the empty item's cas; any write in between (a
 * push, a tombstone, an invalidation's delete) changes or removes the item,
 * so the fill fails and the stale value never reaches the cache. A sidecar
 * that finds another's lease waits up to lease_wait for the result (so a hot
 * key's expiry does not send every host to the database), then loads by
 * itself without filling. The get's own read may already be such a meta
 * get; otherwise the lease is taken by a second read of the missed keys.
 *
 *   LEASING --read: W / error--> LOADING --rows--> STORING --cas--> RETIRING
 *      |  \--read: Z--> WAITING --read: the value----------------^    |
 *      |                  |--read: W (the holder's lease went)--> LOADING
 *      |                  \--lease_wait over--> LOADING (no lease)     |
 *   a get whose read found W or Z starts in LOADING or WAITING.        |
 *   a failed load fails every waiter, leaves the map at once, and is    |
 *   removed once its lease is deleted (md by cas).                     v
 *                                                                 removed
 * RETIRING: the answer is known and written; the fill keeps answering
 * until every memcached read begun before then (oc_fill_read_begin) has
 * ended (such a read may have missed the key just before it was written),
 * and is then removed.
 *
 * Ownership: the fills own their fills and batches. A waiter is the
 * caller's (embedded in its request); it must stay alive until its done
 * runs, which happens exactly once, never inside oc_fill_misses for a key
 * that needs a load (a key answered by a finished fill is answered at
 * once). Values are refcounted blobs: done borrows the blob (take a
 * reference to keep it).
 */
#ifndef OC_FILL_H
#define OC_FILL_H

#include <stddef.h>
#include <stdint.h>

#include "oc_blob.h"
#include "oc_ctx.h"
#include "oc_entry.h"
#include "oc_result.h"
#include "oc_status.h"

typedef struct oc_fills oc_fills_t;

/* A memcached read whose misses may join fills (oc_req's gets). */
typedef struct oc_fill_read {
    uint64_t seq;
    struct oc_fill_read *prev, *next;
} oc_fill_read_t;

typedef struct oc_fill_waiter oc_fill_waiter_t;
/* state is OC_GET_FOUND (blob), OC_GET_ABSENT or OC_GET_ERROR (err). */
typedef void (*oc_fill_done_fn)(oc_fill_waiter_t *w, oc_get_state_t state,
                                oc_blob_t *blob, const char *err);

struct oc_fill_waiter {
    /* The caller's: */
    const char *ckey; /* the cache key (prefix + Model:canonical id) */
    size_t ckey_len;
    size_t canon_off; /* the canonical id starts at ckey + canon_off */
    size_t model_idx;
    uint64_t read_seq;     /* the oc_fill_read that missed it */
    oc_entry_class_t read; /* what it found: EMPTY, LEASE_WON/HELD, ERROR */
    uint64_t lease_cas;    /* ... and that lease's cas */
    uint64_t lease_epoch;  /* ... read in this cas epoch (hit.cas_epoch) */
    uint64_t lease_place;  /* ... and where the read placed the key (oc_mc's
                              hit.place; 0 = unknown) */
    oc_fill_done_fn done;
    /* The fill's: */
    oc_fill_waiter_t *next;
    int unconfirmed; /* set before done: the object is a push nothing checked
                        yet (OC_ENTRY_PUSHED), not for the near-cache */
};

oc_fills_t *oc_fills_new(oc_ctx_t *ctx, char *err);
/* Shutdown, after oc_mc and oc_pg are freed (their last callbacks end the
 * batches under way): drops what is left. */
void oc_fills_free(oc_fills_t *fs);

void oc_fill_read_begin(oc_fills_t *fs, oc_fill_read_t *r);
/* The read's misses were handed to oc_fill_misses: older fills may go. */
void oc_fill_read_end(oc_fills_t *fs, oc_fill_read_t *r);

/* Resolve every missed key: join a fill under way or start new ones. */
void oc_fill_misses(oc_fills_t *fs, oc_fill_waiter_t **w, size_t n);

/* A write for this cache key was applied: a fill under way must not write
 * its (possibly older) answer back, and later misses must not join it. */
void oc_fill_invalidate(oc_fills_t *fs, const char *ckey, size_t len);

/* Writes may have landed that nobody will name (the feed skipped rows: a
 * resync): every fill under way is treated as invalidated when a later miss
 * would join it, so no read that starts from now on is answered with a row
 * loaded before. Their own waiters are answered as before (their reads
 * began before, and the near-cache's epoch refuses to keep what they got). */
void oc_fill_forget_all(oc_fills_t *fs);

/* Early refresh (a model's refresh_ahead): a read found w's key holding an
 * object about to expire, and memcached chose this reader, of all readers
 * in the fleet, to reload it (oc_mc_hit_t.refresh). The reader has its
 * answer already; this starts a fill that loads the row in the background
 * (batched with the turn's other loads) and writes it back by cas over
 * `cas`, the object's own, as over a lease: a push, tombstone or
 * invalidation that replaces or deletes the object meanwhile wins. Nothing
 * waits on it; a load of the key under way here already is enough. w is
 * only read (its key, model); nobody is called back. */
void oc_fill_refresh(oc_fills_t *fs, const oc_fill_waiter_t *w, uint64_t cas);

/* ---- the pure rules, exposed for unit tests ---- */

typedef enum oc_fill_state {
    OC_FILL_LEASING,  /* to read (and lease) the key */
    OC_FILL_WAITING,  /* another holds the lease: read again later */
    OC_FILL_LOADING,  /* to load from PostgreSQL */
    OC_FILL_STORING,  /* answered; the write-back is under way */
    OC_FILL_RETIRING, /* written; still answers reads begun before */
} oc_fill_state_t;

/* The first state of a fill started by a read that found `found`. */
oc_fill_state_t oc_fill_first_state(oc_entry_class_t found);
/* What a read of the key found, for a fill in `cur` (LEASING or WAITING):
 * its next state. give_up: lease_wait is over. *tries counts reads that
 * found something that is not ours to replace (3 of them: load, no fill). */
oc_fill_state_t oc_fill_after_read(oc_fill_state_t cur, oc_entry_class_t found,
                                   int give_up, int *tries);
/* A lease's cas and the cas epoch of the server it was read from (oc_mc.h):
 * one server's number means nothing on another. */
typedef struct oc_fill_cas {
    uint64_t cas, epoch;
} oc_fill_cas_t;
/* May a waiter take a fill's answer? fill_lease_seq: the read seq when the
 * fill's lease was confirmed (0: it holds none); fill_cas: that lease;
 * fill_sent_seq: the read seq when the fill's last memcached read or load
 * went out (0: none yet). The waiter's read found `w_read` (with lease
 * w_cas) at read seq w_seq. Not when it was read after the fill's lease was
 * there and found the key without that lease: a write removed the lease, so
 * the fill's row may be older than that write. Without a lease, not when
 * it began after the fill's answer was asked for: the key may have been
 * invalidated (by another sidecar) in between, with nothing here to tell.
 * Such a waiter of a fill still under way waits for its next read or load,
 * or joins the next fill once it answers (one load in flight per key). */
int oc_fill_may_answer(uint64_t fill_lease_seq, oc_fill_cas_t fill_cas,
                       uint64_t fill_sent_seq, oc_entry_class_t w_read,
                       oc_fill_cas_t w_cas, uint64_t w_seq);
/* How many queries a new load of n ids goes out as, with `idle` loader
 * connections idle (oc_pg_idle) and load_split_min `min`: as many parts as
 * idle connections, each of min ids or more; 1 (one query) when min is 0,
 * n is under 2 min, or fewer than two connections are idle. */
size_t oc_fill_parts(size_t n, size_t min, size_t idle);
/* The wait before the next read of another's lease: 2 ms, doubling up to
 * 10 ms (up to lease_wait_ms / 25, at most 50 ms, for a longer lease_wait);
 * 0 once lease_wait_ms has passed since `began` (then load). */
uint32_t oc_fill_wait_delay(double began, double now, uint32_t prev_ms,
                            uint32_t lease_wait_ms);

#endif

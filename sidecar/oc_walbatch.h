/*
 * oc_walbatch: what the WAL reader makes of the pgoutput stream, as pure
 * logic: which relations are which models (and where their key column is),
 * and, transaction by transaction, the keys and whole models to invalidate,
 * collected into batches of committed transactions with the LSN to confirm
 * once a batch is applied and the freshness instant it proves.
 *
 * Fed one decoded message at a time (oc_pgoutput), in stream order:
 *   Relation  records where the model's key column is in that relation
 *             (a relation sent again after ALTER TABLE replaces it); one
 *             without a column of the map's name (renamed) makes the
 *             relation's changes invalidate their models whole, and the
 *             transaction asks for the map again (oc_walb_remap)
 *   Begin     opens a transaction
 *   Insert    the new row's key
 *   Update    the new row's key, and the old one when it was sent (the key
 *             changed, or REPLICA IDENTITY FULL)
 *   Delete    the old row's key
 *   Truncate  the whole model of every relation listed
 *   Message   prefix "objcached", transactional: the WAL reader's own
 *             heartbeat, content "<token> <instant>"; the instant is how
 *             fresh the batch proves the feed once this transaction
 *             commits. Any role may write such a message (PUBLIC may run
 *             pg_logical_emit_message): only one that carries this
 *             reader's token (oc_walb_set_token), a secret it wrote only
 *             into its own, counts;
 *             prefix "objcached-map", transactional: the hook's attach or
 *             detach changed the models, or a partition's TRUNCATE their
 *             generations: the transaction asks for the map again
 *             (oc_walb_remap)
 *   Commit    the transaction's changes join the committed part
 * A transaction that touches more than max_txn_keys keys of a model
 * invalidates that model whole instead (a new generation): memory stays
 * bounded whatever one statement does. A key that cannot be read (a
 * DELETE's NULL in a 'K' old row: the replica identity lacks it; unchanged
 * TOAST with no old key beside it; binary) makes its model whole too: never
 * a silent loss. An UPDATE's unchanged TOASTed key ('u', a key stored out of
 * line) with the old key sent ('K' or 'O') is that old key. A NULL key of a
 * row (a new row, a FULL old row) is nothing cached: no key.
 *
 * A change of a relation the map does not know (a Relation message alone
 * is not enough: PostgreSQL describes partitions whose changes come as
 * their root's) means the map is out of date (a table attached since it was
 * read): OC_WALB_RELOAD, and the caller reads the map again and restarts the
 * stream from the last confirmed position, so nothing is skipped.
 *
 * A transaction that asks for the map again (a model attached, moved or
 * detached; a key column renamed) is applied first with the map it was read
 * with (a renamed key's changes whole): once it has committed,
 * oc_walb_remap says 1, the committed part ends with it, and the caller must
 * feed nothing more (what follows would be read with the old map: it comes
 * again after the restart), apply the committed part, then read the map
 * again and restart from the confirmed position, which is past it.
 *
 * Ownership: the accumulator owns its keys; oc_walb_take moves the
 * committed part into a batch the caller owns (oc_walb_batch_free). Model
 * names are interned for the accumulator's whole life, so a batch's model
 * pointers stay valid while the accumulator lives.
 */
#ifndef OC_WALBATCH_H
#define OC_WALBATCH_H

#include <stddef.h>
#include <stdint.h>

#include "oc_pgoutput.h"
#include "oc_status.h"

#define OC_WALB_HEARTBEAT_PREFIX "objcached"
#define OC_WALB_MAP_PREFIX       "objcached-map"
#define OC_WALB_INSTANT_MAX      64 /* a timestamptz as text */
#define OC_WALB_TOKEN_LEN        32 /* the heartbeat token: hex digits */

typedef struct oc_walb oc_walb_t;

typedef enum oc_walb_res {
    OC_WALB_OK,
    OC_WALB_RELOAD, /* a relation the map does not know: reload, restart */
    OC_WALB_BAD,    /* a change outside a transaction, or a broken stream */
} oc_walb_res_t;

/* Committed transactions, ready to apply: pairs (models[i], keys[i]), each
 * once (in the order first changed), the
 * models to invalidate whole, the LSN to confirm, the oldest and newest
 * commit times and the newest heartbeat instant ("" if none). */
typedef struct oc_walb_batch {
    size_t nkeys;
    const char **models; /* interned: valid while the accumulator lives */
    const char **keys;   /* into `arena` */
    size_t *klens;
    size_t nwhole;
    const char **whole;
    uint64_t end_lsn;        /* the last commit's end: confirm it once applied */
    int64_t commit_ts;       /* the newest commit (PostgreSQL epoch, us); 0: none */
    int64_t first_commit_ts; /* the oldest (a failed delete's requeue keeps it) */
    char caught_up_at[OC_WALB_INSTANT_MAX]; /* the newest heartbeat, or "" */
    size_t ntxn;                            /* transactions in it */
    /* The xids of its transactions that touched a model. Decoded is not yet
     * visible: a commit is in the WAL (and sent) before the committing
     * backend leaves the running set, and under synchronous replication it
     * stays invisible until a standby answers; its deletes wait until no
     * xid is running (oc_wal). */
    uint32_t *xids;
    size_t nxids;
    char *arena;
    size_t arena_len; /* its bytes (a merged key's stay there) */
} oc_walb_batch_t;

oc_walb_t *oc_walb_new(size_t max_txn_keys);
/* A new max_txn_keys (a reload): applies from the next key added. */
void oc_walb_set_max_txn_keys(oc_walb_t *b, size_t max_txn_keys);
void oc_walb_free(oc_walb_t *b);

/* The relation map: relid -> (model, key column), as objcached.wal_tables()
 * lists it; a relation may carry several models. A NULL key column (it was
 * dropped) makes every change of the relation invalidate the model whole. Relations of
 * the publication that are no model's are added with model NULL (their changes are
 * ignored, not "unknown"). map_clear forgets it (and the key columns learned from
 * Relation messages, and a pending oc_walb_remap). */
oc_status_t oc_walb_map_add(oc_walb_t *b, uint32_t relid, const char *model,
                            const char *key_column);
void oc_walb_map_clear(oc_walb_t *b);

/* The token of this reader's heartbeats (OC_WALB_TOKEN_LEN characters,
 * copied): a heartbeat message counts only with it. None set: none counts. */
void oc_walb_set_token(oc_walb_t *b, const char *token);

/* One decoded message; err (OC_ERRLEN) says why for RELOAD and BAD. */
oc_walb_res_t oc_walb_feed(oc_walb_t *b, const oc_pgo_msg_t *m, char *err);

/* The stream restarts (a reconnection): an open transaction is dropped (it
 * will be sent again); the committed part stays. */
void oc_walb_restart(oc_walb_t *b);

/* After OC_WALB_RELOAD: the relation the map did not know (0 if that was
 * not the reason). A caller that finds it unknown again after reading the
 * map for it adds it with model NULL (its changes skipped) and feeds the
 * message again. */
uint32_t oc_walb_unknown(const oc_walb_t *b);

/* A committed transaction asked for the map again (see above); until
 * oc_walb_map_clear. */
int oc_walb_remap(const oc_walb_t *b);

/* A transaction's Begin was fed and not its Commit yet. */
int oc_walb_in_txn(const oc_walb_t *b);

/* Is there a committed part, and how many keys does it hold? */
int oc_walb_ready(const oc_walb_t *b);
size_t oc_walb_pending_keys(const oc_walb_t *b);

/* Move the committed part into *out (zeroed first); OC_ENOMEM if out of
 * memory (nothing moved). */
oc_status_t oc_walb_take(oc_walb_t *b, oc_walb_batch_t *out);
/* The bytes the accumulator's buffers hold (capacity, not use): they grow
 * with a batch, and oc_walb_take gives back what a large one left once the
 * keys that remain need under half of it (never below room for 4,096 keys
 * and 256 KiB of their text). */
size_t oc_walb_bytes(const oc_walb_t *b);
void oc_walb_batch_free(oc_walb_batch_t *bt);

/* How many of xids[0..n) (32-bit, a batch's: recent, within 2^31 of the
 * snapshot's xmax) the snapshot `snap` does not see yet, or -1 if it does
 * not parse (or out of memory). `snap` is pg_current_snapshot()'s text,
 * "xmin:xmax:xip,...": a committed xid is visible to it unless it is in the
 * running list xip, or at or past xmax (a transaction that has not left
 * the running set yet can be past it). Compared modulo 2^32. */
long oc_walb_running(const char *snap, const uint32_t *xids, size_t n);

#endif

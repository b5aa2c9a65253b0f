/*
 * oc_gens: whether this sidecar knows its models' generations, and a
 * reader that learns them while it does not.
 *
 * Cache keys carry their model's generation (a TRUNCATE bumps it), read
 * from objcached.models. A sidecar that could not read them at start
 * (PostgreSQL down, out of connection slots, the read timed out on a lock)
 * used generation 0 until its consumer or feed read them: it read and
 * filled keys that no invalidation deletes (the other sidecars delete under
 * the real generation), and served them stale after a write for as long as
 * its consumer had no connection (found by a review of max_connections).
 *
 * So while they are unknown (ctx->gens_unknown), gets do not use memcached:
 * each missed key is loaded from PostgreSQL (coalesced as always) and
 * answered, nothing is read from or written back to memcached (oc_req).
 * They become known at the first read that succeeds, by anyone: the
 * start's blocking read (oc_inval_read_generations), the consumer's cycle,
 * the feed's resync, or this module's reader: one connection
 * (application_name objcached-generations) that exists only while they are
 * unknown and reads them as soon as PostgreSQL lets it. An answer that no
 * retry changes (no objcached.models or schema: the hook is not installed;
 * no grant on it) is taken as before: every generation is 0, said at warn.
 *
 * Ownership: the daemon makes one (oc_gens_new) and frees it after the
 * loop; loop thread only. It writes ctx->gens_unknown, the stat of the
 * same name and ctx->model_gen (forward only, oc_gens_follow); the
 * readers tell it what they read.
 */
#ifndef OC_GENS_H
#define OC_GENS_H

#include "oc_ctx.h"

typedef struct oc_gens oc_gens_t;

oc_gens_t *oc_gens_new(oc_ctx_t *ctx);
void oc_gens_free(oc_gens_t *g);

/* A read of the generations failed (sqlstate "" or NULL when PostgreSQL
 * gave none, why its message; `source` as for oc_gens_read): unknown, said
 * once (event=generations_unknown), and the reader starts; unless no retry
 * would do better (oc_gens_never_readable): then 0, as before, said too. */
void oc_gens_failed(oc_gens_t *g, const char *source, const char *sqlstate,
                    const char *why);
/* source (start, reload, consumer, resync, reader) read them: known (said with
 * event=generations_known if they were unknown), the reader's connection
 * goes. */
void oc_gens_read(oc_gens_t *g, const char *source);

/* Generations read from the hook whose objcached.generation_seq has OID
 * `oid` (0: unknown, as before any hook), by one of the two readers (the
 * consumer, the feed follower; *seen: the OID of that reader's last
 * read). The process's models follow one hook at a time (*current, the
 * ctx's gens_oid). The first read of a new hook, by either reader, starts
 * every model over (RESET: a reinstalled hook's generations may be below
 * ours: one installed by a version before 2026-12-05 starts over from 1);
 * every later read of that hook, the other reader's first one too, moves
 * them forward only (APPLY), so a read taken before a TRUNCATE the other
 * reader applied cannot undo it. A reader still on a hook the other has
 * left (its read predates the reinstall) is ignored (IGNORE) until it sees
 * the new one. */
typedef enum oc_gens_rule {
    OC_GENS_APPLY,
    OC_GENS_RESET,
    OC_GENS_IGNORE,
} oc_gens_rule_t;
oc_gens_rule_t oc_gens_rule(unsigned long *current, unsigned long *seen,
                            unsigned long oid);
/* oc_gens_rule on ctx->gens_oid; a RESET sets every model to 0 (logs
 * it, with `source` when not NULL). 0: ignore this read's generations. */
int oc_gens_follow(oc_ctx_t *ctx, unsigned long *seen, unsigned long oid,
                   const char *source);

/* ---- the pure rules, exposed for unit tests ---- */

/* 1 if a failed read's SQLSTATE says this role will not read them here
 * however often it tries: undefined table 42P01 or invalid schema 3F000
 * (no hook installed), insufficient privilege 42501 (no grant). */
int oc_gens_never_readable(const char *sqlstate);

#endif

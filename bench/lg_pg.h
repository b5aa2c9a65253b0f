/*
 * lg_pg: the PostgreSQL side of the load generator: one blocking libpq
 * connection per thread, as a hand-written application has, with two
 * statements prepared once:
 *
 *   lg_any  SELECT id, row_to_json(t)::text FROM <table> t
 *           WHERE id = ANY($1::bigint[])        -- $1 = '{1,2,3}'
 *   lg_one  SELECT id, row_to_json(t)::text FROM <table> t WHERE id = $1
 *
 * Every row returned is checked against the batch: an id that was asked
 * for and is still wanted, and JSON that starts with {"id":<id>,. Good rows
 * become LG_SLOT_LOADED and are passed to the caller's callback while the
 * result is alive (the hand pattern writes them back from there).
 *
 * A broken connection is reset (and the statements prepared again) before
 * the next query; the failed query counts as an error of its batch.
 *
 * Ownership: lg_pg_open returns an lg_pg_t the caller frees with
 * lg_pg_close. The callback's json pointer is valid only during the call.
 */
#ifndef LG_PG_H
#define LG_PG_H

#include <stddef.h>

#include "lg_batch.h"

typedef struct lg_pg lg_pg_t;
typedef void (*lg_row_fn)(void *ctx, size_t slot, const char *json, size_t len);

/* NULL with err when the connection or the prepares fail. */
lg_pg_t *lg_pg_open(const char *conninfo, const char *table, char *err, size_t errlen);
void lg_pg_close(lg_pg_t *pg);

/* One = ANY query for the given slots of b. fn may be NULL. */
void lg_pg_load_any(lg_pg_t *pg, lg_batch_t *b, const size_t *slots, size_t n,
                    lg_row_fn fn, void *ctx, lg_tally_t *t);
/* One = $1 query for one slot of b. */
void lg_pg_load_one(lg_pg_t *pg, lg_batch_t *b, size_t slot, lg_row_fn fn, void *ctx,
                    lg_tally_t *t);

#endif

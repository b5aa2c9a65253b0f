/*
 * oc_write: the app's save and delete events.
 *
 *   push       `set Model:id <flags> <exptime> <bytes>` + the object's JSON:
 *              written through to memcached with the model's TTL. The body
 *              must be one JSON object of at most max_value bytes. When the
 *              model has a version_column, an older push (smaller version
 *              than the cached object) loses: NOT_STORED. A tombstone is
 *              never replaced by a push (the DB hook clears it if the row
 *              comes back). A push that nothing in the cache proves newer
 *              (no version_column, or an empty key) is checked against
 *              PostgreSQL after the reply, and replaced by the row if they
 *              differ (see "the check" in oc_write.c).
 *   tombstone  `delete Model:id`: a TOMBSTONE entry for tombstone_ttl;
 *              reads answer "absent" without asking PostgreSQL, and no
 *              fill can replace it (fills only replace their own lease).
 *
 * Both also stop this sidecar's fills under way for the key from writing
 * back (oc_fill_invalidate). The client's flags and exptime are ignored:
 * objects are served with flags 0 and kept for the model's TTL (with the
 * key's jitter, oc_entry).
 *
 * Ownership: a write belongs to itself once started; `done` is called once
 * (never inside oc_write_push/tombstone) with the typed outcome, unless the
 * caller detached it (oc_write_detach), and the write frees itself after.
 */
#ifndef OC_WRITE_H
#define OC_WRITE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "oc_ctx.h"
#include "oc_mc.h"
#include "oc_result.h"
#include "oc_status.h"

typedef struct oc_writes oc_writes_t;
typedef struct oc_write oc_write_t;
/* err: why, for OC_WRITE_FAILED; valid during the call. */
typedef void (*oc_write_done_fn)(void *arg, oc_write_outcome_t o, const char *err);

/* The write path's own state: pushes waiting for their check, and the
 * event that starts the checks. oc_writes_free drops what still waits
 * (daemon shutdown, after oc_mc and oc_pg are freed: their last callbacks
 * may queue or end checks). */
oc_writes_t *oc_writes_new(oc_ctx_t *ctx, char *err);
void oc_writes_free(oc_writes_t *ws);
/* Writes stored and waiting for their check against PostgreSQL, at most:
 * past it the reply of a write that needs a check waits for the check (its
 * connection reads on after that), which bounds the memory a client pushing
 * faster than PostgreSQL answers can hold (about 3.4 KiB a 230-byte push). */
#define OC_WRITE_CHECKS_MAX 16384

/* Writes not finished: in memcached, or stored and waiting for their check
 * against PostgreSQL (their clients may be gone). A shutdown waits for them:
 * a late push left unchecked would be served for its whole ttl. */
size_t oc_writes_pending(const oc_writes_t *ws);

/* Validate and start. On a client error returns OC_EINVAL/OC_ETOOBIG with
 * the reason in err and nothing started; OC_ENOMEM if out of memory. `json`
 * is copied. */
oc_status_t oc_write_push(oc_ctx_t *ctx, const char *key, size_t klen, const char *json,
                          size_t len, oc_write_done_fn done, void *arg, oc_write_t **out,
                          char *err);
oc_status_t oc_write_tombstone(oc_ctx_t *ctx, const char *key, size_t klen,
                               oc_write_done_fn done, void *arg, oc_write_t **out,
                               char *err);
void oc_write_detach(oc_write_t *w);

/* 1 if json[0..len) is one JSON object; exposed for tests. */
int oc_write_is_json_object(const char *json, size_t len);

/* ---- the pure rules, exposed for unit tests ---- */

/* A push's body: one JSON object (duplicate names refused), with a
 * `version_column` field when the model has one (NULL: none). On OC_OK
 * *obj is the parsed object and *version its field's value (NULL without
 * a version_column), each a reference the caller owns (json_decref); on
 * OC_EINVAL the reason is in err and both are NULL. */
oc_status_t oc_write_parse_body(const char *json, size_t len, const char *version_column,
                                json_t **obj, json_t **version, char *err);
/* 1 if v, a push body's key column (NULL: the body has none), is the id
 * canon (canonical, as oc_key_parse makes it) of a key of that type: an
 * integer or the same text; a uuid in either case. */
int oc_write_id_matches(const json_t *v, oc_key_type_t type, const char *canon,
                        size_t canon_len);
/* Compare two version values: -1, 0, 1 as a <, =, > b; 2 if they cannot be
 * compared (different types, or not numbers or strings). Integers exactly,
 * numbers as doubles; two ISO 8601 timestamps as instants (with an offset
 * both, or without both; else 2), other strings bytewise. */
int oc_write_version_cmp(const json_t *a, const json_t *b);
/* What a push with `version` (NULL: the model has no version_column) does
 * with the entry memcached holds (found, flags, val[0..len)): a tombstone
 * keeps (the push loses); an object whose version_column compares older or
 * equal is replaced (WRITE), newer keeps; anything else (absent, a lease, a
 * missing entry, an object without a comparable version) is replaced
 * UNORDERED, to be checked against PostgreSQL. */
oc_mc_decision_t oc_write_decide(const json_t *version, const char *version_column,
                                 int found, uint32_t flags, const char *val, size_t len);
/* The client's answer for a write whose memcached item ended with r. */
oc_write_outcome_t oc_write_outcome(int tombstone, oc_mc_result_t r);
/* 1 if a write stored with r must be checked against PostgreSQL: the model
 * checks pushes (push_check), and it is a tombstone (stored whatever the
 * key held: a late one may hide a row that came back) or a push memcached
 * could not order. */
int oc_write_needs_check(int tombstone, int push_check, oc_mc_result_t r, int unordered);
/* The check's compare: 1 if PostgreSQL's row (row_json[0..len), NULL: no
 * row) is the same JSON value as the pushed object: member order aside; an
 * integer never equals a real (1 and 1.0 differ, as jansson parses them). */
int oc_write_check_agrees(const json_t *pushed, const char *row_json, size_t len);

#endif

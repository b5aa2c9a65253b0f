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
 * objects are served with flags 0 and kept for the model's TTL.
 *
 * Ownership: like oc_req, a write belongs to itself once started; `reply`
 * is called once with the reply line (unless detached via oc_write_detach).
 */
#ifndef OC_WRITE_H
#define OC_WRITE_H

#include <stddef.h>

#include "oc_daemon.h"

struct evbuffer;
typedef struct oc_write oc_write_t;
typedef void (*oc_write_reply_fn)(void *conn, const char *line);

/* Validate and start. On a client error returns OC_EINVAL/OC_ETOOBIG with
 * the reason in err and nothing started. `json` is copied. */
oc_status_t oc_write_push(oc_daemon_t *d, const char *key, size_t klen, const char *json,
                          size_t len, void *conn, oc_write_reply_fn reply,
                          oc_write_t **out, char *err);
oc_status_t oc_write_tombstone(oc_daemon_t *d, const char *key, size_t klen, void *conn,
                               oc_write_reply_fn reply, oc_write_t **out, char *err);
void oc_write_detach(oc_write_t *w);

/* The push check's event (d->check_ev); oc_write_free_checks drops the
 * pushes still queued for a check and frees it (daemon shutdown, after
 * oc_mc and oc_pg are freed: their callbacks may queue or end checks). */
oc_status_t oc_write_init(oc_daemon_t *d, char *err);
void oc_write_free_checks(oc_daemon_t *d);

/* 1 if json[0..len) is one JSON object; exposed for tests. */
int oc_write_is_json_object(const char *json, size_t len);

#endif

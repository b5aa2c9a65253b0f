/*
 * oc_reload: SIGHUP re-reads the configuration file and applies it without
 * dropping client connections, or refuses it (with a log line) and keeps
 * the old one.
 *
 * What may change, and what needs a restart, is the configuration's key
 * table (oc_conf.c: the restart column; `objcached --help-config` prints
 * it): a new file that changes a restart key is refused as a whole. What a
 * reload does with the rest: models are added, removed or changed (their
 * load statements are prepared again), the memcached server list and
 * timeouts change (servers kept keep their connections), the invalidation
 * consumer starts or stops with invalidation_poll, limits apply to the next
 * command, and log_level at once.
 *
 * Model indexes never change while objcached runs, because loads, fills
 * and counters under way hold them: a model keeps its index across
 * reloads, a removed model stays in the table disabled (no key reaches it),
 * and a new one is appended.
 *
 * Contract: loop thread only; on success ctx->conf is the new configuration
 * and the old one is freed.
 */
#ifndef OC_RELOAD_H
#define OC_RELOAD_H

#include <stddef.h>
#include <stdint.h>

#include "oc_ctx.h"
#include "oc_status.h"

struct oc_health;

oc_status_t oc_reload(oc_ctx_t *ctx, struct oc_health *health, char *err);

/* ---- the pure rules, exposed for unit tests ---- */

struct oc_conf;
struct oc_model_conf;
/* next's models reordered so that every model of cur keeps its index: the
 * same name lands on the same index (with next's settings), a model next
 * no longer has is copied over from cur and disabled, and new models go
 * after, in next's order. *n entries, shallow copies: the array (malloc'd,
 * the caller's) owns nothing until oc_reload_commit_indexes. NULL if out
 * of memory. */
struct oc_model_conf *oc_reload_keep_indexes(const struct oc_conf *cur,
                                             const struct oc_conf *next, size_t *n);
/* Make `models` next's own: disabled entries move out of cur (zeroed there,
 * so freeing cur does not free them), next's own array is freed. */
void oc_reload_commit_indexes(struct oc_conf *cur, struct oc_conf *next,
                              struct oc_model_conf *models, size_t n);
/* Does the near-cache drop what it holds of a model at a reload? When its
 * near_ttl changed (what it holds may outlive the new one), the model left
 * (disabled), or what its keys name changed (table, key, key_type,
 * columns): entries read under the old definition would be served as the
 * new one's. */
int oc_reload_near_drop(const struct oc_model_conf *old,
                        const struct oc_model_conf *next);

/* What a reload does with a part that runs while its setting is above 0
 * (invalidation_poll: the consumer; feed_poll: the follower). */
typedef enum oc_reload_switch {
    OC_RELOAD_KEEP,  /* as it was: running or not */
    OC_RELOAD_START, /* off before, on now */
    OC_RELOAD_STOP,  /* on before, off now */
} oc_reload_switch_t;
oc_reload_switch_t oc_reload_switch(uint32_t old_value, uint32_t new_value);

#endif

#include "oc_reload.h"

#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_feed.h"
#include "oc_fill.h"
#include "oc_health.h"
#include "oc_inval.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_near.h"
#include "oc_pg.h"
#include "oc_stats.h"

static int find_model(const oc_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->nmodels; i++)
        if (strcmp(c->models[i].name, name) == 0)
            return (int)i;
    return -1;
}

oc_model_conf_t *oc_reload_keep_indexes(const oc_conf_t *cur, const oc_conf_t *next,
                                        size_t *n)
{
    size_t added = 0;
    for (size_t i = 0; i < next->nmodels; i++)
        added += find_model(cur, next->models[i].name) < 0;
    *n = cur->nmodels + added;
    oc_model_conf_t *models = calloc(*n ? *n : 1, sizeof(*models));
    if (models == NULL)
        return NULL;
    for (size_t i = 0; i < cur->nmodels; i++) {
        int j = find_model(next, cur->models[i].name);
        models[i] = j >= 0 ? next->models[j] : cur->models[i];
        models[i].disabled = j < 0;
    }
    size_t k = cur->nmodels;
    for (size_t i = 0; i < next->nmodels; i++)
        if (find_model(cur, next->models[i].name) < 0)
            models[k++] = next->models[i];
    return models;
}

void oc_reload_commit_indexes(oc_conf_t *cur, oc_conf_t *next, oc_model_conf_t *models,
                              size_t n)
{
    for (size_t i = 0; i < cur->nmodels; i++)
        if (models[i].disabled)
            memset(&cur->models[i], 0, sizeof(cur->models[i]));
    free(next->models);
    next->models = models;
    next->nmodels = n;
}

/* Grow the per-model generations to n entries, new ones zeroed. */
static oc_status_t grow_generations(oc_ctx_t *ctx, size_t old, size_t n, char *err)
{
    if (n <= old)
        return OC_OK;
    uint64_t *gen = realloc(ctx->model_gen, n * sizeof(*gen));
    if (gen == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    memset(gen + old, 0, (n - old) * sizeof(*gen));
    ctx->model_gen = gen;
    return OC_OK;
}

static int same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* The object a key names, and its shape: what a cached entry was read as. */
static int same_object(const oc_model_conf_t *a, const oc_model_conf_t *b)
{
    if (!same_text(a->schema, b->schema) || !same_text(a->table, b->table) ||
        !same_text(a->key_column, b->key_column) || a->key_type != b->key_type ||
        a->ncolumns != b->ncolumns)
        return 0;
    for (size_t i = 0; i < a->ncolumns; i++)
        if (!same_text(a->columns[i], b->columns[i]))
            return 0;
    return 1;
}

int oc_reload_near_drop(const oc_model_conf_t *old, const oc_model_conf_t *next)
{
    return old->near_ttl_ms != next->near_ttl_ms || next->disabled ||
           !same_object(old, next);
}

oc_reload_switch_t oc_reload_switch(uint32_t old_value, uint32_t new_value)
{
    if (old_value == 0 && new_value != 0)
        return OC_RELOAD_START;
    if (old_value != 0 && new_value == 0)
        return OC_RELOAD_STOP;
    return OC_RELOAD_KEEP;
}

/* The feed follower follows feed_poll: started or stopped. */
static void reload_feed(oc_ctx_t *ctx, const oc_conf_t *old)
{
    oc_reload_switch_t sw = oc_reload_switch(old->feed_poll_ms, ctx->conf->feed_poll_ms);
    if (sw == OC_RELOAD_START) {
        char ferr[OC_ERRLEN] = "";
        if ((ctx->feed = oc_feed_new(ctx, ferr)) == NULL)
            oc_log_error("event=reload_feed_failed reason=\"%s\"", ferr);
    } else if (sw == OC_RELOAD_STOP) {
        oc_feed_free(ctx->feed); /* the near-cache stops serving with it */
        ctx->feed = NULL;
    }
}

/* The near-cache's size, and the models whose near_ttl changed: what they
 * hold may no longer fit the new lifetime (or the model left it), so it
 * goes. A new key_prefix empties it: invalidations are keyed with the
 * prefix of their moment, so entries kept under the old one would miss
 * every write until the prefix came back (A -> B -> A). Fills under way go
 * the same way, for the same reason. */
static void reload_near(oc_ctx_t *ctx, const oc_conf_t *old)
{
    oc_near_set_limit(ctx->near, ctx->conf->near_cache_size);
    if (strcmp(old->key_prefix, ctx->conf->key_prefix) != 0) {
        oc_near_clear(ctx->near);
        oc_fill_forget_all(ctx->fills);
        return;
    }
    for (size_t i = 0; i < old->nmodels && i < ctx->conf->nmodels; i++)
        if (oc_reload_near_drop(&old->models[i], &ctx->conf->models[i]))
            oc_near_invalidate_model(ctx->near, (uint32_t)i);
}

/* The invalidation consumer follows invalidation_poll: started or stopped. */
static void reload_inval(oc_ctx_t *ctx, const oc_conf_t *old)
{
    if (ctx->conf->wal)
        return; /* the WAL reader's holder runs the consumer */
    oc_reload_switch_t sw =
        oc_reload_switch(old->inval_poll_ms, ctx->conf->inval_poll_ms);
    if (sw == OC_RELOAD_START) {
        char ierr[OC_ERRLEN] = "";
        if ((ctx->inval = oc_inval_new(ctx, ierr)) == NULL)
            oc_log_error("event=reload_inval_failed reason=\"%s\"", ierr);
    } else if (sw == OC_RELOAD_STOP) {
        oc_inval_free(ctx->inval); /* a claim under way rolls back: nothing lost */
        ctx->inval = NULL;
    }
}

oc_status_t oc_reload(oc_ctx_t *ctx, oc_health_t *health, char *err)
{
    oc_conf_t *next = oc_conf_load_file(ctx->conf->path, err);
    if (next == NULL)
        return OC_ECONFIG;
    oc_status_t st;
    const char *fixed = oc_conf_restart_key(ctx->conf, next);
    if (fixed) {
        st = oc_fail(err, OC_ECONFIG, "%s cannot change without a restart", fixed);
        goto fail;
    }
    char clean[OC_ERRLEN];
    for (size_t i = 0; i < next->nwarnings; i++)
        oc_log_warn("event=config_warning reason=\"%s\"",
                    oc_log_clean(clean, sizeof(clean), next->warnings[i]));
    size_t n, nold = ctx->conf->nmodels;
    oc_model_conf_t *models = oc_reload_keep_indexes(ctx->conf, next, &n);
    if (models == NULL || grow_generations(ctx, nold, n, err) != OC_OK ||
        oc_stats_reserve_models(ctx->stats, n) != 0) {
        free(models);
        st = oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    /* The memcached pool first: if it fails, the whole file is refused
     * with nothing switched (oc_mc keeps its old pool on failure). A name
     * that does not resolve refuses nothing: names are resolved off the
     * loop, a new server by its probe. What follows fails only out of
     * memory, and then the new pool stays under the old settings (oc_mc
     * keeps its own copy of the list and the rules). */
    if ((st = oc_mc_reconfigure(ctx->mc, next, err)) != OC_OK) {
        free(models);
        goto fail;
    }
    /* oc_pg builds its statements from the reordered list: show it a view
     * of next with it, and put next back if that fails. */
    oc_model_conf_t *orig = next->models;
    size_t orig_n = next->nmodels;
    next->models = models;
    next->nmodels = n;
    st = oc_pg_reconfigure(ctx->pg, next, err);
    next->models = orig;
    next->nmodels = orig_n;
    if (st != OC_OK) {
        free(models);
        goto fail;
    }
    oc_reload_commit_indexes(ctx->conf, next, models, n);
    /* Past the last failure: switch. */
    oc_conf_t *old = ctx->conf;
    int fresh = n > nold; /* a model added, or back from disabled */
    for (size_t i = 0; i < nold && i < n && !fresh; i++)
        fresh = old->models[i].disabled && !next->models[i].disabled;
    ctx->conf = next;
    /* Such a model's generation is 0 (or what it was when it left) until a
     * consumer's cycle, a feed resync or a whole-model feed row says
     * otherwise, and a WAL standby has no consumer: it would read and write
     * keys of the wrong generation, which the holder's deletes never reach.
     * Read them now, as at start (one short blocking query). */
    if (fresh)
        oc_inval_read_generations(ctx, "reload");
    ctx->max_key_len = OC_KEY_MAX - strlen(next->key_prefix) - OC_KEY_GEN_ROOM;
    for (size_t i = 0; i < n; i++) /* room reserved above */
        oc_stats_name_model(ctx->stats, i,
                            next->models[i].disabled ? "" : next->models[i].name);
    if (health && oc_health_reconfigure(health) != OC_OK)
        oc_log_error("event=reload_health_failed reason=\"out of memory\"");
    reload_inval(ctx, old);
    reload_feed(ctx, old);
    reload_near(ctx, old);
    int level = oc_log_parse_level(next->log_level);
    if (level >= 0)
        oc_log_set_level((oc_log_level_t)level);
    oc_conf_free(old);
    return OC_OK;
fail:
    oc_conf_free(next);
    return st;
}

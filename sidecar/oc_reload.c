#include "oc_reload.h"

#include <stdlib.h>
#include <string.h>

#include "oc_inval.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_pg.h"

/* The first setting that differs and cannot change while running, or NULL. */
static const char *restart_needed(const oc_conf_t *a, const oc_conf_t *b)
{
    struct {
        const char *name;
        const char *x, *y;
    } strs[] = {
        {"listen", a->listen, b->listen},
        {"unix_socket", a->unix_socket, b->unix_socket},
        {"metrics_listen", a->metrics_listen, b->metrics_listen},
        {"user", a->user ? a->user : "", b->user ? b->user : ""},
        {"conninfo", a->conninfo, b->conninfo},
        {"timezone", a->timezone, b->timezone},
        {"log_target", a->log_target, b->log_target},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (strcmp(strs[i].x, strs[i].y) != 0)
            return strs[i].name;
    if (a->unix_socket_mode != b->unix_socket_mode)
        return "unix_socket_mode";
    if (a->pg_connections != b->pg_connections)
        return "connections";
    if (a->load_timeout_ms != b->load_timeout_ms)
        return "load_timeout";
    return NULL;
}

static int find_model(const oc_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->nmodels; i++)
        if (strcmp(c->models[i].name, name) == 0)
            return (int)i;
    return -1;
}

/*
 * next's models reordered so that every model of cur keeps its index: the
 * same name lands on the same index, a model next no longer has is copied
 * over from cur disabled, and new models go after. The entries are shallow
 * copies: nothing is owned by the returned array until commit_indexes().
 */
static oc_model_conf_t *keep_indexes(const oc_conf_t *cur, const oc_conf_t *next,
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

/* Make `models` next's own: disabled entries move out of cur (zeroed there,
 * so freeing cur does not free them). */
static void commit_indexes(oc_conf_t *cur, oc_conf_t *next, oc_model_conf_t *models,
                           size_t n)
{
    for (size_t i = 0; i < cur->nmodels; i++)
        if (models[i].disabled)
            memset(&cur->models[i], 0, sizeof(cur->models[i]));
    free(next->models);
    next->models = models;
    next->nmodels = n;
}

/* Grow the per-model arrays to n entries, new ones zeroed. */
static oc_status_t grow_model_arrays(oc_daemon_t *d, size_t n, char *err)
{
    size_t old = d->stats.nmodels;
    if (n <= old)
        return OC_OK;
    uint64_t *gen = realloc(d->model_gen, n * sizeof(*gen));
    if (gen)
        d->model_gen = gen;
    oc_model_stats_t *ms = realloc(d->stats.models, n * sizeof(*ms));
    if (ms)
        d->stats.models = ms;
    const char **names = realloc(d->model_names, n * sizeof(*names));
    if (names)
        d->model_names = names;
    if (gen == NULL || ms == NULL || names == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    memset(gen + old, 0, (n - old) * sizeof(*gen));
    memset(ms + old, 0, (n - old) * sizeof(*ms));
    return OC_OK;
}

oc_status_t oc_reload(oc_daemon_t *d, char *err)
{
    oc_conf_t *next = oc_conf_load_file(d->conf->path, err);
    if (next == NULL)
        return OC_ECONFIG;
    oc_status_t st;
    const char *fixed = restart_needed(d->conf, next);
    if (fixed) {
        st = oc_fail(err, OC_ECONFIG, "%s cannot change without a restart", fixed);
        goto fail;
    }
    size_t n;
    oc_model_conf_t *models = keep_indexes(d->conf, next, &n);
    if (models == NULL || grow_model_arrays(d, n, err) != OC_OK) {
        free(models);
        st = oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    /* oc_pg builds its statements from the reordered list: show it a view
     * of next with it, and put next back if that fails. */
    oc_model_conf_t *orig = next->models;
    size_t orig_n = next->nmodels;
    next->models = models;
    next->nmodels = n;
    st = oc_pg_reconfigure(d->pg, next, err);
    next->models = orig;
    next->nmodels = orig_n;
    if (st != OC_OK) {
        free(models);
        goto fail;
    }
    commit_indexes(d->conf, next, models, n);
    if (oc_mc_reconfigure(d->mc, next, err) != OC_OK) /* keeps the old pool */
        oc_log_error("event=reload_memcached_failed reason=\"%s\"", err);
    /* Past the last failure: switch. */
    oc_conf_t *old = d->conf;
    d->conf = next;
    d->max_key_len = OC_KEY_MAX - strlen(next->key_prefix) - OC_KEY_GEN_ROOM;
    for (size_t i = 0; i < next->nmodels; i++)
        d->model_names[i] = next->models[i].name;
    d->stats.nmodels = next->nmodels;
    d->stats.model_names = (const char *const *)d->model_names;
    if (oc_daemon_mc_health_init(d) != OC_OK)
        oc_log_error("event=reload_health_failed reason=\"out of memory\"");
    /* The consumer follows invalidation_poll: started or stopped here. */
    if (old->inval_poll_ms == 0 && next->inval_poll_ms != 0) {
        char ierr[OC_ERRLEN] = "";
        if ((d->inval = oc_inval_new(d, ierr)) == NULL)
            oc_log_error("event=reload_inval_failed reason=\"%s\"", ierr);
    } else if (old->inval_poll_ms != 0 && next->inval_poll_ms == 0) {
        oc_inval_free(d->inval); /* a claim under way rolls back: nothing lost */
        d->inval = NULL;
    }
    int level = oc_log_parse_level(next->log_level);
    if (level >= 0)
        oc_log_set_level((oc_log_level_t)level);
    oc_conf_free(old);
    return OC_OK;
fail:
    oc_conf_free(next);
    return st;
}

#include "oc_walowed.h"

#include <stdlib.h>
#include <string.h>

/* Interned names: the same model is the same pointer, so that is tried
 * first; equal text under another pointer is still the same model. */
static int owed(const oc_walowed_t *o, const char *model)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->models[i] == model)
            return 1;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->models[i], model) == 0)
            return 1;
    return 0;
}

oc_status_t oc_walowed_add(oc_walowed_t *o, const char *const *models, size_t n,
                           int64_t commit_ts, double now)
{
    size_t before = o->n;
    for (size_t i = 0; i < n; i++) {
        /* a batch's keys come in runs of one model (a bulk UPDATE: 100,000) */
        if ((i > 0 && models[i] == models[i - 1]) || owed(o, models[i]))
            continue;
        if (o->n == o->cap) {
            size_t cap = o->cap ? 2 * o->cap : 8;
            const char **m = realloc(o->models, cap * sizeof(*m));
            if (m == NULL) {
                o->n = before; /* as it was */
                return OC_ENOMEM;
            }
            o->models = m;
            o->cap = cap;
        }
        o->models[o->n++] = models[i];
    }
    if (n > 0) {
        if (o->since == 0)
            o->since = now > 0 ? now : 1e-9; /* 0 means nothing owed */
        if (commit_ts > o->commit_ts)
            o->commit_ts = commit_ts;
    }
    return OC_OK;
}

int oc_walowed_due(const oc_walowed_t *o, int claims, int must, double now,
                   double heartbeat_s)
{
    if (o->n == 0)
        return 0;
    return claims || must || now - o->since >= heartbeat_s;
}

void oc_walowed_clear(oc_walowed_t *o)
{
    o->n = 0;
    o->commit_ts = 0;
    o->since = 0;
}

void oc_walowed_free(oc_walowed_t *o)
{
    free(o->models);
    *o = (oc_walowed_t){0};
}

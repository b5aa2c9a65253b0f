#include "oc_gate.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oc_log.h"

struct oc_gate {
    struct event_base *base;
    char *path; /* the fill gate's file, or NULL */
    char *oom;  /* ",where,where," or NULL */
    int no_health_probe;
};

static char *env_copy(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strdup(v) : NULL;
}

oc_gate_t *oc_gate_new(struct event_base *base)
{
    const char *no_probe = getenv("OBJCACHED_FAULT_NO_HEALTH_PROBE");
    if (!getenv("OBJCACHED_FAULT_FILL_GATE") && !getenv("OBJCACHED_FAULT_OOM") &&
        !(no_probe && strcmp(no_probe, "1") == 0))
        return NULL;
    oc_gate_t *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        oc_log_error("event=fault_point_failed reason=\"out of memory\"");
        return NULL;
    }
    g->base = base;
    g->path = env_copy("OBJCACHED_FAULT_FILL_GATE");
    const char *oom = getenv("OBJCACHED_FAULT_OOM");
    size_t len = oom ? strlen(oom) + 3 : 0;
    if (oom && *oom && (g->oom = malloc(len)) != NULL)
        snprintf(g->oom, len, ",%s,", oom);
    if (g->path)
        oc_log_warn("event=fault_point name=fill_gate path=%s", g->path);
    if (g->oom)
        oc_log_warn("event=fault_point name=oom where=%s", oom);
    if ((g->no_health_probe = no_probe && strcmp(no_probe, "1") == 0))
        oc_log_warn("event=fault_point name=no_health_probe");
    return g;
}

void oc_gate_free(oc_gate_t *g)
{
    if (g == NULL)
        return;
    free(g->path);
    free(g->oom);
    free(g);
}

int oc_gate_hold(oc_gate_t *g, struct event **timer, event_callback_fn cb, void *arg)
{
    if (g == NULL || g->path == NULL || access(g->path, F_OK) != 0)
        return 0;
    if (*timer == NULL && (*timer = evtimer_new(g->base, cb, arg)) == NULL)
        return 0; /* out of memory: do not hold */
    evtimer_assign(*timer, g->base, cb, arg);
    struct timeval tv = {0, 10000};
    evtimer_add(*timer, &tv);
    return 1;
}

int oc_gate_listed(const char *list, const char *where)
{
    size_t n = strlen(where);
    if (n == 0) /* strstr would match at the list's start: p[-1] before it */
        return 0;
    for (const char *p = strstr(list, where); p; p = strstr(p + 1, where))
        if (p > list && p[-1] == ',' && p[n] == ',')
            return 1;
    return 0;
}

int oc_gate_oom(const oc_gate_t *g, const char *where)
{
    if (g == NULL || g->oom == NULL)
        return 0;
    return oc_gate_listed(g->oom, where);
}

int oc_gate_no_health_probe(const oc_gate_t *g)
{
    return g != NULL && g->no_health_probe;
}

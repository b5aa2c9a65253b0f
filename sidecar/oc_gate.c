#include "oc_gate.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oc_log.h"

struct oc_gate {
    struct event_base *base;
    char *path;
};

oc_gate_t *oc_gate_new(struct event_base *base)
{
    const char *path = getenv("OBJCACHED_FAULT_FILL_GATE");
    if (path == NULL || *path == '\0')
        return NULL;
    oc_gate_t *g = calloc(1, sizeof(*g));
    if (g == NULL || (g->path = strdup(path)) == NULL) {
        free(g);
        oc_log_error("event=fault_point_failed name=fill_gate reason=\"out of memory\"");
        return NULL;
    }
    g->base = base;
    oc_log_warn("event=fault_point name=fill_gate path=%s", path);
    return g;
}

void oc_gate_free(oc_gate_t *g)
{
    if (g == NULL)
        return;
    free(g->path);
    free(g);
}

int oc_gate_hold(oc_gate_t *g, struct event **timer, event_callback_fn cb, void *arg)
{
    if (g == NULL || access(g->path, F_OK) != 0)
        return 0;
    if (*timer == NULL && (*timer = evtimer_new(g->base, cb, arg)) == NULL)
        return 0; /* out of memory: do not hold */
    evtimer_assign(*timer, g->base, cb, arg);
    struct timeval tv = {0, 10000};
    evtimer_add(*timer, &tv);
    return 1;
}

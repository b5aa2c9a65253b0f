#include "oc_health.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_gate.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_stats.h"
#include "oc_tko.h"

#define OC_PROBE_INTERVAL_S 2

struct oc_health {
    oc_ctx_t *ctx;
    struct event *timer;
    int probing; /* a probe job is out */
};

static void free_table(oc_stats_t *st)
{
    for (size_t i = 0; i < st->nmc; i++)
        free(st->mc_names[i]);
    free(st->mc_names);
    free(st->mc_up);
    free(st->mc_state);
    st->mc_names = NULL;
    st->mc_up = NULL;
    st->mc_state = NULL;
    st->nmc = st->nmc_pool = 0;
    st->mc_servers_up = 0;
}

/* The states only: the names and counts stay (oc_mc renumbers its
 * servers only in oc_mc_reconfigure, which rebuilds the whole table). */
static void fill_states(oc_health_t *h)
{
    oc_stats_t *st = h->ctx->stats;
    const oc_mc_t *mc = h->ctx->mc;
    uint64_t up = 0;
    for (size_t i = 0; mc && i < st->nmc; i++) {
        int gutter = i >= st->nmc_pool;
        int state = oc_mc_state(mc, gutter, gutter ? i - st->nmc_pool : i);
        st->mc_state[i] = oc_tko_state_name((oc_tko_state_t)state);
        st->mc_up[i] = state == OC_TKO_UP;
        up += !gutter && state == OC_TKO_UP;
    }
    st->mc_servers_up = up;
}

oc_status_t oc_health_reconfigure(oc_health_t *h)
{
    oc_stats_t *st = h->ctx->stats;
    const oc_mc_t *mc = h->ctx->mc;
    size_t np = mc ? oc_mc_count(mc, 0) : 0, n = np + (mc ? oc_mc_count(mc, 1) : 0);
    char **names = calloc(n ? n : 1, sizeof(*names));
    uint64_t *up = calloc(n ? n : 1, sizeof(*up));
    const char **state = calloc(n ? n : 1, sizeof(*state));
    size_t made = 0;
    for (; names && up && state && made < n; made++) {
        int gutter = made >= np;
        if ((names[made] = strdup(oc_mc_name(mc, gutter, gutter ? made - np : made))) ==
            NULL)
            break;
    }
    if (names == NULL || up == NULL || state == NULL || made < n) {
        for (size_t i = 0; names && i < made; i++)
            free(names[i]);
        free(names);
        free(up);
        free(state);
        return OC_ENOMEM;
    }
    free_table(st);
    st->mc_names = names;
    st->mc_up = up;
    st->mc_state = state;
    st->nmc = n;
    st->nmc_pool = np;
    fill_states(h);
    return OC_OK;
}

/* oc_mc: a server's state changed, or its lists did. */
static void on_changed(void *arg)
{
    oc_health_t *h = arg;
    const oc_mc_t *mc = h->ctx->mc;
    oc_stats_t *st = h->ctx->stats;
    if (mc && oc_mc_count(mc, 0) + oc_mc_count(mc, 1) == st->nmc &&
        oc_mc_count(mc, 0) == st->nmc_pool)
        fill_states(h);
    else if (oc_health_reconfigure(h) != OC_OK)
        oc_log_error("event=oom where=health_table");
}

static void probe_done(oc_mc_job_t *job, void *arg)
{
    oc_health_t *h = arg;
    h->probing = 0;
    /* Nothing to read here: a server that did not answer had a failure
     * counted by oc_mc, which changes its state when there are enough. */
    for (size_t i = 0; i < job->n; i++)
        free((char *)job->items[i].key);
    oc_mc_job_free(job);
}

int oc_health_split_name(const char *name, char *host, size_t cap, uint32_t *port)
{
    const char *colon = strrchr(name, ':');
    if (colon == NULL)
        return -1;
    size_t hl = (size_t)(colon - name);
    const char *h = name;
    if (name[0] == '[') {
        if (hl < 2 || name[hl - 1] != ']')
            return -1;
        h++, hl -= 2;
    } else if (memchr(name, ':', hl) || memchr(name, ']', hl)) {
        return -1; /* a v6 address without its brackets */
    }
    const char *p = colon + 1;
    uint32_t v = 0;
    for (; *p >= '0' && *p <= '9' && v <= 65535; p++)
        v = v * 10 + (uint32_t)(*p - '0');
    if (hl == 0 || hl >= cap || p == colon + 1 || *p != '\0' || v > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = v;
    return 0;
}

static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_health_t *h = arg;
    oc_ctx_t *ctx = h->ctx;
    struct timeval tv = {OC_PROBE_INTERVAL_S, 0};
    evtimer_add(h->timer, &tv);
    if (h->probing || ctx->stopping || ctx->mc == NULL ||
        oc_gate_no_health_probe(ctx->gate))
        return;
    /* Servers in service only: oc_mc probes the others itself. */
    const oc_stats_t *st = ctx->stats;
    size_t n = 0;
    for (size_t i = 0; i < st->nmc; i++)
        n += st->mc_up[i] != 0;
    if (n == 0)
        return;
    oc_mc_job_t *job = oc_mc_job_new_items(OC_MC_PROBE, n, probe_done, h);
    if (job == NULL)
        return;
    size_t k = 0;
    for (size_t i = 0; i < st->nmc && k < n; i++) {
        if (!st->mc_up[i])
            continue;
        /* The job's own copy of the host: a reload may change the table
         * meanwhile. A name that cannot be split is probed as nothing (it
         * fails as "server down"). */
        char host[160];
        uint32_t port = 0;
        if (oc_health_split_name(st->mc_names[i], host, sizeof(host), &port) != 0)
            host[0] = '\0', port = 0;
        job->items[k].key = strdup(host);
        job->items[k].flags = port;
        k++;
    }
    job->n = k;
    h->probing = 1;
    oc_mc_submit(ctx->mc, job);
}

oc_health_t *oc_health_new(oc_ctx_t *ctx, char *err)
{
    oc_health_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    h->ctx = ctx;
    if (oc_health_reconfigure(h) != OC_OK ||
        (h->timer = evtimer_new(ctx->base, on_probe, h)) == NULL) {
        oc_health_free(h);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    if (ctx->mc)
        oc_mc_watch(ctx->mc, ctx->stats, on_changed, h);
    struct timeval tv = {0, 1000};
    evtimer_add(h->timer, &tv);
    return h;
}

void oc_health_free(oc_health_t *h)
{
    if (h == NULL)
        return;
    if (h->timer)
        event_free(h->timer);
    free_table(h->ctx->stats);
    free(h);
}

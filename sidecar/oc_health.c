#include "oc_health.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_stats.h"

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
    st->mc_names = NULL;
    st->mc_up = NULL;
    st->nmc = 0;
    st->mc_servers_up = 0;
}

oc_status_t oc_health_reconfigure(oc_health_t *h)
{
    const oc_conf_t *conf = h->ctx->conf;
    oc_stats_t *st = h->ctx->stats;
    size_t n = conf->nservers;
    char **names = calloc(n ? n : 1, sizeof(*names));
    uint64_t *up = calloc(n ? n : 1, sizeof(*up));
    for (size_t i = 0; names && up && i < n; i++) {
        const oc_mc_server_conf_t *sv = &conf->servers[i];
        size_t len = strlen(sv->host) + 16;
        if ((names[i] = malloc(len)) == NULL)
            break;
        snprintf(names[i], len, strchr(sv->host, ':') ? "[%s]:%u" : "%s:%u", sv->host,
                 (unsigned)sv->port);
        up[i] = 1;
    }
    if (names == NULL || up == NULL || (n > 0 && names[n - 1] == NULL)) {
        for (size_t i = 0; names && i < n; i++)
            free(names[i]);
        free(names);
        free(up);
        return OC_ENOMEM;
    }
    free_table(st);
    st->mc_names = names;
    st->mc_up = up;
    st->nmc = n;
    st->mc_servers_up = n;
    return OC_OK;
}

static void probe_done(oc_mc_job_t *job, void *arg)
{
    oc_health_t *h = arg;
    oc_stats_t *st = h->ctx->stats;
    h->probing = 0;
    /* A reload may have changed the list while the probe was out. */
    if (job->n == st->nmc) {
        uint64_t up = 0;
        for (size_t i = 0; i < job->n; i++) {
            uint64_t now_up = job->items[i].result == OC_MC_R_OK;
            if (now_up != st->mc_up[i])
                oc_log(now_up ? OC_LOG_INFO : OC_LOG_WARN, "event=memcached_%s server=%s",
                       now_up ? "up" : "down", st->mc_names[i]);
            st->mc_up[i] = now_up;
            up += now_up;
        }
        st->mc_servers_up = up;
    }
    for (size_t i = 0; i < job->n; i++)
        if (job->items[i].key[0] != '\0')
            free((char *)job->items[i].key);
    oc_mc_job_free(job);
}

static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_health_t *h = arg;
    oc_ctx_t *ctx = h->ctx;
    struct timeval tv = {OC_PROBE_INTERVAL_S, 0};
    evtimer_add(h->timer, &tv);
    if (h->probing || ctx->stopping || ctx->mc == NULL)
        return;
    const oc_conf_t *conf = ctx->conf;
    oc_mc_job_t *job = oc_mc_job_new_items(OC_MC_PROBE, conf->nservers, probe_done, h);
    if (job == NULL)
        return;
    for (size_t i = 0; i < conf->nservers; i++) {
        /* The job's own copies: a reload may free the config meanwhile. */
        job->items[i].key = strdup(conf->servers[i].host);
        job->items[i].flags = conf->servers[i].port;
        if (job->items[i].key == NULL)
            job->items[i].key = "";
    }
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

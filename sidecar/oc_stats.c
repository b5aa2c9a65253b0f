#include "oc_stats.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const double oc_hist_bounds[OC_HIST_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10,
};

void oc_hist_observe(oc_hist_t *h, double seconds)
{
    size_t i = 0;
    while (i < OC_HIST_BUCKETS && seconds > oc_hist_bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += seconds;
}

double oc_stats_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int oc_stats_reserve_models(oc_stats_t *st, size_t n)
{
    if (n <= st->models_cap)
        return 0;
    oc_model_stats_t *m = realloc(st->models, n * sizeof(*m));
    if (m == NULL)
        return -1;
    st->models = m;
    const char **nm = realloc(st->model_names, n * sizeof(*nm));
    if (nm == NULL)
        return -1; /* models grew, harmlessly: the cap says how much */
    st->model_names = nm;
    st->models_cap = n;
    return 0;
}

void oc_stats_name_model(oc_stats_t *st, size_t i, const char *name)
{
    if (i >= st->models_cap)
        return; /* cannot happen when reserved first */
    if (i >= st->nmodels) {
        memset(st->models + st->nmodels, 0, (i + 1 - st->nmodels) * sizeof(*st->models));
        for (size_t k = st->nmodels; k < i; k++)
            st->model_names[k] = "";
        st->nmodels = i + 1;
    }
    st->model_names[i] = name;
}

void oc_stats_free(oc_stats_t *st)
{
    free(st->models);
    free(st->model_names);
    st->models = NULL;
    st->model_names = NULL;
    st->nmodels = st->models_cap = 0;
}

void oc_stats_reset(oc_stats_t *st)
{
#define OC_STATS_RESET_COUNTER(name) st->name = 0;
#define OC_STATS_RESET_GAUGE(name)
#define OC_STATS_RESET(name, kind, help) OC_STATS_RESET_##kind(name)
    OC_STATS_LIST(OC_STATS_RESET)
#undef OC_STATS_RESET
#undef OC_STATS_RESET_GAUGE
#undef OC_STATS_RESET_COUNTER
    memset(&st->request_seconds, 0, sizeof(st->request_seconds));
    memset(&st->load_seconds, 0, sizeof(st->load_seconds));
    memset(&st->feed_apply_seconds, 0, sizeof(st->feed_apply_seconds));
    memset(&st->loop_lag_seconds, 0, sizeof(st->loop_lag_seconds));
    if (st->models)
        memset(st->models, 0, st->nmodels * sizeof(*st->models));
}

void oc_stats_write(const oc_stats_t *st, struct evbuffer *out)
{
#define OC_STATS_LINE(name, kind, help)                                                  \
    evbuffer_add_printf(out, "STAT " #name " %" PRIu64 "\r\n", st->name);
    OC_STATS_LIST(OC_STATS_LINE)
#undef OC_STATS_LINE
    for (size_t i = 0; i < st->nmc; i++) {
        const char *what = i < st->nmc_pool ? "mc_server" : "mc_gutter";
        evbuffer_add_printf(out, "STAT %s:%s:up %" PRIu64 "\r\n", what, st->mc_names[i],
                            st->mc_up[i]);
        if (st->mc_state)
            evbuffer_add_printf(out, "STAT %s:%s:state %s\r\n", what, st->mc_names[i],
                                st->mc_state[i]);
    }
    for (size_t m = 0; m < st->nmodels; m++) {
        if (st->model_names[m][0] == '\0')
            continue; /* removed by a reload (oc_stats_name_model) */
#define OC_MODEL_LINE(name, help)                                                        \
    evbuffer_add_printf(out, "STAT model:%s:" #name " %" PRIu64 "\r\n",                  \
                        st->model_names[m], st->models[m].name);
        OC_MODEL_STATS_LIST(OC_MODEL_LINE)
#undef OC_MODEL_LINE
    }
    for (size_t m = 0; m < st->nmodels; m++)
        for (size_t w = 0; w < st->nsampler_slots && st->model_names[m][0]; w++) {
#define OC_SAMPLER_LINE(name, help)                                                      \
    evbuffer_add_printf(out, "STAT sampler:%s:%s:" #name " %" PRIu64 "\r\n",             \
                        st->model_names[m], st->sampler_slot[w],                         \
                        st->models[m].sampler_##name[w]);
            OC_SAMPLER_STATS_LIST(OC_SAMPLER_LINE)
#undef OC_SAMPLER_LINE
        }
}

static void prom_hist(struct evbuffer *out, const char *name, const char *help,
                      const oc_hist_t *h)
{
    evbuffer_add_printf(out, "# HELP objcached_%s %s\n# TYPE objcached_%s histogram\n",
                        name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < OC_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        evbuffer_add_printf(out, "objcached_%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
                            oc_hist_bounds[i], cum);
    }
    evbuffer_add_printf(out,
                        "objcached_%s_bucket{le=\"+Inf\"} %" PRIu64 "\n"
                        "objcached_%s_sum %.6f\nobjcached_%s_count %" PRIu64 "\n",
                        name, h->count, name, h->sum, name, h->count);
}

void oc_stats_write_prometheus(const oc_stats_t *st, struct evbuffer *out)
{
#define OC_PROM_SUFFIX_COUNTER "_total"
#define OC_PROM_SUFFIX_GAUGE   ""
#define OC_PROM_TYPE_COUNTER   "counter"
#define OC_PROM_TYPE_GAUGE     "gauge"
#define OC_PROM(name, kind, help)                                                        \
    evbuffer_add_printf(out,                                                             \
                        "# HELP objcached_" #name OC_PROM_SUFFIX_##kind                  \
                        " " help "\n"                                                    \
                        "# TYPE objcached_" #name OC_PROM_SUFFIX_##kind                  \
                        " " OC_PROM_TYPE_##kind "\n"                                     \
                                                "objcached_" #name OC_PROM_SUFFIX_##kind \
                        " %" PRIu64 "\n",                                                \
                        st->name);
    OC_STATS_LIST(OC_PROM)
#undef OC_PROM
#define OC_PROM_MODEL(name, help)                                                        \
    evbuffer_add_printf(out, "# HELP objcached_model_" #name "_total " help "\n"         \
                             "# TYPE objcached_model_" #name "_total counter\n");        \
    for (size_t m = 0; m < st->nmodels; m++)                                             \
        if (st->model_names[m][0])                                                       \
            evbuffer_add_printf(                                                         \
                out, "objcached_model_" #name "_total{model=\"%s\"} %" PRIu64 "\n",      \
                st->model_names[m], st->models[m].name);
    OC_MODEL_STATS_LIST(OC_PROM_MODEL)
#undef OC_PROM_MODEL
#define OC_PROM_SAMPLER(name, help)                                                      \
    evbuffer_add_printf(out, "# HELP objcached_sampler_" #name "_total " help "\n"       \
                             "# TYPE objcached_sampler_" #name "_total counter\n");      \
    for (size_t m = 0; m < st->nmodels; m++)                                             \
        for (size_t w = 0; w < st->nsampler_slots && st->model_names[m][0]; w++)         \
            evbuffer_add_printf(out,                                                     \
                                "objcached_sampler_" #name                               \
                                "_total{model=\"%s\",window=\"%s\"} %" PRIu64 "\n",      \
                                st->model_names[m], st->sampler_slot[w],                 \
                                st->models[m].sampler_##name[w]);
    OC_SAMPLER_STATS_LIST(OC_PROM_SAMPLER)
#undef OC_PROM_SAMPLER
    evbuffer_add_printf(
        out, "# HELP objcached_memcached_up 1 while the memcached server is in "
             "service\n# TYPE objcached_memcached_up gauge\n");
    for (size_t i = 0; i < st->nmc_pool && i < st->nmc; i++)
        evbuffer_add_printf(out, "objcached_memcached_up{server=\"%s\"} %" PRIu64 "\n",
                            st->mc_names[i], st->mc_up[i]);
    evbuffer_add_printf(out, "# HELP objcached_memcached_state 1 for the state each "
                             "memcached server is in (up, down, probing)\n"
                             "# TYPE objcached_memcached_state gauge\n");
    static const char *const states[] = {"up", "down", "probing"};
    for (size_t i = 0; st->mc_state && i < st->nmc; i++)
        for (size_t k = 0; k < 3; k++)
            evbuffer_add_printf(
                out,
                "objcached_memcached_state{server=\"%s\",pool=\"%s\",state=\"%s\"} %d\n",
                st->mc_names[i], i < st->nmc_pool ? "pool" : "gutter", states[k],
                strcmp(st->mc_state[i], states[k]) == 0);
    prom_hist(out, "request_duration_seconds",
              "get, gets and mg commands, from the command to its reply",
              &st->request_seconds);
    prom_hist(out, "load_duration_seconds",
              "PostgreSQL loads, from submission to the answer", &st->load_seconds);
    prom_hist(out, "feed_apply_seconds",
              "a write's commit to its invalidation applied in this sidecar (the feed)",
              &st->feed_apply_seconds);
    prom_hist(
        out, "loop_lag_seconds",
        "how late the event loop ran its 100 ms tick (0: on time; 1 s or more: a stall)",
        &st->loop_lag_seconds);
}

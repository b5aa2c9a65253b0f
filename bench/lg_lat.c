/* lg_lat: see lg_lat.h. */
#include "lg_lat.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LG_LAT_FIRST_CAP 4096

void lg_lat_init(lg_lat_t *l, size_t max_samples, uint64_t seed)
{
    memset(l, 0, sizeof(*l));
    l->max = max_samples;
    lg_rng_seed(&l->rng, seed ^ 0x6C61742D72657376ull);
}

void lg_lat_free(lg_lat_t *l)
{
    free(l->ns);
    memset(l, 0, sizeof(*l));
}

/* Doubles the array (up to max); the realloc is amortised to nothing. */
static bool grow(lg_lat_t *l)
{
    size_t cap = l->cap ? l->cap * 2 : LG_LAT_FIRST_CAP;
    if (cap > l->max)
        cap = l->max;
    uint64_t *ns = realloc(l->ns, cap * sizeof(*ns));
    if (ns == NULL)
        return false;
    l->ns = ns;
    l->cap = cap;
    return true;
}

bool lg_lat_add(lg_lat_t *l, uint64_t ns)
{
    l->count++;
    l->sum_ns += ns;
    if (ns > l->max_ns)
        l->max_ns = ns;
    if (l->n < l->max) {
        if (l->n == l->cap && !grow(l))
            return false;
        l->ns[l->n++] = ns;
        return true;
    }
    /* Reservoir: the count-th sample replaces a random one with
     * probability max / count. */
    uint64_t j = lg_rng_below(&l->rng, l->count);
    if (j < l->max)
        l->ns[j] = ns;
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double rank_us(const uint64_t *sorted, size_t n, double q)
{
    size_t rank = (size_t)ceil(q * (double)n);
    if (rank < 1)
        rank = 1;
    return (double)sorted[rank - 1] / 1000.0;
}

/* A kept sample and the batches it stands for: count / n of its thread. */
typedef struct weighted {
    uint64_t ns;
    double w;
} weighted_t;

static int cmp_weighted(const void *a, const void *b)
{
    uint64_t x = ((const weighted_t *)a)->ns, y = ((const weighted_t *)b)->ns;
    return (x > y) - (x < y);
}

/* The smallest sample whose cumulative weight reaches q of the total: the
 * nearest rank over the batches the samples stand for. */
static double weighted_rank_us(const weighted_t *sorted, size_t n, double total, double q)
{
    double want = q * total, cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        cum += sorted[i].w;
        if (cum >= want * (1.0 - 1e-12))
            return (double)sorted[i].ns / 1000.0;
    }
    return (double)sorted[n - 1].ns / 1000.0;
}

/* When a thread's reservoir dropped samples, each sample it kept stands for
 * count / n of its batches: merged as they are, the threads that ran fewer
 * batches (the slower ones) would weigh as much as the faster ones. */
static bool summarize_weighted(const lg_lat_t *const *lats, size_t n, size_t total,
                               lg_lat_summary_t *out)
{
    weighted_t *all = malloc(total * sizeof(*all));
    if (all == NULL)
        return false;
    size_t at = 0;
    double sum_w = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (lats[i]->n == 0)
            continue;
        double w = (double)lats[i]->count / (double)lats[i]->n;
        for (size_t j = 0; j < lats[i]->n; j++) {
            all[at].ns = lats[i]->ns[j];
            all[at++].w = w;
        }
        sum_w += w * (double)lats[i]->n;
    }
    qsort(all, total, sizeof(*all), cmp_weighted);
    out->p50_us = weighted_rank_us(all, total, sum_w, 0.50);
    out->p99_us = weighted_rank_us(all, total, sum_w, 0.99);
    out->p999_us = weighted_rank_us(all, total, sum_w, 0.999);
    free(all);
    return true;
}

bool lg_lat_summarize(const lg_lat_t *const *lats, size_t n, lg_lat_summary_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t total = 0;
    uint64_t count = 0, sum = 0, max = 0;
    bool sampled = false;
    for (size_t i = 0; i < n; i++) {
        total += lats[i]->n;
        count += lats[i]->count;
        sum += lats[i]->sum_ns;
        if (lats[i]->max_ns > max)
            max = lats[i]->max_ns;
        if (lats[i]->count > lats[i]->n)
            sampled = true;
    }
    if (count == 0)
        return true;
    out->max_us = (double)max / 1000.0;
    out->mean_us = (double)sum / (double)count / 1000.0;
    if (total == 0)
        return true;
    if (sampled)
        return summarize_weighted(lats, n, total, out);
    uint64_t *all = malloc(total * sizeof(*all));
    if (all == NULL)
        return false;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (lats[i]->n == 0)
            continue; /* its ns may be NULL, which memcpy must not get */
        memcpy(all + at, lats[i]->ns, lats[i]->n * sizeof(*all));
        at += lats[i]->n;
    }
    qsort(all, total, sizeof(*all), cmp_u64);
    out->p50_us = rank_us(all, total, 0.50);
    out->p99_us = rank_us(all, total, 0.99);
    out->p999_us = rank_us(all, total, 0.999);
    free(all);
    return true;
}

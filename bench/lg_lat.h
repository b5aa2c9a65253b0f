/*
 * lg_lat: per-batch latencies of one thread, and their summary over all
 * threads.
 *
 * A thread keeps every sample up to max_samples, then a uniform reservoir
 * of that size (Vitter's algorithm R) so that a long run still gives
 * percentiles over its whole length; the count, sum and maximum always
 * cover every batch.
 *
 * Ownership: lg_lat_t is the caller's; lg_lat_free frees its samples.
 */
#ifndef LG_LAT_H
#define LG_LAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lg_keys.h"

typedef struct lg_lat {
    uint64_t *ns;   /* samples, nanoseconds */
    size_t n;       /* samples held */
    size_t cap;     /* allocated */
    size_t max;     /* reservoir size */
    uint64_t count; /* batches recorded */
    uint64_t sum_ns;
    uint64_t max_ns;
    lg_rng_t rng; /* for the reservoir, apart from the key choice */
} lg_lat_t;

typedef struct lg_lat_summary {
    double p50_us, p99_us, p999_us, max_us, mean_us;
} lg_lat_summary_t;

void lg_lat_init(lg_lat_t *l, size_t max_samples, uint64_t seed);
void lg_lat_free(lg_lat_t *l);
/* Records one batch; false if memory ran out (the sample is then only
 * counted, not kept). */
bool lg_lat_add(lg_lat_t *l, uint64_t ns);
/* Percentiles over the merged samples of n recorders (nearest rank). */
bool lg_lat_summarize(const lg_lat_t *const *lats, size_t n, lg_lat_summary_t *out);

#endif

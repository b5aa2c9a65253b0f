/*
 * lg_keys: which ids a batch asks for.
 *
 * Each thread has its own PRNG (xoshiro256**, seeded through splitmix64
 * with seed*1000 + thread index), so the random choices of a run are
 * reproducible. The seq and cold cursors are shared by all threads (an
 * atomic counter each), so every id they give is given once per pass.
 *
 * Ownership: the lg_picker_t is the caller's, shared read-only by the
 * threads apart from its two atomic cursors; nothing here allocates.
 */
#ifndef LG_KEYS_H
#define LG_KEYS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lg_batch.h"
#include "lg_opts.h"

typedef struct lg_rng {
    uint64_t s[4];
} lg_rng_t;

void lg_rng_seed(lg_rng_t *r, uint64_t seed);
uint64_t lg_rng_next(lg_rng_t *r);
double lg_rng_double(lg_rng_t *r);              /* [0, 1) */
uint64_t lg_rng_below(lg_rng_t *r, uint64_t n); /* [0, n), n > 0 */

/* Zipf over ranks 1..n with exponent s: rejection-inversion (Hörmann and
 * Derflinger 1996), O(1) per draw and no table, whatever n is. */
typedef struct lg_zipf {
    uint64_t n;
    double s;
    double h_x1;     /* H(1.5) - 1 */
    double h_n;      /* H(n + 0.5) */
    double shortcut; /* accept at once when k - x <= this */
} lg_zipf_t;

void lg_zipf_init(lg_zipf_t *z, uint64_t n, double s);
uint64_t lg_zipf_rank(const lg_zipf_t *z, lg_rng_t *r); /* 1..n */

typedef struct lg_picker {
    size_t k;
    lg_keyspec_t keys;
    lg_zipf_t zipf;           /* keys.kind == LG_KEYS_ZIPF */
    _Atomic uint64_t seq_pos; /* positions of keys given so far (seq) */
    bool has_cold;
    lg_keyspec_t cold;
    _Atomic uint64_t cold_pos;
    double hit_rate;
} lg_picker_t;

void lg_picker_init(lg_picker_t *p, const lg_opts_t *o);
/* Fills b with K distinct ids. */
void lg_pick(lg_picker_t *p, lg_rng_t *rng, lg_batch_t *b);
/* The next id the cold cursor (or else the seq cursor) would give; false
 * when the run has neither. */
bool lg_picker_cursor(lg_picker_t *p, uint64_t *next);

#endif

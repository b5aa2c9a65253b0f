/* lg_keys: see lg_keys.h. */
#include "lg_keys.h"

#include <math.h>

/* ---------------------------------------------------------------- PRNG */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lg_rng_seed(lg_rng_t *r, uint64_t seed)
{
    /* splitmix64 never gives xoshiro the all-zero state it cannot leave. */
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t lg_rng_next(lg_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double lg_rng_double(lg_rng_t *r)
{
    return (double)(lg_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t lg_rng_below(lg_rng_t *r, uint64_t n)
{
    /* Multiply-shift (Lemire) without the rejection step: the bias is
     * below n / 2^64, far under anything a benchmark can see. */
    return (uint64_t)(((unsigned __int128)lg_rng_next(r) * n) >> 64);
}

/* ---------------------------------------------------------------- Zipf */

/* log1p(x)/x and expm1(x)/x, with their series near 0 where the division
 * loses precision: they make H and its inverse smooth through s = 1. */
static double helper1(double x)
{
    return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

static double helper2(double x)
{
    return fabs(x) > 1e-8 ? expm1(x) / x
                          : 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x));
}

/* h(x) = x^-s, the unnormalised density. */
static double zipf_h(double x, double s)
{
    return exp(-s * log(x));
}

/* H(x), an integral of h: (x^(1-s) - 1) / (1 - s), or log(x) when s = 1. */
static double zipf_hint(double x, double s)
{
    double log_x = log(x);
    return helper2((1.0 - s) * log_x) * log_x;
}

static double zipf_hint_inverse(double x, double s)
{
    double t = x * (1.0 - s);
    if (t < -1.0)
        t = -1.0; /* rounding near the end of the range */
    return exp(helper1(t) * x);
}

void lg_zipf_init(lg_zipf_t *z, uint64_t n, double s)
{
    z->n = n;
    z->s = s;
    z->h_x1 = zipf_hint(1.5, s) - 1.0;
    z->h_n = zipf_hint((double)n + 0.5, s);
    z->shortcut = 2.0 - zipf_hint_inverse(zipf_hint(2.5, s) - zipf_h(2.0, s), s);
}

uint64_t lg_zipf_rank(const lg_zipf_t *z, lg_rng_t *r)
{
    for (;;) {
        double u = z->h_n + lg_rng_double(r) * (z->h_x1 - z->h_n);
        double x = zipf_hint_inverse(u, z->s);
        double kd = floor(x + 0.5);
        uint64_t k = kd < 1.0 ? 1 : kd > (double)z->n ? z->n : (uint64_t)kd;
        if ((double)k - x <= z->shortcut ||
            u >= zipf_hint((double)k + 0.5, z->s) - zipf_h((double)k, z->s))
            return k;
    }
}

/* -------------------------------------------------------------- picker */

void lg_picker_init(lg_picker_t *p, const lg_opts_t *o)
{
    p->k = o->k;
    p->keys = o->keys;
    if (o->keys.kind == LG_KEYS_ZIPF)
        lg_zipf_init(&p->zipf, lg_keyspec_size(&o->keys), o->keys.s);
    atomic_init(&p->seq_pos, 0);
    p->has_cold = o->has_cold;
    p->cold = o->cold;
    atomic_init(&p->cold_pos, 0);
    p->hit_rate = o->hit_rate;
}

static uint64_t cursor_id(const lg_keyspec_t *ks, uint64_t pos)
{
    return ks->lo + pos % lg_keyspec_size(ks);
}

/* Consecutive cursor positions are distinct ids while they number no more
 * than the range, which the option checks guarantee for K. */
static void add_from_cursor(lg_batch_t *b, const lg_keyspec_t *ks, _Atomic uint64_t *pos,
                            size_t n)
{
    uint64_t first = atomic_fetch_add_explicit(pos, n, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        lg_batch_add(b, cursor_id(ks, first + i));
}

static uint64_t draw_random(lg_picker_t *p, lg_rng_t *rng)
{
    if (p->keys.kind == LG_KEYS_ZIPF)
        return p->keys.lo + lg_zipf_rank(&p->zipf, rng) - 1;
    return p->keys.lo + lg_rng_below(rng, lg_keyspec_size(&p->keys));
}

/* Random ids until the batch is full, redrawing duplicates. A very skewed
 * Zipf over a range barely larger than K could take forever to find its
 * last distinct ids: after enough tries the rest is filled in id order. */
static void fill_random(lg_picker_t *p, lg_rng_t *rng, lg_batch_t *b)
{
    uint64_t tries = 64 * (uint64_t)p->k + 1000;
    while (b->n < p->k && tries-- > 0)
        lg_batch_add(b, draw_random(p, rng));
    for (uint64_t id = p->keys.lo; b->n < p->k; id++)
        lg_batch_add(b, id);
}

/* The "hot" part of the batch, from --keys. Only cold ids (drawn first) can
 * collide with these, which is why each kind loops until the batch is full. */
static void fill_hot(lg_picker_t *p, lg_rng_t *rng, lg_batch_t *b)
{
    switch (p->keys.kind) {
    case LG_KEYS_FIXED:
        for (uint64_t id = p->keys.lo; b->n < p->k; id++)
            lg_batch_add(b, id);
        break;
    case LG_KEYS_SEQ:
        while (b->n < p->k)
            add_from_cursor(b, &p->keys, &p->seq_pos, p->k - b->n);
        break;
    case LG_KEYS_UNIFORM:
    case LG_KEYS_ZIPF:
        fill_random(p, rng, b);
        break;
    }
}

void lg_pick(lg_picker_t *p, lg_rng_t *rng, lg_batch_t *b)
{
    lg_batch_clear(b);
    if (p->has_cold) {
        size_t ncold = 0;
        for (size_t i = 0; i < p->k; i++)
            ncold += lg_rng_double(rng) >= p->hit_rate;
        if (ncold > 0)
            add_from_cursor(b, &p->cold, &p->cold_pos, ncold);
    }
    fill_hot(p, rng, b);
}

bool lg_picker_cursor(lg_picker_t *p, uint64_t *next)
{
    if (p->has_cold) {
        *next = cursor_id(&p->cold, atomic_load(&p->cold_pos));
        return true;
    }
    if (p->keys.kind == LG_KEYS_SEQ) {
        *next = cursor_id(&p->keys, atomic_load(&p->seq_pos));
        return true;
    }
    return false;
}

/*
 * oc_smp: the consistency sampler's decisions, apart from its I/O
 * (oc_sampler.c reads memcached, the near-cache and PostgreSQL and feeds
 * what it read to the functions here). Which keys to sample, when to look
 * at them, whether a cached copy agrees with PostgreSQL's row, and when a
 * disagreement is proven rather than a race with a commit.
 *
 * A check reads, in this order: the cache (as a client would be answered:
 * the near-cache, else memcached) and then the row. If they disagree it is
 * only a suspect: a write may have committed between the two reads, and its
 * invalidation may still be on its way. The key is read again (cache, then
 * row) after sample_recheck, and counts as inconsistent only if
 *   - the cache still holds the very same item (memcached's cas, or the
 *     same near-cache value) that it held at the first read,
 *   - the row did not change between the two row reads (the same xmin, the
 *     id of the transaction that wrote the row version; or, for a relation
 *     without xmin, the same JSON; or absent both times), and
 *   - that item still disagrees with the row.
 * Then the item was already there before the first row read, the row it
 * disagrees with was already committed at the first row read and still
 * current at the second, so the cache held a value other than the current
 * row for at least the whole recheck interval: not a race. Anything else
 * (the item replaced, the row written again) is inconclusive and looked at
 * again, up to OC_SMP_ROUNDS reads in all, then counted as raced, never
 * as inconsistent.
 *
 * Agreement: an empty key agrees (a client's read would load the row); an
 * "absent" entry (MISSING, TOMBSTONE) agrees with no row; an object agrees
 * with the row if the bytes are equal, or the JSON values are equal, or
 * (models with a version_column) the version fields are equal.
 *
 * Contract: pure functions and a queue. oc_smp_agrees parses JSON with
 * jansson (temporary allocations, freed before it returns). The queue
 * allocates its array once (oc_smp_queue_new); items' ids are the
 * caller's (oc_sampler allocates and frees them).
 */
#ifndef OC_SMP_H
#define OC_SMP_H

#include <stddef.h>
#include <stdint.h>

#include "oc_conf.h"

#define OC_SMP_ROUNDS                                                                    \
    4 /* reads of one sample (the first and 3 rechecks) before it counts as raced */
#define OC_SMP_SLOTS   (OC_SAMPLE_WINDOWS_MAX + 1) /* the windows, and hits */
#define OC_SMP_BATCH   256                         /* keys checked in one round trip */
#define OC_SMP_LOG_MAX 200                         /* bytes of a value in a log line */

/* What a client would have been answered for the key when the sampler read
 * it. */
typedef enum oc_smp_cache_kind {
    OC_SMP_C_EMPTY = 0, /* nothing (or a lease): the client would load */
    OC_SMP_C_OBJECT,    /* a cached object */
    OC_SMP_C_ABSENT,    /* MISSING or TOMBSTONE: the client is told "absent" */
    OC_SMP_C_ERROR,     /* memcached failed: nothing learnt */
} oc_smp_cache_kind_t;

typedef struct oc_smp_cache {
    oc_smp_cache_kind_t kind;
    int near;        /* read from the near-cache */
    uint64_t ident;  /* the item: memcached's cas, or the near-cache value's
                        address (the sampler holds a reference meanwhile) */
    uint64_t epoch;  /* memcached: the cas epoch of the server read (oc_mc.h:
                        a cas names an item only there); near-cache: 0 */
    const char *val; /* OBJECT: its JSON */
    size_t len;
} oc_smp_cache_t;

typedef struct oc_smp_row {
    int error; /* the query failed: nothing learnt */
    int found; /* the row exists */
    const char *json;
    size_t len;
    uint64_t xmin; /* the row version's xmin; 0 = not known (no xmin) */
} oc_smp_row_t;

/* What the first read of a check left for the recheck. */
typedef struct oc_smp_evidence {
    oc_smp_cache_kind_t kind;
    int near;
    uint64_t ident, epoch;
    int found;
    uint64_t xmin;
    uint64_t json_hash; /* of the row's JSON (for rows without an xmin) */
} oc_smp_evidence_t;

typedef enum oc_smp_verdict {
    OC_SMP_AGREE,   /* consistent */
    OC_SMP_SUSPECT, /* disagree at a first read: look again after the recheck */
    OC_SMP_STALE,   /* proven inconsistent */
    OC_SMP_RACED,   /* disagree, but the cache or the row changed: again */
    OC_SMP_ERROR,   /* a read failed */
} oc_smp_verdict_t;

/* 1 if what the cache holds agrees with the row (see above). */
int oc_smp_agrees(const char *version_column, const oc_smp_cache_t *c,
                  const oc_smp_row_t *r);

/* The first read of a check: AGREE, SUSPECT or ERROR; for SUSPECT, *ev gets
 * what the recheck compares with. */
oc_smp_verdict_t oc_smp_first(const char *version_column, const oc_smp_cache_t *c,
                              const oc_smp_row_t *r, oc_smp_evidence_t *ev);
/* A recheck, against the evidence of the previous read: AGREE, STALE,
 * RACED (then *ev is replaced by this read's evidence) or ERROR. */
oc_smp_verdict_t oc_smp_again(const char *version_column, oc_smp_evidence_t *ev,
                              const oc_smp_cache_t *c, const oc_smp_row_t *r);

/* Sample one in a million/ppm: the next draw of *rng (xorshift64*, never
 * seeded with 0). */
int oc_smp_pick(uint64_t *rng, uint32_t ppm);

/* ---- the queue of samples, by due time -------------------------------- */

typedef struct oc_smp_item {
    double due; /* monotonic seconds */
    char *id;   /* the canonical id (the caller's allocation) */
    uint16_t idlen;
    uint16_t model;
    uint8_t slot;  /* the window's index, or the hits' slot (nwindows) */
    uint8_t round; /* 0: first read; 1..: rechecks */
    oc_smp_evidence_t ev;
} oc_smp_item_t;

typedef struct oc_smp_queue {
    oc_smp_item_t *heap; /* min-heap on due */
    size_t n;
    size_t cap;   /* items at most (oc_smp_queue_limit may change it) */
    size_t alloc; /* items the array holds: grown by doubling up to cap, so a
                     large cap costs memory only once samples fill it */
} oc_smp_queue_t;

/* 0, or -1 if out of memory. */
int oc_smp_queue_init(oc_smp_queue_t *q, size_t cap);
void oc_smp_queue_free(oc_smp_queue_t *q); /* the array only: ids are the caller's */
/* A new bound (a reload): below n, the items stay and pushes are refused
 * until the queue drains under it; the array is never shrunk. */
void oc_smp_queue_limit(oc_smp_queue_t *q, size_t cap);
/* 0, or -1 if full or out of memory (the caller keeps the item and its id). */
int oc_smp_queue_push(oc_smp_queue_t *q, const oc_smp_item_t *it);
/* The same, allowed `extra` items past the bound: for items taken out of the
 * queue and put back (a suspect's recheck), which new samples must not
 * crowd out (at most OC_SMP_BATCH are out at a time, so the queue never
 * holds more than cap + OC_SMP_BATCH). */
int oc_smp_queue_push_over(oc_smp_queue_t *q, const oc_smp_item_t *it, size_t extra);
/* Take the earliest item due at `now`: 1, or 0 if none is due. */
int oc_smp_queue_pop_due(oc_smp_queue_t *q, double now, oc_smp_item_t *out);

/* How long after a disagreement the sample is read again, in ms: the
 * window's own length (at least recheck_ms), or recheck_ms for the hits'
 * slot. So an inconsistency counted at window W is a cached copy that stayed
 * wrong for at least W against a row that did not change meanwhile: the
 * in-flight staleness of a later write (its own invalidation delayed by a
 * fault, say) is counted at the windows it lasted, not at W. */
uint32_t oc_smp_recheck_ms(const uint32_t *windows_ms, size_t nwindows, size_t slot,
                           uint32_t recheck_ms);

/* The label of slot i for `stats` and /metrics: a window in seconds ("10s", or "1500ms")
 * or "hit" for slot == nwindows. */
void oc_smp_slot_name(const uint32_t *windows_ms, size_t nwindows, size_t slot, char *buf,
                      size_t cap);

/* The select a check reads rows with: the load statement every sidecar
 * caches rows with (oc_sql_load, so the JSON is byte for byte what is
 * cached), plus the row version's xmin (NULL::text if no_xmin: a view):
 *   SELECT <tag>, key::text, json::text, xmin::text FROM ... WHERE key =
 *   ANY($<param>::type[])
 * tag tells the branches of a UNION ALL apart. malloc'd; NULL if out of
 * memory. */
char *oc_smp_sql(const oc_model_conf_t *m, size_t tag, size_t param, int no_xmin);

/* A 64-bit FNV-1a hash. */
uint64_t oc_smp_hash(const char *s, size_t len);

#endif

#include "oc_smp.h"

#include "oc_sql.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t oc_smp_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The non-integer numbers of a JSON text with more significant digits than
 * a double keeps (DBL_DIG, 15), as a multiset: their count and the sum of
 * their texts' hashes. jansson parses a number into a double, so two such
 * numbers that differ past the 15th digit compare equal (a numeric column's
 * row_to_json prints every digit): two texts whose values are equal agree
 * only if these are equal too. Strings are skipped. */
static void long_reals(const char *s, size_t len, size_t *count, uint64_t *sum)
{
    size_t i = 0;
    *count = 0;
    *sum = 0;
    while (i < len) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            i++;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t from = i;
            int digits = 0, real = 0, lead = 1, exp = 0;
            for (; i < len; i++) {
                c = s[i];
                if (c >= '0' && c <= '9') {
                    if (exp)
                        continue;
                    if (c != '0')
                        lead = 0;
                    if (!lead)
                        digits++;
                } else if (c == '.') {
                    real = 1;
                } else if (c == 'e' || c == 'E') {
                    real = exp = 1;
                } else if (c != '-' && c != '+') {
                    break;
                }
            }
            if (real && digits > 15) {
                (*count)++;
                *sum += oc_smp_hash(s + from, i - from);
            }
            continue;
        }
        i++;
    }
}

/* Equal JSON values, or equal version fields when the model has one (a
 * push that PostgreSQL's row matches by version is that row, as far as the
 * model's contract goes: protocol.md, version_column). */
static int objects_agree(const char *version_column, const char *a, size_t alen,
                         const char *b, size_t blen)
{
    if (alen == blen && memcmp(a, b, alen) == 0)
        return 1;
    json_error_t jerr;
    json_t *x = json_loadb(a, alen, 0, &jerr);
    json_t *y = x ? json_loadb(b, blen, 0, &jerr) : NULL;
    int same = 0;
    if (x != NULL && y != NULL) {
        same = json_equal(x, y);
        if (same) { /* and the numbers a double cannot tell apart */
            size_t na, nb;
            uint64_t ha, hb;
            long_reals(a, alen, &na, &ha);
            long_reals(b, blen, &nb, &hb);
            same = na == nb && ha == hb;
        }
        if (!same && version_column && json_is_object(x) && json_is_object(y)) {
            const json_t *vx = json_object_get(x, version_column);
            const json_t *vy = json_object_get(y, version_column);
            same = vx && vy && !json_is_null(vx) && json_equal(vx, vy);
        }
    }
    json_decref(x);
    json_decref(y);
    return same;
}

int oc_smp_agrees(const char *version_column, const oc_smp_cache_t *c,
                  const oc_smp_row_t *r)
{
    switch (c->kind) {
    case OC_SMP_C_EMPTY:
        return 1;
    case OC_SMP_C_ABSENT:
        return !r->found;
    case OC_SMP_C_OBJECT:
        return r->found && objects_agree(version_column, c->val, c->len, r->json, r->len);
    default:
        return 0;
    }
}

static void evidence(oc_smp_evidence_t *ev, const oc_smp_cache_t *c,
                     const oc_smp_row_t *r)
{
    *ev = (oc_smp_evidence_t){.kind = c->kind,
                              .near = c->near,
                              .ident = c->ident,
                              .epoch = c->epoch,
                              .found = r->found,
                              .xmin = r->found ? r->xmin : 0,
                              .json_hash = r->found ? oc_smp_hash(r->json, r->len) : 0};
}

oc_smp_verdict_t oc_smp_first(const char *version_column, const oc_smp_cache_t *c,
                              const oc_smp_row_t *r, oc_smp_evidence_t *ev)
{
    if (c->kind == OC_SMP_C_ERROR || r->error)
        return OC_SMP_ERROR;
    if (oc_smp_agrees(version_column, c, r))
        return OC_SMP_AGREE;
    evidence(ev, c, r);
    return OC_SMP_SUSPECT;
}

/* The row read now is the version read before: absent both times, or the
 * same xmin (a row version's xmin never changes, and every UPDATE makes a
 * new version with its writer's xid), or the same JSON when there is no
 * xmin to go by. */
static int row_unchanged(const oc_smp_evidence_t *ev, const oc_smp_row_t *r)
{
    if (!ev->found || !r->found)
        return !ev->found && !r->found;
    if (ev->xmin != 0 || r->xmin != 0)
        return ev->xmin == r->xmin;
    return ev->json_hash == oc_smp_hash(r->json, r->len);
}

oc_smp_verdict_t oc_smp_again(const char *version_column, oc_smp_evidence_t *ev,
                              const oc_smp_cache_t *c, const oc_smp_row_t *r)
{
    if (c->kind == OC_SMP_C_ERROR || r->error)
        return OC_SMP_ERROR;
    if (oc_smp_agrees(version_column, c, r))
        return OC_SMP_AGREE;
    int same_item = c->kind == ev->kind && c->near == ev->near && c->ident == ev->ident &&
                    c->epoch == ev->epoch;
    if (same_item && row_unchanged(ev, r))
        return OC_SMP_STALE;
    evidence(ev, c, r);
    return OC_SMP_RACED;
}

int oc_smp_pick(uint64_t *rng, uint32_t ppm)
{
    if (ppm == 0)
        return 0;
    if (ppm >= 1000000)
        return 1;
    uint64_t x = *rng ? *rng : 0x9E3779B97F4A7C15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    return (x * 0x2545F4914F6CDD1DULL >> 32) % 1000000 < ppm;
}

/* ---- queue ------------------------------------------------------------- */

/* The array's first size: a sampler at a small rate never needs more. */
#define QUEUE_FIRST 1024

int oc_smp_queue_init(oc_smp_queue_t *q, size_t cap)
{
    q->n = 0;
    q->cap = cap;
    q->alloc = cap < QUEUE_FIRST ? (cap ? cap : 1) : QUEUE_FIRST;
    q->heap = calloc(q->alloc, sizeof(*q->heap));
    return q->heap ? 0 : -1;
}

void oc_smp_queue_free(oc_smp_queue_t *q)
{
    free(q->heap);
    q->heap = NULL;
    q->n = q->cap = q->alloc = 0;
}

void oc_smp_queue_limit(oc_smp_queue_t *q, size_t cap)
{
    q->cap = cap;
}

static int queue_grow(oc_smp_queue_t *q, size_t cap)
{
    size_t want = q->alloc * 2 < cap ? q->alloc * 2 : cap;
    if (want <= q->alloc || want > SIZE_MAX / sizeof(*q->heap))
        return -1;
    oc_smp_item_t *h = realloc(q->heap, want * sizeof(*h));
    if (h == NULL)
        return -1;
    q->heap = h;
    q->alloc = want;
    return 0;
}

static void swap(oc_smp_item_t *a, oc_smp_item_t *b)
{
    oc_smp_item_t t = *a;
    *a = *b;
    *b = t;
}

int oc_smp_queue_push(oc_smp_queue_t *q, const oc_smp_item_t *it)
{
    return oc_smp_queue_push_over(q, it, 0);
}

int oc_smp_queue_push_over(oc_smp_queue_t *q, const oc_smp_item_t *it, size_t extra)
{
    size_t cap = q->cap + extra;
    if (q->n >= cap || (q->n == q->alloc && queue_grow(q, cap) != 0))
        return -1;
    size_t i = q->n++;
    q->heap[i] = *it;
    while (i > 0 && q->heap[(i - 1) / 2].due > q->heap[i].due) {
        swap(&q->heap[(i - 1) / 2], &q->heap[i]);
        i = (i - 1) / 2;
    }
    return 0;
}

int oc_smp_queue_pop_due(oc_smp_queue_t *q, double now, oc_smp_item_t *out)
{
    if (q->n == 0 || q->heap[0].due > now)
        return 0;
    *out = q->heap[0];
    q->heap[0] = q->heap[--q->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->n && q->heap[l].due < q->heap[m].due)
            m = l;
        if (r < q->n && q->heap[r].due < q->heap[m].due)
            m = r;
        if (m == i)
            break;
        swap(&q->heap[i], &q->heap[m]);
        i = m;
    }
    return 1;
}

uint32_t oc_smp_recheck_ms(const uint32_t *windows_ms, size_t nwindows, size_t slot,
                           uint32_t recheck_ms)
{
    if (slot >= nwindows || windows_ms[slot] < recheck_ms)
        return recheck_ms;
    return windows_ms[slot];
}

void oc_smp_slot_name(const uint32_t *windows_ms, size_t nwindows, size_t slot, char *buf,
                      size_t cap)
{
    if (slot >= nwindows) {
        snprintf(buf, cap, "hit");
        return;
    }
    uint32_t ms = windows_ms[slot];
    if (ms % 1000 != 0)
        snprintf(buf, cap, "%ums", ms);
    else
        snprintf(buf, cap, "%us", ms / 1000);
}

/* Spliced into the load statement's text at its FROM clause and its one
 * parameter, whose forms oc_sql_load fixes (a test compares the two). */
char *oc_smp_sql(const oc_model_conf_t *m, size_t tag, size_t param, int no_xmin)
{
    char *load = oc_sql_load(m);
    if (load == NULL)
        return NULL;
    char from[300];
    snprintf(from, sizeof(from), " FROM \"%s\".\"%s\" AS t WHERE", m->schema, m->table);
    static const char sel[] = "SELECT ", arg_at[] = "OPERATOR(pg_catalog.=) ANY($1::";
    char *at = strstr(load, from);
    char *arg = strstr(load, arg_at);
    size_t cap = strlen(load) + 128;
    char *out = malloc(cap);
    if (at == NULL || arg == NULL || arg < at || out == NULL ||
        strncmp(load, sel, sizeof(sel) - 1) != 0) {
        free(load);
        free(out);
        return NULL;
    }
    const char *cols = load + sizeof(sel) - 1;
    snprintf(out, cap, "SELECT %zu, %.*s, %s%.*sOPERATOR(pg_catalog.=) ANY($%zu::%s", tag,
             (int)(at - cols), cols,
             no_xmin ? "NULL::pg_catalog.text" : "t.xmin::pg_catalog.text",
             (int)(arg - at), at, param, arg + sizeof(arg_at) - 1);
    free(load);
    return out;
}

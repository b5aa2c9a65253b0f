#include "oc_failover.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oc_place.h"

#define FO_SERVERS_MAX 256 /* oc_conf's limit on a server list */
#define FO_BYTES       (FO_SERVERS_MAX / 8)

/* The placement over one list without the servers whose bit is set. */
typedef struct fo_place {
    int gutter;
    unsigned char left_out[FO_BYTES];
    oc_place_t *place; /* NULL: an empty slot */
    uint64_t used;     /* for reuse: the least recently used goes */
} fo_place_t;

struct oc_failover {
    const oc_mc_server_conf_t *pool, *gutter;
    size_t npool, ngutter;
    fo_place_t places[OC_FAILOVER_PLACES];
    uint64_t tick;
};

oc_failover_t *oc_failover_new(const oc_mc_server_conf_t *pool, size_t npool,
                               const oc_mc_server_conf_t *gutter, size_t ngutter,
                               char *err)
{
    if (npool > FO_SERVERS_MAX || ngutter > FO_SERVERS_MAX)
        return oc_fail(err, OC_EINVAL, "more than %d memcached servers", FO_SERVERS_MAX),
               NULL;
    oc_failover_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    f->pool = pool;
    f->npool = npool;
    f->gutter = gutter;
    f->ngutter = ngutter;
    return f;
}

void oc_failover_free(oc_failover_t *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < OC_FAILOVER_PLACES; i++)
        oc_place_free(f->places[i].place);
    free(f);
}

static int bit(const unsigned char *bits, size_t i)
{
    return (bits[i / 8] >> (i % 8)) & 1;
}

static void set_bit(unsigned char *bits, size_t i)
{
    bits[i / 8] = (unsigned char)(bits[i / 8] | (1u << (i % 8)));
}

/* The placement over the gutter (or the pool) without `left_out`: kept
 * from an earlier call, or made now in the least recently used slot. */
static oc_place_t *fo_place(oc_failover_t *f, int gutter, const unsigned char *left_out)
{
    fo_place_t *slot = &f->places[0];
    for (size_t i = 0; i < OC_FAILOVER_PLACES; i++) {
        fo_place_t *p = &f->places[i];
        if (p->place && p->gutter == gutter &&
            memcmp(p->left_out, left_out, FO_BYTES) == 0) {
            p->used = ++f->tick;
            return p->place;
        }
        if (p->used < slot->used)
            slot = p;
    }
    const oc_mc_server_conf_t *list = gutter ? f->gutter : f->pool;
    size_t n = gutter ? f->ngutter : f->npool;
    unsigned char skip[FO_SERVERS_MAX];
    for (size_t i = 0; i < n; i++)
        skip[i] = (unsigned char)bit(left_out, i);
    char err[OC_ERRLEN];
    oc_place_t *made = oc_place_new_except(list, n, skip, err);
    if (made == NULL)
        return NULL;
    oc_place_free(slot->place);
    slot->place = made;
    slot->gutter = gutter;
    memcpy(slot->left_out, left_out, FO_BYTES);
    slot->used = ++f->tick;
    return made;
}

size_t oc_failover_target(oc_failover_t *f, const char *key, size_t klen, size_t primary,
                          oc_failover_up_fn up, void *arg, int *gutter)
{
    int g = f->ngutter > 0;
    size_t n = g ? f->ngutter : f->npool;
    unsigned char left_out[FO_BYTES] = {0};
    size_t left = n;
    if (!g) {
        if (primary >= n)
            return OC_FAILOVER_NONE;
        set_bit(left_out, primary);
        left--;
    }
    while (left > 0) {
        oc_place_t *p = fo_place(f, g, left_out);
        if (p == NULL)
            return OC_FAILOVER_NONE;
        size_t t = oc_place_server(p, key, klen);
        if (t >= n || bit(left_out, t))
            return OC_FAILOVER_NONE; /* cannot happen: oc_place's contract */
        if (up(arg, g, t)) {
            *gutter = g;
            return t;
        }
        set_bit(left_out, t);
        left--;
    }
    return OC_FAILOVER_NONE;
}

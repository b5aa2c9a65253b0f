/* lg_mc: see lg_mc.h. */
#include "lg_mc.h"

#include <stdio.h>
#include <string.h>

#include "oc_entry.h"

/* Generous, so that a loaded server is measured rather than timed out; a
 * dead one still fails fast (connection refused). */
#define LG_MC_CONNECT_TIMEOUT_MS 2000
#define LG_MC_POLL_TIMEOUT_MS    5000

static bool set_behaviors(memcached_st *m, const lg_opts_t *o, bool pipelined_writes,
                          char *err, size_t errlen)
{
    /* The first two decide which server holds a key: they must stay what
     * objcached sets (sidecar/oc_place.c make_hash), in this order, since
     * KETAMA_WEIGHTED also switches the hashes to MD5. TCP_NODELAY and the
     * failure settings match it too: a dead server is skipped for a while
     * but keeps its keys. */
    const struct {
        memcached_behavior_t b;
        uint64_t v;
    } behaviors[] = {
        {MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA},
        {MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1},
        {MEMCACHED_BEHAVIOR_TCP_NODELAY, 1},
        {MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, LG_MC_CONNECT_TIMEOUT_MS},
        {MEMCACHED_BEHAVIOR_POLL_TIMEOUT, LG_MC_POLL_TIMEOUT_MS},
        {MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1},
        {MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 2},
        {MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 0},
        /* Set before any connection exists: changing it later reconnects. */
        {MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, pipelined_writes},
        /* --binary: libmemcached's get-multi is then a GETKQ per key and a
         * NOOP per server, written together. */
        {MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, o->binary},
    };
    for (size_t i = 0; i < sizeof(behaviors) / sizeof(behaviors[0]); i++) {
        memcached_return_t rc = memcached_behavior_set(m, behaviors[i].b, behaviors[i].v);
        if (rc != MEMCACHED_SUCCESS) {
            snprintf(err, errlen, "memcached behavior %d: %s", (int)behaviors[i].b,
                     memcached_strerror(m, rc));
            return false;
        }
    }
    return true;
}

static bool add_servers(memcached_st *m, const lg_opts_t *o, char *err, size_t errlen)
{
    for (size_t i = 0; i < o->nservers; i++) {
        const lg_server_t *s = &o->servers[i];
        memcached_return_t rc =
            s->port == 0
                ? memcached_server_add_unix_socket_with_weight(m, s->host, s->weight)
                : memcached_server_add_with_weight(m, s->host, (in_port_t)s->port,
                                                   s->weight);
        if (rc != MEMCACHED_SUCCESS) {
            snprintf(err, errlen, "memcached server %s:%u: %s", s->host, s->port,
                     memcached_strerror(m, rc));
            return false;
        }
    }
    return true;
}

memcached_st *lg_mc_new(const lg_opts_t *o, bool pipelined_writes, char *err,
                        size_t errlen)
{
    memcached_st *m = memcached_create(NULL);
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!set_behaviors(m, o, pipelined_writes, err, errlen) ||
        !add_servers(m, o, err, errlen)) {
        memcached_free(m);
        return NULL;
    }
    return m;
}

/* Not memcached_clone: libmemcached 1.0.18's clone does not keep the
 * weighted-ketama continuum, so a clone puts about half the keys on other
 * servers than objcached does (seen: 931 of 2000 objcached keys found). */
memcached_st *lg_mc_connect(const lg_opts_t *o, bool pipelined_writes, char *err,
                            size_t errlen)
{
    memcached_st *m = lg_mc_new(o, pipelined_writes, err, errlen);
    if (m == NULL)
        return NULL;
    err[0] = '\0';
    /* Connects to every server now, so the first measured batch does not
     * pay for it. It must run before noreply is set: with noreply on,
     * libmemcached would leave the VERSION reply unread on the socket. */
    memcached_return_t rc = memcached_version(m);
    if (rc != MEMCACHED_SUCCESS)
        snprintf(err, errlen, "memcached version: %s", memcached_last_error_message(m));
    if (pipelined_writes)
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NOREPLY, 1);
    return m;
}

/* A value objcached stores for something that is not an object. */
static bool oc_non_object(const memcached_result_st *r)
{
    oc_entry_kind_t kind = oc_entry_kind(memcached_result_flags(r));
    return kind != OC_ENTRY_NONE && kind != OC_ENTRY_OBJECT && kind != OC_ENTRY_PUSHED;
}

static void take_value(const memcached_result_st *r, lg_batch_t *b, lg_tally_t *t)
{
    long slot = lg_batch_find_key(b, memcached_result_key_value(r),
                                  memcached_result_key_length(r));
    if (slot < 0 || b->state[slot] != LG_SLOT_WANTED) {
        t->bad_values++; /* a key not asked for, or twice */
        return;
    }
    if (oc_non_object(r))
        return;
    /* A wrong value is still an answer from the cache: a hit, and bad. */
    b->state[slot] = LG_SLOT_HIT;
    t->hits++;
    if (!lg_batch_value_ok(b, (size_t)slot, memcached_result_value(r),
                           memcached_result_length(r)))
        t->bad_values++;
}

void lg_mc_get(memcached_st *mc, memcached_result_st *res, lg_batch_t *b, lg_tally_t *t)
{
    memcached_return_t rc = memcached_mget(mc, b->keys, b->key_lens, b->n);
    /* mget says SUCCESS when it could not connect to some of the servers
     * (their keys then just miss); the error it noted tells. */
    if (rc != MEMCACHED_SUCCESS || memcached_last_error(mc) != MEMCACHED_SUCCESS) {
        lg_tally_fail(t, "memcached mget: %s", memcached_last_error_message(mc));
        if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_SOME_ERRORS)
            return; /* nothing was sent */
    }
    const memcached_result_st *r;
    while ((r = memcached_fetch_result(mc, res, &rc)) != NULL)
        take_value(r, b, t);
    /* END: all answered; NOTFOUND: all answered, nothing found. */
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND)
        lg_tally_fail(t, "memcached fetch: %s", memcached_last_error_message(mc));
}

void lg_mc_queue_set(memcached_st *mc, const lg_batch_t *b, size_t slot, const char *v,
                     size_t len, lg_tally_t *t)
{
    memcached_return_t rc =
        memcached_set(mc, b->keys[slot], b->key_lens[slot], v, len, LG_SET_TTL, 0);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_BUFFERED)
        lg_tally_fail(t, "memcached set: %s", memcached_last_error_message(mc));
}

void lg_mc_queue_delete(memcached_st *mc, const lg_batch_t *b, size_t slot, lg_tally_t *t)
{
    memcached_return_t rc = memcached_delete(mc, b->keys[slot], b->key_lens[slot], 0);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_BUFFERED)
        lg_tally_fail(t, "memcached delete: %s", memcached_last_error_message(mc));
}

void lg_mc_flush(memcached_st *mc, lg_tally_t *t)
{
    memcached_return_t rc = memcached_flush_buffers(mc);
    if (rc != MEMCACHED_SUCCESS)
        lg_tally_fail(t, "memcached flush: %s", memcached_last_error_message(mc));
}

/* A key that the pool places on server `index`: found by trying names. */
static size_t sync_key(memcached_st *mc, uint32_t index, char *key, size_t size)
{
    for (unsigned n = 0;; n++) {
        int len = snprintf(key, size, "objcached-loadgen:sync:%u", n);
        if (memcached_generate_hash(mc, key, (size_t)len) == index || n > 100000)
            return (size_t)len;
    }
}

void lg_mc_sync(memcached_st *mc, lg_tally_t *t)
{
    enum { MAX = LG_MAX_SERVERS, KEY = 48 };
    char keys[MAX][KEY];
    const char *ptrs[MAX];
    size_t lens[MAX];
    uint32_t n = memcached_server_count(mc);
    if (n > MAX)
        n = MAX;
    for (uint32_t i = 0; i < n; i++) {
        lens[i] = sync_key(mc, i, keys[i], KEY);
        ptrs[i] = keys[i];
    }
    lg_mc_flush(mc, t);
    memcached_return_t rc = memcached_mget(mc, ptrs, lens, n);
    if (rc != MEMCACHED_SUCCESS) {
        lg_tally_fail(t, "memcached mget: %s", memcached_last_error_message(mc));
        if (rc != MEMCACHED_SOME_ERRORS)
            return;
    }
    memcached_result_st res;
    if (memcached_result_create(mc, &res) == NULL) {
        lg_tally_fail(t, "out of memory");
        return;
    }
    while (memcached_fetch_result(mc, &res, &rc) != NULL)
        continue; /* nobody stores these keys; only the round trip counts */
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND)
        lg_tally_fail(t, "memcached fetch: %s", memcached_last_error_message(mc));
    memcached_result_free(&res);
}

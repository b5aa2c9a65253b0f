/*
 * oc_mc_pool: the memcached pool's shape (part of oc_mc: the contract is
 * oc_mc.h's, the split of its files oc_mc_int.h's): its lists of servers
 * (the pool, the gutter, servers_previous), their placements and failover,
 * where a key lives in them, the servers made and freed, the pool made,
 * reconfigured and freed, and what oc_health reads of it. A reload builds
 * the whole new shape aside (mc_shape_t), reusing the servers it keeps, and
 * switches to it only if all of it could be made.
 */
#include "oc_mc_int.h"

#include <event2/event.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_failover.h"
#include "oc_log.h"
#include "oc_place.h"
#include "oc_resolve.h"
#include "oc_stats.h"
#include "oc_tko.h"

/* ---- where a key lives ---------------------------------------------------------- */

static int in_service_cb(void *arg, int gutter, size_t idx)
{
    const oc_mc_t *mc = arg;
    const mc_list_t *l = gutter ? &mc->gutter : &mc->pool;
    return idx < l->n && oc_tko_in_service(&l->s[idx]->tko);
}

/* Where key goes while its pool server `primary` is out of service: NULL
 * with failover off, or when no server is left. */
mc_server_t *oc_mc_failover_of(oc_mc_t *mc, const char *key, size_t klen, size_t primary)
{
    if (!mc->failover_on || mc->failover == NULL)
        return NULL;
    int g = 0;
    size_t t =
        oc_failover_target(mc->failover, key, klen, primary, in_service_cb, mc, &g);
    if (t == OC_FAILOVER_NONE)
        return NULL;
    return g ? mc->gutter.s[t] : mc->pool.s[t];
}

/* Servers in service, but for those of `skip`: the failover chain of a
 * key as it was while they were away. */
typedef struct mc_chain_skip {
    oc_mc_t *mc;
    const mc_server_t **skip;
    size_t n;
} mc_chain_skip_t;

static int in_service_but_cb(void *arg, int gutter, size_t idx)
{
    const mc_chain_skip_t *c = arg;
    if (!in_service_cb(c->mc, gutter, idx))
        return 0;
    const mc_server_t *s = gutter ? c->mc->gutter.s[idx] : c->mc->pool.s[idx];
    for (size_t i = 0; i < c->n; i++)
        if (c->skip[i] == s)
            return 0;
    return 1;
}

/* Where key (of pool server `primary`, out of service) went while the
 * servers of `skip` were out of service too: NULL as oc_mc_failover_of. */
mc_server_t *oc_mc_failover_but(oc_mc_t *mc, const char *key, size_t klen, size_t primary,
                                const mc_server_t **skip, size_t n)
{
    if (!mc->failover_on || mc->failover == NULL)
        return NULL;
    mc_chain_skip_t c = {mc, skip, n};
    int g = 0;
    size_t t =
        oc_failover_target(mc->failover, key, klen, primary, in_service_but_cb, &c, &g);
    if (t == OC_FAILOVER_NONE)
        return NULL;
    return g ? mc->gutter.s[t] : mc->pool.s[t];
}

uint64_t oc_mc_memo(uint32_t gen, size_t idx)
{
    return ((uint64_t)gen << 32) | (uint64_t)((uint32_t)idx + 1);
}

int oc_mc_memo_idx(uint64_t memo, uint32_t gen, size_t npool, size_t *idx)
{
    size_t m = (size_t)(memo & 0xffffffffu);
    if (memo == 0 || (uint32_t)(memo >> 32) != gen || m < 1 || m > npool)
        return 0;
    *idx = m - 1;
    return 1;
}

/* A key's own server (of the pool) and its index; `memo` (0 or a place
 * memo of this key) saves hashing it when the pool has not changed since. */
mc_server_t *oc_mc_primary_of(oc_mc_t *mc, const char *key, size_t klen, uint64_t memo,
                              size_t *idx)
{
    if (mc->pool.n == 0)
        return NULL;
    if (!oc_mc_memo_idx(memo, mc->place_gen, mc->pool.n, idx))
        *idx = oc_place_server(mc->place, key, klen);
    return mc->pool.s[*idx];
}

void oc_mc_place_many(oc_mc_t *mc, size_t n, const char *const *keys, const size_t *klens,
                      uint64_t *memo)
{
    size_t idx[OC_PLACE_BATCH];
    if (mc->pool.n == 0 || n > OC_PLACE_BATCH) {
        memset(memo, 0, n * sizeof(*memo)); /* no memo: placed one by one */
        return;
    }
    oc_place_servers(mc->place, n, keys, klens, idx);
    for (size_t i = 0; i < n; i++)
        memo[i] = oc_mc_memo(mc->place_gen, idx[i]);
}

static int srv_emptied(const oc_mc_t *mc, const mc_server_t *s)
{
    return !oc_tko_in_service(&s->tko) && (mc->failover_on || s->flush_owed);
}

/* A key's server of servers_previous, if it is another than its own (p):
 * NULL if none. */
mc_server_t *oc_mc_prev_of(oc_mc_t *mc, const char *key, size_t klen,
                           const mc_server_t *p)
{
    if (mc->prev.n == 0)
        return NULL;
    mc_server_t *q = mc->prev.s[oc_place_server(mc->prev_place, key, klen)];
    return q == p ? NULL : q;
}

int oc_mc_emptied_before_read(oc_mc_t *mc, const oc_mc_item_t *it)
{
    size_t idx;
    const mc_server_t *p =
        mc != NULL ? oc_mc_primary_of(mc, it->key, it->klen, 0, &idx) : NULL;
    if (p == NULL)
        return 0;
    /* Only where the delete failed: a server that took it holds no old
     * value (asking it of both held the feed back for a whole outage of
     * either while servers_previous was set; found by a review). */
    if ((!it->prev_failed_ || it->own_failed_) && !srv_emptied(mc, p))
        return 0;
    if (!it->prev_failed_)
        return 1;
    const mc_server_t *q = oc_mc_prev_of(mc, it->key, it->klen, p);
    return q == NULL || srv_emptied(mc, q);
}

mc_server_t *oc_mc_find_server(oc_mc_t *mc, const char *host, uint16_t port)
{
    for (int g = 0; g < 2; g++) {
        const mc_list_t *l = g ? &mc->gutter : &mc->pool;
        for (size_t i = 0; i < l->n; i++)
            if (l->s[i]->port == port && strcmp(l->s[i]->host, host) == 0)
                return l->s[i];
    }
    return NULL;
}

/* ---- health, for oc_health -------------------------------------------------------- */

size_t oc_mc_count(const oc_mc_t *mc, int gutter)
{
    return gutter ? mc->gutter.n : mc->pool.n;
}

static const mc_server_t *server_at(const oc_mc_t *mc, int gutter, size_t i)
{
    const mc_list_t *l = gutter ? &mc->gutter : &mc->pool;
    return i < l->n ? l->s[i] : NULL;
}

const char *oc_mc_name(const oc_mc_t *mc, int gutter, size_t i)
{
    const mc_server_t *s = server_at(mc, gutter, i);
    return s ? s->name : "?";
}

int oc_mc_state(const oc_mc_t *mc, int gutter, size_t i)
{
    const mc_server_t *s = server_at(mc, gutter, i);
    return s ? (int)s->tko.state : (int)OC_TKO_DOWN;
}

void oc_mc_watch(oc_mc_t *mc, struct oc_stats *stats, void (*changed)(void *arg),
                 void *arg)
{
    mc->stats = stats;
    mc->changed = changed;
    mc->changed_arg = arg;
    if (stats)
        stats->mc_place_native = (uint64_t)oc_place_own(mc->place);
}

/* ---- the pool --------------------------------------------------------------------- */

static void srv_free(mc_server_t *s)
{
    if (s == NULL)
        return;
    oc_mc_srv_abort(s, "shutting down", MC_ABORT_QUIET);
    oc_mc_drains_free(s);
    if (s->resolving)
        oc_resolve_cancel(s->mc->resolver, s->resolving);
    if (s->dirty) { /* a reload removes it with work queued: oc_mc_on_flush must not see
                       it */
        mc_server_t **pp = &s->mc->dirty;
        while (*pp && *pp != s)
            pp = &(*pp)->dirty_next;
        if (*pp)
            *pp = s->dirty_next;
        s->dirty = 0;
    }
    if (s->ev_timer)
        event_free(s->ev_timer);
    if (s->ev_probe)
        event_free(s->ev_probe);
    free(s->out);
    free(s->in);
    free(s->host);
    free(s);
}

static int srv_resolve(mc_server_t *s, char *err)
{
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)s->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(s->host, port, &hints, &ai);
    if (rc != 0 || ai == NULL || ai->ai_addrlen > sizeof(s->addr)) {
        oc_fail(err, OC_ECACHE, "memcached server %s: %s", s->name,
                rc ? gai_strerror(rc) : "no address");
        if (ai)
            freeaddrinfo(ai);
        return -1;
    }
    memcpy(&s->addr, ai->ai_addr, ai->ai_addrlen);
    s->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* A name a reload added (resolved off the loop: a DNS server that does
 * not answer would stall every request), or one that did not resolve at
 * start: it starts out of service with its probe due now, which resolves
 * it (and flushes it, failover on: its keys went to the failover
 * meanwhile). */
static void srv_unresolved(mc_server_t *s)
{
    double now = oc_mc_now(s->mc);
    oc_tko_rules_t once = s->mc->rules;
    once.failure_limit = 1;
    (void)oc_tko_failure(&s->tko, &once, now);
    s->tko.probe_at = now;
    oc_mc_probe_arm(s);
}

static mc_server_t *srv_new(oc_mc_t *mc, const oc_mc_server_conf_t *c, char *err)
{
    mc_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->host = strdup(c->host)) == NULL) {
        free(s);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    s->mc = mc;
    s->fd = -1;
    s->cas_epoch = ++mc->epoch_seq;
    s->port = c->port;
    s->weight = c->weight;
    s->conn = MC_CONN_CLOSED;
    oc_tko_init(&s->tko, oc_mc_now(mc));
    snprintf(s->name, sizeof(s->name), strchr(c->host, ':') ? "[%.100s]:%u" : "%.100s:%u",
             c->host, (unsigned)c->port);
    s->literal = oc_resolve_is_literal(s->host);
    if (s->literal && srv_resolve(s, err) != 0) {
        free(s->host);
        free(s);
        return NULL;
    }
    /* At start a name is resolved here, blocking (the loop serves nothing
     * yet). One that does not resolve is a server that is down, not a
     * reason to refuse to start: a pod being replaced has no DNS record for
     * a moment, and a sidecar that does not start serves no key at all. */
    char why[OC_ERRLEN];
    if (!s->literal && !mc->running && srv_resolve(s, why) != 0)
        oc_log_warn(
            "event=memcached_resolve_failed server=%s count=%llu reason=\"%s\"", s->name,
            (unsigned long long)oc_mc_ratelog_due(&s->resolve_failed, oc_mc_now(mc)),
            why);
    s->ev_timer = evtimer_new(mc->base, oc_mc_on_srv_timer, s);
    s->ev_probe = evtimer_new(mc->base, oc_mc_on_probe_timer, s);
    if (s->ev_timer == NULL || s->ev_probe == NULL) {
        srv_free(s);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    if (s->addrlen == 0)
        srv_unresolved(s);
    return s;
}

static void set_rules(oc_mc_t *mc, const oc_conf_t *conf)
{
    mc->connect_s = conf->mc_connect_timeout_ms / 1000.0;
    mc->io_s = conf->mc_io_timeout_ms / 1000.0;
    mc->rules.retry_s = conf->mc_retry_timeout_ms / 1000.0;
    mc->rules.failure_limit = conf->mc_failure_limit;
    mc->failover_on = conf->mc_failover;
    mc->failover_ttl_s = conf->mc_failover_ttl_s ? conf->mc_failover_ttl_s : 1;
}

/* Lists whose servers a list_free keeps, or list_make reuses. */
#define MC_LISTS_MAX 3
typedef struct mc_lists {
    const mc_list_t *l[MC_LISTS_MAX]; /* NULL: none */
} mc_lists_t;

static int lists_have(const mc_lists_t *ls, const mc_server_t *s)
{
    for (int k = 0; ls && k < MC_LISTS_MAX; k++)
        for (size_t j = 0; ls->l[k] && j < ls->l[k]->n; j++)
            if (ls->l[k]->s[j] == s)
                return 1;
    return 0;
}

/* Free the servers of `l` that are in no list of `keep` (lists made from
 * it, or sharing servers with it), and the list. */
static void list_free(mc_list_t *l, const mc_lists_t *keep)
{
    for (size_t i = 0; l->s && i < l->n; i++)
        if (!lists_have(keep, l->s[i]))
            srv_free(l->s[i]); /* removed: what was sent to it fails */
    free(l->s);
    free(l->conf);
    *l = (mc_list_t){0};
}

/* A server of the lists `old` named host:port, not yet in out->s[0..i). */
static mc_server_t *list_reuse(const mc_lists_t *old, const mc_list_t *out, size_t i,
                               const oc_mc_server_conf_t *c)
{
    for (int k = 0; k < MC_LISTS_MAX; k++)
        for (size_t j = 0; old->l[k] && j < old->l[k]->n; j++) {
            mc_server_t *s = old->l[k]->s[j];
            int taken = 0;
            for (size_t t = 0; t < i; t++)
                taken |= out->s[t] == s;
            if (!taken && s->port == c->port && strcmp(s->host, c->host) == 0)
                return s;
        }
    return NULL;
}

/* The list of n servers of conf: a server of the lists `old` with the same
 * host and port is reused (its connection, its health, what is under way
 * on it), the others are made. On failure nothing of `old` is touched. */
static int list_make(oc_mc_t *mc, const oc_mc_server_conf_t *conf, size_t n,
                     const mc_lists_t *old, mc_list_t *out, char *err)
{
    *out = (mc_list_t){0};
    out->s = calloc(n ? n : 1, sizeof(*out->s));
    out->conf = calloc(n ? n : 1, sizeof(*out->conf));
    if (out->s == NULL || out->conf == NULL) {
        list_free(out, NULL); /* n is 0: frees the arrays only */
        return oc_fail(err, OC_ENOMEM, "out of memory"), -1;
    }
    for (size_t i = 0; i < n; i++) {
        const oc_mc_server_conf_t *c = &conf[i];
        out->s[i] = list_reuse(old, out, i, c);
        if (out->s[i] == NULL && (out->s[i] = srv_new(mc, c, err)) == NULL) {
            out->n = i;
            list_free(out, old); /* only the ones made here */
            return -1;
        }
        out->conf[i] = (oc_mc_server_conf_t){out->s[i]->host, c->port, c->weight};
        out->n = i + 1;
    }
    return 0;
}

/* The lists, placement and failover of conf, in `next` (nothing of mc's
 * own is touched). */
typedef struct mc_shape {
    mc_list_t pool, gutter, prev;
    oc_place_t *place, *prev_place;
    oc_failover_t *failover;
} mc_shape_t;

static void shape_drop(mc_shape_t *sh, oc_mc_t *mc)
{
    oc_failover_free(sh->failover);
    oc_place_free(sh->place);
    oc_place_free(sh->prev_place);
    /* prev first: it may share servers made for the new pool */
    list_free(&sh->prev, &(mc_lists_t){{&mc->pool, &mc->prev, &sh->pool}});
    list_free(&sh->pool, &(mc_lists_t){{&mc->pool, &mc->prev, NULL}});
    list_free(&sh->gutter, &(mc_lists_t){{&mc->gutter, NULL, NULL}});
}

/* A server moving between the pool and servers_previous keeps its
 * connection and health; one in both is one server. */
static int shape_make(oc_mc_t *mc, const oc_conf_t *conf, mc_shape_t *sh, char *err)
{
    *sh = (mc_shape_t){0};
    if (list_make(mc, conf->servers, conf->nservers,
                  &(mc_lists_t){{&mc->pool, &mc->prev, NULL}}, &sh->pool, err) != 0 ||
        list_make(mc, conf->gutter, conf->ngutter,
                  &(mc_lists_t){{&mc->gutter, NULL, NULL}}, &sh->gutter, err) != 0 ||
        list_make(mc, conf->servers_previous, conf->nservers_previous,
                  &(mc_lists_t){{&sh->pool, &mc->prev, &mc->pool}}, &sh->prev,
                  err) != 0 ||
        (sh->place = oc_place_new(sh->pool.conf, sh->pool.n, err)) == NULL ||
        (sh->prev_place = oc_place_new(sh->prev.conf, sh->prev.n, err)) == NULL ||
        (sh->failover = oc_failover_new(sh->pool.conf, sh->pool.n, sh->gutter.conf,
                                        sh->gutter.n, err)) == NULL) {
        shape_drop(sh, mc);
        return -1;
    }
    return 0;
}

/* Switch to `sh`: servers not kept are freed (their work fails). */
static void shape_apply(oc_mc_t *mc, mc_shape_t *sh)
{
    list_free(&mc->prev, &(mc_lists_t){{&sh->pool, &sh->prev, &mc->pool}});
    list_free(&mc->pool, &(mc_lists_t){{&sh->pool, &sh->prev, NULL}});
    list_free(&mc->gutter, &(mc_lists_t){{&sh->gutter, NULL, NULL}});
    oc_place_free(mc->place);
    oc_place_free(mc->prev_place);
    oc_failover_free(mc->failover);
    mc->pool = sh->pool;
    mc->gutter = sh->gutter;
    mc->prev = sh->prev;
    mc->prev_place = sh->prev_place;
    mc->place = sh->place;
    mc->place_gen++;
    mc->failover = sh->failover;
    if (mc->stats)
        mc->stats->mc_place_native = (uint64_t)oc_place_own(mc->place);
    /* servers_previous last: a server also in the pool keeps the pool's
     * index (its failover chain is placed by it) */
    for (size_t i = 0; i < mc->prev.n; i++) {
        mc->prev.s[i]->prev_only = 1;
        mc->prev.s[i]->gutter = 0;
        mc->prev.s[i]->idx = i;
        mc->prev.s[i]->weight = mc->prev.conf[i].weight;
    }
    for (int g = 0; g < 2; g++) {
        mc_list_t *l = g ? &mc->gutter : &mc->pool;
        for (size_t i = 0; i < l->n; i++) {
            l->s[i]->gutter = g;
            l->s[i]->prev_only = 0;
            l->s[i]->idx = i;
            l->s[i]->weight = l->conf[i].weight;
        }
    }
}

/* Does servers_previous change from what mc has to conf's? */
static int prev_changes(const oc_mc_t *mc, const oc_conf_t *conf)
{
    if (mc->prev.n != conf->nservers_previous)
        return 1;
    for (size_t i = 0; i < mc->prev.n; i++) {
        const oc_mc_server_conf_t *a = &mc->prev.conf[i], *b = &conf->servers_previous[i];
        if (a->port != b->port || a->weight != b->weight || strcmp(a->host, b->host) != 0)
            return 1;
    }
    return 0;
}

/* Said whenever servers_previous changes (and at start if set): the
 * operator follows a rollout of servers by it (docs/operations.md). */
static void prev_log(const oc_mc_t *mc)
{
    char list[1024];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < mc->prev.n; i++) {
        const char *name = mc->prev.s[i]->name;
        if (off + strlen(name) + 5 >= sizeof(list)) {
            snprintf(list + off, sizeof(list) - off, "%s...", off ? " " : "");
            break;
        }
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", off ? " " : "",
                                name);
    }
    oc_log_info("event=memcached_previous count=%zu servers_previous=\"%s\" "
                "extra_deletes=%s",
                mc->prev.n, list, mc->prev.n ? "on" : "off");
}

static size_t check_names(const oc_mc_server_conf_t *list, size_t n, const char *key,
                          FILE *out)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (oc_resolve_is_literal(list[i].host))
            continue;
        char port[8];
        snprintf(port, sizeof(port), "%u", (unsigned)list[i].port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        int rc = getaddrinfo(list[i].host, port, &hints, &ai);
        if (ai)
            freeaddrinfo(ai);
        if (rc == 0)
            continue;
        fprintf(out,
                "warning: %s: memcached server %.100s:%u does not resolve here (%s): "
                "objcached would start with it out of service, resolving it again "
                "before each probe\n",
                key, list[i].host, (unsigned)list[i].port, gai_strerror(rc));
        bad++;
    }
    return bad;
}

size_t oc_mc_check_names(const oc_conf_t *conf, FILE *out)
{
    return check_names(conf->servers, conf->nservers, "servers", out) +
           check_names(conf->gutter, conf->ngutter, "gutter", out) +
           check_names(conf->servers_previous, conf->nservers_previous,
                       "servers_previous", out);
}

oc_mc_t *oc_mc_new(struct event_base *base, const oc_conf_t *conf, char *err)
{
    oc_mc_t *mc = calloc(1, sizeof(*mc));
    if (mc == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    mc->base = base;
    set_rules(mc, conf);
    mc->ev_flush = event_new(base, -1, 0, oc_mc_on_flush, mc);
    mc->resolver = oc_resolver_new(base);
    mc_shape_t sh;
    if (mc->ev_flush == NULL || mc->resolver == NULL) {
        oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    if (shape_make(mc, conf, &sh, err) != 0)
        goto fail;
    shape_apply(mc, &sh);
    if (mc->prev.n > 0)
        prev_log(mc);
    mc->running = 1;
    return mc;
fail:
    oc_mc_free(mc);
    return NULL;
}

/* A reload resolves every name again, as a probe does: a server out of
 * service is probed now (its probe resolves it), one in service is
 * resolved off the loop (srv_resolved). */
static void srv_recheck(mc_server_t *s)
{
    if (s->literal || s->resolving)
        return;
    if (s->tko.state == OC_TKO_DOWN) {
        s->tko.probe_at = oc_mc_now(s->mc);
        evtimer_del(s->ev_probe);
        oc_mc_probe_arm(s);
    } else if (oc_tko_in_service(&s->tko)) {
        (void)oc_mc_probe_resolve(s);
    }
}

oc_status_t oc_mc_reconfigure(oc_mc_t *mc, const oc_conf_t *conf, char *err)
{
    err[0] = '\0';
    mc_shape_t sh;
    if (shape_make(mc, conf, &sh, err) != 0)
        return err[0] ? OC_ECACHE : oc_fail(err, OC_ENOMEM, "out of memory");
    int prev_changed = prev_changes(mc, conf);
    shape_apply(mc, &sh);
    if (prev_changed)
        prev_log(mc);
    /* Servers kept stay as they are: one that is down is probed on, and
     * flushed before it serves again if failover is on by then or was on
     * while it was out of service (flush_owed: turning failover off does
     * not bring back the pushes its failover took). */
    set_rules(mc, conf);
    /* And what the failover takes from now on lives the new failover_ttl:
     * the copies of a server out of service live the longest of both. */
    mc_list_t *lists[] = {&mc->pool, &mc->gutter, &mc->prev};
    for (int g = 0; g < 3; g++) {
        mc_list_t *l = lists[g];
        for (size_t i = 0; i < l->n; i++) {
            mc_server_t *s = l->s[i];
            if (g == 2 && !s->prev_only)
                continue; /* the pool's own, done above */
            srv_recheck(s);
            if (oc_tko_in_service(&s->tko))
                continue;
            s->flush_owed |= mc->failover_on;
            s->copies_ttl_s = oc_mc_copies_ttl(mc, s);
        }
    }
    if (mc->changed)
        mc->changed(mc->changed_arg);
    return OC_OK;
}

void oc_mc_free(oc_mc_t *mc)
{
    if (mc == NULL)
        return;
    mc->changed = NULL;
    list_free(&mc->prev, &(mc_lists_t){{&mc->pool, NULL, NULL}});
    list_free(&mc->pool, NULL);
    list_free(&mc->gutter, NULL);
    mc->dirty = NULL;
    /* Answer what is due, failures included; callbacks may submit more,
     * which fails at once (no servers) and is answered in the same loop. */
    if (mc->ev_flush)
        oc_mc_on_flush(-1, 0, mc);
    if (mc->ev_flush)
        event_free(mc->ev_flush);
    oc_place_free(mc->place);
    oc_place_free(mc->prev_place);
    oc_failover_free(mc->failover);
    oc_resolver_free(mc->resolver);
    while (mc->spare) {
        mc_wop_t *w = mc->spare;
        mc->spare = w->next;
        free(w);
    }
    free(mc);
}

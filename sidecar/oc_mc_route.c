/*
 * oc_mc_route: oc_mc_submit, and where each part of a job goes (part of
 * oc_mc: the contract is oc_mc.h's, the split of its files oc_mc_int.h's).
 * A key goes to its own server, or to its failover while that server is
 * out of service (a read also when its connection just failed); a write
 * also deletes the key's failover copies and its copy on servers_previous.
 * A write by cas goes only to the server, and the epoch, its cas was read
 * in, and waits while a new connection's process is not known yet.
 */
#include "oc_mc_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_failover.h"
#include "oc_log.h"
#include "oc_mcproto.h"
#include "oc_stats.h"
#include "oc_tko.h"

/* ---- submit --------------------------------------------------------------------- */

static void fail_down(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const mc_server_t *p)
{
    char why[OC_ERRLEN];
    if (p && oc_tko_in_service(&p->tko) && oc_mc_now(mc) < p->refused_until)
        snprintf(why, sizeof(why), "memcached %.128s: over its connection limit (-c)",
                 p->name);
    else if (p && oc_tko_in_service(&p->tko))
        snprintf(why, sizeof(why), "memcached %.128s: cannot connect", p->name);
    else
        snprintf(why, sizeof(why), "memcached %.128s: down%s", p ? p->name : "?",
                 p && mc->failover_on ? ", no failover server" : "");
    oc_mc_part_fail(mc, job, i, why);
}

int oc_mc_may_fail_over(oc_mc_op_t op, int primary_in_service)
{
    return !primary_in_service || op == OC_MC_GET;
}

/* The server part i goes to, and how (*ref); NULL after failing the part
 * (a key memcached cannot take, a server down with nowhere else to go). A
 * server out of service sends its keys to their failover; a GET also goes
 * there when the connection to its server failed just now. */
static mc_server_t *route_part(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const char *key,
                               size_t klen, uint64_t memo, mc_ref_t *ref)
{
    *ref = (mc_ref_t){job, i, MC_VIA_PRIMARY};
    if (!oc_mcp_key_ok(key, klen)) {
        oc_mc_part_fail(mc, job, i, "key memcached cannot store");
        return NULL;
    }
    size_t pi = 0;
    mc_server_t *p = oc_mc_primary_of(mc, key, klen, memo, &pi);
    if (p && job->op == OC_MC_GET)
        job->hits[i].place = oc_mc_memo(mc->place_gen, pi);
    if (p && oc_mc_srv_ready(p))
        return p;
    if (p && oc_mc_may_fail_over(job->op, oc_tko_in_service(&p->tko))) {
        mc_server_t *f = oc_mc_failover_of(mc, key, klen, pi);
        if (f && oc_mc_srv_ready(f)) {
            ref->via = MC_VIA_FAILOVER;
            return f;
        }
    }
    fail_down(mc, job, i, p);
    return NULL;
}

int oc_mc_wants_shadow(oc_mc_op_t op, int failover_on, int via_primary, int gutter,
                       const oc_tko_t *tko, double now, uint32_t failover_ttl_s)
{
    if (!failover_on || !via_primary || gutter)
        return 0;
    return op == OC_MC_DELETE || oc_tko_recent(tko, now, (double)failover_ttl_s + 1);
}

/* How long the failover may hold copies of the keys of s written while s
 * was away: the longest failover_ttl in force then (a reload may have
 * shortened it since). */
uint32_t oc_mc_copies_ttl(const oc_mc_t *mc, const mc_server_t *s)
{
    return s->copies_ttl_s > mc->failover_ttl_s ? s->copies_ttl_s : mc->failover_ttl_s;
}

/* Servers of a chain one write clears copies on (OC_FAILOVER_PLACES: the
 * subsets oc_failover keeps placed). */
#define MC_SHADOW_CHAIN OC_FAILOVER_PLACES

/* Deletes of item i's copies on its key's failover chain after s, the
 * server it is written to (see oc_mc.h): on its key's failover always for
 * a DELETE, and for other writes while the key's server is not long back;
 * then on the server after each one of the chain that is not long back
 * itself, where the key went while that one was away (a failover that
 * flaps: found by a review). Their answers change nothing of the item's
 * result. */
static void queue_shadow(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const mc_server_t *s,
                         mc_ref_t ref)
{
    const oc_mc_item_t *it = &job->items[i];
    if (s == NULL || !mc->failover_on)
        return;
    double now = oc_mc_now(mc);
    size_t pi = s->idx;
    int want;
    if (ref.via == MC_VIA_PRIMARY)
        want = oc_mc_wants_shadow(job->op, mc->failover_on, 1, s->gutter, &s->tko, now,
                                  oc_mc_copies_ttl(mc, s));
    else
        want = oc_tko_recent(&s->tko, now, (double)oc_mc_copies_ttl(mc, s) + 1) &&
               oc_mc_primary_of(mc, it->key, it->klen, it->place, &pi) != NULL;
    const mc_server_t *skip[MC_SHADOW_CHAIN];
    size_t n = 0;
    if (ref.via != MC_VIA_PRIMARY)
        skip[n++] = s; /* the chain after it */
    while (want && n < MC_SHADOW_CHAIN) {
        mc_server_t *f = oc_mc_failover_but(mc, it->key, it->klen, pi, skip, n);
        if (f == NULL || f == s || !oc_mc_srv_ready(f))
            return;
        job->parts_left++;
        oc_mc_queue_line(f, MC_WOP_DELETE, (mc_ref_t){job, i, MC_VIA_SHADOW});
        skip[n++] = f;
        want = oc_tko_recent(&f->tko, now, (double)oc_mc_copies_ttl(mc, f) + 1);
    }
}

/* Item i replaces or removes its key (`p`: the key's own server, NULL if
 * none): with servers_previous set, it is also deleted on the key's server
 * there, if another, so that a host on either list of a rollout cannot
 * keep serving what it filled there (docs/operations.md). A server down
 * there fails the item (the caller requeues an invalidation). */
static void queue_previous(oc_mc_t *mc, oc_mc_job_t *job, size_t i, const mc_server_t *p)
{
    const oc_mc_item_t *it = &job->items[i];
    mc_server_t *q = oc_mc_prev_of(mc, it->key, it->klen, p);
    if (q == NULL)
        return;
    if (!oc_mc_srv_ready(q)) {
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "memcached %.128s (servers_previous): down", q->name);
        oc_mc_prev_fail(job, i, why, strlen(why));
        return;
    }
    job->parts_left++;
    if (mc->stats)
        mc->stats->mc_previous_deletes++;
    oc_mc_queue_line(q, MC_WOP_DELETE, (mc_ref_t){job, i, MC_VIA_PREVIOUS});
}

/* A DELETE: on the key's server only (a server down fails it, and the
 * caller requeues it), on its failover, and on servers_previous. */
static void submit_delete(oc_mc_t *mc, oc_mc_job_t *job, size_t i)
{
    const oc_mc_item_t *it = &job->items[i];
    if (!oc_mcp_key_ok(it->key, it->klen)) {
        oc_mc_part_fail(mc, job, i, "key memcached cannot store");
        return;
    }
    size_t pi = 0;
    mc_server_t *p = oc_mc_primary_of(mc, it->key, it->klen, it->place, &pi);
    mc_ref_t ref = {job, i, MC_VIA_PRIMARY};
    if (p && oc_mc_srv_ready(p)) {
        oc_mc_queue_line(p, MC_WOP_DELETE, ref);
    } else {
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "memcached %.128s: down", p ? p->name : "?");
        oc_mc_part_fail(mc, job, i, why);
    }
    queue_shadow(mc, job, i, p, ref);
    queue_previous(mc, job, i, p);
}

static void submit_probe(oc_mc_t *mc, oc_mc_job_t *job, size_t i)
{
    const oc_mc_item_t *it = &job->items[i];
    mc_server_t *s = oc_mc_find_server(mc, it->key, (uint16_t)it->flags);
    if (s == NULL || !oc_mc_srv_ready(s))
        oc_mc_part_fail(mc, job, i, "server down");
    else
        oc_mc_queue_line(s, MC_WOP_VERSION, (mc_ref_t){job, i, MC_VIA_PRIMARY});
}

/* A CAS or CAS_DELETE item for s, or a SWAP with a cas. A cas is one
 * process's own count: on another server, or in another epoch of this one
 * (a reload or a failover moved the key, the server was out of service or
 * restarted meanwhile), it could name an unrelated item (found by
 * reviews): a CAS is answered NOT_FOUND unsent, a SWAP reads the key and
 * compares bytes instead. While s's process is not known yet, it waits
 * (oc_mc_srv_learned): a SWAP that read at once would lose its cas even when the
 * process is the same, and the read can land on an equal later push
 * (found by a review). */
static void queue_by_cas(mc_server_t *s, mc_ref_t ref)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    if (s->ident_pending) {
        if (s->nheld == s->held_cap) {
            size_t c = s->held_cap ? s->held_cap * 2 : 16;
            mc_ref_t *h = realloc(s->held, c * sizeof(*h));
            if (h == NULL) {
                oc_mc_ref_fail(s->mc, ref, "out of memory");
                return;
            }
            s->held = h;
            s->held_cap = c;
        }
        s->held[s->nheld++] = ref;
    } else if (ref.job->op == OC_MC_SWAP) {
        if (it->cas_epoch == s->cas_epoch) /* its item known: no read */
            oc_mc_queue_store(s, ref, "cas", it->val, it->vlen, it->flags, it->cas);
        else
            oc_mc_queue_get(s, ref);
    } else if (it->cas_epoch != s->cas_epoch) {
        oc_mc_item_result(s->mc, ref, OC_MC_R_NOT_FOUND);
    } else if (ref.job->op == OC_MC_CAS) {
        oc_mc_queue_store(s, ref, "cas", it->val, it->vlen, it->flags, it->cas);
    } else {
        oc_mc_queue_line(s, MC_WOP_DELETE, ref);
    }
}

/* A write by cas for the key of server s whose cas was read on the key's
 * failover, in the epoch it is in now: a read its server's failure cut
 * short went there (ref_reroute) and won its lease there while s stayed
 * in service. It is not written on s (another server's cas: answered
 * NOT_FOUND by queue_by_cas), nor on the failover: a push or tombstone to
 * s does not reach the failover while s is in service, so the older row
 * would be served from there if s failed within failover_ttl (found by a
 * review of 1b048c0, which wrote it there). The lease is deleted there
 * instead, so that no reader of the failover waits on it until its TTL
 * (found 2026-12-05), and on s (below). A delete is always safe (at worst
 * another sidecar's entry or lease there is loaded again); its answer
 * changes nothing of the item's result. */
static void drop_failover_lease(oc_mc_t *mc, mc_server_t *s, mc_ref_t ref)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    if (ref.via != MC_VIA_PRIMARY || it->cas_epoch == s->cas_epoch)
        return;
    mc_server_t *f = oc_mc_failover_of(mc, it->key, it->klen, s->idx);
    if (f == NULL || f == s || f->cas_epoch != it->cas_epoch || !oc_mc_srv_ready(f))
        return;
    ref.job->parts_left += 2;
    oc_mc_queue_line(f, MC_WOP_DELETE, (mc_ref_t){ref.job, ref.idx, MC_VIA_SHADOW});
    /* And on s: the read it cut short (an `mg ... N` left in a frozen
     * server's socket) may have made a lease there when the server thawed,
     * whose cas nobody knows; readers of s would wait on it until its TTL
     * (found by a review). Best effort: a thaw after this delete is not
     * covered (the old connection's commands and this one's are not
     * ordered). */
    oc_mc_queue_line(s, MC_WOP_DELETE, (mc_ref_t){ref.job, ref.idx, MC_VIA_SHADOW});
}

/* s's `stats` answered (answered = 0: an error, a server without it):
 * settle the connection's cas epoch and let the held writes go. */
void oc_mc_srv_learned(mc_server_t *s, int answered)
{
    oc_mc_t *mc = s->mc;
    oc_mcp_proc_t now = s->learning;
    int known = answered && oc_mcp_proc_known(&now);
    s->ident_pending = 0;
    if (known && s->proc_known && !oc_mcp_proc_same(&s->proc, &now)) {
        s->cas_epoch = ++mc->epoch_seq;
        oc_log_warn("event=memcached_restarted server=%s pid=%llu->%llu "
                    "started=%llu->%llu",
                    s->name, (unsigned long long)s->proc.pid, (unsigned long long)now.pid,
                    (unsigned long long)(s->proc.time - s->proc.uptime),
                    (unsigned long long)(now.time - now.uptime));
        if (mc->stats)
            mc->stats->mc_restarts++;
    } else if (!known || !s->proc_known) {
        /* Cannot tell a restart from a reconnect (this process or the last
         * one unknown): take it for one (found by a review). The first
         * connection ever comes here too: nothing was read in the old
         * epoch, so nothing is lost. */
        s->cas_epoch = ++mc->epoch_seq;
        if (!known && !s->proc_warned)
            oc_log_warn("event=memcached_unidentified server=%s reason=\"`stats` gave "
                        "no pid, time and uptime: each new connection starts a new cas "
                        "epoch\"",
                        s->name);
        s->proc_warned |= !known;
    }
    oc_mc_drains_learned(s, &now, known);
    s->proc = now;
    s->proc_known = known;
    mc_ref_t *held = s->held;
    size_t n = s->nheld;
    s->held = NULL;
    s->nheld = s->held_cap = 0;
    for (size_t i = 0; i < n; i++)
        queue_by_cas(s, held[i]);
    free(held);
}

static void submit_item(oc_mc_t *mc, oc_mc_job_t *job, size_t i)
{
    const oc_mc_item_t *it = &job->items[i];
    if (job->op == OC_MC_PROBE) {
        submit_probe(mc, job, i);
        return;
    }
    if (job->op == OC_MC_DELETE) {
        submit_delete(mc, job, i);
        return;
    }
    mc_ref_t ref;
    mc_server_t *s = route_part(mc, job, i, it->key, it->klen, it->place, &ref);
    if (s == NULL)
        return;
    switch (job->op) {
    case OC_MC_SWAP:
        if (it->cas)
            queue_by_cas(s, ref);
        else
            oc_mc_queue_get(s, ref);
        break;
    case OC_MC_PUSH:
        oc_mc_queue_get(s, ref);
        break;
    case OC_MC_SET:
        oc_mc_queue_store(s, ref, "set", it->val, it->vlen, it->flags, it->cas);
        break;
    case OC_MC_CAS:
    case OC_MC_CAS_DELETE:
        drop_failover_lease(mc, s, ref);
        queue_by_cas(s, ref);
        break;
    default:
        oc_mc_part_fail(mc, job, i, "unknown operation");
        return;
    }
    if (job->op != OC_MC_CAS && job->op != OC_MC_CAS_DELETE) {
        queue_shadow(mc, job, i, s, ref);
        size_t pi = 0;
        if (mc->prev.n > 0) /* not hashed again without it */
            queue_previous(mc, job, i,
                           oc_mc_primary_of(mc, it->key, it->klen, it->place, &pi));
    }
}

/* A GET's keys, placed OC_PLACE_BATCH at a time (their MD5s side by side)
 * and queued on their servers. */
static void submit_gets(oc_mc_t *mc, oc_mc_job_t *job)
{
    uint64_t memo[OC_PLACE_BATCH];
    for (size_t base = 0; base < job->n; base += OC_PLACE_BATCH) {
        size_t m = job->n - base < OC_PLACE_BATCH ? job->n - base : OC_PLACE_BATCH;
        oc_mc_place_many(mc, m, job->keys + base, job->key_lens + base, memo);
        for (size_t i = base; i < base + m; i++) {
            mc_ref_t ref;
            mc_server_t *s = route_part(mc, job, i, job->keys[i], job->key_lens[i],
                                        memo[i - base], &ref);
            if (s && oc_mc_ref_wants_mg(ref))
                oc_mc_queue_mg(s, ref);
            else if (s)
                oc_mc_queue_get(s, ref);
        }
    }
}

void oc_mc_submit(oc_mc_t *mc, oc_mc_job_t *job)
{
    job->errors = 0;
    job->err[0] = '\0';
    job->next = NULL;
    /* One extra part, released below, so no part answered at once can make
     * the job due before every part is queued. */
    job->parts_left = job->n + 1;
    job->prev_failed_ = 0;
    if (job->op != OC_MC_GET) {
        for (size_t i = 0; i < job->n; i++) {
            job->items[i].refused = 0; /* a job submitted again starts clean */
            job->items[i].prev_failed_ = job->items[i].own_failed_ = 0;
            submit_item(mc, job, i);
        }
    } else {
        submit_gets(mc, job);
    }
    oc_mc_part_done(mc, job);
}

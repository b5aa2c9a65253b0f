/*
 * oc_mc_probe: a memcached server's health (part of oc_mc: the contract is
 * oc_mc.h's, the split of its files oc_mc_int.h's). Every change of a
 * server's oc_tko state goes through srv_changed (logged, counted, a
 * new cas epoch); a server out of service is probed here on a connection of
 * its own, its name resolved again first, and flushed before it serves
 * again. Also the warnings, said once or once a minute, about setups that
 * work but never cache.
 */
#include "oc_mc_int.h"

#include <event2/event.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "oc_log.h"
#include "oc_mcproto.h"
#include "oc_resolve.h"
#include "oc_stats.h"
#include "oc_tko.h"

/* ---- health ------------------------------------------------------------------ */

static void srv_changed(mc_server_t *s, oc_tko_state_t from, const char *why)
{
    oc_mc_t *mc = s->mc;
    oc_tko_state_t to = s->tko.state;
    const char *pool = s->gutter ? "gutter" : s->prev_only ? "previous" : "pool";
    /* Out of service, or back (flushed): what was read there before is
     * gone, and memcached may have restarted meanwhile (its cas count with
     * it). A reconnect while in service keeps the epoch: a fill's lease is
     * still its own there after an io timeout (found by a review). */
    s->cas_epoch = ++mc->epoch_seq;
    if (to == OC_TKO_DOWN && from == OC_TKO_UP) {
        oc_log_warn("event=memcached_down server=%s pool=%s failures=%u reason=\"%s\"",
                    s->name, pool, mc->rules.failure_limit, why);
        if (mc->stats)
            mc->stats->mc_ejections++;
    } else if (to == OC_TKO_DOWN) { /* a probe failed: every retry_timeout */
        oc_log_debug("event=memcached_down server=%s pool=%s reason=\"probe: %s\"",
                     s->name, pool, why);
    } else if (to == OC_TKO_PROBING) {
        oc_log_debug("event=memcached_probing server=%s pool=%s", s->name, pool);
    } else {
        oc_log_info("event=memcached_up server=%s pool=%s reason=\"%s\" down_s=%.1f",
                    s->name, pool, why, s->tko.back_at - s->tko.down_at);
        if (mc->stats)
            mc->stats->mc_returns++;
    }
    if (to == OC_TKO_DOWN)
        oc_mc_probe_arm(s);
    if (from == OC_TKO_UP && to == OC_TKO_DOWN &&
        s->tko.down_at - s->tko.back_at > (double)s->copies_ttl_s + 1)
        s->copies_ttl_s = 0; /* the last outage's copies are gone */
    if (to != OC_TKO_UP && mc->failover_ttl_s > s->copies_ttl_s)
        s->copies_ttl_s = mc->failover_ttl_s;
    if (to != OC_TKO_UP && mc->failover_on)
        s->flush_owed = 1;
    else if (to == OC_TKO_UP)
        s->flush_owed = 0;
    if (mc->changed)
        mc->changed(mc->changed_arg);
}

/* A failure on s's connection: counted, maybe ejecting it. */
void oc_mc_srv_failed(mc_server_t *s, const char *why)
{
    oc_tko_state_t from = s->tko.state;
    if (oc_tko_failure(&s->tko, &s->mc->rules, oc_mc_now(s->mc)))
        srv_changed(s, from, why);
}

/* The probe passed (answered, and flushed with failover on). */
static void srv_passed(mc_server_t *s, const char *why)
{
    s->drain_waits = 0;
    if (oc_tko_passed(&s->tko, oc_mc_now(s->mc)))
        srv_changed(s, OC_TKO_PROBING, why);
}

/* Setups that work but never cache, said once per server (found by a
 * review, 2026-12-06: until then only PostgreSQL's load showed them). */
#define MC_WARN_NO_META 1u /* a meta command answered ERROR */
#define MC_WARN_NO_CAS  2u /* a cas of 0 */

/* A bare ERROR to mg, ms or md: the server does not know the meta protocol
 * (memcached before 1.6, or a proxy where a memcached should be). It stays
 * in service (it answers): gets are loaded from PostgreSQL, never written
 * back, with no lease between hosts, and pushes fail. */
void oc_mc_srv_meta_refused(mc_server_t *s, const oc_mcp_line_t *l)
{
    if (l->type != OC_MCP_ERROR || l->text_len != 5 ||
        (s->setup_warned & MC_WARN_NO_META))
        return;
    s->setup_warned |= MC_WARN_NO_META;
    oc_log_warn(
        "event=memcached_no_meta server=%s reason=\"a meta command (mg, ms, md) "
        "answered ERROR: memcached 1.6.10 or later is needed, not an older one or a "
        "proxy; gets load from PostgreSQL and nothing is cached\"",
        s->name);
}

/* A cas of 0 from a meta reply that asked for it: memcached counts cas
 * from 1, unless started with -C (no cas), where every lease has cas 0, so
 * no fill can write over it (`cas ... 0` is EXISTS) and no push check can
 * replace a push. */
void oc_mc_srv_cas_seen(mc_server_t *s, uint64_t cas)
{
    if (cas != 0 || (s->setup_warned & MC_WARN_NO_CAS))
        return;
    s->setup_warned |= MC_WARN_NO_CAS;
    oc_log_warn(
        "event=memcached_cas_disabled server=%s reason=\"it answers cas 0: started "
        "with -C? leases and fills need cas; gets load from PostgreSQL and nothing "
        "is cached\"",
        s->name);
}

uint64_t oc_mc_ratelog_due(oc_ratelog_t *r, double now)
{
    return oc_ratelog_due(r, now, MC_RATELOG_S);
}

/* An EN to `mg ... N`: memcached makes the lease of every key it lacks,
 * unless it has no memory for it and may not evict (-M). The key loads
 * from PostgreSQL without a lease: not written back, and every sidecar
 * loads it. Said at most once a minute per server, with the count (found
 * by a review, 2026-12-06: before, nothing said it). */
void oc_mc_srv_lease_refused(mc_server_t *s)
{
    uint64_t n = oc_mc_ratelog_due(&s->lease_refused, oc_mc_now(s->mc));
    if (n)
        oc_log_warn(
            "event=memcached_lease_refused server=%s count=%llu reason=\"`mg ... "
            "N` answered EN, no lease made: out of memory with -M? keys load from "
            "PostgreSQL and are not written back\"",
            s->name, (unsigned long long)n);
}

/* A write memcached refused itself (SERVER_ERROR: an item over its -I, out
 * of memory with -M): a load so refused is served but never cached, and
 * every get of it loads it again; only mc_errors counted it. Said at most
 * once a minute per server, with the count and the words of the refusal
 * that drew the line (found by a review, 2026-12-06). */
void oc_mc_srv_store_refused(mc_server_t *s, const oc_mcp_line_t *l)
{
    if (l->type != OC_MCP_ERROR || l->text_len < 12 ||
        memcmp(l->text, "SERVER_ERROR", 12) != 0)
        return;
    uint64_t n = oc_mc_ratelog_due(&s->store_refused, oc_mc_now(s->mc));
    if (n == 0)
        return;
    char why[OC_ERRLEN];
    snprintf(why, sizeof(why), "%.*s", (int)l->text_len, l->text);
    oc_mc_text_clean(why);
    oc_log_warn("event=memcached_store_refused server=%s count=%llu reason=\"%s\"",
                s->name, (unsigned long long)n, why);
}

/* ---- the server's own probe ------------------------------------------------------ *
 *
 * A server out of service is probed every retry_timeout on a new
 * connection: `version`, then, with failover on, `flush_all`, and it
 * serves again only when both answered. Why flush: while it was away its
 * keys were written to the failover (pushes, tombstones, loads of rows
 * that changed); what it holds may be older than those writes (a frozen
 * server thaws with everything it had; a partition leaves it the values of
 * before). Emptying it is the one step that needs no journal of what it
 * missed and no agreement between sidecars, each of which sees it come
 * back at its own time and flushes it then. A server that thaws still has
 * the commands sent before it froze in its sockets, and runs them on its
 * worker threads in no order with the probe's: a new connection's round
 * trip orders nothing (memcached serves a connection 20 commands at a time
 * and then the others; the probe's may be on another thread: a `flush_all`
 * run before an old tombstone or `ms ... ME` was seen with 1 thread and
 * with 4, found by a review). So this sidecar's old connections of s are
 * drained (srv_drain), and `flush_all` is sent only once memcached has
 * ended them all, io_timeout at most after `version` answered, else the
 * probe fails and a later one tries again (MC_DRAIN_PROBES of them at
 * most: then they are given up, probe_waited). Another sidecar's old commands
 * are its own probe's to wait for: they may land after this flush, and
 * are flushed by that sidecar's (if it ever marked s down). */

/* `version` answered while old connections of s drain: the flush waits
 * for them, io_timeout at most (oc_mc_on_probe_timer fails the probe then). */
static void probe_wait_drains(mc_server_t *s)
{
    oc_log_debug("event=memcached_probe_waits server=%s drains=%zu", s->name, s->ndrains);
    s->flush_waits = 1;
    struct timeval tv;
    oc_mc_tv_of(&tv, s->mc->io_s);
    evtimer_add(s->ev_probe, &tv);
}

/* The last drain of s ended: a probe waiting for it flushes now. */
void oc_mc_probe_drained(mc_server_t *s)
{
    if (!s->flush_waits)
        return;
    s->flush_waits = 0;
    evtimer_del(s->ev_probe);
    oc_mc_queue_line(s, MC_WOP_FLUSH, (mc_ref_t){NULL, 0, 0});
}

/* The probe waited in vain once more: the server stays out until a later
 * probe, or, after MC_DRAIN_PROBES of them, its drains are given up and
 * this probe flushes. */
static void probe_waited(mc_server_t *s)
{
    if (++s->drain_waits < MC_DRAIN_PROBES) {
        oc_mc_srv_fail(s, "old connections still held by the server");
        return;
    }
    oc_log_warn("event=memcached_drain_dropped server=%s drains=%zu reason=\"not ended "
                "by the server in %d probes it answered\"",
                s->name, s->ndrains, MC_DRAIN_PROBES);
    oc_mc_drains_free(s);
    oc_mc_probe_drained(s);
}

int oc_mc_on_probe_reply(mc_server_t *s, mc_wop_kind_t kind, const oc_mcp_line_t *l,
                         const char *line)
{
    if (s->tko.state != OC_TKO_PROBING)
        return 0; /* cannot happen: only a probe's connection has these */
    if (kind == MC_WOP_PROBE && l->type == OC_MCP_VERSION) {
        if (!s->mc->failover_on && !s->flush_owed)
            srv_passed(s, "probe answered");
        else if (s->ndrains == 0)
            oc_mc_queue_line(s, MC_WOP_FLUSH, (mc_ref_t){NULL, 0, 0});
        else
            probe_wait_drains(s);
        return 0;
    }
    if (kind == MC_WOP_FLUSH && l->type == OC_MCP_OK) {
        srv_passed(s, "probe answered; flushed");
        return 0;
    }
    snprintf(s->broken, sizeof(s->broken), "%s answered '%.*s'",
             kind == MC_WOP_FLUSH ? "flush_all" : "version",
             (int)(l->line_len >= 2 ? l->line_len - 2 : 0), line);
    oc_mc_text_clean(s->broken);
    return -1;
}

/* The probe's connection, to the address the name has now. */
static void probe_connect(mc_server_t *s)
{
    oc_mc_srv_close(s);
    if (s->addrlen == 0) { /* added by a reload, never resolved */
        oc_mc_srv_fail(s, "its name does not resolve");
        return;
    }
    oc_mc_srv_connect(s);
    if (s->conn != MC_CONN_CLOSED)
        oc_mc_queue_line(s, MC_WOP_PROBE, (mc_ref_t){NULL, 0, 0});
}

/* The address the name of s resolved to: 1 if it is another than the one
 * s had (said once, and counted). Placement is by the name, so nothing
 * else moves. */
static int srv_address(mc_server_t *s, const struct sockaddr *a, socklen_t len)
{
    char was[80], now[80];
    oc_resolve_addr_text(a, len, now, sizeof(now));
    if (s->addrlen > 0) {
        oc_resolve_addr_text((const struct sockaddr *)&s->addr, s->addrlen, was,
                             sizeof(was));
        if (strcmp(was, now) == 0)
            return 0;
        oc_log_info("event=memcached_address_changed server=%s old=%s new=%s", s->name,
                    was, now);
        if (s->mc->stats)
            s->mc->stats->mc_address_changes++;
    }
    memcpy(&s->addr, a, len);
    s->addrlen = len;
    return 1;
}

/* The name of s resolved again (by its probe, or a reload). A probe
 * waiting for it connects now, to the old address if the name no longer
 * resolves (a DNS server down says nothing of memcached). A server in
 * service whose name moved leaves the old address at once, as a failure
 * (what was sent there fails, reads go to the failover): the operator's
 * pool is the names, and another process may answer at the old address. */
static void srv_resolved(int rc, const struct sockaddr *a, socklen_t len, void *arg)
{
    mc_server_t *s = arg;
    s->resolving = NULL;
    int moved = 0;
    if (rc != 0) {
        uint64_t n = oc_mc_ratelog_due(&s->resolve_failed, oc_mc_now(s->mc));
        if (n)
            oc_log_warn("event=memcached_resolve_failed server=%s count=%llu "
                        "reason=\"%s\"",
                        s->name, (unsigned long long)n, gai_strerror(rc));
    } else {
        moved = srv_address(s, a, len);
    }
    if (s->tko.state == OC_TKO_PROBING && s->conn == MC_CONN_CLOSED)
        probe_connect(s);
    else if (moved && oc_tko_in_service(&s->tko) && s->conn != MC_CONN_CLOSED)
        oc_mc_srv_fail(s, "its name resolves to a new address");
}

/* Resolve the name of s again, off the loop (srv_resolved answers): 1 if
 * under way. */
int oc_mc_probe_resolve(mc_server_t *s)
{
    if (s->resolving == NULL)
        s->resolving =
            oc_resolve_start(s->mc->resolver, s->host, s->port, srv_resolved, s);
    return s->resolving != NULL;
}

void oc_mc_on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    mc_server_t *s = arg;
    oc_tko_state_t from = s->tko.state;
    if (s->flush_waits) {
        probe_waited(s);
        return;
    }
    if (!oc_tko_probe(&s->tko, oc_mc_now(s->mc))) {
        oc_mc_probe_arm(s);
        return;
    }
    srv_changed(s, from, "probe");
    if (!s->literal && oc_mc_probe_resolve(s))
        return; /* probed once its name is resolved (srv_resolved) */
    probe_connect(s);
}

/* A server down: its probe timer for when the probe is due. */
void oc_mc_probe_arm(mc_server_t *s)
{
    double wait = oc_tko_probe_wait(&s->tko, oc_mc_now(s->mc));
    if (wait < 0 || s->ev_probe == NULL)
        return;
    struct timeval tv;
    oc_mc_tv_of(&tv, wait);
    evtimer_add(s->ev_probe, &tv);
}

/*
 * oc_mc_conn: a memcached server's connection (part of oc_mc: the contract
 * is oc_mc.h's, the split of its files oc_mc_int.h's). What a loop turn
 * queues for a server is formatted into its output buffer and written at
 * once from the flush event; its socket is connected, read and written on
 * the loop, timed out, and on a failure given up (drained, not closed,
 * while the server may still run what was sent on it), failing or
 * rerouting what waited on it.
 */
#include "oc_mc_int.h"

#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "oc_log.h"
#include "oc_mcproto.h"
#include "oc_stats.h"
#include "oc_tko.h"

#define MC_READ_CHUNK 65536
/* A server's input or output buffer grown past this (one large value, or a
 * hostile reply up to OC_MCP_VALUE_MAX) is given back once it is empty, so
 * one such reply does not stay resident for the life of the process
 * (found by a review: 64 MiB kept per server, across reconnects). Above
 * what a value of the default max_value (1 MiB) grows it to, so that such
 * values do not map and unmap a buffer each. */
#define MC_BUF_KEEP (4u << 20)

/* ---- buffers ------------------------------------------------------------------ */

static int buf_reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (len + more <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < len + more)
        c *= 2;
    char *b = realloc(*buf, c);
    if (b == NULL)
        return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* An empty buffer that grew past MC_BUF_KEEP: freed (made again when
 * needed). */
void oc_mc_buf_trim(char **buf, size_t *cap)
{
    if (*cap > MC_BUF_KEEP) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

/* Room for `more` bytes at the end of out, moving what was sent away. */
static char *out_reserve(mc_server_t *s, size_t more)
{
    if (s->out_off > 0 && s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    if (buf_reserve(&s->out, &s->out_cap, s->out_len, more) != 0)
        return NULL;
    return s->out + s->out_len;
}

static void wait_push(mc_server_t *s, mc_wop_t *w)
{
    if (s->wait_head == NULL) {
        /* The wait starts now, not when this turn of the loop began (its
         * cached time): a turn that ran long (a burst of clients, a starved
         * CPU) took its own length off io_timeout, and a server that
         * answered in time was failed. One clock read per idle -> busy. */
        event_base_update_cache_time(s->mc->base);
        s->progress = oc_mc_now(s->mc);
        if (s->conn == MC_CONN_OPEN && !evtimer_pending(s->ev_timer, NULL)) {
            struct timeval tv;
            oc_mc_tv_of(&tv, s->mc->io_s);
            evtimer_add(s->ev_timer, &tv);
        }
    }
    w->next = NULL;
    if (s->wait_tail)
        s->wait_tail->next = w;
    else
        s->wait_head = w;
    s->wait_tail = w;
}

static void mark_dirty(mc_server_t *s)
{
    if (s->dirty)
        return;
    s->dirty = 1;
    s->dirty_next = s->mc->dirty;
    s->mc->dirty = s;
    event_active(s->mc->ev_flush, EV_TIMEOUT, 0);
}

/* ---- queueing ------------------------------------------------------------------ */

/* The exptime an item is written with on s: capped at failover_ttl on a
 * failover (0, never, is more than that too). */
uint32_t oc_mc_store_exptime(uint32_t exptime_s, int on_failover, uint32_t failover_ttl_s)
{
    if (!on_failover)
        return exptime_s;
    return exptime_s == 0 || exptime_s > failover_ttl_s ? failover_ttl_s : exptime_s;
}

static uint32_t store_exptime(oc_mc_t *mc, mc_ref_t ref)
{
    int on_failover = ref.via == MC_VIA_FAILOVER;
    if (on_failover && mc->stats)
        mc->stats->mc_failover_writes++;
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    uint32_t e = ref.job->op == OC_MC_PUSH && it->unordered && it->unordered_ttl_s
                     ? it->unordered_ttl_s
                     : it->exptime_s;
    return oc_mc_store_exptime(e, on_failover, mc->failover_ttl_s);
}

void oc_mc_queue_store(mc_server_t *s, mc_ref_t ref, const char *verb, const char *val,
                       size_t vlen, uint32_t flags, uint64_t cas)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    mc_wop_t *w = oc_mc_wop_new(s->mc);
    char *p = w ? out_reserve(s, oc_mcp_store_size(it->klen, vlen)) : NULL;
    if (p == NULL) {
        free(w);
        oc_mc_ref_fail(s->mc, ref, "out of memory");
        return;
    }
    s->out_len += oc_mcp_format_store(p, verb, it->key, it->klen, flags,
                                      store_exptime(s->mc, ref), val, vlen, cas);
    w->kind = MC_WOP_STORE;
    w->one = ref;
    wait_push(s, w);
    mark_dirty(s);
}

/* A PUSH item's write, over the item of `cas` (0: only if the key is
 * absent), asking for the cas of what it stores (oc_mcp_format_ms). */
void oc_mc_queue_ms(mc_server_t *s, mc_ref_t ref, uint32_t flags, uint64_t cas)
{
    const oc_mc_item_t *it = &ref.job->items[ref.idx];
    mc_wop_t *w = oc_mc_wop_new(s->mc);
    char *p = w ? out_reserve(s, oc_mcp_ms_size(it->klen, it->vlen)) : NULL;
    if (p == NULL) {
        free(w);
        oc_mc_ref_fail(s->mc, ref, "out of memory");
        return;
    }
    s->out_len += oc_mcp_format_ms(p, it->key, it->klen, flags, store_exptime(s->mc, ref),
                                   it->val, it->vlen, cas);
    w->kind = MC_WOP_MS;
    w->one = ref;
    wait_push(s, w);
    mark_dirty(s);
}

/* One command line without a data block: `delete <key>` (DELETE) or `md
 * <key> C<cas>` (a CAS_DELETE job's item), `version` (VERSION, PROBE),
 * `flush_all` (FLUSH), answered by one line; `stats` (STATS), by STAT
 * lines and END. */
void oc_mc_queue_line(mc_server_t *s, mc_wop_kind_t kind, mc_ref_t ref)
{
    size_t klen = 0;
    const char *key = kind == MC_WOP_DELETE ? oc_mc_ref_key(ref, &klen) : NULL;
    int md = kind == MC_WOP_DELETE && oc_mc_ref_is_md(ref);
    mc_wop_t *w = oc_mc_wop_new(s->mc);
    char *p = w ? out_reserve(s, oc_mcp_md_size(klen)) : NULL;
    if (p == NULL) {
        free(w);
        if (ref.job)
            oc_mc_ref_fail(s->mc, ref, "out of memory");
        else
            oc_mc_srv_fail(s, "out of memory");
        return;
    }
    char *start = p;
    if (md) {
        p += oc_mcp_format_md(p, key, klen, ref.job->items[ref.idx].cas);
    } else if (kind == MC_WOP_DELETE) {
        p = oc_mcp_put(p, "delete ", 7);
        p = oc_mcp_put(p, key, klen);
        p = oc_mcp_put(p, "\r\n", 2);
    } else if (kind == MC_WOP_FLUSH) {
        p = oc_mcp_put(p, "flush_all\r\n", 11);
    } else if (kind == MC_WOP_STATS) {
        p = oc_mcp_put(p, "stats\r\n", 7);
    } else {
        p = oc_mcp_put(p, "version\r\n", 9);
    }
    s->out_len += (size_t)(p - start);
    w->kind = kind;
    w->one = ref;
    wait_push(s, w);
    mark_dirty(s);
}

/* Append a key of job to one of s's lists for the next flush. */
static void queue_ref(mc_server_t *s, mc_ref_t **list, size_t *n, size_t *cap,
                      mc_ref_t ref)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        mc_ref_t *g = realloc(*list, c * sizeof(*g));
        if (g == NULL) {
            oc_mc_ref_fail(s->mc, ref, "out of memory");
            return;
        }
        *list = g;
        *cap = c;
    }
    (*list)[(*n)++] = ref;
    mark_dirty(s);
}

/* The key of the ref joins the server's next multi-get. */
void oc_mc_queue_get(mc_server_t *s, mc_ref_t ref)
{
    queue_ref(s, &s->gets, &s->ngets, &s->gets_cap, ref);
}

/* A GET key with a lease TTL or a refresh window: a meta get at the next
 * flush. */
void oc_mc_queue_mg(mc_server_t *s, mc_ref_t ref)
{
    queue_ref(s, &s->mgs, &s->nmgs, &s->mgs_cap, ref);
}

/* The meta gets queued for s this turn: one command each, one write. */
static void flush_mgs(mc_server_t *s)
{
    if (s->nmgs == 0)
        return;
    size_t bytes = 0;
    for (size_t i = 0; i < s->nmgs; i++)
        bytes += oc_mcp_mg_size(s->mgs[i].job->key_lens[s->mgs[i].idx]);
    mc_wop_t *w = oc_mc_wop_new(s->mc);
    char *p = w ? out_reserve(s, bytes) : NULL;
    mc_ref_t *refs = s->mgs;
    size_t n = s->nmgs;
    s->mgs = NULL;
    s->nmgs = s->mgs_cap = 0;
    if (p == NULL) {
        free(w);
        for (size_t i = 0; i < n; i++)
            oc_mc_ref_fail(s->mc, refs[i], "out of memory");
        free(refs);
        return;
    }
    char *start = p;
    for (size_t i = 0; i < n; i++) {
        const oc_mc_job_t *job = refs[i].job;
        size_t k = refs[i].idx;
        /* No refresh on a failover: its entries live failover_ttl at most,
         * and every read of them would reload them. */
        uint32_t refresh = oc_mc_refresh_window(job->refresh_s ? job->refresh_s[k] : 0,
                                                refs[i].via != MC_VIA_PRIMARY);
        p += oc_mcp_format_mg_r(p, job->keys[k], job->key_lens[k], job->lease_ttl_s,
                                refresh);
    }
    s->out_len += (size_t)(p - start);
    w->kind = MC_WOP_MG;
    w->refs = refs;
    w->nrefs = n;
    wait_push(s, w);
}

/* The multi-get of everything queued for s this turn, as one command. */
static void flush_gets(mc_server_t *s)
{
    if (s->ngets == 0)
        return;
    size_t bytes = 8;
    for (size_t i = 0; i < s->ngets; i++) {
        size_t kl;
        (void)oc_mc_ref_key(s->gets[i], &kl);
        bytes += 1 + kl;
    }
    mc_wop_t *w = oc_mc_wop_new(s->mc);
    char *p = w ? out_reserve(s, bytes) : NULL;
    if (p == NULL) {
        free(w);
        mc_ref_t *refs = s->gets;
        size_t n = s->ngets;
        s->gets = NULL;
        s->ngets = s->gets_cap = 0;
        for (size_t i = 0; i < n; i++)
            oc_mc_ref_fail(s->mc, refs[i], "out of memory");
        free(refs);
        return;
    }
    char *start = p;
    p = oc_mcp_put(p, "gets", 4);
    for (size_t i = 0; i < s->ngets; i++) {
        size_t kl;
        const char *k = oc_mc_ref_key(s->gets[i], &kl);
        *p++ = ' ';
        p = oc_mcp_put(p, k, kl);
    }
    *p++ = '\r';
    *p++ = '\n';
    s->out_len += (size_t)(p - start);
    w->kind = MC_WOP_GETS;
    w->refs = s->gets;
    w->nrefs = s->ngets;
    s->gets = NULL;
    s->ngets = s->gets_cap = 0;
    wait_push(s, w);
}

/* ---- drains ------------------------------------------------------------------- */

static void drain_free(mc_drain_t *d)
{
    if (d->ev)
        event_free(d->ev);
    if (d->fd >= 0)
        close(d->fd);
    free(d);
}

/* d is over (or given up): unlinked and freed; a probe waiting for the
 * last one goes on. */
static void drain_end(mc_drain_t *d)
{
    mc_server_t *s = d->s;
    mc_drain_t **pp = &s->drains;
    while (*pp != d)
        pp = &(*pp)->next;
    *pp = d->next;
    s->ndrains--;
    drain_free(d);
    if (s->ndrains > 0)
        return;
    s->drain_waits = 0;
    oc_mc_probe_drained(s);
}

static void on_drain_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char buf[16384];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0)
            continue; /* replies nobody waits for: dropped */
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        drain_end(arg); /* closed by memcached, reset, or timed out */
        return;
    }
}

/* s's open connection, failing while s is in service, is drained instead
 * of closed: it takes s->fd. (A probe's connection carried only `stats`,
 * `version` and `flush_all`, harmless whenever they run: it is closed.)
 * Out of memory, or the socket already reset, it is just closed. */
static void srv_drain(mc_server_t *s)
{
    if (s->conn != MC_CONN_OPEN || s->fd < 0 || !oc_tko_in_service(&s->tko))
        return;
    mc_drain_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return;
    /* Before its `stats` answered, it may have reached another process
     * than the last one (a restart): which is not known. */
    *d = (mc_drain_t){.s = s,
                      .fd = s->fd,
                      .proc = s->proc,
                      .proc_known = s->proc_known && !s->ident_pending,
                      .next = s->drains};
    d->ev = event_new(s->mc->base, d->fd, EV_READ | EV_PERSIST, on_drain_read, d);
    if (d->ev == NULL || shutdown(d->fd, SHUT_WR) != 0 || event_add(d->ev, NULL) != 0) {
        d->fd = -1; /* oc_mc_srv_close closes it */
        drain_free(d);
        return;
    }
    s->fd = -1;
    s->drains = d;
    if (++s->ndrains > MC_DRAINS_MAX) {
        mc_drain_t *old = s->drains;
        while (old->next)
            old = old->next;
        oc_log_warn(
            "event=memcached_drain_dropped server=%s reason=\"over %d connections "
            "still held by the server\"",
            s->name, MC_DRAINS_MAX);
        drain_end(old);
    }
}

/* A new connection of s reached the process `now` (known: pid and start
 * came): drains of another process end, for what they held died with it
 * (a restart, a host rebooted without resetting them). When it cannot be
 * told, they end too: a server that never says which process it is would
 * otherwise wait for ever on a drain of a host gone. */
void oc_mc_drains_learned(mc_server_t *s, const oc_mcp_proc_t *now, int known)
{
    mc_drain_t *d = s->drains;
    while (d) {
        mc_drain_t *next = d->next;
        if (!known || (d->proc_known && !oc_mcp_proc_same(&d->proc, now)))
            drain_end(d);
        d = next;
    }
}

void oc_mc_drains_free(mc_server_t *s)
{
    while (s->drains) {
        mc_drain_t *d = s->drains;
        s->drains = d->next;
        drain_free(d);
    }
    s->ndrains = 0;
    s->drain_waits = 0;
}

/* ---- connections -------------------------------------------------------------- */

void oc_mc_srv_close(mc_server_t *s)
{
    if (s->ev_read)
        event_free(s->ev_read);
    if (s->ev_write)
        event_free(s->ev_write);
    s->ev_read = s->ev_write = NULL;
    if (s->ev_timer)
        evtimer_del(s->ev_timer);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->conn = MC_CONN_CLOSED;
    s->out_off = s->out_len = 0;
    s->in_off = s->in_len = 0;
    oc_mc_buf_trim(&s->out, &s->out_cap);
    oc_mc_buf_trim(&s->in, &s->in_cap);
    s->ident_pending = 0;
    s->flush_waits = 0;
}

/* A GET key whose read on its own server a failure cut short: read it
 * from the key's failover instead, at once (once: a failover that fails
 * too fails the key). 0 if there is none. */
static int ref_reroute(mc_server_t *s, mc_ref_t ref)
{
    oc_mc_t *mc = s->mc;
    if (ref.via != MC_VIA_PRIMARY || ref.job->op != OC_MC_GET || s->gutter)
        return 0;
    mc_server_t *f =
        oc_mc_failover_of(mc, ref.job->keys[ref.idx], ref.job->key_lens[ref.idx], s->idx);
    if (f == NULL || f == s || !oc_mc_srv_ready(f))
        return 0;
    ref.via = MC_VIA_FAILOVER;
    if (oc_mc_ref_wants_mg(ref))
        oc_mc_queue_mg(f, ref);
    else
        oc_mc_queue_get(f, ref);
    return 1;
}

/* A ref whose server failed: read elsewhere, or failed. */
static void ref_abort(mc_server_t *s, mc_ref_t ref, const char *msg, int reroute)
{
    if (!reroute || !ref_reroute(s, ref))
        oc_mc_ref_fail(s->mc, ref, msg);
}

/* Everything sent or queued to s fails (reads go to the failover unless
 * MC_ABORT_QUIET). A failure is counted: enough of them mark it down. */
void oc_mc_srv_abort(mc_server_t *s, const char *why, mc_abort_t how)
{
    oc_mc_t *mc = s->mc;
    int failure = how == MC_ABORT_FAILURE;
    if (failure && s->conn != MC_CONN_CLOSED) {
        if (oc_tko_in_service(&s->tko))
            oc_log_warn("event=memcached_error server=%s reason=\"%s\"", s->name, why);
        else
            oc_log_debug("event=memcached_error server=%s reason=\"%s\"", s->name, why);
    }
    if (failure)
        srv_drain(s);
    oc_mc_srv_close(s);
    if (failure)
        oc_mc_srv_failed(s, why);
    char msg[OC_ERRLEN];
    snprintf(msg, sizeof(msg), "memcached %.128s: %.100s", s->name, why);
    /* Take the lists first: answering may queue more (to a server that is
     * down now, so those fail at once too). */
    mc_wop_t *w = s->wait_head;
    s->wait_head = s->wait_tail = NULL;
    mc_ref_t *gets = s->gets, *mgs = s->mgs, *held = s->held;
    size_t ngets = s->ngets, nmgs = s->nmgs, nheld = s->nheld;
    s->gets = s->mgs = s->held = NULL;
    s->ngets = s->gets_cap = s->nmgs = s->mgs_cap = s->nheld = s->held_cap = 0;
    while (w) {
        mc_wop_t *next = w->next;
        if (w->kind == MC_WOP_GETS || w->kind == MC_WOP_MG)
            for (size_t i = w->cursor; i < w->nrefs; i++)
                ref_abort(s, w->refs[i], msg, how != MC_ABORT_QUIET);
        else if (w->one.job)
            oc_mc_ref_fail(mc, w->one, msg);
        oc_mc_wop_free(mc, w);
        w = next;
    }
    for (size_t i = 0; i < ngets; i++)
        ref_abort(s, gets[i], msg, how != MC_ABORT_QUIET);
    for (size_t i = 0; i < nmgs; i++)
        ref_abort(s, mgs[i], msg, how != MC_ABORT_QUIET);
    for (size_t i = 0; i < nheld; i++)
        oc_mc_ref_fail(mc, held[i], msg);
    free(gets);
    free(mgs);
    free(held);
}

void oc_mc_srv_fail(mc_server_t *s, const char *why)
{
    oc_mc_srv_abort(s, why, MC_ABORT_FAILURE);
}

/* memcached, at its connection limit (-c), answered a new connection of s
 * in service `ERROR Too many open connections` and closed it without
 * reading it: nothing sent on it ran. The server is alive and serves the
 * rest of the fleet, so this is no failure of it: counted as one, a fleet
 * over -c had its sidecars mark a healthy server down and flush_all it
 * when a slot freed (the whole server reloaded from PostgreSQL; found by a
 * review). It stays in service, unreached: for retry_timeout no new
 * connection is tried (a refusal costs the server an accept, and the fleet
 * is what fills it), reads go to the failover, writes fail (a delete is
 * requeued by its caller), as for a server failing but not marked down;
 * and until failover_ttl after that, a write also deletes the key's
 * failover copy made meanwhile (oc_tko_recent, through back_at). */
void oc_mc_srv_refused(mc_server_t *s, const char *why)
{
    oc_mc_t *mc = s->mc;
    double now = oc_mc_now(mc);
    if (mc->stats)
        mc->stats->mc_conn_limited++;
    s->refused_until = now + mc->rules.retry_s;
    if (s->tko.back_at < s->refused_until)
        s->tko.back_at = s->refused_until;
    uint64_t n = oc_mc_ratelog_due(&s->conn_limit, now);
    if (n)
        oc_log_warn("event=memcached_conn_limit server=%s count=%llu reason=\"%s: "
                    "memcached's -c is full; the server stays in service, its reads "
                    "go to the failover and its writes fail until a connection is "
                    "accepted\"",
                    s->name, (unsigned long long)n, why);
    oc_mc_srv_abort(s, why, MC_ABORT_REFUSED);
}

static void srv_read(mc_server_t *s);

/* A write failed on a new connection (its `stats` not answered yet): did
 * memcached refuse it over its -c? It closes such a connection with our
 * `stats` unread, which resets it, and a write queued meanwhile fails on
 * the reset before its `ERROR Too many open connections` is read: taken
 * for a failure, a busy sidecar kept refused marked a healthy server down
 * anyway (found by a review). Its words are still there to read (the
 * kernel hands over what came before a reset). */
static int refusal_unread(const mc_server_t *s)
{
    char c;
    return s->ident_pending && s->conn == MC_CONN_OPEN &&
           recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

static void srv_write(mc_server_t *s)
{
    while (s->out_off < s->out_len) {
        ssize_t n =
            send(s->fd, s->out + s->out_off, s->out_len - s->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            s->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(s->ev_write, NULL);
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        char why[OC_ERRLEN];
        snprintf(why, sizeof(why), "%s", n < 0 ? strerror(errno) : "write failed");
        if (refusal_unread(s)) {
            srv_read(s); /* the refusal (oc_mc_srv_refused) */
            if (s->conn != MC_CONN_OPEN)
                return;
        }
        oc_mc_srv_fail(s, why);
        return;
    }
    s->out_off = s->out_len = 0;
    oc_mc_buf_trim(&s->out, &s->out_cap);
}

static void srv_read(mc_server_t *s)
{
    for (int rounds = 0; rounds < 4; rounds++) {
        if (s->in_off > 0 && s->in_off == s->in_len)
            s->in_off = s->in_len = 0;
        if (s->in_off > 0 && s->in_cap - s->in_len < MC_READ_CHUNK) {
            memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
            s->in_len -= s->in_off;
            s->in_off = 0;
        }
        if (buf_reserve(&s->in, &s->in_cap, s->in_len, MC_READ_CHUNK) != 0) {
            oc_mc_srv_fail(s, "out of memory");
            return;
        }
        size_t room = s->in_cap - s->in_len;
        ssize_t n = recv(s->fd, s->in + s->in_len, room, 0);
        if (n == 0) {
            oc_mc_srv_fail(s, "connection closed");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            oc_mc_srv_fail(s, strerror(errno));
            return;
        }
        s->in_len += (size_t)n;
        oc_mc_srv_parse(s);
        if (s->conn != MC_CONN_OPEN || (size_t)n < room)
            return;
    }
}

static void on_srv_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    srv_read(arg);
}

static void srv_open(mc_server_t *s)
{
    s->conn = MC_CONN_OPEN;
    s->progress = oc_mc_now(s->mc);
    if (s->wait_head) {
        struct timeval tv = {0, 1000};
        evtimer_add(s->ev_timer, &tv); /* oc_mc_on_srv_timer arms the io timeout */
    }
    event_add(s->ev_read, NULL);
    srv_write(s);
}

static void on_srv_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    mc_server_t *s = arg;
    if (s->conn == MC_CONN_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            soerr = errno;
        if (soerr != 0) {
            oc_mc_srv_fail(s, strerror(soerr));
            return;
        }
        srv_open(s);
        return;
    }
    srv_write(s);
}

double oc_mc_time_left(double since, double limit, double now)
{
    return limit - (now - since);
}

/* A deadline passed: has the server really not answered, or was this
 * process the one that stood still? A sidecar that was stopped (SIGSTOP, a
 * debugger) or starved of CPU wakes with its timers due and the answers
 * waiting in its sockets, and the timers can run first: after a stop
 * epoll_wait fails with EINTR (signal(7)), so no socket is reported in that
 * turn; under load more sockets may be ready than one epoll_wait returns.
 * Taken for a timeout, that marked healthy servers failed (failure_limit
 * times: down, their keys to PostgreSQL) for a stall of our own. So what
 * is there is read first; only what is still missing then times out. */
static int srv_late_answer(mc_server_t *s)
{
    struct pollfd p = {.fd = s->fd,
                       .events = s->conn == MC_CONN_CONNECTING ? POLLOUT : POLLIN};
    if (s->fd < 0 || poll(&p, 1, 0) != 1)
        return 0;
    if (s->conn == MC_CONN_CONNECTING) {
        /* as if it had fired: not left pending, holding new writes */
        event_del(s->ev_write);
        on_srv_write(s->fd, EV_WRITE, s); /* connected, or its error */
        return 1;
    }
    /* all that waits: one srv_read stops after 4 chunks (a value of a few
     * hundred KiB would not be whole, and would time out: a review) */
    for (int i = 0; i < 256 && s->conn == MC_CONN_OPEN; i++) {
        srv_read(s);
        p.revents = 0;
        if (s->conn != MC_CONN_OPEN || poll(&p, 1, 0) != 1)
            break;
    }
    return 1;
}

void oc_mc_on_srv_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    mc_server_t *s = arg;
    oc_mc_t *mc = s->mc;
    double now = oc_mc_now(mc), left;
    if (s->conn == MC_CONN_CONNECTING) {
        if (now >= s->deadline) {
            if (!srv_late_answer(s))
                oc_mc_srv_fail(s, "connect timeout");
            return; /* else open (srv_open arms the io timeout) or failed */
        }
        left = s->deadline - now;
    } else if (s->conn == MC_CONN_OPEN && s->wait_head) {
        if ((left = oc_mc_time_left(s->progress, mc->io_s, now)) <= 0) {
            (void)srv_late_answer(s);
            if (s->conn != MC_CONN_OPEN || !s->wait_head)
                return; /* the read ended the connection, or every reply */
            /* an answer read just now moved progress: from there */
            if ((left = oc_mc_time_left(s->progress, mc->io_s, oc_mc_now(mc))) <= 0) {
                oc_mc_srv_fail(s, "timeout");
                return;
            }
        }
    } else {
        return;
    }
    struct timeval tv;
    oc_mc_tv_of(&tv, left);
    tv.tv_usec += 1;
    evtimer_add(s->ev_timer, &tv);
}

void oc_mc_srv_connect(mc_server_t *s)
{
    oc_mc_t *mc = s->mc;
    int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        oc_mc_srv_fail(s, strerror(errno));
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->fd = fd;
    s->ev_read = event_new(mc->base, fd, EV_READ | EV_PERSIST, on_srv_read, s);
    s->ev_write = event_new(mc->base, fd, EV_WRITE, on_srv_write, s);
    if (s->ev_read == NULL || s->ev_write == NULL) {
        oc_mc_srv_fail(s, "out of memory");
        return;
    }
    s->conn = MC_CONN_CONNECTING;
    /* Which process answers, before any write by cas goes over this
     * connection (oc_mc_srv_learned). Replies come in order: every read's cas
     * on it is taken after this answer, in the epoch it settles. */
    s->ident_pending = 1;
    s->learning = (oc_mcp_proc_t){0};
    s->stat_lines = 0;
    oc_mc_queue_line(s, MC_WOP_STATS, (mc_ref_t){NULL, 0, 0});
    if (s->conn == MC_CONN_CLOSED)
        return; /* out of memory: failed */
    if (connect(fd, (struct sockaddr *)&s->addr, s->addrlen) == 0) {
        srv_open(s);
        return;
    }
    if (errno != EINPROGRESS) {
        oc_mc_srv_fail(s, strerror(errno));
        return;
    }
    event_base_update_cache_time(mc->base); /* as wait_push: from now */
    s->deadline = oc_mc_now(mc) + mc->connect_s;
    struct timeval tv;
    oc_mc_tv_of(&tv, mc->connect_s);
    evtimer_add(s->ev_timer, &tv);
    event_add(s->ev_write, NULL);
}

/* Can work be queued for s now? Only a server in service takes work; its
 * connection is made at once if it has none (a failure made then is
 * counted, and may take it out of service), unless memcached refused one
 * over its -c less than retry_timeout ago. */
int oc_mc_srv_ready(mc_server_t *s)
{
    if (!oc_tko_in_service(&s->tko))
        return 0;
    if (s->conn == MC_CONN_CLOSED && oc_mc_now(s->mc) < s->refused_until)
        return 0; /* refused over its -c a moment ago (oc_mc_srv_refused) */
    if (s->conn == MC_CONN_CLOSED)
        oc_mc_srv_connect(s);
    return s->conn != MC_CONN_CLOSED && oc_tko_in_service(&s->tko);
}

static void srv_flush(mc_server_t *s)
{
    flush_gets(s);
    flush_mgs(s);
    if (s->conn == MC_CONN_OPEN && s->out_off < s->out_len && s->ev_write &&
        !event_pending(s->ev_write, EV_WRITE, NULL))
        srv_write(s);
}

/* Due callbacks first (they may queue more), then one write per server. */
void oc_mc_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_mc_t *mc = arg;
    for (;;) {
        while (mc->due_head) {
            oc_mc_job_t *job = mc->due_head;
            mc->due_head = job->next;
            if (mc->due_head == NULL)
                mc->due_tail = NULL;
            job->next = NULL;
            job->done(job, job->arg);
        }
        if (mc->dirty == NULL)
            break;
        while (mc->dirty) {
            mc_server_t *s = mc->dirty;
            mc->dirty = s->dirty_next;
            s->dirty = 0;
            srv_flush(s);
        }
    }
}

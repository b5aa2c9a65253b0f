#include "oc_req.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_entry.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_mc.h"
#include "oc_mcproto.h"

/* How gets read memcached: see oc_req_start. The share of gets with a miss
 * is averaged over about OC_REQ_MISS_WINDOW gets. */
#define OC_REQ_MG_ABOVE    0.5
#define OC_REQ_MISS_WINDOW 32.0

struct oc_req {
    oc_daemon_t *d;
    void *conn; /* NULL once detached */
    oc_req_reply_fn reply;
    int gets;
    int meta;              /* an mg: reply VA/HD/EN */
    unsigned meta_flags;   /* OC_META_* */
    char opaque[40];       /* mg's O token, NUL-terminated */
    size_t nslots;         /* keys as asked, duplicates included */
    const char **slot_key; /* client key bytes (in arena) */
    size_t *slot_len;
    uint32_t *slot_ukey; /* index into ukeys */
    size_t nukeys;
    oc_ukey_t *ukeys;
    size_t pending;                  /* unique keys not resolved yet */
    oc_mc_job_t *mcjob;              /* hits point into its arena */
    uint64_t mget_seq;               /* order of its memcached multi-get */
    double started;                  /* oc_stats_now() at start */
    oc_req_t *mget_prev, *mget_next; /* d->mget_head list while waiting */
    char err[OC_ERRLEN];             /* first load error */
    char *arena;
};

static void req_free(oc_req_t *r)
{
    for (size_t i = 0; i < r->nukeys; i++)
        oc_blob_unref(r->ukeys[i].blob);
    oc_mc_job_free(r->mcjob);
    free(r->arena);
    free(r);
}

/* The return flags of a meta reply, in a fixed order. */
static void meta_ret_flags(const oc_req_t *r, const oc_ukey_t *uk, struct evbuffer *out)
{
    unsigned f = r->meta_flags;
    if (f & OC_META_F)
        evbuffer_add(out, " f0", 3);
    if (f & OC_META_S && uk->state == OC_UK_FOUND)
        evbuffer_add_printf(out, " s%zu", uk->len);
    if (f & OC_META_C && uk->state == OC_UK_FOUND)
        evbuffer_add_printf(out, " c%" PRIu64, uk->cas);
    if (f & OC_META_T)
        evbuffer_add(out, " t-1", 4); /* objcached does not track TTLs */
    if (f & OC_META_K) {
        evbuffer_add(out, " k", 2);
        evbuffer_add(out, r->slot_key[0], r->slot_len[0]);
        if (f & OC_META_B)
            evbuffer_add(out, " b", 2);
    }
    if (f & OC_META_O)
        evbuffer_add_printf(out, " O%s", r->opaque);
}

/* mg: VA <len> <flags> + data, HD <flags> without v, EN when absent. */
static void req_write_meta(oc_req_t *r, struct evbuffer *out)
{
    const oc_ukey_t *uk = &r->ukeys[r->slot_ukey[0]];
    if (uk->state != OC_UK_FOUND) {
        if (!(r->meta_flags & OC_META_Q))
            evbuffer_add(out, "EN\r\n", 4);
        return;
    }
    if (r->meta_flags & OC_META_V)
        evbuffer_add_printf(out, "VA %zu", uk->len);
    else
        evbuffer_add(out, "HD", 2);
    meta_ret_flags(r, uk, out);
    evbuffer_add(out, "\r\n", 2);
    if (r->meta_flags & OC_META_V) {
        evbuffer_add(out, uk->data, uk->len);
        evbuffer_add(out, "\r\n", 2);
    }
}

static void req_write_reply(oc_req_t *r, struct evbuffer *out)
{
    oc_stats_t *st = &r->d->stats;
    for (size_t i = 0; i < r->nukeys; i++)
        if (r->ukeys[i].state == OC_UK_ERROR) {
            evbuffer_add_printf(out, "SERVER_ERROR load failed: %s\r\n", r->err);
            st->server_errors++;
            return;
        }
    st->cmd_get++;
    if (r->meta) {
        req_write_meta(r, out);
        return;
    }
    /* One get may name one big object many times: bound the reply before
     * building it, as the output cap is only checked between commands. Per
     * value: "VALUE ", the key, " 0 ", its length and cas (<= 20 digits
     * each, a space between) and two \r\n. */
    uint64_t size = 5;
    for (size_t i = 0; i < r->nslots; i++) {
        const oc_ukey_t *uk = &r->ukeys[r->slot_ukey[i]];
        if (uk->state == OC_UK_FOUND)
            size += uk->len + r->slot_len[i] + 56;
    }
    if (size > r->d->conf->max_reply) {
        evbuffer_add_printf(
            out, "SERVER_ERROR reply too large (%" PRIu64 " bytes, max %u)\r\n", size,
            r->d->conf->max_reply);
        st->server_errors++;
        return;
    }
    /* Written in one extent of the output buffer: no printf per value. */
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)size, &v, 1) < 1 || v.iov_len < size) {
        evbuffer_add_printf(out, "SERVER_ERROR out of memory\r\n");
        st->server_errors++;
        return;
    }
    char *p = v.iov_base;
    for (size_t i = 0; i < r->nslots; i++) {
        const oc_ukey_t *uk = &r->ukeys[r->slot_ukey[i]];
        if (uk->state != OC_UK_FOUND)
            continue;
        p = oc_mcp_put(p, "VALUE ", 6);
        p = oc_mcp_put(p, r->slot_key[i], r->slot_len[i]);
        p = oc_mcp_put(p, " 0 ", 3);
        p += oc_key_format_u64(p, uk->len);
        if (r->gets) {
            *p++ = ' ';
            p += oc_key_format_u64(p, uk->cas);
        }
        p = oc_mcp_put(p, "\r\n", 2);
        p = oc_mcp_put(p, uk->data, uk->len);
        p = oc_mcp_put(p, "\r\n", 2);
    }
    p = oc_mcp_put(p, "END\r\n", 5);
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
}

static void req_finish(oc_req_t *r)
{
    oc_hist_observe(&r->d->stats.request_seconds, oc_stats_now() - r->started);
    for (size_t i = 0; i < r->nukeys; i++)
        if (r->ukeys[i].state == OC_UK_ABSENT)
            r->d->stats.get_absent++;
    if (r->conn) {
        struct evbuffer *out = evbuffer_new();
        if (out) {
            req_write_reply(r, out);
            r->reply(r->conn, out);
            evbuffer_free(out);
        } else {
            r->reply(r->conn, NULL);
        }
    }
    req_free(r);
}

void oc_req_key_done(oc_ukey_t *uk, oc_ukey_state_t state, oc_blob_t *blob,
                     const char *err)
{
    oc_req_t *r = uk->req;
    uk->state = state;
    if (state == OC_UK_FOUND) {
        uk->blob = oc_blob_ref(blob);
        uk->data = blob->data;
        uk->len = blob->len;
        uk->cas = 0;
    } else if (state == OC_UK_ERROR && r->err[0] == '\0') {
        snprintf(r->err, sizeof(r->err), "%s", err ? err : "unknown error");
    }
    if (--r->pending == 0)
        req_finish(r);
}

void oc_req_detach(oc_req_t *req)
{
    req->conn = NULL;
}

/* ---- memcached answer ------------------------------------------------------ */

uint64_t oc_req_oldest_mget(const oc_daemon_t *d)
{
    return d->mget_head ? d->mget_head->mget_seq : UINT64_MAX;
}

static void mget_list_add(oc_daemon_t *d, oc_req_t *r)
{
    r->mget_seq = ++d->mget_seq;
    r->mget_prev = d->mget_tail;
    r->mget_next = NULL;
    if (d->mget_tail)
        d->mget_tail->mget_next = r;
    else
        d->mget_head = r;
    d->mget_tail = r;
}

static void mget_list_remove(oc_daemon_t *d, oc_req_t *r)
{
    if (r->mget_prev)
        r->mget_prev->mget_next = r->mget_next;
    else
        d->mget_head = r->mget_next;
    if (r->mget_next)
        r->mget_next->mget_prev = r->mget_prev;
    else
        d->mget_tail = r->mget_prev;
    r->mget_prev = r->mget_next = NULL;
}

static void req_mc_done(oc_mc_job_t *job, void *arg)
{
    oc_req_t *r = arg;
    oc_daemon_t *d = r->d;
    mget_list_remove(d, r);
    if (job->errors) {
        d->stats.mc_errors++;
        oc_log_debug("event=mc_get_error errors=%zu reason=\"%s\"", job->errors,
                     job->err);
    }
    /* Hold one pending count across this function, so keys resolved here
     * (out of memory, or answered by a fill) cannot finish and free the
     * request under our feet. */
    r->pending++;
    oc_ukey_t **misses = malloc(r->nukeys * sizeof(*misses));
    size_t nmiss = 0;
    for (size_t i = 0; i < r->nukeys; i++) {
        oc_ukey_t *uk = &r->ukeys[i];
        const oc_mc_hit_t *h = &job->hits[i];
        oc_entry_kind_t kind = h->found ? oc_entry_kind(h->flags) : OC_ENTRY_NONE;
        if (kind == OC_ENTRY_OBJECT) {
            uk->state = OC_UK_FOUND;
            uk->data = job->arena + h->off;
            uk->len = h->len;
            uk->cas = h->cas;
        } else if (kind == OC_ENTRY_MISSING || kind == OC_ENTRY_TOMBSTONE) {
            uk->state = OC_UK_ABSENT;
        } else if (misses) {
            uk->read_seq = r->mget_seq;
            /* A lease this read found: a meta get says so (h->lease); a
             * multi-get shows memcached's lease as an empty item, and an
             * older sidecar's as a LEASE entry. */
            int held = kind == OC_ENTRY_LEASE ||
                       (h->found && oc_entry_is_mc_lease(h->flags, h->len));
            uk->lease = held ? OC_MC_LEASE_HELD : h->lease;
            uk->lease_cas = h->cas;
            uk->mc_error = h->error;
            misses[nmiss++] = uk;
            d->stats.models[uk->model_idx].get_misses++;
            continue;
        } else {
            oc_req_key_done(uk, OC_UK_ERROR, NULL, "out of memory");
            continue;
        }
        d->stats.get_hits++;
        d->stats.models[uk->model_idx].get_hits++;
        r->pending--;
    }
    d->stats.get_misses += nmiss;
    d->miss_share += ((nmiss > 0) - d->miss_share) / OC_REQ_MISS_WINDOW;
    if (nmiss)
        oc_fill_misses(d, misses, nmiss);
    free(misses);
    if (--r->pending == 0)
        req_finish(r);
    /* After this get's misses joined their fills, older fills may go. */
    oc_fill_retire(d);
}

/* ---- start ----------------------------------------------------------------- */

static oc_req_t *req_alloc(const oc_cmd_t *cmd, const oc_token_t *echo, size_t prefix_len)
{
    size_t n = cmd->nkeys, bytes = 1;
    for (size_t i = 0; i < n; i++)
        bytes += echo[i].len;
    /* per key: the client key, then its cache key (never over OC_KEY_MAX,
     * but written with a cap of OC_KEY_MAX + 1) */
    (void)prefix_len;
    for (size_t i = 0; i < n; i++)
        bytes += OC_KEY_MAX + 1;
    size_t sz = sizeof(oc_req_t) + n * (sizeof(oc_ukey_t) + sizeof(char *) +
                                        sizeof(size_t) + sizeof(uint32_t));
    oc_req_t *r = calloc(1, sz);
    if (r == NULL)
        return NULL;
    r->arena = malloc(bytes);
    if (r->arena == NULL) {
        free(r);
        return NULL;
    }
    r->ukeys = (oc_ukey_t *)(r + 1);
    r->slot_key = (const char **)(r->ukeys + n);
    r->slot_len = (size_t *)(r->slot_key + n);
    r->slot_ukey = (uint32_t *)(r->slot_len + n);
    return r;
}

/* Parse every key into slots and unique cache keys. */
static oc_status_t req_parse_keys(oc_req_t *r, const oc_cmd_t *cmd,
                                  const oc_token_t *echo, char *err)
{
    oc_daemon_t *d = r->d;
    const char *prefix = d->conf->key_prefix;
    oc_map_t *seen = cmd->nkeys > 1 ? oc_map_new(cmd->nkeys) : NULL;
    if (cmd->nkeys > 1 && seen == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    char *a = r->arena;
    oc_status_t st = OC_OK;
    for (size_t i = 0; i < cmd->nkeys; i++) {
        const oc_token_t *t = &cmd->keys[i];
        oc_key_t k;
        st = oc_key_parse(d->conf, t->p, t->len, d->max_key_len, &k, err);
        if (st != OC_OK)
            goto done;
        memcpy(a, echo[i].p, echo[i].len);
        r->slot_key[i] = a;
        r->slot_len[i] = echo[i].len;
        a += echo[i].len;
        char *ck = a;
        size_t canon_off;
        size_t cklen =
            oc_key_cache_key(prefix, k.model->name, d->model_gen[k.model_idx], k.canon,
                             k.canon_len, ck, OC_KEY_MAX + 1, &canon_off);
        a += cklen + 1;
        void *prev = seen ? oc_map_get(seen, ck, cklen) : NULL;
        if (prev) {
            r->slot_ukey[i] = (uint32_t)((uintptr_t)prev - 1);
            continue;
        }
        oc_ukey_t *uk = &r->ukeys[r->nukeys];
        *uk = (oc_ukey_t){.req = r,
                          .ckey = ck,
                          .ckey_len = cklen,
                          .model_idx = k.model_idx,
                          .canon_off = canon_off};
        r->slot_ukey[i] = (uint32_t)r->nukeys++;
        if (seen && oc_map_put(seen, ck, cklen, (void *)(uintptr_t)r->nukeys) != OC_OK) {
            st = oc_fail(err, OC_ENOMEM, "out of memory");
            goto done;
        }
    }
    r->nslots = cmd->nkeys;
done:
    oc_map_free(seen);
    return st;
}

oc_status_t oc_req_start(oc_daemon_t *d, const oc_cmd_t *cmd, const oc_token_t *echo,
                         void *conn, oc_req_reply_fn reply, oc_req_t **out, char *err)
{
    if (echo == NULL)
        echo = cmd->keys;
    *out = NULL;
    if (cmd->nkeys > d->conf->max_keys)
        return oc_fail(err, OC_ETOOBIG, "too many keys (max %u)", d->conf->max_keys);
    oc_req_t *r = req_alloc(cmd, echo, strlen(d->conf->key_prefix));
    if (r == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    r->d = d;
    r->conn = conn;
    r->reply = reply;
    r->gets = (cmd->type == OC_CMD_GETS);
    r->meta = (cmd->type == OC_CMD_MG);
    r->meta_flags = cmd->meta.flags;
    snprintf(r->opaque, sizeof(r->opaque), "%.*s", (int)cmd->meta.opaque.len,
             cmd->meta.opaque.p);
    oc_status_t st = req_parse_keys(r, cmd, echo, err);
    if (st != OC_OK)
        goto fail;
    r->mcjob = oc_mc_job_new_get(r->nukeys, req_mc_done, r);
    if (r->mcjob == NULL) {
        st = oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    /* When most gets miss something, each key is read with a meta get that
     * takes a miss's lease in the same round trip (one round trip less per
     * cold get); when most hit, one multi-get per server is cheaper for
     * memcached and for us, and the few misses take their lease after. */
    if (d->miss_share > OC_REQ_MG_ABOVE) {
        r->mcjob->lease_ttl_s = d->lease_ttl_s;
        d->stats.mc_gets_leasing++;
    }
    for (size_t i = 0; i < r->nukeys; i++) {
        r->mcjob->keys[i] = r->ukeys[i].ckey;
        r->mcjob->key_lens[i] = r->ukeys[i].ckey_len;
    }
    r->pending = r->nukeys;
    r->started = oc_stats_now();
    d->stats.get_keys += r->nslots;
    for (size_t i = 0; i < r->nslots; i++)
        d->stats.models[r->ukeys[r->slot_ukey[i]].model_idx].get_keys++;
    d->stats.mc_gets++;
    *out = r;
    mget_list_add(d, r);
    oc_mc_submit(d->mc, r->mcjob);
    return OC_OK;
fail:
    req_free(r);
    return st;
}

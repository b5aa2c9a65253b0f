#include "oc_reply.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "oc_key.h"
#include "oc_mcproto.h"
#include "oc_proto.h"

oc_reply_kind_t oc_reply_client_error(struct evbuffer *out, const char *why)
{
    evbuffer_add_printf(out, "CLIENT_ERROR %s\r\n", why);
    return OC_REPLY_CLIENT_ERROR;
}

oc_reply_kind_t oc_reply_server_error(struct evbuffer *out, const char *why)
{
    evbuffer_add_printf(out, "SERVER_ERROR %s\r\n", why);
    return OC_REPLY_SERVER_ERROR;
}

oc_reply_kind_t oc_reply_error(struct evbuffer *out)
{
    evbuffer_add(out, "ERROR\r\n", 7);
    return OC_REPLY_CLIENT_ERROR;
}

oc_reply_kind_t oc_reply_text(struct evbuffer *out, const char *line)
{
    evbuffer_add(out, line, strlen(line));
    evbuffer_add(out, "\r\n", 2);
    return OC_REPLY_OK;
}

/* The k, b and O return flags every meta reply may carry. */
static void meta_key_opaque(const oc_reply_fmt_t *f, struct evbuffer *out)
{
    if (f->meta_flags & OC_META_K) {
        evbuffer_add(out, " k", 2);
        evbuffer_add(out, f->key, f->klen);
        if (f->meta_flags & OC_META_B)
            evbuffer_add(out, " b", 2);
    }
    if (f->meta_flags & OC_META_O)
        evbuffer_add_printf(out, " O%s", f->opaque);
}

/* mg: VA <len> <flags> + data, HD <flags> without v, EN when absent. The
 * return flags in a fixed order. */
static oc_reply_kind_t reply_meta_get(struct evbuffer *out, const oc_get_item_t *it,
                                      const oc_reply_fmt_t *f)
{
    unsigned fl = f->meta_flags;
    if (it->state != OC_GET_FOUND) {
        if (!(fl & OC_META_Q))
            evbuffer_add(out, "EN\r\n", 4);
        return OC_REPLY_OK;
    }
    if (fl & OC_META_V)
        evbuffer_add_printf(out, "VA %zu", it->len);
    else
        evbuffer_add(out, "HD", 2);
    if (fl & OC_META_F)
        evbuffer_add(out, " f0", 3);
    if (fl & OC_META_S)
        evbuffer_add_printf(out, " s%zu", it->len);
    if (fl & OC_META_C)
        evbuffer_add_printf(out, " c%" PRIu64, it->cas);
    if (fl & OC_META_T)
        evbuffer_add(out, " t-1", 4); /* objcached does not track TTLs */
    meta_key_opaque(f, out);
    evbuffer_add(out, "\r\n", 2);
    if (fl & OC_META_V) {
        evbuffer_add(out, it->data, it->len);
        evbuffer_add(out, "\r\n", 2);
    }
    return OC_REPLY_OK;
}

/* VALUE lines and END, written in one extent of the output buffer: no
 * printf per value. */
static oc_reply_kind_t reply_values(struct evbuffer *out, const oc_get_result_t *r,
                                    const oc_reply_fmt_t *f, uint64_t max_reply)
{
    /* Per value: "VALUE ", the key, " 0 ", its length and cas (<= 20
     * digits each, a space between) and two \r\n. */
    uint64_t size = 5;
    for (size_t i = 0; i < r->n; i++)
        if (r->items[i].state == OC_GET_FOUND)
            size += r->items[i].len + r->items[i].klen + 56;
    if (size > max_reply) {
        char why[96];
        snprintf(why, sizeof(why), "reply too large (%" PRIu64 " bytes, max %" PRIu64 ")",
                 size, max_reply);
        return oc_reply_server_error(out, why);
    }
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)size, &v, 1) < 1 || v.iov_len < size)
        return oc_reply_server_error(out, "out of memory");
    char *p = v.iov_base;
    for (size_t i = 0; i < r->n; i++) {
        const oc_get_item_t *it = &r->items[i];
        if (it->state != OC_GET_FOUND)
            continue;
        p = oc_mcp_put(p, "VALUE ", 6);
        p = oc_mcp_put(p, it->key, it->klen);
        p = oc_mcp_put(p, " 0 ", 3);
        p += oc_key_format_u64(p, it->len);
        if (f->gets) {
            *p++ = ' ';
            p += oc_key_format_u64(p, it->cas);
        }
        p = oc_mcp_put(p, "\r\n", 2);
        p = oc_mcp_put(p, it->data, it->len);
        p = oc_mcp_put(p, "\r\n", 2);
    }
    p = oc_mcp_put(p, "END\r\n", 5);
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
    return OC_REPLY_OK;
}

oc_reply_kind_t oc_reply_get(struct evbuffer *out, const oc_get_result_t *r,
                             const oc_reply_fmt_t *f, uint64_t max_reply)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->items[i].state == OC_GET_ERROR) {
            evbuffer_add_printf(out, "SERVER_ERROR load failed: %s\r\n",
                                r->err ? r->err : "unknown error");
            return OC_REPLY_SERVER_ERROR;
        }
    if (f->style == OC_STYLE_META)
        return r->n == 1 ? reply_meta_get(out, &r->items[0], f)
                         : oc_reply_server_error(out, "meta get of several keys");
    return reply_values(out, r, f, max_reply);
}

oc_reply_kind_t oc_reply_write(struct evbuffer *out, oc_write_outcome_t o,
                               const char *err, const oc_reply_fmt_t *f)
{
    if (o == OC_WRITE_FAILED)
        return oc_reply_server_error(out, err && *err ? err : "write failed");
    int stored = o != OC_WRITE_NOT_STORED;
    if (f->style == OC_STYLE_META) {
        /* q suppresses HD (success), never NS. */
        if (stored && f->noreply)
            return OC_REPLY_OK;
        evbuffer_add(out, stored ? "HD" : "NS", 2);
        meta_key_opaque(f, out);
        evbuffer_add(out, "\r\n", 2);
        return OC_REPLY_OK;
    }
    if (f->noreply)
        return OC_REPLY_OK;
    static const char *const lines[] = {
        [OC_WRITE_STORED] = "STORED\r\n",
        [OC_WRITE_DELETED] = "DELETED\r\n",
        [OC_WRITE_NOT_STORED] = "NOT_STORED\r\n",
    };
    evbuffer_add(out, lines[o], strlen(lines[o]));
    return OC_REPLY_OK;
}

#include "oc_reply.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "oc_binproto.h"
#include "oc_key.h"
#include "oc_mcproto.h"
#include "oc_proto.h"
#include "oc_status.h"

oc_reply_kind_t oc_reply_client_error(struct evbuffer *out, const char *why)
{
    evbuffer_add_printf(out, "CLIENT_ERROR %s\r\n", why);
    return OC_REPLY_CLIENT_ERROR;
}

oc_reply_kind_t oc_reply_server_error(struct evbuffer *out, const char *why)
{
    /* memcached's own refusal of a write comes whole ("SERVER_ERROR out of
     * memory storing object"): said once, not "SERVER_ERROR SERVER_ERROR" */
    static const char prefix[] = "SERVER_ERROR ";
    if (strncmp(why, prefix, sizeof(prefix) - 1) == 0)
        why += sizeof(prefix) - 1;
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

/* Is this item's value sent by reference (f->unref)? */
static int by_ref(const oc_get_item_t *it, const oc_reply_fmt_t *f)
{
    return f->unref != NULL && it->state == OC_GET_FOUND && it->len >= OC_REPLY_REF_MIN;
}

/* The item's value into the output by reference; copied if libevent cannot
 * take the reference. Returns 0, or -1 out of memory. */
static int add_by_ref(struct evbuffer *out, const oc_get_item_t *it,
                      const oc_reply_fmt_t *f)
{
    if (f->fault_ref)
        return -1;
    ++*f->refs; /* before: a failed add may not call unref */
    if (evbuffer_add_reference(out, it->data, it->len, f->unref, f->unref_arg) == 0)
        return 0;
    --*f->refs;
    return evbuffer_add(out, it->data, it->len);
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
        /* memcached echoes k and O on a miss too: "EN k<key> O<opaque>" */
        if (!(fl & OC_META_Q)) {
            evbuffer_add(out, "EN", 2);
            meta_key_opaque(f, out);
            evbuffer_add(out, "\r\n", 2);
        }
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
    if (fl & OC_META_N)
        evbuffer_add(out, it->from_near ? " n1" : " n0", 3);
    meta_key_opaque(f, out);
    evbuffer_add(out, "\r\n", 2);
    if (fl & OC_META_V) {
        /* The VA line is out: without its data the stream is out of step. */
        if ((by_ref(it, f) ? add_by_ref(out, it, f)
                           : evbuffer_add(out, it->data, it->len)) != 0)
            return OC_REPLY_BROKEN;
        evbuffer_add(out, "\r\n", 2);
    }
    return OC_REPLY_OK;
}

/* Per value: "VALUE ", the key, " 0 ", its length and cas (<= 20 digits
 * each, a space between) and two \r\n; the value's bytes aside. */
#define VALUE_HEAD_MAX 56

/* "VALUE <key> 0 <bytes>[ <cas>]\r\n" at p; returns the end. */
static char *value_head(char *p, const oc_get_item_t *it, const oc_reply_fmt_t *f)
{
    p = oc_mcp_put(p, "VALUE ", 6);
    p = oc_mcp_put(p, it->key, it->klen);
    p = oc_mcp_put(p, " 0 ", 3);
    p += oc_key_format_u64(p, it->len);
    if (f->gets) {
        *p++ = ' ';
        p += oc_key_format_u64(p, it->cas);
    }
    return oc_mcp_put(p, "\r\n", 2);
}

/* Items [i, j) as VALUE lines in one extent of the output (no printf per
 * value), after the \r\n that ends the value before i when crlf; the
 * value of j - 1 left out when it goes by reference (ref), END when j is
 * the last. size: the extent's bound. */
static int values_extent(struct evbuffer *out, const oc_get_result_t *r,
                         const oc_reply_fmt_t *f, size_t i, size_t j, int crlf, int ref,
                         size_t size)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)size, &v, 1) < 1 || v.iov_len < size)
        return -1;
    char *p = v.iov_base;
    if (crlf)
        p = oc_mcp_put(p, "\r\n", 2);
    for (size_t k = i; k < j; k++) {
        const oc_get_item_t *it = &r->items[k];
        if (it->state != OC_GET_FOUND)
            continue;
        p = value_head(p, it, f);
        if (ref && k == j - 1)
            break;
        p = oc_mcp_put(p, it->data, it->len);
        p = oc_mcp_put(p, "\r\n", 2);
    }
    if (j == r->n && !ref)
        p = oc_mcp_put(p, "END\r\n", 5);
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
    return 0;
}

/* VALUE lines and END: in one extent of the output, or, when values go by
 * reference, in one extent up to each such value, which follows it. */
static oc_reply_kind_t reply_values(struct evbuffer *out, const oc_get_result_t *r,
                                    const oc_reply_fmt_t *f, uint64_t max_reply)
{
    uint64_t size = 5;
    for (size_t i = 0; i < r->n; i++)
        if (r->items[i].state == OC_GET_FOUND)
            size += r->items[i].len + r->items[i].klen + VALUE_HEAD_MAX;
    if (size > max_reply) {
        char why[96];
        snprintf(why, sizeof(why), "reply too large (%" PRIu64 " bytes, max %" PRIu64 ")",
                 size, max_reply);
        return oc_reply_server_error(out, why);
    }
    if (f->unref == NULL) /* every value copied: one extent */
        return values_extent(out, r, f, 0, r->n, 0, 0, (size_t)size) != 0
                   ? oc_reply_server_error(out, "out of memory")
                   : OC_REPLY_OK;
    size_t i = 0;
    int crlf = 0;
    do {
        size_t ext = crlf ? 2 : 0, j = i;
        int ref = 0;
        while (j < r->n && !ref) {
            const oc_get_item_t *it = &r->items[j++];
            if (it->state != OC_GET_FOUND)
                continue;
            ref = by_ref(it, f);
            ext += it->klen + VALUE_HEAD_MAX + (ref ? 0 : it->len);
        }
        if (values_extent(out, r, f, i, j, crlf, ref, ext + 5) != 0)
            return i == 0 ? oc_reply_server_error(out, "out of memory") : OC_REPLY_BROKEN;
        if (ref && add_by_ref(out, &r->items[j - 1], f) != 0)
            return OC_REPLY_BROKEN;
        crlf = ref;
        i = j;
    } while (i < r->n || crlf);
    return OC_REPLY_OK;
}

static oc_reply_kind_t reply_bin_get(struct evbuffer *out, const oc_get_result_t *r,
                                     const oc_reply_fmt_t *f);

static const char *too_large_msg(char *buf, size_t cap, const oc_get_result_t *r)
{
    snprintf(buf, cap,
             "reply too large (the values read from memcached passed max_reply, %" PRIu64
             " bytes)",
             r->max_reply);
    return buf;
}

oc_reply_kind_t oc_reply_get(struct evbuffer *out, const oc_get_result_t *r,
                             const oc_reply_fmt_t *f, uint64_t max_reply)
{
    if (f->style == OC_STYLE_BINARY)
        return reply_bin_get(out, r, f);
    for (size_t i = 0; i < r->n; i++) {
        if (r->items[i].state == OC_GET_ERROR) {
            evbuffer_add_printf(out, "SERVER_ERROR load failed: %s\r\n",
                                r->err ? r->err : "unknown error");
            return OC_REPLY_SERVER_ERROR;
        }
        if (r->items[i].state == OC_GET_TOO_LARGE) {
            char why[OC_ERRLEN];
            return oc_reply_server_error(out, too_large_msg(why, sizeof(why), r));
        }
    }
    if (f->style == OC_STYLE_META)
        return r->n == 1 ? reply_meta_get(out, &r->items[0], f)
                         : oc_reply_server_error(out, "meta get of several keys");
    return reply_values(out, r, f, max_reply);
}

oc_reply_kind_t oc_reply_write(struct evbuffer *out, oc_write_outcome_t o,
                               const char *err, const oc_reply_fmt_t *f)
{
    if (f->style == OC_STYLE_BINARY) {
        if (o == OC_WRITE_FAILED) {
            /* memcached's own refusal comes as its text line: without the
             * text protocol's prefix here, and its item size limit as
             * objcached's own max_value is said (E2BIG), not an internal
             * error (a probe's finding), and its out of memory as its own
             * binary protocol says it (ENOMEM). */
            static const char prefix[] = "SERVER_ERROR ";
            const char *why = err && *err ? err : "write failed";
            if (strncmp(why, prefix, sizeof(prefix) - 1) == 0)
                why += sizeof(prefix) - 1;
            uint16_t status =
                strcmp(why, "object too large for cache") == 0     ? OC_BIN_E2BIG
                : strcmp(why, "out of memory storing object") == 0 ? OC_BIN_ENOMEM
                                                                   : OC_BIN_EINTERNAL;
            return oc_reply_bin_status(out, f->bin, status,
                                       status == OC_BIN_EINTERNAL ? why : NULL);
        }
        return oc_reply_bin_status(
            out, f->bin, o == OC_WRITE_NOT_STORED ? OC_BIN_NOT_STORED : OC_BIN_SUCCESS,
            NULL);
    }
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

/* ---- binary ---------------------------------------------------------------- */

oc_reply_kind_t oc_reply_bin_kind(uint16_t status)
{
    switch (status) {
    case OC_BIN_SUCCESS:
    case OC_BIN_KEY_ENOENT:
    case OC_BIN_KEY_EEXISTS:
    case OC_BIN_NOT_STORED:
        return OC_REPLY_OK;
    case OC_BIN_EINVAL:
    case OC_BIN_UNKNOWN_COMMAND:
    case OC_BIN_AUTH_ERROR:
        return OC_REPLY_CLIENT_ERROR;
    default:
        return OC_REPLY_SERVER_ERROR;
    }
}

/* Room for a packet of at most cap bytes in the output itself (no copy
 * through a local buffer), or NULL if out of memory. */
static uint8_t *bin_reserve(struct evbuffer *out, size_t cap, struct evbuffer_iovec *v)
{
    if (evbuffer_reserve_space(out, (ev_ssize_t)cap, v, 1) < 1 || v->iov_len < cap)
        return NULL;
    return v->iov_base;
}

/* Keep the n bytes written there (a writer returns 0 only for a packet it
 * cannot encode: nothing is kept, and the stream would be out of step). */
static oc_reply_kind_t bin_commit(struct evbuffer *out, struct evbuffer_iovec *v,
                                  size_t n, oc_reply_kind_t kind)
{
    v->iov_len = n;
    evbuffer_commit_space(out, v, 1);
    return n > 0 ? kind : OC_REPLY_BROKEN;
}

oc_reply_kind_t oc_reply_bin_status(struct evbuffer *out, const oc_reply_bin_t *c,
                                    uint16_t status, const char *msg)
{
    if (oc_bin_suppressed(c->opcode, status))
        return oc_reply_bin_kind(status);
    if (msg == NULL)
        msg = oc_bin_status_msg(status);
    size_t cap = OC_BIN_HDR_LEN + strlen(msg);
    struct evbuffer_iovec v;
    uint8_t *p = bin_reserve(out, cap, &v);
    if (p == NULL)
        return OC_REPLY_BROKEN;
    return bin_commit(out, &v,
                      oc_bin_format_status(p, cap, c->opcode, status, c->opaque, 0, msg),
                      oc_reply_bin_kind(status));
}

oc_reply_kind_t oc_reply_bin_version(struct evbuffer *out, uint32_t opaque,
                                     const char *version)
{
    size_t cap = OC_BIN_HDR_LEN + strlen(version);
    struct evbuffer_iovec v;
    uint8_t *p = bin_reserve(out, cap, &v);
    if (p == NULL)
        return OC_REPLY_BROKEN;
    return bin_commit(out, &v, oc_bin_format_version(p, cap, opaque, version),
                      OC_REPLY_OK);
}

oc_reply_kind_t oc_reply_bin_stats(struct evbuffer *out, uint32_t opaque,
                                   const char *text, size_t len)
{
    const char *end = text + len;
    while (text < end) {
        const char *eol = memchr(text, '\n', (size_t)(end - text));
        const char *next = eol ? eol + 1 : end;
        size_t n = (size_t)((eol ? eol : end) - text);
        if (n > 0 && text[n - 1] == '\r')
            n--;
        const char *sp = n > 5 ? memchr(text + 5, ' ', n - 5) : NULL;
        if (sp != NULL && memcmp(text, "STAT ", 5) == 0) {
            const char *name = text + 5, *val = sp + 1;
            size_t nlen = (size_t)(sp - name), vlen = (size_t)(text + n - val);
            size_t cap = OC_BIN_HDR_LEN + nlen + vlen;
            struct evbuffer_iovec v;
            uint8_t *p = bin_reserve(out, cap, &v);
            if (p == NULL ||
                bin_commit(out, &v,
                           oc_bin_format_stat(p, cap, opaque, name, nlen, val, vlen),
                           OC_REPLY_OK) != OC_REPLY_OK)
                return OC_REPLY_BROKEN;
        }
        text = next;
    }
    struct evbuffer_iovec v;
    uint8_t *p = bin_reserve(out, OC_BIN_HDR_LEN, &v);
    if (p == NULL)
        return OC_REPLY_BROKEN;
    return bin_commit(out, &v, oc_bin_format_stat_end(p, OC_BIN_HDR_LEN, opaque),
                      OC_REPLY_OK);
}

/* The bytes of one item's packet that are copied (a referenced value is
 * not), 0 for a suppressed miss. */
static size_t bin_item_size(const oc_get_item_t *it, const oc_reply_bin_t *c,
                            const oc_reply_fmt_t *f, const char *const msgs[2])
{
    uint16_t klen = (uint16_t)it->klen; /* keys are at most OC_KEY_MAX */
    switch (it->state) {
    case OC_GET_FOUND:
        return oc_bin_get_hit_size(c->opcode, klen, (uint32_t)it->len) -
               (by_ref(it, f) ? it->len : 0);
    case OC_GET_ABSENT:
        if (oc_bin_suppressed(c->opcode, OC_BIN_KEY_ENOENT))
            return 0;
        return OC_BIN_HDR_LEN + (oc_bin_returns_key(c->opcode)
                                     ? klen
                                     : strlen(oc_bin_status_msg(OC_BIN_KEY_ENOENT)));
    default:
        return OC_BIN_HDR_LEN + strlen(msgs[it->state == OC_GET_TOO_LARGE]);
    }
}

/* Write one item's packet (its head only if the value goes by reference). */
static size_t bin_item(uint8_t *p, size_t cap, const oc_get_item_t *it,
                       const oc_reply_bin_t *c, const oc_reply_fmt_t *f,
                       const char *const msgs[2])
{
    uint16_t klen = (uint16_t)it->klen;
    size_t n;
    switch (it->state) {
    case OC_GET_FOUND:
        if (by_ref(it, f))
            return oc_bin_format_get_hit_head(p, cap, c->opcode, c->opaque, it->cas, 0,
                                              it->key, klen, (uint32_t)it->len);
        n = oc_bin_format_get_hit_head(p, cap, c->opcode, c->opaque, it->cas, 0, it->key,
                                       klen, (uint32_t)it->len);
        if (n > 0 && it->len > 0) /* cap was sized for the value (bin_item_size) */
            memcpy(p + n, it->data, it->len);
        return n > 0 ? n + it->len : 0;
    case OC_GET_ABSENT:
        if (oc_bin_suppressed(c->opcode, OC_BIN_KEY_ENOENT))
            return 0;
        return oc_bin_format_miss(p, cap, c->opcode, c->opaque, it->key, klen);
    default:
        return oc_bin_format_status(p, cap, c->opcode, OC_BIN_EINTERNAL, c->opaque, 0,
                                    msgs[it->state == OC_GET_TOO_LARGE]);
    }
}

/* Items [i, j) into one extent of the output; j - 1's value by reference if
 * it goes so. Returns OC_REPLY_OK or OC_REPLY_BROKEN. */
static oc_reply_kind_t bin_items(struct evbuffer *out, const oc_get_result_t *r,
                                 const oc_reply_fmt_t *f, size_t i, size_t j, size_t size,
                                 const char *const msgs[2])
{
    if (size > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(out, (ev_ssize_t)size, &v, 1) < 1 || v.iov_len < size)
            return OC_REPLY_BROKEN;
        uint8_t *p = v.iov_base, *end = p + size;
        for (size_t k = i; k < j; k++)
            p += bin_item(p, (size_t)(end - p), &r->items[k], &f->bin[k], f, msgs);
        v.iov_len = (size_t)(p - (uint8_t *)v.iov_base);
        evbuffer_commit_space(out, &v, 1);
    }
    const oc_get_item_t *last = &r->items[j - 1];
    if (!by_ref(last, f))
        return OC_REPLY_OK;
    return add_by_ref(out, last, f) == 0 ? OC_REPLY_OK : OC_REPLY_BROKEN;
}

static oc_reply_kind_t reply_bin_get(struct evbuffer *out, const oc_get_result_t *r,
                                     const oc_reply_fmt_t *f)
{
    /* The messages only when needed: a load's failure, values too large. */
    char errmsg[OC_ERRLEN + 16] = "", bigmsg[OC_ERRLEN] = "";
    const char *const msgs[2] = {errmsg, bigmsg};
    for (size_t k = 0; k < r->n; k++) {
        if (r->items[k].state == OC_GET_ERROR && errmsg[0] == '\0')
            snprintf(errmsg, sizeof(errmsg), "load failed: %s",
                     r->err ? r->err : "unknown error");
        else if (r->items[k].state == OC_GET_TOO_LARGE && bigmsg[0] == '\0')
            too_large_msg(bigmsg, sizeof(bigmsg), r);
    }
    oc_reply_kind_t kind = OC_REPLY_OK;
    size_t i = 0;
    while (i < r->n) {
        /* One extent up to and including the next value sent by reference. */
        size_t size = 0, j = i;
        while (j < r->n) {
            const oc_get_item_t *it = &r->items[j];
            if (it->state != OC_GET_FOUND && it->state != OC_GET_ABSENT)
                kind = OC_REPLY_SERVER_ERROR;
            size += bin_item_size(it, &f->bin[j], f, msgs);
            if (by_ref(&r->items[j++], f))
                break;
        }
        if (bin_items(out, r, f, i, j, size, msgs) == OC_REPLY_BROKEN)
            return OC_REPLY_BROKEN;
        i = j;
    }
    return kind;
}

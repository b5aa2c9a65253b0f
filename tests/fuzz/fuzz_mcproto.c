/*
 * libFuzzer target for oc_mcproto: the replies objcached reads from its
 * memcached pool, which it must survive whatever a broken (or hostile)
 * server sends. The input is read as a stream of reply lines, as oc_mc
 * does: parse, skip the data block of a VALUE, go on until a line is
 * incomplete or bad.
 *
 * Checked, besides ASan/UBSan on an exactly-sized heap copy:
 * - a parsed line lies inside the input and ends with \r\n;
 * - a VALUE's key is inside the line, non-empty, without spaces, and its
 *   byte count is within OC_MCP_VALUE_MAX; formatting the fields back as a
 *   store command and reading that line's numbers again gives the same;
 * - ERROR texts lie inside the line;
 * - a STAT line's name and value lie inside it, the name without spaces,
 *   neither empty; feeding them to oc_mcp_proc_stat keeps it sane (the
 *   process identity oc_mc learns on each new connection);
 * - NEED_MORE only when there is no line end within OC_MCP_LINE_MAX;
 * - an md line written for a VALUE's key and cas fits oc_mcp_md_size.
 * The corpus has the meta answers too (HD, NF, EX: the lease release).
 *
 *   bash scripts/fuzz.sh --target fuzz_mcproto --seconds 60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_mcproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_value(const char *line, const oc_mcp_line_t *l)
{
    if (l->klen == 0 || l->key < line + 6 || l->key + l->klen > line + l->line_len ||
        memchr(l->key, ' ', l->klen) != NULL || l->bytes > OC_MCP_VALUE_MAX)
        abort();
    /* The same fields written canonically read back the same. */
    size_t cap = l->klen + 80;
    char *v = malloc(cap);
    if (v == NULL)
        return;
    int n = snprintf(v, cap, "VALUE %.*s %u %u %llu\r\n", (int)l->klen, l->key,
                     (unsigned)l->flags, (unsigned)l->bytes, (unsigned long long)l->cas);
    oc_mcp_line_t r;
    if (n > 0 && (size_t)n < cap && n <= OC_MCP_LINE_MAX &&
        (oc_mcp_parse_line(v, (size_t)n, &r) != OC_MCP_VALUE || r.klen != l->klen ||
         memcmp(r.key, l->key, l->klen) != 0 || r.flags != l->flags ||
         r.bytes != l->bytes || r.cas != l->cas || r.line_len != (size_t)n))
        abort();
    free(v);
    if (l->klen <= OC_MCP_KEY_MAX) { /* and as a store command, within its size */
        char *buf = malloc(oc_mcp_store_size(l->klen, 0));
        if (buf && oc_mcp_format_store(buf, "cas", l->key, l->klen, l->flags, UINT32_MAX,
                                       "", 0, l->cas) > oc_mcp_store_size(l->klen, 0))
            abort();
        free(buf);
        /* and as the md of a lease release, exactly sized */
        char *md = malloc(oc_mcp_md_size(l->klen));
        if (md && oc_mcp_format_md(md, l->key, l->klen, l->cas) > oc_mcp_md_size(l->klen))
            abort();
        free(md);
    }
}

static void check_stat(const char *line, const oc_mcp_line_t *l, oc_mcp_proc_t *proc)
{
    const char *end = line + l->line_len - 2;
    if (l->klen == 0 || l->key != line + 5 || l->key + l->klen >= end ||
        memchr(l->key, ' ', l->klen) != NULL || l->text_len == 0 ||
        l->text != l->key + l->klen + 1 || l->text + l->text_len != end)
        abort();
    oc_mcp_proc_stat(proc, l->key, l->klen, l->text, l->text_len);
    if ((proc->seen & ~7u) != 0 ||
        (oc_mcp_proc_known(proc) && proc->time < proc->uptime) ||
        oc_mcp_proc_same(proc, proc) != oc_mcp_proc_known(proc))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    oc_mcp_proc_t proc = {0};
    char *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    memcpy(in, data, size);
    size_t off = 0;
    while (off < size) {
        oc_mcp_line_t l;
        oc_mcp_reply_t t = oc_mcp_parse_line(in + off, size - off, &l);
        if (t == OC_MCP_NEED_MORE) {
            if (memchr(in + off, '\n',
                       size - off < OC_MCP_LINE_MAX ? size - off : OC_MCP_LINE_MAX) !=
                NULL)
                abort();
            break;
        }
        if (t == OC_MCP_BAD)
            break;
        if (l.line_len < 2 || l.line_len > size - off ||
            in[off + l.line_len - 1] != '\n' || in[off + l.line_len - 2] != '\r')
            abort();
        if (t == OC_MCP_VALUE)
            check_value(in + off, &l);
        if (t == OC_MCP_ERROR && (l.text != in + off || l.text_len + 2 != l.line_len))
            abort();
        if (t == OC_MCP_STAT)
            check_stat(in + off, &l, &proc);
        off += l.line_len;
        if (t == OC_MCP_VALUE) {
            if (size - off < (size_t)l.bytes + 2)
                break;
            off += (size_t)l.bytes + 2;
        }
    }
    free(in);
    return 0;
}

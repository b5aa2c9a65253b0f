/*
 * oc_mcproto: the memcached ASCII protocol as objcached speaks it to its
 * pool: formatting the few commands it sends and reading the replies.
 * Pure functions over caller buffers; no I/O, no allocation (oc_mc does the
 * I/O and owns the buffers).
 *
 * Sent: `gets k1 k2 ...`, `mg <key> v c f k [N<ttl>] [R<sec>]` (memcached
 * >= 1.6.10: the read that takes a lease on a miss, and that picks one reader
 * to refresh a hit about to expire), `set|add|cas <key> <flags> <exptime>
 * <bytes> [<cas>]` + data, `ms <key> <bytes> c T<exptime> F<flags> C<cas>|ME`
 * + data (a store that returns the cas of the item it made), `md <key>
 * C<cas>`, `delete <key>`, `version`, `flush_all` (a server coming back into
 * service). Replies read: the VALUE lines of a multi-get up to END, the
 * VA/EN of a meta get, and the one-line replies of the others (`OK` is
 * flush_all's).
 */
#ifndef OC_MCPROTO_H
#define OC_MCPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define OC_MCP_KEY_MAX  250  /* memcached's KEY_MAX_LENGTH */
#define OC_MCP_LINE_MAX 2048 /* the longest reply line we accept */
/* A VALUE larger than this is a broken (or hostile) stream: objcached never
 * stores more than max_value (at most 128 MiB), and reading it would mean
 * buffering all of it. */
#define OC_MCP_VALUE_MAX (128u << 20)

/* Copy n bytes to p (a command or reply being built, not a C string);
 * returns p + n. */
static inline char *oc_mcp_put(char *p, const void *src, size_t n)
{
    if (n)
        memcpy(p, src, n);
    return p + n;
}

/* 1 if memcached can take `key` in a text command: 1..250 bytes, none of
 * them a space or a control character (which would split the command). */
int oc_mcp_key_ok(const char *key, size_t len);

/* No control character, space or DEL in p[0..len) (bytes >= 0x80 pass):
 * what memcached's text protocol allows in a key, without the length. */
int oc_mcp_printable(const char *p, size_t len);

typedef enum oc_mcp_reply {
    OC_MCP_NEED_MORE, /* no whole line yet */
    OC_MCP_VALUE,     /* VALUE <key> <flags> <bytes> [<cas>], a key memcached
                         could have stored (oc_mcp_key_ok) */
    OC_MCP_END,
    OC_MCP_STORED,
    OC_MCP_NOT_STORED,
    OC_MCP_EXISTS,
    OC_MCP_NOT_FOUND,
    OC_MCP_DELETED,
    OC_MCP_VERSION,
    OC_MCP_OK,    /* flush_all's answer */
    OC_MCP_VA,    /* VA <bytes> c<cas> f<flags> k<key> [W|Z|X]...: a meta get's
                     value (key: the k flag's, if it came) */
    OC_MCP_EN,    /* a meta get's miss, EN [k<key>] */
    OC_MCP_HD,    /* a meta command done, nothing to return (md: deleted) */
    OC_MCP_NF,    /* a meta command's NOT_FOUND */
    OC_MCP_EX,    /* a meta command's EXISTS (md: the cas did not match) */
    OC_MCP_NS,    /* a meta set's NOT_STORED (ms in add mode: the key exists) */
    OC_MCP_STAT,  /* STAT <name> <value>, a line of `stats`: key is the
                     name, text the value (one word or more, not empty) */
    OC_MCP_ERROR, /* ERROR [...], CLIENT_ERROR ..., SERVER_ERROR ...: text */
    OC_MCP_BAD,   /* not a reply we know, or too long: the stream is lost */
} oc_mcp_reply_t;

/* One reply line. Pointers point into the caller's buffer. */
typedef struct oc_mcp_line {
    oc_mcp_reply_t type;
    size_t line_len; /* bytes of the line, \r\n included */
    const char *key; /* VALUE; VA, EN: k<key>, or NULL; STAT: the name */
    size_t klen;
    uint32_t flags;
    uint32_t bytes;   /* the data block that follows (then \r\n) */
    uint64_t cas;     /* VALUE, VA; HD, NS, EX, NF: the c<cas> return flag (ms
                         asks for it), else 0 */
    int has_cas;      /* HD, NS, EX, NF: c<cas> came */
    int n_flags;      /* HD, NS, EX, NF: how many return flags came (c too) */
    int win;          /* VA: W or Z, or 0. On an empty item (flags 0, no
                         value) they are a lease: W, this client won it
                         (its N flag made the item), Z, another holds it.
                         On a value they come from R: W, this reader is
                         the one to refresh it; Z, another reader is */
    const char *text; /* ERROR: the whole line without \r\n; STAT: the value */
    size_t text_len;
} oc_mcp_line_t;

/* Which memcached process answers a connection, from the `stats` oc_mc
 * sends first on every new one: its pid and its start (`time` minus
 * `uptime`, the same in every answer of one process). A cas is one
 * process's count: after a restart the same number names another item.
 * A reconnect that finds another process starts a new cas epoch; one that
 * finds the same keeps it (a fill's lease is still its own there). */
typedef struct oc_mcp_proc {
    uint64_t pid;
    uint64_t time, uptime;
    unsigned seen; /* bits: 1 pid, 2 time, 4 uptime came, as numbers */
} oc_mcp_proc_t;
/* Take one `STAT <name> <value>` line into p (other names are ignored; a
 * value that is not a decimal number leaves its field unseen). */
void oc_mcp_proc_stat(oc_mcp_proc_t *p, const char *name, size_t nlen, const char *val,
                      size_t vlen);
/* 1 if pid, time and uptime all came and time >= uptime. */
int oc_mcp_proc_known(const oc_mcp_proc_t *p);
/* 1 if a and b are both known and the same process (pid and start). */
int oc_mcp_proc_same(const oc_mcp_proc_t *a, const oc_mcp_proc_t *b);
/* Read the reply line at buf[0..len). NEED_MORE if no \r\n yet (BAD if
 * there is none within OC_MCP_LINE_MAX bytes). */
oc_mcp_reply_t oc_mcp_parse_line(const char *buf, size_t len, oc_mcp_line_t *out);

#define OC_MCP_WIN           1 /* the W flag */
#define OC_MCP_WON_ELSEWHERE 2 /* the Z flag */

/* Bytes the mg command needs; write it (v c f k, and N<ttl> when ttl > 0).
 * k: the reply names its key, the one thing that ties a meta reply to its
 * command (a reply lost or sent twice would give the next keys another's
 * value: found by a review). */
size_t oc_mcp_mg_size(size_t klen);
size_t oc_mcp_format_mg(char *buf, const char *key, size_t klen, uint32_t ttl);
/* The same with R<refresh_s> when refresh_s > 0: a hit whose remaining TTL
 * is below refresh_s answers W to one reader and Z to the others (until the
 * item is replaced). At most oc_mcp_mg_size bytes too. */
size_t oc_mcp_format_mg_r(char *buf, const char *key, size_t klen, uint32_t ttl,
                          uint32_t refresh_s);

/* Bytes the md command below needs. */
size_t oc_mcp_md_size(size_t klen);
/* Write `md <key> C<cas>\r\n`: delete the key only if it still holds the
 * item of that cas (HD; NF if absent, EX if it changed). Returns the bytes
 * written (at most oc_mcp_md_size). */
size_t oc_mcp_format_md(char *buf, const char *key, size_t klen, uint64_t cas);

/* Bytes the ms command below needs, header and data and both \r\n. */
size_t oc_mcp_ms_size(size_t klen, size_t vlen);
/* Write `ms <key> <bytes> c T<exptime> F<flags> C<cas>\r\n<data>\r\n`: store
 * only over the item of that cas (EX if it changed, NF if it went), or with
 * cas 0 `... ME` (add: NS if the key holds anything). Either way `c` asks
 * for the cas of the item stored (`HD c<cas>`): a later write can then
 * replace exactly that item, not whatever holds the same bytes. Returns
 * the bytes written (at most oc_mcp_ms_size). */
size_t oc_mcp_format_ms(char *buf, const char *key, size_t klen, uint32_t flags,
                        uint32_t exptime, const char *val, size_t vlen, uint64_t cas);

/* Bytes the store command needs, header and data and both \r\n. */
size_t oc_mcp_store_size(size_t klen, size_t vlen);
/* Write `verb key flags exptime bytes [cas]\r\n<data>\r\n` into buf (at
 * least oc_mcp_store_size bytes); returns the bytes written. cas is sent
 * only when verb is "cas". */
size_t oc_mcp_format_store(char *buf, const char *verb, const char *key, size_t klen,
                           uint32_t flags, uint32_t exptime, const char *val, size_t vlen,
                           uint64_t cas);

#endif

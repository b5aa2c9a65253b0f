/*
 * objcache_parse: the replies libobjcache asks objcached for, parsed from bytes.
 *
 * Contract: pure. No I/O, no allocation, never reads outside buf[0..len), never
 * writes to buf. The caller owns the bytes and keeps every byte received since
 * the reply began in one buffer (it may move between calls: only offsets are
 * kept), and calls objcache_parse_feed() again after each read. Each call
 * resumes where the last stopped, so a reply is scanned about once.
 *
 * What is accepted is what objcached and memcached send, strictly:
 *   - lines end with "\r\n" (a bare "\n" is an error), contain no control
 *     characters other than tab, and are at most OBJCACHE_PARSE_MAX_LINE bytes;
 *   - tokens are separated by one space; numbers are plain decimal, no sign,
 *     no overflow;
 *   - GET: `VALUE <key> <flags> <bytes>[ <cas>]`, the data, "\r\n", ... `END`.
 *     Keys must be among those asked, in the order asked (a key asked twice
 *     may be answered twice); data must be followed by "\r\n" and contain no
 *     NUL; `<bytes>` must fit in max_reply, so a bogus length is refused
 *     before anyone allocates it;
 *   - STORE: STORED | NOT_STORED | EXISTS | NOT_FOUND; DELETE: DELETED |
 *     NOT_FOUND; VERSION: `VERSION <text>`; STATS: `STAT <name> <value>`... END;
 *   - for every kind, `ERROR`, `CLIENT_ERROR <msg>` or `SERVER_ERROR <msg>`
 *     ends the reply: the command failed (memcached may send SERVER_ERROR
 *     after some values, so a GET accepts it anywhere).
 */
#ifndef OBJCACHE_PARSE_H
#define OBJCACHE_PARSE_H

#include <stddef.h>

#include "objcache.h"

/* Longest reply line, "\r\n" included. A VALUE line is at most ~320 bytes. */
#define OBJCACHE_PARSE_MAX_LINE 8192

typedef enum objcache_reply_kind {
    OBJCACHE_REPLY_GET,     /* to get <key>... */
    OBJCACHE_REPLY_STORE,   /* to set */
    OBJCACHE_REPLY_DELETE,  /* to delete */
    OBJCACHE_REPLY_STATS,   /* to stats */
    OBJCACHE_REPLY_VERSION, /* to version */
} objcache_reply_kind_t;

typedef enum objcache_parse_result {
    OBJCACHE_PARSE_COMPLETE,   /* the whole reply is in; see status */
    OBJCACHE_PARSE_INCOMPLETE, /* valid so far; read more (see need) */
    OBJCACHE_PARSE_ERROR,      /* not a valid reply; see error and why */
} objcache_parse_result_t;

/* Where a GET found a key's data: buf[off..off+len). */
typedef struct objcache_parse_value {
    size_t off;
    size_t len;
    int found;
} objcache_parse_value_t;

typedef struct objcache_parse {
    /* Set by objcache_parse_init(). */
    objcache_reply_kind_t kind;
    const char *const *keys; /* GET: the keys sent, in order (caller's) */
    size_t nkeys;
    objcache_parse_value_t *vals; /* GET: nkeys entries (caller's), filled */
    size_t max_reply;             /* a reply longer than this is ETOOBIG */

    /* Progress. */
    size_t pos;      /* bytes of the reply consumed */
    size_t next_key; /* GET: the first key a VALUE may still name */
    size_t nstats;   /* STATS: STAT lines seen */
    size_t need;     /* INCOMPLETE: no progress before len >= need */

    /* Outcome, when COMPLETE. */
    objcache_status_t status; /* OK, NOT_FOUND, NOT_STORED, EXISTS, ECLIENT, ESERVER
                                 or ECOMMAND (the last three: msg is the line) */
    size_t msg_off;           /* error line (without "\r\n") or VERSION text */
    size_t msg_len;

    /* Outcome, when ERROR. */
    objcache_status_t error; /* EPROTO or ETOOBIG */
    const char *why;         /* static text, e.g. "bare \\n without \\r" */
    size_t err_off;          /* offset of the line at fault */
} objcache_parse_t;

/*
 * Start parsing one reply. For GET, keys[nkeys] are the keys sent and vals
 * (nkeys entries) receives where each was found; both stay the caller's and
 * must live until the reply is complete. For other kinds pass NULL, 0, NULL.
 */
void objcache_parse_init(objcache_parse_t *p, objcache_reply_kind_t kind,
                         const char *const *keys, size_t nkeys,
                         objcache_parse_value_t *vals, size_t max_reply);

/*
 * Parse buf[0..len), all bytes of the reply so far (len never shrinks between
 * calls). Once COMPLETE, pos is the reply's length: bytes after it are not
 * part of it. Once ERROR, later calls return ERROR again.
 */
objcache_parse_result_t objcache_parse_feed(objcache_parse_t *p, const char *buf,
                                            size_t len);

/*
 * For a complete STATS reply: split the STAT line at *off into name and value
 * (offsets into buf) and move *off to the next line. Returns 0 at END.
 */
int objcache_parse_next_stat(const char *buf, size_t len, size_t *off, size_t *name_off,
                             size_t *name_len, size_t *value_off, size_t *value_len);

#endif

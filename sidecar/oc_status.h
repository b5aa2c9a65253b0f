/*
 * oc_status: the one status type every objcached module returns.
 *
 * Contract: functions that can fail return oc_status_t; OC_OK is 0 so that
 * `if (st != OC_OK)` reads naturally. A miss is not an error (OC_MISS), and
 * "try again later" (OC_AGAIN) is kept apart from failure. Where a caller needs
 * more than the code, the function also fills a caller-owned `char *err` of
 * OC_ERRLEN bytes with a one-line human message (no trailing newline).
 */
#ifndef OC_STATUS_H
#define OC_STATUS_H

#include <stddef.h>

#define OC_ERRLEN 256

typedef enum oc_status {
    OC_OK = 0,   /* done */
    OC_MISS,     /* looked for, not there: a normal outcome */
    OC_AGAIN,    /* would block / not yet: retry later */
    OC_EINVAL,   /* the input is malformed */
    OC_ETOOBIG,  /* the input is over a configured limit */
    OC_ENOMEM,   /* allocation failed */
    OC_EIO,      /* a system call or peer failed */
    OC_ECONFIG,  /* configuration is invalid */
    OC_EDB,      /* PostgreSQL failed */
    OC_EROW,     /* PostgreSQL ran the statement and it failed on the data of
                    some row (SQLSTATE class 22, 2F, 38, 39, P0: a cast, a
                    division, a function that raised): other ids may load */
    OC_ECACHE,   /* memcached failed */
    OC_ETIMEOUT, /* a bounded wait expired */
    OC_STATUS_COUNT
} oc_status_t;

/* A static, never-NULL name for `st` ("ok", "miss", ...). */
const char *oc_status_str(oc_status_t st);

/* snprintf into err (OC_ERRLEN bytes) and return st; err may be NULL. */
oc_status_t oc_fail(char *err, oc_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

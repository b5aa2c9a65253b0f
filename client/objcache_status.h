/*
 * objcache_status: the message table behind objcache_strerror(), and the one
 * helper every libobjcache module uses to report a failure with a detail.
 *
 * Contract: err is a caller-owned buffer of OBJCACHE_ERRLEN bytes (or NULL);
 * the message is one line, cut to fit, never longer.
 */
#ifndef OBJCACHE_STATUS_H
#define OBJCACHE_STATUS_H

#include "objcache.h"

/* snprintf into err (OBJCACHE_ERRLEN bytes, may be NULL) and return st. */
objcache_status_t objcache_fail(char *err, objcache_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

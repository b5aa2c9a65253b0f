#include "objcache_status.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const objcache_status_text[OBJCACHE_STATUS_COUNT] = {
    [OBJCACHE_OK] = "ok",
    [OBJCACHE_NOT_FOUND] = "not found",
    [OBJCACHE_NOT_STORED] = "not stored",
    [OBJCACHE_EXISTS] = "exists (cas conflict)",
    [OBJCACHE_EINVAL] = "invalid argument",
    [OBJCACHE_ENOMEM] = "out of memory",
    [OBJCACHE_ECONNECT] = "cannot connect",
    [OBJCACHE_EIO] = "connection failed",
    [OBJCACHE_ETIMEOUT] = "timed out",
    [OBJCACHE_EPROTO] = "bad reply from server",
    [OBJCACHE_ETOOBIG] = "reply too large",
    [OBJCACHE_ECLIENT] = "request refused by server",
    [OBJCACHE_ESERVER] = "server error",
    [OBJCACHE_ECOMMAND] = "command unknown to server",
};

const char *objcache_strerror(objcache_status_t st)
{
    if ((unsigned)st >= OBJCACHE_STATUS_COUNT)
        return "unknown status";
    return objcache_status_text[st];
}

objcache_status_t objcache_fail(char *err, objcache_status_t st, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, OBJCACHE_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return st;
}

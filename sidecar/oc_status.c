#include "oc_status.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const oc_status_names[OC_STATUS_COUNT] = {
    [OC_OK] = "ok",
    [OC_MISS] = "miss",
    [OC_AGAIN] = "again",
    [OC_EINVAL] = "invalid input",
    [OC_ETOOBIG] = "too big",
    [OC_ENOMEM] = "out of memory",
    [OC_EIO] = "i/o error",
    [OC_ECONFIG] = "bad configuration",
    [OC_EDB] = "database error",
    [OC_EROW] = "database error on a row",
    [OC_ECACHE] = "cache error",
    [OC_ETIMEOUT] = "timed out",
};

const char *oc_status_str(oc_status_t st)
{
    if ((unsigned)st >= OC_STATUS_COUNT)
        return "unknown status";
    return oc_status_names[st];
}

oc_status_t oc_fail(char *err, oc_status_t st, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, OC_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return st;
}

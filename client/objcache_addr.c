#include "objcache_addr.h"

#include <stdio.h>
#include <string.h>

#include "objcache_status.h"

static int addr_has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    return 0;
}

static objcache_status_t addr_unix(const char *path, objcache_addr_t *a, char *err)
{
    size_t n = strlen(path);
    if (n == 0)
        return objcache_fail(err, OBJCACHE_EINVAL, "empty unix socket path");
    if (n >= OBJCACHE_ADDR_PATH_MAX)
        return objcache_fail(err, OBJCACHE_EINVAL, "unix socket path over %d bytes",
                             OBJCACHE_ADDR_PATH_MAX - 1);
    if (addr_has_ctl(path, n))
        return objcache_fail(err, OBJCACHE_EINVAL,
                             "control character in unix socket path");
    a->kind = OBJCACHE_ADDR_UNIX;
    memcpy(a->path, path, n + 1);
    return OBJCACHE_OK;
}

/* 1..65535, decimal digits only. */
static int addr_port_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 5)
        return 0;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

static objcache_status_t addr_tcp(const char *s, objcache_addr_t *a, char *err)
{
    const char *host = s, *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return objcache_fail(err, OBJCACHE_EINVAL, "expected [ipv6]:port");
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return objcache_fail(err, OBJCACHE_EINVAL,
                                 "expected host:port, [ipv6]:port or unix:/path");
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen) != NULL)
            return objcache_fail(err, OBJCACHE_EINVAL,
                                 "an IPv6 address goes in brackets: [addr]:port");
    }
    if (hlen == 0)
        return objcache_fail(err, OBJCACHE_EINVAL, "empty host");
    if (hlen >= OBJCACHE_ADDR_HOST_MAX || addr_has_ctl(host, hlen) ||
        memchr(host, ' ', hlen) != NULL)
        return objcache_fail(err, OBJCACHE_EINVAL, "bad host");
    if (!addr_port_ok(colon + 1))
        return objcache_fail(err, OBJCACHE_EINVAL, "port must be 1..65535");
    a->kind = OBJCACHE_ADDR_TCP;
    memcpy(a->host, host, hlen);
    a->host[hlen] = '\0';
    memcpy(a->port, colon + 1, strlen(colon + 1) + 1);
    return OBJCACHE_OK;
}

objcache_status_t objcache_addr_parse(const char *s, objcache_addr_t *a, char *err)
{
    memset(a, 0, sizeof(*a));
    if (s == NULL || s[0] == '\0')
        return objcache_fail(err, OBJCACHE_EINVAL, "empty address");
    snprintf(a->text, sizeof(a->text), "%s", s);
    if (strncmp(s, "unix:", 5) == 0)
        return addr_unix(s + 5, a, err);
    if (s[0] == '/')
        return addr_unix(s, a, err);
    return addr_tcp(s, a, err);
}

/*
 * objcache_addr: an objcached address as text, parsed into what connect needs.
 *
 * Contract: pure and allocation-free; the result is a self-contained value
 * the caller owns (no pointers into the input).
 *
 *   unix:/run/objcached.sock   a unix socket; "unix:" may name a relative path
 *   /run/objcached.sock        the same (a path that starts with '/')
 *   127.0.0.1:11311            IPv4 address or host name, then a port 1..65535
 *   [::1]:11311                IPv6 address in brackets
 */
#ifndef OBJCACHE_ADDR_H
#define OBJCACHE_ADDR_H

#include "objcache.h"

#define OBJCACHE_ADDR_PATH_MAX 108 /* sizeof(sun_path), NUL included */
#define OBJCACHE_ADDR_HOST_MAX 256 /* NUL included */
#define OBJCACHE_ADDR_TEXT_MAX 300 /* the address as given, cut to fit */

typedef enum objcache_addr_kind {
    OBJCACHE_ADDR_UNIX,
    OBJCACHE_ADDR_TCP,
} objcache_addr_kind_t;

typedef struct objcache_addr {
    objcache_addr_kind_t kind;
    char path[OBJCACHE_ADDR_PATH_MAX]; /* UNIX: the socket path */
    char host[OBJCACHE_ADDR_HOST_MAX]; /* TCP: name or address, without brackets */
    char port[6];                      /* TCP: decimal, 1..65535 */
    char text[OBJCACHE_ADDR_TEXT_MAX]; /* as given, for messages */
} objcache_addr_t;

/*
 * Parse s into *a. Returns OBJCACHE_OK, or OBJCACHE_EINVAL with the reason in
 * err (OBJCACHE_ERRLEN bytes, may be NULL).
 */
objcache_status_t objcache_addr_parse(const char *s, objcache_addr_t *a, char *err);

#endif

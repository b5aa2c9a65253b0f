/*
 * objcache_net: non-blocking sockets with deadlines, for one client handle.
 *
 * Contract: every wait is a poll() bounded by an absolute deadline on the
 * monotonic clock (objcache_net_now_ms()), so a caller can share one deadline
 * across several calls. No signals: sends use MSG_NOSIGNAL, EINTR is retried.
 * Sockets are made non-blocking and close-on-exec. The caller owns the fd
 * from objcache_net_connect() and closes it. Failures return a status and
 * write one line into err (OBJCACHE_ERRLEN bytes).
 */
#ifndef OBJCACHE_NET_H
#define OBJCACHE_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "objcache.h"
#include "objcache_addr.h"

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t objcache_net_now_ms(void);

/* OK with *fd connected, or ECONNECT / ETIMEOUT / ENOMEM. */
objcache_status_t objcache_net_connect(const objcache_addr_t *a, int64_t deadline,
                                       int *fd, char *err);

/*
 * Send all of iov[0..iovcnt) (the array is consumed: entries are advanced).
 * OK, EIO or ETIMEOUT.
 */
objcache_status_t objcache_net_sendv(int fd, struct iovec *iov, int iovcnt,
                                     int64_t deadline, char *err);

/*
 * Read at least one byte into buf[0..room) (room > 0): OK with *got > 0, EIO
 * (including the server closing the connection) or ETIMEOUT.
 */
objcache_status_t objcache_net_recv(int fd, char *buf, size_t room, size_t *got,
                                    int64_t deadline, char *err);

/*
 * 1 if an idle connection can carry a new request: the server has not closed
 * it and has sent nothing unasked. Does not block.
 */
int objcache_net_idle_ok(int fd);

#endif

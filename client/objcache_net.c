#include "objcache_net.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "objcache_status.h"

int64_t objcache_net_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on fd until deadline: OK (ready, or an error to find by
 * trying), ETIMEOUT, or EIO if poll itself fails. */
static objcache_status_t net_wait(int fd, short events, int64_t deadline, char *err)
{
    for (;;) {
        int64_t left = deadline - objcache_net_now_ms();
        if (left <= 0)
            return objcache_fail(err, OBJCACHE_ETIMEOUT, "timed out");
        struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
        int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return OBJCACHE_OK;
        if (n < 0 && errno != EINTR)
            return objcache_fail(err, OBJCACHE_EIO, "poll: %s", strerror(errno));
    }
}

/* Finish a connect that returned EINPROGRESS. */
static objcache_status_t net_connect_wait(int fd, int64_t deadline, char *err)
{
    objcache_status_t st = net_wait(fd, POLLOUT, deadline, err);
    if (st != OBJCACHE_OK)
        return st;
    int so_err = 0;
    socklen_t len = sizeof(so_err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_err, &len) != 0)
        so_err = errno;
    if (so_err != 0)
        return objcache_fail(err, OBJCACHE_ECONNECT, "%s", strerror(so_err));
    return OBJCACHE_OK;
}

/* A unix socket's connect fails with EAGAIN while the server's listen
 * backlog is full (TCP would wait in EINPROGRESS instead), and nothing can
 * be polled for room: try again, 1 ms apart growing to 16 ms, until the
 * deadline. A server busy for a moment is not one that is down. */
static objcache_status_t net_connect_retry(int fd, const struct sockaddr *sa,
                                           socklen_t salen, int64_t deadline, char *err)
{
    long pause_ms = 1;
    for (;;) {
        int64_t left = deadline - objcache_net_now_ms();
        if (left <= 0)
            return objcache_fail(err, OBJCACHE_ETIMEOUT,
                                 "timed out: the server's listen backlog stayed full");
        long ms = pause_ms < left ? pause_ms : (long)left;
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (pause_ms < 16)
            pause_ms *= 2;
        if (connect(fd, sa, salen) == 0)
            return OBJCACHE_OK;
        if (errno == EINPROGRESS)
            return net_connect_wait(fd, deadline, err);
        if (errno != EAGAIN && errno != EINTR)
            return objcache_fail(err, OBJCACHE_ECONNECT, "%s", strerror(errno));
    }
}

static objcache_status_t net_connect_one(int family, const struct sockaddr *sa,
                                         socklen_t salen, int64_t deadline, int *out,
                                         char *err)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return objcache_fail(err,
                             errno == ENOMEM || errno == ENOBUFS ? OBJCACHE_ENOMEM
                                                                 : OBJCACHE_ECONNECT,
                             "socket: %s", strerror(errno));
    objcache_status_t st = OBJCACHE_OK;
    if (connect(fd, sa, salen) != 0) {
        if (errno == EINPROGRESS || errno == EINTR)
            st = net_connect_wait(fd, deadline, err);
        else if (errno == EAGAIN && family == AF_UNIX)
            st = net_connect_retry(fd, sa, salen, deadline, err);
        else
            st = objcache_fail(err, OBJCACHE_ECONNECT, "%s", strerror(errno));
    }
    if (st != OBJCACHE_OK)
        goto fail;
    if (family != AF_UNIX) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    *out = fd;
    return OBJCACHE_OK;
fail:
    close(fd);
    return st;
}

static objcache_status_t net_connect_unix(const objcache_addr_t *a, int64_t deadline,
                                          int *fd, char *err)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, a->path, strlen(a->path) + 1);
    return net_connect_one(AF_UNIX, (const struct sockaddr *)&sun, sizeof(sun), deadline,
                           fd, err);
}

/* Try each address the host resolves to, in order, until one connects. */
static objcache_status_t net_connect_tcp(const objcache_addr_t *a, int64_t deadline,
                                         int *fd, char *err)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(a->host, a->port, &hints, &res);
    if (rc != 0)
        return objcache_fail(err, rc == EAI_MEMORY ? OBJCACHE_ENOMEM : OBJCACHE_ECONNECT,
                             "%s", gai_strerror(rc));
    objcache_status_t st = objcache_fail(err, OBJCACHE_ECONNECT, "no address");
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        st = net_connect_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline, fd,
                             err);
        if (st == OBJCACHE_OK || st == OBJCACHE_ETIMEOUT)
            break;
    }
    freeaddrinfo(res);
    return st;
}

objcache_status_t objcache_net_connect(const objcache_addr_t *a, int64_t deadline,
                                       int *fd, char *err)
{
    char why[OBJCACHE_ERRLEN] = "";
    objcache_status_t st = a->kind == OBJCACHE_ADDR_UNIX
                               ? net_connect_unix(a, deadline, fd, why)
                               : net_connect_tcp(a, deadline, fd, why);
    if (st != OBJCACHE_OK)
        objcache_fail(err, st, "connect %s: %s", a->text, why);
    return st;
}

/* Drop the first `sent` bytes from the iovec array; returns the new start. */
static int net_advance(struct iovec *iov, int iovcnt, int start, size_t sent)
{
    while (start < iovcnt && sent >= iov[start].iov_len) {
        sent -= iov[start].iov_len;
        start++;
    }
    if (start < iovcnt) {
        iov[start].iov_base = (char *)iov[start].iov_base + sent;
        iov[start].iov_len -= sent;
    }
    return start;
}

objcache_status_t objcache_net_sendv(int fd, struct iovec *iov, int iovcnt,
                                     int64_t deadline, char *err)
{
    int start = net_advance(iov, iovcnt, 0, 0);
    while (start < iovcnt) {
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov + start;
        msg.msg_iovlen = (size_t)(iovcnt - start);
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n >= 0) {
            start = net_advance(iov, iovcnt, start, (size_t)n);
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return objcache_fail(err, OBJCACHE_EIO, "send: %s", strerror(errno));
        objcache_status_t st = net_wait(fd, POLLOUT, deadline, err);
        if (st != OBJCACHE_OK)
            return st;
    }
    return OBJCACHE_OK;
}

objcache_status_t objcache_net_recv(int fd, char *buf, size_t room, size_t *got,
                                    int64_t deadline, char *err)
{
    for (;;) {
        objcache_status_t st = net_wait(fd, POLLIN, deadline, err);
        if (st != OBJCACHE_OK)
            return st;
        ssize_t n = recv(fd, buf, room, 0);
        if (n > 0) {
            *got = (size_t)n;
            return OBJCACHE_OK;
        }
        if (n == 0)
            return objcache_fail(err, OBJCACHE_EIO, "server closed the connection");
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return objcache_fail(err, OBJCACHE_EIO, "recv: %s", strerror(errno));
    }
}

int objcache_net_idle_ok(int fd)
{
    char c;
    ssize_t n;
    do {
        n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* lg_conns: see lg_conns.h. */
#include "lg_conns.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lg_clock.h"

#define WINDOW          256  /* version replies outstanding at most */
#define OPEN_TIMEOUT_S  60.0 /* for opening them all */
#define CONNECT_TIMEOUT 10   /* seconds, one blocking connect */

/* A connection's state: the count of "VERSION " bytes matched so far
 * (0..8), then waiting for the end of the line, then one of these. */
enum { ST_OPEN = 100, ST_FAILED = 101 };
static const char version_prefix[] = "VERSION ";
#define PREFIX_LEN (sizeof(version_prefix) - 1)

typedef struct conns {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int ep;         /* epoll over the connections awaiting a reply */
    int *fds;       /* [want], -1 once closed */
    uint8_t *state; /* [want] */
    unsigned want;  /* --conns */
    unsigned made;  /* connections tried so far */
    unsigned open;  /* that answered VERSION */
    unsigned pending;
    char why[256]; /* the first failure */
} conns_t;

static void note(conns_t *c, const char *what, int err)
{
    if (c->why[0] == '\0')
        snprintf(c->why, sizeof(c->why), "%s: %s", what, strerror(err));
}

/* Each connection is a descriptor: take all the hard limit allows. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("objcached-loadgen: setrlimit(RLIMIT_NOFILE)");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        fprintf(stderr, "objcached-loadgen: conns: open files limit %llu\n",
                (unsigned long long)rl.rlim_cur);
}

static bool resolve(conns_t *c, const lg_server_t *s)
{
    if (s->port == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&c->addr;
        size_t len = strlen(s->host);
        if (len >= sizeof(un->sun_path)) {
            snprintf(c->why, sizeof(c->why), "socket path too long: %.200s", s->host);
            return false;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, s->host, len + 1);
        c->addrlen = sizeof(*un);
        return true;
    }
    char port[16];
    snprintf(port, sizeof(port), "%u", s->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(s->host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(c->why, sizeof(c->why), "%.200s: %s", s->host, gai_strerror(rc));
        return false;
    }
    memcpy(&c->addr, ai->ai_addr, ai->ai_addrlen);
    c->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return true;
}

/* A blocking connect (bounded by SO_SNDTIMEO) is simplest and, with the
 * window, never waits long; the socket is non-blocking afterwards. */
static int connect_one(conns_t *c)
{
    int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        note(c, "socket", errno);
        return -1;
    }
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&c->addr, c->addrlen) != 0) {
        note(c, "connect", errno);
        close(fd);
        return -1;
    }
    static const char cmd[] = "version\r\n";
    if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0 ||
        send(fd, cmd, sizeof(cmd) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(cmd) - 1)) {
        note(c, "send", errno);
        close(fd);
        return -1;
    }
    return fd;
}

static void finish(conns_t *c, unsigned i, bool ok)
{
    epoll_ctl(c->ep, EPOLL_CTL_DEL, c->fds[i], NULL);
    c->pending--;
    c->state[i] = ok ? ST_OPEN : ST_FAILED;
    if (ok) {
        c->open++;
    } else {
        close(c->fds[i]);
        c->fds[i] = -1;
    }
}

/* Reads what arrived on connection i, byte by byte against "VERSION ...\n". */
static void read_reply(conns_t *c, unsigned i)
{
    char buf[256];
    ssize_t r = recv(c->fds[i], buf, sizeof(buf), 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        note(c, "recv", r == 0 ? ECONNRESET : errno);
        finish(c, i, false);
        return;
    }
    for (ssize_t j = 0; j < r; j++) {
        if (c->state[i] < PREFIX_LEN && buf[j] != version_prefix[c->state[i]]) {
            snprintf(c->why, sizeof(c->why), "the server did not answer VERSION");
            finish(c, i, false);
            return;
        }
        if (c->state[i] < PREFIX_LEN)
            c->state[i]++;
        else if (buf[j] == '\n') {
            finish(c, i, true);
            return;
        }
    }
}

static void wait_replies(conns_t *c, int timeout_ms)
{
    struct epoll_event ev[256];
    int n = epoll_wait(c->ep, ev, 256, timeout_ms);
    for (int k = 0; k < n; k++)
        read_reply(c, ev[k].data.u32);
}

static void open_all(conns_t *c)
{
    double deadline = lg_now_s() + OPEN_TIMEOUT_S;
    while (c->made < c->want && lg_now_s() < deadline) {
        if (c->pending >= WINDOW) {
            wait_replies(c, 100);
            continue;
        }
        unsigned i = c->made;
        int fd = connect_one(c);
        if (fd < 0)
            break; /* the server refuses, or we are out of descriptors */
        c->fds[i] = fd;
        c->made++;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev);
        c->pending++;
    }
    while (c->pending > 0 && lg_now_s() < deadline)
        wait_replies(c, 100);
    if (c->pending > 0)
        snprintf(c->why, sizeof(c->why), "%u connections had no reply in %.0f s",
                 c->pending, OPEN_TIMEOUT_S);
}

/* Until stdin reaches EOF or the time is up. A stdin that cannot be
 * watched (closed, or not pollable) leaves only the time. */
static void hold(double seconds)
{
    double deadline = lg_now_s() + seconds;
    bool watch_stdin = true;
    for (double left; (left = deadline - lg_now_s()) > 0;) {
        int ms = left > 1.0 ? 1000 : (int)(left * 1000) + 1;
        if (!watch_stdin) {
            struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
            continue;
        if (p.revents & POLLNVAL) {
            watch_stdin = false;
            continue;
        }
        char buf[512];
        ssize_t r = read(0, buf, sizeof(buf));
        if (r == 0)
            return;
        if (r < 0 && errno != EINTR && errno != EAGAIN)
            watch_stdin = false;
    }
}

static void close_all(conns_t *c)
{
    for (unsigned i = 0; i < c->made; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    if (c->ep >= 0)
        close(c->ep);
    free(c->fds);
    free(c->state);
}

int lg_conns_run(const lg_opts_t *o)
{
    conns_t c = {.ep = -1, .want = o->conns};
    raise_nofile();
    c.fds = calloc(c.want, sizeof(*c.fds));
    c.state = calloc(c.want, sizeof(*c.state));
    c.ep = epoll_create1(EPOLL_CLOEXEC);
    if (c.fds == NULL || c.state == NULL || c.ep < 0)
        snprintf(c.why, sizeof(c.why), "out of memory or descriptors");
    else if (resolve(&c, &o->servers[0]))
        open_all(&c);
    printf("{\"mode\":\"conns\",\"open\":%u}\n", c.open);
    fflush(stdout);
    if (c.open < c.want)
        fprintf(stderr, "objcached-loadgen: conns: %u of %u open (%s)\n", c.open, c.want,
                c.why);
    else
        fprintf(stderr, "objcached-loadgen: conns: %u open; holding them\n", c.open);
    if (c.open > 0)
        hold(o->duration > 0 ? o->duration : 5.0);
    close_all(&c);
    return c.open == c.want ? 0 : 1;
}

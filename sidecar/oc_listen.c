#include "oc_listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "oc_conf.h"
#include "oc_log.h"
#include "oc_sd.h"
#include "oc_stats.h"

struct oc_listen {
    oc_ctx_t *ctx;
    oc_listen_accept_fn accept;
    void *arg;
    struct evconnlistener *tcp, *unx;
    char *unix_path; /* to unlink at close (NULL: inherited, systemd's) */
    dev_t unix_dev;  /* ... if the file there is still the one we bound */
    ino_t unix_ino;
    struct event *pause; /* out of descriptors: resume accepting */
    uint64_t failed;     /* accepts failed since accepting last worked */
    double logged_at;    /* when the last accept_failed line was written */
    int *clients;        /* passed as oc-client...: until adopted */
    char **client_names; /* ... and their names (for FDSTOREREMOVE) */
    size_t nclients;
    char **names; /* LISTEN_FDNAMES, split (split_names) */
};

/* While accepts keep failing, one accept_failed line a minute at most. */
#define OC_LISTEN_LOG_EVERY 60.0

static void on_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)el, (void)sa, (void)salen;
    oc_listen_t *l = arg;
    if (l->failed > 0) { /* the end of an episode out of descriptors */
        oc_log_info("event=accept_resumed failed=%llu", (unsigned long long)l->failed);
        l->failed = 0;
    }
    l->accept(l->arg, fd);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_listen_t *l = arg;
    if (l->tcp)
        evconnlistener_enable(l->tcp);
    if (l->unx)
        evconnlistener_enable(l->unx);
}

/* EMFILE and friends: the pending connection stays queued, so the listener
 * stays readable and would fail again at once. Pause accepting for 100 ms.
 * Each failure is counted; the first of an episode is logged, then one a
 * minute while it lasts (a line per pause was ten a second for as long as
 * a client held the descriptors), and accept_resumed ends it. */
static void on_accept_error(struct evconnlistener *el, void *arg)
{
    (void)el;
    oc_listen_t *l = arg;
    l->ctx->stats->accept_errors++;
    double now = oc_stats_now();
    if (l->failed++ == 0 || now - l->logged_at >= OC_LISTEN_LOG_EVERY) {
        l->logged_at = now;
        oc_log_error("event=accept_failed reason=\"%s\" failed=%llu "
                     "action=\"pausing accepts 100ms\"",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()),
                     (unsigned long long)l->failed);
    }
    if (l->tcp)
        evconnlistener_disable(l->tcp);
    if (l->unx)
        evconnlistener_disable(l->unx);
    struct timeval tv = {0, 100000};
    if (l->pause == NULL)
        l->pause = evtimer_new(l->ctx->base, on_resume, l);
    if (l->pause)
        evtimer_add(l->pause, &tv);
}

/* Split "host:port" / "[v6]:port" into its parts. */
static oc_status_t split_hostport(const char *s, char *host, size_t hcap, char *port,
                                  size_t pcap, char *err)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return oc_fail(err, OC_ECONFIG, "listen: bad address '%s'", s);
        snprintf(host, hcap, "%.*s", (int)(rb - s - 1), s + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return oc_fail(err, OC_ECONFIG, "listen: bad address '%s'", s);
        snprintf(host, hcap, "%.*s", (int)(colon - s), s);
    }
    snprintf(port, pcap, "%s", colon + 1);
    return OC_OK;
}

/* listen's addresses (getaddrinfo's list: the first is the one bound). */
static oc_status_t resolve_listen(const char *addr, struct addrinfo **ai, char *err)
{
    char host[256], port[16];
    if (split_hostport(addr, host, sizeof(host), port, sizeof(port), err) != OC_OK)
        return OC_ECONFIG;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int rc = getaddrinfo(host, port, &hints, ai);
    if (rc != 0)
        return oc_fail(err, OC_ECONFIG, "listen %s: %s", addr, gai_strerror(rc));
    return OC_OK;
}

static oc_status_t listen_tcp(oc_listen_t *l, const char *addr, char *err)
{
    struct addrinfo *ai = NULL;
    if (resolve_listen(addr, &ai, err) != OC_OK)
        return OC_ECONFIG;
    l->tcp = evconnlistener_new_bind(l->ctx->base, on_accept, l,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC,
                                     1024, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (l->tcp == NULL)
        return oc_fail(err, OC_EIO, "listen %s: %s", addr, strerror(errno));
    evconnlistener_set_error_cb(l->tcp, on_accept_error);
    return OC_OK;
}

/* 1 if the socket file at sun was left by a run that ended: connecting
 * to it is refused (ECONNREFUSED), nobody listens. Else 0, and why it is
 * someone's: a listener that answers or whose backlog is full (EAGAIN,
 * non-blocking), a datagram socket (EPROTOTYPE: /dev/log, say), or no
 * right to find out. */
static int unix_stale(const struct sockaddr_un *sun, char *why, size_t cap)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, cap, "cannot tell whether it is in use: %s", strerror(errno));
        return 0;
    }
    int rc = connect(fd, (const struct sockaddr *)sun, (socklen_t)sizeof(*sun));
    int e = errno;
    close(fd);
    if (rc != 0 && (e == ECONNREFUSED || e == ENOENT)) /* (ENOENT: gone meanwhile) */
        return 1;
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        snprintf(why, cap, "another process is listening on it");
    else if (e == EPROTOTYPE)
        snprintf(why, cap, "it is another kind of socket (datagram)");
    else
        snprintf(why, cap, "cannot tell whether it is in use: %s", strerror(e));
    return 0;
}

static oc_status_t listen_unix(oc_listen_t *l, const char *path, unsigned mode, char *err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path))
        return oc_fail(err, OC_ECONFIG, "unix_socket: path too long");
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    struct stat sb;
    /* A socket left by an earlier run is ours to replace; anything else
     * at that path is not ours to delete, and neither is a socket in use
     * (a second objcached started by mistake would take the running one's
     * clients, and leave none once it went; a path mistyped for /dev/log
     * would take the host's syslog). */
    char why[128];
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode))
            return oc_fail(err, OC_ECONFIG, "unix_socket %s exists and is not a socket",
                           path);
        if (!unix_stale(&sun, why, sizeof(why)))
            return oc_fail(err, OC_EIO, "unix_socket %s: %s", path, why);
        unlink(path);
    }
    mode_t old = umask(0777 & ~mode);
    l->unx = evconnlistener_new_bind(l->ctx->base, on_accept, l,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024,
                                     (struct sockaddr *)&sun, (int)sizeof(sun));
    umask(old);
    if (l->unx == NULL)
        return oc_fail(err, OC_EIO, "unix_socket %s: %s", path, strerror(errno));
    if (lstat(path, &sb) != 0)
        return oc_fail(err, OC_EIO, "unix_socket %s: %s", path, strerror(errno));
    if ((l->unix_path = strdup(path)) == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    l->unix_dev = sb.st_dev;
    l->unix_ino = sb.st_ino;
    if (chmod(path, mode) != 0)
        return oc_fail(err, OC_EIO, "chmod %s: %s", path, strerror(errno));
    evconnlistener_set_error_cb(l->unx, on_accept_error);
    return OC_OK;
}

/* ---- socket activation ---------------------------------------------------- */

#define OC_LISTEN_STR_(x) #x
#define OC_LISTEN_STR(x)  OC_LISTEN_STR_(x)

/* A plain decimal (digits only: no sign, space or prefix) of at most max. */
static int parse_decimal(const char *s, long max, long *out)
{
    long v = 0;
    if (s == NULL || *s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (max - (*s - '0')) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

int oc_listen_fds_parse(const char *pid_s, const char *fds_s, long mypid,
                        const char **why)
{
    long pid, n;
    if (pid_s == NULL)
        return 0;
    if (parse_decimal(pid_s, LONG_MAX, &pid) != 0 || pid == 0)
        return *why = "LISTEN_PID is not a process id", -1;
    if (pid != mypid)
        return 0; /* for another process */
    if (fds_s == NULL)
        return *why = "LISTEN_PID without LISTEN_FDS", -1;
    if (parse_decimal(fds_s, LONG_MAX, &n) != 0)
        return *why = "LISTEN_FDS is not a number", -1;
    if (n < 1 || n > OC_LISTEN_FDS_MAX)
        return *why =
                   "LISTEN_FDS is out of range (1.." OC_LISTEN_STR(OC_LISTEN_FDS_MAX) ")",
               -1;
    return (int)n;
}

/* "127.0.0.1:11311", "[::1]:11311" or the unix path, for the log. */
static void sockaddr_text(const struct sockaddr_storage *ss, socklen_t len, char *buf,
                          size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, cap, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
        size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                          ? len - offsetof(struct sockaddr_un, sun_path)
                          : 0;
        if (plen > 0 && sun->sun_path[0] == '\0')
            snprintf(buf, cap, "unix:@abstract");
        else
            snprintf(buf, cap, "%.*s", (int)strnlen(sun->sun_path, plen), sun->sun_path);
    } else {
        snprintf(buf, cap, "address family %d", (int)ss->ss_family);
    }
}

/* 1 if the socket's address is one of those `listen` resolves to. */
static int tcp_matches(const char *listen, const struct sockaddr_storage *ss)
{
    struct addrinfo *ai = NULL;
    char err[OC_ERRLEN];
    if (listen[0] == '\0' || resolve_listen(listen, &ai, err) != OC_OK)
        return 0;
    int match = 0;
    for (const struct addrinfo *a = ai; a != NULL && !match; a = a->ai_next) {
        if (a->ai_family != ss->ss_family)
            continue;
        if (a->ai_family == AF_INET) {
            const struct sockaddr_in *x = (const struct sockaddr_in *)a->ai_addr;
            const struct sockaddr_in *y = (const struct sockaddr_in *)ss;
            match =
                x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
        } else if (a->ai_family == AF_INET6) {
            const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a->ai_addr;
            const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)ss;
            match = x->sin6_port == y->sin6_port &&
                    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
        }
    }
    freeaddrinfo(ai);
    return match;
}

/* Which of our listeners the socket at fd is: its slot, or NULL with err
 * set (not a listening stream socket, or an address none is configured at). */
static struct evconnlistener **inherited_slot(oc_listen_t *l, int fd, char *addr,
                                              size_t cap, char *err)
{
    const oc_conf_t *conf = l->ctx->conf;
    int type = 0, listening = 0;
    socklen_t olen = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) != 0)
        return oc_fail(err, OC_EIO, "LISTEN_FDS: fd %d is not a socket: %s", fd,
                       strerror(errno)),
               NULL;
    olen = sizeof(listening);
    if (type != SOCK_STREAM)
        return oc_fail(err, OC_EIO, "LISTEN_FDS: fd %d is not a stream socket (type %d)",
                       fd, type),
               NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) != 0 || !listening)
        return oc_fail(err, OC_EIO, "LISTEN_FDS: fd %d is a socket that is not listening",
                       fd),
               NULL;
    struct sockaddr_storage ss = {0};
    socklen_t slen = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &slen) != 0)
        return oc_fail(err, OC_EIO, "LISTEN_FDS: fd %d: getsockname: %s", fd,
                       strerror(errno)),
               NULL;
    sockaddr_text(&ss, slen, addr, cap);
    struct evconnlistener **slot = NULL;
    if (ss.ss_family == AF_UNIX && conf->unix_socket[0] &&
        strcmp(addr, conf->unix_socket) == 0)
        slot = &l->unx;
    else if ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
             tcp_matches(conf->listen, &ss))
        slot = &l->tcp;
    if (slot == NULL)
        return oc_fail(err, OC_ECONFIG,
                       "LISTEN_FDS: fd %d listens on %s, which neither listen (%s) nor "
                       "unix_socket (%s) names (metrics_listen is always bound)",
                       fd, addr, conf->listen[0] ? conf->listen : "-",
                       conf->unix_socket[0] ? conf->unix_socket : "-"),
               NULL;
    if (*slot != NULL)
        return oc_fail(err, OC_ECONFIG, "LISTEN_FDS: fd %d: a second socket for %s", fd,
                       addr),
               NULL;
    return slot;
}

/* Take the listening socket systemd passed at fd. Already listening, so
 * no backlog is set (-1): systemd's Backlog= stands. */
static oc_status_t adopt_fd(oc_listen_t *l, int fd, char *err)
{
    char addr[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
    struct evconnlistener **slot = inherited_slot(l, fd, addr, sizeof(addr), err);
    if (slot == NULL)
        return OC_ECONFIG;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
        return oc_fail(err, OC_EIO, "LISTEN_FDS: fd %d: %s", fd, strerror(errno));
    *slot = evconnlistener_new(l->ctx->base, on_accept, l,
                               LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (*slot == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    evconnlistener_set_error_cb(*slot, on_accept_error);
    l->ctx->stats->listeners_inherited++;
    char shown[sizeof(addr)];
    oc_log_info("event=listen_inherited fd=%d addr=\"%s\"", fd,
                oc_log_clean(shown, sizeof(shown), addr));
    return OC_OK;
}

/* LISTEN_FDNAMES split at ':' into n names (a copy, one allocation:
 * names[0] is it), or NULL: unset, or not n of them (systemd never sets
 * that; sd_listen_fds_with_names fails, here no descriptor has a name:
 * each must be a configured listener, else the start fails). */
static char **split_names(const char *s, int n)
{
    if (s == NULL || n <= 0)
        return NULL;
    int colons = 0;
    for (const char *p = s; *p; p++)
        colons += *p == ':';
    if (colons != n - 1)
        return NULL;
    size_t len = strlen(s);
    char **names = calloc((size_t)n, sizeof(*names));
    char *copy = malloc(len + 1);
    if (names == NULL || copy == NULL) {
        free(names);
        free(copy);
        return NULL;
    }
    memcpy(copy, s, len + 1);
    char *p = copy;
    for (int k = 0; k < n; k++) {
        names[k] = p;
        char *end = strchr(p, ':');
        if (end != NULL) {
            *end = '\0';
            p = end + 1;
        }
    }
    return names;
}

static int is_client_name(const char *name)
{
    return name != NULL &&
           strncmp(name, OC_SD_CLIENT_FDNAME, sizeof(OC_SD_CLIENT_FDNAME) - 1) == 0;
}

/* Keep a client connection passed at fd for oc_listen_adopt_clients. */
static oc_status_t keep_client(oc_listen_t *l, int fd, char *name, char *err)
{
    if (l->clients == NULL) {
        l->clients = calloc(OC_LISTEN_FDS_MAX, sizeof(*l->clients));
        l->client_names = calloc(OC_LISTEN_FDS_MAX, sizeof(*l->client_names));
        if (l->clients == NULL || l->client_names == NULL)
            return oc_fail(err, OC_ENOMEM, "out of memory");
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* not a child's, whatever it is */
    l->clients[l->nclients] = fd;
    l->client_names[l->nclients++] = name;
    return OC_OK;
}

/* The sockets systemd passed, if it did. The variables are read and unset
 * (so no child of ours would take them for its own). */
static oc_status_t take_inherited(oc_listen_t *l, char *err)
{
    const char *why = NULL;
    int n = oc_listen_fds_parse(getenv("LISTEN_PID"), getenv("LISTEN_FDS"),
                                (long)getpid(), &why);
    char **names = split_names(getenv("LISTEN_FDNAMES"), n);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (n < 0)
        oc_log_warn(
            "event=listen_fds_ignored reason=\"%s\" action=\"binding as configured\"",
            why);
    oc_status_t st = OC_OK;
    for (int i = 0; i < n && st == OC_OK; i++) {
        int fd = OC_LISTEN_FDS_START + i;
        if (names != NULL && is_client_name(names[i]))
            st = keep_client(l, fd, names[i], err);
        else
            st = adopt_fd(l, fd, err) != OC_OK ? OC_ECONFIG : OC_OK;
    }
    l->names = names;
    return st;
}

/* Why the descriptor passed as a client connection is not one objcached
 * can serve, or NULL if it is. */
static const char *client_refusal(const oc_listen_t *l, int fd)
{
    const oc_conf_t *conf = l->ctx->conf;
    int type = 0, listening = 0;
    socklen_t olen = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) != 0)
        return "not a socket";
    if (type != SOCK_STREAM)
        return "not a stream socket";
    olen = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) != 0 || listening)
        return "a listening socket";
    struct sockaddr_storage ss = {0};
    socklen_t slen = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &slen) != 0)
        return "not connected";
    int served =
        (ss.ss_family == AF_UNIX && conf->unix_socket[0]) ||
        ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6) && conf->listen[0]);
    if (!served)
        return "an address family no listener of objcached serves";
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return "the client has gone";
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return "cannot make it non-blocking";
    return NULL;
}

/* Out of the store, every name the clients were passed under (one, but
 * said by systemd, not assumed): else the store's copy would keep each
 * connection open after objcached closes it, and the client would never
 * see the close. */
static void remove_from_store(const oc_listen_t *l)
{
    for (size_t i = 0; i < l->nclients; i++) {
        const char *name = l->client_names[i];
        int seen = 0;
        for (size_t j = 0; j < i && j < 16 && !seen; j++)
            seen = strcmp(l->client_names[j], name) == 0;
        if (seen || strlen(name) > 255)
            continue;
        char msg[300];
        snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
        if (oc_sd_notify(msg, NULL, 0) != 0 && errno != ENOENT)
            oc_log_warn("event=sd_notify_failed reason=\"%s\"", strerror(errno));
    }
}

void oc_listen_adopt_clients(oc_listen_t *l, int (*adopt)(void *arg, int fd), void *arg)
{
    if (l == NULL || l->nclients == 0)
        return;
    oc_stats_t *st = l->ctx->stats;
    uint64_t adopted = 0, refused = 0;
    for (size_t i = 0; i < l->nclients; i++) {
        int fd = l->clients[i];
        l->clients[i] = -1;
        const char *why = client_refusal(l, fd);
        if (why != NULL) {
            oc_log_warn("event=handover_refused fd=%d reason=\"%s\"", fd, why);
            close(fd);
        }
        if (why != NULL || adopt(arg, fd) != 0) {
            refused++;
            continue;
        }
        adopted++;
    }
    st->handover_adopted += adopted;
    st->handover_refused += refused;
    remove_from_store(l);
    oc_log_info("event=handover_adopted adopted=%llu refused=%llu",
                (unsigned long long)adopted, (unsigned long long)refused);
}

oc_listen_t *oc_listen_new(oc_ctx_t *ctx, oc_listen_accept_fn accept, void *arg,
                           char *err)
{
    oc_listen_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    l->ctx = ctx;
    l->accept = accept;
    l->arg = arg;
    const oc_conf_t *conf = ctx->conf;
    if (take_inherited(l, err) != OC_OK ||
        (conf->listen[0] && l->tcp == NULL &&
         listen_tcp(l, conf->listen, err) != OC_OK) ||
        (conf->unix_socket[0] && l->unx == NULL &&
         listen_unix(l, conf->unix_socket, conf->unix_socket_mode, err) != OC_OK)) {
        oc_listen_free(l);
        return NULL;
    }
    return l;
}

oc_status_t oc_listen_chown(oc_listen_t *l, unsigned uid, unsigned gid, char *err)
{
    if (l->unix_path && chown(l->unix_path, uid, gid) != 0)
        return oc_fail(err, OC_EIO, "chown %s: %s", l->unix_path, strerror(errno));
    return OC_OK;
}

/* Removes the socket file only if it is still the one we bound: deleted
 * while we ran, its path may hold another process's socket now (a second
 * objcached started after the file was gone), which is not ours to remove.
 * (Between the lstat and the unlink another could replace it again: a
 * window of a few instructions, not the whole run.) */
static void unlink_own_socket(const oc_listen_t *l)
{
    struct stat sb;
    if (l->unix_path == NULL || lstat(l->unix_path, &sb) != 0)
        return;
    if (sb.st_dev != l->unix_dev || sb.st_ino != l->unix_ino) {
        char shown[256];
        oc_log_warn("event=unix_socket_replaced path=\"%s\" action=\"left in place\"",
                    oc_log_clean(shown, sizeof(shown), l->unix_path));
        return;
    }
    unlink(l->unix_path);
}

void oc_listen_close(oc_listen_t *l)
{
    if (l == NULL)
        return;
    if (l->tcp)
        evconnlistener_free(l->tcp);
    l->tcp = NULL;
    if (l->unx) {
        evconnlistener_free(l->unx);
        unlink_own_socket(l); /* (none if inherited: the file is systemd's) */
    }
    l->unx = NULL;
}

void oc_listen_free(oc_listen_t *l)
{
    if (l == NULL)
        return;
    oc_listen_close(l);
    if (l->pause)
        event_free(l->pause);
    for (size_t i = 0; i < l->nclients; i++) /* not adopted: the start failed */
        if (l->clients[i] >= 0)
            close(l->clients[i]);
    free(l->clients);
    free(l->client_names);
    if (l->names)
        free(l->names[0]);
    free(l->names);
    free(l->unix_path);
    free(l);
}

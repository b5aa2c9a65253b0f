#include "oc_metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "oc_conf.h"
#include "oc_http.h"
#include "oc_log.h"
#include "oc_near.h"
#include "oc_stats.h"

/* A scraper sends a few hundred bytes of head and no body; one connection
 * at a time, every 15 s or so. The limits keep a hostile local client from
 * growing memory or holding descriptors: the head's bytes, the connections
 * open at once, and the whole life of one (not renewed by activity, so a
 * client trickling bytes is closed too). */
#define OC_METRICS_MAX_HEAD  16384
#define OC_METRICS_MAX_CONNS 64
#define OC_METRICS_LIFE_S    10
/* After the answer: how long, and how many bytes, to read and drop (the
 * lingering close, mconn_linger) */
#define OC_METRICS_LINGER_S     2
#define OC_METRICS_LINGER_BYTES (1u << 20)

typedef struct mconn mconn_t;
struct mconn {
    oc_metrics_t *m;
    struct bufferevent *bev;
    struct event *deadline;
    int answered;     /* the answer is written: linger once it is sent */
    int lingering;    /* sent, our side shut: reading until the client's end */
    size_t discarded; /* bytes dropped since */
    mconn_t *prev, *next;
};

struct oc_metrics {
    oc_ctx_t *ctx;
    struct evconnlistener *lis;
    struct event *resume; /* out of descriptors: accept again */
    uint64_t failed;      /* accepts failed since accepting last worked */
    double logged_at;     /* when the last accept_failed line was written */
    mconn_t *conns;
    size_t nconns;
};

void oc_metrics_render(struct evbuffer *out, const oc_stats_t *st, long uptime_s)
{
    evbuffer_add_printf(
        out,
        "# HELP objcached_info objcached's version\n"
        "# TYPE objcached_info gauge\n"
        "objcached_info{version=\"%s\"} 1\n"
        "# HELP objcached_uptime_seconds seconds since objcached started\n"
        "# TYPE objcached_uptime_seconds gauge\n"
        "objcached_uptime_seconds %ld\n",
        OC_VERSION, uptime_s);
    oc_stats_write_prometheus(st, out);
}

oc_status_t oc_metrics_address(const char *spec, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL)
        return OC_ECONFIG;
    size_t hl = (size_t)(colon - spec);
    const char *h = spec;
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']')
        h = spec + 1, hl -= 2;
    const char *p = colon + 1;
    unsigned long v = 0;
    for (; *p >= '0' && *p <= '9' && v <= 65535; p++)
        v = v * 10 + (unsigned long)(*p - '0');
    if (hl == 0 || hl >= cap || p == colon + 1 || *p != '\0' || v < 1 || v > 65535)
        return OC_ECONFIG;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)v;
    return OC_OK;
}

static void mconn_free(mconn_t *c)
{
    oc_metrics_t *m = c->m;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->nconns--;
    if (c->deadline)
        event_free(c->deadline);
    if (c->bev)
        bufferevent_free(c->bev); /* closes the socket */
    free(c);
}

/* The answer, then the lingering close once it is sent (mconn_linger). */
static void mconn_answer(mconn_t *c, oc_http_verdict_t v, int head_only)
{
    oc_ctx_t *ctx = c->m->ctx;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct evbuffer *body = evbuffer_new();
    const char *reason;
    int code = oc_http_status(v, &reason);
    const char *type = "text/plain; charset=utf-8";
    if (body == NULL) {
        code = 500, reason = "Internal Server Error";
    } else if (v == OC_HTTP_METRICS) {
        if (ctx->near) /* near_serving: not a past proof */
            oc_near_serving(ctx->near, oc_stats_now());
        oc_metrics_render(body, ctx->stats, (long)(time(NULL) - (time_t)ctx->started));
        type = "text/plain; version=0.0.4; charset=utf-8";
        ctx->stats->metrics_requests++;
    } else {
        evbuffer_add_printf(body, "%d %s%s\n", code, reason,
                            v == OC_HTTP_NOT_FOUND ? ": try /metrics" : "");
    }
    size_t len = body ? evbuffer_get_length(body) : 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "%sConnection: close\r\n\r\n",
                        code, reason, type, len,
                        code == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (body && !head_only)
        evbuffer_add_buffer(out, body);
    if (body)
        evbuffer_free(body);
    c->answered = 1;
    bufferevent_disable(c->bev, EV_READ);
}

/* The answer is out. Closing with the client's bytes unread (a body, a
 * pipelined request, a head over the limit) would send RST, and a client
 * may then lose the part of the answer it has not read yet (seen: a page
 * cut at 16 KiB). So shut our side and read and drop what comes until the
 * client's end: HTTP's lingering close (RFC 9112, 9.6), bounded in time
 * and bytes so a client cannot keep it busy. */
static void mconn_linger(mconn_t *c)
{
    struct timeval t = {OC_METRICS_LINGER_S, 0};
    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) != 0 ||
        evtimer_add(c->deadline, &t) != 0) {
        mconn_free(c);
        return;
    }
    c->lingering = 1;
    bufferevent_enable(c->bev, EV_READ);
}

static void mconn_read(struct bufferevent *bev, void *arg)
{
    mconn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->lingering) {
        c->discarded += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (c->discarded > OC_METRICS_LINGER_BYTES)
            mconn_free(c);
        return;
    }
    if (c->answered)
        return;
    size_t len = evbuffer_get_length(in);
    if (len > OC_METRICS_MAX_HEAD)
        len = OC_METRICS_MAX_HEAD;
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    int head_only = 0;
    oc_http_verdict_t v = oc_http_parse(p, len, OC_METRICS_MAX_HEAD, &head_only);
    if (v != OC_HTTP_MORE)
        mconn_answer(c, v, head_only);
}

/* Everything written: the answer is out. */
static void mconn_written(struct bufferevent *bev, void *arg)
{
    (void)bev;
    mconn_t *c = arg;
    if (c->answered && !c->lingering)
        mconn_linger(c);
}

static void mconn_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    mconn_t *c = arg;
    /* A client that shut its side after the request still gets the answer;
     * an error, or the end before a whole request, closes. */
    if ((what & BEV_EVENT_EOF) && c->answered && !c->lingering &&
        !(what & BEV_EVENT_ERROR))
        return;
    mconn_free(c);
}

static void mconn_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    mconn_free(arg);
}

static void on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lis, (void)sa, (void)salen;
    oc_metrics_t *m = arg;
    mconn_t *c = NULL;
    if (m->failed > 0) { /* the end of an episode out of descriptors */
        oc_log_info("event=accept_resumed where=metrics_listen failed=%llu",
                    (unsigned long long)m->failed);
        m->failed = 0;
    }
    if (m->nconns >= OC_METRICS_MAX_CONNS || (c = calloc(1, sizeof(*c))) == NULL) {
        m->ctx->stats->metrics_refused++;
        evutil_closesocket(fd);
        return;
    }
    c->m = m;
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    m->nconns++;
    struct timeval life = {OC_METRICS_LIFE_S, 0};
    c->bev = bufferevent_socket_new(m->ctx->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL)
        evutil_closesocket(fd);
    c->deadline = evtimer_new(m->ctx->base, mconn_expired, c);
    if (c->bev == NULL || c->deadline == NULL || evtimer_add(c->deadline, &life) != 0) {
        m->ctx->stats->metrics_refused++;
        mconn_free(c);
        return;
    }
    /* Reading stops at the head's limit (plus one byte to tell "over"). */
    bufferevent_setwatermark(c->bev, EV_READ, 0, OC_METRICS_MAX_HEAD + 1);
    bufferevent_setcb(c->bev, mconn_read, mconn_written, mconn_event, c);
    bufferevent_enable(c->bev, EV_READ);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_metrics_t *m = arg;
    evconnlistener_enable(m->lis);
}

/* EMFILE and friends: the pending connection stays queued, so the listener
 * stays readable and would fail again at once (a core spinning, libevent
 * warning at every turn). Pause it for 100 ms, and log as oc_listen does:
 * the first failure of an episode, then one line a minute at most. */
static void on_accept_error(struct evconnlistener *lis, void *arg)
{
    oc_metrics_t *m = arg;
    m->ctx->stats->accept_errors++;
    double now = oc_stats_now();
    if (m->failed++ == 0 || now - m->logged_at >= 60.0) {
        m->logged_at = now;
        oc_log_error("event=accept_failed where=metrics_listen reason=\"%s\" failed=%llu "
                     "action=\"pausing accepts 100ms\"",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()),
                     (unsigned long long)m->failed);
    }
    evconnlistener_disable(lis);
    struct timeval tv = {0, 100000};
    evtimer_add(m->resume, &tv);
}

/* Listen on host:port, the first address it resolves to that binds; NULL
 * with why (the resolver's message, or the last bind's errno) as listen's
 * own start errors say it (a probe: "cannot bind" for a busy port and for
 * a name that does not resolve alike). */
static struct evconnlistener *metrics_listen(oc_metrics_t *m, const char *host,
                                             uint16_t port, char *why, size_t cap)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(why, cap, "%s", gai_strerror(rc));
        return NULL;
    }
    struct evconnlistener *lis = NULL;
    snprintf(why, cap, "no address");
    for (const struct addrinfo *ai = res; ai != NULL && lis == NULL; ai = ai->ai_next) {
        errno = 0;
        lis = evconnlistener_new_bind(m->ctx->base, on_accept, m,
                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                          LEV_OPT_CLOSE_ON_EXEC,
                                      128, ai->ai_addr, (int)ai->ai_addrlen);
        if (lis == NULL)
            snprintf(why, cap, "%s", errno ? strerror(errno) : "cannot bind");
    }
    freeaddrinfo(res);
    return lis;
}

oc_metrics_t *oc_metrics_new(oc_ctx_t *ctx, char *err)
{
    char host[256];
    uint16_t port;
    const char *spec = ctx->conf->metrics_listen;
    if (oc_metrics_address(spec, host, sizeof(host), &port) != OC_OK)
        return oc_fail(err, OC_ECONFIG, "metrics_listen: bad address"), NULL;
    oc_metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    m->ctx = ctx;
    if ((m->resume = evtimer_new(ctx->base, on_resume, m)) == NULL) {
        oc_metrics_free(m);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    char why[128];
    if ((m->lis = metrics_listen(m, host, port, why, sizeof(why))) == NULL) {
        oc_metrics_free(m);
        return oc_fail(err, OC_EIO, "metrics_listen %s: %s", spec, why), NULL;
    }
    evconnlistener_set_error_cb(m->lis, on_accept_error);
    return m;
}

void oc_metrics_free(oc_metrics_t *m)
{
    if (m == NULL)
        return;
    mconn_t *next;
    for (mconn_t *c = m->conns; c != NULL; c = next) {
        next = c->next; /* mconn_free unlinks c */
        mconn_free(c);
    }
    if (m->lis)
        evconnlistener_free(m->lis);
    if (m->resume)
        event_free(m->resume);
    free(m);
}

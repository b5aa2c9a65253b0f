#include "oc_resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct oc_resolve_req {
    char *host;
    char port[8];
    oc_resolve_fn fn;
    void *arg;
    int cancelled; /* while the worker held it: dropped once answered */
    int rc;
    struct sockaddr_storage addr;
    socklen_t len;
    oc_resolve_req_t *next;
};

/* What the loop and the worker share, under mu. Freed by the worker when it
 * was started (it may outlive the resolver, inside a getaddrinfo), else by
 * oc_resolver_free. */
typedef struct rs_shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    oc_resolve_req_t *todo, *todo_tail, *done, *done_tail;
    int stop;
    int busy; /* the worker is inside a getaddrinfo */
    int efd;  /* the worker writes it when done gets a request */
} rs_shared_t;

struct oc_resolver {
    struct event *ev; /* efd readable */
    rs_shared_t *sh;
    int started;
    pthread_t th;
};

static void req_free(oc_resolve_req_t *q)
{
    if (q) {
        free(q->host);
        free(q);
    }
}

static void list_push(oc_resolve_req_t **head, oc_resolve_req_t **tail,
                      oc_resolve_req_t *q)
{
    q->next = NULL;
    if (*tail)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

/* Remove q from the list; 1 if it was there. */
static int list_remove(oc_resolve_req_t **head, oc_resolve_req_t **tail,
                       oc_resolve_req_t *q)
{
    oc_resolve_req_t *prev = NULL;
    for (oc_resolve_req_t *p = *head; p; prev = p, p = p->next) {
        if (p != q)
            continue;
        if (prev)
            prev->next = p->next;
        else
            *head = p->next;
        if (*tail == p)
            *tail = prev;
        return 1;
    }
    return 0;
}

static void list_free(oc_resolve_req_t *q)
{
    while (q) {
        oc_resolve_req_t *next = q->next;
        req_free(q);
        q = next;
    }
}

static void shared_free(rs_shared_t *sh)
{
    list_free(sh->todo);
    list_free(sh->done);
    pthread_cond_destroy(&sh->cv);
    pthread_mutex_destroy(&sh->mu);
    if (sh->efd >= 0)
        close(sh->efd);
    free(sh);
}

static void lookup(oc_resolve_req_t *q)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    q->rc = getaddrinfo(q->host, q->port, &hints, &ai);
    if (q->rc == 0 && (ai == NULL || ai->ai_addrlen > sizeof(q->addr)))
        q->rc = EAI_FAIL;
    if (q->rc == 0) {
        memcpy(&q->addr, ai->ai_addr, ai->ai_addrlen);
        q->len = ai->ai_addrlen;
    }
    if (ai)
        freeaddrinfo(ai);
}

static void *worker(void *arg)
{
    rs_shared_t *sh = arg;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        while (!sh->stop && sh->todo == NULL)
            pthread_cond_wait(&sh->cv, &sh->mu);
        if (sh->stop)
            break;
        oc_resolve_req_t *q = sh->todo;
        sh->todo = q->next;
        if (sh->todo == NULL)
            sh->todo_tail = NULL;
        sh->busy = 1;
        pthread_mutex_unlock(&sh->mu);
        lookup(q); /* the slow part, unlocked */
        pthread_mutex_lock(&sh->mu);
        sh->busy = 0;
        if (sh->stop) { /* the resolver is gone: nobody to answer */
            req_free(q);
            break;
        }
        list_push(&sh->done, &sh->done_tail, q);
        uint64_t one = 1;
        (void)!write(sh->efd, &one, sizeof(one));
    }
    pthread_mutex_unlock(&sh->mu);
    shared_free(sh);
    return NULL;
}

/* Answers, one at a time: a callback may cancel another request that is
 * answered too (it is still on the shared list, and is dropped there). */
static void on_answers(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    rs_shared_t *sh = arg;
    uint64_t n;
    (void)!read(fd, &n, sizeof(n));
    for (;;) {
        pthread_mutex_lock(&sh->mu);
        oc_resolve_req_t *q = sh->done;
        if (q) {
            sh->done = q->next;
            if (sh->done == NULL)
                sh->done_tail = NULL;
        }
        pthread_mutex_unlock(&sh->mu);
        if (q == NULL)
            return;
        if (!q->cancelled)
            q->fn(q->rc, q->rc ? NULL : (const struct sockaddr *)&q->addr, q->len,
                  q->arg);
        req_free(q);
    }
}

oc_resolver_t *oc_resolver_new(struct event_base *base)
{
    oc_resolver_t *r = calloc(1, sizeof(*r));
    rs_shared_t *sh = calloc(1, sizeof(*sh));
    if (r == NULL || sh == NULL) {
        free(r);
        free(sh);
        return NULL;
    }
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->cv, NULL);
    r->sh = sh;
    if ((sh->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
        (r->ev = event_new(base, sh->efd, EV_READ | EV_PERSIST, on_answers, sh)) ==
            NULL ||
        event_add(r->ev, NULL) != 0) {
        oc_resolver_free(r);
        return NULL;
    }
    return r;
}

void oc_resolver_free(oc_resolver_t *r)
{
    if (r == NULL)
        return;
    if (r->ev)
        event_free(r->ev);
    rs_shared_t *sh = r->sh;
    if (!r->started) {
        shared_free(sh);
        free(r);
        return;
    }
    pthread_mutex_lock(&sh->mu);
    sh->stop = 1;
    int busy = sh->busy;
    pthread_cond_signal(&sh->cv);
    pthread_mutex_unlock(&sh->mu); /* the worker frees sh now, or after its lookup */
    /* An idle worker ends at once: joined (a clean exit, nothing left for
     * a leak checker); one inside a slow getaddrinfo is not waited for. */
    if (busy)
        pthread_detach(r->th);
    else
        pthread_join(r->th, NULL);
    free(r);
}

/* The worker, with every signal blocked (they are the loop's). */
static int start_worker(oc_resolver_t *r)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&r->th, NULL, worker, r->sh);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    r->started = rc == 0;
    return rc == 0 ? 0 : -1;
}

oc_resolve_req_t *oc_resolve_start(oc_resolver_t *r, const char *host, uint16_t port,
                                   oc_resolve_fn fn, void *arg)
{
    if (!r->started && start_worker(r) != 0)
        return NULL;
    oc_resolve_req_t *q = calloc(1, sizeof(*q));
    if (q == NULL || (q->host = strdup(host)) == NULL) {
        free(q);
        return NULL;
    }
    snprintf(q->port, sizeof(q->port), "%u", (unsigned)port);
    q->fn = fn;
    q->arg = arg;
    rs_shared_t *sh = r->sh;
    pthread_mutex_lock(&sh->mu);
    list_push(&sh->todo, &sh->todo_tail, q);
    pthread_cond_signal(&sh->cv);
    pthread_mutex_unlock(&sh->mu);
    return q;
}

void oc_resolve_cancel(oc_resolver_t *r, oc_resolve_req_t *q)
{
    rs_shared_t *sh = r->sh;
    pthread_mutex_lock(&sh->mu);
    int gone = list_remove(&sh->todo, &sh->todo_tail, q) ||
               list_remove(&sh->done, &sh->done_tail, q);
    if (!gone)
        q->cancelled = 1; /* the worker holds it: dropped when answered */
    pthread_mutex_unlock(&sh->mu);
    if (gone)
        req_free(q);
}

int oc_resolve_is_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

void oc_resolve_addr_text(const struct sockaddr *addr, socklen_t len, char *buf,
                          size_t size)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo(addr, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(buf, size, "?");
    else
        snprintf(buf, size, addr->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
                 port);
}

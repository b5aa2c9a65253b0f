/*
 * oc_resolve: getaddrinfo off the event loop.
 *
 * getaddrinfo blocks: a DNS server that does not answer holds it for its
 * timeout (seconds), and on the loop that stalls every request. A resolver
 * runs it on a worker thread of its own (started at its first request),
 * one name at a time, and hands each answer back to the loop through an
 * eventfd: the callback runs from the loop, never inside oc_resolve_start.
 * glibc's getaddrinfo reads /etc/hosts and resolv.conf at each call, so a
 * name moved there or in DNS is seen at the next request.
 *
 * Ownership: the resolver owns each request until its callback has run
 * (or it was cancelled); the caller keeps the handle only to cancel it.
 * oc_resolver_free does not wait for a getaddrinfo under way: the worker
 * finishes it, drops it and frees what it shares with the loop itself (an
 * idle worker is joined).
 * Loop thread only (the worker is internal).
 */
#ifndef OC_RESOLVE_H
#define OC_RESOLVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
typedef struct oc_resolver oc_resolver_t;
typedef struct oc_resolve_req oc_resolve_req_t;

/* rc 0: *addr (len bytes) is the name's first TCP address; else a
 * getaddrinfo error (gai_strerror(rc)) and addr is NULL. */
typedef void (*oc_resolve_fn)(int rc, const struct sockaddr *addr, socklen_t len,
                              void *arg);

/* NULL if out of memory. */
oc_resolver_t *oc_resolver_new(struct event_base *base);
/* Requests not answered yet are dropped, never called back. */
void oc_resolver_free(oc_resolver_t *r);
/* Resolve host:port; fn(rc, addr, len, arg) runs later from the loop.
 * NULL if out of memory (nothing will be called). */
oc_resolve_req_t *oc_resolve_start(oc_resolver_t *r, const char *host, uint16_t port,
                                   oc_resolve_fn fn, void *arg);
/* The request's callback will not run (it may still be resolving: its
 * answer is dropped). */
void oc_resolve_cancel(oc_resolver_t *r, oc_resolve_req_t *q);

/* Is host a literal IPv4 or IPv6 address (nothing to resolve again)? */
int oc_resolve_is_literal(const char *host);
/* addr as "1.2.3.4:port" or "[::1]:port" into buf. */
void oc_resolve_addr_text(const struct sockaddr *addr, socklen_t len, char *buf,
                          size_t size);

#endif

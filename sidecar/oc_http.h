/*
 * oc_http: what the /metrics listener needs of an HTTP/1.x request: its
 * head (request line and headers) is whole or not, and what to answer.
 * Headers are not interpreted (a scraper needs none of them) and a body is
 * never read: every answer closes the connection.
 *
 * Pure: no I/O, no allocation; the caller owns the buffer. Fuzzed by
 * tests/fuzz/fuzz_http.c.
 */
#ifndef OC_HTTP_H
#define OC_HTTP_H

#include <stddef.h>

typedef enum oc_http_verdict {
    OC_HTTP_MORE,      /* the head is not whole yet, and under max bytes */
    OC_HTTP_TOO_LARGE, /* max bytes and no end of the head: 431 */
    OC_HTTP_BAD,       /* not an HTTP/1.x request line: 400 */
    OC_HTTP_METHOD,    /* a method other than GET or HEAD: 405 */
    OC_HTTP_NOT_FOUND, /* a path other than /metrics: 404 */
    OC_HTTP_METRICS,   /* GET or HEAD /metrics (a query string allowed): 200 */
} oc_http_verdict_t;

/* The verdict on the first len bytes a client sent. The head ends at the
 * first empty line (CRLF CRLF, or LF LF); empty lines before the request
 * line are skipped (RFC 9112 2.2). *head_only is set for HEAD. A head
 * whose end lies beyond max bytes is TOO_LARGE, whatever it holds. */
oc_http_verdict_t oc_http_parse(const char *buf, size_t len, size_t max, int *head_only);

/* The status line's code and reason for a verdict other than MORE. */
int oc_http_status(oc_http_verdict_t v, const char **reason);

#endif

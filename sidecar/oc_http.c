#include "oc_http.h"

#include <string.h>
#include <strings.h>

/* The end of the head: the offset just past its empty line, or 0. */
static size_t head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static int is_token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The request line [p, end): METHOD SP TARGET SP HTTP/1.x */
static oc_http_verdict_t request_line(const char *p, const char *end, int *head_only)
{
    const char *m = p;
    while (p < end && is_token_char(*p))
        p++;
    size_t mlen = (size_t)(p - m);
    if (mlen == 0 || p >= end || *p != ' ')
        return OC_HTTP_BAD;
    const char *t = ++p;
    while (p < end && *p != ' ' && (unsigned char)*p > 0x20 && *p != 0x7f)
        p++;
    size_t tlen = (size_t)(p - t);
    if (tlen == 0 || p >= end || *p != ' ')
        return OC_HTTP_BAD;
    p++;
    if ((size_t)(end - p) != 8 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' ||
        p[7] > '9')
        return OC_HTTP_BAD;
    int get = mlen == 3 && memcmp(m, "GET", 3) == 0;
    int head = mlen == 4 && memcmp(m, "HEAD", 4) == 0;
    if (!get && !head)
        return OC_HTTP_METHOD;
    *head_only = head;
    /* absolute-form (RFC 9112 3.2.2, a server MUST accept it): the path is
     * what follows the authority, which ends at the first '/', '?' or '#'
     * (RFC 3986 3.2); none is "/". Searched for '/' alone, "http://h?/metrics"
     * (the query "/metrics") was served the page (a probe's finding). */
    if (tlen > 7 && strncasecmp(t, "http://", 7) == 0) {
        size_t a = 7;
        while (a < tlen && t[a] != '/' && t[a] != '?' && t[a] != '#')
            a++;
        int path = a < tlen && t[a] == '/';
        tlen = path ? tlen - a : 0;
        t = path ? t + a : NULL;
    }
    if (tlen < 8 || memcmp(t, "/metrics", 8) != 0 || (tlen > 8 && t[8] != '?'))
        return OC_HTTP_NOT_FOUND;
    return OC_HTTP_METRICS;
}

oc_http_verdict_t oc_http_parse(const char *buf, size_t len, size_t max, int *head_only)
{
    *head_only = 0;
    size_t start = 0;
    while (start < len && (buf[start] == '\r' || buf[start] == '\n'))
        start++;
    size_t end = start < len ? head_end(buf + start, len - start) : 0;
    if (end == 0)
        return len >= max ? OC_HTTP_TOO_LARGE : OC_HTTP_MORE;
    if (start + end > max)
        return OC_HTTP_TOO_LARGE;
    const char *line = buf + start;
    const char *eol = memchr(line, '\n', end);
    if (eol > line && eol[-1] == '\r')
        eol--;
    return request_line(line, eol, head_only);
}

int oc_http_status(oc_http_verdict_t v, const char **reason)
{
    switch (v) {
    case OC_HTTP_METRICS:
        *reason = "OK";
        return 200;
    case OC_HTTP_NOT_FOUND:
        *reason = "Not Found";
        return 404;
    case OC_HTTP_METHOD:
        *reason = "Method Not Allowed";
        return 405;
    case OC_HTTP_TOO_LARGE:
        *reason = "Request Header Fields Too Large";
        return 431;
    case OC_HTTP_BAD:
    case OC_HTTP_MORE:
        break;
    }
    *reason = "Bad Request";
    return 400;
}

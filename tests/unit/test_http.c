/* oc_http: the verdict on a /metrics request's head. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_http.h"

static oc_http_verdict_t parse(const char *s, size_t max, int *head_only)
{
    return oc_http_parse(s, strlen(s), max, head_only);
}

static void test_metrics_requests(void **state)
{
    (void)state;
    int h = -1;
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 16384, &h),
                     OC_HTTP_METRICS);
    assert_int_equal(h, 0);
    assert_int_equal(parse("GET /metrics HTTP/1.0\n\n", 16384, &h), OC_HTTP_METRICS);
    assert_int_equal(parse("\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_METRICS);
    assert_int_equal(parse("HEAD /metrics HTTP/1.1\r\n\r\n", 16384, &h), OC_HTTP_METRICS);
    assert_int_equal(h, 1);
    /* a body after the head is never read */
    assert_int_equal(
        parse("GET /metrics HTTP/1.1\r\nContent-Length: 9\r\n\r\nxxxxxxxxx", 16384, &h),
        OC_HTTP_METRICS);
}

static void test_incomplete_and_too_large(void **state)
{
    (void)state;
    int h;
    assert_int_equal(parse("", 16384, &h), OC_HTTP_MORE);
    assert_int_equal(parse("\r\n", 16384, &h), OC_HTTP_MORE);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", 16384, &h),
                     OC_HTTP_MORE);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\n\r", 16384, &h), OC_HTTP_MORE);
    /* at the limit without an end; a whole head past the limit */
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nX: aaaa", 30, &h),
                     OC_HTTP_TOO_LARGE);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nX: aaaaaaaaa\r\n\r\n", 30, &h),
                     OC_HTTP_TOO_LARGE);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\n\r\n", 25, &h), OC_HTTP_METRICS);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\n\r\n", 24, &h), OC_HTTP_TOO_LARGE);
}

static void test_refusals(void **state)
{
    (void)state;
    int h;
    assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", 16384, &h), OC_HTTP_NOT_FOUND);
    assert_int_equal(parse("GET /metricsx HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_NOT_FOUND);
    assert_int_equal(parse("GET /metric HTTP/1.1\r\n\r\n", 16384, &h), OC_HTTP_NOT_FOUND);
    assert_int_equal(parse("POST /metrics HTTP/1.1\r\n\r\n", 16384, &h), OC_HTTP_METHOD);
    assert_int_equal(parse("get /metrics HTTP/1.1\r\n\r\n", 16384, &h), OC_HTTP_METHOD);
    const char *bad[] = {
        "GET /metrics\r\n\r\n",
        "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n",
        "GET /metrics HTTP/1.1 \r\n\r\n",
        "GET /met\x01rics HTTP/1.1\r\n\r\n",
        " GET /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.x\r\n\r\n",
        "G(T /metrics HTTP/1.1\r\n\r\n",
        "\x80\x01\x02\x03\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], 16384, &h), OC_HTTP_BAD);
    /* a NUL in the request line */
    assert_int_equal(oc_http_parse("GET /m\0 HTTP/1.1\r\n\r\n", 21, 16384, &h),
                     OC_HTTP_BAD);
}

/* RFC 9112 3.2.2: "A server MUST accept the absolute-form in
 * requests" (what a client sends through a forward proxy). */
static void test_absolute_form(void **state)
{
    (void)state;
    int h;
    assert_int_equal(
        parse("GET http://127.0.0.1:11312/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 16384,
              &h),
        OC_HTTP_METRICS);
    assert_int_equal(
        parse("GET HTTP://[::1]:11312/metrics?a=b HTTP/1.1\r\n\r\n", 16384, &h),
        OC_HTTP_METRICS);
    assert_int_equal(parse("GET http://host/other HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_NOT_FOUND);
    assert_int_equal(parse("GET http://host HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_NOT_FOUND);
    assert_int_equal(parse("GET http://host/metricsx HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_NOT_FOUND);
    /* the authority ends at '?' or '#' too: "/metrics" is then the query's */
    assert_int_equal(parse("GET http://h?/metrics HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_NOT_FOUND);
    assert_int_equal(parse("GET http://h#/metrics HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_NOT_FOUND);
    assert_int_equal(parse("GET http://h:1/metrics?/x HTTP/1.1\r\n\r\n", 16384, &h),
                     OC_HTTP_METRICS);
}

static void test_status(void **state)
{
    (void)state;
    const char *r;
    assert_int_equal(oc_http_status(OC_HTTP_METRICS, &r), 200);
    assert_string_equal(r, "OK");
    assert_int_equal(oc_http_status(OC_HTTP_NOT_FOUND, &r), 404);
    assert_int_equal(oc_http_status(OC_HTTP_METHOD, &r), 405);
    assert_int_equal(oc_http_status(OC_HTTP_TOO_LARGE, &r), 431);
    assert_int_equal(oc_http_status(OC_HTTP_BAD, &r), 400);
    assert_string_equal(r, "Bad Request");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_requests),
        cmocka_unit_test(test_incomplete_and_too_large),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_absolute_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

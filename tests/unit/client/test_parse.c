/*
 * Unit tests for objcache_parse: every reply kind, fed whole and byte by byte
 * from exactly-sized heap copies (so ASan and valgrind see any overread),
 * and the garbage a misbehaving server could send.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "objcache_parse.h"

#define MAXK 8
#define BIG  ((size_t)64 << 20)

typedef struct run {
    objcache_parse_t p;
    objcache_parse_value_t vals[MAXK];
    objcache_parse_result_t r;
} run_t;

/* Feed reply[0..len) at once, from a heap copy of exactly len bytes. */
static objcache_parse_result_t feed_copy(objcache_parse_t *p, const char *reply,
                                         size_t len)
{
    char *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    memcpy(copy, reply, len);
    objcache_parse_result_t r = objcache_parse_feed(p, copy, len);
    free(copy);
    return r;
}

static void start(run_t *t, objcache_reply_kind_t kind, const char *const *keys, size_t n,
                  size_t max)
{
    objcache_parse_init(&t->p, kind, keys, n, kind == OBJCACHE_REPLY_GET ? t->vals : NULL,
                        max);
}

/*
 * Parse reply whole, then again one byte at a time: every proper prefix
 * before the outcome must be INCOMPLETE, and both ways must agree.
 */
static objcache_parse_result_t parse_len(run_t *t, objcache_reply_kind_t kind,
                                         const char *const *keys, size_t n,
                                         const char *reply, size_t len, size_t max)
{
    run_t inc;
    start(t, kind, keys, n, max);
    t->r = feed_copy(&t->p, reply, len);
    start(&inc, kind, keys, n, max);
    for (size_t k = 0; k <= len; k++) {
        inc.r = feed_copy(&inc.p, reply, k);
        if (inc.r != OBJCACHE_PARSE_INCOMPLETE)
            break;
    }
    assert_int_equal(inc.r, t->r);
    if (t->r == OBJCACHE_PARSE_COMPLETE) {
        assert_int_equal(inc.p.pos, t->p.pos);
        assert_int_equal(inc.p.status, t->p.status);
        assert_true(t->p.pos <= len);
        for (size_t i = 0; i < n && kind == OBJCACHE_REPLY_GET; i++) {
            assert_int_equal(inc.vals[i].found, t->vals[i].found);
            assert_int_equal(inc.vals[i].off, t->vals[i].off);
            assert_int_equal(inc.vals[i].len, t->vals[i].len);
        }
    }
    if (t->r == OBJCACHE_PARSE_ERROR)
        assert_int_equal(inc.p.error, t->p.error);
    return t->r;
}

static objcache_parse_result_t parse(run_t *t, objcache_reply_kind_t kind,
                                     const char *const *keys, size_t n, const char *reply)
{
    return parse_len(t, kind, keys, n, reply, strlen(reply), BIG);
}

static const char *const K3[] = {"User:1", "User:2", "User:3"};

static void assert_value(const run_t *t, const char *reply, size_t i, const char *want)
{
    assert_true(t->vals[i].found);
    assert_int_equal(t->vals[i].len, strlen(want));
    assert_memory_equal(reply + t->vals[i].off, want, strlen(want));
}

static void test_get_hits_and_misses(void **state)
{
    (void)state;
    run_t t;
    const char *r = "VALUE User:1 0 8\r\n{\"id\":1}\r\n"
                    "VALUE User:3 0 2\r\n{}\r\n"
                    "END\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.status, OBJCACHE_OK);
    assert_int_equal(t.p.pos, strlen(r));
    assert_value(&t, r, 0, "{\"id\":1}");
    assert_false(t.vals[1].found);
    assert_value(&t, r, 2, "{}");
}

static void test_get_empty_and_cas(void **state)
{
    (void)state;
    run_t t;
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, "END\r\n"),
                     OBJCACHE_PARSE_COMPLETE);
    for (size_t i = 0; i < 3; i++)
        assert_false(t.vals[i].found);
    const char *r = "VALUE User:2 0 2 12345\r\n[]\r\nEND\r\n"; /* gets-style */
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_COMPLETE);
    assert_value(&t, r, 1, "[]");
    /* A zero-length value is a value. */
    r = "VALUE User:1 0 0\r\n\r\nEND\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_COMPLETE);
    assert_true(t.vals[0].found);
    assert_int_equal(t.vals[0].len, 0);
}

static void test_get_value_with_crlf_inside(void **state)
{
    (void)state;
    run_t t;
    /* The data block is length-delimited: "\r\nEND\r\n" inside it is data. */
    const char *r = "VALUE User:1 0 7\r\n\r\nEND\r\n\r\nEND\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_COMPLETE);
    assert_value(&t, r, 0, "\r\nEND\r\n");
    assert_int_equal(t.p.pos, strlen(r));
}

static void test_get_duplicates(void **state)
{
    (void)state;
    run_t t;
    static const char *const k[] = {"A:1", "A:1"};
    const char *r = "VALUE A:1 0 1\r\n1\r\nVALUE A:1 0 1\r\n2\r\nEND\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, k, 2, r), OBJCACHE_PARSE_COMPLETE);
    assert_value(&t, r, 0, "1");
    assert_value(&t, r, 1, "2");
    r = "VALUE A:1 0 1\r\n1\r\nEND\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, k, 2, r), OBJCACHE_PARSE_COMPLETE);
    assert_true(t.vals[0].found);
    assert_false(t.vals[1].found);
    r = "VALUE A:1 0 1\r\n1\r\nVALUE A:1 0 1\r\n2\r\nVALUE A:1 0 1\r\n3\r\nEND\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, k, 2, r), OBJCACHE_PARSE_ERROR);
}

static void test_server_error_lines(void **state)
{
    (void)state;
    run_t t;
    const char *r = "SERVER_ERROR load failed: connection refused\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.status, OBJCACHE_ESERVER);
    assert_int_equal(t.p.msg_len, strlen(r) - 2);
    assert_memory_equal(r + t.p.msg_off, "SERVER_ERROR load", 17);
    r = "CLIENT_ERROR unknown model: Nope:1\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.status, OBJCACHE_ECLIENT);
    assert_int_equal(parse(&t, OBJCACHE_REPLY_STATS, NULL, 0, "ERROR\r\n"),
                     OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.status, OBJCACHE_ECOMMAND);
    /* memcached can fail after some values */
    r = "VALUE User:1 0 2\r\n{}\r\nSERVER_ERROR out of memory writing get response\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.status, OBJCACHE_ESERVER);
    /* Not error lines. */
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, "ERRORS\r\n"),
                     OBJCACHE_PARSE_ERROR);
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, "SERVER_ERRORx\r\n"),
                     OBJCACHE_PARSE_ERROR);
}

static void assert_get_error(const char *reply, size_t len, objcache_status_t want)
{
    run_t t;
    assert_int_equal(parse_len(&t, OBJCACHE_REPLY_GET, K3, 3, reply, len, BIG),
                     OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, want);
    assert_non_null(t.p.why);
    /* Once failed, always failed. */
    assert_int_equal(objcache_parse_feed(&t.p, reply, len), OBJCACHE_PARSE_ERROR);
}

static void test_get_garbage(void **state)
{
    (void)state;
#define BAD(s) assert_get_error(s, sizeof(s) - 1, OBJCACHE_EPROTO)
    BAD("VALUE User:2 0 1\r\na\r\nVALUE User:1 0 1\r\nb\r\nEND\r\n"); /* wrong order */
    BAD("VALUE User:9 0 1\r\na\r\nEND\r\n");                          /* not asked */
    BAD("VALUE user:1 0 1\r\na\r\nEND\r\n");                          /* case differs */
    BAD("VALUE User:1x 0 1\r\na\r\nEND\r\n");                         /* longer */
    BAD("VALUE User: 0 1\r\na\r\nEND\r\n");                           /* shorter */
    BAD("VALUE User:1 0 -1\r\n");
    BAD("VALUE User:1 0 +1\r\na\r\n");
    BAD("VALUE User:1 0 1x\r\na\r\n");
    BAD("VALUE User:1 0 \r\n");
    BAD("VALUE User:1 0\r\n");
    BAD("VALUE User:1 x 1\r\na\r\n");
    BAD("VALUE User:1 4294967296 1\r\na\r\n");      /* flags over 32 bits */
    BAD("VALUE User:1 0 18446744073709551616\r\n"); /* 2^64: overflow */
    BAD("VALUE User:1 0 1 x\r\na\r\n");             /* bad cas */
    BAD("VALUE User:1 0 1 1 1\r\na\r\n");           /* too many tokens */
    BAD("VALUE User:1  0 1\r\na\r\n");              /* double space */
    BAD("VALUE  User:1 0 1\r\na\r\n");
    BAD("VALUE User:1 0 1 \r\na\r\n"); /* trailing space */
    BAD("VALUE \r\n");
    BAD("VALUE\r\n");
    BAD("END\n"); /* \n without \r */
    BAD("VALUE User:1 0 1\na\r\nEND\r\n");
    BAD("\n");
    BAD("EN\rD\r\n"); /* \r inside a line */
    BAD("END \r\n");
    BAD("end\r\n");
    BAD("\r\n");
    BAD("STORED\r\n");                      /* a reply to something else */
    BAD("VALUE User:1 0 2\r\n{}xxEND\r\n"); /* data not followed by \r\n */
    BAD("VALUE User:1 0 2\r\n{}\rxEND\r\n");
    BAD("VALUE User:1 0 5\r\n{}\r\nEND\r\n"); /* length too long */
    BAD("VALUE User:1 0 1\r\n{}\r\nEND\r\n"); /* length too short */
    BAD("VALUE User:1\t0 1\r\na\r\nEND\r\n");
    BAD("VALUE User:1 0 1\r\n\x01\r\nEND\x7f\r\n");
    BAD("HELLO\x01\r\n");
    BAD("\x80\x81\r\n");
#undef BAD
    /* Embedded NULs: in a line, and in a value. */
    assert_get_error("VAL\0UE User:1 0 1\r\na\r\n", 22, OBJCACHE_EPROTO);
    assert_get_error("END\0\r\n", 6, OBJCACHE_EPROTO);
    assert_get_error("VALUE User:1 0 3\r\na\0b\r\nEND\r\n", 28, OBJCACHE_EPROTO);
}

static void test_get_oversized(void **state)
{
    (void)state;
    run_t t;
    /* A VALUE claiming 2^40 bytes fails on its header line alone. */
    const char *r = "VALUE User:1 0 1099511627776\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, OBJCACHE_ETOOBIG);
    r = "VALUE User:1 0 18446744073709551615\r\n"; /* 2^64 - 1 */
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, OBJCACHE_ETOOBIG);
    r = "VALUE User:1 0 18446744073709551614\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_GET, K3, 3, r), OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, OBJCACHE_ETOOBIG);

    /* Just fitting and just not, against a 64-byte cap. */
    char buf[256];
    size_t hdr = strlen("VALUE User:1 0 NN\r\n"), end = strlen("END\r\n");
    size_t fit = 64 - hdr - 2 - end;
    int n = snprintf(buf, sizeof(buf), "VALUE User:1 0 %zu\r\n%0*d\r\nEND\r\n", fit,
                     (int)fit, 0);
    assert_int_equal(parse_len(&t, OBJCACHE_REPLY_GET, K3, 3, buf, (size_t)n, 64),
                     OBJCACHE_PARSE_COMPLETE);
    n = snprintf(buf, sizeof(buf), "VALUE User:1 0 %zu\r\n%0*d\r\nEND\r\n", fit + 1,
                 (int)fit + 1, 0);
    assert_int_equal(parse_len(&t, OBJCACHE_REPLY_GET, K3, 3, buf, (size_t)n, 64),
                     OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, OBJCACHE_ETOOBIG);
    /* The value fits but the END after it does not. */
    n = snprintf(buf, sizeof(buf), "VALUE User:1 0 %zu\r\n%0*d\r\nEND\r\n", fit + 2,
                 (int)fit + 2, 0);
    assert_int_equal(parse_len(&t, OBJCACHE_REPLY_GET, K3, 3, buf, (size_t)n, 64),
                     OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, OBJCACHE_ETOOBIG);

    /* A line that never ends. */
    size_t len = OBJCACHE_PARSE_MAX_LINE + 10;
    char *line = malloc(len);
    assert_non_null(line);
    memset(line, 'x', len);
    start(&t, OBJCACHE_REPLY_GET, K3, 3, BIG);
    assert_int_equal(objcache_parse_feed(&t.p, line, OBJCACHE_PARSE_MAX_LINE - 1),
                     OBJCACHE_PARSE_INCOMPLETE);
    assert_int_equal(objcache_parse_feed(&t.p, line, len), OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, OBJCACHE_EPROTO);
    /* Many STAT lines over the cap. */
    start(&t, OBJCACHE_REPLY_STATS, NULL, 0, 2048);
    memset(line, 0, len);
    for (size_t off = 0; off + 17 < len; off += 16)
        memcpy(line + off, "STAT abc 12345\r\n", 17); /* the NUL is overwritten next */
    assert_int_equal(objcache_parse_feed(&t.p, line, 4096), OBJCACHE_PARSE_ERROR);
    assert_int_equal(t.p.error, OBJCACHE_ETOOBIG);
    free(line);
}

static void test_get_truncated_needs(void **state)
{
    (void)state;
    run_t t;
    /* Missing END, and a data block cut short: incomplete, with a useful need. */
    const char *r = "VALUE User:1 0 100\r\n{\"a\":";
    start(&t, OBJCACHE_REPLY_GET, K3, 3, BIG);
    assert_int_equal(feed_copy(&t.p, r, strlen(r)), OBJCACHE_PARSE_INCOMPLETE);
    assert_int_equal(t.p.need, strlen("VALUE User:1 0 100\r\n") + 100 + 2);
    r = "VALUE User:1 0 2\r\n{}\r\n";
    start(&t, OBJCACHE_REPLY_GET, K3, 3, BIG);
    assert_int_equal(feed_copy(&t.p, r, strlen(r)), OBJCACHE_PARSE_INCOMPLETE);
    assert_int_equal(t.p.need, strlen(r) + 1);
    assert_int_equal(feed_copy(&t.p, r, 0), OBJCACHE_PARSE_ERROR); /* shrank */
}

static void test_store_and_delete(void **state)
{
    (void)state;
    run_t t;
    static const struct {
        const char *reply;
        objcache_reply_kind_t kind;
        objcache_status_t st;
    } ok[] = {
        {"STORED\r\n", OBJCACHE_REPLY_STORE, OBJCACHE_OK},
        {"NOT_STORED\r\n", OBJCACHE_REPLY_STORE, OBJCACHE_NOT_STORED},
        {"EXISTS\r\n", OBJCACHE_REPLY_STORE, OBJCACHE_EXISTS},
        {"NOT_FOUND\r\n", OBJCACHE_REPLY_STORE, OBJCACHE_NOT_FOUND},
        {"SERVER_ERROR not supported\r\n", OBJCACHE_REPLY_STORE, OBJCACHE_ESERVER},
        {"CLIENT_ERROR bad data chunk\r\n", OBJCACHE_REPLY_STORE, OBJCACHE_ECLIENT},
        {"DELETED\r\n", OBJCACHE_REPLY_DELETE, OBJCACHE_OK},
        {"NOT_FOUND\r\n", OBJCACHE_REPLY_DELETE, OBJCACHE_NOT_FOUND},
        {"SERVER_ERROR not supported\r\n", OBJCACHE_REPLY_DELETE, OBJCACHE_ESERVER},
        {"ERROR\r\n", OBJCACHE_REPLY_DELETE, OBJCACHE_ECOMMAND},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(parse(&t, ok[i].kind, NULL, 0, ok[i].reply),
                         OBJCACHE_PARSE_COMPLETE);
        assert_int_equal(t.p.status, ok[i].st);
        assert_int_equal(t.p.pos, strlen(ok[i].reply));
    }
    static const struct {
        objcache_reply_kind_t kind;
        const char *reply;
    } bad[] = {
        {OBJCACHE_REPLY_STORE, "DELETED\r\n"},  {OBJCACHE_REPLY_STORE, "STORED \r\n"},
        {OBJCACHE_REPLY_STORE, "STORED\n"},     {OBJCACHE_REPLY_STORE, "END\r\n"},
        {OBJCACHE_REPLY_DELETE, "STORED\r\n"},  {OBJCACHE_REPLY_DELETE, "DELETED\r"},
        {OBJCACHE_REPLY_DELETE, "deleted\r\n"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        objcache_parse_result_t r = parse(&t, bad[i].kind, NULL, 0, bad[i].reply);
        /* "DELETED\r" is only incomplete; the rest are errors */
        assert_int_equal(r, i == 5 ? OBJCACHE_PARSE_INCOMPLETE : OBJCACHE_PARSE_ERROR);
    }
}

static void test_version(void **state)
{
    (void)state;
    run_t t;
    const char *r = "VERSION 0.1.0 (objcached)\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_VERSION, NULL, 0, r),
                     OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.status, OBJCACHE_OK);
    assert_int_equal(t.p.msg_len, strlen("0.1.0 (objcached)"));
    assert_memory_equal(r + t.p.msg_off, "0.1.0 (objcached)", t.p.msg_len);
    assert_int_equal(parse(&t, OBJCACHE_REPLY_VERSION, NULL, 0, "VERSION\r\n"),
                     OBJCACHE_PARSE_ERROR);
    assert_int_equal(parse(&t, OBJCACHE_REPLY_VERSION, NULL, 0, "VERSION \r\n"),
                     OBJCACHE_PARSE_ERROR);
    assert_int_equal(parse(&t, OBJCACHE_REPLY_VERSION, NULL, 0, "STORED\r\n"),
                     OBJCACHE_PARSE_ERROR);
    assert_int_equal(parse(&t, OBJCACHE_REPLY_VERSION, NULL, 0, "ERROR\r\n"),
                     OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.status, OBJCACHE_ECOMMAND);
}

static void test_stats(void **state)
{
    (void)state;
    run_t t;
    const char *r =
        "STAT pid 42\r\nSTAT libevent 2.1.12 stable\r\nSTAT empty \r\nEND\r\n";
    assert_int_equal(parse(&t, OBJCACHE_REPLY_STATS, NULL, 0, r),
                     OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.nstats, 3);
    size_t off = 0, no, nl, vo, vl;
    assert_true(objcache_parse_next_stat(r, strlen(r), &off, &no, &nl, &vo, &vl));
    assert_memory_equal(r + no, "pid", nl);
    assert_int_equal(nl, 3);
    assert_memory_equal(r + vo, "42", vl);
    assert_int_equal(vl, 2);
    assert_true(objcache_parse_next_stat(r, strlen(r), &off, &no, &nl, &vo, &vl));
    assert_int_equal(vl, strlen("2.1.12 stable"));
    assert_memory_equal(r + vo, "2.1.12 stable", vl);
    assert_true(objcache_parse_next_stat(r, strlen(r), &off, &no, &nl, &vo, &vl));
    assert_int_equal(vl, 0);
    assert_false(objcache_parse_next_stat(r, strlen(r), &off, &no, &nl, &vo, &vl));
    assert_int_equal(parse(&t, OBJCACHE_REPLY_STATS, NULL, 0, "END\r\n"),
                     OBJCACHE_PARSE_COMPLETE);
    assert_int_equal(t.p.nstats, 0);
    static const char *const bad[] = {
        "STAT pid\r\nEND\r\n",    "STAT  pid 1\r\nEND\r\n",           "STAT\r\nEND\r\n",
        "STATS pid 1\r\nEND\r\n", "VALUE User:1 0 1\r\n1\r\nEND\r\n", "STAT a 1\nEND\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(&t, OBJCACHE_REPLY_STATS, NULL, 0, bad[i]),
                         OBJCACHE_PARSE_ERROR);
}

/* A small deterministic generator, so a failure reproduces. */
static uint32_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

static void check_outcome(const run_t *t, size_t len)
{
    if (t->r == OBJCACHE_PARSE_COMPLETE) {
        assert_true(t->p.pos <= len);
        for (size_t i = 0; i < 3; i++)
            if (t->vals[i].found)
                assert_true(t->vals[i].off + t->vals[i].len + 2 <= len);
    } else if (t->r == OBJCACHE_PARSE_INCOMPLETE) {
        assert_true(t->p.need > len);
        assert_true(t->p.need <= 4096);
    } else {
        assert_true(t->p.error == OBJCACHE_EPROTO || t->p.error == OBJCACHE_ETOOBIG);
    }
}

/*
 * Mutate valid replies at random (flip, insert, delete, truncate bytes) and
 * parse them whole and byte by byte: never a crash, never an overread, and
 * offsets that stay inside what was fed.
 */
static void test_random_garbage(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "VALUE User:1 0 8\r\n{\"id\":1}\r\nVALUE User:3 0 2\r\n{}\r\nEND\r\n",
        "VALUE User:2 0 2 99\r\n[]\r\nEND\r\n",
        "SERVER_ERROR load failed: timeout\r\n",
        "END\r\n",
    };
    static const char alphabet[] = "VALUE User:123 0\r\n END\0\x80x";
    uint64_t seed = 20240601;
    char buf[256];
    for (int iter = 0; iter < 20000; iter++) {
        const char *s = seeds[rnd(&seed) % 4];
        size_t len = strlen(s);
        memcpy(buf, s, len + 1);
        for (uint32_t m = rnd(&seed) % 4 + 1; m > 0; m--) {
            size_t at = len > 0 ? rnd(&seed) % len : 0;
            char c = alphabet[rnd(&seed) % (sizeof(alphabet) - 1)];
            switch (rnd(&seed) % 4) {
            case 0:
                buf[at] = c;
                break;
            case 1:
                if (len + 1 < sizeof(buf)) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = c;
                    len++;
                }
                break;
            case 2:
                if (len > 0) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
                break;
            default:
                len = at;
            }
        }
        run_t t;
        parse_len(&t, OBJCACHE_REPLY_GET, K3, 3, buf, len, 4096);
        check_outcome(&t, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_hits_and_misses),
        cmocka_unit_test(test_get_empty_and_cas),
        cmocka_unit_test(test_get_value_with_crlf_inside),
        cmocka_unit_test(test_get_duplicates),
        cmocka_unit_test(test_server_error_lines),
        cmocka_unit_test(test_get_garbage),
        cmocka_unit_test(test_get_oversized),
        cmocka_unit_test(test_get_truncated_needs),
        cmocka_unit_test(test_store_and_delete),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_random_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

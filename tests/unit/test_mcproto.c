/* Unit tests for oc_mcproto: the replies objcached reads from memcached
 * (well-formed, split, malformed, hostile) and the commands it writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "oc_mcproto.h"

static oc_mcp_reply_t parse(const char *s, oc_mcp_line_t *l)
{
    return oc_mcp_parse_line(s, strlen(s), l);
}

static void test_value_lines(void **state)
{
    (void)state;
    oc_mcp_line_t l;
    assert_int_equal(parse("VALUE oc:User:1 1868759297 42 99\r\n", &l), OC_MCP_VALUE);
    assert_int_equal(l.klen, 9);
    assert_memory_equal(l.key, "oc:User:1", 9);
    assert_int_equal(l.flags, 1868759297u);
    assert_int_equal(l.bytes, 42);
    assert_true(l.cas == 99);
    assert_int_equal(l.line_len, strlen("VALUE oc:User:1 1868759297 42 99\r\n"));
    /* without cas (a plain get), the largest flags and cas */
    assert_int_equal(parse("VALUE k 0 0\r\n", &l), OC_MCP_VALUE);
    assert_true(l.cas == 0 && l.bytes == 0);
    assert_int_equal(parse("VALUE k 4294967295 1 18446744073709551615\r\n", &l),
                     OC_MCP_VALUE);
    assert_true(l.flags == UINT32_MAX && l.cas == UINT64_MAX);
}

static void test_value_lines_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "VALUE k\r\n",                          /* no flags, no bytes */
        "VALUE k 1\r\n",                        /* no bytes */
        "VALUE  0 1\r\n",                       /* empty key */
        "VALUE k -1 1\r\n",                     /* negative */
        "VALUE k 4294967296 1\r\n",             /* flags over 32 bits */
        "VALUE k 0 134217729\r\n",              /* a value over OC_MCP_VALUE_MAX */
        "VALUE k 0 99999999999999999999\r\n",   /* bytes overflow */
        "VALUE k 0 1 18446744073709551616\r\n", /* cas overflow */
        "VALUE k 0 1 2 3\r\n",                  /* a field too many */
        "VALUE k 0x1 1\r\n",
        "VALUE k\x01y 0 1\r\n", /* a control byte in the key */
        "VALUE k 0 1 \r\n",     /* trailing space */
        "VALUE k 0 1\n",        /* bare LF */
        "HELLO\r\n",
        "\r\n",
        "END \r\n",
        "STOREDX\r\n",
    };
    oc_mcp_line_t l;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &l) != OC_MCP_BAD)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_one_line_replies(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        oc_mcp_reply_t t;
    } cases[] = {
        {"END\r\n", OC_MCP_END},
        {"STORED\r\n", OC_MCP_STORED},
        {"NOT_STORED\r\n", OC_MCP_NOT_STORED},
        {"EXISTS\r\n", OC_MCP_EXISTS},
        {"NOT_FOUND\r\n", OC_MCP_NOT_FOUND},
        {"DELETED\r\n", OC_MCP_DELETED},
        {"VERSION 1.6.18\r\n", OC_MCP_VERSION},
        {"OK\r\n", OC_MCP_OK}, /* flush_all */
        {"ERROR\r\n", OC_MCP_ERROR},
        {"ERROR Too many open connections\r\n", OC_MCP_ERROR}, /* over -c */
        {"CLIENT_ERROR bad data chunk\r\n", OC_MCP_ERROR},
        {"SERVER_ERROR out of memory storing object\r\n", OC_MCP_ERROR},
    };
    oc_mcp_line_t l;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (parse(cases[i].s, &l) != cases[i].t)
            fail_msg("'%s' read as %d", cases[i].s, (int)l.type);
        assert_int_equal(l.line_len, strlen(cases[i].s));
    }
    assert_int_equal(parse("SERVER_ERROR out of memory\r\n", &l), OC_MCP_ERROR);
    assert_int_equal(l.text_len, strlen("SERVER_ERROR out of memory"));
}

static void test_partial_and_long_lines(void **state)
{
    (void)state;
    oc_mcp_line_t l;
    assert_int_equal(parse("", &l), OC_MCP_NEED_MORE);
    assert_int_equal(parse("VALUE k 0 1", &l), OC_MCP_NEED_MORE);
    assert_int_equal(parse("STORED\r", &l), OC_MCP_NEED_MORE);
    /* two replies in the buffer: the first one only */
    assert_int_equal(parse("STORED\r\nEND\r\n", &l), OC_MCP_STORED);
    assert_int_equal(l.line_len, 8);
    /* no line end within OC_MCP_LINE_MAX: the stream is lost */
    static char junk[OC_MCP_LINE_MAX + 10];
    memset(junk, 'x', sizeof(junk));
    assert_int_equal(oc_mcp_parse_line(junk, sizeof(junk), &l), OC_MCP_BAD);
    assert_int_equal(oc_mcp_parse_line(junk, OC_MCP_LINE_MAX - 1, &l), OC_MCP_NEED_MORE);
    /* a NUL inside a line is not a reply */
    assert_int_equal(oc_mcp_parse_line("END\0\r\n", 6, &l), OC_MCP_BAD);
}

static void test_meta_get_replies(void **state)
{
    (void)state;
    oc_mcp_line_t l;
    assert_int_equal(parse("VA 2 c7 f1868759297\r\n", &l), OC_MCP_VA);
    assert_true(l.bytes == 2 && l.cas == 7 && l.flags == 1868759297u && l.win == 0);
    /* a miss with N: the empty item this client made, and won */
    assert_int_equal(parse("VA 0 c5 f0 W\r\n", &l), OC_MCP_VA);
    assert_true(l.bytes == 0 && l.cas == 5 && l.win == OC_MCP_WIN);
    assert_int_equal(parse("VA 0 c5 f0 Z\r\n", &l), OC_MCP_VA);
    assert_int_equal(l.win, OC_MCP_WON_ELSEWHERE);
    assert_int_equal(parse("VA 3 c9 f1 X W\r\n", &l), OC_MCP_VA); /* stale, and won */
    assert_int_equal(l.win, OC_MCP_WIN);
    assert_int_equal(parse("EN\r\n", &l), OC_MCP_EN);
    assert_true(l.key == NULL && l.klen == 0);
    /* k: the key the reply answers (mg asks for it) */
    assert_int_equal(parse("EN koc:User:1\r\n", &l), OC_MCP_EN);
    assert_true(l.klen == 9 && memcmp(l.key, "oc:User:1", 9) == 0);
    assert_int_equal(parse("VA 2 c7 f1 koc:User:2 W\r\n", &l), OC_MCP_VA);
    assert_true(l.klen == 9 && memcmp(l.key, "oc:User:2", 9) == 0 && l.win == OC_MCP_WIN);
    static const char *const bad[] = {
        "EN k\r\n",
        "EN x\r\n",
        "EN ka c1\r\n",
        "VA 1 k\r\n",
        "VA 1 k\x01\r\n",
        "VA\r\n",
        "VA \r\n",
        "VA x c1\r\n",
        "VA 1 c\r\n",
        "VA 1 cx\r\n",
        "VA 1 q\r\n",
        "VA 1 t5\r\n",
        "VA 1 W2\r\n",
        "VA 1  c1\r\n",
        "VA 1 c1 \r\n",
        "VA 134217729\r\n",
        "VA 1 f4294967296\r\n",
        "EN \r\n",
        "ENX\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &l) != OC_MCP_BAD)
            fail_msg("accepted '%s'", bad[i]);
    char buf[300];
    size_t n = oc_mcp_format_mg(buf, "oc:User:1", 9, 6);
    assert_int_equal(n, strlen("mg oc:User:1 v c f k N6\r\n"));
    assert_memory_equal(buf, "mg oc:User:1 v c f k N6\r\n", n);
    assert_true(n <= oc_mcp_mg_size(9));
    n = oc_mcp_format_mg(buf, "k", 1, 0);
    assert_memory_equal(buf, "mg k v c f k\r\n", n);
    assert_true(oc_mcp_format_mg(buf, "k", 1, UINT32_MAX) <= oc_mcp_mg_size(1));
    /* R: pick one reader to refresh a hit about to expire */
    n = oc_mcp_format_mg_r(buf, "oc:User:1", 9, 6, 30);
    assert_int_equal(n, strlen("mg oc:User:1 v c f k N6 R30\r\n"));
    assert_memory_equal(buf, "mg oc:User:1 v c f k N6 R30\r\n", n);
    n = oc_mcp_format_mg_r(buf, "k", 1, 0, 5);
    assert_memory_equal(buf, "mg k v c f k R5\r\n", n);
    n = oc_mcp_format_mg_r(buf, "k", 1, 0, 0);
    assert_memory_equal(buf, "mg k v c f k\r\n", n);
    /* the longest, within the size promised */
    char key[OC_MCP_KEY_MAX];
    memset(key, 'k', sizeof(key));
    static char big[OC_MCP_KEY_MAX + 64];
    n = oc_mcp_format_mg_r(big, key, sizeof(key), UINT32_MAX, UINT32_MAX);
    assert_true(n <= oc_mcp_mg_size(sizeof(key)));
    /* a hit chosen to be refreshed (W) and one another reader refreshes (Z):
     * a value, not a lease */
    assert_int_equal(parse("VA 2 c9 f1868759297 W\r\n", &l), OC_MCP_VA);
    assert_true(l.bytes == 2 && l.flags == 1868759297u && l.win == OC_MCP_WIN);
    assert_int_equal(parse("VA 2 c9 f1868759297 Z\r\n", &l), OC_MCP_VA);
    assert_int_equal(l.win, OC_MCP_WON_ELSEWHERE);
    /* OK is a whole line only */
    static const char *const bad_ok[] = {"OK \r\n", "OKAY\r\n", "ok\r\n", "OK\n"};
    for (size_t i = 0; i < sizeof(bad_ok) / sizeof(bad_ok[0]); i++)
        if (parse(bad_ok[i], &l) != OC_MCP_BAD)
            fail_msg("accepted '%s'", bad_ok[i]);
}

/* md: the cas-guarded delete a refused fill sends for its lease, and its
 * three answers (HD, NF, EX; no flags asked, so none may follow). */
static void test_meta_delete(void **state)
{
    (void)state;
    char buf[300];
    size_t n = oc_mcp_format_md(buf, "oc:User:1", 9, 42);
    assert_int_equal(n, strlen("md oc:User:1 C42\r\n"));
    assert_memory_equal(buf, "md oc:User:1 C42\r\n", n);
    assert_true(n <= oc_mcp_md_size(9));
    char key[OC_MCP_KEY_MAX];
    memset(key, 'k', sizeof(key));
    static char big[OC_MCP_KEY_MAX + 64];
    n = oc_mcp_format_md(big, key, sizeof(key), UINT64_MAX);
    assert_int_equal(n, oc_mcp_md_size(sizeof(key))); /* 20 digits: the bound is tight */
    assert_memory_equal(big + n - 23, "C18446744073709551615\r\n", 23);
    n = oc_mcp_format_md(buf, "k", 1, 0);
    assert_memory_equal(buf, "md k C0\r\n", n);
    oc_mcp_line_t l;
    assert_int_equal(parse("HD\r\n", &l), OC_MCP_HD);
    assert_int_equal(l.line_len, 4);
    assert_int_equal(parse("NF\r\n", &l), OC_MCP_NF);
    assert_int_equal(parse("EX\r\n", &l), OC_MCP_EX);
    static const char *const bad[] = {"HD \r\n", "HDX\r\n", "NF k\r\n",
                                      "EX1\r\n", "hd\r\n",  "H\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &l) != OC_MCP_BAD)
            fail_msg("accepted '%s'", bad[i]);
}

/* ms: the store that returns its item's cas (the push check replaces
 * exactly that item). */
static void test_meta_set(void **state)
{
    (void)state;
    char buf[256];
    size_t n = oc_mcp_format_ms(buf, "oc:User:1", 9, 5, 60, "{}", 2, 42);
    assert_int_equal(n, strlen("ms oc:User:1 2 c T60 F5 C42\r\n{}\r\n"));
    assert_memory_equal(buf, "ms oc:User:1 2 c T60 F5 C42\r\n{}\r\n", n);
    assert_true(n <= oc_mcp_ms_size(9, 2));
    n = oc_mcp_format_ms(buf, "k", 1, 0, 0, "", 0, 0); /* cas 0: add mode */
    assert_memory_equal(buf, "ms k 0 c T0 F0 ME\r\n\r\n", n);
    char key[OC_MCP_KEY_MAX];
    memset(key, 'k', sizeof(key));
    static char big[OC_MCP_KEY_MAX + 128];
    n = oc_mcp_format_ms(big, key, sizeof(key), UINT32_MAX, UINT32_MAX, "", 0,
                         UINT64_MAX);
    assert_true(n <= oc_mcp_ms_size(sizeof(key), 0));
    oc_mcp_line_t l;
    assert_int_equal(parse("HD c77\r\n", &l), OC_MCP_HD);
    assert_true(l.cas == 77);
    assert_int_equal(parse("HD c18446744073709551615\r\n", &l), OC_MCP_HD);
    assert_true(l.cas == UINT64_MAX);
    /* memcached 1.6.20 returns s<size> too: skipped */
    assert_int_equal(parse("HD c9 s2\r\n", &l), OC_MCP_HD);
    assert_true(l.cas == 9);
    assert_true(l.has_cas && l.n_flags == 2);
    assert_int_equal(parse("HD s2\r\n", &l), OC_MCP_HD);
    assert_true(!l.has_cas && l.n_flags == 1);
    assert_int_equal(parse("HD\r\n", &l), OC_MCP_HD);
    assert_true(!l.has_cas && l.n_flags == 0);
    assert_int_equal(parse("NS c0\r\n", &l), OC_MCP_NS);
    assert_int_equal(parse("NS\r\n", &l), OC_MCP_NS);
    assert_true(l.cas == 0);
    assert_int_equal(parse("EX c0\r\n", &l), OC_MCP_EX);
    assert_int_equal(parse("NF c0\r\n", &l), OC_MCP_NF);
    static const char *const bad[] = {
        "HD c\r\n",      "HD c-1\r\n",   "HD cx\r\n",
        "HD c1  s2\r\n", "HD c1 \r\n",   "NS k\r\n",
        "HD 5\r\n",      "NSc1\r\n",     "HD c18446744073709551616\r\n",
        "ns c1\r\n",     "HD c1\ts2\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &l) != OC_MCP_BAD)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_key_ok(void **state)
{
    (void)state;
    char k[OC_MCP_KEY_MAX + 1];
    memset(k, 'a', sizeof(k));
    assert_true(oc_mcp_key_ok("oc:User:1", 9));
    assert_true(oc_mcp_key_ok(k, OC_MCP_KEY_MAX));
    assert_false(oc_mcp_key_ok(k, OC_MCP_KEY_MAX + 1));
    assert_false(oc_mcp_key_ok("", 0));
    assert_false(oc_mcp_key_ok("a b", 3));
    assert_false(oc_mcp_key_ok("a\r\nset x", 8));
    assert_false(oc_mcp_key_ok("a\x7f", 2));
    assert_false(oc_mcp_key_ok("a\0b", 3));
    assert_true(oc_mcp_key_ok("caf\xc3\xa9", 5)); /* UTF-8 bytes are fine */
    /* eight bytes at a time: every byte value at every place of keys of
     * 1..24 bytes (whole words, a tail, both) against the rule byte by byte */
    for (size_t len = 1; len <= 24; len++)
        for (size_t at = 0; at < len; at++)
            for (int c = 0; c < 256; c++) {
                memset(k, 'x', len);
                k[at] = (char)c;
                int want = !(c <= ' ' || c == 0x7f);
                if (oc_mcp_key_ok(k, len) != want || oc_mcp_printable(k, len) != want)
                    fail_msg("len %zu, byte 0x%02x at %zu: not %d", len, c, at, want);
            }
}

static void test_numbers_at_their_limits(void **state)
{
    (void)state;
    oc_mcp_line_t l;
    /* 19 digits (no check per digit), 20 (checked), leading zeros */
    assert_int_equal(parse("VALUE k 0 0 9999999999999999999\r\n", &l), OC_MCP_VALUE);
    assert_true(l.cas == 9999999999999999999ull);
    assert_int_equal(parse("VALUE k 0 0 10000000000000000000\r\n", &l), OC_MCP_VALUE);
    assert_true(l.cas == 10000000000000000000ull);
    assert_int_equal(parse("VALUE k 0 0 000000000000000000000000000007\r\n", &l),
                     OC_MCP_VALUE);
    assert_true(l.cas == 7);
    assert_int_equal(parse("VALUE k 0000000004294967295 0 1\r\n", &l), OC_MCP_VALUE);
    assert_true(l.flags == UINT32_MAX);
    assert_int_equal(parse("VALUE k 0 0 99999999999999999999\r\n", &l), OC_MCP_BAD);
    assert_int_equal(parse("VALUE k 0 0 184467440737095516150\r\n", &l), OC_MCP_BAD);
    assert_int_equal(parse("VALUE k 0 0 1a\r\n", &l), OC_MCP_BAD);
    assert_int_equal(parse("VA 5 c18446744073709551615\r\n", &l), OC_MCP_VA);
    assert_true(l.cas == UINT64_MAX && l.bytes == 5);
    /* a number must end at a space or the line's end, however many bytes follow */
    assert_int_equal(parse("VA 5 c1234567x t1 s5\r\n", &l), OC_MCP_BAD);
    assert_int_equal(parse("VA 5 c12x45678 t1\r\n", &l), OC_MCP_BAD);
}

/* A number token as the VALUE line's rule has it: digits only, at least
 * one, at most max (any length: leading zeros). */
static int ref_number(const char *t, size_t n, uint64_t max, uint64_t *v)
{
    if (n == 0)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return -1;
        unsigned d = (unsigned)(t[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    if (x > max)
        return -1;
    *v = x;
    return 0;
}

/* A random number token: mostly digits (1 to 22 of them, 8 and 16 often:
 * the parser reads eight at a time), sometimes empty, with a stray byte,
 * or near a limit. */
static size_t gen_number(char *t, uint32_t *r)
{
    static const char *const near[] = {
        "4294967295",           "4294967296",           "134217728", "134217729",
        "18446744073709551615", "18446744073709551616", "00000000",  "099999999"};
    *r ^= *r << 13, *r ^= *r >> 17, *r ^= *r << 5;
    if (*r % 10 == 0) {
        const char *s = near[(*r >> 8) % 8];
        memcpy(t, s, strlen(s));
        return strlen(s);
    }
    static const size_t lens[] = {0, 1, 3, 7, 8, 9, 15, 16, 17, 19, 20, 22};
    size_t n = *r % 3 ? (*r >> 4) % 23 : lens[(*r >> 4) % 12];
    for (size_t i = 0; i < n; i++) {
        *r ^= *r << 13, *r ^= *r >> 17, *r ^= *r << 5;
        t[i] = (char)('0' + *r % 10);
    }
    *r ^= *r << 13, *r ^= *r >> 17, *r ^= *r << 5;
    if (n > 0 &&
        *r % 6 == 0) /* a stray byte: a letter, '/' or ':' (just past 9), 0x80+ */
        t[(*r >> 8) % n] = "a/:\xb0x"[(*r >> 16) % 5];
    return n;
}

/* Random VALUE lines, their numbers read by oc_mcp_parse_line and by the
 * plain rule above: the same verdict and the same numbers, every line. */
static void test_value_numbers_against_the_rule(void **state)
{
    (void)state;
    uint32_t r = 2463534242u;
    for (int round = 0; round < 200000; round++) {
        char line[160], tok[3][32];
        size_t tl[3];
        r ^= r << 13, r ^= r >> 17, r ^= r << 5;
        int ntok = 2 + (int)(r % 2);
        for (int k = 0; k < ntok; k++)
            tl[k] = gen_number(tok[k], &r);
        size_t n = (size_t)snprintf(line, sizeof(line), "VALUE oc:Item:%u", r % 1000);
        for (int k = 0; k < ntok; k++) {
            line[n++] = ' ';
            memcpy(line + n, tok[k], tl[k]);
            n += tl[k];
        }
        memcpy(line + n, "\r\n", 2);
        n += 2;
        uint64_t want[3] = {0, 0, 0};
        static const uint64_t max[3] = {UINT32_MAX, OC_MCP_VALUE_MAX, UINT64_MAX};
        int ok = 1;
        for (int k = 0; k < ntok; k++)
            ok = ok && ref_number(tok[k], tl[k], max[k], &want[k]) == 0;
        oc_mcp_line_t l;
        oc_mcp_reply_t got = oc_mcp_parse_line(line, n, &l);
        if (got != (ok ? OC_MCP_VALUE : OC_MCP_BAD))
            fail_msg("'%.*s': %s, the rule says %s", (int)n - 2, line,
                     got == OC_MCP_VALUE ? "read" : "refused", ok ? "read" : "refused");
        if (ok && (l.flags != want[0] || l.bytes != want[1] || l.cas != want[2]))
            fail_msg("'%.*s': %u %u %llu", (int)n - 2, line, l.flags, l.bytes,
                     (unsigned long long)l.cas);
    }
}

static void test_format_store(void **state)
{
    (void)state;
    char buf[256];
    const char *key = "oc:User:7";
    size_t n = oc_mcp_format_store(buf, "set", key, 9, 1868759297u, 3600, "{}", 2, 0);
    const char *want = "set oc:User:7 1868759297 3600 2\r\n{}\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
    assert_true(n <= oc_mcp_store_size(9, 2));
    n = oc_mcp_format_store(buf, "cas", key, 9, 0, 0, "", 0, UINT64_MAX);
    want = "cas oc:User:7 0 0 0 18446744073709551615\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
    assert_true(n <= oc_mcp_store_size(9, 0));
    /* the worst case fits the size it promises */
    n = oc_mcp_format_store(buf, "cas", key, 9, UINT32_MAX, UINT32_MAX, "x", 1,
                            UINT64_MAX);
    assert_true(n <= oc_mcp_store_size(9, 1));
    n = oc_mcp_format_store(buf, "add", key, 9, 5, 7, "ab", 2, 123);
    want = "add oc:User:7 5 7 2\r\nab\r\n"; /* the cas is only sent by cas */
    assert_memory_equal(buf, want, strlen(want));
}

/* `stats`, sent first on every new connection to learn which process
 * answers: STAT <name> <value>, one line each. */
static void test_stat_lines(void **state)
{
    (void)state;
    oc_mcp_line_t l;
    assert_int_equal(parse("STAT pid 1273\r\n", &l), OC_MCP_STAT);
    assert_true(l.klen == 3 && memcmp(l.key, "pid", 3) == 0);
    assert_true(l.text_len == 4 && memcmp(l.text, "1273", 4) == 0);
    assert_int_equal(l.line_len, 15);
    /* a value of more than one word is read whole */
    assert_int_equal(parse("STAT libevent 2.1.12 stable\r\n", &l), OC_MCP_STAT);
    assert_int_equal(l.text_len, strlen("2.1.12 stable"));
    static const char *const bad[] = {
        "STAT\r\n",           /* nothing */
        "STAT \r\n",          /* no name */
        "STAT pid\r\n",       /* no value */
        "STAT pid \r\n",      /* an empty value */
        "STAT  pid 1\r\n",    /* an empty name */
        "STAT pid  1\r\n",    /* two spaces */
        "STAT p\x01d 1\r\n",  /* a control byte in the name */
        "STAT pid 1\x7f\r\n", /* and in the value */
        "STATS pid 1\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &l) != OC_MCP_BAD)
            fail_msg("accepted '%s'", bad[i]);
}

static void feed(oc_mcp_proc_t *p, const char *name, const char *val)
{
    oc_mcp_proc_stat(p, name, strlen(name), val, strlen(val));
}

static void test_process_identity(void **state)
{
    (void)state;
    oc_mcp_proc_t a = {0}, b = {0}, c = {0};
    feed(&a, "pid", "1273");
    feed(&a, "version", "1.6.18"); /* ignored */
    feed(&a, "uptime", "2");
    assert_false(oc_mcp_proc_known(&a)); /* no time yet */
    assert_false(oc_mcp_proc_same(&a, &a));
    feed(&a, "time", "1796441667");
    assert_true(oc_mcp_proc_known(&a));
    /* the same process later: time and uptime both moved on */
    feed(&b, "time", "1796441670");
    feed(&b, "uptime", "5");
    feed(&b, "pid", "1273");
    assert_true(oc_mcp_proc_same(&a, &b));
    /* restarted: a new start (same pid, as in a container), or a new pid */
    feed(&c, "pid", "1273");
    feed(&c, "time", "1796441670");
    feed(&c, "uptime", "1");
    assert_false(oc_mcp_proc_same(&a, &c));
    feed(&c, "uptime", "5");
    feed(&c, "pid", "1274");
    assert_false(oc_mcp_proc_same(&a, &c));
    /* not numbers, too long, an uptime past the time: not known */
    oc_mcp_proc_t d = {0};
    feed(&d, "pid", "12x");
    feed(&d, "time", "10");
    feed(&d, "uptime", "5");
    assert_false(oc_mcp_proc_known(&d));
    feed(&d, "pid", "99999999999999999999");
    assert_false(oc_mcp_proc_known(&d));
    feed(&d, "pid", "-1");
    assert_false(oc_mcp_proc_known(&d));
    feed(&d, "pid", "7");
    assert_true(oc_mcp_proc_known(&d));
    feed(&d, "uptime", "11");
    assert_false(oc_mcp_proc_known(&d));
    feed(&d, "pidx", "7");
    assert_int_equal(d.pid, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_lines),
        cmocka_unit_test(test_value_lines_bad),
        cmocka_unit_test(test_one_line_replies),
        cmocka_unit_test(test_partial_and_long_lines),
        cmocka_unit_test(test_meta_get_replies),
        cmocka_unit_test(test_meta_delete),
        cmocka_unit_test(test_meta_set),
        cmocka_unit_test(test_key_ok),
        cmocka_unit_test(test_numbers_at_their_limits),
        cmocka_unit_test(test_value_numbers_against_the_rule),
        cmocka_unit_test(test_format_store),
        cmocka_unit_test(test_stat_lines),
        cmocka_unit_test(test_process_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

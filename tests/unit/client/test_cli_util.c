/* Unit tests for objcache_cli_util: durations, exit codes, JSON, batch lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "objcache_cli_util.h"

static void test_duration(void **state)
{
    (void)state;
    unsigned ms = 0;
    assert_true(objcache_cli_duration("500ms", &ms));
    assert_int_equal(ms, 500);
    assert_true(objcache_cli_duration("2s", &ms));
    assert_int_equal(ms, 2000);
    assert_true(objcache_cli_duration("3", &ms));
    assert_int_equal(ms, 3000);
    assert_true(objcache_cli_duration("1m", &ms));
    assert_int_equal(ms, 60000);
    assert_true(objcache_cli_duration("60m", &ms));
    assert_int_equal(ms, 3600000);
    static const char *const bad[] = {"",          "0",   "0ms",  "61m",
                                      "3600001ms", "-1s", "1.5s", "1 s",
                                      "1h",        "s",   "1S",   "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(objcache_cli_duration(bad[i], &ms));
}

static void test_exit_codes(void **state)
{
    (void)state;
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_OK), 0);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_NOT_FOUND), 1);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_NOT_STORED), 1);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_EXISTS), 1);
    assert_int_equal(objcache_cli_exit_code(OBJCACHE_EINVAL), 2);
    for (int s = OBJCACHE_ENOMEM; s < OBJCACHE_STATUS_COUNT; s++)
        assert_int_equal(objcache_cli_exit_code((objcache_status_t)s), 3);
    assert_int_equal(objcache_cli_worse(1, 3), 3);
    assert_int_equal(objcache_cli_worse(2, 0), 2);
}

static void json_of(const char *s, size_t n, char *out, size_t cap)
{
    FILE *f = fmemopen(out, cap, "w");
    assert_non_null(f);
    objcache_cli_json_string(f, s, n);
    fclose(f);
}

static void test_json_string(void **state)
{
    (void)state;
    char out[128];
    json_of("User:1", 6, out, sizeof(out));
    assert_string_equal(out, "\"User:1\"");
    json_of("a\"b\\c\n\t\r\x01\x7f", 10, out, sizeof(out));
    assert_string_equal(out, "\"a\\\"b\\\\c\\n\\t\\r\\u0001\\u007f\"");
    json_of("caf\xc3\xa9", 5, out, sizeof(out));
    assert_string_equal(out, "\"caf\xc3\xa9\"");
    json_of("a\0b", 3, out, sizeof(out));
    assert_string_equal(out, "\"a\\u0000b\"");
    /* C1 controls (U+009B is a CSI to xterm) escaped as DEL is; U+00A0 not */
    json_of("\xc2\x9b"
            "2J\xc2\x80\xc2\x9f\xc2\xa0",
            10, out, sizeof(out));
    assert_string_equal(out, "\"\\u009b2J\\u0080\\u009f\xc2\xa0\"");
}

static void text_of(const char *s, char *out, size_t cap)
{
    FILE *f = fmemopen(out, cap, "w");
    assert_non_null(f);
    objcache_cli_json_text(f, s, strlen(s));
    fclose(f);
}

/* JSON text is written as it is but for the DEL and C1 controls of its
 * strings, as \u escapes (the same JSON, nothing raw for a terminal). */
static void test_json_text(void **state)
{
    (void)state;
    char out[128];
    text_of("{\"a\":[1,\"caf\xc3\xa9\xe2\x80\xa8\"]}", out, sizeof(out));
    assert_string_equal(out, "{\"a\":[1,\"caf\xc3\xa9\xe2\x80\xa8\"]}");
    text_of("[\"\x7f\",\"\xc2\x9b"
            "2J\",\"\xc2\x80\xc2\x9f\xc2\xa0\"]",
            out, sizeof(out));
    assert_string_equal(out, "[\"\\u007f\",\"\\u009b2J\",\"\\u0080\\u009f\xc2\xa0\"]");
    text_of("\"\xc2\x9f\"", out, sizeof(out));
    assert_string_equal(out, "\"\\u009f\"");
}

static void test_json_number(void **state)
{
    (void)state;
    static const char *const yes[] = {"0", "42", "-7", "0.5", "12.250", "-0.1"};
    static const char *const no[] = {"",   "-",   "007",   "1.",
                                     ".5", "1e5", "1 2",   "0x10",
                                     "+1", "NaN", "1.2.3", "2.1.12-stable"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(objcache_cli_is_json_number(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(objcache_cli_is_json_number(no[i]));
}

static void test_split(void **state)
{
    (void)state;
    char *w[4];
    char l1[] = "  get  User:1\tUser:2  \r\n";
    assert_int_equal(objcache_cli_split(l1, w, 4, -1), 3);
    assert_string_equal(w[0], "get");
    assert_string_equal(w[2], "User:2");
    char l2[] = "push User:1 {\"name\": \"A B\"}  \n";
    assert_int_equal(objcache_cli_split(l2, w, 4, 2), 3);
    assert_string_equal(w[2], "{\"name\": \"A B\"}");
    char l3[] = "a b c d e";
    assert_int_equal(objcache_cli_split(l3, w, 4, -1), -1);
    char l4[] = "   \n";
    assert_int_equal(objcache_cli_split(l4, w, 4, -1), 0);
    char l5[] = "push User:1";
    assert_int_equal(objcache_cli_split(l5, w, 4, 2), 2);
}

/* 1 if s[0..n) is valid UTF-8 (RFC 3629). */
static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], need, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            need = 1, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3, min = 0x10000;
        else
            return 0;
        if (i + need >= n)
            return 0;
        unsigned cp = c & (0x3f >> need);
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

/*
 * RFC 8259 section 8.1 requires JSON text to be UTF-8; objcache_cli_json_string()
 * copied bytes >= 0x80 as they were, so a key, a stat value, a version or a
 * server error line (objcached cuts keys in its error lines at 64 bytes,
 * possibly inside a character) made `objcache --json` print invalid JSON
 * (found by a review, 2026-12-05). Invalid bytes are now U+FFFD; valid
 * sequences pass unchanged.
 */
static void test_json_invalid_utf8(void **state)
{
    (void)state;
    char out[128];
    static const char *const bad[] = {"\xff", "caf\xc3", "\xc3(", "\xed\xa0\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_of(bad[i], strlen(bad[i]), out, sizeof(out));
        assert_true(utf8_ok((const unsigned char *)out, strlen(out)));
        assert_non_null(strstr(out, "\\ufffd"));
    }
    json_of("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, out, sizeof(out));
    assert_string_equal(out, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
}

static int is_json(const char *s)
{
    return objcache_cli_is_json(s, strlen(s));
}

/*
 * objcache_cli_is_json() decides whether a server's value may be written raw
 * into `get`'s output (objcache_cli.c): RFC 8259 JSON text, nothing more.
 */
static void test_is_json(void **state)
{
    (void)state;
    static const char *const good[] = {
        "{}",
        "[]",
        " {\"a\":1} ",
        "{\"id\":1,\"name\":\"Ada\",\"tags\":[1,2.5,-3e+2,true,null]}",
        "\"x\"",
        "0",
        "-0.5E-7",
        "true",
        "false",
        "null",
        "[{\"a\":[{}]}]",
        "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\"}",
        "{\"\xc3\xa9\":\"\xf0\x9f\x98\x80\"}",
        "{\n  \"a\": 1\n}"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(is_json(good[i]));
    static const char *const bad[] = {"",
                                      " ",
                                      "{",
                                      "}",
                                      "{}}",
                                      "{},{}",
                                      "1,\"User:2\":{\"x\":1}",
                                      "{\"a\"}",
                                      "{\"a\":}",
                                      "{\"a\":1,}",
                                      "[1,]",
                                      "[,1]",
                                      "{a:1}",
                                      "{'a':1}",
                                      "01",
                                      "1.",
                                      ".5",
                                      "-",
                                      "1e",
                                      "+1",
                                      "tru",
                                      "nul",
                                      "nulll",
                                      "\"abc",
                                      "\"a\x01b\"",
                                      "\"a\nb\"",
                                      "\"\\x\"",
                                      "\"\\u12g4\"",
                                      "\"\\u12\"",
                                      "\"\xff\"",
                                      "\"\xc3(\"",
                                      "\"\xed\xa0\x80\"",
                                      "\x1b[2J",
                                      "{} \x1b",
                                      "NaN",
                                      "[1 2]",
                                      "{\"a\" 1}",
                                      "{\"a\":1 \"b\":2}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (is_json(bad[i]))
            fail_msg("accepted as JSON: bad[%zu]", i);
    }
    /* A NUL inside is not JSON (the length, not strlen, bounds the text). */
    assert_false(objcache_cli_is_json("\"a\0b\"", 5));
    assert_false(objcache_cli_is_json("{}\0", 3));
    /* Nesting: 256 levels are fine, 257 are refused (the stack stays bounded),
     * and a million-deep attempt is refused, not a crash. */
    size_t deep = 1000000;
    char *s = malloc(2 * deep);
    assert_non_null(s);
    memset(s, '[', 256);
    memset(s + 256, ']', 256);
    assert_true(objcache_cli_is_json(s, 512));
    memset(s, '[', 257);
    memset(s + 257, ']', 257);
    assert_false(objcache_cli_is_json(s, 514));
    memset(s, '[', deep);
    memset(s + deep, ']', deep);
    assert_false(objcache_cli_is_json(s, 2 * deep));
    free(s);
    /* No cut of a document is JSON (each read stays inside the cut). */
    const char *doc =
        "{\"id\":12,\"name\":\"Ada \xc3\xa9\",\"a\":[true,false,null,-1.5e3]}";
    size_t n = strlen(doc);
    for (size_t i = 0; i < n; i++) {
        char *cut = malloc(i + 1); /* exactly sized: ASan sees a read past it */
        assert_non_null(cut);
        memcpy(cut, doc, i);
        int ok = objcache_cli_is_json(cut, i);
        free(cut);
        if (ok)
            fail_msg("a cut at %zu was accepted", i);
    }
    assert_true(objcache_cli_is_json(doc, n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration),          cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_json_string),       cmocka_unit_test(test_json_text),
        cmocka_unit_test(test_json_number),       cmocka_unit_test(test_split),
        cmocka_unit_test(test_json_invalid_utf8), cmocka_unit_test(test_is_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

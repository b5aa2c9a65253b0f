/* Unit tests for oc_log: values cleaned for a quoted key=value (quotes,
 * backslashes, control bytes, truncation), level names, a line's text with
 * the time passed in (UTC, milliseconds; cut to one line), and oc_log
 * itself: one whole line per call on stderr, below the level nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "oc_log.h"

static void test_clean(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(oc_log_clean(out, sizeof(out), "plain text"), "plain text");
    /* a quote or backslash would end or escape the quoted value */
    assert_string_equal(oc_log_clean(out, sizeof(out), "say \"hi\" \\n"), "say 'hi' 'n");
    /* control bytes would split the line or hide text */
    assert_string_equal(oc_log_clean(out, sizeof(out),
                                     "a\nb\rc\td\x1b[31m\x7f"
                                     "e"),
                        "a b c d [31m e");
    /* bytes above 0x7f (UTF-8) are kept */
    assert_string_equal(oc_log_clean(out, sizeof(out), "caf\xc3\xa9"), "caf\xc3\xa9");
    assert_string_equal(oc_log_clean(out, sizeof(out), ""), "");
    assert_string_equal(oc_log_clean(out, sizeof(out), NULL), "");
    /* cut to cap - 1 bytes, always terminated */
    assert_string_equal(oc_log_clean(out, 5, "abcdefgh"), "abcd");
    assert_string_equal(oc_log_clean(out, 2, "\"x"), "'");
    assert_string_equal(oc_log_clean(out, 1, "abc"), "");
    /* cap 0: nothing written at all */
    memset(out, 'Z', sizeof(out));
    assert_ptr_equal(oc_log_clean(out, 0, "abc"), out);
    assert_int_equal(out[0], 'Z');
    /* a 200-byte hostile message fits a small buffer, cleaned */
    char big[201];
    for (size_t i = 0; i < 200; i++)
        big[i] = (char)(i % 4 == 0 ? '"' : i % 4 == 1 ? '\n' : i % 4 == 2 ? '\\' : 'x');
    big[200] = '\0';
    oc_log_clean(out, sizeof(out), big);
    assert_int_equal(strlen(out), sizeof(out) - 1);
    assert_null(strpbrk(out, "\"\\\n"));
}

static void test_parse_level(void **state)
{
    (void)state;
    assert_int_equal(oc_log_parse_level("error"), OC_LOG_ERROR);
    assert_int_equal(oc_log_parse_level("warn"), OC_LOG_WARN);
    assert_int_equal(oc_log_parse_level("info"), OC_LOG_INFO);
    assert_int_equal(oc_log_parse_level("debug"), OC_LOG_DEBUG);
    assert_int_equal(oc_log_parse_level("INFO"), -1);
    assert_int_equal(oc_log_parse_level("warning"), -1);
    assert_int_equal(oc_log_parse_level("info "), -1);
    assert_int_equal(oc_log_parse_level(""), -1);
}

static size_t fmt(char *line, const struct timespec *ts, oc_log_level_t level,
                  const char *f, ...) __attribute__((format(printf, 4, 5)));
static size_t fmt(char *line, const struct timespec *ts, oc_log_level_t level,
                  const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    size_t n = oc_log_format(line, ts, level, f, ap);
    va_end(ap);
    return n;
}

static void test_format(void **state)
{
    (void)state;
    char line[OC_LOG_LINE_MAX];
    /* the local time zone plays no part: lines are in UTC */
    setenv("TZ", "XYZ-3", 1);
    tzset();
    struct timespec ts = {.tv_sec = 1700000000, .tv_nsec = 123456789};
    size_t n = fmt(line, &ts, OC_LOG_WARN, "event=x n=%d", 42);
    assert_string_equal(line, "ts=2023-11-14T22:13:20.123Z level=warn event=x n=42");
    assert_int_equal(n, strlen(line));
    /* milliseconds are cut, never rounded up into the next second */
    ts = (struct timespec){.tv_sec = 0, .tv_nsec = 999999999};
    fmt(line, &ts, OC_LOG_ERROR, "event=y");
    assert_string_equal(line, "ts=1970-01-01T00:00:00.999Z level=error event=y");
    ts.tv_nsec = 0;
    fmt(line, &ts, OC_LOG_DEBUG, "event=z");
    assert_string_equal(line, "ts=1970-01-01T00:00:00.000Z level=debug event=z");
    /* syslog's lines carry no timestamp */
    n = fmt(line, NULL, OC_LOG_INFO, "event=%s", "up");
    assert_string_equal(line, "level=info event=up");
    assert_int_equal(n, 19);
    /* a message longer than a line is cut so that its '\n' still fits */
    static char big[3 * OC_LOG_LINE_MAX];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    n = fmt(line, &ts, OC_LOG_INFO, "event=big v=%s", big);
    assert_int_equal(n, OC_LOG_LINE_MAX - 2);
    assert_int_equal(strlen(line), OC_LOG_LINE_MAX - 2);
    assert_int_equal(line[n - 1], 'a');
    /* exactly at the limit: kept whole */
    const char *head = "level=info ";
    size_t fits = OC_LOG_LINE_MAX - 2 - strlen(head);
    n = fmt(line, NULL, OC_LOG_INFO, "%.*s", (int)fits, big);
    assert_int_equal(n, OC_LOG_LINE_MAX - 2);
    n = fmt(line, NULL, OC_LOG_INFO, "%.*s", (int)fits - 1, big);
    assert_int_equal(n, OC_LOG_LINE_MAX - 3);
}

/* oc_log's output: what it wrote to stderr, through a pipe. */
static size_t capture(char *out, size_t cap, void (*fn)(void))
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(p[1], STDERR_FILENO) >= 0);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(p[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(p[0]);
    return n;
}

static void log_some(void)
{
    oc_log_set_level(OC_LOG_WARN);
    oc_log_info("event=hidden");
    oc_log_debug("event=hidden_too");
    oc_log_warn("event=shown k=\"%s\"", "v");
    oc_log_error("event=also_shown");
    oc_log_set_level(OC_LOG_INFO);
}

static void log_long(void)
{
    static char big[OC_LOG_LINE_MAX * 2];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    oc_log_warn("event=long v=%s", big);
}

static void test_oc_log_lines(void **state)
{
    (void)state;
    char out[3 * OC_LOG_LINE_MAX];
    size_t n = capture(out, sizeof(out), log_some);
    assert_null(strstr(out, "hidden"));
    const char *a = strstr(out, "level=warn event=shown k=\"v\"\n");
    const char *b = strstr(out, "level=error event=also_shown\n");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
    assert_int_equal(strncmp(out, "ts=", 3), 0);
    assert_int_equal(out[n - 1], '\n');
    /* a line too long is one line all the same */
    n = capture(out, sizeof(out), log_long);
    assert_int_equal(n, OC_LOG_LINE_MAX - 1);
    assert_int_equal(out[n - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + n - 1);
}

/* The first cause is said at once; the others within the interval are
 * counted and said with the next line after it; a clock that went back
 * does not silence the warning for good. */
static void test_ratelog(void **state)
{
    (void)state;
    oc_ratelog_t r = {0};
    assert_int_equal(oc_ratelog_due(&r, 100.0, 1.0), 1);
    assert_int_equal(oc_ratelog_due(&r, 100.2, 1.0), 0);
    assert_int_equal(oc_ratelog_due(&r, 100.9, 1.0), 0);
    assert_int_equal(oc_ratelog_due(&r, 101.0, 1.0), 3); /* 100.2, 100.9 and this */
    assert_int_equal(oc_ratelog_due(&r, 101.5, 1.0), 0);
    assert_int_equal(oc_ratelog_due(&r, 50.0, 1.0), 2); /* the clock went back */
    assert_int_equal(oc_ratelog_due(&r, 50.5, 60.0), 0);
    assert_int_equal(oc_ratelog_due(&r, 110.5, 60.0), 2);
    oc_ratelog_t first = {0}; /* a clock at 0 is still a first line */
    assert_int_equal(oc_ratelog_due(&first, 0.0, 1.0), 1);
}

/* One rate log per thing (model), grown on demand; each line carries the
 * items of the causes it counts. */
static void test_ratelogs(void **state)
{
    (void)state;
    oc_ratelogs_t rl = {0};
    uint64_t items = 99;
    assert_int_equal(oc_ratelogs_due(&rl, 3, 10, 100.0, 1.0, &items), 1);
    assert_int_equal(items, 10);
    assert_int_equal(rl.n, 4);
    items = 99;
    assert_int_equal(oc_ratelogs_due(&rl, 0, 5, 100.1, 1.0, &items), 1); /* its own */
    assert_int_equal(items, 5);
    items = 99;
    assert_int_equal(oc_ratelogs_due(&rl, 3, 7, 100.5, 1.0, &items), 0);
    assert_int_equal(items, 99); /* untouched when nothing is said */
    assert_int_equal(oc_ratelogs_due(&rl, 3, 2, 101.5, 1.0, &items), 2);
    assert_int_equal(items, 9); /* 7 + 2 */
    oc_ratelogs_free(&rl);
    assert_null(rl.of);
    assert_int_equal(rl.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean),    cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_format),   cmocka_unit_test(test_ratelog),
        cmocka_unit_test(test_ratelogs), cmocka_unit_test(test_oc_log_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * objcache_cli_util: the parts of the objcache command line tool that are
 * worth testing alone: durations, JSON output, exit codes, batch lines.
 *
 * Contract: pure (the JSON writers only write to the FILE given), no
 * allocation; strings passed in stay the caller's.
 */
#ifndef OBJCACHE_CLI_UTIL_H
#define OBJCACHE_CLI_UTIL_H

#include <stddef.h>
#include <stdio.h>

#include "objcache.h"

/* The tool's exit codes. */
enum {
    OBJCACHE_EXIT_OK = 0,      /* done; every key found */
    OBJCACHE_EXIT_MISSING = 1, /* a clean negative answer: not found, not stored */
    OBJCACHE_EXIT_USAGE = 2,   /* bad command line, option or key */
    OBJCACHE_EXIT_FAILED = 3,  /* server or connection error */
};

/*
 * A duration: digits then `ms`, `s` or `m`; bare digits are seconds ("500ms",
 * "2s", "2"). Returns 1 with *ms in 1..3600000, else 0.
 */
int objcache_cli_duration(const char *s, unsigned *ms);

/* The exit code for a status: OK 0, NOT_FOUND/NOT_STORED/EXISTS 1, EINVAL 2, else 3. */
int objcache_cli_exit_code(objcache_status_t st);

/* The worse of two exit codes: 3 > 2 > 1 > 0. */
int objcache_cli_worse(int a, int b);

/* Write s[0..n) as a JSON string, quotes included, escaping as RFC 8259 asks. */
void objcache_cli_json_string(FILE *f, const char *s, size_t n);

/* Write JSON text s[0..n) (objcache_cli_is_json() accepted it) with the DEL
 * and C1 controls of its strings as \u escapes: the same JSON, no raw
 * control for a terminal. */
void objcache_cli_json_text(FILE *f, const char *s, size_t n);

/* 1 if s is a JSON number without exponent (-?(0|[1-9][0-9]*)(\.[0-9]+)?). */
int objcache_cli_is_json_number(const char *s);

/*
 * 1 if s[0..n) is one JSON value (RFC 8259), whitespace around it allowed,
 * its strings well-formed UTF-8 without raw control characters; nesting
 * deeper than 256 is refused.
 */
int objcache_cli_is_json(const char *s, size_t n);

/*
 * Split a batch line in place into at most max words separated by spaces or
 * tabs; a trailing "\n" or "\r\n" is dropped. If rest_from >= 0, the word at
 * that index (when present) runs to the end of the line, inner spaces
 * included (push's JSON). Returns the word count, or -1 if there are more.
 */
int objcache_cli_split(char *line, char **words, int max, int rest_from);

#endif

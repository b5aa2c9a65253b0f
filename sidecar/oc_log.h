/*
 * oc_log: one line per event, `ts=... level=... event=... key=value ...`, to
 * stderr (journald adds its own metadata), or to syslog(3) with
 * log_target = syslog.
 *
 * Contract: callable from any thread; each call writes one whole line with a
 * single write(2), so lines never interleave with another process's. The level
 * and sink are the only process-wide settings in objcached: they are set once
 * by main() before any thread starts (and on reload, from the loop thread),
 * and read with relaxed atomics everywhere else.
 *
 * Message text is the caller's: never pass secrets (conninfo, passwords).
 */
#ifndef OC_LOG_H
#define OC_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef enum oc_log_level {
    OC_LOG_ERROR = 0,
    OC_LOG_WARN,
    OC_LOG_INFO,
    OC_LOG_DEBUG,
} oc_log_level_t;

void oc_log_set_level(oc_log_level_t level);
oc_log_level_t oc_log_get_level(void);
/* Route lines to syslog(3) instead of stderr (ident "objcached"). */
void oc_log_use_syslog(int on);
/* Parse "error", "warn", "info", "debug"; returns -1 if unknown. */
int oc_log_parse_level(const char *s);

/* Copy src into dst (cap bytes) fit for a quoted value: `"` and `\` become
 * `'`, control characters become spaces. Returns dst. */
char *oc_log_clean(char *dst, size_t cap, const char *src);

/* A warning said at most once per interval (per cause: one per thing it
 * is about), with how many times its cause came since the last line: a
 * cause that repeats at every request (memcached refusing every write,
 * every load failing while PostgreSQL is down) must not flood the log. */
typedef struct oc_ratelog {
    uint64_t count; /* causes since the last line, this one included */
    double at;      /* when the last line went out (0: never) */
} oc_ratelog_t;
/* Count one more cause at `now` (seconds, any clock): how many to say now
 * (the first at once, then at most once per `every` seconds), or 0. */
uint64_t oc_ratelog_due(oc_ratelog_t *r, double now, double every);

/* Rate logs of many things of a kind (one per model), grown on demand,
 * each counting also the items (keys) its causes carried. */
typedef struct oc_ratelogs {
    struct oc_ratelog_of {
        oc_ratelog_t log;
        uint64_t items;
    } * of;
    size_t n;
} oc_ratelogs_t;
/* oc_ratelog_due for thing i, whose cause carried `items`: the causes to
 * say now and, in *items_said, their items; 0 when no line is due (or no
 * memory to count it: the caller's stats still do). */
uint64_t oc_ratelogs_due(oc_ratelogs_t *rl, size_t i, uint64_t items, double now,
                         double every, uint64_t *items_said);
void oc_ratelogs_free(oc_ratelogs_t *rl);

/* `fmt` should produce `event=name key=value ...` */
void oc_log(oc_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- the pure rules, exposed for unit tests ---- */

#define OC_LOG_LINE_MAX 2048 /* a line's bytes, its '\n' included */

struct timespec;
/* The text of one line into line[OC_LOG_LINE_MAX]: `ts=<ts as UTC, to the
 * millisecond>Z ` (ts NULL: none, as for syslog, which stamps its own),
 * `level=<level> `, then fmt's text, cut to OC_LOG_LINE_MAX - 2 bytes so a
 * '\n' still fits; NUL-terminated. Returns its length, 0 if fmt could not
 * be formatted (nothing to log). */
size_t oc_log_format(char *line, const struct timespec *ts, oc_log_level_t level,
                     const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

#define oc_log_error(...) oc_log(OC_LOG_ERROR, __VA_ARGS__)
#define oc_log_warn(...)  oc_log(OC_LOG_WARN, __VA_ARGS__)
#define oc_log_info(...)  oc_log(OC_LOG_INFO, __VA_ARGS__)
#define oc_log_debug(...)                                                                \
    do {                                                                                 \
        if (oc_log_get_level() >= OC_LOG_DEBUG)                                          \
            oc_log(OC_LOG_DEBUG, __VA_ARGS__);                                           \
    } while (0)

#endif

#include "oc_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static atomic_int oc_log_level = OC_LOG_INFO;
static atomic_int oc_log_syslog = 0;

static const char *const oc_log_names[] = {"error", "warn", "info", "debug"};

void oc_log_set_level(oc_log_level_t level)
{
    atomic_store_explicit(&oc_log_level, (int)level, memory_order_relaxed);
}

oc_log_level_t oc_log_get_level(void)
{
    return (oc_log_level_t)atomic_load_explicit(&oc_log_level, memory_order_relaxed);
}

void oc_log_use_syslog(int on)
{
    if (on)
        openlog("objcached", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    atomic_store_explicit(&oc_log_syslog, on, memory_order_relaxed);
}

int oc_log_parse_level(const char *s)
{
    for (size_t i = 0; i < sizeof(oc_log_names) / sizeof(oc_log_names[0]); i++)
        if (strcmp(s, oc_log_names[i]) == 0)
            return (int)i;
    return -1;
}

char *oc_log_clean(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c == '"' || c == '\\') ? '\'' : (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    if (cap)
        dst[i] = '\0';
    return dst;
}

size_t oc_log_format(char *line, const struct timespec *ts, oc_log_level_t level,
                     const char *fmt, va_list ap)
{
    size_t off = 0;
    if (ts) {
        struct tm tm;
        gmtime_r(&ts->tv_sec, &tm);
        off = strftime(line, OC_LOG_LINE_MAX, "ts=%Y-%m-%dT%H:%M:%S", &tm);
        off += (size_t)snprintf(line + off, OC_LOG_LINE_MAX - off, ".%03ldZ ",
                                ts->tv_nsec / 1000000);
    }
    off += (size_t)snprintf(line + off, OC_LOG_LINE_MAX - off, "level=%s ",
                            oc_log_names[level]);
    int n = vsnprintf(line + off, OC_LOG_LINE_MAX - off, fmt, ap);
    if (n < 0)
        return 0;
    off += (size_t)n;
    if (off > OC_LOG_LINE_MAX - 2)
        off = OC_LOG_LINE_MAX - 2; /* truncated: keep it one line */
    line[off] = '\0';
    return off;
}

void oc_log(oc_log_level_t level, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&oc_log_level, memory_order_relaxed))
        return;
    char line[OC_LOG_LINE_MAX];
    int sys = atomic_load_explicit(&oc_log_syslog, memory_order_relaxed);
    struct timespec ts;
    if (!sys)
        clock_gettime(CLOCK_REALTIME, &ts);
    va_list ap;
    va_start(ap, fmt);
    size_t off = oc_log_format(line, sys ? NULL : &ts, level, fmt, ap);
    va_end(ap);
    if (off == 0)
        return;
    if (sys) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        syslog(prio[level], "%s", line);
        return;
    }
    line[off++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, off);
    (void)w; /* nowhere left to report a failed log write */
}

uint64_t oc_ratelog_due(oc_ratelog_t *r, double now, double every)
{
    r->count++;
    if (r->at != 0 && now - r->at < every && now >= r->at)
        return 0;
    uint64_t n = r->count;
    r->at = now;
    r->count = 0;
    return n;
}

uint64_t oc_ratelogs_due(oc_ratelogs_t *rl, size_t i, uint64_t items, double now,
                         double every, uint64_t *items_said)
{
    if (i >= rl->n) {
        struct oc_ratelog_of *grown = realloc(rl->of, (i + 1) * sizeof(*grown));
        if (grown == NULL)
            return 0;
        memset(grown + rl->n, 0, (i + 1 - rl->n) * sizeof(*grown));
        rl->of = grown;
        rl->n = i + 1;
    }
    struct oc_ratelog_of *r = &rl->of[i];
    r->items += items;
    uint64_t n = oc_ratelog_due(&r->log, now, every);
    if (n) {
        *items_said = r->items;
        r->items = 0;
    }
    return n;
}

void oc_ratelogs_free(oc_ratelogs_t *rl)
{
    free(rl->of);
    rl->of = NULL;
    rl->n = 0;
}

#include "objcache_cli_util.h"

#include <string.h>

int objcache_cli_duration(const char *s, unsigned *ms)
{
    unsigned long long v = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > 3600000ULL)
            return 0;
    }
    if (i == 0)
        return 0;
    const char *unit = s + i;
    unsigned long long mult;
    if (strcmp(unit, "ms") == 0)
        mult = 1;
    else if (strcmp(unit, "s") == 0 || unit[0] == '\0')
        mult = 1000;
    else if (strcmp(unit, "m") == 0)
        mult = 60000;
    else
        return 0;
    v *= mult;
    if (v < 1 || v > 3600000ULL)
        return 0;
    *ms = (unsigned)v;
    return 1;
}

int objcache_cli_exit_code(objcache_status_t st)
{
    switch (st) {
    case OBJCACHE_OK:
        return OBJCACHE_EXIT_OK;
    case OBJCACHE_NOT_FOUND:
    case OBJCACHE_NOT_STORED:
    case OBJCACHE_EXISTS:
        return OBJCACHE_EXIT_MISSING;
    case OBJCACHE_EINVAL:
        return OBJCACHE_EXIT_USAGE;
    default:
        return OBJCACHE_EXIT_FAILED;
    }
}

int objcache_cli_worse(int a, int b)
{
    return a > b ? a : b;
}

/* Bytes in the well-formed UTF-8 sequence at s[0..n) (RFC 3629: no overlong
 * forms, no surrogates, at most U+10FFFF), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (len == 0 || c > 0xF4 || c == 0xC0 || c == 0xC1 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) ||
        (c == 0xED && s[1] > 0x9F) || /* overlong, surrogate */
        (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F)) /* overlong, > U+10FFFF */
        return 0;
    return len;
}

void objcache_cli_json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) { /* JSON is UTF-8 (RFC 8259): other bytes become U+FFFD */
            size_t len = utf8_len((const unsigned char *)s + i, n - i);
            if (len == 0)
                fputs("\\ufffd", f);
            else
                fwrite(s + i, 1, len, f);
            i += len ? len - 1 : 0;
        } else if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static size_t digits(const char *s)
{
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

int objcache_cli_is_json_number(const char *s)
{
    if (*s == '-')
        s++;
    size_t n = digits(s);
    if (n == 0 || (n > 1 && s[0] == '0'))
        return 0;
    s += n;
    if (*s == '.') {
        n = digits(s + 1);
        if (n == 0)
            return 0;
        s += 1 + n;
    }
    return *s == '\0';
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int objcache_cli_split(char *line, char **words, int max, int rest_from)
{
    size_t len = strlen(line);
    if (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    int n = 0;
    char *p = line;
    for (;;) {
        while (is_blank(*p))
            p++;
        if (*p == '\0')
            return n;
        if (n == max)
            return -1;
        words[n] = p;
        if (n++ == rest_from) {
            char *end = p + strlen(p);
            while (end > p && is_blank(end[-1]))
                *--end = '\0';
            return n;
        }
        while (*p != '\0' && !is_blank(*p))
            p++;
        if (*p != '\0')
            *p++ = '\0';
    }
}

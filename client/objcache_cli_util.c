#include "objcache_cli_util.h"

#include <ctype.h>
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

/* A C1 control (U+0080..U+009F) at s: xterm and others take one in UTF-8
 * as a control (U+009B as CSI), as they do ESC. */
static int is_c1(const unsigned char *s, size_t n)
{
    return n >= 2 && s[0] == 0xC2 && s[1] >= 0x80 && s[1] <= 0x9F;
}

void objcache_cli_json_text(FILE *f, const char *s, size_t n)
{
    /* JSON text has DEL and C1 controls only inside its strings (outside
     * them it is ASCII without controls), where an escape means the same */
    const unsigned char *u = (const unsigned char *)s;
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        int c1 = is_c1(u + i, n - i);
        if (u[i] != 0x7f && !c1)
            continue;
        fwrite(s + from, 1, i - from, f);
        fprintf(f, "\\u%04x", c1 ? u[i + 1] : u[i]);
        i += (size_t)c1;
        from = i + 1;
    }
    fwrite(s + from, 1, n - from, f);
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
            else if (is_c1((const unsigned char *)s + i, n - i))
                fprintf(f, "\\u%04x", (unsigned char)s[i + 1]);
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

/* A recursive-descent check of RFC 8259 JSON text; depth bounds the stack. */
typedef struct json_scan {
    const unsigned char *s;
    size_t n, i;
    int depth;
} json_scan_t;

#define JSON_MAX_DEPTH 256

static void json_ws(json_scan_t *j)
{
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' ||
                           j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

static int json_eat(json_scan_t *j, char c)
{
    if (j->i < j->n && j->s[j->i] == (unsigned char)c) {
        j->i++;
        return 1;
    }
    return 0;
}

static int json_is_digit(const json_scan_t *j)
{
    return j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9';
}

/* One or more digits. */
static int json_digits(json_scan_t *j)
{
    size_t start = j->i;
    while (json_is_digit(j))
        j->i++;
    return j->i > start;
}

static int json_number(json_scan_t *j)
{
    json_eat(j, '-');
    if (json_eat(j, '0')) {
        if (json_is_digit(j))
            return 0; /* no leading zeros */
    } else if (!json_digits(j)) {
        return 0;
    }
    if (json_eat(j, '.') && !json_digits(j))
        return 0;
    if (json_eat(j, 'e') || json_eat(j, 'E')) {
        if (!json_eat(j, '+'))
            json_eat(j, '-');
        if (!json_digits(j))
            return 0;
    }
    return 1;
}

static int json_hex4(json_scan_t *j)
{
    for (int k = 0; k < 4; k++, j->i++)
        if (j->i >= j->n || !isxdigit(j->s[j->i]))
            return 0;
    return 1;
}

/* A string, its opening quote at i: escapes as RFC 8259 lists, UTF-8 only. */
static int json_string(json_scan_t *j)
{
    if (!json_eat(j, '"'))
        return 0;
    while (j->i < j->n) {
        unsigned char c = j->s[j->i];
        if (c == '"') {
            j->i++;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            j->i++;
            if (j->i >= j->n)
                return 0;
            c = j->s[j->i++];
            if (c == 'u' && !json_hex4(j))
                return 0;
            if (c != 'u' && (c == '\0' || strchr("\"\\/bfnrt", c) == NULL))
                return 0;
            continue;
        }
        size_t len = c >= 0x80 ? utf8_len(j->s + j->i, j->n - j->i) : 1;
        if (len == 0)
            return 0;
        j->i += len;
    }
    return 0; /* no closing quote */
}

static int json_value(json_scan_t *j);

/* The members of an object or the elements of an array, after its opener. */
static int json_container(json_scan_t *j, char close, int object)
{
    json_ws(j);
    if (json_eat(j, close))
        return 1;
    for (;;) {
        if (object) {
            if (!json_string(j))
                return 0;
            json_ws(j);
            if (!json_eat(j, ':'))
                return 0;
        }
        if (!json_value(j))
            return 0;
        if (json_eat(j, close))
            return 1;
        if (!json_eat(j, ','))
            return 0;
        json_ws(j);
    }
}

static int json_literal(json_scan_t *j, const char *word)
{
    size_t w = strlen(word);
    if (j->n - j->i < w || memcmp(j->s + j->i, word, w) != 0)
        return 0;
    j->i += w;
    return 1;
}

/* A value with the whitespace around it. */
static int json_value(json_scan_t *j)
{
    int ok;
    json_ws(j);
    if (j->i >= j->n)
        return 0;
    switch (j->s[j->i]) {
    case '{':
    case '[':
        if (++j->depth > JSON_MAX_DEPTH)
            return 0;
        j->i++;
        ok = json_container(j, j->s[j->i - 1] == '{' ? '}' : ']', j->s[j->i - 1] == '{');
        j->depth--;
        break;
    case '"':
        ok = json_string(j);
        break;
    case 't':
        ok = json_literal(j, "true");
        break;
    case 'f':
        ok = json_literal(j, "false");
        break;
    case 'n':
        ok = json_literal(j, "null");
        break;
    default:
        ok = json_number(j);
    }
    json_ws(j);
    return ok;
}

int objcache_cli_is_json(const char *s, size_t n)
{
    json_scan_t j = {(const unsigned char *)s, n, 0, 0};
    return json_value(&j) && j.i == n;
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

/*
 * libFuzzer target for oc_conf: oc_conf_load_string() on arbitrary files,
 * from an exactly-sized heap copy; whatever it returns is freed (LeakSanitizer
 * reports what is not).
 *
 * Checked, besides ASan/UBSan/LSan:
 * - a refused file has a NUL-terminated, non-empty message of printable
 *   ASCII only (oc_conf.c: "a hostile file can neither flood a log line nor
 *   put escape sequences on a terminal"), which never shows the password
 *   of a conninfo;
 * - an accepted file has at least one model and one server, a listener,
 *   and only identifiers matching [A-Za-z_][A-Za-z0-9_]{0,62} where SQL
 *   will quote them (oc_conf.h: "a config cannot smuggle SQL either");
 *   numbers are inside their documented ranges; every model is found by
 *   oc_conf_model().
 *
 *   bash scripts/fuzz.sh --target fuzz_conf --seconds 60
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oc_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int ident_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int word = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!word && (i == 0 || c < '0' || c > '9'))
            return 0;
    }
    return 1;
}

static void check_conf(const oc_conf_t *c)
{
    if (c->nmodels == 0 || c->models == NULL || c->nservers == 0 || c->servers == NULL)
        abort();
    if ((c->listen == NULL || c->listen[0] == '\0') &&
        (c->unix_socket == NULL || c->unix_socket[0] == '\0'))
        abort();
    if (c->conninfo == NULL || c->conninfo[0] == '\0' || c->key_prefix == NULL ||
        strlen(c->key_prefix) > 32)
        abort(); /* > 32 would make the daemon's max_key_len underflow */
    for (const char *p = c->key_prefix; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            abort();
    if (c->max_keys < 1 || c->max_keys > 100000 || c->max_line < 1024 ||
        c->max_value < 1024 || c->max_connections < 1 || c->pg_connections < 1 ||
        c->mc_workers < 1 || c->ttl_jitter_pct > 100)
        abort();
    for (size_t i = 0; i < c->nservers; i++)
        if (c->servers[i].host == NULL || c->servers[i].host[0] == '\0' ||
            c->servers[i].port == 0 || c->servers[i].weight < 1)
            abort();
    for (size_t i = 0; i < c->nmodels; i++) {
        const oc_model_conf_t *m = &c->models[i];
        if (!ident_ok(m->name, OC_MODEL_NAME_MAX) || !ident_ok(m->schema, 63) ||
            !ident_ok(m->table, 63) || !ident_ok(m->key_column, 63) ||
            (m->version_column != NULL && !ident_ok(m->version_column, 63)))
            abort();
        if ((m->columns == NULL) != (m->ncolumns == 0))
            abort();
        for (size_t k = 0; k < m->ncolumns; k++)
            if (!ident_ok(m->columns[k], 63))
                abort();
        if ((unsigned)m->key_type > OC_KEY_TEXT || m->ttl_s < 1 || m->missing_ttl_s < 1 ||
            m->tombstone_ttl_s < 1 || m->ttl_s > 30 * 86400)
            abort();
        if (oc_conf_model(c, m->name, strlen(m->name)) != m)
            abort();
    }
}

/* The password of the first conninfo line, if it has one that starts with
 * SECRET and appears nowhere else in the file (so an echo of it can only be
 * a leak). */
static const char *conninfo_secret(const char *text, size_t len, size_t *slen)
{
    static const char key[] = "password=";
    const char *p = memmem(text, len, key, sizeof(key) - 1);
    if (p == NULL)
        return NULL;
    const char *s = p + sizeof(key) - 1, *end = text + len;
    const char *e = s;
    while (e < end && *e != ' ' && *e != '\t' && *e != '\r' && *e != '\n' && *e != '\0')
        e++;
    *slen = (size_t)(e - s);
    /* Only passwords marked as such (the seeds use SECRET...): a short or
     * common word could be in a fixed message, e.g. "ached]" in
     * "[objcached]". */
    if (*slen < 8 || memcmp(s, "SECRET", 6) != 0)
        return NULL;
    /* On a conninfo line? Look back to the line start. */
    const char *ls = p;
    while (ls > text && ls[-1] != '\n')
        ls--;
    while (ls < p && (*ls == ' ' || *ls == '\t'))
        ls++;
    if ((size_t)(p - ls) < 8 || memcmp(ls, "conninfo", 8) != 0)
        return NULL;
    if (memmem(e, (size_t)(end - e), s, *slen) != NULL ||
        memmem(text, (size_t)(s - text), s, *slen) != NULL)
        return NULL;
    return s;
}

static void check_err(const char *err, const char *text, size_t len)
{
    size_t n = strnlen(err, OC_ERRLEN);
    if (n == 0 || n == OC_ERRLEN)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)err[i] < 0x20 || (unsigned char)err[i] > 0x7e) {
            fprintf(stderr, "fuzz_conf: byte 0x%02x at %zu of the message: %s\n",
                    (unsigned char)err[i], i, err);
            abort();
        }
    size_t slen = 0;
    const char *secret = conninfo_secret(text, len, &slen);
    if (secret != NULL && memmem(err, n, secret, slen) != NULL) {
        fprintf(stderr, "fuzz_conf: the conninfo password is in the message: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0; /* the 1 MiB cap is one comparison; keep runs fast */
    char *text = malloc(size > 0 ? size : 1);
    if (text == NULL)
        abort();
    memcpy(text, data, size);
    char err[OC_ERRLEN];
    memset(err, 0, sizeof(err));
    oc_conf_t *c = oc_conf_load_string(text, size, err);
    if (c != NULL)
        check_conf(c);
    else
        check_err(err, text, size);
    oc_conf_free(c);
    free(text);
    return 0;
}

/*
 * objcache: the command line client of objcached, a thin layer over
 * libobjcache. Usage in usage() below and in docs/client.md.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "objcache.h"
#include "objcache_cli_util.h"

#define CLI_DEFAULT_ADDR "127.0.0.1:11311"
#define CLI_STDIN_MAX    ((size_t)64 << 20)
#define CLI_BATCH_WORDS  4096
#define CLI_BATCH_LINE   (1u << 20)

typedef struct cli {
    objcache_t *h;
    int json; /* --json */
} cli_t;

static void usage(FILE *f)
{
    fputs("Usage: objcache [OPTIONS] COMMAND [ARGS]\n"
          "\n"
          "Commands:\n"
          "  get KEY...           print each object (KEY is Model:id)\n"
          "  push KEY JSON        save an object; JSON '-' reads it from stdin\n"
          "  tombstone KEY...     delete objects from the cache\n"
          "  stats                print the server's counters\n"
          "  version              print the server's version\n"
          "  batch                run commands read from stdin, one per line, on one\n"
          "                       connection (also: sleep DURATION)\n"
          "\n"
          "Options:\n"
          "  -a, --addr ADDR      unix:/path, host:port or [ipv6]:port; default\n"
          "                       $OBJCACHE_ADDR, else " CLI_DEFAULT_ADDR "\n"
          "  -t, --timeout DUR    bound on connecting and on each reply; DUR is\n"
          "                       500ms, 2s, 1m or seconds (default: connect 1s,\n"
          "                       reply 6s)\n"
          "  -j, --json           print JSON (get: one object, key -> object or null)\n"
          "  -h, --help           print this help\n"
          "\n"
          "Exit status: 0 ok (every key found), 1 some key not found or an object not\n"
          "stored, 2 usage error, 3 server or connection error.\n",
          f);
}

/*
 * A failed call: "objcache: WHAT[ KEY]: reason" on stderr and, with --json,
 * {"error": ..., "message": ...} on stdout. Returns the exit code.
 */
static int cli_fail(const cli_t *c, const char *what, const char *key,
                    objcache_status_t st)
{
    const char *msg = objcache_errmsg(c->h);
    if (msg[0] == '\0')
        msg = objcache_strerror(st);
    fprintf(stderr, "objcache: %s%s%s: %s\n", what, key ? " " : "", key ? key : "", msg);
    if (c->json) {
        fputs("{\"error\":", stdout);
        objcache_cli_json_string(stdout, objcache_strerror(st),
                                 strlen(objcache_strerror(st)));
        fputs(",\"message\":", stdout);
        objcache_cli_json_string(stdout, msg, strlen(msg));
        fputs("}\n", stdout);
    }
    return objcache_cli_exit_code(st);
}

static int check_keys(int n, char **keys)
{
    for (int i = 0; i < n; i++) {
        if (objcache_check_key(keys[i]) != OBJCACHE_OK) {
            fprintf(stderr,
                    "objcache: invalid key '%s': expected Model:id, at most %d bytes, "
                    "no spaces or control characters\n",
                    keys[i], OBJCACHE_KEY_MAX);
            return OBJCACHE_EXIT_USAGE;
        }
    }
    return OBJCACHE_EXIT_OK;
}

static int seen_before(const objcache_item_t *items, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(items[j].key, items[i].key) == 0)
            return 1;
    return 0;
}

/*
 * A found value as the output's JSON: the server's bytes when they are JSON
 * text, else (a hostile or foreign server) a JSON string of them, so that
 * they cannot break the output's syntax, add members or lines of their own,
 * or reach a terminal raw. Returns 0 for the second case, with a message.
 */
static int print_value(const objcache_item_t *it)
{
    if (objcache_cli_is_json(it->value, it->value_len)) {
        objcache_cli_json_text(stdout, it->value, it->value_len);
        return 1;
    }
    objcache_cli_json_string(stdout, it->value, it->value_len);
    fprintf(stderr,
            "objcache: get %s: the server's value is not JSON (written as a JSON "
            "string)\n",
            it->key);
    return 0;
}

/* Returns OBJCACHE_EXIT_FAILED if a value was not JSON, else OBJCACHE_EXIT_OK. */
static int print_items(const cli_t *c, const objcache_item_t *items, size_t n)
{
    int ok = 1;
    if (!c->json) {
        for (size_t i = 0; i < n; i++) {
            if (items[i].status != OBJCACHE_OK) {
                printf("%s (not found)\n", items[i].key);
                continue;
            }
            printf("%s ", items[i].key);
            ok &= print_value(&items[i]);
            fputc('\n', stdout);
        }
        return ok ? OBJCACHE_EXIT_OK : OBJCACHE_EXIT_FAILED;
    }
    fputc('{', stdout);
    for (size_t i = 0, first = 1; i < n; i++) {
        if (seen_before(items, i))
            continue; /* a key asked twice is one JSON member */
        if (!first)
            fputc(',', stdout);
        first = 0;
        objcache_cli_json_string(stdout, items[i].key, strlen(items[i].key));
        fputc(':', stdout);
        if (items[i].status == OBJCACHE_OK)
            ok &= print_value(&items[i]);
        else
            fputs("null", stdout);
    }
    fputs("}\n", stdout);
    return ok ? OBJCACHE_EXIT_OK : OBJCACHE_EXIT_FAILED;
}

static int cmd_get(cli_t *c, int n, char **keys)
{
    if (n == 0) {
        fputs("objcache: get needs at least one key\n", stderr);
        return OBJCACHE_EXIT_USAGE;
    }
    int rc = check_keys(n, keys);
    if (rc != OBJCACHE_EXIT_OK)
        return rc;
    objcache_item_t *items = calloc((size_t)n, sizeof(*items));
    if (items == NULL) {
        fputs("objcache: out of memory\n", stderr);
        return OBJCACHE_EXIT_FAILED;
    }
    objcache_status_t st =
        objcache_get_multi(c->h, (const char *const *)keys, (size_t)n, items);
    if (st != OBJCACHE_OK) {
        rc = cli_fail(c, "get", NULL, st);
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (items[i].status == OBJCACHE_NOT_FOUND)
            rc = OBJCACHE_EXIT_MISSING;
    rc = objcache_cli_worse(rc, print_items(c, items, (size_t)n));
done:
    free(items);
    return rc;
}

/* A push or tombstone outcome: the word in --json output, and in plain output. */
static void outcome_words(objcache_status_t st, int push, const char **json,
                          const char **plain)
{
    switch (st) {
    case OBJCACHE_OK:
        *json = *plain = push ? "stored" : "deleted";
        break;
    case OBJCACHE_NOT_STORED:
        *json = "not_stored", *plain = "not stored";
        break;
    case OBJCACHE_EXISTS:
        *json = *plain = "exists";
        break;
    default:
        *json = "not_found", *plain = "(not found)";
    }
}

static void print_outcome(const cli_t *c, const char *key, objcache_status_t st, int push)
{
    const char *json, *plain;
    outcome_words(st, push, &json, &plain);
    if (c->json) {
        fputc('{', stdout);
        objcache_cli_json_string(stdout, key, strlen(key));
        printf(":\"%s\"}\n", json);
    } else {
        printf("%s %s\n", key, plain);
    }
}

static int cmd_push(cli_t *c, const char *key, const char *json, size_t len)
{
    objcache_status_t st = objcache_push(c->h, key, json, len);
    if (objcache_cli_exit_code(st) == OBJCACHE_EXIT_FAILED)
        return cli_fail(c, "push", key, st);
    print_outcome(c, key, st, 1);
    return objcache_cli_exit_code(st);
}

/* All of stdin, without trailing whitespace; NULL if too big or unreadable. */
static char *read_stdin(size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap)
            break;
        if (cap >= CLI_STDIN_MAX && fgetc(stdin) == EOF)
            break; /* exactly the most it takes */
        char *nb = cap >= CLI_STDIN_MAX ? NULL : realloc(buf, cap * 2);
        if (nb == NULL) {
            free(buf);
            return NULL;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf == NULL || ferror(stdin)) {
        free(buf);
        return NULL;
    }
    while (n > 0 && buf[n - 1] != '\0' && strchr(" \t\r\n", buf[n - 1]) != NULL)
        n--;
    *len = n;
    return buf;
}

static int cmd_push_args(cli_t *c, int n, char **args, int in_batch)
{
    if (n != 2) {
        fputs("objcache: usage: push KEY JSON (or - to read the JSON from stdin)\n",
              stderr);
        return OBJCACHE_EXIT_USAGE;
    }
    int rc = check_keys(1, args);
    if (rc != OBJCACHE_EXIT_OK)
        return rc;
    if (strcmp(args[1], "-") != 0)
        return cmd_push(c, args[0], args[1], strlen(args[1]));
    if (in_batch) {
        fputs("objcache: push - (stdin) is not available in batch mode\n", stderr);
        return OBJCACHE_EXIT_USAGE;
    }
    size_t len = 0;
    char *json = read_stdin(&len);
    if (json == NULL) {
        fputs("objcache: cannot read the JSON from stdin (or over 64 MiB)\n", stderr);
        return OBJCACHE_EXIT_USAGE;
    }
    rc = cmd_push(c, args[0], json, len);
    free(json);
    return rc;
}

static int cmd_tombstone(cli_t *c, int n, char **keys)
{
    if (n == 0) {
        fputs("objcache: tombstone needs at least one key\n", stderr);
        return OBJCACHE_EXIT_USAGE;
    }
    int rc = check_keys(n, keys);
    if (rc != OBJCACHE_EXIT_OK)
        return rc;
    /* Every key, whatever the one before answered: a NOT_FOUND (a plain
     * memcached with nothing to delete) must not skip the keys after it. */
    for (int i = 0; i < n; i++) {
        objcache_status_t st = objcache_tombstone(c->h, keys[i]);
        if (objcache_cli_exit_code(st) == OBJCACHE_EXIT_FAILED)
            return cli_fail(c, "tombstone", keys[i], st);
        print_outcome(c, keys[i], st, 0);
        if (st != OBJCACHE_OK)
            rc = OBJCACHE_EXIT_MISSING;
    }
    return rc;
}

static int cmd_stats(cli_t *c)
{
    const objcache_stat_t *s;
    size_t n;
    objcache_status_t st = objcache_stats(c->h, &s, &n);
    if (st != OBJCACHE_OK)
        return cli_fail(c, "stats", NULL, st);
    if (c->json)
        fputc('{', stdout);
    for (size_t i = 0; i < n; i++) {
        if (!c->json) {
            printf("%s %s\n", s[i].name, s[i].value);
            continue;
        }
        if (i > 0)
            fputc(',', stdout);
        objcache_cli_json_string(stdout, s[i].name, strlen(s[i].name));
        fputc(':', stdout);
        if (objcache_cli_is_json_number(s[i].value))
            fputs(s[i].value, stdout);
        else
            objcache_cli_json_string(stdout, s[i].value, strlen(s[i].value));
    }
    if (c->json)
        fputs("}\n", stdout);
    return OBJCACHE_EXIT_OK;
}

static int cmd_version(cli_t *c)
{
    const char *v;
    objcache_status_t st = objcache_version(c->h, &v);
    if (st != OBJCACHE_OK)
        return cli_fail(c, "version", NULL, st);
    if (c->json) {
        fputs("{\"version\":", stdout);
        objcache_cli_json_string(stdout, v, strlen(v));
        fputs("}\n", stdout);
    } else {
        printf("%s\n", v);
    }
    return OBJCACHE_EXIT_OK;
}

static int cmd_sleep(int n, char **args)
{
    unsigned ms;
    if (n != 1 || !objcache_cli_duration(args[0], &ms)) {
        fputs("objcache: usage: sleep DURATION\n", stderr);
        return OBJCACHE_EXIT_USAGE;
    }
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return OBJCACHE_EXIT_OK;
}

static int run_batch(cli_t *c);

static int run_command(cli_t *c, int argc, char **argv, int in_batch)
{
    const char *cmd = argv[0];
    int n = argc - 1;
    char **args = argv + 1;
    if (strcmp(cmd, "get") == 0)
        return cmd_get(c, n, args);
    if (strcmp(cmd, "push") == 0)
        return cmd_push_args(c, n, args, in_batch);
    if (strcmp(cmd, "tombstone") == 0)
        return cmd_tombstone(c, n, args);
    if (strcmp(cmd, "stats") == 0 && n == 0)
        return cmd_stats(c);
    if (strcmp(cmd, "version") == 0 && n == 0)
        return cmd_version(c);
    if (strcmp(cmd, "batch") == 0 && n == 0 && !in_batch)
        return run_batch(c);
    if (strcmp(cmd, "sleep") == 0 && in_batch)
        return cmd_sleep(n, args);
    fprintf(stderr, "objcache: unknown command or bad arguments: %s (see --help)\n", cmd);
    return OBJCACHE_EXIT_USAGE;
}

/*
 * One line of stdin into line[0..cap-1), NUL-terminated, without its '\n'.
 * 0 at the end of input. A line over cap-1 bytes is read to its end and
 * *too_long set; *has_nul is set if it held a NUL byte (which strlen() would
 * take for its end). fgets() could not tell either apart from a short line.
 */
static int batch_line(char *line, size_t cap, int *too_long, int *has_nul)
{
    size_t n = 0;
    int ch, any = 0;
    *too_long = *has_nul = 0;
    while ((ch = getchar()) != EOF) {
        any = 1;
        if (ch == '\n')
            break;
        if (ch == '\0')
            *has_nul = 1;
        if (n < cap - 1)
            line[n++] = (char)ch;
        else
            *too_long = 1;
    }
    line[n] = '\0';
    return any;
}

/* One command per line; blank lines and lines starting with # are skipped. */
static int run_batch(cli_t *c)
{
    static const size_t max_words = CLI_BATCH_WORDS;
    char **words = calloc(max_words, sizeof(*words));
    char *line = malloc(CLI_BATCH_LINE);
    int rc = OBJCACHE_EXIT_OK;
    if (words == NULL || line == NULL) {
        fputs("objcache: out of memory\n", stderr);
        rc = OBJCACHE_EXIT_FAILED;
        goto done;
    }
    int too_long, has_nul;
    while (batch_line(line, CLI_BATCH_LINE, &too_long, &has_nul)) {
        if (too_long || has_nul) {
            /* Skipped whole: no part of it may run as a command. */
            if (too_long)
                fprintf(stderr, "objcache: batch line longer than %u bytes, skipped\n",
                        CLI_BATCH_LINE - 1);
            else
                fputs("objcache: batch line with a NUL byte, skipped\n", stderr);
            rc = objcache_cli_worse(rc, OBJCACHE_EXIT_USAGE);
            continue;
        }
        const char *verb = line + strspn(line, " \t");
        int push = strncmp(verb, "push", 4) == 0 && (verb[4] == ' ' || verb[4] == '\t');
        int n = objcache_cli_split(line, words, (int)max_words, push ? 2 : -1);
        if (n == 0 || words[0][0] == '#')
            continue;
        if (n < 0) {
            fputs("objcache: batch line with too many words\n", stderr);
            rc = objcache_cli_worse(rc, OBJCACHE_EXIT_USAGE);
            continue;
        }
        rc = objcache_cli_worse(rc, run_command(c, n, words, 1));
        fflush(stdout);
    }
done:
    free(words);
    free(line);
    return rc;
}

typedef struct cli_opts {
    const char *addr;
    objcache_options_t lib;
    int json;
} cli_opts_t;

/* Options into o; returns the index of the command, or -1 (exit code in *rc). */
static int parse_opts(int argc, char **argv, cli_opts_t *o, int *rc)
{
    static const struct option longopts[] = {
        {"addr", required_argument, NULL, 'a'},
        {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned ms;
    int ch;
    o->addr = getenv("OBJCACHE_ADDR");
    if (o->addr == NULL || o->addr[0] == '\0')
        o->addr = CLI_DEFAULT_ADDR;
    objcache_options_init(&o->lib);
    o->json = 0;
    *rc = OBJCACHE_EXIT_USAGE;
    while ((ch = getopt_long(argc, argv, "+a:t:jh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            o->addr = optarg;
            break;
        case 't':
            if (!objcache_cli_duration(optarg, &ms)) {
                fprintf(stderr, "objcache: bad --timeout '%s' (e.g. 500ms, 2s)\n",
                        optarg);
                return -1;
            }
            o->lib.connect_timeout_ms = ms;
            o->lib.io_timeout_ms = ms;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'h':
            usage(stdout);
            *rc = OBJCACHE_EXIT_OK;
            return -1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind == argc) {
        usage(stderr);
        return -1;
    }
    return optind;
}

int main(int argc, char **argv)
{
    cli_opts_t o;
    cli_t c = {NULL, 0};
    char err[OBJCACHE_ERRLEN];
    int rc;
    int first = parse_opts(argc, argv, &o, &rc);
    if (first < 0)
        return rc;
    objcache_status_t st = objcache_new(&c.h, o.addr, &o.lib, err);
    if (st != OBJCACHE_OK) {
        fprintf(stderr, "objcache: address '%s': %s\n", o.addr, err);
        return st == OBJCACHE_EINVAL ? OBJCACHE_EXIT_USAGE : OBJCACHE_EXIT_FAILED;
    }
    c.json = o.json;
    rc = run_command(&c, argc - first, argv + first, 0);
    objcache_free(c.h);
    /* Output that could not be written (a full disk, a closed pipe's EPIPE
     * with SIGPIPE ignored) is a failure, not a silent exit 0. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "objcache: writing the output: %s\n", strerror(errno));
        rc = objcache_cli_worse(rc, OBJCACHE_EXIT_FAILED);
    }
    return rc;
}

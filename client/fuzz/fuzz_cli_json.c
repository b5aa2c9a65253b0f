/*
 * libFuzzer target for objcache_cli_is_json(), the check that decides whether
 * a server's value may be written raw into the objcache CLI's output: from an
 * exactly-sized heap copy (ASan sees any read past it), its verdict is
 * compared with jansson's (json_loadb, any value).
 *
 * Checked, besides ASan/UBSan:
 * - what jansson accepts is accepted (unless nested deeper than the check's
 *   256 levels: inputs with more than 256 brackets are not compared; nor
 *   are inputs with a NUL byte, where jansson's reader stops);
 * - what is accepted jansson accepts too, for inputs without `\` escapes
 *   (jansson refuses unpaired surrogates), exponents or long digit runs
 *   (jansson refuses numbers it cannot hold; JSON does not);
 * - an accepted value stays accepted with whitespace around it, and is
 *   refused with a comma after it.
 *
 *   bash scripts/fuzz.sh --target fuzz_cli_json --seconds 60
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "objcache_cli_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check(const uint8_t *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, data, len);
    int ok = objcache_cli_is_json(copy, len);
    free(copy);
    return ok;
}

/* Which of jansson's verdicts bind the check here (see above). */
typedef struct compare {
    int its_yes; /* jansson accepts: so must the check */
    int its_no;  /* jansson refuses: so must the check */
} compare_t;

static compare_t compare_how(const uint8_t *d, size_t n)
{
    compare_t c = {1, 1};
    size_t run = 0, brackets = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\0')
            return (compare_t){0, 0};
        if (d[i] == '[' || d[i] == '{')
            brackets++;
        if (d[i] == '\\' || d[i] == 'e' || d[i] == 'E')
            c.its_no = 0;
        run = d[i] >= '0' && d[i] <= '9' ? run + 1 : 0;
        if (run > 15)
            c.its_no = 0;
    }
    if (brackets > 256)
        c.its_yes = 0;
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int ok = check(data, size);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr);
    compare_t how = compare_how(data, size);
    if (j != NULL && !ok && how.its_yes)
        abort(); /* valid JSON refused */
    if (j == NULL && ok && how.its_no)
        abort(); /* accepted what is not JSON */
    json_decref(j);
    if (ok && size < 4096) {
        uint8_t *w = malloc(size + 2);
        if (w == NULL)
            abort();
        w[0] = ' ';
        memcpy(w + 1, data, size);
        w[size + 1] = '\n';
        if (!check(w, size + 2))
            abort();
        w[size + 1] = ',';
        if (check(w, size + 2))
            abort();
        free(w);
    }
    return 0;
}

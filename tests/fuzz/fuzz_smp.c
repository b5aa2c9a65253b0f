/*
 * libFuzzer target for the consistency sampler's pure decisions (oc_smp)
 * and objcached --verify's sample-size argument (oc_verify_parse_sample).
 * The input is split at the first two NUL bytes into a cached value, a row's
 * JSON and a --sample argument: hostile cached bytes (garbage planted in
 * memcached, truncated or deep JSON, duplicate keys) and hostile arguments.
 *
 * Checked, besides ASan/UBSan on exactly-sized heap copies:
 * - oc_smp_agrees is symmetric where it should be: identical bytes always
 *   agree; an EMPTY cache always agrees; ABSENT agrees exactly with no row;
 * - the recheck never proves staleness for a cache that agrees, and always
 *   proves it for the same disagreeing item against the same row version;
 * - the sample parser accepts exactly the decimal strings 1..100000 and
 *   leaves its output alone otherwise.
 *
 *   bash scripts/fuzz.sh --target fuzz_smp --seconds 60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oc_smp.h"
#include "oc_verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *part(const uint8_t **p, const uint8_t *end, size_t *len)
{
    const uint8_t *z = memchr(*p, 0, (size_t)(end - *p));
    size_t n = z ? (size_t)(z - *p) : (size_t)(end - *p);
    char *s = malloc(n + 1);
    if (s == NULL)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *len = n;
    *p = z ? z + 1 : end;
    return s;
}

static int ref_sample(const char *s, uint32_t *v)
{
    size_t n = strlen(s), z = 0;
    if (n == 0 || strspn(s, "0123456789") != n)
        return 0;
    while (z + 1 < n && s[z] == '0')
        z++; /* leading zeros are allowed */
    if (n - z > 12)
        return 0;
    uint64_t x = 0;
    for (size_t i = z; i < n; i++)
        x = x * 10 + (uint64_t)(s[i] - '0');
    *v = (uint32_t)x;
    return x >= 1 && x <= OC_VERIFY_SAMPLE_MAX;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    size_t clen, rlen, alen;
    char *cval = part(&p, end, &clen);
    char *rjson = part(&p, end, &rlen);
    char *arg = part(&p, end, &alen);
    const char *vc = (size % 3 == 0) ? "v" : NULL;

    oc_smp_cache_t c = {.kind = OC_SMP_C_OBJECT, .ident = 7, .val = cval, .len = clen};
    oc_smp_row_t r = {.found = 1, .json = rjson, .len = rlen, .xmin = 5};
    oc_smp_row_t none = {0};
    oc_smp_cache_t same = {
        .kind = OC_SMP_C_OBJECT, .ident = 8, .val = rjson, .len = rlen};
    oc_smp_cache_t empty = {.kind = OC_SMP_C_EMPTY};
    oc_smp_cache_t absent = {.kind = OC_SMP_C_ABSENT};
    if (!oc_smp_agrees(vc, &same, &r) || !oc_smp_agrees(vc, &empty, &r) ||
        !oc_smp_agrees(vc, &empty, &none) || !oc_smp_agrees(vc, &absent, &none) ||
        oc_smp_agrees(vc, &absent, &r) || oc_smp_agrees(vc, &c, &none))
        abort();
    int agree = oc_smp_agrees(vc, &c, &r);
    if (agree != oc_smp_agrees(vc, &c, &r))
        abort(); /* deterministic */
    oc_smp_evidence_t ev;
    oc_smp_verdict_t v1 = oc_smp_first(vc, &c, &r, &ev);
    if (agree ? v1 != OC_SMP_AGREE : v1 != OC_SMP_SUSPECT)
        abort();
    if (!agree && oc_smp_again(vc, &ev, &c, &r) != OC_SMP_STALE)
        abort();

    uint32_t n = 4242, want = 0;
    char err[OC_ERRLEN];
    int ok = oc_verify_parse_sample(arg, &n, err) == OC_OK;
    if (ok != ref_sample(arg, &want) || (ok && n != want) || (!ok && n != 4242))
        abort();
    if (!ok && (memchr(err, '\0', sizeof(err)) == NULL || strchr(err, '\n')))
        abort();
    free(cval);
    free(rjson);
    free(arg);
    return 0;
}

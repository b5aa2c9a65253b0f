/*
 * libFuzzer target for oc_http: the /metrics listener's verdict on what a
 * client sent, from an exactly-sized heap copy (ASan sees any read past
 * it), with a limit taken from the input's first byte.
 *
 * Checked, besides ASan/UBSan:
 * - the verdict is one of the enum's, and oc_http_status gives it a code
 *   of 200, 400, 404, 405 or 431 and a non-empty reason;
 * - a verdict never depends on bytes past the head's end: the same head
 *   with anything appended gets the same verdict (a body is never read);
 * - MORE only while the input is under the limit, and a prefix of an input
 *   that got a final verdict other than TOO_LARGE is MORE or the same;
 * - METRICS only for a head whose first line starts with "GET " or
 *   "HEAD " (after empty lines), with head_only set for HEAD only.
 *
 *   bash scripts/fuzz.sh --target fuzz_http --seconds 60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oc_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static oc_http_verdict_t run(const uint8_t *data, size_t len, size_t max, int *head_only)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, data, len);
    oc_http_verdict_t v = oc_http_parse(copy, len, max, head_only);
    free(copy);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max = 16 + (size_t)data[0] * 64; /* 16 .. 16336 */
    data++, size--;
    int head_only = -1;
    oc_http_verdict_t v = run(data, size, max, &head_only);
    if (v < OC_HTTP_MORE || v > OC_HTTP_METRICS || (head_only != 0 && head_only != 1))
        abort();
    if (v == OC_HTTP_MORE) {
        if (size >= max)
            abort();
        return 0;
    }
    const char *reason = NULL;
    int code = oc_http_status(v, &reason);
    if (reason == NULL || reason[0] == '\0' ||
        (code != 200 && code != 400 && code != 404 && code != 405 && code != 431))
        abort();
    /* Appending bytes changes nothing once the verdict is final. */
    uint8_t *more = malloc(size + 7);
    if (more == NULL)
        abort();
    memcpy(more, data, size);
    memcpy(more + size, "xyz\r\n\r\n", 7);
    int h2 = -1;
    if (run(more, size + 7, max, &h2) != v || (v == OC_HTTP_METRICS && h2 != head_only))
        abort();
    free(more);
    /* A prefix: not yet decided, or the same verdict (TOO_LARGE may come
     * from the length alone, so only other verdicts are compared). */
    if (v != OC_HTTP_TOO_LARGE && size > 0) {
        int h3 = -1;
        oc_http_verdict_t p = run(data, size - 1, max, &h3);
        if (p != OC_HTTP_MORE && p != v)
            abort();
    }
    if (v == OC_HTTP_METRICS) {
        size_t i = 0;
        while (i < size && (data[i] == '\r' || data[i] == '\n'))
            i++;
        int get = size - i >= 4 && memcmp(data + i, "GET ", 4) == 0;
        int head = size - i >= 5 && memcmp(data + i, "HEAD ", 5) == 0;
        if ((!get && !head) || head_only != head)
            abort();
    }
    return 0;
}

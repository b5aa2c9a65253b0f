/*
 * libFuzzer target for objcache_parse: the first byte picks the reply kind
 * and a small reply cap, the rest is the reply. Each input is parsed whole
 * and then as two pieces, from exactly-sized heap copies, and the outcome
 * is checked for offsets that stay inside the input.
 *
 *   CC=clang cmake -S . -B build-fuzz -DOBJCACHE_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_objcache_parse
 *   build-fuzz/client/fuzz_objcache_parse -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "objcache_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fuzz_keys[] = {"User:1", "User:2", "User:1", "Post:9"};

static void fuzz_check(const objcache_parse_t *p, objcache_parse_result_t r, size_t len)
{
    if (r == OBJCACHE_PARSE_COMPLETE) {
        if (p->pos > len || p->msg_off + p->msg_len > len)
            abort();
        for (size_t i = 0; p->kind == OBJCACHE_REPLY_GET && i < p->nkeys; i++)
            if (p->vals[i].found && p->vals[i].off + p->vals[i].len + 2 > len)
                abort();
    } else if (r == OBJCACHE_PARSE_INCOMPLETE) {
        if (p->need <= len || p->need > p->max_reply)
            abort();
    }
}

static objcache_parse_result_t fuzz_feed(objcache_parse_t *p, const uint8_t *d, size_t n)
{
    char *copy = malloc(n > 0 ? n : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, d, n);
    objcache_parse_result_t r = objcache_parse_feed(p, copy, n);
    fuzz_check(p, r, n);
    free(copy);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    objcache_reply_kind_t kind = (objcache_reply_kind_t)(data[0] % 5);
    size_t max_reply = (data[0] & 0x80) ? 1024 : ((size_t)64 << 20);
    objcache_parse_value_t vals[4];
    objcache_parse_t whole, split;
    const uint8_t *reply = data + 1;
    size_t len = size - 1;
    objcache_parse_init(&whole, kind, fuzz_keys, 4, vals, max_reply);
    objcache_parse_result_t r = fuzz_feed(&whole, reply, len);
    objcache_parse_value_t vals2[4];
    objcache_parse_init(&split, kind, fuzz_keys, 4, vals2, max_reply);
    objcache_parse_result_t r2 = fuzz_feed(&split, reply, len / 2);
    if (r2 == OBJCACHE_PARSE_INCOMPLETE)
        r2 = fuzz_feed(&split, reply, len);
    if (r != r2)
        abort(); /* where the bytes are cut must not change the outcome */
    return 0;
}

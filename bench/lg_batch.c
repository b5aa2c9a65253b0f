/* lg_batch: see lg_batch.h. */
#include "lg_batch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg_opts.h"

#define LG_NO_SLOT   UINT32_MAX
#define LG_ID_DIGITS 20 /* UINT64_MAX has 20 digits */

size_t lg_u64_str(uint64_t v, char *out)
{
    char tmp[LG_ID_DIGITS];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

bool lg_parse_id(const char *s, size_t len, uint64_t *id)
{
    if (len == 0 || len > LG_ID_DIGITS)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *id = v;
    return true;
}

bool lg_batch_init(lg_batch_t *b, size_t cap, const char *prefix)
{
    memset(b, 0, sizeof(*b));
    size_t set_size = 16;
    while (set_size < 4 * cap)
        set_size *= 2;
    b->cap = cap;
    b->prefix_len = strlen(prefix);
    b->set_mask = set_size - 1;
    b->ids = calloc(cap, sizeof(*b->ids));
    b->keybuf = malloc(cap * LG_KEY_MAX);
    b->keys = calloc(cap, sizeof(*b->keys));
    b->key_lens = calloc(cap, sizeof(*b->key_lens));
    b->state = calloc(cap, sizeof(*b->state));
    b->todo = calloc(cap, sizeof(*b->todo));
    b->array = malloc(cap * (LG_ID_DIGITS + 1) + 3);
    b->set_ids = calloc(set_size, sizeof(*b->set_ids));
    b->set_slots = malloc(set_size * sizeof(*b->set_slots));
    if (!b->ids || !b->keybuf || !b->keys || !b->key_lens || !b->state || !b->todo ||
        !b->array || !b->set_ids || !b->set_slots) {
        lg_batch_free(b);
        return false;
    }
    /* The prefix is written once; a batch only writes the digits after it. */
    for (size_t i = 0; i < cap; i++) {
        memcpy(b->keybuf + i * LG_KEY_MAX, prefix, b->prefix_len);
        b->keys[i] = b->keybuf + i * LG_KEY_MAX;
    }
    lg_batch_clear(b);
    return true;
}

void lg_batch_free(lg_batch_t *b)
{
    free(b->ids);
    free(b->keybuf);
    free(b->keys);
    free(b->key_lens);
    free(b->state);
    free(b->todo);
    free(b->array);
    free(b->set_ids);
    free(b->set_slots);
    memset(b, 0, sizeof(*b));
}

void lg_batch_clear(lg_batch_t *b)
{
    b->n = 0;
    memset(b->set_slots, 0xff, (b->set_mask + 1) * sizeof(*b->set_slots));
}

static size_t set_home(const lg_batch_t *b, uint64_t id)
{
    /* Fibonacci hashing: consecutive ids spread over the table. */
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & b->set_mask;
}

long lg_batch_find(const lg_batch_t *b, uint64_t id)
{
    for (size_t i = set_home(b, id);; i = (i + 1) & b->set_mask) {
        if (b->set_slots[i] == LG_NO_SLOT)
            return -1;
        if (b->set_ids[i] == id)
            return (long)b->set_slots[i];
    }
}

bool lg_batch_add(lg_batch_t *b, uint64_t id)
{
    size_t i = set_home(b, id);
    for (; b->set_slots[i] != LG_NO_SLOT; i = (i + 1) & b->set_mask)
        if (b->set_ids[i] == id)
            return false;
    size_t slot = b->n++;
    b->set_ids[i] = id;
    b->set_slots[i] = (uint32_t)slot;
    b->ids[slot] = id;
    b->state[slot] = LG_SLOT_WANTED;
    char *key = b->keybuf + slot * LG_KEY_MAX;
    b->key_lens[slot] = b->prefix_len + lg_u64_str(id, key + b->prefix_len);
    return true;
}

long lg_batch_find_key(const lg_batch_t *b, const char *key, size_t len)
{
    uint64_t id;
    if (len <= b->prefix_len || memcmp(key, b->keys[0], b->prefix_len) != 0 ||
        !lg_parse_id(key + b->prefix_len, len - b->prefix_len, &id))
        return -1;
    return lg_batch_find(b, id);
}

bool lg_batch_value_ok(const lg_batch_t *b, size_t slot, const char *v, size_t len)
{
    static const char head[] = "{\"id\":";
    const size_t head_len = sizeof(head) - 1;
    /* The key already holds the id's digits after the prefix. */
    const char *digits = b->keys[slot] + b->prefix_len;
    size_t ndigits = b->key_lens[slot] - b->prefix_len;
    if (len < head_len + ndigits + 1 || memcmp(v, head, head_len) != 0 ||
        memcmp(v + head_len, digits, ndigits) != 0)
        return false;
    char after = v[head_len + ndigits];
    return after == ',' || after == '}';
}

void lg_batch_rewind(lg_batch_t *b)
{
    memset(b->state, LG_SLOT_WANTED, b->n * sizeof(*b->state));
}

size_t lg_batch_wanted(lg_batch_t *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->state[i] == LG_SLOT_WANTED)
            b->todo[n++] = i;
    return n;
}

const char *lg_batch_array(lg_batch_t *b, const size_t *slots, size_t n)
{
    char *p = b->array;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *p++ = ',';
        p += lg_u64_str(b->ids[slots[i]], p);
    }
    *p++ = '}';
    *p = '\0';
    return b->array;
}

void lg_tally_reset(lg_tally_t *t)
{
    t->hits = t->loaded = t->bad_values = t->pg_queries = 0;
    t->error = false;
    t->why[0] = '\0';
}

void lg_tally_fail(lg_tally_t *t, const char *fmt, ...)
{
    if (!t->error) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->why, sizeof(t->why), fmt, ap);
        va_end(ap);
    }
    t->error = true;
}

/*
 * lg_batch: one batch of K distinct ids, their memcached keys, and what
 * became of each (hit, loaded, still wanted); plus the tally that the
 * memcached and PostgreSQL steps add to.
 *
 * Everything is allocated once per thread by lg_batch_init (K slots) and
 * reused for every batch, so the hot loop does not allocate: a batch is
 * lg_batch_clear, then lg_batch_add per id.
 *
 * Ownership: the caller owns the lg_batch_t and frees it with
 * lg_batch_free. keys[i] points into the batch and is valid until the slot
 * is reused by the next batch. lg_batch_array returns a pointer into the
 * batch, valid until the next call.
 */
#ifndef LG_BATCH_H
#define LG_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum lg_slot_state {
    LG_SLOT_WANTED = 0, /* asked, no value yet */
    LG_SLOT_HIT,        /* found in memcached, value checked */
    LG_SLOT_LOADED,     /* read from PostgreSQL, value checked */
} lg_slot_state_t;

typedef struct lg_batch {
    size_t cap;        /* K: the most ids a batch holds */
    size_t n;          /* ids in this batch */
    size_t prefix_len; /* every key is prefix + decimal id */
    uint64_t *ids;     /* [cap] */
    char *keybuf;      /* [cap][LG_KEY_MAX], each key starting with the prefix */
    const char **keys; /* [cap] pointers into keybuf, for memcached_mget */
    size_t *key_lens;  /* [cap] */
    uint8_t *state;    /* [cap] lg_slot_state_t */
    size_t *todo;      /* [cap] scratch: the slots still wanted */
    char *array;       /* scratch: the text array literal "{1,2,3}" */
    /* id -> slot, open addressing over a power of two >= 4 * cap, so a
     * probe is short and a lookup of an id not in the batch ends fast. */
    uint64_t *set_ids;
    uint32_t *set_slots; /* LG_NO_SLOT where empty */
    size_t set_mask;
} lg_batch_t;

/* What a batch did; the worker adds it to its totals when it is measured. */
typedef struct lg_tally {
    uint64_t hits;       /* values found in memcached */
    uint64_t loaded;     /* rows read from PostgreSQL */
    uint64_t bad_values; /* values or rows that are not the asked id's row */
    uint64_t pg_queries;
    bool error;    /* a libmemcached or libpq call failed */
    char why[200]; /* the first failure, for the log */
} lg_tally_t;

void lg_tally_reset(lg_tally_t *t);
/* Marks the batch failed; the first reason is kept. */
void lg_tally_fail(lg_tally_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

bool lg_batch_init(lg_batch_t *b, size_t cap, const char *prefix);
void lg_batch_free(lg_batch_t *b);

void lg_batch_clear(lg_batch_t *b);
/* Appends id (and its key) unless it is already in the batch: returns
 * false for a duplicate. The batch must not be full. */
bool lg_batch_add(lg_batch_t *b, uint64_t id);
/* The slot of id, or -1. */
long lg_batch_find(const lg_batch_t *b, uint64_t id);
/* The slot whose key is key[0..len), or -1 (not our prefix, not an id, not
 * in this batch). */
long lg_batch_find_key(const lg_batch_t *b, const char *key, size_t len);
/* True when v[0..len) is the row of the slot's id: it starts with
 * {"id":<id>, (or is {"id":<id>} for a one-column table). */
bool lg_batch_value_ok(const lg_batch_t *b, size_t slot, const char *v, size_t len);
/* The same ids asked again: every slot is wanted again (keys, ids and the
 * id set are kept). */
void lg_batch_rewind(lg_batch_t *b);
/* Fills b->todo with the slots still wanted; returns their count. */
size_t lg_batch_wanted(lg_batch_t *b);
/* "{id,id,...}" of the given slots, NUL-terminated. */
const char *lg_batch_array(lg_batch_t *b, const size_t *slots, size_t n);

/* Writes v in decimal to out (at least 20 bytes, no NUL); returns the length. */
size_t lg_u64_str(uint64_t v, char *out);
/* Parses a whole decimal field s[0..len); false if it is not one. */
bool lg_parse_id(const char *s, size_t len, uint64_t *id);

#endif

/* Unit tests for oc_walbatch: pgoutput messages (built here, then decoded
 * by oc_pgoutput) turned into batches of keys and whole models per
 * committed transaction, with the LSN to confirm and the heartbeat's
 * instant; the map's rules (reload on a change of an unknown relation,
 * a renamed key column); bounded memory (a huge transaction goes whole). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "oc_walbatch.h"

/* ---- a tiny pgoutput writer ------------------------------------------------------ */

typedef struct msg {
    uint8_t b[4096];
    size_t n;
} msg_t;

static void u8(msg_t *m, uint8_t v)
{
    m->b[m->n++] = v;
}

static void u16(msg_t *m, uint16_t v)
{
    u8(m, (uint8_t)(v >> 8)), u8(m, (uint8_t)v);
}

static void u32(msg_t *m, uint32_t v)
{
    u16(m, (uint16_t)(v >> 16)), u16(m, (uint16_t)v);
}

static void u64(msg_t *m, uint64_t v)
{
    u32(m, (uint32_t)(v >> 32)), u32(m, (uint32_t)v);
}

static void cstr(msg_t *m, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(m->b + m->n, s, n);
    m->n += n;
}

/* Tuple data: "t:text", "n" (NULL) or "u" (unchanged TOAST) per column. */
static void tuple(msg_t *m, int ncols, const char *const *cols)
{
    u16(m, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        u8(m, (uint8_t)cols[i][0]);
        if (cols[i][0] == 't') {
            size_t len = strlen(cols[i] + 2);
            u32(m, (uint32_t)len);
            memcpy(m->b + m->n, cols[i] + 2, len);
            m->n += len;
        }
    }
}

static oc_walb_t *b;
static char err[OC_ERRLEN];

static oc_walb_res_t feed(const msg_t *m)
{
    oc_pgo_msg_t d;
    assert_int_equal(oc_pgo_decode(m->b, m->n, &d, err), OC_OK);
    return oc_walb_feed(b, &d, err);
}

static uint32_t xid_next; /* each begin() a new xid, from 100 (setup) */

static void begin(void)
{
    msg_t m = {0};
    u8(&m, 'B'), u64(&m, 100), u64(&m, 5000000), u32(&m, xid_next++);
    assert_int_equal(feed(&m), OC_WALB_OK);
}

static void commit(uint64_t end_lsn, int64_t ts)
{
    msg_t m = {0};
    u8(&m, 'C'), u8(&m, 0), u64(&m, end_lsn - 8), u64(&m, end_lsn), u64(&m, (uint64_t)ts);
    assert_int_equal(feed(&m), OC_WALB_OK);
}

/* Relation relid "public.name" with columns (id, name) or the given ones. */
static oc_walb_res_t relation(uint32_t relid, const char *name, const char *c0,
                              const char *c1)
{
    msg_t m = {0};
    u8(&m, 'R'), u32(&m, relid), cstr(&m, "public"), cstr(&m, name), u8(&m, 'd');
    u16(&m, 2);
    u8(&m, 1), cstr(&m, c0), u32(&m, 20), u32(&m, 0xffffffff);
    u8(&m, 0), cstr(&m, c1), u32(&m, 25), u32(&m, 0xffffffff);
    return feed(&m);
}

static oc_walb_res_t insert(uint32_t relid, const char *key)
{
    msg_t m = {0};
    const char *cols[2] = {key, "t:x"};
    u8(&m, 'I'), u32(&m, relid), u8(&m, 'N'), tuple(&m, 2, cols);
    return feed(&m);
}

static oc_walb_res_t update(uint32_t relid, const char *oldkey, const char *newkey)
{
    msg_t m = {0};
    u8(&m, 'U'), u32(&m, relid);
    if (oldkey) {
        const char *o[2] = {oldkey, "n"};
        u8(&m, 'K'), tuple(&m, 2, o);
    }
    const char *n[2] = {newkey, "t:y"};
    u8(&m, 'N'), tuple(&m, 2, n);
    return feed(&m);
}

static oc_walb_res_t delete_(uint32_t relid, const char *key)
{
    msg_t m = {0};
    const char *o[2] = {key, "n"};
    u8(&m, 'D'), u32(&m, relid), u8(&m, 'K'), tuple(&m, 2, o);
    return feed(&m);
}

/* A DELETE under REPLICA IDENTITY FULL: the whole old row ('O'). */
static oc_walb_res_t delete_full(uint32_t relid, const char *key)
{
    msg_t m = {0};
    const char *o[2] = {key, "t:x"};
    u8(&m, 'D'), u32(&m, relid), u8(&m, 'O'), tuple(&m, 2, o);
    return feed(&m);
}

static oc_walb_res_t truncate_(uint32_t relid)
{
    msg_t m = {0};
    u8(&m, 'T'), u32(&m, 1), u8(&m, 0), u32(&m, relid);
    return feed(&m);
}

static oc_walb_res_t message(const char *prefix, const char *content, int transactional)
{
    msg_t m = {0};
    u8(&m, 'M'), u8(&m, (uint8_t)transactional), u64(&m, 9), cstr(&m, prefix);
    u32(&m, (uint32_t)strlen(content));
    memcpy(m.b + m.n, content, strlen(content));
    m.n += strlen(content);
    return feed(&m);
}

#define TOKEN "0123456789abcdef0123456789abcdef"

static int setup(void **state)
{
    (void)state;
    b = oc_walb_new(1000);
    xid_next = 100;
    oc_walb_set_token(b, TOKEN);
    assert_int_equal(oc_walb_map_add(b, 16384, "User", "id"), OC_OK);
    assert_int_equal(oc_walb_map_add(b, 16384, "Person", "id"), OC_OK); /* two models */
    assert_int_equal(oc_walb_map_add(b, 16400, "Page", "slug"), OC_OK);
    assert_int_equal(oc_walb_map_add(b, 16500, NULL, NULL),
                     OC_OK); /* published, no model */
    assert_int_equal(relation(16384, "users", "id", "name"), OC_WALB_OK);
    assert_int_equal(relation(16400, "pages", "slug", "title"), OC_WALB_OK);
    assert_int_equal(relation(16500, "audit", "id", "what"), OC_WALB_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    oc_walb_free(b);
    return 0;
}

/* The (model, key) pairs of a batch as "Model:key" strings, joined. */
static const char *pairs(const oc_walb_batch_t *bt)
{
    static char out[4096];
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < bt->nkeys; i++)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s:%.*s", i ? " " : "",
                              bt->models[i], (int)bt->klens[i], bt->keys[i]);
    return out;
}

/* A row changed several times in a batch, in one transaction or several,
 * is one pair (deleted and appended once); the same key of another model,
 * or another key, is not merged. */
static void test_a_batch_holds_each_pair_once(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    assert_int_equal(insert(16384, "t:1"), OC_WALB_OK);
    assert_int_equal(update(16384, NULL, "t:1"), OC_WALB_OK);
    assert_int_equal(update(16400, NULL, "t:1"), OC_WALB_OK); /* Page:1 */
    assert_int_equal(update(16384, NULL, "t:12"), OC_WALB_OK);
    commit(0x2000, 800);
    begin();
    for (int i = 0; i < 50; i++)
        assert_int_equal(update(16384, NULL, "t:1"), OC_WALB_OK);
    assert_int_equal(delete_(16384, "t:12"), OC_WALB_OK);
    assert_int_equal(update(16400, "t:1", "t:2"), OC_WALB_OK); /* a key change */
    commit(0x2100, 801);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "User:1 Person:1 Page:1 User:12 Person:12 Page:2");
    assert_int_equal(bt.ntxn, 2);
    oc_walb_batch_free(&bt);
}

static void test_changes_become_keys(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    assert_int_equal(insert(16384, "t:1"), OC_WALB_OK);
    assert_int_equal(update(16384, NULL, "t:2"), OC_WALB_OK);
    assert_int_equal(update(16400, "t:home", "t:start"), OC_WALB_OK); /* key changed */
    assert_int_equal(delete_(16384, "t:3"), OC_WALB_OK);
    assert_int_equal(insert(16500, "t:99"), OC_WALB_OK); /* no model's: ignored */
    assert_false(oc_walb_ready(b));                      /* not committed yet */
    commit(0x1000, 777);
    begin(); /* another table's change only: nothing to wait for */
    assert_int_equal(insert(16500, "t:98"), OC_WALB_OK);
    commit(0x1000, 777);
    assert_true(oc_walb_ready(b));
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt),
                        "User:1 Person:1 User:2 Person:2 Page:start Page:home "
                        "User:3 Person:3");
    assert_int_equal(bt.nwhole, 0);
    assert_int_equal(bt.end_lsn, 0x1000);
    assert_int_equal(bt.commit_ts, 777);
    assert_int_equal(bt.first_commit_ts, 777);
    assert_int_equal(bt.ntxn, 2);
    assert_int_equal(bt.nxids, 1);
    assert_int_equal(bt.xids[0], 100);
    assert_string_equal(bt.caught_up_at, "");
    oc_walb_batch_free(&bt);
    assert_false(oc_walb_ready(b));
}

static void test_truncate_heartbeat_and_whole(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    assert_int_equal(truncate_(16400), OC_WALB_OK);
    commit(0x2000, 1);
    begin(); /* the reader's heartbeat, in its own transaction */
    assert_int_equal(message("objcached", TOKEN " 2026-12-03 15:00:00.123+00", 1),
                     OC_WALB_OK);
    assert_int_equal(message("objcached", TOKEN " not an instant", 1), OC_WALB_OK);
    assert_int_equal(message("other", TOKEN " 2026-01-01 00:00:00+00", 1), OC_WALB_OK);
    commit(0x3000, 2);
    /* a non-transactional message outside a transaction: ignored */
    assert_int_equal(message("objcached", TOKEN " 2030-01-01 00:00:00+00", 0),
                     OC_WALB_OK);
    begin(); /* a DELETE whose key is not in the replica identity: whole */
    assert_int_equal(delete_(16384, "n"), OC_WALB_OK);
    commit(0x4000, 3);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nkeys, 0);
    assert_int_equal(bt.nwhole, 3);
    assert_string_equal(bt.whole[0], "Page");
    assert_string_equal(bt.whole[1], "User");
    assert_string_equal(bt.whole[2], "Person");
    assert_string_equal(bt.caught_up_at, "2026-12-03 15:00:00.123+00");
    assert_int_equal(bt.end_lsn, 0x4000);
    assert_int_equal(bt.commit_ts, 3);       /* the newest, for the feed's rows */
    assert_int_equal(bt.first_commit_ts, 1); /* the oldest, for a requeue */
    assert_int_equal(bt.ntxn, 3);
    /* the xids whose visibility the deletes wait for: the heartbeat's
     * transaction touched no model */
    assert_int_equal(bt.nxids, 2);
    assert_int_equal(bt.xids[0], 100);
    assert_int_equal(bt.xids[1], 102);
    oc_walb_batch_free(&bt);
}

static void test_huge_transaction_goes_whole(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    char key[32];
    begin();
    for (int i = 0; i < 2500; i++) { /* over max_txn_keys (1000) */
        snprintf(key, sizeof(key), "t:%d", i);
        assert_int_equal(insert(16400, key), OC_WALB_OK);
    }
    assert_true(oc_walb_pending_keys(b) <= 1000); /* memory stays bounded */
    commit(0x5000, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nkeys, 0);
    assert_int_equal(bt.nwhole, 1);
    assert_string_equal(bt.whole[0], "Page");
    oc_walb_batch_free(&bt);
}

static void test_take_keeps_the_open_transaction(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    assert_int_equal(insert(16400, "t:a"), OC_WALB_OK);
    commit(0x6000, 1);
    begin();
    assert_int_equal(insert(16400, "t:b"), OC_WALB_OK);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK); /* mid-transaction */
    assert_string_equal(pairs(&bt), "Page:a");
    oc_walb_batch_free(&bt);
    assert_false(oc_walb_ready(b));
    assert_int_equal(insert(16400, "t:c"), OC_WALB_OK);
    commit(0x7000, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "Page:b Page:c");
    assert_int_equal(bt.end_lsn, 0x7000);
    oc_walb_batch_free(&bt);
    /* a restart drops an open transaction (it is sent again) */
    begin();
    assert_int_equal(insert(16400, "t:lost"), OC_WALB_OK);
    oc_walb_restart(b);
    assert_int_equal(oc_walb_pending_keys(b), 0);
}

/* A large batch's buffers are given back once it is taken; the open
 * transaction's keys move with them; small batches keep a floor. */
static void test_buffers_shrink_after_a_large_batch(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    char key[32];
    oc_walb_set_max_txn_keys(b, 200000);
    size_t idle = oc_walb_bytes(b);
    begin();
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "t:page-%d", i);
        assert_int_equal(insert(16400, key), OC_WALB_OK);
    }
    commit(0x8000, 1);
    size_t big = oc_walb_bytes(b);
    assert_true(big > 3u * 1024 * 1024); /* 100,000 keys: offsets, lengths, text */
    begin();
    for (int i = 0; i < 10; i++) { /* open: kept across the take */
        snprintf(key, sizeof(key), "t:open-%d", i);
        assert_int_equal(insert(16400, key), OC_WALB_OK);
    }
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nkeys, 100000);
    oc_walb_batch_free(&bt);
    size_t after = oc_walb_bytes(b);
    assert_true(after < 512u * 1024); /* the floors: 4,096 keys, 256 KiB of text */
    commit(0x9000, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "Page:open-0 Page:open-1 Page:open-2 Page:open-3 "
                                    "Page:open-4 Page:open-5 Page:open-6 Page:open-7 "
                                    "Page:open-8 Page:open-9");
    oc_walb_batch_free(&bt);
    /* small batches: the floor stays, nothing is given back and taken again */
    for (int round = 0; round < 3; round++) {
        begin();
        for (int i = 0; i < 3000; i++) {
            snprintf(key, sizeof(key), "t:%d", i);
            assert_int_equal(insert(16400, key), OC_WALB_OK);
        }
        commit(0xa000 + (uint64_t)round, 1);
        size_t before = oc_walb_bytes(b);
        assert_int_equal(oc_walb_take(b, &bt), OC_OK);
        oc_walb_batch_free(&bt);
        assert_int_equal(oc_walb_bytes(b), before);
    }
    assert_true(idle <= oc_walb_bytes(b));
}

static void test_map_rules(void **state)
{
    (void)state;
    /* a Relation alone of an unknown relation (a partition) is fine */
    assert_int_equal(relation(99999, "ev_2024", "id", "day"), OC_WALB_OK);
    /* a change of one is not: reload the map */
    begin();
    assert_int_equal(insert(99999, "t:1"), OC_WALB_RELOAD);
    assert_non_null(strstr(err, "not in the map"));
    /* a change outside a transaction is a broken stream */
    oc_walb_restart(b);
    assert_int_equal(relation(16384, "users", "id", "name"), OC_WALB_OK);
    assert_int_equal(insert(16384, "t:1"), OC_WALB_BAD);
}

/* A key column renamed: the stream may describe the table as it was before
 * or after the map was read, so a Relation without the map's column is no
 * reason to restart (a restart from the confirmed position would meet it
 * again, for ever): the relation's changes go whole, and once the
 * transaction committed the caller is told to read the map again. */
static void test_renamed_key_column_goes_whole_then_remaps(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    assert_int_equal(insert(16400, "t:home"), OC_WALB_OK); /* before the rename */
    assert_int_equal(relation(16400, "pages", "ident", "title"), OC_WALB_OK);
    assert_int_equal(insert(16400, "t:about"), OC_WALB_OK); /* no key column: whole */
    assert_int_equal(insert(16384, "t:5"), OC_WALB_OK);
    assert_false(oc_walb_remap(b)); /* not before the commit */
    commit(0x8000, 1);
    assert_true(oc_walb_remap(b));
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "Page:home User:5 Person:5");
    assert_int_equal(bt.nwhole, 1);
    assert_string_equal(bt.whole[0], "Page");
    assert_int_equal(bt.end_lsn, 0x8000);
    oc_walb_batch_free(&bt);
    assert_true(oc_walb_remap(b)); /* until the map is read again */
    /* a Relation naming the column again: keys again */
    begin();
    assert_int_equal(relation(16400, "pages", "slug", "title"), OC_WALB_OK);
    assert_int_equal(insert(16400, "t:contact"), OC_WALB_OK);
    commit(0x9000, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "Page:contact");
    assert_int_equal(bt.nwhole, 0);
    oc_walb_batch_free(&bt);
    oc_walb_map_clear(b);
    assert_false(oc_walb_remap(b));
}

/* The replica identity changed after the attach checked it: the key column
 * is no longer in it (no KEY flag), so an UPDATE could change the key and
 * send only the new one: the model goes whole. Inserts keep their keys. */
static void test_key_outside_the_replica_identity_goes_whole(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    /* pages described with its key column second, unflagged */
    assert_int_equal(relation(16400, "pages", "id", "slug"), OC_WALB_OK);
    assert_int_equal(insert(16400, "t:7"), OC_WALB_OK);
    commit(0xd000, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nwhole, 0);
    oc_walb_batch_free(&bt);
    begin();
    assert_int_equal(update(16400, NULL, "t:8"), OC_WALB_OK);
    commit(0xe000, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nwhole, 1);
    assert_string_equal(bt.whole[0], "Page");
    oc_walb_batch_free(&bt);
}

/* REPLICA IDENTITY FULL (what attach proposes for a nullable key column):
 * a DELETE's old row is whole, so a NULL key in it is a row that had none,
 * nothing cached: not a reason to invalidate the model whole. A NULL key
 * in a 'K' tuple still is (the key is not in the replica identity). */
static void test_a_null_key_in_a_full_old_row_is_no_key(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    assert_int_equal(delete_full(16400, "n"), OC_WALB_OK);
    assert_int_equal(delete_full(16400, "t:home"), OC_WALB_OK);
    commit(0xd100, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "Page:home");
    assert_int_equal(bt.nwhole, 0);
    oc_walb_batch_free(&bt);
    begin();
    assert_int_equal(delete_(16400, "n"), OC_WALB_OK);
    commit(0xd200, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nwhole, 1);
    assert_string_equal(bt.whole[0], "Page");
    oc_walb_batch_free(&bt);
}

/* An UPDATE of a row whose key is stored out of line: the new tuple says
 * 'u' (unchanged, not sent) and the old one, 'K' or 'O', has the key. The key
 * is the old one: no whole model (before, every such update made it whole).
 * A 'u' with no old key sent still goes whole. */
static void test_an_unchanged_toasted_key_is_the_old_one(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    msg_t m = {0};
    const char *o[2] = {"t:long", "n"}, *n[2] = {"u", "t:y"};
    const char *of[2] = {"t:long2", "t:x"};
    begin();
    u8(&m, 'U'), u32(&m, 16400), u8(&m, 'K'), tuple(&m, 2, o);
    u8(&m, 'N'), tuple(&m, 2, n);
    assert_int_equal(feed(&m), OC_WALB_OK);
    m.n = 0;
    u8(&m, 'U'), u32(&m, 16400), u8(&m, 'O'), tuple(&m, 2, of);
    u8(&m, 'N'), tuple(&m, 2, n);
    assert_int_equal(feed(&m), OC_WALB_OK);
    commit(0xd300, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "Page:long Page:long2");
    assert_int_equal(bt.nwhole, 0);
    oc_walb_batch_free(&bt);
    begin();
    assert_int_equal(update(16400, NULL, "u"), OC_WALB_OK);
    commit(0xd400, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nkeys, 0);
    assert_int_equal(bt.nwhole, 1);
    assert_string_equal(bt.whole[0], "Page");
    oc_walb_batch_free(&bt);
}

/* REPLICA IDENTITY USING INDEX on another unique column than the key: the
 * 'K' old tuple carries that column, the key column only as a NULL (pgoutput
 * sends every column, those outside the identity NULL). An UPDATE leaving an
 * out-of-line key as it was ('u') names no key then: its model goes whole,
 * never a key taken from the NULL. Under FULL ('O') the old row has it. */
static void test_an_unchanged_toasted_key_outside_the_identity_goes_whole(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    msg_t m = {0};
    /* pages described with its key column (slug) second, unflagged */
    const char *ok[2] = {"t:7", "n"}, *of[2] = {"t:7", "t:long"}, *n[2] = {"t:7", "u"};
    begin();
    assert_int_equal(relation(16400, "pages", "id", "slug"), OC_WALB_OK);
    u8(&m, 'U'), u32(&m, 16400), u8(&m, 'K'), tuple(&m, 2, ok);
    u8(&m, 'N'), tuple(&m, 2, n);
    assert_int_equal(feed(&m), OC_WALB_OK);
    commit(0xd500, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nkeys, 0);
    assert_int_equal(bt.nwhole, 1);
    assert_string_equal(bt.whole[0], "Page");
    oc_walb_batch_free(&bt);
    begin();
    m.n = 0;
    u8(&m, 'U'), u32(&m, 16400), u8(&m, 'O'), tuple(&m, 2, of);
    u8(&m, 'N'), tuple(&m, 2, n);
    assert_int_equal(feed(&m), OC_WALB_OK);
    commit(0xd600, 1);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(pairs(&bt), "Page:long");
    assert_int_equal(bt.nwhole, 0);
    oc_walb_batch_free(&bt);
}

/* The map says a model's key column was dropped (NULL): its changes go
 * whole, without asking for the map again (it would say the same). */
static void test_dropped_key_column_goes_whole_without_remapping(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    assert_int_equal(oc_walb_map_add(b, 16600, "Gone", NULL), OC_OK);
    begin();
    assert_int_equal(relation(16600, "gone", "name", "title"), OC_WALB_OK);
    assert_int_equal(insert(16600, "t:1"), OC_WALB_OK);
    commit(0xf000, 1);
    assert_false(oc_walb_remap(b));
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.nkeys, 0);
    assert_int_equal(bt.nwhole, 1);
    assert_string_equal(bt.whole[0], "Gone");
    oc_walb_batch_free(&bt);
}

/* Anyone may write an "objcached" message: one without our token (none,
 * another, a prefix of it, nothing after it) is no heartbeat of ours,
 * whatever instant it carries; the last of ours in a batch counts. */
static void test_only_our_token_makes_a_heartbeat(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    begin();
    assert_int_equal(message("objcached", TOKEN " 2026-12-03 15:00:00+00", 1),
                     OC_WALB_OK);
    commit(0x1000, 1);
    static const char *forged[] = {
        "2100-01-01 00:00:00+00",
        "fedcba9876543210fedcba9876543210 2100-01-01 00:00:00+00",
        "0123456789abcdef0123456789abcde 2100-01-01 00:00:00+00",
        TOKEN "2100-01-01 00:00:00+00",
        TOKEN " ",
        TOKEN,
    };
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        begin();
        assert_int_equal(message("objcached", forged[i], 1), OC_WALB_OK);
        commit(0x2000 + i, 2);
    }
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(bt.caught_up_at, "2026-12-03 15:00:00+00");
    oc_walb_batch_free(&bt);
    /* no token set: nothing is ours */
    oc_walb_t *none = oc_walb_new(1000);
    oc_walb_t *ours = b;
    b = none;
    begin();
    assert_int_equal(message("objcached", TOKEN " 2026-12-03 15:00:00+00", 1),
                     OC_WALB_OK);
    commit(0x3000, 3);
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_string_equal(bt.caught_up_at, "");
    oc_walb_batch_free(&bt);
    oc_walb_free(none);
    b = ours;
}

/* attach/detach say the models changed with a transactional message. */
static void test_map_message_asks_for_the_map_again(void **state)
{
    (void)state;
    oc_walb_batch_t bt;
    /* not transactional, or outside a transaction: ignored */
    assert_int_equal(message(OC_WALB_MAP_PREFIX, "", 0), OC_WALB_OK);
    begin();
    assert_int_equal(message(OC_WALB_MAP_PREFIX, "", 0), OC_WALB_OK);
    assert_int_equal(message("objcached-mapx", "", 1), OC_WALB_OK); /* another prefix */
    commit(0xa000, 1);
    assert_false(oc_walb_remap(b));
    /* a transaction the restart drops does not count */
    begin();
    assert_int_equal(message(OC_WALB_MAP_PREFIX, "", 1), OC_WALB_OK);
    oc_walb_restart(b);
    begin();
    commit(0xb000, 1);
    assert_false(oc_walb_remap(b));
    begin();
    assert_int_equal(relation(16384, "users", "id", "name"), OC_WALB_OK); /* sent again */
    assert_int_equal(message(OC_WALB_MAP_PREFIX, "", 1), OC_WALB_OK);
    assert_int_equal(insert(16384, "t:7"), OC_WALB_OK);
    commit(0xc000, 1);
    assert_true(oc_walb_remap(b));
    assert_int_equal(oc_walb_take(b, &bt), OC_OK);
    assert_int_equal(bt.end_lsn, 0xc000);
    oc_walb_batch_free(&bt);
}

/* Which of a batch's xids a snapshot does not see yet: in its running
 * list, or at or past its xmax; compared modulo 2^32 (the snapshot's are
 * 64-bit, the batch's 32-bit). */
static void test_running(void **state)
{
    (void)state;
    const uint32_t x[] = {95, 100, 104, 105, 110};
    /* 100 and 104 running; 105 and 110 at or past xmax 105; 95 visible */
    assert_int_equal(oc_walb_running("90:105:100,104", x, 5), 4);
    assert_int_equal(oc_walb_running("90:105:104,100,", x, 2), 1);
    assert_int_equal(oc_walb_running("111:111:", x, 5), 0); /* all done */
    assert_int_equal(oc_walb_running("111:111:", x, 0), 0);
    /* 64-bit xids in epoch 3: 3 * 2^32 + 100 is 100 modulo 2^32 */
    assert_int_equal(oc_walb_running("12884901978:12884901993:12884901988", x, 5), 3);
    /* a batch's xid just below the wrap, xmax just past it: visible */
    const uint32_t w[] = {4294967290u, 2};
    assert_int_equal(oc_walb_running("4294967200:4294967300:", w, 1), 0);
    assert_int_equal(oc_walb_running("4294967200:4294967300:", w + 1, 1), 0);
    assert_int_equal(oc_walb_running("4294967200:4294967298:", w + 1, 1), 1);
    /* a long running list (sorted and searched) */
    char big[16384];
    size_t at = (size_t)snprintf(big, sizeof(big), "1000:3000:");
    for (unsigned i = 2999; i >= 1001 && at < sizeof(big) - 16; i -= 2)
        at += (size_t)snprintf(big + at, sizeof(big) - at, "%u,", i);
    const uint32_t odd[] = {1001, 1002, 2999, 3000};
    assert_int_equal(oc_walb_running(big, odd, 4), 3);
    /* not a snapshot: -1 */
    assert_int_equal(oc_walb_running("", x, 5), -1);
    assert_int_equal(oc_walb_running("90", x, 5), -1);
    assert_int_equal(oc_walb_running("90:105", x, 5), -1);
    assert_int_equal(oc_walb_running("90:x:", x, 5), -1);
    assert_int_equal(oc_walb_running("90:105:100;104", x, 5), -1);
    assert_int_equal(oc_walb_running("90:105:,", x, 5), -1);
    assert_int_equal(oc_walb_running(":105:", x, 5), -1);
    assert_int_equal(oc_walb_running("90:105:99999999999999999999999", x, 5), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_running),
        cmocka_unit_test_setup_teardown(test_changes_become_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_batch_holds_each_pair_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_truncate_heartbeat_and_whole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_huge_transaction_goes_whole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_take_keeps_the_open_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffers_shrink_after_a_large_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_renamed_key_column_goes_whole_then_remaps,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_our_token_makes_a_heartbeat, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_message_asks_for_the_map_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_unchanged_toasted_key_is_the_old_one,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_unchanged_toasted_key_outside_the_identity_goes_whole, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_null_key_in_a_full_old_row_is_no_key,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_outside_the_replica_identity_goes_whole,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_dropped_key_column_goes_whole_without_remapping, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

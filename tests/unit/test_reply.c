/* Unit tests for oc_reply: the bytes of every reply, classic, meta and
 * binary, from typed results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "oc_binproto.h"
#include "oc_proto.h"
#include "oc_reply.h"

static char out_text[4096];

static const char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    assert_true(n < sizeof(out_text));
    evbuffer_remove(b, out_text, n);
    out_text[n] = '\0';
    return out_text;
}

static oc_get_item_t item(const char *key, oc_get_state_t st, const char *data,
                          uint64_t cas)
{
    return (oc_get_item_t){.key = key,
                           .klen = strlen(key),
                           .state = st,
                           .data = data,
                           .len = data ? strlen(data) : 0,
                           .cas = cas};
}

static void test_values(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_get_item_t items[] = {item("User:1", OC_GET_FOUND, "{\"id\":1}", 17),
                             item("User:2", OC_GET_ABSENT, NULL, 0),
                             item("User:01", OC_GET_FOUND, "{\"id\":1}", 17)};
    oc_get_result_t r = {3, items, NULL, 0};
    oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC};
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_OK);
    assert_string_equal(drain(b), "VALUE User:1 0 8\r\n{\"id\":1}\r\n"
                                  "VALUE User:01 0 8\r\n{\"id\":1}\r\nEND\r\n");
    f.gets = 1;
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_OK);
    assert_string_equal(drain(b), "VALUE User:1 0 8 17\r\n{\"id\":1}\r\n"
                                  "VALUE User:01 0 8 17\r\n{\"id\":1}\r\nEND\r\n");
    /* nothing found */
    oc_get_result_t none = {1, &items[1], NULL, 0};
    assert_int_equal(oc_reply_get(b, &none, &f, 1 << 20), OC_REPLY_OK);
    assert_string_equal(drain(b), "END\r\n");
    /* an error fails the whole command */
    items[1].state = OC_GET_ERROR;
    r.err = "database unavailable: x";
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_SERVER_ERROR);
    assert_string_equal(drain(b),
                        "SERVER_ERROR load failed: database unavailable: x\r\n");
    evbuffer_free(b);
}

static void test_reply_too_large(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_get_item_t items[] = {item("User:1", OC_GET_FOUND, "0123456789", 0)};
    oc_get_result_t r = {1, items, NULL, 0};
    oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC};
    assert_int_equal(oc_reply_get(b, &r, &f, 40), OC_REPLY_SERVER_ERROR);
    assert_string_equal(drain(b), "SERVER_ERROR reply too large (77 bytes, max 40)\r\n");
    evbuffer_free(b);
}

static void expect_pkt(struct evbuffer *b, uint8_t opcode, uint16_t status,
                       uint32_t opaque, uint64_t cas, const char *key, const char *value);

/* memcached's values passed max_reply (oc_req): "reply too large", not a
 * load's failure; in a binary run each get has its own message. */
static void test_values_too_large(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_get_item_t items[] = {item("User:1", OC_GET_FOUND, "{}", 0),
                             item("User:2", OC_GET_TOO_LARGE, NULL, 0),
                             item("User:3", OC_GET_ERROR, NULL, 0)};
    oc_get_result_t r = {3, items, "x", 1048576};
    oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC};
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_SERVER_ERROR);
    assert_string_equal(drain(b), "SERVER_ERROR reply too large (the values read from "
                                  "memcached passed max_reply, 1048576 bytes)\r\n");
    oc_reply_bin_t cmds[] = {
        {OC_BIN_OP_GETQ, 1}, {OC_BIN_OP_GETQ, 2}, {OC_BIN_OP_GETQ, 3}};
    oc_reply_fmt_t fb = {.style = OC_STYLE_BINARY, .bin = cmds};
    assert_int_equal(oc_reply_get(b, &r, &fb, 1 << 20), OC_REPLY_SERVER_ERROR);
    expect_pkt(b, OC_BIN_OP_GETQ, 0, 1, 0, "", "{}");
    expect_pkt(b, OC_BIN_OP_GETQ, OC_BIN_EINTERNAL, 2, 0, "",
               "reply too large (the values read from memcached passed max_reply, "
               "1048576 bytes)");
    expect_pkt(b, OC_BIN_OP_GETQ, OC_BIN_EINTERNAL, 3, 0, "", "load failed: x");
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void test_meta_get(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_get_item_t it = item("User:1", OC_GET_FOUND, "{}", 5);
    oc_get_result_t r = {1, &it, NULL, 0};
    oc_reply_fmt_t f = {.style = OC_STYLE_META,
                        .meta_flags = OC_META_V | OC_META_F | OC_META_S | OC_META_C |
                                      OC_META_T | OC_META_K | OC_META_O,
                        .opaque = "abc",
                        .key = "User:1",
                        .klen = 6};
    oc_reply_get(b, &r, &f, 1 << 20);
    assert_string_equal(drain(b), "VA 2 f0 s2 c5 t-1 kUser:1 Oabc\r\n{}\r\n");
    f.meta_flags = OC_META_K | OC_META_B;
    f.key = "VXNlcjox";
    f.klen = 8;
    oc_reply_get(b, &r, &f, 1 << 20);
    assert_string_equal(drain(b), "HD kVXNlcjox b\r\n");
    f.meta_flags = OC_META_N | OC_META_S; /* where the value came from */
    oc_reply_get(b, &r, &f, 1 << 20);
    assert_string_equal(drain(b), "HD s2 n0\r\n");
    it.from_near = 1;
    oc_reply_get(b, &r, &f, 1 << 20);
    assert_string_equal(drain(b), "HD s2 n1\r\n");
    f.meta_flags = OC_META_K | OC_META_B;
    it.state = OC_GET_ABSENT;
    oc_reply_get(b, &r, &f, 1 << 20);
    assert_string_equal(drain(b), "EN kVXNlcjox b\r\n"); /* as memcached: k, O */
    f.meta_flags |= OC_META_Q;                           /* quiet: no EN */
    oc_reply_get(b, &r, &f, 1 << 20);
    assert_string_equal(drain(b), "");
    evbuffer_free(b);
}

static void test_writes(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC};
    oc_reply_write(b, OC_WRITE_STORED, NULL, &f);
    oc_reply_write(b, OC_WRITE_DELETED, NULL, &f);
    oc_reply_write(b, OC_WRITE_NOT_STORED, NULL, &f);
    assert_string_equal(drain(b), "STORED\r\nDELETED\r\nNOT_STORED\r\n");
    assert_int_equal(oc_reply_write(b, OC_WRITE_FAILED, "memcached x: down", &f),
                     OC_REPLY_SERVER_ERROR);
    assert_string_equal(drain(b), "SERVER_ERROR memcached x: down\r\n");
    /* noreply: success and NOT_STORED are silent, errors are not */
    f.noreply = 1;
    oc_reply_write(b, OC_WRITE_STORED, NULL, &f);
    oc_reply_write(b, OC_WRITE_NOT_STORED, NULL, &f);
    oc_reply_write(b, OC_WRITE_FAILED, "", &f);
    assert_string_equal(drain(b), "SERVER_ERROR write failed\r\n");
    /* meta: HD / NS with k and O; q silences HD only */
    oc_reply_fmt_t m = {.style = OC_STYLE_META,
                        .meta_flags = OC_META_K | OC_META_O,
                        .opaque = "7",
                        .key = "User:1",
                        .klen = 6};
    oc_reply_write(b, OC_WRITE_STORED, NULL, &m);
    oc_reply_write(b, OC_WRITE_NOT_STORED, NULL, &m);
    m.noreply = 1;
    oc_reply_write(b, OC_WRITE_DELETED, NULL, &m);
    oc_reply_write(b, OC_WRITE_NOT_STORED, NULL, &m);
    assert_string_equal(drain(b), "HD kUser:1 O7\r\nNS kUser:1 O7\r\nNS kUser:1 O7\r\n");
    evbuffer_free(b);
}

static void test_errors(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(oc_reply_client_error(b, "bad"), OC_REPLY_CLIENT_ERROR);
    assert_int_equal(oc_reply_server_error(b, "oom"), OC_REPLY_SERVER_ERROR);
    assert_int_equal(oc_reply_error(b), OC_REPLY_CLIENT_ERROR);
    assert_int_equal(oc_reply_text(b, "VERSION 1"), OC_REPLY_OK);
    assert_string_equal(drain(b),
                        "CLIENT_ERROR bad\r\nSERVER_ERROR oom\r\nERROR\r\nVERSION 1\r\n");
    evbuffer_free(b);
}

/* ---- binary ---------------------------------------------------------------- */

/* One packet taken off the front of b: its header and a copy of its body
 * (extras, key, value in turn), NUL-terminated. */
typedef struct pkt {
    oc_bin_res_t h;
    char body[65536];
    const char *key, *value;
    size_t vlen;
} pkt_t;

static pkt_t pkt;

static const pkt_t *next_pkt(struct evbuffer *b)
{
    uint8_t hdr[OC_BIN_HDR_LEN];
    assert_int_equal(evbuffer_remove(b, hdr, sizeof(hdr)), OC_BIN_HDR_LEN);
    assert_int_equal(oc_bin_parse_response(hdr, &pkt.h, NULL), OC_OK);
    assert_int_equal(pkt.h.datatype, 0);
    assert_true(pkt.h.bodylen < sizeof(pkt.body));
    assert_int_equal(evbuffer_remove(b, pkt.body, pkt.h.bodylen), (int)pkt.h.bodylen);
    pkt.body[pkt.h.bodylen] = '\0';
    pkt.key = pkt.body + pkt.h.extlen;
    pkt.value = pkt.key + pkt.h.keylen;
    pkt.vlen = pkt.h.bodylen - pkt.h.extlen - pkt.h.keylen;
    return &pkt;
}

static void expect_pkt(struct evbuffer *b, uint8_t opcode, uint16_t status,
                       uint32_t opaque, uint64_t cas, const char *key, const char *value)
{
    const pkt_t *p = next_pkt(b);
    assert_int_equal(p->h.opcode, opcode);
    assert_int_equal(p->h.status, status);
    assert_int_equal(p->h.opaque, opaque);
    assert_int_equal(p->h.cas, cas);
    assert_int_equal(p->h.keylen, strlen(key));
    assert_memory_equal(p->key, key, strlen(key));
    assert_int_equal(p->vlen, strlen(value));
    assert_memory_equal(p->value, value, p->vlen);
    /* a hit has 4 bytes of flags, 0; nothing else has extras */
    if (status == 0 && (opcode == OC_BIN_OP_GET || opcode == OC_BIN_OP_GETQ ||
                        opcode == OC_BIN_OP_GETK || opcode == OC_BIN_OP_GETKQ)) {
        assert_int_equal(p->h.extlen, 4);
        assert_int_equal(oc_bin_get_u32((const uint8_t *)p->body), 0);
    } else {
        assert_int_equal(p->h.extlen, 0);
    }
}

static void test_binary_get(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_get_item_t items[] = {
        item("User:1", OC_GET_FOUND, "{\"id\":1}", 17),
        item("User:2", OC_GET_ABSENT, NULL, 0),
        item("User:3", OC_GET_ABSENT, NULL, 0),
        item("User:4", OC_GET_ABSENT, NULL, 0),
        item("User:05", OC_GET_FOUND, "{\"id\":5}", 0),
        item("User:6", OC_GET_ERROR, NULL, 0),
        item("User:1", OC_GET_FOUND, "{\"id\":1}", 17),
    };
    oc_reply_bin_t cmds[] = {{OC_BIN_OP_GET, 1},   {OC_BIN_OP_GETQ, 2},
                             {OC_BIN_OP_GETKQ, 3}, {OC_BIN_OP_GETK, 4},
                             {OC_BIN_OP_GETKQ, 5}, {OC_BIN_OP_GETQ, 6},
                             {OC_BIN_OP_GETQ, 7}};
    oc_get_result_t r = {7, items, "database unavailable: x", 0};
    oc_reply_fmt_t f = {.style = OC_STYLE_BINARY, .bin = cmds};
    /* max_reply does not apply to binary packets */
    assert_int_equal(oc_reply_get(b, &r, &f, 1), OC_REPLY_SERVER_ERROR);
    expect_pkt(b, OC_BIN_OP_GET, 0, 1, 17, "", "{\"id\":1}");
    /* quiet misses: nothing; GETK's miss echoes the key */
    expect_pkt(b, OC_BIN_OP_GETK, OC_BIN_KEY_ENOENT, 4, 0, "User:4", "");
    expect_pkt(b, OC_BIN_OP_GETKQ, 0, 5, 0, "User:05", "{\"id\":5}");
    /* a failed load: answered even to a quiet get */
    expect_pkt(b, OC_BIN_OP_GETQ, OC_BIN_EINTERNAL, 6, 0, "",
               "load failed: database unavailable: x");
    expect_pkt(b, OC_BIN_OP_GETQ, 0, 7, 17, "", "{\"id\":1}");
    assert_int_equal(evbuffer_get_length(b), 0);
    /* a loud miss without the key */
    oc_get_result_t one = {1, &items[1], NULL, 0};
    cmds[1].opcode = OC_BIN_OP_GET;
    assert_int_equal(oc_reply_get(b, &one, &f, 1), OC_REPLY_OK);
    expect_pkt(b, OC_BIN_OP_GET, OC_BIN_KEY_ENOENT, 1, 0, "", "Not found");
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static size_t unrefs;

static void count_unref(const void *data, size_t len, void *arg)
{
    (void)data;
    assert_int_equal(len, OC_REPLY_REF_MIN);
    assert_ptr_equal(arg, &unrefs);
    unrefs++;
}

static void test_binary_get_by_reference(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    char *big = malloc(OC_REPLY_REF_MIN + 1);
    memset(big, 'x', OC_REPLY_REF_MIN);
    big[OC_REPLY_REF_MIN] = '\0';
    oc_get_item_t items[] = {item("User:1", OC_GET_FOUND, big, 3),
                             item("User:2", OC_GET_FOUND, "{}", 4),
                             item("User:1", OC_GET_FOUND, big, 3)};
    oc_reply_bin_t cmds[] = {
        {OC_BIN_OP_GETKQ, 1}, {OC_BIN_OP_GET, 2}, {OC_BIN_OP_GETQ, 3}};
    oc_get_result_t r = {3, items, NULL, 0};
    size_t refs = 0;
    unrefs = 0;
    oc_reply_fmt_t f = {.style = OC_STYLE_BINARY,
                        .bin = cmds,
                        .unref = count_unref,
                        .unref_arg = &unrefs,
                        .refs = &refs};
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_OK);
    assert_int_equal(refs, 2);
    assert_int_equal(unrefs, 0);
    /* the bytes are the same as copied ones */
    expect_pkt(b, OC_BIN_OP_GETKQ, 0, 1, 3, "User:1", big);
    expect_pkt(b, OC_BIN_OP_GET, 0, 2, 4, "", "{}");
    expect_pkt(b, OC_BIN_OP_GETQ, 0, 3, 3, "", big);
    assert_int_equal(unrefs, 2); /* the output is done with both */
    /* without unref: copied */
    f.unref = NULL;
    refs = 0;
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_OK);
    assert_int_equal(refs, 0);
    expect_pkt(b, OC_BIN_OP_GETKQ, 0, 1, 3, "User:1", big);
    expect_pkt(b, OC_BIN_OP_GET, 0, 2, 4, "", "{}");
    expect_pkt(b, OC_BIN_OP_GETQ, 0, 3, 3, "", big);
    assert_int_equal(unrefs, 2);
    free(big);
    evbuffer_free(b);
}

/* The text and meta replies send large values by reference too, byte for
 * byte what a copy sends, with their \r\n after them. */
static char *reply_text(const oc_get_result_t *r, oc_reply_fmt_t *f)
{
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(oc_reply_get(b, r, f, 1 << 20), OC_REPLY_OK);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_int_equal(evbuffer_remove(b, s, n), (int)n);
    s[n] = '\0';
    evbuffer_free(b); /* done with what it referred to */
    return s;
}

static void test_values_by_reference(void **state)
{
    (void)state;
    char *big = malloc(OC_REPLY_REF_MIN + 1), *big2 = malloc(OC_REPLY_REF_MIN + 1);
    memset(big, 'x', OC_REPLY_REF_MIN);
    memset(big2, 'y', OC_REPLY_REF_MIN);
    big[OC_REPLY_REF_MIN] = big2[OC_REPLY_REF_MIN] = '\0';
    oc_get_item_t items[] = {
        item("User:1", OC_GET_FOUND, big, 3), item("User:2", OC_GET_FOUND, "{}", 4),
        item("User:3", OC_GET_ABSENT, NULL, 0), item("User:4", OC_GET_FOUND, big2, 5)};
    /* every mix of copied and referenced values, last or not, first or not */
    size_t shapes[][2] = {{0, 4}, {1, 4}, {3, 4}, {0, 1}, {1, 3}, {2, 4}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        for (int gets = 0; gets < 2; gets++) {
            oc_get_result_t r = {shapes[s][1] - shapes[s][0], &items[shapes[s][0]], NULL,
                                 0};
            size_t refs = 0;
            unrefs = 0;
            oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC, .gets = gets};
            char *copied = reply_text(&r, &f);
            assert_int_equal(unrefs, 0);
            f.unref = count_unref, f.unref_arg = &unrefs, f.refs = &refs;
            char *referenced = reply_text(&r, &f);
            assert_string_equal(referenced, copied);
            size_t nbig = 0;
            for (size_t i = 0; i < r.n; i++)
                nbig += r.items[i].len == OC_REPLY_REF_MIN;
            assert_int_equal(refs, nbig);
            assert_int_equal(unrefs, nbig);
            free(copied);
            free(referenced);
        }
    }
    /* mg ... v: the value by reference, then \r\n */
    oc_get_result_t one = {1, &items[0], NULL, 0};
    size_t refs = 0;
    unrefs = 0;
    oc_reply_fmt_t f = {.style = OC_STYLE_META, .meta_flags = OC_META_V | OC_META_C};
    char *copied = reply_text(&one, &f);
    f.unref = count_unref, f.unref_arg = &unrefs, f.refs = &refs;
    char *referenced = reply_text(&one, &f);
    assert_string_equal(referenced, copied);
    assert_int_equal(strncmp(copied, "VA 16384 c3\r\nxxx", 16), 0);
    assert_int_equal(refs, 1);
    assert_int_equal(unrefs, 1);
    free(copied);
    free(referenced);
    free(big);
    free(big2);
}

/* A value that cannot be added (out of memory; oc_gate's reply_ref) after
 * part of the reply was written cuts it short: OC_REPLY_BROKEN, and the
 * connection must close (a text reply has no way to say so in band). */
static void test_values_cut_short(void **state)
{
    (void)state;
    char *big = malloc(OC_REPLY_REF_MIN + 1);
    memset(big, 'x', OC_REPLY_REF_MIN);
    big[OC_REPLY_REF_MIN] = '\0';
    oc_get_item_t items[] = {item("User:2", OC_GET_FOUND, "{}", 4),
                             item("User:1", OC_GET_FOUND, big, 3),
                             item("User:3", OC_GET_FOUND, "{}", 5)};
    oc_get_result_t r = {3, items, NULL, 0};
    size_t refs = 0;
    unrefs = 0;
    oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC,
                        .unref = count_unref,
                        .unref_arg = &unrefs,
                        .refs = &refs,
                        .fault_ref = 1};
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_BROKEN);
    assert_string_equal(drain(b), "VALUE User:2 0 2\r\n{}\r\nVALUE User:1 0 16384\r\n");
    assert_int_equal(refs, 0);
    /* mg ... v: the VA line without its data */
    oc_get_result_t one = {1, &items[1], NULL, 0};
    f.style = OC_STYLE_META;
    f.meta_flags = OC_META_V;
    assert_int_equal(oc_reply_get(b, &one, &f, 1 << 20), OC_REPLY_BROKEN);
    assert_string_equal(drain(b), "VA 16384\r\n");
    f.style = OC_STYLE_BINARY; /* the same for binary packets */
    oc_reply_bin_t cmds[] = {{OC_BIN_OP_GET, 1}, {OC_BIN_OP_GET, 2}, {OC_BIN_OP_GET, 3}};
    f.bin = cmds;
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_BROKEN);
    assert_int_equal(refs, 0);
    evbuffer_free(b);
    assert_int_equal(unrefs, 0);
    free(big);
}

static void test_binary_writes(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_reply_bin_t cmd = {OC_BIN_OP_SET, 9};
    oc_reply_fmt_t f = {.style = OC_STYLE_BINARY, .bin = &cmd};
    assert_int_equal(oc_reply_write(b, OC_WRITE_STORED, NULL, &f), OC_REPLY_OK);
    expect_pkt(b, OC_BIN_OP_SET, 0, 9, 0, "", "");
    assert_int_equal(oc_reply_write(b, OC_WRITE_NOT_STORED, NULL, &f), OC_REPLY_OK);
    expect_pkt(b, OC_BIN_OP_SET, OC_BIN_NOT_STORED, 9, 0, "", "Not stored.");
    assert_int_equal(oc_reply_write(b, OC_WRITE_FAILED, "memcached x: down", &f),
                     OC_REPLY_SERVER_ERROR);
    expect_pkt(b, OC_BIN_OP_SET, OC_BIN_EINTERNAL, 9, 0, "", "memcached x: down");
    /* quiet: success is silent, the rest is not */
    cmd.opcode = OC_BIN_OP_SETQ;
    oc_reply_write(b, OC_WRITE_STORED, NULL, &f);
    oc_reply_write(b, OC_WRITE_NOT_STORED, NULL, &f);
    expect_pkt(b, OC_BIN_OP_SETQ, OC_BIN_NOT_STORED, 9, 0, "", "Not stored.");
    cmd.opcode = OC_BIN_OP_DELETEQ;
    oc_reply_write(b, OC_WRITE_DELETED, NULL, &f);
    oc_reply_write(b, OC_WRITE_FAILED, NULL, &f);
    expect_pkt(b, OC_BIN_OP_DELETEQ, OC_BIN_EINTERNAL, 9, 0, "", "write failed");
    cmd.opcode = OC_BIN_OP_DELETE;
    oc_reply_write(b, OC_WRITE_DELETED, NULL, &f);
    expect_pkt(b, OC_BIN_OP_DELETE, 0, 9, 0, "", "");
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void test_binary_status_and_kinds(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_reply_bin_t c = {OC_BIN_OP_NOOP, 0xdeadbeef};
    assert_int_equal(oc_reply_bin_status(b, &c, 0, NULL), OC_REPLY_OK);
    expect_pkt(b, OC_BIN_OP_NOOP, 0, 0xdeadbeef, 0, "", "");
    c.opcode = OC_BIN_OP_GET;
    assert_int_equal(oc_reply_bin_status(b, &c, OC_BIN_EINVAL, "unknown model: X:1"),
                     OC_REPLY_CLIENT_ERROR);
    expect_pkt(b, OC_BIN_OP_GET, OC_BIN_EINVAL, 0xdeadbeef, 0, "", "unknown model: X:1");
    c.opcode = 0x99;
    assert_int_equal(oc_reply_bin_status(b, &c, OC_BIN_UNKNOWN_COMMAND, NULL),
                     OC_REPLY_CLIENT_ERROR);
    expect_pkt(b, 0x99, OC_BIN_UNKNOWN_COMMAND, 0xdeadbeef, 0, "", "Unknown command");
    /* the quiet rules: a quiet get's miss and a quiet quit's success */
    c.opcode = OC_BIN_OP_GETQ;
    assert_int_equal(oc_reply_bin_status(b, &c, OC_BIN_KEY_ENOENT, NULL), OC_REPLY_OK);
    c.opcode = OC_BIN_OP_QUITQ;
    assert_int_equal(oc_reply_bin_status(b, &c, 0, NULL), OC_REPLY_OK);
    assert_int_equal(evbuffer_get_length(b), 0);
    /* what each status counts as */
    assert_int_equal(oc_reply_bin_kind(OC_BIN_SUCCESS), OC_REPLY_OK);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_KEY_ENOENT), OC_REPLY_OK);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_NOT_STORED), OC_REPLY_OK);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_EINVAL), OC_REPLY_CLIENT_ERROR);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_UNKNOWN_COMMAND), OC_REPLY_CLIENT_ERROR);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_E2BIG), OC_REPLY_SERVER_ERROR);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_NOT_SUPPORTED), OC_REPLY_SERVER_ERROR);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_EINTERNAL), OC_REPLY_SERVER_ERROR);
    assert_int_equal(oc_reply_bin_kind(OC_BIN_ENOMEM), OC_REPLY_SERVER_ERROR);
    evbuffer_free(b);
}

static void test_binary_version_and_stats(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(oc_reply_bin_version(b, 5, "0.1.0"), OC_REPLY_OK);
    expect_pkt(b, OC_BIN_OP_VERSION, 0, 5, 0, "", "0.1.0");
    /* every STAT line a packet (other lines skipped), then the terminator */
    static const char text[] = "STAT pid 42\r\nSTAT version 0.1.0\r\nEND\r\n"
                               "STAT model:User:get_keys 7\nSTAT nospace\r\nSTAT x \r\n";
    assert_int_equal(oc_reply_bin_stats(b, 6, text, sizeof(text) - 1), OC_REPLY_OK);
    expect_pkt(b, OC_BIN_OP_STAT, 0, 6, 0, "pid", "42");
    expect_pkt(b, OC_BIN_OP_STAT, 0, 6, 0, "version", "0.1.0");
    expect_pkt(b, OC_BIN_OP_STAT, 0, 6, 0, "model:User:get_keys", "7");
    expect_pkt(b, OC_BIN_OP_STAT, 0, 6, 0, "x", "");
    expect_pkt(b, OC_BIN_OP_STAT, 0, 6, 0, "", "");
    assert_int_equal(evbuffer_get_length(b), 0);
    /* reset: the terminator alone */
    assert_int_equal(oc_reply_bin_stats(b, 7, "", 0), OC_REPLY_OK);
    expect_pkt(b, OC_BIN_OP_STAT, 0, 7, 0, "", "");
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_reply_too_large),
        cmocka_unit_test(test_values_too_large),
        cmocka_unit_test(test_meta_get),
        cmocka_unit_test(test_writes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_binary_get),
        cmocka_unit_test(test_binary_get_by_reference),
        cmocka_unit_test(test_values_by_reference),
        cmocka_unit_test(test_values_cut_short),
        cmocka_unit_test(test_binary_writes),
        cmocka_unit_test(test_binary_status_and_kinds),
        cmocka_unit_test(test_binary_version_and_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for oc_reply: the bytes of every reply, classic and meta,
 * from typed results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

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

static oc_get_item_t item(const char *key, oc_get_state_t st, const char *data, uint64_t cas)
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
    oc_get_result_t r = {3, items, NULL};
    oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC};
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_OK);
    assert_string_equal(drain(b), "VALUE User:1 0 8\r\n{\"id\":1}\r\n"
                                  "VALUE User:01 0 8\r\n{\"id\":1}\r\nEND\r\n");
    f.gets = 1;
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_OK);
    assert_string_equal(drain(b), "VALUE User:1 0 8 17\r\n{\"id\":1}\r\n"
                                  "VALUE User:01 0 8 17\r\n{\"id\":1}\r\nEND\r\n");
    /* nothing found */
    oc_get_result_t none = {1, &items[1], NULL};
    assert_int_equal(oc_reply_get(b, &none, &f, 1 << 20), OC_REPLY_OK);
    assert_string_equal(drain(b), "END\r\n");
    /* an error fails the whole command */
    items[1].state = OC_GET_ERROR;
    r.err = "database unavailable: x";
    assert_int_equal(oc_reply_get(b, &r, &f, 1 << 20), OC_REPLY_SERVER_ERROR);
    assert_string_equal(drain(b), "SERVER_ERROR load failed: database unavailable: x\r\n");
    evbuffer_free(b);
}

static void test_reply_too_large(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_get_item_t items[] = {item("User:1", OC_GET_FOUND, "0123456789", 0)};
    oc_get_result_t r = {1, items, NULL};
    oc_reply_fmt_t f = {.style = OC_STYLE_CLASSIC};
    assert_int_equal(oc_reply_get(b, &r, &f, 40), OC_REPLY_SERVER_ERROR);
    assert_string_equal(drain(b), "SERVER_ERROR reply too large (77 bytes, max 40)\r\n");
    evbuffer_free(b);
}

static void test_meta_get(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    oc_get_item_t it = item("User:1", OC_GET_FOUND, "{}", 5);
    oc_get_result_t r = {1, &it, NULL};
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
    it.state = OC_GET_ABSENT;
    oc_reply_get(b, &r, &f, 1 << 20);
    assert_string_equal(drain(b), "EN\r\n");
    f.meta_flags |= OC_META_Q; /* quiet: no EN */
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
    assert_string_equal(drain(b), "CLIENT_ERROR bad\r\nSERVER_ERROR oom\r\nERROR\r\nVERSION 1\r\n");
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),   cmocka_unit_test(test_reply_too_large),
        cmocka_unit_test(test_meta_get), cmocka_unit_test(test_writes),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

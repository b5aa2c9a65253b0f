/* Unit tests for oc_stats: the reply format, reset, and that the docs list
 * every counter the code declares (docs that match the code). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "oc_stats.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_docs_list_every_stat(void **state)
{
    (void)state;
    const char *doc = slurp(OC_SOURCE_DIR "/docs/protocol.md");
    char want[128];
#define OC_CHECK_DOC(name, kind, help)                                                   \
    snprintf(want, sizeof(want), "| `%s` |", #name);                                     \
    if (strstr(doc, want) == NULL)                                                       \
        fail_msg("docs/protocol.md does not document the stat %s", #name);
    OC_STATS_LIST(OC_CHECK_DOC)
#undef OC_CHECK_DOC
}

static void test_write_and_reset(void **state)
{
    (void)state;
    oc_stats_t st;
    memset(&st, 0, sizeof(st));
    st.cmd_get = 7;
    st.curr_connections = 3;
    struct evbuffer *out = evbuffer_new();
    oc_stats_write(&st, out);
    size_t len = evbuffer_get_length(out);
    char *text = calloc(1, len + 1);
    evbuffer_remove(out, text, len);
    assert_non_null(strstr(text, "STAT cmd_get 7\r\n"));
    assert_non_null(strstr(text, "STAT curr_connections 3\r\n"));
    oc_stats_reset(&st);
    assert_int_equal(st.cmd_get, 0);
    assert_int_equal(st.curr_connections, 3); /* a gauge survives reset */
    free(text);
    evbuffer_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_list_every_stat),
        cmocka_unit_test(test_write_and_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for oc_proto: tokenizing and classifying command lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oc_proto.h"

static oc_token_t tok[16];

static oc_status_t parse(const char *line, oc_cmd_t *cmd, char *err)
{
    return oc_proto_parse(line, strlen(line), tok, 16, cmd, err);
}

static void test_get(void **state)
{
    (void)state;
    oc_cmd_t c;
    char err[OC_ERRLEN];
    assert_int_equal(parse("get User:1  User:2   User:3", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_GET);
    assert_int_equal(c.nkeys, 3);
    assert_int_equal(c.keys[1].len, 6);
    assert_memory_equal(c.keys[1].p, "User:2", 6);
    assert_int_equal(parse("gets User:1", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_GETS);
    assert_int_equal(parse("get", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_UNKNOWN);
    assert_int_equal(parse("GET User:1", &c, err),
                     OC_OK); /* case matters, as in memcached */
    assert_int_equal(c.type, OC_CMD_UNKNOWN);
    assert_int_equal(parse("getx User:1", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_UNKNOWN);
}

static void test_too_many(void **state)
{
    (void)state;
    oc_cmd_t c;
    char err[OC_ERRLEN];
    char line[256] = "get";
    for (int i = 0; i < 15; i++)
        strcat(line, " k:1");
    assert_int_equal(parse(line, &c, err), OC_OK); /* 16 tokens */
    strcat(line, " k:1");
    assert_int_equal(parse(line, &c, err), OC_ETOOBIG);
}

static void test_simple(void **state)
{
    (void)state;
    oc_cmd_t c;
    char err[OC_ERRLEN];
    assert_int_equal(parse("version", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_VERSION);
    assert_int_equal(parse("quit", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_QUIT);
    assert_int_equal(parse("stats", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_STATS);
    assert_int_equal(c.nkeys, 0);
    assert_int_equal(parse("stats reset", &c, err), OC_OK);
    assert_int_equal(c.nkeys, 1);
    assert_int_equal(parse("", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_UNKNOWN);
    assert_int_equal(parse("    ", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_UNKNOWN);
    assert_int_equal(parse("touch User:1 10 noreply", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_UNSUPPORTED);
    assert_int_equal(c.noreply, 1);
}

/* An unsupported command's noreply is one only where memcached takes it,
 * for the token counts its dispatch admits (measured against memcached
 * 1.6.18: it answers the others, gat's END, me's EN, ma's NF, ERROR). */
static void test_unsupported_noreply_as_memcached(void **state)
{
    (void)state;
    oc_cmd_t c;
    char err[OC_ERRLEN];
    const char *quiet[] = {
        "flush_all noreply",
        "flush_all 0 noreply",
        "verbosity 1 noreply",
        "verbosity noreply",
        "cache_memlimit 100 noreply",
        "lru mode flat noreply",
        "lru noreply",
        "incr k 1 noreply",
        "decr k 1 noreply",
        "incr k noreply",
        "decr k noreply",
        "touch k noreply",
        "touch k 10 noreply",
        "verbosity x noreply",
    };
    const char *answered[] = {"gat 0 noreply",
                              "gats 0 k noreply",
                              "me noreply",
                              "ma noreply",
                              "touch noreply",
                              "incr noreply",
                              "incr k 1 1 noreply",
                              "touch k 1 1 noreply",
                              "flush_all 1 1 noreply",
                              "verbosity 1 1 noreply",
                              "cache_memlimit 1 1 noreply",
                              "shutdown noreply",
                              "slabs reassign 1 2 noreply",
                              "lru_crawler metadump noreply",
                              "misbehave noreply",
                              "flush_all"};
    for (size_t i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++) {
        assert_int_equal(parse(quiet[i], &c, err), OC_OK);
        assert_int_equal(c.type, OC_CMD_UNSUPPORTED);
        if (c.noreply != 1)
            fail_msg("%s: not taken as noreply", quiet[i]);
    }
    for (size_t i = 0; i < sizeof(answered) / sizeof(answered[0]); i++) {
        assert_int_equal(parse(answered[i], &c, err), OC_OK);
        assert_int_equal(c.type, OC_CMD_UNSUPPORTED);
        if (c.noreply != 0)
            fail_msg("%s: taken as noreply (memcached answers it)", answered[i]);
    }
}

static void test_delete(void **state)
{
    (void)state;
    oc_cmd_t c;
    char err[OC_ERRLEN];
    assert_int_equal(parse("delete User:1", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_DELETE);
    assert_int_equal(c.nkeys, 1);
    assert_int_equal(c.noreply, 0);
    assert_int_equal(parse("delete User:1 noreply", &c, err), OC_OK);
    assert_int_equal(c.noreply, 1);
    assert_int_equal(parse("delete User:1 0", &c, err), OC_OK);
    assert_int_equal(parse("delete User:1 0 noreply", &c, err), OC_OK);
    assert_int_equal(c.noreply, 1);
    assert_int_equal(parse("delete User:1 5", &c, err), OC_EINVAL);
    assert_string_equal(err, "bad command line format.  Usage: delete <key> [noreply]");
    assert_int_equal(parse("delete", &c, err), OC_EINVAL);
    assert_int_equal(parse("delete User:1 0 0", &c, err), OC_EINVAL);
    assert_int_equal(parse("delete User:1 x noreply", &c, err), OC_EINVAL);
    assert_int_equal(c.noreply, 1); /* its error dropped, as memcached does */
    assert_int_equal(parse("delete User:1 0 0 noreply", &c, err), OC_EINVAL);
    assert_int_equal(c.noreply, 0); /* memcached: ERROR */
}

static void test_storage(void **state)
{
    (void)state;
    oc_cmd_t c;
    char err[OC_ERRLEN];
    assert_int_equal(parse("set User:1 0 0 5", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_SET);
    assert_int_equal(parse("add User:1 0 0 5", &c, err), OC_OK);
    assert_int_equal(c.type, OC_CMD_STORAGE);
    assert_int_equal(parse("set User:1 0 0 5", &c, err), OC_OK);
    assert_int_equal(c.data_len, 5);
    assert_int_equal(c.noreply, 0);
    assert_int_equal(parse("set User:1 0 -1 5 noreply", &c, err), OC_OK);
    assert_int_equal(c.noreply, 1);
    assert_int_equal(parse("cas User:1 0 0 5 77", &c, err), OC_OK);
    assert_int_equal(c.data_len, 5);
    assert_int_equal(parse("set User:1 0 0 -5", &c, err), OC_EINVAL);
    assert_string_equal(err, "bad data chunk");
    assert_int_equal(parse("set User:1 0 0 99999999999999999999999", &c, err), OC_EINVAL);
    assert_int_equal(parse("set User:1 0 0 4294967296", &c, err), OC_EINVAL);
    assert_int_equal(parse("set User:1 x 0 5", &c, err), OC_EINVAL);
    assert_string_equal(err, "bad command line format");
    assert_int_equal(parse("set User:1 4294967296 0 5", &c, err), OC_EINVAL);
    assert_int_equal(parse("set User:1 0 0", &c, err), OC_EINVAL);
    assert_int_equal(parse("set User:1 0 0 5 extra", &c, err), OC_EINVAL);
    assert_int_equal(parse("cas User:1 0 0 5", &c, err), OC_EINVAL);
}

/* Every prefix of hostile lines parses without reading past its length. */
static void test_prefixes_in_bounds(void **state)
{
    (void)state;
    const char *lines[] = {"set k 0 0 18446744073709551615 noreply",
                           "get a b c d e f g h i j k l m n o p q r s",
                           "cas k 1 2 3 4 noreply", "stats reset now"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        size_t n = strlen(lines[i]);
        for (size_t len = 0; len <= n; len++) {
            char *copy = malloc(len ? len : 1); /* exact size: ASan sees overreads */
            memcpy(copy, lines[i], len);
            oc_cmd_t c;
            char err[OC_ERRLEN];
            (void)oc_proto_parse(copy, len, tok, 16, &c, err);
            free(copy);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_too_many),
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_unsupported_noreply_as_memcached),
        cmocka_unit_test(test_storage),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_prefixes_in_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

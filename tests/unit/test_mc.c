/* Unit tests for oc_mc's rules: what a reply means for an item (the SWAP
 * that lost, the PUSH that reads again and gives up), the SWAP's match,
 * leases and refreshes in a meta get's reply, which keys are read with a
 * meta get, exptimes on a failover, which parts may go to the failover,
 * when a write also deletes the failover's copy, and the io timeout, with
 * a clock passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_mc.h"

static oc_mc_result_t reply(oc_mc_op_t op, oc_mcp_reply_t t)
{
    int tries = 0, again = -1;
    oc_mc_result_t r = oc_mc_item_reply(op, t, &tries, &again);
    assert_int_equal(again, 0);
    assert_int_equal(tries, 0);
    return r;
}

static void test_item_reply(void **state)
{
    (void)state;
    const oc_mc_op_t plain[] = {OC_MC_SET, OC_MC_DELETE, OC_MC_CAS, OC_MC_CAS_DELETE,
                                OC_MC_PROBE};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        oc_mc_op_t op = plain[i];
        if (op == OC_MC_PROBE) {
            /* `version` is answered VERSION; anything else answers another
             * command (a reply went missing) */
            assert_int_equal(reply(op, OC_MCP_VERSION), OC_MC_R_OK);
            assert_int_equal(reply(op, OC_MCP_STORED), OC_MC_R_ERROR);
            assert_int_equal(reply(op, OC_MCP_DELETED), OC_MC_R_ERROR);
            assert_int_equal(reply(op, OC_MCP_NOT_FOUND), OC_MC_R_ERROR);
            assert_int_equal(reply(op, OC_MCP_HD), OC_MC_R_ERROR);
            assert_int_equal(reply(op, OC_MCP_ERROR), OC_MC_R_ERROR);
            continue;
        }
        assert_int_equal(reply(op, OC_MCP_STORED), OC_MC_R_OK);
        assert_int_equal(reply(op, OC_MCP_DELETED), OC_MC_R_OK);
        assert_int_equal(reply(op, OC_MCP_HD), OC_MC_R_OK); /* md's DELETED */
        assert_int_equal(reply(op, OC_MCP_NF), OC_MC_R_NOT_FOUND);
        assert_int_equal(reply(op, OC_MCP_EX), OC_MC_R_EXISTS);
        /* a delete answered VERSION: its own reply went missing, not done */
        assert_int_equal(reply(op, OC_MCP_VERSION), OC_MC_R_ERROR);
        assert_int_equal(reply(op, OC_MCP_NOT_STORED), OC_MC_R_NOT_STORED);
        assert_int_equal(reply(op, OC_MCP_EXISTS), OC_MC_R_EXISTS);
        assert_int_equal(reply(op, OC_MCP_NOT_FOUND), OC_MC_R_NOT_FOUND);
        assert_int_equal(reply(op, OC_MCP_ERROR), OC_MC_R_ERROR);
        /* a line that answers something else: an error, not a success */
        assert_int_equal(reply(op, OC_MCP_END), OC_MC_R_ERROR);
        assert_int_equal(reply(op, OC_MCP_OK), OC_MC_R_ERROR);
        assert_int_equal(reply(op, OC_MCP_VALUE), OC_MC_R_ERROR);
        assert_int_equal(reply(op, OC_MCP_BAD), OC_MC_R_ERROR);
    }
    /* a SWAP's cas that found the key replaced or gone lost to that write */
    assert_int_equal(reply(OC_MC_SWAP, OC_MCP_STORED), OC_MC_R_OK);
    assert_int_equal(reply(OC_MC_SWAP, OC_MCP_EXISTS), OC_MC_R_NOT_STORED);
    assert_int_equal(reply(OC_MC_SWAP, OC_MCP_NOT_FOUND), OC_MC_R_NOT_STORED);
    /* ... and so did a cas into an item that is not ours */
    assert_int_equal(reply(OC_MC_SWAP, OC_MCP_EX), OC_MC_R_NOT_STORED);
    assert_int_equal(reply(OC_MC_SWAP, OC_MCP_NF), OC_MC_R_NOT_STORED);
    assert_int_equal(reply(OC_MC_SWAP, OC_MCP_ERROR), OC_MC_R_ERROR);
    /* a PUSH stored, or failed: no second round */
    assert_int_equal(reply(OC_MC_PUSH, OC_MCP_STORED), OC_MC_R_OK);
    assert_int_equal(reply(OC_MC_PUSH, OC_MCP_ERROR), OC_MC_R_ERROR);
}

/* Each one-line command is answered in its own words, or an error line;
 * a line of any other command's words means a reply went missing. The
 * table lists, per command, every reply that answers it. */
static void test_out_of_step(void **state)
{
    (void)state;
    static const struct {
        oc_mc_line_cmd_t cmd;
        oc_mcp_reply_t fits[5];
        size_t n;
    } cases[] = {
        {OC_MC_LINE_STORE,
         {OC_MCP_STORED, OC_MCP_NOT_STORED, OC_MCP_EXISTS, OC_MCP_NOT_FOUND,
          OC_MCP_ERROR},
         5},
        {OC_MC_LINE_DELETE, {OC_MCP_DELETED, OC_MCP_NOT_FOUND, OC_MCP_ERROR}, 3},
        /* OK: an older memcached's answer to md, an error but in step */
        {OC_MC_LINE_MD, {OC_MCP_HD, OC_MCP_NF, OC_MCP_EX, OC_MCP_OK, OC_MCP_ERROR}, 5},
        {OC_MC_LINE_MS, {OC_MCP_HD, OC_MCP_NS, OC_MCP_EX, OC_MCP_NF, OC_MCP_ERROR}, 5},
        {OC_MC_LINE_VERSION, {OC_MCP_VERSION, OC_MCP_ERROR}, 2},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (int t = OC_MCP_NEED_MORE; t <= OC_MCP_BAD; t++) {
            int fits = 0;
            for (size_t i = 0; i < cases[c].n; i++)
                fits |= cases[c].fits[i] == (oc_mcp_reply_t)t;
            if (oc_mc_out_of_step(cases[c].cmd, (oc_mcp_reply_t)t) != !fits)
                fail_msg("command %d, reply %d: out of step %d, expected %d",
                         (int)cases[c].cmd, t,
                         oc_mc_out_of_step(cases[c].cmd, (oc_mcp_reply_t)t), !fits);
        }
    }
    /* the cases the drop-deletes tests met: a probe's VERSION behind a
     * dropped delete or md, and a delete's reply behind a dropped store */
    assert_true(oc_mc_out_of_step(OC_MC_LINE_DELETE, OC_MCP_VERSION));
    assert_true(oc_mc_out_of_step(OC_MC_LINE_MD, OC_MCP_VERSION));
    assert_true(oc_mc_out_of_step(OC_MC_LINE_STORE, OC_MCP_DELETED));
}

/* md and ms share HD, NF and EX: the return flags tell them apart. An ms
 * asked for its cas (memcached returns c on every answer); an md asked for
 * nothing. An md whose reply went missing must not take an ms's. */
static void test_meta_flags_fit(void **state)
{
    (void)state;
    oc_mcp_line_t l;
    const oc_mcp_reply_t meta[] = {OC_MCP_HD, OC_MCP_NS, OC_MCP_EX, OC_MCP_NF};
    for (size_t i = 0; i < sizeof(meta) / sizeof(meta[0]); i++) {
        l = (oc_mcp_line_t){.type = meta[i]};
        assert_false(oc_mc_meta_flags_fit(OC_MC_LINE_MS, &l)); /* no c */
        assert_true(oc_mc_meta_flags_fit(OC_MC_LINE_MD, &l));
        l = (oc_mcp_line_t){.type = meta[i], .has_cas = 1, .n_flags = 1};
        assert_true(oc_mc_meta_flags_fit(OC_MC_LINE_MS, &l));
        assert_false(oc_mc_meta_flags_fit(OC_MC_LINE_MD, &l)); /* an ms's reply */
        l = (oc_mcp_line_t){.type = meta[i], .has_cas = 1, .n_flags = 2};
        assert_true(oc_mc_meta_flags_fit(OC_MC_LINE_MS, &l)); /* c and 1.6.20's s */
        l = (oc_mcp_line_t){.type = meta[i], .n_flags = 1};
        assert_false(oc_mc_meta_flags_fit(OC_MC_LINE_MS, &l)); /* a flag, not c */
        assert_false(oc_mc_meta_flags_fit(OC_MC_LINE_MD, &l));
    }
    /* other lines: only their words count (oc_mc_out_of_step) */
    l = (oc_mcp_line_t){.type = OC_MCP_ERROR};
    assert_true(oc_mc_meta_flags_fit(OC_MC_LINE_MS, &l));
    l = (oc_mcp_line_t){.type = OC_MCP_STORED};
    assert_true(oc_mc_meta_flags_fit(OC_MC_LINE_STORE, &l));
}

static void test_push_reads_again_then_gives_up(void **state)
{
    (void)state;
    /* the text replies, and ms's (cas changed, key gone, add found a key) */
    const oc_mcp_reply_t lost[] = {OC_MCP_EXISTS, OC_MCP_NOT_FOUND, OC_MCP_NOT_STORED,
                                   OC_MCP_EX,     OC_MCP_NF,        OC_MCP_NS};
    for (size_t k = 0; k < sizeof(lost) / sizeof(lost[0]); k++) {
        int tries = 0, again = 0;
        for (int round = 1; round < OC_MC_PUSH_TRIES; round++) {
            oc_mc_item_reply(OC_MC_PUSH, lost[k], &tries, &again);
            assert_int_equal(again, 1);
            assert_int_equal(tries, round);
        }
        /* the last round lost too: an error, not NOT_STORED (which would
         * tell the app its push was older) */
        assert_int_equal(oc_mc_item_reply(OC_MC_PUSH, lost[k], &tries, &again),
                         OC_MC_R_ERROR);
        assert_int_equal(again, 0);
        assert_int_equal(tries, OC_MC_PUSH_TRIES);
    }
    /* a round that stores ends it, whatever came before */
    int tries = 5, again = 1;
    assert_int_equal(oc_mc_item_reply(OC_MC_PUSH, OC_MCP_STORED, &tries, &again),
                     OC_MC_R_OK);
    assert_int_equal(again, 0);
    assert_int_equal(tries, 5);
    assert_int_equal(oc_mc_item_reply(OC_MC_PUSH, OC_MCP_HD, &tries, &again), OC_MC_R_OK);
    assert_int_equal(again, 0);
}

static void test_swap_holds(void **state)
{
    (void)state;
    oc_mc_item_t it = {.expect = "{\"id\":1}", .expect_len = 8, .expect_flags = 7};
    assert_true(oc_mc_swap_holds(&it, 7, "{\"id\":1}", 8));
    assert_false(oc_mc_swap_holds(&it, 8, "{\"id\":1}", 8)); /* other flags */
    assert_false(oc_mc_swap_holds(&it, 7, "{\"id\":2}", 8)); /* same length */
    assert_false(oc_mc_swap_holds(&it, 7, "{\"id\":1} ", 9));
    assert_false(oc_mc_swap_holds(&it, 7, "{\"id\":", 6));
    assert_false(oc_mc_swap_holds(&it, 7, "", 0));
    /* the last byte counts too */
    assert_false(oc_mc_swap_holds(&it, 7, "{\"id\":1]", 8));
    oc_mc_item_t empty = {.expect = NULL, .expect_len = 0, .expect_flags = 3};
    assert_true(oc_mc_swap_holds(&empty, 3, NULL, 0));
    assert_false(oc_mc_swap_holds(&empty, 3, "x", 1));
    assert_false(oc_mc_swap_holds(&empty, 0, NULL, 0));
}

static void test_meta_lease(void **state)
{
    (void)state;
    oc_mc_lease_t lease = OC_MC_LEASE_NONE;
    oc_mc_refresh_t refresh = OC_MC_REFRESH_NONE;
    /* EN: a plain miss */
    assert_false(oc_mc_meta_lease(NULL, &lease, &refresh));
    /* a value without W or Z: a plain hit */
    oc_mcp_line_t l = {.type = OC_MCP_VA, .flags = 5, .bytes = 10, .win = 0};
    assert_false(oc_mc_meta_lease(&l, &lease, &refresh));
    assert_int_equal(lease, OC_MC_LEASE_NONE);
    assert_int_equal(refresh, OC_MC_REFRESH_NONE);
    /* the empty item memcached made for N: a lease */
    l = (oc_mcp_line_t){.type = OC_MCP_VA, .flags = 0, .bytes = 0, .win = OC_MCP_WIN};
    assert_true(oc_mc_meta_lease(&l, &lease, &refresh));
    assert_int_equal(lease, OC_MC_LEASE_WON);
    assert_int_equal(refresh, OC_MC_REFRESH_NONE);
    l.win = OC_MCP_WON_ELSEWHERE;
    assert_true(oc_mc_meta_lease(&l, &lease, &refresh));
    assert_int_equal(lease, OC_MC_LEASE_HELD);
    /* W or Z on a value answer R: a hit, refreshed here or elsewhere */
    lease = OC_MC_LEASE_NONE;
    l = (oc_mcp_line_t){.type = OC_MCP_VA, .flags = 5, .bytes = 10, .win = OC_MCP_WIN};
    assert_false(oc_mc_meta_lease(&l, &lease, &refresh));
    assert_int_equal(refresh, OC_MC_REFRESH_WON);
    assert_int_equal(lease, OC_MC_LEASE_NONE);
    l.win = OC_MCP_WON_ELSEWHERE;
    assert_false(oc_mc_meta_lease(&l, &lease, &refresh));
    assert_int_equal(refresh, OC_MC_REFRESH_HELD);
    /* an empty value with flags (ours) is a value, not a lease; and a
     * value of bytes with flags 0 too */
    refresh = OC_MC_REFRESH_NONE;
    l = (oc_mcp_line_t){.type = OC_MCP_VA, .flags = 9, .bytes = 0, .win = OC_MCP_WIN};
    assert_false(oc_mc_meta_lease(&l, &lease, &refresh));
    assert_int_equal(refresh, OC_MC_REFRESH_WON);
    l = (oc_mcp_line_t){.type = OC_MCP_VA, .flags = 0, .bytes = 1, .win = OC_MCP_WIN};
    assert_false(oc_mc_meta_lease(&l, &lease, &refresh));
    assert_int_equal(lease, OC_MC_LEASE_NONE);
}

static void test_meta_get_choice(void **state)
{
    (void)state;
    assert_false(oc_mc_wants_mg(0, 0, 0));
    assert_false(oc_mc_wants_mg(0, 0, 1));
    assert_true(oc_mc_wants_mg(1, 0, 0)); /* a lease on a miss */
    assert_true(oc_mc_wants_mg(1, 0, 1)); /* leases on the failover too */
    assert_true(oc_mc_wants_mg(0, 30, 0));
    assert_false(oc_mc_wants_mg(0, 30, 1)); /* no refresh on a failover */
    assert_true(oc_mc_wants_mg(UINT32_MAX, UINT32_MAX, 1));
    assert_int_equal(oc_mc_refresh_window(30, 0), 30);
    assert_int_equal(oc_mc_refresh_window(30, 1), 0);
    assert_int_equal(oc_mc_refresh_window(0, 0), 0);
    assert_int_equal(oc_mc_refresh_window(UINT32_MAX, 0), UINT32_MAX);
}

static void test_store_exptime(void **state)
{
    (void)state;
    /* on its own server, as asked (0: never expires) */
    assert_int_equal(oc_mc_store_exptime(0, 0, 10), 0);
    assert_int_equal(oc_mc_store_exptime(3600, 0, 10), 3600);
    /* on a failover, never longer than failover_ttl */
    assert_int_equal(oc_mc_store_exptime(0, 1, 10), 10);
    assert_int_equal(oc_mc_store_exptime(3600, 1, 10), 10);
    assert_int_equal(oc_mc_store_exptime(11, 1, 10), 10);
    assert_int_equal(oc_mc_store_exptime(10, 1, 10), 10);
    assert_int_equal(oc_mc_store_exptime(9, 1, 10), 9);
    assert_int_equal(oc_mc_store_exptime(1, 1, 10), 1);
    assert_int_equal(oc_mc_store_exptime(UINT32_MAX, 1, 10), 10);
}

/* A place memo names its server only in the pool generation it was made
 * for, and only a server that pool has: otherwise the key is placed anew. */
static void test_place_memo(void **state)
{
    (void)state;
    size_t idx = 99;
    for (size_t i = 0; i < 5; i++) {
        uint64_t m = oc_mc_memo(7, i);
        assert_true(m != 0);
        assert_int_equal(oc_mc_memo_idx(m, 7, 5, &idx), 1);
        assert_int_equal(idx, i);
        assert_int_equal(oc_mc_memo_idx(m, 8, 5, &idx), 0); /* the pool changed */
        assert_int_equal(oc_mc_memo_idx(m, 6, 5, &idx), 0);
    }
    assert_true(oc_mc_memo(0, 0) != 0); /* even generation 0, index 0 */
    idx = 99;
    assert_int_equal(oc_mc_memo_idx(0, 0, 5, &idx), 0);                 /* no memo */
    assert_int_equal(oc_mc_memo_idx(oc_mc_memo(7, 4), 7, 4, &idx), 0);  /* pool smaller */
    assert_int_equal(oc_mc_memo_idx(oc_mc_memo(7, 0), 7, 0, &idx), 0);  /* empty pool */
    assert_int_equal(oc_mc_memo_idx((uint64_t)7 << 32, 7, 5, &idx), 0); /* index part 0 */
    assert_int_equal(idx, 99);                                          /* untouched */
    assert_int_equal(oc_mc_memo_idx(oc_mc_memo(UINT32_MAX, 2), UINT32_MAX, 3, &idx), 1);
    assert_int_equal(idx, 2);
}

static void test_may_fail_over(void **state)
{
    (void)state;
    /* a read goes to the failover even before its server is marked down */
    assert_true(oc_mc_may_fail_over(OC_MC_GET, 1));
    assert_true(oc_mc_may_fail_over(OC_MC_GET, 0));
    const oc_mc_op_t writes[] = {OC_MC_SET, OC_MC_CAS, OC_MC_CAS_DELETE, OC_MC_SWAP,
                                 OC_MC_PUSH};
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
        assert_false(oc_mc_may_fail_over(writes[i], 1)); /* may have been applied */
        assert_true(oc_mc_may_fail_over(writes[i], 0));
    }
}

static void test_wants_shadow(void **state)
{
    (void)state;
    oc_tko_rules_t rules = {.failure_limit = 2, .retry_s = 1.0};
    oc_tko_t up; /* never failed */
    oc_tko_init(&up, 100.0);
    const oc_mc_op_t writes[] = {OC_MC_SET, OC_MC_SWAP, OC_MC_PUSH};
    /* a DELETE always clears the failover's copy */
    assert_true(oc_mc_wants_shadow(OC_MC_DELETE, 1, 1, 0, &up, 200.0, 10));
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
        assert_false(oc_mc_wants_shadow(writes[i], 1, 1, 0, &up, 200.0, 10));
    /* never without failover, on the failover itself, or from the gutter */
    assert_false(oc_mc_wants_shadow(OC_MC_DELETE, 0, 1, 0, &up, 200.0, 10));
    assert_false(oc_mc_wants_shadow(OC_MC_DELETE, 1, 0, 0, &up, 200.0, 10));
    assert_false(oc_mc_wants_shadow(OC_MC_DELETE, 1, 1, 1, &up, 200.0, 10));

    /* failing, not ejected yet: its keys may already be on the failover */
    oc_tko_t failing;
    oc_tko_init(&failing, 100.0);
    oc_tko_failure(&failing, &rules, 101.0);
    assert_true(oc_mc_wants_shadow(OC_MC_SET, 1, 1, 0, &failing, 101.0, 10));
    assert_false(oc_mc_wants_shadow(OC_MC_SET, 1, 0, 0, &failing, 101.0, 10));

    /* back in service at 105: for failover_ttl + 1 seconds */
    oc_tko_t back;
    oc_tko_init(&back, 100.0);
    oc_tko_failure(&back, &rules, 101.0);
    oc_tko_failure(&back, &rules, 102.0); /* down */
    assert_false(oc_mc_wants_shadow(OC_MC_SET, 1, 1, 0, &back, 102.5, 10));
    assert_int_equal(oc_tko_probe(&back, 104.0), 1);
    assert_int_equal(oc_tko_passed(&back, 105.0), 1);
    assert_true(oc_mc_wants_shadow(OC_MC_SET, 1, 1, 0, &back, 105.0, 10));
    assert_true(oc_mc_wants_shadow(OC_MC_PUSH, 1, 1, 0, &back, 115.9, 10));
    assert_false(oc_mc_wants_shadow(OC_MC_PUSH, 1, 1, 0, &back, 116.0, 10));
    assert_false(oc_mc_wants_shadow(OC_MC_SWAP, 1, 1, 0, &back, 500.0, 10));
    /* failover_ttl 0 is still a window of one second */
    assert_true(oc_mc_wants_shadow(OC_MC_SET, 1, 1, 0, &back, 105.9, 0));
    assert_false(oc_mc_wants_shadow(OC_MC_SET, 1, 1, 0, &back, 106.0, 0));
}

static void test_time_left(void **state)
{
    (void)state;
    /* io_timeout 0.3 s from the oldest wait's start at 10 */
    assert_true(oc_mc_time_left(10.0, 0.3, 10.0) > 0.299);
    assert_true(oc_mc_time_left(10.0, 0.3, 10.2) > 0.0);
    assert_true(oc_mc_time_left(10.0, 0.3, 10.2) < 0.1001);
    assert_true(oc_mc_time_left(10.0, 0.25, 10.25) <= 0.0); /* exactly at the limit */
    assert_true(oc_mc_time_left(10.0, 0.3, 11.0) < 0.0);
    /* bytes that arrive move `since`: the wait starts again */
    assert_true(oc_mc_time_left(10.9, 0.3, 11.0) > 0.0);
    assert_true(oc_mc_time_left(10.0, 0.0, 10.0) <= 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_item_reply),
        cmocka_unit_test(test_out_of_step),
        cmocka_unit_test(test_meta_flags_fit),
        cmocka_unit_test(test_push_reads_again_then_gives_up),
        cmocka_unit_test(test_swap_holds),
        cmocka_unit_test(test_meta_lease),
        cmocka_unit_test(test_meta_get_choice),
        cmocka_unit_test(test_store_exptime),
        cmocka_unit_test(test_place_memo),
        cmocka_unit_test(test_may_fail_over),
        cmocka_unit_test(test_wants_shadow),
        cmocka_unit_test(test_time_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for oc_wal's rules, with the clock passed in: the holder's
 * schedule (heartbeats, statuses, lag reads, prunes), when a standby tries
 * the slot, how long the holder has been silent, when a stuck holder is
 * terminated, what the end of a stream means, the pause of a stream that
 * runs ahead, the apply lag, and the array literals of feed_append and
 * requeue. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oc_mc.h"
#include "oc_wal.h"
#include "oc_walbatch.h"

static void test_schedule(void **state)
{
    (void)state;
    oc_wal_sched_t s;
    oc_wal_sched_start(&s, 1000.0);
    /* at once: a heartbeat and a status; the lag and a prune later */
    assert_int_equal(oc_wal_due(&s, 1000.0, 0.5, 0),
                     OC_WAL_DUE_HEARTBEAT | OC_WAL_DUE_STATUS);
    assert_int_equal(oc_wal_due(&s, 1000.0, 0.5, 0), 0);
    assert_int_equal(oc_wal_due(&s, 1000.49, 0.5, 0), 0);
    /* exactly at the period: due */
    assert_int_equal(oc_wal_due(&s, 1000.5, 0.5, 0), OC_WAL_DUE_HEARTBEAT);
    assert_int_equal(oc_wal_due(&s, 1001.0, 0.5, 0),
                     OC_WAL_DUE_HEARTBEAT | OC_WAL_DUE_STATUS);
    /* the lag every 5 s, but not while the last read is under way */
    assert_int_equal(oc_wal_due(&s, 1005.0, 0.5, 1) & OC_WAL_DUE_STATS, 0);
    assert_int_equal(oc_wal_due(&s, 1005.1, 0.5, 1) & OC_WAL_DUE_STATS, 0);
    assert_int_equal(oc_wal_due(&s, 1005.2, 0.5, 0) & OC_WAL_DUE_STATS, OC_WAL_DUE_STATS);
    assert_int_equal(oc_wal_due(&s, 1010.1, 0.5, 0) & OC_WAL_DUE_STATS, 0);
    assert_int_equal(oc_wal_due(&s, 1010.2, 0.5, 0) & OC_WAL_DUE_STATS, OC_WAL_DUE_STATS);
    /* a prune a minute after streaming began, then every minute */
    assert_int_equal(oc_wal_due(&s, 1059.9, 0.5, 0) & OC_WAL_DUE_PRUNE, 0);
    assert_int_equal(oc_wal_due(&s, 1060.0, 0.5, 0) & OC_WAL_DUE_PRUNE, OC_WAL_DUE_PRUNE);
    assert_int_equal(oc_wal_due(&s, 1119.9, 0.5, 0) & OC_WAL_DUE_PRUNE, 0);
    /* a loop that stalled for long does one of each, not a burst */
    unsigned due = oc_wal_due(&s, 5000.0, 0.5, 0);
    assert_int_equal(due, OC_WAL_DUE_HEARTBEAT | OC_WAL_DUE_STATUS | OC_WAL_DUE_STATS |
                              OC_WAL_DUE_PRUNE);
    assert_int_equal(oc_wal_due(&s, 5000.0, 0.5, 0), 0);
    assert_true(s.next_hb == 5000.5);
    assert_true(s.next_status == 5000.0 + OC_WAL_STATUS_EVERY_S);
    assert_true(s.next_stats == 5000.0 + OC_WAL_STATS_EVERY_S);
    assert_true(s.next_prune == 5000.0 + OC_WAL_PRUNE_EVERY_S);
}

static void test_try_now(void **state)
{
    (void)state;
    double takeover = 5.0;
    /* the first chance: always */
    assert_true(oc_wal_try_now(0, 0.0, 0.0, takeover));
    /* a fresh feed proves a holder alive: wait */
    assert_false(oc_wal_try_now(1, 1.0, 10.0, takeover));
    assert_false(oc_wal_try_now(1, 5.0, 10.0, takeover)); /* exactly takeover */
    assert_true(oc_wal_try_now(1, 5.01, 10.0, takeover));
    assert_true(oc_wal_try_now(1, INFINITY, 10.0, takeover)); /* never fresh */
    /* every 60 x takeover anyway */
    assert_false(oc_wal_try_now(1, 1.0, 300.0, takeover));
    assert_true(oc_wal_try_now(1, 1.0, 300.01, takeover));
}

/* A try stuck before the stream (a step whose connection never answers)
 * starts again once it has had its time, not before. */
static void test_try_overdue(void **state)
{
    (void)state;
    assert_false(oc_wal_try_overdue(0.0, 60.0));
    assert_false(oc_wal_try_overdue(59.99, 60.0));
    assert_true(oc_wal_try_overdue(60.0, 60.0));
    assert_true(oc_wal_try_overdue(INFINITY, 60.0));
}

static void test_silence(void **state)
{
    (void)state;
    assert_true(oc_wal_silence(1, 3.0, 100.0) == 3.0);
    /* never more than this sidecar has watched */
    assert_true(oc_wal_silence(1, INFINITY, 100.0) == 100.0);
    assert_true(oc_wal_silence(1, 30.0, 2.0) == 2.0);
    /* the feed cannot be read: says nothing */
    assert_true(oc_wal_silence(0, INFINITY, 100.0) == 0.0);
    assert_true(oc_wal_silence(0, 3.0, 100.0) == 0.0);
}

static void test_stuck_holder(void **state)
{
    (void)state;
    oc_wal_watch_t wt;
    memset(&wt, 0, sizeof(wt));
    double takeover = 5.0;
    /* first sighting at 10000 s: the clock starts, however long the
     * machine has been up */
    assert_true(oc_wal_watch_stalled(&wt, "0/16B3748", 10000.0) == 0.0);
    assert_true(oc_wal_watch_stalled(&wt, "0/16B3748", 10006.0) == 6.0);
    assert_false(oc_wal_should_terminate(6.0, takeover, 1234));
    assert_false(oc_wal_should_terminate(10.0, takeover, 1234)); /* exactly 2 x */
    assert_true(oc_wal_should_terminate(10.5, takeover, 1234));
    assert_false(oc_wal_should_terminate(10.5, takeover, 0)); /* no backend */
    assert_false(oc_wal_should_terminate(10.5, takeover, -1));
    /* it moved: the clock starts again */
    assert_true(oc_wal_watch_stalled(&wt, "0/16B3800", 10011.0) == 0.0);
    assert_true(oc_wal_watch_stalled(&wt, "0/16B3800", 10012.0) == 1.0);
    /* a slot that shows no position (NULL confirmed_flush_lsn: a slot being
     * created) is a sighting too: its first look is no stall */
    memset(&wt, 0, sizeof(wt));
    assert_true(oc_wal_watch_stalled(&wt, "", 10000.0) == 0.0);
    assert_false(
        oc_wal_should_terminate(oc_wal_watch_stalled(&wt, "", 10001.0), takeover, 1234));
    assert_true(oc_wal_watch_stalled(&wt, "0/1", 10002.0) == 0.0);
    /* what the standby watches is the confirmed position and the
     * walsender's last reply time: a holder receiving a long transaction
     * confirms nothing, but it replies, and the clock starts again */
    memset(&wt, 0, sizeof(wt));
    assert_true(oc_wal_watch_stalled(&wt, "0/16B3748 15:00:01.5+00", 10000.0) == 0.0);
    assert_true(oc_wal_watch_stalled(&wt, "0/16B3748 15:00:11.5+00", 10011.0) == 0.0);
    assert_false(oc_wal_should_terminate(
        oc_wal_watch_stalled(&wt, "0/16B3748 15:00:11.5+00", 10012.0), takeover, 1234));
}

/* A walsender at work (decoding) reads no reply inside one transaction's
 * commit, where its sent position stands still: moving. Decoding one
 * transaction after another (its sent position moves) it reads them at
 * every record: a holder whose replies stand still then is stuck. */
static void test_busy_walsender(void **state)
{
    (void)state;
    oc_wal_watch_t wt;
    memset(&wt, 0, sizeof(wt));
    double takeover = 5.0;
    const char *shown = "0/16B3748 15:00:01.5+00";
    /* inside one big transaction: at work at the same position, look after look */
    assert_true(oc_wal_watch_holder(&wt, shown, "0/2000000", 10000.0) == 0.0);
    assert_true(oc_wal_watch_holder(&wt, shown, "0/2000000", 10006.0) == 0.0);
    assert_true(oc_wal_watch_holder(&wt, shown, "0/2000000", 10012.0) == 0.0);
    /* at work, its position moving, the replies not: the clock runs */
    assert_true(oc_wal_watch_holder(&wt, shown, "0/3000000", 10014.0) == 2.0);
    assert_true(oc_wal_watch_holder(&wt, shown, "0/4000000", 10020.0) == 8.0);
    assert_false(oc_wal_should_terminate(8.0, takeover, 1234));
    /* waiting between two looks at work elsewhere: no transaction spans them */
    assert_true(oc_wal_watch_holder(&wt, shown, NULL, 10021.0) == 9.0);
    assert_true(oc_wal_should_terminate(
        oc_wal_watch_holder(&wt, shown, "0/5000000", 10023.0), takeover, 1234));
    /* the replies move: alive, whatever the walsender does */
    assert_true(oc_wal_watch_holder(&wt, "0/16B3748 15:00:30+00", "0/6000000", 10024.0) ==
                0.0);
    /* a position PostgreSQL does not show (no pg_read_all_stats): at work
     * counts as moving, as it did before positions were compared */
    assert_true(oc_wal_watch_holder(&wt, "0/16B3748 15:00:30+00", "", 10040.0) == 0.0);
    assert_true(oc_wal_watch_holder(&wt, "0/16B3748 15:00:30+00", "", 10060.0) == 0.0);
    /* not at work: the watch alone */
    assert_true(oc_wal_watch_holder(&wt, "0/16B3748 15:00:30+00", NULL, 10066.0) == 6.0);
}

/* A holder whose stream has said nothing (no heartbeat back, no keepalive
 * asked for) for wal_sender_timeout, and at least 2 x wal_takeover (when a
 * standby terminates a stalled holder), lets go; without a known
 * wal_sender_timeout, never (a walsender replaying a big transaction it
 * does not send may then say nothing for good). */
static void test_silent_stream(void **state)
{
    (void)state;
    double takeover = 5.0;
    assert_false(oc_wal_stream_silent(10000.0, 10000.0, takeover, 60.0));
    assert_false(oc_wal_stream_silent(10000.0, 10059.0, takeover, 60.0));
    assert_false(oc_wal_stream_silent(10000.0, 10060.0, takeover, 60.0)); /* exactly */
    assert_true(oc_wal_stream_silent(10000.0, 10060.5, takeover, 60.0));
    /* a short wal_sender_timeout: 2 x wal_takeover still */
    assert_false(oc_wal_stream_silent(10000.0, 10009.0, takeover, 3.0));
    assert_true(oc_wal_stream_silent(10000.0, 10010.5, takeover, 3.0));
    /* wal_sender_timeout 0, or not known */
    assert_false(oc_wal_stream_silent(10000.0, 20000.0, takeover, 0));
    /* a clock behind what was heard: not silent */
    assert_false(oc_wal_stream_silent(10000.0, 9990.0, takeover, 60.0));
}

static void test_end_kind(void **state)
{
    (void)state;
    /* By the SQLSTATE, whatever the language of the message */
    assert_int_equal(oc_wal_end_kind("55006", 0), OC_WAL_END_HELD);
    assert_int_equal(oc_wal_end_kind("42704", 0), OC_WAL_END_SLOT_MISSING);
    /* 42704 once streaming: pgoutput's missing publication, not the slot */
    assert_int_equal(oc_wal_end_kind("42704", 1), OC_WAL_END_OTHER);
    /* invalidated, or another database's, or wal_level: asked of the server */
    assert_int_equal(oc_wal_end_kind("55000", 0), OC_WAL_END_SLOT_UNUSABLE);
    assert_int_equal(oc_wal_end_kind("42710", 0), OC_WAL_END_OTHER);
    assert_int_equal(oc_wal_end_kind("57P01", 1), OC_WAL_END_OTHER);
    assert_int_equal(oc_wal_end_kind("08006", 1), OC_WAL_END_OTHER);
    /* no SQLSTATE: the connection broke, or the server ended the stream */
    assert_int_equal(oc_wal_end_kind("", 1), OC_WAL_END_OTHER);
    assert_int_equal(oc_wal_end_kind("", 0), OC_WAL_END_OTHER);
    assert_int_equal(oc_wal_end_kind(NULL, 1), OC_WAL_END_OTHER);
}

static void test_pause_and_lag(void **state)
{
    (void)state;
    /* 4 x wal_max_txn_keys pending: still taken in; one more pauses */
    assert_false(oc_wal_over_limit(4000, 1000));
    assert_true(oc_wal_over_limit(4001, 1000));
    assert_false(oc_wal_over_limit(0, 0));
    assert_true(oc_wal_over_limit(1, 0));
    assert_false(oc_wal_over_limit((size_t)UINT32_MAX * 4, UINT32_MAX)); /* no wrap */
    /* a pause needs a committed part to apply, which ends it */
    assert_true(oc_wal_pause_now(4001, 1000, 1));
    assert_false(oc_wal_pause_now(4001, 1000, 0));
    assert_false(oc_wal_pause_now(5000, 1000, 0)); /* a limit lowered mid-transaction */
    assert_false(oc_wal_pause_now(4000, 1000, 1));
    /* batches start wal_batch_interval apart: the rest of it is waited,
     * none before the first, while paused, or with the interval off */
    assert_true(oc_wal_batch_wait(100.0, 100.002, 0.005, 0) > 0.0029 &&
                oc_wal_batch_wait(100.0, 100.002, 0.005, 0) < 0.0031);
    assert_true(oc_wal_batch_wait(100.0, 100.005, 0.005, 0) == 0);
    assert_true(oc_wal_batch_wait(100.0, 250.0, 0.005, 0) == 0);
    assert_true(oc_wal_batch_wait(0, 100.0, 0.005, 0) == 0);
    assert_true(oc_wal_batch_wait(100.0, 100.001, 0.005, 1) == 0);
    assert_true(oc_wal_batch_wait(100.0, 100.001, 0, 0) == 0);
    assert_true(oc_wal_batch_wait(100.0, 99.0, 0.005, 0) == 0);
    /* pacing: until the batch is due, else a whole interval; at most 5 ms */
    assert_true(oc_wal_pace_wait(100.0, 100.002, 0.005) > 0.0029 &&
                oc_wal_pace_wait(100.0, 100.002, 0.005) < 0.0031);
    assert_true(oc_wal_pace_wait(100.0, 100.009, 0.005) == 0.005);
    assert_true(oc_wal_pace_wait(0, 100.0, 0.005) == 0.005);
    assert_true(oc_wal_pace_wait(100.0, 100.5, 1.0) == OC_WAL_PACE_MAX_S);
    assert_true(oc_wal_pace_wait(100.0, 100.001, 0.002) > 0.00099 &&
                oc_wal_pace_wait(100.0, 100.001, 0.002) < 0.00101);
    assert_int_equal(oc_wal_lag_ms(1000.25, 1000.0), 250);
    assert_int_equal(oc_wal_lag_ms(1000.0, 1000.0), 0);
    assert_int_equal(oc_wal_lag_ms(1000.0, 1000.5), 0); /* a commit ahead */
    assert_int_equal(oc_wal_lag_ms(1.7e9 + 3600, 1.7e9), 3600000);
}

static void test_feed_literals(void **state)
{
    (void)state;
    const char *models[] = {"User", "Post", "User"};
    const char *keys[] = {"1", "a\"b", "3"};
    size_t klens[] = {1, 3, 1};
    const char *whole[] = {"Tag"};
    oc_walb_batch_t b;
    memset(&b, 0, sizeof(b));
    b.nkeys = 3;
    b.models = models;
    b.keys = keys;
    b.klens = klens;
    b.nwhole = 1;
    b.whole = whole;
    /* deletes were sent for keys 0 and 2 (key 1 was not cacheable); the
     * second failed */
    size_t failed[] = {2};
    char *lit[5] = {0};
    assert_int_equal(oc_wal_feed_literals(&b, failed, 1, lit), OC_OK);
    assert_string_equal(lit[0], "{\"User\",\"Post\",\"User\"}");
    assert_string_equal(lit[1], "{\"1\",\"a\\\"b\",\"3\"}");
    assert_string_equal(lit[2], "{\"Tag\"}");
    assert_string_equal(lit[3], "{\"User\"}");
    assert_string_equal(lit[4], "{\"3\"}");
    for (int i = 0; i < 5; i++)
        free(lit[i]);

    /* no deletes sent (memcached off, or nothing cacheable): none requeued */
    assert_int_equal(oc_wal_feed_literals(&b, NULL, 0, lit), OC_OK);
    assert_string_equal(lit[3], "{}");
    assert_string_equal(lit[4], "{}");
    for (int i = 0; i < 5; i++)
        free(lit[i]);

    /* a heartbeat-only batch with whole models and no key */
    oc_walb_batch_t w;
    memset(&w, 0, sizeof(w));
    w.nwhole = 1;
    w.whole = whole;
    assert_int_equal(oc_wal_feed_literals(&w, NULL, 0, lit), OC_OK);
    assert_string_equal(lit[0], "{}");
    assert_string_equal(lit[1], "{}");
    assert_string_equal(lit[2], "{\"Tag\"}");
    for (int i = 0; i < 5; i++)
        free(lit[i]);
}

/* Which batches append exactly one feed row (feed_append's fast path),
 * that the holder's own follower may take without a poll. */
static void test_one_row(void **state)
{
    (void)state;
    char user2[] = "User"; /* equal, not interned: compared by content */
    const char *models[] = {"User", user2, "Post"};
    const char *keys[] = {"1", "2", "3"};
    size_t klens[] = {1, 1, 1};
    const char *whole[] = {"Tag"};
    oc_walb_batch_t b;
    memset(&b, 0, sizeof(b));
    b.models = models;
    b.keys = keys;
    b.klens = klens;
    assert_false(oc_wal_one_row(&b)); /* no key: no row (a heartbeat) */
    b.nkeys = 2;
    assert_true(oc_wal_one_row(&b));
    b.nkeys = 3; /* two models: two rows */
    assert_false(oc_wal_one_row(&b));
    b.nkeys = 1;
    b.nwhole = 1; /* a whole model: another row, and a generation */
    b.whole = whole;
    assert_false(oc_wal_one_row(&b));
    b.nwhole = 0;
    /* over the fast path's limit: the general path cuts it in chunks */
    const char **many = malloc((OC_WAL_FEED_ROW_KEYS + 1) * sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i <= OC_WAL_FEED_ROW_KEYS; i++)
        many[i] = "User";
    b.models = many;
    b.nkeys = OC_WAL_FEED_ROW_KEYS;
    assert_true(oc_wal_one_row(&b));
    b.nkeys = OC_WAL_FEED_ROW_KEYS + 1;
    assert_false(oc_wal_one_row(&b));
    free(many);
}

/* A heartbeat token is 32 hex digits and never digits alone (an older
 * holder would take "<token> <instant>" for an instant). */
static void test_hb_token(void **state)
{
    (void)state;
    unsigned char raw[16];
    char tok[33];
    memset(raw, 0x11, sizeof(raw)); /* every digit 1 */
    oc_wal_hb_token(raw, tok);
    assert_int_equal(strlen(tok), 32);
    assert_true(strspn(tok, "0123456789abcdef") == 32);
    assert_true(strspn(tok, "0123456789") < 32);
    assert_true(tok[0] >= 'a' && tok[0] <= 'f');
    assert_string_equal(tok + 1, "1111111111111111111111111111111");
    for (int b = 0; b < 256; b++) {
        memset(raw, b, sizeof(raw));
        oc_wal_hb_token(raw, tok);
        assert_true(tok[0] >= 'a' && tok[0] <= 'f');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),      cmocka_unit_test(test_try_now),
        cmocka_unit_test(test_try_overdue),   cmocka_unit_test(test_silence),
        cmocka_unit_test(test_stuck_holder),  cmocka_unit_test(test_busy_walsender),
        cmocka_unit_test(test_silent_stream), cmocka_unit_test(test_end_kind),
        cmocka_unit_test(test_pause_and_lag), cmocka_unit_test(test_feed_literals),
        cmocka_unit_test(test_one_row),       cmocka_unit_test(test_hb_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

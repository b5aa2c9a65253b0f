"""The WAL holder's liveness while its walsender decodes heavy writes, in
a file of its own because it is CPU-heavy (millions of rows written and
decoded): ctest runs it under RESOURCE_LOCK cpu_heavy, never beside the
consistency test (whose staleness bound is in time) nor the bench smoke
run. Servers, fixtures and helpers are test_wal.py's."""

import io
import signal
import threading
import time

import psycopg2

import harness
from test_wal import cached, db, holder, row, start, template, wait_value  # noqa: F401


def test_a_holder_whose_walsender_decodes_a_big_transaction_is_not_terminated(
        fleet, mc_pool, db):
    """A big transaction of a table no model reads (3,000,000 rows, fast
    link). At its commit the walsender decodes it for many seconds and
    sends nothing; it reads the holder's statuses only every half
    wal_sender_timeout (30 s) meanwhile, so neither the slot's position
    nor reply_time moves, and the holder's heartbeats wait behind it. The
    standby took that for a stuck holder and terminated it, then decoded
    the same transaction and was terminated in turn, for ever: no later
    change reached the cache. A walsender busy decoding (not waiting on its
    client) shows the holder alive."""
    db.q("CREATE TABLE junk (id bigint, pad text)")
    sidecars = [start(fleet, mc_pool, db) for _ in range(2)]
    h = holder(sidecars)
    time.sleep(3)  # the standby watches the holder for a while
    cached(h, ["Item:42"])
    db.q("INSERT INTO junk SELECT i, 'x' FROM generate_series(1, 3000000) AS i")
    db.q("UPDATE items SET name = 'after the big transaction' WHERE id = 42")
    for oc in sidecars:
        wait_value(oc, "Item:42", row(db, "Item", 42), timeout=120)
    assert not any("event=wal_holder_terminated" in oc.log() for oc in sidecars)


def walsender_at_work(db):
    """The slot's walsender neither waits on its client nor idles in its
    loop (WAL_SENDER_BUSY in oc_wal.c): it decodes."""
    return db.one("SELECT count(*) FROM pg_stat_activity a JOIN pg_replication_slots s "
                  "ON a.pid = s.active_pid WHERE s.slot_name = %s AND (a.wait_event_type "
                  "IS NULL OR a.wait_event_type NOT IN ('Client', 'Activity'))", (db.name,)) == 1


def test_a_frozen_holder_whose_walsender_decodes_other_tables_is_terminated(
        fleet, mc_pool, db):
    """Writes to a table no model reads, COPYs of 20,000 rows one after
    the other (about 40 MB of WAL a second here; whether the walsender
    falls behind depends on what else the cores run): it decodes them and
    sends the holder nothing, and pg_stat_activity shows it at work at most
    instants. The holder is frozen (SIGSTOP). A walsender at
    work counted as moving, so the standby terminated the holder only
    when several tries in a row found the walsender waiting, or when
    wal_sender_timeout (60 s) ended it: invalidations stopped meanwhile.
    A walsender at work reads its holder's statuses between two
    transactions: one whose sent position moved since the last look while
    the reply time did not is not inside one long transaction, and its
    holder is stuck."""
    db.q("CREATE TABLE junk (id bigint, pad text)")
    # The walsenders of this database spill each transaction to disk as it
    # is decoded (64 kB of changes in memory, not 64 MB): decoding falls
    # behind the writers whatever else the cores run, so it never waits
    # for WAL, and the old rule never saw it idle.
    db.q(f'ALTER DATABASE "{db.name}" SET logical_decoding_work_mem = \'64kB\'')
    a = start(fleet, mc_pool, db)
    holder([a])
    b = start(fleet, mc_pool, db)
    lag = "SELECT extract(epoch FROM clock_timestamp() - caught_up_at) FROM objcached.feed_head"
    harness.wait_until(lambda: db.one(lag) is not None, what="a first heartbeat")
    stop = threading.Event()

    def write():
        conn = psycopg2.connect(host=db.pg.dir, port=db.pg.port, dbname=db.name,
                                user="postgres")
        conn.autocommit = True
        try:
            rows = "".join(f"{i}\tx\n" for i in range(20000))
            with conn.cursor() as cur:
                while not stop.is_set():   # COPY writes a page of rows per WAL record
                    cur.copy_expert("COPY junk FROM STDIN", io.StringIO(rows))
        finally:
            conn.close()
    writers = [threading.Thread(target=write) for _ in range(3)]
    for w in writers:
        w.start()
    try:
        # the walsender at work (a few looks in a row), and b watches a
        # live holder meanwhile, 2 x wal_takeover and more: not terminated
        harness.wait_until(lambda: all(walsender_at_work(db) for _ in range(3)), timeout=60,
                           interval=0.1, what="the walsender at work")
        watch_until = time.monotonic() + 12
        while time.monotonic() < watch_until:
            assert "wal_holder_terminated" not in b.log(), "a live holder terminated"
            time.sleep(0.5)
        assert holder([a, b]) is a
        a.kill(signal.SIGSTOP)
        try:
            # 2 x wal_takeover and a few tries, not wal_sender_timeout
            harness.wait_until(lambda: b.stats()["wal_holder"] == 1, timeout=20,
                               what="the standby to take the slot")
            assert "event=wal_holder_terminated" in b.log()
        finally:
            a.kill(signal.SIGCONT)
    finally:
        stop.set()
        for w in writers:
            w.join()
    harness.wait_until(lambda: "event=wal_released" in a.log(), what="the thawed holder to let go")

"""The near-cache, black-box, with real PostgreSQL and memcached and TWO
objcached processes sharing a pool: every committed write (SQL that bypasses
the app, bulk updates, TRUNCATE, out-of-order commits) stops being served
from either near-cache within the feed's bound; a sidecar that loses the feed
stops answering from its near-cache; a fill that races an invalidation never
installs the old value; memory stays under the limit; reload turns it on and
off; one huge multi-get of distinct keys does not evict the hot ones.

The deadline after a commit is NEAR_DEADLINE: feed_max_lag plus a poll and a
round trip. After it, every read is checked (no 'eventually')."""

import re
import threading
import time

import pytest

import consistency as oc_c
import harness

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO items SELECT i, 'item ' || i, i FROM generate_series(1, 300) AS i;
UPDATE items SET name = repeat(chr(97 + (id % 26)::int), 300000 + id::int) WHERE id BETWEEN 280 AND 282;
CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL);
INSERT INTO big SELECT i, 0 FROM generate_series(1, 100000) AS i;
"""

MODELS = {
    "Item": {"table": "items", "near_ttl": "30s"},
    "Big": {"table": "big", "near_ttl": "30s"},
}

FEED_MAX_LAG = 1.0
NEAR_DEADLINE = FEED_MAX_LAG + 1.0


template, db = oc_c.template_fixtures("near_template", SCHEMA, MODELS, "near")


def start(fleet, mc_pool, db, size="64m", env=None, **sections):
    overrides = {"objcached": {"near_cache_size": size},
                 "postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms",
                                "feed_max_lag": f"{int(FEED_MAX_LAG * 1000)}ms"}}
    for section, keys in sections.items():
        overrides.setdefault(section, {}).update(keys)
    return fleet.start(oc_c.sidecar_config(mc_pool, db.conninfo, MODELS, overrides), env=env)


def two(fleet, mc_pool, db, **kw):
    a, b = start(fleet, mc_pool, db, **kw), start(fleet, mc_pool, db, **kw)
    for oc in (a, b):
        harness.wait_until(lambda oc=oc: oc.stats()["near_serving"] == 1, timeout=10,
                           what=f"{oc!r}'s near-cache to serve")
    return a, b


row = oc_c.row_json


get = oc_c.get_value


def warm(oc, keys, tries=5):
    """Read keys until a read is served from the near-cache: the doorkeeper
    admits on the second offer, so the third read is a near hit, unless the
    near-cache was emptied meanwhile (a feed that lags past feed_max_lag,
    after a big write: then wait until it serves again and read again)."""
    with oc.client() as c:
        for _ in range(tries):
            # after a big write the feed may lag past feed_max_lag (slowly
            # under the sanitizers): it serves again once it caught up
            harness.wait_until(lambda: c.stats()["near_serving"] == 1, timeout=60,
                               what="the near-cache to serve")
            for _ in range(2):
                assert c.get_multi(keys)[1] == b"END"
                oc.wait_idle()
            s0 = c.stats()
            values, end = c.get_multi(keys)
            s1 = c.stats()
            assert end == b"END"
            if s1["near_hits"] - s0["near_hits"] == len(keys):
                assert s1["mc_gets"] == s0["mc_gets"], "a near-cache hit must not ask memcached"
                return values
    raise AssertionError(f"{keys} not served from the near-cache after {tries} tries: {s1}")


class LoaderDown(AssertionError):
    """The read missed and no loader connection was up to load it: the
    sidecar failed it fast (oc_pg). Not a stale answer; a test that has just
    restarted PostgreSQL may wait it out."""


def mg_origin(oc, key):
    """(value or None, 'n1' or 'n0' or None when absent): one `mg <key> v n`,
    whose n flag says whether the near-cache answered."""
    with harness.McRaw(port=oc.port) as m:
        m.sendline(f"mg {key} v n")
        r = m.read_response()
    if r.terminal == b"EN":
        return None, None
    if r.terminal.startswith(b"SERVER_ERROR load failed: database unavailable"):
        raise LoaderDown(r.terminal.decode())
    assert r.terminal.startswith(b"VA "), r
    flags = r.terminal.split(b" ")[2:]
    assert len(flags) == 1 and flags[0] in (b"n0", b"n1"), r.terminal
    return r.values[0].data, flags[0].decode()


def near_read(oc, key):
    """(value, served from the near-cache?)"""
    value, origin = mg_origin(oc, key)
    return value, origin == "n1"


def fresh_within_deadline(sidecars, key, want, t_commit, memcached_within=10):
    """Every sidecar must stop serving anything but `want` from its
    near-cache NEAR_DEADLINE after the commit: every read after that is
    checked. The memcached path may take longer to see a big write (the
    consumer deletes its keys: 100,000 of them take a while), so the value
    must be `want` everywhere within `memcached_within` seconds; then it is
    checked for a while that no sidecar goes back to an old value.

    A read the sidecar fails because its loader connections are still
    waiting out their reconnect back-off (up to 2 s after PostgreSQL came
    back: a feed connection may have drawn a shorter wait) is retried: an
    error is not a stale value."""
    near_deadline = t_commit + NEAR_DEADLINE
    deadline = t_commit + memcached_within
    for oc in sidecars:
        while True:
            try:
                got, from_near = near_read(oc, key)
            except LoaderDown as e:
                assert time.monotonic() < deadline, f"{oc!r}: {e}"
                time.sleep(0.02)
                continue
            if got == want:
                break
            now = time.monotonic()
            assert not (from_near and now > near_deadline), \
                f"{oc!r}'s near-cache still serves {got!r} for {key} " \
                f"{now - t_commit:.3f} s after the commit: " \
                f"{ {k: v for k, v in oc.stats().items() if k.startswith(('feed', 'near'))} }"
            assert now < deadline, f"{oc!r} still serves {got!r} for {key}"
            time.sleep(0.02)
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        for oc in sidecars:
            assert get(oc, key) == want, f"{oc!r} went back to an old value of {key}"


# ------------------------------------------------------------------ every kind of write

def test_hits_come_from_the_near_cache(fleet, mc_pool, db):
    a, b = two(fleet, mc_pool, db)
    for oc in (a, b):
        values = warm(oc, ["Item:1", "Item:2", "Item:999"])
        assert [v[2] for v in values] == [row(db, "items", 1), row(db, "items", 2)]
        assert oc.stats()["near_entries"] >= 3    # Item:999 is cached as absent


def test_mg_n_flag_says_where_the_value_came_from(fleet, mc_pool, db):
    """`mg <key> n` answers n0 until the near-cache holds the key, then n1;
    a sidecar without a near-cache always says n0. The stats agree."""
    a = two(fleet, mc_pool, db)[0]
    want = row(db, "items", 3)
    origins = []
    for _ in range(4):
        h0 = a.stats()["near_hits"]
        value, origin = mg_origin(a, "Item:3")
        assert value == want
        assert (a.stats()["near_hits"] - h0 == 1) == (origin == "n1")
        origins.append(origin)
        a.wait_idle()
    assert origins[0] == "n0" and origins[-1] == "n1", origins
    assert origins == sorted(origins), origins    # once admitted, it stays
    plain = start(fleet, mc_pool, db, size="0")
    assert [mg_origin(plain, "Item:3") for _ in range(3)] == [(want, "n0")] * 3
    with harness.McRaw(port=a.port) as m:
        m.sendline("mg Item:3 n5")    # a return flag takes no token
        assert m.readline() == b"CLIENT_ERROR invalid flag"
        m.sendline("mg Item:424242 n")
        assert m.readline() == b"EN"


def test_big_near_hits_go_by_reference_and_outlive_their_entry(fleet, mc_pool, db):
    """Near hits of 16 KiB or more go to the client by reference to the
    near-cache's own copy (stat values_by_ref); a write that drops those
    entries while replies that refer to them still wait to be sent leaves
    every reply whole: each value is the row before or after the write."""
    a = start(fleet, mc_pool, db)
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10,
                       what="the near-cache to serve")
    ids = [280, 1, 281, 282]
    keys = [f"Item:{i}" for i in ids]
    old = [row(db, "items", i) for i in ids]
    assert [v[2] for v in warm(a, keys)] == old
    s0 = a.stats()
    with a.client() as c:
        assert [v[2] for v in c.get_multi(keys)[0]] == old
    s1 = a.stats()
    assert s1["near_hits"] - s0["near_hits"] == 4
    assert s1["values_by_ref"] - s0["values_by_ref"] == 3
    # replies queued behind a reader that does not read yet (the daemon
    # stops reading commands once 4 MiB of replies wait)
    with harness.McRaw(port=a.port) as m:
        m.send(("get " + " ".join(keys) + "\r\n").encode() * 30)
        time.sleep(0.5)
        db.q("UPDATE items SET name = name || '!' WHERE id BETWEEN 280 AND 282")
        new = [row(db, "items", i) for i in ids]
        seen_old = 0
        for _ in range(30):
            r = m.read_response()
            got = [v.data for v in r.values]
            assert r.terminal == b"END" and got in (old, new), [len(g) for g in got]
            seen_old += got == old
        assert seen_old > 0    # some replies were waiting when the entries went
    fresh_within_deadline((a,), "Item:281", new[2], time.monotonic())


@pytest.mark.parametrize("what", ["update", "delete", "insert"])
def test_sql_write_reaches_both_near_caches(fleet, mc_pool, db, what):
    a, b = two(fleet, mc_pool, db)
    ident = 500 if what == "insert" else 7
    for oc in (a, b):
        warm(oc, [f"Item:{ident}"])
    if what == "update":
        db.q("UPDATE items SET name = 'changed' WHERE id = 7")
    elif what == "delete":
        db.q("DELETE FROM items WHERE id = 7")
    else:
        db.q("INSERT INTO items (id, name) VALUES (500, 'new')")
    t = time.monotonic()   # the commit returned
    fresh_within_deadline((a, b), f"Item:{ident}", row(db, "items", ident), t)


def test_truncate_and_a_100k_row_update_reach_both(fleet, mc_pool, db):
    a, b = two(fleet, mc_pool, db)
    keys = [f"Big:{i}" for i in range(1, 101)]
    for oc in (a, b):
        warm(oc, keys)
    db.q("UPDATE big SET v = v + 1")
    t = time.monotonic()   # the commit returned
    for k in (1, 50, 100):
        fresh_within_deadline((a, b), f"Big:{k}", row(db, "big", k), t)
    for oc in (a, b):
        warm(oc, ["Item:3"])
    db.q("TRUNCATE items")
    t = time.monotonic()   # the commit returned
    fresh_within_deadline((a, b), "Item:3", None, t)


def test_out_of_order_commits_end_fresh(fleet, mc_pool, db):
    """T1 open, T2 commits and is applied, T1 commits: both sidecars end
    with T1's row (a lower outbox id committed after a higher one was
    consumed)."""
    a, b = two(fleet, mc_pool, db)
    for oc in (a, b):
        warm(oc, ["Item:11", "Item:12"])
    t1 = db.connect(autocommit=False)
    with t1.cursor() as cur:
        cur.execute("UPDATE items SET name = 't1' WHERE id = 11")
    db.q("UPDATE items SET name = 't2' WHERE id = 12")
    t = time.monotonic()   # the commit returned
    fresh_within_deadline((a, b), "Item:12", row(db, "items", 12), t)
    # T1's key is still served (old, but nothing newer was committed)
    t1.commit()
    t = time.monotonic()   # the commit returned
    t1.close()
    fresh_within_deadline((a, b), "Item:11", row(db, "items", 11), t)


# ------------------------------------------------------------------ losing the feed

def test_feed_connection_killed_and_postgresql_restarted(fleet, mc_pool, db, pg):
    a, b = two(fleet, mc_pool, db)
    for oc in (a, b):
        warm(oc, ["Item:21"])
    pids = [r[0] for r in db.q("SELECT pid FROM pg_stat_activity WHERE application_name = "
                               "'objcached-feed' AND datname = %s", (db.name,))]
    assert len(pids) == 2
    db.q("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s", (pids[0],))
    # one of them lost its feed: it stops answering from its near-cache
    harness.wait_until(lambda: min(a.stats()["feed_resyncs"], b.stats()["feed_resyncs"]) >= 1
                       and max(a.stats()["feed_resyncs"], b.stats()["feed_resyncs"]) >= 2,
                       timeout=10, what="the killed follower to resync")
    db.q("UPDATE items SET name = 'after the kill' WHERE id = 21")
    fresh_within_deadline((a, b), "Item:21", row(db, "items", 21), time.monotonic())
    for oc in (a, b):
        warm(oc, ["Item:22"])
    pg.stop(mode="fast")
    try:
        # nothing can prove freshness now: both stop serving from memory
        harness.wait_until(lambda: a.stats()["near_serving"] == 0
                           and b.stats()["near_serving"] == 0,
                           timeout=FEED_MAX_LAG + 3, what="near-caches to stop serving")
    finally:
        pg.start()
    db.close()   # its connection died with the server
    db = oc_c.HookDb(pg, db.name)
    db.q("UPDATE items SET name = 'after the restart' WHERE id = 22")
    t = time.monotonic()
    for oc in (a, b):
        harness.wait_until(lambda oc=oc: oc.stats()["near_serving"] == 1, timeout=15,
                           what="serving again")
    fresh_within_deadline((a, b), "Item:22", row(db, "items", 22), t)


def test_a_lost_feed_connection_counts_a_near_flush(fleet, mc_pool, db):
    """A follower whose feed connection dies empties its near-cache; that is
    the feed failing to prove it fresh, and near_flushes (which operations.md
    alerts on) counts it. (Before, only a proof that ran out under a get was
    counted: a lost connection, or a poll that found the feed lagging,
    emptied the near-cache without a trace in near_flushes.)"""
    a = start(fleet, mc_pool, db)
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    warm(a, ["Item:23"])
    s0 = a.stats()
    assert s0["near_entries"] >= 1 and s0["feed_resyncs"] == 1, s0
    db.q("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
         "'objcached-feed' AND datname = %s", (db.name,))
    harness.wait_until(lambda: a.stats()["feed_resyncs"] >= 2, timeout=10,
                       what="the follower to reconnect")
    s1 = a.stats()
    assert s1["near_flushes"] - s0["near_flushes"] == 1, s1


def test_near_serving_turns_0_when_the_proof_runs_out_without_a_get(fleet, mc_pool, db, pg):
    """The feed's connection hangs (packets lost: no answer, no error): its
    proof of freshness runs out at feed_max_lag and the near-cache stops
    answering. near_serving (the "near-cache off" alert) says so, and the
    emptied near-cache counts in near_flushes, though no get looked at it
    (before 2026-12-05 they waited for a get: an idle sidecar showed 1 for
    as long as the connection hung, its near-cache full)."""
    import faultproxy
    feedp = faultproxy.FaultProxy(pg.port, name="feed")
    try:
        a = start(fleet, mc_pool, db,
                  postgresql={"feed_conninfo": f"host=127.0.0.1 port={feedp.port} "
                                               f"dbname={db.name} user=postgres"})
        harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
        warm(a, ["Item:24"])
        s0 = a.stats()
        assert s0["near_entries"] >= 1, s0
        feedp.set_mode("drop")
        harness.wait_until(lambda: a.stats()["near_serving"] == 0, timeout=20, interval=0.2,
                           what="near_serving to say the near-cache stopped answering")
        s1 = a.stats()
        assert s1["near_entries"] == 0 and s1["near_flushes"] - s0["near_flushes"] == 1, s1
        assert s1["feed_connected"] == 1  # the connection hangs: nobody saw it fail
    finally:
        feedp.close()


def test_a_feed_row_committed_ahead_of_the_polled_clock_keeps_the_histogram_sum(
        fleet, mc_pool, db):
    """feed_apply_seconds compares a feed row's committed_at (the primary's
    clock) with the clock of the database polled (a replica's, maybe): with
    clocks apart, a row can look applied before it was committed. Such an
    observation counts as 0 s: a histogram's _sum never goes down (rate()
    would take it for a reset). Before 2026-12-05 the negative seconds went
    into _sum."""
    import urllib.request
    port = harness.free_port()
    a = start(fleet, mc_pool, db, objcached={"metrics_listen": f"127.0.0.1:{port}"})
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    rows0 = a.stats()["feed_rows"]
    db.q("SELECT objcached.feed_append(ARRAY['Item'], ARRAY['25'], NULL, false, "
         "clock_timestamp() + interval '1 hour', NULL, 'a clock an hour ahead')")
    harness.wait_until(lambda: a.stats()["feed_rows"] > rows0, timeout=10,
                       what="the row applied")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        page = r.read().decode()
    total = float(re.search(r"^objcached_feed_apply_seconds_sum (\S+)$", page, re.M).group(1))
    assert total >= 0, total


def test_a_poll_statement_gone_stale_is_prepared_again(fleet, mc_pool, db):
    """The follower's poll is a statement prepared once per session. The
    function under it replaced by one of another result type (what an
    upgrade of the hook may do) makes the prepared statement fail once
    (0A000, "cached plan must not change result type"); the follower then
    prepares it again and follows the feed as before, instead of failing
    every poll until it reconnects."""
    a = start(fleet, mc_pool, db)
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    warm(a, ["Item:31"])
    errors = a.stats()["feed_errors"]
    db.q("ALTER FUNCTION objcached.feed_poll(bigint, integer) RENAME TO feed_poll_v0")
    db.q("""CREATE FUNCTION objcached.feed_poll(p_after bigint, p_limit integer)
            RETURNS TABLE (head numeric, caught_up_at timestamptz, pruned_upto bigint,
                           db_now timestamptz, seq bigint, model text, keys text[],
                           generation bigint, committed_at timestamptz)
            LANGUAGE sql AS $$ SELECT f.head::numeric, f.caught_up_at, f.pruned_upto,
                f.db_now, f.seq, f.model, f.keys, f.generation, f.committed_at
                FROM objcached.feed_poll_v0(p_after, p_limit) f $$""")
    harness.wait_until(lambda: a.stats()["feed_errors"] > errors, timeout=10,
                       what="the stale statement's one failure")
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10,
                       what="serving again")
    errors = a.stats()["feed_errors"]
    polls = a.stats()["feed_polls"]
    db.q("UPDATE items SET name = 'after the swap' WHERE id = 31")
    fresh_within_deadline((a,), "Item:31", row(db, "items", 31), time.monotonic())
    assert a.stats()["feed_polls"] > polls
    assert a.stats()["feed_errors"] == errors


def test_statements_dropped_under_the_session_are_prepared_again(fleet, mc_pool, db):
    """A session's prepared statements can vanish under objcached (DEALLOCATE
    ALL, or DISCARD ALL by a pooler; here the claim function runs DEALLOCATE
    ALL on every claim, in the consumer's own session): the append that finds
    its statement gone (SQLSTATE 26000) fails its cycle, which rolls back,
    and every statement is prepared again; each write still reaches the
    feed (so every sidecar's near-cache), memcached and the consumer's own
    near-cache."""
    db.q("ALTER FUNCTION objcached.claim(integer, integer) RENAME TO claim_v0")
    db.q("""CREATE FUNCTION objcached.claim(max_rows integer, max_keys integer DEFAULT 100000)
            RETURNS TABLE (id bigint, model text, keys text[], created_at timestamptz,
                           requeued boolean)
            LANGUAGE plpgsql AS $$
            BEGIN
                EXECUTE 'DEALLOCATE ALL';
                RETURN QUERY SELECT * FROM objcached.claim_v0(max_rows, max_keys);
            END $$""")
    a = start(fleet, mc_pool, db)
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    warm(a, ["Item:41"])
    errors = a.stats()["inval_errors"]

    def in_feed():
        return db.one("SELECT count(*) FROM objcached.feed WHERE keys @> '{41}'")
    for n in range(3):
        appended = in_feed()
        db.q("UPDATE items SET name = %s WHERE id = 41", (f"discarded {n}",))
        fresh_within_deadline((a,), "Item:41", row(db, "items", 41), time.monotonic())
        harness.wait_until(lambda: in_feed() > appended, timeout=10,
                           what="the write appended to the feed")
    assert a.stats()["inval_errors"] > errors, "no statement was found gone"
    assert "prepared statement" in a.log()


def test_an_outbox_row_that_does_not_move_holds_freshness_back(fleet, mc_pool, db):
    """With the trigger hook, each consumer batch proves the feed complete up
    to the first outbox row still waiting. A row that does not move (locked
    by an open transaction, as by a stuck consumer) holds that proof back:
    once it is older than feed_max_lag the near-cache stops answering,
    though later writes flow past it; released, it serves again."""
    a = start(fleet, mc_pool, db)
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    c = db.connect(autocommit=False)
    for _ in range(10):  # lock it before a consumer's claim (every 200 ms) takes it
        ident = db.one("INSERT INTO objcached.outbox (model, keys) VALUES ('Item', '{299}') "
                       "RETURNING id")
        if db.q("SELECT id FROM objcached.outbox WHERE id = %s FOR UPDATE", (ident,), conn=c):
            break
        c.rollback()
    else:
        pytest.fail("a consumer claimed every row before this test could lock one")
    deadline = time.monotonic() + FEED_MAX_LAG + 5
    n = 0
    while a.stats()["near_serving"] == 1 and time.monotonic() < deadline:
        n += 1
        db.q("UPDATE items SET n = n + 1 WHERE id = 298")   # later writes keep flowing
        time.sleep(0.1)
    assert a.stats()["near_serving"] == 0, "served past a row held longer than feed_max_lag"
    assert db.one("SELECT count(*) FROM objcached.outbox WHERE keys = '{298}'") < n
    c.rollback()   # released: the consumers take it, the proof moves on
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10,
                       what="serving again")


def test_a_caught_up_at_ahead_of_the_clock_proves_nothing(fleet, mc_pool, db):
    """The feed's caught_up_at as a database clock that once ran an hour
    ahead leaves it (GREATEST kept it while the clock came back). Until
    2026-12-06 every follower took it for 0 s old: a near-cache served for
    the hour whatever stopped the feed, here a consumer gone (found by a
    review). Now a follower refuses one ahead by more than feed_max_lag, and
    the next claim puts a true one in its place."""
    f = start(fleet, mc_pool, db, postgresql={"invalidation_poll": "0"})   # no consumer
    c = start(fleet, mc_pool, db)
    harness.wait_until(lambda: f.stats()["near_serving"] == 1, timeout=10, what="serving")
    c.stop()
    harness.wait_until(lambda: f.stats()["near_serving"] == 0, timeout=FEED_MAX_LAG + 5,
                       what="no claims: not fresh")
    db.q("UPDATE objcached.feed_head SET caught_up_at = clock_timestamp() + interval '1 hour'")
    deadline = time.monotonic() + FEED_MAX_LAG + 1   # 20 polls
    while time.monotonic() < deadline:
        assert f.stats()["near_serving"] == 0, "served on a caught_up_at from the future"
        time.sleep(0.05)
    assert f.stats()["feed_clock_ahead"] > 0
    assert f.log().count("event=feed_clock_ahead ") == 1
    start(fleet, mc_pool, db)                    # a consumer claims: a true caught_up_at
    harness.wait_until(lambda: f.stats()["near_serving"] == 1, timeout=10,
                       what=lambda: f"serving again:\n{f.log(2000)}")
    assert "event=feed_clock_ahead_ended" in f.log()
    assert db.one("SELECT caught_up_at <= clock_timestamp() FROM objcached.feed_head")


def by_server(oc, mc_pool, db, ids):
    """Read Item:ids through oc, then ([ids on mc_pool[0]], [ids on mc_pool[1]])."""
    gen = db.generation("Item")
    with oc.client() as c:
        c.get_multi([f"Item:{i}" for i in ids])
    oc.wait_idle()
    where = {i: [srv for srv, _, _ in oc_c.raw_items(mc_pool, oc_c.cache_key("Item", i, gen))]
             for i in ids}
    return tuple([i for i in ids if where[i] == [m.address]] for m in mc_pool[:2])


def failed_delete_refill(db, mc_pool, proxy, start_writer, start_reader, near_deadline,
                         ids=range(200, 260)):
    """The scenario of a memcached server that fails a key's delete while it
    still serves reads (`proxy`, in front of mc_pool[1], drops deletes).
    start_writer(**sections) starts the sidecar that applies invalidations,
    start_reader(**sections) one that only reads and follows the feed."""
    mc = {"servers": f"{mc_pool[0].address} {proxy.address}", "io_timeout": "200ms",
          "retry_timeout": "300ms", "failover": "off", "failure_limit": "100"}
    a = start_writer(memcached=mc)
    b = start_reader(memcached=mc, postgresql={"invalidation_poll": "0"})
    harness.wait_until(lambda: b.stats()["near_serving"] == 1, timeout=15, what="serving")
    front, behind = by_server(b, mc_pool, db, ids)
    assert len(behind) >= 4 and front
    k = behind[0]
    key = f"Item:{k}"
    old = row(db, "items", k)
    warm(b, [key])

    def in_feed():
        return db.one("SELECT count(*) FROM objcached.feed WHERE model = 'Item' "
                      "AND keys @> ARRAY[%s]", (str(k),))
    proxy.set_mode("drop-deletes")
    for i in behind[1:4]:   # b connects again (the switch reset it): its next read of
        get(b, f"Item:{i}")  # the key goes to memcached, not to PostgreSQL
    t_commit = time.monotonic()
    db.q("UPDATE items SET name = 'after a failed delete' WHERE id = %s", (k,))
    new = row(db, "items", k)
    harness.wait_until(lambda: a.stats()["inval_requeued"] >= 1, timeout=15,
                       what="the failed delete requeued")
    harness.wait_until(lambda: proxy.dropped >= 1, timeout=5, what="a delete dropped")
    harness.wait_until(lambda: in_feed() == 1, timeout=5, what="the key in the feed once")
    # b reads the key meanwhile: memcached still has the old row, and b's
    # near-cache may keep it; other writes keep flowing (and proving the
    # feed fresh, but not past the requeued row)
    seen_old = 0
    end = t_commit + near_deadline + 2
    while time.monotonic() < end:
        db.q("UPDATE items SET n = n + 1 WHERE id = %s", (front[0],))
        got, from_near = near_read(b, key)
        seen_old += got == old
        late = time.monotonic() - t_commit
        assert not (got == old and from_near and late > near_deadline), \
            f"b's near-cache still serves the old row {late:.3f} s after the commit: " \
            f"{ {n: v for n, v in b.stats().items() if n.startswith(('feed', 'near'))} }"
        time.sleep(0.05)
    assert seen_old, "memcached should have served the old row while its delete failed"
    assert b.stats()["near_serving"] == 0, "held back by the requeued row"
    assert in_feed() == 1, "a failed retry is not appended"
    # the server deletes again: the retry works and is appended to the feed again
    proxy.set_mode("forward")
    harness.wait_until(lambda: in_feed() == 2, timeout=10, what="the retry in the feed")
    fresh_within_deadline((a, b), key, new, time.monotonic())
    harness.wait_until(lambda: b.stats()["near_serving"] == 1, timeout=10,
                       what="serving again")
    assert get(b, key) == new


def test_a_failed_delete_holds_freshness_back_and_its_retry_reaches_the_feed(
        fleet, mc_pool, db):
    """memcached fails a key's delete while it still serves reads: the key goes
    to the feed at once and its delete is requeued. A sidecar that reads it
    meanwhile gets memcached's old row and may keep it in its near-cache; the
    requeued row keeps the write's time and holds the feed's proof of
    freshness back, so that near-cache stops answering feed_max_lag after
    the commit though other writes flow; the retry that works is appended to
    the feed again, and every sidecar serves the new row."""
    proxy = oc_c.McProxy(mc_pool[1].port)
    try:
        failed_delete_refill(db, mc_pool, proxy,
                             lambda **kw: start(fleet, mc_pool, db, **kw),
                             lambda **kw: start(fleet, mc_pool, db, **kw), NEAR_DEADLINE)
    finally:
        proxy.close()


def test_a_server_down_with_failover_holds_nothing_back(fleet, mc_pool, db):
    """With failover on, a memcached server marked down is emptied before it
    serves again, so a delete that fails there cannot leave an old value to
    refill from: it is requeued without holding the feed back, and the
    near-cache keeps serving through the outage. The consumer retries at its
    poll, not in a loop against PostgreSQL; once the server is back its keys
    are applied and fresh."""
    server_down_holds_nothing(db, mc_pool, lambda **kw: start(fleet, mc_pool, db, **kw),
                              FEED_MAX_LAG)


def server_down_holds_nothing(db, mc_pool, start_writer, feed_max_lag):
    """The scenario above; start_writer(**sections) starts the sidecar that
    applies the invalidations (and has a near-cache)."""
    a = start_writer(memcached={"failure_limit": "1", "retry_timeout": "500ms"})
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    kept, gone = by_server(a, mc_pool, db, range(100, 160))
    assert gone and kept
    flushes = a.stats()["near_flushes"]
    mc_pool[1].kill()
    try:
        db.q("UPDATE items SET name = 'while its server is down' WHERE id = %s", (gone[0],))
        harness.wait_until(lambda: a.stats()["inval_requeued"] >= 1, timeout=10,
                           what="the failed delete requeued")
        assert a.stats()[f"mc_server:{mc_pool[1].address}:state"] != "up"
        r0 = a.stats()["inval_requeued"]
        end = time.monotonic() + feed_max_lag + 2
        while time.monotonic() < end:   # writes flow; the near-cache keeps serving
            db.q("UPDATE items SET n = n + 1 WHERE id = %s", (kept[0],))
            assert a.stats()["near_serving"] == 1, a.stats()
            time.sleep(0.1)
        assert a.stats()["near_flushes"] == flushes
        assert db.one("SELECT count(*) FROM objcached.outbox WHERE requeued") >= 1
        assert db.one("SELECT count(*) FROM objcached.outbox WHERE holds_back") == 0
        # at the poll (200 ms) and after each write: tens, not thousands
        assert a.stats()["inval_requeued"] - r0 < 100, a.stats()["inval_requeued"] - r0
    finally:
        mc_pool[1].start()
    harness.wait_until(lambda: db.one("SELECT count(*) FROM objcached.outbox") == 0,
                       timeout=30, what="the requeued deletes applied")
    assert get(a, f"Item:{gone[0]}") == row(db, "items", gone[0])


def test_a_fill_racing_an_invalidation_does_not_install_the_old_row(fleet, mc_pool, db, tmp_path):
    """The fill gate holds A's write-back after its PostgreSQL read; an
    UPDATE commits and its invalidation is applied everywhere; the gate
    opens: A answers its (old) read, but neither memcached nor A's
    near-cache keeps the old row."""
    gate = tmp_path / "gate"
    a = start(fleet, mc_pool, db, env={"OBJCACHED_FAULT_FILL_GATE": str(gate)})
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    # admitted already: the doorkeeper has seen the key (a miss of an absent id)
    db.q("DELETE FROM items WHERE id = 31")
    assert get(a, "Item:31") is None
    a.wait_idle()
    db.q("INSERT INTO items (id, name) VALUES (31, 'old')")
    harness.wait_until(lambda: get(a, "Item:31") is not None, timeout=5, what="the insert")
    gate.touch()
    db.q("UPDATE items SET name = 'older' WHERE id = 31")
    old = row(db, "items", 31)
    t = time.monotonic()
    res = {}
    th = threading.Thread(target=lambda: res.update(v=get(a, "Item:31")))
    harness.wait_until(lambda: a.stats()["inval_connected"] == 1, what="consumer")
    time.sleep(NEAR_DEADLINE)   # the update's invalidation was applied
    th.start()
    harness.wait_until(lambda: a.stats()["loads_in_flight"] >= 1, timeout=5,
                       what="a fill held at the gate")
    db.q("UPDATE items SET name = 'newest' WHERE id = 31")
    new = row(db, "items", 31)
    harness.wait_until(lambda: a.stats()["near_invalidations"] > 0, what="invalidation")
    time.sleep(NEAR_DEADLINE)
    gate.unlink()
    th.join(10)
    assert res["v"] in (old, new)
    a.wait_idle()
    fresh_within_deadline((a,), "Item:31", new, t + NEAR_DEADLINE * 2)


# ------------------------------------------------------------------ memory, reload, hostile

def test_memory_stays_under_the_limit(fleet, mc_pool, db):
    limit = 8 << 20
    a = start(fleet, mc_pool, db, size="8m", postgresql={"feed_max_lag": "60s"})
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    with a.client() as c:
        for base in range(1, 1_000_001, 1000):   # a million absent ids, offered twice
            keys = [f"Item:{i}" for i in range(base + 1000, base + 2000)]
            for _ in range(2):
                assert c.get_multi(keys)[1] == b"END"
            s = c.stats()
            assert s["near_bytes"] <= limit, s["near_bytes"]
    s = a.stats()
    assert s["near_evictions"] > 0 and s["near_entries"] > 10000
    # (RSS at the limit is a benchmark figure, bench/run.py: not under ASan)


def test_reload_turns_it_on_and_off(fleet, mc_pool, db):
    from test_reload import edit, reload
    a = start(fleet, mc_pool, db, size="0")
    assert a.stats()["near_serving"] == 0
    with a.client() as c:
        for _ in range(3):
            c.get_multi(["Item:41"])
        assert a.stats()["near_hits"] == 0
    assert reload(a, edit(a.config_text, "objcached", "near_cache_size", "16m"))
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    warm(a, ["Item:41"])
    assert reload(a, edit(a.config_text, "objcached", "near_cache_size", "0"))
    assert a.stats()["near_entries"] == 0 and a.stats()["near_serving"] == 0
    with a.client() as c:
        h = a.stats()["near_hits"]
        c.get_multi(["Item:41"])
        assert a.stats()["near_hits"] == h


def test_reload_drops_a_model_whose_definition_changed(fleet, mc_pool, db):
    """A reload that changes what a model's keys name (here its columns)
    drops that model's near-cache entries, read under the old definition;
    one that leaves the model as it was keeps them."""
    from test_reload import edit, reload
    a = start(fleet, mc_pool, db, postgresql={"feed_max_lag": "60s"})
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    warm(a, ["Item:41", "Item:42"])
    assert a.stats()["near_entries"] == 2
    assert reload(a, edit(a.config_text, "model Big", "ttl", "2h"))
    assert a.stats()["near_entries"] == 2          # Item's definition did not change
    assert reload(a, edit(a.config_text, "model Item", "columns", "id, name"))
    assert a.stats()["near_entries"] == 0
    assert a.stats()["near_flushes"] == 0          # the model's entries, not a flush


def test_a_key_prefix_changed_and_back_does_not_serve_what_the_near_cache_held(
        fleet, mc_pool, db):
    """key_prefix A -> B -> A by two reloads: a write committed during B is
    invalidated under B's keys only (the feed keys with the prefix of the
    moment), so what the near-cache held under A from before must not be
    served once A is back. memcached's own A entry, which missed that delete
    too, is flushed here as if it had expired: operations.md says what it
    keeps."""
    from test_reload import edit, reload
    a = start(fleet, mc_pool, db, postgresql={"feed_max_lag": "60s"})
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    old = warm(a, ["Item:41"])[0][2]
    assert reload(a, edit(a.config_text, "objcached", "key_prefix", "ob:"))
    keys = a.stats()["feed_keys"]
    db.q("UPDATE items SET n = n + 1000 WHERE id = 41")
    harness.wait_until(lambda: a.stats()["feed_keys"] > keys, timeout=10,
                       what="the feed to apply the update under ob:")
    new = row(db, "items", 41)
    assert new != old
    assert reload(a, a.config_text)                      # back to oc:
    for m in mc_pool:
        m.flush_all()
    assert mg_origin(a, "Item:41") == (new, "n0")


def test_one_huge_multiget_of_distinct_keys_keeps_the_hot_ones(fleet, mc_pool, db):
    # a long feed_max_lag: this test is about eviction, not freshness
    a = start(fleet, mc_pool, db, size="2m", objcached={"max_keys": "10000", "max_line": "1m"},
              postgresql={"feed_max_lag": "60s"})
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    hot = [f"Item:{i}" for i in range(1, 51)]
    warm(a, hot)
    with a.client() as c:
        for base in range(1000, 101000, 10000):
            assert c.get_multi([f"Item:{i}" for i in range(base, base + 10000)])[1] == b"END"
        s0 = c.stats()
        c.get_multi(hot)
        s1 = c.stats()
    assert s1["near_flushes"] == 0, s1
    assert s1["near_hits"] - s0["near_hits"] >= 45, (s0["near_hits"], s1["near_hits"])


def test_binary_gets_are_served_from_the_near_cache(fleet, mc_pool, db):
    """A binary get answered entirely by the near-cache completes inside
    oc_req_start (no done call): the binary connection must reply at once
    and go on with the next command, as the text one does."""
    from test_binary import Bin, GETK, GETKQ, NOOP, OK, req
    a = start(fleet, mc_pool, db)
    warm(a, ["Item:5", "Item:6"])
    s0 = a.stats()
    with Bin(a) as c:
        for _ in range(3):
            c.send(req(GETKQ, "Item:5", opaque=1) + req(GETK, "Item:6", opaque=2) +
                   req(NOOP, opaque=3))
            got, end = c.read_until_noop()
            assert [(r.opcode, r.status, r.key, r.value) for r in got] == \
                [(GETKQ, OK, b"Item:5", row(db, "items", 5)),
                 (GETK, OK, b"Item:6", row(db, "items", 6))]
            assert end.opaque == 3
    s1 = a.stats()
    assert s1["near_hits"] - s0["near_hits"] == 6
    assert s1["mc_gets"] == s0["mc_gets"]


def test_a_get_mixing_models_with_and_without_near_ttl_answers_each_key(
        fleet, mc_pool, db):
    """A get's keys are asked of the near-cache 16 at a time, only those of
    models with a near_ttl (oc_near_get_many): with keys of a model without
    one between them, in more than one group, each key gets its own value
    (none shifted to a neighbour), the near_ttl ones from the near-cache and
    only they counted there, the others from memcached."""
    models = {"Item": MODELS["Item"], "Big": {"table": "big"}}
    a = fleet.start(oc_c.sidecar_config(
        mc_pool, db.conninfo, models,
        {"objcached": {"near_cache_size": "64m"},
         "postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms",
                        "feed_max_lag": f"{int(FEED_MAX_LAG * 1000)}ms"}}))
    harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
    # 3 of Item, then 2 of Big, and so on: 45 keys, groups of 16 split anywhere
    keys = [f"Item:{i}" if i % 5 < 3 else f"Big:{i}" for i in range(1, 46)]
    want = [row(db, "items" if k.startswith("Item") else "big", int(k.split(":")[1]))
            for k in keys]
    n_item = sum(k.startswith("Item") for k in keys)
    with a.client() as c:
        for _ in range(2):  # the doorkeeper admits on the second offer
            assert c.get_multi(keys)[1] == b"END"
            a.wait_idle()
        for _ in range(3):
            s0 = c.stats()
            values, end = c.get_multi(keys)
            s1 = c.stats()
            assert end == b"END"
            assert [(v[0].decode(), v[2]) for v in values] == list(zip(keys, want))
            assert s1["near_hits"] - s0["near_hits"] == n_item, (s0, s1)
            assert s1["near_misses"] == s0["near_misses"], (s0, s1)
            assert s1["mc_gets"] - s0["mc_gets"] == 1, (s0, s1)


# ------------------------------------------------------------------ a resync skips rows

def test_a_read_begun_while_the_feed_was_down_is_refused_after_the_resync(
        fleet, mc_pool, db, pg):
    """A's feed is down (its near-cache emptied, not serving). A get begins
    then and reads the old row from memcached (a proxy holds its answer).
    Meanwhile an UPDATE commits and b's consumer applies it (memcached delete,
    feed row). A's feed comes back: the resync jumps the cursor to the head,
    past that feed row, and proves A fresh again. A's get then finishes: the
    old row, read before the invalidation, must not enter A's near-cache.
    (Before the resync moved the near-cache's epoch, it did, and was served
    until near_ttl.)"""
    import faultproxy
    mcp = faultproxy.FaultProxy(mc_pool[0].port, name="mc")
    feedp = faultproxy.FaultProxy(pg.port, name="feed")
    try:
        b = start(fleet, mc_pool[:1], db)
        a = start(fleet, mcp.address, db,
                  memcached={"io_timeout": "30s"},
                  postgresql={"invalidation_poll": "0",
                              "feed_conninfo": f"host=127.0.0.1 port={feedp.port} "
                                               f"dbname={db.name} user=postgres"})
        for oc in (a, b):
            harness.wait_until(lambda oc=oc: oc.stats()["near_serving"] == 1, timeout=10,
                               what="serving")
        key = "Item:51"
        old = row(db, "items", 51)
        warm(a, [key])                      # in memcached; A's doorkeeper knows it
        feedp.set_mode("reset")             # A loses its feed: emptied, not serving
        harness.wait_until(lambda: a.stats()["feed_connected"] == 0
                           and a.stats()["near_serving"] == 0, timeout=10,
                           what="A's feed down")
        D = 5.0
        mcp.set_mode("delay", delay=D)
        res = {}

        def slow_get():
            # The proxy holds each chunk D seconds both ways: the get's mg
            # reaches memcached after D, its answer comes back after 2 D,
            # the client's default timeout (10 s): it timed out in 2 of 3
            # runs. A longer one here.
            with a.client(timeout=30) as c:
                values, end = c.get_multi([key])
            assert end == b"END", end
            res["v"] = values[0][2] if values else None
        th = threading.Thread(target=slow_get)
        t0 = time.monotonic()
        th.start()
        time.sleep(D + 0.5)                 # memcached answered the old row (held)
        t_commit = time.monotonic()
        db.q("UPDATE items SET name = 'after the resync' WHERE id = 51")
        new = row(db, "items", 51)
        harness.wait_until(lambda: db.one("SELECT count(*) FROM objcached.feed WHERE "
                                          "model = 'Item' AND keys @> ARRAY['51']") == 1,
                           timeout=2, what="b applied the update")
        feedp.set_mode("forward")
        harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=4,
                           what="A's feed back")
        assert time.monotonic() - t0 < 2 * D, "A resynced too late for this scenario"
        th.join(30)
        assert res["v"] == old              # the read began before the commit
        mcp.set_mode("forward")
        a.wait_idle()
        fresh_within_deadline((a,), key, new, t_commit)
    finally:
        mcp.close()
        feedp.close()


def test_a_generation_learnt_by_a_resync_is_used_and_logged(fleet, mc_pool, db, pg):
    """A's consumer is off and its feed is down while b applies a TRUNCATE
    (a new generation, in the feed). When A's feed comes back, the resync
    reads the new generation: A uses it (the old entries are unreachable)
    and logs it, as the feed and the consumer do (before, a resync switched
    silently, and test_write_path's TRUNCATE test waited for a log line
    that never came when a resync got there first)."""
    import faultproxy
    feedp = faultproxy.FaultProxy(pg.port, name="feed")
    try:
        b = start(fleet, mc_pool, db)
        a = start(fleet, mc_pool, db,
                  postgresql={"invalidation_poll": "0",
                              "feed_conninfo": f"host=127.0.0.1 port={feedp.port} "
                                               f"dbname={db.name} user=postgres"})
        harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
        key = "Item:52"
        assert get(a, key) == row(db, "items", 52)
        feedp.set_mode("reset")
        harness.wait_until(lambda: a.stats()["feed_connected"] == 0, timeout=10,
                           what="A's feed down")
        g0 = db.generation("Item")
        db.q("TRUNCATE items")
        g1 = db.generation("Item")
        assert g1 > g0
        oc_c.wait_generation(b, "Item", g1)
        assert get(a, key) is not None            # A still reads the old generation
        feedp.set_mode("forward")
        oc_c.wait_generation(a, "Item", g1)
        assert f"event=model_generation model=Item generation={g1} source=resync" in a.log()
        harness.wait_until(lambda: get(a, key) is None, timeout=5, what="A on the new one")
    finally:
        feedp.close()


def test_a_consumer_generation_read_before_a_truncate_does_not_move_it_back(
        fleet, mc_pool, db, pg):
    """A's consumer reads the generations (its claim's transaction) just
    before a TRUNCATE commits, and its answer is slow to come back (a proxy
    holds it). Meanwhile b's consumer appends the TRUNCATE to the feed, and
    A's feed moves A to the new generation. When the consumer's answer
    arrives, it must not move A back to the old one: A would read the old
    generation's entries in memcached again, rows the TRUNCATE removed, and
    keep them in its near-cache while its feed proves it fresh. (Before,
    the consumer set whatever it read, older or not.)"""
    import faultproxy
    proxy = faultproxy.FaultProxy(pg.port, name="pg")
    try:
        b = start(fleet, mc_pool, db)
        a = start(fleet, mc_pool, db,
                  postgresql={"conninfo": f"host=127.0.0.1 port={proxy.port} "
                                          f"dbname={db.name} user=postgres",
                              "feed_conninfo": db.conninfo,
                              # A's consumer claims at start and on NOTIFY objcached only
                              "invalidation_poll": "10m"})
        harness.wait_until(lambda: a.stats()["near_serving"] == 1, timeout=10, what="serving")
        key = "Item:53"
        assert warm(a, [key])[0][2] == row(db, "items", 53)   # in memcached, A's near-cache
        g0 = db.generation("Item")
        proxy.hold_replies_after(b"FROM objcached.models")
        db.q("NOTIFY objcached")            # A's consumer claims, then reads the generations
        harness.wait_until(lambda: proxy.held_ports(), timeout=10,
                           what="A's consumer's generations read, its answer held")
        port = proxy.held_ports()[0]
        db.q("TRUNCATE items")
        g1 = db.generation("Item")
        assert g1 > g0
        oc_c.wait_generation(a, "Item", g1)     # A's feed: the TRUNCATE's feed row
        assert get(a, key) is None
        proxy.release()
        harness.wait_until(
            lambda: db.one("SELECT state FROM pg_stat_activity WHERE client_port = %s",
                           (port,)) == "idle",
            timeout=10, what="A's consumer's cycle over")
        a.wait_idle()
        for _ in range(3):                  # memcached, then the near-cache's turn
            assert get(a, key) is None, "A serves a row the TRUNCATE removed"
        assert oc_c.log_generation(a, "Item") == g1, a.log()
    finally:
        proxy.close()

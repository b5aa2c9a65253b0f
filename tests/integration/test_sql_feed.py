"""Schema version 2 of sql/install.sql, as docs/invalidation.md describes it:
the feed (feed_append, feed_heartbeat, feed_heartbeat_if_drained, feed_prune,
feed_poll) with hostile and malformed input, its ordering promise under
concurrency, a hot standby reading it; the WAL source's side of attach (replica
identity, publication, moving between modes, wal_check, wal_tables, uninstall
dropping the publication and the slot); outbox.requeued; and the upgrade of a
version-1 database in place.

One throwaway cluster with wal_level = logical for the whole file; every test
gets a fresh database cloned from a template with the hook installed."""

import datetime
import os
import random
import re
import select
import tempfile
import threading
import time

import psycopg2
import psycopg2.extras
import pytest

import harness
from test_sql_hook import INSTALL, UNINSTALL, Db, run_psql

HERE = os.path.dirname(os.path.abspath(__file__))
V1_INSTALL = os.path.join(HERE, "objcached_v1_install.sql")   # sql/install.sql as of schema version 1
TEMPLATE = "oc_feed_template"
FEED_FUNCS = ("feed_append", "feed_heartbeat", "feed_heartbeat_if_drained", "feed_prune",
              "feed_poll")
APPEND_SQL = "SELECT objcached.feed_append(%s, %s, %s, %s, %s, %s, %s)"
POLL_COLS = ("head", "caught_up_at", "pruned_upto", "db_now", "seq", "model", "keys",
             "generation", "committed_at")


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def cluster():
    server = harness.Postgres(dbname="postgres", settings={
        "wal_level": "logical", "max_wal_senders": "8", "max_replication_slots": "8"})
    try:
        server.start()
        server.execute(f'CREATE DATABASE "{TEMPLATE}"')
        run_psql(server, TEMPLATE, INSTALL)
        yield server
    finally:
        server.cleanup()


_counter = [0]


def _fresh(cluster, template):
    _counter[0] += 1
    name = f"oc_feed_{_counter[0]}"
    cluster.copy_database(name, template)
    return Db(cluster, name)


def _drop(cluster, d):
    d.close()
    # A slot of this database would keep DROP DATABASE from working, and slot objcached
    # (of any database) would be in the next test's way.
    cluster.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE (database = %s OR slot_name = 'objcached') AND NOT active", (d.name,))
    cluster.execute(f'DROP DATABASE "{d.name}" WITH (FORCE)')


@pytest.fixture
def db(cluster):
    d = _fresh(cluster, TEMPLATE)
    yield d
    _drop(cluster, d)


@pytest.fixture
def bare_db(cluster):
    d = _fresh(cluster, "template1")
    yield d
    _drop(cluster, d)


def err(db, sql, params=None, conn=None):
    """The message (with DETAIL and HINT) of the error sql raises; it must raise.
    A non-autocommit conn is rolled back."""
    conn = conn or db.conn
    with pytest.raises(psycopg2.Error) as info:
        db.q(sql, params, conn=conn)
    if not conn.autocommit:
        conn.rollback()
    e = info.value
    return (e.pgerror or str(e)), e.pgcode


def append(db, models=None, keys=None, whole=None, bump=False, committed_at=None,
           caught_up_at=None, writer="test", conn=None):
    return db.one(APPEND_SQL, (models, keys, whole, bump, committed_at, caught_up_at, writer),
                  conn=conn)


def poll(db, after, limit=1000, conn=None):
    """feed_poll as a list of dicts."""
    return [dict(zip(POLL_COLS, r)) for r in
            db.q("SELECT * FROM objcached.feed_poll(%s, %s)", (after, limit), conn=conn)]


def feed(db):
    """[(seq, model, keys, generation)] in seq order."""
    return db.q("SELECT seq, model, keys, generation FROM objcached.feed ORDER BY seq")


def head(db):
    return db.q("SELECT seq, caught_up_at, pruned_upto, writer FROM objcached.feed_head")[0]


def notifies(conn, timeout=3.0, want=1):
    deadline = time.monotonic() + timeout
    while len(conn.notifies) < want and time.monotonic() < deadline:
        select.select([conn], [], [], max(0.0, deadline - time.monotonic()))
        conn.poll()
    out = [(n.channel, n.payload) for n in conn.notifies]
    del conn.notifies[:]
    return out


def users(db, name="users", model="User", key="id", via="triggers"):
    db.q(f"CREATE TABLE {name} (id bigint PRIMARY KEY, name text, v int NOT NULL DEFAULT 0)")
    if model:
        db.q("SELECT objcached.attach(%s, %s, %s, %s)", (name, model, key, via))
        db.clear()


# ------------------------------------------------------------------ install

def test_install_creates_an_empty_feed(db):
    assert db.q("SELECT seq, caught_up_at, pruned_upto FROM objcached.feed_head") == [(0, None, 0)]
    assert feed(db) == []
    rows = poll(db, 0)
    assert len(rows) == 1 and rows[0]["head"] == 0 and rows[0]["seq"] is None
    assert db.one("SELECT value FROM objcached.meta WHERE key = 'schema_version'") == "2"
    # A second row in feed_head is impossible.
    msg, _ = err(db, "INSERT INTO objcached.feed_head (singleton, seq, pruned_upto, updated_at) "
                     "VALUES (false, 0, 0, now())")
    assert "feed_head_one_row" in msg


def test_reinstall_keeps_the_feed(db):
    append(db, ["User"], ["1"])
    run_psql(db.server, db.name, INSTALL)
    assert [r[1:3] for r in feed(db)] == [("User", ["1"])]
    assert head(db)[0] == feed(db)[0][0]


# ------------------------------------------------------------------ feed_append

def test_append_rows_head_and_notification(db):
    users(db)
    users(db, name="posts", model="Post")
    gen = db.one("SELECT generation FROM objcached.models WHERE model = 'Post'")
    listener = db.connect()
    db.q("LISTEN objcached_feed", conn=listener)
    t = db.one("SELECT now() - interval '1 second'")
    h = append(db, ["User", "Post", "User", "User", "User"], ["2", "7", "1", "2", None],
               whole=["Post", None, "Post"], committed_at=t)
    rows = feed(db)
    # keyed rows first, by model, then the whole-model rows; keys distinct, sorted, NULL left out
    assert [r[1:] for r in rows] == [("Post", ["7"], None), ("User", ["1", "2"], None),
                                     ("Post", None, gen)]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert h == rows[-1][0] == head(db)[0]
    assert head(db)[3] == "test"
    assert db.q("SELECT DISTINCT committed_at FROM objcached.feed") == [(t,)]
    # one notification for the whole batch, its payload the head
    assert notifies(listener) == [("objcached_feed", str(h))]
    # a rolled-back append notifies nothing and moves nothing
    c = db.connect(autocommit=False)
    append(db, ["User"], ["9"], conn=c)
    c.rollback()
    assert notifies(listener, timeout=0.5) == []
    assert head(db)[0] == h


def test_append_whole_model_generations(db):
    users(db)
    g0 = db.one("SELECT generation FROM objcached.models")
    append(db, whole=["User"], bump=False)          # trigger mode: read as it is
    assert feed(db)[-1][1:] == ("User", None, g0)
    assert db.one("SELECT generation FROM objcached.models") == g0
    append(db, whole=["User"], bump=True)           # the WAL reader's TRUNCATE: bumped first
    g1 = db.one("SELECT generation FROM objcached.models")
    assert g1 > g0 and feed(db)[-1][1:] == ("User", None, g1)
    # not attached: no row (a whole-model row must carry a generation), and no error
    n = len(feed(db))
    h = append(db, whole=["Nobody"], bump=True)
    assert len(feed(db)) == n and h == head(db)[0]
    assert db.one("SELECT count(*) FROM objcached.models WHERE model = 'Nobody'") == 0


def test_append_of_one_model_the_way_the_wal_reader_sends_it(db):
    """The WAL reader's batches (one model, no whole-model row, at most
    100,000 keys) take feed_append's fast path: the same rows as the
    general one."""
    listener = db.connect()
    db.q("LISTEN objcached_feed", conn=listener)
    h = append(db, ["User"] * 6, ["b", "a", None, "b", "10", "a"])
    assert [r[1:] for r in feed(db)] == [("User", ["10", "a", "b"], None)]
    assert h == feed(db)[-1][0] == head(db)[0]
    assert notifies(listener) == [("objcached_feed", str(h))]
    # only NULL keys: no row, the head stays
    assert append(db, ["User", "User"], [None, None]) == h and len(feed(db)) == 1
    # arrays that do not start at 1
    db.q("SELECT objcached.feed_append('[5:6]={User,User}'::text[], '[5:6]={y,x}'::text[], "
         "NULL, false, NULL, NULL, 't')")
    assert feed(db)[-1][1:] == ("User", ["x", "y"], None)
    # exactly 100,000 distinct keys: one row
    append(db, ["Big"] * 100_000, [str(i) for i in range(100_000)])
    assert db.one("SELECT cardinality(keys) FROM objcached.feed ORDER BY seq DESC LIMIT 1") \
        == 100_000
    # a NULL model among equal ones is refused, as by the general path
    msg, code = err(db, APPEND_SQL, (["User", None, "User"], ["1", "2", "3"], None, False,
                                     None, None, "t"))
    assert "invalid model name NULL" in msg and code == "22023"


def test_append_chunks_at_100000_distinct_keys(db):
    keys = [str(i) for i in range(100_001)]
    # every key twice: 200,002 pairs, 100,001 distinct keys
    append(db, ["Big"] * (2 * len(keys)), keys + keys)
    rows = db.q("SELECT model, cardinality(keys) FROM objcached.feed ORDER BY seq")
    assert rows == [("Big", 100_000), ("Big", 1)]
    assert db.one("SELECT count(DISTINCT k) FROM objcached.feed, unnest(keys) k") == 100_001


HOSTILE_KEYS = ["", " ", "a b", "O'Brien", 'say "hi"', "back\\slash", "{x}", "a,b", "NULL",
                "tab\tnew\nline\rcr", "\x01\x1f\x7f", "Zoë 日本 🎉", "x" * 5000, "$$", "*/"]


def test_append_keeps_hostile_keys_exactly(db):
    append(db, ["Page"] * len(HOSTILE_KEYS), HOSTILE_KEYS)
    got = poll(db, 0)
    assert len(got) == 1
    assert sorted(got[0]["keys"]) == sorted(HOSTILE_KEYS)
    # and through the text protocol's array literal too (what libpq gives a C reader)
    lit = db.one("SELECT keys::text FROM objcached.feed_poll(0, 10)")
    assert db.one("SELECT %s::text[]", (lit,)) == got[0]["keys"]


@pytest.mark.parametrize("args, expect", [
    ((None, ["1"]), "must both be NULL or both be arrays"),
    ((["User"], None), "must both be NULL or both be arrays"),
    ((["User", "User"], ["1"]), "p_models has 2 elements and p_keys 1"),
    ((["User"], ["1", "2"]), "p_models has 1 elements and p_keys 2"),
    ((["User", None], ["1", "2"]), "invalid model name NULL"),
    ((["Us'er"], ["1"]), "invalid model name \"Us'er\""),
    ((["a\\b"], ["1"]), 'invalid model name "a\\\\b"'),
    ((["a\nb\x01"], ["1"]), 'invalid model name "a\\nb\\u0001"'),
    ((["a;DROP TABLE x"], ["1"]), "invalid model name"),
    ((["x" * 65], ["1"]), "invalid model name"),
    ((["1User"], ["1"]), "invalid model name"),
])
def test_append_rejects_malformed_input(db, args, expect):
    msg, code = err(db, APPEND_SQL, args + (None, False, None, None, "t"))
    assert expect in msg, msg
    assert code == "22023"
    assert feed(db) == [] and head(db)[0] == 0


def test_append_rejects_two_dimensional_arrays_bad_whole_and_null_bump(db):
    users(db)
    for sql, expect in [
        ("SELECT objcached.feed_append('{{User,User}}', '{{1,2}}', NULL, false, NULL, NULL, 't')",
         "arrays must have one dimension"),
        ("SELECT objcached.feed_append(NULL, NULL, '{{User}}', false, NULL, NULL, 't')",
         "arrays must have one dimension"),
        ("SELECT objcached.feed_append(NULL, NULL, ARRAY['bad name'], false, NULL, NULL, 't')",
         'invalid model name "bad name"'),
        ("SELECT objcached.feed_append(NULL, NULL, '{User}', NULL, NULL, NULL, 't')",
         "p_bump must be true or false"),
    ]:
        assert expect in err(db, sql)[0], sql
    assert feed(db) == []
    # NULL elements of p_whole are ignored, NULL p_bump is fine with no whole-model rows
    append(db, ["User"], ["1"], whole=[None], bump=None)
    assert [r[1:] for r in feed(db)] == [("User", ["1"], None)]


def test_append_nothing_moves_only_caught_up_at(db):
    t = db.one("SELECT now() - interval '1 minute'")
    assert append(db, caught_up_at=t, writer="w1") == 0
    assert head(db)[1:] == (t, 0, "w1")
    assert feed(db) == []


def test_caught_up_at_only_grows_and_never_passes_now(db):
    t1, t2 = db.q("SELECT now() - interval '2 min', now() - interval '1 min'")[0]
    append(db, caught_up_at=t2)
    append(db, caught_up_at=t1)                      # older: no step back
    assert head(db)[1] == t2
    append(db, ["User"], ["1"], caught_up_at=None)   # NULL: unchanged
    assert head(db)[1] == t2
    future = db.one("SELECT now() + interval '1 hour'")
    append(db, caught_up_at=future)                  # a claim beyond now is cut to now
    cu, now = db.q("SELECT caught_up_at, clock_timestamp() FROM objcached.feed_head")[0]
    assert t2 < cu <= now


def test_caught_up_at_is_bounded_by_the_outbox(db):
    """The WAL reader's instant says nothing of outbox rows (trigger-mode
    writes, attach's whole-model rows) that wait: caught_up_at stops at the
    first one's created_at. A requeued row (memcached failed its delete)
    holds it at its keys' write time, which requeue() keeps, until its
    retry is done."""
    users(db)
    w = db.connect(autocommit=False)
    db.q("INSERT INTO users (id) VALUES (1)", conn=w)
    started = db.one("SELECT now()", conn=w)
    time.sleep(0.05)
    w.commit()
    append(db, caught_up_at=db.one("SELECT clock_timestamp()"))
    assert head(db)[1] == started
    db.clear()
    written = db.one("SELECT now() - interval '3 s'")
    db.q("SELECT objcached.requeue('{User}', '{1}', %s)", (written,))
    db.q("SELECT objcached.requeue('{User}', '{2}', %s)",
         (written + datetime.timedelta(seconds=1),))
    assert sorted(r[0] for r in db.q("SELECT created_at FROM objcached.outbox")) == \
        [written, written + datetime.timedelta(seconds=1)]
    cu = head(db)[1]
    append(db, caught_up_at=db.one("SELECT clock_timestamp()"))
    assert head(db)[1] == cu   # held back (GREATEST: it never moves back)
    db.clear()
    now = db.one("SELECT clock_timestamp()")
    append(db, caught_up_at=now)
    assert head(db)[1] == now


def test_requeue_keeps_the_write_time(db):
    """since: the oldest write of the keys, kept as the rows' created_at; NULL
    or later than now is now. One row per model; NULL models and keys are
    left out; the consumer's grant covers two-argument calls too."""
    t0 = db.one("SELECT now()")
    db.q("SELECT objcached.requeue('{User,User,Page,NULL,Page}', '{1,2,a,b,NULL}', "
         "timestamptz '2026-01-01 00:00:00+00')")
    db.q("SELECT objcached.requeue('{User}', '{3}')")
    db.q("SELECT objcached.requeue('{User}', '{4}', NULL)")
    db.q("SELECT objcached.requeue('{User}', '{5}', now() + interval '1 hour')")
    rows = db.q("SELECT model, keys, requeued, created_at, holds_back FROM objcached.outbox "
                "ORDER BY id")
    # with a since the rows hold the feed back; without one (a server emptied before it is
    # read again) they do not
    assert [r[4] for r in rows] == [True, True, False, False, True]
    old = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    assert sorted(r[:3] + (r[3] == old,) for r in rows[:2]) == \
        [("Page", ["a"], True, True), ("User", ["1", "2"], True, True)]
    assert [r[:3] for r in rows[2:]] == \
        [("User", ["3"], True), ("User", ["4"], True), ("User", ["5"], True)]
    now = db.one("SELECT now()")
    assert all(t0 <= r[3] <= now for r in rows[2:])
    # only one signature: two-argument calls are not ambiguous
    assert db.q("SELECT pg_get_function_identity_arguments(oid) FROM pg_proc "
                "WHERE proname = 'requeue' AND pronamespace = 'objcached'::regnamespace") == \
        [("models text[], keys text[], since timestamp with time zone",)]
    # a malformed instant is an error, and nothing is requeued
    n = db.one("SELECT count(*) FROM objcached.outbox")
    assert "invalid input syntax for type timestamp with time zone" in \
        err(db, "SELECT objcached.requeue('{User}', '{1}', 'yesterday-ish')")[0]
    assert db.one("SELECT count(*) FROM objcached.outbox") == n


def test_requeue_splits_rows_at_100000_keys(db):
    """One call's keys of a model went into one outbox row whatever their
    number (300,000 took a consumer from 11 to 151 MB: a probe's finding);
    the triggers and feed_append cap a row at 100,000 keys, and so does
    requeue now, keeping the keys' order."""
    db.q("SELECT objcached.requeue(array_fill('User'::text, ARRAY[250001]) || '{Page}', "
         "ARRAY(SELECT g::text FROM generate_series(1, 250001) g) || '{a}')")
    rows = db.q("SELECT model, cardinality(keys), keys[1], keys[cardinality(keys)] "
                "FROM objcached.outbox ORDER BY model, keys[1]::text COLLATE \"C\"")
    assert sorted(rows) == sorted([("Page", 1, "a", "a"), ("User", 100000, "1", "100000"),
                                   ("User", 100000, "100001", "200000"),
                                   ("User", 50001, "200001", "250001")])


@pytest.mark.parametrize("args,expect", [
    ("'{\"no such\"}', '{1}'", "invalid model name \"no such\""),
    ("ARRAY['User', E'User\\nDROP'], '{1,2}'", "invalid model name \"User\\nDROP\""),
    ("ARRAY[repeat('x', 65)], '{1}'", "invalid model name"),
    ("'{User}', '{1,2}'", "models has 1 elements and keys 2"),
    ("'{User,User}', '{1}'", "models has 2 elements and keys 1"),
    ("'{User}', NULL", "models and keys must both be NULL or both be arrays"),
    ("NULL, '{1}'", "models and keys must both be NULL or both be arrays"),
    ("'{{User}}', '{{1}}'", "arrays must have one dimension"),
])
def test_requeue_rejects_what_would_poison_the_outbox_or_lose_keys(db, args, expect):
    """requeue() is the only way into the outbox besides the hook and attach.
    A model name attach would refuse was queued as it was, and then every
    consumer that claimed it had its feed_append refused and its batch rolled
    back, again and again: the outbox stalled. Arrays that do not pair lost
    their unpaired keys without a word. Both are errors; nothing is queued."""
    users(db)
    db.clear()
    msg, code = err(db, f"SELECT objcached.requeue({args}, now())")
    assert "objcached.requeue: " + expect in msg and code == "22023", msg
    assert db.outbox() == []
    # NULL and empty arrays requeue nothing, as before
    db.q("SELECT objcached.requeue(NULL, NULL)")
    db.q("SELECT objcached.requeue('{}', '{}')")
    assert db.outbox() == []


def c_string_macro(path, name):
    """The string a C macro made of string literals and other such macros
    expands to (the statements sidecar/oc_wal.c sends, read from its source,
    so that a test of the SQL is a test of what the sidecar runs)."""
    src = open(path).read().replace("\\\n", " ")
    defs = dict(re.findall(r"^#define (\w+) +(.+)$", src, re.M))

    def expand(body):
        out = []
        for lit, ident in re.findall(r'"((?:[^"\\]|\\.)*)"|(\w+)', body):
            out.append(expand(defs[ident]) if ident else lit.replace("\\'", "'"))
        return "".join(out)
    return expand(defs[name])


def test_wal_requeue_and_append_in_one_statement(db):
    """The WAL holder's statement for a batch with failed deletes (read from
    oc_wal.c): the requeue runs first, so the append's own caught_up_at (a
    heartbeat in the batch) is held at the batch's first commit; with since
    NULL (keys whose server is emptied before it is read again) nothing is
    held back, and the older hook's two-argument form still works."""
    users(db, via="wal")
    src = os.path.join(os.path.dirname(__file__), "..", "..", "sidecar", "oc_wal.c")
    sql = c_string_macro(src, "WAL_REQUEUE_THEN_APPEND")
    assert "FROM objcached.requeue(" in sql and sql.startswith("SELECT objcached.feed_append(")
    old_sql = c_string_macro(src, "WAL_REQUEUE_OLD_THEN_APPEND")
    pg_epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    first = db.one("SELECT now() - interval '2 s'")
    first_us = (first - pg_epoch) // datetime.timedelta(microseconds=1)
    hb = db.one("SELECT clock_timestamp()")
    c = db.connect()
    with c.cursor() as cur:
        cur.execute(f"PREPARE b(text[], text[], text[], float8, timestamptz, text, text[], "
                    f"text[], bigint) AS {sql}")
        cur.execute("EXECUTE b('{User}', '{1}', '{}', 1, %s, 'wal', '{User}', '{1}', %s)",
                    (hb, first_us))
        assert cur.fetchone()[0] >= 1
    assert db.q("SELECT keys, requeued, holds_back, created_at FROM objcached.outbox") == \
        [(["1"], True, True, first)]
    assert head(db)[1] == first     # held at the batch's first commit, not the heartbeat's
    db.clear()
    with c.cursor() as cur:             # nothing to hold back: the heartbeat counts
        cur.execute("EXECUTE b('{User}', '{2}', '{}', 1, %s, 'wal', '{User}', '{2}', NULL)",
                    (hb,))
    assert db.q("SELECT keys, requeued, holds_back FROM objcached.outbox") == \
        [(["2"], True, False)]
    assert head(db)[1] == hb
    db.clear()
    with c.cursor() as cur:
        cur.execute(f"PREPARE o(text[], text[], text[], float8, timestamptz, text, text[], "
                    f"text[]) AS {old_sql}")
        cur.execute("EXECUTE o('{User}', '{3}', '{}', 1, NULL, 'wal', '{User}', '{3}')")
    assert db.q("SELECT keys, requeued, holds_back FROM objcached.outbox") == \
        [(["3"], True, False)]


# ------------------------------------------------------------------ heartbeats

def test_heartbeat(db):
    listener = db.connect()
    db.q("LISTEN objcached_feed", conn=listener)
    t = db.one("SELECT now() - interval '5 s'")
    assert db.one("SELECT objcached.feed_heartbeat(%s, 'wal')", (t,)) == 0
    assert head(db)[1:] == (t, 0, "wal")
    assert notifies(listener) == [("objcached_feed", "0")]
    assert "p_caught_up_at must not be NULL" in \
        err(db, "SELECT objcached.feed_heartbeat(NULL, 'wal')")[0]


def test_heartbeat_if_drained(db):
    users(db)
    before = db.one("SELECT clock_timestamp()")
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c1')") is True
    cu = head(db)[1]
    assert cu >= before and head(db)[3] == "c1"
    # a waiting row: not drained; proven up to that row's writer's start, not beyond
    db.q("INSERT INTO users (id) VALUES (1)")
    waiting = db.one("SELECT created_at FROM objcached.outbox")
    assert waiting > cu
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c2')") is False
    assert head(db)[1] == waiting and head(db)[3] == "c2"
    # a later write does not move it past the first waiting row
    db.q("INSERT INTO users (id) VALUES (2)")
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c2')") is False
    assert head(db)[1] == waiting
    db.q("DELETE FROM objcached.outbox WHERE keys = '{2}'")
    # a consumer holds it (claimed, not committed): to everyone else it still waits
    c = db.connect(autocommit=False)
    claimed = db.q("SELECT id, model, keys, requeued FROM objcached.claim(10)", conn=c)
    assert [r[1:] for r in claimed] == [("User", ["1"], False)]
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c2')") is False
    assert head(db)[1] == waiting
    cu = waiting
    # it applies them, requeues one key (keeping its write time), appends what it
    # applied, commits
    db.q("SELECT objcached.requeue('{User}', '{1}', %s)", (waiting,), conn=c)
    append(db, ["User"], ["1"], conn=c)
    c.commit()
    # only a requeued row waits: not drained; held at its write time until its retry
    assert db.q("SELECT requeued, created_at FROM objcached.outbox") == [(True, waiting)]
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c2')") is False
    assert head(db)[1] == cu
    # the retry: claimed, deleted, appended again, committed: drained
    c.rollback()
    assert [r[2:] for r in db.q("SELECT id, model, keys, requeued FROM objcached.claim(10)",
                                conn=c)] == [(["1"], True)]
    append(db, ["User"], ["1"], conn=c)
    c.commit()
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c2')") is True
    assert head(db)[1] > cu
    # a requeued row that holds nothing back (its server is emptied before it is read
    # again): drained
    db.q("SELECT objcached.requeue('{User}', '{1}')")
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c2')") is True
    db.clear()
    # a model read from the WAL: the outbox does not cover it, so never drained here, and
    # nothing moves, drained or not
    users(db, name="orders", model="Order", via="wal")
    db.clear()
    cu = head(db)[1]
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c3')") is False
    db.q("INSERT INTO users (id) VALUES (3)")
    assert db.one("SELECT objcached.feed_heartbeat_if_drained('c3')") is False
    assert head(db)[1] == cu and head(db)[3] == "c2"


def test_heartbeat_if_drained_uses_the_statement_start(db):
    """Its caught_up_at is statement_timestamp(): the start of the caller's
    statement, not the end of the wait for the feed lock."""
    holder = db.connect(autocommit=False)
    db.q("SELECT objcached.feed_heartbeat(now(), 'holder')", conn=holder)   # holds the lock
    out = {}

    def drained():
        c = db.connect()
        out["t0"] = db.one("SELECT clock_timestamp()", conn=c)
        out["ok"] = db.one("SELECT objcached.feed_heartbeat_if_drained('waiter')", conn=c)
    t = threading.Thread(target=drained)
    t.start()
    time.sleep(0.5)
    holder.commit()
    t.join(10)
    cu = head(db)[1]
    assert out["ok"] is True
    assert out["t0"] < cu < out["t0"] + __import__("datetime").timedelta(seconds=0.4)


# ------------------------------------------------------------------ feed_poll

def test_poll_limits_cursors_and_head_columns(db):
    for i in range(5):
        append(db, ["User"], [str(i)])
    seqs = [r[0] for r in feed(db)]
    h = seqs[-1]
    rows = poll(db, 0)
    assert [r["seq"] for r in rows] == seqs
    assert all(r["head"] == h and r["pruned_upto"] == 0 for r in rows)
    now = db.one("SELECT clock_timestamp()")
    assert all(abs((r["db_now"] - now).total_seconds()) < 5 for r in rows)
    assert [r["seq"] for r in poll(db, seqs[1], 2)] == seqs[2:4]
    assert [r["seq"] for r in poll(db, -100, 3)] == seqs[:3]           # negative cursor
    assert [r["seq"] for r in poll(db, 0, 2_147_483_647)] == seqs       # huge limit
    for after, limit in ((h, 10), (h + 1000, 10), (0, 0)):                # nothing to return
        rows = poll(db, after, limit)
        assert len(rows) == 1 and rows[0]["head"] == h
        assert [rows[0][k] for k in POLL_COLS[4:]] == [None] * 5
    for args in ((0, -1), (None, 10), (0, None)):
        msg, code = err(db, "SELECT * FROM objcached.feed_poll(%s, %s)", args)
        assert "p_after must not be NULL and p_limit must be 0 or more" in msg and code == "22023"


def test_poll_is_one_snapshot_under_repeatable_read(db):
    append(db, ["User"], ["1"])
    r = db.connect(autocommit=False)
    r.set_session(isolation_level="REPEATABLE READ")
    first = poll(db, 0, conn=r)
    append(db, ["User"], ["2"])
    second = poll(db, 0, conn=r)
    assert [x["seq"] for x in first] == [x["seq"] for x in second]
    assert first[0]["head"] == second[0]["head"] == first[-1]["seq"]
    r.commit()
    assert len(poll(db, 0, conn=r)) == 2


def test_poll_uses_an_index_range_scan(db):
    db.q("INSERT INTO objcached.feed (seq, model, keys) "
         "SELECT g, 'User', ARRAY[g::text] FROM generate_series(1, 20000) g")
    db.q("UPDATE objcached.feed_head SET seq = 20000")
    db.q("ANALYZE objcached.feed")
    # feed_poll's statement, as it is in sql/install.sql
    src = db.one("SELECT prosrc FROM pg_proc WHERE proname = 'feed_poll'")
    query = src[src.index("RETURN QUERY") + len("RETURN QUERY"):src.rindex("END")].strip()
    query = query.rstrip(";").replace("p_after", "19990").replace("p_limit", "100")
    plan = "\n".join(r[0] for r in db.q("EXPLAIN " + query))
    assert "Index Scan using feed_pkey on feed x" in plan, plan
    assert "Index Cond: (seq > 19990)" in plan, plan
    assert "Seq Scan on feed " not in plan, plan
    assert len(poll(db, 19990)) == 10


# ------------------------------------------------------------------ prune

def test_prune(db):
    for i in range(6):
        append(db, ["User"], [str(i)])
    seqs = [r[0] for r in feed(db)]
    db.q("UPDATE objcached.feed SET created_at = created_at - interval '2 hours' WHERE seq <= %s",
         (seqs[3],))
    assert db.one("SELECT objcached.feed_prune('1 hour')") == 4
    assert [r[0] for r in feed(db)] == seqs[4:]
    assert head(db)[2] == seqs[3]
    rows = poll(db, 0)
    assert rows[0]["pruned_upto"] == seqs[3]          # a reader at 0 sees that it missed rows
    assert db.one("SELECT objcached.feed_prune('1 hour')") == 0
    assert head(db)[2] == seqs[3]
    # a clock that stepped back: an old row above a young one waits for it (rows go as a prefix
    # in seq order, so every row at or below pruned_upto is gone)
    db.q("UPDATE objcached.feed SET created_at = created_at - interval '2 hours' WHERE seq = %s",
         (seqs[5],))
    assert db.one("SELECT objcached.feed_prune('1 hour')") == 0
    assert [r[0] for r in feed(db)] == seqs[4:] and head(db)[2] == seqs[3]
    db.q("UPDATE objcached.feed SET created_at = created_at - interval '2 hours' WHERE seq = %s",
         (seqs[4],))
    assert db.one("SELECT objcached.feed_prune('1 hour')") == 2
    assert feed(db) == [] and head(db)[2] == seqs[5]
    append(db, ["User"], ["x"])
    assert db.one("SELECT objcached.feed_prune('0')") == 1
    for bad in ("NULL", "'-1 second'"):
        msg, code = err(db, f"SELECT objcached.feed_prune({bad})")
        assert "p_keep must be an interval of zero or more" in msg and code == "22023"


# ------------------------------------------------------------------ isolation and privileges

@pytest.mark.parametrize("call", [
    "SELECT objcached.feed_append('{User}', '{1}', NULL, false, NULL, NULL, 't')",
    "SELECT objcached.feed_heartbeat(now(), 't')",
    "SELECT objcached.feed_heartbeat_if_drained('t')",
    "SELECT objcached.feed_prune('1 day')",
])
@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_appenders_require_read_committed(db, call, level):
    c = db.connect(autocommit=False)
    c.set_session(isolation_level=level)
    msg, code = err(db, call, conn=c)
    assert f"run it in a READ COMMITTED transaction, not {level}" in msg and code == "25000"


def test_privileges(db):
    db.q("CREATE ROLE nobody LOGIN")
    db.q("CREATE ROLE reader LOGIN")
    db.q("CREATE ROLE appender LOGIN")
    db.q("""
        GRANT USAGE ON SCHEMA objcached TO reader, appender;
        GRANT EXECUTE ON FUNCTION objcached.feed_poll(bigint, integer) TO reader, appender;
        GRANT EXECUTE ON FUNCTION
            objcached.feed_append(text[], text[], text[], boolean, timestamptz, timestamptz, text),
            objcached.feed_heartbeat(timestamptz, text), objcached.feed_heartbeat_if_drained(text),
            objcached.feed_prune(interval) TO appender;
    """)
    nobody, reader, appender = (db.connect(user=u) for u in ("nobody", "reader", "appender"))
    calls = {
        "append": "SELECT objcached.feed_append('{User}', '{1}', NULL, false, NULL, NULL, 'x')",
        "heartbeat": "SELECT objcached.feed_heartbeat(now(), 'x')",
        "drained": "SELECT objcached.feed_heartbeat_if_drained('x')",
        "prune": "SELECT objcached.feed_prune('1 day')",
        "poll": "SELECT * FROM objcached.feed_poll(0, 10)",
        "read feed": "SELECT * FROM objcached.feed",
        "read head": "SELECT * FROM objcached.feed_head",
        "write feed": "INSERT INTO objcached.feed (seq, model, keys) VALUES (99, 'User', '{1}')",
        "write head": "UPDATE objcached.feed_head SET seq = 99",
        "draw seq": "SELECT nextval('objcached.feed_seq')",
        "lock": "SELECT objcached._feed_lock('x')",
    }
    for name, sql in calls.items():
        assert "permission denied" in err(db, sql, conn=nobody)[0], name
    for name in ("append", "heartbeat", "drained", "prune") + tuple(calls)[5:]:
        assert "permission denied" in err(db, calls[name], conn=reader)[0], name
    for name in tuple(calls)[5:]:
        assert "permission denied" in err(db, calls[name], conn=appender)[0], name
    assert db.one(calls["append"], conn=appender) == 1
    assert db.one(calls["heartbeat"], conn=appender) == 1
    assert db.one(calls["drained"], conn=appender) is True
    assert db.one(calls["prune"], conn=appender) == 0
    assert [r[5:7] for r in db.q(calls["poll"], conn=reader)] == [("User", ["1"])]
    # SECURITY DEFINER, search_path pinned, nothing for PUBLIC
    for fn in FEED_FUNCS + ("wal_check", "wal_tables"):
        secdef, config = db.q("SELECT prosecdef, proconfig FROM pg_proc WHERE proname = %s "
                              "AND pronamespace = 'objcached'::regnamespace", (fn,))[0]
        assert secdef and config[0] == "search_path=pg_catalog, pg_temp", fn
    assert db.q("SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'objcached'::regnamespace "
                "AND has_function_privilege('public', p.oid, 'EXECUTE')") == []
    assert db.q("SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'objcached'::regnamespace "
                "AND has_table_privilege('public', c.oid, 'SELECT')") == []


def test_search_path_hijack_does_not_reach_the_feed(db):
    """A caller with look-alike functions and operators ahead of pg_catalog."""
    db.q("CREATE ROLE mallory LOGIN")
    db.q("GRANT USAGE ON SCHEMA objcached TO mallory")
    db.q("GRANT EXECUTE ON FUNCTION objcached.feed_append(text[], text[], text[], boolean, "
         "timestamptz, timestamptz, text), objcached.feed_poll(bigint, integer) TO mallory")
    db.q("GRANT CREATE ON DATABASE " + db.name + " TO mallory")
    m = db.connect(user="mallory")
    db.q("""
        CREATE SCHEMA evil;
        CREATE TABLE evil.calls (what text);
        CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('nextval') RETURNING 0::bigint $$;
        CREATE FUNCTION evil.pg_advisory_xact_lock(bigint) RETURNS void LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('lock') $$;
        CREATE FUNCTION evil.unnest(text[]) RETURNS SETOF text LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('unnest') RETURNING 'x' $$;
        CREATE TEMP TABLE feed (seq bigint, model text, keys text[]);
        SET search_path = evil, pg_temp, pg_catalog, public;
    """, conn=m)
    assert db.one(APPEND_SQL, (["User"], ["1"], None, False, None, None, "m"), conn=m) == 1
    assert db.q("SELECT seq, model, keys FROM objcached.feed_poll(0, 5)", conn=m) == \
        [(1, "User", ["1"])]
    assert db.q("SELECT * FROM evil.calls") == []
    assert feed(db) == [(1, "User", ["1"], None)]


# ------------------------------------------------------------------ ordering

def test_a_later_appender_waits_and_gets_the_higher_seq(db):
    a = db.connect(autocommit=False)
    sa = append(db, ["User"], ["a"], conn=a)          # holds the feed lock until it ends
    done = {}

    def b():
        c = db.connect()
        done["seq"] = append(db, ["User"], ["b"], conn=c)
    t = threading.Thread(target=b)
    t.start()
    harness.wait_until(lambda: db.one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = 1868720739 AND objid = 1633904741") == 1, what="B to wait for the lock")
    assert poll(db, 0)[0]["seq"] is None              # neither is visible yet
    a.commit()
    t.join(10)
    assert done["seq"] > sa
    assert [(r["seq"], r["keys"]) for r in poll(db, 0)] == [(sa, ["a"]), (done["seq"], ["b"])]


def test_concurrent_appenders_and_readers(db):
    """8 appenders (some roll back, leaving seq gaps) and 4 readers polling
    with their own cursors: every reader sees every committed row exactly
    once, in seq order, and never a row below a seq it has already seen."""
    n_appenders, per_appender, n_readers = 8, 40, 4
    stop = threading.Event()
    committed, errors, lock = [], [], threading.Lock()
    seen = [[] for _ in range(n_readers)]
    violations = []

    def appender(i):
        try:
            c = db.connect(autocommit=False)
            rnd = random.Random(i)
            for j in range(per_appender):
                seq = append(db, [f"M{i}"], [str(j)], whole=None, conn=c)
                time.sleep(rnd.random() * 0.003)       # hold the lock a little
                if rnd.random() < 0.15:
                    c.rollback()
                else:
                    c.commit()
                    with lock:
                        committed.append((seq, f"M{i}", str(j)))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def reader(k):
        try:
            c = db.connect()
            cursor = 0
            rnd = random.Random(100 + k)
            while True:
                last_round = stop.is_set()
                rows = poll(db, cursor, rnd.choice([1, 3, 50]), conn=c)
                for r in rows:
                    if r["seq"] is None:
                        continue
                    if r["seq"] <= cursor:
                        violations.append((k, cursor, r["seq"]))
                    cursor = r["seq"]
                    seen[k].append((r["seq"], r["model"], r["keys"][0]))
                if last_round and rows[0]["seq"] is None:
                    return
                if rows[0]["seq"] is None:
                    time.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader, args=(k,)) for k in range(n_readers)]
    appenders = [threading.Thread(target=appender, args=(i,)) for i in range(n_appenders)]
    for t in readers + appenders:
        t.start()
    for t in appenders:
        t.join(120)
    stop.set()
    for t in readers:
        t.join(120)
    assert not errors, errors
    assert not violations, violations
    final = sorted(committed)
    assert final == [(r[0], r[1], r[2][0]) for r in feed(db)]
    assert len(final) > n_appenders * per_appender // 2
    for k in range(n_readers):
        assert seen[k] == final, f"reader {k}"
    seqs = [s for s, _, _ in final]
    assert seqs[-1] - seqs[0] + 1 > len(seqs)            # the rollbacks left gaps


# ------------------------------------------------------------------ hot standby

class Standby(harness.Postgres):
    """A streaming replica of `primary`, made with pg_basebackup -R."""

    def __init__(self, primary):
        super().__init__(dbname=primary.dbname, settings={"hot_standby": "on"})
        self.primary = primary
        self._db_created = True       # it is a copy: nothing to create (and it is read-only)

    def _init(self):
        self.dir = tempfile.mkdtemp(prefix="oc-pg-standby-", dir=self.parent_dir)
        os.chmod(self.dir, 0o755)
        if self._pw:
            os.chown(self.dir, self._pw.pw_uid, self._pw.pw_gid)
        harness._register(self)
        self._cmd(["pg_basebackup", "-h", self.primary.dir, "-p", str(self.primary.port),
                   "-U", self.SUPERUSER, "-D", self.datadir, "-R", "-X", "stream",
                   "--checkpoint=fast", "--no-sync"], timeout=180)


def test_poll_on_a_hot_standby(cluster, db):
    append(db, ["User"], ["1"])
    standby = Standby(cluster)
    try:
        standby.start()
        s = psycopg2.connect(host=standby.dir, port=standby.port, dbname=db.name, user="postgres")
        s.autocommit = True
        sd = Db.__new__(Db)
        sd.conn, sd.conns = s, [s]
        assert sd.one("SELECT pg_is_in_recovery()")
        assert [(r["seq"], r["keys"]) for r in poll(sd, 0)] == [(1, ["1"])]
        h = append(db, ["User"], ["2"], caught_up_at=db.one("SELECT clock_timestamp()"))
        harness.wait_until(lambda: poll(sd, 0)[-1]["seq"] == h, timeout=20,
                           what="the standby to replay the append")
        rows = poll(sd, 1)
        assert [(r["seq"], r["keys"], r["head"]) for r in rows] == [(h, ["2"], h)]
        assert rows[0]["caught_up_at"] == head(db)[1]
        sr = psycopg2.connect(host=standby.dir, port=standby.port, dbname=db.name, user="postgres")
        sr.set_session(isolation_level="REPEATABLE READ")
        assert len(poll(sd, 0, conn=sr)) == 2
        sr.rollback()
        msg, code = err(sd, "SELECT objcached.feed_append('{User}', '{3}', NULL, false, NULL, "
                            "NULL, 'standby')")
        assert code == "25006", msg        # read_only_sql_transaction
        s.close()
        sr.close()
    finally:
        standby.cleanup()


# ------------------------------------------------------------------ requeue and claim

def test_claim_returns_requeued_last(db):
    users(db)
    db.q("INSERT INTO users (id) VALUES (1)")
    db.q("SELECT objcached.requeue('{User,User,Page}', '{2,3,a}')")
    c = db.connect(autocommit=False)
    with c.cursor() as cur:
        cur.execute("SELECT * FROM objcached.claim(10)")
        cols = [d.name for d in cur.description]
        rows = cur.fetchall()
    c.commit()
    assert cols == ["id", "model", "keys", "created_at", "requeued"]
    got = sorted((r[1], sorted(r[2]), r[4]) for r in rows)
    assert got == [("Page", ["a"], True), ("User", ["1"], False), ("User", ["2", "3"], True)]


# ------------------------------------------------------------------ attach via => 'wal'

def pub_tables(db):
    return sorted(r[0] for r in db.q(
        "SELECT prrelid::regclass::text FROM pg_publication_rel pr "
        "JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = 'objcached'"))


def triggers_of(db, rel):
    return sorted(r[0] for r in db.q(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", (rel,)))


def test_attach_wal_creates_the_publication_and_no_triggers(db):
    users(db, via="wal")
    assert triggers_of(db, "users") == []
    assert db.q("SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot, puballtables "
                "FROM pg_publication WHERE pubname = 'objcached'") == \
        [(True, True, True, True, True, False)]
    assert pub_tables(db) == ["users"]
    assert db.q("SELECT model, via, hooked, published, replica_identity_ok FROM objcached.status") \
        == [("User", "wal", True, True, True)]
    assert db.one("SELECT objcached.hooked('users')")
    db.q("SELECT objcached.attach('users', 'User', 'id', 'wal')")       # again: idempotent
    assert pub_tables(db) == ["users"]
    # writes queue nothing: the WAL reader sees them
    db.q("INSERT INTO users (id) VALUES (1)")
    db.q("UPDATE users SET id = 2")
    db.q("DELETE FROM users")
    assert db.outbox() == []
    assert db.q("SELECT * FROM objcached.wal_tables()") == [
        (db.one("SELECT 'users'::regclass::oid"), "public.users", "User", "id")]


def test_attach_wal_first_attach_invalidates_the_model(db):
    db.q("CREATE TABLE t (id bigint PRIMARY KEY)")
    db.q("SELECT objcached.attach('t', 'T', via => 'wal')")
    assert db.outbox() == [("T", None)]


@pytest.mark.parametrize("ddl, problem, fix", [
    ("CREATE TABLE r (id bigint NOT NULL, v int); ALTER TABLE r REPLICA IDENTITY NOTHING",
     "its replica identity is NOTHING", "ALTER TABLE public.r REPLICA IDENTITY FULL"),
    ("CREATE TABLE r (id bigint PRIMARY KEY, v int); ALTER TABLE r REPLICA IDENTITY NOTHING",
     "its replica identity is NOTHING", "ALTER TABLE public.r REPLICA IDENTITY DEFAULT"),
    ("CREATE TABLE r (id bigint, v int)",
     "its replica identity is DEFAULT (the primary key) and it has no primary key",
     "ALTER TABLE public.r REPLICA IDENTITY FULL"),
    ("CREATE TABLE r (id bigint NOT NULL UNIQUE, v int)",
     "its replica identity is DEFAULT (the primary key) and it has no primary key",
     "ALTER TABLE public.r REPLICA IDENTITY USING INDEX r_id_key"),
    ("CREATE TABLE r (pk int PRIMARY KEY, id bigint NOT NULL, v int); "
     "CREATE UNIQUE INDEX r_both ON r (id, v) WHERE v > 0",
     "its replica identity is DEFAULT, the primary key (pk), which does not contain column id",
     "ALTER TABLE public.r REPLICA IDENTITY FULL"),
    ("CREATE TABLE r (pk int PRIMARY KEY, id bigint NOT NULL, v int NOT NULL); "
     "CREATE UNIQUE INDEX r_v ON r (v); CREATE UNIQUE INDEX r_idv ON r (v, id); "
     "ALTER TABLE r REPLICA IDENTITY USING INDEX r_v",
     "its replica identity is USING INDEX r_v (v), which does not contain column id",
     "ALTER TABLE public.r REPLICA IDENTITY USING INDEX r_idv"),
    ("CREATE TABLE r (pk int PRIMARY KEY, id bigint NOT NULL); "
     "CREATE UNIQUE INDEX r_inc ON r (pk) INCLUDE (id); "
     "ALTER TABLE r REPLICA IDENTITY USING INDEX r_inc",
     "its replica identity is USING INDEX r_inc (pk), which does not contain column id",
     "ALTER TABLE public.r REPLICA IDENTITY FULL"),
])
def test_attach_wal_refuses_a_replica_identity_without_the_key(db, ddl, problem, fix):
    db.q(ddl)
    msg, code = err(db, "SELECT objcached.attach('r', 'R', 'id', 'wal')")
    assert code == "55000"
    assert f"objcached.attach: table public.r cannot be read from the WAL for model R: {problem}" \
        in msg, msg
    assert f"HINT:  {fix};" in msg, msg
    assert "refuses UPDATE and DELETE on a published table" in msg
    # nothing happened: no model, no publication, the application's writes still work
    assert db.one("SELECT count(*) FROM objcached.models") == 0
    assert db.one("SELECT count(*) FROM pg_publication WHERE pubname = 'objcached'") == 0
    db.q("INSERT INTO r (id) SELECT 1 WHERE false")
    db.q("UPDATE r SET id = id")
    db.q("DELETE FROM r")
    # the HINT is the exact fix
    db.q(fix)
    db.q("SELECT objcached.attach('r', 'R', 'id', 'wal')")
    assert db.q("SELECT published, replica_identity_ok FROM objcached.status") == [(True, True)]


def test_why_the_replica_identity_check_matters(db):
    """What attach protects the application from: PostgreSQL refuses UPDATE
    and DELETE on a published table without a replica identity."""
    db.q("CREATE TABLE nokey (id bigint, v int)")
    db.q("INSERT INTO nokey VALUES (1, 1)")
    db.q("CREATE PUBLICATION other FOR TABLE nokey")
    msg, _ = err(db, "UPDATE nokey SET v = 2")
    assert "does not have a replica identity and publishes updates" in msg
    db.q("DROP PUBLICATION other")


@pytest.mark.parametrize("ddl", [
    "CREATE TABLE r (id bigint PRIMARY KEY, v int)",
    "CREATE TABLE r (id bigint, part int, PRIMARY KEY (part, id))",
    "CREATE TABLE r (id bigint, v int); ALTER TABLE r REPLICA IDENTITY FULL",
    "CREATE TABLE r (k int PRIMARY KEY, id uuid NOT NULL); CREATE UNIQUE INDEX r_id ON r (id); "
    "ALTER TABLE r REPLICA IDENTITY USING INDEX r_id",
])
def test_attach_wal_accepts_a_replica_identity_with_the_key(db, ddl):
    db.q(ddl)
    db.q("SELECT objcached.attach('r', 'R', 'id', 'wal')")
    assert db.q("SELECT hooked, published, replica_identity_ok FROM objcached.status") == \
        [(True, True, True)]
    assert db.q("SELECT * FROM objcached.wal_check() WHERE problem LIKE 'model%'") == []


def test_attach_wal_partitions(db):
    db.q("CREATE TABLE ev (id bigint, part int, PRIMARY KEY (id, part)) PARTITION BY LIST (part)")
    db.q("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1)")
    db.q("CREATE TABLE ev_2 PARTITION OF ev FOR VALUES IN (2) PARTITION BY LIST (part)")
    db.q("CREATE TABLE ev_2a PARTITION OF ev_2 FOR VALUES IN (2)")
    db.q("ALTER TABLE ev_2a REPLICA IDENTITY NOTHING")
    msg, _ = err(db, "SELECT objcached.attach('ev', 'Event', 'id', 'wal')")
    assert "table public.ev_2a cannot be read from the WAL for model Event: its replica " \
           "identity is NOTHING" in msg
    assert "HINT:  ALTER TABLE public.ev_2a REPLICA IDENTITY DEFAULT;" in msg
    db.q("ALTER TABLE ev_2a REPLICA IDENTITY DEFAULT")
    db.q("SELECT objcached.attach('ev', 'Event', 'id', 'wal')")
    assert pub_tables(db) == ["ev"]                       # partitions are sent as ev
    assert [r[1] for r in db.q("SELECT * FROM objcached.wal_tables()")] == ["public.ev"]
    # no trigger on the write path; each partition only the TRUNCATE one, since pgoutput
    # leaves a partition out of a Truncate published via its root (docs/wal.md)
    assert triggers_of(db, "ev") == []
    assert all(triggers_of(db, t) == ["objcached_wal_truncate"] for t in ("ev_1", "ev_2", "ev_2a"))
    # a partition added later without a usable replica identity shows up, and PostgreSQL
    # refuses UPDATE on it: exactly what wal_check and status must say
    db.q("CREATE TABLE ev_3 (id bigint NOT NULL, part int NOT NULL)")
    db.q("ALTER TABLE ev ATTACH PARTITION ev_3 FOR VALUES IN (3)")
    db.q("ALTER TABLE ev_3 REPLICA IDENTITY NOTHING")
    assert db.q("SELECT hooked, published, replica_identity_ok FROM objcached.status") == \
        [(False, True, False)]
    assert any("table public.ev_3: its replica identity is NOTHING (fix: ALTER TABLE public.ev_3 "
               "REPLICA IDENTITY DEFAULT)" in p for (p,) in db.q("SELECT * FROM objcached.wal_check()"))


def test_attach_wal_inheritance_children_are_published_each(db):
    db.q("CREATE TABLE animal (id bigint PRIMARY KEY)")
    db.q("CREATE TABLE dog (bark text) INHERITS (animal)")
    msg, _ = err(db, "SELECT objcached.attach('animal', 'Animal', 'id', 'wal')")
    assert "table public.dog cannot be read from the WAL for model Animal: its replica identity " \
           "is DEFAULT (the primary key) and it has no primary key" in msg
    db.q("ALTER TABLE dog ADD PRIMARY KEY (id)")
    db.q("SELECT objcached.attach('animal', 'Animal', 'id', 'wal')")
    assert pub_tables(db) == ["animal", "dog"]
    assert [r[1:] for r in db.q("SELECT * FROM objcached.wal_tables()")] == \
        [("public.animal", "Animal", "id"), ("public.dog", "Animal", "id")]
    # a child added later: not published until attach runs again
    db.q("CREATE TABLE cat (purr text) INHERITS (animal)")
    db.q("ALTER TABLE cat ADD PRIMARY KEY (id)")
    assert db.q("SELECT published FROM objcached.status") == [(False,)]
    db.q("SELECT objcached.attach(tbl, model, key_column, via) FROM objcached.models")
    assert pub_tables(db) == ["animal", "cat", "dog"]
    db.q("SELECT objcached.detach('animal', 'Animal')")
    assert pub_tables(db) == []


@pytest.mark.parametrize("create, difference", [
    ("CREATE PUBLICATION objcached WITH (publish = 'insert, update, delete')",
     "it does not publish truncate"),
    ("CREATE PUBLICATION objcached WITH (publish = 'insert', publish_via_partition_root = true)",
     "it does not publish update; it does not publish delete; it does not publish truncate"),
    ("CREATE PUBLICATION objcached", "publish_via_partition_root is false"),
    ("CREATE PUBLICATION objcached FOR ALL TABLES WITH (publish_via_partition_root = true)",
     "it is FOR ALL TABLES"),
    ("CREATE PUBLICATION objcached FOR TABLES IN SCHEMA public "
     "WITH (publish_via_partition_root = true)", "it publishes whole schemas"),
])
def test_attach_wal_refuses_a_publication_with_other_settings(db, create, difference):
    users(db, model=None)
    db.q(create)
    msg, code = err(db, "SELECT objcached.attach('users', 'User', 'id', 'wal')")
    assert "publication objcached exists with other settings: " + difference in msg, msg
    assert code == "55000"
    assert any(difference in p for (p,) in db.q("SELECT * FROM objcached.wal_check()"))


def test_attach_wal_reuses_a_publication_with_the_right_settings(db):
    users(db, model=None)
    db.q("CREATE PUBLICATION objcached WITH (publish = 'insert, update, delete, truncate', "
         "publish_via_partition_root = true)")
    oid = db.one("SELECT oid FROM pg_publication WHERE pubname = 'objcached'")
    db.q("SELECT objcached.attach('users', 'User', 'id', 'wal')")
    assert db.one("SELECT oid FROM pg_publication WHERE pubname = 'objcached'") == oid
    assert pub_tables(db) == ["users"]


def test_attach_wal_refuses_a_row_filter_or_column_list(db):
    users(db, model=None)
    db.q("CREATE PUBLICATION objcached FOR TABLE users WHERE (v > 0) "
         "WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)")
    assert "table public.users is in publication objcached with a row filter" in \
        err(db, "SELECT objcached.attach('users', 'User', 'id', 'wal')")[0]


def test_attach_wal_refuses_a_publication_squatted_by_another_role(db):
    """A role with CREATE on the database makes publication objcached, with
    objcached's settings, before the first wal-mode attach. attach (here by
    a superuser) reused it: its owner could then take the table out of it or
    change what it publishes, and the table's changes would stop reaching the
    WAL reader. attach refuses it; wal_check reports it; handed to the
    hook's owner, it is objcached's."""
    users(db, model=None)
    squatter = f"{db.name}_squatter"
    db.q(f'CREATE ROLE "{squatter}" LOGIN')
    db.q(f'GRANT CREATE ON DATABASE "{db.name}" TO "{squatter}"')
    db.q("CREATE PUBLICATION objcached WITH (publish = 'insert, update, delete, truncate', "
         "publish_via_partition_root = true)", conn=db.connect(user=squatter))
    msg, code = err(db, "SELECT objcached.attach('users', 'User', 'id', 'wal')")
    assert f"objcached.attach: publication objcached is owned by role {squatter}, which does " \
        "not have the privileges of objcached's owner postgres" in msg, msg
    assert "ALTER PUBLICATION objcached OWNER TO postgres" in msg, msg
    assert code == "55000"
    assert pub_tables(db) == [] and db.q("SELECT count(*) FROM objcached.models") == [(0,)]
    assert any(p.startswith(f"publication objcached is owned by role {squatter}")
               for p in problems(db))
    db.q("ALTER PUBLICATION objcached OWNER TO postgres")
    db.q("SELECT objcached.attach('users', 'User', 'id', 'wal')")
    assert pub_tables(db) == ["users"]
    assert not any("owned by" in p for p in problems(db))


@pytest.mark.parametrize("alter, problem", [
    ("DROP TABLE users", "model User: table public.users is not in publication objcached"),
    ("SET (publish = 'insert')", "it does not publish update; it does not publish delete; "
     "it does not publish truncate"),
    ("SET (publish_via_partition_root = false)", "publish_via_partition_root is false"),
    ("SET TABLE users WHERE (v > 0)", "table public.users is in publication objcached with a "
     "row filter"),
    ("SET TABLE users (id, v)", "table public.users is in publication objcached with a column "
     "list"),
])
def test_a_publication_changed_after_attach_is_reported(db, alter, problem):
    """Whatever its owner does to publication objcached that would hide a
    watched table's changes from the WAL reader, wal_check (so --check-config
    and --install-hook) and status say: status said published and hooked
    for a publication that no longer published update or delete."""
    users(db, via="wal")
    db.q("SELECT pg_create_logical_replication_slot('objcached', 'pgoutput')")
    assert problems(db) == []
    assert db.q("SELECT published, hooked FROM objcached.status") == [(True, True)]
    db.q("ALTER PUBLICATION objcached " + alter)
    assert any(problem in p for p in problems(db)), problems(db)
    assert db.q("SELECT published, hooked FROM objcached.status") == [(False, False)]


def test_attach_wal_refuses_unlogged_tables(db):
    db.q("CREATE UNLOGGED TABLE u (id bigint PRIMARY KEY)")
    assert "public.u is an unlogged table: its writes are not in the WAL" in \
        err(db, "SELECT objcached.attach('u', 'U', 'id', 'wal')")[0]


@pytest.mark.parametrize("via", [None, "", "WAL", "trigger", "wal\n", "x'y"])
def test_attach_rejects_a_bad_via(db, via):
    users(db, model=None)
    msg, code = err(db, "SELECT objcached.attach('users', 'User', 'id', %s)", (via,))
    assert "via must be 'triggers' or 'wal', not" in msg and code == "22023"


def test_moving_a_model_between_modes(db):
    users(db)
    gen = db.one("SELECT generation FROM objcached.models")
    assert len(triggers_of(db, "users")) == 4
    db.q("SELECT objcached.attach('users', 'User', 'id', 'wal')")
    assert triggers_of(db, "users") == [] and pub_tables(db) == ["users"]
    assert db.outbox() == [("User", None)]                  # a whole-model invalidation
    gen2 = db.one("SELECT generation FROM objcached.models")
    assert gen2 > gen
    assert db.q("SELECT via, hooked FROM objcached.status") == [("wal", True)]
    db.clear()
    db.q("INSERT INTO users (id) VALUES (1)")
    assert db.outbox() == []
    db.q("SELECT objcached.attach('users', 'User', 'id', 'triggers')")
    assert len(triggers_of(db, "users")) == 4 and pub_tables(db) == []
    assert db.outbox() == [("User", None)]
    assert db.one("SELECT generation FROM objcached.models") > gen2
    db.clear()
    db.q("INSERT INTO users (id) VALUES (2)")
    assert db.outbox() == [("User", ["2"])]
    assert db.q("SELECT via, hooked, published FROM objcached.status") == [("triggers", True, None)]


def test_two_models_one_table_different_modes(db):
    users(db)
    db.q("SELECT objcached.attach('users', 'UserW', 'id', 'wal')")
    db.clear()
    assert len(triggers_of(db, "users")) == 4 and pub_tables(db) == ["users"]
    db.q("INSERT INTO users (id) VALUES (1)")
    assert db.outbox() == [("User", ["1"])]                 # only the trigger-mode model
    db.q("SELECT objcached.detach('users', 'User')")
    assert triggers_of(db, "users") == [] and pub_tables(db) == ["users"]
    db.q("SELECT objcached.detach('users', 'UserW')")
    assert pub_tables(db) == []


def test_moving_a_wal_model_to_another_table(db):
    users(db, via="wal")
    db.q("CREATE TABLE users2 (id bigint PRIMARY KEY)")
    db.q("SELECT objcached.attach('users2', 'User', 'id', 'wal')")
    assert pub_tables(db) == ["users2"]


# ------------------------------------------------------------------ wal_check and the slot

def problems(db):
    return [p for (p,) in db.q("SELECT * FROM objcached.wal_check()")]


def test_wal_check(db):
    ps = problems(db)
    assert "publication objcached does not exist: attach a model with via => 'wal'" in ps
    assert "no model is attached with via => 'wal': the WAL reader has nothing to read" in ps
    assert any(p.startswith("replication slot objcached does not exist") for p in ps)
    assert not any("wal_level" in p for p in ps)
    users(db, via="wal")
    db.q("SELECT pg_create_logical_replication_slot('objcached', 'pgoutput')")
    assert problems(db) == []
    # what breaks it
    db.q("ALTER TABLE users REPLICA IDENTITY NOTHING")
    assert problems(db) == ["model User: table public.users: its replica identity is NOTHING "
                            "(fix: ALTER TABLE public.users REPLICA IDENTITY DEFAULT)"]
    db.q("ALTER TABLE users REPLICA IDENTITY DEFAULT")
    db.q("ALTER PUBLICATION objcached DROP TABLE users")
    assert problems(db) == ["model User: table public.users is not in publication objcached "
                            "(attach the model again)"]
    db.q("SELECT objcached.attach('users', 'User', 'id', 'wal')")
    db.q("ALTER TABLE users DROP COLUMN id")
    assert problems(db) == ["model User: the key column of public.users was dropped"]


def test_wal_check_slot_of_another_plugin_or_database(cluster, db):
    users(db, via="wal")
    db.q("SELECT pg_create_logical_replication_slot('objcached', 'test_decoding')")
    assert problems(db) == ["replication slot objcached uses plugin test_decoding, not pgoutput"]
    db.q("SELECT pg_drop_replication_slot('objcached')")
    db.q("SELECT pg_create_physical_replication_slot('objcached')")
    assert problems(db)[0].startswith("replication slot objcached is a physical slot")
    db.q("SELECT pg_drop_replication_slot('objcached')")
    cluster.execute("SELECT pg_create_logical_replication_slot('objcached', 'pgoutput')",
                    dbname=TEMPLATE)
    try:
        assert problems(db) == [f"replication slot objcached belongs to database {TEMPLATE}, "
                                f"not to {db.name}"]
        # uninstall leaves another database's slot alone
        rc, out = run_psql(db.server, db.name, UNINSTALL)
        assert f"replication slot objcached belongs to database {TEMPLATE}, not to {db.name}: " \
               "left alone" in out, out
        assert cluster.execute("SELECT count(*) FROM pg_replication_slots "
                               "WHERE slot_name = 'objcached'")[0][0] == 1
    finally:
        cluster.execute("SELECT pg_drop_replication_slot('objcached')")


def test_wal_check_lost_slot(cluster, db):
    users(db, via="wal")
    db.q("SELECT pg_create_logical_replication_slot('objcached', 'pgoutput')")
    cluster.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    cluster.execute("SELECT pg_reload_conf()")
    try:
        def lost():
            db.q("INSERT INTO users (id) SELECT coalesce(max(id), 0) + 1 FROM users")
            db.q("SELECT pg_switch_wal()")
            db.q("CHECKPOINT")
            return db.one("SELECT wal_status FROM pg_replication_slots "
                          "WHERE slot_name = 'objcached'") == "lost"
        harness.wait_until(lost, timeout=60, interval=0.2, what="the slot to be invalidated")
        assert any(p.startswith("replication slot objcached was invalidated (wal_status lost")
                   for p in problems(db))
    finally:
        cluster.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        cluster.execute("SELECT pg_reload_conf()")


def test_wal_check_on_a_cluster_without_logical_wal():
    """The hook tests' settings: wal_level replica."""
    server = harness.Postgres(dbname="postgres", settings={"wal_level": "replica"})
    try:
        server.start()
        run_psql(server, "postgres", INSTALL)
        d = Db(server, "postgres")
        assert problems(d)[0] == ("wal_level is replica, not logical: ALTER SYSTEM SET wal_level = "
                                  "logical, then restart PostgreSQL")
        d.q("CREATE TABLE t (id bigint PRIMARY KEY)")
        d.conn.notices.clear()
        d.q("SELECT objcached.attach('t', 'T', 'id', 'wal')")
        assert any("wal_level is replica: the WAL reader needs wal_level = logical" in n
                   for n in d.conn.notices), d.conn.notices
        d.close()
    finally:
        server.cleanup()


# ------------------------------------------------------------------ uninstall

def test_uninstall_drops_the_publication_and_an_inactive_slot(db):
    users(db, via="wal")
    db.q("SELECT pg_create_logical_replication_slot('objcached', 'pgoutput')")
    run_psql(db.server, db.name, UNINSTALL)
    assert db.one("SELECT count(*) FROM pg_publication WHERE pubname = 'objcached'") == 0
    assert db.one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'objcached'") == 0
    assert db.one("SELECT count(*) FROM pg_namespace WHERE nspname = 'objcached'") == 0
    db.q("UPDATE users SET v = 1")       # no longer published: writes are plain writes
    run_psql(db.server, db.name, UNINSTALL)


def test_uninstall_leaves_an_active_slot_and_says_so(db):
    users(db, via="wal")
    db.q("SELECT pg_create_logical_replication_slot('objcached', 'pgoutput')")
    repl = psycopg2.connect(host=db.server.dir, port=db.server.port, dbname=db.name,
                            user="postgres",
                            connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cur = repl.cursor()
        cur.start_replication(slot_name="objcached", decode=False,
                              options={"proto_version": "1", "publication_names": "objcached"})
        harness.wait_until(lambda: db.one("SELECT active FROM pg_replication_slots "
                                          "WHERE slot_name = 'objcached'"),
                           what="the slot to be active")
        rc, out = run_psql(db.server, db.name, UNINSTALL)
        assert "replication slot objcached is active" in out, out
        assert "WAL" in out
        assert db.one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'objcached'") == 1
        assert db.one("SELECT count(*) FROM pg_publication WHERE pubname = 'objcached'") == 0
    finally:
        repl.close()
    harness.wait_until(lambda: not db.one("SELECT active FROM pg_replication_slots "
                                          "WHERE slot_name = 'objcached'"), what="slot inactive")
    db.q("SELECT pg_drop_replication_slot('objcached')")


# ------------------------------------------------------------------ upgrade from version 1

def test_upgrade_from_version_1_keeps_outbox_rows_generations_and_grants(bare_db):
    d = bare_db
    run_psql(d.server, d.name, V1_INSTALL)
    assert d.one("SELECT value FROM objcached.meta WHERE key = 'schema_version'") == "1"
    d.q("CREATE TABLE users (id bigint PRIMARY KEY, v int)")
    d.q("CREATE TABLE ev (id bigint, part int) PARTITION BY LIST (part)")
    d.q("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1)")
    d.q("SELECT objcached.attach('users', 'User')")
    d.q("SELECT objcached.attach('users', 'UserName', 'id')")
    d.q("SELECT objcached.attach('ev', 'Event')")
    d.q("INSERT INTO users VALUES (1, 0), (2, 0)")
    d.q("INSERT INTO ev VALUES (5, 1)")
    d.q("TRUNCATE ev")
    d.q("CREATE ROLE oc LOGIN")
    d.q("GRANT USAGE ON SCHEMA objcached TO oc")
    d.q("GRANT EXECUTE ON FUNCTION objcached.claim(integer, integer), objcached.pending(), "
        "objcached.hooked(regclass), objcached.requeue(text[], text[]) TO oc")
    d.q("GRANT SELECT ON objcached.models, objcached.status TO oc")
    outbox = d.q("SELECT id, model, keys, created_at FROM objcached.outbox ORDER BY id")
    gens = d.q("SELECT model, generation FROM objcached.models ORDER BY 1")
    assert d.one("SELECT value FROM objcached.meta WHERE key = 'notify'") == "on"

    run_psql(d.server, d.name, INSTALL)

    assert d.one("SELECT value FROM objcached.meta WHERE key = 'schema_version'") == "2"
    assert d.one("SELECT value FROM objcached.meta WHERE key = 'notify'") == "on"   # kept
    assert d.q("SELECT id, model, keys, created_at FROM objcached.outbox ORDER BY id") == outbox
    assert d.q("SELECT DISTINCT requeued FROM objcached.outbox") == [(False,)]
    assert d.q("SELECT model, generation FROM objcached.models ORDER BY 1") == gens
    assert d.q("SELECT DISTINCT via FROM objcached.models") == [("triggers",)]
    assert d.q("SELECT model, hooked FROM objcached.status ORDER BY 1") == \
        [("Event", True), ("User", True), ("UserName", True)]
    # every trigger calls a generated function now; version 1's functions are gone
    fns = {r[0] for r in d.q("SELECT DISTINCT tgfoid::regproc::text FROM pg_trigger "
                             "WHERE tgname LIKE 'objcached%'")}
    assert len(fns) == 2 and all(f.startswith("objcached.hook_") for f in fns), fns
    assert d.q("SELECT proname FROM pg_proc WHERE pronamespace = 'objcached'::regnamespace "
               "AND proname IN ('on_write', 'on_truncate', '_trigger_specs')") == []
    # writes after the upgrade, with notify still on
    listener = d.connect()
    d.q("LISTEN objcached", conn=listener)
    d.q("UPDATE users SET v = 1 WHERE id = 2")
    d.q("INSERT INTO ev_1 VALUES (6, 1)")
    assert sorted(notifies(listener, want=3)) == \
        [("objcached", "Event"), ("objcached", "User"), ("objcached", "UserName")]
    new = d.q("SELECT model, keys FROM objcached.outbox WHERE id > %s ORDER BY id",
              (outbox[-1][0],))
    assert new == [("User", ["2"]), ("UserName", ["2"]), ("Event", ["6"])]
    # the consumer role kept its grants, and claim has its new column last
    oc = d.connect(user="oc", autocommit=False)
    with oc.cursor() as cur:
        cur.execute("SELECT * FROM objcached.claim(100)")
        assert [c.name for c in cur.description] == \
            ["id", "model", "keys", "created_at", "requeued"]
        assert len(cur.fetchall()) == len(outbox) + 3
        # requeue gained an argument (since): the grant came along, old calls still work
        cur.execute("SELECT objcached.requeue('{User}', '{9}')")
        cur.execute("SELECT objcached.requeue('{User}', '{9}', now())")
    oc.commit()
    assert d.one("SELECT count(*) FROM objcached.status", conn=oc) == 3
    oc.commit()
    # attach has one signature (a second one would make every call ambiguous)
    assert d.q("SELECT pg_get_function_identity_arguments(oid) FROM pg_proc "
               "WHERE proname = 'attach' AND pronamespace = 'objcached'::regnamespace") == \
        [("tbl regclass, model text, key_column name, via text",)]
    d.q("SELECT objcached.attach('users', 'User')")
    run_psql(d.server, d.name, INSTALL)            # and again: a no-op
    assert d.q("SELECT model, generation FROM objcached.models ORDER BY 1")[1:] == gens[1:]

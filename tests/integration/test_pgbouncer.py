"""objcached behind a real pgbouncer (Debian's, 1.18), docs/operations.md's
pgbouncer row: in session mode every connection made through `conninfo`
works (loads, the consumer, the feed, the near-cache); in transaction mode
no sidecar ever runs another sidecar's statement (it served a row of
`users` as a Counter) and the near-cache's staleness stays bounded by the
feed's poll; RECONNECT and PAUSE leave session-mode sessions alone, KILL
fails loads clearly until RESUME, query_timeout fails a load after its one
retry; a session pgbouncer hands on (with or without DISCARD ALL) gets
objcached's SETs and statements again; wal_conninfo cannot be pgbouncer.
With `pool_mode = transaction` objcached needs no server session of its own:
two sidecars share a pool smaller than their loaders, the settings another
client left on a server session do not change what it caches, the consumer
and the feed work by their polls, and load_timeout still ends a load on the
server; a role another client SET is not objcached's, a settings error fails
its load once and keeps the connection, a read-only session fails claims
cleanly until reset, and --verify reads UTF8 whatever the environment's
encoding. Under pgbouncer's admin commands in transaction mode: PAUSE waits
for a consumer's claim held open and loads fail clearly or run after
RESUME; KILL then RESUME brings every connection back and a killed claim is
claimed again; RECONNECT, short server lifetimes and a restarted pgbouncer
break nothing; query_timeout fails a load with pgbouncer's reason."""

import os
import re
import signal
import subprocess
import threading
import time

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest

import consistency as oc_c
import harness

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) AS i;
CREATE TABLE counters (id integer PRIMARY KEY, n integer NOT NULL);
INSERT INTO counters SELECT i, i * 10 FROM generate_series(1, 100) AS i;
-- every column's text depends on a setting: TimeZone, extra_float_digits,
-- IntervalStyle, bytea_output (JSON prints timestamps in ISO 8601 whatever
-- DateStyle says; the other client sets it too)
CREATE TABLE measures (id bigint PRIMARY KEY, at timestamptz NOT NULL,
                       x double precision NOT NULL, d interval NOT NULL, b bytea NOT NULL);
INSERT INTO measures SELECT i, timestamptz '2026-01-02 03:04:05.678+00' + i * interval '1 h',
                            0.1::float8 * i + 0.2, i * interval '1 day 02:03:04', '\\x00ff'
                       FROM generate_series(1, 10) AS i;
"""

MODELS = {
    "Item": {"table": "items", "near_ttl": "30s"},
    "Counter": {"table": "counters", "key_type": "integer"},
}

FEED_MAX_LAG = 1.0


MEASURE = {"Measure": {"table": "measures"}}

template, db = oc_c.template_fixtures("pgb_template", SCHEMA, {**MODELS, **MEASURE}, "pgb")


@pytest.fixture
def bouncer(pg):
    """bouncer(pool_mode, **settings) -> a started harness.Pgbouncer."""
    started = []

    def start(pool_mode, **settings):
        b = harness.Pgbouncer(pg, pool_mode=pool_mode,
                              settings={k: str(v) for k, v in settings.items()})
        started.append(b)
        return b.start()
    yield start
    for b in started:
        b.cleanup()


def config(mc_pool, conninfo, models=MODELS, **sections):
    overrides = {"objcached": {"near_cache_size": "16m", "load_timeout": "3s"},
                 "postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms",
                                "feed_max_lag": f"{int(FEED_MAX_LAG * 1000)}ms"}}
    for section, keys in sections.items():
        overrides.setdefault(section, {}).update(keys)
    return oc_c.sidecar_config(mc_pool, conninfo, models, overrides)


row = oc_c.row_json


def get(oc, key):
    """(value or None, the reply's terminal line)."""
    with oc.client() as c:
        values, end = c.get_multi([key])
    return (values[0][2] if values else None), end


def value(oc, key):
    v, end = get(oc, key)
    assert end == b"END", (key, end, oc.log(3000))
    return v


def clients_of(b, dbname):
    """The client sessions pgbouncer holds for `dbname`, by application_name."""
    rows = b.admin("SHOW CLIENTS")
    return [r for r in rows if r[2] == dbname]


def test_session_mode_serves_loads_invalidation_and_near_cache(fleet, mc_pool, db, bouncer):
    b = bouncer("session")
    oc = fleet.start(config(mc_pool, b.conninfo(db.name)))
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what="the near-cache to serve (the feed through pgbouncer)")
    # the loaders, the consumer and the feed all went through pgbouncer
    harness.wait_until(lambda: len(clients_of(b, db.name)) >= 4, timeout=10,
                       what=lambda: f"4 sessions through pgbouncer: {clients_of(b, db.name)}")
    assert value(oc, "Item:1") == row(db, "items", 1)
    assert value(oc, "Counter:7") == row(db, "counters", 7)
    for _ in range(3):              # the doorkeeper admits on the second offer
        value(oc, "Item:1")
    assert oc.stats()["near_hits"] > 0
    db.q("UPDATE items SET name = 'renamed' WHERE id = 1")
    want = row(db, "items", 1)
    harness.wait_until(lambda: value(oc, "Item:1") == want, timeout=FEED_MAX_LAG + 5,
                       what="the UPDATE to reach the near-cache and memcached")
    assert "load_failed" not in oc.log()


def test_transaction_mode_never_runs_another_sidecars_statement(fleet, mc_pool, db,
                                                                 bouncer):
    """objcached in pool_mode = session (the default) behind pgbouncer in
    transaction mode, which is not supported: two sidecars whose first
    model differs share one server session (pool size 1). B prepares its Counter statement,
    pgbouncer replaces the server session (RECONNECT; server_lifetime does
    the same by itself), A prepares its Item statement on the new one, and
    B's next Counter load runs there. Under a name of model index and
    generation only, both were "oc_load_0_0" and B served Item 2's row as
    Counter:2; now the name holds a digest of the SQL and B's load fails
    with a clear error."""
    b = bouncer("transaction", default_pool_size=1)
    counter_first = {"Counter": MODELS["Counter"], "Item": MODELS["Item"]}
    one = {"postgresql": {"connections": "1"}, "objcached": {"near_cache_size": "0"}}
    sb = fleet.start(config(mc_pool[1:], b.conninfo(db.name), counter_first, **one))
    assert value(sb, "Counter:1") == row(db, "counters", 1)
    b.admin("RECONNECT")
    sa = fleet.start(config(mc_pool[:1], b.conninfo(db.name), MODELS, **one))
    assert value(sa, "Item:1") == row(db, "items", 1)
    v, end = get(sb, "Counter:2")
    assert v in (None, row(db, "counters", 2)), f"Counter:2 served {v!r}"
    if v is None:
        assert end.startswith(b"SERVER_ERROR load failed") and b"does not exist" in end, end


def test_transaction_mode_near_cache_bounded_by_the_feed_poll(fleet, mc_pool, db, bouncer):
    """pool_mode = session (the default) behind pgbouncer in transaction
    mode, not supported: LISTEN does not survive transaction pooling; the
    feed's poll still bounds how long the near-cache serves a row after its
    UPDATE. (One server session, so that the loads find their statements:
    with more, they fail as server sessions change hands.)"""
    b = bouncer("transaction", default_pool_size=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name),
                            postgresql={"connections": "1"}))
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what="the near-cache to serve")
    old = value(oc, "Item:3")
    for _ in range(3):
        assert value(oc, "Item:3") == old
    assert oc.stats()["near_hits"] > 0
    db.q("UPDATE items SET name = 'renamed' WHERE id = 3")
    want = row(db, "items", 3)
    harness.wait_until(lambda: value(oc, "Item:3") == want, timeout=FEED_MAX_LAG + 5,
                       what="the UPDATE to reach the near-cache")


def test_reconnect_leaves_session_mode_sessions_alone(fleet, mc_pool, db, bouncer):
    """RECONNECT closes a server session when its client releases it, and
    in session mode objcached never does: loads go on, unbroken."""
    b = bouncer("session")
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), postgresql={"connections": "1"}))
    assert value(oc, "Item:1") == row(db, "items", 1)
    b.admin(f'RECONNECT "{db.name}"')
    for i in range(2, 6):
        assert value(oc, f"Item:{i}") == row(db, "items", i)
    assert "pg_conn_down" not in oc.log() and "load_failed" not in oc.log(), oc.log(3000)


def test_kill_fails_loads_clearly_until_resume(fleet, mc_pool, db, bouncer):
    """KILL closes objcached's sessions ("FATAL: database removed") and holds
    new logins until RESUME: loads fail at load_timeout with a clear error,
    then work again on new sessions, set up and prepared anew. (pgbouncer
    waits server_login_retry, 15 s by default, before it connects again.)"""
    b = bouncer("session", server_login_retry=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), objcached={"load_timeout": "1s"},
                            postgresql={"connections": "1"}))
    assert value(oc, "Item:1") == row(db, "items", 1)
    b.admin(f'KILL "{db.name}"')
    harness.wait_until(lambda: "event=pg_conn_down" in oc.log(), timeout=10,
                       what=lambda: f"objcached to see its sessions closed:\n{oc.log(2000)}")
    v, end = get(oc, "Item:2")
    assert v is None and end == b"SERVER_ERROR load failed: load timed out", end
    b.admin(f'RESUME "{db.name}"')
    harness.wait_until(lambda: get(oc, "Item:3")[0] == row(db, "items", 3), timeout=15,
                       what=lambda: f"loads after RESUME: {get(oc, 'Item:3')}")
    assert value(oc, "Item:2") == row(db, "items", 2)


def test_pause_waits_for_objcached_sessions(fleet, mc_pool, db, bouncer):
    """In session mode objcached never releases its sessions, so PAUSE does
    not complete while it is connected, and its loads go on meanwhile."""
    b = bouncer("session")
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), postgresql={"connections": "1"}))
    assert value(oc, "Item:1") == row(db, "items", 1)
    harness.wait_until(lambda: len(clients_of(b, db.name)) >= 3, timeout=10,
                       what="the loader, consumer and feed sessions")
    console = psycopg2.connect(host="127.0.0.1", port=b.port, dbname="pgbouncer",
                               user="postgres", connect_timeout=10, async_=1)
    psycopg2.extras.wait_select(console)
    console.cursor().execute(f'PAUSE "{db.name}"')
    try:
        for i in range(2, 6):
            assert value(oc, f"Item:{i}") == row(db, "items", i)
        assert console.poll() != psycopg2.extensions.POLL_OK, "PAUSE completed"
    finally:
        b.admin(f'RESUME "{db.name}"')
        console.close()


def test_query_timeout_below_load_timeout_fails_the_load_clearly(fleet, mc_pool, db,
                                                                 bouncer):
    """pgbouncer's query_timeout closes the session ("FATAL: query timeout",
    no SQLSTATE objcached can tell from a lost session): the load is sent
    again once, then fails with that reason, before load_timeout."""
    b = bouncer("session", query_timeout=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), objcached={"load_timeout": "5s"},
                            postgresql={"connections": "1"}))
    assert value(oc, "Item:1") == row(db, "items", 1)
    conn = db.connect(autocommit=False)
    db.q("LOCK TABLE items", conn=conn)
    try:
        v, end = get(oc, "Item:2")
    finally:
        conn.rollback()
    assert v is None and end == (b"SERVER_ERROR load failed: database connection lost: "
                                 b"FATAL:  query timeout"), end
    assert oc.log().count('pg_conn_down conn=objcached-loader reason="FATAL:  query timeout"') == 2
    assert value(oc, "Item:2") == row(db, "items", 2)


@pytest.mark.parametrize("reset", ["DISCARD ALL", ""])
def test_a_restarted_sidecar_loads_on_a_handed_on_session(fleet, mc_pool, db, bouncer,
                                                          reset):
    """One server session (pool size 1), handed from a stopped sidecar to
    its successor: with server_reset_query (DISCARD ALL) the SETs and the
    statement are made again; without it the session still holds the same
    statement, and its PREPARE's "already exists" failed every load."""
    b = bouncer("session", default_pool_size=1, server_reset_query=reset or '""')
    one = {"postgresql": {"connections": "1", "invalidation_poll": "0", "feed_poll": "0"},
           "objcached": {"near_cache_size": "0"}}
    conf = config(mc_pool, b.conninfo(db.name), **one)
    first = fleet.start(conf)
    assert value(first, "Item:1") == row(db, "items", 1)
    first.stop()
    second = fleet.start(conf)
    for i in range(2, 5):
        assert value(second, f"Item:{i}") == row(db, "items", i)


def test_a_restarted_sidecars_consumer_and_feed_work_on_handed_on_sessions(fleet, mc_pool, db,
                                                                          bouncer):
    """Without server_reset_query the successor's consumer and feed get
    sessions that hold the stopped sidecar's statements, under the same
    names: their PREPAREs said "already exists" (or, in another's session,
    the name was another's SQL)."""
    b = bouncer("session", default_pool_size=4, server_reset_query='""')
    conf = config(mc_pool, b.conninfo(db.name), postgresql={"connections": "1"})
    first = fleet.start(conf)
    harness.wait_until(lambda: first.stats()["near_serving"] == 1, timeout=10,
                       what="the first sidecar's near-cache to serve")
    assert value(first, "Item:1") == row(db, "items", 1)
    db.q("UPDATE items SET name = 'first' WHERE id = 1")
    harness.wait_until(lambda: value(first, "Item:1") == row(db, "items", 1), timeout=10,
                       what="the first sidecar's invalidation")
    first.stop()
    second = fleet.start(conf)
    harness.wait_until(lambda: second.stats()["near_serving"] == 1, timeout=10,
                       what=lambda: f"the second sidecar's near-cache:\n{second.log(2000)}")
    assert value(second, "Item:2") == row(db, "items", 2)
    db.q("UPDATE items SET name = 'second' WHERE id = 2")
    harness.wait_until(lambda: value(second, "Item:2") == row(db, "items", 2), timeout=10,
                       what=lambda: f"the second sidecar's invalidation:\n{second.log(2000)}")
    assert "already exists" not in second.log(), second.log(3000)

def test_wal_conninfo_through_pgbouncer_is_refused_in_the_log(pg, fleet, mc_pool, bouncer,
                                                              objcached_bin, tmp_path):
    """pgbouncer cannot pass a replication connection: --check-config says
    so (it opened no replication connection and said ok until 2026-12-06);
    the daemon logs pgbouncer's refusal once, tries again and again, and
    never holds the slot. The same config with wal_conninfo at PostgreSQL
    itself checks clean."""
    name = "pgb_wal"
    models = {"Item": {"table": "items"}}
    wal = {"postgresql": {"wal": "on", "wal_slot": name}}
    oc_c.create_template(pg, name, SCHEMA, models, objcached_bin, overrides=wal)  # and slot
    db = oc_c.HookDb(pg, name)
    try:
        b = bouncer("session")
        conf = oc_c.sidecar_config(mc_pool, db.conninfo, models, {"postgresql": {
            **wal["postgresql"], "wal_conninfo": b.conninfo(name), "wal_takeover": "1s"}})
        path = tmp_path / "objcached.ini"
        path.write_text(harness.render_ini(conf))
        checked = harness.check_config(str(path), objcached_bin)
        assert checked.returncode == 1, checked
        assert ("error: WAL source: no replication connection to wal_conninfo: connection to "
                f"server at \"127.0.0.1\", port {b.port} failed: FATAL:  unsupported startup "
                "parameter: replication") in checked.stdout, checked.stdout
        direct = tmp_path / "direct.ini"
        direct.write_text(harness.render_ini(oc_c.sidecar_config(
            mc_pool, db.conninfo, models, {"postgresql": {**wal["postgresql"]}})))
        clean = harness.check_config(str(direct), objcached_bin)
        assert clean.returncode == 0 and "error" not in clean.stdout, clean.stdout
        unsupported = "unsupported startup parameter: replication"
        tries = b.log().count(unsupported)   # the check's own try
        oc = fleet.start(conf)
        refused = ('event=pg_conn_down conn=objcached-wal reason="connection to server at '
                   f'\'127.0.0.1\', port {b.port} failed: FATAL:  unsupported startup '
                   'parameter: replication"')
        # tried again and again (pgbouncer's log), said once (the repeats at debug)
        harness.wait_until(lambda: b.log().count(unsupported) >= tries + 3, timeout=15,
                           what=lambda: f"three tries:\n{b.log(2000)}")
        assert oc.log().count(refused) == 1, oc.log()
        assert "event=wal_holding" not in oc.log() and oc.stats()["wal_holder"] == 0
    finally:
        db.close()
        pg.execute(f"SELECT pg_drop_replication_slot('{name}')", dbname="postgres")
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")


# ------------------------------------------------------------ pool_mode = transaction

TXN = {"pool_mode": "transaction"}


def another_client(b, db):
    """A plain client of pgbouncer `b` (autocommit), to leave its SETs on the
    server session objcached's transactions run on next."""
    other = psycopg2.connect(host="127.0.0.1", port=b.port, dbname=db.name,
                             user="postgres", connect_timeout=10)
    other.autocommit = True
    return other


def one_session_sidecar(fleet, mc_pool, db, bouncer, first):
    """A sidecar with one loader, no near-cache, on a transaction-mode
    pgbouncer of ONE server session, its load of `first` done, and a plain
    client of the same pool, to leave its SETs on that session: (oc,
    other); the caller closes other."""
    b = bouncer("transaction", default_pool_size=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), postgresql={"connections": "1", **TXN},
                            objcached={"near_cache_size": "0"}))
    assert value(oc, f"Item:{first}") == row(db, "items", first)
    return oc, another_client(b, db)


def role_switches(role):
    """The two ways a client leaves a server session in another role."""
    return (f'SET SESSION AUTHORIZATION "{role}"',
            f'RESET SESSION AUTHORIZATION; SET ROLE "{role}"')


def measure_row(db, ident):
    """Measure's row as objcached caches it: under objcached's settings."""
    conn = db.connect()
    db.q("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
         "SET extra_float_digits = 1; SET bytea_output = 'hex'", conn=conn)
    rows = db.q("SELECT row_to_json(t)::text FROM measures t WHERE t.id = %s", (ident,),
                conn=conn)
    return rows[0][0].encode()


def test_transaction_mode_two_sidecars_share_a_pool_smaller_than_their_loaders(
        fleet, mc_pool, db, bouncer):
    """Two sidecars (their models in another order), 3 loaders each plus
    the consumer, the feed and the generations reader, on two server
    sessions: loads of both models from both, at once, all rows right, and
    never a prepared statement missing or another's."""
    b = bouncer("transaction", default_pool_size=2)
    counter_first = {"Counter": MODELS["Counter"], "Item": MODELS["Item"]}
    each = {"postgresql": {"connections": "3", **TXN}, "objcached": {"near_cache_size": "0"}}
    sa = fleet.start(config(mc_pool[:1], b.conninfo(db.name), MODELS, **each))
    sb = fleet.start(config(mc_pool[1:], b.conninfo(db.name), counter_first, **each))
    want = {f"Item:{i}": row(db, "items", i) for i in range(1, 101)}
    want.update({f"Counter:{i}": row(db, "counters", i) for i in range(1, 101)})
    wrong = []

    def reader(oc, start):
        for lo in range(start, 101, 10):   # 10 ids of each model per get
            keys = [f"{m}:{i}" for i in range(lo, min(lo + 10, 101)) for m in ("Item", "Counter")]
            with oc.client() as c:
                values, end = c.get_multi(keys)
            got = {v[0].decode(): v[2] for v in values}
            if end != b"END" or got != {k: want[k] for k in keys}:
                wrong.append((start, end, sorted(set(keys) ^ set(got))))
    threads = [threading.Thread(target=reader, args=(oc, s)) for oc in (sa, sb)
               for s in (1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == [], (wrong, sa.log(2000), sb.log(2000))
    for oc in (sa, sb):
        assert oc.stats()["pg_queries"] >= 20
        assert "load_failed" not in oc.log() and "does not exist" not in oc.log(), oc.log(3000)
    assert len([r for r in b.admin("SHOW SERVERS") if r[2] == db.name]) <= 2


def test_transaction_mode_settings_another_client_left_do_not_change_cached_text(
        fleet, mc_pool, db, bouncer):
    """One server session (pool size 1) that a plain client SETs TimeZone,
    DateStyle, IntervalStyle, extra_float_digits and bytea_output on, in
    transaction mode, and hands back to the pool: objcached's next load on
    it caches the same text as before (its settings go in the load's own
    transaction), the consistency sampler's reads of PostgreSQL agree with
    what is cached; and objcached leaves none of its own on the session."""
    b = bouncer("transaction", default_pool_size=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), {**MODELS, **MEASURE},
                            postgresql={"connections": "1", **TXN},
                            objcached={"near_cache_size": "0", "sample_rate": "1"}))
    assert value(oc, "Measure:1") == measure_row(db, 1)
    other = another_client(b, db)
    try:
        with other.cursor() as cur:
            cur.execute("SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'SQL, DMY'; "
                        "SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 0; "
                        "SET bytea_output = 'escape'")
        for i in range(2, 5):
            assert value(oc, f"Measure:{i}") == measure_row(db, i)
            with other.cursor() as cur:   # the one server session still has them
                cur.execute("SHOW extra_float_digits")
                assert cur.fetchone()[0] == "0"
                cur.execute("SHOW IntervalStyle")
                assert cur.fetchone()[0] == "iso_8601"

        def sampled(field):
            return sum(int(v) for k, v in oc.stats().items()
                       if k.startswith("sampler:Measure:hit:") and k.endswith(":" + field))
        for i in range(1, 5):            # hits: every one sampled, read back from PostgreSQL
            assert value(oc, f"Measure:{i}") == measure_row(db, i)
        harness.wait_until(lambda: sampled("checks") >= 4, timeout=15,
                           what=lambda: f"the sampler's checks: {oc.stats()}")
        assert sampled("inconsistent") == 0, oc.log(3000)
        with other.cursor() as cur:   # objcached's own (load_timeout 3s): not left there
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] == "0"
            cur.execute("SHOW search_path")
            assert "pg_temp" not in cur.fetchone()[0]
    finally:
        other.close()


def test_transaction_mode_consumer_and_feed_work_by_their_polls(fleet, mc_pool, db, bouncer):
    """No LISTEN in transaction mode: the consumer claims at each
    invalidation_poll (memcached's entry is deleted) and the feed's poll
    clears the near-cache, so an UPDATE is served within their bounds."""
    b = bouncer("transaction", default_pool_size=2)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name),
                            postgresql={"connections": "2", **TXN}))
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what=lambda: f"the near-cache to serve:\n{oc.log(2000)}")
    old = value(oc, "Item:3")
    for _ in range(3):
        assert value(oc, "Item:3") == old
    assert oc.stats()["near_hits"] > 0
    before = oc.stats()["invalidations"]
    db.q("UPDATE items SET name = 'renamed' WHERE id = 3")
    want = row(db, "items", 3)
    harness.wait_until(lambda: value(oc, "Item:3") == want, timeout=FEED_MAX_LAG + 5,
                       what=lambda: f"the UPDATE to be served:\n{oc.log(2000)}")
    harness.wait_until(lambda: oc.stats()["invalidations"] > before, timeout=5,
                       what="the consumer's delete")
    assert oc.stats()["inval_errors"] == 0 and "LISTEN" not in b.log()
    assert "load_failed" not in oc.log() and "inval_failed" not in oc.log(), oc.log(3000)


def test_transaction_mode_load_timeout_ends_the_query_on_the_server(fleet, mc_pool, db,
                                                                    bouncer):
    """statement_timeout = load_timeout, set in the load's transaction,
    cancels a load that waits on a lock: the server ends it when the
    client gives up, and the connection serves the next load (it is not
    dropped a load_timeout later, which would leave the query waiting)."""
    b = bouncer("transaction", default_pool_size=2)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), objcached={"load_timeout": "1s"},
                            postgresql={"connections": "1", **TXN}))
    assert value(oc, "Item:1") == row(db, "items", 1)
    conn = db.connect(autocommit=False)
    db.q("LOCK TABLE items", conn=conn)

    def waiting():
        return db.one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                      "AND query LIKE '%row_to_json%' AND pid <> pg_backend_pid()")
    try:
        v, end = get(oc, "Item:2")
        assert v is None and end == b"SERVER_ERROR load failed: load timed out", end
        # (not a timing bound: without the setting the load waits on the
        # lock, and objcached's own give-up shows in the log checked below)
        harness.wait_until(lambda: waiting() == 0, timeout=10,
                           what="the server to cancel the load")
    finally:
        conn.rollback()
    assert value(oc, "Item:2") == row(db, "items", 2)
    assert "query did not end" not in oc.log() and "pg_conn_down" not in oc.log(), oc.log()


def test_transaction_mode_verify_reads_under_objcached_settings(fleet, mc_pool, db, bouncer,
                                                               objcached_bin, tmp_path):
    """--verify in transaction mode reads each batch in a transaction that
    carries objcached's settings: the cached rows compare fresh although
    the one server session holds another client's TimeZone,
    extra_float_digits, IntervalStyle and bytea_output."""
    b = bouncer("transaction", default_pool_size=1)
    conf = config(mc_pool, b.conninfo(db.name), {**MODELS, **MEASURE},
                  postgresql={"connections": "1", **TXN}, objcached={"near_cache_size": "0"})
    oc = fleet.start(conf)
    for i in range(1, 11):
        assert value(oc, f"Measure:{i}") == measure_row(db, i)
    other = another_client(b, db)
    try:
        with other.cursor() as cur:
            cur.execute("SET TimeZone = 'Asia/Tokyo'; SET IntervalStyle = 'iso_8601'; "
                        "SET extra_float_digits = 0; SET bytea_output = 'escape'")
        path = tmp_path / "verify.ini"
        path.write_text(harness.render_ini(conf))
        out = subprocess.run([objcached_bin, "-c", str(path), "--verify", "Measure",
                              "--sample", "100"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60)
    finally:
        other.close()
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert re.search(r"^fresh 10$", out.stdout, re.M) and "result: ok" in out.stdout, out.stdout


def test_transaction_mode_with_wal_needs_wal_conninfo(db, mc_pool, bouncer, objcached_bin,
                                                      tmp_path):
    """The WAL reader never goes through a pooler: with pool_mode =
    transaction, conninfo is one, and --check-config wants wal_conninfo."""
    b = bouncer("transaction")
    conf = config(mc_pool, b.conninfo(db.name), postgresql={"wal": "on", **TXN})
    path = tmp_path / "objcached.ini"
    path.write_text(harness.render_ini(conf))
    out = harness.check_config(str(path), objcached_bin)
    assert out.returncode == 1, out
    assert ("wal = on with pool_mode = transaction needs wal_conninfo" in
            out.stdout + out.stderr), out


def test_transaction_mode_a_role_another_client_switched_to_does_not_load(fleet, mc_pool, db,
                                                                          bouncer):
    """One server session (pool size 1) that a plain client switched to a
    role with no right on the tables, by SET SESSION AUTHORIZATION and then
    by SET ROLE, and handed back to the pool: objcached's loads and its
    consumer's claims on it still run as objcached's own role (reset in
    each transaction, like the settings), not as whatever role the session
    was left in (permission denied, or rows another role sees)."""
    role = f"nobody_{db.name}"[:63]
    db.q(f'DROP ROLE IF EXISTS "{role}"; CREATE ROLE "{role}"')
    oc, other = one_session_sidecar(fleet, mc_pool, db, bouncer, 1)
    try:
        for switch in role_switches(role):
            with other.cursor() as cur:
                cur.execute(switch)
            errors = oc.stats()["inval_errors"]
            for i in range(2, 5):
                assert value(oc, f"Item:{i}") == row(db, "items", i), oc.log(2000)
                with other.cursor() as cur:   # the one server session is still in it
                    cur.execute("SELECT current_user")
                    assert cur.fetchone()[0] == role
            db.q("UPDATE items SET name = name || '!' WHERE id = 2")
            want = row(db, "items", 2)
            harness.wait_until(lambda: value(oc, "Item:2") == want, timeout=10,
                               what=lambda: f"the consumer's delete:\n{oc.log(2000)}")
            assert oc.stats()["inval_errors"] == errors, oc.log(3000)
    finally:
        other.close()
    assert "permission denied" not in oc.log(), oc.log(3000)


def test_transaction_mode_check_config_runs_as_its_own_role(mc_pool, db, bouncer, objcached_bin,
                                                           tmp_path):
    """--check-config through pgbouncer in transaction mode, on the one
    server session a plain client left in another role (no right on the
    tables): each of its statements now resets the role, search_path and
    session authorization first, as the loads do, so it checks objcached's
    own rights. Before, it checked that role's: "may not read column" for
    every column, exit 1 (and --install-hook ran its DDL as that role)."""
    role = f"nobody_{db.name}"[:63]
    db.q(f'DROP ROLE IF EXISTS "{role}"; CREATE ROLE "{role}"')
    b = bouncer("transaction", default_pool_size=1)
    path = tmp_path / "objcached.ini"
    path.write_text(harness.render_ini(config(mc_pool, b.conninfo(db.name), postgresql=TXN)))
    other = another_client(b, db)
    try:
        for switch in role_switches(role):
            with other.cursor() as cur:
                cur.execute(switch)
            p = harness.check_config(str(path), objcached_bin)
            assert p.returncode == 0, p.stdout + p.stderr
            assert "may not read" not in p.stdout and "permission denied" not in p.stdout, \
                p.stdout
            with other.cursor() as cur:   # the one server session is still in it
                cur.execute("SELECT current_user")
                assert cur.fetchone()[0] == role
    finally:
        other.close()


def test_transaction_mode_a_read_only_serializable_session_does_not_stop_claims(fleet, mc_pool,
                                                                                  db, bouncer):
    """default_transaction_read_only and default_transaction_isolation =
    serializable that another client SET on the one server session: a
    transaction's modes are fixed before its first statement, so the local
    settings cannot undo them. The consumer's claim names its own (BEGIN
    ISOLATION LEVEL READ COMMITTED, READ WRITE, sent before the settings):
    it applies the write at once, no error. Before, every claim failed
    (read-only transaction, or objcached.claim refusing SERIALIZABLE) until
    the session was reset."""
    oc, other = one_session_sidecar(fleet, mc_pool, db, bouncer, 2)
    try:
        with other.cursor() as cur:
            cur.execute("SET default_transaction_read_only = on")
            cur.execute("SET default_transaction_isolation = serializable")
        errors = oc.stats()["inval_errors"]
        db.q("UPDATE items SET name = 'read only' WHERE id = 2")
        want = row(db, "items", 2)
        harness.wait_until(lambda: value(oc, "Item:2") == want, timeout=10,
                           what=lambda: f"the consumer's delete:\n{oc.log(2000)}")
        assert oc.stats()["inval_errors"] == errors, oc.log(3000)
        assert value(oc, "Item:3") == row(db, "items", 3)   # loads: unaffected
        with other.cursor() as cur:   # the session kept the other client's settings
            cur.execute("SHOW default_transaction_isolation")
            assert cur.fetchone()[0] == "serializable"
            cur.execute("SHOW default_transaction_read_only")
            assert cur.fetchone()[0] == "on"
    finally:
        other.close()


def test_transaction_mode_an_error_in_the_settings_fails_the_load_once(fleet, mc_pool, db,
                                                                      bouncer):
    """The pipeline's first statement (the settings) fails: here a time
    zone the server does not know. Its load fails with that error, once
    (the load's statement, aborted in the pipeline, adds nothing), and the
    connection is left out of pipeline mode and up: every next load gets
    the same clear error, none a protocol error, and no reconnect."""
    b = bouncer("transaction", default_pool_size=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), postgresql={"connections": "1", **TXN},
                            objcached={"near_cache_size": "0", "timezone": "Nowhere/Zone"}))
    for i in range(1, 5):
        v, end = get(oc, f"Item:{i}")
        assert v is None and end.startswith(b"SERVER_ERROR load failed:"), (end, oc.log(2000))
        assert b"TimeZone" in end, end
    assert oc.stats()["pg_queries"] == 4
    assert "pg_conn_down" not in oc.log() and "pipeline" not in oc.log(), oc.log(3000)


def test_transaction_mode_verify_reads_utf8_whatever_the_client_encoding(
        fleet, mc_pool, db, bouncer, objcached_bin, tmp_path):
    """--verify in transaction mode asks for UTF8 when it connects, as the
    loaders do (in session mode its setup SET it; in transaction mode
    nothing is set on a session, and pgbouncer hands each client the
    encoding it connected with): rows with non-ASCII characters compare
    fresh, none stale, although the environment says
    PGCLIENTENCODING=LATIN1."""
    db.q("UPDATE items SET name = 'café ü ' || id")
    b = bouncer("transaction", default_pool_size=1)
    conf = config(mc_pool, b.conninfo(db.name), postgresql={"connections": "1", **TXN},
                  objcached={"near_cache_size": "0"})
    oc = fleet.start(conf)
    harness.wait_until(lambda: db.outbox_rows() == 0, timeout=10,   # no delete after the loads
                       what=lambda: f"the UPDATE's invalidations:\n{oc.log(2000)}")
    for i in range(1, 101):
        assert value(oc, f"Item:{i}") == row(db, "items", i)
    oc.wait_idle()   # the fills' write-backs are in memcached
    path = tmp_path / "verify.ini"
    path.write_text(harness.render_ini(conf))
    out = subprocess.run([objcached_bin, "-c", str(path), "--verify", "Item", "--sample", "100"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PGCLIENTENCODING": "LATIN1"})
    assert out.returncode == 0, (out.stdout, out.stderr)
    fresh = re.search(r"^fresh (\d+)$", out.stdout, re.M)
    assert fresh and int(fresh.group(1)) >= 90, out.stdout   # a fill may lose a race
    assert re.search(r"^stale 0$", out.stdout, re.M) and "result: ok" in out.stdout, out.stdout


# ------------------------------------- transaction mode: pgbouncer's admin commands


class AsyncConsole:
    """`command` sent on a new admin console connection of pgbouncer `b`,
    not waited for (PAUSE returns only once every server session is
    released): done() says whether it completed."""

    def __init__(self, b, command):
        self.conn = psycopg2.connect(host="127.0.0.1", port=b.port, dbname="pgbouncer",
                                     user="postgres", connect_timeout=10, async_=1)
        psycopg2.extras.wait_select(self.conn)
        self.cursor = self.conn.cursor()   # (kept: polling needs it)
        self.cursor.execute(command)

    def done(self):
        return self.conn.poll() == psycopg2.extensions.POLL_OK

    def close(self):
        self.conn.close()


def claims_held(db):
    """Server sessions of objcached's consumer idle inside a transaction:
    its claim, waiting for its memcached deletes."""
    return db.one("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                  "AND application_name = 'objcached-inval'")


def server_of(mc_pool, db, ident, model="Item"):
    """The memcached server of mc_pool that holds `model`:`ident`."""
    key = oc_c.cache_key(model, ident, db.generation(model) or 0)
    held = [addr for addr, _, _ in oc_c.raw_items(mc_pool, key)]
    assert len(held) == 1, (key, held)
    return next(m for m in mc_pool if m.address == held[0])


def misses_on(oc, mc_pool, db, server, ids, n):
    """n ids of Item, among `ids`, whose key lives on `server`, loaded once
    and deleted there again: misses that load from PostgreSQL, on a server
    that answers."""
    for i in ids:
        assert value(oc, f"Item:{i}") == row(db, "items", i)
    oc.wait_idle()
    mine = [i for i in ids if server_of(mc_pool, db, i) is server][:n]
    assert len(mine) == n, (server, mine)
    with server.client() as c:
        for i in mine:
            c.sendline(f"delete {oc_c.cache_key('Item', i, db.generation('Item') or 0)}"
                       .encode())
            assert c.readline() == b"DELETED"
    return mine


def timed_get(oc, key):
    t0 = time.monotonic()
    v, end = get(oc, key)
    return v, end, time.monotonic() - t0


def conn_ups(oc):
    """pg_conn_up lines per connection name, so far."""
    return {name: oc.log().count(f"event=pg_conn_up conn={name}\n")
            for name in ("objcached-loader", "objcached-inval", "objcached-feed",
                         "objcached-sampler")}


def wait_sampler_up(oc):
    """The sampler connects for its first key to check: hits of Item:1."""
    harness.wait_until(lambda: value(oc, "Item:1") is not None
                       and "event=pg_conn_up conn=objcached-sampler" in oc.log(),
                       timeout=10, what="the sampler's connection")


def wait_all_up_again(oc, ups, timeout=30):
    """Every connection of conn_ups up again since `ups` was taken (a hit
    per try: the sampler connects for a key to check)."""
    def again():
        get(oc, "Item:1")
        return all(n > ups[name] for name, n in conn_ups(oc).items())
    harness.wait_until(again, timeout=timeout,
                       what=lambda: f"every connection up again: {ups} -> {conn_ups(oc)}:\n"
                                    f"{oc.log(3000)}")


def test_transaction_mode_pause_waits_for_a_held_claim_then_loads_and_claims_resume(
        fleet, mc_pool, db, bouncer):
    """The consumer's claim transaction held open (its memcached deletes out
    to a stopped server): PAUSE waits for it; a load meanwhile fails
    clearly at load_timeout; once the claim commits PAUSE completes, a load
    queued in pgbouncer runs after RESUME, the outbox drains and a row
    updated during the pause is served fresh."""
    b = bouncer("transaction")
    oc = fleet.start(config(mc_pool, b.conninfo(db.name),
                            objcached={"near_cache_size": "0", "load_timeout": "2s"},
                            memcached={"io_timeout": "20s"},
                            postgresql={"connections": "2", **TXN}))
    assert value(oc, "Item:1") == row(db, "items", 1)
    oc.wait_idle()
    victim = server_of(mc_pool, db, 1)
    other = next(m for m in mc_pool if m is not victim)
    first, second = misses_on(oc, mc_pool, db, other, range(2, 41), 2)
    assert value(oc, "Item:50") == row(db, "items", 50)   # cached: updated during the pause
    victim.kill(signal.SIGSTOP)
    console = None
    try:
        db.q("UPDATE items SET name = 'held' WHERE id = 1")
        harness.wait_until(lambda: claims_held(db) == 1, timeout=10,
                           what=lambda: f"the consumer's claim held:\n{oc.log(2000)}")
        console = AsyncConsole(b, f'PAUSE "{db.name}"')
        v, end, took = timed_get(oc, f"Item:{first}")
        assert v is None and end == b"SERVER_ERROR load failed: load timed out", end
        assert took < 2 + 1, took
        assert not console.done(), "PAUSE completed while the claim was held"
        assert claims_held(db) == 1
    finally:
        victim.kill(signal.SIGCONT)
    harness.wait_until(console.done, timeout=15,
                       what=lambda: f"PAUSE to complete once the claim committed:\n{oc.log(2000)}")
    db.q("UPDATE items SET name = 'during the pause' WHERE id = 50")
    got = {}
    loader = threading.Thread(target=lambda: got.update(r=timed_get(oc, f"Item:{second}")))
    loader.start()
    harness.wait_until(lambda: oc.stats()["loads_in_flight"] > 0, timeout=5,
                       what="a load waiting in pgbouncer")
    b.admin(f'RESUME "{db.name}"')
    console.close()
    loader.join(10)
    v, end, took = got["r"]
    assert v == row(db, "items", second) and end == b"END", (end, oc.log(2000))
    assert took < 2 + 1, took
    harness.wait_until(lambda: db.outbox_rows() == 0, timeout=10,
                       what=lambda: f"the outbox to drain:\n{oc.log(2000)}")
    for i in (1, 50):
        want = row(db, "items", i)
        harness.wait_until(lambda: value(oc, f"Item:{i}") == want, timeout=10,
                           what=lambda: f"Item:{i} fresh after RESUME:\n{oc.log(2000)}")
    assert oc.stats()["inval_errors"] == 0, oc.log(3000)


def test_transaction_mode_kill_then_resume_every_connection_recovers_and_a_killed_claim_is_claimed_again(
        fleet, mc_pool, db, bouncer):
    """KILL while the consumer's claim is held (its deletes out to a stopped
    server): the claim rolls back with its session; the near-cache stops
    serving while the feed is down; after RESUME every connection (loaders,
    consumer, feed, sampler; the generations reader of a sidecar started
    meanwhile) comes back without a restart, the killed
    claim's rows are claimed and applied again, and both this sidecar and
    another one (straight to PostgreSQL, near-cache fed by the feed only)
    serve the new row."""
    b = bouncer("transaction", server_login_retry=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name),
                            objcached={"load_timeout": "2s", "sample_rate": "1"},
                            memcached={"io_timeout": "20s"},
                            postgresql={"connections": "2", **TXN}))
    direct = fleet.start(config(mc_pool, db.conninfo, postgresql={"invalidation_poll": "0"}))
    for s in (oc, direct):
        harness.wait_until(lambda: s.stats()["near_serving"] == 1, timeout=10,
                           what=lambda: f"the near-cache to serve:\n{s.log(2000)}")
        for _ in range(3):              # the doorkeeper admits on the second offer
            assert value(s, "Item:1") == row(db, "items", 1)
        assert s.stats()["near_hits"] > 0
    wait_sampler_up(oc)
    oc.wait_idle()
    victim = server_of(mc_pool, db, 1)
    ups = conn_ups(oc)
    applied = oc.stats()["invalidations"]
    victim.kill(signal.SIGSTOP)
    try:
        db.q("UPDATE items SET name = 'killed claim' WHERE id = 1")
        harness.wait_until(lambda: claims_held(db) == 1, timeout=10,
                           what=lambda: f"the consumer's claim held:\n{oc.log(2000)}")
        b.admin(f'KILL "{db.name}"')
        harness.wait_until(lambda: claims_held(db) == 0, timeout=10,
                           what="the killed claim's session to end")
        # and the sidecar has seen its consumer's connection go: had the
        # deletes answered first (the memcached server let go at once, the
        # two events in one turn of a slow loop: the suite's sanitizer pass,
        # 2026-12-06), the cycle would count them, as a cycle whose
        # connection is still up does
        harness.wait_until(lambda: oc.stats()["inval_connected"] == 0, timeout=10,
                           what=lambda: f"the consumer's connection gone:\n{oc.log(2000)}")
    finally:
        victim.kill(signal.SIGCONT)
    assert db.one("SELECT count(*) FROM objcached.outbox") >= 1   # rolled back, not lost
    harness.wait_until(lambda: oc.stats()["near_serving"] == 0, timeout=10,
                       what="the near-cache to stop while the feed is down")
    v, end, took = timed_get(oc, "Item:60")
    assert v is None and end.startswith(b"SERVER_ERROR load failed: "), end
    assert took < 2 + 1, took
    assert oc.stats()["invalidations"] == applied   # the killed cycle counted nothing
    # a sidecar started meanwhile cannot read its generations: its reader
    # connection (objcached-generations) waits for RESUME too
    late = fleet.start(config(mc_pool, b.conninfo(db.name),
                              postgresql={"connections": "1", **TXN}))
    assert late.stats()["generations_unknown"] == 1, late.log(2000)
    b.admin(f'RESUME "{db.name}"')
    wait_all_up_again(oc, ups)
    harness.wait_until(lambda: oc.stats()["pg_connections_up"] == 2, timeout=10,
                       what="both loaders up")
    harness.wait_until(lambda: db.outbox_rows() == 0, timeout=15,
                       what=lambda: f"the outbox to drain:\n{oc.log(2000)}")
    # claimed again and applied (by either consumer)
    assert oc.stats()["invalidations"] + late.stats()["invalidations"] > applied, oc.log(3000)
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=15,
                       what=lambda: f"the near-cache to serve again:\n{oc.log(2000)}")
    want = row(db, "items", 1)
    for s in (oc, direct):
        harness.wait_until(lambda: value(s, "Item:1") == want, timeout=FEED_MAX_LAG + 5,
                           what=lambda: f"the killed claim's row fresh:\n{s.log(2000)}")
        hits = s.stats()["near_hits"]
        for _ in range(3):
            assert value(s, "Item:1") == want
        assert s.stats()["near_hits"] > hits   # the near-cache serves, the new row
    assert value(oc, "Item:60") == row(db, "items", 60)
    harness.wait_until(lambda: late.stats()["generations_unknown"] == 0, timeout=15,
                       what=lambda: f"the late sidecar's generations:\n{late.log(2000)}")
    assert value(late, "Item:1") == want
    db.q("UPDATE items SET name = 'after resume' WHERE id = 1")
    want = row(db, "items", 1)
    harness.wait_until(lambda: value(oc, "Item:1") == want and value(direct, "Item:1") == want,
                       timeout=FEED_MAX_LAG + 5, what="an UPDATE after RESUME served")


class Traffic:
    """A steady stream of UPDATEs (straight to PostgreSQL) and of gets of
    the rows they change (to `oc`), in two threads, until stop(); every
    reply that is not END is kept in `errors`."""

    def __init__(self, oc, db, ids=range(1, 11)):
        self.oc, self.db, self.ids = oc, db, list(ids)
        self.stopping = threading.Event()
        self.errors, self.gets, self.writes = [], 0, 0
        self.threads = [threading.Thread(target=self._reader),
                        threading.Thread(target=self._writer)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _reader(self):
        while not self.stopping.is_set():
            with self.oc.client() as c:
                values, end = c.get_multi([f"Item:{i}" for i in self.ids])
            self.gets += 1
            if end != b"END":
                self.errors.append(end)

    def _writer(self):
        conn = self.db.connect()
        n = 0
        while not self.stopping.is_set():
            n += 1
            i = self.ids[n % len(self.ids)]
            self.db.q("UPDATE items SET name = %s WHERE id = %s", (f"w{n}", i), conn=conn)
            self.writes += 1
            time.sleep(0.01)   # a pace, not a proof

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def wait_fresh(self, oc, timeout=15):
        """Every row the stream changed served as PostgreSQL has it now."""
        for i in self.ids:
            want = row(self.db, "items", i)
            harness.wait_until(lambda: value(oc, f"Item:{i}") == want, timeout=timeout,
                               what=lambda: f"Item:{i} fresh:\n{oc.log(2000)}")


def backends(db):
    """pgbouncer's server sessions to the test database (named by the last
    objcached connection that used them), not the test's own ones."""
    return {r[0] for r in db.q("SELECT pid FROM pg_stat_activity WHERE datname = "
                               "current_database() AND application_name LIKE 'objcached%'")}


def test_transaction_mode_reconnect_under_steady_loads_and_writes(fleet, mc_pool, db, bouncer):
    """RECONNECT closes each server session as its transaction ends; in
    transaction mode objcached keeps no session state, so under a steady
    stream of loads and writes nothing fails, no connection of objcached
    drops, and every row is served fresh at the end."""
    # RECONNECT closes a server session still logging in at once, and
    # pgbouncer takes that for a failed login: for server_login_retry it
    # refuses every client that needs a new server session ("server login
    # has been failing"; failed once under the ASan pass, 2026-12-07). That
    # is pgbouncer's behaviour, not objcached's, so the test issues its
    # RECONNECTs once the pool is steady: no server session logging in, the
    # same sessions on two readings apart. (server_login_retry = 1 only
    # shortens what a login started in between would cost; the test would
    # still fail.)
    b = bouncer("transaction", server_login_retry=1)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name),
                            postgresql={"connections": "2", **TXN}))
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what=lambda: f"the near-cache to serve:\n{oc.log(2000)}")
    traffic = Traffic(oc, db).start()

    def pool():
        return [(p["sv_login"], p["sv_active"] + p["sv_idle"] + p["sv_used"] + p["sv_tested"])
                for p in b.admin("SHOW POOLS", named=True) if p["database"] == db.name]

    def steady():
        first = pool()
        if not first or any(login for login, _ in first):
            return False
        time.sleep(0.3)
        return pool() == first

    try:
        for _ in range(3):
            harness.wait_until(lambda: traffic.writes > 20 and traffic.gets > 20, timeout=15,
                               what="traffic")
            old = backends(db)
            harness.wait_until(steady, timeout=15, what=lambda: f"a steady pool: {pool()}")
            b.admin(f'RECONNECT "{db.name}"')
            # every server session of before closed and replaced
            harness.wait_until(lambda: not (old & backends(db)), timeout=15,
                               what=lambda: f"old server sessions closed: {old & backends(db)}")
            traffic.writes = traffic.gets = 0
    finally:
        traffic.stop()
    assert traffic.errors == [], (traffic.errors[:5], oc.log(3000), b.log(3000))
    traffic.wait_fresh(oc)
    harness.wait_until(lambda: db.outbox_rows() == 0, timeout=10, what="the outbox to drain")
    assert oc.stats()["inval_errors"] == 0 and oc.stats()["feed_errors"] == 0, oc.log(3000)
    assert "pg_conn_down" not in oc.log() and "load_failed" not in oc.log(), oc.log(3000)


def test_transaction_mode_short_server_lifetimes_and_query_timeout(fleet, mc_pool, db, bouncer):
    """server_lifetime (3 s) and server_idle_timeout (1 s) close server sessions
    between objcached's transactions: loads and claims go on unbroken.
    query_timeout (1 s) below load_timeout (3 s) ends a load held by a
    lock (fails clearly, before load_timeout + 1 s) and the consumer's
    claim held by a lock on the outbox (its session closed: the claim
    rolls back); once the locks go, loads work, the claim is retried and
    nothing is stale."""
    b = bouncer("transaction", query_timeout=1, server_lifetime=3, server_idle_timeout=1)
    # polls half a second apart: two seldom overlap, so one server session
    # serves them and another one idles out (below)
    oc = fleet.start(config(mc_pool, b.conninfo(db.name),
                            postgresql={"connections": "2", "invalidation_poll": "500ms",
                                        "feed_poll": "500ms", **TXN}))
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what=lambda: f"the near-cache to serve:\n{oc.log(2000)}")
    traffic = Traffic(oc, db).start()
    try:
        harness.wait_until(lambda: b.log().count("server lifetime over") >= 3, timeout=30,
                           what=lambda: f"server sessions closed by age:\n{b.log(3000)}")
    finally:
        traffic.stop()
    assert traffic.errors == [], (traffic.errors[:5], oc.log(3000))
    # server_idle_timeout: lifetimes off (else the session that would idle
    # out may reach its lifetime first), and a second server session (for
    # objcached's polls while a plain client's transaction holds one); once
    # it commits, the polls use one of the two (pgbouncer reuses the last
    # released), the other idles out
    b.admin("SET server_lifetime = 3600")
    other = another_client(b, db)
    try:
        other.autocommit = False
        with other.cursor() as cur:
            cur.execute("SELECT 1")
        harness.wait_until(lambda: len([r for r in b.admin("SHOW SERVERS")
                                        if r[2] == db.name]) >= 2, timeout=10,
                           what=lambda: f"two server sessions: {b.admin('SHOW SERVERS')}")
        other.commit()
    finally:
        other.close()
    harness.wait_until(lambda: "server idle timeout" in b.log(), timeout=30,
                       what=lambda: f"a server session closed idle:\n{b.log(3000)}")
    traffic.wait_fresh(oc)
    assert "pg_conn_down" not in oc.log(), oc.log(3000)

    lock = db.connect(autocommit=False)
    db.q("LOCK TABLE items", conn=lock)
    try:
        v, end, took = timed_get(oc, "Item:77")
    finally:
        lock.rollback()
    # pgbouncer's reason, as in session mode (the load is a pipeline: libpq's
    # own error said only "server closed the connection unexpectedly")
    assert v is None and end == (b"SERVER_ERROR load failed: database connection lost: "
                                 b"FATAL:  query timeout"), end
    assert took < 3 + 1, took
    assert oc.log().count('pg_conn_down conn=objcached-loader reason="FATAL:  query timeout"') \
        == 2, oc.log(3000)
    assert value(oc, "Item:77") == row(db, "items", 77)

    errors = oc.stats()["inval_errors"]
    db.q("LOCK TABLE objcached.outbox", conn=lock)
    try:
        harness.wait_until(lambda: oc.stats()["inval_errors"] > errors, timeout=15,
                           what=lambda: f"a claim ended by query_timeout:\n{oc.log(2000)}")
    finally:
        lock.rollback()
    db.q("UPDATE items SET name = 'after the lock' WHERE id = 77")
    want = row(db, "items", 77)
    harness.wait_until(lambda: value(oc, "Item:77") == want, timeout=FEED_MAX_LAG + 5,
                       what=lambda: f"the claim retried:\n{oc.log(2000)}")
    harness.wait_until(lambda: db.outbox_rows() == 0, timeout=10, what="the outbox to drain")
    # said as what it is: it told the operator to install the hook
    assert ('event=inval_failed step=claim reason="database connection lost: FATAL:  query '
            'timeout"') in oc.log(), oc.log(3000)
    assert "event=inval_unavailable" not in oc.log(), oc.log(3000)
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what="the near-cache to serve again")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_transaction_mode_pgbouncer_restarted_every_connection_comes_back(fleet, mc_pool, db,
                                                                          bouncer, sig):
    """pgbouncer stopped (SIGTERM: at once; SIGINT: safe shutdown, which
    waits for transactions) and started again on the same port: every
    connection of objcached comes back by itself, loads fail clearly while
    it is away, and invalidation and the near-cache work again after."""
    b = bouncer("transaction")
    oc = fleet.start(config(mc_pool, b.conninfo(db.name), objcached={"sample_rate": "1"},
                            postgresql={"connections": "2", **TXN}))
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what=lambda: f"the near-cache to serve:\n{oc.log(2000)}")
    assert value(oc, "Item:1") == row(db, "items", 1)
    wait_sampler_up(oc)
    ups = conn_ups(oc)
    port = b.port
    b.proc.send_signal(sig)
    b.proc.wait(30)
    harness.wait_until(lambda: oc.stats()["pg_connections_up"] == 0, timeout=10,
                       what="the loaders to see pgbouncer gone")
    v, end = get(oc, "Item:2")
    assert v is None and end.startswith(b"SERVER_ERROR load failed: "), end
    b.start()
    assert b.port == port
    wait_all_up_again(oc, ups)
    harness.wait_until(lambda: oc.stats()["pg_connections_up"] == 2, timeout=10,
                       what="both loaders up")
    assert value(oc, "Item:2") == row(db, "items", 2)
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what="the near-cache to serve again")
    db.q("UPDATE items SET name = 'after restart' WHERE id = 1")
    want = row(db, "items", 1)
    harness.wait_until(lambda: value(oc, "Item:1") == want, timeout=FEED_MAX_LAG + 5,
                       what=lambda: f"an UPDATE after the restart:\n{oc.log(2000)}")

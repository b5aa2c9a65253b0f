"""PostgreSQL failover: a multi-host conninfo (libpq's "Specifying Multiple
Hosts", as Patroni, repmgr and cloud failover hand every client), and the
standbys such a list (or a demoted old primary) can lead to.

- a first host that does not answer (the fault proxy in "drop" mode: a dead
  machine, TCP accepted and nothing back) passes the turn to the next host
  after connect_timeout, and reconnects start from the host that last
  worked (the dead one sees no new connection);
- when every host fails, the reason names each host's error;
- a hot standby first in the list (no target_session_attrs) is passed over:
  a load reads the primary, not the standby's older row (its replay paused
  on purpose);
- a conninfo that names a standby only: the loader fails loudly
  (pg_conn_down with libpq's reason), it never fills;
- behind pgbouncer, a standby promoted after the pool's first login is
  taken (pgbouncer hands on the in_hot_standby of that login: objcached
  asks the server);
- --check-config refuses a conninfo or wal_conninfo whose
  target_session_attrs lets a standby in, accepts a feed_conninfo that
  does; the WAL reader's replication=database connection takes
  target_session_attrs=primary (a standby's is refused);
- the database going back in time (a promote of a replica that had not
  received the last commit; a point-in-time restore from a base backup and
  archived WAL; a stopped copy of the data directory put back, same cluster
  and timeline): no lost value is served, from a running sidecar or one
  started after, for trigger-mode and WAL models; a plain restart, a crash
  under writes, a marker moved forward by another consumer during a check
  and a marker gone from memcached invalidate nothing; behind pgbouncer in
  transaction mode (the consumer's connection outlives the server), a copy
  put back is seen too; an old primary left up stops moving the marker
  once the new primary's timeline is there.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

import consistency as oc_c
import harness
from conftest import merge_config, standard_config
from faultproxy import FaultProxy
from test_sql_feed import Standby


@pytest.fixture(scope="module")
def standby(pg):
    s = Standby(pg)
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def pids(pg, app):
    return {r[0] for r in pg.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))}


def loaded(c, key):
    """The data a get returns, or None for an error reply (not loaded yet)."""
    values, terminal = c.get_multi([key])
    return values[0][2] if terminal == b"END" and values else None


@pytest.fixture
def dead(pg):
    """A host that takes the TCP connection and never answers: to libpq's
    asynchronous connect the same endless wait as a dead machine's dropped SYNs
    (an unroutable address such as 10.255.255.1 is no use here: this sandbox's
    network completes that connect)."""
    proxy = FaultProxy(pg.port, name="dead-pg")
    proxy.set_mode("drop")
    yield proxy
    proxy.close()


def test_a_dead_first_host_passes_the_turn_to_the_next(objcached_factory, pg, ref, dead):
    conninfo = (f"host=127.0.0.1,{pg.dir} port={dead.port},{pg.port} dbname={pg.dbname} "
                f"user=postgres connect_timeout=2")
    oc = objcached_factory({"postgresql": {"conninfo": conninfo}})
    with oc.client(timeout=30) as c:
        harness.wait_until(lambda: loaded(c, "User:1") == ref.json("User", 1), timeout=30,
                           what="a load through the second host")
        harness.wait_until(lambda: len(pids(pg, "objcached-loader")) == 2, timeout=30,
                           what="both loader connections up")
        # A reconnect starts from the host that came up: the dead one sees none.
        before, accepted = pids(pg, "objcached-loader"), dead.counts["accepted"]
        pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'objcached-loader'")
        harness.wait_until(lambda: len(pids(pg, "objcached-loader") - before) == 2,
                           timeout=10, what="both loaders back")
        assert c.get("User:2") == ref.json("User", 2)
        assert dead.counts["accepted"] == accepted
    s = oc.stats()   # the first round passed the dead host's turn on, per connection
    assert s["pg_hosts_passed"] >= 2 and s["pg_standbys_refused"] == 0, s


def test_every_host_failed_names_each(objcached_factory, pg, dead):
    closed = harness.free_port()
    conninfo = (f"host=127.0.0.1,127.0.0.2 port={dead.port},{closed} dbname={pg.dbname} "
                f"user=postgres connect_timeout=2")
    oc = objcached_factory({"postgresql": {"conninfo": conninfo}})
    pattern = (r"level=warn.*event=pg_conn_down conn=objcached-loader reason=\"127\.0\.0\.1: "
               r"connect timed out; 127\.0\.0\.2: .*refused")
    harness.wait_until(lambda: re.search(pattern, oc.log()), timeout=30,
                       what="the round's reason")


def test_a_standby_first_in_the_list_is_passed_over(objcached_factory, pg, standby, ref):
    conninfo = (f"host={standby.dir},{pg.dir} port={standby.port},{pg.port} "
                f"dbname={pg.dbname} user=postgres")
    oc = objcached_factory({"postgresql": {"conninfo": conninfo}})
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        pg.execute("UPDATE users SET score = score + 1 WHERE id = 21")
        fresh = ref.json("User", 21)
        old = standby.execute("SELECT row_to_json(t)::text FROM (SELECT id, name, email, "
                              "created_at, score, note FROM users WHERE id = 21) t")
        assert old[0][0].encode() != fresh          # the standby is behind on purpose
        with oc.client() as c:
            assert c.get("User:21") == fresh
        s = oc.stats()   # each connection's round: the standby refused, the turn passed
        assert s["pg_standbys_refused"] >= 2 and s["pg_hosts_passed"] >= 2, s
    finally:
        pg.execute("UPDATE users SET score = score - 1 WHERE id = 21")
        standby.execute("SELECT pg_wal_replay_resume()")


def test_a_loader_on_a_standby_fails_loudly(objcached_factory, standby, pg):
    conninfo = f"host={standby.dir} port={standby.port} dbname={pg.dbname} user=postgres"
    oc = objcached_factory({"postgresql": {"conninfo": conninfo}})
    with oc.client() as c:
        values, terminal = c.get_multi(["User:22"])
        assert values == [] and terminal.startswith(b"SERVER_ERROR load failed"), terminal
    assert oc.stats()["pg_standbys_refused"] >= 1
    assert re.search(r"level=warn.*event=pg_conn_down conn=objcached-loader "
                     r"reason=\".*hot standby", oc.log()), oc.log()


def test_a_standby_promoted_behind_pgbouncer_is_taken(objcached_factory, pg, ref):
    """pgbouncer (1.18: add_welcome_parameter) hands every client the server
    parameters of its pool's first server login, in_hot_standby among them,
    until the pool is reset (RECONNECT, a RELOAD with a new connect string, a
    restart); libpq's target_session_attrs=primary believed them, and a
    standby promoted behind a pgbouncer that first reached it as a standby
    was refused ("server is in hot standby mode") until then: after a
    failover, no load at all. objcached asks the server itself."""
    s = Standby(pg)
    b = harness.Pgbouncer(s, pool_mode="session")
    try:
        s.start()
        b.start()
        b.connect().close()                     # the pool's first login: a standby
        s.execute("SELECT pg_promote()")
        harness.wait_until(lambda: not s.execute("SELECT pg_is_in_recovery()")[0][0],
                           timeout=30, what="the promotion")
        after = b.connect()
        try:
            assert after.get_parameter_status("in_hot_standby") == "on"   # the cached one
            with after.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                assert cur.fetchone()[0] is False                       # the server's
        finally:
            after.close()
        oc = objcached_factory({"postgresql": {"conninfo": b.conninfo()}})
        with oc.client() as c:
            harness.wait_until(lambda: loaded(c, "User:3") == ref.json("User", 3),
                               timeout=30, what=lambda: f"a load:\n{oc.log(3000)}")
        # (the start's one-shot generations read still believes pgbouncer:
        # docs/operations.md)
        assert not re.search(r"event=pg_conn_down conn=\S+ reason=\".*hot standby", oc.log())
    finally:
        b.cleanup()
        s.cleanup()

def check(tmp_path, pg, mc_pool, postgresql):
    """objcached --check-config on the standard config with these [postgresql] keys."""
    path = tmp_path / "c.ini"
    path.write_text(harness.render_ini(
        merge_config(standard_config(pg, mc_pool), {"postgresql": postgresql})))
    return harness.check_config(str(path))


@pytest.mark.parametrize("key", ["conninfo", "wal_conninfo"])
@pytest.mark.parametrize("attrs", ["any", "standby", "prefer-standby", "read-only"])
def test_check_config_refuses_a_conninfo_that_lets_a_standby_in(tmp_path, pg, mc_pool,
                                                                key, attrs):
    out = check(tmp_path, pg, mc_pool,
                {key: f"{pg.conninfo} target_session_attrs={attrs}"})
    assert out.returncode != 0, out.stdout
    assert f"target_session_attrs={attrs} can reach a hot standby" in out.stdout + out.stderr
    assert "served stale" in out.stdout + out.stderr


def test_check_config_takes_a_replica_feed_conninfo(tmp_path, pg, mc_pool):
    out = check(tmp_path, pg, mc_pool,
                {"feed_conninfo": f"{pg.conninfo} target_session_attrs=any"})
    assert "target_session_attrs" not in out.stdout + out.stderr, out.stdout


def test_the_wal_readers_replication_connection_asks_for_the_primary(tmp_path, pg, mc_pool,
                                                                     standby):
    on_primary = check(tmp_path, pg, mc_pool,
                       {"wal": "on", "wal_slot": "oc_failover", "wal_conninfo": pg.conninfo})
    assert "no replication connection" not in on_primary.stdout, on_primary.stdout
    on_standby = check(tmp_path, pg, mc_pool, {
        "wal": "on", "wal_slot": "oc_failover",
        "wal_conninfo": f"host={standby.dir} port={standby.port} dbname={pg.dbname} "
                        f"user=postgres"})
    assert re.search(r"error: WAL source: no replication connection to wal_conninfo: .*"
                     r"hot standby", on_standby.stdout), on_standby.stdout


# ------------------------------------------------------------------ the database goes back in time
#
# A failover to a replica that had not received the last commits (asynchronous
# replication), or a point-in-time restore, leaves the database OLDER than what
# memcached may hold: a row loaded after a commit the new primary does not
# have. Every outbox consumer compares the primary's identity (system
# identifier, timeline) with a marker in memcached at each connection
# (docs/operations.md, "The database went back in time"): a later timeline
# invalidates every model whole, once, for the fleet.

RB_SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) AS i;
"""
RB_MODELS = {"Item": {"table": "items", "near_ttl": "60s", "ttl": "1h"}}


def rb_config(mc_pool, conninfo, source, **postgresql):
    pg = {"feed_poll": "100ms", "feed_max_lag": "2s", "invalidation_poll": "200ms",
          **postgresql}
    if source == "wal":
        pg.update({"wal": "on", "wal_slot": "oc_rb", "wal_heartbeat": "100ms",
                   "wal_takeover": "2s"})
    return oc_c.sidecar_config(mc_pool, conninfo, RB_MODELS,
                               {"objcached": {"near_cache_size": "16m"}, "postgresql": pg})


def one_rollback(oc):
    """The consumer's check bumped every model, once."""
    harness.wait_until(lambda: oc.stats()["db_rollbacks"] >= 1, timeout=15,
                       what="the consumer's check")
    assert oc.stats()["db_rollbacks"] == 1


def rb_servers(source, objcached_bin, mc_pool, settings=None, replica=True):
    """(source, primary, standby): a primary (PostgreSQL `settings`) whose
    database oc_rb has the hook (Item attached via `source`), and a streaming
    replica of it (None without `replica`); memcached flushed."""
    primary = harness.Postgres(dbname="oc_rb", settings=settings)
    standby = None
    try:
        primary.start()
        wal = {"postgresql": {"wal": "on", "wal_slot": "oc_rb"}} if source == "wal" else None
        oc_c.create_template(primary, "oc_rb", RB_SCHEMA, RB_MODELS, objcached_bin,
                             overrides=wal)
        if replica:
            standby = Standby(primary)
            standby.start()
        for m in mc_pool:
            m.start()
            m.flush_all()
        yield source, primary, standby
    finally:
        if standby is not None:
            standby.cleanup()
        primary.cleanup()


@pytest.fixture(params=["triggers", "wal"])
def rb(request, objcached_bin, mc_pool):
    yield from rb_servers(request.param, objcached_bin, mc_pool)


def both(primary, standby):
    return (f"host={primary.dir},{standby.dir} port={primary.port},{standby.port} "
            f"dbname=oc_rb user=postgres connect_timeout=2")


def lose_a_commit(primary, standby, value):
    """The standby replays everything so far, then receives nothing more (its
    WAL receiver stopped: a promote replays what was received, paused or not);
    the primary commits `value` into Item 1, which only it has."""
    lsn = primary.execute("SELECT pg_current_wal_lsn()")[0][0]
    harness.wait_until(lambda: standby.execute(
        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0],
        timeout=30, what="the standby to catch up")
    standby.execute("ALTER SYSTEM SET primary_conninfo = ''")
    standby.execute("SELECT pg_reload_conf()")
    harness.wait_until(lambda: not standby.execute("SELECT count(*) FROM pg_stat_wal_receiver")[0][0],
                       timeout=30, what="the standby's WAL receiver to stop")
    standby.execute("SELECT pg_wal_replay_pause()")
    primary.execute("UPDATE items SET name = %s WHERE id = 1", (value,), dbname="oc_rb")


def cache_a_lost_commit(primary, standby, mc_pool, sidecars):
    """Once the pool's marker names the database (with WAL: once a holder's
    consumer runs), commit a value only the primary will have
    (lose_a_commit) and read it through each sidecar (each near-cache's
    doorkeeper sees it twice). Returns (old, lost): Item 1's row before, and
    the lost one."""
    old = item1(primary)
    harness.wait_until(lambda: marker(mc_pool) is not None, timeout=30, what="the marker")
    lose_a_commit(primary, standby, "a lost commit")
    lost = item1(primary)
    for oc in sidecars:
        harness.wait_until(lambda: get1(oc) == lost, timeout=20,
                           what="the lost commit read through objcached")
        get1(oc)
    return old, lost


def fail_over(primary, standby):
    primary.stop("immediate")
    standby.execute("SELECT pg_promote()")
    harness.wait_until(lambda: not standby.execute("SELECT pg_is_in_recovery()")[0][0],
                       timeout=30, what="the promotion")


def item1(server):
    return server.execute("SELECT row_to_json(t)::text FROM items t WHERE t.id = 1",
                          dbname="oc_rb")[0][0].encode()


def marker_key(models, prefix="oc:"):
    """The marker's key for a set of model names (oc_feed_marker_key): the
    prefix, objcached.db. and the 64-bit sum of the names' FNV-1a, in hex."""
    total = 0
    for name in models:
        h = 14695981039346656037
        for b in name.encode():
            h = ((h ^ b) * 1099511628211) & (2**64 - 1)
        total = (total + h) & (2**64 - 1)
    return f"{prefix}objcached.db.{total:016x}"


def marker(mc_pool, models=RB_MODELS):
    """memcached's marker of the database (key_prefix oc:), or None."""
    for m in mc_pool:
        with m.client() as c:
            v = c.get(marker_key(models))
        if v is not None:
            return v
    return None


def marker_of(mc_pool):
    """The marker's (system identifier, timeline) as bytes, and its WAL
    position (the flush LSN, an int; 0 if it has none): (b"", b"", 0) if
    there is no marker."""
    fields = (marker(mc_pool) or b"").split() + [b"", b"", b"0"]
    return fields[0], fields[1], int(fields[2]) if len(fields) > 5 else 0


def get1(oc):
    """Item:1 through oc, or None (an error reply while PostgreSQL is away)."""
    with oc.client(timeout=30) as c:
        return loaded(c, "Item:1")


def test_a_failover_to_a_replica_behind_serves_no_lost_commit(objcached_factory, rb, mc_pool):
    source, primary, standby = rb
    oc = objcached_factory(config=rb_config(mc_pool, both(primary, standby), source))
    old, lost = cache_a_lost_commit(primary, standby, mc_pool, [oc])
    fail_over(primary, standby)
    assert item1(standby) == old
    harness.wait_until(lambda: get1(oc) is not None and oc.stats()["feed_connected"] == 1,
                       timeout=30, what="objcached on the promoted replica")
    harness.wait_until(lambda: get1(oc) == old, timeout=15,
                       what=lambda: f"the replica's row, not the lost one:\n{oc.log(3000)}")
    # (with WAL, the holder's new slot bumps its models first; its consumer,
    # started once it streams, checks)
    one_rollback(oc)
    assert re.search(r"level=error.*event=db_rollback", oc.log())


def cascade(primary, standby):
    """A streaming replica that reads its WAL from `standby` (a cascade): a copy
    of the primary (the harness's servers run without full_page_writes, so no
    base backup of a standby), then pointed at the standby."""
    reader = Standby(primary)
    reader.start()
    reader.execute(f"ALTER SYSTEM SET primary_conninfo = 'host={standby.dir} "
                   f"port={standby.port} user=postgres'")
    reader.execute("SELECT pg_reload_conf()")
    harness.wait_until(lambda: reader.execute(
        "SELECT sender_port FROM pg_stat_wal_receiver")[0:1] == [(standby.port,)],
        timeout=30, what="the cascade from the standby")
    return reader


def test_a_fleet_whose_feeds_read_a_replica_serves_no_lost_commit(objcached_factory, rb,
                                                                   mc_pool):
    """docs/wal.md#fleet-scale: every sidecar's feed reads a replica
    (feed_conninfo), here a cascading standby of the replica promoted: it
    stays a standby and follows the new timeline, so no feed ever reads a
    primary. The outbox consumer (the WAL holder's in WAL mode) reaches the
    primary at each connection: it checks (until 2026-12-06 only a feed
    reading a primary did, and the lost row was served for good)."""
    source, primary, standby = rb
    reader = cascade(primary, standby)
    try:
        oc = objcached_factory(config=rb_config(mc_pool, both(primary, standby), source,
                                                feed_conninfo=reader.conninfo))
        old, lost = cache_a_lost_commit(primary, standby, mc_pool, [oc])
        fail_over(primary, standby)
        harness.wait_until(lambda: reader.execute(
            "SELECT received_tli FROM pg_stat_wal_receiver")[0:1] == [(2,)], timeout=30,
            what="the feed's replica following the new primary")
        assert reader.execute("SELECT pg_is_in_recovery()")[0][0]
        harness.wait_until(lambda: get1(oc) == old, timeout=30,
                           what=lambda: f"the replica's row, not the lost one:\n{oc.log(3000)}")
        harness.wait_until(lambda: oc.stats()["db_rollbacks"] >= 1, timeout=15,
                           what=lambda: f"the consumer's check:\n{oc.log(4000)}")
        assert oc.stats()["db_rollbacks"] == 1
        assert "event=feed_promoted" not in oc.log()
        assert re.search(r"level=error.*event=db_rollback", oc.log())
    finally:
        reader.cleanup()


# docs/operations.md's grants: a follower (near-cache, invalidation_poll = 0)
# gets these only, no feed_append
FOLLOWER_GRANTS = """
CREATE ROLE oc_follower LOGIN;
GRANT USAGE ON SCHEMA objcached TO oc_follower;
GRANT EXECUTE ON FUNCTION objcached.claim(integer, integer), objcached.pending(),
    objcached.hooked(regclass), objcached.requeue(text[], text[], timestamptz),
    objcached.feed_poll(bigint, integer) TO oc_follower;
GRANT SELECT ON objcached.models, objcached.status, items TO oc_follower;
"""


@pytest.mark.parametrize("rb", ["triggers"], indirect=True)
def test_a_follower_without_the_appenders_grant_leaves_the_check_to_a_consumer(
        objcached_factory, rb, mc_pool):
    """The only feed reading the primary is a follower's, whose role may not
    call feed_append; the consumer's sidecar reads its feed from a replica.
    Until 2026-12-06 the follower found the rollback, its bump failed
    (`feed_failed step=rollback`, permission denied) and nobody else looked:
    the lost row was served for good, by both. The consumer checks now; the
    follower does not try."""
    _, primary, standby = rb
    primary.execute(FOLLOWER_GRANTS, dbname="oc_rb")
    reader = cascade(primary, standby)
    try:
        a = objcached_factory(config=rb_config(mc_pool, both(primary, standby), "triggers",
                                               feed_conninfo=reader.conninfo))
        f = objcached_factory(config=rb_config(
            mc_pool, both(primary, standby).replace("user=postgres", "user=oc_follower"),
            "triggers", invalidation_poll="0"))
        old, lost = cache_a_lost_commit(primary, standby, mc_pool, [a, f])
        fail_over(primary, standby)
        for oc in (a, f):
            harness.wait_until(lambda: get1(oc) == old, timeout=30,
                               what=lambda: f"the replica's row, not the lost one:\n"
                                            f"{oc.log(3000)}")
        # the replica's row can be served before the check counts (the lost
        # commit's own outbox row, claimed late under load, emptied the key)
        harness.wait_until(lambda: a.stats()["db_rollbacks"] >= 1, timeout=30,
                           what=lambda: f"the consumer's rollback check:\n{a.log(3000)}")
        assert a.stats()["db_rollbacks"] == 1
        assert f.stats()["db_rollbacks"] == 0
        assert "permission denied" not in f.log()
    finally:
        reader.cleanup()


def test_a_sidecar_started_after_the_failover_serves_no_lost_commit(objcached_factory, rb,
                                                                    mc_pool):
    source, primary, standby = rb
    a = objcached_factory(config=rb_config(mc_pool, primary.conninfo, source))
    old, lost = cache_a_lost_commit(primary, standby, mc_pool, [a])
    a.stop()
    fail_over(primary, standby)
    b = objcached_factory(config=rb_config(mc_pool, standby.conninfo, source))
    harness.wait_until(lambda: b.stats()["feed_resyncs"] >= 1, timeout=30,
                       what="the feed on the new primary")
    harness.wait_until(lambda: get1(b) == old, timeout=15,
                       what=lambda: f"the replica's row, not the lost one:\n{b.log(3000)}")
    one_rollback(b)
    harness.wait_until(lambda: marker_of(mc_pool)[1] == b"2", timeout=10,
                       what="the marker of the promote's timeline")
    # once for the fleet: the marker now names the new timeline
    c = objcached_factory(config=rb_config(mc_pool, standby.conninfo, source))
    if source == "triggers":    # (with WAL only the holder, b, runs a consumer)
        harness.wait_until(lambda: "event=db_identity" in c.log(), timeout=30,
                           what="the second sidecar's check")
        assert 'marker=same' in c.log()
    assert get1(c) == old
    assert c.stats()["db_rollbacks"] == 0 and b.stats()["db_rollbacks"] == 1


def test_a_postgresql_restart_keeps_the_cache_warm(objcached_factory, rb, mc_pool):
    """Same cluster, same timeline: nothing was lost, nothing is invalidated;
    and a marker gone from memcached (restarted, evicted) is written again,
    invalidating nothing."""
    source, primary, standby = rb
    standby.cleanup()
    oc = objcached_factory(config=rb_config(mc_pool, primary.conninfo, source))
    gen = primary.execute("SELECT generation FROM objcached.models WHERE model = 'Item'",
                          dbname="oc_rb")[0][0]
    want = item1(primary)
    harness.wait_until(lambda: oc.stats()["feed_resyncs"] >= 1, timeout=30,
                       what="the feed")
    assert get1(oc) == want
    oc.wait_idle()                       # its fill written back to memcached
    sysid = primary.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
    want_marker = (str(sysid).encode(), b"1")
    harness.wait_until(lambda: marker_of(mc_pool)[:2] == want_marker, timeout=10,
                       what="the marker written")
    for flush in (False, True):
        before = oc.stats()
        checks = oc.log().count("event=db_identity")
        primary.stop("fast")
        if flush:   # the marker gone (memcached restarted: its entries gone too)
            # Flushed once the sidecar has seen its connection go: before the
            # stop, the consumer's next cycle wrote the marker back (a refresh
            # finding it gone, as it should), and the check found it there
            # (CI, 2026-12-06).
            harness.wait_until(lambda: oc.stats()["inval_connected"] == 0, timeout=10,
                               what="the consumer's connection gone")
            for m in mc_pool:
                m.flush_all()
        primary.start()
        harness.wait_until(lambda: oc.stats()["feed_resyncs"] > before["feed_resyncs"],
                           timeout=30, what="the feed back")
        harness.wait_until(lambda: oc.log().count("event=db_identity") == checks + 1,
                           timeout=10, what="the marker's check")
        assert oc.log().count("marker=written") == (2 if flush else 1)
        hits = oc.stats()["get_hits"]
        harness.wait_until(lambda: get1(oc) == want, timeout=30, what="Item:1")
        if not flush:
            assert oc.stats()["get_hits"] == hits + 1   # still warm: a hit
        harness.wait_until(lambda: marker_of(mc_pool)[:2] == want_marker, timeout=10,
                           what="the marker written again")
        oc.wait_idle()
    assert primary.execute("SELECT generation FROM objcached.models WHERE model = 'Item'",
                           dbname="oc_rb")[0][0] == gen
    assert oc.stats()["db_rollbacks"] == 0
    assert "event=db_rollback" not in oc.log()


def test_two_services_on_one_pool_take_no_rollback_from_each_other(objcached_factory, rb,
                                                                    mc_pool, objcached_bin):
    """Two services, each its own PostgreSQL cluster and its own models,
    share the memcached pool and the default key_prefix (their keys cannot
    collide). Each sidecar's check must read its own database's marker: with
    one marker per pool, the second to connect took the other's database
    for a rollback and made every model cold, at every connection (seen:
    bench/'s writes phase)."""
    source, primary, standby = rb
    standby.cleanup()
    other = harness.Postgres(dbname="oc_other")
    try:
        other.start()
        models = {"Other": {"table": "items"}}
        oc_c.create_template(other, "oc_other", RB_SCHEMA, models, objcached_bin)
        a = objcached_factory(config=rb_config(mc_pool, primary.conninfo, source))
        harness.wait_until(lambda: "event=db_identity" in a.log(), timeout=30,
                           what="the first service's check")
        b = objcached_factory(config=oc_c.sidecar_config(
            mc_pool, other.conninfo, models, {"postgresql": {"feed_poll": "100ms"}}))
        harness.wait_until(lambda: "event=db_identity" in b.log()
                           or "event=db_rollback" in b.log(), timeout=30,
                           what="the second service's check")
        assert b.stats()["db_rollbacks"] == 0, b.log()
        for server, oc in ((primary, a), (other, b)):     # each connects again
            checks = oc.log().count("event=db_identity")
            server.stop("fast")
            server.start()
            harness.wait_until(lambda: oc.log().count("event=db_identity") > checks,
                               timeout=30, what="the check after the restart")
        for oc in (a, b):
            assert oc.stats()["db_rollbacks"] == 0, oc.log()
            assert oc.log().count("marker=written") == 1
        assert marker(mc_pool) is not None and marker(mc_pool, models) is not None
        assert marker(mc_pool) != marker(mc_pool, models)
    finally:
        other.cleanup()


# ------------------------------------------------------------------ restores
#
# A point-in-time restore (a base backup, archived WAL, a recovery target
# before some commits, then a promote) is a new timeline; a copy of the data
# directory put back as it was (a file-system snapshot, a base backup started
# without recovery targets) keeps the cluster and the timeline, and is seen by
# its WAL position below the marker's.

# (both run in the data directory: the archive is beside it, in the server's
# own temporary directory, where a cluster restored in its place finds it)
ARCHIVE = {"archive_mode": "on",
           "archive_command": "'mkdir -p ../archive && cp %p ../archive/%f'"}


@pytest.fixture(params=["triggers", "wal"])
def archiving(request, objcached_bin, mc_pool):
    """(source, primary, None): rb's primary, archiving its WAL; no replica."""
    yield from rb_servers(request.param, objcached_bin, mc_pool, settings=ARCHIVE,
                          replica=False)


def put_back(server, datadir, **recovery):
    """Stop `server`, put `datadir` (a base backup, a copy of its data
    directory) in place of its data directory, start it again: same
    directory, same port. `recovery`: recovery settings, and recovery.signal."""
    server.stop("fast")
    shutil.rmtree(server.datadir)
    os.rename(datadir, server.datadir)
    if recovery:
        server.settings.update(recovery)
        signal_file = os.path.join(server.datadir, "recovery.signal")
        open(signal_file, "w").close()
        if server._pw:
            os.chown(signal_file, server._pw.pw_uid, server._pw.pw_gid)
    server.start()


def flush_lsn(server):
    return int(server.execute("SELECT (pg_current_wal_flush_lsn() - '0/0')::text")[0][0])


def test_a_point_in_time_restore_serves_no_lost_commit(objcached_factory, archiving,
                                                       mc_pool):
    """A base backup, a restore point, a commit cached by objcached, then the
    cluster replaced by one restored from the backup and the archive up to the
    restore point and promoted (timeline 2), on the same port: the running
    sidecar's consumer finds the later timeline and every model is bumped."""
    source, primary, _ = archiving
    oc = objcached_factory(config=rb_config(mc_pool, primary.conninfo, source))
    old = item1(primary)
    harness.wait_until(lambda: marker(mc_pool) is not None, timeout=30, what="the marker")
    assert get1(oc) == old
    base = os.path.join(primary.dir, "base")
    primary._cmd(["pg_basebackup", "-h", primary.dir, "-p", str(primary.port),
                  "-U", primary.SUPERUSER, "-D", base, "-X", "stream",
                  "--checkpoint=fast", "--no-sync"], timeout=180)
    primary.execute("SELECT pg_create_restore_point('before_the_lost_commit')")
    primary.execute("UPDATE items SET name = 'a lost commit' WHERE id = 1", dbname="oc_rb")
    lost = item1(primary)
    harness.wait_until(lambda: get1(oc) == lost, timeout=20,
                       what="the lost commit read through objcached")
    get1(oc)                               # (the near-cache's doorkeeper saw it twice)
    segment = primary.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    primary.execute("SELECT pg_switch_wal()")
    harness.wait_until(lambda: primary.execute(
        "SELECT last_archived_wal >= %s FROM pg_stat_archiver", (segment,))[0][0],
        timeout=30, what="the restore point's WAL archived")
    put_back(primary, base, restore_command="'cp ../archive/%f %p'",
             recovery_target_name="'before_the_lost_commit'",
             recovery_target_action="'promote'")
    harness.wait_until(lambda: not primary.execute("SELECT pg_is_in_recovery()")[0][0],
                       timeout=30, what="the restore's promotion")
    assert item1(primary) == old
    harness.wait_until(lambda: get1(oc) == old, timeout=30,
                       what=lambda: f"the restored row, not the lost one:\n{oc.log(3000)}")
    one_rollback(oc)
    assert re.search(r"level=error.*event=db_rollback rule=timeline", oc.log())
    harness.wait_until(lambda: marker_of(mc_pool)[1] == b"2", timeout=10,
                       what="the marker of the restore's timeline")


def commit_to_lose(primary):
    """An UPDATE of item 1, durable (the harness's synchronous_commit is
    off): the commit a copy put back will lack. Returns its WAL position."""
    conn = primary.connect(dbname="oc_rb")
    try:
        with conn.cursor() as cur:
            cur.execute("SET synchronous_commit = on")
            cur.execute("UPDATE items SET name = 'a lost commit' WHERE id = 1")
            cur.execute("SELECT (pg_current_wal_lsn() - '0/0')::text")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def served_lost_then_old(oc, mc_pool, primary, committed, old, put_back_copy):
    """The lost commit read through objcached and the marker's position past
    it; then put_back_copy() puts the copy back: the copy's row must be
    served, after exactly one rollback by rule=lsn."""
    lost = item1(primary)
    harness.wait_until(lambda: get1(oc) == lost, timeout=20,
                       what="the lost commit read through objcached")
    get1(oc)
    harness.wait_until(lambda: marker_of(mc_pool)[2] >= committed, timeout=15,
                       what=lambda: f"the marker's position past the lost commit "
                                    f"({committed}): {marker(mc_pool)}\n{oc.log(3000)}")
    assert oc.stats()["db_rollbacks"] == 0
    put_back_copy()
    assert flush_lsn(primary) < committed and item1(primary) == old
    harness.wait_until(lambda: get1(oc) == old, timeout=30,
                       what=lambda: f"the copy's row, not the lost one:\n{oc.log(3000)}")
    one_rollback(oc)
    assert re.search(r"level=error.*event=db_rollback rule=lsn", oc.log())


def test_a_copy_of_the_data_directory_put_back_serves_no_lost_commit(objcached_factory,
                                                                     rb, mc_pool):
    """A copy of the stopped data directory, taken before a commit cached by
    objcached, put back: the same system identifier and timeline, which the
    check took for a plain restart until 2026-12-06 (the lost row served
    until ttl). The marker's WAL position, moved forward as the consumers
    claim, is above the copy's: every model is bumped (rule=lsn). The
    restart that took the copy bumps nothing."""
    source, primary, standby = rb
    standby.cleanup()
    oc = objcached_factory(config=rb_config(mc_pool, primary.conninfo, source))
    old = item1(primary)
    harness.wait_until(lambda: marker(mc_pool) is not None, timeout=30, what="the marker")
    assert get1(oc) == old
    copy = os.path.join(primary.dir, "copy")
    checks = oc.log().count("event=db_identity")
    primary.stop("fast")
    subprocess.run(["cp", "-a", primary.datadir, copy], check=True)
    primary.start()
    harness.wait_until(lambda: oc.log().count("event=db_identity") > checks, timeout=30,
                       what="the check after the restart")
    committed = commit_to_lose(primary)
    served_lost_then_old(oc, mc_pool, primary, committed, old,
                         lambda: put_back(primary, copy))


@pytest.mark.parametrize("rb", ["triggers"], indirect=True)
def test_a_marker_moved_forward_during_a_check_is_no_rollback(objcached_factory, rb, mc_pool):
    """A live primary, two sidecars, steady writes. B's consumer connects again
    and reads its position; its read of the marker reaches memcached 3 s later
    (a slow link), after A's claims moved the marker past that position: a
    position below the marker that is no copy put back. B reads its position
    again once the marker has answered, and invalidates nothing."""
    _, primary, standby = rb
    standby.cleanup()
    slow_mc = FaultProxy(mc_pool[0].port, name="slow-mc")
    b_pg = FaultProxy(primary.port, name="b-pg")
    try:
        a = objcached_factory(config=rb_config([mc_pool[0]], primary.conninfo, "triggers"))
        config = rb_config(slow_mc.address,
                           f"host=127.0.0.1 port={b_pg.port} dbname=oc_rb user=postgres",
                           "triggers")
        config["memcached"]["io_timeout"] = "60s"    # slow, not failed
        b = objcached_factory(config=config)
        harness.wait_until(lambda: all("event=db_identity" in oc.log() for oc in (a, b)),
                           timeout=30, what="both checks")
        checks = b.log().count("event=db_identity")
        slow_mc.set_mode("delay", delay=3.0)
        b_pg.set_mode("reset")                   # B's connections end, and come back
        b_pg.set_mode("forward")

        def checked():
            primary.execute("UPDATE items SET name = 'moved ' || clock_timestamp() "
                            "WHERE id = 2", dbname="oc_rb")
            log = b.log()
            return log.count("event=db_identity") > checks or "event=db_rollback" in log
        harness.wait_until(checked, timeout=60, interval=0.2,
                           what=lambda: f"B's check:\n{b.log(3000)}")
        assert b.stats()["db_rollbacks"] == 0 and a.stats()["db_rollbacks"] == 0, b.log()
        # the marker B read was above the position it read first
        assert re.search(r"event=db_identity now=\S+ \S+ \S+ marker=same was=", b.log()), \
            b.log()
    finally:
        slow_mc.close()
        b_pg.close()


@pytest.mark.parametrize("rb", ["triggers"], indirect=True)
def test_a_crash_under_writes_is_no_rollback(objcached_factory, rb, mc_pool):
    """The marker's position is a flushed one: a PostgreSQL crash (immediate
    stop) while the consumer claims and moves the marker comes back at or
    above it (crash recovery replays every flushed record), and nothing is
    invalidated."""
    _, primary, standby = rb
    standby.cleanup()
    oc = objcached_factory(config=rb_config(mc_pool, primary.conninfo, "triggers"))
    harness.wait_until(lambda: "event=db_identity" in oc.log(), timeout=30,
                       what="the check")
    start = marker_of(mc_pool)[2]

    def moved():
        primary.execute("UPDATE items SET name = 'w ' || clock_timestamp() WHERE id = 3",
                        dbname="oc_rb")
        return marker_of(mc_pool)[2] > start
    harness.wait_until(moved, timeout=30, interval=0.1, what="the marker moving forward")
    for _ in range(20):                          # the crash in the middle of writes
        primary.execute("UPDATE items SET name = 'w ' || clock_timestamp() WHERE id = 3",
                        dbname="oc_rb")
    checks = oc.log().count("event=db_identity")
    primary.stop("immediate")
    primary.start()
    harness.wait_until(lambda: oc.log().count("event=db_identity") > checks
                       or "event=db_rollback" in oc.log(), timeout=30,
                       what="the check after the crash")
    assert oc.stats()["db_rollbacks"] == 0, oc.log(3000)


@pytest.fixture
def slow_flush(objcached_bin, mc_pool):
    """("triggers", primary, None): rb's primary, no replica, whose WAL
    writer flushes asynchronous commits (the consumer's claims: the harness's
    synchronous_commit is off) only every 10 s: the consumer's own commits
    do not move the flush position meanwhile."""
    yield from rb_servers("triggers", objcached_bin, mc_pool,
                          settings={"wal_writer_delay": "10s"}, replica=False)


def test_a_copy_put_back_behind_pgbouncer_in_transaction_mode_serves_no_lost_commit(
        objcached_factory, slow_flush, mc_pool):
    """pool_mode = transaction behind pgbouncer, which keeps its clients'
    connections while the server behind it stops and starts (PAUSE, then
    RESUME: pgbouncer's own way to restart or switch a server without
    dropping clients): the consumer's connection never ends, so a check made
    once per connection never ran again, the copy put back was not seen and
    the lost row was served until ttl (found by a review). The consumer
    reads the server's start time at each claim and checks again when it
    changed. The lost commit is made before that check, which reads a
    position past it, while the marker's is not: the consumer moves the
    marker from the marker's position, not from its check's (it waited for
    a later flush, which a quiet database may not make, until 2026-12-06)."""
    _, primary, _ = slow_flush
    b = harness.Pgbouncer(primary, pool_mode="transaction", dbnames=["oc_rb"])
    try:
        b.start()
        oc = objcached_factory(config=rb_config(mc_pool, b.conninfo("oc_rb"), "triggers",
                                                pool_mode="transaction"))
        old = item1(primary)
        harness.wait_until(lambda: marker(mc_pool) is not None, timeout=30,
                           what="the marker")
        assert get1(oc) == old
        copy = os.path.join(primary.dir, "copy")

        def behind_pause(switch):
            b.admin("PAUSE")
            switch()
            b.admin("RESUME")

        committed = []

        def take_copy_then_commit():
            # the commit before the check: the check's position is past it,
            # the marker's is not (the database quiet after it)
            primary.stop("fast")
            subprocess.run(["cp", "-a", primary.datadir, copy], check=True)
            primary.start()
            committed.append(commit_to_lose(primary))
        behind_pause(take_copy_then_commit)
        served_lost_then_old(oc, mc_pool, primary, committed[0], old,
                             lambda: behind_pause(lambda: put_back(primary, copy)))
        # the consumer's connection never ended (the premise: its check ran
        # again without a new connection). Another may: a sidecar connection
        # that asked pgbouncer for a server while the server was stopped gets
        # "server login has been failing" (server_login_retry) and is closed
        # (the sampler's, once, in the suite's ASan pass)
        assert "event=pg_conn_down conn=objcached-inval " not in oc.log()
    finally:
        b.cleanup()


@pytest.mark.parametrize("rb", ["wal"], indirect=True)
def test_an_old_primary_left_up_stops_moving_the_marker(objcached_factory, rb, mc_pool):
    """A split brain: the replica promoted while the old primary stays up,
    sidecar A still on it (its WAL holder's heartbeats move its flush
    position, so its consumer moves the marker each second), B on the new
    primary. B's check bumps once (a later timeline) and writes the marker;
    A, which wrote its own timeline over it until 2026-12-06 (every
    connection of B's consumer bumped every model again, found by a review),
    reads the marker before moving it, finds a later timeline and leaves it."""
    source, primary, standby = rb
    a = objcached_factory(config=rb_config(mc_pool, primary.conninfo, source))
    harness.wait_until(lambda: a.stats()["wal_holder"] == 1 and marker(mc_pool) is not None,
                       timeout=30, what="A's holder and the marker")
    standby.execute("SELECT pg_promote()")
    harness.wait_until(lambda: not standby.execute("SELECT pg_is_in_recovery()")[0][0],
                       timeout=30, what="the promotion")
    b_pg = FaultProxy(standby.port, name="b-pg")
    try:
        b = objcached_factory(config=rb_config(
            mc_pool, f"host=127.0.0.1 port={b_pg.port} dbname=oc_rb user=postgres", source))
        harness.wait_until(lambda: b.stats()["db_rollbacks"] == 1, timeout=30,
                           what=lambda: f"B's check:\n{b.log(3000)}")
        harness.wait_until(lambda: marker_of(mc_pool)[1] == b"2", timeout=10,
                           what="B's marker")
        harness.wait_until(lambda: marker_of(mc_pool)[1] == b"1"
                           or "event=db_behind" in a.log(), timeout=15,
                           what=lambda: f"A's next move of the marker:\n{a.log(3000)}")
        checks = b.log().count("event=db_identity")
        b_pg.set_mode("reset")                   # B's connections end, and come back
        b_pg.set_mode("forward")
        harness.wait_until(lambda: b.log().count("event=db_identity") > checks
                           or b.stats()["db_rollbacks"] > 1, timeout=30,
                           what=lambda: f"B's check again:\n{b.log(3000)}")
        assert b.stats()["db_rollbacks"] == 1, b.log(3000)
        assert marker_of(mc_pool)[1] == b"2"
    finally:
        b_pg.close()


@pytest.mark.parametrize("rb", ["triggers"], indirect=True)
def test_a_copy_of_an_earlier_timeline_put_back_serves_no_later_row(objcached_factory, rb,
                                                                   mc_pool):
    """A copy of the data directory taken on timeline 1, put back after a
    failover to timeline 2 whose rows the pool holds: the marker names the
    later timeline. Until 2026-12-06 the check said `db_behind` (an old
    primary still up?) and invalidated nothing: timeline 2's row was served
    from a database that never had it (found by a review). Now it is a
    rollback of its own (`rule=behind`), and the marker stays the later
    timeline's."""
    source, primary, standby = rb
    oc = objcached_factory(config=rb_config(mc_pool, both(primary, standby), source))
    harness.wait_until(lambda: marker(mc_pool) is not None, timeout=30, what="the marker")
    old = item1(primary)
    checks = oc.log().count("event=db_identity")
    copy = os.path.join(primary.dir, "copy")
    primary.stop("fast")
    subprocess.run(["cp", "-a", primary.datadir, copy], check=True)
    primary.start()
    harness.wait_until(lambda: oc.log().count("event=db_identity") > checks, timeout=30,
                       what="the check after the restart")
    lsn = primary.execute("SELECT pg_current_wal_lsn()")[0][0]
    harness.wait_until(lambda: standby.execute(
        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0], timeout=30,
        what="the standby to catch up")
    fail_over(primary, standby)
    one_rollback(oc)
    harness.wait_until(lambda: marker_of(mc_pool)[1] == b"2", timeout=15,
                       what="the marker of timeline 2")
    standby.execute("UPDATE items SET name = 'timeline 2' WHERE id = 1", dbname="oc_rb")
    later = item1(standby)
    harness.wait_until(lambda: get1(oc) == later, timeout=20,
                       what="timeline 2's row read through objcached")
    get1(oc)
    standby.stop("fast")
    put_back(primary, copy)
    assert item1(primary) == old
    harness.wait_until(lambda: oc.stats()["db_rollbacks"] == 2, timeout=30,
                       what=lambda: f"the check of the copy:\n{oc.log(3000)}")
    assert "rule=behind" in oc.log()
    harness.wait_until(lambda: get1(oc) == old, timeout=15,
                       what=lambda: f"the copy's row, not timeline 2's:\n{oc.log(3000)}")
    assert marker_of(mc_pool)[1] == b"2"


@pytest.mark.parametrize("rb", ["triggers"], indirect=True)
def test_a_failover_whose_marker_read_fails_over_is_still_a_rollback(objcached_factory, rb,
                                                                     mc_pool):
    """The check after a failover reads the marker while its memcached server
    resets connections (not enough failures to be taken out): the read goes
    to the key's failover server, which has no marker, so the check finds
    none. Until 2026-12-06 the consumer then wrote its own, and the first
    refresh after the server came back found timeline 1's marker there and
    wrote over it ("an older writer"): nothing was invalidated and the lost
    commit was served (found by a review). A consumer whose check found no
    marker now takes an earlier timeline's, found later, for a rollback."""
    source, primary, standby = rb
    proxies = [FaultProxy(m.port, name=f"mc{i}") for i, m in enumerate(mc_pool)]
    try:
        config = rb_config(" ".join(p.address for p in proxies), both(primary, standby),
                           source)
        config["memcached"]["failure_limit"] = "100"   # a hiccup: not taken out
        oc = objcached_factory(config=config)
        old, lost = cache_a_lost_commit(primary, standby, mc_pool, [oc])
        key = marker_key(RB_MODELS)
        holder = []
        for i, m in enumerate(mc_pool):
            with m.client() as c:
                if c.get(key) is not None:
                    holder.append(i)
        assert len(holder) == 1
        checks = oc.log().count("event=db_identity")
        proxies[holder[0]].set_mode("reset")
        fail_over(primary, standby)
        harness.wait_until(lambda: oc.log().count("event=db_identity") > checks
                           or oc.stats()["db_rollbacks"] > 0, timeout=60,
                           what=lambda: f"the check after the failover:\n{oc.log(3000)}")
        proxies[holder[0]].set_mode("forward")
        for i in range(100):   # claims: the consumer refreshes the marker
            if oc.stats()["db_rollbacks"] > 0:
                break
            standby.execute("UPDATE items SET name = name WHERE id = 5", dbname="oc_rb")
            time.sleep(0.2)
        assert oc.stats()["db_rollbacks"] == 1, oc.log(3000)
        harness.wait_until(lambda: get1(oc) == old, timeout=15,
                           what=lambda: f"the replica's row, not the lost one:\n{oc.log(3000)}")
        harness.wait_until(lambda: marker_of(mc_pool)[1] == b"2", timeout=15,
                           what="the marker of timeline 2")
    finally:
        for p in proxies:
            p.close()


# a consumer's grants (operations.md), but not pg_control_system()
CHECKER_GRANTS = FOLLOWER_GRANTS.replace("oc_follower", "oc_checker") + """
GRANT EXECUTE ON FUNCTION
    objcached.feed_append(text[], text[], text[], boolean, timestamptz, timestamptz, text),
    objcached.feed_heartbeat(timestamptz, text), objcached.feed_heartbeat_if_drained(text),
    objcached.feed_prune(interval) TO oc_checker;
REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC;
"""


@pytest.mark.parametrize("rb", ["triggers"], indirect=True)
def test_a_failed_identity_read_is_tried_again_at_the_next_poll(objcached_factory, rb,
                                                                mc_pool):
    """The identity read fails (here: its role may not call
    pg_control_system()). Until 2026-12-06 it was tried again at the next
    connection only, which behind pgbouncer in transaction mode never comes:
    the check was off for the process's life (found by a review). Now the
    next poll tries again, on the same connection, and the failure is said
    once."""
    source, primary, standby = rb
    standby.cleanup()
    primary.execute(CHECKER_GRANTS, dbname="oc_rb")
    oc = objcached_factory(config=rb_config(
        mc_pool, primary.conninfo.replace("user=postgres", "user=oc_checker"), source))
    harness.wait_until(lambda: "event=db_check_failed step=identity" in oc.log(), timeout=30,
                       what=lambda: f"the failed identity read:\n{oc.log(3000)}")
    ups = oc.log().count("event=pg_conn_up conn=objcached-inval")
    time.sleep(1)                                   # five polls
    assert "event=db_identity" not in oc.log()
    assert oc.log().count("event=db_check_failed step=identity") == 1
    primary.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO oc_checker",
                    dbname="oc_rb")
    harness.wait_until(lambda: "event=db_identity" in oc.log(), timeout=10,
                       what=lambda: f"the check at a later poll:\n{oc.log(3000)}")
    assert oc.log().count("event=pg_conn_up conn=objcached-inval") == ups
    assert oc.stats()["db_rollbacks"] == 0

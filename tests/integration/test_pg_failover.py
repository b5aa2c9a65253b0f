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
  target_session_attrs=primary (a standby's is refused).
"""

import re

import pytest

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

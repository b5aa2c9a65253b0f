"""A fleet of sidecars against PostgreSQL's connection limits, black-box, on a
cluster of its own with small limits (max_connections, max_wal_senders,
max_replication_slots) that the tests fill for real with connections and
slots of their own: a sidecar refused its loaders fails misses at once with
PostgreSQL's reason, says so once, keeps serving what is cached and recovers
by itself; a sidecar that got only some loaders serves with those; a feed or
WAL reader refused a slot keeps the near-cache off until it gets one. And
every connection a sidecar holds, counted in pg_stat_activity by its
application_name, against the figures of docs/operations.md and
docs/wal.md#fleet-scale."""
import collections
import re
import time

import psycopg2
import pytest

import consistency as oc_c
import harness

MAX_CONNECTIONS = 20
SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) AS i;
"""
MODELS = {"Item": {"table": "items", "near_ttl": "30s"}}
FULL = "too many clients already"


@pytest.fixture(scope="module")
def cluster(objcached_bin):
    server = harness.Postgres(dbname="postgres", settings={
        "max_connections": str(MAX_CONNECTIONS), "superuser_reserved_connections": "0",
        "max_wal_senders": "1", "max_replication_slots": "2", "wal_level": "logical",
        "log_min_messages": "error"})
    try:
        server.start()
        oc_c.create_template(server, "limits_hook", SCHEMA, MODELS, objcached_bin)
        make_wal_template(server, objcached_bin)
        yield server
    finally:
        server.cleanup()


def make_wal_template(server, binary):
    name = "limits_wal"
    server.execute(f'CREATE DATABASE "{name}"', dbname="postgres")
    server.execute(SCHEMA, dbname=name)
    db = oc_c.HookDb(server, name)
    try:
        p = oc_c.run_install_hook(binary, wal_config("127.0.0.1:1", db, name))
        assert p.returncode == 0, p.stdout + p.stderr
        db.q("SELECT pg_drop_replication_slot(%s)", (name,))  # each test makes its own
        db.q("DELETE FROM objcached.outbox")
    finally:
        db.close()


def wal_config(mc, db, slot, **postgresql):
    keys = {"wal": "on", "wal_slot": slot, "invalidation_poll": "200ms", "feed_poll": "100ms",
            "feed_max_lag": "1s", "wal_heartbeat": "100ms", "wal_takeover": "1s"}
    keys.update(postgresql)
    return oc_c.sidecar_config(mc, db.conninfo, MODELS, {
        "objcached": {"near_cache_size": "8m", "sample_rate": "0"}, "postgresql": keys})


def hook_config(mc, db, objcached=None, **postgresql):
    keys = {"invalidation_poll": "200ms", "feed_poll": "100ms", "feed_max_lag": "1s"}
    keys.update(postgresql)
    top = {"near_cache_size": "8m", "sample_rate": "0"}
    top.update(objcached or {})
    return oc_c.sidecar_config(mc, db.conninfo, MODELS, {"objcached": top, "postgresql": keys})


@pytest.fixture
def fleet(cluster, mc_pool, objcached_bin):
    yield from oc_c.run_fleet(mc_pool, objcached_bin)


@pytest.fixture
def db(cluster):
    d = oc_c.clone_db(cluster, "limits_hook", prefix="lim")
    yield d
    oc_c.drop_db(cluster, d)


@pytest.fixture
def wal_db(cluster):
    d = oc_c.clone_db(cluster, "limits_wal", prefix="limw")
    yield d
    d.close()
    # the holder's walsender may still be going: terminate it, then drop
    def gone():
        try:
            cluster.execute("SELECT pg_terminate_backend(active_pid) FROM "
                            "pg_replication_slots WHERE slot_name = %s AND active",
                            (d.name,), dbname="postgres")
            cluster.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                            "pg_replication_slots WHERE slot_name = %s", (d.name,),
                            dbname="postgres")
            cluster.execute(f'DROP DATABASE IF EXISTS "{d.name}" WITH (FORCE)',
                            dbname="postgres")
        except Exception:  # noqa: BLE001 - active again, or made again: try again
            return False
        return True
    harness.wait_until(gone, timeout=20, what="the test's slot and database to go")


class Hog:
    """Connections of the test's own that take every free slot of the
    cluster, until release()d one by one or all."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.conns = []
        # until every slot is ours or the sidecars': a backend that was
        # closing when we hit the limit frees its slot a moment later
        harness.wait_until(lambda: self._fill() == MAX_CONNECTIONS, what="PostgreSQL full")

    def _fill(self):
        while True:
            try:
                self.conns.append(self.cluster.connect(dbname="postgres"))
            except psycopg2.OperationalError as e:
                assert FULL in str(e), e
                break
        with self.conns[0].cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity "
                        "WHERE backend_type = 'client backend'")
            return cur.fetchone()[0]

    def starve(self, oc):
        """End oc's sessions and take their slots: until the cluster is full
        and none of oc's loaders is up (each reconnects after 100 ms, so the
        race is nearly always ours)."""
        def starved():
            with self.conns[0].cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name LIKE 'objcached%'")
            self.release(1)  # a slot for the wait below
            harness.wait_until(lambda: not any(a.startswith("objcached") for a in
                                               apps_of(self.conns[0])), what="them gone")
            # none up, and none half-way: a loader whose backend took a slot
            # before the cluster filled would be up a moment later (seen in
            # the ASan pass, whose setups are slower)
            return self._fill_until_full(oc.stats) == 0 and not any(
                a.startswith("objcached") for a in apps_of(self.conns[0]))
        harness.wait_until(starved, what="oc starved")

    def _fill_until_full(self, stats):
        harness.wait_until(lambda: self._fill() == MAX_CONNECTIONS, what="PostgreSQL full")
        return stats()["pg_connections_up"]

    def release(self, n=None):
        for c in self.conns[:n] if n else list(self.conns):
            c.close()
            self.conns.remove(c)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def apps(cluster, dbname):
    """{application_name: count} of the backends (walsenders included) on
    dbname, but the test's own (psycopg2's, which have none)."""
    return collections.Counter(dict(cluster.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND application_name <> '' GROUP BY 1", (dbname,))))


def apps_of(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT application_name FROM pg_stat_activity")
        return [r[0] for r in cur.fetchall()]


def log_count(oc, pattern):
    return len(re.findall(pattern, oc.log()))


def get(oc, key):
    with oc.client() as c:
        return c.get_multi([key])


def row(db, ident):
    return db.one("SELECT row_to_json(t)::text FROM items t WHERE id = %s", (ident,)).encode()


# ------------------------------------------------------------- max_connections

def test_a_sidecar_refused_its_loaders_fails_misses_at_once_says_so_once_and_recovers(
        cluster, fleet, mc_pool, db):
    oc = fleet.start(hook_config(mc_pool, db, invalidation_poll="0", feed_poll="0"))
    rows = {i: row(db, i) for i in range(1, 6)}
    assert get(oc, "Item:1") == ([(b"Item:1", 0, rows[1])], b"END")
    oc.wait_idle()
    db.close()  # our own connection is a slot too
    with Hog(cluster) as hog:
        hog.starve(oc)
        mark = len(oc.log())   # starving may take rounds: each ends sessions that were up
        # cached keys are served
        assert get(oc, "Item:1") == ([(b"Item:1", 0, rows[1])], b"END")
        # a miss fails at once (not after load_timeout) with PostgreSQL's reason
        t0 = time.monotonic()
        values, end = get(oc, "Item:2")
        assert values == [] and end.startswith(b"SERVER_ERROR load failed"), end
        assert FULL.encode() in end, end
        assert time.monotonic() - t0 < 1.0
        # it keeps trying (each try is a FATAL in PostgreSQL's log), but says it once
        # per loader
        tries = cluster.log().count(FULL)
        harness.wait_until(lambda: cluster.log().count(FULL) >= tries + 8, timeout=15,
                           what="the loaders to try again")
        assert oc.stats()["pg_connections_up"] == 0
        assert len(re.findall(r"level=warn.*event=pg_conn_down.*" + FULL,
                              oc.log()[mark:])) <= 2, oc.log()
        # a slot frees: one loader, which serves, and stats say so
        hog.release(1)
        harness.wait_until(lambda: oc.stats()["pg_connections_up"] == 1, timeout=10,
                           what="one loader up")
        served = None
        for ident in range(2, 6):  # the other loader's failure may fail one load
            values, end = get(oc, f"Item:{ident}")
            if end == b"END":
                served = (ident, values)
                break
        assert served == (ident, [(f"Item:{ident}".encode(), 0, rows[ident])])
        assert oc.stats()["pg_connections_up"] == 1
    harness.wait_until(lambda: oc.stats()["pg_connections_up"] == 2, timeout=10,
                       what="both loaders up")


def test_a_feed_refused_a_slot_keeps_the_near_cache_off_until_it_gets_one(
        cluster, fleet, mc_pool, db):
    # the consumer proves the feed fresh (its batches append to it)
    oc = fleet.start(hook_config(mc_pool, db, feed_poll="0"))
    harness.wait_until(lambda: oc.stats()["pg_connections_up"] == 2 and
                       oc.stats()["inval_connected"] == 1, what="the loaders and consumer")
    db.close()
    with Hog(cluster) as hog:
        text = oc.config_text.replace("feed_poll = 0", "feed_poll = 100ms")
        tries = cluster.log().count(FULL)
        assert harness.reload(oc, text)
        harness.wait_until(lambda: cluster.log().count(FULL) >= tries + 4, timeout=15,
                           what="the feed to try again")
        assert log_count(oc, r"level=warn.*event=pg_conn_down.*" + FULL) == 1, oc.log()
        s = oc.stats()
        assert s["feed_connected"] == 0 and s["near_serving"] == 0
        # read twice: the second read is no near hit
        for _ in range(2):
            assert get(oc, "Item:3")[1] == b"END"
        assert oc.stats()["near_hits"] == 0
        hog.release(1)
        harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                           what="the near-cache to serve once the feed is in")


# ------------------------------------------------------------ max_wal_senders / slots

def test_a_wal_reader_refused_a_wal_sender_stands_by_and_takes_the_slot_when_one_frees(
        cluster, fleet, mc_pool, wal_db):
    wal_db.q("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (wal_db.name,))
    # the only WAL sender, taken
    sender = psycopg2.connect(host=cluster.dir, port=cluster.port, dbname="postgres",
                              user="postgres", replication="database")
    try:
        oc = fleet.start(wal_config(mc_pool, wal_db, wal_db.name))
        tries = cluster.log().count("exceeds max_wal_senders")
        harness.wait_until(lambda: cluster.log().count("exceeds max_wal_senders") >= tries + 3,
                           timeout=20, what="three more tries")
        s = oc.stats()
        assert s["wal_holder"] == 0 and s["near_serving"] == 0
        # said once (the connection's failure, and why it stands by), not once per try
        said = r"level=(info|warn).*exceeds max_wal_senders"
        assert log_count(oc, said) == 2, oc.log()
    finally:
        sender.close()
    harness.wait_until(lambda: oc.stats()["wal_holder"] == 1, timeout=20, what="the holder")
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what="the near-cache")


def test_a_wal_reader_refused_a_replication_slot_stands_by_and_makes_it_when_one_frees(
        cluster, fleet, mc_pool, wal_db):
    # max_replication_slots = 2, both taken, none of them ours
    taken = [f"other_{wal_db.name}_{i}" for i in range(2)]
    for name in taken:
        cluster.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,),
                        dbname="postgres")
    try:
        oc = fleet.start(wal_config(mc_pool, wal_db, wal_db.name))
        full = "all replication slots are in use"
        tries = cluster.log().count(full)
        harness.wait_until(lambda: cluster.log().count(full) >= tries + 3, timeout=20,
                           what="three tries")
        s = oc.stats()
        assert s["wal_holder"] == 0 and s["near_serving"] == 0
        assert log_count(oc, r"level=(info|warn|error).*" + full) == 1, oc.log()
    finally:
        for name in taken:
            cluster.execute("SELECT pg_drop_replication_slot(%s)", (name,), dbname="postgres")
    harness.wait_until(lambda: oc.stats()["wal_holder"] == 1, timeout=20, what="the holder")
    harness.wait_until(lambda: oc.stats()["near_serving"] == 1, timeout=10,
                       what="the near-cache")


# ------------------------------------------------------- what each sidecar holds

TRIGGER_MODE = {"objcached-loader": 2, "objcached-inval": 1, "objcached-feed": 1,
                "objcached-sampler": 1}


def test_each_connection_says_what_it_is_and_the_docs_count_them_all(
        cluster, fleet, mc_pool, db):
    """docs/operations.md (PostgreSQL load) and docs/wal.md#fleet-scale: a
    trigger-hook sidecar holds `connections` loaders + the consumer + the
    feed + the sampler (once it has a key), each named in pg_stat_activity."""
    oc = fleet.start(hook_config(mc_pool, db, objcached={"sample_rate": "100%"}))
    for _ in range(2):  # the sampler checks hits
        assert get(oc, "Item:1")[1] == b"END"
    harness.wait_until(lambda: apps(cluster, db.name) == TRIGGER_MODE, timeout=10,
                       what=lambda: f"{TRIGGER_MODE}, not {apps(cluster, db.name)}")
    # near-cache off: the same (the feed follows feed_poll, not the near-cache)
    fleet.stop_all()
    harness.wait_until(lambda: not apps(cluster, db.name), what="the sessions to close")
    fleet.start(hook_config(mc_pool, db, objcached={"near_cache_size": "0"}))
    want = dict(TRIGGER_MODE)
    del want["objcached-sampler"]
    harness.wait_until(lambda: apps(cluster, db.name) == want, timeout=10,
                       what=lambda: f"{want}, not {apps(cluster, db.name)}")


def test_an_application_name_in_conninfo_is_kept(cluster, fleet, mc_pool, db):
    config = hook_config(mc_pool, db)
    config["postgresql"]["conninfo"] = db.conninfo + " application_name=shop-cache"
    fleet.start(config)
    harness.wait_until(lambda: apps(cluster, db.name) == {"shop-cache": 4}, timeout=10,
                       what=lambda: f"4 shop-cache, not {apps(cluster, db.name)}")


def test_a_wal_holder_standby_and_follower_hold_what_the_docs_say(
        cluster, fleet, mc_pool, wal_db):
    wal_db.q("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (wal_db.name,))
    name = wal_db.name
    holder = fleet.start(wal_config(mc_pool, wal_db, name))
    harness.wait_until(lambda: holder.stats()["wal_holder"] == 1, timeout=20, what="holder")
    want = {"objcached-loader": 2, "objcached-inval": 1, "objcached-feed": 1,
            "objcached-wal": 2}
    harness.wait_until(lambda: apps(cluster, name) == want, timeout=10,
                       what=lambda: f"{want}, not {apps(cluster, name)}")
    # a standing-by candidate: its loaders and the feed
    fleet.start(wal_config(mc_pool, wal_db, name))
    want = {"objcached-loader": 4, "objcached-inval": 1, "objcached-feed": 2,
            "objcached-wal": 2}
    harness.wait_until(lambda: apps(cluster, name) == want, timeout=10,
                       what=lambda: f"{want}, not {apps(cluster, name)}")
    # a follower of a WAL-only database: its loaders and the feed, nothing else
    fleet.start(wal_config(mc_pool, wal_db, name, wal="off", invalidation_poll="0"))
    want = {"objcached-loader": 6, "objcached-inval": 1, "objcached-feed": 3,
            "objcached-wal": 2}
    harness.wait_until(lambda: apps(cluster, name) == want, timeout=10,
                       what=lambda: f"{want}, not {apps(cluster, name)}")

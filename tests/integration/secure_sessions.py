"""What test_tls.py and test_gssapi.py both check, over whichever encrypted
transport their module's cluster and conninfo give: objcached's PostgreSQL
sessions held to a bound with nothing else to wake them (polls of 10
minutes, WAL heartbeats 10 s apart), on 100 KB rows whose results and
CopyData messages span many records or packets."""

import select
import socket
import threading
import time

import consistency as oc_c
import harness

SCHEMA = """
CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, n int NOT NULL DEFAULT 0);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO docs SELECT i, repeat(md5(i::text), 3200), 0 FROM generate_series(1, 120) AS i;
CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL);
INSERT INTO big SELECT i, 0 FROM generate_series(1, 100000) AS i;
"""

MODELS = {
    "Doc": {"table": "docs", "near_ttl": "5m"},
    "Big": {"table": "big", "near_ttl": "5m"},
}
NEVER = "10m"   # a poll that never comes within a test: only a NOTIFY or the stream wakes
BOUND = 5       # seconds from a commit to its invalidation applied

row = oc_c.row_json
get = oc_c.get_value


def config(conninfo, mc_pool, db, wal=False, **sections):
    """Every connection of objcached on `conninfo`; with wal, the WAL source
    on db's slot (named after it)."""
    overrides = {"objcached": {"near_cache_size": "64m", "load_timeout": "10s"},
                 "postgresql": {"conninfo": conninfo, "feed_conninfo": conninfo,
                                "wal_conninfo": conninfo, "connections": "4",
                                "invalidation_poll": NEVER, "feed_poll": NEVER}}
    if wal:
        overrides["postgresql"].update({"wal": "on", "wal_slot": db.name,
                                        "wal_heartbeat": "10s", "feed_max_lag": "30s",
                                        "wal_takeover": "30s"})
    for section, keys in sections.items():
        overrides.setdefault(section, {}).update(keys)
    return oc_c.sidecar_config(mc_pool, conninfo, MODELS, overrides)


def served_within(oc, key, want, seconds=BOUND):
    harness.wait_until(lambda: get(oc, key) == want, timeout=seconds, interval=0.02,
                       what=f"{oc!r} to serve the new {key} within {seconds} s")


def sessions(pg, db, columns, view):
    """{application_name: [(columns...), ...]} of objcached's sessions on db
    (a logical walsender's too: it has the database), `view` (pg_stat_ssl
    s, pg_stat_gssapi g) joined by pid."""
    rows = pg.execute(f"SELECT a.application_name, {columns} FROM pg_stat_activity a "
                      f"JOIN {view} USING (pid) WHERE a.datname = %s "
                      "AND a.application_name LIKE 'objcached%%'", (db.name,),
                      dbname="postgres")
    out = {}
    for name, *cols in rows:
        out.setdefault(name, []).append(tuple(cols))
    return out


def cold_loads_of_big_rows(oc, db, check_sessions):
    """120 cold keys of 100 KB rows, 8 clients at once: every result spans
    many records and all come back whole within the bound."""
    want = {f"Doc:{i}": row(db, "docs", i) for i in range(1, 121)}
    assert all(len(v) > 100000 for v in want.values())
    got, errors = {}, []

    def reader(ids):
        try:
            with oc.client(timeout=30) as c:
                for i in ids:
                    values, end = c.get_multi([f"Doc:{j}" for j in (i, i + 1, i + 2)])
                    assert end == b"END", end
                    for k, _flags, data in values:
                        got[k.decode()] = data
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    t0 = time.monotonic()
    threads = [threading.Thread(target=reader, args=(range(1 + 15 * t, 16 + 15 * t, 3),))
               for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took = time.monotonic() - t0
    assert not errors, errors
    assert got == want
    assert took < 20, took
    assert oc.stats()["pg_errors"] == 0, oc.stats()
    check_sessions({"objcached-loader", "objcached-inval", "objcached-feed"})


def notify_wakes(oc, db, check_sessions):
    """Only NOTIFY wakes the consumer and the follower: an UPDATE of a 100 KB
    row reaches memcached and the near-cache within the bound; then 60
    commits, each NOTIFYing, while the consumer's claims and the loads'
    results are being read, every one served new within the bound of the
    last commit."""
    harness.wait_until(lambda: oc.stats()["inval_connected"] == 1, timeout=15,
                       what="the consumer connected")
    check_sessions({"objcached-inval", "objcached-feed"})
    for i in range(1, 61):
        assert get(oc, f"Doc:{i}") == row(db, "docs", i)
    db.q("UPDATE docs SET body = repeat(md5('one'), 3200), n = n + 1 WHERE id = 1")
    served_within(oc, "Doc:1", row(db, "docs", 1))
    stop = threading.Event()

    def reads():   # loads (of 100 KB rows) meanwhile, on the same sidecar
        while not stop.is_set():
            for i in range(61, 121):
                get(oc, f"Doc:{i}")
    t = threading.Thread(target=reads)
    t.start()
    try:
        conn = db.connect()
        for i in range(1, 61):
            db.q("UPDATE docs SET body = repeat(md5(%s), 3200), n = n + 1 WHERE id = %s",
                 (f"two {i}", i), conn=conn)
        deadline = time.monotonic() + BOUND
        for i in range(1, 61):
            want = row(db, "docs", i)
            harness.wait_until(lambda: get(oc, f"Doc:{i}") == want,
                               timeout=max(0.1, deadline - time.monotonic()), interval=0.02,
                               what=f"Doc:{i} new within {BOUND} s of the last commit")
    finally:
        stop.set()
        t.join(30)


def wal_stream(start, db, check_sessions, slot_session):
    """A holder and a follower (start() starts a sidecar with the WAL
    source on db) on the encrypted transport: a 100 KB row's UPDATE reaches
    the holder and, through the feed's NOTIFY, the follower's near-cache
    within the bound; then a 100,000-row UPDATE is streamed and applied.
    slot_session(): the slot's walsender's row of the transport's view (a
    logical one has the database, so check_sessions sees it too).
    Returns (holder, follower)."""
    a = start()
    harness.wait_until(lambda: a.stats()["wal_holder"] == 1, timeout=20, what="a holder")
    b = start()
    harness.wait_until(lambda: "event=pg_conn_up conn=objcached-feed" in b.log(),
                       timeout=20, what="the follower up")
    check_sessions({"objcached-wal", "objcached-feed", "objcached-inval"})
    slot_session()
    for oc in (a, b):
        for k in ("Doc:1", "Doc:2", "Big:1", "Big:100000"):
            get(oc, k)
            get(oc, k)
    for i in (1, 2):
        db.q("UPDATE docs SET body = repeat(md5(%s), 3200), n = n + 1 WHERE id = %s",
             (f"wal {i}", i))
        want = row(db, "docs", i)
        served_within(a, f"Doc:{i}", want)
        served_within(b, f"Doc:{i}", want)
    keys0 = a.stats()["wal_keys"]
    db.q("UPDATE big SET v = v + 1")
    harness.wait_until(lambda: a.stats()["wal_keys"] - keys0 >= 100000, timeout=60,
                       what="the 100,000 keys applied")
    for oc in (a, b):
        served_within(oc, "Big:1", row(db, "big", 1))
        served_within(oc, "Big:100000", row(db, "big", 100000))
    return a, b


class FrontProxy:
    """A listener in front of the cluster's plain TCP port that speaks an
    encrypted transport to objcached the way PostgreSQL 17 and later (large
    messages sent at once), poolers and cloud proxies write it: what the
    server sends is read in big chunks (read_burst) and sent on in the
    largest records or packets the transport has, so one holds the end of a
    message and the start of the next. A subclass sets up its credentials,
    then calls this __init__ (which starts accepting), and implements
    _relay(c, conns): the handshake on c, then the relay both ways, the
    server's socket opened by self.backend(conns). `errors`: the exceptions
    that end a connection quietly."""

    errors = (OSError, ValueError)

    def __init__(self, pg):
        self.target = ("127.0.0.1", pg.port)
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def backend(self, conns):
        b = socket.create_connection(self.target)
        conns.append(b)
        self.socks += conns
        return b

    def _serve(self, c):
        conns = [c]
        try:
            self._relay(c, conns)
        except self.errors:
            return
        finally:
            for x in conns:
                x.close()

    def _relay(self, c, conns):
        raise NotImplementedError

    def close(self):
        self.closed = True
        self.lsock.close()
        for x in self.socks:
            try:
                x.close()
            except OSError:
                pass


def read_burst(b):
    """What the server sent, with what follows within a few ms (b'' once it
    closed): one write's worth."""
    data = b.recv(262144)
    if not data:
        return data
    while select.select([b], [], [], 0.005)[0]:
        more = b.recv(262144)
        if not more:
            break
        data += more
    return data


def result_end_sweep(fleet, conninfo, mc_pool, db, sizes, **start_kw):
    """Through a front proxy (conninfo): Doc:1 of 10 KB, then Doc:2 of each
    size, loaded together by a fresh single loader into cold keys; the
    result's last bytes may end up waiting decrypted below libpq's socket.
    Each load must answer within BOUND."""
    db.q("UPDATE docs SET body = repeat('a', 10000) WHERE id = 1")
    for size in sizes:
        db.q("UPDATE docs SET body = repeat('b', %s) WHERE id = 2", (size,))
        for m in mc_pool:
            m.flush_all()   # cold keys: the load is what is tested
        oc = fleet.start(config(conninfo, mc_pool, db,
                                objcached={"near_cache_size": "0", "load_timeout": "30s"},
                                postgresql={"connections": "1", "invalidation_poll": "0",
                                            "feed_poll": "0"}), **start_kw)
        harness.wait_until(lambda: oc.stats()["pg_connections_up"] == 1, timeout=10,
                           what="the loader connected")
        t0 = time.monotonic()
        with oc.client(timeout=60) as c:
            values, end = c.get_multi(["Doc:1", "Doc:2"])
        took = time.monotonic() - t0
        assert end == b"END" and [v[2] for v in values] == \
            [row(db, "docs", 1), row(db, "docs", 2)], size
        assert took < BOUND, (size, took)
        oc.stop()

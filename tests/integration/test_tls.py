"""objcached over TLS to PostgreSQL (sslmode=require), as managed services
demand it: a cluster with `ssl = on` and a self-signed certificate made at
test time (harness.Postgres(ssl=True)), every connection of objcached
(loader, invalidation consumer, feed follower, WAL reader, sampler) on it
with `sslmode=require`, and pg_stat_ssl saying each session is TLS.

With TLS, libpq reads whole records: bytes can wait decrypted in OpenSSL's
buffer while the socket is not readable, and an event loop that waits for
the socket would then not see a result, a NOTIFY or replication data that
is already in. So each kind of connection is held to a bound here, with
nothing else to wake it (polls set to 10 minutes, WAL heartbeats to 10 s):
big rows (100 KB of JSON: results and CopyData messages of many records),
loads of cold keys in parallel, NOTIFYs while results are read, a
100,000-row UPDATE streamed, heartbeats read back, the sampler's checks.
PostgreSQL 15 (here) writes a regular session's records of 8 KB at most,
which libpq always takes whole; TlsFrontProxy writes 16 KB records as
PostgreSQL 17, poolers and proxies do, and with them a result's last bytes
did wait in OpenSSL (test_a_result_whose_end_waits_decrypted_in_openssl)
until oc_pgconn's read_input took them before waiting again."""

import os
import select
import socket
import ssl
import struct

import pytest

import consistency as oc_c
import harness
import secure_sessions as ss

SCHEMA, MODELS, NEVER, BOUND = ss.SCHEMA, ss.MODELS, ss.NEVER, ss.BOUND


@pytest.fixture(scope="module")
def pg():
    """This module's own cluster, with TLS (it replaces conftest's `pg`)."""
    server = harness.Postgres(dbname="postgres", ssl=True)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


trigger_template, wal_template, db, wal_db = oc_c.source_fixtures(
    SCHEMA, MODELS, "tls")


class TlsFrontProxy(ss.FrontProxy):
    """TLS in front of the cluster (secure_sessions.FrontProxy): each chunk
    of the server's is written with one SSL write, so records are the 16 KB
    maximum. (PostgreSQL 15 here writes its regular sessions' records of
    8 KB at most, which libpq always reads whole.) It answers the
    SSLRequest with 'S' and uses the cluster's certificate."""

    errors = (OSError, ssl.SSLError, ValueError)

    def __init__(self, pg):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(os.path.join(pg.datadir, "server.crt"),
                                 os.path.join(pg.datadir, "server.key"))
        super().__init__(pg)

    def conninfo(self, dbname):
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user=postgres sslmode=require"

    def _relay(self, c, conns):
        req = c.recv(8, socket.MSG_WAITALL)
        if len(req) != 8 or struct.unpack("!ii", req) != (8, 80877103):
            return
        c.sendall(b"S")
        t = self.ctx.wrap_socket(c, server_side=True)
        conns.append(t)
        b = self.backend(conns)
        while not self.closed:
            ready = [t] if t.pending() else select.select([t, b], [], [], 1.0)[0]
            if t in ready:
                data = t.recv(65536)
                if not data:
                    return
                b.sendall(data)
            if b in ready:
                data = ss.read_burst(b)
                if not data:
                    return
                t.sendall(data)


def config(pg, mc_pool, db, wal=False, **sections):
    return ss.config(pg.ssl_conninfo(db.name), mc_pool, db, wal=wal, **sections)


row, get, served_within = ss.row, ss.get, ss.served_within


def assert_all_tls(pg, db, names):
    """Each named kind of objcached's sessions on db is there, and every
    session of objcached there is TLS (pg_stat_ssl)."""
    found = ss.sessions(pg, db, "s.ssl", "pg_stat_ssl s")
    assert names <= set(found), found
    assert all(v == (True,) for vs in found.values() for v in vs), found


def test_cold_loads_of_big_rows_in_parallel(fleet, pg, mc_pool, db):
    """secure_sessions.cold_loads_of_big_rows over TLS records."""
    oc = fleet.start(config(pg, mc_pool, db, objcached={"near_cache_size": "0"}))
    ss.cold_loads_of_big_rows(oc, db, lambda names: assert_all_tls(pg, db, names))


def test_a_result_whose_end_waits_decrypted_in_openssl(fleet, pg, mc_pool, db):
    """Through TlsFrontProxy, a fresh loader (libpq's 16 KB input buffer)
    loads two rows in one result: Doc:1 of 10 KB, then Doc:2 of about
    16 KB. The first record ends inside Doc:2's DataRow; libpq reads the
    second record into the 16 KB less what it kept, so the last bytes of
    that record (CommandComplete, ReadyForQuery) stay decrypted in
    OpenSSL and the socket has nothing more to say. Swept over Doc:2's
    size (the window is about 20 bytes wide): each load answers within the
    bound, which before the fix it did not (it stalled until load_timeout)."""
    proxy = TlsFrontProxy(pg)
    try:
        ss.result_end_sweep(fleet, proxy.conninfo(db.name), mc_pool, db, range(16290, 16390, 7))
    finally:
        proxy.close()


def test_notify_wakes_the_consumer_and_the_follower(fleet, pg, mc_pool, db):
    """secure_sessions.notify_wakes over TLS."""
    oc = fleet.start(config(pg, mc_pool, db))
    ss.notify_wakes(oc, db, lambda names: assert_all_tls(pg, db, names))


def test_the_sampler_checks_over_tls(fleet, pg, mc_pool, db):
    """The sampler's reads of 100 KB rows: every sampled invalidation is
    checked at its 1 s window, on a TLS session."""
    oc = fleet.start(config(pg, mc_pool, db, objcached={
        "sample_rate": "1", "sample_windows": "1s", "sample_max_qps": "100"}))
    harness.wait_until(lambda: oc.stats()["inval_connected"] == 1, timeout=15,
                       what="the consumer connected")
    for i in range(1, 41):
        get(oc, f"Doc:{i}")
    db.q("UPDATE docs SET body = repeat(md5(id::text || 'x'), 3200) WHERE id <= 40")

    def checks():
        return sum(int(v) for k, v in oc.stats().items()
                   if k.startswith("sampler:Doc:1s:checks"))
    harness.wait_until(lambda: checks() >= 40, timeout=1 + 2 * BOUND,
                       what=lambda: f"40 checks at 1 s: {checks()}")
    assert sum(int(v) for k, v in oc.stats().items()
               if k.endswith(":inconsistent")) == 0
    assert_all_tls(pg, db, {"objcached-sampler"})


def test_the_wal_stream_over_tls(fleet, pg, mc_pool, wal_db):
    """secure_sessions.wal_stream on a TLS replication session; then
    heartbeats (10 s apart: nothing else brings bytes) are read back."""
    db = wal_db

    def slot_session():
        assert pg.execute("SELECT s.ssl FROM pg_replication_slots r JOIN pg_stat_ssl s "
                          "ON s.pid = r.active_pid WHERE r.slot_name = %s", (db.name,),
                          dbname="postgres") == [(True,)]
    a, _ = ss.wal_stream(lambda: fleet.start(config(pg, mc_pool, db, wal=True)), db,
                         lambda names: assert_all_tls(pg, db, names), slot_session)
    # heartbeats (every 10 s): each is a logical message read back from the
    # stream, which nothing else wakes meanwhile
    for _ in range(2):
        n = a.stats()["wal_stream_reads"]
        harness.wait_until(lambda: a.stats()["wal_stream_reads"] > n, timeout=10 + BOUND,
                           what=lambda: f"a heartbeat read back: {a.stats()}")
    assert a.stats()["wal_holder"] == 1


def test_wal_stream_through_a_tls_front_writing_16k_records(fleet, pg, mc_pool, wal_db):
    """The WAL reader through TlsFrontProxy: the walsender's messages of
    many sizes, coalesced into 16 KB records, so a transaction's last
    messages can share a record with the end of a big one. Heartbeats are
    10 s apart: each transaction must be applied within the bound by what
    it sent itself."""
    db = wal_db
    proxy = TlsFrontProxy(pg)
    try:
        a = fleet.start(config(pg, mc_pool, db, wal=True,
                               postgresql={"wal_conninfo": proxy.conninfo(db.name)}))
        harness.wait_until(lambda: a.stats()["wal_holder"] == 1, timeout=20, what="a holder")
        for i in range(1, 25):
            get(a, f"Doc:{i}")
            db.q("UPDATE docs SET body = repeat('y', (3700 * %s + 53 * (%s %% 11))::int) "
                 "WHERE id = %s", (i, i, i))
            served_within(a, f"Doc:{i}", row(db, "docs", i))
    finally:
        proxy.close()

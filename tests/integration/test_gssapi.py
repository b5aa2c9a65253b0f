"""objcached over GSSAPI-encrypted connections to PostgreSQL, as enterprises
run it with Kerberos (Active Directory): libpq's gssencmode=prefer encrypts
whenever the client holds a ticket and the server offers it.

KerberosRealm is a throwaway MIT realm on loopback: krb5kdc on a free port
with its own krb5.conf, kdc.conf and database in a temporary directory (the
machine's /etc/krb5.conf is never read: every process we start gets
KRB5_CONFIG), a service principal postgres/127.0.0.1 whose keytab is the
cluster's krb_server_keyfile, and a client principal 'postgres' whose
ticket (kinit -k -t) objcached uses through KRB5CCNAME. The cluster's
pg_hba.conf starts with `hostgssenc ... gss include_realm=0` lines, and
objcached's conninfo says gssencmode=require: pg_stat_gssapi shows every
session of objcached encrypted.

Like TLS, libpq's GSSAPI layer decrypts a whole packet (up to 16 KB) into
its own buffer and hands libpq's input buffer what fits in its room (8 KB
or more, fe-secure-gssapi.c pg_GSS_read); the rest waits decrypted while
the socket is quiet. PostgreSQL 15 (here) writes a regular session's
packets of 8 KB at most (its send buffer), which always fit; a walsender's
send buffer grows (pq_putmessage_noblock), and PostgreSQL 17, poolers and
proxies write 16 KB packets: GssFrontProxy does. Each connection kind is
held to a bound with nothing else to wake it (polls 10 minutes, WAL
heartbeats 10 s). Through GssFrontProxy a result's end
(test_a_result_whose_end_waits_decrypted_in_libpq) and a transaction's
commit (test_a_transaction_whose_commit_waits_decrypted_in_libpq) did
wait in libpq until load_timeout or the next heartbeat, until oc_pgconn's
read_input read again before waiting on the socket."""

import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile

import gssapi
import pytest

import consistency as oc_c
import harness
import secure_sessions as ss

REALM = "OC.TEST"
SCHEMA, MODELS, NEVER, BOUND = ss.SCHEMA, ss.MODELS, ss.NEVER, ss.BOUND
GSSENC_REQUEST = 80877104


def _tool(name):
    """The path of a Kerberos tool: missing, the test fails (no skip)."""
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if not found:
        raise harness.HarnessError(f"{name} not found: apt-get install krb5-kdc "
                                   "krb5-admin-server krb5-user (scripts/deps.sh)")
    return found


class KerberosRealm:
    """An MIT Kerberos KDC for REALM on 127.0.0.1:port (TCP), everything in
    a temporary directory: krb5.conf, kdc.conf, the database, the keytabs
    and the client's credential cache."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="oc-krb-", dir=harness._short_tmpdir())
        os.chmod(self.dir, 0o755)   # the server (user postgres) reads its keytab here
        self.port = harness.free_port()
        self.krb5_conf = os.path.join(self.dir, "krb5.conf")
        self.server_keytab = os.path.join(self.dir, "postgres.keytab")
        self.client_keytab = os.path.join(self.dir, "client.keytab")
        self.ccache = os.path.join(self.dir, "ccache")
        self.proc = None

    @property
    def env(self):
        """For the processes that use the realm (never the machine's files)."""
        return {"KRB5_CONFIG": self.krb5_conf, "KRB5_KDC_PROFILE":
                os.path.join(self.dir, "kdc.conf"), "KRB5CCNAME": f"FILE:{self.ccache}",
                "KRB5_KTNAME": f"FILE:{self.server_keytab}"}

    def client_env(self):
        return {"KRB5_CONFIG": self.krb5_conf, "KRB5CCNAME": f"FILE:{self.ccache}"}

    def _run(self, *argv):
        proc = subprocess.run(list(argv), env={**os.environ, **self.env},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60, check=False)
        out = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise harness.HarnessError(f"{' '.join(argv)} failed ({proc.returncode}):\n{out}")
        return out

    def start(self):
        d = self.dir
        # udp_preference_limit = 1: TCP, on the port free_port found free
        with open(self.krb5_conf, "w") as f:
            f.write(f"""[libdefaults]
 default_realm = {REALM}
 dns_lookup_realm = false
 dns_lookup_kdc = false
 dns_canonicalize_hostname = false
 rdns = false
 udp_preference_limit = 1
[realms]
 {REALM} = {{
  kdc = 127.0.0.1:{self.port}
 }}
""")
        with open(self.env["KRB5_KDC_PROFILE"], "w") as f:
            f.write(f"""[kdcdefaults]
 kdc_listen = 127.0.0.1:{self.port}
 kdc_tcp_listen = 127.0.0.1:{self.port}
[realms]
 {REALM} = {{
  database_name = {d}/principal
  key_stash_file = {d}/stash
  acl_file = {d}/kadm5.acl
  max_life = 2h
  supported_enctypes = aes256-cts-hmac-sha1-96:normal
 }}
[logging]
 kdc = FILE:{d}/kdc.log
""")
        self._run(_tool("kdb5_util"), "-r", REALM, "-P", "oc-master", "create", "-s")
        kadmin = _tool("kadmin.local")
        for q in ("addprinc -randkey postgres/127.0.0.1",
                  f"ktadd -k {self.server_keytab} postgres/127.0.0.1",
                  "addprinc -randkey postgres",
                  f"ktadd -k {self.client_keytab} postgres"):
            self._run(kadmin, "-r", REALM, "-q", q)
        if harness.IS_ROOT:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.server_keytab, pw.pw_uid, pw.pw_gid)
        self.proc = subprocess.Popen([_tool("krb5kdc"), "-n", "-r", REALM],
                                     env={**os.environ, **self.env},
                                     stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(d, "krb5kdc.out"), "wb"),
                                     stderr=subprocess.STDOUT)
        harness.wait_until(lambda: self.proc.poll() is not None
                           or harness.port_accepts(self.port), timeout=20,
                           what="krb5kdc listening")
        if self.proc.poll() is not None:
            raise harness.HarnessError("krb5kdc exited:\n" + self.log())
        self._run(_tool("kinit"), "-k", "-t", self.client_keytab, f"postgres@{REALM}")
        return self

    def log(self):
        out = []
        for name in ("krb5kdc.out", "kdc.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f.read()[-4000:])
        return "\n".join(out)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def realm():
    """The realm; this process (GssFrontProxy's acceptor) reads its
    krb5.conf while the module runs."""
    r = KerberosRealm()
    old = os.environ.get("KRB5_CONFIG")
    try:
        r.start()
        os.environ["KRB5_CONFIG"] = r.krb5_conf
        yield r
    finally:
        if old is None:
            os.environ.pop("KRB5_CONFIG", None)
        else:
            os.environ["KRB5_CONFIG"] = old
        r.cleanup()


@pytest.fixture(scope="module")
def pg(realm):
    """This module's own cluster: GSSAPI-encrypted TCP sessions authenticate
    with Kerberos (it replaces conftest's `pg`); others are trusted, as
    initdb made them (the tests' own sessions, GssFrontProxy's)."""
    hba = [f"hostgssenc {db} all 127.0.0.1/32 gss include_realm=0 krb_realm={REALM}"
           for db in ("all", "replication")]
    server = harness.Postgres(dbname="postgres", hba=hba, settings={
        "krb_server_keyfile": f"'FILE:{realm.server_keytab}'"})
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def gss_conninfo(port, dbname):
    return (f"host=127.0.0.1 port={port} dbname={dbname} user=postgres "
            "gssencmode=require krbsrvname=postgres")


trigger_template, wal_template, db, wal_db = oc_c.source_fixtures(
    SCHEMA, MODELS, "gss")


def _recv_exact(s, n):
    data = s.recv(n, socket.MSG_WAITALL)
    if len(data) != n:
        raise OSError("short read")
    return data


class GssFrontProxy(ss.FrontProxy):
    """GSSAPI encryption in front of the cluster (secure_sessions.FrontProxy):
    each chunk of the server's is wrapped in packets of the largest size
    libpq takes (16 KB with their length word). (PostgreSQL 15 here writes
    a regular session's packets of 8 KB at most, its send buffer, which
    libpq always takes whole.) It answers the GSSENCRequest with 'G' and
    accepts the client's context with the service keytab; behind it the
    session is plain and trusted."""

    errors = (OSError, gssapi.exceptions.GSSError, ValueError, struct.error)

    def __init__(self, pg, realm):
        self.creds = gssapi.Credentials(usage="accept",
                                        store={"keytab": realm.server_keytab})
        self.packets = 0
        super().__init__(pg)

    def conninfo(self, dbname):
        return gss_conninfo(self.port, dbname)

    def _handshake(self, c):
        ctx = gssapi.SecurityContext(creds=self.creds, usage="accept")
        while not ctx.complete:
            n = struct.unpack("!I", _recv_exact(c, 4))[0]
            out = ctx.step(_recv_exact(c, n))
            if out:
                c.sendall(struct.pack("!I", len(out)) + out)
        return ctx

    def _relay(self, c, conns):
        req = _recv_exact(c, 8)
        if struct.unpack("!ii", req) != (8, GSSENC_REQUEST):
            return
        c.sendall(b"G")
        ctx = self._handshake(c)
        maxp = ctx.get_wrap_size_limit(16384 - 4, encrypted=True)
        b = self.backend(conns)
        inbuf = b""
        while not self.closed:
            ready = select.select([c, b], [], [], 1.0)[0]
            if c in ready:
                data = c.recv(65536)
                if not data:
                    return
                inbuf += data
                while len(inbuf) >= 4:
                    n = struct.unpack("!I", inbuf[:4])[0]
                    if len(inbuf) < 4 + n:
                        break
                    b.sendall(ctx.unwrap(inbuf[4:4 + n]).message)
                    inbuf = inbuf[4 + n:]
            if b in ready:
                data = ss.read_burst(b)
                if not data:
                    return
                out = []
                for i in range(0, len(data), maxp):
                    w = ctx.wrap(data[i:i + maxp], True).message
                    out.append(struct.pack("!I", len(w)) + w)
                    self.packets += 1
                c.sendall(b"".join(out))


def config(pg, mc_pool, db, wal=False, **sections):
    return ss.config(gss_conninfo(pg.port, db.name), mc_pool, db, wal=wal, **sections)


row, get, served_within = ss.row, ss.get, ss.served_within


def assert_all_gss(pg, db, names):
    """Each named kind of objcached's sessions on db is there, and every
    session of objcached there is Kerberos-authenticated and encrypted
    (pg_stat_gssapi)."""
    found = ss.sessions(pg, db, "g.gss_authenticated, g.encrypted", "pg_stat_gssapi g")
    assert names <= set(found), found
    assert all(v == (True, True) for vs in found.values() for v in vs), found


def test_cold_loads_of_big_rows_in_parallel(fleet, realm, pg, mc_pool, db):
    """secure_sessions.cold_loads_of_big_rows over GSSAPI packets."""
    oc = fleet.start(config(pg, mc_pool, db, objcached={"near_cache_size": "0"}),
                     env=realm.client_env())
    ss.cold_loads_of_big_rows(oc, db, lambda names: assert_all_gss(pg, db, names))


def test_a_result_whose_end_waits_decrypted_in_libpq(fleet, realm, pg, mc_pool, db):
    """Through GssFrontProxy, a fresh loader (libpq's 16 KB input buffer)
    loads two rows in one result: Doc:1 of 10 KB, then Doc:2 of about
    16 KB. The first packet ends inside Doc:2's DataRow; libpq takes the
    second packet into the 16 KB less what it kept, so that packet's last
    bytes (CommandComplete, ReadyForQuery) stay decrypted in libpq's GSSAPI
    buffer and the socket has nothing more to say. Swept over Doc:2's size:
    each load answers within the bound (before the fix it waited for
    load_timeout)."""
    proxy = GssFrontProxy(pg, realm)
    try:
        ss.result_end_sweep(fleet, proxy.conninfo(db.name), mc_pool, db, range(16230, 16390, 7),
                            env=realm.client_env())
        assert proxy.packets > 0
    finally:
        proxy.close()


def test_notify_wakes_the_consumer_and_the_follower(fleet, realm, pg, mc_pool, db):
    """secure_sessions.notify_wakes over GSSAPI encryption."""
    oc = fleet.start(config(pg, mc_pool, db), env=realm.client_env())
    ss.notify_wakes(oc, db, lambda names: assert_all_gss(pg, db, names))


def test_the_wal_stream_over_gss(fleet, realm, pg, mc_pool, wal_db):
    """secure_sessions.wal_stream on a GSSAPI-encrypted replication session.
    A walsender's send buffer grows to its largest message, so it writes
    packets of up to 16 KB; then 24 UPDATEs of rows of many sizes, each
    applied by what it sent itself."""
    db = wal_db
    env = realm.client_env()

    def slot_session():
        assert pg.execute("SELECT g.gss_authenticated, g.encrypted FROM pg_replication_slots r "
                          "JOIN pg_stat_gssapi g ON g.pid = r.active_pid "
                          "WHERE r.slot_name = %s", (db.name,),
                          dbname="postgres") == [(True, True)]
    a, _ = ss.wal_stream(lambda: fleet.start(config(pg, mc_pool, db, wal=True), env=env), db,
                         lambda names: assert_all_gss(pg, db, names), slot_session)
    for i in range(3, 27):
        get(a, f"Doc:{i}")
        db.q("UPDATE docs SET body = repeat('y', (3700 * %s + 53 * (%s %% 11))::int) "
             "WHERE id = %s", (i, i, i))
        served_within(a, f"Doc:{i}", row(db, "docs", i))
    assert a.stats()["wal_holder"] == 1


def test_wal_stream_through_a_gss_front_writing_16k_packets(fleet, realm, pg, mc_pool,
                                                              wal_db):
    """The WAL reader through GssFrontProxy: the walsender's messages of
    many sizes, coalesced into 16 KB packets, so a transaction's last
    messages can share a packet with the end of a big one. Heartbeats are
    10 s apart: each transaction must be applied within the bound by what
    it sent itself."""
    db = wal_db
    proxy = GssFrontProxy(pg, realm)
    try:
        a = fleet.start(config(pg, mc_pool, db, wal=True,
                               postgresql={"wal_conninfo": proxy.conninfo(db.name)}),
                        env=realm.client_env())
        harness.wait_until(lambda: a.stats()["wal_holder"] == 1, timeout=20, what="a holder")
        for i in range(1, 25):
            get(a, f"Doc:{i}")
            db.q("UPDATE docs SET body = repeat('y', (3700 * %s + 53 * (%s %% 11))::int) "
                 "WHERE id = %s", (i, i, i))
            served_within(a, f"Doc:{i}", row(db, "docs", i))
        assert proxy.packets > 0
    finally:
        proxy.close()


def test_a_transaction_whose_commit_waits_decrypted_in_libpq(fleet, realm, pg, mc_pool,
                                                             wal_db):
    """The WAL reader through GssFrontProxy, as test_a_result_whose_end_...
    for the stream: one transaction updates Doc:1 (10 KB) and Doc:2 (about
    16 KB); its messages come in two packets, and libpq takes the second
    into its 16 KB buffer less what it kept of Doc:2's message, so the last
    bytes (the commit) stay decrypted in libpq's GSSAPI buffer. Heartbeats
    are 10 s apart: swept over Doc:2's size, each transaction is applied
    within the bound by what it sent itself."""
    db = wal_db
    proxy = GssFrontProxy(pg, realm)
    try:
        a = fleet.start(config(pg, mc_pool, db, wal=True,
                               postgresql={"wal_conninfo": proxy.conninfo(db.name)}),
                        env=realm.client_env())
        harness.wait_until(lambda: a.stats()["wal_holder"] == 1, timeout=20, what="a holder")
        for k, size in enumerate(range(16180, 16420, 6)):
            get(a, "Doc:1")
            get(a, "Doc:2")
            db.q("UPDATE docs SET body = CASE id WHEN 1 THEN repeat(%s, 10000) "
                 "ELSE repeat('b', %s) END WHERE id IN (1, 2)", ("ac"[k % 2], size))
            want = [row(db, "docs", 1), row(db, "docs", 2)]
            harness.wait_until(lambda: [get(a, "Doc:1"), get(a, "Doc:2")] == want,
                               timeout=BOUND, interval=0.02,
                               what=f"Doc:1 and Doc:2 (of {size} bytes) new within {BOUND} s")
        assert proxy.packets > 0
    finally:
        proxy.close()

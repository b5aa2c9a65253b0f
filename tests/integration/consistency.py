"""Helpers for the write-path and consistency tests (test_write_path.py,
test_consistency.py, scripts/soak.sh).

- HookDb and clone_db(): databases with the PostgreSQL invalidation hook
  installed (cloned from a template, so each test starts with an empty
  outbox and its own generations);
- Fleet: several objcached sidecars on the same memcached pool and database,
  any of which may be SIGKILLed and started again;
- raw memcached inspection (what objcached really stored, read with a plain
  socket, bypassing objcached): raw_items(), dump_keys(), entry_kind();
- ConsistencyRun: the randomized consistency run (writers in SQL and
  through the app path, readers through two sidecars, restarts), with its
  staleness measurements.

No pytest dependency here: the test files wrap these in fixtures.
"""

import bisect
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
SQL_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "sql"))
INSTALL_SQL = os.path.join(SQL_DIR, "install.sql")

# oc_entry.h: flags = magic 0x6F63 << 16 | version 1 << 8 | kind
ENTRY_MAGIC = 0x6F63
KIND_NAMES = {1: "OBJECT", 2: "MISSING", 3: "TOMBSTONE", 4: "LEASE", 5: "PUSHED"}


def entry_kind(flags):
    """The objcached entry kind of a memcached item's flags ('OBJECT',
    'MISSING', 'TOMBSTONE', 'LEASE' for an older sidecar's lease entry), or
    'FOREIGN'. A lease objcached takes now is memcached's own (see
    raw_items)."""
    if flags >> 16 != ENTRY_MAGIC or (flags >> 8) & 0xFF != 1:
        return "FOREIGN"
    return KIND_NAMES.get(flags & 0xFF, "FOREIGN")


def cache_key(model, ident, generation=0, prefix="oc:"):
    """The memcached key objcached uses: oc:Model:id, or oc:Model~G:id once
    the model has a generation (docs/protocol.md, Keys)."""
    gen = f"~{generation}" if generation else ""
    return f"{prefix}{model}{gen}:{ident}"


# --------------------------------------------------------------------------
# memcached, read directly


def raw_items(mc_pool, key):
    """[(server address, kind, data)] for every server of the pool that holds
    `key` (objcached hashes keys with ketama; asking every server needs no
    copy of its hash). Read with a meta get, so that a lease shows: the
    empty item a miss's `mg ... N<ttl>` made, which memcached marks as won
    (W/Z in the reply); its kind is 'LEASE', its data the lease's cas."""
    out = []
    k = key.encode() if isinstance(key, str) else key
    for m in mc_pool:
        with m.client(timeout=5) as c:
            c.sendline(b"mg " + k + b" v f c")
            head = c.readline().split()
            if head[0] == b"EN":
                continue
            assert head[0] == b"VA", head
            data = c.read_exact(int(head[1]) + 2)[:-2]
        flags = {t[:1]: t[1:] for t in head[2:]}
        if b"W" in flags or b"Z" in flags:
            out.append((m.address, "LEASE", flags[b"c"]))
        else:
            out.append((m.address, entry_kind(int(flags[b"f"])), data))
    return out


def dump_keys(mc):
    """Every key memcached `mc` holds now (`lru_crawler metadump hash`: it
    walks the hash table; `metadump all` walks the LRUs and was seen to miss
    items just written)."""
    keys = []
    with mc.client(timeout=10) as c:
        c.sendline(b"lru_crawler metadump hash")
        while True:
            line = c.readline()
            if line == b"END":
                return keys
            if line.startswith(b"key="):
                keys.append(urllib.parse.unquote_to_bytes(line.split(b" ", 1)[0][4:]))
            elif line.startswith((b"ERROR", b"CLIENT_ERROR", b"BUSY")):
                raise harness.HarnessError(f"metadump on {mc.address}: {line!r}")


def raw_values_for(mc_pool, model, ident, prefix=b"oc:"):
    """[(key, kind, data)] of every item, on every server and under any
    generation, that is objcached's entry for Model:id (found by listing all
    keys, so an entry under a generation nobody uses any more shows too)."""
    want_tail = b":" + str(ident).encode()
    heads = (prefix + model.encode() + b":", prefix + model.encode() + b"~")
    out = []
    for m in mc_pool:
        for k in dump_keys(m):
            if k.startswith(heads) and k.endswith(want_tail) \
                    and k[:-len(want_tail)].count(b":") == 1:
                for _, kind, data in raw_items([m], k):
                    out.append((k, kind, data))
    return out


class McProxy:
    """A TCP proxy in front of one memcached server, for faults memcached
    itself cannot produce: in "blackhole" mode it accepts connections and
    reads what is sent but forwards nothing and answers nothing (a server
    that is up but whose requests are lost); in "drop-deletes" mode it
    forwards everything but the delete commands ("delete" and meta "md"
    lines: never answered, so they time out; `dropped` counts them), a
    server that fails some deletes while it serves reads; in "forward" mode
    it is transparent. Connections are dropped at every switch, as a
    network that recovers would reset them."""

    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.mode = "forward"
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns = []          # (client socket, server socket or None, mode at accept)
        self.dropped = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode):
        assert mode in ("forward", "blackhole", "drop-deletes")
        with self._lock:
            self.mode = mode
            conns, self._conns = self._conns, []
        for client, server, _ in conns:
            for s in (client, server):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _accept_loop(self):
        self.lsock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                mode = self.mode
            server = None
            if mode != "blackhole":
                try:
                    server = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
            with self._lock:
                if self.mode != mode:   # switched meanwhile: as if reset by it
                    for sk in (client, server):
                        if sk is not None:
                            sk.close()
                    continue
                self._conns.append((client, server, mode))
            if server is None:
                threading.Thread(target=self._pump, args=(client, None), daemon=True).start()
            else:
                threading.Thread(target=self._pump,
                                 args=(client, server, mode == "drop-deletes"),
                                 daemon=True).start()
                threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, src, dst, drop_deletes=False):
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if dst is None:
                    continue
                if drop_deletes:   # whole lines only (values are JSON: no line starts so)
                    *lines, buf = (buf + data).split(b"\r\n")
                    keep = [ln for ln in lines if not ln.startswith((b"delete ", b"md "))]
                    with self._lock:
                        self.dropped += len(lines) - len(keep)
                    data = b"".join(ln + b"\r\n" for ln in keep)
                if data:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self):
        self._stop.set()
        self.set_mode("forward")
        self.lsock.close()
        self._thread.join(5)


# --------------------------------------------------------------------------
# databases with the hook


class HookDb:
    """One database of the `pg` cluster, with the hook installed. q() runs on
    an autocommit connection with the session settings objcached pins
    (TimeZone=UTC, ...)."""

    def __init__(self, pg, name):
        self.pg = pg
        self.name = name
        self.conn = pg.connect(dbname=name)
        self._extra = []

    @property
    def conninfo(self):
        return f"host={self.pg.dir} port={self.pg.port} dbname={self.name} user=postgres"

    def connect(self, autocommit=True):
        conn = self.pg.connect(dbname=self.name, autocommit=autocommit)
        self._extra.append(conn)
        return conn

    def q(self, sql, params=None, conn=None):
        """Rows of sql, or None for a statement without a result."""
        with (conn or self.conn).cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else None

    def one(self, sql, params=None, conn=None):
        return self.q(sql, params, conn)[0][0]

    def outbox_rows(self):
        """Rows in objcached.outbox, including rows a consumer has claimed but
        not committed yet (their deletion is not visible)."""
        return self.one("SELECT count(*) FROM objcached.outbox")

    def generation(self, model):
        return self.one("SELECT generation FROM objcached.models WHERE model = %s", (model,))

    def set_notify(self, on):
        self.q("UPDATE objcached.meta SET value = %s WHERE key = 'notify'",
               ("on" if on else "off",))

    def reconnect(self):
        """A new q() connection (after a PostgreSQL restart broke the old)."""
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - it is broken anyway
            pass
        self.conn = self.pg.connect(dbname=self.name)

    def close(self):
        for c in [self.conn] + self._extra:
            if not c.closed:
                c.close()


def run_install_hook(binary, config, timeout=60):
    """`objcached --install-hook -c FILE` with `config` (a dict); returns the
    CompletedProcess (text)."""
    with tempfile.TemporaryDirectory(prefix="oc-hook-") as d:
        path = os.path.join(d, "objcached.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(harness.render_ini(config))
        return subprocess.run([binary, "--install-hook", "-c", path], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)


def create_template(pg, name, schema_sql, models, binary, mc_address="127.0.0.1:1",
                    overrides=None):
    """Create database `name` with `schema_sql`, install the hook with
    `objcached --install-hook` (which attaches every model of `models`,
    {name: {config keys}}, through the config's overrides: with wal = on,
    via the WAL, and the slot made), and empty the outbox the attaches
    filled."""
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")
    pg.execute(f'CREATE DATABASE "{name}"', dbname="postgres")
    pg.execute(schema_sql, dbname=name)
    db = HookDb(pg, name)
    try:
        config = sidecar_config(mc_address, db.conninfo, models, overrides)
        p = run_install_hook(binary, config)
        if p.returncode != 0:
            raise harness.HarnessError(f"objcached --install-hook failed ({p.returncode}):\n"
                                       f"{p.stdout}{p.stderr}")
        db.q("DELETE FROM objcached.outbox")
        db.q("VACUUM ANALYZE")
    finally:
        db.close()


_db_counter = [0]


def clone_db(pg, template, prefix="oc_t"):
    """A fresh copy of `template` (CREATE DATABASE ... TEMPLATE) as a HookDb."""
    _db_counter[0] += 1
    name = f"{prefix}_{os.getpid()}_{_db_counter[0]}"
    pg.copy_database(name, template)
    return HookDb(pg, name)


def drop_db(pg, db):
    db.close()
    pg.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)', dbname="postgres")


def drop_slot_and_db(pg, name):
    """Drops slot and database `name` (a test's), terminating whoever
    streams the slot, until both are gone."""
    def gone():
        try:
            pg.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                       "WHERE slot_name = %s AND active", (name,), dbname="postgres")
            pg.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                       "WHERE slot_name = %s", (name,), dbname="postgres")
            pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")
        except Exception:  # noqa: BLE001 - active again, or made again: try again
            return False
        return True
    harness.wait_until(gone, timeout=20, interval=0.05, what="the test's slot and database to go")


def row_json(db, table, ident):
    """The row's JSON as objcached caches it (bytes), or None: no such id."""
    rows = db.q(f"SELECT row_to_json(t)::text FROM {table} t WHERE t.id = %s", (ident,))
    return rows[0][0].encode() if rows else None


def get_value(oc, key):
    """One get through objcached: the value (bytes) or None (a miss); any
    reply but END fails the test."""
    with oc.client() as c:
        values, end = c.get_multi([key])
    assert end == b"END", end
    return values[0][2] if values else None


def template_fixtures(name, schema, models, prefix):
    """A test module's `template` (a database made once per module with
    `schema` and the hook attached for `models`) and `db` (a fresh copy of
    it per test) pytest fixtures: `template, db = template_fixtures(...)`."""
    import pytest

    @pytest.fixture(scope="module")
    def template(pg, objcached_bin):
        create_template(pg, name, schema, models, objcached_bin)
        yield name
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")

    @pytest.fixture
    def db(pg, template):
        d = clone_db(pg, template, prefix=prefix)
        yield d
        drop_db(pg, d)

    return template, db


def source_fixtures(schema, models, prefix):
    """A test module's fixtures for both invalidation sources, on whatever
    `pg` fixture the module has (a TLS or a Kerberos cluster):
    `trigger_template, wal_template, db, wal_db = source_fixtures(...)`.
    The trigger hook's template NOTIFYs (the consumer claims at once); the
    WAL one is attached `via => 'wal'`, and each wal_db gets its own slot
    (named after it), dropped with it."""
    import pytest

    @pytest.fixture(scope="module")
    def trigger_template(pg, objcached_bin):
        name = f"{prefix}_trigger"
        create_template(pg, name, schema, models, objcached_bin)
        d = HookDb(pg, name)
        try:
            d.set_notify(True)
        finally:
            d.close()
        yield name

    @pytest.fixture(scope="module")
    def wal_template(pg, objcached_bin):
        name = f"{prefix}_wal"
        create_template(pg, name, schema, models, objcached_bin,
                        overrides={"postgresql": {"wal": "on", "wal_slot": name}})
        pg.execute(f"SELECT pg_drop_replication_slot('{name}')", dbname="postgres")
        yield name

    @pytest.fixture
    def db(pg, trigger_template):
        d = clone_db(pg, trigger_template, prefix=prefix)
        yield d
        drop_db(pg, d)

    @pytest.fixture
    def wal_db(pg, wal_template):
        d = clone_db(pg, wal_template, prefix=prefix + "w")
        d.q("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (d.name,))
        yield d
        d.close()
        drop_slot_and_db(pg, d.name)

    return trigger_template, wal_template, db, wal_db


# --------------------------------------------------------------------------
# sidecars


def sidecar_config(mc_servers, conninfo, models, overrides=None):
    """A complete objcached config dict. mc_servers: an address string or a
    list of harness.Memcached; models: {name: {key: value}}; overrides:
    {section: {key: value}} (a value None removes the key)."""
    if not isinstance(mc_servers, str):
        mc_servers = " ".join(m.address for m in mc_servers)
    config = {
        "objcached": {"load_timeout": "5s", "log_level": "info"},
        "memcached": {"servers": mc_servers, "retry_timeout": "500ms"},
        "postgresql": {"conninfo": conninfo, "connections": "2",
                       "invalidation_poll": "1s"},
    }
    for name, keys in models.items():
        config[f"model {name}"] = dict(keys)
    for section, keys in (overrides or {}).items():
        sec = config.setdefault(section, {})
        for k, v in keys.items():
            if v is None:
                sec.pop(k, None)
            else:
                sec[k] = v
    return config


class Fleet:
    """Sidecars started for one test. stop_all() stops each with SIGTERM and
    checks it exited 0 without a sanitizer report, except those this test
    SIGKILLed on purpose (kill()); those are checked for sanitizer reports
    only."""

    def __init__(self, binary):
        self.binary = binary
        self.daemons = []
        self.killed = set()

    def start(self, config, env=None, **kw):
        oc = harness.Objcached(config, binary=self.binary, env=env, **kw)
        self.daemons.append(oc)
        return oc.start()

    def kill(self, oc, sig=signal.SIGKILL):
        """SIGKILL `oc` and wait until it is gone."""
        oc.kill(sig)
        oc.proc.wait(timeout=10)
        self.killed.add(id(oc))

    def forgive(self, oc):
        """`oc` died in a way a test expected (a crash it pins as a bug):
        check it for sanitizer reports only."""
        self.killed.add(id(oc))

    def restart(self, oc):
        """Start a killed daemon again with the same config and port."""
        self.killed.discard(id(oc))
        return oc.start()

    def stop_all(self):
        errors = []
        for oc in self.daemons:
            try:
                if id(oc) in self.killed and not oc.alive():
                    report = oc.sanitizer_report()
                    if report:
                        errors.append(f"{oc!r}: sanitizer report:\n{report}")
                else:
                    oc.stop(check=True)
            except harness.HarnessError as e:
                errors.append(str(e))
            finally:
                oc.cleanup()
        self.daemons = []
        return errors


def log_generation(oc, model):
    """The last generation `oc` logged switching to for `model` (0 if none;
    the generations read at start-up are not logged, only later switches)."""
    found = re.findall(rf"event=model_generation model={re.escape(model)} generation=(\d+)",
                       oc.log())
    return int(found[-1]) if found else 0


def wait_generation(oc, model, generation, timeout=10):
    """Wait until `oc`'s consumer switched to `generation` for `model` (it
    logs event=model_generation when a cycle finds a new one)."""
    harness.wait_until(lambda: log_generation(oc, model) == generation, timeout=timeout,
                       interval=0.02, what=f"{oc!r} to use generation {generation} of {model}")


def wait_drained(db, sidecars, timeout=30):
    """Wait until the outbox is empty (nothing claimed and uncommitted either),
    this database's WAL slots (if any) have confirmed every change written
    before the call, every sidecar has nothing in flight, and then until
    every sidecar's feed has applied the feed's last row (its near-cache
    has dropped every key written)."""
    # The insert position, not pg_current_wal_lsn() (the write position): with
    # synchronous_commit off the last commits may still sit in the WAL
    # buffers, unsent to the WAL reader until the WAL writer runs, and a
    # drain that waited only for the write position passed before their
    # invalidations reached the feed (a stale entry "after the drain", seen
    # once under load, 2026-12-05). The holder's heartbeats carry the slot
    # past it.
    target = db.one("SELECT pg_current_wal_insert_lsn()::text")

    def drained():
        slots_done = db.one(
            "SELECT coalesce(bool_and(confirmed_flush_lsn >= %s::pg_lsn), true) "
            "FROM pg_replication_slots WHERE database = current_database()", (target,))
        return slots_done and db.outbox_rows() == 0 and all(
            s.stats()["loads_in_flight"] == 0 for s in sidecars)
    harness.wait_until(drained, timeout=timeout, interval=0.05,
                       what="the outbox and the WAL slot to drain and the sidecars to be idle")
    head = db.one("SELECT coalesce(max(seq), 0) FROM objcached.feed")

    def fed(s):
        st = s.stats()    # a sidecar whose feed is not connected serves no near-cache
        return st.get("feed_connected", 0) != 1 or st["feed_cursor"] >= head
    harness.wait_until(lambda: all(fed(s) for s in sidecars), timeout=timeout, interval=0.05,
                       what=f"every sidecar's feed to apply row {head}")


# --------------------------------------------------------------------------
# the randomized consistency run

CONSISTENCY_SCHEMA = """
CREATE TABLE acct (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    balance    bigint NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    pad        text
);
CREATE TABLE note (
    id      bigint PRIMARY KEY,
    body    text NOT NULL,
    version bigint NOT NULL
);
"""

# Acct has a version_column (a timestamptz: its ISO text is what is compared),
# Note has none (the last push wins).
CONSISTENCY_MODELS = {
    "Acct": {"table": "acct", "columns": "id, name, balance, version, updated_at",
             "version_column": "updated_at", "ttl": "1h", "missing_ttl": "30s",
             "tombstone_ttl": "10m"},
    "Note": {"table": "note", "ttl": "1h", "missing_ttl": "30s", "tombstone_ttl": "10m"},
}

# What objcached's load returns for each model, computed in the writer's own
# statement (RETURNING), on a session with TimeZone=UTC like objcached's.
ROW_JSON = {
    "Acct": "(SELECT row_to_json(r) FROM (SELECT acct.id, acct.name, acct.balance, "
            "acct.version, acct.updated_at) AS r)::text",
    "Note": "row_to_json(note)::text",
}
TABLE = {"Acct": "acct", "Note": "note"}


def _percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


class History:
    """Per key, the committed versions in commit order: (t_start, t_done,
    json or None), where the commit became visible between t_start (COMMIT
    sent) and t_done (COMMIT returned; inf while it has not). Each key is
    written by one thread only, so the order of its versions is the order of
    the commits."""

    def __init__(self):
        self.lock = threading.Lock()
        self.versions = {}

    def init(self, key, value):
        self.versions[key] = [(float("-inf"), float("-inf"), value)]

    def pending(self, changes, t_start):
        """Record versions about to be committed (COMMIT sent at t_start), so
        that a reader that sees one before the writer thread gets to
        done() judges it correctly."""
        with self.lock:
            for key, value in changes:
                self.versions[key].append((t_start, float("inf"), value))

    def done(self, changes, t_done):
        with self.lock:
            for key, _ in changes:
                vs = self.versions[key]
                t_start, _, value = vs[-1]
                vs[-1] = (t_start, t_done, value)

    def forget(self, changes, t_start):
        """A COMMIT that cannot have happened (its connection died before
        it was sent): drop the versions pending() recorded for it."""
        with self.lock:
            for key, _ in changes:
                vs = self.versions[key]
                for i in range(len(vs) - 1, -1, -1):
                    if vs[i][0] == t_start and vs[i][1] == float("inf"):
                        del vs[i]
                        break

    def judge(self, key, value, t_read, t_read_end):
        """('fresh' | 'stale' | 'phantom', delay in s or None) of a read of
        `key` started at t_read that returned `value`."""
        with self.lock:
            vs = list(self.versions[key])
        # cur: the newest version surely committed when the read started
        dones = [v[1] for v in vs]
        cur = bisect.bisect_right(dones, t_read) - 1
        for i in range(len(vs) - 1, cur - 1, -1):
            if vs[i][2] == value and vs[i][0] <= t_read_end:
                return "fresh", None
        for i in range(cur - 1, -1, -1):
            if vs[i][2] == value:
                return "stale", t_read - vs[i + 1][1]
        return "phantom", None


class ContendedHistory:
    """Keys written by more than one thread at once (the SQL writer and the
    app writer race on them). Their commit order is not the order the
    threads see, so every write of such a key takes its `version` from one
    sequence while it holds the row's lock (nextval in the UPDATE): version
    order is commit order. Per key: {version: (t_start, t_done, json)}; no
    deletes (rows always exist)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.versions = {}

    def init(self, key, version, value):
        self.versions[key] = {version: (float("-inf"), float("-inf"), value)}

    def pending(self, key, version, value, t_start):
        with self.lock:
            self.versions[key][version] = (t_start, float("inf"), value)

    def done(self, key, version, t_done):
        with self.lock:
            t_start, _, value = self.versions[key][version]
            self.versions[key][version] = (t_start, t_done, value)

    def forget(self, key, version):
        """A COMMIT that failed before it was sent (the writer paused it)."""
        with self.lock:
            self.versions[key].pop(version, None)

    def judge(self, key, value, t_read, t_read_end):
        with self.lock:
            vs = dict(self.versions[key])
        if value is None:
            return "phantom", None
        mine = [(ver, v) for ver, v in vs.items() if v[2] == value]
        if not mine or all(v[0] > t_read_end for _, v in mine):
            return "phantom", None
        ver = max(ver for ver, _ in mine)
        newer = [v[1] for w, v in vs.items() if w > ver and v[1] < t_read]
        if newer:
            return "stale", t_read - min(newer)
        return "fresh", None


# The faults a run can inject (ConsistencyRun(faults=...)), each for real:
FAULTS = (
    "memcached_restart",  # a memcached server stopped for 1 s and started (empty)
    "sidecar_kill",       # a sidecar SIGKILLed and started again
    "pg_restart",         # PostgreSQL stopped (fast) and started
    "mc_delay",           # the proxy to one memcached server delays every chunk
    "mc_drop",            # ... passes nothing (connections hang)
    "mc_reset",           # ... resets every connection, new ones too
    "pg_delay",           # the same between the sidecars and PostgreSQL
    "pg_drop",
    "pg_reset",
    "truncate",           # TRUNCATE acct mid-run (a whole-model invalidation)
)
BASIC_FAULTS = ("memcached_restart", "sidecar_kill")
# A fault's own errors and staleness are expected until this long after it
# ended (reconnect back-offs, a server marked down coming back, a consumer
# catching up).
FAULT_GRACE_S = 4.0


class ConsistencyRun:
    """Writers, readers and faults for `seconds`, then the final check.

    Keys: ids 1..n_ids of both models; the first `split` ids are written only
    by the SQL writer (single-row updates, deletes, inserts, and bulk updates
    of up to 1000 rows), the rest only by the app writer (commit in SQL, then
    push the row's JSON or, after a delete, a tombstone, through a random
    sidecar). One thread per partition keeps each key's commits in a known
    order (see History). `contended` more Note ids (n_ids+1 ...) are written
    by both writers at once, SQL updates racing the app's update-and-push
    (see ContendedHistory). Readers get-multi random keys through the
    sidecars and judge every answer against the history.

    Faults (faults()): the kinds in `faults` (FAULTS), one after the other
    in a random order (the seed's), spread over the run; in runs over 3
    minutes the list is cycled, one fault every 20 s. Each fault's window
    (from its start to FAULT_GRACE_S after its end) is recorded: errors and
    staleness inside a window are the fault's own; outside every window a
    read error, a writer error or a stale read beyond the bound is a
    failure of objcached. `proxies` ({"mc": FaultProxy, "pg": FaultProxy})
    are the proxies the sidecars reach one memcached server and PostgreSQL
    through, for the network faults."""

    def __init__(self, pg, mc_pool, db, fleet, seconds, seed, n_ids=3000, split=2000,
                 readers=3, log=print, faults=BASIC_FAULTS, proxies=None, contended=0,
                 meta_reads=0.0):
        self.pg, self.mc_pool, self.db, self.fleet = pg, mc_pool, db, fleet
        self.seconds = seconds
        self.seed = seed
        self.n_ids = n_ids
        self.split = split
        self.n_readers = readers
        self.log = log
        self.fault_kinds = tuple(faults)
        unknown = set(self.fault_kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self.proxies = proxies or {}
        self.n_contended = contended
        # the share of reads made with `mg <key> v n k` (pipelined, then mn):
        # their n flag says which keys the near-cache answered, so near-cache
        # reads get staleness figures of their own
        self.meta_reads = meta_reads
        self.history = History()
        self.contended = ContendedHistory()
        self.stop = threading.Event()
        self.errors = []
        self.counts_lock = threading.Lock()
        self.counts = {"reads": 0, "read_keys": 0, "read_errors": 0, "fresh": 0, "stale": 0,
                       "phantom": 0, "sql_writes": 0, "sql_keys": 0, "bulk_updates": 0,
                       "app_writes": 0, "pushes": 0, "pushes_failed": 0,
                       "pushes_not_stored": 0, "tombstones": 0, "contended_writes": 0,
                       "writes_lost_to_faults": 0, "writes_vanished": 0,
                       "read_errors_in_faults": 0, "read_errors_outside_faults": 0,
                       "push_errors_outside_faults": 0, "near_read_keys": 0, "near_stale": 0,
                       "near_phantom": 0}
        self.delays = []          # (t_read, delay) of every stale read
        self.near_delays = []     # the same, of keys the near-cache answered
        self.phantoms = []
        self.outside_errors = []  # the first few errors outside fault windows
        self.fault_counts = {"memcached_restarts": 0, "sidecar_restarts": 0}
        for kind in FAULTS:
            self.fault_counts.setdefault(kind, 0)
        self.windows = []         # (start, end or None while it lasts, kind)
        self.windows_lock = threading.Lock()
        self.commit_gate = threading.Condition()
        self.commits_paused = False
        self.commits_in_flight = 0
        self.sampler_lost = {}    # sampler figures of sidecars before they were killed
        self.sidecars = []

    # -- fault windows

    def _fault_begin(self, kind):
        with self.windows_lock:
            self.windows.append([time.monotonic(), None, kind])
            return self.windows[-1]

    def _fault_end(self, w):
        with self.windows_lock:
            w[1] = time.monotonic()

    def in_fault(self, t0, t1=None):
        """1 if [t0, t1] overlaps a fault's window (grace included)."""
        t1 = t0 if t1 is None else t1
        with self.windows_lock:
            for start, end, _ in self.windows:
                if t1 >= start and (end is None or t0 <= end + FAULT_GRACE_S):
                    return True
        return False

    def _outside_error(self, what):
        with self.counts_lock:
            if len(self.outside_errors) < 20:
                self.outside_errors.append(f"t={time.monotonic():.3f} {what}")

    # -- setup

    def contended_ids(self):
        return range(self.n_ids + 1, self.n_ids + 1 + self.n_contended)

    def populate(self):
        rng = random.Random(self.seed)
        conn = self.db.connect()
        with conn.cursor() as cur:
            for model in ("Acct", "Note"):
                for i in range(1, self.n_ids + 1):
                    self.history.init((model, i), None)
            # three ids in four exist at the start; the others wait for inserts
            ids = [i for i in range(1, self.n_ids + 1) if rng.random() < 0.75]
            cur.execute("INSERT INTO acct SELECT i, 'acct ' || i, i * 10, 1, "
                        "clock_timestamp(), repeat('x', 50) FROM unnest(%s::bigint[]) AS i",
                        (ids,))
            cur.execute("INSERT INTO note SELECT i, 'note ' || i, 1 FROM unnest(%s::bigint[]) i",
                        (ids,))
            cur.execute("CREATE SEQUENCE IF NOT EXISTS oc_cver START 1000000")
            cur.execute("INSERT INTO note SELECT i, 'contended ' || i, nextval('oc_cver') "
                        "FROM unnest(%s::bigint[]) i", (list(self.contended_ids()),))
            for model in ("Acct", "Note"):
                cur.execute(f"SELECT id, {ROW_JSON[model]} FROM {TABLE[model]}")
                for ident, js in cur.fetchall():
                    if model == "Note" and ident > self.n_ids:
                        continue
                    self.history.versions[(model, ident)] = \
                        [(float("-inf"), float("-inf"), js.encode())]
            cur.execute(f"SELECT id, version, {ROW_JSON['Note']} FROM note WHERE id > %s",
                        (self.n_ids,))
            for ident, ver, js in cur.fetchall():
                self.contended.init(("Note", ident), ver, js.encode())
            cur.execute("DELETE FROM objcached.outbox")  # the initial load, cache is empty
        conn.close()

    # -- writers

    def _count(self, **kw):
        with self.counts_lock:
            for k, v in kw.items():
                self.counts[k] += v

    def _commit_begin(self):
        """Wait while a PostgreSQL restart is being prepared: no COMMIT is
        ever in flight when the server stops, so every write's outcome is
        known (a statement cut off by the restart just rolls back)."""
        with self.commit_gate:
            while self.commits_paused:
                self.commit_gate.wait(0.1)
            self.commits_in_flight += 1

    def _commit_end(self):
        with self.commit_gate:
            self.commits_in_flight -= 1
            self.commit_gate.notify_all()

    def _commit(self, conn, changes):
        """COMMIT, then record [(key, json or None)] in the history."""
        import psycopg2
        self._commit_begin()
        try:
            t0 = time.monotonic()
            self.history.pending(changes, t0)
            try:
                conn.commit()
            except psycopg2.OperationalError:
                # The connection died in a PostgreSQL restart (the only
                # fault that reaches the writers' connections), and no
                # COMMIT is ever in flight when the server stops
                # (_commit_begin): this one was never sent, nothing was
                # committed. Left pending, its version made the writer
                # believe a DELETE had happened and INSERT the row again:
                # a duplicate key error, which failed the run once.
                self.history.forget(changes, t0)
                raise
            t1 = time.monotonic()
            self.history.done(changes, t1)
        finally:
            self._commit_end()
        return t1

    def _write_one(self, cur, rng, model, ident, exists):
        """One random single-row change; returns (kind, json or None), or
        (None, None) if the row vanished (a TRUNCATE came in between)."""
        table, js = TABLE[model], ROW_JSON[model]
        r = rng.random()
        if not exists:
            if model == "Acct":
                cur.execute(f"INSERT INTO acct VALUES (%s, %s, %s, 1, clock_timestamp(), "
                            f"'x') RETURNING {js}", (ident, f"new {rng.random():.6f}",
                                                      rng.randint(0, 10**6)))
            else:
                cur.execute(f"INSERT INTO note VALUES (%s, %s, 1) RETURNING {js}",
                            (ident, f"new {rng.random():.6f}"))
            return "insert", cur.fetchone()[0].encode()
        if r < 0.15:
            cur.execute(f"DELETE FROM {table} WHERE id = %s", (ident,))
            return ("delete", None) if cur.rowcount == 1 else (None, None)
        if model == "Acct":
            cur.execute(f"UPDATE acct SET balance = balance + %s, version = version + 1, "
                        f"name = %s, updated_at = clock_timestamp() WHERE id = %s "
                        f"RETURNING {js}", (rng.randint(-50, 50), f"n{rng.random():.6f}", ident))
        else:
            cur.execute(f"UPDATE note SET body = %s, version = version + 1 WHERE id = %s "
                        f"RETURNING {js}", (f"b{rng.random():.6f} \"q\" \\ é", ident))
        row = cur.fetchone()
        return ("update", row[0].encode()) if row else (None, None)

    def _write_contended(self, conn, rng):
        """Update a contended Note row (version from the sequence, under the
        row lock) and commit; returns (key, json)."""
        ident = rng.choice(self.contended_ids())
        key = ("Note", ident)
        with conn.cursor() as cur:
            cur.execute(f"UPDATE note SET body = %s, version = nextval('oc_cver') WHERE id = %s "
                        f"RETURNING version, {ROW_JSON['Note']}", (f"c{rng.random():.6f}", ident))
            ver, js = cur.fetchone()
        value = js.encode()
        self._commit_begin()
        try:
            # a COMMIT that fails leaves its version pending (t_done inf): it
            # may have committed, so a read of it is no phantom, and it never
            # makes another read stale
            self.contended.pending(key, ver, value, time.monotonic())
            conn.commit()
            self.contended.done(key, ver, time.monotonic())
        finally:
            self._commit_end()
        self._count(contended_writes=1)
        return key, value

    def _exists(self, key):
        with self.history.lock:
            return self.history.versions[key][-1][2] is not None

    def _writer_failed(self, who, conn, e):
        """A writer's statement failed: the fault's own if a fault is under
        way (reconnect and go on), else a failure of the run."""
        import psycopg2
        now = time.monotonic()
        if isinstance(e, psycopg2.Error) and self.in_fault(now - 1.0, now):
            self._count(writes_lost_to_faults=1)
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            while not self.stop.is_set():
                try:
                    return self.db.connect(autocommit=False)
                except psycopg2.Error:
                    self.stop.wait(0.2)
            return None
        self.errors.append(f"{who}: {e!r}")
        return None

    def sql_writer(self, seed):
        rng = random.Random(seed)
        conn = self.db.connect(autocommit=False)
        while not self.stop.is_set() and conn is not None:
            try:
                self._sql_write(conn, rng)
                self.stop.wait(rng.uniform(0, 0.004))
            except Exception as e:  # noqa: BLE001 - reported by the test
                conn = self._writer_failed("sql writer", conn, e)
        if conn is not None:
            conn.close()

    def _sql_write(self, conn, rng):
        model = rng.choice(("Acct", "Note"))
        if self.n_contended and rng.random() < 0.1:
            self._write_contended(conn, rng)
            self._count(sql_writes=1, sql_keys=1)
            return
        with conn.cursor() as cur:
            if rng.random() < 0.02:
                lo = rng.randint(1, max(1, self.split - 999))
                hi = min(self.split, lo + 999)
                if model == "Acct":
                    cur.execute(f"UPDATE acct SET balance = balance + 1, version = "
                                f"version + 1, updated_at = clock_timestamp() WHERE id "
                                f"BETWEEN %s AND %s RETURNING id, {ROW_JSON[model]}",
                                (lo, hi))
                else:
                    cur.execute(f"UPDATE note SET version = version + 1, body = body "
                                f"|| '+' WHERE id BETWEEN %s AND %s RETURNING id, "
                                f"{ROW_JSON[model]}", (lo, hi))
                rows = cur.fetchall()
                self._commit(conn, [((model, i), js.encode()) for i, js in rows])
                self._count(sql_writes=1, sql_keys=len(rows), bulk_updates=1)
            else:
                ident = rng.randint(1, self.split)
                key = (model, ident)
                kind, value = self._write_one(cur, rng, model, ident, self._exists(key))
                if kind is None:
                    conn.rollback()
                    self._count(writes_vanished=1)
                    return
                self._commit(conn, [(key, value)])
                self._count(sql_writes=1, sql_keys=1)

    def _push(self, clients, model, ident, value):
        """Push (or tombstone) through a random sidecar."""
        oc = random.choice(self.sidecars)
        k = f"{model}:{ident}".encode()
        try:
            c = clients.get(id(oc))
            if c is None:
                c = clients[id(oc)] = oc.client(timeout=5)
            if value is None:
                c.send(b"delete " + k + b"\r\n")
                self._count(tombstones=1)
            else:
                c.send(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value))
                self._count(pushes=1)
            line = c.readline()
            if line == b"NOT_STORED":
                self._count(pushes_not_stored=1)
            elif line not in (b"STORED", b"DELETED"):
                self._count(pushes_failed=1)
                now = time.monotonic()
                if not self.in_fault(now - 5.0, now):  # the push began up to 5 s ago
                    self._count(push_errors_outside_faults=1)
                    self._outside_error(f"push {k!r} through {oc!r}: {line!r}")
        except (OSError, harness.HarnessError):
            # the sidecar is being restarted: the hook still invalidates the
            # key, the push was only an optimisation
            self._count(pushes_failed=1)
            stale = clients.pop(id(oc), None)
            if stale:
                stale.close()

    def app_writer(self, seed):
        """The app path: commit in SQL, then push (or tombstone) through a
        random sidecar, as docs/protocol.md's Django example does."""
        rng = random.Random(seed)
        conn = self.db.connect(autocommit=False)
        clients = {}
        while not self.stop.is_set() and conn is not None:
            try:
                if self.n_contended and rng.random() < 0.1:
                    key, value = self._write_contended(conn, rng)
                    self._push(clients, key[0], key[1], value)
                    self._count(app_writes=1)
                    continue
                model = rng.choice(("Acct", "Note"))
                ident = rng.randint(self.split + 1, self.n_ids)
                key = (model, ident)
                with conn.cursor() as cur:
                    kind, value = self._write_one(cur, rng, model, ident, self._exists(key))
                if kind is None:
                    conn.rollback()
                    self._count(writes_vanished=1)
                    continue
                self._commit(conn, [(key, value)])
                self._count(app_writes=1)
                self._push(clients, model, ident, value)
                self.stop.wait(rng.uniform(0, 0.004))
            except Exception as e:  # noqa: BLE001
                conn = self._writer_failed("app writer", conn, e)
        if conn is not None:
            conn.close()
        for c in clients.values():
            c.close()

    # -- readers

    def _judge(self, key, value, t0, t1):
        if key[0] == "Note" and key[1] > self.n_ids:
            return self.contended.judge(key, value, t0, t1)
        return self.history.judge(key, value, t0, t1)

    def reader(self, seed):
        rng = random.Random(seed)
        clients = {}
        hi = self.n_ids + self.n_contended
        while not self.stop.is_set():
            oc = rng.choice(self.sidecars)
            keys = [(rng.choice(("Acct", "Note")), rng.randint(1, self.n_ids))
                    for _ in range(rng.randint(1, 30))]
            if self.n_contended:
                keys += [("Note", rng.randint(self.n_ids + 1, hi)) for _ in range(2)]
            t0 = time.monotonic()
            try:
                c = clients.get(id(oc))
                if c is None:
                    c = clients[id(oc)] = oc.client(timeout=10)
                t0 = time.monotonic()
                near = set()
                if self.meta_reads and rng.random() < self.meta_reads:
                    values, terminal, near = meta_multi(c, [f"{m}:{i}" for m, i in keys])
                else:
                    values, terminal = c.get_multi([f"{m}:{i}" for m, i in keys])
                t1 = time.monotonic()
            except (OSError, harness.HarnessError) as e:
                self._read_error(t0, f"{oc!r}: {e!r}")
                stale = clients.pop(id(oc), None)
                if stale:
                    stale.close()
                self.stop.wait(0.05)
                continue
            if terminal != b"END":
                self._read_error(t0, f"{oc!r}: {terminal!r}")   # e.g. SERVER_ERROR load failed
                continue
            got = {}
            for k, _, data in values:
                m, i = k.decode().split(":")
                got[(m, int(i))] = data
            verdicts = {"fresh": 0, "stale": 0, "phantom": 0}
            delays, near_delays, near_verdicts = [], [], {"fresh": 0, "stale": 0, "phantom": 0}
            for key in set(keys):
                verdict, delay = self._judge(key, got.get(key), t0, t1)
                verdicts[verdict] += 1
                from_near = f"{key[0]}:{key[1]}" in near
                if from_near:
                    near_verdicts[verdict] += 1
                if delay is not None:
                    delays.append((t0, delay))
                    if from_near:
                        near_delays.append((t0, delay))
                if verdict == "phantom" and len(self.phantoms) < 20:
                    self.phantoms.append((key, got.get(key), oc.port))
            with self.counts_lock:
                self.counts["reads"] += 1
                self.counts["read_keys"] += len(set(keys))
                for k, v in verdicts.items():
                    self.counts[k] += v
                self.counts["near_read_keys"] += sum(near_verdicts.values())
                self.counts["near_stale"] += near_verdicts["stale"]
                self.counts["near_phantom"] += near_verdicts["phantom"]
                self.delays.extend(delays)
                self.near_delays.extend(near_delays)
        for c in clients.values():
            c.close()

    def _read_error(self, t0, what):
        t1 = time.monotonic()
        self._count(read_errors=1)
        if self.in_fault(t0, t1):
            self._count(read_errors_in_faults=1)
        else:
            self._count(read_errors_outside_faults=1)
            self._outside_error(f"read: {what}")

    # -- faults

    def faults(self):
        try:
            self._faults()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"faults: {e!r}")

    def _schedule(self):
        """The faults in the order of the seed, cycled in long runs."""
        rng = random.Random(self.seed ^ 0x5EED)
        kinds = list(self.fault_kinds)
        if not kinds:
            return [], 0.0
        if self.seconds > 180:
            every = 20.0
            n = max(len(kinds), int((self.seconds - 20) // every))
        else:
            n = len(kinds)
            every = max(3.0, (self.seconds - 10.0) / n)
        out = []
        while len(out) < n:
            rng.shuffle(kinds)
            out += kinds
        return out[:n], every

    def _faults(self):
        t0 = time.monotonic()
        schedule, every = self._schedule()
        rng = random.Random(self.seed ^ 0xFA17)
        for n, kind in enumerate(schedule):
            if self.stop.wait(max(0.0, t0 + 2.0 + n * every - time.monotonic())):
                return
            if time.monotonic() - t0 > self.seconds - min(5.0, self.seconds / 10):
                return      # leave the end of the run alone
            w = self._fault_begin(kind)
            try:
                getattr(self, "_fault_" + kind)(rng)
            finally:
                self._fault_end(w)
            self.log(f"consistency: t={w[0] - t0:.1f}s fault {kind} ({w[1] - w[0]:.1f} s; "
                     f"monotonic {w[0]:.3f}..{w[1]:.3f})")
            self.fault_counts[kind] += 1

    def _fault_memcached_restart(self, rng):
        mc = rng.choice(self.mc_pool)
        mc.stop()
        self.stop.wait(1.0)
        mc.start()
        self.fault_counts["memcached_restarts"] += 1

    def snapshot_sampler(self, oc):
        """Add `oc`'s sampler figures to those of sidecars killed before."""
        try:
            for k, v in sampler_stats(oc).items():
                self.sampler_lost[k] = self.sampler_lost.get(k, 0) + v
        except (OSError, harness.HarnessError):
            pass

    def _fault_sidecar_kill(self, rng):
        oc = rng.choice(self.sidecars)
        self.snapshot_sampler(oc)
        self.fleet.kill(oc)
        self.stop.wait(0.5)
        self.fleet.restart(oc)
        self.fault_counts["sidecar_restarts"] += 1

    def _fault_pg_restart(self, rng):
        with self.commit_gate:
            self.commits_paused = True
            while self.commits_in_flight:
                self.commit_gate.wait(0.1)
        try:
            self.pg.stop(mode="fast")
            self.stop.wait(1.0)
            self.pg.start()
            self.db.reconnect()
        finally:
            with self.commit_gate:
                self.commits_paused = False
                self.commit_gate.notify_all()

    def _proxy_fault(self, which, mode, seconds=3.0, delay=None):
        proxy = self.proxies.get(which)
        if proxy is None:
            raise harness.HarnessError(f"fault on {which} needs its proxy")
        proxy.set_mode(mode, delay=delay)
        self.stop.wait(seconds)
        proxy.set_mode("forward")

    def _fault_mc_delay(self, rng):
        self._proxy_fault("mc", "delay", delay=0.15)

    def _fault_mc_drop(self, rng):
        self._proxy_fault("mc", "drop")

    def _fault_mc_reset(self, rng):
        self._proxy_fault("mc", "reset", seconds=2.0)

    def _fault_pg_delay(self, rng):
        self._proxy_fault("pg", "delay", delay=0.2)

    def _fault_pg_drop(self, rng):
        self._proxy_fault("pg", "drop")

    def _fault_pg_reset(self, rng):
        self._proxy_fault("pg", "reset", seconds=2.0)

    def _fault_truncate(self, rng):
        """TRUNCATE acct: every Acct key becomes absent, in one commit
        (ordered after the writes whose row locks it waited for)."""
        conn = self.db.connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute("SET lock_timeout = '10s'")
                cur.execute("TRUNCATE acct")
            self._commit(conn, [(("Acct", i), None) for i in range(1, self.n_ids + 1)])
        finally:
            conn.close()

    # -- the run

    def run(self, sidecars):
        self.sidecars = list(sidecars)
        rng = random.Random(self.seed)
        threads = [threading.Thread(target=self.sql_writer, args=(rng.random(),), daemon=True),
                   threading.Thread(target=self.app_writer, args=(rng.random(),), daemon=True)]
        threads += [threading.Thread(target=self.reader, args=(rng.random(),), daemon=True)
                    for _ in range(self.n_readers)]
        fault_thread = threading.Thread(target=self.faults, daemon=True)
        deadline = time.monotonic() + self.seconds
        for t in threads:
            t.start()
        fault_thread.start()
        while time.monotonic() < deadline and not self.errors:
            time.sleep(0.2)
        self.stop.set()
        fault_thread.join(60)
        for t in threads:
            t.join(60)
            if t.is_alive():
                self.errors.append(f"{t.name} did not stop")

    def final_check(self, timeout=60):
        """After the writes: wait for the drain, then compare every key read
        through every sidecar with the database. Returns the mismatches."""
        wait_drained(self.db, self.sidecars, timeout=timeout)
        current = {}
        for model in ("Acct", "Note"):
            for ident, js in self.db.q(f"SELECT id, {ROW_JSON[model]} FROM {TABLE[model]}"):
                current[(model, ident)] = js.encode()
        mismatches = []
        all_keys = [(m, i) for m in ("Acct", "Note") for i in range(1, self.n_ids + 1)]
        all_keys += [("Note", i) for i in self.contended_ids()]
        for oc in self.sidecars:
            with oc.client(timeout=30) as c:
                for lo in range(0, len(all_keys), 500):
                    chunk = all_keys[lo:lo + 500]
                    values, terminal = c.get_multi([f"{m}:{i}" for m, i in chunk])
                    if terminal != b"END":
                        raise harness.HarnessError(f"final get through {oc!r}: {terminal!r}")
                    got = {}
                    for k, _, data in values:
                        m, i = k.decode().split(":")
                        got[(m, int(i))] = data
                    for key in chunk:
                        if got.get(key) != current.get(key):
                            mismatches.append((oc.port, key, got.get(key), current.get(key)))
        return mismatches

    def staleness(self, delays=None):
        """Delays of stale reads (self.delays, or those given), split by
        whether the read overlapped a fault's window: (outside, inside),
        each sorted."""
        outside, inside = [], []
        for t_read, d in (self.delays if delays is None else delays):
            (inside if self.in_fault(t_read - d, t_read) else outside).append(d)
        return sorted(outside), sorted(inside)

    def report(self):
        c = dict(self.counts)
        c.update(self.fault_counts)
        d = sorted(x for _, x in self.delays)
        c["stale_delay_p50_ms"] = None if not d else round(_percentile(d, 50) * 1000, 1)
        c["stale_delay_p99_ms"] = None if not d else round(_percentile(d, 99) * 1000, 1)
        c["stale_delay_max_ms"] = None if not d else round(d[-1] * 1000, 1)
        c["stale_delay_mean_ms"] = None if not d else round(statistics.mean(d) * 1000, 1)
        outside, inside = self.staleness()
        fresh_outside = c["read_keys"] - c["phantom"] - len(inside)
        c["stale_outside_faults"] = len(outside)
        c["stale_in_faults"] = len(inside)
        c["stale_outside_p999_ms"] = None if not outside else \
            round(_percentile_of(outside, fresh_outside, 99.9) * 1000, 1)
        c["stale_outside_max_ms"] = None if not outside else round(outside[-1] * 1000, 1)
        c["stale_in_faults_max_ms"] = None if not inside else round(inside[-1] * 1000, 1)
        # the keys the near-cache answered, apart
        outside, inside = self.staleness(self.near_delays)
        fresh_outside = c["near_read_keys"] - c["near_phantom"] - len(inside)
        c["near_stale_outside_faults"] = len(outside)
        c["near_stale_in_faults"] = len(inside)
        c["near_stale_outside_p999_ms"] = None if not outside else \
            round(_percentile_of(outside, fresh_outside, 99.9) * 1000, 1)
        c["near_stale_outside_max_ms"] = None if not outside else round(outside[-1] * 1000, 1)
        c["near_stale_in_faults_max_ms"] = None if not inside else round(inside[-1] * 1000, 1)
        return c


def meta_multi(c, keys):
    """One `mg <key> v n k` per distinct key, pipelined, then `mn`:
    ([(key, 0, data), ...], b"END" or the first error line, {keys the
    near-cache answered}), shaped like McRaw.get_multi's answer."""
    uniq = list(dict.fromkeys(keys))
    c.send(b"".join(f"mg {k} v n k\r\n".encode() for k in uniq) + b"mn\r\n")
    values, near, terminal = [], set(), b"END"
    while True:
        line = c.readline()
        if line == b"MN":
            return values, terminal, near
        if line.split(b" ")[0] == b"EN":   # a miss: EN k<key>
            continue
        if line.startswith(b"VA "):
            parts = line.split(b" ")
            data = c.read_exact(int(parts[1]) + 2)[:-2]
            flags = {p[:1]: p[1:] for p in parts[2:]}
            key = flags[b"k"]
            values.append((key, 0, data))
            if flags[b"n"] == b"1":
                near.add(key.decode())
            continue
        if terminal == b"END":
            terminal = line    # an error: the read fails, as a get's would


def _percentile_of(stale_delays, reads, p):
    """The p-th percentile of the staleness of `reads` key reads, of which
    those not in `stale_delays` were fresh (staleness 0)."""
    zeros = max(0, reads - len(stale_delays))
    k = int(round(p / 100 * (zeros + len(stale_delays) - 1)))
    return 0.0 if k < zeros else stale_delays[min(k - zeros, len(stale_delays) - 1)]


def sampler_stats(oc):
    """{(model, window, field): n} of `oc`'s consistency sampler."""
    out = {}
    for k, v in oc.stats().items():
        m = re.fullmatch(r"sampler:([^:]+):([^:]+):(\w+)", k)
        if m:
            out[(m.group(1), m.group(2), m.group(3))] = int(v)
        elif k in ("sampler_samples", "sampler_raced", "sampler_errors", "sampler_dropped",
                   "sampler_pg_queries"):
            out[("*", "*", k)] = int(v)
    return out


def run_fleet(mc_pool, objcached_bin):
    """The body of a `fleet` fixture (`yield from run_fleet(...)`): the pool
    started and emptied, a Fleet handed out, and every sidecar it started
    stopped and checked after the test."""
    for m in mc_pool:
        m.start()
        m.flush_all()
    f = Fleet(objcached_bin)
    yield f
    errors = f.stop_all()
    if errors:
        raise AssertionError("objcached did not shut down cleanly:\n" + "\n\n".join(errors))

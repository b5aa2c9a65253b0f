"""Failover (issue 13): no stampede on PostgreSQL, whatever fails.

Real memcached processes, killed (SIGKILL), frozen (SIGSTOP/SIGCONT) and
restarted, under TWO objcached processes that share the pool:

- an outage of one of three servers under steady reads through both
  sidecars: each affected row is loaded about once per failover_ttl in
  total, no client sees an error, no request waits more than a few
  io_timeouts; with the gutter pool and with the rehash fallback; and with
  failover off (today's behaviour before it), every request loads them;
- a frozen server is marked down after failure_limit failures and used
  again after SIGCONT;
- a write committed (hook) and an app push and tombstone sent while a
  frozen server is down are not served stale after it thaws (it is flushed
  before it serves again), read through both sidecars;
- a hot key crossing its TTL under continuous reads through both sidecars:
  with refresh_ahead nobody misses; without it every expiry is a miss (the
  lease makes one reader load it); p99 latency of both is printed (a
  report, not an assertion on timing);
- a frozen server's old commands (tombstones sent before it was marked
  down) run before its probe's flush, even when it thaws with the probe
  under way (memcached orders nothing between connections); a probe waits
  for the sidecar's old connections io_timeout at most, and the server
  stays out of service until they ended, or until a few probes that
  waited in vain gave up one that never ends;
- --check-config refuses bad failover settings;
- what an outage's failover copies must not outlive: a reload that turns
  failover off or shortens failover_ttl during the outage, and a failover
  server that flaps (the key's chain moves on and back).

The outage lasts OC_FAILOVER_OUTAGE_S seconds (10 by default, with
failover_ttl 3 s); the issue's 30 s outage is the soak variant:
OC_FAILOVER_OUTAGE_S=30 python3 -m pytest test_failover.py -k outage.
"""

import contextlib
import math
import os
import signal
import subprocess
import threading
import time

import pytest

import faultproxy
import harness
from consistency import cache_key, raw_items

OUTAGE_S = float(os.environ.get("OC_FAILOVER_OUTAGE_S", "10"))
FAILOVER_TTL = 3
IO_TIMEOUT = 0.3
FAILURE_LIMIT = 2
KEYS = [f"Item:{i}" for i in range(1, 61)]

SCHEMA = """
DROP TABLE IF EXISTS fo_items, fo_notes;
CREATE TABLE fo_items (id bigint PRIMARY KEY, name text NOT NULL, body text NOT NULL);
CREATE TABLE fo_notes (id bigint PRIMARY KEY, name text NOT NULL, body text NOT NULL);
INSERT INTO fo_items SELECT i, 'item ' || i, repeat(md5(i::text), 4) FROM generate_series(1, 300) i;
INSERT INTO fo_notes SELECT i, 'note ' || i, repeat(md5(i::text), 2) FROM generate_series(1, 300) i;
"""


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def world(pg, objcached_bin):
    """Three pool servers and one gutter server, the tables, and the hook
    installed for model Item (fo_items) only: Note (fo_notes) is kept fresh
    by the app's pushes and tombstones alone."""
    pg.execute(SCHEMA)
    pool = [harness.Memcached().start() for _ in range(3)]
    gutter = harness.Memcached().start()
    try:
        w = World(pg, pool, gutter, objcached_bin)
        w.install_hook()
        yield w
    finally:
        for m in pool + [gutter]:
            m.cleanup()


class World:
    def __init__(self, pg, pool, gutter, binary):
        self.pg, self.pool, self.gutter, self.binary = pg, pool, gutter, binary

    def config(self, gutter=False, failover="on", objcached=None, **mc):
        memcached = {"servers": " ".join(m.address for m in self.pool),
                     "io_timeout": f"{int(IO_TIMEOUT * 1000)}ms",
                     "connect_timeout": f"{int(IO_TIMEOUT * 1000)}ms",
                     "retry_timeout": "500ms", "failure_limit": str(FAILURE_LIMIT),
                     "failover": failover, "failover_ttl": f"{FAILOVER_TTL}s"}
        if gutter:
            memcached["gutter"] = self.gutter.address
        memcached.update(mc)
        return {
            "objcached": {"log_level": "info", "ttl_jitter_pct": "0", "load_timeout": "5s",
                          **(objcached or {})},
            "memcached": memcached,
            "postgresql": {"conninfo": self.pg.conninfo, "invalidation_poll": "200ms"},
            "model Item": {"table": "fo_items", "ttl": "1h"},
            "model Note": {"table": "fo_notes", "ttl": "1h"},
            "model Hot": {"table": "fo_items", "ttl": "5s", "refresh_ahead": "2s"},
            "model HotPlain": {"table": "fo_items", "ttl": "5s"},
        }

    def install_hook(self):
        conf = self.config()
        for m in ("model Note", "model Hot", "model HotPlain"):
            del conf[m]
        oc = harness.Objcached(conf, binary=self.binary)
        try:
            out = subprocess.run([self.binary, "--install-hook", "-c", oc.config_path],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
        finally:
            oc.cleanup()

    def generation(self, model):
        rows = self.pg.execute("SELECT generation FROM objcached.models WHERE model = %s",
                               (model,))
        return rows[0][0] if rows else 0

    def heal(self):
        for m in self.pool + [self.gutter]:
            if m.alive():
                m.kill(signal.SIGCONT)
            m.start()
            m.flush_all()

    def json(self, table, ident):
        rows = self.pg.execute(f"SELECT row_to_json(t)::text FROM {table} t WHERE id = %s",
                               (ident,))
        return rows[0][0].encode() if rows else None

    def holder(self, model, ident):
        """The server of the pool that holds Model:ident (after a warm read)."""
        key = cache_key(model, ident, self.generation(model))
        found = [addr for addr, kind, _ in raw_items(self.pool, key) if kind != "LEASE"]
        assert len(found) == 1, (key, found)
        return next(m for m in self.pool if m.address == found[0])


@contextlib.contextmanager
def sidecars(world, n=2, first=None, **conf):
    """n objcached processes over the same pool (`first`: [objcached]
    settings of the first one only); stopped (and checked: exit 0, no
    sanitizer report) at the end."""
    world.heal()
    with contextlib.ExitStack() as stack:
        ocs = [stack.enter_context(harness.Objcached(
            world.config(objcached=first if i == 0 else None, **conf), binary=world.binary))
            for i in range(n)]
        yield ocs


def state(oc, server):
    return oc.stats()[f"mc_server:{server.address}:state"]


def metrics(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_state(ocs, server, want, timeout=10, poke=None):
    def all_there():
        if poke:
            poke()
        return all(state(oc, server) == want for oc in ocs)
    harness.wait_until(all_there, timeout=timeout, interval=0.05,
                       what=f"{server.address} {want} on every sidecar")


def total(ocs, name):
    return sum(oc.stats()[name] for oc in ocs)


def pct(vals, p):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(math.ceil(p / 100 * len(vals))) - 1)] if vals else 0


class Readers:
    """`per` client threads per sidecar, each asking `keys` in a loop and
    checking every answer against `want` (None: only that it is END). Each
    request's start time and latency are kept."""

    def __init__(self, ocs, keys, want=None, per=2, pause=0.001):
        self.keys, self.want, self.pause = keys, want, pause
        self.stop_ev = threading.Event()
        self.samples = []   # (start, seconds)
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(oc,), daemon=True)
                        for oc in ocs for _ in range(per)]

    def run(self, oc):
        try:
            with oc.client(timeout=20) as c:
                while not self.stop_ev.is_set():
                    t0 = time.monotonic()
                    values, end = c.get_multi(self.keys)
                    dt = time.monotonic() - t0
                    bad = end != b"END" or (self.want is not None and
                                            {k.decode(): v for k, _, v in values} != self.want)
                    with self.lock:
                        self.samples.append((t0, dt))
                        if bad:
                            self.errors.append((end, len(values)))
                    time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001 - reported by the test
            with self.lock:
                self.errors.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a reader hung"

    def between(self, t0, t1):
        with self.lock:
            return [dt for s, dt in self.samples if t0 <= s < t1]


# ------------------------------------------------------------------ the outage


def item_rows(ocs):
    return total(ocs, "model:Item:pg_rows")


def run_outage(world, ocs, victim, outage_s):
    """Steady reads of KEYS through every sidecar; `victim` SIGKILLed for
    outage_s, then restarted. Returns the figures."""
    a = ocs[0]
    want = {k: world.json("fo_items", int(k.split(":")[1])) for k in KEYS}
    with a.client() as c:
        assert c.get_multi(KEYS)[1] == b"END"
    a.wait_idle()
    affected = [k for k in KEYS if world.holder("Item", int(k.split(":")[1])) is victim]
    assert len(affected) >= 5, "the victim holds too few of the keys"
    rows0 = item_rows(ocs)
    gen = world.generation("Item")
    others = [m for m in world.pool + [world.gutter] if m is not victim]
    with Readers(ocs, KEYS, want) as r:
        time.sleep(1.0)
        assert item_rows(ocs) == rows0, "warm keys were loaded again"
        t_kill = time.monotonic()
        victim.kill(signal.SIGKILL)
        time.sleep(outage_s / 2)
        # where the victim's keys are now: one place, the same for both
        where = [[addr for addr, _, _ in raw_items(others, cache_key("Item", k[5:], gen))]
                 for k in affected]
        time.sleep(outage_s / 2)
        t_back = time.monotonic()
        rows_outage = item_rows(ocs) - rows0
        victim.start()
        wait_state(ocs, victim, "up", timeout=10)
        time.sleep(1.0)
        t_end = time.monotonic()
    lat_outage = r.between(t_kill, t_back)
    return {"affected": len(affected), "where": where, "rows_outage": rows_outage,
            "errors": r.errors,
            "requests_outage": len(lat_outage), "max_s": max(lat_outage),
            "p99_s": pct(lat_outage, 99), "after": len(r.between(t_back, t_end))}


@pytest.mark.parametrize("gutter", [True, False], ids=["gutter", "rehash"])
def test_outage_is_served_from_the_failover(world, gutter):
    victim = world.pool[0]
    with sidecars(world, gutter=gutter) as ocs:
        f = run_outage(world, ocs, victim, OUTAGE_S)
        print(f"\noutage {OUTAGE_S:g} s ({'gutter' if gutter else 'rehash'}): "
              f"{f['affected']} keys on the victim, {f['requests_outage']} requests of "
              f"{len(KEYS)} keys through 2 sidecars, PostgreSQL read {f['rows_outage']} rows "
              f"(failover off would read about {f['requests_outage'] * f['affected']}); "
              f"latency p99 {f['p99_s'] * 1000:.1f} ms, max {f['max_s'] * 1000:.1f} ms")
        assert f["errors"] == []
        # Each affected row loaded about once per failover_ttl, in total over
        # both sidecars. memcached's clock counts whole seconds, so an entry
        # with a 3 s TTL lives 2 to 3 s: at most ceil(outage / 2) loads, one
        # more when the outage begins.
        per_row = math.ceil(OUTAGE_S / (FAILOVER_TTL - 1)) + 1
        assert f["affected"] <= f["rows_outage"] <= f["affected"] * per_row, f
        assert f["requests_outage"] > 4 * per_row, "too few reads to tell"
        # nobody waited on the dead server: a few io_timeouts at most
        assert f["max_s"] < 3 * IO_TIMEOUT + 0.5, f
        for oc in ocs:
            s = oc.stats()
            assert s["mc_ejections"] == 1 and s["mc_returns"] == 1, s
            assert s["mc_failover_reads"] > 0 and s["server_errors"] == 0
            assert s[f"mc_server:{victim.address}:state"] == "up"
        assert "event=memcached_down server=" + victim.address in ocs[0].log()
        assert f"event=memcached_up server={victim.address}" in ocs[0].log()
        # the failover entries were where every sidecar looked for them: in
        # one place each, the gutter or the other servers of the pool
        assert all(len(w) <= 1 for w in f["where"]), f["where"]
        held = [w[0] for w in f["where"] if w]
        assert len(held) >= f["affected"] // 2, f["where"]
        if gutter:
            assert set(held) == {world.gutter.address}
        else:
            assert world.gutter.address not in held and len(set(held)) == 2
        # and the restarted server serves its keys again
        assert victim.stats()["curr_items"] > 0


def test_failover_off_loads_every_request(world):
    """The switch: with failover off, the keys of a dead server are loaded
    from PostgreSQL on every request (the behaviour before failover)."""
    victim = world.pool[0]
    with sidecars(world, failover="off") as ocs:
        f = run_outage(world, ocs, victim, 3)
        print(f"\nfailover off, outage 3 s: PostgreSQL read {f['rows_outage']} rows for "
              f"{f['affected']} keys in {f['requests_outage']} requests")
        assert f["errors"] == []
        assert f["rows_outage"] > f["affected"] * (math.ceil(3 / (FAILOVER_TTL - 1)) + 1) * 3
        for oc in ocs:
            assert oc.stats()["mc_failover_reads"] == 0


# ------------------------------------------------------------------ frozen


def test_frozen_server_is_marked_down_and_taken_back(world):
    victim = world.pool[1]
    mport = harness.free_port()
    with sidecars(world, first={"metrics_listen": f"127.0.0.1:{mport}"}) as ocs:
        want = {k: world.json("fo_items", int(k.split(":")[1])) for k in KEYS}
        with ocs[0].client() as c:
            assert c.get_multi(KEYS)[1] == b"END"
        ocs[0].wait_idle()
        hits0 = victim.stats()["get_hits"]
        with Readers(ocs, KEYS, want) as r:
            time.sleep(0.5)
            t_stop = time.monotonic()
            victim.kill(signal.SIGSTOP)
            try:
                # each sidecar's reads time out failure_limit times in a row
                wait_state(ocs, victim, "down", timeout=FAILURE_LIMIT * IO_TIMEOUT + 5)
                t_down = time.monotonic()
                time.sleep(2.0)   # served from the failover, nobody waits on it
                page = metrics(mport)   # the same on /metrics
                t_thaw = time.monotonic()
            finally:
                victim.kill(signal.SIGCONT)
            wait_state(ocs, victim, "up", timeout=10)
            time.sleep(1.0)
        down_after = t_down - t_stop
        waits = r.between(t_down + 0.1, t_thaw)
        print(f"\nfrozen: marked down on both sidecars {down_after:.2f} s after SIGSTOP; "
              f"while frozen {len(waits)} requests, p99 {pct(waits, 99) * 1000:.1f} ms; "
              f"slowest request {max(dt for _, dt in r.samples) * 1000:.0f} ms")
        assert r.errors == []
        assert down_after < FAILURE_LIMIT * (IO_TIMEOUT + 0.1) + 2.5
        down = f'server="{victim.address}",pool="pool",state='
        assert (f'objcached_memcached_state{{{down}"down"}} 1' in page or
                f'objcached_memcached_state{{{down}"probing"}} 1' in page), page
        assert f'objcached_memcached_state{{{down}"up"}} 0' in page
        assert f'objcached_memcached_up{{server="{victim.address}"}} 0' in page
        assert "objcached_mc_ejections_total 1" in page
        assert "objcached_mc_failover_reads_total " in page
        for oc in ocs:
            s = oc.stats()
            assert s["mc_ejections"] == 1 and s["mc_returns"] == 1
            assert f"server={victim.address} pool=pool failures={FAILURE_LIMIT}" in oc.log()
        # once marked down, requests stop waiting on it
        assert waits and pct(waits, 99) < IO_TIMEOUT
        # the slowest request waited for the timeouts that marked it down, no more
        assert max(dt for _, dt in r.samples) < (FAILURE_LIMIT + 1) * IO_TIMEOUT + 0.5
        # used again after SIGCONT
        with ocs[1].client() as c:
            assert c.get_multi(KEYS)[1] == b"END"
        assert victim.stats()["get_hits"] > hits0


# ------------------------------------------------------------------ writes while down


def set_cmd(c, key, data):
    c.send(f"set {key} 0 0 {len(data)}\r\n".encode() + data + b"\r\n")
    return c.readline()


def test_writes_while_down_are_not_stale_after_return(world):
    """A server frozen while holding values thaws with them. Meanwhile: a
    row of a hooked table is updated in SQL (its invalidation cannot reach
    the frozen server: requeued), and for a table without the hook the app
    pushes a new value and tombstones a deleted row (they go to the
    failover). After it thaws nobody reads the old values from it: every
    sidecar flushed it before using it again."""
    victim = world.pool[2]
    with sidecars(world) as (a, b):
        gen_item = world.generation("Item")
        # keys held by the victim
        with a.client() as c:
            c.get_multi([f"Item:{i}" for i in range(100, 160)])
            c.get_multi([f"Note:{i}" for i in range(100, 160)])
        a.wait_idle()
        items = [i for i in range(100, 160) if world.holder("Item", i) is victim]
        notes = [i for i in range(100, 160) if world.holder("Note", i) is victim]
        k1, k2, k3 = items[0], notes[0], notes[1]
        old1, old3 = world.json("fo_items", k1), world.json("fo_notes", k3)
        with a.client() as ca, b.client() as cb:
            for c in (ca, cb):   # cached on the victim, read by both
                assert c.get(f"Item:{k1}") == old1
                assert c.get(f"Note:{k2}") == world.json("fo_notes", k2)
            victim.kill(signal.SIGSTOP)
            try:
                wait_state((a, b), victim, "down", timeout=10,
                           poke=lambda: (ca.get(f"Item:{k1}"), cb.get(f"Item:{k1}")))
                # a write committed while it is down (hooked table)
                world.pg.execute("UPDATE fo_items SET name = 'changed while down' "
                                 "WHERE id = %s", (k1,))
                new1 = world.json("fo_items", k1)
                harness.wait_until(lambda: ca.get(f"Item:{k1}") == new1 and
                                   cb.get(f"Item:{k1}") == new1, timeout=10,
                                   what="the update to reach both sidecars")
                # the app deletes a row and tombstones it; pushes another
                world.pg.execute("DELETE FROM fo_notes WHERE id = %s", (k2,))
                ca.sendline(f"delete Note:{k2}")
                assert ca.readline() == b"DELETED"
                world.pg.execute("UPDATE fo_notes SET body = 'pushed while down' "
                                 "WHERE id = %s", (k3,))
                new3 = world.json("fo_notes", k3)
                assert set_cmd(cb, f"Note:{k3}", new3) == b"STORED"
                for c in (ca, cb):
                    assert c.get(f"Note:{k2}") is None
                    assert c.get(f"Note:{k3}") == new3
                # the frozen server still holds the old values
            finally:
                victim.kill(signal.SIGCONT)
            wait_state((a, b), victim, "up", timeout=10)
            for c in (ca, cb):
                assert c.get(f"Item:{k1}") == new1
                assert c.get(f"Note:{k2}") is None
                assert c.get(f"Note:{k3}") == new3
            a.wait_idle()
            b.wait_idle()
        # and the server itself holds nothing old
        for key, old in ((cache_key("Item", k1, gen_item), old1),
                         (cache_key("Note", k3), old3)):
            assert all(data != old for _, _, data in raw_items([victim], key)), key
        assert all(kind != "OBJECT" for _, kind, _ in
                   raw_items([victim], cache_key("Note", k2)))
        for oc in (a, b):
            assert oc.stats()["mc_returns"] == 1


# ------------------------------------------------------------------ hot key expiry


def hot_run(world, model, seconds=9.0):
    """Clients reading Model:1 continuously through two sidecars for
    `seconds` (the TTL is 5 s: it runs out about twice)."""
    with sidecars(world) as ocs:
        with ocs[0].client() as c:
            assert c.get(f"{model}:1") == world.json("fo_items", 1)
        ocs[0].wait_idle()
        s0 = {n: total(ocs, n) for n in (f"model:{model}:get_misses",
                                           f"model:{model}:pg_rows", "early_refreshes")}
        with Readers(ocs, [f"{model}:1"], {f"{model}:1": world.json("fo_items", 1)},
                     per=3) as r:
            time.sleep(seconds)
        for oc in ocs:
            oc.wait_idle()
        d = {n.split(":")[-1]: total(ocs, n) - v for n, v in s0.items()}
        lat = [dt for _, dt in r.samples]
        d.update(requests=len(lat), p99_ms=pct(lat, 99) * 1000, p999_ms=pct(lat, 99.9) * 1000,
                 max_ms=max(lat) * 1000, errors=r.errors)
        return d


def test_hot_key_expiry_with_and_without_early_refresh(world):
    ahead = hot_run(world, "Hot")
    plain = hot_run(world, "HotPlain")
    print(f"\nhot key, 6 clients through 2 sidecars for 9 s, ttl 5 s:\n"
          f"  refresh_ahead 2s: {ahead['requests']} reads, {ahead['get_misses']} misses, "
          f"{ahead['pg_rows']} loads, {ahead['early_refreshes']} early refreshes; "
          f"p99 {ahead['p99_ms']:.2f} ms, p99.9 {ahead['p999_ms']:.2f} ms, "
          f"max {ahead['max_ms']:.1f} ms\n"
          f"  without:          {plain['requests']} reads, {plain['get_misses']} misses, "
          f"{plain['pg_rows']} loads; p99 {plain['p99_ms']:.2f} ms, "
          f"p99.9 {plain['p999_ms']:.2f} ms, max {plain['max_ms']:.1f} ms")
    assert ahead["errors"] == [] and plain["errors"] == []
    # With early refresh nobody ever missed: one reader of the fleet reloaded
    # it ahead of each expiry, about once per (ttl - refresh_ahead).
    assert ahead["get_misses"] == 0
    assert 1 <= ahead["early_refreshes"] == ahead["pg_rows"] <= 4
    # Without it every expiry is a miss; the lease still makes it about one
    # load per expiry across both sidecars.
    assert plain["get_misses"] > 0 and plain["early_refreshes"] == 0
    assert 1 <= plain["pg_rows"] <= 2 * 3


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("memcached,model,error", [
    ({"gutter": "SELF"}, {}, "is also in servers (a gutter pool must be other memcached "
                             "servers)"),
    ({"failover_ttl": "0"}, {}, "failover_ttl: '0' is out of range (1s..1h)"),
    ({"failure_limit": "0"}, {}, "failure_limit: '0' is out of range (1..100)"),
    ({"failover": "sometimes"}, {}, "failover: 'sometimes' is not one of on, off"),
    ({}, {"ttl": "1m", "refresh_ahead": "1m"}, "refresh_ahead (60s) must be shorter than "
                                               "ttl (60s) in [model Item]"),
    ({}, {"refresh_ahead": "1s"}, "refresh_ahead (1s) would never refresh"),
], ids=["gutter-in-pool", "zero-ttl", "zero-limit", "bad-switch", "refresh-over-ttl",
        "refresh-1s"])
def test_check_config_refuses_bad_failover_settings(world, tmp_path, memcached, model, error):
    conf = world.config()
    for k, v in memcached.items():
        conf["memcached"][k] = world.pool[1].address if v == "SELF" else v
    conf["model Item"].update(model)
    conf["objcached"]["listen"] = "127.0.0.1:1"
    path = tmp_path / "bad.ini"
    path.write_text(harness.render_ini(conf))
    out = subprocess.run([world.binary, "--no-db", "--check-config", str(path)],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1, out.stdout + out.stderr
    assert error in out.stderr, out.stderr
    # and the same file with that setting fixed is fine
    good = world.config()
    good["objcached"]["listen"] = "127.0.0.1:1"
    path.write_text(harness.render_ini(good))
    ok = subprocess.run([world.binary, "--no-db", "--check-config", str(path)],
                        capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr


# ------------------------------------------------------------------ reload


def test_reload_adds_a_gutter_and_keeps_server_states(world):
    """SIGHUP: a gutter added to a running sidecar is used at once, and a
    server marked down stays down (its state is kept across the reload)."""
    victim = world.pool[0]
    with sidecars(world, n=1) as (oc,):
        with oc.client() as c:
            assert c.get_multi(KEYS)[1] == b"END"
        oc.wait_idle()
        affected = [k for k in KEYS if world.holder("Item", int(k.split(":")[1])) is victim]
        victim.kill(signal.SIGKILL)
        with oc.client() as c:
            wait_state([oc], victim, "down", timeout=10, poke=lambda: c.get_multi(KEYS))
        text = harness.render_ini({**world.config(gutter=True),
                                   "objcached": {**world.config()["objcached"],
                                                 "listen": f"127.0.0.1:{oc.port}",
                                                 "unix_socket": oc.sock}})
        with open(oc.config_path, "w") as f:
            f.write(text)
        before = oc.stats()
        oc.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: oc.stats()["reloads"] > before["reloads"],
                           what="the reload")
        s = oc.stats()
        assert s[f"mc_gutter:{world.gutter.address}:state"] == "up"
        assert s[f"mc_server:{victim.address}:state"] in ("down", "probing")
        assert s["mc_ejections"] == before["mc_ejections"] == 1
        with oc.client() as c:
            for _ in range(3):
                assert c.get_multi(KEYS)[1] == b"END"
        oc.wait_idle()
        gen = world.generation("Item")
        in_gutter = [k for k in affected
                     if raw_items([world.gutter], cache_key("Item", k[5:], gen))]
        assert len(in_gutter) == len(affected), (in_gutter, affected)


def test_reload_turning_failover_off_during_an_outage_still_flushes(world):
    """A push made while a server is down goes to its failover only. A
    reload that turns failover off before the server comes back must not
    let it serve the value it held from before the push: it was marked
    down under failover, so it is still emptied before it serves again."""
    victim = world.pool[2]
    with sidecars(world, n=1) as (oc,):
        with oc.client() as c:
            c.get_multi([f"Note:{i}" for i in range(200, 260)])
        oc.wait_idle()
        k = next(i for i in range(200, 260) if world.holder("Note", i) is victim)
        old = world.json("fo_notes", k)
        with oc.client() as c:
            assert c.get(f"Note:{k}") == old
            victim.kill(signal.SIGSTOP)
            try:
                wait_state([oc], victim, "down", timeout=10,
                           poke=lambda: c.get(f"Note:{k}"))
                world.pg.execute("UPDATE fo_notes SET body = 'pushed while down' "
                                 "WHERE id = %s", (k,))
                new = world.json("fo_notes", k)
                assert set_cmd(c, f"Note:{k}", new) == b"STORED"
                assert c.get(f"Note:{k}") == new
                with open(oc.config_path) as f:
                    text = f.read()
                assert harness.reload(oc, harness.edit(text, "memcached", "failover", "off"))
            finally:
                victim.kill(signal.SIGCONT)
            wait_state([oc], victim, "up", timeout=10, poke=lambda: c.get(f"Note:{k}"))
            assert c.get(f"Note:{k}") == new
        assert all(data != old for _, _, data in raw_items([victim], cache_key("Note", k)))


def test_failover_copy_does_not_outlive_a_write_after_a_reload_shortens_failover_ttl(world):
    """A push made while a server is down lives failover_ttl in the gutter.
    A reload that shortens failover_ttl during the outage must not shorten
    the time after the server's return in which writes also delete that
    copy: else a write made then leaves the older gutter copy, served as
    soon as the server flaps."""
    victim = world.pool[0]
    with sidecars(world, n=1, gutter=True, failover_ttl="30s") as (oc,):
        with oc.client() as c:
            c.get_multi([f"Note:{i}" for i in range(160, 200)])
        oc.wait_idle()
        k = next(i for i in range(160, 200) if world.holder("Note", i) is victim)
        key = f"Note:{k}"

        def push(c, body):
            world.pg.execute("UPDATE fo_notes SET body = %s WHERE id = %s", (body, k))
            value = world.json("fo_notes", k)
            assert set_cmd(c, key, value) == b"STORED"
            return value

        with oc.client() as c:
            victim.kill(signal.SIGKILL)
            wait_state([oc], victim, "down", timeout=10, poke=lambda: c.get(key))
            first = push(c, "pushed while down")
            oc.wait_idle()   # its check done: stored with the failover_ttl of now
            held = raw_items(world.pool[1:] + [world.gutter], cache_key("Note", k))
            assert [(a, data) for a, _, data in held] == [(world.gutter.address, first)]
            with open(oc.config_path) as f:
                text = f.read()
            assert harness.reload(oc, harness.edit(text, "memcached", "failover_ttl", "1s"))
            victim.start()
            wait_state([oc], victim, "up", timeout=10, poke=lambda: c.get(key))
            time.sleep(3)   # past the new failover_ttl (+1 s) since its return
            second = push(c, "pushed after the return")
            assert second != first and c.get(key) == second
            oc.wait_idle()
            victim.kill(signal.SIGKILL)
            wait_state([oc], victim, "down", timeout=10, poke=lambda: c.get(key))
            assert c.get(key) == second


def test_failover_copy_does_not_outlive_a_write_when_the_failover_flaps(world):
    """Without a gutter, a key of a server that is down goes to the next
    server of its chain: B, or C while B is down too. A push made while
    both are down lives on C; B comes back (flushed) and takes the key's
    next push. When B fails again the key goes back to C: the older copy
    there must not be served over the later push."""
    a = world.pool[0]
    with sidecars(world, n=1, failover_ttl="30s") as (oc,):
        ids = range(260, 300)
        with oc.client() as c:
            c.get_multi([f"Note:{i}" for i in ids])
        oc.wait_idle()
        on_a = [i for i in ids if world.holder("Note", i) is a]
        with oc.client() as c:
            a.kill(signal.SIGKILL)
            wait_state([oc], a, "down", timeout=10, poke=lambda: c.get(f"Note:{on_a[0]}"))
            c.get_multi([f"Note:{i}" for i in on_a])   # copies on their failover
            oc.wait_idle()
            where = {i: [addr for addr, _, _ in raw_items(world.pool[1:], cache_key("Note", i))]
                     for i in on_a}
            k = next(i for i in on_a if len(where[i]) == 1)
            b = next(m for m in world.pool if m.address == where[k][0])
            key = f"Note:{k}"

            def push(body):
                world.pg.execute("UPDATE fo_notes SET body = %s WHERE id = %s", (body, k))
                value = world.json("fo_notes", k)
                assert set_cmd(c, key, value) == b"STORED"
                oc.wait_idle()   # its check done
                return value

            b.kill(signal.SIGKILL)
            wait_state([oc], b, "down", timeout=10, poke=lambda: c.get(key))
            first = push("pushed while both were down")
            c_srv = [m for m in world.pool[1:] if m is not b][0]
            assert [d for _, _, d in raw_items([c_srv], cache_key("Note", k))] == [first]
            b.start()
            wait_state([oc], b, "up", timeout=10, poke=lambda: c.get(key))
            second = push("pushed after the failover came back")
            assert second != first and c.get(key) == second
            b.kill(signal.SIGKILL)
            wait_state([oc], b, "down", timeout=10, poke=lambda: c.get(key))
            assert c.get(key) == second


# ------------------------------------------------------------------ a thaw's old backlog


def test_old_backlog_of_a_thawed_server_runs_before_its_flush(world):
    """Tombstones sent to a frozen server (memcached's default 4 threads)
    on the sidecar's connections before it is marked down fail and stay in
    its sockets; during the outage the app saves those rows again (pushes:
    to the gutter). The server thaws while the sidecar's probe is under
    way. memcached orders nothing between connections: its probe's
    `flush_all` could run before the old connections' commands, and an old
    tombstone then hides the later push (a read answers "absent" while the
    row exists). The sidecar flushes only once memcached has closed its old
    connections, after running what they held. A few rounds: which thread
    runs first after SIGCONT is up to the scheduler."""
    victim = harness.Memcached(threads=4).start()
    gutter = harness.Memcached().start()
    per_conn, limit = 40, 6
    ids = [r[0] for r in world.pg.execute("SELECT id FROM fo_notes ORDER BY id LIMIT %s",
                                          (per_conn * limit,))]
    assert len(ids) == per_conn * limit
    rows = {i: world.json("fo_notes", i) for i in ids}
    try:
        conf = world.config(servers=victim.address, failure_limit=str(limit),
                            objcached={"log_level": "debug"})
        conf["memcached"]["gutter"] = gutter.address
        with harness.Objcached(conf, binary=world.binary) as oc:

            def tombstones(batch):
                """One client per key, all at once: one connection of the
                sidecar to the frozen server holds them all, and fails."""
                clients = [oc.client(timeout=10) for _ in batch]
                for c, i in zip(clients, batch):
                    c.sendline(f"delete Note:{i}")
                for c in clients:
                    assert c.readline().startswith(b"SERVER_ERROR"), "reached the server"
                    c.close()

            for rnd in range(4):
                victim.kill(signal.SIGSTOP)
                try:
                    for k in range(limit):   # made before the freeze, then while frozen
                        tombstones(ids[k * per_conn:(k + 1) * per_conn])
                    wait_state([oc], victim, "down", timeout=10)
                    with oc.client() as c:
                        for i in ids:
                            assert set_cmd(c, f"Note:{i}", rows[i]) == b"STORED"
                    # thaw with a probe under way: its connection is queued
                    # behind the old ones
                    probes = oc.log().count("event=memcached_probing")
                    harness.wait_until(
                        lambda: oc.log().count("event=memcached_probing") > probes,
                        timeout=10, interval=0.005, what="a probe")
                finally:
                    victim.kill(signal.SIGCONT)
                wait_state([oc], victim, "up", timeout=10)
                with oc.client() as c:
                    absent = [i for i in ids if c.get(f"Note:{i}") != rows[i]]
                assert absent == [], f"round {rnd}: old tombstones ran after the flush: {absent}"
            assert oc.stats()["mc_returns"] == 4
    finally:
        victim.cleanup()
        gutter.cleanup()


@contextlib.contextmanager
def memcached_behind_a_proxy(world, failure_limit):
    """One memcached behind a proxy (which can hold an old connection's
    replies and end, as a frozen server holds them) and a gutter, and a
    sidecar over them. Yields (oc, m, proxy)."""
    m = harness.Memcached().start()
    gutter = harness.Memcached().start()
    proxy = faultproxy.FaultProxy(m.port, name="to-m")
    try:
        conf = world.config(servers=proxy.address, failure_limit=failure_limit,
                            objcached={"log_level": "debug"})
        conf["memcached"]["gutter"] = gutter.address
        # No health probe: one that lands in the milliseconds of a test's
        # memcached restart (killed, not started yet) is a failure more.
        with harness.Objcached(conf, binary=world.binary,
                               env={"OBJCACHED_FAULT_NO_HEALTH_PROBE": "1"}) as oc:
            # The consumer reads memcached's marker of the database once
            # connected (operations.md, "The database went back in time"):
            # done before the test counts the server's failures, or a read
            # in a test's window (memcached killed, not started yet) is one
            # failure more (seen under load: the server went down early).
            harness.wait_until(lambda: "event=db_identity" in oc.log(), timeout=30,
                               what="the consumer's check of the database")
            yield oc, m, proxy
    finally:
        proxy.close()
        m.cleanup()
        gutter.cleanup()


def hold_a_failed_tombstone(c, proxy):
    """A tombstone of Note:7 fails (failure_limit 1: the server goes down)
    with its reply and its connection's end held by the proxy."""
    proxy.hold_replies_after(b" oc:Note:7 ", keep_open=True)
    c.sendline("delete Note:7")
    assert c.readline().startswith(b"SERVER_ERROR")


def test_probe_does_not_flush_before_an_old_connection_ends(world):
    """The flush waits for the old connections at most io_timeout: one the
    server has not ended yet (its replies and its end held by a proxy, as a
    server that has not run it yet looks) keeps the server out of service,
    probe after probe; once it ends, the next probe flushes and it serves."""
    with memcached_behind_a_proxy(world, "1") as (oc, m, proxy):
        with oc.client() as c:
            assert c.get("Note:7") == world.json("fo_notes", 7)
            hold_a_failed_tombstone(c, proxy)
        wait_state([oc], proxy, "down", timeout=10)
        waited = 'reason="probe: old connections still held by the server"'
        harness.wait_until(lambda: oc.log().count(waited) >= 2, timeout=10,
                           what="two probes that waited in vain")
        assert "event=memcached_probe_waits server=" + proxy.address in oc.log()
        assert state(oc, proxy) != "up" and oc.stats()["mc_returns"] == 0
        assert m.stats()["cmd_flush"] == 0
        proxy.release()
        wait_state([oc], proxy, "up", timeout=10)
        assert m.stats()["cmd_flush"] == 1
        with oc.client() as c:   # the tombstone ran before the flush
            assert c.get("Note:7") == world.json("fo_notes", 7)


def test_a_drain_the_server_never_ends_is_given_up(world):
    """An old connection whose end never comes back (a NAT that forgot it
    while the server was frozen; here the proxy holds it for good) does not
    keep the server out of service for ever: after a few probes that found
    the server answering and waited for it in vain, it is given up (a
    warning), and the next such probe flushes and brings the server back."""
    with memcached_behind_a_proxy(world, "1") as (oc, m, proxy):
        with oc.client() as c:
            assert c.get("Note:7") == world.json("fo_notes", 7)
            hold_a_failed_tombstone(c, proxy)
        wait_state([oc], proxy, "down", timeout=10)
        wait_state([oc], proxy, "up", timeout=20)
        waited = 'reason="probe: old connections still held by the server"'
        assert oc.log().count(waited) == 4
        assert ("event=memcached_drain_dropped server=" + proxy.address + " drains=1 "
                'reason="not ended by the server in 5 probes it answered"') in oc.log()
        assert m.stats()["cmd_flush"] == 1 and oc.stats()["mc_returns"] == 1


def test_a_drain_that_never_learned_its_process_is_waited_for(world):
    """A connection made after a restart whose `stats` was never answered
    (the new process froze at once) reached the new process, not the one
    the sidecar knew: the probe that learns the new process must still wait
    for it (its commands are in that process's hands), not take it for one
    of the old process, whose backlog died with it."""
    with memcached_behind_a_proxy(world, "2") as (oc, m, proxy):
        with oc.client() as c:
            assert c.get("Note:7") == world.json("fo_notes", 7)
            errors = oc.log().count("event=memcached_error")
            m.kill(signal.SIGKILL)   # a restart: failure 1, its drain ends at once
            harness.wait_until(lambda: oc.log().count("event=memcached_error") > errors,
                               timeout=10, what="the old connection's end")
            m.start()
            # the new connection's `stats` and delete are held alike: failure 2
            hold_a_failed_tombstone(c, proxy)
        wait_state([oc], proxy, "down", timeout=10)
        waited = 'reason="probe: old connections still held by the server"'
        harness.wait_until(lambda: waited in oc.log(), timeout=10,
                           what="a probe that waited for the held connection")
        assert m.stats()["cmd_flush"] == 0
        proxy.release()
        wait_state([oc], proxy, "up", timeout=10)
        assert m.stats()["cmd_flush"] == 1

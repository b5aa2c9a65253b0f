"""The consistency sampler (sidecar/oc_sampler.c, docs/consistency.md),
black-box against real PostgreSQL and memcached:

- planted staleness: values written straight into memcached behind
  objcached's back (an old row, another id's row, garbage bytes, an object
  for a deleted row) are found by the shadow reads of hits, each counted
  once as inconsistent and logged with the key and both values;
- a correct system under a heavy concurrent write load on a few hot keys,
  with every invalidation and every hit sampled, reports zero inconsistent
  at every window: no false positives from a compare that races a commit;
- trigger mode and the WAL mode both feed it invalidations;
- its figures reach `stats` and /metrics, it stays idle at rate 0, and a
  reload changes its rate.
"""

import random
import re
import threading
import time
import urllib.request

import pytest

import consistency as oc_c
import harness
from test_reload import edit, reload

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO items SELECT i, 'item ' || i, i FROM generate_series(1, 400) AS i;
CREATE TABLE vers (id bigint PRIMARY KEY, body text NOT NULL, version bigint NOT NULL);
INSERT INTO vers SELECT i, 'v ' || i, 1 FROM generate_series(1, 100) AS i;
"""

MODELS = {
    "Item": {"table": "items"},
    "Ver": {"table": "vers", "version_column": "version"},
}


@pytest.fixture(scope="module")
def template(pg, objcached_bin):
    name = "sampler_template"
    oc_c.create_template(pg, name, SCHEMA, MODELS, objcached_bin)
    yield name
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")


@pytest.fixture
def db(pg, template):
    d = oc_c.clone_db(pg, template, prefix="smp")
    yield d
    oc_c.drop_db(pg, d)


@pytest.fixture(scope="module")
def wal_template(pg, objcached_bin):
    """The same tables, attached for the WAL source (test_wal.py's way)."""
    name = "sampler_wal_template"
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")
    pg.execute(f'CREATE DATABASE "{name}"', dbname="postgres")
    pg.execute(SCHEMA, dbname=name)
    d = oc_c.HookDb(pg, name)
    try:
        config = oc_c.sidecar_config("127.0.0.1:1", d.conninfo, MODELS,
                                     {"postgresql": {"wal": "on", "wal_slot": name}})
        p = oc_c.run_install_hook(objcached_bin, config)
        assert p.returncode == 0, p.stdout + p.stderr
        d.q(f"SELECT pg_drop_replication_slot('{name}')")
        d.q("DELETE FROM objcached.outbox")
    finally:
        d.close()
    yield name
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")


@pytest.fixture
def wal_db(pg, wal_template):
    d = oc_c.clone_db(pg, wal_template, prefix="smpw")
    d.q("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (d.name,))
    yield d
    oc_c.drop_db(pg, d)


def start(fleet, mc_pool, db, rate="1", windows="1s, 3s", extra=None, **kw):
    overrides = {"objcached": {"sample_rate": rate, "sample_windows": windows,
                               "sample_max_qps": "20", "sample_recheck": "500ms",
                               "metrics_listen": f"127.0.0.1:{harness.free_port()}"},
                 "postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms"}}
    for section, keys in (extra or {}).items():
        overrides.setdefault(section, {}).update(keys)
    return fleet.start(oc_c.sidecar_config(mc_pool, db.conninfo, MODELS, overrides), **kw)


def row(db, table, ident):
    rows = db.q(f"SELECT row_to_json(t)::text FROM {table} t WHERE t.id = %s", (ident,))
    return rows[0][0].encode() if rows else None


def sampler(oc):
    """{(model, window): {'checks': n, 'inconsistent': n, 'empty': n}}."""
    out = {}
    for k, v in oc.stats().items():
        m = re.fullmatch(r"sampler:([^:]+):([^:]+):(\w+)", k)
        if m:
            out.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = int(v)
    return out


def total(oc, field, window=None, model=None):
    return sum(v[field] for (m, w), v in sampler(oc).items()
               if (window is None or w == window) and (model is None or m == model))


def mc_set_raw(mc_pool, key, flags, data, exptime=3600):
    """Write an item into every server (the one ketama picks is among them)."""
    for m in mc_pool:
        with m.client(timeout=5) as c:
            c.send(b"set %s %d %d %d\r\n%s\r\n" % (key.encode(), flags, exptime, len(data),
                                                     data))
            assert c.readline() == b"STORED"


OBJECT = (oc_c.ENTRY_MAGIC << 16) | (1 << 8) | 1
MISSING = (oc_c.ENTRY_MAGIC << 16) | (1 << 8) | 2


def test_planted_staleness_found_by_shadow_reads(fleet, mc_pool, db):
    oc = start(fleet, mc_pool, db, rate="1")
    old7 = row(db, "items", 7)
    db.q("UPDATE items SET name = 'renamed', n = n + 1 WHERE id = 7")
    db.q("DELETE FROM items WHERE id = 9")
    # Behind objcached's back, after the invalidations ran:
    harness.wait_until(lambda: db.outbox_rows() == 0, timeout=10, what="the outbox to drain")
    time.sleep(0.5)
    plants = {
        7: old7,                            # an old row
        8: row(db, "items", 20),            # another id's row
        10: b"\x00\xffgarbage{",            # garbage bytes
        9: b'{"id": 9, "name": "item 9", "n": 9}',  # an object for a deleted row
    }
    gen = db.generation("Item")
    for ident, data in plants.items():
        mc_set_raw(mc_pool, oc_c.cache_key("Item", ident, gen), OBJECT, data)
    # an "absent" entry for a row that exists, and a correct entry
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 11, gen), MISSING, b"")
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 12, gen), OBJECT, row(db, "items", 12))
    with oc.client() as c:
        values, end = c.get_multi(["Item:7", "Item:8", "Item:10", "Item:9", "Item:11",
                                   "Item:12"])
        assert end == b"END"
    harness.wait_until(lambda: total(oc, "inconsistent", "hit") == 5, timeout=15,
                       what="five planted entries found inconsistent")
    time.sleep(1.5)  # nothing more is counted: each hit once
    s = sampler(oc)
    assert s[("Item", "hit")]["inconsistent"] == 5, s
    assert s[("Item", "hit")]["checks"] == 6, s
    log = oc.log()
    lines = [ln for ln in log.splitlines()
             if "event=sampler_inconsistent" in ln and "window=hit" in ln]
    assert len(lines) == 5, lines
    k = {i: oc_c.cache_key("Item", i, gen) for i in (7, 9, 11)}
    assert any(f'key="{k[7]}"' in ln and "renamed" in ln and "item 7" in ln
               for ln in lines), lines
    assert any(f'key="{k[11]}"' in ln and "(absent)" in ln for ln in lines), lines
    assert any(f'key="{k[9]}"' in ln and "(no row)" in ln for ln in lines), lines
    # /metrics, with model and window labels
    maddr = re.search(r"^metrics_listen\s*=\s*(\S+)", oc.config_text, re.M).group(1)
    metrics = urllib.request.urlopen(f"http://{maddr}/metrics", timeout=5).read().decode()
    assert 'objcached_sampler_inconsistent_total{model="Item",window="hit"} 5' in metrics
    assert 'objcached_sampler_checks_total{model="Item",window="1s"}' in metrics
    assert 'objcached_sampler_checks_total{model="Ver",window="3s"} 0' in metrics


def test_invalidation_windows_and_stale_planted_after(fleet, mc_pool, db):
    """An invalidated key is checked at each window; a stale value planted
    after the invalidation is caught at the later window."""
    oc = start(fleet, mc_pool, db, rate="1", windows="1s, 4s")
    db.q("UPDATE items SET n = n + 1 WHERE id BETWEEN 1 AND 50")
    harness.wait_until(lambda: total(oc, "checks", "1s") >= 50, timeout=15,
                       what="the 1 s checks")
    assert total(oc, "inconsistent") == 0
    assert total(oc, "empty", "1s") == 50   # invalidated, not read again: empty
    # plant an old value into key 3 before its 4 s check
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 3, db.generation("Item")), OBJECT, b'{"id":3,"name":"item 3","n":3}')
    harness.wait_until(lambda: total(oc, "checks", "4s") >= 50, timeout=20,
                       what="the 4 s checks")
    time.sleep(1.5)
    assert total(oc, "inconsistent", "4s") == 1, sampler(oc)
    assert total(oc, "inconsistent", "1s") == 0


def test_idle_at_rate_zero_and_reload_turns_it_on(fleet, mc_pool, db, tmp_path):
    oc = start(fleet, mc_pool, db, rate="0")
    db.q("UPDATE items SET n = n + 1 WHERE id BETWEEN 1 AND 20")
    with oc.client() as c:
        for _ in range(3):
            c.get_multi([f"Item:{i}" for i in range(1, 40)])
    time.sleep(1.5)
    st = oc.stats()
    assert st["sampler_samples"] == 0 and st["sampler_pg_queries"] == 0
    assert total(oc, "checks") == 0
    # reload with a rate: it samples
    assert reload(oc, edit(oc.config_text, "objcached", "sample_rate", "100%"))
    with oc.client() as c:
        for _ in range(2):
            c.get_multi([f"Item:{i}" for i in range(1, 40)])
    # generous: under the sanitizers on a loaded machine the sampler's
    # connection and its ticks take a while (10 s was seen to be too short)
    harness.wait_until(lambda: total(oc, "checks", "hit") >= 39, timeout=45,
                       what=lambda: f"hits checked after the reload: {total(oc, 'checks', 'hit')} "
                       f"{ {k: v for k, v in oc.stats().items() if k.startswith('sampler')} }")
    assert total(oc, "inconsistent") == 0


def test_queue_bound_sheds_and_reload_raises_it(fleet, mc_pool, db):
    """sample_queue bounds the samples waiting (each sampled invalidation
    waits there once per window): past it they are dropped and counted, the
    ones taken are still checked; a reload raises it for the next writes."""
    oc = start(fleet, mc_pool, db, rate="1", windows="1s, 3s",
               extra={"objcached": {"sample_queue": "256"}})
    db.q("UPDATE items SET n = n + 1")  # 400 invalidations at once, 2 windows each
    harness.wait_until(lambda: oc.stats()["sampler_dropped"] >= 400 - 128, timeout=15,
                       what=lambda: f"samples dropped: {oc.stats()}")
    st = oc.stats()
    assert 0 < st["sampler_samples"] <= 128, st
    taken = st["sampler_samples"]
    harness.wait_until(lambda: total(oc, "checks", "3s") >= taken, timeout=20,
                       what=lambda: f"the 3 s checks: {sampler(oc)}")
    assert total(oc, "checks", "3s") == taken
    dropped = oc.stats()["sampler_dropped"]
    assert reload(oc, edit(oc.config_text, "objcached", "sample_queue", "4096"))
    db.q("UPDATE items SET n = n + 1")
    harness.wait_until(lambda: total(oc, "checks", "3s") >= taken + 400, timeout=20,
                       what=lambda: f"the 3 s checks after the reload: {sampler(oc)}")
    assert oc.stats()["sampler_dropped"] == dropped
    assert total(oc, "inconsistent") == 0, sampler(oc)


@pytest.mark.parametrize("mode", ["trigger", "wal"])
def test_no_false_positives_under_heavy_concurrent_writes(mc_pool, request, mode):
    """Every invalidation and every hit sampled, while SQL writers and app
    pushes race on 20 hot keys (and a version-column model): zero
    inconsistent at every window, and a real number of checks."""
    extra = None
    if mode == "wal":
        db = request.getfixturevalue("wal_db")
        extra = {"postgresql": {"wal": "on", "wal_slot": db.name, "wal_heartbeat": "100ms"}}
    else:
        db = request.getfixturevalue("db")
    fleet = request.getfixturevalue("fleet")  # stopped before the database goes
    a = start(fleet, mc_pool, db, rate="1", windows="1s, 3s", extra=extra)
    b = start(fleet, mc_pool, db, rate="1", windows="1s, 3s", extra=extra)
    stop = threading.Event()
    errors = []

    def sql_writer(seed):
        rng = random.Random(seed)
        conn = db.connect()
        try:
            while not stop.is_set():
                i = rng.randint(1, 20)
                if rng.random() < 0.5:
                    conn.cursor().execute("UPDATE items SET n = n + 1, name = %s WHERE id = %s",
                                          (f"w{rng.random():.5f}", i))
                else:
                    conn.cursor().execute("UPDATE vers SET version = version + 1, body = %s "
                                          "WHERE id = %s", (f"b{rng.random():.5f}", i))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    def app_writer(seed):
        """Commit, then push the row as read back (SQL and pushes race)."""
        rng = random.Random(seed)
        conn = db.connect()
        clients = [a.client(timeout=5), b.client(timeout=5)]
        try:
            while not stop.is_set():
                i = rng.randint(1, 20)
                cur = conn.cursor()
                cur.execute("UPDATE items SET n = n + 1 WHERE id = %s "
                            "RETURNING row_to_json(items)::text", (i,))
                js = cur.fetchone()[0].encode()
                c = rng.choice(clients)
                c.send(b"set Item:%d 0 0 %d\r\n%s\r\n" % (i, len(js), js))
                c.readline()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            for c in clients:
                c.close()

    def reader(seed):
        rng = random.Random(seed)
        clients = [a.client(timeout=10), b.client(timeout=10)]
        try:
            while not stop.is_set():
                keys = [f"{rng.choice(['Item', 'Ver'])}:{rng.randint(1, 25)}"
                        for _ in range(10)]
                rng.choice(clients).get_multi(keys)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            for c in clients:
                c.close()

    threads = [threading.Thread(target=f, args=(s,), daemon=True)
               for f, s in ((sql_writer, 1), (sql_writer, 2), (app_writer, 3), (reader, 4),
                            (reader, 5))]
    for t in threads:
        t.start()
    time.sleep(12)
    stop.set()
    for t in threads:
        t.join(20)
    assert not errors, errors
    time.sleep(5)  # the 3 s window and its rechecks
    for oc in (a, b):
        s = sampler(oc)
        st = oc.stats()
        print(mode, oc, {f"{m}/{w}": v for (m, w), v in s.items()},
              {k: st[k] for k in ("sampler_samples", "sampler_raced", "sampler_errors",
                                  "sampler_dropped", "sampler_pg_queries")})
        assert total(oc, "inconsistent") == 0, s
        assert total(oc, "checks", "hit") > 100, s
        assert total(oc, "checks", "3s") > 100, s
        assert st["sampler_errors"] == 0


def test_suspect_rechecks_are_not_lost_when_the_queue_is_full(fleet, mc_pool, db, pg):
    """Under a load that keeps sample_queue full (the soak's
    regime: millions dropped), a stale entry that the sampler does check
    must still be counted. A suspect's recheck goes back into the same queue
    the offers fill; if it is refused, the suspect vanishes (only
    sampler_dropped moves) while every agreeing first read is counted: the
    sampler reports checks and 0 inconsistent for a key it saw was wrong."""
    import faultproxy
    proxy = faultproxy.FaultProxy(pg.port, name="pg")
    try:
        conninfo = f"host=127.0.0.1 port={proxy.port} dbname={db.name} user=postgres"
        overrides = {"objcached": {"sample_rate": "1", "sample_windows": "1s",
                                   "sample_max_qps": "20", "sample_recheck": "500ms",
                                   "sample_queue": "256"},
                     "postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms"}}
        oc = fleet.start(oc_c.sidecar_config(mc_pool, conninfo, MODELS, overrides))
        hot = [f"Item:{i}" for i in range(100, 300)]
        with oc.client(timeout=10) as c:
            assert c.get_multi(hot)[1] == b"END"   # cached
        gen = db.generation("Item")
        mc_set_raw(mc_pool, oc_c.cache_key("Item", 7, gen), OBJECT,
                   b'{"id":7,"name":"planted old","n":-1}')
        proxy.set_mode("delay", delay=0.03)  # a slower database: each batch takes longer
        stop = threading.Event()
        errors = []

        def reader():
            try:
                with oc.client(timeout=10) as c:
                    while not stop.is_set():
                        c.get_multi(["Item:7"] + hot)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(8)
        s = sampler(oc)
        st = oc.stats()
        stop.set()
        for t in threads:
            t.join(20)
        print(s.get(("Item", "hit")), {k: st[k] for k in st if k.startswith("sampler_")})
        assert not errors, errors
        assert st["sampler_dropped"] > 0, st        # the queue was full
        assert s[("Item", "hit")]["checks"] > 500, s  # and keys were checked
        # Item:7 was served wrong the whole time, and each check of it is a
        # suspect: some of them must be proven.
        assert s[("Item", "hit")]["inconsistent"] >= 1, (s, st)
    finally:
        proxy.close()

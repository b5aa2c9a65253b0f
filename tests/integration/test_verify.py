"""`objcached --verify MODEL [--sample N] -c FILE` (sidecar/oc_verify.c):
planted staleness found with exact counts, a live system under concurrent
writes reported clean, nothing ever written to memcached, and bad input
(no such model, sample sizes of zero, a billion or words, an unreachable
pool or database) refused with a clear message and the documented exit
status."""

import contextlib
import os
import random
import re
import subprocess
import tempfile
import threading
import time

import pytest

import consistency as oc_c
import harness

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO items SELECT i, 'item ' || i, i FROM generate_series(1, 400) AS i;
CREATE TABLE docs (id uuid PRIMARY KEY, title text NOT NULL);
INSERT INTO docs SELECT gen_random_uuid(), 'doc ' || i FROM generate_series(1, 50) AS i;
CREATE VIEW item_view AS SELECT id, name FROM items;
"""

MODELS = {
    "Item": {"table": "items"},
    "Doc": {"table": "docs", "key_type": "uuid"},
}

OBJECT = (oc_c.ENTRY_MAGIC << 16) | (1 << 8) | 1
MISSING = (oc_c.ENTRY_MAGIC << 16) | (1 << 8) | 2


template, db = oc_c.template_fixtures("verify_template", SCHEMA, MODELS, "vfy")


def config(mc_pool, db, models=None, **sections):
    overrides = {"postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms"}}
    for section, keys in sections.items():
        overrides.setdefault(section, {}).update(keys)
    return oc_c.sidecar_config(mc_pool, db.conninfo, models or MODELS, overrides)


@contextlib.contextmanager
def verify_running(binary, conf, *args):
    """--verify started with conf (a dict or INI text) written to a
    temporary file; yields the Popen (text pipes), killed if still running
    when the block ends."""
    with tempfile.TemporaryDirectory(prefix="oc-vfy-") as d:
        path = os.path.join(d, "objcached.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(conf if isinstance(conf, str) else harness.render_ini(conf))
        p = subprocess.Popen([binary, "-c", path, *args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            yield p
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()


def counts_of(out):
    """The report's `category N` lines."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^([a-z-]+) (\d+)$", out, re.M)}


def verify(binary, conf, *args, timeout=120):
    """Run --verify; returns (exit status, stdout, stderr, {category: n})."""
    with verify_running(binary, conf, *args) as p:
        out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err, counts_of(out)


def verify_clean(binary, conf, model, fresh):
    """--verify model --sample 500 reports `fresh` fresh entries, none stale
    and result ok; its counts."""
    rc, out, err, n = verify(binary, conf, "--verify", model, "--sample", "500")
    assert rc == 0, (out, err)
    assert n["fresh"] == fresh and n["stale"] == 0 and n["absent-but-cached"] == 0, out
    assert "result: ok" in out
    return n


def mc_totals(mc_pool):
    """What memcached was asked to write, and holds, over the pool."""
    out = {"cmd_set": 0, "cmd_touch": 0, "total_items": 0, "curr_items": 0, "delete_hits": 0,
           "delete_misses": 0}
    for m in mc_pool:
        st = m.stats()
        for k in out:
            out[k] += int(st.get(k, 0))
    return out


def mc_set_raw(mc_pool, key, flags, data):
    for m in mc_pool:
        with m.client(timeout=5) as c:
            c.send(b"set %s %d 3600 %d\r\n%s\r\n" % (key.encode(), flags, len(data), data))
            assert c.readline() == b"STORED"


def row(db, ident):
    return db.one("SELECT row_to_json(t)::text FROM items t WHERE t.id = %s", (ident,)).encode()


def test_planted_staleness_exact_counts(fleet, mc_pool, db, objcached_bin):
    conf = config(mc_pool, db)
    oc = fleet.start(conf)
    old7 = row(db, 7)
    db.q("UPDATE items SET name = 'renamed' WHERE id = 7")
    db.q("DELETE FROM items WHERE id = 9")
    oc_c.wait_drained(db, [oc])   # the invalidations ran: what follows stays
    with oc.client() as c:
        assert c.get_multi([f"Item:{i}" for i in range(1, 101)])[1] == b"END"
    oc.wait_idle()
    # Stopped, so that the read-only check below sees --verify alone: the
    # sidecar's consumer moves the database's marker forward about a second
    # after its last claim (one memcached set: operations.md, "The database
    # went back in time").
    oc.stop()
    gen = db.generation("Item")
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 7, gen), OBJECT, old7)              # old row
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 8, gen), OBJECT, row(db, 20))        # other id
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 10, gen), OBJECT, b"\x00\xff{garbage")
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 11, gen), MISSING, b"")             # absent
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 9, gen), OBJECT,                     # deleted
               b'{"id":9,"name":"item 9","n":9}')
    before = mc_totals(mc_pool)
    rc, out, err, n = verify(objcached_bin, conf, "--verify", "Item", "--sample", "1000")
    print(out, err)
    assert rc == 1, (out, err)
    assert n["stale"] == 4 and n["absent-but-cached"] == 1, out
    assert n["fresh"] == 95 and n["missing"] == 399 - 95 - 4, out
    assert n["changing"] == 0 and n["errors"] == 0, out
    assert n["absent"] >= 99, out   # a tenth of the sample, ids past the end
    assert "result: STALE" in out
    assert re.search(r"^stale oc:Item~\d+:7 cached=.*item 7.* database=.*renamed", out, re.M)
    assert re.search(r"^absent-but-cached oc:Item~\d+:9 .*database=\(no row\)", out, re.M)
    assert re.search(r"^stale oc:Item~\d+:11 cached=\(absent\)", out, re.M)
    after = mc_totals(mc_pool)
    assert after == before, (before, after)  # read only: nothing set, touched, deleted


def test_clean_system_and_uuid_keys(fleet, mc_pool, db, objcached_bin):
    conf = config(mc_pool, db)
    oc = fleet.start(conf)
    ids = [r[0] for r in db.q("SELECT id::text FROM docs")]
    with oc.client() as c:
        assert c.get_multi([f"Doc:{i}" for i in ids[:30]] +
                           [f"Item:{i}" for i in range(1, 50)])[1] == b"END"
    oc.wait_idle()
    for model, fresh in (("Doc", 30), ("Item", 49)):
        verify_clean(objcached_bin, conf, model, fresh)


def test_no_false_positives_under_concurrent_writes(fleet, mc_pool, db, objcached_bin):
    """SQL writers and pushes on every id while verify runs, five times: the
    rows it reads change under it, and it reports nothing stale."""
    conf = config(mc_pool, db)
    a, b = fleet.start(conf), fleet.start(conf)
    stop = threading.Event()
    errors = []

    def writer(seed):
        rng = random.Random(seed)
        conn = db.connect()
        cs = [a.client(timeout=5), b.client(timeout=5)]
        try:
            while not stop.is_set():
                i = rng.randint(1, 400)
                cur = conn.cursor()
                cur.execute("UPDATE items SET n = n + 1 WHERE id = %s "
                            "RETURNING row_to_json(items)::text", (i,))
                got = cur.fetchone()
                if got and rng.random() < 0.5:
                    js = got[0].encode()
                    c = rng.choice(cs)
                    c.send(b"set Item:%d 0 0 %d\r\n%s\r\n" % (i, len(js), js))
                    c.readline()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            for c in cs:
                c.close()

    def reader(seed):
        rng = random.Random(seed)
        cs = [a.client(timeout=10), b.client(timeout=10)]
        try:
            while not stop.is_set():
                rng.choice(cs).get_multi([f"Item:{rng.randint(1, 420)}" for _ in range(20)])
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            for c in cs:
                c.close()

    threads = [threading.Thread(target=writer, args=(s,), daemon=True) for s in (1, 2)]
    threads += [threading.Thread(target=reader, args=(s,), daemon=True) for s in (3, 4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        for _ in range(5):
            rc, out, err, n = verify(objcached_bin, conf, "--verify", "Item", "--sample", "400")
            assert rc == 0, (out, err)
            assert n["stale"] == 0 and n["absent-but-cached"] == 0 and n["errors"] == 0, out
            assert n["fresh"] > 50, out
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert not errors, errors


@pytest.mark.parametrize("args,needle", [
    (["--verify", "Nope"], "no model 'Nope'"),
    (["--verify", "item"], "no model 'item'"),
    (["--verify", "Item\x01;DROP"], "no model 'Item?;DROP'"),
    (["--verify", ""], "no model ''"),
    (["--verify", "Item", "--sample", "0"], "at least 1"),
    (["--verify", "Item", "--sample", "1000000000"], "too large"),
    (["--verify", "Item", "--sample", "99999999999999999999999"], "too large"),
    (["--verify", "Item", "--sample", "-5"], "whole number"),
    (["--verify", "Item", "--sample", "1e3"], "whole number"),
    (["--verify", "Item", "--sample", " 10"], "whole number"),
    (["--verify", "Item", "--sample", ""], "needs a number"),
    (["--sample", "10"], "--sample goes with --verify"),
    (["--verify", "Item", "--pidfile", "/tmp/x"], "--verify goes with"),
])
def test_bad_arguments(mc_pool, db, objcached_bin, args, needle):
    before = mc_totals(mc_pool)
    rc, out, err, _ = verify(objcached_bin, config(mc_pool, db), *args)
    assert rc == 2, (rc, out, err)
    assert needle in err, err
    assert out == ""
    assert mc_totals(mc_pool) == before


def test_unreachable_pool_and_database(pg, mc_pool, db, objcached_bin):
    before = mc_totals(mc_pool)
    port = harness.free_port()
    bad_mc = oc_c.sidecar_config(f"127.0.0.1:{port}", db.conninfo, MODELS)
    rc, out, err, _ = verify(objcached_bin, bad_mc, "--verify", "Item", "--sample", "10")
    assert rc == 3, (rc, out, err)
    assert f"memcached 127.0.0.1:{port}" in err and "refused" in err.lower(), err
    bad_pg = config(mc_pool, db, postgresql={"conninfo": f"host=127.0.0.1 port={port} "
                                                         "dbname=x user=postgres"})
    rc, out, err, _ = verify(objcached_bin, bad_pg, "--verify", "Item")
    assert rc == 3, (rc, out, err)
    assert "cannot connect to PostgreSQL" in err and "password" not in err, err
    # a model whose table went away
    db.q("ALTER TABLE docs RENAME TO docs_gone")
    rc, out, err, _ = verify(objcached_bin, config(mc_pool, db), "--verify", "Doc")
    assert rc == 3 and "no relation public.docs" in err, (rc, out, err)
    # a config that does not load
    rc, out, err, _ = verify(objcached_bin, "[objcached]\nbogus = 1\n", "--verify", "Item")
    assert rc == 2 and "bogus" in err, (rc, out, err)
    assert mc_totals(mc_pool) == before


def test_view_without_xmin(fleet, mc_pool, db, objcached_bin):
    """A model over a view has no xmin: verify (and the sampler) compare the
    row's JSON instead."""
    models = {"IV": {"table": "item_view"}}
    conf = config(mc_pool, db, models=models,
                  objcached={"sample_rate": "1", "sample_windows": "1s"},
                  postgresql={"invalidation_poll": "0", "feed_poll": "0"})
    oc = fleet.start(conf)
    with oc.client() as c:
        for _ in range(2):
            assert c.get_multi([f"IV:{i}" for i in range(1, 21)])[1] == b"END"
    oc.wait_idle()
    rc, out, err, n = verify(objcached_bin, conf, "--verify", "IV", "--sample", "1000")
    assert rc == 0 and n["fresh"] == 20, (out, err)
    harness.wait_until(lambda: oc.stats().get("sampler:IV:hit:checks", 0) >= 20, timeout=15,
                       what="the sampler's checks of the view's hits")
    assert oc.stats()["sampler:IV:hit:inconsistent"] == 0


def test_a_truncate_during_the_run_is_not_stale(fleet, mc_pool, db, objcached_bin):
    """A TRUNCATE committing while --verify runs (after it read the
    model's generation, before it read the rows) bumps the generation: every
    client is then answered from the new generation's keys (empty), while
    the old generation's entries stay in memcached untouched. --verify keeps
    reading the old generation's keys, finds objects for rows that are gone,
    the same items at every recheck, and reports them absent-but-cached
    (exit 1): a false alarm on a correct system."""
    import faultproxy
    pool = mc_pool[:1]  # one server: the proxy's address places keys the same way
    conf = config(pool, db)
    oc = fleet.start(conf)
    with oc.client() as c:
        assert c.get_multi([f"Item:{i}" for i in range(1, 101)])[1] == b"END"
    oc.wait_idle()
    proxy = faultproxy.FaultProxy(pool[0].port, name="mc")
    try:
        vconf = config(proxy.address, db)
        proxy.set_mode("delay", delay=0.5)  # verify's memcached reads take a while
        with verify_running(objcached_bin, vconf, "--verify", "Item", "--sample", "1000") as p:
            time.sleep(0.8)        # it has its generation and ids; reading memcached
            db.q("TRUNCATE items")  # a new generation, committed
            time.sleep(1.5)
            proxy.set_mode("forward")
            out, err = p.communicate(timeout=60)
        print(out, err)
        counts = counts_of(out)
        # nothing a client can be served is wrong: the run must not say STALE
        assert counts.get("absent-but-cached", 0) == 0, out
        assert p.returncode in (0, 3), (p.returncode, out, err)
    finally:
        proxy.close()


def test_rows_with_uncacheable_ids_are_not_absent(mc_pool, db, objcached_bin):
    """Ids that exist but can never be a cache key (a space in a
    text id) are counted under `absent`, which the docs define as "no row";
    the header counts the same ids as "with a row"."""
    db.q("CREATE TABLE tags (id text PRIMARY KEY, label text NOT NULL)")
    db.q("INSERT INTO tags SELECT 'tag ' || i, 'label' FROM generate_series(1, 5) AS i")
    conf = config(mc_pool, db, models={"Tag": {"table": "tags", "key_type": "text"}})
    rc, out, err, n = verify(objcached_bin, conf, "--verify", "Tag", "--sample", "5")
    print(out, err)
    assert rc == 0, (out, err)
    assert "(5 with a row" in out, out
    assert n["absent"] <= 1, out  # only the one random absent id


@pytest.mark.parametrize("typ,key_type,lo,hi", [
    ("bigint", "bigint", -9223372036854775808, 9223372036854775807),
    ("bigint", "bigint", -42, 9223372036854775807),
    ("integer", "integer", -2147483648, 2147483647),
], ids=["int8-both-ends", "int8-top", "int4-both-ends"])
def test_keys_spread_over_the_types_range(mc_pool, db, objcached_bin, typ, key_type, lo, hi):
    """The absent ids were picked with int8 arithmetic: hi - lo overflowed
    for keys spread over the type ("bigint out of range", exit 3; a probe's
    finding), and so did lo - g with both ends taken. Now: ids inside the
    range, past the free end, and each one checked as absent."""
    db.q(f"CREATE TABLE wide (id {typ} PRIMARY KEY, v int NOT NULL)")
    db.q("INSERT INTO wide VALUES (%s, 1), (%s, 2), (0, 3), (7, 4)", (lo, hi))
    conf = config(mc_pool, db, models={"Wide": {"table": "wide", "key_type": key_type}})
    rc, out, err, n = verify(objcached_bin, conf, "--verify", "Wide", "--sample", "20")
    print(out, err)
    assert rc == 0, (out, err)
    assert n.get("errors", 0) == 0 and n["stale"] == 0, out
    assert n["absent"] >= 1, out


def test_numeric_digits_past_a_double_are_compared(mc_pool, db, objcached_bin):
    """A cached row whose numeric column differs from PostgreSQL's
    only past the 15th significant digit (an 18-decimal token amount) is
    stale, not fresh: the JSON comparison parsed both into doubles."""
    db.q("CREATE TABLE bals (id bigint PRIMARY KEY, amount numeric(38,18) NOT NULL)")
    db.q("INSERT INTO bals VALUES (1, 1.000000000000000002), (2, 123456789.123456789)")
    conf = config(mc_pool, db, models={"Bal": {"table": "bals"}})
    for ident, new, old in ((1, "1.000000000000000002", "1.000000000000000001"),
                            (2, "123456789.123456789", "123456789.123456788")):
        js = db.one("SELECT row_to_json(t)::text FROM bals t WHERE id = %s", (ident,))
        assert new in js, js
        mc_set_raw(mc_pool, oc_c.cache_key("Bal", ident, 0), OBJECT,
                   js.replace(new, old).encode())
    rc, out, err, n = verify(objcached_bin, conf, "--verify", "Bal", "--sample", "10")
    print(out, err)
    assert n["stale"] == 2 and n["fresh"] == 0, out
    assert rc == 1, (out, err)


def test_recheck_waits_sample_recheck(mc_pool, db, objcached_bin):
    """A disagreement is read again after `sample_recheck`, as the sampler
    does for a hit (docs/consistency.md: the same recheck rule), not after a
    fixed second: with invalidations that take up to 4 s (polled, no
    NOTIFY), an operator sets sample_recheck = 5s, and a write committing
    as --verify starts, whose invalidation lands 2 s after the first read,
    is not reported; a copy that stays wrong still is."""
    gen = db.generation("Item")
    old5, old7 = row(db, 5), row(db, 7)
    db.q("UPDATE items SET name = 'renamed' WHERE id IN (5, 7)")  # committed; not invalidated yet
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 5, gen), OBJECT, old5)
    mc_set_raw(mc_pool, oc_c.cache_key("Item", 7, gen), OBJECT, old7)
    conf = config(mc_pool, db, objcached={"sample_recheck": "5s"})

    def gets():
        return sum(int(m.stats()["cmd_get"]) for m in mc_pool)

    before = gets()
    with verify_running(objcached_bin, conf, "--verify", "Item", "--sample", "400") as p:
        # its first read of the 400 ids (and the absent ones) is done
        harness.wait_until(lambda: gets() - before >= 400, timeout=30,
                           what="verify's first read of memcached")
        # The point of the test: key 5's invalidation is 2 s late (past the
        # old fixed 1 s recheck, within sample_recheck). A consumer's delete.
        time.sleep(2)
        for m in mc_pool:
            with m.client(timeout=5) as c:
                c.send(b"delete %s\r\n" % oc_c.cache_key("Item", 5, gen).encode())
                c.readline()
        out, err = p.communicate(timeout=60)
    print(out, err)
    counts = counts_of(out)
    assert counts["stale"] == 1, out                     # key 7 only
    assert re.search(r"^stale oc:Item~\d+:7 ", out, re.M), out
    assert p.returncode == 1, (p.returncode, out, err)


EVIL = """
CREATE SCHEMA evil;
CREATE FUNCTION evil.never(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.never);
CREATE FUNCTION evil.never(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.never);
CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE sql
    AS $$ SELECT id FROM public.docs ORDER BY id LIMIT 1 $$;
CREATE FUNCTION evil.generate_series(integer, integer) RETURNS SETOF integer LANGUAGE sql
    AS $$ SELECT 1 WHERE false $$;
CREATE FUNCTION evil.max(bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT 1::bigint $$;
"""


def test_a_search_path_that_shadows_builtins_changes_nothing(fleet, mc_pool, db, objcached_bin):
    """--verify keeps the role's search_path (a model over a view may need
    it), so the SQL it writes itself names its built-ins in pg_catalog: a
    schema ahead of pg_catalog whose =, gen_random_uuid or generate_series
    took over made it report present ids as absent (a false alarm) or pick
    no absent ids at all."""
    conf = config(mc_pool, db)
    oc = fleet.start(conf)
    ids = [r[0] for r in db.q("SELECT id::text FROM docs ORDER BY id")]
    with oc.client() as c:
        assert c.get_multi([f"Doc:{i}" for i in ids[:30]] +
                           [f"Item:{i}" for i in range(1, 50)])[1] == b"END"
    oc.wait_idle()
    db.q(EVIL)
    db.q(f'ALTER DATABASE "{db.name}" SET search_path = evil, pg_catalog, public')
    for model, fresh in (("Doc", 30), ("Item", 49)):
        n = verify_clean(objcached_bin, conf, model, fresh)
        assert n["errors"] == 0 and n["absent"] >= 40, n
    # a table larger than 20 times the sample is sampled (TABLESAMPLE)
    db.q("ANALYZE items")
    rc, out, err, n = verify(objcached_bin, conf, "--verify", "Item", "--sample", "5")
    assert rc == 0 and n["errors"] == 0 and n["stale"] == 0 and n["absent"] >= 1, (out, err)
    assert n["fresh"] + n["missing"] >= 1 and "result: ok" in out, out

"""The randomized consistency test: writers change rows directly in SQL
(updates, deletes, inserts, bulk updates of up to 1,000 rows) and through
the app path (commit, then push the row's JSON or a tombstone), both race on
a set of shared keys, readers get-multi through two sidecars on the same
memcached pool, both with the near-cache on (half the reads are pipelined
`mg <key> v n k`, whose n flag tells the keys the near-cache answered:
those get staleness figures of their own), and every fault of consistency.FAULTS is injected for real,
one after the other in the seed's order: a memcached server restarted, a
sidecar SIGKILLed, PostgreSQL restarted, a TCP proxy between the sidecars
and one memcached server that delays, drops and resets connections, the
same between the sidecars and PostgreSQL, and a TRUNCATE mid-run.

It runs twice: with invalidations from the trigger hook, and from the WAL
source (a logical slot; one sidecar holds it, the other takes over when the
holder is SIGKILLed). OC_CONSISTENCY_SOURCES=trigger or =wal runs one (or
=wal-nokeys: the WAL source with wal_feed_keys = off).

What it asserts (what it measures, it asserts):
- no read returned a value that was never committed (phantoms);
- no error beyond the injected faults' own: a read error, a failed push or
  a writer error outside every fault's window (the fault, plus
  consistency.FAULT_GRACE_S) fails the test;
- in-flight staleness outside the faults' windows: the p99.9 of every key
  read's staleness (0 for a fresh read; for a stale one, the time since the
  commit that superseded the value returned) is below STALE_BOUND_S, and
  so is that of the keys the near-cache answered; some were;
- the built-in sampler (sample_rate OC_CONSISTENCY_SAMPLE_RATE, windows
  1 s and 10 s) found no inconsistency at its longest window, and checked
  something there;
- once the writes stop and the invalidations drain, every key read through
  every sidecar equals the database's row (or is absent): zero stale
  entries.

Bounded: OC_CONSISTENCY_SECONDS (default 50) of writes per source, about
three minutes in all. The seed changes every run and is printed; OC_CONSISTENCY_SEED replays
a run's random choices (the schedule of faults included; the interleaving
of threads is not replayed). scripts/soak.sh runs the same test for ten
minutes, with every fault three times and the sampler's 60 s window.
"""

import os
import random
import time

import pytest

import consistency as oc_c
import faultproxy
import harness

SECONDS = float(os.environ.get("OC_CONSISTENCY_SECONDS", "50"))
SEED = int(os.environ.get("OC_CONSISTENCY_SEED") or random.SystemRandom().randrange(10**9))
SAMPLE_RATE = os.environ.get("OC_CONSISTENCY_SAMPLE_RATE", "20%")
WINDOWS = os.environ.get("OC_CONSISTENCY_WINDOWS", "1s, 10s")
SAMPLE_QPS = os.environ.get("OC_CONSISTENCY_SAMPLE_QPS", "20")
SAMPLE_QUEUE = os.environ.get("OC_CONSISTENCY_SAMPLE_QUEUE", "16384")
FAULTS = tuple(f for f in os.environ.get("OC_CONSISTENCY_FAULTS", ",".join(oc_c.FAULTS))
               .split(",") if f)
# The staleness bound while the hook is connected (no fault under way): the
# outbox is claimed on every NOTIFY and at least every invalidation_poll
# (200 ms here), the feed every feed_poll (100 ms).
STALE_BOUND_S = 1.0


# Both sidecars keep both models in their near-cache (issue 12: the test
# runs with it on); a share of the reads are `mg ... n` so that keys the
# near-cache answered get staleness figures of their own.
NEAR = {"objcached": {"near_cache_size": "32m"},
        "model Acct": {"near_ttl": "5s"}, "model Note": {"near_ttl": "5s"}}
META_READS = 0.5


# feed_max_lag is the near-cache's own staleness promise (default 2 s): the
# near-cache answers only while its feed proves every write older than that
# applied. Set here, for both sources, to the bound this test asserts, so
# that the assertion checks the promise: a holder or a consumer that falls
# behind (seen twice, 1.3 s, in the ASan pass beside the benchmark's smoke
# run) must turn the near-caches off, not let them serve entries staler than
# the bound. (The trigger source kept the default until its consumers proved
# freshness without a drained outbox: before, under these steady writes, 1 s
# kept its near-caches off.)
FEED_MAX_LAG = {"postgresql": {"feed_max_lag": "1s"}}


def wal_overrides(name, feed_keys=True):
    return {"postgresql": {"wal": "on", "wal_slot": name, "wal_heartbeat": "200ms",
                           "wal_takeover": "2s", "wal_feed_keys": "on" if feed_keys else "off",
                           **FEED_MAX_LAG["postgresql"]}}


# Which invalidation sources to run (trigger and wal by default). The WAL
# source ran only where asked until 2026-12-03: a try's connections were
# overwritten when one went down while it was being made, so after
# PostgreSQL faults neither sidecar held the slot (docs/wal.md, "A bug found
# and fixed"). wal-nokeys: the WAL source with wal_feed_keys = off (the feed
# gets whole-model rows, not keys; the soak's --source wal-nokeys).
SOURCES = [s for s in os.environ.get("OC_CONSISTENCY_SOURCES", "trigger,wal").split(",")
           if s]


def wal_source(source):
    return source in ("wal", "wal-nokeys")


@pytest.fixture(params=SOURCES)
def cdb(request, pg, objcached_bin):
    """The database, with the models attached through the trigger hook or
    through the WAL source (a logical slot named after the database)."""
    if not pg.running:
        pg.start()
    source = request.param
    name = f"oc_consistency_{source.replace('-', '_')}"   # a slot's name: [a-z0-9_]
    overrides = wal_overrides(name, source != "wal-nokeys") if wal_source(source) else None
    oc_c.create_template(pg, name, oc_c.CONSISTENCY_SCHEMA, oc_c.CONSISTENCY_MODELS,
                         objcached_bin, overrides=overrides)
    db = oc_c.HookDb(pg, name)
    db.source = source
    yield db
    if not pg.running:
        pg.start()
    db.reconnect()
    db.q("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
         "WHERE slot_name = %s", (name,))
    oc_c.drop_db(pg, db)


@pytest.fixture
def proxies(pg, mc_pool):
    for m in mc_pool:
        m.start()
    p = {"mc": faultproxy.FaultProxy(mc_pool[0].port, name="mc"),
         "pg": faultproxy.FaultProxy(pg.port, name="pg")}
    yield p
    for x in p.values():
        x.close()


@pytest.fixture
def fleet(pg, mc_pool, objcached_bin, proxies):
    yield from oc_c.run_fleet(mc_pool, objcached_bin)


def window_seconds(label):
    return float(label[:-2]) / 1000 if label.endswith("ms") else float(label[:-1])


def test_randomized_consistency(pg, mc_pool, cdb, fleet, proxies, capsys):
    def log(msg):
        with capsys.disabled():
            print(msg, flush=True)

    log(f"\nconsistency: seed {SEED} (OC_CONSISTENCY_SEED={SEED} replays it), "
        f"{SECONDS:.0f} s of writes, faults {','.join(FAULTS)}")
    # The sidecars reach memcached server 0 and PostgreSQL through the proxies.
    servers = " ".join([proxies["mc"].address] + [m.address for m in mc_pool[1:]])
    conninfo = f"host=127.0.0.1 port={proxies['pg'].port} dbname={cdb.name} user=postgres"
    overrides = {"postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms"},
                 "objcached": {"log_level": "warn", "sample_rate": SAMPLE_RATE,
                               "sample_windows": WINDOWS, "sample_max_qps": SAMPLE_QPS,
                               "sample_queue": SAMPLE_QUEUE}}
    sections = [NEAR] + ([wal_overrides(cdb.name, cdb.source != "wal-nokeys")]
                         if wal_source(cdb.source) else [FEED_MAX_LAG])
    for extra in sections:
        for section, keys in extra.items():
            overrides.setdefault(section, {}).update(keys)
    config = oc_c.sidecar_config(servers, conninfo, oc_c.CONSISTENCY_MODELS, overrides)
    log(f"consistency: invalidations from the {cdb.source}, near-cache on in both sidecars")
    run = oc_c.ConsistencyRun(pg, mc_pool, cdb, fleet, SECONDS, SEED, log=log, faults=FAULTS,
                              proxies=proxies, contended=40, meta_reads=META_READS)
    run.populate()
    sidecars = [fleet.start(config), fleet.start(config)]
    t0 = time.monotonic()
    run.run(sidecars)
    t1 = time.monotonic()
    try:
        mismatches = run.final_check()
    except harness.HarnessError:
        for s in sidecars:
            st = s.stats()
            log(f"consistency: {s!r} at the drain: " + " ".join(
                f"{k}={v}" for k, v in st.items()
                if k.startswith(("inval", "loads", "pg_", "feed", "wal", "near"))))
            log(f"consistency: {s!r} log tail:\n{s.log()[-3000:]}")
        log(f"consistency: outbox rows {cdb.outbox_rows()}; WAL now "
            f"{cdb.one('SELECT pg_current_wal_lsn()::text')}; slots "
            f"{cdb.q('SELECT slot_name, active, active_pid, confirmed_flush_lsn::text, wal_status FROM pg_replication_slots')}")
        for r in cdb.q("SELECT pid, application_name, state, now() - xact_start, "
                       "left(query, 120), client_port FROM pg_stat_activity "
                       "WHERE datname = current_database()"):
            log(f"consistency: backend {r}")
        raise
    t2 = time.monotonic()
    # the sampler's longest window (and its rechecks) after the last write
    longest = max(window_seconds(w.strip()) for w in WINDOWS.split(","))
    time.sleep(max(0.0, t1 + longest + 6.0 - time.monotonic()))
    sampled = dict(run.sampler_lost)
    for s in sidecars:
        for k, v in oc_c.sampler_stats(s).items():
            sampled[k] = sampled.get(k, 0) + v
    report = run.report()
    report["invalidations"] = sum(s.stats()["invalidations"] for s in sidecars)
    report["fills_dropped"] = sum(s.stats()["fills_dropped"] for s in sidecars)
    report["pushes_stale"] = sum(s.stats()["pushes_stale"] for s in sidecars)
    report["pushes_corrected"] = sum(s.stats()["pushes_corrected"] for s in sidecars)
    report["inval_requeued"] = sum(s.stats()["inval_requeued"] for s in sidecars)
    report["run_s"] = round(t1 - t0, 1)
    report["drain_and_check_s"] = round(t2 - t1, 1)
    report["final_stale_entries"] = len(mismatches)
    log("consistency: " + " ".join(f"{k}={v}" for k, v in report.items()))
    by_window = {}
    for (model, window, field), v in sampled.items():
        if model != "*":
            by_window.setdefault(window, {}).setdefault(field, 0)
            by_window[window][field] += v
    log("consistency: sampler " + " ".join(
        f"{w}:checks={f.get('checks', 0)},inconsistent={f.get('inconsistent', 0)},"
        f"empty={f.get('empty', 0)}" for w, f in sorted(by_window.items())) + " " +
        " ".join(f"{k[2]}={v}" for k, v in sorted(sampled.items()) if k[0] == "*"))
    if run.phantoms:
        log(f"consistency: answers matching no committed version: {run.phantoms}")
    for s in sidecars:
        lines = [ln for ln in s.log().splitlines() if "event=sampler_inconsistent" in ln]
        longest_first = f"window={[w.strip() for w in WINDOWS.split(',')][-1]} "
        lines.sort(key=lambda ln: longest_first not in ln)    # the ones that fail the test
        for ln in lines[:10]:
            log(f"consistency: {s!r}: {ln[:600]}")
    if run.outside_errors:
        log(f"consistency: errors outside the faults' windows: {run.outside_errors}")
    assert not run.errors, run.errors
    for port, key, got, want in mismatches[:20]:
        m, i = key
        log(f"consistency: STALE through port {port}: {m}:{i} cached {got!r}, database {want!r}"
            f"; in memcached: {oc_c.raw_values_for(mc_pool, m, i)}")
    assert mismatches == [], f"{len(mismatches)} stale entries after the drain (seed {SEED})"
    # what it measures, it asserts
    assert report["phantom"] == 0, f"reads of values never committed (seed {SEED})"
    assert report["read_errors_outside_faults"] == 0, run.outside_errors
    assert report["push_errors_outside_faults"] == 0, run.outside_errors
    p999 = report["stale_outside_p999_ms"]
    assert p999 is None or p999 < STALE_BOUND_S * 1000, \
        f"staleness p99.9 {p999} ms outside faults (seed {SEED})"
    # the near-cache answered some reads, and those were no staler
    assert report["near_read_keys"] > 0, "no read was answered by a near-cache"
    assert report["near_phantom"] == 0
    near_p999 = report["near_stale_outside_p999_ms"]
    assert near_p999 is None or near_p999 < STALE_BOUND_S * 1000, \
        f"near-cache staleness p99.9 {near_p999} ms outside faults (seed {SEED})"
    longest_label = [w.strip() for w in WINDOWS.split(",")][-1]
    at_longest = by_window.get(longest_label, {})
    assert at_longest.get("checks", 0) > 0, by_window
    assert at_longest.get("inconsistent", 0) == 0, \
        f"the sampler found inconsistencies at {longest_label} (seed {SEED}): {by_window}"
    # the run did what it says
    assert report["reads"] > 0 and report["read_keys"] > 0
    assert report["sql_writes"] > 0 and report["app_writes"] > 0 and report["pushes"] > 0
    assert report["tombstones"] > 0 and report["bulk_updates"] > 0
    assert report["contended_writes"] > 0 and report["invalidations"] > 0
    for kind in FAULTS:
        assert report[kind] >= 1, f"fault {kind} was not injected"

"""The randomized consistency test: writers change rows directly in SQL
(updates, deletes, inserts, bulk updates of up to 1,000 rows) and through
the app path (commit, then push the row's JSON or a tombstone), readers
get-multi through two sidecars on the same memcached pool, a memcached
server and a sidecar are restarted mid-run. Once the writes stop and the
invalidations drain, every key read through every sidecar must equal the
database's current row, or be absent if there is none: zero stale entries.

During the run every answer is judged against each key's history of
committed versions: a stale read is one that returned a version already
superseded by a commit that had returned when the get was sent; its delay
is the time since that superseding commit. The counts and the delay
percentiles are printed, not asserted (how stale a read-through cache may be
in flight is a measurement, not a rule); only the final state is.

Bounded: OC_CONSISTENCY_SECONDS (default 45) of writes, about a minute in
all. OC_CONSISTENCY_SEED replays a run's random choices (the interleaving
of threads is not replayed). scripts/soak.sh runs the same test for ten
minutes.
"""

import os
import time

import pytest

import consistency as oc_c

SECONDS = float(os.environ.get("OC_CONSISTENCY_SECONDS", "45"))
SEED = int(os.environ.get("OC_CONSISTENCY_SEED", "20261122"))


@pytest.fixture
def cdb(pg, objcached_bin):
    name = "oc_consistency"
    oc_c.create_template(pg, name, oc_c.CONSISTENCY_SCHEMA, oc_c.CONSISTENCY_MODELS,
                         objcached_bin)
    db = oc_c.HookDb(pg, name)
    yield db
    oc_c.drop_db(pg, db)


@pytest.fixture
def fleet(pg, mc_pool, objcached_bin):
    for m in mc_pool:
        m.start()
        m.flush_all()
    f = oc_c.Fleet(objcached_bin)
    yield f
    errors = f.stop_all()
    if errors:
        raise AssertionError("objcached did not shut down cleanly:\n" + "\n\n".join(errors))


def test_randomized_consistency(pg, mc_pool, cdb, fleet, capsys):
    def log(msg):
        with capsys.disabled():
            print(msg, flush=True)

    log(f"\nconsistency: seed {SEED} (OC_CONSISTENCY_SEED={SEED} replays it), "
        f"{SECONDS:.0f} s of writes")
    config = oc_c.sidecar_config(mc_pool, cdb.conninfo, oc_c.CONSISTENCY_MODELS,
                                 {"postgresql": {"invalidation_poll": "200ms"},
                                  "objcached": {"log_level": "warn"}})
    run = oc_c.ConsistencyRun(pg, mc_pool, cdb, fleet, SECONDS, SEED, log=log)
    run.populate()
    sidecars = [fleet.start(config), fleet.start(config)]
    t0 = time.monotonic()
    run.run(sidecars)
    t1 = time.monotonic()
    mismatches = run.final_check()
    t2 = time.monotonic()
    report = run.report()
    report["invalidations"] = sum(s.stats()["invalidations"] for s in sidecars)
    report["fills_dropped"] = sum(s.stats()["fills_dropped"] for s in sidecars)
    report["pushes_stale"] = sum(s.stats()["pushes_stale"] for s in sidecars)
    report["inval_requeued"] = sum(s.stats()["inval_requeued"] for s in sidecars)
    report["run_s"] = round(t1 - t0, 1)
    report["drain_and_check_s"] = round(t2 - t1, 1)
    report["final_stale_entries"] = len(mismatches)
    log("consistency: " + " ".join(f"{k}={v}" for k, v in report.items()))
    if run.phantoms:
        log(f"consistency: answers matching no committed version: {run.phantoms}")
    assert not run.errors, run.errors
    for port, key, got, want in mismatches[:20]:
        m, i = key
        log(f"consistency: STALE through port {port}: {m}:{i} cached {got!r}, database {want!r}"
            f"; in memcached: {oc_c.raw_values_for(mc_pool, m, i)}")
    assert mismatches == [], f"{len(mismatches)} stale entries after the drain (seed {SEED})"
    assert report["reads"] > 0 and report["read_keys"] > 0
    assert report["sql_writes"] > 0 and report["app_writes"] > 0 and report["pushes"] > 0
    assert report["tombstones"] > 0 and report["bulk_updates"] > 0
    assert report["invalidations"] > 0
    assert report["memcached_restarts"] >= 1 and report["sidecar_restarts"] >= 1

"""The near-cache phases of the benchmark (issue 12), driven by bench/run.py.

  warm_near   fill a sidecar's near-cache with a range of ids: each batch is
              asked three times in a row (the doorkeeper admits a key the
              second time it is offered), then one pass is checked to be
              near hits only (stats near_hits / near_misses)
  zipf        Zipf (s = 0.99) reads over every id: the hand-written pattern
              against objcached with the near-cache, the same key stream
              (the same seeds) for both, after the same pre-warm
  nearapply   commit-to-applied in two sidecars' near-caches under load:
              an UPDATE of a row both hold, then both are asked until
              neither serves the old value (commit_to_applied); the
              sidecars' own feed_apply_seconds histograms beside it
  nearrss     a sidecar whose near-cache is filled far past its limit with
              distinct keys: RSS from /proc against the limit

Nothing here is timed by a test: these are measurements, and the summary
says met or missed."""

import json
import random
import subprocess
import time

import harness

from bench_common import (BenchError, McText, histogram, histogram_delta,
                          histogram_quantile, metrics_address, metrics_text, pct, rss_kib,
                          say, step)


def lg(loadgen, servers, prefix, k, c, keys, seconds=None, batches=None, repeat=1, seed=1,
       label="near", extra=()):
    """One load generator run against any address; its JSON line."""
    argv = [loadgen, "get", "--servers", servers, "--prefix", prefix, "-K", str(k),
            "-C", str(c), "--keys", keys, "--seed", str(seed), "--csv-label", label]
    if seconds is not None:
        argv += ["--duration", f"{seconds:g}"]
    if batches is not None:
        argv += ["--batches", str(batches)]
    if repeat > 1:
        argv += ["--repeat", str(repeat)]
    argv += list(extra)
    proc = subprocess.run(argv, capture_output=True, text=True,
                          timeout=(seconds or 600) + 120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines or proc.returncode != 0:
        raise BenchError(f"loadgen {label} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                         f"{proc.stdout}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def lg_background(loadgen, servers, prefix, k, c, keys, seconds, seed, label, rate=None):
    """A load generator started in the background (rate: batches a second
    per thread); finish() gives its JSON."""
    argv = [loadgen, "get", "--servers", servers, "--prefix", prefix, "-K", str(k),
            "-C", str(c), "--keys", keys, "--duration", f"{seconds:g}", "--seed", str(seed),
            "--csv-label", label] + (["--rate", f"{rate:g}"] if rate else [])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish():
        out, err = p.communicate(timeout=seconds + 120)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines or p.returncode != 0:
            raise BenchError(f"background loadgen {label} failed (exit {p.returncode}):\n"
                             f"{out}\n{err[-3000:]}")
        return json.loads(lines[-1])
    return p, finish


def check_all_near(r):
    """A run through oc-near must have been near hits only: the phase fails
    otherwise (a near-cache that flushed, or was never filled, would make
    its figures the plain path's)."""
    if r["near_misses"] != 0 or r["near_hits"] < r["keys"]:
        raise BenchError(f"{r['phase']}/{r['target']} K={r['K']} C={r['C']}: "
                         f"{r['near_hits']:,} near hits and {r['near_misses']:,} near misses "
                         f"for {r['keys']:,} keys measured: not all answered from the "
                         "near-cache (" + ", ".join(f"{k} {r[k]:,}" for k in r
                                                   if k.startswith("near_")) + ")")


# Asks of each batch when warming: the doorkeeper admits a key on its second
# offer within its window, but the window is a bitset reset when it fills, and
# a reset between a batch's two offers would leave the batch out; a third ask
# comes after any such reset with the second.
WARM_ASKS = 3


def warm_near(runner, oc, target, lo, hi):
    n = hi - lo + 1
    t0 = time.monotonic()
    runner.run("warm", target, 100, 4, f"seq:{lo}:{hi}", batches=(n + 99) // 100,
               seconds=600, repeat=WARM_ASKS)
    oc.wait_idle(timeout=120)
    r = runner.run("warm", target, 100, 4, f"seq:{lo}:{hi}", batches=n // 100, seconds=600)
    check_all_near(r)
    st = oc.stats()
    step(f"near-cache of {target} holds ids {lo}..{hi:,}: {st['near_entries']:,} entries, "
         f"{st['near_bytes'] / 2**20:.1f} MiB ({time.monotonic() - t0:.1f} s)")


def warm_sidecar_near(loadgen, oc, prefix, lo, hi, seed):
    """warm_near for a sidecar that is no target of the run (loads only)."""
    n = hi - lo + 1
    lg(loadgen, oc.sock, prefix, 100, 4, f"seq:{lo}:{hi}", batches=(n + 99) // 100,
       repeat=WARM_ASKS, seed=seed, label="near/warm")
    oc.wait_idle(timeout=120)


# ------------------------------------------------------------------- zipf

def phase_zipf(runner, world, cfg, rng, interleaved, progress):
    """The same Zipf key stream for hand and oc-near: one pre-warm of the
    same length and seed for each (so both caches start with the same ids),
    then per trial and setting both run with the same seed, back to back in
    a shuffled order."""
    s, rows = cfg["zipf_s"], cfg["rows"]
    keys = f"zipf:1:{rows}:{s}"
    targets = ["hand", "oc-near"]
    step(f"zipf: s = {s} over {rows:,} ids, the hand-written pattern against objcached "
         f"with the near-cache ({cfg['near_size']})")
    t0 = time.monotonic()
    seed0 = runner.seed * 7919
    for t in targets:
        runner.run("zipfwarm", t, 100, 4, keys, batches=cfg["zipf_prewarm"], seconds=600,
                   seed=seed0)
    world.near.wait_idle(timeout=120)
    say(f"    pre-warmed both with the same {cfg['zipf_prewarm'] * 100:,} keys "
        f"({time.monotonic() - t0:.1f} s)")
    zcfg = dict(cfg, trials=cfg["zipf_trials"])
    for trial, k, c, t in interleaved(zcfg, rng, targets, [100], cfg["zipf_c"]):
        r = runner.run("zipf", t, k, c, keys, seconds=cfg["seconds"], warmup=0.2,
                       seed=seed0 + 1 + trial * 1000 + c, trial=trial)
        if r.get("absent"):     # counted in keys/s, yet neither cached nor loaded
            raise BenchError(f"zipf/{t} C={c}: {r['absent']:,} of {r['keys']:,} keys served "
                             "neither from a cache nor from PostgreSQL")
        if "near_hits" in r:
            looked = r["near_hits"] + r["near_misses"]
            note = f"near hits {r['near_hits'] / max(looked, 1):.1%}"
        else:
            note = f"memcached hits {r['hits'] / max(r['keys'], 1):.1%}"
        progress(r, f"trial {trial + 1}, {note}")


# -------------------------------------------------------------- nearapply

def commit_to_applied(sidecars, conn, update_sql, prefix, ids, samples, seconds, label,
                      stop_when=None):
    """For each sample: read the row through every sidecar three times (the
    second offer admits it to the near-cache, the third is answered from it),
    commit an UPDATE that writes a marker into it (autocommit: the call
    returns when the commit is acknowledged), then ask every sidecar in turn,
    every 0.2 ms, until each serves the marker. The sample is the time from
    the acknowledgment to the last sidecar serving the new row: what an
    observer sees. Stops at `samples` or after `seconds`, or when
    stop_when() says so. Returns the delays (ms) sorted, and per sidecar."""
    clients = [McText(oc.sock) for oc in sidecars]
    delays, each = [], [[] for _ in sidecars]
    end = time.monotonic() + seconds
    try:
        with conn.cursor() as cur:
            for i in range(samples):
                if time.monotonic() > end or (stop_when and stop_when()):
                    break
                ident = ids[i % len(ids)]
                key = f"{prefix}{ident}"
                marker = f"{label}-{i}-{random.getrandbits(32):08x}"
                for c in clients:
                    for _ in range(3):
                        c.get(key)
                cur.execute(update_sql, (marker, ident))
                t0 = time.perf_counter()
                pending = set(range(len(clients)))
                seen = {}
                while pending:
                    for j in sorted(pending):
                        v = clients[j].get(key)
                        if v is not None and marker.encode() in v:
                            seen[j] = time.perf_counter() - t0
                            pending.discard(j)
                    if pending:
                        if time.perf_counter() - t0 > 10:
                            raise BenchError(
                                f"{label}: row {ident} not served new by {len(pending)} "
                                "sidecar(s) 10 s after its UPDATE committed: a stale value "
                                "(in memcached or a near-cache) outlived the invalidation")
                        time.sleep(0.0002)
                delays.append(max(seen.values()) * 1000)
                for j, d in seen.items():
                    each[j].append(d * 1000)
                time.sleep(0.02)
    finally:
        for c in clients:
            c.close()
    return sorted(delays), [sorted(e) for e in each]


def feed_hist(ocs):
    return [histogram(metrics_text(metrics_address(oc)), "objcached_feed_apply_seconds")
            for oc in ocs]


def summarize_apply(name, delays, each, hist0, hist1, load, writes_per_s, st0, st1):
    """One result row of nearapply."""
    merged = {}
    for a, b in zip(hist0, hist1):
        for le, v in histogram_delta(a, b).items():
            merged[le] = merged.get(le, 0.0) + v
    h99, hcount = histogram_quantile(merged, 0.99)
    h50, _ = histogram_quantile(merged, 0.50)
    d = {k: sum(b[k] - a[k] for a, b in zip(st0, st1))
         for k in ("near_hits", "near_misses", "near_invalidations", "near_flushes",
                   "feed_rows", "feed_keys", "lease_waits", "lease_timeouts", "fills_dropped",
                   "near_refused_stale")}
    res = {"source": name, "samples": len(delays), "p50_ms": pct(delays, 50),
           "p99_ms": pct(delays, 99), "max_ms": delays[-1] if delays else float("nan"),
           "each_p99_ms": [pct(e, 99) for e in each],
           "hist_p50_le_s": h50, "hist_p99_le_s": h99, "hist_count": hcount,
           "load_keys_per_s": load, "writes_per_s": writes_per_s, **d}
    say(f"    {name:<9} {res['samples']} commits, two sidecars: p50 {res['p50_ms']:.1f} ms, "
        f"p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms (per sidecar p99 "
        + ", ".join(f"{x:.1f}" for x in res["each_p99_ms"])
        + f" ms); feed_apply_seconds p50 <= {h50 * 1000:g} ms, p99 <= {h99 * 1000:g} ms "
        f"({hcount:,} feed rows); under {load:,.0f} keys/s of near reads and "
        f"{writes_per_s:,.0f} writes/s; near flushes {d['near_flushes']}, lease waits "
        f"{d['lease_waits']}, lease timeouts {d['lease_timeouts']}, fills dropped "
        f"{d['fills_dropped']}, near refused stale {d['near_refused_stale']}")
    if d["near_flushes"]:
        # reported, not hidden: a flushed near-cache answered from memcached
        # meanwhile, so those commits' delays are memcached's; the table
        # says how many flushes there were
        say(f"    NOTE nearapply/{name}: the near-cache flushed {d['near_flushes']} time(s) "
            "during the phase (its feed went stale past feed_max_lag)")
    return res


def run_apply(runner, name, ocs, pg, dbname, update_sql, prefix, hot, probe_ids, cfg,
              start_writes):
    """Loads both sidecars with near reads (K=100, 2 clients each, uniform
    over the hot ids below the probes' ids, nearapply_reads keys a second per
    sidecar: a busy host, not a saturated one) and the table with writes
    (start_writes(seconds) starts them and returns a function giving their
    tx/s), and measures commit_to_applied meanwhile. The readers leave the
    probes' ids alone: the probe's reads are the only ones of those rows."""
    samples = cfg["nearapply_samples"]
    seconds = samples * 0.06 + 3
    st0 = [oc.stats() for oc in ocs]
    h0 = feed_hist(ocs)
    readers = [lg_background(runner.loadgen, oc.sock, prefix, 100, 2,
                             f"uniform:1:{hot - len(probe_ids)}", seconds,
                             runner.seed * 31 + i, f"nearapply/{name}/reads",
                             rate=cfg["nearapply_reads"] / 100 / 2)
               for i, oc in enumerate(ocs)]
    writes = start_writes(seconds)
    time.sleep(0.5)
    conn = pg.connect(dbname=dbname)
    try:
        delays, each = commit_to_applied(
            ocs, conn, update_sql, prefix, probe_ids, samples, seconds - 1.5,
            f"nearapply-{name}", stop_when=lambda: readers[0][0].poll() is not None)
    finally:
        conn.close()
    load = sum(f()["keys_per_s"] for _, f in readers)
    writes_per_s = writes()
    st1 = [oc.stats() for oc in ocs]
    h1 = feed_hist(ocs)
    return summarize_apply(name, delays, each, h0, h1, load, writes_per_s, st0, st1)


def pgbench_updates(pg, dbname, table, column, hi, rate, seconds):
    """pgbench in the background: single-row autocommit UPDATEs of random ids
    1..hi at `rate` per second (2 clients); returns a function that waits for
    it and gives its tx/s."""
    script = f"{pg.dir}/near_upd_{dbname}_{table}.sql"
    with open(script, "w") as f:
        f.write(f"\\set id random(1, {hi})\n"
                f"UPDATE {table} SET {column} = {column} + 1 WHERE id = :id;\n")
    argv = [f"{pg.bindir}/pgbench", "-n", "-M", "prepared", "-T", f"{int(seconds)}",
            "-c", "2", "-j", "1", "-R", str(rate), "-f", script, "-h", pg.dir,
            "-p", str(pg.port), "-U", pg.SUPERUSER, dbname]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish():
        out, err = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise BenchError(f"pgbench failed: {' '.join(argv)}\n{out}\n{err[-2000:]}")
        return parse_tps(out)
    return finish


def parse_tps(out):
    for line in out.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise BenchError(f"no tps in pgbench's output:\n{out}")


def phase_nearapply_triggers(runner, world, cfg):
    """Two sidecars with the near-cache over the run's items (trigger hook,
    notify on): the main oc-near one and a second one started here."""
    hot, probes = cfg["hot"], cfg["nearapply_probe_ids"]
    step("nearapply (triggers): commit to applied in two sidecars' near-caches, under load")
    second = harness.Objcached(world.near_config(cfg["near_size"]),
                               binary=world.args.objcached, parent_dir=world.dir).start()
    try:
        harness.wait_until(lambda: second.stats().get("near_serving") == 1, timeout=20,
                           what="the second sidecar's near-cache to serve")
        warm_sidecar_near(runner.loadgen, second, "Item:", 1, hot, runner.seed * 41)
        return run_apply(runner, "triggers", [world.near, second], world.pg, world.pg.dbname,
                         "UPDATE items SET name = %s WHERE id = %s", "Item:", hot,
                         list(range(hot - probes + 1, hot + 1)), cfg,
                         lambda secs: pgbench_updates(world.pg, world.pg.dbname, "items",
                                                      "score", hot - probes,
                                                      cfg["nearapply_write_rate"], secs))
    finally:
        second.stop()
        second.cleanup()


# ---------------------------------------------------------------- nearrss

def phase_nearrss(runner, world, cfg):
    limit = cfg["nearrss_limit"]
    rows = cfg["rows"]
    step(f"nearrss: a near-cache of {limit} filled with {rows:,} distinct ids, twice")
    oc = harness.Objcached(world.near_config(limit), binary=world.args.objcached,
                           parent_dir=world.dir).start()
    try:
        harness.wait_until(lambda: oc.stats().get("near_serving") == 1, timeout=20,
                           what="the near-cache to serve")
        idle = rss_kib(oc.pid)
        passes = []
        t0 = time.monotonic()
        for p in range(cfg["nearrss_passes"]):
            r = lg(runner.loadgen, oc.sock, "Item:", 100, 4, f"seq:1:{rows}",
                   batches=rows // 100, repeat=2, seed=runner.seed * 53 + p,
                   label="nearrss/fill")
            oc.wait_idle(timeout=120)
            st = oc.stats()
            passes.append({"rss_kib": rss_kib(oc.pid), "near_bytes": st["near_bytes"],
                           "near_entries": st["near_entries"],
                           "near_evictions": st["near_evictions"],
                           "near_stored": st["near_stored"], "keys": r["keys"]})
            say(f"    pass {p + 1}: RSS {passes[-1]['rss_kib'] / 1024:.1f} MiB, near_bytes "
                f"{st['near_bytes'] / 2**20:.1f} MiB in {st['near_entries']:,} entries, "
                f"{st['near_evictions']:,} evictions, {st['near_stored']:,} stored "
                f"({time.monotonic() - t0:.0f} s)")
    finally:
        oc.stop()
        oc.cleanup()
    limit_b = parse_size(limit)
    last = passes[-1]
    res = {"limit": limit, "limit_mib": limit_b / 2**20, "rss_idle_mib": idle / 1024,
           "rss_mib": max(p["rss_kib"] for p in passes) / 1024,
           "near_mib": last["near_bytes"] / 2**20, "entries": last["near_entries"],
           "evictions": last["near_evictions"], "rows": rows, "passes": len(passes)}
    res["ratio"] = res["rss_mib"] / res["limit_mib"]
    res["growth_ratio"] = (res["rss_mib"] - res["rss_idle_mib"]) / res["limit_mib"]
    if last["near_evictions"] == 0 or last["near_bytes"] < 0.9 * limit_b:
        raise BenchError(f"nearrss: the near-cache never reached its limit "
                         f"({last['near_bytes']:,} of {limit_b:,} bytes, "
                         f"{last['near_evictions']} evictions)")
    return res


def parse_size(s):
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    s = s.strip().lower()
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


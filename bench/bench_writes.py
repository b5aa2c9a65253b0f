"""The write-overhead phase of the benchmark (issue 16), and the world it
runs in, driven by bench/run.py.

A PostgreSQL cluster of its own, with durable commits (fsync,
synchronous_commit and full_page_writes on), holds three databases with the
same table `w (id bigint primary key, v int, pad text)` of --rows rows:

  wr_plain  no hook at all (the baseline)
  wr_trig   the trigger hook, schema version 2 as installed (notify off),
            one objcached consuming the outbox (invalidation_poll 1 s, the
            default)
  wr_wal    the WAL source: the table attached with via => 'wal', one
            objcached with wal = on holding the slot

Three databases rather than three tables of one: logical decoding decodes
every change of its database before pgoutput filters by publication, so a
plain table beside a watched one would carry part of the watcher's cost; a
change of another database is skipped as soon as its record is read.

phase_writes: pgbench writers (single-row autocommit UPDATEs, and
transactions of 3 UPDATEs) at each concurrency, the three variants in a
shuffled order within each round, several rounds; the ratio of a variant's
tx/s to the plain table's in the same round, median and range. Each run
starts after the previous one's invalidations were all applied (outbox
empty, slot confirmed past the run's last WAL) and a CHECKPOINT. The commit
to memcached delete is timed by a probe that commits an UPDATE of a cached
row every 50 ms and polls memcached until the entry is gone: with
--writes-probe apart (the default) in runs of its own, one per watched
variant, shuffled in among the others, whose tx/s count in no ratio (the
probe's polling is apparatus on the writers' cores that the unwatched table
would not pay); with --writes-probe during in every run (the plain variant
gets the same UPDATEs, untimed), as until 2026-12-07.

phase_nearapply_wal: two more sidecars on wr_wal with the near-cache on
(standby WAL candidates, following the feed): bench_near.run_apply."""

import os
import statistics
import subprocess
import threading
import time

import harness

import bench_near
from bench_common import (BenchError, McText, context_switches, cpu_seconds, pct, say,
                          spread, step, wait_for)

# the databases; a run's "wal@5ms" is "wal" at that interval, "wal@5ms+nokeys"
# the same with wal_feed_keys = off
VARIANTS = ["plain", "trig", "wal"]
MODEL = {"trig": "Wt", "wal": "Ww"}
DBS = {"plain": "wr_plain", "trig": "wr_trig", "wal": "wr_wal"}
SLOT = "bench_wal"


class WriteWorld:
    def __init__(self, args, cfg, workdir, mcs):
        self.args, self.cfg, self.dir, self.mcs = args, cfg, workdir, mcs
        self.pg = None
        self.ocs = {}          # variant -> the objcached that invalidates it
        self.prefix = {}       # variant -> memcached key prefix of its model
        self.rows = cfg["writes_rows"]
        self.probes = cfg["writes_probe_ids"]

    def start(self):
        t0 = time.monotonic()
        self.pg = harness.Postgres(dbname=DBS["plain"], parent_dir=self.dir, settings={
            "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
            "shared_buffers": self.cfg["writes_shared_buffers"], "max_connections": "200",
            "max_wal_size": "8GB", "checkpoint_timeout": "30min",
            "wal_level": "logical"})
        self.pg.start()
        for v in ("trig", "wal"):
            self.pg.execute(f'CREATE DATABASE "{DBS[v]}"', dbname="postgres")
        for v in VARIANTS:
            self.pg.execute(f"""
                CREATE TABLE w (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0,
                                pad text NOT NULL DEFAULT 'some payload of a typical row');
                INSERT INTO w (id) SELECT generate_series(1, {self.rows});""", dbname=DBS[v])
            self.pg.execute("VACUUM ANALYZE w", dbname=DBS[v])
        self.ocs["trig"] = self.start_sidecar("trig", {})
        self.ocs["wal"] = self.start_sidecar("wal", {"wal": "on", "wal_slot": SLOT})
        wait_for(lambda: self.ocs["wal"].stats().get("wal_holder") == 1, 30,
                 "the WAL sidecar to hold the slot")
        notify = self.pg.execute("SELECT value FROM objcached.meta WHERE key = 'notify'",
                                 dbname=DBS["trig"])[0][0]
        if notify != "off":
            raise BenchError(f"wr_trig: the hook's notify is {notify!r}, not the default off")
        step(f"write world: PostgreSQL 127.0.0.1:{self.pg.port} (fsync, synchronous_commit "
             f"and full_page_writes on), {self.rows:,} rows in each of wr_plain, wr_trig "
             f"(trigger hook, notify off), wr_wal (WAL source) "
             f"({time.monotonic() - t0:.1f} s)")

    def use(self, variant):
        """Before a run of `variant`: a 'wal@X' one reloads the WAL sidecar
        with wal_batch_interval X, and 'wal@X+nokeys' with wal_feed_keys off
        too (SIGHUP), unless it runs with those already."""
        _, _, spec = variant.partition("@")
        oc = self.ocs["wal"]
        if not spec or getattr(oc, "bench_spec", None) == spec:
            return
        interval, _, nokeys = spec.partition("+")
        text = harness.edit(oc.config_text, "postgresql", "wal_batch_interval", interval)
        text = harness.edit(text, "postgresql", "wal_feed_keys", "off" if nokeys else "on")
        if not harness.reload(oc, text):
            raise BenchError(f"the WAL sidecar refused {spec}")
        oc.config_text = text
        oc.bench_spec = spec

    def config(self, variant, postgresql, objcached=None, near_ttl=None):
        model = {"table": "w", "key_type": "bigint", "ttl": "1h"}
        if near_ttl:
            model["near_ttl"] = near_ttl
        return {
            "objcached": {"log_level": "warn", "max_keys": "1024", **(objcached or {})},
            "memcached": {"servers": " ".join(m.address for m in self.mcs)},
            "postgresql": {"conninfo": self.conninfo(variant), "connections": "2",
                           "invalidation_poll": "1s", **postgresql},
            f"model {MODEL[variant]}": model,
        }

    def conninfo(self, variant):
        return (f"host={self.pg.dir} port={self.pg.port} dbname={DBS[variant]} "
                f"user={self.pg.SUPERUSER}")

    def start_sidecar(self, variant, postgresql):
        oc = harness.Objcached(self.config(variant, postgresql), binary=self.args.objcached,
                               parent_dir=self.dir)
        hook = subprocess.run([self.args.objcached, "--install-hook", "-c", oc.config_path],
                              capture_output=True, text=True, timeout=120)
        if hook.returncode != 0:
            raise BenchError(f"--install-hook ({variant}) failed:\n{hook.stdout}{hook.stderr}")
        gen = self.pg.execute("SELECT generation FROM objcached.models WHERE model = %s",
                              (MODEL[variant],), dbname=DBS[variant])[0][0]
        self.prefix[variant] = f"oc:{MODEL[variant]}~{gen}:" if gen else f"oc:{MODEL[variant]}:"
        return oc.start()

    def stop(self):
        problems = []
        for oc in self.ocs.values():
            try:
                oc.stop()
            except Exception as e:  # noqa: BLE001 - stop the others anyway
                problems.append(f"stopping {oc}: {e}")
        if self.pg is not None:
            self.pg.cleanup()
        if problems:
            raise BenchError("\n".join(problems))

    # -- measuring

    def meter(self):
        """Cluster-wide WAL and commit counters, and the CPU of the sidecars
        and of the WAL sender, now."""
        row = self.pg.execute(
            "SELECT w.wal_sync, w.wal_bytes::bigint, "
            "(SELECT sum(xact_commit)::bigint FROM pg_stat_database), "
            "(SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_replication), "
            "(SELECT coalesce(array_agg(pid ORDER BY pid), '{}') FROM pg_stat_activity "
            " WHERE application_name LIKE 'objcached%%' AND backend_type = 'client backend'), "
            "(SELECT coalesce(array_agg(application_name ORDER BY pid), '{}') "
            " FROM pg_stat_activity "
            " WHERE application_name LIKE 'objcached%%' AND backend_type = 'client backend') "
            "FROM pg_stat_wal w")[0]
        backends, roles = {}, {}
        for pid, app in zip(row[4], row[5]):
            try:
                backends[pid] = cpu_seconds(pid)
                roles[pid] = BACKEND_ROLES.get(app, "other")
            except OSError:  # gone since the query: it did not last the run
                pass
        return {"wal_sync": row[0], "wal_bytes": row[1], "commits": row[2],
                "cpu_backends": backends, "backend_roles": roles,
                "cpu_walsender": sum(cpu_seconds(pid) for pid in row[3]),
                "cpu_trig": cpu_seconds(self.ocs["trig"].pid),
                "cpu_wal": cpu_seconds(self.ocs["wal"].pid),
                "cs_walsender": sum(context_switches(pid) for pid in row[3]),
                "cs_sidecars": sum(context_switches(oc.pid) for oc in self.ocs.values())}

    # -- between runs

    def settle(self):
        """Every invalidation of the last run applied: the outbox empty, the
        slot confirmed past the WAL written so far. Then a CHECKPOINT, so no
        run pays for the previous one's dirty pages."""
        wait_for(lambda: self.pg.execute("SELECT count(*) FROM objcached.outbox",
                                         dbname=DBS["trig"])[0][0] == 0, 60,
                 "the trigger consumer to drain the outbox")
        lsn = self.pg.execute("SELECT pg_current_wal_lsn()::text", dbname=DBS["wal"])[0][0]
        wait_for(lambda: self.pg.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s", (lsn, SLOT), dbname=DBS["wal"])[0][0], 60,
            "the WAL reader to confirm the last run's WAL")
        self.pg.execute("CHECKPOINT")


# ------------------------------------------------------------------ pgbench

def scripts(world):
    """The two shapes of transaction, as pgbench scripts. Ids below the
    probe's range; the 3-statement one updates ids in increasing order (a,
    a + n/3, a + 2n/3), so concurrent transactions cannot deadlock."""
    n = world.rows - world.probes
    third = n // 3
    out = {}
    for shape, text in (
            (1, f"\\set id random(1, {n})\n"
                "UPDATE w SET v = v + 1 WHERE id = :id;\n"),
            (3, f"\\set a random(1, {third})\n"
                f"\\set b :a + {third}\n"
                f"\\set c :b + {third}\n"
                "BEGIN;\n"
                "UPDATE w SET v = v + 1 WHERE id = :a;\n"
                "UPDATE w SET v = v + 1 WHERE id = :b;\n"
                "UPDATE w SET v = v + 1 WHERE id = :c;\n"
                "COMMIT;\n")):
        path = os.path.join(world.pg.dir, f"writes_{shape}.sql")
        with open(path, "w") as f:
            f.write(text)
        out[shape] = path
    return out


def run_variants(cfg):
    """What a round runs: the unwatched table, the trigger hook, and the WAL
    source once per cfg["writes_wal"] entry ("wal", or "wal@<interval>")."""
    return ["plain", "trig"] + cfg["writes_wal"]


def base(variant):
    """'wal@5ms' -> 'wal': the database, model and sidecar of a variant."""
    return variant.partition("@")[0]


def pgbench(world, variant, script, clients, seconds):
    argv = [os.path.join(world.pg.bindir, "pgbench"), "-n", "-M", "prepared",
            "-T", str(seconds), "-c", str(clients), "-j", str(min(clients, 2)), "-f", script,
            "-h", world.pg.dir, "-p", str(world.pg.port), "-U", world.pg.SUPERUSER,
            DBS[base(variant)]]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def parse_count(out):
    for line in out.splitlines():
        if line.startswith("number of transactions actually processed:"):
            return int(line.split(":")[1].split("/")[0])
    raise BenchError(f"no transaction count in pgbench's output:\n{out}")


def per_tx(m0, m1, n):
    """What one run cost per writer transaction: WAL flushes (fsyncs) and
    records of the whole cluster, commits of every session (the writers',
    and the feed appends and heartbeats of the sidecars), CPU of the
    sidecars, of the WAL sender, and of the backends that run the sidecars'
    SQL (feed appends and polls, claims, heartbeats)."""
    d = {k: m1[k] - m0[k] for k in m1 if k not in ("cpu_backends", "backend_roles")}
    by_role = dict.fromkeys(set(BACKEND_ROLES.values()) | {"other"}, 0.0)
    for pid, cpu in m1["cpu_backends"].items():
        if pid in m0["cpu_backends"]:
            by_role[m1["backend_roles"][pid]] += cpu - m0["cpu_backends"][pid]
    d["cpu_backends"] = sum(by_role.values())
    n = max(n, 1)
    return {"tx": n, "wal_syncs_per_tx": d["wal_sync"] / n,
            "wal_bytes_per_tx": d["wal_bytes"] / n, "commits_per_tx": d["commits"] / n,
            "sidecar_cpu_us_per_tx": (d["cpu_trig"] + d["cpu_wal"]) / n * 1e6,
            "walsender_cpu_us_per_tx": d["cpu_walsender"] / n * 1e6,
            "backend_cpu_us_per_tx": d["cpu_backends"] / n * 1e6,
            **{f"backend_{role}_cpu_us_per_tx": cpu / n * 1e6 for role, cpu in by_role.items()},
            "sidecar_cs_per_tx": d["cs_sidecars"] / n,
            "walsender_cs_per_tx": d["cs_walsender"] / n}


def perf_record(cfg, name, secs):
    """With --writes-perf: every CPU of the machine sampled (call graphs
    included) for the run's first secs - 1 seconds, beside pgbench."""
    if not cfg.get("writes_perf"):
        return None
    out = os.path.join(cfg["writes_perf"], f"{name}.data")
    return subprocess.Popen(["perf", "record", "-a", "-g", "-q", "-o", out, "--",
                             "sleep", str(max(secs - 1, 1))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -------------------------------------------------------------------- probe

class Probe(threading.Thread):
    """While a run's writers work: every 50 ms, a row of the probe's range is
    cached (read through the variant's sidecar until memcached holds it),
    then updated (autocommit; timed from the acknowledgment) and memcached
    polled until the entry is gone: every millisecond for the first 10 ms,
    then every tenth of the time waited so far (a delay is seen up to 10%
    late, never early). For the plain table: the same UPDATE, nothing timed,
    nothing polled.

    The polling is measurement apparatus that loads the watched variants
    only, on the same 2 cores as the writers: every 0.2 ms (until
    2026-12-07) the probe's thread took about 3% of the machine's samples in
    a watched run (perf, 8 writers), and every 1 ms still 40-100 us of CPU
    per writer transaction; its thread's CPU is reported per writer
    transaction beside the sidecars' (probe CPU)."""

    PACE = 0.05
    POLL = 0.001

    def __init__(self, world, variant, first):
        super().__init__(daemon=True)
        self.w, self.variant, self.i = world, variant, first
        self.stop_flag = threading.Event()
        self.delays = []
        self.error = None
        self.cpu_s = 0.0

    def run(self):
        t0 = time.thread_time()
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001 - reported by the phase
            self.error = e
        finally:
            self.cpu_s = time.thread_time() - t0

    def ids(self):
        lo = self.w.rows - self.w.probes + 1
        while True:
            yield lo + self.i % self.w.probes
            self.i += 1

    def loop(self):
        v = base(self.variant)
        conn = self.w.pg.connect(dbname=DBS[v])
        cur = conn.cursor()
        oc = McText(self.w.ocs[v].sock) if v != "plain" else None
        mcs = [McText(m.address) for m in self.w.mcs]
        try:
            for ident in self.ids():
                if self.stop_flag.is_set():
                    return
                t_next = time.monotonic() + self.PACE
                if oc is None:
                    cur.execute("UPDATE w SET v = v + 1 WHERE id = %s", (ident,))
                else:
                    self.delays.append(self.sample(cur, oc, mcs, ident))
                time.sleep(max(0.0, t_next - time.monotonic()))
        finally:
            for c in mcs + ([oc] if oc else []):
                c.close()
            conn.close()

    def sample(self, cur, oc, mcs, ident):
        v = base(self.variant)
        key = f"{self.w.prefix[v]}{ident}"
        oc.get(f"{MODEL[v]}:{ident}")
        holder = None
        deadline = time.monotonic() + 5
        while holder is None:      # the fill's write-back lands after the answer
            holder = next((m for m in mcs if m.get(key) is not None), None)
            if holder is None:
                if time.monotonic() > deadline:
                    raise BenchError(f"probe: {key} never reached memcached")
                time.sleep(self.POLL)
        cur.execute("UPDATE w SET v = v + 1 WHERE id = %s", (ident,))
        t0 = time.perf_counter()
        while holder.get(key) is not None:
            if time.perf_counter() - t0 > 30:
                raise BenchError(f"probe: {key} still in memcached 30 s after its UPDATE")
            # every millisecond at first, then a tenth of the wait so far: a
            # delay is seen at most 10% late (never early), and a second-long
            # one (the trigger hook's poll) costs about 45 reads, not 1,000
            time.sleep(max(self.POLL, (time.perf_counter() - t0) / 10))
        return (time.perf_counter() - t0) * 1000


# -------------------------------------------------------------------- phase

def phase_writes(world, cfg, rng):
    secs, rounds = cfg["writes_seconds"], cfg["writes_rounds"]
    step(f"writes: durable UPDATEs by {', '.join(map(str, cfg['writes_c']))} writers, "
         f"{secs} s runs, plain / trigger hook / WAL source interleaved, {rounds} round(s)")
    paths = scripts(world)
    runs = []
    probe_next = 0
    t0 = time.monotonic()
    for rnd in range(rounds):
        for shape in cfg["writes_shapes"]:
            for c in cfg["writes_c"]:
                order = run_order(cfg)
                rng.shuffle(order)
                for v, probed in order:
                    world.use(v)
                    world.settle()
                    m0 = world.meter()
                    p = pgbench(world, v, paths[shape], c, secs)
                    rec = perf_record(cfg, f"{rnd + 1}-{shape}-{c}-{v}"
                                      + ("-probed" if probed and apart(cfg) else ""), secs)
                    probe = Probe(world, v, probe_next) if probed else None
                    if probe is not None:
                        probe.start()
                    out, err = p.communicate(timeout=secs + 120)
                    m1 = world.meter()
                    if rec is not None:
                        rec.wait(timeout=60)
                    if probe is not None:
                        probe.stop_flag.set()
                        probe.join(60)
                        probe_next = probe.i + 1
                    if p.returncode != 0:
                        raise BenchError(f"pgbench ({v}, {c} writers) failed:\n{out}\n"
                                         f"{err[-2000:]}")
                    if probe is not None and probe.error is not None:
                        raise BenchError(f"writes probe ({v}): {probe.error}")
                    tps = bench_near.parse_tps(out)
                    n = parse_count(out)
                    runs.append({"round": rnd, "shape": shape, "C": c, "variant": v,
                                 "probed": probed, "counted": not (probed and apart(cfg)),
                                 "tps": tps, "delays": probe.delays if probe else [],
                                 **per_tx(m0, m1, n),
                                 "probe_cpu_us_per_tx":
                                 probe.cpu_s / max(n, 1) * 1e6 if probe else 0.0})
                    d = sorted(probe.delays) if probe else []
                    label = v + (" (probe)" if probed and apart(cfg) else "")
                    say(f"    round {rnd + 1} {shape}-statement C={c:<2} {label:<24} "
                        f"{tps:>8,.0f} tx/s" + (f"  probe: {len(d)} deletes, p50 "
                                                f"{pct(d, 50):.1f} ms, max {d[-1]:.1f} ms"
                                                if d else ""))
    say(f"    ({(time.monotonic() - t0) / 60:.1f} min)")
    return summarize_writes(runs, cfg)


def apart(cfg):
    """Whether the probe runs in runs of its own (--writes-probe apart)."""
    return cfg.get("writes_probe", "apart") == "apart"


def run_order(cfg):
    """A cell's runs as (variant, probed): with the probe apart, every
    variant unprobed (its tx/s counted) and every watched one once more with
    the probe (its tx/s reported, not counted); with it during, every
    variant once, probed (the plain one's UPDATEs untimed)."""
    vs = run_variants(cfg)
    if apart(cfg):
        return [(v, False) for v in vs] + [(v, True) for v in vs[1:]]
    return [(v, True) for v in vs]


def summarize_writes(runs, cfg):
    cells = []
    for shape in cfg["writes_shapes"]:
        for c in cfg["writes_c"]:
            rs = [r for r in runs if r["shape"] == shape and r["C"] == c]
            plain = {r["round"]: r["tps"] for r in rs
                     if r["variant"] == "plain" and r["counted"]}
            for v in run_variants(cfg):
                mine = [r for r in rs if r["variant"] == v and r["counted"]]
                ratios = [r["tps"] / plain[r["round"]] for r in mine if plain.get(r["round"])]
                ratio, lo, hi = spread(ratios)
                cells.append({"shape": shape, "C": c, "variant": v,
                              "tps": statistics.median(r["tps"] for r in mine),
                              **{k: statistics.median(r[k] for r in mine) for k in PER_TX},
                              "ratio": ratio, "ratio_min": lo, "ratio_max": hi,
                              "rounds": len(mine)})
    probes = {}
    for v in run_variants(cfg)[1:]:
        mine = [r for r in runs if r["variant"] == v and r["probed"]]
        d = sorted(x for r in mine for x in r["delays"])
        plain = {(r["round"], r["shape"], r["C"]): r["tps"] for r in runs
                 if r["variant"] == "plain" and r["counted"]}
        ratios = [r["tps"] / plain[k] for r in mine
                  if plain.get(k := (r["round"], r["shape"], r["C"]))]
        probes[v] = {"samples": len(d), "p50_ms": pct(d, 50), "p99_ms": pct(d, 99),
                     "max_ms": d[-1] if d else float("nan"), "delays": d,
                     # what the probed runs did, beside the unwatched table's
                     # runs of their cell and round (with --writes-probe apart
                     # these are not the ratios above)
                     "ratio_probed": statistics.median(ratios) if ratios else float("nan"),
                     "probe_cpu_us_per_tx":
                     statistics.median(r["probe_cpu_us_per_tx"] for r in mine)
                     if mine else float("nan")}
    return {"cells": cells, "probes": probes, "runs": [
        {k: r[k] for k in ("round", "shape", "C", "variant", "probed", "counted", "tps",
                           *PER_TX)} for r in runs]}


PER_TX = ("wal_syncs_per_tx", "wal_bytes_per_tx", "commits_per_tx", "sidecar_cpu_us_per_tx",
          "walsender_cpu_us_per_tx", "backend_cpu_us_per_tx", "backend_wal_cpu_us_per_tx",
          "backend_feed_cpu_us_per_tx", "backend_other_cpu_us_per_tx", "sidecar_cs_per_tx",
          "walsender_cs_per_tx", "probe_cpu_us_per_tx")
# The sidecars' backends by what they run (their application_name): the WAL
# reader's SQL (feed appends, heartbeats, the slot's lag), the feed follower's
# polls, and the rest (outbox consumers, loads).
BACKEND_ROLES = {"objcached-wal": "wal", "objcached-feed": "feed"}


def phase_nearapply_wal(runner, world, cfg):
    """Two sidecars with the near-cache on wr_wal (standby WAL candidates:
    the writes phase's sidecar holds the slot), under near reads and
    writes."""
    hot, probes = cfg["nearapply_hot_wal"], cfg["nearapply_probe_ids"]
    step("nearapply (WAL): commit to applied in two sidecars' near-caches, under load")
    ocs = []
    try:
        for _ in range(2):
            cfg_ = world.config("wal", {"wal": "on", "wal_slot": SLOT},
                                objcached={"near_cache_size": cfg["near_size"],
                                           "metrics_listen":
                                           f"127.0.0.1:{harness.free_port()}"},
                                near_ttl="1h")
            ocs.append(harness.Objcached(cfg_, binary=world.args.objcached,
                                         parent_dir=world.dir).start())
        for oc in ocs:
            harness.wait_until(lambda oc=oc: oc.stats().get("near_serving") == 1, timeout=30,
                               what="a WAL-mode sidecar's near-cache to serve")
            bench_near.warm_sidecar_near(runner.loadgen, oc, "Ww:", 1, hot,
                                         runner.seed * 43 + len(ocs))
        return bench_near.run_apply(
            runner, "wal", ocs, world.pg, DBS["wal"], "UPDATE w SET pad = %s WHERE id = %s",
            "Ww:", hot, list(range(hot - probes + 1, hot + 1)), cfg,
            lambda secs: bench_near.pgbench_updates(world.pg, DBS["wal"], "w", "v",
                                                    hot - probes, cfg["nearapply_write_rate"],
                                                    secs))
    finally:
        for oc in ocs:
            oc.stop()
            oc.cleanup()


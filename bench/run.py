#!/usr/bin/python3
"""objcached benchmark: objcached side by side with direct memcached,
twemproxy and PostgreSQL, in one run.

Starts on loopback a throwaway PostgreSQL (pg_stat_statements loaded), three
memcached servers, twemproxy (Debian's nutcracker) in front of the same three,
and objcached over them; loads a table of --rows rows (row JSON ~250 bytes);
then runs every path through the same C load generator (bench/loadgen.c,
libmemcached/libpq, pthreads), the targets of one setting always measured one
after the other in a seeded shuffled order, repeated --trials times:

  hit      get-multi, all hits: direct pool / twemproxy / objcached TCP / unix /
           objcached TCP in memcached's binary protocol (oc-tcp-bin: a GETKQ per
           key then NOOP, libmemcached's binary get-multi), side by side with
           the text protocol's oc-tcp
  cold     all misses: hand-written (get-multi, one = ANY, set-multi) / N+1 /
           objcached; the bare = ANY query as the reference
  mixed    90% and 99% hits, Zipfian (s = 1) choice of the hot keys; 90% hits
           with a uniform choice too (phase mix90u)
  herd     64 clients ask at once for the same 100 cold keys: rows PostgreSQL read
  inval    commit-to-cache delay of SQL updates while the hit path is loaded;
           trigger overhead of the hook on 1-row and 100,000-row UPDATEs
  footprint  objcached RSS idle, with 10,000 connections, after the run; CPU
           per 100,000 keys served
  failure  one of the three memcached servers SIGKILLed under steady reads
           through two sidecars: PostgreSQL rows read per second and client
           p99 during the outage, with a gutter server, with the rehash
           fallback (ketama over the other two) and with failover off (the
           behaviour before failover)
  expiry   ten hot keys read by 8 clients through two sidecars while their
           5 s TTL runs out again and again: p99/p99.9/max with and without
           refresh_ahead, with fast loads and with 200 ms loads (a view)

Writes DIR/runs.csv (every measurement), DIR/summary.csv (medians and ratios),
DIR/summary.md (the tables printed at the end), DIR/*.png (gnuplot).

Run through bench/run.sh, which installs and builds first:

    bash bench/run.sh            # the full run (about 15 minutes on 2 cores)
    bash bench/run.sh --quick    # the smoke run (under 3 minutes)

Direct use: /usr/bin/python3 bench/run.py [--quick] [--out DIR] [--seed N]
            [--only hit,cold,...] [--objcached BIN] [--loadgen BIN]
            [--hit-k 1,10,100] [--hit-c 1,4,16,64] [--hit-targets direct,oc-tcp,...]
            [--trials N] [--old BIN] [--pgbouncer session,transaction]
A focused run of the hit path, text against binary through objcached:
    bench/run.py --only hit --hit-k 100 --hit-c 1,4,16 --hit-targets oc-tcp,oc-tcp-bin
objcached's cold and mixed paths through pgbouncer (oc-pgb-session: session mode;
oc-pgb-txn: transaction mode, objcached's pool_mode = transaction, default_pool_size =
its 4 loader connections) beside oc-unix, straight to PostgreSQL:
    bench/run.py --only cold,mixed --pgbouncer session,transaction
"""

import argparse
import csv
import itertools
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402

from bench_common import (BenchError, cluster_cpu_seconds, context_switches,  # noqa: E402
                          cpu_seconds, items_sql, med, pct, rss_kib, say, spread, step)
import bench_near  # noqa: E402
import bench_writes  # noqa: E402

# In the order they run: zipf caches ids of the whole table, so it comes
# after the phases that need cold ids; failure and expiry flush the pool.
PHASES = ["cold", "hit", "mixed", "herd", "inval", "zipf", "footprint", "nearapply",
          "nearrss", "failure", "expiry", "writes"]
# Phases that read the hot set warmed for the hit path (the others need none).
WARM_PHASES = {"hit", "mixed", "herd", "inval", "footprint", "nearapply"}
# oc-near: objcached with the near-cache (a second process over the same
# pool); oc-old: --old BIN, an earlier build, side by side (not by default).
HIT_TARGETS = ["direct", "twemproxy", "oc-tcp", "oc-unix", "oc-tcp-bin", "oc-near",
               "oc-near-tcp", "oc-old"]
DEFAULT_HIT_TARGETS = ["direct", "twemproxy", "oc-tcp", "oc-unix", "oc-tcp-bin", "oc-near"]
# --pgbouncer: objcached whose loaders go through a pgbouncer in front of the
# same PostgreSQL, in the cold and mixed phases: pgbouncer's pool_mode, the
# target's name (objcached's own pool_mode is the same word).
PGB_TARGETS = {"session": "oc-pgb-session", "transaction": "oc-pgb-txn"}

# (name, settings) of the full and the quick run. `hot` ids are kept cached
# for the hit and mixed paths; ids above it are the cold pool.
FULL = dict(rows=1_000_000, hot=200_000, trials=3, seconds=2.0,
            hit_k=[1, 10, 100], hit_c=[1, 4, 16, 64],
            cold_k=[10, 100], cold_c=[1, 4, 16],
            mixed_k=[100], mixed_c=[4, 16], mixed_rates=[0.90, 0.99],
            mixed_uniform_rates=[0.90],
            inval_updates=300, inval_min_seconds=10, trig_single=2000, trig_bulk=100_000,
            trig_trials=3,
            conns=10_000, soak_seconds=60,
            outage_seconds=30, failure_before_seconds=3, failure_ids=10_000,
            expiry_seconds=16, expiry_loads=2,
            near_size="128m",
            zipf_s=0.99, zipf_c=[4, 16], zipf_trials=5, zipf_prewarm=30_000,
            nearapply_samples=300, nearapply_probe_ids=2_000, nearapply_write_rate=1000,
            nearapply_reads=100_000,
            nearapply_hot_wal=100_000, nearrss_limit="64m", nearrss_passes=2,
            writes_rows=1_000_000, writes_probe_ids=10_000, writes_c=[1, 8, 32],
            writes_shapes=[1, 3], writes_seconds=6, writes_rounds=5,
            writes_shared_buffers="512MB")
QUICK = dict(rows=100_000, hot=20_000, trials=1, seconds=0.5,
             hit_k=[1, 100], hit_c=[1, 16],
             cold_k=[100], cold_c=[4],
             mixed_k=[100], mixed_c=[4], mixed_rates=[0.90], mixed_uniform_rates=[],
             inval_updates=40, inval_min_seconds=4, trig_single=200, trig_bulk=20_000,
             trig_trials=1,
             conns=2_000, soak_seconds=5,
             outage_seconds=4, failure_before_seconds=1, failure_ids=5_000,
             expiry_seconds=6, expiry_loads=1,
             near_size="32m",
             zipf_s=0.99, zipf_c=[4], zipf_trials=1, zipf_prewarm=1_000,
             nearapply_samples=20, nearapply_probe_ids=200, nearapply_write_rate=200,
             nearapply_reads=20_000,
             nearapply_hot_wal=5_000, nearrss_limit="8m", nearrss_passes=1,
             writes_rows=20_000, writes_probe_ids=1_000, writes_c=[8],
             writes_shapes=[1, 3], writes_seconds=1, writes_rounds=1,
             writes_shared_buffers="128MB")


# --------------------------------------------------------------- the world

class World:
    """Every server of the run, and how to reach each target."""

    def __init__(self, args, cfg, workdir):
        self.args, self.cfg, self.dir = args, cfg, workdir
        self.pg = self.oc = self.tw = None
        self.near = None     # objcached with the near-cache on (target oc-near)
        self.old = None      # --old: an earlier build of objcached (target oc-old)
        # objcached processes side by side with oc-unix in the cold and mixed
        # phases (oc-old, oc-pgb-*), by target name, in the order started
        self.sides = {}
        self.pgbs = {}       # --pgbouncer: target name -> its harness.Pgbouncer
        self.mcs = []

    def start(self):
        cfg = self.cfg
        t0 = time.monotonic()
        self.pg = harness.Postgres(dbname="bench", parent_dir=self.dir, settings={
            "max_connections": "300", "shared_buffers": "256MB",
            "work_mem": "16MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"})
        self.pg.start()
        step(f"PostgreSQL 127.0.0.1:{self.pg.port} ({time.monotonic() - t0:.1f} s)")
        self.mcs = [harness.Memcached(parent_dir=self.dir, memory_mb=1024, threads=1).start()
                    for _ in range(3)]
        step("memcached " + ", ".join(m.address for m in self.mcs))
        self.load_data(cfg["rows"])
        self.start_twemproxy()
        self.start_objcached()
        if cfg["want_near"]:
            self.start_near()
        if self.args.old:
            self.start_old()
        for mode in cfg.get("pgbouncer", ()):    # bench/profile.py's cfg has none
            self.start_pgbouncer(mode)

    def load_data(self, rows):
        t0 = time.monotonic()
        sql = ("DROP TABLE IF EXISTS items, items_plain;"
               + items_sql(rows, self.cfg.get("body_bytes", 80))
               + "CREATE TABLE items_plain (LIKE items INCLUDING ALL);"
               + "INSERT INTO items_plain SELECT * FROM items;")
        self.pg.execute(sql)
        self.pg.execute("VACUUM ANALYZE items")      # VACUUM cannot run in a transaction
        self.pg.execute("VACUUM ANALYZE items_plain")
        avg = self.pg.execute("SELECT avg(length(row_to_json(i)::text))::int FROM "
                              "(SELECT * FROM items LIMIT 10000) i")[0][0]
        self.row_bytes = avg
        step(f"loaded {rows:,} rows into items and items_plain (row JSON {avg} bytes on "
             f"average) in {time.monotonic() - t0:.1f} s")

    def start_twemproxy(self):
        nut = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
        if not os.path.exists(nut):
            raise BenchError("nutcracker not found (apt-get install nutcracker)")
        port = harness.free_port()
        conf = os.path.join(self.dir, "nutcracker.yml")
        with open(conf, "w") as f:
            f.write("bench:\n"
                    f"  listen: 127.0.0.1:{port}\n"
                    "  hash: fnv1a_64\n  distribution: ketama\n"
                    "  timeout: 2000\n  server_retry_timeout: 2000\n"
                    "  auto_eject_hosts: false\n  servers:\n")
            for m in self.mcs:
                f.write(f"   - {m.address}:1\n")
        log = open(os.path.join(self.dir, "nutcracker.log"), "ab")
        self.tw = subprocess.Popen([nut, "-c", conf, "-s", str(harness.free_port()),
                                    "-a", "127.0.0.1"], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log)
        self.tw_port = port
        harness.wait_until(lambda: harness.port_accepts(port), timeout=10,
                           what="twemproxy to accept")
        step(f"twemproxy (nutcracker) 127.0.0.1:{port} over the same pool")

    def start_objcached(self):
        config = {
            "objcached": {"max_connections": str(self.cfg["conns"] + 2000),
                          "log_level": "warn", "max_keys": "1024"},
            "memcached": {"servers": " ".join(m.address for m in self.mcs)},
            "postgresql": {"conninfo": self.pg.conninfo, "connections": "4",
                           "invalidation_poll": "1s"},
            "model Item": {"table": "items", "key_type": "bigint", "ttl": "1h"},
        }
        self.oc = harness.Objcached(config, binary=self.args.objcached, parent_dir=self.dir)
        hook = subprocess.run([self.args.objcached, "--install-hook", "-c", self.oc.config_path],
                              capture_output=True, text=True, timeout=120)
        if hook.returncode != 0:
            raise BenchError(f"--install-hook failed:\n{hook.stdout}{hook.stderr}")
        self.pg.execute("SELECT objcached.attach('public.items', 'Item', 'id')")
        # Notifications on, as version 1 of the hook had them by default: the
        # invalidation phase measures the LISTEN/NOTIFY path, as it did in
        # the runs docs/benchmarks.md compares with. (Version 2 installs with
        # notify off; then a trigger-mode invalidation waits for the next
        # invalidation_poll, 1 s here: the writes phase measures that mode.)
        self.pg.execute("UPDATE objcached.meta SET value = 'on' WHERE key = 'notify'")
        # objcached's keys carry the model's generation (sql/install.sql):
        # oc:Item~G:id once the model is attached; the direct path reads those.
        gen = self.pg.execute("SELECT generation FROM objcached.models WHERE model = 'Item'")[0][0]
        self.oc_prefix = f"oc:Item~{gen}:" if gen else "oc:Item:"
        self.oc.start()
        harness.wait_until(lambda: self.oc.stats().get("inval_connected", 1) == 1,
                           timeout=20, what="the invalidation consumer to connect")
        self.rss_idle = rss_kib(self.oc.pid)
        step(f"objcached 127.0.0.1:{self.oc.port} and {self.oc.sock} "
             f"(RSS idle {self.rss_idle / 1024:.1f} MiB)")

    def base_config(self):
        """The main objcached's settings, for the other sidecars of the run."""
        return {
            "objcached": {"max_connections": "4000", "log_level": "warn", "max_keys": "1024"},
            "memcached": {"servers": " ".join(m.address for m in self.mcs)},
            "postgresql": {"conninfo": self.pg.conninfo, "connections": "4",
                           "invalidation_poll": "1s"},
            "model Item": {"table": "items", "key_type": "bigint", "ttl": "1h"},
        }

    def near_config(self, size):
        """A sidecar like the main one with the near-cache on for Item.
        near_ttl 1h (the longest allowed): the hit phase measures hits for
        minutes; invalidations, not the TTL, keep entries correct."""
        config = self.base_config()
        config["objcached"].update(near_cache_size=size,
                                   metrics_listen=f"127.0.0.1:{harness.free_port()}")
        config["model Item"]["near_ttl"] = "1h"
        return config

    def start_near(self):
        self.near = harness.Objcached(self.near_config(self.cfg["near_size"]),
                                      binary=self.args.objcached, parent_dir=self.dir).start()
        harness.wait_until(lambda: self.near.stats().get("near_serving") == 1, timeout=20,
                           what="the near-cache to serve (a fresh feed)")
        step(f"objcached with the near-cache ({self.cfg['near_size']}) on {self.near.sock}")

    def start_old(self):
        config = self.base_config()
        self.old = harness.Objcached(config, binary=self.args.old, parent_dir=self.dir).start()
        self.sides["oc-old"] = self.old
        step(f"objcached built earlier ({self.args.old}) on {self.old.sock}")

    def start_pgbouncer(self, mode):
        """A pgbouncer in `mode` in front of the run's PostgreSQL, and an
        objcached (this build, pool_mode = `mode`) whose every connection to
        PostgreSQL goes through it. Its keys are oc-unix's (the same model
        and generation): the hot set warmed for oc-unix is its too, and the
        cold cursor hands each run ids nobody asked, as for oc-old. In
        transaction mode the server side is as large as the loaders
        (default_pool_size = connections); the consumer's and the sampler's
        short transactions share it, as they would in a fleet."""
        name = PGB_TARGETS[mode]
        config = self.base_config()
        conns = config["postgresql"]["connections"]
        pgb = harness.Pgbouncer(self.pg, pool_mode=mode, settings=(
            {"default_pool_size": conns} if mode == "transaction" else {}))
        self.pgbs[name] = pgb.start()
        config["postgresql"].update(conninfo=pgb.conninfo(), pool_mode=mode)
        self.sides[name] = harness.Objcached(config, binary=self.args.objcached,
                                             parent_dir=self.dir).start()
        step(f"pgbouncer ({mode} mode) 127.0.0.1:{pgb.port}; objcached with pool_mode = "
             f"{mode} through it on {self.sides[name].sock} (target {name})")

    def stop(self):
        if self.tw is not None and self.tw.poll() is None:
            self.tw.terminate()
            try:
                self.tw.wait(10)
            except subprocess.TimeoutExpired:
                self.tw.kill()
        problems = []
        for s in [self.near] + list(self.sides.values()) + [self.oc] + self.mcs:
            if s is not None:
                try:
                    s.stop()    # objcached: exit 0 and no sanitizer report, or it raises
                except Exception as e:  # noqa: BLE001 - stop the others anyway
                    problems.append(f"stopping {s}: {e}")
        for pgb in self.pgbs.values():   # after the objcached processes behind them
            try:
                pgb.cleanup()
            except Exception as e:  # noqa: BLE001 - stop the others anyway
                problems.append(f"stopping {pgb}: {e}")
        if self.pg is not None:
            self.pg.cleanup()
        if problems:
            raise BenchError("\n".join(problems))

    # -- targets: (servers argument for the load generator, key prefix)

    def target(self, name):
        pool = ",".join(m.address for m in self.mcs)
        return {
            "direct": (pool, self.oc_prefix),      # objcached's own entries, read straight
            "twemproxy": (f"127.0.0.1:{self.tw_port}", "tw:Item:"),
            "oc-tcp": (f"127.0.0.1:{self.oc.port}", "Item:"),
            "oc-tcp-bin": (f"127.0.0.1:{self.oc.port}", "Item:"),   # with --binary
            "oc-unix": (self.oc.sock, "Item:"),
            "oc-near": (self.near.sock if self.near else None, "Item:"),
            "oc-near-tcp": (f"127.0.0.1:{self.near.port}" if self.near else None, "Item:"),
            "oc-old": (self.old.sock if self.old else None, "Item:"),
            **{t: (self.sides[t].sock if t in self.sides else None, "Item:")
               for t in PGB_TARGETS.values()},
            "hand": (pool, "hw:Item:"),            # the hand-written pattern's own keys
            "n1": (pool, "hw:Item:"),
            "sql": (pool, "-"),
        }[name]

    def pgb_targets(self):
        return [t for t in self.sides if t in self.pgbs]

    def process(self, name):
        """The objcached that serves a target, or None."""
        if name.startswith("oc-near"):
            return self.near
        if name in self.sides:
            return self.sides[name]
        return self.oc if name.startswith("oc") else None

    def flush(self):
        # memcached's flush_all spares items written in the current second
        # (its clock has 1 s resolution): wait for the next second first.
        time.sleep(1.05)
        for m in self.mcs:
            m.flush_all()






# ---------------------------------------------------------- load generator

class Runner:
    """Runs the load generator and keeps every result row."""

    MODES = {"direct": "get", "twemproxy": "get", "oc-tcp": "get", "oc-unix": "get",
             "oc-tcp-bin": "get", "oc-near": "get", "oc-near-tcp": "get", "oc-old": "get",
             "oc-pgb-session": "get", "oc-pgb-txn": "get",
             "hand": "hand", "n1": "n1", "sql": "sql"}

    def __init__(self, world, loadgen, seed, csv_path):
        self.w, self.loadgen, self.seed = world, loadgen, seed
        self.rows = []
        self.csv_path = csv_path
        self.seq = 0

    NEAR_STATS = ("near_hits", "near_misses", "near_stored", "near_door_waits",
                  "near_refused_stale", "near_evictions", "near_flushes")

    def run(self, phase, target, k, c, keys, seconds=None, batches=None, extra=(),
            check=True, warmup=0.0, mode=None, seed=None, trial=None, repeat=1):
        servers, prefix = self.w.target(target)
        mode = mode or self.MODES[target]
        self.seq += 1
        argv = [self.loadgen, mode, "--servers", servers, "--prefix", prefix,
                "--pg", self.w.pg.conninfo, "-K", str(k), "-C", str(c),
                "--keys", keys, "--seed", str(seed if seed is not None
                                              else self.seed * 1000 + self.seq),
                "--csv-label", f"{phase}/{target}"]
        if seconds is not None:
            argv += ["--duration", f"{seconds:g}"]
        if batches is not None:
            argv += ["--batches", str(batches)]
        if warmup:
            argv += ["--warmup", f"{warmup:g}"]
        if repeat > 1:
            argv += ["--repeat", str(repeat)]
        if target.endswith("-bin"):
            argv.append("--binary")
        argv += list(extra)
        oc = self.w.process(target) or self.w.oc
        near = oc is not None and oc is self.w.near
        st0 = near and oc.stats()
        oc_cpu0 = cpu_seconds(oc.pid)
        mc_cpu0, tw_cpu0 = self.pool_cpu(), cpu_seconds(self.w.tw.pid)
        pgb = self.w.pgbs.get(target)     # the pgbouncer on the target's path
        pgb_cpu0 = pgb and cpu_seconds(pgb.proc.pid)
        pg_cpu0 = cluster_cpu_seconds(self.w.pg.datadir)
        oc_cs0, mc_cs0 = context_switches(oc.pid), self.pool_cs()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=(seconds or 60) + 120)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        oc_cs, mc_cs = context_switches(oc.pid) - oc_cs0, self.pool_cs() - mc_cs0
        oc_cpu = cpu_seconds(oc.pid) - oc_cpu0
        mc_cpu, tw_cpu = self.pool_cpu() - mc_cpu0, cpu_seconds(self.w.tw.pid) - tw_cpu0
        pgb_cpu = pgb and cpu_seconds(pgb.proc.pid) - pgb_cpu0
        pg_cpu = cluster_cpu_seconds(self.w.pg.datadir) - pg_cpu0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines or proc.returncode not in (0, 1):
            raise BenchError(f"loadgen failed (exit {proc.returncode}): {' '.join(argv)}\n"
                             f"{proc.stdout}\n{proc.stderr[-4000:]}")
        r = json.loads(lines[-1])
        # CPU of every process on the path, over the whole run (its warmup
        # too: summarize divides it by all_keys_asked): the load generator (the only
        # child reaped meanwhile), the objcached serving it, memcached,
        # twemproxy, pgbouncer (oc-pgb-*), PostgreSQL (the whole cluster)
        r.update(phase=phase, target=target, keys_spec=keys, oc_cpu_s=round(oc_cpu, 4),
                 trial=trial, mc_cpu_s=round(mc_cpu, 4), tw_cpu_s=round(tw_cpu, 4),
                 pg_cpu_s=round(pg_cpu, 4), pgb_cpu_s=pgb and round(pgb_cpu, 4),
                 client_cpu_s=round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime,
                                    4),
                 oc_cs=oc_cs, mc_cs=mc_cs,
                 client_cs=(ru1.ru_nvcsw + ru1.ru_nivcsw - ru0.ru_nvcsw - ru0.ru_nivcsw))
        if near:
            st1 = oc.stats()
            for name in self.NEAR_STATS:    # the whole run, its warmup included
                r[name] = st1[name] - st0[name]
        self.rows.append(r)
        self.append_csv(r)
        bad = r.get("bad_values", 0) or r.get("errors", 0)
        if check and bad:
            raise BenchError(f"{phase}/{target} K={k} C={c}: {r.get('bad_values')} wrong values, "
                             f"{r.get('errors')} errors - a benchmark that returns wrong data is "
                             f"not fast\n{proc.stderr[-2000:]}")
        return r

    def pool_cpu(self):
        return sum(cpu_seconds(m.proc.pid) for m in self.w.mcs)

    def pool_cs(self):
        return sum(context_switches(m.proc.pid) for m in self.w.mcs)

    def delete(self, prefix, lo, hi):
        """Delete prefix+id for ids [lo, hi) from the pool (not timed)."""
        if hi <= lo:
            return
        servers = ",".join(m.address for m in self.w.mcs)
        proc = subprocess.run([self.loadgen, "delete", "--servers", servers, "--prefix", prefix,
                               "--ids", f"{lo}:{hi - 1}"], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise BenchError(f"loadgen delete failed: {proc.stderr[-2000:]}")

    FIELDS = ["phase", "target", "mode", "K", "C", "keys_spec", "seconds", "batches", "keys",
              "hits", "misses", "absent", "errors", "bad_values", "keys_per_s", "batches_per_s",
              "p50_us", "p99_us", "p999_us", "max_us", "mean_us", "pg_queries", "oc_cpu_s",
              "trial", "near_hits", "near_misses", "client_cpu_s", "mc_cpu_s", "tw_cpu_s",
              "pg_cpu_s", "all_batches", "pgb_cpu_s"]

    def append_csv(self, r):
        new = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(r)


def progress(r, note=""):
    say(f"    {r['phase']:<6} {r['target']:<10} K={r['K']:<3} C={r['C']:<3} "
        f"{r['keys_per_s']:>11,.0f} keys/s  p50 {r['p50_us']:>8,.0f} us  "
        f"p99 {r['p99_us']:>8,.0f} us  hits {r['hits']}/{r['keys']} {note}")




# ------------------------------------------------------------------ phases

def warm(runner, world, cfg):
    """Cache ids 1..hot for objcached (oc:), twemproxy (tw:) and the hand
    pattern (hw:), then check every one is a hit; fill the near-cache of
    oc-near with them and check that a pass over them is all near hits."""
    hot = cfg["hot"]
    t0 = time.monotonic()
    batches = hot // 100
    runner.run("warm", "oc-unix", 100, 4, f"seq:1:{hot}", batches=batches, seconds=600)
    world.oc.wait_idle(timeout=120)   # write-backs finish after the answers
    runner.run("warm", "hand", 100, 4, f"seq:1:{hot}", batches=batches, seconds=600)
    runner.run("warm", "twemproxy", 100, 4, f"seq:1:{hot}", batches=batches, seconds=600,
               mode="hand")
    checked = ["direct", "twemproxy", "hand", "oc-unix"]
    if world.old is not None:
        # an earlier build may name its keys otherwise: it warms its own
        runner.run("warm", "oc-old", 100, 4, f"seq:1:{hot}", batches=batches, seconds=600)
        world.old.wait_idle(timeout=120)
        checked.append("oc-old")
    for t in checked:
        r = runner.run("warm", t, 100, 4, f"seq:1:{hot}", batches=batches, seconds=600,
                       mode="get")
        if r["hits"] != r["keys"]:
            raise BenchError(f"after warming, {t} found {r['hits']} of {r['keys']} keys")
    for t in world.pgb_targets():
        # oc-unix's entries are theirs (the same keys): a pass over the hot
        # set through each must miss nothing, or its mixed runs are colder
        oc = world.process(t)
        m0 = oc.stats()["get_misses"]
        runner.run("warm", t, 100, 4, f"seq:1:{hot}", batches=batches, seconds=600)
        missed = oc.stats()["get_misses"] - m0
        if missed:
            raise BenchError(f"after warming, {t} missed {missed} of {hot} keys: it does not "
                             "read oc-unix's entries")
    if world.near is not None:
        bench_near.warm_near(runner, world.near, "oc-near", 1, hot)
    step(f"warmed ids 1..{hot:,} for objcached, twemproxy and the hand-written pattern "
         f"({time.monotonic() - t0:.1f} s)")


def interleaved(cfg, rng, targets, *axes):
    """(trial, setting..., target) in the order runs happen: per trial, per
    setting (the product of `axes`), every target once in a seeded shuffled
    order, so that the targets of one setting are measured side by side."""
    for trial in range(cfg["trials"]):
        for setting in itertools.product(*axes):
            order = targets[:]
            rng.shuffle(order)
            for t in order:
                yield (trial, *setting, t)


def setting_seed(runner, *setting):
    """One key-choice seed per (phase, trial, setting), the same for every
    target of it: the targets measured side by side ask the same key streams
    (thread i of each gets the same ids in the same order), so that their
    paired ratio does not also compare two draws of the keys."""
    return runner.seed * 1_000_000 + zlib.crc32(repr(setting).encode()) % 1_000_000


def phase_hit(runner, world, cfg, rng):
    step("hit path: all hits, uniform over the cached ids")
    targets = cfg["hit_targets"]
    for trial, k, c, t in interleaved(cfg, rng, targets, cfg["hit_k"], cfg["hit_c"]):
        r = runner.run("hit", t, k, c, f"uniform:1:{cfg['hot']}",
                       seconds=cfg["seconds"], warmup=0.2, mode="get", trial=trial,
                       seed=setting_seed(runner, "hit", trial, k, c))
        if r["hits"] != r["keys"]:
            raise BenchError(f"hit path {t}: {r['keys'] - r['hits']} misses")
        if "near_hits" in r:
            bench_near.check_all_near(r)
        progress(r, f"trial {trial + 1}")


class ColdCursor:
    """Ids above `hot` that no path asked for since the last flush (cold
    phase, before the hot set is warmed) or that were deleted again after
    use (later phases, which must keep the hot set)."""

    def __init__(self, world, cfg, runner):
        self.w, self.runner = world, runner
        self.lo, self.hi = cfg["hot"] + 1, cfg["rows"]
        self.next = self.lo
        self.may_flush = True

    def take(self, need):
        need = min(need, self.hi - self.lo + 1)
        if self.next + need - 1 > self.hi:
            if not self.may_flush:
                raise BenchError("the cold id pool ran out")
            self.w.flush()       # everything misses again
            self.next = self.lo
        return self.next

    def advance(self, r):
        nxt = r.get("cold_next")
        if nxt is None:
            return
        if nxt < self.next:
            # the run's cursor wrapped around its range (it used every id and
            # then some: a run's threads overshoot its batch limit by up to
            # C batches): nothing is left unasked, flush before the next take
            self.next = self.hi + 1
        else:
            self.next = nxt

    def forget(self, target, lo):
        """Delete the cold ids [lo, next) that `target` cached, and reuse them."""
        prefix = self.w.oc_prefix if target.startswith("oc-") else {"hand": "hw:Item:"}[target]
        self.runner.delete(prefix, lo, self.next)
        self.next = lo


def check_served(r):
    """Every key a run counts in its keys/s must have been served: a value
    from the cache, or a row loaded from PostgreSQL. Each id asked exists,
    so a key that got neither (a miss objcached answered after a lease wait,
    say) would be counted as served without being so."""
    if r.get("absent"):
        raise BenchError(f"{r['phase']}/{r['target']} K={r['K']} C={r['C']}: "
                         f"{r['absent']:,} of {r['keys']:,} keys got neither a value nor a "
                         "row: they would be counted in keys/s without being served")


def phase_cold(runner, world, cfg, rng, cursor):
    step("cold path: all misses (each run asks ids nobody asked before)")
    targets = ["hand", "n1", "oc-unix", "sql"] + list(world.sides)
    for trial, k, c, t in interleaved(cfg, rng, targets, cfg["cold_k"], cfg["cold_c"]):
        # a run stops before its ids wrap around (that would be hits): its
        # threads may overshoot the batch limit by up to C batches
        margin = c * k
        budget = min(400_000 if t != "n1" else 100_000, cursor.hi - cursor.lo + 1 - margin)
        lo = cursor.take(budget + margin)
        r = runner.run("cold", t, k, c, f"seq:{lo}:{cursor.hi}",
                       seconds=cfg["seconds"], batches=budget // k, trial=trial)
        cursor.advance(r)
        # through objcached every key is answered (loaded on a miss), so
        # only the hand-written paths can show cache hits here
        if t in ("hand", "n1") and r["hits"] != 0:
            raise BenchError(f"cold path {t}: {r['hits']} hits")
        check_served(r)
        progress(r, f"trial {trial + 1}")


def mixed_settings(cfg):
    """(key choice, hit rate) of the mixed phase: Zipf (s = 1) at every rate,
    uniform at mixed_uniform_rates (issue 17 asks for 90% hits of both)."""
    return ([("zipf", r) for r in cfg["mixed_rates"]]
            + [("uniform", r) for r in cfg["mixed_uniform_rates"]])


def mixed_phase_name(dist, rate):
    """mix90 for Zipf, mix90u for a uniform choice."""
    return f"mix{int(round(rate * 100))}" + ("u" if dist == "uniform" else "")


def phase_mixed(runner, world, cfg, rng, cursor):
    step("mixed: hot keys (Zipfian, s = 1, or uniform), the rest cold")
    targets = ["hand", "oc-unix"] + list(world.sides)
    for trial, (dist, rate), k, c, t in interleaved(cfg, rng, targets, mixed_settings(cfg),
                                                    cfg["mixed_k"], cfg["mixed_c"]):
        lo = cursor.take(300_000)
        keys = (f"zipf:1:{cfg['hot']}:1.0" if dist == "zipf"
                else f"uniform:1:{cfg['hot']}")
        # the Zipf settings keep their seed of before (no dist in it)
        seed_of = (rate, k, c) if dist == "zipf" else (dist, rate, k, c)
        r = runner.run(mixed_phase_name(dist, rate), t, k, c, keys,
                       seconds=cfg["seconds"],
                       extra=["--cold", f"seq:{lo}:{cursor.hi}", "--hit-rate", f"{rate}"],
                       trial=trial, seed=setting_seed(runner, "mixed", trial, *seed_of))
        check_served(r)
        # The hot ids (all but the cold cursor's) are cached for the hand
        # pattern too: if its get-multi found them not, it paid a load for
        # each and the ratio would flatter objcached.
        nxt = r.get("cold_next") or 0
        hot_asked = r["keys"] - (nxt - lo) if nxt >= lo else None
        if t == "hand" and hot_asked and r["hits"] < 0.99 * hot_asked:
            raise BenchError(f"mixed/hand: {r['hits']:,} memcached hits for {hot_asked:,} "
                             "hot keys asked: the hot set is not cached for it")
        cursor.advance(r)
        # objcached fills memcached after it answers: let the last fills land
        # before deleting, or a few "cold" ids would be hits in its next run
        if world.process(t) is not None:
            world.process(t).wait_idle(timeout=120)
        cursor.forget(t, lo)
        progress(r, f"hit rate {r['hits'] / max(r['keys'], 1):.3f}")


def pg_rows_read(world):
    """Rows returned by queries on items since the last reset."""
    return world.pg.execute(
        "SELECT coalesce(sum(rows), 0)::bigint, coalesce(sum(calls), 0)::bigint "
        "FROM pg_stat_statements WHERE query ILIKE '%items%' "
        "AND query NOT ILIKE '%pg_stat_statements%'")[0]


def phase_herd(runner, world, cfg, cursor):
    step("thundering herd: 64 clients ask at once for the same 100 cold keys")
    out = []
    for t in ("hand", "oc-unix"):
        lo = cursor.take(100)
        cursor.next = lo + 100
        world.pg.execute("SELECT pg_stat_statements_reset()")
        r = runner.run("herd", t, 100, 64, f"fixed:{lo}", batches=64, seconds=60,
                       extra=["--barrier"])
        rows, calls = pg_rows_read(world)
        cursor.forget(t, lo)
        r["pg_rows_read"], r["pg_calls"] = int(rows), int(calls)
        out.append(r)
        say(f"    herd   {t:<10} 64 x 100 keys: PostgreSQL read {rows} rows in {calls} "
            f"queries; p50 {r['p50_us']:,.0f} us, max {r['max_us']:,.0f} us")
    return out


def get_value(sock, key):
    sock.sendall(f"get {key}\r\n".encode())
    buf = b""
    while not (buf.endswith(b"END\r\n") or buf.startswith(b"SERVER_ERROR")
               or buf.startswith(b"CLIENT_ERROR")):
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("objcached closed the connection")
        buf += chunk
    return buf


def phase_inval(runner, world, cfg):
    step("invalidation: commit-to-cache delay of SQL updates under hit load")
    hot = cfg["hot"]
    seconds = max(cfg["inval_min_seconds"], cfg["inval_updates"] * 0.05 + 3)
    servers, prefix = world.target("oc-tcp")
    load = subprocess.Popen([runner.loadgen, "get", "--servers", servers, "--prefix", prefix,
                             "-K", "100", "-C", "4", "--keys", f"uniform:1:{hot}",
                             "--duration", f"{seconds:g}", "--seed", str(runner.seed),
                             "--csv-label", "inval/background"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    rng = random.Random(runner.seed)
    delays = []
    conn = world.pg.connect()
    s = socket.create_connection(("127.0.0.1", world.oc.port))
    try:
        for i in range(cfg["inval_updates"]):
            if load.poll() is not None:
                break
            item = rng.randint(1, hot)
            marker = f"inval-{runner.seed}-{i}"
            get_value(s, f"Item:{item}")         # cached before the update
            with conn.cursor() as cur:
                cur.execute("UPDATE items SET name = %s WHERE id = %s", (marker, item))
            t0 = time.perf_counter()            # autocommit: committed now
            while marker.encode() not in get_value(s, f"Item:{item}"):
                if time.perf_counter() - t0 > 10:
                    raise BenchError(f"update of item {item} not visible after 10 s")
                time.sleep(0.0005)
            delays.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.02)
    finally:
        s.close()
        conn.close()
    out, err = load.communicate(timeout=seconds + 60)
    bg = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    delays.sort()
    res = {"updates": len(delays), "p50_ms": pct(delays, 50), "p99_ms": pct(delays, 99),
           "max_ms": delays[-1], "load_keys_per_s": bg["keys_per_s"]}
    say(f"    {len(delays)} updates under {bg['keys_per_s']:,.0f} keys/s of hits: delay p50 "
        f"{res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms")
    res["delays"] = delays
    return res




def phase_triggers(world, cfg, rng):
    step("trigger overhead: the same UPDATEs on items (hooked) and items_plain (no trigger)")
    conn = world.pg.connect()
    single = {"items": [], "items_plain": []}
    try:
        with conn.cursor() as cur:
            for _ in range(cfg["trig_single"]):
                item = rng.randint(1, cfg["rows"])
                for table in rng.sample(["items", "items_plain"], 2):
                    t0 = time.perf_counter()
                    cur.execute(f"UPDATE {table} SET score = score + 1 WHERE id = %s", (item,))
                    single[table].append(time.perf_counter() - t0)
            bulk = {"items": [], "items_plain": []}
            n = cfg["trig_bulk"]
            for trial in range(cfg["trig_trials"]):
                lo = rng.randint(1, cfg["rows"] - n)
                for table in rng.sample(["items", "items_plain"], 2):
                    t0 = time.perf_counter()
                    cur.execute(f"UPDATE {table} SET score = score + 1 "
                                f"WHERE id BETWEEN %s AND %s", (lo, lo + n - 1))
                    bulk[table].append(time.perf_counter() - t0)
                cur.execute("VACUUM items")
                cur.execute("VACUUM items_plain")
    finally:
        conn.close()
    res = {
        "single_hooked_us": statistics.median(single["items"]) * 1e6,
        "single_plain_us": statistics.median(single["items_plain"]) * 1e6,
        "bulk_rows": cfg["trig_bulk"],
        "bulk_hooked_s": statistics.median(bulk["items"]),
        "bulk_plain_s": statistics.median(bulk["items_plain"]),
    }
    res["single_ratio"] = res["single_hooked_us"] / res["single_plain_us"]
    res["bulk_ratio"] = res["bulk_hooked_s"] / res["bulk_plain_s"]
    say(f"    1-row UPDATE: {res['single_hooked_us']:.0f} us hooked vs "
        f"{res['single_plain_us']:.0f} us plain ({res['single_ratio']:.2f}x, medians of "
        f"{cfg['trig_single']})")
    say(f"    {n:,}-row UPDATE: {res['bulk_hooked_s']:.3f} s hooked vs "
        f"{res['bulk_plain_s']:.3f} s plain ({res['bulk_ratio']:.2f}x)")
    harness.wait_until(lambda: world.pg.execute(
        "SELECT count(*) FROM objcached.outbox")[0][0] == 0, timeout=120,
        what="the consumer to drain the outbox")
    return res


def phase_footprint(runner, world, cfg):
    step("footprint: objcached RSS with many idle connections, after a bounded soak")
    n = cfg["conns"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    servers, _ = world.target("oc-unix")
    before = rss_kib(world.oc.pid)
    p = subprocess.Popen([runner.loadgen, "conns", "--servers", servers, "--conns", str(n),
                          "--duration", "120"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("{"):
        p.kill()
        raise BenchError(f"conns: {line}{p.stderr.read()[-2000:]}")
    opened = json.loads(line)["open"]
    with_conns = rss_kib(world.oc.pid)
    stats = world.oc.stats()
    p.stdin.close()
    p.wait(30)
    say(f"    {opened:,} connections open (objcached counts {stats.get('curr_connections')}): "
        f"RSS {with_conns / 1024:.1f} MiB (before {before / 1024:.1f} MiB; nofile limit "
        f"{soft}/{hard})")
    # a bounded soak: mixed load with cold keys and updates, then RSS again
    t0 = time.monotonic()
    r = runner.run("soak", "oc-unix", 100, 16, f"zipf:1:{cfg['rows']}:1.0",
                   seconds=cfg["soak_seconds"])
    after = rss_kib(world.oc.pid)
    say(f"    after a {cfg['soak_seconds']} s soak ({r['keys']:,} keys, Zipf over every id): "
        f"RSS {after / 1024:.1f} MiB ({time.monotonic() - t0:.0f} s)")
    return {"rss_idle_mib": world.rss_idle / 1024, "conns": opened,
            "rss_conns_mib": with_conns / 1024, "rss_after_mib": after / 1024,
            "soak_keys": r["keys"], "nofile": f"{soft}/{hard}"}


# ------------------------------------------------- failure and expiry (issue 13)

def start_sidecars(world, n, memcached=None, models=None, objcached=None):
    """n objcached processes over the benchmark's pool, each with its own
    settings (the main one keeps serving the other phases untouched)."""
    config = {
        "objcached": {"log_level": "warn", "max_keys": "1024", "ttl_jitter_pct": "0",
                      **(objcached or {})},
        "memcached": {"servers": " ".join(m.address for m in world.mcs), **(memcached or {})},
        "postgresql": {"conninfo": world.pg.conninfo, "connections": "4",
                       "invalidation_poll": "0"},
        **(models or {"model Item": {"table": "items", "key_type": "bigint", "ttl": "1h"}}),
    }
    ocs = []
    for _ in range(n):
        ocs.append(harness.Objcached(config, binary=world.args.objcached,
                                     parent_dir=world.dir).start())
    return ocs


def stop_sidecars(ocs):
    problems = []
    for oc in ocs:
        try:
            oc.stop()
        except harness.HarnessError as e:
            problems.append(str(e))
        finally:
            oc.cleanup()
    if problems:
        raise BenchError("\n".join(problems))


def loadgens(runner, ocs, prefix, k, c, keys, seconds, label, batches=None):
    """One load generator per sidecar, all at once; their JSON lines."""
    procs = []
    for i, oc in enumerate(ocs):
        argv = [runner.loadgen, "get", "--servers", oc.sock, "--prefix", prefix,
                "-K", str(k), "-C", str(c), "--keys", keys, "--duration", f"{seconds:g}",
                "--seed", str(runner.seed * 1000 + 900 + i), "--csv-label", label]
        if batches:
            argv += ["--batches", str(batches)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    out = []
    for p in procs:
        o, e = p.communicate(timeout=seconds + 120)
        lines = [ln for ln in o.splitlines() if ln.startswith("{")]
        if not lines or p.returncode not in (0, 1):
            raise BenchError(f"loadgen {label} failed (exit {p.returncode}):\n{o}\n{e[-2000:]}")
        out.append(json.loads(lines[-1]))
    return out


def merge_runs(runs):
    """Two load generators' figures as one (p99 and max: the worse one)."""
    return {"keys_per_s": sum(r["keys_per_s"] for r in runs),
            "batches": sum(r["batches"] for r in runs),
            "p50_us": max(r["p50_us"] for r in runs), "p99_us": max(r["p99_us"] for r in runs),
            "p999_us": max(r["p999_us"] for r in runs), "max_us": max(r["max_us"] for r in runs),
            "errors": sum(r["errors"] + r["bad_values"] for r in runs),
            # keys counted in keys/s that got no value (a miss answered, not
            # an error): shown beside the errors rather than hidden in keys/s
            "unserved": sum(r.get("absent", 0) for r in runs)}


FAILOVER_VARIANTS = [
    ("gutter", {"failover": "on", "failover_ttl": "10s"}),
    ("rehash", {"failover": "on", "failover_ttl": "10s"}),
    ("off", {"failover": "off"}),
]


def phase_failure(runner, world, cfg):
    secs, n = cfg["outage_seconds"], cfg["failure_ids"]
    step(f"failure: one of 3 memcached SIGKILLed for {secs} s under reads of {n:,} ids "
         "through 2 sidecars (K=100, C=4 each)")
    gutter = harness.Memcached(parent_dir=world.dir, memory_mb=256).start()
    victim = world.mcs[0]
    out = []
    try:
        for name, mc in FAILOVER_VARIANTS:
            world.flush()
            gutter.flush_all()
            extra = dict(mc, gutter=gutter.address) if name == "gutter" else mc
            ocs = start_sidecars(world, 2, memcached=extra)
            try:
                loadgens(runner, ocs[:1], "Item:", 100, 4, f"seq:1:{n}", 120, "failure/warm",
                         batches=n // 100)
                for oc in ocs:
                    oc.wait_idle(timeout=60)
                before = loadgens(runner, ocs, "Item:", 100, 4, f"uniform:1:{n}",
                                  cfg["failure_before_seconds"], f"failure/{name}/before")
                world.pg.execute("SELECT pg_stat_statements_reset()")
                victim.kill(signal.SIGKILL)
                during = loadgens(runner, ocs, "Item:", 100, 4, f"uniform:1:{n}", secs,
                                  f"failure/{name}/down")
                rows, calls = pg_rows_read(world)
                victim.start()
                harness.wait_until(lambda: all(
                    oc.stats()[f"mc_server:{victim.address}:state"] == "up" for oc in ocs),
                    timeout=30, what="the victim back in service")
                st = [oc.stats() for oc in ocs]
            finally:
                stop_sidecars(ocs)
            r = dict(merge_runs(during), variant=name, rows=int(rows), calls=int(calls),
                     rows_per_s=rows / secs, seconds=secs,
                     before_p99_us=merge_runs(before)["p99_us"],
                     **{k: sum(x[k] for x in st) for k in
                        ("mc_ejections", "lease_timeouts", "mc_failover_reads")})
            out.append(r)
            say(f"    {name:<7} PostgreSQL {r['rows_per_s']:>10,.1f} rows/s ({r['rows']:,} rows, "
                f"{r['calls']:,} queries) while down; p50 {r['p50_us']:,.0f} us, "
                f"p99 {r['p99_us']:,.0f} us (before: {r['before_p99_us']:,.0f} us), "
                f"max {r['max_us']:,.0f} us; {r['keys_per_s']:,.0f} keys/s, "
                f"{r['errors']} errors, {r['unserved']:,} keys unserved; "
                f"{r['mc_failover_reads']:,} failover reads, "
                f"{r['lease_timeouts']:,} lease timeouts")
    finally:
        if not victim.alive():
            victim.start()
        gutter.cleanup()
    return out


EXPIRY_LOADS = [
    # (name, table): the hot keys' rows from items, or through a view that
    # makes each row cost 20 ms to load (a model whose rows are expensive:
    # the 10 hot keys' load takes about 200 ms, less than lease_wait).
    ("fast load", "items"),
    ("200 ms load", "items_slow"),
]


def phase_expiry(runner, world, cfg):
    secs = cfg["expiry_seconds"]
    step(f"expiry: 10 hot keys (ttl 5 s) read by 2 sidecars x 4 clients for {secs} s, "
         "with and without refresh_ahead")
    world.pg.execute("CREATE OR REPLACE VIEW items_slow AS SELECT * FROM items "
                     "WHERE pg_sleep(0.02) IS NOT NULL")
    out = []
    # --quick: only the 200 ms load (the harder of the two: a refresh or a
    # lease still out while the clients read); 17 s less of the smoke run
    for load, table in EXPIRY_LOADS[len(EXPIRY_LOADS) - cfg["expiry_loads"]:]:
        for name, model in (("refresh_ahead 2s", {"refresh_ahead": "2s"}), ("off", {})):
            out.append(expiry_run(runner, world, secs, load, table, name, model))
    return out


def expiry_run(runner, world, secs, load, table, name, model):
    world.flush()
    ocs = start_sidecars(world, 2, models={
        "model Hot": {"table": table, "key_type": "bigint", "ttl": "5s", **model}})
    try:
        loadgens(runner, ocs[:1], "Hot:", 10, 1, "fixed:1", 10, "expiry/warm", batches=1)
        for oc in ocs:
            oc.wait_idle(timeout=30)
        world.pg.execute("SELECT pg_stat_statements_reset()")
        s0 = [oc.stats() for oc in ocs]
        runs = loadgens(runner, ocs, "Hot:", 10, 4, "fixed:1", secs, f"expiry/{load}/{name}")
        s1 = [oc.stats() for oc in ocs]
        rows, calls = pg_rows_read(world)
    finally:
        stop_sidecars(ocs)
    d = {k: sum(b[k] - a[k] for a, b in zip(s0, s1))
         for k in ("model:Hot:get_misses", "early_refreshes", "lease_waits")}
    r = dict(merge_runs(runs), load=load, variant=name, rows=int(rows), calls=int(calls),
             seconds=secs, misses=d["model:Hot:get_misses"], refreshes=d["early_refreshes"],
             lease_waits=d["lease_waits"])
    say(f"    {load:<11} {name:<16} p50 {r['p50_us']:,.0f} us, p99 {r['p99_us']:,.0f} us, "
        f"p99.9 {r['p999_us']:,.0f} us, max {r['max_us']:,.0f} us; {r['misses']} misses, "
        f"{r['lease_waits']} lease waits, {r['refreshes']} early refreshes, PostgreSQL read "
        f"{r['rows']} rows in {r['calls']} queries")
    return r


# ------------------------------------------------------------------ report

BASE_OF = {"hit": "direct", "cold": "hand", "mix90": "hand", "mix99": "hand", "mix90u": "hand",
           "zipf": "hand"}


def all_keys_asked(r):
    """Keys a run asked, its warm-up's too: what its CPU readings cover.
    Every batch asks K keys; all_batches counts the warm-up's batches."""
    return (r.get("all_batches") or r.get("batches") or 0) * r["K"]


def cpu_per_key(target, rows, keys):
    """us of CPU per key of each process on the target's path, and their sum."""
    def us(field):
        v = sum(x.get(field) or 0.0 for x in rows)
        return v / keys * 1e6 if keys else None
    out = {"cpu_client_us": us("client_cpu_s"),
           "cpu_oc_us": us("oc_cpu_s") if target.startswith("oc") else 0.0,
           "cpu_mc_us": us("mc_cpu_s"),
           "cpu_tw_us": us("tw_cpu_s") if target == "twemproxy" else 0.0,
           "cpu_pgb_us": us("pgb_cpu_s") if target.startswith("oc-pgb") else 0.0,
           "cpu_pg_us": us("pg_cpu_s")}
    out["cpu_total_us"] = (sum(out.values())
                           if all(v is not None for v in out.values()) else None)
    # context switches per get of K keys (batch): the client, the objcached
    # serving it (0 for the paths without one), the 3 memcached; over every
    # get of the runs, their warm-ups' too, as the counts are
    batches = sum(x.get("all_batches") or x.get("batches") or 0 for x in rows)
    for who, field in (("client", "client_cs"), ("oc", "oc_cs"), ("mc", "mc_cs")):
        v = sum(x.get(field) or 0 for x in rows)
        out[f"cs_{who}_per_get"] = (v / batches if batches and (who != "oc" or
                                                                 target.startswith("oc"))
                                    else (0.0 if batches else None))
    return out


def paired(rows, base_rows, field, how):
    """how(row, base row) for each trial both were measured in (back to back,
    in the same shuffled round): the paired figures the tables report."""
    base = {b["trial"]: b for b in base_rows if b.get("trial") is not None}
    # A target's 0 is a figure (a ratio of 0), not a missing one: only the
    # base must be non-zero, or a path that served nothing in one trial
    # would drop that trial and look better for it.
    return [how(r, base[r["trial"]]) for r in rows if r.get("trial") in base
            and r.get(field) is not None and base[r["trial"]].get(field)]


def summarize(runner, extra, cfg, out):
    rows = [r for r in runner.rows if r["phase"] in BASE_OF]
    groups = {}
    for r in rows:
        groups.setdefault((r["phase"], r["K"], r["C"]), {}).setdefault(r["target"], []).append(r)
    summary = []
    for (phase, k, c), by_t in sorted(groups.items()):
        base_rows = by_t.get(BASE_OF[phase], [])
        tw_rows = by_t.get("twemproxy", [])
        for t, rs in by_t.items():
            keys = sum(x["keys"] for x in rs)
            # The CPU readings cover each whole run, its warm-up too (0.2 s
            # of a 2 s hit run: a tenth of its gets): per key they divide by
            # every key asked, not only the measured ones.
            all_keys = sum(all_keys_asked(x) for x in rs)
            cpu = sum(x["oc_cpu_s"] for x in rs)
            ratios = paired(rs, base_rows, "keys_per_s",
                            lambda r, b: r["keys_per_s"] / b["keys_per_s"])
            deltas = paired(rs, base_rows, "p50_us", lambda r, b: r["p50_us"] - b["p50_us"])
            tw = paired(rs, tw_rows, "keys_per_s",
                        lambda r, b: r["keys_per_s"] / b["keys_per_s"])
            ratio, ratio_min, ratio_max = spread(ratios)
            near = [x for x in rs if "near_hits" in x]
            summary.append({
                "phase": phase, "K": k, "C": c, "target": t, "trials": len(rs),
                "keys_per_s": med(rs, "keys_per_s"), "p50_us": med(rs, "p50_us"),
                "p99_us": med(rs, "p99_us"), "p999_us": med(rs, "p999_us"),
                "hit_rate": sum(x["hits"] for x in rs) / max(keys, 1),
                "oc_cpu_us_per_key": (cpu / all_keys * 1e6 if t.startswith("oc") and all_keys
                                      else None),
                "ratio": ratio if ratios else None,
                "ratio_min": ratio_min if ratios else None,
                "ratio_max": ratio_max if ratios else None,
                "p50_delta_us": statistics.median(deltas) if deltas else None,
                "p50_le_base": sum(d <= 0 for d in deltas) if deltas else None,
                "ratio_tw": statistics.median(tw) if tw and t != "twemproxy" else None,
                "by_trial": {x["trial"]: x["keys_per_s"] for x in rs},
                **cpu_per_key(t, rs, all_keys),
                "near_hit_rate": (sum(x["near_hits"] for x in near) /
                                  max(sum(x["near_hits"] + x["near_misses"] for x in near), 1)
                                  if near else None),
            })
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        fields = [k for k in (summary[0].keys() if summary else ["phase"]) if k != "by_trial"]
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(summary)
    return summary


def paired_ratio(s, base):
    """Median of s / base over the trials both ran in; None if none."""
    rs = [v / base["by_trial"][t] for t, v in s["by_trial"].items()
          if t is not None and base["by_trial"].get(t)]
    return statistics.median(rs) if rs else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def tables(summary, extra, cfg, world, elapsed):
    lines = []
    add = lines.append
    add(f"objcached benchmark, {'quick' if cfg['quick'] else 'full'} run: {cfg['rows']:,} rows "
        f"(row JSON {world.row_bytes} B), 3 memcached, {cfg['trials']} trial(s) of "
        f"{cfg['seconds']:g} s per setting, medians; {machine()}; {elapsed / 60:.1f} min; "
        f"load average {LOADAVG[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    add("")
    for phase, title in (("hit", "Hit path (all hits)"),
                         ("cold", "Cold path (all misses)"),
                         ("mix90", "Mixed, 90% hits (Zipf s=1)"),
                         ("mix99", "Mixed, 99% hits (Zipf s=1)"),
                         ("mix90u", "Mixed, 90% hits (uniform)"),
                         ("zipf", f"Zipf (s={cfg['zipf_s']}) over all {cfg['rows']:,} ids")):
        ss = [s for s in summary if s["phase"] == phase]
        if not ss:
            continue
        base = BASE_OF[phase]
        hit = phase == "hit"
        add(f"### {title}: keys/s and ratio to `{base}`")
        add("")
        add("| K | C | target | keys/s | ratio (min-max) |" + (" x twemproxy |" if hit else "")
            + " p50 us | p99 us | p999 us | p50 - base us | objcached CPU us/key |"
            + ("" if hit else " near hits |"))
        add("|---:|---:|---|---:|---:|" + ("---:|" if hit else "") + "---:|---:|---:|---:|---:|"
            + ("" if hit else "---:|"))
        for s in sorted(ss, key=lambda s: (s["K"], s["C"], s["target"] != base, s["target"])):
            rng_ = ("" if s["ratio"] is None or s["target"] == base else
                    f" ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})")
            add(f"| {s['K']} | {s['C']} | {s['target']} | {s['keys_per_s']:,.0f} | "
                f"{fmt(s['ratio'], '.2f')}{rng_} | "
                + (f"{fmt(s['ratio_tw'], '.2f')} | " if hit else "")
                + f"{s['p50_us']:,.0f} | {s['p99_us']:,.0f} | "
                f"{s['p999_us']:,.0f} | {fmt(s['p50_delta_us'], '+,.0f')} | "
                f"{fmt(s['oc_cpu_us_per_key'], '.2f')} |"
                + ("" if hit else f" {fmt(s['near_hit_rate'], '.1%')} |"))
        add("")
        add("(ratio: the median over trials of target / base keys/s measured back to back in "
            "the same trial; p50 - base: the same, paired)")
        add("")
        pgb_table(add, ss)
        cpu_table(add, ss)
    if "herd" in extra:
        add("### Thundering herd: 64 clients x the same 100 cold keys")
        add("")
        add("| target | rows PostgreSQL read | queries | p50 us | max us |")
        add("|---|---:|---:|---:|---:|")
        for r in extra["herd"]:
            add(f"| {r['target']} | {r['pg_rows_read']} | {r['pg_calls']} | "
                f"{r['p50_us']:,.0f} | {r['max_us']:,.0f} |")
        add("")
    if "inval" in extra:
        i = extra["inval"]
        add("### Invalidation: SQL UPDATE commit -> new value served by objcached")
        add("")
        add(f"{i['updates']} updates while {i['load_keys_per_s']:,.0f} keys/s of hits ran: "
            f"p50 {i['p50_ms']:.1f} ms, p99 {i['p99_ms']:.1f} ms, max {i['max_ms']:.1f} ms")
        add("")
    if "triggers" in extra:
        t = extra["triggers"]
        add("### Trigger overhead of the hook (items vs items_plain)")
        add("")
        add("| UPDATE | hooked | plain | ratio |")
        add("|---|---:|---:|---:|")
        add(f"| 1 row (median of {cfg['trig_single']}) | {t['single_hooked_us']:.0f} us | "
            f"{t['single_plain_us']:.0f} us | {t['single_ratio']:.2f} |")
        add(f"| {t['bulk_rows']:,} rows (median of {cfg['trig_trials']}) | "
            f"{t['bulk_hooked_s']:.3f} s | {t['bulk_plain_s']:.3f} s | {t['bulk_ratio']:.2f} |")
        add("")
    if "failure" in extra:
        add(f"### A memcached server down: one of 3 SIGKILLed for {cfg['outage_seconds']} s, "
            f"reads of {cfg['failure_ids']:,} ids (K=100) through 2 sidecars x 4 clients")
        add("")
        add("| failover | PostgreSQL rows/s while down | queries | client p50 us | p99 us "
            "| p99 before us | max us | keys/s | errors | unserved keys | lease timeouts |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in extra["failure"]:
            add(f"| {r['variant']} | {r['rows_per_s']:,.1f} | {r['calls']:,} | "
                f"{r['p50_us']:,.0f} | {r['p99_us']:,.0f} | {r['before_p99_us']:,.0f} | "
                f"{r['max_us']:,.0f} | {r['keys_per_s']:,.0f} | {r['errors']} | "
                f"{r['unserved']:,} | {r['lease_timeouts']:,} |")
        add("")
    if "expiry" in extra:
        add(f"### Hot keys expiring: 10 keys, ttl 5 s, read for {cfg['expiry_seconds']} s by "
            "2 sidecars x 4 clients (K=10)")
        add("")
        add("| load | refresh | p50 us | p99 us | p99.9 us | max us | misses | lease waits "
            "| early refreshes | rows read | keys/s |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in extra["expiry"]:
            add(f"| {r['load']} | {r['variant']} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | "
                f"{r['p999_us']:,.0f} | {r['max_us']:,.0f} | {r['misses']} | "
                f"{r['lease_waits']} | {r['refreshes']} | {r['rows']} | "
                f"{r['keys_per_s']:,.0f} |")
        add("")
    if "footprint" in extra:
        f = extra["footprint"]
        add("### Footprint of objcached")
        add("")
        add(f"RSS idle {f['rss_idle_mib']:.1f} MiB; with {f['conns']:,} open connections "
            f"{f['rss_conns_mib']:.1f} MiB; after the whole run and a soak of "
            f"{f['soak_keys']:,} keys {f['rss_after_mib']:.1f} MiB.")
        add("")
    near_tables(add, extra, cfg)
    writes_tables(add, extra, cfg)
    return "\n".join(lines)


def pgb_table(add, ss):
    """oc-pgb-* against oc-unix (the same objcached straight to PostgreSQL),
    paired per trial: what pgbouncer costs objcached end to end."""
    direct = {(s["K"], s["C"]): s for s in ss if s["target"] == "oc-unix"}
    rows = [(s, direct.get((s["K"], s["C"]))) for s in ss if s["target"].startswith("oc-pgb")]
    if not rows:
        return
    add("Through pgbouncer: keys/s and p50 against `oc-unix` (objcached straight to "
        "PostgreSQL), paired per trial")
    add("")
    add("| K | C | target | keys/s x oc-unix | p50 us | oc-unix p50 us |")
    add("|---:|---:|---|---:|---:|---:|")
    for s, d in sorted(rows, key=lambda x: (x[0]["K"], x[0]["C"], x[0]["target"])):
        add(f"| {s['K']} | {s['C']} | {s['target']} | "
            f"{fmt(d and paired_ratio(s, d), '.2f')} | {s['p50_us']:,.0f} | "
            f"{fmt(d and d['p50_us'], ',.0f')} |")
    add("")


def cpu_table(add, ss):
    """CPU per key of each process on each path, from /proc and the load
    generator's rusage over the same runs."""
    add("CPU per key (us, user + system, over the runs above, their warm-ups included): the "
        "load generator (libmemcached and libpq), objcached, the 3 memcached, the proxy "
        "(twemproxy; pgbouncer for oc-pgb-*), PostgreSQL (the whole cluster: backends and background processes); on 2 cores a "
        "saturated path's keys/s is about 2e6 / total")
    add("")
    add("| K | C | target | client | objcached | memcached | proxy | PostgreSQL | total |")
    add("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for s in sorted(ss, key=lambda s: (s["K"], s["C"], s["target"] != "direct", s["target"])):
        if s.get("cpu_total_us") is None:
            continue
        add(f"| {s['K']} | {s['C']} | {s['target']} | {s['cpu_client_us']:.2f} | "
            f"{s['cpu_oc_us']:.2f} | {s['cpu_mc_us']:.2f} | "
            f"{s['cpu_tw_us'] + s['cpu_pgb_us']:.2f} | "
            f"{s['cpu_pg_us']:.2f} | {s['cpu_total_us']:.2f} |")
    add("")
    add("Context switches per get of K keys (over the same runs, their warm-ups' gets counted "
        "too; twemproxy's and PostgreSQL's not counted): each is a sleep and a wake-up, which "
        "on a virtual machine costs far more than on bare metal")
    add("")
    add("| K | C | target | client | objcached | memcached | total |")
    add("|---:|---:|---|---:|---:|---:|---:|")
    for s in sorted(ss, key=lambda s: (s["K"], s["C"], s["target"] != "direct", s["target"])):
        cs = [s.get(f"cs_{w}_per_get") for w in ("client", "oc", "mc")]
        if any(v is None for v in cs):
            continue
        add(f"| {s['K']} | {s['C']} | {s['target']} | {cs[0]:.2f} | {cs[1]:.2f} | "
            f"{cs[2]:.2f} | {sum(cs):.2f} |")
    add("")


def near_tables(add, extra, cfg):
    if "nearapply" in extra:
        add("### Commit to applied in two sidecars' near-caches, under load")
        add("")
        add("| invalidation source | commits | p50 ms | p99 ms | max ms | p99 per sidecar ms "
            "| feed_apply_seconds p50 / p99 (bucket bound) | near reads keys/s | writes/s "
            "| near flushes |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for a in extra["nearapply"]:
            add(f"| {NEARAPPLY_NAMES[a['source']]} | {a['samples']} | {a['p50_ms']:.1f} | "
                f"{a['p99_ms']:.1f} | {a['max_ms']:.1f} | "
                + " / ".join(f"{x:.1f}" for x in a["each_p99_ms"])
                + f" | <= {a['hist_p50_le_s'] * 1000:g} / <= {a['hist_p99_le_s'] * 1000:g} ms "
                f"({a['hist_count']:,} rows) | {a['load_keys_per_s']:,.0f} | "
                f"{a['writes_per_s']:,.0f} | {a.get('near_flushes', 0)} |")
        add("")
        add("(commit: the UPDATE's acknowledgment to the moment the last of the two sidecars "
            "served the new row, asked every 0.2 ms; feed_apply_seconds: the sidecars' own "
            "histograms over the same time)")
        add("")
    if "nearrss" in extra:
        n = extra["nearrss"]
        add("### Near-cache memory at its limit")
        add("")
        add(f"near_cache_size {n['limit']}: {n['rows']:,} distinct ids read twice each, "
            f"{n['passes']} pass(es): near_bytes {n['near_mib']:.1f} MiB in {n['entries']:,} "
            f"entries ({n['evictions']:,} evictions); RSS {n['rss_mib']:.1f} MiB "
            f"({n['ratio']:.2f}x the limit); idle {n['rss_idle_mib']:.1f} MiB, so the fill "
            f"added {n['rss_mib'] - n['rss_idle_mib']:.1f} MiB ({n['growth_ratio']:.2f}x the "
            "limit).")
        add("")


NEARAPPLY_NAMES = {"triggers": "trigger hook, notify on", "wal": "WAL source"}
WRITE_NAMES = {"plain": "no hook", "trig": "trigger hook (notify off)", "wal": "WAL source"}


def write_name(v):
    """'wal@5ms' -> 'WAL source (wal_batch_interval 5ms)'; '+nokeys' adds
    ', wal_feed_keys off'."""
    base, _, spec = v.partition("@")
    interval, _, nokeys = spec.partition("+")
    return WRITE_NAMES[base] + (f" (wal_batch_interval {interval}"
                                + (", wal_feed_keys off" if nokeys else "") + ")"
                                if interval else "")


def writes_tables(add, extra, cfg):
    if "writes" not in extra:
        return
    w = extra["writes"]
    add(f"### Write overhead, durable commits: tx/s and ratio to the unwatched table "
        f"({cfg['writes_rounds']} rounds of {cfg['writes_seconds']} s runs, medians)")
    add("")
    wals = cfg["writes_wal"]
    add("| statements per tx | writers | no hook tx/s | trigger hook tx/s | ratio (min-max) "
        + "".join(f"| {write_name(v)} tx/s | ratio (min-max) " for v in wals) + "|")
    add("|---:|---:|---:|---:|---:" + "|---:|---:" * len(wals) + "|")
    cells = {(c["shape"], c["C"], c["variant"]): c for c in w["cells"]}
    for shape in cfg["writes_shapes"]:
        for n in cfg["writes_c"]:
            p, t = (cells[(shape, n, x)] for x in ("plain", "trig"))
            row = (f"| {shape} | {n} | {p['tps']:,.0f} | {t['tps']:,.0f} | {t['ratio']:.2f} "
                   f"({t['ratio_min']:.2f}-{t['ratio_max']:.2f}) ")
            for x in wals:
                v = cells[(shape, n, x)]
                row += (f"| {v['tps']:,.0f} | {v['ratio']:.2f} "
                        f"({v['ratio_min']:.2f}-{v['ratio_max']:.2f}) ")
            add(row + "|")
    add("")
    if all("wal_syncs_per_tx" in c for c in w["cells"]):
        add("Per writer transaction (medians over the rounds): WAL flushes and bytes of the "
            "cluster, commits of every session (writers, feed appends, heartbeats), CPU of the "
            "sidecars, of the WAL sender, and of the backends that run the sidecars' SQL; "
            "context switches of the sidecars and of the WAL sender (each a sleep and a wake-up). "
            "The backends' CPU is split by what they run: the WAL reader's SQL (appends, "
            "heartbeats, the slot's lag) / the feed follower's polls / the rest (outbox "
            "consumers, loads)"
            + ("." if cfg.get("writes_probe", "apart") == "apart" else
               "; the bench's own probe thread (it polls memcached every millisecond after "
               "each watched UPDATE, on the same cores)"))
        add("")
        probe_col = cfg.get("writes_probe", "apart") != "apart"
        add("| statements per tx | writers | source | WAL flushes | WAL bytes | commits "
            "| sidecar CPU us | WAL sender CPU us | sidecars' backends CPU us "
            "| of which WAL SQL / feed polls / rest "
            "| sidecar switches | WAL sender switches |" + (" probe CPU us |" if probe_col else ""))
        add("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
            + ("---:|" if probe_col else ""))
        for shape in cfg["writes_shapes"]:
            for n in cfg["writes_c"]:
                for v in ["plain", "trig"] + wals:
                    c = cells[(shape, n, v)]
                    add(f"| {shape} | {n} | {write_name(v)} | {c['wal_syncs_per_tx']:.2f} | "
                        f"{c['wal_bytes_per_tx']:,.0f} | {c['commits_per_tx']:.2f} | "
                        f"{c['sidecar_cpu_us_per_tx']:.1f} | "
                        f"{c['walsender_cpu_us_per_tx']:.1f} | "
                        f"{c.get('backend_cpu_us_per_tx', float('nan')):.1f} | "
                        + " / ".join(f"{c.get(f'backend_{r}_cpu_us_per_tx', float('nan')):.1f}"
                                     for r in ("wal", "feed", "other")) + " | "
                        f"{c.get('sidecar_cs_per_tx', float('nan')):.2f} | "
                        f"{c.get('walsender_cs_per_tx', float('nan')):.2f} |"
                        + (f" {c.get('probe_cpu_us_per_tx', float('nan')):.1f} |"
                           if probe_col else ""))
        add("")
    if cfg.get("writes_probe", "apart") == "apart":
        add("Commit to memcached delete while the writers ran, timed in runs of their own (the "
            "same writers, one per watched source in each cell and round, shuffled in among the "
            "others; their tx/s count in no ratio above): a probe every 50 ms, its thread's CPU "
            "per writer tx, and those runs' tx/s over the unwatched table's of their cell "
            "(median):")
    else:
        add("Commit to memcached delete while the writers ran (a probe every 50 ms; its thread's "
            "CPU per writer tx):")
    add("")
    add("| source | samples | p50 ms | p99 ms | max ms | probe CPU us | ratio with the probe |")
    add("|---|---:|---:|---:|---:|---:|---:|")
    for v in wals + ["trig"]:
        p = w["probes"][v]
        add(f"| {write_name(v)} | {p['samples']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
            f"{p['max_ms']:.1f} | {p.get('probe_cpu_us_per_tx', float('nan')):.1f} | "
            f"{p.get('ratio_probed', float('nan')):.2f} |")
    add("")


def wakeup_round_trip(loadgen):
    """objcached-wakeup (built beside the load generator): a 1-byte
    ping-pong between two processes, p50 us; None if it is not built."""
    exe = os.path.join(os.path.dirname(os.path.abspath(loadgen)), "objcached-wakeup")
    if not os.access(exe, os.X_OK):
        return None
    p = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise BenchError(f"{exe} failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout)["p50_us"]


WAKEUP = {}   # the wake-up round trip, measured before any server starts


def machine():
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "?")
    except OSError:
        model = "?"
    rt = WAKEUP.get("p50_us")
    return (f"{os.cpu_count()} CPU ({model}), {platform.system()} {platform.release()}, "
            + (f"a wake-up round trip between two processes {rt:.1f} us (objcached-wakeup, p50)"
               if rt is not None else "objcached-wakeup not built"))


GNUPLOT = """
set terminal pngcairo size 900,520 font "sans,10"
set datafile separator ","
set key outside right top
set grid
"""


def plots(summary, extra, out):
    """PNG plots with gnuplot, from small CSV files written here."""
    gp = shutil.which("gnuplot")
    if gp is None:
        say("    (gnuplot not found: no plots)")
        return []
    made = []

    def write(name, header, rows):
        path = os.path.join(out, name)
        with open(path, "w") as f:
            f.write(header + "\n")
            for r in rows:
                f.write(",".join(str(x) for x in r) + "\n")
        return path

    hit = [s for s in summary if s["phase"] == "hit"]
    script = GNUPLOT
    for k in sorted({s["K"] for s in hit}):
        cs = sorted({s["C"] for s in hit if s["K"] == k})
        targets = [t for t in HIT_TARGETS if any(s["target"] == t for s in hit)]
        data = []
        for c in cs:
            row = [c]
            for t in targets:
                v = next((s["keys_per_s"] for s in hit if s["K"] == k and s["C"] == c
                          and s["target"] == t), "")
                row.append(v)
            data.append(row)
        path = write(f"hit_k{k}.csv", "C," + ",".join(targets), data)
        png = os.path.join(out, f"hit_k{k}.png")
        script += (f'set output "{png}"\nset title "Hit path, K={k}: keys/s by concurrency"\n'
                   'set xlabel "concurrent clients (C)"\nset ylabel "keys/s"\n'
                   'set logscale x 2\nset yrange [0:*]\n'
                   f'plot for [i=2:{len(targets) + 1}] "{path}" using 1:i with linespoints '
                   'lw 2 title columnheader(i)\nunset logscale x\n')
        made.append(png)
    if "inval" in extra and extra["inval"]["delays"]:
        d = extra["inval"]["delays"]
        path = write("inval_cdf.csv", "delay_ms,fraction",
                     [(v, (i + 1) / len(d)) for i, v in enumerate(d)])
        png = os.path.join(out, "inval_cdf.png")
        script += (f'set output "{png}"\nset title "SQL UPDATE commit to new value served '
                   '(under hit load)"\nset xlabel "delay (ms)"\nset ylabel "fraction of updates"\n'
                   f'set yrange [0:1]\nplot "{path}" every ::1 using 1:2 with steps lw 2 '
                   'title "objcached"\n')
        made.append(png)
    cold = [s for s in summary if s["phase"] in ("cold", "mix90", "mix99", "mix90u")]
    if cold:
        rows = [(f'{s["phase"]} K={s["K"]} C={s["C"]} {s["target"]}', s["keys_per_s"])
                for s in sorted(cold, key=lambda s: (s["phase"], s["K"], s["C"], s["target"]))]
        path = write("cold.csv", "setting,keys_per_s", rows)
        png = os.path.join(out, "cold.png")
        script += (f'set output "{png}"\nset title "Cold and mixed paths: keys/s"\n'
                   'set style data histograms\nset style fill solid 0.8\nset boxwidth 0.8\n'
                   'set xtics rotate by -60 font "sans,8"\nset ylabel "keys/s"\n'
                   'unset xlabel\nset yrange [0:*]\nset key off\n'
                   f'plot "{path}" every ::1 using 2:xtic(1)\n')
        made.append(png)
    path = os.path.join(out, "plots.gp")
    with open(path, "w") as f:
        f.write(script)
    proc = subprocess.run([gp, path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"gnuplot failed:\n{proc.stderr}")
    return made


def check_targets(summary, extra, cfg):
    """The issue's targets, each with the figure that meets or misses it."""
    def get(phase, k, c, t):
        return next((s for s in summary if s["phase"] == phase and s["K"] == k
                     and s["C"] == c and s["target"] == t), None)
    res = []

    def target(name, ok, figure):
        res.append((name, "met" if ok else "MISSED", figure))

    for t in ("oc-tcp", "oc-unix"):
        s = get("hit", 100, 16, t)
        if s and s["ratio"] is not None:     # None: direct was not run
            target(f"hit K=100 C=16 {t} >= 0.85x direct", s["ratio"] >= 0.85,
                   f"{s['ratio']:.2f}x")
            tw = get("hit", 100, 16, "twemproxy")
            if tw:
                r = s["keys_per_s"] / tw["keys_per_s"]
                target(f"hit K=100 C=16 {t} >= 1.2x twemproxy", r >= 1.2, f"{r:.2f}x")
        s = get("hit", 100, 1, t)
        if s and s["p50_delta_us"] is not None:
            target(f"hit K=100 C=1 {t} p50 <= direct + 60 us", s["p50_delta_us"] <= 60,
                   f"{s['p50_delta_us']:+.0f} us")
    for c in sorted({s["C"] for s in summary if s["phase"] == "hit" and s["K"] == 100}):
        b, t = get("hit", 100, c, "oc-tcp-bin"), get("hit", 100, c, "oc-tcp")
        if b and t:
            r = b["keys_per_s"] / t["keys_per_s"]
            target(f"hit K=100 C={c} binary (oc-tcp-bin) >= 1.0x text (oc-tcp)", r >= 1.0,
                   f"{r:.2f}x")
    s, n1 = get("cold", 100, 4, "oc-unix"), get("cold", 100, 4, "n1")
    if s:
        target("cold K=100 C=4 objcached >= 1.0x hand-written", s["ratio"] >= 1.0,
               f"{s['ratio']:.2f}x")
        if n1:
            r = s["keys_per_s"] / n1["keys_per_s"]
            target("cold K=100 C=4 objcached >= 2x N+1", r >= 2, f"{r:.2f}x")
    s = get("cold", 100, 1, "oc-unix")
    if s:
        target("cold K=100 C=1 objcached >= 0.9x hand-written", s["ratio"] >= 0.9,
               f"{s['ratio']:.2f}x")
    for phase, how in (("mix90", "Zipf"), ("mix90u", "uniform")):
        s = get(phase, 100, 4, "oc-unix")
        if s:
            target(f"90% mixed ({how}) K=100 C=4 objcached >= 1.0x hand-written",
                   s["ratio"] >= 1.0, f"{s['ratio']:.2f}x")
    for r in extra.get("herd", []):
        if r["target"] == "oc-unix":
            target("herd: PostgreSQL reads each of the 100 rows once", r["pg_rows_read"] == 100,
                   f"{r['pg_rows_read']} rows")
    if "inval" in extra:
        i = extra["inval"]
        target("invalidation p99 <= 50 ms under load", i["p99_ms"] <= 50, f"{i['p99_ms']:.1f} ms")
    if "triggers" in extra:
        t = extra["triggers"]
        target(f"trigger overhead {t['bulk_rows']:,}-row UPDATE <= 1.5x", t["bulk_ratio"] <= 1.5,
               f"{t['bulk_ratio']:.2f}x")
    if "footprint" in extra:
        f = extra["footprint"]
        target(f"RSS <= 64 MiB with {f['conns']:,} idle connections", f["rss_conns_mib"] <= 64,
               f"{f['rss_conns_mib']:.1f} MiB")
    res12, res16 = [], []
    near_targets(summary, extra, res12, get)
    write_targets(extra, res16)
    lines = []
    for title, rs in (("issues 5 and 17, read path", res), ("issue 12, near-cache", res12),
                      ("issue 16, WAL source", res16)):
        if rs:
            lines += [f"### Targets ({title})", "", "| target | result | figure |",
                      "|---|---|---|"]
            lines += [f"| {n} | {ok} | {fig} |" for n, ok, fig in rs]
            lines.append("")
    return "\n".join(lines)


def near_targets(summary, extra, res, get):
    def target(name, ok, figure):
        res.append((name, "met" if ok else "MISSED", figure))

    for c, want in ((1, 1.0), (4, 1.0), (16, 1.5)):
        s = get("hit", 100, c, "oc-near")
        if s and s["ratio"] is not None:
            target(f"near hits K=100 C={c} oc-near >= {want:.1f}x direct", s["ratio"] >= want,
                   f"{s['ratio']:.2f}x ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})")
    s = get("hit", 100, 1, "oc-near")
    if s and s["p50_delta_us"] is not None:
        target("near hits K=100 C=1 oc-near p50 <= direct's", s["p50_delta_us"] <= 0,
               f"{s['p50_delta_us']:+.0f} us (paired median; lower in {s['p50_le_base']} of "
               f"{s['trials']} trials)")
    s = get("zipf", 100, 4, "oc-near")
    if s and s["ratio"] is not None:
        target("zipf s=0.99 over all ids, C=4: oc-near >= 1.3x hand-written", s["ratio"] >= 1.3,
               f"{s['ratio']:.2f}x ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})")
    for a in extra.get("nearapply", []):
        target(f"commit to applied in 2 near-caches p99 <= 50 ms under load "
               f"({NEARAPPLY_NAMES[a['source']]})", a["p99_ms"] <= 50,
               f"{a['p99_ms']:.1f} ms ({a['samples']} commits)")
    if "nearrss" in extra:
        n = extra["nearrss"]
        target(f"RSS with the near-cache at its limit ({n['limit']}) <= limit + 20%",
               n["ratio"] <= 1.2, f"{n['rss_mib']:.1f} MiB = {n['ratio']:.2f}x")
        target(f"RSS growth over idle with the near-cache at its limit ({n['limit']}) "
               "<= limit + 20%", n["growth_ratio"] <= 1.2,
               f"+{n['rss_mib'] - n['rss_idle_mib']:.1f} MiB = {n['growth_ratio']:.2f}x")
    for t in ("oc-tcp", "oc-unix"):
        for c in (1, 4, 16):
            s = get("hit", 100, c, t)
            old = get("hit", 100, c, "oc-old")
            r = s and old and paired_ratio(s, old)
            if r:
                target(f"near off: hit K=100 C={c} {t} >= the earlier build (oc-old)", r >= 1.0,
                       f"{r:.2f}x")
    for phase, k, c in (("cold", 100, 4), ("mix90", 100, 4), ("mix90u", 100, 4)):
        s, old = get(phase, k, c, "oc-unix"), get(phase, k, c, "oc-old")
        r = s and old and paired_ratio(s, old)
        if r:
            target(f"near off: {phase} K={k} C={c} oc-unix >= the earlier build (oc-old)",
                   r >= 1.0, f"{r:.2f}x")


def write_targets(extra, res):
    def target(name, ok, figure):
        res.append((name, "met" if ok else "MISSED", figure))

    if "writes" not in extra:
        return
    w = extra["writes"]
    for c in w["cells"]:
        if c["variant"].startswith("wal"):
            target(f"{write_name(c['variant'])}, {c['shape']}-statement tx, {c['C']} writers: "
                   ">= 0.9x the unwatched table's tx/s", c["ratio"] >= 0.9,
                   f"{c['ratio']:.2f}x ({c['ratio_min']:.2f}-{c['ratio_max']:.2f})")
    for v, p in w["probes"].items():
        if v.startswith("wal"):
            target(f"{write_name(v)}: commit to memcached delete p99 <= 50 ms under the "
                   "writers", p["p99_ms"] <= 50, f"{p['p99_ms']:.1f} ms ({p['samples']} commits)")


# -------------------------------------------------------------------- main

PHASE_TIMES = []
LOADAVG = os.getloadavg()   # the machine's load when the run started (it is shared)


def timed(name, fn, *args):
    """fn(*args), its wall time kept for the summary's last line."""
    t0 = time.monotonic()
    try:
        return fn(*args)
    finally:
        PHASE_TIMES.append((name, time.monotonic() - t0))
        say(f"    ({name}: {time.monotonic() - t0:.1f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the short smoke run (< 3 min)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"),
                    help="where results go (default bench/out)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=",".join(PHASES),
                    help=f"comma-separated phases (default all: {','.join(PHASES)})")
    ap.add_argument("--objcached", default=os.path.join(ROOT, "build", "objcached"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "build", "bench",
                                                      "objcached-loadgen"))
    ap.add_argument("--hit-k", help="K values of the hit phase, comma-separated "
                                    "(default: the run's)")
    ap.add_argument("--hit-c", help="client counts of the hit phase (default: the run's)")
    ap.add_argument("--trials", type=int, help="trials per setting (default: the run's)")
    ap.add_argument("--hit-targets",
                    help=f"targets of the hit phase among {','.join(HIT_TARGETS)} (default "
                         f"{','.join(DEFAULT_HIT_TARGETS)}, and oc-old with --old)")
    ap.add_argument("--writes-wal-intervals",
                    help="wal_batch_interval values (e.g. 0,5ms,20ms), each with +nokeys "
                         "for wal_feed_keys = off (5ms+nokeys): the writes phase runs "
                         "the WAL source once per value, interleaved, the sidecar reloaded "
                         "between runs (default: one run at the configured default)")
    ap.add_argument("--writes-probe", choices=["apart", "during"], default="apart",
                    help="where the writes phase times commit to memcached delete: in runs "
                         "of its own beside the counted ones (apart, the default: the probe's "
                         "polling loads no counted run), or in every run (during, as until "
                         "2026-12-07: the watched sources' ratios pay for it)")
    ap.add_argument("--writes-c", help="writer counts of the writes phase (default: the run's)")
    ap.add_argument("--writes-rounds", type=int, help="rounds of the writes phase")
    ap.add_argument("--rows", type=int, help="rows of the table (default: the run's)")
    ap.add_argument("--hot", type=int, help="ids kept cached for the hit and mixed paths "
                    "(default: the run's)")
    ap.add_argument("--row-bytes", type=int, default=80, metavar="N",
                    help="bytes of each row's body column (default 80: row JSON about 225 "
                         "bytes); large values go through objcached by reference from "
                         "16 KiB (docs/protocol.md, values_by_ref)")
    ap.add_argument("--near-size", help="near_cache_size of the near-cache sidecars (default: "
                                        "the run's, 128m; 32m in --quick)")
    ap.add_argument("--zipf-prewarm", type=int, metavar="BATCHES",
                    help="get-multis of 100 keys that pre-warm both caches of the zipf phase "
                         "(default: the run's, 30,000; 1,000 in --quick)")
    ap.add_argument("--zipf-trials", type=int, help="trials of the zipf phase (default: the "
                                                    "run's, 5; 1 in --quick)")
    ap.add_argument("--writes-perf", metavar="DIR",
                    help="record each writes run system-wide with `perf record -a -g` into "
                         "DIR/<round>-<shape>-<writers>-<variant>.data (perf report "
                         "--sort comm,dso tells where the cluster's CPU went)")
    ap.add_argument("--old", help="an earlier build of objcached, run side by side as the "
                                  "target oc-old in the hit, cold and mixed phases")
    ap.add_argument("--pgbouncer", metavar="MODES",
                    help="session and/or transaction (comma-separated): in the cold and mixed "
                         "phases, objcached through a pgbouncer in that pool_mode (its own "
                         "pool_mode the same) in front of the same PostgreSQL, as target "
                         + " / ".join(PGB_TARGETS.values()))
    args = ap.parse_args()
    only = set(p.strip() for p in args.only.split(",") if p.strip())
    unknown = only - set(PHASES)
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    for b in (args.objcached, args.loadgen) + ((args.old,) if args.old else ()):
        if not os.access(b, os.X_OK):
            ap.error(f"{b} is not built (bash scripts/build.sh)")
    cfg = dict(QUICK if args.quick else FULL, quick=args.quick)
    cfg["pgbouncer"] = [m.strip() for m in (args.pgbouncer or "").split(",") if m.strip()]
    if args.pgbouncer is not None:
        if not cfg["pgbouncer"] or set(cfg["pgbouncer"]) - set(PGB_TARGETS):
            ap.error(f"--pgbouncer takes {','.join(PGB_TARGETS)} (one or both)")
        if not only & {"cold", "mixed"}:
            ap.error("--pgbouncer adds targets to the cold and mixed phases: --only has neither")
        if not os.access(shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", os.X_OK):
            ap.error("--pgbouncer needs pgbouncer (bash scripts/deps.sh installs it)")
        cfg["pgbouncer"] = list(dict.fromkeys(cfg["pgbouncer"]))    # each mode once
    WAKEUP["p50_us"] = wakeup_round_trip(args.loadgen)
    try:
        if args.hit_k:
            cfg["hit_k"] = [int(x) for x in args.hit_k.split(",")]
        if args.hit_c:
            cfg["hit_c"] = [int(x) for x in args.hit_c.split(",")]
        if args.writes_c:
            cfg["writes_c"] = [int(x) for x in args.writes_c.split(",")]
    except ValueError:
        ap.error("--hit-k, --hit-c and --writes-c take comma-separated integers")
    if args.writes_rounds:
        cfg["writes_rounds"] = args.writes_rounds
    if args.rows:
        cfg["rows"] = args.rows
    if args.hot:
        cfg["hot"] = args.hot
    if not 0 < cfg["hot"] < cfg["rows"] or args.row_bytes < 1:
        ap.error("--hot must be below --rows, and --row-bytes at least 1")
    cfg["body_bytes"] = args.row_bytes
    if args.near_size:
        if not re.fullmatch(r"\d+[kmg]?", args.near_size):
            ap.error("--near-size takes a size such as 128m or 1g")
        cfg["near_size"] = args.near_size
    if args.zipf_prewarm is not None:
        if args.zipf_prewarm < 1:
            ap.error("--zipf-prewarm takes a count of batches, at least 1")
        cfg["zipf_prewarm"] = args.zipf_prewarm
    if args.zipf_trials is not None:
        if args.zipf_trials < 1:
            ap.error("--zipf-trials takes at least 1")
        cfg["zipf_trials"] = args.zipf_trials
    if args.writes_perf:
        if shutil.which("perf") is None:
            ap.error("--writes-perf needs perf (Debian package linux-perf)")
        os.makedirs(args.writes_perf, exist_ok=True)
    cfg["writes_perf"] = args.writes_perf
    cfg["writes_probe"] = args.writes_probe
    cfg["writes_wal"] = ["wal"]
    if args.writes_wal_intervals:
        vals = [x.strip() for x in args.writes_wal_intervals.split(",") if x.strip()]
        if not vals or any(not re.fullmatch(r"\d+(ms|s)?(\+nokeys)?", x) for x in vals):
            ap.error("--writes-wal-intervals takes durations such as 0,5ms,20ms, each "
                     "with +nokeys for wal_feed_keys = off (5ms+nokeys)")
        cfg["writes_wal"] = [f"wal@{x}" for x in vals]
    if args.trials:
        cfg["trials"] = args.trials
    if args.hit_targets:
        cfg["hit_targets"] = [t.strip() for t in args.hit_targets.split(",") if t.strip()]
    else:
        cfg["hit_targets"] = DEFAULT_HIT_TARGETS + (["oc-old"] if args.old else [])
    if not cfg["hit_targets"] or set(cfg["hit_targets"]) - set(HIT_TARGETS):
        ap.error(f"--hit-targets: choose among {','.join(HIT_TARGETS)}")
    if "oc-old" in cfg["hit_targets"] and not args.old:
        ap.error("--hit-targets oc-old needs --old BIN")
    cfg["want_near"] = bool(only & {"zipf", "nearapply"}) or (
        "hit" in only and any(t.startswith("oc-near") for t in cfg["hit_targets"]))
    os.makedirs(args.out, exist_ok=True)
    for name in os.listdir(args.out):
        if name.endswith((".csv", ".png", ".gp", ".md")):
            os.unlink(os.path.join(args.out, name))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it

    harness.install_signal_handlers()
    workdir = tempfile.mkdtemp(prefix="objcached-bench.", dir="/tmp")
    os.chmod(workdir, 0o755)
    world = World(args, cfg, workdir)
    started = time.monotonic()
    rng = random.Random(args.seed)
    extra = {}
    try:
        world.start()
        runner = Runner(world, args.loadgen, args.seed, os.path.join(args.out, "runs.csv"))
        cursor = ColdCursor(world, cfg, runner)
        if "cold" in only:
            world.flush()
            timed("cold", phase_cold, runner, world, cfg, rng, cursor)
            world.flush()
            cursor.next = cursor.lo
        cursor.may_flush = False
        if only & WARM_PHASES:
            timed("warm", warm, runner, world, cfg)
        if "hit" in only:
            timed("hit", phase_hit, runner, world, cfg, rng)
        if "mixed" in only:
            timed("mixed", phase_mixed, runner, world, cfg, rng, cursor)
        if "herd" in only:
            extra["herd"] = timed("herd", phase_herd, runner, world, cfg, cursor)
        if "inval" in only:
            extra["inval"] = timed("inval", phase_inval, runner, world, cfg)
            extra["triggers"] = timed("triggers", phase_triggers, world, cfg, rng)
        if "zipf" in only:
            timed("zipf", bench_near.phase_zipf, runner, world, cfg, rng, interleaved, progress)
        if "footprint" in only:
            extra["footprint"] = timed("footprint", phase_footprint, runner, world, cfg)
        if "nearapply" in only:
            extra["nearapply"] = [timed("nearapply", bench_near.phase_nearapply_triggers,
                                        runner, world, cfg)]
        if "nearrss" in only:
            extra["nearrss"] = timed("nearrss", bench_near.phase_nearrss, runner, world, cfg)
        # Last: they kill and flush pool servers, which would cool the hot set.
        if "failure" in only:
            extra["failure"] = timed("failure", phase_failure, runner, world, cfg)
        if "expiry" in only:
            extra["expiry"] = timed("expiry", phase_expiry, runner, world, cfg)
        if only & {"writes", "nearapply"}:
            wworld = bench_writes.WriteWorld(args, cfg, workdir, world.mcs)
            try:
                timed("write world", wworld.start)
                if "nearapply" in only:
                    extra["nearapply"].append(timed("nearapply (WAL)",
                                                    bench_writes.phase_nearapply_wal,
                                                    runner, wworld, cfg))
                if "writes" in only:
                    extra["writes"] = timed("writes", bench_writes.phase_writes, wworld,
                                            cfg, rng)
            finally:
                wworld.stop()
        summary = summarize(runner, extra, cfg, args.out)
        elapsed = time.monotonic() - started
        text = tables(summary, extra, cfg, world, elapsed) + "\n" + \
            check_targets(summary, extra, cfg)
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(text)
        made = plots(summary, extra, args.out)
        say()
        say(text)
        say(f"results: {args.out}/runs.csv, summary.csv, summary.md"
            + (", " + ", ".join(os.path.basename(p) for p in made) if made else ""))
    finally:
        step("stopping every server this run started")
        try:
            world.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, harness.HarnessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)

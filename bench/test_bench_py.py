"""Unit tests of the benchmark's Python arithmetic: bench_common.pct (the
percentiles of the invalidation and nearapply delays) and run.py's paired
ratios. No server is started."""

import math
import os
import sys
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402
from bench_common import pct  # noqa: E402


def nearest_rank(vals, p):
    rank = max(1, math.ceil(Fraction(str(p)) / 100 * len(vals)))
    return vals[rank - 1]


def test_pct_is_nearest_rank():
    # 300 samples, p99: the 297th (it was the 298th: round() goes half to
    # even, and 297.5 went up to 298)
    vals = list(range(1, 301))
    assert pct(vals, 99) == 297
    assert pct(vals, 50) == 150
    assert pct([1, 2], 50) == 1
    for n in range(1, 1200):
        vals = list(range(1, n + 1))
        for p in (50, 90, 99, 99.9, 100):
            assert pct(vals, p) == nearest_rank(vals, p), (n, p)
    assert math.isnan(pct([], 99))


def row(trial, kps, p50=100.0):
    return {"trial": trial, "keys_per_s": kps, "p50_us": p50}


def test_paired_is_per_trial():
    base = [row(0, 100.0), row(1, 200.0), row(2, 400.0)]
    mine = [row(2, 200.0), row(0, 90.0), row(1, 220.0)]
    ratios = run.paired(mine, base, "keys_per_s", lambda r, b: r["keys_per_s"] / b["keys_per_s"])
    assert sorted(ratios) == [0.5, 0.9, 1.1]


def test_paired_keeps_a_target_zero():
    # a target that served nothing in one trial is a ratio of 0, not a trial
    # left out (which would raise its median)
    base = [row(0, 100.0), row(1, 100.0), row(2, 100.0)]
    mine = [row(0, 0.0), row(1, 0.0), row(2, 120.0)]
    ratios = run.paired(mine, base, "keys_per_s", lambda r, b: r["keys_per_s"] / b["keys_per_s"])
    assert sorted(ratios) == [0.0, 0.0, 1.2]
    # a base of 0 has no ratio
    assert run.paired(mine, [row(0, 0.0)], "keys_per_s", lambda r, b: 1) == []


class FakeRunner:
    seed = 3


def test_setting_seed_same_for_every_target_of_a_setting():
    r = FakeRunner()
    a = run.setting_seed(r, "hit", 0, 100, 4)
    assert a == run.setting_seed(r, "hit", 0, 100, 4)
    others = {run.setting_seed(r, "hit", t, k, c) for t in range(3) for k in (1, 10, 100)
              for c in (1, 4, 16, 64)}
    assert len(others) == 36       # distinct across trials and settings
    assert 0 < a < (2**64 - 1) // 1000 - 4096   # within the load generator's --seed


def hit_row(target, keys_per_s, all_batches):
    # a 2 s run after a 0.2 s warm-up: 1,000 measured gets of K=100, and
    # all_batches with the warm-up's
    return {"phase": "hit", "target": target, "K": 100, "C": 4, "trial": 0,
            "keys": 100_000, "batches": 1_000, "all_batches": all_batches, "hits": 100_000,
            "keys_per_s": keys_per_s, "p50_us": 100.0, "p99_us": 200.0, "p999_us": 300.0,
            "oc_cpu_s": 0.22 if target.startswith("oc") else 0.0, "client_cpu_s": 0.11,
            "mc_cpu_s": 0.0, "tw_cpu_s": 0.0, "pg_cpu_s": 0.0}


class Rows:
    def __init__(self, rows):
        self.rows = rows


def test_cpu_per_key_counts_the_warm_up_keys(tmp_path):
    # the CPU readings cover the warm-up's 100 gets too: 0.22 s over 110,000
    # keys is 2.0 us a key, not 2.2 (the measured 100,000 keys only)
    rows = [hit_row("direct", 50_000.0, 1_100), hit_row("oc-unix", 40_000.0, 1_100)]
    summary = run.summarize(Rows(rows), {}, {}, str(tmp_path))
    oc = next(s for s in summary if s["target"] == "oc-unix")
    assert abs(oc["oc_cpu_us_per_key"] - 2.0) < 1e-9
    assert abs(oc["cpu_client_us"] - 1.0) < 1e-9
    assert oc["ratio"] == 0.8


def write_run(rnd, variant, tps, probed, counted, delays=()):
    import bench_writes
    return {"round": rnd, "shape": 1, "C": 8, "variant": variant, "probed": probed,
            "counted": counted, "tps": tps, "delays": list(delays),
            **{k: 1.0 for k in bench_writes.PER_TX}}


def test_writes_probe_apart_keeps_probed_runs_out_of_the_ratios():
    import bench_writes
    cfg = {"writes_shapes": [1], "writes_c": [8], "writes_wal": ["wal"],
           "writes_probe": "apart"}
    assert bench_writes.run_order(cfg) == [("plain", False), ("trig", False), ("wal", False),
                                           ("trig", True), ("wal", True)]
    runs = []
    for rnd, plain in enumerate([1000.0, 2000.0]):
        runs += [write_run(rnd, "plain", plain, False, True),
                 write_run(rnd, "trig", plain * 0.5, False, True),
                 write_run(rnd, "wal", plain * 0.9, False, True),
                 write_run(rnd, "trig", plain * 0.4, True, False, [900.0]),
                 write_run(rnd, "wal", plain * 0.7, True, False, [10.0 + rnd, 20.0])]
    w = bench_writes.summarize_writes(runs, cfg)
    cells = {c["variant"]: c for c in w["cells"]}
    assert cells["wal"]["ratio"] == 0.9 and cells["wal"]["rounds"] == 2
    assert cells["trig"]["ratio"] == 0.5 and cells["plain"]["tps"] == 1500.0
    assert w["probes"]["wal"]["samples"] == 4
    assert w["probes"]["wal"]["delays"] == [10.0, 11.0, 20.0, 20.0]
    assert w["probes"]["wal"]["ratio_probed"] == 0.7
    assert w["probes"]["trig"]["samples"] == 2


def test_writes_probe_during_counts_every_run():
    import bench_writes
    cfg = {"writes_shapes": [1], "writes_c": [8], "writes_wal": ["wal"],
           "writes_probe": "during"}
    assert bench_writes.run_order(cfg) == [("plain", True), ("trig", True), ("wal", True)]
    runs = [write_run(0, "plain", 1000.0, True, True),
            write_run(0, "trig", 500.0, True, True, [800.0]),
            write_run(0, "wal", 800.0, True, True, [5.0])]
    w = bench_writes.summarize_writes(runs, cfg)
    assert {c["variant"]: c["ratio"] for c in w["cells"]} == {"plain": 1.0, "trig": 0.5,
                                                               "wal": 0.8}
    assert w["probes"]["wal"]["ratio_probed"] == 0.8


def test_cluster_cpu_counts_a_backend_reaped_during_the_reading(tmp_path):
    # A fake /proc: the postmaster (pid 10) and one backend (11) that has
    # used 500 ticks and is reaped by the postmaster right after the
    # postmaster's first stat is read, i.e. before the scan reaches it:
    # read once, the backend's ticks were in neither place (the bug that
    # took the hand-written pattern's PostgreSQL CPU out of every table).
    from bench_common import cluster_cpu_seconds
    (tmp_path / "postmaster.pid").write_text("10\n")
    state = {"reaped": False, "pm_reads": 0}

    def fields(state_char, ppid, utime, stime, cutime, cstime):
        # the fields after "(comm)": [0] state, [1] ppid, [11..14] times
        f = [state_char, str(ppid)] + ["0"] * 9 + [str(utime), str(stime),
                                                   str(cutime), str(cstime)]
        return f

    def stat(pid):
        pid = int(pid)
        if pid == 10:
            state["pm_reads"] += 1
            if state["pm_reads"] == 1:
                cut = 0
            else:
                state["reaped"] = True
                cut = 500
            return fields("S", 1, 7, 3, cut, 0)
        if pid == 11 and not state["reaped"]:
            raise OSError("gone")   # exited; the reap lands just after
        raise OSError("no such process")

    ticks = os.sysconf("SC_CLK_TCK")
    got = cluster_cpu_seconds(str(tmp_path), stat=stat, pids=lambda: ["10", "11", "self"])
    assert round(got * ticks) == 7 + 3 + 500
    assert state["pm_reads"] >= 3   # the first reading was taken again


def test_cluster_cpu_waits_for_a_zombie_backend(tmp_path):
    from bench_common import cluster_cpu_seconds
    (tmp_path / "postmaster.pid").write_text("10\n")
    calls = {"n": 0}

    def stat(pid):
        pid = int(pid)
        base = ["S", "1"] + ["0"] * 9
        if pid == 10:
            reaped = calls["n"] >= 2
            return base + ["1", "1", "40" if reaped else "0", "0"]
        if pid == 11:
            calls["n"] += 1
            if calls["n"] < 2:
                return ["Z", "10"] + ["0"] * 9 + ["0", "0", "0", "0"]
            raise OSError("reaped")
        raise OSError("no such process")

    got = cluster_cpu_seconds(str(tmp_path), stat=stat, pids=lambda: ["10", "11"])
    assert round(got * os.sysconf("SC_CLK_TCK")) == 42

#!/usr/bin/python3
"""Where the CPU of a hit goes: instructions per key of each process on each
hit path, counted by valgrind's callgrind (exact, unlike timings on a shared
machine), and objcached's most expensive functions.

Starts the benchmark's world (bench/run.py's World: PostgreSQL, 3 memcached,
twemproxy, objcached) with a small table, then measures K=100 gets at one
client, after a warm-up, with the counters zeroed between (callgrind_control
-z before, -d after: only the measured gets are counted):

  objcached, near-cache on    every key answered from the near-cache
  objcached, near-cache off   every key a memcached hit
  objcached, cold             every key loaded from PostgreSQL
  near-cache on, 10% cold     90% near-cache hits, 10% loaded from
                              PostgreSQL: the Zipf phase's mix
  load generator              libmemcached's client side, against the 3-server
                              pool (direct) and against objcached's socket;
                              counted as the difference of two runs (--batches
                              B and 2B), which cancels its set-up

memcached itself cannot run under valgrind (it sets the hard limit of open
files, which valgrind refuses): bench/run.py's CPU table gives its CPU per
key from /proc instead.

Prints Ir (instructions) per key and each profile's top functions (self and
inclusive), and leaves the callgrind.out files in --out for
callgrind_annotate / kcachegrind.

    /usr/bin/python3 bench/profile.py --objcached build-rel/objcached \\
        --loadgen build-rel/bench/objcached-loadgen [--batches 2000] [--out DIR]

Build with -g (RelWithDebInfo) for function names; valgrind slows each
profiled process about 50 times, so this takes a few minutes."""

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402

import run  # noqa: E402
from bench_common import BenchError, say, step  # noqa: E402

ROWS = 20_000


def callgrind_argv(out):
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            "--dump-instr=no", "--collect-jumps=no"]


def control(flag, pid):
    subprocess.run(["callgrind_control", flag, str(pid)], check=True,
                   capture_output=True, timeout=120)


def total_ir(path):
    """The summary line's Ir of a callgrind output (the last dump)."""
    ir = None
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                ir = int(line.split()[1])
    if ir is None:
        raise BenchError(f"{path}: no totals")
    return ir


def top(path, keys, n=22):
    """The functions with the most self Ir, per key. (Callgrind attributes
    the outer frames, where counting was zeroed, all of it: those lines,
    at 100%, are left out.)"""
    p = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", path],
                       capture_output=True, text=True, timeout=300)
    rows = []
    for ln in p.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S+)", ln)
        if m and float(m.group(2)) < 99.9:
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)))
    return [f"{ir / keys:>8,.0f} Ir/key {pc:5.1f}%  {fn}" for ir, pc, fn in rows[:n]]


def latest_dump(prefix):
    """callgrind_control -d writes PREFIX.N; the newest one."""
    d = os.path.dirname(prefix)
    base = os.path.basename(prefix)
    files = [os.path.join(d, f) for f in os.listdir(d) if f.startswith(base + ".")]
    if not files:
        raise BenchError(f"no dump {prefix}.N")
    return max(files, key=os.path.getmtime)


def loadgen(args, servers, prefix, batches, keys, extra=(), wrap=()):
    argv = list(wrap) + [args.loadgen, "get", "--servers", servers, "--prefix", prefix,
                         "-K", "100", "-C", "1", "--keys", keys, "--batches", str(batches),
                         "--seed", "7"] + list(extra)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise BenchError(f"loadgen failed: {' '.join(argv)}\n{p.stdout}\n{p.stderr[-2000:]}")
    return p


def measured_gets(args, mode):
    """(batches, --keys, extra loadgen arguments) of a profile's measured
    gets. hit: uniform over every row. cold: every id once. mixed: 90% of
    keys uniform over the first half of the rows (warm), 10% first reads
    of the second half, as the Zipf phase's near misses are (a request of
    100 keys with about 10 loads from PostgreSQL)."""
    if mode == "cold":
        return ROWS // 100, f"seq:1:{ROWS}", []
    if mode == "mixed":
        half = ROWS // 2
        batches = min(args.batches, half // 10)
        return batches, f"uniform:1:{half}", ["--cold", f"seq:{half + 1}:{ROWS}",
                                             "--hit-rate", "0.9"]
    return args.batches, f"uniform:1:{ROWS}", []


def profile_daemon(args, world, name, config, out, warm_asks, mode="hit"):
    """objcached under callgrind: warm, zero, measured gets, dump. cold:
    the pool flushed after the warm-up and every id asked once, so each key
    is a miss, loaded from PostgreSQL and filled. mixed: the same flush,
    then gets that are 90% near-cache hits and 10% such misses."""
    step(f"objcached ({name}) under callgrind")
    tag = re.sub(r"[^A-Za-z0-9_]+", "-", name).strip("-")
    os.environ["OBJCACHED_WRAPPER"] = " ".join(callgrind_argv(os.path.join(out, f"oc-{tag}")))
    try:
        oc = harness.Objcached(config, binary=args.objcached, parent_dir=world.dir,
                               ready_timeout=120).start()
    finally:
        del os.environ["OBJCACHED_WRAPPER"]
    try:
        if "near_cache_size" in config["objcached"]:
            harness.wait_until(lambda: oc.stats().get("near_serving") == 1, timeout=60,
                               what="the near-cache to serve")
        warm = ROWS // 2 if mode == "mixed" else ROWS    # mixed: the second half stays cold
        loadgen(args, oc.sock, "Item:", warm // 100, f"seq:1:{warm}",
                extra=["--repeat", str(warm_asks)])
        oc.wait_idle(timeout=120)
        if mode != "hit":
            world.flush()
        st0 = oc.stats()
        control("-z", oc.pid)
        batches, keys, extra = measured_gets(args, mode)
        loadgen(args, oc.sock, "Item:", batches, keys, extra=extra)
        if mode != "hit":
            oc.wait_idle(timeout=120)    # the fills after the replies count too
        control("-d", oc.pid)
        st1 = oc.stats()
    finally:
        oc.stop(timeout=120, check=False)
    keys = batches * 100
    dump = latest_dump(os.path.join(out, f"oc-{tag}"))
    d = {k: st1[k] - st0[k] for k in ("near_hits", "get_hits", "get_misses", "pg_queries")
         if k in st1}
    return {"name": f"objcached, {name}", "ir_per_key": total_ir(dump) / keys, "dump": dump,
            "stats": d, "keys": keys}


def user_sys(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def native(args, name, servers, prefix, pids, clients):
    """The same gets without valgrind: user and system CPU per key of the
    servers on the path (/proc) and of the load generator (rusage)."""
    batches = args.batches * 10
    u0 = [user_sys(p) for p in pids]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    loadgen(args, servers, prefix, batches, f"uniform:1:{ROWS}", extra=["-C", str(clients)])
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    u1 = [user_sys(p_) for p_ in pids]
    keys = batches * 100
    per = lambda v: v / keys * 1e6  # noqa: E731
    srv_u = sum(b[0] - a[0] for a, b in zip(u0, u1))
    srv_s = sum(b[1] - a[1] for a, b in zip(u0, u1))
    return {"name": name, "C": clients, "server_user": per(srv_u), "server_sys": per(srv_s),
            "client_user": per(r1.ru_utime - r0.ru_utime),
            "client_sys": per(r1.ru_stime - r0.ru_stime), "keys_per_s": keys / wall}


def profile_client(args, name, servers, prefix, out):
    step(f"load generator under callgrind: {name}")
    irs = []
    for b in (args.batches, 2 * args.batches):
        f = os.path.join(out, f"client-{name.split()[0]}-{b}")
        loadgen(args, servers, prefix, b, f"uniform:1:{ROWS}",
                wrap=callgrind_argv(f) + ["--trace-children=no"])
        irs.append(total_ir(f))
    return {"name": f"load generator -> {name}", "ir_per_key": (irs[1] - irs[0]) /
            (args.batches * 100), "dump": f, "stats": {},
            "keys": args.batches * 100}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objcached", default=os.path.join(ROOT, "build", "objcached"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "build", "bench",
                                                      "objcached-loadgen"))
    ap.add_argument("--batches", type=int, default=2000, help="measured batches of 100 keys")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "profile"))
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        ap.error("valgrind is not installed")
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.startswith(("oc-", "memcached", "client-")):
            os.unlink(os.path.join(args.out, f))
    harness.install_signal_handlers()
    workdir = tempfile.mkdtemp(prefix="objcached-profile.", dir="/tmp")
    os.chmod(workdir, 0o755)
    wargs = argparse.Namespace(objcached=args.objcached, loadgen=args.loadgen, old=None)
    cfg = dict(run.QUICK, rows=ROWS, hot=ROWS, quick=True, want_near=False)
    world = run.World(wargs, cfg, workdir)
    results, split = [], []
    t0 = time.monotonic()
    try:
        world.start()
        # the pool holds every row for objcached (oc:) before anything is profiled
        loadgen(args, world.oc.sock, "Item:", ROWS // 100, f"seq:1:{ROWS}")
        world.oc.wait_idle(timeout=120)
        results.append(profile_daemon(args, world, "near-cache on",
                                      world.near_config("64m"), args.out, 3))
        results.append(profile_daemon(args, world, "near-cache off", world.base_config(),
                                      args.out, 1))
        results.append(profile_daemon(args, world, "cold (all misses)", world.base_config(),
                                      args.out, 1, mode="cold"))
        results.append(profile_daemon(args, world, "near-cache on, 10% cold",
                                      world.near_config("64m"), args.out, 3, mode="mixed"))
        pool = ",".join(m.address for m in world.mcs)
        near = harness.Objcached(world.near_config("64m"), binary=args.objcached,
                                 parent_dir=world.dir).start()
        try:
            harness.wait_until(lambda: near.stats().get("near_serving") == 1, timeout=30,
                               what="the near-cache to serve")
            loadgen(args, near.sock, "Item:", ROWS // 100, f"seq:1:{ROWS}",
                    extra=["--repeat", "3"])
            step("the same gets without valgrind: user and system CPU per key")
            for c in (1, 16):
                split.append(native(args, "direct (3 memcached)", pool, world.oc_prefix,
                                    [m.proc.pid for m in world.mcs], c))
                split.append(native(args, "objcached, near-cache off", world.oc.sock,
                                    "Item:", [world.oc.pid], c))
                split.append(native(args, "objcached, near-cache on", near.sock, "Item:",
                                    [near.pid], c))
        finally:
            near.stop()
        results.append(profile_client(args, "direct (3 servers)", pool, world.oc_prefix,
                                      args.out))
        results.append(profile_client(args, "objcached socket", world.oc.sock, "Item:",
                                      args.out))
    finally:
        world.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    say()
    say(f"Instructions per key, K=100 gets at 1 client, {args.batches * 100:,} keys measured "
        f"({ROWS:,} for the cold run) "
        f"({(time.monotonic() - t0) / 60:.1f} min):")
    say()
    say("| process | Ir per key | checked |")
    say("|---|---:|---|")
    for r in results:
        say(f"| {r['name']} | {r['ir_per_key']:,.0f} | "
            + ", ".join(f"{k} {v:,}" for k, v in r["stats"].items()) + " |")
    say()
    say(f"CPU per key without valgrind (us; K=100, {args.batches * 1000:,} keys a run; "
        "server: the 3 memcached, or objcached alone):")
    say()
    say("| path | C | keys/s | server user | server system | client user | client system "
        "| total |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in split:
        tot = r["server_user"] + r["server_sys"] + r["client_user"] + r["client_sys"]
        say(f"| {r['name']} | {r['C']} | {r['keys_per_s']:,.0f} | {r['server_user']:.2f} | "
            f"{r['server_sys']:.2f} | {r['client_user']:.2f} | {r['client_sys']:.2f} | "
            f"{tot:.2f} |")
    for r in results[:4]:
        say()
        say(f"{r['name']}: the functions with the most self Ir (rep-prefixed string "
            "instructions, memset's rep stosb, count one Ir per iteration: callgrind "
            "overstates them against their real cost)")
        for ln in top(r["dump"], r["keys"]):
            say("    " + ln)
    say()
    say(f"callgrind files: {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, harness.HarnessError) as e:
        print(f"profile: {e}", file=sys.stderr)
        sys.exit(1)

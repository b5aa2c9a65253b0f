#!/usr/bin/python3
"""What a fleet of sidecars costs the PostgreSQL primary they follow.

A sidecar runs on every app host, so what each holds open on PostgreSQL is
multiplied by the fleet. This starts a throwaway PostgreSQL (wal_level =
logical), one memcached and N objcached sidecars over one database whose
model is read from the WAL, and measures, for each N and follower setting:

  conns     PostgreSQL connections the sidecars hold (pg_stat_activity,
            application_name objcached*)
  cpu       CPU time of those connections' backends, in ms per second
            (utime + stime from /proc/<pid>/stat: run as root or as the
            postgres user), idle and while pgbench commits --rate
            single-row UPDATEs per second on the watched table
  polls     the sidecars' feed polls per second, all together

Three sidecars are WAL candidates (wal = on, one holds the slot); the
others only follow the feed (wal = off, invalidation_poll = 0: in a
WAL-only database the holder drains the outbox's requeued rows itself).
Followers run either with feed_listen = on (woken by each append's NOTIFY)
or off (a poll every feed_poll, 250 ms).

    /usr/bin/python3 bench/fleet.py --objcached build-release/objcached \
        [--sizes 1,8,32] [--seconds 10] [--rate 500] [--out DIR]

Prints a table and writes DIR/fleet.csv. Nothing is asserted: the figures
feed docs/wal.md's fleet section.
"""

import argparse
import csv
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import consistency as oc_c  # noqa: E402
import harness  # noqa: E402

SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO users SELECT i, 'user ' || i, 0 FROM generate_series(1, 100000) AS i;
"""
MODELS = {"User": {"table": "users", "near_ttl": "30s"}}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def config(mc, db, candidate, listen, feed_keys="on"):
    pgsec = {"wal": "on" if candidate else "off", "feed_listen": "on" if listen else "off"}
    if candidate:
        pgsec["wal_feed_keys"] = feed_keys
    else:
        pgsec["invalidation_poll"] = "0"
    return oc_c.sidecar_config([mc], db.conninfo, MODELS,
                               {"objcached": {"near_cache_size": "16m", "log_level": "warn"},
                                "postgresql": pgsec})


def backend_cpu(db):
    """{pid: cpu seconds} of the sidecars' backends (walsender included)."""
    pids = [r[0] for r in db.q("SELECT pid FROM pg_stat_activity WHERE datname = "
                               "current_database() AND application_name LIKE 'objcached%'")]
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
    return out


def measure(db, sidecars, seconds):
    polls0 = sum(oc.stats()["feed_polls"] for oc in sidecars)
    c0 = backend_cpu(db)
    time.sleep(seconds)
    c1 = backend_cpu(db)
    polls1 = sum(oc.stats()["feed_polls"] for oc in sidecars)
    cpu = sum(c1[p] - c0.get(p, 0.0) for p in c1)   # a backend born meanwhile: all of it
    return {"conns": len(c1), "cpu_ms_s": 1000 * cpu / seconds,
            "polls_s": (polls1 - polls0) / seconds}


def pgbench(pg, db, rate, seconds):
    script = os.path.join(pg.dir, "upd.sql")
    with open(script, "w", encoding="ascii") as f:
        f.write("\\set id random(1, 100000)\nUPDATE users SET n = n + 1 WHERE id = :id;\n")
    os.chmod(script, 0o644)
    cmd = [os.path.join(pg.bindir, "pgbench"), "-n", "-h", pg.dir, "-p", str(pg.port),
           "-U", "postgres", "-c", "4", "-j", "2", "-R", str(rate), "-T", str(seconds),
           "-f", script, db.name]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_size(pg, mc, db, binary, n, listen, seconds, rate, feed_keys):
    fleet = oc_c.Fleet(binary)
    try:
        sidecars = [fleet.start(config(mc, db, i < 3, listen, feed_keys)) for i in range(n)]
        harness.wait_until(lambda: sum(oc.stats()["wal_holder"] for oc in sidecars) == 1,
                           timeout=30, what="a WAL holder")
        time.sleep(2)
        idle = measure(db, sidecars, seconds)
        bench = pgbench(pg, db, rate, int(seconds) + 4)
        time.sleep(2)
        busy = measure(db, sidecars, seconds)
        _, err = bench.communicate(timeout=seconds + 60)
        if bench.returncode != 0:
            raise RuntimeError(f"pgbench failed: {err}")
        return idle, busy
    finally:
        fleet.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objcached", default=os.path.join(ROOT, "build-release", "objcached"))
    ap.add_argument("--sizes", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--out", default="/tmp/oc-fleet")
    ap.add_argument("--wal-feed-keys", choices=("on", "off"), default="on",
                    help="wal_feed_keys of the WAL candidates (off: whole-model rows per "
                         "heartbeat instead of keys, docs/wal.md)")
    args = ap.parse_args()
    harness.install_signal_handlers()
    os.makedirs(args.out, exist_ok=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    pg = harness.Postgres(settings={"wal_level": "logical", "max_wal_senders": "20",
                                    "max_replication_slots": "20",
                                    "max_connections": str(40 + 4 * max(sizes))})
    mc = harness.Memcached()
    rows = []
    try:
        pg.start()
        mc.start()
        oc_c.create_template(pg, "fleet", SCHEMA, MODELS, args.objcached)
        db = oc_c.HookDb(pg, "fleet")
        cfg = config(mc, db, True, True)
        p = oc_c.run_install_hook(args.objcached, cfg)
        if p.returncode != 0 or "via the WAL" not in p.stdout:
            raise RuntimeError(p.stdout + p.stderr)
        print(f"{'N':>4} {'followers':>10} {'conns':>6} {'idle cpu ms/s':>14} "
              f"{'busy cpu ms/s':>14} {'idle polls/s':>13} {'busy polls/s':>13}")
        for n in sizes:
            for listen in (True, False):
                idle, busy = run_size(pg, mc, db, args.objcached, n, listen,
                                      args.seconds, args.rate, args.wal_feed_keys)
                row = {"sidecars": n, "feed_listen": "on" if listen else "off",
                       "conns": busy["conns"], "idle_cpu_ms_s": round(idle["cpu_ms_s"], 1),
                       "busy_cpu_ms_s": round(busy["cpu_ms_s"], 1),
                       "idle_polls_s": round(idle["polls_s"], 1),
                       "busy_polls_s": round(busy["polls_s"], 1)}
                rows.append(row)
                print(f"{n:>4} {row['feed_listen']:>10} {row['conns']:>6} "
                      f"{row['idle_cpu_ms_s']:>14} {row['busy_cpu_ms_s']:>14} "
                      f"{row['idle_polls_s']:>13} {row['busy_polls_s']:>13}", flush=True)
        db.close()
    finally:
        mc.cleanup() if hasattr(mc, "cleanup") else mc.stop()
        pg.cleanup()
    with open(os.path.join(args.out, "fleet.csv"), "w", newline="", encoding="ascii") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"pgbench: 4 clients, {args.rate} single-row UPDATEs/s; {args.seconds:g} s windows; "
          f"wal_feed_keys {args.wal_feed_keys}; csv in {args.out}/fleet.csv")


if __name__ == "__main__":
    main()

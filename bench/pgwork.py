#!/usr/bin/env python3
"""PostgreSQL's work per cold request: objcached against the hand-written
pattern, from pg_stat_statements (calls, rows, execution time of each
statement), not from the cluster's CPU (which also counts what runs beside
the load, and a backend that exits with its client at the edge of a
reading).

Starts a throwaway PostgreSQL (pg_stat_statements loaded), 3 memcached and
one objcached on loopback, loads --rows rows into `items` (the run's table),
then, per round, runs the load generator cold (every id asked once) in the
hand-written mode and through objcached, interleaved, and prints each
statement's calls, rows and execution time per call and per row.

  /usr/bin/python3 bench/pgwork.py --clients 1 --rounds 2
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402
from bench_common import items_sql  # noqa: E402



def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.join(HERE, "..")
    ap.add_argument("--objcached", default=os.path.join(root, "build", "objcached"))
    ap.add_argument("--loadgen", default=os.path.join(root, "build", "bench",
                                                      "objcached-loadgen"))
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--keys", type=int, default=100, help="keys per get (K)")
    ap.add_argument("--batches", type=int, default=400, help="gets per run")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    per_run = args.keys * args.batches
    if 2 * args.rounds * per_run > args.rows:
        ap.error(f"--rows must be at least {2 * args.rounds * per_run}: every id is asked once")
    harness.install_signal_handlers()
    pg = harness.Postgres(dbname="pgwork")
    try:
        pg.start()
        mcs = [harness.Memcached(memory_mb=256).start() for _ in range(3)]
        pg.execute(items_sql(args.rows))
        pg.execute("VACUUM ANALYZE items")
        oc = harness.Objcached({
            "objcached": {"log_level": "warn", "max_keys": "1024"},
            "memcached": {"servers": " ".join(m.address for m in mcs)},
            "postgresql": {"conninfo": pg.conninfo, "connections": "4",
                           "invalidation_poll": "1s"},
            "model Item": {"table": "items", "key_type": "bigint", "ttl": "1h"},
        }, binary=args.objcached)
        subprocess.run([args.objcached, "--install-hook", "-c", oc.config_path], check=True,
                       capture_output=True)
        pg.execute("SELECT objcached.attach('public.items', 'Item', 'id')")
        oc.start()
        time.sleep(1)
        servers = ",".join(m.address for m in mcs)
        lo = 1
        for rnd in range(args.rounds):
            for mode in ("hand", "objcached"):
                pg.execute("SELECT pg_stat_statements_reset()")
                s0 = oc.stats()
                argv = [args.loadgen, "hand" if mode == "hand" else "get",
                        "--servers", servers if mode == "hand" else oc.sock,
                        "--prefix", "hand:" if mode == "hand" else "Item:",
                        "-K", str(args.keys), "-C", str(args.clients),
                        "--keys", f"seq:{lo}:{lo + per_run - 1}", "--batches",
                        str(args.batches)]
                if mode == "hand":
                    argv += ["--pg", pg.conninfo]
                lo += per_run
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                r = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
                s1 = oc.stats()
                print(f"round {rnd + 1} {mode:<9} C={args.clients}: {r['keys_per_s']:,.0f} "
                      f"keys/s, p50 {r['p50_us']:,.0f} us, {r['batches']} gets"
                      + (f", objcached pg_queries {s1['pg_queries'] - s0['pg_queries']}"
                         if mode != "hand" else ""))
                for calls, rows, ms, query in pg.execute(
                        "SELECT calls, rows, total_exec_time, left(query, 100) "
                        "FROM pg_stat_statements WHERE query ILIKE '%FROM%items%' "
                        "AND query NOT ILIKE '%pg_stat%' ORDER BY calls DESC"):
                    print(f"    {calls} calls, {rows} rows, {ms / calls * 1000:,.0f} us a call, "
                          f"{ms / max(rows, 1) * 1000:.2f} us a row: {query}")
    finally:
        harness.stop_all()


if __name__ == "__main__":
    main()

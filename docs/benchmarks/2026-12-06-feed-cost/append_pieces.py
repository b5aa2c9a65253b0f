"""What each part of objcached.feed_append costs one backend (issue 16): each
statement alone in a READ COMMITTED transaction with synchronous_commit off,
pgbench -M prepared, one client, 3 rounds of 3 s; prints the median latency.
A throwaway PostgreSQL 15 from the test harness; run from anywhere:
    /usr/bin/python3 docs/benchmarks/2026-12-06-feed-cost/append_pieces.py"""
import os, re, shutil, subprocess, sys, tempfile
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
TMP = tempfile.mkdtemp(prefix="append-pieces-")
os.chmod(TMP, 0o755)  # the harness runs initdb as postgres
pg = harness.Postgres(dbname="ap", parent_dir=TMP, settings={"fsync": "on", "wal_level": "logical"})
pg.start()
try:
    subprocess.run(["psql", "-q", "-h", pg.dir, "-p", str(pg.port), "-U", pg.SUPERUSER, "-d", "ap",
                    "-v", "ON_ERROR_STOP=1", "-f", os.path.join(ROOT, "sql", "install.sql")], check=True, capture_output=True)
    keys = ",".join(str(1000 + i * 37) for i in range(26))
    models = ",".join(["Ww"] * 26)
    S = {
      "empty": "SELECT 1",
      "append": f"SELECT objcached.feed_append('{{{models}}}'::text[], '{{{keys}}}'::text[], '{{}}'::text[], true, now(), NULL, 'probe')",
      "lock": "SELECT objcached._feed_lock('x')",
      "bound": "SELECT objcached._feed_bound(now())",
      "advance": "SELECT objcached._feed_advance(NULL, NULL, 'w')",
      "agg": f"SELECT pg_catalog.array_agg(DISTINCT k COLLATE \"C\" ORDER BY k COLLATE \"C\") FROM pg_catalog.unnest('{{{keys}}}'::text[]) k WHERE k IS NOT NULL",
      "insert": f"INSERT INTO objcached.feed (seq, committed_at, model, keys, generation) VALUES (nextval('objcached.feed_seq'), now(), 'Ww', '{{{keys}}}'::text[], NULL)",
      "notify": "SELECT pg_notify('objcached_feed', '1')",
      "update": "UPDATE objcached.feed_head h SET seq = GREATEST(h.seq, 1), updated_at = clock_timestamp()",
    }
    env = dict(os.environ, PGHOST=pg.dir, PGPORT=str(pg.port), PGUSER=pg.SUPERUSER, PGDATABASE="ap")
    res = {}
    for rnd in range(3):
        for name, stmt in S.items():
            with open(os.path.join(TMP, f"p_{name}.sql"), "w") as f:
                f.write(f"BEGIN ISOLATION LEVEL READ COMMITTED;\nSET LOCAL synchronous_commit = off;\n{stmt};\nCOMMIT;\n")
            r = subprocess.run(["/usr/lib/postgresql/15/bin/pgbench", "-n", "-M", "prepared", "-f", os.path.join(TMP, f"p_{name}.sql"), "-T", "3", "-c", "1"],
                               env=env, capture_output=True, text=True)
            m = re.search(r"latency average = ([\d.]+) ms", r.stdout)
            res.setdefault(name, []).append(float(m.group(1)) * 1000 if m else -1)
            if not m: print(name, r.stderr[-400:])
    for name, v in res.items():
        print(f"{name:8s} {sorted(v)[1]:7.1f} us  {v}")
finally:
    pg.cleanup()
    shutil.rmtree(TMP, ignore_errors=True)

"""What a publication column list saves the WAL sender (issue 16): two
pgoutput slots read by pg_recvlogical at once, one for publications of whole
tables, one with column lists of the key only, under pgbench single-row
UPDATEs of a 15-column table and of the benchmark's 3-column one; prints each
WAL sender's CPU per transaction. A throwaway PostgreSQL 15:
    /usr/bin/python3 docs/benchmarks/2026-12-06-feed-cost/column_lists.py"""
import os, shutil, subprocess, sys, tempfile, time
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
TMP = tempfile.mkdtemp(prefix="column-lists-")
os.chmod(TMP, 0o755)  # the harness runs initdb as postgres
pg = harness.Postgres(dbname="cl", parent_dir=TMP, settings={
    "fsync": "off", "synchronous_commit": "off", "wal_level": "logical", "max_wal_senders": "10"})
pg.start()
BIN = "/usr/lib/postgresql/15/bin"
env = dict(os.environ, PGHOST=pg.dir, PGPORT=str(pg.port), PGUSER=pg.SUPERUSER, PGDATABASE="cl")
def sql(q):
    return subprocess.run(["psql", "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", q], env=env, check=True,
                          capture_output=True, text=True).stdout
procs = []
try:
    sql("""CREATE TABLE wide (id bigint PRIMARY KEY, a int DEFAULT 1, b int DEFAULT 2, c bigint DEFAULT 3,
        t1 timestamptz DEFAULT now(), t2 timestamptz DEFAULT now(), t3 timestamptz DEFAULT now(),
        n1 numeric DEFAULT 12345.678, n2 numeric DEFAULT 0.5, s1 text DEFAULT 'alice@example.com',
        s2 text DEFAULT 'Alice Example', s3 text DEFAULT 'some longer description of a user, about eighty bytes long..',
        j jsonb DEFAULT '{"theme": "dark", "lang": "en", "flags": [1,2,3]}', f bool DEFAULT true,
        d date DEFAULT current_date);
        INSERT INTO wide (id) SELECT generate_series(1, 100000);
        CREATE TABLE narrow (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0, pad text NOT NULL DEFAULT 'some payload of a typical row');
        INSERT INTO narrow (id) SELECT generate_series(1, 100000);
        CREATE PUBLICATION p_all FOR TABLE wide, narrow;
        CREATE PUBLICATION p_id FOR TABLE wide (id), narrow (id);""")
    sql("SELECT pg_create_logical_replication_slot('s_all', 'pgoutput')")
    sql("SELECT pg_create_logical_replication_slot('s_id', 'pgoutput')")
    for slot, pub in (("s_all", "p_all"), ("s_id", "p_id")):
        procs.append(subprocess.Popen([f"{BIN}/pg_recvlogical", "-d", "cl", "--slot", slot, "--start", "-o", "proto_version=1",
                                       "-o", f"publication_names={pub}", "-f", "/dev/null", "-s", "1"], env=env))
    time.sleep(2)
    def ws():
        rows = sql("SELECT slot_name, active_pid FROM pg_replication_slots")
        return {l.split("|")[0]: int(l.split("|")[1]) for l in rows.split()}
    def cpu(pid):
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    pids = ws()
    for rnd in range(2):
        for table in ("wide", "narrow"):
            col = "a" if table == "wide" else "v"
            with open(os.path.join(TMP, "upd.sql"), "w") as f:
                f.write(f"\\set id random(1, 100000)\nUPDATE {table} SET {col} = {col} + 1 WHERE id = :id;\n")
            c0 = {s: cpu(p) for s, p in pids.items()}
            r = subprocess.run([f"{BIN}/pgbench", "-n", "-M", "prepared", "-f", os.path.join(TMP, "upd.sql"), "-T", "8", "-c", "4", "-j", "2"],
                               env=env, capture_output=True, text=True)
            time.sleep(3)   # let both walsenders catch up
            c1 = {s: cpu(p) for s, p in pids.items()}
            n = int([l for l in r.stdout.splitlines() if "actually processed" in l][0].split(":")[1].split("/")[0])
            print(rnd, table, n, {s: f"{1e6*(c1[s]-c0[s])/n:.1f} us/tx" for s in pids}, flush=True)
finally:
    for p in procs:
        p.terminate()
    pg.cleanup()
    shutil.rmtree(TMP, ignore_errors=True)

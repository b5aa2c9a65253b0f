#!/usr/bin/python3
"""objcached demo: a throwaway PostgreSQL with a 130,000-row forum, two
memcached servers and objcached, all on loopback; then a cold and a warm
get-multi with pymemcache, a few values and the stats.

Run through scripts/demo.sh (which installs and builds first):

    bash scripts/demo.sh            # show, then stop everything
    bash scripts/demo.sh --keep     # leave it running; prints how to stop it

Direct use: /usr/bin/python3 scripts/demo.py [--keep] [--dir DIR] [--objcached BIN]
"""

import argparse
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402
from pymemcache.client.base import Client  # noqa: E402

DATA_SQL = os.path.join(ROOT, "scripts", "demo_data.sql")

MODELS = {
    "model User": {"table": "public.users", "key": "id", "key_type": "bigint",
                   "columns": "id, username, display_name, karma, is_moderator, created_at, "
                              "last_seen_at",
                   "ttl": "1h", "missing_ttl": "30s"},
    "model Thread": {"table": "threads"},   # the whole row
    "model Post": {"table": "posts",
                   "columns": "id, thread_id, author_id, body, score, created_at, edited_at",
                   "ttl": "10m"},
}


def say(msg=""):
    print(msg, flush=True)


def step(msg):
    print(f"==> {msg}", flush=True)


def shorten(data, width=160):
    text = data.decode("utf-8", "replace")
    return text if len(text) <= width else text[:width - 3] + "..."


def write_stop_script(path, workdir, pg, mcs, oc):
    """A script that stops what this demo started and removes workdir."""
    pg_ctl = os.path.join(pg.bindir, "pg_ctl")
    as_pg = "runuser -u postgres -- " if harness.IS_ROOT else ""
    pids = " ".join(f"{p.proc.pid}:{os.path.basename(p.binary)}"
                    for p in [oc] + mcs if p is not None and p.proc is not None)
    text = f"""#!/usr/bin/env bash
# Stops the objcached demo (objcached, two memcached, PostgreSQL) and
# removes {workdir}. Written by scripts/demo.py.
set -u
for entry in {pids}; do
    pid=${{entry%%:*}} name=${{entry#*:}}
    if tr '\\0' ' ' </proc/$pid/cmdline 2>/dev/null | grep -q "$name"; then
        kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do [ -e /proc/$pid ] || break; sleep 0.1; done
    fi
done
if [ -f {shlex.quote(pg.datadir)}/postmaster.pid ]; then
    {as_pg}{shlex.quote(pg_ctl)} -D {shlex.quote(pg.datadir)} -m fast -w stop >/dev/null
fi
rm -rf {shlex.quote(workdir)}
echo "objcached demo stopped"
"""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true",
                    help="leave the servers running and print how to use and stop them")
    ap.add_argument("--dir", help="work directory (default: a new one under /tmp)")
    ap.add_argument("--objcached", default=os.path.join(ROOT, "build", "objcached"),
                    help="the objcached binary (default: build/objcached)")
    args = ap.parse_args()

    harness.install_signal_handlers()
    dog = harness.Watchdog(900, "the demo")
    workdir = args.dir or tempfile.mkdtemp(prefix="objcached-demo.", dir="/tmp")
    os.chmod(workdir, 0o755)   # the postgres user must reach its cluster inside
    stop_script = os.path.join(workdir, "stop.sh")

    pg = oc = None
    mcs = []
    keep = False
    try:
        t0 = time.monotonic()
        pg = harness.Postgres(dbname="forum", parent_dir=workdir)
        pg.start()
        step(f"PostgreSQL on 127.0.0.1:{pg.port} and {pg.dir} "
             f"(started in {time.monotonic() - t0:.1f} s)")

        mcs = [harness.Memcached(parent_dir=workdir, detached=args.keep).start()
               for _ in range(2)]
        step(f"memcached on {mcs[0].address} and {mcs[1].address}")

        step("loading the forum (scripts/demo_data.sql) ...")
        t0 = time.monotonic()
        pg.execute_file(DATA_SQL)
        counts = pg.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM threads),"
                            " (SELECT count(*) FROM posts)")[0]
        say(f"    {counts[0]:,} users, {counts[1]:,} threads, {counts[2]:,} posts "
            f"in {time.monotonic() - t0:.1f} s")

        config = {
            "objcached": {"load_timeout": "5s", "log_level": "info"},
            "memcached": {"servers": " ".join(m.address for m in mcs)},
            "postgresql": {"conninfo": pg.conninfo, "connections": "2"},
            **MODELS,
        }
        oc = harness.Objcached(config, binary=args.objcached, parent_dir=workdir,
                               detached=args.keep)
        write_stop_script(stop_script, workdir, pg, mcs, None)
        hook = subprocess.run([args.objcached, "--install-hook", "-c", oc.config_path],
                              capture_output=True, text=True, timeout=120)
        if hook.returncode != 0:
            raise RuntimeError(f"objcached --install-hook failed:\n{hook.stdout}{hook.stderr}")
        step("objcached --install-hook: the invalidation hook (sql/install.sql) is in the database")
        for line in hook.stdout.strip().splitlines():
            say(f"    {line}")
        check = harness.check_config(oc.config_path, binary=args.objcached)
        oc.start()
        write_stop_script(stop_script, workdir, pg, mcs, oc)
        step(f"objcached -c {oc.config_path}")
        say(f"    listening on 127.0.0.1:{oc.port} and {oc.sock}")
        say(f"    --check-config: {(check.stdout or check.stderr).strip()}")
        say()
        say("The configuration:")
        for line in oc.config_text.strip().splitlines():
            say(f"    {line}")
        say()

        rng = random.Random(2024)
        user_ids = sorted(rng.sample(range(1, counts[0] + 1), 20))
        post_ids = sorted(rng.sample(range(1, counts[2] + 1), 20))
        keys = [f"User:{i}" for i in user_ids] + [f"Post:{i}" for i in post_ids]
        client = Client(("127.0.0.1", oc.port), connect_timeout=10, timeout=10)
        client.version()   # connect before timing

        s0 = oc.stats()
        t0 = time.perf_counter()
        cold = client.get_many(keys)
        cold_ms = (time.perf_counter() - t0) * 1000
        s1 = oc.stats()
        step(f"cold: get_many of 20 users + 20 posts (one `get` of 40 keys): "
             f"{len(cold)} values in {cold_ms:.2f} ms")
        say(f"    memcached: 40 misses; PostgreSQL: {s1['pg_queries'] - s0['pg_queries']} "
            f"queries (one per model), {s1['pg_rows'] - s0['pg_rows']} rows")

        oc.wait_idle()
        s2 = oc.stats()
        t0 = time.perf_counter()
        warm = client.get_many(keys)
        warm_ms = (time.perf_counter() - t0) * 1000
        s3 = oc.stats()
        step(f"warm: the same get_many: {len(warm)} values in {warm_ms:.2f} ms")
        say(f"    memcached hits: {s3['get_hits'] - s2['get_hits']}; "
            f"PostgreSQL queries: {s3['pg_queries'] - s2['pg_queries']}; "
            f"identical to the cold reply: {'yes' if warm == cold else 'NO'}")
        say()

        step("a few of the values (row_to_json of the configured columns, as stored):")
        for key in (keys[0], keys[1], keys[20], keys[21]):
            say(f"    {key:<12} {shorten(cold[key])}")
        thread = client.get("Thread:1")
        say(f"    {'Thread:1':<12} {shorten(thread)}")
        missing = client.get_many(["User:999999999"])
        say(f"    {'User:999999999':<12} (no such row: absent from the reply, {missing})")
        say()

        victim = keys[0]
        uid = int(victim.split(":")[1])
        step(f"a write that bypasses the app: UPDATE users SET karma = karma + 1000 "
             f"WHERE id = {uid}")
        s4 = oc.stats()
        t0 = time.perf_counter()
        pg.execute(f"UPDATE users SET karma = karma + 1000 WHERE id = {uid}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and oc.stats()["invalidations"] == s4["invalidations"]:
            time.sleep(0.005)
        fresh = client.get(victim)
        say(f"    the trigger wrote the key to objcached.outbox and NOTIFYed; objcached deleted it "
            f"from memcached {(time.perf_counter() - t0) * 1000:.1f} ms after the commit")
        say(f"    {victim:<12} {shorten(fresh)}")
        say()

        step(f"the app's save event: push a new state with `set {victim}`")
        body = fresh.replace(b'"karma":', b'"karma":0, "was_karma":', 1)
        client.set(victim, body, noreply=False)
        say(f"    {victim:<12} {shorten(client.get(victim))}")
        step(f"the app's delete event: tombstone with `delete {victim}`")
        client.delete(victim, noreply=False)
        say(f"    {victim:<12} {client.get(victim)!r} (absent, without asking PostgreSQL)")
        say()

        step("stats:")
        with oc.client() as raw:
            reply = raw.command("stats")
        for line in reply.lines:
            say(f"    {line.decode()}")
        client.close()
        say()

        if args.keep:
            keep = True
            for p in [pg, oc] + mcs:
                p.detach()
            dog.cancel()
            step("left running (--keep). Talk to it with any memcached client:")
            say(f"    /usr/bin/python3 -c 'from pymemcache.client.base import Client; "
                f"print(Client((\"127.0.0.1\", {oc.port})).get_many([\"User:1\", \"Post:1\"]))'")
            say(f"    exec 3<>/dev/tcp/127.0.0.1/{oc.port}; printf 'get User:1 Thread:1\\r\\n"
                f"stats\\r\\nquit\\r\\n' >&3; cat <&3")
            say(f"    unix socket: {oc.sock}")
            say(f"    PostgreSQL:  psql \"{pg.conninfo}\"   (as root: runuser -u postgres -- "
                f"psql ...)")
            say(f"    daemon log:  {oc.logfile}")
            say(f"    stop it all: bash {stop_script}")
        return 0
    finally:
        if not keep:
            if oc is not None:
                try:
                    oc.stop(check=False)
                finally:
                    oc.cleanup()
            for m in mcs:
                m.cleanup()
            if pg is not None:
                pg.cleanup()
            if os.path.exists(stop_script):
                os.unlink(stop_script)
            if not args.dir and not os.listdir(workdir):
                os.rmdir(workdir)
            dog.cancel()
            if pg is not None:
                step("stopped objcached, memcached and PostgreSQL")


if __name__ == "__main__":
    # Let Ctrl-C cancel a running query (the data load) instead of waiting for it.
    import psycopg2.extensions
    import psycopg2.extras
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    try:
        sys.exit(main())
    except (KeyboardInterrupt, psycopg2.extensions.QueryCanceledError):
        print("\ninterrupted: everything was stopped", file=sys.stderr)
        sys.exit(130)

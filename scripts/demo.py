#!/usr/bin/python3
"""objcached demo: a throwaway PostgreSQL with a 130,000-row forum, two
memcached servers and objcached, all on loopback; then, with pymemcache as
the app's client, six steps, each checked:

  1. a cold get-multi: every value is byte for byte PostgreSQL's own
     row_to_json of its row, ids with no row are absent, one query per model;
  2. the same get-multi warm: the same reply, all from memcached;
  3. an SQL UPDATE that bypasses the app reaches the cache (database hook);
  4. the app commits an UPDATE and pushes the new row (`set`): STORED, served,
     and still served after objcached's check against PostgreSQL;
  5. the row deleted, then its tombstone (`delete`), checked against
     PostgreSQL: the object reads absent without asking PostgreSQL;
  6. the stats agree with all of the above.

The first check that fails stops the demo with a message saying what was
expected and what came back, and the exit status is 1. The daemon must then
stop cleanly (exit 0, no sanitizer report). Run through scripts/demo.sh
(which installs and builds first):

    bash scripts/demo.sh            # show, then stop everything
    bash scripts/demo.sh --keep     # leave it running; prints how to stop it

Direct use (the test suite's `demo` test does this):
    /usr/bin/python3 scripts/demo.py [--keep] [--dir DIR] [--objcached BIN]
"""

import argparse
import os
import random
import shlex
import subprocess
import sys
import tempfile
import textwrap
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
ABSENT_ID = 999999999   # no table has a row with this id
WAIT = 5.0              # seconds a step may wait for something asynchronous


class DemoFailure(Exception):
    """A step did not do what the demo says it does."""


def check(ok, what):
    if not ok:
        raise DemoFailure(what)


def say(msg=""):
    print(msg, flush=True)


def step(msg):
    print(f"==> {msg}", flush=True)


def good(msg):
    print(textwrap.fill(msg, width=100, initial_indent="    ok: ", subsequent_indent="        ",
                        break_on_hyphens=False), flush=True)


def shorten(data, width=150):
    if data is None:
        return "(absent)"
    text = data.decode("utf-8", "replace")
    return text if len(text) <= width else text[:width - 3] + "..."


def mismatch(what, got, want_what, want):
    """A failure message showing two values that should be equal, cut
    around their first difference."""
    if got is None or want is None:
        return f"{what}\n    {shorten(got, 300)}\n  {want_what}\n    {shorten(want, 300)}"
    i = next((j for j in range(min(len(got), len(want))) if got[j] != want[j]),
             min(len(got), len(want)))
    lo = max(0, i - 60)

    def cut(v):
        text = v[lo:i + 100].decode("utf-8", "replace")
        return ("..." if lo else "") + text + ("..." if i + 100 < len(v) else "")
    return (f"{what} (they differ from byte {i} on)\n    {cut(got)}\n  {want_what}\n"
            f"    {cut(want)}")


def reference_rows(conn, model, ids):
    """{id: bytes}: PostgreSQL's own row_to_json of each row of `model`
    among `ids`, of the model's configured columns (the whole row if none),
    on `conn`, a session with the settings objcached pins
    (harness.SESSION_OPTIONS: TimeZone, DateStyle, ...)."""
    m = MODELS[f"model {model}"]
    key = m.get("key", "id")
    if "columns" in m:
        check(key in [c.strip() for c in m["columns"].split(",")],
              f"the demo's model {model} must list its key among its columns")
        sql = (f"SELECT r.{key}, row_to_json(r)::text FROM "
               f"(SELECT {m['columns']} FROM {m['table']} WHERE {key} = ANY(%s)) AS r")
    else:
        sql = f"SELECT t.{key}, row_to_json(t)::text FROM {m['table']} AS t WHERE {key} = ANY(%s)"
    with conn.cursor() as cur:
        cur.execute(sql, (list(ids),))
        return {row[0]: row[1].encode("utf-8") for row in cur.fetchall()}


def delta(before, after, name):
    return after[name] - before[name]


def wait_stat(oc, name, at_least, what):
    """Wait up to WAIT s for stats[name] >= at_least; the stats then."""
    deadline = time.monotonic() + WAIT
    while True:
        s = oc.stats()
        if s[name] >= at_least:
            return s
        check(time.monotonic() < deadline,
              f"{what}: after {WAIT:.0f} s, {name} is {s[name]}, expected at least {at_least}")
        time.sleep(0.01)


def raw_set(raw, key, body):
    """`set key 0 0 len` with body, as any memcached client sends it; the reply line."""
    raw.send(f"set {key} 0 0 {len(body)}\r\n".encode() + body + b"\r\n")
    return raw.read_response().terminal.decode()


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


class Servers:
    """What the demo started, filled in as it starts (main stops it all)."""
    pg = None
    mcs = ()
    oc = None


def start_servers(args, workdir, stop_script, srv):
    """PostgreSQL with the forum and the hook, two memcached, objcached.
    Returns the row counts of users, threads and posts."""
    t0 = time.monotonic()
    pg = srv.pg = harness.Postgres(dbname="forum", parent_dir=workdir)
    pg.start()
    step(f"PostgreSQL on 127.0.0.1:{pg.port} and {pg.dir} "
         f"(started in {time.monotonic() - t0:.1f} s)")

    mcs = srv.mcs = [harness.Memcached(parent_dir=workdir, detached=args.keep)
                     for _ in range(2)]
    for m in mcs:
        m.start()
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
    oc = srv.oc = harness.Objcached(config, binary=args.objcached, parent_dir=workdir,
                                    detached=args.keep)
    write_stop_script(stop_script, workdir, pg, mcs, None)
    hook = subprocess.run([args.objcached, "--install-hook", "-c", oc.config_path],
                          capture_output=True, text=True, timeout=120)
    check(hook.returncode == 0,
          f"objcached --install-hook failed (exit {hook.returncode}):\n{hook.stdout}{hook.stderr}")
    step("objcached --install-hook: the invalidation hook (sql/install.sql) is in the database")
    for line in hook.stdout.strip().splitlines():
        say(f"    {line}")
    chk = harness.check_config(oc.config_path, binary=args.objcached)
    check(chk.returncode == 0, f"objcached --check-config failed:\n{chk.stdout}{chk.stderr}")
    oc.start()
    write_stop_script(stop_script, workdir, pg, mcs, oc)
    step(f"objcached -c {oc.config_path}")
    say(f"    listening on 127.0.0.1:{oc.port} and {oc.sock}")
    say(f"    --check-config: {(chk.stdout or chk.stderr).strip()}")
    say()
    say("The configuration:")
    for line in oc.config_text.strip().splitlines():
        say(f"    {line}")
    say()
    return counts


def run_steps(pg, oc, counts):
    """The six checked steps. Raises DemoFailure at the first that fails."""
    ref = pg.connect(options=harness.SESSION_OPTIONS)   # objcached's session settings
    client = Client(("127.0.0.1", oc.port), connect_timeout=10, timeout=10)
    raw = oc.client()
    try:
        rng = random.Random(2024)
        user_ids = sorted(rng.sample(range(1, counts[0] + 1), 20))
        post_ids = sorted(rng.sample(range(1, counts[2] + 1), 20))
        keys = ([f"User:{i}" for i in user_ids] + [f"User:{ABSENT_ID}"]
                + [f"Post:{i}" for i in post_ids] + [f"Post:{ABSENT_ID}"])
        client.version()   # connect before timing

        # ---- 1. cold
        s0 = oc.stats()
        t0 = time.perf_counter()
        cold = client.get_many(keys)
        cold_ms = (time.perf_counter() - t0) * 1000
        s1 = oc.stats()
        step(f"1/6 cold: get_many of 21 users and 21 posts (one `get` of {len(keys)} keys): "
             f"{len(cold)} values in {cold_ms:.2f} ms")
        say(f"    User:{ABSENT_ID} and Post:{ABSENT_ID} have no row; the cache is empty")
        want = {f"User:{i}": v for i, v in reference_rows(ref, "User", user_ids + [ABSENT_ID]).items()}
        want.update({f"Post:{i}": v
                     for i, v in reference_rows(ref, "Post", post_ids + [ABSENT_ID]).items()})
        check(len(want) == 40, f"PostgreSQL has {len(want)} of the 40 rows the demo picked")
        check(sorted(cold) == sorted(want),
              f"the reply has keys {sorted(set(cold) - set(want))} that should be absent and "
              f"lacks {sorted(set(want) - set(cold))}")
        for k in want:
            check(cold[k] == want[k], mismatch(f"{k}: objcached sent", cold[k],
                                               "but PostgreSQL's row_to_json is", want[k]))
        good("each of the 40 values is byte for byte PostgreSQL's row_to_json of its row "
             "(same session settings); the 2 ids with no row are absent")
        check(delta(s0, s1, "get_misses") == len(keys),
              f"memcached misses: {delta(s0, s1, 'get_misses')}, expected {len(keys)}")
        check(delta(s0, s1, "pg_queries") == 2,
              f"PostgreSQL queries: {delta(s0, s1, 'pg_queries')}, expected 2 (one per model)")
        check(delta(s0, s1, "pg_rows") == 40,
              f"PostgreSQL rows: {delta(s0, s1, 'pg_rows')}, expected 40")
        good(f"memcached: {len(keys)} misses; PostgreSQL: 2 queries (one per model), 40 rows")

        # ---- 2. warm
        oc.wait_idle(timeout=WAIT)   # the write-backs are in memcached
        s2 = oc.stats()
        t0 = time.perf_counter()
        warm = client.get_many(keys)
        warm_ms = (time.perf_counter() - t0) * 1000
        s3 = oc.stats()
        step(f"2/6 warm: the same get_many: {len(warm)} values in {warm_ms:.2f} ms")
        check(warm == cold, "the warm reply differs from the cold one: "
              + ", ".join(k for k in sorted(set(warm) | set(cold)) if warm.get(k) != cold.get(k)))
        good("identical to the cold reply")
        check(delta(s2, s3, "get_hits") == len(keys),
              f"memcached hits grew by {delta(s2, s3, 'get_hits')}, expected {len(keys)} "
              "(every object and every 'does not exist' entry)")
        check(delta(s2, s3, "pg_queries") == 0,
              f"PostgreSQL queries grew by {delta(s2, s3, 'pg_queries')}, expected 0")
        good(f"all {len(keys)} keys from memcached (get_hits +{len(keys)}, the 2 absent ones "
             "as cached 'does not exist' entries); PostgreSQL queries +0")
        say("    a few of the values (row_to_json of the configured columns, as stored):")
        for key in (keys[0], keys[1], keys[21], keys[22]):
            say(f"      {key:<12} {shorten(cold[key])}")
        thread = client.get("Thread:1")
        want_thread = reference_rows(ref, "Thread", [1]).get(1)
        check(thread == want_thread, mismatch("Thread:1 (the whole row) is", thread,
                                              "but PostgreSQL's row_to_json is", want_thread))
        say(f"      {'Thread:1':<12} {shorten(thread)}")
        say()

        # ---- 3. an SQL UPDATE reaches the cache
        victim = keys[0]
        uid = int(victim.split(":")[1])
        step(f"3/6 a write that bypasses the app: UPDATE users SET karma = karma + 1000 "
             f"WHERE id = {uid}")
        s4 = oc.stats()
        with ref.cursor() as cur:
            cur.execute("UPDATE users SET karma = karma + 1000 WHERE id = %s", (uid,))
        t0 = time.perf_counter()
        new_row = reference_rows(ref, "User", [uid])[uid]
        check(new_row != cold[victim], "the UPDATE did not change the row")
        deadline = time.monotonic() + WAIT
        while True:
            fresh = client.get(victim)
            if fresh == new_row or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        check(fresh == new_row, mismatch(f"{WAIT:.0f} s after the commit, {victim} reads", fresh,
                                         "instead of the new row", new_row))
        reached_ms = (time.perf_counter() - t0) * 1000
        wait_stat(oc, "invalidations", s4["invalidations"] + 1, "the hook's invalidation")
        good(f"the next get shows the new row {reached_ms:.1f} ms after the commit: the "
             "trigger wrote the key to objcached.outbox and NOTIFYed, objcached deleted it from "
             "memcached, and the get loaded the row again")
        say(f"      {victim:<12} {shorten(fresh)}")
        say()

        # ---- 4. the app's push of the row it just committed
        post = keys[21]
        pid = int(post.split(":")[1])
        step(f"4/6 the app's save event: it commits an edit of post {pid}, then pushes the row "
             f"with `set {post}`")
        s5 = oc.stats()
        with ref.cursor() as cur:
            cur.execute("UPDATE posts SET body = body || ' (edited)', score = score + 1, "
                        "edited_at = timestamptz '2025-06-01 12:00:00+00' WHERE id = %s", (pid,))
        pushed = reference_rows(ref, "Post", [pid])[pid]
        reply = raw_set(raw, post, pushed)
        check(reply == "STORED", f"set {post} answered {reply}, expected STORED")
        got = client.get(post)
        check(got == pushed, mismatch(f"after the push, {post} reads", got,
                                      "instead of the pushed", pushed))
        good(f"set {post} 0 0 {len(pushed)} (exactly the committed row's row_to_json) -> "
             "STORED, and the next get returns those bytes")
        # objcached compares an unordered push with PostgreSQL's row after
        # storing it; the app's UPDATE also goes through the hook.
        wait_stat(oc, "pushes_checked", s5["pushes_checked"] + 1, "the push check")
        wait_stat(oc, "invalidations", s5["invalidations"] + 1,
                  "the hook's invalidation of the app's UPDATE")
        oc.wait_idle(timeout=WAIT)
        got = client.get(post)
        s6 = oc.stats()
        check(got == pushed, mismatch(f"after the push check, {post} reads", got,
                                      "instead of the pushed", pushed))
        check(delta(s5, s6, "pushes_corrected") == 0,
              f"the push check replaced the push ({delta(s5, s6, 'pushes_corrected')} corrected)")
        good("the push check read the row from PostgreSQL and agreed (pushes_checked +1, "
             "pushes_corrected +0); after it and the hook's invalidation of the same UPDATE, "
             "the get still returns the pushed bytes")
        say(f"      {post:<12} {shorten(got)}")
        say()

        # ---- 5. a tombstone
        step(f"5/6 the app deletes the post: DELETE FROM posts in PostgreSQL, then its delete "
             f"event, a tombstone with `delete {post}`")
        s7 = oc.stats()
        with ref.cursor() as cur:
            cur.execute("DELETE FROM posts WHERE id = %s", (pid,))
        wait_stat(oc, "invalidations", s7["invalidations"] + 1, "the hook's invalidation")
        reply = raw.command(f"delete {post}").terminal.decode()
        check(reply == "DELETED", f"delete {post} answered {reply}, expected DELETED")
        # the tombstone is checked against PostgreSQL (no row: it stays)
        wait_stat(oc, "pushes_checked", s7["pushes_checked"] + 1, "the tombstone's check")
        oc.wait_idle(timeout=WAIT)
        s7b = oc.stats()
        gone = client.get(post)
        s8 = oc.stats()
        check(gone is None, f"after the tombstone, {post} reads {shorten(gone)}, expected absent")
        check(delta(s7b, s8, "pg_queries") == 0,
              f"the get after the tombstone asked PostgreSQL ({delta(s7b, s8, 'pg_queries')} "
              "queries): a tombstone answers absent without asking it")
        check(delta(s7b, s8, "get_hits") == 1 and delta(s7b, s8, "get_absent") == 1,
              f"the get after the tombstone: get_hits +{delta(s7b, s8, 'get_hits')}, get_absent "
              f"+{delta(s7b, s8, 'get_absent')}, expected +1 and +1 (a tombstone in memcached)")
        check(delta(s7, s8, "pushes_corrected") == 0, "the tombstone's check replaced it")
        good(f"delete {post} -> DELETED; objcached checked it against PostgreSQL (no row: it "
             "stays; a late tombstone over a row that came back would give way to the row); the "
             "next get reports it absent from the tombstone in memcached, without asking "
             "PostgreSQL, for tombstone_ttl (10 min by default)")
        reply = raw_set(raw, post, pushed)
        check(reply == "NOT_STORED", f"a push onto the tombstone answered {reply}, "
                                     "expected NOT_STORED (the tombstone must win)")
        check(client.get(post) is None, f"{post} is back after a push onto its tombstone")
        good(f"a late push of the old state -> NOT_STORED: nothing brings {post} back "
             "while the tombstone lives")
        say()

        # ---- 6. the stats
        oc.wait_idle(timeout=WAIT)
        s9 = raw.stats()
        step("6/6 stats (`stats`; docs/protocol.md explains each):")
        items = [f"{k} {v}" for k, v in s9.items()]
        half = (len(items) + 1) // 2
        for a, b in zip(items[:half], items[half:] + [""]):
            say(f"    {a:<40} {b}")
        expect = {"cmd_push": 2, "pushes_stale": 1, "pushes_checked": 2, "pushes_corrected": 0,
                  "pushes_unchecked": 0, "cmd_tombstone": 1, "invalidations": 3,
                  "pg_errors": 0, "mc_errors": 0, "inval_errors": 0, "client_errors": 0,
                  "server_errors": 0, "loads_in_flight": 0, "mc_servers_up": 2}
        wrong = [f"{k} is {s9.get(k)}, expected {v}" for k, v in expect.items() if s9.get(k) != v]
        check(not wrong, "the stats disagree with the steps: " + "; ".join(wrong))
        good("2 pushes (1 stored and checked, 1 refused by the tombstone), 1 tombstone "
             "(checked), 3 invalidations (two UPDATEs and the DELETE), no errors")
        say()
    finally:
        raw.close()
        client.close()
        ref.close()


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

    srv = Servers()
    keep = False
    try:
        try:
            counts = start_servers(args, workdir, stop_script, srv)
            run_steps(srv.pg, srv.oc, counts)
            if not args.keep:
                # exit 0 and no sanitizer report, or HarnessError with its log
                srv.oc.stop(check=True)
        except (DemoFailure, harness.HarnessError) as e:
            print(f"\ndemo.py: FAILED: {e}", file=sys.stderr, flush=True)
            if srv.oc is not None and not isinstance(e, harness.HarnessError):
                print(f"--- the end of objcached's log ({srv.oc.logfile}) ---\n"
                      f"{srv.oc.log(4000)}", file=sys.stderr, flush=True)
            return 1
        pg, mcs, oc = srv.pg, srv.mcs, srv.oc

        say("demo.py: every step did what it showed")
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
            if srv.oc is not None:
                try:
                    srv.oc.stop(check=False)
                finally:
                    srv.oc.cleanup()
            for m in srv.mcs:
                m.cleanup()
            if srv.pg is not None:
                srv.pg.cleanup()
            if os.path.exists(stop_script):
                os.unlink(stop_script)
            if not args.dir and os.path.isdir(workdir) and not os.listdir(workdir):
                os.rmdir(workdir)
            dog.cancel()
            if srv.pg is not None:
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

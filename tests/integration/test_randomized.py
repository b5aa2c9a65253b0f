"""The randomized consistency test (bounded; OC_CONSISTENCY_SECONDS runs it
longer, OC_CONSISTENCY_SEED replays a run).

Writers change rows directly in SQL (updates, bulk updates, deletes,
inserts) and through the app path (commit, then push the row or tombstone
it through a sidecar); readers get-multi through two sidecars sharing one
memcached pool; mid-run one memcached server restarts (empty) and one
sidecar is SIGKILLed and started again. After writes stop and the outbox
drains, every key read through every sidecar must equal the database's
current row, or be absent if the row is gone: zero stale entries. During
the run it reports how stale reads were (commit-to-cache delay)."""

import os
import random
import subprocess
import threading
import time

import harness

SECONDS = float(os.environ.get("OC_CONSISTENCY_SECONDS", "25"))
SEED = int(os.environ.get("OC_CONSISTENCY_SEED", str(int(time.time()) % 100000)))
IDS = range(1, 301)


def row_json(cur, i):
    cur.execute("SELECT row_to_json(t)::text FROM (SELECT * FROM items WHERE id = %s) t", (i,))
    r = cur.fetchone()
    return r[0].encode() if r else None


class Truth:
    """Committed versions per key: (commit time, value) in commit order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.history = {i: [] for i in IDS}

    def committed(self, i, value):
        with self.lock:
            self.history[i].append((time.monotonic(), value))

    def staleness(self, i, value, read_at):
        """None if `value` was current when read; else seconds since the
        commit that superseded it."""
        with self.lock:
            hist = [h for h in self.history[i] if h[0] <= read_at]
        if not hist or hist[-1][1] == value:
            return None
        for k in range(len(hist) - 1, -1, -1):
            if hist[k][1] == value:
                return read_at - hist[k + 1][0]
        return read_at - hist[-1][0]   # never matched: count from the newest commit


def get_one(oc, keys):
    with oc.client() as c:
        values, end = c.get_multi(keys)
    return values, end


def test_randomized_consistency(objcached_factory, pg, mc_pool):
    rng = random.Random(SEED)
    print(f"\nseed {SEED} (replay with OC_CONSISTENCY_SEED={SEED}), {SECONDS:.0f} s")
    pg.execute("DROP TABLE IF EXISTS items; CREATE TABLE items (id bigint PRIMARY KEY, v int, "
               "note text); INSERT INTO items SELECT g, 0, 'n' || g FROM generate_series(1, 200) g")
    conf = {"objcached": {"lease_wait": "100ms"},
            "postgresql": {"invalidation_poll": "100ms"},
            "memcached": {"retry_timeout": "200ms"},
            "model Item": {"table": "items", "ttl": "1h"}}
    a = objcached_factory(conf)
    b = objcached_factory(conf)
    out = subprocess.run([a.binary, "--install-hook", "-c", a.config_path],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    sidecars = [a, b]
    truth = Truth()
    wconn = pg.connect()
    wcur = wconn.cursor()
    for i in IDS:
        truth.committed(i, row_json(wcur, i))

    stop = threading.Event()
    stats = {"reads": 0, "stale": [], "writes": 0, "errors": [], "app_events_lost": 0}

    def app_event(wrng, op, i):
        """After the commit, the app's save (push) or delete (tombstone)
        event, through a sidecar that may be down right now: such an event
        is lost, as it would be in production, and the hook covers it."""
        if not (op >= 0.75 or (0.45 <= op < 0.6 and wrng.random() < 0.5)):
            return
        value = row_json(wcur, i)
        oc = wrng.choice(sidecars)
        try:
            with oc.client() as c:
                if value is None:
                    c.command(f"delete Item:{i}")
                else:
                    c.send(b"set Item:%d 0 0 %d\r\n%s\r\n" % (i, len(value), value))
                    c.readline()
        except (OSError, harness.HarnessError):
            stats["app_events_lost"] += 1

    def writer():
        wrng = random.Random(SEED + 1)
        while not stop.is_set():
            op = wrng.random()
            i = wrng.choice(IDS)
            try:
                if op < 0.35:
                    wcur.execute("UPDATE items SET v = v + 1 WHERE id = %s", (i,))
                    changed = [i]
                elif op < 0.45:
                    m = wrng.randrange(7)
                    wcur.execute("UPDATE items SET v = v + 1 WHERE id %% 7 = %s RETURNING id", (m,))
                    changed = [r[0] for r in wcur.fetchall()]
                elif op < 0.6:
                    wcur.execute("DELETE FROM items WHERE id = %s", (i,))
                    changed = [i]
                elif op < 0.75:
                    wcur.execute("INSERT INTO items VALUES (%s, 0, 'new') ON CONFLICT (id) "
                                 "DO UPDATE SET note = 'upserted'", (i,))
                    changed = [i]
                else:   # the app path: commit, then push or tombstone
                    wcur.execute("UPDATE items SET v = v + 10 WHERE id = %s RETURNING id", (i,))
                    changed = [i]
                for k in changed:
                    truth.committed(k, row_json(wcur, k))
                stats["writes"] += 1
                app_event(wrng, op, i)
            except Exception as e:   # noqa: BLE001 - reported below
                stats["errors"].append(f"writer: {e!r}")
            time.sleep(0.002)

    def reader(seed):
        rrng = random.Random(seed)
        while not stop.is_set():
            oc = rrng.choice(sidecars)
            if not oc.alive():
                time.sleep(0.05)
                continue
            keys = rrng.sample(list(IDS), 20)
            try:
                values, end = get_one(oc, [f"Item:{k}" for k in keys])
            except Exception:   # noqa: BLE001 - a sidecar being killed
                continue
            read_at = time.monotonic()
            if not end.startswith(b"END"):
                continue   # SERVER_ERROR while a server restarts is allowed
            got = {int(k.split(b":")[1]): v for k, _, v in values}
            for k in keys:
                s = truth.staleness(k, got.get(k), read_at)
                stats["reads"] += 1
                if s is not None:
                    stats["stale"].append(s)

    threads = [threading.Thread(target=writer)] + \
        [threading.Thread(target=reader, args=(SEED + 10 + n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(SECONDS / 4)
        # faults: a memcached server restarts (empty), a sidecar dies mid-work
        mc_pool[0].stop()
        time.sleep(0.5)
        mc_pool[0].start()
        time.sleep(SECONDS / 4)
        b.kill(9)
        b.proc.wait(timeout=10)
        time.sleep(SECONDS / 8)
        b.start()
        time.sleep(SECONDS * 3 / 8)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not stats["errors"], stats["errors"][:5]

    # drain: the outbox empties and nothing is loading
    harness.wait_until(lambda: pg.execute("SELECT count(*) FROM objcached.outbox")[0][0] == 0,
                       timeout=30, what="the outbox to drain")
    for oc in sidecars:
        oc.wait_idle()
    time.sleep(0.5)   # the last claims' deletes
    stale_final = []
    for oc in sidecars:
        with oc.client() as c:
            for chunk in range(0, len(IDS), 50):
                ids = list(IDS)[chunk:chunk + 50]
                values, end = c.get_multi([f"Item:{k}" for k in ids])
                assert end == b"END", end
                got = {int(k.split(b":")[1]): v for k, _, v in values}
                for k in ids:
                    want = row_json(wcur, k)
                    if got.get(k) != want:
                        stale_final.append((oc.port, k, got.get(k), want))
    lat = sorted(stats["stale"])

    def pct(p):
        return f"{lat[min(len(lat) - 1, int(p * len(lat)))] * 1000:.1f} ms" if lat else "-"

    print(f"writes {stats['writes']}, key reads {stats['reads']}, stale reads {len(lat)} "
          f"({100.0 * len(lat) / max(1, stats['reads']):.2f}%); commit-to-cache delay of stale "
          f"reads p50 {pct(0.5)} p99 {pct(0.99)} max {pct(1.0)}")
    invals = sum(oc.stats()["invalidations"] for oc in sidecars)
    print(f"invalidations applied: {invals}; app events lost to the killed sidecar: "
          f"{stats['app_events_lost']}; final stale entries: {len(stale_final)}")
    assert stats["writes"] > 100 and stats["reads"] > 1000 and invals > 0
    assert stale_final == [], stale_final[:5]
    wconn.close()

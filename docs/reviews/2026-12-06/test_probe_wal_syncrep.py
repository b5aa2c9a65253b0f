"""Probe: WAL source + a commit that is flushed (decoded) but not yet visible
(synchronous replication waiting): the holder deletes the key, a get loads
the old row after the delete, its lease is fresh, and the old row is written
back; once the commit becomes visible nothing deletes it again."""
import threading
import time

import consistency as oc_c
import harness
from test_wal import db, template, start, holder, row, get  # noqa: F401


def test_invisible_commit_window(fleet, mc_pool, db, pg):
    a = start(fleet, mc_pool, db)
    holder([a])
    old = row(db, "Item", 60)
    assert get(a, "Item:60") == old          # cached
    pg.execute("ALTER SYSTEM SET synchronous_commit = 'local'", dbname="postgres")
    pg.execute("ALTER SYSTEM SET synchronous_standby_names = 'phantom'", dbname="postgres")
    pg.execute("SELECT pg_reload_conf()", dbname="postgres")
    time.sleep(0.5)
    err = []

    def writer():
        conn = pg.connect(dbname=db.name)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET synchronous_commit = on")
                cur.execute("UPDATE items SET name = 'new' WHERE id = 60")
        except Exception as e:  # noqa: BLE001
            err.append(e)
        finally:
            conn.close()
    t = threading.Thread(target=writer, daemon=True)
    try:
        t.start()
        harness.wait_until(lambda: oc_c.raw_values_for(mc_pool, "Item", 60) == [], timeout=10,
                           what="the holder to delete Item:60 (commit decoded, not visible)")
        during = get(a, "Item:60")           # a get sent after the delete
        time.sleep(0.3)
        cached_during = oc_c.raw_values_for(mc_pool, "Item", 60)
        pids = pg.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                          dbname="postgres")
        for (pid,) in pids:
            pg.execute("SELECT pg_cancel_backend(%s)", (pid,), dbname="postgres")
        t.join(10)
    finally:
        pg.execute("ALTER SYSTEM RESET synchronous_standby_names", dbname="postgres")
        pg.execute("ALTER SYSTEM RESET synchronous_commit", dbname="postgres")
        pg.execute("SELECT pg_reload_conf()", dbname="postgres")
    new = row(db, "Item", 60)
    time.sleep(1.5)
    after = get(a, "Item:60")
    print("old", old, "new", new, "during", during, "cached_during", cached_during,
          "after", after, "cached_after", oc_c.raw_values_for(mc_pool, "Item", 60), "err", err)
    assert new != old
    assert after == new

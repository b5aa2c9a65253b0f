"""Probe of a gap found by a review (2026-12-06): a WAL model's table attached as
a partition of another WAL model's table is never invalidated again. Fails
until it is fixed (README.md)."""
import time


import consistency as oc_c
import harness
from test_wal import (MODELS, template, db, holder, get, cached, wait_value,  # noqa: F401
                      row)


def cfg(mc_pool, db, models, **pg):
    over = {"objcached": {"near_cache_size": "32m"},
            "postgresql": {"wal": "on", "wal_slot": db.name, "invalidation_poll": "200ms",
                           "feed_poll": "100ms", "feed_max_lag": "2s",
                           "wal_heartbeat": "100ms", "wal_takeover": "2s"}}
    over["postgresql"].update(pg)
    return oc_c.sidecar_config(mc_pool, db.conninfo, models, over)


def solo_row(db):
    return db.q("SELECT row_to_json(t)::text FROM solo t WHERE t.id = 7")[0][0].encode()


def test_probe_model_table_attached_as_partition(fleet, mc_pool, db):
    db.q("CREATE TABLE solo (id bigint NOT NULL, day date NOT NULL, what text, "
         "PRIMARY KEY (id, day))")
    db.q("INSERT INTO solo VALUES (7, '2026-05-01', 'v0')")
    db.q("SELECT objcached.attach('public.solo', 'Solo', 'id', 'wal')")
    models = dict(MODELS)
    models["Solo"] = {"table": "solo"}
    a = fleet.start(cfg(mc_pool, db, models))
    holder([a])
    # control: a plain WAL model table is invalidated
    cached(a, ["Solo:7"])
    db.q("UPDATE solo SET what = 'v1' WHERE id = 7")
    wait_value(a, "Solo:7", solo_row(db), timeout=10)
    reloads = a.stats()["wal_map_reloads"]
    db.q("ALTER TABLE ev ATTACH PARTITION solo FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    harness.wait_until(lambda: a.stats()["wal_map_reloads"] > reloads, timeout=10,
                       what="the map read again after the DDL")
    holder([a])
    cached(a, ["Solo:7"])
    assert get(a, "Solo:7") == solo_row(db)
    before = get(a, "Solo:7")
    db.q("UPDATE solo SET what = 'v2' WHERE id = 7")
    # barrier: a later transaction applied
    cached(a, ["Item:1"])
    db.q("UPDATE items SET n = n + 1 WHERE id = 1")
    wait_value(a, "Item:1", row(db, "Item", 1), timeout=10)
    time.sleep(3)
    now = get(a, "Solo:7")
    print("\nSolo:7 served:", now, "\ndb row:", solo_row(db), "\nstats:",
          {k: v for k, v in a.stats().items() if k.startswith("wal_")})
    print("wal_tables:", db.q("SELECT relid::regclass, model, key_column FROM objcached.wal_tables()"))
    print("wal_check:", db.q("SELECT * FROM objcached.wal_check(%s)", (db.name,)))
    assert now != before and now == solo_row(db), "the attached table's UPDATE never reached the cache"



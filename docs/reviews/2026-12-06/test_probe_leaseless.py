"""Probe: a fill that holds no lease (it waited lease_wait on another
sidecar's lease, then loaded by itself) answers a get that A sends after an
UPDATE committed and B applied its invalidation (the memcached delete)."""
import harness
from test_write_path import (db, template, GATED, gate_path, gated_cold_get,  # noqa: F401
                             release, row, start, zero_generations)


def test_leaseless_fill_answers_a_get_sent_after_the_invalidation(fleet, mc_pool, db, tmp_path):
    zero_generations(db)
    gate = gate_path(tmp_path)
    env = {"OBJCACHED_FAULT_FILL_GATE": gate}
    # A: no consumer, no feed (it learns nothing locally); waits 100 ms on a lease
    a = start(fleet, mc_pool, db, poll="0", env=env,
              objcached={"lease_wait": "100ms", **GATED},
              postgresql={"feed_poll": "0"})
    b = start(fleet, mc_pool, db, poll="200ms", env=env, objcached=GATED)
    old = row(db, "Item", 45)
    try:
        gated_cold_get(b, gate, "Item:45", old)          # B holds the lease
        with a.client() as c:
            assert c.get("Item:45") == old               # A: lease_wait, load, no lease
        assert a.stats()["loads_in_flight"] == 1         # A's fill held in the map
        db.q("UPDATE items SET name = 'updated' WHERE id = 45")
        harness.wait_until(lambda: b.stats()["invalidations"] >= 1 and db.outbox_rows() == 0,
                           timeout=10, what="B to apply the invalidation")
        with a.client() as c:
            late = c.get("Item:45")                      # sent after the delete
    finally:
        release(a, gate)
        release(b, gate)
    print("late:", late, "new:", row(db, "Item", 45), "old:", old)
    assert late == row(db, "Item", 45)

"""Known gap, not fixed yet (docs/protocol.md, "Known gap"): the push check's
swap picks its target by bytes and kind, not by the item its push stored.
These two reproductions (from a review, 2026-12-04) FAIL on the current code
and are kept out of the suite on purpose (the file name is not test_*.py):
run them by hand after the fix (tie the swap to the cas of the item the push
stored: meta ms with its c flag), then move them into test_write_path.py.

    cd tests/integration && OBJCACHED_BIN=... python3 -m pytest -q -p no:cacheprovider \
        known_gap_push_check.py
"""

import os

from test_write_path import (GATED, _applied, _inval_total, held_check, release,  # noqa: F401
                             row, start)
from test_write_path import db, template  # noqa: F401  (fixtures)
import consistency as oc_c


def test_review3_held_push_correction_never_replaces_an_equal_later_push(
        fleet, mc_pool, db, tmp_path):
    """A late push X of an older state ('on') is stored; its check reads the
    newer row ('off') and is held before its swap. Then the row goes back to
    'on' (committed: row_to_json gives the very bytes X pushed), its
    invalidation empties the key, and the app pushes the current row Y (on
    another sidecar, whose check reads 'on', agrees, and is held). X's swap
    then finds Y's PUSHED entry, byte-for-byte X's own, and writes the old
    'off' row over it; Y's confirmation no longer finds its entry. 'off' is
    served for the model's ttl while PostgreSQL has 'on', no later
    invalidation comes."""
    gate_a = str(tmp_path / "a.gate")
    gate_b = str(tmp_path / "b.gate")
    a = start(fleet, mc_pool, db, env={"OBJCACHED_FAULT_FILL_GATE": gate_a}, objcached=GATED)
    b = start(fleet, mc_pool, db, env={"OBJCACHED_FAULT_FILL_GATE": gate_b}, objcached=GATED)
    key = oc_c.cache_key("Item", 71, db.generation("Item"))
    n0 = _inval_total(a, b)
    db.q("UPDATE items SET name = 'on' WHERE id = 71")            # the app commits 'on' ...
    on = row(db, "Item", 71)
    db.q("UPDATE items SET name = 'off' WHERE id = 71")           # another writer: 'off'
    off = row(db, "Item", 71)
    _applied(db, (a, b), n0 + 2, "both invalidations")
    try:
        held_check(a, gate_a, "Item:71", on)                      # X: 'on', late; read 'off'
        n1 = _inval_total(a, b)
        db.q("UPDATE items SET name = 'on' WHERE id = 71")        # back to 'on'
        assert row(db, "Item", 71) == on
        _applied(db, (a, b), n1 + 1, "the revert's invalidation")
        assert oc_c.raw_items(mc_pool, key) == []                 # X's entry is gone
        held_check(b, gate_b, "Item:71", on)                      # Y: the current row
        os.unlink(gate_a)
        a.wait_idle()                                             # X's swap
    finally:
        release(a, gate_a)
        release(b, gate_b)                                        # Y's confirmation
    assert row(db, "Item", 71) == on
    items = oc_c.raw_items(mc_pool, key)
    with a.client() as c:
        got = c.get("Item:71")
    assert got == on, (got, items, off)


def test_review3_held_confirmation_never_confirms_a_later_equal_late_push(
        fleet, mc_pool, db, tmp_path):
    """The confirm direction, with version_column: X's check agrees (the
    row is X), held. A later commit (version + 1) empties the key; the same
    late body is pushed again (Y: an app retrying its push), stored PUSHED,
    and Y's check reads the newer row, held. X's confirmation finds Y's
    entry, byte-for-byte X's, and makes it an OBJECT; Y's correction then
    no longer finds a PUSHED entry: the older version stays, confirmed."""
    gate_a = str(tmp_path / "a.gate")
    gate_b = str(tmp_path / "b.gate")
    a = start(fleet, mc_pool, db, env={"OBJCACHED_FAULT_FILL_GATE": gate_a}, objcached=GATED)
    b = start(fleet, mc_pool, db, env={"OBJCACHED_FAULT_FILL_GATE": gate_b}, objcached=GATED)
    key = oc_c.cache_key("Ver", 31, db.generation("Ver"))
    n0 = _inval_total(a, b)
    db.q("UPDATE vitems SET name = 'A', version = version + 1 WHERE id = 31")
    old = row(db, "Ver", 31)
    _applied(db, (a, b), n0 + 1, "the first invalidation")
    try:
        held_check(a, gate_a, "Ver:31", old)                      # X: agrees, held
        n1 = _inval_total(a, b)
        db.q("UPDATE vitems SET name = 'B', version = version + 1 WHERE id = 31")
        _applied(db, (a, b), n1 + 1, "the second invalidation")
        assert oc_c.raw_items(mc_pool, key) == []
        held_check(b, gate_b, "Ver:31", old)                      # Y: the same late body
        os.unlink(gate_a)
        a.wait_idle()                                             # X's confirmation
    finally:
        release(a, gate_a)
        release(b, gate_b)                                        # Y's correction
    new = row(db, "Ver", 31)
    items = oc_c.raw_items(mc_pool, key)
    with a.client() as c:
        got = c.get("Ver:31")
    assert got == new, (got, items)

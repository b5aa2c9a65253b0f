"""A PostgreSQL server whose messages are in German (lc_messages =
'de_DE.UTF-8', as initdb takes from a German system): objcached decides
what a server error means by its SQLSTATE, never by its English text. A
missing slot is made again, a slot held by another sidecar is waited for,
an invalidated slot is dropped and made again, and a database without the
hook is told once, as on an English server (test_wal.py, test_read_path.py);
a model over a view (no xmin) is compared by its JSON (test_verify.py).

scripts/deps.sh generates the de_DE.UTF-8 locale; Debian's postgresql-15
ships the German catalogue."""

import pytest

import consistency as oc_c
import harness
import test_verify
import test_wal
from conftest import throwaway_cluster
from test_wal import cached, db, holder, row, start, template, wait_value  # noqa: F401


@pytest.fixture(scope="module")
def pg():
    yield from throwaway_cluster({"lc_messages": "'de_DE.UTF-8'"})


def test_the_server_answers_in_german(pg):
    """The premise of this file: else it proves nothing."""
    import psycopg2
    with pytest.raises(psycopg2.Error) as e:
        pg.execute("SELECT pg_drop_replication_slot('no_such_slot')")
    assert e.value.pgcode == "42704"
    assert "existiert nicht" in e.value.pgerror, e.value.pgerror


def test_a_dropped_slot_is_made_again_with_new_generations(fleet, mc_pool, db):
    # START_REPLICATION fails with 42704 "Replikations-Slot »...« existiert nicht"
    test_wal.test_dropped_slot_is_made_again_with_new_generations(fleet, mc_pool, db)


def test_a_slot_dropped_under_its_running_holder_is_made_again(fleet, mc_pool, db, pg):
    """A failover to a server without the slot, as the holder sees it: its
    stream ends, and the slot is not there when it starts it again."""
    a = start(fleet, mc_pool, db)
    holder([a])
    cached(a, ["Item:32"])
    gen = db.generation("Item")

    def dropped():
        try:
            pg.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                       "WHERE slot_name = %s AND active", (db.name,), dbname="postgres")
            pg.execute("SELECT pg_drop_replication_slot(%s)", (db.name,), dbname="postgres")
        except Exception:  # noqa: BLE001 - active again: try again
            return False
        return True
    harness.wait_until(dropped, timeout=20, interval=0.01, what="the slot dropped")
    db.q("UPDATE items SET name = 'while no slot' WHERE id = 32")   # in no slot's WAL
    harness.wait_until(lambda: a.stats()["wal_slot_recreated"] == 1, timeout=20,
                       what="the slot made again")
    holder([a], timeout=20)
    assert db.generation("Item") > gen
    wait_value(a, "Item:32", row(db, "Item", 32))


def test_a_slot_held_by_another_sidecar_is_waited_for_not_an_error(fleet, mc_pool, db):
    # 55006 "Replikations-Slot »...« ist aktiv für PID ..."
    sidecars = [start(fleet, mc_pool, db) for _ in range(2)]
    h = holder(sidecars)
    other = next(oc for oc in sidecars if oc is not h)
    harness.wait_until(lambda: 'reason="another sidecar holds the slot"' in other.log(),
                       timeout=15, what="the standby to wait for the holder")
    assert other.stats()["wal_errors"] == 0


def test_an_invalidated_slot_is_dropped_and_made_again(fleet, mc_pool, db, pg):
    # 55000 "kann nicht aus logischem Replikations-Slot »...« lesen"
    a = start(fleet, mc_pool, db)
    holder([a])
    gen = db.generation("Item")
    fleet.kill(a)
    harness.wait_until(lambda: not db.q("SELECT active FROM pg_replication_slots WHERE "
                                        "slot_name = %s", (db.name,))[0][0],
                       what="the slot to be free")
    pg.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'", dbname="postgres")
    try:
        pg.execute("SELECT pg_reload_conf()", dbname="postgres")

        def lost():
            db.q("UPDATE items SET n = n + 1 WHERE id = 33")
            db.q("SELECT pg_switch_wal()")
            db.q("CHECKPOINT")
            return db.q("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                        (db.name,))[0][0] == "lost"
        harness.wait_until(lost, timeout=20, what="the slot invalidated")
    finally:
        pg.execute("ALTER SYSTEM RESET max_slot_wal_keep_size", dbname="postgres")
        pg.execute("SELECT pg_reload_conf()", dbname="postgres")
    b = start(fleet, mc_pool, db)
    holder([b], timeout=20)
    assert b.stats()["wal_slot_recreated"] == 1
    assert "invalidated: it fell more than max_slot_wal_keep_size behind" in b.log()
    assert db.generation("Item") > gen
    wait_value(b, "Item:33", row(db, "Item", 33))


def test_a_slot_of_that_name_in_another_database_is_left_alone(fleet, mc_pool, db, pg):
    """55000 is also "the slot was not created in this database": not an
    invalidated slot, so it is neither dropped nor made again."""
    db.q("SELECT pg_drop_replication_slot(%s)", (db.name,))
    pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (db.name,),
               dbname="postgres")
    a = start(fleet, mc_pool, db)
    harness.wait_until(lambda: a.stats()["wal_errors"] >= 2, timeout=15,
                       what="START_REPLICATION refused, twice")
    assert a.stats()["wal_slot_recreated"] == 0
    assert "event=wal_slot_lost" not in a.log()
    assert db.q("SELECT database FROM pg_replication_slots WHERE slot_name = %s",
                (db.name,)) == [("postgres",)]


def test_a_database_without_the_hook_is_told_once(objcached):
    # 3F000 "Schema »objcached« existiert nicht"
    harness.wait_until(lambda: "event=feed_unavailable" in objcached.log(), timeout=10,
                       what="the feed to say the hook is missing")
    assert "event=feed_failed" not in objcached.log()
    assert objcached.stats()["feed_errors"] == 1


@pytest.fixture
def verify_db(pg, objcached_bin):
    name = "verify_template"
    oc_c.create_template(pg, name, test_verify.SCHEMA, test_verify.MODELS, objcached_bin)
    d = oc_c.clone_db(pg, name, prefix="vfy")
    yield d
    oc_c.drop_db(pg, d)
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")


def test_a_view_without_xmin_is_compared_by_its_json(fleet, mc_pool, verify_db, objcached_bin):
    # 42703 "Spalte t.xmin existiert nicht"
    test_verify.test_view_without_xmin(fleet, mc_pool, verify_db, objcached_bin)

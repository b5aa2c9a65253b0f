"""PostgreSQL upgraded in place with pg_upgrade while the sidecars run.

pg_upgrade of PostgreSQL 15 (and 16) makes a new cluster from the old
one's catalog dump and data files: tables, the objcached schema, the
publication and the relations' OIDs come across, the logical replication
slots do not (PostgreSQL 17 carries them only from a 17 cluster). The new
cluster also has a new system identifier. So, for the WAL source, an
upgrade is a slot that is gone: the holder must make it again and
invalidate every WAL model whole (the writes between the upgrade's start
and the new slot are in no slot's WAL), and every write after it must
reach the cache. The outbox consumer sees a new system identifier too
(docs/operations.md, "The database went back in time"): every model goes
whole once.

The upgrade here is from 15 to 15 (Debian 12 ships one major version);
pg_upgrade runs the same steps between two equal versions."""

import os
import shutil

import pytest

import harness
from conftest import throwaway_cluster
from test_wal import cached, db, holder, row, start, template, wait_value  # noqa: F401


@pytest.fixture(scope="module")
def pg():
    yield from throwaway_cluster()


def pg_upgrade(pg):
    """Stop pg, pg_upgrade its data directory into a new cluster (copy mode)
    and start that one in its place: the same port, socket and settings."""
    old, new = pg.datadir + ".old", pg.datadir + ".new"
    pg.stop("fast")
    pg._cmd(["initdb", "-D", new, "-A", "trust", "-U", pg.SUPERUSER, "-E", "UTF8",
             "--no-locale", "--no-sync"])
    # pg_upgrade starts each cluster itself, on these ports and with its
    # socket in its working directory (pg.dir): -o/-O keep both off TCP.
    rc, out = pg._cmd(["pg_upgrade", "-b", pg.bindir, "-B", pg.bindir, "-d", pg.datadir,
                       "-D", new, "-p", str(harness.free_port()),
                       "-P", str(harness.free_port()), "-U", pg.SUPERUSER,
                       "-o", "-c listen_addresses=''", "-O", "-c listen_addresses=''"],
                      timeout=300, check=False)
    assert rc == 0, out + "\n" + pg.log(4000)
    os.rename(pg.datadir, old)
    os.rename(new, pg.datadir)
    with open(os.path.join(pg.datadir, "postgresql.conf"), "a") as f:
        f.write("\ninclude 'harness.conf'\n")
    pg.start()
    shutil.rmtree(old, ignore_errors=True)


def sysid(pg):
    return pg.execute("SELECT system_identifier FROM pg_control_system()")[0][0]


def test_a_holder_follows_the_upgraded_cluster_with_a_new_slot(fleet, mc_pool, db, pg):
    a = start(fleet, mc_pool, db)
    holder([a])
    keys = ["Item:40", "Item:41", "Ev:1", "Slug:home"]
    cached(a, keys)
    gens = {m: db.generation(m) for m in ("Item", "Ev", "Slug")}
    db.q("UPDATE items SET name = 'before the upgrade' WHERE id = 40")
    wait_value(a, "Item:40", row(db, "Item", 40))
    before = sysid(pg)
    db.close()
    pg_upgrade(pg)
    assert sysid(pg) != before          # a new cluster, as pg_upgrade makes
    db.reconnect()
    # Written while the holder finds the slot gone and makes it again: before
    # the new slot (in no slot's WAL, so only the new generations cover it)
    # or just after it, as the race goes; either way it must be served.
    db.q("UPDATE items SET name = 'between' WHERE id = 41")
    harness.wait_until(lambda: a.stats()["wal_slot_recreated"] == 1, timeout=30,
                       what="the slot made again in the upgraded cluster")
    holder([a], timeout=30)
    log = a.log()
    assert "event=wal_slot_lost" in log and "event=wal_slot_recreated" in log
    # A new system identifier: the consumer's check of the database's identity
    # against memcached's marker cannot tell an upgrade from another cluster,
    # and invalidates every model whole too (cold once, never stale).
    harness.wait_until(lambda: a.stats()["db_rollbacks"] == 1, timeout=15,
                       what="the consumer to see another cluster")
    for model, gen in gens.items():     # every WAL model whole, once
        assert db.generation(model) > gen, model
    for key, (model, ident) in {"Item:40": ("Item", 40), "Item:41": ("Item", 41),
                                "Ev:1": ("Ev", 1), "Slug:home": ("Slug", "home")}.items():
        wait_value(a, key, row(db, model, ident))
    # And the new slot carries the writes after it, as before the upgrade.
    cached(a, ["Item:42", "Slug:about"])
    db.q("UPDATE items SET name = 'after the upgrade' WHERE id = 42")
    db.q("DELETE FROM slugs WHERE slug = 'about'")
    wait_value(a, "Item:42", row(db, "Item", 42))
    wait_value(a, "Slug:about", None)
    assert a.stats()["wal_slot_recreated"] == 1

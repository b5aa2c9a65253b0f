"""A change of the memcached servers under way (docs/operations.md, Changing
the memcached servers): hosts of a fleet on the old list (two servers) and on
the new one (those and a third), one of them applying the invalidations
(the trigger hook's consumer), pushing or tombstoning. Without
`servers_previous` a host on the new list keeps serving what it filled on
the new server after an invalidation the old list's host sent elsewhere;
with it every delete also reaches the key's server under the other list.
Plus --check-config of the setting and a delete there that fails."""

import os
import random
import tempfile
import threading
import time

import pytest

import consistency as oc_c
import harness

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 200) AS i;
"""
MODELS = {"Item": {"table": "items"}}

template, db = oc_c.template_fixtures("pc_template", SCHEMA, MODELS, "pc")


@pytest.fixture(scope="module")
def third():
    """The memcached server the new list adds."""
    m = harness.Memcached().start()
    yield m
    m.cleanup()


@pytest.fixture
def lists(mc_pool, third):
    """(old, new) server lists, every server up and empty."""
    third.start()
    third.flush_all()
    old = " ".join(m.address for m in mc_pool)
    return old, old + " " + third.address


def start(fleet, mc_pool, db, servers, previous=None, consumer=False, **mc):
    mc["servers"] = servers
    if previous:
        mc["servers_previous"] = previous
    overrides = {"postgresql": {"invalidation_poll": "200ms" if consumer else "0"},
                 "memcached": mc}
    oc = fleet.start(oc_c.sidecar_config(mc_pool, db.conninfo, MODELS, overrides))
    if not consumer:  # its feed gives it the models' generations
        harness.wait_until(lambda: "event=feed_resync" in oc.log(), what="the feed's resync")
    return oc


def row(db, ident):
    return oc_c.row_json(db, "items", ident)


def get(oc, ident):
    return oc_c.get_value(oc, f"Item:{ident}")


def moved_keys(new_host, third, n=1):
    """n ids (None: all) whose entries the host on the new list placed on
    the added server (read through it: it filled them there), with their
    memcached keys."""
    for ident in range(1, 61):
        get(new_host, ident)
    keys = sorted((int(k.rsplit(b":", 1)[1]), k) for k in oc_c.dump_keys(third)
                  if k.startswith((b"oc:Item:", b"oc:Item~")))
    assert len(keys) >= (n or 1), f"fewer than {n or 1} of 60 keys placed on the added server"
    return keys[:n] if n else keys


def filled_on_old(mc_pool, key):
    """The host on the old list filled `key` (the same key: the same
    generation) on its server there."""
    assert oc_c.raw_items(mc_pool, key), key


def enable_previous(oc, previous):
    """Reload oc with servers_previous set (a host taking step 1 or 2)."""
    text = harness.edit(oc.config_text, "memcached", "servers_previous", previous)
    assert harness.reload(oc, text)
    harness.wait_until(lambda: "event=memcached_previous" in oc.log(),
                       what="the reload to log servers_previous")


def applied(db, consumer, before):
    harness.wait_until(lambda: db.q("SELECT count(*) FROM objcached.outbox")[0][0] == 0
                       and consumer.stats()["invalidations"] > before,
                       what="the consumer to apply the invalidation")


# (A on the old list: servers_previous, B on the new list: servers_previous,
# which of them consumes the invalidations)
PHASES = {
    "step 1: the old list's consumer deletes on the new placement too": ("new", None, "a"),
    "the new list's consumer deletes on the old placement too": (None, "old", "b"),
    "step 2: both lists delete on the other": ("new", "old", "a"),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_an_invalidation_reaches_both_placements(fleet, mc_pool, db, lists, third, phase):
    old, new = lists
    a_prev, b_prev, consumer = PHASES[phase]
    a = start(fleet, mc_pool, db, old, consumer=consumer == "a")
    b = start(fleet, mc_pool, db, new, {"old": old}.get(b_prev), consumer=consumer == "b")
    if a_prev:
        enable_previous(a, new)
    [(k, key)] = moved_keys(b, third)
    before = row(db, k)
    assert get(a, k) == before
    filled_on_old(mc_pool, key)
    c = a if consumer == "a" else b
    n0, p0 = c.stats()["invalidations"], c.stats()["mc_previous_deletes"]
    db.q("UPDATE items SET name = 'renamed' WHERE id = %s", (k,))
    applied(db, c, n0)
    after = row(db, k)
    assert after != before
    assert get(b, k) == after, "the new list's host served a stale row"
    assert get(a, k) == after, "the old list's host served a stale row"
    assert c.stats()["mc_previous_deletes"] > p0


def test_without_servers_previous_the_new_lists_host_serves_a_stale_row(
        fleet, mc_pool, db, lists, third):
    """The limit the setting closes (and the proof that the scenario above
    makes it): the old list's consumer deletes the key on its old server
    only, and the new server keeps the row as it was."""
    old, new = lists
    a = start(fleet, mc_pool, db, old, consumer=True)
    b = start(fleet, mc_pool, db, new)
    [(k, key)] = moved_keys(b, third)
    before = row(db, k)
    n0 = a.stats()["invalidations"]
    db.q("UPDATE items SET name = 'renamed' WHERE id = %s", (k,))
    applied(db, a, n0)
    assert get(b, k) == before
    assert a.stats()["mc_previous_deletes"] == 0


def test_a_push_and_a_tombstone_through_the_old_list_are_seen_by_the_new(
        fleet, mc_pool, db, lists, third):
    """The app writes the row and pushes it (`set`), or writes and tombstones
    it (`delete`), through a host on the old list (no consumer runs): the
    host on the new list must not serve what it filled before."""
    old, new = lists
    a = start(fleet, mc_pool, db, old, new)
    b = start(fleet, mc_pool, db, new, old)
    [(pushed, _), (deleted, _)] = moved_keys(b, third, 2)
    p0 = a.stats()["mc_previous_deletes"]
    db.q("UPDATE items SET name = 'pushed' WHERE id = %s", (pushed,))
    body = row(db, pushed)
    with a.client() as c:
        c.send(b"set Item:%d 0 0 %d\r\n%s\r\n" % (pushed, len(body), body))
        assert c.read_response().terminal == b"STORED"
    assert get(b, pushed) == body, "the new list's host served the row before the push"
    db.q("UPDATE items SET name = 'tombstoned' WHERE id = %s", (deleted,))
    with a.client() as c:
        assert c.command(b"delete Item:%d" % deleted).terminal == b"DELETED"
    assert get(b, deleted) == row(db, deleted), \
        "the new list's host served the row before the tombstone"
    assert a.stats()["mc_previous_deletes"] >= p0 + 2


def test_an_invalidation_whose_previous_server_is_down_is_requeued(
        fleet, mc_pool, db, lists, third):
    """The new list's server of the key is down when the old list's consumer
    applies the invalidation: its delete there fails, the invalidation is
    put back, and applied once the server is back (before the new list's
    host could read the key again)."""
    old, new = lists
    a = start(fleet, mc_pool, db, old, new, consumer=True)
    b = start(fleet, mc_pool, db, new, old)
    [(k, _)] = moved_keys(b, third)
    third.stop()
    n0 = a.stats()["invalidations"]
    db.q("UPDATE items SET name = 'while down' WHERE id = %s", (k,))
    harness.wait_until(lambda: a.stats()["inval_requeued"] >= 1,
                       what="the invalidation to be put back")
    assert db.q("SELECT count(*) FROM objcached.outbox")[0][0] >= 1
    third.start()  # empty: a restart; the requeued delete is applied anyway
    applied(db, a, n0)
    assert get(b, k) == row(db, k)


@pytest.mark.parametrize("down", ["its own server", "its previous server"])
def test_a_delete_failing_only_on_a_server_emptied_before_read_holds_nothing_back(
        fleet, mc_pool, db, lists, third, down):
    """Failover on: a server marked down is emptied before it serves again,
    so a delete that failed there is requeued without holding the feed back
    (test_near's test_a_server_down_with_failover_holds_nothing_back). With
    servers_previous the key's delete goes to two servers, and only where it
    failed matters: its own server down while its previous server took the
    delete (or the other way round) held the feed back, and every
    near-cache of the fleet stopped answering, for the whole outage."""
    old, new = lists
    a = start(fleet, mc_pool, db, old, new, consumer=True, failure_limit="1")
    b = start(fleet, mc_pool, db, new, old)
    victim = mc_pool[1] if down == "its own server" else third
    k = None
    for ident, key in moved_keys(b, third, None):  # previous server: the added one
        get(a, ident)
        a.wait_idle()  # its fill written
        if oc_c.raw_items([mc_pool[1]], key):  # a's own server: the one killed
            k = ident
            break
    assert k is not None, "no key of the added server on the second old one"
    victim.kill()
    try:
        db.q("UPDATE items SET name = 'while down' WHERE id = %s", (k,))
        harness.wait_until(lambda: a.stats()["inval_requeued"] >= 1,
                           what="the failed delete requeued")
        harness.wait_until(
            lambda: f"event=memcached_down server={victim.address} pool=" in a.log(),
            what="the server marked down")
        # the requeue's row (its holds_back written with it), as committed
        harness.wait_until(
            lambda: db.one("SELECT count(*) FROM objcached.outbox WHERE requeued") >= 1,
            what="the requeued row")
        assert db.one("SELECT count(*) FROM objcached.outbox WHERE holds_back") == 0
    finally:
        victim.start()
    harness.wait_until(lambda: db.one("SELECT count(*) FROM objcached.outbox") == 0,
                       timeout=30, what="the requeued delete applied")
    assert get(a, k) == row(db, k)
    assert get(b, k) == row(db, k)


# ------------------------------------------------------------------ --check-config

GOOD = """\
[objcached]
listen = 127.0.0.1:11311

[memcached]
servers = 127.0.0.1:11211 127.0.0.1:11212
{extra}

[postgresql]
conninfo = host=/tmp dbname=app

[model Item]
table = items
"""


def check(extra):
    with tempfile.TemporaryDirectory(prefix="oc-pc-") as d:
        path = os.path.join(d, "c.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(GOOD.format(extra=extra))
        p = harness.check_config(path)
        return p.returncode, p.stdout + p.stderr


def test_check_config_takes_servers_previous():
    rc, out = check("servers_previous = 127.0.0.1:11211 127.0.0.1:11212 "
                    "127.0.0.1:11213:2")
    assert rc == 0, out


@pytest.mark.parametrize("extra,words", [
    ("servers_previous = 127.0.0.1", "servers_previous"),
    ("servers_previous = 127.0.0.1:0", "servers_previous"),
    ("servers_previous = 127.0.0.1:99999", "servers_previous"),
    ("servers_previous = 127.0.0.1:11213:x", "servers_previous"),
    ("servers_previous = [::1", "servers_previous"),
    ("servers_previous = " + " ".join(f"h:{1 + i}" for i in range(257)),
     "more than 256 servers"),
    ("servers_previous = " + "h" * 5000 + ":11211", "4096"),
    ("gutter = 127.0.0.1:11300\nservers_previous = 127.0.0.1:11211 127.0.0.1:11300",
     "gutter: server '127.0.0.1' port 11300 is also in servers_previous"),
], ids=["no port", "port 0", "port over 65535", "bad weight", "open bracket", "257 servers",
        "line over 4096 bytes", "gutter server in it"])
def test_check_config_refuses_a_bad_servers_previous(extra, words):
    rc, out = check(extra)
    assert rc == 1 and words in out, out
    assert ":6:" in out or ":7:" in out, out


# --------------------------------------------------------------------------
# The rollout under writes: consistency.ConsistencyRun's writers (SQL and
# app pushes/tombstones) and readers through two sidecars while the fleet
# moves from the old list to the new one, host by host.

ROLLOUT_SECONDS = 24.0
ROLLOUT_GAP_S = 4.0   # between the two hosts' reloads of one step


@pytest.fixture
def cons_db(pg, objcached_bin):
    name = "oc_pool_change_rollout"
    oc_c.create_template(pg, name, oc_c.CONSISTENCY_SCHEMA, oc_c.CONSISTENCY_MODELS,
                         objcached_bin)
    d = oc_c.HookDb(pg, name)
    yield d
    oc_c.drop_db(pg, d)


def roll(sidecars, steps, run):
    """Each step ({section: {key: value}}) reloaded on every host in turn,
    ROLLOUT_GAP_S apart (a fleet's rollout is never at once); a failed
    reload is an error of the run."""
    t0 = time.monotonic()
    for at, change in steps:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        for n, oc in enumerate(sidecars):
            if n:
                time.sleep(ROLLOUT_GAP_S)
            text = oc.config_text
            for key, value in change.items():
                text = harness.edit(text, "memcached", key, value)
            if not harness.reload(oc, text):
                run.errors.append(f"reload refused by {oc!r}: {oc.log()[-500:]}")
                return
            oc.config_text = text


@pytest.mark.parametrize("procedure", ["plain", "servers_previous"])
def test_a_rollout_under_writes(pg, mc_pool, third, cons_db, fleet, capsys, procedure):
    """Both sidecars apply invalidations (the trigger consumer's claims go
    to either), push and tombstone; they go from the old list (2 servers)
    to the new (3) one after the other, 4 s apart. `plain` (one reload to
    the new list, as before servers_previous) must be seen to serve stale
    rows, or this test could not fail; the documented procedure (steps 1
    and 2; step 3 waits a ttl) must serve nothing staler than the bound
    and leave no stale entry."""
    def log(msg):
        with capsys.disabled():
            print(msg, flush=True)

    third.start()
    third.flush_all()
    old = " ".join(m.address for m in mc_pool)
    new = old + " " + third.address
    overrides = {"postgresql": {"invalidation_poll": "200ms", "feed_poll": "100ms"},
                 "objcached": {"log_level": "warn"}}
    config = oc_c.sidecar_config(old, cons_db.conninfo, oc_c.CONSISTENCY_MODELS, overrides)
    seed = random.SystemRandom().randrange(10**9)
    run = oc_c.ConsistencyRun(pg, mc_pool + [third], cons_db, fleet, ROLLOUT_SECONDS, seed,
                              log=log, faults=(), contended=0)
    run.populate()
    sidecars = [fleet.start(config), fleet.start(config)]
    if procedure == "plain":
        steps = [(6.0, {"servers": new})]
    else:
        steps = [(4.0, {"servers_previous": new}),
                 (4.0 + 2 * ROLLOUT_GAP_S, {"servers": new, "servers_previous": old})]
    roller = threading.Thread(target=roll, args=(sidecars, steps, run), daemon=True)
    roller.start()
    run.run(sidecars)
    roller.join(60)
    mismatches = run.final_check()
    report = run.report()
    log(f"pool change ({procedure}, seed {seed}): stale reads {report['stale']}, "
        f"p99.9 {report['stale_outside_p999_ms']} ms, stale entries after the drain "
        f"{len(mismatches)}, previous deletes "
        f"{sum(s.stats()['mc_previous_deletes'] for s in sidecars)}")
    assert not run.errors, run.errors
    assert report["phantom"] == 0
    if procedure == "plain":
        assert mismatches, "the plain rollout left nothing stale: this test cannot tell"
        return
    assert mismatches == [], mismatches[:10]
    p999 = report["stale_outside_p999_ms"]
    assert p999 is None or p999 < 1000, f"staleness p99.9 {p999} ms"
    assert sum(s.stats()["mc_previous_deletes"] for s in sidecars) > 0

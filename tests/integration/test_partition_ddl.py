"""DDL that moves rows in or out of a model's table without a row change:
ALTER TABLE ... ATTACH PARTITION of a table with rows, DETACH PARTITION
(also CONCURRENTLY), INHERIT, NO INHERIT, DROP TABLE of a partition. No
trigger fires and the WAL carries no change, so before the hook's event
triggers (sql/install.sql, _ddl_watch) the removed rows stayed cached, and
ids cached as absent stayed absent, until their TTL (near-caches too).
Each case through objcached, for both sources: a trigger-mode model (the
consumer) and a WAL model (the holder)."""

import os
import subprocess

import psycopg2
import pytest

import consistency as oc_c
import harness

SCHEMA = """
CREATE TABLE ev (id bigint NOT NULL, day date NOT NULL, what text, PRIMARY KEY (id, day))
    PARTITION BY RANGE (day);
CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO ev VALUES (1, '2024-05-01', 'a'), (2, '2025-05-01', 'b');
CREATE TABLE animal (id bigint PRIMARY KEY, name text);
CREATE TABLE dog (bark text) INHERITS (animal);
ALTER TABLE dog ADD PRIMARY KEY (id);
INSERT INTO animal VALUES (1, 'cat');
INSERT INTO dog VALUES (2, 'rex', 'woof');
"""

MODELS = {"Ev": {"table": "ev"}, "Animal": {"table": "animal"}}
TABLES = {"Ev": "ev", "Animal": "animal"}
SQL_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sql"))

trigger_template, wal_template, db, wal_db = oc_c.source_fixtures(SCHEMA, MODELS, "pddl")


class Source:
    def __init__(self, via, db, start):
        self.via, self.db, self.start = via, db, start


@pytest.fixture(params=["triggers", "wal"])
def src(request, fleet, mc_pool):
    wal = request.param == "wal"
    d = request.getfixturevalue("wal_db" if wal else "db")

    def start():
        pg = {"invalidation_poll": "200ms", "feed_poll": "100ms", "feed_max_lag": "2s"}
        if wal:
            pg.update({"wal": "on", "wal_slot": d.name, "wal_heartbeat": "100ms",
                       "wal_takeover": "2s"})
        oc = fleet.start(oc_c.sidecar_config(mc_pool, d.conninfo, MODELS, {
            "objcached": {"near_cache_size": "32m"}, "postgresql": pg}))
        if wal:
            harness.wait_until(lambda: oc.stats()["wal_holder"] == 1, timeout=15,
                               what="the WAL holder")
        else:
            harness.wait_until(lambda: oc.stats()["inval_connected"] == 1, timeout=15,
                               what="the consumer connected")
        return oc
    return Source(request.param, d, start)


def row(db, model, ident):
    rows = db.q(f"SELECT row_to_json(t)::text FROM {TABLES[model]} t WHERE t.id = %s", (ident,))
    return rows[0][0].encode() if rows else None


def cached(oc, key, want):
    """key read through oc (so memcached and the near-cache hold it) and
    served as `want`."""
    assert oc_c.get_value(oc, key) == want
    oc.wait_idle()
    assert oc_c.get_value(oc, key) == want


def served(oc, key, want, what):
    harness.wait_until(lambda: oc_c.get_value(oc, key) == want, timeout=10, interval=0.05,
                       what=f"{key} served as {want!r} after {what}")


def test_a_detached_partition_leaves_the_model(src):
    """Ev:1 lives in ev_2024: once it is detached, the model has no row 1."""
    oc = src.start()
    one = row(src.db, "Ev", 1)
    cached(oc, "Ev:1", one)
    src.db.q("ALTER TABLE ev DETACH PARTITION ev_2024")
    assert row(src.db, "Ev", 1) is None
    served(oc, "Ev:1", None, "DETACH PARTITION")
    # the detached table is no model's: its writes no longer concern Ev
    assert src.db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ev_2024'::regclass "
                      "AND tgname LIKE 'objcached%%'") == 0


def test_a_partition_detached_concurrently_leaves_the_model(src):
    """DETACH ... CONCURRENTLY runs in two transactions, outside a
    transaction block."""
    oc = src.start()
    cached(oc, "Ev:2", row(src.db, "Ev", 2))
    src.db.q("ALTER TABLE ev DETACH PARTITION ev_2025 CONCURRENTLY")
    served(oc, "Ev:2", None, "DETACH PARTITION CONCURRENTLY")


def test_an_attached_table_with_rows_joins_the_model(src):
    """Ev:3 cached as absent; a table holding row 3 is attached: the model
    has it now. The attached partition is hooked like the others: a write
    straight into it reaches the cache."""
    oc = src.start()
    src.db.q("CREATE TABLE ev_2026 (id bigint NOT NULL, day date NOT NULL, what text, "
             "PRIMARY KEY (id, day))")
    src.db.q("INSERT INTO ev_2026 VALUES (3, '2026-05-01', 'c')")
    cached(oc, "Ev:3", None)
    src.db.q("ALTER TABLE ev ATTACH PARTITION ev_2026 "
             "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    served(oc, "Ev:3", row(src.db, "Ev", 3), "ATTACH PARTITION")
    assert src.db.q("SELECT hooked FROM objcached.status WHERE model = 'Ev'") == [(True,)]
    src.db.q("UPDATE ev_2026 SET what = 'changed' WHERE id = 3")
    served(oc, "Ev:3", row(src.db, "Ev", 3), "an UPDATE of the attached partition")


def test_a_partition_made_after_attach_is_hooked_at_once(src):
    """CREATE TABLE ... PARTITION OF / INHERITS: an empty table, nothing to
    invalidate, but a write straight into it (and, for a WAL model, its
    TRUNCATE, which pgoutput leaves out when published via the root) must
    reach the cache without attach being run again. (A WAL model's plain
    child is published by attach only: test_sql_feed.py's
    test_attach_wal_inheritance_children_are_published_each.)"""
    oc = src.start()
    gen = src.db.generation("Ev")
    src.db.q("CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    assert src.db.q("SELECT hooked FROM objcached.status WHERE model = 'Ev'") == [(True,)]
    assert src.db.generation("Ev") == gen
    cached(oc, "Ev:3", None)
    src.db.q("INSERT INTO ev_2026 VALUES (3, '2026-05-01', 'c')")
    served(oc, "Ev:3", row(src.db, "Ev", 3), "an INSERT straight into the new partition")
    if src.via == "triggers":
        src.db.q("CREATE TABLE cat (id bigint PRIMARY KEY, name text) INHERITS (animal)")
        assert src.db.q("SELECT hooked FROM objcached.status WHERE model = 'Animal'") == [(True,)]
        cached(oc, "Animal:3", None)
        src.db.q("INSERT INTO cat VALUES (3, 'tom')")
        served(oc, "Animal:3", row(src.db, "Animal", 3), "an INSERT straight into the new child")
    src.db.q("TRUNCATE ev_2026")
    served(oc, "Ev:3", None, "a TRUNCATE of the new partition")


def test_a_dropped_partition_leaves_the_model(src):
    oc = src.start()
    cached(oc, "Ev:1", row(src.db, "Ev", 1))
    src.db.q("DROP TABLE ev_2024")
    served(oc, "Ev:1", None, "DROP TABLE of a partition")


def test_no_inherit_and_inherit_move_rows_out_and_in(src):
    """Animal:2 is a row of child dog: NO INHERIT takes it out of the model.
    Animal:3, cached as absent, comes in with a table made a child by
    INHERIT, which is hooked (and, for a WAL model, published) like dog
    was: a write straight into it reaches the cache."""
    oc = src.start()
    cached(oc, "Animal:2", row(src.db, "Animal", 2))
    src.db.q("ALTER TABLE dog NO INHERIT animal")
    served(oc, "Animal:2", None, "NO INHERIT")

    src.db.q("CREATE TABLE cat (id bigint PRIMARY KEY, name text)")
    src.db.q("INSERT INTO cat VALUES (3, 'tom')")
    cached(oc, "Animal:3", None)
    src.db.q("ALTER TABLE cat INHERIT animal")
    served(oc, "Animal:3", row(src.db, "Animal", 3), "INHERIT")
    assert src.db.q("SELECT hooked FROM objcached.status WHERE model = 'Animal'") == [(True,)]
    src.db.q("UPDATE cat SET name = 'felix' WHERE id = 3")
    served(oc, "Animal:3", row(src.db, "Animal", 3), "an UPDATE of the new child")


def test_a_detach_rolled_back_changes_nothing(src):
    """The invalidation is part of the DDL's transaction: rolled back with
    it, the model keeps its generation and the row stays served."""
    oc = src.start()
    one = row(src.db, "Ev", 1)
    cached(oc, "Ev:1", one)
    gen = src.db.generation("Ev")
    conn = src.db.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE ev DETACH PARTITION ev_2024")
        cur.execute("SELECT generation FROM objcached.models WHERE model = 'Ev'")
        assert cur.fetchone()[0] > gen     # seen inside the transaction
    conn.rollback()
    assert src.db.generation("Ev") == gen
    assert src.db.outbox_rows() == 0
    assert oc_c.get_value(oc, "Ev:1") == one


def test_ddl_of_a_table_that_is_no_model_invalidates_nothing(src):
    src.db.q("CREATE TABLE logs (id bigint, day date) PARTITION BY RANGE (day)")
    src.db.q("CREATE TABLE logs_1 PARTITION OF logs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    src.db.q("INSERT INTO logs VALUES (1, '2024-02-02')")
    gens = src.db.q("SELECT model, generation FROM objcached.models ORDER BY 1")
    src.db.q("ALTER TABLE logs DETACH PARTITION logs_1")
    src.db.q("ALTER TABLE logs ATTACH PARTITION logs_1 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    src.db.q("DROP TABLE logs_1")
    # and DDL on a model's table that moves no row
    src.db.q("ALTER TABLE ev ADD COLUMN note text")
    src.db.q("CREATE TABLE ev_2027 PARTITION OF ev FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')")
    src.db.q("ALTER TABLE ev_2027 SET (autovacuum_enabled = false)")
    assert src.db.q("SELECT model, generation FROM objcached.models ORDER BY 1") == gens
    assert src.db.outbox_rows() == 0


def test_ddl_by_a_role_without_any_right_on_the_hook(src, pg):
    """The tables' owner has no right on schema objcached: its DETACH and
    ATTACH are not refused, and the model is invalidated all the same."""
    role = f"ddl_{src.db.name}"[:63]
    pg.execute(f'CREATE ROLE "{role}" LOGIN', dbname="postgres")
    try:
        for t in ("ev", "ev_2024", "ev_2025"):
            src.db.q(f'ALTER TABLE {t} OWNER TO "{role}"')
        assert not src.db.one("SELECT has_schema_privilege(%s, 'objcached', 'USAGE')", (role,))
        conn = psycopg2.connect(host=pg.dir, port=pg.port, dbname=src.db.name, user=role)
        conn.autocommit = True
        try:
            gen = src.db.generation("Ev")
            with conn.cursor() as cur:
                cur.execute("ALTER TABLE ev DETACH PARTITION ev_2024")
            gen2 = src.db.generation("Ev")
            assert gen2 > gen
            with conn.cursor() as cur:
                cur.execute("ALTER TABLE ev ATTACH PARTITION ev_2024 "
                            "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
            assert src.db.generation("Ev") > gen2
            assert src.db.q("SELECT hooked FROM objcached.status WHERE model = 'Ev'") == [(True,)]
        finally:
            conn.close()
    finally:
        src.db.q(f'REASSIGN OWNED BY "{role}" TO postgres')
        src.db.q(f'DROP OWNED BY "{role}"')
        pg.execute(f'DROP ROLE "{role}"', dbname="postgres")


def test_a_hook_that_cannot_be_made_again_warns_and_the_ddl_goes_on(db):
    """The hook's own work after the invalidation fails (the attached table
    has a trigger of its own named like objcached's): the ATTACH is not
    refused, the model is invalidated, a WARNING says why the triggers are
    not there, and objcached.status says hooked = false until attach."""
    db.q("CREATE TABLE ev_2026 (id bigint NOT NULL, day date NOT NULL, what text, "
         "PRIMARY KEY (id, day))")
    db.q("CREATE FUNCTION mine() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'")
    db.q("CREATE TRIGGER objcached_insert AFTER INSERT ON ev_2026 "
         "FOR EACH STATEMENT EXECUTE FUNCTION mine()")
    gen = db.generation("Ev")
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE ev ATTACH PARTITION ev_2026 "
                    "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    assert any("triggers could not be made again" in n and "objcached did not create" in n
               for n in conn.notices), conn.notices
    assert db.generation("Ev") > gen
    assert db.q("SELECT keys FROM objcached.outbox WHERE model = 'Ev'") == [(None,)]
    assert db.q("SELECT hooked FROM objcached.status WHERE model = 'Ev'") == [(False,)]


def test_uninstall_drops_the_event_triggers_and_an_upgrade_invalidates_nothing(db, pg):
    """An install of version 2 from before the event triggers (no
    objcached.members, no event trigger) upgrades in place without
    invalidating any model, and its DETACH is seen afterwards; uninstall.sql
    drops the event triggers with the schema."""
    assert {r[0] for r in db.q("SELECT evtname FROM pg_event_trigger")} == \
        {"objcached_ddl_end", "objcached_sql_drop"}
    db.q("DROP EVENT TRIGGER objcached_ddl_end")
    db.q("DROP EVENT TRIGGER objcached_sql_drop")
    db.q("DROP TABLE objcached.members")
    gens = db.q("SELECT model, generation FROM objcached.models ORDER BY 1")
    pg.execute_file(os.path.join(SQL_DIR, "install.sql"), dbname=db.name)
    assert db.q("SELECT model, generation FROM objcached.models ORDER BY 1") == gens
    assert db.outbox_rows() == 0
    db.q("ALTER TABLE ev DETACH PARTITION ev_2024")
    assert db.q("SELECT keys FROM objcached.outbox") == [(None,)]
    pg.execute_file(os.path.join(SQL_DIR, "uninstall.sql"), dbname=db.name)
    assert db.q("SELECT evtname FROM pg_event_trigger") == []
    db.q("ALTER TABLE ev ATTACH PARTITION ev_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")


def test_an_install_by_a_role_that_is_not_superuser_says_what_it_leaves_unseen(
        pg, objcached_bin, mc_pool, tmp_path):
    """Only a superuser can make event triggers: the install of a database
    owner that is not one succeeds without them, and --install-hook and
    --check-config say what that leaves unseen."""
    name = "pddl_nosuper"
    role = "pddl_owner"
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")
    pg.execute(f'DROP ROLE IF EXISTS "{role}"', dbname="postgres")
    pg.execute(f'CREATE ROLE "{role}" LOGIN', dbname="postgres")
    pg.execute(f'CREATE DATABASE "{name}" OWNER "{role}"', dbname="postgres")
    try:
        conn = psycopg2.connect(host=pg.dir, port=pg.port, dbname=name, user=role)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE ev (id bigint NOT NULL, day date NOT NULL, "
                        "PRIMARY KEY (id, day)) PARTITION BY RANGE (day)")
        conn.close()
        conninfo = f"host={pg.dir} port={pg.port} dbname={name} user={role}"
        config = oc_c.sidecar_config(mc_pool, conninfo, {"Ev": {"table": "ev"}})
        p = oc_c.run_install_hook(objcached_bin, config)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "warning: the hook's event triggers objcached_ddl_end and objcached_sql_drop " \
               "are missing" in p.stdout, p.stdout
        assert "event trigger objcached_ddl_end was not made" in p.stderr, p.stderr
        assert "model Ev: attached" in p.stdout
        path = tmp_path / "c.ini"
        path.write_text(harness.render_ini(config))
        out = subprocess.run([objcached_bin, "--check-config", str(path)],
                                  capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "warning: the hook's event triggers" in out.stdout, out.stdout
        # a superuser's install adds them; the check is quiet then
        pg.execute_file(os.path.join(SQL_DIR, "install.sql"), dbname=name)
        out = subprocess.run([objcached_bin, "--check-config", str(path)],
                                  capture_output=True, text=True, timeout=60)
        assert "event triggers" not in out.stdout, out.stdout
    finally:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")
        pg.execute(f'DROP ROLE IF EXISTS "{role}"', dbname="postgres")


def test_a_foreign_child_brings_its_rows_into_the_model(src):
    """CREATE FOREIGN TABLE ... INHERITS is no empty table: its rows are
    wherever its server keeps them (here a program's output), and they join
    the model at once. Animal:5, cached as absent, is served then. Before,
    CREATE FOREIGN TABLE was taken for an empty CREATE TABLE and invalidated
    nothing: Animal:5 stayed absent until its ttl."""
    oc = src.start()
    cached(oc, "Animal:5", None)
    src.db.q("CREATE EXTENSION file_fdw")
    src.db.q("CREATE SERVER files FOREIGN DATA WRAPPER file_fdw")
    src.db.q("CREATE FOREIGN TABLE fox () INHERITS (animal) SERVER files "
             "OPTIONS (program 'echo 5,fox', format 'csv')")
    assert row(src.db, "Animal", 5) is not None
    served(oc, "Animal:5", row(src.db, "Animal", 5), "CREATE FOREIGN TABLE ... INHERITS")


def test_ddl_that_moves_no_row_does_not_wait_for_the_models_row(db):
    """A transaction that truncated one partition holds the model's row of
    objcached.models (its new generation) until it ends. DDL on another
    partition that moves no row must not wait for it: before, every DDL on
    a model's tables locked that row (and could deadlock with the truncating
    transaction once it touched the altered table)."""
    gen = db.generation("Ev")
    conn = db.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("TRUNCATE ev_2025")
        other = db.connect()
        with other.cursor() as cur:
            cur.execute("SET lock_timeout = '3s'")
            cur.execute("ALTER TABLE ev_2024 SET (autovacuum_enabled = false)")
            cur.execute("ALTER TABLE ev_2024 ALTER COLUMN what SET DEFAULT 'x'")
    finally:
        conn.rollback()
    assert db.generation("Ev") == gen


def test_a_restored_dump_sees_a_partition_dropped(db, pg):
    """pg_dump of a hooked database restored into a new one: its tables have
    new OIDs. objcached.members must name them (a regclass, dumped as the
    relation's name): before, it held the old database's OIDs, and a DROP
    TABLE of a partition or NO INHERIT of a child there found no member and
    invalidated nothing."""
    copy = db.name + "_copy"
    pg.execute(f'CREATE DATABASE "{copy}"', dbname="postgres")
    c = None
    try:
        conn = ["-h", pg.dir, "-p", str(pg.port), "-U", "postgres"]
        dump = subprocess.run([os.path.join(pg.bindir, "pg_dump"), *conn, db.name],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=120,
                              check=True)
        subprocess.run([os.path.join(pg.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        *conn, "-d", copy], input=dump.stdout, stdout=subprocess.DEVNULL,
                       timeout=120, check=True)
        c = oc_c.HookDb(pg, copy)
        assert {r[0] for r in c.q("SELECT evtname FROM pg_event_trigger")} == \
            {"objcached_ddl_end", "objcached_sql_drop"}
        gens = dict(c.q("SELECT model, generation FROM objcached.models"))
        c.q("DROP TABLE ev_2024")
        assert c.generation("Ev") > gens["Ev"]
        c.q("ALTER TABLE dog NO INHERIT animal")
        assert c.generation("Animal") > gens["Animal"]
    finally:
        if c is not None:
            c.close()
        pg.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)', dbname="postgres")


def test_ddl_of_no_model_does_not_wait_for_an_install(db):
    """An install run (install.sql) holds objcached.models locked (ALTER
    TABLE ... ADD COLUMN IF NOT EXISTS) until it commits. DDL of a relation
    in no model's tree (an application's temporary table of every request)
    must not wait for it: before, the event trigger read objcached.models for
    every CREATE TABLE and waited."""
    conn = db.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE objcached.models IN ACCESS EXCLUSIVE MODE")
        other = db.connect(autocommit=False)
        with other.cursor() as cur:
            cur.execute("SET lock_timeout = '3s'")
            cur.execute("CREATE TEMP TABLE scratch (id int PRIMARY KEY, v text) ON COMMIT DROP")
            cur.execute("DROP TABLE scratch")
            cur.execute("CREATE TABLE plain (id int)")
        other.rollback()
    finally:
        conn.rollback()

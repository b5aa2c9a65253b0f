"""The PostgreSQL invalidation hook (sql/install.sql), as docs/invalidation.md
describes it: install/uninstall, attach validation, what each kind of write
puts in objcached.outbox, TRUNCATE and generations, partitions, NOTIFY, the
claim() consumer contract under concurrency, and the security properties.

Every test gets a fresh database cloned from a template that has the hook
installed, in one throwaway cluster for this file."""

import os
import select
import statistics
import subprocess
import threading
import time

import psycopg2
import pytest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
SQL_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "sql"))
INSTALL = os.path.join(SQL_DIR, "install.sql")
UNINSTALL = os.path.join(SQL_DIR, "uninstall.sql")
TEMPLATE = "oc_hook_template"

TRIGGERS = {"objcached_insert", "objcached_update", "objcached_delete", "objcached_truncate"}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def cluster():
    server = harness.Postgres(dbname="postgres")
    try:
        server.start()
        server.execute(f'CREATE DATABASE "{TEMPLATE}"')
        run_psql(server, TEMPLATE, INSTALL)
        yield server
    finally:
        server.cleanup()


def run_psql(server, dbname, path, check=True):
    """psql -v ON_ERROR_STOP=1 -f path, as docs/invalidation.md says; returns
    (exit status, output)."""
    argv = [os.path.join(server.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", server.dir, "-p", str(server.port), "-U", "postgres", "-d", dbname,
            "-f", path]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120, check=False)
    out = proc.stdout.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"psql -f {path} failed ({proc.returncode}):\n{out}")
    return proc.returncode, out


class Db:
    """One database of the cluster: .conn is an autocommit superuser
    connection; connect() opens more."""

    def __init__(self, server, name):
        self.server = server
        self.name = name
        self.conns = []
        self.conn = self.connect()

    def connect(self, autocommit=True, user="postgres"):
        conn = psycopg2.connect(host=self.server.dir, port=self.server.port, dbname=self.name,
                                user=user, connect_timeout=10,
                                options="-c statement_timeout=120s -c lock_timeout=30s")
        conn.autocommit = autocommit
        self.conns.append(conn)
        return conn

    def q(self, sql, params=None, conn=None):
        """Rows of sql (None for a statement without a result)."""
        with (conn or self.conn).cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else None

    def one(self, sql, params=None, conn=None):
        return self.q(sql, params, conn)[0][0]

    def outbox(self):
        """[(model, keys as a sorted list or None)] in id order."""
        return [(m, None if k is None else sorted(k))
                for m, k in self.q("SELECT model, keys FROM objcached.outbox ORDER BY id")]

    def clear(self):
        self.q("DELETE FROM objcached.outbox")

    def close(self):
        for c in self.conns:
            if not c.closed:
                c.close()


_counter = [0]


@pytest.fixture
def db(cluster):
    """A fresh database with the hook installed."""
    _counter[0] += 1
    name = f"oc_hook_{_counter[0]}"
    cluster.copy_database(name, TEMPLATE)
    d = Db(cluster, name)
    yield d
    d.close()
    cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def bare_db(cluster):
    """A fresh database without the hook."""
    _counter[0] += 1
    name = f"oc_bare_{_counter[0]}"
    cluster.execute(f'CREATE DATABASE "{name}"')
    d = Db(cluster, name)
    yield d
    d.close()
    cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def users_table(db, name="users", model="User"):
    db.q(f"CREATE TABLE {name} (id bigint PRIMARY KEY, name text, v int NOT NULL DEFAULT 0)")
    if model:
        db.q("SELECT objcached.attach(%s, %s, 'id')", (name, model))
        db.clear()  # the attach row (whole-model invalidation), tested on its own


def error_of(db, sql, params=None):
    """The message of the error sql raises (it must raise)."""
    with pytest.raises(psycopg2.Error) as info:
        db.q(sql, params)
    return info.value.pgerror or str(info.value)


# ------------------------------------------------------- install, uninstall

def test_install_twice_and_uninstall_twice(bare_db):
    run_psql(bare_db.server, bare_db.name, INSTALL)
    run_psql(bare_db.server, bare_db.name, INSTALL)
    assert dict(bare_db.q("SELECT key, value FROM objcached.meta")) == \
        {"schema_version": "2", "notify": "off"}
    users_table(bare_db)
    run_psql(bare_db.server, bare_db.name, INSTALL)   # with a model attached
    assert bare_db.q("SELECT model, hooked FROM objcached.status") == [("User", True)]
    assert bare_db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass") == 4

    run_psql(bare_db.server, bare_db.name, UNINSTALL)
    run_psql(bare_db.server, bare_db.name, UNINSTALL)
    assert bare_db.one("SELECT count(*) FROM pg_namespace WHERE nspname = 'objcached'") == 0
    assert bare_db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass") == 0
    bare_db.q("INSERT INTO users VALUES (1, 'still writable')")


def test_a_new_install_starts_the_generations_above_every_earlier_install(bare_db):
    """uninstall.sql drops generation_seq; the old hook's cache entries stay
    in memcached until their ttl. A new sequence starts at the time in
    microseconds, above the old hook's generations; a run of install.sql
    over an existing one keeps it. Before, a new one started over from 1,
    and the first attach after a reinstall took the old hook's generation
    again (test_inval.py shows the stale row that served)."""
    before = bare_db.one("SELECT floor(extract(epoch FROM clock_timestamp()) * 1e6)::bigint")
    run_psql(bare_db.server, bare_db.name, INSTALL)
    users_table(bare_db)
    g1 = bare_db.one("SELECT generation FROM objcached.models")
    assert g1 >= before
    run_psql(bare_db.server, bare_db.name, INSTALL)   # kept as it is
    bare_db.q("TRUNCATE users")
    g2 = bare_db.one("SELECT generation FROM objcached.models")
    assert g2 > g1
    run_psql(bare_db.server, bare_db.name, UNINSTALL)
    run_psql(bare_db.server, bare_db.name, INSTALL)
    bare_db.q("SELECT objcached.attach('users', 'User', 'id')")
    assert bare_db.one("SELECT generation FROM objcached.models") > g2


def restore_schema_only(server, src, dst):
    """pg_dump --schema-only src | psql dst, as a staging copy of a
    database's structure is made (dst is created first)."""
    server.execute(f'CREATE DATABASE "{dst}"')
    conn = ["-h", server.dir, "-p", str(server.port), "-U", "postgres"]
    dump = subprocess.run([os.path.join(server.bindir, "pg_dump"), *conn, "--schema-only", src],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=120, check=True)
    subprocess.run([os.path.join(server.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    *conn, "-d", dst], input=dump.stdout, stdout=subprocess.DEVNULL, timeout=120,
                   check=True)


def test_a_schema_only_restore_draws_generations_above_every_earlier_one(cluster, bare_db):
    """pg_dump --schema-only gives generation_seq back at its START value,
    1, without the objcached schema's rows: the models attached again there
    (or after a drop and such a restore of the same database, or a staging
    copy made again every night against the same memcached pool) took
    generations 1, 2, ... again, the keys (oc:User~1:<id>) of an earlier
    copy's rows, served until their ttl. A generation is now never below
    the time in microseconds: above every one drawn before."""
    run_psql(bare_db.server, bare_db.name, INSTALL)
    users_table(bare_db)
    bare_db.q("TRUNCATE users")
    drawn = [bare_db.one("SELECT generation FROM objcached.models")]
    copy = bare_db.name + "_copy"
    for _ in range(2):   # a copy made again: its generations are above the last copy's too
        restore_schema_only(cluster, bare_db.name, copy)
        c = Db(cluster, copy)
        try:
            assert c.one("SELECT count(*) FROM objcached.models") == 0   # no rows: attach again
            run_psql(cluster, copy, INSTALL)
            c.q("SELECT objcached.attach('users', 'User', 'id')")
            c.q("TRUNCATE users")
            gens = [g for (g,) in c.q("SELECT generation FROM objcached.models")]
            assert min(gens) > max(drawn), (gens, drawn)
            drawn += gens
        finally:
            c.close()
            cluster.execute(f'DROP DATABASE "{copy}" WITH (FORCE)')


def test_uninstall_on_database_that_never_had_it(bare_db):
    run_psql(bare_db.server, bare_db.name, UNINSTALL)


def test_install_refuses_a_newer_schema(db):
    db.q("UPDATE objcached.meta SET value = '3' WHERE key = 'schema_version'")
    rc, out = run_psql(db.server, db.name, INSTALL, check=False)
    assert rc != 0
    assert "schema version 3, this file installs 2" in out


def test_uninstall_removes_triggers_of_partitions_added_later(db):
    db.q("CREATE TABLE ev (id bigint, at date) PARTITION BY RANGE (at)")
    db.q("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    db.q("SELECT objcached.attach('ev', 'Event')")
    db.q("DELETE FROM objcached.models")  # a row deleted by hand: triggers stay behind
    run_psql(db.server, db.name, UNINSTALL)
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'objcached%'") == 0


# ------------------------------------------------------ attach validation

@pytest.mark.parametrize("model", ["", "1User", "a-b", "a'b", "a b", "User\n", "x" * 65,
                                   "Ünïcode", "a;DROP TABLE x"])
def test_attach_rejects_bad_model_names(db, model):
    users_table(db, model=None)
    db.q("CREATE TABLE x (i int)")
    msg = error_of(db, "SELECT objcached.attach('users', %s)", (model,))
    assert "objcached.attach: invalid model name" in msg
    assert db.one("SELECT count(*) FROM objcached.models") == 0
    assert db.one("SELECT to_regclass('x') IS NOT NULL")


def test_attach_accepts_longest_model_name(db):
    users_table(db, model=None)
    db.q("SELECT objcached.attach('users', %s)", ("_" + "a" * 63,))
    assert db.one("SELECT count(*) FROM objcached.models") == 1


def test_attach_missing_table(db):
    assert 'relation "public.nosuch" does not exist' in \
        error_of(db, "SELECT objcached.attach('public.nosuch', 'X')")


def test_attach_missing_column_message(db):
    users_table(db, model=None)
    msg = error_of(db, "SELECT objcached.attach('public.users', 'User', 'idd')")
    assert 'objcached.attach: column "idd" does not exist in table public.users' in msg


def test_attach_injection_looking_names(db):
    users_table(db, model=None)
    db.q("CREATE TABLE x (i int)")
    error_of(db, "SELECT objcached.attach(%s, 'User')", ("users; DROP TABLE x",))
    msg = error_of(db, "SELECT objcached.attach('users', 'User', %s)", ("id; DROP TABLE x",))
    assert 'column "id; DROP TABLE x" does not exist in table public.users' in msg
    assert "invalid model name 'a''b'" in error_of(db, "SELECT objcached.attach('users', %s)",
                                                    ("a'b",))
    assert db.one("SELECT to_regclass('x') IS NOT NULL")
    assert db.one("SELECT count(*) FROM objcached.models") == 0


def test_attach_odd_but_legal_names_are_quoted(db):
    """A table and key column whose names need quoting work end to end."""
    db.q('CREATE SCHEMA "My Schema"')
    db.q('CREATE TABLE "My Schema"."t; DROP TABLE x --" ("key ""col""" text PRIMARY KEY)')
    db.q("CREATE TABLE x (i int)")
    db.q("SELECT objcached.attach(%s, 'Odd', %s)",
         ('"My Schema"."t; DROP TABLE x --"', 'key "col"'))
    db.clear()
    db.q('INSERT INTO "My Schema"."t; DROP TABLE x --" VALUES (%s)', ("k'1",))
    assert db.outbox() == [("Odd", ["k'1"])]
    assert db.one("SELECT to_regclass('x') IS NOT NULL")
    assert db.q("SELECT table_name, key_column, hooked FROM objcached.status") == \
        [('"My Schema"."t; DROP TABLE x --"', 'key "col"', True)]


@pytest.mark.parametrize("setup, tbl, col, expect", [
    ("CREATE VIEW vw AS SELECT 1::bigint AS id", "vw", "id", "is a view, not a table"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1::bigint AS id", "mv", "id",
     "is a materialized view, not a table"),
    ("CREATE SEQUENCE sq", "sq", "last_value", "is a sequence, not a table"),
    ("CREATE TABLE nk (id numeric)", "nk", "id", "has type numeric; key columns must be"),
    ("CREATE TABLE sc (id bigint)", "sc", "ctid", "is a system column"),
    ("CREATE TABLE pp (id bigint) PARTITION BY RANGE (id);"
     "CREATE TABLE pp1 PARTITION OF pp FOR VALUES FROM (0) TO (10)", "pp1", "id",
     "public.pp1 is a partition of public.pp; attach that table instead"),
    ("CREATE TABLE par (id bigint); CREATE TABLE chi () INHERITS (par)", "chi", "id",
     "public.chi is a child table of public.par"),
])
def test_attach_rejects_what_it_cannot_hook(db, setup, tbl, col, expect):
    db.q(setup)
    assert expect in error_of(db, "SELECT objcached.attach(%s, 'M', %s)", (tbl, col))
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'objcached%'") == 0


def test_attach_rejects_nondeterministic_collation(db):
    db.q("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    db.q("CREATE TABLE handles (h text COLLATE ci PRIMARY KEY)")
    assert "has a nondeterministic collation" in \
        error_of(db, "SELECT objcached.attach('handles', 'Handle', 'h')")


def test_key_column_made_nondeterministic_after_attach_shows_in_status(db):
    db.q("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    db.q("CREATE TABLE handles (h text PRIMARY KEY)")
    db.q("SELECT objcached.attach('handles', 'Handle', 'h')")
    db.q("INSERT INTO handles VALUES ('Ann')")
    db.q("ALTER TABLE handles ALTER COLUMN h TYPE text COLLATE ci")
    db.clear()
    db.q("UPDATE handles SET h = 'ann'")
    # 'Ann' and 'ann' are one key to the collation: only one of them is queued
    assert len(db.outbox()[0][1]) == 1
    assert db.q("SELECT hooked FROM objcached.status") == [(False,)]


def test_attach_rejects_temporary_table(db):
    db.q("CREATE TEMP TABLE tmp (id bigint)")
    assert "is a temporary table" in error_of(db, "SELECT objcached.attach('tmp', 'T')")


def test_attach_accepts_domain_over_a_key_type(db):
    db.q("CREATE DOMAIN user_id AS bigint CHECK (VALUE > 0)")
    db.q("CREATE TABLE d (id user_id PRIMARY KEY)")
    db.q("SELECT objcached.attach('d', 'D')")
    db.clear()
    db.q("INSERT INTO d VALUES (5)")
    assert db.outbox() == [("D", ["5"])]


def test_attach_refuses_a_foreign_trigger_with_our_name(db):
    users_table(db, model=None)
    db.q("CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$")
    db.q("CREATE TRIGGER objcached_insert AFTER INSERT ON users EXECUTE FUNCTION noop()")
    assert 'already has a trigger named "objcached_insert"' in \
        error_of(db, "SELECT objcached.attach('users', 'User')")


def test_attach_twice_is_a_noop_and_first_attach_invalidates_the_model(db):
    users_table(db, model=None)
    db.q("SELECT objcached.attach('users', 'User')")
    gen = db.one("SELECT generation FROM objcached.models")
    # Whatever was cached before the hook existed may be stale.
    assert db.outbox() == [("User", None)]
    db.q("SELECT objcached.attach('users', 'User')")
    db.q("SELECT objcached.attach('users', 'User', 'id')")
    assert db.outbox() == [("User", None)]
    assert db.one("SELECT generation FROM objcached.models") == gen
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass") == 4


def test_attach_moves_a_model_to_another_table(db):
    users_table(db)
    db.q("CREATE TABLE users2 (id bigint PRIMARY KEY)")
    gen = db.one("SELECT generation FROM objcached.models")
    db.q("SELECT objcached.attach('users2', 'User')")
    assert db.outbox() == [("User", None)]
    assert db.one("SELECT generation FROM objcached.models") > gen
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass") == 0
    assert db.q("SELECT tbl::text, hooked FROM objcached.status") == [("users2", True)]


def test_detach(db):
    users_table(db)
    users_table(db, name="other", model="Other")
    db.q("SELECT objcached.attach('users', 'UserName')")
    db.clear()
    db.q("SELECT objcached.detach('users', 'User')")
    assert db.one("SELECT objcached.hooked('users')")      # UserName still uses it
    db.q("INSERT INTO users VALUES (1)")
    assert db.outbox() == [("UserName", ["1"])]
    assert "is attached to public.users, not to public.other" in \
        error_of(db, "SELECT objcached.detach('other', 'UserName')")
    # No table (a typo's to_regclass): refused. It used to delete the model's
    # row and leave its triggers queueing outbox rows for it.
    for tbl in ("NULL", "to_regclass('public.userz')"):
        assert "objcached.detach: no table given for model UserName" in \
            error_of(db, f"SELECT objcached.detach({tbl}, 'UserName')")
    assert db.one("SELECT count(*) FROM objcached.models WHERE model = 'UserName'") == 1
    db.q("SELECT objcached.detach('users', 'UserName')")
    db.q("SELECT objcached.detach('users', 'UserName')")   # again: a notice, no error
    assert not db.one("SELECT objcached.hooked('users')")
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass") == 0
    assert db.one("SELECT objcached.hooked('other')")


# ------------------------------------------------------------ what writes produce

def test_insert_update_delete_one_row_per_statement(db):
    users_table(db)
    db.q("INSERT INTO users (id) SELECT generate_series(1, 5)")
    db.q("UPDATE users SET v = 1 WHERE id IN (2, 3)")
    db.q("DELETE FROM users WHERE id > 3")
    db.q("INSERT INTO users (id) VALUES (-9223372036854775808), (9223372036854775807)")
    assert db.outbox() == [("User", ["1", "2", "3", "4", "5"]), ("User", ["2", "3"]),
                           ("User", ["4", "5"]),
                           ("User", ["-9223372036854775808", "9223372036854775807"])]


def test_keys_are_distinct(db):
    db.q("CREATE TABLE tags (id serial PRIMARY KEY, owner bigint)")
    db.q("SELECT objcached.attach('tags', 'UserTags', 'owner')")
    db.clear()
    db.q("INSERT INTO tags (owner) VALUES (1), (1), (2), (NULL), (1)")
    assert db.outbox() == [("UserTags", ["1", "2"])]   # NULL keys cannot be cached: skipped


def test_keys_are_distinct_when_a_unique_key_is_not_unique_yet(db):
    """A unique key lets the triggers skip the DISTINCT, but only an
    immediate one: a deferred unique constraint allows duplicates until
    commit, and a partial unique index allows them outside its predicate."""
    db.q("CREATE TABLE dtags (id serial PRIMARY KEY, owner bigint UNIQUE DEFERRABLE "
         "INITIALLY DEFERRED)")
    db.q("CREATE TABLE ptags (id serial PRIMARY KEY, owner bigint, live boolean)")
    db.q("CREATE UNIQUE INDEX ON ptags (owner) WHERE live")
    db.q("SELECT objcached.attach('dtags', 'D', 'owner')")
    db.q("SELECT objcached.attach('ptags', 'P', 'owner')")
    db.clear()
    conn = db.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO dtags (owner) VALUES (1), (1), (2)")
        cur.execute("UPDATE dtags SET owner = 3 WHERE id = (SELECT min(id) FROM dtags)")
    conn.commit()
    db.q("INSERT INTO ptags (owner, live) VALUES (1, false), (1, false), (1, true)")
    db.q("UPDATE ptags SET live = false")
    assert db.outbox() == [("D", ["1", "2"]), ("D", ["1", "3"]), ("P", ["1"]), ("P", ["1"])]


def test_unique_key_updates_give_each_key_once(db):
    """The unique-key path: an UPDATE that keeps the keys, and one that
    moves some of them (old and new keys, each once)."""
    users_table(db)
    db.q("INSERT INTO users (id) SELECT generate_series(1, 6)")
    db.clear()
    db.q("UPDATE users SET v = 7")
    db.q("UPDATE users SET id = id + 3 WHERE id > 3")        # 4,5,6 -> 7,8,9
    db.q("UPDATE users SET id = id * 10 WHERE id IN (1, 7)")  # two keys move
    assert db.outbox() == [("User", ["1", "2", "3", "4", "5", "6"]),
                           ("User", ["4", "5", "6", "7", "8", "9"]),
                           ("User", ["1", "10", "7", "70"])]


def test_update_changing_the_key_gives_old_and_new(db):
    users_table(db)
    db.q("INSERT INTO users (id) VALUES (1), (2)")
    db.clear()
    db.q("UPDATE users SET id = id + 100")
    assert db.outbox() == [("User", ["1", "101", "102", "2"])]


def test_statements_touching_no_row_write_nothing(db):
    users_table(db)
    db.q("INSERT INTO users (id) VALUES (1)")
    db.clear()
    db.q("UPDATE users SET v = 2 WHERE id = 42")
    db.q("DELETE FROM users WHERE false")
    db.q("INSERT INTO users SELECT 1 WHERE false")
    db.q("INSERT INTO users (id) VALUES (1) ON CONFLICT DO NOTHING")
    assert db.outbox() == []


@pytest.mark.parametrize("ddl, values, want", [
    ("integer", [-2147483648, 7, 2147483647], ["-2147483648", "2147483647", "7"]),
    ("smallint", [3], ["3"]),
    ("uuid", ["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{b0eebc999c0b4ef8bb6d6bb9bd380a12}"],
     ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"]),
    ("text", ["plain", "Zoë Ångström 日本 🎉", "O'Brien", 'say "hi"', "a,b", "{x}",
              "back\\slash", "NULL", ""],
     sorted(["plain", "Zoë Ångström 日本 🎉", "O'Brien", 'say "hi"', "a,b", "{x}",
             "back\\slash", "NULL", ""])),
    ("varchar(20)", ["v1"], ["v1"]),
])
def test_key_types_as_postgresql_prints_them(db, ddl, values, want):
    db.q(f"CREATE TABLE k (id {ddl} PRIMARY KEY)")
    db.q("SELECT objcached.attach('k', 'K')")
    db.clear()
    with db.conn.cursor() as cur:
        cur.executemany("INSERT INTO k VALUES (%s)", [(v,) for v in values[:1]])
        cur.execute("INSERT INTO k SELECT unnest(%s::text[])::" + ddl.split("(")[0]
                    + " ON CONFLICT DO NOTHING", (list(values[1:]),))
    rows = db.outbox()
    got = sorted(k for _, keys in rows for k in keys)
    assert got == sorted(want)
    if len(values) > 1:
        assert len(rows) == 2
    # The outbox text is what the key column's ::text prints, i.e. what objcached looks up.
    assert sorted(db.one("SELECT array_agg(id::text) FROM k")) == sorted(want)


def test_copy_upsert_merge_and_writable_cte(db):
    users_table(db)
    with db.conn.cursor() as cur:
        cur.copy_expert("COPY users (id) FROM STDIN", _Lines(["1", "2"]))
    db.q("INSERT INTO users (id) VALUES (2), (3) ON CONFLICT (id) DO UPDATE SET v = 9")
    db.q("MERGE INTO users u USING (VALUES (3), (4)) s(id) ON u.id = s.id "
         "WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)")
    db.q("WITH d AS (DELETE FROM users WHERE id = 1 RETURNING id) "
         "INSERT INTO users (id) SELECT id + 10 FROM d")
    # An upsert, a MERGE or a writable CTE is several statements to the triggers: one outbox
    # row for each kind of change it made (PostgreSQL picks their order).
    assert db.outbox()[0] == ("User", ["1", "2"])                   # COPY
    assert sorted(db.outbox()[1:3]) == [("User", ["2"]), ("User", ["3"])]    # upsert
    assert sorted(db.outbox()[3:5]) == [("User", ["3"]), ("User", ["4"])]    # MERGE
    assert sorted(db.outbox()[5:]) == [("User", ["1"]), ("User", ["11"])]    # CTE


class _Lines:
    def __init__(self, lines):
        self.data = ("\n".join(lines) + "\n").encode()

    def read(self, size=-1):
        out, self.data = (self.data, b"") if size < 0 else (self.data[:size], self.data[size:])
        return out

    def readline(self, size=-1):
        return self.read(size)


def test_truncate_writes_null_keys_and_bumps_generation(db):
    users_table(db)
    db.q("INSERT INTO users (id) VALUES (1)")
    db.clear()
    gen = db.one("SELECT generation FROM objcached.models")
    db.q("TRUNCATE users")
    assert db.outbox() == [("User", None)]
    gen2 = db.one("SELECT generation FROM objcached.models")
    assert gen2 > gen
    db.q("BEGIN; TRUNCATE users; ROLLBACK")
    assert db.one("SELECT generation FROM objcached.models") == gen2
    db.q("TRUNCATE users")
    assert db.one("SELECT generation FROM objcached.models") > gen2


def test_truncate_of_an_empty_table_still_invalidates(db):
    users_table(db)
    db.q("TRUNCATE users")
    assert db.outbox() == [("User", None)]


def test_generation_survives_detach_and_attach(db):
    users_table(db)
    db.q("TRUNCATE users")
    gen = db.one("SELECT generation FROM objcached.models")
    db.q("SELECT objcached.detach('users', 'User')")
    db.q("SELECT objcached.attach('users', 'User')")
    assert db.one("SELECT generation FROM objcached.models") > gen


def test_two_models_on_one_table(db):
    db.q("CREATE TABLE accounts (id bigint PRIMARY KEY, handle text UNIQUE, v int)")
    db.q("SELECT objcached.attach('accounts', 'Account')")
    db.q("SELECT objcached.attach('accounts', 'AccountByHandle', 'handle')")
    db.clear()
    db.q("INSERT INTO accounts VALUES (1, 'ann', 0), (2, 'bob', 0)")
    db.q("UPDATE accounts SET handle = 'bobby' WHERE id = 2")
    db.q("TRUNCATE accounts")
    assert db.outbox() == [("Account", ["1", "2"]), ("AccountByHandle", ["ann", "bob"]),
                           ("Account", ["2"]), ("AccountByHandle", ["bob", "bobby"]),
                           ("Account", None), ("AccountByHandle", None)]
    assert db.q("SELECT model, hooked FROM objcached.status ORDER BY 1") == \
        [("Account", True), ("AccountByHandle", True)]


def test_renamed_key_column_keeps_working(db):
    users_table(db)
    db.q("ALTER TABLE users RENAME COLUMN id TO user_id")
    db.q("INSERT INTO users (user_id) VALUES (7)")
    assert db.outbox() == [("User", ["7"])]
    assert db.q("SELECT key_column, hooked FROM objcached.status") == [("user_id", True)]


def test_dropped_key_column_invalidates_the_whole_model(db):
    db.q("CREATE TABLE p (id bigint PRIMARY KEY, slug text)")
    db.q("SELECT objcached.attach('p', 'PageBySlug', 'slug')")
    db.clear()
    db.q("ALTER TABLE p DROP COLUMN slug")
    gen = db.one("SELECT generation FROM objcached.models")
    db.q("INSERT INTO p VALUES (1)")         # the write still succeeds
    assert db.outbox() == [("PageBySlug", None)]
    assert db.one("SELECT generation FROM objcached.models") > gen
    assert db.q("SELECT key_column FROM objcached.status") == [(None,)]


def test_triggers_fire_with_session_replication_role_replica(db):
    users_table(db)
    db.q("SET session_replication_role = replica")
    db.q("INSERT INTO users (id) VALUES (1)")
    db.q("RESET session_replication_role")
    assert db.outbox() == [("User", ["1"])]


def test_disabled_trigger_shows_in_status(db):
    users_table(db)
    db.q("ALTER TABLE users DISABLE TRIGGER objcached_update")
    assert db.q("SELECT hooked FROM objcached.status") == [(False,)]
    db.q("SELECT objcached.attach('users', 'User')")   # attach again repairs it
    assert db.q("SELECT hooked FROM objcached.status") == [(True,)]


def test_triggers_enabled_other_than_always_show_in_status(db):
    users_table(db)
    # ENABLE TRIGGER ALL after a DISABLE gives ENABLE (origin only): a write
    # under session_replication_role = replica is missed.
    db.q("ALTER TABLE users DISABLE TRIGGER ALL")
    db.q("ALTER TABLE users ENABLE TRIGGER ALL")
    db.q("SET session_replication_role = replica")
    db.q("INSERT INTO users (id) VALUES (1)")
    db.q("RESET session_replication_role")
    assert db.outbox() == []
    assert db.q("SELECT hooked FROM objcached.status") == [(False,)]
    db.q("SELECT objcached.attach('users', 'User')")   # attach again repairs it
    assert db.q("SELECT hooked FROM objcached.status") == [(True,)]
    # ENABLE REPLICA fires under replica only: an ordinary write is missed.
    db.q("ALTER TABLE users ENABLE REPLICA TRIGGER objcached_insert")
    db.q("INSERT INTO users (id) VALUES (2)")
    assert db.outbox() == []
    assert db.q("SELECT hooked FROM objcached.status") == [(False,)]
    assert not db.one("SELECT objcached.hooked('users')")


def test_hooked_table_made_a_child_after_attach_shows_in_status(db):
    db.q("CREATE TABLE p (id bigint, v int)")
    db.q("CREATE TABLE c (id bigint, v int)")
    db.q("SELECT objcached.attach('p', 'P')")
    db.q("SELECT objcached.attach('c', 'C')")
    db.clear()
    db.q("ALTER TABLE c INHERIT p")
    # c's rows joined model P: the event trigger invalidates P whole and gives the child a
    # function with both models (model C's rows did not change).
    assert db.outbox() == [("P", None)]
    db.clear()
    # Straight into the child: both models.
    db.q("INSERT INTO c VALUES (5, 1)")
    # Through the parent: only the parent's triggers fire, model C hears nothing.
    db.q("UPDATE p SET v = 2")
    assert db.outbox() == [("C", ["5"]), ("P", ["5"]), ("P", ["5"])]
    assert db.q("SELECT model, hooked FROM objcached.status ORDER BY 1") == [
        ("C", False), ("P", True)]


def test_subscribed_table_in_trigger_mode_shows_in_status(db, cluster):
    """The logical replication apply worker fires row triggers only: the
    replicated writes of a subscribed table never reach the outbox."""
    _counter[0] += 1
    pub = f"oc_pub_{_counter[0]}"
    cluster.execute(f'CREATE DATABASE "{pub}"')
    pconn = psycopg2.connect(host=cluster.dir, port=cluster.port, dbname=pub, user="postgres")
    pconn.autocommit = True
    sub = f"oc_sub_{_counter[0]}"
    try:
        with pconn.cursor() as cur:
            cur.execute("CREATE TABLE s (id bigint PRIMARY KEY, v int)")
            cur.execute("CREATE PUBLICATION p FOR TABLE s")
            # made here: CREATE SUBSCRIPTION cannot make a slot in its own cluster
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (sub,))
            cur.execute("INSERT INTO s VALUES (1, 0)")
        db.q("CREATE TABLE s (id bigint PRIMARY KEY, v int)")
        db.q("SELECT objcached.attach('s', 'S')")
        assert db.q("SELECT hooked FROM objcached.status") == [(True,)]
        db.q(f"CREATE SUBSCRIPTION {sub} CONNECTION 'host={cluster.dir} port={cluster.port} "
             f"dbname={pub} user=postgres' PUBLICATION p "
             f"WITH (create_slot = false, slot_name = '{sub}')")
        harness.wait_until(lambda: db.q("SELECT v FROM s") == [(0,)], timeout=60,
                           what="the initial copy")
        db.clear()
        with pconn.cursor() as cur:
            cur.execute("UPDATE s SET v = 1")
        harness.wait_until(lambda: db.q("SELECT v FROM s") == [(1,)], timeout=60,
                           what="the replicated update")
        assert db.outbox() == []   # the update was never queued
        assert db.q("SELECT hooked FROM objcached.status") == [(False,)]
        del db.conn.notices[:]
        db.q("SELECT objcached.attach('s', 'S')")   # says why, and what to do
        assert any("logical replication subscription" in n and "via => 'wal'" in n
                   for n in db.conn.notices), db.conn.notices
    finally:
        db.q(f"DROP SUBSCRIPTION IF EXISTS {sub}")
        pconn.close()
        cluster.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s AND NOT active", (sub,))
        cluster.execute(f'DROP DATABASE "{pub}" WITH (FORCE)')


def test_unlogged_table_emptied_by_crash_recovery_is_invalidated_whole(db, cluster):
    """Crash recovery empties unlogged tables without firing a trigger: the
    next claim() invalidates their models whole, once."""
    db.q("CREATE UNLOGGED TABLE ul (id bigint PRIMARY KEY)")
    db.q("SELECT objcached.attach('ul', 'Ul')")
    users_table(db)   # a logged table: kept by crash recovery, not invalidated
    db.q("INSERT INTO ul VALUES (1)")
    db.q("INSERT INTO users (id) VALUES (1)")
    db.clear()
    gen = db.one("SELECT generation FROM objcached.models WHERE model = 'Ul'")
    db.q("CHECKPOINT")   # the logged writes survive (the cluster runs with fsync off)
    db.close()
    cluster.stop(mode="immediate")
    cluster.start()
    # the template's own marker was emptied too: put it back for the other tests
    cluster.execute("INSERT INTO objcached.unlogged_alive DEFAULT VALUES ON CONFLICT DO NOTHING",
                    dbname=TEMPLATE)
    db.conn = db.connect()
    assert db.q("SELECT (SELECT count(*) FROM ul), (SELECT count(*) FROM users)") == [(0, 1)]

    c1, c2 = db.connect(autocommit=False), db.connect(autocommit=False)
    claim = "SELECT model, keys FROM objcached.claim(100)"
    assert db.q(claim, conn=c1) == [("Ul", None)]
    # A second consumer meanwhile neither waits for the first nor does it again.
    db.q("SET lock_timeout = '5s'", conn=c2)
    assert db.q(claim, conn=c2) == []
    c2.commit()
    c1.commit()
    assert db.one("SELECT generation FROM objcached.models WHERE model = 'Ul'") > gen
    assert db.q(claim, conn=c2) == []   # once
    c2.commit()


def test_dropped_table_shows_in_status_and_can_be_detached(db):
    users_table(db)
    db.q("DROP TABLE users")
    assert db.q("SELECT table_name, hooked FROM objcached.status") == [(None, False)]
    db.q("SELECT objcached.detach(tbl, model) FROM objcached.models WHERE model = 'User'")
    assert db.one("SELECT count(*) FROM objcached.models") == 0


# ----------------------------------------------------------------- partitions

def test_partitioned_table(db):
    db.q("CREATE TABLE ev (id bigint, part int, PRIMARY KEY (id, part)) PARTITION BY LIST (part)")
    db.q("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1)")
    db.q("CREATE TABLE ev_2 PARTITION OF ev FOR VALUES IN (2) PARTITION BY LIST (part)")
    db.q("CREATE TABLE ev_2a PARTITION OF ev_2 FOR VALUES IN (2)")
    db.q("SELECT objcached.attach('ev', 'Event')")
    for rel in ("ev", "ev_1", "ev_2", "ev_2a"):
        names = {r[0] for r in db.q("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass",
                                    (rel,))}
        assert names == TRIGGERS, rel
    db.clear()

    db.q("INSERT INTO ev VALUES (1, 1), (2, 2)")          # through the parent: one row
    db.q("INSERT INTO ev_2a VALUES (3, 2)")                # straight into a partition
    db.q("UPDATE ev SET part = 2 WHERE id = 1")            # moves a row across partitions
    db.q("DELETE FROM ev_1")                               # nothing left there: no row
    db.q("TRUNCATE ev_2a")
    assert db.outbox() == [("Event", ["1", "2"]), ("Event", ["3"]), ("Event", ["1"]),
                           ("Event", None)]
    db.clear()
    # TRUNCATE of the parent fires on every hooked relation of the tree: one row each.
    db.q("TRUNCATE ev")
    assert db.outbox() == [("Event", None)] * 4


def test_partition_added_after_attach_gets_its_triggers_at_once(db):
    """The event trigger objcached_ddl_end hooks a partition or child made
    after attach, without invalidating anything (it is empty)."""
    db.q("CREATE TABLE ev (id bigint, part int) PARTITION BY LIST (part)")
    db.q("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1)")
    db.q("SELECT objcached.attach('ev', 'Event')")
    db.q("CREATE TABLE animal (id bigint PRIMARY KEY)")
    db.q("SELECT objcached.attach('animal', 'Animal')")
    gens = db.q("SELECT model, generation FROM objcached.models ORDER BY 1")
    db.clear()
    db.q("CREATE TABLE ev_2 PARTITION OF ev FOR VALUES IN (2)")
    db.q("CREATE TABLE dog (bark text) INHERITS (animal)")
    assert db.q("SELECT model, hooked FROM objcached.status ORDER BY 1") == [
        ("Animal", True), ("Event", True)]
    assert db.outbox() == []
    assert db.q("SELECT model, generation FROM objcached.models ORDER BY 1") == gens
    db.q("INSERT INTO ev_2 VALUES (6, 2)")                 # straight into the new partition
    db.q("INSERT INTO dog VALUES (7, 'woof')")             # straight into the new child
    assert db.outbox() == [("Event", ["6"]), ("Animal", ["7"])]


def test_partition_added_after_attach_is_reported_and_fixed_by_attach(db):
    """Without the event triggers (an install by a role that is not a
    superuser, or disabled: here disabled), a partition made after attach
    has no triggers until attach runs again."""
    db.q("CREATE TABLE ev (id bigint, part int) PARTITION BY LIST (part)")
    db.q("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1)")
    db.q("SELECT objcached.attach('ev', 'Event')")
    db.q("ALTER EVENT TRIGGER objcached_ddl_end DISABLE")
    db.q("CREATE TABLE ev_2 PARTITION OF ev FOR VALUES IN (2)")
    assert db.q("SELECT hooked FROM objcached.status") == [(False,)]
    assert not db.one("SELECT objcached.hooked('ev')")
    db.clear()
    db.q("INSERT INTO ev VALUES (5, 2)")    # through the parent: still seen
    assert db.outbox() == [("Event", ["5"])]
    db.q("SELECT objcached.attach(tbl, model, key_column) FROM objcached.models")
    assert db.q("SELECT hooked FROM objcached.status") == [(True,)]
    db.clear()
    db.q("INSERT INTO ev_2 VALUES (6, 2)")
    assert db.outbox() == [("Event", ["6"])]
    db.q("SELECT objcached.detach('ev', 'Event')")
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'objcached%'") == 0


def test_inheritance_children(db):
    db.q("CREATE TABLE animal (id bigint PRIMARY KEY)")
    db.q("CREATE TABLE dog (bark text) INHERITS (animal)")
    db.q("SELECT objcached.attach('animal', 'Animal')")
    db.clear()
    db.q("INSERT INTO dog (id) VALUES (1)")
    db.q("UPDATE animal SET id = 2 WHERE id = 1")          # updates the child's row
    assert db.outbox() == [("Animal", ["1"]), ("Animal", ["1", "2"])]


# -------------------------------------------------------------- bulk and timing

ROWS = 100_000


def _timed(conn, sql):
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
    return time.perf_counter() - t0


def test_100k_row_update_writes_one_row_and_timing(db):
    for t in ("plain", "hooked"):
        db.q(f"CREATE TABLE {t} (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0, "
             "pad text NOT NULL DEFAULT 'some payload of a typical row')")
        db.q(f"INSERT INTO {t} (id) SELECT generate_series(1, {ROWS})")
    db.q("SELECT objcached.attach('hooked', 'Hooked')")
    db.clear()

    times = {"plain": [], "hooked": []}
    for _ in range(3):
        for t in ("plain", "hooked"):
            db.q(f"VACUUM {t}")
            db.clear()
            times[t].append(_timed(db.conn, f"UPDATE {t} SET v = v + 1"))
    rows = db.q("SELECT model, cardinality(keys) FROM objcached.outbox")
    assert rows == [("Hooked", ROWS)]
    assert db.one("SELECT count(DISTINCT k) FROM objcached.outbox, unnest(keys) k") == ROWS

    plain, hooked = statistics.median(times["plain"]), statistics.median(times["hooked"])
    print(f"\n100k-row UPDATE, median of 3: without hook {plain * 1000:.0f} ms, "
          f"with hook {hooked * 1000:.0f} ms, ratio {hooked / plain:.2f}")

    # Single-row statements, the OLTP case: the server's own time for 2000 UPDATEs by primary
    # key, each its own statement (so the trigger fires 2000 times), measured inside the server
    # so that client and network noise stay out of it.
    db.q("""CREATE FUNCTION pg_temp.loop(tbl regclass, n int) RETURNS float8 LANGUAGE plpgsql AS $$
            DECLARE t0 timestamptz := clock_timestamp();
            BEGIN
                FOR i IN 1..n LOOP
                    EXECUTE format('UPDATE %s SET v = v + 1 WHERE id = $1', tbl) USING i;
                END LOOP;
                RETURN extract(epoch FROM clock_timestamp() - t0) / n;
            END $$""")
    small = {"plain": [], "hooked": []}
    for _ in range(3):
        for t in ("plain", "hooked"):
            db.q(f"VACUUM {t}")
            db.clear()
            small[t].append(db.one("SELECT pg_temp.loop(%s, 2000)", (t,)))
    assert db.one("SELECT count(*) FROM objcached.outbox") == 2000
    plain, hooked = statistics.median(small["plain"]), statistics.median(small["hooked"])
    print(f"single-row UPDATE by primary key, server time, median of 3x2000: without hook "
          f"{plain * 1e6:.0f} us, with hook {hooked * 1e6:.0f} us, "
          f"+{(hooked - plain) * 1e6:.0f} us a statement")


def test_statement_over_100k_keys_is_split(db):
    users_table(db)
    db.q(f"INSERT INTO users (id) SELECT generate_series(1, {ROWS + 1})")
    sizes = sorted(r[0] for r in db.q("SELECT cardinality(keys) FROM objcached.outbox"))
    assert sizes == [1, ROWS]
    assert db.one("SELECT count(DISTINCT k) FROM objcached.outbox, unnest(keys) k") == ROWS + 1
    db.clear()
    # 60,000 rows whose keys all change: 120,000 keys, split in two rows.
    db.q("DELETE FROM users WHERE id > 60000")
    db.clear()
    db.q("UPDATE users SET id = id + 1000000")
    sizes = [r[0] for r in db.q("SELECT cardinality(keys) FROM objcached.outbox ORDER BY id")]
    assert sizes == [ROWS, 20000]
    assert db.one("SELECT count(DISTINCT k) FROM objcached.outbox, unnest(keys) k") == 120000


# ---------------------------------------------------------------------- NOTIFY

def _notifies(conn, timeout=5.0, want=1):
    deadline = time.monotonic() + timeout
    while len(conn.notifies) < want and time.monotonic() < deadline:
        select.select([conn], [], [], max(0.0, deadline - time.monotonic()))
        conn.poll()
    out = [(n.channel, n.payload) for n in conn.notifies]
    del conn.notifies[:]
    return out


def test_listen_receives_one_notification_per_model_per_statement(db):
    users_table(db)
    db.q("UPDATE objcached.meta SET value = 'on' WHERE key = 'notify'")
    db.q("SELECT objcached.attach('users', 'UserName')")
    listener = db.connect()
    db.q("LISTEN objcached", conn=listener)
    db.q("INSERT INTO users (id) SELECT generate_series(1, 10)")
    got = _notifies(listener, want=2)
    assert sorted(got) == [("objcached", "User"), ("objcached", "UserName")]
    db.q("UPDATE users SET v = 1 WHERE false")
    assert _notifies(listener, timeout=0.5) == []
    # Nothing is delivered before COMMIT, and a rollback delivers nothing.
    writer = db.connect(autocommit=False)
    db.q("DELETE FROM users WHERE id = 1", conn=writer)
    assert _notifies(listener, timeout=0.3) == []
    writer.rollback()
    assert _notifies(listener, timeout=0.3) == []
    db.q("TRUNCATE users")
    assert sorted(_notifies(listener, want=2)) == [("objcached", "User"), ("objcached", "UserName")]


def test_notify_can_be_turned_off_and_reinstall_keeps_the_setting(db):
    users_table(db)
    db.q("UPDATE objcached.meta SET value = 'off' WHERE key = 'notify'")
    run_psql(db.server, db.name, INSTALL)
    assert db.one("SELECT value FROM objcached.meta WHERE key = 'notify'") == "off"
    listener = db.connect()
    db.q("LISTEN objcached", conn=listener)
    db.q("INSERT INTO users (id) VALUES (1)")
    db.q("TRUNCATE users")
    assert _notifies(listener, timeout=0.5) == []
    assert db.outbox() == [("User", ["1"]), ("User", None)]    # the outbox is what counts


# ---------------------------------------------------------------------- claim

def _fill(db, n):
    db.q("CREATE TABLE IF NOT EXISTS f (id bigint PRIMARY KEY)")
    if not db.one("SELECT count(*) FROM objcached.models WHERE model = 'F'"):
        db.q("SELECT objcached.attach('f', 'F')")
    db.clear()
    base = db.one("SELECT coalesce(max(id), 0) FROM f")
    for i in range(base + 1, base + n + 1):
        db.q("INSERT INTO f VALUES (%s)", (i,))
    return {str(i) for i in range(base + 1, base + n + 1)}


def _claim(db, conn, n=1000, max_keys=None):
    """[(id, model, keys)] claimed in conn's open transaction."""
    if max_keys is None:
        return db.q("SELECT id, model, keys FROM objcached.claim(%s)", (n,), conn=conn)
    return db.q("SELECT id, model, keys FROM objcached.claim(%s, %s)", (n, max_keys), conn=conn)


def test_claim_deletes_in_id_order_at_commit(db):
    keys = _fill(db, 5)
    c = db.connect(autocommit=False)
    got = _claim(db, c, 3)
    assert [r[0] for r in got] == sorted(r[0] for r in got)
    assert [r[2] for r in got] == [["1"], ["2"], ["3"]]
    assert db.one("SELECT pending_rows FROM objcached.pending()") == 5  # not committed yet
    c.commit()
    assert db.one("SELECT pending_rows FROM objcached.pending()") == 2
    rest = _claim(db, c)
    c.commit()
    assert {k for r in got + rest for k in r[2]} == keys
    assert _claim(db, c) == []
    c.commit()
    assert db.q("SELECT * FROM objcached.pending()") == [(0, None)]


def test_claim_respects_max_keys_but_always_makes_progress(db):
    users_table(db)
    db.q("INSERT INTO users (id) SELECT generate_series(1, 10)")
    db.q("INSERT INTO users (id) VALUES (11)")
    db.q("INSERT INTO users (id) VALUES (12)")
    c = db.connect(autocommit=False)
    first = _claim(db, c, 1000, max_keys=5)
    assert [len(r[2]) for r in first] == [10]       # bigger than the budget, taken alone
    second = _claim(db, c, 1000, max_keys=5)
    assert [len(r[2]) for r in second] == [1, 1]
    c.commit()
    assert "must be at least 1" in error_of(db, "SELECT * FROM objcached.claim(0)")


def test_concurrent_consumers_split_the_rows(db):
    keys = _fill(db, 10)
    c1, c2 = db.connect(autocommit=False), db.connect(autocommit=False)
    a = _claim(db, c1, 4)
    b = _claim(db, c2, 100)           # does not wait for c1: skips its rows
    assert len(a) == 4 and len(b) == 6
    assert not {r[0] for r in a} & {r[0] for r in b}
    c1.commit()
    c2.commit()
    assert {k for r in a + b for k in r[2]} == keys
    assert db.one("SELECT pending_rows FROM objcached.pending()") == 0


def test_many_consumers_while_writers_write(db):
    """Four consumers loop on claim() while two writers insert: every key is
    claimed exactly once."""
    db.q("CREATE TABLE f (id bigint PRIMARY KEY)")
    db.q("SELECT objcached.attach('f', 'F')")
    db.clear()
    writers_done = threading.Event()
    claimed, errors, lock = [], [], threading.Lock()

    def writer(start):
        try:
            conn = db.connect()
            with conn.cursor() as cur:
                for i in range(start, start + 400):
                    cur.execute("INSERT INTO f VALUES (%s)", (i,))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def consumer():
        try:
            conn = db.connect(autocommit=False)
            idle_after_done = 0
            while idle_after_done < 3:
                rows = _claim(db, conn, 7)
                conn.commit()
                with lock:
                    claimed.extend(rows)
                if not rows:
                    if writers_done.is_set():
                        idle_after_done += 1
                    time.sleep(0.005)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ws = [threading.Thread(target=writer, args=(s,)) for s in (1, 100_001)]
    cs = [threading.Thread(target=consumer) for _ in range(4)]
    for t in ws + cs:
        t.start()
    for t in ws:
        t.join(60)
    writers_done.set()
    for t in cs:
        t.join(60)
    assert not errors, errors
    ids = [r[0] for r in claimed]
    assert len(ids) == len(set(ids)) == 800
    assert sorted(int(r[2][0]) for r in claimed) == \
        list(range(1, 401)) + list(range(100_001, 100_401))
    assert db.one("SELECT pending_rows FROM objcached.pending()") == 0


def test_rolled_back_claim_leaves_rows_for_the_next(db):
    keys = _fill(db, 3)
    c1 = db.connect(autocommit=False)
    assert len(_claim(db, c1)) == 3
    c1.rollback()
    c2 = db.connect(autocommit=False)
    got = _claim(db, c2)
    c2.commit()
    assert {k for r in got for k in r[2]} == keys


def test_consumer_killed_mid_batch_leaves_rows_for_the_next(db):
    keys = _fill(db, 3)
    c1 = db.connect(autocommit=False)
    pid = c1.get_backend_pid()
    assert len(_claim(db, c1)) == 3
    c2 = db.connect(autocommit=False)
    assert _claim(db, c2) == []       # locked by c1: skipped, not waited for
    c2.commit()
    db.q("SELECT pg_terminate_backend(%s)", (pid,))

    def claim_some():
        rows = _claim(db, c2)
        c2.commit()
        return rows
    got = harness.wait_until(claim_some, timeout=10, what="rows of the killed consumer")
    assert {k for r in got for k in r[2]} == keys


def test_late_commit_of_an_earlier_writer_is_still_claimed(db):
    """Writer A takes an outbox id first but commits after writer B's later
    row was claimed: A's row is claimed by the next claim()."""
    _fill(db, 0)
    a = db.connect(autocommit=False)
    db.q("INSERT INTO f VALUES (1)", conn=a)               # outbox id n, uncommitted
    db.q("INSERT INTO f VALUES (2)")                       # outbox id n+1, committed
    c = db.connect(autocommit=False)
    first = _claim(db, c)
    c.commit()
    assert [r[2] for r in first] == [["2"]]
    a.commit()
    second = _claim(db, c)
    c.commit()
    assert [r[2] for r in second] == [["1"]]
    assert second[0][0] < first[0][0]


def test_claim_one_key_per_result_row(db):
    """The form docs/invalidation.md offers to consumers that do not parse arrays."""
    db.q("CREATE TABLE pages (slug text PRIMARY KEY)")
    db.q("SELECT objcached.attach('pages', 'Page', 'slug')")
    db.q("INSERT INTO pages VALUES ('a b'), ('say \"hi\"')")
    c = db.connect(autocommit=False)
    rows = db.q("SELECT c.id, c.model, k.key FROM objcached.claim(1000) c "
                "LEFT JOIN LATERAL unnest(c.keys) AS k(key) ON true", conn=c)
    c.commit()
    assert sorted((m, k) for _, m, k in rows if k is not None) == \
        [("Page", "a b"), ("Page", 'say "hi"')]
    assert [(m, k) for _, m, k in rows if k is None] == [("Page", None)]   # the attach row


def test_claim_requires_read_committed(db):
    _fill(db, 1)
    c = db.connect(autocommit=False)
    c.set_session(isolation_level="REPEATABLE READ")
    assert "run it in a READ COMMITTED transaction, not REPEATABLE READ" in \
        _error_as(db, c, "SELECT * FROM objcached.claim(10)")


def test_pending_reports_rows_and_age(db):
    assert db.q("SELECT * FROM objcached.pending()") == [(0, None)]
    _fill(db, 2)
    n, age = db.q("SELECT * FROM objcached.pending()")[0]
    assert n == 2 and age.total_seconds() >= 0


# -------------------------------------------------------------------- security

def test_search_path_hijack_changes_nothing(db):
    """A role puts look-alikes of everything the trigger uses in a schema
    ahead of pg_catalog on its search_path, and temp tables named like the
    transition tables: the outbox still gets the right rows, the look-alikes
    are never called, the real NOTIFY is sent."""
    users_table(db)
    db.q("UPDATE objcached.meta SET value = 'on' WHERE key = 'notify'")
    db.q("CREATE ROLE mallory LOGIN")
    db.q("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON users TO mallory")
    db.q("GRANT CREATE ON DATABASE " + db.name + " TO mallory")
    m = db.connect(user="mallory")
    db.q("""
        CREATE SCHEMA evil;
        CREATE TABLE evil.calls (what text);
        CREATE TABLE evil.outbox (id bigserial, model text, keys text[], created_at timestamptz);
        CREATE TABLE evil.models (model text, tbl regclass, key_column name, key_attnum int2,
                                  generation bigint);
        CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('pg_notify') $$;
        CREATE FUNCTION evil.array_agg(text) RETURNS text[] LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('array_agg') RETURNING ARRAY['x'] $$;
        CREATE FUNCTION evil.row_number() RETURNS bigint LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('row_number') RETURNING 1::bigint $$;
        CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('nextval') RETURNING 0::bigint $$;
        CREATE FUNCTION evil.texteq(text, text) RETURNS boolean LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('=') RETURNING true $$;
        CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq);
        CREATE TEMP TABLE objcached_new (id bigint);
        CREATE TEMP TABLE objcached_old (id bigint);
        INSERT INTO objcached_new VALUES (666);
        INSERT INTO objcached_old VALUES (666);
        CREATE TEMP TABLE outbox (id bigserial, model text, keys text[], created_at timestamptz);
        SET search_path = evil, pg_temp, pg_catalog, public;
    """, conn=m)
    listener = db.connect()
    db.q("LISTEN objcached", conn=listener)
    db.q("INSERT INTO users (id) VALUES (1), (2)", conn=m)
    db.q("UPDATE users SET id = 3 WHERE id = 2", conn=m)
    db.q("DELETE FROM users WHERE id = 1", conn=m)
    db.q("TRUNCATE users", conn=m)
    assert db.outbox() == [("User", ["1", "2"]), ("User", ["2", "3"]), ("User", ["1"]),
                           ("User", None)]
    assert db.q("SELECT * FROM evil.calls") == []
    assert db.one("SELECT count(*) FROM evil.outbox") == 0
    assert db.one("SELECT count(*) FROM evil.models") == 0
    assert ("objcached", "User") in _notifies(listener)


def test_role_without_grants_writes_but_cannot_touch_the_outbox(db):
    users_table(db)
    db.q("CREATE ROLE app LOGIN")
    db.q("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON users TO app")
    app = db.connect(user="app")
    db.q("INSERT INTO users (id) VALUES (1)", conn=app)
    db.q("UPDATE users SET v = 1", conn=app)
    db.q("DELETE FROM users", conn=app)
    db.q("TRUNCATE users", conn=app)
    assert db.outbox() == [("User", ["1"]), ("User", ["1"]), ("User", ["1"]), ("User", None)]
    for sql in ("SELECT * FROM objcached.outbox",
                "DELETE FROM objcached.outbox",
                "INSERT INTO objcached.outbox (model, keys) VALUES ('User', '{1}')",
                "UPDATE objcached.models SET generation = 0",
                "SELECT * FROM objcached.claim(10)",
                "SELECT * FROM objcached.pending()",
                "SELECT objcached.attach('users', 'Evil')",
                "SELECT objcached.detach('users', 'User')",
                "SELECT * FROM objcached.status"):
        assert "permission denied" in _error_as(db, app, sql), sql
    assert db.one("SELECT count(*) FROM objcached.outbox") == 4


def test_documented_consumer_grants_are_enough_and_no_more(db):
    users_table(db)
    db.q("CREATE ROLE oc LOGIN")
    db.q("""
        GRANT USAGE ON SCHEMA objcached TO oc;
        GRANT EXECUTE ON FUNCTION objcached.claim(integer, integer), objcached.pending(),
                                  objcached.hooked(regclass) TO oc;
        GRANT SELECT ON objcached.models, objcached.status TO oc;
    """)
    db.q("INSERT INTO users (id) VALUES (1)")
    oc = db.connect(user="oc", autocommit=False)
    assert db.q("SELECT model, table_name, key_column, key_type, hooked FROM objcached.status",
                conn=oc) == [("User", "public.users", "id", "bigint", True)]
    assert db.q("SELECT model, generation > 0 FROM objcached.models", conn=oc) == [("User", True)]
    assert db.one("SELECT objcached.hooked('users')", conn=oc)
    assert db.one("SELECT pending_rows FROM objcached.pending()", conn=oc) == 1
    assert [r[2] for r in _claim(db, oc)] == [["1"]]
    oc.commit()
    for sql in ("SELECT * FROM objcached.outbox", "DELETE FROM objcached.outbox",
                "SELECT objcached.attach('users', 'X')",
                "UPDATE objcached.models SET generation = 0"):
        assert "permission denied" in _error_as(db, oc, sql), sql
        oc.rollback()


def test_table_owner_cannot_run_code_as_the_hook_owner_through_a_cast(db):
    """A superuser attached a table another role owns: the generated hook runs
    as the superuser. The owner then turns the key column into a type of its
    own with a cast to text of its own (CREATE CAST needs only ownership of the
    type): the hook must read keys with the type's output function, as the WAL
    reader does, and never call the owner's cast as the superuser."""
    db.q("CREATE ROLE tabowner LOGIN")
    db.q("GRANT CREATE ON SCHEMA public TO tabowner")
    db.q("CREATE TABLE users (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0)")
    db.q("ALTER TABLE users OWNER TO tabowner")
    db.q("SELECT objcached.attach('users', 'User', 'id')")
    o = db.connect(user="tabowner")
    db.q("""
        CREATE TABLE public.cast_calls (who text);
        CREATE TYPE public.k AS ENUM ('1', '2', '3');
        CREATE FUNCTION public.k_text(public.k) RETURNS text LANGUAGE sql
            AS $$ INSERT INTO public.cast_calls VALUES (current_user) RETURNING 'x' $$;
        CREATE CAST (public.k AS text) WITH FUNCTION public.k_text(public.k);
        ALTER TABLE users ALTER COLUMN id TYPE public.k USING id::text::public.k;
    """, conn=o)
    db.clear()
    db.q("INSERT INTO users (id) VALUES ('1'), ('2')", conn=o)
    db.q("UPDATE users SET id = '3' WHERE id = '2'", conn=o)
    db.q("DELETE FROM users WHERE id = '1'", conn=o)
    assert db.q("SELECT who FROM public.cast_calls") == []
    assert db.outbox() == [("User", ["1", "2"]), ("User", ["2", "3"]), ("User", ["1"])]
    # the dynamic path (over 1,000 rows) too
    db.q("ALTER TABLE users DROP CONSTRAINT users_pkey", conn=o)
    db.clear()
    db.q("INSERT INTO users (id) SELECT '2' FROM generate_series(1, 1001)", conn=o)
    db.q("UPDATE users SET id = '1' WHERE id = '2'", conn=o)
    assert db.q("SELECT who FROM public.cast_calls") == []
    assert db.outbox() == [("User", ["2"]), ("User", ["1", "2"])]


def test_status_with_standard_conforming_strings_off(db):
    """A session (a role's default, an old client) with standard_conforming_strings
    off reads backslashes in plain string literals as escapes, also in the SQL
    functions it calls: status and hooked() must read the same."""
    users_table(db)
    c = db.connect()
    db.q("SET standard_conforming_strings = off; SET escape_string_warning = off", conn=c)
    assert db.q("SELECT model, hooked FROM objcached.status", conn=c) == [("User", True)]
    assert db.one("SELECT objcached.hooked('users')", conn=c)


def _error_as(db, conn, sql):
    with pytest.raises(psycopg2.Error) as info:
        db.q(sql, conn=conn)
    if not conn.autocommit:
        conn.rollback()
    return info.value.pgerror or str(info.value)


def test_trigger_functions_are_security_definer_with_pinned_search_path(db):
    users_table(db)
    rows = db.q("""
        SELECT p.proname, p.prosecdef, p.proconfig
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'objcached' ORDER BY 1""")
    assert rows
    names = {r[0] for r in rows}
    assert any(n.startswith("hook_") for n in names)
    for name, secdef, config in rows:
        assert config[0] == "search_path=pg_catalog, pg_temp", name
        if name.startswith("hook_") or name in (
                "claim", "pending", "hooked", "requeue", "feed_append", "feed_heartbeat",
                "feed_heartbeat_if_drained", "feed_prune", "feed_poll", "wal_check", "wal_tables",
                "_meta_changed"):
            assert secdef, name
    public_exec = db.q("""
        SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'objcached' AND has_function_privilege('public', p.oid, 'EXECUTE')""")
    assert public_exec == []


# ------------------------------------------------------- generated hook functions

def hook_functions(db):
    """{relation: trigger function} for every relation with objcached triggers."""
    rows = db.q("SELECT DISTINCT tgrelid::regclass::text, tgfoid::regproc::text FROM pg_trigger "
                "WHERE tgname LIKE 'objcached%' ORDER BY 1")
    return dict(rows)


def test_each_hooked_table_gets_its_own_generated_function(db):
    users_table(db)
    users_table(db, name="posts", model="Post")
    db.q("CREATE TABLE ev (id bigint, part int) PARTITION BY LIST (part)")
    db.q("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1)")
    db.q("SELECT objcached.attach('ev', 'Event')")
    fns = hook_functions(db)
    oid = {t: db.one("SELECT %s::regclass::oid", (t,)) for t in ("users", "posts", "ev")}
    assert fns == {"users": f"objcached.hook_{oid['users']}", "posts": f"objcached.hook_{oid['posts']}",
                   "ev": f"objcached.hook_{oid['ev']}", "ev_1": f"objcached.hook_{oid['ev']}"}
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'objcached%'") == 16
    # the models and key columns are constants of the function: no catalog lookup, no EXECUTE
    src = db.one("SELECT prosrc FROM pg_proc WHERE proname = %s", (f"hook_{oid['users']}",))
    assert "SELECT DISTINCT n.id AS k FROM objcached_new n" in src and "'User'" in src
    # a second model on a table writes its function again; detach takes it back out
    db.q("SELECT objcached.attach('users', 'UserName')")
    src2 = db.one("SELECT prosrc FROM pg_proc WHERE proname = %s", (f"hook_{oid['users']}",))
    assert "'UserName'" in src2
    db.q("SELECT objcached.detach('posts', 'Post')")
    assert db.one("SELECT count(*) FROM pg_proc WHERE proname = %s", (f"hook_{oid['posts']}",)) == 0
    assert "posts" not in hook_functions(db)
    run_psql(db.server, db.name, UNINSTALL)
    assert hook_functions(db) == {}


def test_reinstall_leaves_unchanged_hook_functions_alone(db):
    """install.sql writes a hook function again only when its source
    changed: writing it would make every session compile it again."""
    users_table(db)
    before = db.q("SELECT oid, xmin::text FROM pg_proc WHERE proname ~ '^hook_[0-9]+$'")
    run_psql(db.server, db.name, INSTALL)
    assert db.q("SELECT oid, xmin::text FROM pg_proc WHERE proname ~ '^hook_[0-9]+$'") == before


def test_changing_notify_rewrites_the_hook_functions(db):
    users_table(db)
    listener = db.connect()
    db.q("LISTEN objcached", conn=listener)
    db.q("INSERT INTO users (id) VALUES (1)")
    assert _notifies(listener, timeout=0.5) == []
    assert "c_notify   constant boolean := 'f'" in db.one(
        "SELECT prosrc FROM pg_proc WHERE proname ~ '^hook_[0-9]+$'")
    db.q("UPDATE objcached.meta SET value = 'on' WHERE key = 'notify'")
    assert "c_notify   constant boolean := 't'" in db.one(
        "SELECT prosrc FROM pg_proc WHERE proname ~ '^hook_[0-9]+$'")
    db.q("INSERT INTO users (id) VALUES (2)")
    assert _notifies(listener) == [("objcached", "User")]
    db.q("DELETE FROM objcached.meta WHERE key = 'notify'")       # no setting: notify (as v1)
    db.q("INSERT INTO users (id) VALUES (3)")
    assert _notifies(listener) == [("objcached", "User")]
    assert db.outbox() == [("User", ["1"]), ("User", ["2"]), ("User", ["3"])]


def test_renamed_key_column_and_a_new_column_with_the_old_name(db):
    """The generated statements name the key column; after a rename they
    would read whatever column has the old name now. The hook checks the
    name behind the attribute number first and goes the dynamic way."""
    users_table(db)
    db.q("INSERT INTO users (id) VALUES (1)")
    db.q("ALTER TABLE users RENAME COLUMN id TO user_id")
    db.q("ALTER TABLE users ADD COLUMN id bigint DEFAULT 999")
    db.clear()
    db.q("INSERT INTO users (user_id) VALUES (2)")
    db.q("UPDATE users SET v = 1 WHERE user_id = 1")
    db.q("DELETE FROM users WHERE user_id = 2")
    assert db.outbox() == [("User", ["2"]), ("User", ["1"]), ("User", ["2"])]
    db.q("SELECT objcached.attach('users', 'User', 'user_id')")   # written again: static again
    assert "n.user_id" in db.one("SELECT prosrc FROM pg_proc WHERE proname ~ '^hook_[0-9]+$'")
    db.clear()
    db.q("UPDATE users SET v = 2")
    assert db.outbox() == [("User", ["1"])]


@pytest.mark.parametrize("table, column", [
    ('"t\nx"', '"k\nDROP TABLE victim; --"'),
    ('"t*/ x"', '"*/ k"'),
    ('"t$$"', '"$$"'),
    ('"$src$"', '"$src$ k $gen$"'),
    ("\"t'q\"", "\"k'; DROP TABLE victim; --\""),
    ('"t\\"', '"k\\n"'),
    ('"T ""q"""', '"K ""q"""'),
])
def test_hostile_names_cannot_change_the_generated_code(db, table, column):
    db.q("CREATE TABLE victim (i int)")
    db.q(f"CREATE TABLE {table} ({column} text PRIMARY KEY, v int)")
    tbl = db.one(f"SELECT '{table.replace(chr(39), chr(39) * 2)}'::regclass::text")
    col = db.one("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1",
                 (tbl,))
    db.q("SELECT objcached.attach(%s, 'Odd', %s)", (tbl, col))
    db.clear()
    db.q(f"INSERT INTO {table} VALUES ('a''1', 0), ('b', 0)")
    db.q(f"UPDATE {table} SET {column} = 'c' WHERE {column} = 'b'")
    db.q(f"DELETE FROM {table} WHERE v = 0 AND {column} = 'a''1'")
    assert db.outbox() == [("Odd", ["a'1", "b"]), ("Odd", ["b", "c"]), ("Odd", ["a'1"])]
    assert db.one("SELECT to_regclass('victim') IS NOT NULL")
    assert db.q("SELECT hooked FROM objcached.status") == [(True,)]


def test_static_and_dynamic_paths_agree(db):
    """Statements of up to 1,000 rows take the generated statements, larger
    ones the dynamic path: same keys either way, with a unique key and
    without."""
    db.q("CREATE TABLE tags (id bigint PRIMARY KEY, owner bigint)")
    db.q("SELECT objcached.attach('tags', 'Tag')")
    db.q("SELECT objcached.attach('tags', 'TagOwner', 'owner')")
    for n in (1000, 1001):
        db.q("TRUNCATE tags")
        db.clear()
        db.q(f"INSERT INTO tags SELECT g, g % 7 FROM generate_series(1, {n}) g")
        db.q("UPDATE tags SET id = id + 5000 WHERE id % 2 = 0")
        db.q("DELETE FROM tags WHERE owner = 3")
        got = db.outbox()
        ids = [str(i) for i in range(1, n + 1)]
        evens = [str(i) for i in range(2, n + 1, 2)]
        moved = sorted(evens + [str(int(i) + 5000) for i in evens])
        assert got[0] == ("Tag", sorted(ids)), n
        assert got[1] == ("TagOwner", sorted(str(i) for i in range(7))), n
        assert got[2] == ("Tag", moved), n
        assert got[3] == ("TagOwner", sorted({str(int(i) % 7) for i in evens})), n
        deleted = [str(i if i % 2 else i + 5000) for i in range(1, n + 1) if i % 7 == 3]
        assert got[4] == ("Tag", sorted(deleted)), n
        assert got[5] == ("TagOwner", ["3"]), n


def test_child_of_two_hooked_parents(db):
    db.q("CREATE TABLE a (id bigint PRIMARY KEY)")
    db.q("CREATE TABLE b (id bigint PRIMARY KEY)")
    db.q("CREATE TABLE ab () INHERITS (a, b)")
    db.q("SELECT objcached.attach('a', 'A')")
    db.q("SELECT objcached.attach('b', 'B')")
    db.clear()
    db.q("INSERT INTO ab VALUES (1)")
    assert db.outbox() == [("A", ["1"]), ("B", ["1"])]
    fns = hook_functions(db)
    assert len({fns["a"], fns["b"], fns["ab"]}) == 3     # ab has a function of its own
    db.q("SELECT objcached.detach('b', 'B')")
    db.clear()
    db.q("INSERT INTO ab VALUES (2)")
    assert db.outbox() == [("A", ["2"])]
    assert hook_functions(db)["ab"] == hook_functions(db)["a"]

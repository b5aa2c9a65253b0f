"""pytest fixtures for objcached's integration tests.

Each test file runs in its own pytest process (ctest runs them in parallel),
so each starts its own servers on free loopback ports:

- `pg`        (session)  a throwaway PostgreSQL cluster with schema.sql loaded
- `mc_pool`   (session)  two memcached servers
- `objcached` (function) a daemon with STANDARD models over pg + mc_pool
- `objcached_factory` (function) start more daemons with config overrides:
      oc = objcached_factory({"objcached": {"max_keys": 10}})
  An override value of None removes the key; a whole section can be added.
- `ref`       (session)  reference JSON straight from PostgreSQL

Before each objcached daemon fixture, both memcached servers are flushed,
and servers a failed test left stopped are started again. At teardown each
daemon gets SIGTERM and must exit 0 with no sanitizer report, or the test
errors. Nothing is skipped: a server that cannot start is an error.

OBJCACHED_BIN names the daemon (ctest sets it to the built binary).
"""

import os
import signal

import pytest

import consistency as oc_c
import harness

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "schema.sql")

# The standard models: one per key type, with and without `columns`.
MODELS = {
    "User": {"table": "public.users", "key": "id", "key_type": "bigint",
             "columns": "id, name, email, created_at, score, note",
             "ttl": "1h", "missing_ttl": "30s"},
    "Counter": {"table": "counters", "key_type": "integer"},
    "Doc": {"table": "docs", "key_type": "uuid", "columns": "id, title, body"},
    "Page": {"table": "pages", "key": "slug", "key_type": "text"},
}


def standard_config(pg, mc_pool):
    """The config dict every test starts from ([objcached] listen and
    unix_socket are filled in by harness.Objcached)."""
    config = {
        "objcached": {"load_timeout": "5s", "log_level": "info"},
        "memcached": {"servers": " ".join(m.address for m in mc_pool),
                      "retry_timeout": "500ms"},
        "postgresql": {"conninfo": pg.conninfo, "connections": "2"},
    }
    for name, model in MODELS.items():
        config[f"model {name}"] = dict(model)
    return config


def merge_config(base, overrides):
    """A copy of base with overrides applied ({section: {key: value}}; a
    value None removes the key, a section None removes the section)."""
    out = {k: dict(v) for k, v in base.items()}
    for section, keys in (overrides or {}).items():
        if keys is None:
            out.pop(section, None)
            continue
        sec = out.setdefault(section, {})
        for k, v in keys.items():
            if v is None:
                sec.pop(k, None)
            else:
                sec[k] = v
    return out


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="K/N",
                     help="run only the K-th of N shares of the collected tests (every "
                          "N-th test, from the K-th): ctest runs a long file as N tests")


def pytest_collection_modifyitems(config, items):
    """--shard K/N keeps items K-1, K-1+N, ...: round robin in file order,
    so a file's slow tests (grouped by topic) spread over the shares. Each
    share starts its own servers, so shares run in parallel."""
    shard = config.getoption("--shard")
    if not shard:
        return
    try:
        k, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard {shard!r}: want K/N, e.g. 1/2") from None
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--shard {shard!r}: K must be 1..N")
    kept = [it for i, it in enumerate(items) if i % n == k - 1]
    config.hook.pytest_deselected(items=[it for i, it in enumerate(items) if i % n != k - 1])
    items[:] = kept


def pytest_configure(config):
    harness.install_signal_handlers()
    # Well inside ctest's 600 s TIMEOUT, so a hang stops our servers itself.
    seconds = float(os.environ.get("OC_TEST_WATCHDOG", "420"))
    config._oc_watchdog = harness.Watchdog(seconds, "pytest")


def pytest_unconfigure(config):
    dog = getattr(config, "_oc_watchdog", None)
    if dog:
        dog.cancel()


@pytest.fixture(scope="session")
def objcached_bin():
    path = os.environ.get("OBJCACHED_BIN")
    if not path:
        raise RuntimeError("OBJCACHED_BIN is not set: point it at the objcached binary "
                           "(ctest sets it; by hand: OBJCACHED_BIN=build/objcached)")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"OBJCACHED_BIN={path!r} is not an executable file")
    return path


def throwaway_cluster(settings=None):
    """A throwaway PostgreSQL with the tests' schema loaded, stopped and
    removed when the generator closes: the body of the session's `pg`, and
    of the module fixtures that need a cluster of their own (settings, or a
    server they take down)."""
    server = harness.Postgres(dbname="objcached_test", settings=settings)
    try:
        server.start()
        server.execute_file(SCHEMA)
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg():
    yield from throwaway_cluster()


@pytest.fixture(scope="session")
def mc_pool():
    servers = []
    try:
        for _ in range(2):
            servers.append(harness.Memcached().start())
        yield servers
    finally:
        for s in servers:
            s.cleanup()


class Reference:
    """The JSON objcached must return, computed by PostgreSQL itself on a
    session with the settings objcached pins (TimeZone=UTC, ...)."""

    def __init__(self, pg):
        self.pg = pg
        self.conn = pg.connect()

    def sql(self, model):
        m = MODELS[model]
        key = m.get("key", "id")
        cast = {"uuid": "::uuid", "text": "::text"}.get(m.get("key_type", "bigint"), "")
        if "columns" in m:
            return (f"SELECT row_to_json(t)::text FROM (SELECT {m['columns']} "
                    f"FROM {m['table']} WHERE {key} = %s{cast}) t")
        return f"SELECT row_to_json(t)::text FROM {m['table']} t WHERE t.{key} = %s{cast}"

    def json(self, model, ident):
        """bytes of row_to_json for one id, or None if there is no such row."""
        import psycopg2
        for attempt in (1, 2):
            try:
                if self.conn.closed:
                    self.conn = self.pg.connect()
                with self.conn.cursor() as cur:
                    cur.execute(self.sql(model), (ident,))
                    row = cur.fetchone()
                return row[0].encode("utf-8") if row else None
            except psycopg2.Error:
                if attempt == 2:
                    raise
                # the server may have restarted under us: reconnect once
                self.conn.close()

    def close(self):
        self.conn.close()


@pytest.fixture(scope="session")
def ref(pg):
    r = Reference(pg)
    yield r
    r.close()


@pytest.fixture
def base_config(pg, mc_pool):
    """standard_config(pg, mc_pool): a fresh dict each time."""
    return standard_config(pg, mc_pool)


@pytest.fixture
def objcached_factory(pg, mc_pool, objcached_bin):
    """start(overrides=None, config=None, **kw) -> a started harness.Objcached.

    overrides are merged into standard_config(); config (a dict or INI text)
    replaces it entirely. kw goes to harness.Objcached (ready_timeout, env)."""
    # Heal what an earlier failing test may have left down, then start clean.
    if not pg.running:
        pg.start()
    for m in mc_pool:
        m.start()
        m.flush_all()
    daemons = []

    def start(overrides=None, config=None, **kw):
        if config is None:
            config = merge_config(standard_config(pg, mc_pool), overrides)
        d = harness.Objcached(config, binary=objcached_bin, **kw)
        daemons.append(d)
        return d.start()

    yield start
    stop_checked(daemons)


def stop_checked(daemons):
    """Stop every daemon (exit 0 and a clean log checked) and clean up; one
    AssertionError naming every one that did not shut down cleanly."""
    errors = []
    for d in daemons:
        try:
            d.stop(check=True)
        except harness.HarnessError as e:
            errors.append(str(e))
        finally:
            d.cleanup()
    if errors:
        raise AssertionError("objcached did not shut down cleanly:\n" + "\n\n".join(errors))


@pytest.fixture
def objcached(objcached_factory):
    """A daemon with the standard configuration."""
    return objcached_factory()


# Sidecars started by a test that runs several (test_near, test_wal, test_sampler,
# test_verify, test_write_path); test_consistency has its own, behind its proxies.
@pytest.fixture
def fleet(pg, mc_pool, objcached_bin):
    """Sidecars for this test; memcached healed and flushed first."""
    if not pg.running:
        pg.start()
    for m in mc_pool:
        if m.alive():
            m.kill(signal.SIGCONT)   # a failed test may have left it frozen
    yield from oc_c.run_fleet(mc_pool, objcached_bin)

"""Real servers for objcached's integration tests, the demo and bench/.

This module starts throwaway PostgreSQL, memcached and objcached processes
(and pgbouncer, for the tests that put one in front of PostgreSQL) on free
loopback ports, talks to them, and makes sure they are stopped
again. It has no pytest dependency: tests/integration/conftest.py wraps it
in fixtures, scripts/demo.py and bench/ use it directly.

    from harness import Postgres, Memcached, Objcached, McRaw

    with Postgres() as pg, Memcached() as mc:
        pg.execute("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
        conf = {"memcached": {"servers": mc.address},
                "postgresql": {"conninfo": pg.conninfo},
                "model User": {"table": "users"}}
        with Objcached(conf) as oc:
            c = oc.client()
            values, terminal = c.get_multi(["User:1"])

Rules every helper here follows:
- Every blocking wait has a timeout (sockets 10 s by default, process
  start-up 30 s, shutdowns 10-60 s); a timeout raises HarnessError (or
  socket.timeout from McRaw) with whatever the process logged.
- Every process started is registered; they are all stopped at interpreter
  exit (atexit), on SIGTERM/SIGINT once install_signal_handlers() ran, when
  a Watchdog fires, and by each class's context manager.
- Only 127.0.0.1 and unix sockets are ever listened on.
- Running as root, PostgreSQL runs as the 'postgres' system user (via
  `runuser -u postgres --`) and memcached as 'nobody'; as a normal user
  both run as that user.
"""

import atexit
import ctypes
import fcntl
import faulthandler
import glob
import os
import shlex
import pwd
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple

__all__ = [
    "HarnessError", "free_port", "port_accepts", "wait_until", "Watchdog",
    "install_signal_handlers", "stop_all", "render_ini", "Postgres",
    "Memcached", "Pgbouncer", "Objcached", "McRaw", "Value", "Reply", "SESSION_OPTIONS",
    "CLIENT_OPTIONS", "check_config",
]

DEFAULT_TIMEOUT = 10.0   # seconds, every socket operation and most waits
START_TIMEOUT = float(os.environ.get("OC_START_TIMEOUT", "30"))  # seconds to come up (ASan and valgrind are slow)
IS_ROOT = os.geteuid() == 0

# What objcached pins on each PostgreSQL session (docs/protocol.md), so that
# a reference row_to_json() computed by a test is byte-for-byte comparable.
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,MDY "
                   "-c IntervalStyle=postgres -c extra_float_digits=1")
# Our own connections also give up on a lock after 30 s instead of hanging
# (a test holding a table lock must not deadlock its own reference reads).
CLIENT_OPTIONS = SESSION_OPTIONS + " -c lock_timeout=30s"

_SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)"
    r"|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)"
    r"|runtime error: "
    r"|==\d+== ERROR SUMMARY: [1-9]")


# A log line as oc_log writes it (docs/operations.md, "Logs"): ts=, level=,
# then key=value pairs whose values are bare or quoted with no quote inside
# (oc_log_clean). A line that does not parse lost a field to text that was
# not cleaned (a quote in a server's message, a config value): a forged or
# broken field for whoever reads the log. Lines cut at OC_LOG_LINE_MAX
# (2048 bytes with their newline) may end inside a quoted value.
_LOG_LINE_RE = re.compile(
    r'(?:ts=\S+ )?level=(?:error|warn|info|debug)'
    r'(?: [A-Za-z_][A-Za-z0-9_.-]*=(?:"[^"\\]*"|[^\s"]*))*')
_LOG_LINE_MAX = 2046


def malformed_log_lines(text):
    """The lines of an objcached log that are oc_log's but do not parse as
    key=value pairs (see _LOG_LINE_RE)."""
    return [line for line in text.splitlines()
            if line.startswith(("ts=", "level="))
            and len(line.encode("utf-8", "replace")) < _LOG_LINE_MAX
            and not _LOG_LINE_RE.fullmatch(line)]


class HarnessError(RuntimeError):
    """A server could not be started, stopped or reached."""


# --------------------------------------------------------------------------
# Process registry, watchdog, signals


_live = []                      # objects with an _emergency_stop() method
_live_lock = threading.RLock()


def _register(obj):
    with _live_lock:
        if obj not in _live:
            _live.append(obj)


def _unregister(obj):
    with _live_lock:
        if obj in _live:
            _live.remove(obj)


def stop_all():
    """Stop every process this module started and still owns, newest first.

    Used at exit and by the watchdog; errors are printed, never raised."""
    with _live_lock:
        objs = list(reversed(_live))
    for obj in objs:
        try:
            obj._emergency_stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"harness: stopping {obj!r} failed: {e}", file=sys.stderr)
        _unregister(obj)


atexit.register(stop_all)


_signals_installed = False


def install_signal_handlers():
    """On SIGTERM/SIGHUP stop everything we started, then exit 128+signal.

    A Python signal handler runs in the main thread between bytecodes, so
    it is delayed while the main thread sits in a C call that retries on
    EINTR by itself (libpq); socket waits here all time out, and a Watchdog
    covers the rest. (Blocking the signals for a sigwait thread would be
    prompter, but every child, including those tests start themselves, would
    inherit the blocked mask and ignore SIGTERM.) SIGINT is left to Python:
    KeyboardInterrupt unwinds the context managers and atexit runs. Call
    from the main thread."""
    global _signals_installed
    if _signals_installed:
        return
    _signals_installed = True

    def handler(signum, _frame):
        print(f"harness: signal {signum}, stopping servers", file=sys.stderr, flush=True)
        stop_all()
        os._exit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


class Watchdog:
    """Kill everything if a run takes longer than `seconds`.

    When it fires it prints every thread's stack, stops every registered
    process and exits the interpreter with status 124, so a hung test can
    never leave servers behind or hang CI. cancel() disarms it."""

    def __init__(self, seconds, what="run"):
        self.seconds = seconds
        self.what = what
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self):
        try:
            sys.__stderr__.write(f"\nharness: watchdog: {self.what} still running after "
                                 f"{self.seconds:.0f} s; stacks follow, then everything "
                                 "is stopped\n")
            sys.__stderr__.flush()
            # fd 2 itself: pytest may have swapped sys.stderr for a capture
            # object without a file descriptor (a soak's watchdog once died
            # here and stopped nothing)
            faulthandler.dump_traceback(file=2, all_threads=True)
        except Exception as e:  # noqa: BLE001 - stopping matters more than stacks
            os.write(2, f"harness: watchdog: no stacks ({e!r})\n".encode())
        finally:
            stop_all()
            os._exit(124)

    def cancel(self):
        self._timer.cancel()


# --------------------------------------------------------------------------
# Small helpers


_handed_out = set()
_port_lock = threading.Lock()
_port_registry = None       # the open file whose byte locks reserve ports
_port_rng = random.Random()  # its own: a test that seeds `random` must not steer it
PORT_REGISTRY = os.path.join(tempfile.gettempdir(), "objcached-test-ports.lock")
LOWEST_PORT = 15000


def _ephemeral_low():
    """The lowest port the kernel picks for bind(0) and for the source port
    of an outgoing connection (32768 on Debian)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _reserve(port):
    """Takes the lock on byte `port` of the shared registry: held until this
    process ends (the kernel drops it then, even on a kill), refused while
    another test process holds it."""
    global _port_registry
    if _port_registry is None:
        _port_registry = os.open(PORT_REGISTRY, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(_port_registry, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port, os.SEEK_SET)
    except OSError:
        return False
    return True


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    """A TCP port on 127.0.0.1, free now and this process's until it ends.

    Chosen below the kernel's ephemeral range, so that neither another
    process's bind(0) nor the source port of any outgoing connection can take
    it while a test has its server stopped (a PostgreSQL restarted on the
    same port once failed to start in CI, most likely for this reason: its
    log was not shown), and reserved
    across the suite's parallel test processes by a byte lock in
    PORT_REGISTRY. Never hands out the same port twice in one process. When
    the ephemeral range starts too low to leave room, falls back to a port
    the kernel chooses; the server classes then retry on a new port when
    their first start fails to bind."""
    with _port_lock:
        low = _ephemeral_low()
        if low - LOWEST_PORT >= 4096:
            for _ in range(500):
                port = _port_rng.randrange(LOWEST_PORT, low)
                if port not in _handed_out and _reserve(port) and _bindable(port):
                    _handed_out.add(port)
                    return port
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise HarnessError("no free port found")


def port_accepts(port, host="127.0.0.1", timeout=0.2):
    """True if a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_to_eof(sock, timeout=DEFAULT_TIMEOUT):
    """Everything a socket receives until the peer closes: (data, True); or,
    if it stays open `timeout` seconds after the last byte, (data, False)."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return buf, True
            buf += chunk
    except socket.timeout:
        return buf, False


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=0.05, what="condition"):
    """Call predicate() until it returns a true value, which is returned.

    Raises HarnessError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            if callable(what):    # a description of the state, made at the timeout
                what = what()
            raise HarnessError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def reload(oc, text):
    """Write `text` as oc's configuration and SIGHUP it: True if it was
    taken (reloads counted), False if refused (reload_errors counted)."""
    with open(oc.config_path, "w") as f:
        f.write(text)
    before = oc.stats()
    oc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: oc.stats()["reloads"] + oc.stats()["reload_errors"] >
               before["reloads"] + before["reload_errors"], what="the reload")
    return oc.stats()["reloads"] > before["reloads"]


def edit(text, section, key, value):
    """Set `key = value` in [section] of INI text (None removes the key)."""
    out, cur, done = [], None, False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            if cur == section and not done and value is not None:
                out.append(f"{key} = {value}")
                done = True
            cur = s[1:-1]
        elif cur == section and s.split("=")[0].strip() == key:
            if value is not None:
                out.append(f"{key} = {value}")
            done = True
            continue
        out.append(line)
    if cur == section and not done and value is not None:
        out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"


def render_ini(config):
    """INI text from {section: {key: value}} (insertion order kept).

    Values are written with str(); a value of None leaves the key out, so an
    override can remove a default."""
    out = []
    for section, keys in config.items():
        out.append(f"[{section}]")
        for key, value in keys.items():
            if value is not None:
                out.append(f"{key} = {value}")
        out.append("")
    return "\n".join(out)


# A memory file system offered for the servers' directories: used when it
# has this much room (a container's /dev/shm is often 64 MB).
FAST_TMPDIR_MIN_FREE = 4 << 30


def _fast_tmpdir():
    """$OC_TEST_FAST_TMPDIR (the suite's ctest runs offer /dev/shm: see
    tests/CMakeLists.txt) if it is a writable directory with
    FAST_TMPDIR_MIN_FREE bytes free, else None. PostgreSQL's files there
    cost no disk file system work: a test's CREATE and DROP DATABASE make
    and remove hundreds of files, and ext4's inode bookkeeping of that churn
    (recently_deleted, its block lookups) was a good part of the servers'
    CPU in the suite's CPU-bound ASan pass (perf, 2026-12-07: test_write_path
    used 84-87 CPU s with /dev/shm against 94 on disk). Only speed changes:
    the harness runs PostgreSQL with fsync off either way."""
    path = os.environ.get("OC_TEST_FAST_TMPDIR")
    if not path or len(path) > 40 or not os.access(path, os.W_OK | os.X_OK):
        return None
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return path if st.f_bavail * st.f_frsize >= FAST_TMPDIR_MIN_FREE else None


def _short_tmpdir():
    # Unix socket paths are limited to 107 bytes: stay short.
    fast = _fast_tmpdir()
    if fast:
        return fast
    base = tempfile.gettempdir()
    return base if len(base) <= 40 else "/tmp"


def _set_pdeathsig():
    # Runs in the child between fork and exec: if the test process dies, so
    # does the server. (Cleared by a later setuid, e.g. memcached -u.)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


def _child_preexec(detached=False):
    """preexec_fn for every child we start. detached: the child is meant to
    outlive us (demo --keep), so it is not tied to our life."""
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only
    # use it for processes started from the main thread.
    if not detached and threading.current_thread() is threading.main_thread():
        return _set_pdeathsig
    return None


def _listen_fds_preexec(fds, then):
    """preexec_fn that puts `fds` at 3, 4, ... in the child (first copied
    above 100, so that one already at 3 or 4 is not overwritten before it
    is moved), then runs `then`. Popen closes the rest after it runs."""
    def run():
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)   # inheritable: no FD_CLOEXEC
            os.close(fd)
        if then:
            then()
    return run


def _kill_and_remove(proc, path):
    """An emergency stop: SIGKILL proc if it still runs, remove its directory."""
    if proc is not None and proc.poll() is None:
        _stop_process(proc, signal.SIGKILL, 5)
    shutil.rmtree(path, ignore_errors=True)


def _read_text(path, limit=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    if limit is not None and len(data) > limit:
        data = b"...\n" + data[-limit:]
    return data.decode("utf-8", "replace")


def wait_stopped(pid, timeout=10.0):
    """After SIGSTOP: wait until every thread of `pid` is stopped. A stop is
    not synchronous for a threaded process: one thread takes the signal and
    stops the others when it runs, so on a loaded machine another thread
    (memcached's worker) can still answer a request sent right after the
    kill (seen: a test's "frozen" memcached answered its get)."""
    deadline = time.monotonic() + timeout
    task_dir = f"/proc/{pid}/task"
    while True:
        states = []
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                pass
        if states and all(st in ("T", "t") for st in states):
            return
        if time.monotonic() >= deadline:
            raise HarnessError(f"pid {pid} not stopped after {timeout} s: {states}")
        time.sleep(0.005)


def _stop_process(proc, sig=signal.SIGTERM, timeout=10.0):
    """Signal proc, wait up to `timeout`, then SIGKILL. Returns the status."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


# --------------------------------------------------------------------------
# PostgreSQL


def find_pg_bindir():
    """Directory with initdb/pg_ctl: $PG_BINDIR, the newest
    /usr/lib/postgresql/N/bin (Debian), or wherever initdb is on PATH."""
    env = os.environ.get("PG_BINDIR")
    if env:
        return env
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(p):
        try:
            return int(p.split("/")[4])
        except (IndexError, ValueError):
            return 0
    if found:
        return os.path.dirname(max(found, key=version))
    which = shutil.which("initdb")
    if which:
        return os.path.dirname(which)
    raise HarnessError("PostgreSQL binaries not found (apt-get install postgresql-15, "
                       "or set PG_BINDIR)")


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:port and a unix socket.

    start() runs initdb in a fresh temporary directory the first time
    (trust authentication, superuser 'postgres', fsync off, pg_stat_statements
    preloaded and track=all), starts the server with `pg_ctl -w` and creates
    `dbname` with the pg_stat_statements extension. stop() and start() again
    reuse the same data directory and port, for "PostgreSQL down and back"
    tests. cleanup() stops it and removes the directory.

    As root, every server command runs as the 'postgres' system user via
    `runuser -u postgres --`; as anyone else, as that user.

    ssl=True turns TLS on (`ssl = on`) with a self-signed certificate that
    initdb's first start makes with the openssl CLI (server.crt, and
    server.key of mode 0600 owned by the server's user, as PostgreSQL
    demands); ssl_conninfo() then names a TCP session with sslmode=require.

    hba: pg_hba.conf lines put before initdb's (which trust everything),
    e.g. a `hostgssenc ... gss` line (test_gssapi.py)."""

    SUPERUSER = "postgres"

    def __init__(self, dbname="objcached_test", port=None, parent_dir=None,
                 bindir=None, settings=None, ssl=False, hba=()):
        self.dbname = dbname
        self.ssl = ssl
        self.hba = list(hba)
        self._auto_port = port is None
        self.port = port or free_port()
        self.parent_dir = parent_dir or _short_tmpdir()
        self.bindir = bindir or find_pg_bindir()
        self.settings = dict(settings or {})
        self.dir = None          # the temporary directory; also the socket dir
        self.running = False
        self._db_created = False
        if IS_ROOT:
            try:
                self._pw = pwd.getpwnam("postgres")
            except KeyError:
                raise HarnessError("running as root needs the 'postgres' system user "
                                   "(apt-get install postgresql-15)") from None
        else:
            self._pw = None

    def __repr__(self):
        return f"Postgres(port={self.port}, dir={self.dir})"

    # -- paths and commands

    @property
    def datadir(self):
        return os.path.join(self.dir, "data")

    @property
    def logfile(self):
        return os.path.join(self.dir, "postgresql.log")

    @property
    def conninfo(self):
        """libpq connection string for the test database (unix socket)."""
        return (f"host={self.dir} port={self.port} dbname={self.dbname} "
                f"user={self.SUPERUSER}")

    @property
    def tcp_conninfo(self):
        return (f"host=127.0.0.1 port={self.port} dbname={self.dbname} "
                f"user={self.SUPERUSER}")

    def ssl_conninfo(self, dbname=None):
        """libpq connection string over TCP with TLS required (ssl=True)."""
        return (f"host=127.0.0.1 port={self.port} dbname={dbname or self.dbname} "
                f"user={self.SUPERUSER} sslmode=require")

    def _make_certificate(self):
        crt = os.path.join(self.datadir, "server.crt")
        key = os.path.join(self.datadir, "server.key")
        proc = subprocess.run(["openssl", "req", "-new", "-x509", "-nodes", "-days", "2",
                               "-newkey", "rsa:2048", "-subj", "/CN=127.0.0.1",
                               "-keyout", key, "-out", crt],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60, check=False)
        if proc.returncode != 0:
            raise HarnessError("openssl req failed:\n" + proc.stdout.decode("utf-8", "replace"))
        os.chmod(key, 0o600)
        if self._pw:
            for path in (crt, key):
                os.chown(path, self._pw.pw_uid, self._pw.pw_gid)

    def _cmd(self, args, timeout=120, check=True):
        exe = os.path.join(self.bindir, args[0])
        argv = [exe] + list(args[1:])
        if IS_ROOT:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        proc = subprocess.run(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
        out = proc.stdout.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise HarnessError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{out}"
                               f"\n--- server log ---\n{self.log(8000)}")
        return proc.returncode, out

    def log(self, limit=None):
        """The server log (the last `limit` bytes)."""
        return _read_text(self.logfile, limit) if self.dir else ""

    # -- lifecycle

    def _init(self):
        self.dir = tempfile.mkdtemp(prefix="oc-pg-", dir=self.parent_dir)
        os.chmod(self.dir, 0o755)
        if self._pw:
            os.chown(self.dir, self._pw.pw_uid, self._pw.pw_gid)
            rc, _ = self._cmd(["initdb", "--version"], check=False)
            if rc != 0:
                raise HarnessError(f"the postgres user cannot use {self.dir}: "
                                   "is a parent directory closed to it?")
        _register(self)
        self._cmd(["initdb", "-D", self.datadir, "-A", "trust", "-U", self.SUPERUSER,
                   "-E", "UTF8", "--no-locale", "--no-sync"])
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\ninclude 'harness.conf'\n")
        if self.ssl:
            self._make_certificate()
        if self.hba:
            path = os.path.join(self.datadir, "pg_hba.conf")
            with open(path) as f:
                rest = f.read()
            with open(path, "w") as f:
                f.write("\n".join(self.hba) + "\n" + rest)

    def _write_settings(self):
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            "max_connections": "100",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            # objcached's WAL source reads a logical replication slot
            "wal_level": "logical",
            "max_wal_senders": "20",
            "max_replication_slots": "20",
        }
        if self.ssl:
            settings["ssl"] = "on"   # server.crt and server.key: _make_certificate
        settings.update(self.settings)
        path = os.path.join(self.datadir, "harness.conf")
        with open(path, "w") as f:
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        if self._pw:
            os.chown(path, self._pw.pw_uid, self._pw.pw_gid)

    def start(self, timeout=60):
        """initdb (first time), start the server, create the database."""
        if self.dir is None:
            self._init()
        for attempt in range(3):
            self._write_settings()
            rc, out = self._cmd(["pg_ctl", "-D", self.datadir, "-l", self.logfile,
                                 "-w", "-t", str(int(timeout)), "start"],
                                timeout=timeout + 30, check=False)
            if rc == 0:
                break
            log = self.log(4000)
            if (self._auto_port and not self._db_created and attempt < 2
                    and ("could not bind" in log or "could not create any TCP/IP" in log)):
                self.port = free_port()  # someone took our port: try another
                continue
            raise HarnessError(f"pg_ctl start failed (exit {rc}):\n{out}\n"
                               f"--- server log ---\n{log}")
        self.running = True
        if not self._db_created:
            self._create_database()
        return self

    def _create_database(self):
        conn = self.connect(dbname="postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.dbname}"')
        finally:
            conn.close()
        self.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self._db_created = True

    def stop(self, mode="fast", timeout=60):
        """pg_ctl stop -m fast (or "immediate", "smart"). Idempotent."""
        if self.dir is None or not self.running:
            return
        self._cmd(["pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", str(int(timeout)),
                   "stop"], timeout=timeout + 30)
        self.running = False

    def cleanup(self):
        """Stop the server (fast, then immediate) and remove its directory."""
        if self.dir is None:
            return
        try:
            if self.running:
                try:
                    self.stop("fast", timeout=20)
                except Exception:  # noqa: BLE001
                    self.stop("immediate", timeout=20)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            self.running = False
            _unregister(self)

    def _emergency_stop(self):
        if self.dir and self.running:
            try:
                self._cmd(["pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "-t",
                           "20", "stop"], timeout=40, check=False)
            finally:
                self.running = False
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def detach(self):
        """Forget this server: it is no longer stopped at exit."""
        _unregister(self)

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # -- SQL

    def connect(self, dbname=None, autocommit=True, options=CLIENT_OPTIONS, **kw):
        """A psycopg2 connection (autocommit by default) over the unix socket,
        with the session settings objcached pins (TimeZone=UTC, ...) and a
        30 s lock_timeout."""
        import psycopg2
        conn = psycopg2.connect(host=self.dir, port=self.port, dbname=dbname or self.dbname,
                                user=self.SUPERUSER, options=options, connect_timeout=10,
                                **kw)
        conn.autocommit = autocommit
        return conn

    def execute(self, sql, params=None, dbname=None):
        """Run sql (may be several statements when params is None) on a new
        autocommit connection; returns the rows of the last statement, or
        None if it returned none."""
        conn = self.connect(dbname=dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else None
        finally:
            conn.close()

    def execute_file(self, path, dbname=None):
        with open(path, encoding="utf-8") as f:
            return self.execute(f.read(), dbname=dbname)

    def copy_database(self, name, template):
        """CREATE DATABASE name TEMPLATE template, by copying its files
        (STRATEGY FILE_COPY) on PostgreSQL 15 and later. Their default,
        WAL_LOG, writes the whole copy to the WAL: 7 to 11 MB for a test's
        database, which every walsender of the cluster then reads, and a
        suite makes hundreds (2026-12-07: FILE_COPY took 40-90 ms and wrote
        no WAL where WAL_LOG took 120-145 ms and wrote 11 MB)."""
        if getattr(self, "_version_num", None) is None:
            self._version_num = int(self.execute("SHOW server_version_num",
                                                 dbname="postgres")[0][0])
        strategy = " STRATEGY FILE_COPY" if self._version_num >= 150000 else ""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}',
                     dbname="postgres")


# --------------------------------------------------------------------------
# memcached


class Memcached:
    """A memcached server on 127.0.0.1:port (`-U 0 -m 64 -t 1`, and
    `-u nobody` as root). stop() and start() again reuse the port; kill(sig)
    sends any signal (SIGSTOP/SIGCONT make it slow/unresponsive and back).

    detached=True starts it in its own session, not killed when we die
    (for servers meant to outlive the script, with detach())."""

    def __init__(self, port=None, memory_mb=64, threads=1, extra_args=(), binary=None,
                 parent_dir=None, detached=False):
        self._auto_port = port is None
        self.port = port or free_port()
        self.memory_mb = memory_mb
        self.threads = threads
        self.extra_args = list(extra_args)
        self.binary = binary or shutil.which("memcached") or "/usr/bin/memcached"
        self.proc = None
        self.detached = detached
        self.dir = tempfile.mkdtemp(prefix="oc-mc-", dir=parent_dir or _short_tmpdir())
        self.logfile = os.path.join(self.dir, "memcached.log")
        self._started_once = False

    def __repr__(self):
        return f"Memcached(port={self.port})"

    @property
    def address(self):
        """"127.0.0.1:PORT", as objcached's `servers` wants it."""
        return f"127.0.0.1:{self.port}"

    def argv(self):
        argv = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
                "-m", str(self.memory_mb), "-t", str(self.threads)]
        if IS_ROOT:
            argv += ["-u", "nobody"]
        return argv + self.extra_args

    def log(self, limit=None):
        return _read_text(self.logfile, limit)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=DEFAULT_TIMEOUT):
        """Start (again) and wait until the port accepts connections."""
        if self.alive():
            return self
        if not os.path.exists(self.binary):
            raise HarnessError(f"{self.binary} not found (apt-get install memcached)")
        for attempt in range(3):
            _register(self)
            with open(self.logfile, "ab") as log:
                self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log,
                                             start_new_session=self.detached,
                                             preexec_fn=_child_preexec(self.detached))
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                if port_accepts(self.port):
                    self._started_once = True
                    return self
                time.sleep(0.02)
            if self.proc.poll() is None:
                _stop_process(self.proc, signal.SIGKILL)
                raise HarnessError(f"memcached on port {self.port} did not accept within "
                                   f"{timeout} s:\n{self.log(4000)}")
            log = self.log(4000)
            if self._auto_port and not self._started_once and attempt < 2 \
                    and "in use" in log:
                self.port = free_port()
                continue
            raise HarnessError(f"memcached exited with status {self.proc.returncode}:\n{log}")
        raise HarnessError("memcached did not start")

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """SIGTERM (SIGCONT first, in case it was stopped) and wait; SIGKILL
        after `timeout`. The port is then closed until start()."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            _stop_process(self.proc, signal.SIGTERM, timeout)

    def kill(self, sig=signal.SIGKILL):
        """Send `sig`. For SIGKILL/SIGTERM also wait for the exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            wait_stopped(self.proc.pid)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                self.proc.wait(timeout=DEFAULT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=DEFAULT_TIMEOUT)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        _unregister(self)

    def _emergency_stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            _stop_process(self.proc, signal.SIGKILL, 5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def detach(self):
        """Forget this server: it is no longer stopped at exit."""
        _unregister(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def client(self, timeout=DEFAULT_TIMEOUT):
        return McRaw("127.0.0.1", self.port, timeout=timeout)

    def flush_all(self):
        """Drop every item (memcached's own `flush_all`)."""
        with self.client() as c:
            c.send(b"flush_all\r\n")
            line = c.readline()
            if line != b"OK":
                raise HarnessError(f"flush_all on {self.address}: {line!r}")

    def stats(self):
        with self.client() as c:
            return c.stats()


# --------------------------------------------------------------------------
# pgbouncer


class Pgbouncer:
    """A pgbouncer (Debian's, `apt-get install pgbouncer`) on 127.0.0.1:port
    in front of a harness Postgres, with trust authentication and the
    `pool_mode` given ("session" or "transaction"); `settings` adds or
    overrides [pgbouncer] keys (server_lifetime, query_timeout, ...).
    Every database of the cluster is reachable under its own name (pg's and
    `dbnames` as [databases] entries of their own); admin(cmd) runs a command
    on the admin console (RECONNECT, KILL, PAUSE, RESUME, SHOW ...).

    pgbouncer refuses to run as root: as root it runs as 'postgres' (its
    own -u), like the cluster."""

    def __init__(self, pg, pool_mode="session", port=None, settings=None, binary=None,
                 dbnames=()):
        self.pg = pg
        self.dbnames = list(dbnames)
        self.pool_mode = pool_mode
        self._auto_port = port is None
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.binary = binary or shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="oc-pgb-", dir=_short_tmpdir())
        os.chmod(self.dir, 0o755)
        self.logfile = os.path.join(self.dir, "pgbouncer.log")

    def __repr__(self):
        return f"Pgbouncer(port={self.port}, pool_mode={self.pool_mode})"

    def conninfo(self, dbname=None):
        """libpq connection string for `dbname` (the cluster's test database
        by default) through pgbouncer."""
        return (f"host=127.0.0.1 port={self.port} dbname={dbname or self.pg.dbname} "
                f"user={Postgres.SUPERUSER}")

    def log(self, limit=None):
        return _read_text(self.logfile, limit)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _write_ini(self):
        settings = {
            "listen_addr": "127.0.0.1", "listen_port": str(self.port),
            "unix_socket_dir": "", "auth_type": "trust",
            "auth_file": os.path.join(self.dir, "userlist.txt"),
            "admin_users": Postgres.SUPERUSER, "pool_mode": self.pool_mode,
            "default_pool_size": "20", "max_client_conn": "200",
            "logfile": self.logfile, "pidfile": os.path.join(self.dir, "pgbouncer.pid"),
            # objcached sets them at connect; pgbouncer refuses a client's
            # SET of an untracked parameter only in the startup packet
            "ignore_startup_parameters": "extra_float_digits,options",
        }
        settings.update(self.settings)
        with open(settings["auth_file"], "w") as f:
            f.write(f'"{Postgres.SUPERUSER}" ""\n')
        path = os.path.join(self.dir, "pgbouncer.ini")
        with open(path, "w") as f:
            f.write("[databases]\n")
            # named databases, and the others through the fallback (whose
            # automatic entries KILL removes for good: RESUME does not bring
            # them back)
            for name in (self.pg.dbname, *self.dbnames):
                f.write(f"{name} = host={self.pg.dir} port={self.pg.port} dbname={name}\n")
            f.write(f"* = host={self.pg.dir} port={self.pg.port}\n")
            f.write("[pgbouncer]\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        if IS_ROOT:
            pw = pwd.getpwnam("postgres")
            for p in (self.dir, path, settings["auth_file"]):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        return path

    def start(self, timeout=DEFAULT_TIMEOUT):
        """Start (again: the same port and ini) and wait until it accepts."""
        if self.alive():
            return self
        if not os.path.exists(self.binary):
            raise HarnessError(f"{self.binary} not found (apt-get install pgbouncer)")
        for attempt in range(3):
            argv = [self.binary, self._write_ini()]
            if IS_ROOT:   # pgbouncer switches user itself: our signals reach it
                argv += ["-u", "postgres"]
            _register(self)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL,
                                         preexec_fn=_child_preexec())
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                if port_accepts(self.port):
                    return self
                time.sleep(0.02)
            if self.proc.poll() is None:
                _stop_process(self.proc, signal.SIGKILL)
                raise HarnessError(f"pgbouncer on port {self.port} did not accept within "
                                   f"{timeout} s:\n{self.log(4000)}")
            log = self.log(4000)
            if self._auto_port and attempt < 2 and "in use" in log:
                self.port = free_port()
                continue
            raise HarnessError(f"pgbouncer exited with status {self.proc.returncode}:\n{log}")
        raise HarnessError("pgbouncer did not start")

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """SIGINT (pgbouncer 1.18: safe shutdown, it waits for transactions in flight) and wait;
        SIGKILL after `timeout`."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGINT, timeout)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        _unregister(self)

    def _emergency_stop(self):
        _kill_and_remove(self.proc, self.dir)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def connect(self, dbname=None, **kw):
        """A psycopg2 autocommit connection to `dbname` through pgbouncer."""
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port,
                                dbname=dbname or self.pg.dbname,
                                user=Postgres.SUPERUSER, connect_timeout=10, **kw)
        conn.autocommit = True
        return conn

    def admin(self, command, named=False):
        """Run `command` on the admin console; the rows it returns (or []),
        each a dict by column name when named (the columns of SHOW
        commands differ between pgbouncer versions)."""
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, dbname="pgbouncer",
                                user=Postgres.SUPERUSER, connect_timeout=10)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(command)
                if cur.description is None:
                    return []
                if named:
                    cols = [d[0] for d in cur.description]
                    return [dict(zip(cols, r)) for r in cur.fetchall()]
                return cur.fetchall()
        finally:
            conn.close()


# --------------------------------------------------------------------------
# objcached


class Objcached:
    """An objcached daemon started with `objcached -c FILE`.

    `config` is either INI text or a {section: {key: value}} dict (see
    render_ini). In a dict, [objcached] listen and unix_socket are filled in
    when absent: a free 127.0.0.1 port and `<tmpdir>/objcached.sock`. In
    text, the placeholders @PORT@, @SOCK@ and @DIR@ are replaced the same
    way. The config is written to a fresh temporary directory; stderr and
    stdout go to `<tmpdir>/objcached.log`.

    start() waits (up to `ready_timeout`) for `event=ready` in the log or
    the TCP port to accept, and raises HarnessError with the log if the
    process exits first or never becomes ready. stop() sends SIGTERM, waits
    (SIGKILL after 20 s) and, with check=True, raises if the exit status is
    not 0 or the log holds a sanitizer report.

    parent_dir: where the temporary directory goes. detached=True starts it
    in its own session, not killed when we die (see detach()).

    listen_fds: descriptors (sockets, or anything: the hostile tests pass a
    file) to hand over as systemd's socket activation does: they become the
    daemon's descriptors 3, 4, ..., with LISTEN_FDS their number and
    LISTEN_PID the daemon's pid (set by a `sh -c ... exec` in front of it,
    so that it is the exec'd process's), unless `env` sets either."""

    def __init__(self, config, binary=None, ready_timeout=START_TIMEOUT, env=None,
                 args=None, parent_dir=None, detached=False, listen_fds=None):
        self.binary = binary or os.environ.get("OBJCACHED_BIN")
        if not self.binary:
            raise HarnessError("no objcached binary: pass binary= or set OBJCACHED_BIN")
        if not os.access(self.binary, os.X_OK):
            raise HarnessError(f"objcached binary {self.binary!r} is not executable")
        self.ready_timeout = ready_timeout
        self.env = env
        self.extra_args = list(args or [])
        self.detached = detached
        self.listen_fds = None if listen_fds is None else list(listen_fds)
        self.dir = tempfile.mkdtemp(prefix="oc-d-", dir=parent_dir or _short_tmpdir())
        self.config_path = os.path.join(self.dir, "objcached.ini")
        self.logfile = os.path.join(self.dir, "objcached.log")
        self.proc = None
        self._stopped = False
        self._config = config
        self._auto_port = False
        self.port = None
        self.sock = None
        self._render()

    def __repr__(self):
        return f"Objcached(port={self.port}, sock={self.sock})"

    def _render(self, new_port=False):
        config = self._config
        if isinstance(config, dict):
            config = {k: dict(v) for k, v in config.items()}
            section = config.setdefault("objcached", {})
            if "listen" not in section:
                self._auto_port = True
                if self.port is None or new_port:
                    self.port = free_port()
                section["listen"] = f"127.0.0.1:{self.port}"
            if "unix_socket" not in section:
                section["unix_socket"] = os.path.join(self.dir, "objcached.sock")
            # [objcached] first, as in the documentation
            config = {"objcached": section, **{k: v for k, v in config.items()
                                               if k != "objcached"}}
            text = render_ini(config)
        else:
            text = config
            if "@PORT@" in text:
                self._auto_port = True
                if self.port is None or new_port:
                    self.port = free_port()
                text = text.replace("@PORT@", str(self.port))
            text = text.replace("@SOCK@", os.path.join(self.dir, "objcached.sock"))
            text = text.replace("@DIR@", self.dir)
        self.config_text = text
        self.port, self.sock = self._listeners(text)
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(text)

    @staticmethod
    def _listeners(text):
        port = sock = None
        section = None
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line.strip("[]").strip()
                continue
            if section != "objcached" or "=" not in line or line[0] in ";#":
                continue
            key, value = (s.strip() for s in line.split("=", 1))
            value = re.split(r"\s[;#]", value)[0].strip()
            if key == "listen" and value:
                port = int(value.rsplit(":", 1)[1])
            elif key == "unix_socket" and value:
                sock = value
        if port is None and sock is None and "listen" not in text:
            port = 11311  # the documented default
        return port, sock

    # -- lifecycle

    def log(self, limit=None):
        """Everything the daemon wrote to stderr/stdout so far."""
        return _read_text(self.logfile, limit)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _ready(self):
        # The daemon's own word: its listeners accept connections (the
        # kernel completes the handshake) before it has finished starting,
        # e.g. before it fails to switch to an unknown `user`. Only a daemon
        # whose log_level hides the ready line is probed on its port.
        if "event=ready" in self.log():
            return True
        if not re.search(r"^log_level\s*=\s*(warn|error)\s*$", self.config_text, re.M):
            return False
        if self.port is not None:
            return port_accepts(self.port)
        return self.sock is not None and os.path.exists(self.sock) and _unix_accepts(self.sock)

    def start(self):
        if self.alive():
            return self
        for attempt in range(3):
            _register(self)
            env = dict(os.environ)
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                env.pop(name, None)
            cmd_front, pass_fds, preexec = [], (), _child_preexec(self.detached)
            if self.listen_fds is not None:
                env["LISTEN_FDS"] = str(len(self.listen_fds))
                cmd_front = ["/bin/sh", "-c",
                             'LISTEN_PID="${LISTEN_PID-$$}"; export LISTEN_PID; exec "$@"',
                             "sh"]
                pass_fds = tuple(range(3, 3 + len(self.listen_fds)))
                preexec = _listen_fds_preexec(self.listen_fds, preexec)
            if self.env:
                env.update(self.env)
            with open(self.logfile, "ab") as log:
                self._stopped = False
                # OBJCACHED_WRAPPER runs the daemon under a tool, e.g.
                # "valgrind --error-exitcode=99 --leak-check=full" (the
                # valgrind pass of scripts/test.sh).
                wrapper = shlex.split(os.environ.get("OBJCACHED_WRAPPER", ""))
                self.proc = subprocess.Popen(cmd_front + wrapper
                                             + [self.binary, "-c", self.config_path]
                                             + self.extra_args,
                                             stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log, cwd=self.dir, env=env,
                                             start_new_session=self.detached,
                                             pass_fds=pass_fds, preexec_fn=preexec)
            deadline = time.monotonic() + self.ready_timeout
            while self.proc.poll() is None:
                if self._ready():
                    return self
                if time.monotonic() >= deadline:
                    _stop_process(self.proc, signal.SIGKILL)
                    raise HarnessError(f"objcached did not become ready within "
                                       f"{self.ready_timeout} s; its log:\n{self.log(16000)}")
                time.sleep(0.02)
            log = self.log(16000)
            if self._auto_port and attempt < 2 and "in use" in log:
                self._render(new_port=True)  # someone took our port
                continue
            raise HarnessError(f"objcached exited with status {self.proc.returncode} "
                               f"before it was ready; config:\n{self.config_text}\n"
                               f"its log:\n{log}")
        raise HarnessError("objcached did not start")

    def check_log_lines(self):
        """Raise HarnessError if a line of the log does not parse as
        key=value pairs (malformed_log_lines)."""
        bad = malformed_log_lines(self.log())
        if bad:
            raise HarnessError("objcached wrote log lines that do not parse as key=value "
                               "pairs (text not cleaned with oc_log_clean?):\n" +
                               "\n".join(bad[:20]))

    def sanitizer_report(self):
        """The sanitizer error lines in the log, or '' if there are none."""
        return "\n".join(l for l in self.log().splitlines() if _SANITIZER_RE.search(l))

    def stop(self, timeout=20.0, check=True):
        """SIGTERM, wait up to `timeout` (beyond the daemon's default 10 s
        shutdown_timeout), then SIGKILL. Returns the exit status.

        With check=True, raises HarnessError (with the log) if the status is
        not 0 (a sanitizer abort, a crash, SIGKILL needed) or the log holds a
        sanitizer report."""
        if self.proc is None:
            return None
        if self._stopped:
            return self.proc.returncode  # stopped (and checked) before
        already = self.proc.poll()
        rc = _stop_process(self.proc, signal.SIGTERM, timeout)
        self._stopped = True
        _unregister(self)
        if check:
            report = self.sanitizer_report()
            if rc != 0 or report or already is not None:
                how = "had already exited" if already is not None else "after SIGTERM"
                raise HarnessError(f"objcached {how} with status {rc}"
                                   f"{' and a sanitizer report' if report else ''}; "
                                   f"its log:\n{self.log(32000)}")
            self.check_log_lines()
        return rc

    def begin_stop(self):
        """SIGTERM without waiting: the daemon starts draining. Finish with
        wait_stopped()."""
        self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout=20.0, check=True):
        """Wait for a daemon told to stop (begin_stop) to exit; with
        check=True, raise unless it exited 0 with no sanitizer report.
        Returns the exit status."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = _stop_process(self.proc, signal.SIGKILL, 5)
        self._stopped = True
        _unregister(self)
        if check:
            report = self.sanitizer_report()
            if rc != 0 or report:
                raise HarnessError(f"objcached exited with status {rc}"
                                   f"{' and a sanitizer report' if report else ''}; "
                                   f"its log:\n{self.log(32000)}")
            self.check_log_lines()
        return rc

    def kill(self, sig=signal.SIGKILL):
        """Send `sig` to the daemon (no checks; SIGSTOP waits until it is
        stopped)."""
        if self.alive():
            self.proc.send_signal(sig)
            if sig == signal.SIGSTOP:
                wait_stopped(self.proc.pid)

    def cleanup(self):
        """Stop without checks and remove the temporary directory."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, DEFAULT_TIMEOUT)
        shutil.rmtree(self.dir, ignore_errors=True)
        _unregister(self)

    def _emergency_stop(self):
        _kill_and_remove(self.proc, self.dir)

    def detach(self):
        """Forget this daemon: it is no longer stopped at exit."""
        _unregister(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *exc):
        try:
            # Do not hide the test's own exception behind a shutdown problem.
            self.stop(check=exc_type is None)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients

    def client(self, timeout=DEFAULT_TIMEOUT):
        """A McRaw connected over TCP (or the unix socket if no TCP)."""
        if self.port is not None:
            return McRaw("127.0.0.1", self.port, timeout=timeout)
        return McRaw(path=self.sock, timeout=timeout)

    def unix_client(self, timeout=DEFAULT_TIMEOUT):
        return McRaw(path=self.sock, timeout=timeout)

    def stats(self):
        """The `stats` reply as {name: int or str}."""
        with self.client() as c:
            return c.stats()

    def wait_idle(self, timeout=DEFAULT_TIMEOUT):
        """Wait until the `loads_in_flight` gauge is 0 (loads done and, as
        far as the daemon reports it, written back to memcached)."""
        wait_until(lambda: self.stats()["loads_in_flight"] == 0, timeout=timeout,
                   what="loads_in_flight == 0")


def _unix_accepts(path):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            s.connect(path)
            return True
    except OSError:
        return False


def check_config(path, binary=None, timeout=DEFAULT_TIMEOUT):
    """Run `objcached --check-config path`; returns CompletedProcess (text)."""
    binary = binary or os.environ.get("OBJCACHED_BIN")
    return subprocess.run([binary, "--check-config", path], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


# --------------------------------------------------------------------------
# A raw memcached-protocol client


Value = namedtuple("Value", "key flags data cas")
Value.__doc__ = "One VALUE block: key (bytes), flags (int), data (bytes), cas (int or None)."

Reply = namedtuple("Reply", "values lines terminal")
Reply.__doc__ = ("A whole reply: VALUE blocks, other lines before the end (STAT ...), "
                 "and the terminal line (END, ERROR, CLIENT_ERROR ..., ...), all bytes "
                 "without the line end.")

_TERMINALS = (b"END", b"ERROR", b"RESET", b"OK", b"STORED", b"NOT_STORED", b"EXISTS",
              b"NOT_FOUND", b"DELETED", b"TOUCHED")
_TERMINAL_PREFIXES = (b"CLIENT_ERROR", b"SERVER_ERROR", b"VERSION ")
_META_STATUS = (b"HD", b"NS", b"EX", b"NF", b"EN", b"MN")   # meta replies without data


def is_terminal(line):
    """True for a line that ends a reply (END, ERROR, CLIENT_ERROR ...,
    VERSION ..., and the meta replies HD/NS/EX/NF/EN/MN [flags])."""
    return (line in _TERMINALS or line.startswith(_TERMINAL_PREFIXES) or line == b"VERSION"
            or line.split(b" ", 1)[0] in _META_STATUS)


class ConnectionClosed(ConnectionError):
    """The server closed the connection."""


class McRaw:
    """A tiny memcached ASCII protocol client that shows exactly what goes
    over the wire. Every socket operation times out after `timeout` seconds
    (socket.timeout). Keys and lines may be str (sent as UTF-8) or bytes;
    everything read back is bytes, with line ends stripped.

        c = McRaw("127.0.0.1", port)        # or McRaw("/x/objcached.sock")
        values, terminal = c.get_multi(["User:1", "User:2"])
        # values == [(b"User:1", 0, b'{"id":1,...}'), ...], terminal == b"END"
    """

    def __init__(self, host="127.0.0.1", port=None, path=None, timeout=DEFAULT_TIMEOUT):
        if path is None and port is None and str(host).startswith("/"):
            path = host                      # McRaw("/run/objcached.sock")
        self.timeout = timeout
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    @staticmethod
    def _bytes(x):
        return x.encode("utf-8") if isinstance(x, str) else bytes(x)

    # -- raw I/O

    def send(self, data):
        """Send bytes (or str) exactly as given."""
        self.sock.sendall(self._bytes(data))

    def sendline(self, line):
        """Send one command line; "\\r\\n" is appended."""
        self.send(self._bytes(line) + b"\r\n")

    def _fill(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        if not chunk:
            raise ConnectionClosed("connection closed by the server")
        self.buf += chunk

    def readline(self):
        """One line, without its "\\r\\n" (a bare "\\n" also ends it)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                return line[:-1] if line.endswith(b"\r") else line
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self):
        """Read one whole reply: VALUE blocks (their data read by length) and
        any other lines, up to the terminal line. Returns a Reply. A meta
        `VA <len> <flags>*` line is terminal too: its data is the one Value
        (key None) and the VA line is the terminal."""
        values, lines = [], []
        while True:
            line = self.readline()
            if line.startswith(b"VA "):
                n = int(line.split(b" ")[1])
                data = self.read_exact(n + 2)
                if data[-2:] != b"\r\n":
                    raise ValueError(f"VA data not followed by CRLF: {data[-10:]!r}")
                return Reply([Value(None, 0, data[:-2], None)], lines, line)
            if line.startswith(b"VALUE "):
                parts = line.split(b" ")
                if len(parts) not in (4, 5):
                    raise ValueError(f"malformed VALUE line: {line!r}")
                n = int(parts[3])
                data = self.read_exact(n + 2)
                if data[-2:] != b"\r\n":
                    raise ValueError(f"value for {parts[1]!r} not followed by CRLF: "
                                     f"{data[-10:]!r}")
                cas = int(parts[4]) if len(parts) == 5 else None
                values.append(Value(parts[1], int(parts[2]), data[:-2], cas))
            elif is_terminal(line):
                return Reply(values, lines, line)
            else:
                lines.append(line)

    def command(self, line):
        """Send one command line and read its reply."""
        self.sendline(line)
        return self.read_response()

    def get_multi(self, keys, cmd="get"):
        """`get k1 k2 ...`: ([(key, flags, data), ...], terminal line).
        Keys come back as bytes, as the server echoed them."""
        reply = self.command(self._bytes(cmd) + b" " + b" ".join(self._bytes(k) for k in keys))
        return [(v.key, v.flags, v.data) for v in reply.values], reply.terminal

    def gets_multi(self, keys):
        """`gets k1 ...`: ([(key, flags, data, cas), ...], terminal line)."""
        reply = self.command(b"gets " + b" ".join(self._bytes(k) for k in keys))
        return [tuple(v) for v in reply.values], reply.terminal

    def get(self, key):
        """The data for one key, or None if absent. Raises on an error reply."""
        values, terminal = self.get_multi([key])
        if terminal != b"END":
            raise HarnessError(f"get {key!r}: {terminal!r}")
        return values[0][2] if values else None

    def stats(self, arg=None):
        """`stats [arg]` as {name: value}; values that are integers become int."""
        reply = self.command(b"stats" + (b" " + self._bytes(arg) if arg else b""))
        if reply.terminal != b"END":
            raise HarnessError(f"stats: {reply.terminal!r}")
        out = {}
        for line in reply.lines:
            parts = line.decode("utf-8", "replace").split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                v = parts[2]
                out[parts[1]] = int(v) if re.fullmatch(r"-?\d+", v) else v
        return out

    def version(self):
        return self.command(b"version").terminal

    # -- state checks

    def has_data(self, timeout=0.2):
        """True if reply bytes are buffered or arrive within `timeout`
        (without consuming them); False on silence."""
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def closed_by_peer(self, timeout=DEFAULT_TIMEOUT):
        """Wait up to `timeout` for EOF; True if the server closed the
        connection (any pending bytes are read into the buffer first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._fill(timeout=max(0.01, deadline - time.monotonic()))
            except ConnectionClosed:
                return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
        return False

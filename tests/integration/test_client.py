"""libobjcache and the objcache CLI, black-box (docs/client.md).

Against a real objcached (conftest's `objcached` fixture): get over TCP and
the unix socket, plain and --json output, exit codes, push and tombstone,
stats, version, batch mode on one connection, the C example from the doc,
installing the library and building that example with pkg-config and with
find_package, and the Python/PHP/Ruby examples.

Against fake servers written here (threads on loopback): a server that
never answers (timeout), one that closes after each reply (reconnect), one
that closes mid-answer, and garbage answers.

The CLI is found next to the daemon: <dir of OBJCACHED_BIN>/client/objcache.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(SRC, "client", "examples")
DOC = os.path.join(SRC, "docs", "client.md")

SANITIZER_RE = re.compile(rb"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: "
                          rb"|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer)")

@pytest.fixture(scope="session")
def build_dir(objcached_bin):
    return os.path.dirname(os.path.abspath(objcached_bin))


# push_check off: with it, a tombstone of a row PostgreSQL still has (these tests
# tombstone rows they did not delete) is replaced by the row once checked
# (test_write_path.py::test_late_tombstone_after_the_row_came_back).
NO_CHECK = {"model User": {"push_check": "off"}}


@pytest.fixture(scope="session")
def cli_bin(build_dir):
    path = os.path.join(build_dir, "client", "objcache")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"the objcache CLI is not built at {path}")
    return path


def sanitized_build(build_dir):
    with open(os.path.join(build_dir, "CMakeCache.txt"), encoding="utf-8") as f:
        return re.search(r"^OC_SANITIZE:BOOL=(ON|1|TRUE)", f.read(), re.M) is not None


def run(argv, input=None, timeout=60, env=None, cwd=None):
    """Run a program of ours; fail on a crash or a sanitizer report."""
    full_env = dict(os.environ)
    full_env.pop("OBJCACHE_ADDR", None)
    full_env.update(env or {})
    p = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                       env=full_env, cwd=cwd)
    assert p.returncode >= 0, f"{argv[0]} died of signal {-p.returncode}: {p.stderr!r}"
    assert not SANITIZER_RE.search(p.stderr), p.stderr.decode(errors="replace")
    return p


class Cli:
    def __init__(self, path):
        self.path = path

    def __call__(self, *args, addr=None, json_mode=False, input=None, env=None,
                 timeout=60):
        argv = [self.path]
        if addr is not None:
            argv += ["--addr", addr]
        if json_mode:
            argv.append("--json")
        return run(argv + list(args), input=input, env=env, timeout=timeout)


@pytest.fixture
def cli(cli_bin):
    return Cli(cli_bin)


def tcp(oc):
    return f"127.0.0.1:{oc.port}"


def unix(oc):
    return f"unix:{oc.sock}"


def lines(p):
    return p.stdout.decode("utf-8").splitlines()


# ------------------------------------------------------------------ get

@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_get_plain(objcached, ref, cli, via):
    addr = tcp(objcached) if via == "tcp" else unix(objcached)
    p = cli("get", "User:1", "User:14", "User:999999", addr=addr)
    assert p.returncode == 1, p.stderr   # one key not found
    assert lines(p) == [f"User:1 {ref.json('User', 1).decode()}",
                        f"User:14 {ref.json('User', 14).decode()}",
                        "User:999999 (not found)"]
    p = cli("get", "User:2", "User:-42", addr=addr)
    assert p.returncode == 0, p.stderr
    assert lines(p) == [f"User:2 {ref.json('User', 2).decode()}",
                        f"User:-42 {ref.json('User', -42).decode()}"]
    assert p.stderr == b""


def test_get_json(objcached, ref, cli):
    keys = ["User:13", "User:999999", "User:14", "User:13", "Counter:5"]
    p = cli("get", *keys, addr=tcp(objcached), json_mode=True)
    assert p.returncode == 1, p.stderr
    out = p.stdout.decode("utf-8")
    assert out.endswith("}\n") and out.count("\n") == 1
    got = json.loads(out)
    assert list(got) == ["User:13", "User:999999", "User:14", "Counter:5"]  # asked twice: once
    assert got["User:999999"] is None
    for key in ("User:13", "User:14", "Counter:5"):
        model, ident = key.split(":")
        want = ref.json(model, int(ident))
        assert got[key] == json.loads(want)
        assert want in p.stdout   # the server's bytes, unchanged
    p = cli("get", "User:13", addr=unix(objcached), json_mode=True)
    assert p.returncode == 0
    assert json.loads(p.stdout) == {"User:13": json.loads(ref.json("User", 13))}


def test_many_keys_one_call(objcached, ref, cli):
    keys = [f"User:{i}" for i in range(1, 301)]   # 200 rows exist
    p = cli("get", *keys, addr=tcp(objcached), json_mode=True)
    assert p.returncode == 1, p.stderr
    got = json.loads(p.stdout)
    assert sum(v is not None for v in got.values()) == 200
    assert got["User:200"] == json.loads(ref.json("User", 200))
    assert got["User:201"] is None


def test_address_from_environment(objcached, ref, cli):
    p = cli("get", "User:3", env={"OBJCACHE_ADDR": unix(objcached)})
    assert p.returncode == 0, p.stderr
    assert lines(p) == [f"User:3 {ref.json('User', 3).decode()}"]
    # --addr wins over the environment
    p = cli("get", "User:3", addr=tcp(objcached),
            env={"OBJCACHE_ADDR": "unix:/nonexistent/objcached.sock"})
    assert p.returncode == 0, p.stderr


def test_server_refusals(objcached, cli):
    p = cli("get", "Nope:1", addr=tcp(objcached))
    assert p.returncode == 3
    assert p.stderr == b"objcache: get: CLIENT_ERROR unknown model: Nope:1\n"
    p = cli("get", "User:abc", "User:1", addr=tcp(objcached), json_mode=True)
    assert p.returncode == 3
    assert json.loads(p.stdout) == {
        "error": "request refused by server",
        "message": "CLIENT_ERROR bad id for bigint key: User:abc"}


# ------------------------------------------------------------------ writes

def test_push_and_tombstone(objcached_factory, cli, ref):
    """set and delete as docs/protocol.md describes them: a push is served as
    given; a tombstone makes the key absent and wins over later pushes. The
    bodies are the rows themselves, spaced differently (the push check would
    replace anything else with the row)."""
    objcached = objcached_factory(NO_CHECK)
    addr = tcp(objcached)
    body = "{ " + ref.json("User", 150).decode()[1:]
    p = cli("push", "User:150", body, addr=addr)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"User:150 stored\n", b"")
    p = cli("get", "User:150", addr=addr)
    assert lines(p) == [f"User:150 {body}"]

    # From stdin, with the trailing newline echo adds (dropped), in --json.
    row151 = b"{ " + ref.json("User", 151)[1:]
    p = cli("push", "User:151", "-", addr=addr, json_mode=True, input=row151 + b"\n")
    assert (p.returncode, json.loads(p.stdout)) == (0, {"User:151": "stored"})
    p = cli("get", "User:151", addr=addr)
    assert p.stdout == b"User:151 " + row151 + b"\n"

    p = cli("tombstone", "User:150", "User:151", addr=addr)
    assert (p.returncode, lines(p)) == (0, ["User:150 deleted", "User:151 deleted"])
    p = cli("get", "User:150", "User:151", addr=addr)
    assert (p.returncode, lines(p)) == (1, ["User:150 (not found)", "User:151 (not found)"])

    # The tombstone wins over a push: NOT_STORED, exit 1.
    p = cli("push", "User:150", body, addr=addr)
    assert (p.returncode, p.stdout) == (1, b"User:150 not stored\n")
    p = cli("push", "User:150", body, addr=addr, json_mode=True)
    assert (p.returncode, json.loads(p.stdout)) == (1, {"User:150": "not_stored"})


def test_push_refused(objcached, cli):
    p = cli("push", "User:152", "[1, 2]", addr=tcp(objcached))
    assert p.returncode == 3
    assert p.stderr == b"objcache: push User:152: CLIENT_ERROR value is not a JSON object\n"
    p = cli("push", "User:152", "not json", addr=unix(objcached), json_mode=True)
    assert p.returncode == 3
    assert json.loads(p.stdout)["message"] == "CLIENT_ERROR value is not a JSON object"
    p = cli("tombstone", "Nope:1", addr=tcp(objcached))
    assert p.returncode == 3
    assert b"CLIENT_ERROR unknown model: Nope:1" in p.stderr


# ------------------------------------------------------------------ stats, version

def test_stats(objcached, cli):
    p = cli("stats", addr=tcp(objcached))
    assert p.returncode == 0, p.stderr
    plain = dict(line.split(" ", 1) for line in lines(p))
    assert plain["pid"] == str(objcached.pid)
    p = cli("get", "User:1", addr=tcp(objcached))
    p = cli("stats", addr=unix(objcached), json_mode=True)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["pid"] == objcached.pid          # numbers are JSON numbers
    assert isinstance(st["version"], str)
    assert st["cmd_get"] == int(plain["cmd_get"]) + 1
    assert set(plain) == set(st)


def test_version(objcached, cli):
    p = cli("version", addr=tcp(objcached))
    assert p.returncode == 0, p.stderr
    version = p.stdout.decode().strip()
    assert version == objcached.stats()["version"]
    p = cli("version", addr=unix(objcached), json_mode=True)
    assert json.loads(p.stdout) == {"version": version}


def test_batch_uses_one_connection(objcached, ref, cli):
    version = objcached.stats()["version"]
    before = objcached.stats()["total_connections"]
    row160 = b"{ " + ref.json("User", 160)[1:]   # the row: the push check agrees
    script = (b"# one connection for all of these\n"
              b"get User:1 User:999999\n"
              b"\n"
              b"version\n"
              b"push User:160 " + row160 + b"\n"
              b"get User:160\n"
              b"tombstone User:160\n")
    p = cli("batch", addr=tcp(objcached), input=script)
    assert p.returncode == 1, p.stderr        # the worst: a key not found
    assert lines(p) == [f"User:1 {ref.json('User', 1).decode()}", "User:999999 (not found)",
                        version, "User:160 stored", "User:160 " + row160.decode(),
                        "User:160 deleted"]
    # our batch, and objcached.stats() itself
    assert objcached.stats()["total_connections"] - before == 2
    p = cli("batch", addr=tcp(objcached), input=b"frobnicate\nversion\n")
    assert p.returncode == 2 and lines(p) == [version]

    # A line over the longest one (1 MiB) is refused whole: before, its rest
    # ran as a command of its own (found by a review, 2026-12-05). A push
    # indented by blanks is a push (before: "usage: push KEY JSON").
    huge = b"push User:161 {\"a\":\"" + b"x" * (1 << 20) + b"version\"}\n"
    p = cli("batch", addr=tcp(objcached), input=huge + b"  push User:160 " + row160 + b"\n")
    assert p.returncode == 2, p.stderr
    assert b"batch line longer than 1048575 bytes, skipped" in p.stderr
    assert lines(p) == ["User:160 stored"]


# ------------------------------------------------------------------ usage and connecting

def test_usage(cli):
    p = cli()
    assert p.returncode == 2 and b"Usage: objcache" in p.stderr
    p = cli("--help")
    assert p.returncode == 0 and b"Usage: objcache" in p.stdout and b"Exit status" in p.stdout
    for args in (["get"], ["get", "User"], ["get", "User:1", "bad key:1"], ["frobnicate"],
                 ["push", "User:1"], ["stats", "x"], ["version", "x"], ["tombstone"],
                 ["--timeout", "1h", "version"], ["--timeout", "soon", "version"],
                 ["--bogus", "version"], ["sleep", "1s"]):
        p = cli(*args, addr="127.0.0.1:9")
        assert p.returncode == 2, (args, p.stderr)
        assert p.stdout == b"" and p.stderr.startswith(b"objcache: ") or \
            b"Usage" in p.stderr, (args, p.stderr)
    p = cli("version", addr="nope")
    assert p.returncode == 2
    assert b"expected host:port, [ipv6]:port or unix:/path" in p.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cannot_connect(cli):
    p = cli("version", addr=f"127.0.0.1:{free_port()}")
    assert p.returncode == 3
    assert b"Connection refused" in p.stderr
    p = cli("get", "User:1", addr="unix:/nonexistent/objcached.sock", json_mode=True)
    assert p.returncode == 3
    assert json.loads(p.stdout) == {
        "error": "cannot connect",
        "message": "connect unix:/nonexistent/objcached.sock: No such file or directory"}


# ------------------------------------------------------------------ fake servers

class FakeServer:
    """Accepts on a free loopback port; each connection runs handler(conn, n)
    in its own thread (n counts connections from 1)."""

    def __init__(self, handler, family=socket.AF_INET):
        self.handler = handler
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{port}" if family == socket.AF_INET else f"[::1]:{port}"
        self.connections = 0
        self.requests = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections),
                             daemon=True).start()

    def _serve(self, conn, n):
        conn.settimeout(10)
        try:
            self.handler(self, conn, n)
        except OSError:
            pass
        finally:
            conn.close()

    def read_request(self, conn):
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        self.requests.append(data)
        return data

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_for_close(conn):
    """Hold the connection until the client closes it."""
    while conn.recv(4096):
        pass


def test_timeout(cli):
    def never_answer(server, conn, n):
        server.read_request(conn)
        wait_for_close(conn)

    with FakeServer(never_answer) as server:
        for args in (["version"], ["get", "User:1", "User:2"]):
            t0 = time.monotonic()
            p = cli("--timeout", "500ms", *args, addr=server.addr)
            took = time.monotonic() - t0
            assert p.returncode == 3, p.stderr
            assert p.stderr == f"objcache: {args[0]}: no complete reply within 500 ms\n".encode()
            assert 0.45 <= took < 3.0, took
        p = cli("--timeout", "300ms", "get", "User:1", addr=server.addr, json_mode=True)
        assert p.returncode == 3
        assert json.loads(p.stdout) == {"error": "timed out",
                                        "message": "no complete reply within 300 ms"}


def _full_unix_listener(path):
    """A unix listener with backlog 0 that accepts nobody, and the client
    sockets that fill its backlog (a further connect gets EAGAIN)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    fillers = []
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            break
        fillers.append(c)
        assert len(fillers) < 64, "the backlog never filled"
    return srv, fillers


def test_unix_listen_backlog_full(cli, tmp_path):
    """A unix server whose listen backlog is full for a moment (EAGAIN on a
    unix connect, where TCP would wait): the CLI keeps trying until its
    timeout instead of failing at once, and gets through once the server
    accepts; if it never does, the CLI times out."""
    path = str(tmp_path / "busy.sock")
    srv, fillers = _full_unix_listener(path)
    try:
        t0 = time.monotonic()
        p = cli("--timeout", "500ms", "version", addr=f"unix:{path}")
        took = time.monotonic() - t0
        assert p.returncode == 3, p.stderr
        assert b"timed out after 500 ms" in p.stderr, p.stderr
        assert 0.45 <= took < 3.0, took

        def accept_later():
            time.sleep(0.3)
            srv.settimeout(5)
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                conn.settimeout(0.2)
                try:
                    req = conn.recv(4096)
                except socket.timeout:
                    conn.close()             # a filler: it never sends
                    continue
                if req.startswith(b"version"):
                    conn.sendall(b"VERSION busy-then-free\r\n")
                    conn.close()
                    return
                conn.close()

        t = threading.Thread(target=accept_later, daemon=True)
        t.start()
        p = cli("--timeout", "5s", "version", addr=f"unix:{path}")
        t.join(10)
        assert p.returncode == 0, p.stderr
        assert lines(p) == ["busy-then-free"]
    finally:
        for c in fillers:
            c.close()
        srv.close()


def test_reconnect_after_server_closed(cli):
    """The server closes every connection after one reply: each next command
    in the batch finds the connection closed and opens a new one."""
    def one_reply_each(server, conn, n):
        req = server.read_request(conn)
        if req is None:
            return
        if req.startswith(b"version"):
            conn.sendall(b"VERSION conn-%d\r\n" % n)
        elif req.startswith(b"get "):
            conn.sendall(b"VALUE User:1 0 2\r\n{}\r\nEND\r\n")
        # then close: the with-statement in _serve does it

    with FakeServer(one_reply_each) as server:
        # the sleeps: time for the server's thread to close (1 s: it may be
        # starved on a busy machine, and the CLI does not retry)
        script = b"version\nsleep 1s\nversion\nsleep 1s\nget User:1\n"
        p = cli("batch", addr=server.addr, input=script)
        assert p.returncode == 0, p.stderr
        assert lines(p) == ["conn-1", "conn-2", "User:1 {}"]
        assert server.connections == 3


def test_server_closes_mid_answer(cli):
    def half_answer(server, conn, n):
        server.read_request(conn)
        conn.sendall(b'VALUE User:1 0 100\r\n{"id":1,"na')

    with FakeServer(half_answer) as server:
        p = cli("get", "User:1", addr=server.addr)
        assert p.returncode == 3
        assert p.stderr == b"objcache: get: server closed the connection\n"
        # In a batch, the next command reconnects and fails the same way.
        p = cli("batch", addr=server.addr, input=b"get User:1\nget User:1\n")
        assert p.returncode == 3 and p.stderr.count(b"server closed the connection") == 2
        assert server.connections == 3


GARBAGE = [
    (b"HELLO\r\n", b"unexpected line in a get reply"),
    (b"VALUE User:2 0 2\r\n{}\r\nEND\r\n", b"VALUE for a key not asked for, or out of order"),
    (b"VALUE User:1 0 1\r\na\r\nVALUE User:1 0 1\r\nb\r\nEND\r\n",
     b"VALUE for a key not asked for, or out of order"),
    (b"VALUE User:1 0 1099511627776\r\n", b"value larger than max_reply_bytes"),
    (b"VALUE User:1 0 18446744073709551616\r\n", b"bad length in VALUE line"),
    (b"VALUE User:1 0 -2\r\n", b"bad length in VALUE line"),
    (b"END\n", b"bare \\n without \\r"),
    (b"VALUE User:1 0 2\r\n{}XXEND\r\n", b"data block not followed by \\r\\n"),
    (b"VALUE User:1 0 3\r\na\x00b\r\nEND\r\n", b"NUL byte in a value"),
    (b"VAL\x00UE User:1 0 1\r\n", b"NUL byte in a reply line"),
    (b"\x80\x81garbage" * 1000, b"reply line too long"),
    (b"END\r\nEXTRA\r\n", b"unexpected bytes after it"),
]


@pytest.mark.parametrize("reply,why", GARBAGE, ids=[str(i) for i in range(len(GARBAGE))])
def test_garbage_answers(cli, reply, why):
    def garbage(server, conn, n):
        server.read_request(conn)
        conn.sendall(reply)
        wait_for_close(conn)

    with FakeServer(garbage) as server:
        p = cli("get", "User:1", addr=server.addr)
        assert p.returncode == 3, p.stderr
        assert p.stderr.startswith(b"objcache: get: bad reply")
        assert why in p.stderr, p.stderr
        assert p.stdout == b""


def test_ipv6_address(cli):
    try:
        server = FakeServer(lambda s, conn, n: (s.read_request(conn),
                                                conn.sendall(b"VERSION v6\r\n")),
                            family=socket.AF_INET6)
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine: {e}")
    with server:
        p = cli("version", addr=server.addr)
        assert (p.returncode, p.stdout) == (0, b"v6\n"), p.stderr


# ------------------------------------------------------------------ the examples

def doc_blocks():
    """{path: code} for each fenced block in docs/client.md that follows a
    `<!-- file: PATH -->` line."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    blocks = {}
    for m in re.finditer(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```\n", text, re.S):
        blocks[m.group(1)] = m.group(2)
    return blocks


def test_doc_shows_the_examples_verbatim():
    blocks = doc_blocks()
    assert set(blocks) == {"client/examples/example.c", "client/examples/example.py",
                           "client/examples/example.php", "client/examples/example.rb",
                           "client/examples/example.js", "client/examples/example.go"}
    for path, code in blocks.items():
        with open(os.path.join(SRC, path), encoding="utf-8") as f:
            assert code == f.read(), f"docs/client.md and {path} differ: copy the file in"


def expected_example_output(ref, fmt):
    out = []
    for key, ident in (("User:1", 1), ("User:2", 2), ("User:999999", 999999)):
        data = ref.json("User", ident)
        out.append(fmt(key, data) if data is not None else f"{key}: not found")
    return out


def test_c_example(objcached, ref, build_dir):
    p = run([os.path.join(build_dir, "client", "objcache_example"), tcp(objcached)])
    assert p.returncode == 0, p.stderr
    assert lines(p) == expected_example_output(ref, lambda k, d: f"{k} = {d.decode()}") + \
        ["push: stored"]


def name_email(key, data):
    user = json.loads(data)
    return f"{key} = {user['name']} <{user['email']}>"


def test_python_example(objcached, ref):
    for addr in (unix(objcached), tcp(objcached)):
        p = run(["/usr/bin/python3", os.path.join(EXAMPLES, "example.py"), addr])
        assert p.returncode == 0, p.stderr
        assert lines(p) == expected_example_output(ref, name_email)


def test_php_example(objcached, ref):
    php = shutil.which("php")
    # scripts/deps.sh installs both: missing, the test fails (none is skipped)
    assert php is not None, "php-cli is not installed (scripts/deps.sh installs it)"
    assert b"memcached" in subprocess.run([php, "-m"], capture_output=True, timeout=30).stdout, \
        "php-memcached is not installed (scripts/deps.sh installs it)"
    for addr in (tcp(objcached), unix(objcached)):
        p = run([php, os.path.join(EXAMPLES, "example.php"), addr])
        assert p.returncode == 0, p.stderr
        assert p.stderr == b""
        assert lines(p) == expected_example_output(ref, name_email)


def test_ruby_dalli_example(objcached, ref):
    """Debian 12's Dalli (3.0.6) speaks memcached's binary protocol
    (tests/integration/test_binary.py): its get_multi is GETKQs then NOOP."""
    ruby = shutil.which("ruby")
    assert ruby, "ruby and ruby-dalli are not installed (scripts/deps.sh installs them)"
    before = objcached.stats()["bin_connections"]
    for addr in (tcp(objcached), unix(objcached)):
        p = run([ruby, os.path.join(EXAMPLES, "example.rb"), addr])
        assert p.returncode == 0, p.stderr
        assert p.stderr == b""
        assert lines(p) == expected_example_output(ref, name_email)
    assert objcached.stats()["bin_connections"] == before + 2


# ------------------------------------------------------------------ installing

def test_install_and_build_against_it(objcached, ref, build_dir, tmp_path):
    """cmake --install, then the doc's example built three ways against the
    installed files: pkg-config (shared and static) and find_package."""
    prefix = tmp_path / "prefix"
    run(["cmake", "--install", build_dir, "--prefix", str(prefix),
         "--component", "objcache_client"], timeout=120)
    libdir = next(d for d in (prefix / "lib", prefix / "lib64") if d.is_dir())
    for f in ("include/objcache.h", "bin/objcache"):
        assert (prefix / f).is_file(), f
    for f in ("libobjcache.so.0.1.0", "libobjcache.a", "pkgconfig/objcache.pc",
              "cmake/objcache/objcacheConfig.cmake", "cmake/objcache/objcacheConfigVersion.cmake",
              "cmake/objcache/objcacheTargets.cmake"):
        assert (libdir / f).is_file(), f
    assert os.readlink(libdir / "libobjcache.so.0") == "libobjcache.so.0.1.0"
    assert os.readlink(libdir / "libobjcache.so") == "libobjcache.so.0"
    dyn = run(["readelf", "-d", str(libdir / "libobjcache.so")]).stdout
    assert b"Library soname: [libobjcache.so.0]" in dyn
    # Only the API of objcache.h is exported.
    syms = run(["nm", "-D", "--defined-only", str(libdir / "libobjcache.so")]).stdout.decode()
    exported = {l.split()[-1] for l in syms.splitlines() if l.split()[1] in "TD"}
    assert exported and all(s.startswith("objcache_") for s in exported), exported
    assert "objcache_parse_feed" not in exported

    flags = ["-fsanitize=address,undefined"] if sanitized_build(build_dir) else []
    example = os.path.join(EXAMPLES, "example.c")
    env = {"PKG_CONFIG_PATH": str(libdir / "pkgconfig")}
    cflags = run(["pkg-config", "--cflags", "objcache"], env=env).stdout.decode().split()
    libs = run(["pkg-config", "--libs", "objcache"], env=env).stdout.decode().split()
    slibs = run(["pkg-config", "--static", "--libs", "objcache"], env=env).stdout.decode().split()
    want = expected_example_output(ref, lambda k, d: f"{k} = {d.decode()}")

    shared = tmp_path / "example-shared"
    p = run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", *flags, *cflags, example,
             "-o", str(shared), *libs], timeout=120)
    assert p.returncode == 0, p.stderr
    static = tmp_path / "example-static"
    p = run(["cc", "-std=c11", *flags, *cflags, example, "-o", str(static),
             str(libdir / "libobjcache.a"), *[f for f in slibs if f != "-lobjcache"]],
            timeout=120)
    assert p.returncode == 0, p.stderr

    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\n"
        "project(uses_objcache C)\n"
        "find_package(objcache 0.1 REQUIRED)\n"
        f"add_executable(example {example})\n"
        "target_link_libraries(example PRIVATE objcache::objcache)\n")
    p = run(["cmake", "-S", str(proj), "-B", str(proj / "b"), f"-DCMAKE_PREFIX_PATH={prefix}",
             f"-DCMAKE_C_FLAGS={' '.join(flags)}"], timeout=120)
    assert p.returncode == 0, p.stderr
    p = run(["cmake", "--build", str(proj / "b")], timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr

    for exe, env in ((shared, {"LD_LIBRARY_PATH": str(libdir)}), (static, {}),
                     (proj / "b" / "example", {})):
        p = run([str(exe), tcp(objcached)], env=env)
        assert p.returncode == 0, (exe, p.stderr)
        assert lines(p)[:3] == want, exe
        assert lines(p)[3] in ("push: stored", "push: not stored (NOT_STORED)")
    # the shared one really loads the installed library
    ldd = run(["ldd", str(shared)], env={"LD_LIBRARY_PATH": str(libdir)}).stdout.decode()
    assert str(libdir / "libobjcache.so.0") in ldd


def test_cli_tombstone_of_many_keys_goes_on_after_not_found(cli_bin):
    """`objcache tombstone A:1 B:2 C:3` against a server that has nothing to
    delete for A:1 (a plain memcached answers NOT_FOUND, objcache.h): B:2 and
    C:3 must still be deleted and reported; exit 1 (a key not found)."""
    def deleter(server, conn, n):
        while True:
            req = server.read_request(conn)
            if req is None:
                return
            conn.sendall(b"NOT_FOUND\r\n" if b"A:1" in req else b"DELETED\r\n")

    with FakeServer(deleter) as server:
        p = run([cli_bin, "--addr", server.addr, "tombstone", "A:1", "B:2", "C:3"])
        assert server.requests == [b"delete A:1\r\n", b"delete B:2\r\n", b"delete C:3\r\n"], \
            (server.requests, p.stdout, p.stderr)
        assert p.stdout == b"A:1 (not found)\nB:2 deleted\nC:3 deleted\n"
        assert p.returncode == 1


def test_cli_batch_line_with_a_nul_byte_does_not_run_its_rest(cli_bin):
    """A batch line over the 1 MiB limit is skipped whole ("its rest must not
    run as a command", objcache_cli.c). With a NUL byte early in the line,
    strlen() hid the overflow and the line's tail ran as a command of its
    own: here a comment line ends in `tombstone User:1`, which was sent."""
    def recorder(server, conn, n):
        while True:
            req = server.read_request(conn)
            if req is None:
                return
            conn.sendall(b"DELETED\r\n" if req.startswith(b"delete") else b"VERSION x\r\n")

    line = b"#\0" + b"x" * ((1 << 20) - 1 - 2) + b"tombstone User:1\n"
    with FakeServer(recorder) as server:
        p = run([cli_bin, "--addr", server.addr, "batch"], input=line + b"version\n")
        assert server.requests == [b"version\r\n"], (server.requests, p.stdout, p.stderr)
        assert p.stdout == b"x\n"
        assert p.returncode == 2  # the bad line is a usage error, as an over-long one is


def test_cli_output_that_cannot_be_written_is_not_exit_0(cli_bin):
    """`objcache get K > /dev/full`: the object could not be printed, so the
    command did not do its job; exit 0 ("done") hid it, with no message."""
    def answer(server, conn, n):
        server.read_request(conn)
        conn.sendall(b"VALUE User:1 0 2\r\n{}\r\nEND\r\n")
        wait_for_close(conn)

    with FakeServer(answer) as server, open("/dev/full", "wb") as full:
        p = subprocess.run([cli_bin, "--addr", server.addr, "get", "User:1"],
                           stdout=full, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 3, p.stderr
    assert b"No space left on device" in p.stderr


NOT_JSON = [
    # a value that would add a member of its own to --json's object
    (b'1,"User:2":{"x":1}', '1,"User:2":{"x":1}'),
    # bytes that are not UTF-8, and a terminal escape
    (b"\xff\xfe\x1b[2J", "\ufffd\ufffd\x1b[2J"),
    # a line of its own in plain output
    (b'{}\nUser:2 {"x":1}', '{}\nUser:2 {"x":1}'),
]


def answering_user_1(value):
    """A FakeServer handler that answers any get with User:1 = value."""
    def answer(server, conn, n):
        server.read_request(conn)
        conn.sendall(b"VALUE User:1 0 %d\r\n%s\r\nEND\r\n" % (len(value), value))
        wait_for_close(conn)
    return answer


@pytest.mark.parametrize("value,as_string", NOT_JSON,
                         ids=[str(i) for i in range(len(NOT_JSON))])
def test_cli_value_that_is_not_json(cli_bin, value, as_string):
    """A hostile (or plain memcached) server's value that is not JSON text:
    `get --json` wrote it raw into its "one JSON object", which could then be
    invalid (non-UTF-8 bytes) or hold members the server made up (User:2
    here); plain output got lines the server made up. It is now written as a
    JSON string, with a message and exit 3 (a bad reply); output stays one
    line per key, one JSON object with the keys asked."""
    with FakeServer(answering_user_1(value)) as server:
        p = run([cli_bin, "--addr", server.addr, "--json", "get", "User:1", "User:2"])
        assert p.returncode == 3, (p.stdout, p.stderr)
        assert json.loads(p.stdout.decode("utf-8")) == {"User:1": as_string, "User:2": None}
        assert p.stdout.count(b"\n") == 1
        assert p.stderr == b"objcache: get User:1: the server's value is not JSON " \
            b"(written as a JSON string)\n", p.stderr
        p = run([cli_bin, "--addr", server.addr, "get", "User:1", "User:2"])
        assert p.returncode == 3, (p.stdout, p.stderr)
        out = p.stdout.decode("utf-8").splitlines()
        assert len(out) == 2 and out[1] == "User:2 (not found)", out
        assert out[0].startswith("User:1 ")
        assert json.loads(out[0][len("User:1 "):]) == as_string


# JSON text whose strings hold raw C1 controls (U+009B is a CSI to terminals
# that take C1 controls in UTF-8, as xterm does) or DEL: valid JSON, so the
# value is written as the server sent it, but with those as \u escapes (the
# same JSON); U+00A0 and U+2028 stay raw, being no controls to a terminal.
C1_JSON = [
    (b'{"a":"\xc2\x9b2J"}', b'{"a":"\\u009b2J"}', {"a": "\x9b2J"}),
    (b'["\x7f","\xc2\x80\xc2\x9f\xc2\xa0","\xe2\x80\xa8"]',
     b'["\\u007f","\\u0080\\u009f\xc2\xa0","\xe2\x80\xa8"]',
     ["\x7f", "\x80\x9f\xa0", "\u2028"]),
]


@pytest.mark.parametrize("value,shown,decoded", C1_JSON,
                         ids=[str(i) for i in range(len(C1_JSON))])
def test_cli_json_value_with_c1_controls(cli_bin, value, shown, decoded):
    """A JSON value carrying raw C1 controls or DEL in its strings was
    written raw (it is JSON text), reaching a terminal as controls. They are
    now written as \\u escapes: the value means the same, exit 0."""
    with FakeServer(answering_user_1(value)) as server:
        p = run([cli_bin, "--addr", server.addr, "--json", "get", "User:1"])
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert p.stdout == b'{"User:1":' + shown + b"}\n", p.stdout
        assert json.loads(p.stdout.decode("utf-8")) == {"User:1": decoded}
        p = run([cli_bin, "--addr", server.addr, "get", "User:1"])
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert p.stdout == b"User:1 " + shown + b"\n", p.stdout


def test_cli_not_json_value_with_c1_controls(cli_bin):
    """A value that is not JSON is written as a JSON string: its DEL was
    escaped there, but a C1 control went out raw inside it."""
    value = b"\xc2\x9b2J \x7f"

    with FakeServer(answering_user_1(value)) as server:
        p = run([cli_bin, "--addr", server.addr, "--json", "get", "User:1"])
        assert p.returncode == 3, (p.stdout, p.stderr)
        assert p.stdout == b'{"User:1":"\\u009b2J \\u007f"}\n', p.stdout
        assert json.loads(p.stdout.decode("utf-8")) == {"User:1": "\x9b2J \x7f"}

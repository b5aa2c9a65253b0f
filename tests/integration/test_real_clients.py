"""Real memcached clients against a real objcached, each in its own language
(tests/clients/: Python, PHP, Ruby, Node, Go), over TCP and the unix socket
where the client can: a multi-get of existing and absent objects, a push, a
get of it, a tombstone and a get of that, every value checked byte for byte
against PostgreSQL's row_to_json (conftest's Reference). Also the Node and
Go examples of docs/client.md (client/examples/), which need the same
installs (test_client.py runs the others).

Nothing here is skipped: the Debian packages come from scripts/deps.sh
(which the test command runs), and the Node clients are installed by this
file with `npm ci` from tests/clients/package-lock.json into the build
tree; a client that is missing fails its test. What a client cannot do
(memjs has no unix socket) is in NOT_SUPPORTED, and docs/client.md must
say so (test_doc_lists_what_clients_cannot_do).

Each client's wire protocol is checked from the daemon's own counters: a
binary client opens binary connections (bin_connections), a text client
none; and each multi-get is one memcached read (mc_gets).

test_client_timeout_shorter_than_a_load: what each client does when its read
timeout is shorter than a load (small programs of its own, below): all close
the connection, so none reads the late reply as the next key's."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
CLIENTS_DIR = os.path.join(SRC, "tests", "clients")

# name: (argv after the interpreter lookup, binary protocol?, transports)
CLIENTS = {
    "pymemcache": (["/usr/bin/python3", "client.py", "pymemcache"], False, ("tcp", "unix")),
    "pylibmc": (["/usr/bin/python3", "client.py", "pylibmc"], False, ("tcp", "unix")),
    "pylibmc-binary": (["/usr/bin/python3", "client.py", "pylibmc-binary"], True,
                       ("tcp", "unix")),
    "php-memcached": (["php", "client.php", "ascii"], False, ("tcp", "unix")),
    "php-memcached-binary": (["php", "client.php", "binary"], True, ("tcp", "unix")),
    "dalli": (["ruby", "client.rb"], True, ("tcp", "unix")),
    "memjs": (["node", "client.js", "memjs"], True, ("tcp",)),
    "node-memcached": (["node", "client.js", "memcached"], False, ("tcp", "unix")),
    "gomemcache": (["GO"], False, ("tcp", "unix")),
}

# What a client cannot do, and the words docs/client.md uses for it.
NOT_SUPPORTED = {("memjs", "unix"): "no unix socket"}

GET_KEYS = ["User:1", "User:2", "User:3", "User:999999", "Counter:3", "Counter:999999",
            "Page:home", "Page:zz-nope", "User:42", "Counter:50"]

CASES = [(name, t) for name, (_, _, ts) in CLIENTS.items() for t in ts]


# push_check off: with it, a tombstone of a row PostgreSQL still has (these tests
# tombstone rows they did not delete) is replaced by the row once checked
# (test_write_path.py::test_late_tombstone_after_the_row_came_back).
NO_CHECK = {"model User": {"push_check": "off"}}


@pytest.fixture(scope="session")
def build_dir(objcached_bin):
    return os.path.dirname(os.path.abspath(objcached_bin))


@pytest.fixture(scope="session")
def node_modules(build_dir):
    """tests/clients' package-lock.json installed with `npm ci` under the
    build tree, again only when the lock file changes."""
    npm = shutil.which("npm")
    assert npm, "npm is not installed (scripts/deps.sh installs nodejs and npm)"
    dest = os.path.join(build_dir, "node-clients")
    lock = os.path.join(CLIENTS_DIR, "package-lock.json")
    with open(lock, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(dest, "installed.sha256")
    if os.path.exists(stamp) and open(stamp).read() == digest and \
            os.path.isdir(os.path.join(dest, "node_modules")):
        return dest
    os.makedirs(dest, exist_ok=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(CLIENTS_DIR, f), dest)
    p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=dest,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"npm ci failed:\n{p.stdout}\n{p.stderr}"
    with open(stamp, "w") as f:
        f.write(digest)
    return dest


@pytest.fixture(scope="session")
def go_client(build_dir):
    """client.go built offline against Debian's gomemcache (GOPATH mode)."""
    go = shutil.which("go")
    assert go, "go is not installed (scripts/deps.sh installs golang-go)"
    gopath = "/usr/share/gocode"
    assert os.path.isdir(os.path.join(gopath, "src/github.com/bradfitz/gomemcache")), \
        "golang-github-bradfitz-gomemcache-dev is not installed (scripts/deps.sh)"
    out_dir = os.path.join(build_dir, "go-client")
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, "client")
    env = dict(os.environ, GO111MODULE="off", GOPATH=gopath, GOFLAGS="", GOPROXY="off",
               GOCACHE=os.path.join(out_dir, "cache"), CGO_ENABLED="0")
    p = subprocess.run([go, "build", "-o", exe, os.path.join(CLIENTS_DIR, "client.go")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"go build failed:\n{p.stderr}"
    return exe


def argv_of(name, go_client):
    argv = list(CLIENTS[name][0])
    if argv == ["GO"]:
        return [go_client]
    exe = shutil.which(argv[0]) if not argv[0].startswith("/") else argv[0]
    assert exe, f"{argv[0]} is not installed (scripts/deps.sh)"
    return [exe, os.path.join(CLIENTS_DIR, argv[1])] + argv[2:]


def address(name, transport, oc, tmp_path):
    if transport == "tcp":
        return f"127.0.0.1:{oc.port}"
    if name == "node-memcached":
        # memcached 2.2.2 appends ":11211" to a server string that does not
        # end in ":<digits>", which breaks a plain socket path; a path that
        # does end so is taken as it is (docs/client.md).
        link = str(tmp_path / "objcached.sock:0")
        os.symlink(oc.sock, link)
        return link
    return oc.sock


def b64(data):
    return None if data is None else base64.b64encode(data).decode()


def run_client(name, job, node_modules, go_client):
    """Run one client program on `job`; its result."""
    env = dict(os.environ, NODE_PATH=os.path.join(node_modules, "node_modules"))
    p = subprocess.run(argv_of(name, go_client), input=json.dumps(job), env=env,
                       capture_output=True, text=True, timeout=120, cwd=CLIENTS_DIR)
    assert p.returncode == 0, f"{name} failed (exit {p.returncode}):\n{p.stderr}"
    return json.loads(p.stdout)


@pytest.mark.parametrize("name,transport", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_client(objcached_factory, ref, name, transport, node_modules, go_client, tmp_path):
    objcached = objcached_factory(NO_CHECK)
    i = CASES.index((name, transport))
    push_id, tomb_id = 150 + 2 * i, 151 + 2 * i
    pushed = b"{ " + ref.json("User", push_id)[1:]   # the row, spaced: the check agrees
    job = {"addr": address(name, transport, objcached, tmp_path), "get": GET_KEYS,
           "push_key": f"User:{push_id}", "push_value": b64(pushed),
           "tombstone": f"User:{tomb_id}"}
    want_get = {k: b64(ref.json(k.split(":")[0], k.split(":")[1] if k.startswith("Page")
                                else int(k.split(":")[1])))
                for k in GET_KEYS}
    assert sum(v is not None for v in want_get.values()) == 7
    before = objcached.stats()
    got = run_client(name, job, node_modules, go_client)
    after = objcached.stats()
    assert got["get"] == want_get
    assert got["push"] is True
    assert got["after_push"] == b64(pushed)
    assert got["tombstone"] is True
    assert got["after_tombstone"] is None
    # the protocol it spoke, and one memcached read per multi-get
    binary = CLIENTS[name][1]
    assert (after["bin_connections"] > before["bin_connections"]) == binary, \
        (name, before["bin_connections"], after["bin_connections"])
    reads = after["mc_gets"] - before["mc_gets"]
    if name == "memjs":     # pipelined plain GETs: as many reads as its writes
        assert 3 <= reads <= len(GET_KEYS) + 2, reads
    else:
        assert reads == 3, reads    # the multi-get, and the two single gets
    assert after["client_errors"] == before["client_errors"]
    assert after["server_errors"] == before["server_errors"]


TCP_CLIENTS = [name for name, (_, _, ts) in CLIENTS.items() if "tcp" in ts]


@pytest.mark.parametrize("name", TCP_CLIENTS)
def test_client_pushes_a_large_value(objcached_factory, name, node_modules, go_client,
                                     tmp_path):
    """A push of 8 KiB of JSON, read back byte for byte. Dalli 3.0.6 (from
    4 KiB) and php-memcached (over 2000 bytes) compress such a value by
    default, which objcached refuses as not JSON (Dalli: "Response error 4",
    php-memcached: a client error): the programs here turn compression off,
    as docs/client.md tells their users to."""
    objcached = objcached_factory(NO_CHECK)
    ident = 190 + TCP_CLIENTS.index(name)
    value = b'{"id":%d,"note":"' % ident + b"n" * 8192 + b'"}'
    job = {"addr": address(name, "tcp", objcached, tmp_path), "get": ["User:1"],
           "push_key": f"User:{ident}", "push_value": b64(value),
           "tombstone": f"User:{ident + 20}"}
    got = run_client(name, job, node_modules, go_client)
    assert got["push"] is True
    assert got["after_push"] == b64(value)
    assert got["tombstone"] is True and got["after_tombstone"] is None


def test_doc_lists_what_clients_cannot_do():
    with open(os.path.join(SRC, "docs", "client.md"), encoding="utf-8") as f:
        doc = f.read()
    for (name, transport), words in NOT_SUPPORTED.items():
        assert transport not in CLIENTS[name][2]
        row = next((line for line in doc.splitlines()
                    if line.startswith("|") and re.search(rf"\b{re.escape(name)}\b", line)),
                   None)
        assert row is not None, f"docs/client.md has no table row for {name}"
        assert words in row, f"docs/client.md's row for {name} does not say {words!r}"


def example_output(ref):
    out = []
    for key, ident in (("User:1", 1), ("User:2", 2), ("User:999999", 999999)):
        data = ref.json("User", ident)
        if data is None:
            out.append(f"{key}: not found")
        else:
            user = json.loads(data)
            out.append(f"{key} = {user['name']} <{user['email']}>")
    return out


def test_node_and_go_examples(objcached, ref, node_modules, build_dir):
    examples = os.path.join(SRC, "client", "examples")
    out_dir = os.path.join(build_dir, "go-client")
    os.makedirs(out_dir, exist_ok=True)
    go_example = os.path.join(out_dir, "example")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
               GOPROXY="off", GOCACHE=os.path.join(out_dir, "cache"), CGO_ENABLED="0")
    p = subprocess.run([shutil.which("go") or "go", "build", "-o", go_example,
                        os.path.join(examples, "example.go")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    node = shutil.which("node")
    assert node, "nodejs is not installed (scripts/deps.sh)"
    runs = [([node, os.path.join(examples, "example.js"), f"127.0.0.1:{objcached.port}"],
             True),
            ([go_example, f"127.0.0.1:{objcached.port}"], False),
            ([go_example, f"unix:{objcached.sock}"], False)]
    for argv, binary in runs:
        before = objcached.stats()["bin_connections"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ,
                                    NODE_PATH=os.path.join(node_modules, "node_modules")))
        assert p.returncode == 0, (argv, p.stderr)
        assert p.stdout.splitlines() == example_output(ref), argv
        assert (objcached.stats()["bin_connections"] > before) == binary, argv



# What each client makes of a get that objcached fails (PostgreSQL down and the
# key not cached: SERVER_ERROR load failed, binary 0x84), which the app must
# never take for "no such row": a multi-get of a cached and a cold key, and a
# single get of a cold key. "error": the client raises or reports it; "miss":
# the cold key comes back absent, no error; "all missing": both keys come back
# absent (a text multi-get fails as a whole). libmemcached reports any error
# answer to a get as "not found" (its fetch.cc: no value read ->
# MEMCACHED_NOTFOUND); Dalli 3.0.6 ends a multi-get at the error reply and
# drops the keys after it; npm's memcached 2.2.2 drops a failed getMulti's
# error. No answer objcached could send changes that (closing the connection
# instead: pylibmc's get then raises, its get_multi still returns {}), so
# docs/client.md says so in each such client's row, in these words.
LOAD_FAILURE = {
    "pymemcache": ("error", "error"),
    "pylibmc": ("all missing", "miss"),
    "pylibmc-binary": ("miss", "miss"),
    "php-memcached": ("all missing", "miss"),
    "php-memcached-binary": ("error", "miss"),
    "dalli": ("miss", "error"),
    "memjs": ("error", "error"),
    "node-memcached": ("all missing", "error"),
    "gomemcache": ("error", "error"),
}
LOAD_FAILURE_WORDS = "a failed load reads as a miss"
# Each client's row in docs/client.md's table starts with these words.
DOC_ROWS = {"pymemcache": "pymemcache", "pylibmc": "pylibmc", "pylibmc-binary": "pylibmc",
            "php-memcached": "php-memcached", "php-memcached-binary": "php-memcached",
            "dalli": "Dalli", "memjs": "memjs", "node-memcached": "memcached 2.2.2",
            "gomemcache": "gomemcache"}


def outcome(name, job, node_modules, go_client):
    """What a client program made of `job`: its result, or "error" when the
    client raised (the programs exit non-zero on any error but a miss)."""
    env = dict(os.environ, NODE_PATH=os.path.join(node_modules, "node_modules"))
    p = subprocess.run(argv_of(name, go_client), input=json.dumps(job), env=env,
                       capture_output=True, text=True, timeout=60, cwd=CLIENTS_DIR)
    # Dalli logs its warnings to stdout: the result is the last line.
    return json.loads(p.stdout.splitlines()[-1]) if p.returncode == 0 else "error"


def test_clients_on_a_failed_load(objcached_factory, pg, ref, node_modules, go_client):
    """PostgreSQL down: objcached answers a cold key's get with an error, and
    half of the clients hand the app "not found" for a row that exists
    (LOAD_FAILURE); docs/client.md must say so for each of them."""
    objcached = objcached_factory({"objcached": {"load_timeout": "1s"}})
    addr = f"127.0.0.1:{objcached.port}"
    cached = ref.json("User", 1)
    got = run_client("pymemcache", {"addr": addr, "get": ["User:1"]}, node_modules, go_client)
    assert got["get"] == {"User:1": b64(cached)}
    objcached.wait_idle()
    colds = {name: (70 + 2 * i, 71 + 2 * i) for i, name in enumerate(LOAD_FAILURE)}
    assert all(ref.json("User", i) for pair in colds.values() for i in pair)
    before = objcached.stats()["server_errors"]
    seen = {}
    pg.stop()
    try:
        for name, (cold, cold_one) in colds.items():
            multi = outcome(name, {"addr": addr, "get": ["User:1", f"User:{cold}"]},
                            node_modules, go_client)
            if multi != "error":
                assert multi["get"][f"User:{cold}"] is None, (name, multi)
                multi = "all missing" if multi["get"]["User:1"] is None else "miss"
            one = outcome(name, {"addr": addr, "get_one": f"User:{cold_one}"}, node_modules,
                          go_client)
            if one != "error":
                assert one == {"one": None}, (name, one)
                one = "miss"
            seen[name] = (multi, one)
    finally:
        pg.start()
    assert seen == LOAD_FAILURE
    # objcached answered every one of them with an error (two gets each)
    assert objcached.stats()["server_errors"] - before >= 2 * len(LOAD_FAILURE)
    with open(os.path.join(SRC, "docs", "client.md"), encoding="utf-8") as f:
        rows = [line for line in f.read().splitlines() if line.startswith("| ")]
    silent = {DOC_ROWS[name] for name, got in LOAD_FAILURE.items() if got != ("error", "error")}
    for client in set(DOC_ROWS.values()):
        row = next(line for line in rows if line.startswith(f"| {client} "))
        assert (LOAD_FAILURE_WORDS in row) == (client in silent), (client, row)


def test_refused_commands_that_clients_report_done(objcached_factory, ref):
    """Two defaults that turn a command objcached refuses into success, which
    docs/client.md warns of: pymemcache sends add, replace, append, prepend
    and touch with noreply (as set, delete and flush_all), so it returns True
    for each, and objcached sends nothing (noreply_errors counts them);
    pylibmc in binary returns True from flush_all, whose refusal (0x83) its
    libmemcached reads and drops. The cache is untouched either way."""
    import pylibmc
    from pymemcache.client.base import Client
    objcached = objcached_factory(NO_CHECK)
    u1 = ref.json("User", 1)
    pm = Client(("127.0.0.1", objcached.port), connect_timeout=2, timeout=6)
    before = objcached.stats()
    assert pm.add("User:180", b'{"id":180}') is True
    assert pm.replace("User:1", b'{"id":1}') is True
    assert pm.append("User:1", b" ") is True
    assert pm.touch("User:1", 60) is True
    assert pm.get("User:1") == u1
    assert pm.get("User:180") == ref.json("User", 180)
    harness.wait_until(
        lambda: objcached.stats()["noreply_errors"] - before["noreply_errors"] == 4,
        what="four noreply errors")
    lib = pylibmc.Client([f"127.0.0.1:{objcached.port}"], binary=True)
    before = objcached.stats()["server_errors"]
    assert lib.flush_all() is True
    assert objcached.stats()["server_errors"] - before == 1
    assert lib.get("User:1") == u1
    with open(os.path.join(SRC, "docs", "client.md"), encoding="utf-8") as f:
        rows = [line for line in f.read().splitlines() if line.startswith("| ")]
    row = next(line for line in rows if line.startswith("| pymemcache "))
    assert "`add`, `replace`, `append`, `prepend` and `touch` return `True`" in row
    row = next(line for line in rows if line.startswith("| pylibmc "))
    assert "`flush_all()` returns `True`" in row


def test_django_cache_framework(objcached_factory, ref):
    """Django's cache framework on both of its memcached backends
    (python3-django 3.2, tests/clients/client_django.py). With Django's key
    function every key is sent as ':1:User:1', which objcached refuses:
    PyMemcacheCache raises, and PyLibMCCache hands the app a miss for a row
    that exists (libmemcached reads the error as not found). With a
    KEY_FUNCTION that sends the key as given (docs/client.md), reads, pushes
    and tombstones work on both."""
    oc = objcached_factory(NO_CHECK)
    keys = ["User:1", "User:2", "User:999999"]
    pushes = {"pymemcache-as-is": ("User:181", b'{"id":181,"name":"from django"}'),
              "pylibmc-as-is": ("User:182", b'{"id":182,"name":"from django"}')}
    job = {"addr": f"127.0.0.1:{oc.port}", "key": "User:1", "keys": keys,
           "push": {name: [k, b64(v)] for name, (k, v) in pushes.items()}}
    p = subprocess.run(["/usr/bin/python3", "client_django.py"], input=json.dumps(job),
                       capture_output=True, text=True, timeout=60, cwd=CLIENTS_DIR)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.splitlines()[-1])
    u1, u2 = b64(ref.json("User", 1)), b64(ref.json("User", 2))
    # Django's own key function: refused loudly by one backend, silently by the other
    assert got["pymemcache"]["get"].startswith("error: "), got["pymemcache"]
    assert got["pymemcache"]["get_many"].startswith("error: "), got["pymemcache"]
    assert got["pylibmc"] == {"get": None, "get_many": {}}, got["pylibmc"]
    for name in ("pymemcache-as-is", "pylibmc-as-is"):
        r = got[name]
        assert r["get"] == u1, (name, r)
        assert r["get_many"] == {"User:1": u1, "User:2": u2}, (name, r)  # no absent key
        assert r["set"] == "done" and r["after_set"] == b64(pushes[name][1]), (name, r)
        assert r["delete"] is True and r["after_delete"] is None, (name, r)
    # what docs/client.md tells a Django user, in these words
    with open(os.path.join(SRC, "docs", "client.md"), encoding="utf-8") as f:
        doc = f.read()
    assert "KEY_FUNCTION" in doc and "PyLibMCCache" in doc


def test_rails_push_example_needs_raw_on_each_set(objcached_factory, ref):
    """docs/protocol.md's Rails push, with Dalli 3.0.6: the JSON string is
    Marshaled unless `raw: true` comes with the call, and objcached refuses
    that (the example left it out before 2026-12-06)."""
    oc = objcached_factory(NO_CHECK)
    rb = ('require "dalli"\n'
          f'c = Dalli::Client.new("127.0.0.1:{oc.port}")\n'
          'begin; c.set("User:5", %q({"id":5,"name":"x"})); puts "stored"; '
          'rescue Dalli::DalliError => e; puts e.message; end\n'
          'c.set("User:6", %q({"id":6,"name":"from rails"}), nil, raw: true)\n'
          'puts c.get("User:6")\n')
    p = subprocess.run(["ruby", "-e", rb], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "Response error 4: Invalid arguments", out
    assert out[1] == '{"id":6,"name":"from rails"}', out
    with open(os.path.join(SRC, "docs", "protocol.md"), encoding="utf-8") as f:
        doc = f.read()
    assert 'OBJCACHE.set("User:#{id}", attributes.to_json, nil, raw: true)' in doc


# ------------------------------------------------------- a client timeout shorter than a load
#
# A get of a key objcached does not cache waits for PostgreSQL, up to
# load_timeout (5 s by default). A client whose read timeout is shorter gives
# up first; objcached answers later, on the same connection. A client that
# then closes the connection loses nothing; one that keeps it reads that late
# reply as the reply to its next command: another key's value. Each program
# below gets key A (slow: the users table is locked), prints what it got,
# waits for a line on stdin (sent once the lock is gone and the load done),
# gets key B on the same client and prints that. TIMEOUT_MS is each client's
# read timeout here (gomemcache: its default, 100 ms).
TIMEOUT_MS = 300
# The Python clients' part after making `c`: get A, wait for the go, get B.
PY_GET_A_THEN_B = """
def get(k):
    try:
        v = c.get(k)
        return "miss" if v is None else "value " + base64.b64encode(v).decode()
    except Exception as e:
        return "error " + type(e).__name__
print(get(sys.argv[3]), flush=True)
sys.stdin.readline()
print(get(sys.argv[4]), flush=True)
"""
# Dalli 3.0.6 sends a call that failed on a network error (its timeout
# too) again on a new connection (Client#perform: rescue NetworkError,
# retry) until the server is marked down: socket_max_failures failures.
DALLI_LATE = """
require 'base64'
require 'dalli'
require 'logger'
$stdout.sync = true
Dalli.logger = Logger.new($stderr)
c = Dalli::Client.new(ARGV[0], socket_timeout: ARGV[1].to_i / 1000.0, **OPTIONS)
get = lambda do |k|
  v = c.get(k, raw: true)
  v.nil? ? 'miss' : 'value ' + Base64.strict_encode64(v)
rescue StandardError => e
  'error ' + e.class.name
end
puts get.call(ARGV[2])
$stdin.gets
puts get.call(ARGV[3])
"""
LATE_PROGRAMS = {
    "pymemcache": ("py", """
import base64, sys
from pymemcache.client.base import Client
host, port = sys.argv[1].rsplit(":", 1)
c = Client((host, int(port)), connect_timeout=2, timeout=int(sys.argv[2]) / 1000)
""" + PY_GET_A_THEN_B),
    # A client that keeps its connection after a timeout (none of the above):
    # the control, which shows this test sees a desync when there is one.
    "keeps-connection": ("py", """
import base64, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=int(sys.argv[2]) / 1000)
buf = b""
def read_until(n=None):
    global buf
    while (b"\\r\\n" not in buf) if n is None else (len(buf) < n):
        buf += s.recv(65536)
    end = buf.index(b"\\r\\n") + 2 if n is None else n
    out, buf = buf[:end], buf[end:]
    return out
def get(k):
    s.sendall(b"get %s\\r\\n" % k.encode())
    try:
        line = read_until()
        if line == b"END\\r\\n":
            return "miss"
        if not line.startswith(b"VALUE "):
            return "error " + line.decode().strip()
        v = read_until(int(line.split()[3]) + 2)[:-2]
        read_until()
        return "value " + base64.b64encode(v).decode()
    except OSError as e:        # the timeout: the connection is kept
        return "error " + type(e).__name__
print(get(sys.argv[3]), flush=True)
sys.stdin.readline()
print(get(sys.argv[4]), flush=True)
"""),
    "pylibmc": ("py", """
import base64, sys
import pylibmc
ms = int(sys.argv[2])
c = pylibmc.Client([sys.argv[1]], binary=IS_BINARY,
                   behaviors={"_poll_timeout": ms})
""" + PY_GET_A_THEN_B),
    "php-memcached": ("php", """<?php
$m = new Memcached();
$m->setOption(Memcached::OPT_BINARY_PROTOCOL, IS_BINARY);
[$host, $port] = explode(':', $argv[1]);
$m->addServer($host, (int)$port);
$m->setOption(Memcached::OPT_POLL_TIMEOUT, (int)$argv[2]);
function get($m, $k) {
    $v = $m->get($k);
    if ($v !== false) return 'value ' . base64_encode($v);
    if ($m->getResultCode() === Memcached::RES_NOTFOUND) return 'miss';
    return 'error ' . $m->getResultCode();
}
echo get($m, $argv[3]), "\\n";
fgets(STDIN);
echo get($m, $argv[4]), "\\n";
"""),
    "dalli": ("rb", DALLI_LATE.replace("OPTIONS", "{socket_max_failures: 1, down_retry_delay: 0}")),
    "memjs": ("js", """
const [addr, ms, a, b] = process.argv.slice(2);
// its logger (console.log by default) to stderr: stdout is the results
const c = require('memjs').Client.create(addr, { retries: 0, timeout: ms / 1000,
                                                 conntimeout: 2,
                                                 logger: { log: console.error } });
const get = (k) => c.get(k).then(
  (r) => (r.value === null ? 'miss' : 'value ' + r.value.toString('base64')),
  (e) => 'error ' + e.message.split('\\n')[0]);
const first = get(a);
// memjs 1.3.2's close handler forgets whichever connection is current: a
// timed-out connection closed by objcached (after it answers the slow get)
// while the next get's connection is still connecting leaves that get
// waiting forever (docs/client.md). The next get waits for that close.
const old = c.servers[0]._socket;
if (!old) throw new Error('memjs opened no connection for the get (its internals changed)');
first.then((r) => {
  console.log(r);
  const next = () => process.stdin.once('data', () => get(b).then((r2) => {
    process.stdout.write(r2 + '\\n', () => process.exit(0));
  }));
  if (old.closed) next(); else old.once('close', next);
});
"""),
    "node-memcached": ("js", """
const [addr, ms, a, b] = process.argv.slice(2);
const Memcached = require('memcached');
// its read timeout is `idle` (`timeout` bounds connecting only)
const c = new Memcached(addr, { retries: 0, idle: Number(ms), poolSize: 1 });
const get = (k) => new Promise((res) => c.get(k, (err, v) => res(
  err ? 'error ' + err.message.split('\\n')[0]
      : v === undefined ? 'miss' : 'value ' + Buffer.from(v).toString('base64'))));
let second = false;
const then = () => process.stdin.once('data', () => get(b).then((r2) => {
  process.stdout.write(r2 + '\\n', () => process.exit(0));
}));
// memcached 2.2.2 drops a connection idle for `idle` ms and never calls the
// get back: nothing is left to wait for, which node reports as beforeExit.
process.once('beforeExit', () => { console.log('no answer'); then(); });
get(a).then((r) => { console.log(r); then(); });
"""),
    "gomemcache": ("go", """
package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"os"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

func get(c *memcache.Client, k string) string {
	it, err := c.Get(k)
	if err == memcache.ErrCacheMiss {
		return "miss"
	}
	if err != nil {
		return "error " + err.Error()
	}
	return "value " + base64.StdEncoding.EncodeToString(it.Value)
}

func main() {
	c := memcache.New(os.Args[1]) // its default Timeout: 100 ms
	fmt.Println(get(c, os.Args[3]))
	bufio.NewReader(os.Stdin).ReadString('\\n')
	c.Timeout = 5 * time.Second // the default only for the slow get
	fmt.Println(get(c, os.Args[4]))
}
"""),
}
# What each does: (the slow get, the next get). "error": it reports the
# timeout (Dalli: see LATE_FIRST); "no answer": memcached 2.2.2 drops the connection after `idle` ms
# and never calls the get back; "B": the next get returns its own key's
# value (the client closed the timed-out connection); "A": the late reply to
# the slow get, taken for the next key's (a desync).
LATE_OUTCOME = {
    "keeps-connection": ("error", "A"),
    "pymemcache": ("error", "B"),
    "pylibmc": ("error", "B"),
    "pylibmc-binary": ("error", "B"),
    "php-memcached": ("error", "B"),
    "php-memcached-binary": ("error", "B"),
    "dalli": ("error", "B"),
    "memjs": ("error", "B"),
    "node-memcached": ("no answer", "B"),
    "gomemcache": ("error", "B"),
}
LATE_CLIENTS = list(LATE_OUTCOME)
# The slow get's error, where it is not the client's timeout. Dalli never
# reports its timeout: it sends the get again on a new connection each
# time (socket_max_failures 1 and down_retry_delay 0 here: down and back at
# once), until objcached fails the load at load_timeout (10 s here): a
# response error. test_dalli_waits_out_a_load_longer_than_its_timeout
# shows the same with Dalli's defaults.
LATE_FIRST = {"dalli": "error Dalli::DalliError"}
# The read timeout of each client, as docs/client.md names it.
LATE_DOC_WORDS = {"pymemcache": "`timeout`", "pylibmc": "`_poll_timeout`",
                  "php-memcached": "`Memcached::OPT_POLL_TIMEOUT`",
                  "Dalli": "`socket_timeout`", "memjs": "`timeout`",
                  "memcached 2.2.2": "`idle`", "gomemcache": "`Timeout`"}


def late_program(name, tmp_path, build_dir, node_modules, programs=None):
    """argv (without the program's arguments) and env of the program for
    `name` in `programs` (LATE_PROGRAMS by default)."""
    binary = name.endswith("-binary")
    lang, text = (programs or LATE_PROGRAMS)[name.replace("-binary", "")]
    text = text.replace("IS_BINARY", ("true" if lang == "php" else "True") if binary else
                        ("false" if lang == "php" else "False"))
    src = tmp_path / f"prog.{lang}"
    src.write_text(text)
    env = dict(os.environ, NODE_PATH=os.path.join(node_modules, "node_modules"))
    if lang == "py":
        return ["/usr/bin/python3", str(src)], env
    if lang in ("php", "rb"):
        return [shutil.which("php" if lang == "php" else "ruby"), str(src)], env
    if lang == "js":
        return [shutil.which("node"), str(src)], env
    out_dir = os.path.join(build_dir, "go-client")
    exe = str(tmp_path / "prog")
    genv = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
                GOPROXY="off", GOCACHE=os.path.join(out_dir, "cache"), CGO_ENABLED="0")
    p = subprocess.run([shutil.which("go"), "build", "-o", exe, str(src)], env=genv,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return [exe], env


@pytest.mark.parametrize("name", LATE_CLIENTS)
def test_client_timeout_shorter_than_a_load(objcached_factory, pg, ref, name, tmp_path,
                                            build_dir, node_modules):
    import test_failures
    oc = objcached_factory({"objcached": {"load_timeout": "10s"}})
    i = LATE_CLIENTS.index(name)
    key_a, key_b = f"User:{110 + 2 * i}", f"User:{111 + 2 * i}"
    val_a, val_b = ref.json("User", 110 + 2 * i), ref.json("User", 111 + 2 * i)
    assert val_a and val_b and val_a != val_b
    argv, env = late_program(name, tmp_path, build_dir, node_modules)
    ms = "100" if name == "gomemcache" else str(TIMEOUT_MS)
    lock = test_failures.TableLock(pg)
    # stderr to a file: Dalli logs each retry, and a pipe nobody reads
    # while the slow get lasts would fill and stop it
    errfile = tmp_path / "stderr.txt"
    try:
        with open(errfile, "w") as errf:
            p = subprocess.Popen(argv + [f"127.0.0.1:{oc.port}", ms, key_a, key_b], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=errf, text=True, cwd=str(tmp_path))
        first = p.stdout.readline().strip()
    finally:
        lock.release()
    oc.wait_idle()
    # B cached first: the get that must succeed is a hit, well inside the
    # client's short read timeout even under the sanitizer on a busy machine
    with oc.client() as c:
        assert c.get(key_b) is not None
    oc.wait_idle()
    out, _ = p.communicate("go\n", timeout=60)
    err = errfile.read_text()[-3000:]
    second = out.strip().splitlines()[-1] if out.strip() else ""
    b64 = lambda v: base64.b64encode(v).decode()
    values = {f"value {b64(val_a)}": "A", f"value {b64(val_b)}": "B"}
    got = ("no answer" if first == "no answer" else
           "error" if first.startswith("error ") else first,
           "error" if second.startswith("error ") else values.get(second, second))
    assert got == LATE_OUTCOME[name], (name, first, second, err)
    assert first == LATE_FIRST.get(name, first), (name, first, err)
    if name == "keeps-connection":
        return
    with open(os.path.join(SRC, "docs", "client.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc[doc.index("**A client timeout shorter than a load**"):]
    section = section[:section.index("\n\n")]
    assert LATE_DOC_WORDS[DOC_ROWS[name]] in section, (name, LATE_DOC_WORDS[DOC_ROWS[name]])


def test_dalli_waits_out_a_load_longer_than_its_timeout(objcached_factory, pg, ref, tmp_path,
                                                       build_dir, node_modules):
    """Dalli 3.0.6 with its defaults (socket_max_failures 2, down_retry_delay
    30 s) and a 300 ms socket_timeout, a load held up past three of its
    timeouts: it never marks the sidecar down (each connect that works
    starts its failure count again), it sends the get again on a new
    connection every socket_timeout + socket_failure_delay (0.1 s), and the
    call returns the row once the load is done, one query for all its
    resends; the next get is its own key's (docs/client.md)."""
    import test_failures
    oc = objcached_factory({"objcached": {"load_timeout": "10s"}})
    key_a, key_b = "User:140", "User:141"
    val_a, val_b = ref.json("User", 140), ref.json("User", 141)
    argv, env = late_program("dalli", tmp_path, build_dir, node_modules,
                             {"dalli": ("rb", DALLI_LATE.replace("OPTIONS", "{}"))})
    queries = oc.stats()["pg_queries"]
    lock = test_failures.TableLock(pg)
    errfile = tmp_path / "stderr.txt"
    try:
        with open(errfile, "w") as errf:
            p = subprocess.Popen(argv + [f"127.0.0.1:{oc.port}", "300", key_a, key_b], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf,
                                 text=True, cwd=str(tmp_path))
        harness.wait_until(lambda: errfile.read_text().count("Timeout::Error") >= 3,
                           timeout=8, what="Dalli's third timeout")
    finally:
        lock.release()
    first = p.stdout.readline().strip()
    oc.wait_idle()
    assert oc.stats()["pg_queries"] - queries == 1, "the resent gets did not join the load"
    out, _ = p.communicate("go\n", timeout=60)
    err = errfile.read_text()
    b64 = lambda v: base64.b64encode(v).decode()
    assert (first, out.strip()) == (f"value {b64(val_a)}", f"value {b64(val_b)}"), err[-3000:]
    assert "is down" not in err and "No server available" not in err, err[-3000:]

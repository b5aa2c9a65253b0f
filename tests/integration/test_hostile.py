"""Hostile clients, black-box: random and adversarial bytes over the socket,
huge declared lengths, 1 MiB lines, 100,000 keys, the binary protocol,
requests cut short, resets in the middle of a reply, clients that never
read, thousands of idle connections, SQL in ids, and the PostgreSQL password
kept out of every log line, stat and reply.

After each attack objcached must still be running, answer a normal client
correctly, and a well-behaved client running at the same time (Bystander)
must have seen only correct answers. Everything random uses a fixed seed,
and every loop and wait is bounded.

The bystander reads User:1..100 and a few pages; the attacks write only to
other ids (User:150.., Page:zz-..), so every answer it gets can be checked
against PostgreSQL."""

import base64
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import threading
import time
import urllib.request

import pytest

import harness

# Freed memory is held back by ASan (quarantine, 256 MiB by default), which
# would hide or fake growth in the memory checks: keep it small. A daemon
# built without ASan ignores the variable.
ASAN_ENV = {"ASAN_OPTIONS": ":".join(filter(None, [os.environ.get("ASAN_OPTIONS", ""),
                                                    "quarantine_size_mb=16"]))}
# push_check off: these tests push made-up objects (up to 512 KiB) to put
# big values in the cache; the check (test_write_path.py) would swap them
# for the rows of users 150..170 a moment later.
WRITE_TIMEOUT = {"objcached": {"write_timeout": "2s"}, "model User": {"push_check": "off"}}

PAGES = ["home", "café", "x:y", 'q"uote', "back\\slash", "日本語", "emoji-🎉", "007"]


# --------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def expected(ref):
    """{key: JSON bytes or None} for every key the bystander reads."""
    out = {f"User:{i}": ref.json("User", i) for i in range(1, 101)}
    out.update({f"Page:{p}": ref.json("Page", p) for p in PAGES})
    out["User:100000"] = None
    out["Page:zz-nope"] = None
    assert all(out[f"User:{i}"] for i in range(1, 101))
    return out


@pytest.fixture
def oc(objcached_factory):
    """objcached with write_timeout = 2s (and a small ASan quarantine)."""
    d = objcached_factory(WRITE_TIMEOUT, env=ASAN_ENV)
    yield d
    assert d.alive(), "objcached died:\n" + d.log(8000)


def connect(d, timeout=10.0, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", d.port))
    return s


def reset_close(s):
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def drain(s, quiet=0.1, total=5.0):
    """Read until `quiet` seconds pass with nothing new, EOF, or `total`
    seconds. Returns (bytes, closed)."""
    data = bytearray()
    deadline = time.monotonic() + total
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], quiet)
        if not r:
            return bytes(data), False
        try:
            chunk = s.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def send_quietly(s, data):
    """sendall that treats the server closing on us as normal."""
    try:
        s.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        return False


def status_kb(pid, field="VmRSS"):
    """A memory figure of /proc/<pid>/status, in KiB (VmRSS, VmHWM...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def rss_kb(pid):
    return status_kb(pid, "VmRSS")


def assert_healthy(d, expected, keys=("User:1", "User:42", "Page:café", "User:100000")):
    """The daemon runs and a new connection gets correct answers."""
    assert d.alive(), "objcached died:\n" + d.log(16000)
    with d.client() as c:
        values, terminal = c.get_multi(list(keys))
        assert terminal == b"END"
        want = [(k.encode(), 0, expected[k]) for k in keys if expected[k] is not None]
        assert values == want
        assert c.version().startswith(b"VERSION ")


def line_reply(c, request):
    """Send raw bytes on a McRaw, return the terminal line of one reply."""
    c.send(request)
    r = c.read_response()
    assert r.values == [] and r.lines == [], r
    return r.terminal


def serves(c, expected, key="User:1"):
    """The same connection still answers a valid get correctly."""
    assert c.get_multi([key]) == ([(key.encode(), 0, expected[key])], b"END")


class Bystander:
    """A well-behaved client next to the attacks: gets of 1..5 known keys in
    a loop, each answer compared with PostgreSQL's. Use as a context
    manager; on exit it must have made progress and seen no error."""

    def __init__(self, d, expected, seed=7):
        self.d = d
        self.expected = expected
        self.keys = sorted(expected)
        self.rng = random.Random(seed)
        self.errors = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with self.d.client(timeout=20) as c:
                while not self._stop.is_set():
                    batch = self.rng.sample(self.keys, self.rng.randint(1, 5))
                    values, terminal = c.get_multi(batch)
                    want = [(k.encode(), 0, self.expected[k]) for k in batch
                            if self.expected[k] is not None]
                    if terminal != b"END" or values != want:
                        self.errors.append(f"get {batch}: {terminal!r} {values!r}")
                        return
                    self.count += 1
                    time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - reported by __exit__
            self.errors.append(f"{type(e).__name__}: {e}")

    def __enter__(self):
        self._thread.start()
        harness.wait_until(lambda: self.count > 0 or self.errors, timeout=20,
                           what="the bystander's first answer")
        return self

    def __exit__(self, exc_type, *exc):
        start = self.count
        if exc_type is None:  # make sure it still gets answers after the attack
            harness.wait_until(lambda: self.count > start + 3 or self.errors, timeout=20,
                               what="the bystander's answers")
        self._stop.set()
        self._thread.join(timeout=30)
        if exc_type is None:
            assert not self._thread.is_alive(), "the bystander hangs"
            assert not self.errors, f"the well-behaved client saw: {self.errors}"


# --------------------------------------------------------------------------
# Random and malformed bytes


COMMANDS = [b"get", b"gets", b"set", b"add", b"cas", b"delete", b"mg", b"ms", b"md", b"mn",
            b"stats", b"version", b"incr", b"touch", b"flush_all", b"verbosity", b"bogus",
            b"GET", b"\x80", b""]
NUMBERS = [b"0", b"1", b"-1", b"2", b"17", b"4294967295", b"4294967296", b"99999999999",
           b"18446744073709551616", b"-9223372036854775809", b"1048577", b"noreply", b"0x10"]


def hostile_key(rng):
    model = rng.choice([b"User", b"Counter", b"Doc", b"Page", b"Nope", b"", b"user"])
    ident = rng.choice([
        str(rng.randint(150, 10 ** 6)).encode(), b"-" + str(rng.randint(0, 99)).encode(),
        b"zz-" + bytes(rng.randrange(33, 127) for _ in range(rng.randint(0, 12))),
        bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))), b"",
        b"6a204bd89f3c4a0ba8e9f8f6b1c1f2d3", b"x" * rng.randint(200, 300)])
    return model + rng.choice([b":", b"", b"::"]) + ident


def hostile_line(rng):
    toks = [rng.choice(COMMANDS)]
    for _ in range(rng.randint(0, 6)):
        toks.append(rng.choice([hostile_key(rng), rng.choice(NUMBERS),
                                bytes(rng.choice(b"vfkscqbtOMSTFN") for _ in range(2))]))
    sep = rng.choice([b" ", b"  ", b"\t", b"\x00", b" \r "])
    end = rng.choice([b"\r\n", b"\n", b"\r", b"", b"\x00", b"\r\r\n", b"\n\n"])
    return sep.join(toks) + end


def hostile_stream(rng, size):
    out = bytearray()
    while len(out) < size:
        kind = rng.random()
        if kind < 0.45:
            out += hostile_line(rng)
        elif kind < 0.65:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        elif kind < 0.75:
            out += b"\x00" * rng.randint(1, 100)
        elif kind < 0.85:
            out += bytes(rng.choice(b"\x01\x02\x07\x08\x0b\x0c\x1b\x7f\r")
                         for _ in range(rng.randint(1, 50)))
        elif kind < 0.92:
            # a valid push to an id the bystander never reads
            body = b'{"id":%d}' % rng.randint(150, 199)
            out += b"set User:%d 0 0 %d\r\n%s\r\n" % (rng.randint(150, 199), len(body), body)
        else:
            out += b"get User:%d Page:zz-%d\r\n" % (rng.randint(101, 200), rng.randint(0, 9))
    return bytes(out[:size])


def test_random_byte_streams(oc, expected):
    rng = random.Random(0x0C0FFEE)
    with Bystander(oc, expected):
        for i in range(60):
            payload = hostile_stream(rng, rng.randint(1, 40000))
            s = connect(oc)
            try:
                # in pieces, so that lines are split across reads
                pos = 0
                while pos < len(payload):
                    n = rng.randint(1, 8192)
                    if not send_quietly(s, payload[pos:pos + n]):
                        break
                    pos += n
                drain(s, quiet=0.05, total=2)
            finally:
                (reset_close if i % 3 == 0 else socket.socket.close)(s)
            if i % 15 == 14:
                assert_healthy(oc, expected)
    assert_healthy(oc, expected)


CONTROL_CASES = [
    # (request, reply or reply prefix)
    (b"get User:1\x00\r\n", b"CLIENT_ERROR bad key format: "),
    (b"get User:1\x7f\r\n", b"CLIENT_ERROR bad key format: "),
    (b"get Page:\x1b[31mred\r\n", b"CLIENT_ERROR bad key format: "),
    (b"get User:1\rget User:2\r\n", b"CLIENT_ERROR bad key format: "),
    (b"get \x80\r\n", b"CLIENT_ERROR bad key format: "),
    (b"get User:1\x80\r\n", b"CLIENT_ERROR bad id for bigint key: "),
    (b"\x00\x00\x00\r\n", b"ERROR"),
    (b"\x00get User:1\r\n", b"ERROR"),
    (b"get\tUser:1\r\n", b"ERROR"),
    (b"get\x00User:1\r\n", b"ERROR"),
    (b"\r\r\r\r\n", b"ERROR"),
    (b"\x01\x02\x03\x04\x05\x06\x07\x08\r\n", b"ERROR"),
    # ids that are not UTF-8, for every command that takes a key
    (b"get Page:\xff\xfe\r\n", b"CLIENT_ERROR bad id for text key: "),
    (b"gets Page:caf\xc3\r\n", b"CLIENT_ERROR bad id for text key: "),
    (b"mg Page:\xed\xa0\x80 v\r\n", b"CLIENT_ERROR bad id for text key: "),
    (b"delete Page:\xc0\xaf\r\n", b"CLIENT_ERROR bad id for text key: "),
    (b"md Page:\xf4\x90\x80\x80\r\n", b"CLIENT_ERROR bad id for text key: "),
    (b"set Page:\xff 0 0 2\r\n{}\r\n", b"CLIENT_ERROR bad id for text key: "),
    (b"ms Page:\xfe 2\r\n{}\r\n", b"CLIENT_ERROR bad id for text key: "),
    (b"mg " + base64.b64encode(b"Page:\xff\xfe") + b" b v\r\n",
     b"CLIENT_ERROR bad id for text key: "),
    # a base64 key cannot smuggle a line end into the reply
    (b"mg " + base64.b64encode(b"Page:a\r\nEND") + b" b v k\r\n",
     b"CLIENT_ERROR bad key format: "),
    (b"mg " + base64.b64encode(b"\x00\x00\x00") + b" b v\r\n", b"CLIENT_ERROR bad key format: "),
    (b"mg %%%% b v\r\n", b"CLIENT_ERROR bad key encoding"),
    (b"mg User:1 v O" + b"o" * 33 + b"\r\n", b"CLIENT_ERROR opaque token too long"),
    (b"mg User:1 \x00\r\n", b"CLIENT_ERROR invalid flag"),
]


@pytest.mark.parametrize("request_bytes,want", CONTROL_CASES,
                         ids=[repr(r[:24])[2:-1] for r, _ in CONTROL_CASES])
def test_nul_control_and_non_utf8_bytes(oc, expected, request_bytes, want):
    with oc.client() as c:
        line = line_reply(c, request_bytes)
        assert line.startswith(want), line
        assert len(line) <= len(want) + 64 * 4  # keys in messages are cut to 64 bytes
        assert not c.has_data(0.2), "more than one reply"
        serves(c, expected)


def test_cr_without_lf(oc, expected):
    with oc.client() as c:
        c.send(b"get User:1\r")
        assert not c.has_data(0.3), "a bare \\r must not end a line"
        c.send(b"\n")
        assert c.read_response().values[0].data == expected["User:1"]
        # 100,000 bare \r: one over-long line, then back in step at the \n
        c.send(b"\r" * 100000)
        assert c.read_response().terminal == b"CLIENT_ERROR line too long"
        c.send(b"\r" * 1000 + b"\r\nget User:2\r\n")
        assert c.read_response().values[0].data == expected["User:2"]
        serves(c, expected)


def test_binary_protocol_magic(oc, expected):
    # a binary GET "hello" with opaque 0xdeadbeef: the binary protocol
    # (test_binary.py); "hello" is no Model:id, so invalid arguments
    req = struct.pack(">BBHBBHIIQ", 0x80, 0x00, 5, 0, 0, 0, 5, 0xDEADBEEF, 0) + b"hello"
    s = connect(oc)
    s.sendall(req)
    reply, closed = drain(s, quiet=2)
    s.close()
    assert not closed, "a loud get's error closed the connection"
    assert len(reply) >= 24 and reply[0] == 0x81 and reply[1] == 0x00
    assert struct.unpack(">H", reply[6:8])[0] == 0x0004          # invalid arguments
    assert struct.unpack(">I", reply[12:16])[0] == 0xDEADBEEF    # opaque echoed
    assert len(reply) == 24 + struct.unpack(">I", reply[8:12])[0]
    # after ASCII commands, at the start of a line: the first byte of the
    # connection decided, so this is a bad text line
    s = connect(oc)
    s.sendall(b"version\r\n\x80\x01\x00\x00" + b"\x00" * 20 + b"\r\n")
    reply, closed = drain(s, quiet=2)
    s.close()
    assert reply.startswith(b"VERSION ") and not closed
    assert reply.endswith((b"\r\nERROR\r\n",
                           b"\r\nCLIENT_ERROR bad command line format\r\n")), reply
    # a lone magic byte, then close at once; and a magic byte after a half line
    for data in (b"\x80", b"\x80" * 100000, b"get User:1 \x80\r\n"):
        s = connect(oc)
        send_quietly(s, data)
        s.close()
    assert_healthy(oc, expected)


# --------------------------------------------------------------------------
# Numbers


def test_huge_and_negative_lengths(oc, expected):
    cases = [
        (b"set User:150 0 0 4294967295\r\n", b"CLIENT_ERROR bad data chunk"),
        (b"set User:150 0 0 18446744073709551616\r\n", b"CLIENT_ERROR bad data chunk"),
        (b"set User:150 0 0 -1\r\n", b"CLIENT_ERROR bad data chunk"),
        (b"set User:150 -1 0 2\r\n", b"CLIENT_ERROR bad command line format"),
        (b"set User:150 4294967296 0 2\r\n", b"CLIENT_ERROR bad command line format"),
        (b"set User:150 0 99999999999999999999999 2\r\n", b"CLIENT_ERROR bad command line format"),
        (b"ms User:150 99999999999\r\n", b"CLIENT_ERROR bad data chunk"),
        (b"ms User:150 99999999999 T0 MS\r\n", b"CLIENT_ERROR bad data chunk"),
        (b"ms User:150 -5\r\n", b"CLIENT_ERROR bad data chunk"),
        (b"ms User:150\r\n", b"CLIENT_ERROR bad data chunk"),
        (b"delete User:150 -1\r\n",
         b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"),
        (b"get Counter:-2147483649\r\n", b"CLIENT_ERROR bad id for integer key: Counter:-2147483649"),
        (b"get User:-9223372036854775809\r\n",
         b"CLIENT_ERROR bad id for bigint key: User:-9223372036854775809"),
        (b"mg User:-1 v\r\n", b"EN"),
        (b"incr User:1 -1\r\n", b"SERVER_ERROR not supported"),
        (b"touch User:1 99999999999999999999999\r\n", b"SERVER_ERROR not supported"),
        (b"get " + b"User:1 " * 1025 + b"\r\n", b"CLIENT_ERROR too many keys (max 1024)"),
    ]
    with Bystander(oc, expected):
        for request, want in cases:
            with oc.client() as c:
                assert line_reply(c, request) == want, request
                serves(c, expected)
        with oc.client() as c:
            # a negative exptime is memcached's "expire now": accepted, ignored
            assert line_reply(c, b"set User:150 0 -1 2\r\n{}\r\n") == b"STORED"
            # a cas with a bad unique: the data line is then just a bad command
            c.send(b"cas User:150 0 0 2 -1\r\n{}\r\n")
            assert c.read_response().terminal == b"CLIENT_ERROR bad command line format"
            assert c.read_response().terminal == b"ERROR"
            # one byte over max_value: refused, the data skipped, in step again
            for cmd in (b"set User:150 0 0 1048577", b"ms User:150 1048577 T0"):
                c.send(cmd + b"\r\n" + b"x" * 1048577 + b"\r\n")
                assert c.read_response().terminal == b"SERVER_ERROR object too large for cache"
                serves(c, expected)


def test_huge_declared_value_is_discarded_not_buffered(oc, expected):
    """`set` of 2,000,000,000 bytes: refused at once, and the bytes that
    follow are dropped as they come instead of piling up in memory."""
    before = rss_kb(oc.pid)
    s = connect(oc)
    s.sendall(b"set User:150 0 0 2000000000\r\n")
    reply, _ = drain(s, quiet=1)
    assert reply == b"SERVER_ERROR object too large for cache\r\n"
    chunk = b"get User:1\r\n" * 8192  # looks like commands: must not run
    for _ in range(1000):  # ~94 MiB
        s.sendall(chunk)
    reply, closed = drain(s, quiet=0.5)
    assert reply == b"" and not closed
    grown = rss_kb(oc.pid) - before
    s.close()
    # (ASan's quarantine, 16 MiB here, accounts for most of what it grows)
    assert grown < 40 * 1024, f"RSS grew by {grown} KiB while swallowing 94 MiB"
    assert_healthy(oc, expected)


# --------------------------------------------------------------------------
# Long lines, many keys


def test_one_mib_lines(oc, expected):
    mib = 1 << 20
    with Bystander(oc, expected), oc.client() as c:
        for body in (b"x" * mib, b" " * mib, b"User:1 " * (mib // 7), b"\x00" * mib):
            c.send(b"get " + body + b"\r\nget User:1\r\n")
            assert c.read_response().terminal == b"CLIENT_ERROR line too long"
            assert c.read_response().values[0].data == expected["User:1"]
        # a data block whose end is 1 MiB late
        c.send(b"set User:150 0 0 2\r\n" + b"{}" + b"y" * mib + b"\r\n")
        assert c.read_response().terminal == b"CLIENT_ERROR bad data chunk"
        assert c.read_response().terminal == b"CLIENT_ERROR line too long"
        serves(c, expected)
    # 1 MiB with no line end, then the client goes away
    for close in (socket.socket.close, reset_close):
        s = connect(oc)
        send_quietly(s, b"get " + b"a" * mib)
        close(s)
    assert_healthy(oc, expected)


def read_get_reply(s, timeout=120):
    """A whole get reply (up to END) read fast: [(key, data)], terminal."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if buf.endswith(b"END\r\n") and (len(buf) == 5 or buf.endswith(b"\r\nEND\r\n")):
            break
        if buf.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR")) and buf.endswith(b"\r\n"):
            return [], bytes(buf[:-2])
        assert time.monotonic() < deadline, f"no END after {len(buf)} bytes"
        chunk = s.recv(1 << 22)
        assert chunk, "closed before END"
        buf += chunk
    out, pos, data = [], 0, bytes(buf)
    while data.startswith(b"VALUE ", pos):
        eol = data.index(b"\r\n", pos)
        _, key, _, n = data[pos:eol].split(b" ")[:4]
        start = eol + 2
        out.append((key, data[start:start + int(n)]))
        assert data[start + int(n):start + int(n) + 2] == b"\r\n"
        pos = start + int(n) + 2
    assert data[pos:] == b"END\r\n"
    return out, b"END"


def test_100000_keys_in_one_get(objcached_factory, oc, expected, ref):
    # With the defaults the line is refused for its length.
    keys = [b"User:%d" % (1 + i % 200) for i in range(100000)]
    with oc.client() as c:
        c.send(b"get " + b" ".join(keys) + b"\r\n")
        assert c.read_response().terminal == b"CLIENT_ERROR line too long"
        serves(c, expected)
    # Limits raised as far as they go: every key answered, in order.
    big = objcached_factory({"objcached": {"max_line": "16m", "max_keys": "100000",
                                           "load_timeout": "60s"}}, env=ASAN_ENV)
    json = {i: ref.json("User", i) for i in range(1, 201)}
    with Bystander(big, expected):
        s = connect(big, timeout=120)
        s.sendall(b"get " + b" ".join(keys) + b"\r\n")
        values, terminal = read_get_reply(s)
        assert terminal == b"END" and len(values) == 100000
        assert all(v == (keys[i], json[1 + i % 200]) for i, v in enumerate(values))
        # 100,000 distinct keys, nearly all without a row: one load, all absent
        distinct = [b"User:%d" % i for i in range(1000, 101000)]
        s.sendall(b"gets " + b" ".join(distinct) + b"\r\n")
        values, terminal = read_get_reply(s)
        assert (values, terminal) == ([], b"END")
        s.sendall(b"get " + b" ".join(distinct) + b" User:1\r\n")
        assert read_get_reply(s) == ([], b"CLIENT_ERROR too many keys (max 100000)")
        s.close()
    assert_healthy(big, expected)


# --------------------------------------------------------------------------
# Connections that go away, stall or pile up


HALF_REQUESTS = [
    b"get User:1",
    b"get User:1\r",
    b"get User:1 User:2 User:",
    b"set User:150 0 0 10\r\n{\"a\"",
    b"set User:150 0 0 2000000000\r\n" + b"x" * 5000,
    b"ms User:150 5\r\n{",
    b"mg User:",
    b"mg VXNlcjox b",
    b"\x80\x00\x00",
    b"get " + b"User:1 " * 500,
    b"stats",
    # whole requests whose replies nobody reads
    b"get " + b" ".join(b"User:%d" % i for i in range(101, 201)) + b"\r\n",
    b"mg User:120 v\r\nmg User:121 v q\r\nmn\r\n",
    b"set User:151 0 0 2\r\n{}\r\nget User:151\r\n",
]


def test_half_requests_then_close(oc, expected):
    base = oc.stats()["curr_connections"]
    with Bystander(oc, expected):
        for rnd in range(12):
            for i, req in enumerate(HALF_REQUESTS):
                s = connect(oc)
                send_quietly(s, req)
                if (rnd + i) % 3 == 0:
                    try:
                        s.shutdown(socket.SHUT_WR)  # half-close, then go
                    except OSError:
                        pass  # the server closed first (binary magic)
                (reset_close if (rnd + i) % 2 else socket.socket.close)(s)
    assert_healthy(oc, expected)
    harness.wait_until(lambda: oc.stats()["curr_connections"] <= base, timeout=20,
                       what="every closed connection freed")


def test_reset_in_the_middle_of_replies(oc, expected):
    """Clients that ask for a big reply and reset the connection before,
    while or after it is written (SO_LINGER 0)."""
    many = b"get " + b" ".join(b"User:%d" % (1 + i % 100) for i in range(1000)) + b"\r\n"
    wide = b"get " + b" ".join(b"User:%d" % i for i in range(101, 201)) + b"\r\n"
    errors = []

    def attacker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(40):
                s = connect(oc, rcvbuf=rng.choice([None, 4096]))
                send_quietly(s, rng.choice([many, wide, many * 5, b"stats\r\n" * 50]))
                wait = rng.choice([0, 0, 0.001, 0.01, 0.05])
                if wait:
                    time.sleep(wait)
                if rng.random() < 0.5:
                    try:
                        s.recv(rng.randint(1, 65536))  # part of the reply
                    except OSError:
                        pass
                reset_close(s)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    with Bystander(oc, expected):
        threads = [threading.Thread(target=attacker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert_healthy(oc, expected)


BIG = b'{"id":170,"pad":"' + b"p" * 65536 + b'"}'


@pytest.mark.parametrize("request_line", [
    # 184 bytes asking for a 1.3 MiB reply (a pushed 64 KiB object, 20 times)
    b"get " + b"User:170 " * 20 + b"\r\n",
    # answered at once, without a memcached round trip
    b"version\r\nstats\r\nmn\r\n",
], ids=["get-big-object", "version-stats-mn"])
def test_pipelining_client_that_never_reads(oc, expected, request_line):
    """Thousands of pipelined requests, no reads: the daemon stops reading
    that connection once 4 MiB of replies wait, holds its memory, and closes
    it after write_timeout (2 s) without progress."""
    with oc.client() as c:
        assert line_reply(c, b"set User:170 0 0 %d\r\n%s\r\n" % (len(BIG), BIG)) == b"STORED"
        assert c.get("User:170") == BIG
    timeouts = oc.stats()["timeouts"]
    before = rss_kb(oc.pid)
    peak = before
    s = connect(oc, timeout=0.5, rcvbuf=4096)
    batch = request_line * max(1, 65536 // len(request_line))
    sent, closed = 0, False
    deadline = time.monotonic() + 40
    with Bystander(oc, expected):
        while time.monotonic() < deadline:
            try:
                sent += s.send(batch)
            except socket.timeout:
                pass  # the daemon stopped reading us: expected
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            peak = max(peak, rss_kb(oc.pid))
    s.close()
    requests = sent // len(request_line)
    print(f"{requests} unread requests, RSS {before} KiB -> peak {peak} KiB")
    assert closed, f"not closed after {requests} unread requests ({sent} bytes)"
    assert requests >= 1000, f"only {requests} requests went out"
    grown = peak - before
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB for {requests} unread requests"
    harness.wait_until(lambda: oc.stats()["timeouts"] > timeouts, timeout=10,
                       what="the timeouts counter")
    assert_healthy(oc, expected)


def test_a_client_that_read_while_the_sidecar_stood_still_is_not_cut_off(oc):
    """write_timeout closes a client that reads none of its replies. This
    one reads all it can while the sidecar is stopped (a CPU-starved or
    paused sidecar) for longer than write_timeout: on waking, the timer is
    due and the socket writable at once (the event carries both, or only the
    timeout: epoll_wait fails with EINTR after a stop). That was taken for a
    timeout: the client was cut off mid-reply. Expected: the whole reply, no
    timeout counted."""
    body = b'{"id":160,"pad":"' + b"p" * (512 * 1024) + b'"}'
    with oc.client() as c:
        assert line_reply(c, b"set User:160 0 0 %d\r\n%s\r\n" % (len(body), body)) == b"STORED"
    timeouts = oc.stats()["timeouts"]
    copies = 16                 # 8 MiB: more than the kernel's buffers hold
    s = connect(oc, timeout=10, rcvbuf=4096)
    got = bytearray()
    try:
        s.sendall(b"get " + b"User:160 " * copies + b"\r\n")
        time.sleep(0.5)         # the sidecar's writes block: write_timeout armed
        os.kill(oc.pid, signal.SIGSTOP)
        try:
            s.settimeout(0.3)   # read what the kernel holds, then stand still
            try:
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    got += chunk
            except socket.timeout:
                pass
            time.sleep(2.5)     # stopped for more than write_timeout (2 s)
        finally:
            os.kill(oc.pid, signal.SIGCONT)
        s.settimeout(10)
        value = b"VALUE User:160 0 %d\r\n%s\r\n" % (len(body), body)
        want = value * copies + b"END\r\n"
        while len(got) < len(want):
            chunk = s.recv(1 << 20)
            assert chunk, "cut off after %d of %d bytes" % (len(got), len(want))
            got += chunk
        assert bytes(got) == want
    finally:
        s.close()
    assert oc.stats()["timeouts"] == timeouts


def test_one_get_with_a_reply_far_over_the_output_cap(oc, expected):
    """Push one ~512 KiB object, then ask for it 400 times in one get (a
    200 MiB reply) from a client that never reads: memory must stay bounded
    like for pipelined requests."""
    body = b'{"id":160,"pad":"' + b"p" * (512 * 1024) + b'"}'
    with oc.client() as c:
        assert line_reply(c, b"set User:160 0 0 %d\r\n%s\r\n" % (len(body), body)) == b"STORED"
    before = rss_kb(oc.pid)
    s = connect(oc, timeout=2, rcvbuf=4096)
    s.sendall(b"get " + b"User:160 " * 400 + b"\r\n")
    peak = before
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        peak = max(peak, rss_kb(oc.pid))
        time.sleep(0.05)
    s.close()
    assert peak - before < 64 * 1024, f"RSS grew by {peak - before} KiB for one get"
    assert_healthy(oc, expected)


def raise_nofile(want):
    """Raise this process's open-file limit (the daemon inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        hard = want  # root may raise the hard limit too
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def test_10000_idle_connections(objcached_factory, expected):
    n = 10000
    raise_nofile(n + 1024)
    overrides = {k: dict(v) for k, v in WRITE_TIMEOUT.items()}
    overrides.setdefault("objcached", {})["max_connections"] = str(n + 100)
    d = objcached_factory(overrides, env=ASAN_ENV)
    base = d.stats()["curr_connections"]
    socks = []
    try:
        with Bystander(d, expected):
            for _ in range(n):
                socks.append(connect(d))
            harness.wait_until(lambda: d.stats()["curr_connections"] >= base + n,
                               timeout=30, what=f"{n} connections accepted")
            assert_healthy(d, expected)
            for s in socks[::1000]:  # idle ones still answer
                s.sendall(b"version\r\n")
                assert s.recv(100).startswith(b"VERSION ")
            assert d.stats()["rejected_connections"] == 0
    finally:
        for s in socks:
            s.close()
    harness.wait_until(lambda: d.stats()["curr_connections"] <= base, timeout=30,
                       what=f"{n} connections closed")
    assert_healthy(d, expected)


def test_out_of_file_descriptors(objcached_factory, expected):
    """More clients than the daemon has descriptors: it logs, stays
    responsive (no busy loop on accept), and serves once they leave."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        d = objcached_factory(WRITE_TIMEOUT, env=ASAN_ENV)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with d.client() as held:  # a connection made before the flood
        socks = []
        try:
            for _ in range(300):
                socks.append(connect(d))  # the kernel queues those not accepted
            time.sleep(0.1)
            cpu0 = _cpu_seconds(d.pid)
            time.sleep(0.5)
            cpu = _cpu_seconds(d.pid) - cpu0
            serves(held, expected)
        finally:
            for s in socks:
                s.close()
        serves(held, expected)
    assert_healthy(d, expected)
    lines = d.log().count("event=accept_failed")
    assert cpu < 0.25, (f"objcached used {cpu:.2f} s of CPU in 0.5 s while out of "
                        f"descriptors ({lines} accept_failed lines logged)")
    assert lines < 1000, f"{lines} accept_failed lines logged"


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# SQL in ids


SQL_IDS = {
    "User": ["1;DROP/**/TABLE/**/users", "1);DROP/**/TABLE/**/users;--", "1'OR'1'='1", "$1", "1--",
             "0x7fffffff", "1e3", "(1)", "NULL"],
    "Counter": ["1;DROP/**/TABLE/**/counters", "1'--", "NULL", "2147483648"],
    "Doc": ["6a204bd8-9f3c-4a0b-a8e9-f8f6b1c1f2d3';DROP/**/TABLE/**/docs;--",
            "{6a204bd8-9f3c-4a0b-a8e9-f8f6b1c1f2d3}", "00000000-0000-0000-0000-00000000000g",
            "'||pg_sleep(10)||'", "6a204bd8+9f3c+4a0b+a8e9+f8f6b1c1f2d3"],
}
# Valid text ids: these do reach PostgreSQL, as a bound array element.
TEXT_IDS = ["');DROP/**/TABLE/**/pages;--", "zz'OR'1'='1", "zz$1", "zz\\", 'zz","home',
            "zz\"}", "NULL", "{home}", "zz'||pg_sleep(10)||'", "%27;DROP/**/TABLE/**/pages"]


def test_sql_in_ids_never_reaches_sql(objcached_factory, pg, expected):
    tables = {"users": 202, "counters": 52, "docs": 20, "pages": 20}
    pg.execute("ALTER SYSTEM SET log_statement = 'all'")
    pg.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a '")
    pg.execute("SELECT pg_reload_conf()")
    pg.execute("SELECT pg_stat_statements_reset()")
    log_start = os.path.getsize(pg.logfile)
    try:
        d = objcached_factory(WRITE_TIMEOUT, env=ASAN_ENV)
        with d.client() as c:
            for model, ids in SQL_IDS.items():
                kind = {"User": "bigint", "Counter": "integer", "Doc": "uuid"}[model]
                for ident in ids:
                    key = f"{model}:{ident}".encode()
                    want = b"CLIENT_ERROR bad id for %s key: %s" % (kind.encode(), key[:64])
                    assert c.command(b"get " + key).terminal == want
                    assert c.command(b"mg " + base64.b64encode(key) + b" b v").terminal == want
                    assert line_reply(c, b"set %s 0 0 2\r\n{}\r\n" % key) == want
                    assert line_reply(c, b"delete %s\r\n" % key) == want
            for ident in TEXT_IDS:
                key = f"Page:{ident}".encode()
                assert c.get_multi([key]) == ([], b"END"), key
                assert c.command(b"mg " + base64.b64encode(key) + b" b v").terminal == b"EN"
            # with spaces: the first token after the colon is the id
            assert c.command(b"get User:1;DROP TABLE users").terminal == \
                b"CLIENT_ERROR bad id for bigint key: User:1;DROP"
            assert c.command(b"get Page:'); DROP TABLE pages;--").terminal == \
                b"CLIENT_ERROR bad key format: DROP"
            # spaces inside a key, only possible in base64: refused as a bad key
            for text in ("Page:'); DROP TABLE pages;--", "User:1; DROP TABLE users"):
                r = c.command(b"mg " + base64.b64encode(text.encode()) + b" b v").terminal
                assert r.startswith(b"CLIENT_ERROR bad key format"), r
            # escaping of the array parameter: ids with quotes and backslashes
            for p in ('q"uote', "back\\slash", "x:y", "home"):
                assert c.get(f"Page:{p}") == expected[f"Page:{p}"]
        d.wait_idle()
        for table, rows in tables.items():
            assert pg.execute(f"SELECT count(*) FROM public.{table}") == [(rows,)], table
        stmts = [q for (q,) in pg.execute("SELECT query FROM pg_stat_statements")]
        assert not [q for q in stmts if "drop" in q.lower() or "pg_sleep" in q.lower()], stmts
        loads = [q for q in stmts if 'FROM "public".' in q]  # objcached's quoting
        assert any('FROM "public"."pages"' in q for q in loads), stmts
        assert all(re.search(r' OPERATOR\(pg_catalog\.=\) ANY\(\$1::pg_catalog\.'
                             r'(int8|int4|uuid|text)\[\]\)$', q)
                   for q in loads), loads
        # The server log: the ids only ever appear as a parameter value.
        with open(pg.logfile, "rb") as f:
            f.seek(log_start)
            log = f.read().decode("utf-8", "replace")
        app = [l for l in log.splitlines() if "app=objcached" in l]
        assert any("parameters: $1 = " in l and "DROP/**/TABLE/**/pages" in l for l in app), \
            "the text ids never reached PostgreSQL as a parameter:\n" + "\n".join(app[-20:])
        for line in app:
            if any(m in line for m in ("DROP", "pg_sleep", "zz'OR")):
                assert "DETAIL:  parameters: $1 = " in line, line
    finally:
        pg.execute("ALTER SYSTEM RESET log_statement")
        pg.execute("ALTER SYSTEM RESET log_line_prefix")
        pg.execute("SELECT pg_reload_conf()")


# --------------------------------------------------------------------------
# The PostgreSQL password


SECRET = "SECRETpw_hostile_7c1f0e92d4"
SECRET2 = "SECRETpw_reload_0b5e8a33f1"
ROLE = "oc_secret"


@pytest.fixture
def password_role(pg):
    """A role that must log in with SECRET over TCP (scram-sha-256), in the
    harness's trust-everything cluster."""
    hba = os.path.join(pg.datadir, "pg_hba.conf")
    with open(hba) as f:
        original = f.read()
    pg.execute("SET password_encryption = 'scram-sha-256'; "
               f"CREATE ROLE {ROLE} LOGIN PASSWORD '{SECRET}'")
    pg.execute(f"GRANT SELECT ON users, counters, docs, pages TO {ROLE}")
    with open(hba, "w") as f:  # the first matching line wins
        f.write(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + original)
    pg.execute("SELECT pg_reload_conf()")
    try:
        yield f"host=127.0.0.1 port={pg.port} dbname={pg.dbname} user={ROLE} " \
              f"password={SECRET} connect_timeout=2"
    finally:
        with open(hba, "w") as f:
            f.write(original)
        if not pg.running:
            pg.start()
        pg.execute("SELECT pg_reload_conf()")
        pg.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   f"WHERE usename = '{ROLE}'")
        pg.execute(f"DROP OWNED BY {ROLE}; DROP ROLE {ROLE}")


def test_password_never_shown(pg, password_role, objcached_factory, expected, tmp_path):
    # (password_role before objcached_factory: the daemons stop before the
    # role is dropped)
    metrics = harness.free_port()
    d = objcached_factory({"objcached": {"metrics_listen": f"127.0.0.1:{metrics}",
                                         "load_timeout": "2s", "log_level": "debug"},
                           "postgresql": {"conninfo": password_role}}, env=ASAN_ENV)
    seen = []  # everything the daemon said, to search at the end

    def said(x):
        seen.append(x if isinstance(x, (str, bytes)) else repr(x))
        seen[-1] = seen[-1] if isinstance(seen[-1], str) else seen[-1].decode("utf-8", "replace")
        return x

    def stats_text(c):
        r = c.command(b"stats")
        return said(b"\n".join(r.lines + [r.terminal]))

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            return said(r.read())

    with d.client() as c:
        assert c.get("User:1") == expected["User:1"]  # logged in with the password
        stats_text(c)
        scrape()
        # 1. wrong password: the sessions are killed and cannot come back
        pg.execute(f"ALTER ROLE {ROLE} PASSWORD 'changed-{SECRET[::-1]}'")

        def none_left():
            # A session that authenticated before the ALTER but shows in
            # pg_stat_activity only after one pass (a loader still
            # connecting on a busy machine) keeps working: terminate until
            # two passes, apart, find none.
            return pg.execute(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              f"WHERE usename = '{ROLE}'")[0][0] == 0
        for _ in range(2):
            harness.wait_until(none_left, timeout=15, what="no session of the role left")
            time.sleep(0.5)
        for i in range(3):
            r = said(c.command(f"get User:{50 + i}").terminal)
            assert r.startswith(b"SERVER_ERROR load failed"), r
        assert said(c.command("mg User:60 v").terminal).startswith(b"SERVER_ERROR")
        # 2. the right password, but not allowed to log in
        pg.execute(f"ALTER ROLE {ROLE} NOLOGIN PASSWORD '{SECRET}'")
        harness.wait_until(lambda: "is not permitted to log in" in d.log(), timeout=15,
                           what="a login refused for NOLOGIN")
        assert said(c.command("get User:61").terminal).startswith(b"SERVER_ERROR")
        # 3. the server down
        pg.stop()
        try:
            harness.wait_until(lambda: "Connection refused" in d.log(), timeout=15,
                               what="a connection refused")
            r = said(c.command("get User:62 Counter:3 Doc:6a204bd89f3c4a0ba8e9f8f6b1c1f2d3"))
            assert r.terminal.startswith(b"SERVER_ERROR load failed"), r
            stats_text(c)
            scrape()
        finally:
            pg.start()
        # back: the right password again
        pg.execute(f"ALTER ROLE {ROLE} LOGIN PASSWORD '{SECRET}'")
        harness.wait_until(lambda: c.command("get User:63").terminal == b"END",
                           timeout=30, what="loads to work again")
        # 4. a reload that changes the conninfo (refused: needs a restart)
        with open(d.config_path) as f:
            text = f.read()
        with open(d.config_path, "w") as f:
            f.write(text.replace(SECRET, SECRET2))
        before = d.stats()["reload_errors"]
        d.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: d.stats()["reload_errors"] > before, timeout=10,
                           what="the reload to be refused")
        stats_text(c)
        scrape()
    # 5. --check-config and a daemon that cannot start, with secrets inside
    bad = tmp_path / "bad.ini"
    bad.write_text(f"[postgresql]\nconninfo = {password_role}\nconnections = 999\n")
    r = harness.check_config(str(bad))
    assert r.returncode != 0
    said(r.stdout + r.stderr)
    bad.write_text(f"[memcached]\nservers = 127.0.0.1:1\n[postgresql]\n"
                   f"conninfo = {password_role} sslmode=bogus\n[model User]\ntable = users\n")
    r = harness.check_config(str(bad))
    said(r.stdout + r.stderr)
    d.stop()
    said(d.log())
    leaks = [s for s in seen if SECRET in s or SECRET2 in s or SECRET[::-1] in s]
    assert not leaks, "the password was shown:\n" + "\n---\n".join(leaks)
    log = d.log()
    assert "pg_conn_down" in log, "no connection error was provoked:\n" + log[-4000:]
    print("\n".join(l for l in log.splitlines() if "pg_" in l or "reload" in l))


def closed_within(s, seconds):
    """True if the server closes s within `seconds` (EOF or reset)."""
    s.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not chunk:
            return True
    return False


# --------------------------------------------------------------------------
# Found by a review, 2026-12-05: each failed before its fix.
#
# idle_timeout was defeated by any byte of a partial command


def test_clients_that_sent_while_the_sidecar_stood_still_are_not_idle(objcached_factory):
    """idle_timeout closes a client that sends nothing. These 200 send a
    command each while the sidecar is stopped for longer than idle_timeout
    (a paused or CPU-starved sidecar): on waking (epoll_wait fails with
    EINTR after a stop; under load more sockets are ready than one
    epoll_wait reports) the idle timers ran before the reads: every client
    was cut off, its command unanswered (the 29th session's build: 200 of
    200, and 1 of 1 alone). Expected: every one answered."""
    # idle_timeout 2 s: the 200 first round trips must all fit in it (ASan)
    d = objcached_factory({"objcached": {"idle_timeout": "2s", "max_connections": "1000"}},
                          env=ASAN_ENV)
    socks = [connect(d) for _ in range(200)]
    try:
        for s in socks:         # accepted and served: each idle timer armed
            s.sendall(b"version\r\n")
            assert s.recv(64).startswith(b"VERSION "), "not served before the stop"
        timeouts = d.stats()["timeouts"]
        os.kill(d.pid, signal.SIGSTOP)
        try:
            for s in socks:
                s.sendall(b"version\r\n")
            time.sleep(3.0)     # stopped for more than idle_timeout
        finally:
            os.kill(d.pid, signal.SIGCONT)
        cut = 0
        for s in socks:
            try:
                cut += not s.recv(64).startswith(b"VERSION ")
            except OSError:
                cut += 1
        assert cut == 0, "%d of %d clients cut off" % (cut, len(socks))
        assert d.stats()["timeouts"] == timeouts
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("partial", [
    b"g",                                # a command line cut short
    b"set User:150 0 0 10\r\n",          # a set whose data block never comes
], ids=["partial-line", "set-without-data"])
def test_idle_timeout_closes_a_client_that_stalls_mid_command(objcached_factory, expected,
                                                              partial):
    d = objcached_factory({"objcached": {"idle_timeout": "1s"}}, env=ASAN_ENV)
    quiet = connect(d)
    stalled = connect(d)
    stalled.sendall(partial)
    try:
        assert closed_within(quiet, 5), "control: a silent client is not closed"
        # The stalled client has sent nothing for far longer than idle_timeout.
        assert closed_within(stalled, 5), (
            f"a client that sent {partial!r} and then nothing for 5 s is never closed "
            f"by idle_timeout = 1s (slowloris: max_connections can be held this way)")
    finally:
        quiet.close()
        stalled.close()
    assert_healthy(d, expected)


# --------------------------------------------------------------------------
# write_timeout was re-armed by every read: a client that never read its
# replies but trickled bytes in was never closed


@pytest.mark.parametrize("trickle", [False, True], ids=["control", "trickle"])
def test_write_timeout_not_reset_by_trickled_input(objcached_factory, expected, trickle):
    d = objcached_factory(WRITE_TIMEOUT, env=ASAN_ENV)
    with d.client() as c:
        assert line_reply(c, b"set User:170 0 0 %d\r\n%s\r\n" % (len(BIG), BIG)) == b"STORED"
    timeouts = d.stats()["timeouts"]
    s = connect(d, rcvbuf=4096)
    # ~5.2 MiB of replies: the kernel's socket buffers take up to ~4 MiB
    # of it, objcached holds the rest, under its 4 MiB mark (reading stays on).
    s.sendall((b"get " + b"User:170 " * 20 + b"\r\n") * 4)
    time.sleep(0.5)
    try:
        deadline = time.monotonic() + 8  # 4x write_timeout
        closed = False
        while time.monotonic() < deadline and not closed:
            if trickle:
                try:
                    s.send(b"x")  # part of a line that never ends; never read
                except (BrokenPipeError, ConnectionResetError):
                    pass
            time.sleep(0.5)
            closed = d.stats()["timeouts"] > timeouts
        assert closed, ("a client that read none of its replies for 8 s is still "
                        "connected: write_timeout = 2s is pushed back by every read")
    finally:
        s.close()
    assert_healthy(d, expected)


# --------------------------------------------------------------------------
# ms with more tokens than the token array: its data block was run as a command


def test_ms_with_too_many_flags_skips_its_data_block(objcached_factory, expected):
    d = objcached_factory(WRITE_TIMEOUT, env=ASAN_ENV)
    with d.client() as c:
        data = b"get User:1"  # a data block that is also a valid command line
        line = b"ms User:150 %d " % len(data) + b"T0 " * 1100 + b"\r\n"
        c.send(line + data + b"\r\nmn\r\n")
        got, _ = drain(c.sock, quiet=0.5)
        # One error for the ms, then MN. Anything in between is the data
        # block answered as a command of its own.
        assert got.startswith(b"CLIENT_ERROR"), got[:200]
        first, rest = got.split(b"\r\n", 1)
        assert rest == b"MN\r\n", (
            f"after {first!r} the ms data block was run as a command: {rest[:120]!r}")
    assert_healthy(d, expected)


# --------------------------------------------------------------------------
# /metrics: evhttp had no limit on headers: one client grew memory at will


def test_metrics_oversized_request_header_is_refused(objcached_factory, expected):
    port = harness.free_port()
    d = objcached_factory({"objcached": {"metrics_listen": f"127.0.0.1:{port}"}},
                          env=ASAN_ENV)
    before = rss_kb(d.pid)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    chunk = b"X-Pad: " + b"a" * ((1 << 20) - 16) + b"\r\n"  # 1 MiB header lines
    sent, closed = 0, False
    try:
        for _ in range(256):  # up to 256 MiB of headers
            try:
                s.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                closed = True
                break
        time.sleep(0.5)
        grown = rss_kb(d.pid) - before
    finally:
        s.close()
    print(f"sent {sent >> 20} MiB of headers, closed={closed}, RSS +{grown} KiB")
    assert grown < 64 * 1024, (
        f"RSS grew by {grown >> 10} MiB for {sent >> 20} MiB of one request's headers "
        f"(closed by the server: {closed})")
    assert_healthy(d, expected)


def _http(port, request, timeout=5):
    """Send raw bytes to the /metrics listener; the whole answer (it closes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def test_metrics_listener_answers_and_limits(objcached_factory, expected):
    """The /metrics listener: 200 for GET and HEAD /metrics (HEAD without a
    body), 404 for another path, 405 for another method, 400 for garbage,
    each with Content-Length and the connection closed; a client that shuts
    its side after the request still gets the page. At most 64 connections
    open at once: 100 idle ones get 64 held and the rest closed at accept
    (metrics_refused); once they go, the page is served again. A client
    that trickles header bytes forever is closed after 10 s (evhttp renewed
    its timeout at every byte, and had no limit on connections)."""
    port = harness.free_port()
    d = objcached_factory({"objcached": {"metrics_listen": f"127.0.0.1:{port}"}},
                          env=ASAN_ENV)
    page = _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in head
    assert b"Content-Type: text/plain; version=0.0.4" in head
    assert f"Content-Length: {len(body)}".encode() in head and b"objcached_info" in body
    only = _http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert only.startswith(b"HTTP/1.1 200 OK") and only.endswith(b"\r\n\r\n")
    assert _http(port, b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    answer = _http(port, b"DELETE /metrics HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in answer
    assert _http(port, b"\x16\x03\x01 hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    half = b""
    while chunk := s.recv(65536):
        half += chunk
    s.close()
    assert half.startswith(b"HTTP/1.1 200 OK") and b"objcached_info" in half

    refused0 = d.stats()["metrics_refused"]
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
    time.sleep(0.5)
    closed = 0
    for c in socks:
        c.setblocking(False)
        try:
            closed += c.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    assert closed == 36, closed
    assert d.stats()["metrics_refused"] - refused0 == 36
    for c in socks:
        c.close()
    harness.wait_until(lambda: _http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
                       .startswith(b"HTTP/1.1 200"), timeout=5, what="the page again")

    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(b"GET /metrics HTTP/1.1\r\n")
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 14:
            s.sendall(b"X")
            time.sleep(0.5)
        cut = False
    except (BrokenPipeError, ConnectionResetError):
        cut = True
    s.close()
    assert cut and 9 <= time.monotonic() - t0 <= 13, time.monotonic() - t0
    assert_healthy(d, expected)


def _answer_by_length(s):
    """Read one HTTP answer from s: (head, body, how the stream ended after
    it: "eof" or "reset")."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    try:
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        end = "eof" if s.recv(1) == b"" else "more"
    except ConnectionResetError:
        end = "reset"
    return head, body, end


def test_metrics_answer_survives_unread_input(objcached_factory, expected):
    """A request followed by bytes objcached does not read (a body, a
    pipelined request): closing with them unread sent RST, and the client
    lost the end of the page (cut at 16 KiB). Now the answer is whole and
    the connection ends cleanly; a client that keeps sending after the
    answer is cut off after 1 MiB or 2 s."""
    port = harness.free_port()
    d = objcached_factory({"objcached": {"metrics_listen": f"127.0.0.1:{port}"}},
                          env=ASAN_ENV)
    for extra in (b"x" * 300000, b"GET /metrics HTTP/1.1\r\n\r\n" * 4000):
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + extra)
                time.sleep(0.2)          # the answer sent, the extra bytes unread
                head, body, end = _answer_by_length(s)
            finally:
                s.close()
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            assert head.startswith(b"HTTP/1.1 200 OK") and len(body) == length and \
                end == "eof", (head[:40], len(body), length, end)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    t0 = time.monotonic()
    cut = False
    try:
        while time.monotonic() - t0 < 20:
            s.sendall(b"y" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        cut = True
    except socket.timeout:
        pass
    s.close()
    assert cut, "a client sending after its answer was never cut off"
    assert _http(port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert_healthy(d, expected)


# --------------------------------------------------------------------------
# A reload that lowers max_value while a set's data block is being read:
# the input cap dropped below the block, reading stopped, and the connection
# waited for ever for bytes it would never read


@pytest.mark.parametrize("lower", [False, True], ids=["control", "reload"])
def test_reload_lowering_max_value_during_a_set_does_not_stall(objcached_factory,
                                                                expected, lower):
    d = objcached_factory({"objcached": {"max_value": "8m"},
                           "model User": {"push_check": "off"}}, env=ASAN_ENV)
    body = b'{"id":150,"pad":"' + b"p" * (4 << 20) + b'"}'
    s = connect(d, timeout=1)
    s.sendall(b"set User:150 0 0 %d\r\n" % len(body) + body[:1 << 20])
    time.sleep(0.3)
    if lower:
        assert harness.reload(d, harness.edit(d.config_text, "objcached", "max_value", "1m"))
    sent = 1 << 20
    deadline = time.monotonic() + 10
    while sent < len(body) and time.monotonic() < deadline:
        try:
            sent += s.send(body[sent:sent + 65536])
        except socket.timeout:
            pass
    try:
        s.sendall(b"\r\n")
    except socket.timeout:
        pass
    got, closed = drain(s, quiet=3, total=8)
    s.close()
    assert got or closed, (
        f"no reply and no close: {sent} of {len(body)} data bytes taken, then the "
        f"connection stopped reading (input cap now under the block being read)")
    assert_healthy(d, expected)


# --------------------------------------------------------------------------
# max_line: a line of exactly max_line bytes was refused when it ended in \r\n


def test_line_of_exactly_max_line_bytes_is_accepted(objcached_factory, expected):
    d = objcached_factory({"objcached": {"max_line": "1k"}}, env=ASAN_ENV)
    with d.client() as c:
        line = b"get User:1" + b" " * (1024 - 10)
        assert len(line) == 1024
        c.send(line + b"\n")
        assert c.read_response().values[0].data == expected["User:1"]  # \n: accepted
        c.send(line + b"\r\n")
        r = c.read_response()
        assert r.terminal == b"END", (
            f"a {len(line)}-byte line (max_line = 1024) ending in \\r\\n: {r.terminal!r}")


def hwm_kb(pid):
    return status_kb(pid, "VmHWM")


def test_get_of_many_large_values_holds_at_most_max_reply(objcached_factory, expected):
    """40 distinct cached values of 512 KiB (20 MiB) in one get, max_reply
    1m: objcached stops keeping memcached's values once they pass max_reply
    and fails the get (SERVER_ERROR reply too large; binary: status 0x84 on
    each key), instead of holding all of them first. Peak RSS (VmHWM) grows
    by far less than the 20 MiB; the daemon keeps serving."""
    d = objcached_factory({"objcached": {"max_reply": "1m", "write_timeout": "2s"},
                           "model User": {"push_check": "off"}}, env=ASAN_ENV)
    ids = range(101, 141)
    with d.client() as c:
        for i in ids:
            body = b'{"id":%d,"pad":"' % i + b"p" * (512 * 1024) + b'"}'
            assert line_reply(c, b"set User:%d 0 0 %d\r\n%s\r\n" % (i, len(body), body)) \
                == b"STORED"
    before = hwm_kb(d.pid)
    with d.client() as c:
        for _ in range(3):
            got = line_reply(c, b"get " + b" ".join(b"User:%d" % i for i in ids) + b"\r\n")
            assert got.startswith(b"SERVER_ERROR reply too large (the values read from "
                                  b"memcached passed max_reply"), got
    s = connect(d)
    # GETK..., QUIT (GETKQ would end at the first failure: a failed quiet get
    # is the last answer of its batch, docs/protocol.md)
    s.sendall(b"".join(struct.pack(">BBHBBHIIQ", 0x80, 0x0C, len(k), 0, 0, 0, len(k), n, 0)
                       + k for n, k in ((i, b"User:%d" % i) for i in ids)) +
              struct.pack(">BBHBBHIIQ", 0x80, 0x07, 0, 0, 0, 0, 0, 999, 0))
    buf = b""
    while True:                  # QUIT closes the connection after its answer
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    statuses = []
    while buf:
        hdr = struct.unpack(">BBHBBHIIQ", buf[:24])
        statuses.append((hdr[5], hdr[7], buf[24 + hdr[3] + hdr[2]:24 + hdr[6]]))
        buf = buf[24 + hdr[6]:]
    assert statuses and statuses[-1][:2] == (0, 999), statuses[-1:]
    statuses = statuses[:-1]
    # Each binary get answers for itself: those whose values were kept before
    # the limit are served, every other one fails.
    assert [st[1] for st in statuses] == list(ids), [st[:2] for st in statuses]
    served = [st for st in statuses if st[0] == 0]
    failed = [st for st in statuses if st[0] != 0]
    assert len(served) <= 2 and all(st[2].endswith(b"p" * 100 + b'"}') for st in served)
    assert len(failed) >= 38 and all(
        st[0] == 0x84 and st[2].startswith(b"reply too large (the values read from")
        for st in failed), [st[:2] for st in failed][:3]
    grew = hwm_kb(d.pid) - before
    # Under ASan freed blocks wait in its quarantine (16 MiB here) before reuse.
    limit = (12 + (20 if "ASAN_OPTIONS" in os.environ else 0)) * 1024
    assert grew < limit, f"peak RSS grew by {grew} KiB for gets of 20 MiB of values"
    assert_healthy(d, expected)


# --------------------------------------------------------------------------
# Found by a review of the fixes above (2026-12-04, seventh session).

def _bin_req(opcode, key=b"", opaque=0):
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), 0, 0, 0, len(key),
                       opaque, 0) + key


def _push_big(d, ids, size):
    with d.client() as c:
        for i in ids:
            body = b'{"id":%d,"pad":"' % i + b"p" * size + b'"}'
            assert line_reply(c, b"set User:%d 0 0 %d\r\n%s\r\n" % (i, len(body), body)) \
                == b"STORED"


@pytest.mark.parametrize("half_close", [True, False])
def test_commands_after_a_reply_over_the_output_mark_are_run(objcached_factory, half_close):
    """A get whose reply passes the output mark (4 MiB), then `version`, from
    a client whose receive buffer takes the whole reply at once: the one
    flush wrote everything, no write event was armed, and `version` waited
    for the client to send more; after a half-close nothing ever came, and
    the connection was never freed."""
    d = objcached_factory({"objcached": {"write_timeout": "2s"},
                           "model User": {"push_check": "off"}}, env=ASAN_ENV)
    ids = range(201, 206)
    _push_big(d, ids, 900 * 1024)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect(("127.0.0.1", d.port))
    s.sendall(b"get " + b" ".join(b"User:%d" % i for i in ids) + b"\r\nversion\r\n")
    if half_close:
        s.shutdown(socket.SHUT_WR)
    time.sleep(1.0)
    got, closed = harness.read_to_eof(s, timeout=5.0)
    s.close()
    assert got.count(b"VALUE ") == 5 and b"END\r\nVERSION " in got, (len(got), got[-40:])
    assert closed == half_close
    harness.wait_until(lambda: d.stats()["curr_connections"] == 1, timeout=5,
                       what="the connection freed")


def test_binary_too_large_and_load_failure_each_say_their_own(objcached_factory, pg):
    """One binary run (GETKs, then QUIT): three cached 512 KiB values with
    max_reply 1m (some are dropped: too large) and User:1, a miss whose load
    fails (users locked, load_timeout 300ms). Each failed get says why:
    "reply too large" for a dropped value, "load failed" for the load (the
    first message was given to every failed get). GETK, not GETKQ: a failed
    quiet get is the last answer of its batch (test_binary.py)."""
    d = objcached_factory({"objcached": {"max_reply": "1m", "load_timeout": "300ms"},
                           "model User": {"push_check": "off"}}, env=ASAN_ENV)
    ids = [301, 302, 303]
    _push_big(d, ids, 512 * 1024)
    locker = pg.connect(autocommit=False)
    try:
        locker.cursor().execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(b"".join(_bin_req(0x0C, b"User:%d" % i, i) for i in ids) +   # GETK
                  _bin_req(0x0C, b"User:1", 1) + _bin_req(0x07, opaque=9))      # QUIT
        buf, closed = harness.read_to_eof(s)
        s.close()
    finally:
        locker.rollback()
        locker.close()
    got = {}
    while buf:
        hdr = struct.unpack(">BBHBBHIIQ", buf[:24])
        got[hdr[7]] = (hdr[5], buf[24 + hdr[3] + hdr[2]:24 + hdr[6]])
        buf = buf[24 + hdr[6]:]
    assert closed and got[9][0] == 0          # answered up to the QUIT
    assert got[1][0] == 0x84 and got[1][1].startswith(b"load failed"), got[1]
    big = [got[i] for i in ids if got[i][0] != 0]
    assert len(big) >= 2 and all(st == 0x84 and msg.startswith(b"reply too large (the values")
                                 for st, msg in big), big


@pytest.mark.parametrize("big_get", [True, False])
def test_a_dropped_value_keeps_its_refresh_ahead(objcached_factory, ref, big_get):
    """refresh_ahead 3s, ttl 5s: read in its refresh window by a get over
    max_reply, a value memcached chose this reader to refresh (its win is
    given once) was dropped, and its refresh with it: nobody refreshed it
    ahead. Each of the three keys is refreshed once either way."""
    d = objcached_factory({"objcached": {"max_reply": "1m", "ttl_jitter_pct": 0},
                           "model User": {"push_check": "off", "ttl": "5s",
                                          "refresh_ahead": "3s"}}, env=ASAN_ENV)
    ids = [50, 51, 52]
    _push_big(d, ids, 512 * 1024)
    time.sleep(3.2)                                   # into the refresh window
    with d.client() as c:
        if big_get:
            got = line_reply(c, b"get User:50 User:51 User:52\r\n")
            assert got.startswith(b"SERVER_ERROR reply too large"), got
        time.sleep(0.3)
        for i in ids:
            c.send(b"get User:%d\r\n" % i)
            c.read_response()
    harness.wait_until(lambda: d.stats()["early_refreshes"] == 3, timeout=3,
                       what="each key refreshed once")
    # ... and written back by cas over the value memcached read: each key
    # holds its row now, not the pushed 512 KiB, and no miss loaded it. (Not
    # a count of queries: read 2 s after its refresh, a key is in its next
    # refresh window and may rightly be refreshed again.)
    # (polled: a refresh is counted when it starts, its write-back follows)
    m0 = d.stats()["get_misses"]

    def rows_back():
        with d.client() as c:
            for i in ids:
                c.send(b"get User:%d\r\n" % i)
                r = c.read_response()
                assert len(r.values) == 1, (i, r)
                if r.values[0].data != ref.json("User", i):
                    return False
        return True
    harness.wait_until(rows_back, timeout=10, what="each refresh written back")
    assert d.stats()["get_misses"] == m0


@pytest.mark.parametrize("scrape", [False, True], ids=["control", "scrape"])
def test_metrics_listener_out_of_descriptors_pauses(objcached_factory, expected, scrape):
    """Out of descriptors, a scrape queued on the metrics listener failed
    accept() at every loop turn (no error callback: a core spinning and
    libevent warning 230,000 times a second, found by a review). It pauses
    100 ms per failure now, as the daemon's own listeners do."""
    port = harness.free_port()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        d = objcached_factory({"objcached": {"metrics_listen": f"127.0.0.1:{port}",
                                             "write_timeout": "2s"},
                               "model User": {"push_check": "off"}}, env=ASAN_ENV)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    socks = []
    try:
        for _ in range(300):
            socks.append(connect(d))
        time.sleep(0.3)
        if scrape:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.2)
        cpu0 = _cpu_seconds(d.pid)
        time.sleep(1.0)
        cpu = _cpu_seconds(d.pid) - cpu0
    finally:
        for s in socks:
            s.close()
    warns = d.log().count("Error from accept() call")
    assert cpu < 0.25 and warns == 0, f"{cpu:.2f} s of CPU in 1 s; {warns} libevent warnings"
    harness.wait_until(lambda: _http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
                       .startswith(b"HTTP/1.1 200"), timeout=5, what="the page again")
    assert_healthy(d, expected)


# Making a command line contiguous (evbuffer_pullup) can fail when memory
# is short: the line was used without a check, and the daemon crashed.


def test_out_of_memory_reading_a_command_line_is_answered(objcached_factory):
    d = objcached_factory(env={"OBJCACHED_FAULT_OOM": "conn_line"})
    for _ in range(2):  # each command refused in step; the daemon lives on
        with socket.create_connection(("127.0.0.1", d.port), timeout=15) as s:
            s.sendall(b"version\r\nversion\r\n")
            got = b""
            while got.count(b"\r\n") < 2:
                chunk = s.recv(4096)
                assert chunk, got
                got += chunk
            assert got == b"SERVER_ERROR out of memory\r\n" * 2
    assert d.alive()


# --------------------------------------------------------------------------
# A pipeline trickled in one byte at a time: every command boundary falls
# inside a read, the quiet ones answer nothing, and nothing after `quit` runs


def test_pipeline_one_byte_at_a_time_with_noreply_and_quit(oc, expected):
    body = b'{"id":150,"trickled":true}'
    ms_body = b'{"id":153}'
    pipeline = (b"get User:1\r\n"
                b"set User:150 0 0 %d noreply\r\n%s\r\n" % (len(body), body)
                + b"delete User:151 noreply\r\n"
                b"md User:152 q\r\n"
                b"ms User:153 %d q\r\n%s\r\n" % (len(ms_body), ms_body)
                + b"mg User:151 v q\r\n"          # a tombstone now: EN, quiet
                b"mg User:150 v\r\n"
                b"set User:154 0 0 1 noreply\r\nxx\r\n"  # bad data chunk: dropped (noreply)
                b"mn\r\n"
                b"version\r\n"
                b"quit\r\n"
                b"get User:2\r\n"                 # after quit: never run
                b"delete User:156\r\n")
    with oc.client() as c:  # what the quiet deletes and the one after quit act on
        for i in (151, 152, 156):
            assert line_reply(c, b'set User:%d 0 0 10\r\n{"id":%d}\r\n' % (i, i)) == b"STORED"
    user1 = expected["User:1"]
    want = (b"VALUE User:1 0 %d\r\n%s\r\nEND\r\n" % (len(user1), user1)
            + b"VA %d\r\n%s\r\n" % (len(body), body)
            + b"ERROR\r\n"  # the "\\n" left of that block: an empty line
            + b"MN\r\n")
    s = connect(oc)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(pipeline)):
        if not send_quietly(s, pipeline[i:i + 1]):
            break  # closed after quit: the bytes after it may be refused
        time.sleep(0.001)  # one segment per byte
    got, closed = drain(s, quiet=1, total=10)
    s.close()
    assert got.startswith(want), got
    rest = got[len(want):]
    assert re.fullmatch(rb"VERSION [^\r\n]+\r\n", rest), (
        f"after the version line, {rest!r}: nothing may follow quit")
    assert closed, "quit did not close the connection"
    with oc.client() as c:
        assert c.get("User:150") == body
        assert c.get("User:151") is None
        assert c.get("User:152") is None
        assert c.get("User:153") == ms_body
        assert c.get("User:156") == b'{"id":156}', "a delete sent after quit ran"
    assert_healthy(oc, expected)


# --------------------------------------------------------------------------
# Out of descriptors, every 100 ms pause was logged: a client that holds
# connections up to the limit (idle_timeout is off by default) kept the
# daemon writing ten accept_failed lines a second for as long as it did


@pytest.mark.parametrize("scrape", [False, True], ids=["clients", "clients-and-scrape"])
def test_out_of_descriptors_is_logged_once_per_episode(objcached_factory, expected, scrape):
    port = harness.free_port()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        d = objcached_factory({"objcached": {"metrics_listen": f"127.0.0.1:{port}",
                                             "write_timeout": "2s"}}, env=ASAN_ENV)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def lines(event, metrics):
        return sum(1 for line in d.log().splitlines()
                   if f"event={event}" in line and ("where=metrics_listen" in line) == metrics)

    with d.client() as held:
        for episode in (1, 2):
            socks = []
            try:
                for _ in range(300):
                    socks.append(connect(d))  # the kernel queues those not accepted
                if scrape:  # queued on the metrics listener, which fails the same way
                    socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                errors = held.stats()["accept_errors"]
                harness.wait_until(lambda: held.stats()["accept_errors"] >= errors + 10,
                                   timeout=10, what="ten failed accepts (a second of pauses)")
                failed = (lines("accept_failed", False), lines("accept_failed", True))
                assert failed == (episode, episode if scrape else 0), (
                    f"accept_failed lines (clients, metrics) {failed} after "
                    f"{held.stats()['accept_errors']} failed accepts: one per pause, not "
                    f"one per episode")
            finally:
                for s in socks:
                    s.close()
            # Accepting again: said once, with how many accepts failed meanwhile.
            harness.wait_until(lambda: lines("accept_resumed", False) == episode and
                               lines("accept_resumed", True) == (episode if scrape else 0),
                               timeout=10, what="the accept_resumed lines")
            serves(held, expected)
    assert_healthy(d, expected)

"""systemd socket activation (LISTEN_PID, LISTEN_FDS: sd_listen_fds(3)).

This file plays systemd: it binds the TCP and unix listeners itself and
hands them to each objcached it starts as descriptors 3 and 4
(harness.Objcached(listen_fds=...)). What it shows:

- a restart (SIGTERM A, wait for its exit, start B on the same sockets)
  refuses no connection: while no process accepts, connections wait in the
  kernel's backlog, and every get is answered with the right value;
- the stop leaves the unix socket file, which is systemd's, in place;
- a reload (SIGHUP) leaves the inherited listeners serving;
- a configured listener that was not passed is bound as without systemd;
- malformed variables are ignored (the daemon binds as usual); a passed
  descriptor that is not a listening stream socket at a configured address
  fails the start with exit 1 and a line that says which and why;
- with NOTIFY_SOCKET too (FakeSystemd: systemd's file descriptor store), a
  restart hands the idle client connections to the next process
  (restart_handover): a client's connection outlives the restart, and what
  objcached closes after it reaches the client; a descriptor passed as a
  client that is not one objcached serves is closed and counted; a binary
  connection inside a refused request's body is closed, not handed over.
"""

import os
import re
import socket
import stat
import struct
import tempfile
import threading
import time

import pytest

import harness
from conftest import merge_config, standard_config, stop_checked

IDS = [1, 2, 3, 4, 5]


class Listeners:
    """What systemd's objcached.socket holds: a TCP listener on a free port
    of 127.0.0.1 and a unix one, both listening, owned by this process."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="oc-sa-", dir="/tmp")
        self.path = os.path.join(self.dir, "objcached.sock")
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(1024)
        self.port = self.tcp.getsockname()[1]
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.path)
        self.unix.listen(1024)

    def fds(self):
        return [self.tcp.fileno(), self.unix.fileno()]

    def overrides(self):
        return {"objcached": {"listen": f"127.0.0.1:{self.port}", "unix_socket": self.path}}

    def close(self):
        self.tcp.close()
        self.unix.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.rmdir(self.dir)


class FakeSystemd:
    """systemd's part of the notification protocol and the file descriptor
    store (https://systemd.io/FILE_DESCRIPTOR_STORE/), for one service: a
    NOTIFY_SOCKET (AF_UNIX, SOCK_DGRAM) read by a thread, which keeps the
    descriptors of FDSTORE=1 messages under their FDNAME, drops those of
    FDSTOREREMOVE=1 (and of any other message), and start() hands the
    listeners and the store to the next process as systemd does (LISTEN_FDS,
    LISTEN_FDNAMES: the socket unit's listeners first). Unlike systemd, it
    does not drop a stored connection whose client hung up (POLLHUP): the
    next process must."""

    def __init__(self, listeners):
        self.ls = listeners
        self.path = os.path.join(listeners.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.lock = threading.Lock()
        self.store = []         # [(name, fd)]
        self.messages = []
        self.done = threading.Event()
        self.reading = threading.Event()    # cleared: a systemd that stopped reading
        self.reading.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            if not self.reading.wait(0.05):
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 512)
            except socket.timeout:
                continue
            self._handle(msg.decode(), fds)

    def _handle(self, text, fds):
        fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
        with self.lock:
            self.messages.append(text)
            if fields.get("FDSTORE") == "1":
                self.store += [(fields.get("FDNAME", "stored"), fd) for fd in fds]
                return
            for fd in fds:
                os.close(fd)
            if fields.get("FDSTOREREMOVE") == "1":
                for name, fd in self.store:
                    if name == fields.get("FDNAME"):
                        os.close(fd)
                self.store = [(n, fd) for n, fd in self.store if n != fields.get("FDNAME")]

    def stored(self):
        with self.lock:
            return [name for name, _ in self.store]

    def said(self, what):
        with self.lock:
            return sum(m == what or m.startswith(what + "\n") for m in self.messages)

    def wait_stopped(self, d, stops):
        """Wait for d's exit and for its last word (STOPPING=1, sent after
        its drain's FDSTOREs) to be read: the store is complete."""
        d.wait_stopped()
        harness.wait_until(lambda: self.said("STOPPING=1") >= stops, timeout=10,
                           what="STOPPING=1 read")

    def env(self, extra=()):
        """The next process's descriptors (listeners, the store, `extra`:
        [(name, fd)]) and environment."""
        with self.lock:
            stored = list(self.store) + list(extra)
        names = ["objcached.socket"] * 2 + [name for name, _ in stored]
        fds = self.ls.fds() + [fd for _, fd in stored]
        return fds, {"NOTIFY_SOCKET": self.path, "LISTEN_FDNAMES": ":".join(names)}

    def close(self):
        self.done.set()
        self.thread.join(timeout=10)
        self.sock.close()
        os.unlink(self.path)
        for _, fd in self.store:
            os.close(fd)
        self.store = []


@pytest.fixture
def listeners():
    ls = Listeners()
    yield ls
    ls.close()


@pytest.fixture
def systemd(listeners):
    sd = FakeSystemd(listeners)
    yield sd
    sd.close()


@pytest.fixture
def daemons():
    """Objcached daemons a test starts itself; stopped (checked: exit 0, clean
    log) at teardown unless the test stopped them."""
    started = []
    yield started
    stop_checked(started)


def make(daemons, pg, mc_pool, objcached_bin, overrides=None, **kw):
    d = harness.Objcached(merge_config(standard_config(pg, mc_pool), overrides),
                          binary=objcached_bin, **kw)
    daemons.append(d)
    return d


def served(ref, port=None, path=None):
    with harness.McRaw(port=port, path=path) as c:
        for i in IDS:
            assert c.get(f"User:{i}") == ref.json("User", i)


class Client(threading.Thread):
    """Gets User:1..5 in a loop until stopped, over TCP or the unix socket;
    `persistent` keeps one connection, else a new connection per get.

    Records each failure as (time, kind, error): kind "connect" (refused,
    no such file, reset while connecting: what socket activation must
    prevent), "wrong" (a wrong value), or "closed" (a connection the
    server had accepted was closed or reset before the reply: the drain of
    the old process closes idle connections; the get is sent again on a
    new connection)."""

    def __init__(self, ref_values, port=None, path=None, persistent=False):
        super().__init__(daemon=True)
        self.want = ref_values
        self.port, self.path, self.persistent = port, path, persistent
        self.stop = threading.Event()
        self.failures = []
        self.answered = 0
        self.conn = None

    def connect(self):
        # Long timeouts: a connection waits in the backlog for the old
        # process's exit and the new one's start.
        return harness.McRaw(port=self.port, path=self.path, timeout=60)

    def one(self, key, want):
        if self.conn is None:
            try:
                self.conn = self.connect()
            except OSError as e:
                self.failures.append((time.monotonic(), "connect", repr(e)))
                time.sleep(0.01)
                return
        try:
            got = self.conn.get(key)
        except (harness.ConnectionClosed, ConnectionResetError, BrokenPipeError) as e:
            self.failures.append((time.monotonic(), "closed", repr(e)))
            self.conn.close()
            self.conn = None
            return self.one(key, want)   # again, on a new connection
        if got != want:
            self.failures.append((time.monotonic(), "wrong", f"{key}: {got!r}"))
        self.answered += 1
        if not self.persistent:
            self.conn.close()
            self.conn = None

    def run(self):
        try:
            while not self.stop.is_set():
                for i in IDS:
                    self.one(f"User:{i}", self.want[i])
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.failures.append((time.monotonic(), "error", repr(e)))
        finally:
            if self.conn is not None:
                self.conn.close()


def accept_queue(port):
    """Connections waiting to be accepted on the TCP listener of 127.0.0.1:port
    (/proc/net/tcp: a LISTEN socket's rx_queue is its accept queue)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no listener on 127.0.0.1:{port} in /proc/net/tcp")


def wait_answered(clients, more, what):
    base = [c.answered for c in clients]
    harness.wait_until(lambda: all(c.answered >= b + more for c, b in zip(clients, base)),
                       timeout=60, what=what)


def test_restart_on_inherited_sockets_refuses_no_connection(daemons, listeners, pg, mc_pool,
                                                            objcached_bin, ref):
    a = make(daemons, pg, mc_pool, objcached_bin, listeners.overrides(),
             listen_fds=listeners.fds()).start()
    log = a.log()
    assert f'event=listen_inherited fd=3 addr="127.0.0.1:{listeners.port}"' in log
    assert f'event=listen_inherited fd=4 addr="{listeners.path}"' in log
    served(ref, port=listeners.port)
    served(ref, path=listeners.path)
    assert a.stats()["listeners_inherited"] == 2

    # A reload leaves the inherited listeners alone.
    assert harness.reload(a, a.config_text)
    served(ref, port=listeners.port)
    served(ref, path=listeners.path)

    want = {i: ref.json("User", i) for i in IDS}
    clients = [Client(want, port=listeners.port), Client(want, port=listeners.port),
               Client(want, path=listeners.path), Client(want, path=listeners.path),
               Client(want, port=listeners.port, persistent=True),
               Client(want, path=listeners.path, persistent=True)]
    for c in clients:
        c.start()
    try:
        wait_answered(clients, 20, "every client answered under A")
        stop_sent = time.monotonic()
        a.begin_stop()
        a.wait_stopped()
        # The file is systemd's: A closed its copy of the socket and left it.
        assert stat.S_ISSOCK(os.lstat(listeners.path).st_mode)
        # No process at all now: the TCP clients' connections (two new ones,
        # the persistent one's reconnection) wait in the backlog.
        harness.wait_until(lambda: accept_queue(listeners.port) >= 3, timeout=20,
                           what="3 connections queued on the TCP listener")
        b_started = time.monotonic()
        b = make(daemons, pg, mc_pool, objcached_bin, listeners.overrides(),
                 listen_fds=listeners.fds()).start()
        wait_answered(clients, 20, "every client answered under B")
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(timeout=60)
    assert all(not c.is_alive() for c in clients)
    failures = [(c.path or c.port, c.persistent) + f for c in clients for f in c.failures]
    assert [f for f in failures if f[3] != "closed"] == [], \
        "connections refused or wrong values across the restart"
    # A connection A had accepted may be closed by its drain (idle ones at
    # once; the get goes again on a new connection, answered by B): only
    # while A stopped, never after B started.
    assert [f for f in failures if not stop_sent <= f[2] < b_started] == []
    assert "event=listen_inherited fd=3" in b.log()
    served(ref, port=listeners.port)
    served(ref, path=listeners.path)
    b.stop()
    assert stat.S_ISSOCK(os.lstat(listeners.path).st_mode)


def test_only_the_listener_passed_is_inherited(daemons, listeners, pg, mc_pool,
                                               objcached_bin, ref):
    # systemd passes the unix socket only: listen is bound as without it,
    # on a port of its own, and that socket file is removed at the stop.
    port = harness.free_port()
    d = make(daemons, pg, mc_pool, objcached_bin,
             {"objcached": {"listen": f"127.0.0.1:{port}", "unix_socket": listeners.path}},
             listen_fds=[listeners.unix.fileno()]).start()
    assert d.log().count("event=listen_inherited") == 1
    served(ref, port=port)
    served(ref, path=listeners.path)
    assert d.stats()["listeners_inherited"] == 1
    d.stop()
    assert stat.S_ISSOCK(os.lstat(listeners.path).st_mode)
    assert not harness.port_accepts(port)


@pytest.mark.parametrize("env, reason", [
    ({"LISTEN_FDS": "abc"}, "LISTEN_FDS is not a number"),
    ({"LISTEN_FDS": "-1"}, "LISTEN_FDS is not a number"),
    ({"LISTEN_FDS": "0"}, "LISTEN_FDS is out of range (1..65536)"),
    ({"LISTEN_FDS": "99999"}, "LISTEN_FDS is out of range (1..65536)"),
    ({"LISTEN_PID": "1x"}, "LISTEN_PID is not a process id"),
    ({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}, None),   # another process's
])
def test_malformed_variables_are_ignored(daemons, pg, mc_pool, objcached_bin, ref, env,
                                         reason):
    # Nothing passed at 3; the variables say otherwise or are not ours: the
    # daemon binds its listeners itself and serves.
    d = make(daemons, pg, mc_pool, objcached_bin, listen_fds=[], env=env).start()
    if reason:
        assert f'event=listen_fds_ignored reason="{reason}"' in d.log()
    else:
        assert "event=listen_fds_ignored" not in d.log()
    assert "event=listen_inherited" not in d.log()
    served(ref, port=d.port)
    served(ref, path=d.sock)
    assert d.stats()["listeners_inherited"] == 0


def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def regular_file():
    return tempfile.TemporaryFile()


def not_listening():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


def other_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


@pytest.mark.parametrize("make_fd, says", [
    (udp_socket, "LISTEN_FDS: fd 3 is not a stream socket (type 2)"),
    (regular_file, "LISTEN_FDS: fd 3 is not a socket: Socket operation on non-socket"),
    (not_listening, "LISTEN_FDS: fd 3 is a socket that is not listening"),
    (other_port, "LISTEN_FDS: fd 3 listens on 127.0.0.1:{port}, which neither listen "
                 "(127.0.0.1:{listen}) nor unix_socket ({sock}) names"),
])
def test_a_passed_descriptor_that_is_not_a_configured_listener_fails_the_start(
        daemons, pg, mc_pool, objcached_bin, make_fd, says):
    f = make_fd()
    try:
        d = make(daemons, pg, mc_pool, objcached_bin, listen_fds=[f.fileno()])
        with pytest.raises(harness.HarnessError):
            d.start()
        assert d.proc.returncode == 1
        port = f.getsockname()[1] if isinstance(f, socket.socket) else None
        want = says.format(port=port, listen=d.port, sock=d.sock)
        assert f'event=start_failed reason="{want}' in d.log()
        assert "event=ready" not in d.log()
        assert not harness.port_accepts(d.port)     # nothing bound, nothing served
        assert not os.path.exists(d.sock)
        d.stop(check=False)
    finally:
        f.close()


def test_a_second_socket_for_the_same_listener_fails_the_start(daemons, listeners, pg,
                                                               mc_pool, objcached_bin):
    d = make(daemons, pg, mc_pool, objcached_bin, listeners.overrides(),
             listen_fds=[listeners.unix.fileno(), listeners.unix.fileno()])
    with pytest.raises(harness.HarnessError):
        d.start()
    assert d.proc.returncode == 1
    assert (f'event=start_failed reason="LISTEN_FDS: fd 4: a second socket for '
            f'{listeners.path}"') in d.log()
    d.stop(check=False)
    assert stat.S_ISSOCK(os.lstat(listeners.path).st_mode)


# ---- restart_handover: systemd's file descriptor store -----------------------


def under_systemd(daemons, sd, pg, mc_pool, objcached_bin, settings=None, extra=()):
    """An objcached started by `sd` (FakeSystemd): its listeners, its store
    and `extra` [(name, fd)] passed, NOTIFY_SOCKET set."""
    fds, env = sd.env(extra)
    overrides = sd.ls.overrides()
    overrides["objcached"].update(settings or {})
    return make(daemons, pg, mc_pool, objcached_bin, overrides, listen_fds=fds,
                env=env).start()


def test_a_restart_hands_idle_connections_to_the_next_process(daemons, systemd, pg,
                                                              mc_pool, objcached_bin, ref):
    ls = systemd.ls
    a = under_systemd(daemons, systemd, pg, mc_pool, objcached_bin)
    tcp = harness.McRaw(port=ls.port, timeout=10)
    unx = harness.McRaw(path=ls.path, timeout=10)
    try:
        for c in (tcp, unx):
            assert c.get("User:1") == ref.json("User", 1)
        a.begin_stop()
        systemd.wait_stopped(a, 1)
        assert "event=handover handed=2 closed=0 left=0" in a.log()
        assert systemd.stored() == ["oc-client", "oc-client"]
        # No process: what the client sends waits in the kernel for the next.
        tcp.sendline("get User:2")
        b = under_systemd(daemons, systemd, pg, mc_pool, objcached_bin)
        reply = tcp.read_response()
        assert [v.data for v in reply.values] == [ref.json("User", 2)]
        assert unx.get("User:3") == ref.json("User", 3)
        assert "event=handover_adopted adopted=2 refused=0" in b.log()
        # Out of the store (FDSTOREREMOVE): objcached's close reaches the client.
        harness.wait_until(lambda: systemd.stored() == [], timeout=10, what="FDSTOREREMOVE")
        st = tcp.stats()
        assert (st["handover_adopted"], st["handover_refused"]) == (2, 0)
        tcp.sendline("quit")
        with pytest.raises(harness.ConnectionClosed):
            tcp.readline()
        # restart_handover = off (a reload): the next drain closes, as before.
        text = b.config_text.replace("[objcached]\n", "[objcached]\nrestart_handover = off\n")
        assert harness.reload(b, text)
        b.begin_stop()
        systemd.wait_stopped(b, 2)
        with pytest.raises(harness.ConnectionClosed):
            unx.readline()
        assert systemd.stored() == []
        assert "event=handover " not in b.log()
    finally:
        tcp.close()
        unx.close()


def test_a_systemd_that_stopped_reading_does_not_hold_the_stop(daemons, systemd, pg, mc_pool,
                                                               objcached_bin, ref):
    """Each send to systemd waits at most 1 s (its send timeout) once the
    notification socket's queue is full. With a systemd that stopped
    reading, every idle connection's send waited its second on the loop, one
    after the other, where no timer (shutdown_timeout) could end the stop:
    about 20 s for this test's clients (seen), hours for thousands. The first
    failed send now ends the handover; the connections left are closed."""
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        queue = int(f.read())       # datagrams a unix socket queues unread
    a = under_systemd(daemons, systemd, pg, mc_pool, objcached_bin)
    clients = [harness.McRaw(port=systemd.ls.port, timeout=10) for _ in range(queue + 20)]
    try:
        for c in clients:
            assert c.get("User:1") == ref.json("User", 1)
        systemd.reading.clear()
        t0 = time.monotonic()
        a.begin_stop()
        a.wait_stopped(timeout=60)
        took = time.monotonic() - t0
        assert "event=handover_failed" in a.log(), a.log(3000)
        m = re.search(r"event=handover handed=(\d+) closed=(\d+)", a.log())
        handed, closed = int(m.group(1)), int(m.group(2))
        assert handed + closed == len(clients) and closed >= 10, m.group(0)
        # the queue's sends, one failed send and STOPPING=1's: a few seconds, not one a client
        assert took < 10, took
    finally:
        systemd.reading.set()
        for c in clients:
            c.close()


def test_descriptors_passed_as_clients_that_objcached_cannot_serve(daemons, systemd, pg,
                                                                   mc_pool, objcached_bin,
                                                                   ref):
    ls = systemd.ls
    keep = []

    def connection():
        """A client's connection, as the store would hold it: the server's end."""
        c = harness.McRaw(port=ls.port, timeout=10)
        s, _ = ls.tcp.accept()
        keep.extend([c, s])
        return c, s

    good = [connection() for _ in range(4)]
    gone_client, gone = connection()
    gone_client.close()     # the client hung up while its connection was stored
    odd = [udp_socket(), regular_file(), other_port()]
    extra = [("oc-client", s.fileno()) for _, s in good] + \
        [("oc-client", gone.fileno())] + [("oc-client", f.fileno()) for f in odd]
    try:
        b = under_systemd(daemons, systemd, pg, mc_pool, objcached_bin,
                          {"max_connections": "3"}, extra)
        log = b.log()
        for why in ("not a stream socket", "not a socket", "a listening socket",
                    "the client has gone"):
            assert f'reason="{why}"' in log, why
        # Three connections of four within max_connections; the rest closed.
        assert "event=handover_adopted adopted=3 refused=5" in log
        assert systemd.said("FDSTOREREMOVE=1") == 1
        for c, _ in good[:3]:
            assert c.get("User:1") == ref.json("User", 1)
        st = good[0][0].stats()
        assert (st["handover_adopted"], st["handover_refused"]) == (3, 5)
        assert st["curr_connections"] == 3
    finally:
        for x in keep + odd:
            x.close()


def test_a_connection_busy_at_the_stop_is_answered_then_handed_over(daemons, systemd, pg,
                                                                    mc_pool, objcached_bin,
                                                                    ref):
    ls = systemd.ls
    a = under_systemd(daemons, systemd, pg, mc_pool, objcached_bin)
    locker = pg.connect(autocommit=False)
    busy = harness.McRaw(port=ls.port, timeout=15)
    piped = harness.McRaw(port=ls.port, timeout=15)
    try:
        locker.cursor().execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        busy.sendline("get User:150")
        # a command behind the one under way: not run, and the connection is
        # closed after the reply, as without the handover
        piped.send("get User:151\r\nget User:1\r\n")
        harness.wait_until(lambda: a.stats()["loads_in_flight"] >= 2, what="the loads to start")
        a.begin_stop()
        harness.wait_until(lambda: "event=stopping" in a.log(), what="the stop to begin")
        assert a.proc.poll() is None, "stopped before the commands under way finished"
        locker.rollback()
        assert [v.data for v in busy.read_response().values] == [ref.json("User", 150)]
        assert [v.data for v in piped.read_response().values] == [ref.json("User", 151)]
        with pytest.raises(harness.ConnectionClosed):
            piped.readline()
        systemd.wait_stopped(a, 1)
        m = re.search(r"event=handover handed=(\d+) closed=(\d+) left=0", a.log())
        assert m and int(m.group(1)) >= 1 and int(m.group(2)) >= 1, a.log()
        assert "oc-client" in systemd.stored()
        under_systemd(daemons, systemd, pg, mc_pool, objcached_bin)
        assert busy.get("User:1") == ref.json("User", 1)
    finally:
        locker.close()
        busy.close()
        piped.close()


BIN_HDR = struct.Struct(">BBHBBHIIQ")   # a binary request's or response's header


def bin_request(opcode, key, extras=b"", value=b"", opaque=0):
    body = extras + key + value
    return BIN_HDR.pack(0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, 0) + body


def bin_response(s):
    """(opcode, status, opaque, value) of the next binary response on s."""
    def exactly(n):
        got = b""
        while len(got) < n:
            chunk = s.recv(n - len(got))
            if not chunk:
                raise harness.ConnectionClosed(f"closed with {len(got)} of {n} bytes")
            got += chunk
        return got
    magic, opcode, klen, elen, _, status, blen, opaque, _ = BIN_HDR.unpack(exactly(24))
    assert magic == 0x81
    body = exactly(blen)
    return opcode, status, opaque, body[elen + klen:]


def test_a_binary_connection_inside_a_refused_body_is_closed_not_handed_over(
        daemons, systemd, pg, mc_pool, objcached_bin, ref):
    """A binary SET over max_value is answered 0x03 from its header and its
    body dropped as it comes: until the body's last byte, the connection is
    inside a request although objcached's input buffer is empty. Handed
    over there, the next process would take the rest of the body for
    requests (text ones, from its first byte) and answer garbage: it is
    closed, as without the handover; an idle binary one is handed over."""
    ls = systemd.ls
    a = under_systemd(daemons, systemd, pg, mc_pool, objcached_bin, {"max_value": "1k"})
    idle = socket.create_connection(("127.0.0.1", ls.port), timeout=10)
    inside = socket.create_connection(("127.0.0.1", ls.port), timeout=10)
    try:
        idle.sendall(bin_request(0x00, b"User:1", opaque=1))
        assert bin_response(idle) == (0x00, 0, 1, ref.json("User", 1))
        # a value of 1100 bytes (over 1 KiB, within the skip's bound): its
        # header and the first 100 bytes, the rest to come
        big = bin_request(0x01, b"User:2", b"\0" * 8, b"x" * 1100, opaque=2)
        inside.sendall(big[:24 + 8 + 6 + 100])
        assert bin_response(inside)[:3] == (0x01, 0x03, 2)
        a.begin_stop()
        systemd.wait_stopped(a, 1)
        assert "event=handover handed=1 closed=1 left=0" in a.log()
        assert systemd.stored() == ["oc-client"]
        assert inside.recv(4096) == b""
        under_systemd(daemons, systemd, pg, mc_pool, objcached_bin, {"max_value": "1k"})
        idle.sendall(bin_request(0x00, b"User:3", opaque=3))
        assert bin_response(idle) == (0x00, 0, 3, ref.json("User", 3))
    finally:
        idle.close()
        inside.close()

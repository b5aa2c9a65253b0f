"""A scripted fake memcached on loopback, for tests of objcached's own
memcached client (sidecar/oc_mc_*.c): what it answers is decided per command,
so a test can lose a reply, send one twice or for another key, trickle,
oversize or garble it, hang, or close the connection.

- FakeMc: every command goes to a handler; what the handler leaves
  unanswered gets the honest answer of an empty cache.
- FirstReadFake: the first read (a `gets`, or the first `mg` of a get's
  pipeline) is answered with a scenario's bytes, every later command as an
  empty cache would (test_mc_protocol.py's broken-reply cases)."""

import socket
import threading

# A whole, constant identity: the fake answers `stats` like one memcached
# process (pid, uptime, time: objcached's cas epoch, docs/protocol.md).
FAKE_STATS = b"STAT pid 4242\r\nSTAT uptime 100\r\nSTAT time 1700000100\r\nEND\r\n"


def listen_loopback():
    """A listening socket on a free loopback port: (socket, port, "host:port")."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    return sock, port, f"127.0.0.1:{port}"


class FakeMc:
    """A loopback memcached whose answers come from handler(fake, conn_no,
    words, data) -> bytes: b"" answers nothing, b"CLOSE" closes the
    connection, None gives the answer of an empty cache (empty_cache). data
    is the data block of a storage command (set/add/cas/ms), else None.
    `stats` is answered with `stats`, `commands` records (conn_no, words).
    With `mute_after_stats`, nothing sent after a `stats` on the same
    connection is answered: a reply that never ends stays unended, instead of
    being ended by whatever the next command's answer happens to be."""

    def __init__(self, handler=None, stats=FAKE_STATS, mute_after_stats=False):
        self.handler = handler or (lambda *a: None)
        self.stats = stats
        self.mute_after_stats = mute_after_stats
        self.connections = 0
        self.commands = []            # (conn_no, words)
        self.conns = []
        self.lock = threading.Lock()
        self.sock, self.port, self.address = listen_loopback()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    @staticmethod
    def empty_cache(words):
        cmd = words[0]
        if cmd in (b"get", b"gets"):
            return b"END\r\n"
        if cmd == b"mg":
            return b"EN\r\n"
        if cmd in (b"set", b"add"):
            return b"STORED\r\n"
        if cmd == b"cas":
            return b"NOT_FOUND\r\n"
        if cmd == b"ms":
            return b"HD c1\r\n"
        if cmd == b"md":
            return b"NF\r\n"
        if cmd == b"delete":
            return b"NOT_FOUND\r\n"
        if cmd == b"version":
            return b"VERSION 1.6.18-fake\r\n"
        if cmd == b"flush_all":
            return b"OK\r\n"
        return b"ERROR\r\n"

    def _serve(self, c, n):
        buf = b""
        muted = False
        try:
            while not self._stop:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                while True:
                    line, sep, rest = buf.partition(b"\r\n")
                    if not sep:
                        break
                    words = line.split()
                    block = None
                    if words and words[0] in (b"set", b"add", b"cas", b"ms"):
                        size = int(words[4] if words[0] != b"ms" else words[2])
                        if len(rest) < size + 2:
                            break
                        block, rest = rest[:size], rest[size + 2:]
                    buf = rest
                    if not words:
                        continue
                    with self.lock:
                        self.commands.append((n, words))
                    if muted:
                        continue
                    if words == [b"stats"]:
                        out = self.stats
                        muted = self.mute_after_stats
                    else:
                        out = self.handler(self, n, words, block)
                        if out is None:
                            out = self.empty_cache(words)
                    if out == b"":
                        continue
                    if out == b"CLOSE":
                        c.close()
                        return
                    c.sendall(out)
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self._stop = True
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


class FirstReadFake(FakeMc):
    """Answers the first read (gets or mg) with `first` (bytes, or None to
    close the connection instead) and sets `sent_scenario`; with
    `hang_reads`, no read (get, gets, mg) and no `version` (the health
    probe, whose answer would count as a success between the reads'
    timeouts) is ever answered. `stats` is answered `stats` (ERROR by
    default: a server without it)."""

    def __init__(self, first, stats=b"ERROR\r\n", hang_reads=False, mute_after_stats=False):
        self.first = first
        self.hang_reads = hang_reads
        self.sent_scenario = threading.Event()
        super().__init__(self._answer, stats=stats, mute_after_stats=mute_after_stats)

    def _answer(self, fake, n, words, block):
        if any(w.startswith(b"oc:objcached.") for w in words[1:]):
            # the sidecar's own marker (the database's identity, read at
            # start when the hook is installed: a database another test file
            # of the same pytest run installed it in): not a client's read
            return None
        if words[0] in (b"get", b"gets", b"mg", b"version") and self.hang_reads:
            return b""
        if words[0] in (b"gets", b"mg") and not self.sent_scenario.is_set():
            self.sent_scenario.set()
            return b"CLOSE" if self.first is None else self.first
        return None

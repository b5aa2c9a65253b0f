"""A TCP proxy for injecting network faults between objcached and one of its
servers (a memcached server, or PostgreSQL), switchable at run time:

- "forward": transparent;
- "delay":   every chunk is held `delay` seconds before it is passed on, in
             both directions (a slow or congested link);
- "drop":    connections stay open but nothing passes either way, and new
             ones are accepted and hang the same way (packets lost: the peer
             only finds out by its own timeouts);
- "reset":   every open connection is closed with a TCP RST, and new ones
             are reset as soon as they are accepted (a peer that restarts,
             a middlebox that kills flows).

Switching from "drop" or "reset" back to "forward" closes the connections
that hung meanwhile (with a RST), as a recovered network would break them;
connections made after the switch pass again. Loopback only. Used by
consistency.py (the randomized consistency run) and its tests.

Apart from the mode, hold_replies_after(marker) holds the server's bytes of
a connection whose client sent `marker` (a query's text), from that query
on, until release(): the query has run (its snapshot is taken) once
held_ports() names the connection, and its result is not delivered yet.
With keep_open=True the client's end of such a connection is not closed
either when the client shuts its side (a half-close) until release(): a
server that has not answered yet, as the client sees it.
"""

import socket
import struct
import threading
import time

MODES = ("forward", "delay", "drop", "reset")


def _rst(sock):
    """Close with a RST (SO_LINGER 0) rather than a FIN. shutdown() first:
    a close() alone, while a pump thread is blocked in recv() on the socket,
    is deferred by the kernel until that recv returns, and the peer (a
    PostgreSQL backend idle in a transaction, say) would never hear of it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    def __init__(self, target_port, target_host="127.0.0.1", name="proxy"):
        self.target = (target_host, target_port)
        self.name = name
        self.mode = "forward"
        self.delay = 0.2
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns = set()       # open sockets, both sides
        self.counts = {"accepted": 0, "reset": 0, "bytes": 0}
        self._marker = None       # hold_replies_after's
        self._held = {}           # server socket -> (its local port, answered), while held
        self._keep_open = False   # hold_replies_after's
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"{name}-accept")
        self._thread.start()

    def __repr__(self):
        return f"FaultProxy({self.name} 127.0.0.1:{self.port} -> {self.target[1]}, {self.mode})"

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode, delay=None):
        assert mode in MODES, mode
        if delay is not None:
            self.delay = delay
        with self._lock:
            old, self.mode = self.mode, mode
            conns = list(self._conns) if mode == "reset" or old in ("drop", "reset") else []
            if conns:
                self._conns.clear()
        for s in conns:
            _rst(s)
        with self._lock:
            self.counts["reset"] += len(conns)

    def hold_replies_after(self, marker, keep_open=False):
        """From now on, a connection whose client sends `marker` gets no more
        bytes from the server until release() (keep_open: nor the end of
        the connection, when the client half-closes it)."""
        with self._lock:
            self._marker = marker
            self._keep_open = keep_open

    def held_ports(self):
        """The local ports (PostgreSQL's client_port) of the connections
        held that the server has answered since (their replies wait here)."""
        with self._lock:
            return sorted(port for port, answered in self._held.values() if answered)

    def release(self, then_hold=None):
        """Pass the held replies on; then_hold: at once, hold_replies_after
        that marker (no statement of a released client can slip past)."""
        with self._lock:
            self._marker = then_hold
            self._keep_open = False
            self._held.clear()

    def _accept_loop(self):
        self.lsock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                mode = self.mode
                self.counts["accepted"] += 1
            if mode == "reset":
                _rst(client)
                with self._lock:
                    self.counts["reset"] += 1
                continue
            server = None
            if mode != "drop":
                try:
                    server = socket.create_connection(self.target, timeout=5)
                    server.settimeout(None)
                except OSError:
                    _rst(client)
                    continue
            with self._lock:
                self._conns.add(client)
                if server is not None:
                    self._conns.add(server)
            for src, dst in ((client, server), (server, client)):
                if src is not None:
                    threading.Thread(target=self._pump, args=(src, dst, server),
                                     daemon=True).start()

    def _hold(self, src, data, server):
        """hold_replies_after: mark the connection when its client sends the
        marker (before the query is passed on); hold its server's bytes."""
        if src is not server:
            with self._lock:
                if self._marker is not None and self._marker in data:
                    self._held[server] = (server.getsockname()[1], False)
            return
        while not self._stop.is_set():
            with self._lock:
                if server not in self._held:
                    return
                self._held[server] = (self._held[server][0], True)
            time.sleep(0.02)

    def _pump(self, src, dst, server=None):
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if server is not None:
                    self._hold(src, data, server)
                while True:
                    with self._lock:
                        mode, delay = self.mode, self.delay
                    if mode != "drop" or dst is None:
                        break
                    time.sleep(0.05)  # hold it: nothing passes while dropping
                if dst is None:
                    continue  # accepted while dropping: it hangs, as documented
                if mode == "reset":
                    break
                if mode == "delay":
                    time.sleep(delay)
                dst.sendall(data)
                with self._lock:
                    self.counts["bytes"] += len(data)
        except OSError:
            pass
        finally:
            while server is not None and src is not server and not self._stop.is_set():
                with self._lock:
                    if not (self._keep_open and server in self._held):
                        break
                time.sleep(0.02)
            with self._lock:
                mine = src in self._conns
                self._conns.discard(src)
                self._conns.discard(dst)
            if mine:
                for s in (src, dst):
                    if s is not None:
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        try:
                            s.close()
                        except OSError:
                            pass

    def close(self):
        self._stop.set()
        self.set_mode("reset")
        self.lsock.close()
        self._thread.join(5)

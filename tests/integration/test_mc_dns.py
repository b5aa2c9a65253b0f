"""memcached servers named by DNS whose address changes (a review,
2026-12-06): a Kubernetes StatefulSet pod (`memcached-0.memcached:11211`)
gets a new address whenever it is replaced.

objcached runs in its own mount namespace with a private /etc/hosts (and
/etc/resolv.conf), rewritten in place to move a name; two memcached
processes listen on the same port of 127.0.0.2 and 127.0.0.3 (both reach
this machine). glibc's getaddrinfo reads /etc/hosts at each call.

- a server whose name moved while it was down is probed at its new
  address (once, logged and counted), not at the old one for ever;
- a reload with an unchanged `servers` line resolves the names again;
- a reload that adds a name whose DNS server does not answer does not
  stall the requests under way (getaddrinfo runs off the event loop).
"""

import os
import shlex
import socket
import subprocess
import threading
import time

import pytest

import harness
from consistency import cache_key

NAME = "mc-dns.test"
SLOW_NAME = "mc-slow.test"


class AddrMemcached(harness.Memcached):
    """A memcached listening on `ip` instead of 127.0.0.1."""

    def __init__(self, ip, port):
        super().__init__(port=port)
        self.ip = ip

    def argv(self):
        argv = super().argv()
        argv[argv.index("-l") + 1] = self.ip
        return argv

    def start(self, timeout=harness.DEFAULT_TIMEOUT):
        """As harness.Memcached's, polling self.ip."""
        harness._register(self)
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness.wait_until(lambda: harness.port_accepts(self.port, self.ip) or
                           self.proc.poll() is not None, timeout=timeout)
        assert self.proc.poll() is None, f"memcached on {self.ip}:{self.port} exited"
        return self

    def client(self, timeout=harness.DEFAULT_TIMEOUT):
        return harness.McRaw(host=self.ip, port=self.port, timeout=timeout)


def port_free_on(port, ips):
    for ip in ips:
        with socket.socket() as s:
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


@pytest.fixture
def two_addresses():
    """(port, memcached on 127.0.0.2, memcached on 127.0.0.3), the same port."""
    for _ in range(20):
        port = harness.free_port()
        if port_free_on(port, ("127.0.0.2", "127.0.0.3")):
            break
    a, b = AddrMemcached("127.0.0.2", port), AddrMemcached("127.0.0.3", port)
    a.start()
    b.start()
    yield port, a, b
    a.cleanup()
    b.cleanup()


@pytest.fixture
def private_etc(tmp_path, monkeypatch):
    """Files bind-mounted over /etc/hosts and /etc/resolv.conf in
    objcached's own mount namespace: write_hosts(ip) moves NAME (in place:
    the mount holds the inode)."""
    hosts, resolv = tmp_path / "hosts", tmp_path / "resolv.conf"

    def write_hosts(ip):
        """ip None: NAME is in no hosts file (DNS, which never answers)."""
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n" + (f"{ip} {NAME}\n" if ip else ""))

    write_hosts("127.0.0.2")
    # SLOW_NAME is not in hosts: asked of a DNS server that never answers
    resolv.write_text("nameserver 127.0.0.5\noptions timeout:3 attempts:1\n")
    script = (f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && "
              f"mount --bind {shlex.quote(str(resolv))} /etc/resolv.conf && exec \"$@\"")
    wrapper = ["unshare", "--mount", "sh", "-c", script, "sh"]
    wrapper += shlex.split(os.environ.get("OBJCACHED_WRAPPER", ""))
    monkeypatch.setenv("OBJCACHED_WRAPPER", shlex.join(wrapper))
    return write_hosts


def start(objcached_factory, port, **memcached):
    return objcached_factory({"memcached": {"servers": f"{NAME}:{port}",
                                            "retry_timeout": "200ms",
                                            "io_timeout": "300ms",
                                            "failure_limit": "1", **memcached}})


def state(oc, port):
    return oc.stats()[f"mc_server:{NAME}:{port}:state"]


def get_lands_on(oc, m, ident):
    """A get of User:<ident> through oc, then: did memcached m cache it?"""
    with oc.client() as c:
        c.get_multi([f"User:{ident}"])
    oc.wait_idle()
    with m.client(timeout=5) as c:
        c.sendline(b"mg " + cache_key("User", ident).encode() + b" v")
        return c.readline().split()[0] == b"VA"


def address_changed_line(port):
    return (f"event=memcached_address_changed server={NAME}:{port} "
            f"old=127.0.0.2:{port} new=127.0.0.3:{port}")


def test_a_server_whose_name_moved_while_down_is_probed_at_its_new_address(
        objcached_factory, private_etc, two_addresses):
    """The pod is replaced: memcached at 127.0.0.2 goes, its name now
    resolves to 127.0.0.3. Before: the name was resolved once at start, the
    server stayed down for ever, its probes connecting to 127.0.0.2.
    Expected: a probe resolves the name again, logs the change once, counts
    it, and the server serves at 127.0.0.3 (flushed first: failover on)."""
    port, a, b = two_addresses
    oc = start(objcached_factory, port)
    harness.wait_until(lambda: get_lands_on(oc, a, 1), what="User:1 cached at 127.0.0.2")
    private_etc("127.0.0.3")
    a.stop()
    with oc.client() as c:      # the connection to 127.0.0.2 fails: down
        c.get_multi(["User:2"])
    harness.wait_until(lambda: state(oc, port) == "up" and get_lands_on(oc, b, 3),
                       timeout=10, what=lambda: f"the server up at 127.0.0.3: "
                       f"{state(oc, port)}\n{oc.log(4000)}")
    log = oc.log()
    assert log.count(address_changed_line(port)) == 1, log
    assert oc.stats()["mc_address_changes"] == 1
    assert b.stats()["cmd_flush"] == 1    # flushed before it served again


def test_a_reload_resolves_the_names_again(objcached_factory, private_etc, two_addresses):
    """The name moved while the server at its old address still answers:
    the operator reloads with the same `servers` line. Before: the server
    was kept as it was, on 127.0.0.2. Expected: the reload resolves the
    name again, and the server is probed and serves at 127.0.0.3."""
    port, a, b = two_addresses
    oc = start(objcached_factory, port)
    harness.wait_until(lambda: get_lands_on(oc, a, 1), what="User:1 cached at 127.0.0.2")
    private_etc("127.0.0.3")
    assert harness.reload(oc, oc.config_text)
    harness.wait_until(lambda: state(oc, port) == "up" and get_lands_on(oc, b, 4),
                       timeout=10, what=lambda: f"the server up at 127.0.0.3: "
                       f"{state(oc, port)}\n{oc.log(4000)}")
    assert oc.log().count(address_changed_line(port)) == 1
    assert oc.stats()["mc_address_changes"] == 1
    # the same name, placed the same way: a reload that resolves again and
    # finds the address unchanged changes nothing
    assert harness.reload(oc, oc.config_text)
    assert oc.stats()["mc_address_changes"] == 1 and state(oc, port) == "up"


def test_a_reload_adding_a_name_dns_does_not_answer_stalls_nothing(
        objcached_factory, private_etc, two_addresses):
    """A reload adds a server whose name goes to a DNS server that does not
    answer (3 s). Before: getaddrinfo ran on the event loop, every request
    waited those 3 s. Expected: requests under way during the reload are
    answered as before; the new server is out of service until it resolves."""
    port, a, b = two_addresses
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # hears, never answers
    dns.bind(("127.0.0.5", 53))
    try:
        oc = start(objcached_factory, port)
        with oc.client() as c:
            c.get_multi(["User:1"])
        worst, stop = [0.0], threading.Event()

        def reads():
            with oc.client() as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    c.get_multi(["User:1"])
                    worst[0] = max(worst[0], time.monotonic() - t0)

        t = threading.Thread(target=reads)
        t.start()
        try:
            text = harness.edit(oc.config_text, "memcached", "servers",
                                f"{NAME}:{port} {SLOW_NAME}:{port}")
            t0 = time.monotonic()
            taken = harness.reload(oc, text)
            took = time.monotonic() - t0
            harness.wait_until(lambda: worst[0] > 0)
        finally:
            stop.set()
            t.join()
        assert took < 1.5 and worst[0] < 1.5, (took, worst[0])
        assert taken    # the name is tried again by the server's probes
        assert oc.stats()[f"mc_server:{SLOW_NAME}:{port}:state"] != "up"
        harness.wait_until(lambda: "event=memcached_resolve_failed server="
                           f"{SLOW_NAME}:{port}" in oc.log(), timeout=10,
                           what="the resolution's failure in the log")
    finally:
        dns.close()


def test_a_name_that_does_not_resolve_at_start_is_a_server_down(
        objcached_factory, private_etc, two_addresses):
    """The sidecar (re)starts while a pod is being replaced: its name is in
    no hosts file and DNS does not answer. Before: objcached refused to
    start, so the host served no key at all. Expected: it starts with that
    server out of service (said once), answers from PostgreSQL meanwhile,
    and serves at the name's address once it resolves; --check-config says
    so in a warning (exit 0: DNS where the file is checked may not be the
    servers')."""
    port, a, _ = two_addresses
    private_etc(None)
    oc = start(objcached_factory, port)
    assert f"event=memcached_resolve_failed server={NAME}:{port}" in oc.log()
    assert state(oc, port) != "up"
    with oc.client() as c:
        got, end = c.get_multi(["User:5"])
    assert end == b"END" and [k for k, _, _ in got] == [b"User:5"]
    check = subprocess.run(
        shlex.split(os.environ["OBJCACHED_WRAPPER"]) +
        [oc.binary, "--check-config", oc.config_path, "--no-db"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (f"warning: servers: memcached server {NAME}:{port} does not resolve here"
            in check.stdout), check.stdout
    private_etc("127.0.0.2")
    harness.wait_until(lambda: state(oc, port) == "up" and get_lands_on(oc, a, 6),
                       timeout=20, what=lambda: f"the server up at 127.0.0.2: "
                       f"{state(oc, port)}\n{oc.log(4000)}")

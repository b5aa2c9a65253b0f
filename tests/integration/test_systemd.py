"""objcached under a real systemd: the packaged units (packaging/), unchanged.

test_socket_activation.py plays systemd's part of the protocols itself
(FakeSystemd); this file runs systemd 252 (Debian 12's) as a user manager
(`systemd --user`, root's) in a mount namespace of its own, where
/run/systemd/system exists so that it agrees to run on a machine that was
not booted with systemd. It loads packaging/objcached.service and
packaging/objcached.socket as they ship, plus drop-ins that change only
what a test machine must: the paths (binary, config file, listeners), the
user (root's manager cannot be told apart from a user's here: no
objcached user needed) and where the log goes (no journal). Everything
else is the packaged units' own: Type=notify, FileDescriptorStoreMax,
the sandbox (ProtectSystem=strict, ProtectHome, PrivateTmp, ...),
Restart=on-failure, ExecReload, ExecStartPre's --check-config.

What it shows, with systemctl:
- a restart (systemctl restart) hands the idle client connections to the
  next process through systemd's file descriptor store: a client's pooled
  connection outlives it, no call fails, and the next process empties the
  store (FDSTOREREMOVE);
- a stop then a start (no restart job) empties the store: the client sees
  its connection closed, as the unit's comment says;
- a reload (SIGHUP) keeps the process, a SIGKILLed process is started
  again by Restart=on-failure and the socket unit kept every connection
  waiting meanwhile.

The files live under /var/lib (mkdtemp), not /tmp or /root: the unit's
PrivateTmp= and ProtectHome= hide those from objcached. PostgreSQL is
reached over TCP for the same reason.
"""

import os
import resource
import shutil
import signal
import subprocess
import tempfile

import pytest

import harness
from conftest import standard_config, merge_config
from test_socket_activation import IDS, Client, wait_answered

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEMD_CANDIDATES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
STEP_TIMEOUT = 60


def systemd_binary():
    for path in SYSTEMD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    pytest.fail("systemd is not installed (none of " + ", ".join(SYSTEMD_CANDIDATES) +
                "): scripts/deps.sh installs it (Debian package systemd)")


class UserSystemd:
    """A `systemd --user` of root's, in a private mount namespace with a
    tmpfs on /run/systemd holding an empty system/ (sd_booted(3)) and the
    inaccessible/ nodes, its
    runtime and configuration directories under `dir`. Dies with the test
    process (PR_SET_PDEATHSIG survives the execs of unshare and sh)."""

    def __init__(self, parent):
        if os.geteuid() != 0:
            pytest.fail("test_systemd.py runs as root (a user manager of root's in a mount "
                        "namespace of its own)")
        self.dir = parent
        self.runtime = os.path.join(self.dir, "run")
        self.config = os.path.join(self.dir, "config")
        self.units = os.path.join(self.config, "systemd", "user")
        os.makedirs(self.runtime, mode=0o700)
        os.makedirs(self.units)
        self.log_path = os.path.join(self.dir, "manager.log")
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.runtime, XDG_CONFIG_HOME=self.config,
                        SYSTEMD_PAGER="", SYSTEMD_LOG_LEVEL="info")
        # The nodes systemd as PID 1 makes at boot, which the unit's
        # ProtectHome= (InaccessiblePaths=) mounts over what it hides.
        script = ("mkdir -p /run/systemd && mount -t tmpfs -o mode=0755 tmpfs /run/systemd && "
                  "mkdir /run/systemd/system /run/systemd/inaccessible && "
                  "cd /run/systemd/inaccessible && mkdir -m 0 dir && install -m 0 /dev/null reg "
                  "&& mkfifo -m 0 fifo && mknod -m 0 chr c 0 0 && mknod -m 0 blk b 0 0 && "
                  f"cd / && exec {systemd_binary()} --user --log-target=console --log-level=info")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=harness._set_pdeathsig)
        harness.wait_until(self._up, timeout=STEP_TIMEOUT, what="systemd --user to answer")

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd --user exited ({self.proc.returncode}):\n"
                                 + harness._read_text(self.log_path))
        # (is-system-running says "offline" for a manager reached without D-Bus)
        return self.systemctl("show", "-p", "SystemState", "--value",
                              check=False).stdout.strip() in ("running", "degraded")

    def systemctl(self, *args, check=True, timeout=STEP_TIMEOUT):
        r = subprocess.run(["systemctl", "--user", "--no-ask-password", *args], env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)}: exit {r.returncode}\n"
                                 f"{r.stdout}{r.stderr}\n"
                                 + self.systemctl("status", "objcached.service", check=False,
                                                  timeout=10).stdout)
        return r

    def prop(self, unit, name):
        return self.systemctl("show", "-p", name, "--value", unit).stdout.strip()

    def close(self):
        try:
            if self.proc.poll() is None:
                self.systemctl("stop", "objcached.service", "objcached.socket", check=False,
                               timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)   # a user manager exits on SIGTERM
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()


class Service:
    """objcached.service and objcached.socket, as packaged, with drop-ins
    that set the paths, the user and the log."""

    def __init__(self, sd, config, binary):
        self.sd = sd
        self.dir = sd.dir
        self.port = harness.free_port()
        self.path = os.path.join(self.dir, "objcached.sock")
        self.ini = os.path.join(self.dir, "objcached.ini")
        self.log_path = os.path.join(self.dir, "objcached.log")
        # A copy of the binary: the repository may be under /root or /home,
        # which ProtectHome= hides from the service.
        self.binary = os.path.join(self.dir, "objcached")
        shutil.copy2(binary, self.binary)
        config = merge_config(config, {"objcached": {
            "listen": f"127.0.0.1:{self.port}", "unix_socket": self.path}})
        with open(self.ini, "w", encoding="utf-8") as f:
            f.write(harness.render_ini(config))
        for unit in ("objcached.service", "objcached.socket"):
            shutil.copy(os.path.join(ROOT, "packaging", unit), sd.units)
            os.makedirs(os.path.join(sd.units, unit + ".d"))
        # ('%' doubled: systemd expands specifiers in Environment=)
        sanitizers = "".join(f'Environment="{k}={os.environ[k].replace("%", "%%")}"\n'
                             for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")
                             if k in os.environ)
        self._dropin("objcached.service", f"""[Service]
ExecStartPre=
ExecStartPre={self.binary} --no-db --check-config {self.ini}
ExecStart=
ExecStart={self.binary} -c {self.ini}
User=
Group=
EnvironmentFile=
{sanitizers}StandardOutput=append:{self.log_path}
StandardError=append:{self.log_path}
""")
        self._dropin("objcached.socket", f"""[Socket]
ListenStream=
ListenStream={self.path}
ListenStream=127.0.0.1:{self.port}
SocketUser=
SocketGroup=
""")
        sd.systemctl("daemon-reload")

    def _dropin(self, unit, text):
        with open(os.path.join(self.sd.units, unit + ".d", "test.conf"), "w",
                  encoding="utf-8") as f:
            f.write(text)

    def main_pid(self):
        return int(self.sd.prop("objcached.service", "MainPID"))

    def stored(self):
        """Descriptors in the service's file descriptor store."""
        return int(self.sd.prop("objcached.service", "NFileDescriptorStore"))

    def stats(self):
        with harness.McRaw(port=self.port) as c:
            return c.stats()

    def log(self):
        return harness._read_text(self.log_path)


@pytest.fixture
def unit(pg, mc_pool, objcached_bin):
    d = tempfile.mkdtemp(prefix="oc-systemd-", dir="/var/lib")
    sd = None
    try:
        sd = UserSystemd(d)
        config = standard_config(pg, mc_pool)
        config["postgresql"]["conninfo"] = pg.tcp_conninfo   # PrivateTmp= hides pg's socket
        svc = Service(sd, config, objcached_bin)
        yield svc
        sd.systemctl("stop", "objcached.service", "objcached.socket")
        assert svc.stored() == 0
        # the last process exited 0 (a sanitizer's report would exit 1)
        assert sd.prop("objcached.service", "Result") == "success", svc.log()[-3000:]
        bad = harness.malformed_log_lines(svc.log())
        assert not bad, f"malformed log lines: {bad}"
    finally:
        if sd is not None:
            sd.close()
        if not os.environ.get("OC_KEEP"):   # OC_KEEP=1: keep the units and logs to read
            shutil.rmtree(d, ignore_errors=True)


def start(svc):
    """The socket unit, then the service: `systemctl start` returns once
    objcached said READY=1 (Type=notify)."""
    svc.sd.systemctl("start", "objcached.socket")
    svc.sd.systemctl("start", "objcached.service")
    assert svc.sd.prop("objcached.service", "ActiveState") == "active"
    return svc.main_pid()


def test_a_restart_hands_pooled_connections_over_and_fails_no_call(unit, ref):
    old = start(unit)
    want = {i: ref.json("User", i) for i in IDS}
    clients = [Client(want, port=unit.port, persistent=True),
               Client(want, path=unit.path, persistent=True)]
    for c in clients:
        c.start()
    try:
        wait_answered(clients, 20, "gets before the restart")
        unit.sd.systemctl("restart", "objcached.service")
        new = unit.main_pid()
        assert new not in (0, old)
        wait_answered(clients, 50, "gets after the restart")
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(timeout=30)
    assert [c.failures for c in clients] == [[], []], "a call failed across the restart"
    st = unit.stats()
    # Both pooled connections came across (the stats' own connection is new).
    assert st["handover_adopted"] >= 2, st
    assert st["handover_refused"] == 0, st
    # The next process removed what it adopted from systemd's store.
    harness.wait_until(lambda: unit.stored() == 0, timeout=10,
                       what="the store to be emptied by the next process")
    log = unit.log()
    assert "event=handover_adopted" in log, log[-3000:]


def test_a_stop_then_a_start_empties_the_store_and_closes_the_connection(unit, ref):
    start(unit)
    c = harness.McRaw(port=unit.port, timeout=30)
    try:
        assert c.get("User:1") == ref.json("User", 1)
        unit.sd.systemctl("stop", "objcached.service")
        # objcached cannot tell a stop from a restart: it stored the
        # connection, and systemd, with no restart queued, closed the store.
        assert unit.stored() == 0
        c.sock.settimeout(10)
        assert c.sock.recv(1) == b"", "the stored connection was not closed"
    finally:
        c.close()
    assert "event=handover" in unit.log()
    unit.sd.systemctl("start", "objcached.service")
    with harness.McRaw(port=unit.port) as fresh:
        assert fresh.get("User:2") == ref.json("User", 2)
        assert fresh.stats()["handover_adopted"] == 0


def test_reload_keeps_the_process_and_a_killed_one_is_started_again(unit, ref):
    pid = start(unit)
    before = unit.stats()["reloads"]
    unit.sd.systemctl("reload", "objcached.service")   # ExecReload: kill -HUP $MAINPID
    harness.wait_until(lambda: unit.stats()["reloads"] == before + 1, timeout=10,
                       what="the reload to be applied")
    assert unit.main_pid() == pid
    os.kill(pid, signal.SIGKILL)
    # Restart=on-failure, RestartSec=1: meanwhile the socket unit holds the
    # listeners, so these connections wait in the backlog and are answered.
    answered = []
    for i in IDS:
        with harness.McRaw(port=unit.port, timeout=STEP_TIMEOUT) as c:
            answered.append(c.get(f"User:{i}") == ref.json("User", i))
    with harness.McRaw(path=unit.path, timeout=STEP_TIMEOUT) as c:
        answered.append(c.get("User:3") == ref.json("User", 3))
    assert all(answered)
    harness.wait_until(lambda: unit.main_pid() not in (0, pid), timeout=STEP_TIMEOUT,
                       what="systemd to start objcached again")
    assert int(unit.sd.prop("objcached.service", "NRestarts")) == 1


def test_the_packaged_sandbox_is_in_force(unit):
    """The unit's ProtectSystem=strict and PrivateTmp= hold for the running
    process: what objcached sees of / is read-only, its /tmp is its own."""
    pid = start(unit)
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        mounts = [line.split() for line in f]
    root = next(m for m in mounts if m[4] == "/")
    assert "ro" in root[5].split(","), root
    tmp = [m for m in mounts if m[4] == "/tmp"]
    assert tmp, "no mount of its own on /tmp (PrivateTmp=)"


def test_two_thousand_idle_connections_come_across_a_restart(unit, ref):
    """One datagram per descriptor reaches systemd's notification socket,
    whose queue is short (net.unix.max_dgram_qlen): systemd must drain it
    as objcached sends, or the handover ends at the first send that waits
    too long. Every connection must come across."""
    n = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    start(unit)
    want = ref.json("User", 1)
    conns = []
    try:
        for _ in range(n):
            c = harness.McRaw(port=unit.port, timeout=STEP_TIMEOUT)
            conns.append(c)
            assert c.get("User:1") == want
        unit.sd.systemctl("restart", "objcached.service")
        st = unit.stats()
        assert (st["handover_adopted"], st["handover_refused"]) == (n, 0), st
        for c in conns:
            assert c.get("User:1") == want
    finally:
        for c in conns:
            c.close()
    assert "event=handover handed=2000 closed=0 left=0" in unit.log()


def test_past_file_descriptor_store_max_a_client_sees_its_connection_closed(unit, ref):
    """FileDescriptorStoreMax= below the idle connections: systemd keeps
    what fits and closes the rest, so those clients see the close, as
    without a handover (operations.md). objcached is not told: it counts
    every descriptor it sent."""
    unit.sd.systemctl("stop", "objcached.service")
    with open(os.path.join(unit.sd.units, "objcached.service.d", "small-store.conf"), "w",
              encoding="utf-8") as f:
        f.write("[Service]\nFileDescriptorStoreMax=1\n")
    unit.sd.systemctl("daemon-reload")
    start(unit)
    want = ref.json("User", 1)
    conns = [harness.McRaw(port=unit.port, timeout=STEP_TIMEOUT) for _ in range(3)]
    try:
        for c in conns:
            assert c.get("User:1") == want
        unit.sd.systemctl("restart", "objcached.service")
        assert unit.stats()["handover_adopted"] == 1
        alive = 0
        for c in conns:
            c.sock.settimeout(10)
            try:
                c.sock.sendall(b"get User:1\r\n")
                data = c.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""   # closed by systemd: its FIN, then our request's RST
            if data:
                assert data.startswith(b"VALUE User:1 "), data
                alive += 1
        assert alive == 1
    finally:
        for c in conns:
            c.close()
    assert "event=handover handed=3 closed=0 left=0" in unit.log()

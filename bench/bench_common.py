"""What every part of the benchmark shares: output, errors, percentiles,
/proc readings, a minimal memcached text client and the Prometheus page.

bench/run.py drives the run; bench_near.py (the near-cache phases) and
bench_writes.py (the write-overhead world and phase) import this module and
nothing of run.py, so that each can be read on its own."""

import math
import os
import socket
import statistics
import time
import urllib.request


def say(msg=""):
    print(msg, flush=True)


def step(msg):
    print(f"==> {msg}", flush=True)


class BenchError(RuntimeError):
    pass


def pct(sorted_vals, p):
    """The p-th percentile (nearest rank) of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    # rank = ceil(p/100 * n); not round(x + 0.5), which Python rounds half to
    # even: one rank too high whenever p/100 * n is an odd whole number (the
    # p99 of 300 samples was the 298th). The tolerance absorbs 0.99 * n
    # landing a hair above a whole number in binary floating point.
    rank = math.ceil(p / 100 * len(sorted_vals) - 1e-9)
    return sorted_vals[min(len(sorted_vals), max(1, rank)) - 1]


def med(rows, field):
    vals = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(vals) if vals else float("nan")


def spread(vals):
    """(median, min, max) of a non-empty list; NaNs when empty."""
    if not vals:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(vals), min(vals), max(vals)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def items_sql(rows, body_bytes=80):
    """The run's table: `items` with ids 1..rows, row JSON about 225 bytes
    (a body of body_bytes: the JSON is about 145 bytes more)."""
    return f"""
        CREATE TABLE items (id bigint NOT NULL, name text NOT NULL, email text NOT NULL,
                            score integer NOT NULL, created_at timestamptz NOT NULL,
                            tags text[] NOT NULL, body text NOT NULL);
        INSERT INTO items
        SELECT g, 'item ' || g, 'user' || g || '@example.com', ((g::bigint * 7919) % 1000)::int,
               timestamptz '2026-01-01 00:00:00+00' + g * interval '17 seconds',
               ARRAY['t' || g % 7, 't' || g % 11],
               substr(repeat(md5(g::text), {int(body_bytes) // 32 + 1}), 1, {int(body_bytes)})
        FROM generate_series(1, {int(rows)}) g;
        ALTER TABLE items ADD PRIMARY KEY (id);
        """


def cpu_seconds(pid):
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid):
    """Context switches of every thread of pid so far (voluntary: it slept,
    waiting for input; involuntary: preempted). On a virtual machine each
    costs far more than on bare metal (waking a halted virtual CPU exits to
    the hypervisor), so the count per request says what a hop costs there."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:",
                                        "nonvoluntary_ctxt_switches:")):
                        n += int(line.split()[1])
        except OSError:
            continue    # the thread exited meanwhile
    return n


def cluster_cpu_seconds(datadir, stat=_stat_fields, pids=lambda: os.listdir("/proc")):
    """CPU of a PostgreSQL cluster so far: the postmaster, its live children
    (backends, WAL senders, background workers) and, through the
    postmaster's cutime/cstime, every child it has reaped, so a backend that
    exits between two readings still counts.

    A reading is taken again while a child was reaped during it (the
    postmaster's cutime/cstime moved between the start and the end of the
    scan) or a child is a zombie: a backend reaped after the postmaster was
    read and before the scan reached it was counted nowhere, and a load
    generator's backends exit exactly when the reading after its run is
    taken (their whole run's CPU was lost from the hand-written and bare-SQL
    targets' figures; objcached's loaders live on and were counted).
    stat(pid) and pids() are /proc's, replaceable by a unit test."""
    with open(os.path.join(datadir, "postmaster.pid")) as f:
        pm = int(f.readline())
    for _ in range(1000):
        first = stat(pm)
        ticks, settled = 0, True
        for name in pids():
            if not name.isdigit():
                continue
            try:
                fields = stat(name)
            except OSError:
                continue    # gone meanwhile: the postmaster's cutime moved
            if int(fields[1]) == pm:
                settled = settled and fields[0] != "Z"
                ticks += int(fields[11]) + int(fields[12])
        last = stat(pm)
        if settled and last[13:15] == first[13:15]:
            return (sum(int(x) for x in last[11:15]) + ticks) / os.sysconf("SC_CLK_TCK")
        time.sleep(0.001)
    raise BenchError("the PostgreSQL cluster's CPU could not be read: its children kept "
                     "exiting during every reading")


# ------------------------------------------------------ memcached, text

class McText:
    """One memcached text-protocol connection (TCP "host:port" or a unix
    socket path): enough for the probes, which time single gets."""

    def __init__(self, address, timeout=10.0):
        if address.startswith("/"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        else:
            host, port = address.rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def get(self, key):
        """The value of key (bytes), or None when the reply has none."""
        self.sock.sendall(b"get " + key.encode() + b"\r\n")
        while True:
            if self.buf.startswith(b"END\r\n"):
                self.buf = self.buf[5:]
                return None
            if self.buf.startswith(b"VALUE "):
                head_end = self.buf.find(b"\r\n")
                if head_end > 0:
                    size = int(self.buf[:head_end].split()[3])
                    total = head_end + 2 + size + 2 + 5
                    if len(self.buf) >= total:
                        value = self.buf[head_end + 2:head_end + 2 + size]
                        if self.buf[total - 5:total] != b"END\r\n":
                            raise BenchError(f"get {key}: more than one value")
                        self.buf = self.buf[total:]
                        return value
            elif self.buf.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")) \
                    and b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                raise BenchError(f"get {key}: {line.decode(errors='replace')}")
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise BenchError(f"get {key}: the server closed the connection")
            self.buf += chunk


# ------------------------------------------------------------ /metrics

def metrics_address(oc):
    """The metrics_listen address in a harness.Objcached's configuration."""
    section = None
    for raw in oc.config_text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
        elif section == "objcached" and line.split("=", 1)[0].strip() == "metrics_listen":
            return line.split("=", 1)[1].strip()
    raise BenchError(f"{oc} has no metrics_listen")


def metrics_text(address):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def histogram(text, name):
    """{upper bound (float, inf for +Inf): cumulative count} of a Prometheus
    histogram (no labels) on the page."""
    out = {}
    prefix = f"{name}_bucket{{le=\""
    for line in text.splitlines():
        if line.startswith(prefix):
            le, count = line[len(prefix):].split("\"}", 1)
            out[float("inf") if le == "+Inf" else float(le)] = float(count)
    return out


def histogram_delta(before, after):
    return {le: after[le] - before.get(le, 0.0) for le in after}


def histogram_quantile(buckets, q):
    """The upper bound of the bucket holding quantile q (0..1) of a
    cumulative histogram, and the count; (nan, 0) when it is empty. An upper
    bound, not an interpolation: the buckets are coarse (25 ms, 50 ms, ...)."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return float("nan"), 0
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le, int(total)
    return float("inf"), int(total)


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)

#!/usr/bin/env python3
"""memcached's own CPU per missed key, by the commands a miss costs it: the
hand-written pattern (one `get` of 100 keys, then 100 `set ... noreply`)
against objcached's (a leasing `mg <key> v c f k N<ttl>` per key, then a
`cas` over the lease), and two variants of objcached's: the `mg` without its
`k` return flag, and the fill as a quiet meta set (`ms ... C<cas> q` and a
closing `mn`). One memcached (-t 1) per run, one pipelined connection, every
key new; memcached's utime + stime from /proc, so this client's own cost
does not count. Shapes interleaved, --trials of each.

  /usr/bin/python3 bench/mc_miss_cost.py --batches 3000 --trials 3
"""
import argparse
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402

VALUE = (b'{"id":1,"name":"user 1","email":"user1@example.com",'
         b'"created_at":"2024-01-01T01:01:01+00:00","score":0.25,"note":null}')
SHAPES = ("hand", "oc", "oc-no-k", "oc-ms-q", "oc-no-k-ms-q")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_until(sock, ends, count):
    """Read until `count` replies ending in one of `ends` came."""
    buf = b""
    while sum(buf.count(e) for e in ends) < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("memcached closed the connection")
        buf += chunk
    return buf


def lease_cases(buf, k):
    cases = [int(w[1:]) for line in buf.split(b"\r\n") for w in line.split()[1:]
             if w[:1] == b"c" and w[1:].isdigit()]
    if len(cases) != k:
        raise SystemExit(f"{len(cases)} leases for {k} keys: {buf[:200]!r}")
    return cases


def one_batch(sock, shape, keys):
    k = len(keys)
    if shape == "hand":
        sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        read_until(sock, [b"END\r\n"], 1)
        sock.sendall(b"".join(b"set %s 0 300 %d noreply\r\n%s\r\n" % (key, len(VALUE), VALUE)
                              for key in keys) + b"mn\r\n")
        read_until(sock, [b"MN\r\n"], 1)
        return
    kflag = b"" if "no-k" in shape else b" k"
    sock.sendall(b"".join(b"mg %s v c f%s N6\r\n" % (key, kflag) for key in keys))
    cases = lease_cases(read_until(sock, [b"\r\n"], 2 * k), k)
    if shape.endswith("ms-q"):
        sock.sendall(b"".join(b"ms %s %d C%d T300 F0 q\r\n%s\r\n" % (key, len(VALUE), c, VALUE)
                              for key, c in zip(keys, cases)) + b"mn\r\n")
        read_until(sock, [b"MN\r\n"], 1)
    else:
        sock.sendall(b"".join(b"cas %s 0 300 %d %d\r\n%s\r\n" % (key, len(VALUE), c, VALUE)
                              for key, c in zip(keys, cases)))
        read_until(sock, [b"STORED\r\n", b"EXISTS\r\n", b"NOT_FOUND\r\n"], k)


def run(shape, batches, k):
    port = harness.free_port()
    p = subprocess.Popen(["memcached", "-U", "0", "-l", "127.0.0.1", "-p", str(port),
                          "-m", "1024", "-t", "1", "-u", "root"])
    try:
        sock = None
        for _ in range(200):
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.02)
        if sock is None:
            raise SystemExit("memcached did not start")
        seq = 0
        before = cpu_s(p.pid)
        for _ in range(batches):
            one_batch(sock, shape, [b"oc:User:%d" % (seq + i) for i in range(k)])
            seq += k
        spent = cpu_s(p.pid) - before
        sock.close()
        return spent / (batches * k) * 1e6
    finally:
        p.kill()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=3000, help="batches of --keys per run")
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args()
    got = {s: [] for s in SHAPES}
    for _ in range(a.trials):
        for shape in SHAPES:
            got[shape].append(run(shape, a.batches, a.keys))
    hand = sorted(got["hand"])[len(got["hand"]) // 2]
    print(f"memcached CPU per missed key (us), {a.batches} x {a.keys} keys, {a.trials} trials")
    for shape in SHAPES:
        v = sorted(got[shape])
        med = v[len(v) // 2]
        print(f"{shape:14s} median {med:5.2f}  ({', '.join('%.2f' % x for x in got[shape])})"
              f"  {med / hand if hand else 0:4.2f}x hand")


if __name__ == "__main__":
    main()

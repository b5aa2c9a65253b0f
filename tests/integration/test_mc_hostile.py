"""objcached's memcached client against a scripted fake memcached whose
replies are decided per command by a handler (fakemc.FakeMc): replies lost,
sent twice or for another key, trickled, oversized or hostile. Each test
names what it proves (written in a review, 2026-12-05; test_mc_protocol.py
has the cases against a real memcached)."""

import os
import signal
import threading
import time

import pytest

import harness
from fakemc import FakeMc
from test_mc_protocol import moved, user_values

OBJECT_FLAGS = (0x6F63 << 16) | (1 << 8) | 1   # oc_entry_flags(OC_ENTRY_OBJECT)


def va(value, cas=7, flags=OBJECT_FLAGS, key=None):
    """A VA line and block; with key, its k<key> return flag (as memcached
    sends it when the mg asked for k)."""
    k = b" k" + key if key else b""
    return b"VA %d c%d f%d%s\r\n%s\r\n" % (len(value), cas, flags, k, value)


def on_fake(objcached_factory, fake, **mc):
    conf = {"servers": fake.address, "retry_timeout": "300ms", "io_timeout": "500ms"}
    conf.update(mc)
    return objcached_factory({"memcached": conf})


def test_mg_reply_to_a_command_never_sent_is_not_served_for_another_key(
        objcached_factory, ref):
    """The fake answers the first `mg` twice (a reply to a command never
    sent). Meta replies do not name their key, so the duplicate is taken as
    the answer of the next pipelined mg: User:2 would be served User:1's
    JSON. Expected: every get right (the stream is broken, PostgreSQL
    answers), never another key's value."""
    v1 = ref.json("User", 1)

    def handler(fake, n, words, block):
        if words[0] == b"mg" and words[1] == b"oc:User:1":
            k = words[1] if b"k" in words else None
            return va(v1, key=k) + va(v1, key=k)
        return None

    fake = FakeMc(handler)
    try:
        oc = on_fake(objcached_factory, fake)
        with oc.client() as c:
            got = c.get_multi(["User:1", "User:2"])
        assert got == (user_values(ref, [1, 2]), b"END"), got
    finally:
        fake.close()


def test_mg_reply_dropped_does_not_shift_values_onto_other_keys(objcached_factory, ref):
    """The fake (or a middlebox) drops the first of two pipelined `mg`: the
    second key's VA arrives first and, without a key or opaque in the meta
    reply, is taken for the first key's. Expected: User:1 is never served
    User:2's JSON."""
    v2 = ref.json("User", 2)

    def handler(fake, n, words, block):
        if words[0] == b"mg" and words[1] == b"oc:User:1":
            return b""                      # dropped
        if words[0] == b"mg" and words[1] == b"oc:User:2":
            return va(v2, key=words[1] if b"k" in words else None)
        return None

    fake = FakeMc(handler)
    try:
        oc = on_fake(objcached_factory, fake)
        with oc.client() as c:
            got = c.get_multi(["User:1", "User:2"])
        assert got == (user_values(ref, [1, 2]), b"END"), got
    finally:
        fake.close()


def test_foreign_item_under_the_key_is_a_miss_and_not_replaced(objcached_factory, mc_pool,
                                                             ref):
    """Another client's item (flags not 0x6F63xxxx) under the key: a miss
    (oc_entry.h), the row comes from PostgreSQL, the item is left alone."""
    oc = objcached_factory()
    for m in mc_pool:
        with m.client() as mc:
            mc.send(b"set oc:User:3 7 0 5\r\nhello\r\n")
            assert mc.readline() == b"STORED"
    with oc.client() as c:
        assert c.get_multi(["User:3"]) == (user_values(ref, [3]), b"END")
    oc.wait_idle()
    held = []
    for m in mc_pool:
        with m.client() as mc:
            mc.send(b"get oc:User:3\r\n")
            held.append(mc.readline())
    assert held == [b"VALUE oc:User:3 7 5"] * 2, held


def _first_mg(reply):
    state = {"done": False}

    def handler(fake, n, words, block):
        if words[0] == b"mg" and not state["done"]:
            state["done"] = True
            return reply(fake) if callable(reply) else reply
        return None
    return handler


OBJ = OBJECT_FLAGS
MG_SCENARIOS = {
    "va-len-short": b"VA 3 c1 f%d\r\n{}xyz\r\n" % OBJ,
    "va-len-long": b"VA 9 c1 f%d\r\n{}\r\nEN\r\n" % OBJ,
    "va-no-flags": b"VA 2\r\n{}\r\n",
    "va-lease-cas0": b"VA 0 f0 W\r\n\r\n",
    "va-refresh-foreign": b"VA 5 c9 f7 W\r\nhello\r\n",
    "server-error": b"SERVER_ERROR out of memory\r\n",
    "client-error": b"CLIENT_ERROR bad command line format\r\n",
    "plain-error": b"ERROR\r\n",
    "close-mid-header": b"VA 2 c1",
    "close-mid-data": b"VA 200 c1 f%d\r\n{\"id\"" % OBJ,
    "stored-instead": b"STORED\r\n",
    "hd-instead": b"HD\r\n",
    "en-with-flags": b"EN k1\r\n",
    "nul-in-line": b"VA 2 c1\x00 f0\r\n{}\r\n",
    "lf-only": b"EN\n",
}


@pytest.mark.parametrize("scenario", list(MG_SCENARIOS))
def test_hostile_mg_replies(objcached_factory, ref, scenario):
    reply = MG_SCENARIOS[scenario]
    closes = scenario.startswith("close")

    def handler(fake, n, words, block):
        if words[0] == b"mg" and not fake.__dict__.get("sent"):
            fake.sent = True
            if closes:
                fake.conns[-1].sendall(reply)
                return b"CLOSE"
            return reply
        return None

    fake = FakeMc(handler)
    try:
        oc = on_fake(objcached_factory, fake)
        ids = [1, 2, 3]
        with oc.client() as c:
            s0 = c.stats()
            for _ in range(2):
                got = c.get_multi([f"User:{i}" for i in ids])
                assert got == (user_values(ref, ids), b"END"), got
                time.sleep(0.4)
            s1 = c.stats()
            assert moved(s0, s1, "server_errors", "client_errors") == \
                {"server_errors": 0, "client_errors": 0}
            assert c.command(b"version").terminal.startswith(b"VERSION ")
    finally:
        fake.close()


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_one_large_memcached_reply_does_not_stay_resident(objcached_factory, ref):
    """One 64 MiB VA (a foreign item, or a hostile server): objcached reads
    it whole into the server's input buffer (OC_MCP_VALUE_MAX), drops it
    (max_reply 1m). Afterwards, and after the connection is reset, that
    memory should be given back; the buffer is never shrunk, so it stays."""
    big = b"x" * (64 << 20)

    def handler(fake, n, words, block):
        if words[0] == b"mg" and not fake.__dict__.get("sent"):
            fake.sent = True
            return b"VA %d c1 f7\r\n%s\r\n" % (len(big), big)
        if words[0] == b"mg" and fake.__dict__.get("sent") and \
                not fake.__dict__.get("closed"):
            fake.closed = True
            return b"GARBAGE\r\n"             # resets the connection
        return None

    fake = FakeMc(handler)
    try:
        oc = objcached_factory({"memcached": {"servers": fake.address, "io_timeout": "5s",
                                              "retry_timeout": "300ms"},
                                "objcached": {"max_reply": "1m"}})
        with oc.client() as c:
            base = _rss_kb(oc.pid)
            assert c.get_multi(["User:1"]) == (user_values(ref, [1]), b"END")
            before = _rss_kb(oc.pid)
            assert c.get_multi(["User:2"]) == (user_values(ref, [2]), b"END")  # reset
            time.sleep(0.5)
            assert c.get_multi(["User:3"]) == (user_values(ref, [3]), b"END")
            after = _rss_kb(oc.pid)
        print("rss kB at start:", base, "after the big reply:", before,
              "after reset and reconnect:", after)
        assert fake.connections >= 2
        assert after - base < 16 * 1024, (base, before, after)
    finally:
        fake.close()


@pytest.mark.parametrize("pad", [0, 900 * 1024], ids=["small", "900k"])
def test_an_answer_that_came_while_the_sidecar_stood_still_is_no_timeout(
        objcached_factory, ref, pad):
    """A sidecar that stands still (stopped, starved of CPU on a busy app
    host) wakes with its io timer due and memcached's answer waiting in the
    socket. The timer ran before the socket was read (after a stop
    epoll_wait fails with EINTR; under load more sockets are ready than one
    epoll_wait returns, here 199 clients ready before the answer): the
    answer was taken for a timeout, the healthy server counted a failure
    (failure_limit of them: down, its keys to PostgreSQL) and the key was
    loaded again. Here the fake answers User:1
    while the sidecar is stopped past io_timeout, after 199 clients
    sent their gets; the large one is more than one read of the socket
    takes (a review). Expected: the answer read, served (the fake's own
    value, not PostgreSQL's row), no failure."""
    value = b'{"id":1,"from":"memcached","pad":"' + b"p" * pad + b'"}'
    asked, go = threading.Event(), threading.Event()

    def handler(fake, n, words, block):
        # User:1's cache key (with the model's generation when the database
        # has the hook: another test file of the same run may install it)
        keys = [w for w in words[1:] if w.startswith(b"oc:User") and w.endswith(b":1")]
        if words[0] in (b"get", b"gets", b"mg") and keys and not asked.is_set():
            asked.set()
            go.wait(30)        # answered once the sidecar stands still
            if words[0] == b"mg":
                return va(value, key=keys[0])
            return b"VALUE %s %d %d 7\r\n%s\r\nEND\r\n" % (
                keys[0], OBJECT_FLAGS, len(value), value)
        return None

    fake = FakeMc(handler)
    clients = []
    oc = None
    try:
        # io_timeout 1 s: after the stop, 199 misses are loaded and written
        # back through this Python fake, under ASan on 2 cores (a review)
        oc = on_fake(objcached_factory, fake, io_timeout="1s")
        clients = [oc.client() for _ in range(200)]
        for c in clients:
            c.stats()          # accepted and served: each is ready again at once
        first = clients[0]
        first.sock.sendall(b"get User:1\r\n")
        assert asked.wait(10), "the read never reached the fake"
        os.kill(oc.pid, signal.SIGSTOP)
        try:
            for i, c in enumerate(clients[1:]):  # ready before the answer
                c.sock.sendall(b"get User:%d\r\n" % (i + 2))
            time.sleep(0.05)
            go.set()
            time.sleep(2.2)    # past io_timeout, the answer in the socket
        finally:
            os.kill(oc.pid, signal.SIGCONT)
        got = first.read_response()
        assert [v.data for v in got.values] == [value], (got, oc.log())
        for c in clients[1:]:
            assert c.read_response().values, oc.log()   # from PostgreSQL
        s = clients[0].stats()
        log = oc.log()
        assert "event=memcached_error" not in log, log
        assert s["mc_errors"] == 0 and s["mc_ejections"] == 0, s
    finally:
        go.set()
        for c in clients:
            c.close()
        fake.close()


def test_a_trickling_server_does_not_hold_a_get_past_io_timeout(objcached_factory, ref):
    """operations.md: requests to a server that does not answer wait
    io_timeout each, failure_limit x io_timeout in all. A server that
    answers one byte every 0.3 s (under io_timeout 500ms) holds a get for
    as long as it likes: the timeout restarts at every byte."""
    reply = b"EN\r\n"

    def handler(fake, n, words, block):
        if words[0] == b"mg" and not fake.__dict__.get("sent"):
            fake.sent = True
            c = fake.conns[-1]
            for _ in range(20):                # 20 x 0.3 s of a line
                c.sendall(b" " if _ else b"S")
                time.sleep(0.3)
            return b"\r\n"                     # "S   ...": not a reply: broken
        return None

    fake = FakeMc(handler)
    try:
        oc = on_fake(objcached_factory, fake)
        with oc.client() as c:
            t0 = time.monotonic()
            assert c.get_multi(["User:1"]) == (user_values(ref, [1]), b"END")
            took = time.monotonic() - t0
        print("get took %.1f s with io_timeout 500ms, failure_limit 3" % took)
        assert took < 3 * 0.5 + 1.0, took
    finally:
        fake.close()


def test_a_large_foreign_item_is_a_miss_not_a_failed_get(objcached_factory, ref):
    """oc_entry.h: "an item with other flags is treated as a miss". A
    foreign item larger than max_reply is not: the get fails with
    SERVER_ERROR reply too large, where a miss would have loaded the row."""
    big = b"y" * (2 << 20)

    def handler(fake, n, words, block):
        if words[0] == b"mg" and words[1] == b"oc:User:4":
            k = b" k" + words[1] if b"k" in words else b""
            return b"VA %d c3 f7%s\r\n%s\r\n" % (len(big), k, big)
        return None

    fake = FakeMc(handler)
    try:
        oc = objcached_factory({"memcached": {"servers": fake.address},
                                "objcached": {"max_reply": "1m"}})
        with oc.client() as c:
            s0 = c.stats()
            c.send(b"get User:4\r\n")
            r = c.read_response()
            s1 = c.stats()
        print("moved:", moved(s0, s1, "mc_errors", "server_errors", "get_misses"))
        got = [(v.key, v.flags, v.data) for v in r.values]
        assert (got, r.terminal) == (user_values(ref, [4]), b"END"), r
    finally:
        fake.close()


def test_memcached_text_cannot_forge_log_fields(objcached_factory, ref):
    """A server's reply text goes into log lines (`reason="..."`) as is: a
    `"` in it ends the quoted value and the rest reads as fields of the
    line (oc_log_clean exists for this and is not used here)."""
    forged = b'SERVER_ERROR x" event=memcached_up server=6.6.6.6:1 pool=pool reason="forged'

    def handler(fake, n, words, block):
        if words[0] == b"mg":
            return b"GARBAGE\r\n"             # broken stream: down (failure_limit 1)
        if words[0] == b"version":
            return forged + b"\r\n"
        return None

    fake = FakeMc(handler)
    try:
        oc = objcached_factory({"memcached": {"servers": fake.address, "failure_limit": "1",
                                              "retry_timeout": "200ms"},
                                "objcached": {"log_level": "debug"}})
        with oc.client() as c:
            assert c.get_multi(["User:1"]) == (user_values(ref, [1]), b"END")
        harness.wait_until(lambda: "version answered" in oc.log(), timeout=5,
                           what="a probe answered")
        bad = [l for l in oc.log().splitlines()
               if "version answered" in l and '" event=memcached_up' in l]
        assert not bad, bad[0]
    finally:
        fake.close()


def test_memcached_1_6_9_ms_error_does_not_shift_pipelined_meta_gets(objcached_factory, ref):
    """operations.md: memcached 1.6.9 "answers its ms with CLIENT_ERROR and
    takes the data line for a command: objcached resets the connection".
    The data line's own `ERROR` is a reply like any other (never out of
    step), so when meta gets are pipelined behind the ms, it is taken as the
    first one's answer and every later mg gets the one before it's value:
    User:3 served User:2's JSON."""
    v = {i: ref.json("User", i) for i in (2, 3)}

    def handler(fake, n, words, block):
        if words[0] == b"ms":
            time.sleep(0.4)                   # the gets below are sent meanwhile
            return b"CLIENT_ERROR bad command line format\r\nERROR\r\n"
        if words[0] == b"mg":
            i = int(words[1].split(b":")[-1])
            if i in v:
                return va(v[i], key=words[1] if b"k" in words else None)
        return None

    fake = FakeMc(handler)
    try:
        oc = on_fake(objcached_factory, fake, io_timeout="2s")
        body = ref.json("User", 1)
        with oc.client() as pusher, oc.client() as c:
            # gets that miss: then gets are meta gets (protocol.md, "while over
            # one in twenty of the keys recent gets read missed")
            for _ in range(30):
                assert c.get_multi(["User:9"]) == (user_values(ref, [9]), b"END")
            oc.wait_idle()
            pusher.send(b"set User:1 0 0 %d\r\n%s\r\n" % (len(body), body))
            harness.wait_until(lambda: any(w[0] == b"ms" for _, w in fake.commands),
                               timeout=5, what="the push's ms")
            got = c.get_multi(["User:2", "User:3"])
            assert pusher.read_response().terminal.startswith(b"SERVER_ERROR")
        assert got == (user_values(ref, [2, 3]), b"END"), got
    finally:
        fake.close()

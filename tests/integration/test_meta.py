"""The meta protocol as Dalli 3.2+/4 (protocol: :meta) speaks it: a
get_multi is one quiet `mg` per key then `mn`; set is `ms`, delete `md`;
keys that memcached cannot carry go base64 with `b`."""

import base64


# push_check off: with it, a tombstone of a row PostgreSQL still has (these tests
# tombstone rows they did not delete) is replaced by the row once checked
# (test_write_path.py::test_late_tombstone_after_the_row_came_back).
NO_CHECK = {"model User": {"push_check": "off"}}


def read_meta_until_mn(c):
    """Replies up to MN: a list of (head tokens, data or None)."""
    out = []
    while True:
        line = c.readline()
        parts = line.split()
        if parts[0] == b"MN":
            return out
        data = None
        if parts[0] == b"VA":
            data = c.read_exact(int(parts[1]) + 2)[:-2]
        out.append((parts, data))


def flags_of(parts):
    return {p[:1]: p[1:] for p in parts[2 if parts[0] == b"VA" else 1:]}


def test_dalli_style_get_multi(objcached, ref):
    keys = ["User:1", "User:2", "User:424242", "Page:café", "Counter:3"]
    with objcached.client() as c:
        for k in keys:
            raw = k.encode()
            if raw.isascii():
                c.sendline(b"mg " + raw + b" v f k q s")
            else:  # Dalli sends such keys base64 with b
                c.sendline(b"mg " + base64.b64encode(raw) + b" b v f k q s")
        c.sendline(b"mn")
        replies = read_meta_until_mn(c)
    got = {}
    for parts, data in replies:
        assert parts[0] == b"VA"
        f = flags_of(parts)
        key = f[b"k"]
        if b"b" in f:
            key = base64.b64decode(key)
        assert f[b"f"] == b"0" and int(f[b"s"]) == len(data)
        got[key.decode()] = data
    # the quiet miss (User:424242 has no row) is not answered at all
    assert got == {"User:1": ref.json("User", 1), "User:2": ref.json("User", 2),
                   "Page:café": ref.json("Page", "café"), "Counter:3": ref.json("Counter", 3)}


def test_mg_flags_and_misses(objcached, ref):
    with objcached.client() as c:
        c.sendline(b"mg User:5 v c t O77")
        head = c.readline().split()
        assert head[0] == b"VA" and flags_of(head)[b"O"] == b"77" and flags_of(head)[b"t"] == b"-1"
        assert c.read_exact(int(head[1]) + 2)[:-2] == ref.json("User", 5)
        c.sendline(b"mg User:424242 v")           # not quiet: EN
        assert c.readline() == b"EN"
        c.sendline(b"mg User:5 k")                # found, no value: HD
        assert c.readline().split() == [b"HD", b"kUser:5"]
        c.sendline(b"mg User:5 v zz")
        assert c.readline() == b"CLIENT_ERROR invalid flag"
        c.sendline(b"mg !!!! b v")
        assert c.readline() == b"CLIENT_ERROR bad key encoding"
        c.sendline(b"mn")
        assert c.readline() == b"MN"


def test_ms_md_as_pushes_and_tombstones(objcached_factory, ref):
    objcached = objcached_factory(NO_CHECK)
    with objcached.client() as c:
        # the row itself, spaced differently: the push check agrees with it,
        # so it is served byte for byte as pushed
        body = b" " + ref.json("User", 7)
        c.send(b"ms User:7 %d c F0 T0 MS\r\n%s\r\n" % (len(body), body))
        assert c.readline() == b"HD"
        c.sendline(b"mg User:7 v")
        head = c.readline().split()
        assert head[0] == b"VA" and c.read_exact(int(head[1]) + 2) == body + b"\r\n"
        c.send(b"ms User:7 2 q\r\n{}\r\n")        # quiet: no HD
        c.sendline(b"md User:7 q k")               # quiet tombstone
        c.sendline(b"mg User:7 v")
        assert c.readline() == b"EN"               # absent: the tombstone won
        c.send(b"ms User:7 2\r\n{}\r\n")           # a push onto a tombstone
        assert c.readline() == b"NS"
        c.send(b"ms User:8 2 MA\r\n{}\r\n")        # append: not supported, data skipped
        assert c.readline() == b"CLIENT_ERROR mode not supported"
        c.send(b"ms User:8 3\r\n[1]\r\n")
        assert c.readline() == b"CLIENT_ERROR value is not a JSON object"
        c.sendline(b"md User:8 O5 k")
        assert c.readline().split() == [b"HD", b"kUser:8", b"O5"]
        c.sendline(b"mn")
        assert c.readline() == b"MN"


def test_mg_miss_echoes_opaque_and_key_as_memcached(objcached, mc_pool):
    """memcached 1.6 answers a miss with `EN` followed by the O and k return
    flags; a client that pipelines non-quiet mgs and matches replies by
    opaque needs them."""
    with mc_pool[0].client() as m:
        m.sendline(b"mg objcached-test:nope v k O13 s")
        mc_miss = m.readline()
        m.sendline(b"mg objcached-test:nope O9")
        mc_miss_o = m.readline()
    assert mc_miss == b"EN kobjcached-test:nope O13"     # memcached's own answer
    assert mc_miss_o == b"EN O9"
    with objcached.client() as c:
        c.sendline(b"mg User:424242 v k O13 s")
        assert c.readline() == b"EN kUser:424242 O13"
        c.sendline(b"mg User:424242 O9")
        assert c.readline() == b"EN O9"
        enc = base64.b64encode(b"User:424242")
        c.sendline(b"mg " + enc + b" b k O7")
        assert c.readline() == b"EN k" + enc + b" b O7"
        c.sendline(b"mg User:424242 v k O1 q")       # quiet: nothing
        c.sendline(b"mn")
        assert c.readline() == b"MN"


def test_k_echo_of_a_long_base64_key_is_not_cut(objcached):
    """A base64 key over 250 characters whose decoded key objcached accepts
    (<= 226 bytes): the k flag must echo the key as sent, not its first
    250 characters (memcached refuses such a token; refusing it is fine too)."""
    raw = b"Page:" + b"x" * 190                      # 195 bytes: a valid key
    enc = base64.b64encode(raw)                      # 260 characters
    assert len(enc) > 250
    with objcached.client() as c:
        c.sendline(b"md " + enc + b" b k O1")
        line = c.readline()
        assert line == b"HD k" + enc + b" b O1" or line.startswith(b"CLIENT_ERROR"), line
        c.sendline(b"mn")
        assert c.readline() == b"MN"

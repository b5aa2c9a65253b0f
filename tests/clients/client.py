"""One job (tests/clients/README.md) with pymemcache or pylibmc.

    python3 client.py pymemcache|pylibmc|pylibmc-binary < job.json
"""
import base64
import json
import sys


def b64(v):
    return None if v is None else base64.b64encode(v).decode()


def with_pymemcache(job):
    from pymemcache.client.base import Client
    addr = job["addr"]
    if not addr.startswith("/"):
        host, port = addr.rsplit(":", 1)
        addr = (host, int(port))
    c = Client(addr, connect_timeout=2, timeout=6)
    return (c, lambda keys: c.get_many(keys), c.get,
            lambda k, v: c.set(k, v, noreply=False),
            lambda k: c.delete(k, noreply=False))


def with_pylibmc(job, binary):
    import pylibmc
    c = pylibmc.Client([job["addr"]], binary=binary)
    return (c, c.get_multi, c.get, c.set, c.delete)


def main():
    kind = sys.argv[1]
    job = json.load(sys.stdin)
    if kind == "pymemcache":
        client, get_multi, get, set_, delete = with_pymemcache(job)
    elif kind in ("pylibmc", "pylibmc-binary"):
        client, get_multi, get, set_, delete = with_pylibmc(job, kind == "pylibmc-binary")
    else:
        sys.exit(f"unknown client {kind}")
    if "get_one" in job:
        print(json.dumps({"one": b64(get(job["get_one"]))}))
        return
    found = get_multi(job["get"])
    out = {"get": {k: b64(found.get(k)) for k in job["get"]}}
    if "push_key" not in job:
        print(json.dumps(out))
        return
    out["push"] = bool(set_(job["push_key"], base64.b64decode(job["push_value"])))
    out["after_push"] = b64(get(job["push_key"]))
    out["tombstone"] = bool(delete(job["tombstone"]))
    out["after_tombstone"] = b64(get(job["tombstone"]))
    print(json.dumps(out))


main()

"""Django's cache framework (django.core.cache, python3-django 3.2) against
objcached: its two memcached backends, PyMemcacheCache and PyLibMCCache,
each with Django's own key function and with one that sends the key as
given. Reads a job {"addr": "host:port", "key": K, "keys": [K...],
"push": {cache: [K, <base64>]}} on stdin and prints, per cache, what
each call returned (values in base64, errors by their class name)."""

import base64
import json
import sys

import django
from django.conf import settings


def as_is(key, key_prefix, version):
    """KEY_FUNCTION: the key itself (Django's makes ':1:User:1')."""
    return key


def shown(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return f"not bytes: {type(value).__name__}"


def attempt(fn):
    try:
        return fn()
    except Exception as e:  # what the app would see
        return f"error: {type(e).__name__}"


def main():
    job = json.load(sys.stdin)
    backends = {"pymemcache": "django.core.cache.backends.memcached.PyMemcacheCache",
                "pylibmc": "django.core.cache.backends.memcached.PyLibMCCache"}
    caches = {}
    for name, backend in backends.items():
        caches[name] = {"BACKEND": backend, "LOCATION": job["addr"]}
        caches[name + "-as-is"] = {"BACKEND": backend, "LOCATION": job["addr"],
                                   "KEY_FUNCTION": as_is}
    settings.configure(CACHES=caches)
    django.setup()
    from django.core.cache import caches as made

    out = {}
    for name in caches:
        c = made[name]
        r = {"get": attempt(lambda: shown(c.get(job["key"]))),
             "get_many": attempt(lambda: {k: shown(v)
                                          for k, v in c.get_many(job["keys"]).items()})}
        if name in job["push"]:
            key, push = job["push"][name][0], base64.b64decode(job["push"][name][1])
            r["set"] = attempt(lambda: c.set(key, push) or "done")
            r["after_set"] = attempt(lambda: shown(c.get(key)))
            r["delete"] = attempt(lambda: c.delete(key))
            r["after_delete"] = attempt(lambda: shown(c.get(key)))
        out[name] = r
    print(json.dumps(out))


if __name__ == "__main__":
    main()

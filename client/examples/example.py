"""Fetch users from objcached with pymemcache (Debian: python3-pymemcache).

    python3 example.py [ADDRESS]     ADDRESS: 127.0.0.1:11311 (default),
                                     unix:/path/to.sock or [::1]:11311
"""
import json
import sys

from pymemcache.client.base import Client

addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:11311"
# pymemcache takes the same address forms as objcache; values come back as bytes.
client = Client(addr, connect_timeout=1, timeout=6)
keys = ["User:1", "User:2", "User:999999"]
found = client.get_many(keys)          # one "get User:1 User:2 User:999999"
for key in keys:
    if key in found:
        user = json.loads(found[key])  # the row as PostgreSQL's row_to_json wrote it
        print(f"{key} = {user['name']} <{user['email']}>")
    else:
        print(f"{key}: not found")
client.close()

"""SIGHUP reload: models, the memcached server list and limits change
without dropping client connections; a bad file is refused and the old
configuration keeps serving."""

import signal

import consistency as oc_c
import harness


def reload(oc, text):
    with open(oc.config_path, "w") as f:
        f.write(text)
    before = oc.stats()
    oc.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: oc.stats()["reloads"] + oc.stats()["reload_errors"] >
                       before["reloads"] + before["reload_errors"], what="the reload")
    return oc.stats()["reloads"] > before["reloads"]


def edit(text, section, key, value):
    """Set `key = value` in [section] of INI text (None removes the key)."""
    out, cur, done = [], None, False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            if cur == section and not done and value is not None:
                out.append(f"{key} = {value}")
                done = True
            cur = s[1:-1]
        elif cur == section and s.split("=")[0].strip() == key:
            if value is not None:
                out.append(f"{key} = {value}")
            done = True
            continue
        out.append(line)
    if cur == section and not done and value is not None:
        out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"


def drop_section(text, section):
    out, skip = [], False
    for line in text.splitlines():
        if line.strip().startswith("["):
            skip = line.strip() == f"[{section}]"
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n"


def test_models_limits_and_servers_change_live(objcached_factory, ref, mc_pool):
    oc = objcached_factory({"objcached": {"max_keys": "5"}})
    text = oc.config_text
    with oc.client() as held:
        assert held.get_multi(["Page:café"])[0], "Page serves before the reload"
        assert held.get_multi([f"User:{i}" for i in range(1, 7)])[1].startswith(
            b"CLIENT_ERROR too many keys (max 5)")
        new = drop_section(text, "model Page")
        new += "[model Slug]\ntable = pages\nkey = slug\nkey_type = text\ncolumns = slug\n"
        new = edit(new, "objcached", "max_keys", "50")
        new = edit(new, "model User", "columns", "id, name")
        # one memcached server only from now on
        new = edit(new, "memcached", "servers", mc_pool[0].address)
        assert reload(oc, new)
        # the same connection goes on, under the new configuration
        assert held.get_multi(["Page:café"])[1] == b"CLIENT_ERROR unknown model: Page:caf\xc3\xa9"
        values, end = held.get_multi(["Slug:café"])
        assert end == b"END" and values == [(b"Slug:caf\xc3\xa9", 0, '{"slug":"café"}'.encode())]
        values, end = held.get_multi([f"User:{i}" for i in range(100, 110)])
        assert end == b"END" and len(values) == 10
        want = ref.pg.execute("SELECT row_to_json(t)::text FROM (SELECT id, name FROM users "
                              "WHERE id = 100) t")[0][0].encode()
        assert values[0][2] == want
        oc.wait_idle()
        s = oc.stats()
        assert s["model:Slug:get_keys"] == 1 and s["reloads"] == 1
        # writes only go to the remaining server now
        held.get_multi([f"User:{i}" for i in range(200, 220)])
        oc.wait_idle()
        # (asked of each server: flush_all's count of items is lazy)
        for i in range(200, 220):
            assert [k for _, k, _ in oc_c.raw_items([mc_pool[1]], oc_c.cache_key("User", i))] == []
            assert [k for _, k, _ in oc_c.raw_items([mc_pool[0]], oc_c.cache_key("User", i))] == \
                ["OBJECT" if i <= 200 else "MISSING"]        # users 1..200 exist


def test_bad_file_is_refused_and_the_old_config_serves(objcached_factory, ref):
    oc = objcached_factory()
    good = oc.config_text
    with oc.client() as c:
        assert not reload(oc, good + "\n[model Broken\n")
        assert "event=reload_refused" in oc.log()
        assert c.get_multi(["User:5"]) == ([(b"User:5", 0, ref.json("User", 5))], b"END")
        # a setting that needs a restart refuses the whole file
        assert not reload(oc, edit(good, "postgresql", "connections", "3"))
        assert "connections cannot change without a restart" in oc.log()
        assert c.get_multi(["User:6"])[1] == b"END"
        s = oc.stats()
        assert s["reload_errors"] == 2 and s["reloads"] == 0
        # and a good file after bad ones applies
        assert reload(oc, edit(good, "model User", "ttl", "2h"))

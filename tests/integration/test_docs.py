"""The reference docs against the code they describe: no server, just text.

Each list a doc page promises to be complete is compared, both ways, with
the one place in the sources that declares it:

- docs/metrics.md's metric table and docs/protocol.md's `stats` table with
  OC_STATS_LIST / OC_MODEL_STATS_LIST (sidecar/oc_stats.h) and the metric
  names sidecar/oc_stats.c and oc_metrics.c print themselves;
- docs/configuration.md's key tables (name, type, default, range) and
  docs/objcached.example.ini with the key tables of sidecar/oc_conf.c;
- docs/protocol.md's "Not yet implemented" commands with sidecar/oc_proto.c;
- docs/operations.md's table of log events with the `event=` names in
  sidecar/*.c.

The C is read as text (the X-macro list, the table rows, the #defines
their bounds use), so a key, counter or event added to the code without
its line in the docs fails here, and so does a doc line left behind.

The last tests run what the docs tell an operator to run: every option
given to `objcached` or `objcache` in a command must be in its --help;
every ```ini block must pass `--check-config`; and operations.md's SQL
for the role and its grants, run as written, must be all a sidecar needs
(a real PostgreSQL, memcached and daemon).
"""

import glob
import os
import re
import subprocess
import tempfile

import pytest

import consistency as oc_c
import harness
from conftest import merge_config, standard_config

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def read(rel):
    with open(os.path.join(SRC, rel), encoding="utf-8") as f:
        return f.read()


def strip_c_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


# ------------------------------------------------------------------ markdown


def split_row(line):
    """The cells of a markdown table row; a `|` inside backticks is text."""
    cells, cur, code = [], [], False
    for ch in line.strip()[1:]:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    return cells


def md_section(text, heading):
    """The text from the line `heading` (exact) to the next heading of the
    same or a higher level."""
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        pytest.fail(f"no heading {heading!r}")
    level = len(heading) - len(heading.lstrip("#"))
    out = []
    for line in lines[start + 1:]:
        m = re.match(r"(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out)


def md_table(text, first_header):
    """Rows (lists of cells) of the first table in `text` whose header row's
    first cell is `first_header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and split_row(line)[0] == first_header:
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(split_row(row))
            assert rows, f"table {first_header!r} is empty"
            return rows
    pytest.fail(f"no table with header {first_header!r}")


def code_spans(cell):
    return re.findall(r"`([^`]*)`", cell)


def first_code(cell):
    spans = code_spans(cell)
    return spans[0] if spans else None


# ------------------------------------------------------------------ C sources


def macro_body(text, name):
    """The body of a multi-line #define NAME(X) ... (backslash-continued)."""
    m = re.search(r"#define\s+" + name + r"\(X\)((?:[^\n]*\\\n)*[^\n]*)", text)
    assert m, f"#define {name}(X) not found"
    return m.group(1).replace("\\\n", " ")


def stats_list():
    """[(name, kind)] of OC_STATS_LIST, in order."""
    body = macro_body(read("sidecar/oc_stats.h"), "OC_STATS_LIST")
    items = re.findall(r"X\(\s*(\w+)\s*,\s*(COUNTER|GAUGE)\s*,", body)
    assert len(items) == body.count("X("), "an OC_STATS_LIST entry was not understood"
    assert len(items) > 10
    return items


def model_stats_list(macro="OC_MODEL_STATS_LIST"):
    body = macro_body(read("sidecar/oc_stats.h"), macro)
    items = re.findall(r"X\(\s*(\w+)\s*,", body)
    assert items and len(items) == body.count("X(")
    return items


def prometheus_names():
    """{metric name: type} for every metric the metrics page prints."""
    want = {}
    for name, kind in stats_list():
        if kind == "COUNTER":
            want[f"objcached_{name}_total"] = "counter"
        else:
            want[f"objcached_{name}"] = "gauge"
    for name in model_stats_list():
        want[f"objcached_model_{name}_total"] = "counter"
    for name in model_stats_list("OC_SAMPLER_STATS_LIST"):
        want[f"objcached_sampler_{name}_total"] = "counter"
    # What oc_stats.c and oc_metrics.c print outside the lists.
    for path in ("sidecar/oc_stats.c", "sidecar/oc_metrics.c"):
        text = read(path)
        for name, typ in re.findall(r"# TYPE (objcached_\w+) (counter|gauge)\\n", text):
            want[name] = typ
        for name in re.findall(r'prom_hist\(\s*out\s*,\s*"(\w+)"', text):
            want[f"objcached_{name}"] = "histogram"
    return want


def c_defines(text):
    """{NAME: value} of the numeric #defines in `text`, evaluated in order."""
    env = {}
    for name, expr in re.findall(r"^#define\s+(\w+)\s+([^\n]+)$", text, re.M):
        expr = strip_c_comments(expr).strip()
        expr = re.sub(r"\b(\d+)(?:ULL|UL|U|LL|L)\b", r"\1", expr)
        expr = re.sub(r"\(\s*size_t\s*\)", "", expr)
        if not re.fullmatch(r"[\w\s()*+\-/]+", expr):
            continue
        try:
            env[name] = c_eval(expr, env)
        except (KeyError, SyntaxError, ValueError):
            pass
    return env


def c_eval(expr, env):
    """An integer expression of numbers, known names, + - * / and parentheses."""
    expr = expr.strip()
    for name in re.findall(r"\b[A-Za-z_]\w*\b", expr):
        if name not in env:
            raise KeyError(name)
    py = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: str(env[m.group(0)]), expr).replace("/", "//")
    # C integer literals: 0777 is octal, 0x1F hex.
    py = re.sub(r"\b0[xX][0-9a-fA-F]+\b|\b0[0-7]+\b",
                lambda m: str(int(m.group(0), 16 if m.group(0)[1:2] in "xX" else 8)), py)
    if not re.fullmatch(r"[\d\s()*+\-/]+", py):
        raise ValueError(expr)
    return int(eval(py, {"__builtins__": {}}, {}))  # digits and operators only


def reload_word(code):
    """configuration.md's reload column for a key table row's last field."""
    if "OC_DEPRECATED" in code:
        return "ignored"
    return "restart" if "OC_RESTART" in code else "yes"


def conf_tables():
    """{section: [key dict]} from oc_conf.c's key tables, in table order.
    A key dict has name, type (OC_CT_...), default (None: none), required,
    lo and hi (numbers only)."""
    raw = read("sidecar/oc_conf.c")
    env = c_defines(raw)
    text = strip_c_comments(raw)
    sections = dict((arr, sec) for sec, arr in re.findall(
        r'OC_CONF_SECTION\(\s*"(\w+)"\s*,\s*(\w+)\s*\)', text))
    assert set(sections.values()) == {"objcached", "memcached", "postgresql", "model"}
    out = {}
    for arr, sec in sections.items():
        m = re.search(r"static const oc_conf_key_t " + arr + r"\[\] = \{(.*?)\n\};", text, re.S)
        assert m, f"{arr} not found in oc_conf.c"
        keys = []
        for row in re.finditer(
                r'OC_[CM]K\(\s*"(\w+)"\s*,\s*(OC_CT_\w+)\s*,\s*"([^"]*)"\s*,\s*\w+\s*,'
                r'\s*([^,()]+?)\s*,\s*([^,()]+?)\s*'
                r'(?:,\s*(OC_LIVE|OC_RESTART|OC_DEPRECATED\("[^"]*"\))\s*)?\)'
                r'|\{\s*(\.name\s*=\s*"\w+"[^{}]*)\}', m.group(1)):
            if row.group(1):
                keys.append({"name": row.group(1), "type": row.group(2),
                             "default": row.group(3), "required": False,
                             "lo": c_eval(row.group(4), env), "hi": c_eval(row.group(5), env),
                             "reload": reload_word(row.group(6) or "OC_LIVE")})
            else:
                fields = row.group(7)
                keys.append({"name": re.search(r'\.name\s*=\s*"(\w+)"', fields).group(1),
                             "type": re.search(r"\.type\s*=\s*(OC_CT_\w+)", fields).group(1),
                             "default": None,
                             "required": re.search(r"\.required\s*=\s*true", fields) is not None,
                             "lo": None, "hi": None,
                             "reload": reload_word(fields)})
        rows = m.group(1).count("OC_CK(") + m.group(1).count("OC_MK(") + \
            len(re.findall(r"\{\s*\.name", m.group(1)))
        assert len(keys) == rows, f"a row of {arr} was not understood"
        out[sec] = keys
    return out, env


def conf_choices(type_name):
    """The words a setter accepts, from its "is not one of a, b" message."""
    text = read("sidecar/oc_conf.c")
    m = re.search(r"\[" + type_name + r"\]\s*=\s*(\w+)", text)
    assert m, f"no setter for {type_name}"
    body = re.search(r"static oc_status_t " + m.group(1) + r"\(.*?\n\}", text, re.S).group(0)
    words = re.search(r"is not one of ([\w, ]+)\"", body)
    assert words, f"{m.group(1)} names no choices"
    return [w.strip() for w in words.group(1).split(",")]


# How configuration.md names each value type ("| key | type | ...").
DOC_TYPE = {
    "OC_CT_LISTEN": "host:port", "OC_CT_SOCKPATH": "path", "OC_CT_PREFIX": "text",
    "OC_CT_TIMEZONE": "text", "OC_CT_LOG_LEVEL": "word", "OC_CT_LOG_TARGET": "word",
    "OC_CT_CONNINFO": "text", "OC_CT_CONNINFO_OPT": "text", "OC_CT_UINT": "number", "OC_CT_SIZE": "size",
    "OC_CT_MSECS": "duration", "OC_CT_SECS": "duration", "OC_CT_MODE": "octal mode",
    "OC_CT_KEY_TYPE": "word", "OC_CT_IDENT": "identifier", "OC_CT_USER": "user name",
    "OC_CT_TABLE": "`[schema.]table`", "OC_CT_COLUMNS": "list of identifiers",
    "OC_CT_SERVERS": "list", "OC_CT_BOOL": "on/off", "OC_CT_RATE": "share",
    "OC_CT_WINDOWS": "list of durations", "OC_CT_POOL_MODE": "word",
}
NUMBER_TYPES = {"OC_CT_UINT", "OC_CT_SIZE", "OC_CT_MSECS", "OC_CT_SECS", "OC_CT_MODE"}
CHOICE_TYPES = {"OC_CT_LOG_LEVEL", "OC_CT_LOG_TARGET", "OC_CT_KEY_TYPE", "OC_CT_BOOL",
                "OC_CT_POOL_MODE"}


def fmt_number(typ, v, env):
    """A bound as oc_conf_fmt_number prints it (and the docs write it)."""
    if typ == "OC_CT_MODE":
        return "0" if v == 0 else "0%o" % v
    if typ == "OC_CT_SIZE":
        units = [("g", 1024 * env["OC_MIB"]), ("m", env["OC_MIB"]), ("k", env["OC_KIB"])]
    elif typ in ("OC_CT_MSECS", "OC_CT_SECS"):
        units = [("d", env["OC_MS_D"]), ("h", env["OC_MS_H"]), ("m", env["OC_MS_M"]),
                 ("s", env["OC_MS_S"]), ("ms", 1)]
    else:
        units = []
    for suffix, mult in units:
        if v != 0 and v % mult == 0:
            return f"{v // mult}{suffix}"
    return str(v)


# ------------------------------------------------------------------ the tests


def test_the_parsers_see_the_lists():
    """Sanity: the readers above find what they look for (a parser that
    found nothing would make every comparison below vacuous)."""
    assert ("curr_connections", "GAUGE") in stats_list()
    assert "get_keys" in model_stats_list()
    tables, _ = conf_tables()
    assert {k["name"] for k in tables["memcached"]} >= {"servers", "io_timeout"}
    assert conf_choices("OC_CT_LOG_LEVEL") == ["error", "warn", "info", "debug"]
    assert split_row("| `a|b` | c |") == ["`a|b`", "c"]


def test_metrics_md_lists_exactly_the_metrics():
    rows = md_table(read("docs/metrics.md"), "metric")
    doc = {}
    for cells in rows:
        name = re.sub(r"\{.*\}$", "", first_code(cells[0]) or "")
        assert name not in doc, f"docs/metrics.md lists {name} twice"
        doc[name] = cells[1]
    want = prometheus_names()
    assert sorted(set(want) - set(doc)) == [], "metrics the code prints but docs/metrics.md lacks"
    assert sorted(set(doc) - set(want)) == [], "metrics docs/metrics.md lists but the code lacks"
    wrong = {n: (doc[n], want[n]) for n in want if doc[n] != want[n]}
    assert wrong == {}, "metric types (doc, code) that differ"
    # OC_STATS_LIST's own metrics, in the order the page prints them.
    listed = [n for n in (re.sub(r"\{.*\}$", "", first_code(c[0])) for c in rows)]
    order = [f"objcached_{n}_total" if k == "COUNTER" else f"objcached_{n}"
             for n, k in stats_list()]
    assert [n for n in listed if n in order] == order, "docs/metrics.md is not in OC_STATS_LIST order"


def test_metrics_md_histogram_buckets_are_the_codes():
    text = read("sidecar/oc_stats.c")
    body = re.search(r"oc_hist_bounds\[OC_HIST_BUCKETS\] = \{(.*?)\};", text, re.S).group(1)
    bounds = [float(b) for b in re.findall(r"[\d.]+", body)]
    m = re.search(r"Histogram buckets \(seconds\): ([^+]*)\+Inf", read("docs/metrics.md"))
    assert m, "docs/metrics.md does not list the histogram buckets"
    assert [float(b) for b in re.findall(r"[\d.]+", m.group(1))] == bounds


def test_protocol_md_stats_table_is_oc_stats_list():
    section = md_section(read("docs/protocol.md"), "## `stats`")
    rows = md_table(section, "name")
    doc = [(first_code(c[0]), "(gauge)" in c[1]) for c in rows]
    want = [(name, kind == "GAUGE") for name, kind in stats_list()]
    assert [n for n, _ in doc] == [n for n, _ in want], \
        "docs/protocol.md's stats table differs from OC_STATS_LIST (names or order)"
    assert doc == want, "a stat marked (gauge) in docs/protocol.md is not a GAUGE, or the reverse"
    # The per-model lines: every OC_MODEL_STATS_LIST name, nothing else.
    m = re.search(r"`STAT model:<Model>:<name> <value>` with (.*?) counted for that model",
                  section, re.S)
    assert m, "docs/protocol.md does not describe the per-model stats"
    assert code_spans(m.group(1)) == model_stats_list()


def test_configuration_md_key_tables_are_oc_conf_tables():
    tables, env = conf_tables()
    doc = read("docs/configuration.md")
    heading = {"objcached": "## `[objcached]`", "memcached": "## `[memcached]`",
               "postgresql": "## `[postgresql]`", "model": "## `[model NAME]`"}
    problems = []
    for sec, keys in tables.items():
        rows = {first_code(c[0]): c for c in md_table(md_section(doc, heading[sec]), "key")}
        names = [k["name"] for k in keys]
        if sorted(rows) != sorted(names):
            problems.append(f"[{sec}]: doc keys {sorted(rows)} != code keys {sorted(names)}")
            continue
        for k in keys:
            _, typ, default, rng, reload, _meaning = rows[k["name"]]
            if reload != k["reload"]:
                problems.append(f"[{sec}] {k['name']}: reload {reload!r}, code {k['reload']!r}")
            where = f"[{sec}] {k['name']}"
            if typ != DOC_TYPE[k["type"]]:
                problems.append(f"{where}: type {typ!r}, code {k['type']}")
            if k["required"]:
                if default != "**required**":
                    problems.append(f"{where}: default {default!r}, code: required")
            elif k["default"] is None:
                if first_code(default) is not None or "required" in default:
                    problems.append(f"{where}: default {default!r}, code: none")
            elif k["default"] == "":
                if not default.startswith("empty"):
                    problems.append(f"{where}: default {default!r}, code: empty")
            elif first_code(default) != k["default"]:
                problems.append(f"{where}: default {default!r}, code {k['default']!r}")
            if k["type"] in NUMBER_TYPES:
                want = f"{fmt_number(k['type'], k['lo'], env)}..{fmt_number(k['type'], k['hi'], env)}"
                if not re.match(re.escape(want) + r"\b", rng):
                    problems.append(f"{where}: range {rng!r}, code {want}")
            if k["type"] in CHOICE_TYPES and k["type"] != "OC_CT_BOOL":
                if code_spans(rng) != conf_choices(k["type"]):
                    problems.append(f"{where}: range {rng!r}, code {conf_choices(k['type'])}")
    assert problems == [], "\n".join(problems)


def test_example_ini_shows_every_key_with_its_default():
    """docs/objcached.example.ini: every key of every section appears (set,
    or commented out), a key with a default shows that default, and the
    first [model ...] section shows every model key."""
    tables, _ = conf_tables()
    text = read("docs/objcached.example.ini")
    # The text of each fixed section and of the first model section.
    parts = re.split(r"^\[([^\]]+)\]\s*$", text, flags=re.M)
    sections = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        sec = "model" if name.startswith("model ") else name
        sections.setdefault(sec, body)
    problems = []
    for sec, keys in tables.items():
        body = sections.get(sec)
        if body is None:
            problems.append(f"no [{sec}] section")
            continue
        for k in keys:
            m = re.search(r"^[;#]?\s*" + k["name"] + r"\s*=([^\n]*)$", body, re.M)
            if m is None:
                problems.append(f"[{sec}] {k['name']} is not shown")
                continue
            value = re.split(r"\s[;#]", m.group(1))[0].strip()
            if k["default"] is not None and value != k["default"]:
                problems.append(f"[{sec}] {k['name']} = {value!r}, default {k['default']!r}")
    assert problems == [], "\n".join(problems)


def test_protocol_md_lists_the_unsupported_commands():
    text = strip_c_comments(read("sidecar/oc_proto.c"))

    def strings(array):
        m = re.search(array + r"\[\] = \{(.*?)\};", text, re.S)
        assert m, array
        return re.findall(r'"(\w+)"', m.group(1))
    storage = [c for c in strings("oc_proto_storage") if c != "set"]
    other = strings("oc_proto_unsupported")
    section = md_section(read("docs/protocol.md"), "## Not yet implemented")
    doc = [w for w in code_spans(section) if re.fullmatch(r"[a-z_]+", w)]
    assert sorted(doc) == sorted(storage + other), \
        "docs/protocol.md 'Not yet implemented' differs from oc_proto.c's lists"
    # The storage commands are the ones whose data block is read first.
    block = section[:section.index("data block")]
    assert set(storage) <= set(code_spans(block))


def test_operations_md_lists_every_log_event():
    code = set()
    for path in glob.glob(os.path.join(SRC, "sidecar", "*.c")):
        with open(path, encoding="utf-8") as f:
            code.update(re.findall(r"event=([a-z_%]+)", f.read()))
    section = md_section(read("docs/operations.md"), "## Logs")
    doc = set()
    for cells in md_table(section, "event"):
        doc.update(code_spans(cells[0]))
    patterns = {c for c in code if "%" in c}
    plain = code - patterns
    assert sorted(plain - doc) == [], "events logged but missing from docs/operations.md"
    for p in patterns:
        prefix = p.split("%")[0]
        assert any(d.startswith(prefix) for d in doc), f"no documented event for {p}"
    unknown = {d for d in doc - plain
               if not any(d.startswith(p.split("%")[0]) for p in patterns)}
    assert sorted(unknown) == [], "events docs/operations.md lists but no code logs"


# ------------------------------------------------------------------ running what the docs say

USER_DOCS = ["README.md"] + [f"docs/{n}" for n in (
    "operations.md", "configuration.md", "wal.md", "invalidation.md", "near-cache.md",
    "client.md", "protocol.md", "consistency.md", "metrics.md")]


def code_lines(text):
    """The lines of every fenced block and every inline code span."""
    out = []
    for m in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        out.extend(m.group(1).splitlines())
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return out + [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose)]


def invoked_options(prog):
    """{option: {doc}} of every `-x`/`--xx` given to `prog` where a doc runs it
    as a command (first word of a shell command, after `$`, `sudo`, VAR=...)."""
    found = {}
    for rel in USER_DOCS:
        for line in code_lines(read(rel)):
            for seg in re.split(r"&&|\|\||[;|]", line):
                toks = seg.split()
                while toks and (toks[0] in ("$", "sudo") or re.fullmatch(r"\w+=\S*", toks[0])):
                    toks.pop(0)
                if not toks or re.sub(r"^.*/", "", toks[0]) != prog:
                    continue
                for tok in toks[1:]:
                    if tok.startswith("#"):
                        break
                    if re.fullmatch(r"--?[A-Za-z][\w-]*", tok):
                        found.setdefault(tok, set()).add(rel)
    return found


def help_text(argv):
    p = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_every_option_the_docs_run_is_in_help(objcached_bin):
    cli = os.path.join(os.path.dirname(os.path.abspath(objcached_bin)), "client", "objcache")
    for prog, binary, at_least in (("objcached", objcached_bin, {"--check-config", "-c"}),
                                   ("objcache", cli, {"-a"})):
        helped = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text([binary])))
        used = invoked_options(prog)
        assert at_least <= set(used), f"the docs' {prog} commands were not found"
        missing = {o: sorted(d) for o, d in used.items() if o not in helped}
        assert missing == {}, f"options the docs give {prog} that its --help lacks"
    # client.md's option table too (each row: `-a`, `--addr ADDR`).
    helped = help_text([cli])
    for cells in md_table(read("docs/client.md"), "option"):
        for span in code_spans(cells[0]):
            assert re.search(r"(?<![\w-])" + re.escape(span.split()[0]) + r"\b", helped), span


def ini_blocks():
    """[(doc, text)] of every ```ini block of the user docs."""
    out = []
    for rel in USER_DOCS:
        for indent, body in re.findall(r"^( *)```ini\n(.*?)^\1```", read(rel), re.S | re.M):
            out.append((rel, re.sub(r"^" + indent, "", body, flags=re.M)))
    return out


def parse_ini(text):
    """{section: {key: raw value}} of the lines that set a key."""
    out, sec = {}, None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            sec = out.setdefault(s[1:-1], {})
        elif s and s[0] not in ";#" and "=" in s:
            k, v = s.split("=", 1)
            sec[k.strip()] = v.strip()
    return out


def check_config(binary, text):
    with tempfile.TemporaryDirectory(prefix="oc-docini-") as d:
        path = os.path.join(d, "objcached.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        p = subprocess.run([binary, "--no-db", "--check-config", path], capture_output=True,
                           text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_every_ini_the_docs_show_passes_check_config(objcached_bin):
    """The example file and each complete ```ini block as they are; each
    partial block (no servers, or no model's table) over configuration.md's
    smallest file,
    so a key it sets must exist, in that section, with a valid value."""
    rc, out = check_config(objcached_bin, read("docs/objcached.example.ini"))
    assert rc == 0, out
    blocks = ini_blocks()
    smallest = [b for rel, b in blocks if rel == "docs/configuration.md"][0]
    assert {rel for rel, _ in blocks} >= {"README.md", "docs/wal.md", "docs/near-cache.md"}
    for rel, block in blocks:
        parsed = parse_ini(block)
        if "servers" not in parsed.get("memcached", {}) or \
                not any("table" in v for k, v in parsed.items() if k.startswith("model ")):
            merged = merge_config(parse_ini(smallest), parse_ini(block))
            block = harness.render_ini(merged)
        rc, out = check_config(objcached_bin, block)
        assert rc == 0, f"{rel}:\n{block}\n{out}"


def ops_sql_blocks():
    """operations.md's ```sql blocks that make the objcached role and grant it."""
    text = read("docs/operations.md")  # (md_section would stop at a `# ` comment of a block)
    start = text.index("\n### The database: role, grants, hook\n")
    section = text[start:text.index("\n### ", start + 1)]
    blocks = re.findall(r"^```sql\n(.*?)^```", section, re.S | re.M)
    assert any("CREATE ROLE objcached" in b for b in blocks)
    return [b.replace("PASSWORD '…'", "PASSWORD 'unused'") for b in blocks]


def test_operations_md_role_and_grants_are_all_a_sidecar_needs(pg, mc_pool, objcached_bin,
                                                              objcached_factory):
    """Install the hook as the owner, run operations.md's SQL as written, and
    run a sidecar as that role: an UPDATE reaches the cache through the
    consumer, whose batches commit (the outbox drains), the feed follower
    polls, and the sampler (every key) checks what it samples, without one
    error. Each of these needs a grant the page once left out."""
    # The model exactly as the grants name it (operations.md: public.users).
    models = {"model Counter": None, "model Doc": None, "model Page": None,
              "model User": {"columns": "id, name, email, created_at"}}
    admin = merge_config(standard_config(pg, mc_pool), models)
    p = oc_c.run_install_hook(objcached_bin, admin)
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        for block in ops_sql_blocks():
            pg.execute(block)  # the superuser is also the tables' owner here
        role = pg.conninfo.replace(f"user={pg.SUPERUSER}", "user=objcached")
        assert role != pg.conninfo
        oc = objcached_factory(dict(models, objcached={"sample_rate": "100%"},
                                    postgresql={"conninfo": role}))
        with oc.client() as c:
            before = c.get("User:3")
            assert before is not None
            pg.execute("UPDATE users SET name = name || ' (docs)' WHERE id = 3")
            harness.wait_until(lambda: c.get("User:3") != before, what="the UPDATE in the cache")
        harness.wait_until(lambda: pg.execute("SELECT pending_rows FROM objcached.pending()") ==
                           [(0,)], what="the outbox drained")
        harness.wait_until(lambda: oc.stats()["sampler:User:hit:checks"] +
                           oc.stats()["sampler:User:1s:checks"] > 0, timeout=15,
                           what="a sampler check")
        s = oc.stats()
        assert (s["inval_errors"], s["feed_errors"], s["sampler_errors"]) == (0, 0, 0), \
            {k: v for k, v in s.items() if k.endswith("errors")}
        assert s["feed_polls"] > 0 and s["invalidations"] > 0
    finally:
        # The hook was installed in the session's database: a sidecar started
        # there later would read generations the tests after this one do not
        # expect in their keys.
        pg.execute_file(os.path.join(SRC, "sql", "uninstall.sql"))

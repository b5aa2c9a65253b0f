#!/usr/bin/env python3
"""Where the integration tests' time goes: the slowest test cases and the
files' totals, from the JUnit XML that each integration test of a build
directory writes (tests/junit/*.xml; see tests/CMakeLists.txt).
scripts/test.sh prints it after the ASan pass. A pytest process that ctest
killed at its TIMEOUT wrote no XML and is not listed: ctest's own output
names it, with its time.

    /usr/bin/python3 scripts/slowest.py [BUILD_DIR] [--top N]
"""

import argparse
import glob
import os
import sys
import xml.etree.ElementTree as ET


def cases(build_dir):
    """(file, test, seconds) of every test case of the build's last runs."""
    for path in sorted(glob.glob(os.path.join(build_dir, "tests", "junit", "*.xml"))):
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            print(f"slowest.py: {path}: {e}", file=sys.stderr)
            continue
        for tc in root.iter("testcase"):
            file = tc.get("classname", "?").split(".")[0]
            yield file, tc.get("name", "?"), float(tc.get("time") or 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir", nargs="?", default="build-asan")
    ap.add_argument("--top", type=int, default=20, help="test cases to list (default 20)")
    args = ap.parse_args()
    found = list(cases(args.build_dir))
    if not found:
        print(f"slowest.py: no JUnit XML under {args.build_dir}/tests/junit/")
        return 1
    total = sum(t for _, _, t in found)
    print(f"{len(found)} integration test cases, {total:,.0f} s in all (summed over the "
          "processes that ran side by side)")
    print(f"the {args.top} slowest:")
    for file, name, t in sorted(found, key=lambda c: -c[2])[:args.top]:
        print(f"  {t:7.1f} s  {file}::{name}")
    by_file = {}
    for file, _, t in found:
        n, s = by_file.get(file, (0, 0.0))
        by_file[file] = (n + 1, s + t)
    print("by file (cases, seconds):")
    for file, (n, s) in sorted(by_file.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"  {s:7.1f} s  {n:4d}  {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

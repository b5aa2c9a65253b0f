#!/usr/bin/env bash
# The objcached demo: install what is missing, build, start a throwaway
# PostgreSQL with a 130,000-row forum and two memcached servers on loopback,
# run objcached, then show, and check, a cold get-multi, a warm one, an SQL
# UPDATE reaching the cache, a push, a tombstone and the stats
# (scripts/demo.py); stop everything. Exits 1 if a step did not do what it
# shows (the test suite runs the same checks: ctest test `demo`).
#
#   bash scripts/demo.sh           # run the demo, stop everything at the end
#   bash scripts/demo.sh --keep    # leave it running; prints how to connect and stop
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
for arg in "$@"; do
    case "$arg" in
    --keep) keep=1 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

bash scripts/deps.sh
bash scripts/build.sh

dir=$(mktemp -d /tmp/objcached-demo.XXXXXX)
chmod 755 "$dir"   # the postgres user runs the cluster inside it

cleanup() {
    local rc=$?
    # demo.py stops what it started; this catches what a crash left behind.
    if [[ $keep == 0 || $rc != 0 ]]; then
        if [[ -f "$dir/stop.sh" ]]; then bash "$dir/stop.sh" >/dev/null 2>&1 || true; fi
        rm -rf "$dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

/usr/bin/python3 scripts/demo.py --dir "$dir" "$@"

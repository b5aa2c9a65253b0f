#!/usr/bin/env bash
# The randomized consistency test (tests/integration/test_consistency.py)
# run for longer and with more faults: writers in SQL and through pushes and
# tombstones racing on shared keys, readers through two sidecars, a fault
# every 20 s (each kind of docs/consistency.md's table about three times in
# ten minutes: memcached and PostgreSQL restarts, a sidecar SIGKILLed,
# proxies that delay, drop and reset connections to memcached and to
# PostgreSQL, TRUNCATE), the built-in sampler on every invalidation and hit
# with windows 1 s, 10 s and 60 s. Fails on what the test asserts (phantoms,
# errors outside the faults, staleness p99.9 over 1 s outside them, any
# inconsistency at the sampler's 60 s window, a stale entry after the
# drain); prints the sampler's figures per window (docs/consistency.md).
#
#   bash scripts/soak.sh                      10 minutes per source (trigger hook, then
#                                             the WAL), a random seed, build-asan/
#   bash scripts/soak.sh --source wal         the WAL source only (or trigger, or
#                                             wal-nokeys: the WAL, wal_feed_keys = off)
#   bash scripts/soak.sh --seconds 3600       an hour
#   bash scripts/soak.sh --seed 42            replay a seed's random choices
#   bash scripts/soak.sh --build-dir build    the daemon of another build
#   bash scripts/soak.sh --runs 5             five runs in a row (seeds seed, seed+1, ...)
#
# Builds the daemon first (scripts/build.sh) unless OBJCACHED_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
seed=""
runs=1
source=""
build_dir=build-asan
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
case "$seconds$runs" in *[!0-9]*) echo "soak.sh: --seconds and --runs take whole numbers" >&2; exit 2 ;; esac
case "$source" in "" | trigger | wal | wal-nokeys) ;; *) echo "soak.sh: --source is trigger, wal or wal-nokeys" >&2; exit 2 ;; esac
[ -n "$seed" ] || seed=$(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % 1000000000 ))

if [ -z "${OBJCACHED_BIN:-}" ]; then
    if [ "$build_dir" = build-asan ]; then
        bash scripts/build.sh --sanitize >/dev/null
    elif [ "$build_dir" = build ]; then
        bash scripts/build.sh >/dev/null
    else
        cmake --build "$build_dir" -j2 >/dev/null
    fi
    OBJCACHED_BIN="$PWD/$build_dir/objcached"
fi
export OBJCACHED_BIN
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The test's own watchdog: the run, the drain and the check of every source
# (pytest runs them one after the other), with room to spare.
nsources=2
[ -z "$source" ] || nsources=1
export OC_TEST_WATCHDOG=$(( (seconds + 600) * nsources ))

python=/usr/bin/python3
[ -x "$python" ] || python=python3
failed=0
for ((i = 0; i < runs; i++)); do
    s=$(( seed + i ))
    echo "==> soak run $((i + 1))/$runs: $seconds s, seed $s ($OBJCACHED_BIN)"
    if ! (cd tests/integration &&
          OC_CONSISTENCY_SECONDS="$seconds" OC_CONSISTENCY_SEED="$s" \
          OC_CONSISTENCY_SOURCES="${source:-trigger,wal}" \
          OC_CONSISTENCY_SAMPLE_RATE="${OC_CONSISTENCY_SAMPLE_RATE:-100%}" \
          OC_CONSISTENCY_SAMPLE_QPS="${OC_CONSISTENCY_SAMPLE_QPS:-100}" \
          OC_CONSISTENCY_SAMPLE_QUEUE="${OC_CONSISTENCY_SAMPLE_QUEUE:-262144}" \
          OC_CONSISTENCY_WINDOWS="${OC_CONSISTENCY_WINDOWS:-1s, 10s, 60s}" \
          "$python" -m pytest -q -p no:cacheprovider -s test_consistency.py); then
        echo "==> soak run with seed $s FAILED (replay: bash scripts/soak.sh --seconds $seconds --seed $s)"
        failed=1
    fi
done
exit "$failed"

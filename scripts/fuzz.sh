#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan + UBSan) and run each one
# from its seed corpus for N seconds. Exits non-zero if any target crashes,
# leaks, times out or fails to build; the crashing input is kept under
# <build-dir>/crashes/ and the command that replays it is printed.
#
#   bash scripts/fuzz.sh                    every target, 30 s each
#   bash scripts/fuzz.sh --seconds 600      longer
#   bash scripts/fuzz.sh --seconds 0        replay the seed corpora only
#   bash scripts/fuzz.sh --target fuzz_key  one target (repeatable)
#   bash scripts/fuzz.sh --build-dir DIR    build and work there (default build-fuzz/)
#
# Targets (sources in tests/fuzz/ and client/fuzz/, seeds in
# tests/fuzz/corpus/<target>/): fuzz_proto (command lines, base64),
# fuzz_key (client keys, cache keys), fuzz_conf (config files),
# fuzz_parse (libobjcache's reply parser), fuzz_cli_json (the objcache CLI's
# check that a server's value is JSON, against jansson), fuzz_mcproto (the replies of the
# memcached pool, as oc_mc reads them), fuzz_pgoutput (the logical
# replication stream: CopyData framing and pgoutput messages, as the WAL
# invalidation source reads them), fuzz_binproto (binary-protocol
# requests and the replies written to them), fuzz_walbatch (a stream of
# pgoutput messages turned into invalidation batches), fuzz_smp (the
# consistency sampler's comparisons of hostile cached bytes, and --verify's
# --sample argument), fuzz_http (the /metrics listener's verdict on a
# request head), fuzz_push (a push's body: JSON object, version order, id). The sidecar sources each needs
# are compiled into it directly, so no other build is needed. New inputs
# libFuzzer finds go to <build-dir>/corpus/<target>/, never into the tree;
# a crash worth keeping is copied into tests/fuzz/corpus/<target>/ by hand.
# Needs clang 14 and libclang-rt-14-dev (the libFuzzer runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=30
builddir=build-fuzz
targets=()
all_targets=(fuzz_proto fuzz_key fuzz_conf fuzz_parse fuzz_cli_json fuzz_mcproto fuzz_pgoutput fuzz_binproto fuzz_walbatch fuzz_smp fuzz_http fuzz_push)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while (($# > 0)); do
    case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --target) targets+=("${2:?--target needs a name}"); shift 2 ;;
    --target=*) targets+=("${1#*=}"); shift ;;
    --build-dir) builddir=${2:?--build-dir needs a directory}; shift 2 ;;
    --build-dir=*) builddir=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds wants a whole number" >&2; exit 2; }
((${#targets[@]} > 0)) || targets=("${all_targets[@]}")

cc=${FUZZ_CC:-}
if [[ -z "$cc" ]]; then
    for c in clang-14 clang; do
        if command -v "$c" >/dev/null; then cc=$c; break; fi
    done
fi
if [[ -z "$cc" ]]; then
    echo "fuzz.sh: clang not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
fi

mkdir -p "$builddir"
builddir=$(cd "$builddir" && pwd)
mkdir -p "$builddir/crashes"

# Sources of each target: the harness, then the modules under test.
sources() {
    case "$1" in
    fuzz_proto) echo tests/fuzz/fuzz_proto.c sidecar/oc_proto.c sidecar/oc_status.c ;;
    fuzz_http) echo tests/fuzz/fuzz_http.c sidecar/oc_http.c ;;
    fuzz_push) echo tests/fuzz/fuzz_push.c sidecar/oc_write_body.c sidecar/oc_key.c sidecar/oc_mcproto.c sidecar/oc_conf.c sidecar/oc_status.c -I/usr/include/postgresql -lpq -ljansson ;;
    fuzz_key) echo tests/fuzz/fuzz_key.c sidecar/oc_key.c sidecar/oc_mcproto.c sidecar/oc_conf.c sidecar/oc_status.c -I/usr/include/postgresql -lpq ;;
    fuzz_conf) echo tests/fuzz/fuzz_conf.c sidecar/oc_conf.c sidecar/oc_status.c -I/usr/include/postgresql -lpq ;;
    fuzz_parse) echo client/fuzz/fuzz_parse.c client/objcache_parse.c client/objcache_status.c ;;
    fuzz_cli_json) echo client/fuzz/fuzz_cli_json.c client/objcache_cli_util.c client/objcache_status.c -ljansson ;;
    fuzz_mcproto) echo tests/fuzz/fuzz_mcproto.c sidecar/oc_mcproto.c ;;
    fuzz_pgoutput) echo tests/fuzz/fuzz_pgoutput.c sidecar/oc_pgoutput.c sidecar/oc_status.c ;;
    fuzz_binproto) echo tests/fuzz/fuzz_binproto.c sidecar/oc_binproto.c sidecar/oc_status.c ;;
    fuzz_walbatch) echo tests/fuzz/fuzz_walbatch.c sidecar/oc_walbatch.c sidecar/oc_pgoutput.c sidecar/oc_status.c ;;
    fuzz_smp) echo tests/fuzz/fuzz_smp.c sidecar/oc_smp.c sidecar/oc_sql.c sidecar/oc_verify.c \
        sidecar/oc_place.c sidecar/oc_md5.c sidecar/oc_log.c sidecar/oc_key.c sidecar/oc_mcproto.c sidecar/oc_conf.c sidecar/oc_status.c -I/usr/include/postgresql -lpq -ljansson -lmemcached ;;
    *) return 1 ;;
    esac
}

# Longest input each target is given: past these sizes nothing new happens
# (keys are capped at 250 bytes, reply lines at 8 KiB) and runs slow down.
max_len() {
    case "$1" in
    fuzz_key) echo 1024 ;;
    fuzz_conf) echo 16384 ;;
    *) echo 8192 ;;
    esac
}

# shellcheck disable=SC2054 # the commas are -fsanitize's, not separators
cflags=(-g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -Wall -Wextra -Isidecar -Iclient)

build() {
    local t=$1 bin=$builddir/$1 srcs
    srcs=$(sources "$t") || { echo "fuzz.sh: unknown target '$t'" >&2; return 1; }
    local stale=0 s
    [[ -x "$bin" ]] || stale=1
    for s in $srcs sidecar/*.h client/*.h "$0"; do
        [[ "$s" -nt "$bin" ]] && stale=1
    done
    if ((stale)); then
        echo "==> build $t ($cc)"
        # shellcheck disable=SC2086 # $srcs is a list of paths without spaces
        "$cc" "${cflags[@]}" $srcs -o "$bin.tmp" && mv "$bin.tmp" "$bin"
    fi
}

# Sanitizer settings (the caller's, e.g. scripts/test.sh's, come first).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

failed=()
summary=()
for t in "${targets[@]}"; do
    if ! build "$t"; then
        failed+=("$t (build)")
        continue
    fi
    seeds=$root/tests/fuzz/corpus/$t
    work=$builddir/corpus/$t
    log=$builddir/$t.log
    mkdir -p "$work"
    [[ -d "$seeds" ]] || { echo "fuzz.sh: no seed corpus $seeds" >&2; failed+=("$t (no corpus)"); continue; }
    args=(-artifact_prefix="$builddir/crashes/$t-" -max_len="$(max_len "$t")"
          -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if ((seconds == 0)); then
        echo "==> $t: replay $(find "$seeds" -type f | wc -l) seed inputs"
        cmd=("$builddir/$t" "${args[@]}" -runs=0 "$seeds")
    else
        echo "==> $t: fuzz for $seconds s (seeds: tests/fuzz/corpus/$t, new inputs: $work)"
        # The work corpus comes first: new inputs go there, not into the tree.
        cmd=("$builddir/$t" "${args[@]}" -max_total_time="$seconds" "$work" "$seeds")
    fi
    rc=0
    "${cmd[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n1 || true)
    summary+=("$(printf '%-11s %s execs, %s/s, %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}")")
    if ((rc != 0)); then
        echo "fuzz.sh: $t FAILED (exit $rc); the end of its log ($log):" >&2
        tail -n 60 "$log" >&2
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
        if [[ -n "$artifact" ]]; then
            echo "fuzz.sh: replay with: $builddir/$t $artifact" >&2
            echo "fuzz.sh: keep it as a regression input: cp $artifact tests/fuzz/corpus/$t/" >&2
        fi
        failed+=("$t")
    fi
done

echo "==> fuzz summary"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    echo "fuzz.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: no crashes"

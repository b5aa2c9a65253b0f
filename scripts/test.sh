#!/usr/bin/env bash
# The README's test command (and .ci/run): install what is missing, then
#   1. check that every tool the passes below need is there (valgrind, the
#      sanitizer runtimes of cc and of clang): a pass that cannot run fails;
#   2. four builds, all with -Werror: build/ (RelWithDebInfo), build-asan/
#      (ASan + UBSan), build-release/ (Release, -O3: some warnings only
#      appear with its optimisations) and build-release-clang/ (the same
#      with clang, whose warnings differ from gcc's);
#   3. scripts/lint.sh: clang-format-14 (any difference fails), clang-tidy
#      and cppcheck;
#   4. the unit tests of the Release build;
#   5. the valgrind pass (build/): every unit test, and the read-path and
#      failure integration tests with the daemon under memcheck;
#   6. the ASan+UBSan pass (build-asan/): every test: unit, integration,
#      the sanitizer canaries, the demo (scripts/demo.py, checked), the
#      fuzz targets briefly and the benchmark's smoke run.
# A label of steps 4-6 that selects no test fails. Exits non-zero on the
# first failure; the last lines are ctest's summary of step 6, the slowest
# integration tests (scripts/slowest.py) and the time the whole command took.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

fail() {
    echo "test.sh: FAILED: $*" >&2
    exit 1
}

# nutcracker and gnuplot-nox for the bench smoke run, clang-format-14 for
# the format gate of scripts/lint.sh.
bash scripts/deps.sh nutcracker gnuplot-nox clang-format-14

# ---- 1. the tools of each pass ------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
command -v valgrind >/dev/null ||
    fail "valgrind not found: the valgrind pass cannot run (apt-get install valgrind; scripts/deps.sh installs it)"
# The compiler CMake will use for build-asan/, and clang for the fuzz
# targets, must link and run a sanitized program.
printf 'int main(void) { return 0; }\n' >"$tmp/san.c"
cc=${CC:-cc}
if ! { "$cc" -fsanitize=address,undefined "$tmp/san.c" -o "$tmp/san" && "$tmp/san"; } >"$tmp/san.log" 2>&1; then
    cat "$tmp/san.log" >&2
    fail "$cc cannot build and run a program with -fsanitize=address,undefined, so the ASan+UBSan" \
        "pass cannot run: it needs the sanitizer runtimes (gcc: libasan8 and libubsan1, which gcc-12" \
        "depends on; clang: libclang-rt-14-dev)"
fi
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
    >"$tmp/fuzz.c"
clang=$(command -v clang-14 || command -v clang) || fail "clang not found: the fuzz targets need it (apt-get install clang)"
if ! "$clang" -fsanitize=fuzzer,address,undefined "$tmp/fuzz.c" -o "$tmp/fuzz" >"$tmp/fuzz.log" 2>&1; then
    cat "$tmp/fuzz.log" >&2
    fail "$clang cannot link -fsanitize=fuzzer,address,undefined: the fuzz targets need libclang-rt-14-dev"
fi

# "==> what (at 1m05s)": each step with the time it started.
stage() {
    local t=$((SECONDS - start))
    printf '==> %s (at %dm%02ds)\n' "$1" $((t / 60)) $((t % 60))
}

# Fails unless each label selects at least one test in the build directory.
require_tests() {
    local dir=$1 label n
    shift
    for label in "$@"; do
        n=$(ctest --test-dir "$dir" -N -L "^$label\$" | sed -n 's/^Total Tests: //p')
        ((${n:-0} > 0)) || fail "$dir/ has no test labelled '$label': the pass would run nothing"
    done
}

# ---- 2. builds -----------------------------------------------------------------
stage "build/ (RelWithDebInfo)"
bash scripts/build.sh
stage "build-asan/ (ASan + UBSan)"
bash scripts/build.sh --sanitize
stage "build-release/ (Release, gcc)"
bash scripts/build.sh --release
stage "build-release-clang/ (Release, clang)"
bash scripts/build.sh --release --clang

# ---- 3. lint -------------------------------------------------------------------
stage "lint: clang-format-14, clang-tidy, cppcheck (scripts/lint.sh)"
bash scripts/lint.sh

# ---- 4. the Release build's unit tests -------------------------------------------
stage "Release unit tests (build-release/)"
require_tests build-release unit
ctest --test-dir build-release -L '^unit$' --no-tests=error --output-on-failure -j2

# ---- 5. valgrind ---------------------------------------------------------------
stage "valgrind pass (build/)"
require_tests build valgrind
ctest --test-dir build -L '^valgrind$' --no-tests=error --output-on-failure -j2

# ---- 6. ASan + UBSan -------------------------------------------------------------
stage "ASan+UBSan pass (build-asan/)"
require_tests build-asan unit integration sanitizer demo fuzz bench
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Three at a time on two cores: most of an integration test's time is spent
# waiting (for a timeout to pass, a takeover, a proxy's delay, PostgreSQL),
# not computing; at two the pass took 861 s of which test_wal alone 296 s
# (2026-12-05, 18m59s in all). CPU-heavy tests keep their RESOURCE_LOCK.
rm -rf build-asan/tests/junit
asan_rc=0
ctest --test-dir build-asan --no-tests=error --output-on-failure -j3 || asan_rc=$?
# where the pass's time went (each integration test's JUnit XML)
/usr/bin/python3 scripts/slowest.py build-asan --top 15 || true
((asan_rc == 0)) || fail "the ASan+UBSan pass (ctest exit $asan_rc)"

elapsed=$((SECONDS - start))
printf 'test.sh: passed in %dm%02ds\n' $((elapsed / 60)) $((elapsed % 60))

#!/usr/bin/env bash
# The README's test command (and .ci/run): install what is missing, then
#   1. a plain build, whose unit tests and a set of integration tests run
#      under valgrind (memcheck): zero leaks and zero errors;
#   2. an ASan+UBSan build, under which every unit and integration test runs,
#      and the fuzz targets run briefly, and bench/run.py --quick checks every
#      benchmark path once (values checked, figures not judged);
# after clang-tidy and cppcheck (scripts/lint.sh) pass on the sources.
# Exits non-zero on any failure; ctest's summary of step 2 is the last thing
# printed.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh nutcracker gnuplot-nox   # the last two for the bench smoke run
bash scripts/build.sh
bash scripts/build.sh --sanitize

echo "==> lint: clang-tidy and cppcheck (scripts/lint.sh)"
bash scripts/lint.sh

echo "==> valgrind pass (build/)"
ctest --test-dir build -L valgrind --output-on-failure -j2

echo "==> ASan+UBSan pass (build-asan/)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
exec ctest --test-dir build-asan --output-on-failure -j2

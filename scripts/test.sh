#!/usr/bin/env bash
# Install what is missing, build with ASan + UBSan, run every unit and
# integration test. Exits non-zero on any failure; ctest's summary is the
# last thing printed.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
bash scripts/build.sh --sanitize

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
exec ctest --test-dir build-asan --output-on-failure -j2

#!/usr/bin/env bash
# Build objcached (and its tests) with CMake. Every build compiles with
# -Wall -Wextra -Werror, so a warning fails it.
#
#   bash scripts/build.sh                     -> build/               (RelWithDebInfo: -O2 -g)
#   bash scripts/build.sh --sanitize          -> build-asan/          (ASan + UBSan)
#   bash scripts/build.sh --release           -> build-release/       (Release: -O3)
#   bash scripts/build.sh --release --clang   -> build-release-clang/ (the same with clang)
#
# --clang works with the others too (build-clang/, build-asan-clang/). The
# compiler is the one the directory was first configured with: CMake keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=
type=RelWithDebInfo
clang=0
extra=()
for arg in "$@"; do
    case "$arg" in
    --sanitize) kind=-asan; extra=(-DOC_SANITIZE=ON) ;;
    --release) kind=-release; type=Release ;;
    --clang) clang=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

dir=build$kind
if ((clang)); then
    dir=$dir-clang
    for c in clang-14 clang ''; do
        [[ -n "$c" ]] || { echo "build.sh: clang not found (apt-get install clang)" >&2; exit 2; }
        if command -v "$c" >/dev/null; then export CC=$c; break; fi
    done
fi

cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "${extra[@]}"
cmake --build "$dir" -j2

#!/usr/bin/env bash
# Build objcached (and its tests) with CMake.
#
#   bash scripts/build.sh              -> build/        (RelWithDebInfo)
#   bash scripts/build.sh --sanitize   -> build-asan/   (ASan + UBSan)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build
extra=()
for arg in "$@"; do
    case "$arg" in
    --sanitize) dir=build-asan; extra=(-DOC_SANITIZE=ON) ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${extra[@]}"
cmake --build "$dir" -j2

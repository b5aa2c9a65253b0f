#!/usr/bin/env bash
# Static checks of the C sources (sidecar/*.c, client/*.c):
#   1. clang-tidy with the repo's .clang-tidy, from a compile_commands.json
#      (a clang configure in build-lint/, made if missing; or --build-dir);
#   2. cppcheck (warning, performance, portability), with the justified
#      suppressions in tests/cppcheck.supp;
#   3. clang-format --dry-run against .clang-format: only reported, never
#      applied, and never a failure (files are listed with their count of
#      differing places).
# Exits 1 if clang-tidy or cppcheck report anything, 0 otherwise.
#
#   bash scripts/lint.sh
#   bash scripts/lint.sh --build-dir build-asan   # reuse its compile_commands.json
#   bash scripts/lint.sh --no-format              # skip step 3
#
# Needs clang-tidy, clang-format (clang-tools 14) and cppcheck.
set -euo pipefail
cd "$(dirname "$0")/.."

builddir=build-lint
format=1
while (($# > 0)); do
    case "$1" in
    --build-dir) builddir=${2:?--build-dir needs a directory}; shift 2 ;;
    --build-dir=*) builddir=${1#*=}; shift ;;
    --no-format) format=0; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "lint.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

pick() {
    local c
    for c in "$@"; do
        if command -v "$c" >/dev/null; then echo "$c"; return 0; fi
    done
    return 1
}
tidy=$(pick clang-tidy-14 clang-tidy) || { echo "lint.sh: clang-tidy not found (apt-get install clang-tidy)" >&2; exit 2; }
cppcheck=$(pick cppcheck) || { echo "lint.sh: cppcheck not found (apt-get install cppcheck)" >&2; exit 2; }
clang_format=$(pick clang-format-14 clang-format) || clang_format=

sources=(sidecar/*.c client/*.c)
headers=(sidecar/*.h client/*.h)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0

# ---- 1. clang-tidy -----------------------------------------------------------
if [[ ! -f "$builddir/compile_commands.json" ]]; then
    echo "==> configure $builddir/ with clang for compile_commands.json"
    CC=$(pick clang-14 clang) cmake -S . -B "$builddir" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        -DCMAKE_BUILD_TYPE=Debug >"$out/cmake.log" 2>&1 ||
        { cat "$out/cmake.log" >&2; echo "lint.sh: cmake failed" >&2; exit 2; }
fi
echo "==> clang-tidy ($tidy, .clang-tidy, $builddir/compile_commands.json): ${#sources[@]} files"
# One process per file, in parallel; each file's findings in its own log.
# shellcheck disable=SC2016 # $1.. are expanded by the inner sh
printf '%s\n' "${sources[@]}" |
    xargs -P "$(nproc)" -I{} sh -c '"$1" -p "$2" --quiet "$3" >"$4/tidy.$(echo "$3" | tr / _).log" 2>&1 || true' \
        sh "$tidy" "$builddir" {} "$out"
# Findings are "file:line:col: warning|error: text [check]"; a header's
# finding shows up once per file that includes it.
cat "$out"/tidy.*.log | grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error): ' |
    sed "s|^$PWD/||" | sort -u >"$out/tidy.txt" || true
if [[ -s "$out/tidy.txt" ]]; then
    echo "clang-tidy: $(wc -l <"$out/tidy.txt") finding(s):"
    sed 's/^/  /' "$out/tidy.txt"
    status=1
else
    echo "clang-tidy: clean"
fi

# ---- 2. cppcheck -------------------------------------------------------------
echo "==> cppcheck ($($cppcheck --version))"
# OC_VERSION comes from CMake; -D_GNU_SOURCE as in the build.
if ! "$cppcheck" --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
    --suppressions-list=tests/cppcheck.supp --std=c11 --library=posix -D_GNU_SOURCE \
    -DOC_VERSION='"0"' -I sidecar -I client --quiet \
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
    "${sources[@]}" client/fuzz/*.c client/examples/*.c 2>"$out/cppcheck.txt"; then
    status=1
fi
if [[ -s "$out/cppcheck.txt" ]]; then
    echo "cppcheck: $(grep -cE '^[^ ]+:[0-9]+:' "$out/cppcheck.txt") finding(s):"
    sed 's/^/  /' "$out/cppcheck.txt"
    status=1
else
    echo "cppcheck: clean"
fi

# ---- 3. clang-format (report only) ------------------------------------------
if ((format)) && [[ -n "$clang_format" ]]; then
    echo "==> $clang_format --dry-run (.clang-format); report only"
    differ=0
    for f in "${sources[@]}" "${headers[@]}"; do
        n=$("$clang_format" --dry-run "$f" 2>&1 | grep -c 'warning: code should be clang-formatted' || true)
        if ((n > 0)); then
            printf '  %-32s %4d place(s) differ\n' "$f" "$n"
            differ=$((differ + 1))
        fi
    done
    echo "clang-format: $differ of $((${#sources[@]} + ${#headers[@]})) files differ (not a failure)"
elif ((format)); then
    echo "clang-format: not installed, skipped"
fi

exit "$status"

#!/usr/bin/env bash
# Static checks of the C sources. Each one is a gate:
#   1. clang-format-14 against .clang-format, on every C file of the
#      repository (git ls-files '*.c' '*.h', plus new files not yet added):
#      any difference fails, and the files are listed with the command that
#      fixes them. Only clang-format 14 is used: the tree is formatted with
#      it, and other versions lay out some constructs differently.
#   2. clang-tidy with the repo's .clang-tidy on sidecar/*.c, client/*.c and
#      bench/*.c, and the headers of those folders they include, from a
#      compile_commands.json (a clang configure in build-lint/, or
#      --build-dir DIR).
#   3. cppcheck (warning, performance, portability) on the same files and
#      client/fuzz/, client/examples/, with the justified suppressions in
#      tests/cppcheck.supp.
# Exits 1 if a check finds anything, 2 if a tool is missing or cannot run.
#
#   bash scripts/lint.sh
#   bash scripts/lint.sh --build-dir build-asan   # reuse its compile_commands.json
#   bash scripts/lint.sh --format-only            # step 1 alone (a few seconds)
#
# Needs clang-format-14, clang-tidy (14) and cppcheck; scripts/test.sh
# installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

builddir=build-lint
given_builddir=0
format_only=0
while (($# > 0)); do
    case "$1" in
    --build-dir) builddir=${2:?--build-dir needs a directory}; given_builddir=1; shift 2 ;;
    --build-dir=*) builddir=${1#*=}; given_builddir=1; shift ;;
    --format-only) format_only=1; shift ;;
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
# clang-format 14 under either name; nothing else formats the tree the same.
pick_format() {
    local c
    for c in clang-format-14 clang-format; do
        if command -v "$c" >/dev/null && "$c" --version | grep -q 'version 14\.'; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

missing=()
clang_format=$(pick_format) || missing+=("clang-format 14 (apt-get install clang-format-14)")
if ((!format_only)); then
    tidy=$(pick clang-tidy-14 clang-tidy) || missing+=("clang-tidy (apt-get install clang-tidy)")
    cppcheck=$(pick cppcheck) || missing+=("cppcheck (apt-get install cppcheck)")
fi
if ((${#missing[@]} > 0)); then
    echo "lint.sh: FAILED: missing tools, nothing was checked:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 2
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0

# ---- 1. clang-format -----------------------------------------------------------
# Tracked files and untracked ones that are not ignored (a new file is
# checked before it is added); a tracked file deleted from the work tree is
# skipped.
if ! git ls-files --cached --others --exclude-standard -- '*.c' '*.h' >"$out/files.txt" 2>&1; then
    cat "$out/files.txt" >&2
    echo "lint.sh: git ls-files failed: the file list comes from git (run it in a clone)" >&2
    exit 2
fi
files=()
while IFS= read -r f; do
    [[ -f "$f" ]] && files+=("$f")
done < <(sort -u "$out/files.txt")
if ((${#files[@]} == 0)); then
    echo "lint.sh: git ls-files lists no C files: nothing to check" >&2
    exit 2
fi
echo "==> $clang_format --dry-run --Werror (.clang-format): ${#files[@]} files"
differ=()
for f in "${files[@]}"; do
    if ! "$clang_format" --dry-run --Werror "$f" >"$out/format.log" 2>&1; then
        n=$(grep -c 'code should be clang-formatted' "$out/format.log" || true)
        if ((n == 0)); then # not a difference: clang-format itself failed
            cat "$out/format.log" >&2
            echo "lint.sh: $clang_format failed on $f" >&2
            exit 2
        fi
        printf '  %-40s %4d place(s) differ\n' "$f" "$n"
        differ+=("$f")
    fi
done
if ((${#differ[@]} > 0)); then
    echo "clang-format: ${#differ[@]} of ${#files[@]} files differ from .clang-format. Fix them with:"
    echo "  $clang_format -i ${differ[*]}"
    echo "  (see what changes first: $clang_format FILE | diff -u FILE -)"
    status=1
else
    echo "clang-format: clean"
fi
if ((format_only)); then
    exit "$status"
fi

tidy_sources=(sidecar/*.c client/*.c bench/*.c)
cppcheck_sources=("${tidy_sources[@]}" client/fuzz/*.c client/examples/*.c)

# ---- 2. clang-tidy -------------------------------------------------------------
if ((!given_builddir)); then
    # Configured every time (a second or two): a compile database from an
    # older tree would miss new files.
    echo "==> configure $builddir/ with clang for compile_commands.json"
    CC=$(pick clang-14 clang || echo cc) cmake -S . -B "$builddir" \
        -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCMAKE_BUILD_TYPE=Debug >"$out/cmake.log" 2>&1 ||
        { cat "$out/cmake.log" >&2; echo "lint.sh: cmake failed" >&2; exit 2; }
fi
db=$builddir/compile_commands.json
[[ -f "$db" ]] || { echo "lint.sh: no $db (configure $builddir with CMake first)" >&2; exit 2; }
# A file missing from the database would be checked with guessed flags, or
# not at all: refuse instead.
absent=$(python3 - "$db" "${tidy_sources[@]}" <<'EOF'
import json, os, sys
known = {os.path.realpath(os.path.join(e.get("directory", ""), e["file"]))
         for e in json.load(open(sys.argv[1]))}
print(" ".join(f for f in sys.argv[2:] if os.path.realpath(f) not in known))
EOF
)
if [[ -n "$absent" ]]; then
    echo "lint.sh: not in $db (is it a build of this tree?): $absent" >&2
    exit 2
fi
echo "==> clang-tidy ($tidy, .clang-tidy, $db): ${#tidy_sources[@]} files"
# One process per file, in parallel; each file's findings and exit status in
# its own files. The headers of sidecar/, client/ and bench/ are checked
# where they are included (each finding once, below).
# shellcheck disable=SC2016 # $1.. are expanded by the inner sh
printf '%s\n' "${tidy_sources[@]}" |
    xargs -P "$(nproc)" -I{} sh -c 'log="$4/tidy.$(echo "$3" | tr / _)"
        "$1" -p "$2" --quiet --header-filter="/(sidecar|client|bench)/[^/]+\.h$" "$3" >"$log.log" 2>&1
        echo $? >"$log.rc"' sh "$tidy" "$builddir" {} "$out"
# Findings are "file:line:col: warning|error: text [check]"; a header's
# finding shows up once per file that includes it.
cat "$out"/tidy.*.log | grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error): ' |
    sed "s|^$PWD/||" | sort -u >"$out/tidy.txt" || true
tidy_failed=()
for f in "${tidy_sources[@]}"; do
    log="$out/tidy.$(echo "$f" | tr / _)"
    [[ "$(cat "$log.rc" 2>/dev/null)" == 0 ]] || tidy_failed+=("$f")
done
if [[ -s "$out/tidy.txt" ]]; then
    echo "clang-tidy: $(wc -l <"$out/tidy.txt") finding(s):"
    sed 's/^/  /' "$out/tidy.txt"
    status=1
elif ((${#tidy_failed[@]} > 0)); then
    # Failed without a finding: a crash or a file it could not compile.
    echo "clang-tidy: FAILED without a finding on: ${tidy_failed[*]}; the first log:"
    sed 's/^/  /' "$out/tidy.$(echo "${tidy_failed[0]}" | tr / _).log" | head -40
    status=1
else
    echo "clang-tidy: clean"
fi

# ---- 3. cppcheck ---------------------------------------------------------------
echo "==> cppcheck ($($cppcheck --version)): ${#cppcheck_sources[@]} files"
# OC_VERSION comes from CMake; -D_GNU_SOURCE as in the build.
cppcheck_rc=0
"$cppcheck" --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
    --suppressions-list=tests/cppcheck.supp --std=c11 --library=posix -D_GNU_SOURCE \
    -DOC_VERSION='"0"' -I sidecar -I client -I bench --quiet \
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
    "${cppcheck_sources[@]}" 2>"$out/cppcheck.txt" || cppcheck_rc=$?
if [[ -s "$out/cppcheck.txt" ]]; then
    echo "cppcheck: $(grep -cE '^[^ ]+:[0-9]+:' "$out/cppcheck.txt" || true) finding(s) (exit $cppcheck_rc):"
    sed 's/^/  /' "$out/cppcheck.txt"
    status=1
elif ((cppcheck_rc != 0)); then
    echo "cppcheck: FAILED (exit $cppcheck_rc) without a finding"
    status=1
else
    echo "cppcheck: clean"
fi

if ((status != 0)); then
    echo "lint.sh: FAILED (see above)"
fi
exit "$status"

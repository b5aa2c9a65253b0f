#!/usr/bin/env bash
# The objcached benchmark: install what is missing (the project's packages
# plus nutcracker = twemproxy and gnuplot), build, then run bench/run.py:
# a throwaway PostgreSQL, 3 memcached, twemproxy and objcached on loopback,
# every path side by side through bench/loadgen.c; a table, CSVs and PNG
# plots in bench/out/ (or --out DIR). Stops every server it started.
#
#   bash bench/run.sh            # full run, about 11 minutes on 2 cores
#   bash bench/run.sh --quick    # smoke run, under 3 minutes
#   bash bench/run.sh --help     # every option of bench/run.py
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
-h | --help) sed -n '2,10p' "$0"; echo; exec /usr/bin/python3 bench/run.py --help ;;
esac

bash scripts/deps.sh nutcracker gnuplot-nox
# The package's own twemproxy service is not ours: the benchmark starts its
# own on a free loopback port.
if command -v systemctl >/dev/null && systemctl is-active --quiet nutcracker 2>/dev/null; then
    echo "run.sh: note: a system nutcracker service is running; it is left alone"
fi
bash scripts/build.sh
exec /usr/bin/python3 bench/run.py "$@"

#!/usr/bin/env bash
# The quick test subset's wall time, with the machine it ran on: what the README quotes.
#   scripts/time_tests.sh            # pytest -m "not slow" (the edit-test loop)
#   scripts/time_tests.sh -x tests/test_report.py   # extra pytest arguments pass through
# CI runs everything (`pytest`); the slow tests are the end-to-end and subprocess ones.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
cpu=$(grep -m1 "model name" /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//')
cores=$(nproc 2>/dev/null || echo "?")
load_before=$(cut -d" " -f1 /proc/loadavg 2>/dev/null || echo "?")
start=$(date +%s.%N)
"$python" -m pytest -m "not slow" -q -p no:cacheprovider "$@" | tail -n "${TAIL:-3}"
status=${PIPESTATUS[0]}
end=$(date +%s.%N)
load_after=$(cut -d" " -f1 /proc/loadavg 2>/dev/null || echo "?")
wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
echo "pytest -m \"not slow\": ${wall} s wall on ${cpu:-unknown CPU}, ${cores} cores," \
     "load average ${load_before} -> ${load_after}, $(date -u +%Y-%m-%d)" \
     "(torch $("$python" -c 'import torch; print(torch.__version__)'))"
exit "$status"

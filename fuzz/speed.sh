#!/usr/bin/env bash
# Prints how fast each fuzz target runs: SECONDS (default 20) from its committed seed corpus into an empty
# directory, libFuzzer seed 1, and per target the executions, libFuzzer's exec/s (wall clock), executions per
# CPU second (steadier when other work shares the cores) and the final cov/ft. Builds nothing: BIN_DIR
# (default: fuzz/run.sh's build) holds the targets; one it does not hold is skipped.
# Usage: fuzz/speed.sh [SECONDS] [BIN_DIR]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
bin="${2:-.build-fuzz/release}"
export SWIFT_BACKTRACE=enable=no
printf '%-8s %10s %8s %12s %6s %7s\n' target execs exec/s exec/cpu-s cov ft
product() { case "$1" in stateimage) echo FuzzStateImage ;; *) echo "Fuzz${1^}" ;; esac; }
for target in protocol trap memory stateimage; do
    [ -x "$bin/$(product "$target")" ] && [ -d "corpus/$target" ] || continue
    work="$(mktemp -d)"
    log="$work/log"
    mkdir "$work/corpus"
    /usr/bin/time -f 'cpu %U %S' "$bin/$(product "$target")" -max_total_time="$seconds" -seed=1 -print_final_stats=1 \
        "$work/corpus" "corpus/$target" >"$log" 2>&1 || true
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
    cpu=$(awk '/^cpu / {print $2 + $3}' "$log")
    cov=$(grep -o 'DONE.*' "$log" | awk '{print $3}')
    ft=$(grep -o 'DONE.*' "$log" | awk '{print $5}')
    printf '%-8s %10s %8s %12s %6s %7s\n' "$target" "$execs" "$rate" "$(awk -v e="$execs" -v c="$cpu" 'BEGIN {printf "%d", e / c}')" "$cov" "$ft"
    rm -rf "$work"
done

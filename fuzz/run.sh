#!/usr/bin/env bash
# Builds the four libFuzzer targets and runs each for SECONDS (default 30) on its committed seed corpus.
# Findings (crash-*, leak-*) land in fuzz/findings/. Usage: fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
export SWIFT_BACKTRACE=enable=no
# Swift's exclusivity checks stay in the fuzzed modules: Package.swift drops them only under SMMU_RELEASE_FLAGS.
unset SMMU_RELEASE_FLAGS
# --sanitize=fuzzer instruments only this package's targets; the coverage flag instruments the
# project's modules too, so libFuzzer sees their edges. Only the fuzz products are built.
flags=(-c release --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp --scratch-path .build-fuzz)
targets=(protocol trap memory stateimage)
product() { case "$1" in stateimage) echo FuzzStateImage ;; *) echo "Fuzz${1^}" ;; esac; }
for target in "${targets[@]}"; do
    swift build "${flags[@]}" --product "$(product "$target")" 2>&1 | tail -2
done
bin="$(swift build "${flags[@]}" --show-bin-path)"
mkdir -p findings
status=0
for target in "${targets[@]}"; do
    exe="$bin/$(product "$target")"
    mkdir -p "work/$target"
    cp -n corpus/$target/* work/$target/ 2>/dev/null || true
    echo "== $exe for ${seconds}s"
    if ! "$exe" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix=findings/ \
        work/$target corpus/$target 2>&1 | tee "findings/$target.log" | grep -E "^#[0-9]+ *DONE|stat::number_of_executed_units|ERROR|Assertion|Fatal|crash-" ; then
        :
    fi
    grep -q "ERROR: libFuzzer\|Fatal error\|deadly signal\|ERROR: AddressSanitizer" "findings/$target.log" && status=1
done
exit $status

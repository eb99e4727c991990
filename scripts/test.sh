#!/bin/bash
# Runs every test: swift build, swift test (with a real journald for the audit tests), the Python client's
# tests against the built daemon, the load-and-faults script, a short libFuzzer run of both targets, and
# (as root) the systemd-as-PID-1 tests of the units (start, audit, stop; restart and kill -9 under 64 clients) and
# the real Linux guests in QEMU (Debian's kernel, the project's kernel running pKVM, and the project's kernel on
# Tegra234's SMMUs and memory controller; Debian's kernel again through 10 restarts and 10 kill -9 of the daemon).
# Skip the slow parts with SMMU_SKIP_FUZZ=1, SMMU_SKIP_GUEST=1, SMMU_SKIP_PID1=1; FUZZ_SECONDS sets the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
SCRATCH=${SCRATCH:-.build}

source scripts/journald.sh
if journald_listening; then
    export SMMU_HYPD_REQUIRE_JOURNALD=1   # the audit tests must run, not skip
else
    echo "test.sh: no journald (not root?): the journald audit tests are skipped" >&2
fi

swift build --scratch-path "$SCRATCH"
BIN=$(swift build --scratch-path "$SCRATCH" --show-bin-path)
export SMMU_HYPD_BIN="$BIN/smmu-hypd"   # the client tests that run against the real daemon
swift test --scratch-path "$SCRATCH"
python3 -m unittest -v clients/python/test_smmu_client.py
if [ "$(id -u)" -eq 0 ] && [ -z "${SMMU_SKIP_PID1:-}" ]; then
    scripts/systemd-pid1-test.sh
    scripts/systemd-restart-test.sh
else
    echo "test.sh: not root: skipping the systemd-as-PID-1 test" >&2
fi
scripts/load-test.sh
if [ -z "${SMMU_SKIP_FUZZ:-}" ]; then
    fuzz/run.sh "${FUZZ_SECONDS:-30}"
fi
if [ "$(id -u)" -eq 0 ] && [ -z "${SMMU_SKIP_GUEST:-}" ]; then
    qemu/guest-test.sh stock
    # The project's kernel running pKVM: the seed's deferral for real (builds the kernel once, cached).
    qemu/guest-test.sh pkvm
    # The project's kernel on Tegra234's SMMU and MC drivers (the same cached kernel), without and with pKVM.
    qemu/tegra-guest-test.sh plain
    qemu/tegra-guest-test.sh pkvm
    # A live guest through systemctl restart and kill -9 (systemd as PID 1): 10 of each by default, about 80 s.
    [ -n "${SMMU_SKIP_PID1:-}" ] || scripts/systemd-restart-guest-test.sh "${SMMU_GUEST_RESTART_ROUNDS:-10}"
else
    echo "test.sh: not root or SMMU_SKIP_GUEST: skipping the QEMU guest test" >&2
fi
echo "test.sh: all tests passed"

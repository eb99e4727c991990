#!/usr/bin/env bash
# Load and fault tests for smmu-hypd (README, "Performance"): 64 pipelining clients, a client killed mid-frame, a client
# that never reads, 1,000 connects and disconnects, journald stopped mid-run, SIGTERM under load.
# Prints one line per check and exits non-zero if any failed. The checks are in scripts/load_test.py.
#
#   scripts/load-test.sh                      # builds smmu-hypd (release) unless SMMU_HYPD_BIN names one
#   SMMU_HYPD_BIN=/path/smmu-hypd scripts/load-test.sh
#
# As root with unshare(1) and systemd-journald available, the run happens in a private mount namespace
# with its own tmpfs /run (and /var/log/journal), where it starts a journald of its own that the
# journald check stops mid-run; the machine's /run and journal are never touched. Otherwise that one
# check is skipped (and says so).
set -euo pipefail
# Release builds drop Swift's exclusivity checks on the request path (Package.swift, hotPath).
export SMMU_RELEASE_FLAGS=1
cd "$(dirname "$0")/.."

CONFIG=${SMMU_LOAD_CONFIG:-Config/tegra234.yaml}
JOURNALD=/lib/systemd/systemd-journald

if [ -z "${SMMU_HYPD_BIN:-}" ]; then
    scratch=${SMMU_LOAD_SCRATCH:-.build}
    echo "building smmu-hypd (release, --scratch-path $scratch)"
    swift build -c release --scratch-path "$scratch" --product smmu-hypd >&2
    SMMU_HYPD_BIN="$(swift build -c release --scratch-path "$scratch" --show-bin-path)/smmu-hypd"
fi
export SMMU_HYPD_BIN

if [ -z "${SMMU_LOAD_IN_NAMESPACE:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -x "$JOURNALD" ] \
    && unshare --mount --propagation private true 2>/dev/null; then
    exec env SMMU_LOAD_IN_NAMESPACE=1 unshare --mount --propagation private bash "$0" "$@"
fi

if [ -n "${SMMU_LOAD_IN_NAMESPACE:-}" ]; then
    mount -t tmpfs tmpfs /run
    if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
    mkdir -p /run/systemd/journal
    "$JOURNALD" >/dev/null 2>&1 &
    journald=$!
    trap 'kill "$journald" 2>/dev/null || true' EXIT
    for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
    echo "private journald (pid $journald) in a private mount namespace"
    python3 scripts/load_test.py --daemon "$SMMU_HYPD_BIN" --config "$CONFIG" --journald-pid "$journald"
else
    python3 scripts/load_test.py --daemon "$SMMU_HYPD_BIN" --config "$CONFIG"
fi

# SPDX-License-Identifier: GPL-2.0-or-later
# Shared by the QEMU guest tests (bash, sourced): result lines, waiting for a log line, a
# journald for the daemon's audit records, and cleanup of the processes a test started.
# The sourcing script sets TAG (its name in messages) and TMP (its scratch directory) first.

FAILS=0
RESULTS=()
PIDS=()
check() {   # check NAME CONDITION-STATUS DETAIL
    if [ "$2" -eq 0 ]; then RESULTS+=("PASS  $1: $3"); else RESULTS+=("FAIL  $1: $3"); FAILS=$((FAILS + 1)); fi
}
say() { echo "$TAG: $*" >&2; }
die() {
    say "$*"
    echo "FAIL  setup: $*"
    exit 1
}
wait_for() {   # wait_for FILE PATTERN SECONDS [PID]
    local i=0
    while [ $i -lt $(($3 * 10)) ]; do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
            grep -q -- "$2" "$1" 2>/dev/null
            return
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$TMP"
}

# journald receives the daemon's audit records; start one if none listens (CI has one). A socket
# file alone proves nothing: a journald that exited leaves it behind.
journald_listening() {
    python3 -c 'import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).connect("/run/systemd/journal/socket")' 2>/dev/null
}
ensure_journald() {
    journald_listening && return
    mkdir -p /run/systemd/journal
    /lib/systemd/systemd-journald >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do journald_listening && break; sleep 0.1; done
}

# The first journal record since $1 with a SMMU_RULE, from client $2 (its HELLO name), as one
# line; more journalctl matches (FIELD=VALUE) may follow.
audit_record() {
    local since=$1 client=$2
    shift 2
    journalctl -o json --since "$since" --no-pager SMMU_CLIENT="$client" "$@" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if "SMMU_RULE" in e and e.get("PRIORITY") == "4":
        print("SMMU_RULE=%s SMMU_WINDOW=%s SMMU_REGISTER=%s SMMU_VALUE=%s MESSAGE_ID=%s" % (
            e["SMMU_RULE"], e.get("SMMU_WINDOW", ""), e.get("SMMU_REGISTER", ""), e.get("SMMU_VALUE", ""),
            e.get("MESSAGE_ID", "")))
        break'
}

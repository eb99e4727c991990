#!/bin/bash
# Restart and crash survival for real: systemd as PID 1 (scripts/systemd-pid1.sh), smmu-hypd socket-activated with
# `fd_store: true`, 64 pipelining clients checking every answer (scripts/restart-clients.py), `systemctl restart`
# ten times and `kill -9 MainPID` ten times; no connection may close, DUMP must be equal across each, STATS must count
# exactly the requests sent. Prints the downtime per restart (p50, p99; a benchmark figure, not asserted). Then checks
# that an explicit `systemctl stop` is a clean end: systemd drops the store, so a client sees its connection closed.
# Needs root. Usage: SMMU_HYPD_BIN=.build/debug/smmu-hypd scripts/systemd-restart-test.sh [ROUNDS]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "${SMMU_HYPD_BIN:-$REPO/.build/debug/smmu-hypd}")
ROUNDS=${1:-10}
PID1_CONFIG_SED="s/^fd_store: .*/fd_store: true/;s/delay_ms: .*/delay_ms: 200/"
# Twenty restarts in a minute: the unit's start limit (10 in 60 s, for crash loops) would stop it.
PID1_UNIT_SED="s/^StartLimitIntervalSec=.*/StartLimitIntervalSec=0/"
source "$REPO/scripts/systemd-pid1.sh"
cp "$REPO/scripts/restart-clients.py" "$WORK/"
grep -q '^fd_store: true' "$WORK/smmu-hypd.yaml" || fail "the config has no fd_store key to turn on"
grep -q '^StartLimitIntervalSec=0' "$WORK/smmu-hypd.service" || fail "the unit has no start limit to lift"

in_ns timeout 60 systemctl start smmu-hypd || fail "systemctl start smmu-hypd"
in_ns timeout 600 python3 "$WORK/restart-clients.py" "$WORK" "$ROUNDS" || fail "restart-clients.py"
in_ns journalctl -u smmu-hypd --no-pager -o cat > "$WORK/daemon.log"
restored=$(grep -c "restored from the fd store" "$WORK/daemon.log" || true)
echo "restart-test: the journal shows $restored restores"
[ "$restored" -ge $((2 * ROUNDS)) ] || fail "only $restored restores logged for $((2 * ROUNDS)) restarts"
# What checkpoints cost on the serial queue and what each restore replayed (benchmark figures); asserted: no RAM
# copied into a checkpoint, and no replay that diverged.
python3 "$REPO/scripts/restart-summary.py" restart-test "$WORK/daemon.log" || fail "restart-summary.py"

# An explicit stop is a clean end: exit 0, and the store is dropped (the connection closes, nothing restores).
in_ns python3 - "$WORK" <<'PY' &
import sys, time
sys.path.insert(0, sys.argv[1])
from smmu_client import SMMUClient, Role
c = SMMUClient("/run/smmu-hypd/smmu-hypd.sock")
c.hello(Role.HOST, "stop-witness")
print("restart-test: stop witness connected", flush=True)
assert c.wait_closed(timeout=30), "the connection stayed open after systemctl stop"
print("restart-test: systemctl stop closed the witness's connection", flush=True)
PY
WITNESS=$!
sleep 1
in_ns timeout 30 systemctl stop smmu-hypd || fail "systemctl stop"
result=$(in_ns systemctl show -p Result --value smmu-hypd)
[ "$result" = success ] || fail "stop result $result"
wait "$WITNESS" || fail "the witness's connection did not close on stop"
in_ns timeout 60 systemctl start smmu-hypd || fail "start after stop"
journal_has "restart mode: journal stored" || fail "no fresh start after the stop"
echo "restart-test: PASS"

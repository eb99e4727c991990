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
# What checkpoints cost on the serial queue, and what each restore replayed (benchmark figures, not asserted).
python3 - "$WORK/daemon.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")
cps = [(int(b), float(e), float(f)) for b, e, f in re.findall(
    r"checkpoint \d+: (\d+) bytes, .*?capture and encode [\d.]+ ms .*?; ([\d.]+) ms of CPU\), file and store [\d.]+ ms \(([\d.]+) ms of CPU\)", text)]
for line in re.findall(r"checkpoint \d+: \d+ bytes.*", text)[:3]:
    print("restart-test: " + line)
if cps:
    enc, sto, size = [c[1] for c in cps], [c[2] for c in cps], [c[0] for c in cps]
    print(f"restart-test: {len(cps)} checkpoints of {min(size)}..{max(size)} bytes, CPU time: capture and encode p50 "
          f"{pct(enc, 50):.2f} ms, max {max(enc):.2f} ms; sealed file and store p50 {pct(sto, 50):.2f} ms, "
          f"max {max(sto):.2f} ms")
else:
    print("restart-test: no checkpoint was taken")
# RAM is in the stored ram.<i> memfds: a checkpoint copies none, so its cost does not depend on RAM contents (G8;
# `smmu-bench --state-image-only` prints the checkpoint of the worst state, every RAM page written). Asserted.
ram = [int(n) for n in re.findall(r"checkpoint \d+: .*?; (\d+) RAM pages", text)]
print(f"restart-test: RAM pages copied into checkpoints: max {max(ram) if ram else 0} (RAM lives in the stored memfds)")
if any(ram):
    sys.exit("restart-test: FAIL: a checkpoint copied RAM")
def seconds(s):
    return float(s.split()[0]) * (1 if s.endswith("seconds") else 1e-3 if s.endswith("ms") else 1e-6)
restores = [(int(n), seconds(t)) for n, t in re.findall(
    r"restored from the fd store: generation \d+.*?, (\d+) journal records replayed, ([\d.e-]+ \w+) in all", text)]
images = [seconds(t) for t in re.findall(r"checkpoint \d+ restored in ([\d.e-]+ \w+)", text)]
if restores:
    n, t = [r[0] for r in restores], [r[1] * 1000 for r in restores]
    print(f"restart-test: per restore, journal records replayed p50 {pct(n, 50)}, max {max(n)}; replay p50 "
          f"{pct(t, 50):.0f} ms, max {max(t):.0f} ms")
if images:
    i = [x * 1000 for x in images]
    print(f"restart-test: checkpoint decode and restore p50 {pct(i, 50):.0f} ms, max {max(i):.0f} ms over {len(i)}")
PY

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

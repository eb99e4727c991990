#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A real Linux guest as smmu-hypd's EL1 client. Builds QEMU with the smmu-hypd device and fetches
# Debian's arm64 kernel (both cached), starts smmu-hypd with Config/qemu-virt.yaml, waits until it
# is finalized (the guest must never run before), boots the guest with a virtio-rng-pci master
# and a virtio-blk-pci disk behind the SMMU (32 MiB written and read back with O_DIRECT, strict
# invalidation, every cached translation checked against the daemon), injects faults, and checks
# what the guest's stock arm-smmu driver and the daemon report. Prints PASS/FAIL per check; the guest's console log is kept as an artifact.
#
# Environment: SMMU_HYPD_BIN (default .build/debug/smmu-hypd), SMMU_HYPD_ARTIFACTS (default
# .build/qemu-guest), SMMU_HYPD_CACHE (default ~/.cache/smmu-hypd), SMMU_HYPD_STANDIN=1 to run
# against qemu/standin-daemon.py instead (device development only: no policy, no journal),
# SMMU_HYPD_TRACE=FILE where the daemon's trace of the run goes (default $ART/guest-test.smmutrace; it is
# replayed as the last check), SMMU_HYPD_TRACE_MAX_BYTES its bound (256 MiB), SMMUCTL_BIN (beside the daemon).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ART=${SMMU_HYPD_ARTIFACTS:-$ROOT/.build/qemu-guest}
DAEMON=${SMMU_HYPD_BIN:-$ROOT/.build/debug/smmu-hypd}
MEM_MB=512
WIRE="python3 $HERE/wire.py"
mkdir -p "$ART"
ART=$(cd "$ART" && pwd)
CONSOLE=$ART/guest-console.log
QEMU_LOG=$ART/qemu-stderr.log
DAEMON_LOG=$ART/smmu-hypd.log
rm -f "$ART"/*.log

TMP=$(mktemp -d /tmp/smmu-hypd-guest.XXXXXX)
SOCK=$TMP/smmu-hypd.sock
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FAILS=0
RESULTS=()
check() {   # check NAME CONDITION-STATUS DETAIL
    if [ "$2" -eq 0 ]; then RESULTS+=("PASS  $1: $3"); else RESULTS+=("FAIL  $1: $3"); FAILS=$((FAILS + 1)); fi
}
say() { echo "guest-test: $*" >&2; }
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

T0=$(date +%s)
say "building QEMU (cached after the first run)"
QEMU=$("$HERE/build-qemu.sh" | tail -n1) || die "QEMU build failed"
say "fetching the guest kernel and busybox (cached)"
read -r KERNEL INITRD < <("$HERE/fetch-guest.sh" | tail -n1)
[ -f "${KERNEL:-}" ] && [ -f "${INITRD:-}" ] || die "guest fetch failed"

# journald receives the daemon's audit records; start one if none listens (CI has one). A socket
# file alone proves nothing: a journald that exited leaves it behind.
journald_listening() {
    python3 -c 'import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).connect("/run/systemd/journal/socket")' 2>/dev/null
}
if [ -z "${SMMU_HYPD_STANDIN:-}" ] && ! journald_listening; then
    mkdir -p /run/systemd/journal
    /lib/systemd/systemd-journald >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do journald_listening && break; sleep 0.1; done
fi

QEMU_ARGS=(-M virt,memory-backend=ram0 -cpu cortex-a57 -m $MEM_MB -smp 1
    -object memory-backend-memfd,id=ram0,size=${MEM_MB}M,share=on,seal=on
    -nographic -no-reboot -nic none -monitor none
    -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyAMA0 panic=-1 loglevel=7 iommu.strict=1")
# The block master: a sparse raw disk, behind the SMMU like the rng.
truncate -s 64M "$TMP/disk.img"
DISK_ARGS=(-drive "file=$TMP/disk.img,if=none,format=raw,id=disk0"
    -device virtio-blk-pci,drive=disk0,iommu_platform=on,disable-legacy=on)

if [ -z "${SMMU_HYPD_STANDIN:-}" ]; then
    # G1 from the guest's side: before finalization the SMMU must not be reachable at all, and a
    # guest cannot be told "defer", so the device refuses to start against an unfinalized daemon.
    [ -x "$DAEMON" ] || die "no smmu-hypd binary at $DAEMON (build it, or set SMMU_HYPD_BIN)"
    sed -e "s|^\( *socket:.*path: *\)[^,}]*|\1$TMP/early.sock|" \
        -e "s|^finalization:.*|finalization: { mode: manual }|" "$ROOT/Config/qemu-virt.yaml" > "$TMP/early.yaml"
    "$DAEMON" --config "$TMP/early.yaml" >"$ART/smmu-hypd-early.log" 2>&1 &
    EARLY_PID=$!
    for _ in $(seq 100); do [ -S "$TMP/early.sock" ] && break; sleep 0.1; done
    timeout 60 "$QEMU" "${QEMU_ARGS[@]}" -serial "file:$ART/guest-console-early.log" \
        -device smmu-hypd,socket=$TMP/early.sock -device virtio-rng-pci,iommu_platform=on,disable-legacy=on \
        >"$ART/qemu-stderr-early.log" 2>&1
    early_rc=$?
    kill $EARLY_PID 2>/dev/null; wait $EARLY_PID 2>/dev/null
    early_msg=$(grep -o "the daemon is not finalized.*" "$ART/qemu-stderr-early.log" | head -n1)
    [ $early_rc -ne 0 ] && [ -n "$early_msg" ] && [ ! -s "$ART/guest-console-early.log" ]
    check "no guest before finalization" $? "QEMU exit $early_rc: ${early_msg:-$(head -c 300 "$ART/qemu-stderr-early.log")}"
fi

SINCE=$(date '+%Y-%m-%d %H:%M:%S')
if [ -n "${SMMU_HYPD_STANDIN:-}" ]; then
    say "starting the stand-in daemon (development aid, not smmu-hypd)"
    python3 "$HERE/standin-daemon.py" "$SOCK" >"$DAEMON_LOG" 2>&1 &
else
    sed "s|^\( *socket:.*path: *\)[^,}]*|\1$SOCK|" "$ROOT/Config/qemu-virt.yaml" > "$TMP/qemu-virt.yaml"
    # The daemon records the whole run (docs/trace-format.md), replayed on a fresh daemon at the end.
    TRACE=${SMMU_HYPD_TRACE:-$ART/guest-test.smmutrace}
    TRACE_ARGS=(--trace "$TRACE" --trace-max-bytes "${SMMU_HYPD_TRACE_MAX_BYTES:-268435456}")
    say "starting $DAEMON --config $TMP/qemu-virt.yaml ${TRACE_ARGS[*]}"
    "$DAEMON" --config "$TMP/qemu-virt.yaml" "${TRACE_ARGS[@]}" >"$DAEMON_LOG" 2>&1 &
fi
DAEMON_PID=$!
PIDS+=($DAEMON_PID)

# The seed's point: no host access before pKVM is finalized. The guest starts after READY.
HELLO=$($WIRE "$SOCK" wait-ready 20) || { cat "$DAEMON_LOG" >&2; die "smmu-hypd never finalized: $HELLO"; }
say "daemon finalized: $HELLO"
read -r HOST_CB HOST_SMR WIN_BASE < <(python3 -c '
import json, sys
ws = json.loads(sys.argv[1])["windows"]
if ws:
    print(ws[0]["num_cb"], ws[0]["num_smrg"], ws[0]["base"])' "$HELLO")
[ -n "${WIN_BASE:-}" ] || die "the daemon's HELLO lists no SMMU window"

say "booting the guest (console: $CONSOLE)"
timeout 180 "$QEMU" "${QEMU_ARGS[@]}" -serial "file:$CONSOLE" \
    -device smmu-hypd,socket=$SOCK,name=guest-test,verify-cache=on,ring=on \
    -device virtio-rng-pci,iommu_platform=on,disable-legacy=on "${DISK_ARGS[@]}" \
    2>"$QEMU_LOG" &
QEMU_PID=$!
PIDS+=($QEMU_PID)

if wait_for "$CONSOLE" "GUEST: waiting for faults" 300 $QEMU_PID; then
    # A master faults: stream 0x8 is virtio-rng-pci (00:01.0), attached by the guest driver to a
    # context bank; an IOVA nothing maps gives a translation fault in that bank. Stream 0x7f
    # matches no SMR the guest wrote: an unidentified-stream global fault.
    CTX_FAULT=$($WIRE "$SOCK" dma 0 0x8 0xdead0000 write)
    GLOBAL_FAULT=$($WIRE "$SOCK" dma 0 0x7f 0x1000)
    say "injected: context fault $CTX_FAULT, global fault $GLOBAL_FAULT"
else
    say "the guest never reached its fault wait"
fi
# A host write the policy refuses: SCTLR of context bank 12, one the hypervisor keeps hidden.
HIDDEN_CB=12
DENIED_ADDR=$(printf '0x%x' $((WIN_BASE + 0x800000 + HIDDEN_CB * 0x10000)))
DENIED_CLIENT=guest-test-denied-$$
DENIED=$(WIRE_NAME=$DENIED_CLIENT $WIRE "$SOCK" write "$DENIED_ADDR" 0x1 4)
say "write to hidden context bank $HIDDEN_CB SCTLR ($DENIED_ADDR): $DENIED"

wait_for "$CONSOLE" "reboot: Power down" 60 $QEMU_PID || { say "the guest did not power off: stopping it"; kill $QEMU_PID 2>/dev/null; }
wait $QEMU_PID 2>/dev/null
STATS=$($WIRE "$SOCK" stats 2>&1)
echo "$STATS" > "$ART/smmu-hypd-stats.json"

# ---- checks: the guest's console is the judge ----
grep -a "smmu\|SMMU\|GUEST:\|iommu" "$CONSOLE" > "$TMP/relevant" 2>/dev/null

line=$(grep -a "SMMUv2 with:" "$CONSOLE" | head -n1)
check "driver probed" $([ -n "$line" ]; echo $?) "${line:-no \"SMMUv2 with:\" on the console}"

cb_line=$(grep -a "context banks" "$CONSOLE" | head -n1)
smr_line=$(grep -a "stream matching with" "$CONSOLE" | head -n1)
echo "$cb_line" | grep -q "[^0-9]$HOST_CB context banks"
check "host-visible context banks ($HOST_CB)" $? "${cb_line:-none printed}"
echo "$smr_line" | grep -q "with $HOST_SMR register groups"
check "host-visible SMRs ($HOST_SMR)" $? "${smr_line:-none printed}"

grp=$(grep -a "GUEST: iommu group" "$CONSOLE" | head -n1)
add=$(grep -a "Adding to iommu group" "$CONSOLE" | head -n1)
check "master joined an IOMMU group" $([ -n "$grp" ] && [ -n "$add" ]; echo $?) "${add:-no} / ${grp:-no group in sysfs}"

rng=$(grep -a "GUEST: hwrng read" "$CONSOLE" | head -n1)
# A host's STATS count its own streams' DMA: translations less faults are the ones that went through.
dma_ok=$(python3 -c '
import json, sys
try:
    stats = json.loads(sys.argv[1])
except ValueError:
    print(0); sys.exit()
print(int(stats.get("dma_translations", 0)) - sum(stats.get("faults_by_kind", {}).values()))' "$STATS")
echo "$rng" | grep -q "read 32 hex digits" && [ "${dma_ok:-0}" -gt 0 ]
check "hwrng bytes came through daemon-translated DMA" $? "${rng:-no hwrng read}; daemon DMA OK count $dma_ok"

# The block workload: data verified, no fault while it ran, and no cached translation the daemon
# disagreed with (verify-cache=on asks the daemon on every cache hit as well).
blk=$(grep -a "GUEST: blk round 1 " "$CONSOLE" | head -n1)
blk_written=$(echo "$blk" | sed -n 's/.* written \([0-9a-f]*\) read \([0-9a-f]*\).*/\1/p')
blk_read=$(echo "$blk" | sed -n 's/.* written \([0-9a-f]*\) read \([0-9a-f]*\).*/\2/p')
[ -n "$blk_written" ] && [ "$blk_written" = "$blk_read" ] && grep -aq "GUEST: blk start.*strict=DMA" "$CONSOLE" && ! grep -aq "strict=DMA-FQ" "$CONSOLE"
check "virtio-blk: 32 MiB O_DIRECT written and read back intact, strict invalidation" $? \
    "${blk:-no block round on the console} ($(grep -a "GUEST: blk start" "$CONSOLE" | sed 's/.*strict=/domain type /'))"
blk_faults=$(sed -n '/GUEST: blk start/,/GUEST: blk done/p' "$CONSOLE" | grep -ac "context fault\|global fault\|Unexpected\|Blocked")
dev_faults=$(grep -c "smmu-hypd: DMA stream" "$QEMU_LOG")
[ -n "$blk" ] && [ "$blk_faults" -eq 0 ] && [ "$dev_faults" -eq 0 ]
check "no arm-smmu or DMA fault during the block workload" $? "$blk_faults fault lines on the console, $dev_faults faulted device DMAs"
summary=$(grep -a "translation cache:" "$QEMU_LOG" | tail -n1)
verified=$(echo "$summary" | sed -n 's/.*verified \([0-9]*\) hits.*/\1/p')
stale=$(echo "$summary" | sed -n 's/.* \([0-9]*\) stale.*/\1/p')
[ "${verified:-0}" -gt 0 ] && [ "${stale:-1}" -eq 0 ] && ! grep -q "STALE" "$QEMU_LOG"
check "stale-translation check: every cached translation the device used agreed with the daemon" $? \
    "${summary:-no cache summary from the device}"

ctx=$(grep -a "Unhandled context fault" "$CONSOLE" | head -n1)
glob=$(grep -a "Blocked unknown Stream ID\|Unexpected global fault" "$CONSOLE" | head -n1)
raised_ctx=$(grep -c "context line [0-9]* -> SPI [0-9]* level 1" "$QEMU_LOG")
lowered_ctx=$(grep -c "context line [0-9]* -> SPI [0-9]* level 0" "$QEMU_LOG")
raised_glob=$(grep -c "global line 0 -> SPI [0-9]* level 1" "$QEMU_LOG")
lowered_glob=$(grep -c "global line 0 -> SPI [0-9]* level 0" "$QEMU_LOG")
[ -n "$ctx" ] && [ "$raised_ctx" -gt 0 ] && [ "$lowered_ctx" -gt 0 ]
check "context fault reached the guest handler, its FSR W1C lowered the line" $? \
    "${ctx:-no handler output}; line raised $raised_ctx, lowered $lowered_ctx"
[ -n "$glob" ] && [ "$raised_glob" -gt 0 ] && [ "$lowered_glob" -gt 0 ]
check "global fault reached the guest handler, its sGFSR W1C lowered the line" $? \
    "${glob:-no handler output}; line raised $raised_glob, lowered $lowered_glob"

if [ -n "${SMMU_HYPD_STANDIN:-}" ]; then
    RESULTS+=("SKIP  refused write audited: the stand-in has no policy")
else
    # The record of exactly this write: its client name is unique to this run.
    audit=$(journalctl -o json --since "$SINCE" --no-pager SMMU_CLIENT="$DENIED_CLIENT" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if "SMMU_RULE" in e and e.get("PRIORITY") == "4":
        print("SMMU_RULE=%s SMMU_REGISTER=%s MESSAGE_ID=%s" % (e["SMMU_RULE"], e.get("SMMU_REGISTER", ""),
                                                             e.get("MESSAGE_ID", "")))
        break')
    echo "$DENIED" | grep -q DENIED && [ -n "$audit" ]
    check "refused write audited in the journal" $? "$DENIED_ADDR: $DENIED; journal: ${audit:-no SMMU_RULE record for SMMU_CLIENT=$DENIED_CLIENT}"

    # Record and replay: the daemon stops (its trace ends complete) and the whole run, guest and fault injections,
    # is replayed on a fresh daemon, every answer compared.
    kill "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
    SMMUCTL=${SMMUCTL_BIN:-$(dirname "$DAEMON")/smmuctl}
    "$SMMUCTL" replay "$TRACE" --daemon "$DAEMON" >"$ART/replay.log" 2>&1
    replay_rc=$?
    check "the run's trace ($(stat -c %s "$TRACE" 2>/dev/null || echo 0) bytes) replays identically on a fresh daemon" $replay_rc \
        "$(head -c 1500 "$ART/replay.log")"
fi

echo
echo "== smmu-hypd QEMU guest test ($(($(date +%s) - T0)) s) =="
echo "guest console: $CONSOLE"
echo "QEMU stderr:   $QEMU_LOG"
echo "daemon log:    $DAEMON_LOG (STATS: $ART/smmu-hypd-stats.json)"
echo "-- guest console, SMMU lines --"
sed 's/^/    /' "$TMP/relevant"
echo "-- daemon STATS (operations by opcode and status) --"
python3 -c '
import json, sys
try:
    ops = json.loads(sys.argv[1]).get("operations", {})
except (ValueError, AttributeError):
    ops = {}
for op in sorted(ops):
    print("    %-10s %s" % (op, " ".join("%s=%s" % kv for kv in sorted(ops[op].items()))))' "$STATS"
echo "-- results --"
printf '%s\n' "${RESULTS[@]}"
SERVER="smmu-hypd"
[ -n "${SMMU_HYPD_STANDIN:-}" ] && SERVER="the stand-in (qemu/standin-daemon.py, not smmu-hypd)"
if [ $FAILS -eq 0 ]; then echo "PASS: the stock arm-smmu driver probed and worked through $SERVER"; else echo "FAIL: $FAILS check(s) failed against $SERVER"; fi
[ $FAILS -eq 0 ]

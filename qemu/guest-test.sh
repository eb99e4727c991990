#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A real Linux guest as smmu-hypd's EL1 client. Builds QEMU with the smmu-hypd device and fetches
# Debian's arm64 kernel (both cached), starts smmu-hypd with Config/qemu-virt.yaml, waits until it
# is finalized (the guest must never run before), boots the guest with a virtio-rng-pci master
# and a virtio-blk-pci disk behind the SMMU (32 MiB written and read back with O_DIRECT, strict
# invalidation, every cached translation checked against the daemon), injects faults, and checks
# what the guest's stock arm-smmu driver and the daemon report. Prints PASS/FAIL per check; the guest's console log is kept as an artifact.
#
# Two guests (the argument):
#   stock  Debian's arm64 kernel, which knows nothing of pKVM. The daemon (finalization.mode: host)
#          is finalized by the QEMU device at realize (finalize=realize), before the guest's first
#          instruction: the emulator's signal, so the SMMU is EL2's before any initcall runs.
#   pkvm   the project's kernel (qemu/build-kernel.sh: Linux 6.1 + qemu/kernel/patches) running
#          pKVM (-M virt,virtualization=on, kvm-arm.mode=protected). The guest starts against an
#          un-finalized daemon; arm-smmu defers its probe (the seed's check) until finalize_pkvm()
#          writes the device's doorbell (finalize=guest), which is the daemon's finalization.
#
# Environment: SMMU_HYPD_BIN (default .build/debug/smmu-hypd), SMMU_HYPD_ARTIFACTS (default
# .build/qemu-guest, .build/qemu-guest-pkvm), SMMU_HYPD_CACHE (default ~/.cache/smmu-hypd),
# SMMU_HYPD_STANDIN=1 to run against qemu/standin-daemon.py instead (stock only; device
# development only: no policy, no journal), SMMU_HYPD_TRACE=FILE where the daemon's trace of the
# run goes (default $ART/guest-test.smmutrace; it is replayed as the last check),
# SMMU_HYPD_TRACE_MAX_BYTES its bound (256 MiB), SMMUCTL_BIN (beside the daemon).
set -u
MODE=${1:-stock}
case "$MODE" in stock | pkvm) ;; *) echo "usage: $0 [stock|pkvm]" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ART_DEFAULT=$ROOT/.build/qemu-guest
[ "$MODE" = pkvm ] && ART_DEFAULT=$ROOT/.build/qemu-guest-pkvm
ART=${SMMU_HYPD_ARTIFACTS:-$ART_DEFAULT}
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
TAG=guest-test
source "$HERE/guest-lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$(date +%s)
say "building QEMU (cached after the first run)"
QEMU=$("$HERE/build-qemu.sh" | tail -n1) || die "QEMU build failed"
say "fetching the guest kernel and busybox (cached)"
read -r KERNEL INITRD < <("$HERE/fetch-guest.sh" | tail -n1)
[ -f "${KERNEL:-}" ] && [ -f "${INITRD:-}" ] || die "guest fetch failed"
MACHINE=virt,memory-backend=ram0
APPEND="console=ttyAMA0 panic=-1 loglevel=7 iommu.strict=1"
DEVICE_FINALIZE=realize
if [ "$MODE" = pkvm ]; then
    [ -z "${SMMU_HYPD_STANDIN:-}" ] || die "the pkvm guest needs smmu-hypd (PROT_FINALIZE), not the stand-in"
    say "building the project's guest kernel (cached after the first run)"
    KERNEL=$("$HERE/build-kernel.sh" | tail -n1)
    [ -f "${KERNEL:-}" ] || die "guest kernel build failed"
    # The busybox initramfs is shared: its insmod lines fail harmlessly (everything is built in).
    MACHINE=$MACHINE,virtualization=on
    APPEND="console=ttyAMA0 panic=-1 loglevel=8 iommu.strict=1 kvm-arm.mode=protected"
    DEVICE_FINALIZE=guest
fi

[ -z "${SMMU_HYPD_STANDIN:-}" ] && ensure_journald

QEMU_ARGS=(-M "$MACHINE" -cpu cortex-a57 -m $MEM_MB -smp 1
    -object memory-backend-memfd,id=ram0,size=${MEM_MB}M,share=on,seal=on
    -nographic -no-reboot -nic none -monitor none -msg timestamp=on
    -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND")
# The block master: a sparse raw disk, behind the SMMU like the rng.
truncate -s 64M "$TMP/disk.img"
DISK_ARGS=(-drive "file=$TMP/disk.img,if=none,format=raw,id=disk0"
    -device virtio-blk-pci,drive=disk0,iommu_platform=on,disable-legacy=on)

if [ -z "${SMMU_HYPD_STANDIN:-}" ] && [ "$MODE" = stock ]; then
    # G1 from the guest's side: before finalization the SMMU must not be reachable at all, and a
    # guest cannot be told "defer", so by default (finalize=ready) the device refuses to start
    # against an unfinalized daemon.
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
    # The daemon finalizes on the host's PROT_FINALIZE: the device's at realize (stock) or the
    # guest kernel's finalize_pkvm() through the doorbell (pkvm). Its sd_notify messages go to a
    # listener of ours, with the time each arrived, so READY=1 is seen to follow that moment.
    sed -e "s|^\( *socket:.*path: *\)[^,}]*|\1$SOCK|" -e "s|^finalization:.*|finalization: { mode: host }|" \
        "$ROOT/Config/qemu-virt.yaml" > "$TMP/qemu-virt.yaml"
    python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    m = s.recv(4096).decode("utf-8", "replace").replace("\n", " ")
    print("%.6f %s" % (time.time(), m), flush=True)' "$TMP/notify.sock" > "$ART/sd-notify.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do [ -S "$TMP/notify.sock" ] && break; sleep 0.1; done
    # The daemon records the whole run (docs/trace-format.md), replayed on a fresh daemon at the end.
    TRACE=${SMMU_HYPD_TRACE:-$ART/guest-test.smmutrace}
    TRACE_ARGS=(--trace "$TRACE" --trace-max-bytes "${SMMU_HYPD_TRACE_MAX_BYTES:-268435456}")
    say "starting $DAEMON --config $TMP/qemu-virt.yaml (finalization.mode: host) ${TRACE_ARGS[*]}"
    # FDSTORE=0: not in restart mode, so this test keeps the daemon's plain path under a real guest (anonymous RAM,
    # no journal, the ring served without journaling); restart mode, ring included, has its own guest test under
    # systemd (scripts/systemd-restart-guest-test.sh), and this script's notify socket answers no BARRIER=1.
    FDSTORE=0 NOTIFY_SOCKET=$TMP/notify.sock "$DAEMON" --config "$TMP/qemu-virt.yaml" "${TRACE_ARGS[@]}" >"$DAEMON_LOG" 2>&1 &
fi
DAEMON_PID=$!
PIDS+=($DAEMON_PID)

# The seed's point: no host access before pKVM is finalized. The stand-in is always "finalized";
# smmu-hypd is not when the guest starts: the guest's side finalizes it.
if [ -n "${SMMU_HYPD_STANDIN:-}" ]; then
    HELLO=$($WIRE "$SOCK" wait-ready 20) || { cat "$DAEMON_LOG" >&2; die "the stand-in never answered: $HELLO"; }
else
    HELLO=$($WIRE "$SOCK" hello 20) || { cat "$DAEMON_LOG" >&2; die "smmu-hypd never answered: $HELLO"; }
    state_at_start=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["state"])' "$HELLO")
    ready_at_start=$(grep -c "READY=1" "$ART/sd-notify.log")
    [ "$state_at_start" = 0 ] && [ "$ready_at_start" = 0 ]
    check "daemon not finalized and no READY=1 when the guest starts" $? "HELLO state $state_at_start, READY=1 messages $ready_at_start"
fi
say "daemon: $HELLO"
read -r HOST_CB HOST_SMR WIN_BASE < <(python3 -c '
import json, sys
ws = json.loads(sys.argv[1])["windows"]
if ws:
    print(ws[0]["num_cb"], ws[0]["num_smrg"], ws[0]["base"])' "$HELLO")
[ -n "${WIN_BASE:-}" ] || die "the daemon's HELLO lists no SMMU window"

say "booting the guest (console: $CONSOLE)"
timeout 180 "$QEMU" "${QEMU_ARGS[@]}" -serial "file:$CONSOLE" \
    -pidfile "$TMP/qemu.pid" -device smmu-hypd,socket=$SOCK,name=guest-test,verify-cache=on,ring=on,finalize=$DEVICE_FINALIZE \
    -device virtio-rng-pci,iommu_platform=on,disable-legacy=on "${DISK_ARGS[@]}" \
    2>"$QEMU_LOG" &
QEMU_PID=$!
PIDS+=($QEMU_PID)
# QEMU's own pid (QEMU_PID is timeout's), the peer the daemon sees; QEMU removes the file at exit.
for _ in $(seq 100); do QEMU_REAL_PID=$(cat "$TMP/qemu.pid" 2>/dev/null) && [ -n "$QEMU_REAL_PID" ] && break; sleep 0.05; done

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
    audit=$(audit_record "$SINCE" "$DENIED_CLIENT")
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

# ---- finalization: who did it, when READY=1 came, and that nothing reached the SMMU before ----
if [ -z "${SMMU_HYPD_STANDIN:-}" ]; then
    if [ "$MODE" = pkvm ]; then
        moment=$(grep -a "PROT_FINALIZE sent (the guest's pKVM finalization, doorbell)" "$QEMU_LOG" | head -n1)
        answer=$(grep -a "the guest's pKVM finalization (doorbell): PROT_FINALIZE" "$QEMU_LOG" | head -n1)
        pkvm_on=$(grep -a "Protected nVHE mode initialized successfully" "$CONSOLE" | head -n1)
        check "pKVM runs in the guest" $([ -n "$pkvm_on" ]; echo $?) "${pkvm_on:-no \"Protected nVHE mode initialized successfully\"}"
        # The seed's order, from the guest's own log: deferral, the donation to EL2 (the doorbell),
        # host de-privileged, then the probe.
        order=$(python3 -c '
import sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
want = ["Deferring probe until pKVM is initialized", "SMMU MMIO donated to EL2 (smmu-hypd finalized)",
        "pKVM finalized: host de-privileged", "SMMUv2 with:"]
at = [next((i for i, l in enumerate(lines) if w in l), None) for w in want]
if None in at or at != sorted(at):
    print("FAIL: " + ", ".join("%s at line %s" % (w, a) for w, a in zip(want, at)))
else:
    print(" -> ".join(lines[a].strip() for a in at))' "$CONSOLE")
        case "$order" in FAIL*) false ;; *) true ;; esac
        check "arm-smmu deferred until the guest's pKVM finalized, then probed" $? "$order"
        echo "$answer" | grep -q "PROT_FINALIZE OK"
        check "the guest's finalize_pkvm() finalized the daemon (doorbell -> PROT_FINALIZE)" $? "${answer:-no doorbell write in $QEMU_LOG}"
    else
        moment=$(grep -a "PROT_FINALIZE sent (finalize=realize)" "$QEMU_LOG" | head -n1)
        answer=$(grep -a "finalized the daemon at realize, before the guest's first instruction" "$QEMU_LOG" | head -n1)
        deferring=$(grep -ac "Deferring probe" "$CONSOLE")
        [ -n "$answer" ] && [ "$deferring" -eq 0 ]
        check "emulator signal: the device finalized the daemon at realize (no pKVM in this guest)" $? \
            "${answer:-no realize finalization in $QEMU_LOG}; deferral lines $deferring"
    fi
    # The late-initcall rule: finalization came before the masters could give up waiting for the
    # SMMU (they bind without it once late initcalls are done), so none did.
    gave_up=$(grep -a "deferred probe timeout\|ignoring dependency" "$CONSOLE" | head -n1)
    [ -z "$gave_up" ] && [ -n "$add" ]
    check "no master gave up waiting for the SMMU (finalized before late initcalls)" $? "${gave_up:-none gave up; ${add:-but no master joined a group}}"
    verdict=$(python3 -c '
import datetime, json, re, sys
stats, notify, moment, qemu_pid = json.loads(sys.argv[1]), open(sys.argv[2]).read().splitlines(), sys.argv[3], sys.argv[4]
by = stats.get("finalized_by", {})
ops = stats.get("operations", {})
deferred = sum(ops.get(op, {}).get("DEFERRED", 0) for op in ("READ", "WRITE"))
served = sum(ops.get(op, {}).get("OK", 0) for op in ("READ", "WRITE"))
ready = [float(l.split()[0]) for l in notify if "READY=1" in l]
m = re.match(r"(\S+Z)", moment)
at = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp() if m else None
problems = []
if by.get("by") != "host" or by.get("client") != "guest-test" or str(by.get("pid")) != qemu_pid:
    problems.append("finalized_by %s, not the host guest-test (QEMU pid %s)" % (by, qemu_pid))
if deferred != 0 or served == 0:
    problems.append("%d register accesses DEFERRED (before finalization), %d served after" % (deferred, served))
if len(ready) != 1 or at is None or ready[0] < at:
    problems.append("READY=1 at %s, finalization at %s" % (ready, at))
print(("FAIL: " + "; ".join(problems)) if problems else
      "finalized_by %s; 0 register accesses before finalization (READ/WRITE DEFERRED 0), %d after; "
      "READY=1 %.1f ms after the device sent PROT_FINALIZE" % (json.dumps(by, sort_keys=True), served, 1000 * (ready[0] - at)))' \
        "$STATS" "$ART/sd-notify.log" "$moment" "${QEMU_REAL_PID:-}" 2>&1)
    case "$verdict" in FAIL* | Traceback*) false ;; *) true ;; esac
    check "no SMMU access before finalization; READY=1 only after the $MODE guest's side finalized" $? "$verdict"
fi

echo
echo "== smmu-hypd QEMU guest test, $MODE kernel ($(($(date +%s) - T0)) s) =="
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
if [ $FAILS -eq 0 ]; then echo "PASS: the $MODE kernel's arm-smmu driver probed and worked through $SERVER"; else echo "FAIL: $FAILS check(s) failed against $SERVER ($MODE kernel)"; fi
[ $FAILS -eq 0 ]

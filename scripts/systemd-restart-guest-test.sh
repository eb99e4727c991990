#!/bin/bash
# Restart and crash survival with a real guest: scripts/systemd-restart-test.sh's 64 pipelining clients, ten
# `systemctl restart` and ten `kill -9` (scripts/restart-clients.py), while a QEMU guest (qemu/guest-init.sh, Debian's
# stock arm64 kernel and its arm-smmu driver) writes 32 MiB to a virtio-blk disk behind the SMMU with O_DIRECT, drops
# caches, reads it back and checks the md5, round after round, through every restart. systemd runs as PID 1
# (scripts/systemd-pid1.sh) and QEMU inside its namespace, on the unit's socket; the config is Config/qemu-virt.yaml
# (the guest's 512 MiB host_ram, plus a region the guest does not have for the clients' pages), fd_store on.
# Each restart and each kill is done twice: with the guest running (its DMA in flight), and with its vCPU and devices
# stopped over QMP, across which DUMP must be equal (a running driver writes registers all the time).
# Checks: the clients' (every answer in order, no connection closed, DUMP equal), every completed block round
# verified, at least one round ran entirely after the last restart and the workload was running before the first, no
# arm-smmu error, fault or I/O error on the guest's console, no faulted DMA in QEMU's log, QEMU still alive, no daemon
# end but the test's kills, no replay that diverged (scripts/restart-summary.py). Prints the downtime per restart
# (p50, p99: benchmark figures) and what the checkpoints and restores cost.
# Needs root, qemu/build-qemu.sh's QEMU and qemu/fetch-guest.sh's guest (cached).
# Usage: SMMU_HYPD_BIN=.build/debug/smmu-hypd scripts/systemd-restart-guest-test.sh [ROUNDS]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "${SMMU_HYPD_BIN:-$REPO/.build/debug/smmu-hypd}")
ROUNDS=${1:-10}
QEMU=$("$REPO/qemu/build-qemu.sh" | tail -n1)
read -r KERNEL INITRD < <("$REPO/qemu/fetch-guest.sh" | tail -n1)
[ -x "$QEMU" ] && [ -f "$KERNEL" ] && [ -f "$INITRD" ] || { echo "guest-restart: no QEMU or guest" >&2; exit 1; }
CLIENT_RAM=0x60000000
PID1_CONFIG=$REPO/Config/qemu-virt.yaml
# The unit's socket; finalization by delay (the device's default finalize=ready waits for it); the clients' RAM.
PID1_CONFIG_SED="s#^socket:.*#socket: { path: /run/smmu-hypd/smmu-hypd.sock, mode: 0660 }#;s/delay_ms: .*/delay_ms: 200 }/;s/^fd_store: .*/fd_store: true/;s/^watchdog: .*/watchdog: true/;/base: 0x40000000, size: 0x20000000/a\\    - { base: $CLIENT_RAM, size: 0x10000000 }"
PID1_UNIT_SED="s/^StartLimitIntervalSec=.*/StartLimitIntervalSec=0/"
source "$REPO/scripts/systemd-pid1.sh"
QEMU_PID=""
LOGS=$REPO/.build/restart-guest
# Before systemd-pid1.sh's cleanup (which removes WORK): stop QEMU, keep the logs.
guest_cleanup() {
    [ -z "$QEMU_PID" ] || { kill "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; } || true
    mkdir -p "$LOGS"
    in_ns journalctl -u smmu-hypd --no-pager -o cat > "$WORK/daemon.log" 2>/dev/null || true
    cp "$WORK"/guest-console.log "$WORK"/qemu-stderr.log "$WORK"/daemon.log "$WORK"/clients.log "$WORK"/dump-*.json "$LOGS/" 2>/dev/null || true
    cleanup
}
trap guest_cleanup EXIT
cp "$REPO/scripts/restart-clients.py" "$WORK/"
grep -q "base: $CLIENT_RAM" "$WORK/smmu-hypd.yaml" || fail "the config has no host_ram list to extend"
grep -q '^socket: { path: /run/smmu-hypd/smmu-hypd.sock' "$WORK/smmu-hypd.yaml" || fail "the config's socket"

in_ns timeout 60 systemctl start smmu-hypd || fail "systemctl start smmu-hypd"
truncate -s 64M "$WORK/disk.img"
CONSOLE=$WORK/guest-console.log
# ring=on: the device's MMIO and DMA go through shared-memory rings, journaled like the sockets (restart mode serves
# them). QEMU enters only the mount namespace (the unit's /run), so $! is QEMU itself.
nsenter -t "$SDPID" -m "$QEMU" -M virt,memory-backend=ram0 -cpu cortex-a57 -m 512 -smp 1 \
    -object memory-backend-memfd,id=ram0,size=512M,share=on,seal=on \
    -nographic -no-reboot -nic none -monitor none -msg timestamp=on -qmp "unix:$WORK/qmp.sock,server=on,wait=off" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyAMA0 panic=-1 loglevel=7 iommu.strict=1 blkrounds=100000" \
    -serial "file:$CONSOLE" -device smmu-hypd,socket=/run/smmu-hypd/smmu-hypd.sock,name=restart-guest,verify-cache=on,ring=on \
    -device virtio-rng-pci,iommu_platform=on,disable-legacy=on \
    -drive "file=$WORK/disk.img,if=none,format=raw,id=disk0" \
    -device virtio-blk-pci,drive=disk0,iommu_platform=on,disable-legacy=on 2>"$WORK/qemu-stderr.log" &
QEMU_PID=$!
rounds() { grep -ac "GUEST: blk round" "$CONSOLE" 2>/dev/null || true; }
for _ in $(seq 1200); do
    grep -aq "GUEST: blk round 1 " "$CONSOLE" 2>/dev/null && break
    kill -0 $QEMU_PID 2>/dev/null || { cat "$WORK/qemu-stderr.log" >&2; fail "QEMU exited before its first block round"; }
    sleep 0.1
done
grep -aq "GUEST: blk round 1 " "$CONSOLE" || fail "the guest never finished a block round"
echo "guest-restart: the guest's block workload runs: $(grep -a "GUEST: blk round 1 " "$CONSOLE")"
grep -q "MMIO and DMA through shared-memory rings" "$WORK/qemu-stderr.log" ||
    fail "the device is not on its rings: $(grep -m2 "ring" "$WORK/qemu-stderr.log")"

SMMU_RESTART_QMP=$WORK/qmp.sock SMMU_RESTART_HOST_RAM=$CLIENT_RAM \
    in_ns timeout 900 python3 "$WORK/restart-clients.py" "$WORK" "$ROUNDS" 2>&1 | tee "$WORK/clients.log" ||
    fail "restart-clients.py"
# A block round that starts after the last restart must finish and verify too.
after=$(rounds)
for _ in $(seq 1200); do [ "$(rounds)" -ge $((after + 2)) ] && break; sleep 0.1; done
kill -0 $QEMU_PID 2>/dev/null || fail "QEMU exited during the restarts: $(tail -n 5 "$WORK/qemu-stderr.log")"
kill $QEMU_PID; wait $QEMU_PID 2>/dev/null || true
QEMU_PID=""
total=$(rounds)
[ "$total" -ge $((after + 2)) ] || fail "no block round completed after the restarts ($total rounds)"
bad=$(grep -a "GUEST: blk round" "$CONSOLE" | tr -d '\r' | awk '$(NF-2) != $NF' | head -n 3)
[ -z "$bad" ] || fail "the guest's data did not verify: $bad"
echo "guest-restart: $total block rounds of 32 MiB (O_DIRECT write, drop caches, read, md5) all verified, $((total - after)) after the last restart"
errors=$(grep -ai "arm-smmu.*\(fault\|error\|timeout\|unexpected\|blocked\)\|I/O error\|blk_update_request\|timed out\|rcu.*stall\|BUG\|Oops\|GUEST: insmod" "$CONSOLE" | head -n 5 || true)
[ -z "$errors" ] || fail "the guest's console shows: $errors"
faulted=$(grep -c "smmu-hypd: DMA stream\|STALE" "$WORK/qemu-stderr.log" || true)
[ "$faulted" -eq 0 ] || fail "QEMU logged $faulted faulted or stale DMA translations: $(grep -m3 "smmu-hypd:" "$WORK/qemu-stderr.log")"
echo "guest-restart: the guest's console shows no arm-smmu error or fault and no I/O error; QEMU logged no faulted DMA"
grep -a "smmu-hypd" "$WORK/qemu-stderr.log" | grep -v "context line\|global line" | tail -n 5 | sed 's/^/guest-restart: qemu: /' || true

in_ns journalctl -u smmu-hypd --no-pager -o cat > "$WORK/daemon.log"
# systemd logs "Main process exited, code=killed, status=9/KILL" for the test's own kills; any other end is a failure.
grep -a "Watchdog timeout\|dumped core\|status=" "$WORK/daemon.log" | grep -v "status=9/KILL" &&
    fail "the daemon died other than by the test's kill -9"
restored=$(grep -c "restored from the fd store" "$WORK/daemon.log" || true)
echo "guest-restart: the journal shows $restored restores"
[ "$restored" -ge $((4 * ROUNDS)) ] || fail "only $restored restores logged for $((4 * ROUNDS)) restarts"
python3 "$REPO/scripts/restart-summary.py" guest-restart "$WORK/daemon.log" || fail "restart-summary.py"
echo "guest-restart: logs in $LOGS"
echo "guest-restart: PASS"

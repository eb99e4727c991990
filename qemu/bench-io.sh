#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The guest's block workload (qemu/guest-init.sh: 32 MiB written then read back with O_DIRECT on a
# virtio-blk-pci disk with iommu_platform=on) through three IOMMUs, interleaved, with the same QEMU
# binary, kernel and initramfs: smmu-hypd (the QEMU device and the daemon), QEMU's own SMMUv3
# (-M virt,iommu=smmuv3) and no IOMMU. Prints the median MB/s of each and the ratios.
#
# Usage: qemu/bench-io.sh [ROUNDS] (default 3; each boot runs the workload 3 times, the first is
# dropped as warm-up; each measurement moves BENCH_REPEAT x 32 MiB, default 8: the guest clock counts centiseconds,
# 1% of a 256 MiB write here). Environment: SMMU_HYPD_BIN (use a release build:
# .build/release/smmu-hypd), SMMU_HYPD_CACHE, BENCH_STRICT=0 for lazy invalidation (iommu.strict=0),
# BENCH_DEVICE_OPTS=,ring=on (device properties appended to smmu-hypd's), BENCH_CONFIGS (default
# "smmu-hypd smmuv3 none"), BENCH_STATS=1 to print the device's exit counters (round trips, cache
# hits, misses, flushes and why) after each smmu-hypd boot.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROUNDS=${1:-3}
DAEMON=${SMMU_HYPD_BIN:-$ROOT/.build/release/smmu-hypd}
STRICT=${BENCH_STRICT:-1}
MEM_MB=512
WIRE="python3 $HERE/wire.py"
say() { echo "bench-io: $*" >&2; }
[ -x "$DAEMON" ] || { say "no smmu-hypd at $DAEMON (swift build -c release --product smmu-hypd, or set SMMU_HYPD_BIN)"; exit 1; }
QEMU=$("$HERE/build-qemu.sh" | tail -n1) || { say "QEMU build failed"; exit 1; }
read -r KERNEL INITRD < <("$HERE/fetch-guest.sh" | tail -n1)

TMP=$(mktemp -d /tmp/smmu-hypd-bench.XXXXXX)
DAEMON_PID=
cleanup() { [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
truncate -s 1G "$TMP/disk.img"

SOCK=$TMP/smmu-hypd.sock
sed "s|^\( *socket:.*path: *\)[^,}]*|\1$SOCK|" "$ROOT/Config/qemu-virt.yaml" > "$TMP/qemu-virt.yaml"
"$DAEMON" --config "$TMP/qemu-virt.yaml" >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
$WIRE "$SOCK" wait-ready 20 >/dev/null || { cat "$TMP/daemon.log" >&2; say "smmu-hypd never finalized"; exit 1; }

REPEAT=${BENCH_REPEAT:-8}   # 8 x 32 MiB per measurement
APPEND="console=ttyAMA0 panic=-1 iommu.strict=$STRICT blkrounds=3 blkrepeat=$REPEAT blkonly=1"
run() {   # run CONFIG -> "write_cs read_cs" per measured round, on stdout
    local config=$1 machine=virt,memory-backend=ram0 dev=()
    case $config in
        smmu-hypd) dev=(-device "smmu-hypd,socket=$SOCK,name=bench${BENCH_DEVICE_OPTS:-}") ;;
        smmuv3) machine=$machine,iommu=smmuv3 ;;
        none) ;;
    esac
    timeout 600 "$QEMU" -M "$machine" -cpu cortex-a57 -m $MEM_MB -smp 1 \
        -object memory-backend-memfd,id=ram0,size=${MEM_MB}M,share=on,seal=on \
        -nographic -no-reboot -nic none -monitor none -serial "file:$TMP/console-$config.log" \
        -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" "${dev[@]}" \
        -drive "file=$TMP/disk.img,if=none,format=raw,id=disk0" \
        -device virtio-blk-pci,drive=disk0,iommu_platform=on,disable-legacy=on >"$TMP/qemu-$config.log" 2>&1
    if grep -aq "GUEST: blk round" "$TMP/console-$config.log"; then
        grep -a "GUEST: blk round" "$TMP/console-$config.log" | tr -d "\r" | while read -r _ _ _ r _ w _ rd _ wsum _ rsum; do
            [ "$wsum" = "$rsum" ] || say "$config round $r: data mismatch ($wsum vs $rsum)"
            [ "$r" -gt 1 ] && echo "$w $rd"   # round 1 warms up
        done
    else
        say "$config: no block rounds (see $TMP/console-$config.log)"; tail -n 5 "$TMP/console-$config.log" >&2
    fi
    if [ "${BENCH_STATS:-0}" = 1 ] && [ "$config" = smmu-hypd ]; then
        grep -a "smmu-hypd: \(translation cache\|full flushes\|round trips\|ring exchanges\)" "$TMP/qemu-$config.log" >&2
    fi
}

declare -A W R
for i in $(seq "$ROUNDS"); do
    for config in ${BENCH_CONFIGS:-smmu-hypd smmuv3 none}; do
        say "round $i/$ROUNDS: $config"
        while read -r w r; do
            W[$config]+="$w "; R[$config]+="$r "
        done < <(run $config)
    done
done

python3 - "$STRICT" "$REPEAT" "${W[smmu-hypd]:-}" "${R[smmu-hypd]:-}" "${W[smmuv3]:-}" "${R[smmuv3]:-}" "${W[none]:-}" "${R[none]:-}" <<'PY'
import statistics, sys
strict, repeat = sys.argv[1], int(sys.argv[2])
del sys.argv[1]
def mbps(cs):  # 32 MiB x repeat per measurement, durations in centiseconds
    v = [int(x) for x in cs.split()]
    return statistics.median([32 * repeat * 100 / max(x, 1) for x in v]) if v else 0.0
names = ["smmu-hypd", "smmuv3", "none"]
w = {n: mbps(sys.argv[2 + 2 * i]) for i, n in enumerate(names)}
r = {n: mbps(sys.argv[3 + 2 * i]) for i, n in enumerate(names)}
n = {k: len(sys.argv[2 + 2 * i].split()) for i, k in enumerate(names)}
print(f"| configuration (iommu.strict={strict}) | write MB/s | read MB/s | samples |")
print("|---|---:|---:|---:|")
label = {"smmu-hypd": "smmu-hypd (QEMU device `smmu-hypd`)", "smmuv3": "QEMU's own SMMUv3 (`-M virt,iommu=smmuv3`)",
         "none": "no IOMMU"}
for k in names:
    print(f"| {label[k]} | {w[k]:.1f} | {r[k]:.1f} | {n[k]} |")
ratio = lambda a, b: a / b if b else 0.0
print(f"| smmu-hypd / SMMUv3 | {ratio(w['smmu-hypd'], w['smmuv3']):.2f}x | {ratio(r['smmu-hypd'], r['smmuv3']):.2f}x | |")
print(f"| smmu-hypd / no IOMMU | {ratio(w['smmu-hypd'], w['none']):.2f}x | {ratio(r['smmu-hypd'], r['none']):.2f}x | |")
PY

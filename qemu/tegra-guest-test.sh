#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Tegra234 guest: the project's own kernel (qemu/build-kernel.sh: ARCH_TEGRA_234_SOC,
# TEGRA_MC, ARM_SMMU) on QEMU virt with the smmu-hypd device in layout=tegra234, against smmu-hypd
# on Config/tegra234.yaml with host_ram moved to the guest's RAM. The guest's stock
# arm-smmu-nvidia (two-instance nvidia_smmu_impl) drives niso0 and niso1, each two daemon
# windows, and iso; the stock Tegra MC driver drives the daemon's MC windows. Checks: both
# drivers bound; every host write reached both instances of a pair (the device's per-window
# counts and the daemon's DUMP); a PCI master's DMA (virtio-rng behind niso0) translated by the
# daemon; the DT master's MC override write accepted; a hostile override written through
# /dev/mem DENIED and journaled; an injected context fault (a memory client's access) and a
# global fault each reported once; no other SMMU or MC message in the guest's log. The guest runs
# with pci=nomsi: virt's MSI doorbell (0x08020000) lies, in the daemon's Tegra234 map, inside niso1's
# first instance, which no host DMA may reach (qemu/README.md).
#
# Mode (first argument): plain (the default) starts the guest after the daemon's READY; pkvm runs
# pKVM in the guest (-M virt,virtualization=on, kvm-arm.mode=protected): the daemon waits for the
# host's finalization (finalization.mode: host), the Tegra MC and arm-smmu drivers defer until the
# guest's finalize_pkvm() rings the device's doorbell, and no register access reaches the daemon
# before that (patches 0002 and 0004).
#
# Environment: SMMU_HYPD_BIN (default .build/debug/smmu-hypd), SMMU_HYPD_ARTIFACTS (default
# .build/qemu-tegra-MODE), SMMU_HYPD_CACHE (default ~/.cache/smmu-hypd), SMMU_HYPD_GUEST_KERNEL (an
# Image to use instead of building one).
set -u
MODE=${1:-plain}
case "$MODE" in plain|pkvm) ;; *) echo "usage: $0 [plain|pkvm]" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ART=${SMMU_HYPD_ARTIFACTS:-$ROOT/.build/qemu-tegra-$MODE}
DAEMON=${SMMU_HYPD_BIN:-$ROOT/.build/debug/smmu-hypd}
MEM_MB=256                  # Config/tegra234.yaml's host_ram size; only its base moves (to virt's RAM)
OFFSET=0x100000000          # the device's default: guest address = Tegra234 address + 4 GiB
MC_SID=$((0x02c00000 + OFFSET))
MASTER_STREAM=0x20          # the DT master's stream on niso1 (smmu-hypd-tegra234.c.inc)
SDMMCRAB=0x63               # its first memory client; override register at sid + 0x318
WIRE="python3 $HERE/wire.py"
TAG=tegra-guest-test
mkdir -p "$ART"
ART=$(cd "$ART" && pwd)
CONSOLE=$ART/guest-console.log
QEMU_LOG=$ART/qemu-stderr.log
DAEMON_LOG=$ART/smmu-hypd.log
rm -f "$ART"/*.log "$ART"/*.json
TMP=$(mktemp -d /tmp/smmu-hypd-tegra.XXXXXX)
SOCK=$TMP/smmu-hypd.sock
source "$HERE/guest-lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$(date +%s)
QEMU=$("$HERE/build-qemu.sh" | tail -n1) || die "QEMU build failed"
if [ -n "${SMMU_HYPD_GUEST_KERNEL:-}" ]; then
    KERNEL=$SMMU_HYPD_GUEST_KERNEL
else
    say "building the guest kernel (cached after the first run)"
    KERNEL=$("$HERE/build-kernel.sh" | tail -n1) || die "guest kernel build failed"
fi
[ -f "$KERNEL" ] || die "no guest kernel at $KERNEL"
# busybox from the package the stock guest's cache holds (unpacked here: the cache's unpacked tree
# is redone whenever fetch-guest.sh runs); this guest's /init is tegra-guest-init.sh.
read -r _ STOCK_INITRD < <("$HERE/fetch-guest.sh" | tail -n1)
BUSYBOX_DEB=$(ls "$(dirname "${STOCK_INITRD:-/nonexistent}")"/busybox-static_*_arm64.deb 2>/dev/null | head -n1)
[ -f "$BUSYBOX_DEB" ] && dpkg -x "$BUSYBOX_DEB" "$TMP/busybox" || die "no busybox-static package in the guest cache"
mkdir -p "$TMP/root/bin" "$TMP/root/dev" "$TMP/root/proc" "$TMP/root/sys"
cp "$TMP/busybox/bin/busybox" "$TMP/root/bin/busybox"
for applet in sh mount cat dd hexdump poweroff sleep echo grep awk sed head tr basename printf devmem; do
    ln -s busybox "$TMP/root/bin/$applet"
done
cp "$HERE/tegra-guest-init.sh" "$TMP/root/init"
chmod +x "$TMP/root/init"
(cd "$TMP/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$TMP/initrd.gz" || die "initramfs failed"

[ -x "$DAEMON" ] || die "no smmu-hypd binary at $DAEMON (build it, or set SMMU_HYPD_BIN)"
ensure_journald
# Config/tegra234.yaml with three changes: host_ram is the guest's RAM (virt's 0x40000000, -m
# 256), the socket is this run's, and no watchdog (no systemd here); pkvm: finalization by the host.
FINALIZATION=(-e "s|^  mode: delay|  mode: host|" -e "/^  delay_ms:/d")
[ "$MODE" = pkvm ] || FINALIZATION=()
sed -e "/^ *host_ram:/{n;s|{ *base: *[x0-9a-fA-F]*, *size: *[x0-9a-fA-F]* *}|{ base: 0x40000000, size: $(printf 0x%x $((MEM_MB << 20))) }|}" \
    -e "s|^\( *path:\).*|\1 $SOCK|" -e "s|^watchdog:.*|watchdog: false|" "${FINALIZATION[@]}" \
    "$ROOT/Config/tegra234.yaml" > "$ART/tegra234-guest.yaml"
diff "$ROOT/Config/tegra234.yaml" "$ART/tegra234-guest.yaml" > "$ART/config.diff"
changed=$(grep -c '^>' "$ART/config.diff")
want=3; [ "$MODE" = pkvm ] && want=4
[ "$changed" -eq $want ] || die "deriving the config changed $changed lines, not $want: $(cat "$ART/config.diff")"

SINCE=$(date '+%Y-%m-%d %H:%M:%S')
NAME=tegra-guest-$$         # the device's HELLO name: the journal's SMMU_CLIENT
say "starting $DAEMON --config $ART/tegra234-guest.yaml"
"$DAEMON" --config "$ART/tegra234-guest.yaml" >"$DAEMON_LOG" 2>&1 &
PIDS+=($!)
if [ "$MODE" = pkvm ]; then
    HELLO=$($WIRE "$SOCK" hello 20) || { cat "$DAEMON_LOG" >&2; die "smmu-hypd never answered: $HELLO"; }
    # loglevel=8: patch 0002's deferral message is arm-smmu's dev_dbg.
    MACHINE=virt,memory-backend=ram0,virtualization=on KVM_ARG=" kvm-arm.mode=protected loglevel=8" FINALIZE=guest
else
    HELLO=$($WIRE "$SOCK" wait-ready 20) || { cat "$DAEMON_LOG" >&2; die "smmu-hypd never finalized: $HELLO"; }
    MACHINE=virt,memory-backend=ram0 KVM_ARG="" FINALIZE=ready
fi
echo "$HELLO" > "$ART/hello.json"
NISO0A=$(python3 -c 'import json,sys; print([w["base"] for w in json.load(sys.stdin)["windows"]].index(0x12000000))' < "$ART/hello.json") ||
    die "the daemon has no niso0 window at 0x12000000: $HELLO"

say "booting the guest (console: $CONSOLE)"
G0=$(date +%s%N)
timeout 120 "$QEMU" -M $MACHINE -cpu cortex-a57 -m $MEM_MB -smp 1 \
    -object memory-backend-memfd,id=ram0,size=${MEM_MB}M,share=on,seal=on \
    -nographic -no-reboot -nic none -monitor none -serial "file:$CONSOLE" \
    -kernel "$KERNEL" -initrd "$TMP/initrd.gz" \
    -append "console=ttyAMA0 panic=-1 loglevel=7 iommu.strict=1 pci=nomsi smmuhypd.mcsid=$(printf 0x%x $MC_SID)$KVM_ARG" \
    -device smmu-hypd,socket=$SOCK,name=$NAME,layout=tegra234,offset=$OFFSET,ring=on,finalize=$FINALIZE \
    -device virtio-rng-pci,iommu_platform=on,disable-legacy=on \
    2>"$QEMU_LOG" &
QEMU_PID=$!
PIDS+=($QEMU_PID)

CTX_FAULT="" GLOBAL_FAULT=""
if wait_for "$CONSOLE" "GUEST: waiting for faults" 90 $QEMU_PID; then
    # A memory client's access: SDMMCRAB carries the stream its override names (the DT master's,
    # which the guest attached to a context bank on niso1); an IOVA nothing maps faults there.
    CTX_FAULT=$($WIRE "$SOCK" mc-dma $SDMMCRAB 0xdead0000 write)
    # A stream no SMR on niso0 matches: an unidentified-stream global fault on instance 0.
    GLOBAL_FAULT=$($WIRE "$SOCK" dma "$NISO0A" 0x7e 0x1000)
    say "injected: context fault $CTX_FAULT, global fault $GLOBAL_FAULT"
else
    say "the guest never reached its fault wait"
fi
wait_for "$CONSOLE" "reboot: Power down" 30 $QEMU_PID || { say "the guest did not power off: stopping it"; kill $QEMU_PID 2>/dev/null; }
wait $QEMU_PID 2>/dev/null
GUEST_MS=$(( ($(date +%s%N) - G0) / 1000000 ))
$WIRE "$SOCK" stats > "$ART/smmu-hypd-stats.json" 2>&1
$WIRE "$SOCK" dump > "$ART/smmu-hypd-dump.json" 2>&1

# ---- checks: the guest's console, the device's counts and the daemon's state ----
con() { tr -d '\r' < "$CONSOLE" | grep -a "$@"; }

mc_bound=$(con "GUEST: driver tegra-mc bound" | head -n1)
echo "$mc_bound" | grep -q "bound $(printf %x $MC_SID).memory-controller" && ! con -q "Broadcast channel is missing\|tegra186.c\|invalid resource"
check "Tegra MC driver bound to the daemon's MC (sid + broadcast + ch0..ch15, quietly)" $? "${mc_bound:-tegra-mc bound nothing}"

smmus=$(con "GUEST: driver arm-smmu bound" | sed 's/.*bound //' | sort | tr '\n' ' ')
probes=$(con -c "SMMUv2 with:")
[ "$smmus" = "108000000.iommu 110000000.iommu 112000000.iommu " ] && [ "$probes" -eq 3 ]
check "arm-smmu (NVIDIA implementation) bound niso1, iso and niso0" $? "bound: ${smmus:-none}; $probes \"SMMUv2 with:\""

# nvidia_smmu_impl's write_reg goes to both instances of a pair; only its fault handlers write
# one instance (the W1C clear of the instance that faulted: the injected faults hit instance 0 of
# niso1, a context fault, and of niso0, a global fault). The device counts accesses per window.
pairs=$(python3 - "$QEMU_LOG" <<'EOF'
import re, sys
counts = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r'window "(\w+)" at 0x\w+: (\d+) reads, (\d+) writes', line)
    if m:
        counts[m.group(1)] = (int(m.group(2)), int(m.group(3)))
out = []
for a, b in (("niso1a", "niso1b"), ("niso0a", "niso0b")):
    ra, wa = counts.get(a, (0, 0))
    rb, wb = counts.get(b, (0, 0))
    ok = wb > 100 and wa == wb + 1
    out.append("%s %d writes, %s %d writes (reads %d/%d)%s" % (a, wa, b, wb, ra, rb, "" if ok else " MISMATCH"))
print("; ".join(out) + "; iso %d writes" % counts.get("iso", (0, 0))[1])
EOF
)
! echo "$pairs" | grep -q MISMATCH && echo "$pairs" | grep -q "niso1a"
check "every host write reached both instances of niso1 and niso0, but the one fault clear (device counts)" $? "$pairs"

# The daemon's view: both instances of a pair hold the same host-visible registers, but for
# what only the instance that saw a fault records (syndromes, fault address).
dump_cmp=$(python3 - "$ART/smmu-hypd-dump.json" <<'EOF'
import json, sys
FAULT_RECORD = {"FAR", "FSYNR0", "FSYNR1", "CBFRSYNRA", "sGFSYNR0", "sGFSYNR1", "sGFSYNR2", "IPAFAR", "sGFAR"}
try:
    d = json.load(open(sys.argv[1]))
except ValueError as e:
    print("MISMATCH: no DUMP (%s)" % e); sys.exit()
win = {w["name"]: w for w in d["windows"]}
out = []
for a, b in (("niso1a", "niso1b"), ("niso0a", "niso0b")):
    regs = lambda w: {(r["register"], r["index"]): r["virtual"] for r in win[w]["registers"]}
    ra, rb = regs(a), regs(b)
    diff = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
    bad = [k for k in diff if k[0] not in FAULT_RECORD]
    smr = sum(1 for k in ra if k[0] == "SMR")
    out.append("%s/%s: %d registers off reset, %d SMRs, %d fault-record differences%s" % (
        a, b, len(ra), smr, len(diff) - len(bad), (" MISMATCH " + str(bad[:6])) if bad or not ra else ""))
print("; ".join(out) + ("; DUMP truncated" if d.get("truncated") else ""))
EOF
)
! echo "$dump_cmp" | grep -q "MISMATCH\|truncated"
check "DUMP: the instances of each pair hold the same host-visible registers" $? "$dump_cmp"

rng=$(con "GUEST: hwrng read" | head -n1)
pci_grp=$(con "virtio-pci.*Adding to iommu group" | head -n1)
dma_ok=$(python3 -c '
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except ValueError:
    print(0); sys.exit()
print(int(s.get("dma_translations", 0)) - sum(s.get("faults_by_kind", {}).values()))' "$ART/smmu-hypd-stats.json")
pci_window=$(grep -o "PCI DMA through [a-z0-9]*" "$QEMU_LOG")
echo "$rng" | grep -q "read 32 hex digits" && [ -n "$pci_grp" ] && [ "${dma_ok:-0}" -gt 0 ] && [ "$pci_window" = "PCI DMA through niso0a" ]
check "PCI master (virtio-rng behind niso0): hwrng bytes through daemon-translated DMA" $? \
    "${rng:-no hwrng read}; ${pci_grp:-not in an IOMMU group}; $pci_window; daemon DMA OK count $dma_ok"

dt_grp=$(con "virtio_mmio: Adding to iommu group" | head -n1)
mc_before=$(con "GUEST: mc sdmmcrab override" | head -n1)
clients=$(python3 - "$ART/smmu-hypd-dump.json" <<'EOF'
import json, sys
try:
    mc = json.load(open(sys.argv[1])).get("memory_controller") or {}
except ValueError:
    mc = {}
print(" ".join("%s:override=%s,security=%s" % (c.get("name"), c.get("override"), c.get("security"))
               for c in mc.get("clients", []) if c.get("name") in ("sdmmcrab", "sdmmcwab")))
EOF
)
echo "$mc_before" | grep -q "override 0x00000020 security 0x00000100" && [ -n "$dt_grp" ] &&
    echo "$clients" | grep -q "sdmmcrab:override=0x20" && echo "$clients" | grep -q "sdmmcwab:override=0x20" &&
    ! grep -q "WRITE 0x2c00318 = 0x20.*DENIED\|WRITE 0x2c00338 = 0x20.*DENIED" "$QEMU_LOG"
check "DT master (iommus + interconnects): the MC driver's override writes (stream $MASTER_STREAM) accepted" $? \
    "${dt_grp:-DT master in no IOMMU group}; guest read ${mc_before#*GUEST: mc }; daemon: ${clients:-no such clients in DUMP}"

hostile=$(grep -o "WRITE 0x2c00318 = 0x7f (4 bytes): [A-Z_]*" "$QEMU_LOG" | head -n1)
after=$(con "GUEST: mc hostile override write done" | head -n1)
audit=$(audit_record "$SINCE" "$NAME" SMMU_RULE=G3.mc-override-passthrough)
echo "$hostile" | grep -q DENIED && echo "$after" | grep -q "override now 0x00000020" && [ -n "$audit" ]
check "hostile MC override from the guest (/dev/mem, passthrough 0x7f) DENIED and journaled" $? \
    "${hostile:-no such write seen}; guest: ${after#*GUEST: }; journal: ${audit:-no G3.mc-override-passthrough record for SMMU_CLIENT=$NAME}"

ctx=$(con -c "Unhandled context fault")
ctx_line=$(con "Unhandled context fault" | head -n1)
echo "$CTX_FAULT" | grep -q "\"stream\": \"$MASTER_STREAM\"" && [ "$ctx" -eq 1 ] && echo "$ctx_line" | grep -q "cbfrsynra=$MASTER_STREAM"
check "injected context fault (SDMMCRAB's access via its override) reported once" $? \
    "MC_DMA: ${CTX_FAULT:-not injected}; $ctx report(s): ${ctx_line:-none}"
glob=$(con -c "Unexpected global fault")
glob_line=$(con "GFSR 0x" | head -n1)
[ "$glob" -eq 1 ] && echo "$glob_line" | grep -q "112000000.iommu:.*GFSYNR1 0x0000007e"
check "injected global fault (unmatched stream 0x7e on niso0) reported once" $? "$glob report(s): ${glob_line:-none}"
irqs=$(con "GUEST: irq" | awk '$4 > 0 { printf "%sSPI %d=%s", sep, $6 - 32, $4; sep=" " }')
fired=$(con "GUEST: irq" | awk '$4 > 0 { n++; s += $4 } END { print n + 0, s + 0 }')
[ "$fired" = "2 2" ]
check "each fault raised its SPI once, nothing spurious" $? "interrupts that fired: ${irqs:-none}"

# Nothing else from the SMMU or MC drivers that reads as trouble, and no kernel warning at all.
noise=$(con "arm-smmu\|tegra-mc\|memory-controller\|iommu" |
    grep -aiE "fail|error|warn|unhandled|unexpected|blocked|timed out|deferr|invalid resource|missing|probe of" |
    grep -av "Unhandled context fault\|Unexpected global fault\|Deferring probe until pKVM is initialized" | head -n 3)
warn=$(con "WARNING:\|Call trace" | head -n 1)
idle=$(grep -o "MC channel windows (read as zero): [0-9]* accesses" "$QEMU_LOG")
[ -z "$noise" ] && [ -z "$warn" ] && [ "$idle" = "MC channel windows (read as zero): 0 accesses" ]
check "no other SMMU or MC error in the guest log; the MC channel windows were never touched" $? \
    "${noise:-no SMMU/MC trouble}${warn:+; $warn}; $idle"

if [ "$MODE" = pkvm ]; then
    # The seed on Tegra234: the MC and the three SMMUs defer until the guest's own finalize_pkvm(),
    # whose doorbell finalizes the daemon; then they probe.
    order=$(con -n "tegra-mc.*Deferring probe until pKVM\|arm-smmu.*Deferring probe until pKVM\|pKVM finalized\|SMMUv2 with:\|GUEST: driver tegra-mc bound" |
        python3 -c '
import sys
lines = sys.stdin.read().splitlines()
at = lambda *s: [int(l.split(":")[0]) for l in lines if all(x in l for x in s)]
mc, smmu = at("tegra-mc", "Deferring"), at("arm-smmu", "Deferring")
fin, probe = at("pKVM finalized"), at("SMMUv2 with:")
ok = len(mc) >= 1 and len(smmu) >= 3 and len(fin) == 1 and len(probe) == 3 and max(mc + smmu) < fin[0] < min(probe)
print("%s: MC deferred %d, SMMUs deferred %d, then pKVM finalized, then %d SMMUv2 probes" % ("ok" if ok else "WRONG", len(mc), len(smmu), len(probe)))')
    echo "$order" | grep -q "^ok" && con -q "GUEST: driver tegra-mc bound" && grep -q "PROT_FINALIZE OK" "$QEMU_LOG"
    check "pKVM: the MC and arm-smmu deferred until the guest's finalize_pkvm() finalized the daemon" $? \
        "$order; $(grep -o "PROT_FINALIZE [A-Z_]*; daemon state [0-9]" "$QEMU_LOG" | head -n1)"
    early=$(python3 -c '
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except ValueError:
    print("no STATS"); sys.exit()
ops = s.get("operations", {})
print("READ %s WRITE %s, finalized by %s" % (ops.get("READ", {}).get("DEFERRED", 0), ops.get("WRITE", {}).get("DEFERRED", 0),
                                           (s.get("finalized_by") or {}).get("by")))' "$ART/smmu-hypd-stats.json")
    [ "$early" = "READ 0 WRITE 0, finalized by host" ]
    check "pKVM: not one SMMU or MC register access before finalization (none DEFERRED)" $? "DEFERRED: $early"
fi

echo
echo "== smmu-hypd Tegra234 guest test, $MODE ($(($(date +%s) - T0)) s, the guest from start to power-off $GUEST_MS ms) =="
echo "guest console: $CONSOLE"
echo "QEMU stderr:   $QEMU_LOG"
echo "daemon:        $DAEMON_LOG, $ART/smmu-hypd-dump.json, $ART/smmu-hypd-stats.json"
echo "-- guest console, SMMU and MC lines --"
con "smmu\|SMMU\|GUEST:\|iommu\|tegra-mc\|memory-controller" | sed 's/^/    /'
echo "-- results --"
printf '%s\n' "${RESULTS[@]}"
if [ $FAILS -eq 0 ]; then echo "PASS: Tegra234's stock SMMU and MC drivers worked through smmu-hypd"; else echo "FAIL: $FAILS check(s) failed"; fi
[ $FAILS -eq 0 ]

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds qemu-system-aarch64 (QEMU 7.2 from Debian bookworm's source package) with the
# smmu-hypd device compiled in. Cached: the first run takes ~5 min on 2 cores; later runs
# return at once, or rebuild only the device (~2 s) when qemu/smmu-hypd-device.c changed.
# Prints the binary's path on the last line of stdout.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SMMU_HYPD_CACHE:-$HOME/.cache/smmu-hypd}/qemu
QEMU_VERSION_PREFIX="1:7.2+dfsg"      # pinned: the device uses 7.2's softmmu_ss and pci_setup_iommu API
DEVICE_SRC="$HERE/smmu-hypd-device.c"
DEVICE_INC="$HERE/smmu-hypd-tegra234.c.inc"   # included by the device (layout=tegra234)
BIN="$CACHE/build/qemu-system-aarch64"
STAMP="$CACHE/device.sha256"
log() { echo "build-qemu: $*" >&2; }

mkdir -p "$CACHE"
want=$(cat "$DEVICE_SRC" "$DEVICE_INC" "$0" | sha256sum | cut -d' ' -f1)   # contents only: any checkout of the same files reuses the build
if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "$BIN"; exit 0
fi

SRC=$(ls -d "$CACHE"/qemu-7.2*/ 2>/dev/null | head -n1 || true)
if [ -z "$SRC" ] || [ ! -f "$SRC/configure" ]; then
    # deb-src entries for the same mirror and suites as the deb ones.
    if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding deb-src entries"
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
                > /etc/apt/sources.list.d/smmu-hypd-src.sources
        else
            grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
                > /etc/apt/sources.list.d/smmu-hypd-src.list
        fi
        apt-get update -qq
    fi
    log "installing build dependencies"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        dpkg-dev build-essential ninja-build meson pkg-config libglib2.0-dev libpixman-1-dev \
        flex bison python3-venv python3-setuptools device-tree-compiler libfdt-dev libslirp-dev \
        >/dev/null
    ver=$(apt-cache showsrc qemu | sed -n 's/^Version: //p' | grep -F "$QEMU_VERSION_PREFIX" | sort -V | tail -n1)
    [ -n "$ver" ] || { log "no qemu $QEMU_VERSION_PREFIX source package"; exit 1; }
    log "fetching qemu source $ver"
    (cd "$CACHE" && apt-get source -qq "qemu=$ver" >/dev/null)
    SRC=$(ls -d "$CACHE"/qemu-7.2*/ | head -n1)
fi
SRC=${SRC%/}

# Our device: the file, one meson line, a minimal device config.
for f in "$DEVICE_SRC" "$DEVICE_INC"; do
    cmp -s "$f" "$SRC/hw/misc/$(basename "$f")" || cp "$f" "$SRC/hw/misc/"
done
grep -q smmu-hypd-device.c "$SRC/hw/misc/meson.build" ||
    echo "softmmu_ss.add(when: 'CONFIG_ARM_VIRT', if_true: files('smmu-hypd-device.c'))" >> "$SRC/hw/misc/meson.build"
DEVCFG="$SRC/configs/devices/aarch64-softmmu/smmu-hypd.mak"
cat > "$DEVCFG" <<'MAK'
# Only what the smmu-hypd guest test needs (the V7M and semihosting lines make virt link).
CONFIG_ARM_VIRT=y
CONFIG_ARM_V7M=y
CONFIG_SEMIHOSTING=y
CONFIG_ARM_COMPATIBLE_SEMIHOSTING=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_RNG=y
# The block workload (guest-test.sh, bench-io.sh): a virtio-blk disk behind the SMMU.
CONFIG_VIRTIO_BLK=y
MAK

# Only the emulator and the devices virt needs; no debug info (a quarter less compile and link time).
CONFIGURE_ARGS="--target-list=aarch64-softmmu --without-default-features --without-default-devices
    --with-devices-aarch64=smmu-hypd --disable-docs --disable-tools --disable-user
    --enable-fdt=system --disable-werror --disable-debug-info"
if [ ! -f "$CACHE/build/build.ninja" ] || [ "$(cat "$CACHE/build/smmu-hypd.configure" 2>/dev/null)" != "$CONFIGURE_ARGS" ]; then
    log "configuring"
    rm -rf "$CACHE/build"; mkdir -p "$CACHE/build"
    # shellcheck disable=SC2086
    (cd "$CACHE/build" && "$SRC/configure" $CONFIGURE_ARGS >configure.log 2>&1) ||
        { tail -n 30 "$CACHE/build/configure.log" >&2; exit 1; }
    echo "$CONFIGURE_ARGS" > "$CACHE/build/smmu-hypd.configure"
fi
log "building qemu-system-aarch64 (~5 min the first time; the device alone after)"
(cd "$CACHE/build" && ninja -j"${SMMU_HYPD_JOBS:-2}" qemu-system-aarch64 >ninja.log 2>&1) ||
    { grep -B2 -A12 'error' "$CACHE/build/ninja.log" | head -n 60 >&2; exit 1; }
echo "$want" > "$STAMP"
echo "$BIN"

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Fetches the guest for the smmu-hypd QEMU test from Debian's arm64 packages: the stock
# kernel (its arm-smmu driver is the client under test) and busybox-static, and builds an
# initramfs whose /init loads the virtio modules, reads /dev/hwrng and powers off.
# Cached; prints "KERNEL INITRD" on the last line of stdout.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SMMU_HYPD_CACHE:-$HOME/.cache/smmu-hypd}/guest
log() { echo "fetch-guest: $*" >&2; }
mkdir -p "$CACHE"
want=$(cat "$0" "$HERE/guest-init.sh" | sha256sum | cut -d' ' -f1)   # contents only: every checkout shares the cache
if [ -f "$CACHE/Image" ] && [ -f "$CACHE/initrd.gz" ] && [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$want" ]; then
    echo "$CACHE/Image $CACHE/initrd.gz"; exit 0
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the arm64 architecture"
    dpkg --add-architecture arm64
    apt-get update -qq
fi
command -v cpio >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cpio >/dev/null
cd "$CACHE"
if ! ls linux-image-*-arm64-unsigned_*_arm64.deb >/dev/null 2>&1; then
    # The kernel linux-image-arm64 depends on (linux-image-6.1.0-N-arm64-unsigned in bookworm).
    pkg=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: \(linux-image-[0-9.]*-[0-9]*-arm64\(-unsigned\)\?\).*/\1/p' | head -n1)
    case "$pkg" in *-unsigned) ;; *) pkg="$pkg-unsigned" ;; esac
    log "downloading $pkg and busybox-static"
    apt-get download -qq "$pkg:arm64" busybox-static:arm64 >/dev/null
fi
rm -rf kernel busybox root
dpkg -x linux-image-*-arm64-unsigned_*_arm64.deb kernel
dpkg -x busybox-static_*_arm64.deb busybox
cp kernel/boot/vmlinuz-* Image

mkdir -p root/bin root/dev root/proc root/sys root/modules
cp busybox/bin/busybox root/bin/busybox
for applet in sh mount insmod cat dd hexdump ls poweroff sleep echo grep mkdir readlink basename awk \
    md5sum cut tr sed head; do
    ln -sf busybox "root/bin/$applet"
done
kver=$(ls kernel/lib/modules)
for m in virtio_mmio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio-rng virtio_blk; do
    f=$(find "kernel/lib/modules/$kver" -name "$m.ko*" | head -n1)
    [ -n "$f" ] || { log "module $m not found"; exit 1; }
    case "$f" in
        *.xz) xz -dc "$f" > "root/modules/$m.ko" ;;
        *) cp "$f" "root/modules/$m.ko" ;;
    esac
done
cp "$HERE/guest-init.sh" root/init
chmod +x root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -9) > initrd.gz
[ "$(stat -c %s initrd.gz)" -gt 100000 ] || { log "initramfs too small"; exit 1; }
echo "$want" > stamp
echo "$CACHE/Image $CACHE/initrd.gz"

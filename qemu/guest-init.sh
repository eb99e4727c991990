#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the smmu-hypd test guest. The stock arm-smmu driver (built into Debian's kernel) has
# probed by now; this loads the virtio-pci modules so virtio-rng-pci attaches behind the SMMU,
# reads /dev/hwrng (DMA translated by smmu-hypd), then waits for the host side's injected faults
# and powers off. Lines starting "GUEST:" are markers the test script reads.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "GUEST: init started"
for m in virtio_mmio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio-rng; do
    insmod /modules/$m.ko || echo "GUEST: insmod $m failed"
done
for d in /sys/kernel/iommu_groups/*/devices/*; do
    [ -e "$d" ] || continue
    g=${d#/sys/kernel/iommu_groups/}; g=${g%%/*}
    echo "GUEST: iommu group $g device $(basename "$d")"
done
i=0
while [ ! -e /dev/hwrng ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
echo "GUEST: hwrng current $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
bytes=$(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | hexdump -v -e '16/1 "%02x"')
echo "GUEST: hwrng read ${#bytes} hex digits: $bytes"
echo "GUEST: waiting for faults"
i=0
while [ $i -lt 300 ]; do
    n=$(grep -c 'arm-smmu' /proc/interrupts)
    seen=$(grep 'arm-smmu' /proc/interrupts | awk '{ if ($2 > 0) c++ } END { print c + 0 }')
    [ "$seen" -ge 2 ] && break
    sleep 0.1; i=$((i + 1))
done
grep 'arm-smmu' /proc/interrupts | while read -r line; do echo "GUEST: irq $line"; done
echo "GUEST: done"
poweroff -f

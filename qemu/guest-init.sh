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
for m in virtio_mmio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio-rng virtio_blk; do
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
# The block workload (when a virtio-blk disk is attached): 32 MiB written and read back with
# O_DIRECT, so every request maps, DMAs and unmaps through the SMMU; blkrounds=N on the kernel
# command line repeats it and blkrepeat=M writes and reads the 32 MiB M times per round (the
# benchmark: a longer run for the centisecond clock), blkonly=1 powers off right after it.
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | head -n1; }
# Centiseconds since boot, without leading zeros: under a second "0.98" would be "098", which
# shell arithmetic reads as a bad octal number (the project's kernel reaches /init that early).
cs() { cut -d' ' -f1 /proc/uptime | tr -d . | sed 's/^0*\([0-9]\)/\1/'; }
if [ -b /dev/vda ]; then
    mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
    dd if=/dev/urandom of=/tmp/data bs=1M count=32 2>/dev/null
    want=$(md5sum /tmp/data | cut -d' ' -f1)
    rounds=$(arg blkrounds); rounds=${rounds:-1}
    repeat=$(arg blkrepeat); repeat=${repeat:-1}
    echo "GUEST: blk start, $rounds round(s) of 32 MiB, data md5 $want, strict=$(cat /sys/kernel/iommu_groups/*/type 2>/dev/null | head -n1)"
    r=1
    while [ $r -le "$rounds" ]; do
        t0=$(cs)
        i=0
        while [ $i -lt "$repeat" ]; do
            dd if=/tmp/data of=/dev/vda bs=1M count=32 seek=$((i * 32)) oflag=direct 2>/dev/null
            i=$((i + 1))
        done
        t1=$(cs)
        echo 3 > /proc/sys/vm/drop_caches
        t2=$(cs)
        dd if=/dev/vda of=/dev/null bs=1M count=$((repeat * 32)) iflag=direct 2>/dev/null
        t3=$(cs)
        got=$(dd if=/dev/vda bs=1M count=32 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
        echo "GUEST: blk round $r write_cs $((t1 - t0)) read_cs $((t3 - t2)) written $want read $got"
        r=$((r + 1))
    done
    echo "GUEST: blk done"
    [ "$(arg blkonly)" = 1 ] && { echo "GUEST: done"; poweroff -f; }
fi
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

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the Tegra234 guest (qemu/tegra-guest-test.sh), for the project's own kernel: the
# arm-smmu (NVIDIA implementation) and Tegra MC drivers are built in and have probed by now.
# Reports which drivers bound, reads /dev/hwrng (a PCI master behind niso0, DMA translated by
# smmu-hypd), shows the DT master's MC override as the driver left it, then tries a hostile
# override write through /dev/mem, waits for the host side's injected faults and powers off.
# Lines starting "GUEST:" are markers the test script reads.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
echo "GUEST: init started"
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | head -n1; }
hex() { printf '0x%x' "$1"; }

for drv in tegra-mc arm-smmu; do
    for d in /sys/bus/platform/drivers/$drv/*; do
        [ -L "$d" ] && echo "GUEST: driver $drv bound $(basename "$d")"
    done
done
echo "GUEST: deferred [$(cat /sys/kernel/debug/devices_deferred 2>/dev/null | tr '\n' ' ')]"
for g in /sys/kernel/iommu_groups/*; do
    [ -d "$g" ] && echo "GUEST: iommu group ${g##*/}: $(ls "$g/devices" | tr '\n' ' ')"
done

i=0
while [ ! -e /dev/hwrng ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
bytes=$(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | hexdump -v -e '16/1 "%02x"')
echo "GUEST: hwrng read ${#bytes} hex digits: $bytes"

# The memory controller's sid window (its guest address comes on the command line). SDMMCRAB's
# override and security registers: the DT master's client, whose override the driver set.
sid=$(arg smmuhypd.mcsid)
if [ -n "$sid" ]; then
    override=$(hex $((sid + 0x318)))
    security=$(hex $((sid + 0x31c)))
    echo "GUEST: mc sdmmcrab override $(devmem "$override" 32) security $(devmem "$security" 32)"
    # Hostile: point the client at the passthrough stream 0x7f, around every SMMU.
    devmem "$override" 32 0x7f
    echo "GUEST: mc hostile override write done; override now $(devmem "$override" 32)"
fi

echo "GUEST: waiting for faults"
i=0
while [ $i -lt 100 ]; do
    seen=$(grep 'arm-smmu' /proc/interrupts | awk '{ if ($2 > 0) c++ } END { print c + 0 }')
    [ "$seen" -ge 2 ] && break
    sleep 0.1; i=$((i + 1))
done
sleep 0.3      # a second (spurious) delivery would show in the counts below
grep 'arm-smmu\|tegra-mc' /proc/interrupts | while read -r line; do echo "GUEST: irq $line"; done
echo "GUEST: done"
poweroff -f

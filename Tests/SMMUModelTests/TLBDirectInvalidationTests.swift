import Testing
import TestSupport

@testable import SMMUModel

/// A TLBIVA(L) probes the slots of the page it names instead of scanning (TLB.swift). These check it removes
/// exactly what the architecture's rule removes (every entry of the VMID, ASID or global, whose mapping covers
/// the address, whichever bank made it), by comparing every step with a reference that scans.
@Suite struct TLBDirectInvalidationTests {
    static let vaMask: UInt64 = 0x00FF_FFFF_FFFF_F000

    /// The architecture's rule, applied by scanning a copy of the slots.
    static func referenceInvalidate(_ slots: inout [TLB.Entry], vmid: UInt16, asid: UInt16?, va: UInt64) {
        let target = va & vaMask
        for i in slots.indices where slots[i].bank >= 0 {
            let e = slots[i]
            guard e.vmid == vmid, !e.hasIPA || e.s2Bank != e.bank else { continue }
            if let asid, !e.global, e.asid != asid { continue }
            let shift = UInt64(e.leafShift)
            if ((e.vaPage << 12) & vaMask) >> shift == target >> shift { slots[i].bank = -1 }
        }
    }

    static func entry(bank: Int, vaPage: UInt64, vmid: UInt16, asid: UInt16, global: Bool = false,
                      leafShift: UInt8 = 12) -> TLB.Entry {
        var e = TLBOccupancyTests.entry(bank: bank, vaPage: vaPage, vmid: vmid, asid: asid, s2VMID: nil)
        e.global = global
        e.leafShift = leafShift
        return e
    }

    @Test("TLBIVA(L) removes what a scan removes, with and without block entries, TTBR1 addresses and shared VMIDs",
          arguments: [1, 2, 3, 4] as [UInt64])
    func matchesTheScan(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let tlb = TLB()
        var reference = Array(repeating: TLB.Entry(), count: TLB.capacity)
        let blocks = seed % 2 == 0   // half the runs keep blocks out, so the direct path is the one checked
        for step in 0..<30_000 {
            let vmid = UInt16(rng.next() % 3) + (rng.next() % 4 == 0 ? 0x100 : 0)
            let upper = rng.next() % 5 == 0
            let page = (rng.next() % 4096) | (upper ? 0xFF << 44 : 0)
            switch rng.next() % 8 {
            case 0..<5:
                let shift: UInt8 = blocks && rng.next() % 8 == 0 ? 21 : 12
                let e = Self.entry(bank: Int(rng.next() % 6), vaPage: page, vmid: vmid,
                                   asid: UInt16(rng.next() % 3), global: rng.next() % 4 == 0, leafShift: shift)
                tlb.insert(e)
                reference[tlb.slot(bank: Int(e.bank), vaPage: page)] = e
            case 5, 6:
                let asid: UInt16? = rng.next() % 3 == 0 ? nil : UInt16(rng.next() % 3)
                let va = (page << 12) | (rng.next() & 0xFFF)
                tlb.invalidate(vmid: vmid, asid: asid, va: va)
                Self.referenceInvalidate(&reference, vmid: vmid, asid: asid, va: va)
            default:
                if rng.next() % 200 == 0 {
                    tlb.invalidateAll()
                    for i in reference.indices { reference[i].bank = -1 }
                }
            }
            if step % 97 == 0 || step > 29_900 {
                var same = true
                for i in 0..<TLB.capacity {
                    let a = tlb.entry(atSlot: i), b = reference[i]
                    if (a.bank >= 0) != (b.bank >= 0) || (a.bank >= 0 && (a.bank != b.bank || a.vaPage != b.vaPage)) {
                        same = false
                        break
                    }
                }
                #expect(same, "step \(step): the TLB and the reference differ")
                #expect(tlb.count == tlb.scannedCount && tlb.occupancyMatchesSlots)
                if !same { return }
            }
        }
        if blocks { #expect(tlb.scannedVAInvalidations > 0) } else { #expect(tlb.scannedVAInvalidations == 0) }
        #expect(tlb.directVAInvalidations > 0)
    }

    @Test("a 2 MiB block entry cached under another page is removed by a TLBIVA anywhere inside the block")
    func blockEntryRemovedByTLBIVAInside() {
        let tlb = TLB()
        // The block was looked up (and cached) through its page 0x10_0005; 4 KiB entries of the same VMID beside it.
        tlb.insert(Self.entry(bank: 0, vaPage: 0x10_0005, vmid: 1, asid: 2, leafShift: 21))
        tlb.insert(Self.entry(bank: 0, vaPage: 0x30_0000, vmid: 1, asid: 2))
        tlb.invalidate(vmid: 1, asid: 2, va: 0x10_01FF << 12)   // the block's last page, not the cached one
        #expect(tlb.lookup(bank: 0, vmid: 1, asid: 2, vaPage: 0x10_0005) == nil)
        #expect(tlb.lookup(bank: 0, vmid: 1, asid: 2, vaPage: 0x30_0000) != nil)
        #expect(tlb.scannedVAInvalidations == 1)
        // Once the block is gone, the next TLBIVA of that VMID probes instead of scanning.
        tlb.invalidate(vmid: 1, asid: 2, va: 0x30_0000 << 12)
        #expect(tlb.count == 0 && tlb.directVAInvalidations == 1)
    }

    @Test("a 4 KiB TLBIVA in one bank removes the entry another bank made under the same VMID, and nothing else")
    func sharedVMIDAcrossBanks() {
        let tlb = TLB()
        tlb.insert(Self.entry(bank: 7, vaPage: 0x42, vmid: 5, asid: 1))
        tlb.insert(Self.entry(bank: 3, vaPage: 0x42, vmid: 6, asid: 1))     // other VMID
        tlb.insert(Self.entry(bank: 3, vaPage: 0x43, vmid: 5, asid: 1))     // other page
        tlb.insert(Self.entry(bank: 9, vaPage: 0x42, vmid: 5, asid: 4))     // other ASID, non-global
        tlb.insert(Self.entry(bank: 11, vaPage: 0x42, vmid: 5, asid: 4, global: true))
        tlb.invalidate(vmid: 5, asid: 1, va: 0x42 << 12 | 0x123)
        #expect(tlb.lookup(bank: 7, vmid: 5, asid: 1, vaPage: 0x42) == nil)
        #expect(tlb.lookup(bank: 11, vmid: 5, asid: 1, vaPage: 0x42) == nil)   // global: any ASID
        #expect(tlb.lookup(bank: 3, vmid: 6, asid: 1, vaPage: 0x42) != nil)
        #expect(tlb.lookup(bank: 3, vmid: 5, asid: 1, vaPage: 0x43) != nil)
        #expect(tlb.lookup(bank: 9, vmid: 5, asid: 4, vaPage: 0x42) != nil)
        #expect(tlb.count == 3 && tlb.scannedVAInvalidations == 0)
        // TLBIVAA: every ASID.
        tlb.invalidate(vmid: 5, asid: nil, va: 0x42 << 12)
        #expect(tlb.lookup(bank: 9, vmid: 5, asid: 4, vaPage: 0x42) == nil && tlb.count == 2)
    }
}

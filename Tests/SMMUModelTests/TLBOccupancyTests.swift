import Testing
import TestSupport

@testable import SMMUModel

/// The TLB's occupancy counts let a TLBI that cannot match return without a scan; a wrong count would leave
/// stale translations behind (a missed invalidation), so these compare every step against a plain reference.
@Suite struct TLBOccupancyTests {
    static func entry(bank: Int, vaPage: UInt64, vmid: UInt16, asid: UInt16, s2VMID: UInt16?) -> TLB.Entry {
        var e = TLB.Entry()
        e.bank = Int16(bank)
        e.vaPage = vaPage
        e.paPage = vaPage &+ 0x1000
        e.vmid = vmid
        e.asid = asid
        if let s2VMID {
            e.s2Bank = Int16(bank)
            e.s2VMID = s2VMID
            e.hasIPA = true
            e.ipaPage = vaPage
        }
        return e
    }

    @Test("occupancy counts match a scan at every step, and TLBIVMID of every VMID used empties the TLB", arguments: [1, 2, 3] as [UInt64])
    func countsStayExact(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let tlb = TLB()
        for _ in 0..<20_000 {
            let vmid = UInt16(rng.next() % 6) * 0x100 + UInt16(rng.next() % 3)  // shares low bytes across VMIDs
            switch rng.next() % 10 {
            case 0..<6:
                let bank = Int(rng.next() % 4)
                let page = rng.next() % 20_000
                let e = Self.entry(bank: bank, vaPage: page, vmid: vmid, asid: UInt16(rng.next() % 3),
                                   s2VMID: rng.next() % 2 == 0 ? nil : vmid ^ 0x1)
                tlb.insert(e)  // direct-mapped: replaces whatever shared the slot
            case 6:
                tlb.invalidate(vmid: vmid)
            case 7:
                tlb.invalidate(vmid: vmid, asid: UInt16(rng.next() % 3))
            case 8:
                tlb.invalidateContext(vmid: vmid)
            default:
                if rng.next() % 50 == 0 { tlb.invalidateAll() }
            }
            #expect(tlb.count == tlb.scannedCount && tlb.occupancyMatchesSlots)
        }
        // After a TLBIVMID of every VMID used, nothing may remain.
        for high in 0..<6 { for low in 0..<3 { tlb.invalidate(vmid: UInt16(high * 0x100 + low)) } }
        for high in 0..<6 { for low in 0..<3 { tlb.invalidate(vmid: UInt16(high * 0x100 + low) ^ 0x1) } }
        #expect(tlb.scannedCount == 0 && tlb.count == 0 && tlb.occupancyMatchesSlots)
    }

    @Test("a TLBIVMID of a VMID with no entries keeps the others; one that shares its low byte still removes only its own")
    func vmidBucketsDoNotOverreach() {
        let tlb = TLB()
        tlb.insert(Self.entry(bank: 0, vaPage: 1, vmid: 0x0102, asid: 0, s2VMID: nil))
        tlb.insert(Self.entry(bank: 1, vaPage: 2, vmid: 0x0202, asid: 0, s2VMID: nil))
        tlb.invalidate(vmid: 0x0003)
        #expect(tlb.count == 2)
        tlb.invalidate(vmid: 0x0102)
        #expect(tlb.count == 1 && tlb.scannedCount == 1)
        #expect(tlb.lookup(bank: 1, vmid: 0x0202, asid: 0, vaPage: 2) != nil)
        #expect(tlb.lookup(bank: 0, vmid: 0x0102, asid: 0, vaPage: 1) == nil)
        // An entry made through a stage 2 is found by its stage-2 VMID too.
        tlb.insert(Self.entry(bank: 2, vaPage: 3, vmid: 0x0010, asid: 0, s2VMID: 0x0020))
        tlb.invalidate(vmid: 0x0020)
        #expect(tlb.lookup(bank: 2, vmid: 0x0010, asid: 0, vaPage: 3) == nil)
    }
}

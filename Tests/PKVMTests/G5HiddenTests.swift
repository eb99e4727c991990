import Testing
@testable import PKVM
import SMMUModel

/// G5: the context banks and SMRs the hypervisor keeps are not in the host's IDs, not readable
/// (no value of a VM's TTBR, FAR, FSR or SMR leaks) and not writable.
@Suite struct G5HiddenTests {
    @Test func idRegistersShowTheHostViewOnly() {
        let m = Machine()
        for w in m.hv.instances.indices {
            let d = m.driver(w)
            let p = d.probe()
            let c = m.hv.policy.topology.windows[w].configuration
            #expect(p.numContextBanks == c.numContextBanks - 8 && p.numMappingGroups == c.numStreamMatchGroups - 8)
            #expect(p.numS2ContextBanks <= p.numContextBanks)
            #expect(!p.translationOps, "ATOS is not honoured: IDR0.ATOSNS set")
            #expect(!p.extendedIDs && !p.vmid16, "EXIDS and VMID16 hidden")
            #expect(p.stage1 && p.stage2 && p.nested && p.pageShift == c.pageShift && p.numPage == c.numPage)
            #expect(Int(m.hv.windows[w].contextBanks) == p.numContextBanks && Int(m.hv.windows[w].streamMatchGroups) == p.numMappingGroups)
            // ID registers are read-only.
            _ = d.write(.IDR0, 0xFF)
            _ = d.write(.IDR1, 0xFF)
            #expect(d.probe() == p)
        }
    }

    /// A VM with a fault recorded in its bank (non-zero FAR, FSR, FSYNR0) and a TTBR0.
    func vmWithFault() -> (Machine, LinuxDriver, Int) {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let vm = m.protectedVM(stream: 0x15)
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: 0x1234_5000, access: .write).fault != nil)
        let bank = m.contextBank(of: vm, window: 0)!
        #expect(m.physical(0).peek(.TTBR0, index: bank) != 0)
        return (m, d, bank)
    }

    @Test func readingAVMContextBankIsDeniedAndLeaksNothing() {
        let (m, d, bank) = vmWithFault()
        for (name, width) in [(RegisterName.FAR, AccessWidth.doubleword), (.FAR, .word), (.TTBR0, .doubleword),
                              (.TTBR0, .word), (.FSR, .word), (.FSYNR0, .word), (.FSYNR1, .word), (.IPAFAR, .doubleword),
                              (.SCTLR, .word), (.TCR, .word), (.CBAR, .word), (.CBA2R, .word), (.CBFRSYNRA, .word),
                              (.TLBSTATUS, .word), (.ATSR, .word), (.PAR, .doubleword)] {
            let events = m.audit.events.count
            let r = d.read(name, bank, width: width)
            let e = expectDenied(r, .hiddenContextBank)
            #expect(e?.register == RegisterLocation(name: name, index: bank).description)
            #expect(e?.width == width.bytes && e?.value == 0 && e?.window == "niso1a")
            #expect(m.audit.events.count == events + 1)
        }
        // The upper half of a 64-bit register too.
        let upper = m.hv.windows[0].base + d.layout.offset(of: .FAR, index: bank) + 4
        expectDenied(m.hv.hostRead(address: upper, width: .word, client: m.client), .hiddenContextBank)
        // Nothing of the VM's fault reached the host: no bank, no global fault, no line.
        #expect(m.hv.interruptLines(window: 0).allSatisfy { !$0 })
        #expect(d.r32(.sGFSR) == 0)
        for n in 0..<120 { #expect(m.virtual(0).peek(.FSR, index: n) == 0 && m.virtual(0).peek(.FAR, index: n) == 0) }
    }

    @Test func hiddenStreamMatchGroupsAreNeitherReadableNorWritable() {
        let m = Machine()
        _ = m.protectedVM(stream: 0x15)
        let d = m.driver()
        for index in 120..<128 {
            for name in [RegisterName.SMR, .S2CR] {
                let before = m.state()
                expectDenied(d.read(name, index), .hiddenStreamMatchGroup)
                let e = expectDenied(d.write(name, index, 0x8000_0020), .hiddenStreamMatchGroup)
                #expect(e?.offset == d.layout.offset(of: name, index: index) && e?.value == 0x8000_0020)
                #expect(m.state() == before)
            }
        }
        // Beyond the implemented 128: the decode says reserved or bad, never a hidden register's value.
        let beyond = m.hv.windows[0].base + 0x800 + 4 * 200
        if case .ok(let v) = m.hv.hostRead(address: beyond, width: .word, client: m.client) { #expect(v == 0) }
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .read).physicalAddress == vmData)
    }

    /// Every register of a reserved context-bank page, written: DENIED, nothing changes, the VM runs on.
    @Test(arguments: [120, 127])
    func writesToAReservedContextBankPageAreDenied(bank: Int) {
        let (m, d, vmBank) = vmWithFault()
        let target = bank == 120 ? vmBank : bank
        for desc in RegisterMap.all where desc.indexing == .contextBank {
            for width in desc.width == .doubleword ? [AccessWidth.doubleword, .word] : [.word] {
                let before = m.state()
                let events = m.audit.events.count
                let e = expectDenied(d.write(desc.name, target, 0xFFFF_FFFF_FFFF_FFFF & width.mask, width: width),
                                     .hiddenContextBank)
                #expect(e?.width == width.bytes && e?.value == width.mask)
                #expect(m.audit.events.count == events + 1)
                #expect(m.differences(before, m.state()).isEmpty, "\(desc.name): \(m.differences(before, m.state()))")
            }
        }
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .write).physicalAddress == vmData)
        // Offsets of the page that name no register: harmless, and nothing reads back from them.
        let page = m.hv.windows[0].base + d.layout.offset(of: .SCTLR, index: target)
        _ = m.hv.hostWrite(address: page + 0x400, value: 0xFFFF_FFFF, width: .word, client: m.client)
        if case .ok(let v) = m.hv.hostRead(address: page + 0x400, width: .word, client: m.client) { #expect(v == 0) }
    }
}

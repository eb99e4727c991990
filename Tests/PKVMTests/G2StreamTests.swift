import Testing
@testable import PKVM
import SMMUModel

/// G2: no SMR, S2CR, context bank or bypass the host programs can route a stream that is not the host's.
@Suite struct G2StreamTests {
    let vmStream: UInt32 = 0x15

    /// A refused write to `name[index]` on window w: DENIED with the rule, one event naming the
    /// window, register, offset, value, width and streams; no register anywhere changed.
    func expectRefused(_ m: Machine, _ name: RegisterName, _ index: Int, _ value: UInt64, window w: Int = 0,
                       width: AccessWidth = .word, rule: TrapRule, streams: [UInt16] = [],
                       sourceLocation: SourceLocation = #_sourceLocation) {
        let before = m.state()
        let events = m.audit.events.count
        let denials = m.hv.statistics.denials
        let d = m.driver(w)
        let event = expectDenied(d.write(name, index, value, width: width), rule, sourceLocation: sourceLocation)
        #expect(m.audit.events.count == events + 1, sourceLocation: sourceLocation)
        #expect(m.hv.statistics.denials == denials + 1, sourceLocation: sourceLocation)
        #expect(m.audit.events.last == event, sourceLocation: sourceLocation)
        let config = m.hv.policy.topology.windows[w].configuration
        #expect(event == AuditEvent(rule: rule, client: m.client, window: m.hv.windows[w].name,
                                    register: RegisterLocation(name: name, index: index).description,
                                    offset: config.offset(of: name, index: index), value: value,
                                    width: width.bytes, streams: streams), sourceLocation: sourceLocation)
        #expect(m.differences(before, m.state()).isEmpty, "\(m.differences(before, m.state()))",
                sourceLocation: sourceLocation)
    }

    @Test func smrNamingAVMStreamIsDenied() {
        let m = Machine()
        let vm = m.protectedVM(stream: vmStream)
        expectRefused(m, .SMR, 3, 1 << 31 | UInt64(vmStream), rule: .smrForeignStream, streams: [0x15])
        #expect(m.driver().r32(.SMR, 3) == 0, "a denied SMR does not read back")
        // The other instance of the niso1 pair is the same logical SMMU: denied there too.
        expectRefused(m, .SMR, 3, 1 << 31 | UInt64(vmStream), window: 1, rule: .smrForeignStream, streams: [0x15])
        // The VM still reaches its page.
        #expect(m.hv.dma(window: 0, stream: vmStream, iova: vmData, access: .write).physicalAddress == vmData)
        #expect(m.hv.dma(window: 1, stream: vmStream, iova: vmData, access: .read).physicalAddress == vmData)
        _ = vm
    }

    @Test(arguments: [
        (id: UInt16(0x10), mask: UInt16(0x000F)),    // 0x10..0x1F
        (id: 0x0000, mask: 0x7FFF),                  // everything
        (id: 0x7F95, mask: 0x7F80),                  // Tegra's stream-match-mask, another ID above bit 7
        (id: 0x0005, mask: 0x0010),                  // 0x05 and 0x15
    ])
    func smrWhoseMaskAliasesAVMStreamIsDenied(id: UInt16, mask: UInt16) {
        let m = Machine()
        _ = m.protectedVM(stream: vmStream)
        let value = 1 << 31 | UInt64(mask) << 16 | UInt64(id)
        expectRefused(m, .SMR, 0, value, rule: .smrForeignStream, streams: [0x15])
    }

    /// ID bit 15 is not implemented (15-bit stream IDs): 0x8015 is stored as 0x15, so it matches.
    @Test func smrIDBeyondTheImplementedWidthStillMatchesTheVMStream() {
        let m = Machine()
        _ = m.protectedVM(stream: vmStream)
        expectRefused(m, .SMR, 2, 1 << 31 | 0x8015, rule: .smrForeignStream, streams: [0x15])
        expectRefused(m, .SMR, 2, 1 << 31 | 0x0080_8095,   // MASK bit 7 and ID bit 15: 0x15 and 0x95
                      rule: .smrForeignStream, streams: [0x15])
    }

    /// Every foreign stream an SMR matches is named, the VM's and the hypervisor's.
    @Test func deniedSMRNamesEveryForeignStreamItMatches() {
        let m = Machine(hypervisorStreams: [0: [StreamID(0x17)]])
        _ = m.protectedVM(stream: vmStream)
        expectRefused(m, .SMR, 1, 1 << 31 | 0x000F_0010, rule: .smrForeignStream, streams: [0x15, 0x17])
        expectRefused(m, .SMR, 1, 1 << 31 | 0x0017, rule: .smrForeignStream, streams: [0x17])
    }

    @Test func smrsThatMatchOnlyHostStreamsAreEmulated() {
        let m = Machine()
        _ = m.protectedVM(stream: vmStream)
        let d = m.driver(0, 1)
        let values: [UInt32] = [0x800F_0020, 0x8000_0014, 0x8000_0016, 0x7FFF_0015]
        for (i, v) in values.enumerated() {
            d.w32(.SMR, i, v)
            #expect(d.r32(.SMR, i) == v)
            #expect(m.physical(0).peek(.SMR, index: i) == UInt64(v))
            #expect(m.physical(1).peek(.SMR, index: i) == UInt64(v))
        }
        #expect(m.audit.events.isEmpty)
    }

    /// VALID clear matches nothing: accepted whatever the ID and mask (Linux's mask probe and release).
    @Test func invalidSMRNamingAVMStreamIsAccepted() {
        let m = Machine()
        _ = m.protectedVM(stream: vmStream)
        let d = m.driver()
        d.w32(.SMR, 0, UInt32(vmStream))
        d.w32(.SMR, 1, 0x7FFF_7FFF)
        #expect(d.r32(.SMR, 0) == vmStream && d.r32(.SMR, 1) == 0x7FFF_7FFF)
        #expect(m.audit.events.isEmpty)
        #expect(m.hv.dma(window: 0, stream: vmStream, iova: vmData, access: .read).physicalAddress == vmData)
    }

    @Test func s2crTranslatingToAHiddenBankIsDenied() {
        let m = Machine()
        let hostBanks = Int(m.hv.windows[0].contextBanks)
        for bank in [hostBanks, hostBanks + 3, 255] {
            expectRefused(m, .S2CR, 0, UInt64(bank), rule: .s2crHiddenContextBank)
        }
        m.driver().w32(.S2CR, 0, UInt32(hostBanks - 1))
        #expect(m.driver().r32(.S2CR, 0) == UInt32(hostBanks - 1))
    }

    @Test func nestedCBAROverAHiddenStage2BankIsDenied() {
        let m = Machine()
        let hostBanks = Int(m.hv.windows[0].contextBanks)
        expectRefused(m, .CBAR, 4, UInt64(3 << 16 | hostBanks << 8 | 5), rule: .cbarHiddenContextBank)
        m.driver().w32(.CBAR, 4, UInt32(3 << 16 | (hostBanks - 1) << 8 | 5))
        #expect(m.audit.events.count == 1)
    }

    /// The host cannot move a VM's stream back through the hypercalls either.
    @Test func assigningAStreamTheHostStillMatchesOrDoesNotOwnIsDenied() {
        let m = Machine()
        let d = m.driver()
        d.route(smr: 0, stream: 0x40, mask: 0x000F, toBank: 0)
        let vm = m.hv.vmCreate(client: m.client).value!
        let e = expectDenied(m.hv.vmAssignStream(vm, window: 1, stream: 0x43, client: m.client), .assignMatchedStream)
        #expect(e?.streams == [0x43])
        #expect(e?.window == "niso1b")
        #expect(m.hv.ownership.owner(ofStream: StreamID(0x43), smmu: 0) == .host)
        // Another logical SMMU has its own streams: 0x43 of iso is free.
        #expect(m.hv.vmAssignStream(vm, window: 2, stream: 0x43, client: m.client).value != nil)
        let other = m.hv.vmCreate(client: m.client).value!
        expectDenied(m.hv.vmAssignStream(other, window: 2, stream: 0x43, client: m.client), .assignForeignStream)
        #expect(m.hv.ownership.owner(ofStream: StreamID(0x43), smmu: 1) == .vm(vm))
        #expect(m.audit.events.count == 2)
    }
}

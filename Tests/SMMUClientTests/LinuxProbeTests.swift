import Synchronization
import Testing
import WireProtocol

@testable import SMMUClient

/// A register store for one 4 KiB-page window: IDRs fixed, writes stored (SMR fields kept to 15 bits),
/// every other read returns the last value written. Just enough for the probe to run; what the test
/// checks is the probe's own access sequence, recorded by the server.
/// `refuse`: a write to this offset is answered FORBIDDEN.
func registerFile(base: UInt64, idr: [UInt64: UInt64], deferred: Bool = false, refuse: UInt64? = nil) -> @Sendable (Request) -> (Status, ResponsePayload) {
    let store = Mutex<[UInt64: UInt64]>(idr.merging([0x000: 0x0020_0001]) { a, _ in a })
    return { request in
        if deferred { return (.deferred, .none) }
        switch request {
        case .read(let r): return (.ok, .read(store.withLock { $0[r.address - base] ?? 0 }))
        case .write(let w):
            let offset = w.address - base
            if offset == refuse { return (.forbidden, .none) }
            guard idr[offset] == nil else { return (.ok, .none) }
            let isSMR = (0x800..<0xA00).contains(offset)
            store.withLock { $0[offset] = isSMR ? w.value & 0x7FFF_7FFF : w.value }
            return (.ok, .none)
        default: return (.invalid, .none)
        }
    }
}

@Suite struct LinuxProbeTests {
    /// A small MMU-500: 4 KiB pages, NUMPAGENDXB 1 (4 global pages), 4 SMRs, 3 context banks.
    static let base: UInt64 = 0x4000_0000
    static let idr: [UInt64: UInt64] = [0x20: 0x7C00_1E04, 0x24: 0x1000_0003, 0x28: 0x0000_5555]
    static let window = WindowRecord(base: base, size: 0x8000, pageSize: 0x1000, numContextBanks: 3, numStreamMatchGroups: 4, name: "t0")

    @Test("the probe makes Linux's accesses in Linux's order, with Linux's values, posted or not", arguments: [true, false])
    func sequence(posted: Bool) throws {
        let (c, s) = socketPair()
        let server = TestServer(fd: s, answer: registerFile(base: Self.base, idr: Self.idr))
        let client = SMMUClient(connectedFD: c, timeout: .seconds(10))
        let report = try LinuxProbe(client: client, options: .init(postedWrites: posted)).probe(window: Self.window, index: 0)
        client.close()
        server.join()

        let b = Self.base
        let cb: (UInt64) -> UInt64 = { b + (4 + $0) * 0x1000 }
        enum Access: Equatable { case r(UInt64), w(UInt64, UInt64) }
        var expected: [Access] = [.r(b + 0x20), .r(b + 0x24), .r(b + 0x28), .r(b), .w(b, 0x0020_0001), .r(b + 0x48), .w(b + 0x48, 0)]
        for i: UInt64 in 0..<4 { expected += [.w(b + 0xC00 + 4 * i, 0x2_0000), .w(b + 0x800 + 4 * i, 0)] }
        for i: UInt64 in 0..<3 { expected += [.w(cb(i), 0), .w(cb(i) + 0x58, 0xC000_01FE)] }
        expected += [.w(b + 0x6C, 0xFFFF_FFFF), .w(b + 0x68, 0xFFFF_FFFF), .r(b), .w(b + 0x70, 0xFFFF_FFFF), .r(b + 0x74)]
        expected += [.w(b, 0x0020_1C36), .r(b)]
        expected += [.w(b + 0x800, 0x7FFF), .r(b + 0x800), .w(b + 0x800, 0x7FFF_0000), .r(b + 0x800)]
        let got: [Access] = server.received.withLock { list in
            list.compactMap { r -> Access? in
                switch r.request {
                case .read(let rr): rr.width == 4 ? .r(rr.address) : nil
                case .write(let w): w.width == 4 ? .w(w.address, w.value) : nil
                default: nil
                }
            }
        }
        #expect(got == expected)
        #expect(report.finalSCR0 == 0x0020_1C36 && report.readBackSCR0 == 0x0020_1C36 && report.syncCompleted)
        #expect(report.streamIDMask == 0x7FFF && report.smrMaskMask == 0x7FFF)
        #expect(report.reads + report.writes == expected.count)
        #expect(report.lines.contains("\tstream matching with 4 register groups"))
        #expect(report.lines.last == "\tstreamid mask 0x7fff, smr mask 0x7fff")
    }

    @Test("with disable_bypass=0 the S2CRs are BYPASS and sCR0.USFCFG stays clear")
    func bypass() throws {
        let (c, s) = socketPair()
        let server = TestServer(fd: s, answer: registerFile(base: Self.base, idr: Self.idr))
        let client = SMMUClient(connectedFD: c, timeout: .seconds(10))
        let report = try LinuxProbe(client: client, options: .init(disableBypass: false)).probe(window: Self.window, index: 0)
        client.close()
        server.join()
        #expect(report.finalSCR0 == 0x0020_1836)
        let s2crs = server.received.withLock { $0.compactMap { r -> UInt64? in
            if case .write(let w) = r.request, (0xC00..<0xC10).contains(w.address - Self.base) { w.value } else { nil }
        } }
        #expect(s2crs == [0x1_0000, 0x1_0000, 0x1_0000, 0x1_0000])
    }

    @Test("a refused posted write is reported at its own step, and nothing after the next read is sent", arguments: [true, false])
    func refusedWrite(posted: Bool) throws {
        let (c, s) = socketPair()
        let server = TestServer(fd: s, answer: registerFile(base: Self.base, idr: Self.idr, refuse: 0xC08))
        let client = SMMUClient(connectedFD: c, timeout: .seconds(10))
        #expect(throws: LinuxProbe.Failure.access(window: 0, step: "W32 GR0_S2CR(2)", address: Self.base + 0xC08, status: .forbidden)) {
            try LinuxProbe(client: client, options: .init(postedWrites: posted)).probe(window: Self.window, index: 0)
        }
        client.close()
        server.join()
        // Posted: the writes up to the reset's sCR0 read were in flight (the read is where the CPU would stop);
        // one at a time: nothing after the refused write.
        let last = server.received.withLock { $0.last?.request }
        if posted { #expect(last == .read(ReadRequest(address: Self.base, width: 4))) } else {
            #expect(last == .write(WriteRequest(address: Self.base + 0xC08, value: 0x2_0000, width: 4)))
        }
    }

    @Test("a DEFERRED answer is -EPROBE_DEFER, after a single access")
    func deferred() throws {
        let (c, s) = socketPair()
        let server = TestServer(fd: s, answer: registerFile(base: Self.base, idr: Self.idr, deferred: true))
        let client = SMMUClient(connectedFD: c, timeout: .seconds(10))
        #expect(throws: LinuxProbe.Failure.deferred) { try LinuxProbe(client: client).run(windows: [Self.window]) }
        client.close()
        server.join()
        #expect(server.received.withLock { $0.count } == 1)
    }
}

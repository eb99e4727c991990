import Testing

@testable import WireProtocol

/// Encodes one response and returns its header and payload.
func response(_ op: UInt8, _ status: Status, _ payload: ResponsePayload, tag: UInt32 = 11) -> (FrameHeader, [UInt8]) {
    var out: [UInt8] = [0xEE]  // appending must not disturb what is already there
    ResponseEncoder.append(to: &out, opcode: op, tag: tag, status: status, payload: payload)
    #expect(out[0] == 0xEE)
    let header = FrameHeader(decoding: Array(out[1...]))!
    #expect(Int(header.length) == out.count - 17)
    return (header, Array(out[17...]))
}

@Suite struct ResponseCodecTests {
    @Test("a response echoes the tag and sets the response bit")
    func header() {
        let (h, _) = response(Opcode.vmDonate.rawValue, .invalid, .none, tag: 0xFFFF_FFFE)
        #expect(h.opcode == 0x91 && h.tag == 0xFFFF_FFFE && h.statusCode == .invalid && h.length == 0)
        #expect(Opcode(response: 0x91) == .vmDonate)
        #expect(Opcode(response: 0x11) == nil && Opcode(response: 0x80) == nil)
        // EVENTS' response shares 0xB0 with event messages (0x30 | 0x80).
        #expect(Opcode(response: 0xB0) == .events && Opcode.events.responseCode == Opcode.event.rawValue)
    }

    @Test("READ, DMA and VM_CREATE keep their fixed size whatever the status")
    func fixedSizes() {
        for status in Status.allCases where status != .malformed && status != .unsupported {
            let (_, read) = response(0x02, status, .read(0x1122_3344_5566_7788))
            #expect(read == (status == .ok ? [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11] : Array(repeating: 0, count: 8)))
            let (_, vm) = response(0x10, status, .vmCreate(9))
            #expect(vm == (status == .ok ? [9, 0, 0, 0] : [0, 0, 0, 0]))
            let (_, dma) = response(0x04, status, .dma(DMAResponse(physicalAddress: 0xABCD_0000, fault: 5)))
            #expect(dma.count == 16)
            let decoded = dma.withUnsafeBytes { try? DMAResponse.decode($0) }
            let filled = status == .ok || status == .fault
            #expect(decoded == (filled ? DMAResponse(physicalAddress: 0xABCD_0000, fault: 5) : DMAResponse(physicalAddress: 0, fault: 0)))
        }
        // v1.1: DMA_CACHED always carries 24 bytes (filled for OK and FAULT), DMA_EPOCH 8.
        let cached = CachedDMAResult(physicalAddress: 0x8060_1234, fault: 0, sizeShift: 21, access: 3, reachShift: 30,
                                     epoch: 0x1_0000_0007)
        for status in Status.allCases where status != .malformed && status != .unsupported {
            let (_, bytes) = response(0x09, status, .cachedDMA(cached))
            #expect(bytes.count == 24)
            let decoded = bytes.withUnsafeBytes { try? CachedDMAResult.decode($0) }
            let filled = status == .ok || status == .fault
            #expect(decoded == (filled ? cached : CachedDMAResult(physicalAddress: 0, fault: 0)))
            #expect(response(0x08, status, .epoch(0x0102)).1 == (status == .ok ? [2, 1, 0, 0, 0, 0, 0, 0] : Array(repeating: 0, count: 8)))
        }
        #expect(Array(response(0x09, .ok, .cachedDMA(cached)).1[12..<16]) == [21, 3, 30, 0], "size_shift, access, reach_shift (v1.2), u8 reserved")
        // Given no payload at all, an OK READ still carries 8 zero bytes.
        #expect(response(0x02, .ok, .none).1 == Array(repeating: 0, count: 8))
        // A payload of the wrong kind cannot change a fixed size.
        #expect(response(0x02, .ok, .bytes([1, 2, 3])).1 == Array(repeating: 0, count: 8))
        #expect(response(0x10, .ok, .text("123456")).1 == [0, 0, 0, 0])
        #expect(response(0x03, .ok, .bytes([1])).1.isEmpty)
    }

    @Test("variable payloads are empty unless OK; MALFORMED and UNSUPPORTED carry nothing")
    func variableSizes() {
        #expect(response(0x21, .ok, .text("{\"a\":1}")).1 == Array("{\"a\":1}".utf8))
        #expect(response(0x21, .forbidden, .text("{}")).1.isEmpty)
        #expect(response(0x05, .ok, .bytes([1, 2, 3])).1 == [1, 2, 3])
        #expect(response(0x05, .denied, .bytes([1, 2, 3])).1.isEmpty)
        #expect(response(0x02, .malformed, .read(5)).1.isEmpty)
        #expect(response(0x04, .unsupported, .dma(DMAResponse(physicalAddress: 1, fault: 1))).1.isEmpty)
        let (h, p) = response(0x7E, .unsupported, .none)
        #expect(h.opcode == 0xFE && p.isEmpty)
        let hello = HelloResponse(state: .finalized, windows: [])
        #expect(response(0x01, .forbidden, .hello(hello)).1.isEmpty)
    }

    @Test("HELLO response round trip: 32-byte records, NUL-padded names")
    func helloRoundTrip() throws {
        let windows = [
            WindowRecord(base: 0x0800_0000, size: 0x100_0000, pageSize: 0x10000, numContextBanks: 120, numStreamMatchGroups: 120, name: "niso1a"),
            WindowRecord(base: 0x1000_0000, size: 0x100_0000, pageSize: 0x1000, numContextBanks: 1, numStreamMatchGroups: 65535, name: "12345678"),
        ]
        let hello = HelloResponse(state: .notFinalized, windows: windows)
        let (_, p) = response(0x01, .ok, .hello(hello))
        #expect(p.count == 16 + 64 && p.count == hello.encodedLength)
        #expect(Array(p[16 + 24..<16 + 32]) == Array("niso1a".utf8) + [0, 0])
        #expect(p.loadLE(UInt16.self, at: 16 + 20) == 120)
        let decoded = try p.withUnsafeBytes { try HelloResponse.decode($0) }
        #expect(decoded == hello && decoded.state == .notFinalized)
        #expect(throws: WireError.self) { try Array(p.dropLast()).withUnsafeBytes { try HelloResponse.decode($0) } }
    }

    @Test("an event message has opcode 0xB0, tag 0, status 0 and 12 bytes")
    func eventLayout() {
        var out: [UInt8] = []
        Event(window: 1, line: 128, level: 0).encode(into: &out)
        #expect(out == [0x53, 0x4D, 1, 0xB0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test("header bytes are little-endian at the spec's offsets")
    func headerLayout() {
        let h = FrameHeader(opcode: 0x84, tag: 0x0403_0201, status: 8, length: 16)
        #expect(h.encoded == [0x53, 0x4D, 0x01, 0x84, 1, 2, 3, 4, 8, 0, 0, 0, 16, 0, 0, 0])
    }
}

import Testing

@testable import WireProtocol

@Suite struct FrameDecoderTests {
    /// All sample requests back to back, with distinct tags.
    static let pipeline: [UInt8] = sampleRequests.enumerated().flatMap { i, r in r.encoded(tag: UInt32(100 + i)) }

    @Test("pipelined frames split at every byte boundary decode to the same requests")
    func splitEverywhere() {
        let bytes = Self.pipeline
        for cut in 0...bytes.count {
            let out = decodeAll([Array(bytes[..<cut]), Array(bytes[cut...])])
            #expect(requests(out) == sampleRequests, "cut at \(cut)")
        }
    }

    @Test("byte-at-a-time feeding yields every frame with its tag, in order")
    func byteAtATime() {
        let out = decodeAll(Self.pipeline.map { [$0] })
        #expect(requests(out) == sampleRequests)
        let tags = out.map { v, _ -> UInt32 in if case .request(_, let h) = v { h.tag } else { 0 } }
        #expect(tags == (0..<sampleRequests.count).map { UInt32(100 + $0) })
    }

    @Test("bad magic is MALFORMED with opcode and tag as received, then nothing more")
    func badMagic() {
        var frame = Request.read(ReadRequest(address: 0, width: 4)).encoded(tag: 0xDEAD)
        frame[0] = 0x54
        let out = decodeAll([frame + Request.stats.encoded(tag: 1)])
        #expect(out.count == 1)
        #expect(out.first?.0 == .malformed(opcode: 0x02, tag: 0xDEAD, .badMagic(0x4D54)))
    }

    @Test("an unknown version is MALFORMED")
    func badVersion() {
        var frame = Request.stats.encoded(tag: 9)
        frame[2] = 2
        #expect(decodeAll([frame]).map(\.0) == [.malformed(opcode: 0x20, tag: 9, .unknownVersion(2))])
    }

    @Test("length 65536 is accepted and 65537 refused before any payload arrives")
    func maxLength() throws {
        let data = [UInt8](repeating: 0x5A, count: 65536 - 16)
        let big = Request.memWrite(MemWriteRequest(address: 0x4000, bytes: data))
        let frame = big.encoded(tag: 3)
        #expect(frame.count == 16 + 65536)
        #expect(requests(decodeAll([frame])) == [big])
        // An unknown opcode may carry the maximum too; it is skipped whole.
        var unknown = FrameHeader(opcode: 0x7E, tag: 4, length: 65536).encoded
        unknown.appendZeros(65536)
        #expect(requests(decodeAll([unknown + Request.dump.encoded(tag: 5)])) == [nil, .dump])

        let over = FrameHeader(opcode: 0x06, tag: 6, length: 65537).encoded
        #expect(decodeAll([over]).map(\.0) == [.malformed(opcode: 0x06, tag: 6, .lengthTooLarge(65537))])
    }

    @Test("an unknown opcode is UNSUPPORTED at once, its payload skipped across chunks, the stream goes on")
    func unknownOpcodeSkipped() {
        var unknown = FrameHeader(opcode: 0x55, tag: 42, length: 1000).encoded
        unknown += (0..<1000).map { UInt8(truncatingIfNeeded: $0) }
        let read = Request.read(ReadRequest(address: 0x0800_0024, width: 4))
        let bytes = unknown + read.encoded(tag: 43)
        for chunkSize in [1, 7, 16, 17, 999, 1016, 1017] {
            let chunks = stride(from: 0, to: bytes.count, by: chunkSize).map {
                Array(bytes[$0..<min($0 + chunkSize, bytes.count)])
            }
            let out = decodeAll(chunks)
            #expect(out.count == 2, "chunk \(chunkSize)")
            #expect(out.first?.0 == .unsupported(FrameHeader(opcode: 0x55, tag: 42, length: 1000)))
            #expect(requests(Array(out.dropFirst())) == [read])
        }
        // The verdict comes with the header alone, before the payload.
        #expect(decodeAll([Array(unknown[..<16])]).count == 1)
    }

    @Test("the event opcode and response opcodes sent as requests are UNSUPPORTED, not MALFORMED")
    func nonRequestOpcodes() {
        for code: UInt8 in [0xB0, 0x82, 0x00, 0xFF] {
            let frame = FrameHeader(opcode: code, tag: 1, length: 0).encoded
            #expect(decodeAll([frame + Request.stats.encoded(tag: 2)]).map(\.0).count == 2)
            guard case .unsupported = decodeAll([frame]).first?.0 else {
                Issue.record("0x\(String(code, radix: 16)) not unsupported")
                continue
            }
        }
    }

    @Test("readInto fills the buffer directly and partial headers wait for more")
    func readIntoDirect() {
        var decoder = FrameDecoder()
        let frame = Request.vmDestroy(vm: 7).encoded(tag: 8)
        _ = decoder.readInto(minimumSpace: 10) { space in
            space.copyBytes(from: frame[..<10])
            return 10
        }
        #expect(decoder.next { v, _ in v } == nil)
        #expect(decoder.bufferedByteCount == 10)
        _ = decoder.readInto { space in
            space.copyBytes(from: frame[10...])
            return frame.count - 10
        }
        let got = decoder.next { v, p in (v, Array(p)) }
        #expect(got?.0 == .request(.vmDestroy, FrameHeader(opcode: 0x13, tag: 8, length: 4)))
        #expect(got?.1 == [7, 0, 0, 0])
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test("responses mode decodes responses and events of any opcode")
    func responsesMode() throws {
        var out: [UInt8] = []
        ResponseEncoder.append(to: &out, opcode: 0x02, tag: 1, status: .ok, payload: .read(0x7C00_1E80))
        Event(window: 3, line: 1, level: 1).encode(into: &out)
        let decoded = decodeAll([out], mode: .responses)
        #expect(decoded.count == 2)
        #expect(decoded[0].0 == .message(FrameHeader(opcode: 0x82, tag: 1, length: 8)))
        #expect(decoded[0].1.loadLE(UInt64.self, at: 0) == 0x7C00_1E80)
        #expect(decoded[1].0 == .message(FrameHeader(opcode: 0xB0, tag: 0, length: 12)))
        let event = try decoded[1].1.withUnsafeBytes { try Event.decode($0) }
        #expect(event == Event(window: 3, line: 1, level: 1))
    }
}

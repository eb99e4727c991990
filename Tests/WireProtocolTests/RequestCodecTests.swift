import Testing

@testable import WireProtocol

/// One request of every opcode, with non-trivial field values.
let sampleRequests: [Request] = [
    .hello(HelloRequest(role: .host, name: "linux-el1")),
    .read(ReadRequest(address: 0x0800_0020, width: 4)),
    .write(WriteRequest(address: 0x0880_0020, value: 0x1234_5678_9ABC_DEF0, width: 8)),
    .dma(DMARequest(window: 2, streamID: 0x7F, iova: 0xFFFF_1000, flags: [.write, .privileged])),
    .mcDMA(MCDMARequest(client: 0x63, iova: 0x8000_1000, flags: [.write])),
    .memRead(MemReadRequest(address: 0x8000_0000, length: 4096)),
    .memWrite(MemWriteRequest(address: 0x8000_1000, bytes: [1, 2, 3, 0xFF, 0x80])),
    .memMap(MemMapRequest(address: 0x8000_0000, size: 0x20_0000, offset: 0x1000)),
    .vmCreate,
    .vmDonate(VMDonateRequest(vm: 3, address: 0x9000_0000, size: 0x4000)),
    .vmAssignStream(VMAssignStreamRequest(vm: 3, window: 1, streamID: 0x29)),
    .vmDestroy(vm: 3),
    .stats, .dump, .finalize, .events,
    .dmaEpoch, .ring,
    .dmaCached(DMARequest(window: 1, streamID: 0x8, iova: 0x20_1234, flags: [.write])),
    .dmaPrefetch(DMAPrefetchRequest(access: DMARequest(window: 0, streamID: 0x10, iova: 0x10_0000, flags: []), pages: 32)),
    .trace(TraceControlRequest(.start, maxBytes: 1 << 20, path: "/var/lib/smmu-hypd/boot.smmutrace")),
]

/// Feeds `bytes` to a fresh request decoder in the given chunks and collects every verdict with its payload.
func decodeAll(_ chunks: [[UInt8]], mode: FrameDecoder.Mode = .requests) -> [(FrameDecoder.Verdict, [UInt8])] {
    var decoder = FrameDecoder(mode: mode, initialCapacity: 64)
    var out: [(FrameDecoder.Verdict, [UInt8])] = []
    for chunk in chunks {
        decoder.append(chunk)
        while let v = decoder.next({ verdict, payload in (verdict, Array(payload)) }) { out.append(v) }
    }
    return out
}

/// The requests a verdict list decodes to (nil for a verdict that is not a request).
func requests(_ verdicts: [(FrameDecoder.Verdict, [UInt8])]) -> [Request?] {
    verdicts.map { verdict, payload in
        guard case .request(let op, _) = verdict else { return nil }
        return try? Request.decode(opcode: op, payload: payload)
    }
}

@Suite struct RequestCodecTests {
    @Test("every request survives encode, frame decoding and payload decoding", arguments: sampleRequests)
    func roundTrip(_ request: Request) throws {
        let bytes = request.encoded(tag: 0xA5A5_0001)
        let header = try #require(FrameHeader(decoding: bytes))
        #expect(header.magic == 0x4D53 && bytes[0] == 0x53 && bytes[1] == 0x4D)
        #expect(header.opcode == request.opcode.rawValue && header.tag == 0xA5A5_0001 && header.status == 0)
        #expect(Int(header.length) == bytes.count - 16)
        #expect(request.opcode.requestSize?.admits(Int(header.length)) == true)
        let decoded = decodeAll([bytes])
        #expect(requests(decoded) == [request])
    }

    @Test("payload sizes are exactly the spec's")
    func sizes() {
        let expected: [Opcode: PayloadSize] = [
            .hello: .between(8, 72), .read: .exactly(16), .write: .exactly(24), .dma: .exactly(24), .mcDMA: .exactly(24),
            .memRead: .exactly(16), .memWrite: .between(16, 65536), .memMap: .exactly(24), .vmCreate: .exactly(0),
            .vmDonate: .exactly(24), .vmAssignStream: .exactly(12), .vmDestroy: .exactly(4), .stats: .exactly(0),
            .dump: .exactly(0), .finalize: .exactly(0), .events: .exactly(0),
            .dmaEpoch: .exactly(0), .dmaCached: .exactly(24), .dmaPrefetch: .exactly(24), .ring: .exactly(0),
            .trace: .between(16, 16 + 4096),
        ]
        for op in Opcode.allCases where op.isRequest {
            #expect(op.requestSize == expected[op], "\(op)")
        }
        #expect(Opcode.event.requestSize == nil)
    }

    @Test("a wrong payload length for every opcode is MALFORMED and closes", arguments: Opcode.allCases.filter(\.isRequest))
    func wrongLength(_ op: Opcode) throws {
        let size = try #require(op.requestSize)
        let bad: [Int]
        switch size {
        case .exactly(let n): bad = n == 0 ? [1, 4] : [n - 1, n + 1, 0]
        case .between(let lo, let hi): bad = hi < 65536 ? [lo - 1, hi + 1] : [lo - 1]
        }
        for length in bad {
            var frame = FrameHeader(opcode: op.rawValue, tag: 77, length: UInt32(length)).encoded
            frame.appendZeros(length)
            frame += Request.stats.encoded(tag: 78)
            let out = decodeAll([frame])
            #expect(out.count == 1, "\(op) \(length)")
            guard case .malformed(let code, let tag, let err) = out.first?.0 else {
                Issue.record("\(op) length \(length) not malformed: \(out)")
                continue
            }
            #expect(code == op.rawValue && tag == 77)
            #expect(err == .wrongPayloadLength(opcode: op.rawValue, length: length, expected: size))
        }
    }

    @Test("a HELLO name of 64 bytes is accepted, 65 refused")
    func helloNameLimit() {
        let ok = Request.hello(HelloRequest(role: .admin, name: String(repeating: "n", count: 64)))
        #expect(requests(decodeAll([ok.encoded(tag: 1)])) == [ok])
        let long = Request.hello(HelloRequest(role: .admin, name: String(repeating: "n", count: 65)))
        guard case .malformed(0x01, 1, .wrongPayloadLength) = decodeAll([long.encoded(tag: 1)]).first?.0 else {
            Issue.record("65-byte name accepted")
            return
        }
    }

    @Test("MEM_WRITE whose declared count differs from its bytes is MALFORMED")
    func memWriteCount() {
        var frame = Request.memWrite(MemWriteRequest(address: 0x1000, bytes: [9, 9, 9, 9])).encoded(tag: 5)
        frame[16 + 8] = 3  // declare 3 bytes, carry 4
        let out = decodeAll([frame])
        #expect(out.count == 1)
        #expect(out.first?.0 == .malformed(opcode: 0x06, tag: 5, .countMismatch(declared: 3, actual: 4)))
        #expect(throws: WireError.countMismatch(declared: 3, actual: 4)) {
            try Request.decode(opcode: .memWrite, payload: Array(frame[16...]))
        }
    }

    @Test("reserved fields are sent as zero and ignored on receipt")
    func reservedFields() throws {
        var frame = Request.read(ReadRequest(address: 0x10, width: 8)).encoded(tag: 1)
        #expect(frame[28..<32].allSatisfy { $0 == 0 })
        frame[28] = 0xEE
        #expect(requests(decodeAll([frame])) == [.read(ReadRequest(address: 0x10, width: 8))])
    }
}

// libFuzzer target: arbitrary bytes into one connection's session (frame decoder + dispatcher +
// hypervisor). Oracle: nothing crashes, every response is a well-formed frame answering a request,
// and there are exactly as many responses as the spec says the bytes ask for.
import FuzzSupport
import PKVM
import SMMUDaemon
import SMMUModel
import WireProtocol

final class DiscardingServer: ServerHandle {
    func send(_ bytes: [UInt8], to connection: ConnectionID) {}
}

/// How many responses the spec requires for `input`, sent after a successful host HELLO.
func expectedResponses(_ input: [UInt8]) -> Int {
    var i = 0
    var n = 0
    while input.count - i >= FrameHeader.size {
        let header = input.withUnsafeBytes { FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: $0[i..<(i + 16)])) }
        let length = Int(header.length)
        if FrameDecoder.framingError(header) != nil { return n + 1 }
        guard let op = Opcode(rawValue: header.opcode), let size = op.requestSize else {
            n += 1                                   // UNSUPPORTED, payload skipped
            i += FrameHeader.size + length
            continue
        }
        if !size.admits(length) { return n + 1 }     // MALFORMED, closed
        if input.count - i < FrameHeader.size + length { return n }
        if op == .memWrite {
            let declared = input.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: i + 24, as: UInt32.self) }
            if Int(UInt32(littleEndian: declared)) != length - 16 { return n + 1 }
        }
        if op == .memMap || op == .dmaEpoch || op == .ring { return n + 1 }   // no fd: MALFORMED, closed
        n += 1
        if op == .events { return n }                // the connection now only carries events
        i += FrameHeader.size + length
    }
    return n
}

/// Built once; each input gets it back as new (see FuzzSupport), and a dispatcher of its own.
nonisolated(unsafe) let machine = ReusedHypervisor(policy: HypervisorPolicy(
    topology: .generic4K(base: 0x2B40_0000),
    hostRAM: [PhysicalRange(base: 0x8000_0000, size: 1 << 20)],
    hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 256 << 10)))

/// One for the process: a decoder allocates its buffer when made (a page fault per page, each time).
nonisolated(unsafe) var responseDecoder = FrameDecoder(mode: .responses)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProtocol(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let hypervisor = machine.begin(finalized: size > 0 && data[0] & 1 == 0)
    let dispatcher = Dispatcher(hypervisor: hypervisor)
    let session = dispatcher.makeSession(connection: ConnectionID(rawValue: 1), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                         server: DiscardingServer())
    var output: [UInt8] = []
    var fds: [Int32] = []
    let hello = Request.hello(HelloRequest(role: .host, name: "fuzz")).encoded(tag: 0)
    _ = hello.withUnsafeBytes { session.receive($0, fds: &fds, output: &output) }
    output.removeAll()

    // Feed in chunks whose sizes come from the input itself, as a socket would split it.
    var responses = 0
    var offset = 0
    var verdict = SessionVerdict.keepOpen
    func account() {
        responseDecoder.append(output)
        while let ok = responseDecoder.next({ verdict, _ -> Bool in
            guard case .message(let h) = verdict, h.magic == FrameHeader.magic, h.version == 1,
                  Status(rawValue: h.status) != nil else { return false }
            // 0xB0 is both an event and the response to EVENTS (0x30 | 0x80); only events carry 12 bytes.
            if !(h.opcode == Opcode.event.rawValue && h.length == UInt32(Event.size)) { responses += 1 }
            return h.opcode & 0x80 != 0
        }) {
            if !ok { fatalError("a response that is not a well-formed response frame") }
        }
        if responseDecoder.bufferedByteCount != 0 { fatalError("a truncated response") }
        output.removeAll(keepingCapacity: true)
    }
    while offset < input.count && verdict == .keepOpen && session.wantsInput {
        let chunk = max(1, Int(input[offset]) * 7 % 257)
        let end = min(input.count, offset + chunk)
        verdict = input[offset..<end].withUnsafeBytes { session.receive($0, fds: &fds, output: &output) }
        offset = end
        account()
        while verdict == .keepOpen && session.hasPendingInput {
            let before = responses
            verdict = session.resumeInput(output: &output)
            account()
            if responses == before { break }
        }
    }
    session.closed()
    machine.end()
    let expected = expectedResponses(input)
    if responses != expected {
        // -O drops precondition messages: say it before trapping.
        fatalError("\(responses) responses for \(expected) requests")
    }
    return 0
}

/// A stand-in core until the hypervisor dispatcher is wired into `smmu-hypd` (replace the factory in
/// Sources/smmu-hypd). It speaks just enough of protocol v1 to exercise the lifecycle end to end: HELLO is OK,
/// FINALIZE finalizes, STATS answers, every other request is DEFERRED before finalization and UNSUPPORTED after.
/// It denies nothing and writes no audit.
public final class InterimCore: DaemonCore, SessionFactory {
    public var onFinalized: (() -> Void)?
    private(set) var finalized = false
    private var stopping = false
    private var operations: UInt64 = 0

    public init(services: DaemonServices) {}

    public var sessionFactory: SessionFactory { self }

    public func finalize() -> Bool {
        finalized = true
        return true
    }

    public func beginStopping() { stopping = true }

    public func status() -> DaemonStatus {
        DaemonStatus(state: stopping ? "stopping" : finalized ? "finalized" : "not finalized", operations: operations, denials: 0)
    }

    public func makeSession(connection: ConnectionID, peer: PeerCredentials, server: ServerHandle) -> Session {
        InterimSession(core: self)
    }

    fileprivate func answer(opcode: UInt8, tag: UInt32, payload: ArraySlice<UInt8>, output: inout [UInt8]) {
        operations += 1
        var status: UInt32 = finalized ? 6 : 1  // UNSUPPORTED / DEFERRED
        var response: [UInt8] = []
        if stopping {
            status = 10
        } else if opcode == 0x01 {  // HELLO: server_version 1, state, no windows
            status = 0
            response = le32(1) + le32(finalized ? 1 : 0) + le32(0) + le32(0)
        } else if opcode == 0x22 {  // FINALIZE
            status = 0
            if !finalized, finalize() { onFinalized?() }
        } else if opcode == 0x20 {  // STATS
            status = 0
            response = Array("{\"operations\":\(operations),\"interim\":true}".utf8)
        } else if opcode == 0x02 || opcode == 0x04 {
            response = [UInt8](repeating: 0, count: opcode == 0x02 ? 8 : 16)
        }
        output += le16(0x4D53) + [1, opcode | 0x80] + le32(tag) + le32(status) + le32(UInt32(response.count)) + response
    }
}

/// Frames requests for `InterimCore`; a bad header is answered MALFORMED and closes the connection.
private final class InterimSession: Session {
    private let core: InterimCore
    private var buffer: [UInt8] = []
    init(core: InterimCore) { self.core = core }

    func receive(_ input: UnsafeRawBufferPointer, fds: inout [Int32], output: inout [UInt8]) -> SessionVerdict {
        buffer += input
        while buffer.count >= 16 {
            let magic = UInt16(buffer[0]) | UInt16(buffer[1]) << 8
            let tag = UInt32(buffer[4]) | UInt32(buffer[5]) << 8 | UInt32(buffer[6]) << 16 | UInt32(buffer[7]) << 24
            let length = Int(buffer[12]) | Int(buffer[13]) << 8 | Int(buffer[14]) << 16 | Int(buffer[15]) << 24
            guard magic == 0x4D53, buffer[2] == 1, length <= 65536 else {
                output += le16(0x4D53) + [1, buffer[3] | 0x80] + le32(tag) + le32(5) + le32(0)
                buffer = []
                return .closeAfterFlush
            }
            guard buffer.count >= 16 + length else { break }
            core.answer(opcode: buffer[3], tag: tag, payload: buffer[16..<(16 + length)], output: &output)
            buffer.removeFirst(16 + length)
        }
        return .keepOpen
    }

    func closed() {}
    var wantsInput: Bool { true }
}

private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }

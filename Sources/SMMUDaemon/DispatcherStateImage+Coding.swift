import PKVM
import WireProtocol

/// The byte layout of the daemon layer's image: the same envelope and field coding as the hypervisor's
/// (PKVM's StateImageCoding.swift), fields in declaration order.
extension DispatcherStateImage {
    public func encoded() -> [UInt8] {
        var w = StateImageWriter.sealable()
        w.array(operations) { w, o in
            w.int(o.roleSlot)
            w.u8(o.opcode)
            w.u32(o.status)
            w.int(o.count)
        }
        for v in [connectionsOpened, connectionsOpen, unsupported, malformed] { w.int(v) }
        let c = serverCounters
        for v in [c.accepted, c.refused, c.evicted, c.helloTimeouts, c.closedForOutput, c.closedForUnreadEvents] { w.u64(v) }
        w.array(interruptLines) { w, lines in w.array(lines) { $0.bool($1) } }
        w.array(sessions) { w, s in
            w.u64(s.id)
            w.u32(UInt32(bitPattern: s.peer.pid))
            w.u32(s.peer.uid)
            w.u32(s.peer.gid)
            w.u32(s.role?.rawValue ?? 0)
            w.string(s.clientName)
            for b in [s.subscribed, s.closing, s.heldBack, s.epochPage, s.ring, s.input.isClosed] { w.bool(b) }
            w.array(s.mappedBases) { $0.u64($1) }
            w.data(s.input.unread)
            w.int(s.input.skipRemaining)
            w.data(s.output)
        }
        w.bool(audit != nil)
        if let audit {
            let c = audit.counters
            for v in [c.denials, c.written, c.coalesced, c.summaries, c.stderrFallback, c.lost, c.awaitingSummary] { w.u64(v) }
            w.u64(audit.sequence)
            w.array(audit.windows) { w, x in
                w.u32(UInt32(bitPattern: x.pid))
                w.u32(x.uid)
                w.string(x.rule)
                w.string(x.client)
                w.u64(x.ageNanoseconds)
                w.int(x.written)
                w.u64(x.suppressed)
                w.u64(x.awaitingSince)
            }
        }
        switch finalizedBy {
        case nil: w.u8(0)
        case .timer: w.u8(1)
        case .admin(let c): w.u8(2); w.client(c)
        case .host(let c): w.u8(3); w.client(c)
        }
        return w.sealed(magic: Self.magic, version: Self.formatVersion)
    }

    public init(decoding bytes: some Collection<UInt8>) throws(StateImageError) {
        var r = try StateImageEnvelope.open(bytes, magic: Self.magic, version: Self.formatVersion)
        operations = try r.array(minimumSize: 21) { r throws(StateImageError) in
            let o = OperationCount(roleSlot: try r.int(), opcode: try r.u8(), status: try r.u32(), count: try r.int())
            guard (0...3).contains(o.roleSlot), Status(rawValue: o.status) != nil, o.count > 0 else {
                throw .corrupt(reason: "request counter \(o)")
            }
            return o
        }
        connectionsOpened = try r.int()
        connectionsOpen = try r.int()
        unsupported = try r.int()
        malformed = try r.int()
        guard [connectionsOpened, connectionsOpen, unsupported, malformed].allSatisfy({ $0 >= 0 }) else {
            throw .corrupt(reason: "a negative connection or framing counter")
        }
        var c = ConnectionCounters()
        c.accepted = try r.u64()
        c.refused = try r.u64()
        c.evicted = try r.u64()
        c.helloTimeouts = try r.u64()
        c.closedForOutput = try r.u64()
        c.closedForUnreadEvents = try r.u64()
        serverCounters = c
        interruptLines = try r.array(minimumSize: 8) { r throws(StateImageError) in
            try r.array { r throws(StateImageError) in try r.bool() }
        }
        var previous: UInt64?
        sessions = try r.array(minimumSize: 60) { r throws(StateImageError) in
            let id = try r.u64()
            guard previous.map({ id > $0 }) ?? true else { throw .corrupt(reason: "session ids out of order at \(id)") }
            previous = id
            let peer = PeerCredentials(pid: Int32(bitPattern: try r.u32()), uid: try r.u32(), gid: try r.u32())
            let at = r.offset
            let rawRole = try r.u32()
            guard rawRole == 0 || Role(rawValue: rawRole) != nil else { throw .corrupt(reason: "byte \(at): no role \(rawRole)") }
            let name = try r.string()
            let flags = try (0..<6).map { _ throws(StateImageError) in try r.bool() }
            let mapped = try r.array(minimumSize: 8) { r throws(StateImageError) in try r.u64() }
            let unread = try r.data()
            let skip = try r.int()
            guard skip >= 0, skip <= Int(FrameHeader.maxPayloadLength) else { throw .corrupt(reason: "session \(id): skip \(skip)") }
            return SessionImage(id: id, peer: peer, role: Role(rawValue: rawRole), clientName: name, subscribed: flags[0],
                                closing: flags[1], heldBack: flags[2], mappedBases: mapped, epochPage: flags[3],
                                ring: flags[4], input: .init(unread: unread, skipRemaining: skip, isClosed: flags[5]),
                                output: try r.data())
        }
        if try r.bool() {
            var k = JournalAuditSink.Counters()
            k.denials = try r.u64()
            k.written = try r.u64()
            k.coalesced = try r.u64()
            k.summaries = try r.u64()
            k.stderrFallback = try r.u64()
            k.lost = try r.u64()
            k.awaitingSummary = try r.u64()
            let sequence = try r.u64()
            let windows = try r.array(minimumSize: 56) { r throws(StateImageError) in
                AuditWindow(pid: Int32(bitPattern: try r.u32()), uid: try r.u32(), rule: try r.string(),
                            client: try r.string(), ageNanoseconds: try r.u64(), written: try r.int(),
                            suppressed: try r.u64(), awaitingSince: try r.u64())
            }
            guard windows.reduce(UInt64(0), { $0 &+ $1.suppressed }) == k.awaitingSummary else {
                throw .corrupt(reason: "the audit windows' counts do not add up to the denials awaiting a summary")
            }
            audit = AuditSinkImage(counters: k, sequence: sequence, windows: windows)
        } else {
            audit = nil
        }
        switch try r.u8() {
        case 0: finalizedBy = nil
        case 1: finalizedBy = .timer
        case 2: finalizedBy = .admin(try r.client())
        case 3: finalizedBy = .host(try r.client())
        case let kind: throw .corrupt(reason: "finalizer kind \(kind)")
        }
        guard r.isAtEnd else { throw .corrupt(reason: "\(r.bytes.count - r.offset) bytes left after the last field") }
    }
}

private extension StateImageWriter {
    /// A finalizer's client: name, pid, uid.
    mutating func client(_ c: ClientIdentity) {
        string(c.name)
        u32(UInt32(bitPattern: c.pid))
        u32(c.uid)
    }
}

private extension StateImageReader {
    mutating func client() throws(StateImageError) -> ClientIdentity {
        ClientIdentity(name: try string(), pid: Int32(bitPattern: try u32()), uid: try u32())
    }
}

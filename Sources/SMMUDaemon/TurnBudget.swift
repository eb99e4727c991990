import WireProtocol

/// G8 per turn of the serial queue: how much of one connection's input the queue runs before it serves anyone else.
///
/// Every request's own work is bounded (`smmu-bench --worst-case-only`: each under 10 ms), but a client that
/// pipelines them would hold the queue for their sum: one 64 KiB read of refused VM_DONATEs is 1,638 of them, seconds
/// in a release build, and one wake-up reads four such chunks, past the 10 s watchdog. So each call into a session
/// (a read, a resumption of held-back input, a ring exchange) spends at most `units`, each request the cost
/// of its opcode, and what is left waits for a later turn, after every other connection's. The budget counts requests,
/// never time, so a restart's replay of the journal stops exactly where the live daemon stopped. Events count too:
/// each batch handed to a subscriber is a unit.
enum TurnBudget {
    /// Per call: 256 register accesses or translations, or 16 of the middle class, or one of the heaviest.
    static let units = 256

    /// A request's share of a turn, by how much its worst case may cost (the benchmark's rows): one unit for a
    /// register access or a translation (microseconds), 16 for what copies up to 64 KiB or probes up to 129 pages,
    /// a whole turn for what may scan tables, scrub 64 MiB, format the whole state (DUMP; STATS, whose JSON takes
    /// about 1.7 ms for the admin) or make a system call.
    static func cost(of op: Opcode) -> Int {
        switch op {
        case .hello, .read, .write, .dma, .dmaCached, .mcDMA, .events, .event:
            1
        case .memRead, .memWrite, .dmaPrefetch:
            16
        case .vmCreate, .vmDonate, .vmAssignStream, .vmDestroy, .dump, .stats, .finalize, .protFinalize, .trace, .memMap,
             .dmaEpoch, .ring:
            units
        }
    }

    /// A frame the decoder answers without the dispatcher (UNSUPPORTED, MALFORMED).
    static let framingCost = 1
}

extension Dispatcher {
    /// `handle`, charged to the turn: the opcode's cost, plus one unit per subscriber an event went to (one host's
    /// WRITE that toggles an interrupt line is a send to every EVENTS connection: 512 such writes with 1,000
    /// subscribers held the queue for 2.9 s in a debug build before they were charged).
    func handle(_ op: Opcode, header: FrameHeader, payload: UnsafeRawBufferPointer, fds: inout [Int32],
                context: SessionContext, output: inout [UInt8], spent: inout Int) -> SessionEffect {
        let delivered = events.deliveries
        let effect = handle(op, header: header, payload: payload, fds: &fds, context: context, output: &output)
        spent += TurnBudget.cost(of: op) + events.deliveries - delivered
        return effect
    }
}

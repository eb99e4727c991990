import PKVM
import WireProtocol

/// EVENTS: which connections listen, and the interrupt-line levels they last heard, per window.
///
/// Lines are recomputed only after what can raise or lower one (a WRITE, a faulting DMA, VM_DESTROY,
/// finalization), and not at all while nobody listens, so READ and WRITE stay cheap.
struct EventsPublisher {
    let hypervisor: Hypervisor
    private var subscribers: [ConnectionID] = []
    /// Last interrupt-line levels sent to subscribers, per window.
    private var lines: [[Bool]]
    /// The MMIO trace, told of every event sent (its order against requests is what a replay checks).
    var trace: TraceRecorder?
    /// Event batches handed to subscribers so far, one per subscriber per change: what a request's fan-out cost
    /// (`TurnBudget`: a WRITE that toggles a line reaches every EVENTS connection).
    private(set) var deliveries = 0

    init(hypervisor: Hypervisor) {
        self.hypervisor = hypervisor
        lines = hypervisor.windows.indices.map { hypervisor.interruptLines(window: $0) }
    }

    var isEmpty: Bool { subscribers.isEmpty }

    /// Sends every line change since the last call to every subscriber (of `window` only, when the change can
    /// only have come from there).
    mutating func publishChanges(window: Int? = nil, to server: ServerHandle?) {
        var bytes: [UInt8] = []
        for w in window.map({ [$0] }) ?? Array(lines.indices) where lines.indices.contains(w) {
            guard hypervisor.interruptLines(window: w, differFrom: lines[w]) else { continue }
            let now = hypervisor.interruptLines(window: w)
            for (line, up) in now.enumerated() where up != lines[w][line] {
                Event(window: UInt32(w), line: UInt32(line), level: up ? 1 : 0).encode(into: &bytes)
            }
            lines[w] = now
        }
        guard !bytes.isEmpty, let server else { return }
        deliveries += subscribers.count
        for c in subscribers {
            server.send(bytes, to: c)
            trace?.event(bytes, to: c)
        }
    }

    /// Adds a subscriber: the others hear what changed so far, then it hears every line that is up now.
    mutating func subscribe(_ connection: ConnectionID, server: ServerHandle?, output: inout [UInt8]) {
        publishChanges(to: server)
        subscribers.append(connection)
        for (w, levels) in lines.enumerated() {
            for (line, up) in levels.enumerated() where up {
                Event(window: UInt32(w), line: UInt32(line), level: 1).encode(into: &output)
            }
        }
    }

    mutating func unsubscribe(_ connection: ConnectionID) { subscribers.removeAll { $0 == connection } }

    /// The levels subscribers last heard, per window (a state image carries them, so that a restored daemon sends
    /// exactly the changes it would have sent).
    var lastSentLines: [[Bool]] { lines }

    /// A restored daemon's subscribers and what they last heard; false (nothing changed) when the windows or their
    /// line counts are not this hypervisor's.
    mutating func restore(subscribers: [ConnectionID], lines: [[Bool]]) -> Bool {
        guard lines.map(\.count) == self.lines.map(\.count) else { return false }
        self.subscribers = subscribers
        self.lines = lines
        return true
    }
}

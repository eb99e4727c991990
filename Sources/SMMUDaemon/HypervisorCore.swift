import Hypervisor
import WireProtocol

/// The daemon's core: the hypervisor and its dispatcher behind the `DaemonCore` seam, with denials
/// going to the journald sink. Lives on the server queue.
public final class HypervisorCore: DaemonCore {
    public let dispatcher: Dispatcher
    private let audit: JournalAuditSink

    public init(services: DaemonServices) throws(HypervisorFactory.Problem) {
        audit = services.audit
        dispatcher = try HypervisorFactory.make(services.configuration, audit: JournalAuditAdapter(sink: services.audit))
        dispatcher.auditCounters = { [audit] in
            let c = audit.counters
            return ["denials": Int(c.denials), "written": Int(c.written), "coalesced": Int(c.coalesced),
                    "summaries": Int(c.summaries), "stderr_fallback": Int(c.stderrFallback), "lost": Int(c.lost),
                    "awaiting_summary": Int(c.awaitingSummary)]
        }
    }

    public var sessionFactory: SessionFactory { dispatcher }

    public func finalize() -> Bool { dispatcher.finalize() }

    public var onFinalized: (() -> Void)? {
        get { dispatcher.onFinalized }
        set { dispatcher.onFinalized = newValue }
    }

    public func beginStopping() { dispatcher.hypervisor.beginStopping() }

    public func status() -> DaemonStatus {
        DaemonStatus(state: "\(dispatcher.hypervisor.lifecycle)", operations: UInt64(dispatcher.operationCount),
                     denials: UInt64(dispatcher.hypervisor.statistics.denials))
    }
}

/// Maps the hypervisor's audit events to journal records (one per denial, G7).
final class JournalAuditAdapter: AuditSink {
    let sink: JournalAuditSink
    init(sink: JournalAuditSink) { self.sink = sink }

    func record(_ event: AuditEvent) {
        sink.record(AuditRecord(
            rule: event.rule.rawValue, messageID: event.rule.messageID, message: event.rule.summary,
            client: event.client.name, pid: event.client.pid, uid: event.client.uid,
            window: event.window ?? "", register: event.register ?? "", offset: event.offset,
            value: event.value, width: event.width, streams: event.streams))
    }
}

import PKVM
import SMMUModel
import WireProtocol

extension Dispatcher {
    /// Starts recording to `path` (docs/trace-format.md). `exclusive`: refuse an existing file (a path an admin
    /// client named); the configuration's own path is replaced. Nil when it cannot start, with the reason.
    @discardableResult
    public func startTrace(path: String, maxBytes: UInt64, exclusive: Bool) -> String? {
        if trace?.isRecording == true { return "a trace is already being recorded to \(trace!.path)" }
        let minimum = TraceRecorder.minimumBytes(configuration: traceSettings.configurationText)
        guard maxBytes >= minimum else { return "max_bytes \(maxBytes) is below \(minimum), the header's size" }
        do {
            trace = try TraceRecorder(path: path, exclusive: exclusive, maxBytes: maxBytes,
                                      configuration: traceSettings.configurationText, memory: hypervisor.memory)
        } catch {
            return error.description
        }
        return nil
    }

    /// The daemon's start: keeps what a TRACE start needs, and records from now on when the configuration names a
    /// file. Nil when that cannot start, with the reason.
    public func startConfiguredTrace(_ c: DaemonConfiguration.Trace, text: String) -> String? {
        traceSettings = TraceSettings(configurationText: Array(text.utf8), path: c.path, maxBytes: c.maxBytes)
        guard let path = c.path else { return nil }
        return startTrace(path: path, maxBytes: c.maxBytes, exclusive: false)
    }

    /// The current or last trace's state (nil before any).
    public var traceStatus: TraceStatus? { trace?.status }

    /// Ends the trace with its end record; `wait`: until it is written (the daemon is exiting).
    public func stopTrace(wait: Bool = false) {
        trace?.stop(.stopped, wait: wait)
    }

    /// TRACE (admin): status, start (a new file only) or stop.
    func traceControl(_ t: TraceControlRequest) -> (Status, ResponsePayload) {
        switch t.command {
        case nil:
            return (.invalid, .none)
        case .status:
            break
        case .start:
            // A NUL would end the path the kernel sees early: another file than the one named.
            guard let path = t.path.isEmpty ? traceSettings.path : t.path, path.hasPrefix("/"), !path.utf8.contains(0) else {
                return (.invalid, .none)
            }
            let maxBytes = t.maxBytes != 0 ? t.maxBytes : traceSettings.maxBytes
            if startTrace(path: path, maxBytes: maxBytes, exclusive: true) != nil { return (.invalid, .none) }
        case .stop:
            stopTrace()
        }
        let status = trace?.status ?? TraceStatus(recording: false, end: nil, bytes: 0, records: 0, maxBytes: 0)
        return (.ok, .bytes(status.encoded))
    }

    /// Hook at the start of `handle`: the recorder, when one is recording, notes where the answer starts. TRACE
    /// itself is not recorded: its answer describes the recording, which a replay does not make.
    func traceBegin(_ op: Opcode, fds: [Int32], output: [UInt8]) -> TraceRecorder? {
        guard let trace, trace.isRecording, op != .trace else { return nil }
        trace.beginExchange(op, fds: fds, outputCount: output.count)
        return trace
    }
}

/// What the daemon records into a trace's header and where a TRACE start without a path writes.
public struct TraceSettings {
    /// The configuration file's text, kept in the header so a replay runs under the same configuration.
    public var configurationText: [UInt8]
    public var path: String?
    public var maxBytes: UInt64
    public init(configurationText: [UInt8] = [], path: String? = nil,
                maxBytes: UInt64 = DaemonConfiguration.Trace.defaultMaxBytes) {
        self.configurationText = configurationText
        self.path = path
        self.maxBytes = maxBytes
    }
}

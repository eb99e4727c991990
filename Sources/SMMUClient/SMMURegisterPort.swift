import ArmSMMUDriver
import WireProtocol

/// The Linux driver's port onto one window over the socket: READ and WRITE at the window's base plus the
/// driver's offset, with Linux's view of failure (DEFERRED is -EPROBE_DEFER; any other refusal stops the
/// driver, which Linux itself could not see, and is reported with the register's Linux name).
///
/// Writes are posted, as a CPU's MMIO stores are: sent without waiting, with the next read (or ``complete()``)
/// collecting their answers in order, so a refused write is still reported as itself. A device answers a read
/// only after every earlier access, so the values read are the same either way. Not posted: one round trip per
/// access.
public struct SMMURegisterPort: RegisterPort {
    public typealias Failure = LinuxProbe.Failure

    public let base: UInt64
    let channel: Channel

    /// - Parameters:
    ///   - index: the window's index in HELLO, for failures.
    ///   - posted: post writes (see above).
    public init(client: SMMUClient, window: WindowRecord, index: Int, posted: Bool = true) {
        base = window.base
        channel = Channel(client: client, window: index, posted: posted)
    }

    public func read32(_ offset: UInt64) throws(Failure) -> UInt32 {
        UInt32(truncatingIfNeeded: try channel.read(base, offset, width: 4))
    }

    public func read64(_ offset: UInt64) throws(Failure) -> UInt64 { try channel.read(base, offset, width: 8) }

    public func write32(_ offset: UInt64, _ value: UInt32) throws(Failure) {
        try channel.write(base, offset, UInt64(value), width: 4)
    }

    public func write64(_ offset: UInt64, _ value: UInt64) throws(Failure) {
        try channel.write(base, offset, value, width: 8)
    }

    /// Collects the answers of every posted write (the end of a sequence, as a barrier would).
    public func complete() throws(Failure) { try channel.complete() }

    /// Accesses made so far.
    public var reads: Int { channel.reads }
    public var writes: Int { channel.writes }

    /// The posted writes in flight, and the counts. A class: the driver's copies of the port share it.
    final class Channel {
        let client: SMMUClient
        let window: Int
        let posted: Bool
        var reads = 0, writes = 0
        /// Once known, names registers in failures.
        var configuration: ArmSMMUConfiguration?
        /// Posted writes not yet answered, with what each failure would name.
        private var pending: [(request: Request, address: UInt64, step: Step)] = []

        /// What an access was, for a failure's description (made only on failure).
        struct Step {
            var write: Bool
            var offset: UInt64
            var width: UInt32
        }

        init(client: SMMUClient, window: Int, posted: Bool) {
            self.client = client
            self.window = window
            self.posted = posted
        }

        func read(_ base: UInt64, _ offset: UInt64, width: UInt32) throws(Failure) -> UInt64 {
            reads += 1
            let address = base + offset, step = Step(write: false, offset: offset, width: width)
            guard !pending.isEmpty else {
                do { return try client.read(address: address, width: width) } catch { throw map(error, address, step) }
            }
            let frames = try flush(then: (.read(ReadRequest(address: address, width: width)), address, step))
            do { return try SMMUClient.readValue(frames[frames.count - 1].payload) } catch { throw .client(error) }
        }

        func write(_ base: UInt64, _ offset: UInt64, _ value: UInt64, width: UInt32) throws(Failure) {
            writes += 1
            let address = base + offset, step = Step(write: true, offset: offset, width: width)
            if posted {
                pending.append((.write(WriteRequest(address: address, value: value, width: width)), address, step))
                if pending.count >= 512 { try complete() }  // keep a window's worth in flight, not unbounded
                return
            }
            do { try client.write(address: address, value: value, width: width) } catch { throw map(error, address, step) }
        }

        func complete() throws(Failure) {
            guard !pending.isEmpty else { return }
            _ = try flush(then: nil)
        }

        /// Sends the posted writes plus `last` in one pipeline; the first refused access is the failure.
        private func flush(then last: (request: Request, address: UInt64, step: Step)?) throws(Failure) -> [SMMUClient.Frame] {
            var batch = pending
            pending.removeAll(keepingCapacity: true)
            if let last { batch.append(last) }
            let frames: [SMMUClient.Frame]
            do { frames = try client.pipeline(batch.map(\.request)) } catch { throw map(error, batch[0].address, batch[0].step) }
            for (frame, access) in zip(frames, batch) where frame.status != .ok {
                throw map(.status(frame.status ?? .malformed), access.address, access.step)
            }
            return frames
        }

        func map(_ error: SMMUClientError, _ address: UInt64, _ step: Step) -> Failure {
            switch error {
            case .status(.deferred): return .deferred
            case .status(let s):
                let name = configuration?.registerName(at: step.offset) ?? "0x" + String(step.offset, radix: 16)
                return .access(window: window, step: "\(step.write ? "W" : "R")\(step.width * 8) \(name)", address: address, status: s)
            default: return .client(error)
            }
        }
    }
}

/// The sink's coalescing state in a daemon state image: counters and per-(peer, rule) windows, so that after a
/// restart the sum of SMMU_COUNT over the journal still equals the denials STATS reports (G7): denials counted for a
/// summary before the restart are summarised after it.
extension JournalAuditSink {
    public func stateImage() -> DispatcherStateImage.AuditSinkImage {
        let t = now()
        let windows = self.windows.map { key, w in
            DispatcherStateImage.AuditWindow(
                pid: key.peer.pid, uid: key.peer.uid, rule: key.rule, client: w.client,
                ageNanoseconds: UInt64(max(0, (t - w.start).nanoseconds)), written: w.written, suppressed: w.suppressed,
                awaitingSince: w.awaitingSince)
        }
        return .init(counters: counters, sequence: sequence,
                     windows: windows.sorted { ($0.awaitingSince, $0.pid, $0.uid, $0.rule) < ($1.awaitingSince, $1.pid, $1.uid, $1.rule) })
    }

    /// Takes the image's counters and windows (on the sink's queue, before it records anything). The global
    /// per-second budget starts afresh: at most one second's budget more than without the restart.
    public func restore(_ image: DispatcherStateImage.AuditSinkImage) {
        let t = now()
        counters = image.counters
        sequence = image.sequence
        windows = [:]
        for w in image.windows {
            let key = Key(peer: AuditPeer(pid: w.pid, uid: w.uid), rule: w.rule)
            let age = Duration.nanoseconds(Int64(clamping: min(w.ageNanoseconds, 3_600_000_000_000)))
            windows[key] = RateWindow(start: t - age, written: w.written, suppressed: w.suppressed,
                                      awaitingSince: w.awaitingSince, client: w.client)
        }
        budgetStart = nil
        budgetSpent = 0
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, a) = components
        return s &* 1_000_000_000 &+ a / 1_000_000_000
    }
}

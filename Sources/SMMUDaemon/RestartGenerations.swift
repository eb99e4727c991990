/// How checkpoints and journals are named in the fd store, which of them a new process uses, and the steps that take
/// the store from one generation to the next such that a crash between any two steps leaves a usable pair.
///
/// Generation g is the pair (checkpoint g, journal g): the state at the checkpoint, and every input since. Generation 0
/// is the configuration's state and has no checkpoint. The daemon appends to one journal at a time; it moves from g to
/// g + 1 at a request boundary (nothing is appended to journal g from the moment checkpoint g + 1 is taken), so both
/// pairs describe the same state until the switch, and only g + 1 after it.
enum RestartGenerations {
    enum Kind: Equatable { case journal, checkpoint }

    static func name(_ kind: Kind, _ generation: UInt64) -> String {
        "\(kind == .journal ? "journal" : "checkpoint").\(generation)"
    }

    /// The kind and generation a stored name says, or nil for a connection's name or anything else.
    static func parse(_ stored: String) -> (kind: Kind, generation: UInt64)? {
        for kind in [Kind.journal, .checkpoint] {
            let prefix = name(kind, 0).dropLast()
            if stored.hasPrefix(prefix), let g = UInt64(stored.dropFirst(prefix.count)) { return (kind, g) }
        }
        return nil
    }

    /// The newest generation with a stored journal and (above 0) a checkpoint, that `usable` accepts. Nil: none.
    static func choose(journals: Set<UInt64>, checkpoints: Set<UInt64>, usable: (UInt64) -> Bool) -> UInt64? {
        journals.sorted(by: >).first { g in (g == 0 || checkpoints.contains(g)) && usable(g) }
    }

    /// One step of a move to the next generation.
    enum Step: Equatable {
        /// FDSTORE the sealed checkpoint, or the new (empty) journal, under its generation's name.
        case store(Kind, UInt64)
        /// BARRIER=1: systemd holds both (if it does not answer, the move is abandoned and the new names removed).
        case barrier
        /// From here input is journaled into the new journal.
        case switchJournal(UInt64)
        /// FDSTOREREMOVE the old generation's files.
        case remove(Kind, UInt64)
    }

    /// The steps from generation `g` to `g + 1`, in order. A crash after any prefix: before the barrier the new pair
    /// may be incomplete (then `choose` takes g, whose journal has nothing after the checkpoint was taken) or
    /// complete (then g + 1, with an empty journal: the same state); after it both are stored, and from the switch
    /// on only g + 1 has the newest input.
    static func advance(from g: UInt64) -> [Step] {
        var steps: [Step] = [.store(.checkpoint, g + 1), .store(.journal, g + 1), .barrier, .switchJournal(g + 1)]
        if g > 0 { steps.append(.remove(.checkpoint, g)) }
        steps.append(.remove(.journal, g))
        return steps
    }
}

/// Where restart mode keeps descriptors: systemd's fd store (`SystemdFDStore`); tests of crash points use a table.
protocol RestartStore {
    /// FDSTORE=1 under `name` (FDPOLL=0 when `poll` is false). False when it was not sent.
    @discardableResult func store(_ fds: [Int32], name: String, poll: Bool) -> Bool
    /// FDSTOREREMOVE=1 of every descriptor named `name`.
    @discardableResult func remove(name: String) -> Bool
    /// BARRIER=1: true once the store has processed everything sent before.
    func barrier() -> Bool
}

struct SystemdFDStore: RestartStore {
    func store(_ fds: [Int32], name: String, poll: Bool) -> Bool { FDStore.store(fds, name: name, poll: poll) }
    func remove(name: String) -> Bool { FDStore.remove(name: name) }
    func barrier() -> Bool { FDStore.barrier() }
}

import Glibc
import Logging
import PKVM

/// Checkpoints (docs/hypervisor-model.md, "Restart and crash survival"): moving the store to the next generation,
/// and what a new process takes over from it.
extension ServerPersistence {
    /// Moves to the next generation: `checkpoint` (a sealed file holding the state now) and `next` (an empty journal)
    /// are stored, and input goes to `next` from then on; the old pair is removed. Runs the first `limit` steps of
    /// `RestartGenerations.advance` only (tests stop there to be "killed"). True when the daemon journals into `next`.
    /// The caller keeps `checkpoint` (systemd holds its own copy) and closes it.
    @discardableResult
    func advance(checkpoint: Int32, journal next: RestartJournal, limit: Int = .max) -> Bool {
        let from = generation
        for step in RestartGenerations.advance(from: from).prefix(limit) {
            switch step {
            case .store(.checkpoint, let g):
                store.store([checkpoint], name: RestartGenerations.name(.checkpoint, g), poll: false)
            case .store(.journal, let g):
                store.store([next.fd], name: RestartGenerations.name(.journal, g), poll: false)
            case .barrier:
                guard store.barrier() else {
                    // Not known to be stored: stay on this generation (the new names would pair with nothing).
                    store.remove(name: RestartGenerations.name(.checkpoint, from + 1))
                    store.remove(name: RestartGenerations.name(.journal, from + 1))
                    logger.warning("checkpoint: no BARRIER=1 answer; staying on journal generation \(from)")
                    return false
                }
            case .switchJournal(let g):
                replaceJournal(next, generation: g)
            case .remove(let kind, let g):
                store.remove(name: RestartGenerations.name(kind, g))
            }
        }
        return generation != from
    }

    /// What a new process found in the store: the newest usable generation.
    struct TakeOver {
        var generation: UInt64
        var journal: RestartJournal
        /// Nil for generation 0 (the configuration's state).
        var checkpoint: Checkpoint?
        /// The entries that are neither of them (connections' descriptors, and older generations' files closed).
        var others: [FDStore.Entry]
    }

    /// Picks the newest generation whose journal opens and whose checkpoint (above 0) is sealed, intact and names
    /// its generation; removes every other generation's names from the store and closes their descriptors. Nil when
    /// no generation is usable (`problems` says why each was not).
    static func takeOver(stored: [FDStore.Entry], store: any RestartStore,
                         problems: inout [String]) -> TakeOver? {
        var journals: [UInt64: FDStore.Entry] = [:]
        var checkpoints: [UInt64: FDStore.Entry] = [:]
        var others: [FDStore.Entry] = []
        for entry in stored {
            switch RestartGenerations.parse(entry.name) {
            case (.journal, let g)?: journals[g] = entry
            case (.checkpoint, let g)?: checkpoints[g] = entry
            case nil: others.append(entry)
            }
        }
        var opened: (RestartJournal, Checkpoint?)?
        let chosen = RestartGenerations.choose(journals: Set(journals.keys), checkpoints: Set(checkpoints.keys)) { g in
            var checkpoint: Checkpoint?
            if g > 0 {
                do {
                    let c = try Checkpoint.read(fd: checkpoints[g]!.fd)
                    guard c.generation == g else {
                        problems.append("checkpoint.\(g) says it is generation \(c.generation)")
                        return false
                    }
                    checkpoint = c
                } catch {
                    problems.append("checkpoint.\(g): \(error)")
                    return false
                }
            }
            do {
                opened = (try RestartJournal.open(fd: dup(journals[g]!.fd)), checkpoint)
                return true
            } catch {
                problems.append("journal.\(g): \(error)")
                return false
            }
        }
        for (g, entry) in journals where g != chosen {
            close(entry.fd)
            store.remove(name: RestartGenerations.name(.journal, g))
        }
        for (g, entry) in checkpoints {
            close(entry.fd)
            if g != chosen { store.remove(name: RestartGenerations.name(.checkpoint, g)) }
        }
        if let chosen { close(journals[chosen]!.fd) }
        guard let chosen, let (journal, checkpoint) = opened else { return nil }
        return TakeOver(generation: chosen, journal: journal, checkpoint: checkpoint, others: others)
    }
}

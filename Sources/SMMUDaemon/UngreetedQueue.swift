import Dispatch

/// The connections that had not been greeted when accepted, oldest first, with their HELLO deadlines.
///
/// Accept order is deadline order (one timeout for all), so the oldest entry is both the next to expire and the
/// first to evict. Entries are dropped lazily: a connection that was greeted or closed since stays queued until it
/// reaches the front, where `isUngreeted` tells it apart (a greeting is never undone, and ids are never reused).
/// Each operation is amortized O(1), so a flood of idle connections costs no scan of all of them.
struct UngreetedQueue {
    private var entries: [(id: ConnectionID, deadline: DispatchTime)] = []
    private var head = 0

    mutating func append(_ id: ConnectionID, deadline: DispatchTime) {
        entries.append((id, deadline))
    }

    /// Removes and returns the oldest connection still un-greeted.
    mutating func popOldest(isUngreeted: (ConnectionID) -> Bool) -> ConnectionID? {
        guard let entry = front(isUngreeted) else { return nil }
        dropFront()
        return entry.id
    }

    /// Removes and returns the oldest connection still un-greeted whose deadline is at or before `now`.
    mutating func popExpired(now: DispatchTime, isUngreeted: (ConnectionID) -> Bool) -> ConnectionID? {
        guard let entry = front(isUngreeted), entry.deadline <= now else { return nil }
        dropFront()
        return entry.id
    }

    /// The deadline of the oldest connection still un-greeted.
    mutating func nextDeadline(isUngreeted: (ConnectionID) -> Bool) -> DispatchTime? {
        front(isUngreeted)?.deadline
    }

    /// Drops stale entries at the front and returns the first live one.
    private mutating func front(_ isUngreeted: (ConnectionID) -> Bool) -> (id: ConnectionID, deadline: DispatchTime)? {
        while head < entries.count, !isUngreeted(entries[head].id) { dropFront() }
        return head < entries.count ? entries[head] : nil
    }

    private mutating func dropFront() {
        head += 1
        if head == entries.count {
            entries.removeAll(keepingCapacity: entries.capacity <= 4096)
            head = 0
        } else if head >= 1024 && head * 2 >= entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }
}

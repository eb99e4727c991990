import Testing

@testable import WireProtocol

/// Protocol v1.2's invalidation log, pure: the writer's and the reader's halves of the seqlock over a simulated
/// page that can run the writer between any two of the reader's loads.
@Suite struct InvalidationLogTests {
    /// A page of words; `interpose` runs after the reader's n-th load (n counts from 0).
    final class Page: InvalidationLog.WritableMemory, InvalidationLog.ReadableMemory {
        var words = [UInt64](repeating: 0, count: InvalidationLog.pageSize / 8)
        var loads = 0
        var interpose: ((Int) -> Void)?

        func storeRelaxed(_ offset: Int, _ value: UInt64) { words[offset / 8] = value }
        func storeRelease(_ offset: Int, _ value: UInt64) { words[offset / 8] = value }
        func fenceRelease() {}
        func loadAcquire(_ offset: Int) -> UInt64 { load(offset) }
        func loadRelaxed(_ offset: Int) -> UInt64 { load(offset) }
        func fenceAcquire() {}
        private func load(_ offset: Int) -> UInt64 {
            let v = words[offset / 8]
            let n = loads
            loads += 1
            interpose?(n)
            return v
        }
    }

    /// The writer's stores of one record, one closure per store, in its order (to stop it anywhere).
    static func writerSteps(_ record: InvalidationRecord, epoch: UInt64, page: Page) -> [() -> Void] {
        final class Recorder: InvalidationLog.WritableMemory {
            var stores: [(Int, UInt64)] = []
            func storeRelaxed(_ offset: Int, _ value: UInt64) { stores.append((offset, value)) }
            func storeRelease(_ offset: Int, _ value: UInt64) { stores.append((offset, value)) }
            func fenceRelease() {}
        }
        let r = Recorder()
        InvalidationLog.publish(record, epoch: epoch, to: r)
        return r.stores.map { s in { page.words[s.0 / 8] = s.1 } }
    }

    static func range(_ page: UInt64, window: UInt16 = 0) -> InvalidationRecord {
        InvalidationRecord(kind: .address, address: page << 12, pages: 1, window: window, contextBank: 3, asid: 7)
    }

    @Test("records come back in order, whole, and nothing when the epoch is the one last seen")
    func roundTrip() {
        let page = Page()
        InvalidationLog.initialize(page, epoch: 10)
        #expect(InvalidationLog.isKept(in: page))
        #expect(InvalidationLog.changes(since: 10, in: page) == (10, .none))
        let records = (0..<5).map { Self.range(0x100 + UInt64($0), window: UInt16($0)) }
            + [InvalidationRecord(kind: .addressAnyASID, address: 0xFF00_0012_3456_7000, pages: 3, window: 1, contextBank: 200)]
        for (i, r) in records.enumerated() { InvalidationLog.publish(r, epoch: 11 + UInt64(i), to: page) }
        #expect(page.words[0] == 16)
        #expect(InvalidationLog.changes(since: 10, in: page) == (16, .ranges(records)))
        #expect(InvalidationLog.changes(since: 13, in: page) == (16, .ranges(Array(records[3...]))))
        #expect(records[5].address == 0x12_3456_7000, "bits 63:56 are not part of an address")
    }

    @Test("a page the daemon did not initialize (a v1.1 daemon) keeps no log")
    func v11PageHasNoLog() {
        let page = Page()
        page.words[0] = 5
        #expect(!InvalidationLog.isKept(in: page))
    }

    @Test("more advances than slots since the epoch last seen, or an epoch that went back, drop everything")
    func overflowIsAFullFlush() {
        let page = Page()
        InvalidationLog.initialize(page, epoch: 1)
        for e in UInt64(2)...UInt64(1 + InvalidationLog.slots) { InvalidationLog.publish(Self.range(e), epoch: e, to: page) }
        let all = InvalidationLog.changes(since: 1, in: page)
        guard case .ranges(let r) = all.changes else { Issue.record("\(all)"); return }
        #expect(r.count == InvalidationLog.slots && r.first == Self.range(2))
        InvalidationLog.publish(Self.range(999), epoch: UInt64(2 + InvalidationLog.slots), to: page)
        #expect(InvalidationLog.changes(since: 1, in: page).changes == .everything(.overflow))
        #expect(InvalidationLog.changes(since: 2, in: page).changes != .everything(.overflow))
        #expect(InvalidationLog.changes(since: 500, in: page).changes == .everything(.overflow), "the epoch went back")
    }

    @Test("one advance that is not a range among ranges drops everything")
    func unrangedChangeIsAFullFlush() {
        let page = Page()
        InvalidationLog.initialize(page, epoch: 1)
        InvalidationLog.publish(Self.range(1), epoch: 2, to: page)
        InvalidationLog.publish(.everything, epoch: 3, to: page)
        InvalidationLog.publish(Self.range(2), epoch: 4, to: page)
        #expect(InvalidationLog.changes(since: 1, in: page).changes == .everything(.unranged))
        #expect(InvalidationLog.changes(since: 3, in: page).changes == .ranges([Self.range(2)]))
    }

    @Test("a slot that does not hold its epoch's record (never written, being written, unknown kind) is not trusted")
    func untrustedSlots() {
        let page = Page()
        InvalidationLog.initialize(page, epoch: 1)
        page.words[0] = 2                   // an epoch whose record is not there
        #expect(InvalidationLog.changes(since: 1, in: page).changes == .everything(.overwritten))
        InvalidationLog.publish(Self.range(1), epoch: 2, to: page)
        page.words[InvalidationLog.slotOffset(epoch: 2) / 8] = 0   // sequence 0: being written
        #expect(InvalidationLog.changes(since: 1, in: page).changes == .everything(.overwritten))
        InvalidationLog.publish(Self.range(1), epoch: 2, to: page)
        page.words[InvalidationLog.slotOffset(epoch: 2) / 8 + 3] = 9 << 16   // kind 9
        #expect(InvalidationLog.changes(since: 1, in: page).changes == .everything(.unreadable))
    }

    /// The writer reuses the slot of the first epoch the reader reads (epoch + slots), stopped after each of its
    /// stores, run between each pair of the reader's loads: every answer is the true records or everything.
    @Test("a record rewritten while it is read, at any point of either side, is never trusted")
    func tornReadsAreNeverTrusted() {
        let original = (0..<4).map { Self.range(0x500 + UInt64($0)) }
        let intruder = Self.range(0xDEAD)
        var outcomes: [String: Int] = [:]
        var wrong = 0
        for stopAfter in 0...6 {
            for loadIndex in 0..<40 {
                let page = Page()
                InvalidationLog.initialize(page, epoch: 100)
                for (i, r) in original.enumerated() { InvalidationLog.publish(r, epoch: 101 + UInt64(i), to: page) }
                let steps = Self.writerSteps(intruder, epoch: 101 + UInt64(InvalidationLog.slots), page: page)
                #expect(steps.count == 6, "sequence 0, three words, sequence, epoch")
                page.interpose = { n in if n == loadIndex { for s in steps.prefix(stopAfter) { s() } } }
                let got = InvalidationLog.changes(since: 100, in: page)
                switch got.changes {
                case .ranges(let r) where r == original: outcomes["true records", default: 0] += 1
                case .everything: outcomes["everything", default: 0] += 1
                default: wrong += 1
                }
            }
        }
        #expect(wrong == 0)
        #expect(outcomes["true records", default: 0] > 0 && outcomes["everything", default: 0] > 0, "\(outcomes)")
    }

    @Test("a record ends a cached translation when its mapping overlaps the range, in the record's window only")
    func endsComparesTheMappingNotThePiece() {
        let r = InvalidationRecord(kind: .address, address: 0x4000_1000, pages: 1, window: 2, contextBank: 0, asid: 1)
        #expect(r.ends(window: 2, iova: 0x4000_1000, reachShift: 12))
        #expect(!r.ends(window: 2, iova: 0x4000_2000, reachShift: 12))
        #expect(!r.ends(window: 1, iova: 0x4000_1000, reachShift: 12), "another window")
        #expect(r.ends(window: 2, iova: 0x4000_0000, reachShift: 21), "the 2 MiB block holding the page")
        #expect(r.ends(window: 2, iova: 0x4020_0000 + 0x5000, reachShift: 30), "a 2 MiB piece of the 1 GiB block")
        #expect(!r.ends(window: 2, iova: 0x4020_0000, reachShift: 21), "the next 2 MiB block")
        #expect(r.ends(window: 2, iova: 0xFF00_0000_4000_1000, reachShift: 12), "bits 63:56 are not compared")
        let span = InvalidationRecord(kind: .addressAnyASID, address: 0x10_0000, pages: 16, window: 0)
        #expect(span.ends(window: 0, iova: 0x10_F000, reachShift: 12) && !span.ends(window: 0, iova: 0x11_0000, reachShift: 12))
        #expect(InvalidationRecord.everything.ends(window: 9, iova: 0, reachShift: 12))
    }

    /// What the daemon publishes for a run of advances (EpochPages.store): each record merged into the one before
    /// when it may be (v1.3).
    static func publishMerging(_ records: [InvalidationRecord], from epoch: UInt64, to page: Page) {
        var last: InvalidationRecord?
        for (i, r) in records.enumerated() {
            let record = last.flatMap { $0.merging(r) } ?? r
            InvalidationLog.publish(record, epoch: epoch + UInt64(i), to: page)
            last = record
        }
    }

    @Test("v1.3 merging: ranges of one scope within 2 MiB of each other become one record holding both")
    func mergingRules() throws {
        let a = InvalidationRecord(kind: .address, address: 0x10_0000, pages: 4, window: 1, contextBank: 3, asid: 7)
        let above = InvalidationRecord(kind: .address, address: 0x10_4000, pages: 1, window: 1, contextBank: 3, asid: 7)
        let below = InvalidationRecord(kind: .address, address: 0x0F_F000, pages: 1, window: 1, contextBank: 3, asid: 7)
        let m = try #require(a.merging(above))
        #expect(m.address == 0x10_0000 && m.pages == 5 && m.covers == 2 && m.asid == 7 && m.window == 1)
        let m2 = try #require(m.merging(below))
        #expect(m2.address == 0x0F_F000 && m2.pages == 6 && m2.covers == 3)
        #expect(try #require(a.merging(a)).pages == 4, "the same page again")
        var gap = above
        gap.address = 0x10_9000
        let hull = try #require(a.merging(gap), "pages between them: the range holding both")
        #expect(hull.address == 0x10_0000 && hull.pages == 10 && hull.covers == 2)
        for change in [\InvalidationRecord.asid, \.contextBank, \.window] {
            var other = above
            other[keyPath: change] = 2
            #expect(a.merging(other) == nil, "another scope")
        }
        var anyASID = above
        anyASID.kind = .addressAnyASID
        #expect(a.merging(anyASID) == nil && InvalidationRecord.everything.merging(a) == nil && a.merging(.everything) == nil)
        let wide = InvalidationRecord(kind: .address, address: 0, pages: 512, window: 1, contextBank: 3, asid: 7)
        #expect(wide.merging(InvalidationRecord(kind: .address, address: 0x20_0000, pages: 1, window: 1, contextBank: 3,
                                                asid: 7)) == nil, "past 2 MiB")
    }

    @Test("v1.3: 300 contiguous TLBIVALs, more than the slots, read as the few records that cover them, from any epoch")
    func coveringChainsFitInTheLog() {
        let page = Page()
        InvalidationLog.initialize(page, epoch: 1000)
        // A strict 1 MiB unmap (256 pages up), then 44 pages of another buffer (down).
        let up = (0..<256).map { Self.range(0x4_0000 + UInt64($0)) }
        let down = (0..<44).map { Self.range(0x9_0000 - UInt64($0)) }
        Self.publishMerging(up + down, from: 1001, to: page)
        for seen in [UInt64(1000), 1100, 1256, 1257, 1299] {
            let got = InvalidationLog.changes(since: seen, in: page)
            guard case .ranges(let r) = got.changes else { Issue.record("since \(seen): \(got)"); continue }
            #expect(got.epoch == 1300 && r.count <= 2, "since \(seen): \(r.count) records")
            // Every advance after `seen` is inside a record returned.
            for (i, each) in (up + down).enumerated() where UInt64(1001 + i) > seen {
                #expect(r.contains { $0.address <= each.address && each.address < $0.address + UInt64($0.pages) << 12 })
            }
        }
        // A chain link older than the slots (a record covering back past seen needs no older slot): 126 single
        // records after it overflow as before.
        Self.publishMerging((0..<127).map { Self.range(0x20_0000 + 1024 * UInt64($0)) }, from: 1301, to: page)   // 4 MiB apart
        #expect(InvalidationLog.changes(since: 1300, in: page).changes == .everything(.overflow))
        if case .ranges(let r) = InvalidationLog.changes(since: 1301, in: page).changes { #expect(r.count == 126) } else {
            Issue.record("126 single records fit")
        }
    }

    @Test("v1.3: a slot the covering chain lands on, rewritten while it is read, is never trusted")
    func tornChainLinksAreNeverTrusted() {
        var outcomes: [String: Int] = [:]
        var wrong = 0
        let chain = (0..<10).map { Self.range(0x700 + UInt64($0)) } + (0..<5).map { Self.range(0xA00 + 2 * UInt64($0)) }
        for stopAfter in 0...6 {
            for loadIndex in 0..<30 {
                let page = Page()
                InvalidationLog.initialize(page, epoch: 100)
                Self.publishMerging(chain, from: 101, to: page)
                let truth = InvalidationLog.changes(since: 100, in: page).changes
                // The reader lands on 115 (covering 111...115, over 2 MiB from the rest) and then 110 (covering
                // 101...110): rewrite 110's slot.
                let steps = Self.writerSteps(Self.range(0xBAD), epoch: 110 + UInt64(InvalidationLog.slots), page: page)
                page.loads = 0
                page.interpose = { n in if n == loadIndex { for s in steps.prefix(stopAfter) { s() } } }
                let got = InvalidationLog.changes(since: 100, in: page)
                switch got.changes {
                case let c where c == truth: outcomes["true records", default: 0] += 1
                case .everything: outcomes["everything", default: 0] += 1
                default: wrong += 1
                }
            }
        }
        #expect(wrong == 0)
        #expect(outcomes["true records", default: 0] > 0 && outcomes["everything", default: 0] > 0, "\(outcomes)")
    }
}

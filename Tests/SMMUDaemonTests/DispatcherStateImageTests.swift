import Dispatch
import Foundation
import PKVM
import SMMUModel
import SMMUClient
import Synchronization
import Testing
import TestSupport
import WireProtocol
@testable import SMMUDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// The daemon layer's state image (docs/state-image.md), without sockets: sessions, counters and the audit sink's
/// coalescing state survive a capture and a restore, DUMP and STATS read the same, and the same bytes sent to the
/// original and to the restored sessions get the same answers.
@Suite struct DispatcherStateImageTests {
    /// What the audit sink wrote, as (SMMU_COUNT) per record.
    final class Journal: Sendable {
        let counts = Mutex<[Int]>([])
        var destination: JournalAuditSink.Destination {
            .init(journal: { [self] fields in
                let n = Int(fields.first { $0.name == "SMMU_COUNT" }?.value ?? "") ?? 0
                counts.withLock { $0.append(n) }
                return true
            }, fallback: { _ in true })
        }
        var sum: Int { counts.withLock { $0.reduce(0, +) } }
    }

    final class Server: ServerHandle {
        var counters = ConnectionCounters()
        var sent: [(ConnectionID, [UInt8])] = []
        func send(_ bytes: [UInt8], to connection: ConnectionID) { sent.append((connection, bytes)) }
        var connectionCounters: ConnectionCounters { counters }
    }

    /// One daemon layer over a Tegra234 hypervisor: what `DaemonCore.make` builds, with a sink whose journal the
    /// test reads. The queue is only the sink's label: the test is the serial owner.
    struct Layer {
        let hypervisor: Hypervisor
        let dispatcher: Dispatcher
        let audit: JournalAuditSink
        let journal = Journal()
        let server = Server()

        static let policy = HypervisorPolicy(
            topology: .tegra234, hostRAM: [PhysicalRange(base: 0x8000_0000, size: 64 << 20)],
            hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 4 << 20))
        static let instant = ContinuousClock.now
        static func memory() -> MemoryMap { try! MemoryMap(regions: [(0x8000_0000, 64 << 20), (0x7F00_0000, 4 << 20)]) }

        init(restoring: (HypervisorStateImage, DispatcherStateImage, [UInt64: Int32])? = nil) throws {
            // One instant for both sinks: the test compares two sinks' coalescing decisions, which a second boundary
            // crossed between the original's request and the copy's would make differ.
            audit = JournalAuditSink(burst: 2, summaryInterval: .seconds(3600), maxRecordsPerSecond: 1000,
                                     queue: DispatchQueue(label: "audit"), destination: journal.destination,
                                     now: { Layer.instant })
            let adapter = JournalAuditAdapter(sink: audit)
            if let (h, d, files) = restoring {
                hypervisor = try Hypervisor.restore(policy: Self.policy, memory: Self.memory(), audit: adapter, image: h) {
                    m throws(StateImageError) in try Dispatcher.sharedMemory(fd: files[m.range.base] ?? -1, for: m)
                }
                _ = d
            } else {
                hypervisor = try Hypervisor(policy: Self.policy, memory: Self.memory(), audit: adapter)
            }
            dispatcher = Dispatcher(hypervisor: hypervisor, roles: DaemonConfiguration.Roles(
                host: .init(uids: [0, 1000]), device: .init(uids: [0, 1000]), admin: .init(uids: [0, 1000])))
            dispatcher.auditCounters = { [audit] in audit.counters.statisticsObject }
        }
    }

    static func send(_ bytes: [UInt8], to session: Session, fds: [Int32] = []) -> [UInt8] {
        var output: [UInt8] = []
        var fds = fds
        _ = bytes.withUnsafeBytes { session.receive($0, fds: &fds, output: &output) }
        for fd in fds { close(fd) }
        // What the connection does on its later turns with input the turn's budget held back.
        while session.hasPendingInput { _ = session.resumeInput(output: &output) }
        return output
    }

    static func window(_ name: String) -> UInt64 { Topology.tegra234.windows.first { $0.name == name }!.base }

    /// A busy daemon: host, device, admin, EVENTS and un-greeted sessions; a finalized hypervisor with a stage-2
    /// domain, a VM, denials past the audit burst (coalesced), a MEM_MAP, and input and output left half-way.
    static func busy() throws -> (layer: Layer, sessions: [Session], output: [ConnectionID: [UInt8]], memfd: Int32) {
        let layer = try Layer()
        let d = layer.dispatcher
        func session(_ id: UInt64, pid: Int32) -> Session {
            d.makeSession(connection: ConnectionID(rawValue: id), peer: PeerCredentials(pid: pid, uid: 1000, gid: 1000),
                          server: layer.server)
        }
        let host = session(10, pid: 100), device = session(11, pid: 101), admin = session(12, pid: 102)
        let events = session(13, pid: 103), stranger = session(14, pid: 104)
        var output: [ConnectionID: [UInt8]] = [:]
        func r(_ request: Request, tag: UInt32 = 1) -> [UInt8] { request.encoded(tag: tag) }
        _ = send(r(.hello(HelloRequest(role: .host, name: "vmm"))), to: host)
        _ = send(r(.hello(HelloRequest(role: .device, name: "nvme"))), to: device)
        _ = send(r(.hello(HelloRequest(role: .admin, name: "smmuctl"))), to: admin)
        _ = send(r(.hello(HelloRequest(role: .host, name: "irq"))) + r(.events, tag: 2), to: events)
        _ = send(r(.finalize), to: admin)
        let niso1 = window("niso1a"), page: UInt64 = 0x1_0000
        let memfd = try SMMUClient.makeSharedMemory(size: 0x2000, name: "state-image")
        var bytes = r(.write(WriteRequest(address: niso1 + 0x800, value: 0x8000_0020, width: 4)))   // SMR0
            + r(.write(WriteRequest(address: niso1 + 0xC00, value: 0x0001_0000, width: 4)))         // S2CR0 bypass
            + r(.vmCreate, tag: 3) + r(.vmDonate(VMDonateRequest(vm: 1, address: 0x8100_0000, size: 0x3000)), tag: 4)
            + r(.vmAssignStream(VMAssignStreamRequest(vm: 1, window: 0, streamID: 0x15)), tag: 5)
        for n in 0..<6 {   // hidden context banks: denials, past the burst of 2
            bytes += r(.write(WriteRequest(address: niso1 + 128 * page + 127 * page, value: UInt64(n), width: 4)), tag: 10 + UInt32(n))
        }
        bytes += r(.memWrite(MemWriteRequest(address: 0x8000_4000, bytes: Array("kept".utf8))), tag: 20)
        _ = send(bytes, to: host)
        #expect(send(r(.memMap(MemMapRequest(address: 0x8020_0000, size: 0x2000, offset: 0)), tag: 21), to: host, fds: [dup(memfd)])
            .count == FrameHeader.size, "MEM_MAP answered OK")
        _ = send(r(.dma(DMARequest(window: 0, streamID: 0x20, iova: 0x8000_4000, flags: [])), tag: 30)
                 + r(.dma(DMARequest(window: 0, streamID: 0x21, iova: 0x1000, flags: [])), tag: 31), to: device)
        // Half a frame from the host, an answer the device has not been sent, garbage from the stranger.
        let half = r(.read(ReadRequest(address: niso1 + 0x800, width: 4)), tag: 40)
        _ = send(Array(half.prefix(11)), to: host)
        output[device.connectionID] = send(r(.dma(DMARequest(window: 0, streamID: 0x20, iova: 0x8000_4008, flags: [])), tag: 41), to: device)
        _ = send([0xAB, 0xCD], to: stranger)
        return (layer, [host, device, admin, events, stranger], output, memfd)
    }

    @Test func restoredDaemonLayerAnswersAsTheOriginal() throws {
        let (a, sessions, output, memfd) = try Self.busy()
        defer { close(memfd) }
        a.server.counters.accepted = 5
        a.server.counters.refused = 2
        let hImage = try HypervisorStateImage(decoding: a.hypervisor.stateImage().encoded())
        let captured = a.dispatcher.stateImage(sessions: sessions.map { ($0, output[$0.connectionID] ?? []) },
                                               serverCounters: a.server.counters, audit: a.audit)
        let dImage = try DispatcherStateImage(decoding: captured.encoded())
        let journaledBefore = a.journal.sum   // what the original had written when the image was taken
        #expect(dImage == captured)
        #expect(dImage.sessions.count == 5 && dImage.sessions.filter(\.subscribed).count == 1)
        #expect(dImage.sessions[0].input.unread.count == 11, "the host's half frame is in the image")
        #expect(dImage.sessions[1].output.count > 0, "the device's unsent answer is in the image")
        #expect(dImage.audit!.counters.coalesced == 4 && dImage.audit!.counters.awaitingSummary == 4)

        let b = try Layer(restoring: (hImage, dImage, [0x8020_0000: memfd]))
        b.audit.restore(dImage.audit!)
        b.server.counters = dImage.serverCounters
        b.dispatcher.adopt(server: b.server)
        let restored = try b.dispatcher.restore(dImage)
        #expect(restored.map(\.output) == dImage.sessions.map(\.output))

        // DUMP and STATS (every role's view) are the same documents.
        #expect(DumpDocument(hypervisor: b.hypervisor).json(limit: 1 << 20) == DumpDocument(hypervisor: a.hypervisor).json(limit: 1 << 20))
        for role: Role in [.admin, .host] {
            #expect(b.dispatcher.statisticsJSON(for: role) == a.dispatcher.statisticsJSON(for: role))
        }
        // The same bytes to each pair of sessions: the same answers, the rest of the half frame included.
        let niso1 = Self.window("niso1a")
        var rng = SplitMix64(seed: 99)
        let rest = Array(Request.read(ReadRequest(address: niso1 + 0x800, width: 4)).encoded(tag: 40).dropFirst(11))
        #expect(Self.send(rest, to: restored[0].session) == Self.send(rest, to: sessions[0]))
        for step in 0..<400 {
            let i = [0, 1, 2].randomElement(using: &rng)!
            let request: Request
            switch i {
            case 0:
                let address = niso1 + [0x800, 0xC00, 0x1000, 0x10000 * 130, 0x10000 * 255, 0x20].randomElement(using: &rng)!
                request = Bool.random(using: &rng)
                    ? .write(WriteRequest(address: address, value: rng.next() & 0xFFFF_FFFF, width: 4))
                    : .read(ReadRequest(address: address, width: 4))
            case 1:
                request = .dma(DMARequest(window: UInt32.random(in: 0..<5, using: &rng), streamID: [0x20, 0x15, 0x21].randomElement(using: &rng)!,
                                          iova: [0x8000_4000, 0x8100_0000, 0x8020_0010, 0x1000].randomElement(using: &rng)!, flags: []))
            default:
                request = [.stats, .dump].randomElement(using: &rng)!
            }
            let bytes = request.encoded(tag: UInt32(step))
            let x = Self.send(bytes, to: sessions[i]), y = Self.send(bytes, to: restored[i].session)
            #expect(x == y, "step \(step): \(request)")
            if x != y { break }
        }
        #expect(a.server.sent.map(\.1) == b.server.sent.map(\.1), "EVENTS subscribers hear the same changes")
        #expect(Self.send([0xEF], to: restored[4].session) == Self.send([0xEF], to: sessions[4]), "the stranger's garbage")
        // G7 across the restart: what the original wrote before the image, plus what the restored sink writes, adds up
        // to every denial STATS counts, once the summaries are out.
        b.audit.flush(force: true)
        #expect(journaledBefore + b.journal.sum == b.hypervisor.statistics.denials)
        #expect(UInt64(b.hypervisor.statistics.denials) > dImage.audit!.counters.denials, "the requests after the restore were denied too")
        #expect(b.audit.counters.denials == UInt64(b.hypervisor.statistics.denials))
        #expect(b.hypervisor.memRead(address: 0x8000_4000, length: 4, client: ClientIdentity(name: "t")).value == Array("kept".utf8))
    }

    /// A device connection's epoch page after a restore: the epoch resumes after the highest value the page showed
    /// (a crash may have lost changes made after the image), and the page shows the new value once attached again.
    @Test func epochPagesResumeAfterWhatTheirDevicesSaw() throws {
        let (a, sessions, output, memfd) = try Self.busy()
        defer { close(memfd) }
        let page = try SMMUClient.makeSharedMemory(size: 4096, name: "epoch")
        defer { close(page) }
        var reply = Self.send(Request.dmaEpoch.encoded(tag: 50), to: sessions[1], fds: [dup(page)])
        #expect(reply.count == FrameHeader.size + 8)
        let hImage = try HypervisorStateImage(decoding: a.hypervisor.stateImage().encoded())
        let dImage = a.dispatcher.stateImage(sessions: sessions.map { ($0, output[$0.connectionID] ?? []) },
                                             serverCounters: a.server.counters, audit: a.audit)
        #expect(dImage.sessions[1].epochPage && !dImage.sessions[0].epochPage)
        // After the image, the original went on (a VM created: the epoch moved) and then died.
        let rest = Array(Request.read(ReadRequest(address: Self.window("niso1a") + 0x800, width: 4)).encoded(tag: 40).dropFirst(11))
        reply = Self.send(rest + Request.vmCreate.encoded(tag: 51), to: sessions[0])   // the half frame's rest first
        let seen = a.hypervisor.translationEpoch.value
        #expect(seen > hImage.translationEpoch)
        let floor = Dispatcher.epochFloor(pageFDs: [page])
        #expect(floor == seen, "the page shows what the device last saw")
        let memory = Layer.memory()
        let h = try Hypervisor.restore(policy: Layer.policy, memory: memory, audit: CollectingAuditSink(), image: hImage,
                                       epochFloor: floor) { m throws(StateImageError) in try Dispatcher.sharedMemory(fd: memfd, for: m) }
        let d = Dispatcher(hypervisor: h, roles: a.dispatcher.roles)
        let restored = try d.restore(dImage)
        #expect(d.reattachEpochPage(fd: dup(page), session: restored[1].session))
        var value: UInt64 = 0
        #expect(pread(page, &value, 8, 0) == 8 && value == h.translationEpoch.value && value > seen)
    }

    /// The sink's rate windows keep their age across a restore: a peer that used its burst half a second before the
    /// image is still limited half a second after it, and free again once its second is over.
    @Test func auditRateWindowsKeepTheirAge() throws {
        let clock = Mutex(ContinuousClock.now)
        let t0 = clock.withLock { $0 }
        let journal = Journal(), journal2 = Journal()
        let sink = JournalAuditSink(burst: 2, summaryInterval: .seconds(3600), queue: DispatchQueue(label: "a"),
                                    destination: journal.destination, now: { clock.withLock { $0 } })
        let record = AuditRecord(rule: "G5.hidden-smr", messageID: "", message: "", client: "vmm", pid: 7, uid: 1000,
                                 window: "niso1a", register: "SMR[127]", offset: 0, value: 0, width: 4, streams: [])
        for _ in 0..<3 { sink.record(record) }
        #expect(sink.counters.written == 2 && sink.counters.coalesced == 1)
        clock.withLock { $0 = t0 + .milliseconds(500) }
        let image = try DispatcherStateImage(decoding: DispatcherStateImage(
            operations: [], connectionsOpened: 0, connectionsOpen: 0, unsupported: 0, malformed: 0,
            serverCounters: .init(), interruptLines: [], sessions: [], audit: sink.stateImage()).encoded()).audit!
        #expect(image.windows.map(\.ageNanoseconds) == [500_000_000])
        // The restored sink reads another clock, much later: only the age carries over.
        let later = Mutex(ContinuousClock.now + .seconds(1000))
        let restored = JournalAuditSink(burst: 2, summaryInterval: .seconds(3600), queue: DispatchQueue(label: "b"),
                                        destination: journal2.destination, now: { later.withLock { $0 } })
        restored.restore(image)
        restored.record(record)
        #expect(restored.counters.written == 2 && restored.counters.coalesced == 2, "still inside the peer's second")
        later.withLock { $0 += .milliseconds(600) }
        restored.record(record)
        #expect(restored.counters.written == 3, "the second is over")
        restored.flush(force: true)
        #expect(journal.sum + journal2.sum == 5 && restored.counters.denials == 5 && restored.counters.awaitingSummary == 0)
    }

    /// The shipped configuration's core, restored by `DaemonCore.restore`: the same state; another configuration refused.
    @Test func daemonCoreRestoresUnderItsConfigurationOnly() throws {
        let config = try DaemonConfiguration.load(path: repositoryRoot + "/Config/tegra234.yaml")
        let sink = { JournalAuditSink(burst: 8, summaryInterval: .seconds(3600), queue: DispatchQueue(label: "core"),
                                      destination: Journal().destination) }
        let core = try DaemonCore.make(config, audit: sink())
        let h = core.hypervisor
        h.finalize()
        let vm = try #require(h.vmCreate(client: ClientIdentity(name: "t")).value)
        let ram = try #require(h.policy.hostRAM.first)
        #expect(h.vmDonate(vm, range: PhysicalRange(base: ram.base + 0x10_0000, size: 0x4000), client: ClientIdentity(name: "t")).value != nil)
        let image = h.stateImage()
        let restored = try DaemonCore.restore(config, audit: sink(), image: image, sharedMemory: Hypervisor.noSharedMemory)
        var expected = image
        expected.translationEpoch += 1
        #expect(restored.hypervisor.stateImage() == expected)
        #expect(restored.dispatcher.roles == config.roles)
        let other = try DaemonConfiguration.load(path: repositoryRoot + "/Config/generic4k.yaml")
        #expect {
            try DaemonCore.restore(other, audit: sink(), image: image, sharedMemory: Hypervisor.noSharedMemory)
        } throws: { error in
            guard case .configurationMismatch(let reason) = error as? StateImageError else { return false }
            return reason.hasPrefix("window[0]")
        }
    }

    @Test func damagedOrForeignImagesAreRefused() throws {
        let (a, sessions, output, memfd) = try Self.busy()
        defer { close(memfd) }
        let image = a.dispatcher.stateImage(sessions: sessions.map { ($0, output[$0.connectionID] ?? []) },
                                            serverCounters: a.server.counters, audit: a.audit)
        let bytes = image.encoded()
        for n in 0..<bytes.count {
            #expect(throws: StateImageError.self) { try DispatcherStateImage(decoding: bytes[..<n]) }
        }
        var version = bytes
        version[8] = 2
        #expect(throws: StateImageError.unsupportedVersion(found: 2, supported: 1)) { try DispatcherStateImage(decoding: version) }
        #expect(throws: StateImageError.badMagic) { try DispatcherStateImage(decoding: a.hypervisor.stateImage(includeMemory: false).encoded()) }
        // Resealed damage: refused or decoded, never a trap; a decoded one that does not fit the hypervisor is refused.
        var rng = SplitMix64(seed: 3)
        let body = Array(bytes[StateImageEnvelope.headerSize...])
        for _ in 0..<2000 {
            var damaged = body
            damaged[Int.random(in: 0..<body.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            let sealed = StateImageEnvelope.seal(magic: DispatcherStateImage.magic, version: 1, body: damaged)
            _ = try? DispatcherStateImage(decoding: sealed)
        }
        // Sessions that claim a MEM_MAP the hypervisor does not have, or windows it does not have: refused.
        let fresh = try Layer()
        #expect(throws: StateImageError.self) { try fresh.dispatcher.restore(image) }
        var wrong = image
        wrong.sessions[0].mappedBases = []
        wrong.interruptLines.removeLast()
        #expect(throws: StateImageError.self) { try fresh.dispatcher.restore(wrong) }
        wrong.interruptLines = image.interruptLines
        wrong.connectionsOpen -= 1
        #expect(throws: StateImageError.self) { try fresh.dispatcher.restore(wrong) }
        // A role the configuration no longer grants (uid 1000 is no host under the default roles).
        let strict = Dispatcher(hypervisor: fresh.hypervisor)
        wrong = image
        wrong.sessions[0].mappedBases = []
        #expect(throws: StateImageError.configurationMismatch(reason: "session #10 (uid 1000) holds role host, which the configuration no longer grants it")) {
            try strict.restore(wrong)
        }
    }
}

extension Session {
    var connectionID: ConnectionID { (self as! DispatcherSession).connection }
}

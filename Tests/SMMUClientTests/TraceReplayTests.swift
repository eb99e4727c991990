import Foundation
import Testing
import WireProtocol
import TestSupport

@testable import SMMUClient

#if canImport(Glibc)
    import Glibc
#endif

/// A daemon recording its trace from the start (`--trace`), finalized at once.
final class TracingDaemon: DaemonChild {
    let tracePath: String

    init(maxBytes: UInt64? = nil) throws {
        let directory = try TemporaryDirectory()
        tracePath = directory.path + "/run.smmutrace"
        try super.init(binary: DaemonBinary.fromEnvironment, directory: directory,
                       arguments: ["--finalize-delay", "0", "--trace", tracePath]
                           + (maxBytes.map { ["--trace-max-bytes", "\($0)"] } ?? []),
                       captureStandardError: false)
        guard eventually(seconds: 20, {
            (try? SMMUClient(path: socketPath, timeout: .seconds(5)).hello(role: .admin, name: "wait").state) == .finalized
        }) else { throw SMMUClientError.timedOut }
    }

    /// Stops the daemon (its trace ends complete) and returns the trace.
    func finish() throws -> [UInt8] {
        #expect(stop() == 0)
        return try #require(FileManager.default.contents(atPath: tracePath).map { [UInt8]($0) })
    }
}

/// A fresh daemon for a replay: the same configuration, manual finalization, no trace of its own.
final class ReplayTarget: DaemonChild {
    init() throws {
        try super.init(binary: DaemonBinary.fromEnvironment, directory: TemporaryDirectory(),
                       arguments: ["--finalize", "manual", "--no-trace"], captureStandardError: false)
        guard eventually(seconds: 20, { (try? SMMUClient(path: socketPath, timeout: .seconds(5))) != nil }) else {
            throw SMMUClientError.timedOut
        }
    }
}

/// smmuctl, built beside smmu-hypd.
func runSMMUCtl(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: DaemonBinary.fromEnvironment)
        .deletingLastPathComponent().appendingPathComponent("smmuctl")
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["SMMU_HYPD_BIN"] = DaemonBinary.fromEnvironment
    process.environment = environment
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

/// Record and replay against the real daemon (docs/trace-format.md): a recorded run replays identically on a fresh
/// daemon, the memory the daemon read from client files is what makes it so, and a changed answer, a damaged file
/// or another version are reported as such by `smmuctl replay`.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] != nil, "set SMMU_HYPD_BIN to run against the daemon"))
struct TraceReplayTests {
    /// A workload touching what a replay must reproduce: a stage-1 domain whose tables live in a client memfd (the
    /// daemon reads them, no request writes them), DMA through it, an unmap with TLB maintenance, a fault raising an
    /// interrupt line that an EVENTS connection hears, a VM, and DUMP.
    static func recordWorkload() throws -> [UInt8] {
        let daemon = try TracingDaemon()
        let host = try SMMUClient(path: daemon.socketPath, timeout: .seconds(30))
        let hello = try host.hello(role: .host, name: "trace-host")
        let events = try SMMUClient(path: daemon.socketPath, timeout: .seconds(30))
        try events.hello(role: .host, name: "trace-events")
        let stream = try events.events()
        let domain = try TranslationCacheTests.Domain(host: host, hello: hello)
        defer { close(domain.file) }
        let device = try SMMUClient(path: daemon.socketPath, timeout: .seconds(30))
        try device.hello(role: .device, name: "trace-device")
        for i: UInt64 in 0..<16 { domain.map(iova: 0x10_0000 + i << 12, to: 0x8040_0000 + i << 12) }
        for i: UInt64 in 0..<16 {
            #expect(try device.dma(window: 0, stream: TranslationCacheTests.Domain.stream, iova: 0x10_0000 + i << 12 | 0x10).fault == 0)
        }
        try domain.unmap(iova: 0x10_0000)
        // SCTLR.CFIE on bank 0, then a translation fault there: context line 1 goes up.
        try host.write(address: domain.cb0, value: 1 | 1 << 6)
        #expect(try device.dma(window: 0, stream: TranslationCacheTests.Domain.stream, iova: 0x10_0000).fault != 0)
        #expect(try stream.next(timeout: .seconds(5)) != nil, "the fault raised a line")
        let vm = try host.vmCreate()
        try host.vmDonate(vm: vm, address: 0x8080_0000, size: 0x4000)
        let admin = try SMMUClient(path: daemon.socketPath, timeout: .seconds(30))
        try admin.hello(role: .admin, name: "trace-admin")
        _ = try admin.dump()
        _ = try admin.stats()
        device.close()
        host.close()
        events.close()
        admin.close()
        usleep(100_000)
        return try daemon.finish()
    }

    static func replay(_ trace: [UInt8]) throws -> Result<ReplaySummary, ReplayError> {
        let target = try ReplayTarget()
        defer { target.stop() }
        do { return .success(try TraceReplayer(socketPath: target.socketPath).run(trace)) } catch { return .failure(error) }
    }

    @Test("a recorded run replays on a fresh daemon with every answer and event identical")
    func recordedRunReplaysIdentically() throws {
        let trace = try Self.recordWorkload()
        let (_, records) = try TraceReader.read(trace)
        let exchanges = records.compactMap { if case .exchange(let e) = $0 { e } else { nil } }
        #expect(exchanges.contains { !$0.memory.isEmpty }, "the walks read the client's tables, and the trace has them")
        #expect(records.contains { if case .event = $0 { true } else { false } })
        #expect(records.last == .end(.stopped))
        let summary = try Self.replay(trace).get()
        #expect(summary.exchanges == exchanges.count)
        #expect(summary.events >= 1)
    }

    @Test("without the client memory it recorded, the replay diverges at the first DMA that walked the client's tables")
    func recordedMemoryIsWhatMakesItReplay() throws {
        let trace = try Self.recordWorkload()
        let (header, records) = try TraceReader.read(trace)
        let first = try #require(records.firstIndex { if case .exchange(let e) = $0 { !e.memory.isEmpty } else { false } })
        let stripped = records.map { r -> TraceRecord in
            guard case .exchange(var e) = r else { return r }
            e.memory = []
            return .exchange(e)
        }
        guard case .failure(.divergence(let d)) = try Self.replay(TraceEncoder.encode(header, stripped)) else {
            Issue.record("a replay without the recorded memory should diverge")
            return
        }
        #expect(d.record == first)
        #expect(d.request.hasPrefix("DMA "))
    }

    @Test("smmuctl replay: a trace with one answer changed exits 1 naming exactly that record; the trace itself exits 0")
    func alteredAnswerIsReportedAtItsRecord() throws {
        let trace = try Self.recordWorkload()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let good = dir.path + "/good.smmutrace"
        FileManager.default.createFile(atPath: good, contents: Data(trace))
        let ok = try runSMMUCtl(["replay", good])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(ok.output.contains("identical"))

        let (header, records) = try TraceReader.read(trace)
        // The 5th DMA's answer: its physical address, one bit off.
        let dmas = records.indices.filter {
            if case .exchange(let e) = records[$0] { e.request[3] == Opcode.dma.rawValue } else { false }
        }
        let target = dmas[4]
        var altered = records
        guard case .exchange(var e) = records[target] else { return }
        e.response[FrameHeader.size + 1] ^= 0x10
        altered[target] = .exchange(e)
        let bad = dir.path + "/bad.smmutrace"
        FileManager.default.createFile(atPath: bad, contents: Data(TraceEncoder.encode(header, altered)))
        let diverged = try runSMMUCtl(["replay", bad])
        #expect(diverged.status == 1, "\(diverged.output)")
        #expect(diverged.output.contains("divergence at record \(target) "), "\(diverged.output)")
        #expect(diverged.output.contains("DMA window 0 stream 0x10"), "\(diverged.output)")
    }

    @Test("smmuctl replay: a truncated, corrupt, foreign or future-version trace exits 2 with the reason, never a crash")
    func badTracesExitTwo() throws {
        let trace = TraceEncoder.encode(TraceHeader(configuration: Array("topology: tegra234\n".utf8)), [
            .sessionOpened(session: 1, peer: TracePeer(uid: 0, gid: 0, pid: 1)),
            .exchange(TraceExchange(session: 1, role: nil, request: Request.hello(HelloRequest(role: .admin, name: "x")).encoded(tag: 1),
                                    response: [])),
            .end(.stopped),
        ])
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        func replay(_ bytes: [UInt8]) throws -> (Int32, String) {
            let path = dir.path + "/t.smmutrace"
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
            return try runSMMUCtl(["replay", path])
        }
        let cut = try replay(Array(trace.dropLast(7)))
        #expect(cut.0 == 2 && cut.1.contains("truncated"), "\(cut.1)")
        var flipped = trace
        flipped[trace.count - 30] ^= 0xFF
        let corrupt = try replay(flipped)
        #expect(corrupt.0 == 2 && corrupt.1.contains("corrupt"), "\(corrupt.1)")
        var v2 = trace
        v2[8] = 2
        let version = try replay(v2)
        #expect(version.0 == 2 && version.1.contains("version 2 is not supported"), "\(version.1)")
        #expect(try runSMMUCtl(["trace", "show", dir.path + "/t.smmutrace"]).status == 2, "show refuses it too")
        let foreign = try replay(Array("not a trace at all, just some text".utf8))
        #expect(foreign.0 == 2 && foreign.1.contains("not a trace"), "\(foreign.1)")
        let missing = try runSMMUCtl(["replay", dir.path + "/nothing-here"])
        #expect(missing.0 == 2)
        #expect(try runSMMUCtl(["replay"]).status == 2, "usage: no trace")
        #expect(try runSMMUCtl(["replay", "--bogus", dir.path + "/t.smmutrace"]).status == 2, "usage: an unknown option")
    }

    @Test("the kept guest boot trace (Tests/Fixtures/traces/guest-boot.smmutrace) replays with no divergence")
    func keptGuestBootTraceReplays() throws {
        let path = repositoryRoot + "/Tests/Fixtures/traces/guest-boot.smmutrace"
        let (header, records) = try TraceReader.read(try #require(FileManager.default.contents(atPath: path).map { [UInt8]($0) }))
        #expect(header.configurationText.contains("qemu-virt"))
        #expect(records.count > 1000)
        let result = try runSMMUCtl(["replay", path])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("identical"), "\(result.output)")
        // In words: a line per record after the header's, the guest's MEM_MAP among them, the end last.
        let shown = try runSMMUCtl(["trace", "show", path])
        let lines = shown.output.split(separator: "\n")
        #expect(shown.status == 0 && lines.count == records.count + 1)
        #expect(lines.contains { $0.contains("MEM_MAP 0x40000000 size 0x20000000") })
        #expect(lines.last == "\(records.count - 1)\tend: truncated at max_bytes")
    }
}

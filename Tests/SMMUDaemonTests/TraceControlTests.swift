import Foundation
import SMMUClient
import TestSupport
import Testing
import WireProtocol
@testable import SMMUDaemon

/// TRACE (opcode 0x23, admin) and the `trace:` configuration against the real daemon (docs/trace-format.md): a
/// trace starts only in a new file, says what it holds, ends complete on stop, and ends truncated at its bound with
/// the daemon serving on regardless.
@Suite(.serialized)
struct TraceControlTests {
    static func start() throws -> (DaemonProcess, SMMUClient) {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"])
        var admin: SMMUClient?
        _ = eventually(seconds: 10) {
            guard let c = try? SMMUClient(path: daemon.socketPath, timeout: .seconds(10)),
                  (try? c.hello(role: .admin, name: "trace-admin").state) == .finalized else { return false }
            admin = c
            return true
        }
        return (daemon, try #require(admin))
    }

    static func trace(_ client: SMMUClient, _ request: TraceControlRequest) throws -> TraceStatus {
        try TraceStatus.decode(try client.callOK(.trace(request)))
    }

    @Test("start records into a new file, status counts it, stop ends it complete; the file holds the requests made")
    func startStatusStop() throws {
        let (daemon, admin) = try Self.start()
        defer { daemon.stop() }
        let path = daemon.directory.path + "/admin.smmutrace"
        #expect(try Self.trace(admin, .init(.status)) == TraceStatus(recording: false, end: nil, bytes: 0, records: 0, maxBytes: 0))
        let started = try Self.trace(admin, .init(.start, maxBytes: 1 << 20, path: path))
        #expect(started.recording && started.end == nil && started.maxBytes == 1 << 20)
        let host = try SMMUClient(path: daemon.socketPath, timeout: .seconds(10))
        try host.hello(role: .host, name: "traced")
        for _ in 0..<10 { _ = try host.read(address: DaemonProcessTests.tegraSCR0) }
        let during = try Self.trace(admin, .init(.status))
        #expect(during.recording && during.records >= 12, "open, HELLO, 10 READs: \(during)")
        let stopped = try Self.trace(admin, .init(.stop))
        #expect(!stopped.recording && stopped.end == .stopped)
        #expect(eventually { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) == stopped.bytes })
        let (_, records) = try TraceReader.read([UInt8](try #require(FileManager.default.contents(atPath: path))))
        let reads = records.filter { if case .exchange(let e) = $0 { e.request[3] == Opcode.read.rawValue } else { false } }
        #expect(reads.count == 10)
        #expect(records.last == .end(.stopped))
        #expect(UInt64(records.count) == stopped.records)
        // The answers TRACE gave are not in it: a replay does not record.
        #expect(!records.contains { if case .exchange(let e) = $0 { e.request[3] == Opcode.trace.rawValue } else { false } })
    }

    @Test("an existing file, a relative path, a bound below the header, an unknown command: INVALID; a host: FORBIDDEN")
    func refusals() throws {
        let (daemon, admin) = try Self.start()
        defer { daemon.stop() }
        let existing = daemon.directory.path + "/exists"
        FileManager.default.createFile(atPath: existing, contents: Data("keep me".utf8))
        #expect(throws: SMMUClientError.status(.invalid)) { try admin.callOK(.trace(.init(.start, path: existing))) }
        #expect(String(decoding: FileManager.default.contents(atPath: existing) ?? Data(), as: UTF8.self) == "keep me")
        #expect(throws: SMMUClientError.status(.invalid)) { try admin.callOK(.trace(.init(.start, path: "relative.smmutrace"))) }
        #expect(throws: SMMUClientError.status(.invalid)) {
            try admin.callOK(.trace(.init(.start, path: daemon.directory.path + "/nul\0.smmutrace")))
        }
        #expect(!FileManager.default.fileExists(atPath: daemon.directory.path + "/nul"))
        #expect(throws: SMMUClientError.status(.invalid)) {
            try admin.callOK(.trace(.init(.start, maxBytes: 64, path: daemon.directory.path + "/tiny")))
        }
        #expect(throws: SMMUClientError.status(.invalid)) {
            try admin.callOK(.trace(.init(commandValue: 7, maxBytes: 0, path: "")))
        }
        #expect(throws: SMMUClientError.status(.invalid), "no trace.path configured and none given") {
            try admin.callOK(.trace(.init(.start)))
        }
        let host = try SMMUClient(path: daemon.socketPath, timeout: .seconds(10))
        try host.hello(role: .host, name: "not-admin")
        #expect(throws: SMMUClientError.status(.forbidden)) {
            try host.callOK(.trace(.init(.start, path: daemon.directory.path + "/host.smmutrace")))
        }
        #expect(!FileManager.default.fileExists(atPath: daemon.directory.path + "/host.smmutrace"))
    }

    @Test("at its bound the trace ends truncated, within max_bytes and readable to its end record; the daemon serves on")
    func boundTruncates() throws {
        let (daemon, admin) = try Self.start()
        defer { daemon.stop() }
        let path = daemon.directory.path + "/bounded.smmutrace"
        let bound: UInt64 = 16 << 10
        _ = try Self.trace(admin, .init(.start, maxBytes: bound, path: path))
        let host = try SMMUClient(path: daemon.socketPath, timeout: .seconds(10))
        try host.hello(role: .host, name: "bounded")
        for _ in 0..<1000 { _ = try host.read(address: DaemonProcessTests.tegraSCR0) }
        let status = try Self.trace(admin, .init(.status))
        #expect(!status.recording && status.end == .truncated)
        #expect(status.bytes <= bound && status.bytes > bound - 200, "\(status)")
        #expect(eventually { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) == status.bytes })
        let (_, records) = try TraceReader.read([UInt8](try #require(FileManager.default.contents(atPath: path))))
        #expect(records.last == .end(.truncated))
        let before = try host.read(address: DaemonProcessTests.tegraSCR0)   // still answering, the same
        #expect(try host.read(address: DaemonProcessTests.tegraSCR0) == before)
        // A new trace may start after the last one ended.
        #expect(try Self.trace(admin, .init(.start, maxBytes: bound, path: path + ".2")).recording)
    }
}

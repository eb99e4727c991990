import Foundation
import TestSupport
import Glibc
import Testing
@testable import SMMUDaemon

@Suite(.serialized)
struct ListeningSocketTests {
    @Test(arguments: [UInt32(0o660), 0o600, 0o666])
    func socketFileGetsTheConfiguredMode(mode: UInt32) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let old = umask(0o077)  // the mode must not depend on the umask
        defer { umask(old) }
        let socket = try ListeningSocket.bind(path: dir.path + "/m.sock", mode: mode)
        defer { close(socket.fd) }
        var st = stat()
        #expect(stat(dir.path + "/m.sock", &st) == 0)
        #expect(st.st_mode & 0o777 == mode)
        #expect(st.st_mode & S_IFMT == S_IFSOCK)
    }

    @Test func staleSocketFileIsReplaced() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path + "/stale.sock"
        let first = try ListeningSocket.bind(path: path, mode: 0o600)
        close(first.fd)  // a crashed daemon: the file stays, nobody accepts
        #expect(access(path, F_OK) == 0)
        #expect(ListeningSocket.probe(path) == ECONNREFUSED)
        let second = try ListeningSocket.bind(path: path, mode: 0o600)
        defer { close(second.fd) }
        #expect(ListeningSocket.probe(path) == 0)
    }

    @Test func liveSocketIsRefused() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path + "/live.sock"
        let live = try ListeningSocket.bind(path: path, mode: 0o600)
        defer { close(live.fd) }
        #expect(throws: SocketError.inUse(path)) { try ListeningSocket.bind(path: path, mode: 0o600) }
        #expect(ListeningSocket.probe(path) == 0, "the live server's socket must survive the attempt")
    }

    @Test func regularFileIsNeverReplaced() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path + "/file"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("keep".utf8)))
        #expect(throws: SocketError.notASocket(path)) { try ListeningSocket.bind(path: path, mode: 0o600) }
        #expect(FileManager.default.contents(atPath: path) == Data("keep".utf8))
    }

    @Test func missingParentDirectoryIsCreated() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let socket = try ListeningSocket.bind(path: dir.path + "/a/b/c.sock", mode: 0o600)
        defer { close(socket.fd) }
        #expect(ListeningSocket.probe(dir.path + "/a/b/c.sock") == 0)
    }

    @Test func overlongPathIsAnError() {
        let path = "/tmp/" + String(repeating: "x", count: 120)
        #expect(throws: SocketError.pathTooLong(path)) { try ListeningSocket.bind(path: path, mode: 0o600) }
    }
}

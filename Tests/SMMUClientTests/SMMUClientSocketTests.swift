import CSocketShims
import Foundation
import Testing
import WireProtocol

@testable import SMMUClient

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct SMMUClientSocketTests {
    @Test("MEM_MAP passes its file descriptor as SCM_RIGHTS: the server reads the client's file through it")
    func memMapPassesDescriptor() throws {
        let (c, s) = socketPair()
        let server = TestServer(fd: s) { _ in (.ok, .none) }
        // A real file whose contents the server can only know through the passed descriptor.
        var template = Array("/tmp/smmu-memmap-XXXXXX".utf8CString)
        let file = mkstemp(&template)
        try #require(file >= 0)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        let marker = Array("guest RAM page 0".utf8)
        #expect(pwrite(file, marker, marker.count, 4096) == marker.count)

        let client = SMMUClient(connectedFD: c, timeout: .seconds(10))
        try client.memMap(address: 0x8000_0000, size: 0x2000, offset: 0x1000, fd: file)
        // An ordinary call after it carries no descriptor.
        try client.write(address: 0x0800_0000, value: 1)
        client.close()
        server.join()

        let got = server.received.withLock { $0 }
        #expect(got.count == 2)
        #expect(got.first?.request == .memMap(MemMapRequest(address: 0x8000_0000, size: 0x2000, offset: 0x1000)))
        let passed = try #require(got.first?.fds.first)
        #expect(got.first?.fds.count == 1 && got.last?.fds.isEmpty == true)
        #expect(passed != file)
        var buffer = [UInt8](repeating: 0, count: marker.count)
        #expect(pread(passed, &buffer, buffer.count, 4096) == marker.count)
        #expect(buffer == marker)
        var a = stat(), b = stat()
        fstat(passed, &a)
        fstat(file, &b)
        #expect(a.st_ino == b.st_ino && a.st_dev == b.st_dev)
        close(passed)
        close(file)
    }

    @Test("csock_recv_with_fds reports every descriptor sent, keeping max_fds and closing the rest")
    func extraDescriptorsCounted() throws {
        let (c, s) = socketPair()
        defer { close(c); close(s) }
        let fds: [Int32] = [0, 1, 2]
        let byte: [UInt8] = [0x42]
        #expect(csock_send_with_fds(c, byte, 1, fds, 3, Int32(MSG_NOSIGNAL)) == 1)
        var got: [Int32] = [-1]
        var count: Int32 = 0, truncated: Int32 = 0
        var buf: [UInt8] = [0]
        #expect(csock_recv_with_fds(s, &buf, 1, &got, 1, &count, &truncated, 0) == 1)
        #expect(count == 3 && truncated == 0 && buf == [0x42])
        #expect(got[0] > 2 && fcntl(got[0], F_GETFD) & FD_CLOEXEC != 0)
        close(got[0])
    }

    @Test("pipelined requests against a slow reader: writes and reads interleave, answers come in order")
    func pipelineBackPressure() throws {
        let (c, s) = socketPair()
        // Reads 512 bytes at a time, so a client that wrote everything before reading would deadlock
        // once both socket buffers fill (20k requests: 320 KB out, 480 KB back).
        let server = TestServer(fd: s, readChunk: 512) { request in
            guard case .read(let r) = request else { return (.invalid, .none) }
            return (.ok, .read(r.address ^ 0xFFFF))
        }
        let client = SMMUClient(connectedFD: c, timeout: .seconds(60))
        let count = 20_000
        var bytes: [UInt8] = []
        for i in 0..<count { Request.read(ReadRequest(address: UInt64(i) * 4, width: 4)).encode(tag: UInt32(i), into: &bytes) }
        var seen = 0
        var wrong = 0
        try client.exchange(bytes, responses: count) { header, payload throws(SMMUClientError) in
            let value = payload.loadLE(UInt64.self, at: 0)
            if header.tag != UInt32(seen) || value != (UInt64(seen) * 4) ^ 0xFFFF || header.statusCode != .ok { wrong += 1 }
            seen += 1
        }
        #expect(seen == count && wrong == 0)

        // The typed pipeline checks tags and returns frames in request order.
        let frames = try client.pipeline((0..<100).map { .read(ReadRequest(address: UInt64($0), width: 4)) } + [.vmCreate])
        #expect(frames.count == 101)
        #expect(frames.prefix(100).enumerated().allSatisfy { i, f in f.payload.loadLE(UInt64.self, at: 0) == UInt64(i) ^ 0xFFFF })
        #expect(frames.last?.status == .invalid && frames.last?.payload == [0, 0, 0, 0])
        client.close()
        server.join()
    }

    @Test("a non-OK status is a typed error; raw frames reach the server as sent")
    func statusErrorsAndRawFrames() throws {
        let (c, s) = socketPair()
        let server = TestServer(fd: s) { request in
            switch request {
            case .write: (.denied, .none)
            case .read: (.deferred, .read(99))
            case .dma: (.fault, .dma(DMAResponse(physicalAddress: 0, fault: 7)))
            default: (.ok, .none)
            }
        }
        let client = SMMUClient(connectedFD: c, timeout: .seconds(10))
        #expect(throws: SMMUClientError.status(.denied)) { try client.write(address: 0x10, value: 1) }
        #expect(throws: SMMUClientError.status(.deferred)) { _ = try client.read(address: 0x10) }
        #expect(try client.dma(window: 0, stream: 3, iova: 0x1000) == DMAResponse(physicalAddress: 0, fault: 7))

        try client.sendRaw(FrameHeader(opcode: 0x66, tag: 500, length: 3).encoded + [1, 2, 3])
        let unsupported = try client.receiveFrame()
        #expect(unsupported.header == FrameHeader(opcode: 0xE6, tag: 500, status: Status.unsupported.rawValue, length: 0))
        var bad = Request.stats.encoded(tag: 501)
        bad[2] = 9
        try client.sendRaw(bad)
        let malformed = try client.receiveFrame()
        #expect(malformed.status == .malformed && malformed.header.tag == 501 && malformed.header.opcode == 0xA0)
        #expect(try client.waitForClose(timeout: .seconds(5)))
        #expect(throws: SMMUClientError.self) { try client.finalize() }
        server.join()
    }
}

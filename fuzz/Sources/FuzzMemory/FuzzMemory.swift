// libFuzzer target for the memory paths: client memory (MEM_MAP of memfds of any size, sealed or not,
// truncated or grown afterwards, one file page at two addresses), MEM_READ/MEM_WRITE, page tables the
// host builds in its memory (descriptors and TTBRs with any bits, unaligned ones included), DMA walks,
// the VM hypercalls, and closing the session (which unmaps). Every request goes through the daemon's
// request path: a host session and a device session of a Dispatcher, fds handed over with the frame as
// the socket server hands over SCM_RIGHTS descriptors.
//
// Oracles, after every step unless said otherwise:
// - the process does not crash (a SIGBUS on client memory is a finding);
// - every request gets exactly one well-formed response with its tag;
// - no page a VM or the hypervisor owns is backed by client memory;
// - isolation: each page donated to a VM holds canaries planted at donation (as the VM's own data);
//   no host action may change them, no host MEM_READ may return one, and a host stream's DMA gives
//   the same answer whatever bytes they hold (a differential run);
// - after a session closes, none of its client memory is still mapped;
// - the hypervisor's invariant checker holds (after a hypercall that succeeded, and at the end);
// - the denial count matches the audit records.
#if canImport(Glibc)
import Glibc
#endif
import CFuzzShims
import FuzzSupport
import PKVM
import SMMUDaemon
import SMMUModel
import WireProtocol

let page: UInt64 = 4096
let hostRAM = PhysicalRange(base: 0x8000_0000, size: 64 * page)
let topology = Topology.generic4K(base: 0x2B40_0000)
nonisolated(unsafe) let machine = ReusedHypervisor(policy: HypervisorPolicy(
    topology: topology, hostRAM: [hostRAM], hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 64 * page)))

/// "VMSECRET": the first word of a canary. Host writes are 8-byte aligned words, so a host read can only
/// return this word at an aligned address if a VM page's bytes leaked or the host wrote it itself.
let canaryMagic: UInt64 = 0x5445_5243_4553_4D56
let canaryOffsets = [0, 2048, 4088 - 8]

/// One for the process: a decoder allocates its buffer when made (a page fault per page, each time).
nonisolated(unsafe) var responseDecoder = FrameDecoder(mode: .responses)
/// A request's bytes and the session's answer, reused (keeping their capacity) by every exchange.
nonisolated(unsafe) var requestBytes: [UInt8] = []
nonisolated(unsafe) var responseBytes: [UInt8] = []

/// Unsealed memfds of earlier inputs, for the next ones to take instead of creating one (creating and closing a
/// memfd was ~5% of an input). Taken, one is truncated to 0 and then to the size asked for, so it holds zeros, as a
/// new one does. A memfd goes back only once its input is done (its sessions closed, so nothing maps it), so within
/// an input every memfd is its own file, as new ones are; a sealed one is closed (seals cannot be undone).
nonisolated(unsafe) var memfdPool: [Int32] = []

final class DiscardingServer: ServerHandle {
    func send(_ bytes: [UInt8], to connection: ConnectionID) {}
}

func fail(_ message: String) -> Never {
    // -O drops precondition messages: say it before trapping.
    fatalError(message)
}

/// One input's run.
struct Run {
    var b: Bytes
    let h: Hypervisor
    let dispatcher: Dispatcher
    var host: Session
    let device: Session
    var nextConnection: UInt64 = 3
    var tag: UInt32 = 1
    /// The client's memfds the input picks from (at most 4), and those it dropped from that list: all of them go
    /// back to the pool or are closed when the input is done.
    var memfds: [Int32] = []
    var dropped: [Int32] = []
    var sealed: Set<Int32> = []
    var vms: [UInt32] = []
    /// A hypercall changed who owns a page or a stream: the end-of-input check then samples DMAs too.
    var ownershipChanged = false
    /// Pages donated to a VM and holding canaries, by VM.
    var canaries: [UInt32: [UInt64]] = [:]
    var hostWroteMagic = false
    /// The last stage-1 bank `attach` set up: its table base and input size (for `mapRun`).
    var stage1: (ttbr: UInt64, inputBits: Int)?
    let window = topology.windows[0]

    init(_ b: Bytes, _ h: Hypervisor) {
        self.b = b
        self.h = h
        dispatcher = Dispatcher(hypervisor: h)
        host = dispatcher.makeSession(connection: ConnectionID(rawValue: 1), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                      server: DiscardingServer())
        device = dispatcher.makeSession(connection: ConnectionID(rawValue: 2), peer: PeerCredentials(pid: 2, uid: 0, gid: 0),
                                        server: DiscardingServer())
        _ = exchange(.hello(HelloRequest(role: .host, name: "fuzz-host")), on: host)
        _ = exchange(.hello(HelloRequest(role: .device, name: "fuzz-device")), on: device)
    }

    // MARK: Requests

    /// Sends one request (with `fds` as its SCM_RIGHTS descriptors) and returns its one response.
    mutating func exchange(_ request: Request, on session: Session, fds passed: [Int32] = []) -> (Status, [UInt8]) {
        tag &+= 1
        requestBytes.removeAll(keepingCapacity: true)
        request.encode(tag: tag, into: &requestBytes)
        var fds = passed
        responseBytes.removeAll(keepingCapacity: true)
        _ = requestBytes.withUnsafeBytes { session.receive($0, fds: &fds, output: &responseBytes) }
        for fd in fds { close(fd) }   // what the session did not take, the server closes
        responseDecoder.append(responseBytes)
        var frames = 0
        var first: (FrameHeader, [UInt8])?
        while let wellFormed = responseDecoder.next({ v, p -> Bool in
            guard case .message(let header) = v else { return false }
            frames += 1
            if first == nil { first = (header, Array(p)) }
            return true
        }) {
            if !wellFormed { fail("a response that is not a well-formed frame") }
        }
        if responseDecoder.bufferedByteCount != 0 { fail("a truncated response") }
        guard frames == 1, let (header, payload) = first else { fail("\(frames) responses to one \(request.opcode)") }
        guard header.tag == tag, header.opcode == request.opcode.rawValue | 0x80, let status = header.statusCode else {
            fail("response \(header) does not answer \(request.opcode) tag \(tag)")
        }
        return (status, payload)
    }

    // MARK: Input decoding

    /// A page of host RAM, sometimes one just outside it.
    mutating func pageAddress() -> UInt64 {
        let n = UInt64(b.u8()) % (hostRAM.size / page + 4)
        return hostRAM.base + n * page
    }
    mutating func memfd() -> Int32? { memfds.isEmpty ? nil : memfds[Int(b.u8()) % memfds.count] }
    mutating func vm() -> UInt32 { vms.isEmpty ? UInt32(b.u8() % 4) : vms[Int(b.u8()) % vms.count] }
    /// A file size: whole pages, or pages and a tail.
    mutating func fileSize() -> Int {
        let pages = Int(b.u8() % 12)
        return b.bool() ? pages * Int(page) + Int(b.u16() % 4096) : pages * Int(page)
    }
    mutating func noteHostWrite(_ value: UInt64) { if value == canaryMagic { hostWroteMagic = true } }

    // MARK: Steps

    mutating func step() {
        switch b.u8() % 16 {
        case 0:   // a memfd of any size, maybe sealed
            let fd: Int32
            if let reused = memfdPool.popLast() {
                fd = reused
                guard ftruncate(fd, 0) == 0 else { fail("ftruncate of a pooled memfd: errno \(errno)") }
            } else {
                fd = fuzz_memfd_create("fuzz-memory")
                guard fd >= 0 else { fail("memfd_create: errno \(errno)") }
            }
            _ = ftruncate(fd, off_t(fileSize()))
            let seals = b.u8()
            if seals & 0x10 != 0 && seals & 0xF != 0 {
                _ = fuzz_add_seals(fd, UInt32(seals & 0xF))
                sealed.insert(fd)
            }
            if memfds.count == 4 { dropped.append(memfds.removeFirst()) }
            memfds.append(fd)
        case 1:   // MEM_MAP one of them (the same one twice is an alias)
            guard let fd = memfd() else { return }
            let address = pageAddress()
            let size = UInt64(b.u8() % 6) * page
            let offset = UInt64(b.u8() % 6) * page
            let passed = dup(fd)
            _ = exchange(.memMap(MemMapRequest(address: address, size: size, offset: offset)), on: host, fds: [passed])
        case 2:   // the client truncates or grows its file afterwards
            guard let fd = memfd() else { return }
            _ = ftruncate(fd, off_t(fileSize()))
        case 3:   // the client writes its file directly (8-byte aligned words, see canaryMagic)
            guard let fd = memfd() else { return }
            var value = b.u64()
            noteHostWrite(value)
            let offset = off_t(b.u16()) * 8 % off_t(8 * page)
            _ = pwrite(fd, &value, 8, offset)
        case 4:   // MEM_READ
            let address = pageAddress() + UInt64(b.u16() % 4096)
            let length = b.bool() ? UInt32(b.u16()) % 0x3000 + 1 : UInt32(b.u8()) + 1
            let (status, bytes) = exchange(.memRead(MemReadRequest(address: address, length: length)), on: host)
            if status == .ok { checkHostRead(address: address, bytes) }
        case 5:   // MEM_WRITE of one word
            let address = pageAddress() + UInt64(b.u16() & 0xFF8)
            let value = b.u64()
            noteHostWrite(value)
            _ = exchange(.memWrite(MemWriteRequest(address: address, bytes: le(value))), on: host)
        case 6 where b.bool():   // a run of valid descriptors (tables above, pages at level 3): mapped neighbours
            let table = pageAddress()
            let index = UInt64(b.u16() & 0x1FF)
            let bits = 0x403 | UInt64(b.u8() & 0xC0)   // valid, table or page, AF; AP[2:1] from the input
            for k in 0..<min(UInt64(b.u8() % 32 + 1), 512 - index) {
                _ = exchange(.memWrite(MemWriteRequest(address: table + (index + k) * 8, bytes: le(pageAddress() | bits))), on: host)
            }
        case 6:   // a descriptor in host memory: a page's address with any low (and some high) bits
            let table = pageAddress()
            let index = UInt64(b.u16() & 0x1FF)
            var value = pageAddress() | UInt64(b.u16() & 0xFFF)
            if b.bool() { value |= UInt64(b.u16()) << 48 }
            noteHostWrite(value)
            _ = exchange(.memWrite(MemWriteRequest(address: table + index * 8, bytes: le(value))), on: host)
        case 7:   // any register write
            let (address, width) = register()
            let value = b.bool() ? UInt64(b.u32()) : b.u64()
            _ = exchange(.write(WriteRequest(address: address, value: value, width: width)), on: host)
        case 8 where b.bool() && stage1 != nil:   // tables down to a run of pages, under the last stage-1 bank
            mapRun()
        case 8:   // a context bank walking tables in host memory, and a stream routed to it
            attach()
        case 9 where b.bool():   // DMA_PREFETCH: each record must be what a DMA_CACHED of its first page answers
            prefetch()
        case 9:   // DMA by a device
            let stream = UInt32(b.u8() & 0xF)
            let iova = b.bool() ? UInt64(b.u32() & 0x3F_FFFF) : pageAddress() + UInt64(b.u16() & 0xFFF)
            let request = Request.dma(DMARequest(window: 0, streamID: stream, iova: iova, flags: DMAFlags(rawValue: UInt32(b.u8() & 7))))
            // Differential, when VMs hold pages: a host stream's translation must not depend on their bytes
            // (a walk reading a descriptor that crosses into a VM page would). Same DMA, TLB flushed before
            // each, with the canaries replaced by zeros for the first.
            let differential = !canaries.isEmpty && h.ownership.owner(ofStream: StreamID(UInt16(stream)), smmu: 0) == .host
            if differential {
                setCanaries(alternate: true)
                write(.TLBIALLNSNH, 0, 0)
            }
            let (status, payload) = exchange(request, on: device)
            if differential {
                setCanaries(alternate: false)
                write(.TLBIALLNSNH, 0, 0)
                let (again, payloadAgain) = exchange(request, on: device)
                if again != status || payloadAgain != payload {
                    fail("a host stream's DMA (stream \(stream), iova 0x\(String(iova, radix: 16))) depends on VM page bytes: \(status) \(payload) then \(again) \(payloadAgain)")
                }
            }
            if status == .ok { checkDMA(stream: stream, payload) }
        case 10:
            let (status, payload) = exchange(.vmCreate, on: host)
            if status == .ok, payload.count == 4 {
                vms.append(UInt32(payload[0]) | UInt32(payload[1]) << 8 | UInt32(payload[2]) << 16 | UInt32(payload[3]) << 24)
            }
        case 11:  // VM_DONATE; its pages get canaries
            let vm = vm()
            let base = pageAddress()
            let size = UInt64(b.u8() % 4 + 1) * page
            if exchange(.vmDonate(VMDonateRequest(vm: vm, address: base, size: size)), on: host).0 == .ok {
                plant(PhysicalRange(base: base, size: size), vm: vm)
                ownershipChanged = true
                checkInvariants("after VM_DONATE")
            }
        case 12:
            let vm = vm()
            if exchange(.vmAssignStream(VMAssignStreamRequest(vm: vm, window: 0, streamID: UInt32(b.u8() & 0xF))), on: host).0 == .ok {
                ownershipChanged = true
                checkInvariants("after VM_ASSIGN_STREAM")
            }
        case 13:
            let vm = vm()
            if exchange(.vmDestroy(vm: vm), on: host).0 == .ok {
                vms.removeAll { $0 == vm }
                canaries[vm] = nil   // scrubbed and the host's again
                ownershipChanged = true
                checkInvariants("after VM_DESTROY")
            }
        case 14:  // the host's connection closes (its client memory is unmapped) and it connects again
            reconnectHost()
        default:  // any register read
            let (address, width) = register()
            _ = exchange(.read(ReadRequest(address: address, width: width)), on: host)
        }
    }

    func le(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> UInt64($0 * 8)) } }

    mutating func register() -> (UInt64, UInt32) {
        let width: UInt32 = b.bool() ? 8 : 4
        let pick = b.u8()
        if pick & 0x80 != 0 { return (window.base + UInt64(b.u32()) % window.size, width) }
        let d = RegisterMap.all[Int(pick) % RegisterMap.all.count]
        let index = Int(b.u8()) % max(1, d.space == .contextBank ? window.configuration.numContextBanks : d.count)
        return (window.base + window.configuration.offset(of: d.name, index: index) + (b.bool() ? 4 : 0), width)
    }

    mutating func write(_ name: RegisterName, _ index: Int = 0, _ value: UInt64, width: UInt32 = 4) {
        let address = window.base + window.configuration.offset(of: name, index: index)
        _ = exchange(.write(WriteRequest(address: address, value: value, width: width)), on: host)
    }

    /// Linux's attach (arm_smmu_write_context_bank, then the stream's SMR and S2CR), with the table base and
    /// the translation regime from the input: stage 1, stage 2, or stage 1 nested over the next bank's stage 2.
    mutating func attach() {
        let bank = Int(b.u8() % 4)
        let kind = b.u8() % 3
        let ttbr = pageAddress() | UInt64(b.u16() & 0xFFF)   // bits 11:0 too: an unaligned table base
        let stream = UInt16(b.u8() & 0xF)
        let t0sz = UInt64([16, 25, 33, 39][Int(b.u8() % 4)])
        stage1 = kind == 0 ? (ttbr & ~0xFFF, 64 - Int(t0sz)) : nil
        switch kind {
        case 0:
            write(.CBA2R, bank, 1)
            write(.CBAR, bank, 0x0001_F300)
            write(.TCR2, bank, 0x0003_8015)
            write(.TCR, bank, 0x0080_2000 | t0sz)
            write(.TTBR0, bank, UInt64(bank) << 48 | ttbr, width: 8)
            write(.MAIR0, bank, 0xF404_FF44)
        default:
            // VTCR: SL0 from the input, TG0 4 KiB, PS 40-bit, inner shareable, WB.
            let sl0 = UInt64(b.u8() % 3)
            let s2 = kind == 1 ? bank : (bank + 1) % 4
            write(.CBA2R, s2, 1)
            write(.CBAR, s2, UInt64(s2 + 1))
            write(.TCR, s2, 0x8002_3500 | sl0 << 6 | t0sz)
            write(.TTBR0, s2, ttbr, width: 8)
            write(.SCTLR, s2, 0x67)
            if kind == 2 {
                let s1 = pageAddress() | UInt64(b.u16() & 0xFFF)
                write(.CBA2R, bank, 1)
                write(.CBAR, bank, 3 << 16 | UInt64(s2) << 8)
                write(.TCR2, bank, 0x0003_8015)
                write(.TCR, bank, 0x0080_2000 | t0sz)
                write(.TTBR0, bank, UInt64(bank) << 48 | s1, width: 8)
            }
        }
        write(.SCTLR, bank, kind == 1 ? 0x67 : 0x1067)
        write(.S2CR, bank, 0x0002_0000)
        write(.SMR, bank, 1 << 31 | UInt64(stream))
        write(.S2CR, bank, UInt64(bank))
    }

    /// Under the last stage-1 bank: table descriptors from its TTBR down to a last-level table for an IOVA the DMA
    /// steps use, then a run of page descriptors there, some of them holes or read-only: what DMA_PREFETCH decodes in
    /// bulk (the fuzzer rarely chains four random descriptors itself).
    mutating func mapRun() {
        guard let (ttbr, inputBits) = stage1 else { return }
        let iova = b.bool() ? UInt64(b.u32() & 0x3F_FFFF) : pageAddress()
        guard iova >> UInt64(inputBits) == 0 else { return }
        var table = ttbr
        let start = inputBits > 39 ? 0 : inputBits > 30 ? 1 : 2
        for level in start...2 {
            let next = pageAddress()
            _ = exchange(.memWrite(MemWriteRequest(address: table + ((iova >> UInt64(39 - 9 * level)) & 511) * 8,
                                                   bytes: le(next | 3))), on: host)
            table = next
        }
        let first = (iova >> 12) & 511
        for k in 0..<min(UInt64(b.u8() % 64 + 1), 512 - first) {
            let kind = b.u8()
            let value: UInt64 = kind % 5 == 0 ? 0 : pageAddress() | 0x403 | (kind % 5 == 1 ? 0x80 : 0x40)
            _ = exchange(.memWrite(MemWriteRequest(address: table + (first + k) * 8, bytes: le(value))), on: host)
        }
    }

    mutating func reconnectHost() {
        host.closed()
        if !h.memory.replacedRanges.isEmpty { fail("client memory still mapped after its session closed: \(h.memory.replacedRanges)") }
        host = dispatcher.makeSession(connection: ConnectionID(rawValue: nextConnection), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                      server: DiscardingServer())
        nextConnection += 1
        _ = exchange(.hello(HelloRequest(role: .host, name: "fuzz-host")), on: host)
    }

    // MARK: Oracles

    /// A VM's own data: the canary word and the page's address, at a few offsets.
    func plantCanary(_ p: UInt64, vm: UInt32) {
        for o in canaryOffsets {
            guard h.memory.write64(canaryMagic, at: p + UInt64(o)), h.memory.write64(p, at: p + UInt64(o) + 8) else {
                fail("VM page 0x\(String(p, radix: 16)) is not writable memory")
            }
        }
    }

    /// Zeros in place of every canary (`alternate`: a fresh VM page's bytes), or the canaries back.
    func setCanaries(alternate: Bool) {
        for pages in canaries.values {
            for p in pages {
                for o in canaryOffsets {
                    h.memory.write64(alternate ? 0 : canaryMagic, at: p + UInt64(o))
                    h.memory.write64(alternate ? 0 : p, at: p + UInt64(o) + 8)
                }
            }
        }
    }

    mutating func plant(_ range: PhysicalRange, vm: UInt32) {
        for p in stride(from: range.base, to: range.end, by: Int(page)) {
            plantCanary(p, vm: vm)
            canaries[vm, default: []].append(p)
        }
    }

    func checkCanaries(_ when: @autoclosure () -> String) {
        for (vm, pages) in canaries {
            for p in pages {
                guard h.ownership.owner(ofAddress: p) == .vm(VMHandle(rawValue: vm)) else {
                    fail("page 0x\(String(p, radix: 16)) of vm\(vm) changed owner without VM_DESTROY \(when())")
                }
                for o in canaryOffsets where h.memory.read64(at: p + UInt64(o)) != canaryMagic || h.memory.read64(at: p + UInt64(o) + 8) != p {
                    fail("VM page 0x\(String(p, radix: 16)) of vm\(vm) changed by the host \(when())")
                }
            }
        }
    }

    /// No page of a VM or of the hypervisor is client memory.
    func checkClientMemory(_ when: @autoclosure () -> String) {
        for r in h.memory.replacedRanges {
            for p in stride(from: r.base, to: r.base + r.size, by: Int(page)) where h.ownership.owner(ofAddress: p) != .host {
                fail("page 0x\(String(p, radix: 16)) of \(h.ownership.owner(ofAddress: p).map { "\($0)" } ?? "nobody") is client memory \(when())")
            }
        }
    }

    func checkHostRead(address: UInt64, _ bytes: [UInt8]) {
        guard !hostWroteMagic else { return }
        var i = Int((8 - address % 8) % 8)
        while i + 8 <= bytes.count {
            var word: UInt64 = 0
            for k in 0..<8 { word |= UInt64(bytes[i + k]) << UInt64(k * 8) }
            if word == canaryMagic { fail("MEM_READ at 0x\(String(address, radix: 16)) returned a VM's canary at +\(i)") }
            i += 8
        }
    }

    /// DMA_PREFETCH (the daemon decodes last-level tables in bulk, MMU500.probeLeafRun): a well-formed answer whose
    /// every record is what DMA_CACHED answers for that record's first page (address, size, directions), asked at
    /// once, and whose outputs the stream's owner may reach.
    mutating func prefetch() {
        let stream = UInt32(b.u8() & 0xF)
        let iova = b.bool() ? UInt64(b.u32() & 0x3F_FFFF) : pageAddress() + UInt64(b.u16() & 0xFFF)
        let flags = DMAFlags(rawValue: UInt32(b.u8() & 7))
        let count = UInt32(b.u16()) % (DMAPrefetchRequest.maxPages + 2)
        let mode = [0, DMAPrefetchRequest.backwardFlag, DMAPrefetchRequest.windowFlag][Int(b.u8() % 3)]
        let access = DMARequest(window: 0, streamID: stream, iova: iova, flags: flags)
        let (status, payload) = exchange(.dmaPrefetch(DMAPrefetchRequest(access: access, pages: count | mode)), on: device)
        guard status == .ok else { return }
        guard payload.count >= 16, (payload.count - 16) % 16 == 0 else { fail("DMA_PREFETCH answer of \(payload.count) bytes") }
        let n = Int(word32(payload, 8))
        let most = mode == DMAPrefetchRequest.windowFlag ? 2 * Int(count) + 1 : Int(count)
        guard n == (payload.count - 16) / 16, n >= 1, n <= most else { fail("DMA_PREFETCH: \(n) records for \(count) (\(mode))") }
        for i in stride(from: 0, to: n, by: max(1, n / 48)) {   // 48 or so of up to 1,025: an input stays fast
            let r = Array(payload[(16 + 16 * i)..<(32 + 16 * i)])
            let pa = word64(r, 0), shift = r[8], directions = r[9] & 3
            let offset = Int64(Int32(bitPattern: word32(r, 12)))
            let first = UInt64(bitPattern: Int64(bitPattern: iova & ~0xFFF) &+ offset &* 4096)
            guard shift >= 12, shift <= 21, first & ((1 << UInt64(shift)) - 1) == 0 || i == 0 else {
                fail("DMA_PREFETCH record \(i): size 2^\(shift) at 0x\(String(first, radix: 16))")
            }
            let asked = i == 0 ? iova : first
            let (again, one) = exchange(.dmaCached(DMARequest(window: 0, streamID: stream, iova: asked, flags: flags)), on: device)
            guard again == .ok, one.count >= 16 else {
                fail("DMA_PREFETCH record \(i) for 0x\(String(asked, radix: 16)) but DMA_CACHED answers \(again)")
            }
            let expected = (pa, shift, directions)
            let cached = (word64(one, 0) & ~((1 << UInt64(one[12])) - 1), one[12], one[13] & 3)
            guard i == 0 || (cached.0 == expected.0 && cached.1 == expected.1 && cached.2 == expected.2) else {
                fail("DMA_PREFETCH record \(i) at 0x\(String(first, radix: 16)): \(expected), DMA_CACHED: \(cached)")
            }
            checkDMA(stream: stream, one)
        }
    }

    func word32(_ p: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(p[at + $1]) << (8 * $1) } }
    func word64(_ p: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(p[at + $1]) << (8 * $1) } }

    func checkDMA(stream: UInt32, _ payload: [UInt8]) {
        guard payload.count >= 8 else { fail("DMA OK without its payload") }
        var pa: UInt64 = 0
        for k in 0..<8 { pa |= UInt64(payload[k]) << UInt64(k * 8) }
        let owner = h.ownership.owner(ofStream: StreamID(UInt16(stream)), smmu: 0)
        let reached = h.ownership.owner(ofAddress: pa)
        if reached != owner && !(owner == .host && h.policy.hostDMARanges.contains { $0.contains(pa) }) {
            fail("DMA by stream \(stream) (\(owner)) reached 0x\(String(pa, radix: 16)) (\(reached.map { "\($0)" } ?? "no RAM"))")
        }
    }

    /// After a hypercall: routing, hidden resources and memory ownership; at the end, sampled DMAs too (most of the
    /// checker's cost; each DMA the input makes is checked on its own as it happens).
    mutating func checkInvariants(_ when: @autoclosure () -> String, sampleDMA: Bool = false) {
        let violations = InvariantChecker(h).check(iovas: [hostRAM.base + page, hostRAM.base + 2 * page], sampleDMA: sampleDMA)
        if !violations.isEmpty { fail("invariant broken \(when()): \(violations)") }
    }

    mutating func checkAfterStep(_ when: @autoclosure () -> String) {
        checkClientMemory(when())
        checkCanaries(when())
        if machine.audit.count != h.statistics.denials { fail("denials and audit records disagree \(when())") }
    }

    mutating func finish() {
        host.closed()
        device.closed()
        if !h.memory.replacedRanges.isEmpty { fail("client memory still mapped after its session closed: \(h.memory.replacedRanges)") }
        checkCanaries("after the sessions closed")
        // Sampled DMAs only matter where routing or ownership moved; each DMA the input made was checked as it ran.
        checkInvariants("at the end", sampleDMA: ownershipChanged)
        for fd in memfds + dropped {
            if sealed.contains(fd) || memfdPool.count >= 64 { close(fd) } else { memfdPool.append(fd) }
        }
        memfds = []
        dropped = []
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMemory(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var b = Bytes(UnsafeBufferPointer(start: data, count: size))
    // Mostly finalized; sometimes not (MEM_MAP and the memory ops are served before finalization too).
    let h = machine.begin(finalized: b.u8() & 7 != 7)
    var run = Run(b, h)
    var steps = 0
    while !run.b.atEnd && steps < 32 {
        steps += 1
        run.step()
        run.checkAfterStep("after step \(steps)")
    }
    run.finish()
    machine.end()
    return 0
}

import WireProtocol

/// Frames of a trace in words, for a replay's report: the opcode, its fields in hex, the status.
public enum TraceWords {
    /// One request frame: `WRITE 0x12000000 = 0x1 (4 bytes), tag 7`.
    public static func request(_ frame: [UInt8]) -> String {
        guard let h = FrameHeader(decoding: frame) else { return "\(frame.count) bytes, not a frame" }
        guard let op = Opcode(rawValue: h.opcode) else { return "opcode 0x\(hex(h.opcode)), tag \(h.tag)" }
        let payload = Array(frame.dropFirst(FrameHeader.size))
        guard let r = try? Request.decode(opcode: op, payload: payload) else {
            return "\(op) with an undecodable payload of \(payload.count) bytes, tag \(h.tag)"
        }
        return fields(r) + ", tag \(h.tag)"
    }

    /// Every frame of an answer: `READ OK 0x3f`, `DMA FAULT [16 bytes: ...]`.
    public static func response(_ bytes: [UInt8]) -> String {
        let frames = split(bytes)
        if frames.isEmpty { return bytes.isEmpty ? "nothing" : "\(bytes.count) bytes, not a frame" }
        return frames.map(frame).joined(separator: "; ")
    }

    /// The frames in `bytes`, each whole (a trailing partial frame is left out).
    public static func split(_ bytes: [UInt8]) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        var at = 0
        while bytes.count - at >= FrameHeader.size {
            let length = Int(bytes.loadLE(UInt32.self, at: at + 12))
            guard bytes.count - at - FrameHeader.size >= length else { break }
            frames.append(Array(bytes[at..<(at + FrameHeader.size + length)]))
            at += FrameHeader.size + length
        }
        return frames
    }

    static func frame(_ f: [UInt8]) -> String {
        guard let h = FrameHeader(decoding: f) else { return "?" }
        let payload = f.dropFirst(FrameHeader.size)
        let name = h.opcode == Opcode.event.rawValue && h.tag == 0 ? "EVENT"
            : Opcode(response: h.opcode).map { "\($0)" } ?? "0x\(hex(h.opcode))"
        let status = h.statusCode.map { "\($0)" } ?? "status \(h.status)"
        var text = "\(name) \(status), tag \(h.tag)"
        if !payload.isEmpty {
            let shown = payload.prefix(48).map { hex($0, width: 2) }.joined(separator: " ")
            text += " [\(payload.count) bytes: \(shown)\(payload.count > 48 ? " ..." : "")]"
        }
        return text
    }

    static func fields(_ r: Request) -> String {
        switch r {
        case .hello(let h): "HELLO role \(h.role.map { "\($0)" } ?? "\(h.roleValue)") name \"\(h.name)\""
        case .read(let x): "READ 0x\(hex(x.address)) (\(x.width) bytes)"
        case .write(let x): "WRITE 0x\(hex(x.address)) = 0x\(hex(x.value)) (\(x.width) bytes)"
        case .dma(let d): "DMA " + dma(d)
        case .dmaCached(let d): "DMA_CACHED " + dma(d)
        case .dmaPrefetch(let p):
            "DMA_PREFETCH " + dma(p.access) + " pages \(p.count)" + (p.window ? " around" : p.backward ? " backward" : "")
        case .mcDMA(let d): "MC_DMA client \(d.client) iova 0x\(hex(d.iova)) flags 0x\(hex(d.flags.rawValue))"
        case .memRead(let m): "MEM_READ 0x\(hex(m.address)) length \(m.length)"
        case .memWrite(let m): "MEM_WRITE 0x\(hex(m.address)) length \(m.bytes.count)"
        case .memMap(let m): "MEM_MAP 0x\(hex(m.address)) size 0x\(hex(m.size)) offset 0x\(hex(m.offset))"
        case .vmDonate(let d): "VM_DONATE vm \(d.vm) 0x\(hex(d.address)) size 0x\(hex(d.size))"
        case .vmAssignStream(let a): "VM_ASSIGN_STREAM vm \(a.vm) window \(a.window) stream 0x\(hex(a.streamID))"
        case .vmDestroy(let vm): "VM_DESTROY vm \(vm)"
        case .trace(let t): "TRACE command \(t.commandValue)"
        case .vmCreate, .stats, .dump, .finalize, .events, .dmaEpoch, .ring: "\(r.opcode)"
        }
    }

    static func dma(_ d: DMARequest) -> String {
        "window \(d.window) stream 0x\(hex(d.streamID)) iova 0x\(hex(d.iova)) flags 0x\(hex(d.flags.rawValue))"
    }

    static func hex<T: BinaryInteger>(_ v: T, width: Int = 0) -> String {
        let s = String(v, radix: 16)
        return s.count < width ? String(repeating: "0", count: width - s.count) + s : s
    }
}

import ArgumentParser
import SMMUClient
import WireProtocol

struct Mem: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read or write physical memory through the host's stage-2.", subcommands: [MemRead.self, MemWrite.self])
}

struct MemRead: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "read", abstract: "Read LEN bytes at ADDR (hex dump).")
    @OptionGroup var connection: Connection
    @Argument var address: Number
    @Argument var length: Number

    func run() throws {
        let (client, _) = try connection.open(defaultRole: .host)
        let bytes = try perform { () throws(SMMUClientError) in try client.memRead(address: address.value, length: Int(length.value)) }
        for start in stride(from: 0, to: bytes.count, by: 16) {
            let row = bytes[start..<min(start + 16, bytes.count)]
            let hexes = row.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
            print(hex(address.value + UInt64(start)) + ": " + hexes)
        }
    }
}

struct MemWrite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write", abstract: "Write HEXBYTES (e.g. deadbeef) at ADDR.")
    @OptionGroup var connection: Connection
    @Argument var address: Number
    @Argument(help: "Bytes as hex digits, two per byte.") var hexBytes: String

    func run() throws {
        let digits = Array(hexBytes.lowercased().hasPrefix("0x") ? hexBytes.dropFirst(2) : Substring(hexBytes))
        guard digits.count % 2 == 0 else { throw ValidationError("HEXBYTES needs two digits per byte") }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let b = UInt8(String(digits[i...i + 1]), radix: 16) else { throw ValidationError("not hex: \(hexBytes)") }
            bytes.append(b)
        }
        try connection.callPrintingOK(defaultRole: .host) { client throws(SMMUClientError) in try client.memWrite(address: address.value, bytes: bytes) }
    }
}

struct VM: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Protected-VM hypercalls.", subcommands: [VMCreate.self, VMDonate.self, VMAssign.self, VMDestroy.self])
}

struct VMCreate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a VM; prints its number.")
    @OptionGroup var connection: Connection
    func run() throws {
        let (client, _) = try connection.open(defaultRole: .host)
        print(try perform { () throws(SMMUClientError) in try client.vmCreate() })
    }
}

struct VMDonate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "donate", abstract: "Donate host pages [ADDR, ADDR+SIZE) to VM.")
    @OptionGroup var connection: Connection
    @Argument var vm: Number
    @Argument var address: Number
    @Argument var size: Number
    func run() throws {
        try connection.callPrintingOK(defaultRole: .host) { client throws(SMMUClientError) in try client.vmDonate(vm: vm.u32, address: address.value, size: size.value) }
    }
}

struct VMAssign: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "assign", abstract: "Assign STREAM of WINDOW's SMMU to VM.")
    @OptionGroup var connection: Connection
    @Argument var vm: Number
    @Argument var window: Number
    @Argument var stream: Number
    func run() throws {
        try connection.callPrintingOK(defaultRole: .host) { client throws(SMMUClientError) in try client.vmAssignStream(vm: vm.u32, window: window.u32, stream: stream.u32) }
    }
}

struct VMDestroy: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "destroy", abstract: "Destroy VM: quiesce, scrub, return.")
    @OptionGroup var connection: Connection
    @Argument var vm: Number
    func run() throws {
        try connection.callPrintingOK(defaultRole: .host) { client throws(SMMUClientError) in try client.vmDestroy(vm: vm.u32) }
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the daemon's counters (JSON).")
    @OptionGroup var connection: Connection
    func run() throws {
        let (client, _) = try connection.open(defaultRole: .admin)
        print(JSONText.pretty(try perform { () throws(SMMUClientError) in try client.stats() }))
    }
}

struct Finalize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run pKVM finalization now (admin).")
    @OptionGroup var connection: Connection
    func run() throws {
        try connection.callPrintingOK(defaultRole: .admin) { client throws(SMMUClientError) in try client.finalize() }
    }
}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print interrupt line changes as they happen.")
    @OptionGroup var connection: Connection
    @Option(help: "Stop after this many events (0: never).") var count: Int = 0
    func run() throws {
        let (client, _) = try connection.open(defaultRole: .host)
        let events = try perform { () throws(SMMUClientError) in try client.events() }
        var seen = 0
        while count == 0 || seen < count {
            guard let e = try perform({ () throws(SMMUClientError) in try events.next(timeout: .seconds(3600)) }) else { continue }
            let line = e.line == 0 ? "global" : "context \(e.line - 1)"
            print("window \(e.window) \(line) line \(e.level == 0 ? "lowered" : "raised")")
            seen += 1
        }
    }
}

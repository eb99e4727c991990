import ArmSMMUDriver
import ArmSMMUTestPorts
import PKVM
import SMMUModel
import Testing

/// The host kernel's MMIO to one window: physical addresses through the trap handler
/// (`Hypervisor.hostRead`/`hostWrite`), every access expected to succeed.
struct TrapPort: RegisterPort {
    let machine: Machine
    let window: Int
    var base: UInt64 { machine.hv.windows[window].base }

    func read(_ offset: UInt64, _ width: AccessWidth) -> UInt64 {
        let r = machine.hv.hostRead(address: base + offset, width: width, client: machine.client)
        #expect(r.value != nil, "R\(width.bytes * 8) 0x\(String(offset, radix: 16)) on window \(window): \(r)")
        return r.value ?? 0xDEAD_BEEF
    }

    func write(_ offset: UInt64, _ value: UInt64, _ width: AccessWidth) {
        let r = machine.hv.hostWrite(address: base + offset, value: value, width: width, client: machine.client)
        #expect(r.value != nil, "W\(width.bytes * 8) 0x\(String(offset, radix: 16)) = 0x\(String(value, radix: 16)) on window \(window): \(r)")
    }

    func read32(_ offset: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: read(offset, .word)) }
    func read64(_ offset: UInt64) -> UInt64 { read(offset, .doubleword) }
    func write32(_ offset: UInt64, _ value: UInt32) { write(offset, UInt64(value), .word) }
    func write64(_ offset: UInt64, _ value: UInt64) { write(offset, value, .doubleword) }
}

/// The Linux arm-smmu driver as the host kernel runs it: `ArmSMMU`'s sequences through `TrapPort`. With two
/// windows it is the NVIDIA dual-instance implementation (writes to every instance in order, reads from
/// instance 0, syncs and faults on every instance). The raw accesses below are the tests' own, at offsets from
/// the model's register table.
struct LinuxDriver: LinuxDriverHarness {
    let machine: Machine
    let windows: [Int]
    var hv: Hypervisor { machine.hv }
    var layout: MMU500Configuration { hv.policy.topology.windows[windows[0]].configuration }

    var linux: ArmSMMU<TrapPort> { try! ArmSMMU.cfgProbe(windows.map { TrapPort(machine: machine, window: $0) }).get() }

    func check(_ condition: Bool, _ what: String) { #expect(condition, Comment(rawValue: what)) }

    func address(_ name: RegisterName, _ index: Int = 0, window: Int? = nil) -> UInt64 {
        hv.windows[window ?? windows[0]].base + layout.offset(of: name, index: index)
    }

    // MARK: Raw accesses (results, for attacks)

    func read(_ name: RegisterName, _ index: Int = 0, width: AccessWidth = .word, window: Int? = nil)
        -> Outcome<UInt64>
    {
        hv.hostRead(address: address(name, index, window: window), width: width, client: machine.client)
    }

    func write(_ name: RegisterName, _ index: Int, _ value: UInt64, width: AccessWidth = .word,
               window: Int? = nil) -> Outcome<Int?> {
        hv.hostWrite(address: address(name, index, window: window), value: value, width: width, client: machine.client)
    }

    func write(_ name: RegisterName, _ value: UInt64, width: AccessWidth = .word, window: Int? = nil)
        -> Outcome<Int?>
    {
        write(name, 0, value, width: width, window: window)
    }

    // MARK: Raw accesses that must succeed (writes to every window, reads from the first)

    func r32(_ name: RegisterName, _ index: Int = 0) -> UInt32 {
        let r = read(name, index)
        #expect(r.value != nil, "R32 \(name)[\(index)]: \(r)")
        return UInt32(truncatingIfNeeded: r.value ?? 0xDEAD_BEEF)
    }

    func r64(_ name: RegisterName, _ index: Int = 0) -> UInt64 {
        let r = read(name, index, width: .doubleword)
        #expect(r.value != nil, "R64 \(name)[\(index)]: \(r)")
        return r.value ?? 0xDEAD_BEEF
    }

    func w32(_ name: RegisterName, _ index: Int, _ value: UInt32) {
        for w in windows {
            let r = write(name, index, UInt64(value), window: w)
            #expect(r.value != nil, "W32 \(name)[\(index)] = 0x\(String(value, radix: 16)) on window \(w): \(r)")
        }
    }

    func w32(_ name: RegisterName, _ value: UInt32) { w32(name, 0, value) }

    func w64(_ name: RegisterName, _ index: Int, _ value: UInt64) {
        for w in windows {
            let r = write(name, index, value, width: .doubleword, window: w)
            #expect(r.value != nil, "W64 \(name)[\(index)] on window \(w): \(r)")
        }
    }
}

import ArmSMMUDriverScript
import PKVM
import SMMUModel
import Testing

/// The Linux arm-smmu driver's MMIO, as the host kernel makes it: physical addresses through
/// `hostRead`/`hostWrite`, offsets from the page layout, every access expected to succeed.
/// With two windows it is the NVIDIA 2-instance impl: writes go to every instance in order,
/// reads come from instance 0 (`nvidia_smmu_write_reg`/`nvidia_smmu_read_reg` in arm-smmu-nvidia.c).
struct LinuxDriver: ArmSMMUDriver {
    let machine: Machine
    let windows: [Int]
    var hv: Hypervisor { machine.hv }
    var layout: MMU500Configuration { hv.policy.topology.windows[windows[0]].configuration }

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
               window: Int? = nil) -> Outcome<Int> {
        hv.hostWrite(address: address(name, index, window: window), value: value, width: width, client: machine.client)
    }

    func write(_ name: RegisterName, _ value: UInt64, width: AccessWidth = .word, window: Int? = nil)
        -> Outcome<Int>
    {
        write(name, 0, value, width: width, window: window)
    }

    // MARK: Driver accesses (must succeed); the sequences are ArmSMMUDriver's

    func r32(_ name: RegisterName, _ index: Int) -> UInt32 {
        let r = read(name, index)
        #expect(r.value != nil, "R32 \(name)[\(index)]: \(r)")
        return UInt32(truncatingIfNeeded: r.value ?? 0xDEAD_BEEF)
    }

    func r64(_ name: RegisterName, _ index: Int) -> UInt64 {
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

    func w64(_ name: RegisterName, _ index: Int, _ value: UInt64) {
        for w in windows {
            let r = write(name, index, value, width: .doubleword, window: w)
            #expect(r.value != nil, "W64 \(name)[\(index)] on window \(w): \(r)")
        }
    }

    func require(_ condition: Bool, _ what: String) { #expect(condition, "\(what)") }

    /// `nvidia_smmu_reset`: with two instances, each one's sGFSR is cleared on its own.
    func implementationReset() {
        guard windows.count > 1 else { return }
        for w in windows {
            let g = read(.sGFSR, window: w).value ?? 0
            _ = write(.sGFSR, g, window: w)
        }
    }
}

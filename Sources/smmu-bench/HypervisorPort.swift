import ArmSMMUDriver
import PKVM
import SMMUModel

/// The Linux driver's port onto one window of an in-process hypervisor: the host's MMIO through the trap
/// handler (`hostRead`/`hostWrite` at the window's base plus the driver's offset), as the daemon would run it.
struct HypervisorPort: RegisterPort {
    let hypervisor: Hypervisor
    let window: Int
    let client: ClientIdentity

    var base: UInt64 { hypervisor.windows[window].base }

    func read32(_ offset: UInt64) throws(BenchError) -> UInt32 { UInt32(truncatingIfNeeded: try read(offset, .word)) }
    func read64(_ offset: UInt64) throws(BenchError) -> UInt64 { try read(offset, .doubleword) }
    func write32(_ offset: UInt64, _ value: UInt32) throws(BenchError) { try write(offset, UInt64(value), .word) }
    func write64(_ offset: UInt64, _ value: UInt64) throws(BenchError) { try write(offset, value, .doubleword) }

    func read(_ offset: UInt64, _ width: AccessWidth) throws(BenchError) -> UInt64 {
        let r = hypervisor.hostRead(address: base + offset, width: width, client: client)
        guard let value = r.value else { throw .unexpected("read at 0x\(String(base + offset, radix: 16)): \(r)") }
        return value
    }

    func write(_ offset: UInt64, _ value: UInt64, _ width: AccessWidth) throws(BenchError) {
        let r = hypervisor.hostWrite(address: base + offset, value: value, width: width, client: client)
        guard r.value != nil else { throw .unexpected("write at 0x\(String(base + offset, radix: 16)): \(r)") }
    }

    /// The driver on this window, after cfg_probe.
    func driver() throws(BenchError) -> ArmSMMU<HypervisorPort> {
        switch try ArmSMMU.cfgProbe([self]) {
        case .success(let smmu): return smmu
        case .failure(let f): throw .unexpected("cfg_probe: \(f)")
        }
    }
}

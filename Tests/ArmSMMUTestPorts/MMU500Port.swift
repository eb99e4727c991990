import ArmSMMUDriver
import SMMUModel

/// The driver's accesses on a bare MMU-500, by offset: the model decodes Linux's offsets with its own register
/// table, so every sequence run through this port also checks that decode. An access error is reported to
/// `failed` (a test records it as an issue) and a failed read returns 0.
public struct MMU500Port: RegisterPort {
    public let smmu: MMU500
    public let failed: (String) -> Void

    public init(_ smmu: MMU500, failed: @escaping (String) -> Void) {
        self.smmu = smmu
        self.failed = failed
    }

    public func read32(_ offset: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: read(offset, .word)) }
    public func read64(_ offset: UInt64) -> UInt64 { read(offset, .doubleword) }
    public func write32(_ offset: UInt64, _ value: UInt32) { write(offset, UInt64(value), .word) }
    public func write64(_ offset: UInt64, _ value: UInt64) { write(offset, value, .doubleword) }

    func read(_ offset: UInt64, _ width: AccessWidth) -> UInt64 {
        switch smmu.read(offset: offset, width: width) {
        case .success(let v): return v
        case .failure(let e):
            failed("R\(width.bytes * 8) 0x\(String(offset, radix: 16)): \(e)")
            return 0
        }
    }

    func write(_ offset: UInt64, _ value: UInt64, _ width: AccessWidth) {
        if case .failure(let e) = smmu.write(offset: offset, value: value, width: width) {
            failed("W\(width.bytes * 8) 0x\(String(offset, radix: 16)) = 0x\(String(value, radix: 16)): \(e)")
        }
    }
}

import PKVM
import SMMUModel
import WireProtocol

extension Dispatcher {
    /// MEM_MAP: maps [offset, offset + size) of the client's file shared and makes it the physical memory of
    /// [address, address + size) once the hypervisor agrees. The session releases it when the connection closes.
    func mapClientMemory(_ m: MemMapRequest, fd: Int32, client: ClientIdentity) -> Outcome<Void> {
        let range = PhysicalRange(base: m.address, size: m.size)
        guard m.size > 0, m.address % Ownership.pageSize == 0, m.size % Ownership.pageSize == 0,
              m.offset % Ownership.pageSize == 0, m.address <= UInt64.max - m.size,
              hypervisor.policy.hostRAM.contains(where: { $0.contains(range) }) else {
            return .invalid("MEM_MAP range must be page-aligned and inside one host RAM range")
        }
        let file: SharedMemoryFile
        switch SharedMemoryFile.map(fd: fd, offset: m.offset, size: m.size) {
        case .success(let f): file = f
        case .failure(let why): return .invalid("\(why)")
        }
        let outcome = hypervisor.mapHostMemory(range, file: file.file, pointer: file.pointer,
                                               release: { file.unmap() }, client: client)
        if case .ok = outcome { return outcome }
        file.unmap()
        return outcome
    }
}

extension Dispatcher {
    /// On restore: maps `fd` again for a MEM_MAP the hypervisor's image records (`Hypervisor.restore`'s
    /// `sharedMemory`), checked as MEM_MAP checks its files and refused unless it is the same file (device and inode).
    public static func sharedMemory(fd: Int32, for m: HypervisorStateImage.SharedMappingImage)
        throws(StateImageError) -> SharedMemoryAttachment {
        switch SharedMemoryFile.map(fd: fd, offset: m.file.offset, size: m.file.size) {
        case .failure(let why): throw .sharedMemoryUnavailable(base: m.range.base, reason: "\(why)")
        case .success(let file):
            guard file.file == m.file else {
                file.unmap()
                throw .sharedMemoryUnavailable(base: m.range.base, reason: "the descriptor is another file")
            }
            return SharedMemoryAttachment(pointer: file.pointer, release: { file.unmap() })
        }
    }
}

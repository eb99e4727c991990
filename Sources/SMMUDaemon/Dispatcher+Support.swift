#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hypervisor
import SMMUModel
import WireProtocol

extension Dispatcher {
    /// The spec's status for each hypervisor outcome.
    static func status<T>(_ result: HostAccessResult<T>) -> Status {
        switch result {
        case .ok: .ok
        case .deferred: .deferred
        case .denied: .denied
        case .badAddress: .badAddress
        case .badAccess: .badAccess
        }
    }

    static func status<T>(_ result: HypercallResult<T>) -> Status {
        switch result {
        case .ok: .ok
        case .deferred: .deferred
        case .denied: .denied
        case .invalid: .invalid
        }
    }

    func helloResponse() -> HelloResponse {
        let state = WireProtocol.LifecycleState(rawValue: hypervisor.lifecycle.rawValue) ?? .notFinalized
        return HelloResponse(state: state, windows: hypervisor.windows.map {
            WindowRecord(base: $0.base, size: $0.size, pageSize: $0.pageSize, numContextBanks: $0.contextBanks,
                         numStreamMatchGroups: $0.streamMatchGroups, name: $0.name)
        })
    }

    // MARK: Interrupt lines

    /// After anything that can raise or lower a line: recompute, and send each change to every
    /// EVENTS connection. Skipped entirely while nobody listens (READ/WRITE stay cheap).
    func linesMayHaveChanged() {
        if !subscribersEmpty { publishLineChanges() }
    }

    // MARK: MEM_MAP

    /// Maps [offset, offset + size) of the client's file shared and makes it the physical memory of
    /// [address, address + size) once the hypervisor agrees. The mapping ends when the connection closes.
    func mapClientMemory(_ m: MemMapRequest, fd: Int32, session: DispatcherSession) -> Status {
        let range = PhysicalRange(base: m.address, size: m.size)
        guard m.size > 0, m.address % Ownership.pageSize == 0, m.size % Ownership.pageSize == 0,
              m.offset % Ownership.pageSize == 0, m.address <= UInt64.max - m.size,
              hypervisor.policy.hostRAM.contains(where: { $0.contains(range) }) else { return .invalid }
        let file: SharedMemoryFile
        switch SharedMemoryFile.map(fd: fd, offset: m.offset, size: m.size) {
        case .success(let f): file = f
        case .failure: return .invalid
        }
        let result = hypervisor.mapHostMemory(range, file: file.file, pointer: file.pointer,
                                              release: { file.unmap() }, client: session.client)
        guard case .ok = result else {
            file.unmap()
            return Self.status(result)
        }
        session.mappedRanges.append(m.address)
        return .ok
    }

    /// The range goes back to the daemon's own memory, zeroed.
    func unmapClientMemory(base: UInt64) { hypervisor.unmapHostMemory(base: base) }
}

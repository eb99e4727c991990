import CSocketShims
import Glibc
import PKVM

/// Restart mode's RAM (docs/hypervisor-model.md, "Restart and crash survival"): one memfd per RAM region (host RAM
/// and hypervisor RAM), mapped shared by the MemoryMap and stored in systemd's fd store as "ram.<i>" once, at a fresh
/// start. RAM then outlives the process, so a checkpoint records only the regions (`stateImage(includeMemory:
/// false)`) and costs the same whatever a client wrote into RAM (G8); a restart maps the stored files back.
public enum RAMFiles {
    static func name(_ region: Int) -> String { "ram.\(region)" }

    /// True for a stored name of a RAM file.
    static func isRAM(_ stored: String) -> Bool {
        stored.hasPrefix("ram.") && Int(stored.dropFirst(4)) != nil
    }

    /// New zero-filled files, one per region of `policy` (in `DaemonCore.memory`'s order), sized and sealed against
    /// growing or shrinking. Nil (and nothing left open) when one cannot be made.
    public static func create(_ policy: HypervisorPolicy) -> [Int32]? {
        var fds: [Int32] = []
        for r in policy.hostRAM + [policy.hypervisorRAM] {
            let fd = csock_sealed_memfd("smmu-hypd-ram", Int(r.size))
            guard fd >= 0 else {
                for f in fds { close(f) }
                return nil
            }
            fds.append(fd)
        }
        return fds
    }

    /// The stored files, one per region of `policy`, each at least the region's size; nil unless every one is there.
    /// The descriptors stay the caller's (`entries`').
    static func stored(_ entries: [FDStore.Entry], policy: HypervisorPolicy) -> [Int32]? {
        let regions = policy.hostRAM + [policy.hypervisorRAM]
        var fds: [Int32] = []
        for (i, r) in regions.enumerated() {
            guard let entry = entries.first(where: { $0.name == name(i) }) else { return nil }
            var st = stat()
            guard fstat(entry.fd, &st) == 0, UInt64(st.st_size) >= r.size else { return nil }
            fds.append(entry.fd)
        }
        return fds
    }

    /// FDSTORE each file under its region's name (the caller sends BARRIER=1 after).
    static func store(_ fds: [Int32]) {
        for (i, fd) in fds.enumerated() { FDStore.store([fd], name: name(i), poll: false) }
    }
}

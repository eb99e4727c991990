import CSystemd
import Glibc

/// systemd's file-descriptor store (sd_notify FDSTORE=1, systemd.service(5) FileDescriptorStoreMax=): descriptors the
/// service manager keeps for the unit while its process restarts, and hands back through LISTEN_FDS with their
/// FDNAME= on the next start (after `systemctl restart` and after a crash; an explicit stop drops them).
///
/// Uploads are not acknowledged: a datagram past FileDescriptorStoreMax is closed silently, so the daemon counts what
/// it stored. `barrier` waits until systemd has processed everything sent before it (BARRIER=1), for an upload that
/// must be known to have arrived before something depends on it.
public enum FDStore {
    /// One stored descriptor handed back at start.
    public struct Entry: Sendable, Equatable {
        public let fd: Int32
        public let name: String
        /// (st_dev, st_ino): how the journal names a descriptor (several share a name).
        public let identity: FileIdentity
    }

    /// A file's device and inode: unique while the file is open, and the same for every duplicate of it.
    public struct FileIdentity: Hashable, Sendable {
        public let device: UInt64
        public let inode: UInt64
        public init(device: UInt64, inode: UInt64) {
            self.device = device
            self.inode = inode
        }
        public init?(fd: Int32) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { return nil }
            self.init(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        }
    }

    /// Stores `fds` under `name` (FDSTORE=1, FDNAME=name; FDPOLL=0 for files that are not sockets, which systemd
    /// cannot poll anyway). Returns false when there is no notify socket or the datagram was refused.
    /// The corresponding C function is `sd_pid_notify_with_fds`.
    @discardableResult
    public static func store(_ fds: [Int32], name: String, poll: Bool = true) -> Bool {
        guard !fds.isEmpty, isValidName(name) else { return false }
        let state = "FDSTORE=1\nFDNAME=\(name)" + (poll ? "" : "\nFDPOLL=0")
        return fds.withUnsafeBufferPointer { sd_pid_notify_with_fds(0, 0, state, $0.baseAddress, UInt32($0.count)) > 0 }
    }

    /// Drops every stored descriptor named `name` (FDSTOREREMOVE=1): a stored duplicate would keep a client's socket
    /// open after the daemon closed it.
    @discardableResult
    public static func remove(name: String) -> Bool {
        guard isValidName(name) else { return false }
        return sd_notify(0, "FDSTOREREMOVE=1\nFDNAME=\(name)") > 0
    }

    /// Waits (at most `timeout`) until systemd has processed every notification sent before (BARRIER=1).
    /// The corresponding C function is `sd_notify_barrier`.
    @discardableResult
    public static func barrier(timeout: Duration = .seconds(5)) -> Bool {
        let (seconds, attoseconds) = timeout.components
        return sd_notify_barrier(0, UInt64(seconds) * 1_000_000 + UInt64(attoseconds / 1_000_000_000_000)) >= 0
    }

    /// FDNAME= allows at most 255 printable ASCII characters, no colon.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }
    }

    /// The descriptors systemd passed besides `listener`'s name, with their identities.
    static func entries(from passed: [Systemd.ListenFD], excluding listenerName: String) -> [Entry] {
        passed.compactMap { item in
            guard item.name != listenerName, let identity = FileIdentity(fd: item.fd) else { return nil }
            _ = fcntl(item.fd, F_SETFD, fcntl(item.fd, F_GETFD) | FD_CLOEXEC)
            return Entry(fd: item.fd, name: item.name, identity: identity)
        }
    }
}

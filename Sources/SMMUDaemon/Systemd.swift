import CSystemd
import SystemPackage
import Glibc

/// The daemon's few calls into libsystemd: readiness notification, socket activation, the watchdog and the
/// structured journal. Swift cannot call C variadics, so this uses `sd_notify` and `sd_journal_sendv`.
public enum Systemd {
    /// One `KEY=value` line of an sd_notify(3) datagram.
    public enum Notification: Sendable, Equatable {
        case ready
        case stopping
        case watchdog
        case status(String)
        case mainPID(Int32)

        var line: String {
            switch self {
            case .ready: "READY=1"
            case .stopping: "STOPPING=1"
            case .watchdog: "WATCHDOG=1"
            // A newline would start a new assignment: a status text can never inject READY=1.
            case .status(let text): "STATUS=" + text.map { $0.isNewline ? " " : String($0) }.joined()
            case .mainPID(let pid): "MAINPID=\(pid)"
            }
        }
    }

    /// Sends the notifications in one datagram to `$NOTIFY_SOCKET`.
    /// - Returns: > 0 when sent, 0 when there is no notify socket (not under systemd), -errno on failure.
    /// The corresponding C function is `sd_notify`.
    @discardableResult
    public static func notify(_ notifications: Notification...) -> Int32 {
        sd_notify(0, notifications.map(\.line).joined(separator: "\n"))
    }

    /// A listening socket passed by socket activation.
    public struct ListenFD: Sendable, Equatable {
        public let fd: Int32
        public let name: String
    }

    public enum ActivationError: Error, Equatable, CustomStringConvertible {
        case listenFDs(Errno)
        case notUnixStreamListener(fd: Int32, name: String)
        public var description: String {
            switch self {
            case .listenFDs(let e): "sd_listen_fds_with_names failed: \(e)"
            case .notUnixStreamListener(let fd, let name):
                "socket-activated fd \(fd) (\(name)) is not a listening AF_UNIX SOCK_STREAM socket"
            }
        }
    }

    /// The sockets systemd passed (`LISTEN_FDS`), each set O_NONBLOCK (systemd passes them blocking).
    /// The LISTEN_* variables are removed so that children do not inherit them.
    /// The corresponding C function is `sd_listen_fds_with_names`.
    public static func listenFDs() throws(ActivationError) -> [ListenFD] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let count = sd_listen_fds_with_names(1, &names)
        defer {
            if let names {
                var i = 0
                while let name = names[i] { free(name); i += 1 }
                free(names)
            }
        }
        guard count >= 0 else { throw .listenFDs(Errno(rawValue: -count)) }
        var result: [ListenFD] = []
        for i in 0..<Int(count) {
            let fd = SD_LISTEN_FDS_START + Int32(i)
            let name = names?[i].map { String(cString: $0) } ?? "unknown"
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            result.append(ListenFD(fd: fd, name: name))
        }
        return result
    }

    /// True when `fd` is a listening AF_UNIX SOCK_STREAM socket. The corresponding C function is `sd_is_socket_unix`.
    public static func isUnixStreamListener(_ fd: Int32) -> Bool {
        sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0
    }

    /// True when `fd` is a connected AF_UNIX SOCK_STREAM socket (a stored client connection).
    public static func isConnectedUnixStream(_ fd: Int32) -> Bool {
        sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 0, nil, 0) > 0
    }

    /// The watchdog interval the service manager expects pings within, or nil when it is off
    /// (`WatchdogSec=` unset, or `WATCHDOG_PID` names another process). The corresponding C function is `sd_watchdog_enabled`.
    public static func watchdogInterval() -> Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(clamping: usec))
    }

    public enum JournalError: Error, Equatable {
        /// journald keeps only `[A-Z0-9_]` names without a leading `_`, at most 64 characters, and drops others silently.
        case invalidFieldName(String)
        /// sd_journal_sendv failed (no journald socket, for instance).
        case sendFailed(Errno)
    }

    /// True when journald would keep a field of this name.
    public static func isValidFieldName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 64, bytes[0] != UInt8(ascii: "_") else { return false }
        return bytes.allSatisfy { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "_") }
    }

    /// Writes one structured journal record with the fields given (in order) plus CODE_FILE, CODE_LINE and CODE_FUNC.
    /// Values may contain newlines. Nothing is sent when a field name is invalid.
    /// The corresponding C function is `sd_journal_sendv`.
    public static func journal(
        _ fields: [(name: String, value: String)],
        file: String = #fileID, line: Int = #line, function: String = #function
    ) -> Result<Void, JournalError> {
        for field in fields where !isValidFieldName(field.name) { return .failure(.invalidFieldName(field.name)) }
        var storage: [UInt8] = []
        var ranges: [Range<Int>] = []
        func append(_ name: String, _ value: String) {
            let start = storage.count
            storage += name.utf8
            storage.append(UInt8(ascii: "="))
            storage += value.utf8
            ranges.append(start..<storage.count)
        }
        for field in fields { append(field.name, field.value) }
        append("CODE_FILE", file)
        append("CODE_LINE", String(line))
        append("CODE_FUNC", function)
        let rc = storage.withUnsafeMutableBytes { raw -> Int32 in
            var iov = ranges.map { iovec(iov_base: raw.baseAddress! + $0.lowerBound, iov_len: $0.count) }
            return sd_journal_sendv(&iov, Int32(iov.count))
        }
        return rc < 0 ? .failure(.sendFailed(Errno(rawValue: -rc))) : .success(())
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import SystemPackage

/// A system call that failed: which call, and the errno it left. The daemon's and the client's one error for a
/// call's -1/errno; `errno.description` is strerror's message.
public struct SyscallFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public let call: String
    public let errno: Errno
    public init(_ call: String, errno: Errno) {
        self.call = call
        self.errno = errno
    }
    public var description: String { "\(call): \(errno)" }
}

extension Errno {
    /// The calling thread's errno, read now (right after the call that failed).
    @inlinable public static var last: Errno { Errno(rawValue: errno) }
}

/// Runs a call that returns -1 (any negative value) and sets errno on failure: its result, or a `SyscallFailure`
/// naming `name`. EINTR is retried unless `retryOnInterrupt` is false.
@inlinable
public func syscall<T: FixedWidthInteger>(
    _ name: String, retryOnInterrupt: Bool = true, _ body: () -> T
) throws(SyscallFailure) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let e = Errno.last
        if retryOnInterrupt && e == .interrupted { continue }
        throw SyscallFailure(name, errno: e)
    }
}

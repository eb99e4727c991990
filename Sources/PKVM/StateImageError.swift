/// Why a state image cannot be decoded or restored (docs/state-image.md). Decoding never traps: every byte
/// sequence is either an image or one of these.
public enum StateImageError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The bytes end before the field at this byte offset does.
    case truncated(at: Int)
    /// The first bytes are not an image's magic: not a state image at all.
    case badMagic
    /// An image of another format version: never read as this one (there is no migration yet).
    case unsupportedVersion(found: UInt32, supported: UInt32)
    /// The bytes are an image of this version but cannot be a state this daemon could have been in.
    case corrupt(reason: String)
    /// The image was taken under another configuration (topology, memory, reservations, MC table...).
    case configurationMismatch(reason: String)
    /// The image records client memory (MEM_MAP) that the caller could not attach again.
    case sharedMemoryUnavailable(base: UInt64, reason: String)

    public var description: String {
        switch self {
        case .truncated(let at): "state image truncated: it ends before the field at byte \(at)"
        case .badMagic: "not a state image (bad magic)"
        case .unsupportedVersion(let found, let supported):
            "state image format version \(found) is not supported: this daemon reads version \(supported) only"
        case .corrupt(let reason): "state image is corrupt: \(reason)"
        case .configurationMismatch(let reason): "state image was taken under another configuration: \(reason)"
        case .sharedMemoryUnavailable(let base, let reason):
            "client memory at 0x\(String(base, radix: 16)) recorded in the state image cannot be attached: \(reason)"
        }
    }
}

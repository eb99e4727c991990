import Dispatch
import Glibc
import PKVM

/// A checkpoint being restored: the file, the daemon layer's image, and the sessions the dispatcher rebuilt from it
/// (in the image's order), for the server to attach to their sockets.
struct RestoredCheckpoint {
    let checkpoint: Checkpoint
    let image: DispatcherStateImage
    let sessions: [(session: Session, output: [UInt8])]
    let dispatcher: Dispatcher
}

extension UnixServer {
    /// The server's part of a checkpoint: per open connection its socket, output file (and how much of the answer
    /// stream is in it) and epoch page. Nil when a connection has no output file (restart mode was off when it came).
    func checkpointConnections(epochFiles: [ConnectionID: SharedFileRange],
                               rings: [ConnectionID: SharedRing] = [:]) -> [Checkpoint.ConnectionRecord]? {
        dispatchPrecondition(condition: .onQueue(queue))
        var records: [Checkpoint.ConnectionRecord] = []
        for c in openConnections.sorted(by: { $0.id.rawValue < $1.id.rawValue }) {
            guard let output = c.outputFile, let socket = FDStore.FileIdentity(fd: c.fd),
                  let file = FDStore.FileIdentity(fd: output.fd) else { return nil }
            records.append(.init(id: c.id.rawValue, socket: socket, output: file, outputWritten: output.written,
                                 epochPage: epochFiles[c.id].map { .init(device: $0.device, inode: $0.inode) },
                                 ring: rings[c.id].map { .init(file: $0.file, answered: $0.answered, ended: $0.ended) }))
        }
        return records
    }

    /// Makes the checkpoint's connections again over their stored descriptors (`take` finds one by identity), with
    /// the sessions the dispatcher restored. A connection whose socket systemd no longer had is made without one
    /// (the journal may still close it; else it is gone after the replay). A ring is attached again, answered up to
    /// where the checkpoint says, and served once the journal after it is replayed (`restore`).
    func install(_ restored: RestoredCheckpoint, take: (FDStore.FileIdentity) -> Int32) {
        nextID = max(nextID, restored.checkpoint.nextConnection)
        counters = restored.image.serverCounters
        // Where events go and whose counters STATS shows (a new session's `makeSession` records it too).
        restored.dispatcher.adopt(server: self)
        let records = Dictionary(uniqueKeysWithValues: restored.checkpoint.connections.map { ($0.id, $0) })
        for (image, (session, output)) in zip(restored.image.sessions, restored.sessions) {
            let id = ConnectionID(rawValue: image.id)
            guard let record = records[image.id] else { continue }
            let socket = take(record.socket)
            let outFD = take(record.output)
            let file = outFD >= 0 ? OutputFile(fd: outFD, written: record.outputWritten) : OutputFile.make()
            let connection = Connection(id: id, fd: socket, peer: image.peer, session: session, server: self,
                                        outputFile: file)
            if image.closing { connection.state = .draining }
            if !output.isEmpty { _ = connection.withSessionOutput { $0 += output; return .keepOpen } }
            connections[id] = connection
            if let page = record.epochPage {
                let fd = take(page)
                if fd < 0 || !restored.dispatcher.reattachEpochPage(fd: fd, session: session) {
                    log("restore: \(id)'s epoch page could not be shared again")
                }
            }
            if let ring = record.ring {
                let fd = take(ring.file)
                if fd < 0 || !restored.dispatcher.reattachRing(fd: fd, session: session, answered: ring.answered,
                                                               ended: ring.ended) {
                    log("restore: \(id)'s ring could not be shared again")
                }
            }
        }
    }
}

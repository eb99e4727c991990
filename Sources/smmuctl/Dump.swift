import ArgumentParser
import SMMUClient
import WireProtocol

/// DUMP: the daemon's whole state. By default each window's registers as a table (virtual beside
/// physical, differences marked), then every other part of the JSON pretty-printed.
struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Dump the whole state (admin).")
    @OptionGroup var connection: Connection
    @Flag(help: "Print the JSON as the daemon sent it.") var json = false

    func run() throws {
        let (client, _) = try connection.open(defaultRole: .admin)
        let text = try perform { () throws(SMMUClientError) in try client.dump() }
        if json {
            print(text)
        } else {
            print(DumpRenderer.render(text))
        }
    }
}


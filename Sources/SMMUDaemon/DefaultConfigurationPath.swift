import Foundation

extension DaemonConfiguration {
    /// The installed configuration.
    public static let installedPath = "/etc/smmu-hypd/smmu-hypd.yaml"

    /// The configuration used without `--config`: the installed one when present, else the repository's
    /// Config/tegra234.yaml, looked for above the executable (a build directory inside the repository) and then
    /// above the current directory.
    public static func defaultPath() -> String? {
        let files = FileManager.default
        if files.fileExists(atPath: installedPath) { return installedPath }
        var starts: [URL] = []
        if let exe = try? files.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            starts.append(URL(fileURLWithPath: exe).deletingLastPathComponent())
        }
        starts.append(URL(fileURLWithPath: files.currentDirectoryPath))
        for start in starts {
            var dir = start
            for _ in 0..<8 {
                let candidate = dir.appendingPathComponent("Config/tegra234.yaml").path
                if files.fileExists(atPath: candidate) { return candidate }
                dir.deleteLastPathComponent()
            }
        }
        return nil
    }
}

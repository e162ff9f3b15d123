import Foundation

/// The test token served from another process: `softhsm-setup --remote` runs `p11-kit server`
/// over `TestToken.shared`'s token directory, so SoftHSM (and the key material) lives in the
/// server's `p11-kit-remote` child, and this process reaches it through `p11-kit-client.so`.
///
/// `P11_KIT_SERVER_ADDRESS` is set in this process before any test loads the client module.
/// The server is stopped when the process exits.
public final class RemoteToken: Sendable {
    public let local: TestToken
    /// `unix:path=…`, the value for `P11_KIT_SERVER_ADDRESS`.
    public let address: String
    /// The PKCS#11 module clients load: `p11-kit-client.so`.
    public let clientModule: String

    public static let shared: RemoteToken = {
        do {
            return try RemoteToken(local: TestToken.shared)
        } catch {
            fatalError("cannot start the remote test token: \(error)")
        }
    }()

    nonisolated(unsafe) private static var stateToStop: String?

    private init(local: TestToken) throws {
        self.local = local
        let result = try Command.run([TestToken.repositoryRoot + "/softhsm-setup", "--state", local.stateDirectory, "--remote"])
        guard result.status == 0 else {
            throw CommandError(message: "softhsm-setup --remote failed (\(result.status)): \(result.standardError)")
        }
        address = try String(contentsOfFile: local.stateDirectory + "/remote/address", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let rsa = try String(contentsOfFile: local.stateDirectory + "/remote/uris/rsa", encoding: .utf8)
        guard let range = rsa.range(of: "module-path="),
              let module = rsa[range.upperBound...].split(separator: "&").first?.removingPercentEncoding else {
            throw CommandError(message: "remote/uris/rsa names no module-path: \(rsa)")
        }
        clientModule = module
        setenv("P11_KIT_SERVER_ADDRESS", address, 1)
        RemoteToken.stateToStop = local.stateDirectory
        atexit {
            guard let state = RemoteToken.stateToStop else { return }
            _ = try? Command.run([TestToken.repositoryRoot + "/softhsm-setup", "--state", state, "--remote-server", "stop"])
        }
    }

    /// A key URI through `p11-kit-client.so` that softhsm-setup wrote to `remote/uris/NAME`
    /// (rsa, ec, ec384, p521, always-auth, qseal-ec).
    public func keyURI(_ name: String) throws -> String {
        try String(contentsOfFile: local.stateDirectory + "/remote/uris/" + name, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The server's Unix socket: it exists while the server accepts clients.
    public var socketPath: String { local.stateDirectory + "/remote/p11-kit.sock" }

    /// Environment for a child process that uses the remote token.
    public var environment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = local.softHSMConfig
        environment["P11_KIT_SERVER_ADDRESS"] = address
        environment.removeValue(forKey: "KEYBRIDGE_PIN")
        return environment
    }

    /// Stops the server and every `p11-kit-remote` child it runs: an HSM outage for clients.
    public func stop() throws { try control("stop") }

    /// Starts the server again. With `spyLog`, SoftHSM runs under pkcs11-spy inside the server,
    /// which logs every call made there to that file.
    public func start(spyLog: String? = nil) throws {
        try control("start", environment: spyLog.map { ["KEYBRIDGE_REMOTE_SPY_LOG": $0] } ?? [:])
    }

    /// Whether the server runs, and its pid.
    public var serverPID: Int32? {
        guard let result = try? Command.run([TestToken.repositoryRoot + "/softhsm-setup", "--state", local.stateDirectory,
                                             "--remote-server", "status"]),
              result.status == 0 else { return nil }
        let fields = result.standardOutput.split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    private func control(_ action: String, environment extra: [String: String] = [:]) throws {
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in extra { environment[key] = value }
        let result = try Command.run([TestToken.repositoryRoot + "/softhsm-setup", "--state", local.stateDirectory,
                                      "--remote-server", action], environment: environment)
        guard result.status == 0 else {
            throw CommandError(message: "softhsm-setup --remote-server \(action) failed (\(result.status)): \(result.standardError)")
        }
    }
}

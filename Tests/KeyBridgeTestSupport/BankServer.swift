import Foundation

/// The nginx test bank from `scripts/bank-nginx`, started once per test process on a free
/// loopback port and stopped when the process exits.
public final class BankServer: Sendable {
    public let port: Int
    public let token: TestToken

    public static let shared: BankServer = {
        do {
            return try BankServer(token: TestToken.shared)
        } catch {
            fatalError("cannot start the nginx test bank: \(error)")
        }
    }()

    nonisolated(unsafe) private static var stateToStop: String?

    private init(token: TestToken) throws {
        self.token = token
        let script = TestToken.repositoryRoot + "/scripts/bank-nginx"
        let result = try Command.run([script, "start", token.stateDirectory])
        guard result.status == 0, let port = Int(result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandError(message: "bank-nginx start failed (\(result.status)): \(result.standardError)")
        }
        self.port = port
        BankServer.stateToStop = token.stateDirectory
        atexit {
            guard let state = BankServer.stateToStop else { return }
            _ = try? Command.run([TestToken.repositoryRoot + "/scripts/bank-nginx", "stop", state])
        }
    }

    /// An https URL on the bank for `path`.
    public func url(_ path: String = "/accounts") -> String { "https://localhost:\(port)\(path)" }
}

/// The built `keybridge` executable, next to the test bundle.
public enum KeyBridgeExecutable {
    public static var path: String {
        let testBinary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: testBinary).deletingLastPathComponent().appendingPathComponent("keybridge").path
    }

    /// Runs `keybridge` with the test token's SoftHSM config and no PIN in the environment
    /// unless one is given.
    public static func run(_ arguments: [String], environment extra: [String: String] = [:], input: Data? = nil) throws -> Command.Result {
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = TestToken.shared.softHSMConfig
        environment.removeValue(forKey: "KEYBRIDGE_PIN")
        for (key, value) in extra { environment[key] = value }
        return try Command.run([path] + arguments, input: input, environment: environment)
    }
}

import Foundation

/// A SoftHSM token made for this test process by `softhsm-setup` in a fresh temporary folder.
///
/// SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`, so every test in the process shares
/// one token, set up before any test touches the module.
public final class TestToken: Sendable {
    public let stateDirectory: String
    public let softHSMConfig: String
    public let rsaURI: String
    public let ecURI: String
    public let ec384URI: String

    public static let shared: TestToken = {
        do {
            return try TestToken()
        } catch {
            fatalError("cannot make the test token: \(error)")
        }
    }()

    /// The repository root, found from this file's location.
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("softhsm-setup").path) { return url.path }
        }
        fatalError("softhsm-setup not found above \(#filePath)")
    }()

    private init() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("keybridge-test-\(getpid())-\(UUID().uuidString.prefix(8))").path
        let result = try Command.run([TestToken.repositoryRoot + "/softhsm-setup", "--state", directory])
        guard result.status == 0 else {
            throw CommandError(message: "softhsm-setup failed (\(result.status)): \(result.standardError)")
        }
        stateDirectory = directory
        TemporaryFiles.removeAtExit(directory)
        softHSMConfig = directory + "/softhsm2.conf"
        setenv("SOFTHSM2_CONF", softHSMConfig, 1)
        func uri(_ name: String) throws -> String {
            try String(contentsOfFile: directory + "/uris/" + name, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        rsaURI = try uri("rsa")
        ecURI = try uri("ec")
        ec384URI = try uri("ec384")
    }

    /// A key URI that softhsm-setup wrote to `uris/NAME` (rsa, ec, ec384, p521, ed25519, always-auth).
    public func keyURI(_ name: String) throws -> String {
        try String(contentsOfFile: stateDirectory + "/uris/" + name, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A SoftHSM configuration in the state folder, e.g. the mechanism-restricted
    /// `softhsm2-nopss.conf`, `softhsm2-pkcs1only.conf` and `softhsm2-ecdsaraw.conf`.
    public func softHSMConfig(_ name: String) -> String { stateDirectory + "/" + name }

    /// A file under the test PKI folder.
    public func pki(_ name: String) -> String { stateDirectory + "/pki/" + name }

    /// The user PIN, for tests that must type it somewhere (never printed).
    public var userPIN: String {
        (try? String(contentsOfFile: stateDirectory + "/user.pin", encoding: .utf8)) ?? ""
    }

    /// The URI of a token key with its query part replaced.
    public func uri(_ base: String, query: String) -> String {
        let path = base.split(separator: "?", maxSplits: 1).first.map(String.init) ?? base
        return query.isEmpty ? path : path + "?" + query
    }
}

public struct CommandError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Runs a program and collects its output; for driving `openssl`, nginx scripts and the CLI.
public enum Command {
    public struct Result: Sendable {
        public var status: Int32
        public var standardOutput: String
        public var standardError: String
        public var combined: String { standardOutput + standardError }
    }

    public static func run(_ arguments: [String], input: Data? = nil, environment: [String: String]? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : "/usr/bin/env")
        process.arguments = arguments[0].hasPrefix("/") ? Array(arguments.dropFirst()) : arguments
        if var environment {
            // A clean environment still keeps the sanitizer settings that check-deep gives the suite.
            for name in ["ASAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS", "KEYBRIDGE_SANITIZER"] where environment[name] == nil {
                environment[name] = ProcessInfo.processInfo.environment[name]
            }
            process.environment = environment
        }
        let output = Pipe()
        let errors = Pipe()
        let inputPipe = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = inputPipe
        try process.run()
        if let input { inputPipe.fileHandleForWriting.write(input) }
        try inputPipe.fileHandleForWriting.close()
        // Read both pipes concurrently so a chatty child cannot block on a full pipe.
        nonisolated(unsafe) var errorData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errorData = errors.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      standardOutput: String(decoding: outputData, as: UTF8.self),
                      standardError: String(decoding: errorData, as: UTF8.self))
    }

    /// A fresh temporary folder for one test's files, removed when the process exits.
    public static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("keybridge-\(UUID().uuidString.prefix(12))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        TemporaryFiles.removeAtExit(path)
        return path
    }
}

/// Folders to delete at exit: test tokens hold PINs and keys, so none is left in /tmp.
enum TemporaryFiles {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var paths: [String] = []
    private static let registered: Void = {
        // Registered first, so it runs after the bank's handler (atexit runs in reverse order).
        atexit {
            let all = TemporaryFiles.lock.withLock { TemporaryFiles.paths }
            for path in all { try? FileManager.default.removeItem(atPath: path) }
        }
    }()

    static func removeAtExit(_ path: String) {
        _ = registered
        lock.withLock { paths.append(path) }
    }
}

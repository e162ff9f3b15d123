import Foundation
import KeyBridgeTestSupport
import XCTest

/// An empty SoftHSM token in a folder of its own, for tests that create objects: the shared
/// test token stays as softhsm-setup made it. CLI runs get this token's `SOFTHSM2_CONF`.
struct FreshToken {
    let directory: String
    let label: String
    let config: String
    let pinFile: String
    static let module = "/usr/lib/softhsm/libsofthsm2.so"
    static let spyModule = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"

    init(label: String = "operator", pin: String = "1234") throws {
        directory = try Command.temporaryDirectory()
        self.label = label
        try FileManager.default.createDirectory(atPath: directory + "/tokens", withIntermediateDirectories: true)
        config = directory + "/softhsm2.conf"
        try "directories.tokendir = \(directory)/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        pinFile = directory + "/user.pin"
        try pin.write(toFile: pinFile, atomically: true, encoding: .utf8)
        let result = try Command.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "87654321", "--pin", pin],
                                     environment: ["SOFTHSM2_CONF": config, "PATH": "/usr/bin:/bin"])
        guard result.status == 0 else { throw CommandError(message: "softhsm2-util --init-token failed: \(result.combined)") }
    }

    /// A SoftHSM config over the same token folder with a `slots.mechanisms` line.
    func restrictedConfig(_ mechanisms: String, name: String) throws -> String {
        let path = directory + "/" + name
        try "directories.tokendir = \(directory)/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.mechanisms = \(mechanisms)\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The token URI with module and PIN file.
    var uri: String { "pkcs11:token=\(label)?module-path=\(FreshToken.module)&pin-source=file:\(pinFile)" }

    func keyURI(_ object: String) -> String {
        "pkcs11:token=\(label);object=\(object);type=private?module-path=\(FreshToken.module)&pin-source=file:\(pinFile)"
    }

    func certificateURI(_ object: String) -> String {
        "pkcs11:token=\(label);object=\(object);type=cert?module-path=\(FreshToken.module)"
    }

    /// Runs the CLI against this token.
    func keybridge(_ arguments: [String], config: String? = nil, extra: [String: String] = [:]) throws -> Command.Result {
        var environment = extra
        environment["SOFTHSM2_CONF"] = config ?? self.config
        return try KeyBridgeExecutable.run(arguments, environment: environment)
    }

    /// `pkcs11-tool --list-objects` for this token, logged in: an independent view of the objects.
    func pkcs11ToolObjects(type: String? = nil) throws -> String {
        let pin = try String(contentsOfFile: pinFile, encoding: .utf8)
        var arguments = ["pkcs11-tool", "--module", FreshToken.module, "--token-label", label, "--login", "--pin", pin, "--list-objects"]
        if let type { arguments += ["--type", type] }
        let result = try Command.run(arguments, environment: ["SOFTHSM2_CONF": config, "PATH": "/usr/bin:/bin"])
        guard result.status == 0 else { throw CommandError(message: "pkcs11-tool failed: \(result.combined)") }
        return result.standardOutput
    }

    /// How many objects of a kind pkcs11-tool sees ("Private Key Object", "Certificate Object", …).
    func count(_ kind: String) throws -> Int {
        try pkcs11ToolObjects().components(separatedBy: "\n").filter { $0.hasPrefix(kind) }.count
    }

    /// Generates a key with the CLI and returns its URI, failing the test on error.
    @discardableResult
    func generate(_ type: String, label: String, id: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try keybridge(["keys", "generate", "--type", type, "--label", label, "--id", id, "--token", uri])
        XCTAssertEqual(result.status, 0, result.standardError, file: file, line: line)
        return result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Checks shared by the operator tests.
enum Check {
    /// One line on standard error, starting "keybridge: error:".
    static func oneErrorLine(_ result: Command.Result, file: StaticString = #filePath, line: UInt = #line) {
        let lines = result.standardError.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, result.standardError, file: file, line: line)
        XCTAssertTrue(result.standardError.hasPrefix("keybridge: error: "), result.standardError, file: file, line: line)
    }

    static func openssl(_ arguments: [String], input: Data? = nil) throws -> Command.Result {
        try Command.run(["/usr/bin/openssl"] + arguments, input: input)
    }
}

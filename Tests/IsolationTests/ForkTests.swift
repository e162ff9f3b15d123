import Foundation
import KeyBridgeTestSupport
import XCTest

/// Signing across `fork`: `keybridge-probe fork` signs through the OpenSSL provider in the
/// parent, forks, signs twice in the child with the parent's key object, and signs in the parent
/// while and after the child runs. The child must start the module again on first use (a new
/// session epoch) and the parent must go on with its own sessions (same epoch). Every signature
/// is checked by the openssl command.
final class ForkTests: XCTestCase {
    // Computed, so listing the tests (swift test --filter) starts no server.
    var remote: RemoteToken { RemoteToken.shared }

    private static let names = ["parent-before", "child", "child-again", "parent-during", "parent-after"]

    private func runProbe(key uri: String, scheme: String) throws -> (folder: String, output: String) {
        let folder = try Command.temporaryDirectory()
        let probe = URL(fileURLWithPath: KeyBridgeExecutable.path).deletingLastPathComponent().appendingPathComponent("keybridge-probe").path
        let result = try Command.run([probe, "fork", "--key", uri, "--out", folder, "--scheme", scheme], environment: remote.environment)
        XCTAssertEqual(result.status, 0, result.combined)
        return (folder, result.standardOutput)
    }

    private func verify(_ folder: String, signature: String, message: String) throws -> Bool {
        let result = try Command.run(["openssl", "dgst", "-sha256", "-verify", folder + "/public.pem",
                                      "-signature", "\(folder)/\(signature).sig", "\(folder)/\(message).msg"])
        return result.status == 0 && result.standardOutput.contains("Verified OK")
    }

    private func assertForkWorks(key uri: String, scheme: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (folder, output) = try runProbe(key: uri, scheme: scheme)
        for name in Self.names {
            XCTAssertTrue(try verify(folder, signature: name, message: name), "\(name): openssl rejects the signature", file: file, line: line)
        }
        // Control: a signature does not verify over another message, so the checks above can fail.
        XCTAssertFalse(try verify(folder, signature: "parent-before", message: "child"), "openssl accepted a wrong message", file: file, line: line)
        // The messages name the pid that signed them: the child's differs from the parent's.
        let parent = try String(contentsOfFile: folder + "/parent-before.msg", encoding: .utf8)
        let child = try String(contentsOfFile: folder + "/child.msg", encoding: .utf8)
        XCTAssertNotEqual(parent.split(separator: " ").last, child.split(separator: " ").last, file: file, line: line)
        XCTAssertTrue(output.contains("child epoch 0 -> 1"), "the child did not start the module again: \(output)", file: file, line: line)
        XCTAssertTrue(output.contains("parent epoch 0 -> 0"), "the parent lost its sessions: \(output)", file: file, line: line)
    }

    func testSoftHSMInProcessSignsInParentChildAndParentAgain() throws {
        try assertForkWorks(key: remote.local.rsaURI, scheme: "rsa-pkcs1")
        try assertForkWorks(key: remote.local.ecURI, scheme: "ecdsa")
    }

    func testRemoteTokenSignsInParentChildAndParentAgain() throws {
        try assertForkWorks(key: try remote.keyURI("rsa"), scheme: "rsa-pkcs1")
        try assertForkWorks(key: try remote.keyURI("ec"), scheme: "ecdsa")
    }
}

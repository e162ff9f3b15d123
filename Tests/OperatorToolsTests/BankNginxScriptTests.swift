import Foundation
import KeyBridgeTestSupport
import XCTest

/// `scripts/bank-nginx status` says whether the test bank runs, and on which port.
final class BankNginxScriptTests: XCTestCase {
    func testStatusPrintsRunningWithPortOrStopped() throws {
        // A state folder of its own, with the certificates nginx needs, so the shared bank is not touched.
        let state = try Command.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: state + "/pki", withIntermediateDirectories: true)
        for file in ["server.pem", "server-key.pem", "root-ca.pem"] {
            try FileManager.default.copyItem(atPath: TestToken.shared.pki(file), toPath: state + "/pki/" + file)
        }
        let script = TestToken.repositoryRoot + "/scripts/bank-nginx"
        defer { _ = try? Command.run([script, "stop", state]) }

        let before = try Command.run([script, "status", state])
        XCTAssertEqual(before.status, 3, before.combined)
        XCTAssertEqual(before.standardOutput, "stopped\n")

        let started = try Command.run([script, "start", state, "9"])
        XCTAssertEqual(started.status, 0, started.combined)
        let port = started.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertNotNil(Int(port), started.standardOutput)
        let running = try Command.run([script, "status", state])
        XCTAssertEqual(running.status, 0, running.combined)
        XCTAssertTrue(running.standardOutput.hasPrefix("running on port \(port) (pid "), running.standardOutput)
        XCTAssertTrue(running.standardOutput.hasSuffix(", /psd2/ proxied to 127.0.0.1:9\n"), running.standardOutput)
        // The port printed is the one `port` reports.
        XCTAssertEqual(try Command.run([script, "port", state]).standardOutput, port + "\n")

        XCTAssertEqual(try Command.run([script, "stop", state]).status, 0)
        let after = try Command.run([script, "status", state])
        XCTAssertEqual(after.status, 3, after.combined)
        XCTAssertEqual(after.standardOutput, "stopped\n")
    }
}

import Foundation
import Glibc
import KeyBridgeTestSupport
import XCTest

/// `keybridge serve | true`: the reader of standard output is gone when the port is written.
/// The broker died of SIGPIPE (exit 141) without a log line; it now keeps serving and logs as
/// usual, and stops cleanly on SIGTERM.
final class ServeClosedOutputTests: XCTestCase {
    func testBrokerSurvivesAClosedStandardOutputAndStopsCleanly() throws {
        let token = TestToken.shared
        let directory = try Command.temporaryDirectory()
        let config = directory + "/broker.json"
        let object: [String: Any] = [
            "listen": "127.0.0.1:0",
            "banks": ["b": ["upstream": "https://localhost:1/psd2", "caFile": token.pki("root-ca.pem"),
                            "key": token.rsaURI, "cert": token.pki("client-rsa-chain.pem")]],
            "callers": [] as [Any],
        ]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: config))

        let process = Process()
        // SIGPIPE back to its default (terminate) whatever the test runner set, so the test
        // sees what a shell pipeline gives the broker.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["--default-signal=PIPE", KeyBridgeExecutable.path, "serve", "--config", config]
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.softHSMConfig
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        // Nobody will read the port: the read end is closed before the broker writes it.
        try output.fileHandleForReading.close()
        try process.run()
        try output.fileHandleForWriting.close()

        // The "listening" line is written after the port; wait for it on standard error.
        var log = Data()
        let deadline = Date().addingTimeInterval(20)
        let reader = errors.fileHandleForReading
        while Date() < deadline, !String(decoding: log, as: UTF8.self).contains("\"listening\"") {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            log.append(chunk)
        }
        usleep(300_000)
        XCTAssertTrue(process.isRunning, "the broker died: status \(process.terminationStatus), log: \(String(decoding: log, as: UTF8.self))")
        XCTAssertTrue(String(decoding: log, as: UTF8.self).contains("\"listening\""), String(decoding: log, as: UTF8.self))
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .exit)
        XCTAssertEqual(process.terminationStatus, 0)
    }
}

import Foundation
import KeyBridgeTestSupport
import XCTest

/// The benchmark names the item it runs only on a terminal; captured, it prints its closing
/// line and nothing else on standard error.
final class BenchProgressTests: XCTestCase {
    func testBenchShowsProgressOnlyOnATerminal() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: "/usr/bin/script"), "script (bsdutils) is not installed")
        let token = TestToken.shared
        // Item 7 with --quick is the shortest whole run: bench token, keys, broker, nginx.
        func arguments(_ folder: String) -> [String] {
            [KeyBridgeExecutable.path, "bench", "--quick", "--items", "7", "--state", token.stateDirectory, "--dir", folder]
        }
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "KEYBRIDGE_PROGRESS")

        let captured = try Command.run(arguments(try Command.temporaryDirectory()), environment: environment)
        XCTAssertEqual(captured.status, 0, captured.combined)
        let lines = captured.standardError.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, captured.standardError)
        XCTAssertTrue(captured.standardError.hasPrefix("bench: ") && captured.standardError.contains("figures in"), captured.standardError)
        XCTAssertFalse(captured.standardError.contains("\r"), captured.standardError)

        let command = arguments(try Command.temporaryDirectory()).map { "'" + $0 + "'" }.joined(separator: " ")
        let terminal = try Command.run(["/usr/bin/script", "-qec", command, "/dev/null"], environment: environment)
        XCTAssertEqual(terminal.status, 0, terminal.combined)
        XCTAssertTrue(terminal.standardOutput.contains("\r\u{1B}[Kbench: making the bench token"), terminal.standardOutput)
        XCTAssertTrue(terminal.standardOutput.contains("figures in"), terminal.standardOutput)
    }
}

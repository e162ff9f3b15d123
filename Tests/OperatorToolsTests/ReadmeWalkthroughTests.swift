import Foundation
import KeyBridgeTestSupport
import XCTest

/// The README's "From an empty token to a PSD2 call" runs as written, in a state folder of
/// its own: from `softhsm2-util --init-token` to a payment the sandbox accepts through the broker.
final class ReadmeWalkthroughTests: XCTestCase {
    /// The shell block between the walkthrough markers, with `make setup` and `.state`
    /// pointed at `state` (the only two substitutions).
    static func walkthroughScript(state: String) throws -> String {
        let readme = try String(contentsOfFile: TestToken.repositoryRoot + "/README.md", encoding: .utf8)
        guard let begin = readme.range(of: "<!-- walkthrough:begin -->"), let end = readme.range(of: "<!-- walkthrough:end -->"),
              begin.upperBound < end.lowerBound else {
            throw CommandError(message: "README.md has no walkthrough markers")
        }
        var block = String(readme[begin.upperBound..<end.lowerBound])
        guard let open = block.range(of: "```sh\n"), let close = block.range(of: "```", options: .backwards), open.upperBound < close.lowerBound else {
            throw CommandError(message: "the walkthrough is not one sh code block")
        }
        block = String(block[open.upperBound..<close.lowerBound])
        guard block.contains("\nmake setup\n"), block.contains("S=$PWD/.state ") else {
            throw CommandError(message: "the walkthrough no longer starts with 'make setup' and S=$PWD/.state")
        }
        block = block.replacingOccurrences(of: "\nmake setup\n", with: "\n./softhsm-setup --state '\(state)' >/dev/null 2>&1\n")
            .replacingOccurrences(of: "S=$PWD/.state ", with: "S='\(state)' ")
        // Whatever fails, the background servers and nginx are stopped.
        let cleanup = "trap 'kill ${BROKER_PID:-} ${MOCK_PID:-} 2>/dev/null || true; scripts/bank-nginx stop \"\(state)\" >/dev/null 2>&1 || true' EXIT\n"
        return "set -euo pipefail\ncd '\(TestToken.repositoryRoot)'\n" + cleanup + block
    }

    /// The walkthrough, run twice in the same state folder: the second run must again reach an
    /// accepted payment from a single new `tpp` token, reading no port file of the first run.
    func testReadmeWalkthroughFromAnEmptyToken() throws {
        let state = try Command.temporaryDirectory() + "/state"
        let script = try Self.walkthroughScript(state: state)
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "KEYBRIDGE_PIN")
        environment.removeValue(forKey: "SOFTHSM2_CONF")
        for run in 1...2 {
            let result = try Command.run(["/usr/bin/timeout", "240", "/bin/bash", "-c", script], environment: environment)
            XCTAssertEqual(result.status, 0, "run \(run): the walkthrough failed:\n" + result.combined.suffix(4000))
            // Step 5: the doctor found the new setup fit; step 8: the sandbox accepted the payment.
            XCTAssertTrue(result.standardOutput.contains("Verdict: fit for use; exit status 0"), result.standardOutput)
            XCTAssertTrue(result.standardOutput.contains("\"result\":\"accepted\""), result.combined.suffix(4000).description)
            XCTAssertTrue(result.standardOutput.contains("step 8: the sandbox accepted the payment"), result.combined.suffix(4000).description)
            for check in ["\"name\":\"qwac\",\"ok\":true", "\"name\":\"qsealc\",\"ok\":true", "\"name\":\"signature\",\"ok\":true"] {
                XCTAssertTrue(result.standardOutput.contains(check), "run \(run): missing \(check)")
            }
            // One tpp token in the walkthrough's own token folder, on the second run too.
            let slots = try Command.run(["softhsm2-util", "--show-slots"],
                                        environment: ["SOFTHSM2_CONF": state + "/walkthrough/softhsm2.conf", "PATH": "/usr/bin:/bin"])
            XCTAssertEqual(slots.standardOutput.components(separatedBy: "\n").filter { $0.contains("Label:") && $0.contains("tpp") }.count, 1,
                           "run \(run): \(slots.standardOutput)")
            // The broker's port file is this run's: the broker logged its start on that port.
            let port = try String(contentsOfFile: state + "/walkthrough/broker.port", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let log = try String(contentsOfFile: state + "/walkthrough/broker.log", encoding: .utf8)
            XCTAssertTrue(log.contains(port), "run \(run): broker.port \(port) is not in broker.log")
        }
        // The keys were made on the token: no private key file appeared in the state folder.
        let files = (FileManager.default.enumerator(atPath: state)?.allObjects as? [String]) ?? []
        let keyFiles = files.filter { $0.hasSuffix("-key.pem") && !$0.hasPrefix("pki/") }
        XCTAssertEqual(keyFiles, [], "private key files outside the test PKI: \(keyFiles)")
        XCTAssertTrue(files.contains("walkthrough/qwac.csr") && files.contains("walkthrough/qseal-chain.pem"),
                      "the walkthrough wrote nothing to \(state)/walkthrough")
    }
}

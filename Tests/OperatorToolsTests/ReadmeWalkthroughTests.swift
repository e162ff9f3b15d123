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

    func testReadmeWalkthroughFromAnEmptyToken() throws {
        let state = try Command.temporaryDirectory() + "/state"
        let script = try Self.walkthroughScript(state: state)
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "KEYBRIDGE_PIN")
        environment.removeValue(forKey: "SOFTHSM2_CONF")
        let result = try Command.run(["/usr/bin/timeout", "240", "/bin/bash", "-c", script], environment: environment)
        XCTAssertEqual(result.status, 0, "the walkthrough failed:\n" + result.combined.suffix(4000))
        // Step 5: the doctor found the new setup fit; step 8: the sandbox accepted the payment.
        XCTAssertTrue(result.standardOutput.contains("Verdict: fit for use; exit status 0"), result.standardOutput)
        XCTAssertTrue(result.standardOutput.contains("\"result\":\"accepted\""), result.combined.suffix(4000).description)
        for check in ["\"name\":\"qwac\",\"ok\":true", "\"name\":\"qsealc\",\"ok\":true", "\"name\":\"signature\",\"ok\":true"] {
            XCTAssertTrue(result.standardOutput.contains(check), "missing \(check)")
        }
        // The keys were made on the token: no private key file appeared in the state folder.
        let files = (FileManager.default.enumerator(atPath: state)?.allObjects as? [String]) ?? []
        let keyFiles = files.filter { $0.hasSuffix("-key.pem") && !$0.hasPrefix("pki/") }
        XCTAssertEqual(keyFiles, [], "private key files outside the test PKI: \(keyFiles)")
        XCTAssertTrue(files.contains("qwac.csr") && files.contains("qseal-chain.pem"), "the walkthrough wrote nothing to \(state)")
    }
}

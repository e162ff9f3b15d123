import Foundation
import KeyBridgeTestSupport
import XCTest

/// Labels with control characters. `keys generate --label $'\e[31mred'` was accepted (only a
/// line break was refused), stored, and then written raw to the terminal by the generate
/// message and by `keys list`, so a label could carry terminal escape sequences.
final class LabelControlCharacterTests: XCTestCase {
    func testGenerateRefusesControlCharactersAndLeavesTheTokenUnchanged() throws {
        let token = try FreshToken(label: "labels")
        for label in ["esc\u{1B}[31mred", "tab\there", "del\u{7F}"] {
            let result = try token.keybridge(["keys", "generate", "--type", "ec:P-256", "--label", label, "--id", "01", "--token", token.uri])
            XCTAssertEqual(result.status, 2, label.debugDescription + result.combined)
            Check.oneErrorLine(result)
            XCTAssertTrue(result.standardError.contains("control characters"), result.standardError)
            XCTAssertFalse(result.combined.unicodeScalars.contains("\u{1B}"), "an ESC reached the output")
        }
        XCTAssertEqual(try token.count("Private Key Object"), 0)
        // Control: a printable Unicode label is still accepted.
        try token.generate("ec:P-256", label: "schlüssel ✓", id: "02")
        XCTAssertEqual(try token.count("Private Key Object"), 1)
    }

    func testListShowsAForeignLabelsEscapeInsteadOfSendingIt() throws {
        let token = try FreshToken(label: "foreign")
        // Made with pkcs11-tool, as another tool on the same HSM would.
        let pin = try String(contentsOfFile: token.pinFile, encoding: .utf8)
        let made = try Command.run(["pkcs11-tool", "--module", FreshToken.module, "--token-label", token.label, "--login", "--pin", pin,
                                    "--keypairgen", "--key-type", "EC:prime256v1", "--label", "x\u{1B}]0;owned\u{7}y", "--id", "05"],
                                   environment: ["SOFTHSM2_CONF": token.config, "PATH": "/usr/bin:/bin"])
        XCTAssertEqual(made.status, 0, made.combined)
        let listed = try token.keybridge(["keys", "list", "--token", token.uri])
        XCTAssertEqual(listed.status, 0, listed.standardError)
        XCTAssertFalse(listed.standardOutput.unicodeScalars.contains("\u{1B}"), listed.standardOutput)
        XCTAssertTrue(listed.standardOutput.contains(#"Private key 'x\u{1B}]0;owned\u{7}y' (id 05)"#), listed.standardOutput)
        // JSON keeps the exact label (JSON escapes it itself).
        let json = try token.keybridge(["keys", "list", "--json", "--token", token.uri])
        XCTAssertEqual(json.status, 0, json.standardError)
        let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any])
        XCTAssertTrue("\(document)".contains("owned"), json.standardOutput)
        XCTAssertTrue(json.standardOutput.contains("\\u001b") || json.standardOutput.contains("\\u001B"), json.standardOutput)
    }
}

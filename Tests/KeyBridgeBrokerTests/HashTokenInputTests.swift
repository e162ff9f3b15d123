import Foundation
import KeyBridgeTestSupport
import XCTest

/// `serve --hash-token` hashed whatever came in, so a token with an inner line break (two lines
/// piped by mistake) gave a tokenSHA256 that no request can match: the header cannot carry it.
final class HashTokenInputTests: XCTestCase {
    func testTokenWithAControlCharacterIsRefusedAndAPlainOneIsHashed() throws {
        for bad in ["let-me\nin", "let\tme-in", "let-me\u{1B}in"] {
            let result = try KeyBridgeExecutable.run(["serve", "--hash-token"], input: Data(bad.utf8))
            XCTAssertEqual(result.status, 2, bad.debugDescription)
            XCTAssertEqual(result.standardOutput, "", bad.debugDescription)
            XCTAssertTrue(result.standardError.contains("control character"), result.standardError)
            XCTAssertFalse(result.standardError.contains("let"), "the token was echoed: \(result.standardError)")
        }
        // Control: a trailing newline (echo) is dropped and the hash is the token's SHA-256, as
        // `openssl dgst -sha256` computes it.
        let plain = try KeyBridgeExecutable.run(["serve", "--hash-token"], input: Data("let-me-in\n".utf8))
        XCTAssertEqual(plain.status, 0, plain.standardError)
        let reference = try Command.run(["openssl", "dgst", "-sha256", "-r"], input: Data("let-me-in".utf8))
        XCTAssertEqual(plain.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines),
                       String(reference.standardOutput.prefix(64)))
    }
}

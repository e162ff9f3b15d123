import Foundation
import KeyBridgeTestSupport
import OpenBanking
import XCTest

/// Signing options with a misspelt key (`"serialcase": "lower"`) were decoded with the key
/// ignored, so the default upper case was used and the bank rejected every signature; bad
/// values came out as Swift `DecodingError` dumps.
final class SigningOptionsCheckTests: XCTestCase {
    func testUnknownKeysAndNonObjectsAreNamed() throws {
        let misspelt = try XCTUnwrap(SigningOptionsCheck.problem(in: Data(#"{"serialcase":"lower"}"#.utf8), profile: "berlin-group"))
        XCTAssertTrue(misspelt.contains(#"unknown setting "serialcase" (did you mean "serialCase"?)"#), misspelt)
        let rfc = try XCTUnwrap(SigningOptionsCheck.problem(in: Data(#"{"keyId":"k"}"#.utf8), profile: "rfc9421"))
        XCTAssertTrue(rfc.contains(#"did you mean "keyid""#), rfc)
        XCTAssertNotNil(SigningOptionsCheck.problem(in: Data("[]".utf8), profile: "jws"))
        XCTAssertNotNil(SigningOptionsCheck.problem(in: Data(#"{"digest": "#.utf8), profile: "berlin-group"))
        // Control: every documented key of each profile passes.
        for (profile, keys) in SigningOptionsCheck.knownKeys {
            let object = Dictionary(uniqueKeysWithValues: keys.map { ($0, 1) })
            XCTAssertNil(SigningOptionsCheck.problem(in: try JSONSerialization.data(withJSONObject: object), profile: profile), profile)
        }
    }

    func testTheBerlinGroupKeysAreTheOnesTheProfileReads() throws {
        // Each known key with a wrong type must make the decoder fail: a key in the list that the
        // profile does not read would decode fine and show the list is stale.
        for key in try XCTUnwrap(SigningOptionsCheck.knownKeys["berlin-group"]) {
            let data = try JSONSerialization.data(withJSONObject: [key: ["not": "valid"]])
            XCTAssertThrowsError(try JSONDecoder().decode(BerlinGroupProfile.self, from: data), key) { error in
                XCTAssertTrue(SigningOptionsCheck.describe(error).hasPrefix(key), SigningOptionsCheck.describe(error))
            }
        }
    }

    func testRequestRefusesAMisspeltOptionWithOneLine() throws {
        let token = TestToken.shared
        let directory = try Command.temporaryDirectory()
        let options = directory + "/bank.json"
        try #"{"serialcase":"lower"}"#.write(toFile: options, atomically: true, encoding: .utf8)
        let arguments = ["request", "--cacert", token.pki("root-ca.pem"), "--cert", token.pki("client-rsa-chain.pem"), "--key", token.rsaURI,
                         "--sign-profile", "berlin-group", "--sign-key", try String(contentsOfFile: token.stateDirectory + "/uris/qseal-ec", encoding: .utf8)
                            .trimmingCharacters(in: .whitespacesAndNewlines),
                         "--sign-cert", token.pki("qseal-ec-chain.pem"), "--sign-options", options, "https://localhost:1/"]
        let result = try KeyBridgeExecutable.run(arguments)
        XCTAssertEqual(result.status, 2, result.combined)
        XCTAssertTrue(result.standardError.contains(#"unknown setting "serialcase""#), result.standardError)
        XCTAssertEqual(result.standardError.split(separator: "\n").count, 1, result.standardError)
        // Control: the corrected key passes the check, so the run gets as far as connecting.
        try #"{"serialCase":"lower"}"#.write(toFile: options, atomically: true, encoding: .utf8)
        let corrected = try KeyBridgeExecutable.run(arguments)
        XCTAssertEqual(corrected.status, 7, corrected.combined)
        XCTAssertTrue(corrected.standardError.contains("cannot connect"), corrected.standardError)
    }
}

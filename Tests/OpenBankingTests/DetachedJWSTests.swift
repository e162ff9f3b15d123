import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
@testable import OpenBanking
import XCTest

/// Detached JWS (`x-jws-signature`) made with token keys, each checked by KeyBridge's verifier
/// and by the `openssl` command, with tampered controls; and every malformed value the
/// verifier must refuse, each next to a control that differs only in the defect.
final class DetachedJWSTests: XCTestCase {
    let token = TestToken.shared
    let body = Data(#"{"Data":{"Initiation":{"InstructedAmount":{"Amount":"10.00","Currency":"GBP"}}},"Risk":{}}"#.utf8)
    let issuer = "0015800001041RHAAY/2kiXQyo0tedjW2somjSgH7"

    // MARK: Helpers written apart from the code under test

    private func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    private func unBase64URL(_ text: String) throws -> [UInt8] {
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.count % 4 != 0 { standard += "=" }
        return Array(try XCTUnwrap(Data(base64Encoded: standard), "not base64url: \(text)"))
    }

    /// r||s to a DER ECDSA-Sig-Value, by hand, so openssl's check does not rest on KeyBridge's converter.
    private func derFromRawBySpec(_ raw: [UInt8]) -> [UInt8] {
        func integer(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
            var value = Array(bytes.drop { $0 == 0 })
            if value.isEmpty { value = [0] }
            if value[0] & 0x80 != 0 { value.insert(0, at: 0) }
            return [0x02, UInt8(value.count)] + value
        }
        let content = integer(raw[0..<32]) + integer(raw[32...])
        return [0x30, UInt8(content.count)] + content
    }

    /// The signing input built from the parts of the value, per RFC 7515 §5.2 and RFC 7797 §3.
    private func signingInput(headerPart: String, body: Data, unencoded: Bool) -> [UInt8] {
        Array((headerPart + ".").utf8) + (unencoded ? Array(body) : Array(base64URL(Array(body)).utf8))
    }

    private func publicKeyFile(certificate: String) throws -> String {
        let result = try Command.run(["openssl", "x509", "-in", token.pki(certificate), "-noout", "-pubkey"])
        XCTAssertEqual(result.status, 0, result.standardError)
        let path = try Command.temporaryDirectory() + "/public.pem"
        try result.standardOutput.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Whether `openssl dgst` accepts the JWS value over `body`.
    private func opensslVerifies(_ value: String, body: Data, algorithm: JWSAlgorithm, certificate: String) throws -> Bool {
        let parts = value.components(separatedBy: ".")
        XCTAssertEqual(parts.count, 3)
        let header = try JSONSerialization.jsonObject(with: Data(try unBase64URL(parts[0]))) as? [String: Any]
        let unencoded = (header?["b64"] as? Bool) == false
        var signature = try unBase64URL(parts[2])
        var options: [String] = []
        switch algorithm {
        case .es256:
            XCTAssertEqual(signature.count, 64, "ES256 must be raw r||s")
            signature = derFromRawBySpec(signature)
        case .ps256:
            options = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-sigopt", "rsa_mgf1_md:sha256"]
        default:
            break
        }
        let directory = try Command.temporaryDirectory()
        try Data(signingInput(headerPart: parts[0], body: body, unencoded: unencoded)).write(to: URL(fileURLWithPath: directory + "/input"))
        try Data(signature).write(to: URL(fileURLWithPath: directory + "/sig"))
        let result = try Command.run(["openssl", "dgst", "-sha256"] + options
                                     + ["-verify", try publicKeyFile(certificate: certificate), "-signature", directory + "/sig", directory + "/input"])
        return result.status == 0 && result.standardOutput.contains("Verified OK")
    }

    private func verifier(_ certificate: String, allowed: Set<JWSAlgorithm> = Set(JWSAlgorithm.all)) throws -> DetachedJWSVerifier {
        try DetachedJWSVerifier(pem: String(contentsOfFile: token.pki(certificate), encoding: .utf8), allowedAlgorithms: allowed)
    }

    private func assertRejected(_ value: String, body: Data, by verifier: DetachedJWSVerifier, mentioning words: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try verifier.verify(value, body: body), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(words), "\"\(error)\" does not mention \"\(words)\"", file: file, line: line)
        }
    }

    /// A JWS with an arbitrary header, signed correctly by a token key, for refusal tests whose
    /// only defect is in the header.
    private func jws(header json: String, body: Data, key: ProviderKey, scheme: SignatureScheme, unencoded: Bool) throws -> String {
        let headerPart = base64URL(Array(json.utf8))
        var signature = try key.sign(signingInput(headerPart: headerPart, body: body, unencoded: unencoded), scheme: scheme)
        if case .ecdsa = scheme { signature = try ECDSASignatureEncoding.rawFromDER(signature, width: 32) }
        return headerPart + ".." + base64URL(signature)
    }

    // MARK: Signatures from the token, checked twice

    private func checkRoundTrip(_ algorithm: JWSAlgorithm, uri: String, certificate: String) throws {
        let key = try ProviderKey(uri: uri)
        for encoding in [DetachedJWSPayloadEncoding.base64URL, .unencoded] {
            let context = "\(algorithm) \(encoding)"
            let signer = try DetachedJWSSigner(key: key, algorithm: algorithm,
                                               protectedHeader: .openBanking(keyID: "kid-\(algorithm)", issuer: issuer),
                                               payloadEncoding: encoding)
            let (name, value) = try signer.header(for: body)
            XCTAssertEqual(name, "x-jws-signature")
            let parts = value.components(separatedBy: ".")
            XCTAssertEqual(parts.count, 3, context)
            XCTAssertEqual(parts[1], "", "the payload part must be empty: \(context)")

            let verified = try verifier(certificate).verify(value, body: body)
            XCTAssertEqual(verified.algorithm, algorithm, context)
            XCTAssertEqual(verified.payloadEncoding, encoding, context)
            XCTAssertEqual(verified.keyID, "kid-\(algorithm)", context)
            XCTAssertEqual(verified.issuer, issuer, context)
            XCTAssertEqual(verified.trustAnchor, "openbanking.org.uk", context)
            XCTAssertEqual(verified.type, "JOSE", context)
            XCTAssertEqual(verified.contentType, "application/json", context)
            XCTAssertEqual(try XCTUnwrap(verified.issuedAt).timeIntervalSinceNow, 0, accuracy: 5, context)
            XCTAssertEqual(verified.critical.first == "b64", encoding == .unencoded, context)
            XCTAssertTrue(try opensslVerifies(value, body: body, algorithm: algorithm, certificate: certificate), context)

            // Control 1: a changed body fails both checks.
            var changedBody = body
            changedBody[changedBody.count - 3] ^= 0x01
            assertRejected(value, body: changedBody, by: try verifier(certificate), mentioning: "does not verify")
            XCTAssertFalse(try opensslVerifies(value, body: changedBody, algorithm: algorithm, certificate: certificate), context)

            // Control 2: a changed header (another kid) under the same signature fails both checks.
            let headerJSON = String(decoding: try unBase64URL(parts[0]), as: UTF8.self)
            let changedJSON = headerJSON.replacingOccurrences(of: "\"kid-\(algorithm)\"", with: "\"kid-other\"")
            XCTAssertNotEqual(changedJSON, headerJSON, context)
            let changed = base64URL(Array(changedJSON.utf8)) + ".." + parts[2]
            assertRejected(changed, body: body, by: try verifier(certificate), mentioning: "does not verify")
            XCTAssertFalse(try opensslVerifies(changed, body: body, algorithm: algorithm, certificate: certificate), context)
        }
    }

    func testPS256BothFormsVerifyHereAndWithOpenSSL() throws {
        try checkRoundTrip(.ps256, uri: token.rsaURI, certificate: "client-rsa.pem")
    }

    func testRS256BothFormsVerifyHereAndWithOpenSSL() throws {
        try checkRoundTrip(.rs256, uri: token.rsaURI, certificate: "client-rsa.pem")
    }

    func testES256BothFormsVerifyHereAndWithOpenSSL() throws {
        try checkRoundTrip(.es256, uri: token.ecURI, certificate: "client-ec.pem")
    }

    /// The two forms sign different inputs, so neither form's signature passes as the other.
    func testFormsAreNotInterchangeable() throws {
        let key = try ProviderKey(uri: token.rsaURI)
        let header = DetachedJWSHeader(keyID: "k")
        let unencoded = try DetachedJWSSigner(key: key, algorithm: .ps256, protectedHeader: header, payloadEncoding: .unencoded).signature(for: body)
        // Strip b64 from the header but keep the signature: now the verifier reads the encoded form.
        let plainHeader = base64URL(Array(#"{"alg":"PS256","kid":"k"}"#.utf8))
        let forged = plainHeader + ".." + unencoded.components(separatedBy: ".")[2]
        assertRejected(forged, body: body, by: try verifier("client-rsa.pem"), mentioning: "does not verify")
    }

    // MARK: The protected header

    /// RFC 7797 §4.2: the example header and its base64url encoding, byte for byte; the JSON
    /// writer gives exactly the RFC's text for the same members.
    func testRFC7797ExampleHeaderEncoding() {
        let json = #"{"alg":"HS256","b64":false,"crit":["b64"]}"#
        XCTAssertEqual(DetachedJWS.base64URLEncoded(Array(json.utf8)), "eyJhbGciOiJIUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19")
        let written = JWSJSONValue.object(["crit": .array([.string("b64")]), "b64": .bool(false), "alg": .string("HS256")]).text
        XCTAssertEqual(written, json)
        XCTAssertEqual(DetachedJWS.base64URLDecoded("eyJhbGciOiJIUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19"), Array(json.utf8))
    }

    func testHeaderIsDeterministicSortedAndDoesNotEscapeSlashes() throws {
        let key = try ProviderKey(uri: token.rsaURI)
        let header = DetachedJWSHeader(keyID: "kid-1", type: "JOSE", contentType: "application/json",
                                       issuedAt: .fixed(Date(timeIntervalSince1970: 1_700_000_000.9)), issuer: issuer,
                                       trustAnchor: "openbanking.org.uk")
        let signer = try DetachedJWSSigner(key: key, algorithm: .ps256, protectedHeader: header, payloadEncoding: .unencoded)
        let value = try signer.signature(for: body)
        let json = String(decoding: try unBase64URL(value.components(separatedBy: ".")[0]), as: UTF8.self)
        XCTAssertEqual(json, #"{"alg":"PS256","b64":false,"crit":["b64","http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"],"cty":"application/json","http://openbanking.org.uk/iat":1700000000,"http://openbanking.org.uk/iss":"0015800001041RHAAY/2kiXQyo0tedjW2somjSgH7","http://openbanking.org.uk/tan":"openbanking.org.uk","kid":"kid-1","typ":"JOSE"}"#)
        XCTAssertFalse(json.contains(#"\/"#))
        // Same settings, same header (PSS signatures differ, headers must not).
        XCTAssertEqual(try signer.signature(for: body).components(separatedBy: ".")[0], value.components(separatedBy: ".")[0])
        // The current form: no b64, and crit holds only the Open Banking claims.
        let current = try DetachedJWSSigner(key: key, algorithm: .ps256, protectedHeader: header).signature(for: body)
        let currentJSON = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(try unBase64URL(current.components(separatedBy: ".")[0]))) as? [String: Any])
        XCTAssertNil(currentJSON["b64"])
        XCTAssertEqual(currentJSON["crit"] as? [String], OpenBankingJWSClaim.all)
        XCTAssertEqual((currentJSON[OpenBankingJWSClaim.issuedAt] as? NSNumber)?.intValue, 1_700_000_000)
        // No claims that need crit: crit is left out, never empty.
        let minimal = try DetachedJWSSigner(key: key, algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "k")).signature(for: body)
        XCTAssertEqual(String(decoding: try unBase64URL(minimal.components(separatedBy: ".")[0]), as: UTF8.self), #"{"alg":"PS256","kid":"k"}"#)
    }

    func testExtraClaimsAreValidJSONAndReadBack() throws {
        let key = try ProviderKey(uri: token.ecURI)
        let awkward = "quote \" backslash \\ slash / newline \n tab \t bell \u{07} pound £ emoji 🏦"
        let header = DetachedJWSHeader(keyID: "k", extraClaims: ["urn:bank:text": .string(awkward), "urn:bank:n": 42,
                                                                 "urn:bank:x": 1.5, "urn:bank:flag": true],
                                       extraCritical: ["urn:bank:n"])
        let value = try DetachedJWSSigner(key: key, algorithm: .es256, protectedHeader: header).signature(for: body)
        let headerData = Data(try unBase64URL(value.components(separatedBy: ".")[0]))
        // An independent parser reads the same values back.
        let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: headerData) as? [String: Any])
        XCTAssertEqual(parsed["urn:bank:text"] as? String, awkward)
        XCTAssertEqual(parsed["crit"] as? [String], ["urn:bank:n"])
        XCTAssertTrue(String(decoding: headerData, as: UTF8.self).contains(#"\u0007"#))

        let strict = try verifier("client-ec.pem")
        assertRejected(value, body: body, by: strict, mentioning: "does not understand")
        var understanding = strict
        understanding.understoodCriticalClaims = ["urn:bank:n"]
        let verified = try understanding.verify(value, body: body)
        XCTAssertEqual(verified.extraClaims, ["urn:bank:text": .string(awkward), "urn:bank:n": .integer(42),
                                              "urn:bank:x": .number(1.5), "urn:bank:flag": .bool(true)])
        XCTAssertEqual(verified.critical, ["urn:bank:n"])
    }

    func testSignerRefusesBadHeadersAndMismatchedKeys() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        let ec = try ProviderKey(uri: token.ecURI)
        func refused(_ make: () throws -> DetachedJWSSigner, _ words: String, line: UInt = #line) {
            XCTAssertThrowsError(try make(), line: line) { error in
                XCTAssertTrue("\(error)".contains(words), "\"\(error)\" does not mention \"\(words)\"", line: line)
            }
        }
        let header = DetachedJWSHeader(keyID: "k")
        refused({ try DetachedJWSSigner(key: ec, algorithm: .ps256, protectedHeader: header) }, "needs an RSA key, but the key is EC")
        refused({ try DetachedJWSSigner(key: rsa, algorithm: .es256, protectedHeader: header) }, "needs an EC key, but the key is RSA")
        refused({ try DetachedJWSSigner(key: ProviderKey(uri: self.token.ec384URI), algorithm: .es256, protectedHeader: header) }, "P-256")
        refused({ try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "")) }, "kid")
        refused({ try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "k", extraClaims: ["alg": "none"])) },
                "sets itself")
        refused({ try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "k", extraClaims: ["b64": true])) },
                "sets itself")
        refused({ try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "k", extraCritical: ["urn:x"])) },
                "not among extraClaims")
        refused({ try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "k", extraClaims: ["n": .number(.nan)])) },
                "JSON cannot hold")
        // Control: the same keys with fitting algorithms are accepted.
        XCTAssertNoThrow(try DetachedJWSSigner(key: ec, algorithm: .es256, protectedHeader: header))
        XCTAssertNoThrow(try DetachedJWSSigner(key: rsa, algorithm: .rs256, protectedHeader: header))
    }

    // MARK: What the verifier refuses

    func testVerifierRefusesAlgNone() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        let verifier = try verifier("client-rsa.pem")
        let none = base64URL(Array(#"{"alg":"none","kid":"k"}"#.utf8))
        assertRejected(none + "..", body: body, by: verifier, mentioning: #"alg "none""#)
        assertRejected(none + ".." + base64URL([1, 2, 3]), body: body, by: verifier, mentioning: #"alg "none""#)
        // Not even with a valid signature over the header that says none.
        let signedNone = try jws(header: #"{"alg":"none","kid":"k"}"#, body: body, key: rsa, scheme: .rsaPSS(.sha256), unencoded: false)
        assertRejected(signedNone, body: body, by: verifier, mentioning: #"alg "none""#)
        // Other algorithms outside the allowed list, too.
        let hs256 = try jws(header: #"{"alg":"HS256"}"#, body: body, key: rsa, scheme: .rsaPSS(.sha256), unencoded: false)
        assertRejected(hs256, body: body, by: verifier, mentioning: "not accepted")
        let rs256 = try jws(header: #"{"alg":"RS256"}"#, body: body, key: rsa, scheme: .rsaPKCS1(.sha256), unencoded: false)
        assertRejected(rs256, body: body, by: try self.verifier("client-rsa.pem", allowed: [.ps256]), mentioning: "allowed: PS256")
        // Control: the same RS256 JWS passes when RS256 is allowed.
        XCTAssertNoThrow(try verifier.verify(rs256, body: body))
    }

    func testVerifierRefusesUnknownCriticalMembers() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        let verifier = try verifier("client-rsa.pem")
        func signed(_ header: String, unencoded: Bool = false) throws -> String {
            try jws(header: header, body: body, key: rsa, scheme: .rsaPSS(.sha256), unencoded: unencoded)
        }
        assertRejected(try signed(#"{"alg":"PS256","crit":["urn:x"],"urn:x":1}"#), body: body, by: verifier, mentioning: "does not understand")
        assertRejected(try signed(#"{"alg":"PS256","crit":["http://openbanking.org.uk/iss"]}"#), body: body, by: verifier,
                       mentioning: "the header does not have it")
        assertRejected(try signed(#"{"alg":"PS256","crit":["kid"],"kid":"k"}"#), body: body, by: verifier, mentioning: "JWS defines itself")
        assertRejected(try signed(#"{"alg":"PS256","crit":[]}"#), body: body, by: verifier, mentioning: "non-empty")
        assertRejected(try signed(#"{"alg":"PS256","crit":"b64","b64":false}"#, unencoded: true), body: body, by: verifier, mentioning: "non-empty list")
        assertRejected(try signed(#"{"alg":"PS256","crit":["b64","b64"],"b64":false}"#, unencoded: true), body: body, by: verifier,
                       mentioning: "twice")
        // Controls: understood names pass.
        XCTAssertNoThrow(try verifier.verify(try signed(#"{"alg":"PS256","crit":["http://openbanking.org.uk/iss"],"http://openbanking.org.uk/iss":"me"}"#),
                                             body: body))
        var understanding = verifier
        understanding.understoodCriticalClaims = ["urn:x"]
        XCTAssertNoThrow(try understanding.verify(try signed(#"{"alg":"PS256","crit":["urn:x"],"urn:x":1}"#), body: body))
    }

    func testVerifierRefusesB64OutsideCrit() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        let verifier = try verifier("client-rsa.pem")
        let outside = try jws(header: #"{"alg":"PS256","b64":false}"#, body: body, key: rsa, scheme: .rsaPSS(.sha256), unencoded: true)
        assertRejected(outside, body: body, by: verifier, mentioning: "does not list it in crit")
        let notBoolean = try jws(header: #"{"alg":"PS256","b64":0,"crit":["b64"]}"#, body: body, key: rsa, scheme: .rsaPSS(.sha256), unencoded: true)
        assertRejected(notBoolean, body: body, by: verifier, mentioning: "true or false")
        // Controls: the same signature input with b64 in crit passes, and "b64":true means the encoded form.
        let inside = try jws(header: #"{"alg":"PS256","b64":false,"crit":["b64"]}"#, body: body, key: rsa, scheme: .rsaPSS(.sha256), unencoded: true)
        XCTAssertEqual(try verifier.verify(inside, body: body).payloadEncoding, .unencoded)
        let encoded = try jws(header: #"{"alg":"PS256","b64":true,"crit":["b64"]}"#, body: body, key: rsa, scheme: .rsaPSS(.sha256), unencoded: false)
        XCTAssertEqual(try verifier.verify(encoded, body: body).payloadEncoding, .base64URL)
    }

    func testVerifierRefusesMalformedValues() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        let verifier = try verifier("client-rsa.pem")
        let good = try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "k")).signature(for: body)
        XCTAssertNoThrow(try verifier.verify(good, body: body))
        XCTAssertNoThrow(try verifier.verify(" " + good + "\t", body: body), "HTTP optional white space")
        let parts = good.components(separatedBy: ".")
        let (header, signature) = (parts[0], parts[2])

        // A payload in the middle, even the right one.
        assertRejected(header + "." + base64URL(Array(body)) + "." + signature, body: body, by: verifier, mentioning: "empty middle part")
        // Wrong number of dots.
        assertRejected(header + "." + signature, body: body, by: verifier, mentioning: "has 1")
        assertRejected(header + "..." + signature, body: body, by: verifier, mentioning: "has 3")
        assertRejected(header + signature, body: body, by: verifier, mentioning: "has 0")
        assertRejected("", body: body, by: verifier, mentioning: "has 0")
        assertRejected(".." + signature, body: body, by: verifier, mentioning: "no protected header")
        assertRejected(header + "..", body: body, by: verifier, mentioning: "no signature")
        // Bad base64url: padding, the standard alphabet, stray characters, an impossible length, spare bits set.
        let padded = base64URL(Array(#"{"alg":"PS256","kid":"k"}"#.utf8))
        XCTAssertEqual(padded.count % 4, 2, "this header must need padding for the test to mean anything")
        assertRejected(padded + "==.." + signature, body: body, by: verifier, mentioning: "header is not base64url")
        assertRejected(header + ".." + signature + "=", body: body, by: verifier, mentioning: "signature is not base64url")
        let standardAlphabet = signature.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        if standardAlphabet != signature {
            assertRejected(header + ".." + standardAlphabet, body: body, by: verifier, mentioning: "signature is not base64url")
        }
        assertRejected(header + ".." + "ab+/", body: body, by: verifier, mentioning: "signature is not base64url")
        assertRejected(header + ".." + "a b", body: body, by: verifier, mentioning: "signature is not base64url")
        assertRejected(header + ".." + "abcde", body: body, by: verifier, mentioning: "signature is not base64url")
        XCTAssertNil(DetachedJWS.base64URLDecoded("AB"), "spare bits set")
        XCTAssertEqual(DetachedJWS.base64URLDecoded("AA"), [0])
        // Not JSON, or not an object.
        assertRejected(base64URL(Array("alg=PS256".utf8)) + ".." + signature, body: body, by: verifier, mentioning: "not a JSON object")
        assertRejected(base64URL(Array(#"["PS256"]"#.utf8)) + ".." + signature, body: body, by: verifier, mentioning: "not a JSON object")
        assertRejected(base64URL(Array(#"{"kid":"k"}"#.utf8)) + ".." + signature, body: body, by: verifier, mentioning: "no alg")
    }

    func testVerifierRefusesAKeyOfTheWrongType() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        let ec = try ProviderKey(uri: token.ecURI)
        let header = DetachedJWSHeader(keyID: "k")
        let ps256 = try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: header).signature(for: body)
        let es256 = try DetachedJWSSigner(key: ec, algorithm: .es256, protectedHeader: header).signature(for: body)
        assertRejected(ps256, body: body, by: try verifier("client-ec.pem"), mentioning: "needs an RSA key, but the verifying key is EC")
        assertRejected(es256, body: body, by: try verifier("client-rsa.pem"), mentioning: "needs an EC key, but the verifying key is RSA")
        // An ES256 value whose signature is not 64 bytes.
        let short = es256.components(separatedBy: ".")[0] + ".." + base64URL([UInt8](repeating: 1, count: 63))
        assertRejected(short, body: body, by: try verifier("client-ec.pem"), mentioning: "64 bytes")
        // Controls: each verifies with its own certificate.
        XCTAssertNoThrow(try verifier("client-rsa.pem").verify(ps256, body: body))
        XCTAssertNoThrow(try verifier("client-ec.pem").verify(es256, body: body))
        // Another key of the right type does not verify.
        let otherEC = try ProviderKey(uri: token.ec384URI)
        let otherVerifier = DetachedJWSVerifier(publicKey: try PublicKeyVerifier(pem: try otherEC.publicKeyPEM()))
        assertRejected(es256, body: body, by: otherVerifier, mentioning: "does not verify")
    }

    func testKeyIDAndIssuedAtChecks() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        func value(_ header: DetachedJWSHeader) throws -> String {
            try DetachedJWSSigner(key: rsa, algorithm: .ps256, protectedHeader: header).signature(for: body)
        }
        var checking = try verifier("client-rsa.pem")
        checking.expectedKeyID = "kid-1"
        checking.maximumIssuedAtSkew = 300
        XCTAssertNoThrow(try checking.verify(try value(.openBanking(keyID: "kid-1", issuer: issuer)), body: body))
        assertRejected(try value(.openBanking(keyID: "kid-2", issuer: issuer)), body: body, by: checking, mentioning: #"but "kid-1" was expected"#)
        let future = DetachedJWSHeader(keyID: "kid-1", issuedAt: .fixed(Date().addingTimeInterval(3600)))
        assertRejected(try value(future), body: body, by: checking, mentioning: "in the future")
        let withinSkew = DetachedJWSHeader(keyID: "kid-1", issuedAt: .fixed(Date().addingTimeInterval(120)))
        XCTAssertNoThrow(try checking.verify(try value(withinSkew), body: body))
        let past = DetachedJWSHeader(keyID: "kid-1", issuedAt: .fixed(Date().addingTimeInterval(-3600)))
        XCTAssertNoThrow(try checking.verify(try value(past), body: body))
        assertRejected(try value(DetachedJWSHeader(keyID: "kid-1")), body: body, by: checking, mentioning: "no http://openbanking.org.uk/iat")
        // The check runs against the time given: an hour later the future header is fine.
        XCTAssertNoThrow(try checking.verify(try value(future), body: body, now: Date().addingTimeInterval(3600)))
        // A string iat is refused whether or not the check is on.
        let stringIAT = try jws(header: #"{"alg":"PS256","http://openbanking.org.uk/iat":"1700000000"}"#, body: body, key: rsa,
                                scheme: .rsaPSS(.sha256), unencoded: false)
        assertRejected(stringIAT, body: body, by: try verifier("client-rsa.pem"), mentioning: "must be a number")
    }

    func testVerifierFromDERCertificateAndPublicKey() throws {
        let ec = try ProviderKey(uri: token.ecURI)
        let value = try DetachedJWSSigner(key: ec, algorithm: .es256, protectedHeader: DetachedJWSHeader(keyID: "k")).signature(for: body)
        let directory = try Command.temporaryDirectory()
        let certificateDER = directory + "/cert.der", publicKeyDER = directory + "/pub.der"
        XCTAssertEqual(try Command.run(["openssl", "x509", "-in", token.pki("client-ec.pem"), "-outform", "DER", "-out", certificateDER]).status, 0)
        XCTAssertEqual(try Command.run(["openssl", "x509", "-in", token.pki("client-ec.pem"), "-noout", "-pubkey", "-out", directory + "/pub.pem"]).status, 0)
        XCTAssertEqual(try Command.run(["openssl", "pkey", "-pubin", "-in", directory + "/pub.pem", "-outform", "DER", "-out", publicKeyDER]).status, 0)
        for path in [certificateDER, publicKeyDER] {
            let der = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            XCTAssertNoThrow(try DetachedJWSVerifier(der: der).verify(value, body: body), path)
        }
        XCTAssertThrowsError(try DetachedJWSVerifier(der: [0x30, 0x03, 0x02, 0x01, 0x01]))
    }
}

import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
@testable import OpenBanking
import XCTest

// MARK: - RFC 9421 Appendix B test data

/// Keys, messages, signature bases and signatures of RFC 9421 Appendix B (copied as facts;
/// RFC 8792 line wrapping removed). The RFC's own signatures were checked against these bases
/// and keys with `openssl dgst -verify` before they were written down here, and the tests
/// below verify them again.
private enum RFC9421 {
    static let created = Date(timeIntervalSince1970: 1_618_884_473)

    /// B.1.2 test-key-rsa-pss (public part).
    static let rsaPSSPublicKey = """
        -----BEGIN PUBLIC KEY-----
        MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2
        +QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+
        oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq
        gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W
        Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4
        aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI
        2wIDAQAB
        -----END PUBLIC KEY-----

        """

    /// B.1.3 test-key-ecc-p256 (public part).
    static let eccP256PublicKey = """
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
        w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
        -----END PUBLIC KEY-----

        """

    /// B.1.4 test-key-ed25519.
    static let ed25519PublicKey = """
        -----BEGIN PUBLIC KEY-----
        MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
        -----END PUBLIC KEY-----

        """
    /// Published test key; it goes into the SoftHSM token and the file is removed at once.
    static let ed25519PrivateKey = """
        -----BEGIN PRIVATE KEY-----
        MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
        -----END PRIVATE KEY-----

        """

    static let requestContentDigest = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
    static let responseContentDigest = "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:"

    /// B.2 test-request.
    static var testRequest: HTTPRequestParts {
        HTTPRequestParts(method: "POST", url: URL(string: "https://example.com/foo?param=Value&Pet=dog")!, headers: [
            ("Host", "example.com"),
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Digest", requestContentDigest),
            ("Content-Length", "18"),
        ], body: Data(#"{"hello": "world"}"#.utf8))
    }

    static let clientCert = "MIIBqDCCAU6gAwIBAgIBBzAKBggqhkjOPQQDAjA6MRswGQYDVQQKDBJMZXQncyBBdXRoZW50aWNhdGUxGzAZBgNVBAMMEkxBIEludGVybWVkaWF0ZSBDQTAeFw0yMDAxMTQyMjU1MzNaFw0yMTAxMjMyMjU1MzNaMA0xCzAJBgNVBAMMAkJDMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8YnXXfaUgmnMtOXU/IncWalRhebrXmckC8vdgJ1p5Be5F/3YC8OthxM4+k1M6aEAEFcGzkJiNy6J84y7uzo9M6NyMHAwCQYDVR0TBAIwADAfBgNVHSMEGDAWgBRm3WjLa38lbEYCuiCPct0ZaSED2DAOBgNVHQ8BAf8EBAMCBsAwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHQYDVR0RAQH/BBMwEYEPYmRjQGV4YW1wbGUuY29tMAoGCCqGSM49BAMCA0gAMEUCIBHda/r1vaL6G3VliL4/Di6YK0Q6bMjeSkC3dFCOOB8TAiEAx/kHSB4urmiZ0NX5r5XarmPk0wmuydBVoU4hBVZ1yhk="

    /// B.3: the request the TLS-terminating proxy forwards, with the client certificate in a header.
    static var proxyRequest: HTTPRequestParts {
        HTTPRequestParts(method: "POST", url: URL(string: "https://service.internal.example/foo?param=Value&Pet=dog")!, headers: [
            ("Host", "service.internal.example"),
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Length", "18"),
            ("Client-Cert", ":\(clientCert):"),
        ], body: Data(#"{"hello": "world"}"#.utf8))
    }

    struct Vector {
        var section: String
        var label: String
        var algorithm: HTTPSignatureAlgorithm
        var publicKey: String
        var request: HTTPRequestParts
        var components: [HTTPSignatureComponent]
        var keyID: String
        var nonce: String?
        var tag: String?
        var base: String
        var signature: String

        /// The `Signature-Input` value: the label and the `@signature-params` line's value.
        var signatureInput: String {
            label + "=" + base.components(separatedBy: "\n").last!.dropFirst("\"@signature-params\": ".count)
        }
        var signatureHeader: String { label + "=:" + signature + ":" }
    }

    static let b21 = Vector(
        section: "B.2.1", label: "sig-b21", algorithm: .rsaPSSSHA512, publicKey: rsaPSSPublicKey, request: testRequest,
        components: [], keyID: "test-key-rsa-pss", nonce: "b3k2pp5k7z-50gnwp.yemd",
        base: #""@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#,
        signature: "d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==")

    static let b22 = Vector(
        section: "B.2.2", label: "sig-b22", algorithm: .rsaPSSSHA512, publicKey: rsaPSSPublicKey, request: testRequest,
        components: [.authority, .field("content-digest"), .queryParameter("Pet")], keyID: "test-key-rsa-pss", tag: "header-example",
        base: """
            "@authority": example.com
            "content-digest": \(requestContentDigest)
            "@query-param";name="Pet": dog
            "@signature-params": ("@authority" "content-digest" "@query-param";name="Pet")\
            ;created=1618884473;keyid="test-key-rsa-pss";tag="header-example"
            """,
        signature: "LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQEdJzgI9qHxICagShLRiLMlAJjtq6N4CDfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw1rLEuEfY17SARYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd4je2U/lankenQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoKUqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjHSw==")

    static let b23 = Vector(
        section: "B.2.3", label: "sig-b23", algorithm: .rsaPSSSHA512, publicKey: rsaPSSPublicKey, request: testRequest,
        components: [.field("date"), .method, .path, .query, .authority, .field("content-type"), .field("content-digest"), .field("content-length")],
        keyID: "test-key-rsa-pss",
        base: """
            "date": Tue, 20 Apr 2021 02:07:55 GMT
            "@method": POST
            "@path": /foo
            "@query": ?param=Value&Pet=dog
            "@authority": example.com
            "content-type": application/json
            "content-digest": \(requestContentDigest)
            "content-length": 18
            "@signature-params": ("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length")\
            ;created=1618884473;keyid="test-key-rsa-pss"
            """,
        signature: "bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==")

    static let b26 = Vector(
        section: "B.2.6", label: "sig-b26", algorithm: .ed25519, publicKey: ed25519PublicKey, request: testRequest,
        components: [.field("date"), .method, .path, .authority, .field("content-type"), .field("content-length")],
        keyID: "test-key-ed25519",
        base: """
            "date": Tue, 20 Apr 2021 02:07:55 GMT
            "@method": POST
            "@path": /foo
            "@authority": example.com
            "content-type": application/json
            "content-length": 18
            "@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")\
            ;created=1618884473;keyid="test-key-ed25519"
            """,
        signature: "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==")

    static let b3 = Vector(
        section: "B.3", label: "ttrp", algorithm: .ecdsaP256SHA256, publicKey: eccP256PublicKey, request: proxyRequest,
        components: [.path, .query, .method, .authority, .field("client-cert")], keyID: "test-key-ecc-p256",
        base: """
            "@path": /foo
            "@query": ?param=Value&Pet=dog
            "@method": POST
            "@authority": service.internal.example
            "client-cert": :\(clientCert):
            "@signature-params": ("@path" "@query" "@method" "@authority" "client-cert");created=1618884473;keyid="test-key-ecc-p256"
            """,
        signature: "xVMHVpawaAC/0SbHrKRs9i8I3eOs5RtTMGCWXm/9nvZzoHsIg6Mce9315T6xoklyy0yzhD9ah4JHRwMLOgmizw==")

    /// B.2.4 signs a response (`@status`), which KeyBridge's request signer does not build; its
    /// base and signature still check the r||s handling against the RFC.
    static let b24Base = """
        "@status": 200
        "content-type": application/json
        "content-digest": \(responseContentDigest)
        "content-length": 23
        "@signature-params": ("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256"
        """
    static let b24Signature = "wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw=="
}

/// Returns a fixed signature, so that signature bases can be inspected without a token.
private struct BaseOnlyKey: RequestSigningKey {
    let algorithm = "ED25519"
    func sign(_ message: [UInt8], scheme: SignatureScheme) throws -> [UInt8] { [UInt8](repeating: 0, count: 64) }
}

// MARK: - Independent checks (openssl, hand-made DER)

/// r||s to DER written out here, so the openssl check does not lean on the code under test.
private func derFromRawForTest(_ raw: [UInt8]) -> [UInt8] {
    func integer(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var value = Array(bytes.drop { $0 == 0 })
        if value.isEmpty { value = [0] }
        if value[0] & 0x80 != 0 { value.insert(0, at: 0) }
        return [0x02, UInt8(value.count)] + value
    }
    let body = integer(raw[..<32]) + integer(raw[32...])
    return [0x30, UInt8(body.count)] + body
}

/// Verifies with the `openssl` command line, as RFC 9421 defines each algorithm.
private func opensslVerifies(base: String, signature: [UInt8], publicKeyPEM: String, algorithm: HTTPSignatureAlgorithm) throws -> Bool {
    let directory = try Command.temporaryDirectory()
    let key = directory + "/public.pem", message = directory + "/base.txt", signatureFile = directory + "/signature"
    try publicKeyPEM.write(toFile: key, atomically: true, encoding: .utf8)
    try Data(base.utf8).write(to: URL(fileURLWithPath: message))
    let arguments: [String]
    var bytes = signature
    switch algorithm {
    case .rsaPSSSHA512:
        arguments = ["openssl", "dgst", "-sha512", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:64",
                     "-verify", key, "-signature", signatureFile, message]
    case .rsaV1_5SHA256:
        arguments = ["openssl", "dgst", "-sha256", "-verify", key, "-signature", signatureFile, message]
    case .ecdsaP256SHA256:
        guard signature.count == 64 else { return false }
        bytes = derFromRawForTest(signature)
        arguments = ["openssl", "dgst", "-sha256", "-verify", key, "-signature", signatureFile, message]
    default:
        arguments = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", key, "-rawin", "-in", message, "-sigfile", signatureFile]
    }
    try Data(bytes).write(to: URL(fileURLWithPath: signatureFile))
    let result = try Command.run(arguments)
    return result.status == 0 && (result.standardOutput.contains("Verified OK") || result.standardOutput.contains("Signature Verified Successfully"))
}

private func XCTAssertThrowsCode<T>(_ code: HTTPMessageSignatureError.Code, _ expression: @autoclosure () throws -> T,
                                    _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try expression(), message, file: file, line: line) { error in
        guard let error = error as? HTTPMessageSignatureError else {
            return XCTFail("expected HTTPMessageSignatureError(\(code)), got \(error)", file: file, line: line)
        }
        XCTAssertEqual(error.code, code, "\(message) — \(error.reason)", file: file, line: line)
        XCTAssertFalse(error.reason.isEmpty, file: file, line: line)
    }
}

private extension HTTPRequestParts {
    func adding(_ headers: [(String, String)]) -> HTTPRequestParts {
        var copy = self
        copy.headers += headers.map { (name: $0.0, value: $0.1) }
        return copy
    }

    func replacing(_ name: String, with value: String) -> HTTPRequestParts {
        var copy = self
        copy.headers = headers.map { $0.name.caseInsensitiveCompare(name) == .orderedSame ? (name: $0.name, value: value) : $0 }
        return copy
    }

    func removing(_ name: String) -> HTTPRequestParts {
        var copy = self
        copy.headers.removeAll { $0.name.caseInsensitiveCompare(name) == .orderedSame }
        return copy
    }
}

// MARK: - Tests

final class HTTPMessageSignatureTests: XCTestCase {
    let token = TestToken.shared

    private func rfcVerifier(_ vector: RFC9421.Vector) throws -> HTTPMessageVerifier {
        try HTTPMessageVerifier(key: PublicKeyVerifier(pem: vector.publicKey), algorithm: vector.algorithm)
    }

    /// The RFC's published signature verifies with KeyBridge's verifier; a changed request does not.
    private func assertRFCSignatureVerifies(_ vector: RFC9421.Vector, tamper: (HTTPRequestParts) -> HTTPRequestParts,
                                            file: StaticString = #filePath, line: UInt = #line) throws {
        let signed = vector.request.adding([("Signature-Input", vector.signatureInput), ("Signature", vector.signatureHeader)])
        let now = RFC9421.created.addingTimeInterval(5)
        let result = try rfcVerifier(vector).verify(signed, now: now)
        XCTAssertEqual(result.label, vector.label, file: file, line: line)
        XCTAssertEqual(Array(result.signatureBase.utf8), Array(vector.base.utf8), "\(vector.section) rebuilt base", file: file, line: line)
        XCTAssertEqual(result.components, vector.components, file: file, line: line)
        XCTAssertEqual(result.parameters.keyID, vector.keyID, file: file, line: line)
        XCTAssertEqual(result.parameters.created, 1_618_884_473, file: file, line: line)
        // Controls: the check above must be able to fail.
        XCTAssertThrowsCode(.signatureInvalid, try self.rfcVerifier(vector).verify(tamper(signed), now: now),
                            "\(vector.section) with a changed request", file: file, line: line)
        let laterCreated = signed.replacing("Signature-Input", with: vector.signatureInput.replacingOccurrences(of: "created=1618884473", with: "created=1618884474"))
        XCTAssertThrowsCode(.signatureInvalid, try self.rfcVerifier(vector).verify(laterCreated, now: now),
                            "\(vector.section) with a changed parameter", file: file, line: line)
    }

    /// For randomized algorithms: the token key signs the RFC's request with the RFC's parameters;
    /// the base and Signature-Input must equal the RFC's byte for byte, and openssl must accept the
    /// token's signature over that base.
    private func assertTokenSignsRFCBase(_ vector: RFC9421.Vector, keyURI: String,
                                         file: StaticString = #filePath, line: UInt = #line) throws {
        let key = try ProviderKey(uri: keyURI)
        let signer = try HTTPMessageSigner(key: key, algorithm: vector.algorithm, keyID: vector.keyID, components: vector.components,
                                           label: vector.label, tag: vector.tag)
        let signature = try signer.signature(for: vector.request, created: RFC9421.created, nonce: vector.nonce)
        XCTAssertEqual(Array(signature.signatureBase.utf8), Array(vector.base.utf8), "\(vector.section) signature base", file: file, line: line)
        XCTAssertEqual(signature.signatureInput, vector.signatureInput, file: file, line: line)
        XCTAssertTrue(try opensslVerifies(base: signature.signatureBase, signature: signature.signature,
                                          publicKeyPEM: key.publicKeyPEM(), algorithm: vector.algorithm), file: file, line: line)
        // Control: the same signature over a one-character change must not verify.
        XCTAssertFalse(try opensslVerifies(base: signature.signatureBase.replacingOccurrences(of: "1618884473", with: "1618884474"),
                                           signature: signature.signature, publicKeyPEM: key.publicKeyPEM(), algorithm: vector.algorithm),
                       file: file, line: line)
    }

    // MARK: RFC 9421 Appendix B

    func testRFC9421B21MinimalRSAPSS() throws {
        try assertTokenSignsRFCBase(RFC9421.b21, keyURI: token.rsaURI)
        try assertRFCSignatureVerifies(RFC9421.b21) { request in
            request.replacing("Signature-Input", with: RFC9421.b21.signatureInput.replacingOccurrences(of: "b3k2pp5k7z", with: "b3k2pp5k7y"))
        }
    }

    func testRFC9421B22SelectiveRSAPSSWithQueryParameterAndTag() throws {
        try assertTokenSignsRFCBase(RFC9421.b22, keyURI: token.rsaURI)
        try assertRFCSignatureVerifies(RFC9421.b22) { request in
            var changed = request
            changed.url = URL(string: "https://example.com/foo?param=Value&Pet=cat")!
            return changed
        }
    }

    func testRFC9421B23FullCoverageRSAPSS() throws {
        try assertTokenSignsRFCBase(RFC9421.b23, keyURI: token.rsaURI)
        try assertRFCSignatureVerifies(RFC9421.b23) { $0.replacing("Date", with: "Tue, 20 Apr 2021 02:07:56 GMT") }
        // The test request's Content-Digest is the RFC's, and it matches the body.
        var verifier = try rfcVerifier(RFC9421.b23)
        verifier.checksContentDigest = true
        let signed = RFC9421.b23.request.adding([("Signature-Input", RFC9421.b23.signatureInput), ("Signature", RFC9421.b23.signatureHeader)])
        XCTAssertEqual(try verifier.verify(signed, now: RFC9421.created).checkedDigests, [.sha512])
    }

    func testRFC9421B3ProxyRequestECDSAP256() throws {
        try assertTokenSignsRFCBase(RFC9421.b3, keyURI: token.ecURI)
        try assertRFCSignatureVerifies(RFC9421.b3) { $0.replacing("Client-Cert", with: ":" + RFC9421.clientCert.replacingOccurrences(of: "MIIB", with: "MIIC") + ":") }
    }

    /// B.2.4 is a response; its r||s signature checks the ECDSA encoding against the RFC.
    func testRFC9421B24ResponseECDSASignatureIsRawRS() throws {
        let verifier = try PublicKeyVerifier(pem: RFC9421.eccP256PublicKey)
        let raw = try XCTUnwrap(Data(base64Encoded: RFC9421.b24Signature))
        XCTAssertEqual(raw.count, 64)
        let der = try ECDSASignatureEncoding.derFromRaw(Array(raw))
        XCTAssertEqual(der, derFromRawForTest(Array(raw)))
        XCTAssertTrue(verifier.verify(der, over: Array(RFC9421.b24Base.utf8), scheme: .ecdsa(.sha256)))
        XCTAssertTrue(try opensslVerifies(base: RFC9421.b24Base, signature: Array(raw), publicKeyPEM: RFC9421.eccP256PublicKey, algorithm: .ecdsaP256SHA256))
        XCTAssertFalse(verifier.verify(der, over: Array(RFC9421.b24Base.replacingOccurrences(of: "200", with: "201").utf8), scheme: .ecdsa(.sha256)))
        // The raw form itself is not DER; handing it to OpenSSL as is must fail.
        XCTAssertFalse(verifier.verify(Array(raw), over: Array(RFC9421.b24Base.utf8), scheme: .ecdsa(.sha256)))
    }

    /// Ed25519 is deterministic: with the RFC's private key inside the SoftHSM token (sensitive,
    /// not extractable), KeyBridge must reproduce the RFC's Signature header byte for byte.
    func testRFC9421B26Ed25519SignedOnTheTokenMatchesTheRFC() throws {
        guard let edURI = try? token.keyURI("ed25519") else { throw XCTSkip("this SoftHSM cannot hold Ed25519 keys") }
        // The kb-ed25519 token, not keybridge: libp11's engine cannot list a token holding an
        // Ed25519 key, and other tests use the engine on the keybridge token in this process.
        let tokenLabel = "kb-ed25519", objectLabel = "rfc9421-ed25519", objectID = "99"
        let query = String(edURI.split(separator: "?", maxSplits: 1).last ?? "")
        let module = query.split(separator: "&").first { $0.hasPrefix("module-path=") }.map { String($0.dropFirst("module-path=".count)) }
            ?? "/usr/lib/softhsm/libsofthsm2.so"
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.softHSMConfig
        environment["KB_P11_PIN"] = token.userPIN
        let pkcs11Tool = ["pkcs11-tool", "--module", module, "--token-label", tokenLabel, "--login", "--pin", "env:KB_P11_PIN"]

        let directory = try Command.temporaryDirectory()
        let pemPath = directory + "/rfc9421-ed25519.pem"
        XCTAssertTrue(FileManager.default.createFile(atPath: pemPath, contents: Data(RFC9421.ed25519PrivateKey.utf8), attributes: [.posixPermissions: 0o600]))
        // pkcs11-tool 0.23 refuses Ed25519 private keys ("Unsupported key type"); softhsm2-util
        // imports them. It takes the PIN only as an argument or from a terminal, so this
        // throwaway test token's PIN is on its command line for the moment it runs.
        let importResult = try Command.run(["softhsm2-util", "--import", pemPath, "--token", tokenLabel, "--label", objectLabel,
                                         "--id", objectID, "--pin", token.userPIN], environment: environment)
        try? FileManager.default.removeItem(atPath: pemPath)
        XCTAssertEqual(importResult.status, 0, importResult.combined)
        addTeardownBlock {
            // The token outlives this test (it serves the whole process), so leave it as it was.
            for type in ["privkey", "pubkey"] {
                let deleted = try? Command.run(pkcs11Tool + ["--delete-object", "--type", type, "--id", objectID], environment: environment)
                XCTAssertEqual(deleted?.status, 0, deleted?.combined ?? "pkcs11-tool did not run")
            }
            let left = try? Command.run(pkcs11Tool + ["--list-objects"], environment: environment)
            XCTAssertEqual(left?.standardOutput.contains(objectLabel), false)
        }

        // The token holds it as a sensitive, non-extractable Ed25519 private key. pkcs11-tool lists
        // every object, so read the block of this one.
        let listing = try Command.run(pkcs11Tool + ["--list-objects", "--type", "privkey"], environment: environment)
        XCTAssertEqual(listing.status, 0, listing.combined)
        var blocks: [[Substring]] = []
        for line in listing.standardOutput.split(separator: "\n") {
            if line.first?.isWhitespace == false { blocks.append([line]) } else if !blocks.isEmpty { blocks[blocks.count - 1].append(line) }
        }
        func attribute(_ name: String, in block: [Substring]) -> String? {
            block.first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(name + ":") }
                .map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) }
        }
        let imported = try XCTUnwrap(blocks.first { attribute("label", in: $0) == objectLabel }, listing.standardOutput)
        XCTAssertEqual(imported.first, "Private Key Object; EC_EDWARDS")
        let flags = (attribute("Access", in: imported) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        XCTAssertTrue(flags.contains("sensitive"), "\(flags)")
        XCTAssertFalse(flags.contains("extractable"), "\(flags)")
        // Control: the same reading sees the flags of the key softhsm-setup generated.
        let generated = try XCTUnwrap(blocks.first { attribute("label", in: $0) == "client-ed25519" }, listing.standardOutput)
        XCTAssertEqual(attribute("Access", in: generated)?.contains("never extractable"), true)

        let keyURI = "pkcs11:token=\(tokenLabel);object=\(objectLabel);type=private?" + query
        let key = try ProviderKey(uri: keyURI)
        XCTAssertEqual(key.algorithm, "ED25519")
        XCTAssertEqual(try key.publicKeyPEM(), RFC9421.ed25519PublicKey, "the token key must be the RFC's test-key-ed25519")

        let vector = RFC9421.b26
        let signer = try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: vector.keyID, components: vector.components, label: vector.label)
        var request = vector.request
        let signature = try signer.sign(&request, created: RFC9421.created)
        XCTAssertEqual(Array(signature.signatureBase.utf8), Array(vector.base.utf8))
        XCTAssertEqual(request.header("Signature-Input"), vector.signatureInput)
        XCTAssertEqual(request.header("Signature"), vector.signatureHeader)
        XCTAssertEqual(request.header("Signature"), "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:")

        try assertRFCSignatureVerifies(vector) { $0.replacing("Content-Type", with: "application/json; charset=utf-8") }
        XCTAssertTrue(try opensslVerifies(base: vector.base, signature: signature.signature, publicKeyPEM: RFC9421.ed25519PublicKey, algorithm: .ed25519))
        // Control: the project's own Ed25519 key gives another signature over the same base.
        let other = try HTTPMessageSigner(key: ProviderKey(uri: edURI), algorithm: .ed25519, keyID: vector.keyID,
                                          components: vector.components, label: vector.label)
        XCTAssertNotEqual(try other.signature(for: vector.request, created: RFC9421.created).signatureHeader, vector.signatureHeader)
    }

    // MARK: Round trips with the project's token keys

    private func sampleRequest() -> HTTPRequestParts {
        HTTPRequestParts(method: "post", url: URL(string: "https://API.Bank.example:8443/v1/payments?limit=10&note=a+b%2Fc")!, headers: [
            ("Content-Type", "application/json"),
            ("X-Request-ID", "99391c7e-ad88-49ec-a2ad-99ddcb1f7721"),
            ("Accept", "application/json"),
            ("accept", " text/plain "),
        ], body: Data(#"{"instructedAmount": {"currency": "EUR", "amount": "123.50"}}"#.utf8))
    }

    private let roundTripComponents: [HTTPSignatureComponent] = [
        .method, .targetURI, .authority, .scheme, .requestTarget, .path, .query, .queryParameter("note"),
        .field("Content-Type"), .field("content-digest"), .field("x-request-id"), .field("accept"),
    ]

    private func assertRoundTrip(keyURI: String, certificate: String, algorithm: HTTPSignatureAlgorithm,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        let key = try ProviderKey(uri: keyURI)
        let signer = try HTTPMessageSigner(key: key, algorithm: algorithm, keyID: "kb-\(algorithm)", components: roundTripComponents,
                                           includesAlgorithm: true, lifetime: 300, tag: "keybridge-test", contentDigest: .sha256)
        var request = sampleRequest()
        let created = Date()
        let signature = try signer.sign(&request, created: created, nonce: HTTPMessageSigner.makeNonce())
        XCTAssertEqual(request.headers.suffix(3).map(\.name), ["Content-Digest", "Signature-Input", "Signature"], file: file, line: line)
        XCTAssertTrue(signature.signatureBase.hasPrefix("""
            "@method": POST
            "@target-uri": https://api.bank.example:8443/v1/payments?limit=10&note=a+b%2Fc
            "@authority": api.bank.example:8443
            "@scheme": https
            "@request-target": /v1/payments?limit=10&note=a+b%2Fc
            "@path": /v1/payments
            "@query": ?limit=10&note=a+b%2Fc
            "@query-param";name="note": a%20b%2Fc
            "content-type": application/json
            "content-digest": sha-256=:
            """), signature.signatureBase, file: file, line: line)
        XCTAssertTrue(signature.signatureBase.contains("\n\"accept\": application/json, text/plain\n"), file: file, line: line)
        XCTAssertTrue(signature.signatureInput.contains(";alg=\"\(algorithm)\";nonce=\""), signature.signatureInput, file: file, line: line)
        if algorithm == .ecdsaP256SHA256 || algorithm == .ed25519 { XCTAssertEqual(signature.signature.count, 64, file: file, line: line) }

        // KeyBridge's verifier, with the public key from the issued certificate.
        var verifier = try HTTPMessageVerifier(key: PublicKeyVerifier(pem: String(contentsOfFile: token.pki(certificate), encoding: .utf8)),
                                               algorithm: algorithm)
        verifier.expectedKeyID = "kb-\(algorithm)"
        verifier.expectedTag = "keybridge-test"
        verifier.requiredComponents = [.method, .targetURI, .field("content-digest")]
        verifier.requiresExpires = true
        verifier.maximumAge = 600
        verifier.checksContentDigest = true
        let verified = try verifier.verify(request, now: created)
        XCTAssertEqual(verified.signatureBase, signature.signatureBase, file: file, line: line)
        XCTAssertEqual(verified.components, roundTripComponents, file: file, line: line)
        XCTAssertEqual(verified.checkedDigests, [.sha256], file: file, line: line)
        XCTAssertEqual(verified.parameters.expires, verified.parameters.created.map { $0 + 300 }, file: file, line: line)

        // openssl, with the public key the token exports.
        let publicKey = try key.publicKeyPEM()
        XCTAssertTrue(try opensslVerifies(base: signature.signatureBase, signature: signature.signature, publicKeyPEM: publicKey, algorithm: algorithm),
                      file: file, line: line)
        // Controls: a changed base fails in openssl, a changed request fails in the verifier.
        XCTAssertFalse(try opensslVerifies(base: signature.signatureBase.replacingOccurrences(of: "\"@method\": POST", with: "\"@method\": PUT"),
                                           signature: signature.signature, publicKeyPEM: publicKey, algorithm: algorithm), file: file, line: line)
        XCTAssertThrowsCode(.signatureInvalid, try verifier.verify(request.replacing("X-Request-ID", with: "another"), now: created),
                            file: file, line: line)
        var otherBody = request
        otherBody.body = Data(#"{"instructedAmount": {"currency": "EUR", "amount": "923.50"}}"#.utf8)
        XCTAssertThrowsCode(.contentDigestMismatch, try verifier.verify(otherBody, now: created), file: file, line: line)
        XCTAssertThrowsCode(.expired, try verifier.verify(request, now: created.addingTimeInterval(300 + 61)), file: file, line: line)
    }

    func testRoundTripRSAPSSSHA512() throws {
        try assertRoundTrip(keyURI: token.rsaURI, certificate: "client-rsa.pem", algorithm: .rsaPSSSHA512)
    }

    func testRoundTripRSAV15SHA256() throws {
        try assertRoundTrip(keyURI: token.rsaURI, certificate: "client-rsa.pem", algorithm: .rsaV1_5SHA256)
    }

    func testRoundTripECDSAP256SHA256() throws {
        try assertRoundTrip(keyURI: token.ecURI, certificate: "client-ec.pem", algorithm: .ecdsaP256SHA256)
    }

    func testRoundTripEd25519() throws {
        guard let uri = try? token.keyURI("ed25519") else { throw XCTSkip("this SoftHSM cannot hold Ed25519 keys") }
        try assertRoundTrip(keyURI: uri, certificate: "client-ed25519.pem", algorithm: .ed25519)
    }

    func testRSAPSSAndPKCS1SignaturesAreNotInterchangeable() throws {
        let key = try ProviderKey(uri: token.rsaURI)
        let certificate = try String(contentsOfFile: token.pki("client-rsa.pem"), encoding: .utf8)
        var request = sampleRequest()
        try HTTPMessageSigner(key: key, algorithm: .rsaPSSSHA512, keyID: nil, components: [.method, .targetURI]).sign(&request)
        XCTAssertNoThrow(try HTTPMessageVerifier(key: PublicKeyVerifier(pem: certificate), algorithm: .rsaPSSSHA512).verify(request))
        XCTAssertThrowsCode(.signatureInvalid, try HTTPMessageVerifier(key: PublicKeyVerifier(pem: certificate), algorithm: .rsaV1_5SHA256).verify(request))
    }

    // MARK: Signature base construction

    private func base(_ request: HTTPRequestParts, _ components: [HTTPSignatureComponent]) throws -> String {
        let signer = try HTTPMessageSigner(key: BaseOnlyKey(), algorithm: .ed25519, keyID: nil, components: components)
        let lines = try signer.signature(for: request, created: nil).signatureBase.components(separatedBy: "\n")
        return lines.dropLast().joined(separator: "\n")
    }

    func testDerivedComponentsAreNormalised() throws {
        let request = HTTPRequestParts(method: "get", url: URL(string: "https://Example.COM:443/a%20b/c?x=1&y=%2F")!)
        XCTAssertEqual(try base(request, [.method, .authority, .scheme, .targetURI, .requestTarget, .path, .query]), """
            "@method": GET
            "@authority": example.com
            "@scheme": https
            "@target-uri": https://example.com/a%20b/c?x=1&y=%2F
            "@request-target": /a%20b/c?x=1&y=%2F
            "@path": /a%20b/c
            "@query": ?x=1&y=%2F
            """)
        let bare = HTTPRequestParts(method: "GET", url: URL(string: "http://example.com:8080")!)
        XCTAssertEqual(try base(bare, [.authority, .targetURI, .path, .query]), """
            "@authority": example.com:8080
            "@target-uri": http://example.com:8080/
            "@path": /
            "@query": ?
            """)
        let v6 = HTTPRequestParts(method: "GET", url: URL(string: "https://[2001:db8::1]:8443/x")!)
        XCTAssertEqual(try base(v6, [.authority]), #""@authority": [2001:db8::1]:8443"#)
    }

    /// RFC 9421 §2.2.8's examples of @query-param encoding.
    func testQueryParametersFollowRFC9421Section2_2_8() throws {
        let first = HTTPRequestParts(method: "GET", url: URL(string: "https://www.example.com/path?param=value&foo=bar&baz=batman&qux=")!)
        XCTAssertEqual(try base(first, [.queryParameter("baz"), .queryParameter("qux"), .queryParameter("param")]), """
            "@query-param";name="baz": batman
            "@query-param";name="qux": \("")
            "@query-param";name="param": value
            """)
        let second = HTTPRequestParts(method: "GET", url: URL(string:
            "https://example.com/parameters?var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something")!)
        XCTAssertEqual(try base(second, [.queryParameter("var"), .queryParameter("bar"), .queryParameter("façade\": ")]), """
            "@query-param";name="var": this%20is%20a%20big%0Amultiline%20value
            "@query-param";name="bar": with%20plus%20whitespace
            "@query-param";name="fa%C3%A7ade%22%3A%20": something
            """)
        XCTAssertThrowsCode(.missingComponent, try self.base(first, [.queryParameter("absent")]))
        let repeated = HTTPRequestParts(method: "GET", url: URL(string: "https://example.com/?param=1&%70aram=2")!)
        XCTAssertThrowsCode(.unsupportedComponent, try self.base(repeated, [.queryParameter("param")]), "a repeated name cannot be covered alone")
    }

    func testHeaderFieldsAreLowerCasedTrimmedAndJoined() throws {
        let request = HTTPRequestParts(method: "GET", url: URL(string: "https://example.com/")!, headers: [
            ("X-Multi", "  first "), ("X-Empty", ""), ("x-multi", "second\t"), ("Cache-Control", "max-age=60"), ("cache-control", "must-revalidate"),
        ])
        XCTAssertEqual(try base(request, [.field("X-MULTI"), .field("x-empty"), .field("cache-control")]), """
            "x-multi": first, second
            "x-empty": \("")
            "cache-control": max-age=60, must-revalidate
            """)
        XCTAssertThrowsCode(.missingComponent, try self.base(request, [.field("x-absent")]))
        let injected = HTTPRequestParts(method: "GET", url: URL(string: "https://example.com/")!, headers: [("X-Bad", "a\n\"@method\": GET")])
        XCTAssertThrowsCode(.malformedField, try self.base(injected, [.field("x-bad")]))
    }

    func testSignerRefusesBadConfigurations() throws {
        let key = BaseOnlyKey()
        XCTAssertThrowsCode(.invalidConfiguration, try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: nil, components: [], label: "Sig1"))
        XCTAssertThrowsCode(.algorithmMismatch, try HTTPMessageSigner(key: key, algorithm: .rsaPSSSHA512, keyID: nil, components: []))
        XCTAssertThrowsCode(.duplicateComponent, try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: nil, components: [.method, .method]))
        XCTAssertThrowsCode(.unsupportedComponent, try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: nil, components: [.field("bad header")]))
        XCTAssertThrowsCode(.unsupportedComponent, try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: nil, components: [.queryParameter("")]))
        XCTAssertThrowsCode(.invalidConfiguration, try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: "clé", components: []))
        XCTAssertThrowsCode(.invalidConfiguration, try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: nil, components: [.method],
                                                                         contentDigest: .sha256), "a digest nobody signs protects nothing")
        let signer = try HTTPMessageSigner(key: key, algorithm: .ed25519, keyID: "k", components: [.method])
        XCTAssertThrowsCode(.invalidConfiguration, try signer.signature(for: RFC9421.testRequest, nonce: "\u{7F}"))
        var request = RFC9421.testRequest
        try signer.sign(&request)
        XCTAssertThrowsCode(.invalidConfiguration, try signer.sign(&request), "the label sig1 is taken")
        XCTAssertNotEqual(HTTPMessageSigner.makeNonce(), HTTPMessageSigner.makeNonce())
        XCTAssertEqual(HTTPSignatureAlgorithm(name: "rsa-pss-sha512"), .rsaPSSSHA512)
        XCTAssertNil(HTTPSignatureAlgorithm(name: "hmac-sha256"), "HMAC needs a shared secret; token keys are asymmetric")
    }

    func testSignerChecksTokenKeysAgainstTheAlgorithm() throws {
        XCTAssertThrowsCode(.algorithmMismatch, try HTTPMessageSigner(key: ProviderKey(uri: token.ecURI), algorithm: .rsaPSSSHA512, keyID: nil, components: []))
        XCTAssertThrowsCode(.algorithmMismatch, try HTTPMessageSigner(key: ProviderKey(uri: token.ec384URI), algorithm: .ecdsaP256SHA256, keyID: nil, components: []),
                            "ecdsa-p256-sha256 is P-256 only")
    }

    // MARK: Verifier failures

    /// A request signed by the token's P-256 key, and a verifier that accepts it.
    private func signedFixture() throws -> (request: HTTPRequestParts, verifier: HTTPMessageVerifier, created: Date) {
        let signer = try HTTPMessageSigner(key: ProviderKey(uri: token.ecURI), algorithm: .ecdsaP256SHA256, keyID: "kb-ec",
                                           components: [.method, .targetURI, .field("content-digest")], includesAlgorithm: true,
                                           lifetime: 60, tag: "psd2", contentDigest: .sha256)
        var request = HTTPRequestParts(method: "POST", url: URL(string: "https://bank.example/v1/payments")!, body: Data("{}".utf8))
        let created = Date(timeIntervalSince1970: 1_750_000_000)
        try signer.sign(&request, created: created)
        var verifier = try HTTPMessageVerifier(key: PublicKeyVerifier(pem: String(contentsOfFile: token.pki("client-ec.pem"), encoding: .utf8)),
                                               algorithm: .ecdsaP256SHA256)
        verifier.checksContentDigest = true
        XCTAssertNoThrow(try verifier.verify(request, now: created), "the fixture itself must verify")
        return (request, verifier, created)
    }

    func testVerifierRejectsMissingAndMalformedHeaders() throws {
        let (request, verifier, now) = try signedFixture()
        let input = try XCTUnwrap(request.header("Signature-Input"))
        XCTAssertThrowsCode(.missingSignature, try verifier.verify(request.removing("Signature-Input"), now: now))
        XCTAssertThrowsCode(.missingSignature, try verifier.verify(request.removing("Signature"), now: now))
        XCTAssertThrowsCode(.malformedField, try verifier.verify(request.replacing("Signature-Input", with: #"sig1=("@method" "#), now: now))
        XCTAssertThrowsCode(.malformedField, try verifier.verify(request.replacing("Signature", with: #"sig1="c2ln""#), now: now))
        XCTAssertThrowsCode(.malformedField, try verifier.verify(request.replacing("Signature", with: "sig1=:c2ln"), now: now))
        XCTAssertThrowsCode(.malformedField, try verifier.verify(request.replacing("Signature-Input", with: "sig1=:c2ln:"), now: now))
        XCTAssertThrowsCode(.malformedField, try verifier.verify(request.replacing("Signature-Input", with: "sig1=(@method);created=1"), now: now),
                            "components are strings, not tokens")
        XCTAssertThrowsCode(.missingSignature, try verifier.verify(request.replacing("Signature", with: "sig2=:c2ln:"), now: now))
        var labelled = verifier
        labelled.label = "sig2"
        XCTAssertThrowsCode(.missingSignature, try labelled.verify(request, now: now))
        XCTAssertThrowsCode(.invalidParameter, try verifier.verify(request.replacing("Signature-Input", with: input.replacingOccurrences(
            of: "created=1750000000", with: #"created="1750000000""#)), now: now))
        XCTAssertThrowsCode(.invalidParameter, try verifier.verify(request.replacing("Signature-Input", with: #"sig1=("@method")"#), now: now),
                            "created is required by default")
    }

    func testVerifierChoosesAmongSeveralSignatures() throws {
        let (request, verifier, now) = try signedFixture()
        // A second signature on separate header lines; both fields are read as one dictionary.
        let twice = request.adding([("Signature-Input", #"proxy=("@method");created=1750000000"#), ("Signature", "proxy=:AAAA:")])
        XCTAssertThrowsCode(.ambiguousSignature, try verifier.verify(twice, now: now))
        var chosen = verifier
        chosen.label = "sig1"
        XCTAssertEqual(try chosen.verify(twice, now: now).label, "sig1")
        chosen.label = "proxy"
        XCTAssertThrowsCode(.componentNotCovered, try chosen.verify(twice, now: now), "proxy does not cover content-digest")
        chosen.checksContentDigest = false
        XCTAssertThrowsCode(.signatureInvalid, try chosen.verify(twice, now: now))
    }

    func testVerifierChecksParametersAndTime() throws {
        let (request, verifier, created) = try signedFixture()
        var strict = verifier
        strict.allowedClockSkew = 0
        XCTAssertNoThrow(try strict.verify(request, now: created.addingTimeInterval(59)))
        XCTAssertThrowsCode(.expired, try strict.verify(request, now: created.addingTimeInterval(60)))
        XCTAssertNoThrow(try verifier.verify(request, now: created.addingTimeInterval(119)), "60 s of skew by default")
        XCTAssertThrowsCode(.expired, try verifier.verify(request, now: created.addingTimeInterval(120)))
        XCTAssertThrowsCode(.createdInFuture, try verifier.verify(request, now: created.addingTimeInterval(-61)))
        XCTAssertThrowsCode(.createdInFuture, try strict.verify(request, now: created.addingTimeInterval(-1)))
        strict.maximumAge = 10
        XCTAssertThrowsCode(.tooOld, try strict.verify(request, now: created.addingTimeInterval(11)))

        var keyed = verifier
        keyed.expectedKeyID = "kb-ec"
        keyed.expectedTag = "psd2"
        XCTAssertNoThrow(try keyed.verify(request, now: created))
        keyed.expectedKeyID = "another-key"
        XCTAssertThrowsCode(.unexpectedParameterValue, try keyed.verify(request, now: created))
        keyed.expectedKeyID = nil
        keyed.expectedTag = "fapi"
        XCTAssertThrowsCode(.unexpectedParameterValue, try keyed.verify(request, now: created))

        var required = verifier
        required.requiredComponents = [.field("x-request-id")]
        XCTAssertThrowsCode(.componentNotCovered, try required.verify(request, now: created))
        var expiring = verifier
        expiring.requiresExpires = true
        let input = try XCTUnwrap(request.header("Signature-Input"))
        XCTAssertThrowsCode(.invalidParameter, try expiring.verify(request.replacing("Signature-Input", with: input.replacingOccurrences(
            of: ";expires=1750000060", with: "")), now: created))
        XCTAssertThrowsCode(.invalidParameter, try verifier.verify(request.replacing("Signature-Input", with: input.replacingOccurrences(
            of: ";expires=1750000060", with: ";expires=1749999999")), now: created), "expires before created")

        // The signature names its algorithm; a verifier for another one refuses it before any maths.
        let rsa = try HTTPMessageVerifier(key: PublicKeyVerifier(pem: String(contentsOfFile: token.pki("client-rsa.pem"), encoding: .utf8)),
                                          algorithm: .rsaPSSSHA512)
        XCTAssertThrowsCode(.algorithmMismatch, try rsa.verify(request, now: created))
        XCTAssertThrowsCode(.algorithmMismatch, try HTTPMessageVerifier(key: PublicKeyVerifier(pem: RFC9421.eccP256PublicKey), algorithm: .ed25519))
    }

    func testVerifierRejectsChangedSignaturesAndComponents() throws {
        let (request, verifier, now) = try signedFixture()
        let signature = try XCTUnwrap(request.header("Signature"))
        var bytes = try XCTUnwrap(Data(base64Encoded: String(signature.dropFirst("sig1=:".count).dropLast())))
        bytes[5] ^= 0x01
        XCTAssertThrowsCode(.signatureInvalid, try verifier.verify(request.replacing("Signature", with: "sig1=:\(bytes.base64EncodedString()):"), now: now))
        XCTAssertThrowsCode(.signatureInvalid, try verifier.verify(request.replacing("Signature", with: "sig1=:\(bytes.prefix(63).base64EncodedString()):"),
                                                                   now: now), "r||s must be 64 bytes")
        var changed = request
        changed.method = "PUT"
        XCTAssertThrowsCode(.signatureInvalid, try verifier.verify(changed, now: now))

        let input = try XCTUnwrap(request.header("Signature-Input"))
        func withComponents(_ list: String) -> HTTPRequestParts {
            request.replacing("Signature-Input", with: input.replacingOccurrences(of: #"("@method" "@target-uri" "content-digest")"#, with: list))
        }
        XCTAssertThrowsCode(.unsupportedComponent, try verifier.verify(withComponents(#"("@method" "content-digest";sf)"#), now: now))
        XCTAssertThrowsCode(.unsupportedComponent, try verifier.verify(withComponents(#"("@status" "content-digest")"#), now: now))
        XCTAssertThrowsCode(.unsupportedComponent, try verifier.verify(withComponents(#"("@method" "Content-Digest")"#), now: now))
        XCTAssertThrowsCode(.unsupportedComponent, try verifier.verify(withComponents(#"("@query-param" "content-digest")"#), now: now))
        XCTAssertThrowsCode(.duplicateComponent, try verifier.verify(withComponents(#"("@method" "@method" "content-digest")"#), now: now))
        XCTAssertThrowsCode(.missingComponent, try verifier.verify(withComponents(#"("@method" "content-digest" "x-request-id")"#), now: now))
        XCTAssertThrowsCode(.componentNotCovered, try verifier.verify(withComponents(#"("@method" "@target-uri")"#), now: now),
                            "checking the digest means nothing when the signature does not cover it")
    }

    func testVerifierChecksContentDigestOnlyWhenAsked() throws {
        let (request, verifier, now) = try signedFixture()
        var changed = request
        changed.body = Data("{\"amount\": 1}".utf8)
        XCTAssertThrowsCode(.contentDigestMismatch, try verifier.verify(changed, now: now))
        var lenient = verifier
        lenient.checksContentDigest = false
        XCTAssertNoThrow(try lenient.verify(changed, now: now), "without the digest check the body is not compared")
        XCTAssertThrowsCode(.missingComponent, try verifier.verify(request.removing("Content-Digest"), now: now))
    }

    // MARK: Content-Digest (RFC 9530)

    func testContentDigestKnownAnswersMatchOpenSSL() throws {
        let body = Data(#"{"hello": "world"}"#.utf8)
        XCTAssertEqual(ContentDigest.headerValue(for: body), "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")
        XCTAssertEqual(ContentDigest.headerValue(for: body, algorithms: [.sha256, .sha512, .sha256]),
                       "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, " + RFC9421.requestContentDigest)
        XCTAssertEqual(ContentDigest.headerValue(for: Data()), "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:")
        let directory = try Command.temporaryDirectory()
        try body.write(to: URL(fileURLWithPath: directory + "/body"))
        for (algorithm, flag) in [(ContentDigest.Algorithm.sha256, "-sha256"), (.sha512, "-sha512")] {
            let result = try Command.run(["openssl", "dgst", flag, "-binary", "-out", directory + "/digest", directory + "/body"])
            XCTAssertEqual(result.status, 0, result.combined)
            let expected = try Data(contentsOf: URL(fileURLWithPath: directory + "/digest"))
            XCTAssertEqual(ContentDigest.headerValue(for: body, algorithms: [algorithm]), "\(algorithm)=:\(expected.base64EncodedString()):")
        }
    }

    func testContentDigestVerification() throws {
        let body = Data(#"{"hello": "world"}"#.utf8)
        let sha256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        XCTAssertEqual(try ContentDigest.verify(sha256, body: body), [.sha256])
        XCTAssertEqual(try ContentDigest.verify(sha256 + ", " + RFC9421.requestContentDigest, body: body), [.sha256, .sha512])
        XCTAssertEqual(try ContentDigest.verify("md5=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, unixsum=12, " + RFC9421.requestContentDigest, body: body),
                       [.sha512], "unknown algorithms are skipped")
        XCTAssertEqual(try ContentDigest.verify("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE:", body: body), [.sha256],
                       "missing base64 padding is tolerated (RFC 8941 §4.2.7)")
        XCTAssertThrowsCode(.contentDigestMismatch, try ContentDigest.verify(sha256, body: Data(#"{"hello": "World"}"#.utf8)))
        XCTAssertThrowsCode(.contentDigestMismatch, try ContentDigest.verify(sha256 + ", " + RFC9421.responseContentDigest, body: body),
                            "every known digest must match, not just one")
        XCTAssertThrowsCode(.noKnownDigestAlgorithm, try ContentDigest.verify("md5=:AAAA:, crc32c=:AAAA:", body: body))
        XCTAssertThrowsCode(.noKnownDigestAlgorithm, try ContentDigest.verify("", body: body))
    }

    func testContentDigestRejectsMalformedValues() {
        let body = Data()
        for value in [
            "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE",   // a token, not a byte sequence
            "sha-256=\"X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=\"", // a string
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",  // unterminated
            "SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", // keys are lower case
            "sha-256=:X48E9qOo$kqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", // not base64
            "sha-256=:X4=8E9qO:",                                     // padding in the middle
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:,", // trailing comma
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=: sha-512=:AA==:", // no comma
            "sha-256=?1",                                             // a boolean
            "sha-256=(:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:)", // an inner list
        ] {
            XCTAssertThrowsCode(.malformedField, try ContentDigest.verify(value, body: body), value)
        }
    }

    // MARK: Structured fields (RFC 8941)

    func testStructuredFieldParserReadsEveryShape() throws {
        let dictionary = try StructuredFieldParser.parseDictionary(
            #"a=1, b=?0,c, d=:QQ==:;x, e=1.50, f=tok-1/x:y,\#tg=(-5 "s\"q\\" t;p=1;q);r=?0, h="x";k=v, a=2"#)
        XCTAssertEqual(dictionary.keys, ["a", "b", "c", "d", "e", "f", "g", "h"], "a repeated key keeps its place")
        guard case let .item(a) = dictionary["a"], case .integer(2) = a.bareItem else { return XCTFail("a: the last value wins") }
        guard case let .item(c) = dictionary["c"], case .boolean(true) = c.bareItem else { return XCTFail("c: a bare key is true") }
        guard case let .item(d) = dictionary["d"], case .byteSequence([0x41]) = d.bareItem, case .boolean(true)? = d.parameter("x") else {
            return XCTFail("d")
        }
        guard case let .item(e) = dictionary["e"], case .decimal("1.5") = e.bareItem else { return XCTFail("e") }
        guard case let .item(f) = dictionary["f"], case .token("tok-1/x:y") = f.bareItem else { return XCTFail("f") }
        guard case let .innerList(items, parameters) = dictionary["g"] else { return XCTFail("g") }
        XCTAssertEqual(items.map(\.bareItem), [.integer(-5), .string(#"s"q\"#), .token("t")])
        XCTAssertEqual(StructuredFieldSerializer.serializeInnerList(items, parameters: parameters), #"(-5 "s\"q\\" t;p=1;q);r=?0"#)
        XCTAssertEqual(try StructuredFieldParser.parseDictionary("   ").keys, [])
    }

    func testStructuredFieldParserRejectsMalformedInput() {
        let cases: [(String, String)] = [
            ("a=", "expected an item"),
            ("A=1", "expected a key"),
            ("a=1,", "must not end"),
            ("a=1 b=2", "expected \",\""),
            (#"a="open"#, "no closing quote"),
            (#"a="bad\escape""#, "may be escaped"),
            ("a=\"tab\there\"", "printable ASCII"),
            ("a=:YWJj", "no closing \":\""),
            ("a=:Y$:", "base64 characters"),
            ("a=1234567890123456", "at most 15 digits"),
            ("a=1.2345", "at most 3 fraction digits"),
            ("a=1234567890123.5", "at most 12 integer digits"),
            ("a=1.", "digit after"),
            ("a=-", "expected a digit"),
            ("a=?2", "?0 or ?1"),
            ("a=(1 2", "no closing"),
            ("a=(1,2)", "space or \")\""),
            ("a=é", "printable ASCII"),
            ("a=1;B=2", "expected a key"),
            ("a=1 ;", "expected \",\""),
            ("a=#", "expected an item"),
        ]
        for (input, expected) in cases {
            XCTAssertThrowsError(try StructuredFieldParser.parseDictionary(input), input) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(input): \(error)")
                XCTAssertTrue("\(error)".contains("at offset"), "\(input): \(error)")
            }
        }
    }
}

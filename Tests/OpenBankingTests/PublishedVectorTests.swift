import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
@testable import OpenBanking
import PKCS11
import XCTest

// MARK: - draft-cavage-http-signatures-10, Appendix C

/// The test key, request, signing strings and signatures of draft-cavage-http-signatures-10
/// Appendix C, copied as facts (the draft wraps the base64 values over several lines; here they
/// are joined). Before they were written down, each signature was reproduced with
/// `openssl dgst -sha256 -sign` over its signing string.
///
/// Where the appendix does not agree with itself or with the draft's text:
/// - it introduces the key as "RSA 2048-bit keys", but the key is 1024-bit;
/// - C.2 gives only an `Authorization` header, written `headers="…", signature="…"` with a space
///   after the comma that the draft's `Signature` syntax does not show (C.1 and C.3 have none);
/// - C.1 relies on the draft-10 default header list (`date` when `headers` is absent), which the
///   Berlin Group never uses: its `Signature` always carries `headers`.
/// The three signatures themselves match their signing strings and the key.
private enum CavageAppendixC {
    /// The appendix's private key (PKCS#1). It goes into the SoftHSM token and its file is removed at once.
    static let privateKeyPEM = """
        -----BEGIN RSA PRIVATE KEY-----
        MIICXgIBAAKBgQDCFENGw33yGihy92pDjZQhl0C36rPJj+CvfSC8+q28hxA161QF
        NUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6Z4UMR7EOcpfdUE9Hf3m/hs+F
        UR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJwoYi+1hqp1fIekaxsyQIDAQAB
        AoGBAJR8ZkCUvx5kzv+utdl7T5MnordT1TvoXXJGXK7ZZ+UuvMNUCdN2QPc4sBiA
        QWvLw1cSKt5DsKZ8UETpYPy8pPYnnDEz2dDYiaew9+xEpubyeW2oH4Zx71wqBtOK
        kqwrXa/pzdpiucRRjk6vE6YY7EBBs/g7uanVpGibOVAEsqH1AkEA7DkjVH28WDUg
        f1nqvfn2Kj6CT7nIcE3jGJsZZ7zlZmBmHFDONMLUrXR/Zm3pR5m0tCmBqa5RK95u
        412jt1dPIwJBANJT3v8pnkth48bQo/fKel6uEYyboRtA5/uHuHkZ6FQF7OUkGogc
        mSJluOdc5t6hI1VsLn0QZEjQZMEOWr+wKSMCQQCC4kXJEsHAve77oP6HtG/IiEn7
        kpyUXRNvFsDE0czpJJBvL/aRFUJxuRK91jhjC68sA7NsKMGg5OXb5I5Jj36xAkEA
        gIT7aFOYBFwGgQAQkWNKLvySgKbAZRTeLBacpHMuQdl1DfdntvAyqpAZ0lY0RKmW
        G6aFKaqQfOXKCyWoUiVknQJAXrlgySFci/2ueKlIE1QqIiLSZ8V8OlpFLRnb1pzI
        7U1yQXnTAEFYM560yJlzUpOb1V4cScGd365tiSMvxLOvTA==
        -----END RSA PRIVATE KEY-----

        """

    /// The appendix's public key, as OpenSSL writes a SubjectPublicKeyInfo.
    static let publicKeyPEM = """
        -----BEGIN PUBLIC KEY-----
        MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCFENGw33yGihy92pDjZQhl0C3
        6rPJj+CvfSC8+q28hxA161QFNUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6
        Z4UMR7EOcpfdUE9Hf3m/hs+FUR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJw
        oYi+1hqp1fIekaxsyQIDAQAB
        -----END PUBLIC KEY-----

        """

    static let body = Data(#"{"hello": "world"}"#.utf8)
    static let digest = "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="

    /// `POST /foo?param=value&pet=dog HTTP/1.1` with the appendix's headers and body.
    static var request: HTTPRequestParts {
        HTTPRequestParts(method: "POST", url: URL(string: "https://example.com/foo?param=value&pet=dog")!, headers: [
            ("Host", "example.com"),
            ("Date", "Sun, 05 Jan 2014 21:31:40 GMT"),
            ("Content-Type", "application/json"),
            ("Digest", digest),
            ("Content-Length", "18"),
        ], body: body)
    }

    struct Vector {
        var section: String
        /// The `headers` parameter; nil where the header leaves it out (the draft-10 default, `date`).
        var headers: String?
        var signingString: String
        var signature: String
        /// The header value as the appendix prints it, lines joined.
        var publishedHeader: String
    }

    static let c1 = Vector(
        section: "C.1 Default Test", headers: nil,
        signingString: "date: Sun, 05 Jan 2014 21:31:40 GMT",
        signature: "SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM=",
        publishedHeader: #"keyId="Test",algorithm="rsa-sha256",signature="SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM=""#)

    static let c2 = Vector(
        section: "C.2 Basic Test", headers: "(request-target) host date",
        signingString: """
            (request-target): post /foo?param=value&pet=dog
            host: example.com
            date: Sun, 05 Jan 2014 21:31:40 GMT
            """,
        signature: "qdx+H7PHHDZgy4y/Ahn9Tny9V3GP6YgBPyUXMmoxWtLbHpUnXS2mg2+SbrQDMCJypxBLSPQR2aAjn7ndmw2iicw3HMbe8VfEdKFYRqzic+efkb3nndiv/x1xSHDJWeSWkx3ButlYSuBskLu6kd9Fswtemr3lgdDEmn04swr2Os0=",
        publishedHeader: #"keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date", signature="qdx+H7PHHDZgy4y/Ahn9Tny9V3GP6YgBPyUXMmoxWtLbHpUnXS2mg2+SbrQDMCJypxBLSPQR2aAjn7ndmw2iicw3HMbe8VfEdKFYRqzic+efkb3nndiv/x1xSHDJWeSWkx3ButlYSuBskLu6kd9Fswtemr3lgdDEmn04swr2Os0=""#)

    static let c3 = Vector(
        section: "C.3 All Headers Test", headers: "(request-target) host date content-type digest content-length",
        signingString: """
            (request-target): post /foo?param=value&pet=dog
            host: example.com
            date: Sun, 05 Jan 2014 21:31:40 GMT
            content-type: application/json
            digest: SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=
            content-length: 18
            """,
        signature: "vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEUHFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE=",
        publishedHeader: #"keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date content-type digest content-length",signature="vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEUHFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE=""#)

    static let all = [c1, c2, c3]
}

// MARK: - RFC 9421, Appendix B.2.5

/// B.1.5 test-shared-secret and the B.2.5 example, copied as facts (RFC 8792 wrapping removed).
private enum RFC9421HMAC {
    static let created = Date(timeIntervalSince1970: 1_618_884_473)
    /// The RFC's published shared secret (64 bytes). It goes into the SoftHSM token as a
    /// sensitive generic secret and its file is removed at once.
    static let sharedSecretBase64 = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="

    /// B.2 test-request.
    static var testRequest: HTTPRequestParts {
        HTTPRequestParts(method: "POST", url: URL(string: "https://example.com/foo?param=Value&Pet=dog")!, headers: [
            ("Host", "example.com"),
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"),
            ("Content-Length", "18"),
        ], body: Data(#"{"hello": "world"}"#.utf8))
    }

    static let components: [HTTPSignatureComponent] = [.field("date"), .authority, .field("content-type")]
    static let base = """
        "date": Tue, 20 Apr 2021 02:07:55 GMT
        "@authority": example.com
        "content-type": application/json
        "@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"
        """
    static let signatureInput = #"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#
    static let signature = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"
}

// MARK: - Token objects for the tests

/// Imports a published test key into the process's SoftHSM token `keybridge` with pkcs11-tool,
/// and deletes it again at teardown: the token serves the whole test process.
private struct TokenImport {
    let token: TestToken
    let tokenLabel = "keybridge"
    /// The module and PIN source of the token's own key URIs.
    let query: String
    let environment: [String: String]
    let module: String

    init(token: TestToken) throws {
        self.token = token
        query = String(token.rsaURI.split(separator: "?", maxSplits: 1).last ?? "")
        module = query.split(separator: "&").first { $0.hasPrefix("module-path=") }
            .map { String($0.dropFirst("module-path=".count)).removingPercentEncoding ?? "" } ?? "/usr/lib/softhsm/libsofthsm2.so"
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.softHSMConfig
        // pkcs11-tool reads the PIN from this variable (--pin env:…), never from its command line.
        environment["KB_P11_PIN"] = token.userPIN
        self.environment = environment
    }

    var pkcs11Tool: [String] {
        ["pkcs11-tool", "--module", module, "--token-label", tokenLabel, "--login", "--pin", "env:KB_P11_PIN"]
    }

    func run(_ arguments: [String]) throws -> Command.Result {
        try Command.run(pkcs11Tool + arguments, environment: environment)
    }

    /// Writes `contents` to a private file, runs pkcs11-tool `--write-object` on it, removes the file.
    func write(_ contents: Data, fileName: String, arguments: [String]) throws -> Command.Result {
        let directory = try Command.temporaryDirectory()
        let path = directory + "/" + fileName
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: contents, attributes: [.posixPermissions: 0o600]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try run(["--write-object", path] + arguments)
    }

    /// The block of `pkcs11-tool --list-objects` output for the object with this label.
    func listing(type: String, label: String) throws -> [String]? {
        let result = try run(["--list-objects", "--type", type])
        XCTAssertEqual(result.status, 0, result.combined)
        var blocks: [[String]] = []
        for line in result.standardOutput.split(separator: "\n").map(String.init) {
            if line.first?.isWhitespace == false { blocks.append([line]) } else if !blocks.isEmpty { blocks[blocks.count - 1].append(line) }
        }
        return blocks.first { block in block.contains { TokenImport.field("label", of: $0) == label } }
    }

    /// The value of a `name: value` line of a listing, trimmed; nil for other lines.
    static func field(_ name: String, of line: String) -> String? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix(name + ":") else { return nil }
        return trimmed.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
    }

    /// The comma-separated flags of a listing's `Access:` line.
    static func access(_ block: [String]) -> [String] {
        let value = block.lazy.compactMap { field("Access", of: $0) }.first ?? ""
        return value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    func uri(object: String, type: String) -> String {
        "pkcs11:token=\(tokenLabel);object=\(object);type=\(type)?" + query
    }
}

/// Verifies an RSA PKCS#1 v1.5 SHA-256 signature with the `openssl` command line.
private func opensslVerifiesRSASHA256(_ message: String, signature: [UInt8], publicKeyPEM: String) throws -> Bool {
    let directory = try Command.temporaryDirectory()
    let key = directory + "/public.pem", input = directory + "/message", signatureFile = directory + "/signature"
    try publicKeyPEM.write(toFile: key, atomically: true, encoding: .utf8)
    try Data(message.utf8).write(to: URL(fileURLWithPath: input))
    try Data(signature).write(to: URL(fileURLWithPath: signatureFile))
    let result = try Command.run(["openssl", "dgst", "-sha256", "-verify", key, "-signature", signatureFile, input])
    return result.status == 0 && result.standardOutput.contains("Verified OK")
}

/// HMAC-SHA256 with the `openssl` command line, from the RFC's published secret.
private func opensslHMACSHA256(_ message: String, secret: [UInt8]) throws -> [UInt8] {
    let directory = try Command.temporaryDirectory()
    let input = directory + "/message", output = directory + "/mac"
    try Data(message.utf8).write(to: URL(fileURLWithPath: input))
    let hexKey = secret.map { String(format: "%02x", $0) }.joined()
    let result = try Command.run(["openssl", "mac", "-digest", "SHA256", "-macopt", "hexkey:" + hexKey, "-binary",
                                  "-in", input, "-out", output, "HMAC"])
    XCTAssertEqual(result.status, 0, result.combined)
    return Array(try Data(contentsOf: URL(fileURLWithPath: output)))
}

// MARK: - Tests

final class PublishedVectorTests: XCTestCase {
    let token = TestToken.shared

    // MARK: draft-cavage-http-signatures-10 Appendix C

    /// The appendix's 1024-bit RSA key inside the SoftHSM token (sensitive, not extractable) must
    /// reproduce the C.1, C.2 and C.3 signatures byte for byte; RSASSA-PKCS1-v1_5 is deterministic.
    func testCavageAppendixCSignaturesMadeOnTheTokenMatchThePublishedValues() throws {
        let tokenImport = try TokenImport(token: token)
        let label = "cavage-test", id = "cc01"
        // pkcs11-tool reads PKCS#1 PEM as it is; it writes only the private key object.
        let written = try tokenImport.write(Data(CavageAppendixC.privateKeyPEM.utf8), fileName: "cavage.pem",
                                            arguments: ["--type", "privkey", "--id", id, "--label", label, "--sensitive"])
        XCTAssertEqual(written.status, 0, written.combined)
        addTeardownBlock {
            let deleted = try? tokenImport.run(["--delete-object", "--type", "privkey", "--id", id])
            XCTAssertEqual(deleted?.status, 0, deleted?.combined ?? "pkcs11-tool did not run")
            XCTAssertNil(try? tokenImport.listing(type: "privkey", label: label), "the test key must be gone from the shared token")
        }

        let imported = try XCTUnwrap(try tokenImport.listing(type: "privkey", label: label), "the imported key is not listed")
        XCTAssertEqual(imported.first?.trimmingCharacters(in: .whitespaces), "Private Key Object; RSA")
        XCTAssertTrue(TokenImport.access(imported).contains("sensitive"), "\(imported)")
        XCTAssertFalse(TokenImport.access(imported).contains("extractable"), "\(imported)")

        let key = try ProviderKey(uri: tokenImport.uri(object: label, type: "private"))
        XCTAssertEqual(key.algorithm, "RSA")
        XCTAssertEqual(key.bits, 1024, "the appendix calls it a 2048-bit key; it is 1024-bit")
        XCTAssertEqual(try key.publicKeyPEM(), CavageAppendixC.publicKeyPEM, "the token key must be the appendix's")

        let verifier = try PublicKeyVerifier(pem: CavageAppendixC.publicKeyPEM)
        for vector in CavageAppendixC.all {
            let signature = try key.sign(Array(vector.signingString.utf8), scheme: .rsaPKCS1(.sha256))
            XCTAssertEqual(Data(signature).base64EncodedString(), vector.signature, vector.section)
            XCTAssertEqual(signature, Array(try XCTUnwrap(Data(base64Encoded: vector.signature))), vector.section)
            // The published header carries the same bytes.
            XCTAssertTrue(vector.publishedHeader.contains("signature=\"\(vector.signature)\""), vector.section)
            // Another implementation agrees, and a one-character change fails there (the control).
            XCTAssertTrue(try opensslVerifiesRSASHA256(vector.signingString, signature: signature, publicKeyPEM: CavageAppendixC.publicKeyPEM), vector.section)
            XCTAssertFalse(try opensslVerifiesRSASHA256(vector.signingString.replacingOccurrences(of: "21:31:40", with: "21:31:41"),
                                                        signature: signature, publicKeyPEM: CavageAppendixC.publicKeyPEM), vector.section)
            XCTAssertTrue(verifier.verify(signature, over: Array(vector.signingString.utf8), scheme: .rsaPKCS1(.sha256)), vector.section)
        }
        // Control: the token does not return the published value for another string.
        let other = try key.sign(Array((CavageAppendixC.c1.signingString + " ").utf8), scheme: .rsaPKCS1(.sha256))
        XCTAssertNotEqual(Data(other).base64EncodedString(), CavageAppendixC.c1.signature)
    }

    /// The Berlin Group signer's signing string, built from the appendix's request, is the
    /// appendix's signing string byte for byte, for each header list.
    func testCavageAppendixCSigningStringsFromTheRequest() throws {
        for vector in CavageAppendixC.all {
            // draft-10 §2.1.3: without a headers parameter, only date is signed.
            let names = (vector.headers ?? "date").split(separator: " ").map(String.init)
            let built = try BerlinGroupSigner.signingString(for: CavageAppendixC.request, signedHeaders: names)
            XCTAssertEqual(Array(built.utf8), Array(vector.signingString.utf8), vector.section)
        }
        XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: CavageAppendixC.request.body), CavageAppendixC.digest,
                       "the appendix request's Digest is its body's")
        // The published headers parse, the C.2 space after a comma included, and name what was signed.
        for vector in [CavageAppendixC.c2, CavageAppendixC.c3] {
            let parsed = try BerlinGroupSignatureHeader(parsing: vector.publishedHeader)
            XCTAssertEqual(parsed.keyId, "Test")
            XCTAssertEqual(parsed.algorithm, "rsa-sha256")
            XCTAssertEqual(parsed.headers.joined(separator: " "), vector.headers)
            XCTAssertEqual(Data(parsed.signature).base64EncodedString(), vector.signature, vector.section)
        }
        // Control: a request with another date gives another string.
        var changed = CavageAppendixC.request
        changed.headers[1].value = "Sun, 05 Jan 2014 21:31:41 GMT"
        XCTAssertNotEqual(try BerlinGroupSigner.signingString(for: changed, signedHeaders: ["date"]), CavageAppendixC.c1.signingString)
    }

    // MARK: RFC 9421 B.2.5 (hmac-sha256)

    /// HMAC is deterministic: with the RFC's shared secret inside the token as a sensitive
    /// generic secret, the MAC signer must reproduce the RFC's headers byte for byte, and the MAC
    /// verifier (computing through the token too) must accept the RFC's own headers.
    func testRFC9421B25HMACMadeOnTheTokenMatchesTheRFC() throws {
        let tokenImport = try TokenImport(token: token)
        let label = "rfc9421-hmac", id = "9b25"
        let secret = try XCTUnwrap(Data(base64Encoded: RFC9421HMAC.sharedSecretBase64))
        XCTAssertEqual(secret.count, 64)
        // No --key-type: pkcs11-tool 0.23 writes secret keys as CKK_GENERIC_SECRET by default and
        // rejects GENERIC:64 in --write-object. SoftHSM's CKM_SHA256_HMAC takes a generic secret.
        let written = try tokenImport.write(secret, fileName: "secret.bin",
                                            arguments: ["--type", "secrkey", "--id", id, "--label", label, "--usage-sign", "--sensitive"])
        XCTAssertEqual(written.status, 0, written.combined)
        addTeardownBlock {
            let deleted = try? tokenImport.run(["--delete-object", "--type", "secrkey", "--id", id])
            XCTAssertEqual(deleted?.status, 0, deleted?.combined ?? "pkcs11-tool did not run")
            XCTAssertNil(try? tokenImport.listing(type: "secrkey", label: label), "the test secret must be gone from the shared token")
        }

        let imported = try XCTUnwrap(try tokenImport.listing(type: "secrkey", label: label), "the imported secret is not listed")
        XCTAssertEqual(imported.first, "Secret Key Object; Generic secret length 64")
        XCTAssertTrue(TokenImport.access(imported).contains("sensitive"), "\(imported)")
        XCTAssertFalse(TokenImport.access(imported).contains("extractable"), "\(imported)")
        // The token will not hand the value out; the same command reads a value that is readable
        // (the control: a certificate object of softhsm-setup).
        XCTAssertNotEqual(try tokenImport.run(["--read-object", "--type", "secrkey", "--id", id]).status, 0)
        XCTAssertEqual(try tokenImport.run(["--read-object", "--type", "cert", "--id", "01"]).status, 0)

        let key = try TokenHMACKey(uri: tokenImport.uri(object: label, type: "secret-key"))
        XCTAssertEqual(key.secretKey.keyType, .genericSecret)
        XCTAssertEqual(key.secretKey.label, label)
        XCTAssertEqual(key.hash, .sha256)

        // Another implementation, from the published secret, agrees with the RFC.
        let independent = try opensslHMACSHA256(RFC9421HMAC.base, secret: Array(secret))
        XCTAssertEqual("sig-b25=:" + Data(independent).base64EncodedString() + ":", RFC9421HMAC.signature)

        let signer = try HTTPMessageMACSigner(key: key, keyID: "test-shared-secret", components: RFC9421HMAC.components, label: "sig-b25")
        var request = RFC9421HMAC.testRequest
        let signature = try signer.sign(&request, created: RFC9421HMAC.created)
        XCTAssertEqual(Array(signature.signatureBase.utf8), Array(RFC9421HMAC.base.utf8))
        XCTAssertEqual(signature.signature, independent)
        XCTAssertEqual(request.header("Signature-Input"), RFC9421HMAC.signatureInput)
        XCTAssertEqual(request.header("Signature"), RFC9421HMAC.signature)
        XCTAssertEqual(request.header("Signature"), "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:")

        // The RFC's headers verify with the token key; changes to the request or the parameters do not.
        let published = RFC9421HMAC.testRequest.adding([("Signature-Input", RFC9421HMAC.signatureInput), ("Signature", RFC9421HMAC.signature)])
        let now = RFC9421HMAC.created.addingTimeInterval(5)
        var verifier = try HTTPMessageMACVerifier(key: key)
        verifier.expectedKeyID = "test-shared-secret"
        let verified = try verifier.verify(published, now: now)
        XCTAssertEqual(verified.label, "sig-b25")
        XCTAssertEqual(verified.components, RFC9421HMAC.components)
        XCTAssertEqual(Array(verified.signatureBase.utf8), Array(RFC9421HMAC.base.utf8))
        XCTAssertEqual(try verifier.verify(request, now: now).label, "sig-b25", "our own headers verify too")
        assertThrowsCode(.signatureInvalid, try verifier.verify(published.replacing("Content-Type", with: "application/json; charset=utf-8"), now: now))
        assertThrowsCode(.signatureInvalid, try verifier.verify(published.replacing("Signature-Input", with: RFC9421HMAC.signatureInput
            .replacingOccurrences(of: "created=1618884473", with: "created=1618884474")), now: now))
        assertThrowsCode(.signatureInvalid, try verifier.verify(published.replacing("Signature", with: "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIG:"), now: now),
                         "the MAC's first 24 bytes")
        assertThrowsCode(.algorithmMismatch, try verifier.verify(published.replacing("Signature-Input", with: RFC9421HMAC.signatureInput + #";alg="ed25519""#), now: now))
        assertThrowsCode(.createdInFuture, try verifier.verify(published, now: RFC9421HMAC.created.addingTimeInterval(-3600)))

        // alg, when asked for, is hmac-sha256, and the MAC still verifies.
        let withAlg = try HTTPMessageMACSigner(key: key, keyID: "test-shared-secret", components: RFC9421HMAC.components,
                                              label: "sig-b25", includesAlgorithm: true)
        var algRequest = RFC9421HMAC.testRequest
        try withAlg.sign(&algRequest, created: RFC9421HMAC.created)
        XCTAssertEqual(algRequest.header("Signature-Input"), RFC9421HMAC.signatureInput + #";alg="hmac-sha256""#)
        XCTAssertEqual(try verifier.verify(algRequest, now: now).parameters.algorithm, "hmac-sha256")
    }

    /// The secret-key API refuses what it cannot do, before any request is signed.
    func testSecretKeyLookupAndMACAlgorithmChecks() throws {
        let tokenImport = try TokenImport(token: token)
        // A private key is not a secret key, by type= and by class.
        XCTAssertThrowsError(try SecretKey.resolve(PKCS11URI(parsing: token.rsaURI))) { error in
            XCTAssertTrue("\(error)".contains("type=private"), "\(error)")
        }
        XCTAssertThrowsError(try SecretKey.resolve(PKCS11URI(parsing: tokenImport.uri(object: "client-rsa", type: "secret-key")))) { error in
            XCTAssertTrue("\(error)".contains("no secret key matches"), "\(error)")
        }
        XCTAssertThrowsError(try TokenHMACKey(uri: tokenImport.uri(object: "no-such-secret", type: "secret-key")))

        XCTAssertEqual(HTTPMACAlgorithm(name: "hmac-sha256"), .hmacSHA256)
        XCTAssertNil(HTTPMACAlgorithm(name: "ed25519"))
        XCTAssertNil(HTTPSignatureAlgorithm(name: "hmac-sha256"), "the asymmetric registry stays asymmetric")
        XCTAssertEqual(SignatureMechanism.hmac(.sha256).mechanismType, MechanismType.sha256HMAC)
        XCTAssertEqual(SignatureMechanism.hmac(.sha256).description, "CKM_SHA256_HMAC")

        let sha512Key = FixedMACKey(hash: .sha512)
        assertThrowsCode(.algorithmMismatch, try HTTPMessageMACSigner(key: sha512Key, keyID: nil, components: [.method]))
        assertThrowsCode(.algorithmMismatch, try HTTPMessageMACVerifier(key: sha512Key))
        assertThrowsCode(.invalidConfiguration, try HTTPMessageMACSigner(key: FixedMACKey(hash: .sha256), keyID: nil, components: [.method], label: "Sig"))
        assertThrowsCode(.duplicateComponent, try HTTPMessageMACSigner(key: FixedMACKey(hash: .sha256), keyID: nil, components: [.method, .method]))
        assertThrowsCode(.signingFailed, try HTTPMessageMACSigner(key: FixedMACKey(hash: .sha256, length: 20), keyID: nil, components: [.method])
            .signature(for: RFC9421HMAC.testRequest), "a MAC of the wrong length")
    }

    // MARK: Berlin Group worked example

    func testBerlinGroupDigestWorkedExample() {
        XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: Data(#"{"hello": "world"}"#.utf8)),
                       "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=")
        XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: Data()), "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        // Control: the raw body is hashed, so one more byte changes the value.
        XCTAssertNotEqual(BerlinGroupSigner.digestHeaderValue(for: Data(#"{"hello": "world"}"#.utf8 + [0x0A])),
                          "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=")
    }

    private func assertThrowsCode<T>(_ code: HTTPMessageSignatureError.Code, _ expression: @autoclosure () throws -> T,
                                     _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), message, file: file, line: line) { error in
            XCTAssertEqual((error as? HTTPMessageSignatureError)?.code, code, "\(message) — \(error)", file: file, line: line)
        }
    }
}

/// Returns a fixed MAC of the given length, for configuration checks without a token.
private struct FixedMACKey: HMACSigningKey {
    let hash: HashAlgorithm
    var length: Int?
    func authenticationCode(for message: [UInt8]) throws -> [UInt8] { [UInt8](repeating: 0, count: length ?? hash.length) }
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
}

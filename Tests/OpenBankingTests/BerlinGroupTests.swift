import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import OpenBanking
import XCTest

final class BerlinGroupTests: XCTestCase {
    private var token: TestToken { TestToken.shared }

    // MARK: Known answers, no key

    /// SHA-256 and SHA-512 of `{"a":1}` and of the empty body, hard-coded (checked by hand
    /// with `openssl dgst -binary | base64`) and recomputed by the openssl command here.
    func testDigestKnownAnswers() throws {
        let json = Data(#"{"a":1}"#.utf8)
        XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: json), "SHA-256=AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI=")
        XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: json, algorithm: .sha512),
                       "SHA-512=77eoKY+QWudD2+IVLhYkFfYqFtLVrFx4gW3NVxFOeldHKbgTmI8dCYTPbzjE/Mmjfqn+w9o1GYNTb3J4XXq3Bw==")
        XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: Data()), "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: Data(), algorithm: .sha512),
                       "SHA-512=z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==")
        for (body, hash) in [(json, "sha256"), (json, "sha512"), (Data(), "sha256"), (Data(), "sha512")] {
            let expected = try opensslDigest(body, hash: hash)
            let label = hash == "sha256" ? "SHA-256=" : "SHA-512="
            XCTAssertEqual(BerlinGroupSigner.digestHeaderValue(for: body, algorithm: hash == "sha256" ? .sha256 : .sha512), label + expected)
        }
    }

    func testDateIsIMFFixdateInGMT() {
        XCTAssertEqual(BerlinGroupSigner.httpDate(Date(timeIntervalSince1970: 784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(BerlinGroupSigner.httpDate(Date(timeIntervalSince1970: 784_111_777.9)), "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(BerlinGroupSigner.httpDate(Date(timeIntervalSince1970: 0)), "Thu, 01 Jan 1970 00:00:00 GMT")
        XCTAssertEqual(BerlinGroupSigner.httpDate(Date(timeIntervalSince1970: 1_709_164_800)), "Thu, 29 Feb 2024 00:00:00 GMT")
    }

    func testSigningStringOfAFixedRequest() throws {
        let request = HTTPRequestParts(
            method: "post", url: try XCTUnwrap(URL(string: "https://api.bank.example/v1/payments/sepa-credit-transfers?x=y")),
            headers: [("Content-Type", "application/json"),
                      ("X-Request-ID", "99391c7e-ad88-49ec-a2ad-99ddcb1f7721"),
                      ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                      ("Digest", "SHA-256=AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI="),
                      ("psu-id", " \tPSU-1234  "),
                      ("TPP-Redirect-URI", "https://tpp.example/cb?state=1")],
            body: Data(#"{"a":1}"#.utf8))
        let text = try BerlinGroupSigner.signingString(
            for: request, signedHeaders: ["(request-target)", "digest", "x-request-id", "date", "psu-id", "tpp-redirect-uri"])
        XCTAssertEqual(text, """
            (request-target): post /v1/payments/sepa-credit-transfers?x=y
            digest: SHA-256=AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI=
            x-request-id: 99391c7e-ad88-49ec-a2ad-99ddcb1f7721
            date: Sun, 06 Nov 1994 08:49:37 GMT
            psu-id: PSU-1234
            tpp-redirect-uri: https://tpp.example/cb?state=1
            """)
        XCTAssertFalse(text.hasSuffix("\n"))
        // A header given twice is one line with both values.
        var twice = request
        twice.headers.append(("PSU-ID", "second"))
        XCTAssertEqual(try BerlinGroupSigner.signingString(for: twice, signedHeaders: ["psu-id"]), "psu-id: PSU-1234, second")
        XCTAssertThrowsError(try BerlinGroupSigner.signingString(for: request, signedHeaders: ["psu-corporate-id"])) {
            XCTAssertEqual(($0 as? OpenBankingError)?.reason, "header psu-corporate-id is signed but missing")
        }
    }

    /// Every keyId form, on certificates made here with serials 0x0A1B2C (a leading zero digit)
    /// and 0x8F00FF (top bit set, so DER adds a 00 byte) and an issuer with a comma, spaces
    /// and a non-ASCII letter.
    func testKeyIdForEveryProfileVariant() throws {
        let zero = try makeCertificate(serial: "0x0A1B2C", subject: "/C=DE/O=Test Bank, Ltd/CN=Test CA Ü")
        let high = try makeCertificate(serial: "0x8F00FF", subject: "/C=DE/CN=High CA")
        let escaped = #"CN=Test CA \C3\9C,O=Test Bank\, Ltd,C=DE"#
        XCTAssertEqual(try BerlinGroupProfile.default.keyId(forCertificateDER: zero), "SN=A1B2C,CA=" + escaped)
        XCTAssertEqual(try BerlinGroupProfile(serialCase: .lower).keyId(forCertificateDER: zero), "SN=a1b2c,CA=" + escaped)
        XCTAssertEqual(try BerlinGroupProfile(serialDigits: .wholeBytes).keyId(forCertificateDER: zero), "SN=0A1B2C,CA=" + escaped)
        XCTAssertEqual(try BerlinGroupProfile(serialDigits: .derContent).keyId(forCertificateDER: zero), "SN=0A1B2C,CA=" + escaped)
        XCTAssertEqual(try BerlinGroupProfile(issuerLabel: .dn).keyId(forCertificateDER: zero), "SN=A1B2C,DN=" + escaped)
        XCTAssertEqual(try BerlinGroupProfile(issuerLabel: .omitted).keyId(forCertificateDER: zero), "SN=A1B2C")
        XCTAssertEqual(try BerlinGroupProfile(percentEncodesIssuer: true).keyId(forCertificateDER: zero),
                       "SN=A1B2C,CA=CN=Test%20CA%20%C3%9C,O=Test%20Bank%5C,%20Ltd,C=DE")
        XCTAssertEqual(try BerlinGroupProfile(serialCase: .lower, serialDigits: .wholeBytes, issuerLabel: .dn, percentEncodesIssuer: true)
            .keyId(forCertificateDER: zero), "SN=0a1b2c,DN=CN=Test%20CA%20%C3%9C,O=Test%20Bank%5C,%20Ltd,C=DE")

        XCTAssertEqual(try BerlinGroupProfile.default.keyId(forCertificateDER: high), "SN=8F00FF,CA=CN=High CA,C=DE")
        XCTAssertEqual(try BerlinGroupProfile(serialDigits: .wholeBytes).keyId(forCertificateDER: high), "SN=8F00FF,CA=CN=High CA,C=DE")
        XCTAssertEqual(try BerlinGroupProfile(serialCase: .lower, serialDigits: .derContent).keyId(forCertificateDER: high),
                       "SN=008f00ff,CA=CN=High CA,C=DE")

        // The token's certificate: the serial as the openssl command prints it, the issuer in RFC 2253 order.
        let printed = try Command.run(["openssl", "x509", "-in", token.pki("client-rsa.pem"), "-noout", "-serial"])
        let serial = printed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
        XCTAssertFalse(serial.isEmpty)
        XCTAssertEqual(try BerlinGroupProfile(serialDigits: .wholeBytes).keyId(forCertificateDER: certificateDER("client-rsa.pem")),
                       "SN=\(serial),CA=CN=KeyBridge Test QTSP CA,O=KeyBridge Test QTSP,C=DE")
    }

    /// A quote in the issuer would end the quoted keyId early: refused unless percent-encoded.
    func testIssuerWithAQuoteNeedsPercentEncoding() throws {
        let quoted = try makeCertificate(serial: "0x01", subject: #"/CN=Quote "Q" CA"#)
        XCTAssertThrowsError(try BerlinGroupProfile.default.keyId(forCertificateDER: quoted)) {
            XCTAssertTrue("\($0)".contains("double quote"), "\($0)")
        }
        XCTAssertEqual(try BerlinGroupProfile(percentEncodesIssuer: true).keyId(forCertificateDER: quoted), "SN=1,CA=CN=Quote%20%5C%22Q%5C%22%20CA")
    }

    func testProfileJSONTakesDefaultsForMissingKeysAndRoundTrips() throws {
        let decoder = JSONDecoder()
        XCTAssertEqual(try decoder.decode(BerlinGroupProfile.self, from: Data("{}".utf8)), .default)
        let bank = try decoder.decode(BerlinGroupProfile.self, from: Data("""
            {"digest": "SHA-512", "serialCase": "lower", "serialDigits": "derContent", "issuerLabel": "DN",
             "percentEncodesIssuer": true, "signsRequestTarget": true, "extraHeaders": ["psu-ip-address"],
             "extraHeadersIfPresent": ["content-type"], "algorithmLabel": "SHA512withRSA"}
            """.utf8))
        XCTAssertEqual(bank, BerlinGroupProfile(digest: .sha512, serialCase: .lower, serialDigits: .derContent, issuerLabel: .dn,
                                                percentEncodesIssuer: true, signsRequestTarget: true, extraHeaders: ["psu-ip-address"],
                                                extraHeadersIfPresent: ["content-type"], algorithmLabel: "SHA512withRSA"))
        XCTAssertEqual(try decoder.decode(BerlinGroupProfile.self, from: JSONEncoder().encode(bank)), bank)
        XCTAssertEqual(try decoder.decode(BerlinGroupProfile.self, from: Data(#"{"issuerLabel": "none"}"#.utf8)).issuerLabel, .omitted)
        XCTAssertThrowsError(try decoder.decode(BerlinGroupProfile.self, from: Data(#"{"digest": "MD5"}"#.utf8)))
    }

    // MARK: Token keys, checked by the verifier and by the openssl command

    func testRSATokenSignaturesVerify() throws {
        try checkTokenSignatures(uri: token.rsaURI, certificate: "client-rsa.pem", profile: .default, algorithm: "rsa-sha256", hash: "sha256")
    }

    func testECTokenSignaturesVerify() throws {
        try checkTokenSignatures(uri: token.ecURI, certificate: "client-ec.pem", profile: .default, algorithm: "ecdsa-sha256", hash: "sha256")
    }

    /// SHA-512 everywhere, `(request-target)` first and an extra header, in another keyId form.
    func testSHA512ProfileWithRequestTargetAndExtraHeaders() throws {
        let profile = BerlinGroupProfile(digest: .sha512, serialCase: .lower, serialDigits: .derContent, issuerLabel: .dn,
                                         percentEncodesIssuer: true, signsRequestTarget: true, extraHeadersIfPresent: ["content-type"])
        try checkTokenSignatures(uri: token.rsaURI, certificate: "client-rsa.pem", profile: profile, algorithm: "rsa-sha512", hash: "sha512",
                                 expectedHeaders: "(request-target) digest x-request-id date psu-id content-type")
        try checkTokenSignatures(uri: token.ecURI, certificate: "client-ec.pem", profile: profile, algorithm: "ecdsa-sha512", hash: "sha512",
                                 expectedHeaders: "(request-target) digest x-request-id date psu-id content-type")
    }

    /// The exact headers the signer adds for a fixed request and clock, and the exact text it signs.
    func testSignerAddsExactHeadersForAFixedRequest() throws {
        let der = try certificateDER("client-rsa.pem")
        let signer = try BerlinGroupSigner(key: ProviderKey(uri: token.rsaURI), certificateDER: der)
        let request = HTTPRequestParts(method: "POST", url: try XCTUnwrap(URL(string: "https://api.bank.example/v1/payments/sepa-credit-transfers")),
                                       headers: [("X-Request-ID", " 99391c7e-ad88-49ec-a2ad-99ddcb1f7721 "), ("TPP-Redirect-URI", "https://tpp.example/cb")],
                                       body: Data(#"{"a":1}"#.utf8))
        let added = try signer.headers(for: request, now: Date(timeIntervalSince1970: 784_111_777))
        XCTAssertEqual(added.map(\.name), ["Digest", "Date", "TPP-Signature-Certificate", "Signature"])
        XCTAssertEqual(added[0].value, "SHA-256=AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI=")
        XCTAssertEqual(added[1].value, "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(added[2].value, Data(der).base64EncodedString())
        XCTAssertFalse(added[2].value.contains("\n"))
        let serial = try BerlinGroupKeyID(parsing: signer.keyId).serialNumber
        XCTAssertTrue(added[3].value.hasPrefix(
            #"keyId="SN=\#(serial),CA=CN=KeyBridge Test QTSP CA,O=KeyBridge Test QTSP,C=DE",algorithm="rsa-sha256",headers="digest x-request-id date tpp-redirect-uri",signature=""#),
            added[3].value)
        XCTAssertFalse(serial.hasPrefix("0"))
        XCTAssertEqual(serial, serial.uppercased())
        let rebuilt = try independentSigningString(request: request, added: added)
        XCTAssertEqual(rebuilt.text, """
            digest: SHA-256=AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI=
            x-request-id: 99391c7e-ad88-49ec-a2ad-99ddcb1f7721
            date: Sun, 06 Nov 1994 08:49:37 GMT
            tpp-redirect-uri: https://tpp.example/cb
            """)
        XCTAssertTrue(try opensslVerifies(rebuilt.text, signature: rebuilt.signature, certificate: "client-rsa.pem", hash: "sha256"))

        // Without an X-Request-ID the signer makes a lower-case UUID.
        let fresh = try signer.headers(for: HTTPRequestParts(method: "GET", url: try XCTUnwrap(URL(string: "https://api.bank.example/v1/accounts"))))
        XCTAssertEqual(fresh.map(\.name), ["Digest", "X-Request-ID", "Date", "TPP-Signature-Certificate", "Signature"])
        let requestID = fresh[1].value
        XCTAssertNotNil(UUID(uuidString: requestID))
        XCTAssertEqual(requestID, requestID.lowercased())
        XCTAssertEqual(fresh[0].value, "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    }

    /// keyIds in every form verify: the serial is compared as a number, and the issuer is found.
    func testVerifierAcceptsEveryKeyIdForm() throws {
        let key = try ProviderKey(uri: token.ecURI)
        let der = try certificateDER("client-ec.pem")
        let profiles = [BerlinGroupProfile.default, BerlinGroupProfile(serialCase: .lower, serialDigits: .derContent),
                        BerlinGroupProfile(serialDigits: .wholeBytes, issuerLabel: .dn, percentEncodesIssuer: true),
                        BerlinGroupProfile(issuerLabel: .omitted)]
        for profile in profiles {
            let request = try signed(postRequest(), with: BerlinGroupSigner(key: key, certificateDER: der, profile: profile))
            let result = try BerlinGroupVerifier().verify(request)
            XCTAssertEqual(result.issuerMatchesCertificate, profile.issuerLabel == .omitted ? nil : true, "\(profile)")
            XCTAssertEqual(result.certificateDER, der)
        }
        // An algorithm label override is written and accepted by a verifier with the same profile.
        let labelled = BerlinGroupProfile(algorithmLabel: "SHA256withECDSA")
        let request = try signed(postRequest(), with: BerlinGroupSigner(key: key, certificateDER: der, profile: labelled))
        XCTAssertEqual(try BerlinGroupVerifier(profile: labelled).verify(request).signature.algorithm, "SHA256withECDSA")
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(request)) { XCTAssertTrue("\($0)".contains("unknown signature algorithm"), "\($0)") }
    }

    func testVerifierChecksDateAndExpectedCertificate() throws {
        let der = try certificateDER("client-rsa.pem")
        let signer = try BerlinGroupSigner(key: ProviderKey(uri: token.rsaURI), certificateDER: der)
        let now = Date()
        let request = try signed(postRequest(), with: signer, now: now)
        let strict = try BerlinGroupVerifier(maximumClockSkew: 300)
        XCTAssertNoThrow(try strict.verify(request, now: now.addingTimeInterval(60)))
        XCTAssertThrowsError(try strict.verify(request, now: now.addingTimeInterval(3600))) {
            XCTAssertTrue("\($0)".contains("seconds away"), "\($0)")
        }

        // Without TPP-Signature-Certificate, the expected certificate verifies; with none, a clear error.
        var bare = request
        bare.headers.removeAll { $0.name == "TPP-Signature-Certificate" }
        XCTAssertNoThrow(try BerlinGroupVerifier(expectedCertificateDER: der).verify(bare))
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(bare)) {
            XCTAssertTrue("\($0)".contains("no TPP-Signature-Certificate"), "\($0)")
        }
    }

    // MARK: Bad input

    func testMissingHeaderTheProfileRequires() throws {
        let signer = try BerlinGroupSigner(key: ProviderKey(uri: token.rsaURI), certificateDER: certificateDER("client-rsa.pem"),
                                           profile: BerlinGroupProfile(extraHeaders: ["PSU-ID"]))
        let url = try XCTUnwrap(URL(string: "https://api.bank.example/v1/accounts"))
        XCTAssertThrowsError(try signer.headers(for: HTTPRequestParts(method: "GET", url: url))) {
            XCTAssertEqual(($0 as? OpenBankingError)?.reason,
                           "the Berlin Group profile signs header psu-id, but the request has none; add it or remove it from extraHeaders")
        }
        // Control: with the header the same signer signs it.
        let added = try signer.headers(for: HTTPRequestParts(method: "GET", url: url, headers: [("PSU-ID", "PSU-1")]))
        XCTAssertTrue(try XCTUnwrap(added.last).value.contains(#"headers="digest x-request-id date psu-id""#))

        // A verifier with that profile refuses a signature that leaves it out.
        let plain = try signed(postRequest(psuID: nil), with: BerlinGroupSigner(key: ProviderKey(uri: token.rsaURI), certificateDER: certificateDER("client-rsa.pem")))
        XCTAssertThrowsError(try BerlinGroupVerifier(profile: BerlinGroupProfile(extraHeaders: ["psu-id"])).verify(plain)) {
            XCTAssertTrue("\($0)".contains("does not cover psu-id"), "\($0)")
        }
    }

    func testLineBreaksInHeadersAreRefused() throws {
        let signer = try BerlinGroupSigner(key: ProviderKey(uri: token.rsaURI), certificateDER: certificateDER("client-rsa.pem"))
        let url = try XCTUnwrap(URL(string: "https://api.bank.example/v1/accounts"))
        for (name, value) in [("PSU-ID", "PSU-1\r\nX-Evil: 1"), ("X-Request-ID", "abc\n"), ("Date", "\rSun, 06 Nov 1994 08:49:37 GMT")] {
            XCTAssertThrowsError(try signer.headers(for: HTTPRequestParts(method: "GET", url: url, headers: [(name, value)])), name) {
                XCTAssertTrue("\($0)".contains("line break"), "\($0)")
            }
        }
        // Control: the same headers without the line break sign.
        XCTAssertNoThrow(try signer.headers(for: HTTPRequestParts(method: "GET", url: url, headers: [("PSU-ID", "PSU-1")])))
    }

    func testSignerRefusesConflictingHeadersAndBadProfiles() throws {
        let key = try ProviderKey(uri: token.rsaURI)
        let der = try certificateDER("client-rsa.pem")
        let signer = try BerlinGroupSigner(key: key, certificateDER: der)
        let url = try XCTUnwrap(URL(string: "https://api.bank.example/v1/payments"))
        let body = Data(#"{"a":1}"#.utf8)
        XCTAssertThrowsError(try signer.headers(for: HTTPRequestParts(method: "POST", url: url, headers: [("Digest", "SHA-256=AAAA")], body: body))) {
            XCTAssertTrue("\($0)".contains("Digest header that is not the body's"), "\($0)")
        }
        // A Digest that is already right is kept, not written twice.
        let kept = try signer.headers(for: HTTPRequestParts(method: "POST", url: url, headers: [("digest", BerlinGroupSigner.digestHeaderValue(for: body))], body: body))
        XCTAssertFalse(kept.contains { $0.name == "Digest" })
        let once = try signed(HTTPRequestParts(method: "POST", url: url, body: body), with: signer)
        XCTAssertThrowsError(try signer.headers(for: once)) { XCTAssertTrue("\($0)".contains("already has a Signature"), "\($0)") }

        for profile in [BerlinGroupProfile(extraHeaders: ["(request-target)"]), BerlinGroupProfile(extraHeaders: ["psu id"]),
                        BerlinGroupProfile(extraHeadersIfPresent: ["Signature"]), BerlinGroupProfile(algorithmLabel: #"rsa"sha256"#)] {
            XCTAssertThrowsError(try BerlinGroupSigner(key: key, certificateDER: der, profile: profile), "\(profile)")
        }
    }

    func testMalformedSignatureHeaders() throws {
        let good = #"keyId="SN=1,CA=CN=X",algorithm="rsa-sha256",headers="digest x-request-id date",signature="AAEC""#
        XCTAssertNoThrow(try BerlinGroupSignatureHeader(parsing: good))
        // Any order, spaces and tabs around '=' and ',', unknown parameters skipped.
        let loose = try BerlinGroupSignatureHeader(parsing: " signature = \"AAEC\" ,\theaders=\"Digest  X-Request-ID date\", created=\"1\",algorithm=\"rsa-sha256\" , keyId=\"SN=1,CA=CN=X\" ")
        XCTAssertEqual(loose, try BerlinGroupSignatureHeader(parsing: good))
        XCTAssertEqual(loose.signature, [0, 1, 2])

        let cases: [(String, String)] = [
            (#"keyId=SN=1,algorithm="rsa-sha256",headers="date",signature="AAEC""#, "keyId parameter is not a quoted string"),
            (#"keyId="SN=1,algorithm="rsa-sha256",headers="date",signature="AAEC""#, "no ',' after the keyId parameter"),
            (#"keyId="SN=1",algorithm="rsa-sha256",headers="date",signature="AAEC"#, "signature parameter has no closing quote"),
            (#"keyId="SN=1",algorithm="rsa-sha256",headers="date",signature="""#, "signature parameter is empty"),
            (#"keyId="SN=1",algorithm="rsa-sha256",headers="date",signature="not base64!""#, "signature parameter is not base64"),
            (#"keyId="SN=1",algorithm="rsa-sha256",signature="AAEC""#, "no headers parameter"),
            (#"keyId="SN=1" algorithm="rsa-sha256",headers="date",signature="AAEC""#, "no ',' after the keyId parameter"),
            (#"keyId="SN=1",keyid="SN=2",algorithm="rsa-sha256",headers="date",signature="AAEC""#, "keyid parameter twice"),
            (#"keyId "SN=1",algorithm="rsa-sha256",headers="date",signature="AAEC""#, "keyId parameter has no '='"),
            (#",keyId="SN=1",algorithm="rsa-sha256",headers="date",signature="AAEC""#, "no parameter name"),
            ("", "Signature header is empty"),
        ]
        for (value, expected) in cases {
            XCTAssertThrowsError(try BerlinGroupSignatureHeader(parsing: value), value) {
                XCTAssertTrue("\($0)".contains(expected), "\(value): \($0)")
            }
        }
        XCTAssertThrowsError(try BerlinGroupKeyID(parsing: "CA=CN=X")) { XCTAssertTrue("\($0)".contains("does not start with SN="), "\($0)") }
        XCTAssertThrowsError(try BerlinGroupKeyID(parsing: "SN=12G4,CA=CN=X")) { XCTAssertTrue("\($0)".contains("not hexadecimal"), "\($0)") }
        XCTAssertThrowsError(try BerlinGroupKeyID(parsing: "SN=12,O=X")) { XCTAssertTrue("\($0)".contains("CA= or DN="), "\($0)") }
        XCTAssertTrue(try BerlinGroupKeyID(parsing: "SN=000abc").serialNumberMatches("0ABC"))
        XCTAssertFalse(try BerlinGroupKeyID(parsing: "SN=abc0").serialNumberMatches("0ABC"))

        // Through the verifier, on a real signed request whose Signature header is rewritten.
        let request = try signed(postRequest(), with: BerlinGroupSigner(key: ProviderKey(uri: token.rsaURI), certificateDER: certificateDER("client-rsa.pem")))
        let original = try XCTUnwrap(request.header("Signature"))
        let rewrites: [(String, String)] = [
            (original.replacingOccurrences(of: #"algorithm="rsa-sha256""#, with: #"algorithm="hs2019""#), "unknown signature algorithm \"hs2019\""),
            (original.replacingOccurrences(of: #"algorithm="rsa-sha256""#, with: #"algorithm="ecdsa-sha256""#), "needs an EC key"),
            (original.replacingOccurrences(of: #"keyId=""#, with: "keyId="), "keyId parameter is not a quoted string"),
            (original.replacingOccurrences(of: #"algorithm="rsa-sha256""#, with: #"algorithm="rsa-sha512""#), "signature does not verify"),
            (original.replacingOccurrences(of: "x-request-id date", with: "x-request-id"), "does not cover date"),
            (original.replacingOccurrences(of: "x-request-id date", with: "x-request-id date date"), "lists date twice"),
            (original.replacingOccurrences(of: "x-request-id date", with: "x-request-id date psu-corporate-id"), "header psu-corporate-id is signed but missing"),
        ]
        for (value, expected) in rewrites {
            var bad = request
            bad.headers = bad.headers.map { $0.name == "Signature" ? ($0.name, value) : $0 }
            XCTAssertThrowsError(try BerlinGroupVerifier().verify(bad), expected) {
                XCTAssertTrue("\($0)".contains(expected), "\(expected): \($0)")
            }
        }
        var unsigned = request
        unsigned.headers.removeAll { $0.name == "Signature" }
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(unsigned)) { XCTAssertTrue("\($0)".contains("no Signature header"), "\($0)") }
        var missing = request
        missing.headers.removeAll { $0.name.lowercased() == "x-request-id" }
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(missing)) {
            XCTAssertEqual(($0 as? OpenBankingError)?.reason, "header x-request-id is signed but missing")
        }
        var unsignedPSU = request
        unsignedPSU.headers.append(("PSU-Corporate-ID", "corp"))
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(unsignedPSU)) { XCTAssertTrue("\($0)".contains("not signed"), "\($0)") }
    }

    func testWrongCertificate() throws {
        let rsa = try ProviderKey(uri: token.rsaURI)
        // An RSA certificate of another key: the signer's own check catches it before sending.
        let mismatched = try BerlinGroupSigner(key: rsa, certificateDER: certificateDER("client-mismatch.pem"))
        XCTAssertThrowsError(try mismatched.headers(for: postRequest())) {
            XCTAssertTrue("\($0)".contains("the certificate is not the key's"), "\($0)")
        }
        // A certificate of another key family: refused at once.
        XCTAssertThrowsError(try BerlinGroupSigner(key: rsa, certificateDER: certificateDER("client-ec.pem"))) {
            XCTAssertTrue("\($0)".contains("EC public key but the signing key is RSA"), "\($0)")
        }
        XCTAssertThrowsError(try BerlinGroupSigner(key: rsa, certificateDER: [0x30, 0x03, 0x02, 0x01, 0x01])) {
            XCTAssertTrue("\($0)".contains("not valid DER"), "\($0)")
        }

        let request = try signed(postRequest(), with: BerlinGroupSigner(key: rsa, certificateDER: certificateDER("client-rsa.pem")))
        XCTAssertNoThrow(try BerlinGroupVerifier().verify(request))
        func replacingCertificate(_ value: String) -> HTTPRequestParts {
            var copy = request
            copy.headers = copy.headers.map { $0.name == "TPP-Signature-Certificate" ? ($0.name, value) : $0 }
            return copy
        }
        let other = Data(try certificateDER("client-mismatch.pem")).base64EncodedString()
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(replacingCertificate(other))) {
            XCTAssertTrue("\($0)".contains("serial number"), "\($0)")
        }
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(replacingCertificate(Data(try certificateDER("client-ec.pem")).base64EncodedString()))) {
            XCTAssertTrue("\($0)".contains("needs an RSA key"), "\($0)")
        }
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(replacingCertificate("***"))) {
            XCTAssertTrue("\($0)".contains("TPP-Signature-Certificate is not base64"), "\($0)")
        }
        XCTAssertThrowsError(try BerlinGroupVerifier(expectedCertificateDER: certificateDER("client-mismatch.pem")).verify(request)) {
            XCTAssertTrue("\($0)".contains("not the expected certificate"), "\($0)")
        }
        // The keyId made to name the other certificate: then only the signature itself can fail.
        let otherSigner = try BerlinGroupSigner(key: rsa, certificateDER: certificateDER("client-mismatch.pem"))
        var forged = replacingCertificate(other)
        let signature = try XCTUnwrap(request.header("Signature"))
        let ownKeyId = try BerlinGroupSigner(key: rsa, certificateDER: certificateDER("client-rsa.pem")).keyId
        forged.headers = forged.headers.map {
            $0.name == "Signature" ? ($0.name, signature.replacingOccurrences(of: ownKeyId, with: otherSigner.keyId)) : $0
        }
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(forged)) {
            XCTAssertTrue("\($0)".contains("signature does not verify"), "\($0)")
        }
    }

    func testEd25519IsRefused() throws {
        let key = try ProviderKey(uri: token.keyURI("ed25519"))
        XCTAssertThrowsError(try BerlinGroupSigner(key: key, certificateDER: certificateDER("client-ed25519.pem"))) {
            XCTAssertTrue("\($0)".contains("draft-cavage-http-signatures-10 defines no algorithm name"), "\($0)")
        }
    }

    // MARK: Helpers

    private func postRequest(psuID: String? = "PSU-1234") throws -> HTTPRequestParts {
        var headers: [(name: String, value: String)] = [("Content-Type", "application/json")]
        if let psuID { headers.append(("PSU-ID", psuID)) }
        return HTTPRequestParts(method: "POST", url: try XCTUnwrap(URL(string: "https://api.bank.example/v1/payments/sepa-credit-transfers?x=y")),
                                headers: headers, body: Data(#"{"instructedAmount":{"currency":"EUR","amount":"123.50"},"creditorName":"Zoë"}"#.utf8))
    }

    private func signed(_ request: HTTPRequestParts, with signer: BerlinGroupSigner, now: Date = Date()) throws -> HTTPRequestParts {
        var copy = request
        copy.headers += try signer.headers(for: request, now: now)
        return copy
    }

    /// Signs a POST with a JSON body and a GET with none; checks each with the verifier and with
    /// `openssl dgst -verify`, then a changed body and a changed header with both.
    private func checkTokenSignatures(uri: String, certificate: String, profile: BerlinGroupProfile, algorithm: String, hash: String,
                                      expectedHeaders: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let signer = try BerlinGroupSigner(key: ProviderKey(uri: uri), certificateDER: certificateDER(certificate), profile: profile)
        let verifier = try BerlinGroupVerifier(profile: profile)
        let get = HTTPRequestParts(method: "GET", url: try XCTUnwrap(URL(string: "https://api.bank.example/v1/accounts?withBalance=true")),
                                   headers: [("Accept", "application/json"), ("PSU-ID", "PSU-1234")])
        for request in [try postRequest(), get] {
            let added = try signer.headers(for: request)
            var sent = request
            sent.headers += added
            let result = try verifier.verify(sent)
            XCTAssertEqual(result.signature.algorithm, algorithm, file: file, line: line)
            XCTAssertEqual(result.digestAlgorithm, profile.digest, file: file, line: line)
            let expectedDigest = try opensslDigest(request.body, hash: hash)
            XCTAssertEqual(sent.header("Digest"), profile.digest.rawValue + "=" + expectedDigest, file: file, line: line)

            let rebuilt = try independentSigningString(request: request, added: added)
            XCTAssertEqual(rebuilt.text, result.signingString, file: file, line: line)
            let covered = request.method == "GET" ? expectedHeaders?.replacingOccurrences(of: " content-type", with: "") : expectedHeaders
            XCTAssertEqual(rebuilt.headers, covered ?? "digest x-request-id date psu-id", file: file, line: line)
            XCTAssertTrue(try opensslVerifies(rebuilt.text, signature: rebuilt.signature, certificate: certificate, hash: hash),
                          "openssl rejected \(algorithm) over:\n\(rebuilt.text)", file: file, line: line)

            // Changed body: the Digest no longer matches, whatever the signature says.
            var changedBody = sent
            changedBody.body = request.body + Data(" ".utf8)
            XCTAssertThrowsError(try verifier.verify(changedBody), file: file, line: line) {
                XCTAssertTrue("\($0)".hasPrefix("Digest does not match the body"), "\($0)", file: file, line: line)
            }
            // Changed signed header: the signature fails, for the verifier and for openssl.
            let requestID = try XCTUnwrap(sent.header("X-Request-ID"))
            let otherID = UUID().uuidString.lowercased()
            var changedHeader = sent
            changedHeader.headers = changedHeader.headers.map { $0.name == "X-Request-ID" ? ($0.name, otherID) : $0 }
            XCTAssertThrowsError(try verifier.verify(changedHeader), file: file, line: line) {
                XCTAssertTrue("\($0)".hasPrefix("signature does not verify"), "\($0)", file: file, line: line)
            }
            XCTAssertFalse(try opensslVerifies(rebuilt.text.replacingOccurrences(of: requestID, with: otherID), signature: rebuilt.signature,
                                               certificate: certificate, hash: hash), file: file, line: line)
        }
    }

    /// The signing string rebuilt from the request and the added headers by this test alone,
    /// not by the code under test, with the `headers` and `signature` parameters.
    private func independentSigningString(request: HTTPRequestParts, added: [(name: String, value: String)]) throws
        -> (text: String, headers: String, signature: Data) {
        let all = request.headers + added
        let signatureHeader = try XCTUnwrap(added.first { $0.name == "Signature" }?.value)
        func parameter(_ name: String) throws -> String {
            let start = try XCTUnwrap(signatureHeader.range(of: name + "=\""), "no \(name) in \(signatureHeader)").upperBound
            let end = try XCTUnwrap(signatureHeader[start...].firstIndex(of: "\""))
            return String(signatureHeader[start..<end])
        }
        let names = try parameter("headers")
        let lines = try names.split(separator: " ").map { name -> String in
            if name == "(request-target)" { return "(request-target): \(request.method.lowercased()) \(request.target)" }
            let value = try XCTUnwrap(all.first { $0.name.lowercased() == name }?.value, "no \(name) header")
            return "\(name): \(value.trimmingCharacters(in: .whitespaces))"
        }
        return (lines.joined(separator: "\n"), names, try XCTUnwrap(Data(base64Encoded: parameter("signature"))))
    }

    /// Whether `openssl dgst -verify` accepts the signature over the text with the certificate's public key.
    private func opensslVerifies(_ text: String, signature: Data, certificate: String, hash: String) throws -> Bool {
        let directory = try Command.temporaryDirectory()
        let publicKey = try Command.run(["openssl", "x509", "-in", token.pki(certificate), "-noout", "-pubkey"])
        XCTAssertEqual(publicKey.status, 0, publicKey.standardError)
        try publicKey.standardOutput.write(toFile: directory + "/public.pem", atomically: true, encoding: .utf8)
        try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/signing-string"))
        try signature.write(to: URL(fileURLWithPath: directory + "/signature"))
        let result = try Command.run(["openssl", "dgst", "-" + hash, "-verify", directory + "/public.pem",
                                      "-signature", directory + "/signature", directory + "/signing-string"])
        return result.status == 0 && result.standardOutput.contains("Verified OK")
    }

    /// `openssl dgst -binary | base64`, computed by the openssl command.
    private func opensslDigest(_ body: Data, hash: String) throws -> String {
        // base64 in the pipe: the raw digest is not text, and Command returns text.
        let result = try Command.run(["sh", "-c", "openssl dgst -\(hash) -binary | base64 -w0"], input: body)
        XCTAssertEqual(result.status, 0, result.standardError)
        return result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A certificate's DER, from the PEM file in the test PKI (PEM is base64 of the DER).
    private func certificateDER(_ name: String) throws -> [UInt8] {
        let pem = try String(contentsOfFile: token.pki(name), encoding: .utf8)
        let lines = pem.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let begin = try XCTUnwrap(lines.firstIndex(of: "-----BEGIN CERTIFICATE-----"))
        let end = try XCTUnwrap(lines.firstIndex(of: "-----END CERTIFICATE-----"))
        return Array(try XCTUnwrap(Data(base64Encoded: lines[(begin + 1)..<end].joined())))
    }

    /// A throw-away self-signed certificate with a chosen serial and subject (its issuer), as DER.
    private func makeCertificate(serial: String, subject: String) throws -> [UInt8] {
        let directory = try Command.temporaryDirectory()
        let result = try Command.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                      "-keyout", directory + "/key.pem", "-utf8", "-subj", subject, "-set_serial", serial, "-days", "1",
                                      "-outform", "DER", "-out", directory + "/certificate.der"])
        XCTAssertEqual(result.status, 0, result.standardError)
        return Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/certificate.der")))
    }
}

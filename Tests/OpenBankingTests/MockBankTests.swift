import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import MockBank
import OpenBanking
import XCTest

/// The PSD2 sandbox (`MockBank` on libmicrohttpd, `keybridge mock-bank`): requests signed through
/// the token reach it through nginx's mTLS or directly over plain HTTP with hand-built headers,
/// and every rejection has a control that is accepted.
final class MockBankTests: XCTestCase {
    let token = TestToken.shared
    let body = #"{"instructedAmount":{"currency":"EUR","amount":"12.34"}}"#
    let paymentPath = "/psd2/v1/payments/sepa-credit-transfers"

    // MARK: - Fixtures

    /// Collects the server's log lines; `lock` guards `lines`.
    final class LogLines: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var last: String? { lock.withLock { lines.last } }
    }

    /// One sandbox in this process, trusting the test PKI's issuing CA for QWACs and QSealCs.
    final class Sandbox: Sendable {
        let server: MockBankServer
        let log: LogLines

        static let shared: Sandbox = {
            do {
                return try Sandbox()
            } catch {
                fatalError("cannot start the mock bank: \(error)")
            }
        }()

        private init() throws {
            let token = TestToken.shared
            let issuing = try EIDASCertificate(pem: String(contentsOfFile: token.pki("issuing-ca.pem"), encoding: .utf8)).der
            let root = try EIDASCertificate(pem: String(contentsOfFile: token.pki("root-ca.pem"), encoding: .utf8)).der
            let bank = try MockBank(configuration: .init(qwacAuthorities: [root, issuing], qsealcAuthorities: [issuing]))
            let log = LogLines()
            self.log = log
            server = try MockBankServer(bank: bank, host: "127.0.0.1", port: 0, log: { log.append($0) })
        }
    }

    /// An nginx of its own (the shared test bank has no upstream) whose /psd2/ goes to the sandbox:
    /// a folder with the token's PKI linked in, so nginx keeps its files apart.
    final class Proxy: Sendable {
        let port: Int
        nonisolated(unsafe) private static var stateToStop: String?

        static let shared: Proxy = {
            do {
                return try Proxy(upstream: Sandbox.shared.server.port)
            } catch {
                fatalError("cannot start nginx for the mock bank: \(error)")
            }
        }()

        private init(upstream: Int) throws {
            let state = try Command.temporaryDirectory()
            try FileManager.default.createSymbolicLink(atPath: state + "/pki", withDestinationPath: TestToken.shared.stateDirectory + "/pki")
            let script = TestToken.repositoryRoot + "/scripts/bank-nginx"
            let result = try Command.run([script, "start", state, String(upstream)])
            guard result.status == 0, let port = Int(result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw CommandError(message: "bank-nginx start failed (\(result.status)): \(result.standardError)")
            }
            self.port = port
            Proxy.stateToStop = state
            // Registered after the temporary folders' handler, so it runs first.
            atexit {
                guard let state = Proxy.stateToStop else { return }
                _ = try? Command.run([TestToken.repositoryRoot + "/scripts/bank-nginx", "stop", state])
            }
        }
    }

    /// The JSON the sandbox answers.
    struct Answer: Decodable {
        struct Message: Decodable {
            var category: String
            var code: String
            var text: String
        }

        var checks: [MockBankCheck]
        var format: String?
        var organizationIdentifier: String?
        var result: String
        var tppMessages: [Message]?

        func check(_ name: String) -> MockBankCheck? { checks.first { $0.name == name } }
    }

    private var sandbox: Sandbox { Sandbox.shared }
    private var directURL: String { "http://127.0.0.1:\(sandbox.server.port)" }

    private func pem(_ name: String) throws -> String { try String(contentsOfFile: token.pki(name), encoding: .utf8) }
    private func der(_ name: String) throws -> [UInt8] { try EIDASCertificate(pem: pem(name)).der }

    /// What nginx adds for a verified client: the URL-escaped PEM ($ssl_client_escaped_cert) and SUCCESS.
    private func frontEndHeaders(qwac: String = "client-rsa.pem", verify: String? = "SUCCESS") throws -> [(name: String, value: String)] {
        let escaped = try XCTUnwrap(pem(qwac).addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        var headers = [(name: "X-SSL-Client-Cert", value: escaped)]
        if let verify { headers.append((name: "X-SSL-Client-Verify", value: verify)) }
        return headers
    }

    /// A Berlin Group POST signed in this process with a token key and its certificate as the
    /// QSealC: by default client-ec, a QWAC-type certificate the sandbox warns about.
    private func berlinGroupHeaders(body: String, psuID: String = "alice", keyURI: String? = nil,
                                    certificate: String = "client-ec.pem") throws -> [(name: String, value: String)] {
        let url = try XCTUnwrap(URL(string: directURL + paymentPath))
        let base = [(name: "PSU-ID", value: psuID), (name: "Content-Type", value: "application/json")]
        let signer = try BerlinGroupSigner(key: ProviderKey(uri: keyURI ?? token.ecURI), certificateDER: der(certificate))
        return base + (try signer.headers(for: HTTPRequestParts(method: "POST", url: url, headers: base, body: Data(body.utf8))))
    }

    /// Sends a request straight to the sandbox with curl, which adds only Host, User-Agent, Accept
    /// and the body's length to the headers given.
    private func sendDirect(_ method: String = "POST", path: String? = nil, headers: [(name: String, value: String)],
                            body: Data?, curlOptions: [String] = []) throws -> (status: Int, answer: Answer) {
        var arguments = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}"] + curlOptions
        for header in headers { arguments += ["-H", "\(header.name): \(header.value)"] }
        if body != nil { arguments += ["--data-binary", "@-"] }
        arguments.append(directURL + (path ?? paymentPath))
        let result = try Command.run(arguments, input: body)
        XCTAssertEqual(result.status, 0, result.standardError)
        return try parse(result.standardOutput)
    }

    /// Splits "<json>\n<status>" (curl's -w) or an `-i` head and body.
    private func parse(_ output: String) throws -> (status: Int, answer: Answer) {
        var lines = output.split(separator: "\n", omittingEmptySubsequences: false)
        let status = try XCTUnwrap(Int(lines.removeLast()), "no status in: \(output)")
        let json = lines.joined(separator: "\n")
        let answer = try JSONDecoder().decode(Answer.self, from: Data(json.utf8))
        return (status, answer)
    }

    private func assertAccepted(_ status: Int, _ answer: Answer, format: String, checks: [String], expectedStatus: Int = 201,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(status, expectedStatus, "\(answer)", file: file, line: line)
        XCTAssertEqual(answer.result, "accepted", "\(answer)", file: file, line: line)
        XCTAssertEqual(answer.format, format, file: file, line: line)
        XCTAssertEqual(answer.organizationIdentifier, "PSDDE-BAFIN-123456", file: file, line: line)
        XCTAssertEqual(answer.checks.map(\.name), checks, "\(answer.checks)", file: file, line: line)
        XCTAssertTrue(answer.checks.allSatisfy(\.ok), "\(answer.checks)", file: file, line: line)
        XCTAssertNil(answer.tppMessages, file: file, line: line)
    }

    private func assertRejected(_ status: Int, _ answer: Answer, status expected: Int, code: TPPMessageCode, failedCheck: String,
                                mentions phrase: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(status, expected, "\(answer)", file: file, line: line)
        XCTAssertEqual(answer.result, "rejected", file: file, line: line)
        XCTAssertEqual(answer.tppMessages?.map(\.code), [code.rawValue], file: file, line: line)
        XCTAssertEqual(answer.tppMessages?.first?.category, "ERROR", file: file, line: line)
        XCTAssertTrue(answer.tppMessages?.first?.text.contains(phrase) == true, "\(answer.tppMessages ?? [])", file: file, line: line)
        XCTAssertEqual(answer.checks.last?.name, failedCheck, "\(answer.checks)", file: file, line: line)
        XCTAssertEqual(answer.checks.last?.ok, false, file: file, line: line)
        XCTAssertTrue(answer.checks.dropLast().allSatisfy(\.ok), "\(answer.checks)", file: file, line: line)
    }

    /// An eseal certificate of the right organisation that signs itself, so chains to no CA.
    private func selfSignedSeal() throws -> [UInt8] {
        let directory = try Command.temporaryDirectory()
        let config = """
        [seal]
        basicConstraints       = critical, CA:FALSE
        keyUsage               = critical, digitalSignature, nonRepudiation
        1.3.6.1.5.5.7.1.3      = ASN1:SEQUENCE:qc_statements
        [qc_statements]
        compliance = SEQUENCE:qc_compliance
        type       = SEQUENCE:qc_type
        psd2       = SEQUENCE:qc_psd2
        [qc_compliance]
        statementId = OID:0.4.0.1862.1.1
        [qc_type]
        statementId = OID:0.4.0.1862.1.6
        types       = SEQUENCE:qc_type_list
        [qc_type_list]
        type = OID:0.4.0.1862.1.6.2
        [qc_psd2]
        statementId = OID:0.4.0.19495.2
        info        = SEQUENCE:psd2_info
        [psd2_info]
        rolesOfPSP = SEQUENCE:psd2_roles
        nCAName    = FORMAT:UTF8,UTF8String:Federal Financial Supervisory Authority
        nCAId      = FORMAT:UTF8,UTF8String:DE-BAFIN
        [psd2_roles]
        pi = SEQUENCE:role_pi
        [role_pi]
        roleOfPspOid  = OID:0.4.0.19495.1.2
        roleOfPspName = FORMAT:UTF8,UTF8String:PSP_PI
        """
        try config.write(toFile: directory + "/seal.cnf", atomically: true, encoding: .utf8)
        let result = try Command.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                      "-keyout", directory + "/key.pem", "-out", directory + "/seal.pem", "-days", "30",
                                      "-subj", "/C=DE/O=KeyBridge Test TPP GmbH/organizationIdentifier=PSDDE-BAFIN-123456/CN=self-signed seal",
                                      "-config", directory + "/seal.cnf", "-extensions", "seal"])
        XCTAssertEqual(result.status, 0, result.standardError)
        return try EIDASCertificate(pem: String(contentsOfFile: directory + "/seal.pem", encoding: .utf8)).der
    }

    /// A correctly signed request whose TPP-Signature-Certificate is then swapped for `certificate`.
    private func withSwappedSeal(_ certificate: [UInt8]) throws -> [(name: String, value: String)] {
        var headers = try berlinGroupHeaders(body: body) + frontEndHeaders()
        let index = try XCTUnwrap(headers.firstIndex { $0.name == "TPP-Signature-Certificate" })
        headers[index].value = Data(certificate).base64EncodedString()
        return headers
    }

    /// `keybridge request` through the sandbox's nginx, with the token's RSA key for the mTLS.
    private func requestThroughNginx(_ signing: [String], headers: [String] = [], data: String? = nil) throws -> (status: Int, answer: Answer) {
        let url = "https://localhost:\(Proxy.shared.port)\(paymentPath)"
        var arguments = ["request", "-i", "--cacert", token.pki("root-ca.pem"), "--cert", token.pki("client-rsa-chain.pem"),
                         "--key", token.rsaURI, "-H", "PSU-ID: alice", "-H", "Content-Type: application/json"]
        for header in headers { arguments += ["-H", header] }
        arguments += ["-d", data ?? body] + signing + [url]
        let result = try KeyBridgeExecutable.run(arguments)
        XCTAssertEqual(result.status, 0, result.standardError)
        // -i: "HTTP/1.1 201 Created", headers, a blank line, the body.
        let split = try XCTUnwrap(result.standardOutput.range(of: "\r\n\r\n") ?? result.standardOutput.range(of: "\n\n"), result.standardOutput)
        let statusLine = result.standardOutput.prefix { $0 != "\r" && $0 != "\n" }.split(separator: " ")
        let status = try XCTUnwrap(statusLine.count > 1 ? Int(statusLine[1]) : nil, result.standardOutput)
        let answer = try JSONDecoder().decode(Answer.self, from: Data(result.standardOutput[split.upperBound...].utf8))
        return (status, answer)
    }

    // MARK: - Through nginx, signed by the CLI

    func testBerlinGroupPostThroughNginxIsAccepted() throws {
        let (status, answer) = try requestThroughNginx(["--sign-profile", "berlin-group", "--sign-key", token.ecURI,
                                                        "--sign-cert", token.pki("client-ec.pem")])
        assertAccepted(status, answer, format: "berlin-group", checks: ["qwac", "qsealc", "digest", "signature"])
        XCTAssertTrue(answer.check("qwac")?.detail.contains("CN=tpp-rsa.example") == true, "\(answer.checks)")
        XCTAssertTrue(answer.check("qwac")?.detail.contains("verified by the TLS front end") == true, "\(answer.checks)")
        // The test QSealC is a QWAC-type certificate: tolerated, but said.
        XCTAssertEqual(answer.check("qsealc")?.warnings, ["QcType is web, not eseal"])
        XCTAssertTrue(answer.check("signature")?.detail.contains("psu-id") == true, "\(answer.checks)")
        XCTAssertEqual(sandbox.log.last,
                       "POST \(paymentPath) berlin-group: qwac ok, qsealc ok (1 warning), digest ok, signature ok → 201")
    }

    func testBerlinGroupPostWithTheSetupQSealCThroughNginxHasNoWarnings() throws {
        let (status, answer) = try requestThroughNginx(["--sign-profile", "berlin-group", "--sign-key", token.keyURI("qseal-ec"),
                                                        "--sign-cert", token.pki("qseal-ec.pem")])
        assertAccepted(status, answer, format: "berlin-group", checks: ["qwac", "qsealc", "digest", "signature"])
        XCTAssertNil(answer.check("qsealc")?.warnings, "\(answer.checks)")
        XCTAssertEqual(sandbox.log.last, "POST \(paymentPath) berlin-group: qwac ok, qsealc ok, digest ok, signature ok → 201")
    }

    func testNginxReplacesCertificateHeadersTheClientSends() throws {
        // A client that forges the front end's headers is overruled by nginx's own values; had
        // nginx passed both copies, the sandbox would refuse the request (the control below).
        let forged = ["X-SSL-Client-Verify: FAILED:forged", "X-SSL-Client-Cert: forged"]
        let (status, answer) = try requestThroughNginx(["--sign-profile", "berlin-group", "--sign-key", token.ecURI,
                                                        "--sign-cert", token.pki("client-ec.pem")], headers: forged)
        assertAccepted(status, answer, format: "berlin-group", checks: ["qwac", "qsealc", "digest", "signature"])

        let doubled = try berlinGroupHeaders(body: body) + frontEndHeaders() + [(name: "X-SSL-Client-Cert", value: "forged")]
        let (direct, directAnswer) = try sendDirect(headers: doubled, body: Data(body.utf8))
        assertRejected(direct, directAnswer, status: 401, code: .certificateInvalid, failedCheck: "qwac", mentions: "appears 2 times")
    }

    func testRFC9421AndJWSThroughNginxAreAccepted() throws {
        // Without TPP-Signature-Certificate, the QWAC's key (the RSA one used for the mTLS) must have signed.
        let (status, answer) = try requestThroughNginx(["--sign-profile", "rfc9421", "--sign-key", token.rsaURI, "--sign-key-id", "qwac-rsa"])
        assertAccepted(status, answer, format: "rfc9421", checks: ["qwac", "digest", "signature"])
        XCTAssertTrue(answer.check("signature")?.detail.contains("\"@target-uri\"") == true, "\(answer.checks)")
        XCTAssertTrue(answer.check("signature")?.detail.contains("QWAC's RSA-2048 key") == true, "\(answer.checks)")

        let (jwsStatus, jws) = try requestThroughNginx(["--sign-profile", "jws", "--sign-key", token.rsaURI, "--sign-key-id", "qwac-rsa"])
        assertAccepted(jwsStatus, jws, format: "jws", checks: ["qwac", "signature"])
        XCTAssertTrue(jws.check("signature")?.detail.contains("PS256") == true, "\(jws.checks)")
    }

    func testRFC9421ThroughNginxNeedsTheSignersCertificate() throws {
        // Signed with the EC key: the QWAC's RSA key cannot verify it...
        let signing = ["--sign-profile", "rfc9421", "--sign-key", token.ecURI]
        let (status, answer) = try requestThroughNginx(signing)
        assertRejected(status, answer, status: 401, code: .signatureInvalid, failedCheck: "signature", mentions: "does not verify")
        // ...and with the EC key's certificate as TPP-Signature-Certificate it verifies.
        let certificate = Data(try der("client-ec.pem")).base64EncodedString()
        let (withCertificate, accepted) = try requestThroughNginx(signing, headers: ["TPP-Signature-Certificate: \(certificate)"])
        assertAccepted(withCertificate, accepted, format: "rfc9421", checks: ["qwac", "qsealc", "digest", "signature"])
        XCTAssertTrue(accepted.check("signature")?.detail.contains("ecdsa-p256-sha256") == true, "\(accepted.checks)")
    }

    // MARK: - Directly, with headers built here

    func testSignedBerlinGroupRequestIsAccepted() throws {
        let headers = try berlinGroupHeaders(body: body) + frontEndHeaders()
        let (status, answer) = try sendDirect(headers: headers, body: Data(body.utf8))
        assertAccepted(status, answer, format: "berlin-group", checks: ["qwac", "qsealc", "digest", "signature"])
        XCTAssertTrue(answer.check("qwac")?.detail.contains("chains to the QWAC CAs") == true, "\(answer.checks)")
        XCTAssertTrue(answer.check("qsealc")?.detail.contains("chains to the QSealC CAs") == true, "\(answer.checks)")
    }

    func testTamperedBodyFailsTheDigest() throws {
        let headers = try berlinGroupHeaders(body: body) + frontEndHeaders()
        let tampered = body.replacingOccurrences(of: "12.34", with: "912.34")
        let (status, answer) = try sendDirect(headers: headers, body: Data(tampered.utf8))
        assertRejected(status, answer, status: 400, code: .formatError, failedCheck: "digest", mentions: "Digest does not match the body")
        XCTAssertTrue(sandbox.log.last?.hasSuffix("qwac ok, qsealc ok (1 warning), digest FAILED → 400 FORMAT_ERROR: "
            + (answer.tppMessages?.first?.text ?? "")) == true, sandbox.log.last ?? "")
    }

    func testAlteredSignedHeaderFailsTheSignature() throws {
        var headers = try berlinGroupHeaders(body: body, psuID: "alice") + frontEndHeaders()
        let index = try XCTUnwrap(headers.firstIndex { $0.name == "PSU-ID" })
        headers[index].value = "mallory"
        let (status, answer) = try sendDirect(headers: headers, body: Data(body.utf8))
        assertRejected(status, answer, status: 401, code: .signatureInvalid, failedCheck: "signature", mentions: "does not verify")
        XCTAssertEqual(answer.checks.map(\.name), ["qwac", "qsealc", "digest", "signature"])
    }

    func testMissingSignatureAndMissingCertificates() throws {
        let signed = try berlinGroupHeaders(body: body)
        let unsigned = signed.filter { $0.name.lowercased() != "signature" } + (try frontEndHeaders())
        let (status, answer) = try sendDirect(headers: unsigned, body: Data(body.utf8))
        assertRejected(status, answer, status: 401, code: .signatureMissing, failedCheck: "signature", mentions: "no signature")

        let (noClient, noClientAnswer) = try sendDirect(headers: signed, body: Data(body.utf8))
        assertRejected(noClient, noClientAnswer, status: 401, code: .certificateMissing, failedCheck: "qwac", mentions: "no client certificate")

        let (unverified, unverifiedAnswer) = try sendDirect(headers: signed + frontEndHeaders(verify: "FAILED:certificate has expired"),
                                                           body: Data(body.utf8))
        assertRejected(unverified, unverifiedAnswer, status: 401, code: .certificateInvalid, failedCheck: "qwac", mentions: "FAILED:certificate has expired")

        let noSeal = signed.filter { $0.name.lowercased() != "tpp-signature-certificate" } + (try frontEndHeaders())
        let (sealMissing, sealMissingAnswer) = try sendDirect(headers: noSeal, body: Data(body.utf8))
        assertRejected(sealMissing, sealMissingAnswer, status: 401, code: .certificateMissing, failedCheck: "qsealc", mentions: "TPP-Signature-Certificate")
    }

    func testAQSealCAsClientCertificateIsNotAQWAC() throws {
        let headers = try berlinGroupHeaders(body: body) + frontEndHeaders(qwac: "qseal-ec.pem")
        let (status, answer) = try sendDirect(headers: headers, body: Data(body.utf8))
        assertRejected(status, answer, status: 401, code: .certificateInvalid, failedCheck: "qwac", mentions: "not a QWAC")
    }

    func testTheSetupQSealCIsAcceptedWithoutWarnings() throws {
        // qseal-ec: its own token key, QcType eseal, the QWACs' organisation.
        let headers = try berlinGroupHeaders(body: body, keyURI: token.keyURI("qseal-ec"), certificate: "qseal-ec.pem") + frontEndHeaders()
        let (status, answer) = try sendDirect(headers: headers, body: Data(body.utf8))
        assertAccepted(status, answer, format: "berlin-group", checks: ["qwac", "qsealc", "digest", "signature"])
        XCTAssertNil(answer.check("qsealc")?.warnings, "\(answer.checks)")
        XCTAssertTrue(answer.check("qsealc")?.detail.contains("PSDDE-BAFIN-123456 as in the QWAC") == true, "\(answer.checks)")
    }

    func testQSealCsThatBreakTheRulesAreRefused() throws {
        let cases: [(file: String, phrase: String)] = [
            ("negative/other-org.pem", "PSDNL-DNB-987654"),
            ("negative/no-psd2.pem", "no PSD2 QCStatement"),
            ("negative/missing-role.pem", "lists no roles"),
        ]
        for (file, phrase) in cases {
            let (status, answer) = try sendDirect(headers: withSwappedSeal(der(file)), body: Data(body.utf8))
            assertRejected(status, answer, status: 401, code: .certificateInvalid, failedCheck: "qsealc", mentions: phrase)
        }
        // A seal of the right organisation that no configured CA issued.
        let (status, answer) = try sendDirect(headers: withSwappedSeal(selfSignedSeal()), body: Data(body.utf8))
        assertRejected(status, answer, status: 401, code: .certificateInvalid, failedCheck: "qsealc", mentions: "does not chain")
        // Control: swapping in the certificate that signed changes nothing.
        let (control, controlAnswer) = try sendDirect(headers: withSwappedSeal(der("client-ec.pem")), body: Data(body.utf8))
        assertAccepted(control, controlAnswer, format: "berlin-group", checks: ["qwac", "qsealc", "digest", "signature"])
    }

    func testOversizedBodiesGet413() throws {
        let large = Data(repeating: 0x41, count: 2 << 20)
        let headers = try frontEndHeaders()
        let (status, answer) = try sendDirect(headers: headers, body: large)
        XCTAssertEqual(status, 413)
        XCTAssertEqual(answer.tppMessages?.first?.code, "FORMAT_ERROR")
        XCTAssertTrue(answer.tppMessages?.first?.text.contains("1048576") == true, "\(answer.tppMessages ?? [])")
        // Chunked, so no Content-Length announces it: read, dropped, then refused.
        let (chunked, _) = try sendDirect(headers: headers + [(name: "Transfer-Encoding", value: "chunked")], body: large)
        XCTAssertEqual(chunked, 413)
        // Control: a body at the limit is read and checked (and then lacks a signature).
        let (atLimit, atLimitAnswer) = try sendDirect(headers: headers, body: Data(repeating: 0x41, count: 1 << 20))
        assertRejected(atLimit, atLimitAnswer, status: 401, code: .signatureMissing, failedCheck: "signature", mentions: "no signature")
    }

    func testRFC9421WithContentDigestIsAcceptedAndGuardsTheBody() throws {
        let url = try XCTUnwrap(URL(string: directURL + paymentPath))
        let certificate = try der("client-ec.pem")
        var request = HTTPRequestParts(method: "POST", url: url,
                                       headers: [("Content-Type", "application/json"), ("TPP-Signature-Certificate", Data(certificate).base64EncodedString())],
                                       body: Data(body.utf8))
        let signer = try HTTPMessageSigner(key: ProviderKey(uri: token.ecURI), algorithm: .ecdsaP256SHA256, keyID: "seal-ec",
                                           components: [.method, .targetURI, .field("content-digest"), .field("tpp-signature-certificate")],
                                           includesAlgorithm: true, contentDigest: .sha256)
        try signer.sign(&request)
        let headers = request.headers + (try frontEndHeaders())
        let (status, answer) = try sendDirect(headers: headers, body: Data(body.utf8))
        assertAccepted(status, answer, format: "rfc9421", checks: ["qwac", "qsealc", "digest", "signature"])
        XCTAssertTrue(answer.check("signature")?.detail.contains("keyid \"seal-ec\"") == true, "\(answer.checks)")

        let (tampered, tamperedAnswer) = try sendDirect(headers: headers, body: Data((body + " ").utf8))
        assertRejected(tampered, tamperedAnswer, status: 400, code: .formatError, failedCheck: "digest", mentions: "Content-Digest")

        // The same signature sent to another path no longer verifies: @target-uri is covered.
        let (moved, movedAnswer) = try sendDirect(path: "/psd2/v1/payments/instant-sepa-credit-transfers", headers: headers, body: Data(body.utf8))
        assertRejected(moved, movedAnswer, status: 401, code: .signatureInvalid, failedCheck: "signature", mentions: "does not verify")
    }

    func testDetachedJWSWithTheQWACKeyIsAcceptedAndGuardsTheBody() throws {
        let signer = try DetachedJWSSigner(key: ProviderKey(uri: token.rsaURI), algorithm: .ps256,
                                           protectedHeader: DetachedJWSHeader(keyID: "qwac-rsa"))
        let headers = [try signer.header(for: Data(body.utf8))] + (try frontEndHeaders())
        let (status, answer) = try sendDirect(headers: headers, body: Data(body.utf8))
        assertAccepted(status, answer, format: "jws", checks: ["qwac", "signature"])
        XCTAssertTrue(answer.check("signature")?.detail.contains("kid \"qwac-rsa\"") == true, "\(answer.checks)")

        let (tampered, tamperedAnswer) = try sendDirect(headers: headers, body: Data(body.replacingOccurrences(of: "EUR", with: "USD").utf8))
        assertRejected(tampered, tamperedAnswer, status: 401, code: .signatureInvalid, failedCheck: "signature", mentions: "does not verify")
    }

    func testAGetIsAnswered200AndTheRequestIDEchoed() throws {
        let url = try XCTUnwrap(URL(string: directURL + "/psd2/v1/accounts?withBalance=true"))
        let signer = try DetachedJWSSigner(key: ProviderKey(uri: token.rsaURI), algorithm: .ps256, protectedHeader: DetachedJWSHeader(keyID: "k"))
        let headers = [try signer.header(for: Data()), (name: "X-Request-ID", value: "4b1c0a47-9c3d-4e8e-9a57-6f1f6a0d2c11")] + (try frontEndHeaders())
        let result = try Command.run(["curl", "-sS", "-i"] + headers.flatMap { ["-H", "\($0.name): \($0.value)"] } + [url.absoluteString])
        XCTAssertTrue(result.standardOutput.hasPrefix("HTTP/1.1 200"), result.combined)
        XCTAssertTrue(result.standardOutput.contains("X-Request-ID: 4b1c0a47-9c3d-4e8e-9a57-6f1f6a0d2c11"), result.standardOutput)
        XCTAssertTrue(result.standardOutput.contains("Content-Type: application/json"), result.standardOutput)
        XCTAssertEqual(sandbox.log.last, "GET /psd2/v1/accounts?withBalance=true jws: qwac ok, signature ok → 200")
    }

    func testRespondChecksWithoutHTTP() throws {
        let bank = try MockBank()
        // No verdict from a front end and no QWAC CA: nothing vouches for the certificate.
        var request = MockBankRequest(method: "POST", target: "/psd2/v1/payments", headers: try frontEndHeaders(verify: nil))
        var response = bank.respond(to: request)
        XCTAssertEqual(response.status, 401)
        XCTAssertEqual(response.errorCode, .certificateInvalid)
        XCTAssertTrue(response.logLine.contains("qwac FAILED"), response.logLine)
        // An RFC 9421 Signature without Signature-Input is malformed, not missing.
        request.headers = try frontEndHeaders() + [(name: "Signature", value: "sig1=:AAAA:")]
        response = bank.respond(to: request)
        XCTAssertEqual(response.status, 400)
        XCTAssertEqual(response.errorCode, .formatError)
        let json = try JSONSerialization.jsonObject(with: response.body) as? [String: Any]
        XCTAssertEqual(json?["result"] as? String, "rejected")
        XCTAssertThrowsError(try MockBank(configuration: .init(qwacAuthorities: [[0x30, 0x03, 0x02, 0x01, 0x00]])))
    }

    func testTheBanksBerlinGroupProfileIsEnforced() throws {
        let profile = BerlinGroupProfile(digest: .sha512, signsRequestTarget: true)
        let bank = try MockBank(configuration: .init(profile: profile))
        // As nginx passes it on: the client's Host, and https as the scheme the client used.
        let target = "/psd2/v1/payments/sepa-credit-transfers?x=%41"
        let url = try XCTUnwrap(URL(string: "https://bank.example" + target))
        let base = [(name: "Host", value: "bank.example"), (name: "X-Forwarded-Proto", value: "https")] + (try frontEndHeaders())
        func respond(signedWith signerProfile: BerlinGroupProfile) throws -> MockBankResponse {
            let signer = try BerlinGroupSigner(key: ProviderKey(uri: token.ecURI), certificateDER: der("client-ec.pem"), profile: signerProfile)
            let signed = try signer.headers(for: HTTPRequestParts(method: "POST", url: url, headers: base, body: Data(body.utf8)))
            return bank.respond(to: MockBankRequest(method: "POST", target: target, headers: base + signed, body: Data(body.utf8)))
        }
        let plain = try respond(signedWith: .default)
        XCTAssertEqual(plain.status, 401)
        XCTAssertEqual(plain.errorCode, .signatureInvalid)
        XCTAssertTrue(plain.checks.last?.detail.contains("(request-target)") == true, "\(plain.checks)")
        let matching = try respond(signedWith: profile)
        XCTAssertEqual(matching.status, 201, "\(matching.checks)")
        XCTAssertTrue(matching.checks.first { $0.name == "digest" }?.detail.hasPrefix("SHA-512") == true, "\(matching.checks)")
        XCTAssertTrue(matching.checks.last?.detail.contains("(request-target)") == true, "\(matching.checks)")
    }

    // MARK: - keybridge mock-bank

    func testMockBankCommandServesUntilSIGTERM() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: KeyBridgeExecutable.path)
        let profile = try Command.temporaryDirectory() + "/profile.json"
        try #"{"extraHeaders":["psu-id"]}"#.write(toFile: profile, atomically: true, encoding: .utf8)
        process.arguments = ["mock-bank", "--listen", "127.0.0.1:0", "--qwac-ca", token.pki("issuing-ca.pem"), "--profile", profile]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        var printed = Data()
        while !printed.contains(0x0A) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            printed.append(chunk)
        }
        let port = try XCTUnwrap(Int(String(decoding: printed, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
                                 "no port on standard output")
        // X-SSL-Client-Verify is left out: the --qwac-ca chain check vouches instead.
        let headers = try berlinGroupHeaders(body: body) + frontEndHeaders(verify: nil)
        var arguments = ["curl", "-sS", "-w", "\n%{http_code}"]
        for header in headers { arguments += ["-H", "\(header.name): \(header.value)"] }
        arguments += ["--data-binary", "@-", "http://127.0.0.1:\(port)\(paymentPath)"]
        let result = try Command.run(arguments, input: Data(body.utf8))
        let (status, answer) = try parse(result.standardOutput)
        process.terminate()
        process.waitUntilExit()
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)

        XCTAssertEqual(status, 201, result.combined + log)
        XCTAssertEqual(answer.result, "accepted")
        XCTAssertTrue(answer.check("qwac")?.detail.contains("chains to the QWAC CAs") == true, "\(answer.checks)")
        XCTAssertEqual(process.terminationStatus, 0, log)
        XCTAssertTrue(log.contains("listening on http://127.0.0.1:\(port)"), log)
        XCTAssertTrue(log.contains("POST \(paymentPath) berlin-group: qwac ok, qsealc ok (1 warning), digest ok, signature ok → 201\n"), log)
        XCTAssertTrue(log.contains("stopped (SIGTERM)"), log)
    }

    func testMockBankCommandBadInput() throws {
        let noListen = try KeyBridgeExecutable.run(["mock-bank"])
        XCTAssertEqual(noListen.status, 2)
        XCTAssertTrue(noListen.standardError.contains("--listen"), noListen.standardError)
        let badPort = try KeyBridgeExecutable.run(["mock-bank", "--listen", "127.0.0.1:70000"])
        XCTAssertEqual(badPort.status, 2)
        let missing = try KeyBridgeExecutable.run(["mock-bank", "--listen", "127.0.0.1:0", "--qwac-ca", "/nonexistent/ca.pem"])
        XCTAssertEqual(missing.status, 26)
        XCTAssertTrue(missing.standardError.contains("/nonexistent/ca.pem"), missing.standardError)
        let key = try KeyBridgeExecutable.run(["mock-bank", "--listen", "127.0.0.1:0", "--qsealc-ca", token.pki("root-ca-key.pem")])
        XCTAssertEqual(key.status, 4)
        XCTAssertTrue(key.standardError.contains("--qsealc-ca"), key.standardError)
        let notAnAddress = try KeyBridgeExecutable.run(["mock-bank", "--listen", "bank.example:8080"])
        XCTAssertEqual(notAnAddress.status, 1)
        XCTAssertTrue(notAnAddress.standardError.contains("not an IP address"), notAnAddress.standardError)
        let profile = try Command.temporaryDirectory() + "/profile.json"
        try #"{"digest":"MD5"}"#.write(toFile: profile, atomically: true, encoding: .utf8)
        let badProfile = try KeyBridgeExecutable.run(["mock-bank", "--listen", "127.0.0.1:0", "--profile", profile])
        XCTAssertEqual(badProfile.status, 2)
        XCTAssertTrue(badProfile.standardError.contains("--profile"), badProfile.standardError)
        let taken = try KeyBridgeExecutable.run(["mock-bank", "--listen", "127.0.0.1:\(sandbox.server.port)"])
        XCTAssertEqual(taken.status, 1)
        XCTAssertTrue(taken.standardError.contains("Address already in use"), taken.standardError)
        for result in [noListen, badPort, missing, key, notAnAddress, badProfile, taken] {
            XCTAssertEqual(result.standardOutput, "")
            XCTAssertEqual(result.standardError.split(separator: "\n").count, 1, result.standardError)
        }
        let help = try KeyBridgeExecutable.run(["mock-bank", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.standardOutput.contains("--qsealc-ca"), help.standardOutput)
    }
}

import Foundation
import KeyBridgeTestSupport
import OpenBanking
import XCTest

/// `keybridge request --sign …` end to end: nginx's /echo returns the request as the bank
/// received it, and the verifiers check the signature headers in that copy.
final class SignedRequestCommandTests: XCTestCase {
    let token = TestToken.shared
    let bank = BankServer.shared
    let body = #"{"instructedAmount":{"currency":"EUR","amount":"123.50"}}"#

    /// Splits nginx's echo (request line, headers, blank line, body) into request parts.
    private func receivedRequest(_ echo: String, url: String) throws -> HTTPRequestParts {
        let split = try XCTUnwrap(echo.range(of: "\r\n\r\n") ?? echo.range(of: "\n\n"), "no header/body split in: \(echo)")
        // "\r\n" is one Character in Swift, so lines are split on the newline set, not on "\n".
        let head = String(echo[..<split.lowerBound]).components(separatedBy: .newlines).filter { !$0.isEmpty }
        let requestLine = head[0].split(separator: " ")
        var headers: [(name: String, value: String)] = []
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return HTTPRequestParts(method: String(requestLine[0]), url: try XCTUnwrap(URL(string: url)), headers: headers,
                                body: Data(echo[split.upperBound...].utf8))
    }

    private func send(_ signing: [String], path: String) throws -> (Command.Result, String) {
        let url = bank.url(path)
        let result = try KeyBridgeExecutable.run(["request", "--cacert", token.pki("root-ca.pem"), "--cert", token.pki("client-rsa-chain.pem"),
                                                  "--key", token.rsaURI, "-H", "PSU-ID: alice", "-H", "Content-Type: application/json",
                                                  "-d", body] + signing + [url])
        return (result, url)
    }

    func testBerlinGroupSignedRequestVerifiesAsTheBankReceivedIt() throws {
        let (result, url) = try send(["--sign-profile", "berlin-group", "--sign-key", token.ecURI, "--sign-cert", token.pki("client-ec.pem")], path: "/echo")
        XCTAssertEqual(result.status, 0, result.standardError)
        var received = try receivedRequest(result.standardOutput, url: url)
        let verification = try BerlinGroupVerifier().verify(received)
        XCTAssertTrue(verification.signature.headers.contains("psu-id"), "\(verification.signature.headers)")
        // Control: the same copy with a changed amount must fail.
        received.body = Data(body.replacingOccurrences(of: "123.50", with: "923.50").utf8)
        XCTAssertThrowsError(try BerlinGroupVerifier().verify(received))
    }

    func testDetachedJWSSignedRequestVerifiesAsTheBankReceivedIt() throws {
        let (result, url) = try send(["--sign-profile", "jws", "--sign-key", token.rsaURI, "--sign-key-id", "kb-test-kid"], path: "/echo")
        XCTAssertEqual(result.status, 0, result.standardError)
        let received = try receivedRequest(result.standardOutput, url: url)
        let jws = try XCTUnwrap(received.header("x-jws-signature"))
        let verifier = try DetachedJWSVerifier(pem: String(contentsOfFile: token.pki("client-rsa.pem"), encoding: .utf8))
        let verified = try verifier.verify(jws, body: received.body)
        XCTAssertEqual(verified.algorithm, .ps256)
        XCTAssertThrowsError(try verifier.verify(jws, body: Data((body + " ").utf8)))
    }

    func testRFC9421SignedRequestVerifiesAsTheBankReceivedIt() throws {
        let (result, url) = try send(["--sign-profile", "rfc9421", "--sign-key", token.ecURI, "--sign-key-id", "qseal-ec"], path: "/echo")
        XCTAssertEqual(result.status, 0, result.standardError)
        var received = try receivedRequest(result.standardOutput, url: url)
        // nginx proxies nothing here: the echo is of the request as sent to this host and port.
        var verifier = try HTTPMessageVerifier(key: PublicKeyVerifier(pem: String(contentsOfFile: token.pki("client-ec.pem"), encoding: .utf8)),
                                               algorithm: .ecdsaP256SHA256)
        verifier.checksContentDigest = true
        let verified = try verifier.verify(received)
        XCTAssertEqual(verified.parameters.keyID, "qseal-ec")
        received.body = Data((body + "x").utf8)
        XCTAssertThrowsError(try verifier.verify(received), "a changed body must fail the Content-Digest check")
    }

    /// With --sign-cert, RFC 9421 carries the QSealC in TPP-Signature-Certificate and signs over it.
    func testRFC9421WithQSealCSendsAndCoversTheCertificate() throws {
        let seal = try token.keyURI("qseal-ec")
        let (result, url) = try send(["--sign-profile", "rfc9421", "--sign-key", seal, "--sign-cert", token.pki("qseal-ec.pem")], path: "/echo")
        XCTAssertEqual(result.status, 0, result.standardError)
        let received = try receivedRequest(result.standardOutput, url: url)
        let carried = try XCTUnwrap(received.header("TPP-Signature-Certificate"))
        let verifier = try HTTPMessageVerifier(key: PublicKeyVerifier(certificateDER: Array(try XCTUnwrap(Data(base64Encoded: carried)))),
                                               algorithm: .ecdsaP256SHA256)
        let verified = try verifier.verify(received)
        XCTAssertTrue(verified.components.contains(.field("tpp-signature-certificate")), "\(verified.components)")
    }

    func testSigningNeedsItsKeyAndCertificate() throws {
        let (noCertificate, _) = try send(["--sign-profile", "berlin-group", "--sign-key", token.ecURI], path: "/never")
        XCTAssertEqual(noCertificate.status, 2)
        XCTAssertTrue(noCertificate.standardError.contains("--sign-cert"), noCertificate.standardError)
        let (mismatch, _) = try send(["--sign-profile", "berlin-group", "--sign-key", token.ecURI, "--sign-cert", token.pki("client-rsa.pem")], path: "/never")
        XCTAssertNotEqual(mismatch.status, 0)
        XCTAssertEqual(mismatch.standardOutput, "")
        XCTAssertTrue(mismatch.standardError.contains("keybridge: error: cannot sign the request"), mismatch.standardError)
    }
}

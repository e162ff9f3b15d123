import Foundation
import KeyBridgeTestSupport
import XCTest

/// Identities that live wholly on the token: the chain read from certificate objects, and the
/// key found from its certificate.
final class TokenIdentityTests: XCTestCase {
    let token = TestToken.shared
    let bank = BankServer.shared

    private var query: String { token.rsaURI.split(separator: "?").last.map(String.init) ?? "" }
    private var tokenOnly: String { "pkcs11:token=keybridge?\(query)" }

    private func request(_ arguments: [String], path: String) throws -> Command.Result {
        try KeyBridgeExecutable.run(["request", "-v", "--cacert", token.pki("root-ca.pem")] + arguments + [bank.url(path)])
    }

    /// Nothing on disk but the server's CA: nginx, trusting only the root, needs the intermediate
    /// that KeyBridge found on the token.
    func testChainAndKeyComeFromTheToken() throws {
        let result = try request(["--cert", "pkcs11:token=keybridge;object=client-rsa;type=cert?\(query)"], path: "/from-token")
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertTrue(result.standardOutput.contains("\"verify\":\"SUCCESS\""), result.standardOutput)
        XCTAssertTrue(result.standardOutput.contains("CN=tpp-rsa.example"), result.standardOutput)
        XCTAssertTrue(result.standardError.contains("sent with 1 intermediate(s)"), result.standardError)
        XCTAssertTrue(result.standardError.contains("object 'client-rsa'"), result.standardError)
    }

    func testKeyIsFoundFromACertificateFile() throws {
        let result = try request(["--cert", token.pki("client-ec-chain.pem"), "--key", tokenOnly], path: "/by-certificate")
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertTrue(result.standardOutput.contains("CN=tpp-ec.example"), result.standardOutput)
        XCTAssertTrue(result.standardError.contains("object 'client-ec', id 02"), result.standardError)
    }

    func testCertificateWithNoKeyOnTheTokenIsRefused() throws {
        let result = try request(["--cert", token.pki("client-mismatch-chain.pem"), "--key", tokenOnly], path: "/never")
        XCTAssertEqual(result.status, 4, result.standardError)
        XCTAssertTrue(result.standardError.contains("belongs to the certificate"), result.standardError)
        XCTAssertTrue(result.standardError.contains("tpp-mismatch.example"), result.standardError)
        XCTAssertEqual(result.standardOutput, "")
    }

    func testMissingCertificateObjectIsNamed() throws {
        let result = try request(["--cert", "pkcs11:token=keybridge;object=no-such-cert;type=cert?\(query)"], path: "/never")
        XCTAssertEqual(result.status, 4, result.standardError)
        XCTAssertTrue(result.standardError.contains("no certificate object matches pkcs11:token=keybridge;object=no-such-cert"), result.standardError)
        XCTAssertFalse(result.standardError.contains("pin-source"), "the URI's query was shown")
    }
}

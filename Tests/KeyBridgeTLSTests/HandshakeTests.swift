import Foundation
import KeyBridgeTestSupport
import KeyBridgeTLS
import XCTest

/// Full mTLS handshakes against the nginx test bank, which echoes what it saw of the client
/// certificate. Each combination of TLS version and key type is checked on nginx's side.
final class HandshakeTests: XCTestCase {
    let token = TestToken.shared
    let bank = BankServer.shared

    private struct BankEcho: Decodable {
        var subject: String
        var issuer: String?
        var serial: String
        var verify: String
        var `protocol`: String
        var cipher: String?
        var uri: String?
    }

    private func serial(of certificate: String) throws -> String {
        let result = try Command.run(["openssl", "x509", "-in", token.pki(certificate), "-noout", "-serial"])
        return result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
    }

    private func handshake(key uri: String, chain: String, version: TLSVersion) throws -> (BankEcho, TLSSessionInfo?) {
        let configuration = TLSConfiguration(certificateChain: .pemFile(token.pki(chain)), key: .pkcs11(uri),
                                             trustRoots: .pemFile(token.pki("root-ca.pem")),
                                             minimumVersion: version, maximumVersion: version)
        let client = try HTTPClient(configuration: configuration)
        let response = try client.send(HTTPRequest(url: bank.url("/accounts/\(version.rawValue)")))
        XCTAssertEqual(response.status, 200, String(decoding: response.body, as: UTF8.self))
        return (try JSONDecoder().decode(BankEcho.self, from: response.body), response.tls)
    }

    private func assertBankSawToken(_ echo: BankEcho, certificate: String, commonName: String, version: TLSVersion) throws {
        XCTAssertEqual(echo.verify, "SUCCESS")
        XCTAssertEqual(echo.protocol, "TLSv\(version.rawValue)")
        XCTAssertTrue(echo.subject.contains("CN=\(commonName)"), echo.subject)
        XCTAssertTrue(echo.subject.contains("organizationIdentifier=PSDDE-BAFIN-123456"), echo.subject)
        XCTAssertEqual(echo.issuer, "CN=KeyBridge Test QTSP CA,O=KeyBridge Test QTSP,C=DE")
        XCTAssertEqual(echo.serial.uppercased(), try serial(of: certificate).uppercased())
        XCTAssertEqual(echo.uri, "/accounts/\(version.rawValue)")
    }

    func testRSAKeyOverTLS13() throws {
        let (echo, tls) = try handshake(key: token.rsaURI, chain: "client-rsa-chain.pem", version: .v1_3)
        try assertBankSawToken(echo, certificate: "client-rsa.pem", commonName: "tpp-rsa.example", version: .v1_3)
        XCTAssertEqual(tls?.version, "TLSv1.3")
        XCTAssertEqual(tls?.clientSignatureScheme, "rsa_pss_rsae_sha256")
        XCTAssertTrue(tls?.tokenMechanism?.hasPrefix("CKM_SHA256_RSA_PKCS_PSS(MGF1-SHA256, salt 32)") ?? false, "\(String(describing: tls))")
    }

    func testRSAKeyOverTLS12() throws {
        let (echo, tls) = try handshake(key: token.rsaURI, chain: "client-rsa-chain.pem", version: .v1_2)
        try assertBankSawToken(echo, certificate: "client-rsa.pem", commonName: "tpp-rsa.example", version: .v1_2)
        XCTAssertEqual(tls?.version, "TLSv1.2")
        XCTAssertNotNil(tls?.clientSignatureScheme)
        XCTAssertNotNil(tls?.tokenMechanism)
    }

    func testECKeyOverTLS13() throws {
        let (echo, tls) = try handshake(key: token.ecURI, chain: "client-ec-chain.pem", version: .v1_3)
        try assertBankSawToken(echo, certificate: "client-ec.pem", commonName: "tpp-ec.example", version: .v1_3)
        XCTAssertEqual(tls?.clientSignatureScheme, "ecdsa_secp256r1_sha256")
        XCTAssertTrue(tls?.tokenMechanism?.hasPrefix("CKM_ECDSA") ?? false, "\(String(describing: tls))")
    }

    func testECKeyOverTLS12() throws {
        let (echo, tls) = try handshake(key: token.ecURI, chain: "client-ec-chain.pem", version: .v1_2)
        try assertBankSawToken(echo, certificate: "client-ec.pem", commonName: "tpp-ec.example", version: .v1_2)
        XCTAssertEqual(tls?.version, "TLSv1.2")
        XCTAssertTrue(tls?.tokenMechanism?.hasPrefix("CKM_ECDSA") ?? false, "\(String(describing: tls))")
    }

    func testP384KeyOverTLS13() throws {
        let (echo, tls) = try handshake(key: token.ec384URI, chain: "client-ec384-chain.pem", version: .v1_3)
        try assertBankSawToken(echo, certificate: "client-ec384.pem", commonName: "tpp-ec384.example", version: .v1_3)
        XCTAssertEqual(tls?.clientSignatureScheme, "ecdsa_secp384r1_sha384")
    }

    /// Control: without the intermediate the bank must refuse, so SUCCESS above means the chain was sent.
    func testBankRefusesLeafWithoutIntermediate() throws {
        let configuration = TLSConfiguration(certificateChain: .pemFile(token.pki("client-rsa.pem")), key: .pkcs11(token.rsaURI),
                                             trustRoots: .pemFile(token.pki("root-ca.pem")))
        let response = try HTTPClient(configuration: configuration).send(HTTPRequest(url: bank.url()))
        XCTAssertEqual(response.status, 400)
        XCTAssertTrue(String(decoding: response.body, as: UTF8.self).contains("FAILED"))
    }

    func testKeepAliveReusesTheConnection() throws {
        let configuration = TLSConfiguration(certificateChain: .pemFile(token.pki("client-rsa-chain.pem")), key: .pkcs11(token.rsaURI),
                                             trustRoots: .pemFile(token.pki("root-ca.pem")))
        let client = try HTTPClient(configuration: configuration)
        let first = try client.send(HTTPRequest(url: bank.url("/one")))
        let second = try client.send(HTTPRequest(method: "POST", url: bank.url("/two"), body: Data("{}".utf8)))
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(second.status, 200)
        XCTAssertTrue(String(decoding: second.body, as: UTF8.self).contains("\"method\":\"POST\""))
        // A reused connection runs no new handshake, so no new session info is recorded.
        XCTAssertNotNil(first.tls)
        XCTAssertNil(second.tls)
    }
}

import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import KeyBridgeTLS
import OpenBanking
import PKCS11
import XCTest

/// The example of each DocC catalog, run with the test token's paths in place of the
/// placeholders (/etc/keybridge/…, /run/secrets/hsm-pin, api.bank.example).
final class DocumentationExampleTests: XCTestCase {
    let token = TestToken.shared

    private func catalog(_ module: String) throws -> String {
        try String(contentsOfFile: TestToken.repositoryRoot + "/Sources/\(module)/\(module).docc/\(module).md", encoding: .utf8)
    }

    func testPKCS11Example() throws {
        let text = try catalog("PKCS11")
        XCTAssertTrue(text.contains("let key = try PrivateKey.resolve(uri)"))
        XCTAssertTrue(text.contains("mechanism: .rsaPSSHashing(hash: .sha256, mgf1: .sha256, saltLength: 32))"))

        let uri = try PKCS11URI(parsing: token.rsaURI)
        let key = try PrivateKey.resolve(uri)
        let message = Array("pay 10 EUR".utf8)
        let signature = try key.sign(message, mechanism: .rsaPSSHashing(hash: .sha256, mgf1: .sha256, saltLength: 32))
        XCTAssertEqual(signature.count, 256)

        // openssl verifies it with the certificate's public key; a flipped bit must fail.
        let directory = try Command.temporaryDirectory()
        let publicKey = directory + "/rsa.pub"
        let exported = try Command.run(["/usr/bin/openssl", "x509", "-in", token.pki("client-rsa.pem"), "-pubkey", "-noout", "-out", publicKey])
        XCTAssertEqual(exported.status, 0, exported.combined)
        try Data(message).write(to: URL(fileURLWithPath: directory + "/message"))
        for (name, bytes) in [("good", signature), ("bad", signature.enumerated().map { $0.offset == 10 ? $0.element ^ 1 : $0.element })] {
            try Data(bytes).write(to: URL(fileURLWithPath: directory + "/\(name).sig"))
            let verified = try Command.run(["/usr/bin/openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
                                            "-verify", publicKey, "-signature", directory + "/\(name).sig", directory + "/message"])
            XCTAssertEqual(verified.status == 0, name == "good", "\(name): \(verified.combined)")
        }
    }

    func testKeyBridgeTLSExample() throws {
        let text = try catalog("KeyBridgeTLS")
        XCTAssertTrue(text.contains("let client = try HTTPClient(configuration: configuration)"))
        XCTAssertTrue(text.contains("let response = try client.send(HTTPRequest(url: "))

        let bank = BankServer.shared
        let configuration = TLSConfiguration(
            certificateChain: .pemFile(token.pki("client-rsa-chain.pem")),
            key: .pkcs11(token.rsaURI),
            trustRoots: .pemFile(token.pki("root-ca.pem")))
        let client = try HTTPClient(configuration: configuration)
        let response = try client.send(HTTPRequest(url: bank.url("/v1/accounts")))
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.tls?.version, "TLSv1.3")
        XCTAssertEqual(response.tls?.clientSignatureScheme, "rsa_pss_rsae_sha256")
        XCTAssertTrue(String(decoding: response.body, as: UTF8.self).contains("\"verify\":\"SUCCESS\""))
    }

    func testOpenBankingExample() throws {
        let text = try catalog("OpenBanking")
        XCTAssertTrue(text.contains("request.headers += try signer.headers(for: request)"))
        XCTAssertTrue(text.contains("let verification = try BerlinGroupVerifier(profile: BerlinGroupProfile(serialCase: .lower)).verify(request)"))

        let sealKey = try ProviderKey(uri: try token.keyURI("qseal-ec"))
        let qsealc = try EIDASCertificate(pem: String(contentsOfFile: token.pki("qseal-ec.pem"), encoding: .utf8))
        let signer = try BerlinGroupSigner(key: sealKey, certificateDER: qsealc.der,
                                           profile: BerlinGroupProfile(serialCase: .lower))
        var request = HTTPRequestParts(method: "POST",
                                       url: URL(string: "https://api.bank.example/v1/payments/sepa-credit-transfers")!,
                                       headers: [("Content-Type", "application/json"), ("PSU-ID", "alice")],
                                       body: Data(#"{"instructedAmount":{"currency":"EUR","amount":"10.00"}}"#.utf8))
        request.headers += try signer.headers(for: request)
        let verification = try BerlinGroupVerifier(profile: BerlinGroupProfile(serialCase: .lower)).verify(request)
        XCTAssertTrue(verification.signingString.contains("psu-id: alice"), verification.signingString)
        // Control: a changed body no longer verifies.
        var tampered = request
        tampered.body = Data(#"{"instructedAmount":{"currency":"EUR","amount":"99.00"}}"#.utf8)
        XCTAssertThrowsError(try BerlinGroupVerifier(profile: BerlinGroupProfile(serialCase: .lower)).verify(tampered))
    }
}

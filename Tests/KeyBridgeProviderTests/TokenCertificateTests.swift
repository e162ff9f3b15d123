import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import XCTest

/// Certificates kept on the token: chains built from issuer links, and keys found from a
/// certificate alone.
final class TokenCertificateTests: XCTestCase {
    let token = TestToken.shared

    private var tokenOnlyURI: String { token.uri(token.rsaURI, query: "").replacingOccurrences(of: ";object=client-rsa;type=private", with: "") + "?" + (token.rsaURI.split(separator: "?").last.map(String.init) ?? "") }

    private func derFile(_ name: String) throws -> [UInt8] {
        let directory = try Command.temporaryDirectory()
        let path = directory + "/cert.der"
        let result = try Command.run(["openssl", "x509", "-in", token.pki(name), "-outform", "DER", "-out", path])
        XCTAssertEqual(result.status, 0, result.standardError)
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func testChainFromTokenHasLeafThenIssuingCA() throws {
        let query = token.rsaURI.split(separator: "?").last.map(String.init) ?? ""
        let chain = try TokenCertificates.chain(uri: "pkcs11:token=keybridge;object=client-rsa;type=cert?\(query)")
        XCTAssertEqual(chain.count, 2, "leaf and the issuing CA, without the root")
        XCTAssertTrue(chain.first == (try derFile("client-rsa.pem")), "the chain does not start with the leaf")
        XCTAssertTrue(chain.last == (try derFile("issuing-ca.pem")), "the chain does not end with the issuing CA")
    }

    func testUnknownCertificateObjectIsNamed() throws {
        let query = token.rsaURI.split(separator: "?").last.map(String.init) ?? ""
        XCTAssertThrowsError(try TokenCertificates.chain(uri: "pkcs11:token=keybridge;object=nope;type=cert?\(query)")) { error in
            XCTAssertTrue("\(error)".contains("no certificate object matches"), "\(error)")
        }
    }

    func testKeyIsFoundFromItsCertificate() throws {
        let found = try TokenCertificates.privateKeyURI(forCertificate: derFile("client-ec.pem"), tokenURI: tokenOnlyURI)
        XCTAssertTrue(found.contains("id=%02"), found)
        // The key found signs, and its signature verifies with the certificate.
        let key = try ProviderKey(uri: found)
        XCTAssertEqual(try key.publicKeyPEM(), try Command.run(["openssl", "x509", "-in", token.pki("client-ec.pem"), "-pubkey", "-noout"]).standardOutput)
    }

    func testCertificateWithoutAKeyOnTheTokenIsRefused() throws {
        XCTAssertThrowsError(try TokenCertificates.privateKeyURI(forCertificate: derFile("client-mismatch.pem"), tokenURI: tokenOnlyURI)) { error in
            XCTAssertTrue("\(error)".contains("belongs to the certificate"), "\(error)")
            XCTAssertTrue("\(error)".contains("tpp-mismatch.example"), "\(error)")
        }
    }
}

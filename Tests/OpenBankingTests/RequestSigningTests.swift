import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import OpenBanking
import XCTest

final class RequestSigningTests: XCTestCase {
    func testTargetKeepsPathAndQuery() throws {
        let parts = HTTPRequestParts(method: "get", url: try XCTUnwrap(URL(string: "https://bank.example/v1/payments?limit=10&x=%20")))
        XCTAssertEqual(parts.method, "GET")
        XCTAssertEqual(parts.target, "/v1/payments?limit=10&x=%20")
        XCTAssertEqual(HTTPRequestParts(method: "GET", url: try XCTUnwrap(URL(string: "https://bank.example"))).target, "/")
    }

    /// Known answers: SHA-256 and SHA-512 of the empty string.
    func testDigestsOfTheEmptyBody() {
        XCTAssertEqual(Data(MessageDigest.sha256(Data())).base64EncodedString(), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        XCTAssertEqual(Data(MessageDigest.sha512(Data())).base64EncodedString(),
                       "z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==")
    }

    func testTokenSignatureVerifiesWithTheCertificateAndECDSAEncodingsRoundTrip() throws {
        let token = TestToken.shared
        let key = try ProviderKey(uri: token.ecURI)
        let message = Array("digest: SHA-256=abc".utf8)
        let der = try key.sign(message, scheme: .ecdsa(.sha256))
        let verifier = try PublicKeyVerifier(pem: String(contentsOfFile: token.pki("client-ec.pem"), encoding: .utf8))
        XCTAssertTrue(verifier.verify(der, over: message, scheme: .ecdsa(.sha256)))
        XCTAssertFalse(verifier.verify(der, over: message + [0x20], scheme: .ecdsa(.sha256)))
        let raw = try ECDSASignatureEncoding.rawFromDER(der, width: 32)
        XCTAssertEqual(raw.count, 64)
        XCTAssertEqual(try ECDSASignatureEncoding.derFromRaw(raw), der)
    }
}

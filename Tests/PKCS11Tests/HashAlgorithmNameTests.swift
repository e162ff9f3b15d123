import PKCS11
import XCTest

/// `HashAlgorithm(openSSLName:)` runs in every digest-sign init of the provider, so it parses
/// bytes without Foundation; these are the spellings OpenSSL hands it.
final class HashAlgorithmNameTests: XCTestCase {
    func testOpenSSLSpellingsAreRecognised() {
        XCTAssertEqual(HashAlgorithm(openSSLName: "SHA256"), .sha256)
        XCTAssertEqual(HashAlgorithm(openSSLName: "SHA2-256"), .sha256)
        XCTAssertEqual(HashAlgorithm(openSSLName: "sha-256"), .sha256)
        XCTAssertEqual(HashAlgorithm(openSSLName: "sha_384"), .sha384)
        XCTAssertEqual(HashAlgorithm(openSSLName: "SHA2-512"), .sha512)
        XCTAssertEqual(HashAlgorithm(openSSLName: "sha224"), .sha224)
        XCTAssertEqual(HashAlgorithm(openSSLName: "SHA1"), .sha1)
    }

    func testOtherNamesAreRefused() {
        XCTAssertNil(HashAlgorithm(openSSLName: "MD5"))
        XCTAssertNil(HashAlgorithm(openSSLName: "SHA3-256"))
        XCTAssertNil(HashAlgorithm(openSSLName: "SHA512-256"))
        XCTAssertNil(HashAlgorithm(openSSLName: ""))
        // Only ASCII letters are folded: a non-ASCII look-alike is not SHA256.
        XCTAssertNil(HashAlgorithm(openSSLName: "ＳＨＡ256"))
    }
}

import PKCS11
import XCTest
@testable import KeyBridgeBench

/// The raw C_Sign column must repeat exactly the mechanism the provider reported, or refuse.
final class RawSignerTests: XCTestCase {
    func testTheProvidersMechanismIsRepeated() throws {
        XCTAssertEqual(try RawSigner.mechanism(matching: "CKM_SHA256_RSA_PKCS (the token hashes and signs)", for: .rsaPKCS1),
                       .rsaPKCS1Hashing(.sha256))
        XCTAssertEqual(try RawSigner.mechanism(matching: "CKM_RSA_PKCS (DigestInfo made in software)", for: .rsaPKCS1), .rsaPKCS1)
        XCTAssertEqual(try RawSigner.mechanism(matching: "CKM_SHA256_RSA_PKCS_PSS(MGF1-SHA256, salt 32) (the token hashes and signs)", for: .rsaPSS),
                       .rsaPSSHashing(hash: .sha256, mgf1: .sha256, saltLength: 32))
        XCTAssertEqual(try RawSigner.mechanism(matching: "CKM_RSA_PKCS_PSS(SHA256, MGF1-SHA256, salt 32) (software digest)", for: .rsaPSS),
                       .rsaPSS(hash: .sha256, mgf1: .sha256, saltLength: 32))
        XCTAssertEqual(try RawSigner.mechanism(matching: "CKM_ECDSA_SHA256 (the token hashes)", for: .ecdsa), .ecdsaHashing(.sha256))
        XCTAssertEqual(try RawSigner.mechanism(matching: "CKM_ECDSA (software SHA256 digest)", for: .ecdsa), .ecdsa)
    }

    func testAMechanismTheColumnCannotRepeatIsRefused() {
        // CKM_RSA_X_509 (padding made in software) or a PSS salt other than the hash length.
        XCTAssertThrowsError(try RawSigner.mechanism(matching: "CKM_RSA_X_509 (PKCS#1 block made in software)", for: .rsaPKCS1))
        XCTAssertThrowsError(try RawSigner.mechanism(matching: "CKM_RSA_PKCS_PSS(SHA256, MGF1-SHA256, salt 222) (x)", for: .rsaPSS))
        XCTAssertThrowsError(try RawSigner.mechanism(matching: nil, for: .ecdsa))
    }

    func testRawECDSAIsEncodedAsDER() throws {
        // r has its top bit set (needs a leading zero in DER), s has leading zero bytes (dropped).
        let r = [UInt8](repeating: 0x80, count: 32)
        let s = [0, 0] + [UInt8](repeating: 0x11, count: 30)
        let der = try XCTUnwrap(RawSigner.derECDSA(r + s))
        XCTAssertEqual(der, [0x30, 0x43, 0x02, 0x21, 0x00] + r + [0x02, 0x1e] + [UInt8](repeating: 0x11, count: 30))
        XCTAssertNil(RawSigner.derECDSA([1, 2, 3]), "an odd length is not r||s")
    }
}

import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import PKCS11
import XCTest

/// Signatures made through the provider, each checked by the `openssl` command-line tool with
/// the public key the provider exported, and that key checked against the issued certificate.
final class ProviderSignatureTests: XCTestCase {
    let token = TestToken.shared
    let message = Array("GET /accounts HTTP/1.1 — signed on the token".utf8)

    private func verifyWithOpenSSL(key: ProviderKey, signature: [UInt8], options: [String], digest: String = "-sha256",
                                   file: StaticString = #filePath, line: UInt = #line) throws -> Bool {
        let directory = try Command.temporaryDirectory()
        let publicKeyPath = directory + "/public.pem"
        try key.publicKeyPEM().write(toFile: publicKeyPath, atomically: true, encoding: .utf8)
        try Data(message).write(to: URL(fileURLWithPath: directory + "/message"))
        try Data(signature).write(to: URL(fileURLWithPath: directory + "/signature"))
        let result = try Command.run(["openssl", "dgst", digest, "-verify", publicKeyPath] + options
                                     + ["-signature", directory + "/signature", directory + "/message"])
        return result.status == 0 && result.standardOutput.contains("Verified OK")
    }

    private func assertExportedKeyMatchesCertificate(_ key: ProviderKey, certificate: String) throws {
        let fromCertificate = try Command.run(["openssl", "x509", "-in", token.pki(certificate), "-noout", "-pubkey"])
        XCTAssertEqual(fromCertificate.status, 0)
        XCTAssertEqual(try key.publicKeyPEM(), fromCertificate.standardOutput)
    }

    func testRSAPKCS1SignatureVerifiesWithOpenSSL() throws {
        let key = try ProviderKey(uri: token.rsaURI)
        XCTAssertEqual(key.algorithm, "RSA")
        XCTAssertEqual(key.bits, 2048)
        try assertExportedKeyMatchesCertificate(key, certificate: "client-rsa.pem")
        let signature = try key.sign(message, scheme: .rsaPKCS1(.sha256))
        XCTAssertEqual(signature.count, 256)
        XCTAssertTrue(try verifyWithOpenSSL(key: key, signature: signature, options: []))
        // Control: a changed signature must not verify, or the check above proves nothing.
        var tampered = signature
        tampered[10] ^= 0x01
        XCTAssertFalse(try verifyWithOpenSSL(key: key, signature: tampered, options: []))
    }

    func testRSAPSSSignatureVerifiesWithOpenSSL() throws {
        let key = try ProviderKey(uri: token.rsaURI)
        for hash in [HashAlgorithm.sha256, .sha384, .sha512] {
            let signature = try key.sign(message, scheme: .rsaPSS(hash))
            let options = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest", "-sigopt", "rsa_mgf1_md:\(hash.rawValue)"]
            XCTAssertTrue(try verifyWithOpenSSL(key: key, signature: signature, options: options, digest: "-" + hash.rawValue.lowercased()), "\(hash)")
            // Control: the same signature is not a PKCS#1 v1.5 one.
            XCTAssertFalse(try verifyWithOpenSSL(key: key, signature: signature, options: [], digest: "-" + hash.rawValue.lowercased()))
        }
        XCTAssertTrue(ProviderDiagnostics.lastMechanism?.hasPrefix("CKM_SHA512_RSA_PKCS_PSS") ?? false, ProviderDiagnostics.lastMechanism ?? "none")
    }

    func testECDSAP256SignatureVerifiesWithOpenSSL() throws {
        let key = try ProviderKey(uri: token.ecURI)
        XCTAssertEqual(key.algorithm, "EC")
        XCTAssertEqual(key.bits, 256)
        try assertExportedKeyMatchesCertificate(key, certificate: "client-ec.pem")
        let signature = try key.sign(message, scheme: .ecdsa(.sha256))
        XCTAssertEqual(signature.first, 0x30, "ECDSA output must be DER, not raw r||s")
        XCTAssertTrue(try verifyWithOpenSSL(key: key, signature: signature, options: []))
        var tampered = signature
        tampered[tampered.count - 3] ^= 0x01
        XCTAssertFalse(try verifyWithOpenSSL(key: key, signature: tampered, options: []))
    }

    func testECDSAP384SignatureVerifiesWithOpenSSL() throws {
        let key = try ProviderKey(uri: token.ec384URI)
        XCTAssertEqual(key.bits, 384)
        try assertExportedKeyMatchesCertificate(key, certificate: "client-ec384.pem")
        let signature = try key.sign(message, scheme: .ecdsa(.sha384))
        XCTAssertTrue(try verifyWithOpenSSL(key: key, signature: signature, options: [], digest: "-sha384"))
    }

    func testEd25519SignatureVerifiesWithOpenSSL() throws {
        let key = try ProviderKey(uri: token.keyURI("ed25519"))
        XCTAssertEqual(key.algorithm, "ED25519")
        try assertExportedKeyMatchesCertificate(key, certificate: "client-ed25519.pem")
        let signature = try key.sign(message, scheme: .ed25519)
        XCTAssertEqual(signature.count, 64)
        let directory = try Command.temporaryDirectory()
        try key.publicKeyPEM().write(toFile: directory + "/public.pem", atomically: true, encoding: .utf8)
        try Data(message).write(to: URL(fileURLWithPath: directory + "/message"))
        func verifies(_ candidate: [UInt8]) throws -> Bool {
            try Data(candidate).write(to: URL(fileURLWithPath: directory + "/signature"))
            let result = try Command.run(["openssl", "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", directory + "/public.pem",
                                          "-in", directory + "/message", "-sigfile", directory + "/signature"])
            return result.status == 0 && result.standardOutput.contains("Signature Verified Successfully")
        }
        XCTAssertTrue(try verifies(signature))
        var tampered = signature
        tampered[0] ^= 0x01
        XCTAssertFalse(try verifies(tampered))
        XCTAssertThrowsError(try key.sign(message, scheme: .ecdsa(.sha256)), "a scheme for another key type must be refused")
    }
}

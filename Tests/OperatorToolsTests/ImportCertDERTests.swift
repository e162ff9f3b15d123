import Foundation
import KeyBridgeTestSupport
import XCTest

/// `keys import-cert --chain leaf.der`: QTSPs often hand out the leaf as a DER .cer file. The
/// command refused it with "holds no readable PEM certificate … give … PEM or DER form", naming
/// DER as a fix it did not accept. `doctor --cert leaf.der` failed the same way.
final class ImportCertDERTests: XCTestCase {
    func testDoctorReadsADERCertificateAndMatchesItToTheKey() throws {
        let token = TestToken.shared
        let directory = try Command.temporaryDirectory()
        let der = directory + "/client-rsa.der"
        let converted = try Check.openssl(["x509", "-in", token.pki("client-rsa.pem"), "-outform", "DER", "-out", der])
        XCTAssertEqual(converted.status, 0, converted.combined)
        func statuses(_ certificate: String) throws -> [String: String] {
            let result = try KeyBridgeExecutable.run(["doctor", "--json", "--key", token.rsaURI, "--cert", certificate,
                                                      "--cacert", token.pki("root-ca.pem")])
            let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any], result.combined)
            let checks = try XCTUnwrap(document["checks"] as? [[String: Any]])
            return Dictionary(checks.map { ($0["title"] as? String ?? "", $0["status"] as? String ?? "") }, uniquingKeysWith: { first, _ in first })
        }
        let fromDER = try statuses(der)
        XCTAssertEqual(fromDER["certificate found"], "passed", "\(fromDER)")
        XCTAssertEqual(fromDER["certificate matches key"], "passed", "\(fromDER)")
        // Control: a DER certificate of another key is read and then refused as not the key's.
        let otherDER = directory + "/client-ec.der"
        XCTAssertEqual(try Check.openssl(["x509", "-in", token.pki("client-ec.pem"), "-outform", "DER", "-out", otherDER]).status, 0)
        let other = try statuses(otherDER)
        XCTAssertEqual(other["certificate found"], "passed", "\(other)")
        XCTAssertEqual(other["certificate matches key"], "failed", "\(other)")
    }

    func testDERLeafIsStoredAndGarbageGetsOneErrorWithNothingStored() throws {
        let token = try FreshToken(label: "derimport")
        let directory = try Command.temporaryDirectory()
        let key = try token.generate("ec:P-256", label: "qwac", id: "0c")
        let request = directory + "/qwac.csr"
        let made = try token.keybridge(["keys", "csr", "--key", key, "--subject", "/C=DE/O=Example TPP GmbH/CN=localhost",
                                        "--eidas-role", "PSP_AI", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-123456", "-o", request])
        XCTAssertEqual(made.status, 0, made.standardError)
        let leaf = directory + "/qwac.der"
        let issued = try Check.openssl(["x509", "-req", "-in", request, "-CA", TestToken.shared.pki("issuing-ca.pem"),
                                        "-CAkey", TestToken.shared.pki("issuing-ca-key.pem"), "-days", "30", "-outform", "DER", "-out", leaf])
        XCTAssertEqual(issued.status, 0, issued.combined)

        // Garbage that is neither PEM nor DER: one error line, exit 4, nothing on the token.
        let garbage = directory + "/garbage.cer"
        try Data((0..<300).map { UInt8(truncatingIfNeeded: $0 &* 37) }).write(to: URL(fileURLWithPath: garbage))
        let refused = try token.keybridge(["keys", "import-cert", "--chain", garbage, "--key", key])
        XCTAssertEqual(refused.status, 4, refused.combined)
        Check.oneErrorLine(refused)
        XCTAssertTrue(refused.standardError.contains("neither PEM nor a DER certificate"), refused.standardError)
        XCTAssertEqual(try token.count("Certificate Object"), 0)

        let stored = try token.keybridge(["keys", "import-cert", "--chain", leaf, "--key", key])
        XCTAssertEqual(stored.status, 0, stored.combined)
        XCTAssertTrue(stored.standardOutput.contains("stored: 'qwac' (id 0c)"), stored.standardOutput)
        XCTAssertEqual(try token.count("Certificate Object"), 1)
        // The stored object is the same certificate, byte for byte (read back by pkcs11-tool).
        let readBack = directory + "/back.der"
        let pin = try String(contentsOfFile: token.pinFile, encoding: .utf8)
        let read = try Command.run(["pkcs11-tool", "--module", FreshToken.module, "--token-label", token.label, "--login", "--pin", pin,
                                    "--read-object", "--type", "cert", "--id", "0c", "-o", readBack],
                                   environment: ["SOFTHSM2_CONF": token.config, "PATH": "/usr/bin:/bin"])
        XCTAssertEqual(read.status, 0, read.combined)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: readBack)), try Data(contentsOf: URL(fileURLWithPath: leaf)))
    }
}

import Foundation
import KeyBridgeTestSupport
import XCTest

/// `cert inspect` printed the subject's O and CN raw, so a certificate (they come from banks,
/// QTSPs and mail) with an ESC sequence in a name drove the operator's terminal. The RFC 2253
/// lines were already escaped by OpenSSL; the per-attribute lines were not, nor doctor's
/// expiry line, which names the certificate by its CN.
final class CertInspectControlCharacterTests: XCTestCase {
    func testNamesWithEscapesAreShownEscaped() throws {
        let directory = try Command.temporaryDirectory()
        let certificate = directory + "/evil.pem"
        let made = try Check.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                      "-keyout", directory + "/evil.key", "-out", certificate, "-days", "1", "-utf8",
                                      "-subj", "/CN=a\u{1B}]0;owned\u{7}b/O=o\u{1B}[31m"])
        XCTAssertEqual(made.status, 0, made.combined)
        let inspected = try KeyBridgeExecutable.run(["cert", "inspect", certificate])
        XCTAssertEqual(inspected.status, 0, inspected.standardError)
        XCTAssertFalse(inspected.standardOutput.unicodeScalars.contains("\u{1B}"), inspected.standardOutput)
        XCTAssertFalse(inspected.standardOutput.unicodeScalars.contains("\u{7}"), inspected.standardOutput)
        XCTAssertTrue(inspected.standardOutput.contains(#"a\u{1B}]0;owned\u{7}b"#), inspected.standardOutput)
        // Control: the plain parts of the names are still shown as they are.
        XCTAssertTrue(inspected.standardOutput.contains("Organization (O):       o\\u{1B}[31m"), inspected.standardOutput)
    }

    func testDoctorShowsTheCertificatesNameEscaped() throws {
        let directory = try Command.temporaryDirectory()
        let certificate = directory + "/evil.pem"
        let made = try Check.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                      "-keyout", directory + "/evil.key", "-out", certificate, "-days", "1", "-utf8",
                                      "-subj", "/CN=a\u{1B}]0;owned\u{7}b"])
        XCTAssertEqual(made.status, 0, made.combined)
        let doctor = try KeyBridgeExecutable.run(["doctor", "--key", TestToken.shared.rsaURI, "--cert", certificate])
        XCTAssertEqual(doctor.status, 3, doctor.combined)
        XCTAssertFalse(doctor.standardOutput.unicodeScalars.contains("\u{1B}"), doctor.standardOutput)
        XCTAssertTrue(doctor.standardOutput.contains(#"'a\u{1B}]0;owned\u{7}b' expires in 0 days"#), doctor.standardOutput)
    }
}

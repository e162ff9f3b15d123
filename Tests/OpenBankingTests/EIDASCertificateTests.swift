import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import OpenBanking
import XCTest

/// eIDAS certificate inspection: every parsed value is checked against the `openssl` command
/// (x509 and asn1parse), QSealCs are made here with openssl, and malformed QCStatements are
/// built as raw DER.
final class EIDASCertificateTests: XCTestCase {
    let token = TestToken.shared

    // MARK: - Helpers

    @discardableResult
    private func openssl(_ arguments: [String]) throws -> String {
        let result = try Command.run(["openssl"] + arguments)
        XCTAssertEqual(result.status, 0, "openssl \(arguments.joined(separator: " ")): \(result.standardError)")
        return result.standardOutput
    }

    /// `openssl x509 -noout -FIELD` output after its `name=`.
    private func x509Field(_ file: String, _ options: [String]) throws -> String {
        let line = try openssl(["x509", "-in", file, "-noout"] + options).trimmingCharacters(in: .whitespacesAndNewlines)
        return String(line[line.index(after: try XCTUnwrap(line.firstIndex(of: "=")))...])
    }

    /// "Mar  7 16:24:29 2029 GMT" as openssl prints validity dates.
    private func opensslDate(_ text: String) throws -> Date {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "MMM d HH:mm:ss yyyy zzz"
        let collapsed = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return try XCTUnwrap(formatter.date(from: collapsed), "cannot read the date '\(text)'")
    }

    private func load(_ path: String) throws -> EIDASCertificate {
        try EIDASCertificate(pem: String(contentsOfFile: path, encoding: .utf8))
    }

    private func derBytes(_ pemFile: String) throws -> [UInt8] {
        let path = try Command.temporaryDirectory() + "/cert.der"
        try openssl(["x509", "-in", pemFile, "-outform", "DER", "-out", path])
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// A self-signed EC certificate whose QCStatements come from an openssl config: the
    /// statements are written as `ASN1:` sections, so openssl encodes them, not this test.
    private func makeQSealC(organizationIdentifier: String = "PSDDE-BAFIN-123456", ncaID: String = "DE-BAFIN",
                            qcType: String = "0.4.0.1862.1.6.2", commonName: String = "KeyBridge Test TPP seal") throws -> String {
        let directory = try Command.temporaryDirectory()
        let config = """
        [req]
        distinguished_name = dn
        prompt             = no
        string_mask        = utf8only
        x509_extensions    = seal
        [dn]
        C                      = DE
        O                      = KeyBridge Test TPP GmbH
        organizationIdentifier = \(organizationIdentifier)
        CN                     = \(commonName)
        [seal]
        basicConstraints  = critical, CA:FALSE
        keyUsage          = critical, digitalSignature, nonRepudiation
        1.3.6.1.5.5.7.1.3 = ASN1:SEQUENCE:qc_statements
        [qc_statements]
        compliance = SEQUENCE:qc_compliance
        sscd       = SEQUENCE:qc_sscd
        type       = SEQUENCE:qc_type
        psd2       = SEQUENCE:qc_psd2
        private    = SEQUENCE:qc_private
        [qc_compliance]
        statementId = OID:0.4.0.1862.1.1
        [qc_sscd]
        statementId = OID:0.4.0.1862.1.4
        [qc_type]
        statementId = OID:0.4.0.1862.1.6
        types       = SEQUENCE:qc_type_list
        [qc_type_list]
        type = OID:\(qcType)
        [qc_psd2]
        statementId = OID:0.4.0.19495.2
        info        = SEQUENCE:psd2_info
        [psd2_info]
        rolesOfPSP = SEQUENCE:psd2_roles
        nCAName    = FORMAT:UTF8,UTF8String:Federal Financial Supervisory Authority
        nCAId      = FORMAT:UTF8,UTF8String:\(ncaID)
        [psd2_roles]
        pi = SEQUENCE:role_pi
        ic = SEQUENCE:role_ic
        [role_pi]
        roleOfPspOid  = OID:0.4.0.19495.1.2
        roleOfPspName = FORMAT:UTF8,UTF8String:PSP_PI
        [role_ic]
        roleOfPspOid  = OID:0.4.0.19495.1.4
        roleOfPspName = FORMAT:UTF8,UTF8String:PSP_IC
        # A statement nobody defines, with an INTEGER as its info: listed by OID, never fatal.
        [qc_private]
        statementId = OID:1.3.6.1.4.1.55555.1
        info        = INTEGER:42
        """
        try config.write(toFile: directory + "/seal.cnf", atomically: true, encoding: .utf8)
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", directory + "/seal-key.pem", "-out", directory + "/seal.pem", "-days", "30",
                     "-config", directory + "/seal.cnf"])
        return directory + "/seal.pem"
    }

    /// A self-signed certificate whose QCStatements extension is the raw DER given (hex pairs with colons).
    private func makeCertificate(qcStatementsDER hex: String) throws -> String {
        let directory = try Command.temporaryDirectory()
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem", "-days", "30",
                     "-subj", "/C=DE/O=Raw QC/organizationIdentifier=PSDDE-BAFIN-777777/CN=raw.example",
                     "-addext", "1.3.6.1.5.5.7.1.3 = DER:\(hex)"])
        return directory + "/cert.pem"
    }

    /// The OIDs and UTF8Strings of the QCStatements extension, in order, as `openssl asn1parse` reads them.
    private func asn1parseQCStatements(_ file: String) throws -> [String] {
        let outer = try openssl(["asn1parse", "-in", file]).split(separator: "\n").map(String.init)
        let marker = try XCTUnwrap(outer.firstIndex { $0.hasSuffix(":qcStatements") || $0.hasSuffix(":1.3.6.1.5.5.7.1.3") },
                                   "asn1parse shows no qcStatements extension")
        let valueLine = outer[outer.index(after: marker)]
        XCTAssertTrue(valueLine.contains("OCTET STRING"), valueLine)
        let offset = try XCTUnwrap(valueLine.split(separator: ":").first?.trimmingCharacters(in: .whitespaces))
        // "    4:d=2  hl=2 l=   6 prim: OBJECT            :0.4.0.1862.1.1" -> "0.4.0.1862.1.1"
        return try openssl(["asn1parse", "-in", file, "-strparse", offset]).split(separator: "\n").compactMap { line in
            guard let type = line.range(of: "prim: OBJECT") ?? line.range(of: "prim: UTF8STRING"),
                  let colon = line[type.upperBound...].firstIndex(of: ":") else { return nil }
            return String(line[line.index(after: colon)...])
        }
    }

    /// The parsed statements flattened the way `asn1parseQCStatements` lists them.
    private func flattened(_ qc: EIDASCertificate.QCStatements) -> [String] {
        var values: [String] = []
        var otherIndex = 0
        for id in qc.statementIDs {
            values.append(id)
            switch id {
            case EIDASCertificate.QCStatements.typeOID:
                values += qc.types.map(\.rawValue)
            case EIDASCertificate.QCStatements.psd2OID:
                if let psd2 = qc.psd2 {
                    for role in psd2.roles { values += [role.oid, role.name] }
                    values += [psd2.ncaName, psd2.ncaID]
                }
            case EIDASCertificate.QCStatements.complianceOID:
                break
            default:
                XCTAssertEqual(qc.otherStatementIDs[otherIndex], id)
                otherIndex += 1
            }
        }
        return values
    }

    // MARK: - Parsing, checked against openssl

    func testQWACFieldsMatchOpenSSL() throws {
        let file = token.pki("client-rsa.pem")
        let certificate = try load(file)

        XCTAssertEqual(certificate.subject.country, "DE")
        XCTAssertEqual(certificate.subject.organization, "KeyBridge Test TPP GmbH")
        XCTAssertEqual(certificate.subject.organizationIdentifier, "PSDDE-BAFIN-123456")
        XCTAssertEqual(certificate.organizationIdentifier, "PSDDE-BAFIN-123456")
        XCTAssertEqual(certificate.subject.commonName, "tpp-rsa.example")
        XCTAssertEqual(certificate.subject.attributes.map(\.oid), ["2.5.4.6", "2.5.4.10", "2.5.4.97", "2.5.4.3"])
        XCTAssertEqual(certificate.subject.attributes.map(\.shortName), ["C", "O", "organizationIdentifier", "CN"])

        XCTAssertEqual(certificate.subject.rfc2253, try x509Field(file, ["-subject", "-nameopt", "RFC2253"]))
        XCTAssertEqual(certificate.issuer.rfc2253, try x509Field(file, ["-issuer", "-nameopt", "RFC2253"]))
        XCTAssertEqual(certificate.serialNumberHex, try x509Field(file, ["-serial"]))
        XCTAssertEqual(certificate.sha256FingerprintHex, try x509Field(file, ["-fingerprint", "-sha256"]))
        let notAfter = try opensslDate(try x509Field(file, ["-enddate"]))
        XCTAssertEqual(certificate.notAfter, notAfter)
        XCTAssertEqual(certificate.notBefore, try opensslDate(try x509Field(file, ["-startdate"])))
        let now = Date()
        XCTAssertEqual(certificate.daysUntilExpiry(at: now), Int(floor(notAfter.timeIntervalSince(now) / 86_400)))
        XCTAssertEqual(certificate.daysUntilExpiry(at: notAfter.addingTimeInterval(-86_400 * 10 - 5)), 10)
        XCTAssertEqual(certificate.daysUntilExpiry(at: notAfter.addingTimeInterval(3_600)), -1)
        XCTAssertTrue(certificate.isValid(at: now))
        XCTAssertFalse(certificate.isValid(at: notAfter.addingTimeInterval(1)))

        XCTAssertEqual(certificate.publicKey.algorithm, "RSA")
        XCTAssertEqual(certificate.publicKey.bits, 2048)
        XCTAssertNil(certificate.publicKey.curve)

        let qc = try XCTUnwrap(certificate.qcStatements)
        XCTAssertTrue(qc.compliance)
        XCTAssertEqual(qc.types, [.web])
        XCTAssertEqual(qc.statementIDs, ["0.4.0.1862.1.1", "0.4.0.1862.1.6", "0.4.0.19495.2"])
        XCTAssertEqual(qc.otherStatementIDs, [])
        let psd2 = try XCTUnwrap(qc.psd2)
        XCTAssertEqual(psd2.roles.map(\.oid), ["0.4.0.19495.1.3", "0.4.0.19495.1.2"])
        XCTAssertEqual(psd2.roles.map(\.name), ["PSP_AI", "PSP_PI"])
        XCTAssertEqual(psd2.roles.map(\.standardName), ["PSP_AI", "PSP_PI"])
        XCTAssertTrue(psd2.hasRole("PSP_AI") && psd2.hasRole("0.4.0.19495.1.2"))
        XCTAssertFalse(psd2.hasRole("PSP_AS") || psd2.hasRole("PSP_IC"))
        XCTAssertEqual(psd2.ncaName, "Federal Financial Supervisory Authority")
        XCTAssertEqual(psd2.ncaID, "DE-BAFIN")
    }

    /// Every OID and string of the extension, in order, as openssl's own parser lists them.
    func testQCStatementsMatchASN1Parse() throws {
        for file in [token.pki("client-rsa.pem"), token.pki("client-ec.pem"), try makeQSealC()] {
            let expected = try asn1parseQCStatements(file)
            XCTAssertGreaterThan(expected.count, 5, "asn1parse found too little in \(file)")
            XCTAssertEqual(flattened(try XCTUnwrap(try load(file).qcStatements)), expected, file)
        }
    }

    func testPEMDERAndTokenGiveTheSameCertificate() throws {
        let file = token.pki("client-rsa.pem")
        let der = try derBytes(file)
        let fromPEM = try load(file)
        let fromDER = try EIDASCertificate(der: der)
        let fromContents = try EIDASCertificate(contents: der)
        let fromChainFile = try EIDASCertificate.all(pem: String(contentsOfFile: token.pki("client-rsa-chain.pem"), encoding: .utf8))
        let query = try XCTUnwrap(token.rsaURI.split(separator: "?").last)
        let fromToken = try EIDASCertificate(der: XCTUnwrap(TokenCertificates.chain(uri: "pkcs11:token=keybridge;object=client-rsa;type=cert?\(query)").first))

        XCTAssertTrue(fromPEM.der == der)
        for other in [fromDER, fromContents, fromChainFile[0], fromToken] {
            XCTAssertTrue(other.der == der)
            XCTAssertEqual(other.sha256FingerprintHex, fromPEM.sha256FingerprintHex)
            XCTAssertEqual(other.qcStatements, fromPEM.qcStatements)
            XCTAssertEqual(other.subject, fromPEM.subject)
        }
        XCTAssertEqual(fromChainFile.count, 2)
        XCTAssertEqual(fromChainFile[1].subject.rfc2253, fromPEM.issuer.rfc2253)
        // The fingerprint is SHA-256 over exactly these DER bytes.
        XCTAssertEqual(fromPEM.sha256Fingerprint, MessageDigest.sha256(Data(der)))
    }

    func testECKeysNameTheirCurves() throws {
        let p256 = try load(token.pki("client-ec.pem")).publicKey
        XCTAssertEqual(p256.algorithm, "EC")
        XCTAssertEqual(p256.bits, 256)
        XCTAssertEqual(p256.curve, "P-256")
        XCTAssertEqual(p256.description, "EC P-256 (256 bits)")
        XCTAssertEqual(try load(token.pki("client-ec384.pem")).publicKey.curve, "P-384")
        XCTAssertEqual(try load(token.pki("client-p521.pem")).publicKey.bits, 521)
        XCTAssertEqual(try load(token.pki("client-rsa.pem")).publicKey.description, "RSA 2048 bits")
    }

    func testCertificatesWithoutQCStatementsHaveNone() throws {
        for name in ["issuing-ca.pem", "root-ca.pem"] {
            let certificate = try load(token.pki(name))
            XCTAssertNil(certificate.qcStatements, name)
            XCTAssertNil(certificate.organizationIdentifier, name)
            XCTAssertEqual(certificate.subject.country, "DE")
        }
        // Control: the same reader does find the extension on a QWAC.
        XCTAssertNotNil(try load(token.pki("client-rsa.pem")).qcStatements)
    }

    func testQSealCTypeRolesAndUnknownStatements() throws {
        let seal = try load(try makeQSealC())
        let qc = try XCTUnwrap(seal.qcStatements)
        XCTAssertEqual(qc.types, [.eseal])
        XCTAssertEqual(qc.types.first?.certificateKind, "QSealC")
        XCTAssertEqual(qc.statementIDs, ["0.4.0.1862.1.1", "0.4.0.1862.1.4", "0.4.0.1862.1.6", "0.4.0.19495.2", "1.3.6.1.4.1.55555.1"])
        XCTAssertEqual(qc.otherStatementIDs, ["0.4.0.1862.1.4", "1.3.6.1.4.1.55555.1"])
        XCTAssertEqual(qc.psd2?.roles.map(\.description), ["PSP_PI (0.4.0.19495.1.2)", "PSP_IC (0.4.0.19495.1.4)"])
        XCTAssertEqual(seal.publicKey.curve, "P-256")
    }

    // MARK: - Same organization

    func testSameOrganizationAcceptsAMatchingPair() throws {
        let check = EIDASCertificate.sameOrganization(qwac: try load(token.pki("client-rsa.pem")), qsealc: try load(try makeQSealC()))
        XCTAssertTrue(check.isSameOrganization, check.description)
        XCTAssertEqual(check.mismatches, [])
        XCTAssertEqual(check.organizationIdentifier, "PSDDE-BAFIN-123456")
        XCTAssertEqual(check.ncaID, "DE-BAFIN")
    }

    func testSameOrganizationNamesEveryMismatch() throws {
        let qwac = try load(token.pki("client-rsa.pem"))

        let otherPSP = try load(try makeQSealC(organizationIdentifier: "PSDFR-ACPR-999999", ncaID: "FR-ACPR"))
        let different = EIDASCertificate.sameOrganization(qwac: qwac, qsealc: otherPSP)
        XCTAssertFalse(different.isSameOrganization)
        XCTAssertEqual(different.mismatches.map(\.field), [.organizationIdentifier, .ncaID])
        XCTAssertTrue(different.mismatches[0].description.contains("PSDDE-BAFIN-123456") && different.mismatches[0].description.contains("PSDFR-ACPR-999999"),
                      different.description)
        XCTAssertTrue(different.mismatches[1].description.contains("FR-ACPR"), different.description)
        XCTAssertNil(different.organizationIdentifier)

        // Same PSP, but the roles swapped: the QSealC is used as the QWAC and the other way round.
        let seal = try load(try makeQSealC())
        let swapped = EIDASCertificate.sameOrganization(qwac: seal, qsealc: qwac)
        XCTAssertEqual(swapped.mismatches.map(\.field), [.qwacType, .qsealcType], swapped.description)
        XCTAssertTrue(swapped.description.contains("QcType is eseal, not web"), swapped.description)

        // A QSealC whose QcType is web.
        let webSeal = try load(try makeQSealC(qcType: "0.4.0.1862.1.6.3"))
        XCTAssertEqual(EIDASCertificate.sameOrganization(qwac: qwac, qsealc: webSeal).mismatches.map(\.field), [.qsealcType])

        // A certificate without organizationIdentifier or QCStatements.
        let none = EIDASCertificate.sameOrganization(qwac: qwac, qsealc: try load(token.pki("issuing-ca.pem")))
        XCTAssertEqual(none.mismatches.map(\.field), [.organizationIdentifier, .ncaID, .qsealcType], none.description)
        XCTAssertTrue(none.description.contains("no organizationIdentifier"), none.description)
        XCTAssertTrue(none.description.contains("no QcType statement"), none.description)
    }

    // MARK: - Bad input

    private func assertMalformedQC(_ hex: String, mentions phrase: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try makeCertificate(qcStatementsDER: hex)
        XCTAssertThrowsError(try load(path), file: file, line: line) { error in
            guard let error = error as? EIDASCertificateError else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertEqual(error.code, .malformedQCStatements, file: file, line: line)
            XCTAssertTrue(error.description.contains("1.3.6.1.5.5.7.1.3") && error.description.contains(phrase), error.description, file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), file: file, line: line)
        }
    }

    func testMalformedQCStatementsAreClearErrors() throws {
        // Control: the same construction with well-formed DER, SEQUENCE { SEQUENCE { OID 0.4.0.1862.1.1 } }, parses.
        let good = try load(try makeCertificate(qcStatementsDER: "30:0A:30:08:06:06:04:00:8E:46:01:01"))
        XCTAssertEqual(good.qcStatements?.compliance, true)
        XCTAssertEqual(good.qcStatements?.statementIDs, ["0.4.0.1862.1.1"])

        // Truncated: SEQUENCE of 3 bytes holding an INTEGER cut short.
        try assertMalformedQC("30:03:02:01", mentions: "not a valid DER SEQUENCE")
        // Not a SEQUENCE at all.
        try assertMalformedQC("04:02:30:00", mentions: "not a valid DER SEQUENCE")
        // Bytes after the SEQUENCE.
        try assertMalformedQC("30:00:05:00", mentions: "2 bytes follow")
        // A statement that is an INTEGER.
        try assertMalformedQC("30:03:02:01:05", mentions: "statement 1 is an INTEGER, not a SEQUENCE")
        // A statement without its OID.
        try assertMalformedQC("30:05:30:03:02:01:05", mentions: "does not start with its statementId")
        // QcType whose info is an OID rather than a SEQUENCE OF OID.
        try assertMalformedQC("30:13:30:11:06:06:04:00:8E:46:01:06:06:07:04:00:8E:46:01:06:03",
                              mentions: "QcType (0.4.0.1862.1.6) has an OBJECT IDENTIFIER where a SEQUENCE OF OBJECT IDENTIFIER belongs")
        // PSD2 statement with rolesOfPSP and nCAName but no nCAId.
        try assertMalformedQC("30:15:30:13:06:06:04:00:81:98:27:02:30:09:30:00:0C:05:42:61:46:69:6E",
                              mentions: "has 2 of its 3 fields")
        // nCAId whose UTF8String holds bytes that are not UTF-8.
        try assertMalformedQC("30:15:30:13:06:06:04:00:81:98:27:02:30:09:30:00:0C:01:58:0C:02:FF:FE",
                              mentions: "a UTF8STRING in the PSD2 statement (0.4.0.19495.2) does not hold valid text")
        // A role without its name.
        try assertMalformedQC("30:20:30:1E:06:06:04:00:81:98:27:02:30:14:30:0B:30:09:06:07:04:00:81:98:27:01:03:0C:01:58:0C:02:44:45",
                              mentions: "role 1 in rolesOfPSP")
    }

    func testInputsThatAreNotCertificates() throws {
        let directory = try Command.temporaryDirectory()
        try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", directory + "/key.pem"])
        let keyPEM = try String(contentsOfFile: directory + "/key.pem", encoding: .utf8)
        XCTAssertThrowsError(try EIDASCertificate(pem: keyPEM)) { error in
            XCTAssertEqual((error as? EIDASCertificateError)?.code, .notACertificate)
            XCTAssertTrue("\(error)".contains("private key"), "\(error)")
        }
        XCTAssertThrowsError(try EIDASCertificate(contents: Array("this is not a certificate\n".utf8))) { error in
            XCTAssertEqual((error as? EIDASCertificateError)?.code, .notACertificate)
            XCTAssertTrue("\(error)".contains("d2i_X509"), "\(error)")
        }
        XCTAssertThrowsError(try EIDASCertificate(der: [])) { error in
            XCTAssertTrue("\(error)".contains("empty"), "\(error)")
        }
        XCTAssertThrowsError(try EIDASCertificate(pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")) { error in
            XCTAssertEqual((error as? EIDASCertificateError)?.code, .notACertificate)
        }
        // A valid DER certificate with one byte after it.
        let der = try derBytes(token.pki("client-rsa.pem"))
        XCTAssertNoThrow(try EIDASCertificate(der: der))
        XCTAssertThrowsError(try EIDASCertificate(der: der + [0])) { error in
            XCTAssertTrue("\(error)".contains("1 bytes follow"), "\(error)")
        }
    }

    // MARK: - keybridge cert inspect

    private func inspect(_ arguments: [String]) throws -> Command.Result {
        try KeyBridgeExecutable.run(["cert", "inspect"] + arguments)
    }

    private func assertOneErrorLine(_ result: Command.Result, status: Int32, mentions phrase: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, status, result.combined, file: file, line: line)
        XCTAssertEqual(result.standardOutput, "", file: file, line: line)
        let lines = result.standardError.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, result.standardError, file: file, line: line)
        XCTAssertTrue(result.standardError.hasPrefix("keybridge: error: "), result.standardError, file: file, line: line)
        XCTAssertTrue(result.standardError.contains(phrase), result.standardError, file: file, line: line)
    }

    func testInspectPrintsAReport() throws {
        let file = token.pki("client-rsa-chain.pem")
        let result = try inspect([file])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertEqual(result.standardError, "")
        let text = result.standardOutput
        let fingerprint = try x509Field(token.pki("client-rsa.pem"), ["-fingerprint", "-sha256"])
        let days = try load(token.pki("client-rsa.pem")).daysUntilExpiry()
        for expected in [
            "(the first of 2 certificates)",
            "\n  organizationIdentifier: PSDDE-BAFIN-123456\n",
            "\n  Organization (O):       KeyBridge Test TPP GmbH\n",
            "Issuer:                   CN=KeyBridge Test QTSP CA,O=KeyBridge Test QTSP,C=DE",
            "Serial:                   " + (try x509Field(file, ["-serial"])),
            "(\(days) days left)",
            "Key:                      RSA 2048 bits",
            "SHA-256 fingerprint:      " + fingerprint,
            "QcCompliance:           yes (0.4.0.1862.1.1)",
            "QcType:                 web, QWAC (0.4.0.1862.1.6.3)",
            "PSD2 roles:             PSP_AI (0.4.0.19495.1.3), PSP_PI (0.4.0.19495.1.2)",
            "NCA:                    Federal Financial Supervisory Authority (DE-BAFIN)",
        ] {
            XCTAssertTrue(text.contains(expected), "missing '\(expected)' in:\n\(text)")
        }

        let seal = try inspect([try makeQSealC()])
        XCTAssertEqual(seal.status, 0, seal.standardError)
        XCTAssertTrue(seal.standardOutput.contains("eseal, QSealC (0.4.0.1862.1.6.2)"), seal.standardOutput)
        XCTAssertTrue(seal.standardOutput.contains("Other statements:       0.4.0.1862.1.4, 1.3.6.1.4.1.55555.1"), seal.standardOutput)
        XCTAssertTrue(seal.standardOutput.contains("Key:                      EC P-256 (256 bits)"), seal.standardOutput)

        let ca = try inspect([token.pki("issuing-ca.pem")])
        XCTAssertEqual(ca.status, 0, ca.standardError)
        XCTAssertTrue(ca.standardOutput.contains("QC statements:            none"), ca.standardOutput)
    }

    func testInspectJSONHasStableKeys() throws {
        let result = try inspect(["--json", token.pki("client-ec.pem")])
        XCTAssertEqual(result.status, 0, result.standardError)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
        let topLevel = ["daysUntilExpiry", "expired", "issuer", "key", "notAfter", "notBefore", "notYetValid",
                        "qcStatements", "serialNumber", "sha256Fingerprint", "source", "subject"]
        XCTAssertEqual(object.keys.sorted(), topLevel)
        let file = token.pki("client-ec.pem")
        XCTAssertEqual(object["serialNumber"] as? String, try x509Field(file, ["-serial"]))
        XCTAssertEqual(object["sha256Fingerprint"] as? String, try x509Field(file, ["-fingerprint", "-sha256"]))
        let notAfter = try opensslDate(try x509Field(file, ["-enddate"]))
        XCTAssertEqual((object["notAfter"] as? String).flatMap { try? Date($0, strategy: .iso8601) }, notAfter)
        XCTAssertEqual(object["expired"] as? Bool, false)
        let subject = try XCTUnwrap(object["subject"] as? [String: Any])
        XCTAssertEqual(subject["organizationIdentifier"] as? String, "PSDDE-BAFIN-123456")
        let key = try XCTUnwrap(object["key"] as? [String: Any])
        XCTAssertEqual(key["curve"] as? String, "P-256")
        XCTAssertEqual(key["bits"] as? Int, 256)
        let qc = try XCTUnwrap(object["qcStatements"] as? [String: Any])
        XCTAssertEqual(qc.keys.sorted(), ["compliance", "otherStatementIds", "psd2", "statementIds", "types"])
        let psd2 = try XCTUnwrap(qc["psd2"] as? [String: Any])
        XCTAssertEqual(psd2["ncaId"] as? String, "DE-BAFIN")
        let roles = try XCTUnwrap(psd2["roles"] as? [[String: Any]])
        XCTAssertEqual(roles.compactMap { $0["name"] as? String }, ["PSP_AI", "PSP_PI"])
        XCTAssertEqual(roles.compactMap { $0["oid"] as? String }, ["0.4.0.19495.1.3", "0.4.0.19495.1.2"])

        // Absent values are null, not missing.
        let ca = try inspect(["--json", token.pki("root-ca.pem")])
        let caObject = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ca.standardOutput.utf8)) as? [String: Any])
        XCTAssertEqual(caObject.keys.sorted(), topLevel)
        XCTAssertTrue(caObject["qcStatements"] is NSNull)
        XCTAssertTrue((caObject["subject"] as? [String: Any])?["organizationIdentifier"] is NSNull)
    }

    func testInspectReadsTheCertificateFromTheToken() throws {
        let query = try XCTUnwrap(token.rsaURI.split(separator: "?").last)
        let result = try inspect(["--json", "pkcs11:token=keybridge;object=client-rsa;type=cert?\(query)"])
        XCTAssertEqual(result.status, 0, result.standardError)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
        XCTAssertEqual(object["sha256Fingerprint"] as? String, try x509Field(token.pki("client-rsa.pem"), ["-fingerprint", "-sha256"]))
        XCTAssertEqual(object["source"] as? String, "pkcs11:token=keybridge;object=client-rsa;type=cert", "the query (with its PIN source) is not shown")

        assertOneErrorLine(try inspect(["pkcs11:token=keybridge;object=no-such-cert;type=cert?\(query)"]), status: 3, mentions: "no certificate object matches")
        // A malformed URI carrying a PIN: usage error, and the PIN is not echoed.
        let malformed = try inspect(["pkcs11:tok%en=keybridge?pin-value=secret-4711"])
        assertOneErrorLine(malformed, status: 2, mentions: "URI")
        XCTAssertFalse(malformed.combined.contains("secret-4711"))
    }

    func testInspectBadInputExitCodes() throws {
        let directory = try Command.temporaryDirectory()
        try Data("junk, not a certificate\n".utf8).write(to: URL(fileURLWithPath: directory + "/junk.pem"))
        try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", directory + "/key.pem"])

        assertOneErrorLine(try inspect([directory + "/junk.pem"]), status: 4, mentions: "not a DER X.509 certificate")
        assertOneErrorLine(try inspect([directory + "/key.pem"]), status: 4, mentions: "holds a private key (PRIVATE KEY), not a certificate")
        assertOneErrorLine(try inspect([try makeCertificate(qcStatementsDER: "30:03:02:01")]), status: 4,
                           mentions: "the QCStatements extension (1.3.6.1.5.5.7.1.3) is malformed")
        assertOneErrorLine(try inspect([directory + "/missing.pem"]), status: 26, mentions: "no such file")
        assertOneErrorLine(try inspect([directory]), status: 26, mentions: "is a directory")
        assertOneErrorLine(try inspect([]), status: 2, mentions: "no certificate given")
        assertOneErrorLine(try inspect(["--pin=1234", token.pki("client-rsa.pem")]), status: 2, mentions: "unknown option '--pin'")
        XCTAssertFalse(try inspect(["--pin=1234", token.pki("client-rsa.pem")]).combined.contains("1234"))
        assertOneErrorLine(try inspect([token.pki("client-rsa.pem"), token.pki("client-ec.pem")]), status: 2, mentions: "only one certificate")
        assertOneErrorLine(try KeyBridgeExecutable.run(["cert", "frobnicate"]), status: 2, mentions: "unknown cert command 'frobnicate'")

        let help = try inspect(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.standardOutput.hasPrefix("Usage: keybridge cert inspect"), help.standardOutput)
        XCTAssertTrue(try KeyBridgeExecutable.run(["--help"]).standardOutput.contains("cert inspect"))
    }

    // MARK: - softhsm-setup's QSealC and negative certificates

    /// The test PKI's QWAC and QSealC of one organisation, and the QSealCs (file keys, same
    /// issuing CA) that PSD2 checks must reject or report: no PSD2 statement, a PSD2 statement
    /// without any role, another PSP.
    private enum SetupCertificate: String, CaseIterable {
        case qwac = "client-ec.pem"
        case qsealc = "qseal-ec.pem"
        case noPSD2 = "negative/no-psd2.pem"
        case missingRole = "negative/missing-role.pem"
        case otherOrganization = "negative/other-org.pem"
    }

    private func path(_ certificate: SetupCertificate) -> String { token.pki(certificate.rawValue) }

    private func load(_ certificate: SetupCertificate) throws -> EIDASCertificate { try load(path(certificate)) }

    /// `keybridge cert inspect --json SOURCE` as a dictionary, after checking it succeeded quietly.
    private func inspectJSON(_ source: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let result = try inspect(["--json", source])
        XCTAssertEqual(result.status, 0, result.standardError, file: file, line: line)
        XCTAssertEqual(result.standardError, "", file: file, line: line)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any], file: file, line: line)
    }

    /// `keybridge cert inspect SOURCE` (text), after checking it succeeded quietly.
    private func inspectText(_ source: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try inspect([source])
        XCTAssertEqual(result.status, 0, result.standardError, file: file, line: line)
        XCTAssertEqual(result.standardError, "", file: file, line: line)
        return result.standardOutput
    }

    /// The report's line that starts with `label` (after indentation), e.g. "PSD2 roles:".
    private func reportLine(_ text: String, _ label: String) -> String? {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix(label) }
    }

    /// `openssl x509 -ext keyUsage,extendedKeyUsage` output.
    private func usages(_ file: String) throws -> String {
        try openssl(["x509", "-in", file, "-noout", "-ext", "keyUsage,extendedKeyUsage"])
    }

    func testSetupCertificatesMatchOpenSSLAndChainToTheTestRoot() throws {
        for certificate in SetupCertificate.allCases {
            let file = path(certificate)
            let parsed = try load(certificate)
            XCTAssertEqual(parsed.subject.rfc2253, try x509Field(file, ["-subject", "-nameopt", "RFC2253"]), file)
            XCTAssertEqual(parsed.issuer.rfc2253, try x509Field(file, ["-issuer", "-nameopt", "RFC2253"]), file)
            XCTAssertEqual(parsed.issuer.rfc2253, "CN=KeyBridge Test QTSP CA,O=KeyBridge Test QTSP,C=DE", file)
            XCTAssertEqual(parsed.serialNumberHex, try x509Field(file, ["-serial"]), file)
            XCTAssertEqual(parsed.sha256FingerprintHex, try x509Field(file, ["-fingerprint", "-sha256"]), file)
            XCTAssertEqual(parsed.notAfter, try opensslDate(try x509Field(file, ["-enddate"])), file)
            XCTAssertEqual(parsed.publicKey.description, "EC P-256 (256 bits)", file)
            XCTAssertTrue(parsed.isValid(), file)
            // Every OID and string of the QCStatements, in order, as openssl's parser lists them.
            let expected = try asn1parseQCStatements(file)
            XCTAssertGreaterThanOrEqual(expected.count, 3, "asn1parse found too little in \(file)")
            XCTAssertEqual(flattened(try XCTUnwrap(parsed.qcStatements, file)), expected, file)

            let verify = try Command.run(["openssl", "verify", "-CAfile", token.pki("root-ca.pem"), "-untrusted", token.pki("issuing-ca.pem"), file])
            XCTAssertEqual(verify.status, 0, "\(file): \(verify.combined)")
        }
    }

    func testSetupQSealCIsAnESealOfTheQWACsOrganization() throws {
        let seal = try load(.qsealc)
        XCTAssertEqual(seal.subject.attributes.map(\.oid), ["2.5.4.6", "2.5.4.10", "2.5.4.97", "2.5.4.3"])
        XCTAssertEqual(seal.subject.country, "DE")
        XCTAssertEqual(seal.subject.organization, "KeyBridge Test TPP GmbH")
        XCTAssertEqual(seal.organizationIdentifier, "PSDDE-BAFIN-123456")
        XCTAssertEqual(seal.subject.commonName, "KeyBridge Test TPP seal")

        let qc = try XCTUnwrap(seal.qcStatements)
        XCTAssertTrue(qc.compliance)
        XCTAssertEqual(qc.types, [.eseal])
        XCTAssertEqual(qc.statementIDs, ["0.4.0.1862.1.1", "0.4.0.1862.1.6", "0.4.0.19495.2"])
        XCTAssertEqual(qc.otherStatementIDs, [])
        let psd2 = try XCTUnwrap(qc.psd2)
        XCTAssertEqual(psd2.roles.map(\.description), ["PSP_AI (0.4.0.19495.1.3)", "PSP_PI (0.4.0.19495.1.2)"])
        XCTAssertEqual(psd2.roles.map(\.name), ["PSP_AI", "PSP_PI"])
        XCTAssertEqual(psd2.ncaName, "Federal Financial Supervisory Authority")
        XCTAssertEqual(psd2.ncaID, "DE-BAFIN")

        // A seal, not a TLS client: nonRepudiation and no extendedKeyUsage. The QWAC (control)
        // shows the same reading does find clientAuth.
        let sealUsages = try usages(path(.qsealc))
        XCTAssertTrue(sealUsages.contains("Digital Signature, Non Repudiation"), sealUsages)
        XCTAssertFalse(sealUsages.contains("Extended Key Usage"), sealUsages)
        XCTAssertFalse(sealUsages.contains("TLS Web Client Authentication"), sealUsages)
        XCTAssertTrue(try usages(path(.qwac)).contains("TLS Web Client Authentication"))
        XCTAssertEqual(try load(.qwac).qcStatements?.types, [.web])

        // The chain file is the QSealC and then the issuing CA.
        let chain = try EIDASCertificate.all(pem: String(contentsOfFile: token.pki("qseal-ec-chain.pem"), encoding: .utf8))
        XCTAssertEqual(chain.map(\.der), [seal.der, try load(token.pki("issuing-ca.pem")).der])

        let check = EIDASCertificate.sameOrganization(qwac: try load(.qwac), qsealc: seal)
        XCTAssertTrue(check.isSameOrganization, check.description)
        XCTAssertEqual(check.mismatches, [])
        XCTAssertEqual(check.organizationIdentifier, "PSDDE-BAFIN-123456")
        XCTAssertEqual(check.ncaID, "DE-BAFIN")
        XCTAssertEqual(check.description, "same organization PSDDE-BAFIN-123456, NCA DE-BAFIN")
        // Control: the same pair the wrong way round fails on both QcTypes.
        let swapped = EIDASCertificate.sameOrganization(qwac: seal, qsealc: try load(.qwac))
        XCTAssertEqual(swapped.mismatches.map(\.field), [.qwacType, .qsealcType], swapped.description)
    }

    /// The QSealC's key is the token key qseal-ec/07 (sensitive, never extractable), and the
    /// token holds the same certificate under that id.
    func testSetupQSealCBelongsToTheTokenKey() throws {
        let uri = try token.keyURI("qseal-ec")
        XCTAssertTrue(uri.hasPrefix("pkcs11:token=keybridge;object=qseal-ec;type=private?"), uri)
        let query = try XCTUnwrap(uri.split(separator: "?").last)

        // A signature made on the token verifies with the QSealC's public key (openssl), and
        // not with the QWAC's (control: the check can fail).
        let key = try ProviderKey(uri: uri)
        XCTAssertEqual(key.algorithm, "EC")
        let message = Array("digest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nx-request-id: 99391c7e-ad88-49ec-a2ad-99ddcb1f7721".utf8)
        let signature = try key.sign(message, scheme: .ecdsa(.sha256))
        let directory = try Command.temporaryDirectory()
        try Data(message).write(to: URL(fileURLWithPath: directory + "/message"))
        try Data(signature).write(to: URL(fileURLWithPath: directory + "/signature"))
        func opensslVerifies(with certificate: SetupCertificate) throws -> Bool {
            let pem = directory + "/\(certificate).pub.pem"
            try openssl(["x509", "-in", path(certificate), "-noout", "-pubkey", "-out", pem])
            let result = try Command.run(["openssl", "dgst", "-sha256", "-verify", pem, "-signature", directory + "/signature", directory + "/message"])
            return result.status == 0 && result.standardOutput.contains("Verified OK")
        }
        XCTAssertTrue(try opensslVerifies(with: .qsealc))
        XCTAssertFalse(try opensslVerifies(with: .qwac))
        XCTAssertEqual(try key.publicKeyPEM(), try openssl(["x509", "-in", path(.qsealc), "-noout", "-pubkey"]))

        // The certificate object, by label and by id.
        let seal = try load(.qsealc)
        for selector in ["object=qseal-ec;type=cert", "id=%07;type=cert"] {
            let fromToken = try XCTUnwrap(TokenCertificates.chain(uri: "pkcs11:token=keybridge;\(selector)?\(query)").first)
            XCTAssertTrue(fromToken == seal.der, selector)
        }

        // The private key object: sensitive and never extractable. The public key object of the
        // same id (control) shows the flags are read per object.
        let modulePath = try XCTUnwrap(query.split(separator: "&").first { $0.hasPrefix("module-path=") }?
            .dropFirst("module-path=".count).removingPercentEncoding)
        let environment = ProcessInfo.processInfo.environment.merging(["KB_TEST_PIN": token.userPIN, "SOFTHSM2_CONF": token.softHSMConfig]) { $1 }
        let listing = try Command.run(["pkcs11-tool", "--module", modulePath, "--token-label", "keybridge", "--login",
                                       "--pin", "env:KB_TEST_PIN", "--list-objects"], environment: environment)
        XCTAssertEqual(listing.status, 0, listing.standardError)
        // One block per object: "Kind; ..." then indented "name: value" lines.
        var blocks: [(kind: String, fields: [String: String])] = []
        for line in listing.standardOutput.split(separator: "\n") {
            if !line.hasPrefix(" ") {
                blocks.append((String(line.prefix { $0 != ";" }), [:]))
            } else if !blocks.isEmpty {
                let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if parts.count == 2 { blocks[blocks.count - 1].fields[parts[0]] = parts[1] }
            }
        }
        let sealObjects = blocks.filter { $0.fields["ID"] == "07" }
        XCTAssertEqual(sealObjects.map(\.kind).sorted(), ["Certificate Object", "Private Key Object", "Public Key Object"], listing.standardOutput)
        XCTAssertEqual(Set(sealObjects.compactMap { $0.fields["label"] }), ["qseal-ec"])
        func access(_ kind: String) throws -> Set<String> {
            let block = try XCTUnwrap(sealObjects.first { $0.kind == kind }, kind)
            return Set(try XCTUnwrap(block.fields["Access"], kind).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        }
        let privateKey = try access("Private Key Object")
        XCTAssertTrue(privateKey.isSuperset(of: ["sensitive", "always sensitive", "never extractable", "local"]), "\(privateKey)")
        XCTAssertFalse(privateKey.contains("extractable"), "\(privateKey)")
        XCTAssertFalse(try access("Public Key Object").contains("sensitive"))
    }

    func testInspectSetupQWACAndQSealC() throws {
        let qwac = try inspectText(path(.qwac))
        XCTAssertEqual(reportLine(qwac, "QcType:"), "QcType:                 web, QWAC (0.4.0.1862.1.6.3)", qwac)
        XCTAssertEqual(reportLine(qwac, "PSD2 roles:"), "PSD2 roles:             PSP_AI (0.4.0.19495.1.3), PSP_PI (0.4.0.19495.1.2)", qwac)
        XCTAssertEqual(reportLine(qwac, "NCA:"), "NCA:                    Federal Financial Supervisory Authority (DE-BAFIN)", qwac)
        XCTAssertEqual(reportLine(qwac, "Common name (CN):"), "Common name (CN):       tpp-ec.example", qwac)

        let query = try XCTUnwrap(try token.keyURI("qseal-ec").split(separator: "?").last)
        for source in [path(.qsealc), token.pki("qseal-ec-chain.pem"), "pkcs11:token=keybridge;object=qseal-ec;type=cert?\(query)"] {
            let text = try inspectText(source)
            XCTAssertEqual(reportLine(text, "organizationIdentifier:"), "organizationIdentifier: PSDDE-BAFIN-123456", text)
            XCTAssertEqual(reportLine(text, "Common name (CN):"), "Common name (CN):       KeyBridge Test TPP seal", text)
            XCTAssertEqual(reportLine(text, "Key:"), "Key:                      EC P-256 (256 bits)", text)
            XCTAssertEqual(reportLine(text, "QcCompliance:"), "QcCompliance:           yes (0.4.0.1862.1.1)", text)
            XCTAssertEqual(reportLine(text, "QcType:"), "QcType:                 eseal, QSealC (0.4.0.1862.1.6.2)", text)
            XCTAssertEqual(reportLine(text, "PSD2 roles:"), "PSD2 roles:             PSP_AI (0.4.0.19495.1.3), PSP_PI (0.4.0.19495.1.2)", text)
            XCTAssertEqual(reportLine(text, "NCA:"), "NCA:                    Federal Financial Supervisory Authority (DE-BAFIN)", text)
            XCTAssertNil(reportLine(text, "Other statements:"), text)
            XCTAssertFalse(text.contains("pin-source") || text.contains("module-path"), "the URI's query is not shown")
        }
    }

    func testInspectJSONForEverySetupCertificate() throws {
        struct Expected {
            var organizationIdentifier: String
            var commonName: String
            var types: [String]
            /// nil: no PSD2 statement.
            var roles: [String]?
            var ncaID: String?
            var ncaName: String?
        }
        let germanRoles = ["PSP_AI", "PSP_PI"]
        let bafin = "Federal Financial Supervisory Authority"
        let expectations: [SetupCertificate: Expected] = [
            .qwac: Expected(organizationIdentifier: "PSDDE-BAFIN-123456", commonName: "tpp-ec.example", types: ["web"], roles: germanRoles, ncaID: "DE-BAFIN", ncaName: bafin),
            .qsealc: Expected(organizationIdentifier: "PSDDE-BAFIN-123456", commonName: "KeyBridge Test TPP seal", types: ["eseal"], roles: germanRoles, ncaID: "DE-BAFIN", ncaName: bafin),
            .noPSD2: Expected(organizationIdentifier: "PSDDE-BAFIN-123456", commonName: "KeyBridge Test TPP seal without PSD2 statement", types: ["eseal"], roles: nil),
            .missingRole: Expected(organizationIdentifier: "PSDDE-BAFIN-123456", commonName: "KeyBridge Test TPP seal without PSD2 roles", types: ["eseal"], roles: [], ncaID: "DE-BAFIN", ncaName: bafin),
            .otherOrganization: Expected(organizationIdentifier: "PSDNL-DNB-987654", commonName: "KeyBridge Test Other TPP seal", types: ["eseal"], roles: germanRoles, ncaID: "NL-DNB", ncaName: "De Nederlandsche Bank"),
        ]
        XCTAssertEqual(expectations.count, SetupCertificate.allCases.count)
        for certificate in SetupCertificate.allCases {
            let name = certificate.rawValue
            let expected = try XCTUnwrap(expectations[certificate])
            let object = try inspectJSON(path(certificate))
            XCTAssertEqual(object["source"] as? String, path(certificate), name)
            XCTAssertEqual(object["serialNumber"] as? String, try x509Field(path(certificate), ["-serial"]), name)
            XCTAssertEqual(object["expired"] as? Bool, false, name)
            let subject = try XCTUnwrap(object["subject"] as? [String: Any], name)
            XCTAssertEqual(subject["organizationIdentifier"] as? String, expected.organizationIdentifier, name)
            XCTAssertEqual(subject["commonName"] as? String, expected.commonName, name)
            let qc = try XCTUnwrap(object["qcStatements"] as? [String: Any], name)
            XCTAssertEqual(qc["compliance"] as? Bool, true, name)
            XCTAssertEqual((qc["types"] as? [[String: Any]])?.compactMap { $0["name"] as? String }, expected.types, name)
            XCTAssertEqual(qc["otherStatementIds"] as? [String], [], name)
            guard let roles = expected.roles else {
                // No PSD2 statement: the key is there, with null.
                XCTAssertTrue(qc.keys.contains("psd2") && qc["psd2"] is NSNull, "\(name): \(qc)")
                XCTAssertEqual(qc["statementIds"] as? [String], ["0.4.0.1862.1.1", "0.4.0.1862.1.6"], name)
                continue
            }
            XCTAssertEqual(qc["statementIds"] as? [String], ["0.4.0.1862.1.1", "0.4.0.1862.1.6", "0.4.0.19495.2"], name)
            let psd2 = try XCTUnwrap(qc["psd2"] as? [String: Any], name)
            // A statement without roles has an empty list, not null.
            let parsedRoles = try XCTUnwrap(psd2["roles"] as? [[String: Any]], "\(name): \(psd2)")
            XCTAssertEqual(parsedRoles.compactMap { $0["name"] as? String }, roles, name)
            XCTAssertEqual(parsedRoles.compactMap { $0["standardName"] as? String }, roles, name)
            XCTAssertEqual(psd2["ncaId"] as? String, expected.ncaID, name)
            XCTAssertEqual(psd2["ncaName"] as? String, expected.ncaName, name)
        }
    }

    /// A QSealC without the PSD2 statement is read and reported, not refused: what is missing is
    /// for the relying party to judge.
    func testNoPSD2StatementIsReportedNotAnError() throws {
        let certificate = try load(.noPSD2)
        let qc = try XCTUnwrap(certificate.qcStatements)
        XCTAssertNil(qc.psd2)
        XCTAssertTrue(qc.compliance)
        XCTAssertEqual(qc.types, [.eseal])
        XCTAssertEqual(qc.statementIDs, ["0.4.0.1862.1.1", "0.4.0.1862.1.6"])
        // Control: openssl's parser sees no PSD2 OID in the extension, and does in the QSealC's.
        XCTAssertFalse(try asn1parseQCStatements(path(.noPSD2)).contains("0.4.0.19495.2"))
        XCTAssertTrue(try asn1parseQCStatements(path(.qsealc)).contains("0.4.0.19495.2"))

        let text = try inspectText(path(.noPSD2))
        XCTAssertEqual(reportLine(text, "PSD2:"), "PSD2:                   no PSD2 statement (0.4.0.19495.2)", text)
        XCTAssertNil(reportLine(text, "PSD2 roles:"), text)
        XCTAssertNil(reportLine(text, "NCA:"), text)
        XCTAssertEqual(reportLine(text, "QcType:"), "QcType:                 eseal, QSealC (0.4.0.1862.1.6.2)", text)

        // Same organisation by identifier, but without the statement there is no NCA to compare.
        let check = EIDASCertificate.sameOrganization(qwac: try load(.qwac), qsealc: certificate)
        XCTAssertFalse(check.isSameOrganization)
        XCTAssertEqual(check.mismatches.map(\.field), [.ncaID], check.description)
        XCTAssertEqual(check.description, "the QSealC has no PSD2 QCStatement (0.4.0.19495.2), so no NCA id")
        XCTAssertEqual(check.organizationIdentifier, "PSDDE-BAFIN-123456")
    }

    /// ETSI TS 119 495 wants at least one role in rolesOfPSP. A statement with none is a finding
    /// that inspection shows (exit 0, "PSD2 roles: none", `roles: []`); refusing it is the
    /// relying party's decision (the mock bank's QSealC rules), not the parser's.
    func testPSD2StatementWithoutRolesIsReported() throws {
        // The fixture is what it claims: openssl shows rolesOfPSP as an empty SEQUENCE.
        let outer = try openssl(["asn1parse", "-in", path(.missingRole)]).split(separator: "\n")
        let marker = try XCTUnwrap(outer.firstIndex { $0.hasSuffix(":qcStatements") })
        let offset = try XCTUnwrap(outer[outer.index(after: marker)].split(separator: ":").first?.trimmingCharacters(in: .whitespaces))
        let statements = try openssl(["asn1parse", "-in", path(.missingRole), "-strparse", offset]).split(separator: "\n").map(String.init)
        let psd2Line = try XCTUnwrap(statements.firstIndex { $0.hasSuffix(":0.4.0.19495.2") }, statements.joined(separator: "\n"))
        // OID, then PSD2QcType SEQUENCE, then rolesOfPSP: "d=3  hl=2 l=   0 cons: SEQUENCE".
        let rolesLine = statements[psd2Line + 2]
        XCTAssertTrue(rolesLine.contains("l=   0 cons:") && rolesLine.contains("SEQUENCE"), rolesLine)

        let psd2 = try XCTUnwrap(try load(.missingRole).qcStatements?.psd2)
        XCTAssertEqual(psd2.roles, [])
        XCTAssertFalse(psd2.hasRole("PSP_AI") || psd2.hasRole("PSP_PI") || psd2.hasRole("PSP_AS") || psd2.hasRole("PSP_IC"))
        XCTAssertEqual(psd2.ncaID, "DE-BAFIN")
        // Control: the QSealC's statement has its roles.
        XCTAssertTrue(try XCTUnwrap(try load(.qsealc).qcStatements?.psd2).hasRole("PSP_AI"))

        let text = try inspectText(path(.missingRole))
        let roles = try XCTUnwrap(reportLine(text, "PSD2 roles:"), text)
        XCTAssertTrue(roles.hasPrefix("PSD2 roles:             none"), roles)
        XCTAssertEqual(reportLine(text, "NCA:"), "NCA:                    Federal Financial Supervisory Authority (DE-BAFIN)", text)

        // The organisation check compares who the PSP is, not what it may do.
        let check = EIDASCertificate.sameOrganization(qwac: try load(.qwac), qsealc: try load(.missingRole))
        XCTAssertTrue(check.isSameOrganization, check.description)
    }

    func testOtherOrganizationIsNamedAsAMismatch() throws {
        let other = try load(.otherOrganization)
        XCTAssertEqual(other.organizationIdentifier, "PSDNL-DNB-987654")
        XCTAssertEqual(other.subject.country, "NL")
        XCTAssertEqual(other.qcStatements?.types, [.eseal])
        XCTAssertEqual(other.qcStatements?.psd2?.ncaID, "NL-DNB")
        XCTAssertEqual(other.qcStatements?.psd2?.ncaName, "De Nederlandsche Bank")

        let check = EIDASCertificate.sameOrganization(qwac: try load(.qwac), qsealc: other)
        XCTAssertFalse(check.isSameOrganization)
        XCTAssertEqual(check.mismatches.map(\.field), [.organizationIdentifier, .ncaID], check.description)
        XCTAssertEqual(check.mismatches[0].description, "organizationIdentifier differs: the QWAC has PSDDE-BAFIN-123456, the QSealC PSDNL-DNB-987654")
        XCTAssertEqual(check.mismatches[1].description, "the NCA id differs: the QWAC has DE-BAFIN, the QSealC NL-DNB")
        XCTAssertNil(check.organizationIdentifier)
        XCTAssertNil(check.ncaID)

        let text = try inspectText(path(.otherOrganization))
        XCTAssertEqual(reportLine(text, "organizationIdentifier:"), "organizationIdentifier: PSDNL-DNB-987654", text)
        XCTAssertEqual(reportLine(text, "NCA:"), "NCA:                    De Nederlandsche Bank (NL-DNB)", text)
        XCTAssertEqual(reportLine(text, "QcType:"), "QcType:                 eseal, QSealC (0.4.0.1862.1.6.2)", text)
    }
}

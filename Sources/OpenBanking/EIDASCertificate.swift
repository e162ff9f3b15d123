internal import CKeyBridgeShims
internal import COpenSSL
import Foundation
import KeyBridgeProvider

/// A failure to read an eIDAS certificate, with the cause and the fix.
public struct EIDASCertificateError: Error, Sendable, CustomStringConvertible {
    /// What went wrong; more codes may be added.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The bytes are neither a PEM nor a DER X.509 certificate (for example a private key).
        public static let notACertificate = Code(rawValue: "not-a-certificate")
        /// The QCStatements extension is not valid DER, or not shaped as ETSI EN 319 412-5 and
        /// TS 119 495 define it.
        public static let malformedQCStatements = Code(rawValue: "malformed-qc-statements")
        /// Another part of the certificate (validity, public key) cannot be read.
        public static let malformedField = Code(rawValue: "malformed-field")
    }

    public var code: Code
    /// The cause, as a sentence fragment.
    public var reason: String
    /// What the user can do about it.
    public var remedy: String
    /// The OpenSSL function that failed, if one did.
    public var function: String?
    /// OpenSSL's error queue when it failed.
    public var queue: [String]

    public init(_ code: Code, _ reason: String, remedy: String, function: String? = nil, queue: [String] = []) {
        self.code = code
        self.reason = reason
        self.remedy = remedy
        self.function = function
        self.queue = queue
    }

    /// The cause, the failing function with OpenSSL's first (root-cause) error, and the fix, on one line.
    public var description: String {
        let details = [function, queue.first].compactMap { $0 }
        return reason + (details.isEmpty ? "" : " (" + details.joined(separator: ": ") + ")") + "; " + remedy
    }

    static func notACertificate(_ reason: String, function: String? = nil) -> EIDASCertificateError {
        EIDASCertificateError(.notACertificate, reason,
                              remedy: "give an X.509 certificate in PEM (BEGIN CERTIFICATE) or DER form",
                              function: function, queue: function == nil ? [] : OpenSSLError.drainQueue())
    }

    static func malformedQC(_ reason: String, function: String? = nil) -> EIDASCertificateError {
        EIDASCertificateError(.malformedQCStatements, "the QCStatements extension (1.3.6.1.5.5.7.1.3) is malformed: " + reason,
                              remedy: "the certificate was issued wrongly; ask its issuer (the QTSP) for a corrected one",
                              function: function, queue: function == nil ? [] : OpenSSLError.drainQueue())
    }
}

/// An eIDAS certificate (QWAC or QSealC) and what PSD2 tooling needs from it: the subject's
/// `organizationIdentifier`, validity, key, fingerprint and the QCStatements (QcCompliance,
/// QcType and the PSD2 roles and NCA of ETSI TS 119 495).
///
/// Everything is read once, in `init`, with OpenSSL; the QCStatements are walked with OpenSSL's
/// generic ASN.1 decoder. A certificate without QCStatements is valid and has `qcStatements == nil`.
public final class EIDASCertificate: @unchecked Sendable {
    // Owns one X509, freed in deinit and never changed after init; every public property is an
    // immutable Swift value computed in init, so sharing across threads is safe.
    private let certificate: OpaquePointer

    /// The certificate's DER encoding (for example for `TPP-Signature-Certificate`).
    public let der: [UInt8]
    public let subject: Name
    public let issuer: Name
    /// The serial number's magnitude, big-endian, as encoded (leading zero bytes kept).
    public let serialNumber: [UInt8]
    /// The serial number in upper-case hex, two digits a byte, as `openssl x509 -serial` prints it.
    public let serialNumberHex: String
    public let notBefore: Date
    public let notAfter: Date
    public let publicKey: PublicKeyInfo
    /// SHA-256 over the DER certificate.
    public let sha256Fingerprint: [UInt8]
    /// The QCStatements extension, or nil when the certificate has none (not a qualified certificate).
    public let qcStatements: QCStatements?

    /// From a DER certificate, such as the value of a token's certificate object.
    public convenience init(der: [UInt8]) throws(EIDASCertificateError) {
        let parsed: (certificate: OpaquePointer?, used: Int) = der.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, !buffer.isEmpty else { return (nil, 0) }
            var cursor: UnsafePointer<UInt8>? = base
            let certificate = d2i_X509(nil, &cursor, buffer.count)
            return (certificate, cursor.map { $0 - base } ?? 0)
        }
        guard let certificate = parsed.certificate else {
            throw .notACertificate(der.isEmpty ? "the input is empty" : "the bytes are not a DER X.509 certificate", function: der.isEmpty ? nil : "d2i_X509")
        }
        guard parsed.used == der.count else {
            X509_free(certificate)
            throw .notACertificate("\(der.count - parsed.used) bytes follow the DER certificate")
        }
        try self.init(owning: certificate, der: der)
    }

    /// From PEM text: the first certificate in it (a chain file's leaf).
    public convenience init(pem: String) throws(EIDASCertificateError) {
        let certificate = try Self.readPEM(Array(pem.utf8))
        guard let der = Self.encode(certificate) else {
            X509_free(certificate)
            throw .notACertificate("the PEM certificate cannot be re-encoded", function: "i2d_X509")
        }
        try self.init(owning: certificate, der: der)
    }

    /// From a file's bytes: PEM when they contain a `-----BEGIN` line, DER otherwise.
    public convenience init(contents: [UInt8]) throws(EIDASCertificateError) {
        if contents.firstRange(of: Array("-----BEGIN".utf8)) != nil {
            try self.init(pem: String(decoding: contents, as: UTF8.self))
        } else {
            try self.init(der: contents)
        }
    }

    /// Every certificate in PEM text, in order (for a chain file: leaf first).
    public static func all(pem: String) throws(EIDASCertificateError) -> [EIDASCertificate] {
        let bytes = Array(pem.utf8)
        // The queue is read after the loop, so nothing older may be on it.
        ERR_clear_error()
        let ders: [[UInt8]] = bytes.withUnsafeBufferPointer { buffer in
            guard let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) else { return [] }
            defer { BIO_free(bio) }
            var found: [[UInt8]] = []
            while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                defer { X509_free(certificate) }
                guard let der = encode(certificate) else { break }
                found.append(der)
            }
            return found
        }
        // The loop ends on "no start line" at the end of the text; anything else is a damaged block.
        let last = ERR_peek_last_error()
        let damaged = last != 0 && ERR_GET_REASON(last) != PEM_R_NO_START_LINE
        if ders.isEmpty {
            // Names what the text holds instead (a key, a request, nothing).
            X509_free(try readPEM(bytes))
        }
        if damaged || ders.isEmpty {
            throw .notACertificate("PEM certificate block \(ders.count + 1) is damaged", function: "PEM_read_bio_X509")
        }
        ERR_clear_error()
        var certificates: [EIDASCertificate] = []
        for der in ders { certificates.append(try EIDASCertificate(der: der)) }
        return certificates
    }

    private init(owning certificate: OpaquePointer, der: [UInt8]) throws(EIDASCertificateError) {
        let fields: Fields
        do {
            fields = try Fields(certificate)
        } catch {
            X509_free(certificate)
            ERR_clear_error()
            throw error
        }
        ERR_clear_error()
        self.certificate = certificate
        self.der = der
        subject = fields.subject
        issuer = fields.issuer
        serialNumber = fields.serialNumber
        serialNumberHex = fields.serialNumberHex
        notBefore = fields.notBefore
        notAfter = fields.notAfter
        publicKey = fields.publicKey
        sha256Fingerprint = fields.sha256Fingerprint
        qcStatements = fields.qcStatements
    }

    deinit { X509_free(certificate) }

    /// The subject's `organizationIdentifier` (2.5.4.97), e.g. `PSDDE-BAFIN-123456`.
    public var organizationIdentifier: String? { subject.organizationIdentifier }

    /// The SHA-256 fingerprint as upper-case hex pairs joined by colons, as `openssl x509 -fingerprint` prints it.
    public var sha256FingerprintHex: String { sha256Fingerprint.map { hexByte($0) }.joined(separator: ":") }

    /// Whole days from `date` until `notAfter`, rounded down; negative once the certificate has expired.
    public func daysUntilExpiry(at date: Date = Date()) -> Int {
        Int((notAfter.timeIntervalSince(date) / 86_400).rounded(.down))
    }

    /// Whether `date` lies inside the validity period.
    public func isValid(at date: Date = Date()) -> Bool { notBefore <= date && date <= notAfter }

    /// Checks that a QWAC and a QSealC belong to the same PSP: the same `organizationIdentifier`
    /// and NCA id, QcType web on the QWAC and QcType eseal on the QSealC.
    public static func sameOrganization(qwac: EIDASCertificate, qsealc: EIDASCertificate) -> OrganizationCheck {
        var mismatches: [OrganizationCheck.Mismatch] = []
        func add(_ field: OrganizationCheck.Field, _ text: String) { mismatches.append(.init(field: field, description: text)) }

        switch (qwac.organizationIdentifier, qsealc.organizationIdentifier) {
        case let (a?, b?) where a != b:
            add(.organizationIdentifier, "organizationIdentifier differs: the QWAC has \(a), the QSealC \(b)")
        case (nil, _):
            add(.organizationIdentifier, "the QWAC's subject has no organizationIdentifier (2.5.4.97)")
        case (_, nil):
            add(.organizationIdentifier, "the QSealC's subject has no organizationIdentifier (2.5.4.97)")
        default: break
        }

        switch (qwac.qcStatements?.psd2?.ncaID, qsealc.qcStatements?.psd2?.ncaID) {
        case let (a?, b?) where a != b:
            add(.ncaID, "the NCA id differs: the QWAC has \(a), the QSealC \(b)")
        case (nil, _):
            add(.ncaID, "the QWAC has no PSD2 QCStatement (0.4.0.19495.2), so no NCA id")
        case (_, nil):
            add(.ncaID, "the QSealC has no PSD2 QCStatement (0.4.0.19495.2), so no NCA id")
        default: break
        }

        func typeProblem(_ certificate: EIDASCertificate, role: String, wanted: QCType) -> String? {
            let types = certificate.qcStatements?.types ?? []
            if types.contains(wanted) { return nil }
            if types.isEmpty { return "the \(role) has no QcType statement (0.4.0.1862.1.6); it needs \(wanted)" }
            return "the \(role)'s QcType is \(types.map(\.description).joined(separator: ", ")), not \(wanted)"
        }
        if let problem = typeProblem(qwac, role: "QWAC", wanted: .web) { add(.qwacType, problem) }
        if let problem = typeProblem(qsealc, role: "QSealC", wanted: .eseal) { add(.qsealcType, problem) }

        return OrganizationCheck(mismatches: mismatches,
                                 organizationIdentifier: qwac.organizationIdentifier == qsealc.organizationIdentifier ? qwac.organizationIdentifier : nil,
                                 ncaID: qwac.qcStatements?.psd2?.ncaID == qsealc.qcStatements?.psd2?.ncaID ? qwac.qcStatements?.psd2?.ncaID : nil)
    }
}

// MARK: - Values

extension EIDASCertificate {
    /// A distinguished name: the RFC 2253 string and the attributes in certificate order.
    public struct Name: Sendable, Hashable, CustomStringConvertible {
        public struct Attribute: Sendable, Hashable {
            /// Dotted OID, e.g. `2.5.4.97`.
            public let oid: String
            /// OpenSSL's short name (`CN`, `O`, `organizationIdentifier`), nil for OIDs it does not know.
            public let shortName: String?
            public let value: String
        }

        /// RFC 2253 form, most specific attribute first; non-ASCII characters stay UTF-8.
        public let rfc2253: String
        /// The attributes as encoded, most general first (`C` before `CN`).
        public let attributes: [Attribute]

        public var description: String { rfc2253 }

        /// Every value of the attribute with this dotted OID.
        public func values(of oid: String) -> [String] { attributes.filter { $0.oid == oid }.map(\.value) }

        /// The first value of the attribute with this dotted OID.
        public func value(of oid: String) -> String? { attributes.first { $0.oid == oid }?.value }

        /// `CN` (2.5.4.3).
        public var commonName: String? { value(of: "2.5.4.3") }
        /// `O` (2.5.4.10).
        public var organization: String? { value(of: "2.5.4.10") }
        /// `C` (2.5.4.6).
        public var country: String? { value(of: "2.5.4.6") }
        /// `organizationIdentifier` (2.5.4.97), e.g. `PSDDE-BAFIN-123456`.
        public var organizationIdentifier: String? { value(of: "2.5.4.97") }
    }

    /// The subject public key: algorithm, size and (for EC) curve.
    public struct PublicKeyInfo: Sendable, Hashable, CustomStringConvertible {
        /// OpenSSL's key type in upper case: `RSA`, `RSA-PSS`, `EC`, `ED25519`, `ED448`.
        public let algorithm: String
        public let bits: Int
        /// The curve's NIST name (`P-256`) where it has one, else OpenSSL's group name; nil for non-EC keys.
        public let curve: String?

        public var description: String {
            switch (algorithm, curve) {
            case let ("EC", curve?): return "EC \(curve) (\(bits) bits)"
            case ("ED25519", _), ("ED448", _): return algorithm
            default: return "\(algorithm) \(bits) bits"
            }
        }
    }

    /// The QCStatements extension (RFC 3739, ETSI EN 319 412-5).
    public struct QCStatements: Sendable, Hashable {
        /// Every statement's OID, in certificate order.
        public let statementIDs: [String]
        /// QcCompliance (0.4.0.1862.1.1): an EU qualified certificate.
        public let compliance: Bool
        /// The QcType (0.4.0.1862.1.6) values; empty without that statement.
        public let types: [QCType]
        /// The PSD2 statement (0.4.0.19495.2), if present.
        public let psd2: PSD2Statement?
        /// OIDs of the statements not interpreted here (QcSSCD, QcPDS, …), in certificate order.
        public let otherStatementIDs: [String]

        public static let extensionOID = "1.3.6.1.5.5.7.1.3"
        public static let complianceOID = "0.4.0.1862.1.1"
        public static let typeOID = "0.4.0.1862.1.6"
        public static let psd2OID = "0.4.0.19495.2"
    }

    /// A QcType value (ETSI EN 319 412-5): the OID of the certificate's purpose.
    public struct QCType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        /// The dotted OID.
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// `0.4.0.1862.1.6.1`: for electronic signatures.
        public static let esign = QCType(rawValue: "0.4.0.1862.1.6.1")
        /// `0.4.0.1862.1.6.2`: for electronic seals (a QSealC).
        public static let eseal = QCType(rawValue: "0.4.0.1862.1.6.2")
        /// `0.4.0.1862.1.6.3`: for website authentication (a QWAC).
        public static let web = QCType(rawValue: "0.4.0.1862.1.6.3")

        /// `esign`, `eseal` or `web`; nil for other OIDs.
        public var name: String? {
            switch self {
            case .esign: return "esign"
            case .eseal: return "eseal"
            case .web: return "web"
            default: return nil
            }
        }

        /// What a certificate of this type is called in PSD2: `QWAC`, `QSealC` or `QESig`.
        public var certificateKind: String? {
            switch self {
            case .esign: return "QESig"
            case .eseal: return "QSealC"
            case .web: return "QWAC"
            default: return nil
            }
        }

        public var description: String { name ?? rawValue }
    }

    /// The PSD2 QCStatement of ETSI TS 119 495: the PSP's roles and its national competent authority.
    public struct PSD2Statement: Sendable, Hashable {
        public let roles: [PSD2Role]
        /// `nCAName`, e.g. `Federal Financial Supervisory Authority`.
        public let ncaName: String
        /// `nCAId`, e.g. `DE-BAFIN`.
        public let ncaID: String

        /// Whether a role with this OID, or with this standard name (`PSP_AI`), is present.
        public func hasRole(_ oidOrName: String) -> Bool {
            roles.contains { $0.oid == oidOrName || $0.standardName == oidOrName }
        }
    }

    /// One PSD2 role: `roleOfPspOid` and `roleOfPspName`.
    public struct PSD2Role: Sendable, Hashable, CustomStringConvertible {
        /// `roleOfPspOid`, e.g. `0.4.0.19495.1.3`.
        public let oid: String
        /// `roleOfPspName` as written in the certificate, e.g. `PSP_AI`.
        public let name: String

        /// The roles ETSI TS 119 495 defines, by OID.
        public static let standardNames: [String: String] = [
            "0.4.0.19495.1.1": "PSP_AS",
            "0.4.0.19495.1.2": "PSP_PI",
            "0.4.0.19495.1.3": "PSP_AI",
            "0.4.0.19495.1.4": "PSP_IC",
        ]

        /// `PSP_AS`, `PSP_PI`, `PSP_AI` or `PSP_IC` for the standard OIDs; nil for others.
        public var standardName: String? { Self.standardNames[oid] }

        public var description: String { "\(standardName ?? name) (\(oid))" }
    }

    /// The result of `sameOrganization(qwac:qsealc:)`.
    public struct OrganizationCheck: Sendable, CustomStringConvertible {
        /// What was compared; more fields may be added.
        public struct Field: RawRepresentable, Sendable, Hashable {
            public let rawValue: String
            public init(rawValue: String) { self.rawValue = rawValue }
            public static let organizationIdentifier = Field(rawValue: "organizationIdentifier")
            public static let ncaID = Field(rawValue: "ncaId")
            public static let qwacType = Field(rawValue: "qwacType")
            public static let qsealcType = Field(rawValue: "qsealcType")
        }

        public struct Mismatch: Sendable, Hashable, CustomStringConvertible {
            public let field: Field
            /// A sentence naming both values.
            public let description: String
        }

        public let mismatches: [Mismatch]
        /// The shared `organizationIdentifier`, when both have the same one.
        public let organizationIdentifier: String?
        /// The shared NCA id, when both have the same one.
        public let ncaID: String?

        public var isSameOrganization: Bool { mismatches.isEmpty }

        public var description: String {
            if isSameOrganization { return "same organization \(organizationIdentifier ?? "?"), NCA \(ncaID ?? "?")" }
            return mismatches.map(\.description).joined(separator: "; ")
        }
    }
}

// MARK: - Reading with OpenSSL

private func hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789ABCDEF")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
}

extension EIDASCertificate {
    /// All fields, read before the object exists so a failure can free the X509.
    private struct Fields {
        var subject: Name
        var issuer: Name
        var serialNumber: [UInt8]
        var serialNumberHex: String
        var notBefore: Date
        var notAfter: Date
        var publicKey: PublicKeyInfo
        var sha256Fingerprint: [UInt8]
        var qcStatements: QCStatements?

        init(_ certificate: OpaquePointer) throws(EIDASCertificateError) {
            subject = EIDASCertificate.name(X509_get_subject_name(certificate))
            issuer = EIDASCertificate.name(X509_get_issuer_name(certificate))

            let serial = X509_get0_serialNumber(certificate)
            serialNumber = EIDASCertificate.bytes(serial)
            let negative = serial.map { ASN1_STRING_type($0) == V_ASN1_NEG_INTEGER } ?? false
            serialNumberHex = (negative ? "-" : "") + (serialNumber.isEmpty ? "00" : serialNumber.map { hexByte($0) }.joined())

            guard let notBefore = EIDASCertificate.date(X509_get0_notBefore(certificate)),
                  let notAfter = EIDASCertificate.date(X509_get0_notAfter(certificate)) else {
                throw EIDASCertificateError(.malformedField, "the validity dates cannot be read", remedy: "the certificate is damaged; get a fresh copy from its issuer",
                                            function: "ASN1_TIME_to_tm", queue: OpenSSLError.drainQueue())
            }
            self.notBefore = notBefore
            self.notAfter = notAfter

            guard let key = X509_get0_pubkey(certificate) else {
                throw EIDASCertificateError(.malformedField, "the public key cannot be read (an algorithm OpenSSL does not know, or a damaged key)",
                                            remedy: "check the certificate with 'openssl x509 -noout -text'", function: "X509_get0_pubkey", queue: OpenSSLError.drainQueue())
            }
            publicKey = EIDASCertificate.keyInfo(key)

            var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
            var length: UInt32 = 0
            guard X509_digest(certificate, EVP_sha256(), &digest, &length) == 1 else {
                throw EIDASCertificateError(.malformedField, "the certificate cannot be hashed", remedy: "check the certificate with 'openssl x509 -noout -text'",
                                            function: "X509_digest", queue: OpenSSLError.drainQueue())
            }
            sha256Fingerprint = Array(digest.prefix(Int(length)))

            qcStatements = try EIDASCertificate.qcStatements(of: certificate)
        }
    }

    /// The first certificate in PEM bytes; names what the text holds instead when there is none.
    private static func readPEM(_ bytes: [UInt8]) throws(EIDASCertificateError) -> OpaquePointer {
        let found: (certificate: OpaquePointer?, firstLabel: String?) = bytes.withUnsafeBufferPointer { buffer in
            func reader() -> OpaquePointer? { BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) }
            if let bio = reader() {
                defer { BIO_free(bio) }
                if let certificate = PEM_read_bio_X509(bio, nil, nil, nil) { return (certificate, nil) }
            }
            ERR_clear_error()
            // OpenSSL's PEM reader names the first block, for the error message.
            guard let bio = reader() else { return (nil, nil) }
            defer { BIO_free(bio) }
            var name: UnsafeMutablePointer<CChar>?
            var header: UnsafeMutablePointer<CChar>?
            var data: UnsafeMutablePointer<UInt8>?
            var length = 0
            guard PEM_read_bio(bio, &name, &header, &data, &length) == 1 else { return (nil, nil) }
            defer {
                CRYPTO_free(name, nil, 0)
                CRYPTO_free(header, nil, 0)
                CRYPTO_free(data, nil, 0)
            }
            return (nil, name.map { String(cString: $0) })
        }
        if let certificate = found.certificate { return certificate }
        let queue = OpenSSLError.drainQueue()
        guard let label = found.firstLabel else {
            throw EIDASCertificateError(.notACertificate, "the PEM text has no complete BEGIN/END block",
                                        remedy: "give an X.509 certificate in PEM (BEGIN CERTIFICATE) or DER form", function: "PEM_read_bio", queue: queue)
        }
        if label == "CERTIFICATE" || label == "X509 CERTIFICATE" {
            throw EIDASCertificateError(.notACertificate, "the PEM CERTIFICATE block is not a valid X.509 certificate",
                                        remedy: "the file is damaged; get a fresh copy of the certificate", function: "PEM_read_bio_X509", queue: queue)
        }
        let what = label.contains("PRIVATE KEY") ? "a private key (\(label))" : "a \(label) block"
        throw EIDASCertificateError(.notACertificate, "the PEM text holds \(what), not a certificate",
                                    remedy: "give the certificate file (BEGIN CERTIFICATE), not the key or request")
    }

    private static func encode(_ certificate: OpaquePointer) -> [UInt8]? {
        var out: UnsafeMutablePointer<UInt8>?
        let length = i2d_X509(certificate, &out)
        guard length > 0, let out else { return nil }
        defer { CRYPTO_free(out, nil, 0) }
        return Array(UnsafeBufferPointer(start: out, count: Int(length)))
    }

    private static func bytes(_ string: UnsafePointer<ASN1_STRING>?) -> [UInt8] {
        guard let string, let data = ASN1_STRING_get0_data(string) else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: Int(ASN1_STRING_length(string))))
    }

    /// A character string as UTF-8; nil when it is not one.
    private static func text(_ string: UnsafePointer<ASN1_STRING>?) -> String? {
        guard let string else { return nil }
        var out: UnsafeMutablePointer<UInt8>?
        let length = ASN1_STRING_to_UTF8(&out, string)
        guard length >= 0, let out else {
            ERR_clear_error()
            return nil
        }
        defer { CRYPTO_free(out, nil, 0) }
        return String(decoding: UnsafeBufferPointer(start: out, count: Int(length)), as: UTF8.self)
    }

    /// The dotted form of an OID, never its name.
    private static func dotted(_ object: OpaquePointer?) -> String {
        guard let object else { return "?" }
        var buffer = [CChar](repeating: 0, count: 128)
        let needed = Int(OBJ_obj2txt(&buffer, Int32(buffer.count), object, 1))
        if needed >= buffer.count {
            buffer = [CChar](repeating: 0, count: needed + 1)
            _ = OBJ_obj2txt(&buffer, Int32(buffer.count), object, 1)
        }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }

    private static func name(_ name: OpaquePointer?) -> Name {
        guard let name else { return Name(rfc2253: "", attributes: []) }
        var attributes: [Name.Attribute] = []
        for index in 0..<X509_NAME_entry_count(name) {
            guard let entry = X509_NAME_get_entry(name, index) else { continue }
            let object = X509_NAME_ENTRY_get_object(entry)
            let nid = OBJ_obj2nid(object)
            let shortName = nid == NID_undef ? nil : OBJ_nid2sn(nid).map { String(cString: $0) }
            let data = X509_NAME_ENTRY_get_data(entry)
            let value = text(data) ?? "#" + bytes(data).map { hexByte($0) }.joined()
            attributes.append(.init(oid: dotted(object), shortName: shortName, value: value))
        }
        var rfc2253 = ""
        if let bio = BIO_new(BIO_s_mem()) {
            defer { BIO_free(bio) }
            // RFC 2253 as OpenSSL prints it, but with UTF-8 left as it is rather than escaped.
            let flags = CKeyBridgeShims_XN_FLAG_RFC2253 & ~UInt(ASN1_STRFLGS_ESC_MSB)
            if X509_NAME_print_ex(bio, name, 0, flags) >= 0 {
                var bytes = [UInt8](repeating: 0, count: BIO_ctrl_pending(bio))
                let read = BIO_read(bio, &bytes, Int32(bytes.count))
                rfc2253 = String(decoding: bytes.prefix(max(0, Int(read))), as: UTF8.self)
            }
        }
        ERR_clear_error()
        return Name(rfc2253: rfc2253, attributes: attributes)
    }

    private static func keyInfo(_ key: OpaquePointer) -> PublicKeyInfo {
        let algorithm = EVP_PKEY_get0_type_name(key).map { String(cString: $0).uppercased() } ?? "UNKNOWN"
        var curve: String?
        if EVP_PKEY_is_a(key, "EC") == 1 {
            var buffer = [CChar](repeating: 0, count: 80)
            var length = 0
            if EVP_PKEY_get_group_name(key, &buffer, buffer.count, &length) == 1 {
                let group = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                curve = EC_curve_nid2nist(OBJ_txt2nid(group)).map { String(cString: $0) } ?? group
            }
        }
        ERR_clear_error()
        return PublicKeyInfo(algorithm: algorithm, bits: Int(EVP_PKEY_get_bits(key)), curve: curve)
    }
}

// MARK: - QCStatements

extension EIDASCertificate {
    /// One element of a DER SEQUENCE as OpenSSL's `SEQUENCE OF ANY` decoder gave it, copied out.
    private enum Element {
        case objectIdentifier(String)
        /// A character string (UTF8String, PrintableString, …) as UTF-8.
        case text(String)
        /// A nested SEQUENCE: its whole DER, decoded when needed.
        case sequence([UInt8])
        case other(tag: Int32)

        var kind: String {
            switch self {
            case .objectIdentifier: return "OBJECT IDENTIFIER"
            case .text: return "string"
            case .sequence: return "SEQUENCE"
            case let .other(tag): return ASN1_tag2str(tag).map { String(cString: $0) } ?? "tag \(tag)"
            }
        }

        /// The kind with its article, for messages: "an INTEGER", "a SEQUENCE".
        var aKind: String { ("AEIO".contains(kind.first ?? "x") ? "an " : "a ") + kind }
    }

    /// The extension's value, walked with OpenSSL's generic ASN.1 types; nil without the extension.
    private static func qcStatements(of certificate: OpaquePointer) throws(EIDASCertificateError) -> QCStatements? {
        guard let oid = OBJ_txt2obj(QCStatements.extensionOID, 1) else { return nil }
        defer { ASN1_OBJECT_free(oid) }
        let index = X509_get_ext_by_OBJ(certificate, oid, -1)
        guard index >= 0, let `extension` = X509_get_ext(certificate, index) else { return nil }
        if X509_get_ext_by_OBJ(certificate, oid, index) >= 0 {
            throw .malformedQC("the extension appears more than once (RFC 5280 allows one)")
        }
        let der = bytes(X509_EXTENSION_get_data(`extension`))
        let statements = try elements(der, "the extension value")

        var ids: [String] = []
        var compliance = false
        var types: [QCType] = []
        var psd2: PSD2Statement?
        var others: [String] = []
        for (position, element) in statements.enumerated() {
            guard case let .sequence(statementDER) = element else {
                throw .malformedQC("statement \(position + 1) is \(element.aKind), not a SEQUENCE { statementId, statementInfo }")
            }
            let parts = try elements(statementDER, "statement \(position + 1)")
            guard case let .objectIdentifier(id)? = parts.first else {
                throw .malformedQC("statement \(position + 1) does not start with its statementId OID")
            }
            guard parts.count <= 2 else {
                throw .malformedQC("statement \(id) has \(parts.count - 1) statementInfo fields; RFC 3739 allows one")
            }
            let info = parts.count == 2 ? parts[1] : nil
            ids.append(id)
            switch id {
            case QCStatements.complianceOID:
                compliance = true
            case QCStatements.typeOID:
                guard case let .sequence(listDER)? = info else {
                    throw .malformedQC("QcType (\(id)) has \(info.map { $0.aKind } ?? "no statementInfo") where a SEQUENCE OF OBJECT IDENTIFIER belongs")
                }
                for value in try elements(listDER, "the QcType list") {
                    guard case let .objectIdentifier(type) = value else {
                        throw .malformedQC("the QcType list holds \(value.aKind), not only OBJECT IDENTIFIERs")
                    }
                    types.append(QCType(rawValue: type))
                }
            case QCStatements.psd2OID:
                guard psd2 == nil else { throw .malformedQC("the PSD2 statement (\(id)) appears twice") }
                psd2 = try parsePSD2(info)
            default:
                others.append(id)
            }
        }
        return QCStatements(statementIDs: ids, compliance: compliance, types: types, psd2: psd2, otherStatementIDs: others)
    }

    /// PSD2QcType ::= SEQUENCE { rolesOfPSP RolesOfPSP, nCAName NCAName, nCAId NCAId } (ETSI TS 119 495).
    private static func parsePSD2(_ info: Element?) throws(EIDASCertificateError) -> PSD2Statement {
        let psd2 = "the PSD2 statement (\(QCStatements.psd2OID))"
        guard case let .sequence(infoDER)? = info else {
            throw .malformedQC("\(psd2) has \(info.map { $0.aKind } ?? "no statementInfo") where SEQUENCE { rolesOfPSP, nCAName, nCAId } belongs")
        }
        let fields = try elements(infoDER, psd2)
        guard fields.count >= 3 else {
            throw .malformedQC("\(psd2) has \(fields.count) of its 3 fields (rolesOfPSP, nCAName, nCAId)")
        }
        guard case let .sequence(rolesDER) = fields[0] else {
            throw .malformedQC("rolesOfPSP in \(psd2) is \(fields[0].aKind), not a SEQUENCE OF RoleOfPSP")
        }
        guard case let .text(ncaName) = fields[1] else { throw .malformedQC("nCAName in \(psd2) is \(fields[1].aKind), not a UTF8String") }
        guard case let .text(ncaID) = fields[2] else { throw .malformedQC("nCAId in \(psd2) is \(fields[2].aKind), not a UTF8String") }

        var roles: [PSD2Role] = []
        for (position, role) in try elements(rolesDER, "rolesOfPSP").enumerated() {
            guard case let .sequence(roleDER) = role else {
                throw .malformedQC("role \(position + 1) in rolesOfPSP is \(role.aKind), not a SEQUENCE { roleOfPspOid, roleOfPspName }")
            }
            let parts = try elements(roleDER, "role \(position + 1) in rolesOfPSP")
            guard parts.count == 2, case let .objectIdentifier(oid) = parts[0], case let .text(name) = parts[1] else {
                throw .malformedQC("role \(position + 1) in rolesOfPSP is not { roleOfPspOid OBJECT IDENTIFIER, roleOfPspName UTF8String }")
            }
            roles.append(PSD2Role(oid: oid, name: name))
        }
        return PSD2Statement(roles: roles, ncaName: ncaName, ncaID: ncaID)
    }

    /// The elements of one DER SEQUENCE, decoded by `d2i_ASN1_SEQUENCE_ANY`; the whole input must be used.
    private static func elements(_ der: [UInt8], _ what: String) throws(EIDASCertificateError) -> [Element] {
        enum Outcome {
            case decoded([Element])
            case invalid
            case trailing(Int)
            case badString(Int32)
        }
        let outcome: Outcome = der.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, !buffer.isEmpty else { return .invalid }
            var cursor: UnsafePointer<UInt8>? = base
            guard let stack = d2i_ASN1_SEQUENCE_ANY(nil, &cursor, buffer.count) else { return .invalid }
            defer { CKeyBridgeShims_sk_ASN1_TYPE_pop_free(stack) }
            if let cursor, cursor - base < buffer.count { return .trailing(buffer.count - (cursor - base)) }
            var elements: [Element] = []
            for index in 0..<CKeyBridgeShims_sk_ASN1_TYPE_num(stack) {
                guard let value = CKeyBridgeShims_sk_ASN1_TYPE_value(stack, index) else { return .invalid }
                let tag = ASN1_TYPE_get(value)
                switch tag {
                case V_ASN1_OBJECT:
                    elements.append(.objectIdentifier(dotted(value.pointee.value.object)))
                case V_ASN1_SEQUENCE:
                    elements.append(.sequence(bytes(value.pointee.value.sequence)))
                case V_ASN1_UTF8STRING, V_ASN1_PRINTABLESTRING, V_ASN1_IA5STRING, V_ASN1_VISIBLESTRING,
                     V_ASN1_BMPSTRING, V_ASN1_UNIVERSALSTRING, V_ASN1_T61STRING:
                    guard let string = text(value.pointee.value.asn1_string) else { return .badString(tag) }
                    elements.append(.text(string))
                default:
                    elements.append(.other(tag: tag))
                }
            }
            return .decoded(elements)
        }
        switch outcome {
        case let .decoded(elements):
            return elements
        case .invalid:
            throw .malformedQC("\(what) is not a valid DER SEQUENCE", function: "d2i_ASN1_SEQUENCE_ANY")
        case let .trailing(count):
            throw .malformedQC("\(count) bytes follow the SEQUENCE in \(what)")
        case let .badString(tag):
            throw .malformedQC("\(Element.other(tag: tag).aKind) in \(what) does not hold valid text of its type")
        }
    }
}

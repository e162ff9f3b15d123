internal import COpenSSL
import Foundation
import KeyBridgeProvider

/// Why a certificate signing request could not be made.
public struct CertificateRequestError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, naming the fix.
    public var reason: String
    /// The OpenSSL function that failed, if one did.
    public var function: String?
    public var queue: [String]

    public init(_ reason: String, function: String? = nil, queue: [String] = []) {
        self.reason = reason
        self.function = function
        self.queue = queue
    }

    public var description: String {
        let details = queue.isEmpty ? "" : " (" + queue.joined(separator: "; ") + ")"
        return reason + details
    }
}

/// A PKCS#10 request for an eIDAS certificate for PSD2 (a QWAC or a QSealC), signed by a
/// token key through the provider.
///
/// The subject carries `organizationIdentifier` (2.5.4.97). The request asks for a
/// QCStatements extension (RFC 3739) with QcCompliance, QcType (web for a QWAC, eseal for a
/// QSealC) and the PSD2 statement of ETSI TS 119 495:
///
/// ```
/// PSD2QcType ::= SEQUENCE { rolesOfPSP RolesOfPSP, nCAName NCAName, nCAId NCAId }
/// RolesOfPSP ::= SEQUENCE OF RoleOfPSP
/// RoleOfPSP ::= SEQUENCE { roleOfPspOid OBJECT IDENTIFIER, roleOfPspName UTF8String }
/// ```
public struct PSD2CertificateRequest: Sendable {
    /// Which eIDAS certificate the request is for.
    public enum Kind: String, Sendable {
        /// A QWAC: QcType web (0.4.0.1862.1.6.3), for mTLS.
        case qwac
        /// A QSealC: QcType eseal (0.4.0.1862.1.6.2), for request signatures.
        case qseal

        var qcType: EIDASCertificate.QCType { self == .qwac ? .web : .eseal }
    }

    /// The PSD2 roles of ETSI TS 119 495 and their OIDs.
    public static let roleOIDs: [(name: String, oid: String)] = [
        ("PSP_AS", "0.4.0.19495.1.1"), ("PSP_PI", "0.4.0.19495.1.2"),
        ("PSP_AI", "0.4.0.19495.1.3"), ("PSP_IC", "0.4.0.19495.1.4"),
    ]

    /// The subject's attributes in certificate order (country first), as (name, value).
    public var subject: [(name: String, value: String)]
    /// Role names from `roleOIDs`, in the order given.
    public var roles: [String]
    /// The national competent authority's name (`nCAName`), e.g. "Federal Financial Supervisory Authority".
    public var ncaName: String
    /// The authority's id (`nCAId`): country code, hyphen, authority code, e.g. `DE-BAFIN`.
    public var ncaID: String
    public var kind: Kind

    /// Checks the roles, the NCA id and the subject's `organizationIdentifier`; adds
    /// `organizationIdentifier` to the subject when it lacks one.
    public init(subject: [(name: String, value: String)], organizationIdentifier: String?, roles: [String],
                ncaName: String, ncaID: String, kind: Kind) throws(CertificateRequestError) {
        var attributes = subject
        guard !attributes.isEmpty else { throw CertificateRequestError("the subject is empty; give at least /C=…/O=…/CN=…") }
        let known = Set(Self.roleOIDs.map(\.name))
        var seen: [String] = []
        for role in roles.map({ $0.uppercased().trimmingCharacters(in: .whitespaces) }) where !seen.contains(role) {
            guard known.contains(role) else {
                throw CertificateRequestError("unknown PSD2 role '\(role)'; the roles are PSP_AS, PSP_PI, PSP_AI and PSP_IC (ETSI TS 119 495)")
            }
            seen.append(role)
        }
        guard !seen.isEmpty else { throw CertificateRequestError("no PSD2 role given; --eidas-role takes PSP_AS, PSP_PI, PSP_AI and/or PSP_IC, comma-separated") }
        guard Self.isNCAIdentifier(ncaID) else {
            throw CertificateRequestError(Self.ncaIdentifierAdvice(ncaID))
        }
        guard !ncaName.isEmpty, ncaName.utf8.count <= 256 else { throw CertificateRequestError("the NCA name must be 1 to 256 bytes long") }
        let existing = attributes.first { Self.isOrganizationIdentifier($0.name) }?.value
        switch (existing, organizationIdentifier) {
        case let (inSubject?, given?) where inSubject != given:
            throw CertificateRequestError("the subject's organizationIdentifier '\(inSubject)' differs from --org-id '\(given)'; give one of them")
        case (nil, let given?):
            // Where TSPs put it: after O and before CN.
            let position = attributes.firstIndex { ["cn", "commonname", "2.5.4.3"].contains($0.name.lowercased()) } ?? attributes.endIndex
            attributes.insert((name: "organizationIdentifier", value: given), at: position)
        case (nil, nil):
            throw CertificateRequestError("no organizationIdentifier: add --org-id PSDDE-BAFIN-123456 (PSD + country + '-' + NCA code + '-' + authorisation number)")
        default:
            break
        }
        let identifier = attributes.first { Self.isOrganizationIdentifier($0.name) }!.value
        guard identifier.hasPrefix("PSD"), identifier.count > 5 else {
            throw CertificateRequestError("the organizationIdentifier '\(identifier)' is not a PSD2 one; it must start with PSD and the country, e.g. PSDDE-BAFIN-123456 (ETSI TS 119 495, 5.2.1)")
        }
        self.subject = attributes
        self.roles = seen
        self.ncaName = ncaName
        self.ncaID = ncaID
        self.kind = kind
    }

    static func isOrganizationIdentifier(_ name: String) -> Bool {
        ["organizationidentifier", "2.5.4.97"].contains(name.lowercased())
    }

    /// The error text for an `nCAId` of the wrong form.
    public static func ncaIdentifierAdvice(_ text: String) -> String {
        "the NCA id '\(text.prefix(30))' is not of the form CC-NCA (two capital letters, a hyphen, the authority's code), e.g. DE-BAFIN"
    }

    /// Whether `text` has the form of an `nCAId`: two capital letters, a hyphen, the authority's code.
    public static func isNCAIdentifier(_ text: String) -> Bool {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        return parts.count == 2 && parts[0].count == 2 && parts[0].allSatisfy({ $0.isASCII && $0.isUppercase })
            && !parts[1].isEmpty && parts[1].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
    }

    // MARK: Subject parsing

    /// Parses `/C=DE/O=Example/CN=tpp.example` (OpenSSL's form, `\/` escapes a slash) or the RFC
    /// 2253 form `CN=tpp.example,O=Example,C=DE` (most specific first, `\,` escapes a comma).
    /// Returns the attributes in certificate order.
    public static func parseSubject(_ text: String) throws(CertificateRequestError) -> [(name: String, value: String)] {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let slashForm = trimmed.hasPrefix("/")
        let separator: Character = slashForm ? "/" : ","
        var parts: [String] = []
        var current = ""
        var escaped = false
        for character in slashForm ? String(trimmed.dropFirst()) : trimmed {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == separator || (!slashForm && character == "+") {
                parts.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        if escaped { throw CertificateRequestError("the subject ends with a lone backslash; remove it or escape the next character") }
        parts.append(current)
        var attributes: [(name: String, value: String)] = []
        for part in parts {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = pair.first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            guard pair.count == 2, !name.isEmpty else {
                throw CertificateRequestError("the subject part '\(part)' is not NAME=value; write the subject as /C=DE/O=…/CN=… or CN=…,O=…,C=DE")
            }
            let value = slashForm ? String(pair[1]) : pair[1].trimmingCharacters(in: .whitespaces)
            guard !value.isEmpty else { throw CertificateRequestError("the subject attribute \(name) has an empty value") }
            guard OBJ_txt2nid(name) != NID_undef else {
                throw CertificateRequestError("unknown subject attribute '\(name)'; use names such as C, ST, L, O, OU, CN, organizationIdentifier, serialNumber, or a dotted OID")
            }
            attributes.append((name: name, value: value))
        }
        return slashForm ? attributes : attributes.reversed()
    }

    // MARK: Building and signing

    /// The request in PEM, signed by `key` (RSA with SHA-256, EC with the curve's hash,
    /// Ed25519 without a separate hash). The signature is checked before the PEM is returned.
    public func pem(signedBy key: ProviderKey) throws(CertificateRequestError) -> String {
        guard let request = X509_REQ_new() else { throw Self.failure("X509_REQ_new", "out of memory") }
        defer { X509_REQ_free(request) }
        guard X509_REQ_set_version(request, 0) == 1 else { throw Self.failure("X509_REQ_set_version", "cannot set the request version") }
        guard let name = X509_NAME_new() else { throw Self.failure("X509_NAME_new", "out of memory") }
        defer { X509_NAME_free(name) }
        for attribute in subject {
            let added = attribute.value.withCString { value in
                X509_NAME_add_entry_by_txt(name, attribute.name, MBSTRING_UTF8, UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), -1, -1, 0)
            }
            guard added == 1 else {
                throw Self.failure("X509_NAME_add_entry_by_txt", "the subject attribute \(attribute.name)='\(attribute.value)' is not valid (for C: two letters; lengths have limits)")
            }
        }
        guard X509_REQ_set_subject_name(request, name) == 1 else { throw Self.failure("X509_REQ_set_subject_name", "cannot set the subject") }
        guard X509_REQ_set_pubkey(request, key.pkey) == 1 else { throw Self.failure("X509_REQ_set_pubkey", "cannot put the token key's public key into the request") }

        let statements = try qcStatementsDER()
        guard let extensions = OPENSSL_sk_new_null() else { throw Self.failure("OPENSSL_sk_new_null", "out of memory") }
        defer { OPENSSL_sk_free(extensions) }
        guard let octets = ASN1_OCTET_STRING_new() else { throw Self.failure("ASN1_OCTET_STRING_new", "out of memory") }
        defer { ASN1_OCTET_STRING_free(octets) }
        guard ASN1_OCTET_STRING_set(octets, statements, Int32(statements.count)) == 1,
              let qcObject = OBJ_txt2obj(EIDASCertificate.QCStatements.extensionOID, 1) else {
            throw Self.failure("ASN1_OCTET_STRING_set", "cannot hold the QCStatements extension")
        }
        defer { ASN1_OBJECT_free(qcObject) }
        guard let qcExtension = X509_EXTENSION_create_by_OBJ(nil, qcObject, 0, octets) else {
            throw Self.failure("X509_EXTENSION_create_by_OBJ", "cannot make the QCStatements extension")
        }
        defer { X509_EXTENSION_free(qcExtension) }
        _ = OPENSSL_sk_push(extensions, UnsafeRawPointer(qcExtension))
        guard X509_REQ_add_extensions(request, extensions) == 1 else {
            throw Self.failure("X509_REQ_add_extensions", "cannot add the requested extensions")
        }

        ERR_clear_error()
        let digest = Self.digest(for: key)
        guard X509_REQ_sign(request, key.pkey, digest) > 0 else {
            throw Self.failure("X509_REQ_sign", "the token key could not sign the request; run 'keybridge doctor --key URI' to see why")
        }
        // An independent check with the public key alone: a wrong signature never leaves here.
        guard let publicKey = Self.defaultProviderPublicKey(of: request) else {
            throw Self.failure("d2i_PUBKEY_ex", "cannot read the request's public key back")
        }
        defer { EVP_PKEY_free(publicKey) }
        guard X509_REQ_verify(request, publicKey) == 1 else {
            throw Self.failure("X509_REQ_verify", "the request's signature made by the token does not verify with its public key")
        }
        guard let bio = BIO_new(BIO_s_mem()) else { throw Self.failure("BIO_new", "out of memory") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_X509_REQ(bio, request) == 1 else { throw Self.failure("PEM_write_bio_X509_REQ", "cannot write the request as PEM") }
        return String(decoding: ASN1Writer.read(bio), as: UTF8.self)
    }

    /// The request's public key, decoded again from its DER by the default provider, so the
    /// check above does not go through the token.
    private static func defaultProviderPublicKey(of request: OpaquePointer) -> OpaquePointer? {
        guard let key = X509_REQ_get0_pubkey(request) else { return nil }
        var der: UnsafeMutablePointer<UInt8>?
        let length = i2d_PUBKEY(key, &der)
        guard length > 0, let der else { return nil }
        defer { CRYPTO_free(der, nil, 0) }
        var cursor: UnsafePointer<UInt8>? = UnsafePointer(der)
        return d2i_PUBKEY_ex(nil, &cursor, Int(length), nil, "provider=default")
    }

    private static func digest(for key: ProviderKey) -> OpaquePointer? {
        switch key.algorithm {
        case "RSA": return EVP_sha256()
        case "EC": return key.bits > 384 ? EVP_sha512() : key.bits > 256 ? EVP_sha384() : EVP_sha256()
        default: return nil
        }
    }

    /// The DER of `QCStatements ::= SEQUENCE OF QCStatement` (RFC 3739), each statement
    /// `SEQUENCE { statementId OBJECT IDENTIFIER, statementInfo ANY OPTIONAL }`.
    func qcStatementsDER() throws(CertificateRequestError) -> [UInt8] {
        let compliance = try ASN1Writer.sequence([ASN1Writer.oid(EIDASCertificate.QCStatements.complianceOID)])
        let qcType = try ASN1Writer.sequence([
            ASN1Writer.oid(EIDASCertificate.QCStatements.typeOID),
            ASN1Writer.sequence([ASN1Writer.oid(kind.qcType.rawValue)]),
        ])
        var roleSequences: [[UInt8]] = []
        for role in roles {
            let oid = Self.roleOIDs.first { $0.name == role }!.oid
            roleSequences.append(try ASN1Writer.sequence([ASN1Writer.oid(oid), ASN1Writer.utf8String(role)]))
        }
        let psd2 = try ASN1Writer.sequence([
            ASN1Writer.oid(EIDASCertificate.QCStatements.psd2OID),
            ASN1Writer.sequence([ASN1Writer.sequence(roleSequences), ASN1Writer.utf8String(ncaName), ASN1Writer.utf8String(ncaID)]),
        ])
        return try ASN1Writer.sequence([compliance, qcType, psd2])
    }

    static func failure(_ function: String, _ reason: String) -> CertificateRequestError {
        CertificateRequestError(reason, function: function, queue: OpenSSLError.drainQueue())
    }
}

/// DER built with OpenSSL's own encoders: `i2d_*` for the primitive values and
/// `ASN1_put_object`/`ASN1_object_size` for SEQUENCE headers, so no length or tag is
/// computed by hand here.
enum ASN1Writer {
    static func oid(_ dotted: String) throws(CertificateRequestError) -> [UInt8] {
        guard let object = OBJ_txt2obj(dotted, 1) else { throw PSD2CertificateRequest.failure("OBJ_txt2obj", "\(dotted) is not an OID") }
        defer { ASN1_OBJECT_free(object) }
        var output: UnsafeMutablePointer<UInt8>?
        let length = i2d_ASN1_OBJECT(object, &output)
        return try take(output, length, "i2d_ASN1_OBJECT")
    }

    static func utf8String(_ text: String) throws(CertificateRequestError) -> [UInt8] {
        guard let string = ASN1_UTF8STRING_new() else { throw PSD2CertificateRequest.failure("ASN1_UTF8STRING_new", "out of memory") }
        defer { ASN1_UTF8STRING_free(string) }
        let bytes = Array(text.utf8)
        guard ASN1_STRING_set(string, bytes, Int32(bytes.count)) == 1 else {
            throw PSD2CertificateRequest.failure("ASN1_STRING_set", "cannot hold '\(text)'")
        }
        var output: UnsafeMutablePointer<UInt8>?
        let length = i2d_ASN1_UTF8STRING(string, &output)
        return try take(output, length, "i2d_ASN1_UTF8STRING")
    }

    static func sequence(_ elements: [[UInt8]]) throws(CertificateRequestError) -> [UInt8] {
        let content = elements.flatMap { $0 }
        let total = ASN1_object_size(1, Int32(content.count), V_ASN1_SEQUENCE)
        guard total > 0 else { throw PSD2CertificateRequest.failure("ASN1_object_size", "a SEQUENCE is too long") }
        var encoded = [UInt8](repeating: 0, count: Int(total))
        encoded.withUnsafeMutableBufferPointer { buffer in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            ASN1_put_object(&cursor, 1, Int32(content.count), V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL)
            let headerLength = cursor! - buffer.baseAddress!
            for (offset, byte) in content.enumerated() { buffer[headerLength + offset] = byte }
        }
        return encoded
    }

    private static func take(_ pointer: UnsafeMutablePointer<UInt8>?, _ length: Int32, _ function: String) throws(CertificateRequestError) -> [UInt8] {
        guard length > 0, let pointer else { throw PSD2CertificateRequest.failure(function, "cannot encode a value") }
        defer { CRYPTO_free(pointer, nil, 0) }
        return Array(UnsafeBufferPointer(start: pointer, count: Int(length)))
    }

    static func read(_ bio: OpaquePointer) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = BIO_read(bio, &chunk, Int32(chunk.count))
            if count <= 0 { break }
            bytes += chunk.prefix(Int(count))
        }
        return bytes
    }
}

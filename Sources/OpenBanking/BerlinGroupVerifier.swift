import Foundation
import KeyBridgeProvider

// MARK: - Signature header

/// The parameters of a draft-cavage-http-signatures-10 `Signature` header:
/// `keyId="…",algorithm="…",headers="…",signature="…"`.
public struct BerlinGroupSignatureHeader: Sendable, Hashable {
    /// The `keyId` parameter as written.
    public var keyId: String
    /// The `algorithm` parameter as written (`rsa-sha256`, …).
    public var algorithm: String
    /// The `headers` parameter split at spaces, in lower case.
    public var headers: [String]
    /// The `signature` parameter, base64-decoded.
    public var signature: [UInt8]

    /// Parses a header value. Parameters may come in any order with spaces or tabs around
    /// `=` and `,`; names are compared without case; unknown parameters are skipped. Each value
    /// must be a quoted string, which ends at the next quote (draft 10 defines no escapes).
    ///
    /// - Throws: `OpenBankingError` naming what is malformed or missing.
    public init(parsing value: String) throws(OpenBankingError) {
        let parameters = try BerlinGroupSignatureHeader.parameters(in: value)
        func required(_ name: String) throws(OpenBankingError) -> String {
            guard let found = parameters[name.lowercased()] else {
                throw OpenBankingError("the Signature header has no \(name) parameter")
            }
            guard !found.isEmpty else { throw OpenBankingError("the Signature header's \(name) parameter is empty") }
            return found
        }
        keyId = try required("keyId")
        algorithm = try required("algorithm")
        headers = try required("headers").split(whereSeparator: { $0 == " " || $0 == "\t" }).map { $0.lowercased() }
        let encoded = try required("signature")
        guard let decoded = Data(base64Encoded: encoded), !decoded.isEmpty else {
            throw OpenBankingError("the Signature header's signature parameter is not base64")
        }
        signature = Array(decoded)
    }

    private static func parameters(in value: String) throws(OpenBankingError) -> [String: String] {
        let text = Array(value.unicodeScalars)
        var index = 0
        var result: [String: String] = [:]
        func skipSpace() { while index < text.count, text[index] == " " || text[index] == "\t" { index += 1 } }
        skipSpace()
        guard index < text.count else { throw OpenBankingError("the Signature header is empty") }
        while true {
            skipSpace()
            let nameStart = index
            while index < text.count, BerlinGroupProfile.isTokenCharacter(text[index]) { index += 1 }
            let name = String(String.UnicodeScalarView(text[nameStart..<index]))
            guard !name.isEmpty else {
                throw OpenBankingError("the Signature header has no parameter name at character \(nameStart + 1)")
            }
            skipSpace()
            guard index < text.count, text[index] == "=" else {
                throw OpenBankingError("the Signature header's \(name) parameter has no '='")
            }
            index += 1
            skipSpace()
            guard index < text.count, text[index] == "\"" else {
                throw OpenBankingError("the Signature header's \(name) parameter is not a quoted string")
            }
            index += 1
            let valueStart = index
            while index < text.count, text[index] != "\"" { index += 1 }
            guard index < text.count else {
                throw OpenBankingError("the Signature header's \(name) parameter has no closing quote")
            }
            let parameterValue = String(String.UnicodeScalarView(text[valueStart..<index]))
            index += 1
            guard result.updateValue(parameterValue, forKey: name.lowercased()) == nil else {
                throw OpenBankingError("the Signature header has the \(name) parameter twice")
            }
            skipSpace()
            if index == text.count { return result }
            guard text[index] == "," else {
                throw OpenBankingError("the Signature header has no ',' after the \(name) parameter")
            }
            index += 1
        }
    }
}

// MARK: - keyId

/// A Berlin Group `keyId`: `SN=<hex serial>`, optionally followed by `,CA=<issuer DN>` or
/// `,DN=<issuer DN>`.
public struct BerlinGroupKeyID: Sendable, Hashable {
    /// The serial number in hex, as written.
    public var serialNumber: String
    /// `CA` or `DN` (as written), or nil when the keyId has no issuer.
    public var issuerLabel: String?
    /// The issuer DN as written (it may be percent-encoded), or nil.
    public var issuer: String?

    /// Parses a keyId. The labels are compared without case.
    public init(parsing keyId: String) throws(OpenBankingError) {
        guard keyId.uppercased().hasPrefix("SN=") else {
            throw OpenBankingError("the keyId \"\(keyId)\" does not start with SN=")
        }
        let rest = keyId.dropFirst(3)
        let serial = rest.prefix { $0 != "," }
        guard !serial.isEmpty, serial.allSatisfy({ $0.isASCII && $0.isHexDigit }) else {
            throw OpenBankingError("the keyId's serial number \"\(serial)\" is not hexadecimal")
        }
        serialNumber = String(serial)
        let tail = rest.dropFirst(serial.count)
        guard !tail.isEmpty else { return }
        let afterComma = tail.dropFirst()
        let label = afterComma.prefix(3).uppercased()
        guard label == "CA=" || label == "DN=" else {
            throw OpenBankingError("the keyId has \"\(afterComma)\" after the serial number, where CA= or DN= belongs")
        }
        issuerLabel = String(afterComma.prefix(2))
        issuer = String(afterComma.dropFirst(3))
    }

    /// Whether the serial number is `hex`, compared as numbers: letter case and leading zeros
    /// do not matter.
    public func serialNumberMatches(_ hex: String) -> Bool {
        BerlinGroupKeyID.normalize(serialNumber) == BerlinGroupKeyID.normalize(hex)
    }

    private static func normalize(_ hex: String) -> String {
        let digits = hex.uppercased().drop { $0 == "0" }
        return digits.isEmpty ? "0" : String(digits)
    }
}

// MARK: - Verifier

/// What a verified Berlin Group request was signed with.
public struct BerlinGroupVerification: Sendable {
    /// The parsed `Signature` header.
    public var signature: BerlinGroupSignatureHeader
    /// The parsed `keyId`.
    public var keyId: BerlinGroupKeyID
    /// Whether the keyId's issuer, percent-decoded, is the certificate's issuer DN in RFC 2253
    /// form; nil when the keyId names no issuer. Banks write DNs in ways that differ
    /// harmlessly, so this is reported, not enforced.
    public var issuerMatchesCertificate: Bool?
    /// The `Digest` hash that was checked against the body.
    public var digestAlgorithm: BerlinGroupProfile.DigestAlgorithm
    /// The certificate whose key verified the signature (DER).
    public var certificateDER: [UInt8]
    /// The signing string rebuilt from the request.
    public var signingString: String
}

/// Checks Berlin Group (NextGenPSD2) request signatures with public keys only: the `Digest`
/// against the body, the `Signature` against the certificate from `TPP-Signature-Certificate`
/// (or an expected one), and the keyId's serial number against that certificate.
public struct BerlinGroupVerifier: Sendable {
    /// The bank's profile: its extra headers and `(request-target)` must be signed, and its
    /// `algorithmLabel`, if any, is accepted.
    public let profile: BerlinGroupProfile
    /// The certificate the signer must use, when known in advance (DER).
    public let expectedCertificateDER: [UInt8]?
    /// The largest difference allowed between `Date` and the verifier's clock; nil skips the check.
    public let maximumClockSkew: TimeInterval?

    /// A verifier. With `expectedCertificateDER`, a request may leave out
    /// `TPP-Signature-Certificate`, and one that carries another certificate is refused.
    public init(profile: BerlinGroupProfile = .default, expectedCertificateDER: [UInt8]? = nil, maximumClockSkew: TimeInterval? = nil) throws(OpenBankingError) {
        try profile.validate()
        self.profile = profile
        self.expectedCertificateDER = expectedCertificateDER
        self.maximumClockSkew = maximumClockSkew
    }

    /// Verifies a received request (method, URL, headers and raw body).
    ///
    /// - Parameters:
    ///   - request: the request as received.
    ///   - now: the clock for `maximumClockSkew`.
    /// - Returns: what the request was signed with.
    /// - Throws: `OpenBankingError` naming the first check that failed, e.g.
    ///   "Digest does not match the body", "signature does not verify",
    ///   "header x-request-id is signed but missing".
    public func verify(_ request: HTTPRequestParts, now: Date = Date()) throws(OpenBankingError) -> BerlinGroupVerification {
        guard let signatureValue = try BerlinGroupSigner.canonicalValue(of: "signature", in: request) else {
            throw OpenBankingError("the request has no Signature header")
        }
        let parameters = try BerlinGroupSignatureHeader(parsing: signatureValue)

        let certificateDER = try certificate(of: request)
        let certificate: BerlinGroupCertificate
        let publicKey: PublicKeyVerifier
        do {
            certificate = try BerlinGroupCertificate(der: certificateDER)
            publicKey = try PublicKeyVerifier(certificateDER: certificateDER)
        } catch {
            throw OpenBankingError("the signing certificate cannot be used: \(error.reason)")
        }
        let scheme = try self.scheme(for: parameters.algorithm, keyFamily: publicKey.algorithm)

        let keyId = try BerlinGroupKeyID(parsing: parameters.keyId)
        guard keyId.serialNumberMatches(certificate.serialHex) else {
            throw OpenBankingError("the keyId's serial number \(keyId.serialNumber) is not the certificate's (\(certificate.serialHex))")
        }

        try checkCoverage(of: parameters.headers, in: request)
        let signingString = try BerlinGroupSigner.signingString(for: request, signedHeaders: parameters.headers)
        let digestAlgorithm = try checkDigest(of: request)
        try checkDate(of: request, now: now)

        guard publicKey.verify(parameters.signature, over: Array(signingString.utf8), scheme: scheme) else {
            throw OpenBankingError("signature does not verify: the signed headers, the algorithm or the certificate differ from what was signed")
        }
        return BerlinGroupVerification(
            signature: parameters, keyId: keyId,
            issuerMatchesCertificate: keyId.issuer.map { written in
                let decoded = written.removingPercentEncoding ?? written
                return decoded == certificate.issuerEscaped || decoded == certificate.issuerUTF8
            },
            digestAlgorithm: digestAlgorithm, certificateDER: certificateDER, signingString: signingString)
    }

    private func certificate(of request: HTTPRequestParts) throws(OpenBankingError) -> [UInt8] {
        guard let value = try BerlinGroupSigner.canonicalValue(of: "tpp-signature-certificate", in: request) else {
            guard let expectedCertificateDER else {
                throw OpenBankingError("the request has no TPP-Signature-Certificate header and no expected certificate was given")
            }
            return expectedCertificateDER
        }
        // Some senders keep the PEM armour or wrap lines; the DER inside is what counts.
        let body = value
            .replacingOccurrences(of: "-----BEGIN CERTIFICATE-----", with: "")
            .replacingOccurrences(of: "-----END CERTIFICATE-----", with: "")
            .filter { !$0.isWhitespace }
        guard let decoded = Data(base64Encoded: body), !decoded.isEmpty else {
            throw OpenBankingError("TPP-Signature-Certificate is not base64")
        }
        let der = Array(decoded)
        if let expectedCertificateDER, expectedCertificateDER != der {
            throw OpenBankingError("TPP-Signature-Certificate is not the expected certificate")
        }
        return der
    }

    private func scheme(for label: String, keyFamily: String) throws(OpenBankingError) -> SignatureScheme {
        if let accepted = profile.algorithmLabel, accepted == label {
            return try profile.signatureAlgorithm(forKeyFamily: keyFamily).scheme
        }
        let known: [String: (family: String, scheme: SignatureScheme)] = [
            "rsa-sha256": ("RSA", .rsaPKCS1(.sha256)), "rsa-sha512": ("RSA", .rsaPKCS1(.sha512)),
            "ecdsa-sha256": ("EC", .ecdsa(.sha256)), "ecdsa-sha512": ("EC", .ecdsa(.sha512)),
        ]
        guard let entry = known[label.lowercased()] else {
            throw OpenBankingError("unknown signature algorithm \"\(label)\"; expected rsa-sha256, rsa-sha512, ecdsa-sha256 or ecdsa-sha512")
        }
        // Draft 10: an algorithm that does not fit the key identified by keyId is an error.
        guard entry.family == keyFamily else {
            throw OpenBankingError("the algorithm \(label) needs an \(entry.family) key, but the certificate's key is \(keyFamily)")
        }
        return entry.scheme
    }

    private func checkCoverage(of names: [String], in request: HTTPRequestParts) throws(OpenBankingError) {
        var seen = Set<String>()
        for name in names where !seen.insert(name).inserted {
            throw OpenBankingError("the Signature header's headers parameter lists \(name) twice")
        }
        for name in ["digest", "x-request-id", "date"] where !seen.contains(name) {
            throw OpenBankingError("the signature does not cover \(name); Berlin Group signatures must cover digest, x-request-id and date")
        }
        for name in BerlinGroupSigner.signedWhenPresent where request.header(name) != nil && !seen.contains(name) {
            throw OpenBankingError("header \(name) is in the request but not signed")
        }
        for name in profile.extraHeaders.map({ $0.lowercased() }) where !seen.contains(name) {
            throw OpenBankingError("the signature does not cover \(name), which the bank's profile requires")
        }
        if profile.signsRequestTarget, !seen.contains("(request-target)") {
            throw OpenBankingError("the signature does not cover (request-target), which the bank's profile requires")
        }
    }

    private func checkDigest(of request: HTTPRequestParts) throws(OpenBankingError) -> BerlinGroupProfile.DigestAlgorithm {
        // Covered, so present: the signing string was built first.
        let value = try BerlinGroupSigner.canonicalValue(of: "digest", in: request) ?? ""
        var checked: BerlinGroupProfile.DigestAlgorithm?
        // RFC 3230 allows several comma-separated algorithm=value pairs; base64 has no commas.
        for item in value.split(separator: ",") {
            guard let equals = item.firstIndex(of: "=") else {
                throw OpenBankingError("the Digest header's entry \"\(item.trimmingCharacters(in: .whitespaces))\" has no '='")
            }
            let name = item[..<equals].trimmingCharacters(in: .whitespaces).uppercased()
            guard let algorithm = BerlinGroupProfile.DigestAlgorithm(rawValue: name) else { continue }
            let encoded = item[item.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard let claimed = Data(base64Encoded: encoded) else {
                throw OpenBankingError("the Digest header's \(name) value is not base64")
            }
            guard Array(claimed) == BerlinGroupSigner.digest(request.body, algorithm) else {
                throw OpenBankingError("Digest does not match the body: its \(name) value is not the body's \(name) digest")
            }
            checked = checked ?? algorithm
        }
        guard let checked else { throw OpenBankingError("the Digest header has no SHA-256 or SHA-512 value") }
        return checked
    }

    private func checkDate(of request: HTTPRequestParts, now: Date) throws(OpenBankingError) {
        guard let maximumClockSkew else { return }
        let value = try BerlinGroupSigner.canonicalValue(of: "date", in: request) ?? ""
        let parser = DateFormatter()
        parser.locale = Locale(identifier: "en_US_POSIX")
        parser.timeZone = TimeZone(identifier: "GMT")
        parser.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let date = parser.date(from: value) else {
            throw OpenBankingError("the Date header \"\(value)\" is not an IMF-fixdate such as \"Sun, 06 Nov 1994 08:49:37 GMT\"")
        }
        let skew = abs(date.timeIntervalSince(now))
        guard skew <= maximumClockSkew else {
            throw OpenBankingError("the Date header is \(Int(skew)) seconds away from the verifier's clock, more than the \(Int(maximumClockSkew)) allowed")
        }
    }
}

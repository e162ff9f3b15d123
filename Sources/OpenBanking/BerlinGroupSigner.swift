internal import CKeyBridgeShims
internal import COpenSSL
import Foundation
import KeyBridgeProvider

// MARK: - Profile

/// How one bank wants Berlin Group (NextGenPSD2 XS2A) request signatures written.
///
/// The framework signs requests per draft-cavage-http-signatures-10, and banks read it
/// differently, mostly in the `keyId`. Each field is one of those differences. The type is
/// `Codable` so a bank's setting can live in JSON configuration; a missing key takes the
/// default, so `{}` is the default profile:
///
/// ```json
/// {"digest": "SHA-512", "serialCase": "lower", "issuerLabel": "DN", "percentEncodesIssuer": true}
/// ```
///
/// The default writes `Digest: SHA-256=…`, signs `digest x-request-id date` (plus `psu-id`,
/// `psu-corporate-id` and `tpp-redirect-uri` when the request has them) and writes
/// `keyId="SN=<upper-case hex, no leading zeros>,CA=<issuer DN in RFC 2253 order>"`.
public struct BerlinGroupProfile: Sendable, Hashable, Codable {
    /// A hash for the `Digest` header and the signature, named as RFC 3230 and RFC 5843 write it.
    public enum DigestAlgorithm: String, Sendable, Hashable, Codable, CaseIterable {
        /// `SHA-256=` in `Digest`; `-sha256` in the algorithm name.
        case sha256 = "SHA-256"
        /// `SHA-512=` in `Digest`; `-sha512` in the algorithm name.
        case sha512 = "SHA-512"
    }

    /// The letter case of the serial number's hex digits in `keyId`.
    public enum SerialCase: String, Sendable, Hashable, Codable {
        /// `4B0A…`
        case upper
        /// `4b0a…`
        case lower
    }

    /// Which leading zeros the serial number keeps in `keyId`.
    public enum SerialDigits: String, Sendable, Hashable, Codable {
        /// No leading zeros: `A1B2C` for the serial 0x0A1B2C.
        case minimal
        /// Two digits for each byte, as `openssl x509 -serial` prints it: `0A1B2C`.
        case wholeBytes
        /// The DER INTEGER's content bytes: two digits a byte, plus the `00` byte DER puts
        /// before a serial whose top bit is set (`008F00FF` for 0x8F00FF), as .NET's
        /// `X509Certificate.SerialNumber` shows it.
        case derContent
    }

    /// What follows the serial number in `keyId`.
    public enum IssuerLabel: String, Sendable, Hashable, Codable {
        /// `SN=…,CA=<issuer DN>`, the framework's own form.
        case ca = "CA"
        /// `SN=…,DN=<issuer DN>`, which some banks ask for instead.
        case dn = "DN"
        /// `SN=…` alone.
        case omitted = "none"
    }

    /// The `Digest` header's hash. Default SHA-256.
    public var digest: DigestAlgorithm
    /// The signature's hash; `nil` (the default) uses the `Digest` hash.
    public var signatureHash: DigestAlgorithm?
    /// Default upper case.
    public var serialCase: SerialCase
    /// Default no leading zeros.
    public var serialDigits: SerialDigits
    /// Default `CA=`.
    public var issuerLabel: IssuerLabel
    /// Percent-encode the issuer DN (`CN=D-TRUST%20CA%202-1%202015,O=…`), leaving `=` and `,`
    /// as they are. Non-ASCII characters are percent-encoded UTF-8 then; without this they are
    /// RFC 2253 `\XX` escapes, so the header stays ASCII either way. Default off.
    public var percentEncodesIssuer: Bool
    /// Sign `(request-target)` (`post /v1/payments?x=y`) first. Default off.
    public var signsRequestTarget: Bool
    /// Further headers to sign, lower-case names. The request must have each; signing fails
    /// with a clear error when one is missing.
    public var extraHeaders: [String]
    /// Further headers to sign when the request has them.
    public var extraHeadersIfPresent: [String]
    /// The `algorithm` parameter to write instead of the one derived from the key
    /// (`rsa-sha256`, `ecdsa-sha512`, …), for banks that expect another label.
    public var algorithmLabel: String?

    /// A profile; every argument has the default described on its property.
    public init(digest: DigestAlgorithm = .sha256, signatureHash: DigestAlgorithm? = nil,
                serialCase: SerialCase = .upper, serialDigits: SerialDigits = .minimal,
                issuerLabel: IssuerLabel = .ca, percentEncodesIssuer: Bool = false,
                signsRequestTarget: Bool = false, extraHeaders: [String] = [],
                extraHeadersIfPresent: [String] = [], algorithmLabel: String? = nil) {
        self.digest = digest
        self.signatureHash = signatureHash
        self.serialCase = serialCase
        self.serialDigits = serialDigits
        self.issuerLabel = issuerLabel
        self.percentEncodesIssuer = percentEncodesIssuer
        self.signsRequestTarget = signsRequestTarget
        self.extraHeaders = extraHeaders
        self.extraHeadersIfPresent = extraHeadersIfPresent
        self.algorithmLabel = algorithmLabel
    }

    /// SHA-256, `SN=<upper hex, no leading zeros>,CA=<issuer DN, RFC 2253>`, no `(request-target)`.
    public static let `default` = BerlinGroupProfile()

    private enum CodingKeys: String, CodingKey {
        case digest, signatureHash, serialCase, serialDigits, issuerLabel, percentEncodesIssuer
        case signsRequestTarget, extraHeaders, extraHeadersIfPresent, algorithmLabel
    }

    /// Decodes a profile; keys that are missing take their defaults, so a bank's entry names
    /// only where it differs.
    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            digest: try values.decodeIfPresent(DigestAlgorithm.self, forKey: .digest) ?? .sha256,
            signatureHash: try values.decodeIfPresent(DigestAlgorithm.self, forKey: .signatureHash),
            serialCase: try values.decodeIfPresent(SerialCase.self, forKey: .serialCase) ?? .upper,
            serialDigits: try values.decodeIfPresent(SerialDigits.self, forKey: .serialDigits) ?? .minimal,
            issuerLabel: try values.decodeIfPresent(IssuerLabel.self, forKey: .issuerLabel) ?? .ca,
            percentEncodesIssuer: try values.decodeIfPresent(Bool.self, forKey: .percentEncodesIssuer) ?? false,
            signsRequestTarget: try values.decodeIfPresent(Bool.self, forKey: .signsRequestTarget) ?? false,
            extraHeaders: try values.decodeIfPresent([String].self, forKey: .extraHeaders) ?? [],
            extraHeadersIfPresent: try values.decodeIfPresent([String].self, forKey: .extraHeadersIfPresent) ?? [],
            algorithmLabel: try values.decodeIfPresent(String.self, forKey: .algorithmLabel))
    }

    /// The `keyId` this profile writes for a DER certificate.
    public func keyId(forCertificateDER der: [UInt8]) throws(OpenBankingError) -> String {
        try keyId(for: BerlinGroupCertificate(der: der))
    }

    /// The serial number as this profile writes it, from the certificate's serial in hex
    /// with two digits a byte (e.g. `0A1B2C`).
    func serialText(wholeBytesHex hex: String) -> String {
        var text: String
        switch serialDigits {
        case .minimal:
            text = String(hex.drop { $0 == "0" })
            if text.isEmpty { text = "0" }
        case .wholeBytes:
            text = hex
        case .derContent:
            // DER keeps an INTEGER positive by a 00 byte before a leading byte of 0x80 or more.
            text = (hex.first.flatMap { $0.hexDigitValue }.map { $0 >= 8 } ?? false) ? "00" + hex : hex
        }
        return serialCase == .upper ? text.uppercased() : text.lowercased()
    }

    func keyId(for certificate: BerlinGroupCertificate) throws(OpenBankingError) -> String {
        let serial = "SN=" + serialText(wholeBytesHex: certificate.serialHex)
        guard issuerLabel != .omitted else { return serial }
        let issuer: String
        if percentEncodesIssuer {
            issuer = BerlinGroupProfile.percentEncode(certificate.issuerUTF8)
        } else {
            // RFC 2253 escapes a quote as \" and keyId has no escape for one, so the quoted
            // parameter would end early.
            guard !certificate.issuerEscaped.contains("\"") else {
                throw OpenBankingError("the certificate's issuer DN contains a double quote, which cannot appear in the quoted keyId; set percentEncodesIssuer in the Berlin Group profile")
            }
            issuer = certificate.issuerEscaped
        }
        return serial + "," + issuerLabel.rawValue + "=" + issuer
    }

    /// Percent-encodes all but unreserved characters and the DN's own `=` and `,`, as the
    /// framework's example does (`CN=D-TRUST%20CA%202-1%202015,O=D-Trust%20GmbH,C=DE`).
    static func percentEncode(_ text: String) -> String {
        var output = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            let keep = (byte < 0x80 && (CharacterSet.alphanumerics.contains(scalar))) || "-._~=,".unicodeScalars.contains(scalar)
            if keep {
                output.unicodeScalars.append(scalar)
            } else {
                output += "%" + BerlinGroupProfile.hexByte(byte)
            }
        }
        return output
    }

    static func hexByte(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
    }

    /// The signature's hash, settled.
    var effectiveSignatureHash: DigestAlgorithm { signatureHash ?? digest }

    /// The scheme and `algorithm` label for a key family ("RSA", "EC", "ED25519").
    func signatureAlgorithm(forKeyFamily family: String) throws(OpenBankingError) -> (label: String, scheme: SignatureScheme) {
        let sha512 = effectiveSignatureHash == .sha512
        let derived: (label: String, scheme: SignatureScheme)
        switch family {
        case "RSA":
            derived = sha512 ? ("rsa-sha512", .rsaPKCS1(.sha512)) : ("rsa-sha256", .rsaPKCS1(.sha256))
        case "EC":
            derived = sha512 ? ("ecdsa-sha512", .ecdsa(.sha512)) : ("ecdsa-sha256", .ecdsa(.sha256))
        default:
            // draft-10's algorithm registry has RSA, HMAC and ECDSA names only; Ed25519 came
            // with hs2019 in draft 11, which the Berlin Group does not reference.
            throw OpenBankingError("a \(family) key cannot make Berlin Group signatures: draft-cavage-http-signatures-10 defines no algorithm name for it; use an RSA or EC QSealC key")
        }
        return (algorithmLabel ?? derived.label, derived.scheme)
    }

    /// Rejects settings that would write a broken header, before any request is signed.
    func validate() throws(OpenBankingError) {
        for name in extraHeaders + extraHeadersIfPresent {
            let lower = name.lowercased()
            if lower == "(request-target)" {
                throw OpenBankingError("\"(request-target)\" is not a header: set signsRequestTarget in the Berlin Group profile instead of listing it")
            }
            guard !lower.isEmpty, lower.unicodeScalars.allSatisfy(BerlinGroupProfile.isTokenCharacter) else {
                throw OpenBankingError("the Berlin Group profile lists \"\(name)\" as a header to sign, which is not a valid header name")
            }
            guard lower != "signature" else {
                throw OpenBankingError("the Signature header cannot sign itself: remove it from the Berlin Group profile's headers")
            }
        }
        if let label = algorithmLabel {
            guard !label.isEmpty, !label.unicodeScalars.contains(where: { $0 == "\"" || $0.value < 0x20 || $0.value == 0x7F }) else {
                throw OpenBankingError("the Berlin Group profile's algorithmLabel must be non-empty, without quotes or control characters")
            }
        }
    }

    /// RFC 7230 `tchar`: what a header name may be made of.
    static func isTokenCharacter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "!#$%&'*+-.^_`|~".unicodeScalars.contains(scalar))
    }
}

// MARK: - Certificate fields

/// What the Berlin Group parts read from a QSealC, parsed once with OpenSSL. The X509 object
/// lives only inside `init`, so nothing C-owned outlives it.
struct BerlinGroupCertificate: Sendable {
    /// The serial number in upper-case hex, two digits a byte (`0A1B2C`).
    let serialHex: String
    /// The issuer DN in RFC 2253 order, with non-ASCII characters as `\XX` escapes.
    let issuerEscaped: String
    /// The issuer DN in RFC 2253 order, with non-ASCII characters kept as UTF-8.
    let issuerUTF8: String

    init(der: [UInt8]) throws(OpenBankingError) {
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let certificate = parsed else {
            ERR_clear_error()
            throw OpenBankingError("the certificate is not valid DER")
        }
        defer { X509_free(certificate) }
        serialHex = try BerlinGroupCertificate.serialHex(of: certificate)
        let rfc2253 = CKeyBridgeShims_XN_FLAG_RFC2253
        issuerEscaped = try BerlinGroupCertificate.issuer(of: certificate, flags: rfc2253)
        // Without ESC_MSB, OpenSSL writes the UTF-8 it converted to, which percent-encoding then
        // turns into %XX bytes a bank can decode; \XX escapes would come out as %5CXX.
        issuerUTF8 = try BerlinGroupCertificate.issuer(of: certificate, flags: rfc2253 & ~UInt(ASN1_STRFLGS_ESC_MSB))
    }

    private static func serialHex(of certificate: OpaquePointer) throws(OpenBankingError) -> String {
        guard let number = ASN1_INTEGER_to_BN(X509_get_serialNumber(certificate), nil) else {
            ERR_clear_error()
            throw OpenBankingError("the certificate's serial number cannot be read")
        }
        defer { BN_free(number) }
        guard BN_is_negative(number) == 0 else {
            throw OpenBankingError("the certificate's serial number is negative, which RFC 5280 forbids; no keyId can name it")
        }
        guard let hex = BN_bn2hex(number) else {
            ERR_clear_error()
            throw OpenBankingError("the certificate's serial number cannot be written as hex")
        }
        defer { CRYPTO_free(hex, nil, 0) }
        let text = String(cString: hex)
        // BN_bn2hex writes whole bytes except for zero, which it writes as "0".
        return text.count % 2 == 1 ? "0" + text : text
    }

    private static func issuer(of certificate: OpaquePointer, flags: UInt) throws(OpenBankingError) -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw OpenBankingError("out of memory reading the issuer DN") }
        defer { BIO_free(bio) }
        guard X509_NAME_print_ex(bio, X509_get_issuer_name(certificate), 0, flags) >= 0 else {
            ERR_clear_error()
            throw OpenBankingError("the certificate's issuer DN cannot be printed")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        while true {
            let count = BIO_read(bio, &chunk, Int32(chunk.count))
            if count <= 0 { break }
            bytes += chunk.prefix(Int(count))
        }
        ERR_clear_error()
        return String(decoding: bytes, as: UTF8.self)
    }
}

// MARK: - Signer

/// Signs requests the Berlin Group (NextGenPSD2 XS2A) way, per draft-cavage-http-signatures-10,
/// with a QSealC key that stays on its token.
///
/// ```swift
/// let signer = try BerlinGroupSigner(key: ProviderKey(uri: uri), certificateDER: qsealc)
/// for header in try signer.headers(for: request) { /* add to the request */ }
/// ```
public struct BerlinGroupSigner: Sendable {
    /// The bank's profile this signer writes.
    public let profile: BerlinGroupProfile
    /// The `keyId` parameter, fixed by the certificate and profile.
    public let keyId: String
    /// The `algorithm` parameter (`rsa-sha256`, `ecdsa-sha256`, … or the profile's label).
    public let algorithmLabel: String
    /// The value of `TPP-Signature-Certificate`: the certificate's DER in base64 on one line.
    public let certificateBase64: String

    private let key: any RequestSigningKey
    private let scheme: SignatureScheme
    // The certificate's public key checks every signature before it leaves, so a QSealC that is
    // not the key's (often the QWAC by mistake) fails here, not at the bank.
    private let certificateKey: PublicKeyVerifier

    /// A signer for `key` with the certificate (DER) whose public key is the key's.
    ///
    /// Refuses Ed25519 keys (draft 10 names no algorithm for them), a certificate whose key
    /// family differs from the key's, and profiles that would write a broken header.
    public init(key: any RequestSigningKey, certificateDER: [UInt8], profile: BerlinGroupProfile = .default) throws(OpenBankingError) {
        try profile.validate()
        let certificate = try BerlinGroupCertificate(der: certificateDER)
        let certificateKey = try PublicKeyVerifier(certificateDER: certificateDER)
        guard certificateKey.algorithm == key.algorithm else {
            throw OpenBankingError("the certificate holds an \(certificateKey.algorithm) public key but the signing key is \(key.algorithm): pass the QSealC certificate that belongs to the key")
        }
        let algorithm = try profile.signatureAlgorithm(forKeyFamily: key.algorithm)
        self.profile = profile
        self.key = key
        self.certificateKey = certificateKey
        keyId = try profile.keyId(for: certificate)
        algorithmLabel = algorithm.label
        scheme = algorithm.scheme
        certificateBase64 = Data(certificateDER).base64EncodedString()
    }

    /// The headers to add to `request` so that it carries a Berlin Group signature, in this
    /// order: `Digest`, `X-Request-ID` and `Date` (each unless the request has it already),
    /// `TPP-Signature-Certificate` (unless already there) and `Signature`.
    ///
    /// The signature covers `(request-target)` when the profile says so, then `digest`,
    /// `x-request-id`, `date`, then `psu-id`, `psu-corporate-id` and `tpp-redirect-uri` when
    /// present, then the profile's extra headers.
    ///
    /// - Parameters:
    ///   - request: the request to sign; it is not changed.
    ///   - now: the time for a `Date` header the request lacks.
    /// - Throws: `OpenBankingError` when a header to sign is missing or holds CR or LF, when the
    ///   request already has a `Signature` or a `Digest` that is not the body's, or when the
    ///   token cannot sign.
    public func headers(for request: HTTPRequestParts, now: Date = Date()) throws(OpenBankingError) -> [(name: String, value: String)] {
        guard request.header("Signature") == nil else {
            throw OpenBankingError("the request already has a Signature header; sign each request once")
        }
        var added: [(name: String, value: String)] = []
        // The request as it will be sent: the signing string reads values from here.
        var outgoing = request
        func add(_ name: String, _ value: String) {
            added.append((name, value))
            outgoing.headers.append((name, value))
        }

        let digest = BerlinGroupSigner.digestHeaderValue(for: request.body, algorithm: profile.digest)
        if let existing = try BerlinGroupSigner.canonicalValue(of: "digest", in: request) {
            guard existing == digest else {
                throw OpenBankingError("the request already has a Digest header that is not the body's \(profile.digest.rawValue) digest; remove it and let the signer write it")
            }
        } else {
            add("Digest", digest)
        }
        if let requestID = try BerlinGroupSigner.canonicalValue(of: "x-request-id", in: request) {
            guard !requestID.isEmpty else { throw OpenBankingError("the request's X-Request-ID header is empty; give it a UUID or leave it out") }
        } else {
            add("X-Request-ID", UUID().uuidString.lowercased())
        }
        if try BerlinGroupSigner.canonicalValue(of: "date", in: request) == nil {
            add("Date", BerlinGroupSigner.httpDate(now))
        }
        if let existing = try BerlinGroupSigner.canonicalValue(of: "tpp-signature-certificate", in: request) {
            guard existing == certificateBase64 else {
                throw OpenBankingError("the request already has a TPP-Signature-Certificate header that is not this signer's certificate")
            }
        } else {
            add("TPP-Signature-Certificate", certificateBase64)
        }

        let names = try signedHeaderNames(for: outgoing)
        let message = Array(try BerlinGroupSigner.signingString(for: outgoing, signedHeaders: names).utf8)
        let signature: [UInt8]
        do {
            signature = try key.sign(message, scheme: scheme)
        } catch {
            throw OpenBankingError("the key could not sign the request: \(error)")
        }
        guard certificateKey.verify(signature, over: message, scheme: scheme) else {
            throw OpenBankingError("the key's signature does not verify with the certificate's public key: the certificate is not the key's; pass the QSealC that belongs to the key")
        }
        add("Signature", "keyId=\"\(keyId)\",algorithm=\"\(algorithmLabel)\",headers=\"\(names.joined(separator: " "))\",signature=\"\(Data(signature).base64EncodedString())\"")
        return added
    }

    /// The lower-case names the signature covers for a request that already has every header
    /// the signer adds.
    func signedHeaderNames(for request: HTTPRequestParts) throws(OpenBankingError) -> [String] {
        var names = profile.signsRequestTarget ? ["(request-target)"] : []
        names += ["digest", "x-request-id", "date"]
        // The framework signs these if and only if the request carries them.
        names += BerlinGroupSigner.signedWhenPresent.filter { request.header($0) != nil }
        for name in profile.extraHeaders.map({ $0.lowercased() }) {
            guard request.header(name) != nil else {
                throw OpenBankingError("the Berlin Group profile signs header \(name), but the request has none; add it or remove it from extraHeaders")
            }
            names.append(name)
        }
        names += profile.extraHeadersIfPresent.map { $0.lowercased() }.filter { request.header($0) != nil }
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }

    /// Headers the framework signs whenever the request has them.
    static let signedWhenPresent = ["psu-id", "psu-corporate-id", "tpp-redirect-uri"]

    // MARK: Building blocks, also used by the verifier and the known-answer tests

    /// The `Digest` header value for a body: `SHA-256=<base64>` (the empty body included).
    public static func digestHeaderValue(for body: Data, algorithm: BerlinGroupProfile.DigestAlgorithm = .sha256) -> String {
        algorithm.rawValue + "=" + Data(digest(body, algorithm)).base64EncodedString()
    }

    static func digest(_ body: Data, _ algorithm: BerlinGroupProfile.DigestAlgorithm) -> [UInt8] {
        switch algorithm {
        case .sha256: return MessageDigest.sha256(body)
        case .sha512: return MessageDigest.sha512(body)
        }
    }

    /// An RFC 7231 IMF-fixdate in GMT, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    public static func httpDate(_ date: Date) -> String {
        // Fixed English names and gmtime_r rather than a DateFormatter, so neither the locale
        // nor the time zone of the process can change the header.
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }

    /// The draft-10 signing string: one `name: value` line per signed header, in the order
    /// given, names in lower case, joined by `\n` with no trailing newline.
    ///
    /// `(request-target)` is the lower-case method, a space and the path with its query. A
    /// header that occurs more than once contributes its values joined by `, `; values lose
    /// their outer spaces and tabs.
    ///
    /// - Throws: `OpenBankingError` naming a header that is signed but missing, or whose value
    ///   holds CR or LF.
    public static func signingString(for request: HTTPRequestParts, signedHeaders: [String]) throws(OpenBankingError) -> String {
        var lines: [String] = []
        for name in signedHeaders.map({ $0.lowercased() }) {
            if name == "(request-target)" {
                lines.append("(request-target): \(request.method.lowercased()) \(request.target)")
                continue
            }
            guard let value = try canonicalValue(of: name, in: request) else {
                throw OpenBankingError("header \(name) is signed but missing")
            }
            lines.append("\(name): \(value)")
        }
        return lines.joined(separator: "\n")
    }

    /// A header's values trimmed and joined by `, `, or nil when the request lacks it.
    static func canonicalValue(of name: String, in request: HTTPRequestParts) throws(OpenBankingError) -> String? {
        let values = request.headers.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.map(\.value)
        guard !values.isEmpty else { return nil }
        // A line break would let one header's value pass for another line of the signing string.
        for value in values where value.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) {
            throw OpenBankingError("header \(name.lowercased()) contains a line break (CR or LF) or NUL, which cannot be signed or sent; remove it")
        }
        return values.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " \t")) }.joined(separator: ", ")
    }
}

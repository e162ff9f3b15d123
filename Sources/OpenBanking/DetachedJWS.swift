import Foundation
import KeyBridgeProvider

// UK Open Banking request signing: a JWS (RFC 7515) over the HTTP body, sent detached
// (RFC 7515 appendix F) in the `x-jws-signature` header as `<header>..<signature>`.

/// A JWS signature algorithm that detached request signatures may use.
///
/// Only algorithms KeyBridge can sign and verify exist as values, so `none` (or any name
/// not listed here) can never be chosen or accepted.
public struct JWSAlgorithm: Hashable, Sendable, CustomStringConvertible {
    /// The `alg` value, e.g. "PS256".
    public let name: String
    /// The signature the token makes for it.
    let scheme: SignatureScheme
    /// The key family it needs, as in `RequestSigningKey.algorithm`.
    let keyAlgorithm: String

    private init(name: String, scheme: SignatureScheme, keyAlgorithm: String) {
        self.name = name
        self.scheme = scheme
        self.keyAlgorithm = keyAlgorithm
    }

    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt: what UK Open Banking requires.
    public static let ps256 = JWSAlgorithm(name: "PS256", scheme: .rsaPSS(.sha256), keyAlgorithm: "RSA")
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    public static let rs256 = JWSAlgorithm(name: "RS256", scheme: .rsaPKCS1(.sha256), keyAlgorithm: "RSA")
    /// ECDSA on P-256 with SHA-256; the signature is r||s, 64 bytes.
    public static let es256 = JWSAlgorithm(name: "ES256", scheme: .ecdsa(.sha256), keyAlgorithm: "EC")

    /// Every supported algorithm.
    public static let all: [JWSAlgorithm] = [.ps256, .es256, .rs256]

    /// The algorithm with this `alg` name; nil for names KeyBridge does not support (including "none").
    public init?(name: String) {
        guard let known = JWSAlgorithm.all.first(where: { $0.name == name }) else { return nil }
        self = known
    }

    public var description: String { name }

    public static func == (lhs: JWSAlgorithm, rhs: JWSAlgorithm) -> Bool { lhs.name == rhs.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }
}

/// How the body enters the JWS signing input.
public enum DetachedJWSPayloadEncoding: Sendable, Hashable {
    /// BASE64URL(header) '.' BASE64URL(body): plain RFC 7515, as UK Open Banking v3.1.4 and later use.
    case base64URL
    /// BASE64URL(header) '.' body, with `"b64":false` and `"b64"` in `crit` (RFC 7797), as
    /// UK Open Banking up to v3.1.3 used.
    case unencoded
}

/// A value of an extra protected-header member.
public enum JWSHeaderValue: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral {
    /// A JSON string.
    case string(String)
    /// A JSON integer.
    case integer(Int)
    /// A finite number; written with Swift's shortest round-trip form.
    case number(Double)
    /// `true` or `false`.
    case bool(Bool)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// The UK Open Banking protected-header claim names.
public enum OpenBankingJWSClaim {
    /// Signing time, a JSON number of seconds since 1970.
    public static let issuedAt = "http://openbanking.org.uk/iat"
    /// The signer, e.g. the organisation id / software statement id, or the eIDAS subject.
    public static let issuer = "http://openbanking.org.uk/iss"
    /// The trust anchor that can vouch for `kid`, e.g. "openbanking.org.uk".
    public static let trustAnchor = "http://openbanking.org.uk/tan"
    static let all = [issuedAt, issuer, trustAnchor]
}

/// The configurable part of a detached JWS protected header. `alg` comes from the signer,
/// and `b64` and `crit` are derived (see `DetachedJWSSigner`).
public struct DetachedJWSHeader: Sendable {
    /// When the `http://openbanking.org.uk/iat` claim says the JWS was made.
    public enum IssuedAt: Sendable, Hashable {
        /// The time of each signature, so every request carries a fresh value.
        case signingTime
        /// A fixed time (written as whole seconds).
        case fixed(Date)
    }

    /// `kid`: the key's id as the bank's directory knows it (required, not empty).
    public var keyID: String
    /// `typ`, e.g. "JOSE".
    public var type: String?
    /// `cty`, e.g. "application/json".
    public var contentType: String?
    /// `http://openbanking.org.uk/iat`.
    public var issuedAt: IssuedAt?
    /// `http://openbanking.org.uk/iss`.
    public var issuer: String?
    /// `http://openbanking.org.uk/tan`.
    public var trustAnchor: String?
    /// Further members, e.g. a bank's own claims. Names the signer sets itself are refused.
    public var extraClaims: [String: JWSHeaderValue]
    /// Names of `extraClaims` to list in `crit` as well, for claims the bank must understand.
    public var extraCritical: [String]

    /// A header with the given members; Open Banking claims are left out unless set.
    public init(keyID: String, type: String? = nil, contentType: String? = nil, issuedAt: IssuedAt? = nil,
                issuer: String? = nil, trustAnchor: String? = nil,
                extraClaims: [String: JWSHeaderValue] = [:], extraCritical: [String] = []) {
        self.keyID = keyID
        self.type = type
        self.contentType = contentType
        self.issuedAt = issuedAt
        self.issuer = issuer
        self.trustAnchor = trustAnchor
        self.extraClaims = extraClaims
        self.extraCritical = extraCritical
    }

    /// The header UK Open Banking asks for: `typ` JOSE, `cty` application/json, and the
    /// `iat` (time of each signature), `iss` and `tan` claims.
    public static func openBanking(keyID: String, issuer: String, trustAnchor: String = "openbanking.org.uk") -> DetachedJWSHeader {
        DetachedJWSHeader(keyID: keyID, type: "JOSE", contentType: "application/json", issuedAt: .signingTime,
                          issuer: issuer, trustAnchor: trustAnchor)
    }
}

/// Signs HTTP bodies into UK-style detached JWS values for the `x-jws-signature` header,
/// with a key on the token.
///
/// The protected header is JSON with members in a fixed order (sorted by UTF-16 code units,
/// as RFC 8785 does), no white space, and `/` not escaped, so the same settings always give
/// the same header bytes, and claim values such as `http://openbanking.org.uk/iss` read the
/// same in the header as in the bank's directory. `crit` lists `b64` (unencoded form only),
/// then each Open Banking claim present, then `extraCritical`; it is left out when empty,
/// as RFC 7515 forbids an empty list.
public struct DetachedJWSSigner: Sendable {
    /// The HTTP header name, `x-jws-signature`.
    public static let headerName = "x-jws-signature"

    /// The token key that signs.
    public let key: any RequestSigningKey
    /// The `alg` written and used.
    public let algorithm: JWSAlgorithm
    /// The configurable header members.
    public let protectedHeader: DetachedJWSHeader
    /// Which of the two signing inputs is used.
    public let payloadEncoding: DetachedJWSPayloadEncoding

    /// Checks that the key fits the algorithm and that the header can be written.
    public init(key: any RequestSigningKey, algorithm: JWSAlgorithm, protectedHeader: DetachedJWSHeader,
                payloadEncoding: DetachedJWSPayloadEncoding = .base64URL) throws(OpenBankingError) {
        guard key.algorithm == algorithm.keyAlgorithm else {
            throw OpenBankingError("\(algorithm) needs an \(algorithm.keyAlgorithm) key, but the key is \(key.algorithm); "
                + "use \(key.algorithm == "EC" ? "ES256" : key.algorithm == "RSA" ? "PS256" : "an RSA or EC P-256 key") instead")
        }
        // Only a provider key knows its size; others are caught at signing (an ES256 r||s that
        // does not fit) or by the bank.
        if let providerKey = key as? ProviderKey {
            if algorithm.keyAlgorithm == "RSA", providerKey.bits < 2048 {
                throw OpenBankingError("\(algorithm) needs an RSA key of at least 2048 bits (RFC 7518), but the key has \(providerKey.bits)")
            }
            if algorithm == .es256, providerKey.bits != 256 {
                throw OpenBankingError("ES256 needs an EC P-256 key, but the key has \(providerKey.bits) bits")
            }
        }
        self.key = key
        self.algorithm = algorithm
        self.protectedHeader = protectedHeader
        self.payloadEncoding = payloadEncoding
        // Find header mistakes now rather than on the first request.
        _ = try headerJSON(issuedAt: Date())
    }

    /// The `x-jws-signature` header for a request with this body.
    public func header(for body: Data) throws(OpenBankingError) -> (name: String, value: String) {
        let value = try signature(for: body)
        return (DetachedJWSSigner.headerName, value)
    }

    /// The detached JWS for this body: `<BASE64URL(header)>..<BASE64URL(signature)>`.
    public func signature(for body: Data) throws(OpenBankingError) -> String {
        let encodedHeader = DetachedJWS.base64URLEncoded(Array(try headerJSON(issuedAt: Date()).utf8))
        let input = DetachedJWS.signingInput(encodedHeader: encodedHeader, body: body, encoding: payloadEncoding)
        let signed: [UInt8]
        do {
            signed = try key.sign(input, scheme: algorithm.scheme)
        } catch {
            throw OpenBankingError("the token could not make the \(algorithm) signature: \(error)")
        }
        var signature = signed
        if algorithm == .es256 {
            // The token (through OpenSSL) gives DER; JWS wants fixed-width r||s (RFC 7518 §3.4).
            do {
                signature = try ECDSASignatureEncoding.rawFromDER(signed, width: 32)
            } catch {
                throw OpenBankingError("the ES256 signature is not a P-256 one (\(error)); ES256 needs an EC P-256 key")
            }
        }
        return encodedHeader + ".." + DetachedJWS.base64URLEncoded(signature)
    }

    /// The protected header as JSON text, with `iat` taken from `issuedAt` when the header asks for the signing time.
    func headerJSON(issuedAt now: Date) throws(OpenBankingError) -> String {
        let header = protectedHeader
        guard !header.keyID.isEmpty else { throw OpenBankingError("the JWS header needs a kid: set keyID to the key's id in the bank's directory") }
        var members: [String: JWSJSONValue] = ["alg": .string(algorithm.name), "kid": .string(header.keyID)]
        if let type = header.type { members["typ"] = .string(type) }
        if let contentType = header.contentType { members["cty"] = .string(contentType) }
        var critical: [String] = []
        if payloadEncoding == .unencoded {
            members["b64"] = .bool(false)
            critical.append("b64")
        }
        switch header.issuedAt {
        case .signingTime?: members[OpenBankingJWSClaim.issuedAt] = .integer(Int64(now.timeIntervalSince1970.rounded(.down)))
        case let .fixed(date)?: members[OpenBankingJWSClaim.issuedAt] = .integer(Int64(date.timeIntervalSince1970.rounded(.down)))
        case nil: break
        }
        if let issuer = header.issuer { members[OpenBankingJWSClaim.issuer] = .string(issuer) }
        if let trustAnchor = header.trustAnchor { members[OpenBankingJWSClaim.trustAnchor] = .string(trustAnchor) }
        critical += OpenBankingJWSClaim.all.filter { members[$0] != nil }
        for (name, value) in header.extraClaims {
            guard members[name] == nil, !DetachedJWS.signerOwnedNames.contains(name) else {
                throw OpenBankingError("the extra claim \"\(name)\" is one the signer sets itself; use the DetachedJWSHeader property for it")
            }
            if case let .number(number) = value, !number.isFinite {
                throw OpenBankingError("the extra claim \"\(name)\" is \(number), which JSON cannot hold")
            }
            members[name] = JWSJSONValue(value)
        }
        for name in header.extraCritical {
            guard header.extraClaims[name] != nil else {
                throw OpenBankingError("extraCritical names \"\(name)\", which is not among extraClaims; crit may only list members the header has")
            }
            guard !critical.contains(name) else { throw OpenBankingError("extraCritical lists \"\(name)\" twice") }
            critical.append(name)
        }
        if !critical.isEmpty { members["crit"] = .array(critical.map(JWSJSONValue.string)) }
        return JWSJSONValue.object(members).text
    }
}

/// What a verified detached JWS said in its protected header.
public struct VerifiedDetachedJWS: Sendable {
    /// `alg`.
    public let algorithm: JWSAlgorithm
    /// The form, from `b64`.
    public let payloadEncoding: DetachedJWSPayloadEncoding
    /// `kid`.
    public let keyID: String?
    /// `typ`.
    public let type: String?
    /// `cty`.
    public let contentType: String?
    /// `http://openbanking.org.uk/iat`.
    public let issuedAt: Date?
    /// `http://openbanking.org.uk/iss`.
    public let issuer: String?
    /// `http://openbanking.org.uk/tan`.
    public let trustAnchor: String?
    /// `crit`, as sent.
    public let critical: [String]
    /// The other members whose values are strings, numbers or booleans (arrays, objects and
    /// null are left out).
    public let extraClaims: [String: JWSHeaderValue]
    /// The protected header's JSON text, as decoded from the value.
    public let headerJSON: String
}

/// Verifies UK-style detached JWS values (from `x-jws-signature`) against the request body
/// with a public key or certificate. Accepts both payload forms, chosen by the header's
/// `b64` member.
///
/// Refused: anything but `<header>..<signature>`, base64url with padding or other letters,
/// an `alg` outside `allowedAlgorithms` (never `none`), an `alg` for another key type,
/// a `crit` member it does not understand or that the header lacks, and `b64` outside `crit`.
///
/// `JSONDecoder` does not report duplicate member names, so a header that repeats one is
/// read with whichever value the decoder keeps; the signature still covers the exact bytes.
public struct DetachedJWSVerifier: Sendable {
    /// The signer's public key.
    public let publicKey: PublicKeyVerifier
    /// The algorithms accepted. UK Open Banking asks for `[.ps256]` only.
    public var allowedAlgorithms: Set<JWSAlgorithm>
    /// When set, `kid` must be present and equal to it.
    public var expectedKeyID: String?
    /// When set, `http://openbanking.org.uk/iat` must be present and no later than the
    /// verification time plus this many seconds.
    public var maximumIssuedAtSkew: TimeInterval?
    /// `crit` names besides `b64` and the Open Banking claims that the caller checks itself
    /// (from `VerifiedDetachedJWS.extraClaims`).
    public var understoodCriticalClaims: Set<String>

    /// From a public key already loaded.
    public init(publicKey: PublicKeyVerifier, allowedAlgorithms: Set<JWSAlgorithm> = Set(JWSAlgorithm.all),
                expectedKeyID: String? = nil, maximumIssuedAtSkew: TimeInterval? = nil,
                understoodCriticalClaims: Set<String> = []) {
        self.publicKey = publicKey
        self.allowedAlgorithms = allowedAlgorithms
        self.expectedKeyID = expectedKeyID
        self.maximumIssuedAtSkew = maximumIssuedAtSkew
        self.understoodCriticalClaims = understoodCriticalClaims
    }

    /// From a PEM certificate or PEM public key.
    public init(pem: String, allowedAlgorithms: Set<JWSAlgorithm> = Set(JWSAlgorithm.all),
                expectedKeyID: String? = nil, maximumIssuedAtSkew: TimeInterval? = nil,
                understoodCriticalClaims: Set<String> = []) throws(OpenBankingError) {
        self.init(publicKey: try PublicKeyVerifier(pem: pem), allowedAlgorithms: allowedAlgorithms, expectedKeyID: expectedKeyID,
                  maximumIssuedAtSkew: maximumIssuedAtSkew, understoodCriticalClaims: understoodCriticalClaims)
    }

    /// From a DER certificate or a DER SubjectPublicKeyInfo.
    public init(der: [UInt8], allowedAlgorithms: Set<JWSAlgorithm> = Set(JWSAlgorithm.all),
                expectedKeyID: String? = nil, maximumIssuedAtSkew: TimeInterval? = nil,
                understoodCriticalClaims: Set<String> = []) throws(OpenBankingError) {
        let publicKey: PublicKeyVerifier
        if let fromCertificate = try? PublicKeyVerifier(certificateDER: der) {
            publicKey = fromCertificate
        } else {
            // PublicKeyVerifier reads public keys only as PEM, which is the DER in base64 lines.
            let body = Data(der).base64EncodedString()
            let lines = stride(from: 0, to: body.count, by: 64).map { offset in
                let start = body.index(body.startIndex, offsetBy: offset)
                return String(body[start..<(body.index(start, offsetBy: 64, limitedBy: body.endIndex) ?? body.endIndex)])
            }
            let pem = "-----BEGIN PUBLIC KEY-----\n" + lines.joined(separator: "\n") + "\n-----END PUBLIC KEY-----\n"
            guard let fromKey = try? PublicKeyVerifier(pem: pem) else {
                throw OpenBankingError("the DER bytes are neither a certificate nor a SubjectPublicKeyInfo public key")
            }
            publicKey = fromKey
        }
        self.init(publicKey: publicKey, allowedAlgorithms: allowedAlgorithms, expectedKeyID: expectedKeyID,
                  maximumIssuedAtSkew: maximumIssuedAtSkew, understoodCriticalClaims: understoodCriticalClaims)
    }

    /// Verifies an `x-jws-signature` value over `body`; `now` is the time `iat` is checked against.
    @discardableResult
    public func verify(_ headerValue: String, body: Data, now: Date = Date()) throws(OpenBankingError) -> VerifiedDetachedJWS {
        // HTTP strips optional white space around field values; tolerate a caller who did not.
        let value = headerValue.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw OpenBankingError("a detached JWS has exactly two dots (<header>..<signature>), but this one has \(parts.count - 1)")
        }
        guard parts[1].isEmpty else {
            throw OpenBankingError("the JWS carries a payload; a detached JWS has an empty middle part, and the body is the payload")
        }
        guard !parts[0].isEmpty else { throw OpenBankingError("the JWS has no protected header before the dots") }
        let encodedHeader = String(parts[0])
        guard let headerBytes = DetachedJWS.base64URLDecoded(encodedHeader) else {
            throw OpenBankingError("the JWS protected header is not base64url (RFC 7515: A-Z a-z 0-9 - _, no padding)")
        }
        let headerJSON = String(decoding: headerBytes, as: UTF8.self)
        guard String(validating: headerBytes, as: UTF8.self) != nil,
              let parsed = try? JSONDecoder().decode(JWSJSONValue.self, from: Data(headerBytes)),
              case let .object(header) = parsed else {
            throw OpenBankingError("the JWS protected header is not a JSON object in UTF-8")
        }

        // alg first: nothing else matters if the algorithm is not acceptable.
        guard case let .string(algorithmName)? = header["alg"] else {
            throw OpenBankingError("the JWS protected header has no alg string")
        }
        guard algorithmName != "none" else { throw OpenBankingError("the JWS is unsigned (alg \"none\"), which is never accepted") }
        guard let algorithm = JWSAlgorithm(name: algorithmName), allowedAlgorithms.contains(algorithm) else {
            let allowed = JWSAlgorithm.all.filter(allowedAlgorithms.contains).map(\.name).joined(separator: ", ")
            throw OpenBankingError("the JWS alg \"\(algorithmName)\" is not accepted here (allowed: \(allowed))")
        }
        guard publicKey.algorithm == algorithm.keyAlgorithm else {
            throw OpenBankingError("the JWS alg \(algorithm) needs an \(algorithm.keyAlgorithm) key, but the verifying key is \(publicKey.algorithm)")
        }
        // After alg, so that an unsigned "none" JWS (empty signature) is named as such.
        guard !parts[2].isEmpty else { throw OpenBankingError("the JWS has no signature after the dots") }
        guard let signatureBytes = DetachedJWS.base64URLDecoded(String(parts[2])) else {
            throw OpenBankingError("the JWS signature is not base64url (RFC 7515: A-Z a-z 0-9 - _, no padding)")
        }

        func string(_ name: String) throws(OpenBankingError) -> String? {
            switch header[name] {
            case nil: return nil
            case let .string(text)?: return text
            default: throw OpenBankingError("the JWS header member \"\(name)\" must be a string")
            }
        }
        let keyID = try string("kid")
        let type = try string("typ")
        let contentType = try string("cty")
        let issuer = try string(OpenBankingJWSClaim.issuer)
        let trustAnchor = try string(OpenBankingJWSClaim.trustAnchor)
        let issuedAt: Date?
        switch header[OpenBankingJWSClaim.issuedAt] {
        case nil: issuedAt = nil
        case let .integer(seconds)?: issuedAt = Date(timeIntervalSince1970: TimeInterval(seconds))
        case let .number(seconds)?: issuedAt = Date(timeIntervalSince1970: seconds)
        default: throw OpenBankingError("the JWS header claim \(OpenBankingJWSClaim.issuedAt) must be a number (seconds since 1970)")
        }

        let critical = try criticalNames(in: header)
        let payloadEncoding: DetachedJWSPayloadEncoding
        switch header["b64"] {
        case nil: payloadEncoding = .base64URL
        case let .bool(encoded)?:
            // RFC 7797 §6: b64 only means something to a recipient that is told it must understand it.
            guard critical.contains("b64") else {
                throw OpenBankingError("the JWS header has b64 but does not list it in crit, as RFC 7797 requires")
            }
            payloadEncoding = encoded ? .base64URL : .unencoded
        default: throw OpenBankingError("the JWS header member b64 must be true or false")
        }

        if let expectedKeyID, keyID != expectedKeyID {
            throw OpenBankingError("the JWS kid is \(keyID.map { "\"\($0)\"" } ?? "missing"), but \"\(expectedKeyID)\" was expected")
        }

        var signature = signatureBytes
        if algorithm == .es256 {
            guard signature.count == 64 else {
                throw OpenBankingError("an ES256 signature is 64 bytes (r||s), but this one has \(signature.count)")
            }
            signature = try ECDSASignatureEncoding.derFromRaw(signature)
        }
        let input = DetachedJWS.signingInput(encodedHeader: encodedHeader, body: body, encoding: payloadEncoding)
        guard publicKey.verify(signature, over: input, scheme: algorithm.scheme) else {
            throw OpenBankingError("the \(algorithm) signature does not verify: the body or header was changed, or another key signed it")
        }

        if let maximumIssuedAtSkew {
            guard let issuedAt else { throw OpenBankingError("the JWS has no \(OpenBankingJWSClaim.issuedAt) claim, which this verifier requires") }
            guard issuedAt.timeIntervalSince(now) <= maximumIssuedAtSkew else {
                throw OpenBankingError("the JWS \(OpenBankingJWSClaim.issuedAt) is \(Int(issuedAt.timeIntervalSince(now))) s in the future, beyond the allowed \(Int(maximumIssuedAtSkew)) s: check the signer's clock")
            }
        }

        var extraClaims: [String: JWSHeaderValue] = [:]
        for (name, member) in header where !DetachedJWS.verifierReadNames.contains(name) {
            if let scalar = JWSHeaderValue(member) { extraClaims[name] = scalar }
        }
        return VerifiedDetachedJWS(algorithm: algorithm, payloadEncoding: payloadEncoding, keyID: keyID, type: type,
                                   contentType: contentType, issuedAt: issuedAt, issuer: issuer, trustAnchor: trustAnchor,
                                   critical: critical, extraClaims: extraClaims, headerJSON: headerJSON)
    }

    /// `crit` checked as RFC 7515 §4.1.11 says: a non-empty list of distinct names, none
    /// defined by JWS itself, each present in the header and understood here.
    private func criticalNames(in header: [String: JWSJSONValue]) throws(OpenBankingError) -> [String] {
        guard let member = header["crit"] else { return [] }
        guard case let .array(items) = member, !items.isEmpty else {
            throw OpenBankingError("the JWS header member crit must be a non-empty list of names")
        }
        var names: [String] = []
        for item in items {
            guard case let .string(name) = item else { throw OpenBankingError("the JWS crit list must hold only strings") }
            guard !names.contains(name) else { throw OpenBankingError("the JWS crit list names \"\(name)\" twice") }
            guard !DetachedJWS.registeredNames.contains(name) else {
                throw OpenBankingError("the JWS crit list names \"\(name)\", which JWS defines itself and must not be listed")
            }
            guard name == "b64" || OpenBankingJWSClaim.all.contains(name) || understoodCriticalClaims.contains(name) else {
                throw OpenBankingError("the JWS crit list names \"\(name)\", which this verifier does not understand; add it to understoodCriticalClaims if the caller checks it")
            }
            guard header[name] != nil else {
                throw OpenBankingError("the JWS crit list names \"\(name)\", but the header does not have it")
            }
            names.append(name)
        }
        return names
    }
}

/// Encoding pieces shared by the signer and the verifier.
enum DetachedJWS {
    /// Names the signer writes itself; extra claims may not use them.
    static let signerOwnedNames = Set(["alg", "kid", "typ", "cty", "crit", "b64"] + OpenBankingJWSClaim.all)
    /// Names the verifier reports in their own fields rather than in `extraClaims`.
    static let verifierReadNames = signerOwnedNames
    /// Header parameters that JWS and JWA (RFC 7515, RFC 7518) define, which `crit` may not list.
    static let registeredNames: Set<String> = ["alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit",
                                               "enc", "zip", "epk", "apu", "apv", "iv", "tag", "p2s", "p2c"]

    /// RFC 7515 §5.1 step 5, with the payload either base64url-encoded or as is (RFC 7797 §3).
    static func signingInput(encodedHeader: String, body: Data, encoding: DetachedJWSPayloadEncoding) -> [UInt8] {
        switch encoding {
        case .base64URL: return Array((encodedHeader + "." + base64URLEncoded(Array(body))).utf8)
        case .unencoded: return Array((encodedHeader + ".").utf8) + Array(body)
        }
    }

    /// Base64url without padding (RFC 7515 §2).
    static func base64URLEncoded(_ bytes: [UInt8]) -> String {
        var text = Data(bytes).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return String(text.map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
    }

    /// Strict base64url: only the url-safe alphabet, no padding, no spare bits set, so each
    /// value has exactly one text form.
    static func base64URLDecoded(_ text: String) -> [UInt8]? {
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        guard text.count % 4 != 1, text.allSatisfy(allowed.contains) else { return nil }
        var standard = String(text.map { $0 == "-" ? "+" : $0 == "_" ? "/" : $0 })
        standard += String(repeating: "=", count: (4 - standard.count % 4) % 4)
        guard let data = Data(base64Encoded: standard) else { return nil }
        let bytes = Array(data)
        // Foundation ignores bits after the last byte; re-encoding finds a text that set them.
        guard base64URLEncoded(bytes) == text else { return nil }
        return bytes
    }
}

/// JSON values for the protected header: decoded strictly (a number is not a boolean) and
/// written deterministically.
enum JWSJSONValue: Decodable, Equatable {
    case string(String)
    case integer(Int64)
    case number(Double)
    case bool(Bool)
    case array([JWSJSONValue])
    case object([String: JWSJSONValue])
    case null

    init(_ value: JWSHeaderValue) {
        switch value {
        case let .string(text): self = .string(text)
        case let .integer(number): self = .integer(Int64(number))
        case let .number(number): self = .number(number)
        case let .bool(flag): self = .bool(flag)
        }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let number = try? container.decode(Int64.self) {
            self = .integer(number)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let items = try? container.decode([JWSJSONValue].self) {
            self = .array(items)
        } else {
            self = .object(try container.decode([String: JWSJSONValue].self))
        }
    }

    /// Compact JSON. Members are sorted by UTF-16 code units (the RFC 8785 order); strings
    /// escape only what JSON requires, so "/" and non-ASCII stay as they are.
    var text: String {
        switch self {
        case let .string(value): return JWSJSONValue.quoted(value)
        case let .integer(value): return String(value)
        case let .number(value): return "\(value)"
        case let .bool(value): return value ? "true" : "false"
        case .null: return "null"
        case let .array(items): return "[" + items.map(\.text).joined(separator: ",") + "]"
        case let .object(members):
            let names = members.keys.sorted { $0.utf16.lexicographicallyPrecedes($1.utf16) }
            return "{" + names.map { JWSJSONValue.quoted($0) + ":" + members[$0]!.text }.joined(separator: ",") + "}"
        }
    }

    private static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension JWSHeaderValue {
    /// The scalar a decoded member holds; nil for arrays, objects and null.
    init?(_ value: JWSJSONValue) {
        switch value {
        case let .string(text): self = .string(text)
        case let .integer(number):
            guard let small = Int(exactly: number) else { return nil }
            self = .integer(small)
        case let .number(number): self = .number(number)
        case let .bool(flag): self = .bool(flag)
        case .array, .object, .null: return nil
        }
    }
}

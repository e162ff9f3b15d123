internal import COpenSSL
import Foundation
import PKCS11

/// An RFC 9421 MAC algorithm, by its HTTP Signature Algorithms registry name.
///
/// Kept apart from `HTTPSignatureAlgorithm`: a MAC has no public key, so it is made and checked
/// with the same secret, an `HMACSigningKey`.
public struct HTTPMACAlgorithm: Hashable, Sendable, CustomStringConvertible {
    /// The registry name; what the `alg` parameter carries.
    public let name: String
    /// The HMAC's hash.
    public let hash: HashAlgorithm

    private init(name: String, hash: HashAlgorithm) {
        self.name = name
        self.hash = hash
    }

    /// HMAC with SHA-256 (RFC 9421 §3.3.3); the MAC is the full 32 bytes.
    public static let hmacSHA256 = HTTPMACAlgorithm(name: "hmac-sha256", hash: .sha256)

    /// The MAC algorithms KeyBridge makes and checks.
    public static let all: [HTTPMACAlgorithm] = [.hmacSHA256]

    /// The algorithm with this registry name; nil for unknown and asymmetric names.
    public init?(name: String) {
        guard let found = Self.all.first(where: { $0.name == name }) else { return nil }
        self = found
    }

    /// The registry name.
    public var description: String { name }
}

/// Signs requests per RFC 9421 with an HMAC key, adding `Signature-Input` and `Signature`: the
/// `hmac-sha256` counterpart of `HTTPMessageSigner`, with the same components, parameters and
/// checks.
///
/// ```swift
/// let signer = try HTTPMessageMACSigner(key: TokenHMACKey(uri: uri), keyID: "bank-shared",
///                                       components: [.method, .targetURI, .field("content-digest")],
///                                       contentDigest: .sha256)
/// try signer.sign(&request)
/// ```
public struct HTTPMessageMACSigner: Sendable {
    /// The key; only its `authenticationCode` is used, so a token secret stays on the token.
    public let key: any HMACSigningKey
    /// The algorithm; the key's hash must be its hash.
    public let algorithm: HTTPMACAlgorithm
    /// The dictionary label (default `sig1`).
    public let label: String
    /// The covered components, in order.
    public let components: [HTTPSignatureComponent]
    /// `keyid`, which the receiver normally needs to pick the shared secret.
    public let keyID: String?
    /// Whether to send `alg`.
    public let includesAlgorithm: Bool
    /// When set, `expires` is `created` plus this many seconds.
    public let lifetime: TimeInterval?
    /// `tag`, naming the application profile.
    public let tag: String?
    /// When set, `sign(_:)` writes a `Content-Digest` header for the body first.
    public let contentDigest: ContentDigest.Algorithm?

    /// Checks the configuration now, so that a bad label or component fails before any request.
    public init(key: any HMACSigningKey, algorithm: HTTPMACAlgorithm = .hmacSHA256, keyID: String?,
                components: [HTTPSignatureComponent], label: String = "sig1", includesAlgorithm: Bool = false,
                lifetime: TimeInterval? = nil, tag: String? = nil,
                contentDigest: ContentDigest.Algorithm? = nil) throws(HTTPMessageSignatureError) {
        guard key.hash == algorithm.hash else {
            throw HTTPMessageSignatureError(.algorithmMismatch, "\(algorithm) needs an HMAC-\(algorithm.hash) key, but this key makes HMAC-\(key.hash)")
        }
        try MACSignatureConfiguration.validate(label: label, keyID: keyID, tag: tag, lifetime: lifetime,
                                               components: components, contentDigest: contentDigest)
        self.key = key
        self.algorithm = algorithm
        self.label = label
        self.components = components
        self.keyID = keyID
        self.includesAlgorithm = includesAlgorithm
        self.lifetime = lifetime
        self.tag = tag
        self.contentDigest = contentDigest
    }

    /// Signs `request` as it is, without changing it.
    /// - Parameters:
    ///   - request: the request to sign.
    ///   - created: the `created` time (whole seconds); nil leaves `created` out.
    ///   - nonce: a `nonce` value, e.g. from `HTTPMessageSigner.makeNonce()`.
    public func signature(for request: HTTPRequestParts, created: Date? = Date(),
                          nonce: String? = nil) throws(HTTPMessageSignatureError) -> HTTPMessageSignature {
        let (signatureParameters, base) = try SignatureBase.forSigning(
            request, components: components, keyID: keyID, algorithmName: includesAlgorithm ? algorithm.name : nil,
            nonce: nonce, tag: tag, lifetime: lifetime, created: created)
        let mac: [UInt8]
        do {
            mac = try key.authenticationCode(for: Array(base.utf8))
        } catch {
            throw HTTPMessageSignatureError(.signingFailed, "the key could not make the \(algorithm) MAC: \(error)")
        }
        guard mac.count == algorithm.hash.length else {
            throw HTTPMessageSignatureError(.signingFailed, "the key returned a \(mac.count)-byte MAC; \(algorithm) is \(algorithm.hash.length) bytes")
        }
        return HTTPMessageSignature(label: label, signatureParameters: signatureParameters, signatureBase: base, signature: mac)
    }

    /// Signs `request` and appends the `Signature-Input` and `Signature` headers (after writing
    /// `Content-Digest` when `contentDigest` is set). Refuses a label the request already uses.
    @discardableResult
    public func sign(_ request: inout HTTPRequestParts, created: Date? = Date(),
                     nonce: String? = nil) throws(HTTPMessageSignatureError) -> HTTPMessageSignature {
        try MACSignatureConfiguration.checkLabelIsFree(label, in: request)
        var signed = request
        if let contentDigest {
            signed.headers.removeAll { $0.name.caseInsensitiveCompare(ContentDigest.headerName) == .orderedSame }
            signed.headers.append((ContentDigest.headerName, ContentDigest.headerValue(for: request.body, algorithms: [contentDigest])))
        }
        let result = try signature(for: signed, created: created, nonce: nonce)
        signed.headers.append(("Signature-Input", result.signatureInput))
        signed.headers.append(("Signature", result.signatureHeader))
        request = signed
        return result
    }
}

/// Verifies an RFC 9421 `hmac-sha256` signature on a request: parses `Signature-Input` and
/// `Signature`, rebuilds the signature base, computes the MAC again with the shared key and
/// compares in constant time, then checks the time window and optionally `Content-Digest`.
///
/// The verifier needs the secret the signer used. `TokenHMACKey` keeps it on the verifier's own
/// token, so the check is a `C_Sign` there and the secret is never in memory.
public struct HTTPMessageMACVerifier: Sendable {
    /// The shared key.
    public let key: any HMACSigningKey
    /// The one algorithm accepted; a signature whose `alg` names another is refused.
    public let algorithm: HTTPMACAlgorithm
    /// The label to check; nil means the request must carry exactly one signature.
    public var label: String?
    /// When set, `keyid` must be present and equal.
    public var expectedKeyID: String?
    /// When set, `tag` must be present and equal.
    public var expectedTag: String?
    /// Components the signature must cover, e.g. `.method`, `.targetURI`, `.field("content-digest")`.
    public var requiredComponents: [HTTPSignatureComponent] = []
    /// Whether `created` must be present (default true).
    public var requiresCreated = true
    /// Whether `expires` must be present (default false).
    public var requiresExpires = false
    /// When set, a `created` older than this many seconds is refused.
    public var maximumAge: TimeInterval?
    /// Leeway for clocks that differ, applied to `created` in the future and to `expires`.
    public var allowedClockSkew: TimeInterval = 60
    /// When true, `content-digest` must be covered and `Content-Digest` must match the body.
    public var checksContentDigest = false

    /// A verifier for MACs by `key` with `algorithm`; throws when the key's hash is another.
    public init(key: any HMACSigningKey, algorithm: HTTPMACAlgorithm = .hmacSHA256) throws(HTTPMessageSignatureError) {
        guard key.hash == algorithm.hash else {
            throw HTTPMessageSignatureError(.algorithmMismatch, "\(algorithm) needs an HMAC-\(algorithm.hash) key, but this key makes HMAC-\(key.hash)")
        }
        self.key = key
        self.algorithm = algorithm
    }

    /// Verifies the MAC on `request` as of `now`; throws naming the first check that failed.
    @discardableResult
    public func verify(_ request: HTTPRequestParts, now: Date = Date()) throws(HTTPMessageSignatureError) -> VerifiedHTTPMessageSignature {
        let received = try policy.read(request, now: now)
        let (label, mac, base) = (received.label, received.signature, received.base)
        let expected: [UInt8]
        do {
            expected = try key.authenticationCode(for: Array(base.utf8))
        } catch {
            throw HTTPMessageSignatureError(.signingFailed, "the key could not compute the \(algorithm) MAC to compare: \(error)")
        }
        guard MACSignatureConfiguration.constantTimeEqual(mac, expected) else {
            throw HTTPMessageSignatureError(.signatureInvalid,
                                            "the \(algorithm) MAC \(label) does not match: the request differs from what was signed, or another secret signed it")
        }

        return try policy.result(received, request: request)
    }

    private var policy: SignatureCheckPolicy {
        SignatureCheckPolicy(algorithmName: algorithm.name, label: label, expectedKeyID: expectedKeyID, expectedTag: expectedTag,
                             requiredComponents: requiredComponents, requiresCreated: requiresCreated, requiresExpires: requiresExpires,
                             maximumAge: maximumAge, allowedClockSkew: allowedClockSkew, checksContentDigest: checksContentDigest)
    }
}

/// The configuration checks `HTTPMessageSigner` makes, for the MAC signer.
enum MACSignatureConfiguration {
    static func validate(label: String, keyID: String?, tag: String?, lifetime: TimeInterval?,
                         components: [HTTPSignatureComponent], contentDigest: ContentDigest.Algorithm?) throws(HTTPMessageSignatureError) {
        guard StructuredFieldSerializer.isValidKey(label) else {
            throw HTTPMessageSignatureError(.invalidConfiguration,
                                            "the label \"\(label)\" is not a structured-field key (lower-case letters, digits, _ - . *; a letter or * first)")
        }
        for (name, value) in [("keyid", keyID), ("tag", tag)] {
            if let value, !StructuredFieldSerializer.isValidString(value) {
                throw HTTPMessageSignatureError(.invalidConfiguration, "\(name) may hold only printable ASCII")
            }
        }
        if let lifetime, !(lifetime > 0 && lifetime < 1e10) {
            throw HTTPMessageSignatureError(.invalidConfiguration, "the lifetime must be a positive number of seconds")
        }
        var seen = Set<HTTPSignatureComponent>()
        for component in components {
            try component.validate()
            guard seen.insert(component).inserted else {
                throw HTTPMessageSignatureError(.duplicateComponent, "the component \(component) is listed twice")
            }
        }
        if contentDigest != nil, !components.contains(.field("content-digest")) {
            throw HTTPMessageSignatureError(.invalidConfiguration,
                                            "a Content-Digest is added, but the signature does not cover \"content-digest\"; add .field(\"content-digest\")")
        }
    }

    static func checkLabelIsFree(_ label: String, in request: HTTPRequestParts) throws(HTTPMessageSignatureError) {
        for field in ["Signature-Input", "Signature"] {
            if let value = HTTPMessageVerifier.combinedField(field, in: request),
               let existing = try? StructuredFieldParser.parseDictionary(value), existing[label] != nil {
                throw HTTPMessageSignatureError(.invalidConfiguration, "the request already has a signature labelled \(label); choose another label")
            }
        }
    }

    /// Equal lengths and equal bytes, in time that does not depend on where they differ.
    static func constantTimeEqual(_ received: [UInt8], _ expected: [UInt8]) -> Bool {
        guard received.count == expected.count, !expected.isEmpty else { return false }
        return CRYPTO_memcmp(received, expected, expected.count) == 0
    }
}

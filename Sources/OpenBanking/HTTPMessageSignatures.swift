import Foundation
import KeyBridgeProvider

/// An RFC 9421 signature algorithm, by its HTTP Signature Algorithms registry name.
///
/// Only the asymmetric ones are here, checked with a public key or certificate. `hmac-sha256`
/// needs a shared secret instead: it is `HTTPMACAlgorithm`, used by `HTTPMessageMACSigner`
/// and `HTTPMessageMACVerifier` with a token secret key (`TokenHMACKey`).
public struct HTTPSignatureAlgorithm: Hashable, Sendable, CustomStringConvertible {
    /// The registry name, e.g. `rsa-pss-sha512`; what the `alg` parameter carries.
    public let name: String
    /// How the token key signs (and the public key verifies).
    public let scheme: SignatureScheme
    /// The `RequestSigningKey.algorithm` a key needs: "RSA", "EC" or "ED25519".
    public let keyAlgorithm: String

    private init(name: String, scheme: SignatureScheme, keyAlgorithm: String) {
        self.name = name
        self.scheme = scheme
        self.keyAlgorithm = keyAlgorithm
    }

    /// RSASSA-PSS, SHA-512, MGF1-SHA-512, 64-byte salt.
    public static let rsaPSSSHA512 = HTTPSignatureAlgorithm(name: "rsa-pss-sha512", scheme: .rsaPSS(.sha512), keyAlgorithm: "RSA")
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    public static let rsaV1_5SHA256 = HTTPSignatureAlgorithm(name: "rsa-v1_5-sha256", scheme: .rsaPKCS1(.sha256), keyAlgorithm: "RSA")
    /// ECDSA on P-256 with SHA-256; the signature is r||s, 32 bytes each (not DER).
    public static let ecdsaP256SHA256 = HTTPSignatureAlgorithm(name: "ecdsa-p256-sha256", scheme: .ecdsa(.sha256), keyAlgorithm: "EC")
    /// Ed25519 over the signature base.
    public static let ed25519 = HTTPSignatureAlgorithm(name: "ed25519", scheme: .ed25519, keyAlgorithm: "ED25519")

    /// The algorithms KeyBridge signs and verifies.
    public static let all: [HTTPSignatureAlgorithm] = [.rsaPSSSHA512, .rsaV1_5SHA256, .ecdsaP256SHA256, .ed25519]

    /// The algorithm with this registry name; nil for unknown names and for `hmac-sha256`
    /// (see `HTTPMACAlgorithm`).
    public init?(name: String) {
        guard let found = Self.all.first(where: { $0.name == name }) else { return nil }
        self = found
    }

    /// The registry name.
    public var description: String { name }
}

/// The signature parameters of RFC 9421 §2.3, as signed or as received.
public struct HTTPSignatureParameters: Sendable, Hashable {
    /// `created`, in whole seconds since 1970.
    public var created: Int64?
    /// `expires`, in whole seconds since 1970.
    public var expires: Int64?
    /// `keyid`.
    public var keyID: String?
    /// `alg`.
    public var algorithm: String?
    /// `nonce`.
    public var nonce: String?
    /// `tag`.
    public var tag: String?

    /// Parameters with the given values; nil ones are left out.
    public init(created: Int64? = nil, expires: Int64? = nil, keyID: String? = nil, algorithm: String? = nil,
                nonce: String? = nil, tag: String? = nil) {
        self.created = created
        self.expires = expires
        self.keyID = keyID
        self.algorithm = algorithm
        self.nonce = nonce
        self.tag = tag
    }

    /// In the order KeyBridge writes them: created, expires, keyid, alg, nonce, tag (the order of
    /// the RFC's Appendix B examples, so their `Signature-Input` values come out byte for byte).
    var serialized: StructuredFieldParameters {
        var result: StructuredFieldParameters = []
        if let created { result.append(("created", .integer(created))) }
        if let expires { result.append(("expires", .integer(expires))) }
        if let keyID { result.append(("keyid", .string(keyID))) }
        if let algorithm { result.append(("alg", .string(algorithm))) }
        if let nonce { result.append(("nonce", .string(nonce))) }
        if let tag { result.append(("tag", .string(tag))) }
        return result
    }
}

/// One signature made by `HTTPMessageSigner`: the two header values and what was signed.
public struct HTTPMessageSignature: Sendable {
    /// The dictionary label, e.g. `sig1`.
    public let label: String
    /// The covered components and parameters, e.g. `("@method" "@path");created=1618884473;keyid="k"`.
    public let signatureParameters: String
    /// The exact bytes that were signed (UTF-8), without a trailing newline.
    public let signatureBase: String
    /// The signature as the algorithm defines it (r||s for ECDSA).
    public let signature: [UInt8]

    /// The `Signature-Input` header value: `label=(…);created=…`.
    public var signatureInput: String { label + "=" + signatureParameters }
    /// The `Signature` header value: `label=:base64:`.
    public var signatureHeader: String { label + "=" + StructuredFieldSerializer.serialize(.byteSequence(signature)) }
}

/// Signs requests per RFC 9421 with a token key, adding `Signature-Input` and `Signature`.
///
/// ```swift
/// let signer = try HTTPMessageSigner(key: ProviderKey(uri: uri), algorithm: .rsaPSSSHA512, keyID: "qseal-2025",
///                                    components: [.method, .targetURI, .field("content-digest")],
///                                    contentDigest: .sha256)
/// try signer.sign(&request)
/// ```
public struct HTTPMessageSigner: Sendable {
    /// The key; only its `sign` is used, so the private key stays on the token.
    public let key: any RequestSigningKey
    /// The algorithm; the key must be of its type.
    public let algorithm: HTTPSignatureAlgorithm
    /// The dictionary label (default `sig1`).
    public let label: String
    /// The covered components, in order.
    public let components: [HTTPSignatureComponent]
    /// `keyid`, when the receiver needs it to find the key.
    public let keyID: String?
    /// Whether to send `alg` (RFC 9421 lets it be left out when the key implies the algorithm).
    public let includesAlgorithm: Bool
    /// When set, `expires` is `created` plus this many seconds.
    public let lifetime: TimeInterval?
    /// `tag`, naming the application profile.
    public let tag: String?
    /// When set, `sign(_:)` writes a `Content-Digest` header for the body first.
    public let contentDigest: ContentDigest.Algorithm?

    /// Checks the configuration now, so that a bad label or component fails before any request.
    public init(key: any RequestSigningKey, algorithm: HTTPSignatureAlgorithm, keyID: String?,
                components: [HTTPSignatureComponent], label: String = "sig1", includesAlgorithm: Bool = false,
                lifetime: TimeInterval? = nil, tag: String? = nil,
                contentDigest: ContentDigest.Algorithm? = nil) throws(HTTPMessageSignatureError) {
        guard key.algorithm == algorithm.keyAlgorithm else {
            throw HTTPMessageSignatureError(.algorithmMismatch, "\(algorithm) needs an \(algorithm.keyAlgorithm) key, but this key is \(key.algorithm)")
        }
        if algorithm == .ecdsaP256SHA256, let providerKey = key as? ProviderKey, providerKey.bits != 256 {
            throw HTTPMessageSignatureError(.algorithmMismatch, "ecdsa-p256-sha256 needs a P-256 key, but this EC key has \(providerKey.bits) bits")
        }
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
        let signed: [UInt8]
        do {
            signed = try key.sign(Array(base.utf8), scheme: algorithm.scheme)
        } catch {
            throw HTTPMessageSignatureError(.signingFailed, "the key could not make the \(algorithm) signature: \(error)")
        }
        var signature = signed
        if algorithm == .ecdsaP256SHA256 {
            // Keys give DER; RFC 9421 §3.3.4 wants the fixed-width r||s.
            do {
                signature = try ECDSASignatureEncoding.rawFromDER(signed, width: 32)
            } catch {
                throw HTTPMessageSignatureError(.signingFailed, "the ECDSA signature does not fit P-256 r||s (is the key P-256?): \(error)")
            }
        }
        return HTTPMessageSignature(label: label, signatureParameters: signatureParameters, signatureBase: base, signature: signature)
    }

    /// Signs `request` and appends the `Signature-Input` and `Signature` headers (after writing
    /// `Content-Digest` when `contentDigest` is set). Refuses a label the request already uses.
    @discardableResult
    public func sign(_ request: inout HTTPRequestParts, created: Date? = Date(),
                     nonce: String? = nil) throws(HTTPMessageSignatureError) -> HTTPMessageSignature {
        for field in ["Signature-Input", "Signature"] {
            if let value = HTTPMessageVerifier.combinedField(field, in: request),
               let existing = try? StructuredFieldParser.parseDictionary(value), existing[label] != nil {
                throw HTTPMessageSignatureError(.invalidConfiguration, "the request already has a signature labelled \(label); choose another label")
            }
        }
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

    /// A fresh random nonce: 16 bytes from the system's secure generator, base64url without padding.
    public static func makeNonce() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// What `HTTPMessageVerifier` accepted.
public struct VerifiedHTTPMessageSignature: Sendable {
    /// The label of the signature that verified.
    public let label: String
    /// The components it covers, in the signed order.
    public let components: [HTTPSignatureComponent]
    /// Its parameters (nonce and keyid included, for replay and key checks by the caller).
    public let parameters: HTTPSignatureParameters
    /// The rebuilt signature base the signature was checked over.
    public let signatureBase: String
    /// The digest algorithms checked against the body (empty when the verifier was not asked to).
    public let checkedDigests: [ContentDigest.Algorithm]
}

/// Verifies an RFC 9421 signature on a request with a public key: parses `Signature-Input` and
/// `Signature`, rebuilds the signature base, checks the signature and the time window, and
/// optionally `Content-Digest` against the body.
public struct HTTPMessageVerifier: Sendable {
    /// The signer's public key (from its certificate, e.g. a QSealC).
    public let key: PublicKeyVerifier
    /// The one algorithm accepted; a signature whose `alg` names another is refused.
    public let algorithm: HTTPSignatureAlgorithm
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

    /// A verifier for signatures by `key` with `algorithm`; throws when the key is of another type.
    public init(key: PublicKeyVerifier, algorithm: HTTPSignatureAlgorithm) throws(HTTPMessageSignatureError) {
        guard key.algorithm == algorithm.keyAlgorithm else {
            throw HTTPMessageSignatureError(.algorithmMismatch, "\(algorithm) needs an \(algorithm.keyAlgorithm) public key, but this key is \(key.algorithm)")
        }
        self.key = key
        self.algorithm = algorithm
    }

    /// Verifies the signature on `request` as of `now`; throws naming the first check that failed.
    @discardableResult
    public func verify(_ request: HTTPRequestParts, now: Date = Date()) throws(HTTPMessageSignatureError) -> VerifiedHTTPMessageSignature {
        let received = try policy.read(request, now: now)
        let (label, signature, base) = (received.label, received.signature, received.base)
        guard verifies(signature, over: Array(base.utf8)) else {
            throw HTTPMessageSignatureError(.signatureInvalid,
                                            "the \(algorithm) signature \(label) does not verify: the request differs from what was signed, or another key signed it")
        }

        return try policy.result(received, request: request)
    }

    private var policy: SignatureCheckPolicy {
        SignatureCheckPolicy(algorithmName: algorithm.name, label: label, expectedKeyID: expectedKeyID, expectedTag: expectedTag,
                             requiredComponents: requiredComponents, requiresCreated: requiresCreated, requiresExpires: requiresExpires,
                             maximumAge: maximumAge, allowedClockSkew: allowedClockSkew, checksContentDigest: checksContentDigest)
    }

    private func verifies(_ signature: [UInt8], over message: [UInt8]) -> Bool {
        switch algorithm {
        case .ecdsaP256SHA256:
            // r||s back to DER for OpenSSL; any other length is not a P-256 signature.
            guard signature.count == 64, let der = try? ECDSASignatureEncoding.derFromRaw(signature) else { return false }
            return key.verify(der, over: message, scheme: algorithm.scheme)
        case .ed25519:
            guard signature.count == 64 else { return false }
            return key.verify(signature, over: message, scheme: algorithm.scheme)
        default:
            return key.verify(signature, over: message, scheme: algorithm.scheme)
        }
    }

    static func readParameters(_ list: StructuredFieldParameters) throws(HTTPMessageSignatureError) -> HTTPSignatureParameters {
        var result = HTTPSignatureParameters()
        for (key, value) in list {
            switch (key, value) {
            case let ("created", .integer(seconds)): result.created = seconds
            case let ("expires", .integer(seconds)): result.expires = seconds
            case let ("keyid", .string(text)): result.keyID = text
            case let ("alg", .string(text)): result.algorithm = text
            case let ("nonce", .string(text)): result.nonce = text
            case let ("tag", .string(text)): result.tag = text
            case ("created", _), ("expires", _):
                throw HTTPMessageSignatureError(.invalidParameter, "Signature-Input: \(key) must be an integer (seconds since 1970)")
            case ("keyid", _), ("alg", _), ("nonce", _), ("tag", _):
                throw HTTPMessageSignatureError(.invalidParameter, "Signature-Input: \(key) must be a string")
            default:
                // Unknown parameters are allowed (RFC 9421 §2.3 is extensible); they are signed anyway.
                continue
            }
        }
        return result
    }

    static func dictionary(_ field: String, in request: HTTPRequestParts) throws(HTTPMessageSignatureError) -> StructuredFieldDictionary {
        guard let value = combinedField(field, in: request) else {
            throw HTTPMessageSignatureError(.missingSignature, "the request has no \(field) header")
        }
        do {
            return try StructuredFieldParser.parseDictionary(value)
        } catch {
            throw HTTPMessageSignatureError(.malformedField, "\(field) is not a structured-field dictionary: \(error)")
        }
    }

    /// All lines of a header joined with ", ", which is how RFC 8941 reads a field sent on several lines.
    static func combinedField(_ name: String, in request: HTTPRequestParts) -> String? {
        let lines = request.headers.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.map(\.value)
        return lines.isEmpty ? nil : lines.joined(separator: ", ")
    }
}

/// The checks both RFC 9421 verifiers (signatures and MACs) make before comparing the signature:
/// one label, its components and parameters, the time window, the required coverage, and the
/// rebuilt signature base; and afterwards the body's Content-Digest.
struct SignatureCheckPolicy {
    var algorithmName: String
    var label: String?
    var expectedKeyID: String?
    var expectedTag: String?
    var requiredComponents: [HTTPSignatureComponent]
    var requiresCreated: Bool
    var requiresExpires: Bool
    var maximumAge: TimeInterval?
    var allowedClockSkew: TimeInterval
    var checksContentDigest: Bool

    struct Received {
        var label: String
        var components: [HTTPSignatureComponent]
        var parameters: HTTPSignatureParameters
        var base: String
        var signature: [UInt8]
    }

    func read(_ request: HTTPRequestParts, now: Date) throws(HTTPMessageSignatureError) -> Received {
        let inputs = try HTTPMessageVerifier.dictionary("Signature-Input", in: request)
        let signatures = try HTTPMessageVerifier.dictionary("Signature", in: request)
        let label = try chooseLabel(inputs)
        guard let inputMember = inputs[label] else {
            throw HTTPMessageSignatureError(.missingSignature, "Signature-Input has no signature labelled \(label) (it has: \(inputs.keys.joined(separator: ", ")))")
        }
        guard let signatureMember = signatures[label] else {
            throw HTTPMessageSignatureError(.missingSignature, "Signature has no value for the label \(label) that Signature-Input names")
        }
        guard case let .innerList(items, parameterList) = inputMember else {
            throw HTTPMessageSignatureError(.malformedField, "Signature-Input: \(label) must be an inner list of components, e.g. (\"@method\");created=…")
        }
        guard case let .item(signatureItem) = signatureMember, case let .byteSequence(signature) = signatureItem.bareItem else {
            throw HTTPMessageSignatureError(.malformedField, "Signature: \(label) must be a byte sequence (:base64:)")
        }
        var components: [HTTPSignatureComponent] = []
        for item in items {
            components.append(try HTTPSignatureComponent(parsing: item))
        }
        let parameters = try HTTPMessageVerifier.readParameters(parameterList)
        try checkParameters(parameters, now: now)
        for required in requiredComponents where !components.contains(required) {
            throw HTTPMessageSignatureError(.componentNotCovered, "the signature does not cover \(required), which this verifier requires")
        }
        if checksContentDigest, !components.contains(.field("content-digest")) {
            throw HTTPMessageSignatureError(.componentNotCovered, "the signature does not cover content-digest, so it does not protect the body")
        }
        // The base uses the parameters exactly as received (re-serialized canonically), so that
        // parameters KeyBridge does not interpret are still covered.
        let signatureParameters = StructuredFieldSerializer.serializeInnerList(items, parameters: parameterList)
        let base = try SignatureBase.make(request: request, components: components, signatureParameters: signatureParameters)
        return Received(label: label, components: components, parameters: parameters, base: base, signature: signature)
    }

    /// After the signature matched: checks Content-Digest against the body when asked, and
    /// reports what was verified.
    func result(_ received: Received, request: HTTPRequestParts) throws(HTTPMessageSignatureError) -> VerifiedHTTPMessageSignature {
        var checkedDigests: [ContentDigest.Algorithm] = []
        if checksContentDigest {
            guard let digest = HTTPMessageVerifier.combinedField(ContentDigest.headerName, in: request) else {
                throw HTTPMessageSignatureError(.missingContentDigest, "the request has no Content-Digest header to check the body against")
            }
            checkedDigests = try ContentDigest.verify(digest, body: request.body)
        }
        return VerifiedHTTPMessageSignature(label: received.label, components: received.components, parameters: received.parameters,
                                            signatureBase: received.base, checkedDigests: checkedDigests)
    }

    func chooseLabel(_ inputs: StructuredFieldDictionary) throws(HTTPMessageSignatureError) -> String {
        if let label { return label }
        switch inputs.keys.count {
        case 0: throw HTTPMessageSignatureError(.missingSignature, "Signature-Input holds no signature")
        case 1: return inputs.keys[0]
        default:
            throw HTTPMessageSignatureError(.ambiguousSignature,
                                            "the request carries several signatures (\(inputs.keys.joined(separator: ", "))); set the verifier's label to choose one")
        }
    }

    func checkParameters(_ parameters: HTTPSignatureParameters, now: Date) throws(HTTPMessageSignatureError) {
        if let alg = parameters.algorithm, alg != algorithmName {
            throw HTTPMessageSignatureError(.algorithmMismatch, "the signature says alg=\"\(alg)\", but this verifier checks \(algorithmName)")
        }
        if let expectedKeyID, parameters.keyID != expectedKeyID {
            throw HTTPMessageSignatureError(.unexpectedParameterValue,
                                            "keyid is \(parameters.keyID.map { "\"\($0)\"" } ?? "absent"), expected \"\(expectedKeyID)\"")
        }
        if let expectedTag, parameters.tag != expectedTag {
            throw HTTPMessageSignatureError(.unexpectedParameterValue,
                                            "tag is \(parameters.tag.map { "\"\($0)\"" } ?? "absent"), expected \"\(expectedTag)\"")
        }
        let nowSeconds = now.timeIntervalSince1970
        if let created = parameters.created {
            if Double(created) > nowSeconds + allowedClockSkew {
                throw HTTPMessageSignatureError(.createdInFuture, "created=\(created) is in the future (now \(Int64(nowSeconds))); check the signer's clock")
            }
            if let maximumAge, nowSeconds - Double(created) > maximumAge {
                throw HTTPMessageSignatureError(.tooOld, "created=\(created) is more than \(Int64(maximumAge)) s ago (now \(Int64(nowSeconds)))")
            }
        } else if requiresCreated {
            throw HTTPMessageSignatureError(.invalidParameter, "the signature has no created parameter, which this verifier requires")
        }
        if let expires = parameters.expires {
            if nowSeconds >= Double(expires) + allowedClockSkew {
                throw HTTPMessageSignatureError(.expired, "the signature expired at \(expires) (now \(Int64(nowSeconds)))")
            }
            if let created = parameters.created, expires < created {
                throw HTTPMessageSignatureError(.invalidParameter, "expires=\(expires) is before created=\(created)")
            }
        } else if requiresExpires {
            throw HTTPMessageSignatureError(.invalidParameter, "the signature has no expires parameter, which this verifier requires")
        }
    }

}

extension SignatureBase {
    /// What a signer signs: the `@signature-params` value from its settings, and the base.
    static func forSigning(_ request: HTTPRequestParts, components: [HTTPSignatureComponent], keyID: String?, algorithmName: String?,
                           nonce: String?, tag: String?, lifetime: TimeInterval?,
                           created: Date?) throws(HTTPMessageSignatureError) -> (parameters: String, base: String) {
        if let nonce, !StructuredFieldSerializer.isValidString(nonce) {
            throw HTTPMessageSignatureError(.invalidConfiguration, "the nonce may hold only printable ASCII")
        }
        let createdSeconds = created.map { Int64($0.timeIntervalSince1970.rounded(.down)) }
        var parameters = HTTPSignatureParameters(created: createdSeconds, keyID: keyID, algorithm: algorithmName, nonce: nonce, tag: tag)
        if let lifetime {
            guard let createdSeconds else {
                throw HTTPMessageSignatureError(.invalidConfiguration, "a lifetime needs a created time to count from")
            }
            parameters.expires = createdSeconds + Int64(lifetime.rounded(.up))
        }
        let signatureParameters = StructuredFieldSerializer.serializeInnerList(components.map(\.identifier), parameters: parameters.serialized)
        let base = try make(request: request, components: components, signatureParameters: signatureParameters)
        return (signatureParameters, base)
    }
}

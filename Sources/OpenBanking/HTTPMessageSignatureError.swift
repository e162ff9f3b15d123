/// An error from RFC 9421 message signatures or RFC 9530 `Content-Digest`: a code to branch on
/// and a sentence naming the cause and, where there is one, the fix.
public struct HTTPMessageSignatureError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, as a stable name. Extensible: new codes may be added.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        /// The code's name, e.g. "signatureInvalid".
        public var rawValue: String
        /// A code by name; the static members are the ones KeyBridge throws.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The code's name.
        public var description: String { rawValue }

        /// The signer or verifier was set up with values RFC 9421 does not allow (label, key type, parameter text).
        public static let invalidConfiguration = Code(rawValue: "invalidConfiguration")
        /// A header is not valid RFC 8941 structured-field syntax, or has the wrong shape.
        public static let malformedField = Code(rawValue: "malformedField")
        /// No `Signature-Input`/`Signature` (or not the requested label).
        public static let missingSignature = Code(rawValue: "missingSignature")
        /// Several signatures and no label to choose one.
        public static let ambiguousSignature = Code(rawValue: "ambiguousSignature")
        /// A covered component is not in the request (a header, a query parameter).
        public static let missingComponent = Code(rawValue: "missingComponent")
        /// A component identifier KeyBridge does not implement, or one that is not valid.
        public static let unsupportedComponent = Code(rawValue: "unsupportedComponent")
        /// A component is covered twice.
        public static let duplicateComponent = Code(rawValue: "duplicateComponent")
        /// A component the verifier requires is not covered.
        public static let componentNotCovered = Code(rawValue: "componentNotCovered")
        /// A signature parameter has the wrong type, or a required one is absent.
        public static let invalidParameter = Code(rawValue: "invalidParameter")
        /// `alg` names another algorithm than the verifier's, or the key does not fit the algorithm.
        public static let algorithmMismatch = Code(rawValue: "algorithmMismatch")
        /// `keyid` or `tag` differs from what the verifier expects.
        public static let unexpectedParameterValue = Code(rawValue: "unexpectedParameterValue")
        /// `created` lies in the future (beyond the allowed clock skew).
        public static let createdInFuture = Code(rawValue: "createdInFuture")
        /// `created` is older than the verifier's maximum age.
        public static let tooOld = Code(rawValue: "tooOld")
        /// `expires` has passed.
        public static let expired = Code(rawValue: "expired")
        /// The signature does not verify over the rebuilt signature base.
        public static let signatureInvalid = Code(rawValue: "signatureInvalid")
        /// The key could not sign (token error, wrong key type).
        public static let signingFailed = Code(rawValue: "signingFailed")
        /// No `Content-Digest` header where one is needed.
        public static let missingContentDigest = Code(rawValue: "missingContentDigest")
        /// `Content-Digest` names no algorithm KeyBridge knows (sha-256, sha-512).
        public static let noKnownDigestAlgorithm = Code(rawValue: "noKnownDigestAlgorithm")
        /// A `Content-Digest` value does not match the body.
        public static let contentDigestMismatch = Code(rawValue: "contentDigestMismatch")
    }

    /// What went wrong, to branch on.
    public var code: Code
    /// A sentence for people: the cause and, where there is one, the fix.
    public var reason: String

    /// An error with its code and sentence.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// The reason.
    public var description: String { reason }
}

internal import CPKCS11
import Foundation

/// A named elliptic curve a token can generate keys on.
public enum NamedCurve: String, Sendable, Hashable, CaseIterable {
    case p256 = "P-256"
    case p384 = "P-384"
    case p521 = "P-521"

    /// The DER `ECParameters` (a namedCurve OBJECT IDENTIFIER) that goes into `CKA_EC_PARAMS`.
    /// These are fixed encodings of the OIDs in RFC 5480, section 2.1.1.1.
    public var parameters: [UInt8] {
        switch self {
        // 1.2.840.10045.3.1.7
        case .p256: return [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        // 1.3.132.0.34
        case .p384: return [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]
        // 1.3.132.0.35
        case .p521: return [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23]
        }
    }

    /// The field size in bits.
    public var bits: Int {
        switch self {
        case .p256: return 256
        case .p384: return 384
        case .p521: return 521
        }
    }

    /// The curve whose `CKA_EC_PARAMS` these are, if it is one of the above.
    public init?(parameters: [UInt8]) {
        guard let curve = NamedCurve.allCases.first(where: { $0.parameters == parameters }) else { return nil }
        self = curve
    }
}

/// Ed25519's `CKA_EC_PARAMS`: the OID 1.3.101.112 (RFC 8410), or the PrintableString
/// "edwards25519" that PKCS#11 2.40-era modules (and pkcs11-tool) write.
enum EdwardsCurveParameters {
    static let oid: [UInt8] = [0x06, 0x03, 0x2b, 0x65, 0x70]
    static let printableName: [UInt8] = [0x13, 0x0c] + Array("edwards25519".utf8)

    static func isEd25519(_ parameters: [UInt8]) -> Bool {
        parameters == oid || parameters == printableName
    }
}

/// The kind and size of a key pair to generate on a token.
public enum KeyPairSpec: Sendable, Hashable, CustomStringConvertible {
    case rsa(bits: Int)
    case ec(NamedCurve)
    case ed25519

    /// Every spelling `init(parsing:)` accepts, for help texts and errors.
    public static let accepted = ["rsa:2048", "rsa:3072", "rsa:4096", "ec:P-256", "ec:P-384", "ec:P-521", "ed25519"]

    /// Parses `rsa:2048|3072|4096`, `ec:P-256|P-384|P-521` or `ed25519` (case-insensitive;
    /// `secp256r1`/`prime256v1`, `secp384r1` and `secp521r1` are accepted for the curves).
    public init?(parsing text: String) {
        let lower = text.lowercased()
        switch lower {
        case "rsa:2048": self = .rsa(bits: 2048)
        case "rsa:3072": self = .rsa(bits: 3072)
        case "rsa:4096": self = .rsa(bits: 4096)
        case "ec:p-256", "ec:p256", "ec:prime256v1", "ec:secp256r1": self = .ec(.p256)
        case "ec:p-384", "ec:p384", "ec:secp384r1": self = .ec(.p384)
        case "ec:p-521", "ec:p521", "ec:secp521r1": self = .ec(.p521)
        case "ed25519", "ec:ed25519", "ec:edwards25519": self = .ed25519
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case let .rsa(bits): return "rsa:\(bits)"
        case let .ec(curve): return "ec:\(curve.rawValue)"
        case .ed25519: return "ed25519"
        }
    }

    /// The key-pair generation mechanism, as a raw `CKM_` value.
    public var generationMechanism: UInt {
        switch self {
        case .rsa: return UInt(CKM_RSA_PKCS_KEY_PAIR_GEN)
        case .ec: return UInt(CKM_EC_KEY_PAIR_GEN)
        case .ed25519: return UInt(CKM_EC_EDWARDS_KEY_PAIR_GEN)
        }
    }
}

/// A key pair just made on a token: both handles and what the token says about the private key.
public struct GeneratedKeyPair: Sendable {
    public var privateKey: ObjectHandle
    public var publicKey: ObjectHandle
}

extension Token {
    private var generationFunctions: CK_FUNCTION_LIST { module.functions.pointee }

    /// Runs `body` in a read-write session of its own, closed afterwards. Creating token
    /// objects needs one; pooled sessions are read-only. The login (per application and token)
    /// covers it.
    func withReadWriteSession<R>(_ body: (CK_SESSION_HANDLE) throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        // Inside the call gate, so a reconnect never finalises the module under a generation.
        try module.withCalls { () throws(PKCS11Error) -> R in
            var session: CK_SESSION_HANDLE = 0
            try check(generationFunctions.C_OpenSession(CK_SLOT_ID(slotID), CK_FLAGS(CKF_SERIAL_SESSION | CKF_RW_SESSION), nil, nil, &session),
                      "C_OpenSession", "cannot open a read-write session on slot \(slotID); the token may be write-protected or out of sessions")
            defer { _ = generationFunctions.C_CloseSession(session) }
            return try body(session)
        }
    }

    /// Objects of any class whose `CKA_LABEL` or `CKA_ID` equals the given ones.
    public func objects(label: String?, id: [UInt8]?) throws(PKCS11Error) -> [ObjectHandle] {
        var found: [ObjectHandle] = []
        if let label {
            var byLabel = PKCS11URI()
            byLabel.object = label
            found += try findObjects(matching: byLabel, objectClass: nil)
        }
        if let id {
            var byID = PKCS11URI()
            byID.id = id
            found += try findObjects(matching: byID, objectClass: nil).filter { !found.contains($0) }
        }
        return found
    }

    /// Generates a key pair inside the token with `CKA_TOKEN=true`, a private key that is
    /// `CKA_SENSITIVE=true`, `CKA_EXTRACTABLE=false`, `CKA_PRIVATE=true` and may only sign, and a
    /// public key that may only verify. There is no parameter to ask for anything else.
    ///
    /// Afterwards the token's own attributes are read back; a token that ignored the template
    /// (an extractable or non-sensitive private key) gets both objects destroyed and an error.
    /// The caller must have logged in (`Token.open`).
    public func generateKeyPair(_ spec: KeyPairSpec, label: String, id: [UInt8]) throws(PKCS11Error) -> GeneratedKeyPair {
        guard try mechanisms().contains(spec.generationMechanism) else {
            throw PKCS11Error(returnValue: .mechanismInvalid, function: "C_GenerateKeyPair",
                              reason: "the token does not offer \(MechanismNames.name(spec.generationMechanism)), so it cannot make \(spec) keys; pick another --type (pkcs11-tool -M lists what it can do)")
        }
        let yes: [UInt8] = [UInt8(CK_TRUE)]
        let no: [UInt8] = [UInt8(CK_FALSE)]
        var publicTemplate = AttributeTemplate()
        publicTemplate.append(CKA_CLASS, ulong: UInt(CKO_PUBLIC_KEY))
        publicTemplate.append(CKA_TOKEN, bytes: yes)
        publicTemplate.append(CKA_PRIVATE, bytes: no)
        publicTemplate.append(CKA_VERIFY, bytes: yes)
        publicTemplate.append(CKA_ENCRYPT, bytes: no)
        publicTemplate.append(CKA_WRAP, bytes: no)
        publicTemplate.append(CKA_LABEL, bytes: Array(label.utf8))
        publicTemplate.append(CKA_ID, bytes: id)
        var privateTemplate = AttributeTemplate()
        privateTemplate.append(CKA_CLASS, ulong: UInt(CKO_PRIVATE_KEY))
        privateTemplate.append(CKA_TOKEN, bytes: yes)
        privateTemplate.append(CKA_PRIVATE, bytes: yes)
        privateTemplate.append(CKA_SENSITIVE, bytes: yes)
        privateTemplate.append(CKA_EXTRACTABLE, bytes: no)
        privateTemplate.append(CKA_SIGN, bytes: yes)
        privateTemplate.append(CKA_DECRYPT, bytes: no)
        privateTemplate.append(CKA_UNWRAP, bytes: no)
        privateTemplate.append(CKA_DERIVE, bytes: no)
        privateTemplate.append(CKA_LABEL, bytes: Array(label.utf8))
        privateTemplate.append(CKA_ID, bytes: id)
        switch spec {
        case let .rsa(bits):
            publicTemplate.append(CKA_KEY_TYPE, ulong: UInt(CKK_RSA))
            privateTemplate.append(CKA_KEY_TYPE, ulong: UInt(CKK_RSA))
            publicTemplate.append(CKA_MODULUS_BITS, ulong: UInt(bits))
            publicTemplate.append(CKA_PUBLIC_EXPONENT, bytes: [0x01, 0x00, 0x01])
        case let .ec(curve):
            publicTemplate.append(CKA_KEY_TYPE, ulong: UInt(CKK_EC))
            privateTemplate.append(CKA_KEY_TYPE, ulong: UInt(CKK_EC))
            publicTemplate.append(CKA_EC_PARAMS, bytes: curve.parameters)
        case .ed25519:
            publicTemplate.append(CKA_KEY_TYPE, ulong: UInt(CKK_EC_EDWARDS))
            privateTemplate.append(CKA_KEY_TYPE, ulong: UInt(CKK_EC_EDWARDS))
        }

        let pair: GeneratedKeyPair
        if case .ed25519 = spec {
            // Modules differ in which form of the curve name they take; try the OID, then the name.
            var withOID = publicTemplate
            withOID.append(CKA_EC_PARAMS, bytes: EdwardsCurveParameters.oid)
            do {
                pair = try generate(spec, publicTemplate: withOID, privateTemplate: privateTemplate)
            } catch where error.returnValue.map({ [0x13, 0x130, 0x140].contains($0.rawValue) }) ?? false {
                // CKR_ATTRIBUTE_VALUE_INVALID, CKR_DOMAIN_PARAMS_INVALID, CKR_CURVE_NOT_SUPPORTED
                var withName = publicTemplate
                withName.append(CKA_EC_PARAMS, bytes: EdwardsCurveParameters.printableName)
                pair = try generate(spec, publicTemplate: withName, privateTemplate: privateTemplate)
            }
        } else {
            pair = try generate(spec, publicTemplate: publicTemplate, privateTemplate: privateTemplate)
        }

        // Trust, but verify: a key the token made exportable is worse than no key.
        let sensitive = try boolAttribute(.sensitive, of: pair.privateKey)
        let extractable = try boolAttribute(.extractable, of: pair.privateKey)
        if sensitive != true || extractable != false {
            try? destroyObject(pair.privateKey)
            try? destroyObject(pair.publicKey)
            throw PKCS11Error(function: "C_GenerateKeyPair",
                              reason: "the token made the key with CKA_SENSITIVE=\(sensitive.map(String.init) ?? "unknown") and CKA_EXTRACTABLE=\(extractable.map(String.init) ?? "unknown") although sensitive and non-extractable were asked for; the key was destroyed. Check the HSM's key policy")
        }
        return pair
    }

    private func generate(_ spec: KeyPairSpec, publicTemplate: AttributeTemplate,
                          privateTemplate: AttributeTemplate) throws(PKCS11Error) -> GeneratedKeyPair {
        try withReadWriteSession { session throws(PKCS11Error) in
            var mechanism = CK_MECHANISM(mechanism: CK_MECHANISM_TYPE(spec.generationMechanism), pParameter: nil, ulParameterLen: 0)
            var publicHandle: CK_OBJECT_HANDLE = 0
            var privateHandle: CK_OBJECT_HANDLE = 0
            try publicTemplate.withAttributes { publicAttributes, publicCount throws(PKCS11Error) in
                try privateTemplate.withAttributes { privateAttributes, privateCount throws(PKCS11Error) in
                    try check(generationFunctions.C_GenerateKeyPair(session, &mechanism, publicAttributes, publicCount,
                                                                    privateAttributes, privateCount, &publicHandle, &privateHandle),
                              "C_GenerateKeyPair", generationAdvice(spec))
                }
            }
            return GeneratedKeyPair(privateKey: ObjectHandle(rawValue: UInt(privateHandle)),
                                    publicKey: ObjectHandle(rawValue: UInt(publicHandle)))
        }
    }

    private func generationAdvice(_ spec: KeyPairSpec) -> String {
        "the token refused to generate a \(spec) key pair; check that you are logged in as the user (pin-source in the URI or KEYBRIDGE_PIN), that the token is not write-protected and has room, and that it supports this key type"
    }

    /// Stores an X.509 certificate as a public token object (`CKO_CERTIFICATE`, `CKC_X_509`).
    /// `subject`, `issuer` and `serialNumber` are the DER of the certificate's fields, which
    /// PKCS#11 wants as separate attributes so that lookups by them work.
    public func createCertificate(der: [UInt8], subject: [UInt8], issuer: [UInt8], serialNumber: [UInt8],
                                  label: String, id: [UInt8]) throws(PKCS11Error) -> ObjectHandle {
        var template = AttributeTemplate()
        template.append(CKA_CLASS, ulong: UInt(CKO_CERTIFICATE))
        template.append(CKA_CERTIFICATE_TYPE, ulong: UInt(CKC_X_509))
        template.append(CKA_TOKEN, bytes: [UInt8(CK_TRUE)])
        template.append(CKA_PRIVATE, bytes: [UInt8(CK_FALSE)])
        template.append(CKA_LABEL, bytes: Array(label.utf8))
        template.append(CKA_ID, bytes: id)
        template.append(CKA_SUBJECT, bytes: subject)
        template.append(CKA_ISSUER, bytes: issuer)
        template.append(CKA_SERIAL_NUMBER, bytes: serialNumber)
        template.append(CKA_VALUE, bytes: der)
        return try withReadWriteSession { session throws(PKCS11Error) in
            var handle: CK_OBJECT_HANDLE = 0
            try template.withAttributes { attributes, count throws(PKCS11Error) in
                try check(generationFunctions.C_CreateObject(session, attributes, count, &handle), "C_CreateObject",
                          "the token refused to store the certificate '\(label)'; check the login and that the token is not write-protected or full")
            }
            return ObjectHandle(rawValue: UInt(handle))
        }
    }

    /// Destroys one object; used to undo a half-finished change.
    public func destroyObject(_ object: ObjectHandle) throws(PKCS11Error) {
        try withReadWriteSession { session throws(PKCS11Error) in
            try check(generationFunctions.C_DestroyObject(session, CK_OBJECT_HANDLE(object.rawValue)), "C_DestroyObject")
        }
    }

    /// The token a URI names, logged in as `PrivateKey.loginBehavior` says (by default when the
    /// token needs a login). The PIN comes from `pin`, else the URI, `KEYBRIDGE_PIN` or a prompt.
    /// The URI's object attributes are ignored.
    public static func open(_ uri: PKCS11URI, pin: PIN? = nil, allowPrompt: Bool = true) throws(PKCS11Error) -> Token {
        try PrivateKey.loggedInToken(uri, pin: pin, allowPrompt: allowPrompt, pinFallback: nil).0
    }
}

internal import CPKCS11
import Foundation

/// What `keybridge keys list` shows about one token object, read from public attributes only.
public struct TokenObjectInfo: Sendable, Hashable {
    /// The object's class, named as in a `pkcs11:` URI's `type`.
    public var type: PKCS11URI.ObjectType
    public var handle: ObjectHandle
    public var label: String?
    public var id: [UInt8]?
    /// `rsa`, `ec`, `ed25519`, or the `CKK_` value in hex for other key types; nil for certificates.
    public var keyType: String?
    /// RSA modulus bits or the curve's field size.
    public var bits: Int?
    /// `P-256`, `P-384`, `P-521`, `Ed25519`, or the hex of unknown `CKA_EC_PARAMS`.
    public var curve: String?
    /// `CKA_SENSITIVE`, `CKA_EXTRACTABLE`, `CKA_NEVER_EXTRACTABLE`, `CKA_ALWAYS_AUTHENTICATE`;
    /// nil where the object has no such attribute.
    public var sensitive: Bool?
    public var extractable: Bool?
    public var neverExtractable: Bool?
    public var alwaysAuthenticate: Bool?
    /// `CKA_SIGN`
    public var canSign: Bool?
    /// `CKA_ALLOWED_MECHANISMS`, or nil when absent or empty (which means all).
    public var allowedMechanisms: [UInt]?
    /// The DER of a certificate object (its `CKA_VALUE`, read only after `CKA_CLASS` said certificate).
    public var certificateDER: [UInt8]?

    /// The `CKA_ID` in lower-case hex, or nil.
    public var idHex: String? { id.map { $0.map { String(format: "%02x", $0) }.joined() } }
}

extension Token {
    /// Every private key, public key, secret key and certificate object the session can see
    /// (private objects only after a login). Only public attributes are read; `progress` is
    /// called with (done, total) after each object.
    public func listObjects(progress: ((Int, Int) -> Void)? = nil) throws(PKCS11Error) -> [TokenObjectInfo] {
        let handles = try findObjects(matching: PKCS11URI(), objectClass: nil)
        var result: [TokenObjectInfo] = []
        for (index, handle) in handles.enumerated() {
            if let info = try describeObject(handle) { result.append(info) }
            progress?(index + 1, handles.count)
        }
        return result
    }

    /// The public facts about one object, or nil for classes other than keys and certificates.
    public func describeObject(_ handle: ObjectHandle) throws(PKCS11Error) -> TokenObjectInfo? {
        let type: PKCS11URI.ObjectType
        switch try ulongAttribute(.objectClass, of: handle) {
        case UInt(CKO_CERTIFICATE): type = .certificate
        case UInt(CKO_PUBLIC_KEY): type = .publicKey
        case UInt(CKO_PRIVATE_KEY): type = .privateKey
        case UInt(CKO_SECRET_KEY): type = .secretKey
        default: return nil
        }
        var info = TokenObjectInfo(type: type, handle: handle)
        info.label = try attribute(.label, of: handle).map { String(decoding: $0, as: UTF8.self) }
        info.id = try attribute(.id, of: handle).flatMap { $0.isEmpty ? nil : $0 }
        if type == .certificate {
            info.certificateDER = try certificateDER(handle)
            return info
        }
        let rawKeyType = try ulongAttribute(.keyType, of: handle)
        switch rawKeyType {
        case UInt(CKK_RSA):
            info.keyType = "rsa"
            if let modulus = try attribute(.modulus, of: handle) {
                info.bits = Token.bitLength(modulus)
            } else if let bits = try ulongAttribute(.modulusBits, of: handle) {
                info.bits = Int(bits)
            }
        case UInt(CKK_EC), UInt(CKK_EC_EDWARDS):
            let parameters = try attribute(.ecParams, of: handle)
            if rawKeyType == UInt(CKK_EC_EDWARDS) || parameters.map(EdwardsCurveParameters.isEd25519) == true {
                info.keyType = "ed25519"
                info.curve = "Ed25519"
                info.bits = 255
            } else {
                info.keyType = "ec"
                if let parameters, let curve = NamedCurve(parameters: parameters) {
                    info.curve = curve.rawValue
                    info.bits = curve.bits
                } else {
                    info.curve = parameters.map { $0.map { String(format: "%02x", $0) }.joined() }
                }
            }
        case let other?:
            info.keyType = "0x" + String(other, radix: 16)
        case nil:
            break
        }
        if type != .publicKey {
            info.sensitive = try boolAttribute(.sensitive, of: handle)
            info.extractable = try boolAttribute(.extractable, of: handle)
            info.neverExtractable = try boolAttribute(.neverExtractable, of: handle)
            info.alwaysAuthenticate = try boolAttribute(.alwaysAuthenticate, of: handle)
            info.canSign = try boolAttribute(.sign, of: handle)
        }
        if let raw = try attribute(.allowedMechanisms, of: handle), !raw.isEmpty {
            let stride = MemoryLayout<CK_MECHANISM_TYPE>.size
            info.allowedMechanisms = raw.withUnsafeBytes { bytes in
                (0..<(bytes.count / stride)).map { UInt(bytes.loadUnaligned(fromByteOffset: $0 * stride, as: CK_MECHANISM_TYPE.self)) }
            }
        }
        return info
    }

    /// The signing mechanisms a key of this kind can use on this token: those the token offers
    /// that fit the key type, limited by `CKA_ALLOWED_MECHANISMS` when set.
    public func signingMechanisms(for object: TokenObjectInfo) throws(PKCS11Error) -> [UInt] {
        let candidates: [UInt]
        switch object.keyType {
        case "rsa": candidates = MechanismNames.rsaSigning
        case "ec": candidates = MechanismNames.ecdsaSigning
        case "ed25519": candidates = [UInt(CKM_EDDSA)]
        default: candidates = []
        }
        let offered = try mechanisms()
        return candidates.filter { offered.contains($0) && (object.allowedMechanisms?.contains($0) ?? true) }
    }

    static func bitLength(_ bigEndian: [UInt8]) -> Int {
        guard let first = bigEndian.firstIndex(where: { $0 != 0 }) else { return 0 }
        return (bigEndian.count - first - 1) * 8 + (8 - bigEndian[first].leadingZeroBitCount)
    }
}

/// `CKM_` names for the mechanisms KeyBridge talks about.
public enum MechanismNames {
    static let rsaSigning: [UInt] = [
        UInt(CKM_RSA_PKCS), UInt(CKM_RSA_PKCS_PSS), UInt(CKM_RSA_X_509),
        UInt(CKM_SHA256_RSA_PKCS), UInt(CKM_SHA384_RSA_PKCS), UInt(CKM_SHA512_RSA_PKCS),
        UInt(CKM_SHA256_RSA_PKCS_PSS), UInt(CKM_SHA384_RSA_PKCS_PSS), UInt(CKM_SHA512_RSA_PKCS_PSS),
    ]
    static let ecdsaSigning: [UInt] = [
        UInt(CKM_ECDSA), UInt(CKM_ECDSA_SHA256), UInt(CKM_ECDSA_SHA384), UInt(CKM_ECDSA_SHA512),
    ]

    private static let names: [UInt: String] = [
        UInt(CKM_RSA_PKCS_KEY_PAIR_GEN): "CKM_RSA_PKCS_KEY_PAIR_GEN",
        UInt(CKM_EC_KEY_PAIR_GEN): "CKM_EC_KEY_PAIR_GEN",
        UInt(CKM_EC_EDWARDS_KEY_PAIR_GEN): "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        UInt(CKM_RSA_PKCS): "CKM_RSA_PKCS",
        UInt(CKM_RSA_PKCS_PSS): "CKM_RSA_PKCS_PSS",
        UInt(CKM_RSA_X_509): "CKM_RSA_X_509",
        UInt(CKM_SHA1_RSA_PKCS): "CKM_SHA1_RSA_PKCS",
        UInt(CKM_SHA256_RSA_PKCS): "CKM_SHA256_RSA_PKCS",
        UInt(CKM_SHA384_RSA_PKCS): "CKM_SHA384_RSA_PKCS",
        UInt(CKM_SHA512_RSA_PKCS): "CKM_SHA512_RSA_PKCS",
        UInt(CKM_SHA224_RSA_PKCS): "CKM_SHA224_RSA_PKCS",
        UInt(CKM_SHA1_RSA_PKCS_PSS): "CKM_SHA1_RSA_PKCS_PSS",
        UInt(CKM_SHA224_RSA_PKCS_PSS): "CKM_SHA224_RSA_PKCS_PSS",
        UInt(CKM_SHA256_RSA_PKCS_PSS): "CKM_SHA256_RSA_PKCS_PSS",
        UInt(CKM_SHA384_RSA_PKCS_PSS): "CKM_SHA384_RSA_PKCS_PSS",
        UInt(CKM_SHA512_RSA_PKCS_PSS): "CKM_SHA512_RSA_PKCS_PSS",
        UInt(CKM_ECDSA): "CKM_ECDSA",
        UInt(CKM_ECDSA_SHA1): "CKM_ECDSA_SHA1",
        UInt(CKM_ECDSA_SHA224): "CKM_ECDSA_SHA224",
        UInt(CKM_ECDSA_SHA256): "CKM_ECDSA_SHA256",
        UInt(CKM_ECDSA_SHA384): "CKM_ECDSA_SHA384",
        UInt(CKM_ECDSA_SHA512): "CKM_ECDSA_SHA512",
        UInt(CKM_EDDSA): "CKM_EDDSA",
    ]

    /// The `CKM_` name, or the hex value for mechanisms not named here.
    public static func name(_ mechanism: UInt) -> String {
        names[mechanism] ?? "CKM_0x" + String(mechanism, radix: 16, uppercase: true)
    }
}

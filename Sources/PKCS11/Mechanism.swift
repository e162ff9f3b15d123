internal import CPKCS11

/// A signature mechanism and its parameters.
public enum SignatureMechanism: Sendable, Hashable, CustomStringConvertible {
    /// `CKM_RSA_PKCS` over a DER DigestInfo (or raw input).
    case rsaPKCS1
    /// `CKM_SHA*_RSA_PKCS`: the token hashes the message itself.
    case rsaPKCS1Hashing(HashAlgorithm)
    /// `CKM_RSA_PKCS_PSS` over a digest.
    case rsaPSS(hash: HashAlgorithm, mgf1: HashAlgorithm, saltLength: Int)
    /// `CKM_SHA*_RSA_PKCS_PSS`: the token hashes the message itself.
    case rsaPSSHashing(hash: HashAlgorithm, mgf1: HashAlgorithm, saltLength: Int)
    /// `CKM_RSA_X_509`: the raw RSA private-key operation on an encoded block made in software.
    case rsaRaw
    /// `CKM_ECDSA` over a digest; the token returns raw r||s.
    case ecdsa
    /// `CKM_ECDSA_SHA*`: the token hashes the message itself; raw r||s.
    case ecdsaHashing(HashAlgorithm)
    /// `CKM_EDDSA` over the whole message.
    case eddsa
    /// `CKM_SHA*_HMAC` with a secret key (`SecretKey`): the full-length HMAC of the whole message.
    case hmac(HashAlgorithm)

    /// The raw `CKM_` value.
    public var mechanismType: UInt {
        switch self {
        case .rsaPKCS1: return UInt(CKM_RSA_PKCS)
        case let .rsaPKCS1Hashing(hash): return hash.rsaPKCS1Mechanism
        case .rsaPSS: return UInt(CKM_RSA_PKCS_PSS)
        case let .rsaPSSHashing(hash, _, _): return hash.rsaPSSMechanism
        case .rsaRaw: return UInt(CKM_RSA_X_509)
        case .ecdsa: return UInt(CKM_ECDSA)
        case let .ecdsaHashing(hash): return hash.ecdsaMechanism
        case .eddsa: return UInt(CKM_EDDSA)
        case let .hmac(hash): return hash.hmacMechanism
        }
    }

    /// The mechanism's `CKM_` name, with its parameters.
    public var description: String {
        switch self {
        case .rsaPKCS1: return "CKM_RSA_PKCS"
        case let .rsaPKCS1Hashing(hash): return "CKM_\(hash)_RSA_PKCS"
        case let .rsaPSS(hash, mgf1, salt): return "CKM_RSA_PKCS_PSS(\(hash), MGF1-\(mgf1), salt \(salt))"
        case let .rsaPSSHashing(hash, mgf1, salt): return "CKM_\(hash)_RSA_PKCS_PSS(MGF1-\(mgf1), salt \(salt))"
        case .rsaRaw: return "CKM_RSA_X_509"
        case .ecdsa: return "CKM_ECDSA"
        case let .ecdsaHashing(hash): return "CKM_ECDSA_\(hash)"
        case .eddsa: return "CKM_EDDSA"
        case let .hmac(hash): return hash == .sha1 ? "CKM_SHA_1_HMAC" : "CKM_\(hash)_HMAC"
        }
    }

    func withCMechanism<R>(_ body: (UnsafeMutablePointer<CK_MECHANISM>) throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        switch self {
        case let .rsaPSS(hash, mgf1, saltLength), let .rsaPSSHashing(hash, mgf1, saltLength):
            var parameters = CK_RSA_PKCS_PSS_PARAMS(hashAlg: CK_MECHANISM_TYPE(hash.mechanism),
                                                    mgf: CK_RSA_PKCS_MGF_TYPE(mgf1.mgf), sLen: CK_ULONG(saltLength))
            return try withUnsafeMutablePointer(to: &parameters) { parametersPointer throws(PKCS11Error) in
                var mechanism = CK_MECHANISM(mechanism: CK_MECHANISM_TYPE(mechanismType), pParameter: parametersPointer,
                                             ulParameterLen: CK_ULONG(MemoryLayout<CK_RSA_PKCS_PSS_PARAMS>.size))
                return try body(&mechanism)
            }
        default:
            var mechanism = CK_MECHANISM(mechanism: CK_MECHANISM_TYPE(mechanismType), pParameter: nil, ulParameterLen: 0)
            return try body(&mechanism)
        }
    }
}

/// Raw `CKM_` values of the mechanisms the signing choice looks for.
public enum MechanismType {
    public static let rsaPKCS1 = UInt(CKM_RSA_PKCS)
    public static let rsaPSS = UInt(CKM_RSA_PKCS_PSS)
    public static let rsaRaw = UInt(CKM_RSA_X_509)
    public static let ecdsa = UInt(CKM_ECDSA)
    public static let eddsa = UInt(CKM_EDDSA)
    public static let sha256HMAC = UInt(CKM_SHA256_HMAC)
}

/// Hash algorithms used in signature parameters.
public enum HashAlgorithm: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case sha1 = "SHA1", sha224 = "SHA224", sha256 = "SHA256", sha384 = "SHA384", sha512 = "SHA512"

    public var description: String { rawValue }

    /// The digest length in bytes.
    public var length: Int {
        switch self {
        case .sha1: return 20
        case .sha224: return 28
        case .sha256: return 32
        case .sha384: return 48
        case .sha512: return 64
        }
    }

    var mechanism: UInt {
        switch self {
        case .sha1: return UInt(CKM_SHA_1)
        case .sha224: return UInt(CKM_SHA224)
        case .sha256: return UInt(CKM_SHA256)
        case .sha384: return UInt(CKM_SHA384)
        case .sha512: return UInt(CKM_SHA512)
        }
    }

    /// `CKM_SHA*_RSA_PKCS`
    public var rsaPKCS1Mechanism: UInt {
        switch self {
        case .sha1: return UInt(CKM_SHA1_RSA_PKCS)
        case .sha224: return UInt(CKM_SHA224_RSA_PKCS)
        case .sha256: return UInt(CKM_SHA256_RSA_PKCS)
        case .sha384: return UInt(CKM_SHA384_RSA_PKCS)
        case .sha512: return UInt(CKM_SHA512_RSA_PKCS)
        }
    }

    /// `CKM_SHA*_RSA_PKCS_PSS`
    public var rsaPSSMechanism: UInt {
        switch self {
        case .sha1: return UInt(CKM_SHA1_RSA_PKCS_PSS)
        case .sha224: return UInt(CKM_SHA224_RSA_PKCS_PSS)
        case .sha256: return UInt(CKM_SHA256_RSA_PKCS_PSS)
        case .sha384: return UInt(CKM_SHA384_RSA_PKCS_PSS)
        case .sha512: return UInt(CKM_SHA512_RSA_PKCS_PSS)
        }
    }

    /// `CKM_ECDSA_SHA*`
    public var ecdsaMechanism: UInt {
        switch self {
        case .sha1: return UInt(CKM_ECDSA_SHA1)
        case .sha224: return UInt(CKM_ECDSA_SHA224)
        case .sha256: return UInt(CKM_ECDSA_SHA256)
        case .sha384: return UInt(CKM_ECDSA_SHA384)
        case .sha512: return UInt(CKM_ECDSA_SHA512)
        }
    }

    /// `CKM_SHA*_HMAC`
    public var hmacMechanism: UInt {
        switch self {
        case .sha1: return UInt(CKM_SHA_1_HMAC)
        case .sha224: return UInt(CKM_SHA224_HMAC)
        case .sha256: return UInt(CKM_SHA256_HMAC)
        case .sha384: return UInt(CKM_SHA384_HMAC)
        case .sha512: return UInt(CKM_SHA512_HMAC)
        }
    }

    var mgf: UInt {
        switch self {
        case .sha1: return UInt(CKG_MGF1_SHA1)
        case .sha224: return UInt(CKG_MGF1_SHA224)
        case .sha256: return UInt(CKG_MGF1_SHA256)
        case .sha384: return UInt(CKG_MGF1_SHA384)
        case .sha512: return UInt(CKG_MGF1_SHA512)
        }
    }

    /// The DER prefix of a DigestInfo for this hash (RFC 8017, section 9.2, note 1).
    public var digestInfoPrefix: [UInt8] {
        switch self {
        case .sha1: return [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14]
        case .sha224: return [0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c]
        case .sha256: return [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20]
        case .sha384: return [0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30]
        case .sha512: return [0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40]
        }
    }

    /// Looks up a hash by an OpenSSL digest name such as "SHA256", "SHA2-256" or "sha-256".
    public init?(openSSLName name: String) {
        // Byte by byte, without Foundation: the provider calls this in every digest-sign init,
        // where uppercased() and replacingOccurrences cost ~19,000 instructions per signature
        // (callgrind, `keybridge bench --profile-signatures`).
        var bytes: [UInt8] = []
        bytes.reserveCapacity(name.utf8.count)
        for byte in name.utf8 where byte != UInt8(ascii: "-") && byte != UInt8(ascii: "_") {
            bytes.append(byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 0x20 : byte)
        }
        switch String(decoding: bytes, as: UTF8.self) {
        case "SHA1": self = .sha1
        case "SHA224", "SHA2224": self = .sha224
        case "SHA256", "SHA2256": self = .sha256
        case "SHA384", "SHA2384": self = .sha384
        case "SHA512", "SHA2512": self = .sha512
        default: return nil
        }
    }
}


internal import COpenSSL
import Foundation
import PKCS11

/// The provider's key data: the public half as an ordinary OpenSSL key (from the default
/// provider), and for token keys the `PrivateKey` that signs on the token.
///
/// Public-only objects exist because OpenSSL imports certificate keys into this provider to
/// compare them with token keys.
final class KeyObject: @unchecked Sendable {
    // Immutable after init; EVP_PKEY is reference counted and safe for concurrent reads.
    let algorithm: KeyAlgorithm
    let publicKey: OpaquePointer
    let tokenKey: PrivateKey?

    init(algorithm: KeyAlgorithm, publicKey: OpaquePointer, tokenKey: PrivateKey?) {
        self.algorithm = algorithm
        self.publicKey = publicKey
        self.tokenKey = tokenKey
    }

    deinit { EVP_PKEY_free(publicKey) }

    /// Builds the key object for a token key from its public attributes (or its certificate).
    convenience init(tokenKey: PrivateKey) throws(OpenSSLError) {
        let publicKey: OpaquePointer
        let algorithm: KeyAlgorithm
        switch tokenKey.publicKey {
        case let .rsa(modulus, exponent):
            algorithm = .rsa
            publicKey = try PublicKeyBuilder.rsa(modulus: modulus, exponent: exponent)
        case let .ec(parameters, point):
            algorithm = .ec
            if let point {
                publicKey = try PublicKeyBuilder.ec(parameters: parameters, point: point)
            } else if let certificate = tokenKey.certificateDER {
                publicKey = try PublicKeyBuilder.fromCertificate(certificate)
            } else {
                throw OpenSSLError(function: "key lookup",
                                   reason: "the EC key \(tokenKey.summary) has no public key object and no certificate with the same id on the token; store one of them with the key's CKA_ID")
            }
        case let .edwards(parameters, point):
            algorithm = .ed25519
            guard PublicKeyBuilder.isEd25519(parameters) else {
                throw OpenSSLError(function: "key lookup", reason: "the Edwards-curve key \(tokenKey.summary) is not Ed25519; only Ed25519 is supported")
            }
            if let point {
                publicKey = try PublicKeyBuilder.ed25519(point: point)
            } else if let certificate = tokenKey.certificateDER {
                publicKey = try PublicKeyBuilder.fromCertificate(certificate)
            } else {
                throw OpenSSLError(function: "key lookup",
                                   reason: "the Ed25519 key \(tokenKey.summary) has no public key object and no certificate with the same id on the token; store one of them with the key's CKA_ID")
            }
        }
        self.init(algorithm: algorithm, publicKey: publicKey, tokenKey: tokenKey)
    }

    var isPrivate: Bool { tokenKey != nil }

    var maxSignatureSize: Int { Int(EVP_PKEY_get_size(publicKey)) }
    var bits: Int { Int(EVP_PKEY_get_bits(publicKey)) }
}

/// The key families the provider serves.
enum KeyAlgorithm: String, Sendable {
    case rsa = "RSA"
    case ec = "EC"
    case ed25519 = "ED25519"

    /// The signature algorithm name OpenSSL fetches for this key type.
    var signatureName: String {
        switch self {
        case .rsa: return "RSA"
        case .ec: return "ECDSA"
        case .ed25519: return "ED25519"
        }
    }
}

/// Public key and its domain parameters: what `EVP_PKEY_PUBLIC_KEY` means in C.
let publicKeySelection = Int32(OSSL_KEYMGMT_SELECT_PUBLIC_KEY | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS | OSSL_KEYMGMT_SELECT_OTHER_PARAMETERS)

/// Makes default-provider public keys, so comparisons, exports and verification use OpenSSL's
/// own code rather than ours.
enum PublicKeyBuilder {
    static let defaultProperties = "provider=default"

    static func rsa(modulus: [UInt8], exponent: [UInt8]) throws(OpenSSLError) -> OpaquePointer {
        guard let builder = OSSL_PARAM_BLD_new() else { throw OpenSSLError.drain(function: "OSSL_PARAM_BLD_new", reason: "out of memory") }
        defer { OSSL_PARAM_BLD_free(builder) }
        let n = BN_bin2bn(modulus, Int32(modulus.count), nil)
        let e = BN_bin2bn(exponent, Int32(exponent.count), nil)
        defer { BN_free(n); BN_free(e) }
        guard OSSL_PARAM_BLD_push_BN(builder, StaticCString.get(OSSL_PKEY_PARAM_RSA_N), n) == 1,
              OSSL_PARAM_BLD_push_BN(builder, StaticCString.get(OSSL_PKEY_PARAM_RSA_E), e) == 1,
              let params = OSSL_PARAM_BLD_to_param(builder) else {
            throw OpenSSLError.drain(function: "OSSL_PARAM_BLD_to_param", reason: "cannot describe the RSA public key")
        }
        defer { OSSL_PARAM_free(params) }
        return try fromData(type: "RSA", params: params)
    }

    static func ec(parameters: [UInt8], point: [UInt8]) throws(OpenSSLError) -> OpaquePointer {
        let groupName = try curveName(parameters)
        let rawPoint = unwrapOctetString(point)
        guard let builder = OSSL_PARAM_BLD_new() else { throw OpenSSLError.drain(function: "OSSL_PARAM_BLD_new", reason: "out of memory") }
        defer { OSSL_PARAM_BLD_free(builder) }
        // The builder keeps pointers until to_param, so everything happens inside this scope.
        let params: UnsafeMutablePointer<OSSL_PARAM>? = rawPoint.withUnsafeBytes { pointBytes in
            guard OSSL_PARAM_BLD_push_utf8_string(builder, StaticCString.get(OSSL_PKEY_PARAM_GROUP_NAME), StaticCString.get(groupName), 0) == 1,
                  OSSL_PARAM_BLD_push_octet_string(builder, StaticCString.get(OSSL_PKEY_PARAM_PUB_KEY), pointBytes.baseAddress, pointBytes.count) == 1
            else { return nil }
            return OSSL_PARAM_BLD_to_param(builder)
        }
        guard let params else {
            throw OpenSSLError.drain(function: "OSSL_PARAM_BLD_to_param", reason: "cannot describe the EC public key")
        }
        defer { OSSL_PARAM_free(params) }
        return try fromData(type: "EC", params: params)
    }

    /// `CKA_EC_PARAMS` of an Ed25519 key: the OID 1.3.101.112, or the PrintableString
    /// "edwards25519" that PKCS#11 3.0 also allows.
    static func isEd25519(_ parameters: [UInt8]) -> Bool {
        let oid: [UInt8] = [0x06, 0x03, 0x2B, 0x65, 0x70]
        let name: [UInt8] = [0x13, 0x0C] + Array("edwards25519".utf8)
        return parameters == oid || parameters == name
    }

    static func ed25519(point: [UInt8]) throws(OpenSSLError) -> OpaquePointer {
        let raw = unwrapOctetString(point)
        guard raw.count == 32,
              let key = EVP_PKEY_new_raw_public_key_ex(nil, "ED25519", defaultProperties, raw, raw.count) else {
            throw OpenSSLError.drain(function: "EVP_PKEY_new_raw_public_key_ex", reason: "the Ed25519 public key from the token is not 32 bytes")
        }
        return key
    }

    static func fromCertificate(_ der: [UInt8]) throws(OpenSSLError) -> OpaquePointer {
        let certificate: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let certificate else { throw OpenSSLError.drain(function: "d2i_X509", reason: "the certificate on the token is not valid DER") }
        defer { X509_free(certificate) }
        guard let key = X509_get_pubkey(certificate) else {
            throw OpenSSLError.drain(function: "X509_get_pubkey", reason: "cannot read the certificate's public key")
        }
        return key
    }

    /// Imports public parameters handed over by OpenSSL. Refuses private components: a key
    /// that carries them belongs to another provider, which must do its own signing.
    static func fromImport(type: KeyAlgorithm, params: UnsafePointer<OSSL_PARAM>) -> OpaquePointer? {
        let privateNames = [OSSL_PKEY_PARAM_RSA_D, "rsa-factor1", OSSL_PKEY_PARAM_PRIV_KEY]
        for name in privateNames where OSSL_PARAM_locate_const(params, name) != nil { return nil }
        return try? fromData(type: type.rawValue, params: params)
    }

    private static func fromData(type: String, params: UnsafePointer<OSSL_PARAM>) throws(OpenSSLError) -> OpaquePointer {
        guard let context = EVP_PKEY_CTX_new_from_name(nil, type, defaultProperties) else {
            throw OpenSSLError.drain(function: "EVP_PKEY_CTX_new_from_name", reason: "OpenSSL's default provider has no \(type) key management")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_fromdata_init(context) == 1,
              EVP_PKEY_fromdata(context, &key, publicKeySelection, UnsafeMutablePointer(mutating: params)) == 1,
              let key else {
            throw OpenSSLError.drain(function: "EVP_PKEY_fromdata", reason: "the \(type) public key from the token is not valid")
        }
        return key
    }

    /// The OpenSSL group name for DER `ECParameters` holding a named-curve OID.
    static func curveName(_ parameters: [UInt8]) throws(OpenSSLError) -> String {
        let object: OpaquePointer? = parameters.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_ASN1_OBJECT(nil, &cursor, buffer.count)
        }
        guard let object else {
            throw OpenSSLError.drain(function: "d2i_ASN1_OBJECT", reason: "the key's CKA_EC_PARAMS is not a named curve; only named curves are supported")
        }
        defer { ASN1_OBJECT_free(object) }
        let nid = OBJ_obj2nid(object)
        guard nid != NID_undef, let name = OBJ_nid2sn(nid) else {
            throw OpenSSLError(function: "OBJ_obj2nid", reason: "the key's curve is unknown to OpenSSL")
        }
        return String(cString: name)
    }

    /// CKA_EC_POINT is a DER OCTET STRING by the standard; some tokens return the bare point.
    static func unwrapOctetString(_ bytes: [UInt8]) -> [UInt8] {
        let decoded: [UInt8]? = bytes.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            guard let octets = d2i_ASN1_OCTET_STRING(nil, &cursor, buffer.count) else { return nil }
            defer { ASN1_OCTET_STRING_free(octets) }
            // Only a string that spans the whole input is a wrapper, not a coincidence.
            guard cursor == buffer.baseAddress! + buffer.count else { return nil }
            return Array(UnsafeBufferPointer(start: ASN1_STRING_get0_data(octets), count: Int(ASN1_STRING_length(octets))))
        }
        ERR_clear_error()
        return decoded ?? bytes
    }
}

internal import COpenSSL
import Foundation
import PKCS11

/// A signature scheme for `ProviderKey.sign`.
public enum SignatureScheme: Sendable, Hashable, CustomStringConvertible {
    /// RSASSA-PKCS1-v1_5 with the given hash.
    case rsaPKCS1(HashAlgorithm)
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash (what TLS 1.3 uses).
    case rsaPSS(HashAlgorithm)
    /// ECDSA with the given hash; DER output.
    case ecdsa(HashAlgorithm)
    /// Ed25519 over the whole message.
    case ed25519

    public var description: String {
        switch self {
        case let .rsaPKCS1(hash): return "RSA-PKCS1-\(hash)"
        case let .rsaPSS(hash): return "RSA-PSS-\(hash)"
        case let .ecdsa(hash): return "ECDSA-\(hash)"
        case .ed25519: return "Ed25519"
        }
    }

    var hash: HashAlgorithm? {
        switch self {
        case let .rsaPKCS1(hash), let .rsaPSS(hash), let .ecdsa(hash): return hash
        case .ed25519: return nil
        }
    }
}

/// A token key opened through the provider's `pkcs11` store: an OpenSSL key whose private
/// operations run on the token. Use it to sign, or hand it to TLS.
public final class ProviderKey: @unchecked Sendable {
    // The EVP_PKEY is reference counted, immutable here and safe to use from several threads.
    package let pkey: OpaquePointer
    /// "RSA" or "EC".
    public let algorithm: String
    /// The TLS signature algorithms (OpenSSL list names) the token can make with this key.
    public let tlsSignatureAlgorithms: [String]
    /// The mechanisms the key may use on its token, as `CKM_` names, for messages.
    public let mechanismSummary: String

    /// Opens the key a `pkcs11:` URI names. Loads the provider if needed.
    public init(uri: String) throws(OpenSSLError) {
        pkey = try KeyBridgeProvider.loadPrivateKey(uri: uri)
        let family: KeyAlgorithm = EVP_PKEY_is_a(pkey, "RSA") == 1 ? .rsa : EVP_PKEY_is_a(pkey, "ED25519") == 1 ? .ed25519 : .ec
        algorithm = family.rawValue
        // The store has just resolved this URI, so this is a cache hit, not a second search.
        do {
            let tokenKey = try PrivateKey.resolve(PKCS11URI(parsing: uri), allowPrompt: false)
            let usable = try tokenKey.usableMechanisms()
            tlsSignatureAlgorithms = MechanismChoice.tlsSignatureAlgorithms(algorithm: family, usable: usable)
            mechanismSummary = MechanismChoice.describe(usable)
        } catch {
            EVP_PKEY_free(pkey)
            throw OpenSSLError(function: "mechanism list", reason: "\(error)")
        }
    }

    /// Whether the key can sign a TLS 1.3 CertificateVerify (RSA keys need RSA-PSS there).
    public var supportsTLS13: Bool {
        tlsSignatureAlgorithms.contains { $0.hasPrefix("rsa_pss") || $0.hasPrefix("ECDSA") || $0 == "ed25519" }
    }

    deinit { EVP_PKEY_free(pkey) }

    /// Key size in bits.
    public var bits: Int { Int(EVP_PKEY_get_bits(pkey)) }

    /// The public key as PEM SubjectPublicKeyInfo.
    public func publicKeyPEM() throws(OpenSSLError) -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw OpenSSLError.drain(function: "BIO_new", reason: "out of memory") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PUBKEY(bio, pkey) == 1 else {
            throw OpenSSLError.drain(function: "PEM_write_bio_PUBKEY", reason: "cannot export the public key")
        }
        return String(decoding: BIOReader.contents(of: bio), as: UTF8.self)
    }

    /// Signs `message` (hashing it first) through the provider, so the private operation runs on the token.
    public func sign(_ message: [UInt8], scheme: SignatureScheme) throws(OpenSSLError) -> [UInt8] {
        let needed: String
        switch scheme {
        case .rsaPKCS1, .rsaPSS: needed = "RSA"
        case .ecdsa: needed = "EC"
        case .ed25519: needed = "ED25519"
        }
        guard needed == algorithm else {
            throw OpenSSLError(function: "sign", reason: "the scheme \(scheme) needs an \(needed) key, but this key is \(algorithm)")
        }
        guard let context = EVP_MD_CTX_new() else { throw OpenSSLError.drain(function: "EVP_MD_CTX_new", reason: "out of memory") }
        defer { EVP_MD_CTX_free(context) }
        ERR_clear_error()
        _ = ProviderDiagnostics.takeLastFailure()
        var keyContext: OpaquePointer?
        guard EVP_DigestSignInit_ex(context, &keyContext, scheme.hash?.rawValue, nil, nil, pkey, nil) == 1, let keyContext else {
            throw OpenSSLError.afterFailedCall("EVP_DigestSignInit_ex", fallback: "cannot start a \(scheme) signature with this key")
        }
        if case .rsaPSS = scheme {
            guard EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) == 1,
                  EVP_PKEY_CTX_set_rsa_pss_saltlen(keyContext, RSA_PSS_SALTLEN_DIGEST) == 1 else {
                throw OpenSSLError.afterFailedCall("EVP_PKEY_CTX_set_rsa_padding", fallback: "cannot select RSA-PSS")
            }
        }
        var length = 0
        guard EVP_DigestSign(context, nil, &length, message, message.count) == 1 else {
            throw OpenSSLError.afterFailedCall("EVP_DigestSign", fallback: "cannot size the signature")
        }
        var signature = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(context, &signature, &length, message, message.count) == 1 else {
            throw OpenSSLError.afterFailedCall("EVP_DigestSign", fallback: "the \(scheme) signature failed")
        }
        return Array(signature.prefix(length))
    }
}

enum BIOReader {
    static func contents(of bio: OpaquePointer) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = BIO_read(bio, &chunk, Int32(chunk.count))
            if count <= 0 { break }
            bytes += chunk.prefix(Int(count))
        }
        return bytes
    }
}

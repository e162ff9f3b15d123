internal import COpenSSL
import Foundation
import KeyBridgeProvider

/// The parts of an HTTP request that signatures cover.
public struct HTTPRequestParts: Sendable {
    /// Upper-case method, e.g. "POST".
    public var method: String
    /// The full URL, e.g. "https://api.bank.example:8443/v1/payments?limit=10".
    public var url: URL
    /// Header lines in order; names as given (comparisons ignore case).
    public var headers: [(name: String, value: String)]
    public var body: Data

    public init(method: String, url: URL, headers: [(name: String, value: String)] = [], body: Data = Data()) {
        self.method = method.uppercased()
        self.url = url
        self.headers = headers
        self.body = body
    }

    /// The first value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// Path and query as sent on the request line ("/v1/payments?limit=10"); "/" when empty.
    public var target: String {
        let components = URLComponents(url: url, resolvingAgainstBaseURL: false)
        let path = components?.percentEncodedPath ?? url.path
        let query = components?.percentEncodedQuery.map { "?" + $0 } ?? ""
        return (path.isEmpty ? "/" : path) + query
    }
}

/// A key that signs requests. Token keys opened through the KeyBridge provider
/// (`ProviderKey`) are the ones meant here: the private key never leaves the token.
public protocol RequestSigningKey: Sendable {
    /// "RSA", "EC" or "ED25519".
    var algorithm: String { get }
    /// Signs `message` (hashing it first where the scheme says so).
    func sign(_ message: [UInt8], scheme: SignatureScheme) throws -> [UInt8]
}

extension ProviderKey: RequestSigningKey {}

/// An error from request signing or verification, with a sentence naming the cause and the fix.
public struct OpenBankingError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Hashes used by the digest headers, computed by OpenSSL.
public enum MessageDigest {
    public static func sha256(_ data: Data) -> [UInt8] { digest(data, "SHA256") }
    public static func sha512(_ data: Data) -> [UInt8] { digest(data, "SHA512") }

    static func digest(_ data: Data, _ name: String) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let md = EVP_get_digestbyname(name)
        let ok = data.withUnsafeBytes { EVP_Digest($0.baseAddress, $0.count, &output, &length, md, nil) }
        precondition(ok == 1, "OpenSSL could not compute \(name)")
        return Array(output.prefix(Int(length)))
    }
}

/// Checks signatures with a public key only, on OpenSSL's default provider. Used by the
/// verifiers of every signature format, by the broker tests and by the mock bank.
public final class PublicKeyVerifier: @unchecked Sendable {
    // Owns one EVP_PKEY, immutable after init; EVP verification is safe from several threads.
    private let key: OpaquePointer
    /// "RSA", "EC" or "ED25519".
    public let algorithm: String

    /// From a PEM certificate or PEM public key.
    public init(pem: String) throws(OpenBankingError) {
        let bytes = Array(pem.utf8)
        // A memory BIO reads the caller's buffer in place, so it lives only inside this scope.
        let loaded: OpaquePointer? = bytes.withUnsafeBufferPointer { buffer in
            func reader() -> OpaquePointer? { BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) }
            if let bio = reader() {
                defer { BIO_free(bio) }
                if let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                    defer { X509_free(certificate) }
                    return X509_get_pubkey(certificate)
                }
            }
            ERR_clear_error()
            guard let bio = reader() else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PUBKEY(bio, nil, nil, nil)
        }
        ERR_clear_error()
        guard let loaded else { throw OpenBankingError("the PEM text holds neither a certificate nor a public key") }
        key = loaded
        algorithm = PublicKeyVerifier.family(of: loaded)
    }

    /// From a DER certificate (as carried in `TPP-Signature-Certificate` or `x5c`).
    public init(certificateDER der: [UInt8]) throws(OpenBankingError) {
        let certificate: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let certificate else {
            ERR_clear_error()
            throw OpenBankingError("the certificate is not valid DER")
        }
        defer { X509_free(certificate) }
        guard let key = X509_get_pubkey(certificate) else { throw OpenBankingError("the certificate's public key cannot be read") }
        self.key = key
        algorithm = PublicKeyVerifier.family(of: key)
    }

    deinit { EVP_PKEY_free(key) }

    private static func family(of key: OpaquePointer) -> String {
        if EVP_PKEY_is_a(key, "RSA") == 1 { return "RSA" }
        if EVP_PKEY_is_a(key, "ED25519") == 1 { return "ED25519" }
        return "EC"
    }

    /// Whether `signature` over `message` verifies under `scheme`. ECDSA signatures are DER.
    public func verify(_ signature: [UInt8], over message: [UInt8], scheme: SignatureScheme) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer {
            EVP_MD_CTX_free(context)
            ERR_clear_error()
        }
        var keyContext: OpaquePointer?
        let digest: String?
        switch scheme {
        case let .rsaPKCS1(hash), let .rsaPSS(hash), let .ecdsa(hash): digest = hash.rawValue
        case .ed25519: digest = nil
        }
        guard EVP_DigestVerifyInit_ex(context, &keyContext, digest, nil, "provider=default", key, nil) == 1 else { return false }
        if case let .rsaPSS(hash) = scheme {
            guard EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) == 1,
                  EVP_PKEY_CTX_set_rsa_pss_saltlen(keyContext, Int32(hash.length)) == 1 else { return false }
        }
        return EVP_DigestVerify(context, signature, signature.count, message, message.count) == 1
    }
}

/// ECDSA signature encodings: DER (OpenSSL, X.509) and the fixed-width r||s that JWS and
/// RFC 9421 use.
public enum ECDSASignatureEncoding {
    /// DER ECDSA-Sig-Value to r||s, each `width` bytes (32 for P-256).
    public static func rawFromDER(_ der: [UInt8], width: Int) throws(OpenBankingError) -> [UInt8] {
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_ECDSA_SIG(nil, &cursor, buffer.count)
        }
        guard let parsed else { throw OpenBankingError("not a DER ECDSA signature") }
        defer { ECDSA_SIG_free(parsed) }
        var output = [UInt8](repeating: 0, count: 2 * width)
        guard BN_bn2binpad(ECDSA_SIG_get0_r(parsed), &output, Int32(width)) == Int32(width) else {
            throw OpenBankingError("r does not fit \(width) bytes")
        }
        let wrote = output.withUnsafeMutableBufferPointer { buffer in
            BN_bn2binpad(ECDSA_SIG_get0_s(parsed), buffer.baseAddress! + width, Int32(width))
        }
        guard wrote == Int32(width) else { throw OpenBankingError("s does not fit \(width) bytes") }
        return output
    }

    /// r||s to DER ECDSA-Sig-Value.
    public static func derFromRaw(_ raw: [UInt8]) throws(OpenBankingError) -> [UInt8] {
        guard raw.count % 2 == 0, !raw.isEmpty, let signature = ECDSA_SIG_new() else { throw OpenBankingError("r||s must be two equal halves") }
        defer { ECDSA_SIG_free(signature) }
        let half = raw.count / 2
        let r = BN_bin2bn(raw, Int32(half), nil)
        let s = Array(raw[half...]).withUnsafeBufferPointer { BN_bin2bn($0.baseAddress, Int32(half), nil) }
        guard ECDSA_SIG_set0(signature, r, s) == 1 else {
            BN_free(r)
            BN_free(s)
            throw OpenBankingError("cannot build the DER signature")
        }
        var out: UnsafeMutablePointer<UInt8>?
        let length = i2d_ECDSA_SIG(signature, &out)
        guard length > 0, let out else { throw OpenBankingError("cannot encode the DER signature") }
        defer { CRYPTO_free(out, nil, 0) }
        return Array(UnsafeBufferPointer(start: out, count: Int(length)))
    }
}

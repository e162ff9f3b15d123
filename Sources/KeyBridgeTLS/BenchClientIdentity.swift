internal import COpenSSL
internal import CKeyBridgeShims
import Foundation
import KeyBridgeProvider

/// For `keybridge bench` only: a client identity loaded exactly as `HTTPClient` loads it (token
/// key through the provider, PEM file or OpenSSL engine), which the benchmark installs on an
/// `SSL_CTX` of its own. libcurl keeps connections alive, so timing full handshakes needs a
/// plain OpenSSL client; loading and installing the identity the same way keeps the comparison
/// with `HTTPClient` honest.
package final class BenchClientIdentity: @unchecked Sendable {
    // Immutable after init; the wrapped identity is itself immutable.
    private let identity: ClientIdentity

    package init(chain: CertificateChainSource, key: KeyReference) throws(KeyBridgeError) {
        do {
            try KeyBridgeProvider.loadInProcess()
        } catch {
            throw KeyBridgeError(.key, "cannot start the KeyBridge OpenSSL provider: \(error)")
        }
        identity = try ClientIdentity(chain: chain, key: key)
    }

    /// The `EVP_PKEY` (borrowed: valid while this identity lives), for signature timing.
    package var privateKey: OpaquePointer { identity.privateKey }

    /// Where the key is, as `-v` shows it.
    package var keyLocation: String { identity.keyLocation }

    /// Installs chain, key and (for token keys) the offered signature schemes on an `SSL_CTX`,
    /// with the same calls `HTTPClient` makes in its `CURLOPT_SSL_CTX_FUNCTION`.
    package func install(on sslContext: OpaquePointer) throws(KeyBridgeError) {
        guard SSL_CTX_use_certificate(sslContext, identity.leaf) == 1 else {
            throw KeyBridgeError(.certificate, "SSL_CTX_use_certificate failed: \(OpenSSLError.drainQueue().joined(separator: "; "))")
        }
        if let algorithms = identity.signatureAlgorithms,
           CKeyBridgeShims_SSL_CTX_set1_client_sigalgs_list(sslContext, algorithms.joined(separator: ":")) != 1 {
            throw KeyBridgeError(.key, "OpenSSL refused the signature algorithm list \(algorithms.joined(separator: ":"))")
        }
        for certificate in identity.intermediates {
            guard CKeyBridgeShims_SSL_CTX_add1_chain_cert(sslContext, certificate) == 1 else {
                throw KeyBridgeError(.certificate, "SSL_CTX_add1_chain_cert failed: \(OpenSSLError.drainQueue().joined(separator: "; "))")
            }
        }
        guard SSL_CTX_use_PrivateKey(sslContext, identity.privateKey) == 1 else {
            throw KeyBridgeError(.key, "SSL_CTX_use_PrivateKey failed: \(OpenSSLError.drainQueue().joined(separator: "; "))")
        }
    }
}

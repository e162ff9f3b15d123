internal import COpenSSL
internal import CKeyBridgeShims
import Foundation
import KeyBridgeProvider
import PKCS11

/// The client certificate chain and its private key, loaded once and checked to belong together.
final class ClientIdentity: @unchecked Sendable {
    // Immutable after init; OpenSSL objects are only read (and up-referenced) afterwards.
    let leaf: OpaquePointer
    let intermediates: [OpaquePointer]
    let privateKey: OpaquePointer
    /// Kept so the provider key (and its token handle) lives as long as the identity.
    private let providerKey: ProviderKey?
    /// For `-v`: where the key is, e.g. "token 'keybridge', object 'client-rsa', id 01".
    let keyLocation: String
    let onToken: Bool
    /// For token keys: the TLS signature algorithms the token can make, to offer only those.
    let signatureAlgorithms: [String]?
    /// For token keys: the signing mechanisms the token offers for the key, for messages.
    let tokenMechanisms: String?
    /// An RSA token key that can make only PSS signatures proves itself with PSS.
    private var testNeedsPSS: Bool {
        guard let algorithms = signatureAlgorithms else { return false }
        return algorithms.contains { $0.hasPrefix("rsa_pss") } && !algorithms.contains { $0.hasPrefix("RSA+") }
    }

    /// RSA token keys without any RSA-PSS path cannot sign in TLS 1.3.
    var supportsTLS13: Bool {
        signatureAlgorithms?.contains { $0.hasPrefix("rsa_pss") || $0.hasPrefix("ECDSA") || $0 == "ed25519" } ?? true
    }

    init(chain: CertificateChainSource, key named: KeyReference) throws(KeyBridgeError) {
        let certificates = try ClientIdentity.readChain(chain)
        leaf = certificates[0]
        intermediates = Array(certificates.dropFirst())
        let key: KeyReference
        do {
            key = try ClientIdentity.keyFoundByCertificate(named, leaf: certificates[0])
        } catch {
            ClientIdentity.free(certificates)
            throw error
        }
        switch key {
        case let .pkcs11(text):
            let uri: PKCS11URI
            do {
                uri = try PKCS11URI(parsing: text)
            } catch {
                ClientIdentity.free(certificates)
                throw KeyBridgeError(.usage, "the key URI is malformed: \(error.reason)")
            }
            do {
                let tokenKey = try PrivateKey.resolve(uri)
                keyLocation = tokenKey.summary
            } catch {
                ClientIdentity.free(certificates)
                throw KeyBridgeError(.key, error.description)
            }
            do {
                let opened = try ProviderKey(uri: text)
                providerKey = opened
                signatureAlgorithms = opened.tlsSignatureAlgorithms
                tokenMechanisms = opened.mechanismSummary
                privateKey = opened.pkey
                EVP_PKEY_up_ref(privateKey)
            } catch {
                ClientIdentity.free(certificates)
                throw KeyBridgeError(.key, "cannot open the token key through the provider: \(error)")
            }
            onToken = true
        case let .pemFile(path):
            providerKey = nil
            signatureAlgorithms = nil
            tokenMechanisms = nil
            do {
                privateKey = try ClientIdentity.readPEMKey(path)
            } catch {
                ClientIdentity.free(certificates)
                throw error
            }
            keyLocation = "PEM file \(KeyReference.redacted(path))"
            onToken = false
        case let .engine(id, identifier):
            // The engine talks to the token itself, so KeyBridge neither restricts the signature
            // schemes nor reports token mechanisms; the key is checked against the certificate below.
            providerKey = nil
            signatureAlgorithms = nil
            tokenMechanisms = nil
            do {
                privateKey = try EngineKey.load(engineID: id, identifier: identifier)
            } catch {
                ClientIdentity.free(certificates)
                throw error
            }
            keyLocation = "via OpenSSL engine '\(id)': \(EngineKey.shown(identifier))"
            onToken = false
        }
        // Every property is set by now, so a throw here runs deinit, which frees them.
        if signatureAlgorithms?.isEmpty == true {
            throw KeyBridgeError(.key, "the token offers no signing mechanism usable for TLS with the key \(key) (it has: \(tokenMechanisms ?? "none")); TLS needs CKM_RSA_PKCS, CKM_RSA_PKCS_PSS or CKM_RSA_X_509 for RSA, CKM_ECDSA for EC")
        }
        try confirmKeyMatchesCertificate(chain: chain, key: key)
    }

    deinit {
        ClientIdentity.free([leaf] + intermediates)
        EVP_PKEY_free(privateKey)
    }

    private static func free(_ certificates: [OpaquePointer]) {
        for certificate in certificates { X509_free(certificate) }
    }

    var leafSubject: String { X509Text.subject(leaf) }

    /// Compares public keys, then proves possession with a test signature checked against the
    /// certificate's public key by OpenSSL's default provider.
    private func confirmKeyMatchesCertificate(chain: CertificateChainSource, key: KeyReference) throws(KeyBridgeError) {
        guard let certificateKey = X509_get0_pubkey(leaf) else {
            throw KeyBridgeError(.certificate, "cannot read the public key of the certificate in \(chain)")
        }
        let mismatch = "the certificate '\(leafSubject)' in \(chain) does not belong to the key \(key)"
        ERR_clear_error()
        guard EVP_PKEY_eq(certificateKey, privateKey) == 1 else {
            ERR_clear_error()
            throw KeyBridgeError(.certificate, "\(mismatch): their public keys differ. Use the certificate issued for this key, or the key it was issued for")
        }
        KeyBridgeLog.debug("checking that the key belongs to the certificate with a test signature")
        var challenge = [UInt8](repeating: 0, count: 32)
        guard RAND_bytes(&challenge, Int32(challenge.count)) == 1 else {
            throw KeyBridgeError(.key, "cannot make a random test challenge")
        }
        let signature: [UInt8]
        do {
            signature = try TestSignature.sign(challenge, with: privateKey, usePSS: testNeedsPSS)
        } catch {
            throw KeyBridgeError(.key, "the key \(key) cannot sign a test challenge: \(error)")
        }
        guard TestSignature.verify(signature, of: challenge, with: certificateKey, usePSS: testNeedsPSS) else {
            throw KeyBridgeError(.certificate, "\(mismatch): a test signature by the key does not verify with the certificate")
        }
    }

    /// A token URI that names no object asks for the key whose public key is the certificate's.
    private static func keyFoundByCertificate(_ key: KeyReference, leaf: OpaquePointer) throws(KeyBridgeError) -> KeyReference {
        guard case let .pkcs11(text) = key, let uri = try? PKCS11URI(parsing: text), uri.object == nil, uri.id == nil else { return key }
        var derPointer: UnsafeMutablePointer<UInt8>?
        let length = i2d_X509(leaf, &derPointer)
        guard length > 0, let derPointer else { throw KeyBridgeError(.certificate, "cannot encode the client certificate") }
        let der = Array(UnsafeBufferPointer(start: derPointer, count: Int(length)))
        CRYPTO_free(derPointer, nil, 0)
        do {
            let found = try TokenCertificates.privateKeyURI(forCertificate: der, tokenURI: text)
            KeyBridgeLog.debug("found the key for the certificate: \(found.prefix { $0 != "?" })")
            return .pkcs11(found)
        } catch {
            throw KeyBridgeError(error.function == "key lookup" ? .certificate : .key, error.reason)
        }
    }

    private static func readChain(_ source: CertificateChainSource) throws(KeyBridgeError) -> [OpaquePointer] {
        switch source {
        case let .pkcs11(text):
            let ders: [[UInt8]]
            do {
                ders = try TokenCertificates.chain(uri: text)
            } catch {
                throw KeyBridgeError(.certificate, "cannot read the certificate chain from the token: \(error.reason)")
            }
            var certificates: [OpaquePointer] = []
            for der in ders {
                let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
                    var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
                    return d2i_X509(nil, &cursor, buffer.count)
                }
                guard let parsed else {
                    free(certificates)
                    throw KeyBridgeError(.certificate, "a certificate on the token is not valid DER")
                }
                certificates.append(parsed)
            }
            return certificates
        case let .pemFile(path):
            guard let bio = BIO_new_file(path, "r") else {
                ERR_clear_error()
                throw KeyBridgeError(.file, "cannot read the certificate file \(KeyReference.redacted(path)); check the certificate chain's path (keybridge request: --cert; broker.json: the bank's cert)")
            }
            defer { BIO_free(bio) }
            var certificates: [OpaquePointer] = []
            while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                certificates.append(certificate)
            }
            ERR_clear_error()
            guard !certificates.isEmpty else {
                throw KeyBridgeError(.certificate, "\(KeyReference.redacted(path)) holds no PEM certificate; --cert needs the leaf certificate followed by its intermediates (in broker.json: the bank's cert)")
            }
            return certificates
        }
    }

    private static func readPEMKey(_ path: String) throws(KeyBridgeError) -> OpaquePointer {
        let shown = KeyReference.redacted(path)
        guard let bio = BIO_new_file(path, "r") else {
            ERR_clear_error()
            let hint = KeyReference.pemFile(path).looksLikeMistypedURI
                ? "; it does not start with 'pkcs11:', so it was read as a file path — check the URI's scheme"
                : "; check the path given to --key (or use a pkcs11: URI)"
            throw KeyBridgeError(.file, "cannot read the key file \(shown)\(hint)")
        }
        defer { BIO_free(bio) }
        // No passphrase is ever asked for: an encrypted file fails at once instead of prompting.
        let refusePassphrase: @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = { _, _, _, _ in 0 }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, refusePassphrase, nil) else {
            ERR_clear_error()
            throw KeyBridgeError(.key, "\(shown) holds no readable PEM private key; give a pkcs11: URI, or an unencrypted PEM key file")
        }
        return key
    }
}

/// One SHA-256 signature over a challenge, with the key's default padding.
enum TestSignature {
    /// Ed25519 takes no separate digest; every other key type signs SHA-256.
    private static func digestName(for key: OpaquePointer) -> String? {
        EVP_PKEY_is_a(key, "ED25519") == 1 ? nil : "SHA256"
    }

    /// `usePSS` is for RSA keys on tokens that can make only PSS signatures.
    static func sign(_ data: [UInt8], with key: OpaquePointer, usePSS: Bool = false) throws(OpenSSLError) -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { throw OpenSSLError.drain(function: "EVP_MD_CTX_new", reason: "out of memory") }
        defer { EVP_MD_CTX_free(context) }
        _ = ProviderDiagnostics.takeLastFailure()
        var length = 0
        var keyContext: OpaquePointer?
        guard EVP_DigestSignInit_ex(context, &keyContext, digestName(for: key), nil, nil, key, nil) == 1,
              !usePSS || EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) == 1,
              EVP_DigestSign(context, nil, &length, data, data.count) == 1 else {
            throw OpenSSLError.afterFailedCall("EVP_DigestSignInit_ex", fallback: "signing failed")
        }
        var signature = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(context, &signature, &length, data, data.count) == 1 else {
            throw OpenSSLError.afterFailedCall("EVP_DigestSign", fallback: "signing failed")
        }
        return Array(signature.prefix(length))
    }

    static func verify(_ signature: [UInt8], of data: [UInt8], with key: OpaquePointer, usePSS: Bool = false) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer?
        let verified = EVP_DigestVerifyInit_ex(context, &keyContext, digestName(for: key), nil, "provider=default", key, nil) == 1
            && (!usePSS || EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) == 1)
            && EVP_DigestVerify(context, signature, signature.count, data, data.count) == 1
        ERR_clear_error()
        return verified
    }
}

/// Human-readable names from X.509 objects.
enum X509Text {
    static func subject(_ certificate: OpaquePointer) -> String {
        name(X509_get_subject_name(certificate))
    }

    static func name(_ name: OpaquePointer?) -> String {
        guard let name, let bio = BIO_new(BIO_s_mem()) else { return "?" }
        defer { BIO_free(bio) }
        X509_NAME_print_ex(bio, name, 0, CKeyBridgeShims_XN_FLAG_RFC2253)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let count = BIO_read(bio, &chunk, Int32(chunk.count))
            if count <= 0 { break }
            bytes += chunk.prefix(Int(count))
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

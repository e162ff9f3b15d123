internal import CKeyBridgeShims
internal import COpenSSL
import Foundation
import KeyBridgeProvider
import PKCS11

/// Checks an operator runs on a key and its certificates: does the certificate belong to the
/// key, and does the chain reach a trusted root.
public enum KeyCertificateCheck {
    /// Whether the certificate's public key is the key's, proven by a fresh test signature
    /// made on the token and verified by OpenSSL's default provider with the certificate.
    public enum Match: Sendable, Equatable {
        case matches
        /// The public keys differ.
        case differentPublicKey
        /// The public keys are equal, but the token's signature does not verify.
        case signatureDoesNotVerify
        /// The token could not sign; the reason says why.
        case cannotSign(String)
    }

    public static func match(key: ProviderKey, certificateDER der: [UInt8]) -> Match {
        guard let certificate = X509Box(der: der), let certificateKey = X509_get0_pubkey(certificate.pointer) else {
            ERR_clear_error()
            return .differentPublicKey
        }
        ERR_clear_error()
        guard EVP_PKEY_eq(certificateKey, key.pkey) == 1 else {
            ERR_clear_error()
            return .differentPublicKey
        }
        var challenge = [UInt8](repeating: 0, count: 32)
        _ = RAND_bytes(&challenge, Int32(challenge.count))
        let scheme: SignatureScheme
        var usePSS = false
        switch key.algorithm {
        case "RSA":
            // A token without PKCS#1 v1.5 may still make PSS; try what TLS would use.
            usePSS = !key.tlsSignatureAlgorithms.contains { $0.hasPrefix("RSA+") || $0.hasPrefix("rsa_pkcs1") } && key.supportsTLS13
            scheme = usePSS ? .rsaPSS(.sha256) : .rsaPKCS1(.sha256)
        case "ED25519": scheme = .ed25519
        default: scheme = .ecdsa(.sha256)
        }
        let signature: [UInt8]
        do {
            signature = try key.sign(challenge, scheme: scheme)
        } catch {
            return .cannotSign(error.description)
        }
        return verify(signature, of: challenge, with: certificateKey, scheme: scheme) ? .matches : .signatureDoesNotVerify
    }

    private static func verify(_ signature: [UInt8], of data: [UInt8], with key: OpaquePointer, scheme: SignatureScheme) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer?
        let digest: String? = scheme == .ed25519 ? nil : "SHA256"
        var verified = EVP_DigestVerifyInit_ex(context, &keyContext, digest, nil, "provider=default", key, nil) == 1
        if verified, case .rsaPSS = scheme {
            verified = EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) == 1
                && EVP_PKEY_CTX_set_rsa_pss_saltlen(keyContext, RSA_PSS_SALTLEN_DIGEST) == 1
        }
        verified = verified && EVP_DigestVerify(context, signature, signature.count, data, data.count) == 1
        ERR_clear_error()
        return verified
    }

    /// The outcome of building a chain from a leaf to a trusted root.
    public struct ChainResult: Sendable {
        /// True when OpenSSL built and verified a chain to a trusted root.
        public var complete: Bool
        /// OpenSSL's verify error text when not complete (e.g. "unable to get local issuer certificate").
        public var error: String?
        /// True when the failure means an issuer certificate is missing (an intermediate or the root).
        public var issuerMissing: Bool
        /// The subjects of the verified chain, leaf first (empty when not complete).
        public var subjects: [String]
        /// The DER of each certificate of the verified chain, leaf first, root last.
        public var certificates: [[UInt8]]
    }

    /// Verifies `chain` (leaf first, then intermediates) against the CA certificates in the PEM
    /// file `trustFile`, or the system's trust store when nil. Validity dates are not checked
    /// here, so an expired certificate is reported by the expiry check, not as a broken chain.
    public static func verifyChain(_ chain: [[UInt8]], trustFile: String?) -> ChainResult {
        func failed(_ text: String, missing: Bool = false) -> ChainResult {
            ChainResult(complete: false, error: text, issuerMissing: missing, subjects: [], certificates: [])
        }
        let parsed = chain.compactMap(X509Box.init(der:))
        guard parsed.count == chain.count, let leaf = parsed.first else { return failed("a certificate is not valid DER") }
        guard let store = X509_STORE_new() else { return failed("out of memory") }
        defer { X509_STORE_free(store) }
        if let trustFile {
            guard X509_STORE_load_file(store, trustFile) == 1 else {
                ERR_clear_error()
                return failed("cannot read CA certificates from \(trustFile)")
            }
        } else {
            _ = X509_STORE_set_default_paths(store)
        }
        guard let untrusted = OPENSSL_sk_new_null() else { return failed("out of memory") }
        defer { OPENSSL_sk_free(untrusted) }
        for certificate in parsed.dropFirst() { _ = OPENSSL_sk_push(untrusted, UnsafeRawPointer(certificate.pointer)) }
        guard let context = X509_STORE_CTX_new() else { return failed("out of memory") }
        defer { X509_STORE_CTX_free(context) }
        guard X509_STORE_CTX_init(context, store, leaf.pointer, untrusted) == 1 else { return failed("cannot start chain verification") }
        if let parameters = X509_STORE_CTX_get0_param(context) {
            _ = X509_VERIFY_PARAM_set_flags(parameters, UInt(X509_V_FLAG_NO_CHECK_TIME))
        }
        let verified = X509_verify_cert(context) == 1
        ERR_clear_error()
        guard verified else {
            let code = X509_STORE_CTX_get_error(context)
            let text = String(cString: X509_verify_cert_error_string(Int(code)))
            let missing = [X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
                           X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
                           X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT].contains(code)
            return failed(text, missing: missing)
        }
        var subjects: [String] = []
        var certificates: [[UInt8]] = []
        if let built = X509_STORE_CTX_get0_chain(context) {
            for index in 0..<OPENSSL_sk_num(built) {
                guard let raw = OPENSSL_sk_value(built, index) else { continue }
                let certificate = OpaquePointer(raw)
                subjects.append(X509Box.rfc2253(X509_get_subject_name(certificate)))
                var output: UnsafeMutablePointer<UInt8>?
                let length = i2d_X509(certificate, &output)
                if length > 0, let output {
                    certificates.append(Array(UnsafeBufferPointer(start: output, count: Int(length))))
                    CRYPTO_free(output, nil, 0)
                }
            }
        }
        return ChainResult(complete: true, error: nil, issuerMissing: false, subjects: subjects, certificates: certificates)
    }
}

/// Stores an issued certificate chain on the token next to its key.
public enum TokenCertificateImport {
    /// Why an import was refused. Nothing was written when this is thrown.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        /// `usage`, `key` (token, key or PIN), `certificate` (mismatch, unreadable) or `file`.
        public var kind: String
        public var reason: String
        public var description: String { reason }
        init(_ kind: String, _ reason: String) {
            self.kind = kind
            self.reason = reason
        }
    }

    /// One certificate of the chain and what happened to it.
    public struct Entry: Sendable {
        public var subject: String
        public var label: String
        public var idHex: String
        /// `stored`, `already on the token`, `replaced`, or `skipped (self-signed root)`.
        public var outcome: String
    }

    /// Stores the leaf (first in `pem`) with the key's `CKA_ID` and label, and each intermediate
    /// with its subject key identifier as `CKA_ID` (or the SHA-1 of its public key) and its
    /// common name as label. Self-signed roots are not stored.
    ///
    /// Refuses, before writing anything, a leaf whose public key is not the key's (checked by
    /// comparing the keys and by a test signature), a file without certificates, and a token
    /// that already holds a different certificate with the key's id unless `replace` is true.
    public static func importChain(pem: String, keyURI: String, leafLabel: String? = nil,
                                   replace: Bool = false) throws(Failure) -> [Entry] {
        let certificates: [EIDASCertificate]
        do {
            certificates = try EIDASCertificate.all(pem: pem)
        } catch {
            throw Failure("certificate", "the chain file holds no readable PEM certificate: \(error)")
        }
        guard let leaf = certificates.first else { throw Failure("certificate", "the chain file holds no certificate") }
        let uri: PKCS11URI
        do {
            uri = try PKCS11URI(parsing: keyURI)
        } catch {
            throw Failure("usage", "malformed key URI: \(error.reason)")
        }
        let tokenKey: PrivateKey
        let providerKey: ProviderKey
        do {
            tokenKey = try PrivateKey.resolve(uri)
        } catch {
            throw Failure("key", "cannot open the key: \(error)")
        }
        do {
            providerKey = try ProviderKey(uri: keyURI)
        } catch {
            throw Failure("key", "cannot open the key through the provider: \(error)")
        }
        guard let keyID = tokenKey.id, !keyID.isEmpty else {
            throw Failure("key", "the key \(tokenKey.summary) has no CKA_ID, so a certificate cannot be linked to it; regenerate it with 'keybridge keys generate --id HEX'")
        }
        switch KeyCertificateCheck.match(key: providerKey, certificateDER: leaf.der) {
        case .matches:
            break
        case .differentPublicKey:
            throw Failure("certificate", "the first certificate in the chain ('\(leaf.subject.rfc2253)') was not issued for the key \(tokenKey.summary): their public keys differ. Nothing was stored. Put the leaf issued for this key first in the file, or name the key it was issued for")
        case .signatureDoesNotVerify:
            throw Failure("certificate", "a test signature by the key \(tokenKey.summary) does not verify with the certificate '\(leaf.subject.rfc2253)'. Nothing was stored")
        case let .cannotSign(reason):
            throw Failure("key", "the key \(tokenKey.summary) cannot make a test signature: \(reason). Nothing was stored")
        }
        let token = tokenKey.token

        // Plan everything first, so a refusal leaves the token untouched.
        struct Planned { var certificate: EIDASCertificate; var label: String; var id: [UInt8]; var replacing: [ObjectHandle] }
        var plan: [Planned] = []
        var entries: [Entry] = []
        let existing: [TokenObjectInfo]
        do {
            existing = try token.listObjects().filter { $0.type == .certificate }
        } catch {
            throw Failure("key", "cannot list the token's certificates: \(error)")
        }
        for (index, certificate) in certificates.enumerated() {
            let isLeaf = index == 0
            let id = isLeaf ? keyID : subjectKeyIdentifier(certificate.der)
            let label = isLeaf ? (leafLabel ?? tokenKey.label ?? certificate.subject.commonName ?? "certificate")
                : (certificate.subject.commonName ?? certificate.subject.rfc2253)
            let idHex = id.map { String(format: "%02x", $0) }.joined()
            if !isLeaf && X509Box.isSelfSigned(certificate.der) {
                entries.append(Entry(subject: certificate.subject.rfc2253, label: label, idHex: idHex, outcome: "skipped (self-signed root; give it to --cacert instead)"))
                continue
            }
            if existing.contains(where: { $0.certificateDER == certificate.der }) {
                entries.append(Entry(subject: certificate.subject.rfc2253, label: label, idHex: idHex, outcome: "already on the token"))
                continue
            }
            let sameID = existing.filter { $0.id == id }
            if isLeaf, !sameID.isEmpty, !replace {
                throw Failure("certificate", "the token already holds another certificate with the key's id \(idHex) (label '\(sameID[0].label ?? "-")'). Nothing was stored. Add --replace to swap it for the new one (the new one is stored first)")
            }
            plan.append(Planned(certificate: certificate, label: label, id: id, replacing: isLeaf ? sameID.map(\.handle) : []))
            entries.append(Entry(subject: certificate.subject.rfc2253, label: label, idHex: idHex,
                                 outcome: isLeaf && !sameID.isEmpty ? "replaced" : "stored"))
        }
        var created: [ObjectHandle] = []
        for item in plan {
            guard let fields = X509Box.fields(item.certificate.der) else {
                throw Failure("certificate", "cannot encode the fields of '\(item.certificate.subject.rfc2253)'")
            }
            do {
                created.append(try token.createCertificate(der: item.certificate.der, subject: fields.subject, issuer: fields.issuer,
                                                           serialNumber: fields.serial, label: item.label, id: item.id))
            } catch {
                // Undo what this run stored, so a failure leaves the token as it was.
                for handle in created { try? token.destroyObject(handle) }
                throw Failure("key", "the token refused to store '\(item.certificate.subject.rfc2253)': \(error). Nothing was kept")
            }
        }
        for item in plan {
            for handle in item.replacing { try? token.destroyObject(handle) }
        }
        return entries
    }

    /// The subject key identifier extension, else the SHA-1 of the subjectPublicKey bits (the
    /// same value as RFC 5280's method 1).
    static func subjectKeyIdentifier(_ der: [UInt8]) -> [UInt8] {
        guard let certificate = X509Box(der: der) else { return [] }
        if let identifier = X509_get0_subject_key_id(certificate.pointer), let data = ASN1_STRING_get0_data(identifier) {
            return Array(UnsafeBufferPointer(start: data, count: Int(ASN1_STRING_length(identifier))))
        }
        var digest = [UInt8](repeating: 0, count: 20)
        var length: UInt32 = 0
        _ = X509_pubkey_digest(certificate.pointer, EVP_sha1(), &digest, &length)
        return Array(digest.prefix(Int(length)))
    }
}

/// One parsed X509 owned here and freed in deinit.
final class X509Box: @unchecked Sendable {
    // The X509 is owned by this object and never mutated.
    let pointer: OpaquePointer

    init?(der: [UInt8]) {
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let parsed else {
            ERR_clear_error()
            return nil
        }
        pointer = parsed
    }

    deinit { X509_free(pointer) }

    static func isSelfSigned(_ der: [UInt8]) -> Bool {
        guard let box = X509Box(der: der) else { return false }
        return X509_check_issued(box.pointer, box.pointer) == X509_V_OK
    }

    /// The DER of subject, issuer and serial number, as PKCS#11 certificate objects hold them.
    static func fields(_ der: [UInt8]) -> (subject: [UInt8], issuer: [UInt8], serial: [UInt8])? {
        guard let box = X509Box(der: der) else { return nil }
        func encode(_ body: (UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>) -> Int32) -> [UInt8]? {
            var output: UnsafeMutablePointer<UInt8>?
            let length = body(&output)
            guard length > 0, let output else { return nil }
            defer { CRYPTO_free(output, nil, 0) }
            return Array(UnsafeBufferPointer(start: output, count: Int(length)))
        }
        guard let subject = encode({ i2d_X509_NAME(X509_get_subject_name(box.pointer), $0) }),
              let issuer = encode({ i2d_X509_NAME(X509_get_issuer_name(box.pointer), $0) }),
              let serial = encode({ i2d_ASN1_INTEGER(X509_get_serialNumber(box.pointer), $0) }) else { return nil }
        return (subject, issuer, serial)
    }

    static func rfc2253(_ name: OpaquePointer?) -> String {
        guard let name, let bio = BIO_new(BIO_s_mem()) else { return "?" }
        defer { BIO_free(bio) }
        X509_NAME_print_ex(bio, name, 0, CKeyBridgeShims_XN_FLAG_RFC2253)
        return String(decoding: ASN1Writer.read(bio), as: UTF8.self)
    }
}

internal import COpenSSL
import Foundation
import PKCS11

/// Certificates kept on a token next to their keys, so a client needs nothing on disk.
public enum TokenCertificates {
    /// The leaf the URI names, followed by the intermediates found on the same token by
    /// following issuer links. The self-signed root is left out, as servers have their own.
    public static func chain(uri text: String) throws(OpenSSLError) -> [[UInt8]] {
        let uri = try parse(text)
        if let type = uri.type, type != .certificate {
            throw OpenSSLError(function: "certificate lookup", reason: "the certificate URI has type=\(type.rawValue); use type=cert or leave type out")
        }
        let (token, certificates) = try certificatesOnToken(uri)
        var leafSelector = uri
        leafSelector.type = .certificate
        let leaves: [ObjectHandle]
        do {
            leaves = try token.findObjects(matching: leafSelector, objectClass: .certificate)
        } catch {
            throw OpenSSLError(error)
        }
        guard leaves.count == 1, let leafHandle = leaves.first else {
            let problem = leaves.isEmpty ? "no certificate object matches" : "\(leaves.count) certificate objects match"
            throw OpenSSLError(function: "certificate lookup",
                               reason: "\(problem) \(String(text.prefix { $0 != "?" })) on the token; name one with object= or id= ('keybridge keys list --token …' shows them)")
        }
        let leaf: Certificate
        do {
            leaf = try Certificate(der: token.certificateDER(leafHandle))
        } catch let error as OpenSSLError {
            throw error
        } catch {
            throw OpenSSLError(function: "C_GetAttributeValue", reason: "\(error)")
        }
        var chain = [leaf]
        while let last = chain.last, !last.isSelfSigned,
              let issuer = certificates.first(where: { candidate in !chain.contains { $0.der == candidate.der } && last.isIssued(by: candidate) }) {
            if issuer.isSelfSigned { break }
            chain.append(issuer)
        }
        return chain.map(\.der)
    }

    /// The URI of the private key on the token (named by `tokenURI`) whose public key is the
    /// certificate's. Tries the `CKA_ID` of a matching certificate object first, then compares
    /// the public key of every private key.
    public static func privateKeyURI(forCertificate der: [UInt8], tokenURI text: String) throws(OpenSSLError) -> String {
        let uri = try parse(text)
        let certificate = try Certificate(der: der)
        let keys: [PrivateKey]
        do {
            keys = try PrivateKey.all(on: uri)
        } catch {
            throw OpenSSLError(error)
        }
        // Keys whose id matches a stored copy of this certificate are tried first.
        let (_, stored) = (try? certificatesOnToken(uri)) ?? (nil, [])
        let idsOfCopies = Set(stored.filter { $0.der == der }.compactMap(\.tokenID))
        let ordered = keys.filter { $0.id.map(idsOfCopies.contains) ?? false } + keys.filter { !($0.id.map(idsOfCopies.contains) ?? false) }
        for key in ordered {
            guard let object = try? KeyObject(tokenKey: key) else { continue }
            if EVP_PKEY_eq(object.publicKey, certificate.publicKey) == 1 {
                ERR_clear_error()
                return key.uri.formatted(includingPINValue: true)
            }
        }
        ERR_clear_error()
        throw OpenSSLError(function: "key lookup",
                           reason: "none of the \(keys.count) private keys on token '\(keys.first?.tokenLabel ?? uri.token ?? "?")' belongs to the certificate '\(certificate.subject)'; import the key, or use the certificate issued for one of them")
    }

    private static func parse(_ text: String) throws(OpenSSLError) -> PKCS11URI {
        do {
            return try PKCS11URI(parsing: text)
        } catch {
            throw OpenSSLError(function: "PKCS#11 URI", reason: error.reason)
        }
    }

    /// All certificate objects on the URI's token, parsed, with their `CKA_ID`s.
    private static func certificatesOnToken(_ uri: PKCS11URI) throws(OpenSSLError) -> (Token, [Certificate]) {
        do {
            let token = try PKCS11Module.load(for: uri).token(matching: uri)
            var any = PKCS11URI()
            any.type = .certificate
            var found: [Certificate] = []
            for handle in try token.findObjects(matching: any, objectClass: .certificate) {
                guard var certificate = try? Certificate(der: token.certificateDER(handle)) else { continue }
                certificate.tokenID = try token.objectID(handle)
                found.append(certificate)
            }
            return (token, found)
        } catch {
            throw OpenSSLError(error)
        }
    }
}

/// A parsed X.509 certificate with the few facts chain building needs.
struct Certificate: @unchecked Sendable {
    // The X509 object is owned by `storage`, which frees it; it is only read.
    private let storage: X509Storage
    let der: [UInt8]
    var tokenID: [UInt8]?

    init(der: [UInt8]) throws(OpenSSLError) {
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let parsed else { throw OpenSSLError.drain(function: "d2i_X509", reason: "a certificate on the token is not valid DER") }
        storage = X509Storage(parsed)
        self.der = der
    }

    var publicKey: OpaquePointer? { X509_get0_pubkey(storage.certificate) }
    var isSelfSigned: Bool { X509_check_issued(storage.certificate, storage.certificate) == X509_V_OK }
    func isIssued(by issuer: Certificate) -> Bool { X509_check_issued(issuer.storage.certificate, storage.certificate) == X509_V_OK }

    var subject: String {
        guard let line = X509_NAME_oneline(X509_get_subject_name(storage.certificate), nil, 0) else { return "?" }
        defer { CRYPTO_free(line, nil, 0) }
        return String(cString: line)
    }
}

final class X509Storage: @unchecked Sendable {
    // Owns one X509; immutable after init.
    let certificate: OpaquePointer
    init(_ certificate: OpaquePointer) { self.certificate = certificate }
    deinit { X509_free(certificate) }
}

internal import COpenSSL
import Foundation

/// CA certificates that a QWAC or QSealC must chain to, checked with OpenSSL's verifier.
///
/// Every certificate given is a trust anchor (`X509_V_FLAG_PARTIAL_CHAIN`): nginx passes only the
/// client's leaf, so the issuing CA must be among them; a root alone cannot complete the chain.
final class CertificateTrust: @unchecked Sendable {
    // Owns one X509_STORE, filled in init and only read afterwards. OpenSSL locks the store
    // itself, so verifications on several threads at once are safe.
    private let store: OpaquePointer
    /// How many CA certificates were added.
    let count: Int

    init(authorities: [[UInt8]]) throws(MockBankError) {
        guard !authorities.isEmpty else { throw MockBankError("no CA certificates given") }
        guard let store = X509_STORE_new() else { throw MockBankError("cannot make an X509_STORE (X509_STORE_new)") }
        for (index, der) in authorities.enumerated() {
            guard let certificate = Self.decode(der) else {
                X509_STORE_free(store)
                ERR_clear_error()
                throw MockBankError("CA certificate \(index + 1) is not a DER X.509 certificate")
            }
            // The store takes its own reference.
            let added = X509_STORE_add_cert(store, certificate)
            X509_free(certificate)
            if added != 1 {
                // The same CA twice is harmless; OpenSSL 3 reports it as success, older ones did not.
                ERR_clear_error()
            }
        }
        X509_STORE_set_flags(store, UInt(X509_V_FLAG_PARTIAL_CHAIN))
        self.store = store
        count = authorities.count
    }

    deinit { X509_STORE_free(store) }

    /// Nil when `der` chains to one of the CAs and is valid at `date`; otherwise OpenSSL's reason.
    func problem(with der: [UInt8], at date: Date) -> String? {
        guard let certificate = Self.decode(der) else {
            ERR_clear_error()
            return "it is not a DER X.509 certificate"
        }
        defer { X509_free(certificate) }
        guard let context = X509_STORE_CTX_new() else { return "cannot make an X509_STORE_CTX" }
        defer {
            X509_STORE_CTX_free(context)
            ERR_clear_error()
        }
        guard X509_STORE_CTX_init(context, store, certificate, nil) == 1 else { return "cannot start the chain check (X509_STORE_CTX_init)" }
        X509_STORE_CTX_set_time(context, 0, time_t(date.timeIntervalSince1970))
        if X509_verify_cert(context) == 1 { return nil }
        let code = X509_STORE_CTX_get_error(context)
        let text = X509_verify_cert_error_string(Int(code)).map { String(cString: $0) } ?? "error \(code)"
        return "\(text) (depth \(X509_STORE_CTX_get_error_depth(context)))"
    }

    private static func decode(_ der: [UInt8]) -> OpaquePointer? {
        der.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, !buffer.isEmpty else { return nil }
            var cursor: UnsafePointer<UInt8>? = base
            return d2i_X509(nil, &cursor, buffer.count)
        }
    }
}

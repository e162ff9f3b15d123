import Foundation
import PKCS11

/// A key that makes HMACs, for RFC 9421 `hmac-sha256`. `TokenHMACKey` is the one meant here:
/// the shared secret stays on the token.
///
/// A MAC is checked by computing it again, so the same kind of key serves the signer
/// (`HTTPMessageMACSigner`) and the verifier (`HTTPMessageMACVerifier`).
public protocol HMACSigningKey: Sendable {
    /// The HMAC's hash.
    var hash: HashAlgorithm { get }
    /// The full-length HMAC of `message`.
    func authenticationCode(for message: [UInt8]) throws -> [UInt8]
}

/// An HMAC key on a PKCS#11 token: a `CKO_SECRET_KEY` of type `CKK_GENERIC_SECRET` or
/// `CKK_SHA*_HMAC`. Every MAC is a `C_Sign` with `CKM_SHA*_HMAC`; the secret never leaves the
/// token, and no KeyBridge type holds its bytes.
///
/// ```swift
/// let key = try TokenHMACKey(uri: "pkcs11:token=keybridge;object=bank-shared;type=secret-key")
/// let signer = try HTTPMessageMACSigner(key: key, keyID: "bank-shared", components: [.method, .targetURI])
/// ```
public final class TokenHMACKey: HMACSigningKey {
    /// The token key; its handle is cached and found again after a lost session.
    public let secretKey: SecretKey
    /// The HMAC's hash; SHA-256 for `hmac-sha256`.
    public let hash: HashAlgorithm

    /// Finds the secret key a `pkcs11:` URI names and confirms with one MAC that the token makes
    /// HMACs of `hash` with it.
    public convenience init(uri: String, hash: HashAlgorithm = .sha256, pin: PIN? = nil, allowPrompt: Bool = true) throws(OpenBankingError) {
        let parsed: PKCS11URI
        do {
            parsed = try PKCS11URI(parsing: uri)
        } catch {
            throw OpenBankingError("the HMAC key URI is not a valid pkcs11: URI: \(error)")
        }
        let key: SecretKey
        do {
            key = try SecretKey.resolve(parsed, pin: pin, allowPrompt: allowPrompt)
        } catch {
            throw OpenBankingError("cannot open the HMAC key: \(error)")
        }
        try self.init(key, hash: hash)
    }

    /// Wraps a secret key found already, after confirming with one MAC that the token makes HMACs
    /// of `hash` with it, so a key of the wrong type fails here rather than on the first request.
    public init(_ secretKey: SecretKey, hash: HashAlgorithm = .sha256) throws(OpenBankingError) {
        self.secretKey = secretKey
        self.hash = hash
        let probe: [UInt8]
        do {
            probe = try secretKey.sign(Array("KeyBridge HMAC key check".utf8), mechanism: .hmac(hash))
        } catch {
            throw OpenBankingError("the token cannot make an HMAC-\(hash) with \(secretKey.summary): \(error)")
        }
        guard probe.count == hash.length else {
            throw OpenBankingError("the token returned a \(probe.count)-byte HMAC-\(hash) from \(secretKey.summary), not \(hash.length) bytes")
        }
    }

    /// The HMAC of `message`, computed on the token.
    public func authenticationCode(for message: [UInt8]) throws(PKCS11Error) -> [UInt8] {
        try secretKey.sign(message, mechanism: .hmac(hash))
    }
}

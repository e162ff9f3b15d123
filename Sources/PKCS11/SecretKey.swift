import Foundation

/// Secret-key types that can make an HMAC.
public enum SecretKeyType: UInt, Sendable {
    /// `CKK_GENERIC_SECRET`: any `CKM_SHA*_HMAC` accepts it.
    case genericSecret = 0x10
    /// `CKK_SHA_1_HMAC`
    case sha1HMAC = 0x28
    /// `CKK_SHA256_HMAC`
    case sha256HMAC = 0x2B
    /// `CKK_SHA384_HMAC`
    case sha384HMAC = 0x2C
    /// `CKK_SHA512_HMAC`
    case sha512HMAC = 0x2D
    /// `CKK_SHA224_HMAC`
    case sha224HMAC = 0x2E
}

/// A secret key (`CKO_SECRET_KEY`) that stays on its token, for MACs such as HMAC-SHA256.
/// It holds a handle, never key bytes: only public attributes are read, and every MAC is a
/// `C_Sign` on the token.
///
/// The handle is found once, cached, and found again after the token lost its sessions.
public final class SecretKey: @unchecked Sendable {
    // `uri`, `token` and the descriptive fields are immutable; `handle` is guarded by `lock`.
    public let uri: PKCS11URI
    public let token: Token
    public let keyType: SecretKeyType
    public let label: String?
    public let id: [UInt8]?
    public let tokenLabel: String
    /// `CKA_ALWAYS_AUTHENTICATE`: the token wants a login before every MAC.
    public let alwaysAuthenticate: Bool
    private let lock = NSLock()
    private var handle: ObjectHandle
    /// The token's session epoch in which `handle` was found; in a later one it may be stale.
    private var handleEpoch: UInt64

    /// `CKO_SECRET_KEY`; `ObjectClass` lists only the classes of asymmetric keys and certificates.
    private static let secretKeyClass: UInt = 4

    /// Finds the single secret key the URI names (`type=secret-key` or no type), logging in
    /// first as `PrivateKey.loginBehavior` says. The PIN comes from `pin` if given, else from
    /// the URI, `KEYBRIDGE_PIN` or a prompt (see `PINResolver`).
    public static func resolve(_ uri: PKCS11URI, pin: PIN? = nil, allowPrompt: Bool = true) throws(PKCS11Error) -> SecretKey {
        if let type = uri.type, type != .secretKey {
            throw PKCS11Error(function: "key lookup",
                              reason: "the URI has type=\(type.rawValue), but a secret key is needed; use type=secret-key or leave type out")
        }
        // The same login rules as private keys: one place decides, counts and names PIN sources.
        let (token, tokenInfo) = try PrivateKey.loggedInToken(uri, pin: pin, allowPrompt: allowPrompt, pinFallback: nil)
        let epoch = token.epoch
        let handle = try findSingleKey(uri, on: token, tokenLabel: tokenInfo.label)
        return try SecretKey(uri: uri, token: token, handle: handle, epoch: epoch, tokenLabel: tokenInfo.label)
    }

    private static func findSingleKey(_ uri: PKCS11URI, on token: Token, tokenLabel: String) throws(PKCS11Error) -> ObjectHandle {
        if uri.object == nil && uri.id == nil {
            throw PKCS11Error(function: "key lookup",
                              reason: "the URI names no key; add object=<label> or id=<hex> to it ('keybridge keys list --token …' shows them)")
        }
        // Search by label and id, then keep the secret keys: the search template takes only the
        // classes in `ObjectClass`.
        var found: [ObjectHandle] = []
        for handle in try token.findObjects(matching: uri, objectClass: nil) {
            if try token.ulongAttribute(.objectClass, of: handle) == secretKeyClass { found.append(handle) }
        }
        guard let first = found.first else {
            throw PKCS11Error(function: "key lookup",
                              reason: "no secret key matches \(uri.objectDescription) on token '\(tokenLabel)'; check object= and id= ('keybridge keys list --token …' shows what is there)")
        }
        if found.count > 1 {
            throw PKCS11Error(function: "key lookup",
                              reason: "\(found.count) secret keys match \(uri.objectDescription) on token '\(tokenLabel)'; add id= to pick one")
        }
        return first
    }

    private init(uri: PKCS11URI, token: Token, handle: ObjectHandle, epoch: UInt64, tokenLabel: String) throws(PKCS11Error) {
        // The URI is kept for finding the key again; a PIN in it is not kept with it.
        var withoutPIN = uri
        withoutPIN.pinValue = nil
        self.uri = withoutPIN
        self.token = token
        self.handle = handle
        self.handleEpoch = epoch
        self.tokenLabel = tokenLabel
        guard let rawType = try token.ulongAttribute(.keyType, of: handle), let type = SecretKeyType(rawValue: rawType) else {
            throw PKCS11Error(function: "key lookup",
                              reason: "the secret key \(uri.objectDescription) is of a type that cannot make an HMAC (only CKK_GENERIC_SECRET and CKK_SHA*_HMAC)")
        }
        keyType = type
        if try token.boolAttribute(.sign, of: handle) == false {
            throw PKCS11Error(function: "key lookup",
                              reason: "the secret key \(uri.objectDescription) may not sign (CKA_SIGN is false), so it cannot make an HMAC; import it with CKA_SIGN=true (pkcs11-tool --usage-sign)")
        }
        label = try token.attribute(.label, of: handle).map { String(decoding: $0, as: UTF8.self) }
        id = try token.attribute(.id, of: handle)
        alwaysAuthenticate = try token.boolAttribute(.alwaysAuthenticate, of: handle) ?? false
        let extractable = try token.boolAttribute(.extractable, of: handle)
        let sensitive = try token.boolAttribute(.sensitive, of: handle)
        if extractable == true || sensitive == false {
            KeyBridgeLog.warning("the secret key \(uri.objectDescription) is extractable or not sensitive; import it again with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false")
        }
    }

    /// A short description for logs: token, label and id, never a PIN.
    public var summary: String {
        let idText = id.map { $0.map { String(format: "%02x", $0) }.joined() } ?? "-"
        return "token '\(tokenLabel)', secret key '\(label ?? "-")', id \(idText)"
    }

    /// Computes a MAC of `data` on the token; only `.hmac` mechanisms apply to a secret key.
    /// After a lost session or a token outage it logs in again (only with the PIN that worked),
    /// finds the key again and retries once.
    public func sign(_ data: [UInt8], mechanism: SignatureMechanism) throws(PKCS11Error) -> [UInt8] {
        guard case .hmac = mechanism else {
            throw PKCS11Error(function: "C_SignInit", reason: "\(mechanism) needs a private key; a secret key makes HMACs only (CKM_SHA*_HMAC)")
        }
        let (known, knownEpoch) = lock.withLock { (handle, handleEpoch) }
        let (current, epoch) = knownEpoch == token.epoch ? (known, knownEpoch) : try refreshHandle()
        do {
            return try token.sign(data, with: current, mechanism: mechanism, contextLogin: alwaysAuthenticate, handleEpoch: epoch)
        } catch {
            guard error.meansStaleHandleOrSession else { throw error }
            let (fresh, freshEpoch) = try refreshHandle()
            return try token.sign(data, with: fresh, mechanism: mechanism, contextLogin: alwaysAuthenticate, handleEpoch: freshEpoch)
        }
    }

    private func refreshHandle() throws(PKCS11Error) -> (ObjectHandle, UInt64) {
        try token.reloginIfPossible()
        let epoch = token.epoch
        let fresh = try SecretKey.findSingleKey(uri, on: token, tokenLabel: tokenLabel)
        lock.withLock {
            handle = fresh
            handleEpoch = epoch
        }
        return (fresh, epoch)
    }
}

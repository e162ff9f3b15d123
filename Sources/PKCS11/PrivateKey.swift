import Foundation

/// The public half of a token key, as read from public attributes.
public enum PublicKeyMaterial: Sendable, Hashable {
    /// Modulus and public exponent, big-endian.
    case rsa(modulus: [UInt8], publicExponent: [UInt8])
    /// DER `ECParameters` (normally a named-curve OID) and the DER OCTET STRING of the point, or
    /// `nil` when the token holds no public key object for it.
    case ec(parameters: [UInt8], point: [UInt8]?)
    /// DER `ECParameters` for an Edwards curve and the point, if found.
    case edwards(parameters: [UInt8], point: [UInt8]?)
}

/// A private key that stays on its token. It holds a handle, never key bytes.
///
/// The handle is found once, cached, and found again after the token lost its sessions.
public final class PrivateKey: @unchecked Sendable {
    // `uri`, `token` and the descriptive fields are immutable; `handle` is guarded by `lock`.
    public let uri: PKCS11URI
    public let token: Token
    public let keyType: KeyType
    public let label: String?
    public let id: [UInt8]?
    public let publicKey: PublicKeyMaterial
    /// The DER of the certificate object stored with the same `CKA_ID`, if any.
    public let certificateDER: [UInt8]?
    public let tokenLabel: String
    /// `CKA_ALWAYS_AUTHENTICATE`: the token wants a login before every signature.
    public let alwaysAuthenticate: Bool
    private let lock = NSLock()
    private var handle: ObjectHandle
    /// The token's session epoch in which `handle` was found; in a later one it may be stale.
    private var handleEpoch: UInt64
    private var cachedUsableMechanisms: Set<UInt>?

    /// Finds the single private key the URI names, logging in first if the token needs it.
    /// The PIN comes from `pin` if given, else from the URI, `KEYBRIDGE_PIN` or a prompt (see
    /// `PINResolver`), else from `pinFallback`, which is asked only when the token needs a login.
    public static func resolve(_ uri: PKCS11URI, pin: PIN? = nil, allowPrompt: Bool = true,
                               pinFallback: (() -> PIN?)? = nil) throws(PKCS11Error) -> PrivateKey {
        // Keys are looked up once per process; the PIN is not part of the cache key.
        let cacheKey = uri.formatted()
        if cachesKeys, let cached = cacheLock.withLock({ cache[cacheKey] }) {
            if cached.token.isLoggedIn || !cached.needsLogin { return cached }
            // The token lost its login (an outage, a fork): the PIN that worked logs in again,
            // and the key finds its handle again when it next signs.
            try? cached.token.reloginIfPossible()
            if cached.token.isLoggedIn { return cached }
        }
        let key = try lookUp(uri, pin: pin, allowPrompt: allowPrompt, pinFallback: pinFallback)
        if cachesKeys { cacheLock.withLock { cache[cacheKey] = key } }
        return key
    }

    /// When to log in to a token before looking up a key.
    public enum LoginBehavior: String, Sendable {
        /// Log in when the token says it needs a login (`CKF_LOGIN_REQUIRED`).
        case auto
        /// Log in even when the token does not demand it, to see private objects.
        case always
        /// Never log in; only keys usable without a login are found.
        case never
    }

    /// Set from the application or an OpenSSL configuration file.
    public static var loginBehavior: LoginBehavior {
        get { loginSetting.current }
        set { loginSetting.current = newValue }
    }
    /// Whether a key found once is reused for the same URI; off means every open looks again.
    public static var cachesKeys: Bool {
        get { cacheSetting.current }
        set { cacheSetting.current = newValue }
    }
    private static let loginSetting = LockedValue(LoginBehavior.auto)
    private static let cacheSetting = LockedValue(true)

    private static let cacheLock = NSLock()
    nonisolated(unsafe) private static var cache: [String: PrivateKey] = [:]

    private var needsLogin: Bool {
        (try? token.info().flags.contains(.loginRequired)) ?? true
    }

    private static func lookUp(_ uri: PKCS11URI, pin: PIN?, allowPrompt: Bool,
                               pinFallback: (() -> PIN?)?) throws(PKCS11Error) -> PrivateKey {
        if let type = uri.type, type != .privateKey {
            throw PKCS11Error(function: "key lookup",
                              reason: "the URI has type=\(type.rawValue), but a private key is needed; use type=private or leave type out")
        }
        let (token, tokenInfo) = try loggedInToken(uri, pin: pin, allowPrompt: allowPrompt, pinFallback: pinFallback)
        let epoch = token.epoch
        let handle = try findSingleKey(uri, on: token, tokenLabel: tokenInfo.label)
        return try PrivateKey(uri: uri, token: token, handle: handle, epoch: epoch, tokenLabel: tokenInfo.label)
    }

    /// Every private key on the token a URI names (its object attributes are ignored), each with
    /// a URI of its own that names it by `CKA_ID` (or label when it has no id).
    public static func all(on uri: PKCS11URI, pin: PIN? = nil, allowPrompt: Bool = true) throws(PKCS11Error) -> [PrivateKey] {
        let (token, tokenInfo) = try loggedInToken(uri, pin: pin, allowPrompt: allowPrompt, pinFallback: nil)
        var tokenOnly = uri
        tokenOnly.object = nil
        tokenOnly.id = nil
        tokenOnly.type = nil
        var keys: [PrivateKey] = []
        let epoch = token.epoch
        for handle in try token.findObjects(matching: tokenOnly, objectClass: .privateKey) {
            var own = tokenOnly
            own.type = .privateKey
            if let id = try token.attribute(.id, of: handle), !id.isEmpty {
                own.id = id
            } else {
                own.object = try token.attribute(.label, of: handle).map { String(decoding: $0, as: UTF8.self) }
            }
            // Keys of types KeyBridge cannot use are skipped, not fatal: they are someone else's.
            if let key = try? PrivateKey(uri: own, token: token, handle: handle, epoch: epoch, tokenLabel: tokenInfo.label) {
                keys.append(key)
            }
        }
        return keys
    }

    /// The token a URI names, logged in when the login behaviour calls for it.
    static func loggedInToken(_ uri: PKCS11URI, pin: PIN?, allowPrompt: Bool,
                                      pinFallback: (() -> PIN?)?) throws(PKCS11Error) -> (Token, TokenInfo) {
        let module = try PKCS11Module.load(for: uri)
        let token = try module.token(matching: uri)
        let tokenInfo = try token.info()
        let wantsLogin = loginBehavior == .always || (loginBehavior == .auto && tokenInfo.flags.contains(.loginRequired))
        if wantsLogin && !token.isLoggedIn {
            var chosen = pin
            var origin = "the caller"
            if chosen == nil {
                let resolved = try PINResolver.resolve(for: uri, promptLabel: "token '\(tokenInfo.label)'", allowPrompt: allowPrompt)
                if let warning = resolved?.warning { KeyBridgeLog.warning(warning) }
                chosen = resolved?.pin ?? pinFallback?()
                origin = resolved?.origin.rawValue ?? "the application's passphrase callback"
            }
            do {
                try token.login(pin: chosen, evenIfNotRequired: loginBehavior == .always)
            } catch where error.returnValue == .pinIncorrect {
                var named = error
                named.reason += " (the PIN came from \(origin))"
                throw named
            }
        }
        return (token, tokenInfo)
    }

    private static func findSingleKey(_ uri: PKCS11URI, on token: Token, tokenLabel: String) throws(PKCS11Error) -> ObjectHandle {
        if uri.object == nil && uri.id == nil {
            throw PKCS11Error(function: "key lookup",
                              reason: "the URI names no key; add object=<label> or id=<hex> to it ('keybridge keys list --token …' shows them)")
        }
        let found = try token.findObjects(matching: uri, objectClass: .privateKey)
        guard let first = found.first else {
            throw PKCS11Error(function: "key lookup",
                              reason: "no private key matches \(uri.objectDescription) on token '\(tokenLabel)'; check object= and id= ('keybridge keys list --token …' shows what is there)")
        }
        if found.count > 1 {
            throw PKCS11Error(function: "key lookup",
                              reason: "\(found.count) private keys match \(uri.objectDescription) on token '\(tokenLabel)'; add id= to pick one")
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
        guard let rawType = try token.ulongAttribute(.keyType, of: handle), let type = KeyType(rawValue: rawType) else {
            throw PKCS11Error(function: "key lookup", reason: "the key \(uri.objectDescription) is of a type KeyBridge cannot use (only RSA, EC and EdDSA keys)")
        }
        keyType = type
        label = try token.attribute(.label, of: handle).map { String(decoding: $0, as: UTF8.self) }
        let keyID = try token.attribute(.id, of: handle)
        id = keyID
        alwaysAuthenticate = try token.boolAttribute(.alwaysAuthenticate, of: handle) ?? false
        let extractable = try token.boolAttribute(.extractable, of: handle)
        let sensitive = try token.boolAttribute(.sensitive, of: handle)
        if extractable == true || sensitive == false {
            KeyBridgeLog.warning("the key \(uri.objectDescription) is extractable or not sensitive; regenerate it with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false")
        }
        var certificate: [UInt8]?
        if let keyID, !keyID.isEmpty, let certificateHandle = try token.findObjects(id: keyID, objectClass: .certificate).first {
            certificate = try token.certificateDER(certificateHandle)
        }
        certificateDER = certificate
        switch type {
        case .rsa:
            guard let modulus = try token.attribute(.modulus, of: handle),
                  let exponent = try token.attribute(.publicExponent, of: handle) else {
                throw PKCS11Error(function: "C_GetAttributeValue", reason: "the RSA key \(uri.objectDescription) does not show its modulus and public exponent")
            }
            publicKey = .rsa(modulus: modulus, publicExponent: exponent)
        case .ec, .ecEdwards:
            guard let parameters = try token.attribute(.ecParams, of: handle) else {
                throw PKCS11Error(function: "C_GetAttributeValue", reason: "the EC key \(uri.objectDescription) does not show CKA_EC_PARAMS")
            }
            var point = try token.attribute(.ecPoint, of: handle)
            if point == nil, let keyID, !keyID.isEmpty,
               let publicHandle = try token.findObjects(id: keyID, objectClass: .publicKey).first {
                point = try token.attribute(.ecPoint, of: publicHandle)
            }
            publicKey = type == .ec ? .ec(parameters: parameters, point: point) : .edwards(parameters: parameters, point: point)
        }
    }

    /// A short description for logs and `-v` output: token, label and id, never a PIN.
    public var summary: String {
        let idText = id.map { $0.map { String(format: "%02x", $0) }.joined() } ?? "-"
        return "token '\(tokenLabel)', object '\(label ?? "-")', id \(idText)"
    }

    /// Mechanisms the key may use: `CKA_ALLOWED_MECHANISMS` if set and non-empty (SoftHSM leaves it
    /// empty, which means all), intersected with what the token offers.
    public func usableMechanisms() throws(PKCS11Error) -> Set<UInt> {
        if let cached = lock.withLock({ cachedUsableMechanisms }) { return cached }
        let usable = try readUsableMechanisms()
        lock.withLock { cachedUsableMechanisms = usable }
        return usable
    }

    private func readUsableMechanisms() throws(PKCS11Error) -> Set<UInt> {
        let offered = try token.mechanisms()
        let (currentHandle, _) = try currentHandle()
        guard let raw = try token.attribute(.allowedMechanisms, of: currentHandle), !raw.isEmpty else { return offered }
        let stride = MemoryLayout<UInt>.size
        let allowed = raw.withUnsafeBytes { bytes in
            (0..<(bytes.count / stride)).map { bytes.loadUnaligned(fromByteOffset: $0 * stride, as: UInt.self) }
        }
        return offered.intersection(allowed)
    }

    /// Signs with the key. After a lost session or a token outage it logs in again (only with the
    /// PIN that worked), finds the key again and retries once. While the token is unreachable it
    /// fails at once (`PKCS11Error.isTokenUnavailable`).
    public func sign(_ data: [UInt8], mechanism: SignatureMechanism) throws(PKCS11Error) -> [UInt8] {
        let (current, epoch) = try currentHandle()
        do {
            return try token.sign(data, with: current, mechanism: mechanism, contextLogin: alwaysAuthenticate, handleEpoch: epoch)
        } catch {
            guard error.meansStaleHandleOrSession else { throw error }
            let (fresh, freshEpoch) = try refreshHandle()
            return try token.sign(data, with: fresh, mechanism: mechanism, contextLogin: alwaysAuthenticate, handleEpoch: freshEpoch)
        }
    }

    /// The handle and the epoch it belongs to, found again first if the token lost its sessions
    /// since it was found: a handle number from an older connection may name another object now.
    private func currentHandle() throws(PKCS11Error) -> (ObjectHandle, UInt64) {
        let (current, epoch) = lock.withLock { (handle, handleEpoch) }
        if epoch == token.epoch { return (current, epoch) }
        return try refreshHandle()
    }

    private func refreshHandle() throws(PKCS11Error) -> (ObjectHandle, UInt64) {
        try token.reloginIfPossible()
        let epoch = token.epoch
        let fresh = try PrivateKey.findSingleKey(uri, on: token, tokenLabel: tokenLabel)
        lock.withLock {
            handle = fresh
            handleEpoch = epoch
        }
        return (fresh, epoch)
    }
}

extension PKCS11Error {
    /// Errors after which a key's handle or the token's sessions may be stale, so finding the key
    /// again (and logging in again) may help.
    var meansStaleHandleOrSession: Bool {
        guard let code = returnValue else { return false }
        return code.meansSessionLost || code.meansTokenUnreachable || code == .objectHandleInvalid || code == .keyHandleInvalid
    }
}

/// Where the PKCS#11 layer reports things a user should know. Defaults to standard error.
public enum KeyBridgeLog {
    /// Receives warnings; the default writes them to standard error.
    public static var warningHandler: @Sendable (String) -> Void {
        get { warnings.current }
        set { warnings.current = newValue }
    }
    /// Receives debug messages, such as which mechanism signed; none by default.
    public static var debugHandler: (@Sendable (String) -> Void)? {
        get { debugging.current }
        set { debugging.current = newValue }
    }
    private static let warnings = LockedValue<@Sendable (String) -> Void>({ message in
        // A closed standard error must not crash the program.
        try? FileHandle.standardError.write(contentsOf: Data("keybridge: warning: \(message)\n".utf8))
    })
    private static let debugging = LockedValue<(@Sendable (String) -> Void)?>(nil)

    public static func warning(_ message: String) { warningHandler(message) }
    public static func debug(_ message: @autoclosure () -> String) { debugHandler?(message()) }
}

internal import CPKCS11
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A token in one slot: a pool of sessions, one login shared by all of them, and object lookup.
///
/// PKCS#11 keeps the login per application and token, so one logged-in session keeps every
/// pooled session logged in. The pool grows on demand so parallel signers do not queue.
///
/// After its module was started again (after `fork`, or after the device came back from an
/// outage) the token finds its slot again by label and serial, and starts a new session epoch:
/// keys then log in again with the PIN that worked and find their handles again.
public final class Token: @unchecked Sendable {
    // Mutable state is guarded by `lock`; `module` and `identity` are immutable.
    let module: PKCS11Module
    let identity: TokenIdentity
    private let lock = NSLock()
    private var boundSlotID: UInt
    /// The module generation `boundSlotID` and the sessions belong to.
    private var boundGeneration: UInt64
    /// Counts losses of sessions and login; object handles found in an older epoch are stale.
    private var sessionEpoch: UInt64 = 0
    private var idleSessions: [CK_SESSION_HANDLE] = []
    private var anchorSession: CK_SESSION_HANDLE?
    /// Sessions opened and not yet closed (idle, busy and the anchor).
    private var openSessionCount = 0
    private var loggedIn = false
    private var goodPIN: PIN?
    private var failedPINFingerprints: Set<Int> = []
    private var cachedMechanisms: Set<UInt>?
    /// Held for a whole login, so two threads cannot both spend an attempt on the same wrong PIN.
    private let loginLock = NSLock()

    init(module: PKCS11Module, identity: TokenIdentity, slotID: UInt, generation: UInt64) {
        self.module = module
        self.identity = identity
        self.boundSlotID = slotID
        self.boundGeneration = generation
    }

    /// The slot the token is in now.
    public var slotID: UInt { lock.withLock { boundSlotID } }

    /// Changes whenever the token lost its sessions and login; handles found before are stale.
    public var epoch: UInt64 { lock.withLock { sessionEpoch } }

    /// Throws when `handleEpoch` is not the current session epoch: a handle found before the
    /// token lost its sessions (or its connection) may name another object now. Call inside
    /// `withSession`, where no reconnect can run.
    func requireCurrentEpoch(_ handleEpoch: UInt64?) throws(PKCS11Error) {
        guard let handleEpoch, handleEpoch != epoch else { return }
        throw PKCS11Error(returnValue: .objectHandleInvalid, function: "C_SignInit",
                          reason: "the key's handle was found before the token lost its sessions; it is found again")
    }

    /// Sessions this process holds open on the token (pooled, in use, and the login anchor).
    public var openSessions: Int { lock.withLock { openSessionCount } }

    /// Whether the token is known to be unreachable right now (its module lost the device or the
    /// connection and has not reconnected yet). Calls fail at once meanwhile; services can answer
    /// 503 and report it in health checks.
    public var isUnreachable: Bool { module.isUnreachable }

    private var functions: CK_FUNCTION_LIST { module.functions.pointee }

    public func info() throws(PKCS11Error) -> TokenInfo {
        try module.withCalls(retryAfterReconnect: true) { () throws(PKCS11Error) -> TokenInfo in
            try rebindIfRestarted()
            return try module.tokenInfo(slotID: slotID)
        }
    }

    public var isLoggedIn: Bool {
        lock.lock()
        defer { lock.unlock() }
        return loggedIn
    }

    /// Mechanisms offered by the token, as raw `CKM_` values; read once, then cached.
    public func mechanisms() throws(PKCS11Error) -> Set<UInt> {
        if let cached = lock.withLock({ cachedMechanisms }) { return cached }
        let offered = try module.withCalls(retryAfterReconnect: true) { () throws(PKCS11Error) -> Set<UInt> in
            try rebindIfRestarted()
            return try module.mechanisms(slotID: slotID)
        }
        lock.withLock { cachedMechanisms = offered }
        return offered
    }

    // MARK: Slot after a module restart

    /// After the module was started again, finds this token's slot anew (by label, serial,
    /// manufacturer and model). Runs inside `module.withCalls`.
    private func rebindIfRestarted() throws(PKCS11Error) {
        let generation = module.currentGeneration
        guard lock.withLock({ boundGeneration != generation }) else { return }
        let slots = try module.slots(tokenPresent: true)
        guard let slot = slots.first(where: { $0.token.map(TokenIdentity.init) == identity }) else {
            throw PKCS11Error(returnValue: .tokenNotPresent, function: "C_GetSlotList",
                              reason: "token '\(identity.label)' (serial \(identity.serialNumber)) is not present in \(module.path) any more; check the HSM and its slot")
        }
        lock.withLock {
            boundSlotID = UInt(slot.id)
            boundGeneration = generation
        }
    }

    /// Called by the module when it moved this token to another slot.
    func moved(to slotID: UInt) {
        lock.withLock { boundSlotID = slotID }
    }

    // MARK: Sessions

    private func openSession() throws(PKCS11Error) -> CK_SESSION_HANDLE {
        var session: CK_SESSION_HANDLE = 0
        let slot = slotID
        try check(functions.C_OpenSession(CK_SLOT_ID(slot), CK_FLAGS(CKF_SERIAL_SESSION), nil, nil, &session),
                  "C_OpenSession", "cannot open a session on slot \(slot); the token may be gone or out of sessions")
        lock.withLock { openSessionCount += 1 }
        return session
    }

    private func closeSession(_ session: CK_SESSION_HANDLE) {
        _ = functions.C_CloseSession(session)
        lock.withLock { openSessionCount -= 1 }
    }

    /// Runs `body` with a session from the pool. A session that reported a lost-session error is
    /// closed rather than returned to the pool, and the other sessions and the login are dropped
    /// with it.
    /// With `discardOnError`, a session that failed is closed rather than pooled: an operation
    /// that failed halfway (after `C_SignInit`) may still be active in it.
    /// While the token is unreachable this throws at once (see `PKCS11Module`).
    func withSession<R>(discardOnError: Bool = false, _ body: (CK_SESSION_HANDLE) throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        try module.withCalls { () throws(PKCS11Error) -> R in
            try rebindIfRestarted()
            let (pooled, epoch): (CK_SESSION_HANDLE?, UInt64) = lock.withLock { (idleSessions.popLast(), sessionEpoch) }
            let session: CK_SESSION_HANDLE
            if let pooled { session = pooled } else { session = try openSession() }
            do throws(PKCS11Error) {
                let result = try body(session)
                giveBack(session, openedIn: epoch)
                return result
            } catch {
                if let code = error.returnValue, code.meansSessionLost || code.meansTokenUnreachable {
                    closeSession(session)
                    markSessionsLost()
                } else if discardOnError {
                    closeSession(session)
                } else {
                    giveBack(session, openedIn: epoch)
                }
                throw error
            }
        }
    }

    /// Returns a session to the pool, unless the pool was dropped while it was in use.
    private func giveBack(_ session: CK_SESSION_HANDLE, openedIn epoch: UInt64) {
        let current = lock.withLock {
            if sessionEpoch == epoch { idleSessions.append(session) }
            return sessionEpoch == epoch
        }
        if !current { closeSession(session) }
    }

    /// Drops all sessions after an error that means the token lost them, so the next call starts over.
    func markSessionsLost() {
        let stale: [CK_SESSION_HANDLE] = lock.withLock {
            let stale = idleSessions + (anchorSession.map { [$0] } ?? [])
            idleSessions = []
            anchorSession = nil
            loggedIn = false
            sessionEpoch += 1
            return stale
        }
        for session in stale { closeSession(session) }
    }

    func forgetSessionsAfterFork() {
        // The parent's handles mean nothing in the child; closing them would hit the parent's state.
        forgetSessions()
    }

    /// After the module was finalised and initialised again every handle is void: forget them,
    /// closing none (a closed handle number may already belong to someone else).
    func forgetSessionsAfterRestart() {
        forgetSessions()
    }

    private func forgetSessions() {
        lock.withLock {
            idleSessions = []
            anchorSession = nil
            loggedIn = false
            openSessionCount = 0
            sessionEpoch += 1
        }
    }

    // MARK: Login

    /// Logs the user in, unless already logged in or the token needs no login.
    ///
    /// Refuses, without calling `C_Login`, when the token reports the PIN locked, on its final try
    /// or due for change, and when this PIN has failed before: a retry could lock the token.
    public func login(pin: PIN?, evenIfNotRequired: Bool = false) throws(PKCS11Error) {
        loginLock.lock()
        defer { loginLock.unlock() }
        let tokenInfo = try info()
        if !tokenInfo.flags.contains(.loginRequired) && !evenIfNotRequired { return }
        if isLoggedIn { return }
        if tokenInfo.flags.contains(.userPINLocked) {
            throw PKCS11Error(returnValue: .pinLocked, function: "C_Login",
                              reason: "token '\(tokenInfo.label)' reports the user PIN locked (CKF_USER_PIN_LOCKED); the security officer must unlock it")
        }
        if tokenInfo.flags.contains(.userPINFinalTry) {
            throw PKCS11Error(function: "C_Login",
                              reason: "token '\(tokenInfo.label)' has one PIN attempt left (CKF_USER_PIN_FINAL_TRY); KeyBridge will not risk locking it. Log in once by hand with a PIN you are sure of (pkcs11-tool --login --test), then retry")
        }
        if tokenInfo.flags.contains(.userPINToBeChanged) {
            throw PKCS11Error(function: "C_Login",
                              reason: "token '\(tokenInfo.label)' requires the user PIN to be changed first (CKF_USER_PIN_TO_BE_CHANGED); change it with pkcs11-tool --change-pin")
        }
        if pin == nil, tokenInfo.flags.contains(.protectedAuthenticationPath) {
            // The PIN is entered on the device's own pad: C_Login takes no PIN here.
            let rv = try loginCall { session in functions.C_Login(session, CK_USER_TYPE(CKU_USER), nil, 0) }
            try check(rv, "C_Login", "the PIN entry on the token's own keypad for '\(tokenInfo.label)' failed or was cancelled")
            lock.withLock { loggedIn = true }
            return
        }
        guard let pin else {
            // No module call failed: a KeyBridge step, so the error has no CKR_ code and is
            // never taken for a lost session or an outage.
            throw PKCS11Error(function: "login",
                              reason: "token '\(tokenInfo.label)' needs a PIN and none was given; add pin-source=file:/path to the URI or set KEYBRIDGE_PIN")
        }
        lock.lock()
        let failedBefore = failedPINFingerprints.contains(pin.fingerprint)
        lock.unlock()
        if failedBefore {
            throw PKCS11Error(returnValue: .pinIncorrect, function: "C_Login",
                              reason: "this PIN was already rejected by token '\(tokenInfo.label)' and is not tried again; fix the PIN source")
        }
        let rv = try loginCall { session in
            pin.secret.withUnsafeBytes { bytes in
                functions.C_Login(session, CK_USER_TYPE(CKU_USER),
                                  UnsafeMutablePointer(mutating: bytes.bindMemory(to: CK_UTF8CHAR.self).baseAddress),
                                  CK_ULONG(bytes.count))
            }
        }
        if rv == CKR_OK {
            lock.withLock {
                loggedIn = true
                goodPIN = pin
            }
            return
        }
        if rv == CKR_USER_ALREADY_LOGGED_IN {
            // Someone else logged in; this PIN was never checked, so it is not kept for re-logins.
            lock.withLock { loggedIn = true }
            return
        }
        if rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_INVALID {
            lock.withLock {
                failedPINFingerprints.insert(pin.fingerprint)
                // A PIN that worked before and fails now (changed on the token) is not kept either.
                if goodPIN?.fingerprint == pin.fingerprint { goodPIN = nil }
            }
        }
        try check(rv, "C_Login", loginAdvice(rv, label: tokenInfo.label))
    }

    /// The context-specific login that a `CKA_ALWAYS_AUTHENTICATE` key needs before each
    /// operation. Only the PIN that already logged the token in is used, never a new guess.
    func loginForOneOperation(_ session: CK_SESSION_HANDLE) throws(PKCS11Error) {
        guard let pin = lock.withLock({ goodPIN }) else {
            throw PKCS11Error(function: "login",
                              reason: "the key needs a login before every signature (CKA_ALWAYS_AUTHENTICATE), but no PIN has worked on this token yet; supply the PIN with pin-source or KEYBRIDGE_PIN")
        }
        let rv = pin.secret.withUnsafeBytes { bytes in
            functions.C_Login(session, CK_USER_TYPE(CKU_CONTEXT_SPECIFIC),
                              UnsafeMutablePointer(mutating: bytes.bindMemory(to: CK_UTF8CHAR.self).baseAddress),
                              CK_ULONG(bytes.count))
        }
        if rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED {
            // The kept PIN no longer works: forget it, so no later signature sends it again.
            lock.withLock {
                failedPINFingerprints.insert(pin.fingerprint)
                goodPIN = nil
            }
        }
        try check(rv, "C_Login", "the context-specific login for a CKA_ALWAYS_AUTHENTICATE key failed; KeyBridge will not send this PIN again")
    }

    /// Logs in again after a session loss, but only with the PIN that worked before. A logout
    /// made elsewhere (by another part of the application, or the token) leaves the sessions
    /// valid but the private keys invisible, so the sessions' real state is asked first.
    func reloginIfPossible() throws(PKCS11Error) {
        if isLoggedIn {
            let userSession = try withSession { session throws(PKCS11Error) -> Bool in
                var info = CK_SESSION_INFO()
                try check(functions.C_GetSessionInfo(session, &info), "C_GetSessionInfo")
                return info.state == CK_STATE(CKS_RO_USER_FUNCTIONS) || info.state == CK_STATE(CKS_RW_USER_FUNCTIONS)
            }
            if !userSession {
                lock.withLock {
                    loggedIn = false
                    sessionEpoch += 1
                }
            }
        }
        lock.lock()
        let pin = goodPIN
        lock.unlock()
        if let pin { return try login(pin: pin) }
        if isLoggedIn { return }
        let tokenInfo = try info()
        guard tokenInfo.flags.contains(.loginRequired) else { return }
        // Without this the key lookup that follows would fail with a misleading "no key matches".
        throw PKCS11Error(function: "login",
                          reason: "token '\(tokenInfo.label)' was logged out (by the token or by other code in this process, such as an engine) and KeyBridge holds no PIN that worked on it, so it does not log in again on its own; look the key up again with its PIN (PrivateKey.resolve), or let KeyBridge make the first login")
    }

    private func loginAdvice(_ rv: CK_RV, label: String) -> String {
        switch ReturnValue(rawValue: UInt(rv)) {
        case .pinIncorrect:
            return "token '\(label)' rejected the PIN; fix pin-source, KEYBRIDGE_PIN or pin-value. KeyBridge will not retry this PIN"
        case .pinLocked:
            return "token '\(label)' has locked the user PIN; the security officer must unlock it"
        default:
            return "login to token '\(label)' failed"
        }
    }

    /// Runs one `C_Login` on the anchor session inside the module's call gate. A lost session or
    /// device drops the pool and throws; any other result is returned for the caller to judge.
    private func loginCall(_ call: (CK_SESSION_HANDLE) -> CK_RV) throws(PKCS11Error) -> CK_RV {
        try module.withCalls { () throws(PKCS11Error) -> CK_RV in
            try rebindIfRestarted()
            let session = try anchor()
            let rv = call(session)
            let value = ReturnValue(rawValue: UInt(rv))
            if value.meansSessionLost || value.meansTokenUnreachable {
                markSessionsLost()
                try check(rv, "C_Login", "the token lost the session during login; KeyBridge starts over on the next call")
            }
            return rv
        }
    }

    /// The session that holds the login open for the whole pool.
    private func anchor() throws(PKCS11Error) -> CK_SESSION_HANDLE {
        if let existing = lock.withLock({ anchorSession }) { return existing }
        let session = try openSession()
        let kept: CK_SESSION_HANDLE = lock.withLock {
            if let existing = anchorSession { return existing }
            anchorSession = session
            return session
        }
        if kept != session { closeSession(session) }
        return kept
    }
}

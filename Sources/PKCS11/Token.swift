internal import CPKCS11
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A token in one slot: a pool of sessions, one login shared by all of them, and object lookup.
///
/// PKCS#11 keeps the login per application and token, so one logged-in session keeps every
/// pooled session logged in. The pool grows on demand so parallel signers do not queue.
public final class Token: @unchecked Sendable {
    // Mutable state is guarded by `lock`; `module` and `slotID` are immutable.
    let module: PKCS11Module
    public let slotID: UInt
    private let lock = NSLock()
    private var idleSessions: [CK_SESSION_HANDLE] = []
    private var anchorSession: CK_SESSION_HANDLE?
    private var loggedIn = false
    private var goodPIN: PIN?
    private var failedPINFingerprints: Set<Int> = []
    private var cachedMechanisms: Set<UInt>?
    /// Held for a whole login, so two threads cannot both spend an attempt on the same wrong PIN.
    private let loginLock = NSLock()

    init(module: PKCS11Module, slotID: UInt) {
        self.module = module
        self.slotID = slotID
    }

    private var functions: CK_FUNCTION_LIST { module.functions.pointee }

    public func info() throws(PKCS11Error) -> TokenInfo {
        try module.tokenInfo(slotID: slotID)
    }

    public var isLoggedIn: Bool {
        lock.lock()
        defer { lock.unlock() }
        return loggedIn
    }

    /// Mechanisms offered by the token, as raw `CKM_` values; read once, then cached.
    public func mechanisms() throws(PKCS11Error) -> Set<UInt> {
        if let cached = lock.withLock({ cachedMechanisms }) { return cached }
        let offered = try module.mechanisms(slotID: slotID)
        lock.withLock { cachedMechanisms = offered }
        return offered
    }

    // MARK: Sessions

    private func openSession() throws(PKCS11Error) -> CK_SESSION_HANDLE {
        var session: CK_SESSION_HANDLE = 0
        try check(functions.C_OpenSession(CK_SLOT_ID(slotID), CK_FLAGS(CKF_SERIAL_SESSION), nil, nil, &session),
                  "C_OpenSession", "cannot open a session on slot \(slotID); the token may be gone or out of sessions")
        return session
    }

    /// Runs `body` with a session from the pool. A session that reported a lost-session error is
    /// closed rather than returned to the pool.
    /// With `discardOnError`, a session that failed is closed rather than pooled: an operation
    /// that failed halfway (after `C_SignInit`) may still be active in it.
    func withSession<R>(discardOnError: Bool = false, _ body: (CK_SESSION_HANDLE) throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        try module.reinitializeAfterFork()
        lock.lock()
        let pooled = idleSessions.popLast()
        lock.unlock()
        let session: CK_SESSION_HANDLE
        if let pooled { session = pooled } else { session = try openSession() }
        do {
            let result = try body(session)
            lock.lock()
            idleSessions.append(session)
            lock.unlock()
            return result
        } catch {
            if let code = error.returnValue, code.meansSessionLost {
                _ = functions.C_CloseSession(session)
                markSessionsLost()
            } else if discardOnError {
                _ = functions.C_CloseSession(session)
            } else {
                lock.lock()
                idleSessions.append(session)
                lock.unlock()
            }
            throw error
        }
    }

    /// Drops all sessions after an error that means the token lost them, so the next call starts over.
    func markSessionsLost() {
        lock.lock()
        let stale = idleSessions + (anchorSession.map { [$0] } ?? [])
        idleSessions = []
        anchorSession = nil
        loggedIn = false
        lock.unlock()
        for session in stale { _ = functions.C_CloseSession(session) }
    }

    func forgetSessionsAfterFork() {
        // The parent's handles mean nothing in the child; closing them would hit the parent's state.
        lock.lock()
        idleSessions = []
        anchorSession = nil
        loggedIn = false
        lock.unlock()
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
            let session = try anchor()
            try check(functions.C_Login(session, CK_USER_TYPE(CKU_USER), nil, 0), "C_Login",
                      "the PIN entry on the token's own keypad for '\(tokenInfo.label)' failed or was cancelled")
            lock.withLock { loggedIn = true }
            return
        }
        guard let pin else {
            throw PKCS11Error(returnValue: .userNotLoggedIn, function: "C_Login",
                              reason: "token '\(tokenInfo.label)' needs a PIN and none was given; add pin-source=file:/path to the URI or set KEYBRIDGE_PIN")
        }
        lock.lock()
        let failedBefore = failedPINFingerprints.contains(pin.fingerprint)
        lock.unlock()
        if failedBefore {
            throw PKCS11Error(returnValue: .pinIncorrect, function: "C_Login",
                              reason: "this PIN was already rejected by token '\(tokenInfo.label)' and is not tried again; fix the PIN source")
        }
        let session = try anchor()
        let rv = pin.secret.withUnsafeBytes { bytes in
            functions.C_Login(session, CK_USER_TYPE(CKU_USER),
                              UnsafeMutablePointer(mutating: bytes.bindMemory(to: CK_UTF8CHAR.self).baseAddress),
                              CK_ULONG(bytes.count))
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
            lock.lock()
            failedPINFingerprints.insert(pin.fingerprint)
            lock.unlock()
        }
        try check(rv, "C_Login", loginAdvice(rv, label: tokenInfo.label))
    }

    /// The context-specific login that a `CKA_ALWAYS_AUTHENTICATE` key needs before each
    /// operation. Only the PIN that already logged the token in is used, never a new guess.
    func loginForOneOperation(_ session: CK_SESSION_HANDLE) throws(PKCS11Error) {
        guard let pin = lock.withLock({ goodPIN }) else {
            throw PKCS11Error(returnValue: .userNotLoggedIn, function: "C_Login",
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

    /// Logs in again after a session loss, but only with the PIN that worked before.
    func reloginIfPossible() throws(PKCS11Error) {
        lock.lock()
        let pin = goodPIN
        lock.unlock()
        if let pin { try login(pin: pin) }
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

    /// The session that holds the login open for the whole pool.
    private func anchor() throws(PKCS11Error) -> CK_SESSION_HANDLE {
        lock.lock()
        if let anchorSession {
            lock.unlock()
            return anchorSession
        }
        lock.unlock()
        let session = try openSession()
        lock.lock()
        defer { lock.unlock() }
        if let existing = anchorSession {
            _ = functions.C_CloseSession(session)
            return existing
        }
        anchorSession = session
        return session
    }
}

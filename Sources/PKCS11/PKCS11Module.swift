internal import CPKCS11
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loaded PKCS#11 module (`dlopen` plus `C_GetFunctionList`), initialised with OS locking.
///
/// Modules are shared per path inside a process and not finalised at exit: `C_Finalize` there
/// can crash SoftHSM, and other code in the process may still be using the same module.
///
/// When the device or its connection goes away (`ReturnValue.meansTokenUnreachable`), the module
/// is restarted (`C_Finalize`, `C_Initialize`) with a bounded back-off; until that works, calls
/// fail at once with an error saying so, and tokens then find their slots, sessions, login and
/// key handles again.
public final class PKCS11Module: @unchecked Sendable {
    // `functions` is set once in init and read-only afterwards; `initializedInProcess`,
    // `tokens`, `generation` and `outage` are guarded by `lock`. Calls into the module hold
    // `calls` shared; a restart holds it exclusively.
    let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    public let path: String
    private let lock = NSLock()
    private var initializedInProcess: pid_t
    private var tokens: [TokenIdentity: Token] = [:]
    private let calls = CallGate()
    /// Counts module (re)starts; sessions, logins and object handles belong to one generation.
    private var generation: UInt64 = 0
    private var outage: Outage?

    /// The module's own description (`C_GetInfo`).
    public let info: ModuleInfo

    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var registry: [String: PKCS11Module] = [:]

    /// A module set by the application or an OpenSSL configuration file, used when the URI
    /// and `KEYBRIDGE_PKCS11_MODULE` name none.
    public static var configuredModulePath: String? {
        get { configuredModule.current }
        set { configuredModule.current = newValue }
    }
    private static let configuredModule = LockedValue<String?>(nil)

    /// The module to use when a URI names none: `KEYBRIDGE_PKCS11_MODULE`, then the configured
    /// one, else SoftHSM if installed.
    public static func defaultModulePath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let path = environment["KEYBRIDGE_PKCS11_MODULE"], !path.isEmpty { return path }
        if let path = configuredModulePath { return path }
        let softHSM = "/usr/lib/softhsm/libsofthsm2.so"
        return FileManager.default.fileExists(atPath: softHSM) ? softHSM : nil
    }

    /// Debian's multiarch folder name for this machine.
    static var multiarchTriplet: String {
        var system = utsname()
        uname(&system)
        let machine = fixedString(system.machine)
        return (machine == "arm64" ? "aarch64" : machine) + "-linux-gnu"
    }

    /// Loads (once per process) the module a URI names with `module-path` or `module-name`.
    public static func load(for uri: PKCS11URI) throws(PKCS11Error) -> PKCS11Module {
        if let path = uri.modulePath { return try load(path: path) }
        if let name = uri.moduleName {
            let directory = "/usr/lib/\(multiarchTriplet)/pkcs11"
            let candidates = (registeredModulePath(name: name).map { [$0] } ?? [])
                + ["\(directory)/\(name).so", "\(directory)/\(name)", "/usr/lib/softhsm/\(name).so"]
            guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                throw PKCS11Error(function: "module-name",
                                  reason: "no PKCS#11 module named '\(name)' under \(directory); give its full path with module-path=")
            }
            return try load(path: found)
        }
        guard let path = defaultModulePath() else {
            throw PKCS11Error(function: "module-path",
                              reason: "the URI names no PKCS#11 module and SoftHSM is not installed; add ?module-path=/path/to/module.so to the URI or set KEYBRIDGE_PKCS11_MODULE")
        }
        do {
            return try load(path: path)
        } catch {
            // The path came from the environment or configuration, not the URI: say so.
            guard let variable = ProcessInfo.processInfo.environment["KEYBRIDGE_PKCS11_MODULE"], variable == path else { throw error }
            var named = error
            named.reason = named.reason.replacingOccurrences(of: "fix module-path in the URI", with: "fix KEYBRIDGE_PKCS11_MODULE")
                .replacingOccurrences(of: "; fix module-path", with: "; fix KEYBRIDGE_PKCS11_MODULE")
            if !named.reason.contains("KEYBRIDGE_PKCS11_MODULE") { named.reason += " (the module came from KEYBRIDGE_PKCS11_MODULE)" }
            throw named
        }
    }

    /// The module path p11-kit registers under `name` (`/usr/share/p11-kit/modules/NAME.module`).
    static func registeredModulePath(name: String) -> String? {
        guard !name.contains("/"),
              let text = try? String(contentsOfFile: "/usr/share/p11-kit/modules/\(name).module", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, parts[0] == "module" else { continue }
            return parts[1].hasPrefix("/") ? parts[1] : "/usr/lib/\(multiarchTriplet)/pkcs11/\(parts[1])"
        }
        return nil
    }

    /// Loads (once per process) the module at `path`.
    public static func load(path: String) throws(PKCS11Error) -> PKCS11Module {
        registryLock.lock()
        defer { registryLock.unlock() }
        // One module object per real file, so two spellings of a path share one login state.
        let realPath = realpath(path, nil).map { resolved in
            defer { free(resolved) }
            return String(cString: resolved)
        } ?? path
        if let module = registry[realPath] {
            try module.reinitializeAfterFork()
            return module
        }
        let module = try PKCS11Module(path: path)
        registry[realPath] = module
        return module
    }

    private init(path: String) throws(PKCS11Error) {
        guard FileManager.default.fileExists(atPath: path) else {
            throw PKCS11Error(function: "dlopen",
                              reason: "the PKCS#11 module \(path) does not exist; fix module-path in the URI (SoftHSM's is /usr/lib/softhsm/libsofthsm2.so)")
        }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let message = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw PKCS11Error(function: "dlopen",
                              reason: "cannot load the PKCS#11 module \(path): \(message); check that it is a PKCS#11 library for this architecture")
        }
        guard let symbol = dlsym(handle, "C_GetFunctionList") else {
            throw PKCS11Error(function: "dlsym",
                              reason: "\(path) has no C_GetFunctionList, so it is not a PKCS#11 module; fix module-path")
        }
        typealias GetFunctionList = @convention(c) (UnsafeMutablePointer<UnsafeMutablePointer<CK_FUNCTION_LIST>?>?) -> CK_RV
        let getFunctionList = unsafeBitCast(symbol, to: GetFunctionList.self)
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        try check(getFunctionList(&list), "C_GetFunctionList")
        guard let list else {
            throw PKCS11Error(function: "C_GetFunctionList", reason: "\(path) returned no function list")
        }
        functions = list
        self.path = path
        initializedInProcess = getpid()
        _ = PKCS11Module.sigpipeIgnored
        try PKCS11Module.initialize(list, path: path)
        var rawInfo = CK_INFO()
        try check(list.pointee.C_GetInfo(&rawInfo), "C_GetInfo")
        info = ModuleInfo(rawInfo)
    }

    private static func initialize(_ list: UnsafeMutablePointer<CK_FUNCTION_LIST>, path: String) throws(PKCS11Error) {
        var arguments = CK_C_INITIALIZE_ARGS()
        arguments.flags = CK_FLAGS(CKF_OS_LOCKING_OK)
        let rv = withUnsafeMutablePointer(to: &arguments) { list.pointee.C_Initialize(UnsafeMutableRawPointer($0)) }
        if rv == CKR_CRYPTOKI_ALREADY_INITIALIZED { return }
        try check(rv, "C_Initialize", "the module \(path) failed to start; for SoftHSM check SOFTHSM2_CONF and its token directory")
    }

    /// After `fork` the child must call `C_Initialize` again before any other call; sessions and
    /// logins of the parent are not valid there.
    func reinitializeAfterFork() throws(PKCS11Error) {
        lock.lock()
        defer { lock.unlock() }
        let pid = getpid()
        guard pid != initializedInProcess else { return }
        var rv = functions.pointee.C_Initialize(nil)
        if rv == CKR_CRYPTOKI_ALREADY_INITIALIZED {
            // Some modules do not notice the fork; finalising the child's copy is safe here.
            _ = functions.pointee.C_Finalize(nil)
            var arguments = CK_C_INITIALIZE_ARGS()
            arguments.flags = CK_FLAGS(CKF_OS_LOCKING_OK)
            rv = withUnsafeMutablePointer(to: &arguments) { functions.pointee.C_Initialize(UnsafeMutableRawPointer($0)) }
        }
        try check(rv, "C_Initialize", "re-initialising \(path) after fork failed")
        initializedInProcess = pid
        generation += 1
        outage = nil
        for token in tokens.values { token.forgetSessionsAfterFork() }
    }

    // MARK: Connection loss and recovery

    /// What is known about a token that cannot be reached.
    private struct Outage {
        var since: UInt64
        var cause: PKCS11Error
        var failedReconnects = 0
        var nextReconnect: UInt64
    }

    /// Back-off between reconnect attempts: 50 ms doubling up to 400 ms, so a token that comes
    /// back is in use again within half a second, and a missing one costs one cheap
    /// `C_Initialize` per 400 ms at most.
    static func reconnectDelay(afterFailures failures: Int) -> UInt64 {
        let milliseconds = min(50 << min(failures - 1, 4), 400)
        return UInt64(milliseconds) * 1_000_000
    }

    /// Whether the module lost its device or connection and has not reconnected yet.
    public var isUnreachable: Bool { lock.withLock { outage != nil } }

    /// The module generation: it changes whenever the module was started again (after fork or
    /// a lost connection), and with it every session, login and object handle.
    var currentGeneration: UInt64 { lock.withLock { generation } }

    /// Runs `body`, which calls into the module, after restarting the module if it lost its
    /// device and a reconnect is due. While the token is unreachable and no reconnect is due,
    /// throws at once instead of calling. An unreachable-token error from `body` starts an outage.
    ///
    /// With `retryAfterReconnect`, a body that found the connection broken (say the server was
    /// restarted while the process was idle) runs once more right after the reconnect, so the
    /// first caller does not fail. Only for bodies that hold no session or object handle: those
    /// are void after a reconnect.
    func withCalls<R>(retryAfterReconnect: Bool = false, _ body: () throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        try reinitializeAfterFork()
        // Nested calls run inside one that already holds the gate: a restart there would wait
        // for itself.
        let outermost = !calls.isHeldByThisThread
        if outermost { try reconnectIfDue() }
        do {
            return try runShared(body)
        } catch where outermost && retryAfterReconnect && error.isTokenUnavailable {
            try reconnectIfDue()
            return try runShared(body)
        }
    }

    private func runShared<R>(_ body: () throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        try calls.shared { () throws(PKCS11Error) -> R in
            let started = currentGeneration
            do throws(PKCS11Error) {
                return try body()
            } catch {
                if error.isTokenUnavailable { noteUnreachable(error, generation: started) }
                throw error
            }
        }
    }

    private func noteUnreachable(_ error: PKCS11Error, generation started: UInt64) {
        let now = monotonicNanoseconds()
        let opened: Bool = lock.withLock {
            guard generation == started, outage == nil else { return false }
            // The first reconnect may run at once: a short blip then costs one failed call.
            outage = Outage(since: now, cause: error, nextReconnect: now)
            return true
        }
        if opened {
            KeyBridgeLog.warning("the token behind \(path) is unreachable (\(error.function) returned \(error.returnValue?.name ?? "an error")); failing fast and reconnecting with back-off")
        }
    }

    private func reconnectIfDue() throws(PKCS11Error) {
        guard let pending = lock.withLock({ outage }) else { return }
        if monotonicNanoseconds() < pending.nextReconnect { throw unavailable(pending) }
        try calls.exclusive { () throws(PKCS11Error) in
            // Another thread may have reconnected, or tried, while this one waited.
            guard let current = lock.withLock({ outage }) else { return }
            let now = monotonicNanoseconds()
            if now < current.nextReconnect { throw unavailable(current) }
            // Sessions and handles of the old connection are gone; finalising drops the module's
            // own state for them, and initialising connects again.
            _ = functions.pointee.C_Finalize(nil)
            var arguments = CK_C_INITIALIZE_ARGS()
            arguments.flags = CK_FLAGS(CKF_OS_LOCKING_OK)
            let rv = withUnsafeMutablePointer(to: &arguments) { functions.pointee.C_Initialize(UnsafeMutableRawPointer($0)) }
            // A client whose server is still away initialises fine but shows no token.
            var present: CK_ULONG = 0
            let reachable = (rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
                && functions.pointee.C_GetSlotList(CK_BBOOL(CK_TRUE), nil, &present) == CKR_OK && present > 0
            let (stillAway, known): (Outage?, [Token]) = lock.withLock {
                generation += 1
                if reachable {
                    outage = nil
                } else if var still = outage {
                    still.failedReconnects += 1
                    still.nextReconnect = now + PKCS11Module.reconnectDelay(afterFailures: still.failedReconnects)
                    outage = still
                }
                return (outage, Array(tokens.values))
            }
            for token in known { token.forgetSessionsAfterRestart() }
            if let stillAway { throw unavailable(stillAway) }
            let seconds = Double(now - current.since) / 1e9
            KeyBridgeLog.warning("the token behind \(path) is reachable again after \(String(format: "%.1f", seconds)) s; sessions, login and keys are restored on use")
        }
    }

    /// The fail-fast error while a token is away: it names the original failure and the wait.
    private func unavailable(_ outage: Outage) -> PKCS11Error {
        let now = monotonicNanoseconds()
        let away = Double(now &- outage.since) / 1e9
        let next = outage.nextReconnect > now ? Double(outage.nextReconnect - now) / 1e6 : 0
        return PKCS11Error(returnValue: outage.cause.returnValue ?? .deviceError, function: outage.cause.function,
                           reason: "the token is unreachable for \(String(format: "%.1f", away)) s (module \(path)); KeyBridge reconnects by itself, next try in \(Int(next)) ms. Check the HSM, its network or its p11-kit server")
    }

    /// A PKCS#11 client module talks to its HSM over a socket; a write to a socket whose server
    /// died raises SIGPIPE, which by default kills the whole process instead of failing one
    /// call. It is ignored unless the application already chose what SIGPIPE does.
    private static let sigpipeIgnored: Void = {
        let previous = signal(SIGPIPE, SIG_IGN)
        if previous != nil { _ = signal(SIGPIPE, previous) }
    }()

    /// Slots, by default only those with a token present.
    public func slots(tokenPresent: Bool = true) throws(PKCS11Error) -> [Slot] {
        try withCalls(retryAfterReconnect: true) { () throws(PKCS11Error) -> [Slot] in
            var count: CK_ULONG = 0
            let present = CK_BBOOL(tokenPresent ? CK_TRUE : CK_FALSE)
            try check(functions.pointee.C_GetSlotList(present, nil, &count), "C_GetSlotList")
            var ids = [CK_SLOT_ID](repeating: 0, count: Int(count))
            try check(functions.pointee.C_GetSlotList(present, &ids, &count), "C_GetSlotList")
            return try ids.prefix(Int(count)).map { id throws(PKCS11Error) in try slot(id: id) }
        }
    }

    func slot(id: CK_SLOT_ID) throws(PKCS11Error) -> Slot {
        var slotInfo = CK_SLOT_INFO()
        try check(functions.pointee.C_GetSlotInfo(id, &slotInfo), "C_GetSlotInfo")
        var tokenInfo: TokenInfo?
        if slotInfo.flags & CK_FLAGS(CKF_TOKEN_PRESENT) != 0 {
            var rawToken = CK_TOKEN_INFO()
            try check(functions.pointee.C_GetTokenInfo(id, &rawToken), "C_GetTokenInfo")
            tokenInfo = TokenInfo(rawToken)
        }
        return Slot(id: UInt64(id), description: fixedString(slotInfo.slotDescription),
                    manufacturer: fixedString(slotInfo.manufacturerID), token: tokenInfo)
    }

    func tokenInfo(slotID: UInt) throws(PKCS11Error) -> TokenInfo {
        try withCalls(retryAfterReconnect: true) { () throws(PKCS11Error) -> TokenInfo in
            var rawToken = CK_TOKEN_INFO()
            try check(functions.pointee.C_GetTokenInfo(CK_SLOT_ID(slotID), &rawToken), "C_GetTokenInfo")
            return TokenInfo(rawToken)
        }
    }

    /// The token in the one slot that matches the URI's token and slot attributes.
    public func token(matching uri: PKCS11URI) throws(PKCS11Error) -> Token {
        if !libraryMatches(uri) {
            throw PKCS11Error(function: "token lookup",
                              reason: "the module \(path) (\(info.manufacturer) \(info.description) \(info.libraryVersion)) does not match the URI's library-* attributes; fix them or module-path")
        }
        // An uninitialised token (SoftHSM always shows a free one) can hold no keys.
        let candidates = try slots(tokenPresent: true).filter { $0.token?.flags.contains(.tokenInitialized) == true }
        let matching = candidates.filter { $0.matches(uri) }
        guard let chosen = matching.first, chosen.token != nil else {
            let present = candidates.compactMap { slot in slot.token.map { "'\($0.label)' (serial \($0.serialNumber), slot \(slot.id))" } }
            if present.isEmpty, path.contains("softhsm"), ProcessInfo.processInfo.environment["SOFTHSM2_CONF"] == nil {
                throw PKCS11Error(function: "token lookup",
                                  reason: "SoftHSM shows no initialised token because SOFTHSM2_CONF is not set; export SOFTHSM2_CONF=/path/to/softhsm2.conf (make demo's is .state/softhsm2.conf)")
            }
            let list = present.isEmpty ? "no initialised token is present at all" : "tokens present: " + present.joined(separator: ", ")
            throw PKCS11Error(function: "token lookup",
                              reason: "no token matches \(uri.tokenDescription) in \(path); \(list). Fix token= in the URI (for SoftHSM also check SOFTHSM2_CONF)")
        }
        if matching.count > 1 {
            throw PKCS11Error(function: "token lookup",
                              reason: "\(matching.count) tokens match \(uri.tokenDescription); add serial= or slot-id= to the URI to pick one")
        }
        guard let chosenToken = chosen.token else { preconditionFailure("filtered on a present token above") }
        return token(identity: TokenIdentity(chosenToken), slotID: UInt(chosen.id))
    }

    /// One `Token` per token, found by its identity rather than its slot: after a reconnect the
    /// same token may sit in another slot.
    func token(identity: TokenIdentity, slotID: UInt) -> Token {
        let (token, isNew): (Token, Bool) = lock.withLock {
            if let token = tokens[identity] { return (token, false) }
            let token = Token(module: self, identity: identity, slotID: slotID, generation: generation)
            tokens[identity] = token
            return (token, true)
        }
        if !isNew { token.moved(to: slotID) }
        return token
    }

    private func libraryMatches(_ uri: PKCS11URI) -> Bool {
        if let wanted = uri.libraryManufacturer, wanted != info.manufacturer { return false }
        if let wanted = uri.libraryDescription, wanted != info.description { return false }
        if let wanted = uri.libraryVersion {
            if wanted.major != info.libraryMajor { return false }
            if let minor = wanted.minor, minor != info.libraryMinor { return false }
        }
        return true
    }

    /// Mechanisms the token in a slot offers, by raw `CKM_` value.
    func mechanisms(slotID: UInt) throws(PKCS11Error) -> Set<UInt> {
        try withCalls(retryAfterReconnect: true) { () throws(PKCS11Error) -> Set<UInt> in
            var count: CK_ULONG = 0
            try check(functions.pointee.C_GetMechanismList(CK_SLOT_ID(slotID), nil, &count), "C_GetMechanismList")
            // One spare element: p11-kit-client 0.24 (Debian 12) drops mechanisms it cannot carry with a
            // memmove that reads one element past the list (AddressSanitizer reports it).
            var list = [CK_MECHANISM_TYPE](repeating: 0, count: Int(count) + 1)
            try check(functions.pointee.C_GetMechanismList(CK_SLOT_ID(slotID), &list, &count), "C_GetMechanismList")
            return Set(list.prefix(Int(count)).map { UInt($0) })
        }
    }
}

/// Lets many threads call into a module at once, and a module restart run alone.
private final class CallGate: @unchecked Sendable {
    // The rwlock has stable storage of its own and is only used through pthread calls, which
    // are thread-safe; the thread-specific depth tells a thread whether it is already inside.
    private let rwlock: UnsafeMutablePointer<pthread_rwlock_t>
    private var depthKey = pthread_key_t()

    init() {
        rwlock = .allocate(capacity: 1)
        // glibc's default rwlock prefers readers, so a thread inside may take it shared again.
        pthread_rwlock_init(rwlock, nil)
        pthread_key_create(&depthKey, nil)
    }

    deinit {
        pthread_rwlock_destroy(rwlock)
        rwlock.deallocate()
        pthread_key_delete(depthKey)
    }

    var isHeldByThisThread: Bool { depth > 0 }

    private var depth: Int {
        get { Int(bitPattern: pthread_getspecific(depthKey)) }
        set { pthread_setspecific(depthKey, UnsafeRawPointer(bitPattern: newValue)) }
    }

    func shared<R>(_ body: () throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        pthread_rwlock_rdlock(rwlock)
        depth += 1
        defer {
            depth -= 1
            pthread_rwlock_unlock(rwlock)
        }
        return try body()
    }

    func exclusive<R>(_ body: () throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        pthread_rwlock_wrlock(rwlock)
        depth += 1
        defer {
            depth -= 1
            pthread_rwlock_unlock(rwlock)
        }
        return try body()
    }
}

/// Nanoseconds on a clock that only moves forward, for outage timing.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// What tells one token from another, whatever slot it is in.
struct TokenIdentity: Hashable, Sendable {
    var label: String
    var manufacturer: String
    var model: String
    var serialNumber: String

    init(_ info: TokenInfo) {
        label = info.label
        manufacturer = info.manufacturer
        model = info.model
        serialNumber = info.serialNumber
    }
}

/// What `C_GetInfo` says about a module.
public struct ModuleInfo: Sendable, Hashable {
    public var manufacturer: String
    public var description: String
    public var libraryMajor: Int
    public var libraryMinor: Int
    public var libraryVersion: String { "\(libraryMajor).\(libraryMinor)" }

    init(_ raw: CK_INFO) {
        manufacturer = fixedString(raw.manufacturerID)
        description = fixedString(raw.libraryDescription)
        libraryMajor = Int(raw.libraryVersion.major)
        libraryMinor = Int(raw.libraryVersion.minor)
    }
}

/// A slot and, if present, its token.
public struct Slot: Sendable, Hashable {
    public var id: UInt64
    public var description: String
    public var manufacturer: String
    public var token: TokenInfo?

    func matches(_ uri: PKCS11URI) -> Bool {
        if let wanted = uri.slotID, wanted != id { return false }
        if let wanted = uri.slotDescription, wanted != description { return false }
        if let wanted = uri.slotManufacturer, wanted != manufacturer { return false }
        guard let token else {
            return uri.token == nil && uri.manufacturer == nil && uri.model == nil && uri.serial == nil
        }
        if let wanted = uri.token, wanted != token.label { return false }
        if let wanted = uri.manufacturer, wanted != token.manufacturer { return false }
        if let wanted = uri.model, wanted != token.model { return false }
        if let wanted = uri.serial, wanted != token.serialNumber { return false }
        return true
    }
}

/// What `C_GetTokenInfo` says about a token.
public struct TokenInfo: Sendable, Hashable {
    public var label: String
    public var manufacturer: String
    public var model: String
    public var serialNumber: String
    public var flags: TokenFlags

    init(_ raw: CK_TOKEN_INFO) {
        label = fixedString(raw.label)
        manufacturer = fixedString(raw.manufacturerID)
        model = fixedString(raw.model)
        serialNumber = fixedString(raw.serialNumber)
        flags = TokenFlags(rawValue: UInt(raw.flags))
    }
}

/// The token flags KeyBridge acts on.
public struct TokenFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    /// `CKF_LOGIN_REQUIRED`
    public static let loginRequired = TokenFlags(rawValue: UInt(CKF_LOGIN_REQUIRED))
    /// `CKF_USER_PIN_INITIALIZED`
    public static let userPINInitialized = TokenFlags(rawValue: UInt(CKF_USER_PIN_INITIALIZED))
    /// `CKF_TOKEN_INITIALIZED`
    public static let tokenInitialized = TokenFlags(rawValue: UInt(CKF_TOKEN_INITIALIZED))
    /// `CKF_PROTECTED_AUTHENTICATION_PATH`
    public static let protectedAuthenticationPath = TokenFlags(rawValue: UInt(CKF_PROTECTED_AUTHENTICATION_PATH))
    /// `CKF_USER_PIN_COUNT_LOW`
    public static let userPINCountLow = TokenFlags(rawValue: UInt(CKF_USER_PIN_COUNT_LOW))
    /// `CKF_USER_PIN_FINAL_TRY`
    public static let userPINFinalTry = TokenFlags(rawValue: UInt(CKF_USER_PIN_FINAL_TRY))
    /// `CKF_USER_PIN_LOCKED`
    public static let userPINLocked = TokenFlags(rawValue: UInt(CKF_USER_PIN_LOCKED))
    /// `CKF_USER_PIN_TO_BE_CHANGED`
    public static let userPINToBeChanged = TokenFlags(rawValue: UInt(CKF_USER_PIN_TO_BE_CHANGED))
}

/// PKCS#11 text fields are fixed-width and padded with blanks, not NUL-terminated.
func fixedString<T>(_ field: T) -> String {
    withUnsafeBytes(of: field) { bytes in
        let trimmed = bytes.prefix { $0 != 0 }
        let text = String(decoding: trimmed, as: UTF8.self)
        return text.trimmingCharacters(in: .whitespaces)
    }
}

extension PKCS11URI {
    /// The token-selecting attributes only: safe for messages, since it holds no PIN.
    var tokenDescription: String {
        var selector = PKCS11URI()
        selector.token = token
        selector.manufacturer = manufacturer
        selector.model = model
        selector.serial = serial
        selector.slotID = slotID
        selector.slotDescription = slotDescription
        selector.slotManufacturer = slotManufacturer
        return selector.formatted()
    }

    /// The object-selecting attributes only.
    var objectDescription: String {
        var selector = PKCS11URI()
        selector.token = token
        selector.object = object
        selector.id = id
        selector.type = type
        return selector.formatted()
    }
}

internal import COpenSSL
internal import CKeyBridgeShims
import Foundation
import KeyBridgeProvider
import PKCS11
#if canImport(Glibc)
import Glibc
#endif

/// Loads the private key of `.engine(id:identifier:)` through an OpenSSL engine: libp11's
/// `pkcs11`, or a vendor's. The engine finds the key, logs in and makes every signature; the
/// `EVP_PKEY` it returns is a legacy key, which OpenSSL 3 uses next to the KeyBridge provider.
enum EngineKey {
    /// Loads the key. The caller owns the returned `EVP_PKEY` and frees it.
    static func load(engineID: String, identifier: String) throws(KeyBridgeError) -> OpaquePointer {
        guard !engineID.isEmpty, !engineID.contains("/") else {
            throw KeyBridgeError(.usage, "'\(engineID)' is not an OpenSSL engine id; give a name such as pkcs11 (libp11's engine)")
        }
        guard !identifier.isEmpty else {
            throw KeyBridgeError(.usage, "the key identifier for the OpenSSL engine '\(engineID)' is empty; give --key a pkcs11: URI or the engine's key name")
        }
        let request = try Request(identifier: identifier)
        try request.refuseRiskyLogin()
        let engine = try OpenSSLEngine.started(engineID, modulePath: request.modulePath)
        return try request.withPIN { pin throws(KeyBridgeError) in
            try engine.loadPrivateKey(request, pin: pin)
        }
    }

    /// The identifier for messages and `-v`: without its query, which may carry a PIN.
    static func shown(_ identifier: String) -> String {
        KeyReference.redacted(String(identifier.prefix { $0 != "?" }))
    }

    /// What the engine is asked for. A `pkcs11:` URI is read the way the `.pkcs11` key path
    /// reads it: the module from `module-path`, `module-name` or KeyBridge's default, the PIN from
    /// `PINResolver`. Any other identifier is a vendor engine's key name, passed on unchanged.
    struct Request {
        /// What the engine gets: a URI loses its query, because the module and the PIN go
        /// through engine controls and libp11 rejects or mishandles the other query attributes.
        let keyID: String
        let shown: String
        let uri: PKCS11URI?
        let modulePath: String?

        init(identifier: String) throws(KeyBridgeError) {
            shown = EngineKey.shown(identifier)
            let trimmed = identifier.trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.lowercased().hasPrefix("pkcs11:") else {
                uri = nil
                keyID = identifier
                modulePath = nil
                return
            }
            let parsed: PKCS11URI
            do {
                parsed = try PKCS11URI(parsing: trimmed)
            } catch {
                throw KeyBridgeError(.usage, "the key URI is malformed: \(error.reason)")
            }
            uri = parsed
            keyID = String(trimmed.prefix { $0 != "?" })
            modulePath = try Request.modulePath(for: parsed)
        }

        /// `nil` leaves the choice to the engine; libp11 then reads `PKCS11_MODULE_PATH`.
        private static func modulePath(for uri: PKCS11URI) throws(KeyBridgeError) -> String? {
            if let path = uri.modulePath {
                guard FileManager.default.fileExists(atPath: path) else {
                    throw KeyBridgeError(.key, "the PKCS#11 module \(path) does not exist; fix module-path in the URI (SoftHSM's is /usr/lib/softhsm/libsofthsm2.so)")
                }
                return path
            }
            if uri.moduleName != nil {
                // The PKCS11 layer knows how module names map to files; the module it loads is
                // the one the engine will share.
                do {
                    return try PKCS11Module.load(for: uri).path
                } catch {
                    throw KeyBridgeError(.key, error.description)
                }
            }
            if let path = ProcessInfo.processInfo.environment["PKCS11_MODULE_PATH"], !path.isEmpty { return nil }
            return PKCS11Module.defaultModulePath()
        }

        /// The engine logs in by itself, without KeyBridge's login rules. Where the PKCS11 layer
        /// can see the same token, it checks the PIN flags first: a wrong PIN on the final try
        /// would lock the token. Anything it cannot look up is left to the engine to report.
        func refuseRiskyLogin() throws(KeyBridgeError) {
            guard let uri, let modulePath,
                  let token = try? PKCS11Module.load(path: modulePath).token(matching: uri),
                  let info = try? token.info(), info.flags.contains(.loginRequired), !token.isLoggedIn else { return }
            let label = "token '\(info.label)'"
            if info.flags.contains(.userPINLocked) {
                throw KeyBridgeError(.key, "\(label) reports the user PIN locked (CKF_USER_PIN_LOCKED); the security officer must unlock it")
            }
            if info.flags.contains(.userPINFinalTry) {
                throw KeyBridgeError(.key, "\(label) has one PIN attempt left (CKF_USER_PIN_FINAL_TRY); KeyBridge will not let the engine risk locking it. Log in once by hand with a PIN you are sure of (pkcs11-tool --login --test), then retry")
            }
            if info.flags.contains(.userPINToBeChanged) {
                throw KeyBridgeError(.key, "\(label) requires the user PIN to be changed first (CKF_USER_PIN_TO_BE_CHANGED); change it with pkcs11-tool --change-pin")
            }
        }

        /// Lends the PIN for the engine's `PIN` control as a C string, and zeroes it afterwards.
        /// `nil` means no PIN was found; the engine may then prompt, but only on a terminal.
        func withPIN<R>(_ body: (EnginePIN?) throws(KeyBridgeError) -> R) throws(KeyBridgeError) -> R {
            guard let uri else { return try body(nil) }
            let resolved: ResolvedPIN?
            do {
                // The prompt is left to the engine, which names the token it asks for.
                resolved = try PINResolver.resolve(for: uri, allowPrompt: false)
            } catch {
                throw KeyBridgeError(.key, error.description)
            }
            guard let resolved else { return try body(nil) }
            if let warning = resolved.warning { KeyBridgeLog.warning(warning) }
            guard let pin = EnginePIN(origin: resolved.origin, uri: uri) else {
                throw KeyBridgeError(.key, "cannot read the PIN again from \(resolved.origin.rawValue) for the OpenSSL engine; check that it has not changed or gone")
            }
            return try body(pin)
        }
    }
}

/// A PIN as a NUL-terminated C string for an engine control; zeroed when released. The engine
/// keeps a copy of its own (libp11 needs it to log in again), which it wipes itself.
///
/// `PIN` lends its bytes to nothing outside the PKCS11 module, so they are read again from the
/// source `PINResolver` chose; the resolver has already checked that source and made its warnings.
final class EnginePIN {
    // Owned here alone; never shared across threads.
    private let buffer: UnsafeMutableBufferPointer<CChar>
    let origin: PINOrigin
    /// Recognises a PIN that failed before, without keeping it.
    let fingerprint: Int

    init?(origin: PINOrigin, uri: PKCS11URI) {
        var bytes: [UInt8]
        switch origin {
        case .pinSourceFile:
            guard let source = uri.pinSource, let path = EnginePIN.path(ofPINSource: source),
                  var data = FileManager.default.contents(atPath: path) else { return nil }
            bytes = [UInt8](data)
            data.withUnsafeMutableBytes { EnginePIN.wipe($0) }
            // As in PINResolver: a trailing newline comes from editors and `echo`.
            while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }
        case .environment:
            guard let value = ProcessInfo.processInfo.environment[PINResolver.environmentVariable] else { return nil }
            bytes = Array(value.utf8)
        case .uriPinValue:
            guard let value = uri.pinValue else { return nil }
            bytes = Array(value.utf8)
        case .terminalPrompt:
            return nil
        }
        buffer = .allocate(capacity: bytes.count + 1)
        buffer.initialize(repeating: 0)
        for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
        var hasher = Hasher()
        hasher.combine(bytes)
        fingerprint = hasher.finalize()
        bytes.withUnsafeMutableBytes { EnginePIN.wipe($0) }
        self.origin = origin
    }

    deinit {
        EnginePIN.wipe(UnsafeMutableRawBufferPointer(buffer))
        buffer.deallocate()
    }

    /// explicit_bzero is not elided by the optimiser, unlike a plain loop.
    private static func wipe(_ bytes: UnsafeMutableRawBufferPointer) {
        if let base = bytes.baseAddress { explicit_bzero(base, bytes.count) }
    }

    func withCString<R>(_ body: (UnsafePointer<CChar>) throws(KeyBridgeError) -> R) throws(KeyBridgeError) -> R {
        try body(UnsafePointer(buffer.baseAddress!))
    }

    /// The same `pin-source` forms PINResolver accepts: `file:/path`, `file:///path`, `/path`.
    private static func path(ofPINSource source: String) -> String? {
        if source.hasPrefix("file:") {
            let rest = source.dropFirst("file:".count)
            return String(rest.hasPrefix("//") ? rest.dropFirst(2) : rest)
        }
        return source.hasPrefix("/") ? source : nil
    }
}

/// One started OpenSSL engine per id, holding a functional reference for the life of the process.
///
/// An engine is never finished: libp11's finish unloads its PKCS#11 module, which may be the very
/// module the PKCS11 layer uses in this process (and SoftHSM can crash in `C_Finalize`), and an
/// `EVP_PKEY` it loaded does not keep the engine running by itself. `PKCS11Module` follows the same rule.
final class OpenSSLEngine: @unchecked Sendable {
    // `engine`, `id` and `modulePath` are set once. `lock` guards `rejectedPINs` and serialises
    // setting the PIN control and loading a key, so one load never runs with another's PIN.
    private let engine: OpaquePointer
    let id: String
    let modulePath: String?
    private let lock = NSLock()
    private var rejectedPINs: Set<Int> = []

    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var registry: [String: OpenSSLEngine] = [:]

    /// The engine `id`, started on first use. One libp11 engine drives one PKCS#11 module per
    /// process, so a second module is refused rather than silently ignored.
    static func started(_ id: String, modulePath: String?) throws(KeyBridgeError) -> OpenSSLEngine {
        registryLock.lock()
        defer { registryLock.unlock() }
        if let engine = registry[id] {
            if let modulePath, let current = engine.modulePath, modulePath != current {
                throw KeyBridgeError(.key, "the OpenSSL engine '\(id)' already uses the PKCS#11 module \(current) in this process and cannot switch to \(modulePath); use one module per process, or a pkcs11: key without --engine")
            }
            return engine
        }
        let engine = try OpenSSLEngine(id: id, modulePath: modulePath)
        registry[id] = engine
        return engine
    }

    private init(id: String, modulePath: String?) throws(KeyBridgeError) {
        ERR_clear_error()
        // A structural reference; OpenSSL finds `<id>.so` in its engines folder through the dynamic engine.
        guard let engine = CKeyBridgeShims_ENGINE_by_id(id) else {
            throw OpenSSLEngine.notInstalled(id, queue: OpenSSLError.drainQueue())
        }
        // libcurl's global init runs ENGINE_register_all_complete, which would make every engine in
        // OpenSSL's list the default RSA and EC implementation of the whole process; the provider
        // path's EVP_PKEY_fromdata then fails, and software keys would run through the engine.
        _ = CKeyBridgeShims_ENGINE_set_flags_NO_REGISTER_ALL(engine)
        // Commands the engine does not have are skipped (optional = 1): MODULE_PATH and QUIET are
        // libp11's; QUIET keeps libp11 from printing its own error lines, which the queue also has.
        if let modulePath, CKeyBridgeShims_ENGINE_ctrl_cmd_string(engine, "MODULE_PATH", modulePath, 1) != 1 {
            let queue = OpenSSLError.drainQueue()
            CKeyBridgeShims_ENGINE_free(engine)
            throw KeyBridgeError(.key, "the OpenSSL engine '\(id)' refused the PKCS#11 module \(modulePath): \(OpenSSLEngine.text(queue))")
        }
        _ = CKeyBridgeShims_ENGINE_ctrl_cmd_string(engine, "QUIET", nil, 1)
        ERR_clear_error()
        let started = CKeyBridgeShims_ENGINE_init(engine) == 1
        // The functional reference from ENGINE_init keeps the engine; the structural one is done.
        let queue = started ? [] : OpenSSLError.drainQueue()
        CKeyBridgeShims_ENGINE_free(engine)
        guard started else {
            throw KeyBridgeError(.key, "the OpenSSL engine '\(id)' did not start: \(OpenSSLEngine.text(queue)); check its configuration (for libp11, the PKCS#11 module)")
        }
        self.engine = engine
        self.id = id
        self.modulePath = modulePath
        KeyBridgeLog.debug("OpenSSL engine '\(id)' started" + (modulePath.map { " with the PKCS#11 module \($0)" } ?? ""))
    }

    /// Loads a private key; the caller owns the returned `EVP_PKEY`.
    func loadPrivateKey(_ request: EngineKey.Request, pin: EnginePIN?) throws(KeyBridgeError) -> OpaquePointer {
        lock.lock()
        defer { lock.unlock() }
        let subject = "the OpenSSL engine '\(id)' could not load the key \(request.shown)"
        if let pin {
            guard !rejectedPINs.contains(pin.fingerprint) else {
                throw KeyBridgeError(.key, "\(subject): this PIN, from \(pin.origin.rawValue), was already rejected and is not tried again; fix the PIN source")
            }
            ERR_clear_error()
            let accepted = try pin.withCString { text throws(KeyBridgeError) in
                CKeyBridgeShims_ENGINE_ctrl_cmd_string(engine, "PIN", text, 1) == 1
            }
            guard accepted else {
                throw KeyBridgeError(.key, "the OpenSSL engine '\(id)' refused the PIN control: \(OpenSSLEngine.text(OpenSSLError.drainQueue()))")
            }
        }
        // Without a PIN the engine may ask for one, but only on a terminal: elsewhere nobody
        // answers, and an empty answer would be tried as a PIN and count as a wrong one.
        let mayPrompt = pin == nil && isatty(STDIN_FILENO) == 1
        KeyBridgeLog.debug("loading \(request.shown) through the OpenSSL engine '\(id)'"
                           + (pin.map { ", PIN from \($0.origin.rawValue)" } ?? (mayPrompt ? ", the engine may prompt for the PIN" : ", no PIN given")))
        ERR_clear_error()
        guard let key = CKeyBridgeShims_ENGINE_load_private_key(engine, request.keyID, mayPrompt ? nil : refusingUIMethod, nil) else {
            let queue = OpenSSLError.drainQueue()
            throw failure(subject, request: request, queue: queue, pin: pin, refusedPrompt: !mayPrompt)
        }
        return key
    }

    private func failure(_ subject: String, request: EngineKey.Request, queue: [String], pin: EnginePIN?,
                         refusedPrompt: Bool) -> KeyBridgeError {
        // libp11 reports CKR_ values as text only; no other engine error says "PIN".
        let text = queue.joined(separator: "; ").lowercased()
        if let pin, ["pin incorrect", "pin invalid", "pin len"].contains(where: text.contains) {
            rejectedPINs.insert(pin.fingerprint)
            return KeyBridgeError(.key, "\(subject): the token rejected the PIN (\(OpenSSLEngine.text(queue))); the PIN came from \(pin.origin.rawValue). Fix it; KeyBridge will not retry this PIN")
        }
        if text.contains("pin locked") {
            return KeyBridgeError(.key, "\(subject): the token has locked the user PIN (\(OpenSSLEngine.text(queue))); the security officer must unlock it")
        }
        if pin == nil, refusedPrompt, text.contains("ui routines") {
            return KeyBridgeError(.key, "\(subject): the token needs a PIN and none was given; add pin-source=file:/path to the URI or set KEYBRIDGE_PIN")
        }
        let hint: String
        if request.uri != nil {
            let module = request.modulePath ?? "MODULE"
            let softHSM = module.contains("softhsm") && ProcessInfo.processInfo.environment["SOFTHSM2_CONF"] == nil
            hint = "check token=, object= or id= in the URI against 'pkcs11-tool --module \(module) --login -O'"
                + (softHSM ? ", and set SOFTHSM2_CONF to the token's SoftHSM config" : "")
        } else {
            hint = id == "pkcs11" ? "give libp11's engine a pkcs11: URI" : "check the key name the engine '\(id)' expects"
        }
        return KeyBridgeError(.key, "\(subject): \(OpenSSLEngine.text(queue)); \(hint)")
    }

    private static func notInstalled(_ id: String, queue: [String]) -> KeyBridgeError {
        let folder = ProcessInfo.processInfo.environment["OPENSSL_ENGINES"] ?? enginesFolder
        let file = "\(folder)/\(id).so"
        guard !FileManager.default.fileExists(atPath: file) else {
            return KeyBridgeError(.key, "the OpenSSL engine '\(id)' (\(file)) cannot be loaded: \(text(queue)); reinstall it for this OpenSSL version")
        }
        let package = id == "pkcs11" ? "install libengine-pkcs11-openssl (libp11's engine)" : "install the vendor's engine"
        return KeyBridgeError(.key, "the OpenSSL engine '\(id)' is not installed (OpenSSL found no \(file)); \(package), or set OPENSSL_ENGINES to the folder that holds \(id).so")
    }

    /// OpenSSL's compiled-in engines folder, from `OpenSSL_version`'s `ENGINESDIR: "…"`.
    private static var enginesFolder: String {
        guard let raw = OpenSSL_version(OPENSSL_ENGINES_DIR) else { return "the OpenSSL engines folder" }
        return String(cString: raw).split(separator: "\"").dropFirst().first.map(String.init) ?? "the OpenSSL engines folder"
    }

    private static func text(_ queue: [String]) -> String {
        queue.isEmpty ? "no detail from OpenSSL" : queue.joined(separator: "; ")
    }
}

/// A UI method whose every prompt fails, for engines that must not ask for a PIN. Made once
/// and never freed, as engines may keep it; OpenSSL only reads it, so sharing it is safe.
nonisolated(unsafe) private let refusingUIMethod: OpaquePointer? = CKeyBridgeShims_UI_create_refusing_method()

internal import COpenSSL
internal import CKeyBridgeShims
import Foundation
import PKCS11

/// An error from OpenSSL: the function that failed and the drained error queue.
public struct OpenSSLError: Error, Sendable, CustomStringConvertible {
    public var function: String
    public var reason: String
    public var queue: [String]

    public init(function: String, reason: String, queue: [String] = []) {
        self.function = function
        self.reason = reason
        self.queue = queue
    }

    public var description: String {
        let details = queue.isEmpty ? "" : " (" + queue.joined(separator: "; ") + ")"
        return "\(function): \(reason)\(details)"
    }

    /// The one place that drains OpenSSL's error queue into an error value.
    package static func drain(function: String, reason: String) -> OpenSSLError {
        OpenSSLError(function: function, reason: reason, queue: drainQueue())
    }

    /// The error after a failed OpenSSL call: the token's own cause when a provider callback
    /// recorded one on this thread, else `fallback` with OpenSSL's queue.
    package static func afterFailedCall(_ function: String, fallback: String) -> OpenSSLError {
        let queue = drainQueue()
        if let cause = ProviderDiagnostics.takeLastFailure() { return OpenSSLError(function: function, reason: cause) }
        return OpenSSLError(function: function, reason: fallback, queue: queue)
    }

    package static func drainQueue() -> [String] {
        var messages: [String] = []
        var file: UnsafePointer<CChar>?
        var line: Int32 = 0
        var data: UnsafePointer<CChar>?
        var flags: Int32 = 0
        while true {
            let code = ERR_get_error_all(&file, &line, nil, &data, &flags)
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            var text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if let data, flags & Int32(ERR_TXT_STRING) != 0 {
                let extra = String(cString: data)
                if !extra.isEmpty { text += " [\(extra)]" }
            }
            messages.append(text)
        }
        return messages
    }
}

/// C strings that live as long as the process; OSSL_PARAM keys and algorithm names must.
enum StaticCString {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var table: [String: UnsafePointer<CChar>] = [:]

    static func get(_ text: String) -> UnsafePointer<CChar> {
        lock.lock()
        defer { lock.unlock() }
        if let existing = table[text] { return existing }
        let copy = UnsafePointer(strdup(text)!)
        table[text] = copy
        return copy
    }
}

/// Reports a failure inside a provider callback on OpenSSL's error queue.
/// The location recorded is the Swift caller's, not the shim's. OpenSSL keeps the file and
/// function pointers, so they must be the static, NUL-terminated storage of literals.
func raiseProviderError(_ text: String, file: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
    let fileName = file.hasPointerRepresentation ? UnsafeRawPointer(file.utf8Start).assumingMemoryBound(to: CChar.self) : nil
    let functionName = function.hasPointerRepresentation ? UnsafeRawPointer(function.utf8Start).assumingMemoryBound(to: CChar.self) : nil
    CKeyBridgeShims_ERR_raise_data(ERR_LIB_PROV, Int32(ERR_R_OPERATION_FAIL), fileName, Int32(line), functionName, text)
    ProviderDiagnostics.recordFailure(text)
}

extension OpenSSLError {
    /// A token error as an OpenSSL-layer error, without repeating the function name.
    init(_ error: PKCS11Error) {
        self.init(function: error.function,
                  reason: error.returnValue.map { "\($0.name): \(error.reason)" } ?? error.reason)
    }
}

/// Remembers the last failure and the last signing mechanism per thread, for `-v` output and
/// for error messages that name the token's cause rather than OpenSSL's generic one.
public enum ProviderDiagnostics {
    private final class Box: @unchecked Sendable {
        // Thread-local storage: each thread only touches its own box.
        var lastFailure: String?
        var lastMechanism: String?
    }
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { pointer in if let pointer { Unmanaged<AnyObject>.fromOpaque(pointer).release() } }
        return key
    }()

    private static var box: Box {
        if let pointer = pthread_getspecific(key) {
            return Unmanaged<Box>.fromOpaque(pointer).takeUnretainedValue()
        }
        let box = Box()
        pthread_setspecific(key, Unmanaged.passRetained(box).toOpaque())
        return box
    }

    static func recordFailure(_ text: String) { box.lastFailure = text }
    static func recordMechanism(_ text: String) { box.lastMechanism = text }

    /// Forgets the last mechanism, so a handshake that signs nothing reports nothing.
    public static func clearLastMechanism() { box.lastMechanism = nil }

    /// The last failure a provider callback reported on this thread, then cleared.
    public static func takeLastFailure() -> String? {
        defer { box.lastFailure = nil }
        return box.lastFailure
    }

    /// The token mechanism of the last signature made on this thread.
    public static var lastMechanism: String? { box.lastMechanism }
}

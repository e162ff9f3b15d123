#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Bytes that are wiped when the last reference goes away.
final class SecretBytes: @unchecked Sendable {
    // Immutable after init; the buffer is only read, so sharing across threads is safe.
    private let buffer: UnsafeMutableRawBufferPointer

    init<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        buffer = .allocate(byteCount: max(bytes.count, 1), alignment: 1)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        _ = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes.count]).initializeMemory(as: UInt8.self, from: bytes)
        count = bytes.count
    }

    let count: Int

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }

    deinit {
        // explicit_bzero is not elided by the optimiser, unlike a plain loop.
        explicit_bzero(buffer.baseAddress!, buffer.count)
        buffer.deallocate()
    }
}

/// A user PIN. Its bytes are wiped when the last copy is released, and it never prints itself.
public struct PIN: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    let secret: SecretBytes

    /// Takes the PIN from a string; the caller should drop its own copy soon after.
    public init(_ text: String) {
        secret = SecretBytes(Array(text.utf8))
    }

    public init(bytes: [UInt8]) {
        secret = SecretBytes(bytes)
    }

    public var isEmpty: Bool { secret.count == 0 }

    public var description: String { "PIN(redacted)" }
    public var debugDescription: String { "PIN(redacted)" }

    /// A keyed fingerprint, so a failed PIN can be recognised without keeping it.
    var fingerprint: Int {
        secret.withUnsafeBytes { bytes in
            var hasher = Hasher()
            hasher.combine(bytes: bytes)
            return hasher.finalize()
        }
    }
}

/// Where a PIN came from; reported so users can see which source won, never the PIN itself.
public enum PINOrigin: String, Sendable {
    case pinSourceFile = "the URI's pin-source file"
    case environment = "the KEYBRIDGE_PIN environment variable"
    case uriPinValue = "the URI's pin-value"
    case terminalPrompt = "the terminal prompt"
}

public struct ResolvedPIN: Sendable {
    public var pin: PIN
    public var origin: PINOrigin
    /// Set when the PIN came from a place that others can read.
    public var warning: String?
}

/// Finds the PIN for a URI: `pin-source` file, then `KEYBRIDGE_PIN`, then `pin-value`, then a
/// terminal prompt. Returns `nil` when none is available (a token without login may not need one).
public enum PINResolver {
    /// A path for messages: control characters (which a percent-decoded URI may hold) escaped,
    /// and long values cut.
    static func printable(_ text: String) -> String {
        let escaped = text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "\\x" + String($0.value, radix: 16) : String($0) }.joined()
        return escaped.count > 200 ? String(escaped.prefix(200)) + "…" : escaped
    }

    public static let environmentVariable = "KEYBRIDGE_PIN"

    public static func resolve(for uri: PKCS11URI,
                               environment: [String: String] = ProcessInfo.processInfo.environment,
                               promptLabel: String? = nil,
                               allowPrompt: Bool = true) throws(PKCS11Error) -> ResolvedPIN? {
        if let source = uri.pinSource {
            return ResolvedPIN(pin: try readPINSource(source), origin: .pinSourceFile)
        }
        if let value = environment[environmentVariable], !value.isEmpty {
            let unused = uri.pinValue == nil ? nil
                : "the URI also carries a pin-value, which KEYBRIDGE_PIN overrides; remove it, as process listings and logs can show it"
            return ResolvedPIN(pin: PIN(value), origin: .environment, warning: unused)
        }
        if let value = uri.pinValue {
            return ResolvedPIN(pin: PIN(value), origin: .uriPinValue,
                               warning: "the PIN is written in the URI's pin-value, where process listings and logs can show it; use pin-source=file:… or KEYBRIDGE_PIN instead")
        }
        if allowPrompt, isatty(STDIN_FILENO) == 1, let entered = promptForPIN(label: promptLabel) {
            return ResolvedPIN(pin: entered, origin: .terminalPrompt)
        }
        return nil
    }

    /// Reads a PIN from a `file:` URI or an absolute path, as `pin-source` names it.
    public static func readPINSource(_ source: String) throws(PKCS11Error) -> PIN {
        let path: String
        if source.hasPrefix("file:") {
            var rest = String(source.dropFirst("file:".count))
            if rest.hasPrefix("//") { rest = String(rest.dropFirst(2)) }
            path = rest
        } else if source.hasPrefix("/") {
            path = source
        } else {
            throw PKCS11Error(function: "pin-source",
                              reason: "pin-source must be a file: URI or an absolute path (got a value of another form); write pin-source=file:/path/to/pin")
        }
        let shown = PINResolver.printable(path)
        // Only a small regular file can hold a PIN: a device, FIFO or huge file would hang, eat
        // memory, or send junk to C_Login and spend one of the token's attempts.
        let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw PKCS11Error(function: "pin-source", reason: "cannot open the PIN file \(shown) (\(String(cString: strerror(errno)))); check the path and its permissions")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw PKCS11Error(function: "pin-source", reason: "the PIN source \(shown) is not a regular file; put the PIN alone in a file (mode 0600)")
        }
        let limit = 256
        guard status.st_size <= limit else {
            throw PKCS11Error(function: "pin-source", reason: "the PIN file \(shown) is \(status.st_size) bytes, more than any PIN; check that pin-source names the PIN file")
        }
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        let count = read(descriptor, &bytes, bytes.count)
        guard count >= 0 else {
            throw PKCS11Error(function: "pin-source", reason: "cannot read the PIN file \(shown) (\(String(cString: strerror(errno))))")
        }
        bytes.removeSubrange(count...)
        // A trailing newline comes from editors and `echo`, and is never part of the PIN.
        while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }
        guard !bytes.isEmpty else {
            throw PKCS11Error(function: "pin-source", reason: "the PIN file \(shown) is empty; write the PIN into it")
        }
        let pin = PIN(bytes: bytes)
        bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } }
        return pin
    }

    private static func promptForPIN(label: String?) -> PIN? {
        let prompt = "PIN for \(label ?? "the token"): "
        guard let raw = getpass(prompt) else { return nil }
        let length = strlen(raw)
        let pin = PIN(bytes: Array(UnsafeRawBufferPointer(start: raw, count: length)))
        explicit_bzero(raw, length)
        return pin.isEmpty ? nil : pin
    }
}

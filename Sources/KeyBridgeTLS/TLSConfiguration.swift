import Foundation
import PKCS11

/// TLS protocol versions KeyBridge offers.
public enum TLSVersion: String, Sendable, Hashable, Comparable, CaseIterable {
    case v1_2 = "1.2"
    case v1_3 = "1.3"

    public static func < (lhs: TLSVersion, rhs: TLSVersion) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Where the client's private key lives.
public enum KeyReference: Sendable, Hashable, CustomStringConvertible {
    /// A key on a PKCS#11 token, named by an RFC 7512 URI. It never leaves the token.
    case pkcs11(String)
    /// A PEM private key file; for comparison and migration only, as the key is then in memory.
    case pemFile(String)
    /// A key that an OpenSSL engine loads and uses, like Node's `privateKeyEngine` and
    /// `privateKeyIdentifier` or curl's `--engine ID --key-type ENG`. For libp11's engine
    /// (`id: "pkcs11"`) the identifier is a `pkcs11:` URI, whose module and PIN KeyBridge
    /// resolves as for `.pkcs11`; a vendor's engine takes its own key names. The engine, not
    /// KeyBridge, talks to the token.
    case engine(id: String, identifier: String)

    /// Reads a command-line style reference: a `pkcs11:` URI or a file path.
    public init(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        self = trimmed.lowercased().hasPrefix("pkcs11:") ? .pkcs11(trimmed) : .pemFile(text)
    }

    /// Describes the reference without its query part, which may carry a PIN.
    public var description: String {
        switch self {
        case let .pkcs11(uri): return String(uri.prefix { $0 != "?" })
        case let .pemFile(path): return KeyReference.redacted(path)
        case let .engine(id, identifier): return "\(KeyReference.redacted(String(identifier.prefix { $0 != "?" }))) (OpenSSL engine '\(id)')"
        }
    }

    /// Text with any `pin-value=…` replaced, for messages that must show a path or URI.
    public static func redactedPath(_ text: String) -> String { redacted(text) }

    /// A mistyped URI is taken for a file path; it may still carry a PIN, which must not be shown.
    static func redacted(_ text: String) -> String {
        text.replacingOccurrences(of: #"(?i)pin-value=[^&;]*"#, with: "pin-value=<redacted>", options: .regularExpression)
    }

    /// Text that looks like a PKCS#11 URI although it lacks the `pkcs11:` scheme.
    var looksLikeMistypedURI: Bool {
        guard case let .pemFile(path) = self else { return false }
        return ["pin-value=", "pin-source=", "module-path=", "object=", "token="].contains { path.lowercased().contains($0) }
    }
}

/// Where the client certificate chain comes from.
public enum CertificateChainSource: Sendable, Hashable, CustomStringConvertible {
    /// A PEM file with the leaf first, then the intermediates; all are sent to the server.
    case pemFile(String)
    /// A certificate object on a token, named by a `pkcs11:` URI; the intermediates are found
    /// on the same token by issuer links, so nothing needs to be on disk.
    case pkcs11(String)

    /// Reads a command-line style reference: a `pkcs11:` URI or a file path.
    public init(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        self = trimmed.lowercased().hasPrefix("pkcs11:") ? .pkcs11(trimmed) : .pemFile(text)
    }

    /// Describes the source without a URI's query, which may carry a PIN.
    public var description: String {
        switch self {
        case let .pemFile(path): return KeyReference.redacted(path)
        case let .pkcs11(uri): return String(uri.prefix { $0 != "?" })
        }
    }

    /// For a token certificate: the same token with no object named, which asks KeyBridge to
    /// find the private key by the certificate.
    var tokenKeyReference: KeyReference? {
        guard case let .pkcs11(text) = self, var uri = try? PKCS11URI(parsing: text) else { return nil }
        uri.object = nil
        uri.id = nil
        uri.type = nil
        return .pkcs11(uri.formatted(includingPINValue: true))
    }
}

/// The roots used to check the server's certificate.
public enum TrustRoots: Sendable, Hashable {
    /// The system's CA bundle.
    case system
    /// Only the certificates in this PEM file.
    case pemFile(String)
}

/// Everything needed to make an mTLS connection. Hostname verification is always on.
public struct TLSConfiguration: Sendable, Hashable {
    public var certificateChain: CertificateChainSource?
    public var key: KeyReference?
    public var trustRoots: TrustRoots
    public var minimumVersion: TLSVersion
    public var maximumVersion: TLSVersion

    public init(certificateChain: CertificateChainSource? = nil, key: KeyReference? = nil,
                trustRoots: TrustRoots = .system, minimumVersion: TLSVersion = .v1_2,
                maximumVersion: TLSVersion = .v1_3) {
        self.certificateChain = certificateChain
        self.key = key
        self.trustRoots = trustRoots
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
    }
}

/// An error from the TLS client, with a category a program can act on and a sentence naming
/// the cause and the fix. Never contains a PIN.
public struct KeyBridgeError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is; maps to the command-line exit code.
    public struct Kind: RawRepresentable, Sendable, Hashable {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The command line or configuration is wrong.
        public static let usage = Kind(rawValue: "usage")
        /// The key could not be found, logged in to or used.
        public static let key = Kind(rawValue: "key")
        /// The certificate chain could not be read, or does not belong to the key.
        public static let certificate = Kind(rawValue: "certificate")
        /// The server's certificate was not trusted or did not match the host.
        public static let serverVerification = Kind(rawValue: "server-verification")
        /// The TLS handshake failed for another reason (for example the server rejected us).
        public static let handshake = Kind(rawValue: "handshake")
        /// Connecting, sending or receiving failed.
        public static let transport = Kind(rawValue: "transport")
        /// The server answered with an HTTP error status (with `--fail`).
        public static let httpStatus = Kind(rawValue: "http-status")
        /// A local file could not be read or written.
        public static let file = Kind(rawValue: "file")
        /// No answer within the connect or total time limit.
        public static let timeout = Kind(rawValue: "timeout")
        /// The response could not be written out.
        public static let output = Kind(rawValue: "output")
        /// A body is larger than the limit.
        public static let tooLarge = Kind(rawValue: "too-large")
    }

    public var kind: Kind
    public var reason: String

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public var description: String { reason }
}

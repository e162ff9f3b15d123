import Foundation
import KeyBridgeTLS
import OpenBanking

/// `broker.json`: where the broker listens, the banks it forwards to and the callers allowed
/// to use them. Holds no secret: keys are `pkcs11:` URIs (the PIN comes from their pin-source)
/// and callers are known by the SHA-256 of their bearer token.
public struct BrokerConfiguration: Sendable, Decodable {
    /// One bank: the upstream, the mTLS identity and the request-signing profile.
    public struct Bank: Sendable, Decodable {
        /// The upstream base URL (https); the caller's path after `/{bank}` is appended to it.
        public var upstream: String
        /// PEM trust roots for the upstream; the system's when absent.
        public var caFile: String?
        /// The `pkcs11:` URI of the mTLS (QWAC) key.
        public var key: String
        /// The QWAC chain: a PEM file or a `pkcs11:` URI.
        public var cert: String
        public var signing: Signing?
        /// The limit for one upstream attempt, connection included (default 30).
        public var timeoutSeconds: Int?
        /// The limit for connecting and the TLS handshake (default: `timeoutSeconds`, at most 10).
        public var connectTimeoutSeconds: Int?
        /// Connections kept open to the bank at most; more concurrent callers wait (default 8).
        public var maxConnections: Int?
        /// Offer HTTP/2 in ALPN; the bank decides (default true). False keeps to HTTP/1.1.
        public var http2: Bool?
        /// When to try again after a lost connection (default: no retry).
        public var retry: Retry?
    }

    /// The retry policy of a bank. Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) are
    /// sent again, and only after a connection failure (refused, reset, closed before an answer);
    /// a POST, a timeout, an HTTP error status, a TLS rejection or a token outage is never retried.
    public struct Retry: Sendable, Decodable {
        /// Attempts in all, the first included (1 to 10).
        public var maxAttempts: Int
        /// The wait before the second attempt; it doubles for each further one (default 100).
        public var backoffMilliseconds: Int?
        /// The longest wait between two attempts (default 2000).
        public var maxBackoffMilliseconds: Int?

        /// The wait before attempt `attempt` (2, 3, …), in seconds.
        func delay(beforeAttempt attempt: Int) -> Double {
            let base = Double(backoffMilliseconds ?? 100)
            let cap = Double(maxBackoffMilliseconds ?? 2000)
            return min(cap, base * pow(2, Double(max(0, attempt - 2)))) / 1000
        }
    }

    /// How the broker signs each request to a bank.
    public struct Signing: Sendable, Decodable {
        public enum Profile: String, Sendable, Decodable {
            case berlinGroup = "berlin-group", rfc9421, jws
        }

        public var profile: Profile
        /// The `pkcs11:` URI of the signing (QSealC) key.
        public var key: String
        /// The QSealC: a PEM file or a `pkcs11:` URI (needed for berlin-group).
        public var cert: String?
        /// The profile's settings, as `keybridge request --sign-options` takes them, inline.
        public var options: JSONValue?
    }

    public struct Caller: Sendable, Decodable {
        public var name: String
        /// Lower-case or upper-case hex of the SHA-256 of the bearer token.
        public var tokenSHA256: String
        /// The banks this caller may use.
        public var banks: [String]
    }

    /// "127.0.0.1:8080", "[::1]:8080" or "unix:/run/keybridge/broker.sock".
    public var listen: String
    /// The permissions of a Unix socket, as an octal string (default "0660": owner and group).
    public var socketMode: String?
    public var banks: [String: Bank]
    public var callers: [Caller]
    /// The largest request body accepted (default 1 MiB).
    public var maxBodyBytes: Int?
    /// On SIGTERM, how long requests in flight may take to finish (default 30).
    public var shutdownGraceSeconds: Double?

    public var bodyLimit: Int { maxBodyBytes ?? 1 << 20 }

    /// Reads and checks a configuration file.
    public static func load(path: String) throws(BrokerError) -> BrokerConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw BrokerError("cannot read the broker configuration \(path)")
        }
        let configuration = try decode(data, source: path)
        // Before any bank is built (at start and on reload): otherwise a missing cert showed as
        // an mTLS identity error in `request --cert` words, and a missing caFile not at all
        // until the first request.
        try configuration.checkFiles(source: path)
        return configuration
    }

    /// Throws one error naming every unusable file of the configuration by its field.
    public func checkFiles(source: String = "the configuration") throws(BrokerError) {
        let problems = fileProblems()
        guard !problems.isEmpty else { return }
        throw BrokerError("\(source): \(problems.count == 1 ? "a file" : "\(problems.count) files") of the configuration cannot be used: "
                          + problems.joined(separator: "; ") + "; correct the paths (cert and signing.cert may also be pkcs11: URIs of certificates on the token)")
    }

    public static func decode(_ data: Data, source: String = "the configuration") throws(BrokerError) -> BrokerConfiguration {
        let configuration: BrokerConfiguration
        do {
            configuration = try JSONDecoder().decode(BrokerConfiguration.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw BrokerError("\(source): missing \"\(key.stringValue)\" at \(path(context.codingPath))")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                let DecodingError.dataCorrupted(context) {
            throw BrokerError("\(source): \(context.debugDescription) at \(path(context.codingPath))")
        } catch {
            throw BrokerError("\(source) is not valid JSON: \(error)")
        }
        try configuration.validate(source: source)
        return configuration
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.isEmpty ? "the top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    /// Where the broker listens.
    public enum ListenAddress: Sendable, Equatable {
        case tcp(host: String, port: Int)
        /// A Unix socket and its permission bits.
        case unix(path: String, mode: UInt32)
    }

    /// `listen` parsed: HOST:PORT or unix:PATH (with `socketMode`).
    public func listenAddress() throws(BrokerError) -> ListenAddress {
        try BrokerConfiguration.parseListen(listen, socketMode: socketMode)
    }

    /// Parses a `listen` value (also the `--listen` option).
    public static func parseListen(_ value: String, socketMode: String? = nil) throws(BrokerError) -> ListenAddress {
        let text = value.trimmingCharacters(in: .whitespaces)
        if text.lowercased().hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/") else {
                throw BrokerError("\"listen\": a Unix socket needs an absolute path, as in unix:/run/keybridge/broker.sock, not '\(value.prefix(60))'")
            }
            let modeText = socketMode ?? "0660"
            guard let mode = UInt32(modeText, radix: 8), mode <= 0o777, mode & 0o600 == 0o600 else {
                throw BrokerError("\"socketMode\" must be octal permissions that let the owner read and write, such as \"0660\" or \"0600\", not '\(modeText.prefix(10))'")
            }
            return .unix(path: path, mode: mode)
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            throw BrokerError("\"listen\" must be HOST:PORT such as 127.0.0.1:8080, or unix:/PATH, not '\(value.prefix(60))'")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }

    /// Every file the banks name (caFile; cert and signing.cert unless they are `pkcs11:` URIs),
    /// each problem named by its configuration field, so one run reports all of them.
    func fileProblems() -> [String] {
        var problems: [String] = []
        for (name, bank) in banks.sorted(by: { $0.key < $1.key }) {
            if let caFile = bank.caFile, let problem = BrokerConfiguration.certificateFileProblem(caFile, pemOnly: true) {
                problems.append("banks.\(name).caFile \(problem)")
            }
            if !bank.cert.lowercased().hasPrefix("pkcs11:"), let problem = BrokerConfiguration.certificateFileProblem(bank.cert, pemOnly: true) {
                problems.append("banks.\(name).cert \(problem)")
            }
            if let cert = bank.signing?.cert, !cert.lowercased().hasPrefix("pkcs11:"),
               let problem = BrokerConfiguration.certificateFileProblem(cert, pemOnly: false) {
                problems.append("banks.\(name).signing.cert \(problem)")
            }
        }
        return problems
    }

    /// Why a certificate file cannot be used, or nil. The TLS layer reads chains and trust roots
    /// as PEM only; the QSealC may also be one DER certificate.
    static func certificateFileProblem(_ path: String, pemOnly: Bool) -> String? {
        let shown = KeyReference.redactedPath(path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return "\(shown): no such file" }
        guard !isDirectory.boolValue else { return "\(shown) is a folder, not a certificate file" }
        guard let data = FileManager.default.contents(atPath: path) else { return "\(shown) cannot be read (check its permissions)" }
        if data.range(of: Data("-----BEGIN CERTIFICATE-----".utf8)) != nil { return nil }
        if !pemOnly, (try? EIDASCertificate(contents: Array(data))) != nil { return nil }
        return "\(shown) holds no \(pemOnly ? "PEM" : "PEM or DER") certificate"
    }

    func validate(source: String) throws(BrokerError) {
        _ = try listenAddress()
        guard !banks.isEmpty else { throw BrokerError("\(source): \"banks\" is empty; configure at least one bank") }
        for (name, bank) in banks.sorted(by: { $0.key < $1.key }) {
            guard !name.isEmpty, name.utf8.allSatisfy({ BrokerHTTP.isUnreservedPathByte($0) }) else {
                throw BrokerError("\(source): the bank name '\(name.prefix(40))' must be letters, digits, '-', '_' or '.'")
            }
            guard !Broker.operationalRoutes.contains(name.lowercased()) else {
                throw BrokerError("\(source): the bank name '\(name)' is reserved: /\(name.lowercased()) is the broker's own route; rename the bank")
            }
            guard let url = URLComponents(string: bank.upstream), url.scheme?.lowercased() == "https", url.host?.isEmpty == false,
                  url.query == nil, url.fragment == nil else {
                throw BrokerError("\(source): banks.\(name).upstream must be an https:// base URL with no query, not '\(bank.upstream.prefix(80))'")
            }
            guard bank.key.lowercased().hasPrefix("pkcs11:") else {
                throw BrokerError("\(source): banks.\(name).key must be a pkcs11: URI; the broker keeps keys on the token")
            }
            if let timeout = bank.timeoutSeconds, timeout < 1 {
                throw BrokerError("\(source): banks.\(name).timeoutSeconds must be 1 or more")
            }
            if let timeout = bank.connectTimeoutSeconds, timeout < 1 {
                throw BrokerError("\(source): banks.\(name).connectTimeoutSeconds must be 1 or more")
            }
            if let connections = bank.maxConnections, !(1...256).contains(connections) {
                throw BrokerError("\(source): banks.\(name).maxConnections must be between 1 and 256")
            }
            if let retry = bank.retry {
                guard (1...10).contains(retry.maxAttempts) else {
                    throw BrokerError("\(source): banks.\(name).retry.maxAttempts must be between 1 and 10 (1: no retry)")
                }
                if let wait = retry.backoffMilliseconds, !(0...60_000).contains(wait) {
                    throw BrokerError("\(source): banks.\(name).retry.backoffMilliseconds must be between 0 and 60000")
                }
                if let wait = retry.maxBackoffMilliseconds, !(0...60_000).contains(wait) {
                    throw BrokerError("\(source): banks.\(name).retry.maxBackoffMilliseconds must be between 0 and 60000")
                }
            }
            if let signing = bank.signing {
                guard signing.key.lowercased().hasPrefix("pkcs11:") else {
                    throw BrokerError("\(source): banks.\(name).signing.key must be a pkcs11: URI")
                }
                if signing.profile == .berlinGroup, signing.cert == nil {
                    throw BrokerError("\(source): banks.\(name).signing.cert is needed for berlin-group (the QSealC)")
                }
            }
        }
        for caller in callers {
            guard BrokerAuthenticator.digest(fromHex: caller.tokenSHA256) != nil else {
                throw BrokerError("\(source): caller '\(caller.name.prefix(40))' needs tokenSHA256 as 64 hex digits")
            }
            for bank in caller.banks where banks[bank] == nil {
                throw BrokerError("\(source): caller '\(caller.name.prefix(40))' is allowed bank '\(bank.prefix(40))', which is not configured")
            }
        }
        if let limit = maxBodyBytes, limit < 0 { throw BrokerError("\(source): maxBodyBytes must not be negative") }
        if let grace = shutdownGraceSeconds, !(0...3600).contains(grace) {
            throw BrokerError("\(source): shutdownGraceSeconds must be between 0 and 3600")
        }
    }
}

/// Any JSON value, so inline `options` can be handed to a profile's own decoder.
public enum JSONValue: Sendable, Decodable, Hashable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    var foundation: Any {
        switch self {
        case .null: return NSNull()
        case let .bool(value): return value
        case let .number(value): return value == value.rounded() && abs(value) < 1e15 ? Int(value) as Any : value
        case let .string(value): return value
        case let .array(values): return values.map(\.foundation)
        case let .object(members): return members.mapValues(\.foundation)
        }
    }

    /// The value as JSON text.
    public var data: Data {
        (try? JSONSerialization.data(withJSONObject: foundation, options: [.fragmentsAllowed, .sortedKeys])) ?? Data("null".utf8)
    }
}

/// A configuration or start-up failure; its text names no secret.
public struct BrokerError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

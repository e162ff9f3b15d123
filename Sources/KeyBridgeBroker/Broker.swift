import Foundation
import KeyBridgeTLS
import OpenBanking
import PKCS11

/// A request as the broker's HTTP server received it.
public struct BrokerRequest: Sendable {
    public var method: String
    /// The request target exactly as sent (not unescaped).
    public var target: String
    public var headers: [(name: String, value: String)]
    public var body: Data

    public init(method: String, target: String, headers: [(name: String, value: String)], body: Data = Data()) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.name.equalsIgnoringASCIICase(name) }?.value
    }
}

/// The broker's answer to its caller.
public struct BrokerResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: Data
    /// The stable error code of a broker failure (for the log line); nil for the bank's answers.
    var errorCode: String?
    /// The `CKR_` code of a token outage (for the log line).
    var tokenError: String?

    public init(status: Int, headers: [(name: String, value: String)] = [], body: Data = Data()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// `{"error": …, "cause": …}`: `error` is a stable code, `cause` a sentence for people.
    /// Neither ever holds the caller's token, a PIN or a key URI's query.
    static func failure(_ status: Int, _ error: String, _ cause: String, extra: [String: String] = [:]) -> BrokerResponse {
        var object = extra
        object["error"] = error
        object["cause"] = cause
        let body = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        var response = BrokerResponse(status: status, headers: [("Content-Type", "application/json")], body: body + Data("\n".utf8))
        response.errorCode = error
        return response
    }
}

/// The mTLS broker: checks the caller, signs the request with the bank's token key and forwards
/// it over the bank's mTLS client (a pool of kept-alive connections with TLS session resumption).
///
/// `GET /healthz` and `GET /metrics` are answered by the broker itself, before bank routing and
/// without a bearer token (see `operationalRoutes`): bind the broker to a private address.
public final class Broker: Sendable {
    public let configuration: BrokerConfiguration
    let routes: [String: BankRoute]
    let metrics: BrokerMetrics
    /// Each route's upstream parsed once, for the per-request check that a path stays on it.
    private let upstreamURLs: [String: URL]
    private let authenticator: BrokerAuthenticator
    private let log: @Sendable (String) -> Void

    /// Loads every bank's identity and signing key now, so a wrong PIN or a missing key stops
    /// the start rather than the first request. `log` receives one JSON line per request.
    public convenience init(configuration: BrokerConfiguration, log: @escaping @Sendable (String) -> Void = { _ in }) throws(BrokerError) {
        try self.init(configuration: configuration, log: log, metrics: nil)
    }

    private init(configuration: BrokerConfiguration, log: @escaping @Sendable (String) -> Void, metrics: BrokerMetrics?) throws(BrokerError) {
        self.configuration = configuration
        var routes: [String: BankRoute] = [:]
        for (name, bank) in configuration.banks.sorted(by: { $0.key < $1.key }) {
            routes[name] = try BankRoute(name: name, bank: bank)
        }
        self.routes = routes
        upstreamURLs = routes.compactMapValues { URL(string: $0.upstream) }
        if let metrics {
            metrics.register(banks: Array(routes.keys))
            self.metrics = metrics
        } else {
            self.metrics = BrokerMetrics(banks: Array(routes.keys))
        }
        authenticator = BrokerAuthenticator(configuration.callers)
        self.log = log
    }

    /// A broker for a new configuration (a reload): every bank's identity, certificates and keys
    /// are loaded again, and the counters carry on. Throws, leaving this broker untouched, when
    /// the configuration cannot be used.
    public func reloaded(with configuration: BrokerConfiguration) throws(BrokerError) -> Broker {
        try Broker(configuration: configuration, log: log, metrics: metrics)
    }

    /// Counts a configuration reload in `/metrics`.
    public func recordReload(succeeded: Bool) { metrics.recordReload(succeeded: succeeded) }

    /// Hex of the SHA-256 of a bearer token, the form `callers[].tokenSHA256` takes.
    public static func tokenSHA256(_ token: String) -> String { BrokerAuthenticator.hexDigest(ofToken: token) }

    /// One JSON object on one line, keys sorted, for the broker's log.
    public static func logLine(_ fields: [String: any Sendable]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// What one request did, for its log line.
    struct Trace {
        var bank = "-"
        var caller = "-"
        var attempts = 0
        var httpVersion: String?
        /// "full", "resumed" or "reused" (a kept-alive connection).
        var connection: String?
        var upstreamStatus: Int?
    }

    /// Answers one request; never throws, every failure is a JSON error response. The answer
    /// carries `X-Request-ID`: the caller's, or one the broker made.
    ///
    /// `bodyTooLarge` is for the server, which stops reading a body over `maxBodyBytes`: the
    /// answer is then 413, logged like any other.
    public func handle(_ request: BrokerRequest, bodyTooLarge: Bool = false) -> BrokerResponse {
        if !bodyTooLarge, let answer = operationalResponse(request) { return answer }
        let started = ProcessInfo.processInfo.systemUptime
        let requestID = BrokerHTTP.requestID(request.header("X-Request-ID")) ?? BrokerAuthenticator.randomRequestID()
        var trace = Trace()
        var response = bodyTooLarge ? payloadTooLarge() : respond(request, requestID: requestID, trace: &trace)
        let seconds = ProcessInfo.processInfo.systemUptime - started
        metrics.recordRequest(bank: trace.bank, status: response.status, seconds: seconds)
        response.headers.removeAll { $0.name.equalsIgnoringASCIICase("X-Request-ID") }
        response.headers.append(("X-Request-ID", requestID))
        log(Broker.requestLogLine(request, requestID: requestID, trace: trace, response: response, seconds: seconds))
        return response
    }

    /// The request's log line, keys in sorted order (the order `logLine` gives). Never the query
    /// (it may carry account numbers), the token, a header value or a PIN.
    static func requestLogLine(_ request: BrokerRequest, requestID: String, trace: Trace, response: BrokerResponse,
                               seconds: Double) -> String {
        let path = request.target.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(request.target[..<$0]) } ?? request.target
        var line = BrokerLogLine()
        if trace.attempts > 0 { line.add("attempts", trace.attempts) }
        line.add("bank", trace.bank)
        line.add("caller", trace.caller)
        if let code = response.errorCode { line.add("error", code) }
        line.add("method", String(request.method.prefix(16)))
        line.add("ms", Int((seconds * 1000).rounded()))
        line.add("path", String(path.prefix(200)))
        line.add("requestId", requestID)
        line.add("status", response.status)
        line.add("time", BrokerLogLine.timestamp())
        if let tokenError = response.tokenError { line.add("tokenError", tokenError) }
        if let connection = trace.connection { line.add("upstreamConnection", connection) }
        if let version = trace.httpVersion { line.add("upstreamHttp", version) }
        return line.text
    }

    /// The payload-too-large answer, for the server to give before the whole body is read.
    public func payloadTooLarge() -> BrokerResponse {
        .failure(413, "body-too-large", "the request body is larger than \(configuration.bodyLimit) bytes, the broker's maxBodyBytes")
    }

    private func respond(_ request: BrokerRequest, requestID: String, trace: inout Trace) -> BrokerResponse {
        let method = request.method.uppercased()
        if method == "CONNECT" {
            return .failure(400, "connect-refused", "the broker is not an open proxy; CONNECT is refused")
        }
        guard request.target.hasPrefix("/") else {
            return .failure(400, "absolute-form-refused", "the request target must be a path (/{bank}/…); absolute-form targets are refused")
        }
        guard BrokerHTTP.isToken(request.method) else {
            return .failure(400, "bad-method", "the method is not a valid HTTP token")
        }
        for header in request.headers {
            guard BrokerHTTP.isToken(header.name) else {
                return .failure(400, "bad-header", "a header name has characters outside the HTTP token set")
            }
            guard BrokerHTTP.isFieldValue(header.value) else {
                return .failure(400, "bad-header", "the value of header \(header.name.prefix(60)) holds CR, LF or another control character")
            }
        }
        guard request.body.count <= configuration.bodyLimit else { return payloadTooLarge() }

        guard let caller = authenticator.caller(authorization: request.header("Authorization")) else {
            return .failure(401, "unauthorized", request.header("Authorization") == nil
                ? "no Authorization: Bearer token was sent" : "the bearer token is not one the broker knows")
        }
        trace.caller = caller.name

        // "/{bank}/{rest}?query": the bank is the first segment.
        let queryStart = request.target.firstIndex(of: "?")
        let path = String(request.target[..<(queryStart ?? request.target.endIndex)])
        let query = queryStart.map { String(request.target[$0...]) } ?? ""
        let segments = path.dropFirst().split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let name = segments.first.map(String.init) ?? ""
        guard let route = routes[name] else {
            return .failure(404, "unknown-bank", "no bank named '\(String(name.prefix(40)).filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })' is configured; the path must start with /{bank}/")
        }
        trace.bank = name
        guard caller.banks.contains(name) else {
            return .failure(403, "bank-not-allowed", "caller '\(caller.name)' is not allowed bank '\(name)'")
        }
        let rest = segments.count > 1 ? "/" + segments[1] : ""
        // No dot segments (also percent-encoded): they could climb out of the bank's base path.
        let decodedDots = rest.utf8.contains(UInt8(ascii: "%")) ? rest.lowercased().replacingOccurrences(of: "%2e", with: ".") : rest
        let dotSegments = decodedDots.split(separator: "/", omittingEmptySubsequences: false)
        guard !dotSegments.contains(where: { $0 == "." || $0 == ".." }), !rest.utf8.contains(UInt8(ascii: "\\")) else {
            return .failure(400, "bad-path", "dot segments (. and ..) are refused in the path")
        }
        let url = route.upstream + rest + query
        // The upstream's scheme, host and port are the configured ones: nothing the caller sent
        // (Host, an absolute path with "//", "@") can point the request elsewhere.
        guard let parsedURL = URL(string: url), let upstreamURL = upstreamURLs[name],
              parsedURL.scheme == upstreamURL.scheme, parsedURL.host == upstreamURL.host, parsedURL.port == upstreamURL.port,
              parsedURL.user == nil else {
            return .failure(400, "bad-path", "the path and query do not make a valid URL on the bank's upstream")
        }

        var headers = request.headers.filter { header in
            let lower = header.name.lowercased()
            return !BrokerHTTP.hopByHop.contains(lower) && !lower.hasPrefix("proxy-") && lower != "x-request-id"
                && !(route.signer != nil && BrokerHTTP.signatureHeaders.contains(lower))
        }
        headers.append(("X-Request-ID", requestID))
        let body: Data? = request.body.isEmpty && ["GET", "HEAD", "DELETE", "OPTIONS"].contains(method) ? nil : request.body
        do {
            let signingStarted = ProcessInfo.processInfo.systemUptime
            defer {
                if route.signer != nil {
                    metrics.recordSignature(bank: name, seconds: ProcessInfo.processInfo.systemUptime - signingStarted)
                }
            }
            headers += try route.signatureHeaders(HTTPRequestParts(method: method, url: parsedURL, headers: headers, body: request.body))
        } catch {
            return .signingFailure(reason: error.reason, bank: name)
        }

        let outgoing = HTTPRequest(method: method, url: url, headers: headers, body: body)
        let maximumAttempts = BrokerHTTP.isIdempotent(method) ? (route.retry?.maxAttempts ?? 1) : 1
        while true {
            trace.attempts += 1
            do {
                let answer = try route.client.send(outgoing)
                trace.httpVersion = answer.httpVersion
                trace.upstreamStatus = answer.status
                metrics.recordUpstreamResponse(bank: name, httpVersion: answer.httpVersion)
                // A non-nil `tls` means this transfer opened a connection: a full handshake, in
                // which the mTLS key signed a CertificateVerify, or a resumed one, which signs nothing.
                if let tls = answer.tls {
                    trace.connection = tls.resumed ? "resumed" : "full"
                    metrics.recordHandshake(bank: name, resumed: tls.resumed, signed: !tls.resumed && tls.clientSignatureScheme != nil)
                } else {
                    trace.connection = "reused"
                }
                let passed = answer.headers.filter { header in
                    let lower = header.name.lowercased()
                    return !BrokerHTTP.responseDropped.contains(lower) && !lower.hasPrefix("proxy-")
                }
                return BrokerResponse(status: answer.status, headers: passed, body: answer.body)
            } catch {
                // Only a lost connection is tried again: the request may not have reached the bank
                // at all, and for an idempotent method a second copy does no harm.
                guard trace.attempts < maximumAttempts, error.kind == .transport, TokenOutage.cause(in: error.reason) == nil,
                      let retry = route.retry else {
                    return BrokerResponse.upstreamFailure(error, bank: name, attempts: trace.attempts)
                }
                metrics.recordRetry(bank: name)
                Thread.sleep(forTimeInterval: retry.delay(beforeAttempt: trace.attempts + 1))
            }
        }
    }
}

/// Token failures that mean the token (or the session with it) is gone, not that the request
/// is wrong: the answer is 503, and the caller may try again once the token is back.
enum TokenOutage {
    static let returnValues: [ReturnValue] = [
        .deviceRemoved, .tokenNotPresent, .deviceError, .sessionClosed, .sessionHandleInvalid, .userNotLoggedIn,
        .cryptokiNotInitialized, ReturnValue(rawValue: 0x31) /* CKR_DEVICE_MEMORY */, ReturnValue(rawValue: 0xE1) /* CKR_TOKEN_NOT_RECOGNIZED */,
    ]

    /// The `CKR_` name of the first outage code named in an error text (the provider and the
    /// PKCS#11 layer put the name in every token error they report), or nil.
    static func cause(in text: String) -> String? {
        returnValues.first { text.contains($0.name) }?.name
    }
}

extension BrokerResponse {
    /// 504 for a timeout, 502 for everything else that kept the upstream from answering.
    /// The answer when the upstream gave none: 503 for a token outage (the handshake could not
    /// be signed), 504 for a timeout, 502 for everything else.
    static func upstreamFailure(_ error: KeyBridgeError, bank: String, attempts: Int = 1) -> BrokerResponse {
        if let code = TokenOutage.cause(in: error.reason) {
            return .tokenUnavailable(bank: bank, code: code, detail: "the mTLS handshake could not be signed: \(error.reason)")
        }
        let tried = attempts > 1 ? " (\(attempts) attempts)" : ""
        switch error.kind {
        case .timeout:
            return .failure(504, "upstream-timeout", "bank '\(bank)' did not answer in time: \(error.reason)")
        case .serverVerification:
            return .failure(502, "upstream-tls", "bank '\(bank)': the upstream's certificate was not trusted: \(error.reason)")
        case .handshake, .certificate, .key:
            return .failure(502, "upstream-tls", "bank '\(bank)': the TLS connection failed: \(error.reason)")
        case .tooLarge:
            return .failure(502, "upstream-too-large", "bank '\(bank)': \(error.reason)")
        default:
            return .failure(502, "upstream-unreachable", "bank '\(bank)': \(error.reason)\(tried)")
        }
    }
}

extension BrokerResponse {
    /// 503 `token-unavailable`: the token (HSM) cannot sign now; `code` is the `CKR_` cause.
    static func tokenUnavailable(bank: String, code: String, detail: String) -> BrokerResponse {
        var response = BrokerResponse.failure(503, "token-unavailable", "bank '\(bank)': the token is unavailable (\(code)); \(detail)",
                                              extra: ["pkcs11": code])
        response.headers.append(("Retry-After", "5"))
        response.tokenError = code
        return response
    }

    /// The answer when the request could not be signed: 503 for a token outage, else 502.
    static func signingFailure(reason: String, bank: String) -> BrokerResponse {
        if let code = TokenOutage.cause(in: reason) {
            return .tokenUnavailable(bank: bank, code: code, detail: "the request could not be signed: \(reason)")
        }
        return .failure(502, "signing-failed", "the broker could not sign the request for bank '\(bank)': \(reason)")
    }
}

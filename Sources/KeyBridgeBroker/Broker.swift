import Foundation
import KeyBridgeTLS
import OpenBanking

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
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

/// The broker's answer to its caller.
public struct BrokerResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: Data

    public init(status: Int, headers: [(name: String, value: String)] = [], body: Data = Data()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// `{"error": …, "cause": …}`: `error` is a stable code, `cause` a sentence for people.
    /// Neither ever holds the caller's token, a PIN or a key URI's query.
    static func failure(_ status: Int, _ error: String, _ cause: String) -> BrokerResponse {
        let object = ["error": error, "cause": cause]
        let body = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return BrokerResponse(status: status, headers: [("Content-Type", "application/json")], body: body + Data("\n".utf8))
    }
}

/// The mTLS broker: checks the caller, signs the request with the bank's token key and forwards
/// it over the bank's mTLS client.
///
/// `GET /healthz` and `GET /metrics` are answered by the broker itself, before bank routing and
/// without a bearer token (see `operationalRoutes`): bind the broker to a private address.
public final class Broker: Sendable {
    public let configuration: BrokerConfiguration
    let routes: [String: BankRoute]
    let metrics: BrokerMetrics
    private let authenticator: BrokerAuthenticator
    private let log: @Sendable (String) -> Void

    /// Loads every bank's identity and signing key now, so a wrong PIN or a missing key stops
    /// the start rather than the first request.
    public init(configuration: BrokerConfiguration, log: @escaping @Sendable (String) -> Void = { _ in }) throws(BrokerError) {
        self.configuration = configuration
        var routes: [String: BankRoute] = [:]
        for (name, bank) in configuration.banks.sorted(by: { $0.key < $1.key }) {
            routes[name] = try BankRoute(name: name, bank: bank)
        }
        self.routes = routes
        metrics = BrokerMetrics(banks: Array(routes.keys))
        authenticator = BrokerAuthenticator(configuration.callers)
        self.log = log
    }

    /// Hex of the SHA-256 of a bearer token, the form `callers[].tokenSHA256` takes.
    public static func tokenSHA256(_ token: String) -> String { BrokerAuthenticator.hexDigest(ofToken: token) }

    /// Answers one request; never throws, every failure is a JSON error response.
    public func handle(_ request: BrokerRequest) -> BrokerResponse {
        if let answer = operationalResponse(request) { return answer }
        let started = Date()
        var bankName = "-"
        var callerName = "-"
        let response = respond(request, bank: &bankName, caller: &callerName)
        metrics.recordRequest(bank: bankName, status: response.status, seconds: Date().timeIntervalSince(started))
        let line: [String: Any] = [
            "method": String(request.method.prefix(16)), "bank": bankName, "caller": callerName, "status": response.status,
            "ms": Int(Date().timeIntervalSince(started) * 1000),
            "requestId": request.header("X-Request-ID").map { String($0.prefix(80)) } ?? "",
        ]
        if let data = try? JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) {
            log(String(decoding: data, as: UTF8.self))
        }
        return response
    }

    /// The payload-too-large answer, for the server to give before the whole body is read.
    public func payloadTooLarge() -> BrokerResponse {
        .failure(413, "body-too-large", "the request body is larger than \(configuration.bodyLimit) bytes, the broker's maxBodyBytes")
    }

    private func respond(_ request: BrokerRequest, bank bankName: inout String, caller callerName: inout String) -> BrokerResponse {
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
        callerName = caller.name

        // "/{bank}/{rest}?query": the bank is the first segment.
        let queryStart = request.target.firstIndex(of: "?")
        let path = String(request.target[..<(queryStart ?? request.target.endIndex)])
        let query = queryStart.map { String(request.target[$0...]) } ?? ""
        let segments = path.dropFirst().split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let name = segments.first.map(String.init) ?? ""
        guard let route = routes[name] else {
            return .failure(404, "unknown-bank", "no bank named '\(String(name.prefix(40)).filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })' is configured; the path must start with /{bank}/")
        }
        bankName = name
        guard caller.banks.contains(name) else {
            return .failure(403, "bank-not-allowed", "caller '\(caller.name)' is not allowed bank '\(name)'")
        }
        let rest = segments.count > 1 ? "/" + segments[1] : ""
        // No dot segments (also percent-encoded): they could climb out of the bank's base path.
        let dotSegments = rest.lowercased().replacingOccurrences(of: "%2e", with: ".").split(separator: "/", omittingEmptySubsequences: false)
        guard !dotSegments.contains(where: { $0 == "." || $0 == ".." }), !rest.contains("\\") else {
            return .failure(400, "bad-path", "dot segments (. and ..) are refused in the path")
        }
        let url = route.upstream + rest + query
        guard let parsedURL = URL(string: url) else {
            return .failure(400, "bad-path", "the path and query do not make a valid URL")
        }

        var headers = request.headers.filter { header in
            let lower = header.name.lowercased()
            return !BrokerHTTP.hopByHop.contains(lower) && !lower.hasPrefix("proxy-")
                && !(route.signer != nil && BrokerHTTP.signatureHeaders.contains(lower))
        }
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
            return .failure(502, "signing-failed", "the broker could not sign the request for bank '\(name)': \(error.reason)")
        }

        let outgoing = HTTPRequest(method: method, url: url, headers: headers, body: body)
        var attempts = 1 + (BrokerHTTP.isIdempotent(method) ? route.retries : 0)
        while true {
            attempts -= 1
            do {
                let answer = try route.client.send(outgoing)
                // A non-nil `tls` means this transfer made a new handshake; a client signature
                // scheme means the mTLS key signed a CertificateVerify in it.
                if let tls = answer.tls { metrics.recordHandshake(bank: name, signed: tls.clientSignatureScheme != nil) }
                let passed = answer.headers.filter { !BrokerHTTP.responseDropped.contains($0.name.lowercased()) && !$0.name.lowercased().hasPrefix("proxy-") }
                return BrokerResponse(status: answer.status, headers: passed, body: answer.body)
            } catch {
                if attempts > 0 && error.kind == .transport { continue }
                return BrokerResponse.upstreamFailure(error, bank: name)
            }
        }
    }
}

extension BrokerResponse {
    /// 504 for a timeout, 502 for everything else that kept the upstream from answering.
    static func upstreamFailure(_ error: KeyBridgeError, bank: String) -> BrokerResponse {
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
            return .failure(502, "upstream-unreachable", "bank '\(bank)': \(error.reason)")
        }
    }
}

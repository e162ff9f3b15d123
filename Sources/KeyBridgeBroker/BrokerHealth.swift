import Foundation
import KeyBridgeProvider
import OpenBanking
import PKCS11

/// The result of one test signature through a bank's keys.
struct BankKeyTest {
    /// `ProcessInfo.systemUptime` when the test ran (monotonic, unaffected by clock changes).
    var uptime: TimeInterval
    var error: String?
}

extension BankRoute {
    /// At most one test signature per bank in this many seconds; `/healthz` shows the cached result meanwhile.
    static let keyTestInterval: TimeInterval = 30

    /// One bank's health: the JSON object and the names of the checks that fail.
    func health(at now: Date, metrics: BrokerMetrics) -> (object: [String: Any], failing: [String]) {
        var failing: [String] = []
        var object: [String: Any] = [:]

        // Token present (C_GetTokenInfo answers) and logged in.
        do {
            let key = try PrivateKey.resolve(try PKCS11URI(parsing: mtlsKeyURI), allowPrompt: false)
            let info = try key.token.info()
            object["token"] = ["present": true, "label": info.label]
            let loggedIn = key.token.isLoggedIn || !info.flags.contains(.loginRequired)
            object["loggedIn"] = loggedIn
            if !loggedIn { failing.append("logged-in") }
        } catch {
            object["token"] = ["present": false, "error": "\(error)"]
            object["loggedIn"] = false
            failing += ["token-present", "logged-in"]
        }

        // Key usable: a test signature, rate-limited, with the cached result's age.
        let (test, cached) = keyTest(metrics: metrics)
        var keyObject: [String: Any] = [
            "usable": test.error == nil, "cached": cached,
            "ageSeconds": (max(0, ProcessInfo.processInfo.systemUptime - test.uptime) * 1000).rounded() / 1000,
        ]
        if let error = test.error {
            keyObject["error"] = error
            failing.append("key-usable")
        }
        object["key"] = keyObject

        // Days until each certificate expires.
        let formatter = ISO8601DateFormatter()
        var certificateObjects: [String: Any] = [:]
        for (role, certificate) in certificates {
            let days = certificate.daysUntilExpiry(at: now)
            let valid = certificate.isValid(at: now)
            certificateObjects[role] = ["daysUntilExpiry": days, "notAfter": formatter.string(from: certificate.notAfter), "valid": valid]
            if !valid { failing.append(days < 0 ? "certificate-expired(\(role))" : "certificate-not-yet-valid(\(role))") }
        }
        object["certificates"] = certificateObjects
        object["healthy"] = failing.isEmpty
        object["failing"] = failing
        return (object, failing)
    }

    /// The last key test if it is recent enough, else a new one: a signature with the mTLS key
    /// and one with the signing key (when the bank signs requests).
    private func keyTest(metrics: BrokerMetrics) -> (BankKeyTest, cached: Bool) {
        healthLock.lock()
        defer { healthLock.unlock() }
        let uptime = ProcessInfo.processInfo.systemUptime
        if let last = lastKeyTest, uptime - last.uptime < BankRoute.keyTestInterval {
            return (last, true)
        }
        let message = Array("keybridge health test".utf8)
        var error: String?
        do {
            try BankRoute.testSign(mtlsKey, message, bank: name, metrics: metrics)
        } catch let failure {
            error = "the mTLS key cannot sign: \(failure.reason)"
        }
        if error == nil, let signer {
            signingLock.lock()
            defer { signingLock.unlock() }
            do {
                try BankRoute.testSign(signer.key, message, bank: name, metrics: metrics)
            } catch let failure {
                error = "the signing key cannot sign: \(failure.reason)"
            }
        }
        let test = BankKeyTest(uptime: uptime, error: error)
        lastKeyTest = test
        return (test, false)
    }

    private static func testSign(_ key: ProviderKey, _ message: [UInt8], bank: String, metrics: BrokerMetrics) throws(OpenSSLError) {
        let scheme: SignatureScheme
        switch key.algorithm {
        case "RSA": scheme = .rsaPKCS1(.sha256)
        case "ED25519": scheme = .ed25519
        default: scheme = .ecdsa(.sha256)
        }
        let started = ProcessInfo.processInfo.systemUptime
        _ = try key.sign(message, scheme: scheme)
        metrics.recordSignature(bank: bank, seconds: ProcessInfo.processInfo.systemUptime - started)
    }
}

extension Broker {
    /// The broker's own routes, answered before bank routing and without a bearer token. They
    /// tell anyone who can reach them which banks are configured and when certificates expire:
    /// listen on a private address (loopback, a VPC-internal interface) and never expose the
    /// broker's port to the internet.
    public static let operationalRoutes: Set<String> = ["healthz", "metrics"]

    /// `GET /healthz`: 200 when every bank is healthy, else 503 naming the failing checks.
    /// `now` is the time certificate expiry is judged against.
    public func health(at now: Date = Date()) -> BrokerResponse {
        var banks: [String: Any] = [:]
        var failing: [String] = []
        for (name, route) in routes.sorted(by: { $0.key < $1.key }) {
            let (object, checks) = route.health(at: now, metrics: metrics)
            banks[name] = object
            failing += checks.map { "\(name): \($0)" }
        }
        let object: [String: Any] = ["status": failing.isEmpty ? "ok" : "failing", "failing": failing, "banks": banks]
        let body = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return BrokerResponse(status: failing.isEmpty ? 200 : 503, headers: [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                              body: body + Data("\n".utf8))
    }

    /// `GET /metrics` in the Prometheus text format.
    public func metricsText() -> String { metrics.render() }

    /// The answer for `/healthz` and `/metrics`, or nil for any other target.
    func operationalResponse(_ request: BrokerRequest) -> BrokerResponse? {
        let path = request.target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard path.hasPrefix("/"), Broker.operationalRoutes.contains(String(path.dropFirst())) else { return nil }
        guard ["GET", "HEAD"].contains(request.method.uppercased()) else {
            var refused = BrokerResponse.failure(405, "method-not-allowed", "\(path) answers GET and HEAD only")
            refused.headers.append(("Allow", "GET, HEAD"))
            return refused
        }
        if path == "/healthz" { return health() }
        return BrokerResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), ("Cache-Control", "no-store")],
                              body: Data(metricsText().utf8))
    }
}

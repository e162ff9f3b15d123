import Foundation

/// The broker's counters and histograms, written out in the Prometheus text format (0.0.4).
/// Every update and the rendering run under one lock, so the counters are exact under load.
final class BrokerMetrics: @unchecked Sendable {
    // All mutable state is guarded by `lock`.
    struct Histogram {
        let bounds: [Double]
        var counts: [UInt64]
        var sum = 0.0
        var count: UInt64 = 0

        init(bounds: [Double]) {
            self.bounds = bounds
            counts = Array(repeating: 0, count: bounds.count)
        }

        mutating func observe(_ value: Double) {
            for (index, bound) in bounds.enumerated() where value <= bound { counts[index] += 1 }
            sum += value
            count += 1
        }
    }

    struct RequestKey: Hashable { var bank: String; var status: Int }

    static let requestBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    static let signatureBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

    private let lock = NSLock()
    private var requests: [RequestKey: UInt64] = [:]
    private var requestDuration = Histogram(bounds: BrokerMetrics.requestBuckets)
    private var signatures: [String: UInt64] = [:]
    private var handshakes: [String: UInt64] = [:]
    private var resumptions: [String: UInt64] = [:]
    private var retries: [String: UInt64] = [:]
    private var upstreamResponses: [UpstreamKey: UInt64] = [:]
    private var reloads: [String: UInt64] = ["ok": 0, "refused": 0]
    private var inFlight = 0
    private var signatureDuration = Histogram(bounds: BrokerMetrics.signatureBuckets)

    struct UpstreamKey: Hashable { var bank: String; var version: String }

    /// `banks` are written with 0 from the start, so a rate() sees the first increase.
    init(banks: [String]) {
        register(banks: banks)
    }

    /// Adds zero series for banks a reloaded configuration brings.
    func register(banks: [String]) {
        lock.withLock {
            for bank in banks {
                signatures[bank, default: 0] += 0
                handshakes[bank, default: 0] += 0
                resumptions[bank, default: 0] += 0
                retries[bank, default: 0] += 0
            }
        }
    }

    func recordRetry(bank: String) { lock.withLock { retries[bank, default: 0] += 1 } }

    func recordUpstreamResponse(bank: String, httpVersion: String) {
        lock.withLock { upstreamResponses[UpstreamKey(bank: bank, version: httpVersion), default: 0] += 1 }
    }

    func recordReload(succeeded: Bool) { lock.withLock { reloads[succeeded ? "ok" : "refused", default: 0] += 1 } }

    /// Requests between their first byte and their answer's last, from the HTTP server.
    func requestStarted() { lock.withLock { inFlight += 1 } }
    func requestFinished() { lock.withLock { inFlight -= 1 } }

    func recordRequest(bank: String, status: Int, seconds: Double) {
        lock.withLock {
            requests[RequestKey(bank: bank, status: status), default: 0] += 1
            requestDuration.observe(seconds)
        }
    }

    /// A signature the broker made itself (request signing, health test), with its latency.
    func recordSignature(bank: String, seconds: Double) {
        lock.withLock {
            signatures[bank, default: 0] += 1
            signatureDuration.observe(seconds)
        }
    }

    /// A new upstream connection's handshake: a full one (`signed` when the client key made a
    /// CertificateVerify in it) or a resumed session, which signs nothing.
    func recordHandshake(bank: String, resumed: Bool, signed: Bool) {
        lock.withLock {
            if resumed { resumptions[bank, default: 0] += 1 } else { handshakes[bank, default: 0] += 1 }
            if signed { signatures[bank, default: 0] += 1 }
        }
    }

    func signatureCount(bank: String) -> UInt64 { lock.withLock { signatures[bank] ?? 0 } }

    /// The exposition text.
    func render() -> String {
        lock.withLock {
            var text = ""
            text += "# HELP keybridge_requests_total Requests answered by the broker, by bank and HTTP status.\n"
            text += "# TYPE keybridge_requests_total counter\n"
            for (key, value) in requests.sorted(by: { ($0.key.bank, $0.key.status) < ($1.key.bank, $1.key.status) }) {
                text += "keybridge_requests_total{bank=\"\(Self.escape(key.bank))\",status=\"\(key.status)\"} \(value)\n"
            }
            text += Self.histogram("keybridge_request_duration_seconds", "Time from request to answer, upstream included.", requestDuration)
            text += "# HELP keybridge_hsm_signatures_total Signatures made with token keys: request signing, health tests and mTLS handshakes.\n"
            text += "# TYPE keybridge_hsm_signatures_total counter\n"
            for (bank, value) in signatures.sorted(by: { $0.key < $1.key }) {
                text += "keybridge_hsm_signatures_total{bank=\"\(Self.escape(bank))\"} \(value)\n"
            }
            text += Self.counter("keybridge_upstream_handshakes_total",
                                 "Full TLS handshakes with the bank (the mTLS key signs in each); a kept-alive connection makes none.", handshakes)
            text += Self.counter("keybridge_upstream_resumptions_total",
                                 "New connections to the bank that resumed a TLS session (no certificate sent, no signature).", resumptions)
            text += Self.counter("keybridge_upstream_retries_total",
                                 "Attempts repeated after a lost connection (idempotent methods only).", retries)
            text += "# HELP keybridge_upstream_responses_total Answers from the bank, by HTTP version.\n"
            text += "# TYPE keybridge_upstream_responses_total counter\n"
            for (key, value) in upstreamResponses.sorted(by: { ($0.key.bank, $0.key.version) < ($1.key.bank, $1.key.version) }) {
                text += "keybridge_upstream_responses_total{bank=\"\(Self.escape(key.bank))\",version=\"\(key.version)\"} \(value)\n"
            }
            text += "# HELP keybridge_config_reloads_total Configuration reloads (SIGHUP), applied or refused.\n"
            text += "# TYPE keybridge_config_reloads_total counter\n"
            for (result, value) in reloads.sorted(by: { $0.key < $1.key }) {
                text += "keybridge_config_reloads_total{result=\"\(result)\"} \(value)\n"
            }
            text += "# HELP keybridge_requests_in_flight Requests received and not yet answered.\n"
            text += "# TYPE keybridge_requests_in_flight gauge\n"
            text += "keybridge_requests_in_flight \(inFlight)\n"
            text += Self.histogram("keybridge_hsm_signature_duration_seconds",
                                   "Latency of the token signatures the broker makes itself (request signing and health tests).", signatureDuration)
            return text
        }
    }

    private static func counter(_ name: String, _ help: String, _ values: [String: UInt64]) -> String {
        var text = "# HELP \(name) \(help)\n# TYPE \(name) counter\n"
        for (bank, value) in values.sorted(by: { $0.key < $1.key }) {
            text += "\(name){bank=\"\(escape(bank))\"} \(value)\n"
        }
        return text
    }

    private static func histogram(_ name: String, _ help: String, _ histogram: Histogram) -> String {
        var text = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        for (bound, count) in zip(histogram.bounds, histogram.counts) {
            text += "\(name)_bucket{le=\"\(format(bound))\"} \(count)\n"
        }
        text += "\(name)_bucket{le=\"+Inf\"} \(histogram.count)\n"
        text += "\(name)_sum \(format(histogram.sum))\n"
        text += "\(name)_count \(histogram.count)\n"
        return text
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }

    /// Label values escape backslash, double quote and newline.
    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}

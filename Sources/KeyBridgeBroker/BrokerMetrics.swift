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
    private let banks: [String]
    private var requests: [RequestKey: UInt64] = [:]
    private var requestDuration = Histogram(bounds: BrokerMetrics.requestBuckets)
    private var signatures: [String: UInt64] = [:]
    private var handshakes: [String: UInt64] = [:]
    private var signatureDuration = Histogram(bounds: BrokerMetrics.signatureBuckets)

    /// `banks` are written with 0 from the start, so a rate() sees the first increase.
    init(banks: [String]) {
        self.banks = banks.sorted()
        for bank in banks {
            signatures[bank] = 0
            handshakes[bank] = 0
        }
    }

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

    /// A new upstream TLS handshake; `signed` when the client key made a CertificateVerify in it.
    func recordHandshake(bank: String, signed: Bool) {
        lock.withLock {
            handshakes[bank, default: 0] += 1
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
            text += "# HELP keybridge_upstream_handshakes_total New TLS handshakes with the bank (a reused connection makes none).\n"
            text += "# TYPE keybridge_upstream_handshakes_total counter\n"
            for (bank, value) in handshakes.sorted(by: { $0.key < $1.key }) {
                text += "keybridge_upstream_handshakes_total{bank=\"\(Self.escape(bank))\"} \(value)\n"
            }
            text += Self.histogram("keybridge_hsm_signature_duration_seconds",
                                   "Latency of the token signatures the broker makes itself (request signing and health tests).", signatureDuration)
            return text
        }
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

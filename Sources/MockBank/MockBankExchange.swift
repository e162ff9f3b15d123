import Foundation

/// A request as the mock bank received it from the TLS front end (nginx), which passes the
/// client certificate in `X-SSL-Client-Cert` and its verdict in `X-SSL-Client-Verify`.
public struct MockBankRequest: Sendable {
    /// The method as sent, e.g. `POST`.
    public var method: String
    /// The request target exactly as sent: path and query with their percent-encoding, because
    /// signatures cover it byte for byte.
    public var target: String
    /// Header lines in the order received; names compare without case.
    public var headers: [(name: String, value: String)]
    /// The raw body.
    public var body: Data

    public init(method: String, target: String, headers: [(name: String, value: String)] = [], body: Data = Data()) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
    }

    /// The first value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

/// The mock bank's answer: a JSON body that lists what was checked, and one log line.
public struct MockBankResponse: Sendable {
    /// 200 or 201 when accepted; 400, 401 or 413 when not.
    public var status: Int
    /// `Content-Type`, and `X-Request-ID` echoed when the request had one.
    public var headers: [(name: String, value: String)]
    /// The JSON body.
    public var body: Data
    /// The checks in the order they ran; the last one failed when the request was rejected.
    public var checks: [MockBankCheck]
    /// The Berlin Group error code when rejected (`SIGNATURE_INVALID`, …), nil when accepted.
    public var errorCode: TPPMessageCode?
    /// One line for the log, e.g.
    /// `POST /psd2/v1/payments berlin-group: qwac ok, qsealc ok (1 warning), digest ok, signature ok → 201`.
    public var logLine: String
}

/// One check the mock bank made, as it appears in the JSON answer.
public struct MockBankCheck: Sendable, Hashable, Codable {
    /// `qwac`, `qsealc`, `digest` or `signature`.
    public var name: String
    public var ok: Bool
    /// What was found, or why the check failed.
    public var detail: String
    /// Deviations the sandbox tolerates (for example a QSealC whose QcType is web), nil when none.
    public var warnings: [String]?

    public init(name: String, ok: Bool, detail: String, warnings: [String]? = nil) {
        self.name = name
        self.ok = ok
        self.detail = detail
        self.warnings = warnings.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// A NextGenPSD2 `tppMessages` error code; more may be added.
public struct TPPMessageCode: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// The QWAC or QSealC is unusable: not qualified, no PSD2 statement, another organisation, untrusted.
    public static let certificateInvalid = TPPMessageCode(rawValue: "CERTIFICATE_INVALID")
    /// No client certificate, or no `TPP-Signature-Certificate` where one is needed.
    public static let certificateMissing = TPPMessageCode(rawValue: "CERTIFICATE_MISSING")
    /// The QWAC or QSealC is outside its validity period.
    public static let certificateExpired = TPPMessageCode(rawValue: "CERTIFICATE_EXPIRED")
    /// The signature does not verify, or does not cover what it must.
    public static let signatureInvalid = TPPMessageCode(rawValue: "SIGNATURE_INVALID")
    /// The request carries no signature in any format the bank knows.
    public static let signatureMissing = TPPMessageCode(rawValue: "SIGNATURE_MISSING")
    /// A header is malformed, the digest does not match the body, or the body is too large.
    public static let formatError = TPPMessageCode(rawValue: "FORMAT_ERROR")
}

/// A failure to set up or start the mock bank, with the cause and the fix.
public struct MockBankError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

import Foundation
import OpenBanking

/// A local PSD2 bank sandbox that really checks what a TPP sends: the QWAC that the TLS front
/// end (nginx) passed on, the QSealC in `TPP-Signature-Certificate`, the digest and the signature
/// in whichever format arrived (Berlin Group draft-cavage, RFC 9421 or detached JWS).
///
/// `respond(to:)` is pure: a request in, a response out. `MockBankServer` puts it on HTTP.
public final class MockBank: Sendable {
    /// What the sandbox trusts and allows.
    public struct Configuration: Sendable {
        /// CA certificates (DER) the QWAC must chain to; empty leaves that to nginx's
        /// `X-SSL-Client-Verify`. Give the issuing CA: nginx passes only the leaf.
        public var qwacAuthorities: [[UInt8]]
        /// CA certificates (DER) the QSealC must chain to; empty skips the chain check.
        public var qsealcAuthorities: [[UInt8]]
        /// The bank's Berlin Group variant: required extra headers, `(request-target)`, accepted labels.
        public var profile: BerlinGroupProfile
        /// Larger bodies are answered with 413.
        public var maximumBodySize: Int
        /// How far `Date` (Berlin Group) and `created` (RFC 9421) may be from the bank's clock.
        public var maximumClockSkew: TimeInterval

        public init(qwacAuthorities: [[UInt8]] = [], qsealcAuthorities: [[UInt8]] = [], profile: BerlinGroupProfile = .default,
                    maximumBodySize: Int = 1 << 20, maximumClockSkew: TimeInterval = 300) {
            self.qwacAuthorities = qwacAuthorities
            self.qsealcAuthorities = qsealcAuthorities
            self.profile = profile
            self.maximumBodySize = maximumBodySize
            self.maximumClockSkew = maximumClockSkew
        }
    }

    public let configuration: Configuration
    private let qwacTrust: CertificateTrust?
    private let qsealcTrust: CertificateTrust?
    private let berlinGroup: BerlinGroupVerifier

    /// Checks the configuration: the CA certificates must parse and the profile must be valid.
    public init(configuration: Configuration = Configuration()) throws(MockBankError) {
        guard configuration.maximumBodySize >= 0 else { throw MockBankError("the maximum body size cannot be negative") }
        func trust(_ authorities: [[UInt8]], _ role: String) throws(MockBankError) -> CertificateTrust? {
            guard !authorities.isEmpty else { return nil }
            do {
                return try CertificateTrust(authorities: authorities)
            } catch {
                throw MockBankError("the \(role) CA certificates: \(error.reason)")
            }
        }
        qwacTrust = try trust(configuration.qwacAuthorities, "QWAC")
        qsealcTrust = try trust(configuration.qsealcAuthorities, "QSealC")
        do {
            berlinGroup = try BerlinGroupVerifier(profile: configuration.profile, maximumClockSkew: configuration.maximumClockSkew)
        } catch {
            throw MockBankError(error.reason)
        }
        self.configuration = configuration
    }

    /// Checks `request` and answers: 201 (POST) or 200 with the checks when everything holds;
    /// otherwise 400 (malformed header, digest mismatch) or 401 (certificate or signature) with a
    /// Berlin Group `tppMessages` error and the checks made so far.
    public func respond(to request: MockBankRequest, now: Date = Date()) -> MockBankResponse {
        var run = Evaluation(request: request, now: now)
        do {
            try evaluate(&run)
        } catch {
            run.checks.append(MockBankCheck(name: error.check, ok: false, detail: error.text))
            return reject(run, status: error.status, code: error.code, text: error.text)
        }
        let status = request.method.uppercased() == "POST" ? 201 : 200
        let body = JSONText.object([
            ("checks", Self.json(run.checks)), ("format", .string(run.format?.rawValue)),
            ("organizationIdentifier", .string(run.organizationIdentifier)), ("result", .string("accepted")),
        ])
        return MockBankResponse(status: status, headers: responseHeaders(for: request), body: body.data, checks: run.checks,
                                errorCode: nil, logLine: logLine(run, outcome: "\(status)"))
    }

    /// The 413 answer for a body over `maximumBodySize`; the body itself was not kept.
    public func payloadTooLarge(_ request: MockBankRequest) -> MockBankResponse {
        let run = Evaluation(request: request, now: Date())
        let text = "the body is larger than the \(configuration.maximumBodySize) bytes this bank accepts"
        return reject(run, status: 413, code: .formatError, text: text)
    }

    // MARK: - The checks

    private enum Format: String {
        case berlinGroup = "berlin-group"
        case rfc9421
        case jws
    }

    /// What one request has shown so far.
    private struct Evaluation {
        let request: MockBankRequest
        let now: Date
        var checks: [MockBankCheck] = []
        var format: Format?
        var organizationIdentifier: String?
    }

    /// A failed check: the answer's status and code, and the check it belongs to.
    private struct Rejection: Error {
        var check: String
        var status: Int
        var code: TPPMessageCode
        var text: String

        init(_ check: String, _ status: Int, _ code: TPPMessageCode, _ text: String) {
            self.check = check
            self.status = status
            self.code = code
            self.text = text
        }
    }

    private func evaluate(_ run: inout Evaluation) throws(Rejection) {
        let qwac = try checkQWAC(&run)
        run.organizationIdentifier = qwac.organizationIdentifier
        let format = try detectFormat(run.request)
        run.format = format
        switch format {
        case .berlinGroup: try checkBerlinGroup(&run, qwac: qwac)
        case .rfc9421: try checkHTTPMessageSignature(&run, qwac: qwac)
        case .jws: try checkDetachedJWS(&run, qwac: qwac)
        }
    }

    private func detectFormat(_ request: MockBankRequest) throws(Rejection) -> Format {
        if request.header("Signature-Input") != nil { return .rfc9421 }
        if let signature = request.header("Signature") {
            guard signature.lowercased().contains("keyid=") else {
                throw Rejection("signature", 400, .formatError,
                                "the Signature header has no keyId= (Berlin Group) and there is no Signature-Input (RFC 9421)")
            }
            return .berlinGroup
        }
        if request.header(DetachedJWSSigner.headerName) != nil { return .jws }
        throw Rejection("signature", 401, .signatureMissing,
                        "the request carries no signature: no Signature with keyId (Berlin Group), no Signature-Input (RFC 9421) and no x-jws-signature (detached JWS)")
    }

    /// The client certificate nginx verified in the TLS handshake: present, trusted, a QWAC
    /// (QcType web) of a PSP (PSD2 statement with roles) with an `organizationIdentifier`.
    private func checkQWAC(_ run: inout Evaluation) throws(Rejection) -> EIDASCertificate {
        let request = run.request
        for name in ["X-SSL-Client-Cert", "X-SSL-Client-Verify"] {
            let count = request.headers.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.count
            guard count <= 1 else {
                // Two copies mean the front end added its own to a client's instead of replacing it.
                throw Rejection("qwac", 401, .certificateInvalid, "\(name) appears \(count) times; the TLS front end must replace any copy the client sends")
            }
        }
        let escaped = request.header("X-SSL-Client-Cert")?.trimmingCharacters(in: .whitespaces) ?? ""
        let verdict = request.header("X-SSL-Client-Verify")?.trimmingCharacters(in: .whitespaces)
        guard !escaped.isEmpty else {
            throw Rejection("qwac", 401, .certificateMissing,
                            "no client certificate: X-SSL-Client-Cert is missing or empty (the TLS front end passes $ssl_client_escaped_cert)")
        }
        if let verdict, verdict != "SUCCESS" {
            throw Rejection("qwac", 401, .certificateInvalid, "the TLS front end did not verify the client certificate: X-SSL-Client-Verify is \(verdict)")
        }
        if verdict == nil, qwacTrust == nil {
            throw Rejection("qwac", 401, .certificateInvalid,
                            "nothing verified the client certificate: X-SSL-Client-Verify is missing and no QWAC CA is configured")
        }
        guard let pem = escaped.removingPercentEncoding else {
            throw Rejection("qwac", 401, .certificateInvalid, "X-SSL-Client-Cert is not percent-encoded PEM")
        }
        let certificate: EIDASCertificate
        do {
            certificate = try EIDASCertificate(pem: pem)
        } catch {
            throw Rejection("qwac", 401, .certificateInvalid, "X-SSL-Client-Cert is not a certificate: \(error.reason)")
        }
        try checkValidity(certificate, role: "QWAC", check: "qwac", at: run.now)
        var verifiedBy = verdict == nil ? [String]() : ["verified by the TLS front end"]
        if let qwacTrust {
            if let problem = qwacTrust.problem(with: certificate.der, at: run.now) {
                throw Rejection("qwac", 401, .certificateInvalid, "the QWAC does not chain to the configured QWAC CAs: \(problem)")
            }
            verifiedBy.append("chains to the QWAC CAs")
        }
        let types = certificate.qcStatements?.types ?? []
        guard types.contains(.web) else {
            let found = types.isEmpty ? "has no QcType statement" : "has QcType \(Self.names(types))"
            throw Rejection("qwac", 401, .certificateInvalid, "the client certificate is not a QWAC: it \(found), not web (0.4.0.1862.1.6.3)")
        }
        let psd2 = try psd2Statement(of: certificate, role: "QWAC", check: "qwac")
        guard let organization = certificate.organizationIdentifier else {
            throw Rejection("qwac", 401, .certificateInvalid, "the QWAC's subject has no organizationIdentifier (2.5.4.97)")
        }
        let detail = "\(Self.commonName(certificate)), organizationIdentifier \(organization), roles \(Self.roles(psd2)) (\(psd2.ncaID)), "
            + "QcType web, " + verifiedBy.joined(separator: ", ")
        run.checks.append(MockBankCheck(name: "qwac", ok: true, detail: detail))
        return certificate
    }

    /// The QSealC from `TPP-Signature-Certificate`: valid, trusted, a PSD2 statement with roles and
    /// the QWAC's organisation. QcType eseal is expected; another type is a warning in the sandbox.
    private func checkQSealC(_ value: String, _ run: inout Evaluation, qwac: EIDASCertificate) throws(Rejection) -> EIDASCertificate {
        // Some senders keep the PEM armour or wrap lines; the DER inside is what counts.
        let base64 = value
            .replacingOccurrences(of: "-----BEGIN CERTIFICATE-----", with: "")
            .replacingOccurrences(of: "-----END CERTIFICATE-----", with: "")
            .filter { !$0.isWhitespace }
        guard let der = Data(base64Encoded: base64), !der.isEmpty else {
            throw Rejection("qsealc", 401, .certificateInvalid, "TPP-Signature-Certificate is not the base64 of a certificate")
        }
        let certificate: EIDASCertificate
        do {
            certificate = try EIDASCertificate(der: Array(der))
        } catch {
            throw Rejection("qsealc", 401, .certificateInvalid, "TPP-Signature-Certificate is not a certificate: \(error.reason)")
        }
        try checkValidity(certificate, role: "QSealC", check: "qsealc", at: run.now)
        if let qsealcTrust, let problem = qsealcTrust.problem(with: certificate.der, at: run.now) {
            throw Rejection("qsealc", 401, .certificateInvalid, "the QSealC does not chain to the configured QSealC CAs: \(problem)")
        }
        let psd2 = try psd2Statement(of: certificate, role: "QSealC", check: "qsealc")
        var warnings: [String] = []
        let types = certificate.qcStatements?.types ?? []
        if !types.contains(.eseal) {
            warnings.append(types.isEmpty ? "no QcType statement; a QSealC should have QcType eseal"
                                          : "QcType is \(Self.names(types)), not eseal")
        }
        let organization = EIDASCertificate.sameOrganization(qwac: qwac, qsealc: certificate)
        // The QcType fields are the warning above (QSealC) and the QWAC check (QWAC).
        let blocking = organization.mismatches.filter { $0.field != .qsealcType && $0.field != .qwacType }
        guard blocking.isEmpty else {
            throw Rejection("qsealc", 401, .certificateInvalid,
                            "the QSealC and the QWAC belong to different organisations: " + blocking.map(\.description).joined(separator: "; "))
        }
        var detail = "\(Self.commonName(certificate)), serial \(certificate.serialNumberHex), organizationIdentifier "
            + "\(certificate.organizationIdentifier ?? "?") as in the QWAC, roles \(Self.roles(psd2)) (\(psd2.ncaID))"
        if qsealcTrust != nil { detail += ", chains to the QSealC CAs" }
        run.checks.append(MockBankCheck(name: "qsealc", ok: true, detail: detail, warnings: warnings))
        return certificate
    }

    private func checkValidity(_ certificate: EIDASCertificate, role: String, check: String, at date: Date) throws(Rejection) {
        guard certificate.isValid(at: date) else {
            let formatter = ISO8601DateFormatter()
            let window = "\(formatter.string(from: certificate.notBefore)) to \(formatter.string(from: certificate.notAfter))"
            throw Rejection(check, 401, .certificateExpired, "the \(role) is valid from \(window), not now")
        }
    }

    private func psd2Statement(of certificate: EIDASCertificate, role: String, check: String) throws(Rejection) -> EIDASCertificate.PSD2Statement {
        guard let psd2 = certificate.qcStatements?.psd2 else {
            throw Rejection(check, 401, .certificateInvalid, "the \(role) has no PSD2 QCStatement (0.4.0.19495.2), so it names no PSP roles")
        }
        guard !psd2.roles.isEmpty else {
            throw Rejection(check, 401, .certificateInvalid, "the \(role)'s PSD2 QCStatement lists no roles (PSP_AS, PSP_PI, PSP_AI, PSP_IC)")
        }
        return psd2
    }

    // MARK: Berlin Group

    private func checkBerlinGroup(_ run: inout Evaluation, qwac: EIDASCertificate) throws(Rejection) {
        let request = run.request
        guard let certificateValue = request.header("TPP-Signature-Certificate") else {
            throw Rejection("qsealc", 401, .certificateMissing, "a Berlin Group signature needs the QSealC in TPP-Signature-Certificate, and there is none")
        }
        let qsealc = try checkQSealC(certificateValue, &run, qwac: qwac)

        guard let digest = request.header("Digest") else {
            throw Rejection("digest", 400, .formatError, "the request has no Digest header, which the Berlin Group signature covers the body through")
        }
        run.checks.append(MockBankCheck(name: "digest", ok: true, detail: try Self.checkDigest(digest, body: request.body)))

        let signatureHeader: BerlinGroupSignatureHeader
        do {
            signatureHeader = try BerlinGroupSignatureHeader(parsing: request.header("Signature") ?? "")
        } catch {
            throw Rejection("signature", 400, .formatError, "the Signature header is malformed: \(error.reason)")
        }
        let parts = try parts(of: request)
        let verification: BerlinGroupVerification
        do {
            verification = try berlinGroup.verify(parts, now: run.now)
        } catch {
            throw Rejection("signature", 401, .signatureInvalid, error.reason)
        }
        var warnings: [String] = []
        if verification.issuerMatchesCertificate == false {
            warnings.append("the keyId's issuer is not the QSealC's issuer DN as written (\(qsealc.issuer.rfc2253))")
        }
        let detail = "\(signatureHeader.algorithm) over \"\(signatureHeader.headers.joined(separator: " "))\", keyId \(signatureHeader.keyId), "
            + "verified with the QSealC's \(Self.keyName(qsealc))"
        run.checks.append(MockBankCheck(name: "signature", ok: true, detail: detail, warnings: warnings))
    }

    /// The `Digest` header (RFC 3230) against the body; every SHA-256 and SHA-512 value must match.
    private static func checkDigest(_ value: String, body: Data) throws(Rejection) -> String {
        var matched: [String] = []
        for item in value.split(separator: ",") {
            guard let equals = item.firstIndex(of: "=") else {
                throw Rejection("digest", 400, .formatError, "the Digest entry \"\(item.trimmingCharacters(in: .whitespaces))\" has no '='")
            }
            let name = item[..<equals].trimmingCharacters(in: .whitespaces).uppercased()
            let expected: [UInt8]
            switch name {
            case "SHA-256": expected = MessageDigest.sha256(body)
            case "SHA-512": expected = MessageDigest.sha512(body)
            default: continue
            }
            let encoded = item[item.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard let claimed = Data(base64Encoded: encoded) else {
                throw Rejection("digest", 400, .formatError, "the Digest header's \(name) value is not base64")
            }
            guard Array(claimed) == expected else {
                throw Rejection("digest", 400, .formatError,
                                "Digest does not match the body: it says \(name)=\(encoded), the \(body.count)-byte body has \(name)=\(Data(expected).base64EncodedString())")
            }
            matched.append(name)
        }
        guard !matched.isEmpty else {
            throw Rejection("digest", 400, .formatError, "the Digest header has no SHA-256 or SHA-512 value")
        }
        return "\(matched.joined(separator: " and ")) \(matched.count == 1 ? "matches" : "match") the \(body.count)-byte body"
    }

    // MARK: RFC 9421

    private func checkHTTPMessageSignature(_ run: inout Evaluation, qwac: EIDASCertificate) throws(Rejection) {
        let request = run.request
        let (certificate, source) = try signingCertificate(&run, qwac: qwac)
        var contentDigestChecked = false
        if let contentDigest = request.header(ContentDigest.headerName) {
            do {
                let algorithms = try ContentDigest.verify(contentDigest, body: request.body)
                let names = algorithms.map(\.rawValue).joined(separator: " and ")
                run.checks.append(MockBankCheck(name: "digest", ok: true,
                                                detail: "Content-Digest \(names) \(algorithms.count == 1 ? "matches" : "match") the \(request.body.count)-byte body"))
                contentDigestChecked = true
            } catch {
                throw Rejection("digest", 400, .formatError, "Content-Digest: \(error.reason)")
            }
        }
        let key: PublicKeyVerifier
        do {
            key = try PublicKeyVerifier(certificateDER: certificate.der)
        } catch {
            throw Rejection("signature", 401, .certificateInvalid, "the \(source)'s public key cannot be used: \(error.reason)")
        }
        let parts = try parts(of: request)
        // Without an alg parameter the key type decides; RSA has two candidates.
        let candidates = HTTPSignatureAlgorithm.all.filter { $0.keyAlgorithm == key.algorithm }
        var verified: VerifiedHTTPMessageSignature?
        var usedAlgorithm: HTTPSignatureAlgorithm?
        var failures: [HTTPMessageSignatureError] = []
        for algorithm in candidates {
            do {
                var verifier = try HTTPMessageVerifier(key: key, algorithm: algorithm)
                verifier.maximumAge = configuration.maximumClockSkew
                verifier.allowedClockSkew = configuration.maximumClockSkew
                verifier.checksContentDigest = contentDigestChecked
                verified = try verifier.verify(parts, now: run.now)
                usedAlgorithm = algorithm
                break
            } catch {
                failures.append(error)
                // Only a bad signature, or an alg that names another algorithm, may be the next candidate's.
                guard error.code == .signatureInvalid || error.code == .algorithmMismatch else { break }
            }
        }
        guard let verified, let usedAlgorithm else {
            throw Self.rejection(for: failures, candidates: candidates, source: source, keyAlgorithm: key.algorithm)
        }
        let targets: [HTTPSignatureComponent] = [.targetURI, .path, .requestTarget]
        guard verified.components.contains(.method), verified.components.contains(where: targets.contains) else {
            throw Rejection("signature", 401, .signatureInvalid,
                            "the signature does not cover @method and the target (@target-uri, @path or @request-target), so it could be replayed on another operation")
        }
        var warnings: [String] = []
        if !contentDigestChecked, !request.body.isEmpty {
            warnings.append("the body is not protected: there is no Content-Digest for the signature to cover")
        }
        let keyID = verified.parameters.keyID.map { ", keyid \"\($0)\"" } ?? ""
        let detail = "\(usedAlgorithm) signature \(verified.label) over \(verified.components.map(\.description).joined(separator: " "))\(keyID), "
            + "verified with the \(source)'s \(Self.keyName(certificate))"
        run.checks.append(MockBankCheck(name: "signature", ok: true, detail: detail, warnings: warnings))
    }

    private static func rejection(for failures: [HTTPMessageSignatureError], candidates: [HTTPSignatureAlgorithm],
                                  source: String, keyAlgorithm: String) -> Rejection {
        // The failure that is not merely "another algorithm" says the most.
        guard let error = failures.first(where: { $0.code != .algorithmMismatch }) ?? failures.first else {
            return Rejection("signature", 401, .signatureInvalid, "no RFC 9421 algorithm fits the \(source)'s \(keyAlgorithm) key")
        }
        switch error.code {
        case .missingSignature:
            return Rejection("signature", 401, .signatureMissing, error.reason)
        case .malformedField, .invalidParameter:
            return Rejection("signature", 400, .formatError, error.reason)
        case .signatureInvalid where failures.count > 1 && failures.allSatisfy({ $0.code == .signatureInvalid }):
            return Rejection("signature", 401, .signatureInvalid,
                             "the signature does not verify with \(candidates.map(\.name).joined(separator: " or ")) and the \(source)'s key: "
                                 + "the request differs from what was signed, or another key signed it")
        default:
            return Rejection("signature", 401, .signatureInvalid, error.reason)
        }
    }

    // MARK: Detached JWS

    private func checkDetachedJWS(_ run: inout Evaluation, qwac: EIDASCertificate) throws(Rejection) {
        let (certificate, source) = try signingCertificate(&run, qwac: qwac)
        let value = run.request.header(DetachedJWSSigner.headerName) ?? ""
        let verified: VerifiedDetachedJWS
        do {
            verified = try DetachedJWSVerifier(der: certificate.der).verify(value, body: run.request.body, now: run.now)
        } catch {
            throw Rejection("signature", 401, .signatureInvalid, error.reason)
        }
        let form = verified.payloadEncoding == .unencoded ? "unencoded payload (b64 false)" : "base64url payload"
        let keyID = verified.keyID.map { ", kid \"\($0)\"" } ?? ""
        run.checks.append(MockBankCheck(name: "signature", ok: true,
                                        detail: "\(verified.algorithm) detached JWS, \(form)\(keyID), over the \(run.request.body.count)-byte body, "
                                            + "verified with the \(source)'s \(Self.keyName(certificate))"))
    }

    /// The certificate whose key must have signed: the QSealC from `TPP-Signature-Certificate`
    /// when sent (checked as such), else the QWAC.
    private func signingCertificate(_ run: inout Evaluation, qwac: EIDASCertificate) throws(Rejection) -> (EIDASCertificate, String) {
        guard let value = run.request.header("TPP-Signature-Certificate") else { return (qwac, "QWAC") }
        return (try checkQSealC(value, &run, qwac: qwac), "QSealC")
    }

    // MARK: - Answers

    /// The request as the signature formats see it: the URL the client called, rebuilt from the
    /// scheme nginx reports (`X-Forwarded-Proto`), the original `Host` and the raw target.
    private func parts(of request: MockBankRequest) throws(Rejection) -> HTTPRequestParts {
        let scheme = request.header("X-Forwarded-Proto")?.lowercased() == "https" ? "https" : "http"
        let host = request.header("Host") ?? "localhost"
        let target = request.target.hasPrefix("/") ? request.target : "/" + request.target
        guard let url = URL(string: scheme + "://" + host + target) else {
            throw Rejection("signature", 400, .formatError, "the Host header and request target do not form a URL")
        }
        return HTTPRequestParts(method: request.method, url: url, headers: request.headers, body: request.body)
    }

    private func reject(_ run: Evaluation, status: Int, code: TPPMessageCode, text: String) -> MockBankResponse {
        let message = JSONText.object([("category", .string("ERROR")), ("code", .string(code.rawValue)), ("text", .string(text))])
        let body = JSONText.object([
            ("tppMessages", .array([message])), ("checks", Self.json(run.checks)), ("format", .string(run.format?.rawValue)),
            ("result", .string("rejected")),
        ])
        return MockBankResponse(status: status, headers: responseHeaders(for: run.request), body: body.data, checks: run.checks,
                                errorCode: code, logLine: logLine(run, outcome: "\(status) \(code.rawValue): \(text)"))
    }

    private func responseHeaders(for request: MockBankRequest) -> [(name: String, value: String)] {
        var headers = [(name: "Content-Type", value: "application/json")]
        if let requestID = request.header("X-Request-ID"), requestID.allSatisfy({ $0.isASCII && !$0.isNewline && $0 != "\0" }) {
            headers.append((name: "X-Request-ID", value: requestID))
        }
        return headers
    }

    private func logLine(_ run: Evaluation, outcome: String) -> String {
        let target = String(run.request.target.prefix(200))
        let checks = run.checks.map { check in
            guard check.ok else { return "\(check.name) FAILED" }
            let count = check.warnings?.count ?? 0
            return count == 0 ? "\(check.name) ok" : "\(check.name) ok (\(count) warning\(count == 1 ? "" : "s"))"
        }
        let format = run.format.map { " " + $0.rawValue } ?? ""
        let summary = checks.isEmpty ? "" : ": " + checks.joined(separator: ", ")
        let line = "\(run.request.method) \(target)\(format)\(summary) → \(outcome)"
        // Header text reaches the line; no control character may forge or garble a log entry.
        return String(String.UnicodeScalarView(line.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
    }

    private static func json(_ checks: [MockBankCheck]) -> JSONText {
        .array(checks.map { check in
            .object([("name", .string(check.name)), ("ok", .bool(check.ok)), ("detail", .string(check.detail)),
                     ("warnings", check.warnings.map { .array($0.map { .string($0) }) } ?? .absent)])
        })
    }

    private static func names(_ types: [EIDASCertificate.QCType]) -> String { types.map(\.description).joined(separator: ", ") }

    private static func roles(_ psd2: EIDASCertificate.PSD2Statement) -> String {
        psd2.roles.map { $0.standardName ?? $0.name }.joined(separator: ", ")
    }

    /// "EC P-256 key", "RSA-2048 key", "ED25519 key".
    private static func keyName(_ certificate: EIDASCertificate) -> String {
        let key = certificate.publicKey
        if let curve = key.curve { return "\(key.algorithm) \(curve) key" }
        return key.algorithm.hasPrefix("RSA") ? "\(key.algorithm)-\(key.bits) key" : "\(key.algorithm) key"
    }

    private static func commonName(_ certificate: EIDASCertificate) -> String {
        certificate.subject.commonName.map { "CN=\($0)" } ?? certificate.subject.rfc2253
    }
}

/// JSON with its members in a fixed order, so answers read the same every time: what the checks
/// found first, the verdict last. Nil strings and `absent` leave their member out.
private indirect enum JSONText {
    case string(String?)
    case bool(Bool)
    case array([JSONText])
    case object([(String, JSONText)])
    case absent

    var data: Data { Data((text + "\n").utf8) }

    private var isAbsent: Bool {
        switch self {
        case .absent, .string(nil): return true
        default: return false
        }
    }

    var text: String {
        switch self {
        case let .string(value?): return Self.quoted(value)
        case .string(nil), .absent: return "null"
        case let .bool(value): return value ? "true" : "false"
        case let .array(items): return "[" + items.map(\.text).joined(separator: ",") + "]"
        case let .object(members):
            return "{" + members.filter { !$0.1.isAbsent }.map { Self.quoted($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    /// JSONEncoder's escaping for one string.
    private static func quoted(_ value: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "\"\"" }
        return String(decoding: data, as: UTF8.self)
    }
}

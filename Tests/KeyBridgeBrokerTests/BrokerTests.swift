import Foundation
import Glibc
@testable import KeyBridgeBroker
import KeyBridgeTestSupport
import XCTest

/// The broker in this process on a free loopback port, forwarding to the nginx test bank with
/// the token's QWAC key and signing with its QSealC key; callers speak plain HTTP through curl.
final class BrokerTests: XCTestCase {
    static let aliceToken = "alice-secret-token-0123456789"
    static let bobToken = "bob-secret-token-9876543210"

    /// A socket that listens but never accepts nor answers: the upstream that times out.
    final class SilentUpstream: Sendable {
        let port: Int
        let descriptor: Int32

        init() throws {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.descriptor = descriptor
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    bind(descriptor, socketAddress, length) == 0 && listen(descriptor, 16) == 0
                        && getsockname(descriptor, socketAddress, &length) == 0
                }
            }
            guard bound else { throw CommandError(message: "cannot bind the silent upstream") }
            port = Int(UInt16(bigEndian: address.sin_port))
        }
    }

    /// The broker's log lines, kept for the tests to read.
    final class LogLines: @unchecked Sendable {
        // `lines` is guarded by `lock`.
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var all: [String] { lock.withLock { lines } }
        /// The parsed lines whose requestId is `id`.
        func entries(requestID id: String) -> [[String: Any]] {
            all.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
                .filter { $0["requestId"] as? String == id }
        }
    }

    /// One broker for the whole test class.
    final class Fixture: Sendable {
        let server: BrokerServer
        let broker: Broker
        let silent: SilentUpstream
        let bank: BankServer
        let sandbox: BrokerSandbox
        let relay: DroppingRelay
        let log = LogLines()
        static let allBanks = ["acme", "plain", "untrusted", "silent", "metered", "sandbox", "resuming", "h2", "h2off", "refused",
                               "flaky", "flakypost", "sequential"]

        static let shared: Fixture = {
            do {
                return try Fixture()
            } catch {
                fatalError("cannot start the broker: \(error)")
            }
        }()

        private init() throws {
            let token = TestToken.shared
            bank = BankServer.shared
            silent = try SilentUpstream()
            // A CA of its own that signed nothing the bank uses: the untrusted upstream.
            let folder = try Command.temporaryDirectory()
            let made = try Command.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                        "-nodes", "-keyout", folder + "/other-ca-key.pem", "-out", folder + "/other-ca.pem",
                                        "-subj", "/CN=Other CA", "-days", "2"])
            guard made.status == 0 else { throw CommandError(message: "openssl req failed: \(made.standardError)") }
            let upstream = bank.url("")
            let identity: [String: Any] = [
                "upstream": upstream, "caFile": token.pki("root-ca.pem"), "key": token.rsaURI, "cert": token.pki("client-rsa-chain.pem"),
            ]
            var signed = identity
            signed["signing"] = ["profile": "berlin-group", "key": try token.keyURI("qseal-ec"), "cert": token.pki("qseal-ec.pem")]
            var untrusted = identity
            untrusted["caFile"] = folder + "/other-ca.pem"
            var silentBank = identity
            silentBank["upstream"] = "https://127.0.0.1:\(silent.port)"
            silentBank["timeoutSeconds"] = 2

            // The sandbox: its own nginx (session cache, tickets, an HTTP/2 listener) and the mock bank.
            sandbox = BrokerSandbox.shared
            relay = try DroppingRelay(target: sandbox.http1Port)
            func sandboxBank(_ upstream: String, signing: Bool = false, http2: Bool = true, retry: [String: Any]? = nil) -> [String: Any] {
                var bank = identity
                bank["upstream"] = upstream
                bank["http2"] = http2
                if signing { bank["signing"] = signed["signing"] }
                if let retry { bank["retry"] = retry }
                return bank
            }
            let retry: [String: Any] = ["maxAttempts": 3, "backoffMilliseconds": 50, "maxBackoffMilliseconds": 1000]
            let closedPort = try BrokerSandbox.freePort()
            var banks: [String: Any] = ["acme": signed, "plain": identity, "untrusted": untrusted, "silent": silentBank, "metered": identity]
            banks["sandbox"] = sandboxBank("https://localhost:\(sandbox.http1Port)/psd2", signing: true)
            banks["resuming"] = sandboxBank("https://localhost:\(sandbox.http1Port)", http2: false)
            // Only the 200-request test uses it, so its first connection is that test's.
            banks["sequential"] = sandboxBank("https://localhost:\(sandbox.http1Port)", http2: false)
            banks["h2"] = sandboxBank("https://localhost:\(sandbox.http2Port)")
            banks["h2off"] = sandboxBank("https://localhost:\(sandbox.http2Port)", http2: false)
            banks["refused"] = sandboxBank("https://127.0.0.1:\(closedPort)", retry: retry)
            banks["flaky"] = sandboxBank("https://localhost:\(relay.port)/psd2", signing: true, retry: retry)
            banks["flakypost"] = sandboxBank("https://localhost:\(relay.port)/psd2", signing: true, retry: retry)
            let object: [String: Any] = [
                "listen": "127.0.0.1:0",
                "maxBodyBytes": 4096,
                "banks": banks,
                "callers": [
                    ["name": "alice", "tokenSHA256": Broker.tokenSHA256(BrokerTests.aliceToken), "banks": Fixture.allBanks],
                    ["name": "bob", "tokenSHA256": Broker.tokenSHA256(BrokerTests.bobToken), "banks": ["plain"]],
                ],
            ]
            let configuration = try BrokerConfiguration.decode(JSONSerialization.data(withJSONObject: object))
            let log = self.log
            broker = try Broker(configuration: configuration, log: { line in log.append(line) })
            server = try BrokerServer(broker: broker, host: "127.0.0.1", port: 0)
        }
    }

    struct Reply {
        var status: Int
        var headers: String
        var body: String
        var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        }
    }

    var base: String { "http://127.0.0.1:\(Fixture.shared.server.port)" }

    /// One request through the broker with curl.
    func send(_ path: String, method: String = "GET", token: String? = aliceToken, headers: [String] = [],
                      body: Data? = nil, extra: [String] = []) throws -> Reply {
        var arguments = ["curl", "-sS", "-i", "--max-time", "20", "-X", method] + extra
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        for header in headers { arguments += ["-H", header] }
        if body != nil { arguments += ["--data-binary", "@-"] }
        arguments.append(base + path)
        let result = try Command.run(arguments, input: body)
        XCTAssertEqual(result.status, 0, result.standardError)
        return try parse(result.standardOutput)
    }

    func parse(_ output: String) throws -> Reply {
        guard let split = output.range(of: "\r\n\r\n") else { throw CommandError(message: "no header end in: \(output)") }
        let head = String(output[..<split.lowerBound])
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return Reply(status: status, headers: head, body: String(output[split.upperBound...]))
    }

    /// Raw bytes to the broker, for requests curl would not send.
    func sendRaw(_ text: String) throws -> Reply {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(Fixture.shared.server.port)).bigEndian
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(connected, 0)
        let bytes = Array(text.utf8)
        XCTAssertEqual(bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, 0) }, bytes.count)
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received.append(contentsOf: buffer[0..<count])
        }
        return try parse(String(decoding: received, as: UTF8.self))
    }

    func assertError(_ reply: Reply, _ status: Int, _ code: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(reply.status, status, reply.body, file: file, line: line)
        XCTAssertEqual(reply.json?["error"] as? String, code, reply.body, file: file, line: line)
        XCTAssertNotNil(reply.json?["cause"] as? String, file: file, line: line)
        XCTAssertFalse(reply.body.contains(BrokerTests.aliceToken) || reply.body.contains(BrokerTests.bobToken), file: file, line: line)
        XCTAssertFalse(reply.body.contains(TestToken.shared.userPIN.trimmingCharacters(in: .whitespacesAndNewlines)) && !TestToken.shared.userPIN.isEmpty,
                       file: file, line: line)
    }

    // MARK: - Forwarding

    func testAuthorizedGetIsForwardedWithTheTokenKey() throws {
        let reply = try send("/plain/accounts?withBalance=true")
        XCTAssertEqual(reply.status, 200, reply.body)
        let json = try XCTUnwrap(reply.json, reply.body)
        XCTAssertEqual(json["verify"] as? String, "SUCCESS")
        XCTAssertTrue((json["subject"] as? String ?? "").contains("KeyBridge"), reply.body)
        XCTAssertEqual(json["uri"] as? String, "/accounts?withBalance=true")
        XCTAssertEqual(json["method"] as? String, "GET")
        // Bob may use "plain" too.
        XCTAssertEqual(try send("/plain/accounts", token: BrokerTests.bobToken).status, 200)
    }

    func testSignedPostCarriesBerlinGroupHeaders() throws {
        let body = Data(#"{"instructedAmount":{"currency":"EUR","amount":"12.34"}}"#.utf8)
        let reply = try send("/acme/echo", method: "POST", headers: ["Content-Type: application/json", "PSU-ID: alice"], body: body)
        XCTAssertEqual(reply.status, 200, reply.body)
        XCTAssertTrue(reply.body.contains("Digest: SHA-256="), reply.body)
        XCTAssertTrue(reply.body.contains("TPP-Signature-Certificate: "), reply.body)
        XCTAssertTrue(reply.body.contains("Signature: keyId=\"SN="), reply.body)
        XCTAssertTrue(reply.body.contains("X-Request-ID: "), reply.body)
        XCTAssertTrue(reply.body.contains("psu-id"), "PSU-ID is signed when present: \(reply.body)")
        XCTAssertTrue(reply.body.hasSuffix(String(decoding: body, as: UTF8.self)), reply.body)
        XCTAssertFalse(reply.body.lowercased().contains("authorization:"), "the bearer token must not reach the bank")
        XCTAssertFalse(reply.body.contains(BrokerTests.aliceToken))
    }

    func testCallerSignatureHeadersAreReplaced() throws {
        let reply = try send("/acme/echo", method: "POST",
                             headers: ["Signature: keyId=\"forged\",signature=\"AAAA\"", "Digest: SHA-256=forged", "x-jws-signature: forged"],
                             body: Data("{}".utf8))
        XCTAssertEqual(reply.status, 200, reply.body)
        XCTAssertFalse(reply.body.contains("forged"), reply.body)
        let signatureLines = reply.body.split(whereSeparator: \.isNewline).filter { $0.lowercased().hasPrefix("signature:") }
        XCTAssertEqual(signatureLines.count, 1, "exactly one Signature: \(reply.body)")
        XCTAssertEqual(reply.body.split(whereSeparator: \.isNewline).filter { $0.lowercased().hasPrefix("digest:") }.count, 1)
        XCTAssertTrue(reply.body.contains("Signature: keyId=\"SN="), reply.body)
    }

    func testHopByHopHeadersAreNotForwarded() throws {
        let reply = try send("/plain/echo", method: "POST", headers: ["Proxy-Authorization: Basic c2VjcmV0", "X-Kept: yes", "Upgrade: h2c"],
                             body: Data("x".utf8))
        XCTAssertEqual(reply.status, 200, reply.body)
        XCTAssertTrue(reply.body.contains("X-Kept: yes"), reply.body)
        XCTAssertFalse(reply.body.contains("Proxy-Authorization"), reply.body)
        XCTAssertFalse(reply.body.contains("Upgrade:"), reply.body)
    }

    // MARK: - Refusals

    func testMissingOrWrongTokenIs401() throws {
        assertError(try send("/plain/accounts", token: nil), 401, "unauthorized")
        assertError(try send("/plain/accounts", token: "not-a-known-token"), 401, "unauthorized")
        assertError(try send("/plain/accounts", token: nil, headers: ["Authorization: Basic YWxpY2U6cHc="]), 401, "unauthorized")
        // An unknown bank does not tell an unauthenticated caller anything either.
        assertError(try send("/nosuchbank/accounts", token: nil), 401, "unauthorized")
    }

    func testUnknownBankIs404() throws {
        assertError(try send("/nosuchbank/accounts"), 404, "unknown-bank")
        assertError(try send("/"), 404, "unknown-bank")
    }

    func testCallerNotAllowedTheBankIs403() throws {
        assertError(try send("/acme/accounts", token: BrokerTests.bobToken), 403, "bank-not-allowed")
    }

    func testBodyOverTheLimitIs413() throws {
        assertError(try send("/plain/echo", method: "POST", body: Data(repeating: 0x41, count: 5000)), 413, "body-too-large")
        // A chunked body that grows too large.
        assertError(try send("/plain/echo", method: "POST", headers: ["Transfer-Encoding: chunked"], body: Data(repeating: 0x41, count: 5000)),
                    413, "body-too-large")
        XCTAssertEqual(try send("/plain/echo", method: "POST", body: Data(repeating: 0x41, count: 4000)).status, 200)
        // Answered before the body is read, and still logged with its request id.
        let id = "too-large-" + UUID().uuidString
        let refused = try send("/plain/echo", method: "POST", headers: ["X-Request-ID: \(id)"], body: Data(repeating: 0x41, count: 5000))
        XCTAssertTrue(refused.headers.contains("X-Request-ID: \(id)"), refused.headers)
        XCTAssertEqual(Fixture.shared.log.entries(requestID: id).first?["error"] as? String, "body-too-large")
    }

    func testControlCharactersInHeadersAre400() throws {
        assertError(try send("/plain/accounts", headers: ["X-Evil: a\u{01}b"]), 400, "bad-header")
        // A bare CR inside a value, sent raw: refused, by the broker or by the HTTP parser.
        let reply = try sendRaw("GET /plain/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(BrokerTests.aliceToken)\r\nX-Evil: a\rInjected: 1\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(reply.status, 400, reply.body)
    }

    func testAbsoluteFormAndConnectAre400() throws {
        assertError(try send("/plain/accounts", extra: ["--request-target", "https://evil.example/steal"]), 400, "absolute-form-refused")
        let connect = try sendRaw("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nAuthorization: Bearer \(BrokerTests.aliceToken)\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(connect.status, 400, connect.body)
    }

    func testDotSegmentsAre400() throws {
        assertError(try send("/plain/%2e%2e/accounts", extra: ["--path-as-is"]), 400, "bad-path")
        assertError(try send("/plain/a/../../accounts", extra: ["--path-as-is"]), 400, "bad-path")
    }

    // MARK: - Upstream failures

    func testUntrustedUpstreamIs502() throws {
        let reply = try send("/untrusted/accounts")
        assertError(reply, 502, "upstream-tls")
    }

    func testSilentUpstreamIs504WithinTheTimeout() throws {
        let started = Date()
        let reply = try send("/silent/accounts")
        let elapsed = Date().timeIntervalSince(started)
        assertError(reply, 504, "upstream-timeout")
        XCTAssertLessThan(elapsed, 6, "the bank's timeoutSeconds is 2")
        // The other banks are not held up meanwhile: one connection thread per caller.
        XCTAssertEqual(try send("/plain/accounts").status, 200)
    }

    // MARK: - Command line

    /// `keybridge serve` as a subprocess: prints its port, forwards, and stops on SIGTERM.
    func testServeCommandForwards() throws {
        let token = TestToken.shared
        let folder = try Command.temporaryDirectory()
        let object: [String: Any] = [
            "listen": "127.0.0.1:0",
            "banks": ["bank": ["upstream": Fixture.shared.bank.url(""), "caFile": token.pki("root-ca.pem"), "key": token.ecURI,
                               "cert": token.pki("client-ec-chain.pem")]],
            "callers": [["name": "cli", "tokenSHA256": Broker.tokenSHA256("cli-token"), "banks": ["bank"]]],
        ]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: folder + "/broker.json"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: KeyBridgeExecutable.path)
        process.arguments = ["serve", "--config", folder + "/broker.json"]
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.softHSMConfig
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        var portText = Data()
        while !portText.contains(0x0A) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            portText.append(chunk)
        }
        let port = try XCTUnwrap(Int(String(decoding: portText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
                                 String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self))
        let result = try Command.run(["curl", "-sS", "-H", "Authorization: Bearer cli-token", "http://127.0.0.1:\(port)/bank/accounts"])
        XCTAssertTrue(result.standardOutput.contains(#""verify":"SUCCESS""#), result.combined)
        let refused = try Command.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/bank/accounts"])
        XCTAssertEqual(refused.standardOutput, "401")
        process.terminate()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(log.contains(#""status":200"#), log)
        XCTAssertFalse(log.contains("cli-token"), log)
    }

    func testServeCommandRefusesABrokenConfiguration() throws {
        let folder = try Command.temporaryDirectory()
        try Data(#"{"listen":"127.0.0.1:0","banks":{}}"#.utf8).write(to: URL(fileURLWithPath: folder + "/broker.json"))
        let result = try KeyBridgeExecutable.run(["serve", "--config", folder + "/broker.json"])
        XCTAssertEqual(result.status, 1, result.combined)
        XCTAssertTrue(result.standardError.contains("callers"), result.standardError)
        XCTAssertEqual(try KeyBridgeExecutable.run(["serve"]).status, 2)
        let hashed = try KeyBridgeExecutable.run(["serve", "--hash-token"], input: Data("cli-token\n".utf8))
        XCTAssertEqual(hashed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines), Broker.tokenSHA256("cli-token"))
    }

    // MARK: - Health and metrics

    /// The value of each sample line of `/metrics`, keyed by `name{labels}`; fails on a line that
    /// is neither a `# HELP`/`# TYPE` comment nor `name{labels} value`.
    func metrics(file: StaticString = #filePath, line: UInt = #line) throws -> [String: Double] {
        let reply = try send("/metrics", token: nil)
        XCTAssertEqual(reply.status, 200, reply.body, file: file, line: line)
        XCTAssertTrue(reply.headers.lowercased().contains("content-type: text/plain; version=0.0.4"), reply.headers, file: file, line: line)
        let sample = try NSRegularExpression(pattern: #"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? (\S+)$"#)
        var values: [String: Double] = [:]
        var typed: Set<String> = []
        for text in reply.body.split(separator: "\n").map(String.init) {
            if text.hasPrefix("# HELP ") { continue }
            if text.hasPrefix("# TYPE ") {
                let parts = text.split(separator: " ")
                XCTAssertEqual(parts.count, 4, text, file: file, line: line)
                XCTAssertTrue(["counter", "histogram", "gauge"].contains(String(parts.last ?? "")), text, file: file, line: line)
                typed.insert(String(parts[2]))
                continue
            }
            let range = NSRange(text.startIndex..., in: text)
            guard let match = sample.firstMatch(in: text, range: range), let nameRange = Range(match.range(at: 1), in: text),
                  let valueRange = Range(match.range(at: match.numberOfRanges - 1), in: text), let value = Double(text[valueRange]) else {
                XCTFail("not a Prometheus sample line: \(text)", file: file, line: line)
                continue
            }
            let name = String(text[nameRange])
            let family = ["_bucket", "_sum", "_count"].reduce(name) { $0.hasSuffix($1) && !typed.contains($0) ? String($0.dropLast($1.count)) : $0 }
            XCTAssertTrue(typed.contains(family), "no # TYPE before \(name)", file: file, line: line)
            values[String(text[..<valueRange.lowerBound].dropLast())] = value
        }
        return values
    }

    func testMetricsAreValidPrometheusTextAndCount() throws {
        let before = try metrics()
        let key = #"keybridge_requests_total{bank="plain",status="200"}"#
        let requestsBefore = before[key] ?? 0
        XCTAssertEqual(try send("/plain/accounts").status, 200)
        let after = try metrics()
        XCTAssertEqual(after[key], requestsBefore + 1)
        XCTAssertGreaterThan(after[#"keybridge_request_duration_seconds_count"#] ?? 0, before[#"keybridge_request_duration_seconds_count"#] ?? 0)
        XCTAssertEqual(after[#"keybridge_request_duration_seconds_bucket{le="+Inf"}"#], after["keybridge_request_duration_seconds_count"])
        XCTAssertNotNil(after[#"keybridge_request_duration_seconds_bucket{le="0.005"}"#])
        XCTAssertNotNil(after[#"keybridge_request_duration_seconds_bucket{le="10"}"#])
        // A refused request is counted too, under its status.
        _ = try send("/plain/accounts", token: nil)
        XCTAssertGreaterThanOrEqual(try metrics()[#"keybridge_requests_total{bank="-",status="401"}"#] ?? 0, 1)
        // A signed request: one broker signature, timed.
        let signaturesBefore = after[#"keybridge_hsm_signatures_total{bank="acme"}"#] ?? 0
        let timedBefore = after["keybridge_hsm_signature_duration_seconds_count"] ?? 0
        XCTAssertEqual(try send("/acme/echo", method: "POST", body: Data("{}".utf8)).status, 200)
        let signed = try metrics()
        XCTAssertGreaterThanOrEqual(signed[#"keybridge_hsm_signatures_total{bank="acme"}"#] ?? 0, signaturesBefore + 1)
        XCTAssertGreaterThanOrEqual(signed["keybridge_hsm_signature_duration_seconds_count"] ?? 0, timedBefore + 1)
    }

    /// Two requests on the kept-alive connection of a bank no other test uses: one handshake.
    func testHandshakesAreCountedOncePerConnection() throws {
        let handshakes = #"keybridge_upstream_handshakes_total{bank="metered"}"#
        let signatures = #"keybridge_hsm_signatures_total{bank="metered"}"#
        let before = try metrics()
        XCTAssertEqual(before[handshakes], 0)
        XCTAssertEqual(try send("/metered/accounts").status, 200)
        XCTAssertEqual(try send("/metered/accounts").status, 200)
        let after = try metrics()
        XCTAssertEqual(after[handshakes], 1, "two requests on one kept-alive connection")
        // The handshake's CertificateVerify, and no request signing for an unsigned bank.
        XCTAssertEqual((after[signatures] ?? 0) - (before[signatures] ?? 0), 1)
        XCTAssertEqual(after[#"keybridge_requests_total{bank="metered",status="200"}"#], 2)
    }

    func testHealthzReportsEveryBankAndRateLimitsTheKeyTest() throws {
        let first = try send("/healthz", token: nil)
        XCTAssertEqual(first.status, 200, first.body)
        let json = try XCTUnwrap(first.json, first.body)
        XCTAssertEqual(json["status"] as? String, "ok")
        XCTAssertEqual((json["failing"] as? [String])?.count, 0)
        let banks = try XCTUnwrap(json["banks"] as? [String: Any])
        XCTAssertEqual(Set(banks.keys), Set(Fixture.allBanks))
        let acme = try XCTUnwrap(banks["acme"] as? [String: Any])
        XCTAssertEqual(acme["healthy"] as? Bool, true)
        XCTAssertEqual((acme["token"] as? [String: Any])?["present"] as? Bool, true)
        XCTAssertNotNil((acme["token"] as? [String: Any])?["label"] as? String)
        XCTAssertEqual(acme["loggedIn"] as? Bool, true)
        let key = try XCTUnwrap(acme["key"] as? [String: Any])
        XCTAssertEqual(key["usable"] as? Bool, true, "\(key)")
        XCTAssertNotNil(key["ageSeconds"] as? Double)
        let certificates = try XCTUnwrap(acme["certificates"] as? [String: Any])
        for role in ["mtls", "qsealc"] {
            let certificate = try XCTUnwrap(certificates[role] as? [String: Any], "\(certificates)")
            XCTAssertGreaterThan(certificate["daysUntilExpiry"] as? Int ?? -1, 0)
            XCTAssertNotNil(certificate["notAfter"] as? String)
        }
        let plainCertificates = try XCTUnwrap((banks["plain"] as? [String: Any])?["certificates"] as? [String: Any])
        XCTAssertEqual(Set(plainCertificates.keys), ["mtls"], "no QSealC for a bank that does not sign")

        // Within 30 s: the cached result, older, and no new test signature.
        let signatures = #"keybridge_hsm_signatures_total{bank="acme"}"#
        let counted = try metrics()[signatures]
        Thread.sleep(forTimeInterval: 0.2)
        let second = try XCTUnwrap(try send("/healthz", token: nil).json)
        let secondKey = try XCTUnwrap(((second["banks"] as? [String: Any])?["acme"] as? [String: Any])?["key"] as? [String: Any])
        XCTAssertEqual(secondKey["cached"] as? Bool, true)
        XCTAssertGreaterThanOrEqual(secondKey["ageSeconds"] as? Double ?? 0, 0.2)
        XCTAssertEqual(try metrics()[signatures], counted, "a second /healthz within 30 s makes no test signature")
        // Not a bank route: a POST is refused without touching any bank.
        assertError(try send("/healthz", method: "POST", token: nil, body: Data()), 405, "method-not-allowed")
    }

    func testHealthzIs503ForAnExpiredCertificate() throws {
        // Judged a day after the QSealC expires (the test certificates share their validity).
        let broker = Fixture.shared.broker
        let notAfter = try XCTUnwrap(broker.routes["acme"]?.certificates.map(\.certificate.notAfter).max())
        let response = broker.health(at: notAfter.addingTimeInterval(86_400))
        XCTAssertEqual(response.status, 503)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: response.body) as? [String: Any])
        XCTAssertEqual(json["status"] as? String, "failing")
        let failing = try XCTUnwrap(json["failing"] as? [String])
        XCTAssertTrue(failing.contains("acme: certificate-expired(qsealc)"), "\(failing)")
        XCTAssertTrue(failing.contains("acme: certificate-expired(mtls)") || failing.contains("plain: certificate-expired(mtls)"), "\(failing)")
        let acme = try XCTUnwrap((json["banks"] as? [String: Any])?["acme"] as? [String: Any])
        XCTAssertEqual(acme["healthy"] as? Bool, false)
        XCTAssertLessThan(((acme["certificates"] as? [String: Any])?["qsealc"] as? [String: Any])?["daysUntilExpiry"] as? Int ?? 0, 0)
    }

    // MARK: - Configuration

    func testConfigurationErrorsNameTheField() {
        func failure(_ json: String) -> String {
            do {
                _ = try BrokerConfiguration.decode(Data(json.utf8))
                return "accepted"
            } catch {
                return error.reason
            }
        }
        XCTAssertTrue(failure(#"{"listen":"127.0.0.1:1","banks":{},"callers":[]}"#).contains("banks"))
        let bank = #""b":{"upstream":"http://x","key":"pkcs11:object=k","cert":"c.pem"}"#
        XCTAssertTrue(failure(#"{"listen":"127.0.0.1:1","banks":{\#(bank)},"callers":[]}"#).contains("https"))
        let good = #""b":{"upstream":"https://x","key":"pkcs11:object=k","cert":"c.pem"}"#
        XCTAssertTrue(failure(#"{"listen":"127.0.0.1:1","banks":{\#(good)},"callers":[{"name":"c","tokenSHA256":"abc","banks":["b"]}]}"#).contains("64 hex"))
        XCTAssertTrue(failure(#"{"listen":"127.0.0.1:1","banks":{\#(good)},"callers":[{"name":"c","tokenSHA256":"\#(String(repeating: "a", count: 64))","banks":["z"]}]}"#).contains("'z'"))
        XCTAssertEqual(failure(#"{"listen":"127.0.0.1:1","banks":{\#(good)},"callers":[]}"#), "accepted")
        // Retry policy, connection limits, Unix sockets.
        func bankWith(_ extra: String) -> String { #""b":{"upstream":"https://x","key":"pkcs11:object=k","cert":"c.pem",\#(extra)}"# }
        XCTAssertTrue(failure(#"{"listen":"127.0.0.1:1","banks":{\#(bankWith(#""retry":{"maxAttempts":0}"#))},"callers":[]}"#).contains("retry.maxAttempts"))
        XCTAssertTrue(failure(#"{"listen":"127.0.0.1:1","banks":{\#(bankWith(#""retry":{"maxAttempts":2,"backoffMilliseconds":-1}"#))},"callers":[]}"#).contains("backoffMilliseconds"))
        XCTAssertEqual(failure(#"{"listen":"127.0.0.1:1","banks":{\#(bankWith(#""retry":{"maxAttempts":3},"maxConnections":4,"http2":false"#))},"callers":[]}"#), "accepted")
        XCTAssertTrue(failure(#"{"listen":"127.0.0.1:1","banks":{\#(bankWith(#""maxConnections":0"#))},"callers":[]}"#).contains("maxConnections"))
        XCTAssertTrue(failure(#"{"listen":"unix:relative.sock","banks":{\#(good)},"callers":[]}"#).contains("absolute path"))
        XCTAssertTrue(failure(#"{"listen":"unix:/tmp/b.sock","socketMode":"0066","banks":{\#(good)},"callers":[]}"#).contains("socketMode"))
        XCTAssertEqual(failure(#"{"listen":"unix:/tmp/b.sock","socketMode":"0600","banks":{\#(good)},"callers":[]}"#), "accepted")
        XCTAssertEqual(try BrokerConfiguration.parseListen("unix:/run/kb.sock"), .unix(path: "/run/kb.sock", mode: 0o660))
        XCTAssertEqual(try BrokerConfiguration.parseListen("[::1]:8080"), .tcp(host: "::1", port: 8080))
        let retry = BrokerConfiguration.Retry(maxAttempts: 5, backoffMilliseconds: 100, maxBackoffMilliseconds: 300)
        XCTAssertEqual((2...5).map { retry.delay(beforeAttempt: $0) }, [0.1, 0.2, 0.3, 0.3], "doubling, capped")
        XCTAssertTrue(BrokerHTTP.isIdempotent("PUT") && BrokerHTTP.isIdempotent("delete"))
        XCTAssertFalse(BrokerHTTP.isIdempotent("POST") || BrokerHTTP.isIdempotent("PATCH"))
        for reserved in ["healthz", "metrics"] {
            let named = good.replacingOccurrences(of: #""b":"#, with: "\"\(reserved)\":")
            let reason = failure(#"{"listen":"127.0.0.1:1","banks":{\#(named)},"callers":[]}"#)
            XCTAssertTrue(reason.contains("'\(reserved)'") && reason.contains("reserved"), reason)
        }
    }
}

import Foundation
import Glibc
@testable import KeyBridgeBroker
import KeyBridgeTestSupport
import KeyBridgeTLS
import PKCS11
import XCTest

/// The broker against the sandbox (its own nginx with session resumption and HTTP/2, in front of
/// the mock bank with its request log): signing verified by the bank, the connection pool, the
/// retry policy, request ids, the Unix socket and the token-outage answer.
extension BrokerTests {
    static let payment = #"{"instructedAmount":{"currency":"EUR","amount":"12.34"},"creditorName":"Merchant"}"#

    /// The curl arguments for `ids.count` requests in sequence on one kept-alive connection to
    /// the broker, one status code per line on standard output.
    func sequenceArguments(_ path: String, ids: [String], post body: String? = nil) -> [String] {
        var arguments = ["curl", "-sS", "--max-time", "120"]
        for (index, id) in ids.enumerated() {
            if index > 0 { arguments.append("--next") }
            arguments += ["-o", "/dev/null", "-w", "%{http_code}\n", "-H", "Authorization: Bearer \(BrokerTests.aliceToken)",
                          "-H", "X-Request-ID: \(id)"]
            if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
            arguments.append(base + path)
        }
        return arguments
    }

    func statusCodes(_ output: String) -> [Int] { output.split(separator: "\n").compactMap { Int($0) } }

    func metric(_ values: [String: Double], _ name: String, bank: String) -> Double {
        values["\(name){bank=\"\(bank)\"}"] ?? 0
    }

    // MARK: - Signing verified by the bank

    func testSignedBerlinGroupPostIsVerifiedByTheSandbox() throws {
        let id = "bg-post-" + UUID().uuidString
        let reply = try send("/sandbox/v1/payments/sepa-credit-transfers", method: "POST",
                             headers: ["Content-Type: application/json", "PSU-ID: alice", "X-Request-ID: \(id)"],
                             body: Data(BrokerTests.payment.utf8))
        XCTAssertEqual(reply.status, 201, reply.body)
        let json = try XCTUnwrap(reply.json, reply.body)
        XCTAssertEqual(json["result"] as? String, "accepted", reply.body)
        XCTAssertEqual(json["format"] as? String, "berlin-group", reply.body)
        let checks = try XCTUnwrap(json["checks"] as? [[String: Any]])
        XCTAssertEqual(Set(checks.compactMap { $0["name"] as? String }), ["qwac", "qsealc", "digest", "signature"], reply.body)
        XCTAssertTrue(checks.allSatisfy { $0["ok"] as? Bool == true }, reply.body)
        XCTAssertTrue(reply.headers.contains("X-Request-ID: \(id)"), reply.headers)
        // The bank logged it once, under the caller's request id.
        let logged = Fixture.shared.sandbox.requestLog().filter { $0["requestId"] as? String == id }
        XCTAssertEqual(logged.count, 1)
        XCTAssertEqual(logged.first?["status"] as? Int, 201)
        XCTAssertEqual(logged.first?["target"] as? String, "/psd2/v1/payments/sepa-credit-transfers")

        // Control: the same POST through a bank without a signing profile reaches the same
        // sandbox unsigned and is refused, so the acceptance above is the sandbox's verdict.
        let unsigned = try send("/resuming/psd2/v1/payments/sepa-credit-transfers", method: "POST",
                                headers: ["Content-Type: application/json"], body: Data(BrokerTests.payment.utf8))
        XCTAssertEqual(unsigned.status, 401, unsigned.body)
        XCTAssertEqual(unsigned.json?["result"] as? String, "rejected", unsigned.body)
    }

    // MARK: - Connection pool and TLS session resumption

    /// 200 GETs in sequence to a bank whose nginx closes each connection after 50 requests: the
    /// broker needs at least 4 connections, but resumes the TLS session on all but the first, so
    /// the mTLS key signs at most a handful of times. nginx's own log confirms the resumptions.
    func testTwoHundredSequentialRequestsNeedAHandfulOfSignatures() throws {
        let prefix = "seq-" + UUID().uuidString.prefix(8) + "-"
        let ids = (0..<200).map { prefix + String($0) }
        let before = try metrics()
        let result = try Command.run(sequenceArguments("/sequential/accounts", ids: ids))
        let codes = statusCodes(result.standardOutput)
        XCTAssertEqual(codes.count, 200, result.standardError)
        XCTAssertTrue(codes.allSatisfy { $0 == 200 }, "\(codes.filter { $0 != 200 })")
        let after = try metrics()
        let signatures = metric(after, "keybridge_hsm_signatures_total", bank: "sequential") - metric(before, "keybridge_hsm_signatures_total", bank: "sequential")
        let full = metric(after, "keybridge_upstream_handshakes_total", bank: "sequential") - metric(before, "keybridge_upstream_handshakes_total", bank: "sequential")
        let resumed = metric(after, "keybridge_upstream_resumptions_total", bank: "sequential") - metric(before, "keybridge_upstream_resumptions_total", bank: "sequential")

        // nginx's view: the connections these requests came on, and which of them resumed.
        let lines = Fixture.shared.sandbox.accessLog().filter { $0.requestID.hasPrefix(prefix) }
        XCTAssertEqual(lines.count, 200)
        var reusedByConnection: [String: Bool] = [:]
        for line in lines { reusedByConnection[line.connection] = line.reused }
        let connections = reusedByConnection.count
        let resumedByNginx = reusedByConnection.values.filter { $0 }.count
        print("200 sequential requests: \(Int(signatures)) HSM signatures, \(connections) upstream connections, "
            + "\(Int(full)) full handshakes, \(Int(resumed)) resumptions (nginx saw \(resumedByNginx) resumed)")
        XCTAssertGreaterThanOrEqual(connections, 4, "keepalive_requests 50 forces new connections")
        XCTAssertEqual(Int(full + resumed), connections, "every new connection is counted once")
        XCTAssertEqual(Int(resumed), resumedByNginx, "the broker's resumptions are the ones nginx saw")
        XCTAssertEqual(full, 1, "the first connection only; every later one resumes")
        XCTAssertGreaterThanOrEqual(resumed, 3)
        XCTAssertLessThanOrEqual(signatures, 4, "200 requests, \(connections) connections, \(Int(signatures)) signatures")
        XCTAssertEqual(signatures, full, "one CertificateVerify per full handshake, none per resumption")
    }

    /// 16 callers at once, 50 signed POSTs each: every one is answered 201 and reaches the bank
    /// exactly once (the mock bank's request log holds each request id once).
    func testSixteenConcurrentCallersAreAllServedExactlyOnce() throws {
        let run = "conc-" + UUID().uuidString.prefix(8)
        let folder = try Command.temporaryDirectory()
        var processes: [(Process, String, [String])] = []
        for client in 0..<16 {
            let ids = (0..<50).map { "\(run)-c\(client)-r\($0)" }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = sequenceArguments("/sandbox/v1/payments/sepa-credit-transfers", ids: ids, post: BrokerTests.payment)
            let outputPath = folder + "/client-\(client).out"
            XCTAssertTrue(FileManager.default.createFile(atPath: outputPath, contents: nil))
            process.standardOutput = FileHandle(forWritingAtPath: outputPath)
            process.standardError = FileHandle(forWritingAtPath: "/dev/null")
            processes.append((process, outputPath, ids))
        }
        let before = try metrics()
        let started = Date()
        for (process, _, _) in processes { try process.run() }
        for (process, _, _) in processes { process.waitUntilExit() }
        let elapsed = Date().timeIntervalSince(started)

        var codes: [Int] = []
        for (process, outputPath, _) in processes {
            XCTAssertEqual(process.terminationStatus, 0)
            codes += statusCodes((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
        }
        let expected = Set(processes.flatMap { $0.2 })
        let logged = Fixture.shared.sandbox.requestLog().compactMap { entry -> (String, Int)? in
            guard let id = entry["requestId"] as? String, id.hasPrefix(run + "-"), let status = entry["status"] as? Int else { return nil }
            return (id, status)
        }
        let loggedIDs = logged.map(\.0)
        let after = try metrics()
        print("concurrency: 16 callers x 50 signed POSTs in \(String(format: "%.1f", elapsed)) s: \(codes.filter { $0 == 201 }.count) answered 201, "
            + "the bank logged \(loggedIDs.count) requests, \(Set(loggedIDs).count) distinct ids; upstream full handshakes "
            + "\(Int(metric(after, "keybridge_upstream_handshakes_total", bank: "sandbox") - metric(before, "keybridge_upstream_handshakes_total", bank: "sandbox"))), "
            + "resumptions \(Int(metric(after, "keybridge_upstream_resumptions_total", bank: "sandbox") - metric(before, "keybridge_upstream_resumptions_total", bank: "sandbox")))")
        XCTAssertEqual(codes.count, 800)
        XCTAssertTrue(codes.allSatisfy { $0 == 201 }, "\(Dictionary(grouping: codes, by: { $0 }).mapValues(\.count))")
        XCTAssertEqual(loggedIDs.count, 800, "none lost, none duplicated")
        XCTAssertEqual(Set(loggedIDs), expected)
        XCTAssertTrue(logged.allSatisfy { $0.1 == 201 })
    }

    func testHTTP2IsUsedWhereTheBankOffersIt() throws {
        let before = try metrics()
        let reply = try send("/h2/accounts")
        XCTAssertEqual(reply.status, 200, reply.body)
        XCTAssertEqual(reply.json?["protocol"] as? String, "HTTP/2.0", reply.body)
        // Control: the same listener with HTTP/2 switched off for the bank speaks HTTP/1.1.
        let plain = try send("/h2off/accounts")
        XCTAssertEqual(plain.json?["protocol"] as? String, "HTTP/1.1", plain.body)
        let after = try metrics()
        XCTAssertEqual((after[#"keybridge_upstream_responses_total{bank="h2",version="2"}"#] ?? 0)
            - (before[#"keybridge_upstream_responses_total{bank="h2",version="2"}"#] ?? 0), 1)
        XCTAssertEqual((after[#"keybridge_upstream_responses_total{bank="h2off",version="1.1"}"#] ?? 0)
            - (before[#"keybridge_upstream_responses_total{bank="h2off",version="1.1"}"#] ?? 0), 1)
        // The caller is answered over HTTP/1.1 whatever the bank spoke.
        XCTAssertTrue(reply.headers.hasPrefix("HTTP/1.1 200"), reply.headers)
    }

    // MARK: - Retry policy

    /// The relay drops the first connection: a GET is sent again and reaches the bank once.
    func testIdempotentRequestIsRetriedAfterALostConnection() throws {
        let relay = Fixture.shared.relay
        relay.dropNext(1)
        let acceptedBefore = relay.acceptedCount
        let before = try metrics()
        let id = "retry-get-" + UUID().uuidString
        let reply = try send("/flaky/v1/accounts", headers: ["X-Request-ID: \(id)"])
        XCTAssertEqual(reply.status, 200, reply.body)
        XCTAssertEqual(reply.json?["result"] as? String, "accepted", reply.body)
        XCTAssertEqual(relay.acceptedCount - acceptedBefore, 2, "the dropped connection and the retry")
        XCTAssertEqual(metric(try metrics(), "keybridge_upstream_retries_total", bank: "flaky") - metric(before, "keybridge_upstream_retries_total", bank: "flaky"), 1)
        XCTAssertEqual(Fixture.shared.sandbox.requestLog().filter { $0["requestId"] as? String == id }.count, 1)
        XCTAssertEqual(Fixture.shared.log.entries(requestID: id).first?["attempts"] as? Int, 2)
    }

    /// The same lost connection for a POST: no second attempt, 502, and nothing reached the bank.
    func testPostIsNeverRetried() throws {
        let relay = Fixture.shared.relay
        relay.dropNext(1)
        let acceptedBefore = relay.acceptedCount
        let before = try metrics()
        let id = "retry-post-" + UUID().uuidString
        let reply = try send("/flakypost/v1/payments/sepa-credit-transfers", method: "POST",
                             headers: ["Content-Type: application/json", "X-Request-ID: \(id)"], body: Data(BrokerTests.payment.utf8))
        assertError(reply, 502, "upstream-unreachable")
        XCTAssertEqual(relay.acceptedCount - acceptedBefore, 1, "one attempt only")
        XCTAssertEqual(metric(try metrics(), "keybridge_upstream_retries_total", bank: "flakypost"), metric(before, "keybridge_upstream_retries_total", bank: "flakypost"))
        XCTAssertTrue(Fixture.shared.sandbox.requestLog().filter { $0["requestId"] as? String == id }.isEmpty)
        XCTAssertEqual(Fixture.shared.log.entries(requestID: id).first?["attempts"] as? Int, 1)
        // The next POST, on a connection that is not dropped, goes through.
        XCTAssertEqual(try send("/flakypost/v1/payments/sepa-credit-transfers", method: "POST",
                                headers: ["Content-Type: application/json"], body: Data(BrokerTests.payment.utf8)).status, 201)
    }

    /// A refused connection: GET tries maxAttempts (3) times with back-off, POST once.
    func testRefusedConnectionIsRetriedWithBackOffForGetOnly() throws {
        let before = try metrics()
        let getID = "refused-get-" + UUID().uuidString
        let started = Date()
        assertError(try send("/refused/accounts", headers: ["X-Request-ID: \(getID)"]), 502, "upstream-unreachable")
        let elapsed = Date().timeIntervalSince(started)
        let middle = try metrics()
        XCTAssertEqual(metric(middle, "keybridge_upstream_retries_total", bank: "refused") - metric(before, "keybridge_upstream_retries_total", bank: "refused"), 2)
        XCTAssertEqual(Fixture.shared.log.entries(requestID: getID).first?["attempts"] as? Int, 3)
        XCTAssertGreaterThanOrEqual(elapsed, 0.14, "back-off of 50 ms, then 100 ms")

        let postID = "refused-post-" + UUID().uuidString
        assertError(try send("/refused/accounts", method: "POST", headers: ["X-Request-ID: \(postID)"], body: Data("{}".utf8)),
                    502, "upstream-unreachable")
        XCTAssertEqual(metric(try metrics(), "keybridge_upstream_retries_total", bank: "refused"), metric(middle, "keybridge_upstream_retries_total", bank: "refused"))
        XCTAssertEqual(Fixture.shared.log.entries(requestID: postID).first?["attempts"] as? Int, 1)
    }

    // MARK: - Logs and request ids

    func testLogLinesCarryTheRequestIdAndNoSecrets() throws {
        let id = "log-" + UUID().uuidString
        let reply = try send("/plain/accounts?iban=DE0012345678", headers: ["X-Request-ID: \(id)"])
        XCTAssertEqual(reply.status, 200)
        let entry = try XCTUnwrap(Fixture.shared.log.entries(requestID: id).first)
        XCTAssertEqual(entry["bank"] as? String, "plain")
        XCTAssertEqual(entry["caller"] as? String, "alice")
        XCTAssertEqual(entry["status"] as? Int, 200)
        XCTAssertEqual(entry["path"] as? String, "/plain/accounts", "no query in the log")
        XCTAssertNotNil(entry["ms"] as? Int)
        XCTAssertNotNil(entry["time"] as? String)
        XCTAssertNotNil(entry["upstreamConnection"] as? String)

        // No id sent, or an unusable one: the broker makes one, returns it and logs it.
        for headers in [[String](), ["X-Request-ID: has space"]] {
            let generated = try send("/plain/accounts", headers: headers)
            let line = try XCTUnwrap(generated.headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-request-id:") })
            let value = line.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces)
            XCTAssertNotNil(UUID(uuidString: value), value)
            XCTAssertEqual(Fixture.shared.log.entries(requestID: value).count, 1)
        }
        // A refusal is logged too, with its error code.
        let refusedID = "log-refused-" + UUID().uuidString
        _ = try send("/plain/accounts", token: "wrong-token-value", headers: ["X-Request-ID: \(refusedID)"])
        XCTAssertEqual(Fixture.shared.log.entries(requestID: refusedID).first?["error"] as? String, "unauthorized")

        // Every line is one JSON object, and none holds a token or the PIN.
        let pin = TestToken.shared.userPIN.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(pin.isEmpty)
        for line in Fixture.shared.log.all {
            XCTAssertNotNil((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any], line)
            for secret in [BrokerTests.aliceToken, BrokerTests.bobToken, "wrong-token-value", "Bearer", "pin-value", "DE0012345678"] {
                XCTAssertFalse(line.contains(secret), "\(secret) in \(line)")
            }
            XCTAssertFalse(line.contains("\"\(pin)\"") || line.contains("=\(pin)"), line)
        }
    }

    // MARK: - Requests aimed elsewhere

    /// Nothing the caller sends can make the broker talk to a host that is not configured, or add
    /// a header line of its own: the bank (nginx's echo of the raw request head) sees only the
    /// configured host.
    func testRequestsCannotReachAnUnconfiguredHostOrInjectHeaders() throws {
        // A Host header of the caller's: not forwarded; the upstream's own host is used.
        let host = try send("/plain/echo", method: "POST", headers: ["Host: evil.example"], body: Data("x".utf8))
        XCTAssertEqual(host.status, 200, host.body)
        XCTAssertFalse(host.body.contains("evil.example"), host.body)
        XCTAssertTrue(host.body.contains("Host: localhost:\(Fixture.shared.bank.port)"), host.body)
        // "//host" right after the bank, "@host" in the bank segment, absolute-form, CONNECT.
        let doubleSlash = try send("/plain//evil.example/echo", extra: ["--path-as-is"])
        XCTAssertNotEqual(doubleSlash.status, 0)
        XCTAssertFalse(doubleSlash.body.contains("evil.example\""), "the configured host answered: \(doubleSlash.body)")
        assertError(try send("//evil.example/accounts", extra: ["--path-as-is"]), 404, "unknown-bank")
        assertError(try send("/plain@evil.example/accounts", extra: ["--path-as-is"]), 404, "unknown-bank")
        assertError(try send("/plain/accounts", extra: ["--request-target", "http://evil.example/plain/accounts"]), 400, "absolute-form-refused")
        let connect = try sendRaw("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nAuthorization: Bearer \(BrokerTests.aliceToken)\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(connect.status, 400, connect.body)

        // Header injection: CR/LF encoded in the path stay encoded; a raw CR or NUL is refused.
        let encoded = try send("/plain/echo%0d%0aX-Injected:%201", method: "POST", body: Data("x".utf8), extra: ["--path-as-is"])
        XCTAssertFalse(encoded.body.split(whereSeparator: \.isNewline).contains { $0.hasPrefix("X-Injected") }, encoded.body)
        let rawCR = try sendRaw("GET /plain/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(BrokerTests.aliceToken)\r\nX-A: 1\rX-Injected: 1\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(rawCR.status, 400, rawCR.body)
        assertError(try send("/plain/accounts", headers: ["X-Evil: a\u{7F}b"]), 400, "bad-header")
        // Control: a clean request through the same route gets through.
        XCTAssertEqual(try send("/plain/accounts").status, 200)
    }

    // MARK: - Unix socket

    func testUnixSocketListenerWithModeAndStaleSocketReplaced() throws {
        let folder = try Command.temporaryDirectory()
        let path = folder + "/broker.sock"
        // A stale socket left behind: bound, then its owner gone.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        XCTAssertEqual(bound, 0)
        close(stale)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))

        let server = try BrokerServer(broker: Fixture.shared.broker, listen: .unix(path: path, mode: 0o600))
        var info = stat()
        XCTAssertEqual(lstat(path, &info), 0)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)
        let result = try Command.run(["curl", "-sS", "--unix-socket", path, "-H", "Authorization: Bearer \(BrokerTests.aliceToken)",
                                      "http://localhost/plain/accounts"])
        XCTAssertTrue(result.standardOutput.contains(#""verify":"SUCCESS""#), result.combined)
        let refused = try Command.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", path, "http://localhost/plain/accounts"])
        XCTAssertEqual(refused.standardOutput, "401")

        // A live socket is not taken over; a file that is not a socket is not removed.
        XCTAssertThrowsError(try BrokerServer(broker: Fixture.shared.broker, listen: .unix(path: path, mode: 0o600))) { error in
            XCTAssertTrue("\(error)".contains("another process is listening"), "\(error)")
        }
        let regular = folder + "/not-a-socket"
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: regular))
        XCTAssertThrowsError(try BrokerServer(broker: Fixture.shared.broker, listen: .unix(path: regular, mode: 0o600))) { error in
            XCTAssertTrue("\(error)".contains("not a socket"), "\(error)")
        }
        XCTAssertEqual(try String(contentsOfFile: regular, encoding: .utf8), "keep me")

        server.stop()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the socket is removed at stop")
    }

    // MARK: - Token outages

    func testTokenOutageErrorsAnswer503TokenUnavailable() throws {
        for code in [ReturnValue.deviceRemoved, .tokenNotPresent, .deviceError, .sessionHandleInvalid, .sessionClosed] {
            // As a signing failure reaches the broker: a PKCS11Error wrapped by the provider and the signer.
            let error = PKCS11Error(returnValue: code, function: "C_Sign", reason: "the token is not present; check the HSM connection")
            let text = "cannot sign the request: sign: \(error)"
            XCTAssertEqual(TokenOutage.cause(in: text), code.name)
            let response = BrokerResponse.signingFailure(reason: text, bank: "acme")
            XCTAssertEqual(response.status, 503)
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: response.body) as? [String: String])
            XCTAssertEqual(json["error"], "token-unavailable")
            XCTAssertEqual(json["pkcs11"], code.name)
            XCTAssertTrue(json["cause"]?.contains(code.name) == true, "\(json)")
            XCTAssertTrue(response.headers.contains { $0.name == "Retry-After" })

            // As a handshake failure: HTTPClient names the provider's recorded failure.
            let handshake = KeyBridgeError(.handshake, "the TLS connection to localhost:1 failed: error:0A000126:SSL routines::unexpected eof. The token reported: \(error).")
            XCTAssertEqual(BrokerResponse.upstreamFailure(handshake, bank: "acme").status, 503)
        }
        // Control: other token errors and plain TLS failures keep their own answers.
        let wrongPIN = PKCS11Error(returnValue: .pinIncorrect, function: "C_Login", reason: "the PIN is wrong")
        XCTAssertNil(TokenOutage.cause(in: "\(wrongPIN)"))
        XCTAssertEqual(BrokerResponse.signingFailure(reason: "\(wrongPIN)", bank: "acme").status, 502)
        XCTAssertEqual(BrokerResponse.upstreamFailure(KeyBridgeError(.handshake, "the server rejected the handshake: alert"), bank: "acme").status, 502)
        XCTAssertEqual(BrokerResponse.upstreamFailure(KeyBridgeError(.timeout, "no answer"), bank: "acme").status, 504)
    }
}

extension BrokerTests {
    /// examples/node-lambda: the handler calls the broker with fetch; runs only where node is.
    func testNodeLambdaExampleCallsTheBroker() throws {
        let found = try Command.run(["sh", "-c", "command -v node"])
        let node = found.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        guard found.status == 0, !node.isEmpty else { throw XCTSkip("node is not on PATH") }
        let script = TestToken.repositoryRoot + "/examples/node-lambda/invoke-local.mjs"
        let id = "node-" + UUID().uuidString
        let event: [String: Any] = [
            "bank": "sandbox", "path": "/v1/payments/sepa-credit-transfers", "method": "POST", "requestId": id,
            "headers": ["PSU-ID": "lambda"], "body": ["instructedAmount": ["currency": "EUR", "amount": "7.00"]],
        ]
        let eventText = String(decoding: try JSONSerialization.data(withJSONObject: event), as: UTF8.self)
        var environment = ProcessInfo.processInfo.environment
        environment["KEYBRIDGE_BROKER_URL"] = base
        environment["KEYBRIDGE_BROKER_TOKEN"] = BrokerTests.aliceToken
        let result = try Command.run([node, script, eventText], environment: environment)
        XCTAssertEqual(result.status, 0, result.combined)
        let answer = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any], result.combined)
        XCTAssertEqual(answer["statusCode"] as? Int, 201, result.standardOutput)
        XCTAssertEqual((answer["headers"] as? [String: String])?["x-request-id"], id)
        let body = try XCTUnwrap((answer["body"] as? String).flatMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        XCTAssertEqual(body["result"] as? String, "accepted", result.standardOutput)
        XCTAssertEqual(Fixture.shared.sandbox.requestLog().filter { $0["requestId"] as? String == id }.count, 1)

        // Control: a token the broker does not know gets the broker's 401, and exit status 1.
        environment["KEYBRIDGE_BROKER_TOKEN"] = "not-a-known-token"
        let refused = try Command.run([node, script, eventText], environment: environment)
        XCTAssertEqual(refused.status, 1, refused.combined)
        XCTAssertTrue(refused.standardOutput.contains(#""statusCode":401"#), refused.standardOutput)
        XCTAssertFalse(refused.standardOutput.contains("not-a-known-token"))
    }
}

import Foundation
import KeyBridgeTestSupport
import KeyBridgeTLS
import PKCS11
import XCTest

/// An HSM outage: the p11-kit server that holds the token is killed (with every p11-kit-remote
/// child, so the client's connection breaks) while a request loop runs, and started again two
/// seconds later. Requests during the outage must fail fast; within a second of the token's
/// return every request must succeed again, with no restart of this process and no leaked
/// sessions on the server's side.
final class OutageRecoveryTests: XCTestCase {
    // Computed, so listing the tests (swift test --filter) starts no server.
    var remote: RemoteToken { RemoteToken.shared }
    var bank: BankServer { BankServer.shared }

    private struct Attempt {
        var started: Double
        var finished: Double
        var error: String?
        var duration: Double { finished - started }
    }

    /// Sessions the server side holds open, from pkcs11-spy's log of the calls made to SoftHSM
    /// inside the server: successful C_OpenSession minus C_CloseSession.
    static func openSessions(inSpyLog path: String) throws -> Int {
        let log = try String(contentsOfFile: path, encoding: .utf8)
        var function = ""
        var open = 0
        for line in log.split(separator: "\n") {
            if let colon = line.firstIndex(of: ":"), line[..<colon].allSatisfy(\.isNumber), line.contains(" C_") {
                function = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("Returned:"), line.hasSuffix("CKR_OK") {
                switch function {
                case "C_OpenSession": open += 1
                case "C_CloseSession": open -= 1
                // Not C_Finalize: other clients' p11-kit-remote processes (such as the check
                // `softhsm-setup` makes with pkcs11-tool -L) log to the same file.
                case "C_CloseAllSessions": open = 0
                default: break
                }
            }
        }
        return open
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// One request with a fresh client: a test signature on the token when the client loads the
    /// key, and a full handshake (no reused connection or TLS session) that signs again.
    private static func oneRequest(uri: String, remote: RemoteToken, bank: BankServer) -> String? {
        do {
            let configuration = TLSConfiguration(certificateChain: .pemFile(remote.local.pki("client-rsa-chain.pem")),
                                                 key: .pkcs11(uri), trustRoots: .pemFile(remote.local.pki("root-ca.pem")))
            let client = try HTTPClient(configuration: configuration)
            client.totalTimeout = 10
            let response = try client.send(HTTPRequest(url: bank.url("/outage")))
            return response.status == 200 ? nil : "HTTP \(response.status)"
        } catch {
            return "\(error)"
        }
    }

    /// What an outage run saw.
    private struct OutageRun {
        var attempts: [Attempt]
        /// When the stop command began, and when it returned (the server surely dead).
        var stopping: Double
        var killed: Double
        var restarting: Double
        /// When the server's socket appeared again: the token's return.
        var returned: Double
        var startCommandDone: Double
        var serverSessionsBefore: Int
        var serverSessionsAfter: Int
    }

    /// Runs `request` in a loop on its own thread, kills the p11-kit server after a second and
    /// starts it again two seconds later (SoftHSM under pkcs11-spy both times), and lets the loop
    /// run 2.5 s more. `ready` runs before the loop, with the server up.
    private func runOutage(name: String, ready: () throws -> Void, whileAway: () -> Void = {},
                           request: @escaping @Sendable () -> String?) throws -> OutageRun {
        let logs = try Command.temporaryDirectory()
        // A server of our own for this test, with SoftHSM under pkcs11-spy so its sessions can be counted.
        try remote.stop()
        try remote.start(spyLog: logs + "/before.log")
        defer {
            try? remote.stop()
            try? remote.start()
        }
        try ready()
        let lock = NSLock()
        nonisolated(unsafe) var attempts: [Attempt] = []
        nonisolated(unsafe) var running = true
        let loop = Thread {
            while lock.withLock({ running }) {
                let started = Self.now()
                let error = request()
                let attempt = Attempt(started: started, finished: Self.now(), error: error)
                lock.withLock { attempts.append(attempt) }
                // A steady request rate, like a service under light load.
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        loop.start()
        defer {
            lock.withLock { running = false }
            while !loop.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        }

        Thread.sleep(forTimeInterval: 1.0)
        let serverSessionsBefore = try Self.openSessions(inSpyLog: logs + "/before.log")
        let stopping = Self.now()
        try remote.stop()
        // After stop returns: the server and its p11-kit-remote children have been killed.
        let killed = Self.now()
        Thread.sleep(forTimeInterval: 2.0)
        whileAway()
        let restarting = Self.now()
        // The token is back when the server's socket appears; start returns a little later,
        // once pkcs11-tool has seen the token through it.
        let socket = remote.socketPath
        nonisolated(unsafe) var socketAppeared: Double?
        let watcher = Thread {
            while lock.withLock({ socketAppeared == nil }) && Self.now() < restarting + 10 {
                if FileManager.default.fileExists(atPath: socket) { lock.withLock { socketAppeared = Self.now() } }
                Thread.sleep(forTimeInterval: 0.002)
            }
        }
        watcher.start()
        try remote.start(spyLog: logs + "/after.log")
        let startCommandDone = Self.now()
        while !watcher.isFinished { Thread.sleep(forTimeInterval: 0.002) }
        let returned = try XCTUnwrap(lock.withLock { socketAppeared }, "the server's socket never appeared")
        Thread.sleep(forTimeInterval: 2.5)
        lock.withLock { running = false }
        while !loop.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        return OutageRun(attempts: lock.withLock { attempts }, stopping: stopping, killed: killed, restarting: restarting, returned: returned,
                         startCommandDone: startCommandDone, serverSessionsBefore: serverSessionsBefore,
                         serverSessionsAfter: try Self.openSessions(inSpyLog: logs + "/after.log"))
    }

    /// The outage assertions shared by the library loop and the broker; returns the recovery time.
    @discardableResult
    private func assertFailsFastAndRecovers(_ run: OutageRun, name: String, unreachableMarker: (String) -> Bool) throws -> Double {
        let all = run.attempts
        let before = all.filter { $0.finished < run.stopping }
        let during = all.filter { $0.started > run.killed + 0.05 && $0.finished < run.restarting }
        let afterOneSecond = all.filter { $0.started >= run.returned + 1.0 }
        XCTAssertGreaterThanOrEqual(before.count, 5, "\(name): too few requests before the outage to judge")
        XCTAssertTrue(before.allSatisfy { $0.error == nil }, "\(name): requests failed before the outage: \(before.compactMap(\.error).prefix(3))")

        XCTAssertGreaterThanOrEqual(during.count, 5, "\(name): too few requests during the outage to judge")
        XCTAssertTrue(during.allSatisfy { $0.error != nil }, "\(name): a request succeeded with the token away")
        let slowest = during.map(\.duration).max() ?? 0
        XCTAssertLessThan(slowest, 0.5, "\(name): a request during the outage took \(slowest) s instead of failing fast")
        for failure in during.compactMap(\.error).prefix(50) {
            XCTAssertTrue(unreachableMarker(failure), "\(name): the outage error does not say the token is unreachable: \(failure)")
        }

        let recovered = try XCTUnwrap(all.first { $0.started >= run.restarting && $0.error == nil },
                                      "\(name): no request succeeded after the token came back")
        let recovery = recovered.finished - run.returned
        XCTAssertLessThan(recovery, 1.0, "\(name): the first request after the token's return succeeded only after \(recovery) s")
        XCTAssertGreaterThanOrEqual(afterOneSecond.count, 5, "\(name): too few requests after the return to judge")
        let lateFailures = afterOneSecond.compactMap(\.error)
        XCTAssertTrue(lateFailures.isEmpty, "\(name): requests still failed a second after the token's return: \(lateFailures.prefix(3))")
        let afterFirst = all.filter { $0.started > recovered.finished }
        XCTAssertTrue(afterFirst.allSatisfy { $0.error == nil }, "\(name): requests failed again after the first recovered one")
        XCTAssertGreaterThan(run.serverSessionsBefore, 0, "\(name): the spy log shows no session before the outage; the count is broken")
        XCTAssertLessThanOrEqual(run.serverSessionsAfter, run.serverSessionsBefore, "\(name): more sessions on the server after the outage")

        print(String(format: "outage (%@): %d requests before, %d during (slowest failure %.1f ms), %d after; "
                     + "server socket back %.3f s after the restart began (start command done after %.3f s); "
                     + "first success %.3f s after the socket's return; server-side sessions %d before, %d after",
                     name, before.count, during.count, slowest * 1000, all.count - before.count - during.count,
                     run.returned - run.restarting, run.startCommandDone - run.restarting, recovery,
                     run.serverSessionsBefore, run.serverSessionsAfter))
        print("outage (\(name)): a failure during the outage read: \(during.last?.error?.prefix(400) ?? "-")")
        return recovery
    }

    func testRequestsFailFastDuringAnOutageAndAllSucceedWithinOneSecondOfTheTokensReturn() throws {
        let (remote, bank) = (self.remote, self.bank)
        let uri = try remote.keyURI("rsa")
        nonisolated(unsafe) var key: PrivateKey?
        nonisolated(unsafe) var unreachableWhileAway = false
        let run = try runOutage(name: "library", ready: {
            for _ in 0..<3 { XCTAssertNil(Self.oneRequest(uri: uri, remote: remote, bank: bank)) }
            key = try PrivateKey.resolve(PKCS11URI(parsing: uri), allowPrompt: false)
            XCTAssertFalse(key?.token.isUnreachable ?? true)
        }, whileAway: {
            unreachableWhileAway = key?.token.isUnreachable ?? false
        }, request: { Self.oneRequest(uri: uri, remote: remote, bank: bank) })
        let token = try XCTUnwrap(key).token
        XCTAssertTrue(unreachableWhileAway, "Token.isUnreachable was false during the outage")
        XCTAssertFalse(token.isUnreachable, "Token.isUnreachable still true after the recovery")
        XCTAssertTrue(key?.uri.modulePath?.hasSuffix("p11-kit-client.so") == true)
        try assertFailsFastAndRecovers(run, name: "library, fresh HTTPClient per request") { failure in
            failure.contains("unreachable") || failure.contains("CKR_DEVICE_ERROR")
        }
        // The new server holds exactly what this process thinks it has open.
        XCTAssertEqual(run.serverSessionsAfter, token.openSessions)
    }

    /// The broker (`keybridge serve`) with its QWAC and JWS signing key on the remote token:
    /// each request signs on the token. During the outage it must answer a 5xx error naming the
    /// unreachable token at once, and recover by itself.
    func testBrokerFailsFastDuringAnOutageAndRecoversWithinOneSecond() throws {
        let folder = try Command.temporaryDirectory()
        let uri = try remote.keyURI("rsa")
        let hashed = try KeyBridgeExecutable.run(["serve", "--hash-token"], input: Data("outage-caller\n".utf8))
        let object: [String: Any] = [
            "listen": "127.0.0.1:0",
            "banks": ["bank": ["upstream": bank.url(""), "caFile": remote.local.pki("root-ca.pem"), "key": uri,
                               "cert": remote.local.pki("client-rsa-chain.pem"), "timeoutSeconds": 5,
                               "signing": ["profile": "jws", "key": uri, "options": ["kid": "outage"]]]],
            "callers": [["name": "outage", "tokenSHA256": hashed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines),
                         "banks": ["bank"]]],
        ]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: folder + "/broker.json"))
        let broker = Process()
        nonisolated(unsafe) var port = 0
        let run = try runOutage(name: "broker", ready: {
            broker.executableURL = URL(fileURLWithPath: KeyBridgeExecutable.path)
            broker.arguments = ["serve", "--config", folder + "/broker.json"]
            broker.environment = remote.environment
            let output = Pipe()
            _ = FileManager.default.createFile(atPath: folder + "/broker.log", contents: nil)
            broker.standardOutput = output
            broker.standardError = FileHandle(forWritingAtPath: folder + "/broker.log")
            try broker.run()
            var text = Data()
            while !text.contains(0x0A) {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text.append(chunk)
            }
            port = try XCTUnwrap(Int(String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        }, request: {
            let result = try? Command.run(["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", "-H", "Authorization: Bearer outage-caller",
                                           "http://127.0.0.1:\(port)/bank/outage"])
            guard let result else { return "curl did not run" }
            let lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false)
            let status = lines.last.map(String.init) ?? ""
            return status == "200" ? nil : "HTTP \(status): \(lines.dropLast().joined(separator: "\n")) \(result.standardError)"
        })
        defer {
            if broker.isRunning { broker.terminate() }
            broker.waitUntilExit()
        }
        try assertFailsFastAndRecovers(run, name: "broker, keybridge serve") { failure in
            // 503 with a JSON cause that names the unreachable token.
            failure.hasPrefix("HTTP 503") && (failure.contains("unreachable") || failure.contains("CKR_DEVICE_ERROR"))
        }
    }
}

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
    let remote = RemoteToken.shared
    let bank = BankServer.shared

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

    func testRequestsFailFastDuringAnOutageAndAllSucceedWithinOneSecondOfTheTokensReturn() throws {
        let logs = try Command.temporaryDirectory()
        // A server of our own for this test, with SoftHSM under pkcs11-spy so its sessions can be counted.
        try remote.stop()
        try remote.start(spyLog: logs + "/before.log")
        let uri = try remote.keyURI("rsa")
        for _ in 0..<3 { XCTAssertNil(Self.oneRequest(uri: uri, remote: remote, bank: bank)) }
        let key = try PrivateKey.resolve(PKCS11URI(parsing: uri), allowPrompt: false)
        XCTAssertTrue(key.uri.modulePath?.hasSuffix("p11-kit-client.so") == true, "\(key.uri)")

        let (remote, bank) = (self.remote, self.bank)
        let lock = NSLock()
        nonisolated(unsafe) var attempts: [Attempt] = []
        nonisolated(unsafe) var running = true
        let loop = Thread {
            while lock.withLock({ running }) {
                let started = Self.now()
                let error = Self.oneRequest(uri: uri, remote: remote, bank: bank)
                let attempt = Attempt(started: started, finished: Self.now(), error: error)
                lock.withLock { attempts.append(attempt) }
                // A steady request rate, like a service under light load.
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        loop.start()
        defer { lock.withLock { running = false } }

        Thread.sleep(forTimeInterval: 1.0)
        let serverSessionsBefore = try Self.openSessions(inSpyLog: logs + "/before.log")
        let clientSessionsBefore = key.token.openSessions
        let killed = Self.now()
        try remote.stop()
        Thread.sleep(forTimeInterval: 2.0)
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
        let started = Self.now()
        while !watcher.isFinished { Thread.sleep(forTimeInterval: 0.002) }
        let returned = try XCTUnwrap(lock.withLock { socketAppeared }, "the server's socket never appeared")
        Thread.sleep(forTimeInterval: 2.5)
        lock.withLock { running = false }
        while !loop.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        let all = lock.withLock { attempts }

        let before = all.filter { $0.finished < killed }
        let during = all.filter { $0.started > killed + 0.05 && $0.finished < restarting }
        let afterOneSecond = all.filter { $0.started >= returned + 1.0 }
        let firstSuccess = all.first { $0.started >= restarting && $0.error == nil }

        XCTAssertGreaterThanOrEqual(before.count, 5, "too few requests before the outage to judge")
        XCTAssertTrue(before.allSatisfy { $0.error == nil }, "requests failed before the outage: \(before.compactMap(\.error).prefix(3))")

        XCTAssertGreaterThanOrEqual(during.count, 5, "too few requests during the outage to judge")
        XCTAssertTrue(during.allSatisfy { $0.error != nil }, "a request succeeded with the token away")
        let slowest = during.map(\.duration).max() ?? 0
        XCTAssertLessThan(slowest, 0.5, "a request during the outage took \(slowest) s instead of failing fast")
        for failure in during.compactMap(\.error).prefix(50) {
            XCTAssertTrue(failure.contains("unreachable") || failure.contains("CKR_DEVICE_ERROR"),
                          "the outage error does not say the token is unreachable: \(failure)")
            XCTAssertFalse(failure.contains(remote.local.userPIN) && !remote.local.userPIN.isEmpty, "a PIN in an error")
        }

        let recovered = try XCTUnwrap(firstSuccess, "no request succeeded after the token came back")
        let recovery = recovered.finished - returned
        XCTAssertLessThan(recovery, 1.0, "the first request after the token's return succeeded only after \(recovery) s")
        XCTAssertGreaterThanOrEqual(afterOneSecond.count, 5, "too few requests after the return to judge")
        let lateFailures = afterOneSecond.compactMap(\.error)
        XCTAssertTrue(lateFailures.isEmpty, "requests still failed a second after the token's return: \(lateFailures.prefix(3))")
        let afterFirst = all.filter { $0.started > recovered.finished }
        XCTAssertTrue(afterFirst.allSatisfy { $0.error == nil }, "requests failed again after the first recovered one")

        // Sessions: the new server holds exactly what this process thinks it has open, and no
        // more than before the outage.
        let serverSessionsAfter = try Self.openSessions(inSpyLog: logs + "/after.log")
        XCTAssertGreaterThan(serverSessionsBefore, 0, "the spy log shows no session before the outage; the count is broken")
        XCTAssertEqual(serverSessionsAfter, key.token.openSessions)
        XCTAssertLessThanOrEqual(serverSessionsAfter, serverSessionsBefore)
        XCTAssertEqual(serverSessionsBefore, clientSessionsBefore)

        print(String(format: "outage: %d requests before, %d during (slowest failure %.1f ms), %d after; "
                     + "server socket back %.3f s after the restart began (start command done after %.3f s); "
                     + "first success %.3f s after the socket's return; server-side sessions %d before, %d after",
                     before.count, during.count, slowest * 1000, all.count - before.count - during.count,
                     returned - restarting, started - restarting, recovery, serverSessionsBefore, serverSessionsAfter))
        try remote.stop()
        try remote.start()
    }
}

import Foundation
import KeyBridgeProvider
import KeyBridgeTestSupport
import KeyBridgeTLS
import PKCS11
import XCTest

/// Many threads on one key: 8 threads × 1,000 signatures through the OpenSSL provider, and
/// concurrent mTLS handshakes against nginx, with no error. The session pool must grow with the
/// threads. Throughput for 1, 2, 4 and 8 threads is measured side by side and reported; only
/// properties that do not depend on the machine's load are asserted.
final class ThreadTests: XCTestCase {
    var token: TestToken { TestToken.shared }

    /// Runs `threads` threads, each calling `body(thread, index)` `count` times; returns the
    /// errors and the wall-clock seconds.
    private static func runThreads(_ threads: Int, count: Int,
                                   _ body: @escaping @Sendable (Int, Int) throws -> Void) -> (errors: [String], seconds: Double) {
        let lock = NSLock()
        nonisolated(unsafe) var errors: [String] = []
        let group = DispatchGroup()
        let start = DispatchTime.now().uptimeNanoseconds
        for thread in 0..<threads {
            group.enter()
            // Threads of their own, not a dispatch pool that might run fewer at once.
            Thread {
                for index in 0..<count {
                    do {
                        try body(thread, index)
                    } catch {
                        lock.withLock { errors.append("thread \(thread) #\(index): \(error)") }
                    }
                }
                group.leave()
            }.start()
        }
        group.wait()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return (lock.withLock { errors }, seconds)
    }

    func testEightThreadsSignAThousandTimesEachThroughTheProviderWithoutErrors() throws {
        let key = try ProviderKey(uri: token.ecURI)
        let tokenKey = try PrivateKey.resolve(PKCS11URI(parsing: token.ecURI), allowPrompt: false)
        let folder = try Command.temporaryDirectory()
        try Data(key.publicKeyPEM().utf8).write(to: URL(fileURLWithPath: folder + "/public.pem"))

        // Each thread keeps its last message and signature for openssl to check.
        let lock = NSLock()
        nonisolated(unsafe) var last: [Int: (message: [UInt8], signature: [UInt8])] = [:]
        nonisolated(unsafe) var signatures = 0
        let (errors, seconds) = Self.runThreads(8, count: 1_000) { thread, index in
            let message = Array("thread \(thread) signature \(index)".utf8)
            let signature = try key.sign(message, scheme: .ecdsa(.sha256))
            lock.withLock {
                last[thread] = (message, signature)
                signatures += 1
            }
        }
        XCTAssertEqual(errors.count, 0, "\(errors.prefix(5))")
        XCTAssertEqual(signatures, 8_000)
        // The pool grew for the parallel signers instead of making them queue on one session,
        // and stayed bounded by the number of threads (plus the session that holds the login).
        let sessions = tokenKey.token.openSessions
        XCTAssertGreaterThanOrEqual(sessions, 2, "8 threads shared one session")
        XCTAssertLessThanOrEqual(sessions, 9, "more sessions than threads: sessions leak")

        for (thread, pair) in lock.withLock({ last }) {
            try Data(pair.message).write(to: URL(fileURLWithPath: "\(folder)/\(thread).msg"))
            try Data(pair.signature).write(to: URL(fileURLWithPath: "\(folder)/\(thread).sig"))
            let verified = try Command.run(["openssl", "dgst", "-sha256", "-verify", folder + "/public.pem",
                                            "-signature", "\(folder)/\(thread).sig", "\(folder)/\(thread).msg"])
            XCTAssertEqual(verified.status, 0, "thread \(thread): \(verified.combined)")
        }
        // Control: openssl rejects a signature over another thread's message.
        let wrong = try Command.run(["openssl", "dgst", "-sha256", "-verify", folder + "/public.pem",
                                     "-signature", "\(folder)/0.sig", "\(folder)/1.msg"])
        XCTAssertNotEqual(wrong.status, 0, "openssl accepted a signature over another message")
        print(String(format: "threads: 8 × 1000 ECDSA P-256 signatures through the provider in %.2f s (%.0f/s), 0 errors, %d sessions in the pool",
                     seconds, 8_000 / seconds, sessions))
    }

    /// The same through `p11-kit-client.so`: its one connection to the server is shared by all
    /// threads, so it must keep their calls apart.
    func testEightThreadsSignThroughTheRemoteToken() throws {
        let uri = try RemoteToken.shared.keyURI("ec")
        let key = try ProviderKey(uri: uri)
        let tokenKey = try PrivateKey.resolve(PKCS11URI(parsing: uri), allowPrompt: false)
        XCTAssertTrue(tokenKey.uri.modulePath?.hasSuffix("p11-kit-client.so") == true)
        let folder = try Command.temporaryDirectory()
        try Data(key.publicKeyPEM().utf8).write(to: URL(fileURLWithPath: folder + "/public.pem"))
        let lock = NSLock()
        nonisolated(unsafe) var last: [Int: (message: [UInt8], signature: [UInt8])] = [:]
        let (errors, seconds) = Self.runThreads(8, count: 100) { thread, index in
            let message = Array("remote thread \(thread) signature \(index)".utf8)
            let signature = try key.sign(message, scheme: .ecdsa(.sha256))
            lock.withLock { last[thread] = (message, signature) }
        }
        XCTAssertEqual(errors.count, 0, "\(errors.prefix(5))")
        for (thread, pair) in lock.withLock({ last }) {
            try Data(pair.message).write(to: URL(fileURLWithPath: "\(folder)/\(thread).msg"))
            try Data(pair.signature).write(to: URL(fileURLWithPath: "\(folder)/\(thread).sig"))
            let verified = try Command.run(["openssl", "dgst", "-sha256", "-verify", folder + "/public.pem",
                                            "-signature", "\(folder)/\(thread).sig", "\(folder)/\(thread).msg"])
            XCTAssertEqual(verified.status, 0, "thread \(thread): \(verified.combined)")
        }
        XCTAssertEqual(lock.withLock { last.count }, 8)
        print(String(format: "threads: 8 × 100 ECDSA P-256 signatures through the remote token in %.2f s (%.0f/s), 0 errors, %d sessions",
                     seconds, 800 / seconds, tokenKey.token.openSessions))
    }

    /// RSA-2048 signatures cost the token real CPU time, so the rates show whether parallel
    /// signers run in parallel (on a machine with CPUs to spare) rather than queueing.
    func testSignatureThroughputFor1248ThreadsSideBySide() throws {
        let key = try ProviderKey(uri: token.rsaURI)
        // Warm up: key lookup, login and a first session are not part of the rates.
        _ = try key.sign(Array("warm-up".utf8), scheme: .rsaPKCS1(.sha256))
        let total = 400
        var rates: [Int: Double] = [:]
        var report: [String] = []
        for threads in [1, 2, 4, 8] {
            let (errors, seconds) = Self.runThreads(threads, count: total / threads) { thread, index in
                _ = try key.sign(Array("rate \(threads) \(thread) \(index)".utf8), scheme: .rsaPKCS1(.sha256))
            }
            XCTAssertEqual(errors.count, 0, "\(threads) threads: \(errors.prefix(3))")
            rates[threads] = Double(total) / seconds
            report.append(String(format: "%d thread%@ %.0f/s", threads, threads == 1 ? "" : "s", Double(total) / seconds))
        }
        let base = rates[1] ?? 1
        // The machine's load tells how many CPUs were really free for the threads.
        let load = ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").first ?? "?"
        print("throughput (RSA-2048 PKCS#1 through the provider, \(total) signatures each, \(ProcessInfo.processInfo.activeProcessorCount) CPUs, load \(load)): "
              + report.joined(separator: ", ")
              + String(format: "; relative to 1 thread: 2 → %.2f×, 4 → %.2f×, 8 → %.2f×", (rates[2] ?? 0) / base, (rates[4] ?? 0) / base, (rates[8] ?? 0) / base))
    }

    func testConcurrentHandshakesAgainstNginx() throws {
        let bank = BankServer.shared
        let configuration = TLSConfiguration(certificateChain: .pemFile(token.pki("client-rsa-chain.pem")), key: .pkcs11(token.rsaURI),
                                             trustRoots: .pemFile(token.pki("root-ca.pem")))
        let lock = NSLock()
        nonisolated(unsafe) var verified = 0
        let (errors, seconds) = Self.runThreads(8, count: 10) { thread, index in
            // A fresh client each time: a full handshake that signs on the token, no reused session.
            let client = try HTTPClient(configuration: configuration)
            client.totalTimeout = 30
            let response = try client.send(HTTPRequest(url: bank.url("/threads/\(thread)/\(index)")))
            let body = String(decoding: response.body, as: UTF8.self)
            guard response.status == 200, body.contains(#""verify":"SUCCESS""#), body.contains("CN=tpp-rsa.example") else {
                throw CommandError(message: "HTTP \(response.status): \(body)")
            }
            lock.withLock { verified += 1 }
        }
        XCTAssertEqual(errors.count, 0, "\(errors.prefix(5))")
        XCTAssertEqual(verified, 80)
        print(String(format: "threads: 8 × 10 concurrent mTLS handshakes (RSA token key) against nginx in %.2f s, 0 errors", seconds))
    }
}

import Foundation
import Glibc
import KeyBridgeBroker
import KeyBridgeTestSupport
import XCTest

/// `keybridge serve` as a subprocess: SIGTERM lets requests in flight finish, SIGHUP reloads
/// the configuration and refuses a broken one.
extension BrokerTests {
    /// A running `keybridge serve`, its log in a file.
    final class ServeProcess {
        let process = Process()
        let logPath: String
        /// The port, or "unix:PATH".
        let address: String

        init(config: [String: Any], folder: String, arguments extra: [String] = []) throws {
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: folder + "/broker.json"))
            logPath = folder + "/serve.log"
            XCTAssertTrue(FileManager.default.createFile(atPath: logPath, contents: nil))
            process.executableURL = URL(fileURLWithPath: KeyBridgeExecutable.path)
            process.arguments = ["serve", "--config", folder + "/broker.json"] + extra
            var environment = ProcessInfo.processInfo.environment
            environment["SOFTHSM2_CONF"] = TestToken.shared.softHSMConfig
            process.environment = environment
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle(forWritingAtPath: logPath)
            try process.run()
            var text = Data()
            while !text.contains(0x0A) {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text.append(chunk)
            }
            address = String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !address.isEmpty else {
                throw CommandError(message: "keybridge serve did not start: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
            }
        }

        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

        /// Waits until the log holds `count` lines containing `text`.
        func waitForLog(_ text: String, count: Int = 1, seconds: Double = 20) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if log.components(separatedBy: "\n").filter({ $0.contains(text) }).count >= count { return true }
                Thread.sleep(forTimeInterval: 0.05)
            }
            return false
        }

        func curlArguments(_ path: String, token: String?) -> [String] {
            var arguments = ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"]
            if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
            if address.hasPrefix("unix:") {
                return arguments + ["--unix-socket", String(address.dropFirst(5)), "http://localhost" + path]
            }
            return arguments + ["http://127.0.0.1:\(address)" + path]
        }

        /// (status, body) of one request; status 0 when curl got no answer.
        func request(_ path: String, token: String? = "cli-token") throws -> (Int, String) {
            let result = try Command.run(curlArguments(path, token: token))
            let lines = result.standardOutput.components(separatedBy: "\n")
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
        }

        deinit {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
        }
    }

    func serveConfiguration(banks: [String: String], grace: Double = 10, certificate: String? = nil) -> [String: Any] {
        let token = TestToken.shared
        var bankObjects: [String: Any] = [:]
        for (name, upstream) in banks {
            bankObjects[name] = ["upstream": upstream, "caFile": token.pki("root-ca.pem"), "key": token.ecURI,
                                 "cert": certificate ?? token.pki("client-ec-chain.pem")]
        }
        return ["listen": "127.0.0.1:0", "shutdownGraceSeconds": grace, "banks": bankObjects,
                "callers": [["name": "cli", "tokenSHA256": Broker.tokenSHA256("cli-token"), "banks": Array(banks.keys)]]]
    }

    /// SIGTERM while a request waits for a slow bank (1.5 s): new connections are refused at once,
    /// the request still gets its answer, and the broker exits 0. Control: with no grace period
    /// the same request is cut off.
    func testSigtermFinishesRequestsInFlight() throws {
        let upstream = "https://localhost:\(BrokerSandbox.shared.http1Port)"
        for grace in [10.0, 0] {
            let folder = try Command.temporaryDirectory()
            let serve = try ServeProcess(config: serveConfiguration(banks: ["bank": upstream], grace: grace), folder: folder)
            let slow = Process()
            slow.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            slow.arguments = serve.curlArguments("/bank/slow", token: "cli-token")
            let slowOutput = folder + "/slow.out"
            XCTAssertTrue(FileManager.default.createFile(atPath: slowOutput, contents: nil))
            slow.standardOutput = FileHandle(forWritingAtPath: slowOutput)
            slow.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try slow.run()
            // In flight: the broker counts it (the /metrics request counts itself too).
            let deadline = Date().addingTimeInterval(5)
            var inFlight = 0.0
            while Date() < deadline {
                let metrics = try serve.request("/metrics", token: nil).1
                inFlight = metrics.split(separator: "\n").first { $0.hasPrefix("keybridge_requests_in_flight ") }
                    .flatMap { Double($0.split(separator: " ")[1]) } ?? 0
                if inFlight >= 2 { break }
                Thread.sleep(forTimeInterval: 0.05)
            }
            XCTAssertGreaterThanOrEqual(inFlight, 2, "the slow request is in flight")

            serve.process.terminate()
            XCTAssertTrue(serve.waitForLog(#""event":"stopping""#), serve.log)
            let refused = try Command.run(serve.curlArguments("/bank/accounts", token: "cli-token"))
            XCTAssertEqual(refused.status, 7, "a new connection is refused after SIGTERM: \(refused.combined)")
            slow.waitUntilExit()
            serve.process.waitUntilExit()
            XCTAssertEqual(serve.process.terminationStatus, 0, serve.log)
            let answer = (try? String(contentsOfFile: slowOutput, encoding: .utf8)) ?? ""
            if grace > 0 {
                XCTAssertEqual(slow.terminationStatus, 0)
                XCTAssertTrue(answer.hasSuffix("\n200") && answer.contains(#"{"slow":"done"}"#), answer)
                XCTAssertTrue(serve.log.contains(#""unfinished":0"#), serve.log)
            } else {
                XCTAssertFalse(answer.hasSuffix("\n200"), "with no grace the request is cut off: \(answer)")
                XCTAssertTrue(serve.log.contains(#""unfinished":1"#), serve.log)
            }
        }
    }

    /// SIGHUP with a broken configuration (bad JSON, then a missing certificate): refused, logged,
    /// the old configuration still serves. Then a good one: applied. On a Unix socket.
    func testSighupReloadsAndKeepsTheOldConfigurationWhenTheNewOneIsBroken() throws {
        let upstream = "https://localhost:\(BrokerSandbox.shared.http1Port)"
        let folder = try Command.temporaryDirectory()
        let socketPath = folder + "/broker.sock"
        let serve = try ServeProcess(config: serveConfiguration(banks: ["one": upstream]), folder: folder,
                                     arguments: ["--listen", "unix:" + socketPath])
        XCTAssertEqual(serve.address, "unix:" + socketPath)
        XCTAssertEqual(try serve.request("/one/accounts").0, 200, serve.log)
        let configURL = URL(fileURLWithPath: folder + "/broker.json")

        try Data("{ this is not json".utf8).write(to: configURL)
        kill(serve.process.processIdentifier, SIGHUP)
        XCTAssertTrue(serve.waitForLog(#""result":"refused""#), serve.log)
        XCTAssertEqual(try serve.request("/one/accounts").0, 200, "the old configuration still serves")

        let missing = serveConfiguration(banks: ["two": upstream], certificate: folder + "/no-such-chain.pem")
        try JSONSerialization.data(withJSONObject: missing).write(to: configURL)
        kill(serve.process.processIdentifier, SIGHUP)
        XCTAssertTrue(serve.waitForLog(#""result":"refused""#, count: 2), serve.log)
        let (status, body) = try serve.request("/one/accounts")
        XCTAssertEqual(status, 200, body)
        XCTAssertEqual(try serve.request("/two/accounts").0, 404, "the broken configuration's bank is not there")

        try JSONSerialization.data(withJSONObject: serveConfiguration(banks: ["two": upstream])).write(to: configURL)
        kill(serve.process.processIdentifier, SIGHUP)
        XCTAssertTrue(serve.waitForLog(#""result":"ok""#), serve.log)
        XCTAssertEqual(try serve.request("/two/accounts").0, 200, serve.log)
        XCTAssertEqual(try serve.request("/one/accounts").0, 404)
        let metrics = try serve.request("/metrics", token: nil).1
        XCTAssertTrue(metrics.contains(#"keybridge_config_reloads_total{result="refused"} 2"#), metrics)
        XCTAssertTrue(metrics.contains(#"keybridge_config_reloads_total{result="ok"} 1"#), metrics)

        serve.process.terminate()
        serve.process.waitUntilExit()
        XCTAssertEqual(serve.process.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: socketPath), "the socket is removed at exit")
        let refusals = serve.log.split(separator: "\n").filter { $0.contains(#""result":"refused""#) }
        XCTAssertTrue(refusals.first?.contains("not valid JSON") == true, "\(refusals)")
        XCTAssertTrue(refusals.last?.contains("no-such-chain.pem") == true || refusals.last?.contains("cannot") == true, "\(refusals)")
        XCTAssertFalse(serve.log.contains("cli-token"))
    }
}

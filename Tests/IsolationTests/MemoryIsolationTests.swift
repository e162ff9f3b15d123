import Foundation
import KeyBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The proof that a key on a token in another process never enters the client's memory.
///
/// A known RSA key (made here with openssl, so its private exponent and primes are known) is
/// imported into the token as sensitive and non-extractable. A client process makes 200 mTLS
/// requests with it, each loading the key and signing a handshake, and goes on making requests
/// while its whole memory is read (ten times, the process stopped each time) and searched for
/// d, p and q in big- and little-endian byte order (OpenSSL's BIGNUMs hold them little-endian).
///
/// With the token behind `p11-kit server`, there must be no hit. The control runs the same
/// client and the same search with SoftHSM loaded in the client's process, and must find the
/// key: otherwise the search could not have found it either, and the test fails.
final class MemoryIsolationTests: XCTestCase {
    // Computed, so listing the tests (swift test --filter) starts no server.
    var remote: RemoteToken { RemoteToken.shared }
    var bank: BankServer { BankServer.shared }

    override func setUpWithError() throws {
        // A sanitizer build maps terabytes of shadow memory: the scan would read zeros for hours,
        // and its shadow copies would say nothing about the real program. make test runs the proof.
        if let sanitizer = ProcessInfo.processInfo.environment["KEYBRIDGE_SANITIZER"], !sanitizer.isEmpty {
            throw XCTSkip("the memory proof does not run under \(sanitizer) (shadow memory); make test runs it")
        }
    }

    /// The imported key and the byte patterns to look for.
    struct KnownKey: @unchecked Sendable {
        var folder: String
        var chain: String
        var remoteURI: String
        var localURI: String
        /// (name, bytes): d, p, q, each big-endian and little-endian.
        var patterns: [(name: String, bytes: [UInt8])]
    }

    static let keyID = "e1"
    static let keyLabel = "isolation-known-rsa"
    nonisolated(unsafe) private static var imported: KnownKey?

    static func knownKey(_ remote: RemoteToken) throws -> KnownKey {
        if let imported { return imported }
        let local = remote.local
        let folder = try Command.temporaryDirectory()
        let pem = folder + "/known-key.pem"
        try run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem])
        // A client certificate for it from the test PKI's issuing CA, so nginx accepts it.
        try run(["openssl", "req", "-new", "-key", pem, "-subj", "/C=DE/O=KeyBridge Test TPP GmbH/CN=isolation.example",
                 "-out", folder + "/known.csr"])
        try run(["openssl", "x509", "-req", "-in", folder + "/known.csr", "-CA", local.pki("issuing-ca.pem"),
                 "-CAkey", local.pki("issuing-ca-key.pem"), "-set_serial", "0x4b1501", "-days", "30",
                 "-out", folder + "/known.pem"])
        let chain = folder + "/known-chain.pem"
        try (String(contentsOfFile: folder + "/known.pem", encoding: .utf8)
            + String(contentsOfFile: local.pki("issuing-ca.pem"), encoding: .utf8)).write(toFile: chain, atomically: true, encoding: .utf8)

        // Into the token: sensitive, and (pkcs11-tool's default) not extractable.
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = local.softHSMConfig
        environment["KB_ISOLATION_PIN"] = local.userPIN.trimmingCharacters(in: .whitespacesAndNewlines)
        let module = "/usr/lib/softhsm/libsofthsm2.so"
        let login = ["pkcs11-tool", "--module", module, "--token-label", "keybridge", "--login", "--pin", "env:KB_ISOLATION_PIN"]
        let written = try Command.run(login + ["--write-object", pem, "--type", "privkey", "--id", keyID,
                                               "--label", keyLabel, "--usage-sign", "--sensitive"], environment: environment)
        guard written.status == 0 else { throw CommandError(message: "importing the known key failed: \(written.combined)") }
        let listed = try Command.run(login + ["--list-objects", "--type", "privkey", "--id", keyID], environment: environment)
        let access = listed.standardOutput.split(separator: "\n").first { $0.contains("Access:") }
            .map { $0.split(separator: ":", maxSplits: 1)[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? []
        guard access.contains("sensitive"), !access.contains("extractable") else {
            throw CommandError(message: "the imported key is not sensitive and non-extractable: \(listed.standardOutput)")
        }

        let text = try run(["openssl", "pkey", "-in", pem, "-noout", "-text"])
        var patterns: [(String, [UInt8])] = []
        for (field, name) in [("privateExponent", "d"), ("prime1", "p"), ("prime2", "q")] {
            let bigEndian = try integerField(field, in: text)
            guard bigEndian.count >= 120 else { throw CommandError(message: "\(field) is only \(bigEndian.count) bytes") }
            patterns.append(("\(name) big-endian", bigEndian))
            patterns.append(("\(name) little-endian", bigEndian.reversed()))
        }
        let query = "pin-source=file:" + local.stateDirectory + "/user.pin"
        let path = "pkcs11:token=keybridge;object=\(keyLabel);type=private"
        let key = KnownKey(folder: folder, chain: chain,
                           remoteURI: path + "?module-path=" + remote.clientModule + "&" + query,
                           localURI: path + "?module-path=" + module + "&" + query,
                           patterns: patterns)
        imported = key
        return key
    }

    /// Removes the imported key again, so later tests see the token as softhsm-setup made it.
    override class func tearDown() {
        guard imported != nil else { return }
        imported = nil
        let local = RemoteToken.shared.local
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = local.softHSMConfig
        environment["KB_ISOLATION_PIN"] = local.userPIN.trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try? Command.run(["pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "keybridge",
                              "--login", "--pin", "env:KB_ISOLATION_PIN", "--delete-object", "--type", "privkey", "--id", keyID],
                             environment: environment)
        super.tearDown()
    }

    @discardableResult
    private static func run(_ arguments: [String]) throws -> String {
        let result = try Command.run(arguments)
        guard result.status == 0 else { throw CommandError(message: "\(arguments.prefix(3).joined(separator: " ")) failed: \(result.combined)") }
        return result.standardOutput
    }

    /// The big-endian bytes of an integer in `openssl pkey -text` output (hex, colon-separated,
    /// over indented lines), without the sign byte.
    static func integerField(_ name: String, in text: String) throws -> [UInt8] {
        var collecting = false
        var hex = ""
        for line in text.split(separator: "\n") {
            if line.hasPrefix(name + ":") {
                collecting = true
                continue
            }
            if collecting {
                guard line.hasPrefix(" ") else { break }
                hex += line.filter { $0.isHexDigit }
            }
        }
        guard !hex.isEmpty, hex.count % 2 == 0 else { throw CommandError(message: "no \(name) in openssl's output") }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        while bytes.first == 0 { bytes.removeFirst() }
        return bytes
    }

    /// How often a process is read: the isolated runs always `scans` times; the controls until
    /// the key shows up, at most `controlScans` times. The key is in memory only around a
    /// signature, so one read finds it only now and then (about one in three) even where it is.
    static let scans = 10
    static let controlScans = 40

    /// Reads a process's memory, 150 ms apart, while it goes on using the key, and adds up the
    /// hits per pattern.
    private func scan(pid: pid_t, key: KnownKey, stopWhenFound: Bool) throws -> (hits: [Int], bytes: UInt64, scans: Int) {
        var hits = [Int](repeating: 0, count: key.patterns.count)
        var bytes: UInt64 = 0
        var done = 0
        let limit = stopWhenFound ? Self.controlScans : Self.scans
        while done < limit && !(stopWhenFound && hits.reduce(0, +) > 0) {
            Thread.sleep(forTimeInterval: 0.15)
            let scan = try ProcessMemory.scan(pid: pid, for: key.patterns.map(\.bytes))
            XCTAssertGreaterThan(scan.bytesRead, 1 << 20, "read almost nothing of the process: the search would prove nothing")
            for index in hits.indices { hits[index] += scan.hits[index] }
            bytes = max(bytes, scan.bytesRead)
            done += 1
        }
        return (hits, bytes, done)
    }

    private func describe(_ hits: [Int], _ key: KnownKey) -> String {
        zip(key.patterns, hits).map { "\($0.name) \($1)" }.joined(separator: ", ")
    }

    /// The p11-kit-remote processes of the running p11-kit server: where SoftHSM, and so the
    /// key, lives when the token is remote.
    private func serverSideProcesses() throws -> [pid_t] {
        let server = try XCTUnwrap(remote.serverPID, "the p11-kit server is not running")
        var found: [pid_t] = []
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { continue }
            let name = stat[stat.index(after: open)..<close]
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            // fields: state, ppid, pgrp, ...
            if name == "p11-kit-remote", fields.count > 2, pid_t(fields[2]) == server { found.append(pid) }
        }
        return found
    }

    /// Runs the probe for 200 requests with `uri`, then scans it while it keeps going. Unless it
    /// is the control, also scans the server-side process that holds the token for it.
    private func clientHits(uri: String, key: KnownKey, control: Bool) throws -> (hits: [Int], bytes: UInt64, scans: Int, server: [Int]) {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: URL(fileURLWithPath: KeyBridgeExecutable.path).deletingLastPathComponent()
            .appendingPathComponent("keybridge-probe").path)
        probe.arguments = ["requests", "--count", "200", "--hold", "--url", bank.url("/isolation"),
                           "--cert", key.chain, "--cacert", remote.local.pki("root-ca.pem"), "--key", uri]
        probe.environment = remote.environment
        let input = Pipe()
        let output = Pipe()
        let errors = try Command.temporaryDirectory() + "/probe.err"
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        probe.standardInput = input
        probe.standardOutput = output
        probe.standardError = FileHandle(forWritingAtPath: errors)
        try probe.run()
        defer {
            if probe.isRunning { probe.terminate() }
            probe.waitUntilExit()
        }
        var seen = Data()
        while !seen.contains(0x0A) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
        }
        let problems = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        XCTAssertEqual(String(decoding: seen, as: UTF8.self), "done 200\n", problems)
        guard probe.isRunning else { throw CommandError(message: "the probe stopped: \(problems)") }
        let result = try scan(pid: probe.processIdentifier, key: key, stopWhenFound: control)
        var server = [Int](repeating: 0, count: key.patterns.count)
        if !control {
            let processes = try serverSideProcesses()
            XCTAssertFalse(processes.isEmpty, "no p11-kit-remote process serves the probe")
            for pid in processes {
                let scanned = try scan(pid: pid, key: key, stopWhenFound: true)
                for index in server.indices { server[index] += scanned.hits[index] }
            }
        }
        try input.fileHandleForWriting.close()
        let rest = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        probe.waitUntilExit()
        XCTAssertEqual(probe.terminationStatus, 0, (try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")
        XCTAssertTrue(rest.hasPrefix("held "), "the probe did not keep using the key while it was read: \(rest)")
        return (result.hits, result.bytes, result.scans, server)
    }

    func testClientMemoryHoldsNoKeyBytesWithTheTokenInAnotherProcess() throws {
        let key = try Self.knownKey(remote)
        let isolated = try clientHits(uri: key.remoteURI, key: key, control: false)
        let control = try clientHits(uri: key.localURI, key: key, control: true)
        print("memory proof, client (keybridge-probe, 200 handshakes): remote token \(isolated.hits.reduce(0, +)) hits in \(isolated.scans) scans "
              + "(\(describe(isolated.hits, key)); \(isolated.bytes >> 20) MiB read per scan); "
              + "control with SoftHSM in-process \(control.hits.reduce(0, +)) hits in \(control.scans) scans (\(describe(control.hits, key)); \(control.bytes >> 20) MiB); "
              + "the server's p11-kit-remote process \(isolated.server.reduce(0, +)) hits in its first scan that found any")
        XCTAssertEqual(isolated.hits.reduce(0, +), 0, "key bytes in the client's memory: \(describe(isolated.hits, key))")
        // The key is where it should be: in the server's process, which signs for the client.
        XCTAssertGreaterThan(isolated.server.reduce(0, +), 0, "the key was not found in the server's process either")
        XCTAssertGreaterThan(control.hits.reduce(0, +), 0,
                             "the control found no key bytes with SoftHSM in the process, so the search is broken")
    }

    // MARK: The broker

    /// Runs `keybridge serve` with the known key for mTLS and JWS request signing, sends it 200
    /// requests, then scans it.
    private func brokerHits(uri: String, key: KnownKey, control: Bool) throws -> (hits: [Int], bytes: UInt64, scans: Int, ok: Int) {
        let folder = try Command.temporaryDirectory()
        let hashed = try KeyBridgeExecutable.run(["serve", "--hash-token"], input: Data("isolation-caller\n".utf8))
        let object: [String: Any] = [
            "listen": "127.0.0.1:0",
            "banks": ["bank": ["upstream": bank.url(""), "caFile": remote.local.pki("root-ca.pem"), "key": uri, "cert": key.chain,
                               "signing": ["profile": "jws", "key": uri, "options": ["kid": "isolation"]]]],
            "callers": [["name": "isolation", "tokenSHA256": hashed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines),
                         "banks": ["bank"]]],
        ]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: folder + "/broker.json"))
        let broker = Process()
        broker.executableURL = URL(fileURLWithPath: KeyBridgeExecutable.path)
        broker.arguments = ["serve", "--config", folder + "/broker.json"]
        broker.environment = remote.environment
        let output = Pipe()
        _ = FileManager.default.createFile(atPath: folder + "/broker.log", contents: nil)
        broker.standardOutput = output
        broker.standardError = FileHandle(forWritingAtPath: folder + "/broker.log")
        try broker.run()
        defer {
            if broker.isRunning { broker.terminate() }
            broker.waitUntilExit()
        }
        var portText = Data()
        while !portText.contains(0x0A) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            portText.append(chunk)
        }
        let log = { (try? String(contentsOfFile: folder + "/broker.log", encoding: .utf8)) ?? "" }
        let port = try XCTUnwrap(Int(String(decoding: portText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)), log())
        // One curl for all 200: it keeps its connection to the broker, the broker signs each.
        let urls = (0..<200).map { "http://127.0.0.1:\(port)/bank/isolation/\($0)" }
        let result = try Command.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\n",
                                      "-H", "Authorization: Bearer isolation-caller"] + urls)
        let ok = result.standardOutput.split(separator: "\n").filter { $0 == "200" }.count
        XCTAssertEqual(ok, 200, "\(result.combined.prefix(400)) \(log().suffix(800))")
        // Scanned while it goes on signing, as the client is: more requests from a second curl.
        let more = Process()
        more.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        more.arguments = ["-s", "-o", "/dev/null", "-H", "Authorization: Bearer isolation-caller"]
            + (0..<2000).map { "http://127.0.0.1:\(port)/bank/isolation/more/\($0)" }
        more.standardOutput = FileHandle.nullDevice
        more.standardError = FileHandle.nullDevice
        try more.run()
        defer {
            if more.isRunning { more.terminate() }
            more.waitUntilExit()
        }
        Thread.sleep(forTimeInterval: 0.3)
        let scanned = try scan(pid: broker.processIdentifier, key: key, stopWhenFound: control)
        XCTAssertTrue(more.isRunning, "the broker was not kept busy while it was read")
        return (scanned.hits, scanned.bytes, scanned.scans, ok)
    }

    func testBrokerMemoryHoldsNoKeyBytesWithTheTokenInAnotherProcess() throws {
        let key = try Self.knownKey(remote)
        let isolated = try brokerHits(uri: key.remoteURI, key: key, control: false)
        let control = try brokerHits(uri: key.localURI, key: key, control: true)
        print("memory proof, broker (keybridge serve, \(isolated.ok) requests): remote token \(isolated.hits.reduce(0, +)) hits in \(isolated.scans) scans "
              + "(\(describe(isolated.hits, key)); \(isolated.bytes >> 20) MiB read per scan); "
              + "control with SoftHSM in-process \(control.hits.reduce(0, +)) hits in \(control.scans) scans (\(describe(control.hits, key)); \(control.bytes >> 20) MiB)")
        XCTAssertEqual(isolated.hits.reduce(0, +), 0, "key bytes in the broker's memory: \(describe(isolated.hits, key))")
        XCTAssertGreaterThan(control.hits.reduce(0, +), 0,
                             "the control found no key bytes with SoftHSM in the broker, so the search is broken")
    }
}

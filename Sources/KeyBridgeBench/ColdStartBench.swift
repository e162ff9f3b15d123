import Foundation
import KeyBridgeTLS
import PKCS11
#if canImport(Glibc)
import Glibc
#endif

/// The in-process half of item 6: a fresh process that does what `keybridge request` does, one
/// stage at a time, and reports how long each took. The parent passes its spawn time in
/// `KEYBRIDGE_BENCH_SPAWNED_NS` (CLOCK_MONOTONIC, which all processes share on Linux).
public enum ColdStartProbe {
    public static let environmentVariable = "KEYBRIDGE_BENCH_SPAWNED_NS"

    /// Runs the stages and returns one JSON line of milliseconds.
    public static func run(uri: String, chain: String, rootCA: String, url: String) throws -> String {
        let entered = BenchClock.nanoseconds()
        let spawned = ProcessInfo.processInfo.environment[environmentVariable].flatMap { UInt64($0) }
        var stages: [(String, Double)] = []
        var last = entered
        func mark(_ name: String) {
            let now = BenchClock.nanoseconds()
            stages.append((name, Double(now - last) / 1e6))
            last = now
        }
        let parsed = try PKCS11URI(parsing: uri)
        let module = try PKCS11Module.load(for: parsed)
        mark("moduleLoad")
        let token = try module.token(matching: parsed)
        mark("tokenFind")
        let pin = try PINResolver.resolve(for: parsed, allowPrompt: false)?.pin
        try token.login(pin: pin)
        mark("login")
        _ = try PrivateKey.resolve(parsed, allowPrompt: false)
        mark("keyLookup")
        let client = try HTTPClient(configuration: TLSConfiguration(certificateChain: .pemFile(chain), key: .pkcs11(uri),
                                                                    trustRoots: .pemFile(rootCA)))
        mark("identity")
        let response = try client.send(HTTPRequest(url: url))
        guard response.status == 200 else { throw BenchError("the probe's request got \(response.status)") }
        mark("request")
        var object: [String: Double] = [:]
        for (name, value) in stages { object[name] = value }
        object["inProcess"] = Double(last - entered) / 1e6
        if let spawned, spawned <= entered { object["toMain"] = Double(entered - spawned) / 1e6 }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

/// Item 6: process start to first mTLS response, `keybridge request` against curl with libp11's
/// engine, on the same request; and where KeyBridge's time goes.
struct ColdStartBench {
    let keys: BenchKeys
    let settings: BenchSettings
    let executable: String
    let bankPort: Int

    func run() -> BenchSection {
        var section = BenchSection(id: "6", title: "Cold start: process start to the first mTLS response (TLS 1.3, RSA-2048 token key)")
        let url = "https://localhost:\(bankPort)/accounts"
        let uriWithoutQuery = String(keys.uri(.rsa).prefix { $0 != "?" })
        var runs: [String: [Double]] = [:]
        var probes: [[String: Double]] = []
        do {
            let environment = ProcessInfo.processInfo.environment
            var curlEnvironment = environment
            curlEnvironment["OPENSSL_CONF"] = try keys.engineConfiguration()
            // Both answers go to a pipe that the benchmark reads and drops. (Not `-o /dev/null`:
            // `keybridge request -o` writes by atomic rename, which replaces /dev/null with a file.)
            let keybridge = [executable, "request", "-f", "--cacert", keys.rootCA, "--cert", keys.chain(.rsa), "--key", keys.uri(.rsa), url]
            // libp11's engine gets the module and the PIN from the OpenSSL configuration file.
            let curl = ["/usr/bin/curl", "-sS", "-f", "--engine", "pkcs11", "--key-type", "ENG",
                        "--key", uriWithoutQuery, "--cert", keys.chain(.rsa), "--cacert", keys.rootCA, url]
            for index in 0..<(settings.coldStartRuns + 1) {
                for (name, command) in index % 2 == 0 ? [("keybridge", keybridge), ("curl", curl)] : [("curl", curl), ("keybridge", keybridge)] {
                    let start = BenchClock.now()
                    let result = try ChildProcess.run(command[0], Array(command.dropFirst()),
                                                      environment: name == "curl" ? curlEnvironment : environment)
                    let elapsed = (BenchClock.now() - start) * 1000
                    guard result.status == 0 else {
                        throw BenchError("\(name) failed (exit \(result.status)): \(result.errorOutput.prefix(400))")
                    }
                    // The first pair only warms the page cache.
                    if index > 0 { runs[name, default: []].append(elapsed) }
                }
                var probeEnvironment = environment
                probeEnvironment[ColdStartProbe.environmentVariable] = String(BenchClock.nanoseconds())
                let probeStart = BenchClock.now()
                let probe = try ChildProcess.run(executable, ["bench", "--cold-start-probe", keys.uri(.rsa), keys.chain(.rsa), keys.rootCA, url],
                                                 environment: probeEnvironment)
                let probeWall = (BenchClock.now() - probeStart) * 1000
                guard probe.status == 0, var object = try JSONSerialization.jsonObject(with: Data(probe.output.utf8)) as? [String: Double] else {
                    throw BenchError("the cold-start probe failed: \(probe.errorOutput.prefix(400))")
                }
                object["wall"] = probeWall
                if let toMain = object["toMain"], let inProcess = object["inProcess"] { object["exit"] = probeWall - toMain - inProcess }
                if index > 0 { probes.append(object) }
            }
        } catch {
            section.notes.append("not measured: \(error)")
            return section
        }
        let keybridge = BenchStatistics.median(runs["keybridge"] ?? [])
        let ratio = BenchStatistics.medianRatio(runs["curl"] ?? [], runs["keybridge"] ?? []) ?? .nan
        section.rows.append(BenchRow("keybridge request (wall, spawn to exit)", [BenchFigure("ms", keybridge)]))
        section.rows.append(BenchRow("curl --engine pkcs11 --key-type ENG (wall)", [BenchFigure("ms", BenchStatistics.median(runs["curl"] ?? []))],
                                     ratios: [BenchRatio("curl/keybridge", ratio)]))
        for (name, label) in [("toMain", "probe: exec to main"), ("moduleLoad", "probe: dlopen + C_Initialize"),
                              ("tokenFind", "probe: slot and token lookup"), ("login", "probe: C_Login"), ("keyLookup", "probe: key lookup"),
                              ("identity", "probe: provider + certificate check + test signature"),
                              ("request", "probe: connect + handshake + response"),
                              ("exit", "probe: after the response until the process is gone"), ("wall", "probe: whole process (wall)")] {
            let value = BenchStatistics.median(probes.compactMap { $0[name] })
            section.rows.append(BenchRow(label, [BenchFigure("ms", value),
                                                 BenchFigure("share of keybridge %", value.flatMap { v in keybridge.map { v / $0 * 100 } })]))
        }
        section.notes.append("\(settings.coldStartRuns) runs each after one warm-up pair, alternating; wall time from spawn to exit, measured by the benchmark. Both use the bench bank (nginx), the same token key, certificate chain and CA file; curl gets libp11's module and PIN from an OpenSSL configuration file (OPENSSL_CONF), as nginx as broker does. The ratio is curl's time over keybridge's (above 1: keybridge is faster).")
        section.notes.append("The stages come from `keybridge bench --cold-start-probe` (a fresh process per run doing the same work step by step: PKCS11Module.load, token(matching:), login, PrivateKey.resolve, HTTPClient init, send); shares are of the median `keybridge request` time. 'exec to main' is the dynamic loading of the Swift runtime, Foundation, OpenSSL and libcurl.")
        return section
    }
}

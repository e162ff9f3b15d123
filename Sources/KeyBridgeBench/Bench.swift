import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `keybridge bench` runs and where it writes.
public struct BenchOptions: Sendable {
    /// The repository (for scripts/bench-setup and scripts/bank-nginx).
    public var repository: String
    /// The softhsm-setup state folder whose PKI issues the bench certificates.
    public var state: String
    /// The benchmark's own folder (token, keys, servers, results).
    public var directory: String
    public var jsonPath: String
    public var markdownPath: String
    public var settings: BenchSettings
    /// Item numbers to run ("1"…"7"); all when empty.
    public var items: Set<String>
    /// The keybridge executable, for `serve`, `request` and the probe.
    public var executable: String

    public init(repository: String, state: String, directory: String, jsonPath: String, markdownPath: String,
                settings: BenchSettings, items: Set<String>, executable: String) {
        self.repository = repository
        self.state = state
        self.directory = directory
        self.jsonPath = jsonPath
        self.markdownPath = markdownPath
        self.settings = settings
        self.items = items
        self.executable = executable
    }

    func wants(_ item: String) -> Bool { items.isEmpty || items.contains(item) }
}

/// `keybridge bench`: every figure of issue 7 in one run.
public enum Bench {
    static let softHSM = "/usr/lib/softhsm/libsofthsm2.so"
    /// Debian's p11-kit client module, in the multiarch folder of this machine.
    static let p11KitClient: String = {
        var system = utsname()
        uname(&system)
        let machine = withUnsafeBytes(of: system.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return "/usr/lib/\(machine == "arm64" ? "aarch64" : machine)-linux-gnu/pkcs11/p11-kit-client.so"
    }()

    public static func run(_ options: BenchOptions, progress: (String) -> Void) throws -> BenchReport {
        let started = BenchClock.now()
        let formatter = ISO8601DateFormatter()
        var report = BenchReport(started: formatter.string(from: Date()), machine: BenchMachine.describe())
        let directory = options.directory
        progress("making the bench token and keys in \(directory)")
        let setup = try ChildProcess.run("\(options.repository)/scripts/bench-setup", [directory, options.state])
        guard setup.status == 0 else { throw BenchError("scripts/bench-setup failed: \(setup.errorOutput)") }
        // Before anything loads SoftHSM: it reads its configuration in C_Initialize.
        setenv("SOFTHSM2_CONF", "\(directory)/softhsm2.conf", 1)
        let logs = "\(directory)/logs"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)

        let bank = try ChildProcess.run("\(options.repository)/scripts/bank-nginx", ["start", directory])
        guard bank.status == 0, let bankPort = Int(bank.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw BenchError("scripts/bank-nginx start failed: \(bank.errorOutput)")
        }
        defer { _ = try? ChildProcess.run("\(options.repository)/scripts/bank-nginx", ["stop", directory]) }
        let keys = BenchKeys(directory: directory, modulePath: softHSM, moduleDescription: "SoftHSM in the benchmark process")
        let sServer = try OpenSSLServer(directory: directory, rootCA: keys.rootCA, logDirectory: logs)
        defer { sServer.stop() }
        let servers = [("s_server", sServer.port, "/"), ("nginx", bankPort, "/accounts")]

        let signatures = SignatureBench(keys: keys, settings: options.settings)
        var rates: [SignatureCase: SignatureBench.Rates] = [:]
        if options.wants("1") || options.wants("2") {
            progress("1. signature overhead")
            let (section, measured) = signatures.overhead(id: "1", title: "Signature overhead: signatures/s on one thread, same token key")
            rates = measured
            if options.wants("1") { report.sections.append(section) }
        }
        if options.wants("2") {
            progress("2. handshakes")
            report.sections.append(HandshakeBench(keys: keys, settings: options.settings, servers: servers)
                .run(id: "2", title: "Handshakes: full mTLS handshakes/s, token key vs the same key in a PEM file vs libp11's engine", signatureRates: rates))
        }
        if options.wants("3") {
            progress("3. scaling")
            report.sections.append(signatures.scaling(id: "3"))
        }
        if options.wants("4") {
            progress("4. remote token through p11-kit")
            report.sections += remote(options, bankPort: bankPort, sServerPort: sServer.port, logs: logs)
        }
        if options.wants("5") || options.wants("7") {
            progress("5. broker (and 7. memory)")
            let sections = BrokerBench(keys: keys, settings: options.settings, executable: options.executable, directory: logs).run()
            report.sections += sections.filter { options.wants($0.id) }
        }
        if options.wants("6") {
            progress("6. cold start")
            report.sections.append(ColdStartBench(keys: keys, settings: options.settings, executable: options.executable, bankPort: bankPort).run())
        }
        report.sections.sort { $0.id < $1.id }
        report.durationSeconds = (BenchClock.now() - started).rounded()
        try report.json().write(to: URL(fileURLWithPath: options.jsonPath))
        try Data(report.markdown().utf8).write(to: URL(fileURLWithPath: options.markdownPath))
        return report
    }

    /// Item 4: items 1 and 2 again in a child process whose token is SoftHSM inside a
    /// `p11-kit server`, reached through p11-kit-client.so. A child, because libp11's engine
    /// drives one PKCS#11 module per process.
    static func remote(_ options: BenchOptions, bankPort: Int, sServerPort: Int, logs: String) -> [BenchSection] {
        var failed = BenchSection(id: "4", title: "Remote token (p11-kit server)")
        let socket = "\(logs)/p11-kit.sock"
        unlink(socket)
        let server: Process
        do {
            server = try ChildProcess.start("/usr/bin/p11-kit", ["server", "-f", "-n", socket, "--provider", softHSM, "pkcs11:token=kb-bench"],
                                            output: "\(logs)/p11-kit.out", errors: "\(logs)/p11-kit.err")
        } catch {
            failed.notes.append("not measured: p11-kit server did not start: \(error)")
            return [failed]
        }
        defer { ChildProcess.stop(server) }
        guard ChildProcess.waitFor(seconds: 10, { FileManager.default.fileExists(atPath: socket) }) else {
            failed.notes.append("not measured: p11-kit server made no socket (see \(logs)/p11-kit.err)")
            return [failed]
        }
        var environment = ProcessInfo.processInfo.environment
        environment["P11_KIT_SERVER_ADDRESS"] = "unix:path=\(socket)"
        let output = "\(logs)/remote.json"
        var arguments = ["bench", "--remote-part", options.directory, String(bankPort), String(sServerPort), output]
        if options.settings.signatureRounds == BenchSettings.quick.signatureRounds { arguments.append("--quick") }
        do {
            let child = try ChildProcess.run(options.executable, arguments, environment: environment)
            guard child.status == 0 else { throw BenchError("exit \(child.status): \(child.errorOutput.prefix(600))") }
            return try JSONDecoder().decode([BenchSection].self, from: Data(contentsOf: URL(fileURLWithPath: output)))
        } catch {
            failed.notes.append("not measured: the remote part failed: \(error)")
            return [failed]
        }
    }

    /// `keybridge bench --profile-signatures DIR CASE COLUMN COUNT`: one column of item 1 alone,
    /// for `valgrind --tool=callgrind` or `perf record`. CASE is pkcs1, pss or ecdsa.
    public static func profileSignatures(directory: String, caseName: String, column: String, count: Int) throws -> String {
        setenv("SOFTHSM2_CONF", "\(directory)/softhsm2.conf", 1)
        let cases: [String: SignatureCase] = ["pkcs1": .rsaPKCS1, "pss": .rsaPSS, "ecdsa": .ecdsa]
        guard let signatureCase = cases[caseName] else { throw BenchError("CASE is pkcs1, pss or ecdsa, not '\(caseName)'") }
        let keys = BenchKeys(directory: directory, modulePath: softHSM, moduleDescription: "SoftHSM")
        return try SignatureBench(keys: keys, settings: .full).repeatSignatures(signatureCase, column: column, count: count)
    }

    /// The child of `remote`: items 1 and 2 with the keys reached through p11-kit-client.so.
    public static func runRemotePart(directory: String, bankPort: Int, sServerPort: Int, output: String, quick: Bool) throws {
        setenv("SOFTHSM2_CONF", "\(directory)/softhsm2.conf", 1)
        let settings = quick ? BenchSettings.quick : BenchSettings.full
        let keys = BenchKeys(directory: directory, modulePath: p11KitClient,
                             moduleDescription: "SoftHSM in a p11-kit server, through p11-kit-client.so")
        let signatures = SignatureBench(keys: keys, settings: settings)
        var (first, rates) = signatures.overhead(id: "4a", title: "Remote token: signature overhead (items 1 through p11-kit-client.so)")
        first.notes.append("The provider/raw target of item 1 applies here too.")
        let second = HandshakeBench(keys: keys, settings: settings, servers: [("s_server", sServerPort, "/"), ("nginx", bankPort, "/accounts")])
            .run(id: "4b", title: "Remote token: handshakes (item 2 through p11-kit-client.so)", signatureRates: rates)
        try JSONEncoder().encode([first, second]).write(to: URL(fileURLWithPath: output))
    }
}

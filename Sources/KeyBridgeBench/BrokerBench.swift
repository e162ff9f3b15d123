import Foundation
import KeyBridgeTLS
#if canImport(Glibc)
import Glibc
#endif

/// Concurrent keep-alive clients (KeyBridge's libcurl `HTTPClient`, one connection each) that
/// send one request after another for a while and record every latency.
enum LoadGenerator {
    struct Outcome {
        var requests: Int
        var seconds: Double
        var latencies: [Double]
        var failures: Int
        var throughput: Double { Double(requests) / seconds }
    }

    static func run(clients: [HTTPClient], request: HTTPRequest, seconds: Double) throws -> Outcome {
        let latencies = LockedResults()
        let counts = LockedResults()
        let failures = LockedResults()
        let group = DispatchGroup()
        let start = BenchClock.now()
        for client in clients {
            group.enter()
            let thread = Thread {
                var local: [Double] = []
                var failed = 0
                let deadline = BenchClock.now() + seconds
                while BenchClock.now() < deadline {
                    let begin = BenchClock.now()
                    do {
                        let response = try client.send(request)
                        if response.status != 200 { failed += 1 }
                    } catch {
                        failed += 1
                        failures.fail(error)
                    }
                    local.append((BenchClock.now() - begin) * 1000)
                    if failed > 20 { break }
                }
                for value in local { latencies.add(value) }
                counts.add(Double(local.count))
                failures.add(Double(failed))
                group.leave()
            }
            thread.start()
        }
        group.wait()
        let elapsed = BenchClock.now() - start
        if failures.sum > 0 {
            throw BenchError("\(Int(failures.sum)) of \(Int(counts.sum)) requests to \(request.url) failed" + (failures.error.map { ": \($0)" } ?? " (non-200 answers)"))
        }
        return Outcome(requests: Int(counts.sum), seconds: elapsed, latencies: latencies.all, failures: 0)
    }

    /// Sends `count` requests on each client first, so connections (and handshakes) are made
    /// before the clock starts.
    static func warm(_ clients: [HTTPClient], request: HTTPRequest, count: Int) throws {
        for client in clients {
            for _ in 0..<count {
                let response = try client.send(request)
                guard response.status == 200 else {
                    throw BenchError("\(request.url) answered \(response.status): \(String(decoding: response.body.prefix(300), as: UTF8.self))")
                }
            }
        }
    }
}

/// `keybridge serve` started by the benchmark, with a configuration for the bench bank.
final class BrokerProcess {
    let port: Int
    let process: Process
    let bearer: String

    init(executable: String, keys: BenchKeys, bankPort: Int, logDirectory: String) throws {
        bearer = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let hash = try ChildProcess.run(executable, ["serve", "--hash-token"], environment: nil, stdinText: bearer)
        guard hash.status == 0 else { throw BenchError("keybridge serve --hash-token failed: \(hash.errorOutput)") }
        let configuration: [String: Any] = [
            "listen": "127.0.0.1:0",
            "banks": ["bench": [
                "upstream": "https://localhost:\(bankPort)",
                "caFile": keys.rootCA,
                "key": keys.uri(.rsa),
                "cert": keys.chain(.rsa),
            ]],
            "callers": [["name": "bench", "tokenSHA256": hash.output.trimmingCharacters(in: .whitespacesAndNewlines), "banks": ["bench"]]],
        ]
        let path = "\(logDirectory)/broker.json"
        try JSONSerialization.data(withJSONObject: configuration, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        let portFile = "\(logDirectory)/broker.port"
        let process = try ChildProcess.start(executable, ["serve", "--config", path], output: portFile, errors: "\(logDirectory)/broker.log")
        self.process = process
        var found: Int?
        _ = ChildProcess.waitFor(seconds: 20) {
            found = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            return found != nil || !process.isRunning
        }
        guard let found else {
            ChildProcess.stop(process)
            throw BenchError("keybridge serve did not start (see \(logDirectory)/broker.log)")
        }
        port = found
    }

    func stop() { ChildProcess.stop(process) }

    /// CPU seconds used so far.
    func cpuSeconds() -> Double? { ProcessMemory.cpuSeconds(pid: process.processIdentifier) }

    /// The counters of /metrics for the bench bank.
    func metrics() throws -> (requests: Double, signatures: Double, handshakes: Double, resumptions: Double) {
        let client = try HTTPClient(configuration: TLSConfiguration())
        let response = try client.send(HTTPRequest(url: "http://127.0.0.1:\(port)/metrics"))
        let text = String(decoding: response.body, as: UTF8.self)
        var requests = 0.0, signatures = 0.0, handshakes = 0.0, resumptions = 0.0
        for line in text.split(separator: "\n") where line.contains("bank=\"bench\"") {
            guard let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
            if line.hasPrefix("keybridge_requests_total{") { requests += value }
            if line.hasPrefix("keybridge_hsm_signatures_total{") { signatures += value }
            // Full handshakes only; resumed ones (which sign nothing) are their own series.
            if line.hasPrefix("keybridge_upstream_handshakes_total{") { handshakes += value }
            if line.hasPrefix("keybridge_upstream_resumptions_total{") { resumptions += value }
        }
        return (requests, signatures, handshakes, resumptions)
    }
}

/// The upstream bank of item 5: nginx with mTLS like the test bank (scripts/bank-nginx), but with
/// TLS session resumption on (a shared session cache and tickets), as banks' API gateways
/// usually have it. The test bank has it off so that item 2 measures full handshakes only; here
/// it shows whether a broker resumes when the bank closes a kept-alive connection (nginx's
/// `keepalive_requests`, 1,000) instead of signing a new handshake.
final class ResumingBank {
    let port: Int
    let process: Process

    init(keys: BenchKeys, directory: String) throws {
        port = try Loopback.freePort()
        let root = "\(directory)/resuming-bank"
        for folder in ["logs", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(folder)", withIntermediateDirectories: true)
        }
        let configuration = """
        \(geteuid() == 0 ? "user root;" : "")
        worker_processes 1;
        daemon off;
        master_process on;
        pid \(root)/nginx.pid;
        error_log \(root)/logs/error.log warn;
        events { worker_connections 256; }
        http {
            access_log off;
            client_body_temp_path \(root)/tmp/client_body;
            proxy_temp_path \(root)/tmp/proxy;
            fastcgi_temp_path \(root)/tmp/fastcgi;
            uwsgi_temp_path \(root)/tmp/uwsgi;
            scgi_temp_path \(root)/tmp/scgi;
            server {
                listen 127.0.0.1:\(port) ssl;
                server_name localhost;
                ssl_certificate \(keys.directory)/pki/server.pem;
                ssl_certificate_key \(keys.directory)/pki/server-key.pem;
                ssl_protocols TLSv1.2 TLSv1.3;
                ssl_session_cache shared:bank:1m;
                ssl_session_timeout 10m;
                ssl_session_tickets on;
                ssl_verify_client on;
                ssl_client_certificate \(keys.rootCA);
                ssl_verify_depth 3;
                default_type application/json;
                location / {
                    return 200 '{"subject":"$ssl_client_s_dn","verify":"$ssl_client_verify","protocol":"$ssl_protocol","reused":"$ssl_session_reused","uri":"$request_uri"}\\n';
                }
            }
        }
        """
        let path = "\(root)/nginx.conf"
        _ = FileManager.default.createFile(atPath: path, contents: Data(configuration.utf8), attributes: [.posixPermissions: 0o600])
        let process = try ChildProcess.start("/usr/sbin/nginx", ["-q", "-p", "\(root)/", "-c", path, "-e", "\(root)/logs/error.log"],
                                             output: "\(root)/logs/stdout", errors: "\(root)/logs/stderr")
        self.process = process
        let port = port
        guard ChildProcess.waitFor(seconds: 10, { Loopback.isListening(port: port) || !process.isRunning }), process.isRunning else {
            ChildProcess.stop(process)
            throw BenchError("the resuming bank (nginx) did not start (see \(root)/logs/error.log)")
        }
    }

    func stop() { ChildProcess.stop(process) }
}

/// nginx as the broker: plain HTTP in front, mTLS upstream with the token key through libp11's
/// engine (`proxy_ssl_certificate_key engine:pkcs11:…`) and an upstream keepalive pool.
final class NginxBroker {
    let port: Int
    let process: Process

    init(keys: BenchKeys, bankPort: Int, directory: String) throws {
        port = try Loopback.freePort()
        let root = "\(directory)/nginx-broker"
        for folder in ["logs", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(folder)", withIntermediateDirectories: true)
        }
        // The engine is started, with the module and PIN, by an OpenSSL configuration file.
        let engineKey = "engine:pkcs11:pkcs11:token=kb-bench;object=bench-rsa;type=private"
        let configuration = """
        \(geteuid() == 0 ? "user root;" : "")
        worker_processes auto;
        daemon off;
        master_process on;
        pid \(root)/nginx.pid;
        error_log \(root)/logs/error.log warn;
        env SOFTHSM2_CONF;
        env OPENSSL_CONF;
        events { worker_connections 256; }
        http {
            access_log off;
            client_body_temp_path \(root)/tmp/client_body;
            proxy_temp_path \(root)/tmp/proxy;
            fastcgi_temp_path \(root)/tmp/fastcgi;
            uwsgi_temp_path \(root)/tmp/uwsgi;
            scgi_temp_path \(root)/tmp/scgi;
            upstream bank {
                server 127.0.0.1:\(bankPort);
                keepalive 16;
            }
            server {
                listen 127.0.0.1:\(port);
                location /bench/ {
                    proxy_pass https://bank/;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_set_header Host localhost;
                    proxy_ssl_certificate \(keys.chain(.rsa));
                    proxy_ssl_certificate_key "\(engineKey)";
                    proxy_ssl_trusted_certificate \(keys.rootCA);
                    proxy_ssl_verify on;
                    proxy_ssl_name localhost;
                    proxy_ssl_server_name on;
                }
            }
        }
        """
        let path = "\(root)/nginx.conf"
        _ = FileManager.default.createFile(atPath: path, contents: Data(configuration.utf8), attributes: [.posixPermissions: 0o600])
        var environment = ProcessInfo.processInfo.environment
        environment["OPENSSL_CONF"] = try keys.engineConfiguration()
        let process = try ChildProcess.start("/usr/sbin/nginx", ["-q", "-p", "\(root)/", "-c", path, "-e", "\(root)/logs/error.log"],
                                         environment: environment, output: "\(root)/logs/stdout", errors: "\(root)/logs/stderr")
        self.process = process
        let port = port
        guard ChildProcess.waitFor(seconds: 10, { Loopback.isListening(port: port) || !process.isRunning }), process.isRunning else {
            ChildProcess.stop(process)
            throw BenchError("nginx as broker did not start (see \(root)/logs/error.log)")
        }
    }

    func stop() { ChildProcess.stop(process) }

    /// CPU seconds used so far by the master and its workers.
    func cpuSeconds() -> Double? {
        let pids = [process.processIdentifier] + ProcessMemory.children(of: process.processIdentifier)
        let times = pids.compactMap { ProcessMemory.cpuSeconds(pid: $0) }
        return times.isEmpty ? nil : times.reduce(0, +)
    }

    /// Peak resident memory of the master and its workers, summed (kB).
    func peakMemory() -> Double? {
        let pids = [process.processIdentifier] + ProcessMemory.children(of: process.processIdentifier)
        let peaks = pids.compactMap { ProcessMemory.status(pid: $0).peak }
        return peaks.isEmpty ? nil : peaks.reduce(0, +)
    }
}

/// Items 5 and 7: requests through `keybridge serve`, direct, and through nginx as broker.
struct BrokerBench {
    let keys: BenchKeys
    let settings: BenchSettings
    let executable: String
    let directory: String

    func run() -> [BenchSection] {
        var load = BenchSection(id: "5", title: "Broker: requests/s and latency on keep-alive connections")
        var memory = BenchSection(id: "7", title: "Memory: peak resident set under the item 5 load")
        let bank: ResumingBank
        do {
            bank = try ResumingBank(keys: keys, directory: directory)
        } catch {
            load.notes.append("not measured: \(error)")
            return [load, memory]
        }
        defer { bank.stop() }
        let bankPort = bank.port
        load.notes.append("Upstream: a bank nginx like the test bank (mTLS, answers JSON itself, worker_processes 1, keepalive_requests 1,000), but with TLS session resumption (shared session cache and tickets), as bank gateways usually have it; the test bank of item 2 has none. Load: KeyBridge's HTTPClient (libcurl) with keep-alive, one connection per client thread, in the benchmark process; \(settings.loadRounds) rounds of \(settings.loadSeconds) s per path and concurrency, paths alternating; throughput is the median of the rounds, latencies are over all requests. direct: HTTPClient with the token key straight to the bank (what `keybridge request` does, with reuse). broker: plain HTTP to `keybridge serve` (release build), which forwards with the token key. nginx broker: plain HTTP to nginx (worker_processes auto) forwarding with `proxy_ssl_certificate_key engine:pkcs11:…` and `keepalive 16`.")
        load.notes.append("server CPU ms/req: user + system CPU time of the broker process (keybridge serve; nginx's master and workers) during its rounds, from /proc/PID/stat, over the requests it answered. The load generator, the bank and the broker share the 2 cores, so a broker that needs more CPU per request answers fewer.")
        var broker: BrokerProcess?
        var nginx: NginxBroker?
        defer {
            broker?.stop()
            nginx?.stop()
        }
        do {
            broker = try BrokerProcess(executable: executable, keys: keys, bankPort: bankPort, logDirectory: directory)
        } catch {
            load.notes.append("keybridge serve: not measured: \(error)")
        }
        do {
            nginx = try NginxBroker(keys: keys, bankPort: bankPort, directory: directory)
        } catch {
            load.notes.append("nginx as broker: not measured: \(error)")
        }
        for concurrency in [1, 4] {
            do {
                var paths: [(name: String, clients: [HTTPClient], request: HTTPRequest)] = []
                let direct = try (0..<concurrency).map { _ in
                    try HTTPClient(configuration: TLSConfiguration(certificateChain: .pemFile(keys.chain(.rsa)), key: .pkcs11(keys.uri(.rsa)),
                                                                  trustRoots: .pemFile(keys.rootCA)))
                }
                paths.append(("direct", direct, HTTPRequest(url: "https://localhost:\(bankPort)/accounts")))
                if let broker {
                    let clients = try (0..<concurrency).map { _ in try HTTPClient(configuration: TLSConfiguration()) }
                    paths.append(("broker", clients, HTTPRequest(url: "http://127.0.0.1:\(broker.port)/bench/accounts",
                                                                 headers: [("Authorization", "Bearer \(broker.bearer)")])))
                }
                if let nginx {
                    let clients = try (0..<concurrency).map { _ in try HTTPClient(configuration: TLSConfiguration()) }
                    paths.append(("nginx broker", clients, HTTPRequest(url: "http://127.0.0.1:\(nginx.port)/bench/accounts")))
                }
                for path in paths { try LoadGenerator.warm(path.clients, request: path.request, count: 20) }
                var throughputs: [String: [Double]] = [:]
                var latencies: [String: [Double]] = [:]
                // The CPU time each broker process used per request: what bounds its rate when
                // the cores are shared (the load generator and the bank run on them too).
                var cpu: [String: (seconds: Double, requests: Int)] = [:]
                let cpuReaders: [String: () -> Double?] = ["broker": { broker?.cpuSeconds() }, "nginx broker": { nginx?.cpuSeconds() }]
                for round in 0..<settings.loadRounds {
                    for path in round % 2 == 0 ? paths : paths.reversed() {
                        let before = cpuReaders[path.name]?()
                        let outcome = try LoadGenerator.run(clients: path.clients, request: path.request, seconds: settings.loadSeconds)
                        if let before, let after = cpuReaders[path.name]?() {
                            let sum = cpu[path.name] ?? (0, 0)
                            cpu[path.name] = (sum.seconds + after - before, sum.requests + outcome.requests)
                        }
                        throughputs[path.name, default: []].append(outcome.throughput)
                        latencies[path.name, default: []] += outcome.latencies
                    }
                }
                let directP50 = BenchStatistics.percentile(latencies["direct"] ?? [], 50)
                let directP99 = BenchStatistics.percentile(latencies["direct"] ?? [], 99)
                for path in paths {
                    let p50 = BenchStatistics.percentile(latencies[path.name] ?? [], 50)
                    let p99 = BenchStatistics.percentile(latencies[path.name] ?? [], 99)
                    var figures = [BenchFigure("requests/s", BenchStatistics.median(throughputs[path.name] ?? [])),
                                   BenchFigure("p50 ms", p50), BenchFigure("p99 ms", p99)]
                    var ratios: [BenchRatio] = []
                    if path.name != "direct" {
                        figures.append(BenchFigure("p50 added ms", p50.flatMap { p in directP50.map { p - $0 } }))
                        figures.append(BenchFigure("server CPU ms/req", cpu[path.name].flatMap { $0.requests > 0 ? $0.seconds * 1000 / Double($0.requests) : nil }))
                        ratios.append(BenchRatio("p99 added ms", (p99 ?? .nan) - (directP99 ?? .nan), target: path.name == "broker" ? 1 : nil, .atMost))
                    }
                    if path.name == "broker" {
                        if throughputs["nginx broker"] != nil {
                            ratios.append(BenchRatio("broker/nginx", BenchStatistics.medianRatio(throughputs["broker"] ?? [], throughputs["nginx broker"] ?? []) ?? .nan,
                                                     target: 1))
                        }
                    }
                    load.rows.append(BenchRow("\(path.name), \(concurrency) client\(concurrency == 1 ? "" : "s")", figures, ratios: ratios))
                }
            } catch {
                load.notes.append("\(concurrency) clients: not measured: \(error)")
            }
        }
        if let broker, let after = try? broker.metrics() {
            let perThousand = after.requests > 0 ? after.signatures / after.requests * 1000 : .nan
            load.rows.append(BenchRow("broker HSM use (from /metrics, whole run)", [
                BenchFigure("forwarded", after.requests), BenchFigure("signatures", after.signatures),
                BenchFigure("handshakes", after.handshakes), BenchFigure("resumed", after.resumptions),
            ], ratios: [BenchRatio("signatures/1000 req", perThousand, target: 1, .atMost)]))
            load.notes.append("Signatures per 1,000 requests count every token signature the broker made (the full mTLS handshakes to the bank, keybridge_hsm_signatures_total; no signing profile is configured) over every request it answered (keybridge_requests_total), warm-up included. handshakes: full handshakes (keybridge_upstream_handshakes_total), one per pooled connection at first; resumed: new connections that resumed a TLS session and signed nothing (keybridge_upstream_resumptions_total), as after the bank closes a connection every 1,000 requests.")
        }
        if let broker {
            let status = ProcessMemory.status(pid: broker.process.processIdentifier)
            memory.rows.append(BenchRow("keybridge serve", [BenchFigure("VmHWM MiB", status.peak.map { $0 / 1024 }),
                                                             BenchFigure("VmRSS MiB", status.current.map { $0 / 1024 })]))
        }
        if let nginx {
            memory.rows.append(BenchRow("nginx as broker (master + workers)", [BenchFigure("VmHWM MiB", nginx.peakMemory().map { $0 / 1024 })]))
        }
        memory.notes.append("Read from /proc/PID/status after the item 5 load, before the processes stop.")
        return [load, memory]
    }
}

import Foundation
import KeyBridgeBench

/// `keybridge bench`: KeyBridge against raw PKCS#11, libp11's engine, an in-memory key and
/// nginx, side by side in one run (issue 7). `make bench` runs it on the release build.
enum BenchCommand {
    static let help = """
    Usage: keybridge bench [--quick] [--items 1,2,…] [--state DIR] [--dir DIR]
                           [--json FILE] [--markdown FILE]

    Measures, side by side on the same keys and servers: (1) signatures/s through
    the provider against raw C_Sign, libp11's engine and the key in memory; (2)
    full mTLS handshakes/s against openssl s_server and nginx, token key vs PEM
    file vs engine; (3) signatures/s with 1, 2 and 4 threads; (4) items 1 and 2
    through a p11-kit server; (5) requests/s and latency through `keybridge
    serve`, direct and through nginx as broker, and HSM signatures per 1,000
    requests; (6) cold start of `keybridge request` against curl with libp11's
    engine; (7) peak memory of `keybridge serve`. Prints Markdown tables and
    writes every figure as JSON.

      --quick          Short runs to try the harness; the figures mean little
      --items LIST     Only these items (comma-separated numbers)
      --state DIR      softhsm-setup state folder with the test PKI (default
                       .state)
      --dir DIR        The benchmark's own folder: token, keys, logs (default
                       STATE/bench)
      --json FILE      Where the figures go (default DIR/results.json)
      --markdown FILE  Where the tables go (default DIR/results.md)

    Run it from the repository (it uses scripts/bench-setup and
    scripts/bank-nginx), as `make bench` does, with the packages of `make deps`.

    For a profiler, after one run has made the bench token:
      keybridge bench --profile-signatures STATE/bench pkcs1|pss|ecdsa
        provider|raw|engine|file COUNT
    """

    static func run(_ arguments: [String]) -> Int32 {
        if arguments.first == "--cold-start-probe" { return probe(Array(arguments.dropFirst())) }
        if arguments.first == "--remote-part" { return remotePart(Array(arguments.dropFirst())) }
        if arguments.first == "--profile-signatures" { return profileSignatures(Array(arguments.dropFirst())) }
        let repository = FileManager.default.currentDirectoryPath
        var state = "\(repository)/.state"
        var directory: String?
        var json: String?
        var markdown: String?
        var quick = false
        var items: Set<String> = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            func value() -> String? {
                index += 1
                return index < arguments.count ? arguments[index] : nil
            }
            switch argument {
            case "-h", "--help":
                print(help)
                return 0
            case "--quick": quick = true
            case "--items", "--state", "--dir", "--json", "--markdown":
                guard let text = value() else {
                    Output.error("\(argument) needs a value; run 'keybridge bench --help' for the options")
                    return 2
                }
                switch argument {
                case "--items":
                    items = Set(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                    guard items.allSatisfy({ ["1", "2", "3", "4", "5", "6", "7"].contains($0) }) else {
                        Output.error("--items takes item numbers 1 to 7, such as 1,2,5")
                        return 2
                    }
                case "--state": state = absolute(text)
                case "--dir": directory = absolute(text)
                case "--json": json = absolute(text)
                default: markdown = absolute(text)
                }
            default:
                Output.error("unknown option '\(argument.prefix(30))'; run 'keybridge bench --help' for the options")
                return 2
            }
            index += 1
        }
        guard FileManager.default.isExecutableFile(atPath: "\(repository)/scripts/bench-setup") else {
            Output.error("scripts/bench-setup is not here; run keybridge bench from the repository (make bench does)")
            return 2
        }
        guard FileManager.default.fileExists(atPath: "\(state)/pki/issuing-ca-key.pem") else {
            Output.error("\(state) has no test PKI; run make setup first (or give --state)")
            return 2
        }
        let benchDirectory = directory ?? "\(state)/bench"
        let options = BenchOptions(repository: repository, state: state, directory: benchDirectory,
                                   jsonPath: json ?? "\(benchDirectory)/results.json", markdownPath: markdown ?? "\(benchDirectory)/results.md",
                                   settings: quick ? .quick : .full, items: items, executable: executable)
        // Which item runs now is progress: shown on a terminal only, like key generation's.
        let progress = ProgressLine()
        do {
            let report = try Bench.run(options) { progress.update("bench: \($0)") }
            progress.finish()
            print(report.markdown())
            Output.raw("bench: \(Int(report.durationSeconds)) s; figures in \(options.jsonPath), tables in \(options.markdownPath)\n")
            return 0
        } catch {
            progress.finish()
            Output.error("the benchmark stopped: \(error)")
            return 1
        }
    }

    /// This program's own file, for the child processes the benchmark starts.
    private static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    private static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : "\(FileManager.default.currentDirectoryPath)/\(path)"
    }

    /// `--cold-start-probe URI CHAIN CA URL`, started by the cold-start item.
    private static func probe(_ arguments: [String]) -> Int32 {
        guard arguments.count == 4 else {
            Output.error("--cold-start-probe takes URI CHAIN CA URL")
            return 2
        }
        do {
            print(try ColdStartProbe.run(uri: arguments[0], chain: arguments[1], rootCA: arguments[2], url: arguments[3]))
            return 0
        } catch {
            Output.error("cold-start probe: \(error)")
            return 1
        }
    }

    /// `--profile-signatures DIR CASE COLUMN COUNT`: one column of item 1, for a profiler.
    private static func profileSignatures(_ arguments: [String]) -> Int32 {
        guard arguments.count == 4, let count = Int(arguments[3]) else {
            Output.error("--profile-signatures takes DIR CASE(pkcs1|pss|ecdsa) COLUMN(provider|raw|engine|file) COUNT")
            return 2
        }
        do {
            let mechanism = try Bench.profileSignatures(directory: absolute(arguments[0]), caseName: arguments[1], column: arguments[2], count: count)
            Output.raw("bench: \(count) \(arguments[1]) signatures, \(arguments[2]) column (\(mechanism))\n")
            return 0
        } catch {
            Output.error("profile: \(error)")
            return 1
        }
    }

    /// `--remote-part DIR BANK_PORT S_SERVER_PORT OUTPUT [--quick]`, started by item 4.
    private static func remotePart(_ arguments: [String]) -> Int32 {
        guard arguments.count >= 4, let bankPort = Int(arguments[1]), let sServerPort = Int(arguments[2]) else {
            Output.error("--remote-part takes DIR BANK_PORT S_SERVER_PORT OUTPUT [--quick]")
            return 2
        }
        do {
            try Bench.runRemotePart(directory: arguments[0], bankPort: bankPort, sServerPort: sServerPort,
                                    output: arguments[3], quick: arguments.contains("--quick"))
            return 0
        } catch {
            Output.error("remote part: \(error)")
            return 1
        }
    }
}

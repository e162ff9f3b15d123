import Foundation
import KeyBridgeTLS

enum KeyKind: String, CaseIterable, Sendable {
    case rsa, ec
    var label: String { self == .rsa ? "RSA-2048" : "EC P-256" }
}

/// Where a benchmark client takes the key from.
enum KeySource: String, CaseIterable, Sendable {
    /// The token key through KeyBridge's provider.
    case token
    /// The same key from its PEM file, in memory.
    case file
    /// The token key through libp11's engine.
    case engine
}

/// The benchmark's keys (made by scripts/bench-setup): each is on the token `kb-bench` and,
/// for comparison, in a PEM file. The module may be SoftHSM or p11-kit's client.
final class BenchKeys: @unchecked Sendable {
    // `identities` is guarded by `lock`; everything else is immutable.
    let directory: String
    let modulePath: String
    let moduleDescription: String
    private let lock = NSLock()
    private var identities: [String: BenchClientIdentity] = [:]

    init(directory: String, modulePath: String, moduleDescription: String) {
        self.directory = directory
        self.modulePath = modulePath
        self.moduleDescription = moduleDescription
    }

    func uri(_ kind: KeyKind) -> String {
        "pkcs11:token=kb-bench;object=bench-\(kind.rawValue);type=private?module-path=\(modulePath)&pin-source=file:\(pinFile)"
    }

    var pinFile: String { "\(directory)/user.pin" }
    var rootCA: String { "\(directory)/pki/root-ca.pem" }
    func chain(_ kind: KeyKind) -> String { "\(directory)/bench-\(kind.rawValue)-chain.pem" }
    func keyFile(_ kind: KeyKind) -> String { "\(directory)/bench-\(kind.rawValue).key" }

    /// An OpenSSL configuration that starts libp11's engine with this module and the PIN, as
    /// nginx and curl users set it up; the PIN stays in a file readable by its owner only.
    func engineConfiguration() throws -> String {
        let path = "\(directory)/openssl-engine-\(URL(fileURLWithPath: modulePath).deletingPathExtension().lastPathComponent).cnf"
        let pin = try String(contentsOfFile: pinFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let text = """
        # Written by keybridge bench: libp11's engine for nginx and curl.
        openssl_conf = openssl_init
        [openssl_init]
        engines = engine_section
        [engine_section]
        pkcs11 = pkcs11_section
        [pkcs11_section]
        engine_id = pkcs11
        MODULE_PATH = \(modulePath)
        PIN = \(pin)
        init = 1

        """
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw BenchError("cannot write \(path)")
        }
        return path
    }

    func reference(_ kind: KeyKind, _ source: KeySource) -> KeyReference {
        switch source {
        case .token: return .pkcs11(uri(kind))
        case .file: return .pemFile(keyFile(kind))
        case .engine: return .engine(id: "pkcs11", identifier: uri(kind))
        }
    }

    /// The identity, loaded once (as `HTTPClient` loads it) and then shared.
    func identity(_ kind: KeyKind, _ source: KeySource) throws -> BenchClientIdentity {
        let name = "\(kind.rawValue)-\(source.rawValue)"
        if let cached = lock.withLock({ identities[name] }) { return cached }
        let loaded: BenchClientIdentity
        do {
            loaded = try BenchClientIdentity(chain: .pemFile(chain(kind)), key: reference(kind, source))
        } catch {
            throw BenchError("cannot load the \(kind.label) key from \(source.rawValue): \(error)")
        }
        lock.withLock { identities[name] = loaded }
        return loaded
    }
}

/// How long each measurement runs. `quick` is for trying the harness, not for figures.
public struct BenchSettings: Sendable {
    // Short turns and many rounds: the machine's load changes within seconds, and each
    // per-round ratio should compare columns that saw the same load.
    var signatureRounds = 21
    var signatureSeconds = 0.1
    var handshakeRounds = 11
    var handshakeSeconds = 0.2
    var scalingRounds = 3
    var scalingSeconds = 0.6
    var loadRounds = 3
    var loadSeconds = 2.0
    var coldStartRuns = 7

    public static let full = BenchSettings()
    public static let quick = BenchSettings(signatureRounds: 2, signatureSeconds: 0.05, handshakeRounds: 2, handshakeSeconds: 0.05,
                                            scalingRounds: 1, scalingSeconds: 0.1, loadRounds: 1, loadSeconds: 0.3, coldStartRuns: 2)
}

enum BenchMachine {
    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
    }

    static func describe() -> [String: String] {
        var info: [String: String] = [:]
        info["cores"] = String(ProcessInfo.processInfo.activeProcessorCount)
        info["loadAverageAtStart"] = loadAverage()
        if let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first(where: { $0.hasPrefix("model name") })?.split(separator: ":").last {
            info["cpu"] = cpu.trimmingCharacters(in: .whitespaces)
        }
        info["os"] = ProcessInfo.processInfo.operatingSystemVersionString
        return info
    }
}

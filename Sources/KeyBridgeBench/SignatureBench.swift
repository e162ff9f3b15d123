internal import COpenSSL
import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import PKCS11

/// The three signature schemes the issue asks for, with SHA-256.
enum SignatureCase: String, CaseIterable, Sendable {
    case rsaPKCS1 = "RSA-2048 PKCS#1 v1.5"
    case rsaPSS = "RSA-2048 PSS"
    case ecdsa = "ECDSA P-256"

    var keyKind: KeyKind { self == .ecdsa ? .ec : .rsa }
    var usesPSS: Bool { self == .rsaPSS }
}

/// Signs with any `EVP_PKEY` by `EVP_DigestSign`, as an application (or TLS) does: a fresh
/// digest context per signature. The same code times the provider's token key, the engine's
/// key and the in-memory PEM key, so only the key differs.
final class EVPSigner: @unchecked Sendable {
    // The EVP_PKEY is only read; each signature has its own EVP_MD_CTX, so threads may share it.
    private let identity: BenchClientIdentity
    private let pss: Bool
    private let message: [UInt8]

    init(identity: BenchClientIdentity, pss: Bool, message: [UInt8]) {
        self.identity = identity
        self.pss = pss
        self.message = message
    }

    @discardableResult
    func sign() throws -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { throw BenchError("EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer?
        guard EVP_DigestSignInit_ex(context, &keyContext, "SHA256", nil, nil, identity.privateKey, nil) == 1 else {
            throw BenchError("EVP_DigestSignInit_ex failed with \(identity.keyLocation): \(OpenSSLErrors.drain())")
        }
        if pss {
            guard let keyContext, EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) == 1,
                  EVP_PKEY_CTX_set_rsa_pss_saltlen(keyContext, RSA_PSS_SALTLEN_DIGEST) == 1 else {
                throw BenchError("cannot select RSA-PSS for \(identity.keyLocation): \(OpenSSLErrors.drain())")
            }
        }
        var signature = [UInt8](repeating: 0, count: 512)
        var length = signature.count
        guard EVP_DigestSign(context, &signature, &length, message, message.count) == 1 else {
            throw BenchError("EVP_DigestSign failed with \(identity.keyLocation): \(OpenSSLErrors.drain())")
        }
        return Array(signature.prefix(length))
    }

    /// Checks a signature with this key's public half (OpenSSL's default provider).
    func verify(_ signature: [UInt8]) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer?
        guard EVP_DigestVerifyInit_ex(context, &keyContext, "SHA256", nil, "provider=default", identity.privateKey, nil) == 1 else {
            _ = OpenSSLErrors.drain()
            return false
        }
        if pss, let keyContext {
            _ = EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING)
            _ = EVP_PKEY_CTX_set_rsa_pss_saltlen(keyContext, RSA_PSS_SALTLEN_DIGEST)
        }
        let ok = EVP_DigestVerify(context, signature, signature.count, message, message.count) == 1
        _ = OpenSSLErrors.drain()
        return ok
    }
}

/// `C_SignInit` + `C_Sign` through the PKCS11 layer (`PrivateKey.sign`), with the mechanism the
/// provider chose, so both sides do the same token work. For mechanisms that take a digest,
/// the SHA-256 (and the DigestInfo for PKCS#1) is computed here per signature, as the provider does.
final class RawSigner: @unchecked Sendable {
    // PrivateKey is thread-safe (its session pool is locked); the rest is immutable.
    let key: PrivateKey
    let mechanism: SignatureMechanism
    private let message: [UInt8]

    init(key: PrivateKey, mechanism: SignatureMechanism, message: [UInt8]) {
        self.key = key
        self.mechanism = mechanism
        self.message = message
    }

    @discardableResult
    func sign() throws -> [UInt8] {
        let input: [UInt8]
        switch mechanism {
        case .rsaPKCS1: input = HashAlgorithm.sha256.digestInfoPrefix + Digest.sha256(message)
        case .rsaPSS, .ecdsa: input = Digest.sha256(message)
        default: input = message
        }
        return try key.sign(input, mechanism: mechanism)
    }

    /// The token mechanism that matches what the provider reported for one of its signatures.
    static func mechanism(matching description: String?, for signatureCase: SignatureCase) throws -> SignatureMechanism {
        let pss = (hash: HashAlgorithm.sha256, mgf1: HashAlgorithm.sha256, saltLength: 32)
        let candidates: [SignatureMechanism]
        switch signatureCase {
        case .rsaPKCS1: candidates = [.rsaPKCS1Hashing(.sha256), .rsaPKCS1]
        case .rsaPSS: candidates = [.rsaPSSHashing(hash: pss.hash, mgf1: pss.mgf1, saltLength: pss.saltLength),
                                    .rsaPSS(hash: pss.hash, mgf1: pss.mgf1, saltLength: pss.saltLength)]
        case .ecdsa: candidates = [.ecdsaHashing(.sha256), .ecdsa]
        }
        guard let description, let found = candidates.first(where: { description.hasPrefix($0.description) }) else {
            throw BenchError("the provider signed \(signatureCase.rawValue) with \(description ?? "an unreported mechanism"), which the raw C_Sign column cannot repeat")
        }
        return found
    }

    /// Raw ECDSA r||s as DER, so OpenSSL can check it.
    static func derECDSA(_ raw: [UInt8]) -> [UInt8]? {
        guard raw.count % 2 == 0, let signature = ECDSA_SIG_new() else { return nil }
        defer { ECDSA_SIG_free(signature) }
        let half = raw.count / 2
        guard let r = BN_bin2bn(raw, Int32(half), nil), let s = BN_bin2bn(Array(raw[half...]), Int32(half), nil) else { return nil }
        guard ECDSA_SIG_set0(signature, r, s) == 1 else { return nil }
        var out: UnsafeMutablePointer<UInt8>?
        let length = i2d_ECDSA_SIG(signature, &out)
        guard length > 0, let out else { return nil }
        defer { CRYPTO_free(out, #file, #line) }
        return Array(UnsafeBufferPointer(start: out, count: Int(length)))
    }
}

enum Digest {
    static func sha256(_ data: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = EVP_Digest(data, data.count, &digest, &length, EVP_sha256(), nil)
        return digest
    }
}

enum OpenSSLErrors {
    /// The OpenSSL error queue as one line, emptied.
    static func drain() -> String {
        var lines: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            ERR_error_string_n(code, &buffer, buffer.count)
            lines.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        return lines.isEmpty ? "no detail from OpenSSL" : lines.joined(separator: "; ")
    }
}

/// Items 1 and 3: signatures per second, provider against raw `C_Sign`, libp11's engine and the
/// same key in memory; then the provider's rate with 1, 2 and 4 threads.
struct SignatureBench {
    let keys: BenchKeys
    let settings: BenchSettings
    /// A TLS 1.3 CertificateVerify signs about this much (64 spaces, context string, hash).
    let message = [UInt8](repeating: 0x20, count: 64) + Array("TLS 1.3, client CertificateVerify".utf8) + [0] + [UInt8](repeating: 0xab, count: 32)

    /// Rates per case: provider, raw, engine, file (medians), for the handshake table too.
    struct Rates {
        var provider: Double?
        var raw: Double?
        var engine: Double?
        var file: Double?
    }

    func overhead(id: String, title: String) -> (BenchSection, [SignatureCase: Rates]) {
        var section = BenchSection(id: id, title: title)
        section.notes.append("Single thread, one process, the same token key (\(keys.moduleDescription)). Each round runs every column for \(settings.signatureSeconds) s, in alternating order; \(settings.signatureRounds) rounds. Figures are median signatures/s; the ratio is the median of the per-round ratios provider/raw.")
        section.notes.append("provider: EVP_DigestSign on the pkcs11: key (KeyBridge provider). raw: PrivateKey.sign (C_SignInit + C_Sign) with the mechanism the provider used, hashing done per call where the mechanism takes a digest. engine: EVP_DigestSign on libp11's engine key. file: the same key from its PEM file (OpenSSL in memory).")
        var all: [SignatureCase: Rates] = [:]
        for signatureCase in SignatureCase.allCases {
            do {
                let (row, rates) = try measure(signatureCase)
                section.rows.append(row)
                all[signatureCase] = rates
            } catch {
                section.rows.append(BenchRow(signatureCase.rawValue, []))
                section.notes.append("\(signatureCase.rawValue): not measured: \(error)")
            }
        }
        return (section, all)
    }

    private func measure(_ signatureCase: SignatureCase) throws -> (BenchRow, Rates) {
        let kind = signatureCase.keyKind
        let provider = EVPSigner(identity: try keys.identity(kind, .token), pss: signatureCase.usesPSS, message: message)
        let file = EVPSigner(identity: try keys.identity(kind, .file), pss: signatureCase.usesPSS, message: message)
        let engine: EVPSigner? = try? EVPSigner(identity: keys.identity(kind, .engine), pss: signatureCase.usesPSS, message: message)

        ProviderDiagnostics.clearLastMechanism()
        let providerSignature = try provider.sign()
        let mechanism = try RawSigner.mechanism(matching: ProviderDiagnostics.lastMechanism, for: signatureCase)
        let tokenKey = try PrivateKey.resolve(PKCS11URI(parsing: keys.uri(kind)), allowPrompt: false)
        let raw = RawSigner(key: tokenKey, mechanism: mechanism, message: message)

        // Each column's output is checked once with the public key, so every column really signs.
        guard file.verify(providerSignature) else { throw BenchError("the provider's \(signatureCase.rawValue) signature does not verify") }
        let rawSignature = try raw.sign()
        let rawChecked = signatureCase == .ecdsa ? RawSigner.derECDSA(rawSignature) : rawSignature
        guard let rawChecked, file.verify(rawChecked) else { throw BenchError("the raw C_Sign \(signatureCase.rawValue) signature does not verify") }
        if let engine { guard file.verify(try engine.sign()) else { throw BenchError("the engine's \(signatureCase.rawValue) signature does not verify") } }

        var variants: [(name: String, body: () throws -> Void)] = [
            ("provider", { try provider.sign() }),
            ("raw", { try raw.sign() }),
            ("file", { try file.sign() }),
        ]
        if let engine { variants.insert(("engine", { try engine.sign() }), at: 2) }
        let rates = try Timing.interleaved(rounds: settings.signatureRounds, seconds: settings.signatureSeconds, variants)
        let result = Rates(provider: BenchStatistics.median(rates["provider"] ?? []), raw: BenchStatistics.median(rates["raw"] ?? []),
                           engine: BenchStatistics.median(rates["engine"] ?? []), file: BenchStatistics.median(rates["file"] ?? []))
        var ratios = [BenchRatio("provider/raw", BenchStatistics.medianRatio(rates["provider"] ?? [], rates["raw"] ?? []) ?? .nan,
                                 target: 0.97)]
        if engine != nil {
            ratios.append(BenchRatio("provider/engine", BenchStatistics.medianRatio(rates["provider"] ?? [], rates["engine"] ?? []) ?? .nan))
        }
        ratios.append(BenchRatio("raw/file", BenchStatistics.medianRatio(rates["raw"] ?? [], rates["file"] ?? []) ?? .nan))
        let row = BenchRow("\(signatureCase.rawValue) (\(mechanism.description))", [
            BenchFigure("provider/s", result.provider), BenchFigure("raw C_Sign/s", result.raw),
            BenchFigure("engine/s", result.engine), BenchFigure("file/s", result.file),
        ], ratios: ratios)
        return (row, result)
    }

    /// For profiling (`valgrind --tool=callgrind`): `count` signatures of one column only, after
    /// one untimed signature that loads everything. Returns the mechanism used.
    func repeatSignatures(_ signatureCase: SignatureCase, column: String, count: Int) throws -> String {
        let kind = signatureCase.keyKind
        let provider = EVPSigner(identity: try keys.identity(kind, .token), pss: signatureCase.usesPSS, message: message)
        ProviderDiagnostics.clearLastMechanism()
        try provider.sign()
        let mechanismName = ProviderDiagnostics.lastMechanism
        let body: () throws -> Void
        switch column {
        case "provider":
            body = { try provider.sign() }
        case "raw":
            let mechanism = try RawSigner.mechanism(matching: mechanismName, for: signatureCase)
            let raw = RawSigner(key: try PrivateKey.resolve(PKCS11URI(parsing: keys.uri(kind)), allowPrompt: false), mechanism: mechanism, message: message)
            body = { try raw.sign() }
        case "engine", "file":
            let signer = EVPSigner(identity: try keys.identity(kind, column == "engine" ? .engine : .file), pss: signatureCase.usesPSS, message: message)
            body = { try signer.sign() }
        default:
            throw BenchError("the column is provider, raw, engine or file, not '\(column)'")
        }
        try body()
        for _ in 0..<count { try body() }
        return mechanismName ?? "?"
    }

    /// Item 3: the provider's rate with 1, 2 and 4 threads on one key, and the same for the key
    /// in memory as a control that shows how much CPU the machine really had to give.
    func scaling(id: String) -> BenchSection {
        var section = BenchSection(id: id, title: "Scaling: RSA-2048 PSS signatures/s by thread count")
        section.notes.append("Threads share one key and KeyBridge's session pool; each thread count runs \(settings.scalingSeconds) s, \(settings.scalingRounds) rounds, median. The PEM-file key in memory is the control: its 1→2 ratio is what the machine's free CPU allows; raw C_Sign on the same pool shows what the token itself allows. Machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, load average at the start \(BenchMachine.loadAverage()).")
        do {
            let provider = EVPSigner(identity: try keys.identity(.rsa, .token), pss: true, message: message)
            let file = EVPSigner(identity: try keys.identity(.rsa, .file), pss: true, message: message)
            ProviderDiagnostics.clearLastMechanism()
            try provider.sign()
            let raw = RawSigner(key: try PrivateKey.resolve(PKCS11URI(parsing: keys.uri(.rsa)), allowPrompt: false),
                                mechanism: try RawSigner.mechanism(matching: ProviderDiagnostics.lastMechanism, for: .rsaPSS), message: message)
            let columns: [(name: String, label: String, body: @Sendable () throws -> Void)] = [
                ("provider", "token key (provider)", { try provider.sign() }),
                ("raw", "token key (raw C_Sign, same session pool)", { try raw.sign() }),
                ("file", "PEM key in memory (control)", { try file.sign() }),
            ]
            var samples: [String: [Int: [Double]]] = [:]
            for _ in 0..<settings.scalingRounds {
                for threads in [1, 2, 4] {
                    for column in columns {
                        samples[column.name, default: [:]][threads, default: []].append(
                            try Timing.parallelRate(threads: threads, seconds: settings.scalingSeconds, column.body))
                    }
                }
            }
            for column in columns {
                let one = samples[column.name]?[1] ?? [], two = samples[column.name]?[2] ?? [], four = samples[column.name]?[4] ?? []
                section.rows.append(BenchRow(column.label, [
                    BenchFigure("1 thread/s", BenchStatistics.median(one)), BenchFigure("2 threads/s", BenchStatistics.median(two)),
                    BenchFigure("4 threads/s", BenchStatistics.median(four)),
                ], ratios: [
                    BenchRatio("2/1", BenchStatistics.medianRatio(two, one) ?? .nan, target: column.name == "provider" ? 1.8 : nil),
                    BenchRatio("4/1", BenchStatistics.medianRatio(four, one) ?? .nan),
                ]))
            }
        } catch {
            section.notes.append("not measured: \(error)")
        }
        return section
    }
}

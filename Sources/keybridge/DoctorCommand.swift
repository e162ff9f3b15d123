import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import OpenBanking
import PKCS11

/// `keybridge doctor`: checks a key, its token and its certificate, in order, and says whether
/// the setup is fit for use.
enum DoctorCommand {
    enum Status: String {
        case passed, warning, failed, skipped
    }

    struct Check {
        var id: String
        var title: String
        var status: Status
        var detail: String
        var fix: String?
    }

    struct Options {
        var keyURI: String?
        var tokenURI: String?
        var module: String?
        var certificate: String?
        var caFile: String?
        var bank: String?
        var json = false
        var expiryWarningDays = 30
    }

    /// Exit statuses: the verdict a monitoring job acts on.
    enum Verdict: Int32 {
        /// Every check that ran passed.
        case fit = 0
        /// Nothing failed, but at least one warning.
        case fitWithWarnings = 1
        /// At least one check failed.
        case unfit = 3

        var text: String {
            switch self {
            case .fit: return "fit for use"
            case .fitWithWarnings: return "fit for use, with warnings"
            case .unfit: return "NOT fit for use"
            }
        }

        var json: String {
            switch self {
            case .fit: return "fit"
            case .fitWithWarnings: return "warnings"
            case .unfit: return "unfit"
            }
        }
    }

    static func run(_ arguments: [String]) -> Int32 {
        if arguments.contains("-h") || arguments.contains("--help") || arguments.first == "help" {
            print(Help.doctor)
            return 0
        }
        let options: Options
        do {
            options = try parse(arguments)
        } catch {
            Output.error(error.message + (error.pointsToHelp ? "; run 'keybridge doctor --help' for the options" : ""))
            return error.status
        }
        let checks = Doctor(options: options).run()
        let verdict = verdict(of: checks)
        if options.json {
            print(json(checks, verdict: verdict))
        } else {
            print(text(checks, verdict: verdict, options: options), terminator: "")
        }
        return verdict.rawValue
    }

    static func parse(_ arguments: [String]) throws(KeysCommand.Failure) -> Options {
        let reader = try KeysCommand.OptionReader(arguments, valued: ["--key", "--token", "--token-uri", "--module", "--cert", "--cacert", "--bank", "--expiry-days"],
                                                  flags: ["--json"])
        guard reader.positional.isEmpty else { throw KeysCommand.Failure.usage("'doctor' takes no positional argument; name the key with --key") }
        var options = Options()
        options.keyURI = try reader.value("--key")
        options.tokenURI = try reader.value("--token", "--token-uri")
        options.module = try reader.value("--module")
        options.certificate = try reader.value("--cert")
        options.caFile = try reader.value("--cacert")
        options.bank = try reader.value("--bank")
        options.json = reader.has("--json")
        if let days = try reader.value("--expiry-days") {
            guard let value = Int(days), value >= 0, value <= 3650 else { throw KeysCommand.Failure.usage("--expiry-days takes a number of days from 0 to 3650") }
            options.expiryWarningDays = value
        }
        if options.keyURI == nil && options.tokenURI == nil {
            throw KeysCommand.Failure.usage("name what to check: --key 'pkcs11:…' (the whole setup) or --token 'pkcs11:token=…' (module, token and login only)")
        }
        if options.keyURI != nil && options.tokenURI != nil {
            throw KeysCommand.Failure.usage("give --key or --token, not both (the key's URI names its token)")
        }
        if let key = options.keyURI, !key.hasPrefix("pkcs11:") {
            throw KeysCommand.Failure.usage("--key must be a pkcs11: URI; doctor checks token keys")
        }
        if let bank = options.bank, !bank.lowercased().hasPrefix("https://") {
            throw KeysCommand.Failure.usage("--bank must be an https:// URL")
        }
        if options.bank != nil && options.keyURI == nil {
            throw KeysCommand.Failure.usage("--bank needs --key: the handshake is made with the key")
        }
        return options
    }

    static func verdict(of checks: [Check]) -> Verdict {
        if checks.contains(where: { $0.status == .failed }) { return .unfit }
        if checks.contains(where: { $0.status == .warning }) { return .fitWithWarnings }
        return .fit
    }

    static func text(_ checks: [Check], verdict: Verdict, options: Options) -> String {
        var lines: [String] = []
        let subject = options.keyURI.map { "key " + CertCommand.displayName($0) } ?? "token " + CertCommand.displayName(options.tokenURI ?? "")
        lines.append("keybridge doctor: \(subject)")
        let width = (checks.map(\.title.count).max() ?? 10) + 2
        for check in checks {
            let mark = "[\(check.status.rawValue)]".padding(toLength: 10, withPad: " ", startingAt: 0)
            lines.append("  \(mark) \(check.title.padding(toLength: width, withPad: " ", startingAt: 0))\(check.detail)")
            if let fix = check.fix, check.status == .failed || check.status == .warning {
                lines.append(String(repeating: " ", count: 13 + width) + "fix: \(fix)")
            }
        }
        let failed = checks.filter { $0.status == .failed }.count
        let warnings = checks.filter { $0.status == .warning }.count
        var counts: [String] = []
        if failed > 0 { counts.append("\(failed) failed") }
        if warnings > 0 { counts.append("\(warnings) warning\(warnings == 1 ? "" : "s")") }
        lines.append("Verdict: \(verdict.text)" + (counts.isEmpty ? "" : " (" + counts.joined(separator: ", ") + ")") + "; exit status \(verdict.rawValue)")
        return lines.joined(separator: "\n") + "\n"
    }

    static func json(_ checks: [Check], verdict: Verdict) -> String {
        let document: [String: Any] = [
            "verdict": verdict.json,
            "exitStatus": Int(verdict.rawValue),
            "checks": checks.map { check in
                ["id": check.id, "title": check.title, "status": check.status.rawValue, "detail": check.detail,
                 "fix": check.fix ?? NSNull()] as [String: Any]
            },
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else {
            return "{}"
        }
        return String(decoding: data, as: UTF8.self)
    }
}

import Foundation
import KeyBridgeProvider
import OpenBanking

/// `keybridge cert`: eIDAS certificate inspection.
enum CertCommand {
    struct InspectOptions {
        var source: String?
        var json = false
    }

    struct UsageError: Error { var message: String }

    /// A failure with its exit status and the one-line message naming cause and fix.
    struct Failure: Error {
        var status: Int32
        var message: String
    }

    static func run(_ arguments: [String]) -> Int32 {
        switch arguments.first {
        case "inspect":
            return inspect(Array(arguments.dropFirst()))
        case "-h", "--help", "help":
            print(Help.cert)
            return 0
        case nil:
            print(Help.cert)
            return 2
        case let other?:
            // A misplaced file name or URI (which may hold a PIN) is not echoed.
            if other.contains(":") || other.contains("/") || other.contains(".") {
                Output.error("'keybridge cert' needs a command before the certificate, e.g. 'keybridge cert inspect FILE'")
            } else {
                Output.error("unknown cert command '\(other.prefix { $0 != "=" }.prefix(30))'; run 'keybridge cert --help' for the list")
            }
            return 2
        }
    }

    static func inspect(_ arguments: [String]) -> Int32 {
        let options: InspectOptions
        do {
            guard let parsed = try parseInspect(arguments) else {
                print(Help.certInspect)
                return 0
            }
            options = parsed
        } catch {
            Output.error("\(error.message); run 'keybridge cert inspect --help' for the options")
            return 2
        }
        guard let source = options.source else { return 2 }
        do {
            let (certificate, count) = try load(source)
            let label = displayName(source)
            if options.json {
                print(json(certificate, source: label))
            } else {
                print(report(certificate, source: label, certificatesInFile: count), terminator: "")
            }
            return 0
        } catch {
            Output.error(error.message)
            return error.status
        }
    }

    static func parseInspect(_ arguments: [String]) throws(UsageError) -> InspectOptions? {
        var options = InspectOptions()
        for argument in arguments {
            switch argument {
            case "-h", "--help": return nil
            case "--json": options.json = true
            default:
                if argument.hasPrefix("-") && argument.count > 1 {
                    throw UsageError(message: "unknown option '\(argument.prefix { $0 != "=" })'")
                }
                guard options.source == nil else {
                    // The extra argument may be a URI with a PIN in it; never echo it.
                    throw UsageError(message: "only one certificate can be inspected at a time (got a second file or URI)")
                }
                options.source = argument
            }
        }
        guard options.source != nil else { throw UsageError(message: "no certificate given: name a FILE or a pkcs11: URI") }
        return options
    }

    /// The source as shown in output: a URI without its query, which may carry a PIN.
    static func displayName(_ source: String) -> String {
        if source == "-" { return "(standard input)" }
        return source.hasPrefix("pkcs11:") ? String(source.prefix { $0 != "?" }) : source
    }

    /// The certificate, and how many certificates the file holds (1 for DER and tokens).
    static func load(_ source: String) throws(Failure) -> (EIDASCertificate, Int) {
        let bytes: [UInt8]
        if source.hasPrefix("pkcs11:") {
            let chain: [[UInt8]]
            do {
                chain = try TokenCertificates.chain(uri: source)
            } catch {
                if error.function == "PKCS#11 URI" {
                    throw Failure(status: 2, message: "malformed certificate URI: \(error.reason)")
                }
                throw Failure(status: 3, message: "cannot read the certificate from the token: \(error)")
            }
            guard let leaf = chain.first else {
                throw Failure(status: 3, message: "the token returned no certificate for \(displayName(source)); check object= or id= with 'keybridge keys list --token …'")
            }
            bytes = leaf
        } else {
            bytes = try readFile(source)
        }
        do {
            if bytes.firstRange(of: Array("-----BEGIN".utf8)) != nil {
                let all = try EIDASCertificate.all(pem: String(decoding: bytes, as: UTF8.self))
                return (all[0], all.count)
            }
            return (try EIDASCertificate(der: bytes), 1)
        } catch {
            throw Failure(status: 4, message: "cannot inspect \(displayName(source)): \(error)")
        }
    }

    static func readFile(_ path: String) throws(Failure) -> [UInt8] {
        if path == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw Failure(status: 26, message: "cannot read \(path): no such file; check the path")
        }
        guard !isDirectory.boolValue else {
            throw Failure(status: 26, message: "\(path) is a directory; give the certificate file inside it")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Failure(status: 26, message: "cannot read \(path) (permission denied or I/O error); check that the file is readable")
        }
        return Array(data)
    }

    // MARK: - Text report

    static func report(_ certificate: EIDASCertificate, source: String, certificatesInFile: Int, now: Date = Date()) -> String {
        var lines: [String] = []
        func line(_ label: String, _ value: String) {
            lines.append(label.padding(toLength: max(label.count + 1, 26), withPad: " ", startingAt: 0) + value)
        }
        let subject = certificate.subject
        line("Certificate:", source + (certificatesInFile > 1 ? " (the first of \(certificatesInFile) certificates)" : ""))
        line("Subject:", subject.rfc2253)
        line("  organizationIdentifier:", subject.organizationIdentifier ?? "(none)")
        line("  Organization (O):", subject.organization ?? "(none)")
        line("  Common name (CN):", subject.commonName ?? "(none)")
        line("  Country (C):", subject.country ?? "(none)")
        line("Issuer:", certificate.issuer.rfc2253)
        line("Serial:", certificate.serialNumberHex)
        line("Valid from:", humanDate(certificate.notBefore) + (now < certificate.notBefore ? " (not yet valid)" : ""))
        let left: String
        if now > certificate.notAfter {
            let ago = Int(now.timeIntervalSince(certificate.notAfter) / 86_400)
            left = ago == 0 ? "expired less than a day ago" : "expired \(ago) day\(ago == 1 ? "" : "s") ago"
        } else {
            let days = certificate.daysUntilExpiry(at: now)
            left = days == 0 ? "expires in less than a day" : "\(days) day\(days == 1 ? "" : "s") left"
        }
        line("Valid until:", humanDate(certificate.notAfter) + " (\(left))")
        line("Key:", certificate.publicKey.description)
        line("SHA-256 fingerprint:", certificate.sha256FingerprintHex)
        guard let qc = certificate.qcStatements else {
            line("QC statements:", "none (no QCStatements extension: not a qualified eIDAS certificate)")
            return lines.joined(separator: "\n") + "\n"
        }
        lines.append("QC statements:")
        line("  QcCompliance:", qc.compliance ? "yes (\(EIDASCertificate.QCStatements.complianceOID))" : "no")
        line("  QcType:", qc.types.isEmpty ? "none" : qc.types.map { type in
            [type.name, type.certificateKind].compactMap { $0 }.joined(separator: ", ") + " (\(type.rawValue))"
        }.joined(separator: "; "))
        if let psd2 = qc.psd2 {
            line("  PSD2 roles:", psd2.roles.isEmpty ? "none" : psd2.roles.map(roleText).joined(separator: ", "))
            line("  NCA:", "\(psd2.ncaName) (\(psd2.ncaID))")
        } else {
            line("  PSD2:", "no PSD2 statement (\(EIDASCertificate.QCStatements.psd2OID))")
        }
        if !qc.otherStatementIDs.isEmpty {
            line("  Other statements:", qc.otherStatementIDs.joined(separator: ", "))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func roleText(_ role: EIDASCertificate.PSD2Role) -> String {
        guard let standard = role.standardName else { return "\(role.name) (\(role.oid), not an ETSI TS 119 495 role)" }
        return standard == role.name ? "\(standard) (\(role.oid))" : "\(standard) (\(role.oid), named '\(role.name)' in the certificate)"
    }

    static func humanDate(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss 'UTC'"
        return formatter.string(from: date)
    }

    // MARK: - JSON

    /// Every key is always present (null when absent), so monitoring can rely on them.
    static func json(_ certificate: EIDASCertificate, source: String, now: Date = Date()) -> String {
        func optional(_ value: Any?) -> Any { value ?? NSNull() }
        func name(_ name: EIDASCertificate.Name) -> [String: Any] {
            [
                "rfc2253": name.rfc2253,
                "commonName": optional(name.commonName),
                "organization": optional(name.organization),
                "organizationIdentifier": optional(name.organizationIdentifier),
                "country": optional(name.country),
                "attributes": name.attributes.map { ["oid": $0.oid, "name": optional($0.shortName), "value": $0.value] as [String: Any] },
            ]
        }
        var qcStatements: Any = NSNull()
        if let qc = certificate.qcStatements {
            var psd2: Any = NSNull()
            if let statement = qc.psd2 {
                psd2 = [
                    "roles": statement.roles.map { ["oid": $0.oid, "name": $0.name, "standardName": optional($0.standardName)] as [String: Any] },
                    "ncaName": statement.ncaName,
                    "ncaId": statement.ncaID,
                ] as [String: Any]
            }
            qcStatements = [
                "statementIds": qc.statementIDs,
                "compliance": qc.compliance,
                "types": qc.types.map { ["oid": $0.rawValue, "name": optional($0.name)] as [String: Any] },
                "psd2": psd2,
                "otherStatementIds": qc.otherStatementIDs,
            ] as [String: Any]
        }
        let object: [String: Any] = [
            "source": source,
            "subject": name(certificate.subject),
            "issuer": name(certificate.issuer),
            "serialNumber": certificate.serialNumberHex,
            "notBefore": certificate.notBefore.formatted(.iso8601),
            "notAfter": certificate.notAfter.formatted(.iso8601),
            "daysUntilExpiry": certificate.daysUntilExpiry(at: now),
            "expired": now > certificate.notAfter,
            "notYetValid": now < certificate.notBefore,
            "key": ["algorithm": certificate.publicKey.algorithm, "bits": certificate.publicKey.bits, "curve": optional(certificate.publicKey.curve)] as [String: Any],
            "sha256Fingerprint": certificate.sha256FingerprintHex,
            "qcStatements": qcStatements,
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else {
            return "{}"
        }
        return String(decoding: data, as: UTF8.self)
    }
}

extension Help {
    static let cert = """
    Usage: keybridge cert <command> [options]

    Commands:
      inspect FILE|pkcs11:URI [--json]  Show an eIDAS certificate: subject and
                                        organizationIdentifier, validity, key,
                                        fingerprint and QC statements (QcType,
                                        PSD2 roles, NCA); see 'keybridge cert
                                        inspect --help'
    """

    static let certInspect = """
    Usage: keybridge cert inspect [--json] FILE|pkcs11:URI

    Shows what PSD2 checks need from an eIDAS certificate (QWAC or QSealC): the
    subject with its organizationIdentifier (2.5.4.97), the issuer, serial,
    validity with the days left, the key, the SHA-256 fingerprint and the
    QCStatements: QcCompliance, QcType (web = QWAC, eseal = QSealC, esign) and the
    PSD2 roles (PSP_AS, PSP_PI, PSP_AI, PSP_IC) with the NCA's name and id (ETSI
    TS 119 495). Statements it does not know are listed by OID.

    FILE is PEM (the first certificate of a chain file) or DER; - reads standard
    input. A pkcs11: URI names a certificate object on a token, for example
      'pkcs11:token=keybridge;object=client-rsa;type=cert?module-path=/lib/p11.so'

    Options:
          --json      Print JSON with stable keys (absent values are null), for
                      monitoring
      -h, --help      Show this help

    Exit status: 0 success; 2 usage or malformed URI; 3 token problem (module,
    PIN, no such certificate object); 4 the certificate cannot be read or its
    QCStatements are malformed; 26 the file cannot be read.
    """
}

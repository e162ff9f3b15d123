import Foundation
import KeyBridgeProvider
import OpenBanking
import PKCS11

/// `keybridge keys`: list, generate, csr and import-cert for keys that stay on the token.
enum KeysCommand {
    /// A failure with its exit status and the one-line message naming cause and fix.
    struct Failure: Error {
        var status: Int32
        var message: String
        /// Whether to point at the command's --help (not for refusals that already say it all).
        var pointsToHelp = true
        static func usage(_ message: String) -> Failure { Failure(status: 2, message: message) }
        static func refused(_ message: String) -> Failure { Failure(status: 2, message: message, pointsToHelp: false) }
        static func token(_ message: String) -> Failure { Failure(status: 3, message: message) }
    }

    static func run(_ arguments: [String]) -> Int32 {
        let rest = Array(arguments.dropFirst())
        let body: ([String]) throws(Failure) -> Int32
        let help: String
        switch arguments.first {
        case "list": (body, help) = (list, Help.keysList)
        case "generate": (body, help) = (generate, Help.keysGenerate)
        case "csr": (body, help) = (csr, Help.keysCSR)
        case "import-cert": (body, help) = (importCertificate, Help.keysImportCert)
        case "-h", "--help", "help":
            print(Help.keys)
            return 0
        case nil:
            print(Help.keys)
            return 2
        case let other?:
            if other.contains(":") || other.contains("/") {
                Output.error("'keybridge keys' needs a command first: list, generate, csr or import-cert")
            } else {
                Output.error("unknown keys command '\(other.prefix { $0 != "=" }.prefix(30))'; run 'keybridge keys --help' for the list")
            }
            return 2
        }
        if rest.contains("-h") || rest.contains("--help") {
            print(help)
            return 0
        }
        do {
            return try body(rest)
        } catch {
            Output.error(error.message + (error.status == 2 && error.pointsToHelp ? "; run 'keybridge keys \(arguments[0]) --help' for the options" : ""))
            return error.status
        }
    }

    // MARK: - Options

    /// Reads `--name value`, `--name=value` and flags, and refuses unknown options by name only
    /// (a value may be a URI with a PIN, so values are never echoed).
    struct OptionReader {
        private(set) var values: [String: [String]] = [:]
        private(set) var flags: Set<String> = []
        private(set) var positional: [String] = []

        init(_ arguments: [String], valued: Set<String>, flags allowed: Set<String>,
             refused: [String: String] = [:]) throws(Failure) {
            var index = 0
            while index < arguments.count {
                let argument = arguments[index]
                index += 1
                guard argument.hasPrefix("-"), argument.count > 1 else {
                    positional.append(argument)
                    continue
                }
                let name = String(argument.prefix { $0 != "=" })
                if let reason = refused[name] ?? refused.first(where: { name.hasPrefix($0.key + "-") })?.value {
                    throw Failure.refused(reason)
                }
                if allowed.contains(name) {
                    guard name == argument else { throw Failure.usage("\(name) takes no value") }
                    flags.insert(name)
                } else if valued.contains(name) {
                    if name != argument {
                        values[name, default: []].append(String(argument.dropFirst(name.count + 1)))
                    } else {
                        guard index < arguments.count else { throw Failure.usage("\(name) needs a value") }
                        values[name, default: []].append(arguments[index])
                        index += 1
                    }
                } else {
                    throw Failure.usage("unknown option '\(name.prefix(40))'")
                }
            }
        }

        func value(_ names: String...) throws(Failure) -> String? {
            let found = names.flatMap { values[$0] ?? [] }
            if found.count > 1 { throw Failure.usage("\(names[0]) is given \(found.count) times; give it once") }
            return found.first
        }

        func required(_ names: String...) throws(Failure) -> String {
            let found = names.flatMap { values[$0] ?? [] }
            if found.count > 1 { throw Failure.usage("\(names[0]) is given \(found.count) times; give it once") }
            guard let value = found.first, !value.isEmpty else { throw Failure.usage("\(names[0]) is required") }
            return value
        }

        func has(_ name: String) -> Bool { flags.contains(name) }
    }

    /// The token URI from `--token`/`--token-uri` (or a key URI), with `--module` filled in.
    static func tokenURI(_ text: String?, module: String?) throws(Failure) -> PKCS11URI {
        var uri = PKCS11URI()
        if let text {
            do {
                uri = try PKCS11URI(parsing: text)
            } catch {
                throw Failure.usage("malformed token URI: \(error.reason)")
            }
        }
        if let module {
            if let given = uri.modulePath, given != module {
                throw Failure.usage("--module and the URI's module-path name different modules; give one")
            }
            uri.modulePath = module
        }
        return uri
    }

    static func openToken(_ uri: PKCS11URI) throws(Failure) -> (Token, TokenInfo) {
        do {
            let token = try Token.open(uri)
            return (token, try token.info())
        } catch {
            throw Failure.token("\(error)")
        }
    }

    /// A URI naming one object: the token selector and the module and PIN-file query of
    /// `base` (never a pin-value), plus the object's id, label and type.
    static func objectURI(base: PKCS11URI, tokenLabel: String, label: String?, id: [UInt8]?, type: PKCS11URI.ObjectType) -> String {
        var uri = PKCS11URI()
        uri.token = tokenLabel
        uri.serial = base.serial
        uri.slotID = base.slotID
        uri.object = label
        uri.id = id
        uri.type = type
        uri.modulePath = base.modulePath
        uri.moduleName = base.moduleName
        uri.pinSource = base.pinSource
        return uri.formatted()
    }

    static func hex(_ bytes: [UInt8]?) -> String {
        bytes.map { $0.map { String(format: "%02x", $0) }.joined() } ?? "-"
    }

    static func parseID(_ text: String) throws(Failure) -> [UInt8] {
        var digits = text.lowercased().replacingOccurrences(of: ":", with: "")
        if digits.hasPrefix("0x") { digits.removeFirst(2) }
        guard !digits.isEmpty, digits.count % 2 == 0, digits.count <= 128, digits.allSatisfy(\.isHexDigit) else {
            throw Failure.usage("--id must be an even number of hex digits (1 to 64 bytes), e.g. 0a or 0a:1b")
        }
        var bytes: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            bytes.append(UInt8(digits[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    /// Writes `text` to `path` through a temporary file in the same folder, so a reader never
    /// sees half a file.
    static func writeAtomically(_ text: String, to path: String) throws(Failure) {
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do {
            try Data(text.utf8).write(to: temporary)
        } catch {
            throw Failure(status: 26, message: "cannot write \(path): the folder does not exist or is not writable; check the path given to -o")
        }
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw Failure(status: 26, message: "cannot write \(path): \(reason); check the path given to -o")
        }
    }

    // MARK: - list

    static func list(_ arguments: [String]) throws(Failure) -> Int32 {
        let options = try OptionReader(arguments, valued: ["--token", "--token-uri", "--module"], flags: ["--json"])
        guard options.positional.isEmpty else {
            throw Failure.usage("'keys list' takes no positional argument; give the token with --token 'pkcs11:token=…'")
        }
        // Without --token every token of the module would match, and the error would be about
        // several tokens instead of the missing option.
        guard let tokenText = try options.value("--token", "--token-uri") else {
            throw Failure.usage("--token is required: the token to list, e.g. 'pkcs11:token=keybridge?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/path/to/pin' (softhsm2-util --show-slots or pkcs11-tool -L shows the tokens)")
        }
        let base = try tokenURI(tokenText, module: try options.value("--module"))
        let (token, info) = try openToken(base)
        let progress = ProgressLine()
        let objects: [TokenObjectInfo]
        let mechanisms: [ObjectHandle: [UInt]]
        do {
            objects = try token.listObjects { done, total in
                // Small tokens answer at once; only many objects are worth a line.
                if total >= 20 { progress.update("reading token objects: \(done)/\(total)") }
            }
            var found: [ObjectHandle: [UInt]] = [:]
            for object in objects where object.type == .privateKey {
                found[object.handle] = SigningMechanisms.usable(keyType: object.keyType, offered: try token.mechanisms(),
                                                                allowed: object.allowedMechanisms)
            }
            mechanisms = found
        } catch {
            progress.finish()
            throw Failure.token("cannot list the objects on token '\(info.label)': \(error)")
        }
        progress.finish()
        let certificates = objects.filter { $0.type == .certificate }.compactMap { object -> (TokenObjectInfo, EIDASCertificate)? in
            guard let der = object.certificateDER, let parsed = try? EIDASCertificate(der: der) else { return nil }
            return (object, parsed)
        }
        func certificate(forKeyID id: [UInt8]?) -> EIDASCertificate? {
            guard let id else { return nil }
            return certificates.first { $0.0.id == id }?.1
        }
        let modulePath = base.modulePath ?? PKCS11Module.defaultModulePath() ?? "?"
        if options.has("--json") {
            print(listJSON(objects, base: base, info: info, modulePath: modulePath, mechanisms: mechanisms, certificate: certificate))
        } else {
            print(listText(objects, base: base, info: info, modulePath: modulePath, mechanisms: mechanisms, certificate: certificate), terminator: "")
        }
        return 0
    }

    static func typeName(_ type: PKCS11URI.ObjectType) -> String {
        switch type {
        case .privateKey: return "Private key"
        case .publicKey: return "Public key"
        case .certificate: return "Certificate"
        case .secretKey: return "Secret key"
        case .data: return "Data object"
        }
    }

    static func keyDescription(_ object: TokenObjectInfo) -> String {
        switch object.keyType {
        case "rsa": return "RSA \(object.bits.map(String.init) ?? "?") bits"
        case "ec": return "EC \(object.curve ?? "?")"
        case "ed25519": return "Ed25519"
        case let other?: return "key type \(other)"
        case nil: return "unknown key type"
        }
    }

    static func flagText(_ object: TokenObjectInfo) -> String {
        var parts: [String] = []
        if let sensitive = object.sensitive { parts.append(sensitive ? "sensitive" : "NOT SENSITIVE") }
        if let extractable = object.extractable { parts.append(extractable ? "EXTRACTABLE" : "not extractable") }
        if object.neverExtractable == true { parts.append("never extractable") }
        if let always = object.alwaysAuthenticate { parts.append(always ? "always-authenticate" : "no always-authenticate") }
        if object.canSign == false { parts.append("may not sign") }
        return parts.joined(separator: ", ")
    }

    static func expiryText(_ certificate: EIDASCertificate, now: Date = Date()) -> String {
        let days = certificate.daysUntilExpiry(at: now)
        let left = now > certificate.notAfter ? "EXPIRED" : "\(days) day\(days == 1 ? "" : "s") left"
        return "\(CertCommand.humanDate(certificate.notAfter)) (\(left))"
    }

    static func listText(_ objects: [TokenObjectInfo], base: PKCS11URI, info: TokenInfo, modulePath: String,
                         mechanisms: [ObjectHandle: [UInt]], certificate: ([UInt8]?) -> EIDASCertificate?) -> String {
        var lines: [String] = []
        func line(_ label: String, _ value: String) {
            lines.append("  " + label.padding(toLength: 14, withPad: " ", startingAt: 0) + value)
        }
        let counts = Dictionary(grouping: objects, by: \.type).mapValues(\.count)
        let summary = [PKCS11URI.ObjectType.privateKey, .publicKey, .secretKey, .certificate].compactMap { type -> String? in
            guard let count = counts[type] else { return nil }
            return "\(count) \(typeName(type).lowercased())\(count == 1 ? "" : "s")"
        }
        lines.append("Token '\(info.label)' (\(info.manufacturer) \(info.model), serial \(info.serialNumber)) in \(modulePath): "
                     + (summary.isEmpty ? "no key or certificate objects" : summary.joined(separator: ", ")))
        let order: [PKCS11URI.ObjectType] = [.privateKey, .publicKey, .secretKey, .certificate]
        for object in objects.sorted(by: { (order.firstIndex(of: $0.type)!, hex($0.id), $0.label ?? "") < (order.firstIndex(of: $1.type)!, hex($1.id), $1.label ?? "") }) {
            lines.append("")
            lines.append("\(typeName(object.type)) '\(object.label ?? "")' (id \(hex(object.id)))")
            line("URI:", objectURI(base: base, tokenLabel: info.label, label: object.label, id: object.id, type: object.type))
            switch object.type {
            case .certificate:
                guard let der = object.certificateDER, let parsed = try? EIDASCertificate(der: der) else {
                    line("Subject:", "(not a readable X.509 certificate)")
                    continue
                }
                line("Subject:", parsed.subject.rfc2253)
                line("Issuer:", parsed.issuer.rfc2253)
                line("Expires:", expiryText(parsed))
                let owner = objects.first { $0.type == .privateKey && $0.id != nil && $0.id == object.id }
                line("Key:", parsed.publicKey.description + (owner.map { " (private key '\($0.label ?? "")' has this id)" } ?? ""))
            default:
                line("Key:", keyDescription(object))
                let flags = flagText(object)
                if !flags.isEmpty { line("Flags:", flags) }
                if object.type == .privateKey {
                    if let parsed = certificate(object.id) {
                        line("Certificate:", "\(parsed.subject.rfc2253), expires \(expiryText(parsed))")
                    } else {
                        line("Certificate:", "none with this id (store one with 'keybridge keys import-cert')")
                    }
                    if object.extractable == true || object.sensitive == false {
                        line("WARNING:", "this key can leave the token; generate a new one with 'keybridge keys generate'")
                    }
                }
                if let usable = mechanisms[object.handle] {
                    line("Mechanisms:", usable.isEmpty ? "none for signing" : usable.map(MechanismNames.name).joined(separator: ", "))
                }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func listJSON(_ objects: [TokenObjectInfo], base: PKCS11URI, info: TokenInfo, modulePath: String,
                         mechanisms: [ObjectHandle: [UInt]], certificate: ([UInt8]?) -> EIDASCertificate?) -> String {
        func optional(_ value: Any?) -> Any { value ?? NSNull() }
        func certificateSummary(_ parsed: EIDASCertificate?) -> Any {
            guard let parsed else { return NSNull() }
            return [
                "subject": parsed.subject.rfc2253,
                "issuer": parsed.issuer.rfc2253,
                "notAfter": parsed.notAfter.formatted(.iso8601),
                "daysUntilExpiry": parsed.daysUntilExpiry(),
                "expired": Date() > parsed.notAfter,
            ] as [String: Any]
        }
        let entries: [[String: Any]] = objects.map { object in
            var entry: [String: Any] = [
                "type": object.type.rawValue,
                "uri": objectURI(base: base, tokenLabel: info.label, label: object.label, id: object.id, type: object.type),
                "label": optional(object.label),
                "id": optional(object.id.map { hex($0) }),
                "keyType": optional(object.keyType),
                "bits": optional(object.bits),
                "curve": optional(object.curve),
                "sensitive": optional(object.sensitive),
                "extractable": optional(object.extractable),
                "neverExtractable": optional(object.neverExtractable),
                "alwaysAuthenticate": optional(object.alwaysAuthenticate),
                "mechanisms": optional(mechanisms[object.handle].map { $0.map(MechanismNames.name) }),
            ]
            if object.type == .certificate {
                entry["certificate"] = certificateSummary(object.certificateDER.flatMap { try? EIDASCertificate(der: $0) })
            } else if object.type == .privateKey {
                entry["certificate"] = certificateSummary(certificate(object.id))
            } else {
                entry["certificate"] = NSNull()
            }
            return entry
        }
        let document: [String: Any] = [
            "token": ["label": info.label, "manufacturer": info.manufacturer, "model": info.model,
                      "serial": info.serialNumber, "module": modulePath] as [String: Any],
            "objects": entries,
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else {
            return "{}"
        }
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: - generate

    /// Options that would make a key leave the token, each with the reason it is refused.
    static let refusedGenerationOptions: [String: String] = {
        let reason = "keybridge never makes a key that can leave the token, so %@ is refused. Keys are always generated with CKA_TOKEN=true, CKA_SENSITIVE=true and CKA_EXTRACTABLE=false; to keep a backup, use the HSM's own key backup or cloning"
        var refused: [String: String] = [:]
        for option in ["--extractable", "--exportable", "--not-sensitive", "--no-sensitive", "--insensitive",
                       "--session", "--session-object", "--sensitive=false", "--allow-export"] {
            refused[option] = String(format: reason, option)
        }
        return refused
    }()

    static func generate(_ arguments: [String]) throws(Failure) -> Int32 {
        // "--sensitive=false" reaches the refusal by name; "--sensitive" and
        // "--non-extractable" ask for what happens anyway and are accepted.
        if let asked = arguments.first(where: { $0 == "--sensitive=false" || $0.hasPrefix("--extractable") }) {
            let name = asked == "--sensitive=false" ? asked : String(asked.prefix { $0 != "=" })
            throw Failure.refused(refusedGenerationOptions[name] ?? refusedGenerationOptions["--extractable"]!)
        }
        let options = try OptionReader(arguments, valued: ["--type", "--label", "--id", "--token", "--token-uri", "--module"],
                                       flags: ["--sensitive", "--non-extractable", "--no-extractable"],
                                       refused: refusedGenerationOptions)
        guard options.positional.isEmpty else { throw Failure.usage("'keys generate' takes no positional argument") }
        let typeText = try options.required("--type")
        guard let spec = KeyPairSpec(parsing: typeText) else {
            throw Failure.usage("unknown --type '\(typeText.prefix(20))'; use one of \(KeyPairSpec.accepted.joined(separator: ", "))")
        }
        let label = try options.required("--label")
        guard label.utf8.count <= 128, !label.contains(where: { $0.isNewline }) else {
            throw Failure.usage("--label must be one line of at most 128 bytes")
        }
        let id = try parseID(try options.required("--id"))
        guard let tokenText = try options.value("--token", "--token-uri") else {
            throw Failure.usage("--token is required: the token to create the key in, e.g. 'pkcs11:token=keybridge?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/path/to/pin'")
        }
        var base = try tokenURI(tokenText, module: try options.value("--module"))
        if base.object != nil || base.id != nil || base.type != nil {
            throw Failure.usage("--token names a token, not an object; drop object=, id= and type= from it (the key gets --label and --id)")
        }
        let (token, info) = try openToken(base)
        base.token = info.label
        let clashes: [TokenObjectInfo]
        do {
            clashes = try token.objects(label: label, id: id).compactMap { handle throws(PKCS11Error) in try token.describeObject(handle) }
        } catch {
            throw Failure.token("cannot search token '\(info.label)' for existing objects: \(error)")
        }
        if !clashes.isEmpty {
            // Name what clashes: the objects found may share only the id, or only the label.
            let sameLabel = clashes.contains { $0.label == label }
            let sameID = clashes.contains { $0.id == id }
            let clash = sameLabel && sameID ? "label '\(label)' and id \(hex(id)) are" : sameLabel ? "label '\(label)' is" : "id \(hex(id)) is"
            // In a fixed order (the token's own order varies): private keys first.
            let order: [PKCS11URI.ObjectType] = [.privateKey, .publicKey, .secretKey, .certificate, .data]
            let names = clashes.sorted { (order.firstIndex(of: $0.type) ?? 9, hex($0.id)) < (order.firstIndex(of: $1.type) ?? 9, hex($1.id)) }
                .map { "\(typeName($0.type).lowercased()) '\($0.label ?? "")' (id \(hex($0.id)))" }.joined(separator: ", ")
            throw Failure.token("\(clash) already used on token '\(info.label)', by \(names); nothing was generated. Choose another --label and --id (keybridge keys list shows what is there)")
        }
        let started = Date()
        let pair: GeneratedKeyPair
        do {
            pair = try ProgressLine().whileRunning("generating a \(spec) key pair on token '\(info.label)'") { () throws(PKCS11Error) -> GeneratedKeyPair in
                try token.generateKeyPair(spec, label: label, id: id)
            }
        } catch let error as PKCS11Error {
            throw Failure.token("\(error)")
        } catch {
            throw Failure.token("\(error)")
        }
        let seconds = Date().timeIntervalSince(started)
        let described = (try? token.describeObject(pair.privateKey)) ?? nil
        let flags = described.map(flagText) ?? "sensitive, not extractable"
        Output.raw(String(format: "keybridge: generated %@ key '%@' (id %@) on token '%@' in %.1f s: %@\n",
                          spec.description, label, hex(id), info.label, seconds, flags))
        print(objectURI(base: base, tokenLabel: info.label, label: label, id: id, type: .privateKey))
        return 0
    }

    // MARK: - csr

    static func csr(_ arguments: [String]) throws(Failure) -> Int32 {
        let options = try OptionReader(arguments, valued: ["--key", "--subject", "--eidas-role", "--nca", "--nca-name", "--org-id", "-o", "--output"],
                                       flags: ["--qwac", "--qseal"])
        guard options.positional.isEmpty else { throw Failure.usage("'keys csr' takes no positional argument; name the key with --key") }
        let keyText = try options.required("--key")
        guard keyText.hasPrefix("pkcs11:") else { throw Failure.usage("--key must be a pkcs11: URI of a token key") }
        if options.has("--qwac") && options.has("--qseal") { throw Failure.usage("give --qwac or --qseal, not both") }
        let kind: PSD2CertificateRequest.Kind = options.has("--qseal") ? .qseal : .qwac
        let ncaID = try options.required("--nca")
        guard PSD2CertificateRequest.isNCAIdentifier(ncaID) else { throw Failure.usage(PSD2CertificateRequest.ncaIdentifierAdvice(ncaID)) }
        guard let ncaName = try options.value("--nca-name") ?? knownNCANames[ncaID] else {
            throw Failure.usage("no name is known for the NCA '\(ncaID.prefix(20))'; give its full name with --nca-name, e.g. --nca-name 'Federal Financial Supervisory Authority'")
        }
        let request: PSD2CertificateRequest
        do {
            let subject = try PSD2CertificateRequest.parseSubject(try options.required("--subject"))
            let roles = try options.required("--eidas-role").split(separator: ",").map(String.init)
            request = try PSD2CertificateRequest(subject: subject, organizationIdentifier: try options.value("--org-id"), roles: roles,
                                                 ncaName: ncaName, ncaID: ncaID, kind: kind)
        } catch let error as CertificateRequestError {
            throw Failure.usage(error.reason)
        } catch let error as Failure {
            throw error
        } catch {
            throw Failure.usage("\(error)")
        }
        let key: ProviderKey
        do {
            key = try ProviderKey(uri: keyText)
        } catch {
            throw Failure.token("cannot open the key: \(error)")
        }
        let pem: String
        do {
            pem = try request.pem(signedBy: key)
        } catch {
            throw Failure.token("cannot make the request: \(error)")
        }
        if let path = try options.value("-o", "--output") {
            try writeAtomically(pem, to: path)
            Output.raw("keybridge: wrote a \(kind == .qwac ? "QWAC" : "QSealC") request for roles \(request.roles.joined(separator: ",")) (\(ncaID)) to \(path); send it to your QTSP\n")
        } else {
            print(pem, terminator: "")
        }
        return 0
    }

    /// NCA names known without `--nca-name` (ETSI TS 119 495 wants the authority's full name).
    static let knownNCANames: [String: String] = [
        "DE-BAFIN": "Federal Financial Supervisory Authority",
    ]

    // MARK: - import-cert

    static func importCertificate(_ arguments: [String]) throws(Failure) -> Int32 {
        let options = try OptionReader(arguments, valued: ["--chain", "--key", "--label"], flags: ["--replace"])
        guard options.positional.isEmpty else { throw Failure.usage("'keys import-cert' takes no positional argument; give --chain FILE and --key URI") }
        let chainPath = try options.required("--chain")
        let keyText = try options.required("--key")
        guard keyText.hasPrefix("pkcs11:") else { throw Failure.usage("--key must be a pkcs11: URI of a token key") }
        let pemBytes = try CertCommand.readFileForKeys(chainPath)
        let entries: [TokenCertificateImport.Entry]
        do {
            entries = try TokenCertificateImport.importChain(pem: String(decoding: pemBytes, as: UTF8.self), keyURI: keyText,
                                                             leafLabel: try options.value("--label"), replace: options.has("--replace"))
        } catch let error as TokenCertificateImport.Failure {
            switch error.kind {
            case "usage": throw Failure.usage(error.reason)
            case "certificate": throw Failure(status: 4, message: error.reason)
            default: throw Failure.token(error.reason)
            }
        } catch let error as Failure {
            throw error
        } catch {
            throw Failure.token("\(error)")
        }
        for entry in entries {
            print("\(entry.outcome): '\(entry.label)' (id \(entry.idHex)) \(entry.subject)")
        }
        return 0
    }
}

/// The signing mechanisms KeyBridge can use, by key type: the one definition `keys list` and
/// `doctor` both list a key's mechanisms from, so they show the same set in the same order.
enum SigningMechanisms {
    static let rsaPSS = [MechanismType.rsaPSS] + HashAlgorithm.allCases.map(\.rsaPSSMechanism)
    static let rsaPKCS1 = [MechanismType.rsaPKCS1] + HashAlgorithm.allCases.map(\.rsaPKCS1Mechanism)
    static let rsaRaw = [MechanismType.rsaRaw]
    static let ecdsa = [MechanismType.ecdsa] + HashAlgorithm.allCases.map(\.ecdsaMechanism)
    static let eddsa = [MechanismType.eddsa]

    /// Every signing mechanism for a key type as `TokenObjectInfo.keyType` names it.
    static func candidates(keyType: String?) -> [UInt] {
        switch keyType {
        case "rsa": return rsaPSS + rsaPKCS1 + rsaRaw
        case "ec": return ecdsa
        case "ed25519": return eddsa
        default: return []
        }
    }

    /// The candidates the token offers and the key allows (no `CKA_ALLOWED_MECHANISMS`: all).
    static func usable(keyType: String?, offered: Set<UInt>, allowed: [UInt]?) -> [UInt] {
        candidates(keyType: keyType).filter { offered.contains($0) && (allowed?.contains($0) ?? true) }
    }
}

extension CertCommand {
    /// The chain file for `keys import-cert`, with `cert inspect`'s messages.
    static func readFileForKeys(_ path: String) throws(KeysCommand.Failure) -> [UInt8] {
        do {
            return try readFile(path)
        } catch {
            throw KeysCommand.Failure(status: error.status, message: error.message)
        }
    }
}

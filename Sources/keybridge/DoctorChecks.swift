import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import OpenBanking
import PKCS11

/// The checks of `keybridge doctor`, run in order. Each records what it found; a check whose
/// prerequisite did not pass is recorded as skipped, naming the check it waits for.
final class Doctor {
    typealias Check = DoctorCommand.Check
    let options: DoctorCommand.Options
    private(set) var checks: [Check] = []

    // What earlier checks found, for the later ones.
    private var uri = PKCS11URI()
    private var module: PKCS11Module?
    private var token: Token?
    private var tokenInfo: TokenInfo?
    private var loggedIn = false
    private var key: PrivateKey?
    private var providerKey: ProviderKey?
    private var chain: [EIDASCertificate] = []
    private var verifiedChain: [EIDASCertificate] = []
    private var certificateMatches = false

    init(options: DoctorCommand.Options) {
        self.options = options
    }

    func run() -> [Check] {
        guard parseURI() else { return checks }
        checkModule()
        checkToken()
        checkPINFlags()
        checkLogin()
        checkKey()
        checkMechanisms()
        loadCertificate()
        checkCertificateMatch()
        checkChain()
        checkExpiry()
        checkQCStatements()
        checkBank()
        return checks
    }

    private func record(_ id: String, _ title: String, _ status: DoctorCommand.Status, _ detail: String, fix: String? = nil) {
        checks.append(Check(id: id, title: title, status: status, detail: detail, fix: fix))
    }

    private func skip(_ id: String, _ title: String, waitingFor: String) {
        record(id, title, .skipped, "skipped: needs '\(waitingFor)' to pass first")
    }

    private func passed(_ id: String) -> Bool {
        checks.first { $0.id == id }.map { $0.status == .passed || $0.status == .warning } ?? false
    }

    /// The first of `ids` that did not pass, if any.
    private func blocker(_ ids: String...) -> String? {
        for id in ids where !passed(id) { return checks.first { $0.id == id }?.title ?? id }
        return nil
    }

    // MARK: Token

    private func parseURI() -> Bool {
        let text = options.keyURI ?? options.tokenURI ?? ""
        do {
            uri = try PKCS11URI(parsing: text)
        } catch {
            record("uri", "URI", .failed, "the URI is malformed: \(error.reason)", fix: "correct the pkcs11: URI (RFC 7512)")
            return false
        }
        if let module = options.module {
            if let given = uri.modulePath, given != module {
                record("uri", "URI", .failed, "--module and the URI's module-path name different modules", fix: "give the module once")
                return false
            }
            uri.modulePath = module
        }
        return true
    }

    private func checkModule() {
        let title = "module loads"
        do {
            let loaded = try PKCS11Module.load(for: uri)
            module = loaded
            record("module", title, .passed, "\(loaded.path): \(loaded.info.manufacturer) \(loaded.info.description) \(loaded.info.libraryVersion)")
        } catch {
            record("module", title, .failed, error.reason,
                   fix: "point module-path (or KEYBRIDGE_PKCS11_MODULE) at the vendor's PKCS#11 library for this machine")
        }
    }

    private func checkToken() {
        let title = "token present"
        guard let module else { return skip("token", title, waitingFor: "module loads") }
        do {
            let found = try module.token(matching: uri)
            let info = try found.info()
            token = found
            tokenInfo = info
            record("token", title, .passed, "'\(info.label)' (\(info.manufacturer) \(info.model), serial \(info.serialNumber), slot \(found.slotID)), initialised")
        } catch {
            record("token", title, .failed, error.reason,
                   fix: "check token= in the URI against 'pkcs11-tool --module \(module.path) --list-token-slots'; initialise a new token with the vendor's tool (SoftHSM: softhsm2-util --init-token)")
        }
    }

    private func checkPINFlags() {
        let title = "PIN flags safe"
        guard let tokenInfo else { return skip("pin-flags", title, waitingFor: "token present") }
        let flags = tokenInfo.flags
        if flags.contains(.userPINLocked) {
            return record("pin-flags", title, .failed, "the user PIN is locked (CKF_USER_PIN_LOCKED)", fix: "the token's security officer must unlock or reset the user PIN")
        }
        if flags.contains(.userPINFinalTry) {
            return record("pin-flags", title, .failed, "one PIN attempt is left (CKF_USER_PIN_FINAL_TRY); KeyBridge will not log in and risk locking the token",
                          fix: "log in once by hand with a PIN you are sure of (pkcs11-tool --login --test), which resets the counter")
        }
        if flags.contains(.userPINToBeChanged) {
            return record("pin-flags", title, .failed, "the user PIN must be changed first (CKF_USER_PIN_TO_BE_CHANGED)", fix: "change it with pkcs11-tool --change-pin")
        }
        if flags.contains(.loginRequired) && !flags.contains(.userPINInitialized) {
            return record("pin-flags", title, .failed, "the user PIN is not initialised (no CKF_USER_PIN_INITIALIZED)", fix: "set the user PIN with the security officer (pkcs11-tool --init-pin)")
        }
        if flags.contains(.userPINCountLow) {
            return record("pin-flags", title, .warning, "a wrong PIN was entered since the last good login (CKF_USER_PIN_COUNT_LOW)",
                          fix: "find out who tried a wrong PIN; fix the PIN source before the token locks")
        }
        if !flags.contains(.loginRequired) {
            return record("pin-flags", title, .passed, "the token needs no login (no CKF_LOGIN_REQUIRED)")
        }
        record("pin-flags", title, .passed, "not locked, not on the final try, no change due" + (flags.contains(.protectedAuthenticationPath) ? "; PIN is entered on the device" : ""))
    }

    private func checkLogin() {
        let title = "login works"
        if let blocker = blocker("pin-flags") { return skip("login", title, waitingFor: blocker) }
        guard let token, let tokenInfo else { return skip("login", title, waitingFor: "token present") }
        guard tokenInfo.flags.contains(.loginRequired) else {
            loggedIn = true
            return record("login", title, .passed, "no login needed")
        }
        let resolved: ResolvedPIN?
        do {
            resolved = try PINResolver.resolve(for: uri, promptLabel: "token '\(tokenInfo.label)'", allowPrompt: true)
        } catch {
            return record("login", title, .failed, error.reason, fix: "make the pin-source file readable, or set KEYBRIDGE_PIN")
        }
        if resolved == nil && !tokenInfo.flags.contains(.protectedAuthenticationPath) {
            return record("login", title, .failed, "no PIN: the URI has no pin-source, KEYBRIDGE_PIN is not set and standard input is not a terminal",
                          fix: "add pin-source=file:/path/to/pin to the URI, or set KEYBRIDGE_PIN")
        }
        if let warning = resolved?.warning {
            KeyBridgeLog.warning(warning)
        }
        // One attempt, never repeated: Token.login refuses a PIN that failed before.
        do {
            try token.login(pin: resolved?.pin)
            loggedIn = true
            record("login", title, .passed, "logged in as the user with the PIN from \(resolved?.origin.rawValue ?? "the device's PIN pad") (one attempt)")
        } catch {
            let origin = resolved?.origin.rawValue ?? "the PIN pad"
            record("login", title, .failed, "\(error.returnValue.map { "\($0.name): " } ?? "")the token refused the PIN from \(origin); it was tried once and is not tried again",
                   fix: "correct the PIN in \(origin) before the next run; repeated wrong PINs lock the token")
        }
    }

    // MARK: Key

    private func checkKey() {
        let title = "key found, non-extractable"
        guard options.keyURI != nil else { return record("key", title, .skipped, "not asked for (--key URI)") }
        if let blocker = blocker("login") { return skip("key", title, waitingFor: blocker) }
        guard let token else { return skip("key", title, waitingFor: "token present") }
        do {
            let found = try PrivateKey.resolve(uri, allowPrompt: false)
            key = found
            var keyObject = uri
            keyObject.type = .privateKey
            let handles = try token.findObjects(matching: keyObject, objectClass: .privateKey)
            guard let handle = handles.first, let info = try token.describeObject(handle) else {
                return record("key", title, .failed, "the key was found but its attributes cannot be read", fix: "check the key with 'keybridge keys list'")
            }
            let description = "\(found.summary): \(KeysCommand.keyDescription(info)), \(KeysCommand.flagText(info))"
            if info.extractable == true || info.sensitive == false {
                return record("key", title, .failed, description,
                              fix: "this key can leave the token; generate a new one with 'keybridge keys generate' and get a new certificate for it")
            }
            if info.canSign == false {
                return record("key", title, .failed, description, fix: "the key may not sign (CKA_SIGN=false); generate a signing key with 'keybridge keys generate'")
            }
            if info.neverExtractable == false {
                return record("key", title, .warning, description + "; CKA_NEVER_EXTRACTABLE is false, so the key was extractable once (imported or changed)",
                              fix: "a key that was once exportable may exist elsewhere; prefer a key generated on the token")
            }
            record("key", title, .passed, description)
        } catch {
            record("key", title, .failed, error.reason, fix: "check object= and id= in the URI against 'keybridge keys list --token …'")
        }
    }

    private func checkMechanisms() {
        let title = "mechanisms for TLS 1.2/1.3"
        guard options.keyURI != nil else { return record("mechanisms", title, .skipped, "not asked for (--key URI)") }
        if let blocker = blocker("key") { return skip("mechanisms", title, waitingFor: blocker) }
        guard let key else { return }
        let usable: Set<UInt>
        do {
            usable = try key.usableMechanisms()
        } catch {
            return record("mechanisms", title, .failed, error.reason, fix: "check the token's mechanism list with pkcs11-tool -M")
        }
        func names(_ list: [UInt]) -> String { list.filter(usable.contains).map(MechanismNames.name).joined(separator: ", ") }
        switch key.keyType {
        case .rsa:
            let pss = SigningMechanisms.rsaPSS
            let pkcs1 = SigningMechanisms.rsaPKCS1
            let hasPSS = pss.contains(where: usable.contains)
            let hasPKCS1 = pkcs1.contains(where: usable.contains)
            let hasRaw = usable.contains(MechanismType.rsaRaw)
            if hasPSS {
                record("mechanisms", title, .passed, "TLS 1.2 and 1.3: RSA-PSS (\(names(pss)))" + (hasPKCS1 ? ", PKCS#1 v1.5 (\(names(pkcs1)))" : "")
                       + (hasRaw ? ", raw RSA (\(names(SigningMechanisms.rsaRaw)))" : ""))
            } else if hasRaw {
                record("mechanisms", title, .warning,
                       "no RSA-PSS mechanism: TLS 1.3 goes through raw RSA (CKM_RSA_X_509, PSS padding made in software)" + (hasPKCS1 ? "; TLS 1.2 uses \(names(pkcs1))" : ""),
                       fix: "enable CKM_RSA_PKCS_PSS on the HSM (or allow it in the key's CKA_ALLOWED_MECHANISMS), or use an EC key")
            } else if hasPKCS1 {
                record("mechanisms", title, .warning,
                       "no RSA-PSS and no raw RSA: TLS 1.3 is not possible with this key, only TLS 1.2 (\(names(pkcs1)))",
                       fix: "enable CKM_RSA_PKCS_PSS on the HSM, or use an EC key; banks that require TLS 1.3 will fail")
            } else {
                record("mechanisms", title, .failed, "the key can use no RSA signing mechanism (needs CKM_RSA_PKCS, CKM_RSA_PKCS_PSS or CKM_RSA_X_509)",
                       fix: "check CKA_ALLOWED_MECHANISMS of the key and the HSM's mechanism policy (pkcs11-tool -M)")
            }
        case .ec:
            let ecdsa = SigningMechanisms.ecdsa
            if ecdsa.contains(where: usable.contains) {
                record("mechanisms", title, .passed, "TLS 1.2 and 1.3: ECDSA (\(names(ecdsa)))")
            } else {
                record("mechanisms", title, .failed, "the key can use no ECDSA mechanism (needs CKM_ECDSA)", fix: "check CKA_ALLOWED_MECHANISMS and the HSM's mechanism policy")
            }
        case .ecEdwards:
            if usable.contains(MechanismType.eddsa) {
                record("mechanisms", title, .passed, "TLS 1.2 and 1.3: Ed25519 (CKM_EDDSA); the bank must accept ed25519 client certificates")
            } else {
                record("mechanisms", title, .failed, "the key can use no EdDSA mechanism (needs CKM_EDDSA)", fix: "check the HSM's mechanism policy")
            }
        }
    }

    // MARK: Certificate

    private var certificateSourceText = ""

    private func loadCertificate() {
        let title = "certificate found"
        if let source = options.certificate {
            certificateSourceText = CertCommand.displayName(source)
            do {
                if source.hasPrefix("pkcs11:") {
                    chain = try TokenCertificates.chain(uri: source).map { try EIDASCertificate(der: $0) }
                } else {
                    let bytes = try CertCommand.readFile(source)
                    chain = try EIDASCertificate.all(pem: String(decoding: bytes, as: UTF8.self))
                }
                record("certificate", title, .passed, "\(certificateSourceText): \(chainSummary(chain))")
            } catch let error as CertCommand.Failure {
                record("certificate", title, .failed, error.message, fix: "check the path given to --cert")
            } catch {
                record("certificate", title, .failed, "cannot read the certificate from \(certificateSourceText): \(error)",
                       fix: "give --cert a PEM file (leaf first, then intermediates) or a pkcs11: certificate URI")
            }
            return
        }
        guard options.keyURI != nil else { return record("certificate", title, .skipped, "not asked for (--key URI or --cert)") }
        if let blocker = blocker("key") { return skip("certificate", title, waitingFor: blocker) }
        guard let key, let id = key.id, !id.isEmpty, key.certificateDER != nil else {
            return record("certificate", title, .failed, "no --cert given and the token holds no certificate with the key's CKA_ID",
                          fix: "store the issued chain with 'keybridge keys import-cert --chain FILE --key URI', or give --cert FILE")
        }
        var certificateURI = uri
        certificateURI.object = nil
        certificateURI.id = id
        certificateURI.type = .certificate
        certificateURI.pinValue = nil
        certificateSourceText = "the token (id \(KeysCommand.hex(id)))"
        do {
            chain = try TokenCertificates.chain(uri: certificateURI.formatted()).map { try EIDASCertificate(der: $0) }
            record("certificate", title, .passed, "on \(certificateSourceText): \(chainSummary(chain))")
        } catch {
            record("certificate", title, .failed, "cannot read the key's certificate from the token: \(error)",
                   fix: "store the issued chain again with 'keybridge keys import-cert --replace'")
        }
    }

    private func chainSummary(_ certificates: [EIDASCertificate]) -> String {
        guard let leaf = certificates.first else { return "no certificate" }
        let extra = certificates.count - 1
        return "'\(leaf.subject.rfc2253)'" + (extra > 0 ? " and \(extra) more" : " (no intermediate)")
    }

    private func checkCertificateMatch() {
        let title = "certificate matches key"
        guard options.keyURI != nil else { return record("match", title, .skipped, "not asked for (--key URI)") }
        if let blocker = blocker("key", "certificate") { return skip("match", title, waitingFor: blocker) }
        guard let leaf = chain.first else { return }
        do {
            var keyURI = uri
            if keyURI.type == nil { keyURI.type = .privateKey }
            let opened = try ProviderKey(uri: keyURI.formatted(includingPINValue: true))
            providerKey = opened
            switch KeyCertificateCheck.match(key: opened, certificateDER: leaf.der) {
            case .matches:
                certificateMatches = true
                record("match", title, .passed, "a test signature by the token key verifies with the certificate's public key")
            case .differentPublicKey:
                record("match", title, .failed, "the certificate '\(leaf.subject.rfc2253)' was issued for another key: their public keys differ",
                       fix: "use the certificate issued for this key (keybridge keys list shows each key's certificate), or the key it was issued for")
            case .signatureDoesNotVerify:
                record("match", title, .failed, "the public keys are equal, but the token's test signature does not verify",
                       fix: "the token or its module is faulty; contact the HSM vendor")
            case let .cannotSign(reason):
                record("match", title, .failed, "the key cannot make a test signature: \(reason)", fix: "check the key's mechanisms and CKA_SIGN")
            }
        } catch {
            record("match", title, .failed, "cannot open the key through the provider: \(error)", fix: "run 'keybridge request -v' with this key for details")
        }
    }

    private func checkChain() {
        let title = "chain to a trusted root"
        if let blocker = blocker("certificate") { return skip("chain", title, waitingFor: blocker) }
        let result = KeyCertificateCheck.verifyChain(chain.map(\.der), trustFile: options.caFile)
        let trust = options.caFile.map { "the CAs in \($0)" } ?? "the system's trusted CAs"
        if result.complete {
            verifiedChain = result.certificates.compactMap { try? EIDASCertificate(der: $0) }
            return record("chain", title, .passed, "complete: " + result.subjects.map { "'\($0)'" }.joined(separator: " → ") + " (trusted by \(trust))")
        }
        let last = chain.last!
        if result.issuerMissing {
            record("chain", title, .failed, "incomplete: \(result.error ?? "") — no certificate for '\(last.issuer.rfc2253)', the issuer of '\(last.subject.rfc2253)', in \(certificateSourceText) or \(trust)",
                   fix: "add the missing intermediate after the leaf in the --cert file, or store it on the token with 'keybridge keys import-cert'; if it is the root, give it with --cacert")
        } else {
            record("chain", title, .failed, "not verified: \(result.error ?? "unknown error")", fix: "check that the chain's certificates belong together and that --cacert holds the QTSP's root")
        }
    }

    private func checkExpiry() {
        let title = "no expiry within \(options.expiryWarningDays) days"
        if let blocker = blocker("certificate") { return skip("expiry", title, waitingFor: blocker) }
        let now = Date()
        let certificates = verifiedChain.isEmpty ? chain : verifiedChain
        var expired: [String] = []
        var soon: [String] = []
        var notYet: [String] = []
        for certificate in certificates {
            let name = certificate.subject.commonName ?? certificate.subject.rfc2253
            if now > certificate.notAfter {
                expired.append("'\(name)' expired on \(CertCommand.humanDate(certificate.notAfter))")
            } else if now < certificate.notBefore {
                notYet.append("'\(name)' is valid only from \(CertCommand.humanDate(certificate.notBefore))")
            } else if certificate.daysUntilExpiry(at: now) < options.expiryWarningDays {
                soon.append("'\(name)' expires in \(certificate.daysUntilExpiry(at: now)) days (\(CertCommand.humanDate(certificate.notAfter)))")
            }
        }
        if !expired.isEmpty || !notYet.isEmpty {
            return record("expiry", title, .failed, (expired + notYet).joined(separator: "; "),
                          fix: "get a new certificate: 'keybridge keys csr' for the same key, then 'keybridge keys import-cert --replace'")
        }
        if !soon.isEmpty {
            return record("expiry", title, .warning, soon.joined(separator: "; "),
                          fix: "renew now: 'keybridge keys csr', send it to the QTSP, then 'keybridge keys import-cert --replace'")
        }
        let earliest = certificates.min { $0.notAfter < $1.notAfter }
        record("expiry", title, .passed, earliest.map { "earliest expiry: '\($0.subject.commonName ?? $0.subject.rfc2253)' in \($0.daysUntilExpiry(at: now)) days" } ?? "")
    }

    private func checkQCStatements() {
        let title = "PSD2 QCStatements"
        if let blocker = blocker("certificate") { return skip("psd2", title, waitingFor: blocker) }
        guard let leaf = chain.first else { return }
        guard let qc = leaf.qcStatements else {
            return record("psd2", title, .warning, "no QCStatements extension: not an eIDAS qualified certificate; PSD2 banks will refuse it",
                          fix: "request a QWAC from a QTSP with 'keybridge keys csr --qwac'")
        }
        var problems: [String] = []
        if !qc.compliance { problems.append("no QcCompliance") }
        if !qc.types.contains(.web) {
            problems.append(qc.types.contains(.eseal) ? "QcType eseal (a QSealC), but mTLS needs a QWAC (QcType web)" : "no QcType web")
        }
        guard let psd2 = qc.psd2 else {
            problems.append("no PSD2 statement (0.4.0.19495.2)")
            return record("psd2", title, .warning, problems.joined(separator: "; "), fix: "request the certificate again with roles: 'keybridge keys csr --eidas-role … --nca …'")
        }
        if psd2.roles.isEmpty { problems.append("the PSD2 statement lists no role") }
        let roles = psd2.roles.map { $0.standardName ?? $0.name }.joined(separator: ", ")
        let summary = "QcCompliance \(qc.compliance ? "yes" : "no"), QcType \(qc.types.map { $0.name ?? $0.rawValue }.joined(separator: ",")), roles \(roles.isEmpty ? "none" : roles), NCA \(psd2.ncaID), organizationIdentifier \(leaf.subject.organizationIdentifier ?? "none")"
        if leaf.subject.organizationIdentifier == nil { problems.append("no organizationIdentifier in the subject") }
        if problems.isEmpty {
            record("psd2", title, .passed, summary)
        } else {
            record("psd2", title, .warning, summary + ": " + problems.joined(separator: "; "),
                   fix: "ask the QTSP for a QWAC with QcCompliance, QcType web and your PSD2 roles ('keybridge keys csr --qwac')")
        }
    }

    // MARK: Bank

    private func checkBank() {
        let title = "handshake with the bank"
        guard let bank = options.bank else { return record("bank", title, .skipped, "not asked for (--bank URL)") }
        if let blocker = blocker("key", "match") { return skip("bank", title, waitingFor: blocker) }
        let chainSource: CertificateChainSource
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keybridge-doctor-\(getpid())")
        if let source = options.certificate {
            chainSource = CertificateChainSource(parsing: source)
        } else {
            // The chain read from the token, handed over as a private temporary PEM file.
            var pem = ""
            for certificate in chain {
                pem += "-----BEGIN CERTIFICATE-----\n" + Data(certificate.der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed]) + "\n-----END CERTIFICATE-----\n"
            }
            try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let file = directory.appendingPathComponent("chain.pem")
            try? Data(pem.utf8).write(to: file)
            chainSource = .pemFile(file.path)
        }
        defer { try? FileManager.default.removeItem(at: directory) }
        var keyURI = uri
        if keyURI.type == nil { keyURI.type = .privateKey }
        let configuration = TLSConfiguration(certificateChain: chainSource, key: .pkcs11(keyURI.formatted(includingPINValue: true)),
                                             trustRoots: options.caFile.map { .pemFile($0) } ?? .system)
        do {
            let client = try HTTPClient(configuration: configuration)
            client.connectTimeout = 15
            client.totalTimeout = 30
            let response = try client.send(HTTPRequest(method: "GET", url: bank))
            let tls = response.tls.map { "\($0.version), \($0.cipher)" + ($0.clientSignatureScheme.map { ", client signature \($0)" } ?? "") } ?? "TLS"
            record("bank", title, .passed, "\(tls); the bank answered HTTP \(response.status)")
        } catch {
            record("bank", title, .failed, error.reason,
                   fix: "run 'keybridge request -v' with the same key and certificate for the details; check that the bank trusts your QTSP")
        }
    }
}

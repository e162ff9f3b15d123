import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import OpenBanking
import PKCS11

/// One configured bank, ready to forward: its mTLS client (identity loaded and checked once, at
/// start) and its signer (key opened once).
final class BankRoute: @unchecked Sendable {
    // `client` serialises its own transfers; `signingLock` keeps one signature at a time on the
    // signing key. Everything else is immutable after init.
    let name: String
    let upstream: String
    /// The retry policy; `nil` is one attempt only.
    let retry: BrokerConfiguration.Retry?
    let timeoutSeconds: Int
    let client: HTTPClient
    let signer: BrokerSigner?
    /// The mTLS key as an OpenSSL key, for the health test signature (the TLS layer has its own).
    let mtlsKey: ProviderKey
    let mtlsKeyURI: String
    /// The certificates whose expiry `/healthz` reports: the mTLS leaf ("mtls") and the QSealC ("qsealc").
    let certificates: [(role: String, certificate: EIDASCertificate)]
    let signingLock = NSLock()
    /// The last key test, guarded by `healthLock` (held across the test so two probes cannot both sign).
    let healthLock = NSLock()
    var lastKeyTest: BankKeyTest?

    init(name: String, bank: BrokerConfiguration.Bank) throws(BrokerError) {
        self.name = name
        upstream = bank.upstream.hasSuffix("/") ? String(bank.upstream.dropLast()) : bank.upstream
        retry = bank.retry
        timeoutSeconds = bank.timeoutSeconds ?? 30
        let configuration = TLSConfiguration(certificateChain: CertificateChainSource(parsing: bank.cert), key: .pkcs11(bank.key),
                                             trustRoots: bank.caFile.map { .pemFile($0) } ?? .system)
        do {
            client = try HTTPClient(configuration: configuration)
        } catch {
            throw BrokerError("bank '\(name)': cannot load the mTLS identity: \(error.reason)")
        }
        client.connectTimeout = bank.connectTimeoutSeconds ?? min(timeoutSeconds, 10)
        client.totalTimeout = timeoutSeconds
        client.maximumConnections = bank.maxConnections ?? 8
        client.allowsHTTP2 = bank.http2 ?? true
        signer = try bank.signing.map { signing throws(BrokerError) in try BrokerSigner(bank: name, signing) }
        mtlsKeyURI = bank.key
        do {
            mtlsKey = try ProviderKey(uri: bank.key)
        } catch {
            throw BrokerError("bank '\(name)': cannot open the mTLS key for health tests: \(error.reason)")
        }
        var certificates = [(role: "mtls", certificate: try BankRoute.leafCertificate(bank.cert, bank: name))]
        if let der = signer?.certificateDER {
            do {
                certificates.append((role: "qsealc", certificate: try EIDASCertificate(der: der)))
            } catch {
                throw BrokerError("bank '\(name)': signing.cert is not a certificate: \(error.reason)")
            }
        }
        self.certificates = certificates
    }

    /// The leaf of the mTLS chain (a PEM file or a `pkcs11:` URI), for its expiry date.
    private static func leafCertificate(_ text: String, bank: String) throws(BrokerError) -> EIDASCertificate {
        do {
            if text.lowercased().hasPrefix("pkcs11:") {
                guard let leaf = try TokenCertificates.chain(uri: text).first else {
                    throw BrokerError("bank '\(bank)': the token holds no certificate for cert")
                }
                return try EIDASCertificate(der: leaf)
            }
            guard let contents = FileManager.default.contents(atPath: text) else {
                throw BrokerError("bank '\(bank)': cannot read the mTLS certificate \(KeyReference.redactedPath(text))")
            }
            return try EIDASCertificate(contents: Array(contents))
        } catch let error as BrokerError {
            throw error
        } catch {
            throw BrokerError("bank '\(bank)': cannot read the mTLS certificate's expiry: \(error)")
        }
    }

    /// The signature headers for the request as it will be sent.
    func signatureHeaders(_ request: HTTPRequestParts) throws(BrokerError) -> [(name: String, value: String)] {
        guard let signer else { return [] }
        signingLock.lock()
        defer { signingLock.unlock() }
        return try signer.headers(for: request)
    }
}

/// A bank's signing profile with its key opened.
struct BrokerSigner: @unchecked Sendable {
    // ProviderKey is used under BankRoute's signing lock only.
    enum Kind {
        case berlinGroup(BerlinGroupSigner)
        case rfc9421(HTTPMessageSigner)
        case jws(DetachedJWSSigner)
    }

    struct HTTPSignatureOptions: Decodable {
        var algorithm: String?
        var keyid: String?
        var components: [String]?
        var label: String?
        var lifetime: Double?
        var tag: String?
    }

    struct JWSOptions: Decodable {
        var kid: String?
        var keyid: String?
        var alg: String?
    }

    let kind: Kind
    /// The signing key, also used for the health test signature (under the signing lock).
    let key: ProviderKey
    /// The QSealC as DER, when configured.
    let certificateDER: [UInt8]?
    /// `TPP-Signature-Certificate` for rfc9421 and jws when a certificate is configured.
    let certificateHeader: [(name: String, value: String)]

    init(bank: String, _ signing: BrokerConfiguration.Signing) throws(BrokerError) {
        let key = try BrokerSigner.openKey(signing.key, bank: bank)
        let certificate = try signing.cert.map { text throws(BrokerError) in try BrokerSigner.certificateDER(text, bank: bank) }
        self.key = key
        certificateDER = certificate
        func options<Settings: Decodable>(_ type: Settings.Type) throws(BrokerError) -> Settings? {
            guard let data = signing.options?.data else { return nil }
            do {
                return try JSONDecoder().decode(Settings.self, from: data)
            } catch {
                throw BrokerError("bank '\(bank)': signing.options do not fit the \(signing.profile.rawValue) profile: \(error)")
            }
        }
        do {
            switch signing.profile {
            case .berlinGroup:
                guard let certificate else { throw BrokerError("bank '\(bank)': berlin-group needs signing.cert") }
                let profile = try options(BerlinGroupProfile.self) ?? .default
                kind = .berlinGroup(try BerlinGroupSigner(key: key, certificateDER: certificate, profile: profile))
                certificateHeader = []
            case .rfc9421:
                let settings = try options(HTTPSignatureOptions.self) ?? HTTPSignatureOptions()
                kind = .rfc9421(try BrokerSigner.httpMessageSigner(settings, key: key, withCertificate: certificate != nil, bank: bank))
                certificateHeader = certificate.map { [("TPP-Signature-Certificate", Data($0).base64EncodedString())] } ?? []
            case .jws:
                let settings = try options(JWSOptions.self) ?? JWSOptions()
                guard let keyID = settings.kid ?? settings.keyid else {
                    throw BrokerError("bank '\(bank)': jws needs signing.options.kid, the key id the bank knows the key by")
                }
                let name = settings.alg?.uppercased() ?? (key.algorithm == "EC" ? "ES256" : "PS256")
                guard let algorithm = JWSAlgorithm(name: name) else {
                    throw BrokerError("bank '\(bank)': signing.options.alg takes PS256, RS256 or ES256, not '\(name.prefix(20))'")
                }
                kind = .jws(try DetachedJWSSigner(key: key, algorithm: algorithm, protectedHeader: DetachedJWSHeader(keyID: keyID)))
                certificateHeader = certificate.map { [("TPP-Signature-Certificate", Data($0).base64EncodedString())] } ?? []
            }
        } catch let error as BrokerError {
            throw error
        } catch {
            throw BrokerError("bank '\(bank)': cannot set up \(signing.profile.rawValue) signing: \(error)")
        }
    }

    func headers(for request: HTTPRequestParts) throws(BrokerError) -> [(name: String, value: String)] {
        do {
            switch kind {
            case let .berlinGroup(signer):
                return try signer.headers(for: request)
            case let .rfc9421(signer):
                var signed = request
                signed.headers += certificateHeader
                try signer.sign(&signed)
                return certificateHeader + Array(signed.headers.dropFirst(request.headers.count + certificateHeader.count))
            case let .jws(signer):
                return certificateHeader + [try signer.header(for: request.body)]
            }
        } catch {
            throw BrokerError("cannot sign the request: \(error)")
        }
    }

    private static func openKey(_ uri: String, bank: String) throws(BrokerError) -> ProviderKey {
        do {
            // Logs in once with the URI's PIN source; the provider then finds the session.
            _ = try PrivateKey.resolve(try PKCS11URI(parsing: uri), allowPrompt: false)
            return try ProviderKey(uri: uri)
        } catch let error as PKCS11URIError {
            throw BrokerError("bank '\(bank)': signing.key is not a valid pkcs11: URI: \(error.reason)")
        } catch {
            throw BrokerError("bank '\(bank)': cannot open the signing key: \(error)")
        }
    }

    private static func certificateDER(_ text: String, bank: String) throws(BrokerError) -> [UInt8] {
        if text.lowercased().hasPrefix("pkcs11:") {
            do {
                guard let leaf = try TokenCertificates.chain(uri: text).first else {
                    throw BrokerError("bank '\(bank)': the token holds no certificate for signing.cert")
                }
                return leaf
            } catch let error as BrokerError {
                throw error
            } catch {
                throw BrokerError("bank '\(bank)': cannot read signing.cert from the token: \(error)")
            }
        }
        guard let contents = FileManager.default.contents(atPath: text) else {
            throw BrokerError("bank '\(bank)': cannot read the signing certificate \(KeyReference.redactedPath(text))")
        }
        do {
            return try EIDASCertificate(contents: Array(contents)).der
        } catch {
            throw BrokerError("bank '\(bank)': signing.cert is not a certificate: \(error.reason)")
        }
    }

    private static func httpMessageSigner(_ settings: HTTPSignatureOptions, key: ProviderKey, withCertificate: Bool,
                                          bank: String) throws(BrokerError) -> HTTPMessageSigner {
        let algorithm: HTTPSignatureAlgorithm
        if let name = settings.algorithm {
            guard let chosen = HTTPSignatureAlgorithm(name: name) else {
                throw BrokerError("bank '\(bank)': the RFC 9421 algorithm '\(name.prefix(30))' is not one of rsa-pss-sha512, rsa-v1_5-sha256, ecdsa-p256-sha256, ed25519")
            }
            algorithm = chosen
        } else {
            algorithm = key.algorithm == "RSA" ? .rsaPSSSHA512 : key.algorithm == "ED25519" ? .ed25519 : .ecdsaP256SHA256
        }
        var components: [HTTPSignatureComponent] = [.method, .targetURI, .field("content-digest")]
        if withCertificate { components.append(.field("tpp-signature-certificate")) }
        if let names = settings.components {
            let derived: [String: HTTPSignatureComponent] = [
                "@method": .method, "@target-uri": .targetURI, "@authority": .authority, "@scheme": .scheme,
                "@request-target": .requestTarget, "@path": .path, "@query": .query,
            ]
            components = try names.map { name throws(BrokerError) in
                guard name.hasPrefix("@") else { return .field(name) }
                guard let component = derived[name] else {
                    throw BrokerError("bank '\(bank)': the RFC 9421 component '\(name.prefix(30))' is not one of \(derived.keys.sorted().joined(separator: ", "))")
                }
                return component
            }
        }
        do {
            return try HTTPMessageSigner(key: key, algorithm: algorithm, keyID: settings.keyid, components: components,
                                         label: settings.label ?? "sig1", lifetime: settings.lifetime ?? 300, tag: settings.tag,
                                         contentDigest: components.contains(.field("content-digest")) ? .sha256 : nil)
        } catch {
            throw BrokerError("bank '\(bank)': cannot set up RFC 9421 signing: \(error.reason)")
        }
    }
}

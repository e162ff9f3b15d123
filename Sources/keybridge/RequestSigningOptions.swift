import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import OpenBanking
import PKCS11

/// `keybridge request --sign …`: PSD2 signature headers made with a token key (the QSealC's),
/// added after the caller's headers so the caller cannot replace them.
struct RequestSigningOptions {
    enum Format: String { case berlinGroup = "berlin-group", rfc9421, jws }

    var format: Format?
    var key: String?
    var certificate: String?
    var options: String?
    var keyID: String?
    var jwsAlgorithm: String?

    /// Reads one signing flag; returns false when the flag is not a signing flag.
    mutating func parse(_ flag: String, value: () throws(RequestCommand.UsageError) -> String) throws(RequestCommand.UsageError) -> Bool {
        switch flag {
        case "--sign-profile", "--sign":
            let text = try value()
            guard let chosen = Format(rawValue: text) else {
                throw RequestCommand.UsageError(message: "--sign-profile takes berlin-group, rfc9421 or jws, not '\(text.prefix(20))'")
            }
            format = chosen
        case "--sign-key": key = try value()
        case "--sign-cert": certificate = try value()
        case "--sign-options": options = try value()
        case "--sign-key-id", "--jws-kid": keyID = try value()
        case "--jws-alg": jwsAlgorithm = try value()
        default: return false
        }
        return true
    }

    func check() throws(RequestCommand.UsageError) {
        guard let format else {
            if key != nil || certificate != nil || options != nil || keyID != nil || jwsAlgorithm != nil {
                throw RequestCommand.UsageError(message: "--sign-key, --sign-cert, --sign-options, --sign-key-id and --jws-alg need --sign-profile berlin-group, rfc9421 or jws")
            }
            return
        }
        guard let key, key.lowercased().hasPrefix("pkcs11:") else {
            throw RequestCommand.UsageError(message: "--sign-profile \(format.rawValue) needs --sign-key with the pkcs11: URI of the signing (QSealC) key")
        }
        if format == .berlinGroup && certificate == nil {
            throw RequestCommand.UsageError(message: "--sign-profile berlin-group needs --sign-cert with the QSealC (a PEM file or a pkcs11: URI)")
        }
        if format == .jws && keyID == nil {
            throw RequestCommand.UsageError(message: "--sign-profile jws needs --sign-key-id with the key id (kid) the bank knows the key by")
        }
    }

    /// Per-bank settings for RFC 9421, from `--sign-options` JSON.
    struct HTTPSignatureOptions: Decodable {
        var algorithm: String?
        var keyid: String?
        var components: [String]?
        var label: String?
        var lifetime: Double?
        var tag: String?
    }

    /// The headers to add for this request, or none when no signing was asked for.
    func headers(method: String, url: String, headers: [(name: String, value: String)], body: Data?) throws(KeyBridgeError) -> [(name: String, value: String)] {
        guard let format, let key else { return [] }
        guard let parsedURL = URL(string: url) else { throw KeyBridgeError(.usage, "the URL cannot be parsed for signing") }
        let signingKey = try openKey(key)
        var request = HTTPRequestParts(method: method, url: parsedURL, headers: headers, body: body ?? Data())
        // RFC 9421 and JWS carry no certificate of their own; with --sign-cert the QSealC travels
        // in TPP-Signature-Certificate (covered by the RFC 9421 signature), as Berlin Group does.
        var certificateHeader: [(name: String, value: String)] = []
        if format != .berlinGroup, certificate != nil {
            certificateHeader = [("TPP-Signature-Certificate", Data(try certificateDER()).base64EncodedString())]
            request.headers += certificateHeader
        }
        do {
            switch format {
            case .berlinGroup:
                let profile: BerlinGroupProfile = try loadOptions() ?? .default
                let signer = try BerlinGroupSigner(key: signingKey, certificateDER: try certificateDER(), profile: profile)
                return try signer.headers(for: request)
            case .rfc9421:
                return certificateHeader + (try httpMessageSignatureHeaders(request, key: signingKey))
            case .jws:
                let algorithm = try jwsAlgorithm.map { name throws(KeyBridgeError) in
                    guard let chosen = JWSAlgorithm(name: name.uppercased()) else {
                        throw KeyBridgeError(.usage, "--jws-alg takes PS256, RS256 or ES256, not '\(name.prefix(20))'")
                    }
                    return chosen
                } ?? (signingKey.algorithm == "EC" ? .es256 : .ps256)
                let signer = try DetachedJWSSigner(key: signingKey, algorithm: algorithm,
                                                   protectedHeader: DetachedJWSHeader(keyID: keyID ?? ""))
                return certificateHeader + [try signer.header(for: request.body)]
            }
        } catch let error as KeyBridgeError {
            throw error
        } catch {
            throw KeyBridgeError(.key, "cannot sign the request (\(format.rawValue)): \(error)")
        }
    }

    private func openKey(_ uri: String) throws(KeyBridgeError) -> ProviderKey {
        do {
            // Resolving first logs in with the usual PIN sources (and a prompt on a terminal).
            _ = try PrivateKey.resolve(try PKCS11URI(parsing: uri))
        } catch let error as PKCS11URIError {
            throw KeyBridgeError(.usage, "the --sign-key URI is malformed: \(error.reason)")
        } catch let error as PKCS11Error {
            throw KeyBridgeError(.key, "the signing key: \(error.description)")
        } catch {
            throw KeyBridgeError(.key, "the signing key: \(error)")
        }
        do {
            return try ProviderKey(uri: uri)
        } catch {
            throw KeyBridgeError(.key, "cannot open the signing key through the provider: \(error)")
        }
    }

    private func certificateDER() throws(KeyBridgeError) -> [UInt8] {
        guard let certificate else { throw KeyBridgeError(.usage, "no --sign-cert given") }
        if certificate.lowercased().hasPrefix("pkcs11:") {
            do {
                guard let leaf = try TokenCertificates.chain(uri: certificate).first else {
                    throw KeyBridgeError(.certificate, "the token holds no certificate for --sign-cert")
                }
                return leaf
            } catch let error as KeyBridgeError {
                throw error
            } catch {
                throw KeyBridgeError(.certificate, "cannot read --sign-cert from the token: \(error)")
            }
        }
        guard let contents = FileManager.default.contents(atPath: certificate) else {
            throw KeyBridgeError(.file, "cannot read the signing certificate \(KeyReference.redactedPath(certificate)); check --sign-cert")
        }
        do {
            return try EIDASCertificate(contents: Array(contents)).der
        } catch {
            throw KeyBridgeError(.certificate, "--sign-cert \(certificate) is not a certificate: \(error.reason)")
        }
    }

    /// The `--sign-options` JSON decoded as this profile's settings; nil when none was given.
    private func loadOptions<Settings: Decodable>() throws(KeyBridgeError) -> Settings? {
        guard let options else { return nil }
        guard let data = FileManager.default.contents(atPath: options) else {
            throw KeyBridgeError(.file, "cannot read the signing options \(options); check --sign-options")
        }
        if let problem = SigningOptionsCheck.problem(in: data, profile: format?.rawValue ?? "") {
            throw KeyBridgeError(.usage, "--sign-options \(options): \(problem)")
        }
        do {
            return try JSONDecoder().decode(Settings.self, from: data)
        } catch {
            throw KeyBridgeError(.usage, "--sign-options \(options) does not fit the \(format?.rawValue ?? "") profile: \(SigningOptionsCheck.describe(error))")
        }
    }

    /// RFC 9421: by default @method, @target-uri, content-digest and content-type (when sent),
    /// created now and valid for five minutes; the algorithm follows the key type.
    private func httpMessageSignatureHeaders(_ request: HTTPRequestParts, key: ProviderKey) throws(KeyBridgeError) -> [(name: String, value: String)] {
        let settings: HTTPSignatureOptions = try loadOptions() ?? HTTPSignatureOptions()
        let algorithm: HTTPSignatureAlgorithm
        if let name = settings.algorithm {
            guard let chosen = HTTPSignatureAlgorithm(name: name) else {
                throw KeyBridgeError(.usage, "the RFC 9421 algorithm '\(name.prefix(30))' is not one of rsa-pss-sha512, rsa-v1_5-sha256, ecdsa-p256-sha256, ed25519")
            }
            algorithm = chosen
        } else {
            algorithm = key.algorithm == "RSA" ? .rsaPSSSHA512 : key.algorithm == "ED25519" ? .ed25519 : .ecdsaP256SHA256
        }
        var components: [HTTPSignatureComponent] = [.method, .targetURI, .field("content-digest")]
        if request.header("content-type") != nil { components.append(.field("content-type")) }
        if request.header("tpp-signature-certificate") != nil { components.append(.field("tpp-signature-certificate")) }
        if let names = settings.components {
            let derived: [String: HTTPSignatureComponent] = [
                "@method": .method, "@target-uri": .targetURI, "@authority": .authority, "@scheme": .scheme,
                "@request-target": .requestTarget, "@path": .path, "@query": .query,
            ]
            components = try names.map { name throws(KeyBridgeError) in
                guard name.hasPrefix("@") else { return .field(name) }
                guard let component = derived[name] else {
                    throw KeyBridgeError(.usage, "the RFC 9421 component '\(name.prefix(30))' is not one of \(derived.keys.sorted().joined(separator: ", "))")
                }
                return component
            }
        }
        do {
            let signer = try HTTPMessageSigner(key: key, algorithm: algorithm, keyID: settings.keyid ?? keyID, components: components,
                                               label: settings.label ?? "sig1", lifetime: settings.lifetime ?? 300, tag: settings.tag,
                                               contentDigest: components.contains(.field("content-digest")) ? .sha256 : nil)
            var signed = request
            try signer.sign(&signed)
            return Array(signed.headers.dropFirst(request.headers.count))
        } catch {
            throw KeyBridgeError(.key, "cannot sign the request (rfc9421): \(error.reason)")
        }
    }
}

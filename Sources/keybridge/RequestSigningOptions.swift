import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import OpenBanking
import PKCS11

/// `keybridge request --sign …`: PSD2 signature headers made with a token key (the QSealC's),
/// added after the caller's headers so the caller cannot replace them.
struct RequestSigningOptions {
    enum Format: String { case berlinGroup = "berlin-group", jws }

    var format: Format?
    var key: String?
    var certificate: String?
    var profile: String?
    var jwsKeyID: String?
    var jwsAlgorithm: String?

    /// Reads one signing flag; returns false when the flag is not a signing flag.
    mutating func parse(_ flag: String, value: () throws(RequestCommand.UsageError) -> String) throws(RequestCommand.UsageError) -> Bool {
        switch flag {
        case "--sign":
            let text = try value()
            guard let chosen = Format(rawValue: text) else {
                throw RequestCommand.UsageError(message: "--sign takes berlin-group or jws, not '\(text.prefix(20))'")
            }
            format = chosen
        case "--sign-key": key = try value()
        case "--sign-cert": certificate = try value()
        case "--sign-profile": profile = try value()
        case "--jws-kid": jwsKeyID = try value()
        case "--jws-alg": jwsAlgorithm = try value()
        default: return false
        }
        return true
    }

    func check() throws(RequestCommand.UsageError) {
        guard let format else {
            if key != nil || certificate != nil || profile != nil || jwsKeyID != nil || jwsAlgorithm != nil {
                throw RequestCommand.UsageError(message: "--sign-key, --sign-cert, --sign-profile and --jws-* need --sign berlin-group or --sign jws")
            }
            return
        }
        guard let key, key.lowercased().hasPrefix("pkcs11:") else {
            throw RequestCommand.UsageError(message: "--sign \(format.rawValue) needs --sign-key with the pkcs11: URI of the signing (QSealC) key")
        }
        if format == .berlinGroup && certificate == nil {
            throw RequestCommand.UsageError(message: "--sign berlin-group needs --sign-cert with the QSealC (a PEM file or a pkcs11: URI)")
        }
        if format == .jws && jwsKeyID == nil {
            throw RequestCommand.UsageError(message: "--sign jws needs --jws-kid with the key id the bank knows the key by")
        }
    }

    /// The headers to add for this request, or none when no signing was asked for.
    func headers(method: String, url: String, headers: [(name: String, value: String)], body: Data?) throws(KeyBridgeError) -> [(name: String, value: String)] {
        guard let format, let key else { return [] }
        guard let parsedURL = URL(string: url) else { throw KeyBridgeError(.usage, "the URL cannot be parsed for signing") }
        let signingKey = try openKey(key)
        let request = HTTPRequestParts(method: method, url: parsedURL, headers: headers, body: body ?? Data())
        do {
            switch format {
            case .berlinGroup:
                let profile = try loadProfile()
                let signer = try BerlinGroupSigner(key: signingKey, certificateDER: try certificateDER(), profile: profile)
                return try signer.headers(for: request)
            case .jws:
                let algorithm = try jwsAlgorithm.map { name throws(KeyBridgeError) in
                    guard let chosen = JWSAlgorithm(name: name.uppercased()) else {
                        throw KeyBridgeError(.usage, "--jws-alg takes PS256, RS256 or ES256, not '\(name.prefix(20))'")
                    }
                    return chosen
                } ?? (signingKey.algorithm == "EC" ? .es256 : .ps256)
                let signer = try DetachedJWSSigner(key: signingKey, algorithm: algorithm,
                                                   protectedHeader: DetachedJWSHeader(keyID: jwsKeyID ?? ""))
                return [try signer.header(for: request.body)]
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

    private func loadProfile() throws(KeyBridgeError) -> BerlinGroupProfile {
        guard let profile else { return .default }
        guard let data = FileManager.default.contents(atPath: profile) else {
            throw KeyBridgeError(.file, "cannot read the signing profile \(profile); check --sign-profile")
        }
        do {
            return try JSONDecoder().decode(BerlinGroupProfile.self, from: data)
        } catch {
            throw KeyBridgeError(.usage, "the signing profile \(profile) is not a valid Berlin Group profile (JSON): \(error.localizedDescription)")
        }
    }
}

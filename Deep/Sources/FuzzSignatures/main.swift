// Fuzzes the request-signature parsers and builders of OpenBanking.
//
// Input format (so seeds can be written by hand): the first line names the mode; for the
// request modes the next lines are the method, the URL and "Name: value" headers up to an
// empty line, and the rest is the body.
//
//   sf           the rest is an RFC 8941 dictionary (Signature-Input / Signature syntax)
//   rfc9421      a request carrying Signature-Input/Signature, verified with a MAC and an RSA key
//   mac          a request signed over all its parts with the MAC signer, then verified
//   berlin       a request carrying a Berlin Group Signature header: parsed, signing string
//                built, verified
//   digest       the rest is a Content-Digest value, checked against an empty body
//
// Any other first line treats the whole input as an RFC 8941 dictionary.
import Foundation
import FuzzSupport
@testable import OpenBanking
import PKCS11

/// A stand-in MAC for the fuzzer: SHA-256 over a fixed secret and the message. It is not HMAC,
/// and need not be: the invariants compare the signer with the verifier, both using this key.
struct FuzzMACKey: HMACSigningKey {
    let hash = HashAlgorithm.sha256
    func authenticationCode(for message: [UInt8]) throws -> [UInt8] {
        MessageDigest.sha256(Data("keybridge-fuzz-secret".utf8) + Data(message))
    }
}

/// draft-cavage-http-signatures-10 appendix C's RSA public key (also in PublishedVectorTests).
let rsaPublicKeyPEM = """
    -----BEGIN PUBLIC KEY-----
    MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCFENGw33yGihy92pDjZQhl0C3
    6rPJj+CvfSC8+q28hxA161QFNUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6
    Z4UMR7EOcpfdUE9Hf3m/hs+FUR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJw
    oYi+1hqp1fIekaxsyQIDAQAB
    -----END PUBLIC KEY-----

    """

let macKey = FuzzMACKey()
let rsaVerifier = try! HTTPMessageVerifier(key: PublicKeyVerifier(pem: rsaPublicKeyPEM), algorithm: .rsaV1_5SHA256)
let berlinVerifier = try! BerlinGroupVerifier()
/// A fixed clock, so a run is reproducible from its input alone.
let now = Date(timeIntervalSince1970: 1_618_884_475)

/// Reads "method\nURL\nName: value\n…\n\nbody"; nil when the URL does not parse.
func request(from data: Data) -> HTTPRequestParts? {
    let (head, body, unterminated) = messageParts(data)
    var lines = head
    if let unterminated, lines.count < 2 { lines.append(unterminated) }
    guard lines.count >= 2 else { return nil }
    let method = String(decoding: lines[0], as: UTF8.self)
    guard let url = URL(string: String(decoding: lines[1], as: UTF8.self)) else { return nil }
    let headers: [(name: String, value: String)] = lines.dropFirst(2).compactMap { line in
        let text = String(decoding: line, as: UTF8.self)
        guard let colon = text.firstIndex(of: ":") else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
    }
    return HTTPRequestParts(method: method, url: url, headers: headers, body: body)
}

/// RFC 8941 §4.1.2 dictionary serialization of what the parser returned.
func serialize(_ dictionary: StructuredFieldDictionary) -> String {
    dictionary.members.map { key, member in
        switch member {
        case let .item(item):
            if case .boolean(true) = item.bareItem { return key + StructuredFieldSerializer.serialize(item.parameters) }
            return key + "=" + StructuredFieldSerializer.serialize(item)
        case let .innerList(items, parameters):
            return key + "=" + StructuredFieldSerializer.serializeInnerList(items, parameters: parameters)
        }
    }.joined(separator: ", ")
}

/// Parse, serialize, parse again: the second serialization must equal the first.
func checkStructuredField(_ text: String) {
    guard let parsed = try? StructuredFieldParser.parseDictionary(text) else { return }
    let serialized = serialize(parsed)
    guard let again = try? StructuredFieldParser.parseDictionary(serialized) else {
        preconditionFailure("the serialization of a parsed dictionary does not parse: \(serialized.debugDescription)")
    }
    precondition(serialize(again) == serialized, "dictionary serialization is not stable: \(serialized.debugDescription)")
}

/// Received signatures: no crash, and a MAC that verifies is the MAC of the base it reports.
func checkReceived(_ request: HTTPRequestParts) {
    var verifier = try! HTTPMessageMACVerifier(key: macKey)
    verifier.requiresCreated = false
    if let verified = try? verifier.verify(request, now: now) {
        let mac = try! macKey.authenticationCode(for: Array(verified.signatureBase.utf8))
        let signatures = try! HTTPMessageVerifier.dictionary("Signature", in: request)
        guard case let .item(item)? = signatures[verified.label], case let .byteSequence(sent) = item.bareItem else {
            preconditionFailure("a verified signature has no byte sequence under its label")
        }
        precondition(sent == mac, "the verifier accepted a MAC that is not the MAC of the base it reports")
    }
    _ = try? rsaVerifier.verify(request, now: now)
}

/// Signs every part of the request with the MAC signer; the verifier must accept it and rebuild
/// the same signature base.
///
/// Signature fields already on the request are removed first: the signer adds its signature to
/// them, and one the fuzzer made unparseable would make any verification fail.
func checkRoundTrip(_ original: HTTPRequestParts) {
    var request = original
    request.headers.removeAll { ["signature", "signature-input"].contains($0.name.lowercased()) }
    var components: [HTTPSignatureComponent] = [.method, .targetURI, .authority, .scheme, .requestTarget, .path,
                                                .field("content-digest")]
    if request.url.query != nil { components.append(.query) }
    var seen: Set<String> = ["content-digest"]
    for header in request.headers {
        let name = header.name.lowercased()
        if seen.insert(name).inserted { components.append(.field(name)) }
    }
    for item in URLComponents(url: request.url, resolvingAgainstBaseURL: false)?.percentEncodedQueryItems ?? [] {
        if seen.insert("?" + item.name).inserted { components.append(.queryParameter(item.name)) }
    }
    guard let signer = try? HTTPMessageMACSigner(key: macKey, keyID: "fuzz", components: components, tag: "fuzz",
                                                 contentDigest: .sha256) else { return }
    var signed = request
    guard let signature = try? signer.sign(&signed, created: now) else { return }
    var verifier = try! HTTPMessageMACVerifier(key: macKey)
    verifier.label = signer.label
    verifier.checksContentDigest = true
    let verified: VerifiedHTTPMessageSignature
    do {
        verified = try verifier.verify(signed, now: now)
    } catch {
        preconditionFailure("a request signed by HTTPMessageMACSigner does not verify: \(error)\nbase:\n\(signature.signatureBase)")
    }
    precondition(verified.signatureBase == signature.signatureBase, "the verifier rebuilt another signature base")
    precondition(verified.components == components, "the verifier read other components than were signed")
}

/// Berlin Group: parse the Signature header and keyId, build the signing string, verify.
func checkBerlinGroup(_ request: HTTPRequestParts) {
    if let header = request.header("Signature"), let parsed = try? BerlinGroupSignatureHeader(parsing: header) {
        _ = try? BerlinGroupKeyID(parsing: parsed.keyId)
        if let signingString = try? BerlinGroupSigner.signingString(for: request, signedHeaders: parsed.headers) {
            let lines = signingString.split(separator: "\n", omittingEmptySubsequences: false)
            precondition(lines.count == parsed.headers.count, "the signing string has \(lines.count) lines for \(parsed.headers.count) headers")
            for (line, name) in zip(lines, parsed.headers) {
                precondition(line.hasPrefix(name.lowercased() + ": "), "signing-string line \(line.debugDescription) is not for \(name)")
            }
        }
    }
    _ = try? berlinVerifier.verify(request, now: now)
}

runLibFuzzer { input in
    let (mode, rest) = split(input)
    switch mode {
    case "sf":
        checkStructuredField(String(decoding: rest, as: UTF8.self))
    case "rfc9421":
        if let request = request(from: rest) { checkReceived(request) }
    case "mac":
        if let request = request(from: rest) { checkRoundTrip(request) }
    case "berlin":
        if let request = request(from: rest) { checkBerlinGroup(request) }
    case "digest":
        _ = try? ContentDigest.verify(String(decoding: rest, as: UTF8.self), body: Data())
    default:
        checkStructuredField(text(input))
    }
}

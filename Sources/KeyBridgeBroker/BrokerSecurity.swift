internal import COpenSSL
import Foundation

/// Checks bearer tokens against the configured SHA-256 hashes in constant time.
struct BrokerAuthenticator: Sendable {
    struct Caller: Sendable {
        var name: String
        var digest: [UInt8]
        var banks: Set<String>
    }

    let callers: [Caller]

    init(_ callers: [BrokerConfiguration.Caller]) {
        self.callers = callers.compactMap { caller in
            BrokerAuthenticator.digest(fromHex: caller.tokenSHA256).map { Caller(name: caller.name, digest: $0, banks: Set(caller.banks)) }
        }
    }

    /// The caller whose token is in `authorization` ("Bearer TOKEN"), or nil. Every configured
    /// hash is compared in full, so the time taken does not tell which one nearly matched.
    func caller(authorization: String?) -> Caller? {
        guard let authorization else { return nil }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let presented = BrokerAuthenticator.sha256(Array(parts[1].trimmingCharacters(in: .whitespaces).utf8))
        var found: Caller?
        for caller in callers {
            var difference: UInt8 = 0
            for (left, right) in zip(caller.digest, presented) { difference |= left ^ right }
            if difference == 0 && found == nil { found = caller }
        }
        return found
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { input in
            _ = SHA256(input.baseAddress, input.count, &digest)
        }
        return digest
    }

    static func digest(fromHex text: String) -> [UInt8]? {
        let bytes = Array(text.trimmingCharacters(in: .whitespaces).lowercased().utf8)
        guard bytes.count == 64 else { return nil }
        var digest: [UInt8] = []
        for index in stride(from: 0, to: 64, by: 2) {
            guard let byte = UInt8(String(decoding: bytes[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            digest.append(byte)
        }
        return digest
    }

    /// Hex of SHA-256 of a token, for writing configurations.
    static func hexDigest(ofToken token: String) -> String {
        sha256(Array(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

/// RFC 9110 syntax and the header rules of the broker.
enum BrokerHTTP {
    /// Connection-specific headers and the ones the broker sets itself: never forwarded.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "trailers", "transfer-encoding", "upgrade", "host", "authorization", "content-length", "expect",
    ]

    /// Headers the signer writes: a caller's copy is dropped before signing.
    static let signatureHeaders: Set<String> = [
        "digest", "signature", "signature-input", "tpp-signature-certificate", "x-jws-signature", "content-digest",
    ]

    /// Upstream response headers not passed back (the broker's server writes its own framing).
    static let responseDropped: Set<String> = hopByHop.union(["date", "content-length"])

    static func isToken(_ text: String) -> Bool {
        let extra = Set("!#$%&'*+-.^_`|~".utf8)
        return !text.isEmpty && text.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || extra.contains(byte)
        }
    }

    /// Visible characters, spaces, tabs and UTF-8 bytes; no CR, LF, NUL or other controls.
    static func isFieldValue(_ text: String) -> Bool {
        text.utf8.allSatisfy { byte in byte == 0x09 || (byte >= 0x20 && byte != 0x7F) }
    }

    static func isUnreservedPathByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            || byte == 0x2D || byte == 0x5F || byte == 0x2E
    }

    /// Methods that may be sent again after a connection failure (RFC 9110 section 9.2.2);
    /// POST and PATCH never are.
    static func isIdempotent(_ method: String) -> Bool {
        ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"].contains(method.uppercased())
    }

    /// The caller's X-Request-ID if it is usable: 1 to 128 visible ASCII characters, no quote
    /// or backslash (it goes into signatures and log lines). Otherwise nil, and the broker makes one.
    static func requestID(_ value: String?) -> String? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), (1...128).contains(value.utf8.count),
              value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C }) else { return nil }
        return value
    }
}

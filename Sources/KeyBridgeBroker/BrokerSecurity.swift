internal import COpenSSL
import Foundation

/// SHA-256 fetched once: `SHA256()` and `EVP_sha256()` make OpenSSL 3 look the algorithm up in
/// its provider store on every call, and the broker hashes the bearer token of every request.
// nonisolated(unsafe): set once at first use, never changed; an EVP_MD may be used from many
// threads at once.
nonisolated(unsafe) private let sha256Digest: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)

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
        guard let token = BrokerAuthenticator.bearerToken(authorization) else { return nil }
        let presented = BrokerAuthenticator.sha256(token)
        var found: Caller?
        for caller in callers {
            var difference: UInt8 = 0
            for (left, right) in zip(caller.digest, presented) { difference |= left ^ right }
            if difference == 0 && found == nil { found = caller }
        }
        return found
    }

    /// The token of "Bearer TOKEN" (scheme in any case, spaces and tabs around the token
    /// dropped), or nil. Byte-wise: it runs on every request.
    static func bearerToken(_ authorization: String?) -> [UInt8]? {
        guard let authorization else { return nil }
        var bytes = Array(authorization.utf8)[...]
        while bytes.first == UInt8(ascii: " ") { bytes = bytes.dropFirst() }
        guard let space = bytes.firstIndex(of: UInt8(ascii: " ")),
              bytes[..<space].elementsEqual("bearer".utf8, by: { $0 | 0x20 == $1 }) else { return nil }
        let token = BrokerHTTP.trimmingSpacesAndTabs(bytes[(space + 1)...])
        return token.isEmpty ? nil : Array(token)
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        bytes.withUnsafeBufferPointer { input in
            if EVP_Digest(input.baseAddress, input.count, &digest, &length, sha256Digest, nil) != 1 {
                _ = SHA256(input.baseAddress, input.count, &digest)
            }
        }
        return digest
    }

    /// A request ID when the caller sent none: a random (version 4) UUID in lower case. The
    /// bits come from `RequestIDGenerator`, seeded from the system's generator once: Foundation's
    /// `UUID()` asks the kernel on every call, and OpenSSL's `RAND_bytes` re-keys its AES DRBG
    /// on every call; each cost about 4 % of a busy broker's CPU time. A request ID must be
    /// unique, not secret (it is sent to the bank and logged).
    static func randomRequestID() -> String {
        var bytes = RequestIDGenerator.shared.next16()
        bytes[6] = bytes[6] & 0x0F | 0x40
        bytes[8] = bytes[8] & 0x3F | 0x80
        let hex = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { text.append(UInt8(ascii: "-")) }
            text += [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
        }
        return String(decoding: text, as: UTF8.self)
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

/// xoshiro256** (Blackman and Vigna), 256 bits of state seeded from the system generator, under
/// a lock: fast, with a period far beyond any number of requests.
final class RequestIDGenerator: @unchecked Sendable {
    // `state` is guarded by `lock`.
    static let shared = RequestIDGenerator()
    private let lock = NSLock()
    private var state: (UInt64, UInt64, UInt64, UInt64)

    init() {
        var system = SystemRandomNumberGenerator()
        state = (system.next(), system.next(), system.next(), system.next())
        if state == (0, 0, 0, 0) { state.0 = 1 }
    }

    private func nextWord() -> UInt64 {
        let result = (state.1 &* 5).rotatedLeft(7) &* 9
        let shifted = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= shifted
        state.3 = state.3.rotatedLeft(45)
        return result
    }

    /// 16 random bytes.
    func next16() -> [UInt8] {
        let (high, low) = lock.withLock { (nextWord(), nextWord()) }
        return (0..<8).map { UInt8(truncatingIfNeeded: high >> (8 * $0)) } + (0..<8).map { UInt8(truncatingIfNeeded: low >> (8 * $0)) }
    }
}

extension UInt64 {
    fileprivate func rotatedLeft(_ count: UInt64) -> UInt64 { self << count | self >> (64 - count) }
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
        // A switch, not a Set of the extra characters: this runs for every header of every request.
        !text.isEmpty && text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
                 UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
                 UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
                true
            default:
                false
            }
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
        guard let value else { return nil }
        let trimmed = trimmingSpacesAndTabs(Array(value.utf8)[...])
        guard (1...128).contains(trimmed.count), trimmed.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C }) else { return nil }
        return String(decoding: trimmed, as: UTF8.self)
    }

    /// The bytes without leading and trailing spaces and tabs (what `trimmingCharacters(in:
    /// .whitespaces)` does for ASCII, without Foundation's per-call cost).
    static func trimmingSpacesAndTabs(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var trimmed = bytes
        while let first = trimmed.first, first == 0x20 || first == 0x09 { trimmed = trimmed.dropFirst() }
        while let last = trimmed.last, last == 0x20 || last == 0x09 { trimmed = trimmed.dropLast() }
        return trimmed
    }
}

import Foundation

/// The RFC 9530 `Content-Digest` header: digests of the message content as a structured-field
/// dictionary of byte sequences, e.g. `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:`.
///
/// Signatures cover this header instead of the body itself, so checking it against the body
/// is what ties an RFC 9421 signature to the content.
public enum ContentDigest {
    /// The header name.
    public static let headerName = "Content-Digest"

    /// The digest algorithms KeyBridge computes and checks; their RFC 9530 registry keys.
    /// (The registry's deprecated ones, md5, sha, crc32c and the like, are not offered.)
    public enum Algorithm: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
        case sha256 = "sha-256"
        case sha512 = "sha-512"

        /// The registry key.
        public var description: String { rawValue }

        /// The digest of `body`.
        public func digest(_ body: Data) -> [UInt8] {
            switch self {
            case .sha256: return MessageDigest.sha256(body)
            case .sha512: return MessageDigest.sha512(body)
            }
        }
    }

    /// The header value for `body`, one member per algorithm in the order given.
    public static func headerValue(for body: Data, algorithms: [Algorithm] = [.sha256]) -> String {
        var seen = Set<Algorithm>()
        return algorithms.filter { seen.insert($0).inserted }
            .map { $0.rawValue + "=" + StructuredFieldSerializer.serialize(.byteSequence($0.digest(body))) }
            .joined(separator: ", ")
    }

    /// Checks a `Content-Digest` value against `body` and returns the algorithms that were checked.
    ///
    /// Every known algorithm in the header must match; unknown ones are ignored (RFC 9530
    /// lets senders add digests a receiver does not know). A header with no known algorithm
    /// fails, since it proves nothing about the body.
    @discardableResult
    public static func verify(_ headerValue: String, body: Data) throws(HTTPMessageSignatureError) -> [Algorithm] {
        let dictionary: StructuredFieldDictionary
        do {
            dictionary = try StructuredFieldParser.parseDictionary(headerValue)
        } catch {
            throw HTTPMessageSignatureError(.malformedField, "Content-Digest is not a structured-field dictionary: \(error)")
        }
        var checked: [Algorithm] = []
        for (key, member) in dictionary.members {
            guard let algorithm = Algorithm(rawValue: key) else { continue }
            guard case let .item(item) = member, case let .byteSequence(expected) = item.bareItem else {
                throw HTTPMessageSignatureError(.malformedField, "Content-Digest: the \(key) value must be a byte sequence (:base64:)")
            }
            guard expected == algorithm.digest(body) else {
                throw HTTPMessageSignatureError(.contentDigestMismatch,
                                                "Content-Digest: the \(key) digest does not match the body (the body was changed, or the digest was made over other bytes)")
            }
            checked.append(algorithm)
        }
        guard !checked.isEmpty else {
            let found = dictionary.keys.isEmpty ? "none" : dictionary.keys.joined(separator: ", ")
            throw HTTPMessageSignatureError(.noKnownDigestAlgorithm,
                                            "Content-Digest names no algorithm KeyBridge can check (found: \(found)); send sha-256 or sha-512")
        }
        return checked
    }
}

import Foundation

/// Checks a bank's signing options (`request --sign-options`, the broker's `signing.options`)
/// before they are decoded. The option types take defaults for missing keys and `JSONDecoder`
/// ignores unknown ones, so `"serialcase": "lower"` was silently dropped and the bank then
/// rejected every signature; and decoding errors surfaced as Swift `DecodingError` dumps.
public enum SigningOptionsCheck {
    /// The keys each profile reads, as the option types decode them.
    public static let knownKeys: [String: Set<String>] = [
        "berlin-group": ["digest", "signatureHash", "serialCase", "serialDigits", "issuerLabel", "percentEncodesIssuer",
                         "signsRequestTarget", "extraHeaders", "extraHeadersIfPresent", "algorithmLabel"],
        "rfc9421": ["algorithm", "keyid", "components", "label", "lifetime", "tag"],
        "jws": ["kid", "keyid", "alg"],
    ]

    /// One sentence naming what is wrong with `data` for `profile`, or nil when the options
    /// are a JSON object with known keys only.
    public static func problem(in data: Data, profile: String) -> String? {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            return "they are not valid JSON (\(detail.prefix(160))); write one JSON object such as {\"serialCase\": \"lower\"}"
        }
        guard let members = object as? [String: Any] else {
            return "they must be one JSON object of settings, such as {\"serialCase\": \"lower\"}"
        }
        guard let known = knownKeys[profile] else { return nil }
        for key in members.keys.sorted() where !known.contains(key) {
            let hint = known.first { $0.lowercased() == key.lowercased() }.map { " (did you mean \"\($0)\"?)" } ?? ""
            return "unknown setting \"\(key.prefix(40))\"\(hint); the \(profile) profile takes \(known.sorted().joined(separator: ", "))"
        }
        return nil
    }

    /// A `DecodingError` as one sentence with the setting it is about.
    public static func describe(_ error: any Error) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            keys.isEmpty ? "the options" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case let DecodingError.dataCorrupted(context):
            return "\(path(context.codingPath)): \(context.debugDescription)"
        case let DecodingError.typeMismatch(type, context):
            return "\(path(context.codingPath)) has the wrong type (\(type) expected)"
        case let DecodingError.valueNotFound(type, context):
            return "\(path(context.codingPath)) is null, but a \(type) is needed"
        case let DecodingError.keyNotFound(key, context):
            return "\(path(context.codingPath + [key])) is missing"
        default:
            return "\(error)"
        }
    }
}

import Foundation

/// Checks on the raw JSON of `broker.json` that the `Decodable` types cannot make: a misspelt
/// key (`"maxBodyByte"`) is refused instead of silently ignored, a name given twice in one
/// object (two banks called `acme`) is refused instead of one of them silently winning, and a
/// fraction where a whole number belongs is named instead of reported as invalid JSON.
enum BrokerConfigurationSchema {
    private static let topLevel: Set<String> = ["listen", "socketMode", "banks", "callers", "maxBodyBytes", "shutdownGraceSeconds"]
    private static let bank: Set<String> = ["upstream", "caFile", "key", "cert", "signing", "timeoutSeconds",
                                            "connectTimeoutSeconds", "maxConnections", "http2", "retry"]
    private static let signing: Set<String> = ["profile", "key", "cert", "options"]
    private static let retry: Set<String> = ["maxAttempts", "backoffMilliseconds", "maxBackoffMilliseconds"]
    private static let caller: Set<String> = ["name", "tokenSHA256", "banks"]
    private static let wholeNumbers: Set<String> = ["maxBodyBytes", "timeoutSeconds", "connectTimeoutSeconds", "maxConnections",
                                                    "maxAttempts", "backoffMilliseconds", "maxBackoffMilliseconds"]

    static func check(_ data: Data, source: String) throws(BrokerError) {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: data)
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            throw BrokerError("\(source) is not valid JSON (\(detail.prefix(200))); fix the syntax (comments and trailing commas are not allowed)")
        }
        if let duplicate = firstDuplicateKey(in: data) {
            throw BrokerError("\(source): \(duplicate.path) gives \"\(duplicate.key.prefix(40))\" twice; each name may appear once, so remove or rename one")
        }
        guard let top = root as? [String: Any] else { return }
        try checkObject(top, allowed: topLevel, path: "the top level", source: source)
        if let banks = top["banks"] as? [String: Any] {
            for (name, value) in banks {
                guard let object = value as? [String: Any] else { continue }
                try checkObject(object, allowed: bank, path: "banks.\(name.prefix(40))", source: source)
                if let signing = object["signing"] as? [String: Any] {
                    try checkObject(signing, allowed: Self.signing, path: "banks.\(name.prefix(40)).signing", source: source)
                }
                if let retry = object["retry"] as? [String: Any] {
                    try checkObject(retry, allowed: Self.retry, path: "banks.\(name.prefix(40)).retry", source: source)
                }
            }
        }
        if let callers = top["callers"] as? [Any] {
            for (index, value) in callers.enumerated() {
                guard let object = value as? [String: Any] else { continue }
                try checkObject(object, allowed: caller, path: "callers[\(index)]", source: source)
            }
        }
    }

    private static func checkObject(_ object: [String: Any], allowed: Set<String>, path: String, source: String) throws(BrokerError) {
        for key in object.keys.sorted() where !allowed.contains(key) {
            let hint = allowed.first { $0.lowercased() == key.lowercased() }.map { " (did you mean \"\($0)\"?)" } ?? ""
            throw BrokerError("\(source): unknown key \"\(key.prefix(40))\" in \(path)\(hint); the known keys there are \(allowed.sorted().joined(separator: ", "))")
        }
        for key in object.keys.sorted() where wholeNumbers.contains(key) {
            if let number = object[key] as? NSNumber, number.doubleValue.isFinite,
               number.doubleValue != number.doubleValue.rounded(.towardZero) {
                throw BrokerError("\(source): \(path == "the top level" ? "" : path + ".")\(key) must be a whole number, not \(number)")
            }
        }
    }

    /// The first object member name that appears twice in the same object, with where it is.
    /// A scan of the JSON text that the parser has already accepted: it only follows strings
    /// and nesting, so it needs no other JSON rules.
    static func firstDuplicateKey(in data: Data) -> (key: String, path: String)? {
        struct Level {
            var isObject: Bool
            var keys: Set<String> = []
            var expectsKey: Bool
            var name: String
            var lastKey: String?
        }
        let bytes = [UInt8](data)
        var stack: [Level] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                let start = index
                index += 1
                while index < bytes.count && bytes[index] != UInt8(ascii: "\"") {
                    index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
                }
                guard index < bytes.count else { return nil }
                if var level = stack.last, level.isObject, level.expectsKey {
                    // Decoding the quoted token resolves escapes, so "a" and "\u0061" are one name.
                    let token = Data(bytes[start...index])
                    let key = (try? JSONSerialization.jsonObject(with: token, options: .fragmentsAllowed) as? String) ?? ""
                    if !level.keys.insert(key).inserted { return (key, level.name) }
                    level.expectsKey = false
                    level.lastKey = key
                    stack[stack.count - 1] = level
                }
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let parent = stack.last
                let name: String
                if let parent, parent.isObject, let key = parent.lastKey {
                    name = parent.name == "the top level" ? key : "\(parent.name).\(key)"
                } else if let parent {
                    name = "\(parent.name)[]"
                } else {
                    name = "the top level"
                }
                stack.append(Level(isObject: byte == UInt8(ascii: "{"), expectsKey: byte == UInt8(ascii: "{"), name: name))
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
            case UInt8(ascii: ","):
                if stack.last?.isObject == true { stack[stack.count - 1].expectsKey = true }
            default:
                break
            }
            index += 1
        }
        return nil
    }
}

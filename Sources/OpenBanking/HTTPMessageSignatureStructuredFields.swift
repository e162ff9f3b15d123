import Foundation

// RFC 8941 structured field values: the subset that `Signature-Input`, `Signature` and
// `Content-Digest` are made of (dictionaries, inner lists, items with parameters). The parser
// is strict on purpose: a lenient one would let two implementations read the same header
// differently, and then sign or verify different bases.

/// A bare item (RFC 8941 §3.3).
enum StructuredFieldBareItem: Equatable, Sendable {
    case integer(Int64)
    /// Kept as its canonical text (integer part, ".", fraction without trailing zeros), since
    /// these headers never compute with decimals and must only serialize them back unchanged.
    case decimal(String)
    case string(String)
    case token(String)
    case byteSequence([UInt8])
    case boolean(Bool)
}

/// Parameters keep their order: the signature base serializes them back in the order received.
typealias StructuredFieldParameters = [(key: String, value: StructuredFieldBareItem)]

/// An item with its parameters.
struct StructuredFieldItem: Sendable {
    var bareItem: StructuredFieldBareItem
    var parameters: StructuredFieldParameters = []

    func parameter(_ key: String) -> StructuredFieldBareItem? {
        parameters.first { $0.key == key }?.value
    }
}

/// A dictionary member: an item or an inner list.
enum StructuredFieldMember: Sendable {
    case item(StructuredFieldItem)
    case innerList([StructuredFieldItem], parameters: StructuredFieldParameters)
}

/// An ordered dictionary; a repeated key keeps its first position and its last value (RFC 8941 §4.2.2).
struct StructuredFieldDictionary: Sendable {
    private(set) var members: [(key: String, member: StructuredFieldMember)] = []

    subscript(key: String) -> StructuredFieldMember? {
        members.first { $0.key == key }?.member
    }

    var keys: [String] { members.map(\.key) }

    mutating func set(_ key: String, _ member: StructuredFieldMember) {
        if let index = members.firstIndex(where: { $0.key == key }) {
            members[index].member = member
        } else {
            members.append((key, member))
        }
    }
}

/// A parse failure: what was expected and where (an offset into the field value).
struct StructuredFieldSyntaxError: Error, Sendable, CustomStringConvertible {
    var message: String
    var offset: Int
    var description: String { "\(message) at offset \(offset)" }
}

/// Parses RFC 8941 field values from their ASCII bytes.
struct StructuredFieldParser {
    private let bytes: [UInt8]
    private var position = 0

    private init(_ text: String) { bytes = Array(text.utf8) }

    /// Parses a whole field value as a dictionary.
    static func parseDictionary(_ text: String) throws(StructuredFieldSyntaxError) -> StructuredFieldDictionary {
        var parser = StructuredFieldParser(text)
        try parser.rejectNonASCII()
        parser.skipSpaces()
        let dictionary = try parser.dictionary()
        parser.skipSpaces()
        guard parser.atEnd else { throw parser.failure("unexpected character after the dictionary") }
        return dictionary
    }

    // MARK: - Grammar (RFC 8941 §4.2)

    private mutating func dictionary() throws(StructuredFieldSyntaxError) -> StructuredFieldDictionary {
        var result = StructuredFieldDictionary()
        while !atEnd {
            let key = try key()
            if peek == UInt8(ascii: "=") {
                position += 1
                result.set(key, try itemOrInnerList())
            } else {
                // A bare key means boolean true, which may still carry parameters.
                result.set(key, .item(StructuredFieldItem(bareItem: .boolean(true), parameters: try parameters())))
            }
            skipOptionalWhitespace()
            if atEnd { return result }
            guard peek == UInt8(ascii: ",") else { throw failure("expected \",\" between dictionary members") }
            position += 1
            skipOptionalWhitespace()
            if atEnd { throw failure("a dictionary must not end with \",\"") }
        }
        return result
    }

    private mutating func itemOrInnerList() throws(StructuredFieldSyntaxError) -> StructuredFieldMember {
        if peek == UInt8(ascii: "(") {
            let (items, parameters) = try innerList()
            return .innerList(items, parameters: parameters)
        }
        return .item(try item())
    }

    private mutating func innerList() throws(StructuredFieldSyntaxError) -> ([StructuredFieldItem], StructuredFieldParameters) {
        position += 1 // "("
        var items: [StructuredFieldItem] = []
        while !atEnd {
            skipSpaces()
            if peek == UInt8(ascii: ")") {
                position += 1
                return (items, try parameters())
            }
            items.append(try item())
            if atEnd { break }
            guard peek == UInt8(ascii: " ") || peek == UInt8(ascii: ")") else {
                throw failure("expected a space or \")\" after an inner-list item")
            }
        }
        throw failure("the inner list has no closing \")\"")
    }

    private mutating func item() throws(StructuredFieldSyntaxError) -> StructuredFieldItem {
        let bare = try bareItem()
        return StructuredFieldItem(bareItem: bare, parameters: try parameters())
    }

    private mutating func parameters() throws(StructuredFieldSyntaxError) -> StructuredFieldParameters {
        var result: StructuredFieldParameters = []
        while peek == UInt8(ascii: ";") {
            position += 1
            skipSpaces()
            let key = try key()
            var value = StructuredFieldBareItem.boolean(true)
            if peek == UInt8(ascii: "=") {
                position += 1
                value = try bareItem()
            }
            if let index = result.firstIndex(where: { $0.key == key }) {
                result[index].value = value
            } else {
                result.append((key, value))
            }
        }
        return result
    }

    private mutating func key() throws(StructuredFieldSyntaxError) -> String {
        guard let first = peek, Self.isLowercaseAlpha(first) || first == UInt8(ascii: "*") else {
            throw failure("expected a key (a lower-case letter or \"*\" first)")
        }
        let start = position
        position += 1
        while let byte = peek, Self.isLowercaseAlpha(byte) || Self.isDigit(byte) || "_-.*".utf8.contains(byte) {
            position += 1
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private mutating func bareItem() throws(StructuredFieldSyntaxError) -> StructuredFieldBareItem {
        guard let first = peek else { throw failure("expected an item, found the end of the value") }
        switch first {
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        case UInt8(ascii: "\""): return try string()
        case UInt8(ascii: ":"): return try byteSequence()
        case UInt8(ascii: "?"): return try boolean()
        case UInt8(ascii: "*"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"): return token()
        default: throw failure("expected an item (number, string, token, byte sequence or boolean)")
        }
    }

    private mutating func number() throws(StructuredFieldSyntaxError) -> StructuredFieldBareItem {
        let start = position
        var negative = false
        if peek == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        guard let first = peek, Self.isDigit(first) else { throw failure("expected a digit") }
        var integerDigits: [UInt8] = []
        var fractionDigits: [UInt8]?
        while let byte = peek {
            if Self.isDigit(byte) {
                if fractionDigits != nil { fractionDigits!.append(byte) } else { integerDigits.append(byte) }
            } else if byte == UInt8(ascii: "."), fractionDigits == nil {
                guard integerDigits.count <= 12 else { throw failure("a decimal has at most 12 integer digits") }
                fractionDigits = []
            } else {
                break
            }
            position += 1
            if fractionDigits == nil, integerDigits.count > 15 { throw failure("an integer has at most 15 digits") }
        }
        guard var fraction = fractionDigits else {
            let value = Int64(String(decoding: integerDigits, as: UTF8.self))!
            return .integer(negative ? -value : value)
        }
        guard !fraction.isEmpty else {
            position = start
            throw failure("a decimal needs a digit after \".\"")
        }
        guard fraction.count <= 3 else { throw failure("a decimal has at most 3 fraction digits") }
        while fraction.count > 1, fraction.last == UInt8(ascii: "0") { fraction.removeLast() }
        let integerPart = String(Int64(String(decoding: integerDigits, as: UTF8.self))!)
        return .decimal((negative ? "-" : "") + integerPart + "." + String(decoding: fraction, as: UTF8.self))
    }

    private mutating func string() throws(StructuredFieldSyntaxError) -> StructuredFieldBareItem {
        position += 1 // opening quote
        var output: [UInt8] = []
        while let byte = peek {
            position += 1
            switch byte {
            case UInt8(ascii: "\\"):
                guard let escaped = peek, escaped == UInt8(ascii: "\"") || escaped == UInt8(ascii: "\\") else {
                    throw failure("only \\\" and \\\\ may be escaped in a string")
                }
                output.append(escaped)
                position += 1
            case UInt8(ascii: "\""):
                return .string(String(decoding: output, as: UTF8.self))
            case 0x20...0x7E:
                output.append(byte)
            default:
                position -= 1
                throw failure("a string may only hold printable ASCII")
            }
        }
        throw failure("the string has no closing quote")
    }

    private mutating func token() -> StructuredFieldBareItem {
        let start = position
        position += 1
        while let byte = peek, Self.isTokenCharacter(byte) || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "/") {
            position += 1
        }
        return .token(String(decoding: bytes[start..<position], as: UTF8.self))
    }

    private mutating func byteSequence() throws(StructuredFieldSyntaxError) -> StructuredFieldBareItem {
        position += 1 // opening colon
        let start = position
        while let byte = peek, byte != UInt8(ascii: ":") {
            guard Self.isAlphanumeric(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "=") else {
                throw failure("a byte sequence may only hold base64 characters")
            }
            position += 1
        }
        guard !atEnd else { throw failure("the byte sequence has no closing \":\"") }
        var text = String(decoding: bytes[start..<position], as: UTF8.self)
        position += 1 // closing colon
        // RFC 8941 §4.2.7 asks parsers not to fail on missing "=" padding.
        if !text.contains("=") {
            text += String(repeating: "=", count: (4 - text.count % 4) % 4)
        }
        guard let decoded = Data(base64Encoded: text) else {
            position = start
            throw failure("the byte sequence is not valid base64")
        }
        return .byteSequence(Array(decoded))
    }

    private mutating func boolean() throws(StructuredFieldSyntaxError) -> StructuredFieldBareItem {
        position += 1 // "?"
        switch peek {
        case UInt8(ascii: "1"): position += 1; return .boolean(true)
        case UInt8(ascii: "0"): position += 1; return .boolean(false)
        default: throw failure("a boolean is ?0 or ?1")
        }
    }

    // MARK: - Helpers

    private var atEnd: Bool { position >= bytes.count }
    private var peek: UInt8? { atEnd ? nil : bytes[position] }

    private mutating func skipSpaces() {
        while peek == UInt8(ascii: " ") { position += 1 }
    }

    private mutating func skipOptionalWhitespace() {
        while peek == UInt8(ascii: " ") || peek == UInt8(ascii: "\t") { position += 1 }
    }

    private func rejectNonASCII() throws(StructuredFieldSyntaxError) {
        if let index = bytes.firstIndex(where: { $0 > 0x7E || ($0 < 0x20 && $0 != UInt8(ascii: "\t")) }) {
            throw StructuredFieldSyntaxError(message: "structured fields hold only printable ASCII", offset: index)
        }
    }

    private func failure(_ message: String) -> StructuredFieldSyntaxError {
        StructuredFieldSyntaxError(message: message, offset: position)
    }

    static func isLowercaseAlpha(_ byte: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) }
    static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
    static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLowercaseAlpha(byte) || isDigit(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    /// RFC 9110 tchar.
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        isAlphanumeric(byte) || "!#$%&'*+-.^_`|~".utf8.contains(byte)
    }
}

/// Serializes items and inner lists (RFC 8941 §4.1), the form the signature base uses.
enum StructuredFieldSerializer {
    static func serialize(_ bare: StructuredFieldBareItem) -> String {
        switch bare {
        case let .integer(value): return String(value)
        case let .decimal(text): return text
        case let .string(text): return quoted(text)
        case let .token(text): return text
        case let .byteSequence(bytes): return ":" + Data(bytes).base64EncodedString() + ":"
        case let .boolean(value): return value ? "?1" : "?0"
        }
    }

    static func serialize(_ parameters: StructuredFieldParameters) -> String {
        parameters.map { parameter in
            // A true boolean parameter is written as the bare key.
            if case .boolean(true) = parameter.value { return ";" + parameter.key }
            return ";" + parameter.key + "=" + serialize(parameter.value)
        }.joined()
    }

    static func serialize(_ item: StructuredFieldItem) -> String {
        serialize(item.bareItem) + serialize(item.parameters)
    }

    static func serializeInnerList(_ items: [StructuredFieldItem], parameters: StructuredFieldParameters) -> String {
        "(" + items.map { serialize($0) }.joined(separator: " ") + ")" + serialize(parameters)
    }

    /// An sf-string; the caller has checked that `text` is printable ASCII.
    static func quoted(_ text: String) -> String {
        var output = "\""
        for character in text {
            if character == "\"" || character == "\\" { output.append("\\") }
            output.append(character)
        }
        return output + "\""
    }

    /// Whether `text` can be an sf-string (printable ASCII only).
    static func isValidString(_ text: String) -> Bool {
        text.utf8.allSatisfy { (0x20...0x7E).contains($0) }
    }

    /// Whether `text` is a valid dictionary key (also the form of a signature label).
    static func isValidKey(_ text: String) -> Bool {
        guard let first = text.utf8.first, StructuredFieldParser.isLowercaseAlpha(first) || first == UInt8(ascii: "*") else { return false }
        return text.utf8.allSatisfy {
            StructuredFieldParser.isLowercaseAlpha($0) || StructuredFieldParser.isDigit($0) || "_-.*".utf8.contains($0)
        }
    }
}

import Foundation

/// An RFC 7512 `pkcs11:` URI: which library, slot, token and object to use, and optionally how
/// to find the module and the PIN.
///
/// Text attributes hold percent-decoded values. `id` holds raw bytes. `pinValue` is a secret:
/// `description`, `debugDescription`, the reflection mirror and every `PKCS11URIError` leave it
/// out, and `formatted()` writes it only when asked to.
public struct PKCS11URI: Sendable, Hashable {
    /// The `type` attribute: the object class it selects.
    public enum ObjectType: String, Sendable, Hashable, CaseIterable {
        /// `type=cert` (`CKO_CERTIFICATE`)
        case certificate = "cert"
        /// `type=data` (`CKO_DATA`)
        case data
        /// `type=private` (`CKO_PRIVATE_KEY`)
        case privateKey = "private"
        /// `type=public` (`CKO_PUBLIC_KEY`)
        case publicKey = "public"
        /// `type=secret-key` (`CKO_SECRET_KEY`)
        case secretKey = "secret-key"
    }

    /// The `library-version` attribute: `M` or `M.N`, as in the module's `CK_VERSION`.
    public struct LibraryVersion: Sendable, Hashable, CustomStringConvertible {
        /// The major version, 0...255.
        public var major: Int
        /// The minor version, 0...255, or `nil` when the URI gives only the major version.
        public var minor: Int?

        public init(major: Int, minor: Int? = nil) {
            self.major = major
            self.minor = minor
        }

        /// `M` or `M.N`, as written in a URI.
        public var description: String {
            if let minor { return "\(major).\(minor)" }
            return "\(major)"
        }
    }

    /// A vendor attribute (`x-name=value`), kept so that a URI formats back to what was parsed.
    public struct VendorAttribute: Sendable, Hashable {
        /// The attribute name, including its `x-` prefix.
        public let name: String
        /// The percent-decoded value.
        public var value: String

        /// Checks that `name` is `x-` followed by letters, digits, `-` or `_`, so that the
        /// formatted URI parses again.
        public init(name: String, value: String) throws(PKCS11URIError) {
            guard PKCS11URI.isVendorAttributeName(name) else {
                throw PKCS11URIError(code: .malformedAttribute,
                                     reason: "vendor attribute name \(PKCS11URI.quotedName(name)) in a PKCS#11 URI must be 'x-' followed by letters, digits, '-' or '_'; rename it, for example to 'x-\(PKCS11URI.suggestedVendorSuffix(name))'")
            }
            self.name = name
            self.value = value
        }
    }

    // MARK: Path attributes

    /// `token`: the token label (`CK_TOKEN_INFO.label`).
    public var token: String?
    /// `manufacturer`: the token manufacturer (`CK_TOKEN_INFO.manufacturerID`).
    public var manufacturer: String?
    /// `model`: the token model (`CK_TOKEN_INFO.model`).
    public var model: String?
    /// `serial`: the token serial number (`CK_TOKEN_INFO.serialNumber`).
    public var serial: String?
    /// `slot-id`: the decimal `CK_SLOT_ID`.
    public var slotID: UInt64?
    /// `slot-description`: `CK_SLOT_INFO.slotDescription`.
    public var slotDescription: String?
    /// `slot-manufacturer`: `CK_SLOT_INFO.manufacturerID`.
    public var slotManufacturer: String?
    /// `library-manufacturer`: `CK_INFO.manufacturerID`.
    public var libraryManufacturer: String?
    /// `library-description`: `CK_INFO.libraryDescription`.
    public var libraryDescription: String?
    /// `library-version`: `CK_INFO.libraryVersion`.
    public var libraryVersion: LibraryVersion?
    /// `id`: the object's `CKA_ID`, as raw bytes.
    public var id: [UInt8]?
    /// `object`: the object's `CKA_LABEL`.
    public var object: String?
    /// `type`: the object's class.
    public var type: ObjectType?
    /// `x-` path attributes, in the order they appeared. Names must be unique.
    public var vendorPathAttributes: [VendorAttribute] = []

    // MARK: Query attributes

    /// `pin-source`: where to read the PIN from, for example `file:/run/secrets/pin`.
    public var pinSource: String?
    /// `pin-value`: the PIN itself. A secret: never shown by `description` or in errors.
    public var pinValue: String?
    /// `module-path`: the PKCS#11 module to load.
    public var modulePath: String?
    /// `module-name`: the PKCS#11 module to load, by name.
    public var moduleName: String?
    /// `x-` query attributes, in the order they appeared. Names must be unique.
    public var vendorQueryAttributes: [VendorAttribute] = []

    /// An empty URI (`pkcs11:`), which matches everything.
    public init() {}
}

// MARK: - Errors

/// Why a PKCS#11 URI was refused. The reason never contains a `pin-value` or the whole URI.
public struct PKCS11URIError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of problem. New codes may be added.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The text does not start with `pkcs11:`.
        public static let invalidScheme = Code(rawValue: "invalid-scheme")
        /// The text has a `#` fragment, which PKCS#11 URIs do not have.
        public static let fragmentNotAllowed = Code(rawValue: "fragment-not-allowed")
        /// An attribute is empty, lacks `=`, or has an empty or badly formed name.
        public static let malformedAttribute = Code(rawValue: "malformed-attribute")
        /// A value holds a character that must be percent-encoded.
        public static let invalidCharacter = Code(rawValue: "invalid-character")
        /// A `%` is not followed by two hex digits.
        public static let invalidPercentEncoding = Code(rawValue: "invalid-percent-encoding")
        /// A text value is not UTF-8 once percent-decoded.
        public static let invalidUTF8 = Code(rawValue: "invalid-utf8")
        /// An attribute appears twice in the path or twice in the query.
        public static let duplicateAttribute = Code(rawValue: "duplicate-attribute")
        /// An attribute name is neither an RFC 7512 name nor an `x-` vendor name.
        public static let unknownAttribute = Code(rawValue: "unknown-attribute")
        /// `slot-id`, `library-version` or `type` has a value of the wrong form.
        public static let invalidValue = Code(rawValue: "invalid-value")
    }

    /// The kind of problem.
    public var code: Code
    /// One sentence naming the cause and the fix.
    public var reason: String

    public init(code: Code, reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}

// MARK: - Parsing

extension PKCS11URI {
    /// Parses an RFC 7512 URI. Whitespace and line breaks around it are ignored.
    public init(parsing text: String) throws(PKCS11URIError) {
        self.init()
        let bytes = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)

        if bytes.contains(ASCII.hash) {
            throw PKCS11URIError(code: .fragmentNotAllowed,
                                 reason: "a PKCS#11 URI has no '#' fragment; write a '#' inside a value as %23")
        }
        guard let colon = bytes.firstIndex(of: ASCII.colon) else {
            throw PKCS11URIError(code: .invalidScheme,
                                 reason: "the text has no URI scheme; a PKCS#11 URI starts with 'pkcs11:', as in pkcs11:token=…;object=…")
        }
        let scheme = bytes[..<colon]
        guard String(decoding: scheme, as: UTF8.self).lowercased() == "pkcs11" else {
            // Only a scheme-shaped prefix is quoted; other text before ':' may hold a value.
            let problem = Self.looksLikeScheme(scheme)
                ? "URI scheme '\(String(decoding: scheme, as: UTF8.self))' is not 'pkcs11'"
                : "the text does not start with a URI scheme"
            throw PKCS11URIError(code: .invalidScheme,
                                 reason: "\(problem); a PKCS#11 URI starts with 'pkcs11:', as in pkcs11:token=…;object=…")
        }

        let rest = bytes[(colon + 1)...]
        let path: ArraySlice<UInt8>
        var query: ArraySlice<UInt8>?
        if let question = rest.firstIndex(of: ASCII.question) {
            path = rest[..<question]
            query = rest[(question + 1)...]
        } else {
            path = rest
        }

        try parseComponent(path, .path)
        if let query {
            try parseComponent(query, .query)
        }
    }

    private mutating func parseComponent(_ text: ArraySlice<UInt8>, _ component: Component) throws(PKCS11URIError) {
        // Both the path and the query may be empty.
        guard !text.isEmpty else { return }
        var seen = Set<String>()
        let segments = text.split(separator: component.separator, omittingEmptySubsequences: false)
        for (index, segment) in segments.enumerated() {
            let position = "\(component.name) attribute #\(index + 1)"
            guard !segment.isEmpty else {
                throw PKCS11URIError(code: .malformedAttribute,
                                     reason: "\(position) of the PKCS#11 URI is empty; remove the extra '\(Character(Unicode.Scalar(component.separator)))'")
            }
            guard let equals = segment.firstIndex(of: ASCII.equals) else {
                // The segment may be a PIN typed without its name, so it is not quoted.
                throw PKCS11URIError(code: .malformedAttribute,
                                     reason: "\(position) of the PKCS#11 URI has no '='; write it as name=value")
            }
            let nameBytes = segment[..<equals]
            let raw = segment[(equals + 1)...]
            guard !nameBytes.isEmpty else {
                throw PKCS11URIError(code: .malformedAttribute,
                                     reason: "\(position) of the PKCS#11 URI has an empty name before '='; write it as name=value")
            }
            guard nameBytes.allSatisfy(ASCII.isNameCharacter) else {
                throw PKCS11URIError(code: .malformedAttribute,
                                     reason: "\(position) of the PKCS#11 URI has a name with characters other than letters, digits, '-' and '_'; fix the name, and do not wrap the URI over several lines")
            }
            let name = String(decoding: nameBytes, as: UTF8.self)
            if !component.knownNames.contains(name) && !Self.isVendorAttributeName(name) {
                throw Self.unknownAttributeError(name, component: component)
            }
            guard seen.insert(name).inserted else {
                throw PKCS11URIError(code: .duplicateAttribute,
                                     reason: "duplicate \(component.name) attribute '\(name)' in PKCS#11 URI; give each attribute once")
            }
            let value = try Self.decode(raw, name: name, component: component)
            switch component {
            case .path: try setPathAttribute(name, value)
            case .query: try setQueryAttribute(name, value)
            }
        }
    }

    private mutating func setPathAttribute(_ name: String, _ value: [UInt8]) throws(PKCS11URIError) {
        guard let known = PathAttribute(rawValue: name) else {
            vendorPathAttributes.append(try VendorAttribute(name: name, value: Self.text(value, name: name, component: .path)))
            return
        }
        switch known {
        case .libraryManufacturer: libraryManufacturer = try Self.text(value, name: name, component: .path)
        case .libraryDescription: libraryDescription = try Self.text(value, name: name, component: .path)
        case .libraryVersion: libraryVersion = try Self.libraryVersion(value)
        case .manufacturer: manufacturer = try Self.text(value, name: name, component: .path)
        case .model: model = try Self.text(value, name: name, component: .path)
        case .serial: serial = try Self.text(value, name: name, component: .path)
        case .token: token = try Self.text(value, name: name, component: .path)
        case .slotManufacturer: slotManufacturer = try Self.text(value, name: name, component: .path)
        case .slotDescription: slotDescription = try Self.text(value, name: name, component: .path)
        case .slotID: slotID = try Self.slotID(value)
        case .object: object = try Self.text(value, name: name, component: .path)
        case .type: type = try Self.objectType(value)
        case .id: id = value
        }
    }

    private mutating func setQueryAttribute(_ name: String, _ value: [UInt8]) throws(PKCS11URIError) {
        guard let known = QueryAttribute(rawValue: name) else {
            vendorQueryAttributes.append(try VendorAttribute(name: name, value: Self.text(value, name: name, component: .query)))
            return
        }
        let text = try Self.text(value, name: name, component: .query)
        // These name files and are handed to C, where a NUL would silently end the path early.
        if known != .pinValue && value.contains(0) {
            throw PKCS11URIError(code: .invalidValue,
                                 reason: "the value of query attribute '\(name)' in PKCS#11 URI holds %00, a NUL byte, which no file path or module name can contain; remove it")
        }
        switch known {
        case .pinSource: pinSource = text
        case .pinValue: pinValue = text
        case .moduleName: moduleName = text
        case .modulePath: modulePath = text
        }
    }

    /// Checks the raw characters against `pk11-pchar` or `pk11-qchar` and percent-decodes.
    private static func decode(_ raw: ArraySlice<UInt8>, name: String, component: Component) throws(PKCS11URIError) -> [UInt8] {
        let secret = name == QueryAttribute.pinValue.rawValue
        let subject = "the value of \(component.name) attribute '\(name)' in PKCS#11 URI"
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var index = raw.startIndex
        while index < raw.endIndex {
            let byte = raw[index]
            if byte == ASCII.percent {
                guard raw.endIndex - index >= 3 else {
                    let shown = secret ? "" : " '\(String(decoding: raw[index...], as: UTF8.self))'"
                    throw PKCS11URIError(code: .invalidPercentEncoding,
                                         reason: "\(subject) ends in a truncated percent-escape\(shown); a '%' needs two hex digits after it, and a literal '%' is written %25")
                }
                guard let high = ASCII.hexValue(raw[index + 1]), let low = ASCII.hexValue(raw[index + 2]) else {
                    let shown = secret ? "" : " '\(String(decoding: raw[index..<(index + 3)], as: UTF8.self))'"
                    throw PKCS11URIError(code: .invalidPercentEncoding,
                                         reason: "\(subject) has a malformed percent-escape\(shown); a '%' needs two hex digits after it, and a literal '%' is written %25")
                }
                out.append(high << 4 | low)
                index += 3
            } else if component.allowsUnencoded(byte) {
                out.append(byte)
                index += 1
            } else {
                throw PKCS11URIError(code: .invalidCharacter,
                                     reason: "\(subject) contains \(describe(byte, secret: secret)) that must be percent-encoded; \(encodingAdvice(byte, secret: secret))")
            }
        }
        return out
    }

    private static func describe(_ byte: UInt8, secret: Bool) -> String {
        if secret { return "a character" }
        switch byte {
        case ASCII.space: return "a space"
        case 0x0A, 0x0D: return "a line break"
        case 0x09: return "a tab"
        case 0x80...: return "a non-ASCII character"
        case 0x21...0x7E: return "the character '\(Character(Unicode.Scalar(byte)))'"
        default: return "a control character"
        }
    }

    private static func encodingAdvice(_ byte: UInt8, secret: Bool) -> String {
        if byte >= 0x80 {
            return "write each UTF-8 byte as %XX (for example 'á' as %C3%A1)"
        }
        if secret {
            return "write each such byte as %XX"
        }
        return "write it as \(percentEscape(byte))"
    }

    private static func text(_ bytes: [UInt8], name: String, component: Component) throws(PKCS11URIError) -> String {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PKCS11URIError(code: .invalidUTF8,
                                 reason: "the value of \(component.name) attribute '\(name)' in PKCS#11 URI is not valid UTF-8 once percent-decoded; percent-encode the UTF-8 bytes of the text (for example 'á' as %C3%A1)")
        }
        return text
    }

    private static func slotID(_ bytes: [UInt8]) throws(PKCS11URIError) -> UInt64 {
        let text = String(decoding: bytes, as: UTF8.self)
        guard !bytes.isEmpty, bytes.allSatisfy(ASCII.isDigit), let value = UInt64(text) else {
            let problem = !bytes.isEmpty && bytes.allSatisfy(ASCII.isDigit) ? "is larger than \(UInt64.max)" : "is not a decimal number"
            throw PKCS11URIError(code: .invalidValue,
                                 reason: "slot-id '\(text)' in PKCS#11 URI \(problem); write the slot's CK_SLOT_ID in decimal digits, for example slot-id=0")
        }
        return value
    }

    private static func libraryVersion(_ bytes: [UInt8]) throws(PKCS11URIError) -> LibraryVersion {
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = bytes.split(separator: ASCII.dot, omittingEmptySubsequences: false)
        // Each part is a CK_VERSION byte; leading zeros do not change the number.
        let numbers = parts.compactMap { part -> Int? in
            guard !part.isEmpty, part.allSatisfy(ASCII.isDigit) else { return nil }
            let digits = part.drop { $0 == ASCII.zero }
            guard digits.count <= 3 else { return nil }
            let number = digits.reduce(0) { $0 * 10 + Int($1 - ASCII.zero) }
            return number <= 255 ? number : nil
        }
        guard (1...2).contains(parts.count), numbers.count == parts.count else {
            throw PKCS11URIError(code: .invalidValue,
                                 reason: "library-version '\(text)' in PKCS#11 URI is not of the form M or M.N with numbers from 0 to 255; write it like library-version=2 or library-version=2.6")
        }
        return LibraryVersion(major: numbers[0], minor: numbers.count == 2 ? numbers[1] : nil)
    }

    private static func objectType(_ bytes: [UInt8]) throws(PKCS11URIError) -> ObjectType {
        let text = String(decoding: bytes, as: UTF8.self)
        // RFC 5234 makes quoted ABNF literals case-insensitive.
        guard let type = ObjectType(rawValue: text.lowercased()) else {
            throw PKCS11URIError(code: .invalidValue,
                                 reason: "unknown type '\(text)' in PKCS#11 URI; use one of \(ObjectType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return type
    }

    private static func unknownAttributeError(_ name: String, component: Component) -> PKCS11URIError {
        let other: Component = component == .path ? .query : .path
        if other.knownNames.contains(name) {
            let fix = other == .query
                ? "move it after '?' and join query attributes with '&'"
                : "move it before '?' and join path attributes with ';'"
            return PKCS11URIError(code: .unknownAttribute,
                                  reason: "'\(name)' is a \(other.name) attribute, not a \(component.name) attribute, in PKCS#11 URI; \(fix)")
        }
        var hint = ""
        if let close = closestName(to: name, in: component.knownNames) {
            hint = " (did you mean '\(close)'?)"
        }
        return PKCS11URIError(code: .unknownAttribute,
                              reason: "unknown \(component.name) attribute '\(name)' in PKCS#11 URI\(hint); known ones are \(component.knownNames.joined(separator: ", ")), and vendor attributes must start with 'x-'")
    }

    /// The known name a typo most likely meant: same letters in another case, or at most two edits away.
    private static func closestName(to name: String, in candidates: [String]) -> String? {
        let lowered = name.lowercased()
        if let exact = candidates.first(where: { $0 == lowered }) { return exact }
        var best: (name: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(Array(lowered.utf8), Array(candidate.utf8))
            if distance <= 2, distance < best?.distance ?? .max { best = (candidate, distance) }
        }
        return best?.name
    }

    /// Levenshtein distance, one row at a time.
    private static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var previous = Array(0...b.count)
        for (i, byteA) in a.enumerated() {
            var current = [i + 1]
            for (j, byteB) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (byteA == byteB ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }

    fileprivate static func isVendorAttributeName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return bytes.count > 2 && name.hasPrefix("x-") && bytes.allSatisfy(ASCII.isNameCharacter)
    }

    /// A name in quotes when it is plain enough to show; it cannot then carry a value.
    fileprivate static func quotedName(_ name: String) -> String {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 64, bytes.allSatisfy(ASCII.isNameCharacter) else { return "(not shown)" }
        return "'\(name)'"
    }

    fileprivate static func suggestedVendorSuffix(_ name: String) -> String {
        let kept = name.unicodeScalars.filter { $0.isASCII && ASCII.isNameCharacter(UInt8($0.value)) }
        let suffix = String(String.UnicodeScalarView(kept.prefix(32)))
        return suffix.isEmpty ? "vendor-name" : suffix
    }

    private static func looksLikeScheme(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard let first = bytes.first, ASCII.isLetter(first), bytes.count <= 32 else { return false }
        return bytes.allSatisfy { ASCII.isLetter($0) || ASCII.isDigit($0) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E }
    }
}

// MARK: - Formatting

extension PKCS11URI: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Formats the URI with attributes in a fixed order and every value percent-encoded as
    /// RFC 7512's ABNF requires; `id` is encoded byte by byte.
    ///
    /// `pin-value` is omitted unless `includingPINValue` is true. Parsing the result of
    /// `formatted(includingPINValue: true)` gives back an equal URI.
    public func formatted(includingPINValue: Bool = false) -> String {
        var path: [String] = []
        for attribute in PathAttribute.allCases {
            guard let value = pathValue(attribute) else { continue }
            path.append("\(attribute.rawValue)=\(value)")
        }
        for vendor in vendorPathAttributes {
            path.append("\(vendor.name)=\(Self.encode(vendor.value.utf8, .path))")
        }

        var query: [String] = []
        for attribute in QueryAttribute.allCases {
            if attribute == .pinValue && !includingPINValue { continue }
            guard let value = queryValue(attribute) else { continue }
            query.append("\(attribute.rawValue)=\(Self.encode(value.utf8, .query))")
        }
        for vendor in vendorQueryAttributes {
            query.append("\(vendor.name)=\(Self.encode(vendor.value.utf8, .query))")
        }

        var result = "pkcs11:" + path.joined(separator: ";")
        if !query.isEmpty {
            result += "?" + query.joined(separator: "&")
        }
        return result
    }

    /// The URI without `pin-value`.
    public var description: String { formatted() }

    /// The URI without `pin-value`, noting whether one is present.
    public var debugDescription: String {
        let note = pinValue == nil ? "" : ", pin-value: <redacted>"
        return "PKCS11URI(\(formatted())\(note))"
    }

    /// Shows every field except the PIN, so `dump` and debuggers do not print it.
    public var customMirror: Mirror {
        let children: [Mirror.Child] = [
            ("token", token as Any), ("manufacturer", manufacturer as Any), ("model", model as Any),
            ("serial", serial as Any), ("slotID", slotID as Any), ("slotDescription", slotDescription as Any),
            ("slotManufacturer", slotManufacturer as Any), ("libraryManufacturer", libraryManufacturer as Any),
            ("libraryDescription", libraryDescription as Any), ("libraryVersion", libraryVersion as Any),
            ("id", id as Any), ("object", object as Any), ("type", type as Any),
            ("vendorPathAttributes", vendorPathAttributes), ("pinSource", pinSource as Any),
            ("pinValue", pinValue == nil ? Optional<String>.none as Any : "<redacted>"), ("modulePath", modulePath as Any),
            ("moduleName", moduleName as Any), ("vendorQueryAttributes", vendorQueryAttributes),
        ]
        return Mirror(self, children: children, displayStyle: .struct)
    }

    private func pathValue(_ attribute: PathAttribute) -> String? {
        func encoded(_ value: String?) -> String? { value.map { Self.encode($0.utf8, .path) } }
        switch attribute {
        case .libraryManufacturer: return encoded(libraryManufacturer)
        case .libraryDescription: return encoded(libraryDescription)
        case .libraryVersion: return libraryVersion?.description
        case .manufacturer: return encoded(manufacturer)
        case .model: return encoded(model)
        case .serial: return encoded(serial)
        case .token: return encoded(token)
        case .slotManufacturer: return encoded(slotManufacturer)
        case .slotDescription: return encoded(slotDescription)
        case .slotID: return slotID.map { String($0) }
        case .object: return encoded(object)
        case .type: return type?.rawValue
        // RFC 7512 treats `id` as binary, so every byte is escaped.
        case .id: return id.map { $0.map(Self.percentEscape).joined() }
        }
    }

    private func queryValue(_ attribute: QueryAttribute) -> String? {
        switch attribute {
        case .pinSource: return pinSource
        case .pinValue: return pinValue
        case .moduleName: return moduleName
        case .modulePath: return modulePath
        }
    }

    private static func encode(_ bytes: some Sequence<UInt8>, _ component: Component) -> String {
        var out = ""
        for byte in bytes {
            if component.allowsUnencoded(byte) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += percentEscape(byte)
            }
        }
        return out
    }

    fileprivate static func percentEscape(_ byte: UInt8) -> String {
        let hex = String(byte, radix: 16, uppercase: true)
        return byte < 0x10 ? "%0" + hex : "%" + hex
    }
}

// MARK: - Grammar

/// Path attribute names, in the order `formatted()` writes them.
private enum PathAttribute: String, CaseIterable {
    case libraryManufacturer = "library-manufacturer"
    case libraryDescription = "library-description"
    case libraryVersion = "library-version"
    case manufacturer
    case model
    case serial
    case token
    case slotManufacturer = "slot-manufacturer"
    case slotDescription = "slot-description"
    case slotID = "slot-id"
    case object
    case type
    case id
}

/// Query attribute names, in the order `formatted()` writes them.
private enum QueryAttribute: String, CaseIterable {
    case pinSource = "pin-source"
    case pinValue = "pin-value"
    case moduleName = "module-name"
    case modulePath = "module-path"
}

private enum Component {
    case path
    case query

    var name: String { self == .path ? "path" : "query" }
    var separator: UInt8 { self == .path ? ASCII.semicolon : ASCII.ampersand }
    var knownNames: [String] {
        self == .path ? PathAttribute.allCases.map(\.rawValue) : QueryAttribute.allCases.map(\.rawValue)
    }

    /// `pk11-pchar` or `pk11-qchar` without `pct-encoded` (RFC 7512 section 2.3).
    func allowsUnencoded(_ byte: UInt8) -> Bool {
        if ASCII.isUnreserved(byte) || ASCII.isResAvail(byte) { return true }
        switch self {
        case .path: return byte == ASCII.ampersand
        // "&" separates query attributes, so the query allows "/", "?" and "|" instead.
        case .query: return byte == 0x2F || byte == ASCII.question || byte == 0x7C
        }
    }
}

private enum ASCII {
    static let space: UInt8 = 0x20
    static let hash: UInt8 = 0x23
    static let percent: UInt8 = 0x25
    static let ampersand: UInt8 = 0x26
    static let dot: UInt8 = 0x2E
    static let zero: UInt8 = 0x30
    static let colon: UInt8 = 0x3A
    static let semicolon: UInt8 = 0x3B
    static let equals: UInt8 = 0x3D
    static let question: UInt8 = 0x3F

    static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
    static func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }

    /// RFC 3986 `unreserved`: ALPHA / DIGIT / "-" / "." / "_" / "~".
    static func isUnreserved(_ byte: UInt8) -> Bool {
        isLetter(byte) || isDigit(byte) || byte == 0x2D || byte == 0x2E || byte == 0x5F || byte == 0x7E
    }

    /// RFC 7512 `pk11-res-avail`: ":" / "[" / "]" / "@" / "!" / "$" / "'" / "(" / ")" / "*" / "+" / "," / "=".
    static func isResAvail(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x3A, 0x5B, 0x5D, 0x40, 0x21, 0x24, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x3D: return true
        default: return false
        }
    }

    /// RFC 7512 `pk11-v-attr-nm-char`: ALPHA / DIGIT / "-" / "_"; the standard names fit it too.
    static func isNameCharacter(_ byte: UInt8) -> Bool {
        isLetter(byte) || isDigit(byte) || byte == 0x2D || byte == 0x5F
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }
}

import Foundation

/// A component an RFC 9421 signature covers: a derived component of the request (`@method`,
/// `@path`, …) or a header field. Its `description` is the component identifier as it appears
/// in `Signature-Input` and the signature base, e.g. `"@query-param";name="Pet"`.
public struct HTTPSignatureComponent: Hashable, Sendable, CustomStringConvertible {
    /// `@method`, `@path`, … or a lower-case header field name.
    public let name: String
    /// For `@query-param`: the parameter name, percent-encoded as RFC 9421 §2.2.8 prescribes.
    public let queryParameterName: String?

    private init(name: String, queryParameterName: String? = nil) {
        self.name = name
        self.queryParameterName = queryParameterName
    }

    /// `@method`: the request method, e.g. `POST`.
    public static let method = HTTPSignatureComponent(name: "@method")
    /// `@target-uri`: the full target URI, e.g. `https://example.com/foo?param=Value`.
    public static let targetURI = HTTPSignatureComponent(name: "@target-uri")
    /// `@authority`: host, and port when it is not the scheme's default; lower case.
    public static let authority = HTTPSignatureComponent(name: "@authority")
    /// `@scheme`: `https` or `http`.
    public static let scheme = HTTPSignatureComponent(name: "@scheme")
    /// `@request-target`: path and query as on the request line, e.g. `/foo?param=Value`.
    public static let requestTarget = HTTPSignatureComponent(name: "@request-target")
    /// `@path`: the percent-encoded path; `/` when empty.
    public static let path = HTTPSignatureComponent(name: "@path")
    /// `@query`: the query with its leading `?`; a lone `?` when there is none.
    public static let query = HTTPSignatureComponent(name: "@query")

    /// `@query-param;name="…"`: one query parameter's value. `name` is the decoded name
    /// (e.g. `façade`); it is percent-encoded for the identifier.
    public static func queryParameter(_ name: String) -> HTTPSignatureComponent {
        HTTPSignatureComponent(name: "@query-param", queryParameterName: QueryParameters.encode(name))
    }

    /// A header field, by name in any case (it is covered under its lower-case name).
    public static func field(_ name: String) -> HTTPSignatureComponent {
        HTTPSignatureComponent(name: name.trimmingCharacters(in: .whitespaces).lowercased())
    }

    /// The component identifier as serialized in `Signature-Input` and the signature base.
    public var description: String { StructuredFieldSerializer.serialize(identifier) }

    /// Whether this is a header field rather than a derived component.
    public var isField: Bool { !name.hasPrefix("@") }

    var identifier: StructuredFieldItem {
        var item = StructuredFieldItem(bareItem: .string(name))
        if let queryParameterName { item.parameters = [("name", .string(queryParameterName))] }
        return item
    }

    static let derivedRequestComponents: Set<String> = [
        "@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query", "@query-param",
    ]

    /// Checks that the identifier is one KeyBridge can compute for a request.
    func validate() throws(HTTPMessageSignatureError) {
        if isField {
            guard !name.isEmpty, name.utf8.allSatisfy({ StructuredFieldParser.isTokenCharacter($0) && !(UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }) else {
                throw HTTPMessageSignatureError(.unsupportedComponent, "\(description) is not a valid header field name (it must be a lower-case HTTP token)")
            }
            return
        }
        guard Self.derivedRequestComponents.contains(name) else {
            let hint: String
            switch name {
            case "@status": hint = "@status exists only in responses"
            case "@signature-params": hint = "@signature-params is added to the base by itself and must not be listed"
            default: hint = "the derived components of a request are " + Self.derivedRequestComponents.sorted().joined(separator: ", ")
            }
            throw HTTPMessageSignatureError(.unsupportedComponent, "\(description) is not a request component KeyBridge can sign or verify: \(hint)")
        }
        if name == "@query-param" {
            guard let queryParameterName, !queryParameterName.isEmpty else {
                throw HTTPMessageSignatureError(.unsupportedComponent, "@query-param needs a non-empty name parameter")
            }
        } else if queryParameterName != nil {
            throw HTTPMessageSignatureError(.unsupportedComponent, "only @query-param takes a name parameter, not \(name)")
        }
    }

    /// Reads a component identifier from a `Signature-Input` inner-list item.
    init(parsing item: StructuredFieldItem) throws(HTTPMessageSignatureError) {
        guard case let .string(name) = item.bareItem else {
            throw HTTPMessageSignatureError(.malformedField,
                                            "Signature-Input: covered components must be strings, not \(StructuredFieldSerializer.serialize(item.bareItem))")
        }
        var queryParameterName: String?
        for (key, value) in item.parameters {
            switch (name, key, value) {
            case let ("@query-param", "name", .string(text)):
                queryParameterName = text
            case ("@query-param", "name", _):
                throw HTTPMessageSignatureError(.malformedField, "Signature-Input: the name parameter of @query-param must be a string")
            default:
                // sf, key, bs, req and tr change how a value is computed; silently ignoring them
                // would verify a different base from the one the signer meant.
                throw HTTPMessageSignatureError(.unsupportedComponent,
                                                "Signature-Input: the component parameter ;\(key) on \"\(name)\" is not supported by KeyBridge")
            }
        }
        self.init(name: name, queryParameterName: queryParameterName)
        if isField, name != name.lowercased() {
            throw HTTPMessageSignatureError(.unsupportedComponent, "Signature-Input: the field name \"\(name)\" must be lower case")
        }
        try validate()
    }
}

/// Builds RFC 9421 §2.5 signature bases for requests.
enum SignatureBase {
    /// The base: one `"identifier": value` line per component, then the `@signature-params`
    /// line; lines end in LF, the last has none.
    static func make(request: HTTPRequestParts, components: [HTTPSignatureComponent],
                     signatureParameters: String) throws(HTTPMessageSignatureError) -> String {
        var seen = Set<HTTPSignatureComponent>()
        var lines: [String] = []
        for component in components {
            guard seen.insert(component).inserted else {
                throw HTTPMessageSignatureError(.duplicateComponent, "the component \(component) is covered twice")
            }
            lines.append(component.description + ": " + (try value(of: component, in: request)))
        }
        lines.append("\"@signature-params\": " + signatureParameters)
        return lines.joined(separator: "\n")
    }

    static func value(of component: HTTPSignatureComponent, in request: HTTPRequestParts) throws(HTTPMessageSignatureError) -> String {
        switch component.name {
        case "@method": return request.method
        case "@target-uri": return try scheme(of: request) + "://" + authority(of: request) + request.target
        case "@authority": return try authority(of: request)
        case "@scheme": return try scheme(of: request)
        case "@request-target": return request.target
        case "@path": return path(of: request)
        case "@query": return "?" + (query(of: request) ?? "")
        case "@query-param": return try queryParameter(component.queryParameterName ?? "", in: request)
        default: return try fieldValue(component.name, in: request)
        }
    }

    private static func components(of request: HTTPRequestParts) -> URLComponents? {
        URLComponents(url: request.url, resolvingAgainstBaseURL: false)
    }

    private static func scheme(of request: HTTPRequestParts) throws(HTTPMessageSignatureError) -> String {
        guard let scheme = request.url.scheme, !scheme.isEmpty else {
            throw HTTPMessageSignatureError(.missingComponent, "the request URL \(request.url) has no scheme; give an absolute https URL")
        }
        return scheme.lowercased()
    }

    /// Host in lower case, with the port only when it is not the scheme's default
    /// (the normalisation of RFC 9110 §4.2.3 that RFC 9421 §2.2.3 asks for).
    private static func authority(of request: HTTPRequestParts) throws(HTTPMessageSignatureError) -> String {
        guard let parts = components(of: request), let rawHost = parts.percentEncodedHost, !rawHost.isEmpty else {
            throw HTTPMessageSignatureError(.missingComponent, "the request URL \(request.url) has no host; give an absolute URL")
        }
        var host = rawHost.lowercased()
        if host.contains(":"), !host.hasPrefix("[") { host = "[" + host + "]" }
        let defaultPort: Int? = switch parts.scheme?.lowercased() {
        case "https": 443
        case "http": 80
        default: nil
        }
        if let port = parts.port, port != defaultPort { host += ":\(port)" }
        return host
    }

    private static func path(of request: HTTPRequestParts) -> String {
        let path = components(of: request)?.percentEncodedPath ?? request.url.path
        return path.isEmpty ? "/" : path
    }

    private static func query(of request: HTTPRequestParts) -> String? {
        components(of: request)?.percentEncodedQuery
    }

    private static func queryParameter(_ encodedName: String, in request: HTTPRequestParts) throws(HTTPMessageSignatureError) -> String {
        let values = QueryParameters.parse(query(of: request) ?? "").filter { $0.name == encodedName }.map(\.value)
        guard let value = values.first else {
            throw HTTPMessageSignatureError(.missingComponent, "the request URL has no query parameter \"\(encodedName)\" that the signature covers")
        }
        // RFC 9421 §2.2.8: a repeated name cannot be covered one value at a time; cover @query instead.
        guard values.count == 1 else {
            throw HTTPMessageSignatureError(.unsupportedComponent,
                                            "the query parameter \"\(encodedName)\" occurs \(values.count) times, so @query-param cannot cover it; cover @query instead")
        }
        return value
    }

    /// Each field line's value trimmed, the lines joined with ", " (RFC 9421 §2.1).
    private static func fieldValue(_ name: String, in request: HTTPRequestParts) throws(HTTPMessageSignatureError) -> String {
        let lines = request.headers.filter { $0.name.lowercased() == name }
        guard !lines.isEmpty else {
            throw HTTPMessageSignatureError(.missingComponent, "the request has no \(name) header, which the signature covers")
        }
        var values: [String] = []
        for line in lines {
            // A line break in a value would forge extra lines in the signature base.
            guard !line.value.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
                throw HTTPMessageSignatureError(.malformedField, "the \(name) header holds a line break or NUL, which HTTP does not allow")
            }
            values.append(line.value.trimmingCharacters(in: CharacterSet(charactersIn: " \t")))
        }
        return values.joined(separator: ", ")
    }
}

/// `application/x-www-form-urlencoded` parsing and re-encoding, as RFC 9421 §2.2.8 uses them.
enum QueryParameters {
    /// Name/value pairs, each decoded and then re-encoded in the canonical percent-encoded form.
    static func parse(_ query: String) -> [(name: String, value: String)] {
        query.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = decode(parts[0])
            let value = parts.count > 1 ? decode(parts[1]) : ""
            return (encode(name), encode(value))
        }
    }

    /// Form decoding: "+" is a space, valid %XX escapes become bytes, and the bytes are UTF-8.
    static func decode(_ text: Substring) -> String {
        let bytes = Array(text.utf8)
        var output: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                output.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), index + 2 < bytes.count,
                      let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) {
                output.append(high << 4 | low)
                index += 2
            } else {
                output.append(byte)
            }
            index += 1
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// "Percent-encode after encoding" with the form percent-encode set, spaces as %20 (as in the
    /// RFC's examples): only ASCII letters, digits and `*-._` stay as they are.
    static func encode(_ text: String) -> String {
        var output = ""
        for byte in text.utf8 {
            if StructuredFieldParser.isAlphanumeric(byte) || "*-._".utf8.contains(byte) {
                output.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                output += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0x0F, radix: 16, uppercase: true)
            }
        }
        return output
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

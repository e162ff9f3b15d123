import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One JSON object on one line, written byte by byte. The broker logs one per request, so this
/// avoids `JSONSerialization` with `.sortedKeys` (which sorts keys with locale-aware ICU
/// comparison, a fifth of the broker's CPU time under load in a profile) and a new
/// `ISO8601DateFormatter` per line. Callers add the keys in sorted order themselves.
struct BrokerLogLine {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]

    init() { bytes.reserveCapacity(256) }

    mutating func add(_ key: String, _ value: String) {
        addKey(key)
        Self.appendQuoted(value, to: &bytes)
    }

    mutating func add(_ key: String, _ value: Int) {
        addKey(key)
        bytes += String(value).utf8
    }

    /// The line, without a trailing newline.
    var text: String { String(decoding: bytes + [UInt8(ascii: "}")], as: UTF8.self) }

    private mutating func addKey(_ key: String) {
        if bytes.count > 1 { bytes.append(UInt8(ascii: ",")) }
        Self.appendQuoted(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    /// A JSON string: quote and backslash escaped, control characters as \u00XX, everything
    /// else (slashes, UTF-8) as is.
    static func appendQuoted(_ text: String, to bytes: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes += [UInt8(ascii: "\\"), byte]
            case UInt8(ascii: "\n"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                bytes += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// The current UTC time as ISO 8601 to the second ("2026-12-03T19:40:05Z"), the form
    /// `ISO8601DateFormatter` writes by default.
    static func timestamp(_ seconds: time_t = time(nil)) -> String {
        var now = seconds
        var parts = tm()
        gmtime_r(&now, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}

extension String {
    /// ASCII case-insensitive equality, byte by byte: header names are ASCII, and
    /// `caseInsensitiveCompare` makes a locale on every call.
    func equalsIgnoringASCIICase(_ other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        return zip(utf8, other.utf8).allSatisfy { left, right in
            left == right || (left | 0x20 == right | 0x20 && (0x61...0x7A).contains(left | 0x20))
        }
    }
}

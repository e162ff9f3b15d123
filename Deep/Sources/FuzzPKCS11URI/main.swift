// Fuzzes the RFC 7512 URI parser (PKCS11URI) with its formatter as the oracle.
//
// Invariants for every input that parses:
// - formatted(includingPINValue: true) parses back to an equal URI, and formatting that again
//   gives the same text (the format is canonical);
// - description / formatted() leave pin-value out and otherwise parse back to the same URI;
// - a pin-value never shows in description, debugDescription or dump().
// For every input that does not parse: the error has a code and a reason, and the reason does
// not repeat a pin-value given in the input.
import Foundation
import FuzzSupport
import PKCS11

/// The pin-value as written in the input, when it is an attribute (after ':', ';', '?' or '&')
/// and long and distinctive enough to be searched for: at least 8 letters or digits, appearing
/// once in the input.
func writtenPIN(in text: String) -> String? {
    guard let range = text.range(of: "pin-value="), range.lowerBound > text.startIndex,
          ":;?&".contains(text[text.index(before: range.lowerBound)]) else { return nil }
    let value = String(text[range.upperBound...].prefix { $0.isASCII && ($0.isLetter || $0.isNumber) })
    guard value.count >= 8, text.components(separatedBy: value).count == 2 else { return nil }
    return value
}

runLibFuzzer { input in
    let text = text(input)
    let uri: PKCS11URI
    do throws(PKCS11URIError) {
        uri = try PKCS11URI(parsing: text)
    } catch {
        precondition(!error.reason.isEmpty && !error.code.rawValue.isEmpty, "an error without a reason")
        if let pin = writtenPIN(in: text) {
            precondition(!error.reason.contains(pin), "the parse error repeats the pin-value: \(error.reason)")
        }
        return
    }

    let full = uri.formatted(includingPINValue: true)
    let reparsed: PKCS11URI
    do {
        reparsed = try PKCS11URI(parsing: full)
    } catch {
        preconditionFailure("the formatted URI does not parse: \(full.debugDescription): \(error)")
    }
    precondition(reparsed == uri, "parse(format(uri)) differs from uri for \(full.debugDescription)")
    precondition(reparsed.formatted(includingPINValue: true) == full, "formatting is not canonical for \(full.debugDescription)")

    var withoutPIN = uri
    withoutPIN.pinValue = nil
    let shown = uri.description
    precondition(shown == withoutPIN.formatted(includingPINValue: true), "description is not the URI without its PIN")
    precondition((try? PKCS11URI(parsing: shown)) == withoutPIN, "description does not parse back to the URI without its PIN")

    // Only a PIN of 8+ letters and digits that the PIN-less forms do not contain anyway can be
    // searched for without false alarms.
    if let pin = uri.pinValue, pin.count >= 8, pin.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) {
        var plain = ""
        dump(withoutPIN, to: &plain)
        if !plain.contains(pin), !withoutPIN.debugDescription.contains(pin), !"<redacted>".contains(pin) {
            precondition(!uri.debugDescription.contains(pin), "debugDescription shows the PIN")
            var dumped = ""
            dump(uri, to: &dumped)
            precondition(!dumped.contains(pin), "dump() shows the PIN")
        }
    }
}

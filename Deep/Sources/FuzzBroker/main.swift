// Fuzzes the broker's request handling: header checks, bearer-token authentication, route
// parsing (Broker.handle) and the configuration JSON (BrokerConfiguration.decode).
//
// Input format: the first line names the mode.
//   request   method, request target, "Name: value" headers up to an empty line, then the body;
//             handled by a broker with one known caller. Without a token the broker has no
//             bank and handling stops at the bank lookup. With KEYBRIDGE_FUZZ_STATE set to a
//             softhsm-setup state folder (and SOFTHSM2_CONF to its config), bank "acme" exists:
//             its mTLS and Berlin Group signing keys are on the token and its upstream is a
//             closed loopback port, so the path checks, URL building, header filtering and
//             signing run on every input that gets that far, and the send fails fast.
//   config    the rest is a broker configuration file
// Any other first line treats the whole input as a configuration file.
//
// Invariants: every answer is a JSON error or an operational route's answer, with a status the
// broker documents; a header value with CR, LF or NUL is refused with 400; the bearer token and
// any pin-value from a configuration never appear in an answer or an error.
import Foundation
import FuzzSupport
@testable import KeyBridgeBroker

/// The token the broker knows; distinctive, so finding it in an answer cannot be chance.
let knownToken = "fuzz-bearer-token-4f1c2a9e7d"

/// The token state folder, when the bank "acme" is to be configured.
let state = ProcessInfo.processInfo.environment["KEYBRIDGE_FUZZ_STATE"]

/// A JSON string literal.
func quoted(_ text: String) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: text, options: [.fragmentsAllowed]), as: UTF8.self)
}

let broker: Broker = {
    var banks = "{}"
    if let state {
        func uri(_ name: String) -> String {
            (try! String(contentsOfFile: state + "/uris/" + name, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // Port 1 on loopback: nothing listens, so each forwarded request fails at connect.
        // RSA keys only: an EC key keeps its parameters in an enum payload whose pointer carries
        // the case tag in its spare bits, and libFuzzer's leak check (LeakSanitizer) cannot see
        // such a pointer, so the live broker's EC key would be reported as a leak.
        banks = """
            {"acme": {"upstream": "https://127.0.0.1:1/base/", "caFile": \(quoted(state + "/pki/root-ca.pem")),
                      "key": \(quoted(uri("rsa"))), "cert": \(quoted(state + "/pki/client-rsa-chain.pem")), "timeoutSeconds": 1,
                      "signing": {"profile": "berlin-group", "key": \(quoted(uri("rsa"))), "cert": \(quoted(state + "/pki/client-rsa.pem"))}}}
            """
    }
    let json = """
        {"listen": "127.0.0.1:0", "banks": \(banks), "maxBodyBytes": 64,
         "callers": [{"name": "fuzz-caller", "tokenSHA256": "\(Broker.tokenSHA256(knownToken))", "banks": ["acme", "bank-b"]}]}
        """
    // Decoded without `validate`, which insists on at least one bank.
    let configuration = try! JSONDecoder().decode(BrokerConfiguration.self, from: Data(json.utf8))
    return try! Broker(configuration: configuration)
}()

/// "method\ntarget\nName: value\n…\n\nbody", as the HTTP server would hand it over.
func request(from data: Data) -> BrokerRequest {
    let (head, body, unterminated) = messageParts(data)
    let lines = head + (unterminated.map { [$0] } ?? [])
    let method = lines.first.map { String(decoding: $0, as: UTF8.self) } ?? ""
    let target = lines.count > 1 ? String(decoding: lines[1], as: UTF8.self) : ""
    let headers: [(name: String, value: String)] = lines.dropFirst(2).map { line in
        let text = String(decoding: line, as: UTF8.self)
        guard let colon = text.firstIndex(of: ":") else { return (text, "") }
        // Only the separator's spaces are dropped: a value may keep a CR or NUL for the checks to find.
        return (String(text[..<colon]), String(text[text.index(after: colon)...].drop { $0 == " " }))
    }
    return BrokerRequest(method: method, target: target, headers: headers, body: Data(body))
}

func checkRequest(_ request: BrokerRequest) {
    let response = broker.handle(request)
    let answer = String(decoding: response.body, as: UTF8.self) + response.headers.map { $0.name + ": " + $0.value + "\n" }.joined()
    // A token may legitimately show up where the request also has it outside Authorization: in
    // the target or a header name (which errors quote) or in X-Request-ID (which is echoed).
    let elsewhere = request.method + " " + request.target + " "
        + request.headers.filter { $0.name.lowercased() != "authorization" }.map { $0.name + " " + $0.value }.joined(separator: " ")
    if !bytes(of: elsewhere, contain: knownToken) {
        precondition(!bytes(of: answer, contain: knownToken), "the answer repeats the bearer token: \(answer)")
    }
    // The same for any token presented, unless the broker's own text has it anyway.
    if let authorization = request.header("Authorization") {
        let presented = authorization.split(separator: " ").last.map(String.init) ?? ""
        let fixed = broker.handle(BrokerRequest(method: request.method, target: request.target,
                                                headers: request.headers.filter { $0.name.lowercased() != "authorization" }))
        let fixedText = String(decoding: fixed.body, as: UTF8.self) + "Content-Type: application/json\n"
        if presented.count >= 12, !bytes(of: elsewhere, contain: presented), !bytes(of: fixedText, contain: presented) {
            precondition(!bytes(of: answer, contain: presented), "the answer repeats the presented token: \(answer)")
        }
    }

    let path = request.target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    if path == "/healthz" || path == "/metrics" {
        precondition([200, 405, 503].contains(response.status), "operational route answered \(response.status)")
        return
    }
    // With the bank, a request that passes every check is signed and sent, and the send fails.
    let allowed = state == nil ? [400, 401, 403, 404, 413] : [400, 401, 403, 404, 413, 502, 503, 504]
    precondition(allowed.contains(response.status), "unexpected status \(response.status)")
    let object = (try? JSONSerialization.jsonObject(with: response.body)) as? [String: String]
    precondition(object?["error"] != nil && object?["cause"] != nil, "the error answer is not {error, cause} JSON")
    let signingFailures: Set<String> = ["signing-failed", "token-unavailable"]
    if let error = object?["error"], error.hasPrefix("upstream-") || signingFailures.contains(error) {
        // It got past the path check: no segment of the path may be "." or ".." (also %2e-encoded).
        let path = request.target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let segments = path.lowercased().replacingOccurrences(of: "%2e", with: ".").split(separator: "/", omittingEmptySubsequences: false)
        precondition(!segments.contains { $0 == "." || $0 == ".." }, "a path with dot segments was forwarded: \(request.target)")
        precondition(!signingFailures.contains(error), "the token could not sign a request that passed the checks: \(object?["cause"] ?? "")")
    }

    let badValue = request.headers.contains { header in header.value.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 } }
    if badValue && request.method.uppercased() != "CONNECT" && request.target.hasPrefix("/") && BrokerHTTP.isToken(request.method) {
        precondition(response.status == 400, "a header value with CR, LF or NUL was not refused (\(response.status))")
    }
    if response.status == 404 {
        precondition(request.header("Authorization") != nil, "404 before authentication")
    }
}

/// The pin-values (8+ letters and digits) of the "key" URIs in a configuration that appear
/// nowhere else in it, so that finding one in an error means the key URI was echoed.
func keyPINs(in data: Data) -> [String] {
    guard let json = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return [] }
    var keys: [String] = []
    var others: [String] = []
    func walk(_ value: Any, name: String) {
        if let object = value as? [String: Any] {
            for (key, member) in object { others.append(key); walk(member, name: key) }
        } else if let array = value as? [Any] {
            for member in array { walk(member, name: name) }
        } else if let text = value as? String {
            if name == "key" { keys.append(text) } else { others.append(text) }
        }
    }
    walk(json, name: "")
    return keys.compactMap { uri -> String? in
        guard let range = uri.range(of: "pin-value=") else { return nil }
        let pin = String(uri[range.upperBound...].prefix { $0.isASCII && ($0.isLetter || $0.isNumber) })
        guard pin.count >= 8, !others.contains(where: { $0.contains(pin) }), keys.filter({ $0.contains(pin) }).count == 1 else { return nil }
        return pin
    }
}

func checkConfiguration(_ data: Data) {
    do throws(BrokerError) {
        let configuration = try BrokerConfiguration.decode(data)
        _ = try? configuration.listenAddress()
        precondition(!configuration.banks.isEmpty, "a configuration without banks passed validation")
        for caller in configuration.callers {
            precondition(BrokerAuthenticator.digest(fromHex: caller.tokenSHA256)?.count == 32, "a caller's tokenSHA256 passed but is not a digest")
        }
    } catch {
        precondition(!error.reason.isEmpty, "an error without a reason")
        for pin in keyPINs(in: data) {
            precondition(!error.reason.contains(pin), "a configuration error repeats a key's pin-value: \(error.reason)")
        }
    }
}

runLibFuzzer { input in
    let (mode, rest) = split(input)
    switch mode {
    case "request": checkRequest(request(from: rest))
    case "config": checkConfiguration(rest)
    default: checkConfiguration(Data(input))
    }
}

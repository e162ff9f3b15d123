// The leak driver of `make check-deep`: many mTLS handshakes and token signatures in one
// process, built with AddressSanitizer so that LeakSanitizer lists, at exit, every allocation
// no longer reachable (EVP_PKEY, SSL_CTX, provider key objects, PKCS#11 session wrappers).
//
//   leak-check --url https://localhost:PORT/ --cacert ROOT.pem --cert CHAIN.pem --key pkcs11:…
//              [--handshakes 10000] [--signs 10000] [--cache-keys no] [--control-leak yes]
//
// Handshakes: every request says "Connection: close" to a server without session resumption
// (scripts/bank-nginx), so each one is a full handshake in which the token key signs; every
// 20th uses a new HTTPClient, so SSL_CTX, certificates and the provider key are made and freed
// again. Signatures: ProviderKey.sign on the same key; every 20th with a new ProviderKey.
// Exits non-zero when any operation fails or the counts do not add up. SOFTHSM2_CONF must
// point at the token.
//
// `--cache-keys no` turns off PKCS11's cache of keys found by URI, so every new client and
// ProviderKey also looks the key up again and frees its PrivateKey (with its token objects) later.
//
// `--control-leak yes` also drops one ProviderKey (and with it an EVP_PKEY and a provider key
// object) without releasing it: the control run, which LeakSanitizer must catch.
import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import PKCS11

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("leak-check: error: \(message)\n".utf8))
    exit(1)
}

func parseOptions() -> [String: String] {
    var options: [String: String] = [:]
    var arguments = CommandLine.arguments.dropFirst()
    while let name = arguments.popFirst() {
        guard name.hasPrefix("--"), let value = arguments.popFirst() else {
            fail("usage: leak-check --url URL --cacert FILE --cert FILE --key URI [--handshakes N] [--signs N] [--cache-keys no] [--control-leak yes]")
        }
        options[String(name.dropFirst(2))] = value
    }
    return options
}
let options = parseOptions()
func option(_ name: String) -> String {
    guard let value = options[name] else { fail("--\(name) is required") }
    return value
}
let url = option("url")
let handshakes = Int(options["handshakes"] ?? "10000") ?? 10_000
let signs = Int(options["signs"] ?? "10000") ?? 10_000
let renewEvery = 20
if options["cache-keys"] == "no" { PrivateKey.cachesKeys = false }
let configuration = TLSConfiguration(certificateChain: .pemFile(option("cert")), key: .pkcs11(option("key")),
                                     trustRoots: .pemFile(option("cacert")))

func makeClient() -> HTTPClient {
    do { return try HTTPClient(configuration: configuration) } catch { fail("cannot make the client: \(error)") }
}

/// Lines for the log; written at once, since LeakSanitizer ends the process with _exit and
/// buffered standard output would be lost.
func report(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

// Each phase runs in a function, so its clients and keys are released when it returns: what
// LeakSanitizer finds at exit is then memory nothing frees, not objects still in use.
func runHandshakes() {
    var client = makeClient()
    var signedHandshakes = 0
    let started = Date()
    for index in 0..<handshakes {
        if index > 0 && index % renewEvery == 0 { client = makeClient() }
        let response: HTTPResponse
        do {
            response = try client.send(HTTPRequest(url: url, headers: [("Connection", "close")]))
        } catch {
            fail("request \(index + 1) failed: \(error)")
        }
        guard response.status == 200 else { fail("request \(index + 1) answered \(response.status)") }
        guard let tls = response.tls else { fail("request \(index + 1) reused a connection; the server must close each one") }
        if tls.clientSignatureScheme != nil { signedHandshakes += 1 }
    }
    guard signedHandshakes == handshakes else { fail("only \(signedHandshakes) of \(handshakes) handshakes had a client signature") }
    report("handshakes: \(handshakes) full handshakes, each with a client signature by the token key, over \((handshakes + renewEvery - 1) / renewEvery) clients, \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
}

func makeKey() -> ProviderKey {
    do { return try ProviderKey(uri: option("key")) } catch { fail("cannot open the key: \(error)") }
}

func runSignatures() {
    var key = makeKey()
    let scheme: SignatureScheme = key.algorithm == "RSA" ? .rsaPSS(.sha256) : .ecdsa(.sha256)
    let started = Date()
    for index in 0..<signs {
        if index > 0 && index % renewEvery == 0 { key = makeKey() }
        do {
            let signature = try key.sign(Array("leak-check message \(index)".utf8), scheme: scheme)
            guard !signature.isEmpty else { fail("signature \(index + 1) is empty") }
        } catch {
            fail("signature \(index + 1) failed: \(error)")
        }
    }
    report("signatures: \(signs) \(scheme) signatures through the provider, over \((signs + renewEvery - 1) / renewEvery) key objects, \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
}

runHandshakes()
runSignatures()
if options["control-leak"] == "yes" {
    // A retain that nothing balances: the object and what it owns stay allocated with no owner.
    _ = Unmanaged.passRetained(makeKey())
    report("control: one ProviderKey leaked on purpose")
}

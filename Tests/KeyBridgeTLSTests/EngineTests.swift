#if canImport(Glibc)
import Glibc
#endif
import Foundation
import KeyBridgeTestSupport
import KeyBridgeTLS
import XCTest

/// The engine path: `keybridge request --engine pkcs11 --key 'pkcs11:…'` and
/// `KeyReference.engine(id:identifier:)`, with libp11's engine against the SoftHSM test token
/// and the nginx bank.
///
/// Most checks run the CLI in its own process, so the engine's login is its own: in this test
/// process another suite may already have logged the token in, and PKCS#11 logins are shared by
/// everything in a process, so a wrong PIN here could go unnoticed.
final class EngineTests: XCTestCase {
    let token = TestToken.shared
    let bank = BankServer.shared

    static let softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"
    static let engineFile = "/usr/lib/\(multiarch)/engines-3/pkcs11.so"
    static let spyModule = "/usr/lib/\(multiarch)/pkcs11/pkcs11-spy.so"
    /// A wrong PIN distinctive enough that finding it in the output can only mean a leak.
    static let wrongPIN = "engine-wrong-5813"

    static var multiarch: String {
        var system = utsname()
        uname(&system)
        let machine = withUnsafeBytes(of: system.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return (machine == "arm64" ? "aarch64" : machine) + "-linux-gnu"
    }

    override func setUpWithError() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.engineFile),
                          "libp11's engine is not installed (make deps installs libengine-pkcs11-openssl)")
    }

    // MARK: Helpers

    private var rootCA: String { token.pki("root-ca.pem") }
    private var pinFile: String { token.stateDirectory + "/user.pin" }

    private func engineRequest(key: String, chain: String, _ extra: [String] = [], url: String? = nil,
                               environment: [String: String] = [:]) throws -> Command.Result {
        try KeyBridgeExecutable.run(["request", "--engine", "pkcs11", "--key", key, "--cert", token.pki(chain),
                                     "--cacert", rootCA] + extra + [url ?? bank.url("/engine")],
                                    environment: environment)
    }

    private func lines(_ text: String) -> [String] {
        text.split(separator: "\n").map(String.init)
    }

    private func assertNoPIN(_ result: Command.Result, file: StaticString = #filePath, line: UInt = #line) {
        let found = RequestCommandTests.pinsFound(in: result.combined, pins: [token.userPIN, Self.wrongPIN])
        XCTAssertTrue(found.isEmpty, "a PIN appears in the output (\(found.count) of them)", file: file, line: line)
    }

    /// A failed run: its status, no body, one error line naming every phrase, nothing else but
    /// warnings (libp11 must not print its own lines), and no PIN. Returns the error line.
    @discardableResult
    private func assertFails(_ result: Command.Result, status: Int32, mentions: [String],
                             file: StaticString = #filePath, line: UInt = #line) -> String {
        XCTAssertEqual(result.status, status, "stderr: \(result.standardError)", file: file, line: line)
        XCTAssertEqual(result.standardOutput, "", "a failed run printed a body", file: file, line: line)
        let errors = lines(result.standardError).filter { $0.hasPrefix("keybridge: error: ") }
        XCTAssertEqual(errors.count, 1, "expected one error line: \(result.standardError)", file: file, line: line)
        let others = lines(result.standardError).filter { !$0.hasPrefix("keybridge: error: ") && !$0.hasPrefix("keybridge: warning: ") }
        XCTAssertEqual(others, [], "stderr has lines that are neither the error nor warnings", file: file, line: line)
        let message = errors.first ?? ""
        for phrase in mentions {
            XCTAssertTrue(message.contains(phrase), "the error does not mention '\(phrase)': \(message)", file: file, line: line)
        }
        assertNoPIN(result, file: file, line: line)
        return message
    }

    private struct BankEcho: Decodable {
        var subject: String
        var verify: String
        var `protocol`: String
    }

    /// A successful run whose body is the bank's echo of a verified client certificate.
    private func assertBankVerified(_ result: Command.Result, commonName: String, version: String,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(result.status, 0, "stderr: \(result.standardError)", file: file, line: line)
        XCTAssertFalse(result.standardError.contains("keybridge: error:"), result.standardError, file: file, line: line)
        assertNoPIN(result, file: file, line: line)
        let echo = try JSONDecoder().decode(BankEcho.self, from: Data(result.standardOutput.utf8))
        XCTAssertEqual(echo.verify, "SUCCESS", file: file, line: line)
        XCTAssertEqual(echo.protocol, version, file: file, line: line)
        XCTAssertTrue(echo.subject.contains("CN=\(commonName)"), echo.subject, file: file, line: line)
    }

    /// The calls a pkcs11-spy log records, by name (`C_Sign`, `C_Login`, …).
    private func spyCalls(_ log: String) throws -> [String: Int] {
        let text = try String(contentsOfFile: log, encoding: .utf8)
        var counts: [String: Int] = [:]
        for line in lines(text) {
            // Lines such as "12: C_Sign" open each recorded call.
            let parts = line.split(separator: " ")
            guard parts.count == 2, parts[0].hasSuffix(":"), parts[0].dropLast().allSatisfy(\.isNumber),
                  parts[1].hasPrefix("C_") else { continue }
            counts[String(parts[1]), default: 0] += 1
        }
        return counts
    }

    // MARK: Handshakes through the engine

    func testRSAKeyOverTLS13() throws {
        let result = try engineRequest(key: token.rsaURI, chain: "client-rsa-chain.pem", ["-v", "--tlsv1.3"])
        try assertBankVerified(result, commonName: "tpp-rsa.example", version: "TLSv1.3")
        let keyPath = token.uri(token.rsaURI, query: "")
        XCTAssertTrue(result.standardError.contains("* client key via OpenSSL engine 'pkcs11': \(keyPath)\n"), result.standardError)
        XCTAssertTrue(result.standardError.contains("client CertificateVerify: rsa_pss_rsae_sha256"), result.standardError)
        XCTAssertFalse(result.standardError.contains("on the token (private operations run there)"), "-v claims the provider path")
        XCTAssertFalse(result.standardError.contains("pin-source=") || result.standardError.contains("module-path="),
                       "-v shows the key URI's query")
    }

    func testRSAKeyOverTLS12() throws {
        let result = try engineRequest(key: token.rsaURI, chain: "client-rsa-chain.pem", ["--tls-max", "1.2"])
        try assertBankVerified(result, commonName: "tpp-rsa.example", version: "TLSv1.2")
    }

    func testECKeyOverTLS13() throws {
        let result = try engineRequest(key: token.ecURI, chain: "client-ec-chain.pem", ["-v"])
        try assertBankVerified(result, commonName: "tpp-ec.example", version: "TLSv1.3")
        XCTAssertTrue(result.standardError.contains("client CertificateVerify: ecdsa_secp256r1_sha256"), result.standardError)
    }

    func testECKeyOverTLS12() throws {
        let result = try engineRequest(key: token.ecURI, chain: "client-ec-chain.pem", ["--tls-max", "1.2"])
        try assertBankVerified(result, commonName: "tpp-ec.example", version: "TLSv1.2")
    }

    /// Curl's spelling of the same request is accepted as well.
    func testCurlStyleKeyType() throws {
        let result = try engineRequest(key: token.ecURI, chain: "client-ec-chain.pem", ["--key-type", "ENG"])
        try assertBankVerified(result, commonName: "tpp-ec.example", version: "TLSv1.3")
    }

    /// The signatures are made by libp11 through the module it loaded, not by KeyBridge's
    /// provider: pkcs11-spy, put between the engine and SoftHSM, records the engine's one login
    /// and its signatures (the test challenge and the CertificateVerify).
    func testTheEngineMakesTheSignatures() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.spyModule), "pkcs11-spy (opensc) is not installed")
        let log = try Command.temporaryDirectory() + "/spy.log"
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.spyModule)&pin-source=file:\(pinFile)")
        let result = try engineRequest(key: key, chain: "client-rsa-chain.pem", ["--tls-max", "1.2"],
                                       environment: ["PKCS11SPY": Self.softHSMModule, "PKCS11SPY_OUTPUT": log])
        try assertBankVerified(result, commonName: "tpp-rsa.example", version: "TLSv1.2")
        let calls = try spyCalls(log)
        XCTAssertEqual(calls["C_Login"], 1, "\(calls)")
        XCTAssertGreaterThanOrEqual(calls["C_Sign", default: 0], 2, "\(calls)")
        XCTAssertNil(calls["C_Finalize"], "the module was finalised: \(calls)")
    }

    /// In this process, next to the provider path: engine keys and provider keys complete
    /// handshakes in turn, with one SoftHSM module that both initialise and log in to. Run alone
    /// (`--filter EngineTests`), the engine logs in first and the PKCS11 layer finds the token
    /// already logged in; in the whole suite other tests may have logged in before.
    func testEngineAndProviderKeysInOneProcess() throws {
        func send(_ key: KeyReference, chain: String) throws -> (HTTPResponse, HTTPClient) {
            let configuration = TLSConfiguration(certificateChain: .pemFile(token.pki(chain)), key: key,
                                                 trustRoots: .pemFile(rootCA))
            let client = try HTTPClient(configuration: configuration)
            return (try client.send(HTTPRequest(url: bank.url("/in-process"))), client)
        }
        let (engine, engineClient) = try send(.engine(id: "pkcs11", identifier: token.rsaURI), chain: "client-rsa-chain.pem")
        let (provider, _) = try send(.pkcs11(token.ecURI), chain: "client-ec-chain.pem")
        let (engineAgain, _) = try send(.engine(id: "pkcs11", identifier: token.ecURI), chain: "client-ec-chain.pem")
        let (providerAgain, _) = try send(.pkcs11(token.rsaURI), chain: "client-rsa-chain.pem")
        for response in [engine, provider, engineAgain, providerAgain] {
            XCTAssertEqual(response.status, 200, String(decoding: response.body, as: UTF8.self))
            XCTAssertTrue(String(decoding: response.body, as: UTF8.self).contains(#""verify":"SUCCESS""#))
        }
        XCTAssertEqual(engineClient.keyLocation, "via OpenSSL engine 'pkcs11': \(token.uri(token.rsaURI, query: ""))")
        XCTAssertFalse(engineClient.keyIsOnToken)
    }

    // MARK: Failures

    func testUnknownEngine() throws {
        let result = try KeyBridgeExecutable.run(["request", "--engine", "no-such-engine", "--key", token.rsaURI,
                                                  "--cert", token.pki("client-rsa-chain.pem"), "--cacert", rootCA, bank.url()])
        assertFails(result, status: 3, mentions: ["OpenSSL engine 'no-such-engine' is not installed", "no-such-engine.so", "OPENSSL_ENGINES"])
    }

    /// With the engines folder pointed elsewhere, libp11's engine is missing, and the error names its package.
    func testMissingPKCS11EngineNamesThePackage() throws {
        let empty = try Command.temporaryDirectory()
        let result = try engineRequest(key: token.rsaURI, chain: "client-rsa-chain.pem", environment: ["OPENSSL_ENGINES": empty])
        assertFails(result, status: 3, mentions: ["OpenSSL engine 'pkcs11' is not installed", "\(empty)/pkcs11.so", "libengine-pkcs11-openssl"])
    }

    func testWrongPINFromPINSourceFile() throws {
        let wrong = try Command.temporaryDirectory() + "/wrong.pin"
        try (Self.wrongPIN + "\n").write(toFile: wrong, atomically: true, encoding: .utf8)
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)&pin-source=file:\(wrong)")
        let result = try engineRequest(key: key, chain: "client-rsa-chain.pem")
        assertFails(result, status: 3, mentions: ["engine 'pkcs11'", "rejected the PIN", "PIN incorrect",
                                                  "the PIN came from the URI's pin-source file", "will not retry"])
    }

    func testWrongPINValueIsNotPrinted() throws {
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)&pin-value=\(Self.wrongPIN)")
        let result = try engineRequest(key: key, chain: "client-rsa-chain.pem")
        assertFails(result, status: 3, mentions: ["rejected the PIN", "the PIN came from the URI's pin-value"])
    }

    /// libp11 logs in once with a wrong PIN and does not try again.
    func testWrongPINIsTriedOnce() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.spyModule), "pkcs11-spy (opensc) is not installed")
        let log = try Command.temporaryDirectory() + "/spy.log"
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.spyModule)")
        let result = try engineRequest(key: key, chain: "client-rsa-chain.pem",
                                       environment: ["KEYBRIDGE_PIN": Self.wrongPIN, "PKCS11SPY": Self.softHSMModule, "PKCS11SPY_OUTPUT": log])
        assertFails(result, status: 3, mentions: ["rejected the PIN", "the KEYBRIDGE_PIN environment variable"])
        let calls = try spyCalls(log)
        XCTAssertEqual(calls["C_Login"], 1, "\(calls)")
        XCTAssertNil(calls["C_Sign"], "\(calls)")
    }

    /// Standard input is a pipe, so the engine must not prompt, nor log in with an empty PIN.
    func testNoPINAnywhere() throws {
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)")
        let result = try engineRequest(key: key, chain: "client-rsa-chain.pem")
        assertFails(result, status: 3, mentions: ["needs a PIN", "pin-source=", "KEYBRIDGE_PIN"])
    }

    func testUnknownObject() throws {
        let key = "pkcs11:token=keybridge;object=no-such-key;type=private?module-path=\(Self.softHSMModule)&pin-source=file:\(pinFile)"
        let result = try engineRequest(key: key, chain: "client-rsa-chain.pem")
        assertFails(result, status: 3, mentions: ["could not load the key pkcs11:token=keybridge;object=no-such-key;type=private",
                                                  "object not found", "pkcs11-tool --module \(Self.softHSMModule)"])
    }

    func testCertificateOfAnotherKeyTypeIsRejected() throws {
        let chain = token.pki("client-ec-chain.pem")
        let result = try engineRequest(key: token.rsaURI, chain: "client-ec-chain.pem")
        let message = assertFails(result, status: 4, mentions: ["CN=tpp-ec.example", chain, "does not belong", "OpenSSL engine 'pkcs11'"])
        XCTAssertFalse(message.contains("pin-source") || message.contains("module-path"), "the key URI's query is shown: \(message)")
    }

    func testCertificateOfAnotherRSAKeyIsRejected() throws {
        let result = try engineRequest(key: token.rsaURI, chain: "client-mismatch-chain.pem")
        assertFails(result, status: 4, mentions: ["CN=tpp-mismatch.example", "does not belong", "their public keys differ"])
    }

    func testEngineWithoutKeyIsAUsageError() throws {
        let result = try KeyBridgeExecutable.run(["request", "--engine", "pkcs11", "--cert", token.pki("client-rsa-chain.pem"), bank.url()])
        assertFails(result, status: 2, mentions: ["--engine pkcs11 needs --key"])
    }

    func testHelpNamesTheEngineOption() throws {
        let result = try KeyBridgeExecutable.run(["request", "--help"])
        XCTAssertEqual(result.status, 0)
        XCTAssertTrue(result.standardOutput.contains("--engine ID"), result.standardOutput)
    }
}

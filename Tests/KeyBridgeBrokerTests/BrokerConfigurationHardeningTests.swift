import Foundation
@testable import KeyBridgeBroker
import XCTest

/// broker.json mistakes that were accepted without a word: a misspelt key was ignored (so
/// "maxBodyByte": 10 left the 1 MiB default), a bank named twice kept only one of the two, two
/// callers could share a token, a tokenSHA256 with '+' passed as hex, an unreadable caFile only
/// showed at the first request, and 1.5 seconds was reported as "not valid JSON".
final class BrokerConfigurationHardeningTests: XCTestCase {
    private var caFile = ""
    private let hash = String(repeating: "ab", count: 32)

    override func setUpWithError() throws {
        let folder = NSTemporaryDirectory() + "broker-config-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        caFile = folder + "/ca.pem"
        // Only read for its PEM armour here; the certificate itself is never parsed.
        try "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".write(toFile: caFile, atomically: true, encoding: .utf8)
    }

    private func bank(_ extra: String = "") -> String {
        #"{"upstream":"https://bank.example/psd2","caFile":"\#(caFile)","key":"pkcs11:object=k","cert":"c.pem"\#(extra)}"#
    }

    private func configuration(top: String = "", banks: String? = nil, callers: String? = nil) -> String {
        let banks = banks ?? #""b":\#(bank())"#
        let callers = callers ?? #"{"name":"c","tokenSHA256":"\#(hash)","banks":["b"]}"#
        return #"{"listen":"127.0.0.1:0"\#(top),"banks":{\#(banks)},"callers":[\#(callers)]}"#
    }

    private func reason(_ json: String) -> String? {
        do {
            _ = try BrokerConfiguration.decode(Data(json.utf8), source: "broker.json")
            return nil
        } catch {
            return error.reason
        }
    }

    func testControlConfigurationIsAccepted() {
        XCTAssertNil(reason(configuration()))
        XCTAssertNil(reason(configuration(top: #","maxBodyBytes":10"#)))
    }

    func testMisspeltKeysAreRefusedWithTheKnownOnes() throws {
        let top = try XCTUnwrap(reason(configuration(top: #","maxBodyByte":10"#)))
        XCTAssertTrue(top.contains(#"unknown key "maxBodyByte" in the top level"#), top)
        XCTAssertTrue(top.contains("maxBodyBytes"), top)
        let inBank = try XCTUnwrap(reason(configuration(banks: #""b":\#(bank(#","timeoutsecONDS":5"#))"#)))
        XCTAssertTrue(inBank.contains("banks.b") && inBank.contains(#"did you mean "timeoutSeconds""#), inBank)
        let inRetry = try XCTUnwrap(reason(configuration(banks: #""b":\#(bank(#","retry":{"maxAttempts":2,"backoff":5}"#))"#)))
        XCTAssertTrue(inRetry.contains("banks.b.retry"), inRetry)
        let inCaller = try XCTUnwrap(reason(configuration(callers: #"{"name":"c","tokenSHA256":"\#(hash)","banks":["b"],"bank":["x"]}"#)))
        XCTAssertTrue(inCaller.contains("callers[0]"), inCaller)
        // Signing options are checked against their profile when the bank is set up
        // (SigningOptionsCheckTests), not by the file schema.
        XCTAssertNil(reason(configuration(banks: #""b":\#(bank(#","signing":{"profile":"jws","key":"pkcs11:object=s","options":{"anything":1}}"#))"#)))
    }

    func testANameGivenTwiceIsRefused() throws {
        let twice = #""b":\#(bank()),"b":{"upstream":"https://evil.example/","key":"pkcs11:object=x","cert":"x.pem"}"#
        let banks = try XCTUnwrap(reason(configuration(banks: twice)))
        XCTAssertTrue(banks.contains(#"banks gives "b" twice"#), banks)
        let escaped = try XCTUnwrap(reason(configuration(top: #","\u006cisten":"127.0.0.1:1""#)))
        XCTAssertTrue(escaped.contains(#""listen" twice"#), escaped)
        // The same name in two different objects is fine.
        XCTAssertNil(reason(configuration(banks: #""b":\#(bank()),"cert":\#(bank())"#)))
    }

    func testTwoCallersWithOneTokenAreRefused() throws {
        let callers = #"{"name":"c","tokenSHA256":"\#(hash)","banks":["b"]},{"name":"d","tokenSHA256":"\#(hash.uppercased())","banks":[]}"#
        let text = try XCTUnwrap(reason(configuration(callers: callers)))
        XCTAssertTrue(text.contains("'c' and 'd' have the same tokenSHA256"), text)
    }

    func testTokenHashWithSignsIsNotHex() throws {
        let signed = "+a" + String(hash.dropFirst(2))
        let text = try XCTUnwrap(reason(configuration(callers: #"{"name":"c","tokenSHA256":"\#(signed)","banks":["b"]}"#)))
        XCTAssertTrue(text.contains("64 hex digits"), text)
    }

    /// The reason `load` gives for a configuration written to a file: it also checks the files.
    private func loadReason(_ json: String) throws -> String? {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("broker-\(UUID().uuidString).json").path
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try BrokerConfiguration.load(path: path)
            return nil
        } catch {
            return error.reason
        }
    }

    func testUnreadableOrEmptyCAFileIsRefusedAtLoad() throws {
        let missing = try XCTUnwrap(loadReason(configuration(banks: #""b":{"upstream":"https://x.example","caFile":"/nonexistent/ca.pem","key":"pkcs11:object=k","cert":"c"}"#)))
        XCTAssertTrue(missing.contains("banks.b.caFile /nonexistent/ca.pem"), missing)
        let notPEM = try XCTUnwrap(loadReason(configuration(banks: #""b":{"upstream":"https://x.example","caFile":"/etc/hostname","key":"pkcs11:object=k","cert":"c"}"#)))
        XCTAssertTrue(notPEM.contains("holds no PEM certificate"), notPEM)
    }

    func testFractionWhereAWholeNumberBelongsIsNamed() throws {
        let text = try XCTUnwrap(reason(configuration(banks: #""b":\#(bank(#","timeoutSeconds":1.5"#))"#)))
        XCTAssertTrue(text.contains("banks.b.timeoutSeconds must be a whole number"), text)
        let syntax = try XCTUnwrap(reason(#"{"listen": "#))
        XCTAssertTrue(syntax.contains("is not valid JSON") && syntax.contains("fix the syntax"), syntax)
    }
}

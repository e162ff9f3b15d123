import Foundation
import KeyBridgeTestSupport
import XCTest

/// The same provider loaded as a module by the `openssl` command, as other OpenSSL 3 programs
/// would load it. `make test` builds the module before running the tests.
final class ProviderModuleTests: XCTestCase {
    let token = TestToken.shared

    private var moduleDirectory: String {
        URL(fileURLWithPath: KeyBridgeExecutable.path).deletingLastPathComponent().path
    }

    private func openssl(_ arguments: [String]) throws -> Command.Result {
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.softHSMConfig
        let providers = ["-provider-path", moduleDirectory, "-provider", "libkeybridge-provider", "-provider", "default"]
        return try Command.run(["/usr/bin/openssl", arguments[0]] + providers + arguments.dropFirst(), environment: environment)
    }

    func testOpenSSLSignsWithATokenKeyThroughTheModule() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: moduleDirectory + "/libkeybridge-provider.so"),
                      "run 'swift build' first: the provider module is missing")
        let directory = try Command.temporaryDirectory()
        try Data("pay 10 EUR".utf8).write(to: URL(fileURLWithPath: directory + "/message"))
        let signed = try openssl(["dgst", "-sha256", "-sign", token.rsaURI, "-out", directory + "/signature", directory + "/message"])
        XCTAssertEqual(signed.status, 0, signed.standardError)
        let publicKey = try Command.run(["openssl", "x509", "-in", token.pki("client-rsa.pem"), "-pubkey", "-noout"])
        try publicKey.standardOutput.write(toFile: directory + "/public.pem", atomically: true, encoding: .utf8)
        let verified = try Command.run(["openssl", "dgst", "-sha256", "-verify", directory + "/public.pem",
                                        "-signature", directory + "/signature", directory + "/message"])
        XCTAssertEqual(verified.status, 0, verified.combined)
        // Control: a different message must not verify with that signature.
        try Data("pay 99 EUR".utf8).write(to: URL(fileURLWithPath: directory + "/message"))
        let forged = try Command.run(["openssl", "dgst", "-sha256", "-verify", directory + "/public.pem",
                                      "-signature", directory + "/signature", directory + "/message"])
        XCTAssertNotEqual(forged.status, 0)
    }

    func testOpenSSLMakesCSRsSignedByTokenKeys() throws {
        let directory = try Command.temporaryDirectory()
        let cases: [(uri: String, name: String, options: [String], algorithm: String)] = [
            (token.rsaURI, "rsa", [], "sha256WithRSAEncryption"),
            (token.rsaURI, "pss", ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"], "rsassaPss"),
            (token.ecURI, "ec", [], "ecdsa-with-SHA256"),
        ]
        for item in cases {
            let path = directory + "/\(item.name).csr"
            let made = try openssl(["req", "-new", "-key", item.uri, "-subj", "/C=DE/O=KeyBridge Test/CN=\(item.name)", "-out", path] + item.options)
            XCTAssertEqual(made.status, 0, "\(item.name): \(made.standardError)")
            let checked = try Command.run(["openssl", "req", "-in", path, "-verify", "-noout", "-text"])
            XCTAssertEqual(checked.status, 0, checked.combined)
            XCTAssertTrue(checked.combined.contains("verify OK"), checked.combined)
            XCTAssertTrue(checked.standardOutput.contains("Signature Algorithm: \(item.algorithm)"), checked.standardOutput)
        }
    }
}

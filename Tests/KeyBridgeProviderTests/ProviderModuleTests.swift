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
        let providers = ["-provider-path", moduleDirectory, "-provider", "default", "-provider", "libkeybridge-provider"]
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

    /// An OpenSSL configuration that loads the module with pkcs11-provider's parameter names,
    /// so URIs need neither module-path nor a PIN.
    private func configurationFile() throws -> String {
        let directory = try Command.temporaryDirectory()
        let path = directory + "/openssl.cnf"
        try """
        openssl_conf = openssl_init
        [openssl_init]
        providers = provider_sect
        [provider_sect]
        default = default_sect
        keybridge = keybridge_sect
        [default_sect]
        activate = 1
        [keybridge_sect]
        module = \(moduleDirectory)/libkeybridge-provider.so
        pkcs11-module-path = /usr/lib/softhsm/libsofthsm2.so
        pkcs11-module-token-pin = file:\(token.stateDirectory)/user.pin
        pkcs11-module-login-behavior = auto
        pkcs11-module-cache-keys = true
        activate = 1

        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func opensslWithConfiguration(_ arguments: [String], input: Data? = nil) throws -> Command.Result {
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.softHSMConfig
        environment["OPENSSL_CONF"] = try configurationFile()
        environment.removeValue(forKey: "KEYBRIDGE_PIN")
        environment.removeValue(forKey: "KEYBRIDGE_PKCS11_MODULE")
        return try Command.run(["/usr/bin/openssl"] + arguments, input: input, environment: environment)
    }

    func testConfigurationFileSuppliesModuleAndPIN() throws {
        let directory = try Command.temporaryDirectory()
        try Data("config only".utf8).write(to: URL(fileURLWithPath: directory + "/message"))
        let bareURI = "pkcs11:token=keybridge;object=client-ec;type=private"
        let signed = try opensslWithConfiguration(["dgst", "-sha256", "-sign", bareURI, "-out", directory + "/signature", directory + "/message"])
        XCTAssertEqual(signed.status, 0, signed.standardError)
        let publicKey = try Command.run(["openssl", "x509", "-in", token.pki("client-ec.pem"), "-pubkey", "-noout"])
        try publicKey.standardOutput.write(toFile: directory + "/public.pem", atomically: true, encoding: .utf8)
        let verified = try Command.run(["openssl", "dgst", "-sha256", "-verify", directory + "/public.pem",
                                        "-signature", directory + "/signature", directory + "/message"])
        XCTAssertEqual(verified.status, 0, verified.combined)
    }

    /// `openssl s_client` with a token key, through the module, against the nginx bank.
    func testSClientHandshakeWithATokenKey() throws {
        let bank = BankServer.shared
        for name in ["rsa", "ec"] {
            let request = Data("GET /s_client/\(name) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
            let result = try opensslWithConfiguration([
                "s_client", "-quiet", "-connect", "127.0.0.1:\(bank.port)", "-servername", "localhost",
                "-CAfile", token.pki("root-ca.pem"), "-cert", token.pki("client-\(name).pem"),
                "-cert_chain", token.pki("issuing-ca.pem"), "-key", "pkcs11:token=keybridge;object=client-\(name)",
            ], input: request)
            XCTAssertTrue(result.standardOutput.contains("\"verify\":\"SUCCESS\""), "\(name): \(result.combined)")
            XCTAssertTrue(result.standardOutput.contains("CN=tpp-\(name).example"), result.standardOutput)
            XCTAssertTrue(result.standardOutput.contains("\"uri\":\"/s_client/\(name)\""), result.standardOutput)
        }
    }

    /// With the module loaded after default, OpenSSL still generates and uses ordinary keys.
    func testOrdinaryKeysStillWorkWithTheModuleLoaded() throws {
        let directory = try Command.temporaryDirectory()
        for algorithm in ["RSA", "EC"] {
            let options = algorithm == "EC" ? ["-pkeyopt", "ec_paramgen_curve:P-256"] : ["-pkeyopt", "rsa_keygen_bits:2048"]
            let made = try openssl(["genpkey", "-algorithm", algorithm, "-out", directory + "/\(algorithm).pem"] + options)
            XCTAssertEqual(made.status, 0, "\(algorithm): \(made.standardError)")
        }
    }
}

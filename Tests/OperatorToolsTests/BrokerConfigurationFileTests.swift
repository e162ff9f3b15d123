import Foundation
import KeyBridgeTestSupport
import XCTest

/// `keybridge serve` reports every unusable file of broker.json at once, each by its
/// configuration field (not by a `request` option such as --cert).
final class BrokerConfigurationFileTests: XCTestCase {
    let shared = TestToken.shared

    private func configuration(caFile: String, cert: String, signingCert: String, key: String? = nil) -> String {
        let key = key ?? shared.rsaURI
        return """
        { "listen": "127.0.0.1:0",
          "banks": { "acme": { "upstream": "https://localhost:1/psd2", "caFile": "\(caFile)", "key": "\(key)", "cert": "\(cert)",
                               "signing": { "profile": "berlin-group", "key": "\(key)", "cert": "\(signingCert)" } } },
          "callers": [ { "name": "demo", "tokenSHA256": "\(String(repeating: "ab", count: 32))", "banks": ["acme"] } ] }
        """
    }

    private func serve(_ text: String) throws -> Command.Result {
        let path = try Command.temporaryDirectory() + "/broker.json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try KeyBridgeExecutable.run(["serve", "--config", path], environment: ["SOFTHSM2_CONF": shared.softHSMConfig("softhsm2.conf")])
    }

    func testEveryMissingFileIsReportedByItsField() throws {
        let directory = try Command.temporaryDirectory()
        let notPEM = directory + "/not-a-certificate.pem"
        try "hello\n".write(toFile: notPEM, atomically: true, encoding: .utf8)
        let result = try serve(configuration(caFile: directory + "/acme-ca.pem", cert: directory + "/qwac-chain.pem", signingCert: notPEM))
        XCTAssertEqual(result.status, 1, result.combined)
        Check.oneErrorLine(result)
        let error = result.standardError
        XCTAssertTrue(error.contains("3 files of the configuration cannot be used"), error)
        XCTAssertTrue(error.contains("banks.acme.caFile \(directory)/acme-ca.pem: no such file"), error)
        XCTAssertTrue(error.contains("banks.acme.cert \(directory)/qwac-chain.pem: no such file"), error)
        XCTAssertTrue(error.contains("banks.acme.signing.cert \(notPEM) holds no PEM or DER certificate"), error)
        XCTAssertFalse(error.contains("--cert"), error)

        // One problem: the missing caFile alone, which used to pass unnoticed until the first request.
        let single = try serve(configuration(caFile: directory + "/acme-ca.pem", cert: shared.pki("client-rsa-chain.pem"),
                                             signingCert: shared.pki("qseal-ec.pem")))
        XCTAssertEqual(single.status, 1, single.combined)
        XCTAssertTrue(single.standardError.contains("a file of the configuration cannot be used: banks.acme.caFile \(directory)/acme-ca.pem: no such file;"),
                      single.standardError)

        // Control: with usable files the check passes and the bank is built, so the next problem
        // (a key that is not on the token) is the one reported.
        let missingKey = shared.rsaURI.replacingOccurrences(of: "object=client-rsa", with: "object=no-such-key")
        XCTAssertNotEqual(missingKey, shared.rsaURI)
        let control = try serve(configuration(caFile: shared.pki("root-ca.pem"), cert: shared.pki("client-rsa-chain.pem"),
                                              signingCert: shared.pki("qseal-ec.pem"), key: missingKey))
        XCTAssertEqual(control.status, 1, control.combined)
        XCTAssertFalse(control.standardError.contains("cannot be used"), control.standardError)
        XCTAssertTrue(control.standardError.contains("bank 'acme'") && control.standardError.contains("no-such-key"), control.standardError)
    }
}

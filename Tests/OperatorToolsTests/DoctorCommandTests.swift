import Foundation
import KeyBridgeTestSupport
import XCTest

/// `keybridge doctor` on a healthy setup and on each thing that can be wrong with one.
final class DoctorCommandTests: XCTestCase {
    let shared = TestToken.shared

    /// A token made from empty with the CLI alone: an RSA key, its QWAC issued by the test CA
    /// and the intermediate, stored with import-cert. Built once; the tests only read it.
    struct Setup {
        let token: FreshToken
        let key: String
        let leaf: String
        let directory: String

        static let shared: Result<Setup, Error> = Result { try Setup() }

        private init() throws {
            token = try FreshToken(label: "doctor")
            directory = try Command.temporaryDirectory()
            let test = TestToken.shared
            let generated = try token.keybridge(["keys", "generate", "--type", "rsa:2048", "--label", "qwac", "--id", "d1", "--token", token.uri])
            guard generated.status == 0 else { throw CommandError(message: generated.standardError) }
            key = generated.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
            let request = directory + "/qwac.csr"
            let made = try token.keybridge(["keys", "csr", "--key", key, "--subject", "/C=DE/O=Doctor TPP GmbH/CN=localhost",
                                            "--eidas-role", "PSP_AI,PSP_PI", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-654321", "-o", request])
            guard made.status == 0 else { throw CommandError(message: made.standardError) }
            leaf = directory + "/qwac.pem"
            try Setup.issue(request, days: 365, to: leaf)
            let chain = directory + "/qwac-chain.pem"
            try (String(contentsOfFile: leaf, encoding: .utf8) + String(contentsOfFile: test.pki("issuing-ca.pem"), encoding: .utf8))
                .write(toFile: chain, atomically: true, encoding: .utf8)
            let stored = try token.keybridge(["keys", "import-cert", "--chain", chain, "--key", key])
            guard stored.status == 0 else { throw CommandError(message: stored.standardError) }
        }

        /// The test CA signs `request`, copying its QCStatements; negative `days` back-dates it.
        static func issue(_ request: String, days: Int, to path: String) throws {
            let test = TestToken.shared
            let extensions = path + ".ext"
            try "extendedKeyUsage = clientAuth\nkeyUsage = critical, digitalSignature\n".write(toFile: extensions, atomically: true, encoding: .utf8)
            let issued = try Command.run(["/usr/bin/openssl", "x509", "-req", "-in", request, "-CA", test.pki("issuing-ca.pem"),
                                          "-CAkey", test.pki("issuing-ca-key.pem"), "-days", String(days), "-copy_extensions", "copy",
                                          "-extfile", extensions, "-out", path])
            guard issued.status == 0 else { throw CommandError(message: issued.combined) }
        }

        /// A chain file: the given leaf, and the intermediate unless left out.
        func chainFile(leaf: String, withIntermediate: Bool = true, name: String) throws -> String {
            let path = directory + "/" + name
            var text = try String(contentsOfFile: leaf, encoding: .utf8)
            if withIntermediate { text += try String(contentsOfFile: TestToken.shared.pki("issuing-ca.pem"), encoding: .utf8) }
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        func doctor(_ extra: [String], config: String? = nil, extraEnvironment: [String: String] = [:]) throws -> (Command.Result, [String: Any]) {
            let result = try token.keybridge(["doctor", "--json", "--cacert", TestToken.shared.pki("root-ca.pem")] + extra,
                                             config: config, extra: extraEnvironment)
            let document = (try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8))) as? [String: Any] ?? [:]
            return (result, document)
        }
    }

    private func setup() throws -> Setup { try Setup.shared.get() }

    /// The status of each check, by id.
    private func statuses(_ document: [String: Any]) -> [String: String] {
        var result: [String: String] = [:]
        for check in document["checks"] as? [[String: Any]] ?? [] {
            if let id = check["id"] as? String, let status = check["status"] as? String { result[id] = status }
        }
        return result
    }

    private func detail(_ document: [String: Any], _ id: String) -> String {
        ((document["checks"] as? [[String: Any]] ?? []).first { $0["id"] as? String == id }?["detail"] as? String) ?? ""
    }

    private let order = ["module", "token", "pin-flags", "login", "key", "mechanisms", "certificate", "match", "chain", "expiry", "psd2", "bank"]

    func testHealthySetupIsFitAndEveryCheckPasses() throws {
        let setup = try setup()
        let (result, document) = try setup.doctor(["--key", setup.key])
        XCTAssertEqual(result.status, 0, result.combined)
        XCTAssertEqual(document["verdict"] as? String, "fit")
        XCTAssertEqual(document["exitStatus"] as? Int, 0)
        let checks = document["checks"] as? [[String: Any]] ?? []
        XCTAssertEqual(checks.compactMap { $0["id"] as? String }, order, "checks out of order")
        for id in order.dropLast() { XCTAssertEqual(statuses(document)[id], "passed", "\(id): \(detail(document, id))") }
        XCTAssertEqual(statuses(document)["bank"], "skipped")
        XCTAssertTrue(detail(document, "certificate").contains("on the token"), detail(document, "certificate"))
        XCTAssertTrue(detail(document, "chain").contains("KeyBridge Test Root CA"), detail(document, "chain"))
        XCTAssertTrue(detail(document, "psd2").contains("roles PSP_AI, PSP_PI, NCA DE-BAFIN"), detail(document, "psd2"))

        // The same in text, for people.
        let text = try setup.token.keybridge(["doctor", "--key", setup.key, "--cacert", shared.pki("root-ca.pem")])
        XCTAssertEqual(text.status, 0, text.combined)
        XCTAssertTrue(text.standardOutput.contains("[passed]   login works"), text.standardOutput)
        XCTAssertTrue(text.standardOutput.hasSuffix("Verdict: fit for use; exit status 0\n"), text.standardOutput)
    }

    func testHealthySetupHandshakesWithTheBank() throws {
        let setup = try setup()
        let bank = BankServer.shared
        let (result, document) = try setup.doctor(["--key", setup.key, "--bank", bank.url("/accounts")])
        XCTAssertEqual(result.status, 0, result.combined)
        XCTAssertEqual(statuses(document)["bank"], "passed", detail(document, "bank"))
        XCTAssertTrue(detail(document, "bank").contains("the bank answered HTTP 200"), detail(document, "bank"))
        // Control: the same check fails where no bank listens (port 1 on loopback).
        let (refused, refusedDocument) = try setup.doctor(["--key", setup.key, "--bank", "https://localhost:1/accounts"])
        XCTAssertEqual(refused.status, 3, refused.combined)
        XCTAssertEqual(statuses(refusedDocument)["bank"], "failed", detail(refusedDocument, "bank"))
    }

    /// A wrong PIN fails the login check, reaches C_Login exactly once (counted by pkcs11-spy),
    /// skips every later check that needs the login, and leaves the token's PIN-count flag
    /// set, which the next doctor run reports.
    func testWrongPINIsTriedOnceAndLaterChecksAreSkipped() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: FreshToken.spyModule), "pkcs11-spy (opensc) is not installed")
        let token = try FreshToken(label: "wrongpin")
        try token.generate("ec:P-256", label: "key", id: "01")
        let directory = try Command.temporaryDirectory()
        let wrongPIN = directory + "/wrong.pin"
        try "9999".write(toFile: wrongPIN, atomically: true, encoding: .utf8)
        let log = directory + "/spy.log"
        let key = "pkcs11:token=wrongpin;object=key;type=private?module-path=\(FreshToken.spyModule)&pin-source=file:\(wrongPIN)"
        let result = try token.keybridge(["doctor", "--json", "--key", key, "--bank", "https://localhost:1/"],
                                         extra: ["PKCS11SPY": FreshToken.module, "PKCS11SPY_OUTPUT": log])
        XCTAssertEqual(result.status, 3, result.combined)
        let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
        XCTAssertEqual(document["verdict"] as? String, "unfit")
        let status = statuses(document)
        XCTAssertEqual(status["login"], "failed")
        XCTAssertTrue(detail(document, "login").contains("CKR_PIN_INCORRECT") && detail(document, "login").contains("tried once"), detail(document, "login"))
        for id in ["key", "mechanisms", "certificate", "match", "chain", "expiry", "psd2", "bank"] {
            XCTAssertEqual(status[id], "skipped", "\(id): \(detail(document, id))")
        }
        XCTAssertFalse(result.combined.contains("9999"), "the PIN appeared in the output")
        let calls = try String(contentsOfFile: log, encoding: .utf8).components(separatedBy: "\n")
        XCTAssertTrue(calls.contains { $0.hasSuffix(": C_GetTokenInfo") }, "pkcs11-spy logged nothing")
        XCTAssertEqual(calls.filter { $0.hasSuffix(": C_Login") }.count, 1)

        // The token counted the failure: the next run warns before logging in, and a good PIN passes.
        let (again, againDocument) = try Setup.doctorFor(token: token, key: token.keyURI("key"))
        XCTAssertEqual(statuses(againDocument)["pin-flags"], "warning", detail(againDocument, "pin-flags"))
        XCTAssertTrue(detail(againDocument, "pin-flags").contains("CKF_USER_PIN_COUNT_LOW"))
        XCTAssertEqual(statuses(againDocument)["login"], "passed", again.combined)
    }

    func testTokenWithoutPSSWarnsThatTLS13GoesThroughRawRSA() throws {
        let setup = try setup()
        let noPSS = try setup.token.restrictedConfig("-CKM_RSA_PKCS_PSS,CKM_RSA_PKCS_PSS,CKM_SHA1_RSA_PKCS_PSS,CKM_SHA224_RSA_PKCS_PSS,CKM_SHA256_RSA_PKCS_PSS,CKM_SHA384_RSA_PKCS_PSS,CKM_SHA512_RSA_PKCS_PSS",
                                                     name: "softhsm2-nopss.conf")
        let (result, document) = try setup.doctor(["--key", setup.key], config: noPSS)
        XCTAssertEqual(result.status, 1, result.combined)
        XCTAssertEqual(document["verdict"] as? String, "warnings")
        XCTAssertEqual(statuses(document)["mechanisms"], "warning")
        XCTAssertTrue(detail(document, "mechanisms").contains("TLS 1.3 goes through raw RSA (CKM_RSA_X_509"), detail(document, "mechanisms"))
        XCTAssertEqual(statuses(document).filter { $0.value == "warning" }.count, 1, "\(statuses(document))")

        // Without raw RSA as well, TLS 1.3 is impossible: still a warning, with that reason.
        let pkcs1Only = try setup.token.restrictedConfig("-CKM_RSA_PKCS_PSS,CKM_RSA_PKCS_PSS,CKM_SHA1_RSA_PKCS_PSS,CKM_SHA224_RSA_PKCS_PSS,CKM_SHA256_RSA_PKCS_PSS,CKM_SHA384_RSA_PKCS_PSS,CKM_SHA512_RSA_PKCS_PSS,CKM_RSA_X_509",
                                                         name: "softhsm2-pkcs1only.conf")
        let (limited, limitedDocument) = try setup.doctor(["--key", setup.key], config: pkcs1Only)
        XCTAssertEqual(limited.status, 1, limited.combined)
        XCTAssertTrue(detail(limitedDocument, "mechanisms").contains("TLS 1.3 is not possible with this key"), detail(limitedDocument, "mechanisms"))
    }

    func testExpiredCertificateFailsAndOneExpiringSoonWarns() throws {
        let setup = try setup()
        let request = setup.directory + "/renewal.csr"
        XCTAssertEqual(try setup.token.keybridge(["keys", "csr", "--key", setup.key, "--subject", "/C=DE/O=Doctor TPP GmbH/CN=localhost",
                                                  "--eidas-role", "PSP_AI", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-654321", "-o", request]).status, 0)
        let expired = setup.directory + "/expired.pem"
        try Setup.issue(request, days: -1, to: expired)
        let (result, document) = try setup.doctor(["--key", setup.key, "--cert", try setup.chainFile(leaf: expired, name: "expired-chain.pem")])
        XCTAssertEqual(result.status, 3, result.combined)
        XCTAssertEqual(document["verdict"] as? String, "unfit")
        XCTAssertEqual(statuses(document)["expiry"], "failed")
        XCTAssertTrue(detail(document, "expiry").contains("'localhost' expired on"), detail(document, "expiry"))
        // Only the expiry is wrong: the key still matches and the chain is complete.
        XCTAssertEqual(statuses(document)["match"], "passed")
        XCTAssertEqual(statuses(document)["chain"], "passed")

        let soon = setup.directory + "/soon.pem"
        try Setup.issue(request, days: 10, to: soon)
        let (warned, warnedDocument) = try setup.doctor(["--key", setup.key, "--cert", try setup.chainFile(leaf: soon, name: "soon-chain.pem")])
        XCTAssertEqual(warned.status, 1, warned.combined)
        XCTAssertEqual(statuses(warnedDocument)["expiry"], "warning")
        XCTAssertTrue(detail(warnedDocument, "expiry").contains("expires in 9 days") || detail(warnedDocument, "expiry").contains("expires in 10 days"),
                      detail(warnedDocument, "expiry"))
    }

    func testMissingIntermediateFailsTheChainCheck() throws {
        let setup = try setup()
        let (result, document) = try setup.doctor(["--key", setup.key, "--cert", try setup.chainFile(leaf: setup.leaf, withIntermediate: false, name: "leaf-only.pem")])
        XCTAssertEqual(result.status, 3, result.combined)
        XCTAssertEqual(statuses(document)["chain"], "failed")
        XCTAssertTrue(detail(document, "chain").contains("no certificate for 'CN=KeyBridge Test QTSP CA"), detail(document, "chain"))
        XCTAssertEqual(statuses(document)["match"], "passed")
        XCTAssertEqual(statuses(document)["expiry"], "passed")
        // Control: the same leaf with its intermediate passes.
        let (complete, completeDocument) = try setup.doctor(["--key", setup.key, "--cert", try setup.chainFile(leaf: setup.leaf, name: "full.pem")])
        XCTAssertEqual(complete.status, 0, complete.combined)
        XCTAssertEqual(statuses(completeDocument)["chain"], "passed")
    }

    func testCertificateOfAnotherKeyAndNonPSD2CertificateAreReported() throws {
        let setup = try setup()
        // The shared token's QWAC belongs to a key on another token.
        let (result, document) = try setup.doctor(["--key", setup.key, "--cert", shared.pki("client-rsa-chain.pem")])
        XCTAssertEqual(result.status, 3, result.combined)
        XCTAssertEqual(statuses(document)["match"], "failed")
        XCTAssertTrue(detail(document, "match").contains("their public keys differ"), detail(document, "match"))
        // A QSealC without a PSD2 statement (for a file key): the PSD2 check warns.
        let (noPSD2, noPSD2Document) = try setup.doctor(["--key", setup.key, "--cert", shared.pki("negative/no-psd2.pem")])
        XCTAssertEqual(noPSD2.status, 3, noPSD2.combined)
        XCTAssertEqual(statuses(noPSD2Document)["psd2"], "warning", detail(noPSD2Document, "psd2"))
        XCTAssertTrue(detail(noPSD2Document, "psd2").contains("no PSD2 statement"), detail(noPSD2Document, "psd2"))
    }

    func testUsageErrors() throws {
        let setup = try setup()
        for (arguments, expected) in [([String](), "name what to check"), (["--key", "/tmp/key.pem"], "must be a pkcs11: URI"),
                                      (["--key", setup.key, "--bank", "http://x"], "https://"), (["--key", setup.key, "--frobnicate"], "unknown option")] {
            let result = try setup.token.keybridge(["doctor"] + arguments)
            XCTAssertEqual(result.status, 2, result.combined)
            Check.oneErrorLine(result)
            XCTAssertTrue(result.standardError.contains(expected), result.standardError)
        }
    }
}

extension DoctorCommandTests.Setup {
    /// A doctor run (JSON) for any token and key, with the shared test root as --cacert.
    static func doctorFor(token: FreshToken, key: String) throws -> (Command.Result, [String: Any]) {
        let result = try token.keybridge(["doctor", "--json", "--key", key])
        let document = (try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8))) as? [String: Any] ?? [:]
        return (result, document)
    }
}

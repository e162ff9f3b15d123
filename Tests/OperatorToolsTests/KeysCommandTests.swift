import Foundation
import KeyBridgeTestSupport
import XCTest

/// `keybridge keys` against SoftHSM: generate, list, csr and import-cert.
final class KeysCommandTests: XCTestCase {
    let shared = TestToken.shared

    // MARK: generate

    func testGenerateMakesSensitiveNeverExtractableKeysOfEveryType() throws {
        let token = try FreshToken()
        let types = [("rsa:2048", "RSA 2048 bits"), ("rsa:3072", "RSA 3072 bits"), ("ec:P-256", "EC_POINT 256 bits"),
                     ("ec:P-384", "EC_POINT 384 bits"), ("ec:P-521", "EC_POINT 528 bits"), ("ed25519", "EC_EDWARDS")]
        for (index, (type, _)) in types.enumerated() {
            let label = "k-" + type.replacingOccurrences(of: ":", with: "-")
            let uri = try token.generate(type, label: label, id: String(format: "a%d", index))
            XCTAssertEqual(uri, "pkcs11:token=operator;object=\(label);type=private;id=%A\(index)?pin-source=file:\(token.pinFile)&module-path=\(FreshToken.module)")
        }
        // pkcs11-tool, not our own listing, says what the token holds.
        let listing = try token.pkcs11ToolObjects()
        var blocks: [[String]] = []
        for line in listing.components(separatedBy: "\n") where !line.isEmpty {
            if !line.hasPrefix(" ") { blocks.append([line]) } else if !blocks.isEmpty { blocks[blocks.count - 1].append(line) }
        }
        let privateKeys = blocks.filter { $0[0].hasPrefix("Private Key Object") }
        XCTAssertEqual(privateKeys.count, types.count, listing)
        for block in privateKeys {
            let access = block.first { $0.contains("Access:") } ?? ""
            XCTAssertTrue(access.contains("sensitive"), block.joined(separator: "\n"))
            XCTAssertTrue(access.contains("never extractable"), block.joined(separator: "\n"))
            XCTAssertFalse(access.replacingOccurrences(of: "never extractable", with: "").contains("extractable"), block.joined(separator: "\n"))
            XCTAssertTrue(access.contains("local"), block.joined(separator: "\n"))
        }
        for (_, description) in types {
            XCTAssertTrue(listing.contains(description), "pkcs11-tool shows no \(description) key:\n\(listing)")
        }
    }

    func testGenerateRefusesEveryOptionThatWouldLetTheKeyOut() throws {
        let token = try FreshToken()
        for option in ["--extractable", "--extractable=true", "--not-sensitive", "--no-sensitive", "--session", "--sensitive=false", "--exportable"] {
            let result = try token.keybridge(["keys", "generate", "--type", "ec:P-256", "--label", "leaky", "--id", "99", "--token", token.uri, option])
            XCTAssertEqual(result.status, 2, "\(option): \(result.combined)")
            Check.oneErrorLine(result)
            XCTAssertTrue(result.standardError.contains("is refused") && result.standardError.contains("CKA_EXTRACTABLE=false"), result.standardError)
            XCTAssertEqual(result.standardOutput, "")
        }
        XCTAssertEqual(try token.count("Private Key Object"), 0, "a refused generation left a key behind")
        // Control: the same command without the option makes a key, so the count above can change.
        try token.generate("ec:P-256", label: "leaky", id: "99")
        XCTAssertEqual(try token.count("Private Key Object"), 1)
    }

    func testGenerateRefusesADuplicateLabelOrID() throws {
        let token = try FreshToken()
        try token.generate("ec:P-256", label: "first", id: "01")
        for (label, id) in [("first", "02"), ("second", "01")] {
            let result = try token.keybridge(["keys", "generate", "--type", "ec:P-256", "--label", label, "--id", id, "--token", token.uri])
            XCTAssertEqual(result.status, 3, result.combined)
            Check.oneErrorLine(result)
            XCTAssertTrue(result.standardError.contains("nothing was generated"), result.standardError)
            // The message says which of the two is taken, and does not call the old key by the new label.
            let taken = label == "first" ? "label 'first' is already used" : "id 01 is already used"
            XCTAssertTrue(result.standardError.contains(taken), result.standardError)
            XCTAssertTrue(result.standardError.contains("by private key 'first' (id 01)"), result.standardError)
            XCTAssertFalse(result.standardError.contains("with label '\(label)'"), result.standardError)
        }
        let both = try token.keybridge(["keys", "generate", "--type", "ec:P-256", "--label", "first", "--id", "01", "--token", token.uri])
        XCTAssertEqual(both.status, 3, both.combined)
        XCTAssertTrue(both.standardError.contains("label 'first' and id 01 are already used"), both.standardError)
        XCTAssertEqual(try token.count("Private Key Object"), 1)
    }

    func testGenerateRejectsUnknownTypesAndMissingOptions() throws {
        let token = try FreshToken()
        let cases: [([String], String)] = [
            (["--type", "rsa:1024", "--label", "a", "--id", "01", "--token", token.uri], "unknown --type"),
            (["--type", "dsa", "--label", "a", "--id", "01", "--token", token.uri], "unknown --type"),
            (["--type", "ec:P-256", "--id", "01", "--token", token.uri], "--label is required"),
            (["--type", "ec:P-256", "--label", "a", "--id", "xyz", "--token", token.uri], "--id must be"),
            (["--type", "ec:P-256", "--label", "a", "--id", "01"], "--token is required"),
        ]
        for (arguments, expected) in cases {
            let result = try token.keybridge(["keys", "generate"] + arguments)
            XCTAssertEqual(result.status, 2, result.combined)
            Check.oneErrorLine(result)
            XCTAssertTrue(result.standardError.contains(expected), result.standardError)
        }
    }

    /// Progress appears on a terminal (given by `script`) and never in captured standard error,
    /// for key generation and for listing many objects.
    func testGenerateAndListShowProgressOnlyOnATerminal() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: "/usr/bin/script"), "script (bsdutils) is not installed")
        let token = try FreshToken()
        let quiet = try token.keybridge(["keys", "generate", "--type", "rsa:2048", "--label", "quiet", "--id", "01", "--token", token.uri])
        XCTAssertEqual(quiet.status, 0, quiet.standardError)
        XCTAssertFalse(quiet.standardError.contains("generating"), quiet.standardError)
        XCTAssertFalse(quiet.standardError.contains("\r"), quiet.standardError)
        let command = [KeyBridgeExecutable.path, "keys", "generate", "--type", "rsa:2048", "--label", "loud", "--id", "02", "--token", token.uri]
            .map { "'" + $0 + "'" }.joined(separator: " ")
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.config
        environment.removeValue(forKey: "KEYBRIDGE_PROGRESS")
        let terminal = try Command.run(["/usr/bin/script", "-qec", command, "/dev/null"], environment: environment)
        XCTAssertEqual(terminal.status, 0, terminal.combined)
        XCTAssertTrue(terminal.standardOutput.contains("generating a rsa:2048 key pair on token 'operator'"), terminal.standardOutput)
        XCTAssertTrue(terminal.standardOutput.contains("pkcs11:token=operator;object=loud"), terminal.standardOutput)

        // Listing many objects (20 or more) shows a counter on a terminal, and nothing when captured.
        for index in 3...10 { try token.generate("ec:P-256", label: "bulk\(index)", id: String(format: "%02x", index)) }
        let listCommand = [KeyBridgeExecutable.path, "keys", "list", "--token", token.uri].map { "'" + $0 + "'" }.joined(separator: " ")
        let listed = try Command.run(["/usr/bin/script", "-qec", listCommand, "/dev/null"], environment: environment)
        XCTAssertEqual(listed.status, 0, listed.combined)
        XCTAssertTrue(listed.standardOutput.contains("reading token objects: 20/20"), listed.standardOutput)
        let captured = try token.keybridge(["keys", "list", "--token", token.uri])
        XCTAssertEqual(captured.status, 0, captured.standardError)
        XCTAssertEqual(captured.standardError, "")
        XCTAssertTrue(captured.standardOutput.contains("10 private keys, 10 public keys"), captured.standardOutput)
    }

    // MARK: list

    func testListShowsEveryKeyWithFlagsCertificateAndMechanisms() throws {
        let result = try KeyBridgeExecutable.run(["keys", "list", "--json", "--token", tokenURI()])
        XCTAssertEqual(result.status, 0, result.standardError)
        let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
        let objects = try XCTUnwrap(document["objects"] as? [[String: Any]])
        func object(_ label: String, _ type: String) throws -> [String: Any] {
            try XCTUnwrap(objects.first { $0["label"] as? String == label && $0["type"] as? String == type }, "\(label) \(type) not listed")
        }
        let rsa = try object("client-rsa", "private")
        XCTAssertEqual(rsa["keyType"] as? String, "rsa")
        XCTAssertEqual(rsa["bits"] as? Int, 2048)
        XCTAssertEqual(rsa["id"] as? String, "01")
        XCTAssertEqual(rsa["sensitive"] as? Bool, true)
        XCTAssertEqual(rsa["extractable"] as? Bool, false)
        XCTAssertEqual(rsa["alwaysAuthenticate"] as? Bool, false)
        XCTAssertTrue((rsa["mechanisms"] as? [String] ?? []).contains("CKM_RSA_PKCS_PSS"), "\(rsa)")
        let certificate = try XCTUnwrap(rsa["certificate"] as? [String: Any])
        XCTAssertTrue((certificate["subject"] as? String ?? "").contains("CN=tpp-rsa.example"), "\(certificate)")
        XCTAssertGreaterThan(certificate["daysUntilExpiry"] as? Int ?? 0, 30)
        // The URI listed is usable: it names exactly that key.
        let uri = try XCTUnwrap(rsa["uri"] as? String)
        XCTAssertTrue(uri.hasPrefix("pkcs11:token=keybridge;object=client-rsa;type=private;id=%01?"), uri)
        let ec384 = try object("client-ec384", "private")
        XCTAssertEqual(ec384["curve"] as? String, "P-384")
        XCTAssertEqual(ec384["mechanisms"] as? [String], ["CKM_ECDSA"])
        XCTAssertEqual(try object("client-p521", "private")["curve"] as? String, "P-521")
        XCTAssertEqual(try object("client-always-auth", "private")["alwaysAuthenticate"] as? Bool, true)
        XCTAssertEqual(try object("issuing-ca", "cert")["keyType"] as? NSNull, NSNull())

        // The restricted token: no PSS mechanisms listed for the same key.
        let noPSS = try KeyBridgeExecutable.run(["keys", "list", "--json", "--token", tokenURI()],
                                                environment: ["SOFTHSM2_CONF": shared.softHSMConfig("softhsm2-nopss.conf")])
        XCTAssertEqual(noPSS.status, 0, noPSS.standardError)
        XCTAssertFalse(noPSS.standardOutput.contains("PSS"), "the no-PSS token still lists PSS")
        XCTAssertTrue(noPSS.standardOutput.contains("CKM_RSA_X_509"))

        let text = try KeyBridgeExecutable.run(["keys", "list", "--token", tokenURI()])
        XCTAssertEqual(text.status, 0, text.standardError)
        XCTAssertTrue(text.standardOutput.hasPrefix("Token 'keybridge' ("), text.standardOutput)
        XCTAssertTrue(text.standardOutput.contains("Private key 'client-ec' (id 02)"))
        XCTAssertTrue(text.standardOutput.contains("sensitive, not extractable, never extractable, no always-authenticate"))
        XCTAssertFalse(text.combined.contains(shared.userPIN.trimmingCharacters(in: .whitespacesAndNewlines) + "\n"))
    }

    /// Without --token the module's every token would match: the answer is a usage error naming
    /// the missing option, not "2 tokens match".
    func testListWithoutTokenSaysTokenIsRequired() throws {
        for arguments in [["keys", "list"], ["keys", "list", "--json"], ["keys", "list", "--module", FreshToken.module]] {
            let result = try KeyBridgeExecutable.run(arguments, environment: ["SOFTHSM2_CONF": shared.softHSMConfig("softhsm2.conf")])
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.combined)")
            Check.oneErrorLine(result)
            XCTAssertTrue(result.standardError.contains("--token is required"), result.standardError)
            XCTAssertFalse(result.standardError.contains("tokens match"), result.standardError)
            XCTAssertEqual(result.standardOutput, "")
        }
        // Control: the same token config with --token lists the objects.
        let listed = try KeyBridgeExecutable.run(["keys", "list", "--token", tokenURI()],
                                                 environment: ["SOFTHSM2_CONF": shared.softHSMConfig("softhsm2.conf")])
        XCTAssertEqual(listed.status, 0, listed.standardError)
    }

    /// `keys list` and `doctor` name the same mechanisms for the same key, on a full token and on
    /// one without PSS (the control: the two sets differ, so the comparison can fail).
    func testListAndDoctorNameTheSameMechanisms() throws {
        func mechanisms(in text: String) -> Set<String> {
            var found: Set<String> = []
            var rest = Substring(text)
            while let start = rest.range(of: "CKM_") {
                let name = rest[start.lowerBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                found.insert(String(name))
                rest = rest[name.endIndex...]
            }
            return found
        }
        var seen: [Set<String>] = []
        for config in ["softhsm2.conf", "softhsm2-nopss.conf"] {
            let environment = ["SOFTHSM2_CONF": shared.softHSMConfig(config)]
            let list = try KeyBridgeExecutable.run(["keys", "list", "--json", "--token", tokenURI()], environment: environment)
            XCTAssertEqual(list.status, 0, list.standardError)
            let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(list.standardOutput.utf8)) as? [String: Any])
            let objects = try XCTUnwrap(document["objects"] as? [[String: Any]])
            let rsa = try XCTUnwrap(objects.first { $0["label"] as? String == "client-rsa" && $0["type"] as? String == "private" })
            let listed = Set(try XCTUnwrap(rsa["mechanisms"] as? [String]))
            let doctor = try KeyBridgeExecutable.run(["doctor", "--json", "--key", shared.rsaURI], environment: environment)
            let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(doctor.standardOutput.utf8)) as? [String: Any], doctor.combined)
            let check = try XCTUnwrap((report["checks"] as? [[String: Any]])?.first { $0["id"] as? String == "mechanisms" })
            let detail = try XCTUnwrap(check["detail"] as? String)
            XCTAssertEqual(mechanisms(in: detail), listed, "\(config): doctor says '\(detail)', keys list \(listed.sorted())")
            XCTAssertTrue(listed.contains("CKM_RSA_X_509"), "\(config): \(listed.sorted())")
            seen.append(listed)
        }
        XCTAssertNotEqual(seen[0], seen[1], "the no-PSS token lists the same mechanisms as the full one")
    }

    /// pkcs11-spy records every attribute asked for: CKA_VALUE only of certificates, and no
    /// secret attribute at all.
    func testListReadsOnlyPublicAttributes() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: FreshToken.spyModule), "pkcs11-spy (opensc) is not installed")
        let log = try Command.temporaryDirectory() + "/spy.log"
        let uri = "pkcs11:token=keybridge?module-path=\(FreshToken.spyModule)&pin-source=file:\(shared.stateDirectory)/user.pin"
        let result = try KeyBridgeExecutable.run(["keys", "list", "--token", uri],
                                                 environment: ["PKCS11SPY": FreshToken.module, "PKCS11SPY_OUTPUT": log])
        XCTAssertEqual(result.status, 0, result.standardError)
        let text = try String(contentsOfFile: log, encoding: .utf8)
        var classOf: [String: String] = [:]
        var valueReadFrom: Set<String> = []
        var object = ""
        var current = ""
        for line in text.components(separatedBy: "\n") {
            if let colon = line.firstIndex(of: ":"), line[..<colon].allSatisfy(\.isNumber), !line[..<colon].isEmpty {
                current = line
                continue
            }
            guard current.hasSuffix("C_GetAttributeValue") else { continue }
            if line.hasPrefix("[in] hObject = ") { object = String(line.dropFirst("[in] hObject = ".count)) }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, fields[0] == "CKA_CLASS", fields[1].hasPrefix("CKO_") { classOf[object] = String(fields[1]) }
            if fields.first == "CKA_VALUE" { valueReadFrom.insert(object) }
        }
        for secret in ["CKA_PRIVATE_EXPONENT", "CKA_PRIME_1", "CKA_PRIME_2", "CKA_EXPONENT_1", "CKA_EXPONENT_2", "CKA_COEFFICIENT"] {
            XCTAssertFalse(text.contains(secret), "keys list asked for \(secret)")
        }
        // Controls: the parser saw private keys and saw certificate values being read.
        XCTAssertTrue(classOf.values.contains("CKO_PRIVATE_KEY"), "no private key seen in the spy log")
        XCTAssertFalse(valueReadFrom.isEmpty, "no CKA_VALUE read seen at all")
        for handle in valueReadFrom {
            XCTAssertEqual(classOf[handle], "CKO_CERTIFICATE", "CKA_VALUE read from object \(handle)")
        }
    }

    // MARK: csr

    func testCSRIsSignedByTheTokenKeyAndCarriesThePSD2Statements() throws {
        let token = try FreshToken()
        let directory = try Command.temporaryDirectory()
        for (type, kind, qcType) in [("ec:P-256", "--qwac", "0.4.0.1862.1.6.3"), ("rsa:2048", "--qseal", "0.4.0.1862.1.6.2")] {
            let label = "csr-" + type.replacingOccurrences(of: ":", with: "-")
            let key = try token.generate(type, label: label, id: kind == "--qwac" ? "c1" : "c2")
            let request = directory + "/\(label).csr"
            let made = try token.keybridge(["keys", "csr", "--key", key, "--subject", "/C=DE/O=Example TPP GmbH/CN=tpp.example",
                                            "--eidas-role", "PSP_AI,PSP_PI,PSP_IC", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-123456",
                                            kind, "-o", request])
            XCTAssertEqual(made.status, 0, made.standardError)
            // openssl checks the token's signature with the request's public key.
            let verified = try Check.openssl(["req", "-in", request, "-verify", "-noout", "-subject"])
            XCTAssertEqual(verified.status, 0, verified.combined)
            // openssl 3.0 exits 0 even when the check fails, so its verdict is read from the text.
            XCTAssertTrue(verified.combined.contains("verify OK"), verified.combined)
            XCTAssertTrue(verified.standardOutput.contains("organizationIdentifier = PSDDE-BAFIN-123456"), verified.standardOutput)
            // The request's public key is the token key's (pkcs11-tool exports it independently).
            let requestKey = try Check.openssl(["req", "-in", request, "-noout", "-pubkey"]).standardOutput
            XCTAssertTrue(requestKey.contains("BEGIN PUBLIC KEY"))
            let exported = directory + "/\(label).pub.der"
            let read = try Command.run(["pkcs11-tool", "--module", FreshToken.module, "--token-label", token.label, "--read-object",
                                        "--type", "pubkey", "--label", label, "-o", exported],
                                       environment: ["SOFTHSM2_CONF": token.config, "PATH": "/usr/bin:/bin"])
            XCTAssertEqual(read.status, 0, read.combined)
            let tokenKey = try Check.openssl(["pkey", "-pubin", "-inform", "DER", "-in", exported]).standardOutput
            XCTAssertEqual(requestKey, tokenKey)

            // The test CA issues it, copying the requested extensions, and cert inspect reads them back.
            let certificate = directory + "/\(label).pem"
            let issued = try Check.openssl(["x509", "-req", "-in", request, "-CA", shared.pki("issuing-ca.pem"), "-CAkey", shared.pki("issuing-ca-key.pem"),
                                            "-days", "30", "-copy_extensions", "copy", "-out", certificate])
            XCTAssertEqual(issued.status, 0, issued.combined)
            let inspected = try token.keybridge(["cert", "inspect", "--json", certificate])
            XCTAssertEqual(inspected.status, 0, inspected.standardError)
            let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(inspected.standardOutput.utf8)) as? [String: Any])
            let qc = try XCTUnwrap(document["qcStatements"] as? [String: Any])
            XCTAssertEqual(qc["compliance"] as? Bool, true)
            XCTAssertEqual((qc["types"] as? [[String: Any]])?.compactMap { $0["oid"] as? String }, [qcType])
            let psd2 = try XCTUnwrap(qc["psd2"] as? [String: Any])
            XCTAssertEqual((psd2["roles"] as? [[String: Any]])?.compactMap { $0["oid"] as? String },
                           ["0.4.0.19495.1.3", "0.4.0.19495.1.2", "0.4.0.19495.1.4"])
            XCTAssertEqual((psd2["roles"] as? [[String: Any]])?.compactMap { $0["name"] as? String }, ["PSP_AI", "PSP_PI", "PSP_IC"])
            XCTAssertEqual(psd2["ncaId"] as? String, "DE-BAFIN")
            XCTAssertEqual(psd2["ncaName"] as? String, "Federal Financial Supervisory Authority")
            let subject = try XCTUnwrap(document["subject"] as? [String: Any])
            XCTAssertEqual(subject["organizationIdentifier"] as? String, "PSDDE-BAFIN-123456")
        }
        // Control: one flipped byte in a request's signature makes openssl refuse it.
        let pem = try String(contentsOfFile: directory + "/csr-ec-P-256.csr", encoding: .utf8)
        var der = try XCTUnwrap(Data(base64Encoded: pem.components(separatedBy: "\n").filter { !$0.hasPrefix("-----") }.joined()))
        der[der.count - 3] ^= 0x01
        let tampered = directory + "/tampered.der"
        try der.write(to: URL(fileURLWithPath: tampered))
        let refused = try Check.openssl(["req", "-inform", "DER", "-in", tampered, "-verify", "-noout"])
        XCTAssertTrue(refused.combined.contains("verify failure") && !refused.combined.contains("verify OK"),
                      "openssl accepted a tampered request: \(refused.combined)")
    }

    func testCSRRSA2253SubjectAndBadInput() throws {
        let token = try FreshToken()
        let key = try token.generate("ec:P-256", label: "subject", id: "51")
        let ok = try token.keybridge(["keys", "csr", "--key", key, "--subject", "CN=tpp.example,organizationIdentifier=PSDDE-BAFIN-123456,O=Example\\, Inc.,C=DE",
                                      "--eidas-role", "PSP_AS", "--nca", "DE-BAFIN"])
        XCTAssertEqual(ok.status, 0, ok.standardError)
        let parsed = try Check.openssl(["req", "-noout", "-subject", "-nameopt", "RFC2253"], input: Data(ok.standardOutput.utf8))
        XCTAssertEqual(parsed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines),
                       "subject=CN=tpp.example,organizationIdentifier=PSDDE-BAFIN-123456,O=Example\\, Inc.,C=DE")
        let base = ["keys", "csr", "--key", key, "--subject", "/C=DE/O=Example/CN=tpp.example"]
        let cases: [([String], String)] = [
            (["--eidas-role", "PSP_XX", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-1"], "unknown PSD2 role"),
            (["--eidas-role", "PSP_AI", "--nca", "BAFIN", "--org-id", "PSDDE-BAFIN-1"], "is not of the form CC-NCA"),
            (["--eidas-role", "PSP_AI", "--nca", "DE-BAFIN"], "no organizationIdentifier"),
            (["--eidas-role", "PSP_AI", "--nca", "DE-BAFIN", "--org-id", "DE-123"], "is not a PSD2 one"),
            (["--eidas-role", "PSP_AI", "--nca", "FR-ACPR", "--org-id", "PSDFR-ACPR-1"], "--nca-name"),
            (["--eidas-role", "PSP_AI", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-1", "--qwac", "--qseal"], "not both"),
        ]
        for (arguments, expected) in cases {
            let result = try token.keybridge(base + arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.combined)")
            Check.oneErrorLine(result)
            XCTAssertTrue(result.standardError.contains(expected), result.standardError)
            XCTAssertEqual(result.standardOutput, "")
        }
    }

    // MARK: import-cert

    func testImportCertRefusesAMismatchedLeafAndStoresAMatchingChain() throws {
        let token = try FreshToken()
        let directory = try Command.temporaryDirectory()
        let key = try token.generate("ec:P-256", label: "qwac", id: "0a")
        let other = try token.generate("ec:P-256", label: "other", id: "0b")
        let request = directory + "/qwac.csr"
        let made = try token.keybridge(["keys", "csr", "--key", key, "--subject", "/C=DE/O=Example TPP GmbH/CN=localhost",
                                        "--eidas-role", "PSP_AI", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-123456", "-o", request])
        XCTAssertEqual(made.status, 0, made.standardError)
        let leaf = directory + "/qwac.pem"
        let extensions = directory + "/client.ext"
        try "extendedKeyUsage = clientAuth\nkeyUsage = critical, digitalSignature\n".write(toFile: extensions, atomically: true, encoding: .utf8)
        let issued = try Check.openssl(["x509", "-req", "-in", request, "-CA", shared.pki("issuing-ca.pem"), "-CAkey", shared.pki("issuing-ca-key.pem"),
                                        "-days", "30", "-copy_extensions", "copy", "-extfile", extensions, "-out", leaf])
        XCTAssertEqual(issued.status, 0, issued.combined)
        let chain = directory + "/chain.pem"
        try (String(contentsOfFile: leaf, encoding: .utf8) + String(contentsOfFile: shared.pki("issuing-ca.pem"), encoding: .utf8)
             + String(contentsOfFile: shared.pki("root-ca.pem"), encoding: .utf8)).write(toFile: chain, atomically: true, encoding: .utf8)

        // The wrong key: one error, exit 4, and no certificate object written.
        let refused = try token.keybridge(["keys", "import-cert", "--chain", chain, "--key", other])
        XCTAssertEqual(refused.status, 4, refused.combined)
        Check.oneErrorLine(refused)
        XCTAssertTrue(refused.standardError.contains("public keys differ") && refused.standardError.contains("Nothing was stored"), refused.standardError)
        XCTAssertEqual(try token.count("Certificate Object"), 0)

        // The right key: leaf with the key's id and label, the intermediate with its SKI, no root.
        let stored = try token.keybridge(["keys", "import-cert", "--chain", chain, "--key", key])
        XCTAssertEqual(stored.status, 0, stored.combined)
        XCTAssertTrue(stored.standardOutput.contains("stored: 'qwac' (id 0a)"), stored.standardOutput)
        XCTAssertTrue(stored.standardOutput.contains("stored: 'KeyBridge Test QTSP CA'"), stored.standardOutput)
        XCTAssertTrue(stored.standardOutput.contains("skipped (self-signed root"), stored.standardOutput)
        let certificates = try token.pkcs11ToolObjects(type: "cert")
        XCTAssertEqual(certificates.components(separatedBy: "\n").filter { $0.hasPrefix("Certificate Object") }.count, 2, certificates)
        XCTAssertTrue(certificates.contains("label:      qwac") && certificates.contains("ID:         0a"), certificates)
        // Control for the refusal above: the count does move when something is stored.
        let again = try token.keybridge(["keys", "import-cert", "--chain", chain, "--key", key])
        XCTAssertEqual(again.status, 0, again.combined)
        XCTAssertTrue(again.standardOutput.contains("already on the token: 'qwac'"), again.standardOutput)
        XCTAssertEqual(try token.count("Certificate Object"), 2)

        // cert inspect reads the token object, and the chain on the token is enough for mTLS.
        let inspected = try token.keybridge(["cert", "inspect", token.certificateURI("qwac")])
        XCTAssertEqual(inspected.status, 0, inspected.standardError)
        XCTAssertTrue(inspected.standardOutput.contains("PSD2 roles:             PSP_AI (0.4.0.19495.1.3)"), inspected.standardOutput)
        let bank = BankServer.shared
        let call = try token.keybridge(["request", "--cacert", shared.pki("root-ca.pem"), "--cert", token.certificateURI("qwac"),
                                        "--key", key, bank.url("/accounts")])
        XCTAssertEqual(call.status, 0, call.standardError)
        XCTAssertTrue(call.standardOutput.contains("\"verify\":\"SUCCESS\""), call.standardOutput)
        XCTAssertTrue(call.standardOutput.contains("CN=localhost"), call.standardOutput)
    }

    func testImportCertRefusesAReplacementWithoutReplace() throws {
        let token = try FreshToken()
        let directory = try Command.temporaryDirectory()
        let key = try token.generate("ec:P-256", label: "renew", id: "0c")
        var leaves: [String] = []
        for serial in 1...2 {
            let request = directory + "/r\(serial).csr"
            XCTAssertEqual(try token.keybridge(["keys", "csr", "--key", key, "--subject", "/C=DE/O=Example/CN=renew\(serial)",
                                                "--eidas-role", "PSP_AI", "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-1", "-o", request]).status, 0)
            let leaf = directory + "/r\(serial).pem"
            XCTAssertEqual(try Check.openssl(["x509", "-req", "-in", request, "-CA", shared.pki("issuing-ca.pem"), "-CAkey", shared.pki("issuing-ca-key.pem"),
                                              "-days", "30", "-out", leaf]).status, 0)
            leaves.append(leaf)
        }
        XCTAssertEqual(try token.keybridge(["keys", "import-cert", "--chain", leaves[0], "--key", key]).status, 0)
        let refused = try token.keybridge(["keys", "import-cert", "--chain", leaves[1], "--key", key])
        XCTAssertEqual(refused.status, 4, refused.combined)
        Check.oneErrorLine(refused)
        XCTAssertTrue(refused.standardError.contains("--replace"), refused.standardError)
        let replaced = try token.keybridge(["keys", "import-cert", "--chain", leaves[1], "--key", key, "--replace"])
        XCTAssertEqual(replaced.status, 0, replaced.combined)
        let certificates = try token.pkcs11ToolObjects(type: "cert")
        XCTAssertTrue(certificates.contains("CN=renew2") && !certificates.contains("CN=renew1"), certificates)
    }

    private func tokenURI() -> String {
        "pkcs11:token=keybridge?module-path=\(FreshToken.module)&pin-source=file:\(shared.stateDirectory)/user.pin"
    }
}

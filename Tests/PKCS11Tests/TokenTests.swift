import Foundation
import KeyBridgeTestSupport
import PKCS11
import XCTest

/// Shared helpers for the token tests. Every test touches `TestToken.shared` before the module is
/// loaded, because SoftHSM reads `SOFTHSM2_CONF` only once, at `C_Initialize`.
enum TokenFixture {
    static let modulePath = "/usr/lib/softhsm/libsofthsm2.so"
    static let tokenLabel = "keybridge"
    static let keyLabels = ["client-rsa", "client-ec", "client-ec384"]

    static func module() throws -> PKCS11Module {
        _ = TestToken.shared
        return try PKCS11Module.load(path: modulePath)
    }

    static func token(_ label: String = tokenLabel) throws -> Token {
        try module().token(matching: PKCS11URI(parsing: "pkcs11:token=\(label)"))
    }

    /// The test token, logged in. Logins last for the whole process, so this is idempotent.
    static func loggedInToken() throws -> Token {
        let token = try token()
        try token.login(pin: PIN(TestToken.shared.userPIN))
        XCTAssertTrue(token.isLoggedIn)
        return token
    }

    static func uri(object: String) throws -> PKCS11URI {
        try PKCS11URI(parsing: "pkcs11:token=\(tokenLabel);object=\(object);type=private?module-path=\(modulePath)")
    }

    /// The process environment plus the test token's SoftHSM config, for command-line tools.
    static func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = TestToken.shared.softHSMConfig
        environment.merge(extra) { _, new in new }
        return environment
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Runs a command and fails the test with its output when it exits non-zero.
    @discardableResult
    static func mustRun(_ arguments: [String], environment: [String: String]? = nil,
                        file: StaticString = #filePath, line: UInt = #line) throws -> Command.Result {
        let result = try Command.run(arguments, environment: environment)
        XCTAssertEqual(result.status, 0, "\(arguments.joined(separator: " ")): \(result.combined)", file: file, line: line)
        return result
    }

    /// A digest computed by OpenSSL, not by the code under test.
    static func digest(_ algorithm: String, ofFile path: String) throws -> [UInt8] {
        let result = try mustRun(["openssl", "dgst", "-\(algorithm)", "-r", path])
        let hex = String(result.standardOutput.split(separator: " ").first ?? "")
        return try bytes(hex: hex)
    }

    static func bytes(hex: String) throws -> [UInt8] {
        let characters = Array(hex.trimmingCharacters(in: .whitespacesAndNewlines))
        guard characters.count % 2 == 0, !characters.isEmpty else { throw FixtureError(message: "bad hex: \(hex)") }
        return try stride(from: 0, to: characters.count, by: 2).map { index in
            guard let byte = UInt8(String(characters[index...index + 1]), radix: 16) else {
                throw FixtureError(message: "bad hex: \(hex)")
            }
            return byte
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02X", $0) }.joined()
    }

    /// The public key of a test certificate, as a PEM file made by OpenSSL.
    static func publicKeyFile(ofCertificate name: String, in directory: String) throws -> String {
        let path = directory + "/\(name)-pub.pem"
        let result = try mustRun(["openssl", "x509", "-pubkey", "-noout", "-in", TestToken.shared.pki("\(name).pem")])
        try Data(result.standardOutput.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from the token's raw r||s.
    static func derECDSASignature(_ raw: [UInt8]) -> [UInt8] {
        func length(_ count: Int) -> [UInt8] {
            count < 0x80 ? [UInt8(count)] : [0x81, UInt8(count)]
        }
        func integer(_ slice: ArraySlice<UInt8>) -> [UInt8] {
            var value = Array(slice.drop { $0 == 0 })
            if value.isEmpty { value = [0] }
            if value[0] & 0x80 != 0 { value.insert(0, at: 0) }
            return [0x02] + length(value.count) + value
        }
        let half = raw.count / 2
        let body = integer(raw[..<half]) + integer(raw[half...])
        return [0x30] + length(body.count) + body
    }

    static func tampered(_ bytes: [UInt8], at index: Int? = nil) -> [UInt8] {
        var copy = bytes
        copy[index ?? copy.count / 2] ^= 0x01
        return copy
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

final class TokenTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        _ = TestToken.shared
        directory = try Command.temporaryDirectory()
    }

    override func tearDown() {
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
    }

    // MARK: Slots and login

    func testSlotsShowTheTestTokenWithItsFlags() throws {
        let module = try TokenFixture.module()
        XCTAssertEqual(module.path, TokenFixture.modulePath)
        XCTAssertEqual(module.info.manufacturer, "SoftHSM")
        let slots = try module.slots()
        let matching = slots.filter { $0.token?.label == TokenFixture.tokenLabel }
        XCTAssertEqual(matching.count, 1, "slots: \(slots)")
        let info = try XCTUnwrap(matching.first?.token)
        XCTAssertTrue(info.flags.contains(.loginRequired))
        XCTAssertTrue(info.flags.contains(.userPINInitialized))
        XCTAssertTrue(info.flags.contains(.tokenInitialized))
        XCTAssertFalse(info.flags.contains(.userPINLocked))
        XCTAssertEqual(info.model, "SoftHSM v2")
        XCTAssertFalse(info.serialNumber.isEmpty)

        // Token.info() reads the same token the slot list shows.
        let token = try TokenFixture.token()
        XCTAssertEqual(UInt64(token.slotID), matching.first?.id)
        XCTAssertEqual(try token.info().serialNumber, info.serialNumber)
        // The same URI gives the same (pooled) token object.
        XCTAssertTrue(try TokenFixture.token() === token)
    }

    func testLoginWithTheRightPINWorksAndIsIdempotent() throws {
        let token = try TokenFixture.token()
        try token.login(pin: PIN(TestToken.shared.userPIN))
        XCTAssertTrue(token.isLoggedIn)
        try token.login(pin: PIN(TestToken.shared.userPIN))
        XCTAssertTrue(token.isLoggedIn)
        // Once logged in no PIN is needed, so nothing is asked of the token again.
        try token.login(pin: nil)
        XCTAssertTrue(token.isLoggedIn)
        // Private objects are visible only to a logged-in user: this proves the login is real.
        let keys = try token.findObjects(matching: PKCS11URI(parsing: "pkcs11:"), objectClass: .privateKey)
        // softhsm-setup makes six: RSA, P-256, P-384, P-521, the always-authenticate RSA key and
        // the QSealC's P-256 key (qseal-ec).
        XCTAssertEqual(keys.count, 6)
    }

    func testMechanismsIncludeWhatKeyBridgeSignsWith() throws {
        let mechanisms = try TokenFixture.token().mechanisms()
        XCTAssertTrue(mechanisms.contains(SignatureMechanism.rsaPKCS1.mechanismType))
        XCTAssertTrue(mechanisms.contains(0x1)) // CKM_RSA_PKCS
        XCTAssertTrue(mechanisms.contains(SignatureMechanism.rsaPSS(hash: .sha256, mgf1: .sha256, saltLength: 32).mechanismType))
        XCTAssertTrue(mechanisms.contains(0xD)) // CKM_RSA_PKCS_PSS
        XCTAssertTrue(mechanisms.contains(SignatureMechanism.ecdsa.mechanismType))
        XCTAssertTrue(mechanisms.contains(0x1041)) // CKM_ECDSA
    }

    // MARK: Finding objects

    func testFindPrivateKeysByLabel() throws {
        let token = try TokenFixture.loggedInToken()
        var handles = Set<ObjectHandle>()
        for label in TokenFixture.keyLabels {
            let found = try token.findObjects(matching: PKCS11URI(parsing: "pkcs11:object=\(label)"), objectClass: .privateKey)
            XCTAssertEqual(found.count, 1, label)
            handles.formUnion(found)
            // Without a class, the label finds the key pair and the certificate.
            let all = try token.findObjects(matching: PKCS11URI(parsing: "pkcs11:object=\(label)"), objectClass: nil)
            XCTAssertEqual(all.count, 3, "\(label): private key, public key and certificate")
            XCTAssertTrue(Set(all).isSuperset(of: found))
        }
        XCTAssertEqual(handles.count, 3)
    }

    func testFindPrivateKeysByID() throws {
        let token = try TokenFixture.loggedInToken()
        for (index, label) in TokenFixture.keyLabels.enumerated() {
            let id = UInt8(index + 1)
            let byLabel = try token.findObjects(matching: PKCS11URI(parsing: "pkcs11:object=\(label)"), objectClass: .privateKey)
            let byURIID = try token.findObjects(matching: PKCS11URI(parsing: "pkcs11:id=%0\(id)"), objectClass: .privateKey)
            let byID = try token.findObjects(id: [id], objectClass: .privateKey)
            XCTAssertEqual(byURIID.count, 1, label)
            XCTAssertEqual(byURIID, byLabel, label)
            XCTAssertEqual(byID, byLabel, label)
            // Label and id must agree; a label with the wrong id finds nothing.
            let mismatched = try token.findObjects(matching: PKCS11URI(parsing: "pkcs11:object=\(label);id=%7F"), objectClass: .privateKey)
            XCTAssertEqual(mismatched, [], label)
        }
        XCTAssertEqual(try token.findObjects(id: [0x7F], objectClass: .privateKey), [])
    }

    func testFindCertificatesByType() throws {
        let token = try TokenFixture.loggedInToken()
        let certificates = try token.findObjects(matching: PKCS11URI(parsing: "pkcs11:type=cert"), objectClass: .certificate)
        // One per key (five QWACs and the QSealC), plus the issuing CA stored for chain building.
        XCTAssertEqual(certificates.count, 7)

        let rsaCertificate = try token.findObjects(id: [0x01], objectClass: .certificate)
        XCTAssertEqual(rsaCertificate.count, 1)
        let handle = try XCTUnwrap(rsaCertificate.first)
        XCTAssertTrue(certificates.contains(handle))
        let derPath = directory + "/client-rsa.der"
        try TokenFixture.mustRun(["openssl", "x509", "-in", TestToken.shared.pki("client-rsa.pem"), "-outform", "DER", "-out", derPath])
        XCTAssertEqual(try token.certificateDER(handle), try TokenFixture.read(derPath))

        // CKA_VALUE is read only for certificates, never for a key.
        let key = try XCTUnwrap(token.findObjects(id: [0x01], objectClass: .privateKey).first)
        XCTAssertThrowsError(try token.certificateDER(key)) { error in
            XCTAssertTrue((error as? PKCS11Error)?.reason.contains("not a certificate") == true, "\(error)")
        }
    }

    func testUnknownLabelFindsNothing() throws {
        let token = try TokenFixture.loggedInToken()
        let uri = try PKCS11URI(parsing: "pkcs11:object=no-such-object")
        XCTAssertEqual(try token.findObjects(matching: uri, objectClass: .privateKey), [])
        XCTAssertEqual(try token.findObjects(matching: uri, objectClass: .certificate), [])
        XCTAssertEqual(try token.findObjects(matching: uri, objectClass: nil), [])
    }

    func testResolvingAnUnknownKeyNamesItAndSuggestsAFix() throws {
        let uri = try TokenFixture.uri(object: "no-such-key")
        XCTAssertThrowsError(try PrivateKey.resolve(uri, pin: PIN(TestToken.shared.userPIN), allowPrompt: false)) { error in
            guard let error = error as? PKCS11Error else { return XCTFail("\(error)") }
            XCTAssertNil(error.returnValue)
            XCTAssertEqual(error.function, "key lookup")
            XCTAssertTrue(error.reason.contains("no-such-key"), error.reason)
            XCTAssertTrue(error.reason.contains("'keybridge'"), error.reason)
            XCTAssertTrue(error.reason.contains("check object="), error.reason)
            XCTAssertTrue(error.reason.contains("keybridge keys list"), error.reason)
        }
        // A URI that names no key at all is refused with advice, too.
        XCTAssertThrowsError(try PrivateKey.resolve(PKCS11URI(parsing: "pkcs11:token=keybridge?module-path=\(TokenFixture.modulePath)"),
                                                    pin: PIN(TestToken.shared.userPIN), allowPrompt: false)) { error in
            XCTAssertTrue((error as? PKCS11Error)?.reason.contains("add object=") == true, "\(error)")
        }
        // A URI for another object class is refused before the token is searched.
        XCTAssertThrowsError(try PrivateKey.resolve(PKCS11URI(parsing: "pkcs11:token=keybridge;object=client-rsa;type=cert?module-path=\(TokenFixture.modulePath)"),
                                                    pin: PIN(TestToken.shared.userPIN), allowPrompt: false)) { error in
            XCTAssertTrue((error as? PKCS11Error)?.reason.contains("type=cert") == true, "\(error)")
        }
    }

    func testUnknownTokenNamesTheTokensPresent() throws {
        let module = try TokenFixture.module()
        XCTAssertThrowsError(try module.token(matching: PKCS11URI(parsing: "pkcs11:token=no-such-token"))) { error in
            guard let error = error as? PKCS11Error else { return XCTFail("\(error)") }
            XCTAssertEqual(error.function, "token lookup")
            XCTAssertTrue(error.reason.contains("no-such-token"), error.reason)
            XCTAssertTrue(error.reason.contains("tokens present"), error.reason)
            XCTAssertTrue(error.reason.contains("'keybridge'"), error.reason)
            XCTAssertTrue(error.reason.contains("Fix token="), error.reason)
        }
        // The same through PrivateKey.resolve.
        let uri = try PKCS11URI(parsing: "pkcs11:token=no-such-token;object=client-rsa?module-path=\(TokenFixture.modulePath)")
        XCTAssertThrowsError(try PrivateKey.resolve(uri, pin: nil, allowPrompt: false)) { error in
            XCTAssertTrue((error as? PKCS11Error)?.reason.contains("'keybridge'") == true, "\(error)")
        }
    }

    func testMissingModuleFailsInDlopenNamingThePath() throws {
        _ = TestToken.shared
        let path = directory + "/no-such-module.so"
        XCTAssertThrowsError(try PKCS11Module.load(path: path)) { error in
            guard let error = error as? PKCS11Error else { return XCTFail("\(error)") }
            XCTAssertEqual(error.function, "dlopen")
            XCTAssertNil(error.returnValue)
            XCTAssertTrue(error.reason.contains(path), error.reason)
            XCTAssertTrue(error.description.contains(path), error.description)
        }
        let uri = try PKCS11URI(parsing: "pkcs11:token=keybridge;object=client-rsa?module-path=\(path)")
        XCTAssertThrowsError(try PKCS11Module.load(for: uri)) { error in
            XCTAssertEqual((error as? PKCS11Error)?.function, "dlopen")
        }
        XCTAssertThrowsError(try PrivateKey.resolve(uri, pin: nil, allowPrompt: false)) { error in
            XCTAssertEqual((error as? PKCS11Error)?.function, "dlopen")
            XCTAssertTrue((error as? PKCS11Error)?.reason.contains(path) == true, "\(error)")
        }
        // A file that exists but is no library also fails in dlopen, naming the path.
        let notALibrary = directory + "/not-a-library.so"
        try TokenFixture.write(Array("not an ELF file".utf8), to: notALibrary)
        XCTAssertThrowsError(try PKCS11Module.load(path: notALibrary)) { error in
            XCTAssertEqual((error as? PKCS11Error)?.function, "dlopen")
            XCTAssertTrue((error as? PKCS11Error)?.reason.contains(notALibrary) == true, "\(error)")
        }
    }

    func testMalformedURIsAreRejected() {
        let cases: [(String, PKCS11URIError.Code)] = [
            ("https://example.com/key", .invalidScheme),
            ("pkcs11:object=a;object=b", .duplicateAttribute),
            ("pkcs11:id=%zz", .invalidPercentEncoding),
        ]
        for (text, code) in cases {
            XCTAssertThrowsError(try PKCS11URI(parsing: text), text) { error in
                XCTAssertEqual((error as? PKCS11URIError)?.code, code, "\(text): \(error)")
            }
        }
    }

    // MARK: Signing, checked by OpenSSL

    func testRSAPKCS1SignatureOverDigestInfoVerifiesWithOpenSSL() throws {
        let token = try TokenFixture.loggedInToken()
        let key = try XCTUnwrap(token.findObjects(id: [0x01], objectClass: .privateKey).first)
        let message = directory + "/message"
        try TokenFixture.write(Array("KeyBridge RSA PKCS#1 v1.5 test message".utf8), to: message)
        let hash = try TokenFixture.digest("sha256", ofFile: message)
        XCTAssertEqual(hash.count, 32)

        let signature = try token.sign(HashAlgorithm.sha256.digestInfoPrefix + hash, with: key, mechanism: .rsaPKCS1)
        XCTAssertEqual(signature.count, 256)
        let publicKey = try TokenFixture.publicKeyFile(ofCertificate: "client-rsa", in: directory)
        let signaturePath = directory + "/signature"
        try TokenFixture.write(signature, to: signaturePath)
        let verify = ["openssl", "dgst", "-sha256", "-verify", publicKey, "-signature", signaturePath, message]
        let good = try Command.run(verify)
        XCTAssertEqual(good.status, 0, good.combined)
        XCTAssertTrue(good.standardOutput.contains("Verified OK"), good.combined)

        // Control: a changed signature must not verify.
        try TokenFixture.write(TokenFixture.tampered(signature), to: signaturePath)
        XCTAssertNotEqual(try Command.run(verify).status, 0)
        // Control: signing the bare hash (no DigestInfo) is what CKM_RSA_PKCS must not be given.
        try TokenFixture.write(try token.sign(hash, with: key, mechanism: .rsaPKCS1), to: signaturePath)
        XCTAssertNotEqual(try Command.run(verify).status, 0)

        // The same through PrivateKey, and PKCS#1 v1.5 is deterministic.
        let privateKey = try PrivateKey.resolve(TokenFixture.uri(object: "client-rsa"), pin: PIN(TestToken.shared.userPIN), allowPrompt: false)
        XCTAssertEqual(try privateKey.sign(HashAlgorithm.sha256.digestInfoPrefix + hash, mechanism: .rsaPKCS1), signature)
    }

    func testECDSASignaturesVerifyWithOpenSSLAfterDEREncoding() throws {
        let token = try TokenFixture.loggedInToken()
        for (id, name, digest, size) in [(UInt8(2), "client-ec", "sha256", 32), (UInt8(3), "client-ec384", "sha384", 48)] {
            let key = try XCTUnwrap(token.findObjects(id: [id], objectClass: .privateKey).first, name)
            let message = directory + "/message-\(name)"
            try TokenFixture.write(Array("KeyBridge ECDSA test message for \(name)".utf8), to: message)
            let hash = try TokenFixture.digest(digest, ofFile: message)

            let raw = try token.sign(hash, with: key, mechanism: .ecdsa)
            XCTAssertEqual(raw.count, 2 * size, "\(name): raw r||s")
            let publicKey = try TokenFixture.publicKeyFile(ofCertificate: name, in: directory)
            let signaturePath = directory + "/signature-\(name)"
            let verify = ["openssl", "dgst", "-\(digest)", "-verify", publicKey, "-signature", signaturePath, message]

            try TokenFixture.write(TokenFixture.derECDSASignature(raw), to: signaturePath)
            let good = try Command.run(verify)
            XCTAssertEqual(good.status, 0, "\(name): \(good.combined)")
            XCTAssertTrue(good.standardOutput.contains("Verified OK"), good.combined)

            // Controls: a changed r, a changed s, and the raw form OpenSSL cannot read.
            try TokenFixture.write(TokenFixture.derECDSASignature(TokenFixture.tampered(raw, at: 5)), to: signaturePath)
            XCTAssertNotEqual(try Command.run(verify).status, 0, name)
            try TokenFixture.write(TokenFixture.derECDSASignature(TokenFixture.tampered(raw, at: size + 5)), to: signaturePath)
            XCTAssertNotEqual(try Command.run(verify).status, 0, name)
            try TokenFixture.write(raw, to: signaturePath)
            XCTAssertNotEqual(try Command.run(verify).status, 0, name)
        }
    }

    func testRSAPSSSignatureVerifiesWithSaltLengthEqualToHashLength() throws {
        let token = try TokenFixture.loggedInToken()
        let key = try XCTUnwrap(token.findObjects(id: [0x01], objectClass: .privateKey).first)
        let message = directory + "/message"
        try TokenFixture.write(Array("KeyBridge RSA-PSS test message".utf8), to: message)
        let hash = try TokenFixture.digest("sha256", ofFile: message)
        let hashPath = directory + "/hash"
        try TokenFixture.write(hash, to: hashPath)

        let mechanism = SignatureMechanism.rsaPSS(hash: .sha256, mgf1: .sha256, saltLength: 32)
        let signature = try token.sign(hash, with: key, mechanism: mechanism)
        XCTAssertEqual(signature.count, 256)
        // PSS is randomised: a second signature differs but verifies too.
        let second = try token.sign(hash, with: key, mechanism: mechanism)
        XCTAssertNotEqual(signature, second)

        let publicKey = try TokenFixture.publicKeyFile(ofCertificate: "client-rsa", in: directory)
        let signaturePath = directory + "/signature"
        func verify(saltLength: Int) throws -> Command.Result {
            try Command.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", publicKey, "-in", hashPath,
                             "-sigfile", signaturePath, "-pkeyopt", "rsa_padding_mode:pss",
                             "-pkeyopt", "rsa_pss_saltlen:\(saltLength)", "-pkeyopt", "digest:sha256"])
        }
        for candidate in [signature, second] {
            try TokenFixture.write(candidate, to: signaturePath)
            let good = try verify(saltLength: 32)
            XCTAssertEqual(good.status, 0, good.combined)
            XCTAssertTrue(good.standardOutput.contains("Signature Verified Successfully"), good.combined)
        }
        // Control: OpenSSL checks the salt length exactly, so 20 must fail for a 32-byte salt.
        XCTAssertNotEqual(try verify(saltLength: 20).status, 0)
        // Control: a changed signature must not verify.
        try TokenFixture.write(TokenFixture.tampered(signature), to: signaturePath)
        XCTAssertNotEqual(try verify(saltLength: 32).status, 0)
    }

    // MARK: Key attributes

    func testRSAKeyAttributesMatchTheCertificate() throws {
        let key = try PrivateKey.resolve(TokenFixture.uri(object: "client-rsa"), pin: PIN(TestToken.shared.userPIN), allowPrompt: false)
        XCTAssertEqual(key.keyType, .rsa)
        XCTAssertEqual(key.label, "client-rsa")
        XCTAssertEqual(key.id, [0x01])
        XCTAssertEqual(key.tokenLabel, "keybridge")
        XCTAssertTrue(key.summary.contains("'keybridge'"), key.summary)
        XCTAssertTrue(key.summary.contains("'client-rsa'"), key.summary)
        XCTAssertTrue(key.summary.contains("id 01"), key.summary)

        guard case let .rsa(modulus, exponent) = key.publicKey else { return XCTFail("\(key.publicKey)") }
        let output = try TokenFixture.mustRun(["openssl", "x509", "-modulus", "-noout", "-in", TestToken.shared.pki("client-rsa.pem")])
        let expected = output.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(expected.hasPrefix("Modulus="), expected)
        XCTAssertEqual(TokenFixture.hex(Array(modulus.drop { $0 == 0 })), String(expected.dropFirst("Modulus=".count)))
        XCTAssertEqual(Array(exponent.drop { $0 == 0 }), [0x01, 0x00, 0x01])

        // The certificate stored with the same id is the one in the PKI folder.
        let derPath = directory + "/client-rsa.der"
        try TokenFixture.mustRun(["openssl", "x509", "-in", TestToken.shared.pki("client-rsa.pem"), "-outform", "DER", "-out", derPath])
        XCTAssertEqual(key.certificateDER, try TokenFixture.read(derPath))

        // SoftHSM leaves CKA_ALLOWED_MECHANISMS empty, which means every mechanism the token offers.
        let usable = try key.usableMechanisms()
        XCTAssertEqual(usable, try key.token.mechanisms())
        XCTAssertTrue(usable.contains(SignatureMechanism.rsaPKCS1.mechanismType))
    }

    func testECKeyAttributesMatchTheCertificate() throws {
        let key = try PrivateKey.resolve(TokenFixture.uri(object: "client-ec"), pin: PIN(TestToken.shared.userPIN), allowPrompt: false)
        XCTAssertEqual(key.keyType, .ec)
        XCTAssertEqual(key.id, [0x02])
        guard case let .ec(parameters, point) = key.publicKey else { return XCTFail("\(key.publicKey)") }
        // OID 1.2.840.10045.3.1.7 (prime256v1)
        XCTAssertEqual(parameters, [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07])
        let pointOctets = try XCTUnwrap(point)
        // DER OCTET STRING holding the uncompressed point: 04 41 04 x y.
        XCTAssertEqual(Array(pointOctets.prefix(3)), [0x04, 0x41, 0x04])
        let spkiPath = directory + "/client-ec-spki.der"
        let pem = try TokenFixture.publicKeyFile(ofCertificate: "client-ec", in: directory)
        try TokenFixture.mustRun(["openssl", "pkey", "-pubin", "-in", pem, "-outform", "DER", "-out", spkiPath])
        let spki = try TokenFixture.read(spkiPath)
        XCTAssertEqual(Array(spki.suffix(65)), Array(pointOctets.dropFirst(2)))
    }

    func testPrivateKeysAreSensitiveAndNotExtractable() throws {
        let result = try TokenFixture.mustRun(
            ["pkcs11-tool", "--module", TokenFixture.modulePath, "--token-label", TokenFixture.tokenLabel,
             "--login", "--pin", "env:KB_TEST_PIN", "--list-objects", "--type", "privkey"],
            environment: TokenFixture.environment(["KB_TEST_PIN": TestToken.shared.userPIN]))
        // One block per object: a "Private Key Object" line, then indented attribute lines.
        var blocks: [[String]] = []
        for line in result.standardOutput.split(separator: "\n").map(String.init) {
            if line.hasPrefix("Private Key Object") { blocks.append([line]) } else if !blocks.isEmpty { blocks[blocks.count - 1].append(line) }
        }
        XCTAssertEqual(blocks.count, 6, result.standardOutput)
        func value(of name: String, in block: [String]) -> String? {
            for line in block {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name {
                    return parts[1].trimmingCharacters(in: .whitespaces)
                }
            }
            return nil
        }
        for label in TokenFixture.keyLabels {
            let block = try XCTUnwrap(blocks.first { value(of: "label", in: $0) == label }, "\(label) in \(result.standardOutput)")
            let access = try XCTUnwrap(value(of: "Access", in: block), "\(block)")
            let flags = Set(access.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            XCTAssertTrue(flags.contains("sensitive"), "\(label): \(access)")
            XCTAssertTrue(flags.contains("never extractable"), "\(label): \(access)")
            XCTAssertFalse(flags.contains("extractable"), "\(label): \(access)")
        }
    }
}

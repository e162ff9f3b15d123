import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KeyBridgeTestSupport
@testable import PKCS11
import XCTest

/// A second token in the test token directory, used only by the wrong-PIN test, so that test can
/// start logged out no matter what other tests did to the `keybridge` token.
///
/// It is made inside this process with `C_InitToken`, not with `softhsm2-util`: SoftHSM 2.6.1
/// builds its slot list at `C_Initialize` and adds a slot only when a token is initialised through
/// the same process, so a token made by another process after the module was loaded (which
/// depends on which test of the bundle ran first) is never seen.
private enum SecondToken {
    static let label = "pkcs11tests-pin"
    static let userPIN = "9999"
    static let soPIN = "1111"

    /// `nil` once the token exists; otherwise why it could not be made.
    static let setupError: String? = {
        do {
            try create()
            return nil
        } catch {
            return "cannot make the second token: \(error)"
        }
    }()

    // SoftHSM exports every C_ function; these are their C signatures with CK_ULONG as UInt.
    private typealias InitToken = @convention(c) (UInt, UnsafeMutablePointer<UInt8>?, UInt, UnsafeMutablePointer<UInt8>?) -> UInt
    private typealias OpenSession = @convention(c) (UInt, UInt, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt>?) -> UInt
    private typealias Login = @convention(c) (UInt, UInt, UnsafeMutablePointer<UInt8>?, UInt) -> UInt
    private typealias InitPIN = @convention(c) (UInt, UnsafeMutablePointer<UInt8>?, UInt) -> UInt
    private typealias SessionCall = @convention(c) (UInt) -> UInt

    private static func create() throws {
        let module = try TokenFixture.module()
        let slots = try module.slots()
        if slots.contains(where: { $0.token?.label == label }) { return }
        guard let free = slots.first(where: { $0.token.map { !$0.flags.contains(.tokenInitialized) } ?? false }) else {
            throw FixtureError(message: "SoftHSM shows no free slot: \(slots)")
        }
        // The same path gives the same, already initialised, library instance.
        guard let library = dlopen(TokenFixture.modulePath, RTLD_NOW) else { throw FixtureError(message: "dlopen failed") }
        func function<T>(_ name: String, _ type: T.Type) throws -> T {
            guard let symbol = dlsym(library, name) else { throw FixtureError(message: "no \(name)") }
            return unsafeBitCast(symbol, to: type)
        }
        func check(_ rv: UInt, _ name: String) throws {
            guard rv == 0 else { throw FixtureError(message: "\(name) returned 0x\(String(rv, radix: 16))") }
        }
        var soPIN = Array(soPIN.utf8)
        var userPIN = Array(userPIN.utf8)
        var paddedLabel = Array(label.utf8) + [UInt8](repeating: 0x20, count: 32 - label.utf8.count)
        let slot = UInt(free.id)
        try check(function("C_InitToken", InitToken.self)(slot, &soPIN, UInt(soPIN.count), &paddedLabel), "C_InitToken")
        var session: UInt = 0
        let serialReadWrite: UInt = 0x4 | 0x2 // CKF_SERIAL_SESSION | CKF_RW_SESSION
        try check(function("C_OpenSession", OpenSession.self)(slot, serialReadWrite, nil, nil, &session), "C_OpenSession")
        defer { _ = try? function("C_CloseSession", SessionCall.self)(session) }
        try check(function("C_Login", Login.self)(session, 0 /* CKU_SO */, &soPIN, UInt(soPIN.count)), "C_Login(SO)")
        try check(function("C_InitPIN", InitPIN.self)(session, &userPIN, UInt(userPIN.count)), "C_InitPIN")
        try check(function("C_Logout", SessionCall.self)(session), "C_Logout")
    }
}

final class PINTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        _ = TestToken.shared
        directory = try Command.temporaryDirectory()
    }

    override func tearDown() {
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
    }

    private func text(_ pin: PIN?) -> String? {
        pin?.secret.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    }

    private func writePINFile(_ name: String, _ content: String) throws -> String {
        let path = directory + "/" + name
        try Data(content.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    // MARK: The PIN type

    func testPINNeverPrintsItself() {
        let pin = PIN("zq-secret-qz")
        XCTAssertEqual(pin.description, "PIN(redacted)")
        XCTAssertEqual(pin.debugDescription, "PIN(redacted)")
        XCTAssertEqual("\(pin)", "PIN(redacted)")
        XCTAssertEqual(String(reflecting: pin), "PIN(redacted)")
        var dumped = ""
        dump(pin, to: &dumped)
        XCTAssertFalse(dumped.contains("zq-secret-qz"), dumped)
        XCTAssertFalse(dumped.contains("secret-"), dumped)
        // Control: the bytes are really held, so the checks above look for something that exists.
        XCTAssertEqual(text(pin), "zq-secret-qz")
        XCTAssertFalse(pin.isEmpty)
        XCTAssertTrue(PIN("").isEmpty)
        XCTAssertEqual(text(PIN(bytes: [0x31, 0x32])), "12")
    }

    // MARK: PINResolver

    func testPINSourceFileBeatsEnvironmentBeatsPINValue() throws {
        let file = try writePINFile("pin", "from-file")
        let everything = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-source=file:\(file)&pin-value=from-uri")
        let environment = [PINResolver.environmentVariable: "from-env"]

        let fromFile = try XCTUnwrap(PINResolver.resolve(for: everything, environment: environment, allowPrompt: false))
        XCTAssertEqual(fromFile.origin, .pinSourceFile)
        XCTAssertEqual(text(fromFile.pin), "from-file")
        XCTAssertNil(fromFile.warning)

        let noFile = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-value=from-uri")
        let fromEnvironment = try XCTUnwrap(PINResolver.resolve(for: noFile, environment: environment, allowPrompt: false))
        XCTAssertEqual(fromEnvironment.origin, .environment)
        XCTAssertEqual(text(fromEnvironment.pin), "from-env")
        // The overridden pin-value is still visible in the URI, so it earns a warning without its value.
        let overridden = try XCTUnwrap(fromEnvironment.warning)
        XCTAssertTrue(overridden.contains("pin-value"), overridden)
        XCTAssertFalse(overridden.contains("from-uri"), overridden)

        for environment in [[:], [PINResolver.environmentVariable: ""]] {
            let fromURI = try XCTUnwrap(PINResolver.resolve(for: noFile, environment: environment, allowPrompt: false))
            XCTAssertEqual(fromURI.origin, .uriPinValue)
            XCTAssertEqual(text(fromURI.pin), "from-uri")
            let warning = try XCTUnwrap(fromURI.warning)
            XCTAssertTrue(warning.contains("pin-value"), warning)
            XCTAssertFalse(warning.contains("from-uri"), warning)
        }

        // Nothing given and no prompt allowed: no PIN.
        XCTAssertNil(try PINResolver.resolve(for: PKCS11URI(parsing: "pkcs11:token=keybridge"), environment: [:], allowPrompt: false))
        // The file also wins when no pin-value is present, and a plain absolute path works.
        let plainPath = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-source=\(file)")
        XCTAssertEqual(text(try PINResolver.resolve(for: plainPath, environment: environment, allowPrompt: false)?.pin), "from-file")
        let fileURL = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-source=file://\(file)")
        XCTAssertEqual(text(try PINResolver.resolve(for: fileURL, environment: environment, allowPrompt: false)?.pin), "from-file")
    }

    func testMissingPINSourceFileNamesThePath() throws {
        let missing = directory + "/no-such-pin-file"
        let uri = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-source=file:\(missing)&pin-value=from-uri")
        // A broken pin-source is an error, not a silent fall-back to a weaker source.
        XCTAssertThrowsError(try PINResolver.resolve(for: uri, environment: [PINResolver.environmentVariable: "from-env"], allowPrompt: false)) { error in
            guard let error = error as? PKCS11Error else { return XCTFail("\(error)") }
            XCTAssertEqual(error.function, "pin-source")
            XCTAssertTrue(error.reason.contains(missing), error.reason)
        }
        let relative = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-source=pin.txt")
        XCTAssertThrowsError(try PINResolver.resolve(for: relative, environment: [:], allowPrompt: false)) { error in
            XCTAssertEqual((error as? PKCS11Error)?.function, "pin-source")
            XCTAssertTrue((error as? PKCS11Error)?.reason.contains("file:") == true, "\(error)")
        }
    }

    func testTrailingNewlineInPINFileIsStripped() throws {
        for (name, content) in [("lf", "4321\n"), ("crlf", "4321\r\n"), ("none", "4321"), ("lines", "4321\n\n")] {
            let path = try writePINFile(name, content)
            let uri = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-source=file:\(path)")
            let resolved = try XCTUnwrap(PINResolver.resolve(for: uri, environment: [:], allowPrompt: false))
            XCTAssertEqual(text(resolved.pin), "4321", name)
        }
        // Only line ends at the end are removed; other white space belongs to the PIN.
        let spaced = try writePINFile("spaced", " 43 21 \n")
        let uri = try PKCS11URI(parsing: "pkcs11:token=keybridge?pin-source=file:\(spaced)")
        XCTAssertEqual(text(try PINResolver.resolve(for: uri, environment: [:], allowPrompt: false)?.pin), " 43 21 ")
    }

    // MARK: Wrong PIN

    func testWrongPINIsRejectedOnceAndNeverRetried() throws {
        if let setupError = SecondToken.setupError { return XCTFail(setupError) }
        let module = try TokenFixture.module()
        let labels = try module.slots().compactMap { $0.token?.label }
        XCTAssertTrue(labels.contains(SecondToken.label), "the module does not see the new token; slots: \(labels)")
        let token = try TokenFixture.token(SecondToken.label)
        XCTAssertFalse(token.isLoggedIn)
        XCTAssertFalse(try token.info().flags.contains(.userPINCountLow))

        let wrong = "731905"
        var first: PKCS11Error?
        XCTAssertThrowsError(try token.login(pin: PIN(wrong))) { first = $0 as? PKCS11Error }
        let firstError = try XCTUnwrap(first)
        XCTAssertEqual(firstError.returnValue, .pinIncorrect)
        XCTAssertEqual(firstError.returnValue?.name, "CKR_PIN_INCORRECT")
        XCTAssertEqual(firstError.function, "C_Login")
        XCTAssertTrue(firstError.reason.contains(SecondToken.label), firstError.reason)
        XCTAssertFalse(firstError.description.contains(wrong), firstError.description)
        XCTAssertFalse(token.isLoggedIn)
        // SoftHSM marks a failed login with CKF_USER_PIN_COUNT_LOW: the sign that C_Login ran.
        XCTAssertTrue(try token.info().flags.contains(.userPINCountLow))

        // A good login from another process clears the mark, so a new C_Login would show again.
        try clearPINCountLow()
        XCTAssertFalse(try token.info().flags.contains(.userPINCountLow))

        // The same wrong PIN again: refused by KeyBridge, without calling C_Login.
        var second: PKCS11Error?
        XCTAssertThrowsError(try token.login(pin: PIN(wrong))) { second = $0 as? PKCS11Error }
        let secondError = try XCTUnwrap(second)
        XCTAssertEqual(secondError.returnValue, .pinIncorrect)
        XCTAssertEqual(secondError.function, "C_Login")
        XCTAssertTrue(secondError.reason.contains("not tried again"), secondError.reason)
        XCTAssertNotEqual(secondError.reason, firstError.reason)
        XCTAssertFalse(secondError.description.contains(wrong), secondError.description)
        XCTAssertFalse(try token.info().flags.contains(.userPINCountLow), "C_Login was called again with a rejected PIN")
        XCTAssertFalse(token.isLoggedIn)

        // Control: a different wrong PIN does reach C_Login, and the flag shows it.
        let otherWrong = "731906"
        XCTAssertThrowsError(try token.login(pin: PIN(otherWrong))) { error in
            let error = error as? PKCS11Error
            XCTAssertEqual(error?.returnValue, .pinIncorrect)
            XCTAssertEqual(error?.reason.contains("not tried again"), false, "\(String(describing: error))")
            XCTAssertEqual(error?.description.contains(otherWrong), false)
        }
        XCTAssertTrue(try token.info().flags.contains(.userPINCountLow))

        // The right PIN, read from a pin-source file that ends in a newline, still works.
        let pinFile = directory + "/other.pin"
        try Data((SecondToken.userPIN + "\n").utf8).write(to: URL(fileURLWithPath: pinFile))
        let uri = try PKCS11URI(parsing: "pkcs11:token=\(SecondToken.label)?pin-source=file:\(pinFile)")
        let resolved = try XCTUnwrap(PINResolver.resolve(for: uri, environment: [:], allowPrompt: false))
        try token.login(pin: resolved.pin)
        XCTAssertTrue(token.isLoggedIn)
        XCTAssertFalse(try token.info().flags.contains(.userPINCountLow))
        // Once logged in, even the rejected PIN is not sent: login is a no-op.
        XCTAssertNoThrow(try token.login(pin: PIN(wrong)))
        XCTAssertFalse(try token.info().flags.contains(.userPINCountLow))
    }

    /// Logs in to the second token with its right PIN from a separate process (pkcs11-tool).
    private func clearPINCountLow() throws {
        try TokenFixture.mustRun(
            ["pkcs11-tool", "--module", TokenFixture.modulePath, "--token-label", SecondToken.label,
             "--login", "--pin", "env:KB_TEST_PIN", "--list-objects"],
            environment: TokenFixture.environment(["KB_TEST_PIN": SecondToken.userPIN]))
    }
}

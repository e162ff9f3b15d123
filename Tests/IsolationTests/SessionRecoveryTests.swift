internal import CPKCS11
import Foundation
import KeyBridgeTestSupport
@testable import PKCS11
import XCTest

/// Session losses short of an outage, made behind the pool's back with SoftHSM in this process:
/// the pool's sessions closed (`CKR_SESSION_HANDLE_INVALID`) and the token logged out
/// (`CKR_USER_NOT_LOGGED_IN`). The next signature must open new sessions, log in again with
/// the PIN that worked, find the key again and succeed, without leaking sessions.
final class SessionRecoveryTests: XCTestCase {
    var token: TestToken { TestToken.shared }

    private func signAndVerify(_ key: PrivateKey, _ text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = try Command.temporaryDirectory()
        let message = Array(text.utf8)
        let signature = try key.sign(message, mechanism: .rsaPKCS1Hashing(.sha256))
        try Data(message).write(to: URL(fileURLWithPath: folder + "/message"))
        try Data(signature).write(to: URL(fileURLWithPath: folder + "/signature"))
        let pub = try Command.run(["openssl", "x509", "-in", token.pki("client-rsa.pem"), "-noout", "-pubkey"])
        try pub.standardOutput.write(toFile: folder + "/public.pem", atomically: true, encoding: .utf8)
        let verified = try Command.run(["openssl", "dgst", "-sha256", "-verify", folder + "/public.pem",
                                        "-signature", folder + "/signature", folder + "/message"])
        XCTAssertEqual(verified.status, 0, verified.combined, file: file, line: line)
    }

    private func rsaKey() throws -> PrivateKey {
        let key = try PrivateKey.resolve(PKCS11URI(parsing: token.rsaURI), allowPrompt: false)
        XCTAssertTrue(key.uri.modulePath?.hasSuffix("libsofthsm2.so") == true)
        return key
    }

    func testSessionsClosedBehindThePoolAreOpenedAgainAndTheKeyFoundAgain() throws {
        let key = try rsaKey()
        try signAndVerify(key, "before")
        let epoch = key.token.epoch
        let sessions = key.token.openSessions
        // Another part of the application (or the HSM) closes every session of this process.
        let functions = key.token.module.functions.pointee
        XCTAssertEqual(functions.C_CloseAllSessions(CK_SLOT_ID(key.token.slotID)), CK_RV(CKR_OK))
        try signAndVerify(key, "after the sessions were closed")
        XCTAssertGreaterThan(key.token.epoch, epoch, "the pool did not notice the lost sessions")
        XCTAssertTrue(key.token.isLoggedIn, "not logged in again after the loss")
        XCTAssertLessThanOrEqual(key.token.openSessions, sessions, "more sessions than before: the old ones leaked")
        try signAndVerify(key, "and again")
    }

    /// Logs the whole application out through a session of its own, behind the pool's back.
    private func logOutBehindThePool(_ key: PrivateKey) {
        let functions = key.token.module.functions.pointee
        var session: CK_SESSION_HANDLE = 0
        XCTAssertEqual(functions.C_OpenSession(CK_SLOT_ID(key.token.slotID), CK_FLAGS(CKF_SERIAL_SESSION), nil, nil, &session), CK_RV(CKR_OK))
        // The login belongs to the whole application: this logs out every pooled session too.
        XCTAssertEqual(functions.C_Logout(session), CK_RV(CKR_OK))
        _ = functions.C_CloseSession(session)
    }

    func testALogoutBehindThePoolLogsInAgainWithThePINThatWorked() throws {
        let key = try rsaKey()
        // KeyBridge keeps only a PIN it logged in with itself. When an engine test in this process
        // logged in first, it holds none yet and must say so rather than guess; then give it one.
        logOutBehindThePool(key)
        do {
            try key.token.reloginIfPossible()
        } catch {
            XCTAssertTrue(error.description.contains("holds no PIN that worked"), error.description)
            try key.token.login(pin: PIN(token.userPIN))
        }
        try signAndVerify(key, "before")
        let epoch = key.token.epoch
        logOutBehindThePool(key)
        // No PIN is given here: the key logs in again with the one kept from the first login.
        try signAndVerify(key, "after the logout")
        XCTAssertGreaterThan(key.token.epoch, epoch)
        XCTAssertTrue(key.token.isLoggedIn)
    }

    /// Which return values start which recovery, as the issue lists them.
    func testTheErrorsThatStartRecovery() {
        let sessionLevel: [ReturnValue] = [.sessionHandleInvalid, .sessionClosed, .userNotLoggedIn]
        let deviceLevel: [ReturnValue] = [.deviceError, .deviceRemoved, .tokenNotPresent, .cryptokiNotInitialized, .slotIDInvalid]
        for code in sessionLevel {
            XCTAssertTrue(PKCS11Error(returnValue: code, function: "C_Sign", reason: "").meansStaleHandleOrSession, code.name)
            XCTAssertFalse(PKCS11Error(returnValue: code, function: "C_Sign", reason: "").isTokenUnavailable, code.name)
        }
        for code in deviceLevel {
            XCTAssertTrue(PKCS11Error(returnValue: code, function: "C_Sign", reason: "").meansStaleHandleOrSession, code.name)
            XCTAssertTrue(PKCS11Error(returnValue: code, function: "C_Sign", reason: "").isTokenUnavailable, code.name)
        }
        // A refusal by a token that is there starts nothing: no re-login, no reconnect.
        for code in [ReturnValue.pinIncorrect, .pinLocked, .mechanismInvalid, .keyTypeInconsistent, .argumentsBad, .generalError] {
            XCTAssertFalse(PKCS11Error(returnValue: code, function: "C_Sign", reason: "").meansStaleHandleOrSession, code.name)
            XCTAssertFalse(PKCS11Error(returnValue: code, function: "C_Sign", reason: "").isTokenUnavailable, code.name)
        }
        XCTAssertEqual(PKCS11Module.reconnectDelay(afterFailures: 1), 50_000_000)
        XCTAssertEqual(PKCS11Module.reconnectDelay(afterFailures: 3), 200_000_000)
        XCTAssertEqual(PKCS11Module.reconnectDelay(afterFailures: 50), 400_000_000, "the back-off must stay bounded")
    }
}

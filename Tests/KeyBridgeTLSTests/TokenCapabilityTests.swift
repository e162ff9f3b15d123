import Foundation
import KeyBridgeTestSupport
import XCTest

/// Tokens that lack mechanisms, simulated with SoftHSM's `slots.mechanisms`. SoftHSM reads its
/// configuration once per process, so each case runs `keybridge` in its own process.
final class TokenCapabilityTests: XCTestCase {
    let token = TestToken.shared
    let bank = BankServer.shared

    private func request(_ key: String, chain: String, config: String, extra: [String] = [], url: String? = nil) throws -> Command.Result {
        try KeyBridgeExecutable.run(["request", "-v", "--cacert", token.pki("root-ca.pem"), "--cert", token.pki(chain), "--key", key]
                                    + extra + [url ?? bank.url("/capability")],
                                    environment: ["SOFTHSM2_CONF": token.softHSMConfig(config)])
    }

    private func assertBankAccepted(_ result: Command.Result, version: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, 0, result.standardError, file: file, line: line)
        XCTAssertTrue(result.standardOutput.contains("\"verify\":\"SUCCESS\""), result.standardOutput, file: file, line: line)
        XCTAssertTrue(result.standardOutput.contains("\"protocol\":\"\(version)\""), result.standardOutput, file: file, line: line)
    }

    func testTLS13WithoutPSSMechanismsUsesRawRSA() throws {
        let result = try request(token.rsaURI, chain: "client-rsa-chain.pem", config: "softhsm2-nopss.conf", extra: ["--tlsv1.3"])
        assertBankAccepted(result, version: "TLSv1.3")
        XCTAssertTrue(result.standardError.contains("client CertificateVerify: rsa_pss_rsae_sha256"), result.standardError)
        XCTAssertTrue(result.standardError.contains("CKM_RSA_X_509 (EMSA-PSS encoded in software"), result.standardError)
    }

    func testPKCS1OnlyTokenFallsBackToTLS12() throws {
        let result = try request(token.rsaURI, chain: "client-rsa-chain.pem", config: "softhsm2-pkcs1only.conf")
        assertBankAccepted(result, version: "TLSv1.2")
        XCTAssertTrue(result.standardError.contains("client CertificateVerify: rsa_pkcs1_"), result.standardError)
        XCTAssertTrue(result.standardError.contains("CKM_RSA_PKCS (software"), result.standardError)
    }

    func testPKCS1OnlyTokenRefusesForcedTLS13BeforeConnecting() throws {
        let result = try request(token.rsaURI, chain: "client-rsa-chain.pem", config: "softhsm2-pkcs1only.conf",
                                 extra: ["--tlsv1.3"], url: "https://127.0.0.1:1/never")
        XCTAssertEqual(result.status, 3, result.standardError)
        XCTAssertTrue(result.standardError.contains("TLS 1.3 needs an RSA-PSS signature"), result.standardError)
        XCTAssertTrue(result.standardError.contains("CKM_RSA_PKCS_PSS"), result.standardError)
        XCTAssertEqual(result.standardOutput, "")
    }

    /// A server that speaks only TLS 1.3 gets a handshake failure that names the missing mechanism.
    func testPKCS1OnlyTokenAgainstTLS13OnlyServerNamesTheMechanism() throws {
        let server = try TLSTestServer(token: token, arguments: ["-tls1_3"])
        defer { server.stop() }
        let result = try request(token.rsaURI, chain: "client-rsa-chain.pem", config: "softhsm2-pkcs1only.conf",
                                 url: "https://localhost:\(server.port)/")
        XCTAssertEqual(result.status, 35, result.standardError)
        XCTAssertTrue(result.standardError.contains("no RSA-PSS mechanism"), result.standardError)
        XCTAssertTrue(result.standardError.contains("CKM_RSA_PKCS_PSS or CKM_RSA_X_509"), result.standardError)
        // Control: the same server accepts the same key when the token has PSS.
        let withPSS = try request(token.rsaURI, chain: "client-rsa-chain.pem", config: "softhsm2.conf",
                                  url: "https://localhost:\(server.port)/")
        XCTAssertEqual(withPSS.status, 0, withPSS.standardError)
    }

    /// The provider, loaded by `openssl`, signs on a PKCS#1-only token; `openssl` verifies.
    func testPKCS1OnlyTokenSignatureVerifiesWithOpenSSL() throws {
        let directory = try Command.temporaryDirectory()
        let message = directory + "/message"
        try Data("GET /accounts\n".utf8).write(to: URL(fileURLWithPath: message))
        var environment = ProcessInfo.processInfo.environment
        environment["SOFTHSM2_CONF"] = token.softHSMConfig("softhsm2-pkcs1only.conf")
        let modules = URL(fileURLWithPath: KeyBridgeExecutable.path).deletingLastPathComponent().path
        let signed = try Command.run(["/usr/bin/openssl", "dgst", "-sha256", "-provider-path", modules, "-provider", "default",
                                      "-provider", "libkeybridge-provider", "-sign", token.rsaURI, "-out", directory + "/signature", message],
                                     environment: environment)
        XCTAssertEqual(signed.status, 0, signed.standardError)
        let publicKey = try Command.run(["openssl", "x509", "-in", token.pki("client-rsa.pem"), "-pubkey", "-noout"])
        try publicKey.standardOutput.write(toFile: directory + "/public.pem", atomically: true, encoding: .utf8)
        let verified = try Command.run(["openssl", "dgst", "-sha256", "-verify", directory + "/public.pem", "-signature", directory + "/signature", message])
        XCTAssertEqual(verified.status, 0, verified.combined)
    }

    func testRawECDSAOnlyTokenStillSigns() throws {
        let result = try request(token.ecURI, chain: "client-ec-chain.pem", config: "softhsm2-ecdsaraw.conf", extra: ["--tlsv1.3"])
        assertBankAccepted(result, version: "TLSv1.3")
        XCTAssertTrue(result.standardError.contains("signed on the token with CKM_ECDSA (software SHA256 digest)"), result.standardError)
    }

    func testP521KeyOverTLS13() throws {
        let result = try request(try token.keyURI("p521"), chain: "client-p521-chain.pem", config: "softhsm2.conf", extra: ["--tlsv1.3"])
        assertBankAccepted(result, version: "TLSv1.3")
        XCTAssertTrue(result.standardError.contains("ecdsa_secp521r1_sha512"), result.standardError)
    }

    func testEd25519KeyOverTLS13() throws {
        let result = try request(try token.keyURI("ed25519"), chain: "client-ed25519-chain.pem", config: "softhsm2.conf", extra: ["--tlsv1.3"])
        assertBankAccepted(result, version: "TLSv1.3")
        XCTAssertTrue(result.standardError.contains("client CertificateVerify: ed25519"), result.standardError)
        XCTAssertTrue(result.standardError.contains("CKM_EDDSA"), result.standardError)
    }

    /// Each handshake signs, and each signature needs its own context-specific login.
    func testAlwaysAuthenticateKeySignsTwice() throws {
        let key = try token.keyURI("always-auth")
        for attempt in 1...2 {
            let result = try request(key, chain: "client-always-auth-chain.pem", config: "softhsm2.conf",
                                     url: bank.url("/always-auth/\(attempt)"))
            assertBankAccepted(result, version: "TLSv1.3")
        }
    }

    /// pkcs11-spy logs every call: a wrong PIN must reach C_Login exactly once.
    func testWrongPINReachesCLoginExactlyOnce() throws {
        let directory = try Command.temporaryDirectory()
        let log = directory + "/spy.log"
        let pinFile = directory + "/wrong.pin"
        try "wrong-5150".write(toFile: pinFile, atomically: true, encoding: .utf8)
        let key = "pkcs11:token=keybridge;object=client-rsa;type=private?module-path=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so&pin-source=file:\(pinFile)"
        let result = try KeyBridgeExecutable.run(["request", "--cacert", token.pki("root-ca.pem"), "--cert", token.pki("client-rsa-chain.pem"),
                                                  "--key", key, bank.url()],
                                                 environment: ["PKCS11SPY": "/usr/lib/softhsm/libsofthsm2.so", "PKCS11SPY_OUTPUT": log])
        XCTAssertEqual(result.status, 3, result.standardError)
        XCTAssertTrue(result.standardError.contains("CKR_PIN_INCORRECT"), result.standardError)
        let calls = try String(contentsOfFile: log, encoding: .utf8)
        let logins = calls.components(separatedBy: "\n").filter { $0.contains("C_Login") }
        // Control: the spy did log the session work around the login, so a zero would be seen.
        XCTAssertTrue(calls.contains("C_OpenSession"), "pkcs11-spy logged nothing")
        XCTAssertEqual(logins.count, 1, logins.joined(separator: "\n"))
    }
}

/// `openssl s_server` on a free loopback port, demanding a client certificate.
final class TLSTestServer {
    let port: Int
    private let process: Process

    init(token: TestToken, arguments: [String]) throws {
        port = try TLSTestServer.freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", token.pki("server.pem"), "-key", token.pki("server-key.pem"),
                             "-CAfile", token.pki("root-ca.pem"), "-Verify", "2", "-verify_return_error", "-www", "-naccept", "4"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Wait until it listens; give up after 5 seconds.
        for _ in 0..<100 {
            if TLSTestServer.isListening(port) { return }
            usleep(50_000)
        }
        process.terminate()
        throw CommandError(message: "openssl s_server did not start on port \(port)")
    }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    static func freePort() throws -> Int {
        let result = try Command.run(["python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"])
        guard let port = Int(result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandError(message: "no free port: \(result.standardError)")
        }
        return port
    }

    static func isListening(_ port: Int) -> Bool {
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(probe) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

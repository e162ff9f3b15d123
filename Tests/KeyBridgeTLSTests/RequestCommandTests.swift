#if canImport(Glibc)
import Glibc
#endif
import Foundation
import KeyBridgeTestSupport
import XCTest

/// `keybridge request` end to end, against the nginx test bank and the SoftHSM test token.
///
/// Every run is checked for its exit status, for exactly one `keybridge: error:` line that names
/// the cause and the fix, and for the absence of every PIN the test knows (the real one and the
/// wrong ones it used).
final class RequestCommandTests: XCTestCase {
    let token = TestToken.shared
    let bank = BankServer.shared

    /// Wrong PINs distinctive enough that finding one in the output can only mean a leak.
    static let wrongPIN = "wrong-9731"
    static let otherWrongPIN = "env-wrong-4862"

    static let softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

    // MARK: Helpers

    private var rootCA: String { token.pki("root-ca.pem") }
    private var rsaChain: String { token.pki("client-rsa-chain.pem") }
    /// The RSA key URI without its query: what messages may show.
    private var rsaKeyPath: String { token.uri(token.rsaURI, query: "") }

    private func keybridge(_ arguments: [String], environment: [String: String] = [:],
                           input: Data? = nil) throws -> Command.Result {
        try KeyBridgeExecutable.run(["request"] + arguments, environment: environment, input: input)
    }

    /// The standard arguments for a working mTLS request with the RSA token key.
    private func identity(key: String? = nil, chain: String? = nil) -> [String] {
        ["--cacert", rootCA, "--cert", chain ?? rsaChain, "--key", key ?? token.rsaURI]
    }

    /// Every PIN this test knows of, so none can slip into output unnoticed.
    private var knownPINs: [String] { [token.userPIN, Self.wrongPIN, Self.otherWrongPIN] }

    /// The known PINs that occur in `text`. A PIN counts when it is not part of a longer run of
    /// letters and digits, so a short PIN such as 1234 is not "found" inside a serial number or
    /// a port like 51234, while `pin-value=1234`, `'1234'` or `1234\n` are.
    static func pinsFound(in text: String, pins: [String]) -> [String] {
        pins.filter { pin in
            guard !pin.isEmpty else { return false }
            var searchRange = text.startIndex..<text.endIndex
            while let found = text.range(of: pin, range: searchRange) {
                let before = found.lowerBound == text.startIndex ? nil : text[text.index(before: found.lowerBound)]
                let after = found.upperBound == text.endIndex ? nil : text[found.upperBound]
                let glued = { (character: Character?) in character.map { $0.isLetter || $0.isNumber } ?? false }
                if !glued(before) && !glued(after) { return true }
                searchRange = text.index(after: found.lowerBound)..<text.endIndex
            }
            return false
        }
    }

    private func assertNoPIN(_ result: Command.Result, file: StaticString = #filePath, line: UInt = #line) {
        let found = Self.pinsFound(in: result.combined, pins: knownPINs)
        XCTAssertTrue(found.isEmpty, "a PIN appears in the output (\(found.count) of them)", file: file, line: line)
    }

    private func lines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    /// Checks a failed run: its status, an empty standard output, one error line that contains
    /// every phrase in `mentions`, only warnings besides it, and no PIN. Returns the message.
    @discardableResult
    private func assertFails(_ result: Command.Result, status: Int32, mentions: [String],
                             file: StaticString = #filePath, line: UInt = #line) -> String {
        XCTAssertEqual(result.status, status, "stderr: \(result.standardError)", file: file, line: line)
        XCTAssertEqual(result.standardOutput, "", "a failed run printed a body", file: file, line: line)
        let stderrLines = lines(result.standardError)
        let errors = stderrLines.filter { $0.hasPrefix("keybridge: error: ") }
        XCTAssertEqual(errors.count, 1, "expected one error line: \(result.standardError)", file: file, line: line)
        let others = stderrLines.filter { !$0.hasPrefix("keybridge: error: ") && !$0.hasPrefix("keybridge: warning: ") }
        XCTAssertEqual(others, [], "stderr has lines that are neither the error nor warnings", file: file, line: line)
        let message = errors.first ?? ""
        for phrase in mentions {
            XCTAssertTrue(message.contains(phrase), "the error does not mention '\(phrase)': \(message)", file: file, line: line)
        }
        assertNoPIN(result, file: file, line: line)
        return message
    }

    private func assertSucceeds(_ result: Command.Result, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, 0, "stderr: \(result.standardError)", file: file, line: line)
        XCTAssertFalse(result.standardError.contains("keybridge: error:"), result.standardError, file: file, line: line)
        assertNoPIN(result, file: file, line: line)
    }

    private struct BankEcho: Decodable {
        var verify: String
        var `protocol`: String
        var method: String?
        var uri: String?
        var subject: String?
        var error: String?
    }

    private func echo(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> BankEcho {
        do {
            return try JSONDecoder().decode(BankEcho.self, from: Data(text.utf8))
        } catch {
            XCTFail("not the bank's JSON: \(text)", file: file, line: line)
            throw error
        }
    }

    private func writeFile(_ contents: String, named name: String) throws -> String {
        let path = try Command.temporaryDirectory() + "/" + name
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private struct PortError: Error {
        var step: String
        var code: Int32
    }

    /// A loopback port with nothing listening: bound by the kernel's choice, then released.
    private func closedPort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw PortError(step: "socket", code: errno) }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
            }
        }
        guard bound else { throw PortError(step: "bind or getsockname", code: errno) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    // MARK: The PIN check itself

    /// Control: the PIN check finds a PIN when the CLI really prints one. `-v` echoes the URL,
    /// so a URL path made of both PINs puts them in the output as words.
    func testPINCheckFindsAPINThatIsPrinted() throws {
        let result = try keybridge(["-v"] + identity() + [bank.url("/\(token.userPIN)/\(Self.wrongPIN)")])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertEqual(Set(Self.pinsFound(in: result.combined, pins: knownPINs)), [token.userPIN, Self.wrongPIN])
        // …and does not mistake a longer number or word for a PIN.
        XCTAssertEqual(Self.pinsFound(in: "port 5\(token.userPIN)9, serial AB\(token.userPIN)CD, x\(Self.wrongPIN)",
                                      pins: knownPINs), [])
        XCTAssertEqual(Self.pinsFound(in: "pin-value=\(token.userPIN)&", pins: knownPINs), [token.userPIN])
    }

    // MARK: Success

    func testVerboseRSARequestOverTLS13() throws {
        let result = try keybridge(["-v"] + identity() + ["--tlsv1.3", bank.url("/accounts")])
        assertSucceeds(result)
        let body = try echo(result.standardOutput)
        XCTAssertEqual(body.verify, "SUCCESS")
        XCTAssertEqual(body.protocol, "TLSv1.3")
        XCTAssertEqual(body.method, "GET")
        XCTAssertTrue(result.standardOutput.contains(#""verify":"SUCCESS""#))
        for phrase in ["TLSv1.3", "rsa_pss_rsae_sha256", "token 'keybridge'", "client-rsa", "HTTP/1.1 200"] {
            XCTAssertTrue(result.standardError.contains(phrase), "-v does not show '\(phrase)': \(result.standardError)")
        }
        XCTAssertFalse(result.standardError.contains("pin-source"), "-v shows the key URI's query")
    }

    // MARK: PIN problems

    func testWrongPINFromPINSourceFile() throws {
        let pinFile = try writeFile(Self.wrongPIN + "\n", named: "wrong.pin")
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)&pin-source=file:\(pinFile)")
        let result = try keybridge(identity(key: key) + [bank.url()])
        let message = assertFails(result, status: 3, mentions: ["CKR_PIN_INCORRECT", "token 'keybridge'", "pin-source",
                                                                "the PIN came from the URI's pin-source file"])
        XCTAssertTrue(message.contains("fix") || message.contains("check"), "no fix named: \(message)")
    }

    func testWrongPINFromEnvironment() throws {
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)")
        let result = try keybridge(identity(key: key) + [bank.url()], environment: ["KEYBRIDGE_PIN": Self.otherWrongPIN])
        assertFails(result, status: 3, mentions: ["CKR_PIN_INCORRECT", "the PIN came from the KEYBRIDGE_PIN environment variable"])
    }

    func testNoPINAnywhere() throws {
        // Standard input is a pipe, not a terminal, so there is no prompt either.
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)")
        let result = try keybridge(identity(key: key) + [bank.url()])
        assertFails(result, status: 3, mentions: ["needs a PIN", "pin-source=", "KEYBRIDGE_PIN"])
        // No C_Login was made, so no CKR_ code is claimed (a broker would take it for an outage).
        XCTAssertFalse(result.standardError.contains("CKR_USER_NOT_LOGGED_IN"), result.standardError)
    }

    func testPINValueWorksButIsWarnedAbout() throws {
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)&pin-value=\(token.userPIN)")
        let result = try keybridge(identity(key: key) + [bank.url()])
        assertSucceeds(result)
        XCTAssertEqual(try echo(result.standardOutput).verify, "SUCCESS")
        let warnings = lines(result.standardError).filter { $0.hasPrefix("keybridge: warning: ") }
        XCTAssertEqual(warnings.count, 1, result.standardError)
        let warning = warnings.first ?? ""
        for phrase in ["pin-value", "process listings", "pin-source", "KEYBRIDGE_PIN"] {
            XCTAssertTrue(warning.contains(phrase), "the warning does not mention '\(phrase)': \(warning)")
        }
    }

    func testWrongPINValueIsNotPrinted() throws {
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)&pin-value=\(Self.wrongPIN)")
        let result = try keybridge(identity(key: key) + [bank.url()])
        assertFails(result, status: 3, mentions: ["CKR_PIN_INCORRECT", "pin-value"])
    }

    func testMalformedPINValueIsNotEchoed() throws {
        let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)&pin-value=\(Self.wrongPIN)%ZZ")
        let result = try keybridge(identity(key: key) + [bank.url()])
        assertFails(result, status: 2, mentions: ["malformed", "pin-value", "%25"])
        XCTAssertFalse(result.standardError.contains("%ZZ"), "the error quotes the PIN's bytes")
    }

    // MARK: Key and token lookup

    func testUnknownToken() throws {
        let key = "pkcs11:token=nope;object=client-rsa;type=private?module-path=\(Self.softHSMModule)&pin-source=file:\(token.stateDirectory)/user.pin"
        let result = try keybridge(identity(key: key) + [bank.url()])
        assertFails(result, status: 3, mentions: ["no token matches", "token=nope", "'keybridge'", "Fix token="])
    }

    func testUnknownObject() throws {
        let key = "pkcs11:token=keybridge;object=no-such-key;type=private?module-path=\(Self.softHSMModule)&pin-source=file:\(token.stateDirectory)/user.pin"
        let result = try keybridge(identity(key: key) + [bank.url()])
        assertFails(result, status: 3, mentions: ["no private key matches", "object=no-such-key", "token 'keybridge'", "check object="])
    }

    func testMalformedKeyURI() throws {
        let result = try keybridge(identity(key: "pkcs11:token=keybridge;object=%ZZ") + [bank.url()])
        assertFails(result, status: 2, mentions: ["malformed", "'object'", "%ZZ", "two hex digits"])
    }

    func testMissingModule() throws {
        let key = token.uri(token.rsaURI, query: "module-path=/nonexistent/libnothing.so&pin-source=file:\(token.stateDirectory)/user.pin")
        let result = try keybridge(identity(key: key) + [bank.url()])
        assertFails(result, status: 3, mentions: ["/nonexistent/libnothing.so", "does not exist", "fix module-path"])
    }

    // MARK: Certificate problems

    func testCertificateOfAnotherKeyTypeIsRejectedBeforeConnecting() throws {
        // Nothing listens on the URL's port: only a check made before connecting can answer 4.
        let chain = token.pki("client-ec-chain.pem")
        let result = try keybridge(identity(chain: chain) + ["https://127.0.0.1:\(try closedPort())/accounts"])
        let message = assertFails(result, status: 4, mentions: ["CN=tpp-ec.example", chain, rsaKeyPath, "does not belong", "Use the certificate issued for this key"])
        XCTAssertFalse(message.contains("module-path") || message.contains("pin-source"), "the key URI's query is shown: \(message)")
    }

    func testCertificateOfAnotherRSAKeyIsRejected() throws {
        let chain = token.pki("client-mismatch-chain.pem")
        let result = try keybridge(identity(chain: chain) + [bank.url()])
        let message = assertFails(result, status: 4, mentions: ["CN=tpp-mismatch.example", chain, rsaKeyPath, "does not belong", "Use the certificate issued for this key"])
        XCTAssertFalse(message.contains("module-path") || message.contains("pin-source"), "the key URI's query is shown: \(message)")
    }

    func testCertificateFileWithoutCertificate() throws {
        let notACertificate = try writeFile("just text\n", named: "chain.pem")
        let result = try keybridge(identity(chain: notACertificate) + [bank.url()])
        assertFails(result, status: 4, mentions: [notACertificate, "no PEM certificate", "--cert needs"])
    }

    // MARK: Server verification

    func testServerNotTrustedByIssuingCAAlone() throws {
        let result = try keybridge(["--cacert", token.pki("issuing-ca.pem"), "--cert", rsaChain, "--key", token.rsaURI, bank.url()])
        assertFails(result, status: 60, mentions: ["server's certificate was not accepted", "--cacert"])
    }

    func testMissingCAFile() throws {
        let missing = try Command.temporaryDirectory() + "/no-ca.pem"
        let result = try keybridge(["--cacert", missing, "--cert", rsaChain, "--key", token.rsaURI, bank.url()])
        assertFails(result, status: 26, mentions: [missing, "--cacert"])
    }

    // MARK: Command line

    func testMissingCertificateFile() throws {
        let missing = try Command.temporaryDirectory() + "/no-chain.pem"
        let result = try keybridge(identity(chain: missing) + [bank.url()])
        assertFails(result, status: 26, mentions: ["cannot read the certificate file", missing, "--cert"])
    }

    func testKeyWithoutCertificate() throws {
        let result = try keybridge(["--cacert", rootCA, "--key", token.rsaURI, bank.url()])
        assertFails(result, status: 2, mentions: ["without a certificate", "add --cert"])
    }

    func testUnknownOption() throws {
        let result = try keybridge(["--frobnicate", bank.url()])
        assertFails(result, status: 2, mentions: ["unknown option '--frobnicate'", "keybridge request --help"])
    }

    func testNoURL() throws {
        let result = try keybridge(identity())
        assertFails(result, status: 2, mentions: ["no URL given", "keybridge request --help"])
    }

    func testUnsupportedTLSMaximum() throws {
        let result = try keybridge(identity() + ["--tls-max", "1.1", bank.url()])
        assertFails(result, status: 2, mentions: ["--tls-max takes 1.2 or 1.3", "'1.1'"])
    }

    func testOptionWithoutValue() throws {
        let result = try keybridge([bank.url(), "--cacert"])
        assertFails(result, status: 2, mentions: ["--cacert needs a value"])
    }

    func testNonHTTPURL() throws {
        let result = try keybridge(["ftp://localhost/file"])
        assertFails(result, status: 2, mentions: ["not a usable http(s) URL", "ftp"])
    }

    // MARK: Output file

    func testOutputIntoMissingDirectoryWritesNothing() throws {
        let directory = try Command.temporaryDirectory()
        let target = directory + "/missing/out.json"
        let result = try keybridge(identity() + ["-o", target, bank.url()])
        assertFails(result, status: 26, mentions: [directory + "/missing", "does not exist", "-o"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [], "something was left behind")
    }

    func testFailedRequestLeavesExistingOutputFileAlone() throws {
        let directory = try Command.temporaryDirectory()
        let target = directory + "/out.json"
        try "previous\n".write(toFile: target, atomically: true, encoding: .utf8)
        let result = try keybridge(["--fail", "-o", target] + identity(chain: token.pki("client-rsa.pem")) + [bank.url()])
        assertFails(result, status: 22, mentions: ["400"])
        XCTAssertEqual(try String(contentsOfFile: target, encoding: .utf8), "previous\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["out.json"])
    }

    func testOutputFileGetsTheWholeBody() throws {
        let directory = try Command.temporaryDirectory()
        let target = directory + "/out.json"
        let result = try keybridge(identity() + ["-o", target, bank.url("/accounts/saved")])
        assertSucceeds(result)
        XCTAssertEqual(result.standardOutput, "", "the body went to standard output as well")
        let saved = try String(contentsOfFile: target, encoding: .utf8)
        XCTAssertTrue(saved.hasPrefix("{") && saved.hasSuffix("}\n"), saved)
        let body = try echo(saved)
        XCTAssertEqual(body.verify, "SUCCESS")
        XCTAssertEqual(body.uri, "/accounts/saved")
        // Written by rename: no temporary file stays next to it.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["out.json"])
        // The same request to standard output gives the same bytes.
        let direct = try keybridge(identity() + [bank.url("/accounts/saved")])
        assertSucceeds(direct)
        XCTAssertEqual(direct.standardOutput, saved)
    }

    // MARK: HTTP status

    func testFailOnHTTPError() throws {
        // A leaf without its issuing CA: nginx trusts only the root, so it answers 400.
        let leafOnly = identity(chain: token.pki("client-rsa.pem"))
        let failed = try keybridge(["--fail"] + leafOnly + [bank.url()])
        assertFails(failed, status: 22, mentions: ["the server answered", "400"])

        let plain = try keybridge(leafOnly + [bank.url()])
        assertSucceeds(plain)
        let body = try echo(plain.standardOutput)
        XCTAssertEqual(body.error, "client certificate rejected")
        XCTAssertNotEqual(body.verify, "SUCCESS")
    }

    // MARK: Request body

    func testPostBodyFromFile() throws {
        let bodyText = "amount=12.50&reference=kb-7731"
        let bodyFile = try writeFile(bodyText, named: "body.txt")
        let result = try keybridge(identity() + ["-d", "@" + bodyFile, bank.url("/payments")])
        assertSucceeds(result)
        let body = try echo(result.standardOutput)
        XCTAssertEqual(body.method, "POST")
        XCTAssertEqual(body.verify, "SUCCESS")

        // With nginx's echo module the bank also shows the bytes it received.
        if FileManager.default.fileExists(atPath: "/usr/lib/nginx/modules/ngx_http_echo_module.so") {
            let echoed = try keybridge(identity() + ["-d", "@" + bodyFile, bank.url("/echo")])
            assertSucceeds(echoed)
            XCTAssertTrue(echoed.standardOutput.hasPrefix("POST /echo HTTP/1.1"), echoed.standardOutput)
            XCTAssertTrue(echoed.standardOutput.contains("Content-Length: \(bodyText.utf8.count)"), echoed.standardOutput)
            XCTAssertTrue(echoed.standardOutput.hasSuffix("\r\n\r\n" + bodyText), echoed.standardOutput)
        }
    }

    func testPostBodyFromMissingFile() throws {
        let missing = try Command.temporaryDirectory() + "/no-body.txt"
        let result = try keybridge(identity() + ["-d", "@" + missing, bank.url()])
        assertFails(result, status: 26, mentions: ["cannot read the request body file", missing, "check the path after @"])
    }

    // MARK: Transport

    func testConnectionRefused() throws {
        let port = try closedPort()
        let result = try keybridge(identity() + ["https://127.0.0.1:\(port)/accounts"])
        assertFails(result, status: 7, mentions: ["cannot connect to 127.0.0.1:\(port)", "check the host and port"])
    }

    /// A server that accepts the connection but never answers must end in a timeout, not a hang.
    func testSilentServerTimesOut() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(listener, 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(listener, socketAddress, length) == 0 && listen(listener, 4) == 0
                    && getsockname(listener, socketAddress, &length) == 0
            }
        }
        XCTAssertTrue(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let result = try keybridge(identity() + ["-m", "1", "https://127.0.0.1:\(port)/slow"])
        assertFails(result, status: 28, mentions: ["did not answer in time", "--max-time"])
    }

    /// A URI without its scheme is read as a file path; its pin-value must still not be shown.
    func testMistypedKeyURIDoesNotShowItsPIN() throws {
        let mistyped = "pkcs:token=keybridge;object=client-rsa?pin-value=\(Self.wrongPIN)"
        let result = try keybridge(identity(key: mistyped) + [bank.url()])
        assertFails(result, status: 26, mentions: ["does not start with 'pkcs11:'", "pin-value=<redacted>"])
    }

    func testPlainHTTPWithAClientCertificateIsRefused() throws {
        let result = try keybridge(identity() + ["http://127.0.0.1:\(bank.port)/accounts"])
        assertFails(result, status: 2, mentions: ["must start with https://", "plain http://"])
    }

    func testUnknownOptionDoesNotEchoItsValue() throws {
        let result = try keybridge(["--pin=\(Self.wrongPIN)", bank.url()])
        assertFails(result, status: 2, mentions: ["unknown option '--pin'"])
    }

    // MARK: Injection and hostile input

    /// "\r\n" is a single Character in Swift; it must still be caught as a line break.
    func testHeaderWithCRLFIsRefused() throws {
        let result = try keybridge(identity() + ["-H", "X-A: b\r\nX-Injected: 1", bank.url()])
        assertFails(result, status: 2, mentions: ["X-A", "line break"])
    }

    func testMethodWithCRLFIsRefused() throws {
        let result = try keybridge(identity() + ["-X", "GET /admin HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET /smuggled", bank.url()])
        assertFails(result, status: 2, mentions: ["not a valid HTTP method"])
    }

    func testURLWithoutSchemeIsRefusedWithACertificate() throws {
        let result = try keybridge(identity() + ["localhost:\(bank.port)/accounts"])
        assertFails(result, status: 2, mentions: ["must start with https://"])
    }

    func testVerboseOutputHidesTheURLPassword() throws {
        let url = bank.url("/userinfo").replacingOccurrences(of: "https://", with: "https://user:zz-7781@")
        let result = try keybridge(["-v"] + identity() + [url])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertFalse(result.combined.contains("zz-7781"), "the URL's password was printed")
        XCTAssertTrue(result.standardError.contains("/userinfo"), result.standardError)
    }

    func testPINSourceThatIsNotASmallRegularFileIsRefusedBeforeLogin() throws {
        let empty = try writeFile("", named: "empty.pin")
        for (source, phrase) in [(empty, "is empty"), ("/dev/zero", "not a regular file")] {
            let key = token.uri(token.rsaURI, query: "module-path=\(Self.softHSMModule)&pin-source=file:\(source)")
            let result = try keybridge(identity(key: key) + [bank.url()])
            assertFails(result, status: 3, mentions: [phrase])
        }
    }

    func testFullStandardOutputIsAnErrorNotACrash() throws {
        let result = try Command.run(["/bin/sh", "-c", "\"$0\" \"$@\" > /dev/full", KeyBridgeExecutable.path, "request"] + identity() + [bank.url()],
                                     environment: ProcessInfo.processInfo.environment.merging(["SOFTHSM2_CONF": token.softHSMConfig]) { $1 })
        XCTAssertEqual(result.status, 23, result.standardError)
        XCTAssertTrue(result.standardError.contains("cannot write the response to standard output"), result.standardError)
    }
}

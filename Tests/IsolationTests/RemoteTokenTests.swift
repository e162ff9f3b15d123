import Foundation
import KeyBridgeTestSupport
import XCTest

/// `softhsm-setup --remote`: the token behind `p11-kit server`, used by `keybridge request`
/// through `p11-kit-client.so`, named by the URI's module-path or by KEYBRIDGE_PKCS11_MODULE.
final class RemoteTokenTests: XCTestCase {
    // Computed, so listing the tests (swift test --filter) starts no server.
    var remote: RemoteToken { RemoteToken.shared }
    var bank: BankServer { BankServer.shared }

    private func request(key: String, chain: String, environment extra: [String: String] = [:]) throws -> Command.Result {
        var environment = remote.environment
        for (name, value) in extra { environment[name] = value }
        return try Command.run([KeyBridgeExecutable.path, "request", "--cacert", remote.local.pki("root-ca.pem"),
                                "--cert", remote.local.pki(chain), "--key", key, bank.url("/remote")], environment: environment)
    }

    func testKeyURIsWorkThroughTheClientModule() throws {
        for (name, chain, commonName) in [("rsa", "client-rsa-chain.pem", "tpp-rsa.example"),
                                          ("ec", "client-ec-chain.pem", "tpp-ec.example")] {
            let uri = try remote.keyURI(name)
            XCTAssertTrue(uri.contains("module-path=\(remote.clientModule)"), uri)
            let result = try request(key: uri, chain: chain)
            XCTAssertEqual(result.status, 0, result.combined)
            XCTAssertTrue(result.standardOutput.contains(#""verify":"SUCCESS""#), result.combined)
            XCTAssertTrue(result.standardOutput.contains("CN=\(commonName)"), result.combined)
        }
    }

    func testKEYBRIDGE_PKCS11_MODULENamesTheClientModule() throws {
        let uri = "pkcs11:token=keybridge;object=client-ec;type=private?pin-source=file:\(remote.local.stateDirectory)/user.pin"
        let result = try request(key: uri, chain: "client-ec-chain.pem", environment: ["KEYBRIDGE_PKCS11_MODULE": remote.clientModule])
        XCTAssertEqual(result.status, 0, result.combined)
        XCTAssertTrue(result.standardOutput.contains("CN=tpp-ec.example"), result.combined)
        // Control: without the server's address the client module sees no token, so the request
        // above really went through p11-kit-client.so and its server.
        var withoutServer = remote.environment
        withoutServer.removeValue(forKey: "P11_KIT_SERVER_ADDRESS")
        withoutServer["KEYBRIDGE_PKCS11_MODULE"] = remote.clientModule
        withoutServer["XDG_RUNTIME_DIR"] = try Command.temporaryDirectory()
        let refused = try Command.run([KeyBridgeExecutable.path, "request", "--cacert", remote.local.pki("root-ca.pem"),
                                       "--cert", remote.local.pki("client-ec-chain.pem"), "--key", uri, bank.url("/remote")],
                                      environment: withoutServer)
        XCTAssertEqual(refused.status, 3, refused.combined)
        XCTAssertTrue(refused.standardError.contains("p11-kit-client.so"), refused.standardError)
    }

    func testServerControlStartsStopsAndReports() throws {
        let setup = TestToken.repositoryRoot + "/softhsm-setup"
        let state = remote.local.stateDirectory
        let running = try Command.run([setup, "--state", state, "--remote-server", "status"])
        XCTAssertEqual(running.status, 0, running.combined)
        XCTAssertTrue(running.standardOutput.hasPrefix("running "), running.standardOutput)
        try remote.stop()
        let stopped = try Command.run([setup, "--state", state, "--remote-server", "status"])
        XCTAssertEqual(stopped.status, 3, stopped.combined)
        XCTAssertFalse(FileManager.default.fileExists(atPath: remote.socketPath))
        try remote.start()
        XCTAssertNotNil(remote.serverPID)
        let wrong = try Command.run([setup, "--state", state, "--remote-server", "reload"])
        XCTAssertEqual(wrong.status, 1)
        XCTAssertTrue(wrong.standardError.contains("start, stop, restart or status"), wrong.standardError)
        let result = try request(key: try remote.keyURI("rsa"), chain: "client-rsa-chain.pem")
        XCTAssertEqual(result.status, 0, result.combined)
    }
}

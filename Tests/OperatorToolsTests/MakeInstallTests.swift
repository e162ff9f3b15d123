import Foundation
import KeyBridgeTestSupport
import XCTest

/// `make install` puts a working `keybridge`, the provider module and the man page under PREFIX.
final class MakeInstallTests: XCTestCase {
    func testInstallPutsTheToolModuleAndManPageUnderPrefix() throws {
        let prefix = try Command.temporaryDirectory() + "/prefix"
        // -o build: the test runs against the build that is there; it must not rebuild under swift test.
        let installed = try Command.run(["/usr/bin/make", "-C", TestToken.repositoryRoot, "-o", "build", "install", "PREFIX=\(prefix)"])
        XCTAssertEqual(installed.status, 0, installed.combined)
        let tool = prefix + "/bin/keybridge"
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: tool), installed.combined)
        let version = try Command.run([tool, "--version"])
        XCTAssertEqual(version.status, 0, version.combined)
        XCTAssertTrue(version.standardOutput.hasPrefix("keybridge "), version.standardOutput)
        XCTAssertTrue(FileManager.default.fileExists(atPath: prefix + "/lib/keybridge/libkeybridge-provider.so"))
        let page = try String(contentsOfFile: prefix + "/share/man/man1/keybridge.1", encoding: .utf8)
        XCTAssertEqual(page, try String(contentsOfFile: TestToken.repositoryRoot + "/docs/keybridge.1", encoding: .utf8))
        // The installed tool is the build's, byte for byte (CONFIGURATION defaults to debug). Not
        // the test's own binary: under check-deep that is a sanitizer build in another folder.
        let built = TestToken.repositoryRoot + "/.build/debug/keybridge"
        XCTAssertEqual(FileManager.default.contents(atPath: tool), FileManager.default.contents(atPath: built))
    }
}

import Foundation
import KeyBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `keys csr -o PATH` onto paths that are not plain regular files. The write renamed a temporary
/// file over the path, so run as root `-o /dev/null` replaced the machine's /dev/null with a
/// regular file, a FIFO became a file, and a symbolic link was replaced instead of its target.
/// A character device made in a temporary folder (same major/minor as /dev/null) shows it
/// without touching the real one.
final class CSROutputPathTests: XCTestCase {
    private static let subject = ["--subject", "/C=DE/O=Example/CN=example", "--eidas-role", "PSP_AI",
                                  "--nca", "DE-BAFIN", "--org-id", "PSDDE-BAFIN-123456"]

    private func tokenWithKey() throws -> (FreshToken, String) {
        let token = try FreshToken(label: "csrout")
        let key = try token.generate("ec:P-256", label: "seal", id: "01")
        return (token, key)
    }

    private func fileType(_ path: String) -> mode_t {
        var info = stat()
        XCTAssertEqual(lstat(path, &info), 0, "\(path) is gone")
        return info.st_mode & S_IFMT
    }

    func testCharacterDeviceIsWrittenInPlaceAndStaysADevice() throws {
        let (token, key) = try tokenWithKey()
        let device = token.directory + "/null-device"
        // Device number 1:3 (/dev/null) in the Linux encoding, as glibc's makedev(1, 3) gives it.
        guard mknod(device, S_IFCHR | 0o666, dev_t(1 << 8 | 3)) == 0 else {
            throw XCTSkip("mknod needs root: \(String(cString: strerror(errno)))")
        }
        let result = try token.keybridge(["keys", "csr", "--key", key] + Self.subject + ["-o", device])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertEqual(fileType(device), S_IFCHR, "the device was replaced by a regular file")

        // Control: the same command onto a missing path makes a regular file with the request.
        let file = token.directory + "/seal.csr"
        let control = try token.keybridge(["keys", "csr", "--key", key] + Self.subject + ["-o", file])
        XCTAssertEqual(control.status, 0, control.standardError)
        XCTAssertEqual(fileType(file), S_IFREG)
        XCTAssertTrue(try String(contentsOfFile: file, encoding: .utf8).hasPrefix("-----BEGIN CERTIFICATE REQUEST-----"))
    }

    func testFIFOReceivesTheRequestAndStaysAFIFO() throws {
        let (token, key) = try tokenWithKey()
        let fifo = token.directory + "/csr.fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let received = ReceivedText()
        let reader = Thread { received.set(FileHandle(forReadingAtPath: fifo)?.readDataToEndOfFile() ?? Data()) }
        reader.start()
        let result = try token.keybridge(["keys", "csr", "--key", key] + Self.subject + ["-o", fifo])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertEqual(fileType(fifo), S_IFIFO, "the FIFO was replaced by a regular file")
        XCTAssertTrue(received.wait(seconds: 10), "nothing was written into the FIFO")
        XCTAssertTrue(received.text.hasPrefix("-----BEGIN CERTIFICATE REQUEST-----"), received.text)
    }

    func testSymbolicLinkStaysAndItsTargetGetsTheRequestWithItsMode() throws {
        let (token, key) = try tokenWithKey()
        let target = token.directory + "/real.csr"
        let link = token.directory + "/link.csr"
        try "old".write(toFile: target, atomically: false, encoding: .utf8)
        XCTAssertEqual(chmod(target, 0o600), 0)
        XCTAssertEqual(symlink(target, link), 0)
        let result = try token.keybridge(["keys", "csr", "--key", key] + Self.subject + ["-o", link])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertEqual(fileType(link), S_IFLNK, "the link was replaced by a regular file")
        XCTAssertTrue(try String(contentsOfFile: target, encoding: .utf8).hasPrefix("-----BEGIN CERTIFICATE REQUEST-----"))
        var info = stat()
        XCTAssertEqual(stat(target, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600, "the file's permissions were not kept")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: token.directory).filter { $0.hasSuffix(".tmp") }
        XCTAssertEqual(leftovers, [], "temporary files were left behind")
    }

    func testDashIsStandardOutputAndEmptyOrBrokenPathsAreRefused() throws {
        let (token, key) = try tokenWithKey()
        // Run inside the token's folder, where a file named '-' would appear.
        let dash = try Command.run(["/usr/bin/env", "-C", token.directory, KeyBridgeExecutable.path, "keys", "csr", "--key", key]
                                   + Self.subject + ["-o", "-"], environment: ["SOFTHSM2_CONF": token.config, "PATH": "/usr/bin:/bin"])
        XCTAssertEqual(dash.status, 0, dash.standardError)
        XCTAssertTrue(dash.standardOutput.hasPrefix("-----BEGIN CERTIFICATE REQUEST-----"), dash.standardOutput)
        XCTAssertFalse(FileManager.default.fileExists(atPath: token.directory + "/-"), "-o - made a file named '-'")

        let empty = try token.keybridge(["keys", "csr", "--key", key] + Self.subject + ["-o", ""])
        XCTAssertEqual(empty.status, 26)
        XCTAssertTrue(empty.standardError.contains("-o needs a file name"), empty.standardError)

        let dangling = token.directory + "/dangling.csr"
        XCTAssertEqual(symlink(token.directory + "/missing/x.csr", dangling), 0)
        let broken = try token.keybridge(["keys", "csr", "--key", key] + Self.subject + ["-o", dangling])
        XCTAssertEqual(broken.status, 26)
        XCTAssertTrue(broken.standardError.contains("symbolic link"), broken.standardError)
        XCTAssertEqual(broken.standardError.components(separatedBy: "\n").filter { !$0.isEmpty }.count, 1, broken.standardError)
    }
}

private final class ReceivedText: @unchecked Sendable {
    // Every access goes through `lock`.
    private let lock = NSLock()
    private var data: Data?
    func set(_ value: Data) { lock.withLock { data = value } }
    var text: String { lock.withLock { String(decoding: data ?? Data(), as: UTF8.self) } }
    func wait(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if lock.withLock({ data != nil }) { return true }
            usleep(10_000)
        }
        return false
    }
}

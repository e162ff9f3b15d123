import Foundation
import KeyBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `keybridge request -o PATH` onto something that is not a regular file. The atomic write used
/// for files renames a temporary file over the path; run as root with `-o /dev/null` that
/// replaced the machine's /dev/null with a regular file. A FIFO shows the same without risk.
final class RequestOutputDeviceTests: XCTestCase {
    func testOutputToAFIFOIsWrittenInPlaceAndTheFIFOStays() throws {
        let token = TestToken.shared
        let bank = BankServer.shared
        let directory = try Command.temporaryDirectory()
        let fifo = directory + "/answer.fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        // The reader must be there before keybridge opens the FIFO for writing.
        let received = ReceivedBytes()
        let reader = Thread {
            received.set(FileHandle(forReadingAtPath: fifo)?.readDataToEndOfFile() ?? Data())
        }
        reader.start()
        let result = try KeyBridgeExecutable.run(["request", "-o", fifo, "--cacert", token.pki("root-ca.pem"),
                                                  "--cert", token.pki("client-rsa-chain.pem"), "--key", token.rsaURI, bank.url()])
        XCTAssertEqual(result.status, 0, result.standardError)
        var info = stat()
        XCTAssertEqual(stat(fifo, &info), 0)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFIFO, "the FIFO was replaced by a file")
        XCTAssertTrue(received.wait(seconds: 10), "nothing was written into the FIFO")
        XCTAssertTrue(String(decoding: received.value, as: UTF8.self).contains("\"verify\":\"SUCCESS\""))
    }
}

private final class ReceivedBytes: @unchecked Sendable {
    // Every access goes through `lock`.
    private let lock = NSLock()
    private var data: Data?
    func set(_ value: Data) { lock.withLock { data = value } }
    var value: Data { lock.withLock { data ?? Data() } }
    func wait(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if lock.withLock({ data != nil }) { return true }
            usleep(10_000)
        }
        return false
    }
}

import Foundation
@testable import KeyBridgeBroker
import XCTest

/// The byte-wise replacements of Foundation calls on the broker's per-request path give what
/// the Foundation calls gave.
final class BrokerHotPathTests: XCTestCase {
    func testLogLineIsTheJSONThatJSONSerializationReadsBack() throws {
        let awkward = "a\"b\\c/d\n\r\t\u{01}\u{1F}é€"
        var line = BrokerLogLine()
        line.add("bank", awkward)
        line.add("status", 502)
        line.add("ms", -3)
        let text = line.text
        XCTAssertFalse(text.contains("\n"), text)
        XCTAssertTrue(text.contains("c/d"), "slashes are not escaped: \(text)")
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        XCTAssertEqual(object["bank"] as? String, awkward)
        XCTAssertEqual(object["status"] as? Int, 502)
        XCTAssertEqual(object["ms"] as? Int, -3)
        // Control: an unescaped quote would not parse.
        XCTAssertThrowsError(try JSONSerialization.jsonObject(with: Data("{\"bank\":\"a\"b\"}".utf8)))
    }

    func testRequestLogLineHasTheKeysInTheOrderSortedKeysGives() throws {
        var trace = Broker.Trace()
        trace.bank = "sandbox"
        trace.caller = "lambda"
        trace.attempts = 2
        trace.httpVersion = "2"
        trace.connection = "resumed"
        var response = BrokerResponse.failure(503, "token-unavailable", "gone")
        response.tokenError = "CKR_DEVICE_REMOVED"
        let request = BrokerRequest(method: "POST", target: "/sandbox/v1/payments?iban=DE00", headers: [])
        let text = Broker.requestLogLine(request, requestID: "id-1", trace: trace, response: response, seconds: 0.0123)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let sorted = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        XCTAssertEqual(text, String(decoding: sorted, as: UTF8.self))
        XCTAssertEqual(object["path"] as? String, "/sandbox/v1/payments", "never the query")
        XCTAssertEqual(object["ms"] as? Int, 12)
        XCTAssertEqual(object["error"] as? String, "token-unavailable")
        XCTAssertEqual(object["tokenError"] as? String, "CKR_DEVICE_REMOVED")
        XCTAssertEqual(object["upstreamConnection"] as? String, "resumed")
        let time = try XCTUnwrap(object["time"] as? String)
        let parsed = try XCTUnwrap(ISO8601DateFormatter().date(from: time), time)
        XCTAssertLessThan(abs(parsed.timeIntervalSinceNow), 5)
    }

    func testTimestampIsWhatISO8601DateFormatterWrites() {
        for seconds in [0, 951_782_400 /* 2000-02-29 */, 1_796_329_205, 4_102_444_799] {
            XCTAssertEqual(BrokerLogLine.timestamp(time_t(seconds)),
                           ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(seconds))))
        }
    }

    func testHeaderNamesCompareWithoutCaseForLettersOnly() {
        let request = BrokerRequest(method: "GET", target: "/", headers: [("x-REQUEST-id", "a"), ("Authorization", "b")])
        XCTAssertEqual(request.header("X-Request-ID"), "a")
        XCTAssertEqual(request.header("authorization"), "b")
        XCTAssertNil(request.header("X-Request-I"))
        // '[' and '{' differ by the case bit too, but are not letters.
        XCTAssertFalse("a[".equalsIgnoringASCIICase("A{"))
        XCTAssertTrue("a[".equalsIgnoringASCIICase("A["))
    }

    func testBearerTokenParsing() {
        func token(_ header: String?) -> String? {
            BrokerAuthenticator.bearerToken(header).map { String(decoding: $0, as: UTF8.self) }
        }
        XCTAssertEqual(token("Bearer abc"), "abc")
        XCTAssertEqual(token("  bEARER   abc \t"), "abc")
        XCTAssertNil(token("Bearer"))
        XCTAssertNil(token("Bearer   "))
        XCTAssertNil(token("Bearer\tabc"))
        XCTAssertNil(token("Basic abc"))
        XCTAssertNil(token("Bearerx abc"))
        XCTAssertNil(token(nil))
        let authenticator = BrokerAuthenticator([BrokerConfiguration.Caller(name: "app", tokenSHA256: Broker.tokenSHA256("s3cret"), banks: ["b"])])
        XCTAssertEqual(authenticator.caller(authorization: "bearer  s3cret ")?.name, "app")
        XCTAssertNil(authenticator.caller(authorization: "Bearer s3cre"))
    }

    func testSHA256MatchesAPublishedVector() {
        // FIPS 180-2, "abc".
        XCTAssertEqual(Broker.tokenSHA256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    func testRequestIDTrimmingAndRandomIDs() {
        XCTAssertEqual(BrokerHTTP.requestID(" \tabc-1 "), "abc-1")
        XCTAssertNil(BrokerHTTP.requestID("   "))
        XCTAssertNil(BrokerHTTP.requestID("a b"))
        XCTAssertNil(BrokerHTTP.requestID(String(repeating: "x", count: 129)))
        let ids = (0..<200).map { _ in BrokerAuthenticator.randomRequestID() }
        XCTAssertEqual(Set(ids).count, ids.count)
        for id in ids.prefix(20) {
            XCTAssertEqual(id, id.lowercased())
            let uuid = UUID(uuidString: id)
            XCTAssertNotNil(uuid, id)
            XCTAssertEqual(Array(id)[14], "4", "version 4: \(id)")
            XCTAssertTrue("89ab".contains(Array(id)[19]), "RFC 4122 variant: \(id)")
        }
    }
}

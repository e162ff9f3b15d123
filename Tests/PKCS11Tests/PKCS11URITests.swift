import XCTest
@testable import PKCS11

final class PKCS11URITests: XCTestCase {
    // MARK: Helpers

    private func parse(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> PKCS11URI? {
        do {
            return try PKCS11URI(parsing: text)
        } catch {
            XCTFail("refused \(text): \(error.reason)", file: file, line: line)
            return nil
        }
    }

    /// parse(format(x)) == x, with the PIN included so that nothing is lost.
    private func assertRoundTrip(_ uri: PKCS11URI, file: StaticString = #filePath, line: UInt = #line) {
        let text = uri.formatted(includingPINValue: true)
        guard let again = parse(text, file: file, line: line) else { return }
        XCTAssertEqual(again, uri, "round trip through \(text)", file: file, line: line)
        XCTAssertEqual(again.formatted(includingPINValue: true), text, file: file, line: line)
    }

    @discardableResult
    private func assertRejects(_ text: String, _ code: PKCS11URIError.Code, mentioning fragments: [String],
                               file: StaticString = #filePath, line: UInt = #line) -> PKCS11URIError? {
        do {
            let uri = try PKCS11URI(parsing: text)
            XCTFail("accepted \(text) as \(uri)", file: file, line: line)
            return nil
        } catch {
            XCTAssertEqual(error.code, code, "for \(text): \(error.reason)", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(error.reason.contains(fragment), "reason for \(text) lacks \(fragment): \(error.reason)",
                              file: file, line: line)
            }
            XCTAssertEqual(error.description, error.reason, file: file, line: line)
            return error
        }
    }

    // MARK: RFC 7512 section 3.3 examples

    func testRFCExampleEmpty() throws {
        let uri = try XCTUnwrap(parse("pkcs11:"))
        XCTAssertEqual(uri, PKCS11URI())
        XCTAssertEqual(uri.formatted(), "pkcs11:")
        assertRoundTrip(uri)
    }

    func testRFCExamplePublicKeyByLabel() throws {
        let uri = try XCTUnwrap(parse("pkcs11:object=my-pubkey;type=public"))
        XCTAssertEqual(uri.object, "my-pubkey")
        XCTAssertEqual(uri.type, .publicKey)
        XCTAssertNil(uri.token)
        XCTAssertEqual(uri.formatted(), "pkcs11:object=my-pubkey;type=public")
        assertRoundTrip(uri)
    }

    func testRFCExamplePINSource() throws {
        let uri = try XCTUnwrap(parse("pkcs11:object=my-key;type=private?pin-source=file:/etc/token"))
        XCTAssertEqual(uri.object, "my-key")
        XCTAssertEqual(uri.type, .privateKey)
        XCTAssertEqual(uri.pinSource, "file:/etc/token")
        XCTAssertNil(uri.pinValue)
        XCTAssertEqual(uri.formatted(), "pkcs11:object=my-key;type=private?pin-source=file:/etc/token")
        assertRoundTrip(uri)
    }

    func testRFCExampleCertificateWithEverything() throws {
        let uri = try XCTUnwrap(parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin"))
        XCTAssertEqual(uri.token, "The Software PKCS#11 Softtoken")
        XCTAssertEqual(uri.manufacturer, "Snake Oil, Inc.")
        XCTAssertEqual(uri.model, "1.0")
        XCTAssertEqual(uri.object, "my-certificate")
        XCTAssertEqual(uri.type, .certificate)
        XCTAssertEqual(uri.id, [0x69, 0x95, 0x3E, 0x5C, 0xF4, 0xBD, 0xEC, 0x91])
        XCTAssertEqual(uri.serial, "", "an empty value is present, not absent")
        XCTAssertEqual(uri.pinSource, "file:/etc/token_pin")
        // Canonical order; `id` fully escaped.
        XCTAssertEqual(uri.formatted(),
                       "pkcs11:manufacturer=Snake%20Oil,%20Inc.;model=1.0;serial=;token=The%20Software%20PKCS%2311%20Softtoken;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91?pin-source=file:/etc/token_pin")
        assertRoundTrip(uri)
    }

    func testRFCExampleModuleName() throws {
        let uri = try XCTUnwrap(parse("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11"))
        XCTAssertEqual(uri.object, "my-sign-key")
        XCTAssertEqual(uri.type, .privateKey)
        XCTAssertEqual(uri.moduleName, "mypkcs11")
        XCTAssertNil(uri.modulePath)
        assertRoundTrip(uri)
    }

    func testRFCExampleModulePath() throws {
        let uri = try XCTUnwrap(parse("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1"))
        XCTAssertEqual(uri.object, "my-sign-key")
        XCTAssertEqual(uri.type, .privateKey)
        XCTAssertEqual(uri.modulePath, "/mnt/libmypkcs11.so.1")
        XCTAssertNil(uri.moduleName)
        XCTAssertEqual(uri.formatted(), "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1")
        assertRoundTrip(uri)
    }

    func testRFCExamplePINValue() throws {
        let uri = try XCTUnwrap(parse(
            "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin"))
        XCTAssertEqual(uri.token, "Software PKCS#11 softtoken")
        XCTAssertEqual(uri.manufacturer, "Snake Oil, Inc.")
        XCTAssertEqual(uri.pinValue, "the-pin")
        XCTAssertEqual(uri.formatted(), "pkcs11:manufacturer=Snake%20Oil,%20Inc.;token=Software%20PKCS%2311%20softtoken")
        XCTAssertEqual(uri.formatted(includingPINValue: true),
                       "pkcs11:manufacturer=Snake%20Oil,%20Inc.;token=Software%20PKCS%2311%20softtoken?pin-value=the-pin")
        assertRoundTrip(uri)
    }

    func testRFCExampleSlotDescription() throws {
        let uri = try XCTUnwrap(parse("pkcs11:slot-description=Sun%20Metaslot"))
        XCTAssertEqual(uri.slotDescription, "Sun Metaslot")
        XCTAssertEqual(uri.formatted(), "pkcs11:slot-description=Sun%20Metaslot")
        assertRoundTrip(uri)
    }

    func testRFCExampleLibraryAttributes() throws {
        let uri = try XCTUnwrap(parse(
            "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23"))
        XCTAssertEqual(uri.libraryManufacturer, "Snake Oil, Inc.")
        XCTAssertEqual(uri.libraryDescription, "Soft Token Library")
        XCTAssertEqual(uri.libraryVersion, PKCS11URI.LibraryVersion(major: 1, minor: 23))
        XCTAssertEqual(uri.formatted(),
                       "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23")
        assertRoundTrip(uri)
    }

    func testRFCExampleEscapedPercentAndMixedCaseID() throws {
        let uri = try XCTUnwrap(parse(
            "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ca%fe%04%05%06"))
        XCTAssertEqual(uri.token, "My token% created by Joe")
        XCTAssertEqual(uri.libraryVersion, PKCS11URI.LibraryVersion(major: 3))
        XCTAssertNil(uri.libraryVersion?.minor)
        XCTAssertEqual(uri.id, [0x01, 0x02, 0x03, 0xBA, 0xDD, 0xCA, 0xFE, 0x04, 0x05, 0x06])
        XCTAssertEqual(uri.formatted(),
                       "pkcs11:library-version=3;token=My%20token%25%20created%20by%20Joe;id=%01%02%03%BA%DD%CA%FE%04%05%06")
        assertRoundTrip(uri)
    }

    func testRFCExampleEscapedSemicolon() throws {
        let uri = try XCTUnwrap(parse("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert"))
        XCTAssertEqual(uri.token, "A name with a substring %;")
        XCTAssertEqual(uri.object, "my-certificate")
        XCTAssertEqual(uri.type, .certificate)
        XCTAssertEqual(uri.formatted(), "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert")
        assertRoundTrip(uri)
    }

    func testRFCExampleUTF8Label() throws {
        let uri = try XCTUnwrap(parse("pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert"))
        XCTAssertEqual(uri.token, "Name with a small A with acute: \u{E1}")
        XCTAssertEqual(uri.object, "my-certificate")
        XCTAssertEqual(uri.type, .certificate)
        XCTAssertEqual(uri.formatted(), "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert")
        assertRoundTrip(uri)
    }

    /// The RFC's vendor example uses names without "x-". This parser takes only "x-" names as
    /// vendor attributes (so that typos are caught), so it refuses the example as written and
    /// accepts the same URI with "x-" names.
    func testRFCExampleVendorAttributes() throws {
        assertRejects("pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
                      .unknownAttribute, mentioning: ["'vendor-aaa'", "x-"])

        let text = "pkcs11:token=my-token;object=my-certificate;type=cert;x-vendor-aaa=value-a?pin-source=file:/etc/token_pin&x-vendor-bbb=value-b"
        let uri = try XCTUnwrap(parse(text))
        XCTAssertEqual(uri.token, "my-token")
        XCTAssertEqual(uri.object, "my-certificate")
        XCTAssertEqual(uri.type, .certificate)
        XCTAssertEqual(uri.pinSource, "file:/etc/token_pin")
        XCTAssertEqual(uri.vendorPathAttributes, [try PKCS11URI.VendorAttribute(name: "x-vendor-aaa", value: "value-a")])
        XCTAssertEqual(uri.vendorQueryAttributes, [try PKCS11URI.VendorAttribute(name: "x-vendor-bbb", value: "value-b")])
        XCTAssertEqual(uri.formatted(), text)
        assertRoundTrip(uri)
    }

    // MARK: Other accepted forms

    func testSchemeIsCaseInsensitiveAndSurroundingWhitespaceIsTrimmed() throws {
        for text in ["PKCS11:object=k", "Pkcs11:object=k", "  \n\tpkcs11:object=k \r\n", "pkcs11:object=k\n"] {
            let uri = try XCTUnwrap(parse(text))
            XCTAssertEqual(uri.object, "k", text)
            XCTAssertEqual(uri.formatted(), "pkcs11:object=k")
        }
    }

    func testEmptyPathAndQuery() throws {
        let withModule = try XCTUnwrap(parse("pkcs11:?module-path=/usr/lib/softhsm/libsofthsm2.so"))
        XCTAssertEqual(withModule.modulePath, "/usr/lib/softhsm/libsofthsm2.so")
        XCTAssertNil(withModule.token)
        XCTAssertEqual(withModule.formatted(), "pkcs11:?module-path=/usr/lib/softhsm/libsofthsm2.so")
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:?")), PKCS11URI())
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:object=k?")).object, "k")
    }

    func testDelimitersInsideValues() throws {
        // "&" is plain text in the path; "?" and "/" are plain text in the query after the first "?".
        let uri = try XCTUnwrap(parse("pkcs11:object=a&b=c?pin-source=file:/run/pin?v=1|2"))
        XCTAssertEqual(uri.object, "a&b=c")
        XCTAssertEqual(uri.pinSource, "file:/run/pin?v=1|2")
        assertRoundTrip(uri)
    }

    func testSlotIDAndLibraryVersionForms() throws {
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:slot-id=0")).slotID, 0)
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:slot-id=18446744073709551615")).slotID, UInt64.max)
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:slot-id=%34%32")).slotID, 42)
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:library-version=0")).libraryVersion, .init(major: 0))
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:library-version=2.06")).libraryVersion, .init(major: 2, minor: 6))
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:library-version=255.255")).libraryVersion, .init(major: 255, minor: 255))
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:type=secret-key")).type, .secretKey)
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:type=data")).type, .data)
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:type=PRIVATE")).type, .privateKey)
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:id=")).id, [])
    }

    // MARK: Formatting

    func testFormattingABuiltURI() throws {
        var uri = PKCS11URI()
        uri.libraryManufacturer = "Acme & Co"
        uri.libraryVersion = .init(major: 2, minor: 6)
        uri.token = "Payments;QSeal?#1"
        uri.slotID = 42
        uri.object = "qseal/2024 \u{E4}"
        uri.type = .privateKey
        uri.id = [0x00, 0xAB, 0x7F, 0x41]
        uri.vendorPathAttributes = [try .init(name: "x-region", value: "eu-west-1")]
        uri.pinSource = "file:/run/secrets/pin?x|y"
        uri.pinValue = "s3cr&t"
        uri.modulePath = "/usr/lib/softhsm/libsofthsm2.so"
        uri.moduleName = "softhsm2"
        uri.vendorQueryAttributes = [try .init(name: "x-note", value: "a&b;c")]

        let withoutPIN = "pkcs11:library-manufacturer=Acme%20&%20Co;library-version=2.6;token=Payments%3BQSeal%3F%231;slot-id=42;object=qseal%2F2024%20%C3%A4;type=private;id=%00%AB%7F%41;x-region=eu-west-1"
            + "?pin-source=file:/run/secrets/pin?x|y&module-name=softhsm2&module-path=/usr/lib/softhsm/libsofthsm2.so&x-note=a%26b%3Bc"
        XCTAssertEqual(uri.formatted(), withoutPIN)
        XCTAssertEqual(uri.description, withoutPIN)
        XCTAssertEqual(uri.formatted(includingPINValue: true),
                       "pkcs11:library-manufacturer=Acme%20&%20Co;library-version=2.6;token=Payments%3BQSeal%3F%231;slot-id=42;object=qseal%2F2024%20%C3%A4;type=private;id=%00%AB%7F%41;x-region=eu-west-1"
                       + "?pin-source=file:/run/secrets/pin?x|y&pin-value=s3cr%26t&module-name=softhsm2&module-path=/usr/lib/softhsm/libsofthsm2.so&x-note=a%26b%3Bc")
        assertRoundTrip(uri)
    }

    /// Every ASCII character is written raw exactly when RFC 7512's ABNF allows it.
    func testPercentEncodingFollowsTheABNF() throws {
        let unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
        let resAvail = ":[]@!$'()*+,="               // pk11-res-avail
        let pathAllowed = unreserved + resAvail + "&"   // pk11-path-res-avail
        let queryAllowed = unreserved + resAvail + "/?|" // pk11-query-res-avail
        let everyASCII = String(String.UnicodeScalarView((0...0x7F).map { Unicode.Scalar(UInt8($0)) }))

        func expected(_ allowed: String, _ text: String = everyASCII) -> String {
            text.unicodeScalars.map { scalar in
                allowed.unicodeScalars.contains(scalar) ? String(scalar) : String(format: "%%%02X", scalar.value)
            }.joined()
        }

        var uri = PKCS11URI()
        uri.object = everyASCII
        // A file path cannot hold NUL, so module-path refuses %00 (PKCS11URINULByteTests).
        let everyASCIIButNUL = String(everyASCII.dropFirst())
        uri.modulePath = everyASCIIButNUL
        XCTAssertEqual(uri.formatted(), "pkcs11:object=\(expected(pathAllowed))?module-path=\(expected(queryAllowed, everyASCIIButNUL))")
        assertRoundTrip(uri)

        // `id` is binary: every byte escaped, even letters.
        var binary = PKCS11URI()
        binary.id = Array(0...255)
        XCTAssertEqual(binary.formatted(), "pkcs11:id=" + (0...255).map { String(format: "%%%02X", UInt32($0)) }.joined())
        assertRoundTrip(binary)
    }

    func testRoundTripOfAwkwardValues() throws {
        let pieces = ["a", "Z", "0", " ", "%", "%25", ";", "&", "?", "/", "=", "#", "|", "\\", "\"", "\u{E1}", "\u{20AC}",
                      "\u{1F511}", "\n", "\t", "\u{0}", "x-", ":", "[", "]", "'", "+", ",", "~", "."]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(truncatingIfNeeded: state >> 33)
        }
        func randomText() -> String {
            (0..<(next() % 12)).map { _ in pieces[next() % pieces.count] }.joined()
        }
        for _ in 0..<300 {
            var uri = PKCS11URI()
            uri.token = randomText()
            uri.manufacturer = randomText()
            uri.model = randomText()
            uri.serial = randomText()
            uri.slotID = UInt64(next())
            uri.slotDescription = randomText()
            uri.slotManufacturer = randomText()
            uri.libraryManufacturer = randomText()
            uri.libraryDescription = randomText()
            uri.libraryVersion = .init(major: next() % 256, minor: next() % 2 == 0 ? nil : next() % 256)
            uri.id = (0..<(next() % 20)).map { _ in UInt8(truncatingIfNeeded: next()) }
            uri.object = randomText()
            uri.type = PKCS11URI.ObjectType.allCases[next() % PKCS11URI.ObjectType.allCases.count]
            uri.vendorPathAttributes = [try .init(name: "x-p", value: randomText())]
            // These name files and modules, where %00 is refused (PKCS11URINULByteTests).
            uri.pinSource = randomText().replacingOccurrences(of: "\u{0}", with: "")
            uri.pinValue = randomText()
            uri.modulePath = randomText().replacingOccurrences(of: "\u{0}", with: "")
            uri.moduleName = randomText().replacingOccurrences(of: "\u{0}", with: "")
            uri.vendorQueryAttributes = [try .init(name: "x-q_1", value: randomText())]
            assertRoundTrip(uri)
        }
    }

    func testVendorAttributeNamesAreChecked() throws {
        XCTAssertEqual(try PKCS11URI.VendorAttribute(name: "x-Vendor_1", value: "v").name, "x-Vendor_1")
        for name in ["vendor-aaa", "x-", "x-a b", "x-a;b", "", "X-upper"] {
            do {
                _ = try PKCS11URI.VendorAttribute(name: name, value: "v")
                XCTFail("accepted vendor name \(name)")
            } catch {
                XCTAssertEqual(error.code, .malformedAttribute)
                XCTAssertTrue(error.reason.contains("'x-'"), error.reason)
            }
        }
    }

    // MARK: Refused input

    func testRefusesOtherSchemes() {
        assertRejects("http://example.com/key", .invalidScheme, mentioning: ["'http'", "pkcs11:"])
        assertRejects("pkcs12:object=k", .invalidScheme, mentioning: ["'pkcs12'"])
        assertRejects("token=foo;object=bar", .invalidScheme, mentioning: ["no URI scheme", "pkcs11:"])
        assertRejects("object=a:b", .invalidScheme, mentioning: ["does not start with a URI scheme"])
        assertRejects("", .invalidScheme, mentioning: ["pkcs11:"])
    }

    func testRefusesMalformedPercentEscapes() {
        assertRejects("pkcs11:object=%G1", .invalidPercentEncoding, mentioning: ["'%G1'", "'object'", "%25"])
        assertRejects("pkcs11:object=abc%4", .invalidPercentEncoding, mentioning: ["truncated", "'%4'", "'object'"])
        assertRejects("pkcs11:object=abc%", .invalidPercentEncoding, mentioning: ["truncated", "'%'"])
        assertRejects("pkcs11:id=%0", .invalidPercentEncoding, mentioning: ["truncated", "'id'"])
    }

    func testRefusesAttributesWithoutNameOrValueSeparator() {
        assertRejects("pkcs11:token=a;object", .malformedAttribute, mentioning: ["path attribute #2", "no '='"])
        assertRejects("pkcs11:?module-name", .malformedAttribute, mentioning: ["query attribute #1", "no '='"])
        assertRejects("pkcs11:=value", .malformedAttribute, mentioning: ["empty name"])
        assertRejects("pkcs11:token=a;;object=b", .malformedAttribute, mentioning: ["path attribute #2", "empty", "';'"])
        assertRejects("pkcs11:token=a;", .malformedAttribute, mentioning: ["path attribute #2", "empty"])
        assertRejects("pkcs11:?module-name=a&", .malformedAttribute, mentioning: ["query attribute #2", "'&'"])
        assertRejects("pkcs11:token=a;\n  object=b", .malformedAttribute, mentioning: ["path attribute #2", "lines"])
    }

    func testRefusesDuplicateAttributes() {
        assertRejects("pkcs11:token=a;object=k;token=b", .duplicateAttribute, mentioning: ["duplicate path attribute 'token'"])
        assertRejects("pkcs11:id=%01;id=%01", .duplicateAttribute, mentioning: ["'id'"])
        assertRejects("pkcs11:?module-name=a&module-name=b", .duplicateAttribute, mentioning: ["duplicate query attribute 'module-name'"])
        assertRejects("pkcs11:x-a=1;x-a=2", .duplicateAttribute, mentioning: ["'x-a'"])
    }

    func testRefusesUnknownAttributes() {
        assertRejects("pkcs11:tokn=a", .unknownAttribute, mentioning: ["unknown path attribute 'tokn'", "did you mean 'token'", "x-"])
        assertRejects("pkcs11:Object=a", .unknownAttribute, mentioning: ["'Object'", "did you mean 'object'"])
        assertRejects("pkcs11:?pin-sauce=file:/x", .unknownAttribute, mentioning: ["unknown query attribute 'pin-sauce'", "'pin-source'"])
        assertRejects("pkcs11:x-=a", .unknownAttribute, mentioning: ["'x-'"])
        assertRejects("pkcs11:?token=a", .unknownAttribute, mentioning: ["'token' is a path attribute", "before '?'"])
        assertRejects("pkcs11:module-path=/x.so", .unknownAttribute, mentioning: ["'module-path' is a query attribute", "after '?'"])
    }

    func testRefusesBadSlotIDTypeAndVersion() {
        assertRejects("pkcs11:slot-id=abc", .invalidValue, mentioning: ["slot-id 'abc'", "decimal"])
        assertRejects("pkcs11:slot-id=-1", .invalidValue, mentioning: ["slot-id '-1'"])
        assertRejects("pkcs11:slot-id=+1", .invalidValue, mentioning: ["slot-id '+1'"])
        assertRejects("pkcs11:slot-id=", .invalidValue, mentioning: ["slot-id"])
        assertRejects("pkcs11:slot-id=0x10", .invalidValue, mentioning: ["'0x10'"])
        assertRejects("pkcs11:slot-id=18446744073709551616", .invalidValue, mentioning: ["larger than"])
        assertRejects("pkcs11:type=pubkey", .invalidValue, mentioning: ["unknown type 'pubkey'", "cert, data, private, public, secret-key"])
        assertRejects("pkcs11:type=", .invalidValue, mentioning: ["type ''"])
        for version in ["", "1.", ".1", "1.2.3", "a", "256", "1.256", "-1", "1 .2"] {
            let text = "pkcs11:library-version=" + version.replacingOccurrences(of: " ", with: "%20")
            assertRejects(text, .invalidValue, mentioning: ["library-version '\(version)'", "M.N"])
        }
    }

    func testRefusesInvalidUTF8InText() {
        assertRejects("pkcs11:object=%C3%28", .invalidUTF8, mentioning: ["'object'", "UTF-8"])
        assertRejects("pkcs11:token=%FF", .invalidUTF8, mentioning: ["'token'"])
        assertRejects("pkcs11:?module-path=/lib/%80.so", .invalidUTF8, mentioning: ["'module-path'"])
        // `id` is binary, so the same bytes are fine there.
        XCTAssertEqual(try XCTUnwrap(parse("pkcs11:id=%C3%28%FF")).id, [0xC3, 0x28, 0xFF])
    }

    func testRefusesFragment() {
        assertRejects("pkcs11:object=key#frag", .fragmentNotAllowed, mentioning: ["'#'", "%23"])
        assertRejects("pkcs11:#", .fragmentNotAllowed, mentioning: ["fragment"])
    }

    func testRefusesCharactersThatMustBeEncoded() {
        assertRejects("pkcs11:object=my key", .invalidCharacter, mentioning: ["'object'", "a space", "%20"])
        assertRejects("pkcs11:object=a/b", .invalidCharacter, mentioning: ["'/'", "%2F"])
        assertRejects("pkcs11:object=a|b", .invalidCharacter, mentioning: ["'|'", "%7C"])
        assertRejects("pkcs11:?module-name=a\u{7F}", .invalidCharacter, mentioning: ["control character", "%7F"])
        assertRejects("pkcs11:token=\u{E1}", .invalidCharacter, mentioning: ["non-ASCII", "%C3%A1"])
        assertRejects("pkcs11:?pin-source=file:/a;b", .invalidCharacter, mentioning: ["'pin-source'", "';'", "%3B"])
    }

    // MARK: The PIN stays out of text

    func testPINValueNeverShownUnlessAsked() throws {
        let pin = "Zq7-SECRET-pin-41"
        let uri = try XCTUnwrap(parse("pkcs11:token=t;object=visible-label?pin-source=file:/x&pin-value=\(pin)"))
        XCTAssertEqual(uri.pinValue, pin, "control: the PIN was parsed")

        var dumped = ""
        dump(uri, to: &dumped)
        let shown = [
            "formatted()": uri.formatted(),
            "description": uri.description,
            "interpolation": "\(uri)",
            "debugDescription": uri.debugDescription,
            "String(reflecting:)": String(reflecting: uri),
            "dump": dumped,
        ]
        for (how, text) in shown {
            XCTAssertFalse(text.contains(pin), "\(how) shows the PIN")
            XCTAssertTrue(text.contains("visible-label"), "control: \(how) shows the other fields")
        }
        XCTAssertTrue(uri.debugDescription.contains("redacted"))
        XCTAssertTrue(dumped.contains("redacted"))

        // Control: the same checks find the PIN when it is meant to be there.
        XCTAssertTrue(uri.formatted(includingPINValue: true).contains("pin-value=\(pin)"))
        var mirrored = ""
        dump(uri.pinValue, to: &mirrored)
        XCTAssertTrue(mirrored.contains(pin))
    }

    func testErrorReasonsNeverShowPINValueOrTheURI() throws {
        let pin = "Zq7-SECRET-pin-41"
        // Parts of a value that reasons quote for other attributes must not be quoted from a PIN.
        let quotable: [(value: String, fragment: String, code: PKCS11URIError.Code)] = [
            ("\(pin)%G1", "'%G1'", .invalidPercentEncoding),
            ("%G\(pin)", "'%GZ'", .invalidPercentEncoding),
            ("\(pin)%4", "'%4'", .invalidPercentEncoding),
            ("\(pin);x", "';'", .invalidCharacter),
            ("\(pin)<", "'<'", .invalidCharacter),
        ]
        for (value, fragment, code) in quotable {
            if let error = assertRejects("pkcs11:object=k?pin-value=\(value)", code, mentioning: ["'pin-value'"]) {
                XCTAssertFalse(error.reason.contains(fragment), "reason quotes part of the PIN: \(error.reason)")
                XCTAssertFalse(error.reason.contains("SECRET"), "reason shows the PIN: \(error.reason)")
            }
            // Control: the same value under another attribute is quoted, so the check above can fail.
            assertRejects("pkcs11:object=k?module-name=\(value)", code, mentioning: [fragment])
        }

        let inputs: [(String, PKCS11URIError.Code)] = [
            ("pkcs11:object=k?pin-value=\(pin) x", .invalidCharacter),
            ("pkcs11:object=k?pin-value=\(pin)%FF", .invalidUTF8),
            ("pkcs11:object=k?pin-value=\(pin)&pin-value=\(pin)", .duplicateAttribute),
            ("pkcs11:pin-value=\(pin)", .unknownAttribute),
            ("pkcs11:object=k?pin-value=\(pin)&bogus=1", .unknownAttribute),
            ("pkcs11:object=k?pin-value=\(pin)&module-name", .malformedAttribute),
            ("pkcs11:object=k?pin-value\(pin)", .malformedAttribute),
            ("pkcs11:object=k?\(pin)", .malformedAttribute),
            ("pkcs11:object=k?pin-value=\(pin)#x", .fragmentNotAllowed),
            ("pkcs11:slot-id=x?pin-value=\(pin)", .invalidValue),
            ("http:object=k?pin-value=\(pin)", .invalidScheme),
            ("object=k?pin-value=\(pin)", .invalidScheme),
        ]
        for (input, code) in inputs {
            guard let error = assertRejects(input, code, mentioning: []) else { continue }
            XCTAssertFalse(error.reason.contains(pin), "reason shows the PIN: \(error.reason)")
            XCTAssertFalse(error.reason.contains("SECRET"), "reason shows part of the PIN: \(error.reason)")
            XCTAssertFalse(error.description.contains(pin))
            XCTAssertFalse(error.reason.contains(input), "reason echoes the URI")
        }

        // Control: values of other attributes are quoted, so the check above can fail.
        let control = try XCTUnwrap(assertRejects("pkcs11:slot-id=\(pin)", .invalidValue, mentioning: []))
        XCTAssertTrue(control.reason.contains(pin))
    }
}

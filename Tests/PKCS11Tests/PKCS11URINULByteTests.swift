import PKCS11
import XCTest

/// `%00` in a value that names a file or module. Handed to `dlopen` or `open` as a C string the
/// path ended at the NUL, so `module-path=/usr/lib/softhsm/libsofthsm2.so%00junk` loaded
/// SoftHSM and `pin-source=file:/run/pin%00x` read /run/pin: the URI named one file and the
/// program used another.
final class PKCS11URINULByteTests: XCTestCase {
    func testNULInModulePathPinSourceOrModuleNameIsRefused() {
        for attribute in ["module-path=/usr/lib/softhsm/libsofthsm2.so%00junk",
                          "pin-source=file:/run/pin%00x",
                          "module-name=softhsm2%00"] {
            XCTAssertThrowsError(try PKCS11URI(parsing: "pkcs11:token=t?\(attribute)"), attribute) { error in
                guard let error = error as? PKCS11URIError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.code, .invalidValue, attribute)
                XCTAssertTrue(error.reason.contains("%00"), error.reason)
            }
        }
    }

    func testTheSameValuesWithoutTheNULAndAPINWithANULStillParse() throws {
        // Control: the values are refused for the NUL only.
        let uri = try PKCS11URI(parsing: "pkcs11:token=t?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin")
        XCTAssertEqual(uri.modulePath, "/usr/lib/softhsm/libsofthsm2.so")
        XCTAssertEqual(uri.pinSource, "file:/run/pin")
        // A PIN is passed with its length, so any byte is allowed in it, and the error never shows it.
        let pin = try PKCS11URI(parsing: "pkcs11:token=t?pin-value=12%0034")
        XCTAssertEqual(pin.pinValue.map { Array($0.utf8) }, [0x31, 0x32, 0x00, 0x33, 0x34])
    }
}

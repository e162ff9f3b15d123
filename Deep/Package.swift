// swift-tools-version:6.0
// The deep checks (`make check-deep`): libFuzzer targets and the leak driver.
//
// A package of its own so that the fuzz targets, which have no `main` (libFuzzer supplies it
// when linked with -sanitize=fuzzer), never take part in the normal build or `make test`.
// The fuzz targets use `@testable import` to reach the parsers that are internal; SwiftPM
// compiles every module with testing enabled in debug builds, which is how they are built.
import PackageDescription

let package = Package(
    name: "KeyBridgeDeepChecks",
    products: [
        .executable(name: "fuzz-pkcs11-uri", targets: ["FuzzPKCS11URI"]),
        .executable(name: "fuzz-signatures", targets: ["FuzzSignatures"]),
        .executable(name: "fuzz-broker", targets: ["FuzzBroker"]),
        .executable(name: "leak-check", targets: ["LeakCheck"]),
    ],
    dependencies: [.package(name: "KeyBridge", path: "..")],
    targets: [
        .target(name: "CFuzzerDriver"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzerDriver"]),
        .executableTarget(name: "FuzzPKCS11URI", dependencies: ["FuzzSupport", .product(name: "PKCS11", package: "KeyBridge")]),
        .executableTarget(name: "FuzzSignatures", dependencies: ["FuzzSupport", .product(name: "OpenBanking", package: "KeyBridge")]),
        .executableTarget(name: "FuzzBroker", dependencies: ["FuzzSupport", .product(name: "KeyBridgeBroker", package: "KeyBridge")]),
        // Built with --sanitize=address alone (no fuzzer): it has a main of its own.
        .executableTarget(name: "LeakCheck", dependencies: [
            .product(name: "KeyBridgeTLS", package: "KeyBridge"),
            .product(name: "KeyBridgeProvider", package: "KeyBridge"),
            .product(name: "PKCS11", package: "KeyBridge"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)

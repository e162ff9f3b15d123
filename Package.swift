// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "KeyBridge",
    products: [
        .library(name: "PKCS11", targets: ["PKCS11"]),
        .library(name: "KeyBridgeProvider", targets: ["KeyBridgeProvider"]),
        .library(name: "KeyBridgeTLS", targets: ["KeyBridgeTLS"]),
        .library(name: "OpenBanking", targets: ["OpenBanking"]),
        .library(name: "MockBank", targets: ["MockBank"]),
        .library(name: "KeyBridgeBroker", targets: ["KeyBridgeBroker"]),
        .library(name: "keybridge-provider", type: .dynamic, targets: ["KeyBridgeProviderModule"]),
        .executable(name: "keybridge", targets: ["keybridge"]),
    ],
    targets: [
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CPKCS11", pkgConfig: "p11-kit-1", providers: [.apt(["libp11-kit-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CMicroHTTPD", pkgConfig: "libmicrohttpd", providers: [.apt(["libmicrohttpd-dev"])]),
        .target(name: "CKeyBridgeShims", dependencies: ["COpenSSL", "CPKCS11", "CCurl", "CMicroHTTPD"]),
        .target(name: "PKCS11", dependencies: ["CPKCS11", "CKeyBridgeShims"]),
        .target(name: "KeyBridgeProvider", dependencies: ["PKCS11", "COpenSSL", "CKeyBridgeShims"]),
        .target(name: "KeyBridgeProviderModule", dependencies: ["KeyBridgeProvider"]),
        .target(name: "KeyBridgeTLS", dependencies: ["PKCS11", "KeyBridgeProvider", "COpenSSL", "CCurl", "CKeyBridgeShims"]),
        .target(name: "OpenBanking", dependencies: ["KeyBridgeProvider", "PKCS11", "COpenSSL", "CKeyBridgeShims"]),
        .target(name: "MicroHTTPListener", dependencies: ["CMicroHTTPD", "CKeyBridgeShims"]),
        .target(name: "MockBank", dependencies: ["OpenBanking", "MicroHTTPListener", "CMicroHTTPD", "CKeyBridgeShims", "COpenSSL"]),
        .target(name: "KeyBridgeBroker", dependencies: ["KeyBridgeTLS", "OpenBanking", "KeyBridgeProvider", "PKCS11", "MicroHTTPListener", "CMicroHTTPD", "CKeyBridgeShims", "COpenSSL"]),
        .target(name: "KeyBridgeBench", dependencies: ["KeyBridgeTLS", "KeyBridgeProvider", "PKCS11", "COpenSSL", "CKeyBridgeShims"]),
        .executableTarget(name: "keybridge", dependencies: ["KeyBridgeTLS", "OpenBanking", "PKCS11", "MockBank", "KeyBridgeBroker", "KeyBridgeBench"]),
        .executableTarget(name: "keybridge-probe", dependencies: ["KeyBridgeTLS", "KeyBridgeProvider", "PKCS11"]),
        .target(name: "KeyBridgeTestSupport", path: "Tests/KeyBridgeTestSupport"),
        .testTarget(name: "PKCS11Tests", dependencies: ["PKCS11", "KeyBridgeTestSupport"]),
        .testTarget(name: "KeyBridgeProviderTests", dependencies: ["KeyBridgeProvider", "PKCS11", "KeyBridgeTestSupport"]),
        .testTarget(name: "KeyBridgeTLSTests", dependencies: ["KeyBridgeTLS", "PKCS11", "KeyBridgeTestSupport"]),
        .testTarget(name: "KeyBridgeBrokerTests", dependencies: ["KeyBridgeBroker", "KeyBridgeTestSupport"]),
        .testTarget(name: "IsolationTests", dependencies: ["KeyBridgeTLS", "KeyBridgeProvider", "PKCS11", "CPKCS11", "KeyBridgeTestSupport"]),
        .testTarget(name: "OperatorToolsTests", dependencies: ["KeyBridgeTestSupport", "PKCS11", "KeyBridgeTLS", "KeyBridgeProvider", "OpenBanking"]),
        .testTarget(name: "KeyBridgeBenchTests", dependencies: ["KeyBridgeBench", "PKCS11"]),
        .testTarget(name: "OpenBankingTests", dependencies: ["OpenBanking", "KeyBridgeProvider", "PKCS11", "KeyBridgeTestSupport", "MockBank"]),
    ],
    swiftLanguageModes: [.v6]
)

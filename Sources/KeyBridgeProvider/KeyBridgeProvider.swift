internal import COpenSSL
import Foundation
import PKCS11

/// The OpenSSL 3 provider that performs private-key operations on PKCS#11 tokens.
///
/// It offers RSA and EC key management, RSA (PKCS#1 v1.5 and PSS) and ECDSA signatures, and a
/// `pkcs11` store loader, so `OSSL_STORE_open("pkcs11:…")` yields keys that sign on the token.
public enum KeyBridgeProvider {
    /// The name the provider is registered under.
    public static let name = "keybridge"
    public static let version = "0.1.0"

    private static let loadLock = NSLock()
    nonisolated(unsafe) private static var loaded = false
    /// The handles `OSSL_PROVIDER_load` returned, guarded by `loadLock`. Kept, never unloaded: the
    /// providers serve the whole process. Dropping them instead left their references owned by
    /// nothing, and LeakSanitizer reported them once OpenSSL's exit cleanup freed its own.
    nonisolated(unsafe) private static var providerHandles: [OpaquePointer] = []

    /// Registers the provider in the default library context and activates it next to OpenSSL's
    /// default provider. Safe to call many times.
    public static func loadInProcess() throws(OpenSSLError) {
        loadLock.lock()
        defer { loadLock.unlock() }
        if loaded { return }
        // Loading any provider by hand turns off the automatic default one, so load it too.
        guard let defaultProvider = OSSL_PROVIDER_load(nil, "default") else {
            throw OpenSSLError.drain(function: "OSSL_PROVIDER_load", reason: "cannot load OpenSSL's default provider")
        }
        providerHandles.append(defaultProvider)
        guard OSSL_PROVIDER_add_builtin(nil, name, providerInit) == 1 else {
            throw OpenSSLError.drain(function: "OSSL_PROVIDER_add_builtin", reason: "cannot register the keybridge provider")
        }
        guard let ownProvider = OSSL_PROVIDER_load(nil, name) else {
            throw OpenSSLError.drain(function: "OSSL_PROVIDER_load", reason: "cannot start the keybridge provider")
        }
        providerHandles.append(ownProvider)
        loaded = true
    }

    /// The provider's entry point, with the exact `OSSL_provider_init_fn` signature.
    nonisolated(unsafe) static let providerInit: @convention(c) (OpaquePointer?, UnsafePointer<OSSL_DISPATCH>?,
                                                     UnsafeMutablePointer<UnsafePointer<OSSL_DISPATCH>?>?,
                                                     UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 = initializeProvider

    /// The provider entry point for the loadable module, with `OSSL_provider_init_fn`'s
    /// parameters as raw pointers.
    package static func initializeModule(handle: OpaquePointer?, core: UnsafeRawPointer?,
                                         out: UnsafeMutableRawPointer?, context: UnsafeMutableRawPointer?) -> Int32 {
        providerInit(handle, core?.assumingMemoryBound(to: OSSL_DISPATCH.self),
                     out?.assumingMemoryBound(to: UnsafePointer<OSSL_DISPATCH>?.self),
                     context?.assumingMemoryBound(to: UnsafeMutableRawPointer?.self))
    }

    /// Opens a `pkcs11:` URI through OSSL_STORE and returns the key, owned by the caller
    /// (free with `EVP_PKEY_free`).
    package static func loadPrivateKey(uri: String) throws(OpenSSLError) -> OpaquePointer {
        try loadInProcess()
        ERR_clear_error()
        _ = ProviderDiagnostics.takeLastFailure()
        guard let store = OSSL_STORE_open_ex(uri, nil, nil, nil, nil, nil, nil, nil) else {
            throw OpenSSLError.afterFailedCall("OSSL_STORE_open", fallback: "cannot open \(uri.prefix { $0 != "?" })")
        }
        defer { OSSL_STORE_close(store) }
        while OSSL_STORE_eof(store) == 0 {
            guard let info = OSSL_STORE_load(store) else { break }
            defer { OSSL_STORE_INFO_free(info) }
            if OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY, let key = OSSL_STORE_INFO_get1_PKEY(info) {
                return key
            }
        }
        throw OpenSSLError.afterFailedCall("OSSL_STORE_load", fallback: "no private key was loaded")
    }

}

private func initializeProvider(_ handle: OpaquePointer?, _ core: UnsafePointer<OSSL_DISPATCH>?,
                                _ out: UnsafeMutablePointer<UnsafePointer<OSSL_DISPATCH>?>?,
                                _ context: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guard let out, let context else { return 0 }
    ProviderSettings.load(handle: handle, core: core)
    out.pointee = ProviderTables.shared.providerDispatch
    // No per-provider state is needed: keys and tokens carry their own.
    context.pointee = nil
    return 1
}

/// All tables the provider hands to OpenSSL, built once.
final class ProviderTables: @unchecked Sendable {
    // Immutable after construction.
    let providerDispatch: UnsafePointer<OSSL_DISPATCH>
    let keyManagement: UnsafePointer<OSSL_ALGORITHM>
    let signatures: UnsafePointer<OSSL_ALGORITHM>
    let stores: UnsafePointer<OSSL_ALGORITHM>
    let gettableParams: UnsafePointer<OSSL_PARAM>

    static let shared = ProviderTables()

    private init() {
        let properties = "provider=keybridge"
        keyManagement = AlgorithmTable.make([
            ("RSA:rsaEncryption:1.2.840.113549.1.1.1", properties, KeyManagement.dispatchTable(for: .rsa), "RSA keys on a PKCS#11 token"),
            ("EC:id-ecPublicKey:1.2.840.10045.2.1", properties, KeyManagement.dispatchTable(for: .ec), "EC keys on a PKCS#11 token"),
            ("ED25519:1.3.101.112", properties, KeyManagement.dispatchTable(for: .ed25519), "Ed25519 keys on a PKCS#11 token"),
        ])
        signatures = AlgorithmTable.make([
            ("RSA:rsaEncryption:1.2.840.113549.1.1.1", properties, SignatureOperations.dispatchTable, "RSA signatures on a PKCS#11 token"),
            ("ECDSA", properties, SignatureOperations.dispatchTable, "ECDSA signatures on a PKCS#11 token"),
            ("ED25519:1.3.101.112", properties, SignatureOperations.ed25519DispatchTable, "Ed25519 signatures on a PKCS#11 token"),
        ])
        stores = AlgorithmTable.make([
            ("pkcs11", properties, StoreLoader.dispatchTable, "PKCS#11 URI (RFC 7512) store"),
        ])
        gettableParams = ParamList.make([
            OSSL_PARAM_construct_utf8_ptr(StaticCString.get(OSSL_PROV_PARAM_NAME), nil, 0),
            OSSL_PARAM_construct_utf8_ptr(StaticCString.get(OSSL_PROV_PARAM_VERSION), nil, 0),
            OSSL_PARAM_construct_utf8_ptr(StaticCString.get(OSSL_PROV_PARAM_BUILDINFO), nil, 0),
            OSSL_PARAM_construct_int(StaticCString.get(OSSL_PROV_PARAM_STATUS), nil),
        ])
        providerDispatch = DispatchTable.make([
            (OSSL_FUNC_PROVIDER_QUERY_OPERATION, DispatchTable.function(providerQuery as @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<Int32>?) -> UnsafePointer<OSSL_ALGORITHM>?)),
            (OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, DispatchTable.function(providerGettable as @convention(c) (UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>?)),
            (OSSL_FUNC_PROVIDER_GET_PARAMS, DispatchTable.function(providerGetParams as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32)),
            (OSSL_FUNC_PROVIDER_TEARDOWN, DispatchTable.function(providerTeardown as @convention(c) (UnsafeMutableRawPointer?) -> Void)),
        ])
    }
}

private func providerQuery(_ context: UnsafeMutableRawPointer?, _ operation: Int32, _ noCache: UnsafeMutablePointer<Int32>?) -> UnsafePointer<OSSL_ALGORITHM>? {
    noCache?.pointee = 0
    switch operation {
    case OSSL_OP_KEYMGMT: return ProviderTables.shared.keyManagement
    case OSSL_OP_SIGNATURE: return ProviderTables.shared.signatures
    case OSSL_OP_STORE: return ProviderTables.shared.stores
    default: return nil
    }
}

private func providerGettable(_ context: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    ProviderTables.shared.gettableParams
}

private func providerGetParams(_ context: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 {
    guard let params else { return 0 }
    if let param = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME), OSSL_PARAM_set_utf8_ptr(param, StaticCString.get("KeyBridge PKCS#11 provider")) != 1 { return 0 }
    if let param = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION), OSSL_PARAM_set_utf8_ptr(param, StaticCString.get(KeyBridgeProvider.version)) != 1 { return 0 }
    if let param = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO), OSSL_PARAM_set_utf8_ptr(param, StaticCString.get("KeyBridge \(KeyBridgeProvider.version) (Swift)")) != 1 { return 0 }
    if let param = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS), OSSL_PARAM_set_int(param, 1) != 1 { return 0 }
    return 1
}

private func providerTeardown(_ context: UnsafeMutableRawPointer?) {}

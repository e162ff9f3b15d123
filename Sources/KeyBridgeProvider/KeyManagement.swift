internal import COpenSSL
import Foundation
import PKCS11

// Key management callbacks. The key data pointer is a retained `KeyDataBox`.

/// Per-algorithm key management state: the default provider's keymgmt, whose parameter lists
/// describe what our key objects can answer.
final class KeyManagementTables: @unchecked Sendable {
    // Built once at provider start and read-only afterwards.
    let rsaDefault: OpaquePointer?
    let ecDefault: OpaquePointer?
    let ed25519Default: OpaquePointer?

    static let shared = KeyManagementTables()

    private init() {
        rsaDefault = EVP_KEYMGMT_fetch(nil, "RSA", PublicKeyBuilder.defaultProperties)
        ecDefault = EVP_KEYMGMT_fetch(nil, "EC", PublicKeyBuilder.defaultProperties)
        ed25519Default = EVP_KEYMGMT_fetch(nil, "ED25519", PublicKeyBuilder.defaultProperties)
    }
}

private let selectPrivateKey = Int32(OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
private let selectPublicKey = Int32(OSSL_KEYMGMT_SELECT_PUBLIC_KEY)

/// Key data is either an empty placeholder (from `new`) or a `KeyObject`; a box tells which.
final class KeyDataBox: @unchecked Sendable {
    // Written during import by the owning thread only, read-only afterwards.
    let algorithm: KeyAlgorithm
    var key: KeyObject?
    init(algorithm: KeyAlgorithm, key: KeyObject?) {
        self.algorithm = algorithm
        self.key = key
    }
}

func keyBox(_ pointer: UnsafeMutableRawPointer?) -> KeyDataBox? {
    guard let pointer else { return nil }
    return Unmanaged<KeyDataBox>.fromOpaque(pointer).takeUnretainedValue()
}

func boxedPointer(_ key: KeyObject) -> UnsafeMutableRawPointer {
    Unmanaged.passRetained(KeyDataBox(algorithm: key.algorithm, key: key)).toOpaque()
}

enum KeyManagement {
    static func dispatchTable(for algorithm: KeyAlgorithm) -> UnsafePointer<OSSL_DISPATCH> {
        // C callbacks cannot capture the algorithm, so each family has its own small set.
        let newFunction: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer?
        let queryName: @convention(c) (Int32) -> UnsafePointer<CChar>?
        let gettable: @convention(c) (UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>?
        let types: @convention(c) (Int32) -> UnsafePointer<OSSL_PARAM>?
        switch algorithm {
        case .rsa: (newFunction, queryName, gettable, types) = (rsaNew, rsaQueryOperationName, rsaGettableParams, rsaKeyTypes)
        case .ec: (newFunction, queryName, gettable, types) = (ecNew, ecQueryOperationName, ecGettableParams, ecKeyTypes)
        case .ed25519: (newFunction, queryName, gettable, types) = (ed25519New, ed25519QueryOperationName, ed25519GettableParams, ed25519KeyTypes)
        }
        return DispatchTable.make([
            (OSSL_FUNC_KEYMGMT_NEW, DispatchTable.function(newFunction)),
            (OSSL_FUNC_KEYMGMT_FREE, DispatchTable.function(keyFree as @convention(c) (UnsafeMutableRawPointer?) -> Void)),
            (OSSL_FUNC_KEYMGMT_DUP, DispatchTable.function(keyDuplicate as @convention(c) (UnsafeRawPointer?, Int32) -> UnsafeMutableRawPointer?)),
            (OSSL_FUNC_KEYMGMT_LOAD, DispatchTable.function(keyLoad as @convention(c) (UnsafeRawPointer?, Int) -> UnsafeMutableRawPointer?)),
            (OSSL_FUNC_KEYMGMT_HAS, DispatchTable.function(keyHas as @convention(c) (UnsafeRawPointer?, Int32) -> Int32)),
            (OSSL_FUNC_KEYMGMT_MATCH, DispatchTable.function(keyMatch as @convention(c) (UnsafeRawPointer?, UnsafeRawPointer?, Int32) -> Int32)),
            (OSSL_FUNC_KEYMGMT_GET_PARAMS, DispatchTable.function(keyGetParams as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32)),
            (OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, DispatchTable.function(gettable)),
            (OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, DispatchTable.function(queryName)),
            (OSSL_FUNC_KEYMGMT_IMPORT, DispatchTable.function(keyImport as @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<OSSL_PARAM>?) -> Int32)),
            (OSSL_FUNC_KEYMGMT_IMPORT_TYPES, DispatchTable.function(types)),
            (OSSL_FUNC_KEYMGMT_EXPORT, DispatchTable.function(keyExport as @convention(c) (UnsafeMutableRawPointer?, Int32, ParamCallback?, UnsafeMutableRawPointer?) -> Int32)),
            (OSSL_FUNC_KEYMGMT_EXPORT_TYPES, DispatchTable.function(types)),
        ])
    }

    nonisolated(unsafe) static let rsaPublicTypes: UnsafePointer<OSSL_PARAM> = ParamList.make([
        OSSL_PARAM_construct_BN(StaticCString.get(OSSL_PKEY_PARAM_RSA_N), nil, 0),
        OSSL_PARAM_construct_BN(StaticCString.get(OSSL_PKEY_PARAM_RSA_E), nil, 0),
    ])

    nonisolated(unsafe) static let ed25519PublicTypes: UnsafePointer<OSSL_PARAM> = ParamList.make([
        OSSL_PARAM_construct_octet_string(StaticCString.get(OSSL_PKEY_PARAM_PUB_KEY), nil, 0),
    ])

    nonisolated(unsafe) static let ecPublicTypes: UnsafePointer<OSSL_PARAM> = ParamList.make([
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_PKEY_PARAM_GROUP_NAME), nil, 0),
        OSSL_PARAM_construct_octet_string(StaticCString.get(OSSL_PKEY_PARAM_PUB_KEY), nil, 0),
    ])
}

private func rsaNew(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Unmanaged.passRetained(KeyDataBox(algorithm: .rsa, key: nil)).toOpaque()
}

private func ecNew(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Unmanaged.passRetained(KeyDataBox(algorithm: .ec, key: nil)).toOpaque()
}

private func ed25519New(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Unmanaged.passRetained(KeyDataBox(algorithm: .ed25519, key: nil)).toOpaque()
}

private func ed25519QueryOperationName(_ operation: Int32) -> UnsafePointer<CChar>? {
    operation == OSSL_OP_SIGNATURE ? StaticCString.get("ED25519") : nil
}

private func ed25519GettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    KeyManagementTables.shared.ed25519Default.flatMap { EVP_KEYMGMT_gettable_params($0) }
}

private func ed25519KeyTypes(_ selection: Int32) -> UnsafePointer<OSSL_PARAM>? {
    selection & selectPublicKey != 0 ? KeyManagement.ed25519PublicTypes : nil
}

/// Key objects are immutable, so a duplicate shares the same one.
private func keyDuplicate(_ keydata: UnsafeRawPointer?, _ selection: Int32) -> UnsafeMutableRawPointer? {
    guard let box = keyBox(UnsafeMutableRawPointer(mutating: keydata)) else { return nil }
    return Unmanaged.passRetained(KeyDataBox(algorithm: box.algorithm, key: box.key)).toOpaque()
}

private func keyFree(_ keydata: UnsafeMutableRawPointer?) {
    guard let keydata else { return }
    Unmanaged<KeyDataBox>.fromOpaque(keydata).release()
}

/// The store hands over a reference: the bytes of a pointer to a `KeyObject` it keeps alive.
private func keyLoad(_ reference: UnsafeRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    guard let reference, size == MemoryLayout<UnsafeRawPointer>.size else { return nil }
    let pointer = reference.loadUnaligned(as: UnsafeMutableRawPointer.self)
    let key = Unmanaged<KeyObject>.fromOpaque(pointer).takeUnretainedValue()
    return boxedPointer(key)
}

private func keyHas(_ keydata: UnsafeRawPointer?, _ selection: Int32) -> Int32 {
    guard let box = keyBox(UnsafeMutableRawPointer(mutating: keydata)) else { return 0 }
    guard let key = box.key else { return selection == 0 ? 1 : 0 }
    if selection & selectPrivateKey != 0 && !key.isPrivate { return 0 }
    return 1
}

private func keyMatch(_ first: UnsafeRawPointer?, _ second: UnsafeRawPointer?, _ selection: Int32) -> Int32 {
    guard let a = keyBox(UnsafeMutableRawPointer(mutating: first))?.key,
          let b = keyBox(UnsafeMutableRawPointer(mutating: second))?.key else { return 0 }
    // Only public halves exist here; private keys are the same when their public keys are.
    if selection & (selectPublicKey | selectPrivateKey) == 0 {
        return EVP_PKEY_parameters_eq(a.publicKey, b.publicKey) == 1 ? 1 : 0
    }
    return EVP_PKEY_eq(a.publicKey, b.publicKey) == 1 ? 1 : 0
}

private func keyGetParams(_ keydata: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 {
    guard let key = keyBox(keydata)?.key, let params else { return 0 }
    return EVP_PKEY_get_params(key.publicKey, params)
}

private func rsaGettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    KeyManagementTables.shared.rsaDefault.flatMap { EVP_KEYMGMT_gettable_params($0) }
}

private func ecGettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    KeyManagementTables.shared.ecDefault.flatMap { EVP_KEYMGMT_gettable_params($0) }
}

private func rsaQueryOperationName(_ operation: Int32) -> UnsafePointer<CChar>? {
    operation == OSSL_OP_SIGNATURE ? StaticCString.get("RSA") : nil
}

private func ecQueryOperationName(_ operation: Int32) -> UnsafePointer<CChar>? {
    operation == OSSL_OP_SIGNATURE ? StaticCString.get("ECDSA") : nil
}

private func rsaKeyTypes(_ selection: Int32) -> UnsafePointer<OSSL_PARAM>? {
    selection & selectPublicKey != 0 ? KeyManagement.rsaPublicTypes : nil
}

private func ecKeyTypes(_ selection: Int32) -> UnsafePointer<OSSL_PARAM>? {
    selection & selectPublicKey != 0 ? KeyManagement.ecPublicTypes : nil
}

private func keyImport(_ keydata: UnsafeMutableRawPointer?, _ selection: Int32, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    guard let box = keyBox(keydata), box.key == nil, let params,
          let publicKey = PublicKeyBuilder.fromImport(type: box.algorithm, params: params) else { return 0 }
    box.key = KeyObject(algorithm: box.algorithm, publicKey: publicKey, tokenKey: nil)
    return 1
}

/// Exports only public parts, and refuses any request that includes the private key: OpenSSL
/// would otherwise build a public-only copy elsewhere and try to sign with it.
private func keyExport(_ keydata: UnsafeMutableRawPointer?, _ selection: Int32,
                       _ callback: ParamCallback?, _ argument: UnsafeMutableRawPointer?) -> Int32 {
    guard let key = keyBox(keydata)?.key, let callback else { return 0 }
    if selection & selectPrivateKey != 0 && key.isPrivate { return 0 }
    var params: UnsafeMutablePointer<OSSL_PARAM>?
    guard EVP_PKEY_todata(key.publicKey, publicKeySelection, &params) == 1, let params else { return 0 }
    defer { OSSL_PARAM_free(params) }
    return callback(params, argument)
}

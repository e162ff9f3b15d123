internal import COpenSSL
import Foundation
import PKCS11

/// One `OSSL_STORE_open("pkcs11:…")`: the parsed URI and, once loaded, the key object that the
/// store's reference points to. The object stays alive until the store is closed.
final class StoreContext: @unchecked Sendable {
    // A store context is used by one thread at a time, as OSSL_STORE requires.
    let uri: PKCS11URI
    var loaded: KeyObject?
    var finished = false

    init(uri: PKCS11URI) { self.uri = uri }
}

private func storeContext(_ pointer: UnsafeMutableRawPointer?) -> StoreContext? {
    guard let pointer else { return nil }
    return Unmanaged<StoreContext>.fromOpaque(pointer).takeUnretainedValue()
}

enum StoreLoader {
    nonisolated(unsafe) static let dispatchTable: UnsafePointer<OSSL_DISPATCH> = DispatchTable.make([
        (OSSL_FUNC_STORE_OPEN, DispatchTable.function(storeOpen as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?) -> UnsafeMutableRawPointer?)),
        (OSSL_FUNC_STORE_SET_CTX_PARAMS, DispatchTable.function(storeSetParams as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, DispatchTable.function(storeSettableParams as @convention(c) (UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>?)),
        (OSSL_FUNC_STORE_LOAD, DispatchTable.function(storeLoad as @convention(c) (UnsafeMutableRawPointer?, ParamCallback?, UnsafeMutableRawPointer?, PassphraseCallback?, UnsafeMutableRawPointer?) -> Int32)),
        (OSSL_FUNC_STORE_EOF, DispatchTable.function(storeEOF as @convention(c) (UnsafeMutableRawPointer?) -> Int32)),
        (OSSL_FUNC_STORE_CLOSE, DispatchTable.function(storeClose as @convention(c) (UnsafeMutableRawPointer?) -> Int32)),
    ])

    nonisolated(unsafe) static let settableParams: UnsafePointer<OSSL_PARAM> = ParamList.make([
        OSSL_PARAM_construct_int(StaticCString.get(OSSL_STORE_PARAM_EXPECT), nil),
    ])
}

private func storeOpen(_ provider: UnsafeMutableRawPointer?, _ uri: UnsafePointer<CChar>?) -> UnsafeMutableRawPointer? {
    guard let uri else { return nil }
    do {
        let parsed = try PKCS11URI(parsing: String(cString: uri))
        return Unmanaged.passRetained(StoreContext(uri: parsed)).toOpaque()
    } catch {
        raiseProviderError(error.description)
        return nil
    }
}

private func storeSetParams(_ context: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    storeContext(context) == nil ? 0 : 1
}

private func storeSettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    StoreLoader.settableParams
}

/// Asks OpenSSL's passphrase callback (the application's UI) for the PIN, as a last resort.
private func pinFromCallback(_ callback: PassphraseCallback?, _ argument: UnsafeMutableRawPointer?) -> PIN? {
    guard let callback else { return nil }
    var buffer = [CChar](repeating: 0, count: 256)
    var length = 0
    guard callback(&buffer, buffer.count, &length, nil, argument) == 1, length > 0, length <= buffer.count else { return nil }
    var copy = buffer.withUnsafeBytes { Array($0.prefix(length)) }
    let pin = PIN(bytes: copy)
    copy.withUnsafeMutableBytes { explicit_bzero($0.baseAddress!, $0.count) }
    buffer.withUnsafeMutableBytes { explicit_bzero($0.baseAddress!, $0.count) }
    return pin
}

private func storeLoad(_ context: UnsafeMutableRawPointer?, _ objectCallback: ParamCallback?, _ objectArgument: UnsafeMutableRawPointer?,
                       _ passphraseCallback: PassphraseCallback?, _ passphraseArgument: UnsafeMutableRawPointer?) -> Int32 {
    guard let store = storeContext(context), let objectCallback else { return 0 }
    store.finished = true
    let key: KeyObject
    do {
        let tokenKey = try PrivateKey.resolve(store.uri, allowPrompt: false,
                                              pinFallback: { ProviderSettings.configuredPIN() ?? pinFromCallback(passphraseCallback, passphraseArgument) })
        key = try KeyObject(tokenKey: tokenKey)
    } catch let error as PKCS11Error {
        raiseProviderError(error.description)
        return 0
    } catch {
        raiseProviderError("\(error)")
        return 0
    }
    store.loaded = key
    var objectType = Int32(OSSL_OBJECT_PKEY)
    var reference = Unmanaged.passUnretained(key).toOpaque()
    let dataType = StaticCString.get(key.algorithm.rawValue)
    return withUnsafeMutablePointer(to: &objectType) { typePointer in
        withUnsafeMutableBytes(of: &reference) { referenceBytes in
            var params = [
                OSSL_PARAM_construct_int(StaticCString.get(OSSL_OBJECT_PARAM_TYPE), typePointer),
                OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_OBJECT_PARAM_DATA_TYPE), UnsafeMutablePointer(mutating: dataType), 0),
                OSSL_PARAM_construct_octet_string(StaticCString.get(OSSL_OBJECT_PARAM_REFERENCE), referenceBytes.baseAddress, referenceBytes.count),
                OSSL_PARAM_construct_end(),
            ]
            return objectCallback(&params, objectArgument)
        }
    }
}

private func storeEOF(_ context: UnsafeMutableRawPointer?) -> Int32 {
    guard let store = storeContext(context) else { return 1 }
    return store.finished ? 1 : 0
}

private func storeClose(_ context: UnsafeMutableRawPointer?) -> Int32 {
    guard let context else { return 0 }
    Unmanaged<StoreContext>.fromOpaque(context).release()
    return 1
}

internal import COpenSSL
import Foundation
import PKCS11

/// Settings from the provider's section of an OpenSSL configuration file. The names follow
/// pkcs11-provider's, so existing configurations switch over unchanged:
///
/// ```
/// [keybridge_sect]
/// module = /path/to/libkeybridge-provider.so
/// pkcs11-module-path = /usr/lib/softhsm/libsofthsm2.so
/// pkcs11-module-token-pin = file:/etc/keybridge/user.pin
/// pkcs11-module-login-behavior = auto
/// pkcs11-module-cache-keys = true
/// activate = 1
/// ```
enum ProviderSettings {
    static let modulePathKey = "pkcs11-module-path"
    static let tokenPINKey = "pkcs11-module-token-pin"
    static let loginBehaviorKey = "pkcs11-module-login-behavior"
    static let cacheKeysKey = "pkcs11-module-cache-keys"

    private static let lock = NSLock()
    /// The configured PIN source; the PIN itself is read only when a login needs it.
    nonisolated(unsafe) private static var tokenPINSource: String?

    typealias CoreGetParams = @convention(c) (OpaquePointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32

    /// Reads the settings through the core's `get_params`, and applies them.
    static func load(handle: OpaquePointer?, core: UnsafePointer<OSSL_DISPATCH>?) {
        guard var entry = core else { return }
        var getParams: CoreGetParams?
        while entry.pointee.function_id != 0 {
            if entry.pointee.function_id == OSSL_FUNC_CORE_GET_PARAMS, let function = entry.pointee.function {
                getParams = unsafeBitCast(function, to: CoreGetParams.self)
            }
            entry += 1
        }
        guard let getParams else { return }
        let keys = [modulePathKey, tokenPINKey, loginBehaviorKey, cacheKeysKey]
        var values = [UnsafeMutablePointer<CChar>?](repeating: nil, count: keys.count)
        var params = keys.indices.map { index in
            OSSL_PARAM_construct_utf8_ptr(StaticCString.get(keys[index]), nil, 0)
        } + [OSSL_PARAM_construct_end()]
        values.withUnsafeMutableBufferPointer { storage in
            for index in keys.indices {
                params[index].data = UnsafeMutableRawPointer(storage.baseAddress! + index)
                params[index].data_size = MemoryLayout<UnsafeMutablePointer<CChar>?>.size
            }
            _ = getParams(handle, &params)
        }
        let text = values.map { $0.map { String(cString: $0) } }
        apply(modulePath: text[0], tokenPIN: text[1], loginBehavior: text[2], cacheKeys: text[3])
    }

    static func apply(modulePath: String?, tokenPIN: String?, loginBehavior: String?, cacheKeys: String?) {
        if let modulePath, !modulePath.isEmpty { PKCS11Module.configuredModulePath = modulePath }
        if let tokenPIN, !tokenPIN.isEmpty {
            lock.withLock { tokenPINSource = tokenPIN }
            if !(tokenPIN.hasPrefix("file:") || tokenPIN.hasPrefix("/")) {
                KeyBridgeLog.warning("\(tokenPINKey) holds the PIN itself, readable by anyone who can read the OpenSSL configuration; write file:/path/to/pin instead")
            }
        }
        if let loginBehavior {
            if let behavior = PrivateKey.LoginBehavior(rawValue: loginBehavior.lowercased()) {
                PrivateKey.loginBehavior = behavior
            } else {
                KeyBridgeLog.warning("\(loginBehaviorKey) = '\(loginBehavior)' is not auto, always or never; using auto")
            }
        }
        if let cacheKeys {
            PrivateKey.cachesKeys = !["false", "no", "0", "off"].contains(cacheKeys.lowercased())
        }
    }

    /// The configured PIN: a `file:` source is read, anything else is the PIN itself.
    static func configuredPIN() -> PIN? {
        guard let source = lock.withLock({ tokenPINSource }) else { return nil }
        if source.hasPrefix("file:") || source.hasPrefix("/") {
            do {
                return try PINResolver.readPINSource(source)
            } catch {
                raiseProviderError("\(tokenPINKey): \(error.reason)")
                return nil
            }
        }
        return PIN(source)
    }
}

import KeyBridgeProvider

/// The entry point OpenSSL looks up when it loads this library as a provider module, for
/// example `openssl pkeyutl -provider-path .build/debug -provider libkeybridge-provider`.
@_cdecl("OSSL_provider_init")
public func providerModuleInit(_ handle: OpaquePointer?, _ core: UnsafeRawPointer?,
                               _ out: UnsafeMutableRawPointer?, _ context: UnsafeMutableRawPointer?) -> Int32 {
    KeyBridgeProvider.initializeModule(handle: handle, core: core, out: out, context: context)
}

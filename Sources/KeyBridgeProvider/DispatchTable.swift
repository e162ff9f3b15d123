internal import COpenSSL

/// Dispatch tables, algorithm tables and parameter lists are built once and live for the
/// whole process, as OpenSSL keeps pointers to them.
enum DispatchTable {
    typealias AnyFunction = @convention(c) () -> Void

    static func function<F>(_ function: F) -> AnyFunction {
        unsafeBitCast(function, to: AnyFunction.self)
    }

    static func make(_ entries: [(Int32, AnyFunction)]) -> UnsafePointer<OSSL_DISPATCH> {
        let table = UnsafeMutablePointer<OSSL_DISPATCH>.allocate(capacity: entries.count + 1)
        for (index, entry) in entries.enumerated() {
            table[index] = OSSL_DISPATCH(function_id: entry.0, function: entry.1)
        }
        table[entries.count] = OSSL_DISPATCH(function_id: 0, function: nil)
        return UnsafePointer(table)
    }
}

// Spelled out because Swift imports OpenSSL's function typedefs as blocks, not C pointers.
typealias ParamCallback = @convention(c) (UnsafePointer<OSSL_PARAM>?, UnsafeMutableRawPointer?) -> Int32
typealias PassphraseCallback = @convention(c) (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>?,
                                               UnsafePointer<OSSL_PARAM>?, UnsafeMutableRawPointer?) -> Int32

enum AlgorithmTable {
    static func make(_ entries: [(names: String, properties: String, dispatch: UnsafePointer<OSSL_DISPATCH>, description: String)]) -> UnsafePointer<OSSL_ALGORITHM> {
        let table = UnsafeMutablePointer<OSSL_ALGORITHM>.allocate(capacity: entries.count + 1)
        for (index, entry) in entries.enumerated() {
            table[index] = OSSL_ALGORITHM(algorithm_names: StaticCString.get(entry.names),
                                          property_definition: StaticCString.get(entry.properties),
                                          implementation: entry.dispatch,
                                          algorithm_description: StaticCString.get(entry.description))
        }
        table[entries.count] = OSSL_ALGORITHM(algorithm_names: nil, property_definition: nil, implementation: nil, algorithm_description: nil)
        return UnsafePointer(table)
    }
}

enum ParamList {
    static func make(_ params: [OSSL_PARAM]) -> UnsafePointer<OSSL_PARAM> {
        let list = UnsafeMutablePointer<OSSL_PARAM>.allocate(capacity: params.count + 1)
        for (index, param) in params.enumerated() { list[index] = param }
        list[params.count] = OSSL_PARAM_construct_end()
        return UnsafePointer(list)
    }
}

internal import COpenSSL
import Foundation
import PKCS11

/// One signature operation: which key, which padding and digest, and for digest-sign the
/// running hash. Signing goes to the token; verification to OpenSSL's default provider.
final class SignatureContext: @unchecked Sendable {
    // OpenSSL uses one operation context from one thread at a time.
    var key: KeyObject?
    var padding: Int32 = RSA_PKCS1_PADDING
    var digest: HashAlgorithm?
    var mgf1Digest: HashAlgorithm?
    var saltLength: Int32 = RSA_PSS_SALTLEN_AUTO
    var digestContext: OpaquePointer?
    /// The unhashed input of a digest-sign, kept (up to a limit) for tokens that hash themselves.
    var message: [UInt8]?
    static let messageLimit = 1 << 20

    init() {}

    deinit { EVP_MD_CTX_free(digestContext) }

    func copy() -> SignatureContext? {
        let twin = SignatureContext()
        twin.key = key
        twin.padding = padding
        twin.digest = digest
        twin.mgf1Digest = mgf1Digest
        twin.saltLength = saltLength
        twin.message = message
        if let digestContext {
            guard let copied = EVP_MD_CTX_new() else { return nil }
            guard EVP_MD_CTX_copy_ex(copied, digestContext) == 1 else {
                EVP_MD_CTX_free(copied)
                return nil
            }
            twin.digestContext = copied
        }
        return twin
    }

    /// The salt length for a PSS signature with `hash` on `key`, resolving OpenSSL's special values.
    func pssSaltLength(for key: KeyObject, hash: HashAlgorithm) throws(OpenSSLError) -> Int {
        let maximumSalt = (key.bits - 1 + 7) / 8 - hash.length - 2
        let salt: Int
        switch saltLength {
        case RSA_PSS_SALTLEN_DIGEST: salt = hash.length
        case RSA_PSS_SALTLEN_AUTO, RSA_PSS_SALTLEN_MAX: salt = maximumSalt
        default: salt = Int(saltLength)
        }
        guard salt >= 0, salt <= maximumSalt else {
            throw OpenSSLError(function: "RSA-PSS", reason: "salt length \(salt) does not fit a \(key.bits)-bit key")
        }
        return salt
    }

    /// Chooses how to sign, from the mechanisms this key may use on its token.
    func plan(for key: KeyObject, tokenKey: PrivateKey, digestLength: Int, messageAvailable: Bool) throws(OpenSSLError) -> SigningPlan {
        let usable: Set<UInt>
        do {
            usable = try tokenKey.usableMechanisms()
        } catch {
            throw OpenSSLError(error)
        }
        switch key.algorithm {
        case .ed25519:
            return try MechanismChoice.eddsa(usable: usable)
        case .ec:
            return try MechanismChoice.ecdsa(hash: digest, usable: usable, messageAvailable: messageAvailable)
        case .rsa:
            switch padding {
            case RSA_PKCS1_PADDING:
                return try MechanismChoice.rsa(padding: .pkcs1, hash: digest, usable: usable, messageAvailable: messageAvailable)
            case RSA_PKCS1_PSS_PADDING:
                guard let hash = digest ?? HashAlgorithm.allCases.first(where: { $0.length == digestLength }) else {
                    throw OpenSSLError(function: "RSA-PSS", reason: "no digest is set for the PSS signature")
                }
                let salt = try pssSaltLength(for: key, hash: hash)
                return try MechanismChoice.rsa(padding: .pss(mgf1: mgf1Digest ?? hash, saltLength: salt), hash: hash,
                                               usable: usable, messageAvailable: messageAvailable)
            default:
                throw OpenSSLError(function: "RSA", reason: "padding mode \(padding) is not supported by a token key; use PKCS#1 v1.5 or PSS")
            }
        }
    }

    /// Signs on the token and returns what OpenSSL expects: a PKCS#1 or PSS block, or a DER
    /// ECDSA signature. `message` is the unhashed input when OpenSSL gave it (digest-sign).
    func signOnToken(digestValue input: [UInt8], message: [UInt8]?) throws(OpenSSLError) -> [UInt8] {
        guard let key, let tokenKey = key.tokenKey else {
            throw OpenSSLError(function: "sign", reason: "this key has no private half on a token")
        }
        if let digest, input.count != digest.length {
            throw OpenSSLError(function: "sign", reason: "input of \(input.count) bytes is not a \(digest) digest")
        }
        let plan = try plan(for: key, tokenKey: tokenKey, digestLength: input.count, messageAvailable: message != nil)
        let payload: [UInt8]
        switch plan.input {
        case .message:
            payload = message ?? []
        case .digest:
            if case .rsaPKCS1 = plan.mechanism, let digest { payload = digest.digestInfoPrefix + input } else { payload = input }
        case .encodedBlock:
            let modulusBytes = (key.bits + 7) / 8
            if padding == RSA_PKCS1_PSS_PADDING {
                let hash = digest ?? HashAlgorithm.allCases.first(where: { $0.length == input.count }) ?? .sha256
                payload = try RSAEncoding.pss(digest: input, hash: hash, mgf1: mgf1Digest ?? hash,
                                              saltLength: try pssSaltLength(for: key, hash: hash), modulusBits: key.bits)
            } else {
                payload = try RSAEncoding.pkcs1(digestInfo: (digest?.digestInfoPrefix ?? []) + input, modulusBytes: modulusBytes)
            }
        }
        let choice = "\(plan.mechanism) (\(plan.reason))"
        ProviderDiagnostics.recordMechanism(choice)
        KeyBridgeLog.debug("signing with \(choice)")
        let raw: [UInt8]
        do {
            raw = try tokenKey.sign(payload, mechanism: plan.mechanism)
        } catch {
            throw OpenSSLError(error)
        }
        if key.algorithm == .ec { return try derECDSASignature(raw) }
        return raw
    }

    /// Ed25519 signs the message itself in one call; the token's output is already the
    /// 64-byte signature TLS and X.509 use.
    func signEdDSA(_ message: [UInt8]) throws(OpenSSLError) -> [UInt8] {
        guard let key, let tokenKey = key.tokenKey else {
            throw OpenSSLError(function: "sign", reason: "this key has no private half on a token")
        }
        let plan = try plan(for: key, tokenKey: tokenKey, digestLength: 0, messageAvailable: true)
        ProviderDiagnostics.recordMechanism("\(plan.mechanism) (\(plan.reason))")
        do {
            return try tokenKey.sign(message, mechanism: plan.mechanism)
        } catch {
            throw OpenSSLError(error)
        }
    }

    /// Verifies an Ed25519 signature with OpenSSL's default provider.
    func verifyEdDSA(signature: [UInt8], message: [UInt8]) -> Bool {
        guard let key, let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        return EVP_DigestVerifyInit_ex(context, nil, nil, nil, PublicKeyBuilder.defaultProperties, key.publicKey, nil) == 1
            && EVP_DigestVerify(context, signature, signature.count, message, message.count) == 1
    }

    /// Verifies with OpenSSL's default provider on the public key.
    func verify(signature: [UInt8], digestValue: [UInt8]) -> Bool {
        guard let key, let context = EVP_PKEY_CTX_new_from_pkey(nil, key.publicKey, PublicKeyBuilder.defaultProperties) else { return false }
        defer { EVP_PKEY_CTX_free(context) }
        guard EVP_PKEY_verify_init(context) == 1 else { return false }
        if key.algorithm == .rsa {
            guard EVP_PKEY_CTX_set_rsa_padding(context, padding) == 1 else { return false }
            if padding == RSA_PKCS1_PSS_PADDING {
                guard EVP_PKEY_CTX_set_rsa_pss_saltlen(context, saltLength) == 1 else { return false }
            }
        }
        if let digest {
            guard EVP_PKEY_CTX_set_signature_md(context, EVP_get_digestbyname(digest.rawValue)) == 1 else { return false }
            if let mgf1Digest, padding == RSA_PKCS1_PSS_PADDING {
                guard EVP_PKEY_CTX_set_rsa_mgf1_md(context, EVP_get_digestbyname(mgf1Digest.rawValue)) == 1 else { return false }
            }
        }
        return EVP_PKEY_verify(context, signature, signature.count, digestValue, digestValue.count) == 1
    }
}

/// Tokens return ECDSA signatures as r||s; TLS and X.509 want DER.
func derECDSASignature(_ raw: [UInt8]) throws(OpenSSLError) -> [UInt8] {
    guard raw.count % 2 == 0, !raw.isEmpty, let signature = ECDSA_SIG_new() else {
        throw OpenSSLError(function: "ECDSA", reason: "the token returned a malformed ECDSA signature")
    }
    defer { ECDSA_SIG_free(signature) }
    let half = raw.count / 2
    let r = BN_bin2bn(raw, Int32(half), nil)
    let s = Array(raw[half...]).withUnsafeBufferPointer { BN_bin2bn($0.baseAddress, Int32(half), nil) }
    guard ECDSA_SIG_set0(signature, r, s) == 1 else {
        BN_free(r)
        BN_free(s)
        throw OpenSSLError.drain(function: "ECDSA_SIG_set0", reason: "cannot build the DER signature")
    }
    var out: UnsafeMutablePointer<UInt8>?
    let length = i2d_ECDSA_SIG(signature, &out)
    guard length > 0, let out else { throw OpenSSLError.drain(function: "i2d_ECDSA_SIG", reason: "cannot encode the signature") }
    defer { CRYPTO_free(out, nil, 0) }
    return Array(UnsafeBufferPointer(start: out, count: Int(length)))
}

func signatureContext(_ pointer: UnsafeMutableRawPointer?) -> SignatureContext? {
    guard let pointer else { return nil }
    return Unmanaged<SignatureContext>.fromOpaque(pointer).takeUnretainedValue()
}

enum SignatureOperations {
    nonisolated(unsafe) static let dispatchTable: UnsafePointer<OSSL_DISPATCH> = DispatchTable.make([
        (OSSL_FUNC_SIGNATURE_NEWCTX, DispatchTable.function(signatureNew as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?) -> UnsafeMutableRawPointer?)),
        (OSSL_FUNC_SIGNATURE_FREECTX, DispatchTable.function(signatureFree as @convention(c) (UnsafeMutableRawPointer?) -> Void)),
        (OSSL_FUNC_SIGNATURE_DUPCTX, DispatchTable.function(signatureDuplicate as @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer?)),
        (OSSL_FUNC_SIGNATURE_SIGN_INIT, DispatchTable.function(signatureInit as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_SIGN, DispatchTable.function(signatureSign as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int, UnsafePointer<UInt8>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_VERIFY_INIT, DispatchTable.function(signatureInit as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_VERIFY, DispatchTable.function(signatureVerify as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int, UnsafePointer<UInt8>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, DispatchTable.function(digestInit as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, DispatchTable.function(digestUpdate as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, DispatchTable.function(digestSignFinal as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, DispatchTable.function(digestInit as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, DispatchTable.function(digestUpdate as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, DispatchTable.function(digestVerifyFinal as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, DispatchTable.function(signatureSetParams as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, DispatchTable.function(signatureSettableParams as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>?)),
        (OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, DispatchTable.function(signatureGetParams as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, DispatchTable.function(signatureGettableParams as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>?)),
    ])

    /// Ed25519 has no separate digest, so OpenSSL only calls the one-shot functions.
    nonisolated(unsafe) static let ed25519DispatchTable: UnsafePointer<OSSL_DISPATCH> = DispatchTable.make([
        (OSSL_FUNC_SIGNATURE_NEWCTX, DispatchTable.function(signatureNew as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?) -> UnsafeMutableRawPointer?)),
        (OSSL_FUNC_SIGNATURE_FREECTX, DispatchTable.function(signatureFree as @convention(c) (UnsafeMutableRawPointer?) -> Void)),
        (OSSL_FUNC_SIGNATURE_DUPCTX, DispatchTable.function(signatureDuplicate as @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer?)),
        (OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, DispatchTable.function(edDSAInit as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_SIGN, DispatchTable.function(edDSASign as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int, UnsafePointer<UInt8>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, DispatchTable.function(edDSAInit as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, DispatchTable.function(edDSAVerify as @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int, UnsafePointer<UInt8>?, Int) -> Int32)),
        (OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, DispatchTable.function(edDSAGetParams as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32)),
        (OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, DispatchTable.function(signatureGettableParams as @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>?)),
    ])

    nonisolated(unsafe) static let settableParams: UnsafePointer<OSSL_PARAM> = ParamList.make([
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_DIGEST), nil, 0),
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_PROPERTIES), nil, 0),
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_PAD_MODE), nil, 0),
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_MGF1_DIGEST), nil, 0),
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_PSS_SALTLEN), nil, 0),
    ])

    nonisolated(unsafe) static let gettableParams: UnsafePointer<OSSL_PARAM> = ParamList.make([
        OSSL_PARAM_construct_octet_string(StaticCString.get(OSSL_SIGNATURE_PARAM_ALGORITHM_ID), nil, 0),
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_DIGEST), nil, 0),
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_PAD_MODE), nil, 0),
        OSSL_PARAM_construct_utf8_string(StaticCString.get(OSSL_SIGNATURE_PARAM_PSS_SALTLEN), nil, 0),
    ])
}

private func signatureNew(_ provider: UnsafeMutableRawPointer?, _ properties: UnsafePointer<CChar>?) -> UnsafeMutableRawPointer? {
    Unmanaged.passRetained(SignatureContext()).toOpaque()
}

private func signatureFree(_ context: UnsafeMutableRawPointer?) {
    guard let context else { return }
    Unmanaged<SignatureContext>.fromOpaque(context).release()
}

private func signatureDuplicate(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let twin = signatureContext(context)?.copy() else { return nil }
    return Unmanaged.passRetained(twin).toOpaque()
}

private func signatureInit(_ context: UnsafeMutableRawPointer?, _ keydata: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    guard let operation = signatureContext(context), let key = keyBox(keydata)?.key else { return 0 }
    operation.key = key
    operation.padding = RSA_PKCS1_PADDING
    operation.digest = nil
    operation.mgf1Digest = nil
    operation.saltLength = RSA_PSS_SALTLEN_AUTO
    operation.message = nil
    return applySignatureParams(operation, params)
}

private func signatureSign(_ context: UnsafeMutableRawPointer?, _ signature: UnsafeMutablePointer<UInt8>?,
                           _ signatureLength: UnsafeMutablePointer<Int>?, _ signatureSize: Int,
                           _ input: UnsafePointer<UInt8>?, _ inputLength: Int) -> Int32 {
    guard let operation = signatureContext(context), let key = operation.key, let signatureLength else { return 0 }
    guard let signature else {
        signatureLength.pointee = key.maxSignatureSize
        return 1
    }
    let data = input.map { Array(UnsafeBufferPointer(start: $0, count: inputLength)) } ?? []
    return writeSignature(operation, data, nil, signature, signatureLength, signatureSize)
}

private func writeSignature(_ operation: SignatureContext, _ digestValue: [UInt8], _ message: [UInt8]?,
                            _ output: UnsafeMutablePointer<UInt8>, _ outputLength: UnsafeMutablePointer<Int>, _ outputSize: Int) -> Int32 {
    writeSignature(output, outputLength, outputSize) { () throws(OpenSSLError) in
        try operation.signOnToken(digestValue: digestValue, message: message)
    }
}

/// Copies a token signature into OpenSSL's buffer, or reports why there is none.
private func writeSignature(_ output: UnsafeMutablePointer<UInt8>, _ outputLength: UnsafeMutablePointer<Int>, _ outputSize: Int,
                            _ produce: () throws(OpenSSLError) -> [UInt8]) -> Int32 {
    do {
        let produced = try produce()
        guard produced.count <= outputSize else {
            raiseProviderError("signature buffer of \(outputSize) bytes is too small for \(produced.count)")
            return 0
        }
        produced.withUnsafeBufferPointer { output.update(from: $0.baseAddress!, count: produced.count) }
        outputLength.pointee = produced.count
        return 1
    } catch {
        raiseProviderError(error.description)
        return 0
    }
}

private func signatureVerify(_ context: UnsafeMutableRawPointer?, _ signature: UnsafePointer<UInt8>?, _ signatureLength: Int,
                             _ input: UnsafePointer<UInt8>?, _ inputLength: Int) -> Int32 {
    guard let operation = signatureContext(context), let signature, let input else { return 0 }
    return operation.verify(signature: Array(UnsafeBufferPointer(start: signature, count: signatureLength)),
                            digestValue: Array(UnsafeBufferPointer(start: input, count: inputLength))) ? 1 : 0
}

private func digestInit(_ context: UnsafeMutableRawPointer?, _ digestName: UnsafePointer<CChar>?,
                        _ keydata: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    guard let operation = signatureContext(context), signatureInit(context, keydata, params) == 1 else { return 0 }
    let name = digestName.map { String(cString: $0) } ?? "SHA256"
    guard let hash = HashAlgorithm(openSSLName: name) else {
        raiseProviderError("digest \(name) is not supported with token keys")
        return 0
    }
    operation.digest = hash
    operation.message = []
    EVP_MD_CTX_free(operation.digestContext)
    operation.digestContext = EVP_MD_CTX_new()
    guard let digestContext = operation.digestContext,
          let md = EVP_MD_fetch(nil, hash.rawValue, PublicKeyBuilder.defaultProperties) else { return 0 }
    defer { EVP_MD_free(md) }
    return EVP_DigestInit_ex2(digestContext, md, nil)
}

private func digestUpdate(_ context: UnsafeMutableRawPointer?, _ data: UnsafePointer<UInt8>?, _ length: Int) -> Int32 {
    guard let operation = signatureContext(context), let digestContext = operation.digestContext else { return 0 }
    if let kept = operation.message?.count, let data {
        // Past the limit, the software digest alone is used.
        if kept + length <= SignatureContext.messageLimit {
            operation.message?.append(contentsOf: UnsafeBufferPointer(start: data, count: length))
        } else {
            operation.message = nil
        }
    }
    return EVP_DigestUpdate(digestContext, data, length)
}

private func finishDigest(_ operation: SignatureContext) -> [UInt8]? {
    guard let digestContext = operation.digestContext else { return nil }
    var buffer = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    guard EVP_DigestFinal_ex(digestContext, &buffer, &length) == 1 else { return nil }
    return Array(buffer.prefix(Int(length)))
}

private func digestSignFinal(_ context: UnsafeMutableRawPointer?, _ signature: UnsafeMutablePointer<UInt8>?,
                             _ signatureLength: UnsafeMutablePointer<Int>?, _ signatureSize: Int) -> Int32 {
    guard let operation = signatureContext(context), let key = operation.key, let signatureLength else { return 0 }
    guard let signature else {
        signatureLength.pointee = key.maxSignatureSize
        return 1
    }
    guard let digestValue = finishDigest(operation) else { return 0 }
    return writeSignature(operation, digestValue, operation.message, signature, signatureLength, signatureSize)
}

private func digestVerifyFinal(_ context: UnsafeMutableRawPointer?, _ signature: UnsafePointer<UInt8>?, _ signatureLength: Int) -> Int32 {
    guard let operation = signatureContext(context), let signature, let digestValue = finishDigest(operation) else { return 0 }
    return operation.verify(signature: Array(UnsafeBufferPointer(start: signature, count: signatureLength)), digestValue: digestValue) ? 1 : 0
}

private func signatureSetParams(_ context: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    guard let operation = signatureContext(context) else { return 0 }
    return applySignatureParams(operation, params)
}

private func signatureSettableParams(_ context: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    SignatureOperations.settableParams
}

private func signatureGettableParams(_ context: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    SignatureOperations.gettableParams
}

private func utf8Value(_ param: UnsafePointer<OSSL_PARAM>) -> String? {
    var value: UnsafePointer<CChar>?
    guard OSSL_PARAM_get_utf8_string_ptr(param, &value) == 1, let value else { return nil }
    return String(cString: value)
}

/// Accepts both the integer and the string forms OpenSSL uses for padding and salt length.
private func applySignatureParams(_ operation: SignatureContext, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    guard let params else { return 1 }
    if let param = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST) {
        guard let name = utf8Value(param), let hash = HashAlgorithm(openSSLName: name) else {
            raiseProviderError("unsupported digest for a token signature; use SHA1, SHA224, SHA256, SHA384 or SHA512")
            return 0
        }
        if operation.digestContext != nil, let current = operation.digest, current != hash {
            raiseProviderError("the digest is fixed when the signature starts (\(current)); start a new signature for \(hash)")
            return 0
        }
        operation.digest = hash
    }
    if let param = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE) {
        var mode: Int32 = 0
        if param.pointee.data_type == UInt32(OSSL_PARAM_UTF8_STRING) {
            switch utf8Value(param) {
            case "pkcs1": mode = RSA_PKCS1_PADDING
            case "pss": mode = RSA_PKCS1_PSS_PADDING
            default:
                raiseProviderError("only pkcs1 and pss padding are possible with a token RSA key")
                return 0
            }
        } else if OSSL_PARAM_get_int(param, &mode) != 1 {
            return 0
        }
        guard mode == RSA_PKCS1_PADDING || mode == RSA_PKCS1_PSS_PADDING else {
            raiseProviderError("only pkcs1 and pss padding are possible with a token RSA key")
            return 0
        }
        operation.padding = mode
    }
    if let param = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST) {
        guard let name = utf8Value(param), let hash = HashAlgorithm(openSSLName: name) else {
            raiseProviderError("unsupported MGF1 digest; use SHA1, SHA224, SHA256, SHA384 or SHA512")
            return 0
        }
        operation.mgf1Digest = hash
    }
    if let param = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN) {
        var length: Int32 = 0
        if param.pointee.data_type == UInt32(OSSL_PARAM_UTF8_STRING) {
            switch utf8Value(param) {
            case "digest": length = RSA_PSS_SALTLEN_DIGEST
            case "max": length = RSA_PSS_SALTLEN_MAX
            case "auto": length = RSA_PSS_SALTLEN_AUTO
            case let text?:
                guard let number = Int32(text) else {
                    raiseProviderError("PSS salt length '\(text)' is not digest, max, auto or a number")
                    return 0
                }
                length = number
            case nil: return 0
            }
        } else if OSSL_PARAM_get_int(param, &length) != 1 {
            return 0
        }
        operation.saltLength = length
    }
    return 1
}

private func signatureGetParams(_ context: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 {
    guard let operation = signatureContext(context), let params else { return 0 }
    if let param = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST), let digest = operation.digest {
        guard OSSL_PARAM_set_utf8_string(param, digest.rawValue) == 1 else { return 0 }
    }
    if let param = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID) {
        guard let identifier = algorithmIdentifier(operation) else { return 0 }
        guard identifier.withUnsafeBytes({ OSSL_PARAM_set_octet_string(param, $0.baseAddress, $0.count) }) == 1 else { return 0 }
    }
    // Answered in the type asked for: OpenSSL's ctrl translation reads these back as strings.
    if let param = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE) {
        let name = operation.padding == RSA_PKCS1_PSS_PADDING ? "pss" : "pkcs1"
        let set = param.pointee.data_type == UInt32(OSSL_PARAM_UTF8_STRING)
            ? OSSL_PARAM_set_utf8_string(param, name) : OSSL_PARAM_set_int(param, operation.padding)
        guard set == 1 else { return 0 }
    }
    if let param = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN) {
        let named = [RSA_PSS_SALTLEN_DIGEST: "digest", RSA_PSS_SALTLEN_MAX: "max", RSA_PSS_SALTLEN_AUTO: "auto"]
        let set = param.pointee.data_type == UInt32(OSSL_PARAM_UTF8_STRING)
            ? OSSL_PARAM_set_utf8_string(param, named[operation.saltLength] ?? String(operation.saltLength))
            : OSSL_PARAM_set_int(param, operation.saltLength)
        guard set == 1 else { return 0 }
    }
    return 1
}

/// The X.509 AlgorithmIdentifier for this signature, taken from OpenSSL's default provider for
/// the same public key and settings, so CSRs and certificates signed on the token are labelled
/// exactly as OpenSSL would label them.
private func algorithmIdentifier(_ operation: SignatureContext) -> [UInt8]? {
    guard let key = operation.key,
          let context = EVP_PKEY_CTX_new_from_pkey(nil, key.publicKey, PublicKeyBuilder.defaultProperties) else { return nil }
    defer { EVP_PKEY_CTX_free(context) }
    guard EVP_PKEY_verify_init(context) == 1 else { return nil }
    if key.algorithm == .rsa {
        guard EVP_PKEY_CTX_set_rsa_padding(context, operation.padding) == 1 else { return nil }
        if operation.padding == RSA_PKCS1_PSS_PADDING {
            guard EVP_PKEY_CTX_set_rsa_pss_saltlen(context, operation.saltLength) == 1 else { return nil }
        }
    }
    if let digest = operation.digest {
        guard EVP_PKEY_CTX_set_signature_md(context, EVP_get_digestbyname(digest.rawValue)) == 1 else { return nil }
        if operation.padding == RSA_PKCS1_PSS_PADDING, let mgf1 = operation.mgf1Digest {
            guard EVP_PKEY_CTX_set_rsa_mgf1_md(context, EVP_get_digestbyname(mgf1.rawValue)) == 1 else { return nil }
        }
    }
    var buffer = [UInt8](repeating: 0, count: 128)
    var length = 0
    let found: Int32 = buffer.withUnsafeMutableBytes { bytes in
        var params = [
            OSSL_PARAM_construct_octet_string(StaticCString.get(OSSL_SIGNATURE_PARAM_ALGORITHM_ID), bytes.baseAddress, bytes.count),
            OSSL_PARAM_construct_end(),
        ]
        let result = EVP_PKEY_CTX_get_params(context, &params)
        length = params[0].return_size
        return result
    }
    guard found == 1, length > 0, length <= buffer.count else { return nil }
    return Array(buffer.prefix(length))
}

// MARK: Ed25519

private func edDSAInit(_ context: UnsafeMutableRawPointer?, _ digestName: UnsafePointer<CChar>?,
                       _ keydata: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    if let digestName, digestName.pointee != 0 {
        raiseProviderError("Ed25519 takes no separate digest (got \(String(cString: digestName)))")
        return 0
    }
    guard let operation = signatureContext(context), let key = keyBox(keydata)?.key, key.algorithm == .ed25519 else { return 0 }
    operation.key = key
    return 1
}

private func edDSASign(_ context: UnsafeMutableRawPointer?, _ signature: UnsafeMutablePointer<UInt8>?,
                       _ signatureLength: UnsafeMutablePointer<Int>?, _ signatureSize: Int,
                       _ input: UnsafePointer<UInt8>?, _ inputLength: Int) -> Int32 {
    guard let operation = signatureContext(context), let signatureLength else { return 0 }
    guard let signature else {
        signatureLength.pointee = 64
        return 1
    }
    let message = input.map { Array(UnsafeBufferPointer(start: $0, count: inputLength)) } ?? []
    return writeSignature(signature, signatureLength, signatureSize) { () throws(OpenSSLError) in
        try operation.signEdDSA(message)
    }
}

private func edDSAVerify(_ context: UnsafeMutableRawPointer?, _ signature: UnsafePointer<UInt8>?, _ signatureLength: Int,
                         _ input: UnsafePointer<UInt8>?, _ inputLength: Int) -> Int32 {
    guard let operation = signatureContext(context), let signature else { return 0 }
    let message = input.map { Array(UnsafeBufferPointer(start: $0, count: inputLength)) } ?? []
    return operation.verifyEdDSA(signature: Array(UnsafeBufferPointer(start: signature, count: signatureLength)), message: message) ? 1 : 0
}

/// The AlgorithmIdentifier of Ed25519 (RFC 8410): SEQUENCE { OID 1.3.101.112 }, no parameters.
private let ed25519AlgorithmIdentifier: [UInt8] = [0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70]

private func edDSAGetParams(_ context: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 {
    guard let params else { return 0 }
    if let param = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID) {
        guard ed25519AlgorithmIdentifier.withUnsafeBytes({ OSSL_PARAM_set_octet_string(param, $0.baseAddress, $0.count) }) == 1 else { return 0 }
    }
    return 1
}

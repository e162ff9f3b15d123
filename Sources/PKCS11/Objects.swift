internal import CPKCS11
import Foundation

/// A handle to an object on a token. Valid only while the token keeps its sessions.
public struct ObjectHandle: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
}

/// The object classes KeyBridge looks for.
public enum ObjectClass: UInt, Sendable {
    /// `CKO_CERTIFICATE`
    case certificate = 1
    /// `CKO_PUBLIC_KEY`
    case publicKey = 2
    /// `CKO_PRIVATE_KEY`
    case privateKey = 3

    init?(_ type: PKCS11URI.ObjectType) {
        switch type {
        case .certificate: self = .certificate
        case .publicKey: self = .publicKey
        case .privateKey: self = .privateKey
        default: return nil
        }
    }
}

/// Key types KeyBridge can use.
public enum KeyType: UInt, Sendable {
    /// `CKK_RSA`
    case rsa = 0
    /// `CKK_EC`
    case ec = 3
    /// `CKK_EC_EDWARDS`
    case ecEdwards = 0x40
}

/// Attributes that are public by nature. Reading is limited to these, so no code path can ask a
/// token for `CKA_VALUE` of a key, a private exponent or a prime.
enum PublicAttribute: UInt {
    case objectClass = 0x0          // CKA_CLASS
    case label = 0x3                // CKA_LABEL
    case keyType = 0x100            // CKA_KEY_TYPE
    case id = 0x102                 // CKA_ID
    case sensitive = 0x103          // CKA_SENSITIVE
    case sign = 0x108               // CKA_SIGN
    case modulus = 0x120            // CKA_MODULUS
    case modulusBits = 0x121        // CKA_MODULUS_BITS
    case publicExponent = 0x122     // CKA_PUBLIC_EXPONENT
    case extractable = 0x162        // CKA_EXTRACTABLE
    case neverExtractable = 0x164   // CKA_NEVER_EXTRACTABLE
    case alwaysAuthenticate = 0x202 // CKA_ALWAYS_AUTHENTICATE
    case ecParams = 0x180           // CKA_EC_PARAMS
    case ecPoint = 0x181            // CKA_EC_POINT
    case allowedMechanisms = 0x40000600 // CKA_ALLOWED_MECHANISMS
}

extension Token {
    /// Finds objects of `objectClass` matching the URI's `object` and `id`.
    public func findObjects(matching uri: PKCS11URI, objectClass: ObjectClass?) throws(PKCS11Error) -> [ObjectHandle] {
        var template = AttributeTemplate()
        if let objectClass { template.append(CKA_CLASS, ulong: objectClass.rawValue) }
        if let label = uri.object { template.append(CKA_LABEL, bytes: Array(label.utf8)) }
        if let id = uri.id { template.append(CKA_ID, bytes: id) }
        return try findObjects(template)
    }

    /// Finds objects of a class with a given `CKA_ID`.
    public func findObjects(id: [UInt8], objectClass: ObjectClass) throws(PKCS11Error) -> [ObjectHandle] {
        var template = AttributeTemplate()
        template.append(CKA_CLASS, ulong: objectClass.rawValue)
        template.append(CKA_ID, bytes: id)
        return try findObjects(template)
    }

    private func findObjects(_ template: AttributeTemplate) throws(PKCS11Error) -> [ObjectHandle] {
        try withSession { session throws(PKCS11Error) in
            try template.withAttributes { attributes, count throws(PKCS11Error) in
                try check(functions.C_FindObjectsInit(session, attributes, count), "C_FindObjectsInit")
            }
            defer { _ = functions.C_FindObjectsFinal(session) }
            var found: [ObjectHandle] = []
            var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 32)
            while true {
                var count: CK_ULONG = 0
                try check(functions.C_FindObjects(session, &batch, CK_ULONG(batch.count), &count), "C_FindObjects")
                if count == 0 { break }
                found += batch.prefix(Int(count)).map { ObjectHandle(rawValue: UInt($0)) }
            }
            return found
        }
    }

    private var functions: CK_FUNCTION_LIST { module.functions.pointee }

    /// Reads one public attribute; `nil` when the object does not have it.
    func attribute(_ attribute: PublicAttribute, of object: ObjectHandle) throws(PKCS11Error) -> [UInt8]? {
        try withSession { session throws(PKCS11Error) in
            var query = CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(attribute.rawValue), pValue: nil, ulValueLen: 0)
            let rv = functions.C_GetAttributeValue(session, CK_OBJECT_HANDLE(object.rawValue), &query, 1)
            if rv == CKR_ATTRIBUTE_TYPE_INVALID || query.ulValueLen == CK_ULONG.max { return nil }
            try check(rv, "C_GetAttributeValue")
            var value = [UInt8](repeating: 0, count: Int(query.ulValueLen))
            let length = query.ulValueLen
            let second = value.withUnsafeMutableBytes { buffer in
                query.pValue = buffer.baseAddress
                query.ulValueLen = length
                return functions.C_GetAttributeValue(session, CK_OBJECT_HANDLE(object.rawValue), &query, 1)
            }
            try check(second, "C_GetAttributeValue")
            return Array(value.prefix(Int(query.ulValueLen)))
        }
    }

    func boolAttribute(_ attribute: PublicAttribute, of object: ObjectHandle) throws(PKCS11Error) -> Bool? {
        try self.attribute(attribute, of: object).flatMap { $0.first.map { $0 != 0 } }
    }

    func ulongAttribute(_ attribute: PublicAttribute, of object: ObjectHandle) throws(PKCS11Error) -> UInt? {
        guard let bytes = try self.attribute(attribute, of: object), bytes.count == MemoryLayout<CK_ULONG>.size else { return nil }
        return UInt(bytes.withUnsafeBytes { $0.loadUnaligned(as: CK_ULONG.self) })
    }

    /// An object's `CKA_ID`, if it has one.
    public func objectID(_ object: ObjectHandle) throws(PKCS11Error) -> [UInt8]? {
        try attribute(.id, of: object)
    }

    /// The DER of a certificate object. `CKA_VALUE` is read only after `CKA_CLASS` proves the
    /// object is a certificate, never for a key.
    public func certificateDER(_ object: ObjectHandle) throws(PKCS11Error) -> [UInt8] {
        guard try ulongAttribute(.objectClass, of: object) == ObjectClass.certificate.rawValue else {
            throw PKCS11Error(function: "C_GetAttributeValue", reason: "object is not a certificate; refusing to read its value")
        }
        return try withSession { session throws(PKCS11Error) in
            var query = CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(CKA_VALUE), pValue: nil, ulValueLen: 0)
            try check(functions.C_GetAttributeValue(session, CK_OBJECT_HANDLE(object.rawValue), &query, 1), "C_GetAttributeValue")
            var value = [UInt8](repeating: 0, count: Int(query.ulValueLen))
            let second = value.withUnsafeMutableBytes { buffer in
                query.pValue = buffer.baseAddress
                return functions.C_GetAttributeValue(session, CK_OBJECT_HANDLE(object.rawValue), &query, 1)
            }
            try check(second, "C_GetAttributeValue")
            return value
        }
    }

    // MARK: Signing

    /// Signs `data` in one `C_Sign` call with the key `object`.
    /// `contextLogin` keys (`CKA_ALWAYS_AUTHENTICATE`) get a context-specific login after
    /// `C_SignInit`, with the PIN that logged the token in.
    /// With `handleEpoch` (the `epoch` in which `object` was found), a handle from an older
    /// epoch is refused with `CKR_OBJECT_HANDLE_INVALID` before it is used.
    public func sign(_ data: [UInt8], with object: ObjectHandle, mechanism: SignatureMechanism,
                     contextLogin: Bool = false, handleEpoch: UInt64? = nil) throws(PKCS11Error) -> [UInt8] {
        try withSession(discardOnError: true) { session throws(PKCS11Error) in
            try requireCurrentEpoch(handleEpoch)
            return try mechanism.withCMechanism { mechanismPointer throws(PKCS11Error) in
                try check(functions.C_SignInit(session, mechanismPointer, CK_OBJECT_HANDLE(object.rawValue)),
                          "C_SignInit", "the token refused to start a \(mechanism) signature with this key")
                if contextLogin { try loginForOneOperation(session) }
                var input = data
                // One call with room for any RSA-16384 or EC signature saves a round trip to
                // network HSMs; the size query is the fallback.
                var length = CK_ULONG(2048)
                var signature = [UInt8](repeating: 0, count: Int(length))
                let rv = functions.C_Sign(session, &input, CK_ULONG(input.count), &signature, &length)
                if rv == CKR_BUFFER_TOO_SMALL {
                    signature = [UInt8](repeating: 0, count: Int(length))
                    try check(functions.C_Sign(session, &input, CK_ULONG(input.count), &signature, &length), "C_Sign")
                } else {
                    try check(rv, "C_Sign")
                }
                return Array(signature.prefix(Int(length)))
            }
        }
    }
}

/// A search template whose values live in memory owned by the template for its whole life.
struct AttributeTemplate {
    private var entries: [(type: CK_ATTRIBUTE_TYPE, value: [UInt8])] = []

    mutating func append(_ type: UInt, bytes: [UInt8]) {
        entries.append((CK_ATTRIBUTE_TYPE(type), bytes))
    }

    mutating func append(_ type: UInt, ulong: UInt) {
        entries.append((CK_ATTRIBUTE_TYPE(type), withUnsafeBytes(of: CK_ULONG(ulong)) { Array($0) }))
    }

    func withAttributes<R>(_ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, entries.reduce(0) { $0 + $1.value.count }), alignment: 16)
        defer { storage.deallocate() }
        var attributes: [CK_ATTRIBUTE] = []
        var offset = 0
        for entry in entries {
            let slice = UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + entry.value.count)])
            slice.copyBytes(from: entry.value)
            attributes.append(CK_ATTRIBUTE(type: entry.type, pValue: slice.baseAddress, ulValueLen: CK_ULONG(entry.value.count)))
            offset += entry.value.count
        }
        return try attributes.withUnsafeMutableBufferPointer { buffer throws(PKCS11Error) in
            try body(buffer.baseAddress, CK_ULONG(buffer.count))
        }
    }
}

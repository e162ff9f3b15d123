internal import COpenSSL
import Foundation
import PKCS11

/// How one signature is made on a token that may lack some mechanisms: which mechanism, what
/// goes in, and why that one was chosen (for `-v` and debug logs).
struct SigningPlan {
    enum Input {
        /// The whole message; the token hashes it.
        case message
        /// The digest, as is (ECDSA, PSS) or behind a DigestInfo (PKCS#1).
        case digest
        /// A full-width block already encoded in software, for raw RSA.
        case encodedBlock
    }

    var mechanism: SignatureMechanism
    var input: Input
    var reason: String
}


/// Picks mechanisms from what the key may use: hash-and-sign first, then the raw mechanism on a
/// software digest, then (RSA only) raw RSA on a block encoded in software.
enum MechanismChoice {
    enum Padding { case pkcs1, pss(mgf1: HashAlgorithm, saltLength: Int) }

    static func rsa(padding: Padding, hash: HashAlgorithm?, usable: Set<UInt>, messageAvailable: Bool) throws(OpenSSLError) -> SigningPlan {
        switch padding {
        case .pkcs1:
            if let hash, messageAvailable, usable.contains(hash.rsaPKCS1Mechanism) {
                return SigningPlan(mechanism: .rsaPKCS1Hashing(hash), input: .message, reason: "the token hashes and signs")
            }
            if usable.contains(MechanismType.rsaPKCS1) {
                return SigningPlan(mechanism: .rsaPKCS1, input: .digest,
                                   reason: hash == nil ? "raw PKCS#1 input" : "software \(hash!) digest in a DigestInfo")
            }
            if usable.contains(MechanismType.rsaRaw) {
                return SigningPlan(mechanism: .rsaRaw, input: .encodedBlock,
                                   reason: "PKCS#1 v1.5 padding made in software; the token has no CKM_RSA_PKCS")
            }
            throw OpenSSLError(function: "mechanism choice",
                               reason: "the token offers no mechanism for RSA PKCS#1 v1.5 signatures with this key (needs CKM_RSA_PKCS, CKM_\(hash?.rawValue ?? "SHA256")_RSA_PKCS or CKM_RSA_X_509)")
        case let .pss(mgf1, saltLength):
            guard let hash else {
                throw OpenSSLError(function: "mechanism choice", reason: "an RSA-PSS signature needs a digest")
            }
            if messageAvailable, usable.contains(hash.rsaPSSMechanism) {
                return SigningPlan(mechanism: .rsaPSSHashing(hash: hash, mgf1: mgf1, saltLength: saltLength), input: .message,
                                   reason: "the token hashes and signs")
            }
            if usable.contains(MechanismType.rsaPSS) {
                return SigningPlan(mechanism: .rsaPSS(hash: hash, mgf1: mgf1, saltLength: saltLength), input: .digest,
                                   reason: "software \(hash) digest")
            }
            if usable.contains(MechanismType.rsaRaw) {
                return SigningPlan(mechanism: .rsaRaw, input: .encodedBlock,
                                   reason: "EMSA-PSS encoded in software; the token has no CKM_RSA_PKCS_PSS")
            }
            throw OpenSSLError(function: "mechanism choice",
                               reason: "the token offers no mechanism for RSA-PSS with this key (needs CKM_RSA_PKCS_PSS, CKM_\(hash)_RSA_PKCS_PSS or CKM_RSA_X_509); TLS 1.3 needs RSA-PSS, so use TLS 1.2 or an EC key")
        }
    }

    static func ecdsa(hash: HashAlgorithm?, usable: Set<UInt>, messageAvailable: Bool) throws(OpenSSLError) -> SigningPlan {
        if let hash, messageAvailable, usable.contains(hash.ecdsaMechanism) {
            return SigningPlan(mechanism: .ecdsaHashing(hash), input: .message, reason: "the token hashes and signs")
        }
        if usable.contains(MechanismType.ecdsa) {
            return SigningPlan(mechanism: .ecdsa, input: .digest, reason: "software \(hash?.rawValue ?? "") digest")
        }
        throw OpenSSLError(function: "mechanism choice",
                           reason: "the token offers no ECDSA mechanism for this key (needs CKM_ECDSA or CKM_ECDSA_\(hash?.rawValue ?? "SHA256"))")
    }

    static func eddsa(usable: Set<UInt>) throws(OpenSSLError) -> SigningPlan {
        guard usable.contains(MechanismType.eddsa) else {
            throw OpenSSLError(function: "mechanism choice", reason: "the token offers no CKM_EDDSA for this Ed25519 key")
        }
        return SigningPlan(mechanism: .eddsa, input: .message, reason: "Ed25519 signs the whole message")
    }

    /// The TLS signature algorithms (OpenSSL list syntax) a key can really make, so a handshake
    /// never picks one the token would refuse halfway.
    static func tlsSignatureAlgorithms(algorithm: KeyAlgorithm, usable: Set<UInt>) -> [String] {
        let hashes: [HashAlgorithm] = [.sha256, .sha384, .sha512]
        switch algorithm {
        case .rsa:
            let pss = hashes.filter { (try? rsa(padding: .pss(mgf1: $0, saltLength: $0.length), hash: $0, usable: usable, messageAvailable: true)) != nil }
                .map { "rsa_pss_rsae_\($0.rawValue.lowercased())" }
            let pkcs1 = hashes.filter { (try? rsa(padding: .pkcs1, hash: $0, usable: usable, messageAvailable: true)) != nil }
                .map { "RSA+\($0.rawValue)" }
            return pss + pkcs1
        case .ec:
            return hashes.filter { (try? ecdsa(hash: $0, usable: usable, messageAvailable: true)) != nil }
                .map { "ECDSA+\($0.rawValue)" }
        case .ed25519:
            return usable.contains(MechanismType.eddsa) ? ["ed25519"] : []
        }
    }
}

extension MechanismChoice {
    /// The signing mechanisms among `usable`, by `CKM_` name.
    static func describe(_ usable: Set<UInt>) -> String {
        let known: [(UInt, String)] = [
            (MechanismType.rsaPKCS1, "CKM_RSA_PKCS"), (MechanismType.rsaPSS, "CKM_RSA_PKCS_PSS"), (MechanismType.rsaRaw, "CKM_RSA_X_509"),
            (MechanismType.ecdsa, "CKM_ECDSA"), (MechanismType.eddsa, "CKM_EDDSA"),
        ] + HashAlgorithm.allCases.flatMap { hash in
            [(hash.rsaPKCS1Mechanism, "CKM_\(hash)_RSA_PKCS"), (hash.rsaPSSMechanism, "CKM_\(hash)_RSA_PKCS_PSS"), (hash.ecdsaMechanism, "CKM_ECDSA_\(hash)")]
        }
        let names = known.filter { usable.contains($0.0) }.map(\.1)
        return names.isEmpty ? "no signing mechanism" : names.joined(separator: ", ")
    }
}

/// Encodings for raw RSA (`CKM_RSA_X_509`), from RFC 8017.
enum RSAEncoding {
    /// EMSA-PKCS1-v1_5 (section 9.2) for a `modulusBytes`-long block.
    static func pkcs1(digestInfo: [UInt8], modulusBytes: Int) throws(OpenSSLError) -> [UInt8] {
        let padding = modulusBytes - digestInfo.count - 3
        guard padding >= 8 else { throw OpenSSLError(function: "EMSA-PKCS1-v1_5", reason: "the key is too short for this digest") }
        return [0x00, 0x01] + [UInt8](repeating: 0xFF, count: padding) + [0x00] + digestInfo
    }

    /// EMSA-PSS-ENCODE (section 9.1.1), left-padded with zero bytes to the modulus length.
    static func pss(digest: [UInt8], hash: HashAlgorithm, mgf1: HashAlgorithm, saltLength: Int, modulusBits: Int) throws(OpenSSLError) -> [UInt8] {
        let emBits = modulusBits - 1
        let emLength = (emBits + 7) / 8
        let hashLength = hash.length
        guard digest.count == hashLength, emLength >= hashLength + saltLength + 2 else {
            throw OpenSSLError(function: "EMSA-PSS", reason: "the key is too short for a \(hash) PSS signature with a \(saltLength)-byte salt")
        }
        var salt = [UInt8](repeating: 0, count: saltLength)
        if saltLength > 0, RAND_bytes(&salt, Int32(saltLength)) != 1 {
            throw OpenSSLError.drain(function: "RAND_bytes", reason: "no random salt")
        }
        let h = try digestOf([UInt8](repeating: 0, count: 8) + digest + salt, hash)
        var db = [UInt8](repeating: 0, count: emLength - saltLength - hashLength - 2) + [0x01] + salt
        let mask = try mgf1Mask(seed: h, length: db.count, hash: mgf1)
        for index in db.indices { db[index] ^= mask[index] }
        let unusedBits = 8 * emLength - emBits
        db[0] &= UInt8(0xFF >> unusedBits)
        let encoded = db + h + [0xBC]
        let modulusBytes = (modulusBits + 7) / 8
        return [UInt8](repeating: 0, count: modulusBytes - encoded.count) + encoded
    }

    static func mgf1Mask(seed: [UInt8], length: Int, hash: HashAlgorithm) throws(OpenSSLError) -> [UInt8] {
        var mask: [UInt8] = []
        var counter: UInt32 = 0
        while mask.count < length {
            let counterBytes = withUnsafeBytes(of: counter.bigEndian) { Array($0) }
            mask += try digestOf(seed + counterBytes, hash)
            counter += 1
        }
        return Array(mask.prefix(length))
    }

    static func digestOf(_ data: [UInt8], _ hash: HashAlgorithm) throws(OpenSSLError) -> [UInt8] {
        guard let md = EVP_MD_fetch(nil, hash.rawValue, PublicKeyBuilder.defaultProperties) else {
            throw OpenSSLError.drain(function: "EVP_MD_fetch", reason: "\(hash) is not available")
        }
        defer { EVP_MD_free(md) }
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard EVP_Digest(data, data.count, &output, &length, md, nil) == 1 else {
            throw OpenSSLError.drain(function: "EVP_Digest", reason: "hashing failed")
        }
        return Array(output.prefix(Int(length)))
    }
}

internal import CPKCS11

/// A PKCS#11 return value (`CK_RV`), named after its `CKR_` constant.
public struct ReturnValue: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    /// `CKR_OK`
    public static let ok = ReturnValue(rawValue: 0x0)
    /// `CKR_SLOT_ID_INVALID`
    public static let slotIDInvalid = ReturnValue(rawValue: 0x3)
    /// `CKR_GENERAL_ERROR`
    public static let generalError = ReturnValue(rawValue: 0x5)
    /// `CKR_ARGUMENTS_BAD`
    public static let argumentsBad = ReturnValue(rawValue: 0x7)
    /// `CKR_DEVICE_ERROR`
    public static let deviceError = ReturnValue(rawValue: 0x30)
    /// `CKR_DEVICE_REMOVED`
    public static let deviceRemoved = ReturnValue(rawValue: 0x32)
    /// `CKR_KEY_HANDLE_INVALID`
    public static let keyHandleInvalid = ReturnValue(rawValue: 0x60)
    /// `CKR_KEY_TYPE_INCONSISTENT`
    public static let keyTypeInconsistent = ReturnValue(rawValue: 0x63)
    /// `CKR_MECHANISM_INVALID`
    public static let mechanismInvalid = ReturnValue(rawValue: 0x70)
    /// `CKR_MECHANISM_PARAM_INVALID`
    public static let mechanismParamInvalid = ReturnValue(rawValue: 0x71)
    /// `CKR_OBJECT_HANDLE_INVALID`
    public static let objectHandleInvalid = ReturnValue(rawValue: 0x82)
    /// `CKR_PIN_INCORRECT`
    public static let pinIncorrect = ReturnValue(rawValue: 0xA0)
    /// `CKR_PIN_LOCKED`
    public static let pinLocked = ReturnValue(rawValue: 0xA4)
    /// `CKR_SESSION_CLOSED`
    public static let sessionClosed = ReturnValue(rawValue: 0xB0)
    /// `CKR_SESSION_HANDLE_INVALID`
    public static let sessionHandleInvalid = ReturnValue(rawValue: 0xB3)
    /// `CKR_TOKEN_NOT_PRESENT`
    public static let tokenNotPresent = ReturnValue(rawValue: 0xE0)
    /// `CKR_USER_ALREADY_LOGGED_IN`
    public static let userAlreadyLoggedIn = ReturnValue(rawValue: 0x100)
    /// `CKR_USER_NOT_LOGGED_IN`
    public static let userNotLoggedIn = ReturnValue(rawValue: 0x101)
    /// `CKR_USER_PIN_NOT_INITIALIZED`
    public static let userPINNotInitialized = ReturnValue(rawValue: 0x102)
    /// `CKR_BUFFER_TOO_SMALL`
    public static let bufferTooSmall = ReturnValue(rawValue: 0x150)
    /// `CKR_CRYPTOKI_NOT_INITIALIZED`
    public static let cryptokiNotInitialized = ReturnValue(rawValue: 0x190)
    /// `CKR_CRYPTOKI_ALREADY_INITIALIZED`
    public static let cryptokiAlreadyInitialized = ReturnValue(rawValue: 0x191)

    /// The `CKR_` name of the code, or its hex value for codes without a name here.
    public var name: String {
        ReturnValue.names[rawValue] ?? "CKR_0x" + String(rawValue, radix: 16, uppercase: true)
    }

    public var description: String { name }

    /// Errors after which the session (or the whole login) is gone and must be rebuilt.
    public var meansSessionLost: Bool {
        [.sessionHandleInvalid, .sessionClosed, .deviceRemoved, .tokenNotPresent,
         .deviceError, .userNotLoggedIn, .cryptokiNotInitialized].contains(self)
    }

    /// Errors after which the module as a whole must be started again (`C_Finalize`, then
    /// `C_Initialize`): the device or its connection is gone. `p11-kit-client.so` answers
    /// `CKR_DEVICE_ERROR` once its server has died and stays disconnected until then; after a
    /// restart with the server still away it shows no slot (`CKR_SLOT_ID_INVALID`).
    public var meansTokenUnreachable: Bool {
        [.deviceError, .deviceRemoved, .tokenNotPresent, .cryptokiNotInitialized, .slotIDInvalid].contains(self)
    }

    private static let names: [UInt: String] = [
        0x0: "CKR_OK", 0x1: "CKR_CANCEL", 0x2: "CKR_HOST_MEMORY", 0x3: "CKR_SLOT_ID_INVALID",
        0x5: "CKR_GENERAL_ERROR", 0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD",
        0x8: "CKR_NO_EVENT", 0x9: "CKR_NEED_TO_CREATE_THREADS", 0xA: "CKR_CANT_LOCK",
        0x10: "CKR_ATTRIBUTE_READ_ONLY", 0x11: "CKR_ATTRIBUTE_SENSITIVE",
        0x12: "CKR_ATTRIBUTE_TYPE_INVALID", 0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
        0x1B: "CKR_ACTION_PROHIBITED", 0x20: "CKR_DATA_INVALID", 0x21: "CKR_DATA_LEN_RANGE",
        0x30: "CKR_DEVICE_ERROR", 0x31: "CKR_DEVICE_MEMORY", 0x32: "CKR_DEVICE_REMOVED",
        0x50: "CKR_FUNCTION_CANCELED", 0x51: "CKR_FUNCTION_NOT_PARALLEL",
        0x54: "CKR_FUNCTION_NOT_SUPPORTED", 0x60: "CKR_KEY_HANDLE_INVALID",
        0x62: "CKR_KEY_SIZE_RANGE", 0x63: "CKR_KEY_TYPE_INCONSISTENT",
        0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED", 0x70: "CKR_MECHANISM_INVALID",
        0x71: "CKR_MECHANISM_PARAM_INVALID", 0x82: "CKR_OBJECT_HANDLE_INVALID",
        0x90: "CKR_OPERATION_ACTIVE", 0x91: "CKR_OPERATION_NOT_INITIALIZED",
        0xA0: "CKR_PIN_INCORRECT", 0xA1: "CKR_PIN_INVALID", 0xA2: "CKR_PIN_LEN_RANGE",
        0xA3: "CKR_PIN_EXPIRED", 0xA4: "CKR_PIN_LOCKED", 0xB0: "CKR_SESSION_CLOSED",
        0xB1: "CKR_SESSION_COUNT", 0xB3: "CKR_SESSION_HANDLE_INVALID",
        0xB4: "CKR_SESSION_PARALLEL_NOT_SUPPORTED", 0xB5: "CKR_SESSION_READ_ONLY",
        0xB6: "CKR_SESSION_EXISTS", 0xC0: "CKR_SIGNATURE_INVALID", 0xC1: "CKR_SIGNATURE_LEN_RANGE",
        0xD0: "CKR_TEMPLATE_INCOMPLETE", 0xD1: "CKR_TEMPLATE_INCONSISTENT",
        0xE0: "CKR_TOKEN_NOT_PRESENT", 0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
        0xE2: "CKR_TOKEN_WRITE_PROTECTED", 0x100: "CKR_USER_ALREADY_LOGGED_IN",
        0x101: "CKR_USER_NOT_LOGGED_IN", 0x102: "CKR_USER_PIN_NOT_INITIALIZED",
        0x103: "CKR_USER_TYPE_INVALID", 0x104: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
        0x105: "CKR_USER_TOO_MANY_TYPES", 0x150: "CKR_BUFFER_TOO_SMALL",
        0x160: "CKR_SAVED_STATE_INVALID", 0x170: "CKR_INFORMATION_SENSITIVE",
        0x180: "CKR_STATE_UNSAVEABLE", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
        0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED", 0x1A0: "CKR_MUTEX_BAD",
        0x1A1: "CKR_MUTEX_NOT_LOCKED", 0x200: "CKR_FUNCTION_REJECTED",
    ]
}

/// An error from the PKCS#11 layer: the return value (if a module call failed), the `C_`
/// function or step that failed, and a sentence naming the cause and the fix.
public struct PKCS11Error: Error, Sendable, CustomStringConvertible {
    /// The return value of the failed module call, or `nil` for errors found by KeyBridge itself.
    public var returnValue: ReturnValue?
    /// The PKCS#11 function (`C_Login`) or KeyBridge step (`dlopen`) that failed.
    public var function: String
    /// What went wrong and what to do about it.
    public var reason: String

    public init(returnValue: ReturnValue? = nil, function: String, reason: String) {
        self.returnValue = returnValue
        self.function = function
        self.reason = reason
    }

    /// Whether the token could not be reached (device gone, connection lost, or KeyBridge still
    /// waiting to reconnect), as opposed to a refusal by a token that is there. Services answer
    /// such errors with 503: the same request may work once the token is back.
    public var isTokenUnavailable: Bool {
        returnValue?.meansTokenUnreachable == true
    }

    public var description: String {
        if let returnValue {
            return "\(function) failed with \(returnValue.name): \(reason)"
        }
        return "\(function): \(reason)"
    }
}

/// The one place that turns a `CK_RV` into a thrown error.
@inline(__always)
func check(_ rv: CK_RV, _ function: String, _ reason: @autoclosure () -> String = "") throws(PKCS11Error) {
    guard rv != CKR_OK else { return }
    let value = ReturnValue(rawValue: UInt(rv))
    let text = reason()
    throw PKCS11Error(returnValue: value, function: function,
                      reason: text.isEmpty ? defaultAdvice(for: value) : text)
}

func defaultAdvice(for value: ReturnValue) -> String {
    switch value {
    case .pinIncorrect: return "the PIN is wrong; check pin-source, KEYBRIDGE_PIN or pin-value (it will not be retried)"
    case .pinLocked: return "the user PIN is locked; the token's security officer must unlock it"
    case .tokenNotPresent, .deviceRemoved: return "the token is not present; check the HSM connection and the slot"
    case .userNotLoggedIn: return "the session is not logged in; supply a PIN"
    case .mechanismInvalid: return "the token does not support this mechanism"
    case .mechanismParamInvalid: return "the token rejected the mechanism's parameters (for PSS: hash, MGF1 or salt length)"
    case ReturnValue(rawValue: 0x68): return "the key may not sign (CKA_SIGN is false); use a key generated for signing"
    case ReturnValue(rawValue: 0xA3): return "the PIN has expired; change it with pkcs11-tool --change-pin"
    case ReturnValue(rawValue: 0xA1), ReturnValue(rawValue: 0xA2): return "the PIN has characters or a length the token does not accept; check the PIN source"
    case ReturnValue(rawValue: 0xB1): return "the token has no free sessions; close other programs using it or raise its session limit"
    case .keyTypeInconsistent: return "the key type does not fit the mechanism"
    default: return "the PKCS#11 module reported an error"
    }
}

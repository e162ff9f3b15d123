import Foundation

/// A value shared across threads, read and written under a lock. Used for process-wide
/// settings that applications may change while other threads sign.
final class LockedValue<Value>: @unchecked Sendable {
    // Every access to `value` goes through `lock`.
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    var current: Value {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

internal import CFuzzerDriver
import Foundation

/// The input handler; set once, before libFuzzer starts calling back.
nonisolated(unsafe) private var handler: ((UnsafeRawBufferPointer) -> Void)?

/// Hands control to libFuzzer with `body` as the fuzz function, passing on the command line
/// (corpus folders, -max_total_time=…, -runs=…), and exits with libFuzzer's status.
///
/// `body` signals a broken invariant by trapping (`precondition`), which libFuzzer reports as a
/// crash and saves the input for.
public func runLibFuzzer(_ body: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
    handler = body
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    let callback: CFuzzerDriver_Callback = { data, size in
        handler?(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
    CFuzzerDriver_setCallback(callback)
    let status = LLVMFuzzerRunDriver(&argc, &argv, callback)
    exit(status)
}

/// The input as text: invalid UTF-8 becomes U+FFFD, as it would from a network read.
public func text(_ input: UnsafeRawBufferPointer) -> String {
    String(decoding: input, as: UTF8.self)
}

/// Whether `needle`'s UTF-8 bytes occur in `haystack`'s. For invariants on fuzzed text: the
/// Foundation `String.contains` of Swift 6.3 on Linux traps ("String index is out of bounds")
/// or answers wrongly when the needle holds a NUL, e.g. "é".contains("é\0").
public func bytes(of haystack: String, contain needle: String) -> Bool {
    let hay = Array(haystack.utf8)
    let pattern = Array(needle.utf8)
    guard !pattern.isEmpty else { return true }
    guard pattern.count <= hay.count else { return false }
    for start in 0...(hay.count - pattern.count) where hay[start] == pattern[0] {
        if hay[start..<start + pattern.count].elementsEqual(pattern) { return true }
    }
    return false
}

/// Splits the input into its mode line (which check to run) and the rest.
public func split(_ input: UnsafeRawBufferPointer) -> (mode: String, rest: Data) {
    let bytes = Data(input)
    guard let newline = bytes.firstIndex(of: 0x0A) else { return ("", bytes) }
    return (String(decoding: bytes[..<newline], as: UTF8.self), bytes[(newline + 1)...])
}

/// Splits "method\ntarget\nName: value\n…\n\nbody" at its newlines: the head lines up to the
/// first empty line that follows at least two, the body after it, and, when no such empty line
/// came, the unterminated text after the last newline (nil if there is none).
public func messageParts(_ data: Data) -> (head: [Data], body: Data, unterminated: Data?) {
    var head: [Data] = []
    var start = data.startIndex
    while let newline = data[start...].firstIndex(of: 0x0A) {
        let line = data[start..<newline]
        start = newline + 1
        if line.isEmpty && head.count >= 2 { return (head, data[start...], nil) }
        head.append(line)
    }
    return (head, Data(), start < data.endIndex ? data[start...] : nil)
}

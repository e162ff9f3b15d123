// The AddressSanitizer control of check-deep: one write past the end of a heap buffer. Built
// with -sanitize=address it must stop with "ERROR: AddressSanitizer: heap-buffer-overflow"; if
// it does not, the asan step could not see memory errors either.
let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
let index = Int(CommandLine.arguments.count + 15)  // 16 with no arguments: one past the end
buffer[index] = 1
print("wrote byte \(index)")
buffer.deallocate()

// The ThreadSanitizer control of check-deep: two threads write one variable without a lock.
// Built with -sanitize=thread it must print "WARNING: ThreadSanitizer: data race"; if it does
// not, the tsan step could not see races either.
import Foundation

final class Counter: @unchecked Sendable {  // unchecked on purpose: the race is the point
    var value = 0
}

let counter = Counter()
let threads = (0..<2).map { _ in
    Thread {
        for _ in 0..<10_000 { counter.value += 1 }
    }
}
threads.forEach { $0.start() }
while threads.contains(where: { !$0.isFinished }) { usleep(1_000) }
print("counter: \(counter.value)")

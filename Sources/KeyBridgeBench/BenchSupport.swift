import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A benchmark failure: what could not be measured and why.
public struct BenchError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The monotonic clock, system-wide on Linux, so a parent and its child read the same time.
enum BenchClock {
    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// Timing loops. Every comparison runs its variants in turns (A B C, then C B A, …) so that
/// drift in the machine's load hits all of them alike; each turn gives one rate per variant.
enum Timing {
    /// Operations per second of `body`, run for about `seconds` (at least once).
    static func rate(seconds: Double, _ body: () throws -> Void) rethrows -> Double {
        let start = BenchClock.now()
        var count = 0
        var elapsed = 0.0
        repeat {
            try body()
            count += 1
            elapsed = BenchClock.now() - start
        } while elapsed < seconds
        return Double(count) / elapsed
    }

    /// Per-variant rates, one per round, with the order reversed every other round.
    static func interleaved(rounds: Int, seconds: Double,
                            _ variants: [(name: String, body: () throws -> Void)]) throws -> [String: [Double]] {
        var rates: [String: [Double]] = [:]
        for round in 0..<rounds {
            let order = round % 2 == 0 ? variants : variants.reversed()
            for variant in order {
                rates[variant.name, default: []].append(try rate(seconds: seconds, variant.body))
            }
        }
        return rates
    }

    /// Total operations per second of `threads` threads each running `body` for `seconds`.
    static func parallelRate(threads: Int, seconds: Double, _ body: @escaping @Sendable () throws -> Void) throws -> Double {
        let results = LockedResults()
        let group = DispatchGroup()
        for _ in 0..<threads {
            group.enter()
            let thread = Thread {
                do {
                    results.add(try rate(seconds: seconds, body))
                } catch {
                    results.fail(error)
                }
                group.leave()
            }
            thread.start()
        }
        group.wait()
        if let error = results.error { throw error }
        return results.sum
    }
}

/// Collects per-thread results.
final class LockedResults: @unchecked Sendable {
    // Every access goes through `lock`.
    private let lock = NSLock()
    private var values: [Double] = []
    private var firstError: (any Error)?

    func add(_ value: Double) { lock.withLock { values.append(value) } }
    func fail(_ error: any Error) { lock.withLock { if firstError == nil { firstError = error } } }
    var sum: Double { lock.withLock { values.reduce(0, +) } }
    var all: [Double] { lock.withLock { values } }
    var error: (any Error)? { lock.withLock { firstError } }
}

/// Child processes: run to completion, or start and stop by pid.
enum ChildProcess {
    struct Result {
        var status: Int32
        var output: String
        var errorOutput: String
    }

    /// Runs a program to completion and collects its output. Spawned and reaped directly
    /// (posix_spawn, waitpid): Foundation's `Process.waitUntilExit` polls its run loop every
    /// 50 ms, which would add up to 50 ms to every cold-start time.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                    stdinText: String? = nil) throws -> Result {
        var outputPipe: [Int32] = [0, 0], errorPipe: [Int32] = [0, 0], inputPipe: [Int32] = [0, 0]
        guard pipe(&outputPipe) == 0, pipe(&errorPipe) == 0, pipe(&inputPipe) == 0 else { throw BenchError("pipe() failed: errno \(errno)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inputPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errorPipe[1], 2)
        for fd in inputPipe + outputPipe + errorPipe { posix_spawn_file_actions_addclose(&actions, fd) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let environmentList = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            environmentList.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environmentList)
        close(inputPipe[0])
        close(outputPipe[1])
        close(errorPipe[1])
        guard spawned == 0 else {
            [inputPipe[1], outputPipe[0], errorPipe[0]].forEach { _ = close($0) }
            throw BenchError("cannot start \(executable): errno \(spawned)")
        }
        if let stdinText {
            let bytes = Array(stdinText.utf8)
            _ = bytes.withUnsafeBytes { write(inputPipe[1], $0.baseAddress, $0.count) }
        }
        close(inputPipe[1])
        // Both pipes are drained while the child runs, so a chatty child cannot block.
        let errorData = LockedData()
        let errorDescriptor = errorPipe[0]
        let reader = Thread { errorData.set(readAll(errorDescriptor)) }
        reader.start()
        let outputData = readAll(outputPipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        while !errorData.done { usleep(200) }
        close(outputPipe[0])
        close(errorPipe[0])
        // WIFEXITED / WEXITSTATUS are macros; a signal death is reported as 128 + signal.
        let exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: exitStatus, output: String(decoding: outputData, as: UTF8.self),
                      errorOutput: String(decoding: errorData.value, as: UTF8.self))
    }

    private static func readAll(_ fd: Int32) -> Data {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count > 0 {
                data.append(contentsOf: buffer[0..<count])
            } else if count == 0 || errno != EINTR {
                break
            }
        }
        return data
    }

    /// Starts a long-running program with its output in files.
    static func start(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                      output: String, errors: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: output)
        process.standardError = FileHandle(forWritingAtPath: errors)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Stops a process this benchmark started: SIGTERM, then SIGKILL after two seconds.
    static func stop(_ process: Process) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = BenchClock.now() + 2
        while process.isRunning && BenchClock.now() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits until `condition` holds or `seconds` pass.
    static func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = BenchClock.now() + seconds
        while BenchClock.now() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }
}

final class LockedData: @unchecked Sendable {
    // Every access goes through `lock`.
    private let lock = NSLock()
    private var data = Data()
    private var finished = false
    func set(_ value: Data) { lock.withLock { data = value; finished = true } }
    var done: Bool { lock.withLock { finished } }
    var value: Data { lock.withLock { data } }
}

/// Loopback ports and connection checks.
enum Loopback {
    /// A port that was free a moment ago (the kernel's pick for port 0).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = loopbackAddress(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw BenchError("bind(127.0.0.1:0) failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func loopbackAddress(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return address
    }

    /// A connected TCP socket to 127.0.0.1:`port` with Nagle off, or -1.
    static func connect(port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var address = loopbackAddress(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            return -1
        }
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    static func isListening(port: Int) -> Bool {
        let fd = connect(port: port)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }
}

/// Peak and current resident memory of a process, from /proc (kB).
enum ProcessMemory {
    static func status(pid: Int32) -> (peak: Double?, current: Double?) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (nil, nil) }
        func field(_ name: String) -> Double? {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return nil }
            return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Double($0) }
        }
        return (field("VmHWM"), field("VmRSS"))
    }

    /// CPU time (user + system, seconds) a process has used so far, from /proc/PID/stat.
    static func cpuSeconds(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // After the command: state is field 3, utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Child pids of `pid` (for nginx's workers).
    static func children(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.filter { candidate in
            guard let stat = try? String(contentsOfFile: "/proc/\(candidate)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid
        }
    }
}

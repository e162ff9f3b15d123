import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads another process's memory through `/proc/PID/maps` and `/proc/PID/mem` (the test is
/// root, or the process's parent) and counts where byte patterns occur.
enum ProcessMemory {
    struct Region {
        var start: UInt64
        var end: UInt64
        var name: String
    }

    /// Every readable mapping, except the kernel's [vvar]/[vsyscall] pages, which cannot be read
    /// through /proc/PID/mem.
    static func readableRegions(pid: pid_t) throws -> [Region] {
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        var regions: [Region] = []
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 5, fields[1].hasPrefix("r") else { continue }
            let name = fields.count > 5 ? fields[5...].joined(separator: " ") : ""
            if name == "[vvar]" || name == "[vsyscall]" || name == "[vvar_vclock]" { continue }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let start = UInt64(bounds[0], radix: 16), let end = UInt64(bounds[1], radix: 16) else { continue }
            regions.append(Region(start: start, end: end, name: name))
        }
        return regions
    }

    struct Scan {
        /// Occurrences of each pattern, in the order given.
        var hits: [Int]
        var bytesRead: UInt64
        var regions: Int
    }

    /// Stops the process (SIGSTOP) so its memory holds still, reads every readable mapping, counts
    /// the occurrences of each pattern, and lets it run on (SIGCONT).
    static func scan(pid: pid_t, for patterns: [[UInt8]]) throws -> Scan {
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        // Wait until the kernel reports it stopped, so no thread writes while we read.
        for _ in 0..<200 {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            if let close = status.lastIndex(of: ")"), status[status.index(close, offsetBy: 2)...].hasPrefix("T") { break }
            usleep(5_000)
        }
        let regions = try readableRegions(pid: pid)
        let descriptor = open("/proc/\(pid)/mem", O_RDONLY)
        guard descriptor >= 0 else {
            throw NSError(domain: "ProcessMemory", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "cannot open /proc/\(pid)/mem: \(String(cString: strerror(errno)))"])
        }
        defer { close(descriptor) }
        let longest = patterns.map(\.count).max() ?? 0
        let chunk = 4 << 20
        var buffer = [UInt8](repeating: 0, count: chunk + longest)
        var hits = [Int](repeating: 0, count: patterns.count)
        var total: UInt64 = 0
        for region in regions {
            var offset = region.start
            var carried = 0
            while offset < region.end {
                let wanted = Int(min(UInt64(chunk), region.end - offset))
                let got = buffer.withUnsafeMutableBytes { raw in
                    pread(descriptor, raw.baseAddress! + carried, wanted, off_t(offset))
                }
                if got <= 0 {
                    // Unreadable pages (guard pages, device mappings): skip to the next chunk.
                    offset += UInt64(wanted)
                    carried = 0
                    continue
                }
                total += UInt64(got)
                let filled = carried + got
                buffer.withUnsafeBytes { raw in
                    for (index, pattern) in patterns.enumerated() {
                        hits[index] += occurrences(of: pattern, in: UnsafeRawBufferPointer(rebasing: raw[0..<filled]),
                                                   skippingFirst: carried)
                    }
                }
                // Keep the tail so a pattern that straddles two chunks is found once.
                carried = min(longest - 1, filled)
                if carried > 0 {
                    buffer.withUnsafeMutableBytes { raw in
                        raw.baseAddress!.copyMemory(from: raw.baseAddress! + (filled - carried), byteCount: carried)
                    }
                }
                offset += UInt64(got)
            }
        }
        return Scan(hits: hits, bytesRead: total, regions: regions.count)
    }

    /// Occurrences of `pattern` in `memory` that end after the first `skippingFirst` bytes
    /// (those bytes were searched with the previous chunk).
    private static func occurrences(of pattern: [UInt8], in memory: UnsafeRawBufferPointer, skippingFirst carried: Int) -> Int {
        guard !pattern.isEmpty, memory.count >= pattern.count, let base = memory.baseAddress else { return 0 }
        var count = 0
        var position = 0
        let first = Int32(pattern[0])
        pattern.withUnsafeBytes { needle in
            while position + pattern.count <= memory.count {
                // memchr finds candidates fast; memcmp confirms them (glibc's memmem is not exported to Swift).
                guard let candidate = memchr(base + position, first, memory.count - position - pattern.count + 1) else { break }
                let at = base.distance(to: UnsafeRawPointer(candidate))
                // A match lying wholly inside the carried tail was counted with the previous chunk.
                if memcmp(candidate, needle.baseAddress!, pattern.count) == 0, at + pattern.count > carried { count += 1 }
                position = at + 1
            }
        }
        return count
    }
}

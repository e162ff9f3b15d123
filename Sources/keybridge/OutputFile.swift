import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a command's `-o FILE` output so that a reader never sees half a file and nothing but
/// the named file changes.
///
/// - `-` means standard output, as in curl.
/// - A regular file is replaced through a temporary file in the same folder that is created
///   exclusively (`O_EXCL|O_NOFOLLOW`), so a planted link cannot redirect the write, and then
///   renamed over the path. The old file's permissions are kept.
/// - A symbolic link is followed: its target is replaced and the link stays.
/// - A device or FIFO (`/dev/null`, `/dev/stdout`, a pipe) is written in place: renaming over
///   it would, run as root, turn `/dev/null` into a regular file.
enum OutputFile {
    struct Failure: Error {
        /// One sentence naming the cause and the fix.
        var message: String
    }

    static func write(_ data: Data, to path: String) throws(Failure) {
        if path == "-" {
            do {
                try FileHandle.standardOutput.write(contentsOf: data)
            } catch {
                throw Failure(message: "cannot write to standard output (\(error.localizedDescription)); check the disk or the pipe")
            }
            return
        }
        guard !path.isEmpty else {
            throw Failure(message: "-o needs a file name (or - for standard output)")
        }
        var target = path
        var info = stat()
        if lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFLNK {
            guard let resolved = realpath(path, nil) else {
                throw Failure(message: "\(path) is a symbolic link to a file that cannot be reached (\(String(cString: strerror(errno)))); fix the link or choose another -o path")
            }
            target = String(cString: resolved)
            free(resolved)
        }
        if stat(target, &info) == 0 {
            switch info.st_mode & S_IFMT {
            case S_IFREG:
                try replace(target, with: data, mode: info.st_mode & 0o7777, shownAs: path)
            case S_IFDIR:
                throw Failure(message: "\(path) is a directory; give -o a file name")
            case S_IFCHR, S_IFIFO:
                try writeInPlace(target, data, shownAs: path)
            default:
                throw Failure(message: "\(path) is neither a regular file, a device nor a FIFO; choose another -o path")
            }
        } else {
            try replace(target, with: data, mode: nil, shownAs: path)
        }
    }

    private static func writeInPlace(_ path: String, _ data: Data, shownAs shown: String) throws(Failure) {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw Failure(message: "cannot open \(shown) for writing (\(String(cString: strerror(errno)))); check its permissions or choose another -o path")
        }
        defer { close(descriptor) }
        guard writeAll(descriptor, data) else {
            throw Failure(message: "cannot write to \(shown) (\(String(cString: strerror(errno))))")
        }
    }

    private static func replace(_ path: String, with data: Data, mode: mode_t?, shownAs shown: String) throws(Failure) {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        var folderInfo = stat()
        guard stat(folder, &folderInfo) == 0, folderInfo.st_mode & S_IFMT == S_IFDIR else {
            throw Failure(message: "cannot write \(shown): the folder \(folder) does not exist; create it or choose another -o path")
        }
        var temporary = ""
        var descriptor: Int32 = -1
        for attempt in 0..<16 {
            temporary = folder + "/.\(url.lastPathComponent).\(getpid()).\(attempt).\(UInt32.random(in: 0...UInt32.max)).tmp"
            descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o666)
            if descriptor >= 0 || errno != EEXIST { break }
        }
        guard descriptor >= 0 else {
            throw Failure(message: "cannot write \(shown): cannot create a file in \(folder) (\(String(cString: strerror(errno)))); check that the folder is writable or choose another -o path")
        }
        var written = writeAll(descriptor, data)
        if written, let mode { written = fchmod(descriptor, mode) == 0 }
        if written { written = fsync(descriptor) == 0 }
        let reason = String(cString: strerror(errno))
        close(descriptor)
        guard written else {
            unlink(temporary)
            throw Failure(message: "cannot write \(shown) (\(reason)); nothing was changed; check the disk and the folder's permissions")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw Failure(message: "cannot write \(shown) (\(reason)); nothing was changed; check the path given to -o")
        }
    }

    private static func writeAll(_ descriptor: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) -> Bool in
            var offset = 0
            while offset < buffer.count {
                let count = Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += count
            }
            return true
        }
    }
}

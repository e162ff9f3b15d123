package import CKeyBridgeShims
internal import CMicroHTTPD
import Foundation

/// A libmicrohttpd daemon listening on one IP address or Unix socket: the part the mock bank and
/// the broker share. Each keeps its own request callbacks and the context they read.
package final class MicroHTTPDaemon: @unchecked Sendable {
    // Owns one MHD_Daemon; `quiesce()` and `stop()` are the only mutations and run under `lock`.
    private let daemon: OpaquePointer
    private let lock = NSLock()
    private var stopped = false
    private var quiesced = false
    /// The Unix socket's path and inode, removed at stop if the file is still this socket.
    private let unixSocket: (path: String, device: UInt64, inode: UInt64)?

    /// The port listened on (the one the system chose when 0 was asked for).
    package let port: Int

    /// How libmicrohttpd runs the requests.
    package enum Threading {
        /// One internal thread for every connection (fine for a test sandbox).
        case single
        /// A thread per connection, so one slow request holds up only its own caller.
        case perConnection
    }

    /// The reason listening failed, as a sentence with the fix.
    package struct ListenError: Error {
        package var reason: String
    }

    /// Starts listening on `host` (an IPv4 or IPv6 address, or `localhost`) and `port` (0: any
    /// free port). `uriLog` sees each raw request target first (with `context`) and returns the request's state.
    package init(host: String, port: Int, threading: Threading, timeoutSeconds: UInt32,
                 context: UnsafeMutableRawPointer,
                 access: MHD_AccessHandlerCallback, completed: MHD_RequestCompletedCallback,
                 uriLog: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, OpaquePointer?) -> UnsafeMutableRawPointer?) throws(ListenError) {
        guard (0...65_535).contains(port) else { throw ListenError(reason: "the port \(port) is not between 0 and 65535") }
        let address = host == "localhost" ? "127.0.0.1" : host
        // No MHD_USE_ERROR_LOG: MHD would print its own line beside the caller's one-line error.
        var flags = MicroHTTPDaemon.flags(threading)
        var ipv4 = sockaddr_in()
        var ipv6 = sockaddr_in6()
        let isIPv4 = inet_pton(AF_INET, address, &ipv4.sin_addr) == 1
        if isIPv4 {
            ipv4.sin_family = sa_family_t(AF_INET)
            ipv4.sin_port = in_port_t(port).bigEndian
        } else if inet_pton(AF_INET6, address, &ipv6.sin6_addr) == 1 {
            ipv6.sin6_family = sa_family_t(AF_INET6)
            ipv6.sin6_port = in_port_t(port).bigEndian
            flags |= MHD_USE_IPv6.rawValue
        } else {
            throw ListenError(reason: "'\(host)' is not an IP address; listen on 127.0.0.1, ::1 or another address of this machine")
        }
        let started: OpaquePointer? = withUnsafeBytes(of: &ipv4) { ipv4Bytes in
            withUnsafeBytes(of: &ipv6) { ipv6Bytes in
                let bytes = isIPv4 ? ipv4Bytes : ipv6Bytes
                return CKeyBridgeShims_MHD_start_daemon(
                    flags, UInt16(port), access, context, completed, nil, uriLog, context,
                    bytes.baseAddress?.assumingMemoryBound(to: sockaddr.self), 256 * 1024, timeoutSeconds)
            }
        }
        guard let started else {
            let cause = errno
            let reason = cause == 0 ? "MHD_start_daemon failed" : "MHD_start_daemon: " + String(cString: strerror(cause))
            throw ListenError(reason: "cannot listen on \(host):\(port) (\(reason)); choose a free port, or 0 for any")
        }
        daemon = started
        unixSocket = nil
        let bound = Int(CKeyBridgeShims_MHD_get_daemon_info_bind_port(started))
        self.port = bound == 0 ? port : bound
    }

    /// Starts listening on a Unix socket at `path`, made with permissions `mode` (for example
    /// 0o660: the owner and the group may connect). A socket file left by a broker that is gone
    /// is replaced; a live one (something answers on it) or any other kind of file is refused.
    package init(unixSocket path: String, mode: mode_t, threading: Threading, timeoutSeconds: UInt32,
                 context: UnsafeMutableRawPointer,
                 access: MHD_AccessHandlerCallback, completed: MHD_RequestCompletedCallback,
                 uriLog: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, OpaquePointer?) -> UnsafeMutableRawPointer?) throws(ListenError) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !pathBytes.isEmpty, pathBytes.count < capacity, !pathBytes.contains(0) else {
            throw ListenError(reason: "the Unix socket path must be 1 to \(capacity - 1) bytes long; '\(path.prefix(60))' is not")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: pathBytes)
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + pathBytes.count + 1)
        func withAddress<Result>(_ body: (UnsafePointer<sockaddr>) -> Result) -> Result {
            withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
        }

        var existing = stat()
        if lstat(path, &existing) == 0 {
            guard existing.st_mode & S_IFMT == S_IFSOCK else {
                throw ListenError(reason: "\(path) exists and is not a socket; remove it or choose another path for \"listen\"")
            }
            // Stale when nothing accepts on it; a live one belongs to a running broker.
            let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            let answered = probe >= 0 && withAddress { connect(probe, $0, length) } == 0
            if probe >= 0 { close(probe) }
            guard !answered else {
                throw ListenError(reason: "another process is listening on \(path); stop it or choose another path")
            }
            guard unlink(path) == 0 || errno == ENOENT else {
                throw ListenError(reason: "cannot remove the stale socket \(path) (\(String(cString: strerror(errno))))")
            }
        }
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw ListenError(reason: "cannot make a Unix socket (\(String(cString: strerror(errno))))") }
        guard withAddress({ bind(descriptor, $0, length) }) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw ListenError(reason: "cannot listen on \(path) (\(reason)); check that its folder exists and is writable")
        }
        // The mode is set before listen(): until then nobody can connect, whatever the umask gave.
        var made = stat()
        guard chmod(path, mode) == 0, stat(path, &made) == 0, listen(descriptor, 128) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            unlink(path)
            throw ListenError(reason: "cannot set up the socket \(path) (\(reason))")
        }
        guard let started = CKeyBridgeShims_MHD_start_daemon_on_socket(
            MicroHTTPDaemon.flags(threading), access, context, completed, nil, uriLog, context, descriptor, 256 * 1024, timeoutSeconds) else {
            close(descriptor)
            unlink(path)
            throw ListenError(reason: "cannot listen on \(path) (MHD_start_daemon failed)")
        }
        daemon = started
        unixSocket = (path, UInt64(made.st_dev), UInt64(made.st_ino))
        port = 0
    }

    /// MHD_USE_ITC lets `quiesce()` stop the accepting while connections carry on.
    private static func flags(_ threading: Threading) -> UInt32 {
        threading == .single ? MHD_USE_AUTO_INTERNAL_THREAD.rawValue | MHD_USE_ITC.rawValue
            : MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_THREAD_PER_CONNECTION.rawValue | MHD_USE_ITC.rawValue
    }

    /// Stops accepting connections (the port or socket is closed at once, so a new caller is
    /// refused) while the open connections keep being served, for a graceful stop.
    package func quiesce() {
        lock.withLock {
            guard !stopped, !quiesced else { return }
            quiesced = true
            let descriptor = MHD_quiesce_daemon(daemon)
            if descriptor >= 0 { close(descriptor) }
            removeSocketFile()
        }
    }

    /// Removes the Unix socket file if it is still the one this daemon made.
    private func removeSocketFile() {
        guard let unixSocket else { return }
        var current = stat()
        if lstat(unixSocket.path, &current) == 0, UInt64(current.st_dev) == unixSocket.device, UInt64(current.st_ino) == unixSocket.inode {
            unlink(unixSocket.path)
        }
    }

    /// Stops listening and waits for the daemon's threads. Returns true only for the call that
    /// stopped it, so the caller frees its callback context exactly once.
    @discardableResult
    package func stop() -> Bool {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        if first {
            MHD_stop_daemon(daemon)
            lock.withLock { removeSocketFile() }
        }
        return first
    }

    deinit { stop() }
}

package import CKeyBridgeShims
internal import CMicroHTTPD
import Foundation

/// A libmicrohttpd daemon listening on one IP address: the part the mock bank and the broker
/// share. Each keeps its own request callbacks and the context they read.
package final class MicroHTTPDaemon: @unchecked Sendable {
    // Owns one MHD_Daemon; `stop()` is the only mutation and runs once under `lock`.
    private let daemon: OpaquePointer
    private let lock = NSLock()
    private var stopped = false

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
    /// free port). `uriLog` sees each raw request target first and returns the request's state.
    package init(host: String, port: Int, threading: Threading, timeoutSeconds: UInt32,
                 context: UnsafeMutableRawPointer,
                 access: MHD_AccessHandlerCallback, completed: MHD_RequestCompletedCallback,
                 uriLog: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, OpaquePointer?) -> UnsafeMutableRawPointer?) throws(ListenError) {
        guard (0...65_535).contains(port) else { throw ListenError(reason: "the port \(port) is not between 0 and 65535") }
        let address = host == "localhost" ? "127.0.0.1" : host
        // No MHD_USE_ERROR_LOG: MHD would print its own line beside the caller's one-line error.
        var flags = threading == .single ? MHD_USE_AUTO_INTERNAL_THREAD.rawValue
            : MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_THREAD_PER_CONNECTION.rawValue
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
                    flags, UInt16(port), access, context, completed, nil, uriLog, nil,
                    bytes.baseAddress?.assumingMemoryBound(to: sockaddr.self), 256 * 1024, timeoutSeconds)
            }
        }
        guard let started else {
            let cause = errno
            let reason = cause == 0 ? "MHD_start_daemon failed" : "MHD_start_daemon: " + String(cString: strerror(cause))
            throw ListenError(reason: "cannot listen on \(host):\(port) (\(reason)); choose a free port, or 0 for any")
        }
        daemon = started
        let bound = Int(CKeyBridgeShims_MHD_get_daemon_info_bind_port(started))
        self.port = bound == 0 ? port : bound
    }

    /// Stops listening and waits for the daemon's threads. Returns true only for the call that
    /// stopped it, so the caller frees its callback context exactly once.
    @discardableResult
    package func stop() -> Bool {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        if first { MHD_stop_daemon(daemon) }
        return first
    }

    deinit { stop() }
}

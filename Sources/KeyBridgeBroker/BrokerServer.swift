internal import CKeyBridgeShims
internal import CMicroHTTPD
import Foundation
import MicroHTTPListener

/// The broker's HTTP/1.1 listener on libmicrohttpd, on a TCP address or a Unix socket, one
/// thread per connection so that a slow bank holds up only its own callers.
///
/// The broker it serves can be replaced while it runs (`replace`, for a configuration reload):
/// each request keeps the broker it started with. `shutdown` stops gracefully.
public final class BrokerServer: @unchecked Sendable {
    // The daemon and the context its callbacks read (retained until the daemon has stopped);
    // both are immutable here, and the context guards its own state.
    private let daemon: MicroHTTPDaemon
    private let context: Unmanaged<BrokerServerContext>

    /// The address listened on: an IP address, or "unix:PATH".
    public let host: String
    /// The port listened on (the one the system chose when 0 was asked for); 0 on a Unix socket.
    public let port: Int

    /// Listens on `host` and `port` (0: any free port).
    public convenience init(broker: Broker, host: String, port: Int) throws(BrokerError) {
        try self.init(broker: broker, listen: .tcp(host: host, port: port))
    }

    public init(broker: Broker, listen: BrokerConfiguration.ListenAddress) throws(BrokerError) {
        let context = Unmanaged.passRetained(BrokerServerContext(broker: broker))
        do {
            switch listen {
            case let .tcp(host, port):
                daemon = try MicroHTTPDaemon(host: host, port: port, threading: .perConnection, timeoutSeconds: 120,
                                             context: context.toOpaque(), access: brokerAccess, completed: brokerCompleted,
                                             uriLog: brokerStarted)
                self.host = host
            case let .unix(path, mode):
                daemon = try MicroHTTPDaemon(unixSocket: path, mode: mode_t(mode), threading: .perConnection, timeoutSeconds: 120,
                                             context: context.toOpaque(), access: brokerAccess, completed: brokerCompleted,
                                             uriLog: brokerStarted)
                self.host = "unix:" + path
            }
        } catch {
            context.release()
            throw BrokerError(error.reason)
        }
        self.context = context
        self.port = daemon.port
    }

    /// The broker now answering new requests.
    public var broker: Broker { context.takeUnretainedValue().current }

    /// Answers new requests with `broker`; requests already running finish with the old one.
    public func replace(_ broker: Broker) {
        context.takeUnretainedValue().replace(broker)
    }

    /// Requests received and not yet answered.
    public var requestsInFlight: Int { context.takeUnretainedValue().inFlight }

    /// Stops accepting connections: the port or socket is closed, new callers are refused, and
    /// the connections already open are still served. The first step of `shutdown`.
    public func stopAccepting() {
        daemon.quiesce()
    }

    /// Graceful stop: stops accepting at once (new callers are refused), lets the requests in
    /// flight finish for up to `graceSeconds`, then closes every connection. Returns how many
    /// requests were still running when the grace period ended (0 when all finished).
    @discardableResult
    public func shutdown(graceSeconds: Double) -> Int {
        daemon.quiesce()
        let deadline = ProcessInfo.processInfo.systemUptime + graceSeconds
        var running = requestsInFlight
        while running > 0 && ProcessInfo.processInfo.systemUptime < deadline {
            Thread.sleep(forTimeInterval: 0.02)
            running = requestsInFlight
        }
        stop()
        return running
    }

    /// Stops listening and closes every connection at once; later calls do nothing.
    public func stop() {
        if daemon.stop() { context.release() }
    }

    deinit { stop() }
}

/// What the callbacks share: the current broker (replaced on reload) and the in-flight count.
private final class BrokerServerContext: @unchecked Sendable {
    // `broker` and `running` are guarded by `lock`.
    private let lock = NSLock()
    private var broker: Broker
    private var running = 0

    init(broker: Broker) { self.broker = broker }

    var current: Broker { lock.withLock { broker } }
    var inFlight: Int { lock.withLock { running } }

    func replace(_ broker: Broker) { lock.withLock { self.broker = broker } }

    /// The broker for a new request, counted as in flight until `finished`.
    func started() -> Broker {
        let broker = lock.withLock { () -> Broker in
            running += 1
            return self.broker
        }
        broker.metrics.requestStarted()
        return broker
    }

    func finished(_ broker: Broker) {
        lock.withLock { running -= 1 }
        broker.metrics.requestFinished()
    }
}

/// One request between its request line and its completion; MHD hands it to one thread at a time.
private final class BrokerPending {
    let target: String
    /// The broker that answers this request, even if the configuration is reloaded meanwhile.
    let broker: Broker
    private let server: BrokerServerContext
    var method = ""
    var headers: [(name: String, value: String)] = []
    var body = Data()
    var headersRead = false
    var tooLarge = false

    init(target: String, server: BrokerServerContext) {
        self.target = target
        self.server = server
        broker = server.started()
    }

    deinit { server.finished(broker) }
}

private final class BrokerHeaderCollector {
    var headers: [(name: String, value: String)] = []
}

private func brokerStarted(_ context: UnsafeMutableRawPointer?, _ uri: UnsafePointer<CChar>?,
                           _ connection: OpaquePointer?) -> UnsafeMutableRawPointer? {
    guard let context else { return nil }
    let server = Unmanaged<BrokerServerContext>.fromOpaque(context).takeUnretainedValue()
    return Unmanaged.passRetained(BrokerPending(target: uri.map { String(cString: $0) } ?? "/", server: server)).toOpaque()
}

private func brokerAccess(_ context: UnsafeMutableRawPointer?, _ connection: OpaquePointer?, _ url: UnsafePointer<CChar>?,
                          _ method: UnsafePointer<CChar>?, _ version: UnsafePointer<CChar>?, _ uploadData: UnsafePointer<CChar>?,
                          _ uploadDataSize: UnsafeMutablePointer<Int>?,
                          _ requestContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> MHD_Result {
    guard let context, let connection, let uploadDataSize, let requestContext else { return .NO }
    let server = Unmanaged<BrokerServerContext>.fromOpaque(context).takeUnretainedValue()
    let pending: BrokerPending
    if let existing = requestContext.pointee {
        pending = Unmanaged<BrokerPending>.fromOpaque(existing).takeUnretainedValue()
    } else {
        pending = BrokerPending(target: url.map { String(cString: $0) } ?? "/", server: server)
        requestContext.pointee = Unmanaged.passRetained(pending).toOpaque()
    }
    let broker = pending.broker
    let limit = broker.configuration.bodyLimit

    if !pending.headersRead {
        pending.headersRead = true
        pending.method = method.map { String(cString: $0) } ?? "GET"
        let collector = BrokerHeaderCollector()
        withExtendedLifetime(collector) {
            _ = MHD_get_connection_values(connection, .HEADER_KIND, brokerCollectHeader, Unmanaged.passUnretained(collector).toOpaque())
        }
        pending.headers = collector.headers
        let declared = pending.headers.first { $0.name.lowercased() == "content-length" }
            .flatMap { Int($0.value.trimmingCharacters(in: .whitespaces)) }
        if let declared, declared > limit {
            // Answered before the body is read: MHD skips "100 Continue" and closes afterwards.
            pending.tooLarge = true
            return brokerAnswer(broker.handle(BrokerRequest(method: pending.method, target: pending.target, headers: pending.headers),
                                              bodyTooLarge: true), on: connection)
        }
        return .YES
    }

    if uploadDataSize.pointee > 0 {
        if !pending.tooLarge, let uploadData {
            if pending.body.count + uploadDataSize.pointee > limit {
                pending.tooLarge = true
                pending.body = Data()
            } else {
                pending.body.append(UnsafeRawPointer(uploadData).assumingMemoryBound(to: UInt8.self), count: uploadDataSize.pointee)
            }
        }
        uploadDataSize.pointee = 0
        return .YES
    }

    let response = broker.handle(BrokerRequest(method: pending.method, target: pending.target, headers: pending.headers, body: pending.body),
                                 bodyTooLarge: pending.tooLarge)
    return brokerAnswer(response, on: connection)
}

private func brokerCompleted(_ context: UnsafeMutableRawPointer?, _ connection: OpaquePointer?,
                             _ requestContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                             _ termination: MHD_RequestTerminationCode) {
    guard let requestContext, let pointer = requestContext.pointee else { return }
    Unmanaged<BrokerPending>.fromOpaque(pointer).release()
    requestContext.pointee = nil
}

private func brokerCollectHeader(_ context: UnsafeMutableRawPointer?, _ kind: MHD_ValueKind, _ key: UnsafePointer<CChar>?,
                                 _ value: UnsafePointer<CChar>?) -> MHD_Result {
    guard let context, let key else { return .YES }
    let collector = Unmanaged<BrokerHeaderCollector>.fromOpaque(context).takeUnretainedValue()
    collector.headers.append((name: String(cString: key), value: value.map { String(cString: $0) } ?? ""))
    return .YES
}

private func brokerAnswer(_ response: BrokerResponse, on connection: OpaquePointer) -> MHD_Result {
    var body = response.body
    let created: OpaquePointer? = body.withUnsafeMutableBytes { bytes in
        MHD_create_response_from_buffer(bytes.count, bytes.baseAddress, .RESPMEM_MUST_COPY)
    }
    guard let created else { return .NO }
    defer { MHD_destroy_response(created) }
    for header in response.headers where BrokerHTTP.isToken(header.name) && BrokerHTTP.isFieldValue(header.value) {
        _ = MHD_add_response_header(created, header.name, header.value)
    }
    return MHD_queue_response(connection, UInt32(response.status), created)
}

internal import CKeyBridgeShims
internal import CMicroHTTPD
import Foundation
import MicroHTTPListener

/// The broker's HTTP/1.1 listener on libmicrohttpd, one thread per connection so that a slow
/// bank holds up only its own callers.
public final class BrokerServer: @unchecked Sendable {
    // The daemon and the context its callbacks read (retained until the daemon has stopped);
    // both are immutable here.
    private let daemon: MicroHTTPDaemon
    private let context: Unmanaged<BrokerServerContext>

    public let host: String
    /// The port listened on (the one the system chose when 0 was asked for).
    public let port: Int

    public init(broker: Broker, host: String, port: Int) throws(BrokerError) {
        let context = Unmanaged.passRetained(BrokerServerContext(broker: broker))
        do {
            daemon = try MicroHTTPDaemon(host: host, port: port, threading: .perConnection, timeoutSeconds: 120,
                                         context: context.toOpaque(), access: brokerAccess, completed: brokerCompleted,
                                         uriLog: brokerStarted)
        } catch {
            context.release()
            throw BrokerError(error.reason)
        }
        self.context = context
        self.host = host
        self.port = daemon.port
    }

    /// Stops listening and waits for the connection threads; later calls do nothing.
    public func stop() {
        if daemon.stop() { context.release() }
    }

    deinit { stop() }
}

private final class BrokerServerContext: Sendable {
    let broker: Broker
    init(broker: Broker) { self.broker = broker }
}

/// One request between its request line and its completion; MHD hands it to one thread at a time.
private final class BrokerPending {
    let target: String
    var method = ""
    var headers: [(name: String, value: String)] = []
    var body = Data()
    var headersRead = false
    var tooLarge = false

    init(target: String) { self.target = target }
}

private final class BrokerHeaderCollector {
    var headers: [(name: String, value: String)] = []
}

private func brokerStarted(_ context: UnsafeMutableRawPointer?, _ uri: UnsafePointer<CChar>?,
                           _ connection: OpaquePointer?) -> UnsafeMutableRawPointer? {
    Unmanaged.passRetained(BrokerPending(target: uri.map { String(cString: $0) } ?? "/")).toOpaque()
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
        pending = BrokerPending(target: url.map { String(cString: $0) } ?? "/")
        requestContext.pointee = Unmanaged.passRetained(pending).toOpaque()
    }
    let limit = server.broker.configuration.bodyLimit

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
            return brokerAnswer(server.broker.payloadTooLarge(), on: connection)
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

    let response = pending.tooLarge
        ? server.broker.payloadTooLarge()
        : server.broker.handle(BrokerRequest(method: pending.method, target: pending.target, headers: pending.headers, body: pending.body))
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

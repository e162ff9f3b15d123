internal import CKeyBridgeShims
internal import CMicroHTTPD
import Foundation
import MicroHTTPListener

/// The mock bank on plain HTTP/1.1 (libmicrohttpd), meant to sit behind nginx, which terminates
/// mTLS and passes the client certificate on. Requests are handled on libmicrohttpd's own thread.
public final class MockBankServer: @unchecked Sendable {
    // The daemon and the context its callbacks read (retained until the daemon has stopped);
    // both are immutable here, and the context is Sendable.
    private let daemon: MicroHTTPDaemon
    private let context: Unmanaged<ServerContext>

    /// The address listened on, as given.
    public let host: String
    /// The port listened on (the one the system chose when 0 was asked for).
    public let port: Int

    /// Writes each log line to standard error.
    public static let standardErrorLog: @Sendable (String) -> Void = { line in
        try? FileHandle.standardError.write(contentsOf: Data((line + "\n").utf8))
    }

    /// Starts listening on `host` (an IPv4 or IPv6 address, or `localhost`) and `port` (0: any free port).
    /// - Parameter log: called with one line per request, on the server's thread.
    /// - Parameter requestLog: called with one JSON line per answered request:
    ///   `{"requestId":…,"method":…,"target":…,"status":…}` (`requestId` is the X-Request-ID
    ///   received, or null), so a test can count what reached the bank.
    public init(bank: MockBank, host: String = "127.0.0.1", port: Int = 0,
                log: @escaping @Sendable (String) -> Void = MockBankServer.standardErrorLog,
                requestLog: (@Sendable (String) -> Void)? = nil) throws(MockBankError) {
        let context = Unmanaged.passRetained(ServerContext(bank: bank, log: log, requestLog: requestLog))
        do {
            daemon = try MicroHTTPDaemon(host: host, port: port, threading: .single, timeoutSeconds: 60,
                                         context: context.toOpaque(), access: handleAccess, completed: requestCompleted,
                                         uriLog: requestStarted)
        } catch {
            context.release()
            throw MockBankError(error.reason)
        }
        self.context = context
        self.host = host
        self.port = daemon.port
    }

    /// Stops listening and waits for the server's thread; later calls do nothing.
    public func stop() {
        if daemon.stop() { context.release() }
    }

    deinit { stop() }
}

/// What the callbacks need, shared by every request of one server.
private final class ServerContext: Sendable {
    let bank: MockBank
    let log: @Sendable (String) -> Void
    let requestLog: (@Sendable (String) -> Void)?

    init(bank: MockBank, log: @escaping @Sendable (String) -> Void, requestLog: (@Sendable (String) -> Void)?) {
        self.bank = bank
        self.log = log
        self.requestLog = requestLog
    }
}

/// One request between its request line and its completion. MHD keeps it in `con_cls`, retained,
/// and only ever hands it to one thread at a time.
private final class PendingRequest {
    /// The request target as sent, before MHD unescapes it.
    let target: String
    var method = ""
    var headers: [(name: String, value: String)] = []
    var body = Data()
    var headersRead = false
    var tooLarge = false

    init(target: String) { self.target = target }

    var request: MockBankRequest { MockBankRequest(method: method, target: target, headers: headers, body: body) }
}

/// Collects header lines for `MHD_get_connection_values`.
private final class HeaderCollector {
    var headers: [(name: String, value: String)] = []
}

// MARK: - libmicrohttpd callbacks

/// `MHD_OPTION_URI_LOG_CALLBACK`: called with the raw request target before MHD unescapes it; the
/// result becomes the request's `con_cls`, released in `requestCompleted`.
private func requestStarted(_ context: UnsafeMutableRawPointer?, _ uri: UnsafePointer<CChar>?,
                            _ connection: OpaquePointer?) -> UnsafeMutableRawPointer? {
    let pending = PendingRequest(target: uri.map { String(cString: $0) } ?? "/")
    return Unmanaged.passRetained(pending).toOpaque()
}

/// `MHD_AccessHandlerCallback`: first call after the headers, then once per body chunk, then once
/// with `*upload_data_size == 0`, when the answer is queued.
private func handleAccess(_ context: UnsafeMutableRawPointer?, _ connection: OpaquePointer?, _ url: UnsafePointer<CChar>?,
                          _ method: UnsafePointer<CChar>?, _ version: UnsafePointer<CChar>?, _ uploadData: UnsafePointer<CChar>?,
                          _ uploadDataSize: UnsafeMutablePointer<Int>?,
                          _ requestContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> MHD_Result {
    guard let context, let connection, let uploadDataSize, let requestContext else { return .NO }
    let server = Unmanaged<ServerContext>.fromOpaque(context).takeUnretainedValue()
    let pending: PendingRequest
    if let existing = requestContext.pointee {
        pending = Unmanaged<PendingRequest>.fromOpaque(existing).takeUnretainedValue()
    } else {
        // Without the URI callback's object, the unescaped path is the best there is.
        pending = PendingRequest(target: url.map { String(cString: $0) } ?? "/")
        requestContext.pointee = Unmanaged.passRetained(pending).toOpaque()
    }
    let limit = server.bank.configuration.maximumBodySize

    if !pending.headersRead {
        pending.headersRead = true
        pending.method = method.map { String(cString: $0) } ?? "GET"
        let collector = HeaderCollector()
        withExtendedLifetime(collector) {
            _ = MHD_get_connection_values(connection, .HEADER_KIND, collectHeader, Unmanaged.passUnretained(collector).toOpaque())
        }
        pending.headers = collector.headers
        let declared = pending.request.header("Content-Length").flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        if let declared, declared > limit {
            // Answered before the body is read: MHD skips "100 Continue" and closes afterwards.
            pending.tooLarge = true
            return answer(server.bank.payloadTooLarge(pending.request), to: pending.request, on: connection, server: server)
        }
        return .YES
    }

    if uploadDataSize.pointee > 0 {
        if !pending.tooLarge, let uploadData {
            if pending.body.count + uploadDataSize.pointee > limit {
                // A chunked body that grew too large: drop it, read on, answer 413 at the end.
                pending.tooLarge = true
                pending.body = Data()
            } else {
                pending.body.append(UnsafeRawPointer(uploadData).assumingMemoryBound(to: UInt8.self), count: uploadDataSize.pointee)
            }
        }
        uploadDataSize.pointee = 0
        return .YES
    }

    let response = pending.tooLarge ? server.bank.payloadTooLarge(pending.request) : server.bank.respond(to: pending.request)
    return answer(response, to: pending.request, on: connection, server: server)
}

/// `MHD_RequestCompletedCallback`: releases the request's object, however the request ended.
private func requestCompleted(_ context: UnsafeMutableRawPointer?, _ connection: OpaquePointer?,
                              _ requestContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                              _ termination: MHD_RequestTerminationCode) {
    guard let requestContext, let pointer = requestContext.pointee else { return }
    Unmanaged<PendingRequest>.fromOpaque(pointer).release()
    requestContext.pointee = nil
}

/// `MHD_KeyValueIterator` for `MHD_get_connection_values`: appends one header line.
private func collectHeader(_ context: UnsafeMutableRawPointer?, _ kind: MHD_ValueKind, _ key: UnsafePointer<CChar>?,
                           _ value: UnsafePointer<CChar>?) -> MHD_Result {
    guard let context, let key else { return .YES }
    let collector = Unmanaged<HeaderCollector>.fromOpaque(context).takeUnretainedValue()
    collector.headers.append((name: String(cString: key), value: value.map { String(cString: $0) } ?? ""))
    return .YES
}

/// Logs the answer and queues it; MHD copies the body.
private func answer(_ response: MockBankResponse, to request: MockBankRequest, on connection: OpaquePointer,
                    server: ServerContext) -> MHD_Result {
    server.log(response.logLine)
    if let requestLog = server.requestLog {
        let record: [String: Any] = [
            "requestId": request.header("X-Request-ID").map { $0 as Any } ?? NSNull(), "method": request.method,
            "target": String(request.target.prefix(300)), "status": response.status,
        ]
        if let data = try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes]) {
            requestLog(String(decoding: data, as: UTF8.self))
        }
    }
    var body = response.body
    let created: OpaquePointer? = body.withUnsafeMutableBytes { bytes in
        MHD_create_response_from_buffer(bytes.count, bytes.baseAddress, .RESPMEM_MUST_COPY)
    }
    guard let created else { return .NO }
    defer { MHD_destroy_response(created) }
    for header in response.headers {
        _ = MHD_add_response_header(created, header.name, header.value)
    }
    return MHD_queue_response(connection, UInt32(response.status), created)
}

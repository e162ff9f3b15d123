import Foundation
import Glibc
import KeyBridgeTestSupport
import XCTest

/// The upstream for the broker tests that need the PSD2 sandbox or TLS session resumption: an
/// nginx of its own (the shared test bank turns session caching off and speaks only HTTP/1.1)
/// in front of `keybridge mock-bank --request-log`.
///
/// nginx has two listeners with the same locations: `http1Port` (HTTP/1.1) and `http2Port`
/// (`listen … ssl http2`, HTTP/2 by ALPN). Both require the client certificate, keep a session
/// cache and issue session tickets, and close a connection after 50 requests
/// (`keepalive_requests`), so a long run needs new connections, which should resume.
/// Locations: `/` answers JSON about the connection; `/psd2/` goes to the mock bank; `/slow`
/// answers after 1.5 s (echo module).
/// The access log has one line per request: `port connection reused protocol status "x-request-id"`.
final class BrokerSandbox: Sendable {
    let folder: String
    let http1Port: Int
    let http2Port: Int
    let mockPort: Int
    let requestLogPath: String
    let accessLogPath: String

    nonisolated(unsafe) private static var cleanup: (nginxPID: String, mock: Int32)?

    static let shared: BrokerSandbox = {
        do {
            return try BrokerSandbox()
        } catch {
            fatalError("cannot start the broker sandbox: \(error)")
        }
    }()

    private init() throws {
        let token = TestToken.shared
        folder = try Command.temporaryDirectory()
        requestLogPath = folder + "/mock-requests.jsonl"
        accessLogPath = folder + "/access.log"
        for sub in ["tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"] {
            try FileManager.default.createDirectory(atPath: folder + "/" + sub, withIntermediateDirectories: true)
        }

        // The mock bank, with its request log.
        let mock = Process()
        mock.executableURL = URL(fileURLWithPath: KeyBridgeExecutable.path)
        mock.arguments = ["mock-bank", "--listen", "127.0.0.1:0", "--qwac-ca", token.pki("issuing-ca.pem"),
                          "--qsealc-ca", token.pki("issuing-ca.pem"), "--request-log", requestLogPath]
        let output = Pipe()
        mock.standardOutput = output
        mock.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try mock.run()
        var text = Data()
        while !text.contains(0x0A) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text.append(chunk)
        }
        guard let port = Int(String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandError(message: "keybridge mock-bank printed no port")
        }
        mockPort = port
        BrokerSandbox.cleanup = ("", mock.processIdentifier)
        atexit {
            guard let cleanup = BrokerSandbox.cleanup else { return }
            kill(cleanup.mock, SIGTERM)
            if let pid = Int32(cleanup.nginxPID) { kill(pid, SIGTERM) }
        }

        // nginx on two free ports (chosen by the system, then released for nginx).
        var started: (Int, Int)?
        for _ in 0..<5 {
            let ports = (try BrokerSandbox.freePort(), try BrokerSandbox.freePort())
            guard ports.0 != ports.1 else { continue }
            try BrokerSandbox.writeConfiguration(folder: folder, token: token, mockPort: port, http1: ports.0, http2: ports.1)
            // In the foreground ("daemon off"), as a child of this process: Foundation's
            // Process would wait for a daemonised nginx's lifetime (it inherits the exit pipe).
            let startLog = folder + "/start.log"
            XCTAssertTrue(FileManager.default.createFile(atPath: startLog, contents: nil))
            let nginx = Process()
            nginx.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
            nginx.arguments = ["-q", "-p", folder + "/", "-c", folder + "/nginx.conf", "-e", folder + "/error.log"]
            nginx.standardInput = FileHandle(forReadingAtPath: "/dev/null")
            nginx.standardOutput = FileHandle(forWritingAtPath: startLog)
            nginx.standardError = FileHandle(forWritingAtPath: startLog)
            try nginx.run()
            BrokerSandbox.cleanup = (String(nginx.processIdentifier), mock.processIdentifier)
            let deadline = Date().addingTimeInterval(10)
            while nginx.isRunning && Date() < deadline && !(BrokerSandbox.listening(ports.0) && BrokerSandbox.listening(ports.1)) {
                Thread.sleep(forTimeInterval: 0.05)
            }
            if nginx.isRunning {
                started = ports
                break
            }
            let complaint = ((try? String(contentsOfFile: startLog, encoding: .utf8)) ?? "")
                + ((try? String(contentsOfFile: folder + "/error.log", encoding: .utf8)) ?? "")
            guard complaint.contains("Address already in use") else {
                throw CommandError(message: "nginx did not start: \(complaint)")
            }
        }
        guard let started else { throw CommandError(message: "nginx found no free ports") }
        (http1Port, http2Port) = started
    }

    private static func listening(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0
            }
        }
        guard bound else { throw CommandError(message: "cannot find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func writeConfiguration(folder: String, token: TestToken, mockPort: Int, http1: Int, http2: Int) throws {
        let accessLogPath = folder + "/access.log"
        let echo = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
        let locations = """
                location / {
                    return 200 '{"protocol":"$server_protocol","tls":"$ssl_protocol","reused":"$ssl_session_reused","verify":"$ssl_client_verify","method":"$request_method","uri":"$request_uri"}\\n';
                }
                location /psd2/ {
                    proxy_pass http://127.0.0.1:\(mockPort);
                    proxy_http_version 1.1;
                    proxy_set_header Host $host:$server_port;
                    proxy_set_header Connection "";
                    proxy_set_header X-Forwarded-Proto https;
                    proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
                    proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
                }
                location = /slow {
                    echo_sleep 1.5;
                    echo -n '{"slow":"done"}';
                }
        """
        let configuration = """
        \(FileManager.default.fileExists(atPath: echo) ? "load_module \(echo);" : "")
        \(geteuid() == 0 ? "user root;" : "")
        worker_processes 1;
        daemon off;
        master_process on;
        pid \(folder)/nginx.pid;
        error_log \(folder)/error.log info;
        events { worker_connections 512; }
        http {
            log_format sandbox '$server_port $connection $ssl_session_reused $server_protocol $status "$http_x_request_id"';
            access_log \(accessLogPath) sandbox;
            client_body_temp_path \(folder)/tmp/client_body;
            proxy_temp_path \(folder)/tmp/proxy;
            fastcgi_temp_path \(folder)/tmp/fastcgi;
            uwsgi_temp_path \(folder)/tmp/uwsgi;
            scgi_temp_path \(folder)/tmp/scgi;
            default_type application/json;
            ssl_certificate \(token.pki("server.pem"));
            ssl_certificate_key \(token.pki("server-key.pem"));
            ssl_protocols TLSv1.2 TLSv1.3;
            ssl_session_cache shared:sandbox:1m;
            ssl_session_timeout 10m;
            ssl_session_tickets on;
            ssl_verify_client on;
            ssl_client_certificate \(token.pki("root-ca.pem"));
            ssl_verify_depth 3;
            keepalive_requests 50;
            server {
                listen 127.0.0.1:\(http1) ssl;
                server_name localhost;
        \(locations)
            }
            server {
                listen 127.0.0.1:\(http2) ssl http2;
                server_name localhost;
        \(locations)
            }
        }
        """
        try Data(configuration.utf8).write(to: URL(fileURLWithPath: folder + "/nginx.conf"))
    }

    /// The mock bank's request log: one object per answered request.
    func requestLog() -> [[String: Any]] {
        let text = (try? String(contentsOfFile: requestLogPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    /// nginx's access log lines (the format above).
    struct AccessLine {
        var port: Int
        var connection: String
        var reused: Bool
        var protocolName: String
        var status: Int
        var requestID: String
    }

    func accessLog() -> [AccessLine] {
        let text = (try? String(contentsOfFile: accessLogPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 5)
            guard parts.count == 6, let port = Int(parts[0]), let status = Int(parts[4]) else { return nil }
            return AccessLine(port: port, connection: String(parts[1]), reused: parts[2] == "r", protocolName: String(parts[3]),
                              status: status, requestID: String(parts[5].dropFirst().dropLast()))
        }
    }
}

/// A TCP relay in front of an upstream port that drops the next N connections it accepts (closes
/// them at once), then relays bytes both ways: the bank whose first connection is lost.
final class DroppingRelay: @unchecked Sendable {
    // `toDrop`, `accepted` and `open` are guarded by `lock`; the rest is immutable.
    let port: Int
    private let listener: Int32
    private let target: Int
    private let lock = NSLock()
    private var toDrop = 0
    private var accepted = 0
    private var open: [Int32] = []

    init(target: Int) throws {
        self.target = target
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let descriptor = listener
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, length) == 0 && listen(descriptor, 64) == 0 && getsockname(descriptor, $0, &length) == 0
            }
        }
        guard bound else { throw CommandError(message: "cannot bind the relay") }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// Drops the next `count` connections and closes the ones being relayed now.
    func dropNext(_ count: Int) {
        let current = lock.withLock { () -> [Int32] in
            toDrop = count
            defer { open = [] }
            return open
        }
        for descriptor in current { shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    /// Connections accepted so far, dropped ones included.
    var acceptedCount: Int { lock.withLock { accepted } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { continue }
            let drop = lock.withLock { () -> Bool in
                accepted += 1
                guard toDrop > 0 else { return false }
                toDrop -= 1
                return true
            }
            if drop {
                close(client)
                continue
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(target)).bigEndian
            let connected = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                close(client)
                close(upstream)
                continue
            }
            lock.withLock { open += [client, upstream] }
            Thread.detachNewThread { DroppingRelay.pump(from: client, to: upstream) }
            Thread.detachNewThread { DroppingRelay.pump(from: upstream, to: client) }
        }
    }

    private static func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = recv(source, &buffer, buffer.count, 0)
            if count <= 0 { break }
            var sent = 0
            while sent < count {
                let written = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + sent, count - sent, Int32(MSG_NOSIGNAL)) }
                if written <= 0 { break }
                sent += written
            }
            if sent < count { break }
        }
        shutdown(destination, Int32(SHUT_WR))
        shutdown(source, Int32(SHUT_RD))
    }
}

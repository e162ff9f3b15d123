internal import COpenSSL
internal import CKeyBridgeShims
import Foundation
import KeyBridgeTLS
#if canImport(Glibc)
import Glibc
#endif

/// A plain OpenSSL client that makes one full mTLS handshake per connection and one small
/// HTTP request on it. No session is ever offered for resumption.
final class HandshakeClient: @unchecked Sendable {
    // The SSL_CTX is configured once, then only used to make SSL objects (thread-safe in OpenSSL).
    private let context: OpaquePointer
    private let identity: BenchClientIdentity
    private let request: [UInt8]

    init(identity: BenchClientIdentity, version: TLSVersion, rootCA: String, path: String) throws {
        guard let context = SSL_CTX_new(TLS_client_method()) else { throw BenchError("SSL_CTX_new failed") }
        self.context = context
        self.identity = identity
        request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
        let protocolVersion = version == .v1_3 ? TLS1_3_VERSION : TLS1_2_VERSION
        _ = CKeyBridgeShims_SSL_CTX_set_min_proto_version(context, protocolVersion)
        _ = CKeyBridgeShims_SSL_CTX_set_max_proto_version(context, protocolVersion)
        // No tickets and no client-side cache: every connection is a full handshake.
        // SSL_OP_NO_TICKET is SSL_OP_BIT(14), a macro Swift does not import.
        _ = SSL_CTX_set_options(context, UInt64(1) << 14)
        guard SSL_CTX_load_verify_locations(context, rootCA, nil) == 1 else {
            throw BenchError("cannot read \(rootCA): \(OpenSSLErrors.drain())")
        }
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        try identity.install(on: context)
    }

    deinit { SSL_CTX_free(context) }

    /// Connects, handshakes, sends the request and reads the answer to the end; returns it.
    @discardableResult
    func handshake(port: Int) throws -> String {
        let fd = Loopback.connect(port: port)
        guard fd >= 0 else { throw BenchError("cannot connect to 127.0.0.1:\(port)") }
        defer { close(fd) }
        guard let ssl = SSL_new(context) else { throw BenchError("SSL_new failed") }
        defer { SSL_free(ssl) }
        SSL_set_fd(ssl, fd)
        guard SSL_connect(ssl) == 1 else {
            throw BenchError("handshake with 127.0.0.1:\(port) failed (\(identity.keyLocation)): \(OpenSSLErrors.drain())")
        }
        guard SSL_write(ssl, request, Int32(request.count)) == Int32(request.count) else {
            throw BenchError("writing the request failed: \(OpenSSLErrors.drain())")
        }
        var answer = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = SSL_read(ssl, &buffer, Int32(buffer.count))
            if count <= 0 { break }
            answer += buffer.prefix(Int(count))
        }
        // A server that closes without close_notify leaves an error; it is not ours.
        ERR_clear_error()
        let text = String(decoding: answer, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.") else {
            throw BenchError("127.0.0.1:\(port) did not answer after the handshake (\(identity.keyLocation))")
        }
        return text
    }
}

/// A test server of the benchmark's own: `openssl s_server -Verify` on a free port.
final class OpenSSLServer {
    let port: Int
    private let process: Process

    init(directory: String, rootCA: String, logDirectory: String) throws {
        port = try Loopback.freePort()
        process = try ChildProcess.start("/usr/bin/openssl", [
            "s_server", "-accept", "127.0.0.1:\(port)", "-cert", "\(directory)/pki/server.pem",
            "-key", "\(directory)/pki/server-key.pem", "-CAfile", rootCA, "-Verify", "3",
            "-verify_return_error", "-www", "-quiet", "-no_ticket",
        ], output: "\(logDirectory)/s_server.out", errors: "\(logDirectory)/s_server.err")
        let port = port
        guard ChildProcess.waitFor(seconds: 10, { Loopback.isListening(port: port) }) else {
            ChildProcess.stop(process)
            throw BenchError("openssl s_server did not start on port \(port) (see \(logDirectory)/s_server.err)")
        }
    }

    func stop() { ChildProcess.stop(process) }
}

/// Item 2: full mTLS handshakes per second against `openssl s_server` and nginx.
struct HandshakeBench {
    let keys: BenchKeys
    let settings: BenchSettings
    let servers: [(name: String, port: Int, path: String)]

    func run(id: String, title: String, signatureRates: [SignatureCase: SignatureBench.Rates]) -> BenchSection {
        var section = BenchSection(id: id, title: title)
        section.notes.append("Sequential full handshakes (no tickets, no resumption) from one thread, each followed by one GET on the connection; columns alternate per round, \(settings.handshakeRounds) rounds of \(settings.handshakeSeconds) s; median handshakes/s. The server runs on the same 2 cores. token: KeyBridge provider (\(keys.moduleDescription)); file: the same key from its PEM file; engine: libp11's engine on the token key. The client identity is loaded and installed as HTTPClient does it (BenchClientIdentity).")
        section.notes.append("token sig/s: the token's raw C_Sign rate for the scheme the client signs with (PSS for RSA, also in TLS 1.2 where OpenSSL prefers rsa_pss_rsae), from item 1. token-bound: the token/file ratio that a provider adding no time at all would reach, 1 / (1 + (1/token sig/s − 1/file sig/s) × file/s), with the raw and file signature rates of item 1; token/file close to it means the gap is the token's own signing time.")
        for server in servers {
            for version in [TLSVersion.v1_3, .v1_2] {
                for kind in KeyKind.allCases {
                    let label = "\(server.name) TLS \(version.rawValue) \(kind.label)"
                    do {
                        var variants: [(name: String, body: () throws -> Void)] = []
                        for source in KeySource.allCases {
                            let identity: BenchClientIdentity
                            do {
                                identity = try keys.identity(kind, source)
                            } catch where source == .engine {
                                section.notes.append("\(label): no engine column: \(error)")
                                continue
                            }
                            let client = try HandshakeClient(identity: identity, version: version, rootCA: keys.rootCA, path: server.path)
                            // One checked handshake first: the server must have accepted the client certificate.
                            let answer = try client.handshake(port: server.port)
                            if server.name == "nginx", !answer.contains("\"verify\":\"SUCCESS\"") {
                                throw BenchError("nginx did not verify the \(source.rawValue) client certificate: \(answer.prefix(200))")
                            }
                            variants.append((source.rawValue, { try client.handshake(port: server.port) }))
                        }
                        let rates = try Timing.interleaved(rounds: settings.handshakeRounds, seconds: settings.handshakeSeconds, variants)
                        let signature = kind == .rsa ? signatureRates[.rsaPSS] : signatureRates[.ecdsa]
                        let isTarget = version == .v1_3 && kind == .rsa
                        // The token/file ratio a provider with no overhead at all would reach: the
                        // file-key handshake time plus the extra time the token takes per signature.
                        var bound = Double.nan
                        if let fileRate = BenchStatistics.median(rates["file"] ?? []), let tokenSign = signature?.raw, let fileSign = signature?.file {
                            let fileTime = 1 / fileRate
                            bound = fileTime / (fileTime + 1 / tokenSign - 1 / fileSign)
                        }
                        section.rows.append(BenchRow(label, [
                            BenchFigure("token/s", BenchStatistics.median(rates["token"] ?? [])),
                            BenchFigure("file/s", BenchStatistics.median(rates["file"] ?? [])),
                            BenchFigure("engine/s", BenchStatistics.median(rates["engine"] ?? [])),
                            BenchFigure("token sig/s", signature?.raw),
                        ], ratios: [
                            BenchRatio("token/file", BenchStatistics.medianRatio(rates["token"] ?? [], rates["file"] ?? []) ?? .nan,
                                       target: isTarget ? 0.92 : nil),
                            BenchRatio("token-bound", bound),
                            BenchRatio("token/engine", BenchStatistics.medianRatio(rates["token"] ?? [], rates["engine"] ?? []) ?? .nan),
                        ]))
                    } catch {
                        section.rows.append(BenchRow(label, []))
                        section.notes.append("\(label): not measured: \(error)")
                    }
                }
            }
        }
        return section
    }
}

internal import CCurl
internal import CKeyBridgeShims
internal import COpenSSL
import Foundation
import KeyBridgeProvider
import PKCS11

/// An HTTP request to send over mTLS.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    /// Header lines in order; names are sent as given.
    public var headers: [(name: String, value: String)]
    public var body: Data?

    public init(method: String = "GET", url: String, headers: [(name: String, value: String)] = [], body: Data? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// What the TLS layer negotiated, for `-v` and for tests.
public struct TLSSessionInfo: Sendable, Hashable {
    /// "TLSv1.3" or "TLSv1.2".
    public var version: String
    public var cipher: String
    /// The TLS signature scheme of the client's CertificateVerify, e.g. "rsa_pss_rsae_sha256";
    /// `nil` when the server asked for no client certificate.
    public var clientSignatureScheme: String?
    /// The token mechanism that made that signature, e.g. "CKM_RSA_PKCS_PSS(SHA256, …)".
    public var tokenMechanism: String?
    /// True when the handshake resumed an earlier TLS session: no certificate was sent and the
    /// client key signed nothing.
    public var resumed: Bool = false
}

/// The server's answer.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var statusLine: String
    public var headers: [(name: String, value: String)]
    public var body: Data
    /// The handshake of the connection this transfer opened; `nil` when it reused a kept-alive one.
    public var tls: TLSSessionInfo?
    /// The HTTP version the answer came in: "1.1", "2" (or "1.0").
    public var httpVersion: String = "1.1"
}

/// An HTTP client over libcurl whose client certificate and key are installed into OpenSSL
/// through `CURLOPT_SSL_CTX_FUNCTION`; a token key signs through the KeyBridge provider.
///
/// The client is a connection pool: it keeps up to `maximumConnections` libcurl transfer handles,
/// each with its own kept-alive connection, and lends one to each `send`, so callers on many
/// threads proceed in parallel. The handles share one TLS session cache, so a new connection
/// resumes an earlier session (no certificate, no signature by the client key) when the server
/// allows it. HTTP/2 is used when the server offers it (ALPN) unless `allowsHTTP2` is false.
public final class HTTPClient: @unchecked Sendable {
    // The settings, the idle handles and the count of handles made are guarded by `pool`
    // (an NSCondition: a caller waits on it for a handle when all are lent out). A lent handle is
    // used by one thread only. `share` locks its own data (see CurlShare).
    private let configuration: TLSConfiguration
    private let identity: ClientIdentity?
    private let share: CurlShare
    private let pool = NSCondition()
    private var idle: [PooledTransfer] = []
    private var handlesMade = 0
    private var settings = Settings()

    private struct Settings {
        var connect = 30
        var total = 0
        var bodyLimit = 256 << 20
        var maximumConnections = 8
        var allowsHTTP2 = true
    }

    /// Time limits in seconds.
    public var connectTimeout: Int {
        get { pool.withLock { settings.connect } }
        set { pool.withLock { settings.connect = newValue } }
    }
    /// 0 means no limit.
    public var totalTimeout: Int {
        get { pool.withLock { settings.total } }
        set { pool.withLock { settings.total = newValue } }
    }
    /// Responses are held in memory, so their size is capped (bytes).
    public var maximumResponseSize: Int {
        get { pool.withLock { settings.bodyLimit } }
        set { pool.withLock { settings.bodyLimit = newValue } }
    }
    /// How many connections (transfer handles) the client keeps at most; a `send` beyond that
    /// waits for one to come back (default 8, at least 1).
    public var maximumConnections: Int {
        get { pool.withLock { settings.maximumConnections } }
        set { pool.withLock { settings.maximumConnections = max(1, newValue) } }
    }
    /// Whether HTTP/2 is offered to the server in ALPN (default true); false keeps to HTTP/1.1.
    public var allowsHTTP2: Bool {
        get { pool.withLock { settings.allowsHTTP2 } }
        set { pool.withLock { settings.allowsHTTP2 = newValue } }
    }

    /// Where the key is, for `-v`: "token 'keybridge', object 'client-rsa', id 01".
    public var keyLocation: String? { identity?.keyLocation }
    public var keyIsOnToken: Bool { identity?.onToken ?? false }
    public var clientCertificateSubject: String? { identity?.leafSubject }
    /// How many intermediates are sent after the leaf.
    public var intermediateCount: Int { identity?.intermediates.count ?? 0 }

    /// Loads the identity (logging in to the token if needed) and checks that the certificate
    /// belongs to the key, before any connection is made.
    public init(configuration: TLSConfiguration) throws(KeyBridgeError) {
        self.configuration = configuration
        switch (configuration.certificateChain, configuration.key) {
        case let (chain?, key?):
            do {
                try KeyBridgeProvider.loadInProcess()
            } catch {
                throw KeyBridgeError(.key, "cannot start the KeyBridge OpenSSL provider: \(error)")
            }
            identity = try ClientIdentity(chain: chain, key: key)
        case (nil, nil):
            identity = nil
        case (nil, _?):
            throw KeyBridgeError(.usage, "a key was given without a certificate; add --cert with the client certificate chain")
        case let (chain?, nil):
            // A certificate on a token brings its key: the one on the same token that matches it.
            if case let .pkcs11(text) = chain {
                do {
                    _ = try PKCS11URI(parsing: text)
                } catch {
                    throw KeyBridgeError(.usage, "the certificate URI given to --cert is malformed: \(error.reason)")
                }
            }
            guard let key = chain.tokenKeyReference else {
                throw KeyBridgeError(.usage, "a certificate was given without a key; add --key with a pkcs11: URI")
            }
            do {
                try KeyBridgeProvider.loadInProcess()
            } catch {
                throw KeyBridgeError(.key, "cannot start the KeyBridge OpenSSL provider: \(error)")
            }
            identity = try ClientIdentity(chain: chain, key: key)
        }
        CurlGlobal.initialize()
        share = try CurlShare()
        // One handle now, so a libcurl that cannot make handles fails here, not on the first request.
        idle = [try PooledTransfer(share: share)]
        handlesMade = 1
    }

    deinit {
        // Every handle leaves the share before the share is cleaned up.
        idle.removeAll()
    }

    /// A handle for one transfer: an idle one (the most recently used, whose connection is the
    /// likeliest to be alive), a new one while under the limit, else the next one returned.
    private func checkOut() throws(KeyBridgeError) -> (PooledTransfer, Settings) {
        pool.lock()
        defer { pool.unlock() }
        while true {
            if let transfer = idle.popLast() { return (transfer, settings) }
            if handlesMade < settings.maximumConnections {
                handlesMade += 1
                do {
                    return (try PooledTransfer(share: share), settings)
                } catch {
                    handlesMade -= 1
                    throw error
                }
            }
            pool.wait()
        }
    }

    private func checkIn(_ transfer: PooledTransfer) {
        pool.lock()
        idle.append(transfer)
        pool.signal()
        pool.unlock()
    }

    /// Sends a request and waits for the whole response. Safe to call from many threads at once.
    public func send(_ request: HTTPRequest) throws(KeyBridgeError) -> HTTPResponse {
        try checkVersions()
        if identity != nil, !request.url.lowercased().hasPrefix("https://") {
            throw KeyBridgeError(.usage, "the URL must start with https:// when a client certificate is used; plain http:// (or no scheme) sends none")
        }
        guard HTTPSyntax.isToken(request.method) else {
            throw KeyBridgeError(.usage, "the method is not a valid HTTP method name (letters, digits and !#$%&'*+-.^_`|~ only)")
        }
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for header in request.headers {
            guard HTTPSyntax.isToken(header.name) else {
                throw KeyBridgeError(.usage, "a header name is empty or has characters other than letters, digits and !#$%&'*+-.^_`|~; fix the -H option")
            }
            guard HTTPSyntax.isFieldValue(header.value) else {
                throw KeyBridgeError(.usage, "the value of header \(header.name) contains a line break or another control character; remove it")
            }
            headerList = curl_slist_append(headerList, "\(header.name): \(header.value)")
        }
        // No "Expect: 100-continue" wait before a body: the whole body is in memory anyway.
        headerList = curl_slist_append(headerList, "Expect:")
        let (pooled, limits) = try checkOut()
        defer { checkIn(pooled) }
        let handle = pooled.handle
        let transfer = pooled.state
        curl_easy_reset(handle)
        transfer.reset()
        transfer.bodyLimit = limits.bodyLimit
        transfer.identity = identity
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let code: CURLcode = errorBuffer.withUnsafeMutableBufferPointer { errorPointer in
            configure(handle, request: request, limits: limits, headers: headerList, errorBuffer: errorPointer.baseAddress!)
            let state = Unmanaged.passUnretained(transfer).toOpaque()
            _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, state)
            _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, state)
            _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_SSL_CTX_DATA, state)
            return request.body.map { body in
                body.withUnsafeBytes { bytes in
                    _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_POSTFIELDSIZE, bytes.count)
                    _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress ?? UnsafeRawPointer(errorPointer.baseAddress!)))
                    return curl_easy_perform(handle)
                }
            } ?? curl_easy_perform(handle)
        }
        // The handle must not keep pointers to buffers that die with this call.
        _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, nil)
        _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_HTTPHEADER, nil)
        _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_POSTFIELDS, nil)
        let curlMessage = errorBuffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        guard code == CURLE_OK else {
            throw failure(code: code, message: curlMessage, url: request.url, transfer: transfer)
        }
        var status = 0
        _ = CKeyBridgeShims_curl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        // The handshake info belongs to this transfer only if it opened a connection; a TLS 1.3
        // session ticket arriving on a kept-alive connection is not a handshake.
        var connections = 0
        _ = CKeyBridgeShims_curl_easy_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connections)
        var version = 0
        _ = CKeyBridgeShims_curl_easy_getinfo_long(handle, CURLINFO_HTTP_VERSION, &version)
        let versionName: String
        switch version {
        case CURL_HTTP_VERSION_2_0: versionName = "2"
        case CURL_HTTP_VERSION_1_0: versionName = "1.0"
        case CURL_HTTP_VERSION_3: versionName = "3"
        default: versionName = "1.1"
        }
        return HTTPResponse(status: status, statusLine: transfer.statusLine, headers: transfer.headers,
                            body: transfer.body, tls: connections > 0 ? transfer.session : nil, httpVersion: versionName)
    }

    /// The highest TLS version the key can sign for: an RSA token key without RSA-PSS is held
    /// to TLS 1.2, where PKCS#1 v1.5 signatures are allowed.
    private var effectiveMaximumVersion: TLSVersion {
        identity?.supportsTLS13 == false ? .v1_2 : configuration.maximumVersion
    }

    private func checkVersions() throws(KeyBridgeError) {
        guard configuration.minimumVersion > effectiveMaximumVersion, let identity else { return }
        throw KeyBridgeError(.key, "TLS 1.3 needs an RSA-PSS signature, but the token offers none for \(identity.keyLocation) (no CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS or CKM_RSA_X_509; it has \(identity.tokenMechanisms ?? "none")); allow TLS 1.2 (drop --tlsv1.3) or use a token with RSA-PSS")
    }

    private func configure(_ handle: UnsafeMutableRawPointer, request: HTTPRequest, limits: Settings,
                           headers: UnsafeMutablePointer<curl_slist>?, errorBuffer: UnsafeMutablePointer<CChar>) {
        _ = CKeyBridgeShims_curl_easy_setopt_string(handle, CURLOPT_URL, request.url)
        _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer)
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        // Only HTTPS and HTTP: no file:, ftp: or other surprises from a URL argument.
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_PROTOCOLS, Int(identity == nil ? CURLPROTO_HTTPS | CURLPROTO_HTTP : CURLPROTO_HTTPS))
        _ = CKeyBridgeShims_curl_easy_setopt_string(handle, CURLOPT_DEFAULT_PROTOCOL, "https")
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1)
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2)
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, limits.connect)
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_TIMEOUT, limits.total)
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_HTTP_VERSION,
                                                  limits.allowsHTTP2 ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1)
        // curl_easy_reset keeps the share; set again so a reset that did not is harmless.
        _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_SHARE, share.handle)
        if case let .pemFile(path) = configuration.trustRoots {
            _ = CKeyBridgeShims_curl_easy_setopt_string(handle, CURLOPT_CAINFO, path)
            _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_CAPATH, nil)
        }
        let minimum = configuration.minimumVersion == .v1_3 ? CURL_SSLVERSION_TLSv1_3 : CURL_SSLVERSION_TLSv1_2
        let maximum = effectiveMaximumVersion == .v1_2 ? CURL_SSLVERSION_MAX_TLSv1_2 : CURL_SSLVERSION_MAX_TLSv1_3
        _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_SSLVERSION, minimum | maximum)
        _ = CKeyBridgeShims_curl_easy_setopt_ssl_ctx_function(handle, installIdentity)
        _ = CKeyBridgeShims_curl_easy_setopt_write_function(handle, receiveBody)
        _ = CKeyBridgeShims_curl_easy_setopt_header_function(handle, receiveHeader)
        _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
        let method = request.method.uppercased()
        if method == "HEAD" {
            _ = CKeyBridgeShims_curl_easy_setopt_long(handle, CURLOPT_NOBODY, 1)
        } else if method != "GET" || request.body != nil {
            _ = CKeyBridgeShims_curl_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method == "GET" && request.body != nil ? "POST" : method)
        }
    }

    private func failure(code: CURLcode, message: String, url: String, transfer: TransferState) -> KeyBridgeError {
        if transfer.bodyTooLarge {
            return KeyBridgeError(.tooLarge, "the response from \(hostDescription(url)) is larger than \(transfer.bodyLimit >> 20) MiB, the most KeyBridge holds in memory; stopped reading")
        }
        let detail = message.isEmpty ? String(cString: curl_easy_strerror(code)) : message
        let tokenCause = transfer.tokenFailure.map { " The token reported: \($0)." } ?? ""
        switch code {
        case CURLE_PEER_FAILED_VERIFICATION:
            return KeyBridgeError(.serverVerification, "the server's certificate was not accepted (\(detail)); pass the bank's CA certificate with --cacert, and check that the URL's host is the name in its certificate")
        case CURLE_SSL_CACERT_BADFILE:
            return KeyBridgeError(.file, "cannot use the CA file (\(detail)); check the path given to --cacert")
        case CURLE_SSL_CERTPROBLEM:
            return KeyBridgeError(.certificate, "the client certificate or key could not be installed (\(detail)).\(tokenCause)")
        case CURLE_SSL_CONNECT_ERROR, CURLE_RECV_ERROR, CURLE_SEND_ERROR:
            var rejected = ""
            if detail.contains("protocol version") || detail.contains("unsupported protocol") {
                rejected = " The server and KeyBridge share no TLS version: check --tlsv1.2/--tlsv1.3 and --tls-max."
            } else if detail.contains("alert") {
                rejected = " The server rejected the handshake: check that it trusts the issuer of the client certificate and that --cert includes the intermediates."
            }
            if identity?.supportsTLS13 == false && configuration.maximumVersion == .v1_3 {
                rejected += " KeyBridge offered only TLS 1.2, because the token has no RSA-PSS mechanism for this key (it has \(identity?.tokenMechanisms ?? "none")); a server that requires TLS 1.3 needs CKM_RSA_PKCS_PSS or CKM_RSA_X_509."
            }
            var kind: KeyBridgeError.Kind = code == CURLE_SSL_CONNECT_ERROR || !detail.isEmpty && detail.contains("alert") ? .handshake : .transport
            // The peer closing the connection mid-handshake is a lost connection, not a TLS
            // verdict (and safe to try again for an idempotent request).
            if kind == .handshake, transfer.tokenFailure == nil, !detail.contains("alert"),
               detail.contains("SSL_ERROR_SYSCALL") || detail.contains("unexpected eof") || detail.contains("Connection reset") {
                kind = .transport
            }
            return KeyBridgeError(kind, "the TLS connection to \(hostDescription(url)) failed: \(detail).\(rejected)\(tokenCause)")
        case CURLE_GOT_NOTHING:
            return KeyBridgeError(.transport, "\(hostDescription(url)) closed the connection without answering (\(detail))")
        case CURLE_COULDNT_CONNECT:
            return KeyBridgeError(.transport, "cannot connect to \(hostDescription(url)) (\(detail)); check the host and port and that the server is running")
        case CURLE_COULDNT_RESOLVE_HOST:
            return KeyBridgeError(.transport, "cannot resolve the host in \(hostDescription(url)) (\(detail)); check the URL")
        case CURLE_OPERATION_TIMEDOUT:
            return KeyBridgeError(.timeout, "\(hostDescription(url)) did not answer in time (\(detail)); raise --max-time or --connect-timeout")
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            return KeyBridgeError(.usage, "the URL is not a usable http(s) URL (\(detail))")
        default:
            return KeyBridgeError(.transport, "the request to \(hostDescription(url)) failed: \(detail) (libcurl code \(code.rawValue)).\(tokenCause)")
        }
    }

    private func hostDescription(_ url: String) -> String {
        URLComponents(string: url).map { "\($0.host ?? "?")\($0.port.map { ":\($0)" } ?? "")" } ?? url
    }
}

/// One pooled libcurl handle (with the connection it keeps alive) and the state its callbacks
/// write, reached through an unretained pointer. Lent to one `send` at a time.
final class PooledTransfer: @unchecked Sendable {
    // Used by the one thread that checked it out of the pool.
    let handle: UnsafeMutableRawPointer
    let state = TransferState()

    init(share: CurlShare) throws(KeyBridgeError) {
        guard let handle = curl_easy_init() else {
            throw KeyBridgeError(.transport, "libcurl could not create a transfer handle")
        }
        self.handle = handle
        _ = CKeyBridgeShims_curl_easy_setopt_pointer(handle, CURLOPT_SHARE, share.handle)
    }

    deinit { curl_easy_cleanup(handle) }
}

/// A libcurl share holding the TLS session cache (and DNS answers) of one client's handles, with
/// the lock callbacks libcurl needs to use it from several threads.
final class CurlShare: @unchecked Sendable {
    // The share's data is only touched by libcurl between its lock and unlock callbacks; `locks`
    // is fixed after init.
    let handle: UnsafeMutableRawPointer
    fileprivate let locks: [NSLock] = (0..<Int(CURL_LOCK_DATA_LAST.rawValue)).map { _ in NSLock() }

    init() throws(KeyBridgeError) {
        guard let handle = curl_share_init() else {
            throw KeyBridgeError(.transport, "libcurl could not create a share handle")
        }
        self.handle = handle
        _ = CKeyBridgeShims_curl_share_setopt_pointer(handle, CURLSHOPT_USERDATA, Unmanaged.passUnretained(self).toOpaque())
        _ = CKeyBridgeShims_curl_share_setopt_lock_function(handle, lockShare)
        _ = CKeyBridgeShims_curl_share_setopt_unlock_function(handle, unlockShare)
        _ = CKeyBridgeShims_curl_share_setopt_long(handle, CURLSHOPT_SHARE, Int(CURL_LOCK_DATA_SSL_SESSION.rawValue))
        _ = CKeyBridgeShims_curl_share_setopt_long(handle, CURLSHOPT_SHARE, Int(CURL_LOCK_DATA_DNS.rawValue))
    }

    deinit { curl_share_cleanup(handle) }
}

private func lockShare(_ curl: UnsafeMutableRawPointer?, _ data: curl_lock_data, _ access: curl_lock_access, _ user: UnsafeMutableRawPointer?) {
    guard let user else { return }
    let share = Unmanaged<CurlShare>.fromOpaque(user).takeUnretainedValue()
    let index = Int(data.rawValue)
    if share.locks.indices.contains(index) { share.locks[index].lock() }
}

private func unlockShare(_ curl: UnsafeMutableRawPointer?, _ data: curl_lock_data, _ user: UnsafeMutableRawPointer?) {
    guard let user else { return }
    let share = Unmanaged<CurlShare>.fromOpaque(user).takeUnretainedValue()
    let index = Int(data.rawValue)
    if share.locks.indices.contains(index) { share.locks[index].unlock() }
}

/// Per-transfer state reached from libcurl and OpenSSL callbacks through an unretained pointer;
/// its handle is lent to one transfer at a time.
final class TransferState: @unchecked Sendable {
    // Only touched by the thread running the current transfer.
    var identity: ClientIdentity?
    var body = Data()
    var headers: [(name: String, value: String)] = []
    var statusLine = ""
    var session: TLSSessionInfo?
    var tokenFailure: String?
    var bodyLimit = 256 << 20
    var bodyTooLarge = false

    func reset() {
        bodyTooLarge = false
        body = Data()
        headers = []
        statusLine = ""
        session = nil
        tokenFailure = nil
    }
}

enum CurlGlobal {
    private static let once: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()
    static func initialize() { _ = once }
}

/// The SSL_CTX ex-data slot where a context finds its transfer state during the handshake.
private let transferSlot: Int32 = CKeyBridgeShims_SSL_CTX_get_ex_new_index()

private func transferState(_ pointer: UnsafeMutableRawPointer?) -> TransferState? {
    guard let pointer else { return nil }
    return Unmanaged<TransferState>.fromOpaque(pointer).takeUnretainedValue()
}

private func receiveBody(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ state: UnsafeMutableRawPointer?) -> Int {
    guard let data, let transfer = transferState(state) else { return 0 }
    guard transfer.body.count + size * count <= transfer.bodyLimit else {
        // Returning less than given makes libcurl stop the transfer.
        transfer.bodyTooLarge = true
        return 0
    }
    transfer.body.append(UnsafeRawPointer(data).assumingMemoryBound(to: UInt8.self), count: size * count)
    return size * count
}

private func receiveHeader(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ state: UnsafeMutableRawPointer?) -> Int {
    guard let data, let transfer = transferState(state) else { return 0 }
    // Byte-wise: Foundation's trimmingCharacters on every header line was a tenth of a busy
    // broker's CPU time.
    var line = UnsafeRawBufferPointer(start: data, count: size * count)[...]
    while let last = line.last, last == 0x0D || last == 0x0A { line = line.dropLast() }
    if line.starts(with: "HTTP/".utf8) {
        // A new status line starts a new header block (after 100 Continue, for example).
        transfer.statusLine = String(decoding: line, as: UTF8.self)
        transfer.headers = []
    } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
        var value = line[(colon + 1)...]
        while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
        while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
        transfer.headers.append((String(decoding: line[..<colon], as: UTF8.self), String(decoding: value, as: UTF8.self)))
    }
    return size * count
}

/// Installs the client chain and key on the SSL_CTX that libcurl made for this connection.
private func installIdentity(_ curl: UnsafeMutableRawPointer?, _ context: UnsafeMutableRawPointer?, _ state: UnsafeMutableRawPointer?) -> CURLcode {
    guard let context, let transfer = transferState(state) else { return CURLE_SSL_CERTPROBLEM }
    let sslContext = OpaquePointer(context)
    SSL_CTX_set_ex_data(sslContext, transferSlot, state)
    SSL_CTX_set_info_callback(sslContext, recordHandshake)
    guard let identity = transfer.identity else { return CURLE_OK }
    guard SSL_CTX_use_certificate(sslContext, identity.leaf) == 1 else { return CURLE_SSL_CERTPROBLEM }
    // Offer only the signature schemes the token can make, so the server never picks one that
    // would fail halfway through the handshake.
    if let algorithms = identity.signatureAlgorithms,
       CKeyBridgeShims_SSL_CTX_set1_client_sigalgs_list(sslContext, algorithms.joined(separator: ":")) != 1 {
        transfer.tokenFailure = "OpenSSL refused the signature algorithm list \(algorithms.joined(separator: ":"))"
        return CURLE_SSL_CERTPROBLEM
    }
    for certificate in identity.intermediates {
        guard CKeyBridgeShims_SSL_CTX_add1_chain_cert(sslContext, certificate) == 1 else { return CURLE_SSL_CERTPROBLEM }
    }
    guard SSL_CTX_use_PrivateKey(sslContext, identity.privateKey) == 1 else {
        transfer.tokenFailure = OpenSSLError.drainQueue().joined(separator: "; ")
        return CURLE_SSL_CERTPROBLEM
    }
    return CURLE_OK
}

private func recordHandshake(_ ssl: OpaquePointer?, _ event: Int32, _ value: Int32) {
    if event & Int32(SSL_CB_HANDSHAKE_START) != 0 {
        // A resumed or certificate-less handshake signs nothing; report nothing stale for it.
        ProviderDiagnostics.clearLastMechanism()
    }
    if event & Int32(SSL_CB_ALERT) != 0, let failure = ProviderDiagnostics.takeLastFailure(),
       let ssl, let transfer = transferState(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), transferSlot)) {
        transfer.tokenFailure = failure
    }
    guard event & Int32(SSL_CB_HANDSHAKE_DONE) != 0, let ssl,
          let transfer = transferState(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), transferSlot)) else { return }
    let version = String(cString: SSL_get_version(ssl))
    let cipher = SSL_get_current_cipher(ssl).flatMap { SSL_CIPHER_get_name($0) }.map { String(cString: $0) } ?? "?"
    var scheme: String?
    var mechanism: String?
    var typeNID: Int32 = 0
    var digestNID: Int32 = 0
    let resumed = SSL_session_reused(ssl) == 1
    if !resumed, SSL_get_signature_type_nid(ssl, &typeNID) == 1, CKeyBridgeShims_SSL_get_signature_nid(ssl, &digestNID) == 1,
       SSL_get_certificate(ssl) != nil {
        scheme = SignatureSchemeName.make(typeNID: typeNID, digestNID: digestNID,
                                          key: SSL_get_privatekey(ssl), version: version)
        mechanism = ProviderDiagnostics.lastMechanism
    }
    transfer.session = TLSSessionInfo(version: version, cipher: cipher, clientSignatureScheme: scheme, tokenMechanism: mechanism,
                                      resumed: resumed)
}

/// Builds the TLS SignatureScheme name (RFC 8446 section 4.2.3) from what OpenSSL reports.
enum SignatureSchemeName {
    static func make(typeNID: Int32, digestNID: Int32, key: OpaquePointer?, version: String) -> String {
        let digest = OBJ_nid2sn(digestNID).map { String(cString: $0).lowercased().replacingOccurrences(of: "-", with: "") } ?? "?"
        switch typeNID {
        case EVP_PKEY_RSA_PSS: return "rsa_pss_rsae_\(digest)"
        case EVP_PKEY_RSA: return "rsa_pkcs1_\(digest)"
        case EVP_PKEY_ED25519: return "ed25519"
        case EVP_PKEY_EC:
            guard version == "TLSv1.3", let key else { return "ecdsa_\(digest)" }
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            guard EVP_PKEY_get_group_name(key, &name, name.count, &length) == 1 else { return "ecdsa_\(digest)" }
            let group = name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            let tlsName = ["prime256v1": "secp256r1", "secp384r1": "secp384r1", "secp521r1": "secp521r1"][group] ?? group
            return "ecdsa_\(tlsName)_\(digest)"
        default:
            return OBJ_nid2sn(typeNID).map { String(cString: $0) + "+\(digest)" } ?? "unknown"
        }
    }
}

/// RFC 9110 syntax checks, on bytes: "\r\n" is one Character in Swift and would slip past a
/// Character comparison.
enum HTTPSyntax {
    static func isToken(_ text: String) -> Bool {
        // A switch, not a Set of the extra characters: this runs for every header of every request.
        !text.isEmpty && text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
                 UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
                 UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
                true
            default:
                false
            }
        }
    }

    /// Visible characters, spaces and tabs, and bytes of UTF-8 text; no CR, LF, NUL or other controls.
    static func isFieldValue(_ text: String) -> Bool {
        text.utf8.allSatisfy { byte in byte == 0x09 || (byte >= 0x20 && byte != 0x7F) }
    }
}

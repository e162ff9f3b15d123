import Foundation

enum KeyBridgeVersion {
    static let current = "0.1.0"
}

/// Messages for people go to standard error; response bodies go to standard output.
enum Output {
    /// A closed or full standard error must not crash the program; the exit status still tells.
    static func writeToStandardError(_ text: String) {
        try? FileHandle.standardError.write(contentsOf: Data(text.utf8))
    }

    /// Makes sure descriptors 0–2 are open, so files and sockets opened later (by libcurl or a
    /// PKCS#11 module) never take their numbers and receive our output.
    static func reserveStandardDescriptors() {
        for descriptor: Int32 in 0...2 where fcntl(descriptor, F_GETFD) == -1 {
            let opened = open("/dev/null", O_RDWR)
            if opened != descriptor && opened >= 0 { close(opened) }
        }
    }

    static func error(_ message: String) {
        writeToStandardError("keybridge: error: \(message)\n")
    }

    static func verbose(_ message: String) {
        writeToStandardError("* \(message)\n")
    }

    static func raw(_ text: String) {
        writeToStandardError(text)
    }
}

enum Help {
    /// The widest line of any help text: with the man page's indent of two, 80 columns.
    static let width = 78

    static let overview = """
    keybridge — mutual TLS with keys that stay in a PKCS#11 token

    Usage: keybridge <command> [options]

    Commands:
      request URL    Send an HTTPS request with a client certificate whose key is
                     on a token (curl-style flags; see 'keybridge request --help')
      cert inspect   Show an eIDAS certificate (file or pkcs11: URI):
                     organizationIdentifier, validity, key, QC statements and PSD2
                     roles (see 'keybridge cert inspect --help')
      serve          mTLS broker: forwards /{bank}/… with the token's QWAC and
                     signs with its QSealC (keybridge serve --config broker.json;
                     see 'keybridge serve --help')
      mock-bank      Local PSD2 bank sandbox behind nginx: checks QWAC, QSealC,
                     digest and signature
      keys           Token keys: list, generate (never extractable), csr (PSD2
                     QWAC/QSealC request), import-cert (store the issued chain
                     beside the key); see 'keybridge keys --help'
      doctor         Check module, token, PIN, key, mechanisms, certificate,
                     chain, expiry, PSD2 roles and optionally a handshake with the
                     bank; exit 0 fit, 1 warnings, 3 not fit
      bench          Side-by-side benchmark: provider against raw C_Sign, libp11's
                     engine and a key file; handshakes, scaling, remote token,
                     broker, cold start, memory (run by make bench)
      --version      Print the version

    Keys are named by RFC 7512 URIs, for example (on one line):
      'pkcs11:token=keybridge;object=client-rsa;type=private
        ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/path/to/pin'
    The PIN comes from the URI's pin-source file, then KEYBRIDGE_PIN, then
    pin-value (warned about), then a prompt on a terminal. It is never printed.
    """

    static let request = """
    Usage: keybridge request [options] URL

    Sends one HTTPS request using a client certificate; the private key stays on
    the token. The response body goes to standard output.

    Options:
      -X, --request METHOD       HTTP method (default GET, or POST when a body is
                                 given)
      -H, --header 'Name: value' Add a request header (repeatable)
      -d, --data DATA            Request body; @FILE reads a file, @- reads
                                 standard input
          --data-binary DATA     Same as --data
          --cert FILE            Client certificate chain in PEM: leaf first, then
                                 intermediates
          --key KEY              pkcs11: URI of the private key (or a PEM key
                                 file, for comparison)
          --engine ID            Load --key through the OpenSSL engine ID (pkcs11
                                 is libp11's) instead of KeyBridge's provider, as
                                 curl's --engine ID --key-type ENG does
          --cacert FILE          Trust only these CA certificates for the server
      -o, --output FILE          Write the body to FILE instead of standard output
      -i, --include              Print the response status line and headers before
                                 the body
      -f, --fail                 Exit with status 22 when the server answers 400
                                 or above
      -v, --verbose              Show TLS version, cipher, client signature scheme
                                 and key location
          --tlsv1.2, --tlsv1.3   Lowest TLS version to use (default 1.2)
          --tls-max VERSION      Highest TLS version to use: 1.2 or 1.3 (default
                                 1.3)
          --connect-timeout SEC  Give up connecting after SEC seconds (default 30)
      -m, --max-time SEC         Give up on the whole request after SEC seconds
      -h, --help                 Show this help

    PSD2 request signing (headers added after yours, made with a token key):
          --sign-profile NAME    berlin-group (Digest, Date, X-Request-ID,
                                 TPP-Signature-Certificate, Signature), rfc9421
                                 (Content-Digest, Signature-Input, Signature) or
                                 jws (x-jws-signature, detached)
          --sign-key URI         pkcs11: URI of the signing key (the QSealC's)
          --sign-cert CERT       the QSealC: a PEM file or a pkcs11: URI (needed
                                 for berlin-group)
          --sign-options FILE    the bank's settings as JSON (see the README)
          --sign-key-id ID       keyid (rfc9421) or kid (jws) the bank knows the
                                 key by
          --jws-alg ALG          PS256 (RSA default), RS256 or ES256 (EC default)

    Exit status: 0 success; 2 usage or malformed URI; 3 key or token problem
    (wrong PIN, unknown token or object, missing module, or an RSA key without
    RSA-PSS with --tlsv1.3); 4 certificate problem (including a certificate that
    does not belong to the key); 7 cannot connect; 22 HTTP error with --fail; 23
    the response cannot be written to standard output; 26 a local file cannot be
    read or written; 28 timeout; 35 TLS handshake failed; 60 server certificate
    not trusted; 63 a request body over 64 MiB or a response over 256 MiB.
    """
}

/// Progress lines for long work, on standard error and only when it is a terminal: scripts and
/// monitoring jobs that capture standard error see nothing extra.
final class ProgressLine: @unchecked Sendable {
    // `lastLength` and `finished` are guarded by `lock`; the ticker thread and the caller share them.
    private let lock = NSLock()
    private var lastLength = 0
    private var finished = false
    let enabled: Bool

    init(enabled: Bool = ProgressLine.standardErrorIsTerminal) {
        self.enabled = enabled
    }

    /// `KEYBRIDGE_PROGRESS=0` silences progress even on a terminal.
    static var standardErrorIsTerminal: Bool {
        isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["KEYBRIDGE_PROGRESS"] != "0"
    }

    /// Replaces the current progress line.
    func update(_ text: String) {
        guard enabled else { return }
        lock.withLock {
            guard !finished else { return }
            Output.raw("\r\u{1B}[K" + text)
            lastLength = text.count
        }
    }

    /// Clears the progress line, so the next message starts on a clean line.
    func finish() {
        guard enabled else { return }
        lock.withLock {
            if lastLength > 0 { Output.raw("\r\u{1B}[K") }
            lastLength = 0
            finished = true
        }
    }

    /// Runs `work` while a line with `message` and the seconds elapsed is refreshed every
    /// half second: for calls such as key generation on a slow HSM that report nothing
    /// themselves.
    func whileRunning<R>(_ message: String, _ work: () throws -> R) rethrows -> R {
        guard enabled else { return try work() }
        let start = Date()
        update("\(message)…")
        let ticker = Thread { [self] in
            while !Thread.current.isCancelled {
                Thread.sleep(forTimeInterval: 0.5)
                if Thread.current.isCancelled { break }
                update(String(format: "%@… %.0f s", message, Date().timeIntervalSince(start)))
            }
        }
        ticker.start()
        defer {
            ticker.cancel()
            finish()
        }
        return try work()
    }
}

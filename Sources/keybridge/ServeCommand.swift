import Foundation
import KeyBridgeBroker

/// `keybridge serve --config broker.json`: the mTLS broker.
enum ServeCommand {
    static let help = """
    Usage: keybridge serve --config FILE [--listen HOST:PORT|unix:PATH]

    Runs the mTLS broker. A caller sends plain HTTP to
    http://HOST:PORT/{bank}/{path} (or over the Unix socket) with 'Authorization:
    Bearer TOKEN'; the broker signs the request with the bank's QSealC key (when
    the bank has a signing profile), sends it to the bank's upstream + /{path}
    over mTLS with the QWAC key, both on the token, and returns the bank's answer.
    Connections to each bank are pooled and kept alive, and TLS sessions are
    resumed, so most requests need no handshake and no signature by the mTLS key.

    The configuration (JSON; the README explains every field):
      {
        "listen": "127.0.0.1:8080",     (or "unix:/run/keybridge/broker.sock")
        "socketMode": "0660",
        "maxBodyBytes": 1048576,
        "shutdownGraceSeconds": 30,
        "banks": {
          "acme": {
            "upstream": "https://api.acme-bank.example/psd2",
            "caFile": "/etc/keybridge/acme-ca.pem",
            "key": "pkcs11:token=qwac;object=qwac;type=private?pin-source=…",
            "cert": "/etc/keybridge/qwac-chain.pem",
            "signing": { "profile": "berlin-group", "key": "pkcs11:…",
                         "cert": "/etc/keybridge/qsealc.pem",
                         "options": { "serialCase": "upper" } },
            "timeoutSeconds": 30, "connectTimeoutSeconds": 10,
            "maxConnections": 8, "http2": true,
            "retry": { "maxAttempts": 3, "backoffMilliseconds": 100,
                       "maxBackoffMilliseconds": 2000 }
          }
        },
        "callers": [ { "name": "payments-lambda",
                       "tokenSHA256": "<hex SHA-256 of the token>",
                       "banks": ["acme"] } ]
      }
    signing.profile is berlin-group, rfc9421 or jws; options are what 'request
    --sign-options' takes (jws: {"kid": …, "alg": …}). retry applies to idempotent
    methods (GET, HEAD, OPTIONS, PUT, DELETE) after a lost connection; POST is
    never sent twice. Print a token's hash with: keybridge serve --hash-token
    (reads the token from standard input).

    Answers: the bank's status, headers and body, with X-Request-ID (the caller's
    or a new one); 400 malformed or absolute-form request, CONNECT, or a header
    with CR/LF/control characters; 401 no or unknown token; 403 bank not allowed
    for the caller; 404 unknown bank; 413 body over maxBodyBytes; 502 upstream TLS
    or connection failure; 503 token-unavailable (the HSM cannot sign:
    CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, …); 504 upstream timeout. Errors
    are JSON: {"error": code, "cause": sentence}. GET /healthz and GET /metrics
    need no token.

    Options:
          --config FILE        The configuration (required)
          --listen ADDRESS     Overrides "listen": HOST:PORT (PORT 0 picks a free
                               port) or unix:PATH
          --hash-token         Print the hex SHA-256 of the token read from
                               standard input, and exit
      -h, --help               Show this help

    The port (or unix:PATH) goes to standard output; JSON log lines go to standard
    error, one per request (with its request id; never a token or PIN) and one per
    start, reload and stop. Signals: SIGHUP reloads the configuration and
    certificates (a configuration that fails to load is refused, logged, and the
    running one stays); SIGTERM or SIGINT stops accepting, lets the requests in
    flight finish (up to shutdownGraceSeconds) and exits. Exit status: 0 stopped
    by a signal; 1 cannot start (configuration, token, key or certificate; the
    reason is printed); 2 usage.
    """

    static func run(_ arguments: [String]) -> Int32 {
        var configPath: String?
        var listen: String?
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "-h", "--help":
                print(help)
                return 0
            case "--hash-token":
                let input = FileHandle.standardInput.readDataToEndOfFile()
                let token = String(decoding: input, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !token.isEmpty else {
                    Output.error("--hash-token reads the token from standard input, which was empty")
                    return 2
                }
                print(Broker.tokenSHA256(token))
                return 0
            case "--config", "--listen":
                index += 1
                guard index < arguments.count else {
                    Output.error("\(argument) needs a value; run 'keybridge serve --help' for the options")
                    return 2
                }
                if argument == "--config" { configPath = arguments[index] } else { listen = arguments[index] }
            default:
                Output.error("unknown option '\(argument.prefix { $0 != "=" }.prefix(30))'; run 'keybridge serve --help' for the options")
                return 2
            }
            index += 1
        }
        guard let configPath else {
            Output.error("--config FILE is required; run 'keybridge serve --help' for an example")
            return 2
        }

        // Blocked before any thread starts, so the signals reach only sigwait below.
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let log: @Sendable (String) -> Void = { line in Output.raw(line + "\n") }
        let server: BrokerServer
        let address: BrokerConfiguration.ListenAddress
        do {
            var configuration = try BrokerConfiguration.load(path: configPath)
            if let listen { configuration.listen = listen }
            address = try configuration.listenAddress()
            let broker = try Broker(configuration: configuration, log: log)
            server = try BrokerServer(broker: broker, listen: address)
        } catch {
            Output.error(error.reason)
            return 1
        }
        let shown: String
        switch address {
        case .unix(let path, _):
            shown = "unix:" + path
            try? FileHandle.standardOutput.write(contentsOf: Data("unix:\(path)\n".utf8))
        case .tcp:
            let display = server.host.contains(":") ? "[\(server.host)]" : server.host
            shown = "http://\(display):\(server.port)"
            try? FileHandle.standardOutput.write(contentsOf: Data("\(server.port)\n".utf8))
        }
        log(Broker.logLine(["event": "listening", "address": shown, "banks": server.broker.configuration.banks.keys.sorted()]))

        while true {
            var received: Int32 = 0
            sigwait(&signals, &received)
            if received == SIGHUP {
                reload(server: server, path: configPath, listen: listen, address: address, log: log)
                continue
            }
            let name = received == SIGINT ? "SIGINT" : "SIGTERM"
            let grace = server.broker.configuration.shutdownGraceSeconds ?? 30
            server.stopAccepting()
            log(Broker.logLine(["event": "stopping", "signal": name, "inFlight": server.requestsInFlight, "graceSeconds": grace]))
            let unfinished = server.shutdown(graceSeconds: grace)
            log(Broker.logLine(["event": "stopped", "signal": name, "unfinished": unfinished]))
            return 0
        }
    }

    /// SIGHUP: the configuration file read again and every bank's identity, certificates and keys
    /// loaded again. Anything that fails leaves the running configuration in place.
    private static func reload(server: BrokerServer, path: String, listen: String?, address: BrokerConfiguration.ListenAddress,
                               log: @Sendable (String) -> Void) {
        let current = server.broker
        do {
            var configuration = try BrokerConfiguration.load(path: path)
            if let listen { configuration.listen = listen }
            let replacement = try current.reloaded(with: configuration)
            server.replace(replacement)
            current.recordReload(succeeded: true)
            var line: [String: any Sendable] = ["event": "reload", "result": "ok", "banks": configuration.banks.keys.sorted()]
            if (try? configuration.listenAddress()) != address && listen == nil {
                line["note"] = "\"listen\" changed; the broker keeps its address until it is restarted"
            }
            log(Broker.logLine(line))
        } catch {
            current.recordReload(succeeded: false)
            log(Broker.logLine(["event": "reload", "result": "refused", "reason": error.reason,
                                "kept": "the running configuration stays in use"]))
        }
    }
}

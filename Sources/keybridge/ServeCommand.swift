import Foundation
import KeyBridgeBroker

/// `keybridge serve --config broker.json`: the mTLS broker.
enum ServeCommand {
    static let help = """
    Usage: keybridge serve --config FILE [--listen HOST:PORT]

    Runs the mTLS broker. A caller sends plain HTTP to http://HOST:PORT/{bank}/{path} with
    'Authorization: Bearer TOKEN'; the broker signs the request with the bank's QSealC key (when
    the bank has a signing profile), sends it to the bank's upstream + /{path} over mTLS with the
    QWAC key, both on the token, and returns the bank's answer.

    The configuration (JSON):
      {
        "listen": "127.0.0.1:8080",
        "maxBodyBytes": 1048576,
        "banks": {
          "acme": {
            "upstream": "https://api.acme-bank.example/psd2",
            "caFile": "/etc/keybridge/acme-ca.pem",
            "key": "pkcs11:token=qwac;object=qwac;type=private?module-path=…&pin-source=file:…",
            "cert": "/etc/keybridge/qwac-chain.pem",
            "signing": { "profile": "berlin-group", "key": "pkcs11:…", "cert": "/etc/keybridge/qsealc.pem",
                         "options": { "serialCase": "upper" } },
            "timeoutSeconds": 30,
            "retries": 1
          }
        },
        "callers": [ { "name": "payments-lambda", "tokenSHA256": "<hex SHA-256 of the token>", "banks": ["acme"] } ]
      }
    signing.profile is berlin-group, rfc9421 or jws; options are what 'request --sign-options' takes
    (jws: {"kid": …, "alg": …}). retries apply to idempotent methods after a connection failure.
    Print a token's hash with: keybridge serve --hash-token (reads the token from standard input).

    Answers: the bank's status, headers and body; 400 malformed or absolute-form request, CONNECT,
    or a header with CR/LF/control characters; 401 no or unknown token; 403 bank not allowed for the
    caller; 404 unknown bank; 413 body over maxBodyBytes; 502 upstream TLS or connection failure;
    504 upstream timeout. Errors are JSON: {"error": code, "cause": sentence}.

    Options:
          --config FILE        The configuration (required)
          --listen HOST:PORT   Overrides "listen"; PORT 0 picks a free port
          --hash-token         Print the hex SHA-256 of the token read from standard input, and exit
      -h, --help               Show this help

    The port goes to standard output, one JSON line per request to standard error. Runs until
    SIGINT or SIGTERM. Exit status: 0 stopped by a signal; 1 cannot start (configuration, token,
    key or certificate; the reason is printed); 2 usage.
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
        for signal in [SIGINT, SIGTERM] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let server: BrokerServer
        do {
            var configuration = try BrokerConfiguration.load(path: configPath)
            if let listen { configuration.listen = listen }
            let address = try configuration.listenAddress()
            let broker = try Broker(configuration: configuration, log: { line in Output.raw(line + "\n") })
            server = try BrokerServer(broker: broker, host: address.host, port: address.port)
        } catch {
            Output.error(error.reason)
            return 1
        }
        let display = server.host.contains(":") ? "[\(server.host)]" : server.host
        try? FileHandle.standardOutput.write(contentsOf: Data("\(server.port)\n".utf8))
        Output.raw("keybridge serve: listening on http://\(display):\(server.port)\n")

        var received: Int32 = 0
        sigwait(&signals, &received)
        server.stop()
        Output.raw("keybridge serve: stopped (\(received == SIGINT ? "SIGINT" : "SIGTERM"))\n")
        return 0
    }
}

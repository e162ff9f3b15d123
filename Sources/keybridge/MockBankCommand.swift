import Foundation
import MockBank
import OpenBanking

/// `keybridge mock-bank`: a local PSD2 bank sandbox on plain HTTP, behind the nginx test bank.
enum MockBankCommand {
    struct Options {
        var host = "127.0.0.1"
        var port: Int?
        var qwacAuthorities: [String] = []
        var qsealcAuthorities: [String] = []
        var profile: String?
        var maximumBodySize = 1 << 20
        var requestLog: String?
    }

    struct UsageError: Error { var message: String }

    static let help = """
    Usage: keybridge mock-bank --listen HOST:PORT [options]

    A local PSD2 bank sandbox (HTTP/1.1) for behind a TLS front end such as the
    nginx test bank ('scripts/bank-nginx start DIR MOCK_PORT' proxies /psd2/ to
    it). nginx does the mTLS and passes the client certificate in
    X-SSL-Client-Cert ($ssl_client_escaped_cert) and its verdict in
    X-SSL-Client-Verify. For each request the sandbox checks:
      - the QWAC: present, verified, QcType web, a PSD2 statement with roles,
        organizationIdentifier;
      - the signature in whichever format arrived: Berlin Group (Signature with
        keyId=, plus Digest and TPP-Signature-Certificate), RFC 9421
        (Signature-Input, Content-Digest when present) or a detached JWS
        (x-jws-signature); RFC 9421 and JWS use TPP-Signature-Certificate when
        sent, else the QWAC's key;
      - the QSealC in TPP-Signature-Certificate: valid, a PSD2 statement with
        roles and the QWAC's organizationIdentifier and NCA; a QcType other than
        eseal is a warning.
    It answers JSON listing the checks: 201 (POST) or 200 when accepted; 400
    (malformed header or digest), 401 (certificate or signature) or 413 with a
    Berlin Group tppMessages error otherwise. One line per request goes to
    standard error; the port goes to standard output.

    Options:
          --listen HOST:PORT     Address to listen on; PORT 0 picks a free port
                                 (default host 127.0.0.1)
          --qwac-ca FILE         CA certificates (PEM) the QWAC must chain to,
                                 issuing CA included, as nginx passes only the
                                 leaf (repeatable; default: trust nginx's verdict)
          --qsealc-ca FILE       CA certificates (PEM) the QSealC must chain to
                                 (repeatable)
          --profile FILE         the bank's Berlin Group profile as JSON (required
                                 extra headers, (request-target), digest), as for
                                 'request --sign-options'
          --max-body BYTES       largest request body accepted (default 1048576)
          --request-log FILE     append one JSON line per answered request to
                                 FILE:
                                 {"method":…,"requestId":…,"status":…,"target":…}
                                 (requestId is the X-Request-ID received, or
                                 null), flushed before the answer is sent
      -h, --help                 Show this help

    Runs until SIGINT or SIGTERM. Exit status: 0 stopped by a signal; 1 cannot
    listen; 2 usage; 4 a CA file holds no valid certificate; 26 a file cannot be
    read.
    """

    static func run(_ arguments: [String]) -> Int32 {
        let options: Options
        do {
            guard let parsed = try parse(arguments) else {
                print(help)
                return 0
            }
            options = parsed
        } catch {
            Output.error("\(error.message); run 'keybridge mock-bank --help' for the options")
            return 2
        }
        let bank: MockBank
        do {
            bank = try MockBank(configuration: try configuration(options))
        } catch let failure as CertCommand.Failure {
            Output.error(failure.message)
            return failure.status
        } catch {
            Output.error("\(error)")
            return 2
        }

        // Blocked before the server's thread starts, so that thread inherits the mask and the
        // signals reach only sigwait below.
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        var requestLog: (@Sendable (String) -> Void)?
        if let path = options.requestLog {
            guard FileManager.default.fileExists(atPath: path) || FileManager.default.createFile(atPath: path, contents: nil),
                  let file = FileHandle(forWritingAtPath: path) else {
                Output.error("--request-log \(path): cannot open the file for writing; check its folder and permissions")
                return 26
            }
            _ = try? file.seekToEnd()
            // The server answers on one thread, so the writes never interleave.
            let handle = RequestLogFile(file)
            requestLog = { line in try? handle.value.write(contentsOf: Data((line + "\n").utf8)) }
        }

        let server: MockBankServer
        do {
            server = try MockBankServer(bank: bank, host: options.host, port: options.port ?? 0, requestLog: requestLog)
        } catch {
            Output.error(error.reason)
            return 1
        }
        let display = server.host.contains(":") ? "[\(server.host)]" : server.host
        try? FileHandle.standardOutput.write(contentsOf: Data("\(server.port)\n".utf8))
        Output.raw("keybridge mock-bank: listening on http://\(display):\(server.port) "
            + "(QWAC: \(options.qwacAuthorities.isEmpty ? "trusts X-SSL-Client-Verify" : "chain to --qwac-ca"); "
            + "QSealC: \(options.qsealcAuthorities.isEmpty ? "no chain check" : "chain to --qsealc-ca"); "
            + "body up to \(options.maximumBodySize) bytes)\n")

        var received: Int32 = 0
        sigwait(&signals, &received)
        server.stop()
        Output.raw("keybridge mock-bank: stopped (\(received == SIGINT ? "SIGINT" : received == SIGHUP ? "SIGHUP" : "SIGTERM"))\n")
        return 0
    }

    static func parse(_ arguments: [String]) throws(UsageError) -> Options? {
        var options = Options()
        var index = 0
        func value(_ flag: String) throws(UsageError) -> String {
            index += 1
            guard index < arguments.count else { throw UsageError(message: "\(flag) needs a value") }
            return arguments[index]
        }
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "-h", "--help": return nil
            case "--listen":
                (options.host, options.port) = try listenAddress(try value(argument))
            case "--qwac-ca": options.qwacAuthorities.append(try value(argument))
            case "--qsealc-ca": options.qsealcAuthorities.append(try value(argument))
            case "--profile": options.profile = try value(argument)
            case "--request-log": options.requestLog = try value(argument)
            case "--max-body":
                let text = try value(argument)
                guard let bytes = Int(text), bytes >= 0 else { throw UsageError(message: "--max-body needs a whole number of bytes, not '\(text.prefix(20))'") }
                options.maximumBodySize = bytes
            default:
                if argument.hasPrefix("-") {
                    throw UsageError(message: "unknown option '\(argument.prefix { $0 != "=" }.prefix(30))'")
                }
                throw UsageError(message: "unexpected argument '\(argument.prefix(30))'")
            }
            index += 1
        }
        guard options.port != nil else { throw UsageError(message: "--listen HOST:PORT is required (PORT 0 picks a free one)") }
        return options
    }

    /// `HOST:PORT`, `[IPv6]:PORT` or a bare `PORT` (on 127.0.0.1).
    static func listenAddress(_ text: String) throws(UsageError) -> (String, Int) {
        var host = "127.0.0.1"
        var portText = Substring(text)
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw UsageError(message: "--listen '\(text.prefix(60))' has no :PORT after the ]") }
            portText = rest.dropFirst()
        } else if let colon = text.lastIndex(of: ":") {
            if colon != text.startIndex { host = String(text[..<colon]) }
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65_535).contains(port) else {
            throw UsageError(message: "--listen takes HOST:PORT with PORT from 0 to 65535, not '\(text.prefix(60))'")
        }
        return (host, port)
    }

    static func configuration(_ options: Options) throws -> MockBank.Configuration {
        var configuration = MockBank.Configuration(maximumBodySize: options.maximumBodySize)
        configuration.qwacAuthorities = try options.qwacAuthorities.flatMap { path in try authorities(path, flag: "--qwac-ca") }
        configuration.qsealcAuthorities = try options.qsealcAuthorities.flatMap { path in try authorities(path, flag: "--qsealc-ca") }
        if let profile = options.profile {
            let data = Data(try CertCommand.readFile(profile))
            do {
                configuration.profile = try JSONDecoder().decode(BerlinGroupProfile.self, from: data)
            } catch {
                throw CertCommand.Failure(status: 2, message: "--profile \(profile) is not a Berlin Group profile (JSON): \(describe(error))")
            }
        }
        return configuration
    }

    /// A decoding error as "path: what is wrong".
    private static func describe(_ error: any Error) -> String {
        let context: DecodingError.Context
        switch error as? DecodingError {
        case let .dataCorrupted(found)?, let .typeMismatch(_, found)?, let .valueNotFound(_, found)?, let .keyNotFound(_, found)?:
            context = found
        default:
            return error.localizedDescription
        }
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return (path.isEmpty ? "" : path + ": ") + context.debugDescription
    }

    /// Every certificate in a PEM file (or the one in a DER file), as DER.
    private static func authorities(_ path: String, flag: String) throws(CertCommand.Failure) -> [[UInt8]] {
        let bytes = try CertCommand.readFile(path)
        do {
            if bytes.firstRange(of: Array("-----BEGIN".utf8)) != nil {
                return try EIDASCertificate.all(pem: String(decoding: bytes, as: UTF8.self)).map(\.der)
            }
            return [try EIDASCertificate(der: bytes).der]
        } catch {
            throw CertCommand.Failure(status: 4, message: "\(flag) \(path): \(error)")
        }
    }
}

/// A FileHandle used from the mock bank's one server thread only.
private final class RequestLogFile: @unchecked Sendable {
    // Written from libmicrohttpd's single internal thread (MockBankServer runs `.single`).
    let value: FileHandle
    init(_ value: FileHandle) { self.value = value }
}

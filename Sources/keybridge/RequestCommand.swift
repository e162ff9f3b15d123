import Foundation
import KeyBridgeTLS
import PKCS11

/// `keybridge request`: one HTTPS request with curl-style flags.
enum RequestCommand {
    struct Options {
        var url: String?
        var method: String?
        var headers: [(name: String, value: String)] = []
        var data: String?
        var certificate: String?
        var key: String?
        /// `--engine ID`: load `--key` through this OpenSSL engine.
        var engine: String?
        var keyTypeIsEngine = false
        var caCertificate: String?
        var output: String?
        var include = false
        var fail = false
        var verbose = false
        var minimumVersion: TLSVersion = .v1_2
        var maximumVersion: TLSVersion = .v1_3
        var connectTimeout = 30
        var maxTime = 0
        var signing = RequestSigningOptions()
    }

    struct UsageError: Error { var message: String }

    static func run(_ arguments: [String]) -> Int32 {
        let options: Options
        do {
            guard let parsed = try parse(arguments) else {
                print(Help.request)
                return 0
            }
            options = parsed
        } catch {
            Output.error("\(error.message); run 'keybridge request --help' for the options")
            return 2
        }
        do {
            return try perform(options)
        } catch {
            Output.error(error.reason)
            return exitCode(for: error.kind)
        }
    }

    static func exitCode(for kind: KeyBridgeError.Kind) -> Int32 {
        switch kind {
        case .usage: return 2
        case .key: return 3
        case .certificate: return 4
        case .file: return 26
        case .serverVerification: return 60
        case .handshake: return 35
        case .httpStatus: return 22
        case .timeout: return 28
        case .output: return 23
        case .tooLarge: return 63
        default: return 7
        }
    }

    static func parse(_ arguments: [String]) throws(UsageError) -> Options? {
        var options = Options()
        var index = 0
        func value(_ flag: String) throws(UsageError) -> String {
            index += 1
            guard index < arguments.count else { throw UsageError(message: "\(flag) needs a value") }
            return arguments[index]
        }
        func seconds(_ flag: String) throws(UsageError) -> Int {
            let text = try value(flag)
            guard let number = Int(text), number >= 0 else { throw UsageError(message: "\(flag) needs a whole number of seconds, not '\(text)'") }
            return number
        }
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "-h", "--help": return nil
            case "-X", "--request": options.method = try value(argument)
            case "-H", "--header":
                let line = try value(argument)
                guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                    throw UsageError(message: "header '\(line.prefix(40))' is not of the form 'Name: value'")
                }
                options.headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            case "-d", "--data", "--data-binary": options.data = try value(argument)
            case "--cert", "-E": options.certificate = try value(argument)
            case "--key": options.key = try value(argument)
            case "--engine": options.engine = try value(argument)
            case "--key-type":
                // Accepted so curl command lines carry over: ENG goes with --engine, PEM is the default.
                let type = try value(argument)
                guard ["ENG", "PEM"].contains(type.uppercased()) else {
                    throw UsageError(message: "--key-type takes ENG (with --engine) or PEM, not '\(type.prefix(20))'")
                }
                options.keyTypeIsEngine = type.uppercased() == "ENG"
            case "--cacert": options.caCertificate = try value(argument)
            case "-o", "--output": options.output = try value(argument)
            case "-i", "--include": options.include = true
            case "-f", "--fail": options.fail = true
            case "-v", "--verbose": options.verbose = true
            case "-s", "--silent": break
            case "--tlsv1.2": options.minimumVersion = .v1_2
            case "--tlsv1.3": options.minimumVersion = .v1_3
            case "--tls-max":
                let text = try value(argument)
                guard let version = TLSVersion(rawValue: text) else { throw UsageError(message: "--tls-max takes 1.2 or 1.3, not '\(text)'") }
                options.maximumVersion = version
            case "--connect-timeout": options.connectTimeout = try seconds(argument)
            case "-m", "--max-time": options.maxTime = try seconds(argument)
            default:
                if try options.signing.parse(argument, value: { () throws(UsageError) -> String in try value(argument) }) {
                    break
                }
                if argument.hasPrefix("-") && argument.count > 1 {
                    // Never echo what follows '=': it may be a secret such as --pin=….
                    throw UsageError(message: "unknown option '\(argument.prefix { $0 != "=" })'")
                }
                guard options.url == nil else {
                    // A stray argument may be a misplaced key URI with a PIN in it; never echo it.
                    throw UsageError(message: "only one URL is allowed (got a second positional argument); quote URLs and URIs, and check the flag before it")
                }
                options.url = argument
            }
            index += 1
        }
        try options.signing.check()
        guard options.url != nil else { throw UsageError(message: "no URL given") }
        if let engine = options.engine {
            guard !engine.isEmpty else { throw UsageError(message: "--engine needs an engine id such as pkcs11") }
            guard options.key != nil else {
                throw UsageError(message: "--engine \(engine) needs --key with the key's identifier (for pkcs11, a pkcs11: URI)")
            }
        } else if options.keyTypeIsEngine {
            throw UsageError(message: "--key-type ENG needs --engine with the engine id, e.g. --engine pkcs11")
        }
        guard options.minimumVersion <= options.maximumVersion else {
            throw UsageError(message: "the lowest TLS version is above --tls-max")
        }
        return options
    }

    /// The URL as shown in messages: a password in it is not printed.
    static func withoutUserInfo(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.user != nil || components.password != nil else { return url }
        components.user = nil
        components.password = nil
        return components.string ?? url
    }

    /// Request bodies are held in memory, so they are capped; PSD2 bodies are small.
    static let maximumBodySize = 64 << 20

    static func readBody(_ data: String) throws(KeyBridgeError) -> Data {
        guard data.hasPrefix("@") else { return Data(data.utf8) }
        let path = String(data.dropFirst())
        let handle: FileHandle
        if path == "-" {
            handle = FileHandle.standardInput
        } else {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                  let opened = FileHandle(forReadingAtPath: path) else {
                throw KeyBridgeError(.file, "cannot read the request body file \(path); check the path after @")
            }
            handle = opened
        }
        var body = Data()
        do {
            while let chunk = try handle.read(upToCount: 1 << 16), !chunk.isEmpty {
                body.append(chunk)
                if body.count > maximumBodySize {
                    throw KeyBridgeError(.tooLarge, "the request body is larger than \(maximumBodySize >> 20) MiB; KeyBridge holds bodies in memory and refuses larger ones")
                }
            }
        } catch let error as KeyBridgeError {
            throw error
        } catch {
            throw KeyBridgeError(.file, "cannot read the request body from \(path == "-" ? "standard input" : path) (\(error.localizedDescription)); check it is a readable file")
        }
        return body
    }

    static func perform(_ options: Options) throws(KeyBridgeError) -> Int32 {
        guard let url = options.url else { throw KeyBridgeError(.usage, "no URL given") }
        let configuration = TLSConfiguration(
            certificateChain: options.certificate.map { CertificateChainSource(parsing: $0) },
            key: options.key.map { key in options.engine.map { .engine(id: $0, identifier: key) } ?? KeyReference(parsing: key) },
            trustRoots: options.caCertificate.map { .pemFile($0) } ?? .system,
            minimumVersion: options.minimumVersion,
            maximumVersion: options.maximumVersion)
        if options.verbose {
            KeyBridgeLog.debugHandler = { Output.verbose($0) }
        }
        let client = try HTTPClient(configuration: configuration)
        client.connectTimeout = options.connectTimeout
        client.totalTimeout = options.maxTime
        if options.verbose, let location = client.keyLocation {
            let where_ = client.keyIsOnToken ? "on the token (private operations run there): \(location)" : location
            Output.verbose("client key \(where_)")
            if let subject = client.clientCertificateSubject {
                Output.verbose("client certificate: \(subject), sent with \(client.intermediateCount) intermediate(s)")
            }
        }
        if client.clientCertificateSubject != nil && client.intermediateCount == 0 {
            KeyBridgeLog.warning("--cert holds only the leaf certificate; most banks also need the issuing CA, so append it to the file")
        }
        let body = try options.data.map { text throws(KeyBridgeError) in try readBody(text) }
        let method = options.method ?? (body == nil ? "GET" : "POST")
        var headers = options.headers
        if body != nil, !headers.contains(where: { $0.name.lowercased() == "content-type" }) {
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        }
        let signatureHeaders = try options.signing.headers(method: method, url: url, headers: headers, body: body)
        if options.verbose, !signatureHeaders.isEmpty {
            Output.verbose("signature headers added: " + signatureHeaders.map(\.name).joined(separator: ", "))
        }
        headers += signatureHeaders
        let response = try client.send(HTTPRequest(method: method, url: url, headers: headers, body: body))
        if options.verbose {
            if let tls = response.tls {
                Output.verbose("TLS: \(tls.version), cipher \(tls.cipher)")
                if let scheme = tls.clientSignatureScheme {
                    Output.verbose("client CertificateVerify: \(scheme)" + (tls.tokenMechanism.map { ", signed on the token with \($0)" } ?? ""))
                } else {
                    Output.verbose("the server did not ask for a client certificate")
                }
            }
            Output.verbose("\(method) \(RequestCommand.withoutUserInfo(url))")
            Output.verbose("response: \(response.statusLine)")
        }
        var output = Data()
        if options.include {
            output.append(Data((response.statusLine + "\r\n").utf8))
            for header in response.headers { output.append(Data("\(header.name): \(header.value)\r\n".utf8)) }
            output.append(Data("\r\n".utf8))
        }
        output.append(response.body)
        if options.fail && response.status >= 400 {
            Output.error("the server answered \(response.statusLine); the body was not written (run without --fail to see the server's explanation)")
            return 22
        }
        try write(output, to: options.output)
        return 0
    }

    /// Writes to a temporary file and renames it, so a failed run never leaves a half-written file.
    static func write(_ data: Data, to path: String?) throws(KeyBridgeError) {
        guard let path else {
            do {
                try FileHandle.standardOutput.write(contentsOf: data)
            } catch {
                throw KeyBridgeError(.output, "cannot write the response to standard output (\(error.localizedDescription)); check the disk or the pipe, or use -o FILE")
            }
            return
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw KeyBridgeError(.file, "\(path) is a directory; give -o a file name")
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: folder) else {
            throw KeyBridgeError(.file, "the folder \(folder) does not exist; create it or choose another -o path")
        }
        // A device or pipe (/dev/null, a FIFO) is written in place: the atomic write renames a
        // temporary file over the path, which (as root) replaced /dev/null with a regular file.
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
            guard let handle = FileHandle(forWritingAtPath: path) else {
                throw KeyBridgeError(.file, "cannot open \(path) for writing; check its permissions or choose another -o path")
            }
            do {
                try handle.write(contentsOf: data)
                try handle.close()
            } catch {
                throw KeyBridgeError(.file, "cannot write the response to \(path) (\(error.localizedDescription))")
            }
            return
        }
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw KeyBridgeError(.file, "cannot write the response to \(path) (\(error.localizedDescription)); check that the folder is writable")
        }
    }
}

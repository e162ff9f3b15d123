// keybridge-probe: a small program the isolation tests run as a separate process, so they can
// look at a KeyBridge client from outside (its memory, its behaviour across fork).
//
//   keybridge-probe requests --url URL --cert CHAIN --cacert ROOT --key URI --count N [--hold]
//       N requests, each with a fresh client: the key is loaded (with a test signature) and a
//       full mTLS handshake signs on the token. Prints "done N". With --hold it then goes on
//       making requests until standard input is closed, so the caller can read its memory while
//       the key is in use, and prints "held K".
//   keybridge-probe fork --key URI --out DIR [--scheme rsa-pkcs1|ecdsa]
//       Signs through the OpenSSL provider in the parent, forks, signs in the child, and signs
//       again in the parent while and after the child runs. Writes each message and signature
//       and the public key to DIR for checking with openssl, and prints the token's session
//       epoch before the fork, in the child and in the parent.
//
// Exit status 0 on success, 1 on a failure (the reason on standard error), 2 on usage.
import Foundation
import KeyBridgeProvider
import KeyBridgeTLS
import PKCS11
#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("keybridge-probe: \(message)\n".utf8))
    exit(status)
}

func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// `--name value` pairs and bare flags.
struct Options {
    var values: [String: String] = [:]
    var flags: Set<String> = []

    init(_ arguments: ArraySlice<String>, flags known: Set<String>) {
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            guard argument.hasPrefix("--") else { fail("unexpected argument '\(argument)'", status: 2) }
            let name = String(argument.dropFirst(2))
            if known.contains(name) {
                flags.insert(name)
            } else {
                guard let value = rest.popFirst() else { fail("--\(name) needs a value", status: 2) }
                values[name] = value
            }
        }
    }

    func required(_ name: String) -> String {
        guard let value = values[name] else { fail("--\(name) is required", status: 2) }
        return value
    }
}

// MARK: requests

func request(_ configuration: TLSConfiguration, url: String) throws -> Int {
    let client = try HTTPClient(configuration: configuration)
    client.totalTimeout = 30
    return try client.send(HTTPRequest(url: url)).status
}

func runRequests(_ options: Options) {
    let configuration = TLSConfiguration(certificateChain: .pemFile(options.required("cert")),
                                         key: .pkcs11(options.required("key")),
                                         trustRoots: .pemFile(options.required("cacert")))
    let url = options.required("url")
    guard let count = Int(options.required("count")), count > 0 else { fail("--count must be a positive number", status: 2) }
    for index in 0..<count {
        do {
            let status = try request(configuration, url: url)
            guard status == 200 else { fail("request \(index + 1) answered HTTP \(status)") }
        } catch {
            fail("request \(index + 1) failed: \(error)")
        }
    }
    say("done \(count)")
    guard options.flags.contains("hold") else { return }
    let lock = NSLock()
    nonisolated(unsafe) var stdinClosed = false
    let reader = Thread {
        _ = FileHandle.standardInput.readDataToEndOfFile()
        lock.withLock { stdinClosed = true }
    }
    reader.start()
    var held = 0
    while !lock.withLock({ stdinClosed }) {
        do {
            let status = try request(configuration, url: url)
            guard status == 200 else { fail("held request \(held + 1) answered HTTP \(status)") }
            held += 1
        } catch {
            fail("held request \(held + 1) failed: \(error)")
        }
    }
    say("held \(held)")
}

// MARK: fork

func runFork(_ options: Options) {
    let uri = options.required("key")
    let directory = options.required("out")
    let scheme: SignatureScheme
    switch options.values["scheme"] ?? "rsa-pkcs1" {
    case "rsa-pkcs1": scheme = .rsaPKCS1(.sha256)
    case "ecdsa": scheme = .ecdsa(.sha256)
    default: fail("--scheme is rsa-pkcs1 or ecdsa", status: 2)
    }
    let key: ProviderKey
    let token: Token
    do {
        key = try ProviderKey(uri: uri)
        token = try PrivateKey.resolve(PKCS11URI(parsing: uri), allowPrompt: false).token
        try Data(key.publicKeyPEM().utf8).write(to: URL(fileURLWithPath: directory + "/public.pem"))
    } catch {
        fail("cannot open the key: \(error)")
    }

    func signAndWrite(_ name: String) throws {
        let message = Array("\(name) signed by pid \(getpid())".utf8)
        let signature = try key.sign(message, scheme: scheme)
        try Data(message).write(to: URL(fileURLWithPath: "\(directory)/\(name).msg"))
        try Data(signature).write(to: URL(fileURLWithPath: "\(directory)/\(name).sig"))
    }

    do {
        try signAndWrite("parent-before")
    } catch {
        fail("the parent's signature before the fork failed: \(error)")
    }
    let epochBefore = token.epoch
    let child = fork()
    if child < 0 { fail("fork failed: \(String(cString: strerror(errno)))") }
    if child == 0 {
        // The child uses the parent's key object as it is: the module notices the new pid and
        // starts itself again on this first use.
        do {
            try signAndWrite("child")
            try signAndWrite("child-again")
        } catch {
            FileHandle.standardError.write(Data("keybridge-probe: the child's signature failed: \(error)\n".utf8))
            _exit(1)
        }
        say("child epoch \(epochBefore) -> \(token.epoch)")
        // _exit: no atexit handlers of the parent's libraries run twice.
        _exit(0)
    }
    do {
        try signAndWrite("parent-during")
    } catch {
        fail("the parent's signature while the child ran failed: \(error)")
    }
    var status: Int32 = 0
    while waitpid(child, &status, 0) < 0 && errno == EINTR {}
    let exited = status & 0x7f == 0
    let code = (status >> 8) & 0xff
    guard exited, code == 0 else { fail("the child failed (wait status \(status))") }
    do {
        try signAndWrite("parent-after")
    } catch {
        fail("the parent's signature after the child failed: \(error)")
    }
    say("parent epoch \(epochBefore) -> \(token.epoch)")
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else { fail("usage: keybridge-probe requests|fork --option value ...", status: 2) }
switch arguments[1] {
case "requests": runRequests(Options(arguments.dropFirst(2), flags: ["hold"]))
case "fork": runFork(Options(arguments.dropFirst(2), flags: []))
default: fail("unknown command '\(arguments[1])'; use requests or fork", status: 2)
}

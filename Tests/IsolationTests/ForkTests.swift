import Foundation
import KeyBridgeTestSupport
import XCTest

/// Signing across `fork`: `keybridge-probe fork` signs through the OpenSSL provider in the
/// parent, forks, signs twice in the child with the parent's key object, and signs in the parent
/// while and after the child runs. The child must start the module again on first use (a new
/// session epoch) and the parent must go on with its own sessions (same epoch). Every signature
/// is checked by the openssl command.
final class ForkTests: XCTestCase {
    // Computed, so listing the tests (swift test --filter) starts no server.
    var remote: RemoteToken { RemoteToken.shared }

    private static let names = ["parent-before", "child", "child-again", "parent-during", "parent-after"]

    private func runProbe(key uri: String, scheme: String) throws -> (folder: String, output: String) {
        let folder = try Command.temporaryDirectory()
        let probe = URL(fileURLWithPath: KeyBridgeExecutable.path).deletingLastPathComponent().appendingPathComponent("keybridge-probe").path
        let result = try Command.run([probe, "fork", "--key", uri, "--out", folder, "--scheme", scheme], environment: remote.environment)
        XCTAssertEqual(result.status, 0, result.combined)
        return (folder, result.standardOutput)
    }

    private func verify(_ folder: String, signature: String, message: String) throws -> Bool {
        let result = try Command.run(["openssl", "dgst", "-sha256", "-verify", folder + "/public.pem",
                                      "-signature", "\(folder)/\(signature).sig", "\(folder)/\(message).msg"])
        return result.status == 0 && result.standardOutput.contains("Verified OK")
    }

    private func assertForkWorks(key uri: String, scheme: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (folder, output) = try runProbe(key: uri, scheme: scheme)
        for name in Self.names {
            XCTAssertTrue(try verify(folder, signature: name, message: name), "\(name): openssl rejects the signature", file: file, line: line)
        }
        // Control: a signature does not verify over another message, so the checks above can fail.
        XCTAssertFalse(try verify(folder, signature: "parent-before", message: "child"), "openssl accepted a wrong message", file: file, line: line)
        // The messages name the pid that signed them: the child's differs from the parent's.
        let parent = try String(contentsOfFile: folder + "/parent-before.msg", encoding: .utf8)
        let child = try String(contentsOfFile: folder + "/child.msg", encoding: .utf8)
        XCTAssertNotEqual(parent.split(separator: " ").last, child.split(separator: " ").last, file: file, line: line)
        XCTAssertTrue(output.contains("child epoch 0 -> 1"), "the child did not start the module again: \(output)", file: file, line: line)
        XCTAssertTrue(output.contains("parent epoch 0 -> 0"), "the parent lost its sessions: \(output)", file: file, line: line)
    }

    func testSoftHSMInProcessSignsInParentChildAndParentAgain() throws {
        try assertForkWorks(key: remote.local.rsaURI, scheme: "rsa-pkcs1")
        try assertForkWorks(key: remote.local.ecURI, scheme: "ecdsa")
    }

    func testRemoteTokenSignsInParentChildAndParentAgain() throws {
        try assertForkWorks(key: try remote.keyURI("rsa"), scheme: "rsa-pkcs1")
        try assertForkWorks(key: try remote.keyURI("ec"), scheme: "ecdsa")
    }

    // MARK: A C program with the loadable module

    /// The same sequence from a C program that knows nothing of Swift: it loads
    /// libkeybridge-provider.so through OPENSSL_CONF, opens the key with OSSL_STORE and signs
    /// with EVP_DigestSign before, across and after fork.
    private static let forkProgram = #"""
    #include <openssl/evp.h>
    #include <openssl/pem.h>
    #include <openssl/store.h>
    #include <openssl/err.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/wait.h>
    #include <unistd.h>

    static EVP_PKEY *load_key(const char *uri) {
        OSSL_STORE_CTX *store = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL);
        EVP_PKEY *key = NULL;
        if (store == NULL) return NULL;
        while (key == NULL && !OSSL_STORE_eof(store)) {
            OSSL_STORE_INFO *info = OSSL_STORE_load(store);
            if (info == NULL) continue;
            if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY) key = OSSL_STORE_INFO_get1_PKEY(info);
            OSSL_STORE_INFO_free(info);
        }
        OSSL_STORE_close(store);
        return key;
    }

    static int write_file(const char *dir, const char *name, const char *suffix, const unsigned char *data, size_t length) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.%s", dir, name, suffix);
        FILE *file = fopen(path, "wb");
        if (file == NULL) return 0;
        int ok = fwrite(data, 1, length, file) == length;
        return fclose(file) == 0 && ok;
    }

    static int sign(EVP_PKEY *key, const char *dir, const char *name) {
        char message[256];
        int length = snprintf(message, sizeof message, "%s signed by pid %d", name, (int)getpid());
        unsigned char signature[1024];
        size_t signature_length = sizeof signature;
        EVP_MD_CTX *context = EVP_MD_CTX_new();
        int ok = context != NULL
            && EVP_DigestSignInit_ex(context, NULL, "SHA256", NULL, NULL, key, NULL) == 1
            && EVP_DigestSign(context, signature, &signature_length, (unsigned char *)message, (size_t)length) == 1
            && write_file(dir, name, "msg", (unsigned char *)message, (size_t)length)
            && write_file(dir, name, "sig", signature, signature_length);
        EVP_MD_CTX_free(context);
        if (!ok) { fprintf(stderr, "%s: signing failed\n", name); ERR_print_errors_fp(stderr); }
        return ok;
    }

    int main(int argc, char **argv) {
        if (argc != 3) { fprintf(stderr, "usage: fork-probe URI DIR\n"); return 2; }
        EVP_PKEY *key = load_key(argv[1]);
        if (key == NULL) { fprintf(stderr, "cannot load %s\n", argv[1]); ERR_print_errors_fp(stderr); return 1; }
        char path[4096];
        snprintf(path, sizeof path, "%s/public.pem", argv[2]);
        FILE *public_file = fopen(path, "w");
        if (public_file == NULL || PEM_write_PUBKEY(public_file, key) != 1) return 1;
        fclose(public_file);
        if (!sign(key, argv[2], "parent-before")) return 1;
        pid_t child = fork();
        if (child < 0) return 1;
        if (child == 0) _exit(sign(key, argv[2], "child") && sign(key, argv[2], "child-again") ? 0 : 1);
        if (!sign(key, argv[2], "parent-during")) return 1;
        int status = 0;
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "the child failed\n");
            return 1;
        }
        if (!sign(key, argv[2], "parent-after")) return 1;
        EVP_PKEY_free(key);
        puts("forked and signed");
        return 0;
    }
    """#

    /// A C compiler: `cc` if installed, else the clang that comes with the Swift toolchain.
    private func cCompiler() throws -> String {
        for candidate in ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        let swift = try Command.run(["sh", "-c", "command -v swift || echo /opt/swift/usr/bin/swift"]).standardOutput
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let clang = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: swift)) ?? swift)
            .deletingLastPathComponent().appendingPathComponent("clang").path
        guard FileManager.default.isExecutableFile(atPath: clang) else { throw CommandError(message: "no C compiler (cc, gcc, clang)") }
        return clang
    }

    /// Compiles the C program; returns the folder that holds it.
    private func compileForkProgram() throws -> String {
        let folder = try Command.temporaryDirectory()
        try Self.forkProgram.write(toFile: folder + "/fork-probe.c", atomically: true, encoding: .utf8)
        let compiled = try Command.run([try cCompiler(), "-o", folder + "/fork-probe", folder + "/fork-probe.c", "-lcrypto"])
        guard compiled.status == 0 else { throw CommandError(message: "cannot compile the C fork probe: \(compiled.combined)") }
        return folder
    }

    private func assertCProgramForks(in folder: String, module: String, keyURI: String,
                                     file: StaticString = #filePath, line: UInt = #line) throws {
        let moduleDirectory = URL(fileURLWithPath: KeyBridgeExecutable.path).deletingLastPathComponent().path
        let out = try Command.temporaryDirectory()
        try """
        openssl_conf = openssl_init
        [openssl_init]
        providers = provider_sect
        [provider_sect]
        default = default_sect
        keybridge = keybridge_sect
        [default_sect]
        activate = 1
        [keybridge_sect]
        module = \(moduleDirectory)/libkeybridge-provider.so
        pkcs11-module-path = \(module)
        pkcs11-module-token-pin = file:\(remote.local.stateDirectory)/user.pin
        activate = 1

        """.write(toFile: out + "/openssl.cnf", atomically: true, encoding: .utf8)
        var environment = remote.environment
        environment["OPENSSL_CONF"] = out + "/openssl.cnf"
        environment.removeValue(forKey: "KEYBRIDGE_PKCS11_MODULE")
        let result = try Command.run([folder + "/fork-probe", keyURI, out], environment: environment)
        XCTAssertEqual(result.status, 0, result.combined, file: file, line: line)
        XCTAssertTrue(result.standardOutput.contains("forked and signed"), result.combined, file: file, line: line)
        for name in Self.names {
            XCTAssertTrue(try verify(out, signature: name, message: name), "\(name): openssl rejects the signature", file: file, line: line)
        }
        XCTAssertFalse(try verify(out, signature: "child", message: "parent-after"), "openssl accepted a wrong message", file: file, line: line)
    }

    func testCProgramWithTheLoadableModuleSignsAcrossFork() throws {
        // A URI with neither module-path nor PIN: the OpenSSL configuration supplies both.
        let uri = "pkcs11:token=keybridge;object=client-ec;type=private"
        let program = try compileForkProgram()
        try assertCProgramForks(in: program, module: "/usr/lib/softhsm/libsofthsm2.so", keyURI: uri)
        try assertCProgramForks(in: program, module: remote.clientModule, keyURI: uri)
    }
}

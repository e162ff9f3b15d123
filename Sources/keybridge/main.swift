import Foundation
import KeyBridgeTLS
import PKCS11

/// The `keybridge` command line. Each subcommand returns its exit status.
Output.reserveStandardDescriptors()
let arguments = Array(CommandLine.arguments.dropFirst())
let status: Int32
switch arguments.first {
case "request":
    status = RequestCommand.run(Array(arguments.dropFirst()))
case "cert":
    status = CertCommand.run(Array(arguments.dropFirst()))
case "serve":
    status = ServeCommand.run(Array(arguments.dropFirst()))
case "mock-bank":
    status = MockBankCommand.run(Array(arguments.dropFirst()))
case "keys":
    status = KeysCommand.run(Array(arguments.dropFirst()))
case "doctor":
    status = DoctorCommand.run(Array(arguments.dropFirst()))
case "help" where arguments.count == 2 && arguments[1] == "--man":
    print(ManPage.render(), terminator: "")
    status = 0
case "bench":
    status = BenchCommand.run(Array(arguments.dropFirst()))
case "-h", "--help", "help", nil:
    print(Help.overview)
    status = arguments.isEmpty ? 2 : 0
case "--version", "version":
    print("keybridge \(KeyBridgeVersion.current)")
    status = 0
case let other?:
    Output.error("unknown command '\(other)'; run 'keybridge --help' for the list")
    status = 2
}
exit(status)

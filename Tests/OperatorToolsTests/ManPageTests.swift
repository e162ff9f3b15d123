import Foundation
import KeyBridgeTestSupport
import XCTest

/// docs/keybridge.1 is made from the CLI's own help texts and lists exactly its commands.
final class ManPageTests: XCTestCase {
    private var manPagePath: String { TestToken.repositoryRoot + "/docs/keybridge.1" }

    /// Command names from the "Commands:" block of `keybridge --help` output.
    private func commands(inHelp text: String) -> [String] {
        var names: [String] = []
        var inside = false
        for line in text.components(separatedBy: "\n") {
            if line == "Commands:" { inside = true; continue }
            guard inside else { continue }
            if line.isEmpty { break }
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { continue }
            let name = String(line.dropFirst(2).prefix { $0 != " " })
            if !name.hasPrefix("-") { names.append(name) }
        }
        return names
    }

    private func commands(inManPage text: String) -> [String] {
        text.components(separatedBy: "\n").compactMap { line in
            guard line.hasPrefix(".SS \"keybridge ") else { return nil }
            return String(line.dropFirst(".SS \"keybridge ".count).dropLast())
        }
    }

    func testCommittedManPageIsWhatTheCLIGenerates() throws {
        let generated = try KeyBridgeExecutable.run(["help", "--man"])
        XCTAssertEqual(generated.status, 0, generated.standardError)
        let committed = try String(contentsOfFile: manPagePath, encoding: .utf8)
        XCTAssertEqual(generated.standardOutput, committed, "docs/keybridge.1 is stale; run 'make man'")
    }

    func testManPageListsExactlyTheCLICommands() throws {
        let help = try KeyBridgeExecutable.run(["--help"])
        XCTAssertEqual(help.status, 0)
        let cli = commands(inHelp: help.standardOutput)
        let page = commands(inManPage: try String(contentsOfFile: manPagePath, encoding: .utf8))
        XCTAssertEqual(page, cli)
        XCTAssertTrue(cli.contains("keys") && cli.contains("doctor") && cli.contains("request"), "\(cli)")
        // Control: a command added to the CLI's list without the man page is noticed.
        let extended = help.standardOutput.replacingOccurrences(of: "Commands:\n", with: "Commands:\n  frobnicate     Not in the man page\n")
        XCTAssertNotEqual(commands(inHelp: extended), page)
    }

    private static let helpInvocations = [["--help"], ["request", "--help"], ["cert", "--help"], ["cert", "inspect", "--help"],
                                          ["serve", "--help"], ["mock-bank", "--help"], ["keys", "--help"], ["keys", "list", "--help"],
                                          ["keys", "generate", "--help"], ["keys", "csr", "--help"], ["keys", "import-cert", "--help"],
                                          ["doctor", "--help"], ["bench", "--help"]]

    /// Lines wider than `columns` characters.
    private func overWide(_ text: String, columns: Int) -> [String] {
        text.components(separatedBy: "\n").filter { $0.count > columns }
    }

    /// Help texts are at most 78 columns, and the man page, rendered for an 80-column terminal,
    /// has no line wider than 80 (help blocks are indented by two).
    func testHelpTextsAndTheRenderedManPageFitEightyColumns() throws {
        for arguments in Self.helpInvocations {
            let result = try KeyBridgeExecutable.run(arguments)
            XCTAssertEqual(result.status, 0, "\(arguments): \(result.combined)")
            XCTAssertEqual(overWide(result.standardOutput, columns: 78), [], "keybridge \(arguments.joined(separator: " "))")
        }
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/man"), "man (man-db) is not installed")
        let rendered = try Command.run(["/usr/bin/man", "-l", manPagePath], environment: ["MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0",
                                                                                         "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"])
        XCTAssertEqual(rendered.status, 0, rendered.standardError)
        // Bold and underline come as overstrikes (X, backspace, X): keep the visible character.
        let plain = rendered.standardOutput.replacingOccurrences(of: ".\u{8}", with: "", options: .regularExpression)
        XCTAssertTrue(plain.contains("keybridge keys list --token URI"), "the rendered page lacks the help texts")
        XCTAssertEqual(overWide(plain, columns: 80), [])
        // Control: a line of 81 characters is caught.
        XCTAssertEqual(overWide("short\n" + String(repeating: "x", count: 81), columns: 80).count, 1)
    }

    /// Every line each command prints for --help is in the man page, in the same order.
    func testEveryHelpTextIsInTheManPage() throws {
        let page = try String(contentsOfFile: manPagePath, encoding: .utf8)
            .components(separatedBy: "\n")
            .map { $0.replacingOccurrences(of: "\\&", with: "").replacingOccurrences(of: "\\e", with: "\\") }
            .joined(separator: "\n")
        let invocations = [["request", "--help"], ["cert", "--help"], ["cert", "inspect", "--help"], ["serve", "--help"],
                           ["mock-bank", "--help"], ["keys", "--help"], ["keys", "list", "--help"], ["keys", "generate", "--help"],
                           ["keys", "csr", "--help"], ["keys", "import-cert", "--help"], ["doctor", "--help"]]
        for arguments in invocations {
            let result = try KeyBridgeExecutable.run(arguments)
            XCTAssertEqual(result.status, 0, "\(arguments): \(result.combined)")
            let text = result.standardOutput.trimmingCharacters(in: .newlines)
            XCTAssertFalse(text.isEmpty, "\(arguments) printed no help")
            XCTAssertTrue(page.contains(text), "the man page lacks the help of 'keybridge \(arguments.dropLast().joined(separator: " "))'")
        }
        // Control: text no command prints is not found, so the check above can fail.
        XCTAssertFalse(page.contains("Usage: keybridge frobnicate"))
    }
}

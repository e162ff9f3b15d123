import Foundation
import XCTest
@testable import KeyBridgeBench

/// The non-timing logic of the benchmark: order statistics, paired ratios, targets and the
/// shape of the JSON and Markdown it writes.
final class BenchReportTests: XCTestCase {
    func testMedianOfOddAndEvenCounts() {
        XCTAssertEqual(BenchStatistics.median([5, 1, 3]), 3)
        XCTAssertEqual(BenchStatistics.median([4, 1, 3, 2]), 2.5)
        XCTAssertNil(BenchStatistics.median([]))
        XCTAssertEqual(BenchStatistics.median([.nan, 7]), 7)
    }

    func testNearestRankPercentiles() {
        let values = (1...100).map(Double.init).shuffled()
        XCTAssertEqual(BenchStatistics.percentile(values, 50), 50)
        XCTAssertEqual(BenchStatistics.percentile(values, 99), 99)
        XCTAssertEqual(BenchStatistics.percentile(values, 100), 100)
        XCTAssertEqual(BenchStatistics.percentile([3], 99), 3)
        XCTAssertNil(BenchStatistics.percentile([], 50))
    }

    func testMedianRatioPairsRoundsAndSkipsZeroDenominators() {
        // Round by round: 2/1, 3/3, 8/2, 5/0 (skipped) -> median of [2, 1, 4] is 2.
        XCTAssertEqual(BenchStatistics.medianRatio([2, 3, 8, 5], [1, 3, 2, 0]), 2)
        // Not the ratio of the medians (3.5 / 1.5), which a drifting machine would skew.
        XCTAssertNotEqual(BenchStatistics.medianRatio([2, 3, 8, 4], [1, 3, 2, 0]), 3.5 / 1.5)
    }

    func testTargetsAreJudgedInTheirDirection() {
        XCTAssertEqual(BenchRatio("a", 0.98, target: 0.97).met, true)
        XCTAssertEqual(BenchRatio("a", 0.96, target: 0.97).met, false)
        XCTAssertEqual(BenchRatio("p99", 0.4, target: 1, .atMost).met, true)
        XCTAssertEqual(BenchRatio("p99", 1.2, target: 1, .atMost).met, false)
        XCTAssertEqual(BenchRatio("a", .nan, target: 1).met, false, "an unmeasured ratio must not count as met")
        XCTAssertNil(BenchRatio("a", 2).met)
    }

    func testJSONCarriesEveryFigureAndRatio() throws {
        var section = BenchSection(id: "1", title: "Signature overhead", notes: ["how"])
        section.rows.append(BenchRow("RSA", [BenchFigure("provider/s", 900), BenchFigure("raw C_Sign/s", nil)],
                                     ratios: [BenchRatio("provider/raw", 0.99, target: 0.97)]))
        let report = BenchReport(started: "2026-01-01T00:00:00Z", durationSeconds: 12, machine: ["cores": "2"], sections: [section])
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: report.json()) as? [String: Any])
        let sections = try XCTUnwrap(object["sections"] as? [[String: Any]])
        let row = try XCTUnwrap((sections.first?["rows"] as? [[String: Any]])?.first)
        let figures = try XCTUnwrap(row["figures"] as? [[String: Any]])
        XCTAssertEqual(figures.first?["value"] as? Double, 900)
        XCTAssertEqual(figures.count, 2)
        let ratio = try XCTUnwrap((row["ratios"] as? [[String: Any]])?.first)
        XCTAssertEqual(ratio["met"] as? Bool, true)
        XCTAssertEqual(ratio["target"] as? Double, 0.97)
        XCTAssertEqual(ratio["comparison"] as? String, ">=")
        // Round trip: what is written can be read back as the same report.
        XCTAssertEqual(try JSONDecoder().decode(BenchReport.self, from: report.json()), report)
    }

    func testNaNIsWrittenAsAStringNotRejected() throws {
        let report = BenchReport(started: "x", sections: [BenchSection(id: "1", title: "t", rows: [BenchRow("r", [], ratios: [BenchRatio("q", .nan)])])])
        XCTAssertTrue(String(decoding: try report.json(), as: UTF8.self).contains("\"nan\""))
    }

    func testMarkdownTableHasOneColumnPerFigureAndMarksMissedTargets() {
        let section = BenchSection(id: "2", title: "Handshakes", rows: [
            BenchRow("nginx TLS 1.3 RSA", [BenchFigure("token/s", 250), BenchFigure("file/s", 300)],
                     ratios: [BenchRatio("token/file", 0.83, target: 0.92)]),
            BenchRow("nginx TLS 1.2 EC", [BenchFigure("token/s", 400), BenchFigure("engine/s", 380)]),
        ])
        let text = BenchReport(started: "x", sections: [section]).markdown()
        XCTAssertTrue(text.contains("| case | token/s | file/s | engine/s | token/file |"), text)
        XCTAssertTrue(text.contains("| nginx TLS 1.3 RSA | 250 | 300 |  | 0.830 (>= 0.920 ✗) |"), text)
        XCTAssertTrue(text.contains("| nginx TLS 1.2 EC | 400 |  | 380 |  |"), text)
        XCTAssertTrue(text.contains("| 2 | nginx TLS 1.3 RSA | token/file | 0.830 | >= 0.920 | **no** |"), text)
    }

    func testFormatKeepsThreeSignificantDigits() {
        XCTAssertEqual(BenchReport.format(1234.6), "1235")
        XCTAssertEqual(BenchReport.format(12.345), "12.3")
        XCTAssertEqual(BenchReport.format(0.9712), "0.971")
        XCTAssertEqual(BenchReport.format(nil), "–")
        XCTAssertEqual(BenchReport.format(.infinity), "–")
    }
}

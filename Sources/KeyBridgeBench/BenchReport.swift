import Foundation

/// A ratio the issue sets a target for, and whether this run met it.
public struct BenchRatio: Sendable, Codable, Equatable {
    public enum Comparison: String, Sendable, Codable {
        /// The ratio must be at least the target.
        case atLeast = ">="
        /// The figure must be at most the target.
        case atMost = "<="
    }

    public var name: String
    public var value: Double
    public var target: Double?
    public var comparison: Comparison
    /// `nil` when there is no target.
    public var met: Bool?

    public init(_ name: String, _ value: Double, target: Double? = nil, _ comparison: Comparison = .atLeast) {
        self.name = name
        self.value = value
        self.target = target
        self.comparison = comparison
        if let target, value.isFinite {
            met = comparison == .atLeast ? value >= target : value <= target
        } else {
            met = target == nil ? nil : false
        }
    }
}

/// One line of a section: named figures in column order, and an optional ratio with its target.
public struct BenchRow: Sendable, Codable, Equatable {
    public var label: String
    /// Column name and value; `nil` when the figure could not be measured.
    public var figures: [BenchFigure]
    public var ratios: [BenchRatio]

    public init(_ label: String, _ figures: [BenchFigure], ratios: [BenchRatio] = []) {
        self.label = label
        self.figures = figures
        self.ratios = ratios
    }

    public func value(_ name: String) -> Double? { figures.first { $0.name == name }?.value }
}

public struct BenchFigure: Sendable, Codable, Equatable {
    public var name: String
    public var value: Double?
    public init(_ name: String, _ value: Double?) {
        self.name = name
        self.value = value
    }
}

/// One item of the benchmark (a table).
public struct BenchSection: Sendable, Codable, Equatable {
    public var id: String
    public var title: String
    public var rows: [BenchRow]
    /// How it was measured, and anything that went wrong.
    public var notes: [String]

    public init(id: String, title: String, rows: [BenchRow] = [], notes: [String] = []) {
        self.id = id
        self.title = title
        self.rows = rows
        self.notes = notes
    }
}

/// Everything one run measured; written as JSON and printed as Markdown tables.
public struct BenchReport: Sendable, Codable, Equatable {
    public var started: String
    public var durationSeconds: Double
    public var machine: [String: String]
    public var sections: [BenchSection]

    public init(started: String, durationSeconds: Double = 0, machine: [String: String] = [:], sections: [BenchSection] = []) {
        self.started = started
        self.durationSeconds = durationSeconds
        self.machine = machine
        self.sections = sections
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(self)
    }

    /// Every ratio that has a target, for the summary.
    public var targets: [(section: String, row: String, ratio: BenchRatio)] {
        sections.flatMap { section in
            section.rows.flatMap { row in
                row.ratios.filter { $0.target != nil }.map { (section.id, row.label, $0) }
            }
        }
    }

    /// Markdown: one table per section, then the list of targets.
    public func markdown() -> String {
        var text = ""
        for section in sections {
            text += "#### \(section.id). \(section.title)\n\n"
            text += BenchReport.table(section.rows)
            for note in section.notes { text += "\n- \(note)" }
            text += section.notes.isEmpty ? "\n" : "\n\n"
        }
        let targets = targets
        if !targets.isEmpty {
            text += "#### Targets\n\n| item | case | ratio | value | target | met |\n|---|---|---|---|---|---|\n"
            for (section, row, ratio) in targets {
                text += "| \(section) | \(row) | \(ratio.name) | \(BenchReport.format(ratio.value)) | \(ratio.comparison.rawValue) \(BenchReport.format(ratio.target ?? .nan)) | \(ratio.met == true ? "yes" : "**no**") |\n"
            }
        }
        return text
    }

    static func table(_ rows: [BenchRow]) -> String {
        guard !rows.isEmpty else { return "(no figures)\n" }
        // Columns in order of first appearance, so rows may differ.
        var columns: [String] = []
        var ratioColumns: [String] = []
        for row in rows {
            for figure in row.figures where !columns.contains(figure.name) { columns.append(figure.name) }
            for ratio in row.ratios where !ratioColumns.contains(ratio.name) { ratioColumns.append(ratio.name) }
        }
        var text = "| case | " + (columns + ratioColumns).joined(separator: " | ") + " |\n"
        text += "|---|" + String(repeating: "---:|", count: columns.count + ratioColumns.count) + "\n"
        for row in rows {
            let cells = columns.map { name in row.figures.first { $0.name == name }.map { format($0.value) } ?? "" }
            let ratioCells = ratioColumns.map { name -> String in
                guard let ratio = row.ratios.first(where: { $0.name == name }) else { return "" }
                let value = format(ratio.value)
                guard let target = ratio.target else { return value }
                return "\(value) (\(ratio.comparison.rawValue) \(format(target)) \(ratio.met == true ? "✓" : "✗"))"
            }
            text += "| \(row.label) | " + (cells + ratioCells).joined(separator: " | ") + " |\n"
        }
        return text
    }

    /// Three significant digits, no exponent, "–" for a missing figure.
    public static func format(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "–" }
        let magnitude = abs(value)
        if magnitude >= 100 { return String(format: "%.0f", value) }
        if magnitude >= 10 { return String(format: "%.1f", value) }
        if magnitude >= 1 { return String(format: "%.2f", value) }
        if magnitude == 0 { return "0" }
        return String(format: "%.3f", value)
    }
}

/// Order statistics for the timing samples.
public enum BenchStatistics {
    /// The median; the mean of the two middle values for an even count. `nil` when empty.
    public static func median(_ values: [Double]) -> Double? {
        let sorted = values.filter { !$0.isNaN }.sorted()
        guard !sorted.isEmpty else { return nil }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// The p-th percentile (0...100) by the nearest-rank method. `nil` when empty.
    public static func percentile(_ values: [Double], _ p: Double) -> Double? {
        let sorted = values.filter { !$0.isNaN }.sorted()
        guard !sorted.isEmpty else { return nil }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    /// Per-round ratios of paired samples (a[i] / b[i]), for the interleaved comparisons.
    public static func pairedRatios(_ a: [Double], _ b: [Double]) -> [Double] {
        zip(a, b).compactMap { $1 > 0 ? $0 / $1 : nil }
    }

    /// The median of the per-round ratios.
    public static func medianRatio(_ a: [Double], _ b: [Double]) -> Double? {
        median(pairedRatios(a, b))
    }
}

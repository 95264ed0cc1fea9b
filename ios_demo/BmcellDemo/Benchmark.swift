import CoreML
import Foundation

/// Benchmark mode, started with launch arguments (README.md), e.g.
///
///   xcrun simctl launch booted org.bmcell.BmcellDemo -benchmark YES -runs 50 -warmup 10
///
/// It times the bundled model the way `bmcell bench` does (export/bench.py: bench_row, latency_ms): a timed load,
/// `warmup` untimed and `runs` timed classifications, p50/p90 with numpy's linear percentile, once with Core ML
/// allowed every compute unit (.all: CPU, GPU, Neural Engine) and once on the CPU only. It writes bench.json with
/// the fields of bench.json (device, threads_all, runs, warmup, batch, image_size, rows) to the app's Documents
/// folder, or bench.error.txt with the reason. Core ML has no thread-count control, so the 1-thread columns are null.
enum Benchmark {
    static let json = "bench.json"
    static let error = "bench.error.txt"

    static var requested: Bool { UserDefaults.standard.bool(forKey: "benchmark") }

    /// Run the benchmark and write the report; returns what to show on screen.
    static func run() async -> String {
        let defaults = UserDefaults.standard
        let runs = defaults.object(forKey: "runs") == nil ? 50 : defaults.integer(forKey: "runs")
        let warmup = defaults.object(forKey: "warmup") == nil ? 10 : defaults.integer(forKey: "warmup")
        let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
        try? FileManager.default.removeItem(at: documents.appendingPathComponent(json))
        try? FileManager.default.removeItem(at: documents.appendingPathComponent(error))
        do {
            guard runs >= 1, warmup >= 0 else {
                throw BundleError("runs must be >= 1 and warmup >= 0 (got runs=\(runs), warmup=\(warmup))")
            }
            let report = try await measure(runs: runs, warmup: warmup)
            let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
            let url = documents.appendingPathComponent(json)
            try data.write(to: url, options: .atomic)
            return "BMCELL_BENCH done \(url.path)"
        } catch {
            let reason = error.localizedDescription
            try? (reason + "\n").write(to: documents.appendingPathComponent(Benchmark.error), atomically: true,
                                       encoding: .utf8)
            return "BMCELL_BENCH failed: \(reason)"
        }
    }

    private static func measure(runs: Int, warmup: Int) async throws -> [String: Any] {
        var rows: [[String: Any]] = []
        var imageSize = 0
        for (label, units) in [("all", MLComputeUnits.all), ("cpuOnly", MLComputeUnits.cpuOnly)] {
            let verified = try await ModelBundle.load(computeUnits: units) // sha256 check; compiled once, cached
            let configuration = MLModelConfiguration()
            configuration.computeUnits = units
            let start = DispatchTime.now()
            let model = try MLModel(contentsOf: verified.compiledURL, configuration: configuration)
            let classifier = try Classifier(LoadedModel(info: verified.info, model: model,
                                                        compiledURL: verified.compiledURL,
                                                        precision: verified.precision, runtime: verified.runtime))
            let loadMs = milliseconds(since: start)
            let info = classifier.info
            imageSize = info.imageSize
            let picture = try Preprocessing.grey(size: info.imageSize)
            for _ in 0..<warmup { _ = try classifier.classify(picture) }
            var times: [Double] = []
            for _ in 0..<runs {
                let t = DispatchTime.now()
                _ = try classifier.classify(picture)
                times.append(milliseconds(since: t))
            }
            rows.append([
                "name": "\(info.name) (\(label))",
                "load_ms": loadMs,
                "p50_ms_1_thread": NSNull(), "p90_ms_1_thread": NSNull(),
                "p50_ms_all_threads": percentile(times, 50), "p90_ms_all_threads": percentile(times, 90),
                "precision": (classifier.loaded.precision as Any?) ?? NSNull(),
                "runtime": classifier.loaded.runtime ?? "Core ML (iOS/macOS)",
                "bytes": info.bytes,
                "val_accuracy": NSNull(), // parity is measured by `bmcell parity`, not on the phone
                "notes": "on device; Core ML compute units: \(label); Core ML chooses its threads (no 1-thread run); "
                    + "load = MLModel from the cached compiled model + VNCoreMLModel; timed through Vision "
                    + "(VNCoreMLRequest) on a constant grey \(info.imageSize)x\(info.imageSize) picture",
                "sha256": info.sha256,
            ])
        }
        return ["device": deviceName(), "threads_all": ProcessInfo.processInfo.activeProcessorCount,
                "runs": runs, "warmup": warmup, "batch": 1, "image_size": imageSize, "rows": rows]
    }

    private static func milliseconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
    }

    /// numpy.percentile's default ("linear") interpolation between the two nearest ranks.
    static func percentile(_ values: [Double], _ q: Double) -> Double {
        let sorted = values.sorted()
        let position = Double(sorted.count - 1) * q / 100
        let lower = Int(position)
        let upper = min(lower + 1, sorted.count - 1)
        return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - Double(lower))
    }

    /// e.g. "iPhone16,2 (iOS 26.1)": the hardware model identifier and the system version.
    private static func deviceName() -> String {
        var system = utsname()
        uname(&system)
        let machine = withUnsafeBytes(of: &system.machine) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return "\(machine) (iOS \(ProcessInfo.processInfo.operatingSystemVersionString))"
    }
}

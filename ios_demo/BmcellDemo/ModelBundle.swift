import CoreML
import CryptoKit
import Foundation

/// The model bundle that `bmcell export RUN --target ios --app ios_demo` writes into BmcellDemo/bmcell_model/
/// (copied into the app as a folder reference): model.mlpackage, model.json (what this app needs) and
/// manifest.json (provenance). Class names, input size and preprocessing come from model.json, never from code.
let bundleFolder = "bmcell_model"
let installHint = "run `bmcell export RUN --target ios --app ios_demo`, then rebuild the app"

/// A bundle that is missing, malformed or fails its integrity check; the message says why and what to do.
struct BundleError: LocalizedError {
    let message: String
    init(_ message: String) { self.message = message }
    var errorDescription: String? { message }
}

/// model.json's "preprocessing".
struct PreprocessingSpec: Decodable {
    let resizeShorterSideTo: Int
    let centerCrop: Int
    let interpolation: String
    let antialias: Bool?
    let scale: Double
    let mean: [Double]? // null for bmcell exports: normalisation is inside the model
    let std: [Double]?

    enum CodingKeys: String, CodingKey {
        case resizeShorterSideTo = "resize_shorter_side_to"
        case centerCrop = "center_crop"
        case interpolation, antialias, scale, mean, std
    }
}

/// model.json's "confidence" (null or absent for checkpoints without calibration): probabilities =
/// softmax(logits / temperature); a top probability below threshold is shown as "uncertain — check by eye", one
/// below confident_from (absent or null in older exports: halfway from the threshold to 1) as "low confidence — check
/// by eye". Decoded leniently — a value that is not a number becomes nil and keeps its text — so that check() can say
/// which value is unusable instead of a decoding error.
struct ConfidenceSpec: Decodable {
    let temperature: Double?
    let threshold: Double?
    let confidentFrom: Double?
    let fittedOn: String?
    let temperatureText: String
    let thresholdText: String
    let confidentFromText: String

    enum CodingKeys: String, CodingKey {
        case temperature = "temperature"
        case threshold = "threshold"
        case confidentFrom = "confident_from"
        case fittedOn = "fitted_on"
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let temperature = leniently(container, .temperature)
        self.temperature = temperature.value
        temperatureText = temperature.text
        let threshold = leniently(container, .threshold)
        self.threshold = threshold.value
        thresholdText = threshold.text
        let confidentFrom = leniently(container, .confidentFrom)
        let absent = (try? container.decodeNil(forKey: .confidentFrom)) ?? true // absent, or true when null
        self.confidentFrom = absent ? threshold.value.map { (1 + $0) / 2 } : confidentFrom.value
        confidentFromText = confidentFrom.text
        fittedOn = try? container.decodeIfPresent(String.self, forKey: .fittedOn)
    }
}

/// A number of a model.json block decoded leniently: its value, or nil, and how check() names it in a refusal (the
/// number, a string in quotes, "null (or not a number)" or "missing").
func leniently<Key: CodingKey>(_ container: KeyedDecodingContainer<Key>, _ key: Key) -> (value: Double?, text: String) {
    if let value = try? container.decode(Double.self, forKey: key) { return (value, String(value)) }
    if let text = try? container.decode(String.self, forKey: key) { return (nil, "\"\(text)\"") }
    return (nil, container.contains(key) ? "null (or not a number)" : "missing")
}

/// model.json's "novelty" (null or absent in older exports, whose model has no novelty output): the Core ML model
/// then has an output named coreml_output (absent: "novelty") holding the picture's novelty score, one value; at or
/// above threshold the picture does not look like a cell this model knows, whatever its probabilities. output_index
/// (where the score follows the class scores in the ONNX and ExecuTorch artefacts) must be the number of classes here
/// too. Decoded leniently, as ConfidenceSpec, so that check() can say which value is unusable.
struct NoveltySpec: Decodable {
    let threshold: Double?
    let outputIndex: Double?
    let coremlOutput: String
    let flaggedOnValidation: Double? // the share of the model's validation images it flags; nil when unknown
    let thresholdText: String
    let outputIndexText: String

    enum CodingKeys: String, CodingKey {
        case threshold = "threshold"
        case outputIndex = "output_index"
        case coremlOutput = "coreml_output"
        case flaggedOnValidation = "flagged_on_validation"
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let threshold = leniently(container, .threshold)
        self.threshold = threshold.value
        thresholdText = threshold.text
        let outputIndex = leniently(container, .outputIndex)
        self.outputIndex = outputIndex.value
        outputIndexText = outputIndex.text
        coremlOutput = (try? container.decode(String.self, forKey: .coremlOutput)).flatMap { $0.isEmpty ? nil : $0 }
            ?? "novelty"
        flaggedOnValidation = fraction(leniently(container, .flaggedOnValidation).value)
    }
}

/// model.json.
struct ModelInfo: Decodable {
    let name: String
    let file: String
    let sha256: String
    let bytes: Int
    let classes: [String]
    let imageSize: Int
    let preprocessing: PreprocessingSpec
    let confidence: ConfidenceSpec? // nil: no calibrated confidence (temperature 1, never "uncertain")
    let novelty: NoveltySpec? // nil: no novelty output (older exports), no picture is flagged
    let sourceWeightsSha256: String?
    let bmcellVersion: String?
    let output: String? // "probabilities" (calibrated, inside the model) or "logits"/nil (older bundles)
    let model: ModelFacts? // what the app shows about the model; nil in bundles exported before it existed

    enum CodingKeys: String, CodingKey {
        case name, file, sha256, bytes, classes, preprocessing, output, model
        case confidence = "confidence"
        case novelty = "novelty"
        case imageSize = "image_size"
        case sourceWeightsSha256 = "source_weights_sha256"
        case bmcellVersion = "bmcell_version"
    }
}

/// model.json's "model" block: the release's name, precision and the precision in words, measured accuracy, the
/// accuracy per lab at release, the model card's file in the bundle, full names of abbreviated classes, the labs whose
/// cells it was trained on and the lab it was fine-tuned on.
struct ModelFacts: Decodable {
    let name: String?
    let arch: String?
    let precision: String?
    let precisionWords: String?
    let valAccuracy: Double?
    let artefactValAccuracy: Double?
    let scores: LabScores?
    let parity: String?
    let modelCard: String?
    let classNames: [String: String]?
    let labs: TrainedLabs?
    let adaptedTo: AdaptedTo?

    enum CodingKeys: String, CodingKey {
        case name, arch, precision, parity, scores, labs
        case precisionWords = "precision_words"
        case valAccuracy = "val_accuracy"
        case artefactValAccuracy = "artefact_val_accuracy"
        case modelCard = "model_card"
        case classNames = "class_names"
        case adaptedTo = "adapted_to"
    }
}

/// A count of cells: a whole number > 0, else nil (unknown) — Messages.kt's cellCount.
func cellCount(_ value: Double?) -> Int? {
    guard let value, value >= 1, value <= Double(Int32.max), value.rounded() == value else { return nil }
    return Int(value)
}

/// A number in [0, 1], else nil.
func fraction(_ value: Double?) -> Double? {
    guard let value, value >= 0, value <= 1 else { return nil }
    return value
}

/// A lab (image set) whose cells the model was trained on (model.json's "model"."labs"); cells nil when unknown.
struct TrainedLab {
    let name: String
    let cells: Int?
}

/// model.json's "model"."labs", read leniently as the Android app's Messages.kt::trainedLabs reads them: the labs in
/// the order given; an entry that is not an object with a non-empty name is dropped, a count that is not a whole
/// number > 0 is unknown; a value that is not a list gives none.
struct TrainedLabs: Decodable {
    let entries: [TrainedLab]

    /// One element of the list: its lab, or nil when it has no name (decoding it never fails).
    private struct Entry: Decodable {
        let lab: TrainedLab?

        enum CodingKeys: String, CodingKey { case name, cells }

        init(from decoder: Decoder) {
            let fields = try? decoder.container(keyedBy: CodingKeys.self)
            guard let name = try? fields?.decode(String.self, forKey: .name), !name.isEmpty else {
                lab = nil
                return
            }
            lab = TrainedLab(name: name, cells: cellCount(try? fields?.decode(Double.self, forKey: .cells)))
        }
    }

    init(from decoder: Decoder) throws {
        let all = (try? decoder.singleValueContainer().decode([Entry].self)) ?? []
        entries = all.compactMap(\.lab)
    }
}

/// The lab the model was fine-tuned on with its own labelled cells (`bmcell finetune`): how many cells, the
/// cross-validated accuracy on them and its 95 % interval, each nil when unknown.
struct Adaptation {
    let lab: String
    let cells: Int?
    let accuracy: Double?
    let interval: (low: Double, high: Double)?
}

/// model.json's "model"."adapted_to", read leniently as Messages.kt::adaptation reads it: no adaptation without a lab
/// name; an accuracy outside [0, 1] is unknown, and so is an interval that is not two numbers in [0, 1], the lower
/// first. Decoding it never fails.
struct AdaptedTo: Decodable {
    let adaptation: Adaptation?

    enum CodingKeys: String, CodingKey { case lab, cells, accuracy, interval }

    init(from decoder: Decoder) {
        let fields = try? decoder.container(keyedBy: CodingKeys.self)
        guard let lab = try? fields?.decode(String.self, forKey: .lab), !lab.isEmpty else {
            adaptation = nil
            return
        }
        var interval: (low: Double, high: Double)?
        if let bounds = try? fields?.decode([Double].self, forKey: .interval), bounds.count == 2,
           let low = fraction(bounds[0]), let high = fraction(bounds[1]), low <= high {
            interval = (low, high)
        }
        adaptation = Adaptation(lab: lab, cells: cellCount(try? fields?.decode(Double.self, forKey: .cells)),
                                accuracy: fraction(try? fields?.decode(Double.self, forKey: .accuracy)),
                                interval: interval)
    }
}

/// One lab's score at release (model.json's "model"."scores"): the set's name, its number of images, the accuracy.
struct LabScore {
    let set: String
    let images: Int
    let accuracy: Double
}

/// model.json's "model"."scores", read leniently as the Android app's Messages.kt::labScores reads them: the usable
/// entries, the largest set first. An entry without a non-empty set name, a whole number of images > 0 and an
/// accuracy in [0, 1], or that is not an object, is dropped; a value that is not a list gives none.
struct LabScores: Decodable {
    let entries: [LabScore]

    /// One element of the list: its score, or nil when it is unusable (decoding it never fails).
    private struct Entry: Decodable {
        let score: LabScore?

        enum CodingKeys: String, CodingKey { case set, images, accuracy }

        init(from decoder: Decoder) {
            let fields = try? decoder.container(keyedBy: CodingKeys.self)
            guard let set = try? fields?.decode(String.self, forKey: .set), !set.isEmpty,
                  let images = try? fields?.decode(Double.self, forKey: .images),
                  images >= 1, images <= Double(Int32.max), images.rounded() == images, // whole, as Kotlin's
                  let accuracy = try? fields?.decode(Double.self, forKey: .accuracy), accuracy >= 0, accuracy <= 1
            else {
                score = nil
                return
            }
            score = LabScore(set: set, images: Int(images), accuracy: accuracy)
        }
    }

    init(from decoder: Decoder) throws {
        let all = (try? decoder.singleValueContainer().decode([Entry].self)) ?? []
        entries = all.compactMap(\.score).sorted { $0.images > $1.images }
    }
}

/// The fields of manifest.json this app shows (precision and runtime of its artefact).
struct Manifest: Decodable {
    struct Artefact: Decodable { let name: String; let precision: String?; let runtime: String? }
    let artefacts: [Artefact]
}

/// A verified, compiled model and what model.json says about it.
struct LoadedModel {
    let info: ModelInfo
    let model: MLModel
    let compiledURL: URL
    let precision: String?
    let runtime: String?
}

enum ModelBundle {

    /// model.json, checked; the package's URL; manifest.json's entry for the artefact, when there is one.
    static func readInfo() throws -> (info: ModelInfo, packageURL: URL, entry: Manifest.Artefact?) {
        guard let folder = Bundle.main.url(forResource: bundleFolder, withExtension: nil) else {
            throw BundleError("No model installed: the app has no \(bundleFolder) folder. To add one, \(installHint).")
        }
        let jsonURL = folder.appendingPathComponent("model.json")
        guard FileManager.default.fileExists(atPath: jsonURL.path) else {
            throw BundleError("No model installed: \(bundleFolder)/model.json is missing. To add one, \(installHint).")
        }
        let info: ModelInfo
        do {
            info = try JSONDecoder().decode(ModelInfo.self, from: Data(contentsOf: jsonURL))
        } catch {
            throw BundleError("model.json cannot be read (\(error)); \(installHint).")
        }
        try check(info)
        let packageURL = folder.appendingPathComponent(info.file)
        guard FileManager.default.fileExists(atPath: packageURL.path) else {
            throw BundleError("model.json names \(info.file), but \(bundleFolder) has no such file; \(installHint).")
        }
        let manifestURL = folder.appendingPathComponent("manifest.json")
        let manifest = (try? Data(contentsOf: manifestURL)).flatMap { try? JSONDecoder().decode(Manifest.self, from: $0) }
        return (info, packageURL, manifest?.artefacts.first { $0.name == info.name })
    }

    /// The model card installed beside model.json (model.json's "model"."model_card"), when there is one.
    static func modelCard(_ info: ModelInfo) -> String? {
        guard let name = info.model?.modelCard,
              let folder = Bundle.main.url(forResource: bundleFolder, withExtension: nil) else { return nil }
        return try? String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
    }

    /// Refuse a contract this app does not implement. Steps 6-7 (x/255, NCHW) happen inside the Core ML model,
    /// whose image input was exported with scale 1/255 and no bias: model.json must agree.
    static func check(_ info: ModelInfo) throws {
        let pre = info.preprocessing
        guard !info.classes.isEmpty else { throw BundleError("model.json lists no classes; \(installHint).") }
        guard info.file.hasSuffix(".mlpackage") else {
            throw BundleError("model.json names \(info.file); this app runs Core ML .mlpackage models (--target ios).")
        }
        guard pre.interpolation == "bilinear" else {
            throw BundleError("model.json asks for \(pre.interpolation) resizing; this app implements bilinear only.")
        }
        guard pre.centerCrop == info.imageSize, pre.resizeShorterSideTo >= info.imageSize else {
            throw BundleError("model.json's preprocessing (resize \(pre.resizeShorterSideTo), crop \(pre.centerCrop)) "
                              + "does not produce its \(info.imageSize)x\(info.imageSize) input.")
        }
        guard abs(pre.scale - 1.0 / 255.0) < 1e-9, pre.mean == nil, pre.std == nil else {
            throw BundleError("model.json asks for scale \(pre.scale) and mean/std \(String(describing: pre.mean))/"
                              + "\(String(describing: pre.std)); the Core ML model scales by 1/255 itself and nothing else.")
        }
        try checkNovelty(info)
        if let confidence = info.confidence {
            var problems: [String] = []
            if !(confidence.temperature.map { $0.isFinite && $0 > 0 } ?? false) {
                problems.append("temperature \(confidence.temperatureText) (must be a finite number > 0)")
            }
            if !(confidence.threshold.map { $0 >= 0 && $0 <= 1 } ?? false) {
                problems.append("threshold \(confidence.thresholdText) (must be a number from 0 to 1)")
            } else if let threshold = confidence.threshold,
                      !(confidence.confidentFrom.map { $0 >= threshold && $0 <= 1 } ?? false) {
                problems.append("confident_from \(confidence.confidentFromText) (must be a number from the threshold, "
                                + "\(threshold), to 1)")
            }
            guard problems.isEmpty else {
                throw BundleError("model.json's confidence has an unusable \(problems.joined(separator: " and ")): "
                                  + "refusing the model; \(installHint).")
            }
        }
    }

    /// Refuse a novelty block whose threshold is not a finite number > 0 or whose output_index is not the number of
    /// classes (Classifier checks that the model has the output it names).
    static func checkNovelty(_ info: ModelInfo) throws {
        guard let novelty = info.novelty else { return }
        let classes = info.classes.count
        var problems: [String] = []
        if !(novelty.threshold.map { $0.isFinite && $0 > 0 } ?? false) {
            problems.append("threshold \(novelty.thresholdText) (must be a finite number > 0)")
        }
        if novelty.outputIndex != Double(classes) {
            problems.append("output_index \(novelty.outputIndexText) (must be \(classes): the score after the "
                            + "\(classes) class scores)")
        }
        guard problems.isEmpty else {
            throw BundleError("model.json's novelty has an unusable \(problems.joined(separator: " and ")): "
                              + "refusing the model; \(installHint).")
        }
    }

    /// Verify the package against model.json (bytes, then sha256), compile it once (cached by sha256) and load it.
    static func load(computeUnits: MLComputeUnits = .all) async throws -> LoadedModel {
        let (info, packageURL, entry) = try readInfo()
        let (digest, bytes) = try sha256(of: packageURL)
        guard bytes == info.bytes else {
            throw BundleError("Refusing to load \(info.file): it has \(bytes) bytes but model.json says \(info.bytes) "
                              + "(truncated or replaced after export); \(installHint).")
        }
        guard digest.lowercased() == info.sha256.lowercased() else {
            throw BundleError("Refusing to load \(info.file): its sha256 \(digest.prefix(12))… does not match "
                              + "model.json's \(info.sha256.prefix(12))… (it changed after export); \(installHint).")
        }
        let compiled = try await compiledModel(packageURL, sha256: digest)
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        let model: MLModel
        do {
            model = try MLModel(contentsOf: compiled, configuration: configuration)
        } catch {
            throw BundleError("Core ML cannot load \(info.file): \(error.localizedDescription)")
        }
        return LoadedModel(info: info, model: model, compiledURL: compiled, precision: entry?.precision,
                           runtime: entry?.runtime)
    }

    /// The package compiled to .mlmodelc in Application Support, reused while its sha256 is the same.
    static func compiledModel(_ packageURL: URL, sha256: String) async throws -> URL {
        let manager = FileManager.default
        let cache = try manager.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil,
                                    create: true).appendingPathComponent("bmcell", isDirectory: true)
        let target = cache.appendingPathComponent("\(sha256).mlmodelc", isDirectory: true)
        if manager.fileExists(atPath: target.path) { return target }
        let temporary: URL
        do {
            temporary = try await MLModel.compileModel(at: packageURL)
        } catch {
            throw BundleError("Core ML cannot compile the package: \(error.localizedDescription)")
        }
        try manager.createDirectory(at: cache, withIntermediateDirectories: true)
        try? manager.removeItem(at: target)
        try manager.moveItem(at: temporary, to: target)
        return target
    }

    /// sha256 of a file, or of a folder's regular files — as bmcell/core/fileio.py::sha256_path computes it: files in
    /// Python's Path order (component by component), each as its relative POSIX path, a NUL byte, then its bytes.
    static func sha256(of url: URL) throws -> (hex: String, bytes: Int) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw BundleError("\(url.lastPathComponent) is missing; \(installHint).")
        }
        var hasher = SHA256()
        var total = 0
        if isDirectory.boolValue {
            for relative in try regularFiles(under: url).sorted(by: pythonPathOrder) {
                hasher.update(data: Data(relative.utf8) + Data([0]))
                total += try stream(url.appendingPathComponent(relative), into: &hasher)
            }
        } else {
            total = try stream(url, into: &hasher)
        }
        return (hasher.finalize().map { String(format: "%02x", $0) }.joined(), total)
    }

    private static func regularFiles(under folder: URL) throws -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: folder.path) else {
            throw BundleError("cannot list \(folder.lastPathComponent)")
        }
        var files: [String] = []
        while let relative = walker.nextObject() as? String {
            if walker.fileAttributes?[.type] as? FileAttributeType == .typeRegular { files.append(relative) }
        }
        return files
    }

    /// Python's PurePosixPath ordering: compare component lists, each component by Unicode code points.
    static func pythonPathOrder(_ a: String, _ b: String) -> Bool {
        func parts(_ path: String) -> [[UInt32]] {
            path.split(separator: "/").map { $0.unicodeScalars.map(\.value) }
        }
        return parts(a).lexicographicallyPrecedes(parts(b)) { $0.lexicographicallyPrecedes($1) }
    }

    private static func stream(_ file: URL, into hasher: inout SHA256) throws -> Int {
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        var count = 0
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            count += chunk.count
        }
        return count
    }
}

import PhotosUI
import SwiftUI
import UIKit
import UniformTypeIdentifiers

/// Pick a photo (PhotosPicker), open any file, or take a photo; show the answer — the top class, the top class headed
/// "low confidence — check by eye" when its calibrated probability is below model.json's confident_from,
/// "uncertain — check by eye" when it is below the threshold, or "does not look like a cell this model knows" when its
/// novelty score reaches model.json's novelty threshold — then how unlike the training cells it is, every class's
/// probability, the inference time and the model's input (the centre square it sees). The header names the model and
/// the bmcell version, says its precision in words, how well it did, the labs whose cells it was trained on and the
/// lab it was adapted to, that it flags pictures unlike its training cells, how to adapt it to another lab, and opens
/// its model card. The texts mirror the Android app's Messages.kt, Confidence.kt and Novelty.kt, which the test suite
/// runs on a JVM; this Swift has not been compiled.
struct ContentView: View {
    @StateObject private var state = AppState()
    @State private var pickerItem: PhotosPickerItem?
    @State private var showCamera = false
    @State private var showImporter = false
    @State private var showCard = false

    var body: some View {
        NavigationStack {
            ScrollView {
                VStack(alignment: .leading, spacing: 16) {
                    Text(state.modelLine)
                        .font(.headline)
                        .textSelection(.enabled)
                    if !state.modelFacts.isEmpty {
                        Text(state.modelFacts)
                            .font(.subheadline)
                            .textSelection(.enabled)
                    }
                    if !state.modelRoute.isEmpty {
                        Text(state.modelRoute)
                            .font(.footnote)
                            .textSelection(.enabled)
                    }
                    if state.modelCard != nil {
                        Button("Model card") { showCard = true }
                    }
                    Text(state.modelStatus)
                        .font(.footnote)
                        .textSelection(.enabled)
                    HStack {
                        PhotosPicker("Pick a photo", selection: $pickerItem, matching: .images)
                        Button("Open a file") { showImporter = true }
                        Button("Take a photo") { showCamera = true }
                            .disabled(!UIImagePickerController.isSourceTypeAvailable(.camera))
                    }
                    .buttonStyle(.bordered)
                    .disabled(state.classifier == nil)
                    if let input = state.modelInput {
                        Image(decorative: input, scale: 1)
                            .resizable()
                            .interpolation(.none)
                            .frame(width: 224, height: 224)
                            .accessibilityLabel("What the model sees")
                    }
                    if !state.answer.isEmpty {
                        Text(state.answer)
                            .font(.title2.bold())
                            .foregroundStyle(state.level.color)
                            .textSelection(.enabled)
                    }
                    Text(state.result) // under an answer: what a confident one needs or why not, classes, timing
                        .font(state.answer.isEmpty ? .title3 : .body)
                        .foregroundStyle(state.level.classesSecondary ? Color.secondary : Color.primary)
                        .textSelection(.enabled)
                }
                .padding()
            }
            .navigationTitle("bmcell")
        }
        .task { await state.load() }
        .onChange(of: pickerItem) { _, item in
            guard let item else { return }
            Task {
                do {
                    guard let data = try await item.loadTransferable(type: Data.self) else {
                        state.result = "Cannot use this photo: the library returned no data."
                        return
                    }
                    await state.classify(data)
                } catch {
                    state.result = "Cannot use this photo: \(error.localizedDescription)"
                }
            }
        }
        .fileImporter(isPresented: $showImporter, allowedContentTypes: [.item]) { outcome in
            switch outcome {
            case .success(let url):
                let scoped = url.startAccessingSecurityScopedResource()
                defer { if scoped { url.stopAccessingSecurityScopedResource() } }
                do {
                    let data = try Data(contentsOf: url)
                    Task { await state.classify(data) }
                } catch {
                    state.result = "Cannot read \(url.lastPathComponent): \(error.localizedDescription)"
                }
            case .failure(let error):
                state.result = "Cannot open the file: \(error.localizedDescription)"
            }
        }
        .sheet(isPresented: $showCard) {
            ScrollView { Text(state.modelCard ?? "").font(.footnote.monospaced()).textSelection(.enabled).padding() }
        }
        .sheet(isPresented: $showCamera) {
            CameraPicker { data in Task { await state.classify(data) } }
                .ignoresSafeArea()
        }
    }
}

/// What heads the class when its probability is from the threshold up to, not including, confident_from.
let lowConfidenceText = "low confidence — check by eye"

/// How to make the model work for another lab, under the labs line: the words of the Android app's
/// Messages.kt::ADAPT_ROUTE_TEXT and the web app's routeNodes.
let adaptRouteText = "Photos from another microscope, stain or camera can get many more answers wrong. To "
    + "adapt it to your lab: label about 20 cells per class (at least 5) in one folder per class, run bmcell finetune "
    + "MODEL --data YOUR_FOLDER --out NEW_MODEL on a computer, then export the new model to this app. bmcell check "
    + "MODEL --images YOUR_PHOTOS estimates first how well it will do on your photos."

/// The model panel's line for a model that flags pictures unlike its training cells: the words of the Android app's
/// Novelty.kt::NOVELTY_PANEL_TEXT and of the web app.
let noveltyPanelText = "Pictures unlike every cell it was trained on get no cell type: it says "
    + "“\(unknownCellText)”."

/// How sure an answer is: below the threshold, below confident_from, or from confident_from on; unknown when the
/// picture does not look like a cell this model knows, whatever its probabilities.
enum AnswerLevel {
    case uncertain, low, confident, unknown

    /// The headline's colour: plain when confident, orange when to be checked by eye, red when not a known cell.
    var color: Color {
        switch self {
        case .confident: return .primary
        case .low, .uncertain: return .orange
        case .unknown: return .red
        }
    }

    /// Whether the class list under the headline is secondary: no class is named.
    var classesSecondary: Bool { self == .uncertain || self == .unknown }
}

/// The loaded classifier and what the screen shows.
@MainActor
final class AppState: ObservableObject {
    @Published var modelLine = "" // the model's name and the bmcell version
    @Published var modelFacts = "" // the precision in words, how well the model did, its labs, its adaptation
    @Published var modelRoute = "" // how to adapt it to another lab, once a model is loaded
    @Published var modelStatus = "Loading the model…"
    @Published var modelCard: String?
    private var latest = 0 // the newest classification; an older one finishing later is dropped
    @Published var answer = "" // answerHeadline: the class, headed or replaced by a warning; empty while there is none
    @Published var level = AnswerLevel.confident
    @Published var result = ""
    @Published var modelInput: CGImage?
    @Published private(set) var classifier: Classifier?

    func load() async {
        guard classifier == nil else { return }
        do {
            let loaded = try await ModelBundle.load()
            classifier = try Classifier(loaded)
            let info = loaded.info
            modelLine = Self.headline(info)
            modelFacts = [Self.precisionLine(info.model, manifestPrecision: loaded.precision),
                          Self.scoresLine(info.model), Self.labsLine(info.model), Self.adaptedLine(info.model),
                          info.novelty.map { _ in noveltyPanelText }].compactMap { $0 }.joined(separator: "\n")
            modelRoute = adaptRouteText
            modelCard = ModelBundle.modelCard(info)
            modelStatus = "Artefact \(info.name) (\(info.bytes / 1024) KiB, sha256 \(info.sha256.prefix(12))… verified), "
                + "\(info.imageSize)x\(info.imageSize) input, \(info.classes.count) classes: "
                + info.classes.joined(separator: ", ")
                + (info.bmcellVersion.map { "; bmcell \($0)" } ?? "") + ". " + Self.describe(info.confidence) + " "
                + Self.describeNovelty(info.novelty)
        } catch {
            modelStatus = error.localizedDescription
        }
    }

    /// "Model NAME · bmcell VERSION": the release's name, else (bundles without a "model" block) the artefact's.
    static func headline(_ info: ModelInfo) -> String {
        var parts = ["Model \(info.model?.name ?? info.name)"]
        if let version = info.bmcellVersion { parts.append("bmcell \(version)") }
        return parts.joined(separator: " · ")
    }

    /// How the header names a precision when model.json's "model" block has no precision_words.
    static let precisionWords = ["int8": "compact 8-bit version", "fp16": "half-precision version",
                                 "fp32": "full-precision version"]

    /// The precision the app runs, in words a technician reads: the "model" block's precision_words ("compact 8-bit
    /// version: gives the full model's answers on all 64 reference cells checked"), else words for its precision or,
    /// without the block, for the manifest's; nil for a precision without words.
    static func precisionLine(_ facts: ModelFacts?, manifestPrecision: String?) -> String? {
        if let words = facts?.precisionWords, !words.isEmpty { return words }
        return (facts?.precision ?? manifestPrecision).flatMap { Self.precisionWords[$0] }
    }

    /// How well the model did, in plain words: "Tested on 1,537 pbc cells: 97.5 % right · 162 chula cells: 69.1 %
    /// right" from the per-lab scores, else "Right on 89.5 % of its test images" (the artefact's own accuracy from the
    /// export's parity check when there is one, else the checkpoint's), else nil.
    static func scoresLine(_ facts: ModelFacts?) -> String? {
        if let scores = facts?.scores?.entries, !scores.isEmpty {
            return "Tested on " + scores.map { score in
                let images = score.images.formatted(.number.locale(Locale(identifier: "en_US"))) // "1,537"
                return "\(images) \(score.set) cells: \(Self.plainPercent(score.accuracy)) right"
            }.joined(separator: " · ")
        }
        return (facts?.artefactValAccuracy ?? facts?.valAccuracy).map {
            "Right on \(Self.plainPercent($0)) of its test images"
        }
    }

    /// "Trained on cells from: pbc (1,200 cells), chula (345 cells).": the labs in model.json's order, a lab whose
    /// count is unknown by name only; nil without labs.
    static func labsLine(_ facts: ModelFacts?) -> String? {
        guard let labs = facts?.labs?.entries, !labs.isEmpty else { return nil }
        return "Trained on cells from: " + labs.map { lab in
            lab.cells.map { "\(lab.name) (\(Self.grouped($0)) cell\($0 == 1 ? "" : "s"))" } ?? lab.name
        }.joined(separator: ", ") + "."
    }

    /// "Adapted to mylab with 100 of its own labelled cells: about 87 % right on them (95 % interval 79–92 %).", the
    /// parts without a value left out; nil when the model was not adapted to a lab.
    static func adaptedLine(_ facts: ModelFacts?) -> String? {
        guard let adapted = facts?.adaptedTo?.adaptation else { return nil }
        let cells = adapted.cells.map { "\(Self.grouped($0)) of its own labelled cells" } ?? "its own labelled cells"
        guard let accuracy = adapted.accuracy else { return "Adapted to \(adapted.lab) with \(cells)." }
        let interval = adapted.interval.map {
            " (95 % interval \(Int((100 * $0.low).rounded()))–\(Self.wholePercent($0.high)))"
        } ?? ""
        return "Adapted to \(adapted.lab) with \(cells): about \(Self.wholePercent(accuracy)) right on them\(interval)."
    }

    /// A whole number with thousands separators: "1,200".
    static func grouped(_ count: Int) -> String {
        count.formatted(.number.locale(Locale(identifier: "en_US")))
    }

    /// A rough share (an accuracy with a wide interval) as the screen shows it: a whole number, "87 %" (halves up,
    /// as Kotlin's Math.round).
    static func wholePercent(_ fraction: Double) -> String {
        "\(Int((100 * fraction).rounded())) %"
    }

    /// A share (accuracy, threshold) as the screen shows it: one decimal, "97.5 %".
    static func plainPercent(_ fraction: Double) -> String {
        String(format: "%.1f %%", 100 * fraction)
    }

    /// A probability as the screen shows it: one decimal, and "<0.1 %" rather than "0.0 %".
    static func percent(_ probability: Double) -> String {
        probability < 0.0005 ? "<0.1 %" : plainPercent(probability)
    }

    /// The class name with its full name when model.json explains an abbreviation.
    static func named(_ label: String, _ info: ModelInfo) -> String {
        info.model?.classNames?[label].map { "\(label) — \($0)" } ?? label
    }

    /// How sure an answer is: unknown when the novelty score flags the picture, uncertain below the threshold
    /// (Classifier's rules), low confidence below confident_from, else confident (always, without a confidence block)
    /// — Confidence.kt's answer().
    static func answerLevel(_ answered: Answer, _ confidence: ConfidenceSpec?) -> AnswerLevel {
        if answered.unknown { return .unknown }
        if answered.uncertain { return .uncertain }
        guard let confidentFrom = confidence?.confidentFrom, answered.ranked[0].probability < confidentFrom else {
            return .confident
        }
        return .low
    }

    /// The answer in large print, by its level: "label — full name  97.3 %" when confident, the same headed "low
    /// confidence — check by eye" when low, "uncertain — check by eye" (no class named) when uncertain, "does not look
    /// like a cell this model knows" (no class named) when the novelty score flags the picture.
    static func answerHeadline(_ level: AnswerLevel, _ best: Prediction, _ info: ModelInfo) -> String {
        let line = "\(named(best.label, info))  \(percent(best.probability))"
        switch level {
        case .confident: return line
        case .low: return "\(lowConfidenceText)\n\(line)"
        case .uncertain: return uncertainText
        case .unknown: return unknownCellText
        }
    }

    /// The sentence under a low-confidence answer (what a confident one needs), an uncertain one (the most probable
    /// class and the threshold it missed) or a picture that does not look like a cell this model knows (why); nil
    /// under a confident one.
    static func answerNote(_ level: AnswerLevel, _ best: Prediction, _ info: ModelInfo) -> String? {
        if level == .unknown { return unknownCellWhy }
        guard let threshold = info.confidence?.threshold, let confidentFrom = info.confidence?.confidentFrom else {
            return nil // without a confidence block every other answer is confident
        }
        switch level {
        case .confident, .unknown: return nil
        case .low: return "A confident answer needs \(plainPercent(confidentFrom))."
        case .uncertain:
            return "Most probable: \(named(best.label, info)) at \(percent(best.probability)), below the "
                + "\(plainPercent(threshold)) this model needs to name a cell type."
        }
    }

    /// What the confidence block means for the answers, under the model's description: from which probability an
    /// answer is confident, low confidence (left out when confident_from is the threshold) or uncertain.
    static func describe(_ confidence: ConfidenceSpec?) -> String {
        guard let confidence, let threshold = confidence.threshold, let temperature = confidence.temperature,
              let confidentFrom = confidence.confidentFrom else {
            return "This model has no calibrated confidence: its probabilities are not calibrated and no answer is "
                + "marked uncertain or low confidence."
        }
        let below = plainPercent(threshold)
        let from = plainPercent(confidentFrom)
        let low = from == below ? "" : "\(below) to \(from): \"\(lowConfidenceText)\"; "
        return String(format: "Calibrated (temperature %g): ", temperature)
            + "from \(from): a confident answer; \(low)below \(below): \"\(uncertainText)\""
            + (confidence.fittedOn.map { "; threshold fitted on: \($0)" } ?? "") + "."
    }

    /// A novelty score or its threshold in multiples of the usual distance: "1.43 ×".
    static func times(_ value: Double) -> String {
        String(format: "%.2f ×", value)
    }

    /// The line under an answer: how unlike the training cells the picture is; nil without a novelty score.
    static func noveltyLine(_ answered: Answer, _ rule: NoveltySpec?) -> String? {
        guard let score = answered.novelty, let threshold = rule?.threshold else { return nil }
        return "Unlike the cells it was trained on: \(times(score)) the usual distance (flagged from "
            + "\(times(threshold)))."
    }

    /// What the novelty block means, in the model's description: from which score a picture is flagged, and how often
    /// on its own test cells — Novelty.kt's noveltyDescription.
    static func describeNovelty(_ rule: NoveltySpec?) -> String {
        guard let rule, let threshold = rule.threshold else {
            return "It does not flag pictures unlike its training cells: re-export it with this version of bmcell."
        }
        let share = rule.flaggedOnValidation
            .map { " (\(plainPercent($0)) of its own test cells are flagged too)" } ?? ""
        return "It flags a picture as “\(unknownCellText)” when its distance to the nearest training cell is at least "
            + "\(times(threshold)) the usual distance\(share)."
    }

    func classify(_ data: Data) async {
        guard let classifier else { return }
        latest += 1
        let mine = latest
        answer = ""
        level = .confident
        result = "Classifying…"
        let spec = classifier.info.preprocessing
        let outcome = await Task.detached(priority: .userInitiated) { () -> Result<(Preprocessing.Prepared, Answer, Double), Error> in
            Result {
                let prepared = try Preprocessing.prepare(data, spec: spec)
                let start = DispatchTime.now()
                let answered = try classifier.classify(prepared.input)
                let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
                return (prepared, answered, ms)
            }
        }.value
        guard mine == latest else { return } // a newer picture was chosen meanwhile: its result is the one shown
        switch outcome {
        case .success(let (prepared, answered, ms)):
            modelInput = prepared.input
            let best = answered.ranked[0]
            let info = classifier.info
            let level = Self.answerLevel(answered, info.confidence)
            var lines = ["Class probabilities:"] + answered.ranked.enumerated().map { index, prediction in
                "\(index + 1). \(Self.named(prediction.label, info))  " + Self.percent(prediction.probability)
            }
            if let line = Self.noveltyLine(answered, info.novelty) { lines.insert(line, at: 0) }
            if let note = Self.answerNote(level, best, info) { lines.insert(note, at: 0) }
            let footer = String(format: "%dx%d picture → %dx%d input; Vision + Core ML %.1f ms", prepared.sourceWidth,
                                prepared.sourceHeight, prepared.input.width, prepared.input.height, ms)
            self.level = level
            answer = Self.answerHeadline(level, best, info)
            result = (lines + ["", footer]).joined(separator: "\n")
        case .failure(let error as BadImageError):
            modelInput = nil
            result = "Cannot use this file: \(error.message)"
        case .failure(let error):
            result = "Inference failed: \(error.localizedDescription)"
        }
    }
}

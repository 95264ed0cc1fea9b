import PhotosUI
import SwiftUI
import UIKit
import UniformTypeIdentifiers

/// Pick a photo (PhotosPicker), open any file, or take a photo; show the answer — the top class, or "uncertain —
/// check by eye" when its calibrated probability is below model.json's threshold — then every class's probability,
/// the inference time and the model's input (the centre square it sees). The header names the model, its version
/// and measured accuracy, and opens its model card.
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
                            .foregroundStyle(state.uncertain ? Color.orange : Color.primary)
                            .textSelection(.enabled)
                    }
                    Text(state.result) // secondary under an answer: why uncertain, the top 3, timing
                        .font(state.answer.isEmpty ? .title3 : .body)
                        .foregroundStyle(state.uncertain ? Color.secondary : Color.primary)
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

/// The loaded classifier and what the screen shows.
@MainActor
final class AppState: ObservableObject {
    @Published var modelLine = "" // name, precision, version and measured accuracy of the model
    @Published var modelStatus = "Loading the model…"
    @Published var modelCard: String?
    private var latest = 0 // the newest classification; an older one finishing later is dropped
    @Published var answer = "" // the class, or uncertainText; empty while there is none
    @Published var uncertain = false
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
            modelCard = ModelBundle.modelCard(info)
            modelStatus = "Artefact \(info.name) (\(info.bytes / 1024) KiB, sha256 \(info.sha256.prefix(12))… verified), "
                + "\(info.imageSize)x\(info.imageSize) input, \(info.classes.count) classes: "
                + info.classes.joined(separator: ", ")
                + (info.bmcellVersion.map { "; bmcell \($0)" } ?? "") + ". " + Self.describe(info.confidence)
        } catch {
            modelStatus = error.localizedDescription
        }
    }

    /// "Model NAME (precision) · bmcell VERSION · 97.5 % on its validation images", from model.json's "model" block.
    static func headline(_ info: ModelInfo) -> String {
        let facts = info.model
        var parts = ["Model \(facts?.name ?? info.name)" + (facts?.precision.map { " (\($0))" } ?? "")]
        if let version = info.bmcellVersion { parts.append("bmcell \(version)") }
        if let accuracy = facts?.artefactValAccuracy ?? facts?.valAccuracy {
            parts.append(String(format: "%.1f %% on its validation images", 100 * accuracy))
        }
        return parts.joined(separator: " · ")
    }

    /// A probability as the screen shows it: one decimal, and "<0.1 %" rather than "0.0 %".
    static func percent(_ probability: Double) -> String {
        probability < 0.0005 ? "<0.1 %" : String(format: "%.1f %%", 100 * probability)
    }

    /// The class name with its full name when model.json explains an abbreviation.
    static func named(_ label: String, _ info: ModelInfo) -> String {
        info.model?.classNames?[label].map { "\(label) — \($0)" } ?? label
    }

    /// What the model's confidence block means for its answers, under the model's description.
    static func describe(_ confidence: ConfidenceSpec?) -> String {
        guard let confidence, let threshold = confidence.threshold, let temperature = confidence.temperature else {
            return "This model has no calibrated confidence: its probabilities are not calibrated and no answer is "
                + "marked uncertain."
        }
        return String(format: "Calibrated (temperature %g): answers only at a probability of %.1f %% or more, below "
                      + "that \"%@\"", temperature, 100 * threshold, uncertainText)
            + (confidence.fittedOn.map { "; threshold fitted on: \($0)" } ?? "") + "."
    }

    func classify(_ data: Data) async {
        guard let classifier else { return }
        latest += 1
        let mine = latest
        answer = ""
        uncertain = false
        result = "Classifying…"
        let spec = classifier.info.preprocessing
        let threshold = classifier.info.confidence?.threshold
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
            var lines = ["Class probabilities:"] + answered.ranked.enumerated().map { index, prediction in
                "\(index + 1). \(Self.named(prediction.label, info))  " + Self.percent(prediction.probability)
            }
            if answered.uncertain, let threshold {
                lines.insert(String(format: "The most probable class, %@ (%.1f %%), is below this model's threshold "
                                    + "of %.1f %%.", best.label, 100 * best.probability, 100 * threshold), at: 0)
            }
            let footer = String(format: "%dx%d picture → %dx%d input; Vision + Core ML %.1f ms", prepared.sourceWidth,
                                prepared.sourceHeight, prepared.input.width, prepared.input.height, ms)
            uncertain = answered.uncertain
            answer = answered.uncertain ? uncertainText
                : "\(best.label)  " + String(format: "%.1f %%", 100 * best.probability)
            result = (lines + ["", footer]).joined(separator: "\n")
        case .failure(let error as BadImageError):
            modelInput = nil
            result = "Cannot use this file: \(error.message)"
        case .failure(let error):
            result = "Inference failed: \(error.localizedDescription)"
        }
    }
}

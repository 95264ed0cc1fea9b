import PhotosUI
import SwiftUI
import UIKit
import UniformTypeIdentifiers

/// Pick a photo (PhotosPicker), open any file, or take a photo; show the top 3 classes and the model's input.
struct ContentView: View {
    @StateObject private var state = AppState()
    @State private var pickerItem: PhotosPickerItem?
    @State private var showCamera = false
    @State private var showImporter = false

    var body: some View {
        NavigationStack {
            ScrollView {
                VStack(alignment: .leading, spacing: 16) {
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
                    Text(state.result)
                        .font(.title3)
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
        .sheet(isPresented: $showCamera) {
            CameraPicker { data in Task { await state.classify(data) } }
                .ignoresSafeArea()
        }
    }
}

/// The loaded classifier and what the screen shows.
@MainActor
final class AppState: ObservableObject {
    @Published var modelStatus = "Loading the model…"
    @Published var result = ""
    @Published var modelInput: CGImage?
    @Published private(set) var classifier: Classifier?

    func load() async {
        guard classifier == nil else { return }
        do {
            let loaded = try await ModelBundle.load()
            classifier = try Classifier(loaded)
            let info = loaded.info
            modelStatus = "Model \(info.name) (\(info.bytes / 1024) KiB, sha256 \(info.sha256.prefix(12))… verified), "
                + "\(info.imageSize)x\(info.imageSize) input, \(info.classes.count) classes: "
                + info.classes.joined(separator: ", ")
                + (info.bmcellVersion.map { "; bmcell \($0)" } ?? "")
        } catch {
            modelStatus = error.localizedDescription
        }
    }

    func classify(_ data: Data) async {
        guard let classifier else { return }
        result = "Classifying…"
        let spec = classifier.info.preprocessing
        let outcome = await Task.detached(priority: .userInitiated) { () -> Result<(Preprocessing.Prepared, [Prediction], Double), Error> in
            Result {
                let prepared = try Preprocessing.prepare(data, spec: spec)
                let start = DispatchTime.now()
                let ranked = try classifier.classify(prepared.input)
                let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
                return (prepared, ranked, ms)
            }
        }.value
        switch outcome {
        case .success(let (prepared, ranked, ms)):
            modelInput = prepared.input
            let lines = ranked.prefix(3).enumerated().map { index, prediction in
                "\(index + 1). \(prediction.label)  " + String(format: "%.1f %%", 100 * prediction.probability)
            }
            let footer = String(format: "%dx%d picture → %dx%d input; Vision + Core ML %.1f ms", prepared.sourceWidth,
                                prepared.sourceHeight, prepared.input.width, prepared.input.height, ms)
            result = (lines + ["", footer]).joined(separator: "\n")
        case .failure(let error as BadImageError):
            modelInput = nil
            result = "Cannot use this file: \(error.message)"
        case .failure(let error):
            result = "Inference failed: \(error.localizedDescription)"
        }
    }
}

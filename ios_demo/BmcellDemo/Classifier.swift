import CoreML
import Foundation
import Vision

/// One class and its probability (calibrated when model.json has a temperature).
struct Prediction: Identifiable {
    let label: String
    let probability: Double
    var id: String { label }
}

/// What the app shows instead of a class when the top probability is below model.json's threshold.
let uncertainText = "uncertain — check by eye"

/// All classes, most probable first, and whether the top one is below the threshold.
struct Answer {
    let ranked: [Prediction]
    let uncertain: Bool
}

/// The bundled Core ML classifier run through Vision. The model's classifier output carries the labels
/// (ClassifierConfig at export) and, since model.json says "output": "probabilities", calibrated probabilities:
/// softmax(logits / temperature) is computed inside the model (export/formats/coreml.py), so Vision's confidence
/// values, Xcode's preview and any other Core ML consumer read real probabilities. Bundles exported before that say
/// "logits" (or nothing), and the app applies softmax(logits / temperature) itself.
final class Classifier {
    let loaded: LoadedModel
    private let visionModel: VNCoreMLModel
    var info: ModelInfo { loaded.info }

    init(_ loaded: LoadedModel) throws {
        self.loaded = loaded
        let description = loaded.model.modelDescription
        let size = loaded.info.imageSize
        // The model must agree with model.json: its own labels are the classes, its image input is S x S.
        let labels = (description.classLabels ?? []).compactMap { $0 as? String }
        guard Set(labels) == Set(loaded.info.classes), labels.count == loaded.info.classes.count else {
            throw BundleError("The model's labels \(labels) differ from model.json's classes \(loaded.info.classes); "
                              + installHint + ".")
        }
        guard let image = description.inputDescriptionsByName.values.compactMap(\.imageConstraint).first,
              image.pixelsWide == size, image.pixelsHigh == size else {
            throw BundleError("The model's input is not a \(size)x\(size) image as model.json says; \(installHint).")
        }
        do {
            visionModel = try VNCoreMLModel(for: loaded.model)
        } catch {
            throw BundleError("Vision cannot use the model: \(error.localizedDescription)")
        }
    }

    /// All classes with their probabilities, most probable first, for one S x S picture from Preprocessing, and
    /// whether the answer is "uncertain" (top calibrated probability below model.json's threshold).
    func classify(_ picture: CGImage) throws -> Answer {
        let request = VNCoreMLRequest(model: visionModel)
        // The Vision option that matches the contract (resize the shorter side, centre-crop); a no-op on the
        // S x S picture that Preprocessing already made.
        request.imageCropAndScaleOption = .centerCrop
        try VNImageRequestHandler(cgImage: picture, orientation: .up, options: [:]).perform([request])
        guard let observations = request.results as? [VNClassificationObservation], !observations.isEmpty else {
            throw BundleError("The model returned no classification.")
        }
        let scores = observations.map { Double($0.confidence) }
        let probabilities = info.output == "probabilities"
            ? scores : softmax(scores, temperature: info.confidence?.temperature ?? 1)
        return answer(labels: observations.map(\.identifier), probabilities: probabilities,
                      confidence: info.confidence)
    }
}

/// softmax(logits / temperature).
func softmax(_ logits: [Double], temperature: Double = 1) -> [Double] {
    let scaled = logits.map { $0 / temperature }
    guard let largest = scaled.max() else { return [] }
    let exps = scaled.map { exp($0 - largest) }
    let total = exps.reduce(0, +)
    return exps.map { $0 / total }
}

/// The rule of model.json's confidence block: calibrated probabilities = softmax(logits / temperature) (computed
/// by the model, or by classify() for older bundles); uncertain when the top probability is below threshold.
/// Without the block (older exports): never uncertain. ModelBundle.check has already refused a block whose
/// temperature or threshold is unusable.
func answer(labels: [String], probabilities: [Double], confidence: ConfidenceSpec?) -> Answer {
    let ranked = zip(labels, probabilities)
        .map { Prediction(label: $0, probability: $1) }
        .sorted { $0.probability > $1.probability }
    let top = ranked.first?.probability ?? 0
    let uncertain = confidence?.threshold.map { top < $0 } ?? false
    return Answer(ranked: ranked, uncertain: uncertain)
}

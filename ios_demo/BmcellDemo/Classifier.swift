import CoreML
import Foundation
import Vision

/// One class and its softmax probability.
struct Prediction: Identifiable {
    let label: String
    let probability: Double
    var id: String { label }
}

/// The bundled Core ML classifier run through Vision. The model's classifier output carries the labels
/// (ClassifierConfig at export); its scores are logits (export/formats/coreml.py), so the app applies softmax.
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

    /// All classes with their probabilities, most probable first, for one S x S picture from Preprocessing.
    func classify(_ picture: CGImage) throws -> [Prediction] {
        let request = VNCoreMLRequest(model: visionModel)
        // The Vision option that matches the contract (resize the shorter side, centre-crop); a no-op on the
        // S x S picture that Preprocessing already made.
        request.imageCropAndScaleOption = .centerCrop
        try VNImageRequestHandler(cgImage: picture, orientation: .up, options: [:]).perform([request])
        guard let observations = request.results as? [VNClassificationObservation], !observations.isEmpty else {
            throw BundleError("The model returned no classification.")
        }
        let probabilities = softmax(observations.map { Double($0.confidence) })
        return zip(observations, probabilities)
            .map { Prediction(label: $0.identifier, probability: $1) }
            .sorted { $0.probability > $1.probability }
    }
}

func softmax(_ logits: [Double]) -> [Double] {
    guard let largest = logits.max() else { return [] }
    let exps = logits.map { exp($0 - largest) }
    let total = exps.reduce(0, +)
    return exps.map { $0 / total }
}

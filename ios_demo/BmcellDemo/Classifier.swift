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

/// What the app shows instead of a class when the picture's novelty score reaches model.json's novelty threshold, and
/// the sentence under it: the words of the Android app's Novelty.kt and of the web app.
let unknownCellText = "does not look like a cell this model knows"
let unknownCellWhy = "It is unlike every cell this model was trained on — another kind of cell (a blast?), not a "
    + "cell at all, or a very different microscope or stain: check by eye."

/// All classes, most probable first, whether the top one is below the threshold, whether the picture does not look
/// like a cell this model knows, and its novelty score (nil without a novelty block).
struct Answer {
    let ranked: [Prediction]
    let uncertain: Bool
    let unknown: Bool
    let novelty: Double?
}

/// What the model gave for one picture: the labels and their scores, and the novelty score (nil without one).
struct Scored {
    let labels: [String]
    let scores: [Double]
    let novelty: Double?
}

/// The bundled Core ML classifier run through Vision. The model's classifier output carries the labels
/// (ClassifierConfig at export) and, since model.json says "output": "probabilities", calibrated probabilities:
/// softmax(logits / temperature) is computed inside the model (export/formats/coreml.py), so Vision's confidence
/// values, Xcode's preview and any other Core ML consumer read real probabilities. Bundles exported before that say
/// "logits" (or nothing), and the app applies softmax(logits / temperature) itself. With model.json's novelty block
/// the model also outputs the picture's novelty score (its output named coreml_output), which Vision does not hand
/// over for a classifier: the app then runs the model through Core ML directly.
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
        try Self.checkOutputs(description, novelty: loaded.info.novelty)
        do {
            visionModel = try VNCoreMLModel(for: loaded.model)
        } catch {
            throw BundleError("Vision cannot use the model: \(error.localizedDescription)")
        }
    }

    /// Refuse a model whose outputs are not the ones model.json declares: the class label and probabilities, and the
    /// novelty score's output (one value) exactly when model.json has a novelty block.
    static func checkOutputs(_ description: MLModelDescription, novelty: NoveltySpec?) throws {
        let classifier = [description.predictedFeatureName, description.predictedProbabilitiesName].compactMap { $0 }
        let extra = Set(description.outputDescriptionsByName.keys).subtracting(classifier)
        let declared = novelty.map { Set([$0.coremlOutput]) } ?? []
        guard extra == declared,
              novelty.map({ description.outputDescriptionsByName[$0.coremlOutput]?.type == .multiArray }) ?? true else {
            throw BundleError("The model's outputs besides the classes are \(extra.sorted()), but model.json declares "
                              + "\(declared.sorted()) (a novelty score, one value): refusing the model; "
                              + "\(installHint).")
        }
    }

    /// All classes with their probabilities, most probable first, for one S x S picture from Preprocessing, whether
    /// the answer is "uncertain" (top calibrated probability below model.json's threshold), and the novelty score
    /// with whether it flags the picture (at or above model.json's novelty threshold).
    func classify(_ picture: CGImage) throws -> Answer {
        let scored = try info.novelty.map { try coreMLScores(picture, novelty: $0.coremlOutput) }
            ?? visionScores(picture)
        let scores = scored.scores
        let probabilities = info.output == "probabilities"
            ? scores : softmax(scores, temperature: info.confidence?.temperature ?? 1)
        return answer(labels: scored.labels, probabilities: probabilities, novelty: scored.novelty,
                      confidence: info.confidence, noveltyRule: info.novelty)
    }

    /// The classifier's labels and scores through Vision.
    private func visionScores(_ picture: CGImage) throws -> Scored {
        let request = VNCoreMLRequest(model: visionModel)
        // The Vision option that matches the contract (resize the shorter side, centre-crop); a no-op on the
        // S x S picture that Preprocessing already made.
        request.imageCropAndScaleOption = .centerCrop
        try VNImageRequestHandler(cgImage: picture, orientation: .up, options: [:]).perform([request])
        guard let observations = request.results as? [VNClassificationObservation], !observations.isEmpty else {
            throw BundleError("The model returned no classification.")
        }
        return Scored(labels: observations.map(\.identifier), scores: observations.map { Double($0.confidence) },
                      novelty: nil)
    }

    /// The classifier's labels and scores and the novelty score (the output named `novelty`), through Core ML
    /// directly: the S x S picture from Preprocessing is the image input as it is.
    private func coreMLScores(_ picture: CGImage, novelty name: String) throws -> Scored {
        let description = loaded.model.modelDescription
        guard let input = description.inputDescriptionsByName.first(where: { $0.value.imageConstraint != nil }),
              let constraint = input.value.imageConstraint, let probabilities = description.predictedProbabilitiesName
        else {
            throw BundleError("The model has no image input or no class probabilities; \(installHint).")
        }
        let image = try MLFeatureValue(cgImage: picture, constraint: constraint, options: nil)
        let outputs = try loaded.model.prediction(from: MLDictionaryFeatureProvider(dictionary: [input.key: image]))
        guard let byLabel = outputs.featureValue(for: probabilities)?.dictionaryValue, !byLabel.isEmpty,
              let novelty = outputs.featureValue(for: name)?.multiArrayValue, novelty.count == 1 else {
            throw BundleError("The model returned no class probabilities or no novelty score (\(name)).")
        }
        let pairs = byLabel.compactMap { label, score in (label as? String).map { ($0, score.doubleValue) } }
        return Scored(labels: pairs.map(\.0), scores: pairs.map(\.1), novelty: novelty[0].doubleValue)
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

/// The rules of model.json's confidence and novelty blocks: calibrated probabilities = softmax(logits /
/// temperature) (computed by the model, or by classify() for older bundles); the picture does not look like a cell
/// this model knows when its novelty score is at or above the novelty threshold, whatever the probabilities (Android's
/// Novelty.kt::isUnknown); otherwise uncertain when the top probability is below threshold. Without the blocks (older
/// exports): never flagged, never uncertain. ModelBundle.check has already refused blocks it cannot apply.
func answer(labels: [String], probabilities: [Double], novelty: Double?, confidence: ConfidenceSpec?,
            noveltyRule: NoveltySpec?) -> Answer {
    let ranked = zip(labels, probabilities)
        .map { Prediction(label: $0, probability: $1) }
        .sorted { $0.probability > $1.probability }
    let top = ranked.first?.probability ?? 0
    let unknown = isUnknown(novelty, noveltyRule)
    let uncertain = !unknown && (confidence?.threshold.map { top < $0 } ?? false)
    return Answer(ranked: ranked, uncertain: uncertain, unknown: unknown, novelty: novelty)
}

/// Whether a picture does not look like a cell this model knows: its novelty score at or above model.json's novelty
/// threshold (Android's Novelty.kt::isUnknown).
func isUnknown(_ novelty: Double?, _ rule: NoveltySpec?) -> Bool {
    guard let novelty, let threshold = rule?.threshold else { return false }
    return novelty >= threshold
}

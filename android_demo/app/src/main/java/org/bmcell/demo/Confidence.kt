package org.bmcell.demo

import kotlin.math.exp

// Calibrated probabilities and how sure an answer is, as model.json's "confidence" block states them:
// probabilities = softmax(logits / temperature); the top class is uncertain below threshold, low confidence below
// confident_from, else confident — unless the picture's novelty score (Novelty.kt) says it does not look like a cell
// this model knows. Plain Kotlin (no Android or ExecuTorch imports), so it can be unit-tested on the JVM.

/** What the app shows instead of a class when the top probability is below the threshold. */
const val UNCERTAIN_TEXT = "uncertain — check by eye"

/** What heads the class when the top probability is from the threshold up to, not including, confident_from. */
const val LOW_CONFIDENCE_TEXT = "low confidence — check by eye"

/** One class and its (calibrated, when the model has a temperature) softmax probability. */
data class Prediction(val label: String, val probability: Float)

/**
 * model.json's "confidence", checked: temperature finite and > 0, threshold in [0, 1], confident_from in
 * [threshold, 1].
 */
data class ConfidenceRule(val temperature: Double, val threshold: Double, val confidentFrom: Double, val fittedOn: String?)

/**
 * How sure an answer is: below the threshold, below confident_from, or from confident_from on; UNKNOWN when the
 * picture does not look like a cell this model knows (its novelty score at or above model.json's novelty threshold),
 * whatever its probabilities.
 */
enum class ConfidenceLevel { UNCERTAIN, LOW, CONFIDENT, UNKNOWN }

/** The top k classes, most probable first, how sure the top one is, and the novelty score (null without a rule). */
data class Answer(val top: List<Prediction>, val level: ConfidenceLevel, val novelty: Double? = null)

/**
 * model.json's temperature, threshold and confident_from as parsed JSON values (a number, a string, null…) → a
 * ConfidenceRule. confident_from null (absent from older exports) is halfway from the threshold to 1. Anything but a
 * finite number > 0, a number in [0, 1] and a number from the threshold to 1 throws IllegalArgumentException saying
 * which (confident_from is checked only against a usable threshold).
 */
fun confidenceRule(temperature: Any?, threshold: Any?, confidentFrom: Any?, fittedOn: String?): ConfidenceRule {
    val t = (temperature as? Number)?.toDouble()
    val p = (threshold as? Number)?.toDouble()?.takeIf { it in 0.0..1.0 }
    val c = if (confidentFrom == null) p?.let { (1 + it) / 2 } else (confidentFrom as? Number)?.toDouble()
    val problems = listOfNotNull(
        if (t == null || !t.isFinite() || t <= 0.0) "temperature $temperature (must be a finite number > 0)" else null,
        when {
            p == null -> "threshold $threshold (must be a number from 0 to 1)"
            c == null || c !in p..1.0 -> "confident_from $confidentFrom (must be a number from the threshold, $p, to 1)"
            else -> null
        },
    )
    require(problems.isEmpty()) { problems.joinToString(" and ") }
    return ConfidenceRule(t!!, p!!, c!!, fittedOn)
}

/** softmax(logits / temperature) in double precision. */
fun softmax(logits: FloatArray, temperature: Double = 1.0): DoubleArray {
    val scaled = DoubleArray(logits.size) { logits[it] / temperature }
    val largest = scaled.max()
    val exps = DoubleArray(scaled.size) { exp(scaled[it] - largest) }
    val total = exps.sum()
    return DoubleArray(exps.size) { exps[it] / total }
}

fun topK(probabilities: DoubleArray, classes: List<String>, k: Int): List<Prediction> =
    probabilities.indices.sortedByDescending { probabilities[it] }.take(k)
        .map { Prediction(classes[it], probabilities[it].toFloat()) }

/** How sure an answer whose top probability is `top` is; always CONFIDENT without a rule (older exports). */
fun confidenceLevel(rule: ConfidenceRule?, top: Double): ConfidenceLevel = when {
    rule == null -> ConfidenceLevel.CONFIDENT
    top < rule.threshold -> ConfidenceLevel.UNCERTAIN
    top < rule.confidentFrom -> ConfidenceLevel.LOW
    else -> ConfidenceLevel.CONFIDENT
}

/**
 * The program's output → the answer: the class scores and the novelty score split as model.json says (splitOutput:
 * C values without a novelty rule, C + 1 with one; any other length throws), calibrated probabilities of the class
 * scores when the model has a confidence rule (temperature 1 and always confident when it has none, as older
 * exports), and the level: UNKNOWN when the novelty score reaches the novelty threshold, else the top probability's.
 */
fun answer(
    output: FloatArray, classes: List<String>, rule: ConfidenceRule?, k: Int, novelty: NoveltyRule? = null,
): Answer {
    val split = splitOutput(output, classes.size, novelty)
    val probabilities = softmax(split.logits, rule?.temperature ?: 1.0)
    val level = if (isUnknown(split.novelty, novelty)) ConfidenceLevel.UNKNOWN
    else confidenceLevel(rule, probabilities.max())
    return Answer(topK(probabilities, classes, k), level, split.novelty)
}

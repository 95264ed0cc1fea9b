package org.bmcell.demo

import kotlin.math.exp

// Calibrated probabilities and the "uncertain" decision, as model.json's "confidence" block states them:
// probabilities = softmax(logits / temperature); answer the top class only when its probability >= threshold.
// Plain Kotlin (no Android or ExecuTorch imports), so it can be unit-tested on the JVM.

/** What the app shows instead of a class when the top probability is below the threshold. */
const val UNCERTAIN_TEXT = "uncertain — check by eye"

/** One class and its (calibrated, when the model has a temperature) softmax probability. */
data class Prediction(val label: String, val probability: Float)

/** model.json's "confidence", checked: temperature finite and > 0, threshold in [0, 1]. */
data class ConfidenceRule(val temperature: Double, val threshold: Double, val fittedOn: String?)

/** The top k classes, most probable first, and whether the top one is below the model's threshold. */
data class Answer(val top: List<Prediction>, val uncertain: Boolean)

/**
 * model.json's temperature and threshold as parsed JSON values (a number, a string, null…) → a ConfidenceRule.
 * Anything but a finite number > 0 and a number in [0, 1] throws IllegalArgumentException saying which.
 */
fun confidenceRule(temperature: Any?, threshold: Any?, fittedOn: String?): ConfidenceRule {
    val t = (temperature as? Number)?.toDouble()
    val p = (threshold as? Number)?.toDouble()
    val problems = listOfNotNull(
        if (t == null || !t.isFinite() || t <= 0.0) "temperature $temperature (must be a finite number > 0)" else null,
        if (p == null || p.isNaN() || p < 0.0 || p > 1.0) "threshold $threshold (must be a number from 0 to 1)" else null,
    )
    require(problems.isEmpty()) { problems.joinToString(" and ") }
    return ConfidenceRule(t!!, p!!, fittedOn)
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

/**
 * Logits → the answer: calibrated probabilities when the model has a confidence rule (temperature 1 and never
 * uncertain when it has none, as older exports), uncertain when the top probability is below the threshold.
 */
fun answer(logits: FloatArray, classes: List<String>, rule: ConfidenceRule?, k: Int): Answer {
    val probabilities = softmax(logits, rule?.temperature ?: 1.0)
    val uncertain = rule != null && probabilities.max() < rule.threshold
    return Answer(topK(probabilities, classes, k), uncertain)
}

package org.bmcell.demo

import java.io.IOException
import java.util.Locale

// What the screen says about the model, its answers and its failures, as plain Kotlin (no Android imports) so that
// tests/test_android_jvm.py runs it on a JVM. The iOS app (ContentView.swift) words the same facts the same way.

/** A bundle that is missing, malformed or fails its integrity check; the message says why and what to do. */
class BundleError(message: String) : Exception(message)

/** A picture the app cannot use, with the reason. */
class BadImageError(message: String) : Exception(message)

/**
 * model.json's "model" block (export/apps.py::app_model_json): the release's name, architecture, precision and the
 * precision in words, epoch, validation accuracy of the checkpoint and of this artefact (parity), the accuracy per lab
 * at release, the model card's file in the bundle, full names of abbreviated classes, the labs whose cells it was
 * trained on and the lab it was fine-tuned on. Every field may be missing; bundles exported before it have no block.
 */
data class ModelFacts(
    val name: String?,
    val arch: String?,
    val precision: String?,
    val precisionWords: String?,
    val epoch: Int?,
    val valAccuracy: Double?,
    val artefactValAccuracy: Double?,
    val scores: List<LabScore>,
    val parity: String?,
    val modelCard: String?,
    val classNames: Map<String, String>,
    val labs: List<TrainedLab> = emptyList(),
    val adaptedTo: Adaptation? = null,
)

/** A lab (image set) whose cells the model was trained on (model.json's "model"."labs"); cells null when unknown. */
data class TrainedLab(val name: String, val cells: Int?)

/**
 * The lab the model was fine-tuned on with its own labelled cells (model.json's "model"."adapted_to", written by
 * `bmcell finetune`): how many cells, the cross-validated accuracy on them and its 95 % interval, each null when
 * unknown.
 */
data class Adaptation(val lab: String, val cells: Int?, val accuracy: Double?, val interval: Pair<Double, Double>?)

/** One lab's score at release (model.json's "model"."scores"): the set's name, its number of images, the accuracy. */
data class LabScore(val set: String, val images: Int, val accuracy: Double)

/**
 * model.json's "scores" as parsed JSON values (objects as maps of their fields) → the usable entries, the largest set
 * first. An entry without a non-empty set name, a whole number of images > 0 and an accuracy in [0, 1], or that is
 * not an object, is dropped.
 */
fun labScores(entries: List<Any?>): List<LabScore> = entries.mapNotNull { entry ->
    val fields = entry as? Map<*, *>
    val set = (fields?.get("set") as? String)?.takeIf { it.isNotEmpty() }
    val images = (fields?.get("images") as? Number)?.toDouble()
        ?.takeIf { it >= 1 && it <= Int.MAX_VALUE && it % 1 == 0.0 } // a whole number that fits an Int
    val accuracy = (fields?.get("accuracy") as? Number)?.toDouble()?.takeIf { it in 0.0..1.0 }
    if (set == null || images == null || accuracy == null) null else LabScore(set, images.toInt(), accuracy)
}.sortedByDescending { it.images }

/** A count of cells: a whole number > 0 that fits an Int, else null (unknown). */
private fun cellCount(value: Any?): Int? = (value as? Number)?.toDouble()
    ?.takeIf { it >= 1 && it <= Int.MAX_VALUE && it % 1 == 0.0 }?.toInt()

private fun fraction(value: Any?): Double? = (value as? Number)?.toDouble()?.takeIf { it in 0.0..1.0 }

/**
 * model.json's "labs" as parsed JSON values → the labs the model was trained on, in the order given. An entry that is
 * not an object with a non-empty name is dropped; a count that is not a whole number > 0 is unknown (null).
 */
fun trainedLabs(entries: List<Any?>): List<TrainedLab> = entries.mapNotNull { entry ->
    val fields = entry as? Map<*, *>
    (fields?.get("name") as? String)?.takeIf { it.isNotEmpty() }?.let { TrainedLab(it, cellCount(fields["cells"])) }
}

/**
 * model.json's "adapted_to" as parsed JSON (an object as a map, its interval as a list) → the adaptation; null when
 * it is absent, null or has no lab name. An accuracy outside [0, 1] is unknown, and so is an interval that is not two
 * numbers in [0, 1], the lower first.
 */
fun adaptation(fields: Map<*, *>?): Adaptation? {
    val lab = (fields?.get("lab") as? String)?.takeIf { it.isNotEmpty() } ?: return null
    val bounds = (fields["interval"] as? List<*>)?.map { fraction(it) }
    val low = bounds?.getOrNull(0)
    val high = bounds?.getOrNull(1)
    val interval = if (bounds?.size == 2 && low != null && high != null && low <= high) low to high else null
    return Adaptation(lab, cellCount(fields["cells"]), fraction(fields["accuracy"]), interval)
}

/** "Model NAME · bmcell VERSION": the release's name, else (bundles without a "model" block) the artefact's. */
fun modelHeadline(facts: ModelFacts?, artefactName: String, bmcellVersion: String?): String =
    listOfNotNull("Model ${facts?.name ?: artefactName}", bmcellVersion?.let { "bmcell $it" }).joinToString(" · ")

/** How the header names a precision when model.json's "model" block has no precision_words. */
private val PRECISION_WORDS =
    mapOf("int8" to "compact 8-bit version", "fp16" to "half-precision version", "fp32" to "full-precision version")

/**
 * The precision the app runs, in words a technician reads: the "model" block's precision_words ("compact 8-bit
 * version: gives the full model's answers on all 64 reference cells checked"), else words for its precision or,
 * without the block, for the manifest's; null for a precision without words.
 */
fun precisionLine(facts: ModelFacts?, manifestPrecision: String?): String? =
    facts?.precisionWords ?: (facts?.precision ?: manifestPrecision)?.let { PRECISION_WORDS[it] }

/**
 * How well the model did, in plain words: "Tested on 1,537 pbc cells: 97.5 % right · 162 chula cells: 69.1 % right"
 * from the per-lab scores, else "Right on 89.5 % of its test images" (the artefact's own accuracy from the export's
 * parity check when there is one, else the checkpoint's), else null.
 */
fun scoresLine(facts: ModelFacts?): String? {
    val scores = facts?.scores.orEmpty()
    if (scores.isNotEmpty()) {
        return "Tested on " + scores.joinToString(" · ") {
            String.format(Locale.US, "%,d %s cells: %s right", it.images, it.set, plainPercent(it.accuracy))
        }
    }
    return (facts?.artefactValAccuracy ?: facts?.valAccuracy)?.let { "Right on ${plainPercent(it)} of its test images" }
}

/**
 * "Trained on cells from: pbc (1,200 cells), chula (345 cells).": the labs in model.json's order, a lab whose count
 * is unknown by name only; null without labs.
 */
fun labsLine(facts: ModelFacts?): String? {
    val labs = facts?.labs.orEmpty()
    if (labs.isEmpty()) return null
    return "Trained on cells from: " + labs.joinToString(", ") { lab ->
        val cells = lab.cells ?: return@joinToString lab.name
        String.format(Locale.US, "%s (%,d cell%s)", lab.name, cells, if (cells == 1) "" else "s")
    } + "."
}

/**
 * "Adapted to mylab with 100 of its own labelled cells: about 87 % right on them (95 % interval 79–92 %).", the parts
 * without a value left out; null when the model was not adapted to a lab.
 */
fun adaptedLine(facts: ModelFacts?): String? {
    val adapted = facts?.adaptedTo ?: return null
    val cells = adapted.cells?.let { String.format(Locale.US, "%,d of its own labelled cells", it) }
        ?: "its own labelled cells"
    val accuracy = adapted.accuracy ?: return "Adapted to ${adapted.lab} with $cells."
    val interval = adapted.interval
        ?.let { (low, high) -> " (95 % interval ${Math.round(100 * low)}–${wholePercent(high)})" }
    return "Adapted to ${adapted.lab} with $cells: about ${wholePercent(accuracy)} right on them${interval.orEmpty()}."
}

/**
 * How to make the model work for another lab, under the labs line: the web app (app.js, routeNodes) and the iOS app
 * (ContentView.swift, adaptRouteText) say the same words.
 */
const val ADAPT_ROUTE_TEXT = "Photos from another microscope, stain or camera can get many more answers wrong. To " +
    "adapt it to your lab: label about 20 cells per class (at least 5) in one folder per class, run bmcell finetune " +
    "MODEL --data YOUR_FOLDER --out NEW_MODEL on a computer, then export the new model to this app. bmcell check " +
    "MODEL --images YOUR_PHOTOS estimates first how well it will do on your photos."

/** A rough share (an accuracy with a wide interval) as the screen shows it: a whole number, "87 %". */
fun wholePercent(fraction: Double): String = "${Math.round(100 * fraction)} %"

/** A share (accuracy, threshold) as the screen shows it: one decimal, "97.5 %". */
fun plainPercent(fraction: Double): String = String.format(Locale.US, "%.1f %%", 100 * fraction)

/** A probability as the screen shows it: one decimal, and "<0.1 %" rather than "0.0 %". */
fun percent(probability: Double): String = if (probability < 0.0005) "<0.1 %" else plainPercent(probability)

/** The class name with its full name when model.json explains it ("label — full name"). */
fun displayName(label: String, classNames: Map<String, String>): String =
    classNames[label]?.let { "$label — $it" } ?: label

/** Every class, most probable first: "1. label — full name  97.3 %". */
fun probabilityLines(probabilities: List<Prediction>, classNames: Map<String, String>): List<String> =
    probabilities.mapIndexed { i, p -> "${i + 1}. ${displayName(p.label, classNames)}  ${percent(p.probability.toDouble())}" }

/**
 * The answer in large print, by its level: "label — full name  97.3 %" when confident, the same headed "low
 * confidence — check by eye" when low, "uncertain — check by eye" (no class named) when uncertain, "does not look
 * like a cell this model knows" (no class named) when the novelty score flags the picture.
 */
fun answerHeadline(answer: Answer, classNames: Map<String, String>): String {
    val best = answer.top.first()
    val named = "${displayName(best.label, classNames)}  ${percent(best.probability.toDouble())}"
    return when (answer.level) {
        ConfidenceLevel.CONFIDENT -> named
        ConfidenceLevel.LOW -> "$LOW_CONFIDENCE_TEXT\n$named"
        ConfidenceLevel.UNCERTAIN -> UNCERTAIN_TEXT
        ConfidenceLevel.UNKNOWN -> UNKNOWN_CELL_TEXT
    }
}

/**
 * The sentence under a low-confidence answer (what a confident one needs), an uncertain one (the most probable class
 * and the threshold it missed) or a picture that does not look like a cell this model knows (UNKNOWN_CELL_WHY); null
 * under a confident one.
 */
fun answerNote(answer: Answer, rule: ConfidenceRule?, classNames: Map<String, String>): String? {
    if (answer.level == ConfidenceLevel.UNKNOWN) return UNKNOWN_CELL_WHY
    if (rule == null) return null // without a confidence rule every other answer is confident
    val best = answer.top.first()
    return when (answer.level) {
        ConfidenceLevel.CONFIDENT, ConfidenceLevel.UNKNOWN -> null
        ConfidenceLevel.LOW -> "A confident answer needs ${plainPercent(rule.confidentFrom)}."
        ConfidenceLevel.UNCERTAIN -> "Most probable: ${displayName(best.label, classNames)} at " +
            "${percent(best.probability.toDouble())}, below the ${plainPercent(rule.threshold)} this model needs to " +
            "name a cell type."
    }
}

/**
 * What the confidence rule means for the answers, in the model's description: from which probability an answer is
 * confident, low confidence (left out when confident_from is the threshold) or uncertain.
 */
fun confidenceDescription(rule: ConfidenceRule?): String {
    if (rule == null) {
        return "This model has no calibrated confidence: its probabilities are not calibrated and no answer is " +
            "marked uncertain or low confidence."
    }
    val threshold = plainPercent(rule.threshold)
    val confidentFrom = plainPercent(rule.confidentFrom)
    val low = if (confidentFrom == threshold) "" else "$threshold to $confidentFrom: \"$LOW_CONFIDENCE_TEXT\"; "
    return "Calibrated (temperature ${rule.temperature}): from $confidentFrom: a confident answer; ${low}below " +
        "$threshold: \"$UNCERTAIN_TEXT\"" + (rule.fittedOn?.let { "; threshold fitted on: $it" } ?: "") + "."
}

/** "inference 41.2 ms (preprocessing 12.0 ms)": the forward pass, then the resize/crop/scale before it. */
fun timingLine(inferenceMs: Double, preprocessingMs: Double): String =
    String.format(Locale.US, "inference %.1f ms (preprocessing %.1f ms)", inferenceMs, preprocessingMs)

/**
 * Any failure → the sentence the screen shows (`doing` says what was being done, e.g. "Cannot load the model"; a
 * BundleError's message is shown as it is). Causes are followed, so a native-library failure wrapped in another
 * exception is still named as such.
 */
fun failureMessage(doing: String, error: Throwable, abis: List<String> = emptyList()): String {
    val chain = generateSequence(error) { it.cause.takeIf { cause -> cause !== it } }.take(8).toList()
    val link = chain.firstOrNull { it is UnsatisfiedLinkError }
    val io = chain.firstOrNull { it is IOException }
    val detail = { t: Throwable -> t.message?.takeIf { it.isNotBlank() } ?: t.javaClass.simpleName }
    return when {
        error is BundleError -> detail(error) // already a whole sentence: what is wrong and what to run
        error is BadImageError -> "$doing: ${detail(error)}"
        link != null -> "$doing: a native library is not available for this device's processor" +
            (if (abis.isEmpty()) "" else " (${abis.joinToString(", ")})") +
            "; the app's ExecuTorch runtime ships arm64-v8a and x86_64 only (${detail(link)})."
        chain.any { it is OutOfMemoryError } -> "$doing: not enough memory. Close other apps, or use a smaller picture."
        io != null -> "$doing: a file could not be read or written (${detail(io)}). If the storage is full, free " +
            "some space and restart the app."
        else -> "$doing: ${error.javaClass.simpleName}: ${detail(error)}"
    }
}

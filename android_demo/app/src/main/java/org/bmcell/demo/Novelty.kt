package org.bmcell.demo

import java.util.Locale

// Pictures unlike every cell the model was trained on, as model.json's "novelty" block states them: the program's
// output holds the C class scores, then, at output_index (which must be C), the picture's novelty score (its
// distance to the nearest training cell over the usual distance); at or above the threshold the picture does not look
// like a cell this model knows, whatever the probabilities. Plain Kotlin (no Android or ExecuTorch imports), so it
// can be unit-tested on the JVM. The web app (app.js) and the iOS app (Classifier.swift, ContentView.swift) say the
// same words (tests/contract/wording.py).

/** What the app shows instead of a class when the picture's novelty score reaches the threshold. */
const val UNKNOWN_CELL_TEXT = "does not look like a cell this model knows"

/** The sentence under UNKNOWN_CELL_TEXT: what such a picture may be, and what to do. */
const val UNKNOWN_CELL_WHY = "It is unlike every cell this model was trained on — another kind of cell (a blast?), " +
    "not a cell at all, or a very different microscope or stain: check by eye."

/** The model panel's line for a model that flags pictures unlike its training cells. */
const val NOVELTY_PANEL_TEXT = "Pictures unlike every cell it was trained on get no cell type: it says " +
    "“$UNKNOWN_CELL_TEXT”."

/**
 * model.json's "novelty", checked: threshold a finite number > 0, outputIndex the number of classes (the score comes
 * right after the class scores); flaggedOnValidation, the share of the model's validation images it flags, null when
 * unknown.
 */
data class NoveltyRule(val threshold: Double, val outputIndex: Int, val flaggedOnValidation: Double?)

/** The program's output for one picture, split: the class scores, and the novelty score (null without a rule). */
class ModelOutput(val logits: FloatArray, val novelty: Double?)

/**
 * model.json's novelty threshold, output_index and flagged_on_validation as parsed JSON values (a number, a string,
 * null…) → a NoveltyRule for a model with `classes` classes. A threshold that is not a finite number > 0, or an
 * output_index other than `classes`, throws IllegalArgumentException saying which; a flagged_on_validation outside
 * [0, 1] is unknown.
 */
fun noveltyRule(threshold: Any?, outputIndex: Any?, classes: Int, flaggedOnValidation: Any?): NoveltyRule {
    val t = (threshold as? Number)?.toDouble()
    val index = (outputIndex as? Number)?.toDouble()
    val problems = listOfNotNull(
        if (t == null || !t.isFinite() || t <= 0.0) "threshold $threshold (must be a finite number > 0)" else null,
        if (index != classes.toDouble()) {
            "output_index $outputIndex (must be $classes: the score after the $classes class scores)"
        } else null,
    )
    require(problems.isEmpty()) { problems.joinToString(" and ") }
    val flagged = (flaggedOnValidation as? Number)?.toDouble()?.takeIf { it in 0.0..1.0 }
    return NoveltyRule(t!!, classes, flagged)
}

/**
 * Why an output of `length` values per picture does not fit model.json (its `classes` class scores, then the
 * novelty score when it has a novelty rule), or null when it does.
 */
fun outputProblem(length: Int, classes: Int, rule: NoveltyRule?): String? {
    if (length == classes + (if (rule == null) 0 else 1)) return null
    val declared = if (rule == null) "model.json lists $classes classes and no novelty score"
    else "model.json declares novelty at index ${rule.outputIndex} ($classes class scores, then the novelty score)"
    return "the model's output has $length values, but $declared"
}

/** The output split as model.json says; an output of another length throws IllegalArgumentException (outputProblem). */
fun splitOutput(output: FloatArray, classes: Int, rule: NoveltyRule?): ModelOutput {
    outputProblem(output.size, classes, rule)?.let { throw IllegalArgumentException(it) }
    return ModelOutput(output.copyOfRange(0, classes), rule?.let { output[it.outputIndex].toDouble() })
}

/** Whether a picture does not look like a cell this model knows: its novelty score at or above the threshold. */
fun isUnknown(novelty: Double?, rule: NoveltyRule?): Boolean =
    rule != null && novelty != null && novelty >= rule.threshold

/** A novelty score or its threshold in multiples of the usual distance: "1.43 ×". */
private fun times(value: Double): String = String.format(Locale.US, "%.2f ×", value)

/** The line under an answer: how unlike the training cells the picture is; null without a novelty score. */
fun noveltyLine(answer: Answer, rule: NoveltyRule?): String? {
    val score = answer.novelty ?: return null
    rule ?: return null
    return "Unlike the cells it was trained on: ${times(score)} the usual distance " +
        "(flagged from ${times(rule.threshold)})."
}

/** The model panel's line: NOVELTY_PANEL_TEXT for a model with a novelty rule, else null. */
fun noveltyPanelLine(rule: NoveltyRule?): String? = rule?.let { NOVELTY_PANEL_TEXT }

/** What the novelty rule means, in the model's description: from which score a picture is flagged, and how often. */
fun noveltyDescription(rule: NoveltyRule?): String {
    if (rule == null) {
        return "It does not flag pictures unlike its training cells: re-export it with this version of bmcell."
    }
    val share = rule.flaggedOnValidation?.let { " (${plainPercent(it)} of its own test cells are flagged too)" }
        .orEmpty()
    return "It flags a picture as “$UNKNOWN_CELL_TEXT” when its distance to the nearest training cell is at least " +
        "${times(rule.threshold)} the usual distance$share."
}

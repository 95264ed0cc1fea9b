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
 * model.json's "model" block (export/apps.py::app_model_json): the release's name, architecture, precision,
 * epoch, validation accuracy of the checkpoint and of this artefact (parity), the model card's file in the bundle
 * and full names of abbreviated classes. Every field may be missing; bundles exported before it have no block.
 */
data class ModelFacts(
    val name: String?,
    val arch: String?,
    val precision: String?,
    val epoch: Int?,
    val valAccuracy: Double?,
    val artefactValAccuracy: Double?,
    val parity: String?,
    val modelCard: String?,
    val classNames: Map<String, String>,
)

/**
 * "Model NAME (precision) · bmcell VERSION · 97.5 % on its validation images": the artefact's own measured accuracy
 * (parity) when there is one, else the checkpoint's. Without a "model" block: the artefact name and manifest precision.
 */
fun modelHeadline(facts: ModelFacts?, artefactName: String, manifestPrecision: String?, bmcellVersion: String?): String {
    val precision = facts?.precision ?: manifestPrecision
    val parts = mutableListOf("Model ${facts?.name ?: artefactName}" + (precision?.let { " ($it)" } ?: ""))
    bmcellVersion?.let { parts += "bmcell $it" }
    (facts?.artefactValAccuracy ?: facts?.valAccuracy)?.let {
        parts += String.format(Locale.US, "%.1f %% on its validation images", 100 * it)
    }
    return parts.joinToString(" · ")
}

/** A probability as the screen shows it: one decimal, and "<0.1 %" rather than "0.0 %". */
fun percent(probability: Double): String =
    if (probability < 0.0005) "<0.1 %" else String.format(Locale.US, "%.1f %%", 100 * probability)

/** The class name with its full name when model.json explains it ("label — full name"). */
fun displayName(label: String, classNames: Map<String, String>): String =
    classNames[label]?.let { "$label — $it" } ?: label

/** Every class, most probable first: "1. label — full name  97.3 %". */
fun probabilityLines(probabilities: List<Prediction>, classNames: Map<String, String>): List<String> =
    probabilities.mapIndexed { i, p -> "${i + 1}. ${displayName(p.label, classNames)}  ${percent(p.probability.toDouble())}" }

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

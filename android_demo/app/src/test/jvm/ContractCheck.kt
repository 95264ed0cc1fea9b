package org.bmcell.demo

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.security.MessageDigest

// The JVM side of tests/test_android_jvm.py: runs the app's plain-Kotlin files (PreprocessCore.kt, Confidence.kt,
// Novelty.kt, Messages.kt) on jobs Python prepared, one job per line of a tab-separated file, and prints one result line per
// job (tab-separated, the job's id first). Python compares them with the reference (bmcell.core.data.images.load_rgb,
// bmcell.core.data.transforms.unit_transform, tests/contract/preprocessing.json). Not part of the Gradle build.
//
//   unit    ID PATH W H SIZE                     interleaved RGB bytes → unit_transform(SIZE): writes OUT/ID.crop
//                                                 (3xSxS uint8) and OUT/ID.tensor (float32 little-endian), prints
//                                                 their sha256
//   rgba    ID PATH W H ROWBYTES ORIENTATION SIZE  RGBA bytes as decoded → upright RGB on white, then as unit (SIZE > 0)
//                                                 or, with SIZE 0, the upright picture itself: OUT/ID.rgb, its W, H
//   softmax ID TEMPERATURE LOGITS                 softmax(logits / temperature) in double: the 17-digit values
//   answer  ID TEMPERATURE THRESHOLD CONFIDENT_FROM LOGITS
//                                                 the level ("uncertain", "low", "confident"), the labels (c0, c1, … by
//                                                 logit index) most probable first, answerHeadline and answerNote ("-"
//                                                 for none), class cI named "class I (spelled out)"
//   rule    ID TEMPERATURE THRESHOLD CONFIDENT_FROM
//                                                 confidenceRule: "ok" and its values, or "refused" and the message
//   verdict ID CLASSES TEMPERATURE THRESHOLD CONFIDENT_FROM NOVELTY_THRESHOLD OUTPUT
//                                                 answer() of OUTPUT (CLASSES class scores, then a novelty score) under
//                                                 that confidence rule ("null" TEMPERATURE: none) and a novelty rule
//                                                 with that threshold ("null": none): the level, the labels most
//                                                 probable first, answerHeadline, answerNote, noveltyLine ("-" for
//                                                 none) and the probabilities in class order (floats, ",")
//   novelty ID [THRESHOLD OUTPUT_INDEX CLASSES FLAGGED]
//                                                 noveltyRule: "ok", its threshold, output index and flagged share ("-"
//                                                 for none), noveltyPanelLine and noveltyDescription, or "refused" and
//                                                 the message; without the fields: the panel line ("-") and the
//                                                 description of a model without a novelty rule
//   describe ID [TEMPERATURE THRESHOLD CONFIDENT_FROM FITTED_ON]
//                                                 confidenceDescription of that rule (of none without the fields)
//   header  ID ARTEFACT MANIFEST_PRECISION VERSION [NAME PRECISION PRECISION_WORDS VAL ARTEFACT_VAL SCORES]
//                                                 modelHeadline, precisionLine and scoresLine ("-" for none) of a
//                                                 "model" block with those fields (no block without them); SCORES:
//                                                 entries split by ";", an object as "key=value,key=value", anything
//                                                 else a value
//   panel   ID LABS ADAPTED                       labsLine, adaptedLine ("-" for none) and ADAPT_ROUTE_TEXT of a
//                                                 "model" block whose labs are LABS (entries as SCORES' are) and
//                                                 whose adapted_to is ADAPTED ("key=value,key=value", a value with "|"
//                                                 a list split there; "null" for none)
//   percent ID P                                  percent(P)
//   name    ID LABEL [FULL]                       displayName(LABEL, {LABEL: FULL})
//   failure ID KIND                               failureMessage("Doing", a throwable of that kind, [arm64-v8a])
//
// A value "null" is Kotlin null, a number is a Double, anything else a String (as model.json may hold).

fun main(args: Array<String>) {
    require(args.size == 2) { "usage: ContractCheck JOBS_FILE OUT_DIR" }
    val out = File(args[1]).apply { mkdirs() }
    File(args[0]).readLines().filter { it.isNotBlank() }.forEach { line ->
        val f = line.split('\t')
        val id = f[1]
        val result: List<String> = try {
            when (f[0]) {
                "unit" -> unit(id, readRgb(f[2], f[3].toInt(), f[4].toInt()), f[5].toInt(), out)
                "rgba" -> {
                    val width = f[3].toInt()
                    val height = f[4].toInt()
                    val upright = PreprocessCore.uprightRgb(File(f[2]).readBytes(), width, height, f[5].toInt(), f[6].toInt())
                    val size = f[7].toInt()
                    if (size > 0) unit(id, upright, size, out) else {
                        File(out, "$id.rgb").writeBytes(upright.rgb)
                        listOf(sha256(upright.rgb), upright.width.toString(), upright.height.toString())
                    }
                }
                "softmax" -> softmax(logits(f[3]), f[2].toDouble()).map { it.toString() }
                "answer" -> {
                    val scores = logits(f[5])
                    val rule = confidenceRule(value(f[2]), value(f[3]), value(f[4]), null)
                    val classes = List(scores.size) { "c$it" }
                    val names = classes.withIndex().associate { (i, label) -> label to "class $i (spelled out)" }
                    val answer = answer(scores, classes, rule, scores.size)
                    listOf(answer.level.name.lowercase(), answer.top.joinToString(",") { it.label },
                        answerHeadline(answer, names), answerNote(answer, rule, names) ?: "-")
                }
                "rule" -> try {
                    val rule = confidenceRule(value(f[2]), value(f[3]), value(f[4]), null)
                    listOf("ok", rule.temperature.toString(), rule.threshold.toString(), rule.confidentFrom.toString())
                } catch (error: IllegalArgumentException) {
                    listOf("refused", error.message.orEmpty())
                }
                "verdict" -> verdict(f)
                "novelty" -> if (f.size > 2) novelty(f) else
                    listOf(noveltyPanelLine(null) ?: "-", noveltyDescription(null))
                "describe" -> listOf(confidenceDescription(
                    if (f.size > 2) confidenceRule(value(f[2]), value(f[3]), value(f[4]), text(f[5])) else null))
                "header" -> {
                    val facts = if (f.size > 5) modelFacts(f.subList(5, f.size)) else null
                    listOf(modelHeadline(facts, f[2], text(f[4])), precisionLine(facts, text(f[3])) ?: "-",
                        scoresLine(facts) ?: "-")
                }
                "panel" -> {
                    val adapted = if (f[3] == "null") null else fields(f[3])
                    val facts = modelFacts(listOf("run", "null", "null", "null", "null", ""))
                        .copy(labs = trainedLabs(entries(f[2])), adaptedTo = adaptation(adapted))
                    listOf(labsLine(facts) ?: "-", adaptedLine(facts) ?: "-", ADAPT_ROUTE_TEXT)
                }
                "percent" -> listOf(percent(f[2].toDouble()))
                "name" -> listOf(displayName(f[2], if (f.size > 3) mapOf(f[2] to f[3]) else emptyMap()))
                "failure" -> listOf(failureMessage("Doing", throwable(f[2]), listOf("arm64-v8a")))
                else -> error("unknown job ${f[0]}")
            }
        } catch (error: Exception) {
            listOf("error", "${error.javaClass.simpleName}: ${error.message}")
        }
        println((listOf(id) + result).joinToString("\t") { it.replace('\t', ' ').replace('\n', ' ') })
    }
}

/** The verdict job: answer() of an output under a confidence rule and a novelty rule, as the screen words it. */
private fun verdict(f: List<String>): List<String> {
    val output = logits(f[7])
    val classes = List(f[2].toInt()) { "c$it" }
    val names = classes.withIndex().associate { (i, label) -> label to "class $i (spelled out)" }
    val rule = if (f[3] == "null") null else confidenceRule(value(f[3]), value(f[4]), value(f[5]), null)
    val novelty = if (f[6] == "null") null else noveltyRule(value(f[6]), classes.size, classes.size, 0.05)
    val answer = answer(output, classes, rule, classes.size, novelty)
    val probabilities = answer.top.sortedBy { it.label.drop(1).toInt() }.map { it.probability }
    return listOf(answer.level.name.lowercase(), answer.top.joinToString(",") { it.label },
        answerHeadline(answer, names), answerNote(answer, rule, names) ?: "-", noveltyLine(answer, novelty) ?: "-",
        probabilities.joinToString(","))
}

/** The novelty job: noveltyRule of the fields, with the lines the screen shows of it, or its refusal. */
private fun novelty(f: List<String>): List<String> = try {
    val rule = noveltyRule(value(f[2]), value(f[3]), f[4].toInt(), value(f[5]))
    listOf("ok", rule.threshold.toString(), rule.outputIndex.toString(), rule.flaggedOnValidation?.toString() ?: "-",
        noveltyPanelLine(rule) ?: "-", noveltyDescription(rule))
} catch (error: IllegalArgumentException) {
    listOf("refused", error.message.orEmpty())
}

private fun readRgb(path: String, width: Int, height: Int) = RgbImage(width, height, File(path).readBytes())

private fun unit(id: String, image: RgbImage, size: Int, out: File): List<String> {
    val spec = PreprocessingSpec(size, size, "bilinear", true, (1.0 / 255).toFloat(), null, null)
    val unit = PreprocessCore.unitTensor(image, spec)
    val crop = PreprocessCore.chwBytes(unit.crop)
    val tensor = ByteBuffer.allocate(4 * unit.tensor.size).order(ByteOrder.LITTLE_ENDIAN)
    tensor.asFloatBuffer().put(unit.tensor)
    File(out, "$id.crop").writeBytes(crop)
    File(out, "$id.tensor").writeBytes(tensor.array())
    return listOf(sha256(crop), sha256(tensor.array()))
}

private fun sha256(bytes: ByteArray): String =
    MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }

private fun logits(text: String) = text.split(',').map { it.toFloat() }.toFloatArray()

private fun value(text: String): Any? = if (text == "null") null else text.toDoubleOrNull() ?: text

private fun text(field: String): String? = field.takeUnless { it == "null" }

/** "key=value,key=value" as an object's fields; a value holding "|" is a list split there. */
private fun fields(entry: String): Map<String, Any?> = entry.split(',').associate { field ->
    val raw = field.substringAfter('=')
    field.substringBefore('=') to if ('|' in raw) raw.split('|').map { value(it) } else value(raw)
}

/** Entries split by ";": an object as "key=value,key=value", anything else a value. */
private fun entries(text: String): List<Any?> =
    text.split(';').filter { it.isNotEmpty() }.map { entry -> if ('=' in entry) fields(entry) else value(entry) }

/** A "model" block from the header job's fields NAME PRECISION PRECISION_WORDS VAL ARTEFACT_VAL SCORES. */
private fun modelFacts(f: List<String>): ModelFacts =
    ModelFacts(name = text(f[0]), arch = null, precision = text(f[1]), precisionWords = text(f[2]), epoch = null,
        valAccuracy = value(f[3]) as Double?, artefactValAccuracy = value(f[4]) as Double?,
        scores = labScores(entries(f[5])), parity = null, modelCard = null, classNames = emptyMap())

private fun throwable(kind: String): Throwable = when (kind) {
    "io" -> java.io.IOException("No space left on device")
    "link" -> UnsatisfiedLinkError("dlopen failed: library \"libexecutorch.so\" not found")
    "wrapped-link" -> RuntimeException("static initializer failed", UnsatisfiedLinkError("no executorch in java.library.path"))
    "oom" -> OutOfMemoryError("Failed to allocate a 201326604 byte allocation")
    "bundle" -> BundleError("Refusing to load model.pte: its sha256 does not match")
    "bad-image" -> BadImageError("not an image Android can decode")
    "runtime" -> IllegalStateException("the model returned 3 scores but model.json lists 8 classes")
    "no-message" -> NullPointerException()
    else -> error("unknown throwable kind $kind")
}

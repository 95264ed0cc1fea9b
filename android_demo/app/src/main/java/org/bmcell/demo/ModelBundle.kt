package org.bmcell.demo

import android.content.Context
import android.content.res.AssetManager
import android.os.Process
import java.io.File
import java.io.FileNotFoundException
import java.io.IOException
import java.security.MessageDigest
import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject

/**
 * The model bundle that `bmcell export RUN --target android --app android_demo` writes into
 * app/src/main/assets/bmcell_model/: model.pte (the program), model.json (what this app needs: file, sha256,
 * bytes, classes in output order, input contract, preprocessing, confidence, novelty, and a "model" block with what
 * the screen shows about the model: its name, precision in words, scores per lab…), manifest.json (the export manifest)
 * and, for a released model, MODEL_CARD.md.
 *
 * Everything about the model — class names, input size, preprocessing — comes from model.json; nothing is
 * typed into the app.
 */
const val BUNDLE_DIR = "bmcell_model"
const val INSTALL_HINT = "run `bmcell export RUN --target android --app android_demo`, then rebuild and reinstall the app"

// BundleError is in Messages.kt, PreprocessingSpec in PreprocessCore.kt (plain Kotlin, tested on a JVM).

/** model.json, checked: the app refuses a bundle whose contract it does not implement. */
data class ModelInfo(
    val name: String,
    val file: String,
    val sha256: String,
    val bytes: Long,
    val classes: List<String>,
    val imageSize: Int,
    val preprocessing: PreprocessingSpec,
    val confidence: ConfidenceRule?, // null: no calibrated confidence (older checkpoints), temperature 1, never uncertain
    val novelty: NoveltyRule?, // null: the program outputs class scores only (older exports), no picture is flagged
    val precision: String?, // from manifest.json's entry for this artefact, when there is one
    val runtime: String?,
    val bmcellVersion: String?,
    val model: ModelFacts?, // model.json's "model" block; null in bundles exported before it existed
)

object ModelBundle {

    /** Read and check model.json (and manifest.json for precision/runtime) from the APK's assets. */
    fun readInfo(assets: AssetManager): ModelInfo {
        val files = try {
            assets.list(BUNDLE_DIR)?.toSet().orEmpty()
        } catch (error: IOException) {
            throw BundleError("Cannot list assets/$BUNDLE_DIR (${error.message}); $INSTALL_HINT.")
        }
        if ("model.json" !in files) {
            throw BundleError("No model installed: assets/$BUNDLE_DIR/model.json is missing. To add one, $INSTALL_HINT.")
        }
        val modelJson = readJson(assets, "model.json")
        val manifest = if ("manifest.json" in files) readJson(assets, "manifest.json") else null
        val info = try {
            parseModelJson(modelJson, manifest)
        } catch (error: JSONException) {
            throw BundleError("model.json lacks a field or has a wrong type (${error.message}); $INSTALL_HINT.")
        }
        if (info.file !in files) {
            throw BundleError("model.json names ${info.file}, but assets/$BUNDLE_DIR has no such file; $INSTALL_HINT.")
        }
        return info
    }

    /**
     * Copy the program out of the APK (ExecuTorch loads from a file path) and check it against model.json:
     * byte count, then sha256. A mismatch is refused, never loaded. The copy goes to a temporary file of this
     * process's own (the app's main process and the benchmark's `:bench` process may install at the same time),
     * is checked there, and only then renamed over the target, so the target is always a complete, verified copy.
     */
    fun install(context: Context, info: ModelInfo): File {
        val dir = File(context.filesDir, BUNDLE_DIR)
        if (!dir.isDirectory && !dir.mkdirs()) {
            throw BundleError("Cannot create ${dir.path} (is the storage full? free some space and restart the app)")
        }
        removeStalePartials(dir)
        val target = File(dir, info.file)
        val partial = File(dir, "${info.file}.${Process.myPid()}.partial")
        try {
            try {
                context.assets.open("$BUNDLE_DIR/${info.file}").use { input ->
                    partial.outputStream().use { output -> input.copyTo(output) }
                }
            } catch (error: FileNotFoundException) {
                throw BundleError("assets/$BUNDLE_DIR/${info.file} is missing or unreadable (${error.message}); $INSTALL_HINT.")
            } catch (error: IOException) {
                throw BundleError("Cannot copy ${info.file} to the app's storage (${error.message}): is the storage " +
                    "full? Free some space and restart the app.")
            }
            verify(partial, info)
            if (!partial.renameTo(target)) {
                throw BundleError("Cannot write ${target.path} (is the storage full? free some space and restart the app)")
            }
        } finally {
            partial.delete() // after a failure; after the rename there is nothing left to delete
        }
        return target
    }

    /** Temporary copies left by a process that was killed while copying (an hour old: no copy takes that long). */
    private fun removeStalePartials(dir: File) {
        val old = System.currentTimeMillis() - 3_600_000L
        dir.listFiles()?.filter { it.name.endsWith(".partial") && it.lastModified() < old }?.forEach { it.delete() }
    }

    /** Refuse a file whose size or sha256 differs from model.json. */
    fun verify(file: File, info: ModelInfo) {
        val bytes = file.length()
        if (bytes != info.bytes) {
            throw BundleError("Refusing to load ${info.file}: it has $bytes bytes but model.json says ${info.bytes} " +
                "(truncated or replaced after export); $INSTALL_HINT.")
        }
        val actual = try {
            sha256(file)
        } catch (error: IOException) {
            throw BundleError("Cannot read ${file.path} back (${error.message}); free some space and restart the app.")
        }
        if (!actual.equals(info.sha256, ignoreCase = true)) {
            throw BundleError("Refusing to load ${info.file}: its sha256 ${actual.take(12)}… does not match " +
                "model.json's ${info.sha256.take(12)}… (the file changed after export); $INSTALL_HINT.")
        }
    }

    fun sha256(file: File): String {
        val digest = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { input ->
            val buffer = ByteArray(1 shl 20)
            while (true) {
                val n = input.read(buffer)
                if (n < 0) break
                digest.update(buffer, 0, n)
            }
        }
        return digest.digest().joinToString("") { "%02x".format(it) }
    }

    private fun readJson(assets: AssetManager, name: String): JSONObject = try {
        JSONObject(assets.open("$BUNDLE_DIR/$name").bufferedReader().use { it.readText() })
    } catch (error: FileNotFoundException) {
        throw BundleError("assets/$BUNDLE_DIR/$name is missing; $INSTALL_HINT.")
    } catch (error: IOException) {
        throw BundleError("Cannot read assets/$BUNDLE_DIR/$name (${error.message}); $INSTALL_HINT.")
    } catch (error: JSONException) {
        throw BundleError("assets/$BUNDLE_DIR/$name is not valid JSON (${error.message}); $INSTALL_HINT.")
    }

    /** The model card beside model.json (its "model"."model_card"), or null when there is none or it is unreadable. */
    fun readModelCard(assets: AssetManager, info: ModelInfo): String? {
        val name = info.model?.modelCard ?: return null
        return try {
            assets.open("$BUNDLE_DIR/$name").bufferedReader().use { it.readText() }
        } catch (error: IOException) {
            null
        }
    }

    /** model.json → ModelInfo, refusing anything this app's Preprocessing does not implement. */
    fun parseModelJson(json: JSONObject, manifest: JSONObject?): ModelInfo {
        val size = json.getInt("image_size")
        val classes = json.getJSONArray("classes").let { array -> List(array.length()) { array.getString(it) } }
        if (classes.isEmpty()) throw BundleError("model.json lists no classes; $INSTALL_HINT.")

        val input = json.getJSONObject("input")
        val shape = input.getJSONArray("shape").let { array -> List(array.length()) { array.getInt(it) } }
        val expected = listOf(1, 3, size, size)
        if (shape != expected || input.optString("dtype") != "float32" ||
            input.optString("layout") != "NCHW" || input.optString("channels") != "RGB") {
            throw BundleError("This app feeds float32 RGB NCHW $expected tensors, but model.json's input is $input; " +
                "export the ExecuTorch target (--target android).")
        }

        // What the program outputs (export/apps.py; absent in older bundles): ExecuTorch programs output logits, and
        // this app applies softmax(logits / temperature) itself; probabilities would be softmaxed twice.
        val output = if (json.isNull("output")) "logits" else json.optString("output", "logits")
        if (output != "logits") {
            throw BundleError("model.json says the program outputs $output, but this app needs logits; export the " +
                "ExecuTorch target (--target android).")
        }

        val pre = json.getJSONObject("preprocessing")
        val spec = PreprocessingSpec(
            resizeShorterSideTo = pre.getInt("resize_shorter_side_to"),
            centerCrop = pre.getInt("center_crop"),
            interpolation = pre.getString("interpolation"),
            antialias = pre.optBoolean("antialias", true),
            scale = pre.getDouble("scale").toFloat(),
            mean = floatsOrNull(pre, "mean"),
            std = floatsOrNull(pre, "std"),
        )
        if (spec.interpolation != "bilinear" || !spec.antialias) {
            throw BundleError("model.json asks for ${spec.interpolation} resizing" +
                (if (spec.antialias) "" else " without antialiasing") + "; this app implements antialiased bilinear only.")
        }
        if (!spec.scale.isFinite() || spec.scale <= 0f || spec.resizeShorterSideTo < 1) {
            throw BundleError("model.json's preprocessing has an unusable scale ${spec.scale} or size ${spec.resizeShorterSideTo}.")
        }
        if (spec.centerCrop != size || spec.resizeShorterSideTo < size) {
            throw BundleError("model.json's preprocessing (resize ${spec.resizeShorterSideTo}, crop ${spec.centerCrop}) " +
                "does not produce its ${size}x$size input.")
        }
        if ((spec.mean == null) != (spec.std == null) || (spec.mean != null && (spec.mean.size != 3 || spec.std!!.size != 3))) {
            throw BundleError("model.json's mean/std must both be null or both lists of 3 numbers.")
        }

        val confidence = parseConfidence(json)
        val novelty = parseNovelty(json, classes.size)

        val name = json.getString("name")
        val entry = manifest?.optJSONArray("artefacts")?.let { artefacts ->
            (0 until artefacts.length()).map { artefacts.getJSONObject(it) }.firstOrNull { it.optString("name") == name }
        }
        return ModelInfo(
            name = name,
            file = json.getString("file"),
            sha256 = json.getString("sha256"),
            bytes = json.getLong("bytes"),
            classes = classes,
            imageSize = size,
            preprocessing = spec,
            confidence = confidence,
            novelty = novelty,
            precision = entry?.optString("precision")?.takeIf { it.isNotEmpty() },
            runtime = entry?.optString("runtime")?.takeIf { it.isNotEmpty() },
            bmcellVersion = json.optString("bmcell_version").takeIf { it.isNotEmpty() },
            model = parseModelFacts(json),
        )
    }

    /**
     * model.json's "model" block (what the screen shows about the model), read leniently: absent, null or not an
     * object (bundles exported before it) → null; a missing or mistyped field → null for that field only.
     */
    fun parseModelFacts(json: JSONObject): ModelFacts? {
        val block = json.optJSONObject("model") ?: return null
        fun text(key: String): String? =
            if (block.isNull(key)) null else (block.opt(key) as? String)?.takeIf { it.isNotEmpty() }
        fun number(key: String): Double? =
            if (block.isNull(key)) null else (block.opt(key) as? Number)?.toDouble()?.takeIf { it.isFinite() }
        val names = block.optJSONObject("class_names")
        val classNames = names?.keys()?.asSequence()
            ?.mapNotNull { key -> (names.opt(key) as? String)?.takeIf { it.isNotEmpty() }?.let { key to it } }
            ?.toMap().orEmpty()
        return ModelFacts(
            name = text("name"),
            arch = text("arch"),
            precision = text("precision"),
            precisionWords = text("precision_words"),
            epoch = number("epoch")?.toInt(),
            valAccuracy = number("val_accuracy"),
            artefactValAccuracy = number("artefact_val_accuracy"),
            scores = labScores(elements(block.optJSONArray("scores"))),
            parity = text("parity"),
            modelCard = text("model_card"),
            classNames = classNames,
            labs = trainedLabs(elements(block.optJSONArray("labs"))),
            adaptedTo = adaptation(block.optJSONObject("adapted_to")?.let { fields(it) }),
        )
    }

    /** A JSON array's elements as Messages.kt's readers take them (plainValue); none for null. */
    private fun elements(array: JSONArray?): List<Any?> =
        if (array == null) emptyList() else List(array.length()) { plainValue(array.opt(it)) }

    /** A JSON object's fields as Messages.kt's readers take them (plainValue). */
    private fun fields(json: JSONObject): Map<String, Any?> =
        json.keys().asSequence().associateWith { plainValue(json.opt(it)) }

    /** A parsed JSON value in plain Kotlin: objects as maps, arrays as lists, JSON null as null. */
    private fun plainValue(value: Any?): Any? = when (value) {
        is JSONObject -> fields(value)
        is JSONArray -> elements(value)
        JSONObject.NULL -> null
        else -> value
    }

    /**
     * model.json's "confidence": null or absent (older exports) → null; else its temperature, threshold and
     * confident_from (absent or null: halfway from the threshold to 1), refused unless the temperature is a finite
     * number > 0, the threshold a number in [0, 1] and confident_from a number from the threshold to 1.
     */
    fun parseConfidence(json: JSONObject): ConfidenceRule? {
        if (!json.has("confidence") || json.isNull("confidence")) return null
        val block = json.optJSONObject("confidence")
            ?: throw BundleError("model.json's confidence must be null or an object, not ${json.get("confidence")}; " +
                "$INSTALL_HINT.")
        return try {
            val confidentFrom = if (block.isNull("confident_from")) null else block.opt("confident_from")
            confidenceRule(block.opt("temperature"), block.opt("threshold"), confidentFrom, block.opt("fitted_on") as? String)
        } catch (error: IllegalArgumentException) {
            throw BundleError("model.json's confidence has an unusable ${error.message}: refusing the model; $INSTALL_HINT.")
        }
    }

    /**
     * model.json's "novelty": null or absent (older exports: the program outputs its class scores only) → null; else
     * its threshold, output_index and flagged_on_validation, refused unless the threshold is a finite number > 0 and
     * output_index the number of classes (the novelty score follows the class scores).
     */
    fun parseNovelty(json: JSONObject, classes: Int): NoveltyRule? {
        if (!json.has("novelty") || json.isNull("novelty")) return null
        val block = json.optJSONObject("novelty")
            ?: throw BundleError("model.json's novelty must be null or an object, not ${json.get("novelty")}: " +
                "refusing the model; $INSTALL_HINT.")
        return try {
            noveltyRule(block.opt("threshold"), block.opt("output_index"), classes, block.opt("flagged_on_validation"))
        } catch (error: IllegalArgumentException) {
            throw BundleError("model.json's novelty has an unusable ${error.message}: refusing the model; " +
                "$INSTALL_HINT.")
        }
    }

    private fun floatsOrNull(json: JSONObject, key: String): FloatArray? {
        if (!json.has(key) || json.isNull(key)) return null
        val array: JSONArray = json.getJSONArray(key)
        return FloatArray(array.length()) { array.getDouble(it).toFloat() }
    }
}

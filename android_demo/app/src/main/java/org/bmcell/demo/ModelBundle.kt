package org.bmcell.demo

import android.content.Context
import android.content.res.AssetManager
import java.io.File
import java.io.FileNotFoundException
import java.security.MessageDigest
import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject

/**
 * The model bundle that `bmcell export RUN --target android --app android_demo` writes into
 * app/src/main/assets/bmcell_model/: model.pte (the program), model.json (what this app needs: file, sha256,
 * bytes, classes in output order, input contract, preprocessing, confidence) and manifest.json (the export manifest).
 *
 * Everything about the model — class names, input size, preprocessing — comes from model.json; nothing is
 * typed into the app.
 */
const val BUNDLE_DIR = "bmcell_model"
const val INSTALL_HINT = "run `bmcell export RUN --target android --app android_demo`, then rebuild and reinstall the app"

/** A bundle that is missing, malformed or fails its integrity check; the message says why and what to do. */
class BundleError(message: String) : Exception(message)

/** model.json's "preprocessing": how to turn a decoded RGB picture into the input tensor. */
data class PreprocessingSpec(
    val resizeShorterSideTo: Int,
    val centerCrop: Int,
    val interpolation: String,
    val antialias: Boolean,
    val scale: Float,
    val mean: FloatArray?, // null for bmcell exports: normalisation is inside the graph
    val std: FloatArray?,
)

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
    val precision: String?, // from manifest.json's entry for this artefact, when there is one
    val runtime: String?,
    val bmcellVersion: String?,
)

object ModelBundle {

    /** Read and check model.json (and manifest.json for precision/runtime) from the APK's assets. */
    fun readInfo(assets: AssetManager): ModelInfo {
        val files = assets.list(BUNDLE_DIR)?.toSet().orEmpty()
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
     * byte count, then sha256. A mismatch is refused, never loaded.
     */
    fun install(context: Context, info: ModelInfo): File {
        val dir = File(context.filesDir, BUNDLE_DIR).apply { mkdirs() }
        val target = File(dir, info.file)
        val partial = File(dir, "${info.file}.partial")
        context.assets.open("$BUNDLE_DIR/${info.file}").use { input ->
            partial.outputStream().use { output -> input.copyTo(output) }
        }
        if (!partial.renameTo(target)) throw BundleError("Cannot write ${target.path} (is the storage full?)")
        verify(target, info)
        return target
    }

    /** Refuse a file whose size or sha256 differs from model.json. */
    fun verify(file: File, info: ModelInfo) {
        val bytes = file.length()
        if (bytes != info.bytes) {
            throw BundleError("Refusing to load ${info.file}: it has $bytes bytes but model.json says ${info.bytes} " +
                "(truncated or replaced after export); $INSTALL_HINT.")
        }
        val actual = sha256(file)
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
    } catch (error: JSONException) {
        throw BundleError("assets/$BUNDLE_DIR/$name is not valid JSON (${error.message}); $INSTALL_HINT.")
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
        if (spec.interpolation != "bilinear") {
            throw BundleError("model.json asks for ${spec.interpolation} resizing; this app implements bilinear only.")
        }
        if (spec.centerCrop != size || spec.resizeShorterSideTo < size) {
            throw BundleError("model.json's preprocessing (resize ${spec.resizeShorterSideTo}, crop ${spec.centerCrop}) " +
                "does not produce its ${size}x$size input.")
        }
        if ((spec.mean == null) != (spec.std == null) || (spec.mean != null && (spec.mean.size != 3 || spec.std!!.size != 3))) {
            throw BundleError("model.json's mean/std must both be null or both lists of 3 numbers.")
        }

        val confidence = parseConfidence(json)

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
            precision = entry?.optString("precision")?.takeIf { it.isNotEmpty() },
            runtime = entry?.optString("runtime")?.takeIf { it.isNotEmpty() },
            bmcellVersion = json.optString("bmcell_version").takeIf { it.isNotEmpty() },
        )
    }

    /**
     * model.json's "confidence": null or absent (older exports) → null; else its temperature and threshold,
     * refused unless the temperature is a finite number > 0 and the threshold a number in [0, 1].
     */
    fun parseConfidence(json: JSONObject): ConfidenceRule? {
        if (!json.has("confidence") || json.isNull("confidence")) return null
        val block = json.optJSONObject("confidence")
            ?: throw BundleError("model.json's confidence must be null or an object, not ${json.get("confidence")}; " +
                "$INSTALL_HINT.")
        return try {
            confidenceRule(block.opt("temperature"), block.opt("threshold"), block.opt("fitted_on") as? String)
        } catch (error: IllegalArgumentException) {
            throw BundleError("model.json's confidence has an unusable ${error.message}: refusing the model; $INSTALL_HINT.")
        }
    }

    private fun floatsOrNull(json: JSONObject, key: String): FloatArray? {
        if (!json.has(key) || json.isNull(key)) return null
        val array: JSONArray = json.getJSONArray(key)
        return FloatArray(array.length()) { array.getDouble(it).toFloat() }
    }
}

package org.bmcell.demo

import android.content.Intent
import android.net.Uri
import android.os.Bundle
import android.os.SystemClock
import android.widget.Button
import android.widget.ImageView
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import java.io.File
import java.util.Locale

/**
 * Pick a photo (Android photo picker), open any file, or take a photo (CameraX); show the answer — the top class, or
 * "uncertain — check by eye" when its calibrated probability is below model.json's threshold — then the top 3.
 */
class MainActivity : ComponentActivity() {

    private lateinit var modelStatus: TextView
    private lateinit var answer: TextView
    private lateinit var result: TextView
    private lateinit var modelInput: ImageView
    private lateinit var buttons: List<Button>

    private val pickImage = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) classify(uri)
    }
    private val openFile = registerForActivityResult(ActivityResultContracts.OpenDocument()) { uri ->
        if (uri != null) classify(uri)
    }
    private val takePhoto = registerForActivityResult(ActivityResultContracts.StartActivityForResult()) { outcome ->
        val path = outcome.data?.getStringExtra(CameraActivity.EXTRA_PATH)
        when {
            outcome.resultCode == RESULT_OK && path != null -> classify(Uri.fromFile(File(path)))
            else -> outcome.data?.getStringExtra(CameraActivity.EXTRA_ERROR)?.let { result.text = it }
        }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        modelStatus = findViewById(R.id.model_status)
        answer = findViewById(R.id.answer)
        result = findViewById(R.id.result)
        modelInput = findViewById(R.id.model_input)
        val pick = findViewById<Button>(R.id.pick_image)
        val open = findViewById<Button>(R.id.open_file)
        val camera = findViewById<Button>(R.id.take_photo)
        buttons = listOf(pick, open, camera)

        pick.setOnClickListener {
            pickImage.launch(
                PickVisualMediaRequest.Builder().setMediaType(ActivityResultContracts.PickVisualMedia.ImageOnly).build()
            )
        }
        open.setOnClickListener { openFile.launch(arrayOf("*/*")) } // any file: shows how bad input is reported
        camera.setOnClickListener { takePhoto.launch(Intent(this, CameraActivity::class.java)) }

        Engine.submit(this) { classifier, error ->
            val text = classifier?.let { describe(it.info) } ?: error.orEmpty()
            onUi {
                modelStatus.text = text
                buttons.forEach { it.isEnabled = classifier != null }
            }
        }
    }

    private fun describe(info: ModelInfo): String {
        val size = info.imageSize
        return "Model ${info.name} (${info.bytes / 1024} KiB, sha256 ${info.sha256.take(12)}… verified), " +
            "${size}x$size input, ${info.classes.size} classes: ${info.classes.joinToString(", ")}" +
            (info.bmcellVersion?.let { "; bmcell $it" } ?: "") + ". " + describe(info.confidence)
    }

    private fun describe(rule: ConfidenceRule?): String = if (rule == null) {
        "This model has no calibrated confidence: its probabilities are not calibrated and no answer is marked uncertain."
    } else {
        String.format(Locale.US, "Calibrated (temperature %s): answers only at a probability of %.1f %% or more, " +
            "below that \"%s\"", rule.temperature, 100 * rule.threshold, UNCERTAIN_TEXT) +
            (rule.fittedOn?.let { "; threshold fitted on: $it" } ?: "") + "."
    }

    private fun classify(uri: Uri) {
        answer.text = ""
        result.text = "Classifying…"
        val resolver = contentResolver
        Engine.submit(this) { classifier, error ->
            if (classifier == null) {
                onUi { result.text = error }
                return@submit
            }
            try {
                val prepared = Preprocessing.prepare(resolver, uri, classifier.info.preprocessing)
                val start = SystemClock.elapsedRealtimeNanos()
                val outcome = classifier.classify(prepared.tensor, k = 3)
                val ms = (SystemClock.elapsedRealtimeNanos() - start) / 1e6
                val best = outcome.top.first()
                val headline = if (outcome.uncertain) UNCERTAIN_TEXT else
                    String.format(Locale.US, "%s  %.1f %%", best.label, 100 * best.probability)
                val why = classifier.info.confidence?.takeIf { outcome.uncertain }?.let {
                    String.format(Locale.US, "The most probable class, %s (%.1f %%), is below this model's threshold " +
                        "of %.1f %%.", best.label, 100 * best.probability, 100 * it.threshold)
                }
                val lines = listOfNotNull(why, "Class probabilities:") + outcome.top.mapIndexed { i, p ->
                    String.format(Locale.US, "%d. %s  %.1f %%", i + 1, p.label, 100 * p.probability)
                }
                val crop = prepared.crop.toBitmap()
                val footer = String.format(Locale.US, "%dx%d picture → %dx%d input; forward %.1f ms",
                    prepared.sourceWidth, prepared.sourceHeight, crop.width, crop.height, ms)
                onUi {
                    modelInput.setImageBitmap(crop)
                    answer.text = headline
                    answer.setTextColor(if (outcome.uncertain) UNCERTAIN_COLOR else CONFIDENT_COLOR)
                    result.text = (lines + "" + footer).joinToString("\n")
                }
            } catch (bad: BadImageError) {
                onUi {
                    modelInput.setImageDrawable(null)
                    answer.text = ""
                    result.text = "Cannot use this file: ${bad.message}"
                }
            } catch (failure: RuntimeException) {
                onUi {
                    answer.text = ""
                    result.text = "Inference failed: ${failure.message}"
                }
            }
        }
    }

    private fun onUi(block: () -> Unit) = runOnUiThread { if (!isDestroyed) block() }

    private companion object {
        val UNCERTAIN_COLOR = 0xFFB26A00.toInt() // amber: look at the cell yourself
        val CONFIDENT_COLOR = 0xFF222222.toInt()
    }
}

package org.bmcell.demo

import android.app.AlertDialog
import android.content.Intent
import android.net.Uri
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import java.io.File
import java.util.Locale

/**
 * Pick a photo (Android photo picker), open any file, or take a photo (CameraX); show the answer — the top class, the
 * top class headed "low confidence — check by eye" when its calibrated probability is below model.json's
 * confident_from, "uncertain — check by eye" when it is below the threshold, or "does not look like a cell this model
 * knows" when its novelty score reaches model.json's novelty threshold — then how unlike the training cells it is,
 * every class's probability, the inference time and the centre square the model saw. The header names the model and
 * the bmcell version, says its precision in words, how well it did, the labs whose cells it was trained on and the lab
 * it was adapted to (model.json's "model" block), that it flags pictures unlike its training cells, how to adapt it
 * to another lab, and opens its model card.
 *
 * Every failure ends as a message on screen: the inference thread (Engine) hands anything thrown there back here.
 */
class MainActivity : ComponentActivity() {

    private lateinit var modelTitle: TextView
    private lateinit var modelFacts: TextView
    private lateinit var modelRoute: TextView
    private lateinit var modelStatus: TextView
    private lateinit var modelCardButton: Button
    private lateinit var answer: TextView
    private lateinit var result: TextView
    private lateinit var modelInput: ImageView
    private lateinit var buttons: List<Button>
    private var modelCard: String? = null
    private var latest = 0 // the newest classification (UI thread only); an older one finishing later is dropped

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
            else -> outcome.data?.getStringExtra(CameraActivity.EXTRA_ERROR)?.let { showFailure(it) }
        }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        modelTitle = findViewById(R.id.model_title)
        modelFacts = findViewById(R.id.model_facts)
        modelRoute = findViewById<TextView>(R.id.model_route).apply { text = ADAPT_ROUTE_TEXT }
        modelStatus = findViewById(R.id.model_status)
        modelCardButton = findViewById(R.id.model_card)
        answer = findViewById(R.id.answer)
        result = findViewById(R.id.result)
        modelInput = findViewById(R.id.model_input)
        val pick = findViewById<Button>(R.id.pick_image)
        val open = findViewById<Button>(R.id.open_file)
        val camera = findViewById<Button>(R.id.take_photo)
        buttons = listOf(pick, open, camera)

        pick.setOnClickListener {
            launch {
                pickImage.launch(
                    PickVisualMediaRequest.Builder().setMediaType(ActivityResultContracts.PickVisualMedia.ImageOnly).build()
                )
            }
        }
        open.setOnClickListener { launch { openFile.launch(arrayOf("*/*")) } } // any file: shows how bad input is reported
        camera.setOnClickListener { launch { takePhoto.launch(Intent(this, CameraActivity::class.java)) } }
        modelCardButton.setOnClickListener { showModelCard() }

        val assetManager = assets
        Engine.submit(this, failed = { message -> onUi { modelStatus.text = message } }) { classifier, error ->
            val info = classifier?.info
            val title = info?.let { modelHeadline(it.model, it.name, it.bmcellVersion) }.orEmpty()
            val facts = info?.let {
                listOfNotNull(precisionLine(it.model, it.precision), scoresLine(it.model), labsLine(it.model),
                    adaptedLine(it.model), noveltyPanelLine(it.novelty))
            }.orEmpty().joinToString("\n")
            val text = info?.let { describe(it) } ?: error.orEmpty()
            val card = info?.let { ModelBundle.readModelCard(assetManager, it) }
            onUi {
                modelTitle.text = title
                modelTitle.visibility = if (title.isEmpty()) View.GONE else View.VISIBLE
                modelFacts.text = facts
                modelFacts.visibility = if (facts.isEmpty()) View.GONE else View.VISIBLE
                modelRoute.visibility = if (info == null) View.GONE else View.VISIBLE
                modelStatus.text = text
                modelCard = card
                modelCardButton.visibility = if (card == null) View.GONE else View.VISIBLE
                buttons.forEach { it.isEnabled = classifier != null }
            }
        }
    }

    /** Start a picker or the camera; a device without the activity it needs gets a message, not a crash. */
    private fun launch(start: () -> Unit) {
        try {
            start()
        } catch (error: RuntimeException) { // ActivityNotFoundException: no photo picker, file manager or camera app
            showFailure(failureMessage("Cannot open it", error))
        }
    }

    private fun showModelCard() {
        val card = modelCard ?: return
        AlertDialog.Builder(this)
            .setTitle(R.string.model_card)
            .setMessage(card)
            .setPositiveButton(android.R.string.ok, null)
            .show()
    }

    private fun describe(info: ModelInfo): String {
        val size = info.imageSize
        val facts = info.model
        return "Artefact ${info.name} (${info.bytes / 1024} KiB, sha256 ${info.sha256.take(12)}… verified), " +
            "${size}x$size input, ${info.classes.size} classes: ${info.classes.joinToString(", ")}" +
            (facts?.arch?.let { "; architecture $it" } ?: "") + (facts?.epoch?.let { ", epoch $it" } ?: "") +
            (facts?.parity?.let { "; parity with the reference: $it" } ?: "") + ". " +
            confidenceDescription(info.confidence) + " " + noveltyDescription(info.novelty)
    }

    private fun classify(uri: Uri) {
        val mine = ++latest
        answer.text = ""
        result.text = "Classifying…"
        val resolver = contentResolver
        val failed = { message: String -> onUi { if (mine == latest) showFailure(message) } }
        Engine.submit(this, failed) { classifier, error ->
            if (classifier == null) {
                failed(error ?: "No model is loaded.")
                return@submit
            }
            val info = classifier.info
            val names = info.model?.classNames.orEmpty()
            val prepared = try {
                val start = SystemClock.elapsedRealtimeNanos()
                Preprocessing.prepare(resolver, uri, info.preprocessing) to msSince(start)
            } catch (bad: BadImageError) {
                failed("Cannot use this file: ${bad.message}")
                return@submit
            } catch (error: Throwable) { // OutOfMemoryError, an unexpected decoder exception…
                Log.e(TAG, "preprocessing failed", error)
                failed(failureMessage("Cannot use this file", error))
                return@submit
            }
            val (input, preprocessingMs) = prepared
            try {
                val start = SystemClock.elapsedRealtimeNanos()
                val outcome = classifier.classify(input.tensor, k = info.classes.size) // every class
                val inferenceMs = msSince(start)
                val headline = answerHeadline(outcome, names)
                val note = answerNote(outcome, info.confidence, names)
                val lines = listOfNotNull(note, noveltyLine(outcome, info.novelty), "Class probabilities:") +
                    probabilityLines(outcome.top, names)
                val crop = input.crop.toBitmap()
                val reduced = if (input.sampleSize > 1) {
                    " (decoded at 1/${input.sampleSize}: more than ${Preprocessing.EXACT_MAX_PIXELS / 1_000_000} megapixels)"
                } else ""
                val footer = String.format(Locale.US, "%dx%d picture%s → %dx%d input; %s",
                    input.sourceWidth, input.sourceHeight, reduced, crop.width, crop.height,
                    timingLine(inferenceMs, preprocessingMs))
                onUi {
                    if (mine != latest) return@onUi // a newer picture was chosen meanwhile: its result is the one shown
                    modelInput.setImageBitmap(crop)
                    answer.text = headline
                    answer.setTextColor(ANSWER_COLORS.getValue(outcome.level))
                    result.text = (lines + "" + footer).joinToString("\n")
                }
            } catch (error: Throwable) { // ExecuTorch's forward failing, OutOfMemoryError…
                Log.e(TAG, "inference failed", error)
                failed(failureMessage("Inference failed", error))
            }
        }
    }

    private fun showFailure(message: String) {
        modelInput.setImageDrawable(null)
        answer.text = ""
        result.text = message
    }

    private fun msSince(startNanos: Long): Double = (SystemClock.elapsedRealtimeNanos() - startNanos) / 1e6

    private fun onUi(block: () -> Unit) = runOnUiThread { if (!isDestroyed) block() }

    private companion object {
        const val TAG = "bmcell"
        val CHECK_COLOR = 0xFFB26A00.toInt() // amber: low confidence or uncertain, look at the cell yourself
        val CONFIDENT_COLOR = 0xFF222222.toInt()
        val UNKNOWN_COLOR = 0xFFB00020.toInt() // red: not a cell this model knows, whatever its probabilities
        val ANSWER_COLORS = mapOf(ConfidenceLevel.CONFIDENT to CONFIDENT_COLOR, ConfidenceLevel.LOW to CHECK_COLOR,
            ConfidenceLevel.UNCERTAIN to CHECK_COLOR, ConfidenceLevel.UNKNOWN to UNKNOWN_COLOR)
    }
}

package org.bmcell.demo

import android.os.Build
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.view.WindowManager
import android.widget.TextView
import androidx.activity.ComponentActivity
import java.io.File
import kotlin.concurrent.thread
import org.json.JSONArray
import org.json.JSONObject

/**
 * Benchmark mode, started from a computer (README.md):
 *
 *   adb shell am start -S -n org.bmcell.demo/.BenchmarkActivity --ei runs 50 --ei warmup 10
 *
 * It times the bundled program the way `bmcell bench` does (export/bench.py: bench_row, latency_ms): one load
 * with all threads timed, then for 1 thread and for all threads a fresh load, `warmup` untimed forwards and
 * `runs` timed ones; p50/p90 are numpy's linear percentiles. It writes bench.json with the same fields as
 * bench.json (device, threads_all, runs, warmup, batch, image_size, rows) to getExternalFilesDir(null), i.e.
 * /sdcard/Android/data/org.bmcell.demo/files/, and logs "BMCELL_BENCH done <path>" (tag bmcell).
 * On failure — any throwable: a bad bundle, a full disk, no native library for the ABI, out of memory — it shows
 * the reason, writes bench.error.txt there instead (when it can) and logs "BMCELL_BENCH failed: <reason>".
 *
 * It runs in its own process (AndroidManifest.xml): each load here resizes ExecuTorch's process-wide threadpool.
 */
class BenchmarkActivity : ComponentActivity() {

    companion object {
        const val TAG = "bmcell"
        const val BENCH_JSON = "bench.json"
        const val BENCH_ERROR = "bench.error.txt"
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        val view = TextView(this).apply { setPadding(48, 96, 48, 48); text = "Benchmarking…" }
        setContentView(view)

        val runs = intent.getIntExtra("runs", 50)
        val warmup = intent.getIntExtra("warmup", 10)
        val dir = getExternalFilesDir(null) ?: filesDir
        File(dir, BENCH_JSON).delete()
        File(dir, BENCH_ERROR).delete()

        thread(name = "bmcell-bench") {
            val message = try {
                require(runs >= 1 && warmup >= 0) { "runs must be >= 1 and warmup >= 0 (got runs=$runs, warmup=$warmup)" }
                val report = benchmark(runs, warmup)
                val out = writeAtomically(File(dir, BENCH_JSON), report.toString(2))
                "BMCELL_BENCH done ${out.absolutePath}".also { Log.i(TAG, it) }
            } catch (error: Throwable) { // nothing may escape this thread: it would kill the process silently
                val reason = failureMessage("Cannot benchmark", error, Build.SUPPORTED_ABIS.toList())
                val written = try {
                    writeAtomically(File(dir, BENCH_ERROR), reason + "\n")
                    ""
                } catch (again: Throwable) {
                    " (and ${BENCH_ERROR} could not be written: ${again.message})"
                }
                "BMCELL_BENCH failed: $reason$written".also { Log.e(TAG, it, error) }
            }
            runOnUiThread { if (!isDestroyed) view.text = message }
        }
    }

    private fun benchmark(runs: Int, warmup: Int): JSONObject {
        val info = ModelBundle.readInfo(assets)
        val file = ModelBundle.install(this, info) // sha256 checked: a mismatch throws and nothing is timed
        val allThreads = Runtime.getRuntime().availableProcessors()
        // Latency does not depend on pixel values; a mid-grey image keeps the run reproducible.
        val input = FloatArray(3 * info.imageSize * info.imageSize) { 0.5f }

        val start = SystemClock.elapsedRealtimeNanos()
        Classifier.open(info, file, allThreads).close()
        val row = JSONObject().put("name", info.name).put("load_ms", msSince(start))

        val (p50One, p90One) = Classifier.open(info, file, 1).use { latencyMs(it, input, runs, warmup) }
        val (p50All, p90All) = Classifier.open(info, file, allThreads).use { latencyMs(it, input, runs, warmup) }
        row.put("p50_ms_1_thread", p50One).put("p90_ms_1_thread", p90One)
            .put("p50_ms_all_threads", p50All).put("p90_ms_all_threads", p90All)
            .put("precision", info.precision ?: JSONObject.NULL)
            .put("runtime", info.runtime ?: "ExecuTorch XNNPACK")
            .put("bytes", info.bytes)
            .put("val_accuracy", JSONObject.NULL) // parity is measured by `bmcell parity`, not on the phone
            .put("notes", "on device (org.pytorch:executorch-android); input: a constant 0.5 image; " +
                "all threads = $allThreads cores (ExecuTorch's own default is half of them)")
            .put("sha256", info.sha256)

        return JSONObject()
            .put("device", deviceName())
            .put("threads_all", allThreads)
            .put("runs", runs)
            .put("warmup", warmup)
            .put("batch", 1)
            .put("image_size", info.imageSize)
            .put("rows", JSONArray().put(row))
    }

    /** p50 and p90 in ms of `runs` forwards after `warmup` untimed ones (export/bench.py::latency_ms). */
    private fun latencyMs(classifier: Classifier, input: FloatArray, runs: Int, warmup: Int): Pair<Double, Double> {
        repeat(warmup) { classifier.output(input) }
        val times = DoubleArray(runs) {
            val start = SystemClock.elapsedRealtimeNanos()
            classifier.output(input)
            msSince(start)
        }
        return percentile(times, 50.0) to percentile(times, 90.0)
    }

    private fun msSince(startNanos: Long): Double = (SystemClock.elapsedRealtimeNanos() - startNanos) / 1e6

    private fun deviceName(): String {
        val soc = if (Build.VERSION.SDK_INT >= 31) ", ${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}" else ""
        return "${Build.MANUFACTURER} ${Build.MODEL} (Android ${Build.VERSION.RELEASE}, ${Build.SUPPORTED_ABIS.firstOrNull()}$soc)"
    }

    private fun writeAtomically(target: File, text: String): File {
        val partial = File(target.parentFile, "${target.name}.${android.os.Process.myPid()}.partial")
        try {
            partial.writeText(text) // IOException on a full disk: reported by the caller
            check(partial.renameTo(target)) { "cannot write ${target.path}" }
        } finally {
            partial.delete()
        }
        return target
    }
}

/** numpy.percentile's default ("linear") interpolation between the two nearest ranks. */
fun percentile(values: DoubleArray, q: Double): Double {
    val sorted = values.sorted()
    val position = (sorted.size - 1) * q / 100.0
    val lower = position.toInt()
    val upper = minOf(lower + 1, sorted.size - 1)
    return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - lower)
}
